//! Control-plane pull (`-i/--compute-id` with `-p/--control-plane-uri`):
//! `GET {URL}/compute/api/v2/computes/{ID}/spec`, Bearer `$NEON_CONTROL_PLANE_TOKEN` when set.
//! The answer is `{"spec": … | null, "status": "empty" | "attached"}`; `empty` means: wait for
//! `POST /spec`. While the control plane is unreachable (or answers 502/503) the `empty` phase
//! asks again with backoff, and `GET /state` shows the attempts.

use std::io::Read;
use std::time::Duration;

use serde_json::json;
use states::{ErrorKind, PhaseName, StepError, StepName};

use crate::spec::ParsedSpec;
use crate::step_env::StepEnv;

/// The largest answer read from the control plane.
const ANSWER_BYTES_MAX: u64 = 16 * 1024 * 1024;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where to ask for the spec.
#[derive(Clone)]
pub struct ControlPlane {
    pub uri: String,
    pub compute_id: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret.
        f.debug_struct("ControlPlane")
            .field("uri", &self.uri)
            .field("compute_id", &self.compute_id)
            .finish_non_exhaustive()
    }
}

impl ControlPlane {
    pub fn spec_url(&self) -> String {
        format!(
            "{}/compute/api/v2/computes/{}/spec",
            self.uri.trim_end_matches('/'),
            self.compute_id
        )
    }
}

fn error(message: String, retryable: bool) -> StepError {
    let mut error = StepError::new(
        PhaseName::Empty,
        StepName::FetchSpec,
        ErrorKind::ControlPlane,
        message,
    );
    error.retryable = retryable;
    error
}

/// What the control plane answered: a spec it serves (admitted: parsed and checked), or none
/// yet, and the facts for the journal.
#[derive(Debug)]
pub struct Fetched {
    pub spec: Option<ParsedSpec>,
    pub detail: serde_json::Value,
}

/// Asks the control plane for the spec. A failure to reach it, an answer that is not of the
/// protocol's shape, and a spec that is not admitted are retryable errors: a control plane
/// that serves a wrong spec may correct it.
pub fn fetch(env: &StepEnv) -> Result<Fetched, StepError> {
    let Some(control_plane) = env.control_plane.as_ref() else {
        return Err(error(
            "no control plane is configured (-p/-i)".into(),
            false,
        ));
    };
    let url = control_plane.spec_url();
    let mut request = ureq::get(&url).timeout(REQUEST_TIMEOUT);
    if let Some(token) = &control_plane.token {
        request = request.set("Authorization", &format!("Bearer {token}"));
    }
    let response = match request.call() {
        Ok(response) => response,
        Err(ureq::Error::Status(code, _)) => {
            let retryable = matches!(code, 502 | 503 | 504 | 429);
            return Err(error(
                format!("the control plane answered {code} to GET {url}"),
                retryable,
            ));
        }
        Err(e) => {
            return Err(error(
                format!("the control plane is unreachable at {url}: {e}"),
                true,
            ));
        }
    };
    let mut body = Vec::new();
    response
        .into_reader()
        .take(ANSWER_BYTES_MAX)
        .read_to_end(&mut body)
        .map_err(|e| {
            error(
                format!("cannot read the control plane's answer from {url}: {e}"),
                true,
            )
        })?;
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        error(
            format!("the control plane's answer from {url} is not JSON: {e}"),
            true,
        )
    })?;
    match answer.get("status").and_then(serde_json::Value::as_str) {
        Some("empty") => Ok(Fetched {
            spec: None,
            detail: json!({ "status": "empty", "url": url }),
        }),
        Some("attached") => {
            let Some(spec) = answer.get("spec").filter(|s| !s.is_null()) else {
                return Err(error(
                    format!("the control plane at {url} says attached but gives no spec"),
                    true,
                ));
            };
            let bytes = serde_json::to_vec(spec).map_err(|e| {
                error(format!("cannot re-encode the control plane's spec: {e}"), false)
            })?;
            // Paths point into the answer, where the spec sits under `spec`.
            let admitted = env.admission.admit(&bytes).map_err(|errors| {
                error(
                    format!(
                        "the control plane at {url} serves a spec that is not valid: {}",
                        errors.within("spec")
                    ),
                    true,
                )
            })?;
            let mut spec = admitted.spec;
            // Neon's answer carries compute_ctl's own settings beside the spec (the API's keys).
            spec.compute_ctl_config = answer
                .get("compute_ctl_config")
                .filter(|c| !c.is_null())
                .cloned();
            Ok(Fetched {
                spec: Some(spec),
                detail: json!({ "status": "attached", "url": url }),
            })
        }
        other => Err(error(
            format!("the control plane at {url} answered status {other:?}, expected \"empty\" or \"attached\""),
            true,
        )),
    }
}
