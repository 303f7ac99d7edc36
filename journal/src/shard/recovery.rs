//! Opening a shard from disk: finishing interrupted lifecycle steps,
//! loading or rebuilding indexes, and cutting torn or corrupt tails.
//!
//! The `Write` (or `PrepareSealUp`) segment is scanned from its last index
//! point: every batch must start at the expected offset, carry a write
//! generation no older than the batch before it, and pass its CRCs. The first
//! batch that does not is where the log ends; the cut is logged and reported.

use std::path::Path;
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::error::{IoContext, JournalError, Result};
use crate::format::{parse_header, verify_batch, BatchHeader, BATCH_HEADER_LEN};
use crate::index::{self, IndexEntry, SegmentIndex};
use crate::lifecycle::SegmentStatus;
use crate::meta::{self, SegmentMeta, SegmentTable};
use crate::recycle::Recycler;
use crate::segment::{self, Step, TailWriter, WalkEnd};
use crate::shard::state::{SegmentHandle, ShardState, SharedState};
use crate::shard::writer::{remove_stale_indexes, Writer};

/// Bytes read at a time while scanning.
const SCAN_CHUNK: usize = 1 << 20;

/// What a scan of a segment found.
struct Scan {
    end: u64,
    next_offset: u64,
    max_ts: Option<u64>,
    /// Why the scan stopped before the end of the file, if it did.
    damage: Option<String>,
    /// Damaged batches skipped because valid data follows them:
    /// (position, reason).
    skipped: Vec<(u64, String)>,
}

/// Where a scan stands between two walks.
struct Cursor {
    pos: u64,
    next: u64,
    max_ts: Option<u64>,
    last_gen: u32,
    last_index_pos: u64,
}

/// Walks a segment from its last index point (or its beginning), checking
/// every batch and adding index points to `index`. Batches below the
/// segment's `floor` are what a recycled file held before: they end the log.
///
/// With `skip_damage` (sealed segments, whose every byte was written and
/// synced before the seal), a damaged batch whose header is intact and that
/// is followed by a valid batch continuing the offsets is corruption in
/// place: it is stepped over (and reported), so that the records after it
/// are kept. Without it (the `Write` segment), the first damage ends the
/// log: after a crash, damage there is far more likely a torn write, and
/// everything after a torn write was never acknowledged.
async fn scan(
    file: &DmaFile,
    path: &Path,
    seg: &SegmentMeta,
    limit: u64,
    interval: u64,
    index: &mut SegmentIndex,
    skip_damage: bool,
) -> Result<Scan> {
    let (base, floor) = (seg.base_offset, seg.floor);
    let start = index.last();
    let (pos, next) = start.map_or((0, base), |e| (e.position, e.offset));
    let mut c = Cursor {
        pos,
        next,
        max_ts: start.map(|e| e.timestamp),
        last_gen: floor,
        last_index_pos: pos,
    };
    let mut skipped = Vec::new();
    loop {
        let damage = walk_from(file, path, limit, interval, index, &mut c, start).await?;
        let Some(reason) = damage else {
            return Ok(Scan {
                end: c.pos,
                next_offset: c.next,
                max_ts: c.max_ts,
                damage: None,
                skipped,
            });
        };
        let step_over = match skip_damage {
            true => skippable(file, path, limit, &c).await?,
            false => None,
        };
        match step_over {
            Some(h) => {
                skipped.push((c.pos, reason));
                c.pos += u64::from(h.batch_len);
                c.next = h.next_offset();
                c.max_ts = Some(h.max_ts);
                c.last_gen = h.generation;
            }
            None => {
                return Ok(Scan {
                    end: c.pos,
                    next_offset: c.next,
                    max_ts: c.max_ts,
                    damage: Some(reason),
                    skipped,
                })
            }
        }
    }
}

