//! Connections and sessions: CONNECT, takeover, DISCONNECT, lost
//! connections, will messages, keep-alive and session expiry.

use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytestring::ByteString;
use robustmq_protocol::mqtt::{
    ConnAck, Connect, Disconnect, Packet, Properties, PropertyValues, ProtocolVersion, Publish,
    ReasonCode,
};

use super::shared::fnv1a;
use super::{ConnEntry, ConnId, CoreBroker, PendingWill, SessionEntry, SessionKey};
use crate::message::Message;
use crate::session::{LinkParams, Outgoing, Session};

/// Where a new connection goes.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectRoute {
    /// To the core that owns the client id.
    Owner {
        /// The core.
        core: usize,
        /// Whether the broker assigned the client id.
        assigned: bool,
    },
    /// Refused before any session is touched.
    Refuse(Box<ConnAck>),
}

/// Decides which core owns a CONNECT's session, assigning a client id to
/// a client that sent none (where the protocol lets it).
pub fn route_connect(
    connect: &mut Connect,
    cores: usize,
    assign_id: impl FnOnce() -> String,
) -> ConnectRoute {
    let mut assigned = false;
    if connect.client_id.is_empty() {
        if !connect.protocol.is_v5() && !connect.clean_start {
            return ConnectRoute::Refuse(Box::new(ConnAck {
                reason_code: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                ..Default::default()
            }));
        }
        connect.client_id = ByteString::from(assign_id());
        assigned = true;
    }
    ConnectRoute::Owner {
        core: owner_core(&connect.client_id, cores),
        assigned,
    }
}

/// The core that owns a client id's session.
pub fn owner_core(client_id: &str, cores: usize) -> usize {
    (fnv1a(client_id.as_bytes()) % cores as u64) as usize
}

impl CoreBroker {
    /// A CONNECT accepted on (or handed over to) this core.
    pub fn on_connect(
        &mut self,
        conn: ConnId,
        connect: Box<Connect>,
        assigned: bool,
        ip: Option<IpAddr>,
        now: Instant,
    ) {
        let version = connect.protocol;
        if let Some(reason) = self.refuse_connect(&connect, ip) {
            self.refuse(conn, reason);
            return;
        }
        let client_id = connect.client_id.clone();
        debug_assert!(
            self.session_away(&client_id).is_none(),
            "a CONNECT goes to the core that holds the client's session"
        );
        self.wills.remove(&client_id);
        self.take_over(&client_id, now);
        let (session_key, session_present) = self.open_session(&connect, now);
        let config = self.ctx.config.clone();
        let requested_expiry = requested_session_expiry(&connect);
        let expiry = requested_expiry.min(config.max_session_expiry_secs);
        let keep_alive = granted_keep_alive(connect.keep_alive, config.max_keepalive, version);
        let mut params = LinkParams::new(version, keep_alive);
        let p = &connect.properties;
        params.client_receive_maximum = p.receive_maximum.unwrap_or(u16::MAX);
        params.client_maximum_packet_size = p.maximum_packet_size.unwrap_or(u32::MAX);
        params.client_topic_alias_maximum = p.topic_alias_maximum.unwrap_or(0);

        let mut props = Properties::default();
        if version.is_v5() {
            props.receive_maximum = Some(config.receive_maximum);
            props.topic_alias_maximum = Some(config.topic_alias_maximum);
            props.maximum_packet_size = Some(config.max_packet_size);
            if keep_alive != connect.keep_alive {
                props.server_keep_alive = Some(keep_alive);
            }
            if assigned {
                props.assigned_client_identifier = Some(client_id.clone());
            }
            if expiry != requested_expiry {
                props.session_expiry_interval = Some(expiry);
            }
        }
        let will = connect.will.as_ref().map(|w| {
            let publish = Publish {
                dup: false,
                qos: w.qos,
                retain: w.retain,
                topic: w.topic.clone(),
                packet_id: 0,
                properties: w.properties.clone(),
                payload: w.payload.clone(),
            };
            Arc::new(Message::from_publish(publish, client_id.clone(), now))
        });
        let will_delay = connect
            .will
            .as_ref()
            .and_then(|w| w.properties.will_delay_interval)
            .unwrap_or(0);
        let entry = self.sessions.by_key_mut(session_key).expect("opened above");
        entry.session.expiry_interval = expiry;
        entry.conn = Some(conn);
        // Marked below, for this connection.
        entry.dirty = false;
        entry.expires_at = None;
        entry.will = will;
        entry.will_delay = will_delay;
        entry.username = connect.username.clone();
        entry.problem_information = p.request_problem_information != Some(0);
        entry.ip = ip.map(Box::new);
        entry.session.attach(params, now);
        if !self.ctx.acl.is_empty() {
            // Who the client is may have changed; the remembered match
            // holds ACL decisions about it.
            self.last_match.forget();
        }
        entry.session.send(Packet::ConnAck(ConnAck {
            session_present,
            reason_code: ReasonCode::SUCCESS,
            properties: props,
        }));
        entry.session.resume(now);
        let keep_alive = entry.session.keep_alive_deadline();
        self.attach_conn(conn, session_key, version, keep_alive);
        self.metrics().connections.fetch_add(1, Relaxed);
        self.dirty.insert(conn);
    }

