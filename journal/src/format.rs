//! The on-disk batch format of segment files.
//!
//! A segment is a sequence of batches laid end to end from byte 0; the first
//! byte that does not start a valid batch ends the log (preallocated space
//! reads as zeros, so a zero magic is the normal end). All integers are
//! little-endian.
//!
//! ```text
//! batch header (48 bytes)
//!   0  magic          u32  "RJB1"
//!   4  header_crc     u32  CRC32C of bytes 8..48
//!   8  batch_len      u32  header + records, in bytes
//!  12  record_count   u32
//!  16  base_offset    u64  offset of the first record
//!  24  first_ts       u64  milliseconds since the epoch
//!  32  max_ts         u64
//!  40  generation     u32  the segment's write generation (see below)
//!  44  reserved       u32  zero
//! then record_count records, each
//!   0  len            u32  length of the body
//!   4  crc            u32  CRC32C of the body
//!   8  body: timestamp u64, key_len i32 (-1: none), key,
//!            tag_count u16, (len u16, utf-8)*, header_count u16,
//!            (name_len u16, utf-8 name, value_len u32, value)*, payload (the rest)
//! ```
//!
//! When the writer has several direct writes in flight, a write whose end is
//! not on a 4 KiB boundary ends with a pad frame up to the boundary, so that
//! the next write never shares a page with one still in flight:
//!
//! ```text
//! pad frame: magic u32 "RJPD", len u32 (the whole frame, to the boundary),
//!            crc u32 (CRC32C of the 8 bytes before it), zeros
//! ```
//!
//! The generation grows by one each time a segment is reopened for writing
//! after a restart. A batch whose generation is lower than the one before it
//! is stale data left behind a torn tail and ends the log: it can never be
//! mistaken for a continuation.

use bytes::Bytes;

use crate::record::{Header, Record, RecordIn};

/// The magic number that starts every batch ("RJB1").
pub const BATCH_MAGIC: u32 = u32::from_le_bytes(*b"RJB1");
/// The magic number that starts a pad frame ("RJPD").
pub const PAD_MAGIC: u32 = u32::from_le_bytes(*b"RJPD");
/// Smallest pad frame.
pub const PAD_MIN_LEN: usize = 12;
/// The page size pads align to.
pub const PAD_ALIGN: u64 = 4096;
/// Size of a batch header.
pub const BATCH_HEADER_LEN: usize = 48;
/// Size of a record's frame (length and CRC) before its body.
pub const RECORD_FRAME_LEN: usize = 8;
/// Largest key.
pub const MAX_KEY_LEN: usize = 64 * 1024;

/// A decoded batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// Header plus records, in bytes.
    pub batch_len: u32,
    /// Records in the batch.
    pub record_count: u32,
    /// Offset of the first record.
    pub base_offset: u64,
    /// Timestamp of the first record.
    pub first_ts: u64,
    /// Largest timestamp in the batch.
    pub max_ts: u64,
    /// Write generation of the segment when written.
    pub generation: u32,
}

impl BatchHeader {
    /// The offset after the batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }
}

/// Why bytes do not form a valid batch or record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// More bytes are needed to decide.
    #[error("incomplete: {needed} bytes needed")]
    Incomplete {
        /// Total bytes needed from the batch start.
        needed: usize,
    },
    /// A zero magic: the normal end of the written part.
    #[error("end of log")]
    End,
    /// A non-zero magic that is not ours.
    #[error("bad magic {0:#010x}")]
    BadMagic(u32),
    /// The header checksum does not match.
    #[error("batch header checksum mismatch")]
    HeaderCrc,
    /// The header's fields are inconsistent.
    #[error("bad batch header: {0}")]
    BadHeader(&'static str),
    /// A record's checksum does not match.
    #[error("record {index} checksum mismatch")]
    RecordCrc {
        /// The record's index in the batch.
        index: u32,
    },
    /// A record's body does not parse.
    #[error("record {index} malformed: {reason}")]
    BadRecord {
        /// The record's index in the batch.
        index: u32,
        /// What is wrong.
        reason: &'static str,
    },
}

