//! One core: its broker, its listener, its connections, its side of the
//! mesh, its clock tick.

use crate::hash::{HashMap, HashSet};
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use glommio::channels::channel_mesh::{Full, MeshBuilder, Senders};
use glommio::{GlommioError, ResourceType};

use super::conn_io::ConnIo;
use super::connection;
use super::notify::LocalNotify;
use super::poller::{self, Poller};
use super::{CoreEvent, HandOff, MeshMsg, Move};
use crate::broker::mesh::{batch_weight, MESH_WINDOW};
use crate::broker::metrics::CoreMetrics;
use crate::broker::{BrokerContext, ConnId, CoreBroker};
use crossbeam_utils::CachePadded;
use std::os::fd::OwnedFd;
use std::sync::atomic::AtomicUsize;

/// Messages sent from each core to each other core and not yet processed
/// there: the sender adds, the receiver subtracts. Two cores share each
/// counter (one writes up, one down), nothing else does.
pub(crate) struct MeshWindows {
    cores: usize,
    counts: Vec<CachePadded<AtomicUsize>>,
}

impl MeshWindows {
    pub(crate) fn new(cores: usize) -> Self {
        MeshWindows {
            cores,
            counts: (0..cores * cores).map(|_| CachePadded::default()).collect(),
        }
    }

    fn count(&self, from: usize, to: usize) -> &AtomicUsize {
        &self.counts[from * self.cores + to]
    }

    /// Whether `from` has more than [`MESH_WINDOW`] messages out to a core.
    fn full(&self, from: usize) -> bool {
        (0..self.cores).any(|to| self.count(from, to).load(Ordering::Acquire) > MESH_WINDOW)
    }
}

/// The most messages for other cores that wait for the end of a poller
/// pass: a pass over many busy connections sends in batches of this many.
const MESH_BATCH: usize = 256;

/// How often timers run: keep-alive, wills, expiry, `$SYS`, shutdown.
const TICK: Duration = Duration::from_millis(200);

/// A tick that takes longer is logged (debug): it delays every
/// connection of the core.
const SLOW_TICK: Duration = Duration::from_millis(2);

/// The state of one core, shared by its tasks (never across cores).
pub(crate) struct Core {
    pub(crate) broker: RefCell<CoreBroker>,
    pub(crate) conns: RefCell<HashMap<ConnId, Rc<ConnIo>>>,
    /// Readiness of the clients' sockets.
    pub(crate) poller: Poller,
    /// Clock ticks since the core started.
    ticks: Cell<u32>,
    next_conn: Cell<ConnId>,
    next_client: Cell<u64>,
    pending_mesh: RefCell<Vec<(usize, MeshMsg)>>,
    /// The mesh's senders, shared with the mesh sender task.
    senders: Rc<Senders<MeshMsg>>,
    /// The mesh sender task holds a batch it has not sent yet: nothing may
    /// overtake it.
    mesh_sending: Cell<bool>,
    windows: Arc<MeshWindows>,
    mesh_notify: LocalNotify,
    pub(crate) stopping: Cell<bool>,
    /// Connections waiting for CONNECT (a handful at a time: a set, so
    /// that connected ones leave it and cost nothing).
    connecting: RefCell<HashSet<ConnId>>,
    /// Where the next sweep for forgotten connections starts.
    sweep_cursor: Cell<usize>,
    /// Messages for other cores wait for the end of the poller's pass.
    mesh_deferred: Cell<bool>,
    /// Per sending core: messages processed here whose mesh window is
    /// kept until this core's holds are applied (see
    /// `CoreBroker::holds_unconfirmed`).
    kept_windows: RefCell<Vec<usize>>,
}

impl Core {
    pub(crate) fn id(&self) -> usize {
        self.broker.borrow().core()
    }

    pub(crate) fn cores(&self) -> usize {
        self.broker.borrow().context().cores
    }

    pub(crate) fn config(&self) -> Arc<crate::config::MqttConfig> {
        self.broker.borrow().context().config.clone()
    }

    /// Clock ticks since the core started.
    pub(crate) fn ticks(&self) -> u32 {
        self.ticks.get()
    }

