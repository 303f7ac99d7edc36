//! Back-pressure: a subscriber that cannot keep up holds the publishers
//! that send to it, so that they are slowed through TCP instead of being
//! read at full speed while their messages are dropped.
//!
//! A connected subscriber is *congested* while its unwritten bytes exceed
//! `backpressure_bytes` (the runtime reports it) or its session queue holds
//! a quarter of `max_queued_messages`. A message delivered to a congested
//! subscriber *holds* its publisher's connection: the publisher's core stops
//! reading that socket (the hold is a message when the publisher is on
//! another core). The holds are released when the subscriber drains (a
//! quarter of the byte threshold, a sixteenth of the queue), goes offline,
//! or makes too little progress for `slow_subscriber_ms`: less than a
//! quarter of `backpressure_bytes` written to it and fewer acknowledgements
//! than a sixteenth of the queue in that time. Then it is a slow
//! subscriber, which holds nobody until it has drained once, and its
//! messages meet the usual limits (QoS 0 dropped beyond
//! `max_outbound_buffer_bytes`, the queue's drop policy).
//!
//! A hold reaches a publisher on another core late (0.5-3 ms under
//! load), and until then that core reads it as fast as this one takes
//! the messages. So while a hold it sent is not yet confirmed applied,
//! a core keeps the mesh window of what it receives: the other cores stop
//! reading once a window (`MESH_WINDOW`) is on its way. What reaches a
//! congested subscriber after it held its publishers is then bounded by a
//! window per core, which its queue may take beyond `max_queued_messages`
//! (the slack) without loss, however late the holds land.
//!
//! A publisher is therefore held at most `slow_subscriber_ms` by a
//! subscriber that stalls (or crawls below about 32 KiB/s at the
//! defaults), and for as long as it outpaces one that keeps reading: a
//! flood is slowed to its readers' pace instead of being read and
//! dropped. Memory stays bounded either way: the holds cap what arrives,
//! the limits cap what stays.

use crate::hash::{HashMap, HashSet};
use std::time::{Duration, Instant};

use super::mesh::{CoreMsg, MESH_WINDOW};
use super::{ConnId, CoreBroker, SessionKey};
use crate::message::Origin;

/// The most publishers one congested subscriber records; beyond it, more
/// publishers are not held by it (they still are by the core's mesh limit).
const MAX_WAITERS: usize = 4096;

/// A congested subscriber session.
#[derive(Debug)]
struct Congestion {
    /// When the current progress window started (at congestion, then
    /// every `slow_subscriber_ms` while it keeps making progress).
    since: Instant,
    /// Bytes written to it in the current window.
    written: u64,
    /// Acknowledgements from it in the current window.
    acked: u64,
    /// Its unwritten bytes are over the threshold.
    buffer_full: bool,
    /// Its queue is over the threshold.
    queue_full: bool,
    /// Congested for longer than `slow_subscriber_ms`: holds nobody.
    slow: bool,
    /// The publisher connections it holds.
    waiters: HashSet<Origin>,
}

impl Congestion {
    /// Records the publisher of a message delivered to this subscriber
    /// (`conn`, on `core`) as one it holds; `None` when it holds it
    /// already, holds nobody (slow), holds the most it may, or the
    /// publisher is the subscriber itself (its acks would wait behind its
    /// own publishes).
    fn new_waiter(&mut self, origin: Option<Origin>, core: usize, conn: ConnId) -> Option<Origin> {
        let origin = origin?;
        if origin.core == core && origin.conn == conn {
            return None;
        }
        if self.slow || self.waiters.len() >= MAX_WAITERS || !self.waiters.insert(origin) {
            return None;
        }
        Some(origin)
    }
}

/// This core's part of back-pressure.
#[derive(Debug)]
pub(super) struct Pressure {
    /// Congested subscriber sessions of this core.
    congested: HashMap<SessionKey, Congestion>,
    /// Publisher connections of this core that are held, with the number
    /// of subscribers (on any core) holding each.
    held: HashMap<ConnId, u32>,
    /// Connections whose held state changed, for the runtime.
    changes: Vec<(ConnId, bool)>,
    /// Holds sent to each core and not yet confirmed applied.
    unconfirmed: Vec<u32>,
    /// Their sum.
    unconfirmed_total: u32,
}

impl Pressure {
    pub(super) fn new(cores: usize) -> Self {
        Pressure {
            congested: HashMap::default(),
            held: HashMap::default(),
            changes: Vec::new(),
            unconfirmed: vec![0; cores],
            unconfirmed_total: 0,
        }
    }
}

impl CoreBroker {
    /// Whether a connection of this core is held (must not be read).
    pub fn is_held(&self, conn: ConnId) -> bool {
        !self.pressure.held.is_empty() && self.pressure.held.contains_key(&conn)
    }

