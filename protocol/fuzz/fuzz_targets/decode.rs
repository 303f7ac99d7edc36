//! Feeds arbitrary bytes to the MQTT decoder: server side (version learnt
//! from CONNECT) and with each known version. Decodes until the decoder
//! wants more or fails; every packet that decodes must re-encode to
//! `encoded_len` bytes that decode back to the same packet. The same bytes
//! fed in two pieces must decode to the same packets as fed at once.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use robustmq_protocol::mqtt::{
    DecodeError, Decoder, Packet, ProtocolVersion, MAX_REMAINING_LENGTH,
};

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let decoders = [
        Decoder::new(MAX),
        Decoder::with_version(ProtocolVersion::V3_1, MAX),
        Decoder::with_version(ProtocolVersion::V3_1_1, MAX),
        Decoder::with_version(ProtocolVersion::V5, MAX),
    ];
    // A split point taken from the input, for the streaming check.
    let split = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    for decoder in decoders {
        let whole = drain(decoder.clone(), &[data]);
        let pieces = drain(decoder, &[&data[..split], &data[split..]]);
        assert_eq!(whole, pieces, "decoding depends on how the input is cut");
    }
});

/// Decodes the pieces, fed one after the other, until the decoder wants
/// more after the last piece or fails. Returns the packets and the error.
fn drain(mut decoder: Decoder, pieces: &[&[u8]]) -> (Vec<Packet>, Option<DecodeError>) {
    let mut buf = BytesMut::new();
    let mut packets = Vec::new();
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(packet)) => {
                    assert!(buf.len() < before);
                    round_trip(&decoder, &packet);
                    packets.push(packet);
                }
                Ok(None) => {
                    assert_eq!(buf.len(), before, "incomplete must not consume");
                    break;
                }
                Err(e) => {
                    let _ = e.reason_code();
                    return (packets, Some(e));
                }
            }
        }
    }
    (packets, None)
}

/// Re-encodes a decoded packet for the connection's version and decodes it
/// again: it must come back equal.
fn round_trip(decoder: &Decoder, packet: &Packet) {
    let (version, mut again) = match packet {
        // CONNECT is encoded in the version it names.
        Packet::Connect(c) => (c.protocol, Decoder::new(MAX_REMAINING_LENGTH + 5)),
        _ => {
            let v = decoder.version().expect("a version once a packet decoded");
            (v, Decoder::with_version(v, MAX_REMAINING_LENGTH + 5))
        }
    };
    let mut buf = BytesMut::new();
    packet
        .encode(version, &mut buf)
        .expect("a decoded packet encodes");
    assert_eq!(buf.len(), packet.encoded_len(version), "encoded_len");
    let decoded = again
        .decode(&mut buf)
        .unwrap_or_else(|e| panic!("re-encoded {packet:?} fails to decode: {e}"));
    assert_eq!(decoded.as_ref(), Some(packet), "round trip");
    assert!(buf.is_empty(), "bytes left after the re-encoded packet");
}
