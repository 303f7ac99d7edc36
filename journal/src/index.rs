//! Sparse per-segment indexes: the offset index (`.index`: offset -> byte
//! position of the batch holding it) and the time index (`.timeindex`:
//! timestamp -> first offset at or after it).
//!
//! Both files are arrays of 24-byte entries `a u64, b u64, crc32c u32,
//! zero u32`, where the CRC covers the 16 bytes before it. An entry is added
//! at a batch boundary every `index_interval_bytes`. The files are written
//! without fsync: they are a cache, checked entry by entry on load and
//! rebuilt from the segment when missing or damaged.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{IoContext, Result};

/// Bytes per index entry.
pub const ENTRY_LEN: usize = 24;

/// One index point: the batch at `position` starts at `offset`, and its
/// records carry `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    /// First offset of the batch.
    pub offset: u64,
    /// Byte position of the batch in the segment file.
    pub position: u64,
    /// Timestamp of the batch.
    pub timestamp: u64,
}

/// The two sparse indexes of one segment, in memory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    entries: Vec<IndexEntry>,
}

/// Why a loaded index was not used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexDamage {
    /// A file is absent.
    Missing,
    /// A file's length is not a whole number of entries.
    Torn,
    /// An entry fails its CRC.
    Checksum(usize),
    /// Entries out of order, disagreeing between files, or past the data.
    Inconsistent(usize),
}

impl SegmentIndex {
    /// The entries, in offset order.
    pub fn entries(&self) -> &[IndexEntry] {
        &self.entries
    }

    /// Adds an entry; entries must come in increasing offset and position.
    pub fn push(&mut self, e: IndexEntry) {
        debug_assert!(self.entries.last().is_none_or(|l| l.offset < e.offset));
        self.entries.push(e);
    }

    /// Keeps only the entries strictly before byte `position`.
    pub fn truncate_at(&mut self, position: u64) {
        self.entries.retain(|e| e.position < position);
    }

    /// The last entry whose offset is at most `offset`.
    pub fn floor_offset(&self, offset: u64) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.offset <= offset);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry whose timestamp is before `ts`: reading may start there.
    pub fn floor_time(&self, ts: u64) -> Option<IndexEntry> {
        let i = self.entries.partition_point(|e| e.timestamp < ts);
        i.checked_sub(1).map(|i| self.entries[i])
    }

    /// The last entry.
    pub fn last(&self) -> Option<IndexEntry> {
        self.entries.last().copied()
    }
}

/// The offset index file of a segment log file.
pub fn offset_path(log: &Path) -> PathBuf {
    log.with_extension("index")
}

/// The time index file of a segment log file.
pub fn time_path(log: &Path) -> PathBuf {
    log.with_extension("timeindex")
}

fn encode_entry(a: u64, b: u64) -> [u8; ENTRY_LEN] {
    let mut out = [0u8; ENTRY_LEN];
    out[0..8].copy_from_slice(&a.to_le_bytes());
    out[8..16].copy_from_slice(&b.to_le_bytes());
    let crc = crc32c::crc32c(&out[0..16]);
    out[16..20].copy_from_slice(&crc.to_le_bytes());
    out
}

fn decode_entries(bytes: &[u8]) -> Result<Vec<(u64, u64)>, IndexDamage> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) {
        return Err(IndexDamage::Torn);
    }
    let mut out = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    for (i, e) in bytes.chunks_exact(ENTRY_LEN).enumerate() {
        let crc = u32::from_le_bytes([e[16], e[17], e[18], e[19]]);
        if crc32c::crc32c(&e[0..16]) != crc || e[20..24] != [0; 4] {
            return Err(IndexDamage::Checksum(i));
        }
        let a = u64::from_le_bytes(e[0..8].try_into().unwrap_or_default());
        let b = u64::from_le_bytes(e[8..16].try_into().unwrap_or_default());
        out.push((a, b));
    }
    Ok(out)
}

/// Appends one entry to both index files of `log`.
pub fn append_entry(log: &Path, e: IndexEntry) -> Result<()> {
    IndexAppender::new(log.to_path_buf()).append(&[e])
}

/// Appends entries to both index files of one segment, buffering them and
/// keeping the files open (the writer adds entries thousands of times a
/// second; an open, write and close per entry cost more than the data
/// write they index). The files are a cache: entries not yet flushed when
/// the process dies only make recovery scan a little more.
#[derive(Debug)]
pub struct IndexAppender {
    log: PathBuf,
    files: Option<(std::fs::File, std::fs::File)>,
    offsets: Vec<u8>,
    times: Vec<u8>,
}

impl IndexAppender {
    /// An appender for the index files of the segment log `log`; the files
    /// are opened (created if missing) at the first flush.
    pub fn new(log: PathBuf) -> Self {
        IndexAppender {
            log,
            files: None,
            offsets: Vec::new(),
            times: Vec::new(),
        }
    }

    /// The segment log this appender indexes.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Entries buffered and not yet written.
    pub fn buffered(&self) -> usize {
        self.offsets.len() / ENTRY_LEN
    }

    /// Buffers an entry.
    pub fn push(&mut self, e: IndexEntry) {
        self.offsets
            .extend_from_slice(&encode_entry(e.offset, e.position));
        self.times
            .extend_from_slice(&encode_entry(e.timestamp, e.offset));
    }

