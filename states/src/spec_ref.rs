//! Which spec a phase works towards: its generation and its hash.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A durably accepted spec, as the core knows it: the core never sees the spec itself,
/// only which one it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SpecRef {
    /// Assigned by compute_ctl: +1 for every accepted spec that differs from the desired one,
    /// monotonic across restarts.
    pub generation: u64,
    /// `sha256:<hex>` of the spec's canonical JSON.
    pub hash: String,
}

impl fmt::Display for SpecRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "g{}", self.generation)
    }
}
