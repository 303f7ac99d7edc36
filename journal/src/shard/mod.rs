//! One shard on its owner core: the public operations, over the shared
//! state, the writer task and the group offsets.

pub mod read;
pub mod recovery;
pub mod retention;
pub mod state;
pub mod writer;

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use crate::error::{JournalError, Result};
use crate::format::{batch_len, validate_record};
use crate::lifecycle::SegmentStatus;
use crate::meta::{self, ShardConfig, ShardMeta};
use crate::offsets::GroupOffsets;
use crate::record::{Record, RecordIn};
use crate::recycle::Recycler;
pub use read::ReadLimits;
pub use state::RecoveryReport;
use state::SharedState;
pub use writer::{AckTo, AppendAck, WriteOp};

/// Answers an op the writer will never see.
fn fail_op(op: WriteOp) {
    match op {
        WriteOp::Append { reply, .. } => reply.send(Err(JournalError::Stopped)),
        WriteOp::Seal { reply } => {
            let _ = reply.try_send(Err(JournalError::Stopped));
        }
        WriteOp::Close { reply } => {
            let _ = reply.try_send(Err(JournalError::Stopped));
        }
    }
}

/// Appends waiting for the writer, per shard, before senders wait.
const QUEUE_DEPTH: usize = 1024;
/// Largest batch of one append.
pub const MAX_BATCH_BYTES: usize = 16 << 20;

/// A summary of a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Its name.
    pub name: String,
    /// Its configuration.
    pub config: ShardConfig,
    /// First retained offset.
    pub start_offset: u64,
    /// Offset of the next record.
    pub end_offset: u64,
    /// Number of segments.
    pub segments: usize,
    /// Bytes of data.
    pub bytes: u64,
}

/// A summary of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentInfo {
    /// First offset.
    pub base_offset: u64,
    /// Offset after the last visible record.
    pub end_offset: u64,
    /// Lifecycle status.
    pub status: SegmentStatus,
    /// Bytes of data.
    pub bytes: u64,
    /// Newest timestamp, if any record.
    pub max_ts: Option<u64>,
    /// Offset index entries.
    pub index_entries: usize,
}

