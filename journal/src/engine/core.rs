//! One core of the journal: owns the shards that hash to it and serves
//! their requests, which arrive on a bounded channel from any thread.
//!
//! [`run_core`] is a plain future: the journal's own executors run it, and
//! so can an embedding application on executors it already has.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use crate::engine::request::{Request, Response};
use crate::error::{JournalError, Result};
use crate::record::RecordIn;
use crate::shard::{validate_name, AckTo, AppendAck, Shard};

/// Requests being served at once on one core; more wait in the channel.
const MAX_IN_FLIGHT: u64 = 4096;

/// Tells the journals of one process apart (the address of a handle's
/// shared state); 0 for a core that no [`Journal`](crate::Journal) knows.
pub type JournalKey = usize;

thread_local! {
    /// The cores running on this thread, for appends made on the thread of
    /// the core that owns the shard.
    static LOCAL_CORES: RefCell<Vec<(JournalKey, usize, std::rc::Weak<Core>)>> =
        const { RefCell::new(Vec::new()) };
}

/// When core `core` of journal `key` runs on this thread: queues the
/// append straight to the shard's writer (no trip through the core's
/// channel) and returns where its outcome will come; otherwise gives the
/// records back.
pub fn append_here(
    key: JournalKey,
    core: usize,
    shard: &str,
    records: Vec<RecordIn>,
) -> std::result::Result<flume::Receiver<Result<AppendAck>>, Vec<RecordIn>> {
    if key == 0 {
        return Err(records);
    }
    let found = LOCAL_CORES.with(|l| {
        l.borrow()
            .iter()
            .find(|(k, c, _)| *k == key && *c == core)
            .and_then(|(_, _, w)| w.upgrade())
    });
    let Some(core) = found else {
        return Err(records);
    };
    let (tx, rx) = flume::bounded(1);
    match core.shard(shard) {
        Err(e) => {
            let _ = tx.try_send(Err(e));
        }
        Ok(target) => {
            if let Some(op) = target.append_to(records, AckTo::Local(tx)) {
                // The writer's queue is full: a task waits for room.
                glommio::spawn_local(async move { target.enqueue(op).await }).detach();
            }
        }
    }
    Ok(rx)
}

/// A message to a core.
pub enum CoreMsg {
    /// Serve a request and send the answer.
    Request(Request, flume::Sender<Result<Response>>),
    /// Close every shard, then signal.
    Stop(flume::Sender<()>),
    /// Run a function on the core's thread (it may spawn local tasks).
    Run(Box<dyn FnOnce() + Send>),
}

/// The core that owns shard `name` among `cores`.
pub fn owner(name: &str, cores: usize) -> usize {
    crc32c::crc32c(name.as_bytes()) as usize % cores.max(1)
}

/// Where a core runs and what it owns.
#[derive(Clone)]
pub struct CoreSpec {
    /// This core's index.
    pub id: usize,
    /// How many cores share the shards.
    pub cores: usize,
    /// The directory holding one directory per shard.
    pub root: PathBuf,
    /// Segment files to reuse, shared by the cores.
    pub pool: crate::recycle::Recycler,
    /// How often retention runs.
    pub retention_check: Duration,
    /// The RPC listener to serve, with the handle its connections use.
    pub listen: Option<(std::net::SocketAddr, crate::engine::Journal)>,
    /// The journal this core belongs to, so that its handle's appends made
    /// on this thread skip the channel (0: they always use it).
    pub journal: JournalKey,
}

struct Core {
    spec: CoreSpec,
    shards: RefCell<HashMap<String, Rc<Shard>>>,
    busy: RefCell<HashSet<String>>,
    broken: RefCell<HashMap<String, String>>,
}

