//! The activity monitor: every `--monitor-interval` it asks the running Postgres whether anyone
//! is active (a client backend not idle, a walsender, a subscription or autovacuum worker) and
//! reports it through a callback (the driver shows it as `last_active`).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::Clock;
use crate::sync::lock;

/// Counts the sessions that make the compute active; compute_ctl's own do not.
const ACTIVITY_QUERY: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE pid <> pg_backend_pid() AND coalesce(application_name, '') <> 'compute_ctl' \
       AND ((backend_type = 'client backend' AND state IS DISTINCT FROM 'idle') \
            OR backend_type IN ('walsender', 'logical replication worker', 'autovacuum worker'))";

/// Handle to the monitor thread: tells it which Postgres to watch.
#[derive(Clone, Debug)]
pub struct Monitor {
    target: Arc<Mutex<Option<postgres::Config>>>,
}

impl Monitor {
    /// Starts the monitor thread; `on_active` gets the wall time (ms) of each check that saw
    /// activity, and must not block.
    pub fn start(
        interval: Duration,
        on_active: impl Fn(u64) + Send + 'static,
        clock: Clock,
    ) -> anyhow::Result<Monitor> {
        let target: Arc<Mutex<Option<postgres::Config>>> = Arc::new(Mutex::new(None));
        let watched = target.clone();
        std::thread::Builder::new()
            .name("monitor".into())
            .spawn(move || watch_loop(interval, &watched, &on_active, clock))?;
        Ok(Monitor { target })
    }

    /// Watches the Postgres reachable with `config`, or none.
    pub fn watch(&self, config: Option<postgres::Config>) {
        *lock(&self.target) = config;
    }
}

fn watch_loop(
    interval: Duration,
    target: &Mutex<Option<postgres::Config>>,
    on_active: &dyn Fn(u64),
    clock: Clock,
) {
    let mut client: Option<(postgres::Client, postgres::Config)> = None;
    loop {
        std::thread::sleep(interval);
        let wanted = lock(target).clone();
        let Some(config) = wanted else {
            client = None;
            continue;
        };
        if client
            .as_ref()
            .is_none_or(|(_, c)| format!("{c:?}") != format!("{config:?}"))
        {
            let mut quick = config.clone();
            quick.connect_timeout(Duration::from_secs(2));
            client = quick.connect(postgres::NoTls).ok().map(|c| (c, config));
        }
        let Some((connection, _)) = client.as_mut() else {
            continue;
        };
        match connection.query_one(ACTIVITY_QUERY, &[]) {
            Ok(row) => {
                let active: i64 = row.get(0);
                if active > 0 {
                    on_active(clock.now().wall_ms);
                }
            }
            Err(e) => {
                log::debug!("activity check failed: {e}");
                client = None;
            }
        }
    }
}
