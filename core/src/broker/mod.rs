//! The broker of one core, with no I/O: it owns the sessions whose client
//! ids hash to this core (but for publishers moved to the core their
//! messages go to, see `affinity`), the topic trie of their subscriptions, a replica
//! of the route index (filter -> cores) and of the retained messages, and
//! the shared subscription groups that hash to this core.
//!
//! The runtime feeds it connections, packets, messages from other cores and
//! clock ticks; it answers with packets per connection
//! ([`CoreBroker::take_output`]) and messages for other cores
//! ([`CoreBroker::take_core_messages`]). Because it does no I/O, a test can
//! run several `CoreBroker`s side by side, passing their messages by hand
//! (see `tests/simulation.rs`).

mod affinity;
mod connect;
mod deadlines;
mod last_match;
pub mod mesh;
pub mod metrics;
mod pressure;
mod publish;
mod sessions;
pub mod shared;
mod subscribe;
mod sys;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::hash::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use robustmq_protocol::mqtt::{Packet, ProtocolVersion, SubscriptionOptions};

pub use affinity::MovedSession;
pub use connect::{owner_core, route_connect, ConnectRoute};
use mesh::{CoreMsg, Outbox};
use metrics::Metrics;
pub use sessions::SessionKey;
use sessions::SessionTable;
use shared::SharedGroups;

use crate::acl::Acl;
use crate::config::MqttConfig;
use crate::message::SharedMessage;
use crate::router::{RetainedStore, TopicTrie};
use crate::session::{Outgoing, Session};

/// A connection's id, unique on its core.
pub type ConnId = u64;

/// What a core's broker knows of its place in the process.
#[derive(Debug, Clone)]
pub struct BrokerContext {
    /// This node's id (for `$SYS/brokers/<node>/...`).
    pub node_id: u64,
    /// This core's index.
    pub core: usize,
    /// How many cores run the broker.
    pub cores: usize,
    /// The `[mqtt]` configuration.
    pub config: Arc<MqttConfig>,
    /// The compiled ACL.
    pub acl: Arc<Acl>,
    /// Counters shared by all cores.
    pub metrics: Arc<Metrics>,
    /// When the broker started, for uptime.
    pub started: Instant,
}

/// A subscriber in this core's trie: a client of this core, or a shared
/// group this core owns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SubKey {
    /// A client's own subscription, by its session's key (the session
    /// removes its subscriptions when it ends).
    Client(SessionKey),
    /// A shared subscription group, by `group/filter`.
    Group(ByteString),
}

/// The options of a trie entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SubValue {
    /// Subscription options (unused for groups).
    pub options: SubscriptionOptions,
    /// Subscription identifier.
    pub id: Option<u32>,
}

/// A will message waiting for its delay.
#[derive(Debug, Clone)]
struct PendingWill {
    message: SharedMessage,
    at: Instant,
}

/// A session and what the broker keeps beside it.
#[derive(Debug)]
struct SessionEntry {
    session: Session,
    conn: Option<ConnId>,
    /// When an offline session expires.
    expires_at: Option<Instant>,
    /// The will of the current connection.
    will: Option<SharedMessage>,
    /// Will delay of the current connection's will, in seconds.
    will_delay: u32,
    /// Whether the client accepts reason strings beyond CONNACK and
    /// DISCONNECT (5.0 Request Problem Information).
    problem_information: bool,
    username: Option<ByteString>,
    /// The client's address, known only when an ACL rule names addresses
    /// (boxed: 8 bytes instead of 17 in every session, see
    /// `a_session_entry_stays_within_376_bytes`).
    ip: Option<Box<IpAddr>>,
    /// Its connection is in the broker's dirty set: a delivery or an
    /// acknowledgement need not insert it again (a set insert per message
    /// was 3% of the broker's instructions in fan-in). Cleared when the
    /// set is taken and when the connection changes.
    dirty: bool,
    /// Where its client's messages went this window (see `affinity`).
    tally: affinity::Tally,
}

impl SessionEntry {
    /// A session not attached to any connection.
    fn new(session: Session) -> Self {
        SessionEntry {
            session,
            conn: None,
            expires_at: None,
            will: None,
            will_delay: 0,
            problem_information: true,
            username: None,
            ip: None,
            dirty: false,
            tally: affinity::Tally::default(),
        }
    }

    /// Marks its connection as having output, in `dirty` unless it is
    /// there already.
    fn mark_dirty(&mut self, dirty: &mut HashSet<ConnId>) {
        if let (Some(conn), false) = (self.conn, self.dirty) {
            self.dirty = true;
            dirty.insert(conn);
        }
    }
}

