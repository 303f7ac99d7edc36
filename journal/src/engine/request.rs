//! The requests an owner core serves and their answers.

use crate::meta::ShardConfig;
use crate::record::{Record, RecordIn};
use crate::shard::{AppendAck, ReadLimits, SegmentInfo, ShardInfo};

/// One operation on the journal.
#[derive(Debug)]
pub enum Request {
    /// Create a shard.
    CreateShard {
        /// Its name.
        name: String,
        /// Its configuration.
        config: ShardConfig,
    },
    /// Delete a shard and its data.
    DeleteShard {
        /// Its name.
        name: String,
    },
    /// The shards this core owns.
    ListShards,
    /// One shard's summary.
    DescribeShard {
        /// Its name.
        name: String,
    },
    /// Append a batch.
    Append {
        /// The shard.
        shard: String,
        /// The records.
        records: Vec<RecordIn>,
    },
    /// Read from an offset.
    Read {
        /// The shard.
        shard: String,
        /// The first offset wanted.
        offset: u64,
        /// Limits.
        limits: ReadLimits,
    },
    /// The first offset at or after a timestamp.
    OffsetForTime {
        /// The shard.
        shard: String,
        /// Milliseconds since the epoch.
        timestamp: u64,
    },
    /// The shard's segments.
    ListSegments {
        /// The shard.
        shard: String,
    },
    /// One segment's summary.
    DescribeSegment {
        /// The shard.
        shard: String,
        /// The segment's base offset.
        base_offset: u64,
    },
    /// Seal the shard's `Write` segment.
    SealSegment {
        /// The shard.
        shard: String,
    },
    /// Delete the shard's oldest, sealed segment.
    DeleteSegment {
        /// The shard.
        shard: String,
        /// The segment's base offset.
        base_offset: u64,
    },
    /// Commit a group's offset.
    CommitOffset {
        /// The shard.
        shard: String,
        /// The consumer group.
        group: String,
        /// The next offset the group will read.
        offset: u64,
    },
    /// A group's committed offset.
    GetOffset {
        /// The shard.
        shard: String,
        /// The consumer group.
        group: String,
    },
}

/// The answer to a [`Request`].
#[derive(Debug)]
pub enum Response {
    /// Done, nothing to return.
    Done,
    /// Shard summaries.
    Shards(Vec<ShardInfo>),
    /// One shard's summary.
    Shard(ShardInfo),
    /// Offsets of an append.
    Appended(AppendAck),
    /// Records read.
    Records(Vec<Record>),
    /// An offset, if any.
    Offset(Option<u64>),
    /// Segment summaries.
    Segments(Vec<SegmentInfo>),
    /// One segment's summary.
    Segment(SegmentInfo),
    /// Base offset of a sealed segment.
    Sealed(u64),
}

impl Request {
    /// The shard the request is about, which decides the owner core;
    /// `None` for requests every core answers.
    pub fn shard(&self) -> Option<&str> {
        match self {
            Request::ListShards => None,
            Request::CreateShard { name, .. }
            | Request::DeleteShard { name }
            | Request::DescribeShard { name } => Some(name),
            Request::Append { shard, .. }
            | Request::Read { shard, .. }
            | Request::OffsetForTime { shard, .. }
            | Request::ListSegments { shard }
            | Request::DescribeSegment { shard, .. }
            | Request::SealSegment { shard }
            | Request::DeleteSegment { shard, .. }
            | Request::CommitOffset { shard, .. }
            | Request::GetOffset { shard, .. } => Some(shard),
        }
    }
}
