//! What the last message's topic matched, kept for the next message.
//!
//! Consecutive messages usually share their topic: a read from a
//! publisher holds dozens of its messages, and a batch from another core
//! holds runs of them. Walking the trie for each was 5-10% of a core's
//! time in fan-in. A remembered match holds while the trie's version is
//! the one it was taken at (any subscribe or unsubscribe changes it) and
//! the topic (and, for No Local, the publisher) is the same.
//!
//! The topic and publisher are copied into buffers kept from message to
//! message rather than held by reference: a reference would keep the
//! whole read buffer they were decoded from alive.
//!
//! The match also applies the ACL to each client it finds: a subscription
//! allowed for its filter (`#`) may still be denied some of the topics it
//! matches (`secret/#`), so each client is checked for the topic itself,
//! once per match rather than once per message. Who a client is (user
//! name, address) changes only when it connects, and a connect forgets
//! the match ([`LastMatch::forget`]).

use bytestring::ByteString;
use robustmq_protocol::mqtt::SubscriptionOptions;

use super::sessions::{SessionKey, SessionTable};
use super::{SessionEntry, SubKey, SubValue};
use crate::acl::{Access, Acl, ClientInfo};
use crate::message::Message;
use crate::router::TopicTrie;

/// Entries the match keeps room for between messages (more are allocated
/// for a topic that needs them, and given back at the next refill).
const KEPT_CAPACITY: usize = 1024;

/// A client's deliveries for one message: its session, the options that
/// apply (highest QoS of its matching subscriptions), and the matching
/// subscription identifiers.
pub(super) type ClientMatch = (SessionKey, SubscriptionOptions, Vec<u32>);

/// The subscribers of this core a topic matched.
#[derive(Debug, Default)]
pub(super) struct LastMatch {
    /// The trie version it was taken at; `None` before the first match.
    version: Option<u64>,
    topic: String,
    publisher: String,
    /// One entry per client.
    pub(super) clients: Vec<ClientMatch>,
    /// Shared groups, by `group/filter` key.
    pub(super) groups: Vec<ByteString>,
}

impl LastMatch {
    /// Whether this is what `topic`, published by `publisher`, matches in
    /// the trie at `version`.
    pub(super) fn holds(&self, version: u64, topic: &str, publisher: &str) -> bool {
        self.version == Some(version) && self.topic == topic && self.publisher == publisher
    }

    /// Drops the match: the next message matches afresh.
    pub(super) fn forget(&mut self) {
        self.version = None;
    }

    /// Matches `message` in `trie`: one entry per client (the highest QoS
    /// of its subscriptions, every subscription identifier), except a
    /// client's own message on a No Local subscription and a client the
    /// ACL does not let read the topic.
    pub(super) fn refill(
        &mut self,
        trie: &TopicTrie<SubKey, SubValue>,
        sessions: &SessionTable,
        acl: &Acl,
        message: &Message,
    ) {
        let clients = &mut self.clients;
        let groups = &mut self.groups;
        clients.clear();
        groups.clear();
        // A topic once matched by a great many subscribers must not keep
        // its room for good (40 bytes an entry).
        if clients.capacity() > KEPT_CAPACITY {
            clients.shrink_to(KEPT_CAPACITY);
        }
        if groups.capacity() > KEPT_CAPACITY {
            groups.shrink_to(KEPT_CAPACITY);
        }
        trie.for_each_match(&message.topic, |key, sub| match key {
            SubKey::Client(id) => {
                if sub.options.no_local
                    && sessions
                        .by_key(*id)
                        .is_some_and(|e| *e.session.client_id() == message.publisher)
                {
                    return;
                }
                if !acl.is_empty()
                    && !sessions
                        .by_key(*id)
                        .is_some_and(|e| may_read(acl, e, &message.topic))
                {
                    return;
                }
                clients.push((*id, sub.options, sub.id.into_iter().collect()));
            }
            SubKey::Group(key) => groups.push(key.clone()),
        });
        merge_clients(clients);
        self.version = Some(trie.version());
        self.topic.clear();
        self.topic.push_str(&message.topic);
        self.publisher.clear();
        self.publisher.push_str(&message.publisher);
    }
}

