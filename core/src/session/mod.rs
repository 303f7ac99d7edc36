//! The per-client session state machine, with no I/O and no clock.
//!
//! A [`Session`] is what a client id owns on the broker: its subscriptions,
//! its outbound inflight window and queue, and its inbound QoS 2 state. It
//! outlives connections when the session expiry interval says so. While a
//! connection is attached, a [`Link`] holds what belongs to that connection
//! only: keep-alive, topic aliases both ways, the client's receive maximum
//! and maximum packet size.
//!
//! The broker feeds it packets, deliveries and the current time; it answers
//! with packets to send ([`Session::take_packets`]) and with decisions
//! (`Result`s carrying the reason code to disconnect with). Everything here
//! is deterministic and tested without sockets.

mod link;
mod outgoing;
#[cfg(test)]
mod tests;

use std::collections::VecDeque;

use crate::hash::{SessionMap, SessionSet};
use std::time::Instant;

use bytestring::ByteString;
use robustmq_protocol::mqtt::{
    Packet, PacketType, Properties, ProtocolVersion, Publish, QoS, ReasonCode, SubscriptionOptions,
};

pub use link::{Link, LinkParams};
pub use outgoing::{OutPublish, Outgoing};

use crate::message::SharedMessage;

/// What to do when a session's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DropPolicy {
    /// Drop the oldest queued message to make room.
    #[default]
    DropOldest,
    /// Drop the new message.
    DropNewest,
}

/// Limits of one session, from the broker configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The most QoS 1/2 messages sent and not yet acknowledged.
    pub max_inflight: u16,
    /// The most messages waiting behind the inflight window.
    pub max_queued: usize,
    /// What a full queue drops.
    pub drop_policy: DropPolicy,
    /// The receive maximum the broker announces: the most QoS 2 messages a
    /// client may have unreleased.
    pub receive_maximum: u16,
    /// The topic alias maximum the broker announces.
    pub topic_alias_maximum: u16,
    /// Whether QoS 0 messages are queued while the client is offline.
    pub queue_qos0_offline: bool,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            max_inflight: 32,
            max_queued: 1000,
            drop_policy: DropPolicy::DropOldest,
            receive_maximum: 32,
            topic_alias_maximum: 64,
            queue_qos0_offline: false,
        }
    }
}

/// A message on its way to this session's client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The message.
    pub message: SharedMessage,
    /// The QoS it is delivered with: the lower of published and granted.
    pub qos: QoS,
    /// The retain flag as delivered.
    pub retain: bool,
    /// The identifiers of the subscriptions it matched (5.0).
    pub subscription_ids: Vec<u32>,
}

/// A subscription of this session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    /// Its options.
    pub options: SubscriptionOptions,
    /// Its subscription identifier (5.0).
    pub id: Option<u32>,
}

#[derive(Debug, Clone)]
/// Where an outbound QoS 1/2 exchange stands.
enum Outbound {
    /// QoS 1 sent, waiting for PUBACK.
    Qos1Sent(Delivery),
    /// QoS 2 sent, waiting for PUBREC.
    Qos2Sent(Delivery),
    /// PUBREL sent, waiting for PUBCOMP.
    Qos2Released,
}

/// How an inbound PUBLISH is to be treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundPublish {
    /// A new message: route it, then acknowledge.
    New,
    /// A QoS 2 re-send of a message already received: acknowledge again,
    /// do not route it twice.
    Duplicate,
}

/// Counters of one session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionCounters {
    /// Messages dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Messages dropped because they expired before delivery.
    pub dropped_expired: u64,
    /// Messages dropped because they exceed the client's maximum packet size.
    pub dropped_too_large: u64,
    /// QoS 0 messages dropped because the client was offline.
    pub dropped_offline_qos0: u64,
}

