//! Publishers moved to the core their messages go to.
//!
//! A session lives on the core its client id hashes to, and a message
//! published there reaches a subscriber of another core through the mesh:
//! one more hop, and one more wake-up of a sleeping core, per message. For
//! a client that publishes a trickle to subscribers of one other core only
//! (a device and the service that reads it, one side of a conversation),
//! that hop is most of its latency (p2p on two cores: median 0.18-0.20 ms
//! against 0.12-0.14 ms with both ends on one core). Such a publisher
//! moves: its session and socket go to that core, where its messages are
//! delivered without crossing cores.
//!
//! Which sessions move: one that holds nothing but its link (no
//! subscription, nothing in flight either way, nothing queued), whose
//! every message for [`STREAK`] windows in a row (one window per tick) was
//! QoS 0, not retained, and went to one other core and nowhere else, at
//! [`MIN_PER_WINDOW`] to [`MAX_PER_WINDOW`] messages a window (50 to 1,250
//! a second). A busier
//! publisher's messages cross cores in batches, and moving it would pile
//! the work of many on one core.
//!
//! Where a session is: it moves only away from the core that owns its
//! client id (by hash) or back to it, so the owner always knows where it
//! is. The owner keeps the client ids of its sessions held elsewhere
//! (`away`) and passes a CONNECT for one of them to the core that holds
//! the session (the runtime does, see `runtime::connection`); that core
//! tells the owner when the session ends ([`CoreMsg::SessionGone`]) or
//! sends it back, and returns a CONNECT for a session it no longer holds.
//! Messages between two cores keep their order, so the owner has applied
//! either before it sees the returned CONNECT.
//!
//! Order of messages: the runtime sends the session to the other core
//! after everything its core sent there before (same channel), and only
//! when that core has no message unprocessed at any third core: no
//! earlier message of the publisher can arrive after a later one.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytestring::ByteString;
use robustmq_protocol::mqtt::ProtocolVersion;

use super::mesh::CoreMsg;
use super::{owner_core, ConnId, CoreBroker, SessionEntry, SessionKey};
use crate::hash::HashMap;

/// Fewer messages in a window: too few to tell where the publisher's
/// messages go (a window is a tick, 200 ms: 50 messages/s).
pub const MIN_PER_WINDOW: u8 = 10;
/// More messages in a window: a busy publisher stays (1,250 messages/s;
/// its messages cross cores in batches). Below the count's saturation, so
/// that a tally is two bytes: it fits in `SessionEntry`'s padding (eight
/// more bytes there cost 105 B per idle connection, measured).
pub const MAX_PER_WINDOW: u8 = 250;
/// Windows in a row that must agree before a publisher moves.
pub const STREAK: u8 = 3;

/// Not a single other core: this core, several cores, a retained or
/// QoS 1/2 message, or nobody.
const SPREAD: u8 = u8::MAX;

/// Where one session's messages went in the current window.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Tally {
    count: u8,
    dest: u8,
}

impl Tally {
    /// Counts a message that went to `dest`; returns whether it is the
    /// window's first.
    fn note(&mut self, dest: u8) -> bool {
        let first = self.count == 0;
        self.count = self.count.saturating_add(1);
        self.dest = if first || self.dest == dest {
            dest
        } else {
            SPREAD
        };
        first
    }
}

/// Where a published message went.
#[derive(Debug, Clone, Copy)]
pub(super) struct Reach {
    /// Other cores it was sent to.
    pub(super) cores: u128,
    /// Whether a subscriber or group of this core got it.
    pub(super) local: bool,
}

/// A core's bookkeeping of moves.
#[derive(Debug, Default)]
pub(super) struct Affinity {
    /// Client ids whose session this core owns by hash but another core
    /// holds, and that core.
    away: HashMap<ByteString, usize>,
    /// Sessions that published in the current window.
    tallied: Vec<SessionKey>,
    /// Sessions whose last windows qualified: (destination, windows in a
    /// row). Rebuilt every window: one that did not qualify drops out.
    streaks: HashMap<SessionKey, (u8, u8)>,
    /// Decided at the tick, carried out by the runtime: (connection, core).
    moves: Vec<(ConnId, usize)>,
    /// Sessions of other cores' clients that ended here, to tell their
    /// owners at the next flush unless one was opened again meanwhile (a
    /// takeover ends the old session before it opens the new one).
    ended: Vec<ByteString>,
}

