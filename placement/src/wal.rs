//! The write-ahead log's segment files.
//!
//! The log is a sequence of segment files `wal.<seq>` (decimal `seq`,
//! replayed in increasing order; a `wal` file left by an older version is
//! segment 0). Records are `[u32 len][u32 crc32][kind][body]`, little
//! endian, `len` counting the kind byte and the body (see
//! [`crate::storage`]). Only the last segment is appended to; a new one is
//! started ("rolled") when the state machine is snapshotted and when the
//! current one grows past [`SEGMENT_BYTES`], and whole old segments are
//! deleted once a durable snapshot covers them. The log is never rewritten.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::storage::{fsync_dir, io_err, StoreError};

/// A segment grows to about this size before a new one is started.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// The name of segment `seq`.
pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    if seq == 0 {
        dir.join("wal")
    } else {
        dir.join(format!("wal.{seq}"))
    }
}

/// The segments in `dir`, in replay order.
pub fn list_segments(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == "wal" {
            seqs.push(0);
        } else if let Some(seq) = name.strip_prefix("wal.").and_then(|s| s.parse().ok()) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Deletes the segments numbered below `below`, oldest first, so a crash
/// leaves a contiguous suffix.
pub fn delete_below(dir: &Path, below: u64) -> Result<(), StoreError> {
    for seq in list_segments(dir)? {
        if seq >= below {
            break;
        }
        let path = segment_path(dir, seq);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("delete", &path)(e)),
        }
    }
    Ok(())
}

/// Creates segment `seq` holding `header`, durably (file and directory), and
/// returns it open for appending. An existing file of that name (left by a
/// crash in the middle of a roll) is replaced.
pub fn create_segment(dir: &Path, seq: u64, header: &[u8]) -> Result<File, StoreError> {
    let path = segment_path(dir, seq);
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(io_err("create", &path))?;
    file.write_all(header).map_err(io_err("write", &path))?;
    file.sync_all().map_err(io_err("fsync", &path))?;
    fsync_dir(dir)?;
    Ok(file)
}
