//! Promotion of a running standby to a read-write primary (`POST /promote`): wait until it
//! has replayed the old primary's last flush LSN when the caller gives it (so that no write
//! the old primary acknowledged is lost), then `pg_promote(wait => true)` and a check that
//! recovery is over. Sessions stay connected throughout: Postgres promotes in place.

use std::time::{Duration, Instant};

use serde::Serialize;
use states::{ErrorKind, Lsn, PhaseName, StepError, StepName};

use super::error::describe;
use crate::sync::CancelToken;

const PHASE: PhaseName = PhaseName::Configuring;
const STEP: StepName = StepName::PromotePostgres;

/// How long replay may take to reach the LSN the caller gave.
const REPLAY_WAIT_MAX: Duration = Duration::from_secs(60);
/// How long `pg_promote` waits for the end of recovery (its own `wait_seconds`).
const PROMOTE_WAIT_SECONDS: i32 = 60;
/// How often replay progress is read while waiting.
const REPLAY_POLL: Duration = Duration::from_millis(10);

/// What the promotion did, for the journal and the answer.
#[derive(Clone, Debug, Serialize)]
pub struct Promoted {
    /// `false` when Postgres was not in recovery any more (a promotion retried): nothing done.
    pub promoted_now: bool,
    /// The replay LSN waited for, and how long that took.
    pub wal_flush_lsn: Option<Lsn>,
    pub lsn_wait_ms: u64,
    pub pg_promote_ms: u64,
}

fn failed(kind: ErrorKind, message: String) -> StepError {
    StepError::new(PHASE, STEP, kind, message)
}

fn query_error(doing: &str, e: &postgres::Error) -> StepError {
    failed(ErrorKind::Postgres, format!("{doing}: {}", describe(e)))
}

fn in_recovery(client: &mut postgres::Client) -> Result<bool, StepError> {
    client
        .query_one("SELECT pg_is_in_recovery()", &[])
        .map(|row| row.get(0))
        .map_err(|e| query_error("cannot ask whether postgres is in recovery", &e))
}

/// Promotes the standby `client` is connected to (as the admin role).
pub fn promote(
    client: &mut postgres::Client,
    wal_flush_lsn: Option<Lsn>,
    cancel: &CancelToken,
) -> Result<Promoted, StepError> {
    if !in_recovery(client)? {
        return Ok(Promoted {
            promoted_now: false,
            wal_flush_lsn,
            lsn_wait_ms: 0,
            pg_promote_ms: 0,
        });
    }
    let waited = Instant::now();
    if let Some(lsn) = wal_flush_lsn {
        let target = lsn.to_string();
        loop {
            let row = client
                .query_one(
                    "SELECT coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false), \
                            pg_last_wal_replay_lsn()::text",
                    &[&target],
                )
                .map_err(|e| query_error("cannot read the replay LSN", &e))?;
            if row.get::<_, bool>(0) {
                break;
            }
            if cancel.is_cancelled() {
                return Err(failed(
                    ErrorKind::Cancelled,
                    "the promotion was cancelled".into(),
                ));
            }
            if waited.elapsed() > REPLAY_WAIT_MAX {
                let replayed: Option<String> = row.get(1);
                return Err(failed(
                    ErrorKind::Timeout,
                    format!(
                        "not promoted: replay reached {} and not the old primary's flush LSN \
                         {lsn} within {REPLAY_WAIT_MAX:?}; promoting now would lose the writes \
                         in between",
                        replayed.as_deref().unwrap_or("nothing")
                    ),
                ));
            }
            std::thread::sleep(REPLAY_POLL);
        }
    }
    let lsn_wait_ms = millis(waited.elapsed());
    let started = Instant::now();
    let done: bool = client
        .query_one("SELECT pg_promote(true, $1)", &[&PROMOTE_WAIT_SECONDS])
        .map(|row| row.get(0))
        .map_err(|e| query_error("pg_promote failed", &e))?;
    if !done || in_recovery(client)? {
        return Err(failed(
            ErrorKind::Timeout,
            format!("not promoted: postgres was still in recovery after {PROMOTE_WAIT_SECONDS} s"),
        ));
    }
    Ok(Promoted {
        promoted_now: true,
        wal_flush_lsn,
        lsn_wait_ms,
        pg_promote_ms: millis(started.elapsed()),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
