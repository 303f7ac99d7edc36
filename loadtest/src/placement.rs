//! `robust-bench placement`. Not built yet.

/// Arguments of `robust-bench placement`.
#[derive(Debug, clap::Args)]
pub struct PlacementBenchArgs {}

/// Runs the benchmark. Not built yet: refuses.
pub fn run(_args: PlacementBenchArgs) -> Result<(), String> {
    Err("robust-bench placement is not built yet".to_string())
}
