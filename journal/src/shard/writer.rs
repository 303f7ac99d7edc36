//! The writer task of a shard: group commit, fsync policy, segment roll.
//!
//! Appends queue up in a bounded channel while writes are in flight. Each
//! turn takes everything queued (up to a bound) and encodes it into direct
//! writes (256 KiB while the device has little queued, 1 MiB once it is
//! busy), with up to 8 MiB in flight (a write that the next may overlap
//! ends with a pad frame on a page boundary). Writes complete
//! in order: under `interval` and `never` each one's appends are published
//! and acknowledged as it completes; under `always` the group gets one
//! fdatasync, then is published and acknowledged.

use std::collections::VecDeque;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::engine::Response;
use crate::error::{JournalError, Result};
use crate::format::{batch_len, encode_batch, BatchStamp};
use crate::index::{self, IndexEntry};
use crate::lifecycle::SegmentStatus;
use crate::meta::{FsyncPolicy, ShardConfig};
use crate::record::RecordIn;
use crate::segment::{self, PreparedWrite, TailWriter};
use crate::shard::state::{SegmentHandle, SharedState};

/// Where a reply goes.
pub type Reply<T> = flume::Sender<Result<T>>;

/// The offsets an append got: `base_offset .. base_offset + count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendAck {
    /// Offset of the first record.
    pub base_offset: u64,
    /// Number of records.
    pub count: u32,
}

/// A request to the writer task.
pub enum WriteOp {
    /// Append one batch of (already validated) records.
    Append {
        /// The records.
        records: Vec<RecordIn>,
        /// Their encoded size.
        size: usize,
        /// Where the offsets go.
        reply: AckTo,
    },
    /// Seal the `Write` segment and start a new one; replies its base offset.
    Seal {
        /// Where the result goes.
        reply: Reply<u64>,
    },
    /// Flush, sync and stop.
    Close {
        /// Signalled when done.
        reply: Reply<()>,
    },
}

/// Most bytes in one direct write while the device has less than
/// [`BUSY_BYTES`] queued: small writes get an idle device going sooner.
const SMALL_WRITE_BYTES: usize = 256 << 10;
/// Most bytes in one direct write once the device is busy: fewer, larger
/// writes cost less per byte (each direct write into preallocated space is
/// one extent conversion in the file system) and a deep queue hides their
/// latency. With 512 writers of 16 KiB (8 MiB offered, like fio's
/// reference): 1,598 MB/s (median of 3, interleaved) against 1,396 with
/// 256 KiB writes, 16 in flight; 64 writers (1 MiB offered) stay at 256
/// KiB writes and were unchanged.
const LARGE_WRITE_BYTES: usize = 1 << 20;
/// Bytes in flight from which the device counts as busy.
const BUSY_BYTES: u64 = 1 << 20;
/// Most direct writes of one shard in flight at once.
const MAX_IN_FLIGHT: usize = 16;
/// Most bytes of one shard in flight at once (fio's reference run keeps
/// 8 x 1 MiB queued).
const MAX_IN_FLIGHT_BYTES: u64 = 8 << 20;
/// Room kept at the end of a segment for a pad frame.
pub const PAD_RESERVE: u64 = 8192;
/// Index entries buffered before they are written to the index files
/// (they are also written at every fdatasync and when the writer stops).
const INDEX_FLUSH_ENTRIES: usize = 64;
/// Most operations taken from the queue in one turn.
const MAX_GROUP_OPS: usize = 4096;

/// The state of the active segment, owned by the writer task.
pub struct Writer {
    /// The shard's shared state.
    pub state: SharedState,
    /// The tail writer of the `Write` segment.
    pub tail: TailWriter,
    /// Base offset of the `Write` segment.
    pub base: u64,
    /// Its write generation.
    pub generation: u32,
    /// The next offset to assign.
    pub next_offset: u64,
    /// The last timestamp given (timestamps never go back).
    pub last_ts: u64,
    /// Position of the last index entry.
    pub last_index_pos: u64,
    /// Newest timestamp in the segment.
    pub max_ts: Option<u64>,
    /// Index entries of written but not yet published batches.
    pub pending_index: Vec<IndexEntry>,
    /// The open index files of the `Write` segment.
    pub index_files: index::IndexAppender,
    /// Written but not synced data exists.
    pub dirty: bool,
    /// Direct writes issued and not yet completed, oldest first.
    pub inflight: InFlight,
    /// Bytes of those writes.
    pub inflight_bytes: u64,
    /// Under `interval`: the fdatasync running alongside the writes.
    pub background_sync: Option<glommio::Task<Result<()>>>,
    /// Counters, logged at debug level when the writer stops.
    pub stats: WriterStats,
    /// The shard's configuration.
    pub config: ShardConfig,
}

