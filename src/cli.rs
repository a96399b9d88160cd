//! The command line (CONTRACT.md, "Command line"): the run flags, the read-only subcommands
//! `journal dump|verify`, `fsm`, `spec check`, and `completions`, `man`, which print what is
//! generated from these same definitions (shell completion scripts, the roff man page).

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};

use crate::logging::LogFormat;

/// The seed's default admin connection; its port comes from the spec.
pub const DEFAULT_CONNSTR: &str = "postgresql://cloud_admin@127.0.0.1/postgres";

/// What `--help` and the man page show after the flags: what a person starting compute_ctl
/// for the first time looks for (CONTRACT.md's exit codes, the variables, an example).
const AFTER_HELP: &str = "\
Exit codes:
  0   terminated on request (SIGTERM, SIGINT, POST /terminate), or Postgres stopped from
      outside in an orderly way (pg_ctl stop -m fast or -m smart), at once
  1   the journal cannot be written, or --http-addr cannot be bound
  2   bad command line (also: -b not found, --pg-user unknown, PGDATA unreachable by it)
  3   bad spec file (nothing was touched)
  4   the state directory is locked by another running compute_ctl (its pid is named)
  5   the journal is damaged beyond its tail (run: compute_ctl journal verify)
  6   PGDATA is not safe to wipe: not empty and not compute_ctl's (it is left untouched)
  10  Postgres exited unexpectedly (a crash, a kill, a non-zero status, pg_ctl stop -m
      immediate), after --failed-linger
  11  start-up or configuration failed (the failed step is in the journal), after --failed-linger

Environment:
  COMPUTE_CTL_LOG           log level: error, warn, info (default), debug, trace
  NEON_CONTROL_PLANE_TOKEN  Bearer token for the control plane of -p/--control-plane-uri
  POSTGRES_PATH             the postgres binary when -b/--pgbin is not given (Neon's)

Example (the embedded default: a fresh initdb, Postgres on 127.0.0.1:55432):
  compute_ctl -D /tmp/compute/pgdata -S fixtures/specs/embedded-default.json
  curl -s localhost:3080/state
  psql -h 127.0.0.1 -p 55432 -U cloud_admin postgres

As root, Postgres runs as --pg-user (default postgres), which must be able to enter every
directory above PGDATA.";

#[derive(Debug, Parser)]
#[command(
    name = "compute_ctl",
    version,
    about = "Runs one PostgreSQL compute node for a control plane, journaling every step",
    args_conflicts_with_subcommands = true,
    // -D is required to run, not to read a journal or print a completion script.
    subcommand_negates_reqs = true,
    after_help = AFTER_HELP
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
    /// Postgres data directory (wiped and rebuilt on every start; only if absent, empty, or
    /// compute_ctl's own)
    #[arg(short = 'D', long = "pgdata", value_name = "DIR", required = true)]
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
    /// Neon's privileged role, created at the first configuration; the spec's roles are
    /// created as its members (lowercase letters and underscores)
    #[arg(
        long,
        value_name = "NAME",
        default_value = crate::postgres::privileged::DEFAULT_NAME,
        value_parser = crate::postgres::PrivilegedRole::parse
    )]
    pub privileged_role_name: crate::postgres::PrivilegedRole,
    /// The postgres binary, or the directory that holds it; initdb, pg_basebackup etc. are
    /// looked up beside it (default: postgres on PATH, else pg_config --bindir)
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
    /// The control plane's base URL (Bearer $NEON_CONTROL_PLANE_TOKEN when set)
    #[arg(short = 'p', long, value_name = "URL")]
    pub control_plane_uri: Option<String>,
    /// Ed25519 public key (PEM): every endpoint but /healthz, /readyz, /metrics then needs a
    /// JWT signed by it (or by a key of the spec envelope's compute_ctl_config.jwks)
    #[arg(long, value_name = "FILE")]
    pub auth_public_key: Option<PathBuf>,
    /// Serve the API on a non-loopback --http-addr without authentication (refused otherwise)
    #[arg(long)]
    pub insecure_http: bool,
    /// Neon's: the API on 0.0.0.0:P, with the authentication of a non-loopback --http-addr
    /// (it replaces --http-addr)
    #[arg(long, value_name = "P", conflicts_with = "http_addr")]
    pub external_http_port: Option<u16>,
    /// Neon's older name of --external-http-port
    #[arg(long, value_name = "P", conflicts_with_all = ["http_addr", "external_http_port"])]
    pub http_port: Option<u16>,
    /// Neon's: the same API without authentication on 127.0.0.1:Q, for processes of this
    /// machine
    #[arg(long, value_name = "Q")]
    pub internal_http_port: Option<u16>,
    /// Neon's bound on Postgres's start, in seconds: from spawning the postmaster to its first
    /// accepted connection (instead of 30 s to postmaster.pid and 300 s more to accepting)
    #[arg(long, value_name = "SECONDS")]
    pub pg_init_timeout: Option<u64>,
    #[command(flatten)]
    pub neon_ignored: NeonIgnored,

    /// Logs go to stderr; the level comes from $COMPUTE_CTL_LOG (default info)
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
    /// In `running`, compare Postgres with the applied spec every --drift-interval: report
    /// what differs, or also repair it by applying the spec again
    #[arg(long, value_enum, default_value = "report")]
    pub drift: DriftMode,
    /// How often the drift check runs (and the least time between two repairs)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    pub drift_interval: Duration,
    /// In `empty`, prepare a cluster for the embedded default before a spec arrives
    #[arg(long)]
    pub prepare: bool,
}