    /// A connection accepted now waits for CONNECT: the tick closes it if
    /// CONNECT does not come in time.
    pub(crate) fn watch_connect(&self, io: &ConnIo) {
        io.set_connecting(self.ticks());
        self.connecting.borrow_mut().insert(io.id());
    }

    /// The connection sent CONNECT, or is gone.
    pub(crate) fn stop_watching_connect(&self, id: ConnId) {
        let mut connecting = self.connecting.borrow_mut();
        if connecting.remove(&id) && connecting.is_empty() && connecting.capacity() > 1024 {
            // After a burst of connects: no table kept for the next.
            *connecting = HashSet::default();
        }
    }

    pub(crate) fn new_conn_id(&self) -> ConnId {
        let id = self.next_conn.get();
        self.next_conn.set(id + 1);
        id
    }

    /// A client id for a client that sent none.
    pub(crate) fn assign_client_id(&self) -> String {
        let n = self.next_client.get();
        self.next_client.set(n + 1);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let b = self.broker.borrow();
        let ctx = b.context();
        format!("robust-{}-{}-{n}-{nanos:x}", ctx.node_id, ctx.core)
    }

    pub(crate) fn hand_off(&self, core: usize, h: HandOff) {
        self.send_after_messages(core, MeshMsg::HandOff(h));
    }

    /// Sends a publisher moving to `core`.
    pub(crate) fn send_move(&self, core: usize, m: Move) {
        self.send_after_messages(core, MeshMsg::Move(Box::new(m)));
    }

    /// Queues `msg` for `core` behind every message queued before it (by
    /// the broker's flush or otherwise): the mesh sender keeps the order.
    fn send_after_messages(&self, core: usize, msg: MeshMsg) {
        self.pending_mesh.borrow_mut().push((core, msg));
        self.mesh_notify.notify();
    }

    /// Whether this core has messages not yet processed by a core other
    /// than `dest`: a publisher moving to `dest` now could have an earlier
    /// message overtaken there by a later one.
    pub(crate) fn mesh_busy_beyond(&self, dest: usize) -> bool {
        let me = self.id();
        (0..self.cores())
            .filter(|&c| c != me && c != dest)
            .any(|c| self.windows.count(me, c).load(Ordering::Acquire) > 0)
    }

    /// Runs `f` on this core's counters.
    pub(crate) fn with_metrics<R>(&self, f: impl FnOnce(&CoreMetrics) -> R) -> R {
        let broker = self.broker.borrow();
        f(broker.context().metrics.core(broker.core()))
    }

    /// Whether readers should wait: this core's messages to another core
    /// are more than the window ahead of it, or another core's messages
    /// to this one are, not counting the windows this core keeps for its
    /// holds. The second bounds what a core forwards: a shared group's
    /// owner passes each message to a member's core as it processes the
    /// messages of other cores, whatever its own window; when the
    /// member's core also reads the publishers, only its not reading them
    /// stops the loop (it grew by 130 MB/s with a group's four members on
    /// one core, 8 publishers and the group on the other).
    pub(crate) fn mesh_backlog_full(&self) -> bool {
        let me = self.id();
        if self.windows.full(me) {
            return true;
        }
        let kept = self.kept_windows.borrow();
        (0..self.cores()).any(|from| {
            from != me
                && self
                    .windows
                    .count(from, me)
                    .load(Ordering::Acquire)
                    .saturating_sub(kept[from])
                    > MESH_WINDOW
        })
    }

