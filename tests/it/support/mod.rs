//! Helpers shared by the integration tests: real processes in temp dirs on free loopback
//! ports, cleaned up on drop, also when a test panics.

// Shared helpers: not every test module uses every one of them.
#[allow(dead_code)]
pub mod certs;
#[allow(dead_code)]
pub mod compute;
#[allow(dead_code)]
pub mod notify;
#[allow(dead_code)]
pub mod pageserver;
#[allow(dead_code)]
pub mod postgres;
#[allow(dead_code)]
pub mod tools;
