//! `robust-ctl`: the command-line client of the placement center.
//!
//! `robust-ctl --placement ADDR[,ADDR...] [--output table|json] COMMAND`.
//! Exit status: 0 on success, 1 when `kv get` finds no value, 2 on an error.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use crate::client::Client;
use crate::error::ApiError;
use crate::node::StatusInfo;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(name = "robust-ctl", version, about = "RobustMQ command-line client")]
pub struct Cli {
    /// Placement members to talk to (any one works; comma-separated).
    #[arg(
        long,
        env = "ROBUSTMQ_PLACEMENT",
        default_value = "127.0.0.1:1228",
        value_delimiter = ','
    )]
    pub placement: Vec<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    /// Deadline of the call, in milliseconds.
    #[arg(long, default_value_t = 5000, global = true)]
    pub timeout_ms: u64,
    /// Serve reads from the member's local state (may be stale).
    #[arg(long, global = true)]
    pub stale: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable.
    Table,
    /// One JSON document.
    Json,
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The Raft group.
    Cluster {
        /// What about it.
        #[command(subcommand)]
        cmd: ClusterCmd,
    },
    /// The key-value store.
    Kv {
        /// What to do with it.
        #[command(subcommand)]
        cmd: KvCmd,
    },
}

/// `cluster` subcommands.
#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Members, leader, term, commit and applied index.
    Status,
    /// Adds a member (start it first with no data and the others as peers).
    AddMember {
        /// Its node id.
        id: u64,
        /// Its address.
        addr: String,
    },
    /// Removes a member.
    RemoveMember {
        /// Its node id.
        id: u64,
    },
}

/// `kv` subcommands.
#[derive(Debug, Subcommand)]
pub enum KvCmd {
    /// Sets a key.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: String,
    },
    /// Prints a key's value; exits with 1 when absent.
    Get {
        /// The key.
        key: String,
    },
    /// Deletes a key.
    Delete {
        /// The key.
        key: String,
    },
    /// Lists keys under a prefix.
    List {
        /// The prefix ("" for all).
        #[arg(default_value = "")]
        prefix: String,
    },
}

/// Runs `robust-ctl` with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("robust-ctl: {e}");
            return ExitCode::from(2);
        }
    };
    match rt.block_on(run(&cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("robust-ctl: {e}");
            ExitCode::from(2)
        }
    }
}

/// Executes a parsed command, printing its result.
pub async fn run(cli: &Cli) -> Result<ExitCode, ApiError> {
    // `cluster status` reports the view of the member asked; everything
    // else moves to the leader (fewer hops), following hints.
    let status = matches!(
        cli.command,
        Command::Cluster {
            cmd: ClusterCmd::Status
        }
    );
    let client = Client::new(cli.placement.clone(), Duration::from_millis(cli.timeout_ms))
        .leader_routing(!status);
    let json = cli.output == Output::Json;
    match &cli.command {
        Command::Cluster { cmd } => match cmd {
            ClusterCmd::Status => print_status(&client.status().await?, json),
            ClusterCmd::AddMember { id, addr } => {
                client.member_add(*id, addr).await?;
                done(json, json!({"added": id}));
            }
            ClusterCmd::RemoveMember { id } => {
                client.member_remove(*id).await?;
                done(json, json!({"removed": id}));
            }
        },
        Command::Kv { cmd } => return kv(&client, cmd, cli.stale, json).await,
    }
    Ok(ExitCode::SUCCESS)
}

async fn kv(client: &Client, cmd: &KvCmd, stale: bool, json: bool) -> Result<ExitCode, ApiError> {
    match cmd {
        KvCmd::Put { key, value } => {
            client.kv_set(key, value.as_bytes()).await?;
            done(json, json!({"key": key, "ok": true}));
        }
        KvCmd::Get { key } => {
            let value = client.kv_get(key, stale).await?;
            let text = value
                .as_ref()
                .map(|v| String::from_utf8_lossy(v).into_owned());
            if json {
                println!(
                    "{}",
                    json!({"key": key, "found": text.is_some(), "value": text})
                );
            } else if let Some(t) = &text {
                println!("{t}");
            }
            if text.is_none() {
                if !json {
                    eprintln!("robust-ctl: key `{key}` not found");
                }
                return Ok(ExitCode::from(1));
            }
        }
        KvCmd::Delete { key } => {
            let existed = client.kv_delete(key).await?;
            done(json, json!({"key": key, "deleted": existed}));
        }
        KvCmd::List { prefix } => {
            let pairs = client.kv_list(prefix, 0, stale).await?;
            print_pairs(&pairs, json);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn done(json: bool, doc: serde_json::Value) {
    if json {
        println!("{doc}");
    } else {
        println!("OK");
    }
}

fn print_pairs(pairs: &[(String, Vec<u8>)], json: bool) {
    let text = |v: &[u8]| String::from_utf8_lossy(v).into_owned();
    if json {
        let items: Vec<_> = pairs
            .iter()
            .map(|(k, v)| json!({"key": k, "value": text(v)}))
            .collect();
        println!("{}", serde_json::Value::Array(items));
        return;
    }
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(3).max(3);
    println!("{:width$}  VALUE", "KEY");
    for (k, v) in pairs {
        println!("{k:width$}  {}", text(v));
    }
}

/// The status as JSON (`leader_id`, `term`, `members`, ...).
pub fn status_json(st: &StatusInfo) -> serde_json::Value {
    let members: Vec<_> = st
        .members
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "addr": m.addr,
                "voter": m.voter,
                "leader": m.id == st.leader_id,
            })
        })
        .collect();
    json!({
        "node_id": st.node_id,
        "role": st.role,
        "leader_id": st.leader_id,
        "leader_addr": st.leader_addr,
        "term": st.term,
        "commit_index": st.commit_index,
        "applied_index": st.applied_index,
        "snapshot_index": st.snapshot_index,
        "controller": st.controller,
        "members": members,
    })
}

fn print_status(st: &StatusInfo, json: bool) {
    if json {
        println!("{}", status_json(st));
        return;
    }
    println!(
        "answered by node {} ({}); leader {} at {}; term {}; commit {}; applied {}; snapshot {}",
        st.node_id,
        st.role,
        st.leader_id,
        if st.leader_addr.is_empty() {
            "-"
        } else {
            &st.leader_addr
        },
        st.term,
        st.commit_index,
        st.applied_index,
        st.snapshot_index
    );
    println!("{:>8}  {:<24}  {:<8}  ROLE", "ID", "ADDRESS", "KIND");
    for m in &st.members {
        let kind = if m.voter { "voter" } else { "learner" };
        let role = if m.id == st.leader_id { "leader" } else { "" };
        println!("{:>8}  {:<24}  {:<8}  {role}", m.id, m.addr, kind);
    }
}
