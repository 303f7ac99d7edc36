//! The replicated state machine: one ordered map of byte keys to byte values.
//!
//! Every kind of metadata lives in it under its own key prefix (see
//! [`crate::keys`]): user KV pairs, registered nodes, journal shards and
//! segments, MQTT users, ACL rules, blacklist entries, connector and schema
//! configs, and the Raft members' addresses. Applying a [`Txn`] is
//! deterministic; the image encodes the whole map for snapshots.

use std::collections::BTreeMap;

use crate::command::{Check, Op, Txn};

/// What applying a transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Applied {
    /// Whether every check held (and so the operations ran).
    pub succeeded: bool,
    /// How many keys the operations removed.
    pub removed: u64,
}

/// The state machine.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StateMachine {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

/// An image that does not decode.
#[derive(Debug, thiserror::Error)]
#[error("corrupt state machine image: {0}")]
pub struct ImageError(&'static str);

impl StateMachine {
    /// Applies a transaction.
    pub fn apply(&mut self, txn: &Txn) -> Applied {
        if !txn.checks.iter().all(|c| self.holds(c)) {
            return Applied::default();
        }
        let mut removed = 0;
        for op in &txn.ops {
            match op {
                Op::Put(k, v) => {
                    self.map.insert(k.clone(), v.clone());
                }
                Op::Delete(k) => removed += u64::from(self.map.remove(k).is_some()),
                Op::DeletePrefix(p) => {
                    let keys: Vec<_> = self.range(p, usize::MAX).map(|(k, _)| k.clone()).collect();
                    removed += keys.len() as u64;
                    for k in keys {
                        self.map.remove(&k);
                    }
                }
            }
        }
        Applied {
            succeeded: true,
            removed,
        }
    }

    fn holds(&self, check: &Check) -> bool {
        match check {
            Check::Absent(k) => !self.map.contains_key(k),
            Check::Present(k) => self.map.contains_key(k),
            Check::Equals(k, v) => self.map.get(k) == Some(v),
        }
    }

    /// The value of a key.
    pub fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.map.get(key)
    }

    /// Up to `limit` pairs whose key starts with `prefix`, in key order.
    pub fn range<'a>(
        &'a self,
        prefix: &'a [u8],
        limit: usize,
    ) -> impl Iterator<Item = (&'a Vec<u8>, &'a Vec<u8>)> + 'a {
        self.map
            .range(prefix.to_vec()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .take(limit)
    }

    /// Sets a key directly (membership bookkeeping applied from conf changes).
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.map.insert(key, value);
    }

    /// Removes a key directly.
    pub fn remove(&mut self, key: &[u8]) {
        self.map.remove(key);
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Encodes the whole map: `[u64 count]` then `[u32 klen][key][u32 vlen][value]`.
    pub fn image(&self) -> Vec<u8> {
        let size: usize = self.map.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
        let mut out = Vec::with_capacity(8 + size);
        out.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        for (k, v) in &self.map {
            out.extend_from_slice(&(k.len() as u32).to_le_bytes());
            out.extend_from_slice(k);
            out.extend_from_slice(&(v.len() as u32).to_le_bytes());
            out.extend_from_slice(v);
        }
        out
    }

    /// Decodes an image made by [`StateMachine::image`]. An empty image is an
    /// empty map.
    pub fn from_image(mut data: &[u8]) -> Result<Self, ImageError> {
        let mut map = BTreeMap::new();
        if data.is_empty() {
            return Ok(StateMachine { map });
        }
        let count = take(&mut data, 8).ok_or(ImageError("no count"))?;
        let count = u64::from_le_bytes(count.try_into().map_err(|_| ImageError("count"))?);
        for _ in 0..count {
            let k = take_field(&mut data).ok_or(ImageError("truncated key"))?;
            let v = take_field(&mut data).ok_or(ImageError("truncated value"))?;
            map.insert(k.to_vec(), v.to_vec());
        }
        if !data.is_empty() {
            return Err(ImageError("trailing bytes"));
        }
        Ok(StateMachine { map })
    }
}

fn take<'a>(data: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let head = data.get(..n)?;
    *data = &data[n..];
    Some(head)
}

fn take_field<'a>(data: &mut &'a [u8]) -> Option<&'a [u8]> {
    let len = u32::from_le_bytes(take(data, 4)?.try_into().ok()?) as usize;
    take(data, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Vec<u8> {
        s.as_bytes().to_vec()
    }

    #[test]
    fn put_get_delete() {
        let mut sm = StateMachine::default();
        assert!(sm.apply(&Txn::put(b("a"), b("1"))).succeeded);
        assert_eq!(sm.get(b"a"), Some(&b("1")));
        assert_eq!(sm.apply(&Txn::delete(b("a"))).removed, 1);
        assert_eq!(sm.apply(&Txn::delete(b("a"))).removed, 0);
        assert_eq!(sm.get(b"a"), None);
    }

    #[test]
    fn failed_check_changes_nothing() {
        let mut sm = StateMachine::default();
        sm.apply(&Txn::put(b("a"), b("1")));
        let t = Txn {
            checks: vec![Check::Equals(b("a"), b("2"))],
            ops: vec![Op::Put(b("a"), b("3")), Op::Put(b("b"), b("3"))],
        };
        assert!(!sm.apply(&t).succeeded);
        assert_eq!(sm.get(b"a"), Some(&b("1")));
        assert_eq!(sm.get(b"b"), None);
        let t = Txn {
            checks: vec![Check::Equals(b("a"), b("1")), Check::Absent(b("b"))],
            ops: vec![Op::Put(b("b"), b("3"))],
        };
        assert!(sm.apply(&t).succeeded);
        assert_eq!(sm.get(b"b"), Some(&b("3")));
    }

    #[test]
    fn prefix_range_and_delete() {
        let mut sm = StateMachine::default();
        for k in ["p/1", "p/2", "p/3", "q/1", "p"] {
            sm.apply(&Txn::put(b(k), b("v")));
        }
        let keys: Vec<_> = sm.range(b"p/", 10).map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![b("p/1"), b("p/2"), b("p/3")]);
        assert_eq!(sm.range(b"p/", 2).count(), 2);
        let t = Txn {
            checks: vec![],
            ops: vec![Op::DeletePrefix(b("p/"))],
        };
        assert_eq!(sm.apply(&t).removed, 3);
        assert_eq!(sm.len(), 2);
    }

    #[test]
    fn image_round_trips_and_rejects_garbage() {
        let mut sm = StateMachine::default();
        sm.apply(&Txn::put(b("a"), b("1")));
        sm.apply(&Txn::put(b(""), vec![]));
        sm.apply(&Txn::put(vec![0, 255], vec![7; 1000]));
        let img = sm.image();
        assert_eq!(StateMachine::from_image(&img).unwrap(), sm);
        assert!(StateMachine::from_image(&img[..img.len() - 1]).is_err());
        assert!(StateMachine::from_image(&[1, 2, 3]).is_err());
        assert!(StateMachine::from_image(&[]).unwrap().is_empty());
    }
}
