//! The bench header at the front of every payload: the send time (wall
//! clock, nanoseconds since the Unix epoch, so a `pub` and a `sub` in two
//! processes agree), the publisher's id and its sequence number. Sixteen
//! bytes, little endian; the rest of the payload is zeros.

use std::time::{SystemTime, UNIX_EPOCH};

/// Bytes of the header; the smallest payload the bench sends.
pub const HEADER_LEN: usize = 16;

/// What a payload's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Send time, nanoseconds since the Unix epoch.
    pub sent_ns: u64,
    /// The publisher's index in its run.
    pub publisher: u32,
    /// The publisher's sequence number of this message, from 0.
    pub seq: u32,
}

/// Writes `h` at the front of `buf` (at least [`HEADER_LEN`] bytes).
#[inline]
pub fn encode(buf: &mut [u8], h: Header) {
    buf[0..8].copy_from_slice(&h.sent_ns.to_le_bytes());
    buf[8..12].copy_from_slice(&h.publisher.to_le_bytes());
    buf[12..16].copy_from_slice(&h.seq.to_le_bytes());
}

/// Reads the header at the front of a payload; `None` if it is too short.
#[inline]
pub fn decode(buf: &[u8]) -> Option<Header> {
    if buf.len() < HEADER_LEN {
        return None;
    }
    Some(Header {
        sent_ns: u64::from_le_bytes(buf[0..8].try_into().ok()?),
        publisher: u32::from_le_bytes(buf[8..12].try_into().ok()?),
        seq: u32::from_le_bytes(buf[12..16].try_into().ok()?),
    })
}

/// The wall clock in nanoseconds since the Unix epoch (vDSO, no syscall).
#[inline]
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = [0u8; 64];
        let h = Header {
            sent_ns: 1_764_000_000_123_456_789,
            publisher: 7,
            seq: u32::MAX - 1,
        };
        encode(&mut buf, h);
        assert_eq!(decode(&buf), Some(h));
        assert_eq!(decode(&buf[..HEADER_LEN]), Some(h));
    }

    #[test]
    fn short_payload_has_no_header() {
        assert_eq!(decode(&[0u8; HEADER_LEN - 1]), None);
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn layout_is_little_endian() {
        let mut buf = [0u8; HEADER_LEN];
        encode(
            &mut buf,
            Header {
                sent_ns: 1,
                publisher: 2,
                seq: 3,
            },
        );
        assert_eq!(buf, [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    }

    #[test]
    fn wall_clock_is_recent() {
        // After 2020-01-01.
        assert!(wall_ns() > 1_577_836_800_000_000_000);
    }
}