    /// Buffers `entries` and writes everything buffered.
    pub fn append(&mut self, entries: &[IndexEntry]) -> Result<()> {
        for e in entries {
            self.push(*e);
        }
        self.flush()
    }

    /// Writes the buffered entries, one write per file. After an error the
    /// buffer is dropped (the entries stay in memory; the files will be
    /// found short or damaged and rebuilt) and the files are reopened at
    /// the next flush.
    pub fn flush(&mut self) -> Result<()> {
        if self.offsets.is_empty() {
            return Ok(());
        }
        let written = self.write_buffered();
        self.offsets.clear();
        self.times.clear();
        if written.is_err() {
            self.files = None;
        }
        written
    }

    fn write_buffered(&mut self) -> Result<()> {
        let (op, tp) = (offset_path(&self.log), time_path(&self.log));
        if self.files.is_none() {
            let open = |p: &Path| {
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .ctx(|| format!("opening {}", p.display()))
            };
            self.files = Some((open(&op)?, open(&tp)?));
        }
        let Some((of, tf)) = self.files.as_mut() else {
            return Ok(());
        };
        of.write_all(&self.offsets)
            .ctx(|| format!("appending to {}", op.display()))?;
        tf.write_all(&self.times)
            .ctx(|| format!("appending to {}", tp.display()))
    }
}

/// Rewrites both index files of `log` with `index`.
pub fn write_all(log: &Path, index: &SegmentIndex) -> Result<()> {
    let mut offsets = Vec::with_capacity(index.entries.len() * ENTRY_LEN);
    let mut times = Vec::with_capacity(index.entries.len() * ENTRY_LEN);
    for e in &index.entries {
        offsets.extend_from_slice(&encode_entry(e.offset, e.position));
        times.extend_from_slice(&encode_entry(e.timestamp, e.offset));
    }
    for (path, bytes) in [(offset_path(log), offsets), (time_path(log), times)] {
        std::fs::write(&path, bytes).ctx(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

/// Loads both index files of `log`, checking every entry against each other
/// and against `data_len`, the bytes of valid batches known so far (or
/// `u64::MAX` when unknown).
pub fn load(log: &Path, base_offset: u64, data_len: u64) -> Result<SegmentIndex, IndexDamage> {
    let read = |p: PathBuf| std::fs::read(p).map_err(|_| IndexDamage::Missing);
    let offsets = decode_entries(&read(offset_path(log))?)?;
    let times = decode_entries(&read(time_path(log))?)?;
    if offsets.len() != times.len() {
        return Err(IndexDamage::Inconsistent(offsets.len().min(times.len())));
    }
    let mut index = SegmentIndex::default();
    for (i, (&(offset, position), &(timestamp, t_offset))) in offsets.iter().zip(&times).enumerate()
    {
        let ordered = index
            .last()
            .is_none_or(|l| l.offset < offset && l.position < position && l.timestamp <= timestamp);
        if !ordered || t_offset != offset || offset < base_offset || position >= data_len {
            return Err(IndexDamage::Inconsistent(i));
        }
        index.push(IndexEntry {
            offset,
            position,
            timestamp,
        });
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut idx = SegmentIndex::default();
        for i in 0..10u64 {
            idx.push(IndexEntry {
                offset: 100 + i * 10,
                position: i * 1000,
                timestamp: 5000 + i,
            });
        }
        idx
    }

    fn tmp_log(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("journal-index-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir.join("00000000000000000100.log")
    }

    #[test]
    fn lookups() {
        let idx = sample();
        assert_eq!(idx.floor_offset(99), None);
        assert_eq!(idx.floor_offset(100).unwrap().position, 0);
        assert_eq!(idx.floor_offset(125).unwrap().offset, 120);
        assert_eq!(idx.floor_offset(10_000).unwrap().offset, 190);
        assert_eq!(idx.floor_time(5000), None);
        assert_eq!(idx.floor_time(5003).unwrap().timestamp, 5002);
    }

    #[test]
    fn files_round_trip_and_append() {
        let log = tmp_log("rt");
        let idx = sample();
        write_all(&log, &idx).unwrap();
        let extra = IndexEntry {
            offset: 500,
            position: 20_000,
            timestamp: 6000,
        };
        append_entry(&log, extra).unwrap();
        let loaded = load(&log, 100, u64::MAX).unwrap();
        assert_eq!(loaded.entries().len(), 11);
        assert_eq!(loaded.last(), Some(extra));
        std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
    }

    #[test]
    fn damage_is_detected() {
        let log = tmp_log("dmg");
        assert_eq!(load(&log, 100, u64::MAX), Err(IndexDamage::Missing));
        write_all(&log, &sample()).unwrap();
        assert!(matches!(
            load(&log, 100, 5000),
            Err(IndexDamage::Inconsistent(5))
        ));
        let mut bytes = std::fs::read(offset_path(&log)).unwrap();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            std::fs::write(offset_path(&log), &bytes).unwrap();
            assert!(load(&log, 100, u64::MAX).is_err(), "flip at {i} unnoticed");
            bytes[i] ^= 1;
        }
        bytes.pop();
        std::fs::write(offset_path(&log), &bytes).unwrap();
        assert_eq!(load(&log, 100, u64::MAX), Err(IndexDamage::Torn));
        std::fs::remove_dir_all(log.parent().unwrap()).unwrap();
    }
}
