//! One client connection: a task reads CONNECT and hands the socket to the
//! owner core if needed; the connection then has no task of its own: the
//! core's poller ([`super::poller`]) gives it a turn whenever its socket
//! has data ([`turn`]), and the write side is [`super::conn_io::ConnIo`].

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use robustmq_protocol::mqtt::{
    ConnAck, Connect, DecodeError, Decoder, Packet, ProtocolVersion, ReasonCode,
};

use super::conn_io::{ConnIo, ReadState};
use super::core_loop::Core;
use super::{HandOff, HandOffKind, Move};
use crate::broker::{owner_core, route_connect, ConnId, ConnectRoute, CoreBroker};

/// Bytes asked of the socket per read: the core's shared buffer has room
/// for at least this much.
const READ_CHUNK: usize = 16 * 1024;
/// Bytes asked of a connection's socket before CONNECT (memory per
/// connection that has sent nothing yet).
const MIN_READ_CHUNK: usize = 64;

/// A connection accepted on this core: from now on the poller serves it
/// (no task of its own, even before CONNECT); the tick closes it if
/// CONNECT does not come within `connect_timeout_secs`.
pub(crate) fn accepted(core: &Rc<Core>, fd: OwnedFd) {
    // TCP_NODELAY comes from the listener (Linux copies it to accepted
    // sockets): no `setsockopt` per connection.
    let config = core.config();
    let read = ReadState {
        decoder: Decoder::new(config.max_packet_size as usize),
        pending: BytesMut::new(),
    };
    let id = core.new_conn_id();
    let io = Rc::new(ConnIo::new(
        id,
        ProtocolVersion::V3_1_1,
        fd,
        read,
        Rc::downgrade(core),
    ));
    if let Err(e) = core.poller.register(io.fd(), id) {
        tracing::warn!("cannot watch a connection: {e}");
        return;
    }
    core.watch_connect(&io);
    core.conns.borrow_mut().insert(id, io.clone());
    io.wake_reader();
}

/// Before CONNECT: decodes it from what was read and routes it: refused
/// (CONNACK and close), handed to the core that owns the client id, or
/// given to this core's broker (`Step::Again`: what followed it is
/// decoded next).
fn connect_step(core: &Rc<Core>, io: &Rc<ConnIo>, read: &mut ReadState) -> Step {
    let mut connect = match read.decoder.decode(&mut read.pending) {
        Ok(Some(Packet::Connect(c))) => c,
        Ok(Some(_)) => unreachable!("a server decoder yields CONNECT first"),
        Ok(None) => return Step::Again,
        Err(e) => {
            refuse_invalid(io, e);
            return Step::End;
        }
    };
    detach_connect(&mut connect);
    let version = connect.protocol;
    // Only an ACL rule on addresses needs the client's address.
    let peer = if core.broker.borrow().context().acl.uses_addresses() {
        io.peer()
    } else {
        None
    };
    let assigned = match route_connect(&mut connect, core.cores(), || core.assign_client_id()) {
        ConnectRoute::Refuse(ack) => {
            io.encode_packet(version, &Packet::ConnAck(*ack));
            io.close();
            return Step::End;
        }
        ConnectRoute::Owner { assigned, .. } => assigned,
    };
    match connect_destination(core, &connect.client_id, HandOffKind::Accepted) {
        Some((dest, kind)) => {
            match super::dup_fd(io.fd()) {
                Ok(fd) => core.hand_off(
                    dest,
                    HandOff {
                        fd,
                        connect,
                        assigned,
                        leftover: std::mem::take(&mut read.pending).freeze(),
                        peer,
                        kind,
                    },
                ),
                Err(e) => {
                    // Out of descriptors, most likely: say so rather
                    // than drop the connection without a word.
                    tracing::warn!("cannot hand a connection over: {e}");
                    let ack = ConnAck {
                        reason_code: ReasonCode::SERVER_UNAVAILABLE,
                        ..Default::default()
                    };
                    io.encode_packet(version, &Packet::ConnAck(ack));
                    io.close();
                    return Step::End;
                }
            }
            // This core's descriptor closes when the connection leaves.
            io.end_read();
            leave(core, io);
            Step::Gone
        }
        None => {
            io.set_connected(version);
            core.stop_watching_connect(io.id());
            core.broker.borrow_mut().on_connect(
                io.id(),
                connect,
                assigned,
                peer.map(|p| p.ip()),
                Instant::now(),
            );
            core.flush();
            Step::Again
        }
    }
}

