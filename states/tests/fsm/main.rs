//! The states crate's test binary: the golden matrix, scripted scenarios, a seeded simulation,
//! and the check that the crate stays pure.
#![allow(clippy::unwrap_used)]

mod matrix;
mod purity;
mod scenarios;
mod simulation;
