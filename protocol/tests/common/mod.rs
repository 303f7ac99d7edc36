//! Helpers shared by the codec tests.
#![allow(dead_code)]

use bytes::BytesMut;
use robustmq_protocol::mqtt::{DecodeError, Decoder, Packet, ProtocolVersion};

/// Decodes exactly one packet from `bytes`, checking nothing is left.
pub fn decode(version: Option<ProtocolVersion>, bytes: &[u8]) -> Result<Packet, DecodeError> {
    let mut decoder = match version {
        Some(v) => Decoder::with_version(v, 1 << 20),
        None => Decoder::new(1 << 20),
    };
    let mut buf = BytesMut::from(bytes);
    let packet = decoder.decode(&mut buf)?.expect("a whole packet");
    assert!(buf.is_empty(), "bytes left in the buffer");
    Ok(packet)
}

/// Encodes one packet.
pub fn encode(version: ProtocolVersion, packet: &Packet) -> Vec<u8> {
    let mut buf = BytesMut::new();
    packet.encode(version, &mut buf).expect("encodes");
    assert_eq!(buf.len(), packet.encoded_len(version), "encoded_len agrees");
    buf.to_vec()
}

/// Checks that `bytes` decodes to `packet` and `packet` encodes to `bytes`.
pub fn vector(version: ProtocolVersion, bytes: &[u8], packet: Packet) {
    let decoder_version = if matches!(packet, Packet::Connect(_)) {
        None
    } else {
        Some(version)
    };
    assert_eq!(decode(decoder_version, bytes).unwrap(), packet, "decode");
    assert_eq!(encode(version, &packet), bytes, "encode");
}