/// Why a record cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A field is over its size limit.
    #[error("{0} too long")]
    TooLong(&'static str),
    /// A list has too many entries.
    #[error("too many {0}")]
    TooMany(&'static str),
}

fn rd_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn rd_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn rd_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Bytes of the pad frame that takes position `end` to a page boundary
/// (0 when `end` is on one).
pub fn pad_len(end: u64) -> usize {
    let gap = ((PAD_ALIGN - end % PAD_ALIGN) % PAD_ALIGN) as usize;
    match gap {
        0 => 0,
        g if g < PAD_MIN_LEN => g + PAD_ALIGN as usize,
        g => g,
    }
}

/// Encodes a pad frame filling `out`.
pub fn encode_pad(out: &mut [u8]) {
    out.fill(0);
    out[0..4].copy_from_slice(&PAD_MAGIC.to_le_bytes());
    let len = out.len() as u32;
    out[4..8].copy_from_slice(&len.to_le_bytes());
    let crc = crate::crc::crc32c(&out[0..8]);
    out[8..12].copy_from_slice(&crc.to_le_bytes());
}

/// If `buf` starts with a pad frame, its length; checks its CRC.
pub fn parse_pad(buf: &[u8]) -> Option<Result<usize, FrameError>> {
    if buf.len() < 4 || rd_u32(buf, 0) != PAD_MAGIC {
        return None;
    }
    if buf.len() < PAD_MIN_LEN {
        return Some(Err(FrameError::Incomplete {
            needed: PAD_MIN_LEN,
        }));
    }
    if crate::crc::crc32c(&buf[0..8]) != rd_u32(buf, 8) {
        return Some(Err(FrameError::BadHeader("pad frame checksum mismatch")));
    }
    let len = rd_u32(buf, 4) as usize;
    if !(PAD_MIN_LEN..PAD_MIN_LEN + PAD_ALIGN as usize).contains(&len) {
        return Some(Err(FrameError::BadHeader("pad frame length out of range")));
    }
    Some(Ok(len))
}

/// Checks that a record fits the format's limits.
pub fn validate_record(r: &RecordIn) -> Result<(), EncodeError> {
    if r.key.as_ref().is_some_and(|k| k.len() > MAX_KEY_LEN) {
        return Err(EncodeError::TooLong("key"));
    }
    if r.tags.len() > usize::from(u16::MAX) {
        return Err(EncodeError::TooMany("tags"));
    }
    if r.headers.len() > usize::from(u16::MAX) {
        return Err(EncodeError::TooMany("headers"));
    }
    if r.tags.iter().any(|t| t.len() > usize::from(u16::MAX)) {
        return Err(EncodeError::TooLong("tag"));
    }
    if r.headers
        .iter()
        .any(|h| h.name.len() > usize::from(u16::MAX))
    {
        return Err(EncodeError::TooLong("header name"));
    }
    if r.headers.iter().any(|h| h.value.len() > u32::MAX as usize) {
        return Err(EncodeError::TooLong("header value"));
    }
    if body_len(r) > u32::MAX as usize / 2 {
        return Err(EncodeError::TooLong("record"));
    }
    Ok(())
}

fn body_len(r: &RecordIn) -> usize {
    let key = r.key.as_ref().map_or(0, |k| k.len());
    let tags: usize = r.tags.iter().map(|t| 2 + t.len()).sum();
    let headers: usize = r
        .headers
        .iter()
        .map(|h| 6 + h.name.len() + h.value.len())
        .sum();
    8 + 4 + key + 2 + tags + 2 + headers + r.payload.len()
}

/// The encoded size of one record, frame included.
pub fn record_len(r: &RecordIn) -> usize {
    RECORD_FRAME_LEN + body_len(r)
}

/// The encoded size of a batch of records.
pub fn batch_len(records: &[RecordIn]) -> usize {
    BATCH_HEADER_LEN + records.iter().map(record_len).sum::<usize>()
}

/// Where and how a batch is stamped.
#[derive(Debug, Clone, Copy)]
pub struct BatchStamp {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Timestamp given to every record.
    pub timestamp: u64,
    /// The segment's write generation.
    pub generation: u32,
}

/// Encodes a batch into `out`, which must be exactly [`batch_len`] bytes.
/// The records must have passed [`validate_record`].
pub fn encode_batch(out: &mut [u8], stamp: BatchStamp, records: &[RecordIn]) {
    debug_assert_eq!(out.len(), batch_len(records));
    let mut at = BATCH_HEADER_LEN;
    for r in records {
        at += encode_record(&mut out[at..], stamp.timestamp, r);
    }
    let h = &mut out[..BATCH_HEADER_LEN];
    h[0..4].copy_from_slice(&BATCH_MAGIC.to_le_bytes());
    h[8..12].copy_from_slice(&(at as u32).to_le_bytes());
    h[12..16].copy_from_slice(&(records.len() as u32).to_le_bytes());
    h[16..24].copy_from_slice(&stamp.base_offset.to_le_bytes());
    h[24..32].copy_from_slice(&stamp.timestamp.to_le_bytes());
    h[32..40].copy_from_slice(&stamp.timestamp.to_le_bytes());
    h[40..44].copy_from_slice(&stamp.generation.to_le_bytes());
    h[44..48].copy_from_slice(&0u32.to_le_bytes());
    let crc = crate::crc::crc32c(&h[8..BATCH_HEADER_LEN]);
    h[4..8].copy_from_slice(&crc.to_le_bytes());
}

struct Writer<'a> {
    out: &'a mut [u8],
    at: usize,
}

