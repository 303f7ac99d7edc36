//! The `placement` role of `robust-server`: binds the listener, opens the
//! storage, starts the Raft loop on its own thread and the RPC server and
//! transport on a small tokio runtime (the control plane).

use std::net::SocketAddr;
use std::path::Path;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam::channel::Sender;

use crate::config::PlacementConfig;
use crate::node::{Input, NodeHandle, INBOX};
use crate::service::Service;
use crate::transport::Transport;

/// A started placement role.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    inbox: Sender<Input>,
    raft_thread: Option<JoinHandle<()>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Running {
    /// The address the member listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the role and waits for it to finish: the Raft loop answers the
    /// calls it holds with `Unavailable`, then the listener and connections
    /// close.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let _ = self.inbox.send(Input::Stop);
        if let Some(t) = self.raft_thread.take() {
            let _ = t.join();
        }
        if let Some(rt) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Stopped from async code (tests): cannot block here.
                rt.shutdown_background();
            } else {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts the placement role of node `node_id`, keeping its files under
/// `data_dir/placement`.
pub fn start(node_id: u64, data_dir: &Path, config: &PlacementConfig) -> Result<Running, String> {
    config.validate(node_id)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(config.rpc_threads)
        .thread_name("placement-rt")
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the placement runtime: {e}"))?;
    let std_listener = std::net::TcpListener::bind(config.addr)
        .map_err(|e| format!("cannot listen on {}: {e}", config.addr))?;
    let addr = std_listener.local_addr().map_err(|e| e.to_string())?;
    std_listener
        .set_nonblocking(true)
        .map_err(|e| e.to_string())?;
    let (tx, rx) = crossbeam::channel::bounded(INBOX);
    let transport = Transport::new(node_id, runtime.handle().clone(), tx.clone());
    let dir = data_dir.join("placement");
    let driver = crate::driver::open(node_id, &dir, config, transport, rx)?;
    let raft_thread = std::thread::Builder::new()
        .name("placement-raft".into())
        .spawn(move || driver.run())
        .map_err(|e| format!("cannot start the raft thread: {e}"))?;
    let node = NodeHandle::new(tx.clone());
    let service = Service::new(
        node.clone(),
        Duration::from_millis(config.request_timeout_ms),
        config.fault_injection,
    );
    let listener = {
        let _guard = runtime.enter();
        tokio::net::TcpListener::from_std(std_listener).map_err(|e| e.to_string())?
    };
    runtime.spawn(crate::server::serve(listener, node, service));
    tracing::info!(node_id, %addr, dir = %dir.display(), "placement role started");
    Ok(Running {
        addr,
        inbox: tx,
        raft_thread: Some(raft_thread),
        runtime: Some(runtime),
    })
}
