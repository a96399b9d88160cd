//! The `compute_ctl` binary.
fn main() {}
