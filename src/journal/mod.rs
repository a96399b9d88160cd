//! The journal: an append-only, checksummed, segmented record of everything compute_ctl did.

pub mod record;

pub use record::*;
