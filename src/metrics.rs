//! The Prometheus registry behind `GET /metrics`: counters and histograms kept in fixed arrays
//! of atomics (no lock, no allocation on the hot path), the gauges of the published view, and
//! the standard `process_*` metrics read from `/proc/self`.
//!
//! Names follow Prometheus's conventions: base units (`_seconds`, `_bytes`), `_total` on
//! counters, bounded label values (phases, steps, known routes, known methods, known status
//! codes; anything else is `other`). Rendering reads only the published view, these atomics
//! and `/proc/self`, never Postgres, so a scrape costs the same whatever Postgres does.
//!
//! Who counts what: the driver's journal appends count transitions `{from,to}` and step
//! outcomes `{step,result}` with their durations (`journaled`), the journal file counts its
//! appends, fsyncs and append latency (`journal_appended`), the HTTP threads count requests
//! `{method,route,code}` and their latency `{route}` (`http_request`), and each published
//! view moves the downtime account (`published`).
//!
//! Beside ours, Neon compute_ctl's names where they mean something here (its
//! `compute_tools/src/metrics.rs`), so that its dashboards and alerts work unchanged:
//! `compute_ctl_up{build_tag,status}` (1 for the current `/status` name),
//! `compute_pg_current_downtime_ms` and `compute_pg_downtime_ms_total` (see [`Downtime`]).
//! Neon's two downtime names carry `ms`, which `promtool check metrics` calls an abbreviated
//! unit; they are kept as Neon spells them, and `compute_ctl_postgres_downtime_seconds_total`
//! and `compute_ctl_postgres_current_downtime_seconds` say the same in base units.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use states::{ErrorKind, PhaseName, StepName};

use crate::journal::{Record, RecordBody};
use crate::view::StateView;

/// Upper bounds of every histogram's buckets, in seconds: 100 µs to 5 min.
pub const BUCKETS_SECONDS: [f64; 19] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 300.0,
];

/// The steps the worker runs and the journal reports finished.
pub const STEPS: [StepName; 9] = [
    StepName::AdoptPostgres,
    StepName::InitPgdata,
    StepName::SyncSafekeepers,
    StepName::FetchBasebackup,
    StepName::SpawnPostgres,
    StepName::ApplySpec,
    StepName::PromotePostgres,
    StepName::StopPostgres,
    StepName::FetchSpec,
];

/// `result` of `compute_ctl_step_results_total`.
pub const STEP_RESULTS: [&str; 3] = ["ok", "error", "cancelled"];

/// The routes of CONTRACT.md, the label of HTTP metrics; anything else is `other`.
pub const ROUTES: [&str; 21] = [
    "/state",
    "/spec",
    "/journal",
    "/healthz",
    "/readyz",
    "/metrics",
    "/fsm",
    "/terminate",
    "/recover",
    "/status",
    "/configure",
    "/metrics.json",
    "/openapi.json",
    "/promote",
    "/dbs_and_roles",
    "/database_schema",
    "/check_writability",
    "/insights",
    "/extensions",
    "/grants",
    "other",
];

/// HTTP methods counted by name; anything else is `other`.
pub const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "other",
];

/// Status codes compute_ctl answers, counted by number; anything else is `other`.
pub const CODES: [&str; 16] = [
    "200", "202", "400", "401", "403", "404", "405", "409", "412", "413", "415", "500", "501",
    "503", "504", "other",
];

const PHASES: usize = PhaseName::ALL.len();

/// A histogram: cumulative on render, per bucket here.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS_SECONDS.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    const fn new() -> Histogram {
        Histogram {
            buckets: [const { AtomicU64::new(0) }; BUCKETS_SECONDS.len()],
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(i) = BUCKETS_SECONDS.iter().position(|&le| seconds <= le) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (i, le) in BUCKETS_SECONDS.iter().enumerate() {
            cumulative += self.buckets[i].load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {cumulative}"
            );
        }
        // Read after the buckets: +Inf is never below the last bucket.
        let count = self.count.load(Ordering::Relaxed).max(cumulative);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// Everything counted since the process started.
#[derive(Debug)]
struct Registry {
    transitions: [[AtomicU64; PHASES]; PHASES],
    step_results: [[AtomicU64; STEP_RESULTS.len()]; STEPS.len()],
    step_duration: [Histogram; STEPS.len()],
    http_requests: [[[AtomicU64; CODES.len()]; ROUTES.len()]; METHODS.len()],
    http_duration: [Histogram; ROUTES.len()],
    journal_appends: AtomicU64,
    journal_records: AtomicU64,
    journal_fsyncs: AtomicU64,
    journal_append_duration: Histogram,
}