    /// Records a connection of a session, and its keep-alive deadline.
    pub(super) fn attach_conn(
        &mut self,
        conn: ConnId,
        session: SessionKey,
        version: ProtocolVersion,
        keep_alive: Option<Instant>,
    ) {
        self.conns.insert(conn, ConnEntry { session, version });
        if let Some(at) = keep_alive {
            self.keep_alive_due.push(at, conn);
            let conns = &self.conns;
            self.keep_alive_due
                .compact(conns.len(), |_, c| conns.contains_key(c));
        }
    }

    fn refuse_connect(&self, connect: &Connect, ip: Option<IpAddr>) -> Option<ReasonCode> {
        let connections = self.ctx.metrics.snapshot().connections;
        if connections >= self.ctx.config.max_connections as i64 {
            return Some(ReasonCode::QUOTA_EXCEEDED);
        }
        if connect.properties.authentication_method.is_some() {
            // Enhanced authentication (AUTH exchanges) is not offered.
            return Some(ReasonCode::BAD_AUTHENTICATION_METHOD);
        }
        if let Some(will) = &connect.will {
            let info = crate::acl::ClientInfo {
                client_id: &connect.client_id,
                username: connect.username.as_deref(),
                ip,
            };
            if !self
                .ctx
                .acl
                .check(&info, crate::acl::Access::Publish, &will.topic)
            {
                return Some(ReasonCode::NOT_AUTHORIZED);
            }
        }
        None
    }

    /// Answers CONNACK with an error and closes.
    pub fn refuse(&mut self, conn: ConnId, reason: ReasonCode) {
        self.metrics().protocol_errors.fetch_add(1, Relaxed);
        self.closing.insert(
            conn,
            vec![Outgoing::from(Packet::ConnAck(ConnAck {
                session_present: false,
                reason_code: reason,
                properties: reason_string(reason),
            }))],
        );
    }

    /// Closes the connection currently attached to `client_id`'s session:
    /// 5.0 clients are told 0x8E (session taken over).
    fn take_over(&mut self, client_id: &ByteString, now: Instant) {
        let Some(old) = self.sessions.get(client_id).and_then(|e| e.conn) else {
            return;
        };
        tracing::debug!(%client_id, "session taken over");
        // The session continues, so a delayed will is cancelled by the
        // new connection; an immediate one is published.
        let delayed = self
            .sessions
            .get(client_id)
            .is_some_and(|e| e.will_delay > 0);
        self.close_conn(old, Some(ReasonCode::SESSION_TAKEN_OVER), !delayed, now);
        self.wills.remove(client_id);
    }

    /// Creates or resumes the session; returns its key and "session
    /// present".
    fn open_session(&mut self, connect: &Connect, now: Instant) -> (SessionKey, bool) {
        let client_id = &connect.client_id;
        if connect.clean_start {
            // Replaced here: the owner, if another core, keeps knowing
            // this core holds the client's session.
            self.discard_session(client_id, now);
        }
        if let Some(key) = self.sessions.key(client_id) {
            return (key, true);
        }
        let session = Session::new(client_id.clone(), self.ctx.config.session_config());
        let key = self
            .sessions
            .insert(client_id.clone(), Box::new(SessionEntry::new(session)));
        (key, false)
    }

