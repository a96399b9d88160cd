//! Whether the postmaster an earlier run left on PGDATA may be adopted (CONTRACT.md, "Restarts
//! and adoption"): every check in order, the first that fails named. A pure question about
//! the running system; taking the postmaster over is `process::adopt`.

use std::path::Path;
use std::time::Duration;

use super::process::{process_alive, read_pid_file, Binaries};
use super::settings::SPEC_HASH_SETTING;

/// The longest wait for the candidate's answer to `SHOW`.
const SHOW_TIMEOUT: Duration = Duration::from_secs(5);

/// What the candidate must match.
#[derive(Debug)]
pub struct Candidate<'a> {
    pub binaries: &'a Binaries,
    pub pgdata: &'a Path,
    pub state_dir: &'a Path,
    /// The admin connection to the spec's port.
    pub probe: postgres::Config,
    /// `sha256:…` of the spec the journal last saw applied.
    pub spec_hash: &'a str,
}

/// The answer: adopt this pid, or the check that refused and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Adopt { pid: u32 },
    Refuse { check: &'static str, reason: String },
}

fn refuse(check: &'static str, reason: impl Into<String>) -> Verdict {
    Verdict::Refuse {
        check,
        reason: reason.into(),
    }
}

/// Runs the checks: our marker naming our state directory, a live postmaster named by
/// `postmaster.pid`, running our Postgres binary in this PGDATA, serving the spec's hash.
pub fn judge(candidate: &Candidate<'_>) -> Verdict {
    let pgdata = candidate.pgdata;
    if let Err(why) = crate::pgdata::owned_by(pgdata, candidate.state_dir) {
        return refuse("marker", why);
    }
    let Some((pid, status)) = read_pid_file(&pgdata.join("postmaster.pid")) else {
        return refuse(
            "postmaster.pid",
            format!("no readable postmaster.pid in {}", pgdata.display()),
        );
    };
    if !process_alive(pid) {
        return refuse(
            "alive",
            format!("the postmaster {pid} that postmaster.pid names is not running"),
        );
    }
    if status
        .as_deref()
        .is_some_and(|s| s != "ready" && s != "standby")
    {
        return refuse(
            "ready",
            format!("the postmaster {pid} is {}", status.unwrap_or_default()),
        );
    }
    let same = |link: String, expected: &Path| -> Result<(), String> {
        let actual = std::fs::read_link(&link).map_err(|e| format!("cannot read {link}: {e}"))?;
        let expected = std::fs::canonicalize(expected)
            .map_err(|e| format!("cannot resolve {}: {e}", expected.display()))?;
        if actual == expected {
            Ok(())
        } else {
            Err(format!(
                "{} is not {}",
                actual.display(),
                expected.display()
            ))
        }
    };
    if let Err(why) = same(format!("/proc/{pid}/exe"), &candidate.binaries.postgres) {
        return refuse(
            "binary",
            format!("the postmaster {pid} runs another binary: {why}"),
        );
    }
    if let Err(why) = same(format!("/proc/{pid}/cwd"), pgdata) {
        return refuse(
            "pgdata",
            format!("the postmaster {pid} works elsewhere: {why}"),
        );
    }
    let mut probe = candidate.probe.clone();
    probe.connect_timeout(SHOW_TIMEOUT);
    let shown = probe
        .connect(postgres::NoTls)
        .map_err(|e| format!("cannot connect as the admin role: {e}"))
        .and_then(|mut client| {
            client
                .query_one(&format!("SHOW {SPEC_HASH_SETTING}"), &[])
                .map(|row| row.get::<_, String>(0))
                .map_err(|e| format!("SHOW {SPEC_HASH_SETTING} failed: {e}"))
        });
    match shown {
        Ok(hash) if hash == candidate.spec_hash => Verdict::Adopt { pid },
        Ok(hash) => refuse(
            "spec_hash",
            format!(
                "it serves spec {hash}, not the spec last applied {}",
                candidate.spec_hash
            ),
        ),
        Err(why) => refuse("spec_hash", why),
    }
}