/// A first packet that is not a valid CONNECT: a client whose version is
/// unknown is answered in 3.1.1's form; the connection closes.
fn refuse_invalid(io: &ConnIo, e: DecodeError) {
    tracing::debug!(conn = io.id(), "invalid first packet: {e}");
    if matches!(
        e,
        DecodeError::UnsupportedProtocolVersion(_) | DecodeError::ProtocolNameMismatch(_)
    ) {
        let ack = ConnAck {
            reason_code: ReasonCode::UNSUPPORTED_PROTOCOL_VERSION,
            ..Default::default()
        };
        io.encode_packet(ProtocolVersion::V3_1_1, &Packet::ConnAck(ack));
    }
}

/// Copies what the broker keeps of CONNECT out of the read buffer: the
/// decoder's slices would keep the whole buffer and its shared header
/// (104 bytes) alive for as long as the session keeps the client id.
fn detach_connect(c: &mut Connect) {
    c.client_id = c.client_id.to_string().into();
    if let Some(u) = &mut c.username {
        *u = u.to_string().into();
    }
    if let Some(p) = &mut c.password {
        *p = Bytes::copy_from_slice(p);
    }
    if let Some(w) = &mut c.will {
        w.topic = w.topic.to_string().into();
        w.payload = Bytes::copy_from_slice(&w.payload);
    }
}

/// Where a CONNECT read or handed over as `kind` goes from this core:
/// `None` to stay, or the core to hand it to and as what. A session moved
/// away from its owner (`broker::affinity`) is served where it is: the
/// owner forwards the CONNECT there, and that core returns it if it holds
/// no session for the client any more (then the owner has learnt so,
/// the cores' channel keeping the order). Three hops at most.
fn connect_destination(
    core: &Core,
    client_id: &str,
    kind: HandOffKind,
) -> Option<(usize, HandOffKind)> {
    let broker = core.broker.borrow();
    let here = Whereabouts {
        me: broker.core(),
        owner: owner_core(client_id, broker.context().cores),
        away: broker.session_away(client_id),
        holds: broker.holds_session(client_id),
    };
    here.next_hop(kind)
}

/// What a core knows of a client's session when a CONNECT for it comes.
#[derive(Debug, Clone, Copy)]
struct Whereabouts {
    me: usize,
    owner: usize,
    /// Where the owner's record says the session is (on the owner only).
    away: Option<usize>,
    /// This core holds the session.
    holds: bool,
}

impl Whereabouts {
    fn next_hop(self, kind: HandOffKind) -> Option<(usize, HandOffKind)> {
        match kind {
            HandOffKind::Accepted if self.owner != self.me => {
                Some((self.owner, HandOffKind::Accepted))
            }
            HandOffKind::Accepted => self.away.map(|held| (held, HandOffKind::Forwarded)),
            HandOffKind::Forwarded if self.owner == self.me || self.holds => None,
            HandOffKind::Forwarded => Some((self.owner, HandOffKind::Returned)),
            HandOffKind::Returned => None,
        }
    }
}

/// A connection handed over by the core that read its CONNECT (or by the
/// owner of its client id, or back to it).
pub(crate) fn serve_handed_off(core: &Rc<Core>, mut h: HandOff) {
    if h.kind == HandOffKind::Returned {
        core.broker.borrow_mut().forget_away(&h.connect.client_id);
    }
    if let Some((dest, kind)) = connect_destination(core, &h.connect.client_id, h.kind) {
        h.kind = kind;
        core.hand_off(dest, h);
        return;
    }
    let config = core.config();
    let read = ReadState {
        decoder: Decoder::with_version(h.connect.protocol, config.max_packet_size as usize),
        pending: BytesMut::from(&h.leftover[..]),
    };
    connected(core, h.fd, read, h.connect, h.assigned, h.peer);
}