/// Checks a shard or group name: 1 to 200 of `A-Z a-z 0-9 . _ -`, not
/// starting with a dot.
pub fn validate_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() || name.len() > 200 {
        "must be 1 to 200 characters"
    } else if name.starts_with('.') {
        "must not start with a dot"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        "may only hold letters, digits, '.', '_' and '-'"
    } else {
        return Ok(());
    };
    Err(JournalError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// A shard open on its owner core.
pub struct Shard {
    state: SharedState,
    queue: flume::Sender<WriteOp>,
    offsets: RefCell<GroupOffsets>,
}

impl Shard {
    /// Creates shard `name` under `root` (`root/name/`), without recycling
    /// segment files.
    pub async fn create(root: &Path, name: &str, config: ShardConfig) -> Result<Rc<Shard>> {
        Self::create_in(root, name, config, Recycler::off()).await
    }

    /// Creates shard `name` under `root` (`root/name/`); its segments take
    /// and leave files in `pool`.
    pub async fn create_in(
        root: &Path,
        name: &str,
        config: ShardConfig,
        pool: Recycler,
    ) -> Result<Rc<Shard>> {
        validate_name(name)?;
        config.validate()?;
        let dir = root.join(name);
        if dir.exists() {
            return Err(JournalError::ShardExists(name.to_string()));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| JournalError::io(format!("creating {}", dir.display()), e))?;
        let m = ShardMeta {
            name: name.to_string(),
            config,
            segments: Vec::new(),
        };
        meta::save(&dir, &m)?;
        meta::sync_dir(root)?;
        Self::open_in(&dir, pool).await
    }

    /// Opens (and recovers) the shard in `dir`, without recycling segment
    /// files; starts its writer task.
    pub async fn open(dir: &Path) -> Result<Rc<Shard>> {
        Self::open_in(dir, Recycler::off()).await
    }

    /// Opens (and recovers) the shard in `dir`, its segments taking and
    /// leaving files in `pool`; starts its writer task.
    pub async fn open_in(dir: &Path, pool: Recycler) -> Result<Rc<Shard>> {
        let (state, writer) = recovery::open(dir, pool).await?;
        let offsets = RefCell::new(GroupOffsets::load(dir)?);
        let (queue, rx) = flume::bounded(QUEUE_DEPTH);
        glommio::spawn_local(writer.run(rx)).detach();
        Ok(Rc::new(Shard {
            state,
            queue,
            offsets,
        }))
    }

    /// The shard's name.
    pub fn name(&self) -> String {
        self.state.borrow().name.clone()
    }

    /// fdatasyncs of segment data since the shard was opened (diagnostics).
    pub fn sync_count(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// What recovery did when the shard was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.state.borrow().report.clone()
    }

    /// Appends a batch; returns its offsets once acknowledged per policy.
    pub async fn append(&self, records: Vec<RecordIn>) -> Result<AppendAck> {
        let (reply, rx) = flume::bounded(1);
        if let Some(op) = self.append_to(records, AckTo::Local(reply)) {
            self.enqueue(op).await;
        }
        rx.recv_async().await.map_err(|_| JournalError::Stopped)?
    }

    /// Checks an append and queues it for the writer, which sends the
    /// outcome to `ack`. Returns the op when the queue is full: the caller
    /// then waits with [`Shard::enqueue`].
    pub fn append_to(&self, records: Vec<RecordIn>, ack: AckTo) -> Option<WriteOp> {
        let size = match self.check_append(&records) {
            Ok(size) => size,
            Err(e) => {
                ack.send(Err(e));
                return None;
            }
        };
        let op = WriteOp::Append {
            records,
            size,
            reply: ack,
        };
        match self.queue.try_send(op) {
            Ok(()) => None,
            Err(flume::TrySendError::Full(op)) => Some(op),
            Err(flume::TrySendError::Disconnected(op)) => {
                fail_op(op);
                None
            }
        }
    }

    /// Queues an op, waiting while the writer's queue is full.
    pub async fn enqueue(&self, op: WriteOp) {
        if let Err(flume::SendError(op)) = self.queue.send_async(op).await {
            fail_op(op);
        }
    }

    /// Validates an append; returns its encoded size.
    fn check_append(&self, records: &[RecordIn]) -> Result<usize> {
        if records.is_empty() {
            return Err(JournalError::InvalidArgument("empty append".into()));
        }
        for r in records {
            validate_record(r).map_err(|e| JournalError::InvalidArgument(e.to_string()))?;
        }
        let size = batch_len(records);
        let segment = self.state.borrow().config.segment_bytes;
        let max = MAX_BATCH_BYTES.min(segment.saturating_sub(writer::PAD_RESERVE) as usize);
        if size > max {
            return Err(JournalError::TooLarge { size, max });
        }
        self.state.borrow().check_healthy()?;
        Ok(size)
    }

    /// Reads records from `from`.
    pub async fn read(&self, from: u64, limits: ReadLimits) -> Result<Vec<Record>> {
        read::read(&self.state, from, limits).await
    }

    /// The first offset with a timestamp at or after `ts` (ms).
    pub async fn offset_for_time(&self, ts: u64) -> Result<Option<u64>> {
        read::offset_for_time(&self.state, ts).await
    }

    /// Seals the `Write` segment; returns its base offset.
    pub async fn seal(&self) -> Result<u64> {
        let (reply, rx) = flume::bounded(1);
        self.queue
            .send_async(WriteOp::Seal { reply })
            .await
            .map_err(|_| JournalError::Stopped)?;
        rx.recv_async().await.map_err(|_| JournalError::Stopped)?
    }

    /// Flushes and stops the writer.
    pub async fn close(&self) -> Result<()> {
        let (reply, rx) = flume::bounded(1);
        if self
            .queue
            .send_async(WriteOp::Close { reply })
            .await
            .is_err()
        {
            return Ok(());
        }
        rx.recv_async().await.map_err(|_| JournalError::Stopped)?
    }

    /// Closes the shard and removes its files.
    pub async fn destroy(&self) -> Result<()> {
        self.close().await?;
        let dir = {
            let mut st = self.state.borrow_mut();
            st.failed = Some("shard deleted".into());
            for seg in st.table.all().to_vec() {
                if seg.status != SegmentStatus::PrepareDelete {
                    st.table
                        .set_status(seg.base_offset, SegmentStatus::PrepareDelete)?;
                }
            }
            // Files that reads in flight still hold are not recycled (they
            // could be overwritten under the read): they go with the
            // directory, and so does whatever the pool has no room for.
            let idle: Vec<u64> = std::mem::take(&mut st.handles)
                .into_iter()
                .filter(|(_, h)| Rc::strong_count(&h.file) == 1)
                .map(|(base, _)| base)
                .collect();
            st.save()?;
            for seg in st.table.all() {
                if idle.contains(&seg.base_offset) {
                    let log = crate::segment::log_path(&st.dir, seg.base_offset);
                    st.pool
                        .retire(&log, st.config.segment_bytes, seg.generation);
                }
            }
            st.dir.clone()
        };
        std::fs::remove_dir_all(&dir)
            .map_err(|e| JournalError::io(format!("removing {}", dir.display()), e))
    }

    /// A summary of the shard.
    pub fn info(&self) -> ShardInfo {
        let st = self.state.borrow();
        ShardInfo {
            name: st.name.clone(),
            config: st.config.clone(),
            start_offset: st.start_offset(),
            end_offset: st.end_offset(),
            segments: st.table.all().len(),
            bytes: st.total_bytes(),
        }
    }

    /// Summaries of the segments, oldest first.
    pub fn segments(&self) -> Vec<SegmentInfo> {
        let st = self.state.borrow();
        st.table
            .all()
            .iter()
            .map(|m| {
                let h = st.handles.get(&m.base_offset);
                SegmentInfo {
                    base_offset: m.base_offset,
                    end_offset: h.map_or(m.end_offset.unwrap_or(m.base_offset), |h| h.next_offset),
                    status: m.status,
                    bytes: h.map_or(0, |h| h.data_end),
                    max_ts: h.and_then(|h| h.max_ts),
                    index_entries: h.map_or(0, |h| h.index.entries().len()),
                }
            })
            .collect()
    }

    /// One segment's summary.
    pub fn describe_segment(&self, base_offset: u64) -> Result<SegmentInfo> {
        self.segments()
            .into_iter()
            .find(|s| s.base_offset == base_offset)
            .ok_or_else(|| JournalError::SegmentNotFound {
                shard: self.name(),
                base_offset,
            })
    }

    /// Deletes the oldest segment, which must be sealed.
    pub fn delete_segment(&self, base_offset: u64) -> Result<()> {
        retention::delete_oldest(&mut self.state.borrow_mut(), base_offset)
    }

    /// Drops the segments retention says are expired; returns them.
    pub fn apply_retention(&self, now_ms: u64) -> Result<Vec<u64>> {
        let mut st = self.state.borrow_mut();
        let expired = retention::expired(&st, now_ms);
        for base in &expired {
            retention::delete_oldest(&mut st, *base)?;
        }
        Ok(expired)
    }

    /// Commits the next offset `group` will read.
    pub fn commit_offset(&self, group: &str, offset: u64) -> Result<()> {
        validate_name(group)?;
        let end = self.state.borrow().end_offset();
        if offset > end {
            return Err(JournalError::OffsetOutOfRange {
                offset,
                start: 0,
                end: end + 1,
            });
        }
        self.offsets.borrow_mut().commit(group, offset)
    }

    /// The committed offset of `group`.
    pub fn get_offset(&self, group: &str) -> Result<Option<u64>> {
        validate_name(group)?;
        Ok(self.offsets.borrow().get(group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("orders-1.v2_x").is_ok());
        for bad in ["", ".hidden", "a/b", "..", "sp ace", &"x".repeat(201)] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
