//! Packets from clients, and the way of a message: ACL, retained store,
//! other cores through the route index, this core's trie, sessions.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use bytestring::ByteString;
use robustmq_protocol::mqtt::{Packet, Publish, QoS, ReasonCode, SubscriptionOptions};
use robustmq_protocol::topic;

use super::affinity::Reach;
use super::mesh::CoreMsg;
use super::{ConnId, CoreBroker, SessionKey};
use crate::acl::{Access, ClientInfo};
use crate::message::{Message, Origin, SharedMessage};
use crate::session::{Delivery, InboundPublish};

impl CoreBroker {
    /// A packet from a connected client.
    pub fn on_packet(&mut self, conn: ConnId, packet: Packet, now: Instant) {
        // One way for a PUBACK, alone or in a batch.
        if let Packet::PubAck(r) = &packet {
            self.on_pubacks(conn, &[r.packet_id], now);
            return;
        }
        let Some(session) = self.conns.get(&conn).map(|c| c.session) else {
            return;
        };
        let Some(client_id) = self
            .sessions
            .by_key(session)
            .map(|e| e.session.client_id().clone())
        else {
            return;
        };
        // Keep-alive counts every control packet from the client (MQTT
        // 3.1.1 and 5.0, 3.1.2.10), SUBSCRIBE and UNSUBSCRIBE included.
        // The session's PUBLISH and acknowledgement handlers touch it
        // themselves: one lookup less for each of those.
        let touched_by_session = matches!(
            packet,
            Packet::Publish(_) | Packet::PubRec(_) | Packet::PubRel(_) | Packet::PubComp(_)
        );
        if !touched_by_session {
            if let Some(entry) = self.sessions.by_key_mut(session) {
                entry.session.touch(now);
            }
        }
        let acks = matches!(packet, Packet::PubRec(_) | Packet::PubComp(_));
        let packet = match packet {
            Packet::Publish(p) => {
                match self.on_publish(conn, session, &client_id, p, now) {
                    Ok(Some(publish)) => {
                        self.route_published(conn, session, client_id, publish, now)
                    }
                    Ok(None) => {}
                    Err(reason) => {
                        tracing::debug!(%client_id, %reason, "closing connection");
                        self.on_protocol_error(conn, reason, now);
                    }
                }
                return;
            }
            other => other,
        };
        let result = match packet {
            Packet::PubRec(r) => {
                self.with_session(session, |s| s.on_pubrec(r.packet_id, r.reason_code, now))
            }
            Packet::PubRel(r) => self.with_session(session, |s| {
                s.on_pubrel(r.packet_id, now);
                Ok(())
            }),
            Packet::PubComp(r) => self.with_session(session, |s| s.on_pubcomp(r.packet_id, now)),
            Packet::Subscribe(s) => self.on_subscribe(conn, &client_id, s, now),
            Packet::Unsubscribe(u) => self.on_unsubscribe(&client_id, u, now),
            Packet::PingReq => self.with_session(session, |s| {
                s.send(Packet::PingResp);
                Ok(())
            }),
            Packet::Disconnect(d) => {
                self.on_disconnect(conn, d, now);
                return;
            }
            // A second CONNECT, AUTH without an authentication method, or a
            // packet only a server sends.
            _ => Err(ReasonCode::PROTOCOL_ERROR),
        };
        if acks {
            self.after_acks(session, 1);
        }
        match result {
            Ok(()) => self.dirty.insert(conn),
            Err(reason) => {
                tracing::debug!(%client_id, %reason, "closing connection");
                self.on_protocol_error(conn, reason, now);
                true
            }
        };
    }

    /// PUBACKs from a connected client, in the order they came: one
    /// connection and session lookup for all of them (a subscriber's read
    /// holds dozens), otherwise as many [`CoreBroker::on_packet`] calls.
    pub fn on_pubacks(&mut self, conn: ConnId, packet_ids: &[u16], now: Instant) {
        if packet_ids.is_empty() {
            return;
        }
        let Some(session) = self.conns.get(&conn).map(|c| c.session) else {
            return;
        };
        let result = self.with_session(session, |s| s.on_pubacks(packet_ids, now));
        self.after_acks(session, packet_ids.len());
        match result {
            Ok(()) => {
                self.dirty.insert(conn);
            }
            Err(reason) => {
                tracing::debug!(conn, %reason, "closing connection");
                self.on_protocol_error(conn, reason, now);
            }
        }
    }

    fn with_session(
        &mut self,
        session: SessionKey,
        f: impl FnOnce(&mut crate::session::Session) -> Result<(), ReasonCode>,
    ) -> Result<(), ReasonCode> {
        match self.sessions.by_key_mut(session) {
            Some(entry) => f(&mut entry.session),
            None => Err(ReasonCode::UNSPECIFIED_ERROR),
        }
    }

