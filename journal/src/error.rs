//! The journal's typed errors.

use std::path::PathBuf;

use crate::lifecycle::LifecycleError;

/// Everything that can go wrong in the Journal Engine.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// A shard or group name breaks the naming rules.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A request argument makes no sense.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The shard already exists.
    #[error("shard {0:?} already exists")]
    ShardExists(String),
    /// No such shard.
    #[error("shard {0:?} not found")]
    ShardNotFound(String),
    /// No such segment in the shard.
    #[error("segment {base_offset} of shard {shard:?} not found")]
    SegmentNotFound {
        /// The shard.
        shard: String,
        /// The segment's first offset.
        base_offset: u64,
    },
    /// A record or batch is larger than the limits allow.
    #[error("batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Its encoded size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The offset is outside the shard's retained range `[start, end)`.
    #[error("offset {offset} out of range [{start}, {end})")]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The first retained offset.
        start: u64,
        /// The next offset to be written.
        end: u64,
    },
    /// A segment status change the lifecycle does not allow.
    #[error(transparent)]
    Lifecycle(#[from] LifecycleError),
    /// Stored bytes failed their checks: never returned as data.
    #[error("corrupt data in {path} at byte {position}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Where the damage starts.
        position: u64,
        /// What check failed.
        reason: String,
    },
    /// An I/O error.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The engine, or the shard, is shutting down.
    #[error("the journal is stopping")]
    Stopped,
}

/// The journal's result type.
pub type Result<T, E = JournalError> = std::result::Result<T, E>;

impl JournalError {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        JournalError::Io {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// Adds context to I/O results (std or glommio).
pub(crate) trait IoContext<T> {
    /// Maps the error into [`JournalError::Io`] with `context`.
    fn ctx<C: FnOnce() -> String>(self, context: C) -> Result<T>;
}

impl<T, E: Into<std::io::Error>> IoContext<T> for std::result::Result<T, E> {
    fn ctx<C: FnOnce() -> String>(self, context: C) -> Result<T> {
        self.map_err(|e| JournalError::io(context(), e))
    }
}