static REGISTRY: Registry = Registry {
    transitions: [const { [const { AtomicU64::new(0) }; PHASES] }; PHASES],
    step_results: [const { [const { AtomicU64::new(0) }; STEP_RESULTS.len()] }; STEPS.len()],
    step_duration: [const { Histogram::new() }; STEPS.len()],
    http_requests: [const { [const { [const { AtomicU64::new(0) }; CODES.len()] }; ROUTES.len()] };
        METHODS.len()],
    http_duration: [const { Histogram::new() }; ROUTES.len()],
    journal_appends: AtomicU64::new(0),
    journal_records: AtomicU64::new(0),
    journal_fsyncs: AtomicU64::new(0),
    journal_append_duration: Histogram::new(),
};

fn phase_index(phase: PhaseName) -> usize {
    PhaseName::ALL
        .iter()
        .position(|p| *p == phase)
        .unwrap_or_default()
}

/// Neon's `build_tag` label of `compute_ctl_up`: `BUILD_TAG` at compile time (Neon's image
/// builds set it), else the crate's version.
pub const BUILD_TAG: &str = match option_env!("BUILD_TAG") {
    Some(tag) => tag,
    None => env!("CARGO_PKG_VERSION"),
};

/// Whether Postgres serves, as the published view says, for the downtime account.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serving {
    /// It accepts connections: `running`, `configuring`, `configuration_pending`, or `failed`
    /// while the postmaster still runs (a failed reconfiguration).
    Yes,
    /// It does not: gone, or being started again (`init` … `starting`, `failed` without a
    /// postmaster).
    No,
    /// A stop was asked for (`terminating`, `terminated`): not downtime.
    Stopping,
}

impl Serving {
    pub fn of(view: &StateView) -> Serving {
        match view.phase {
            PhaseName::Terminating | PhaseName::Terminated => Serving::Stopping,
            PhaseName::Running
            | PhaseName::Configuring
            | PhaseName::ConfigurationPending
            | PhaseName::Failed
                if view.postmaster_pid.is_some() =>
            {
                Serving::Yes
            }
            PhaseName::Empty
            | PhaseName::Init
            | PhaseName::SyncSafekeepers
            | PhaseName::Basebackup
            | PhaseName::Starting
            | PhaseName::Running
            | PhaseName::Configuring
            | PhaseName::ConfigurationPending
            | PhaseName::Failed => Serving::No,
        }
    }
}

/// Postgres's downtime in this process run, as Neon's monitor counts it: from the first time
/// Postgres serves, every stretch in which it does not, until it serves again. Neon's monitor
/// sees a failed connection or query every 500 ms; here the published view says it at once
/// (the postmaster's exit is a `waitpid` away). Times are milliseconds of a monotonic clock,
/// passed in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Downtime {
    /// Postgres served once: downtime counts from then (a first start-up is not downtime).
    served: bool,
    /// When the stretch without Postgres now open began.
    down_since_ms: Option<u64>,
    /// The stretches that ended.
    ended_ms: u64,
}

impl Downtime {
    pub fn observe(&mut self, serving: Serving, now_ms: u64) {
        match serving {
            Serving::Yes => {
                self.close(now_ms);
                self.served = true;
            }
            Serving::No => {
                if self.served && self.down_since_ms.is_none() {
                    self.down_since_ms = Some(now_ms);
                }
            }
            Serving::Stopping => self.close(now_ms),
        }
    }

    fn close(&mut self, now_ms: u64) {
        if let Some(since) = self.down_since_ms.take() {
            self.ended_ms += now_ms.saturating_sub(since);
        }
    }

    /// Neon's `compute_pg_current_downtime_ms`: how long the stretch now open has lasted; 0
    /// while Postgres serves.
    pub fn current_ms(&self, now_ms: u64) -> u64 {
        self.down_since_ms
            .map_or(0, |since| now_ms.saturating_sub(since))
    }

    /// Neon's `compute_pg_downtime_ms_total`: every stretch, the one open included.
    pub fn total_ms(&self, now_ms: u64) -> u64 {
        self.ended_ms + self.current_ms(now_ms)
    }
}

