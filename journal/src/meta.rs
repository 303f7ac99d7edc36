//! Shard and segment metadata, kept in the journal's own files for now
//! (`shard.json` per shard, written atomically: temporary file, fsync,
//! rename, fsync of the directory). A later issue moves it to the Placement
//! Center.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, JournalError, Result};
use crate::lifecycle::SegmentStatus;

/// When appends are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// Acknowledge after fdatasync: one fdatasync per group of appends.
    #[default]
    Always,
    /// Acknowledge after the write; fdatasync every `fsync_interval_ms`.
    Interval,
    /// Acknowledge after the write; leave flushing to the kernel.
    Never,
}

impl std::str::FromStr for FsyncPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "always" => Ok(FsyncPolicy::Always),
            "interval" => Ok(FsyncPolicy::Interval),
            "never" => Ok(FsyncPolicy::Never),
            other => Err(format!(
                "unknown fsync policy {other:?}: always, interval or never"
            )),
        }
    }
}

/// How a shard is created; fixed for its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// When appends are durable.
    pub fsync: FsyncPolicy,
    /// Period of the fdatasync under `interval`, in milliseconds.
    pub fsync_interval_ms: u64,
    /// Size at which a segment is rolled, in bytes.
    pub segment_bytes: u64,
    /// Sealed segments whose newest record is older than this are dropped;
    /// 0 keeps them forever.
    pub retention_ms: u64,
    /// Oldest sealed segments are dropped while the shard is larger; 0 is no limit.
    pub retention_bytes: u64,
    /// An index entry every this many bytes of a segment.
    pub index_interval_bytes: u64,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 10,
            segment_bytes: 1 << 30,
            retention_ms: 0,
            retention_bytes: 0,
            index_interval_bytes: 64 * 1024,
        }
    }
}

/// Smallest allowed segment.
pub const MIN_SEGMENT_BYTES: u64 = 64 * 1024;

impl ShardConfig {
    /// Refuses values that make no sense.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(JournalError::InvalidArgument(m.to_string()));
        if self.segment_bytes < MIN_SEGMENT_BYTES || self.segment_bytes > u64::from(u32::MAX) {
            return bad("segment_bytes must be between 64 KiB and 4 GiB");
        }
        if !self.segment_bytes.is_multiple_of(4096) {
            return bad("segment_bytes must be a multiple of 4096");
        }
        if self.fsync == FsyncPolicy::Interval && self.fsync_interval_ms == 0 {
            return bad("fsync_interval_ms must be positive under the interval policy");
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be positive");
        }
        Ok(())
    }
}

/// One segment's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// Offset of its first record; names its files.
    pub base_offset: u64,
    /// Lifecycle status.
    pub status: SegmentStatus,
    /// Write generation, bumped each time it is reopened for writing.
    pub generation: u32,
    /// The lowest generation this segment writes: when its file was
    /// recycled from a deleted segment, the batches it still holds are all
    /// below it (0 for a new file).
    #[serde(default)]
    pub floor: u32,
    /// Once sealed: the offset after its last record.
    pub end_offset: Option<u64>,
    /// Once sealed: bytes of batches in the file.
    pub size_bytes: Option<u64>,
    /// Once sealed: newest record timestamp (ms), if any record.
    pub max_ts: Option<u64>,
}

/// One shard's metadata file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// The shard's name.
    pub name: String,
    /// Its configuration.
    pub config: ShardConfig,
    /// Its segments, oldest first.
    pub segments: Vec<SegmentMeta>,
}

/// The segments of a shard with the lifecycle rules enforced: only allowed
/// transitions, at most one `Write` segment, contiguous base offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentTable {
    segments: Vec<SegmentMeta>,
}

impl SegmentTable {
    /// Wraps loaded segments, checking the invariants.
    pub fn from_loaded(segments: Vec<SegmentMeta>) -> Result<Self> {
        let writers = segments
            .iter()
            .filter(|s| s.status == SegmentStatus::Write)
            .count();
        if writers > 1 {
            return Err(JournalError::InvalidArgument(format!(
                "{writers} segments in Write status"
            )));
        }
        if segments
            .windows(2)
            .any(|w| w[0].base_offset >= w[1].base_offset)
        {
            return Err(JournalError::InvalidArgument(
                "segment base offsets not increasing".into(),
            ));
        }
        Ok(SegmentTable { segments })
    }

    /// The segments, oldest first.
    pub fn all(&self) -> &[SegmentMeta] {
        &self.segments
    }

    /// Looks a segment up by base offset.
    pub fn get(&self, base_offset: u64) -> Option<&SegmentMeta> {
        self.segments.iter().find(|s| s.base_offset == base_offset)
    }

    fn get_mut(&mut self, base_offset: u64) -> Result<&mut SegmentMeta> {
        self.segments
            .iter_mut()
            .find(|s| s.base_offset == base_offset)
            .ok_or_else(|| JournalError::InvalidArgument(format!("no segment {base_offset}")))
    }

    /// The `Write` segment, if any.
    pub fn writer(&self) -> Option<&SegmentMeta> {
        self.segments
            .iter()
            .find(|s| s.status == SegmentStatus::Write)
    }

    /// Adds a new `Idle` segment after the last one.
    pub fn add_idle(&mut self, base_offset: u64) -> Result<()> {
        if self
            .segments
            .last()
            .is_some_and(|s| s.base_offset >= base_offset)
        {
            return Err(JournalError::InvalidArgument(format!(
                "segment {base_offset} does not follow the last segment"
            )));
        }
        self.segments.push(SegmentMeta {
            base_offset,
            status: SegmentStatus::Idle,
            generation: 0,
            floor: 0,
            end_offset: None,
            size_bytes: None,
            max_ts: None,
        });
        Ok(())
    }

