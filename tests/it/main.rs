//! The one integration test binary: every module's tests against the library and the binary.
#![allow(clippy::unwrap_used)]

mod lifecycle;
mod spec;
mod support;
