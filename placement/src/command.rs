//! The commands that go through the Raft log, and their binary encoding.
//!
//! Every write is one [`Txn`]: checks on current values, then operations
//! applied only when every check holds. A plain put is a transaction with no
//! checks. The encoding is private to the placement members (they all run the
//! same version of this code); the leading version byte allows a change later.

const VERSION: u8 = 1;

/// A condition a transaction needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// The key has no value.
    Absent(Vec<u8>),
    /// The key has a value.
    Present(Vec<u8>),
    /// The key has exactly this value.
    Equals(Vec<u8>, Vec<u8>),
}

/// A change to the state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets a key.
    Put(Vec<u8>, Vec<u8>),
    /// Removes a key.
    Delete(Vec<u8>),
    /// Removes every key starting with the prefix.
    DeletePrefix(Vec<u8>),
}

/// A conditional batch of operations: the unit of a Raft write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// Conditions that must all hold.
    pub checks: Vec<Check>,
    /// Applied, in order, when they do.
    pub ops: Vec<Op>,
}

impl Txn {
    /// A single unconditional put.
    pub fn put(key: Vec<u8>, value: Vec<u8>) -> Self {
        Txn {
            checks: vec![],
            ops: vec![Op::Put(key, value)],
        }
    }

    /// A single unconditional delete.
    pub fn delete(key: Vec<u8>) -> Self {
        Txn {
            checks: vec![],
            ops: vec![Op::Delete(key)],
        }
    }

    /// Encodes the transaction for a log entry.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![VERSION];
        put_u32(&mut out, self.checks.len());
        for c in &self.checks {
            match c {
                Check::Absent(k) => tagged(&mut out, 1, &[k]),
                Check::Present(k) => tagged(&mut out, 2, &[k]),
                Check::Equals(k, v) => tagged(&mut out, 3, &[k, v]),
            }
        }
        put_u32(&mut out, self.ops.len());
        for o in &self.ops {
            match o {
                Op::Put(k, v) => tagged(&mut out, 1, &[k, v]),
                Op::Delete(k) => tagged(&mut out, 2, &[k]),
                Op::DeletePrefix(p) => tagged(&mut out, 3, &[p]),
            }
        }
        out
    }

    /// Decodes a log entry; `None` when it is not a valid transaction.
    pub fn decode(data: &[u8]) -> Option<Txn> {
        let mut r = Reader(data);
        if r.u8()? != VERSION {
            return None;
        }
        let mut txn = Txn::default();
        for _ in 0..r.u32()? {
            let c = match r.u8()? {
                1 => Check::Absent(r.bytes()?),
                2 => Check::Present(r.bytes()?),
                3 => Check::Equals(r.bytes()?, r.bytes()?),
                _ => return None,
            };
            txn.checks.push(c);
        }
        for _ in 0..r.u32()? {
            let o = match r.u8()? {
                1 => Op::Put(r.bytes()?, r.bytes()?),
                2 => Op::Delete(r.bytes()?),
                3 => Op::DeletePrefix(r.bytes()?),
                _ => return None,
            };
            txn.ops.push(o);
        }
        r.0.is_empty().then_some(txn)
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_le_bytes());
}

fn tagged(out: &mut Vec<u8>, tag: u8, fields: &[&Vec<u8>]) {
    out.push(tag);
    for f in fields {
        put_u32(out, f.len());
        out.extend_from_slice(f);
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Option<u8> {
        let (b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(*b)
    }

    fn u32(&mut self) -> Option<u32> {
        let b = self.0.get(..4)?;
        self.0 = &self.0[4..];
        Some(u32::from_le_bytes(b.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let n = self.u32()? as usize;
        let b = self.0.get(..n)?.to_vec();
        self.0 = &self.0[n..];
        Some(b)
    }
}

/// Who proposed an entry: the proposing member and its request number, so
/// that member can answer its caller when the entry is applied.
pub fn encode_origin(node_id: u64, seq: u64) -> Vec<u8> {
    let mut ctx = Vec::with_capacity(16);
    ctx.extend_from_slice(&node_id.to_le_bytes());
    ctx.extend_from_slice(&seq.to_le_bytes());
    ctx
}

/// The inverse of [`encode_origin`].
pub fn decode_origin(ctx: &[u8]) -> Option<(u64, u64)> {
    if ctx.len() != 16 {
        return None;
    }
    let node = u64::from_le_bytes(ctx[..8].try_into().ok()?);
    let seq = u64::from_le_bytes(ctx[8..].try_into().ok()?);
    Some((node, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txn_round_trips() {
        let t = Txn {
            checks: vec![
                Check::Absent(b"a".to_vec()),
                Check::Present(b"".to_vec()),
                Check::Equals(b"k".to_vec(), b"v".to_vec()),
            ],
            ops: vec![
                Op::Put(b"k".to_vec(), vec![0; 300]),
                Op::Delete(b"x".to_vec()),
                Op::DeletePrefix(b"p/".to_vec()),
            ],
        };
        assert_eq!(Txn::decode(&t.encode()), Some(t));
    }

    #[test]
    fn garbage_is_refused_without_panicking() {
        assert_eq!(Txn::decode(b""), None);
        assert_eq!(Txn::decode(&[1, 255, 255, 255, 255]), None);
        let mut ok = Txn::put(b"k".to_vec(), b"v".to_vec()).encode();
        ok.push(0);
        assert_eq!(Txn::decode(&ok), None);
        for cut in 0..ok.len() - 1 {
            assert_eq!(Txn::decode(&ok[..cut]), None);
        }
    }

    #[test]
    fn origin_round_trips() {
        assert_eq!(decode_origin(&encode_origin(3, 99)), Some((3, 99)));
        assert_eq!(decode_origin(b"short"), None);
    }
}