    /// `weight` messages from `peer` were processed: their mesh window
    /// goes back to `peer`, unless this core waits for holds to be
    /// applied; then it is kept, with every core's, until they are.
    fn settle_window(&self, broker: &CoreBroker, peer: usize, weight: usize) {
        let me = broker.core();
        let mut kept = self.kept_windows.borrow_mut();
        if broker.holds_unconfirmed() {
            kept[peer] += weight;
            broker
                .context()
                .metrics
                .core(me)
                .hold_waits
                .fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.windows
            .count(peer, me)
            .fetch_sub(weight, Ordering::AcqRel);
        for (from, n) in kept.iter_mut().enumerate() {
            if *n > 0 {
                // The other core's poller looks again within its back-off.
                self.windows
                    .count(from, me)
                    .fetch_sub(std::mem::take(n), Ordering::AcqRel);
            }
        }
    }

    /// Moves what the broker produced to where it goes: packets encoded
    /// into each connection's write buffer (one write per flush), and
    /// messages for other cores to the mesh sender.
    pub(crate) fn flush(&self) {
        let mut broker = self.broker.borrow_mut();
        let dirty = broker.take_dirty();
        let conns = self.conns.borrow();
        let metrics = broker.context().metrics.clone();
        let core_metrics = metrics.core(broker.core());
        let limit = broker.context().config.max_outbound_buffer_bytes;
        let high = broker.context().config.backpressure_bytes;
        for id in dirty {
            let out = broker.take_output(id);
            let Some(io) = conns.get(&id) else {
                continue;
            };
            let (sent, dropped) = io.encode(out.packets, limit);
            core_metrics
                .messages_sent
                .fetch_add(sent, Ordering::Relaxed);
            core_metrics
                .messages_dropped
                .fetch_add(dropped, Ordering::Relaxed);
            if out.close {
                io.close();
            } else {
                let n = io.write_now();
                core_metrics
                    .bytes_sent
                    .fetch_add(n as u64, Ordering::Relaxed);
                if n > 0 && io.is_congested() {
                    broker.on_write_progress(id, n);
                }
            }
            if io.became_congested(high) {
                broker.on_write_buffer(id, true, Instant::now());
            } else if io.became_drained(high) {
                broker.on_write_buffer(id, false, Instant::now());
            }
        }
        for (id, held) in broker.take_hold_changes() {
            if let Some(io) = conns.get(&id) {
                io.set_held(held);
            }
        }
        if !self.mesh_deferred.get() {
            self.send_core_messages(&mut broker);
        }
    }

    /// While the poller gives the ready connections their turns, messages
    /// for other cores wait in the broker's outbox and go at the end of
    /// the pass (or once [`MESH_BATCH`] wait): one channel message and at
    /// most one wake-up of each other core per pass, rather than per
    /// connection.
    pub(crate) fn defer_mesh(&self, defer: bool) {
        self.mesh_deferred.set(defer);
        if !defer {
            self.flush_mesh();
        }
    }

    /// Sends the deferred messages for other cores if enough wait.
    pub(crate) fn mesh_batch_full(&self) -> bool {
        self.broker.borrow().core_backlog() >= MESH_BATCH
    }

    /// Sends what the broker has for other cores.
    pub(crate) fn flush_mesh(&self) {
        self.send_core_messages(&mut self.broker.borrow_mut());
    }

    fn send_core_messages(&self, broker: &mut CoreBroker) {
        let msgs = broker.take_core_messages();
        if !msgs.is_empty() {
            let me = broker.core();
            let mut pending = self.pending_mesh.borrow_mut();
            for (dest, m) in msgs {
                self.windows
                    .count(me, dest)
                    .fetch_add(batch_weight(&m), Ordering::AcqRel);
                let msg = MeshMsg::Broker(m);
                // Straight into the channel when nothing waits before it
                // (a task hop less on every cross-core delivery); the mesh
                // sender task takes what does not fit.
                if !pending.is_empty() || self.mesh_sending.get() {
                    pending.push((dest, msg));
                    continue;
                }
                match self.senders.try_send_to(dest, msg) {
                    Ok(()) => {}
                    Err(GlommioError::WouldBlock(ResourceType::Channel(msg))) => {
                        pending.push((dest, msg));
                    }
                    Err(e) => tracing::debug!(dest, "mesh peer gone: {e}"),
                }
            }
            if !pending.is_empty() {
                self.mesh_notify.notify();
            }
        }
    }
}

/// The life of one core.
pub(crate) async fn run(
    ctx: BrokerContext,
    addr: SocketAddr,
    mesh: MeshBuilder<MeshMsg, Full>,
    ready: mpsc::Sender<CoreEvent>,
    shutdown: Arc<AtomicBool>,
    windows: Arc<MeshWindows>,
) {
    let core_id = ctx.core;
    let cores = ctx.cores;
    // A start under load used to hang here: one core parked for good in
    // io_uring, the other spinning on a channel connection. The likely
    // cause, an executor that parked with runnable tasks after a
    // preemption, is fixed in the patched glommio (third_party/glommio);
    // until that is confirmed, a short timer makes a parked core look
    // again while the cores join. Dropping the task ends it.
    let nudge = glommio::spawn_local(async {
        loop {
            glommio::timer::sleep(Duration::from_millis(2)).await;
        }
    });
    let joined = mesh.join().await;
    drop(nudge);
    let (senders, mut receivers) = match joined {
        Ok(pair) => pair,
        Err(e) => {
            let _ = ready.send(CoreEvent::Failed(format!(
                "core {core_id}: cannot join the mesh: {e}"
            )));
            return;
        }
    };
    let (listener, listener_dup) = match bind_listener(addr) {
        Ok(pair) => pair,
        Err(e) => {
            let _ = ready.send(CoreEvent::Failed(format!(
                "core {core_id}: cannot bind {addr}: {e}"
            )));
            return;
        }
    };
    let poller = match Poller::new().and_then(|p| p.listen(listener).map(|()| p)) {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(CoreEvent::Failed(format!(
                "core {core_id}: cannot create a poller: {e}"
            )));
            return;
        }
    };
    let core = Rc::new(Core {
        broker: RefCell::new(CoreBroker::new(ctx, Instant::now())),
        conns: RefCell::new(HashMap::default()),
        poller,
        ticks: Cell::new(0),
        next_conn: Cell::new(1),
        next_client: Cell::new(1),
        pending_mesh: RefCell::new(Vec::new()),
        senders: Rc::new(senders),
        mesh_sending: Cell::new(false),
        windows,
        mesh_notify: LocalNotify::default(),
        stopping: Cell::new(false),
        connecting: RefCell::new(HashSet::default()),
        sweep_cursor: Cell::new(0),
        mesh_deferred: Cell::new(false),
        kept_windows: RefCell::new(vec![0; cores]),
    });
    let _ = ready.send(CoreEvent::Listening(listener_dup));
    for (peer, receiver) in receivers.streams() {
        let core = core.clone();
        glommio::spawn_local(async move {
            while let Some(msg) = receiver.recv().await {
                on_mesh_message(&core, peer, msg);
                // A channel that always has a message never suspends this
                // task: yield, or the core's sockets are never served.
                futures_lite::future::yield_now().await;
            }
        })
        .detach();
    }
    glommio::spawn_local(mesh_sender(core.clone())).detach();
    glommio::spawn_local(poller::run(core.clone())).detach();
    tick_loop(&core, &shutdown).await;
    drain_connections(&core).await;
    let _ = ready.send(CoreEvent::Stopped);
}

