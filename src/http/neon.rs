//! Neon compute_ctl's endpoints, with its JSON shapes and status names, so its control plane
//! and test clients can drive compute_ctl unchanged: `GET /status`, `POST /configure`,
//! `GET /metrics.json`.

use std::sync::Arc;

use super::limits::WAITING_ANSWER_TIMEOUT;
use super::{json_body, Api, Outcome, Reply, Request};
use crate::input::{ApiAnswer, ApiRequest};
use crate::view::StateView;
use serde_json::json;

/// `GET /status`: `{"start_time", "tenant", "timeline", "status", "last_active", "error"}`.
pub fn status_body(view: &StateView) -> serde_json::Value {
    json!({
        "start_time": view.start_time,
        "tenant": view.tenant,
        "timeline": view.timeline,
        "status": view.neon_status(),
        "last_active": view.last_active,
        "error": view.error.as_ref().map(|e| e.to_string()),
    })
}

/// `GET /metrics.json`: Neon's start-up metrics.
pub fn metrics_body(view: &StateView) -> serde_json::Value {
    let s = &view.startup;
    json!({
        "wait_for_spec_ms": 0,
        "sync_sk_check_ms": 0,
        "sync_safekeepers_ms": s.sync_safekeepers_ms,
        "pageserver_connect_micros": 0,
        "basebackup_ms": s.basebackup_ms,
        "basebackup_bytes": view.progress.as_ref().map_or(0, |p| p.bytes_done),
        "start_postgres_ms": s.start_postgres_ms,
        "config_ms": s.config_ms,
        "total_startup_ms": s.total_ms,
        "load_ext_ms": 0,
        "num_ext_downloaded": 0,
        "largest_ext_size": 0,
        "total_ext_download_size": 0,
    })
}

/// `POST /configure`: `{"spec": …, "compute_ctl_config": …}`; answers once the compute runs
/// the spec (200, the `/status` body) or failed (500); 412 in a phase that takes no spec.
/// Neon's errors are `{"error": "…"}` only. The envelope's `compute_ctl_config.jwks` becomes
/// the API's keys once the driver takes the spec.
pub(super) fn configure(api: &Api, request: &Request) -> Outcome {
    let body = match json_body(request) {
        Ok(body) => body,
        Err(reply) => return reply.into(),
    };
    let spec = match api.admission.admit(body) {
        Ok(admitted) if admitted.envelope => Arc::new(admitted.spec),
        Ok(_) => {
            return Reply::error(
                400,
                "the body must be {\"spec\": …, \"compute_ctl_config\": …}, not a bare spec",
            )
            .into()
        }
        Err(errors) => return Reply::error(400, errors.to_string()).into(),
    };
    Outcome::Call {
        request: ApiRequest::Configure { spec },
        timeout: WAITING_ANSWER_TIMEOUT,
        reply: configure_reply,
    }
}

/// Neon's status codes for the answers to `/configure`.
fn configure_reply(answer: ApiAnswer) -> Reply {
    match answer {
        ApiAnswer::Configured(view) => Reply::json(200, &status_body(&view)),
        ApiAnswer::ConfigureFailed { message } | ApiAnswer::NotDurable { message } => {
            Reply::error(500, message)
        }
        ApiAnswer::Refused(rejection) => Reply::error(412, rejection.to_string()),
        other @ (ApiAnswer::Spec(_)
        | ApiAnswer::Terminated { .. }
        | ApiAnswer::Recovering { .. }
        | ApiAnswer::Promoted { .. }
        | ApiAnswer::NotPromoted { .. }
        | ApiAnswer::PromoteFailed { .. }) => Reply::error(
            500,
            format!("the driver answered {other:?} to /configure (a defect)"),
        ),
    }
}
