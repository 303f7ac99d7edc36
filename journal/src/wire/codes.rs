//! Error codes on the wire, one per [`JournalError`] variant.

use robustmq_protocol::wire::journal_generated::robustmq::journal as fb;

use crate::error::JournalError;

/// What went wrong, as the client sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// A frame or request that does not decode.
    BadRequest,
    /// A name breaks the naming rules.
    InvalidName,
    /// An argument makes no sense.
    InvalidArgument,
    /// The shard exists already.
    ShardExists,
    /// No such shard.
    ShardNotFound,
    /// No such segment.
    SegmentNotFound,
    /// Over a size limit.
    TooLarge,
    /// Offset outside the retained range.
    OffsetOutOfRange,
    /// A lifecycle transition that is not allowed.
    IllegalTransition,
    /// Stored data failed its checks.
    Corrupt,
    /// An I/O error on the server.
    Io,
    /// The server is stopping.
    Stopped,
}

impl ErrorCode {
    /// The code of an engine error.
    pub fn of(e: &JournalError) -> ErrorCode {
        match e {
            JournalError::InvalidName { .. } => ErrorCode::InvalidName,
            JournalError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            JournalError::ShardExists(_) => ErrorCode::ShardExists,
            JournalError::ShardNotFound(_) => ErrorCode::ShardNotFound,
            JournalError::SegmentNotFound { .. } => ErrorCode::SegmentNotFound,
            JournalError::TooLarge { .. } => ErrorCode::TooLarge,
            JournalError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
            JournalError::Lifecycle(_) => ErrorCode::IllegalTransition,
            JournalError::Corrupt { .. } => ErrorCode::Corrupt,
            JournalError::Io { .. } => ErrorCode::Io,
            JournalError::Stopped => ErrorCode::Stopped,
        }
    }

    pub(crate) fn to_fb(self) -> fb::ErrorCode {
        match self {
            ErrorCode::BadRequest => fb::ErrorCode::BadRequest,
            ErrorCode::InvalidName => fb::ErrorCode::InvalidName,
            ErrorCode::InvalidArgument => fb::ErrorCode::InvalidArgument,
            ErrorCode::ShardExists => fb::ErrorCode::ShardExists,
            ErrorCode::ShardNotFound => fb::ErrorCode::ShardNotFound,
            ErrorCode::SegmentNotFound => fb::ErrorCode::SegmentNotFound,
            ErrorCode::TooLarge => fb::ErrorCode::TooLarge,
            ErrorCode::OffsetOutOfRange => fb::ErrorCode::OffsetOutOfRange,
            ErrorCode::IllegalTransition => fb::ErrorCode::IllegalTransition,
            ErrorCode::Corrupt => fb::ErrorCode::Corrupt,
            ErrorCode::Io => fb::ErrorCode::Io,
            ErrorCode::Stopped => fb::ErrorCode::Stopped,
        }
    }

    pub(crate) fn from_fb(c: fb::ErrorCode) -> ErrorCode {
        match c {
            fb::ErrorCode::InvalidName => ErrorCode::InvalidName,
            fb::ErrorCode::InvalidArgument => ErrorCode::InvalidArgument,
            fb::ErrorCode::ShardExists => ErrorCode::ShardExists,
            fb::ErrorCode::ShardNotFound => ErrorCode::ShardNotFound,
            fb::ErrorCode::SegmentNotFound => ErrorCode::SegmentNotFound,
            fb::ErrorCode::TooLarge => ErrorCode::TooLarge,
            fb::ErrorCode::OffsetOutOfRange => ErrorCode::OffsetOutOfRange,
            fb::ErrorCode::IllegalTransition => ErrorCode::IllegalTransition,
            fb::ErrorCode::Corrupt => ErrorCode::Corrupt,
            fb::ErrorCode::Io => ErrorCode::Io,
            fb::ErrorCode::Stopped => ErrorCode::Stopped,
            _ => ErrorCode::BadRequest,
        }
    }
}
