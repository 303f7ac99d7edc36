//! RobustMQ protocol: the MQTT codec, topic names and filters, and the
//! internal wire schemas. No I/O, no clock: bytes in, packets out, and back.
//!
//! - [`mqtt`]: the MQTT 3.1, 3.1.1 and 5.0 wire format: packet types,
//!   properties, reason codes, a streaming [`mqtt::Decoder`] and an encoder
//!   that writes into the caller's buffer.
//! - [`topic`]: topic name and filter validation and matching, shared
//!   subscriptions.
//! - [`wire`]: the internal wire between cores, nodes, journal and placement.

pub mod mqtt;
pub mod topic;
pub mod wire;