    /// Closes a connection: writes what is pending and, for 5.0 with a
    /// reason, a DISCONNECT. The session stays or ends by its expiry.
    pub(super) fn close_conn(
        &mut self,
        conn: ConnId,
        reason: Option<ReasonCode>,
        publish_will: bool,
        now: Instant,
    ) {
        let Some(entry) = self.conns.remove(&conn) else {
            return;
        };
        self.metrics().connections.fetch_sub(1, Relaxed);
        self.dirty.remove(&conn);
        let mut packets = Vec::new();
        let mut client_id = None;
        self.forget_publisher(conn);
        self.forget_subscriber(entry.session);
        if let Some(s) = self.sessions.by_key_mut(entry.session) {
            client_id = Some(s.session.client_id().clone());
            packets = s.session.take_packets();
            s.session.detach();
            s.conn = None;
            s.dirty = false;
        }
        if let (Some(reason), true) = (reason, entry.version.is_v5()) {
            packets.push(Outgoing::from(Packet::Disconnect(Disconnect {
                reason_code: reason,
                properties: reason_string(reason),
            })));
        }
        self.closing.insert(conn, packets);
        let Some(client_id) = client_id else {
            return;
        };
        if publish_will {
            self.handle_will(&client_id, now);
        } else if let Some(s) = self.sessions.get_mut(&client_id) {
            s.will = None;
        }
        let Some(s) = self.sessions.get_mut(&client_id) else {
            return;
        };
        match s.session.expiry_interval {
            0 => self.end_session(&client_id, now),
            u32::MAX => s.expires_at = None,
            secs => {
                let at = now + Duration::from_secs(u64::from(secs));
                s.expires_at = Some(at);
                self.expiry_due.push(at, client_id);
                let sessions = &self.sessions;
                // The live entry is the session's latest (at = its expiry);
                // older ones of a session that came back are earlier.
                self.expiry_due.compact(sessions.len(), |at, id| {
                    sessions
                        .get(id)
                        .is_some_and(|s| s.conn.is_none() && s.expires_at.is_some_and(|e| e <= at))
                });
            }
        }
    }

    /// The socket closed or failed: the will is published.
    pub fn on_connection_lost(&mut self, conn: ConnId, now: Instant) {
        self.close_conn(conn, None, true, now);
        self.closing.remove(&conn);
    }

    /// Closes for bad input: 5.0 clients get DISCONNECT with the reason.
    pub fn on_protocol_error(&mut self, conn: ConnId, reason: ReasonCode, now: Instant) {
        self.metrics().protocol_errors.fetch_add(1, Relaxed);
        self.close_conn(conn, Some(reason), true, now);
    }

    /// A DISCONNECT from the client.
    pub(super) fn on_disconnect(&mut self, conn: ConnId, d: Disconnect, now: Instant) {
        let Some(client_id) = self.conn_client_id(conn) else {
            return;
        };
        if let (Some(new), Some(s)) = (
            d.properties.session_expiry_interval,
            self.sessions.get_mut(&client_id),
        ) {
            if s.session.expiry_interval == 0 && new != 0 {
                self.on_protocol_error(conn, ReasonCode::PROTOCOL_ERROR, now);
                return;
            }
            s.session.expiry_interval = new.min(self.ctx.config.max_session_expiry_secs);
        }
        let with_will = d.reason_code == ReasonCode::DISCONNECT_WITH_WILL_MESSAGE;
        self.close_conn(conn, None, with_will, now);
    }

    /// Publishes the will of `client_id`'s last connection now, or after
    /// its delay (cut short by the session's own expiry).
    fn handle_will(&mut self, client_id: &ByteString, now: Instant) {
        let Some(s) = self.sessions.get_mut(client_id) else {
            return;
        };
        let Some(message) = s.will.take() else {
            return;
        };
        let delay = s.will_delay.min(s.session.expiry_interval);
        if delay == 0 {
            self.publish_message(message, now);
            return;
        }
        let at = now + Duration::from_secs(u64::from(delay));
        self.wills
            .insert(client_id.clone(), PendingWill { message, at });
    }

    /// Ends a session: its subscriptions leave the router, a will still
    /// waiting is published.
    pub(super) fn end_session(&mut self, client_id: &ByteString, now: Instant) {
        if self.discard_session(client_id, now) {
            self.session_ended(client_id);
        }
    }

    /// Ends a session that a new one replaces at once (clean start), or
    /// as part of [`CoreBroker::end_session`]; returns whether there was
    /// one.
    fn discard_session(&mut self, client_id: &ByteString, now: Instant) -> bool {
        let Some((key, mut entry)) = self.sessions.remove(client_id) else {
            return false;
        };
        if let Some(conn) = entry.conn {
            self.conns.remove(&conn);
            self.forget_publisher(conn);
        }
        self.forget_subscriber(key);
        for (filter, _) in entry.session.drain_subscriptions() {
            self.remove_subscription(key, client_id, &filter);
        }
        if let Some(will) = self.wills.remove(client_id) {
            self.publish_message(will.message, now);
        }
        true
    }