/// One walk from the cursor; returns the damage that stopped it, if any.
async fn walk_from(
    file: &DmaFile,
    path: &Path,
    limit: u64,
    interval: u64,
    index: &mut SegmentIndex,
    c: &mut Cursor,
    start: Option<IndexEntry>,
) -> Result<Option<String>> {
    let mut new_entries = Vec::new();
    let walk = segment::walk(file, path, c.pos, limit, SCAN_CHUNK, |at, h, batch| {
        check_continues(h, c.next, c.last_gen)?;
        verify_batch(batch, h).map_err(|e| e.to_string())?;
        if (at == 0 || at - c.last_index_pos >= interval) && start.is_none_or(|s| s.position != at)
        {
            new_entries.push(IndexEntry {
                offset: h.base_offset,
                position: at,
                timestamp: h.first_ts,
            });
            c.last_index_pos = at;
        }
        c.next = h.next_offset();
        c.last_gen = h.generation;
        c.max_ts = Some(h.max_ts);
        Ok(Step::Next)
    })
    .await?;
    for e in new_entries {
        index.push(e);
    }
    c.pos = walk.position;
    Ok(match walk.end {
        WalkEnd::Damage(reason) => Some(reason),
        _ => None,
    })
}

fn check_continues(h: &BatchHeader, next: u64, last_gen: u32) -> std::result::Result<(), String> {
    if h.base_offset != next {
        return Err(format!(
            "batch at offset {} where {next} was expected",
            h.base_offset
        ));
    }
    if h.generation < last_gen {
        return Err(format!(
            "stale batch of generation {} after {last_gen}",
            h.generation
        ));
    }
    Ok(())
}

/// The header of the damaged batch at the cursor, when it is intact,
/// continues the offsets, and is followed by a valid batch that continues
/// them too.
async fn skippable(
    file: &DmaFile,
    path: &Path,
    limit: u64,
    c: &Cursor,
) -> Result<Option<BatchHeader>> {
    let head = segment::read_bytes(file, path, c.pos, BATCH_HEADER_LEN).await?;
    let Ok(h) = parse_header(&head) else {
        return Ok(None);
    };
    let after = c.pos + u64::from(h.batch_len);
    if check_continues(&h, c.next, c.last_gen).is_err() || after >= limit {
        return Ok(None);
    }
    let walk = segment::walk(file, path, after, limit, SCAN_CHUNK, |_, next, batch| {
        check_continues(next, h.next_offset(), h.generation)?;
        verify_batch(batch, next).map_err(|e| e.to_string())?;
        Ok(Step::Stop)
    })
    .await?;
    Ok((walk.end == WalkEnd::Stopped).then_some(h))
}

fn load_index(st: &mut ShardState, path: &Path, base: u64, data_len: u64) -> SegmentIndex {
    match index::load(path, base, data_len) {
        Ok(i) => i,
        Err(damage) => {
            if damage != index::IndexDamage::Missing || data_len > 0 {
                tracing::warn!(shard = %st.name, segment = base, ?damage, "index unusable; rebuilding");
                st.report
                    .rebuilt_indexes
                    .push((base, format!("{damage:?}")));
            }
            SegmentIndex::default()
        }
    }
}

/// Reports damaged batches that the scan stepped over.
fn report_skipped(st: &mut ShardState, base: u64, skipped: &[(u64, String)]) {
    for (position, reason) in skipped {
        tracing::error!(shard = %st.name, segment = base, position, %reason, "damaged batch kept in place; reads of it fail");
        st.report.damaged.push((base, *position, reason.clone()));
    }
}

