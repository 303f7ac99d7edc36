//! The sessions of one core: a slab of slots addressed by [`SessionKey`],
//! and an index from client id to key.
//!
//! The hot paths (a delivery to a subscriber from the trie, a PUBACK from
//! a connection, the congestion state of a subscriber) hold a key, so they
//! reach a session by an array index: no hashing of the client id, no
//! string comparison, no reference count on the id's bytes per message (a
//! profile of fan-in at QoS 1 put those at 7-9% of the subscriber's core).
//! Cold paths (CONNECT, SUBSCRIBE, expiry, shared subscriptions, which
//! name clients across cores) look a session up by client id.
//!
//! A slot is reused after its session ends; its generation changes then,
//! so a key kept past the end of its session (in a deadline heap, a
//! message between cores) finds nothing rather than another session.

use bytestring::ByteString;

use super::SessionEntry;
use crate::hash::HashMap;

/// A session's place in its core's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    slot: u32,
    generation: u32,
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    /// Boxed: a slot stays 16 bytes, and growing the table moves pointers
    /// rather than whole sessions.
    entry: Option<Box<SessionEntry>>,
}

/// The sessions of one core.
#[derive(Debug, Default)]
pub(super) struct SessionTable {
    slots: Vec<Slot>,
    /// Slots without a session, reused last-freed first.
    free: Vec<u32>,
    by_client: HashMap<ByteString, SessionKey>,
}

impl SessionTable {
    /// How many sessions.
    pub(super) fn len(&self) -> usize {
        self.by_client.len()
    }

    /// The key of `client_id`'s session.
    pub(super) fn key(&self, client_id: &str) -> Option<SessionKey> {
        self.by_client.get(client_id).copied()
    }

    /// The session with `key`, if it still exists.
    #[inline]
    pub(super) fn by_key(&self, key: SessionKey) -> Option<&SessionEntry> {
        let slot = self.slots.get(key.slot as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.entry.as_deref()
    }

    /// The session with `key`, if it still exists.
    #[inline]
    pub(super) fn by_key_mut(&mut self, key: SessionKey) -> Option<&mut SessionEntry> {
        let slot = self.slots.get_mut(key.slot as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        slot.entry.as_deref_mut()
    }

    /// `client_id`'s session.
    pub(super) fn get(&self, client_id: &str) -> Option<&SessionEntry> {
        self.by_key(self.key(client_id)?)
    }

    /// `client_id`'s session.
    pub(super) fn get_mut(&mut self, client_id: &str) -> Option<&mut SessionEntry> {
        let key = self.key(client_id)?;
        self.by_key_mut(key)
    }

    /// Adds a session for a client that has none; returns its key.
    pub(super) fn insert(&mut self, client_id: ByteString, entry: Box<SessionEntry>) -> SessionKey {
        assert!(
            !self.by_client.contains_key(&client_id),
            "a client has one session"
        );
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                let slot = u32::try_from(self.slots.len()).expect("fewer than 2^32 sessions");
                self.slots.push(Slot {
                    generation: 0,
                    entry: None,
                });
                slot
            }
        };
        let s = &mut self.slots[slot as usize];
        debug_assert!(s.entry.is_none(), "a free slot is empty");
        s.entry = Some(entry);
        let key = SessionKey {
            slot,
            generation: s.generation,
        };
        self.by_client.insert(client_id, key);
        key
    }

    /// Removes `client_id`'s session; returns its key (now stale) and it.
    pub(super) fn remove(&mut self, client_id: &str) -> Option<(SessionKey, Box<SessionEntry>)> {
        let key = self.by_client.remove(client_id)?;
        let s = &mut self.slots[key.slot as usize];
        debug_assert_eq!(s.generation, key.generation, "the index holds live keys");
        let entry = s.entry.take().expect("an indexed slot holds a session");
        s.generation = s.generation.wrapping_add(1);
        self.free.push(key.slot);
        Some((key, entry))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{Session, SessionConfig};

    fn entry(id: &str) -> Box<SessionEntry> {
        Box::new(SessionEntry::new(Session::new(
            ByteString::from(id),
            SessionConfig::default(),
        )))
    }

    #[test]
    fn a_stale_key_finds_nothing_after_its_slot_is_reused() {
        let mut table = SessionTable::default();
        let a = table.insert("a".into(), entry("a"));
        let b = table.insert("b".into(), entry("b"));
        assert_ne!(a, b);
        assert_eq!(table.by_key(a).unwrap().session.client_id(), "a");
        let (removed, _) = table.remove("a").unwrap();
        assert_eq!(removed, a);
        assert!(table.by_key(a).is_none());
        assert!(table.get("a").is_none());
        // "c" takes "a"'s slot, with a new generation.
        let c = table.insert("c".into(), entry("c"));
        assert!(table.by_key(a).is_none(), "a's key must not reach c");
        assert_eq!(table.by_key(c).unwrap().session.client_id(), "c");
        assert_eq!(table.get("b").unwrap().session.client_id(), "b");
        assert_eq!(table.len(), 2);
        assert_eq!(table.key("c"), Some(c));
    }

    /// Measured: eight bytes more per session (384 instead of 376) cost
    /// 105 B of RSS per idle connection, 10,000 of them. A field added to
    /// `SessionEntry` must fit or pay that.
    #[test]
    fn a_session_entry_stays_within_376_bytes() {
        assert!(std::mem::size_of::<SessionEntry>() <= 376);
    }

    #[test]
    #[should_panic(expected = "a client has one session")]
    fn a_second_session_for_a_client_is_a_bug() {
        let mut table = SessionTable::default();
        table.insert("a".into(), entry("a"));
        table.insert("a".into(), entry("a"));
    }
}