    fn on_publish(
        &mut self,
        conn: ConnId,
        session: SessionKey,
        client_id: &ByteString,
        mut publish: Publish,
        now: Instant,
    ) -> Result<Option<Publish>, ReasonCode> {
        self.metrics().messages_received.fetch_add(1, Relaxed);
        let entry = self
            .sessions
            .by_key_mut(session)
            .ok_or(ReasonCode::UNSPECIFIED_ERROR)?;
        let v5 = entry.session.version().is_some_and(|v| v.is_v5());
        if v5 && !publish.properties.subscription_identifiers.is_empty() {
            return Err(ReasonCode::PROTOCOL_ERROR);
        }
        let inbound = entry.session.on_publish(&mut publish, now)?;
        if topic::level_count(&publish.topic) > self.ctx.config.max_topic_levels {
            return Err(ReasonCode::TOPIC_NAME_INVALID);
        }
        let (qos, packet_id) = (publish.qos, publish.packet_id);
        let info = ClientInfo {
            client_id,
            username: entry.username.as_deref(),
            ip: entry.ip.as_deref().copied(),
        };
        let allowed = self.ctx.acl.check(&info, Access::Publish, &publish.topic);
        let reason = if !allowed {
            tracing::debug!(%client_id, topic = %publish.topic, "publish denied by ACL");
            ReasonCode::NOT_AUTHORIZED
        } else {
            ReasonCode::SUCCESS
        };
        // Acknowledged before it is routed, while the session is at hand
        // (one lookup less per message): routing cannot fail, and the
        // acknowledgement and deliveries go to different sessions' outputs
        // (or, to a client subscribed to its own topic, in either order,
        // both allowed).
        // 3.x has no reason codes: a refused message is acknowledged as
        // usual and dropped.
        let reason = if v5 { reason } else { ReasonCode::SUCCESS };
        let properties = if reason.is_error() && entry.problem_information {
            super::connect::reason_string(reason)
        } else {
            Default::default()
        };
        entry
            .session
            .ack_publish(qos, packet_id, reason, properties);
        debug_assert_eq!(entry.conn, Some(conn), "a publisher's session is attached");
        entry.mark_dirty(&mut self.dirty);
        Ok((allowed && inbound == InboundPublish::New).then_some(publish))
    }

    /// Routes what a client published, the client id moving into the
    /// message (no copy of it per message).
    fn route_published(
        &mut self,
        conn: ConnId,
        session: SessionKey,
        client_id: ByteString,
        publish: Publish,
        now: Instant,
    ) {
        let mut message = Message::from_publish(publish, client_id, now);
        message.origin = Some(Origin {
            core: self.ctx.core,
            conn,
        });
        // What the tally needs, read before the message moves on (no
        // reference count taken for it).
        let trickle = message.qos == QoS::AtMostOnce && !message.retain;
        let reach = self.route_message(Arc::new(message), now);
        self.note_reach(session, trickle, reach);
    }

    /// Routes a message: retained store (every core's replica), other
    /// cores with a matching route, then this core's subscribers.
    pub fn publish_message(&mut self, message: SharedMessage, now: Instant) {
        self.route_message(message, now);
    }

    /// [`CoreBroker::publish_message`], telling where the message went.
    fn route_message(&mut self, message: SharedMessage, now: Instant) -> Reach {
        if message.retain {
            self.retained.apply(message.clone());
            for core in (0..self.ctx.cores).filter(|c| *c != self.ctx.core) {
                self.outbox.push(core, CoreMsg::Retain(message.clone()));
            }
        }
        let routed = self.route_cores(&message.topic);
        let mut cores = routed;
        while cores != 0 {
            let core = cores.trailing_zeros() as usize;
            cores &= cores - 1;
            self.outbox.push_publish(core, message.clone());
        }
        let local = self.deliver_local(&message, now);
        Reach {
            cores: routed,
            local,
        }
    }

    /// The other cores with a subscriber to `topic`. Remembered for the
    /// next message, which usually has the same topic.
    fn route_cores(&mut self, topic: &str) -> u128 {
        let version = self.routes.version();
        let last = &mut self.last_route;
        if last.version == Some(version) && last.topic == topic {
            return last.cores;
        }
        let mut cores: u128 = 0;
        self.routes
            .for_each_match(topic, |core, _| cores |= 1 << *core);
        cores &= !(1u128 << self.ctx.core);
        last.version = Some(version);
        last.topic.clear();
        last.topic.push_str(topic);
        last.cores = cores;
        cores
    }