/// Recovers the tail of a `Write` or `PrepareSealUp` segment.
async fn recover_tail(st: &mut ShardState, seg: &SegmentMeta) -> Result<SegmentHandle> {
    let base = seg.base_offset;
    let path = segment::log_path(&st.dir, base);
    let file = Rc::new(segment::open(&path).await?);
    let limit = file
        .file_size()
        .await
        .ctx(|| format!("size of {}", path.display()))?;
    let mut index = load_index(st, &path, base, limit);
    let found = loop {
        let found = scan(
            &file,
            &path,
            seg,
            limit,
            st.config.index_interval_bytes,
            &mut index,
            false,
        )
        .await?;
        match index.last() {
            Some(last) if found.end == last.position && found.damage.is_some() => {
                st.report
                    .rebuilt_indexes
                    .push((base, "index points at a bad batch".into()));
                index.truncate_at(last.position);
            }
            _ => break found,
        }
    };
    report_skipped(st, base, &found.skipped);
    match &found.damage {
        // A recycled file holds its earlier batches after the end, not
        // zeros: whatever is there (an older batch, or the middle of one)
        // ends the log as zeros would. A torn write of this segment looks
        // the same there and ends the log too; it is only not reported.
        Some(reason) if seg.floor > 0 => {
            tracing::debug!(shard = %st.name, segment = base, position = found.end, %reason, "end of a recycled segment's data");
        }
        Some(reason) => {
            tracing::warn!(shard = %st.name, segment = base, position = found.end, %reason, "torn or corrupt tail cut");
            st.report.truncated.push((base, found.end, reason.clone()));
        }
        None => {}
    }
    index.truncate_at(found.end);
    index::write_all(&path, &index)?;
    Ok(SegmentHandle {
        base_offset: base,
        path,
        file,
        index,
        data_end: found.end,
        next_offset: found.next_offset,
        max_ts: found.max_ts,
    })
}

/// Opens a sealed segment, rebuilding its index when needed.
async fn open_sealed(st: &mut ShardState, seg: &SegmentMeta) -> Result<SegmentHandle> {
    let base = seg.base_offset;
    let path = segment::log_path(&st.dir, base);
    let file = Rc::new(segment::open(&path).await?);
    let size = seg.size_bytes.unwrap_or(0);
    let mut index = load_index(st, &path, base, size);
    if index.entries().is_empty() && size > 0 {
        let found = scan(
            &file,
            &path,
            seg,
            size,
            st.config.index_interval_bytes,
            &mut index,
            true,
        )
        .await?;
        report_skipped(st, base, &found.skipped);
        if let Some(reason) = found.damage {
            tracing::error!(shard = %st.name, segment = base, position = found.end, %reason, "sealed segment damaged");
            st.report.damaged.push((base, found.end, reason));
        }
        index::write_all(&path, &index)?;
    }
    Ok(SegmentHandle {
        base_offset: base,
        path,
        file,
        index,
        data_end: size,
        next_offset: seg.end_offset.unwrap_or(base),
        max_ts: seg.max_ts,
    })
}

/// Deletes a segment (finishing a deletion a crash interrupted): its log
/// file goes to the pool when nothing reads it any more and the pool has
/// room, else it is removed.
pub fn finish_delete(st: &mut ShardState, base: u64) -> Result<()> {
    // A read in flight holds the file: recycled, it could be overwritten
    // by another shard under the read, so it is only removed then.
    let mut in_use = false;
    let status = st.table.get(base).map(|s| s.status);
    if status.is_some_and(|s| s != SegmentStatus::Deleting) {
        // A crash may have left it `PrepareDelete` already.
        if status != Some(SegmentStatus::PrepareDelete) {
            st.table.set_status(base, SegmentStatus::PrepareDelete)?;
            st.save()?;
        }
        in_use = st
            .handles
            .remove(&base)
            .is_some_and(|h| Rc::strong_count(&h.file) > 1);
        st.table.set_status(base, SegmentStatus::Deleting)?;
        st.save()?;
    }
    let log = segment::log_path(&st.dir, base);
    let generation = st.table.get(base).map_or(0, |s| s.generation);
    let recycled = !in_use && st.pool.retire(&log, st.config.segment_bytes, generation);
    let files = [index::offset_path(&log), index::time_path(&log), log];
    for p in &files[..if recycled { 2 } else { 3 }] {
        match std::fs::remove_file(p) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(JournalError::io(format!("removing {}", p.display()), e))
            }
            _ => {}
        }
    }
    st.table.remove_deleted(base)?;
    st.save()
}

