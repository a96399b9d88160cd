//! The compute spec: Neon's `ComputeSpec` format, parsed, validated and hashed.

pub mod types;

pub use types::*;
