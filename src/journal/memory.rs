//! The memory journal: the file journal's rules without files, for tests of the driver and
//! the conformance suite.

use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use super::batch::{self, Tip};
use super::record::{Record, RecordBody};
use super::{JournalConfig, JournalError, JournalStore};

/// Records in a `Vec`. `reopen` plays a restart (a new epoch); `fail_appends` plays a disk
/// that refuses writes.
#[derive(Clone, Debug)]
pub struct MemoryJournal {
    config: JournalConfig,
    records: Vec<Record>,
    tip: Tip,
    /// When set, every append fails with this reason, as a failed fsync would.
    failing: Option<String>,
}

impl MemoryJournal {
    /// An empty journal, opened by its first writer (epoch 1).
    pub fn new(config: JournalConfig) -> MemoryJournal {
        MemoryJournal {
            config,
            records: Vec::new(),
            tip: Tip::opened(0, 0),
            failing: None,
        }
    }

    /// The same records, opened by the next writer: epoch = the last epoch in it + 1.
    pub fn reopen(self) -> MemoryJournal {
        let last_epoch = self.records.last().map_or(0, |r| r.epoch);
        MemoryJournal {
            tip: Tip::opened(self.tip.last_seq, last_epoch),
            failing: None,
            ..self
        }
    }

    /// Every record, in order.
    pub fn records(&self) -> &[Record] {
        &self.records
    }

    /// Makes every later append fail with `reason` (`None`: succeed again).
    pub fn fail_appends(&mut self, reason: Option<String>) {
        self.failing = reason;
    }
}

impl JournalStore for MemoryJournal {
    fn append(
        &mut self,
        bodies: Vec<RecordBody>,
        mono_ms: u64,
        wall: SystemTime,
    ) -> Result<Vec<Record>, JournalError> {
        if let Some(reason) = &self.failing {
            return Err(JournalError::Io {
                path: PathBuf::from("<memory>"),
                source: io::Error::other(reason.clone()),
            });
        }
        if bodies.is_empty() {
            return Ok(Vec::new());
        }
        let batch = batch::build(self.tip, bodies, mono_ms, wall, &self.config)?;
        self.tip = self.tip.after(&batch);
        self.records.extend(batch.records.iter().cloned());
        Ok(batch.records)
    }

    fn last_seq(&self) -> u64 {
        self.tip.last_seq
    }

    fn epoch(&self) -> u64 {
        self.tip.epoch
    }

    fn read_since(&self, since: u64, limit: usize) -> Result<Vec<Record>, JournalError> {
        // Records are dense from seq 1, so seq `since` + 1 sits at index `since`.
        let from = usize::try_from(since)
            .unwrap_or(usize::MAX)
            .min(self.records.len());
        Ok(self.records[from..].iter().take(limit).cloned().collect())
    }
}