    /// Delivers a message to this core's matching subscribers: one delivery
    /// per client at the highest granted QoS with every matching
    /// subscription identifier; one member per shared group. Returns
    /// whether any matched.
    pub(super) fn deliver_local(&mut self, message: &SharedMessage, now: Instant) -> bool {
        let version = self.trie.version();
        if !self
            .last_match
            .holds(version, &message.topic, &message.publisher)
        {
            self.last_match
                .refill(&self.trie, &self.sessions, &self.ctx.acl, message);
        }
        // By index: a delivery does not change the match, and the match
        // stays in place (taking it out and putting it back cost 1.7% of
        // the instructions per message).
        for i in 0..self.last_match.clients.len() {
            let (session, options, ref ids) = self.last_match.clients[i];
            let ids = ids.clone();
            self.deliver_with_ids(session, message, options, ids, now);
        }
        for i in 0..self.last_match.groups.len() {
            let key = self.last_match.groups[i].clone();
            self.deliver_to_group(&key, message, now);
        }
        !self.last_match.clients.is_empty() || !self.last_match.groups.is_empty()
    }

    fn deliver_to_group(&mut self, key: &str, message: &SharedMessage, now: Instant) {
        let strategy = self.ctx.config.shared_subscription_strategy;
        let random = self.next_random();
        let Some(group) = self.groups.get_mut(key) else {
            return;
        };
        let Some(member) = group.pick(strategy, random, &message.publisher).cloned() else {
            return;
        };
        if member.core == self.ctx.core {
            self.deliver_to_client(
                &member.client_id,
                message,
                member.options,
                member.subscription_id,
                now,
            );
        } else {
            self.outbox.push(
                member.core,
                CoreMsg::ShareDeliver {
                    client_id: member.client_id,
                    message: message.clone(),
                    options: member.options,
                    subscription_id: member.subscription_id,
                },
            );
        }
    }

    /// Delivers to one member of a shared group on this core with its
    /// subscription's options, if the ACL lets it read the topic (if not,
    /// the group does not get the message: another member is not tried).
    pub(super) fn deliver_to_client(
        &mut self,
        client_id: &str,
        message: &SharedMessage,
        options: SubscriptionOptions,
        id: Option<u32>,
        now: Instant,
    ) {
        let Some(session) = self.sessions.key(client_id) else {
            return;
        };
        // Shared deliveries come here one by one (no remembered match):
        // the member's right to read the topic is checked per message.
        let acl = &self.ctx.acl;
        if !acl.is_empty()
            && !self
                .sessions
                .by_key(session)
                .is_some_and(|e| super::last_match::may_read(acl, e, &message.topic))
        {
            return;
        }
        self.deliver_with_ids(session, message, options, id.into_iter().collect(), now);
    }

    fn deliver_with_ids(
        &mut self,
        session: SessionKey,
        message: &SharedMessage,
        options: SubscriptionOptions,
        subscription_ids: Vec<u32>,
        now: Instant,
    ) {
        let slack = self.queue_slack(session);
        let Some(entry) = self.sessions.by_key_mut(session) else {
            return;
        };
        let delivery = Delivery {
            message: message.clone(),
            qos: message.qos.min(options.qos),
            retain: options.retain_as_published && message.retain,
            subscription_ids,
        };
        let before = entry.session.counters();
        entry.session.deliver_with_slack(delivery, slack, now);
        let after = entry.session.counters();
        let dropped = (after.dropped_queue_full - before.dropped_queue_full)
            + (after.dropped_offline_qos0 - before.dropped_offline_qos0)
            + (after.dropped_expired - before.dropped_expired)
            + (after.dropped_too_large - before.dropped_too_large);
        let conn = entry.conn;
        let queued = entry.session.queued_len();
        entry.mark_dirty(&mut self.dirty);
        if dropped > 0 {
            self.ctx
                .metrics
                .core(self.ctx.core)
                .messages_dropped
                .fetch_add(dropped, Relaxed);
            // A log line per drop would flood: log the 1st, 2nd, 4th, 8th...
            let total = after.dropped_queue_full
                + after.dropped_offline_qos0
                + after.dropped_expired
                + after.dropped_too_large;
            if total.is_power_of_two() {
                tracing::warn!(
                    client_id = &**entry.session.client_id(),
                    queue_full = after.dropped_queue_full,
                    offline_qos0 = after.dropped_offline_qos0,
                    expired = after.dropped_expired,
                    too_large = after.dropped_too_large,
                    "messages dropped for this session"
                );
            }
        }
        self.after_delivery(session, conn, queued, message.origin, now);
    }

    /// Builds a broker-originated message (wills, `$SYS`).
    pub(super) fn broker_message(
        topic: String,
        payload: bytes::Bytes,
        qos: QoS,
        retain: bool,
    ) -> SharedMessage {
        Arc::new(Message {
            topic: ByteString::from(topic),
            payload,
            qos,
            retain,
            expires_at: None,
            properties: Default::default(),
            publisher: ByteString::from_static("$SYS"),
            origin: None,
        })
    }
}
