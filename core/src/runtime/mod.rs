//! The only module that knows glommio: one pinned executor per core, each
//! with its own listener on the shared MQTT port (SO_REUSEPORT), the mesh
//! of channels between cores, timers, and the connection tasks.
//!
//! Everything protocol-shaped happens in [`crate::broker`]; this glue reads
//! sockets, feeds the core's broker, writes what it answers in batches and
//! carries its messages to other cores.

mod conn_io;
mod connection;
mod core_loop;
pub mod fd_table;
mod notify;
mod poller;

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::{LocalExecutorBuilder, Placement};
use robustmq_protocol::mqtt::{Connect, Decoder};

use crate::broker::mesh::CoreMsg;
use crate::broker::metrics::Metrics;
use crate::broker::{BrokerContext, MovedSession};
use crate::config::ServerConfig;

/// How long a core runs tasks before glommio polls its rings. Tasks that
/// always have work (a publisher's socket, the mesh) keep the task queue
/// from ever emptying, and a socket whose read waits in io_uring (a
/// subscriber's PUBACKs) is then seen only when this timer fires: at
/// glommio's default of 100 ms a QoS 1 subscriber got 32 messages (its
/// inflight window) per 100 ms.
const PREEMPT_TIMER: Duration = Duration::from_micros(100);

/// How long `Running::stop` waits for the cores (they drain connections
/// for at most 3 s).
const STOP_DEADLINE: Duration = Duration::from_secs(10);

/// What a core tells the thread that started it.
pub(crate) enum CoreEvent {
    /// Listening; a duplicate of its listener, so that `stop` can wake a
    /// parked core by shutting the listener down.
    Listening(OwnedFd),
    /// It could not start.
    Failed(String),
    /// It has stopped.
    Stopped,
}

/// What travels between cores.
pub(crate) enum MeshMsg {
    /// Messages between brokers, in order.
    Broker(Vec<CoreMsg>),
    /// A connection whose CONNECT was read on another core.
    HandOff(HandOff),
    /// A connected publisher moved here with its session.
    Move(Box<Move>),
}

/// A connection handed to the core that owns its client id, or by the
/// owner to the core that holds the session.
pub(crate) struct HandOff {
    fd: OwnedFd,
    connect: Box<Connect>,
    assigned: bool,
    leftover: Bytes,
    peer: Option<SocketAddr>,
    kind: HandOffKind,
}

/// Who hands a connection over, and so what the receiver does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandOffKind {
    /// The core that accepted it, to the owner of its client id.
    Accepted,
    /// The owner, to the core its client's session moved to.
    Forwarded,
    /// That core, back to the owner: it holds no session for the client.
    Returned,
}

/// A connected publisher and its session, on the way to the core its
/// messages go to (see `broker::affinity`).
pub(crate) struct Move {
    fd: OwnedFd,
    session: MovedSession,
    decoder: Decoder,
}

/// The running broker.
#[derive(Debug)]
pub struct Running {
    shutdown: Arc<AtomicBool>,
    executors: Vec<glommio::ExecutorJoinHandle<()>>,
    /// Each core's duplicate of its listener.
    listeners: Vec<OwnedFd>,
    /// Each core says here when it has stopped.
    events: mpsc::Receiver<CoreEvent>,
    /// The address clients connect to.
    pub addr: SocketAddr,
    /// Counters of every core.
    pub metrics: Arc<Metrics>,
}

impl Running {
    /// Stops accepting, tells 5.0 clients 0x8B, flushes, and waits for
    /// every core to finish.
    pub fn stop(self) {
        self.shutdown.store(true, Ordering::Release);
        // Wake every core even if it sleeps with nothing to do: epoll
        // reports the listener's hang-up to its poller (and the clock tick
        // sees the flag within 200 ms anyway).
        for fd in &self.listeners {
            // SAFETY: `fd` is a descriptor this struct owns; shutdown does
            // not close it and has no memory-safety preconditions.
            unsafe {
                libc::shutdown(fd.as_raw_fd(), libc::SHUT_RD);
            }
        }
        // A core that does not stop in time must not keep the process
        // from exiting: wait with a deadline, then leave it behind.
        let deadline = Instant::now() + STOP_DEADLINE;
        let mut stopped = 0;
        while stopped < self.executors.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(CoreEvent::Stopped) => stopped += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        if stopped < self.executors.len() {
            tracing::error!(
                stopped,
                cores = self.executors.len(),
                "broker cores did not stop within {STOP_DEADLINE:?}; leaving them behind"
            );
            return;
        }
        for e in self.executors {
            if let Err(e) = e.join() {
                tracing::error!("broker core ended badly: {e:?}");
            }
        }
        tracing::info!("mqtt broker stopped");
    }
}

/// Duplicates a descriptor.
pub(crate) fn dup_fd(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) has no memory-safety preconditions;
    // it returns a new descriptor (closed on exec, as the original) or -1.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// How many cores to run on.
fn core_count(asked: usize) -> usize {
    let available = thread::available_parallelism().map_or(1, |n| n.get());
    if asked == 0 {
        available
    } else {
        asked
    }
}

