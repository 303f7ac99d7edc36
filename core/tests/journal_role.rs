//! The `journal` role of a real `robust-server` process: served over TCP,
//! stopped by SIGTERM, and killed with SIGKILL while a client appends under
//! `always`; every acknowledged record must read back after each restart.
#![cfg(feature = "journal")]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use robustmq_journal::{FsyncPolicy, JournalClient, ReadLimits, RecordIn, ShardConfig};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("journal-role-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A server process, killed when dropped (so a failing test leaves none).
struct Server(Child);

impl Server {
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn start(dir: &Path, addr: SocketAddr) -> Server {
    let config = dir.join("server.toml");
    let text = format!(
        "roles = [\"journal\"]\ndata_dir = \"{}\"\n[journal]\naddr = \"{addr}\"\ncores = 2\n",
        dir.join("data").display()
    );
    std::fs::write(&config, text).unwrap();
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_robust-server"))
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    Server(child)
}

/// Connects once the server answers. Right after a server process dies, the
/// kernel may keep its listening socket (held by io_uring requests) for a
/// moment and reset what connects to it: a connection counts only once a
/// request got an answer.
fn connect(addr: SocketAddr) -> JournalClient {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answered = JournalClient::connect(addr).and_then(|mut c| c.list_shards().map(|_| c));
        match answered {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("server never answered: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn read_all(c: &mut JournalClient, shard: &str) -> Vec<(u64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = 0;
    loop {
        let limits = ReadLimits {
            max_records: 5000,
            max_bytes: 8 << 20,
        };
        let got = c.read(shard, next, limits).unwrap();
        let Some(last) = got.last() else { return out };
        next = last.offset + 1;
        out.extend(got.into_iter().map(|r| (r.offset, r.payload.to_vec())));
    }
}

#[test]
fn serves_stops_on_sigterm_and_keeps_data() {
    let dir = temp_dir("term");
    let addr = free_addr();
    let mut server = start(&dir, addr);
    let mut c = connect(addr);
    c.create_shard("s", ShardConfig::default()).unwrap();
    for i in 0..50u32 {
        let r = RecordIn::from_payload(format!("record {i}"));
        assert_eq!(c.append("s", vec![r]).unwrap().base_offset, u64::from(i));
    }
    drop(c);
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert!(server.0.wait().unwrap().success(), "clean exit on SIGTERM");

    let mut server = start(&dir, addr);
    let mut c = connect(addr);
    let all = read_all(&mut c, "s");
    assert_eq!(all.len(), 50);
    assert_eq!(all[49].1, b"record 49");
    server.kill();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn acknowledged_appends_survive_repeated_kill_9_of_the_server() {
    let dir = temp_dir("kill");
    let addr = free_addr();
    let mut acked: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    for run in 0..10u64 {
        let mut server = start(&dir, addr);
        let mut c = connect(addr);
        if run == 0 {
            let config = ShardConfig {
                fsync: FsyncPolicy::Always,
                segment_bytes: 128 * 1024,
                ..ShardConfig::default()
            };
            c.create_shard("k", config).unwrap();
        }
        // A second connection keeps appending while the server dies.
        let writer = std::thread::spawn(move || {
            let mut mine = Vec::new();
            for i in 0.. {
                let p = format!("run {run} record {i} ")
                    .repeat(1 + (i % 40) as usize)
                    .into_bytes();
                match c.append("k", vec![RecordIn::from_payload(p.clone())]) {
                    Ok(ack) => mine.push((ack.base_offset, p)),
                    Err(_) => return mine,
                }
            }
            mine
        });
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(50 + seed % 200));
        server.kill();
        acked.extend(writer.join().unwrap());
    }
    let mut server = start(&dir, addr);
    let mut c = connect(addr);
    let stored: std::collections::HashMap<u64, Vec<u8>> =
        read_all(&mut c, "k").into_iter().collect();
    assert!(
        acked.len() > 50,
        "too few acknowledgements: {}",
        acked.len()
    );
    for (offset, payload) in &acked {
        assert_eq!(
            stored.get(offset),
            Some(payload),
            "acknowledged offset {offset}"
        );
    }
    server.kill();
    std::fs::remove_dir_all(dir).unwrap();
}
