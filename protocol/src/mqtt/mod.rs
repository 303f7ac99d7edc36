//! The MQTT wire format, versions 3.1, 3.1.1 and 5.0.
//!
//! One set of packet types serves every version: fields that exist only in
//! 5.0 (properties, reason codes on acknowledgements) are ignored when
//! encoding for 3.x and take their defaults when decoding 3.x. Reason codes
//! are always the 5.0 ones; 3.x return codes are mapped on the wire.
//!
//! Decoding is streaming ([`Decoder`]): it returns `Ok(None)` (incomplete)
//! until a whole packet is buffered, refuses a packet over the maximum size
//! as soon as its fixed header is read, and slices strings and payloads out
//! of the input without copying.

mod decode;
mod encode;
mod error;
mod packet;
mod primitives;
mod properties;
mod reason;
mod version;

pub use decode::{parse_fixed_header, Decoder, FixedHeader};
pub use encode::{encode_reply, EncodeError, PublishRef};
pub use error::DecodeError;
pub use packet::*;
pub use properties::{Properties, PropertyContext, PropertyId, PropertyValues, PublishOverrides};
pub use reason::ReasonCode;
pub use version::{PacketType, ProtocolVersion, QoS};

/// The largest remaining length the four-byte variable integer can express.
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The largest subscription identifier (a variable byte integer).
pub const MAX_SUBSCRIPTION_IDENTIFIER: u32 = 268_435_455;