/// The downtime account and the clock it reads.
static DOWNTIME: Mutex<Downtime> = Mutex::new(Downtime {
    served: false,
    down_since_ms: None,
    ended_ms: 0,
});

/// Milliseconds since the first call: the downtime account's monotonic clock.
fn mono_ms() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn downtime() -> std::sync::MutexGuard<'static, Downtime> {
    // A panic elsewhere aborts the process (release profile); the account stays readable.
    DOWNTIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The driver published `view`: the downtime account follows it.
pub fn published(view: &StateView) {
    let now = mono_ms();
    downtime().observe(Serving::of(view), now);
}

/// The driver journaled these records: count transitions and finished steps.
pub fn journaled(records: &[Record]) {
    for record in records {
        match &record.body {
            RecordBody::Transition(t) => {
                REGISTRY.transitions[phase_index(t.from)][phase_index(t.to)]
                    .fetch_add(1, Ordering::Relaxed);
            }
            RecordBody::StepFinished(f) => {
                let Some(step) = STEPS.iter().position(|s| *s == f.step) else {
                    continue;
                };
                let result = match (&f.error, f.ok) {
                    (_, true) => 0,
                    (Some(e), false) if e.kind == ErrorKind::Cancelled => 2,
                    (_, false) => 1,
                };
                REGISTRY.step_results[step][result].fetch_add(1, Ordering::Relaxed);
                REGISTRY.step_duration[step].observe(Duration::from_millis(f.duration_ms));
            }
            RecordBody::Start(_)
            | RecordBody::SpecAccepted(_)
            | RecordBody::StepStarted(_)
            | RecordBody::Drift(_) => {}
        }
    }
}

/// The journal file wrote and synced one batch of `records`.
pub fn journal_appended(records: usize, fsyncs: u64, took: Duration) {
    REGISTRY.journal_appends.fetch_add(1, Ordering::Relaxed);
    REGISTRY
        .journal_records
        .fetch_add(records as u64, Ordering::Relaxed);
    REGISTRY.journal_fsyncs.fetch_add(fsyncs, Ordering::Relaxed);
    REGISTRY.journal_append_duration.observe(took);
}

/// The route label of a request path: one of `ROUTES`.
pub fn route_index(path: &str) -> usize {
    ROUTES
        .iter()
        .position(|r| *r == path)
        .unwrap_or(ROUTES.len() - 1)
}

