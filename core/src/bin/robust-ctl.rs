//! `robust-ctl`: the command-line client. The work is in
//! `robustmq_placement::cli`.

use std::process::ExitCode;

fn main() -> ExitCode {
    robustmq_placement::cli::main()
}