/// A connection whose CONNECT was read, on the core that owns its session:
/// registered with the poller, and handed to the broker.
fn connected(
    core: &Rc<Core>,
    fd: OwnedFd,
    read: ReadState,
    connect: Box<Connect>,
    assigned: bool,
    peer: Option<SocketAddr>,
) {
    let conn_id = core.new_conn_id();
    let raw = fd.as_raw_fd();
    let version = connect.protocol;
    let io = Rc::new(ConnIo::new(conn_id, version, fd, read, Rc::downgrade(core)));
    if let Err(e) = core.poller.register(raw, conn_id) {
        tracing::warn!(conn_id, "cannot watch a connection: {e}");
        return;
    }
    core.conns.borrow_mut().insert(conn_id, io.clone());
    let ip = peer.map(|p| p.ip());
    core.broker
        .borrow_mut()
        .on_connect(conn_id, connect, assigned, ip, Instant::now());
    core.flush();
    // Bytes that came with CONNECT, or before the socket was watched.
    io.wake_reader();
}

/// Carries out the moves the broker chose at its tick (see
/// `broker::affinity`): a publisher's socket, decoder and session go to the
/// core its messages go to, behind everything this core sent there. One
/// that cannot go as it is now (bytes unwritten or half a packet read,
/// held, or this core's messages still unprocessed at a third core) stays;
/// the broker picks it again at a later tick.
pub(crate) fn move_publishers(core: &Rc<Core>) {
    let moves = core.broker.borrow_mut().take_moves();
    for (conn, dest) in moves {
        let Some(io) = core.conns.borrow().get(&conn).cloned() else {
            continue;
        };
        if !io.can_move() || !io.read.borrow().pending.is_empty() || core.mesh_busy_beyond(dest) {
            continue;
        }
        let fd = match super::dup_fd(io.fd()) {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(conn, "cannot move a connection: {e}");
                continue;
            }
        };
        let Some(session) = core.broker.borrow_mut().move_out(conn, dest) else {
            continue;
        };
        let limit = core.config().max_packet_size as usize;
        let decoder = std::mem::replace(&mut io.read.borrow_mut().decoder, Decoder::new(limit));
        // This core's descriptor closes as the connection leaves it.
        io.end_read();
        leave(core, &io);
        core.send_move(
            dest,
            Move {
                fd,
                session,
                decoder,
            },
        );
    }
}

/// A publisher moved here from another core, with its session.
pub(crate) fn serve_moved(core: &Rc<Core>, m: Move) {
    let Move {
        fd,
        session,
        decoder,
    } = m;
    let conn_id = core.new_conn_id();
    let raw = fd.as_raw_fd();
    let read = ReadState {
        decoder,
        pending: BytesMut::new(),
    };
    let version = session.version();
    let io = Rc::new(ConnIo::new(conn_id, version, fd, read, Rc::downgrade(core)));
    let now = Instant::now();
    if core
        .broker
        .borrow_mut()
        .move_in(conn_id, session, now)
        .is_err()
    {
        // The socket closes as `io` drops.
        return;
    }
    core.conns.borrow_mut().insert(conn_id, io.clone());
    if let Err(e) = core.poller.register(raw, conn_id) {
        tracing::warn!(conn_id, "cannot watch a moved connection: {e}");
        end(core, &io);
        return;
    }
    // Bytes that arrived on the way are read now (and epoll reports a
    // socket that has data when it is added).
    io.wake_reader();
}

/// How a turn of a connection ended.
enum Step {
    /// Nothing more to do until epoll, a release or a drained buffer
    /// queues it again.
    Wait,
    /// More may be read now: queue it again behind the others.
    Again,
    /// The broker holds the publisher: packets may wait in its buffer.
    Held,
    /// The connection is over (closed, lost or broken).
    End,
    /// Handed to another core.
    Gone,
}

/// One turn of a connection: hand the broker what is buffered, then read
/// once if the socket may have more (back-pressure permitting).
pub(crate) fn turn(core: &Rc<Core>, io: &Rc<ConnIo>) {
    io.dequeued();
    if io.ended() {
        // Queued by the end of its last write.
        if io.done() {
            leave(core, io);
        }
        return;
    }
    let step = {
        let mut read = io.read.borrow_mut();
        let read = &mut *read;
        let step = read_turn(core, io, read);
        keep_pending(core, read);
        step
    };
    match step {
        Step::Wait => {}
        Step::Again => io.wake_reader(),
        // Released within the same flush: the buffered packets go on.
        Step::Held if !io.is_held() => io.wake_reader(),
        Step::Held | Step::Gone => {}
        Step::End => end(core, io),
    }
}