/// This core's listener on the shared port (SO_REUSEPORT, non-blocking:
/// the poller accepts from it), and a duplicate of its descriptor for the
/// starting thread.
fn bind_listener(addr: SocketAddr) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_port(true)?;
    // A restart binds the port again while the last run's connections sit
    // in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    // Inherited by every accepted socket (Linux): replies and deliveries
    // are written whole, one write per flush, and must not wait for an
    // acknowledgement of the last.
    socket.set_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    let dup = OwnedFd::from(socket.try_clone()?);
    Ok((OwnedFd::from(socket), dup))
}

fn on_mesh_message(core: &Rc<Core>, peer: usize, msg: MeshMsg) {
    match msg {
        MeshMsg::Broker(msgs) => {
            let weight = batch_weight(&msgs);
            let now = Instant::now();
            let mut broker = core.broker.borrow_mut();
            for m in msgs {
                broker.on_core_message(peer, m, now);
            }
            core.settle_window(&broker, peer, weight);
        }
        MeshMsg::HandOff(h) => {
            connection::serve_handed_off(core, h);
        }
        MeshMsg::Move(m) => connection::serve_moved(core, *m),
    }
    core.flush();
}

async fn mesh_sender(core: Rc<Core>) {
    let senders = core.senders.clone();
    loop {
        core.mesh_notify.wait().await;
        loop {
            let batch = std::mem::take(&mut *core.pending_mesh.borrow_mut());
            if batch.is_empty() {
                break;
            }
            core.mesh_sending.set(true);
            for (dest, msg) in batch {
                if senders.send_to(dest, msg).await.is_err() {
                    tracing::debug!(dest, "mesh peer gone");
                }
            }
            core.mesh_sending.set(false);
        }
    }
}