    /// The connections whose keep-alive ran out by `now`; those that were
    /// heard from meanwhile are looked at again at their new deadline.
    fn silent_connections(&mut self, now: Instant) -> Vec<ConnId> {
        let mut silent = Vec::new();
        let mut later = Vec::new();
        while let Some((_, conn)) = self.keep_alive_due.pop_due(now) {
            let Some(c) = self.conns.get(&conn) else {
                continue;
            };
            let deadline = self
                .sessions
                .by_key(c.session)
                .and_then(|s| s.session.keep_alive_deadline());
            match deadline {
                // Silent for more than 1.5 times the keep-alive.
                Some(at) if at < now => silent.push(conn),
                Some(at) => later.push((at, conn)),
                None => {}
            }
        }
        for (at, conn) in later {
            self.keep_alive_due.push(at, conn);
        }
        silent
    }

    /// Periodic work: keep-alive, delayed wills, session expiry, `$SYS`.
    pub fn tick(&mut self, now: Instant) {
        // First: held publishers count as alive before keep-alive is checked.
        self.pressure_tick(now);
        for conn in self.silent_connections(now) {
            tracing::debug!(conn, "keep-alive timeout");
            self.close_conn(conn, Some(ReasonCode::KEEP_ALIVE_TIMEOUT), true, now);
        }
        let due: Vec<ByteString> = self
            .wills
            .iter()
            .filter(|(_, w)| w.at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        for id in due {
            if let Some(w) = self.wills.remove(&id) {
                self.publish_message(w.message, now);
            }
        }
        while let Some((_, id)) = self.expiry_due.pop_due(now) {
            // A session that came back (and maybe left again) is not due:
            // its entry was superseded.
            let expired = self
                .sessions
                .get(&id)
                .is_some_and(|s| s.conn.is_none() && s.expires_at.is_some_and(|e| e <= now));
            if expired {
                tracing::debug!(client_id = %id, "session expired");
                self.end_session(&id, now);
            }
        }
        self.publish_sys(now);
        self.pick_moves();
    }

    /// The server shuts down: 5.0 clients are told 0x8B.
    pub fn shutdown(&mut self, now: Instant) {
        let conns: Vec<ConnId> = self.conns.keys().copied().collect();
        for conn in conns {
            self.close_conn(conn, Some(ReasonCode::SERVER_SHUTTING_DOWN), false, now);
        }
    }
}

/// A Reason String property naming a refusal, for 5.0 clients (3.x
/// encoding leaves properties out).
pub(super) fn reason_string(reason: ReasonCode) -> Properties {
    PropertyValues {
        reason_string: Some(ByteString::from_static(reason.name())),
        ..PropertyValues::default()
    }
    .into()
}

/// The session expiry a CONNECT asks for: 5.0 says it, 3.x derives it from
/// clean session (a persistent 3.x session never expires by itself).
fn requested_session_expiry(connect: &Connect) -> u32 {
    if connect.protocol.is_v5() {
        connect.properties.session_expiry_interval.unwrap_or(0)
    } else if connect.clean_start {
        0
    } else {
        u32::MAX
    }
}

/// The keep-alive the broker enforces: at most `max`. A 5.0 client asking
/// for none or more is told `max` (Server Keep Alive); a 3.x client cannot
/// be told, so its own value is kept: cutting it at 1.5 x `max` would
/// disconnect a client that pings on time by its own keep-alive.
fn granted_keep_alive(asked: u16, max: u16, version: ProtocolVersion) -> u16 {
    if max == 0 || !version.is_v5() {
        return asked;
    }
    match asked {
        0 => max,
        ka => ka.min(max),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_is_capped() {
        use ProtocolVersion::*;
        assert_eq!(granted_keep_alive(30, 60, V5), 30);
        assert_eq!(granted_keep_alive(120, 60, V5), 60);
        assert_eq!(granted_keep_alive(0, 60, V5), 60);
        assert_eq!(granted_keep_alive(0, 60, V3_1_1), 0);
        assert_eq!(granted_keep_alive(120, 60, V3_1_1), 120);
    }

    #[test]
    fn empty_client_ids() {
        let mut c = Connect {
            protocol: ProtocolVersion::V3_1_1,
            clean_start: false,
            keep_alive: 0,
            properties: Properties::default(),
            client_id: ByteString::new(),
            will: None,
            username: None,
            password: None,
        };
        assert!(matches!(
            route_connect(&mut c, 2, || "x".into()),
            ConnectRoute::Refuse(ack) if ack.reason_code == ReasonCode::CLIENT_IDENTIFIER_NOT_VALID
        ));
        c.clean_start = true;
        assert!(matches!(
            route_connect(&mut c, 2, || "gen-1".into()),
            ConnectRoute::Owner { assigned: true, .. }
        ));
        assert_eq!(&*c.client_id, "gen-1");
    }
}
