//! Segment files and their lines: naming, listing, and the checksum framing of one record.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::JournalError;

/// Decimal digits of a segment's name (`u64::MAX` has 20).
pub const SEGMENT_NAME_DIGITS: usize = 20;

/// The suffix of every segment file.
pub const SEGMENT_SUFFIX: &str = ".log";

/// Hex digits of a line's checksum.
const CRC_HEX_DIGITS: usize = 8;

/// Bytes a line adds around its JSON: the checksum, a space and the newline.
pub const LINE_OVERHEAD_BYTES: usize = CRC_HEX_DIGITS + 2;

/// The file name of the segment whose first record is `first_seq`.
pub fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}{SEGMENT_SUFFIX}")
}

/// The first seq a segment file name stands for; `None` for a name that is not a segment's.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_NAME_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One segment file found in the journal directory.
#[derive(Clone, Debug)]
pub(crate) struct SegmentFile {
    /// The seq its name stands for.
    pub first_seq: u64,
    pub name: String,
    pub path: PathBuf,
}

/// The segments in `journal_dir`, sorted by their first seq. Other files are ignored.
/// The file that names the first seq kept after old segments were retired; absent until the
/// first retirement (then the journal starts at seq 1).
pub const RETIRED_FILE: &str = "RETIRED";

/// The first seq the journal still holds: what `RETIRED` says, else 1.
pub(crate) fn first_kept_seq(journal_dir: &Path) -> Result<u64, JournalError> {
    let path = journal_dir.join(RETIRED_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => text.trim().parse().map_err(|_| JournalError::Damaged {
            segment: RETIRED_FILE.to_owned(),
            seq: 0,
            offset: 0,
            reason: format!("{} does not hold a seq: {:?}", path.display(), text.trim()),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(1),
        Err(e) => Err(JournalError::io(&path, e)),
    }
}

/// The segments still kept (those named below the first kept seq were retired; their files
/// remain only if a crash interrupted the retirement) and the first kept seq.
pub(crate) fn kept_segments(journal_dir: &Path) -> Result<(Vec<SegmentFile>, u64), JournalError> {
    let first_kept = first_kept_seq(journal_dir)?;
    let mut segments = list_segments(journal_dir)?;
    segments.retain(|s| s.first_seq >= first_kept);
    Ok((segments, first_kept))
}

pub(crate) fn list_segments(journal_dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    let entries = fs::read_dir(journal_dir).map_err(|e| JournalError::io(journal_dir, e))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(journal_dir, e))?;
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if let Some(first_seq) = parse_segment_name(name) {
            segments.push(SegmentFile {
                first_seq,
                name: name.to_owned(),
                path: entry.path(),
            });
        }
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

/// Reads a whole segment into `buf` (replacing its content). A segment that vanished since it
/// was listed reads as empty: a writer removes only empty or torn-away trailing segments.
pub(crate) fn read_segment(segment: &SegmentFile, buf: &mut Vec<u8>) -> Result<(), JournalError> {
    buf.clear();
    let mut file = match fs::File::open(&segment.path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(JournalError::io(&segment.path, e)),
    };
    io::Read::read_to_end(&mut file, buf).map_err(|e| JournalError::io(&segment.path, e))?;
    Ok(())
}

/// The CRC32C (Castagnoli) of `bytes`, computed in hardware where the CPU has it.
pub fn checksum(bytes: &[u8]) -> u32 {
    crc32c::crc32c(bytes)
}

/// Appends the line of one record to `out`: checksum, space, `json`, newline.
pub(crate) fn encode_line(json: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let crc = checksum(json);
    out.reserve(json.len() + LINE_OVERHEAD_BYTES);
    for shift in (0..CRC_HEX_DIGITS).rev() {
        out.push(HEX[((crc >> (shift * 4)) & 0xf) as usize]);
    }
    out.push(b' ');
    out.extend_from_slice(json);
    out.push(b'\n');
}

/// Why a line's framing is not intact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// No `<8 lowercase hex digits><space>` at its start.
    Malformed,
    Checksum {
        stored: u32,
        computed: u32,
    },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Malformed => {
                f.write_str("malformed line: no 8-digit lowercase hex checksum and space")
            }
            FrameError::Checksum { stored, computed } => write!(
                f,
                "checksum mismatch: stored {stored:08x}, computed {computed:08x}"
            ),
        }
    }
}

