//! The `journal` role of `robust-server`: the engine on its own executors
//! under `<data_dir>/journal`, serving the journal RPC.

use std::path::Path;
use std::time::Duration;

use crate::config::JournalConfig;
use crate::engine::{Journal, JournalOptions};
use crate::error::Result;

/// A started journal role.
#[derive(Debug)]
pub struct Running {
    journal: Journal,
}

impl Running {
    /// The engine, for in-process use by the other roles.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Stops the role: closes every shard (flushing and syncing) and waits
    /// for the executors to finish.
    pub fn stop(self) {
        self.journal.stop();
        tracing::info!("journal role stopped");
    }
}

/// Starts the journal role: recovers every shard, then listens.
pub fn start(node_id: u64, data_dir: &Path, config: &JournalConfig) -> Result<Running> {
    let dir = data_dir.join("journal");
    let journal = Journal::start(JournalOptions {
        cores: config.cores,
        pin: config.pin_cores,
        retention_check: Duration::from_millis(config.retention_check_ms.max(1)),
        listen: Some(config.addr),
        recycle_segments: config.recycle_segments,
        ..JournalOptions::new(&dir)
    })?;
    tracing::info!(node_id, dir = %dir.display(), addr = %config.addr, cores = journal.cores(), "journal role started");
    Ok(Running { journal })
}
