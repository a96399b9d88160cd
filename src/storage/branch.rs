//! A safe branch: the logical replication subscriptions a `Primary` copy of an upstream
//! carries are disabled (or, with Neon's `drop_subscriptions_before_start`, dropped) before
//! the branch opens for writes. Left enabled, the copy's apply workers would connect to the
//! publishers and consume from the production subscriber's slots: the production
//! subscriber would lose those changes.
//!
//! How, and why so: the copy is started once, privately, before the real start, with
//! `max_logical_replication_workers = 0` (no apply worker can start, so nothing reaches a
//! publisher), no TCP listener (only the Unix socket in PGDATA, mode 0700), no archiving and
//! no synchronous standbys (nothing leaves, nothing waits). In each database that has
//! subscriptions, each one is disabled and detached from its slot (`slot_name = NONE`: a
//! later `DROP SUBSCRIPTION` on the branch then cannot drop the production slot on the
//! publisher either), and dropped when the spec asks. A fast shutdown then leaves a clean
//! cluster for the real start. Enabling a subscription on the branch afterwards needs a new
//! slot, so it can never take the production subscriber's changes by accident.

use std::time::{Duration, Instant};

use serde_json::json;
use states::{ErrorKind, PhaseName, ShutdownMode, StepError, StepName};

use crate::postgres::config;
use crate::postgres::error::describe;
use crate::postgres::process::{self, StartRequest};
use crate::postgres::quote::quote_ident;
use crate::spec::ParsedSpec;
use crate::step_env::{StepCtx, StepEnv};

const PHASE: PhaseName = PhaseName::Basebackup;
const STEP: StepName = StepName::FetchBasebackup;

/// How long the private start's shutdown may take before it escalates.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// The most subscriptions a copy may carry that are handled (each one is a few statements).
const SUBSCRIPTIONS_MAX: usize = 10_000;

/// One subscription of the copy, as found and as left.
#[derive(Debug)]
struct Subscription {
    database: String,
    name: String,
    was_enabled: bool,
    /// The slot on its publisher it consumed from (`None`: it had none).
    slot: Option<String>,
}