/// Neon compute_ctl's flags that mean nothing here (Neon's `compute_tools/src/bin/compute_ctl.rs`
/// gives their shapes: a switch, a value, `--lakebase-mode true|false`): accepted so that
/// Neon's tools start compute_ctl unchanged, and logged as ignored (never their values: a
/// connection string may hold a password).
#[derive(Debug, Default, Args)]
#[command(next_help_heading = "Neon's flags, accepted and ignored")]
pub struct NeonIgnored {
    /// Neon's development mode (it skips VM-only steps; there are none here)
    #[arg(long)]
    pub dev: bool,
    /// Neon's remote extension storage (extensions come from the Postgres installation here)
    #[arg(short = 'r', long, value_name = "URL")]
    pub remote_ext_base_url: Option<String>,
    /// Neon's swap resizing on a VM
    #[arg(long)]
    pub resize_swap_on_bind: bool,
    /// Neon's disk quota on a VM's file system
    #[arg(long, value_name = "FS")]
    pub set_disk_quota_for_fs: Option<String>,
    /// Neon's cgroup for Postgres on a VM
    #[arg(long, value_name = "NAME")]
    pub cgroup: Option<String>,
    /// Neon's vm-monitor connection to Postgres for the local file cache
    #[arg(long, value_name = "CONNSTR")]
    pub filecache_connstr: Option<String>,
    /// Neon's vm-monitor address (the sidecar here is --vm-monitor)
    #[arg(long, value_name = "ADDR")]
    pub vm_monitor_addr: Option<String>,
    /// Neon's interval of its installed-extensions metric, in seconds
    #[arg(long, value_name = "SECONDS")]
    pub installed_extensions_collection_interval: Option<u64>,
    /// Neon's Lakebase (Hadron) deployment mode
    #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
    pub lakebase_mode: Option<bool>,
}

impl NeonIgnored {
    /// The flags given, each with why it means nothing here.
    pub fn given(&self) -> Vec<(&'static str, &'static str)> {
        let flags = [
            (
                self.dev,
                "--dev",
                "Neon's development mode skips VM-only steps, and there are none here",
            ),
            (
                self.remote_ext_base_url.is_some(),
                "--remote-ext-base-url",
                "extensions come from the Postgres installation, not from remote storage",
            ),
            (
                self.resize_swap_on_bind,
                "--resize-swap-on-bind",
                "swap is the machine's, not resized here",
            ),
            (
                self.set_disk_quota_for_fs.is_some(),
                "--set-disk-quota-for-fs",
                "disk quotas are the machine's, not set here",
            ),
            (
                self.cgroup.is_some(),
                "--cgroup",
                "Postgres runs in compute_ctl's own cgroup",
            ),
            (
                self.filecache_connstr.is_some(),
                "--filecache-connstr",
                "there is no local file cache (a Neon extension)",
            ),
            (
                self.vm_monitor_addr.is_some(),
                "--vm-monitor-addr",
                "the sidecar is started with --vm-monitor and gets no address",
            ),
            (
                self.installed_extensions_collection_interval.is_some(),
                "--installed-extensions-collection-interval",
                "there is no installed-extensions metric",
            ),
            (
                self.lakebase_mode.is_some(),
                "--lakebase-mode",
                "there is no Lakebase deployment mode",
            ),
        ];
        flags
            .into_iter()
            .filter(|(given, _, _)| *given)
            .map(|(_, flag, why)| (flag, why))
            .collect()
    }
}

/// What `running` does with a drift (`--drift`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DriftMode {
    /// Show it in `/state.drift` and the journal.
    Report,
    /// Also apply the desired spec again (cause `drift`), at most once per interval.
    Repair,
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
    /// Print the shell completion script (e.g. compute_ctl completions bash >
    /// /etc/bash_completion.d/compute_ctl)
    Completions {
        #[arg(value_enum)]
        shell: CompletionShell,
    },
    /// Print the man page, roff (e.g. compute_ctl man > /usr/share/man/man1/compute_ctl.1)
    Man,
}

/// The shells `completions` writes a script for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

