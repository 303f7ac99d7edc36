//! Dropping whole sealed segments: by age, by size, or on request.
//!
//! Only the oldest segment can go, so a shard always holds a contiguous range
//! of offsets. Deletion walks `SealUp -> PrepareDelete -> Deleting`, saving
//! the metadata at each step, so that a crash in between is finished on the
//! next start.

use crate::error::{JournalError, Result};
use crate::lifecycle::SegmentStatus;
use crate::shard::recovery::finish_delete;
use crate::shard::state::ShardState;

/// The sealed segments, oldest first, that retention drops at `now_ms`.
pub fn expired(st: &ShardState, now_ms: u64) -> Vec<u64> {
    let (age, max_bytes) = (st.config.retention_ms, st.config.retention_bytes);
    let mut total = st.total_bytes();
    let mut out = Vec::new();
    for seg in st.table.all() {
        if seg.status != SegmentStatus::SealUp {
            break;
        }
        let too_old = age > 0 && seg.max_ts.is_none_or(|t| t.saturating_add(age) < now_ms);
        let too_big = max_bytes > 0 && total > max_bytes;
        if !too_old && !too_big {
            break;
        }
        total = total.saturating_sub(seg.size_bytes.unwrap_or(0));
        out.push(seg.base_offset);
    }
    out
}

/// Deletes segment `base`, which must be the oldest and sealed.
pub fn delete_oldest(st: &mut ShardState, base: u64) -> Result<()> {
    let seg = st.segment_meta(base)?;
    if seg.status != SegmentStatus::SealUp {
        return Err(JournalError::InvalidArgument(format!(
            "segment {base} is {:?}: only sealed segments can be deleted",
            seg.status
        )));
    }
    if st.table.all().first().map(|s| s.base_offset) != Some(base) {
        return Err(JournalError::InvalidArgument(format!(
            "segment {base} is not the oldest: segments are deleted oldest first"
        )));
    }
    let t = std::time::Instant::now();
    finish_delete(st, base)?;
    // Three metadata saves (two fsyncs each) and a rename or an unlink,
    // all blocking this core: the time its writes stand still.
    let us = t.elapsed().as_micros() as u64;
    tracing::info!(shard = %st.name, segment = base, us, "segment deleted");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::{SegmentTable, ShardConfig};

    fn state(config: ShardConfig) -> ShardState {
        let mut table = SegmentTable::default();
        for (i, base) in [0u64, 10, 20].into_iter().enumerate() {
            table.add_idle(base).unwrap();
            table.set_status(base, SegmentStatus::Write).unwrap();
            if i < 2 {
                table
                    .set_status(base, SegmentStatus::PrepareSealUp)
                    .unwrap();
                table
                    .set_sealed_extent(base, base + 10, 1000, Some(1000 * (i as u64 + 1)))
                    .unwrap();
                table.set_status(base, SegmentStatus::SealUp).unwrap();
            }
        }
        ShardState {
            name: "s".into(),
            dir: std::env::temp_dir(),
            config,
            table,
            handles: Default::default(),
            failed: None,
            report: Default::default(),
            syncs: 0,
            pool: Default::default(),
        }
    }

    #[test]
    fn age_drops_only_old_sealed_segments() {
        let st = state(ShardConfig {
            retention_ms: 500,
            ..ShardConfig::default()
        });
        assert_eq!(expired(&st, 1600), vec![0]);
        assert_eq!(expired(&st, 10_000), vec![0, 10]);
        assert!(expired(&st, 1000).is_empty());
    }

    #[test]
    fn no_retention_keeps_everything() {
        let st = state(ShardConfig::default());
        assert!(expired(&st, u64::MAX).is_empty());
    }

    #[test]
    fn only_the_oldest_sealed_segment_can_be_deleted() {
        let mut st = state(ShardConfig::default());
        assert!(delete_oldest(&mut st, 10).is_err());
        assert!(delete_oldest(&mut st, 20).is_err());
        assert!(delete_oldest(&mut st, 99).is_err());
    }
}
