//! The process's exit codes (CONTRACT.md, "Exit codes"): every exit goes through `ExitCode`,
//! and the README's table is tested against `ExitCode::ALL`.

use states::ExitReason;

use crate::journal::JournalError;

/// Why compute_ctl exits, and so its code.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExitCode {
    /// Terminated on request (SIGTERM, `POST /terminate`), or Postgres was stopped from
    /// outside in an orderly way.
    Terminated,
    /// The journal cannot be written, or the HTTP address cannot be bound.
    Fatal,
    /// A bad command line.
    BadCommandLine,
    /// A bad spec file (nothing was touched).
    BadSpecFile,
    /// The state directory is locked by another running compute_ctl.
    Locked,
    /// The journal is damaged beyond its tail.
    JournalDamaged,
    /// PGDATA is not safe to wipe (not empty and not ours).
    PgdataUnsafe,
    /// Postgres exited unexpectedly (not an orderly stop from outside), after
    /// `--failed-linger`.
    PostgresExited,
    /// Start-up or configuration failed, after `--failed-linger`.
    StepFailed,
}

impl ExitCode {
    pub const ALL: [ExitCode; 9] = [
        ExitCode::Terminated,
        ExitCode::Fatal,
        ExitCode::BadCommandLine,
        ExitCode::BadSpecFile,
        ExitCode::Locked,
        ExitCode::JournalDamaged,
        ExitCode::PgdataUnsafe,
        ExitCode::PostgresExited,
        ExitCode::StepFailed,
    ];

    pub fn code(self) -> i32 {
        match self {
            ExitCode::Terminated => 0,
            ExitCode::Fatal => 1,
            ExitCode::BadCommandLine => 2,
            ExitCode::BadSpecFile => 3,
            ExitCode::Locked => 4,
            ExitCode::JournalDamaged => 5,
            ExitCode::PgdataUnsafe => 6,
            ExitCode::PostgresExited => 10,
            ExitCode::StepFailed => 11,
        }
    }

    /// The code a journal error ends the process with: 4 locked, 5 damaged, 1 otherwise.
    pub fn of_journal_error(error: &JournalError) -> ExitCode {
        match error {
            JournalError::Locked { .. } => ExitCode::Locked,
            JournalError::Damaged { .. } => ExitCode::JournalDamaged,
            _ => ExitCode::Fatal,
        }
    }
}

impl From<ExitReason> for ExitCode {
    fn from(reason: ExitReason) -> ExitCode {
        match reason {
            ExitReason::Requested | ExitReason::StoppedFromOutside => ExitCode::Terminated,
            ExitReason::PgdataUnsafe => ExitCode::PgdataUnsafe,
            ExitReason::PostmasterExited => ExitCode::PostgresExited,
            ExitReason::StepFailed => ExitCode::StepFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_the_core_reasons_agree() {
        let mut codes: Vec<i32> = ExitCode::ALL.iter().map(|c| c.code()).collect();
        codes.dedup();
        assert_eq!(codes.len(), ExitCode::ALL.len());
        for reason in [
            ExitReason::Requested,
            ExitReason::StoppedFromOutside,
            ExitReason::PgdataUnsafe,
            ExitReason::PostmasterExited,
            ExitReason::StepFailed,
        ] {
            assert_eq!(ExitCode::from(reason).code(), reason.code());
        }
    }
}