async fn tick_loop(core: &Rc<Core>, shutdown: &AtomicBool) {
    while !shutdown.load(Ordering::Acquire) {
        glommio::timer::sleep(TICK).await;
        let now = Instant::now();
        core.broker.borrow_mut().tick(now);
        core.flush();
        // After the flush: a publisher moves behind its messages.
        connection::move_publishers(core);
        core.ticks.set(core.ticks.get().wrapping_add(1));
        sweep(core);
        core.poller.nudge();
        let took = now.elapsed();
        if took > SLOW_TICK {
            let conns = core.conns.borrow().len();
            tracing::debug!(us = took.as_micros() as u64, conns, "slow tick");
        }
    }
}

/// Connections looked at per tick for work nobody queued: an eighth of
/// the core's connections, and at least this many.
const SWEEP_MIN: usize = 1024;

/// The tick's housekeeping of connections, in time proportional to what
/// it finds rather than to the connections held (a pass over all of them
/// took 0.15-0.4 ms per 5,000 at every tick).
fn sweep(core: &Core) {
    close_late_connects(core);
    requeue_forgotten(core);
}

/// Closes the connections that sent no CONNECT within
/// `connect_timeout_secs`: only those still waiting for it are looked at.
fn close_late_connects(core: &Core) {
    let timeout = Duration::from_secs(core.config().connect_timeout_secs);
    let ticks = (timeout.as_millis() / TICK.as_millis()) as u32;
    let now = core.ticks();
    let late: Vec<Rc<ConnIo>> = {
        let conns = core.conns.borrow();
        core.connecting
            .borrow()
            .iter()
            .filter_map(|id| conns.get(id))
            .filter(|io| io.connect_late(now, ticks))
            .cloned()
            .collect()
    };
    for io in late {
        tracing::debug!(conn = io.id(), peer = ?io.peer(), "no CONNECT in time");
        io.close();
    }
}

/// Queues connections that have work and are in nobody's queue, a part of
/// the core's connections per tick. Every path that gives a connection
/// work queues it, so this finds none unless one was missed; a missed one
/// then waits at most eight ticks, not forever.
fn requeue_forgotten(core: &Core) {
    let conns = core.conns.borrow();
    let len = conns.len();
    if len == 0 {
        return;
    }
    let chunk = (len / 8).max(SWEEP_MIN);
    let start = core.sweep_cursor.get();
    let start = if start >= len { 0 } else { start };
    let mut found = 0usize;
    for io in conns.values().skip(start).take(chunk) {
        if io.forgotten() {
            found += 1;
            io.wake_reader();
        }
    }
    core.sweep_cursor.set(start + chunk);
    if found > 0 {
        tracing::debug!(found, "connections with work were not queued");
    }
}

/// Tells every client the server is going away, then waits (bounded) for
/// their buffers to be written.
async fn drain_connections(core: &Rc<Core>) {
    core.stopping.set(true);
    core.broker.borrow_mut().shutdown(Instant::now());
    core.flush();
    // Connections still waiting for CONNECT are not the broker's: close
    // them here.
    let waiting: Vec<_> = core
        .conns
        .borrow()
        .values()
        .filter(|io| io.connecting())
        .cloned()
        .collect();
    for io in waiting {
        io.close();
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while !core.conns.borrow().is_empty() && Instant::now() < deadline {
        glommio::timer::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};

    /// The broker sets TCP_NODELAY once, on the listener; a kernel that
    /// did not pass it on to accepted sockets would delay small writes.
    #[test]
    fn accepted_sockets_inherit_nodelay_from_the_listener() {
        let (listener, _dup) = bind_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = socket2::SockRef::from(&listener)
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        let accepted = loop {
            // SAFETY: `listener` is open; null address pointers ask for
            // no peer address.
            let fd = unsafe {
                libc::accept4(
                    listener.as_raw_fd(),
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_CLOEXEC,
                )
            };
            if fd >= 0 {
                // SAFETY: accept4 returned a descriptor nothing else owns.
                break unsafe { OwnedFd::from_raw_fd(fd) };
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        assert!(socket2::SockRef::from(&accepted).nodelay().unwrap());
    }
}
