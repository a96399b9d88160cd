//! compute_ctl: runs one PostgreSQL compute node with a journaled state machine.
//!
//! The binary (`src/main.rs`) is a thin shell over this library, which the integration tests
//! and benchmarks use too.

pub mod durable;
pub mod journal;
pub mod spec;
