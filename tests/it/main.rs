//! The one integration test binary: tests that need real processes (Postgres, compute_ctl
//! itself) live here, each module a concern, sharing the helpers in `support`.
#![allow(clippy::unwrap_used)]

mod journal;
mod lifecycle;
mod postgres_config;
mod reconcile;
mod spec;
mod support;
mod upstream;
