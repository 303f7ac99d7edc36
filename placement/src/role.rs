//! The `placement` role of `robust-server`.

use std::path::Path;

use crate::config::PlacementConfig;

/// A started placement role.
#[derive(Debug)]
pub struct Running {}

impl Running {
    /// Stops the role and waits for it to finish.
    pub fn stop(self) {}
}

/// Starts the placement role. Not built yet: always refuses.
pub fn start(
    _node_id: u64,
    _data_dir: &Path,
    _config: &PlacementConfig,
) -> Result<Running, String> {
    Err("the placement role is not built yet".to_string())
}
