//! `robust-server`: runs the mqtt, journal and placement roles of one node.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use robustmq_core::config::{Role, ServerConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Command-line flags; each overrides the same key of the config file.
#[derive(Debug, Parser)]
#[command(name = "robust-server", version, about = "RobustMQ server")]
struct Cli {
    /// The TOML configuration file; without one, the embedded defaults.
    #[arg(long, env = "ROBUSTMQ_CONFIG")]
    config: Option<PathBuf>,
    /// This node's id (`node_id`).
    #[arg(long, env = "ROBUSTMQ_NODE_ID")]
    node_id: Option<u64>,
    /// The MQTT TCP listener (`mqtt.addr`).
    #[arg(long, env = "ROBUSTMQ_MQTT_ADDR")]
    mqtt_addr: Option<std::net::SocketAddr>,
    /// Where data is kept (`data_dir`).
    #[arg(long, env = "ROBUSTMQ_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Roles to run (`roles`), comma separated: mqtt,journal,placement.
    #[arg(long, env = "ROBUSTMQ_ROLES", value_delimiter = ',')]
    roles: Option<Vec<String>>,
    /// Cores that run the broker (`mqtt.cores`); 0 is all.
    #[arg(long, env = "ROBUSTMQ_CORES")]
    cores: Option<usize>,
}

fn load(cli: &Cli) -> Result<ServerConfig, String> {
    let mut config = match &cli.config {
        Some(path) => ServerConfig::load(path).map_err(|e| e.to_string())?,
        None => ServerConfig::default(),
    };
    if let Some(v) = cli.node_id {
        config.node_id = v;
    }
    if let Some(v) = cli.mqtt_addr {
        config.mqtt.addr = v;
    }
    if let Some(v) = &cli.data_dir {
        config.data_dir = v.clone();
    }
    if let Some(roles) = &cli.roles {
        config.roles = roles
            .iter()
            .map(|r| match r.trim() {
                "mqtt" => Ok(Role::Mqtt),
                "journal" => Ok(Role::Journal),
                "placement" => Ok(Role::Placement),
                other => Err(format!(
                    "--roles: unknown role `{other}` (mqtt, journal, placement)"
                )),
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = cli.cores {
        config.mqtt.cores = v;
    }
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// Stops a started role, waiting for it to finish.
type Stopper = Box<dyn FnOnce()>;

/// Stops roles in the reverse order of their start.
fn stop_all(running: Vec<Stopper>) {
    for stop in running.into_iter().rev() {
        stop();
    }
}

fn start_role(role: Role, config: &ServerConfig) -> Result<Stopper, String> {
    match role {
        Role::Placement => start_placement(config),
        Role::Journal => start_journal(config),
        Role::Mqtt => {
            let r = robustmq_core::runtime::start(config)?;
            Ok(Box::new(move || r.stop()))
        }
    }
}

#[cfg(feature = "placement")]
fn start_placement(config: &ServerConfig) -> Result<Stopper, String> {
    let r = robustmq_placement::role::start(config.node_id, &config.data_dir, &config.placement)
        .map_err(|e| e.to_string())?;
    Ok(Box::new(move || r.stop()))
}

#[cfg(not(feature = "placement"))]
fn start_placement(_: &ServerConfig) -> Result<Stopper, String> {
    Err("this binary was built without the placement role".to_string())
}

#[cfg(feature = "journal")]
fn start_journal(config: &ServerConfig) -> Result<Stopper, String> {
    let r = robustmq_journal::role::start(config.node_id, &config.data_dir, &config.journal)
        .map_err(|e| e.to_string())?;
    Ok(Box::new(move || r.stop()))
}

#[cfg(not(feature = "journal"))]
fn start_journal(_: &ServerConfig) -> Result<Stopper, String> {
    Err("this binary was built without the journal role".to_string())
}

/// Blocks until SIGTERM or SIGINT arrives.
fn wait_for_shutdown_signal() -> std::io::Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, "signal received");
    }
    Ok(())
}

/// Every connection is a descriptor: raise the soft limit to the hard one,
/// and say so when that holds fewer than `mqtt.max_connections` (the
/// default of a million usually is more than the limit).
fn raise_nofile_limit(config: &ServerConfig) {
    use robustmq_core::runtime::fd_table;
    match fd_table::raise_nofile_limit() {
        Ok(limit) => {
            let wanted = config.mqtt.max_connections + fd_table::HEADROOM;
            if config.roles.contains(&Role::Mqtt) && limit < wanted as u64 {
                tracing::info!(
                    limit,
                    max_connections = config.mqtt.max_connections,
                    "the descriptor limit (RLIMIT_NOFILE) caps connections below \
                     mqtt.max_connections; raise it with ulimit -n or LimitNOFILE="
                );
            }
        }
        Err(e) => tracing::warn!("cannot raise the descriptor limit: {e}"),
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let config = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("{e}");
            return ExitCode::from(2);
        }
    };
    tracing::info!(node_id = config.node_id, roles = ?config.roles, "starting robust-server");
    raise_nofile_limit(&config);
    let mut running: Vec<Stopper> = Vec::new();
    // Placement first, then journal, then mqtt: each may use the ones before.
    for role in [Role::Placement, Role::Journal, Role::Mqtt] {
        if !config.roles.contains(&role) {
            continue;
        }
        match start_role(role, &config) {
            Ok(stop) => running.push(stop),
            Err(e) => {
                tracing::error!(?role, "cannot start role: {e}");
                stop_all(running);
                return ExitCode::FAILURE;
            }
        }
    }
    if let Err(e) = wait_for_shutdown_signal() {
        tracing::error!("cannot wait for signals: {e}");
    }
    tracing::info!("shutting down");
    stop_all(running);
    ExitCode::SUCCESS
}
