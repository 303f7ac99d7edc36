//! The journal engine: one glommio executor per core, each owning the shards
//! that hash to it, and a [`Journal`] handle that any thread or executor can
//! clone and use to send them requests over bounded channels.

pub mod core;
pub mod request;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use glommio::{LocalExecutorBuilder, Placement};

use crate::engine::core::{append_here, owner, run_core, CoreMsg, CoreSpec, JournalKey};
pub use crate::engine::request::{Request, Response};
use crate::error::{JournalError, Result};
use crate::meta::ShardConfig;
use crate::record::{Record, RecordIn};
use crate::shard::{AppendAck, ReadLimits, SegmentInfo, ShardInfo};

/// Requests queued per core before senders wait.
const CORE_QUEUE: usize = 8192;

/// Segment files kept for reuse by default: 4 GiB with the default
/// segment size, enough for several seconds of writes at full speed.
pub const DEFAULT_RECYCLE_SEGMENTS: usize = 4;

/// How to start the engine.
#[derive(Debug, Clone)]
pub struct JournalOptions {
    /// The directory holding one directory per shard.
    pub dir: PathBuf,
    /// Executors to run; 0 means one per CPU.
    pub cores: usize,
    /// Pin executor `i` to CPU `i`.
    pub pin: bool,
    /// How often retention runs.
    pub retention_check: Duration,
    /// Memory each executor registers with io_uring for DMA buffers.
    pub io_memory: usize,
    /// Serve the journal RPC on this address from every core (port 0 picks
    /// a free port; see [`Journal::rpc_addr`]).
    pub listen: Option<SocketAddr>,
    /// Files of deleted segments kept for new segments (0: none); see
    /// [`crate::recycle`].
    pub recycle_segments: usize,
}

impl JournalOptions {
    /// Defaults for a journal in `dir`: one unpinned core.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalOptions {
            dir: dir.into(),
            cores: 1,
            pin: false,
            retention_check: Duration::from_secs(10),
            io_memory: 2 << 20,
            listen: None,
            recycle_segments: DEFAULT_RECYCLE_SEGMENTS,
        }
    }
}

struct Inner {
    cores: Vec<flume::Sender<CoreMsg>>,
    rpc_addr: Option<SocketAddr>,
    threads: Mutex<Vec<glommio::ExecutorJoinHandle<()>>>,
}

/// A handle on a running journal; cheap to clone, usable from any thread.
/// Its methods are futures that any executor (or a plain `block_on`) can
/// drive.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("cores", &self.inner.cores.len())
            .finish()
    }
}

