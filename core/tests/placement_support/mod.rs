//! Runs placement members as real `robust-server` processes on 127.0.0.1
//! for the process-level tests (`core/tests/placement_*.rs`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use robustmq_placement::client::{BlockingClient, Client};

/// Tick length used by the tests.
pub const TICK_MS: u64 = 100;
/// Election ticks used by the tests.
pub const ELECTION_TICKS: u64 = 10;

/// One election timeout with the test timings.
pub fn election_timeout() -> Duration {
    Duration::from_millis(TICK_MS * ELECTION_TICKS)
}

/// A free port on 127.0.0.1, below the kernel's ephemeral range
/// (32768-60999 here): members are killed and restarted on their port,
/// and a port from the ephemeral range can be taken meanwhile by any
/// outgoing connection on the machine (seen: "Address already in use"
/// on a restart while benchmarks ran beside the tests).
pub fn free_addr() -> SocketAddr {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // A multiplicative hash spreads the tries over 20000-32000.
        let port = 20_000
            + ((seed.wrapping_add(n).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) % 12_000) as u16;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().expect("local addr");
        }
    }
}

/// Timings and compaction of a test group.
#[derive(Clone, Copy)]
pub struct Opts {
    /// Applied entries between snapshots.
    pub snapshot_entries: u64,
    /// Entries kept behind a snapshot.
    pub log_keep_entries: u64,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            snapshot_entries: 10_000,
            log_keep_entries: 1_000,
        }
    }
}

/// A group of placement members, each a `robust-server` process.
pub struct Cluster {
    pub dir: PathBuf,
    pub addrs: BTreeMap<u64, SocketAddr>,
    children: BTreeMap<u64, Child>,
}

impl Cluster {
    /// Writes the members' configs and starts them all.
    pub fn start(name: &str, n: u64, opts: Opts) -> Cluster {
        let dir =
            std::env::temp_dir().join(format!("placement-proc-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("test dir");
        let addrs: BTreeMap<u64, SocketAddr> = (1..=n).map(|i| (i, free_addr())).collect();
        for (id, addr) in &addrs {
            write_config(&dir, *id, *addr, &addrs, opts);
        }
        let mut c = Cluster {
            dir,
            addrs,
            children: BTreeMap::new(),
        };
        for id in 1..=n {
            c.spawn(id);
        }
        c
    }

    /// Starts a new, empty member `id` that knows the current members (and
    /// waits to be added with `cluster add-member`); returns its address.
    pub fn start_joiner(&mut self, id: u64, opts: Opts) -> SocketAddr {
        let addr = free_addr();
        write_config(&self.dir, id, addr, &self.addrs, opts);
        self.addrs.insert(id, addr);
        self.spawn(id);
        addr
    }

    /// Starts (or restarts) member `id`.
    pub fn spawn(&mut self, id: u64) {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("node{id}.log")))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_robust-server"))
            .arg("--config")
            .arg(self.dir.join(format!("node{id}.toml")))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("spawn robust-server");
        self.children.insert(id, child);
    }

    /// Kills member `id` with SIGKILL and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.children.remove(&id) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether member `id` runs.
    pub fn is_running(&self, id: u64) -> bool {
        self.children.contains_key(&id)
    }

    /// The running members' ids.
    pub fn running(&self) -> Vec<u64> {
        self.children.keys().copied().collect()
    }

    /// A client of member `id` only (it does not move to the leader).
    pub fn client_of(&self, id: u64, timeout: Duration) -> BlockingClient {
        let c = Client::new(vec![self.addrs[&id].to_string()], timeout).leader_routing(false);
        BlockingClient::with_client(c).expect("client")
    }

    /// Every member's address.
    pub fn addr_list(&self) -> Vec<String> {
        self.addrs.values().map(|a| a.to_string()).collect()
    }

    /// A client of every member.
    pub fn client(&self, timeout: Duration) -> BlockingClient {
        let addrs = self.addrs.values().map(|a| a.to_string()).collect();
        BlockingClient::new(addrs, timeout).expect("client")
    }

    /// The leader every running member agrees on (and that runs), waiting
    /// up to `within`.
    pub fn wait_leader(&self, within: Duration) -> Option<u64> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(l) = self.agreed_leader() {
                return Some(l);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn agreed_leader(&self) -> Option<u64> {
        let mut leader = None;
        for id in self.running() {
            let st = self
                .client_of(id, Duration::from_millis(300))
                .status()
                .ok()?;
            if st.leader_id == 0 || leader.is_some_and(|l| l != st.leader_id) {
                return None;
            }
            leader = Some(st.leader_id);
        }
        leader.filter(|l| self.is_running(*l))
    }

    /// Some running member that reports `leader` as a leader other than
    /// `old`, as soon as one does (not waiting for agreement).
    pub fn wait_new_leader(&self, old: u64, within: Duration) -> Option<(u64, Duration)> {
        let start = Instant::now();
        while start.elapsed() < within {
            for id in self.running() {
                if let Ok(st) = self.client_of(id, Duration::from_millis(200)).status() {
                    if st.role == "leader" && st.node_id != old {
                        return Some((st.node_id, start.elapsed()));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// The tail of a member's log, for failure messages.
    pub fn log_tail(&self, id: u64) -> String {
        let text = fs::read_to_string(self.dir.join(format!("node{id}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

/// Writes member `id`'s config file, with `peers` as the initial members.
fn write_config(
    dir: &std::path::Path,
    id: u64,
    addr: SocketAddr,
    peers: &BTreeMap<u64, SocketAddr>,
    opts: Opts,
) {
    let peers: Vec<String> = peers
        .iter()
        .map(|(id, a)| format!("{id} = \"{a}\""))
        .collect();
    let config = format!(
        "node_id = {id}\nroles = [\"placement\"]\ndata_dir = \"{data}\"\n\n[placement]\n\
         addr = \"{addr}\"\npeers = {{ {peers} }}\ntick_ms = {TICK_MS}\n\
         election_ticks = {ELECTION_TICKS}\nheartbeat_ticks = 2\n\
         snapshot_entries = {se}\nlog_keep_entries = {lk}\nrequest_timeout_ms = 2000\n\
         node_timeout_ms = 1000\nfault_injection = true\n",
        data = dir.join(format!("data{id}")).display(),
        peers = peers.join(", "),
        se = opts.snapshot_entries,
        lk = opts.log_keep_entries,
    );
    fs::write(dir.join(format!("node{id}.toml")), config).expect("config");
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in self.running() {
            self.kill(id);
        }
        if !std::thread::panicking() {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

/// Runs `robust-ctl --placement ADDR ARGS...` and returns what it did.
pub fn ctl(addr: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_robust-ctl"))
        .arg("--placement")
        .arg(addr)
        .args(args)
        .output()
        .expect("run robust-ctl")
}