/// A connection on this core.
#[derive(Debug)]
struct ConnEntry {
    /// The session attached, which outlives or ends with the connection.
    /// Its client id is the session's, not kept here too (16 bytes a
    /// connection).
    session: SessionKey,
    version: ProtocolVersion,
}

/// What to write to a connection.
#[derive(Debug, Default, PartialEq)]
pub struct ConnOutput {
    /// Packets in order.
    pub packets: Vec<Outgoing>,
    /// Close the connection after writing them.
    pub close: bool,
}

impl ConnOutput {
    /// The packets as `Packet`s (tests, logs).
    pub fn to_packets(&self) -> Vec<Packet> {
        self.packets.iter().map(Outgoing::to_packet).collect()
    }
}

/// A SUBACK held back until the routes it depends on are in place on every
/// core, with the filters whose retained messages follow it (looked up
/// when it is sent, once every other core has answered: by then this
/// core's replica holds whatever they had retained before).
#[derive(Debug)]
struct PendingSubAck {
    client_id: ByteString,
    conn: ConnId,
    packet: Packet,
    retained: Vec<RetainedWanted>,
    route_seq: u64,
    share_tokens: usize,
}

/// A filter of a SUBSCRIBE whose retained messages are to be sent.
#[derive(Debug)]
struct RetainedWanted {
    filter: ByteString,
    options: robustmq_protocol::mqtt::SubscriptionOptions,
    id: Option<u32>,
}

/// The broker of one core.
#[derive(Debug)]
pub struct CoreBroker {
    ctx: BrokerContext,
    sessions: SessionTable,
    conns: HashMap<ConnId, ConnEntry>,
    /// Packets for connections being closed, written before the close.
    closing: HashMap<ConnId, Vec<Outgoing>>,
    trie: TopicTrie<SubKey, SubValue>,
    routes: TopicTrie<usize, ()>,
    retained: RetainedStore,
    groups: SharedGroups,
    outbox: Outbox,
    dirty: HashSet<ConnId>,
    wills: HashMap<ByteString, PendingWill>,
    route_seq: u64,
    route_acked: Vec<u64>,
    /// Share joins to confirm once this core's route updates up to the
    /// sequence number are acknowledged by every other core:
    /// (seq, member core, token).
    after_routes: VecDeque<(u64, usize, u64)>,
    pending_subacks: HashMap<u64, PendingSubAck>,
    share_tokens: HashMap<u64, u64>,
    next_token: u64,
    random: u64,
    sys_next: Instant,
    pressure: pressure::Pressure,
    /// What the last message's topic matched here, and where it is routed.
    last_match: last_match::LastMatch,
    last_route: last_match::LastRoute,
    /// Connections with a keep-alive, by when to look at them next.
    keep_alive_due: deadlines::Deadlines<ConnId>,
    /// Offline sessions with an expiry, by when it comes.
    expiry_due: deadlines::Deadlines<ByteString>,
    /// Publishers moved to the core their messages go to.
    affinity: affinity::Affinity,
}

impl CoreBroker {
    /// A broker for one core.
    pub fn new(ctx: BrokerContext, now: Instant) -> Self {
        assert!(ctx.core < ctx.cores, "core index out of range");
        assert!(ctx.cores <= 128, "route masks hold at most 128 cores");
        let retained = RetainedStore::new(ctx.config.max_retained_messages);
        let cores = ctx.cores;
        let seed = 0x9E37_79B9_7F4A_7C15 ^ (ctx.core as u64 + 1);
        CoreBroker {
            sys_next: now,
            ctx,
            sessions: SessionTable::default(),
            conns: HashMap::default(),
            closing: HashMap::default(),
            trie: TopicTrie::new(),
            routes: TopicTrie::new(),
            retained,
            groups: SharedGroups::default(),
            outbox: Outbox::new(cores),
            dirty: HashSet::default(),
            wills: HashMap::default(),
            route_seq: 0,
            route_acked: vec![0; cores],
            after_routes: VecDeque::new(),
            pending_subacks: HashMap::default(),
            share_tokens: HashMap::default(),
            next_token: 1,
            random: seed,
            pressure: pressure::Pressure::new(cores),
            last_match: Default::default(),
            last_route: Default::default(),
            keep_alive_due: deadlines::Deadlines::new(now),
            expiry_due: deadlines::Deadlines::new(now),
            affinity: Default::default(),
        }
    }

