//! The write side of a connection: its buffer, and how the buffer reaches
//! the socket.
//!
//! Flushing encodes what the broker produced into the buffer and sends it
//! at once with a non-blocking `send`: no task runs for a connection whose
//! socket takes everything, which is every idle one and most busy ones. A
//! writer task is spawned only when the socket is full; it waits for room,
//! writes what has gathered meanwhile (one write per batch), and ends when
//! the buffer is empty. Closing writes what is left, then shuts the socket
//! down, which also wakes the read loop.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::RawFd;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Instant;

use bytes::{Buf, BytesMut};
use futures_lite::io::{AsyncWriteExt, WriteHalf};
use glommio::net::TcpStream;
use robustmq_protocol::mqtt::{ProtocolVersion, QoS};

use super::core_loop::Core;
use super::notify::LocalNotify;
use crate::broker::ConnId;
use crate::session::Outgoing;

/// An empty buffer keeps at most this much capacity: a burst's buffer is
/// not kept by an idle connection.
const KEEP_CAPACITY: usize = 16 * 1024;

/// The write side of a connection, shared by the core's tasks.
pub(crate) struct ConnIo {
    id: ConnId,
    version: ProtocolVersion,
    fd: RawFd,
    buf: RefCell<BytesMut>,
    /// The socket's write half; a writer task takes it while it runs.
    half: RefCell<Option<WriteHalf<TcpStream>>>,
    core: Weak<Core>,
    /// A writer task is running.
    writing: Cell<bool>,
    /// The broker closed the connection (or it was lost).
    closed: Cell<bool>,
    /// Closed and written out, or the socket failed: nothing more is sent.
    done: Cell<bool>,
    /// Bytes were written (or the connection is done).
    drained: LocalNotify,
    /// Subscribers this client publishes to are congested: do not read.
    held: Cell<bool>,
    released: LocalNotify,
    /// Over `backpressure_bytes` unwritten, as last told to the broker.
    congested: Cell<bool>,
}

impl ConnIo {
    pub(crate) fn new(
        id: ConnId,
        version: ProtocolVersion,
        fd: RawFd,
        half: WriteHalf<TcpStream>,
        core: Weak<Core>,
    ) -> Self {
        ConnIo {
            id,
            version,
            fd,
            buf: RefCell::new(BytesMut::new()),
            half: RefCell::new(Some(half)),
            core,
            writing: Cell::new(false),
            closed: Cell::new(false),
            done: Cell::new(false),
            drained: LocalNotify::default(),
            held: Cell::new(false),
            released: LocalNotify::default(),
            congested: Cell::new(false),
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
            if let Err(e) = p.encode(self.version, &mut buf) {
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
        self.released.notify();
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

    /// Waits until bytes were written or the connection is done.
    pub(crate) async fn wait_drained(&self) {
        self.drained.wait().await;
    }

    /// Waits until the connection is written out and shut down.
    pub(crate) async fn wait_done(&self) {
        while !self.done.get() {
            self.drained.wait().await;
        }
    }

    /// Drops the write half once the connection is over (the socket closes
    /// when both halves are gone).
    pub(crate) fn release_socket(&self) {
        self.half.borrow_mut().take();
    }

    /// The broker holds (or releases) this publisher: back-pressure.
    pub(crate) fn set_held(&self, held: bool) {
        self.held.set(held);
        if !held {
            self.released.notify();
        }
    }

    /// Waits while the broker holds this publisher.
    pub(crate) async fn wait_released(&self) {
        while self.held.get() && !self.closed.get() {
            self.released.wait().await;
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
            // SAFETY: `fd` is this connection's socket. The read half keeps
            // it open until the read loop's task ends, which is after
            // `done` is set; nothing is sent once `done` is set. The pointer
            // and length describe `buf`'s initialized bytes.
            let n = unsafe {
                libc::send(
                    self.fd,
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
            self.drained.notify();
        }
        Ok(total)
    }

    /// Nothing more is sent: shut the socket down (the read loop wakes).
    fn finish(&self) {
        if self.done.replace(true) {
            return;
        }
        self.closed.set(true);
        // SAFETY: the read half keeps the descriptor open until the read
        // loop's task ends; shutdown does not close it, it ends the
        // connection and wakes a read waiting on it.
        unsafe {
            libc::shutdown(self.fd, libc::SHUT_RDWR);
        }
        self.drained.notify();
        self.released.notify();
    }
}

/// Writes the buffer while the socket is slower than the broker, one
/// write per batch gathered; ends when the buffer is empty.
async fn write_task(core: Rc<Core>, io: Rc<ConnIo>) {
    let Some(mut half) = io.half.borrow_mut().take() else {
        io.writing.set(false);
        return;
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
        io.drained.notify();
        let high = core.config().backpressure_bytes;
        if io.became_drained(high) {
            core.broker
                .borrow_mut()
                .on_write_buffer(io.id, false, Instant::now());
            core.flush();
        }
    }
    *io.half.borrow_mut() = Some(half);
    io.writing.set(false);
    if failed || io.closed.get() {
        io.finish();
    }
}
