//! RobustMQ Journal Engine: append-only shards made of segments, written
//! with direct I/O by the one core that owns each shard.
//!
//! - [`engine`]: the executors, shard ownership by core, and the
//!   [`Journal`] handle.
//! - [`server`] and [`client`]: the journal RPC (port 1778), length-prefixed
//!   flatbuffers frames ([`wire`]).
//! - [`format`]: the batch and record framing on disk.
//! - [`lifecycle`]: segment statuses and their allowed transitions.
//! - [`meta`]: shard and segment metadata.
//! - [`index`]: the sparse offset and time indexes.
//! - [`segment`]: segment files on glommio DMA files; [`recycle`]: the
//!   files of deleted segments kept for new ones.
//! - [`shard`]: one shard on its owner core: group commit, recovery, reads,
//!   retention, group offsets.

pub mod client;
pub mod config;
pub mod crc;
pub mod engine;
pub mod error;
pub mod format;
pub mod index;
pub mod lifecycle;
pub mod meta;
pub mod offsets;
pub mod record;
pub mod recycle;
pub mod role;
pub mod segment;
pub mod server;
pub mod shard;
pub mod wire;

pub use client::{ClientError, JournalClient};
pub use engine::{Journal, JournalOptions};
pub use error::{JournalError, Result};
pub use meta::{FsyncPolicy, ShardConfig};
pub use record::{Header, Record, RecordIn};
pub use shard::{AppendAck, ReadLimits, SegmentInfo, ShardInfo};