    /// Connections whose held state changed since the last call.
    pub fn take_hold_changes(&mut self) -> Vec<(ConnId, bool)> {
        std::mem::take(&mut self.pressure.changes)
    }

    /// The runtime's report on a connection's unwritten bytes: over
    /// `backpressure_bytes` (`full`), or back under a quarter of it.
    pub fn on_write_buffer(&mut self, conn: ConnId, full: bool, now: Instant) {
        let Some(session) = self.conns.get(&conn).map(|c| c.session) else {
            return;
        };
        if full {
            self.congestion_entry(session, now).buffer_full = true;
        } else if let Some(c) = self.pressure.congested.get_mut(&session) {
            c.buffer_full = false;
            self.release_if_drained(session);
        }
    }

    /// The runtime's report of bytes written to a congested connection:
    /// progress, which keeps its subscriber from counting as slow.
    pub fn on_write_progress(&mut self, conn: ConnId, bytes: usize) {
        let Some(entry) = self.conns.get(&conn) else {
            return;
        };
        if let Some(c) = self.pressure.congested.get_mut(&entry.session) {
            c.written += bytes as u64;
        }
    }

    /// After a delivery to `session`: notes a queue over its threshold,
    /// and holds the message's publisher while the subscriber is congested.
    /// `conn` and `queued` are the subscriber's, as the delivery left them.
    /// One lookup of the congestion table per delivery while anything is
    /// congested; none otherwise.
    pub(super) fn after_delivery(
        &mut self,
        session: SessionKey,
        conn: Option<ConnId>,
        queued: usize,
        origin: Option<Origin>,
        now: Instant,
    ) {
        if self.ctx.config.backpressure_bytes == 0 {
            return;
        }
        let Some(conn) = conn else {
            return;
        };
        let over = queued >= self.queue_high();
        if !over && self.pressure.congested.is_empty() {
            // The common case: nothing congested on this core.
            return;
        }
        let core = self.ctx.core;
        let to_hold = match self.pressure.congested.get_mut(&session) {
            Some(c) => {
                c.queue_full |= over;
                c.new_waiter(origin, core, conn)
            }
            None if !over => return,
            None => {
                let c = self.congestion_entry(session, now);
                c.queue_full = true;
                c.new_waiter(origin, core, conn)
            }
        };
        if let Some(origin) = to_hold {
            self.hold(origin);
        }
    }

    /// After acknowledgements from `session`: a queue back under its low
    /// mark releases the publishers.
    pub(super) fn after_acks(&mut self, session: SessionKey, count: usize) {
        if self.pressure.congested.is_empty() {
            return;
        }
        let low = self.queue_low();
        let Some(c) = self.pressure.congested.get_mut(&session) else {
            return;
        };
        c.acked += count as u64;
        if c.queue_full
            && self
                .sessions
                .by_key(session)
                .is_none_or(|e| e.session.queued_len() <= low)
        {
            c.queue_full = false;
            self.release_if_drained(session);
        }
    }

    /// A subscriber went offline or away: it holds nobody any more.
    pub(super) fn forget_subscriber(&mut self, session: SessionKey) {
        if let Some(c) = self.pressure.congested.remove(&session) {
            self.release_all(c.waiters);
        }
    }

    /// A connection of this core closed: it is held no more.
    pub(super) fn forget_publisher(&mut self, conn: ConnId) {
        if self.pressure.held.remove(&conn).is_some() {
            self.held_gauge(-1);
        }
    }

    fn held_gauge(&self, delta: i64) {
        self.ctx
            .metrics
            .core(self.ctx.core)
            .publishers_held
            .fetch_add(delta, std::sync::atomic::Ordering::Relaxed);
    }

    /// Another core's subscriber holds (`hold`) or releases a connection
    /// of this core. A hold is confirmed, even for a connection gone:
    /// the other core counts on it.
    pub(super) fn on_remote_hold(&mut self, from: usize, conn: ConnId, hold: bool) {
        if hold {
            self.hold_local(conn);
            self.outbox.push_hold_applied(from);
        } else {
            self.release_local(conn);
        }
    }

    /// `from` applied `count` of this core's holds.
    pub(super) fn on_holds_applied(&mut self, from: usize, count: u32) {
        let sent = &mut self.pressure.unconfirmed[from];
        debug_assert!(*sent >= count, "more holds confirmed than sent");
        let count = count.min(*sent);
        *sent -= count;
        self.pressure.unconfirmed_total -= count;
    }

    /// Whether holds this core sent to other cores are not yet applied
    /// there. Until they are, the held publishers' messages keep coming,
    /// as fast as this core takes them: the runtime then keeps the mesh
    /// window of what it receives (the other cores stop reading sockets
    /// once their window is full), which bounds what reaches a congested
    /// subscriber after it held its publishers to one window per core,
    /// however late the holds are applied.
    pub fn holds_unconfirmed(&self) -> bool {
        self.pressure.unconfirmed_total > 0
    }