/// One client id's session.
#[derive(Debug)]
pub struct Session {
    client_id: ByteString,
    /// Seconds the session outlives its connection; `u32::MAX` is forever.
    pub expiry_interval: u32,
    config: SessionConfig,
    subscriptions: SessionMap<ByteString, Subscription>,
    next_packet_id: u16,
    inflight: VecDeque<(u16, Outbound)>,
    queue: VecDeque<Delivery>,
    inbound_qos2: SessionSet<u16>,
    link: Option<Link>,
    out: Vec<Outgoing>,
    counters: SessionCounters,
}

impl Session {
    /// A new, empty session.
    pub fn new(client_id: ByteString, config: SessionConfig) -> Self {
        assert!(config.max_inflight > 0, "max_inflight must be positive");
        assert!(
            config.receive_maximum > 0,
            "receive_maximum must be positive"
        );
        Session {
            client_id,
            expiry_interval: 0,
            config,
            subscriptions: SessionMap::default(),
            next_packet_id: 1,
            inflight: VecDeque::new(),
            queue: VecDeque::new(),
            inbound_qos2: SessionSet::default(),
            link: None,
            out: Vec::new(),
            counters: SessionCounters::default(),
        }
    }

    /// The client id.
    pub fn client_id(&self) -> &ByteString {
        &self.client_id
    }

    /// Whether a connection is attached.
    pub fn is_connected(&self) -> bool {
        self.link.is_some()
    }

    /// The attached connection's state.
    pub fn link(&self) -> Option<&Link> {
        self.link.as_ref()
    }

    /// The protocol version of the attached connection.
    pub fn version(&self) -> Option<ProtocolVersion> {
        self.link.as_ref().map(|l| l.version)
    }

    /// The session's counters.
    pub fn counters(&self) -> SessionCounters {
        self.counters
    }

    /// Messages sent and not yet fully acknowledged.
    pub fn inflight_len(&self) -> usize {
        self.inflight.len()
    }

    /// Messages waiting behind the inflight window.
    pub fn queued_len(&self) -> usize {
        self.queue.len()
    }

    /// Whether the session holds nothing but its link: no subscription,
    /// no message in flight either way, none queued, no packet unsent.
    /// Such a session can move to another core whole (see the broker's
    /// `affinity` module).
    pub fn only_link_state(&self) -> bool {
        self.subscriptions.is_empty()
            && self.inflight.is_empty()
            && self.queue.is_empty()
            && self.inbound_qos2.is_empty()
            && self.out.is_empty()
    }

    /// The subscriptions, by filter.
    pub fn subscriptions(&self) -> &SessionMap<ByteString, Subscription> {
        &self.subscriptions
    }

    /// Adds or replaces a subscription; returns whether it existed.
    pub fn subscribe(&mut self, filter: ByteString, subscription: Subscription) -> bool {
        self.subscriptions.insert(filter, subscription).is_some()
    }

    /// Removes a subscription; returns whether it existed.
    pub fn unsubscribe(&mut self, filter: &str) -> bool {
        self.subscriptions.remove(filter).is_some()
    }

    /// Packets to send, in order. The caller encodes and writes them.
    pub fn take_packets(&mut self) -> Vec<Outgoing> {
        std::mem::take(&mut self.out)
    }

    /// Whether packets are waiting to be taken.
    pub fn has_packets(&self) -> bool {
        !self.out.is_empty()
    }

    /// Queues a packet to send (CONNACK, SUBACK, ... built by the broker).
    pub fn send(&mut self, packet: Packet) {
        self.push(Outgoing::from(packet));
    }

    fn push(&mut self, outgoing: Outgoing) {
        if self.link.is_some() {
            self.out.push(outgoing);
        }
    }

    fn reply(&mut self, kind: PacketType, packet_id: u16, reason: ReasonCode) {
        self.push(Outgoing::Reply {
            kind,
            packet_id,
            reason,
        });
    }

    /// Attaches a connection. The caller sends CONNACK next, then calls
    /// [`Session::resume`].
    pub fn attach(&mut self, params: LinkParams, now: Instant) {
        self.link = Some(Link::new(params, now));
        self.out.clear();
    }

