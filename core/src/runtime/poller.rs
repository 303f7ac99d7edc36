//! One readiness poller per core for its listener and its connected
//! clients' sockets.
//!
//! An idle connection costs no task, no future and no glommio stream: its
//! socket is registered, edge-triggered, in the core's epoll instance, and
//! one task (this poller) reads the sockets that have data into a buffer
//! the core shares, keeping per connection only the bytes of a packet
//! that has not fully arrived. The core's executor sleeps in
//! `epoll_wait` with this epoll descriptor in its set (our copy of
//! glommio adds `watch_in_sleep`), so a socket's data wakes the thread
//! straight from epoll; where that cannot be set up the poller waits for
//! the descriptor with a poll through the ring (see [`wait_readable`]).

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::BytesMut;

use super::connection;
use super::core_loop::Core;
use super::notify::LocalNotify;
use crate::broker::ConnId;

/// Events taken from epoll per call.
const EVENTS: usize = 64;
/// The epoll key of the core's listening socket (connection ids count up
/// from 1 and never reach it).
const LISTENER: u64 = u64::MAX;
/// Connections accepted per pass of the poller: a burst of connects does
/// not keep connected clients waiting for their turn.
const ACCEPTS_PER_PASS: usize = 64;

/// The readiness of one core's connected sockets, and the connections
/// waiting for their turn to be read.
pub(crate) struct Poller {
    epfd: OwnedFd,
    /// Connections with something to do (data, buffered packets, a close),
    /// in the order they became ready; each at most once.
    ready: RefCell<VecDeque<ConnId>>,
    /// Wakes the poller when a connection is queued from elsewhere than
    /// epoll (a publisher released, a close, a drained write buffer).
    queued: LocalNotify,
    /// What reads land in: shared by the core's connections, so a silent
    /// connection owns no read buffer.
    scratch: RefCell<BytesMut>,
    /// `scratch` is lent to the connection having its turn.
    lent: Cell<bool>,
    /// The core's listening socket (non-blocking, in the epoll set).
    listener: RefCell<Option<OwnedFd>>,
    /// The listener may have connections to accept.
    accept_ready: Cell<bool>,
    /// Accepts failed in a row (out of descriptors): logged at 1, 2, 4...
    accept_failures: Cell<u64>,
}

impl Poller {
    pub(crate) fn new() -> io::Result<Self> {
        // SAFETY: epoll_create1 has no memory-safety preconditions; it
        // returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Poller {
            // SAFETY: `fd` is a fresh descriptor that nothing else owns.
            epfd: unsafe { OwnedFd::from_raw_fd(fd) },
            ready: RefCell::new(VecDeque::new()),
            queued: LocalNotify::default(),
            scratch: RefCell::new(BytesMut::new()),
            lent: Cell::new(false),
            listener: RefCell::new(None),
            accept_ready: Cell::new(false),
            accept_failures: Cell::new(0),
        })
    }

    /// Accepts connections from `listener` (non-blocking): watched like a
    /// client's socket, accepted from by the poller with `accept4`, so a
    /// new connection costs no glommio stream and no duplicate descriptor.
    pub(crate) fn listen(&self, listener: OwnedFd) -> io::Result<()> {
        self.watch(
            listener.as_raw_fd(),
            LISTENER,
            libc::EPOLLIN | libc::EPOLLET,
        )?;
        *self.listener.borrow_mut() = Some(listener);
        self.accept_ready.set(true);
        Ok(())
    }

    /// Watches a connection's socket for data and hang-ups (edge
    /// triggered: reported once per arrival, so a socket is read until
    /// it has nothing left or its connection is re-queued).
    pub(crate) fn register(&self, fd: RawFd, id: ConnId) -> io::Result<()> {
        self.watch(fd, id, libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLET)
    }

    /// Adds `fd` to the epoll set under `key`.
    fn watch(&self, fd: RawFd, key: u64, events: libc::c_int) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events as u32,
            u64: key,
        };
        // SAFETY: both descriptors are open; `ev` is a valid event that
        // the kernel only reads.
        let r = unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Stops watching a socket (before its descriptor is closed).
    pub(crate) fn deregister(&self, fd: RawFd) {
        // SAFETY: as in `register`; the event argument is ignored for DEL.
        unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            );
        }
    }

    /// The shared read buffer, for one turn.
    pub(crate) fn lend_scratch(&self) -> BytesMut {
        self.lent.set(true);
        std::mem::take(&mut *self.scratch.borrow_mut())
    }

    pub(crate) fn scratch_lent(&self) -> bool {
        self.lent.get()
    }

    /// The shared read buffer back, emptied.
    pub(crate) fn give_back(&self, buf: BytesMut) {
        debug_assert!(buf.is_empty());
        self.lent.set(false);
        *self.scratch.borrow_mut() = buf;
    }

    /// Queues a connection for a turn (the caller keeps it queued once).
    pub(crate) fn push(&self, id: ConnId) {
        self.ready.borrow_mut().push_back(id);
        self.queued.notify();
    }

    /// Makes the poller look at epoll now, whether or not its wait saw an
    /// event: the clock tick calls this so that a missed wake-up costs at
    /// most one tick (glommio 0.9.0 parked cores with runnable tasks,
    /// fixed in our copy; this stays as a second line).
    pub(crate) fn nudge(&self) {
        // Also the retry of an accept that failed (out of descriptors).
        self.accept_ready.set(true);
        self.queued.notify();
    }

    fn pop(&self) -> Option<ConnId> {
        self.ready.borrow_mut().pop_front()
    }

    fn queue_len(&self) -> usize {
        self.ready.borrow().len()
    }

    /// Takes what epoll has without waiting: marks those sockets readable
    /// and queues their connections.
    fn collect(&self, core: &Core) {
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // SAFETY: `events` has room for EVENTS entries, which is what
            // the kernel is told; a zero timeout never blocks.
            let n = unsafe {
                libc::epoll_wait(self.epfd.as_raw_fd(), events.as_mut_ptr(), EVENTS as i32, 0)
            };
            if n <= 0 {
                return;
            }
            let conns = core.conns.borrow();
            for ev in &events[..n as usize] {
                let id = ev.u64;
                if id == LISTENER {
                    self.accept_ready.set(true);
                } else if let Some(io) = conns.get(&id) {
                    io.set_readable();
                }
            }
            if (n as usize) < EVENTS {
                return;
            }
        }
    }
}

