//! The write side of a connection: its buffer, and how the buffer reaches
//! the socket, and the connection's read state (the poller reads it).
//!
//! Flushing encodes what the broker produced into the buffer and sends it
//! at once with a non-blocking `send`: no task runs for a connection whose
//! socket takes everything, which is every idle one and most busy ones. A
//! writer task is spawned only when the socket is full; it waits for room,
//! writes what has gathered meanwhile (one write per batch), and ends when
//! the buffer is empty. Closing writes what is left, then shuts the socket
//! down, which also queues the connection for the poller to end it.

use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use futures_lite::io::AsyncWriteExt;
use glommio::net::TcpStream;
use robustmq_protocol::mqtt::{Decoder, Packet, ProtocolVersion, QoS};

use super::core_loop::Core;
use crate::broker::ConnId;
use crate::session::Outgoing;

/// An empty buffer keeps at most this much capacity: a burst's buffer is
/// not kept by an idle connection.
const KEEP_CAPACITY: usize = 16 * 1024;

/// What the poller keeps of a connection between its turns.
pub(crate) struct ReadState {
    pub(crate) decoder: Decoder,
    /// Bytes read and not yet handed to the broker: a packet that has not
    /// fully arrived, or packets a hold keeps waiting. Usually empty (no
    /// allocation): reads land in the core's shared buffer.
    pub(crate) pending: BytesMut,
}

/// A connection's socket, write side and read state, shared by the core's
/// tasks.
pub(crate) struct ConnIo {
    id: ConnId,
    /// The client's version (3.1.1 until CONNECT says otherwise).
    version: Cell<ProtocolVersion>,
    /// CONNECT has not been read yet: the broker does not know this
    /// connection.
    connecting: Cell<bool>,
    /// The core's tick count when it was accepted (for the CONNECT
    /// timeout).
    accepted_at: Cell<u32>,
    /// The socket: it closes when the last reference to this goes, which
    /// is after the connection is done and out of the core's map.
    fd: OwnedFd,
    buf: RefCell<BytesMut>,
    pub(crate) read: RefCell<ReadState>,
    core: Weak<Core>,
    /// A writer task is running.
    writing: Cell<bool>,
    /// The broker closed the connection (or it was lost).
    closed: Cell<bool>,
    /// Closed and written out, or the socket failed: nothing more is sent.
    done: Cell<bool>,
    /// Subscribers this client publishes to are congested: do not read.
    held: Cell<bool>,
    /// Over `backpressure_bytes` unwritten, as last told to the broker.
    congested: Cell<bool>,
    /// In the poller's queue.
    queued: Cell<bool>,
    /// The socket may have data: epoll reported it and no read since has
    /// found it empty.
    readable: Cell<bool>,
    /// The poller left it unread while its write buffer was over the
    /// limit: queue it again when bytes are written.
    stalled: Cell<bool>,
    /// The read side has ended; the connection leaves once it is done.
    ended: Cell<bool>,
}

impl ConnIo {
    pub(crate) fn new(
        id: ConnId,
        version: ProtocolVersion,
        fd: OwnedFd,
        read: ReadState,
        core: Weak<Core>,
    ) -> Self {
        ConnIo {
            id,
            version: Cell::new(version),
            connecting: Cell::new(false),
            accepted_at: Cell::new(0),
            fd,
            buf: RefCell::new(BytesMut::new()),
            read: RefCell::new(read),
            core,
            writing: Cell::new(false),
            closed: Cell::new(false),
            done: Cell::new(false),
            held: Cell::new(false),
            congested: Cell::new(false),
            queued: Cell::new(false),
            readable: Cell::new(true),
            stalled: Cell::new(false),
            ended: Cell::new(false),
        }
    }

    pub(crate) fn id(&self) -> ConnId {
        self.id
    }

