//! The monitor: every `--monitor-interval` it asks the running Postgres whether anyone is
//! active (a client backend not idle, a walsender, a subscription or autovacuum worker) and
//! reports it through a callback (the driver shows it as `last_active`); and, while the
//! driver asks for it (in `running` only), every `--drift-interval` it compares Postgres with
//! the applied spec (`drift::check`) and reports the differences through another callback.
//!
//! Both run on the monitor's own thread and connection, never on the driver's or an HTTP
//! request's. A drift check holds the watch while it runs: `watch` (the driver leaving
//! `running` before it hands over a step) waits for a check in flight to end, so no check
//! runs while a step does.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::postgres::drift::{self, Drift};
use crate::postgres::process::read_pid_file;
use crate::spec::ParsedSpec;
use crate::sync::lock;

/// Counts the sessions that make the compute active; compute_ctl's own do not.
const ACTIVITY_QUERY: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE pid <> pg_backend_pid() AND coalesce(application_name, '') <> 'compute_ctl' \
       AND ((backend_type = 'client backend' AND state IS DISTINCT FROM 'idle') \
            OR backend_type IN ('walsender', 'logical replication worker', 'autovacuum worker'))";

/// How long the monitor waits to connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the monitor watches: the Postgres to ask, and whether to check it for drift.
#[derive(Clone, Debug)]
pub struct Watch {
    pub config: postgres::Config,
    /// Its PGDATA: postmaster.pid says when a shutdown has begun.
    pub pgdata: PathBuf,
    pub drift: Option<DriftWatch>,
}

/// A drift check to run every `interval` against `spec`.
#[derive(Clone, Debug)]
pub struct DriftWatch {
    /// Names this watch: a report of an older one is stale.
    pub id: u64,
    pub spec: Arc<ParsedSpec>,
    /// The `(name, value)` pairs compute_ctl wrote to `postgresql.conf` for `spec`.
    pub expected_settings: Vec<(String, String)>,
    pub admin_role: String,
    /// `--privileged-role-name`: compute_ctl's, never an unexpected role.
    pub privileged_role: crate::postgres::privileged::PrivilegedRole,
    pub interval: Duration,
}

/// One drift check's result.
#[derive(Clone, Debug)]
pub struct DriftReport {
    /// The `DriftWatch::id` it was made for.
    pub watch: u64,
    /// What it found, or why it could not look (`"connect: …"`).
    pub found: Result<Drift, String>,
    /// How long the check took (the read and the comparison), microseconds.
    pub duration_us: u64,
}

/// Handle to the monitor thread: tells it which Postgres to watch.
#[derive(Clone, Debug)]
pub struct Monitor {
    target: Arc<Mutex<Option<Watch>>>,
}

/// The callbacks of the monitor; neither may block.
#[allow(missing_debug_implementations)]
pub struct Reports {
    /// The wall time (ms) of each check that saw activity.
    pub on_active: Box<dyn Fn(u64) + Send>,
    pub on_drift: Box<dyn Fn(DriftReport) + Send>,
}

impl Monitor {
    /// Starts the monitor thread, asking every `interval`.
    pub fn start(interval: Duration, reports: Reports, clock: Clock) -> anyhow::Result<Monitor> {
        let target: Arc<Mutex<Option<Watch>>> = Arc::new(Mutex::new(None));
        let watched = target.clone();
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || watch_loop(interval, &watched, &reports, clock))?;
        Ok(Monitor { target })
    }

    /// Watches the Postgres `watch` names, or none. Returns once no drift check of an earlier
    /// watch runs.
    pub fn watch(&self, watch: Option<Watch>) {
        *lock(&self.target) = watch;
    }
}

/// The monitor's connection, and what it was opened with.
struct Connection {
    client: postgres::Client,
    config: String,
}

fn watch_loop(interval: Duration, target: &Mutex<Option<Watch>>, reports: &Reports, clock: Clock) {
    let mut connection: Option<Connection> = None;
    // The drift watch being served, and when its next check is due.
    let mut drift_due: Option<(u64, Instant)> = None;
    loop {
        std::thread::sleep(interval);
        let wanted = lock(target).clone();
        let Some(watch) = wanted else {
            connection = None;
            drift_due = None;
            continue;
        };
        // A smart shutdown from outside (`pg_ctl stop -m smart`) waits for every session to
        // end, the monitor's own too: once postmaster.pid says "stopping", let go of it (a
        // new one is refused until Postgres is gone).
        let stopping = read_pid_file(&watch.pgdata.join("postmaster.pid"))
            .is_some_and(|(_, status)| status.as_deref() == Some("stopping"));
        if stopping {
            connection = None;
            continue;
        }
        let Some(client) = connected(&mut connection, &watch.config) else {
            continue;
        };
        match client.query_one(ACTIVITY_QUERY, &[]) {
            Ok(row) => {
                let active: i64 = row.get(0);
                if active > 0 {
                    (reports.on_active)(clock.now().wall_ms);
                }
            }
            Err(e) => {
                log::debug!("activity check failed: {e}");
                connection = None;
                continue;
            }
        }
        let Some(drift_watch) = &watch.drift else {
            drift_due = None;
            continue;
        };
        let now = Instant::now();
        let due = match drift_due {
            Some((id, at)) if id == drift_watch.id => now >= at,
            // A new watch: its first check one interval from now.
            _ => {
                drift_due = Some((drift_watch.id, now + drift_watch.interval));
                false
            }
        };
        if !due {
            continue;
        }
        drift_due = Some((drift_watch.id, now + drift_watch.interval));
        // Held while the check runs: the driver's next `watch` waits for it.
        let held = lock(target);
        let still = held
            .as_ref()
            .and_then(|w| w.drift.as_ref())
            .is_some_and(|d| d.id == drift_watch.id);
        if !still {
            continue;
        }
        let Some(client) = connection.as_mut().map(|c| &mut c.client) else {
            continue;
        };
        let started = Instant::now();
        let found = drift::check(
            client,
            &drift_watch.spec.spec,
            &drift_watch.expected_settings,
            &drift_watch.admin_role,
            &drift_watch.privileged_role,
        )
        .map_err(|e| e.to_string());
        let duration_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        drop(held);
        if found.is_err() {
            connection = None;
        }
        (reports.on_drift)(DriftReport {
            watch: drift_watch.id,
            found,
            duration_us,
        });
    }
}

/// The monitor's connection to the Postgres of `config`, opened (again) if needed.
fn connected<'a>(
    connection: &'a mut Option<Connection>,
    config: &postgres::Config,
) -> Option<&'a mut postgres::Client> {
    let wanted = format!("{config:?}");
    if connection.as_ref().is_none_or(|c| c.config != wanted) {
        let mut quick = config.clone();
        quick.connect_timeout(CONNECT_TIMEOUT);
        let limit = format!("SET statement_timeout = {}", drift::CHECK_TIMEOUT_MS);
        let opened = quick
            .connect(postgres::NoTls)
            .and_then(|mut client| client.batch_execute(&limit).map(|()| client));
        *connection = match opened {
            Ok(client) => Some(Connection {
                client,
                config: wanted,
            }),
            Err(e) => {
                log::debug!("the monitor cannot connect: {e}");
                None
            }
        };
    }
    connection.as_mut().map(|c| &mut c.client)
}