/// Checks a line's framing (without its newline) and returns its JSON bytes.
pub(crate) fn check_line(line: &[u8]) -> Result<&[u8], FrameError> {
    if line.len() < LINE_OVERHEAD_BYTES - 1 || line[CRC_HEX_DIGITS] != b' ' {
        return Err(FrameError::Malformed);
    }
    let mut stored: u32 = 0;
    for &b in &line[..CRC_HEX_DIGITS] {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return Err(FrameError::Malformed),
        };
        stored = (stored << 4) | u32::from(digit);
    }
    let json = &line[CRC_HEX_DIGITS + 1..];
    let computed = checksum(json);
    if stored != computed {
        return Err(FrameError::Checksum { stored, computed });
    }
    Ok(json)
}

/// The seq of a checksum-verified record when its JSON begins the way a writer writes it
/// (`{"seq":N,`); `None` otherwise (then the caller decodes the whole record). Lets readers
/// skip records they will not return without decoding them.
pub(crate) fn quick_seq(json: &[u8]) -> Option<u64> {
    const PREFIX: &[u8] = b"{\"seq\":";
    let rest = json.strip_prefix(PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    // A leading zero or more than 20 digits is not what serde_json writes.
    if digits == 0 || digits > SEGMENT_NAME_DIGITS || (digits > 1 && rest[0] == b'0') {
        return None;
    }
    if rest.get(digits) != Some(&b',') {
        return None;
    }
    let mut seq: u64 = 0;
    for &b in &rest[..digits] {
        seq = seq.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(seq)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(checksum(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn a_line_is_checksum_space_json_newline() {
        let mut out = Vec::new();
        encode_line(b"123456789", &mut out);
        assert_eq!(out, b"e3069283 123456789\n");
        assert_eq!(check_line(&out[..out.len() - 1]), Ok(&b"123456789"[..]));
    }

    #[test]
    fn check_line_refuses_bad_framing_and_checksums() {
        assert_eq!(check_line(b""), Err(FrameError::Malformed));
        assert_eq!(check_line(b"e3069283"), Err(FrameError::Malformed));
        assert_eq!(
            check_line(b"E3069283 123456789"),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            check_line(b"e3069283-123456789"),
            Err(FrameError::Malformed)
        );
        assert_eq!(
            check_line(b"e3069283 123456780"),
            Err(FrameError::Checksum {
                stored: 0xe306_9283,
                computed: checksum(b"123456780")
            })
        );
        // The empty JSON has a checksum too; the decoder refuses it, not the framing.
        let mut out = Vec::new();
        encode_line(b"", &mut out);
        assert_eq!(check_line(&out[..out.len() - 1]), Ok(&b""[..]));
    }

    #[test]
    fn segment_names_are_twenty_digits() {
        assert_eq!(segment_name(1), "00000000000000000001.log");
        assert_eq!(segment_name(u64::MAX), "18446744073709551615.log");
        assert_eq!(parse_segment_name("00000000000000000213.log"), Some(213));
        assert_eq!(parse_segment_name("0000000000000000213.log"), None);
        assert_eq!(parse_segment_name("00000000000000000213.log.tmp"), None);
        assert_eq!(parse_segment_name("99999999999999999999.log"), None);
        assert_eq!(parse_segment_name("0000000000000000021a.log"), None);
    }

    #[test]
    fn quick_seq_reads_only_the_writers_prefix() {
        assert_eq!(quick_seq(br#"{"seq":17,"epoch":1}"#), Some(17));
        assert_eq!(quick_seq(br#"{"seq":017,"epoch":1}"#), None);
        assert_eq!(quick_seq(br#"{"epoch":1,"seq":17}"#), None);
        assert_eq!(quick_seq(br#"{"seq":17}"#), None);
        assert_eq!(quick_seq(br#"{"seq":99999999999999999999,"#), None);
    }
}