fn read_turn(core: &Rc<Core>, io: &Rc<ConnIo>, read: &mut ReadState) -> Step {
    if io.closed() {
        return Step::End;
    }
    if let Some(step) = blocked(core, io) {
        return step;
    }
    if !read.pending.is_empty() {
        match serve_bytes(core, io, read) {
            Step::Again => {}
            other => return other,
        }
        if let Some(step) = blocked(core, io) {
            return step;
        }
    }
    if !io.readable() {
        return Step::Wait;
    }
    // Before CONNECT: small reads into the connection's own buffer (what
    // the session keeps of CONNECT must not pin the core's buffer).
    let connecting = io.connecting();
    if read.pending.is_empty() && !connecting {
        // Usually: read into the core's buffer; what is left of it after
        // decoding is moved to the connection by `keep_pending`.
        read.pending = core.poller.lend_scratch();
    }
    let chunk = if connecting {
        MIN_READ_CHUNK
    } else {
        READ_CHUNK
    };
    let n = match read_socket(io, &mut read.pending, chunk) {
        Ok(Some(n)) => n,
        Ok(None) => return Step::Wait,
        Err(()) => return Step::End,
    };
    if !connecting {
        core.with_metrics(|m| m.bytes_received.fetch_add(n as u64, Relaxed));
    }
    match serve_bytes(core, io, read) {
        Step::Again if io.readable() => Step::Again,
        Step::Again => Step::Wait,
        other => other,
    }
}

/// Whether back-pressure keeps the connection unread, and until what.
fn blocked(core: &Core, io: &ConnIo) -> Option<Step> {
    if io.closed() {
        return Some(Step::End);
    }
    // A client whose own answers pile up is read again once bytes are
    // written; a publisher held for a congested subscriber once released.
    if io.buffered() > core.config().max_outbound_buffer_bytes {
        io.stall();
        return Some(Step::Wait);
    }
    if io.is_held() {
        return Some(Step::Wait);
    }
    None
}

