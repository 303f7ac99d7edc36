//! The segment lifecycle: the statuses a segment goes through and the only
//! transitions allowed between them.
//!
//! ```text
//! Idle -> Write -> PrepareSealUp -> SealUp -> PrepareDelete -> Deleting
//! ```
//!
//! `Idle` is a created segment not yet written; `Write` the one segment of a
//! shard that takes appends; `PrepareSealUp` a segment that takes no more
//! appends and is being flushed; `SealUp` an immutable, fully indexed
//! segment; `PrepareDelete` one that readers must stop using; `Deleting` one
//! whose files are being removed. A shard being deleted may also move an
//! `Idle` or `Write` segment straight to `PrepareDelete`.

use serde::{Deserialize, Serialize};

/// The status of a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SegmentStatus {
    /// Created, not yet written.
    Idle,
    /// The shard's active segment.
    Write,
    /// No more appends; being flushed and indexed.
    PrepareSealUp,
    /// Immutable.
    SealUp,
    /// Marked for deletion; no new reads.
    PrepareDelete,
    /// Files being removed.
    Deleting,
}

/// A transition the lifecycle does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("segment {base_offset}: illegal status change {from:?} -> {to:?}")]
pub struct LifecycleError {
    /// The segment's first offset.
    pub base_offset: u64,
    /// Its current status.
    pub from: SegmentStatus,
    /// The status asked for.
    pub to: SegmentStatus,
}

impl SegmentStatus {
    /// Whether `self -> to` is an allowed transition.
    pub fn can_become(self, to: SegmentStatus) -> bool {
        use SegmentStatus::*;
        matches!(
            (self, to),
            (Idle, Write)
                | (Write, PrepareSealUp)
                | (PrepareSealUp, SealUp)
                | (SealUp, PrepareDelete)
                | (Idle, PrepareDelete)
                | (Write, PrepareDelete)
                | (PrepareSealUp, PrepareDelete)
                | (PrepareDelete, Deleting)
        )
    }

    /// Checks and returns the transition to `to` of segment `base_offset`.
    pub fn transition(
        self,
        base_offset: u64,
        to: SegmentStatus,
    ) -> Result<SegmentStatus, LifecycleError> {
        if self.can_become(to) {
            Ok(to)
        } else {
            Err(LifecycleError {
                base_offset,
                from: self,
                to,
            })
        }
    }

    /// Whether readers may use a segment in this status.
    pub fn readable(self) -> bool {
        matches!(
            self,
            SegmentStatus::Write | SegmentStatus::PrepareSealUp | SegmentStatus::SealUp
        )
    }
}

#[cfg(test)]
mod tests {
    use super::SegmentStatus::*;
    use super::*;

    const ALL: [SegmentStatus; 6] = [Idle, Write, PrepareSealUp, SealUp, PrepareDelete, Deleting];

    #[test]
    fn the_main_path_is_allowed() {
        let mut s = Idle;
        for to in [Write, PrepareSealUp, SealUp, PrepareDelete, Deleting] {
            s = s.transition(0, to).unwrap();
        }
        assert_eq!(s, Deleting);
    }

    #[test]
    fn exactly_the_listed_transitions_are_allowed() {
        let allowed = [
            (Idle, Write),
            (Write, PrepareSealUp),
            (PrepareSealUp, SealUp),
            (SealUp, PrepareDelete),
            (Idle, PrepareDelete),
            (Write, PrepareDelete),
            (PrepareSealUp, PrepareDelete),
            (PrepareDelete, Deleting),
        ];
        for from in ALL {
            for to in ALL {
                let want = allowed.contains(&(from, to));
                assert_eq!(from.can_become(to), want, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn going_back_is_refused_with_a_typed_error() {
        let err = SealUp.transition(9, Write).unwrap_err();
        assert_eq!(
            err,
            LifecycleError {
                base_offset: 9,
                from: SealUp,
                to: Write
            }
        );
        assert!(Deleting.transition(9, Idle).is_err());
        assert!(Write.transition(9, Write).is_err());
    }

    #[test]
    fn only_live_segments_are_readable() {
        assert!(Write.readable() && SealUp.readable() && PrepareSealUp.readable());
        assert!(!Idle.readable() && !PrepareDelete.readable() && !Deleting.readable());
    }
}
