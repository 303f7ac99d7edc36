//! `robust-bench journal`. Not built yet.

/// Arguments of `robust-bench journal`.
#[derive(Debug, clap::Args)]
pub struct JournalBenchArgs {}

/// Runs the benchmark. Not built yet: refuses.
pub fn run(_args: JournalBenchArgs) -> Result<(), String> {
    Err("robust-bench journal is not built yet".to_string())
}