/// Reads once into `buf`. `Ok(None)`: nothing there (the socket is
/// unreadable until epoll says otherwise); `Err`: the connection is over.
fn read_socket(io: &ConnIo, buf: &mut BytesMut, chunk: usize) -> Result<Option<usize>, ()> {
    buf.reserve(chunk);
    let spare = buf.spare_capacity_mut();
    // SAFETY: `fd` is this connection's socket, open as long as `io` is;
    // the pointer and length describe `buf`'s spare capacity, which recv
    // only writes.
    let n = unsafe {
        libc::recv(
            io.fd(),
            spare.as_mut_ptr().cast(),
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        let e = std::io::Error::last_os_error();
        return match e.kind() {
            std::io::ErrorKind::WouldBlock => {
                io.set_unreadable();
                Ok(None)
            }
            std::io::ErrorKind::Interrupted => Ok(Some(0)),
            _ => {
                tracing::debug!(conn = io.id(), "read failed: {e}");
                Err(())
            }
        };
    }
    if n == 0 {
        return Err(());
    }
    let n = n as usize;
    if n < spare.len() {
        // Edge-triggered: what arrives after this read is reported.
        io.set_unreadable();
    }
    // SAFETY: recv initialized the first `n` bytes of the spare capacity.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(Some(n))
}

/// CONNECT first (on a connection just accepted), then the packets.
fn serve_bytes(core: &Rc<Core>, io: &Rc<ConnIo>, read: &mut ReadState) -> Step {
    if io.connecting() {
        match connect_step(core, io, read) {
            Step::Again if !io.connecting() => {}
            other => return other,
        }
    }
    decode(core, io, read)
}

/// Decodes and hands to the broker what is buffered, then flushes.
/// `Step::Again`: all whole packets were handled.
fn decode(core: &Core, io: &ConnIo, read: &mut ReadState) -> Step {
    let now = Instant::now();
    let id = io.id();
    let step = {
        let mut broker = core.broker.borrow_mut();
        // PUBACKs in a row go to the broker together (a subscriber's read
        // holds dozens); any other packet, the end of the buffer or a bad
        // packet hands over those gathered first, so the order holds.
        let mut acks = AckBatch::default();
        loop {
            if io.closed() {
                break Step::End;
            }
            match read.decoder.decode(&mut read.pending) {
                Ok(Some(Packet::PubAck(r))) => {
                    if acks.push(r.packet_id) {
                        acks.hand_over(&mut broker, id, now);
                    }
                }
                Ok(Some(p)) => {
                    acks.hand_over(&mut broker, id, now);
                    broker.on_packet(id, p, now);
                    // Held: the rest of the buffer waits for the release.
                    if broker.is_held(id) {
                        break Step::Held;
                    }
                }
                Ok(None) => {
                    acks.hand_over(&mut broker, id, now);
                    break Step::Again;
                }
                Err(e) => {
                    acks.hand_over(&mut broker, id, now);
                    tracing::debug!(conn = id, "bad packet: {e}");
                    broker.on_protocol_error(id, e.reason_code(), now);
                    break Step::End;
                }
            }
        }
    };
    core.flush();
    step
}

/// PUBACKs decoded in a row, not yet handed to the broker.
struct AckBatch {
    ids: [u16; 64],
    len: usize,
}

impl Default for AckBatch {
    fn default() -> Self {
        AckBatch {
            ids: [0; 64],
            len: 0,
        }
    }
}

impl AckBatch {
    /// Adds one; `true` when the batch is full.
    fn push(&mut self, packet_id: u16) -> bool {
        self.ids[self.len] = packet_id;
        self.len += 1;
        self.len == self.ids.len()
    }

    fn hand_over(&mut self, broker: &mut CoreBroker, conn: ConnId, now: Instant) {
        if self.len > 0 {
            broker.on_pubacks(conn, &self.ids[..self.len], now);
            self.len = 0;
        }
    }
}

/// After a turn: bytes left in the core's buffer (a partial packet, or
/// packets a hold keeps waiting) are copied to the connection, and the
/// buffer goes back to the core.
fn keep_pending(core: &Core, read: &mut ReadState) {
    if !core.poller.scratch_lent() {
        // The connection's own buffer was used: it keeps it while it
        // holds bytes; an idle connection keeps none.
        if read.pending.is_empty() {
            read.pending = BytesMut::new();
        }
        return;
    }
    let mut scratch = std::mem::take(&mut read.pending);
    if !scratch.is_empty() {
        read.pending = BytesMut::from(&scratch[..]);
        scratch.clear();
    }
    core.poller.give_back(scratch);
}

/// The read side is over: the broker is told (unless it closed the
/// connection itself), and the connection leaves the core once its last
/// bytes are written.
fn end(core: &Rc<Core>, io: &Rc<ConnIo>) {
    if io.end_read() {
        return;
    }
    if io.connecting() {
        // The broker never had it.
        io.close();
    } else if !io.closed() {
        core.broker
            .borrow_mut()
            .on_connection_lost(io.id(), Instant::now());
        core.flush();
        io.close();
    }
    // Otherwise the writer task finishes it, which queues it again.
    if io.done() {
        leave(core, io);
    }
}

/// The connection leaves the core; its socket closes when the last
/// reference to it (a writer task's, or the poller's turn) goes.
fn leave(core: &Core, io: &ConnIo) {
    core.stop_watching_connect(io.id());
    core.poller.deregister(io.fd());
    core.conns.borrow_mut().remove(&io.id());
}

#[cfg(test)]
mod tests {
    use super::*;
    use HandOffKind::*;

    fn at(me: usize, owner: usize, away: Option<usize>, holds: bool) -> Whereabouts {
        Whereabouts {
            me,
            owner,
            away,
            holds,
        }
    }

    /// Every path a CONNECT can take: to the owner, on to the core that
    /// holds a moved session, and back when that core no longer does.
    #[test]
    fn a_connect_reaches_the_session_in_three_hops_at_most() {
        // Accepted on the owner, session here: stays.
        assert_eq!(at(0, 0, None, true).next_hop(Accepted), None);
        // Accepted elsewhere: to the owner.
        assert_eq!(
            at(1, 0, None, false).next_hop(Accepted),
            Some((0, Accepted))
        );
        // The owner knows the session moved to core 2: forwarded there.
        assert_eq!(
            at(0, 0, Some(2), false).next_hop(Accepted),
            Some((2, Forwarded))
        );
        // Core 2 holds it: served there.
        assert_eq!(at(2, 0, None, true).next_hop(Forwarded), None);
        // Core 2 no longer holds it (it ended or went home): returned.
        assert_eq!(
            at(2, 0, None, false).next_hop(Forwarded),
            Some((0, Returned))
        );
        // A returned CONNECT stays on the owner, whatever its record says
        // (the caller drops a stale record first).
        assert_eq!(at(0, 0, Some(2), false).next_hop(Returned), None);
        assert_eq!(at(0, 0, None, false).next_hop(Returned), None);
    }
}
