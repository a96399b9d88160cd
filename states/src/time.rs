//! Time as an input: the driver reads the clock once per input and passes it in.

use serde::{Deserialize, Serialize};

/// The moment an input is handled, read once by the driver.
///
/// The core never reads a clock: every decision that depends on time gets it from here,
/// which keeps transitions reproducible in tests and simulations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Now {
    /// Monotonic milliseconds since the process started; used for deadlines and durations.
    pub mono_ms: u64,
    /// Wall-clock milliseconds since the Unix epoch; used for display only.
    pub wall_ms: u64,
}

impl Now {
    pub const ZERO: Now = Now {
        mono_ms: 0,
        wall_ms: 0,
    };

    /// The same moment, `ms` later (saturating); used by tests and simulations.
    pub fn plus_ms(self, ms: u64) -> Now {
        Now {
            mono_ms: self.mono_ms.saturating_add(ms),
            wall_ms: self.wall_ms.saturating_add(ms),
        }
    }
}