    pub(crate) fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The client's address.
    pub(crate) fn peer(&self) -> Option<SocketAddr> {
        socket2::SockRef::from(&self.fd)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket())
    }

    pub(crate) fn connecting(&self) -> bool {
        self.connecting.get()
    }

    /// Waiting for CONNECT (a connection just accepted at tick `now`).
    pub(crate) fn set_connecting(&self, now: u32) {
        self.connecting.set(true);
        self.accepted_at.set(now);
    }

    /// Still waiting for CONNECT more than `ticks` after it was accepted.
    pub(crate) fn connect_late(&self, now: u32, ticks: u32) -> bool {
        self.connecting.get()
            && !self.closed.get()
            && now.wrapping_sub(self.accepted_at.get()) > ticks
    }

    /// CONNECT was read and the broker has the connection.
    pub(crate) fn set_connected(&self, version: ProtocolVersion) {
        self.version.set(version);
        self.connecting.set(false);
    }

    /// Encodes a packet the runtime itself answers with (a refusing
    /// CONNACK) into the write buffer.
    pub(crate) fn encode_packet(&self, version: ProtocolVersion, p: &Packet) {
        if let Err(e) = p.encode(version, &mut self.buf.borrow_mut()) {
            tracing::warn!("cannot encode {:?}: {e}", p.packet_type());
        }
    }

    /// Queues the connection for a turn of the poller (once).
    pub(crate) fn wake_reader(&self) {
        if self.queued.replace(true) {
            return;
        }
        if let Some(core) = self.core.upgrade() {
            core.poller.push(self.id);
        }
    }

    /// The poller took it from its queue.
    pub(crate) fn dequeued(&self) {
        self.queued.set(false);
    }

    /// epoll reported data or a hang-up.
    pub(crate) fn set_readable(&self) {
        self.readable.set(true);
        self.wake_reader();
    }

    pub(crate) fn readable(&self) -> bool {
        self.readable.get()
    }

    /// A read found the socket empty (or short): the next arrival is
    /// reported by epoll.
    pub(crate) fn set_unreadable(&self) {
        self.readable.set(false);
    }

    /// Whether the connection can leave for another core as it is:
    /// connected and open, nothing unwritten and no writer task, not held
    /// or left unread.
    pub(crate) fn can_move(&self) -> bool {
        !self.connecting.get()
            && !self.closed.get()
            && !self.done.get()
            && !self.ended.get()
            && !self.writing.get()
            && !self.held.get()
            && !self.congested.get()
            && !self.stalled.get()
            && self.buf.borrow().is_empty()
    }

    pub(crate) fn is_held(&self) -> bool {
        self.held.get()
    }

    /// Left unread until bytes are written.
    pub(crate) fn stall(&self) {
        self.stalled.set(true);
    }

    /// The read side is over; returns whether it already was.
    pub(crate) fn end_read(&self) -> bool {
        self.ended.replace(true)
    }

    pub(crate) fn ended(&self) -> bool {
        self.ended.get()
    }

    /// Has something for the poller to do (bytes, a close or an end to
    /// finish) and nothing that rightly keeps it waiting (a hold, a full
    /// write buffer), yet is not queued.
    pub(crate) fn forgotten(&self) -> bool {
        if self.queued.get() {
            return false;
        }
        if self.ended.get() {
            return self.done.get();
        }
        if self.closed.get() {
            return true;
        }
        if self.held.get() || self.stalled.get() {
            return false;
        }
        self.readable.get() || self.read.try_borrow().is_ok_and(|r| !r.pending.is_empty())
    }

    /// Bytes were written or the connection is done: a reader stalled on
    /// the buffer may go on.
    fn notify_drained(&self) {
        if self.stalled.replace(false) {
            self.wake_reader();
        }
    }

    /// Encodes packets into the write buffer. QoS 0 messages are dropped
    /// while the buffer is over `limit` (a slow reader). Returns (PUBLISH
    /// packets written, dropped).
    pub(crate) fn encode(&self, packets: Vec<Outgoing>, limit: usize) -> (u64, u64) {
        let mut buf = self.buf.borrow_mut();
        let (mut sent, mut dropped) = (0, 0);
        for p in &packets {
            let qos = p.publish_qos();
            if qos == Some(QoS::AtMostOnce) && buf.len() >= limit {
                dropped += 1;
                continue;
            }
            if qos.is_some() {
                sent += 1;
            }
            if let Err(e) = p.encode(self.version.get(), &mut buf) {
                tracing::warn!("cannot encode {:?}: {e}", p.packet_type());
            }
        }
        (sent, dropped)
    }

    /// Sends the buffer now as far as the socket takes it; the rest goes
    /// to a writer task. Returns the bytes sent now.
    pub(crate) fn write_now(self: &Rc<Self>) -> usize {
        if self.writing.get() || self.done.get() {
            return 0;
        }
        let sent = match self.send_now() {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(conn = self.id, "send failed: {e}");
                self.finish();
                return 0;
            }
        };
        if !self.buf.borrow().is_empty() {
            if let Some(core) = self.core.upgrade() {
                self.writing.set(true);
                glommio::spawn_local(write_task(core, self.clone())).detach();
            }
        } else if self.closed.get() {
            self.finish();
        }
        sent
    }

    /// The broker closed the connection: write what is left, then close.
    pub(crate) fn close(self: &Rc<Self>) {
        self.closed.set(true);
        self.wake_reader();
        self.write_now();
    }

    pub(crate) fn closed(&self) -> bool {
        self.closed.get()
    }

    pub(crate) fn done(&self) -> bool {
        self.done.get()
    }

    pub(crate) fn buffered(&self) -> usize {
        self.buf.borrow().len()
    }

    /// The broker holds (or releases) this publisher: back-pressure.
    pub(crate) fn set_held(&self, held: bool) {
        self.held.set(held);
        if !held {
            self.wake_reader();
        }
    }

    /// Whether the unwritten bytes just crossed `high` upwards: the broker
    /// is to be told once per crossing.
    pub(crate) fn became_congested(&self, high: usize) -> bool {
        if high == 0 || self.congested.get() || self.buffered() < high {
            return false;
        }
        self.congested.set(true);
        true
    }

    /// Over `backpressure_bytes` unwritten, as last told to the broker.
    pub(crate) fn is_congested(&self) -> bool {
        self.congested.get()
    }

    /// Whether the unwritten bytes just fell to a quarter of `high`.
    pub(crate) fn became_drained(&self, high: usize) -> bool {
        if !self.congested.get() || self.buffered() > high / 4 {
            return false;
        }
        self.congested.set(false);
        true
    }

    /// Sends what the socket takes without waiting.
    fn send_now(&self) -> io::Result<usize> {
        let mut buf = self.buf.borrow_mut();
        let mut total = 0;
        while !buf.is_empty() {
            // SAFETY: `fd` is this connection's socket, open as long as
            // `self` is. The pointer and length describe `buf`'s
            // initialized bytes.
            let n = unsafe {
                libc::send(
                    self.fd(),
                    buf.as_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            buf.advance(n as usize);
            total += n as usize;
        }
        if buf.is_empty() && buf.capacity() > KEEP_CAPACITY {
            *buf = BytesMut::new();
        }
        if total > 0 {
            self.notify_drained();
        }
        Ok(total)
    }

    /// Nothing more is sent: shut the socket down (the read loop wakes).
    fn finish(&self) {
        if self.done.replace(true) {
            return;
        }
        self.closed.set(true);
        // SAFETY: `fd` is open as long as `self` is; shutdown does not
        // close it, it ends the connection (epoll reports the hang-up).
        unsafe {
            libc::shutdown(self.fd(), libc::SHUT_RDWR);
        }
        self.notify_drained();
        self.wake_reader();
    }
}

/// Writes the buffer while the socket is slower than the broker, one
/// write per batch gathered; ends when the buffer is empty.
async fn write_task(core: Rc<Core>, io: Rc<ConnIo>) {
    // A glommio stream only while the socket is full: idle connections
    // keep none. It is made from a duplicate, closed when it drops.
    let mut half = match super::dup_fd(io.fd()) {
        // SAFETY: the duplicate is owned by nothing else; the stream
        // takes that ownership.
        Ok(fd) => unsafe { TcpStream::from_raw_fd(fd.into_raw_fd()) },
        Err(e) => {
            tracing::debug!(conn = io.id, "cannot write: {e}");
            io.writing.set(false);
            io.finish();
            return;
        }
    };
    let mut spare = BytesMut::new();
    let mut failed = false;
    loop {
        std::mem::swap(&mut *io.buf.borrow_mut(), &mut spare);
        if spare.is_empty() {
            break;
        }
        // Write by parts as the socket takes them: a slow reader's progress
        // is reported as it happens, not once a large batch is all out.
        let mut written = 0;
        while written < spare.len() {
            let n = match half.write(&spare[written..]).await {
                Ok(0) | Err(_) => {
                    failed = true;
                    break;
                }
                Ok(n) => n,
            };
            written += n;
            core.with_metrics(|m| m.bytes_sent.fetch_add(n as u64, Relaxed));
            if io.congested.get() {
                core.broker.borrow_mut().on_write_progress(io.id, n);
            }
        }
        if failed {
            break;
        }
        spare.clear();
        io.notify_drained();
        let high = core.config().backpressure_bytes;
        if io.became_drained(high) {
            core.broker
                .borrow_mut()
                .on_write_buffer(io.id, false, Instant::now());
            core.flush();
        }
    }
    drop(half);
    io.writing.set(false);
    if failed || io.closed.get() {
        io.finish();
    }
}
