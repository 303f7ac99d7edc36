//! The data representations of MQTT section 1.5: integers, variable byte
//! integers, UTF-8 strings and binary data, read from a `Bytes` without
//! copying and written into a `BytesMut`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use super::encode::EncodeError;
use super::error::DecodeError;

/// Reads MQTT data types from one packet's body. Every read checks the
/// remaining length first, so a short packet is an error, never a panic.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.len() < n {
            Err(DecodeError::Truncated(what))
        } else {
            Ok(())
        }
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }

    /// A variable byte integer of at most four bytes, in as few bytes as
    /// its value needs [MQTT-1.5.5-1].
    pub(crate) fn varint(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        let mut value: u32 = 0;
        for i in 0..4 {
            let byte = self.u8(what)?;
            value |= u32::from(byte & 0x7F) << (7 * i);
            if byte & 0x80 == 0 {
                if i > 0 && byte == 0 {
                    return Err(DecodeError::MalformedVariableInteger);
                }
                return Ok(value);
            }
        }
        Err(DecodeError::MalformedVariableInteger)
    }

    /// `n` bytes, sliced without copying.
    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        Ok(self.buf.split_to(n))
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    /// Binary data: a two-byte length, then that many bytes.
    pub(crate) fn binary(&mut self, what: &'static str) -> Result<Bytes, DecodeError> {
        let len = self.u16(what)? as usize;
        self.bytes(len, what)
    }

    /// A UTF-8 encoded string: well-formed UTF-8 with no U+0000.
    pub(crate) fn string(&mut self, what: &'static str) -> Result<ByteString, DecodeError> {
        let raw = self.binary(what)?;
        utf8(raw)
    }

    /// Takes the next `len` bytes as a sub-reader (used for properties).
    pub(crate) fn sub(&mut self, len: usize, what: &'static str) -> Result<Reader, DecodeError> {
        Ok(Reader::new(self.bytes(len, what)?))
    }
}

/// Validates a string as MQTT allows it: UTF-8, no U+0000.
pub(crate) fn utf8(raw: Bytes) -> Result<ByteString, DecodeError> {
    let s = ByteString::try_from(raw).map_err(|_| DecodeError::InvalidUtf8)?;
    if s.as_bytes().contains(&0) {
        return Err(DecodeError::NullInString);
    }
    Ok(s)
}

/// How many bytes a variable byte integer takes.
pub(crate) fn varint_len(value: usize) -> usize {
    match value {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    }
}

pub(crate) fn put_varint(buf: &mut BytesMut, mut value: usize) {
    debug_assert!(value <= super::MAX_REMAINING_LENGTH);
    loop {
        let mut byte = (value & 0x7F) as u8;
        value >>= 7;
        if value > 0 {
            byte |= 0x80;
        }
        buf.put_u8(byte);
        if value == 0 {
            return;
        }
    }
}

pub(crate) fn put_binary(buf: &mut BytesMut, data: &[u8]) -> Result<(), EncodeError> {
    let len = u16::try_from(data.len()).map_err(|_| EncodeError::FieldTooLong(data.len()))?;
    buf.put_u16(len);
    buf.put_slice(data);
    Ok(())
}

pub(crate) fn put_string(buf: &mut BytesMut, s: &str) -> Result<(), EncodeError> {
    put_binary(buf, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_boundaries_round_trip() {
        for (value, len) in [
            (0usize, 1usize),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (2_097_151, 3),
            (2_097_152, 4),
            (268_435_455, 4),
        ] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, value);
            assert_eq!(buf.len(), len, "{value}");
            assert_eq!(varint_len(value), len);
            let mut r = Reader::new(buf.freeze());
            assert_eq!(r.varint("x").unwrap() as usize, value);
        }
    }

    #[test]
    fn five_byte_varint_is_malformed() {
        let mut r = Reader::new(Bytes::from_static(&[0x80, 0x80, 0x80, 0x80, 0x01]));
        assert_eq!(r.varint("x"), Err(DecodeError::MalformedVariableInteger));
    }

    #[test]
    fn non_minimal_varints_are_malformed() {
        for bytes in [
            &[0x80, 0x00][..],
            &[0xFF, 0x00],
            &[0x80, 0x80, 0x00],
            &[0x81, 0x80, 0x80, 0x00],
        ] {
            let mut r = Reader::new(Bytes::copy_from_slice(bytes));
            assert_eq!(
                r.varint("x"),
                Err(DecodeError::MalformedVariableInteger),
                "{bytes:?}"
            );
        }
        // Zero continuation groups below a non-zero last group are fine.
        let mut r = Reader::new(Bytes::from_static(&[0x80, 0x01]));
        assert_eq!(r.varint("x"), Ok(128));
    }

    #[test]
    fn strings_reject_bad_utf8_and_nul() {
        let mut r = Reader::new(Bytes::from_static(&[0, 2, 0xC3, 0x28]));
        assert_eq!(r.string("s"), Err(DecodeError::InvalidUtf8));
        let mut r = Reader::new(Bytes::from_static(&[0, 3, b'a', 0, b'b']));
        assert_eq!(r.string("s"), Err(DecodeError::NullInString));
        // A surrogate half encoded in UTF-8 (U+D800) is ill-formed.
        let mut r = Reader::new(Bytes::from_static(&[0, 3, 0xED, 0xA0, 0x80]));
        assert_eq!(r.string("s"), Err(DecodeError::InvalidUtf8));
        let mut r = Reader::new(Bytes::from_static(&[0, 2, b'o', b'k']));
        assert_eq!(&*r.string("s").unwrap(), "ok");
    }

    #[test]
    fn short_input_is_truncated_not_a_panic() {
        let mut r = Reader::new(Bytes::from_static(&[0, 5, b'a']));
        assert_eq!(r.string("s"), Err(DecodeError::Truncated("s")));
        let mut r = Reader::new(Bytes::from_static(&[1]));
        assert_eq!(r.u16("id"), Err(DecodeError::Truncated("id")));
    }
}