/// Starts the copy privately, disables (or drops) every subscription it has, and stops it
/// cleanly. Returns the journal's account of it.
pub fn neutralize_subscriptions(
    ctx: &StepCtx<'_>,
    spec: &ParsedSpec,
) -> Result<serde_json::Value, StepError> {
    let env = ctx.env;
    let started = Instant::now();
    let drop_them = spec.spec.drop_subscriptions_before_start;
    let postgres_error = |doing: &str, e: postgres::Error| {
        StepError::new(
            PHASE,
            STEP,
            ErrorKind::Postgres,
            format!("{doing} on the branch's private start: {}", describe(&e)),
        )
    };

    // The spec's own settings (its preload libraries, memory); the command line below
    // overrides what must differ. The real start rewrites both files.
    config::render_postgresql_conf(&spec.spec, &[])
        .and_then(|conf| {
            let hba = config::render_pg_hba(env.admin.role())?;
            config::write_config_files(&env.pgdata, &conf, &hba)
        })
        .map_err(|e| StepError::new(PHASE, STEP, ErrorKind::Io, e.to_string()))?;
    let socket_dir = std::path::absolute(&env.pgdata).unwrap_or_else(|_| env.pgdata.clone());
    let port = spec.port();
    let args: Vec<String> = [
        "max_logical_replication_workers=0".to_string(),
        "listen_addresses=".to_string(),
        format!("unix_socket_directories={}", socket_dir.display()),
        format!("port={port}"),
        "archive_mode=off".to_string(),
        "synchronous_standby_names=".to_string(),
    ]
    .into_iter()
    .flat_map(|setting| ["-c".to_string(), setting])
    .collect();
    let probe = private_config(env, &socket_dir, port, "postgres");
    let request = StartRequest {
        binaries: &env.binaries,
        pgdata: &env.pgdata,
        user: env.pg_user.as_ref(),
        probe: probe.clone(),
        deadlines: env.deadlines,
    };
    let postmaster =
        process::start_with_args(request, &args, ctx.cancel, |_, _| {}).map_err(|mut e| {
            e.phase = PHASE;
            e.step = STEP;
            e.message = format!("the branch's private start failed: {}", e.message);
            e
        })?;
    let result = (|| {
        let mut client = probe
            .connect(postgres::NoTls)
            .map_err(|e| postgres_error("cannot connect", e))?;
        let rows = client
            .query(
                "SELECT d.datname::text, s.subname::text, s.subenabled, s.subslotname::text \
                 FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid \
                 ORDER BY 1, 2",
                &[],
            )
            .map_err(|e| postgres_error("cannot list the subscriptions", e))?;
        drop_client(client);
        if rows.len() > SUBSCRIPTIONS_MAX {
            return Err(StepError::new(
                PHASE,
                STEP,
                ErrorKind::Storage,
                format!(
                    "the copy carries {} subscriptions, more than the {SUBSCRIPTIONS_MAX} \
                     compute_ctl handles",
                    rows.len()
                ),
            ));
        }
        let found: Vec<Subscription> = rows
            .iter()
            .map(|row| Subscription {
                database: row.get(0),
                name: row.get(1),
                was_enabled: row.get(2),
                slot: row.get(3),
            })
            .collect();
        let mut database: Option<(String, postgres::Client)> = None;
        for sub in &found {
            if database.as_ref().map(|(name, _)| name) != Some(&sub.database) {
                let config = private_config(env, &socket_dir, port, &sub.database);
                let client = config.connect(postgres::NoTls).map_err(|e| {
                    postgres_error(&format!("cannot connect to database {:?}", sub.database), e)
                })?;
                database = Some((sub.database.clone(), client));
            }
            let Some((_, client)) = database.as_mut() else {
                continue;
            };
            let name = quote_ident(&sub.name);
            let mut statements = Vec::new();
            if sub.was_enabled {
                statements.push(format!("ALTER SUBSCRIPTION {name} DISABLE"));
            }
            if sub.slot.is_some() {
                statements.push(format!("ALTER SUBSCRIPTION {name} SET (slot_name = NONE)"));
            }
            if drop_them {
                statements.push(format!("DROP SUBSCRIPTION {name}"));
            }
            // One at a time: DROP SUBSCRIPTION refuses to run in a transaction block.
            for statement in statements {
                client.batch_execute(&statement).map_err(|e| {
                    postgres_error(
                        &format!(
                            "cannot {} subscription {:?} in database {:?}",
                            if drop_them { "drop" } else { "disable" },
                            sub.name,
                            sub.database
                        ),
                        e,
                    )
                })?;
            }
        }
        Ok(found)
    })();
    let status = postmaster.stop(ShutdownMode::Fast, STOP_TIMEOUT);
    let found = result?;
    if status.code != Some(0) {
        return Err(StepError::new(
            PHASE,
            STEP,
            ErrorKind::Postgres,
            format!("the branch's private start did not shut down cleanly: {status}"),
        ));
    }
    Ok(json!({
        "policy": if drop_them { "dropped" } else { "disabled" },
        "why": if drop_them {
            "the spec sets drop_subscriptions_before_start"
        } else {
            "a branch must not consume from its upstream's publishers: disabled and detached \
             from their slots (slot_name = NONE); drop_subscriptions_before_start drops them"
        },
        "subscriptions": found
            .iter()
            .map(|s| json!({
                "database": s.database,
                "name": s.name,
                "was_enabled": s.was_enabled,
                "slot_detached": s.slot,
            }))
            .collect::<Vec<_>>(),
        "private_start_ms": u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    }))
}

/// The admin role over the private start's Unix socket.
fn private_config(
    env: &StepEnv,
    socket_dir: &std::path::Path,
    port: u16,
    dbname: &str,
) -> postgres::Config {
    let mut config = postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(port)
        .user(env.admin.role())
        .dbname(dbname)
        .application_name("compute_ctl")
        .connect_timeout(Duration::from_secs(10));
    config
}

/// Ends a session before the next one opens (one at a time on the private start).
fn drop_client(client: postgres::Client) {
    let _ = client.close();
}