/// Writes the completion script of `shell` for this command line.
pub fn completions(shell: CompletionShell, out: &mut dyn std::io::Write) {
    let shell = match shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut Cli::command(), "compute_ctl", out);
}

/// Writes the man page (roff) of this command line.
pub fn man_page(out: &mut dyn std::io::Write) -> std::io::Result<()> {
    clap_mangen::Man::new(Cli::command()).render(out)
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
        /// Also check setting names, values and libraries against this postgres binary (or
        /// the directory that holds it)
        #[arg(short = 'b', long = "pgbin", value_name = "PATH")]
        pgbin: Option<PathBuf>,
        /// The admin connection the compute will use: its user may own databases
        #[arg(short = 'C', long = "connstr", value_name = "URL", default_value = DEFAULT_CONNSTR)]
        connstr: String,
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
        assert_eq!(cli.run.drift, DriftMode::Report);
        assert_eq!(cli.run.drift_interval, Duration::from_secs(30));
    }

    #[test]
    fn the_definitions_hold_together() {
        Cli::command().debug_assert();
    }

    #[test]
    fn pgdata_is_required_to_run_only() {
        let err = Cli::try_parse_from(["compute_ctl", "-S", "/s.json"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
        assert!(err.to_string().contains("--pgdata <DIR>"), "{err}");
        let cli = Cli::try_parse_from(["compute_ctl", "completions", "zsh"]).unwrap();
        assert!(matches!(
            cli.command,
            Some(Command::Completions {
                shell: CompletionShell::Zsh
            })
        ));
    }

    /// neon_local's invocation (Neon's `control_plane/src/endpoint.rs`), with the flags it
    /// adds for `--dev` and a remote extension gateway.
    #[test]
    fn parses_neon_locals_invocation() {
        let cli = Cli::try_parse_from([
            "compute_ctl",
            "--external-http-port",
            "55433",
            "--internal-http-port",
            "55434",
            "--pgdata",
            "/e/pgdata",
            "--connstr",
            "postgresql://cloud_admin@127.0.0.1:55432/postgres",
            "--config",
            "/e/config.json",
            "--pgbin",
            "/pg/bin/postgres",
            "--compute-id",
            "ep-1",
            "--remote-ext-base-url",
            "http://ext",
            "--dev",
        ])
        .unwrap();
        assert_eq!(cli.run.external_http_port, Some(55433));
        assert_eq!(cli.run.internal_http_port, Some(55434));
        assert_eq!(cli.run.compute_id.as_deref(), Some("ep-1"));
        assert_eq!(cli.run.spec.unwrap(), PathBuf::from("/e/config.json"));
        let ignored: Vec<&str> = cli.run.neon_ignored.given().iter().map(|g| g.0).collect();
        assert_eq!(ignored, ["--dev", "--remote-ext-base-url"]);
    }

    /// Neon's shapes: switches take no value, the others one, `--lakebase-mode` a boolean.
    #[test]
    fn neon_flags_that_mean_nothing_keep_their_shapes() {
        let cli = Cli::try_parse_from([
            "compute_ctl",
            "-D",
            "/d",
            "--dev",
            "-r",
            "http://ext",
            "--resize-swap-on-bind",
            "--set-disk-quota-for-fs",
            "/var",
            "--cgroup",
            "neon-postgres",
            "--filecache-connstr",
            "host=localhost",
            "--vm-monitor-addr",
            "0.0.0.0:10301",
            "--installed-extensions-collection-interval",
            "3600",
            "--lakebase-mode",
            "false",
        ])
        .unwrap();
        assert_eq!(cli.run.neon_ignored.given().len(), 9);
        let refused = [
            vec!["--lakebase-mode"],
            vec!["--lakebase-mode", "maybe"],
            vec!["--installed-extensions-collection-interval", "hourly"],
            vec!["--dev=true"],
        ];
        for extra in refused {
            let mut line = vec!["compute_ctl", "-D", "/d"];
            line.extend(&extra);
            assert!(
                Cli::try_parse_from(&line).is_err(),
                "{extra:?} was accepted"
            );
        }
    }

    /// Contradictory addresses are a bad command line naming both flags; --http-addr's default
    /// is no contradiction.
    #[test]
    fn contradictory_http_flags_are_refused() {
        for (a, b) in [
            ("--http-addr", "--external-http-port"),
            ("--http-addr", "--http-port"),
            ("--external-http-port", "--http-port"),
        ] {
            let value = |flag: &str| {
                if flag == "--http-addr" {
                    "127.0.0.1:1"
                } else {
                    "1"
                }
            };
            let err = Cli::try_parse_from(["compute_ctl", "-D", "/d", a, value(a), b, value(b)])
                .unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(text.contains(a) && text.contains(b), "{text}");
        }
        let cli = Cli::try_parse_from(["compute_ctl", "-D", "/d", "--http-port", "3080"]).unwrap();
        assert_eq!(cli.run.http_port, Some(3080));
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
