//! The command line (CONTRACT.md, "Command line"): the run flags, and the read-only
//! subcommands `journal dump|verify`, `fsm`, `spec check`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;

/// The seed's default admin connection; its port comes from the spec.
pub const DEFAULT_CONNSTR: &str = "postgresql://cloud_admin@127.0.0.1/postgres";

#[derive(Debug, Parser)]
#[command(
    name = "compute_ctl",
    version,
    about = "Runs one PostgreSQL compute node for a control plane, journaling every step",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of the run (no subcommand).
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Postgres data directory (wiped and rebuilt on every start)
    #[arg(short = 'D', long = "pgdata", value_name = "DIR")]
    pub pgdata: Option<PathBuf>,
    /// Spec file: a bare compute spec, or Neon's {"spec": …, "compute_ctl_config": …}
    #[arg(
        short = 'S',
        long = "spec",
        visible_alias = "config",
        short_alias = 'c',
        value_name = "FILE"
    )]
    pub spec: Option<PathBuf>,
    /// How compute_ctl connects to its Postgres as the admin (superuser) role
    #[arg(short = 'C', long = "connstr", value_name = "URL", default_value = DEFAULT_CONNSTR)]
    pub connstr: String,
    /// The postgres binary; initdb, pg_basebackup etc. are looked up beside it
    #[arg(short = 'b', long = "pgbin", value_name = "PATH")]
    pub pgbin: Option<PathBuf>,
    /// Journal, stored specs, lock (default: <PGDATA>.state)
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the HTTP API listens
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:3080")]
    pub http_addr: String,
    /// OS user that runs Postgres when compute_ctl runs as root
    #[arg(long, value_name = "USER", default_value = "postgres")]
    pub pg_user: String,
    /// Fetch the spec from the control plane for this compute
    #[arg(short = 'i', long, value_name = "ID")]
    pub compute_id: Option<String>,
    /// The control plane's base URL
    #[arg(short = 'p', long, value_name = "URL")]
    pub control_plane_uri: Option<String>,
    /// Ed25519 public key (PEM): mutating endpoints then need a JWT signed by it
    #[arg(long, value_name = "FILE")]
    pub auth_public_key: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// The monitor tick
    #[arg(long, value_name = "DURATION", default_value = "500ms", value_parser = humantime::parse_duration)]
    pub monitor_interval: Duration,
    /// A sidecar started once Postgres runs (default: /bin/vm-informant when it exists)
    #[arg(long, value_name = "PATH")]
    pub vm_monitor: Option<PathBuf>,
    /// How long to keep serving in `failed` before exiting
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub failed_linger: Duration,
    /// In `empty`, prepare a cluster for the embedded default before a spec arrives
    #[arg(long)]
    pub prepare: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Read the journal (read-only: works while compute_ctl runs)
    Journal {
        #[command(subcommand)]
        command: JournalCommand,
    },
    /// Print the transition table of the state machine
    Fsm {
        #[arg(long, value_enum, default_value = "mermaid")]
        format: FsmFormat,
    },
    /// Check specs
    Spec {
        #[command(subcommand)]
        command: SpecCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum JournalCommand {
    /// Print records, human-readable or one JSON object a line
    Dump {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        /// Only records after this seq
        #[arg(long, value_name = "SEQ", default_value_t = 0)]
        since: u64,
        #[arg(long)]
        json: bool,
    },
    /// Exit 0 if every record is intact; else name the first bad one
    Verify {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Exit 0 for a valid spec; else print the JSON path and reason of each error
    Check {
        file: PathBuf,
        /// Also check setting names and libraries against this postgres binary
        #[arg(short = 'b', long = "pgbin", value_name = "PATH")]
        pgbin: Option<PathBuf>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FsmFormat {
    Mermaid,
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_seed_usage_line() {
        let cli = Cli::try_parse_from([
            "compute_ctl",
            "-D",
            "/var/db/postgres/compute",
            "-C",
            "postgresql://cloud_admin@localhost/postgres",
            "-S",
            "/var/db/postgres/specs/current.json",
            "-b",
            "/usr/local/bin/postgres",
        ])
        .unwrap();
        assert!(cli.command.is_none());
        assert_eq!(
            cli.run.pgdata.unwrap(),
            PathBuf::from("/var/db/postgres/compute")
        );
        assert_eq!(
            cli.run.spec.unwrap(),
            PathBuf::from("/var/db/postgres/specs/current.json")
        );
        assert_eq!(cli.run.failed_linger, Duration::from_secs(30));
        assert_eq!(cli.run.monitor_interval, Duration::from_millis(500));
    }

    #[test]
    fn config_is_an_alias_of_spec() {
        for flag in ["-c", "--config", "--spec"] {
            let cli = Cli::try_parse_from(["compute_ctl", "-D", "/d", flag, "/s.json"]).unwrap();
            assert_eq!(cli.run.spec.unwrap(), PathBuf::from("/s.json"));
        }
    }

    #[test]
    fn parses_subcommands() {
        let cli = Cli::try_parse_from([
            "compute_ctl",
            "journal",
            "dump",
            "--state-dir",
            "/s",
            "--since",
            "7",
            "--json",
        ])
        .unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Journal {
                command: JournalCommand::Dump {
                    since: 7,
                    json: true,
                    ..
                }
            })
        ));
        let cli = Cli::try_parse_from(["compute_ctl", "fsm", "--format", "json"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Fsm {
                format: FsmFormat::Json
            })
        ));
    }
}
