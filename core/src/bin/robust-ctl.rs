//! `robust-ctl`: the command-line client. The work is in
//! `robustmq_placement::cli`.

use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    robustmq_placement::cli::main()
}