impl Journal {
    /// Starts the executors, opens and recovers every shard, and returns
    /// once all cores are serving.
    pub fn start(opts: JournalOptions) -> Result<Journal> {
        let cores = if opts.cores == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.cores
        };
        let rpc_addr = opts.listen.map(pick_port).transpose()?;
        let (senders, receivers): (Vec<_>, Vec<_>) =
            (0..cores).map(|_| flume::bounded(CORE_QUEUE)).unzip();
        crate::recycle::trim(&opts.dir, opts.recycle_segments);
        let journal = Journal {
            inner: Arc::new(Inner {
                cores: senders,
                rpc_addr,
                threads: Mutex::new(Vec::new()),
            }),
        };
        let mut readies = Vec::with_capacity(cores);
        for (id, rx) in receivers.into_iter().enumerate() {
            let (ready_tx, ready_rx) = flume::bounded(1);
            let spec = CoreSpec {
                id,
                cores,
                root: opts.dir.clone(),
                pool: crate::recycle::Recycler::new(&opts.dir, opts.recycle_segments),
                retention_check: opts.retention_check,
                listen: rpc_addr.map(|a| (a, journal.clone())),
                journal: journal.key(),
            };
            let placement = if opts.pin {
                Placement::Fixed(id)
            } else {
                Placement::Unbound
            };
            let started = LocalExecutorBuilder::new(placement)
                .name(&format!("journal-{id}"))
                .io_memory(opts.io_memory)
                .spawn(move || run_core(spec, rx, ready_tx));
            match started {
                Ok(handle) => journal.lock_threads().push(handle),
                Err(e) => {
                    journal.stop();
                    return Err(JournalError::io(format!("starting journal core {id}"), e));
                }
            }
            readies.push(ready_rx);
        }
        for ready in readies {
            let opened = ready.recv().unwrap_or(Err(JournalError::Stopped));
            if let Err(e) = opened {
                journal.stop();
                return Err(e);
            }
        }
        Ok(journal)
    }

    fn lock_threads(&self) -> std::sync::MutexGuard<'_, Vec<glommio::ExecutorJoinHandle<()>>> {
        self.inner.threads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The address the RPC server listens on, if it was asked for.
    pub fn rpc_addr(&self) -> Option<SocketAddr> {
        self.inner.rpc_addr
    }

    /// Closes every shard (flushing and syncing) and waits for the cores.
    pub fn stop(&self) {
        let mut waits = Vec::new();
        for core in &self.inner.cores {
            let (tx, rx) = flume::bounded(1);
            if core.send(CoreMsg::Stop(tx)).is_ok() {
                waits.push(rx);
            }
        }
        for w in waits {
            let _ = w.recv();
        }
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            if let Err(e) = t.join() {
                tracing::error!(error = %e, "journal core ended badly");
            }
        }
    }

    /// How many cores share the shards.
    pub fn cores(&self) -> usize {
        self.inner.cores.len()
    }

    /// Runs `f` on the thread of core `core` (modulo the number of cores),
    /// where it may spawn local tasks: an application that appends from
    /// the core owning the shard saves a thread hop per append and per
    /// acknowledgement. `f` must not block. The call itself blocks while
    /// the core's queue is full (call it from a plain thread, or from an
    /// executor only when that cannot deadlock).
    pub fn run_on_core(&self, core: usize, f: impl FnOnce() + Send + 'static) -> Result<()> {
        let cores = &self.inner.cores;
        cores[core % cores.len()]
            .send(CoreMsg::Run(Box::new(f)))
            .map_err(|_| JournalError::Stopped)
    }

    /// Tells this journal's cores from another journal's in the process.
    fn key(&self) -> JournalKey {
        Arc::as_ptr(&self.inner) as usize
    }

    /// The core that owns shard `name`.
    pub fn owner_core(&self, name: &str) -> usize {
        owner(name, self.cores())
    }

    /// Sends a request to core `core` and waits for the answer.
    async fn call_core(&self, core: usize, req: Request) -> Result<Response> {
        let (tx, rx) = flume::bounded(1);
        self.inner.cores[core]
            .send_async(CoreMsg::Request(req, tx))
            .await
            .map_err(|_| JournalError::Stopped)?;
        rx.recv_async().await.map_err(|_| JournalError::Stopped)?
    }

    /// Serves any request: routed to the shard's owner, or gathered from
    /// every core for [`Request::ListShards`].
    pub async fn call(&self, req: Request) -> Result<Response> {
        if let Request::Append { shard, records } = req {
            // Straight to the writer when on the owning core's thread (the
            // RPC server's connections run on the journal's cores).
            return self.append(&shard, records).await.map(Response::Appended);
        }
        match req.shard() {
            Some(shard) => {
                let core = owner(shard, self.cores());
                self.call_core(core, req).await
            }
            None => {
                let mut all = Vec::new();
                for core in 0..self.cores() {
                    if let Response::Shards(s) = self.call_core(core, Request::ListShards).await? {
                        all.extend(s);
                    }
                }
                all.sort_by(|a, b| a.name.cmp(&b.name));
                Ok(Response::Shards(all))
            }
        }
    }

    /// Creates a shard.
    pub async fn create_shard(&self, name: &str, config: ShardConfig) -> Result<()> {
        let req = Request::CreateShard {
            name: name.to_string(),
            config,
        };
        self.call(req).await.map(|_| ())
    }

    /// Deletes a shard and its data.
    pub async fn delete_shard(&self, name: &str) -> Result<()> {
        let req = Request::DeleteShard {
            name: name.to_string(),
        };
        self.call(req).await.map(|_| ())
    }

    /// Every shard, by name.
    pub async fn list_shards(&self) -> Result<Vec<ShardInfo>> {
        match self.call(Request::ListShards).await? {
            Response::Shards(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// One shard's summary.
    pub async fn describe_shard(&self, name: &str) -> Result<ShardInfo> {
        let req = Request::DescribeShard {
            name: name.to_string(),
        };
        match self.call(req).await? {
            Response::Shard(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Appends a batch; resolves once acknowledged under the shard's policy.
    /// Called on the thread of the core that owns the shard, it goes
    /// straight to the shard's writer.
    pub async fn append(&self, shard: &str, records: Vec<RecordIn>) -> Result<AppendAck> {
        let owner = owner(shard, self.cores());
        let records = match append_here(self.key(), owner, shard, records) {
            Ok(answer) => {
                return answer
                    .recv_async()
                    .await
                    .map_err(|_| JournalError::Stopped)?
            }
            Err(records) => records,
        };
        let req = Request::Append {
            shard: shard.to_string(),
            records,
        };
        match self.call_core(owner, req).await? {
            Response::Appended(a) => Ok(a),
            other => Err(unexpected(other)),
        }
    }

    /// Reads from `offset` within the limits.
    pub async fn read(&self, shard: &str, offset: u64, limits: ReadLimits) -> Result<Vec<Record>> {
        let req = Request::Read {
            shard: shard.to_string(),
            offset,
            limits,
        };
        match self.call(req).await? {
            Response::Records(r) => Ok(r),
            other => Err(unexpected(other)),
        }
    }

    /// The first offset at or after `timestamp` (ms since the epoch).
    pub async fn offset_for_time(&self, shard: &str, timestamp: u64) -> Result<Option<u64>> {
        let req = Request::OffsetForTime {
            shard: shard.to_string(),
            timestamp,
        };
        self.offset_answer(req).await
    }

    /// The shard's segments, oldest first.
    pub async fn list_segments(&self, shard: &str) -> Result<Vec<SegmentInfo>> {
        let req = Request::ListSegments {
            shard: shard.to_string(),
        };
        match self.call(req).await? {
            Response::Segments(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// One segment's summary.
    pub async fn describe_segment(&self, shard: &str, base_offset: u64) -> Result<SegmentInfo> {
        let req = Request::DescribeSegment {
            shard: shard.to_string(),
            base_offset,
        };
        match self.call(req).await? {
            Response::Segment(s) => Ok(s),
            other => Err(unexpected(other)),
        }
    }

    /// Seals the `Write` segment; returns its base offset.
    pub async fn seal_segment(&self, shard: &str) -> Result<u64> {
        let req = Request::SealSegment {
            shard: shard.to_string(),
        };
        match self.call(req).await? {
            Response::Sealed(b) => Ok(b),
            other => Err(unexpected(other)),
        }
    }

    /// Deletes the oldest segment, which must be sealed.
    pub async fn delete_segment(&self, shard: &str, base_offset: u64) -> Result<()> {
        let req = Request::DeleteSegment {
            shard: shard.to_string(),
            base_offset,
        };
        self.call(req).await.map(|_| ())
    }

    /// Commits the next offset `group` will read in `shard`.
    pub async fn commit_offset(&self, shard: &str, group: &str, offset: u64) -> Result<()> {
        let req = Request::CommitOffset {
            shard: shard.to_string(),
            group: group.to_string(),
            offset,
        };
        self.call(req).await.map(|_| ())
    }

    /// The offset `group` committed in `shard`.
    pub async fn get_offset(&self, shard: &str, group: &str) -> Result<Option<u64>> {
        let req = Request::GetOffset {
            shard: shard.to_string(),
            group: group.to_string(),
        };
        self.offset_answer(req).await
    }

    async fn offset_answer(&self, req: Request) -> Result<Option<u64>> {
        match self.call(req).await? {
            Response::Offset(o) => Ok(o),
            other => Err(unexpected(other)),
        }
    }
}

/// Replaces port 0 with a free port, so that every core binds the same one.
fn pick_port(addr: SocketAddr) -> Result<SocketAddr> {
    if addr.port() != 0 {
        return Ok(addr);
    }
    let probe = std::net::TcpListener::bind(addr)
        .map_err(|e| JournalError::io(format!("binding {addr}"), e))?;
    probe
        .local_addr()
        .map_err(|e| JournalError::io("reading the bound address", e))
}

fn unexpected(r: Response) -> JournalError {
    JournalError::InvalidArgument(format!("unexpected answer {r:?}"))
}
