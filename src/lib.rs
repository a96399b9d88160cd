//! compute_ctl: runs one PostgreSQL compute node with a journaled state machine.
//!
//! The binary (`src/main.rs`) is a thin shell over this library, which the integration tests
//! and benchmarks use too. The README's code map says what lives where.

pub mod auth;
pub mod cli;
pub mod clock;
pub mod control_plane;
pub mod driver;
pub mod durable;
pub mod executor;
pub mod exit;
pub mod failpoint;
pub mod http;
pub mod input;
pub mod journal;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod pg_user;
pub mod pgdata;
pub mod postgres;
pub mod prepared;
pub mod replay;
pub mod run;
pub mod sidecar;
pub mod spec;
pub mod step_env;
pub mod storage;
pub mod subprocess;
pub mod sync;
pub mod view;