/// Opens a shard directory: returns its state and the writer of its
/// `Write` segment (created when there is none).
pub async fn open(dir: &Path, pool: Recycler) -> Result<(SharedState, Writer)> {
    let m = meta::load(dir)?;
    let table = SegmentTable::from_loaded(m.segments)?;
    let mut st = ShardState {
        name: m.name,
        dir: dir.to_path_buf(),
        config: m.config,
        table,
        handles: Default::default(),
        failed: None,
        report: Default::default(),
        syncs: 0,
        pool,
    };
    for seg in st.table.all().to_vec() {
        let base = seg.base_offset;
        match seg.status {
            SegmentStatus::PrepareDelete | SegmentStatus::Deleting => finish_delete(&mut st, base)?,
            SegmentStatus::SealUp => {
                let h = open_sealed(&mut st, &seg).await?;
                st.handles.insert(base, h);
            }
            SegmentStatus::PrepareSealUp => {
                let h = recover_tail(&mut st, &seg).await?;
                st.table
                    .set_sealed_extent(base, h.next_offset, h.data_end, h.max_ts)?;
                st.table.set_status(base, SegmentStatus::SealUp)?;
                st.save()?;
                st.handles.insert(base, h);
            }
            SegmentStatus::Write => {
                let h = recover_tail(&mut st, &seg).await?;
                st.handles.insert(base, h);
            }
            SegmentStatus::Idle => {}
        }
    }
    let base = ensure_write_segment(&mut st).await?;
    let generation = st.table.bump_generation(base)?;
    st.save()?;
    let shared = Rc::new(std::cell::RefCell::new(st));
    let writer = writer_for(base, generation, &shared).await?;
    Ok((shared, writer))
}

/// Makes sure a `Write` segment exists; returns its base offset.
async fn ensure_write_segment(st: &mut ShardState) -> Result<u64> {
    if let Some(w) = st.table.writer() {
        return Ok(w.base_offset);
    }
    let next = st.end_offset();
    let base = match st.table.all().last() {
        Some(s) if s.status == SegmentStatus::Idle => s.base_offset,
        _ => {
            st.table.add_idle(next)?;
            st.save()?;
            next
        }
    };
    let path = segment::log_path(&st.dir, base);
    let (file, recycled) =
        segment::create_or_recycle(&st.pool, &path, st.config.segment_bytes).await?;
    let file = Rc::new(file);
    remove_stale_indexes(&path);
    if let Some(r) = recycled {
        st.table.set_recycled(base, r.generation)?;
    }
    st.table.set_status(base, SegmentStatus::Write)?;
    st.save()?;
    st.handles.insert(
        base,
        SegmentHandle {
            base_offset: base,
            path,
            file,
            index: SegmentIndex::default(),
            data_end: 0,
            next_offset: base,
            max_ts: None,
        },
    );
    Ok(base)
}

/// Builds the writer of the `Write` segment `base`.
async fn writer_for(base: u64, generation: u32, shared: &SharedState) -> Result<Writer> {
    let (file, path, end, next_offset, last_index_pos, max_ts, last_ts, config) = {
        let st = shared.borrow();
        let h = st.handles.get(&base).ok_or(JournalError::Stopped)?;
        let last_ts = st
            .handles
            .values()
            .filter_map(|h| h.max_ts)
            .max()
            .unwrap_or(0);
        (
            h.file.clone(),
            h.path.clone(),
            h.data_end,
            h.next_offset,
            h.index.last().map_or(0, |e| e.position),
            h.max_ts,
            last_ts,
            st.config.clone(),
        )
    };
    let index_files = crate::index::IndexAppender::new(path.clone());
    let tail = TailWriter::open(file, path, end, config.segment_bytes).await?;
    Ok(Writer {
        state: shared.clone(),
        tail,
        base,
        generation,
        next_offset,
        last_ts,
        last_index_pos,
        max_ts,
        pending_index: Vec::new(),
        index_files,
        dirty: false,
        inflight: Default::default(),
        inflight_bytes: 0,
        background_sync: None,
        stats: Default::default(),
        config,
    })
}
