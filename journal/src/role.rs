//! The `journal` role of `robust-server`.

use std::path::Path;

use crate::config::JournalConfig;

/// A started journal role.
#[derive(Debug)]
pub struct Running {}

impl Running {
    /// Stops the role and waits for it to finish.
    pub fn stop(self) {}
}

/// Starts the journal role. Not built yet: always refuses.
pub fn start(_node_id: u64, _data_dir: &Path, _config: &JournalConfig) -> Result<Running, String> {
    Err("the journal role is not built yet".to_string())
}