    /// Periodic: subscribers that made too little progress in a window
    /// of `slow_subscriber_ms` become slow and release their publishers;
    /// held publishers count as alive for keep-alive (their packets wait
    /// unread in the socket).
    pub(super) fn pressure_tick(&mut self, now: Instant) {
        let limit = Duration::from_millis(self.ctx.config.slow_subscriber_ms);
        let min_written = (self.ctx.config.backpressure_bytes / 4) as u64;
        let min_acked = self.queue_low().max(1) as u64;
        let mut released = Vec::new();
        for (session, c) in &mut self.pressure.congested {
            if c.slow || now.duration_since(c.since) < limit {
                continue;
            }
            if c.written >= min_written || c.acked >= min_acked {
                // Still reading: a new window, the publishers stay held.
                c.since = now;
                c.written = 0;
                c.acked = 0;
            } else {
                c.slow = true;
                self.ctx
                    .metrics
                    .core(self.ctx.core)
                    .slow_subscribers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let client_id = self
                    .sessions
                    .by_key(*session)
                    .map(|e| e.session.client_id());
                tracing::warn!(
                    client_id = client_id.map(|id| &**id),
                    publishers = c.waiters.len(),
                    "slow subscriber: its publishers are released, its messages meet the queue and buffer limits"
                );
                released.extend(c.waiters.drain());
            }
        }
        self.release_all(released);
        let held: Vec<ConnId> = self.pressure.held.keys().copied().collect();
        for conn in held {
            let Some(session) = self.conns.get(&conn).map(|c| c.session) else {
                continue;
            };
            if let Some(e) = self.sessions.by_key_mut(session) {
                e.session.touch(now);
            }
        }
    }

    /// How far a congested subscriber's queue may go beyond
    /// `max_queued_messages` while its publishers are being held: what can
    /// be on its way from every core until the holds are applied (a
    /// window and one read each, the mesh windows being kept meanwhile),
    /// over two hops (a shared group's owner forwards). 0 when the
    /// subscriber is not congested or is slow.
    pub(super) fn queue_slack(&self, session: SessionKey) -> usize {
        if self.pressure.congested.is_empty() {
            return 0;
        }
        match self.pressure.congested.get(&session) {
            Some(c) if !c.slow => 2 * self.ctx.cores * MESH_WINDOW,
            _ => 0,
        }
    }

    fn queue_high(&self) -> usize {
        (self.ctx.config.max_queued_messages / 4).max(1)
    }

    fn queue_low(&self) -> usize {
        self.ctx.config.max_queued_messages / 16
    }

    fn congestion_entry(&mut self, session: SessionKey, now: Instant) -> &mut Congestion {
        self.pressure
            .congested
            .entry(session)
            .or_insert_with(|| Congestion {
                since: now,
                written: 0,
                acked: 0,
                buffer_full: false,
                queue_full: false,
                slow: false,
                waiters: HashSet::default(),
            })
    }

    fn release_if_drained(&mut self, session: SessionKey) {
        let drained = self
            .pressure
            .congested
            .get(&session)
            .is_some_and(|c| !c.buffer_full && !c.queue_full);
        if drained {
            self.forget_subscriber(session);
        }
    }

    fn hold(&mut self, origin: Origin) {
        if origin.core == self.ctx.core {
            self.hold_local(origin.conn);
        } else {
            self.outbox.push(
                origin.core,
                CoreMsg::Hold {
                    conn: origin.conn,
                    hold: true,
                },
            );
            self.pressure.unconfirmed[origin.core] += 1;
            self.pressure.unconfirmed_total += 1;
        }
    }

    fn release_all(&mut self, waiters: impl IntoIterator<Item = Origin>) {
        for origin in waiters {
            if origin.core == self.ctx.core {
                self.release_local(origin.conn);
            } else {
                self.outbox.push(
                    origin.core,
                    CoreMsg::Hold {
                        conn: origin.conn,
                        hold: false,
                    },
                );
            }
        }
    }

    fn hold_local(&mut self, conn: ConnId) {
        // A hold that arrives after its connection closed is ignored, or it
        // would stay forever.
        if !self.conns.contains_key(&conn) {
            return;
        }
        let count = self.pressure.held.entry(conn).or_insert(0);
        *count += 1;
        if *count == 1 {
            self.pressure.changes.push((conn, true));
            self.held_gauge(1);
        }
    }

    fn release_local(&mut self, conn: ConnId) {
        let Some(count) = self.pressure.held.get_mut(&conn) else {
            return;
        };
        debug_assert!(*count > 0, "a held connection has a holder");
        *count -= 1;
        if *count == 0 {
            self.pressure.held.remove(&conn);
            self.pressure.changes.push((conn, false));
            self.held_gauge(-1);
        }
    }
}
