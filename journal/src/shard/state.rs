//! The in-memory state of one shard, shared on its owner core by the writer
//! task and the readers (`Rc<RefCell<_>>`, never borrowed across an await).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::error::{JournalError, Result};
use crate::index::SegmentIndex;
use crate::meta::{self, SegmentMeta, SegmentTable, ShardConfig, ShardMeta};

/// A readable segment: its file, index and visible extent.
pub struct SegmentHandle {
    /// First offset.
    pub base_offset: u64,
    /// The log file.
    pub path: PathBuf,
    /// The open file, shared with readers in flight.
    pub file: Rc<DmaFile>,
    /// Sparse offset and time index.
    pub index: SegmentIndex,
    /// Bytes readers may read (acknowledged data).
    pub data_end: u64,
    /// The offset after the last visible record.
    pub next_offset: u64,
    /// Newest visible timestamp.
    pub max_ts: Option<u64>,
}

/// What recovery found and repaired when the shard was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Torn or corrupt tails cut: (segment base offset, position, reason).
    pub truncated: Vec<(u64, u64, String)>,
    /// Indexes rebuilt because missing or damaged: (segment, why).
    pub rebuilt_indexes: Vec<(u64, String)>,
    /// Damage found in sealed segments: (segment, position, reason).
    pub damaged: Vec<(u64, u64, String)>,
}

/// The state of one shard.
pub struct ShardState {
    /// The shard's name.
    pub name: String,
    /// Its directory.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: ShardConfig,
    /// Segment metadata with the lifecycle enforced.
    pub table: SegmentTable,
    /// Readable segments by base offset.
    pub handles: BTreeMap<u64, SegmentHandle>,
    /// Set when a write or fsync failed: the shard refuses appends.
    pub failed: Option<String>,
    /// What recovery did.
    pub report: RecoveryReport,
    /// fdatasyncs of segment data since the shard was opened.
    pub syncs: u64,
    /// Where deleted segments' files go, and new segments' come from.
    pub pool: crate::recycle::Recycler,
}

/// A shared handle on a shard's state.
pub type SharedState = Rc<std::cell::RefCell<ShardState>>;

impl ShardState {
    /// Saves the metadata file.
    pub fn save(&self) -> Result<()> {
        meta::save(
            &self.dir,
            &ShardMeta {
                name: self.name.clone(),
                config: self.config.clone(),
                segments: self.table.all().to_vec(),
            },
        )
    }

    /// The first retained offset.
    pub fn start_offset(&self) -> u64 {
        self.handles
            .values()
            .next()
            .map_or_else(|| self.end_offset(), |h| h.base_offset)
    }

    /// The offset the next acknowledged record will get.
    pub fn end_offset(&self) -> u64 {
        self.handles
            .values()
            .next_back()
            .map_or(0, |h| h.next_offset)
    }

    /// Bytes of visible data in all segments.
    pub fn total_bytes(&self) -> u64 {
        self.handles.values().map(|h| h.data_end).sum()
    }

    /// The readable segment holding `offset`.
    pub fn segment_for(&self, offset: u64) -> Option<&SegmentHandle> {
        self.handles.range(..=offset).next_back().map(|(_, h)| h)
    }

    /// The metadata of one segment.
    pub fn segment_meta(&self, base_offset: u64) -> Result<&SegmentMeta> {
        self.table
            .get(base_offset)
            .ok_or_else(|| JournalError::SegmentNotFound {
                shard: self.name.clone(),
                base_offset,
            })
    }

    /// Refuses work on a failed shard.
    pub fn check_healthy(&self) -> Result<()> {
        match &self.failed {
            Some(why) => Err(JournalError::io(
                format!("shard {:?} failed earlier", self.name),
                std::io::Error::other(why.clone()),
            )),
            None => Ok(()),
        }
    }
}