    /// Moves a segment to `to`, refusing illegal transitions and a second
    /// `Write` segment.
    pub fn set_status(&mut self, base_offset: u64, to: SegmentStatus) -> Result<()> {
        if to == SegmentStatus::Write {
            if let Some(w) = self.writer() {
                return Err(JournalError::InvalidArgument(format!(
                    "segment {} is already the Write segment",
                    w.base_offset
                )));
            }
        }
        let seg = self.get_mut(base_offset)?;
        seg.status = seg.status.transition(base_offset, to)?;
        Ok(())
    }

    /// Records the final extent of a segment being sealed.
    pub fn set_sealed_extent(
        &mut self,
        base_offset: u64,
        end: u64,
        size: u64,
        max_ts: Option<u64>,
    ) -> Result<()> {
        let seg = self.get_mut(base_offset)?;
        seg.end_offset = Some(end);
        seg.size_bytes = Some(size);
        seg.max_ts = max_ts;
        Ok(())
    }

    /// Bumps a segment's write generation and returns the new one.
    pub fn bump_generation(&mut self, base_offset: u64) -> Result<u32> {
        let seg = self.get_mut(base_offset)?;
        seg.generation += 1;
        Ok(seg.generation)
    }

    /// Records that an `Idle` segment's file was recycled and may still
    /// hold batches up to generation `old`: the segment writes above it.
    pub fn set_recycled(&mut self, base_offset: u64, old: u32) -> Result<()> {
        let seg = self.get_mut(base_offset)?;
        if seg.status != SegmentStatus::Idle {
            return Err(JournalError::InvalidArgument(format!(
                "segment {base_offset} is {:?}: only a new segment takes a recycled file",
                seg.status
            )));
        }
        let floor = old.checked_add(1).ok_or_else(|| {
            JournalError::InvalidArgument("recycled file's generation exhausted".into())
        })?;
        seg.generation = seg.generation.max(old);
        seg.floor = floor;
        Ok(())
    }

    /// Removes a segment that reached `Deleting`.
    pub fn remove_deleted(&mut self, base_offset: u64) -> Result<()> {
        let seg = self.get_mut(base_offset)?;
        if seg.status != SegmentStatus::Deleting {
            return Err(JournalError::InvalidArgument(format!(
                "segment {base_offset} is {:?}, not Deleting",
                seg.status
            )));
        }
        self.segments.retain(|s| s.base_offset != base_offset);
        Ok(())
    }
}

/// Writes `bytes` to `path` atomically and durably.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let ctx = || format!("writing {}", path.display());
    let mut f = std::fs::File::create(&tmp).ctx(ctx)?;
    f.write_all(bytes).ctx(ctx)?;
    f.sync_data().ctx(ctx)?;
    std::fs::rename(&tmp, path).ctx(ctx)?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// fsyncs a directory so that entries created or renamed in it persist.
pub fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// The metadata file of a shard directory.
pub fn meta_path(shard_dir: &Path) -> PathBuf {
    shard_dir.join("shard.json")
}

/// Saves a shard's metadata.
pub fn save(shard_dir: &Path, meta: &ShardMeta) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(meta)
        .map_err(|e| JournalError::InvalidArgument(format!("encoding metadata: {e}")))?;
    write_atomic(&meta_path(shard_dir), &bytes)
}

/// Loads a shard's metadata.
pub fn load(shard_dir: &Path) -> Result<ShardMeta> {
    let path = meta_path(shard_dir);
    let bytes = std::fs::read(&path).ctx(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
        path,
        position: 0,
        reason: format!("metadata does not parse: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use SegmentStatus::*;

    #[test]
    fn only_one_write_segment() {
        let mut t = SegmentTable::default();
        t.add_idle(0).unwrap();
        t.set_status(0, Write).unwrap();
        t.add_idle(10).unwrap();
        assert!(t.set_status(10, Write).is_err());
        t.set_status(0, PrepareSealUp).unwrap();
        t.set_status(10, Write).unwrap();
        assert_eq!(t.writer().unwrap().base_offset, 10);
    }

    #[test]
    fn illegal_transitions_are_refused() {
        let mut t = SegmentTable::default();
        t.add_idle(0).unwrap();
        let err = t.set_status(0, SealUp).unwrap_err();
        assert!(matches!(err, JournalError::Lifecycle(_)), "{err}");
        assert_eq!(t.get(0).unwrap().status, Idle);
        assert!(t.remove_deleted(0).is_err());
    }

    #[test]
    fn two_writers_on_load_are_refused() {
        let mut t = SegmentTable::default();
        t.add_idle(0).unwrap();
        t.add_idle(5).unwrap();
        let mut segs = t.all().to_vec();
        segs[0].status = Write;
        segs[1].status = Write;
        assert!(SegmentTable::from_loaded(segs).is_err());
    }

    #[test]
    fn segments_must_follow_each_other() {
        let mut t = SegmentTable::default();
        t.add_idle(5).unwrap();
        assert!(t.add_idle(5).is_err());
        assert!(t.add_idle(3).is_err());
    }

    #[test]
    fn metadata_round_trips_atomically() {
        let dir = std::env::temp_dir().join(format!("journal-meta-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let meta = ShardMeta {
            name: "s".into(),
            config: ShardConfig::default(),
            segments: vec![],
        };
        save(&dir, &meta).unwrap();
        assert_eq!(load(&dir).unwrap(), meta);
        std::fs::write(meta_path(&dir), b"{ not json").unwrap();
        assert!(matches!(load(&dir), Err(JournalError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