/// A session on its way to another core, with what the broker keeps beside
/// it (will, credentials, keep-alive state, topic aliases).
#[derive(Debug)]
pub struct MovedSession {
    entry: Box<SessionEntry>,
    version: ProtocolVersion,
}

impl MovedSession {
    /// The client id.
    pub fn client_id(&self) -> &ByteString {
        self.entry.session.client_id()
    }

    /// The client's protocol version.
    pub fn version(&self) -> ProtocolVersion {
        self.version
    }
}

impl CoreBroker {
    /// Counts where a message of a session's client went; `trickle`: it
    /// was QoS 0 and not retained, the only kind a move is made for.
    pub(super) fn note_reach(&mut self, session: SessionKey, trickle: bool, reach: Reach) {
        if !self.ctx.config.move_publishers || self.ctx.cores == 1 {
            return;
        }
        let single = reach.cores.count_ones() == 1;
        let dest = if single && !reach.local && trickle {
            reach.cores.trailing_zeros() as u8
        } else {
            SPREAD
        };
        let Some(entry) = self.sessions.by_key_mut(session) else {
            return;
        };
        if entry.tally.note(dest) {
            self.affinity.tallied.push(session);
        }
    }

    /// The end of a window (at every tick): the publishers that qualified
    /// [`STREAK`] windows in a row and can move are queued for the runtime.
    pub(super) fn pick_moves(&mut self) {
        // Moves the runtime did not take are decided afresh.
        self.affinity.moves.clear();
        let tallied = std::mem::take(&mut self.affinity.tallied);
        let last = std::mem::take(&mut self.affinity.streaks);
        for key in tallied {
            let Some(entry) = self.sessions.by_key_mut(key) else {
                continue;
            };
            let tally = std::mem::take(&mut entry.tally);
            if tally.dest == SPREAD || !(MIN_PER_WINDOW..=MAX_PER_WINDOW).contains(&tally.count) {
                continue;
            }
            let run = match last.get(&key) {
                Some(&(dest, n)) if dest == tally.dest => n.saturating_add(1),
                _ => 1,
            };
            // Kept until it moves (`move_out` drops it): one that cannot
            // move now, or that the runtime cannot send now, is tried again
            // at the next window that agrees.
            self.affinity.streaks.insert(key, (tally.dest, run));
            let dest = usize::from(tally.dest);
            if let (Some(conn), true) = (self.movable(key, dest), run >= STREAK) {
                self.affinity.moves.push((conn, dest));
            }
        }
    }

    /// The connection of a session that may move to `dest` now.
    fn movable(&self, key: SessionKey, dest: usize) -> Option<ConnId> {
        let entry = self.sessions.by_key(key)?;
        let conn = entry.conn?;
        if dest == self.ctx.core
            || !entry.session.only_link_state()
            || self.is_held(conn)
            || self.closing.contains_key(&conn)
            || self.pending_subacks.values().any(|p| p.conn == conn)
        {
            return None;
        }
        // Away from the owner or back to it, never between two others:
        // the owner always knows where the session is.
        let owner = owner_core(entry.session.client_id(), self.ctx.cores);
        (owner == self.ctx.core || dest == owner).then_some(conn)
    }

    /// Publishers to move, each as (connection, core): the runtime calls
    /// [`CoreBroker::move_out`] for those whose socket can go.
    pub fn take_moves(&mut self) -> Vec<(ConnId, usize)> {
        std::mem::take(&mut self.affinity.moves)
    }

