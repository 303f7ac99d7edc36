//! The typed errors of a placement call, shared by the server and the client.

use robustmq_protocol::wire::placement_generated::robustmq::placement::ErrorCode;

/// Why a call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// This member cannot serve the call; the leader, when known.
    #[error("not the leader (leader hint: {leader_id} at {leader_addr:?})")]
    NotLeader {
        /// The leader's id, 0 when unknown.
        leader_id: u64,
        /// The leader's address, empty when unknown.
        leader_addr: String,
    },
    /// The deadline passed; a write may or may not have taken effect.
    #[error("deadline exceeded")]
    Timeout,
    /// The request is malformed or makes no sense.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The named thing does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// Overloaded, stopping, or a change in progress; retry later.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A bug or an I/O failure on the member.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The wire code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::NotLeader { .. } => ErrorCode::NotLeader,
            ApiError::Timeout => ErrorCode::Timeout,
            ApiError::InvalidArgument(_) => ErrorCode::InvalidArgument,
            ApiError::NotFound(_) => ErrorCode::NotFound,
            ApiError::Unavailable(_) => ErrorCode::Unavailable,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The text sent with the code.
    pub fn message(&self) -> String {
        match self {
            ApiError::InvalidArgument(m)
            | ApiError::NotFound(m)
            | ApiError::Unavailable(m)
            | ApiError::Internal(m) => m.clone(),
            ApiError::NotLeader { .. } | ApiError::Timeout => String::new(),
        }
    }

    /// Rebuilds an error from the wire.
    pub fn from_wire(
        code: ErrorCode,
        message: String,
        leader_id: u64,
        leader_addr: String,
    ) -> Self {
        match code {
            ErrorCode::NotLeader => ApiError::NotLeader {
                leader_id,
                leader_addr,
            },
            ErrorCode::Timeout => ApiError::Timeout,
            ErrorCode::InvalidArgument => ApiError::InvalidArgument(message),
            ErrorCode::NotFound => ApiError::NotFound(message),
            ErrorCode::Unavailable => ApiError::Unavailable(message),
            _ => ApiError::Internal(message),
        }
    }
}