    /// Sends unacknowledged messages again (DUP set, PUBREL for those past
    /// PUBREC), then fills the window from the queue.
    pub fn resume(&mut self, now: Instant) {
        let inflight = std::mem::take(&mut self.inflight);
        for (packet_id, state) in inflight {
            match &state {
                Outbound::Qos1Sent(d) | Outbound::Qos2Sent(d) => {
                    if !self.push_publish(d, packet_id, true, now) {
                        continue;
                    }
                }
                Outbound::Qos2Released => {
                    self.reply(PacketType::PubRel, packet_id, ReasonCode::SUCCESS);
                }
            }
            self.inflight.push_back((packet_id, state));
        }
        self.pump(now);
    }

    /// Every subscription filter, for cleaning up the router.
    pub fn drain_subscriptions(&mut self) -> Vec<(ByteString, Subscription)> {
        self.subscriptions.drain().collect()
    }

    /// Detaches the connection; the session keeps its state.
    pub fn detach(&mut self) {
        self.link = None;
        self.out.clear();
    }

    /// Records activity from the client (any packet) for keep-alive.
    pub fn touch(&mut self, now: Instant) {
        if let Some(link) = &mut self.link {
            link.last_activity = now;
        }
    }

    /// When the keep-alive runs out if nothing arrives (none without a
    /// connection or with keep-alive 0).
    pub fn keep_alive_deadline(&self) -> Option<Instant> {
        self.link.as_ref().and_then(Link::keep_alive_deadline)
    }

    /// Whether the client has been silent for more than 1.5 times its keep
    /// alive at `now`.
    pub fn keep_alive_expired(&self, now: Instant) -> bool {
        self.link
            .as_ref()
            .is_some_and(|l| l.keep_alive_expired(now))
    }

    /// Checks an inbound PUBLISH: resolves its topic alias, and for QoS 2
    /// tells a new message from a re-send. An error is the reason to
    /// disconnect with.
    pub fn on_publish(
        &mut self,
        publish: &mut Publish,
        now: Instant,
    ) -> Result<InboundPublish, ReasonCode> {
        self.touch(now);
        let max_alias = self.config.topic_alias_maximum;
        let link = self.link.as_mut().ok_or(ReasonCode::PROTOCOL_ERROR)?;
        link.resolve_inbound_alias(publish, max_alias)?;
        if publish.qos != QoS::ExactlyOnce {
            return Ok(InboundPublish::New);
        }
        if self.inbound_qos2.contains(&publish.packet_id) {
            return Ok(InboundPublish::Duplicate);
        }
        if self.inbound_qos2.len() >= usize::from(self.config.receive_maximum) {
            return Err(ReasonCode::RECEIVE_MAXIMUM_EXCEEDED);
        }
        self.inbound_qos2.insert(publish.packet_id);
        Ok(InboundPublish::New)
    }

    /// Acknowledges an inbound PUBLISH with `reason` (PUBACK for QoS 1,
    /// PUBREC for QoS 2), with `properties` if any (a reason string). A
    /// refused QoS 2 message ends its exchange.
    pub fn ack_publish(
        &mut self,
        qos: QoS,
        packet_id: u16,
        reason: ReasonCode,
        properties: Properties,
    ) {
        let kind = match qos {
            QoS::AtMostOnce => return,
            QoS::AtLeastOnce => PacketType::PubAck,
            QoS::ExactlyOnce => {
                if reason.is_error() {
                    self.inbound_qos2.remove(&packet_id);
                }
                PacketType::PubRec
            }
        };
        if properties.is_empty() {
            self.reply(kind, packet_id, reason);
            return;
        }
        let reply = robustmq_protocol::mqtt::PubReply {
            packet_id,
            reason_code: reason,
            properties,
        };
        self.send(if kind == PacketType::PubAck {
            Packet::PubAck(reply)
        } else {
            Packet::PubRec(reply)
        });
    }

    /// An inbound PUBREL: the QoS 2 message is released.
    pub fn on_pubrel(&mut self, packet_id: u16, now: Instant) {
        self.touch(now);
        let reason = if self.inbound_qos2.remove(&packet_id) {
            ReasonCode::SUCCESS
        } else {
            ReasonCode::PACKET_IDENTIFIER_NOT_FOUND
        };
        self.reply(PacketType::PubComp, packet_id, reason);
    }