type Pending = Vec<(AckTo, AppendAck)>;
type Append = (Vec<RecordIn>, usize, AckTo);

/// Where the outcome of an append goes: straight to whoever waits for it,
/// so that a request from another thread needs no task on this core.
pub enum AckTo {
    /// A caller of [`Shard::append`](crate::shard::Shard::append).
    Local(Reply<AppendAck>),
    /// A caller of the engine, waiting for a [`Response`].
    Remote(flume::Sender<Result<Response>>),
}

impl AckTo {
    /// Sends the outcome (the waiting side may have gone; that is fine).
    pub fn send(self, r: Result<AppendAck>) {
        match self {
            AckTo::Local(tx) => {
                let _ = tx.try_send(r);
            }
            AckTo::Remote(tx) => {
                let _ = tx.try_send(r.map(Response::Appended));
            }
        }
    }
}

/// What a write in flight will make visible once it completes.
pub struct ChunkState {
    issued: Instant,
    bytes: u64,
    end: u64,
    next_offset: u64,
    max_ts: Option<u64>,
    index: Vec<IndexEntry>,
    acks: Pending,
}

/// Writes in flight, oldest first.
pub type InFlight = VecDeque<(glommio::Task<Result<()>>, ChunkState)>;

/// What the writer did (diagnostics).
#[derive(Debug, Default, Clone, Copy)]
pub struct WriterStats {
    /// Groups taken from the queue.
    pub groups: u64,
    /// Appends written.
    pub appends: u64,
    /// Direct writes issued.
    pub writes: u64,
    /// Bytes of those writes (pages rewritten and pads included).
    pub write_bytes: u64,
    /// Writes that ended with a pad frame.
    pub padded: u64,
    /// Sum over writes of the microseconds from issue to completion seen.
    pub write_us: u64,
    /// Sum over writes of the writes already in flight when it was issued.
    pub depth: u64,
}

/// What the idle writer woke up for.
enum Event {
    /// An op arrived (or the queue closed).
    Op(Option<WriteOp>),
    /// The oldest write completed.
    Written(Result<()>),
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Writer {
    /// Runs until a `Close` op or until every sender is gone.
    pub async fn run(mut self, rx: flume::Receiver<WriteOp>) {
        let mut deadline: Option<Instant> = None;
        while let Some(first) = self.next_op(&rx, &mut deadline).await {
            let mut ops = vec![first];
            while ops.len() < MAX_GROUP_OPS {
                match rx.try_recv() {
                    Ok(op) => ops.push(op),
                    Err(_) => break,
                }
            }
            if self.handle_group(ops).await {
                return;
            }
        }
        self.finish().await;
    }

    /// Waits for the next op; under `interval`, syncs when the period ends.
    async fn next_op(
        &mut self,
        rx: &flume::Receiver<WriteOp>,
        deadline: &mut Option<Instant>,
    ) -> Option<WriteOp> {
        loop {
            if self.sync_due(deadline) {
                // Under sustained load writes are always in flight: the
                // period is checked here too, not only when idle.
                *deadline = None;
                self.start_background_sync().await;
                continue;
            }
            if let Some(front) = self.inflight.front_mut() {
                let recv = async { Event::Op(rx.recv_async().await.ok()) };
                let done = async {
                    let poll = |cx: &mut std::task::Context<'_>| {
                        std::future::Future::poll(std::pin::Pin::new(&mut front.0), cx)
                    };
                    Event::Written(futures_lite::future::poll_fn(poll).await)
                };
                match futures_lite::future::or(recv, done).await {
                    Event::Op(op) => return op,
                    Event::Written(result) => {
                        let chunk = self.pop_inflight().map(|(_, c)| c);
                        let finished = match chunk {
                            Some(chunk) => self.finish_chunk(result, chunk, &mut Vec::new()),
                            None => Ok(()),
                        };
                        if let Err(e) = finished {
                            self.fail_in_flight(&e).await;
                        }
                        continue;
                    }
                }
            }
            if !self.dirty || self.config.fsync != FsyncPolicy::Interval {
                return rx.recv_async().await.ok();
            }
            let due = *deadline.get_or_insert_with(|| {
                Instant::now() + Duration::from_millis(self.config.fsync_interval_ms)
            });
            let wait = due.saturating_duration_since(Instant::now());
            let recv = async { Some(rx.recv_async().await.ok()) };
            let timer = async {
                glommio::timer::sleep(wait).await;
                None
            };
            match futures_lite::future::or(recv, timer).await {
                Some(op) => return op,
                None => {
                    *deadline = None;
                    self.start_background_sync().await;
                }
            }
        }
    }