impl Writer<'_> {
    fn put(&mut self, bytes: &[u8]) {
        self.out[self.at..self.at + bytes.len()].copy_from_slice(bytes);
        self.at += bytes.len();
    }
}

fn encode_record(out: &mut [u8], timestamp: u64, r: &RecordIn) -> usize {
    let body = body_len(r);
    let mut w = Writer {
        out: &mut out[..RECORD_FRAME_LEN + body],
        at: RECORD_FRAME_LEN,
    };
    w.put(&timestamp.to_le_bytes());
    match &r.key {
        Some(k) => {
            w.put(&(k.len() as i32).to_le_bytes());
            w.put(k);
        }
        None => w.put(&(-1i32).to_le_bytes()),
    }
    w.put(&(r.tags.len() as u16).to_le_bytes());
    for t in &r.tags {
        w.put(&(t.len() as u16).to_le_bytes());
        w.put(t.as_bytes());
    }
    w.put(&(r.headers.len() as u16).to_le_bytes());
    for h in &r.headers {
        w.put(&(h.name.len() as u16).to_le_bytes());
        w.put(h.name.as_bytes());
        w.put(&(h.value.len() as u32).to_le_bytes());
        w.put(&h.value);
    }
    w.put(&r.payload);
    let crc = crate::crc::crc32c(&w.out[RECORD_FRAME_LEN..]);
    w.out[0..4].copy_from_slice(&(body as u32).to_le_bytes());
    w.out[4..8].copy_from_slice(&crc.to_le_bytes());
    RECORD_FRAME_LEN + body
}

/// Decodes and checks the batch header at the start of `buf`.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader, FrameError> {
    if buf.len() < 4 {
        return Err(FrameError::Incomplete { needed: 4 });
    }
    match rd_u32(buf, 0) {
        0 => return Err(FrameError::End),
        BATCH_MAGIC => {}
        other => return Err(FrameError::BadMagic(other)),
    }
    if buf.len() < BATCH_HEADER_LEN {
        return Err(FrameError::Incomplete {
            needed: BATCH_HEADER_LEN,
        });
    }
    if crate::crc::crc32c(&buf[8..BATCH_HEADER_LEN]) != rd_u32(buf, 4) {
        return Err(FrameError::HeaderCrc);
    }
    let h = BatchHeader {
        batch_len: rd_u32(buf, 8),
        record_count: rd_u32(buf, 12),
        base_offset: rd_u64(buf, 16),
        first_ts: rd_u64(buf, 24),
        max_ts: rd_u64(buf, 32),
        generation: rd_u32(buf, 40),
    };
    let min_len = BATCH_HEADER_LEN as u64 + u64::from(h.record_count) * RECORD_FRAME_LEN as u64;
    if u64::from(h.batch_len) < min_len || h.record_count == 0 {
        return Err(FrameError::BadHeader("length too small for its records"));
    }
    if h.max_ts < h.first_ts {
        return Err(FrameError::BadHeader("max timestamp before first"));
    }
    Ok(h)
}

