//! robust-bench against a real robust-server: builds the broker (debug),
//! starts it on a free port, runs a short QoS 1 fan-in and checks the JSON
//! line. Fails (never skips) if the broker or the bench is broken.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Broker {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("loadtest/ is in the workspace")
        .to_path_buf()
}

fn build_server() -> PathBuf {
    let root = workspace_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args(["build", "-p", "robustmq-core", "--bin", "robust-server"])
        .status()
        .expect("run cargo build");
    assert!(status.success(), "cargo build of robust-server failed");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let bin = target.join("debug").join("robust-server");
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

fn start_broker() -> Broker {
    let bin = build_server();
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let dir = std::env::temp_dir().join(format!("robust-bench-it-{}-{port}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let child = Command::new(bin)
        .args(["--roles", "mqtt", "--mqtt-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--data-dir")
        .arg(dir.join("data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start robust-server");
    let broker = Broker { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "robust-server did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    broker
}

fn bench(port: u16, args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_robust-bench"))
        .args(args)
        .args(["--port", &port.to_string(), "--json", "--quiet"])
        .output()
        .expect("run robust-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "robust-bench {args:?} failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().expect("some output");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("last line is not JSON ({e}): {last}"))
}

#[test]
fn qos1_fanin_and_p2p_against_robust_server() {
    let broker = start_broker();
    let v = bench(
        broker.port,
        &[
            "fanin",
            "--qos",
            "1",
            "-P",
            "4",
            "--rate",
            "500",
            "--inflight",
            "16",
            "--duration",
            "1.5",
            "--warmup",
            "0.3",
        ],
    );
    let received = v["received"].as_u64().unwrap();
    assert!(received > 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["duplicates"], 0, "{v}");
    assert_eq!(v["expected"].as_u64().unwrap(), received, "{v}");
    assert_eq!(v["sent"], v["acked"], "{v}");
    // 4 publishers x 500/s for 1.8 s.
    assert!(received >= 3000, "{v}");
    assert!(v["latency_ms"]["count"].as_u64().unwrap() > 0, "{v}");
    assert!(v["errors"].as_array().unwrap().is_empty(), "{v}");

    // p2p at QoS 1 over MQTT 5.0: each subscriber hears its own publisher.
    let v = bench(
        broker.port,
        &[
            "p2p",
            "-P",
            "5",
            "--qos",
            "1",
            "--mqtt",
            "5",
            "--rate",
            "100",
            "--duration",
            "1",
            "--warmup",
            "0",
        ],
    );
    assert!(v["received"].as_u64().unwrap() > 0, "{v}");
    assert_eq!(v["lost"], 0, "{v}");
    assert_eq!(v["foreign"], 0, "{v}");
}

/// The broker's resident memory, from /proc.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A shared subscription whose four members sit on one core (the bench's
/// ids `bench-sub-0..3` all hash to core 1) and whose group is owned by the
/// other (`g/t/#` hashes to core 0), fed by unthrottled QoS 1 publishers
/// on both: the group's owner forwards every message to the members'
/// core, which also reads most publishers. Nothing may be lost, and the
/// broker's memory must stay bounded (it grew by 130 MB/s in a release
/// build, the forwarded messages queueing on the group owner's core).
#[test]
fn a_shared_group_on_the_other_core_keeps_memory_bounded() {
    let broker = start_broker();
    let pid = broker.child.id();
    let baseline = rss_bytes(pid);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        })
    };
    let v = bench(
        broker.port,
        &[
            "sharesub",
            "--qos",
            "1",
            "--duration",
            "4",
            "--warmup",
            "0.5",
        ],
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    assert_eq!(v["lost"], 0, "{v}");
    assert!(v["received"].as_u64().unwrap() > 0, "{v}");
    let grown = peak.saturating_sub(baseline);
    assert!(
        grown < 64 << 20,
        "RSS grew {} MB ({baseline} -> {peak} bytes): {v}",
        grown >> 20
    );
}

/// `conn` opens, holds and counts its connections, and reads the broker's
/// memory before and after; 2,000 connections cross several doublings of
/// both processes' descriptor tables.
#[test]
fn conn_opens_and_holds_connections() {
    let broker = start_broker();
    let pid = broker.child.id().to_string();
    let v = bench(
        broker.port,
        &[
            "conn",
            "-n",
            "2000",
            "-r",
            "4000",
            "-d",
            "0.5",
            "--broker-pid",
            &pid,
        ],
    );
    let c = &v["connect"];
    assert_eq!(c["attempted"], 2000, "{v}");
    assert_eq!(c["failed"], 0, "{v}");
    assert_eq!(c["held"], 2000, "{v}");
    assert!(c["rate"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(c["latency_ms"]["count"], 2000, "{v}");
    let before = c["rss_before_kib"].as_u64().expect("RSS before");
    let after = c["rss_after_kib"].as_u64().expect("RSS after");
    assert!(after > before, "{v}");
}