    /// Under `interval`: starts an fdatasync that runs while appends go on
    /// being written and acknowledged (their acknowledgement never waits
    /// for it). It covers every write completed before it starts; writes
    /// still in flight keep the shard dirty, for the next period. When the
    /// previous one still runs, nothing starts and the next period retries.
    async fn start_background_sync(&mut self) {
        if let Some(task) = self.background_sync.as_mut() {
            match futures_lite::future::poll_once(task).await {
                None => return,
                Some(result) => {
                    self.background_sync = None;
                    self.synced(result);
                }
            }
        }
        if self.state.borrow().failed.is_some() {
            // Nothing more will be written; stop the idle timer too.
            self.dirty = false;
            return;
        }
        self.flush_index();
        self.dirty = !self.inflight.is_empty();
        self.background_sync = Some(glommio::spawn_local(self.tail.detached_sync()));
    }

    /// Waits for the background fdatasync, if one runs.
    async fn join_background_sync(&mut self) {
        if let Some(task) = self.background_sync.take() {
            let result = task.await;
            self.synced(result);
        }
    }

    /// Counts a completed fdatasync, or fails the shard (a failed fsync is
    /// not retried: what it should have made durable is unknown).
    fn synced(&mut self, result: Result<()>) {
        match result {
            Ok(()) => self.state.borrow_mut().syncs += 1,
            Err(e) => self.fail(&e),
        }
    }

    /// Whether the `interval` fdatasync is due (starting the period at the
    /// first unsynced write).
    fn sync_due(&self, deadline: &mut Option<Instant>) -> bool {
        if !self.dirty || self.config.fsync != FsyncPolicy::Interval {
            return false;
        }
        let period = Duration::from_millis(self.config.fsync_interval_ms);
        Instant::now() >= *deadline.get_or_insert_with(|| Instant::now() + period)
    }

    /// Handles one group; returns true when the writer must stop.
    async fn handle_group(&mut self, ops: Vec<WriteOp>) -> bool {
        let mut appends = Vec::new();
        for op in ops {
            match op {
                WriteOp::Append {
                    records,
                    size,
                    reply,
                } => appends.push((records, size, reply)),
                WriteOp::Seal { reply } => {
                    self.commit(std::mem::take(&mut appends)).await;
                    let r = self.seal_explicit().await;
                    let _ = reply.try_send(r);
                }
                WriteOp::Close { reply } => {
                    self.commit(std::mem::take(&mut appends)).await;
                    self.finish().await;
                    let _ = reply.try_send(Ok(()));
                    return true;
                }
            }
        }
        self.commit(appends).await;
        false
    }

    async fn finish(&mut self) {
        tracing::debug!(stats = ?self.stats, "writer stopping");
        if let Err(e) = self.drain(&mut Vec::new()).await {
            self.fail_in_flight(&e).await;
        }
        self.join_background_sync().await;
        if self.dirty {
            if let Err(e) = self.sync_and_publish().await {
                self.fail(&e);
            }
        }
        self.flush_index();
    }

    /// After a failed write: fails the shard and every write still in flight.
    async fn fail_in_flight(&mut self, e: &JournalError) {
        self.fail(e);
        while let Some((task, chunk)) = self.pop_inflight() {
            let _ = task.await;
            for (reply, _) in chunk.acks {
                reply.send(Err(clone_err(e)));
            }
        }
    }

    fn fail(&mut self, e: &JournalError) {
        let mut st = self.state.borrow_mut();
        tracing::error!(shard = %st.name, error = %e, "shard write failed; refusing appends");
        st.failed = Some(e.to_string());
    }

