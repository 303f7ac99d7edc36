//! Consumer group offsets of a shard: the next offset each group will read,
//! in `offsets.json` next to the shard's segments, rewritten atomically on
//! each commit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{JournalError, Result};
use crate::meta::write_atomic;

/// The committed offsets of one shard.
#[derive(Debug, Default)]
pub struct GroupOffsets {
    path: PathBuf,
    offsets: BTreeMap<String, u64>,
}

impl GroupOffsets {
    /// Loads the offsets of the shard in `dir` (none if the file is absent).
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("offsets.json");
        let offsets = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| JournalError::Corrupt {
                path: path.clone(),
                position: 0,
                reason: format!("offsets do not parse: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(JournalError::io(format!("reading {}", path.display()), e)),
        };
        Ok(GroupOffsets { path, offsets })
    }

    /// Records that `group` will next read `offset`, durably.
    pub fn commit(&mut self, group: &str, offset: u64) -> Result<()> {
        let mut next = self.offsets.clone();
        next.insert(group.to_string(), offset);
        let bytes = serde_json::to_vec(&next)
            .map_err(|e| JournalError::InvalidArgument(format!("encoding offsets: {e}")))?;
        write_atomic(&self.path, &bytes)?;
        self.offsets = next;
        Ok(())
    }

    /// The committed offset of `group`.
    pub fn get(&self, group: &str) -> Option<u64> {
        self.offsets.get(group).copied()
    }
}
