//! Reading a shard: records from an offset, and the offset for a time.
//!
//! Readers only see acknowledged data (up to each segment's published end)
//! and check every record's CRC: damaged bytes come back as
//! [`JournalError::Corrupt`], never as records. A read returns the records
//! before a damaged batch; a read that starts in it gets the error.

use std::path::PathBuf;
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::error::{JournalError, Result};
use crate::format::decode_batch;
use crate::record::Record;
use crate::segment::{self, Step, Walk, WalkEnd};
use crate::shard::state::SharedState;

/// Limits of one read.
#[derive(Debug, Clone, Copy)]
pub struct ReadLimits {
    /// Most records returned.
    pub max_records: usize,
    /// Most payload and key bytes returned (at least one record is).
    pub max_bytes: usize,
}

struct Cut {
    file: Rc<DmaFile>,
    path: PathBuf,
    position: u64,
    limit: u64,
    next_offset: u64,
}

/// Locates the segment and byte position to read `offset` from; `None` when
/// `offset` is the end of the shard.
fn locate(state: &SharedState, offset: u64) -> Result<Option<Cut>> {
    let st = state.borrow();
    let (start, end) = (st.start_offset(), st.end_offset());
    if offset < start || offset > end {
        return Err(JournalError::OffsetOutOfRange { offset, start, end });
    }
    if offset == end {
        return Ok(None);
    }
    let h = st
        .segment_for(offset)
        .ok_or(JournalError::OffsetOutOfRange { offset, start, end })?;
    Ok(Some(Cut {
        file: h.file.clone(),
        path: h.path.clone(),
        position: h.index.floor_offset(offset).map_or(0, |e| e.position),
        limit: h.data_end,
        next_offset: h.next_offset,
    }))
}

fn check_walk(walk: &Walk, cut: &Cut) -> Result<()> {
    let reason = match &walk.end {
        WalkEnd::Limit | WalkEnd::Stopped => return Ok(()),
        WalkEnd::Zero => "zeros where acknowledged data should be".to_string(),
        WalkEnd::Damage(r) => r.clone(),
    };
    tracing::error!(path = %cut.path.display(), position = walk.position, %reason, "corrupt segment data");
    Err(JournalError::Corrupt {
        path: cut.path.clone(),
        position: walk.position,
        reason,
    })
}

/// Reads records from `from`, up to the limits.
pub async fn read(state: &SharedState, from: u64, limits: ReadLimits) -> Result<Vec<Record>> {
    let mut out: Vec<Record> = Vec::new();
    let mut bytes = 0usize;
    let mut offset = from;
    let chunk = limits
        .max_bytes
        .saturating_add(64 << 10)
        .clamp(64 << 10, 4 << 20);
    while out.len() < limits.max_records && bytes < limits.max_bytes {
        let cut = match locate(state, offset) {
            Ok(Some(cut)) => cut,
            Ok(None) => break,
            Err(e) if out.is_empty() => return Err(e),
            Err(_) => break,
        };
        let mut full = false;
        let walk = segment::walk(
            &cut.file,
            &cut.path,
            cut.position,
            cut.limit,
            chunk,
            |_, h, batch| {
                if h.next_offset() <= offset {
                    return Ok(Step::Next);
                }
                let mut records = Vec::new();
                decode_batch(batch, h, offset, &mut records).map_err(|e| e.to_string())?;
                for r in records {
                    let size = r.payload.len() + r.key.as_ref().map_or(0, |k| k.len());
                    if out.len() >= limits.max_records
                        || (!out.is_empty() && bytes + size > limits.max_bytes)
                    {
                        full = true;
                        return Ok(Step::Stop);
                    }
                    bytes += size;
                    offset = r.offset + 1;
                    out.push(r);
                }
                Ok(Step::Next)
            },
        )
        .await?;
        if let Err(e) = check_walk(&walk, &cut) {
            // Records before the damage are returned; the next read, from
            // the damaged batch, gets the error.
            if out.is_empty() {
                return Err(e);
            }
            break;
        }
        if full || offset < cut.next_offset {
            break;
        }
        offset = cut.next_offset;
    }
    Ok(out)
}

/// The first offset whose timestamp is at or after `ts`, if any.
pub async fn offset_for_time(state: &SharedState, ts: u64) -> Result<Option<u64>> {
    let cut = {
        let st = state.borrow();
        let Some(h) = st
            .handles
            .values()
            .find(|h| h.max_ts.is_some_and(|m| m >= ts))
        else {
            return Ok(None);
        };
        Cut {
            file: h.file.clone(),
            path: h.path.clone(),
            position: h.index.floor_time(ts).map_or(0, |e| e.position),
            limit: h.data_end,
            next_offset: h.next_offset,
        }
    };
    let mut found = None;
    let walk = segment::walk(
        &cut.file,
        &cut.path,
        cut.position,
        cut.limit,
        64 << 10,
        |_, h, _| {
            if h.max_ts >= ts {
                found = Some(h.base_offset);
                return Ok(Step::Stop);
            }
            Ok(Step::Next)
        },
    )
    .await?;
    check_walk(&walk, &cut)?;
    Ok(found)
}