/// Opens this core's shards, then serves requests until told to stop or
/// until every sender is gone. `ready` gets the result of the opening.
pub async fn run_core(
    spec: CoreSpec,
    rx: flume::Receiver<CoreMsg>,
    ready: flume::Sender<Result<()>>,
) {
    let core = Rc::new(Core {
        spec,
        shards: RefCell::new(HashMap::new()),
        busy: RefCell::new(HashSet::new()),
        broken: RefCell::new(HashMap::new()),
    });
    if let Err(e) = core.open_owned().await {
        let _ = ready.send(Err(e));
        return;
    }
    let server = match core.spec.listen.clone() {
        Some((addr, journal)) => match crate::server::bind(addr) {
            Ok(l) => Some(glommio::spawn_local(crate::server::serve(l, journal))),
            Err(e) => {
                core.close_all().await;
                let _ = ready.send(Err(e));
                return;
            }
        },
        None => None,
    };
    let _ = ready.send(Ok(()));
    let local = (core.spec.journal, core.spec.id);
    if local.0 != 0 {
        LOCAL_CORES.with(|l| {
            l.borrow_mut()
                .push((local.0, local.1, Rc::downgrade(&core)))
        });
    }
    let stopping = Rc::new(std::cell::Cell::new(false));
    let ticker = glommio::spawn_local(retention_loop(core.clone(), stopping.clone()));
    let permits = Rc::new(glommio::sync::Semaphore::new(MAX_IN_FLIGHT));
    let mut done = None;
    while let Ok(msg) = rx.recv_async().await {
        match msg {
            CoreMsg::Stop(signal) => {
                done = Some(signal);
                break;
            }
            CoreMsg::Run(f) => f(),
            CoreMsg::Request(Request::Append { shard, records }, reply) => {
                // The fast path: straight into the shard's queue, answered by
                // its writer; a task only when the queue is full.
                let target = match core.shard(&shard) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = reply.try_send(Err(e));
                        continue;
                    }
                };
                if let Some(op) = target.append_to(records, AckTo::Remote(reply)) {
                    let Ok(permit) = permits.acquire_static_permit(1).await else {
                        break;
                    };
                    glommio::spawn_local(async move {
                        target.enqueue(op).await;
                        drop(permit);
                    })
                    .detach();
                }
            }
            CoreMsg::Request(req, reply) => {
                let Ok(permit) = permits.acquire_static_permit(1).await else {
                    break;
                };
                let core = core.clone();
                glommio::spawn_local(async move {
                    let _ = reply.send_async(core.handle(req).await).await;
                    drop(permit);
                })
                .detach();
            }
        }
    }
    LOCAL_CORES.with(|l| l.borrow_mut().retain(|(k, c, _)| (*k, *c) != local));
    stopping.set(true);
    drop(server);
    let _ = permits.acquire(MAX_IN_FLIGHT).await;
    core.close_all().await;
    drop(ticker);
    if let Some(signal) = done {
        let _ = signal.send(());
    }
}

async fn retention_loop(core: Rc<Core>, stopping: Rc<std::cell::Cell<bool>>) {
    while !stopping.get() {
        glommio::timer::sleep(core.spec.retention_check).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let shards: Vec<_> = core.shards.borrow().values().cloned().collect();
        for shard in shards {
            if let Err(e) = shard.apply_retention(now) {
                tracing::warn!(shard = %shard.name(), error = %e, "retention failed");
            }
        }
    }
}