/// Walks the record frames of a whole batch (`buf` holds exactly the batch),
/// checking every CRC; calls `f(index, body)` for each record.
fn for_each_body(
    buf: &[u8],
    h: &BatchHeader,
    mut f: impl FnMut(u32, &[u8], usize) -> Result<(), FrameError>,
) -> Result<(), FrameError> {
    let mut at = BATCH_HEADER_LEN;
    for index in 0..h.record_count {
        if buf.len() < at + RECORD_FRAME_LEN {
            return Err(FrameError::BadRecord {
                index,
                reason: "frame past the batch end",
            });
        }
        let len = rd_u32(buf, at) as usize;
        let crc = rd_u32(buf, at + 4);
        let start = at + RECORD_FRAME_LEN;
        if buf.len() - start < len {
            return Err(FrameError::BadRecord {
                index,
                reason: "body past the batch end",
            });
        }
        let body = &buf[start..start + len];
        if crate::crc::crc32c(body) != crc {
            return Err(FrameError::RecordCrc { index });
        }
        f(index, body, start)?;
        at = start + len;
    }
    if at != buf.len() {
        return Err(FrameError::BadHeader("records do not fill the batch"));
    }
    Ok(())
}

/// Checks every record CRC of a whole batch without decoding the records.
pub fn verify_batch(buf: &[u8], h: &BatchHeader) -> Result<(), FrameError> {
    for_each_body(buf, h, |_, _, _| Ok(()))
}

/// Decodes the records of a whole batch held in `buf` (exactly the batch)
/// whose offsets are at least `from`; payloads share `buf`'s memory.
pub fn decode_batch(
    buf: &Bytes,
    h: &BatchHeader,
    from: u64,
    out: &mut Vec<Record>,
) -> Result<(), FrameError> {
    let mut decoded = Vec::with_capacity(h.record_count as usize);
    for_each_body(buf, h, |index, body, start| {
        let offset = h.base_offset + u64::from(index);
        if offset >= from {
            let body = buf.slice(start..start + body.len());
            decoded.push(
                decode_body(&body, offset)
                    .map_err(|reason| FrameError::BadRecord { index, reason })?,
            );
        }
        Ok(())
    })?;
    out.append(&mut decoded);
    Ok(())
}

struct Cursor<'a> {
    body: &'a Bytes,
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<Bytes, &'static str> {
        if self.body.len() - self.at < n {
            return Err("field past the record end");
        }
        let b = self.body.slice(self.at..self.at + n);
        self.at += n;
        Ok(b)
    }

    fn u16(&mut self) -> Result<u16, &'static str> {
        self.take(2).map(|b| rd_u16(&b, 0))
    }

    fn u32(&mut self) -> Result<u32, &'static str> {
        self.take(4).map(|b| rd_u32(&b, 0))
    }

    fn string(&mut self) -> Result<String, &'static str> {
        let len = usize::from(self.u16()?);
        let b = self.take(len)?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8")
    }
}