    /// This core's index.
    pub fn core(&self) -> usize {
        self.ctx.core
    }

    /// The context.
    pub fn context(&self) -> &BrokerContext {
        &self.ctx
    }

    /// Connections open on this core.
    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Sessions owned by this core, online or not.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The protocol version of a connection.
    pub fn connection_version(&self, conn: ConnId) -> Option<ProtocolVersion> {
        self.conns.get(&conn).map(|c| c.version)
    }

    /// Connections with something to write or to close.
    pub fn take_dirty(&mut self) -> Vec<ConnId> {
        let mut dirty: Vec<ConnId> = self.dirty.drain().collect();
        for conn in &dirty {
            let session = self.conns.get(conn).map(|c| c.session);
            if let Some(entry) = session.and_then(|s| self.sessions.by_key_mut(s)) {
                entry.dirty = false;
            }
        }
        dirty.extend(self.closing.keys().copied());
        dirty.sort_unstable();
        dirty.dedup();
        dirty
    }

    /// What to write to a connection now.
    pub fn take_output(&mut self, conn: ConnId) -> ConnOutput {
        if let Some(packets) = self.closing.remove(&conn) {
            return ConnOutput {
                packets,
                close: true,
            };
        }
        let Some(entry) = self.conns.get(&conn) else {
            return ConnOutput {
                packets: Vec::new(),
                close: true,
            };
        };
        let packets = self
            .sessions
            .by_key_mut(entry.session)
            .map(|s| s.session.take_packets())
            .unwrap_or_default();
        ConnOutput {
            packets,
            close: false,
        }
    }

    /// Messages for other cores, by destination.
    pub fn take_core_messages(&mut self) -> Vec<(usize, Vec<CoreMsg>)> {
        self.tell_owners();
        self.outbox.drain()
    }

    /// How many messages wait for other cores.
    pub fn core_backlog(&self) -> usize {
        self.outbox.len()
    }

    /// A message from another core.
    pub fn on_core_message(&mut self, from: usize, msg: CoreMsg, now: Instant) {
        match msg {
            CoreMsg::Publish(batch) => {
                for message in batch {
                    self.deliver_local(&message, now);
                }
            }
            CoreMsg::Retain(message) => {
                self.retained.apply(message);
            }
            CoreMsg::RouteAdd { filter, core, seq } => {
                self.routes.insert(&filter, core, ());
                self.outbox.push(from, CoreMsg::RouteAck { core, seq });
            }
            CoreMsg::RouteRemove { filter, core, seq } => {
                self.routes.remove(&filter, &core);
                self.outbox.push(from, CoreMsg::RouteAck { core, seq });
            }
            CoreMsg::Sync { core, seq } => {
                self.outbox.push(from, CoreMsg::RouteAck { core, seq });
            }
            CoreMsg::RouteAck { core, seq } => {
                debug_assert_eq!(core, self.ctx.core);
                self.route_acked[from] = self.route_acked[from].max(seq);
                self.release_after_routes(now);
            }
            CoreMsg::ShareJoin { key, member, token } => {
                let core = member.core;
                self.share_join(key, member);
                self.after_routes.push_back((self.route_seq, core, token));
                self.release_after_routes(now);
            }
            CoreMsg::ShareJoined { token } => self.share_joined(token, now),
            CoreMsg::ShareLeave { key, client_id } => self.share_leave(&key, &client_id),
            CoreMsg::ShareDeliver {
                client_id,
                message,
                options,
                subscription_id,
            } => {
                self.deliver_to_client(&client_id, &message, options, subscription_id, now);
            }
            CoreMsg::Hold { conn, hold } => self.on_remote_hold(from, conn, hold),
            CoreMsg::HoldsApplied { count } => self.on_holds_applied(from, count),
            CoreMsg::SessionGone { client_id } => self.on_session_gone(from, &client_id),
        }
    }

    /// A small fast random number (xorshift), for shared subscriptions.
    fn next_random(&mut self) -> u64 {
        let mut x = self.random;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.random = x;
        x
    }

    /// The client id of a connection's session.
    fn conn_client_id(&self, conn: ConnId) -> Option<ByteString> {
        let session = self.conns.get(&conn)?.session;
        Some(self.sessions.by_key(session)?.session.client_id().clone())
    }

    fn metrics(&self) -> &metrics::CoreMetrics {
        self.ctx.metrics.core(self.ctx.core)
    }
}