    fn inflight_position(&self, packet_id: u16) -> Option<usize> {
        // Acknowledgements mostly arrive in order: the front matches first.
        self.inflight.iter().position(|(id, _)| *id == packet_id)
    }

    /// An inbound PUBACK. An unknown packet id is a protocol error.
    pub fn on_puback(&mut self, packet_id: u16, now: Instant) -> Result<(), ReasonCode> {
        self.on_pubacks(&[packet_id], now)
    }

    /// Inbound PUBACKs, in the order they came, then the window refilled
    /// once from the queue (the same packets, in the same order, as one
    /// [`Session::on_puback`] after another). An unknown packet id is a
    /// protocol error; the acknowledgements before it count.
    pub fn on_pubacks(&mut self, packet_ids: &[u16], now: Instant) -> Result<(), ReasonCode> {
        self.touch(now);
        let mut result = Ok(());
        for &packet_id in packet_ids {
            match self.inflight_position(packet_id) {
                Some(i) if matches!(self.inflight[i].1, Outbound::Qos1Sent(_)) => {
                    self.inflight.remove(i);
                }
                _ => {
                    result = Err(ReasonCode::PROTOCOL_ERROR);
                    break;
                }
            }
        }
        self.pump(now);
        result
    }

    /// An inbound PUBREC: answer PUBREL, or end the exchange on an error.
    pub fn on_pubrec(
        &mut self,
        packet_id: u16,
        reason: ReasonCode,
        now: Instant,
    ) -> Result<(), ReasonCode> {
        self.touch(now);
        let i = self
            .inflight_position(packet_id)
            .ok_or(ReasonCode::PROTOCOL_ERROR)?;
        match self.inflight[i].1 {
            Outbound::Qos2Sent(_) if reason.is_error() => {
                self.inflight.remove(i);
                self.pump(now);
            }
            Outbound::Qos2Sent(_) | Outbound::Qos2Released => {
                self.inflight[i].1 = Outbound::Qos2Released;
                self.reply(PacketType::PubRel, packet_id, ReasonCode::SUCCESS);
            }
            Outbound::Qos1Sent(_) => return Err(ReasonCode::PROTOCOL_ERROR),
        }
        Ok(())
    }

    /// An inbound PUBCOMP ends a QoS 2 exchange.
    pub fn on_pubcomp(&mut self, packet_id: u16, now: Instant) -> Result<(), ReasonCode> {
        self.touch(now);
        match self.inflight_position(packet_id) {
            Some(i) if matches!(self.inflight[i].1, Outbound::Qos2Released) => {
                self.inflight.remove(i);
                self.pump(now);
                Ok(())
            }
            _ => Err(ReasonCode::PROTOCOL_ERROR),
        }
    }

    /// Hands a message to this session: sent at once when the window has
    /// room, else queued (bounded, by the drop policy). QoS 0 is never
    /// windowed; it is dropped while offline unless configured otherwise.
    pub fn deliver(&mut self, delivery: Delivery, now: Instant) {
        self.deliver_with_slack(delivery, 0, now);
    }

    /// [`Session::deliver`] with a queue allowed `slack` messages beyond
    /// `max_queued`: the broker's allowance for messages already on their
    /// way while their publishers are being held (back-pressure).
    pub fn deliver_with_slack(&mut self, delivery: Delivery, slack: usize, now: Instant) {
        if self.link.is_none() && delivery.qos == QoS::AtMostOnce && !self.config.queue_qos0_offline
        {
            self.counters.dropped_offline_qos0 += 1;
            return;
        }
        let delivery = if self.link.is_some() && self.queue.is_empty() {
            match self.try_send(delivery, now) {
                Ok(()) => return,
                Err(delivery) => delivery,
            }
        } else {
            delivery
        };
        if self.queue.len() >= self.config.max_queued + slack {
            self.counters.dropped_queue_full += 1;
            match self.config.drop_policy {
                DropPolicy::DropNewest => return,
                DropPolicy::DropOldest => {
                    self.queue.pop_front();
                }
            }
        }
        self.queue.push_back(delivery);
    }