/// Waits until epoll has an event: a poll on the epoll descriptor
/// through the core's ring (`glommio::net::wait_readable`, added in our
/// copy of glommio: 0.9.0 cannot wait for an arbitrary descriptor, and a
/// glommio stream made from a duplicate of it cost a `dup` and a `close`
/// per wait).
async fn wait_readable(epfd: RawFd) {
    if let Err(e) = glommio::net::wait_readable(epfd).await {
        tracing::warn!("cannot wait for sockets: {e}");
        glommio::timer::sleep(Duration::from_millis(1)).await;
    }
}

/// Accepts what the listener has, at most [`ACCEPTS_PER_PASS`]: each
/// connection goes to [`connection::accepted`]. `accept_ready` stays set
/// while more may wait; a failure other than "nothing there" (out of
/// descriptors, or the listener shut down at stop) leaves it to the next
/// tick's nudge.
fn accept_pending(core: &Rc<Core>) {
    let poller = &core.poller;
    if !poller.accept_ready.get() {
        return;
    }
    let Some(listener) = poller.listener.borrow().as_ref().map(|l| l.as_raw_fd()) else {
        poller.accept_ready.set(false);
        return;
    };
    for _ in 0..ACCEPTS_PER_PASS {
        // SAFETY: `listener` is open (the poller owns it); null address
        // pointers ask for no peer address.
        let fd = unsafe {
            libc::accept4(
                listener,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) | Some(libc::ECONNABORTED) => continue,
                Some(libc::EAGAIN) => {}
                Some(libc::EINVAL) => tracing::debug!("listener shut down"),
                _ => {
                    // Retried every tick while it lasts: a line per try
                    // would flood the log.
                    let failures = poller.accept_failures.get() + 1;
                    poller.accept_failures.set(failures);
                    if failures.is_power_of_two() {
                        tracing::warn!(failures, "accept failed: {e}");
                    }
                }
            }
            poller.accept_ready.set(false);
            return;
        }
        // SAFETY: accept4 returned a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        if poller.accept_failures.replace(0) > 0 {
            tracing::info!("accepting again");
        }
        if core.stopping.get() {
            // Closed as it drops: the core is going away.
            continue;
        }
        connection::accepted(core, fd);
    }
}

/// The poller's task: gives each ready connection a turn (one read at
/// most), in order, yielding to the core's other tasks after each pass.
pub(crate) async fn run(core: Rc<Core>) {
    let epfd = core.poller.epfd.as_raw_fd();
    let watched = match glommio::net::watch_in_sleep(epfd) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!("cannot sleep in epoll, waiting through the ring: {e}");
            false
        }
    };
    loop {
        core.poller.collect(&core);
        accept_pending(&core);
        let pass = core.poller.queue_len();
        if pass == 0 {
            if core.poller.accept_ready.get() {
                // More connections wait to be accepted.
                futures_lite::future::yield_now().await;
                continue;
            }
            if watched {
                futures_lite::future::or(
                    glommio::net::SleepWatch::new(),
                    core.poller.queued.wait(),
                )
                .await;
            } else {
                futures_lite::future::or(wait_readable(epfd), core.poller.queued.wait()).await;
            }
            continue;
        }
        // Back-pressure: a core whose messages to other cores pile up
        // reads no socket until they catch up.
        if core.mesh_backlog_full() {
            glommio::timer::sleep(Duration::from_micros(200)).await;
            continue;
        }
        core.defer_mesh(true);
        for _ in 0..pass {
            // Checked at every turn, not only at the pass's start: one
            // read at most beyond the window, however many sockets are
            // ready.
            if core.mesh_batch_full() {
                core.flush_mesh();
            }
            if core.mesh_backlog_full() {
                break;
            }
            let Some(id) = core.poller.pop() else {
                break;
            };
            let io = core.conns.borrow().get(&id).cloned();
            if let Some(io) = io {
                connection::turn(&core, &io);
            }
        }
        core.defer_mesh(false);
        // glommio reads a socket that has data without yielding: busy
        // publishers would never let this core's writers and mesh run.
        futures_lite::future::yield_now().await;
    }
}