    /// Writes a group of appends, syncs per policy, then acknowledges.
    async fn commit(&mut self, appends: Vec<Append>) {
        if appends.is_empty() {
            return;
        }
        self.stats.groups += 1;
        if let Err(e) = self.state.borrow().check_healthy() {
            for (_, _, reply) in appends {
                reply.send(Err(clone_err(&e)));
            }
            return;
        }
        let mut acked: Pending = Vec::with_capacity(appends.len());
        let result = self.write_all(appends, &mut acked).await;
        let result = match result {
            Ok(()) if self.config.fsync == FsyncPolicy::Always => self.sync_and_publish().await,
            // Each write publishes itself as it completes.
            Ok(()) => Ok(()),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                for (reply, ack) in acked {
                    reply.send(Ok(ack));
                }
            }
            Err(e) => {
                self.fail(&e);
                for (reply, _) in acked {
                    reply.send(Err(clone_err(&e)));
                }
            }
        }
    }

    async fn write_all(&mut self, appends: Vec<Append>, acked: &mut Pending) -> Result<()> {
        let result = self.write_pipelined(appends, acked).await;
        if let Err(e) = &result {
            // Let the writes already issued finish; their appends fail too.
            while let Some((task, chunk)) = self.pop_inflight() {
                let _ = task.await;
                acked.extend(chunk.acks);
            }
            tracing::debug!(error = %e, "group failed");
        }
        result
    }

    /// Takes the oldest write in flight off the queue.
    fn pop_inflight(&mut self) -> Option<(glommio::Task<Result<()>>, ChunkState)> {
        let next = self.inflight.pop_front();
        if let Some((_, chunk)) = &next {
            self.inflight_bytes -= chunk.bytes;
        }
        next
    }

    /// Most bytes for the next write: see [`LARGE_WRITE_BYTES`].
    fn write_limit(&self) -> usize {
        if self.inflight_bytes >= BUSY_BYTES {
            LARGE_WRITE_BYTES
        } else {
            SMALL_WRITE_BYTES
        }
    }

    fn room(&self) -> u64 {
        self.tail.remaining().saturating_sub(PAD_RESERVE)
    }

    /// Splits the group into writes of at most [`Writer::write_limit`], with
    /// up to [`MAX_IN_FLIGHT`] of them (and [`MAX_IN_FLIGHT_BYTES`]) in
    /// flight, rolling when a segment is full.
    /// Under `always` the group's writes are all complete on return; under
    /// the other policies the last ones may still be in flight (the writer
    /// completes them while it waits for the next group).
    async fn write_pipelined(&mut self, appends: Vec<Append>, acked: &mut Pending) -> Result<()> {
        let mut chunk = Vec::new();
        let mut chunk_bytes = 0usize;
        for (records, size, reply) in appends {
            let full = (chunk_bytes + size) as u64 > self.room();
            if (full || chunk_bytes + size > self.write_limit()) && !chunk.is_empty() {
                self.issue(std::mem::take(&mut chunk), !full, acked).await?;
                chunk_bytes = 0;
            }
            if size as u64 > self.room() {
                let t = Instant::now();
                self.drain(acked).await?;
                tracing::debug!(drain_us = t.elapsed().as_micros() as u64, "drained to roll");
                self.roll().await?;
            }
            chunk.push((records, size, reply));
            chunk_bytes += size;
        }
        if !chunk.is_empty() {
            let busy = !self.inflight.is_empty() && self.config.fsync != FsyncPolicy::Always;
            self.issue(chunk, busy, acked).await?;
        }
        if self.config.fsync == FsyncPolicy::Always {
            self.drain(acked).await?;
        }
        Ok(())
    }

    /// Issues one write. It may overlap the writes in flight only when the
    /// last of them ended on a page boundary (padded).
    async fn issue(&mut self, chunk: Vec<Append>, pad: bool, acked: &mut Pending) -> Result<()> {
        if !self.tail.is_aligned() {
            self.drain(acked).await?;
        }
        while self.inflight.len() >= MAX_IN_FLIGHT || self.inflight_bytes >= MAX_IN_FLIGHT_BYTES {
            self.complete_oldest(acked).await?;
        }
        self.stats.appends += chunk.len() as u64;
        let (write, state) = self.prepare_chunk(chunk, pad);
        self.stats.writes += 1;
        self.stats.write_bytes += write.len() as u64;
        self.stats.padded += u64::from(pad);
        self.stats.depth += self.inflight.len() as u64;
        self.inflight_bytes += state.bytes;
        self.inflight
            .push_back((glommio::spawn_local(write.submit()), state));
        Ok(())
    }

    async fn drain(&mut self, acked: &mut Pending) -> Result<()> {
        while !self.inflight.is_empty() {
            self.complete_oldest(acked).await?;
        }
        Ok(())
    }

    /// Waits for the oldest write. Under `interval` and `never` its appends
    /// are published and acknowledged at once; under `always` they wait for
    /// the group's fdatasync.
    async fn complete_oldest(&mut self, acked: &mut Pending) -> Result<()> {
        let Some((task, chunk)) = self.pop_inflight() else {
            return Ok(());
        };
        let result = task.await;
        self.finish_chunk(result, chunk, acked)
    }

    /// Handles a completed write. Under `interval` and `never` its appends
    /// are published and acknowledged at once; under `always` they wait in
    /// `acked` for the group's fdatasync.
    fn finish_chunk(
        &mut self,
        result: Result<()>,
        chunk: ChunkState,
        acked: &mut Pending,
    ) -> Result<()> {
        if let Err(e) = result {
            acked.extend(chunk.acks);
            return Err(e);
        }
        self.stats.write_us += chunk.issued.elapsed().as_micros() as u64;
        self.pending_index.extend(chunk.index);
        if self.config.fsync == FsyncPolicy::Always {
            acked.extend(chunk.acks);
            return Ok(());
        }
        self.publish_upto(chunk.end, chunk.next_offset, chunk.max_ts)?;
        for (reply, ack) in chunk.acks {
            reply.send(Ok(ack));
        }
        Ok(())
    }

    /// Encodes a chunk of batches into one direct write (not yet issued).
    fn prepare_chunk(&mut self, chunk: Vec<Append>, pad: bool) -> (PreparedWrite, ChunkState) {
        let ts = now_ms().max(self.last_ts);
        let start = self.tail.end();
        let mut plan = Vec::with_capacity(chunk.len());
        let mut index = Vec::new();
        let (mut pos, mut next) = (start, self.next_offset);
        for (records, size, _) in &chunk {
            debug_assert_eq!(*size, batch_len(records));
            if pos == 0 || pos - self.last_index_pos >= self.config.index_interval_bytes {
                index.push(IndexEntry {
                    offset: next,
                    position: pos,
                    timestamp: ts,
                });
                self.last_index_pos = pos;
            }
            plan.push((pos - start, *size, next));
            pos += *size as u64;
            next += records.len() as u64;
        }
        let generation = self.generation;
        let total = (pos - start) as usize;
        let write = self.tail.prepare(total, pad, |out| {
            for ((at, size, base_offset), (records, _, _)) in plan.iter().zip(&chunk) {
                let stamp = BatchStamp {
                    base_offset: *base_offset,
                    timestamp: ts,
                    generation,
                };
                encode_batch(&mut out[*at as usize..*at as usize + size], stamp, records);
            }
        });
        let acks = plan
            .into_iter()
            .zip(chunk)
            .map(|((_, _, base_offset), (records, _, reply))| {
                let ack = AppendAck {
                    base_offset,
                    count: records.len() as u32,
                };
                (reply, ack)
            })
            .collect();
        self.next_offset = next;
        self.last_ts = ts;
        self.max_ts = Some(ts);
        self.dirty = true;
        let state = ChunkState {
            issued: Instant::now(),
            bytes: write.len() as u64,
            end: self.tail.end(),
            next_offset: next,
            max_ts: self.max_ts,
            index,
            acks,
        };
        (write, state)
    }

    async fn sync_and_publish(&mut self) -> Result<()> {
        self.join_background_sync().await;
        self.state.borrow().check_healthy()?;
        self.tail.sync().await?;
        self.state.borrow_mut().syncs += 1;
        self.dirty = false;
        self.publish()?;
        self.flush_index();
        Ok(())
    }

    /// Makes everything written visible to readers and indexes it.
    fn publish(&mut self) -> Result<()> {
        self.publish_upto(self.tail.end(), self.next_offset, self.max_ts)
    }

    /// Makes the segment visible up to byte `end` (offset `next_offset`).
    fn publish_upto(&mut self, end: u64, next_offset: u64, max_ts: Option<u64>) -> Result<()> {
        let mut st = self.state.borrow_mut();
        let Some(h) = st.handles.get_mut(&self.base) else {
            return Err(JournalError::Stopped);
        };
        h.data_end = end;
        h.next_offset = next_offset;
        h.max_ts = max_ts;
        if self.pending_index.is_empty() {
            return Ok(());
        }
        for e in &self.pending_index {
            h.index.push(*e);
        }
        if self.index_files.log() != h.path {
            self.index_files = index::IndexAppender::new(h.path.clone());
        }
        for e in self.pending_index.drain(..) {
            self.index_files.push(e);
        }
        drop(st);
        if self.index_files.buffered() >= INDEX_FLUSH_ENTRIES {
            self.flush_index();
        }
        Ok(())
    }

    /// Writes the buffered index entries to the index files.
    fn flush_index(&mut self) {
        if let Err(err) = self.index_files.flush() {
            tracing::warn!(error = %err, "index entries not written; they will be rebuilt");
        }
    }

    async fn seal_explicit(&mut self) -> Result<u64> {
        if self.tail.end() == 0 {
            return Err(JournalError::InvalidArgument(
                "the Write segment is empty; nothing to seal".into(),
            ));
        }
        let sealed = self.base;
        self.drain(&mut Vec::new()).await?;
        self.roll().await?;
        Ok(sealed)
    }

    /// Seals the `Write` segment and opens the next one.
    async fn roll(&mut self) -> Result<()> {
        let t = Instant::now();
        self.seal_current().await?;
        let sealed = t.elapsed();
        self.open_next().await?;
        tracing::debug!(
            seal_us = sealed.as_micros() as u64,
            roll_us = t.elapsed().as_micros() as u64,
            "rolled"
        );
        Ok(())
    }

    /// Seals the `Write` segment in memory; the caller saves the table
    /// (with the next segment added, in one save: each save of the
    /// metadata costs two fsyncs on the executor). A crash before that save
    /// leaves the segment `Write`, which recovery scans and the next append
    /// rolls again.
    async fn seal_current(&mut self) -> Result<()> {
        let base = self.base;
        self.state
            .borrow_mut()
            .table
            .set_status(base, SegmentStatus::PrepareSealUp)?;
        self.sync_and_publish().await?;
        let mut st = self.state.borrow_mut();
        let (end, size, max_ts) = (self.next_offset, self.tail.end(), self.max_ts);
        if let Some(h) = st.handles.get(&base) {
            index::write_all(&h.path, &h.index)?;
        }
        st.table.set_sealed_extent(base, end, size, max_ts)?;
        st.table.set_status(base, SegmentStatus::SealUp)?;
        tracing::info!(shard = %st.name, segment = base, end, size, "segment sealed");
        Ok(())
    }

    async fn open_next(&mut self) -> Result<()> {
        let base = self.next_offset;
        let (path, capacity, pool) = {
            let mut st = self.state.borrow_mut();
            st.table.add_idle(base)?;
            st.save()?;
            let path = segment::log_path(&st.dir, base);
            (path, st.config.segment_bytes, st.pool.clone())
        };
        let (file, recycled) = segment::create_or_recycle(&pool, &path, capacity).await?;
        let file = Rc::new(file);
        remove_stale_indexes(&path);
        let generation = {
            let mut st = self.state.borrow_mut();
            if let Some(r) = recycled {
                st.table.set_recycled(base, r.generation)?;
            }
            st.table.set_status(base, SegmentStatus::Write)?;
            let generation = st.table.bump_generation(base)?;
            st.save()?;
            st.handles.insert(
                base,
                SegmentHandle {
                    base_offset: base,
                    path: path.clone(),
                    file: file.clone(),
                    index: Default::default(),
                    data_end: 0,
                    next_offset: base,
                    max_ts: None,
                },
            );
            generation
        };
        self.index_files = index::IndexAppender::new(path.clone());
        self.tail = TailWriter::open(file, path, 0, capacity).await?;
        self.base = base;
        self.generation = generation;
        self.last_index_pos = 0;
        self.max_ts = None;
        Ok(())
    }
}

/// Removes index files a crashed earlier attempt may have left.
pub fn remove_stale_indexes(log: &std::path::Path) {
    for p in [index::offset_path(log), index::time_path(log)] {
        let _ = std::fs::remove_file(p);
    }
}

/// A copy of an error for the many appends of one failed group.
pub fn clone_err(e: &JournalError) -> JournalError {
    match e {
        JournalError::Stopped => JournalError::Stopped,
        other => JournalError::io("append failed", std::io::Error::other(other.to_string())),
    }
}