    /// Sends queued messages while the window has room.
    pub fn pump(&mut self, now: Instant) {
        if self.link.is_none() {
            return;
        }
        while let Some(delivery) = self.queue.pop_front() {
            if let Err(delivery) = self.try_send(delivery, now) {
                self.queue.push_front(delivery);
                return;
            }
        }
    }

    fn window(&self) -> usize {
        let client = self.link.as_ref().map_or(0, |l| l.client_receive_maximum);
        usize::from(self.config.max_inflight.min(client))
    }

    /// Sends a delivery if possible, moving it into the window at QoS 1
    /// and 2; gives it back when the window is full. Expired and oversized
    /// messages are dropped (and count as sent).
    fn try_send(&mut self, delivery: Delivery, now: Instant) -> Result<(), Delivery> {
        if delivery.message.is_expired(now) {
            self.counters.dropped_expired += 1;
            return Ok(());
        }
        if delivery.qos == QoS::AtMostOnce {
            self.push_publish(&delivery, 0, false, now);
            return Ok(());
        }
        if self.inflight.len() >= self.window() {
            return Err(delivery);
        }
        let packet_id = self.allocate_packet_id();
        if !self.push_publish(&delivery, packet_id, false, now) {
            return Ok(());
        }
        let state = if delivery.qos == QoS::AtLeastOnce {
            Outbound::Qos1Sent(delivery)
        } else {
            Outbound::Qos2Sent(delivery)
        };
        self.inflight.push_back((packet_id, state));
        Ok(())
    }

    fn allocate_packet_id(&mut self) -> u16 {
        debug_assert!(self.inflight.len() < usize::from(u16::MAX));
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = self.next_packet_id.checked_add(1).unwrap_or(1);
            if self.packet_id_free(id) {
                return id;
            }
        }
    }

    /// Whether no in-flight message uses `id`. Ids are allocated walking
    /// forward (1 to 65,535, then 1 again) and the in-flight list keeps
    /// that order, so every id in use lies on the walk from the oldest's
    /// to the newest's: an id past the newest is free without a scan of
    /// the window (128 entries by default, once per message sent).
    fn packet_id_free(&self, id: u16) -> bool {
        let (Some((oldest, _)), Some((newest, _))) = (self.inflight.front(), self.inflight.back())
        else {
            return true;
        };
        let offset = |x: u16| (i32::from(x) - i32::from(*oldest)).rem_euclid(i32::from(u16::MAX));
        if offset(id) > offset(*newest) {
            debug_assert!(!self.inflight.iter().any(|(used, _)| *used == id));
            return true;
        }
        !self.inflight.iter().any(|(used, _)| *used == id)
    }

    /// Appends the PUBLISH for a delivery on the current link to the
    /// output: expiry left, subscription ids, topic alias. `false` (and a
    /// counter) when the message expired or is larger than the client
    /// accepts.
    fn push_publish(
        &mut self,
        delivery: &Delivery,
        packet_id: u16,
        dup: bool,
        now: Instant,
    ) -> bool {
        let Some(link) = self.link.as_mut() else {
            return false;
        };
        let m = &delivery.message;
        if m.is_expired(now) {
            self.counters.dropped_expired += 1;
            return false;
        }
        let mut publish = OutPublish {
            message: m.clone(),
            qos: delivery.qos,
            retain: delivery.retain,
            dup: dup && delivery.qos != QoS::AtMostOnce,
            packet_id,
            expiry: m.remaining_expiry(now),
            subscription_ids: delivery.subscription_ids.clone(),
            topic_alias: None,
            send_topic: true,
        };
        if !link.fits_with_alias(|v| publish.parts().encoded_len(v)) {
            self.counters.dropped_too_large += 1;
            return false;
        }
        (publish.topic_alias, publish.send_topic) = link.outbound_alias(&m.topic);
        self.out.push(Outgoing::Publish(publish));
        true
    }
}
