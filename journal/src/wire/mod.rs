//! The journal RPC on the wire: length-prefixed frames (u32 big-endian
//! length, then one flatbuffer of `protocol/schema/journal.fbs`), and the
//! conversions between those flatbuffers and the engine's
//! [`Request`](crate::engine::Request) and [`Response`](crate::engine::Response).

pub mod codes;
pub mod request;
pub mod response;

pub use codes::ErrorCode;
pub use request::{decode_request, encode_request, BadRequest};
pub use response::{decode_response, encode_response, RemoteError};

/// The largest frame either side accepts.
pub const MAX_FRAME: usize = 64 << 20;
/// The most bytes one read request may ask for (keeps answers below
/// [`MAX_FRAME`]).
pub const MAX_READ_BYTES: usize = 16 << 20;
/// Records returned by a read that gives no limit.
pub const DEFAULT_READ_RECORDS: usize = 1000;
/// Bytes returned by a read that gives no limit.
pub const DEFAULT_READ_BYTES: usize = 1 << 20;

/// Prefixes `payload` with its length.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}
