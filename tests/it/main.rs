//! The one integration test binary: every test that drives compute_ctl's library or binary
//! from the outside, one module per concern.
#![allow(clippy::unwrap_used)]

mod journal;