/// Reserves the listening port (resolving port 0) with a socket that is
/// bound but never listens, so it takes no connections, while the cores
/// bind the same port with SO_REUSEPORT.
fn reserve_port(addr: SocketAddr) -> Result<socket2::Socket, String> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    if addr.port() != 0 {
        // The cores share the port through SO_REUSEPORT, which would as
        // well let a second broker (same user) bind it and take half of the
        // connections, silently. A plain bind first fails if anything
        // listens there.
        let probe = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| format!("cannot create a socket: {e}"))?;
        probe
            .set_reuse_address(true)
            .map_err(|e| format!("cannot set SO_REUSEADDR: {e}"))?;
        probe.bind(&addr.into()).map_err(|e| {
            if e.kind() == std::io::ErrorKind::AddrInUse {
                format!("cannot bind MQTT listener {addr}: address in use (another broker or program listens there)")
            } else {
                format!("cannot bind MQTT listener {addr}: {e}")
            }
        })?;
    }
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("cannot create a socket: {e}"))?;
    socket
        .set_reuse_port(true)
        .map_err(|e| format!("cannot set SO_REUSEPORT: {e}"))?;
    // A restart binds the port again while the last run's connections sit
    // in TIME_WAIT.
    socket
        .set_reuse_address(true)
        .map_err(|e| format!("cannot set SO_REUSEADDR: {e}"))?;
    socket
        .bind(&addr.into())
        .map_err(|e| format!("cannot bind MQTT listener {addr}: {e}"))?;
    Ok(socket)
}

/// Keeps the kernel from backing this process's memory with 2 MiB
/// transparent huge pages. mimalloc asks for them on its arenas
/// (MADV_HUGEPAGE), so heap growth became resident 2 MiB at a time: about
/// 600 B more RSS per idle connection (10,000 connections: 1,589 against
/// 966 B) and 13 MiB more at start. Pages faulted in from now on are small.
fn disable_huge_pages() {
    // SAFETY: prctl with PR_SET_THP_DISABLE takes integer arguments only
    // and changes no memory this process uses.
    let r = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if r != 0 {
        tracing::debug!(
            "cannot disable transparent huge pages: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// Grows the descriptor table for every connection allowed, before the
/// cores start ([`fd_table`] says why). Not fatal: the table then grows
/// as it would have.
fn reserve_fd_table(max_connections: usize) {
    match fd_table::reserve(max_connections.saturating_add(fd_table::HEADROOM)) {
        Ok(fds) => tracing::debug!(fds, "descriptor table reserved"),
        Err(e) => tracing::warn!("cannot reserve the descriptor table: {e}"),
    }
}

/// Starts the broker on its cores and returns once every core listens.
pub fn start(config: &ServerConfig) -> Result<Running, String> {
    disable_huge_pages();
    reserve_fd_table(config.mqtt.max_connections);
    let mqtt = Arc::new(config.mqtt.clone());
    let acl = Arc::new(mqtt.acl().map_err(|e| e.to_string())?);
    let cores = core_count(mqtt.cores);
    if cores > 128 {
        return Err(format!(
            "mqtt.cores = {cores}: at most 128 cores are supported"
        ));
    }
    let reservation = reserve_port(mqtt.addr)?;
    let addr = reservation
        .local_addr()
        .ok()
        .and_then(|a| a.as_socket())
        .ok_or("cannot read the bound address")?;
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let metrics = Arc::new(Metrics::new(cores));
    let shutdown = Arc::new(AtomicBool::new(false));
    let mesh = MeshBuilder::full(cores, 1024);
    let windows = Arc::new(core_loop::MeshWindows::new(cores));
    let (ready_tx, ready_rx) = mpsc::channel::<CoreEvent>();
    let started = Instant::now();
    let mut executors = Vec::with_capacity(cores);
    for core in 0..cores {
        let ctx = BrokerContext {
            node_id: config.node_id,
            core,
            cores,
            config: mqtt.clone(),
            acl: acl.clone(),
            metrics: metrics.clone(),
            started,
        };
        let mesh = mesh.clone();
        let ready = ready_tx.clone();
        let shutdown = shutdown.clone();
        let windows = windows.clone();
        let handle = LocalExecutorBuilder::new(Placement::Fixed(core % cpus))
            .name(&format!("mqtt-core-{core}"))
            .preempt_timer(PREEMPT_TIMER)
            .spawn(move || core_loop::run(ctx, addr, mesh, ready, shutdown, windows))
            .map_err(|e| format!("cannot start executor for core {core}: {e}"))?;
        executors.push(handle);
    }
    drop(ready_tx);
    let mut listeners = Vec::with_capacity(cores);
    while listeners.len() < cores {
        match ready_rx.recv() {
            Ok(CoreEvent::Listening(fd)) => listeners.push(fd),
            Ok(CoreEvent::Failed(e)) => {
                shutdown.store(true, Ordering::Release);
                return Err(e);
            }
            Ok(CoreEvent::Stopped) | Err(_) => {
                return Err("a broker core failed to start".into());
            }
        }
    }
    drop(reservation);
    tracing::info!(%addr, cores, "MQTT broker listening");
    Ok(Running {
        shutdown,
        executors,
        listeners,
        events: ready_rx,
        addr,
        metrics,
    })
}