    /// Takes a connection's session out of this core, for `dest`: `None`
    /// if it can no longer move (the runtime then keeps the connection).
    pub fn move_out(&mut self, conn: ConnId, dest: usize) -> Option<MovedSession> {
        let c = self.conns.get(&conn)?;
        let (key, version) = (c.session, c.version);
        if self.movable(key, dest) != Some(conn) {
            return None;
        }
        self.conns.remove(&conn);
        let client_id = self.sessions.by_key(key)?.session.client_id().clone();
        let (_, mut entry) = self.sessions.remove(&client_id)?;
        self.dirty.remove(&conn);
        self.forget_publisher(conn);
        self.forget_subscriber(key);
        self.affinity.streaks.remove(&key);
        entry.conn = None;
        entry.dirty = false;
        entry.tally = Tally::default();
        if owner_core(&client_id, self.ctx.cores) == self.ctx.core {
            self.affinity.away.insert(client_id.clone(), dest);
        }
        self.metrics().connections.fetch_sub(1, Relaxed);
        tracing::debug!(%client_id, dest, "publisher moves to the core its messages go to");
        Some(MovedSession { entry, version })
    }

    /// Installs a session moved here, on connection `conn`. `Err` gives it
    /// back if this core already holds a session for its client (a bug:
    /// the owner's record says otherwise).
    pub fn move_in(
        &mut self,
        conn: ConnId,
        moved: MovedSession,
        now: Instant,
    ) -> Result<(), MovedSession> {
        let client_id = moved.client_id().clone();
        if self.sessions.key(&client_id).is_some() {
            tracing::error!(%client_id, "a moved session meets another of its client");
            return Err(moved);
        }
        let MovedSession { mut entry, version } = moved;
        entry.conn = Some(conn);
        entry.dirty = false;
        entry.expires_at = None;
        // Seen alive now: the move took no time of the client's.
        entry.session.touch(now);
        let deadline = entry.session.keep_alive_deadline();
        let key = self.sessions.insert(client_id.clone(), entry);
        self.attach_conn(conn, key, version, deadline);
        if owner_core(&client_id, self.ctx.cores) == self.ctx.core {
            self.affinity.away.remove(&client_id);
        }
        let metrics = self.metrics();
        metrics.connections.fetch_add(1, Relaxed);
        metrics.publishers_moved.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The core that holds the session of a client this core owns, when
    /// that is another core.
    pub fn session_away(&self, client_id: &str) -> Option<usize> {
        self.affinity.away.get(client_id).copied()
    }

    /// Whether this core holds `client_id`'s session.
    pub fn holds_session(&self, client_id: &str) -> bool {
        self.sessions.key(client_id).is_some()
    }

    /// A CONNECT came back from the core this one thought held the
    /// session: it holds none, so this core does.
    pub fn forget_away(&mut self, client_id: &str) {
        if self.affinity.away.remove(client_id).is_some() {
            tracing::warn!(%client_id, "a session's whereabouts were stale");
        }
    }

    /// A session ended here: its owner, if another core, is told so at
    /// the next flush (see [`CoreBroker::tell_owners`]).
    pub(super) fn session_ended(&mut self, client_id: &ByteString) {
        if owner_core(client_id, self.ctx.cores) != self.ctx.core {
            self.affinity.ended.push(client_id.clone());
        }
    }

    /// Tells the owners of the sessions that ended here and were not
    /// opened again that this core no longer holds them.
    pub(super) fn tell_owners(&mut self) {
        if self.affinity.ended.is_empty() {
            return;
        }
        for client_id in std::mem::take(&mut self.affinity.ended) {
            if self.sessions.key(&client_id).is_none() {
                let owner = owner_core(&client_id, self.ctx.cores);
                self.outbox.push(owner, CoreMsg::SessionGone { client_id });
            }
        }
    }

    /// `from` no longer holds `client_id`'s session.
    pub(super) fn on_session_gone(&mut self, from: usize, client_id: &str) {
        if self.affinity.away.get(client_id) == Some(&from) {
            self.affinity.away.remove(client_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tally_keeps_one_destination_or_spreads() {
        let mut t = Tally::default();
        assert!(t.note(1));
        assert!(!t.note(1));
        assert_eq!((t.count, t.dest), (2, 1));
        t.note(0);
        assert_eq!((t.count, t.dest), (3, SPREAD));
        t.note(1);
        assert_eq!(t.dest, SPREAD, "once spread, spread for the window");
        let mut t = Tally::default();
        t.note(SPREAD);
        t.note(SPREAD);
        assert_eq!(t.dest, SPREAD);
    }
}