/// An HTTP request was answered with `code` after `took`.
pub fn http_request(method: &str, path: &str, code: u16, took: Duration) {
    let method = METHODS
        .iter()
        .position(|m| *m == method)
        .unwrap_or(METHODS.len() - 1);
    let route = route_index(path);
    let code = code.to_string();
    let code = CODES
        .iter()
        .position(|c| *c == code)
        .unwrap_or(CODES.len() - 1);
    REGISTRY.http_requests[method][route][code].fetch_add(1, Ordering::Relaxed);
    REGISTRY.http_duration[route].observe(took);
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The whole exposition, Prometheus text format 0.0.4.
pub fn render(view: &StateView) -> String {
    let mut out = String::with_capacity(32 * 1024);
    header(
        &mut out,
        "compute_ctl_build_info",
        "gauge",
        "Always 1; the version of compute_ctl in a label.",
    );
    let _ = writeln!(
        out,
        "compute_ctl_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    gauges(&mut out, view);
    neon(&mut out, view);

    header(
        &mut out,
        "compute_ctl_transitions_total",
        "counter",
        "Phase transitions journaled by this process run.",
    );
    for (from, row) in REGISTRY.transitions.iter().enumerate() {
        for (to, counter) in row.iter().enumerate() {
            let n = counter.load(Ordering::Relaxed);
            if n > 0 {
                let _ = writeln!(
                    out,
                    "compute_ctl_transitions_total{{from=\"{}\",to=\"{}\"}} {n}",
                    PhaseName::ALL[from],
                    PhaseName::ALL[to]
                );
            }
        }
    }
    header(
        &mut out,
        "compute_ctl_step_results_total",
        "counter",
        "Worker steps finished, by outcome.",
    );
    for (step, row) in REGISTRY.step_results.iter().enumerate() {
        for (result, counter) in row.iter().enumerate() {
            let _ = writeln!(
                out,
                "compute_ctl_step_results_total{{step=\"{}\",result=\"{}\"}} {}",
                STEPS[step],
                STEP_RESULTS[result],
                counter.load(Ordering::Relaxed)
            );
        }
    }
    header(
        &mut out,
        "compute_ctl_step_duration_seconds",
        "histogram",
        "How long worker steps took.",
    );
    for (step, histogram) in REGISTRY.step_duration.iter().enumerate() {
        // A step that never ran has no series (as a route that was never asked).
        if histogram.count.load(Ordering::Relaxed) == 0 {
            continue;
        }
        histogram.render(
            &mut out,
            "compute_ctl_step_duration_seconds",
            &format!("step=\"{}\"", STEPS[step]),
        );
    }
    header(
        &mut out,
        "compute_ctl_http_requests_total",
        "counter",
        "HTTP requests answered, by method, route and status code.",
    );
    for (method, routes) in REGISTRY.http_requests.iter().enumerate() {
        for (route, codes) in routes.iter().enumerate() {
            for (code, counter) in codes.iter().enumerate() {
                let n = counter.load(Ordering::Relaxed);
                if n > 0 {
                    let _ = writeln!(
                        out,
                        "compute_ctl_http_requests_total{{method=\"{}\",route=\"{}\",code=\"{}\"}} {n}",
                        METHODS[method], ROUTES[route], CODES[code]
                    );
                }
            }
        }
    }
    header(
        &mut out,
        "compute_ctl_http_request_duration_seconds",
        "histogram",
        "Time from a request's arrival to its answer being ready, by route.",
    );
    for (route, histogram) in REGISTRY.http_duration.iter().enumerate() {
        if histogram.count.load(Ordering::Relaxed) > 0 {
            histogram.render(
                &mut out,
                "compute_ctl_http_request_duration_seconds",
                &format!("route=\"{}\"", ROUTES[route]),
            );
        }
    }
    for (name, help, counter) in [
        (
            "compute_ctl_journal_appends_total",
            "Journal appends (one write and one fsync each, for all an input caused).",
            &REGISTRY.journal_appends,
        ),
        (
            "compute_ctl_journal_records_total",
            "Journal records appended.",
            &REGISTRY.journal_records,
        ),
        (
            "compute_ctl_journal_fsyncs_total",
            "fsyncs of journal segments and of the journal directory.",
            &REGISTRY.journal_fsyncs,
        ),
    ] {
        header(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
    }
    header(
        &mut out,
        "compute_ctl_journal_append_duration_seconds",
        "histogram",
        "Journal append latency: write and fsync.",
    );
    REGISTRY.journal_append_duration.render(
        &mut out,
        "compute_ctl_journal_append_duration_seconds",
        "",
    );
    process(&mut out);
    out
}

fn gauges(out: &mut String, view: &StateView) {
    header(
        out,
        "compute_ctl_phase",
        "gauge",
        "1 for the compute's current phase.",
    );
    for phase in PhaseName::ALL {
        let _ = writeln!(
            out,
            "compute_ctl_phase{{phase=\"{phase}\"}} {}",
            u8::from(phase == view.phase)
        );
    }
    let seconds = |ms: u64| ms as f64 / 1000.0;
    let startup = &view.startup;
    let gauges: [(&str, &str, f64); 15] = [
        (
            "compute_ctl_desired_generation",
            "The generation of the desired spec.",
            view.desired_generation.unwrap_or(0) as f64,
        ),
        (
            "compute_ctl_applied_generation",
            "The generation applied to the running Postgres.",
            view.applied_generation.unwrap_or(0) as f64,
        ),
        (
            "compute_ctl_journal_seq",
            "The seq of the last journal record.",
            view.seq as f64,
        ),
        (
            "compute_ctl_epoch",
            "The journal epoch of this process run.",
            view.epoch as f64,
        ),
        (
            "compute_ctl_attempt",
            "The attempt of the current phase's step.",
            f64::from(view.attempt),
        ),
        (
            "compute_ctl_postgres_up",
            "1 while a postmaster runs.",
            f64::from(u8::from(view.postmaster_pid.is_some())),
        ),
        (
            "compute_ctl_ready",
            "1 when running with the desired spec applied.",
            f64::from(u8::from(view.ready())),
        ),
        (
            "compute_ctl_pending_restart_settings",
            "Settings waiting for a restart.",
            view.pending_restart.len() as f64,
        ),
        (
            "compute_ctl_startup_sync_safekeepers_seconds",
            "The sync_safekeepers phase of the last start-up.",
            seconds(startup.sync_safekeepers_ms),
        ),
        (
            "compute_ctl_startup_basebackup_seconds",
            "The basebackup phase of the last start-up.",
            seconds(startup.basebackup_ms),
        ),
        (
            "compute_ctl_startup_start_postgres_seconds",
            "Starting Postgres in the last start-up.",
            seconds(startup.start_postgres_ms),
        ),
        (
            "compute_ctl_startup_config_seconds",
            "Applying the spec in the last start-up.",
            seconds(startup.config_ms),
        ),
        (
            "compute_ctl_startup_total_seconds",
            "The whole last start-up.",
            seconds(startup.total_ms),
        ),
        (
            "compute_ctl_drift_items",
            "Differences between Postgres and the applied spec the last drift check found.",
            view.drift.len() as f64,
        ),
        (
            "compute_ctl_drift_check_seconds",
            "How long the last drift check took.",
            view.drift_check_us.unwrap_or(0) as f64 / 1e6,
        ),
    ];
    for (name, help, value) in gauges {
        header(out, name, "gauge", help);
        let _ = writeln!(out, "{name} {value}");
    }
    let name = "compute_ctl_drift_checks_total";
    header(
        out,
        name,
        "counter",
        "Drift checks made in this process run.",
    );
    let _ = writeln!(out, "{name} {}", view.drift_checks);
}

/// Neon compute_ctl's names (see the module's documentation), and ours in base units.
fn neon(out: &mut String, view: &StateView) {
    header(
        out,
        "compute_ctl_up",
        "gauge",
        "Neon's: 1, with the compute's /status name and the build tag.",
    );
    let _ = writeln!(
        out,
        "compute_ctl_up{{build_tag=\"{}\",status=\"{}\"}} 1",
        label_value(BUILD_TAG),
        view.neon_status()
    );
    let now = mono_ms();
    let account = *downtime();
    let (current_ms, total_ms) = (account.current_ms(now), account.total_ms(now));
    for (name, kind, help, value) in [
        (
            "compute_pg_current_downtime_ms",
            "gauge",
            "Neon's: how long Postgres has not been serving, ms; 0 while it serves.",
            current_ms as f64,
        ),
        (
            "compute_pg_downtime_ms_total",
            "counter",
            "Neon's: how long Postgres did not serve since it first served, ms.",
            total_ms as f64,
        ),
        (
            "compute_ctl_postgres_current_downtime_seconds",
            "gauge",
            "How long Postgres has not been serving; 0 while it serves.",
            current_ms as f64 / 1000.0,
        ),
        (
            "compute_ctl_postgres_downtime_seconds_total",
            "counter",
            "How long Postgres did not serve since it first served in this process run.",
            total_ms as f64 / 1000.0,
        ),
    ] {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

/// `text` as a label value: backslash, quote and newline escaped.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// What `/proc/self/stat` and the system constants give, as client libraries report it.
fn process(out: &mut String) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which may hold spaces and parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    // fields[0] is field 3 of proc(5) (state): field N is fields[N - 3].
    let field = |n: usize| -> u64 { fields.get(n - 3).and_then(|v| v.parse().ok()).unwrap_or(0) };
    let constants = constants();
    let ticks = constants.clock_ticks_per_second.max(1) as f64;
    let cpu_seconds = (field(14) + field(15)) as f64 / ticks;
    let start_seconds = constants.boot_time_seconds as f64 + field(22) as f64 / ticks;
    let open_fds = std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count()) as u64;
    let metrics: [(&str, &str, &str, f64); 6] = [
        (
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            cpu_seconds,
        ),
        (
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            field(24).saturating_mul(constants.page_bytes) as f64,
        ),
        (
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            field(23) as f64,
        ),
        (
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            open_fds as f64,
        ),
        (
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            constants.max_fds as f64,
        ),
        (
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start_seconds,
        ),
    ];
    for (name, kind, help, value) in metrics {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

#[derive(Debug)]
struct Constants {
    clock_ticks_per_second: u64,
    page_bytes: u64,
    boot_time_seconds: u64,
    max_fds: u64,
}

/// Read once: they do not change while the process runs (the fd limit could, rarely).
fn constants() -> &'static Constants {
    static CONSTANTS: OnceLock<Constants> = OnceLock::new();
    CONSTANTS.get_or_init(|| {
        // SAFETY: sysconf has no preconditions; -1 (unknown) becomes the usual default.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        // SAFETY: as above.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let boot = std::fs::read_to_string("/proc/stat")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0);
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `limit` is a valid, writable rlimit.
        let max_fds = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            limit.rlim_cur
        } else {
            0
        };
        Constants {
            clock_ticks_per_second: u64::try_from(ticks).unwrap_or(100),
            page_bytes: u64::try_from(page).unwrap_or(4096),
            boot_time_seconds: boot,
            max_fds,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(1000));
        let mut out = String::new();
        h.render(&mut out, "x_seconds", "step=\"a\"");
        assert!(
            out.contains("x_seconds_bucket{step=\"a\",le=\"0.0001\"} 1\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{step=\"a\",le=\"0.005\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{step=\"a\",le=\"300\"} 2\n"),
            "{out}"
        );
        assert!(
            out.contains("x_seconds_bucket{step=\"a\",le=\"+Inf\"} 3\n"),
            "{out}"
        );
        assert!(out.contains("x_seconds_count{step=\"a\"} 3\n"), "{out}");
    }

    #[test]
    fn downtime_counts_from_the_first_serving_until_it_serves_again() {
        let mut d = Downtime::default();
        // The first start-up is not downtime.
        d.observe(Serving::No, 0);
        d.observe(Serving::No, 500);
        assert_eq!((d.current_ms(900), d.total_ms(900)), (0, 0));
        d.observe(Serving::Yes, 1_000);
        // Postgres gone at 2 s, back at 5 s.
        d.observe(Serving::No, 2_000);
        d.observe(Serving::No, 3_000);
        assert_eq!((d.current_ms(4_000), d.total_ms(4_000)), (2_000, 2_000));
        d.observe(Serving::Yes, 5_000);
        assert_eq!((d.current_ms(9_000), d.total_ms(9_000)), (0, 3_000));
        // Gone again at 10 s, then asked to stop at 10.5 s: stopping is not downtime.
        d.observe(Serving::No, 10_000);
        d.observe(Serving::Stopping, 10_500);
        assert_eq!((d.current_ms(20_000), d.total_ms(20_000)), (0, 3_500));
        d.observe(Serving::No, 21_000);
        assert_eq!(
            d.total_ms(30_000),
            12_500,
            "served once: a later stretch counts"
        );
        // A clock that steps back never makes it negative.
        assert_eq!(d.current_ms(0), 0);
    }

    #[test]
    fn serving_follows_the_phase_and_the_postmaster() {
        let mut view = StateView::starting(1, 0, "2026-12-03T00:00:00Z");
        assert_eq!(Serving::of(&view), Serving::No);
        view.phase = PhaseName::Running;
        view.postmaster_pid = Some(42);
        assert_eq!(Serving::of(&view), Serving::Yes);
        view.phase = PhaseName::Failed;
        assert_eq!(
            Serving::of(&view),
            Serving::Yes,
            "a failed reconfiguration serves"
        );
        view.postmaster_pid = None;
        assert_eq!(Serving::of(&view), Serving::No);
        view.phase = PhaseName::Starting;
        view.postmaster_pid = Some(43);
        assert_eq!(
            Serving::of(&view),
            Serving::No,
            "not accepting connections yet"
        );
        view.phase = PhaseName::Terminating;
        assert_eq!(Serving::of(&view), Serving::Stopping);
    }

    #[test]
    fn neon_names_are_rendered_with_the_status_and_build_tag() {
        let mut view = StateView::starting(1, 0, "2026-12-03T00:00:00Z");
        view.phase = PhaseName::Running;
        let mut out = String::new();
        neon(&mut out, &view);
        assert!(
            out.contains(&format!(
                "\ncompute_ctl_up{{build_tag=\"{BUILD_TAG}\",status=\"running\"}} 1\n"
            )),
            "{out}"
        );
        assert!(
            out.contains("# TYPE compute_pg_downtime_ms_total counter\n"),
            "{out}"
        );
        assert!(
            out.contains("# TYPE compute_pg_current_downtime_ms gauge\n"),
            "{out}"
        );
        assert_eq!(label_value("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn unknown_routes_methods_and_codes_are_other() {
        assert_eq!(ROUTES[route_index("/nope")], "other");
        assert_eq!(ROUTES[route_index("/state")], "/state");
    }
}