/// Whether the ACL lets the client of `entry` receive messages on `topic`
/// (a `subscribe` rule applied to the topic name).
pub(super) fn may_read(acl: &Acl, entry: &SessionEntry, topic: &str) -> bool {
    let who = ClientInfo {
        client_id: entry.session.client_id(),
        username: entry.username.as_deref(),
        ip: entry.ip.as_deref().copied(),
    };
    let allowed = acl.check(&who, Access::Subscribe, topic);
    if !allowed {
        tracing::debug!(client_id = who.client_id, topic, "delivery denied by ACL");
    }
    allowed
}

/// Merges the entries of a client with several matching subscriptions
/// into one: the highest QoS, retain-as-published if any asks for it,
/// every subscription identifier. Sorted first, so that a topic matching
/// thousands of subscribers costs n log n, not n squared.
fn merge_clients(clients: &mut Vec<ClientMatch>) {
    if clients.len() < 2 {
        return;
    }
    clients.sort_unstable_by_key(|(key, _, _)| *key);
    let mut kept = 0;
    for i in 1..clients.len() {
        if clients[i].0 == clients[kept].0 {
            let (head, tail) = clients.split_at_mut(i);
            let (merged, other) = (&mut head[kept], &mut tail[0]);
            merged.1.qos = merged.1.qos.max(other.1.qos);
            merged.1.retain_as_published |= other.1.retain_as_published;
            merged.2.append(&mut other.2);
        } else {
            kept += 1;
            clients.swap(kept, i);
        }
    }
    clients.truncate(kept + 1);
}

/// The other cores a topic is routed to.
#[derive(Debug, Default)]
pub(super) struct LastRoute {
    /// The route index's version it was taken at; `None` before the first.
    pub(super) version: Option<u64>,
    pub(super) topic: String,
    /// One bit per core.
    pub(super) cores: u128,
}

#[cfg(test)]
mod tests {
    use super::*;
    use robustmq_protocol::mqtt::QoS;

    #[test]
    fn room_for_a_large_match_is_given_back_at_the_next_refill() {
        let mut sessions = SessionTable::default();
        let mut trie = TopicTrie::new();
        for i in 0..3000 {
            let id = format!("c{i}");
            let session = crate::session::Session::new(id.as_str().into(), Default::default());
            let key = sessions.insert(
                id.as_str().into(),
                Box::new(super::super::SessionEntry::new(session)),
            );
            trie.insert(
                if i == 0 { "small" } else { "big" },
                SubKey::Client(key),
                SubValue::default(),
            );
        }
        let message = |topic: &'static str| crate::message::Message {
            topic: topic.into(),
            payload: Default::default(),
            qos: robustmq_protocol::mqtt::QoS::AtMostOnce,
            retain: false,
            expires_at: None,
            properties: Default::default(),
            publisher: "p".into(),
            origin: None,
        };
        let mut last = LastMatch::default();
        let acl = Acl::default();
        last.refill(&trie, &sessions, &acl, &message("big"));
        assert_eq!(last.clients.len(), 2999);
        last.refill(&trie, &sessions, &acl, &message("small"));
        assert_eq!(last.clients.len(), 1);
        assert!(last.clients.capacity() <= KEPT_CAPACITY);
    }

    #[test]
    fn a_client_matched_twice_gets_one_entry_with_the_best_of_both() {
        let mut sessions = SessionTable::default();
        let mut key = |id: &str| {
            let session = crate::session::Session::new(id.into(), Default::default());
            sessions.insert(
                id.into(),
                Box::new(super::super::SessionEntry::new(session)),
            )
        };
        let (a, b, c) = (key("a"), key("b"), key("c"));
        let options = |qos, rap| SubscriptionOptions {
            qos,
            retain_as_published: rap,
            ..Default::default()
        };
        let mut clients = vec![
            (b, options(QoS::AtMostOnce, false), vec![]),
            (a, options(QoS::AtLeastOnce, false), vec![1]),
            (c, options(QoS::ExactlyOnce, true), vec![]),
            (a, options(QoS::AtMostOnce, true), vec![2]),
            (b, options(QoS::ExactlyOnce, false), vec![3]),
            (a, options(QoS::AtMostOnce, false), vec![]),
        ];
        merge_clients(&mut clients);
        clients.sort_by_key(|(k, _, _)| *k);
        for (_, _, ids) in &mut clients {
            ids.sort();
        }
        assert_eq!(
            clients,
            vec![
                (a, options(QoS::AtLeastOnce, true), vec![1, 2]),
                (b, options(QoS::ExactlyOnce, false), vec![3]),
                (c, options(QoS::ExactlyOnce, true), vec![]),
            ]
        );
    }
}
