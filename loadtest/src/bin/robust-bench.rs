//! `robust-bench`: load generator. `robust-bench --help` lists the scenarios.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use robustmq_loadtest::{journal, mqtt, placement};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "robust-bench", version, about = "RobustMQ load generator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Appends to the Journal Engine with concurrent writers.
    Journal(journal::JournalBenchArgs),
    /// Puts and gets keys in the Placement Center.
    Placement(placement::PlacementBenchArgs),
    /// MQTT brokers: conn, pub, sub, fanin, fanout, p2p, sharesub, compare.
    #[command(flatten)]
    Mqtt(mqtt::MqttCommand),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = match Cli::parse().command {
        Command::Journal(args) => journal::run(args),
        Command::Placement(args) => placement::run(args),
        Command::Mqtt(cmd) => mqtt::run(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("robust-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
