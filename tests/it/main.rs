//! The one integration test binary: tests that need real processes (Postgres, compute_ctl
//! itself) live here, each module a concern, sharing the helpers in `support`.
#![allow(clippy::unwrap_used)]

mod adoption;
mod auth;
mod catalog_api;
mod control_plane;
mod crash;
mod drift;
mod driver;
mod durability;
mod external_stop;
#[cfg(feature = "failpoints")]
mod failpoints;
mod first_run;
mod frontdoor;
mod journal;
mod layers;
mod lifecycle;
mod neon;
mod neon_api;
mod neon_cli;
mod operations;
mod postgres_config;
mod prepare;
mod privileged;
mod reconcile;
mod reconfigure;
mod spec;
mod support;
mod upstream;
