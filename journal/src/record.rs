//! Records: what a producer appends and what a reader gets back.

use bytes::Bytes;

/// A named header value carried with a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub name: String,
    /// Its value.
    pub value: Bytes,
}

/// A record to append: the engine assigns its offset and timestamp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordIn {
    /// Optional key.
    pub key: Option<Bytes>,
    /// Tags, for filtering.
    pub tags: Vec<String>,
    /// Headers.
    pub headers: Vec<Header>,
    /// The payload.
    pub payload: Bytes,
}

impl RecordIn {
    /// A record with just a payload.
    pub fn from_payload(payload: impl Into<Bytes>) -> Self {
        RecordIn {
            payload: payload.into(),
            ..RecordIn::default()
        }
    }
}

/// A stored record as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Its position in the shard.
    pub offset: u64,
    /// When it was appended, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// Optional key.
    pub key: Option<Bytes>,
    /// Tags.
    pub tags: Vec<String>,
    /// Headers.
    pub headers: Vec<Header>,
    /// The payload.
    pub payload: Bytes,
}