impl Core {
    async fn open_owned(&self) -> Result<()> {
        std::fs::create_dir_all(&self.spec.root)
            .map_err(|e| JournalError::io(format!("creating {}", self.spec.root.display()), e))?;
        let entries = std::fs::read_dir(&self.spec.root)
            .map_err(|e| JournalError::io(format!("listing {}", self.spec.root.display()), e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_name(&name).is_err() || owner(&name, self.spec.cores) != self.spec.id {
                continue;
            }
            match Shard::open_in(&entry.path(), self.spec.pool.clone()).await {
                Ok(shard) => {
                    tracing::info!(shard = %name, core = self.spec.id, info = ?shard.info(), "shard opened");
                    self.shards.borrow_mut().insert(name, shard);
                }
                Err(e) => {
                    tracing::error!(shard = %name, error = %e, "shard cannot be opened");
                    self.broken.borrow_mut().insert(name, e.to_string());
                }
            }
        }
        Ok(())
    }

    async fn close_all(&self) {
        let shards: Vec<_> = self.shards.borrow_mut().drain().collect();
        for (name, shard) in shards {
            if let Err(e) = shard.close().await {
                tracing::warn!(shard = %name, error = %e, "shard did not close cleanly");
            }
        }
    }

    fn shard(&self, name: &str) -> Result<Rc<Shard>> {
        if let Some(s) = self.shards.borrow().get(name) {
            return Ok(s.clone());
        }
        match self.broken.borrow().get(name) {
            Some(why) => Err(JournalError::Corrupt {
                path: self.spec.root.join(name),
                position: 0,
                reason: format!("shard failed to open: {why}"),
            }),
            None => Err(JournalError::ShardNotFound(name.to_string())),
        }
    }

    async fn handle(&self, req: Request) -> Result<Response> {
        match req {
            Request::CreateShard { name, config } => self.create(name, config).await,
            Request::DeleteShard { name } => self.delete(name).await,
            Request::ListShards => Ok(Response::Shards(
                self.shards.borrow().values().map(|s| s.info()).collect(),
            )),
            Request::DescribeShard { name } => Ok(Response::Shard(self.shard(&name)?.info())),
            Request::Append { shard, records } => Ok(Response::Appended(
                self.shard(&shard)?.append(records).await?,
            )),
            Request::Read {
                shard,
                offset,
                limits,
            } => Ok(Response::Records(
                self.shard(&shard)?.read(offset, limits).await?,
            )),
            Request::OffsetForTime { shard, timestamp } => Ok(Response::Offset(
                self.shard(&shard)?.offset_for_time(timestamp).await?,
            )),
            Request::ListSegments { shard } => {
                Ok(Response::Segments(self.shard(&shard)?.segments()))
            }
            Request::DescribeSegment { shard, base_offset } => Ok(Response::Segment(
                self.shard(&shard)?.describe_segment(base_offset)?,
            )),
            Request::SealSegment { shard } => {
                Ok(Response::Sealed(self.shard(&shard)?.seal().await?))
            }
            Request::DeleteSegment { shard, base_offset } => {
                self.shard(&shard)?.delete_segment(base_offset)?;
                Ok(Response::Done)
            }
            Request::CommitOffset {
                shard,
                group,
                offset,
            } => {
                self.shard(&shard)?.commit_offset(&group, offset)?;
                Ok(Response::Done)
            }
            Request::GetOffset { shard, group } => {
                Ok(Response::Offset(self.shard(&shard)?.get_offset(&group)?))
            }
        }
    }

    async fn create(&self, name: String, config: crate::meta::ShardConfig) -> Result<Response> {
        validate_name(&name)?;
        if self.shards.borrow().contains_key(&name) || !self.busy.borrow_mut().insert(name.clone())
        {
            return Err(JournalError::ShardExists(name));
        }
        let pool = self.spec.pool.clone();
        let created = Shard::create_in(&self.spec.root, &name, config, pool).await;
        self.busy.borrow_mut().remove(&name);
        let shard = created?;
        self.shards.borrow_mut().insert(name, shard);
        Ok(Response::Done)
    }

    async fn delete(&self, name: String) -> Result<Response> {
        let shard = self
            .shards
            .borrow_mut()
            .remove(&name)
            .ok_or_else(|| JournalError::ShardNotFound(name.clone()))?;
        self.busy.borrow_mut().insert(name.clone());
        let result = shard.destroy().await;
        self.busy.borrow_mut().remove(&name);
        result.map(|()| Response::Done)
    }
}