fn decode_body(body: &Bytes, offset: u64) -> Result<Record, &'static str> {
    let mut c = Cursor { body, at: 0 };
    let timestamp = c.take(8).map(|b| rd_u64(&b, 0))?;
    let key_len = c.u32()? as i32;
    let key = match key_len {
        -1 => None,
        n if n >= 0 => Some(c.take(n as usize)?),
        _ => return Err("negative key length"),
    };
    let tag_count = c.u16()?;
    let tags = (0..tag_count)
        .map(|_| c.string())
        .collect::<Result<Vec<_>, _>>()?;
    let header_count = c.u16()?;
    let mut headers = Vec::with_capacity(usize::from(header_count));
    for _ in 0..header_count {
        let name = c.string()?;
        let len = c.u32()? as usize;
        headers.push(Header {
            name,
            value: c.take(len)?,
        });
    }
    let payload = body.slice(c.at..);
    Ok(Record {
        offset,
        timestamp,
        key,
        tags,
        headers,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(i: usize) -> RecordIn {
        RecordIn {
            key: i.is_multiple_of(2).then(|| Bytes::from(format!("key-{i}"))),
            tags: vec!["a".into(), format!("t{i}")],
            headers: vec![Header {
                name: "h".into(),
                value: Bytes::from_static(b"v"),
            }],
            payload: Bytes::from(vec![i as u8; i * 7]),
        }
    }

    fn encode(records: &[RecordIn], base: u64) -> Vec<u8> {
        let mut buf = vec![0u8; batch_len(records)];
        let stamp = BatchStamp {
            base_offset: base,
            timestamp: 1234,
            generation: 3,
        };
        encode_batch(&mut buf, stamp, records);
        buf
    }

    #[test]
    fn batch_round_trips() {
        let records: Vec<_> = (0..5).map(sample).collect();
        let buf = Bytes::from(encode(&records, 100));
        let h = parse_header(&buf).unwrap();
        assert_eq!(h.base_offset, 100);
        assert_eq!(h.record_count, 5);
        assert_eq!(h.generation, 3);
        assert_eq!(h.batch_len as usize, buf.len());
        let mut out = Vec::new();
        decode_batch(&buf, &h, 102, &mut out).unwrap();
        assert_eq!(out.len(), 3);
        for (r, want) in out.iter().zip(&records[2..]) {
            assert_eq!(r.key, want.key);
            assert_eq!(r.tags, want.tags);
            assert_eq!(r.headers, want.headers);
            assert_eq!(r.payload, want.payload);
            assert_eq!(r.timestamp, 1234);
        }
        assert_eq!(out[0].offset, 102);
    }

    #[test]
    fn zero_bytes_end_the_log() {
        assert_eq!(parse_header(&[0u8; 64]), Err(FrameError::End));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let records: Vec<_> = (0..3).map(sample).collect();
        let good = encode(&records, 7);
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x5a;
            let bad = Bytes::from(bad);
            let detected = match parse_header(&bad) {
                Err(_) => true,
                Ok(h) if h.batch_len as usize != bad.len() => true,
                Ok(h) => decode_batch(&bad, &h, 0, &mut Vec::new()).is_err(),
            };
            assert!(detected, "flip at byte {i} went unnoticed");
        }
    }

    #[test]
    fn truncated_batch_is_incomplete_or_invalid() {
        let records: Vec<_> = (0..3).map(sample).collect();
        let good = encode(&records, 0);
        assert!(matches!(
            parse_header(&good[..20]),
            Err(FrameError::Incomplete { .. })
        ));
        let h = parse_header(&good).unwrap();
        assert!(verify_batch(&good[..good.len() - 1], &h).is_err());
    }

    #[test]
    fn pads_reach_the_next_page_and_check() {
        for end in [0u64, 1, 4000, 4085, 4090, 4095, 4096, 5000] {
            let len = pad_len(end);
            assert_eq!((end + len as u64) % PAD_ALIGN, 0, "end {end}");
            assert!(len == 0 || len >= PAD_MIN_LEN);
            if len > 0 {
                let mut buf = vec![1u8; len];
                encode_pad(&mut buf);
                assert_eq!(parse_pad(&buf), Some(Ok(len)));
                buf[5] ^= 1;
                assert!(matches!(parse_pad(&buf), Some(Err(_))));
            }
        }
        assert_eq!(parse_pad(&[0u8; 16]), None);
    }

    #[test]
    fn oversized_fields_are_refused() {
        let r = RecordIn {
            key: Some(Bytes::from(vec![0u8; MAX_KEY_LEN + 1])),
            ..RecordIn::default()
        };
        assert_eq!(validate_record(&r), Err(EncodeError::TooLong("key")));
    }
}
