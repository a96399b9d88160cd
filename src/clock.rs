//! The one place the clock is read: the driver asks once per input and passes `Now` on.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use states::Now;

/// Reads monotonic and wall time together.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    started: Instant,
}

impl Clock {
    pub fn start() -> Clock {
        Clock {
            started: Instant::now(),
        }
    }

    pub fn now(&self) -> Now {
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        Now {
            mono_ms: self.mono_ms(),
            wall_ms,
        }
    }

    pub fn mono_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The wall time of a `Now`, for records and views.
    pub fn wall_time(now: Now) -> SystemTime {
        UNIX_EPOCH + std::time::Duration::from_millis(now.wall_ms)
    }
}

/// RFC 3339 UTC with milliseconds, the format of every timestamp compute_ctl shows.
pub fn rfc3339_ms(wall_ms: u64) -> String {
    let time = UNIX_EPOCH + std::time::Duration::from_millis(wall_ms);
    humantime::format_rfc3339_millis(time).to_string()
}
