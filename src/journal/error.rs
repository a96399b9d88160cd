//! The journal's errors: each names the file, and for damage the seq and byte offset.

use std::io;
use std::path::PathBuf;

use crate::durable::DurableError;

/// Everything that can go wrong opening, appending to or reading the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Another process holds the state directory's LOCK (exit code 4).
    #[error(
        "state directory is locked by another compute_ctl ({}): {}",
        holder(*holder_pid),
        path.display()
    )]
    Locked {
        /// The LOCK file.
        path: PathBuf,
        /// The pid the holder wrote into the LOCK file, when it could be read.
        holder_pid: Option<u32>,
    },

    /// A record that is not intact, with intact records after it, or intact in its checksum
    /// but wrong in its content (exit code 5). `verify` reports a torn tail this way too.
    #[error("journal damaged at seq {seq}: segment {segment}, byte offset {offset}: {reason}")]
    Damaged {
        /// The segment's file name.
        segment: String,
        /// The seq the bad line should have carried: the one after the last intact record.
        seq: u64,
        /// Where the bad line begins, in bytes from the segment's start.
        offset: u64,
        reason: String,
    },

    /// A `start` record names a format version this compute_ctl does not read.
    #[error(
        "journal format {format} at seq {seq} (segment {segment}) is not supported: this \
         compute_ctl reads format {}",
        super::FORMAT_VERSION
    )]
    Unsupported {
        segment: String,
        seq: u64,
        format: u32,
    },

    /// A file operation failed.
    #[error("journal i/o error on {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The state directory has no journal (readers create nothing, so they cannot start one).
    #[error("no journal in {}", path.display())]
    Missing { path: PathBuf },

    /// A record or a setting refused before anything was written.
    #[error("journal refused a record: {reason}")]
    Invalid { reason: String },

    /// An earlier write or fsync failed: what is on disk is unknown until the journal is
    /// opened again, so nothing more is appended.
    #[error(
        "journal segment {} is unusable after a failed write ({reason}); restart to replay it",
        path.display()
    )]
    Poisoned { path: PathBuf, reason: String },

    /// `dump` could not write its output.
    #[error("cannot write the journal dump: {source}")]
    Output {
        #[source]
        source: io::Error,
    },
}

fn holder(pid: Option<u32>) -> String {
    match pid {
        Some(pid) => format!("pid {pid}"),
        None => "pid unknown".to_owned(),
    }
}

impl JournalError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> JournalError {
        JournalError::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<DurableError> for JournalError {
    /// Keeps what was being done (`fsync directory`) in the message.
    fn from(e: DurableError) -> JournalError {
        let source = io::Error::new(
            e.source.kind(),
            format!("cannot {}: {}", e.action, e.source),
        );
        JournalError::Io {
            path: e.path,
            source,
        }
    }
}
