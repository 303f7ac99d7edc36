//! Retained messages: the last retained message of each topic.
//!
//! Every core holds a full replica of the index; the messages themselves
//! are `Arc`s shared by all replicas, so a replica costs an index entry,
//! not a payload. A subscribe then finds retained messages on its own core
//! with no scatter and gather (see docs/architecture.md).

use crate::hash::HashMap;
use std::time::Instant;

use bytestring::ByteString;
use robustmq_protocol::topic;

use crate::message::SharedMessage;

/// The retained messages of the broker.
#[derive(Debug, Default)]
pub struct RetainedStore {
    by_topic: HashMap<ByteString, SharedMessage>,
    max_messages: usize,
}

/// What a retained publish did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetainOutcome {
    /// Stored (new or replaced).
    Stored,
    /// An empty payload cleared the topic.
    Cleared,
    /// The store is full; the message was not retained.
    Full,
}

impl RetainedStore {
    /// A store holding at most `max_messages` topics.
    pub fn new(max_messages: usize) -> Self {
        RetainedStore {
            by_topic: HashMap::default(),
            max_messages,
        }
    }

    /// How many topics have a retained message.
    pub fn len(&self) -> usize {
        self.by_topic.len()
    }

    /// Whether nothing is retained.
    pub fn is_empty(&self) -> bool {
        self.by_topic.is_empty()
    }

    /// Sets, replaces or (empty payload) clears a topic's retained message.
    pub fn apply(&mut self, message: SharedMessage) -> RetainOutcome {
        if message.payload.is_empty() {
            self.by_topic.remove(&message.topic);
            return RetainOutcome::Cleared;
        }
        if !self.by_topic.contains_key(&message.topic) && self.by_topic.len() >= self.max_messages {
            return RetainOutcome::Full;
        }
        self.by_topic.insert(message.topic.clone(), message);
        RetainOutcome::Stored
    }

    /// The retained messages matching a filter, dropping expired ones.
    pub fn matching(&mut self, filter: &str, now: Instant) -> Vec<SharedMessage> {
        self.by_topic.retain(|_, m| !m.is_expired(now));
        if !topic::has_wildcard(filter) {
            return self.by_topic.get(filter).cloned().into_iter().collect();
        }
        self.by_topic
            .iter()
            .filter(|(t, _)| topic::matches(filter, t))
            .map(|(_, m)| m.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use robustmq_protocol::mqtt::QoS;

    use super::*;
    use crate::message::Message;

    fn retained(topic: &'static str, payload: &'static [u8]) -> SharedMessage {
        Arc::new(Message {
            topic: ByteString::from_static(topic),
            payload: Bytes::from_static(payload),
            qos: QoS::AtMostOnce,
            retain: true,
            expires_at: None,
            properties: Default::default(),
            publisher: ByteString::from_static("p"),
            origin: None,
        })
    }

    #[test]
    fn set_replace_clear_and_match() {
        let now = Instant::now();
        let mut store = RetainedStore::new(10);
        assert_eq!(store.apply(retained("a/b", b"1")), RetainOutcome::Stored);
        assert_eq!(store.apply(retained("a/b", b"2")), RetainOutcome::Stored);
        store.apply(retained("a/c", b"3"));
        store.apply(retained("$SYS/x", b"4"));
        assert_eq!(
            store.matching("a/b", now)[0].payload,
            Bytes::from_static(b"2")
        );
        assert_eq!(store.matching("a/+", now).len(), 2);
        assert_eq!(store.matching("#", now).len(), 2, "# skips $ topics");
        assert_eq!(store.apply(retained("a/b", b"")), RetainOutcome::Cleared);
        assert_eq!(store.matching("a/+", now).len(), 1);
    }

    #[test]
    fn bounded() {
        let mut store = RetainedStore::new(1);
        store.apply(retained("a", b"1"));
        assert_eq!(store.apply(retained("b", b"1")), RetainOutcome::Full);
        assert_eq!(store.apply(retained("a", b"2")), RetainOutcome::Stored);
    }
}
