//! Crash safety: a child process appends under `always` and prints every
//! acknowledged offset; the parent kills it with SIGKILL at random moments,
//! again and again on the same directory, then checks that every
//! acknowledged record reads back intact at its offset. Each child first
//! fills and deletes another shard, so that the crash shard's new segments
//! take recycled files still full of older, valid batches.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::temp_dir;
use futures_lite::future::block_on;
use robustmq_journal::{FsyncPolicy, Journal, JournalOptions, ReadLimits, RecordIn, ShardConfig};

const CHILD_ENV: &str = "JOURNAL_CRASH_CHILD_DIR";
const SHARD: &str = "crash";
const WRITERS: u64 = 4;
const KILLS: usize = 20;

fn payload_for(writer: u64, seq: u64, run: u64) -> Vec<u8> {
    // Mostly small records; one in 16 large enough that groups go out as
    // several padded writes in flight.
    let len = if seq % 16 == 5 {
        ((seq * 7919) % 150_000 + 100_000) as usize
    } else {
        ((seq * 7919 + writer * 104_729) % 3000 + 1) as usize
    };
    let mut p = format!("w{writer}-s{seq}-r{run}-").into_bytes();
    p.resize(len.max(p.len()), (seq % 251) as u8);
    p
}

/// The child: appends forever, printing `ACK offset writer seq run`.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let run: u64 = std::env::var("JOURNAL_CRASH_RUN").unwrap().parse().unwrap();
    let journal = Journal::start(JournalOptions {
        cores: 2,
        ..JournalOptions::new(&dir)
    })
    .unwrap();
    let config = ShardConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 1024 * 1024,
        index_interval_bytes: 8192,
        ..ShardConfig::default()
    };
    fill_the_pool(&journal, &config, run);
    let _ = block_on(journal.create_shard(SHARD, config));
    println!("READY");
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let journal = journal.clone();
            std::thread::spawn(move || {
                for seq in 0.. {
                    let n = seq % 3 + 1;
                    let batch: Vec<_> = (0..n)
                        .map(|k| RecordIn::from_payload(payload_for(w, seq * 3 + k, run)))
                        .collect();
                    let ack = block_on(journal.append(SHARD, batch)).unwrap();
                    for k in 0..n {
                        println!("ACK {} {w} {} {run}", ack.base_offset + k, seq * 3 + k);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
}

/// Writes four segments' worth to a shard of the same configuration and
/// deletes it: its files go to the recycling pool.
fn fill_the_pool(journal: &Journal, config: &ShardConfig, run: u64) {
    let name = format!("filler-{run}");
    let _ = block_on(journal.delete_shard(&name));
    block_on(journal.create_shard(&name, config.clone())).unwrap();
    for seq in 0..96 {
        let batch: Vec<_> = (0..3)
            .map(|k| {
                let mut p = payload_for(seq % WRITERS, seq * 3 + k, run);
                p[..7].copy_from_slice(FILLER);
                RecordIn::from_payload(p)
            })
            .collect();
        block_on(journal.append(&name, batch)).unwrap();
    }
    block_on(journal.delete_shard(&name)).unwrap();
}

/// How the filler's records start (the crash shard's never do).
const FILLER: &[u8; 7] = b"filler-";

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Runs one child until a random moment after its first acknowledgement,
/// kills it, and returns what it acknowledged.
fn run_and_kill(dir: &std::path::Path, run: u64, rng: &mut Rng) -> Vec<(u64, u64, u64, u64)> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_ENV, dir)
        .env("JOURNAL_CRASH_RUN", run.to_string())
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = Vec::new();
    let mut kill_at: Option<Instant> = None;
    let started = Instant::now();
    loop {
        let wait = kill_at.map_or(Duration::from_secs(1), |k| {
            k.saturating_duration_since(Instant::now())
        });
        match rx.recv_timeout(wait) {
            Ok(line) => {
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() == 5 && f[0] == "ACK" {
                    let v: Vec<u64> = f[1..].iter().map(|x| x.parse().unwrap()).collect();
                    acks.push((v[0], v[1], v[2], v[3]));
                    kill_at.get_or_insert_with(|| {
                        Instant::now() + Duration::from_millis(5 + rng.below(250))
                    });
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("child ended by itself"),
        }
        if kill_at.is_some_and(|k| Instant::now() >= k) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "child never acknowledged"
        );
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Lines the child printed before it died are acknowledged too.
    drop(reader.join());
    while let Ok(line) = rx.try_recv() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 5 && f[0] == "ACK" {
            let v: Vec<u64> = f[1..].iter().map(|x| x.parse().unwrap()).collect();
            acks.push((v[0], v[1], v[2], v[3]));
        }
    }
    acks
}

#[test]
fn every_acknowledged_record_survives_repeated_kill_9() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = temp_dir("crash");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let mut acked: HashMap<u64, Vec<u8>> = HashMap::new();
    for run in 0..KILLS as u64 {
        for (offset, w, seq, r) in run_and_kill(&dir, run, &mut rng) {
            let prev = acked.insert(offset, payload_for(w, seq, r));
            assert!(prev.is_none(), "offset {offset} acknowledged twice");
        }
    }
    assert!(
        acked.len() > 100,
        "too few acknowledgements: {}",
        acked.len()
    );
    let journal = Journal::start(JournalOptions::new(&dir)).unwrap();
    let mut next = 0;
    let mut found = HashMap::new();
    loop {
        let limits = ReadLimits {
            max_records: 10_000,
            max_bytes: 16 << 20,
        };
        let records = block_on(journal.read(SHARD, next, limits)).unwrap();
        let Some(last) = records.last() else { break };
        next = last.offset + 1;
        for r in records {
            assert!(
                !r.payload.starts_with(FILLER),
                "offset {} reads a recycled file's old record",
                r.offset
            );
            found.insert(r.offset, r.payload);
        }
    }
    for (offset, want) in &acked {
        let got = found
            .get(offset)
            .unwrap_or_else(|| panic!("acknowledged offset {offset} lost"));
        assert_eq!(got.as_ref(), want.as_slice(), "offset {offset} changed");
    }
    let segs = block_on(journal.list_segments(SHARD)).unwrap();
    eprintln!(
        "{} acknowledged records, {} read back, {} segments",
        acked.len(),
        found.len(),
        segs.len()
    );
    journal.stop();
    let pool = dir.join(robustmq_journal::recycle::POOL_DIR);
    assert!(pool.exists(), "the children recycled no segment file");
    std::fs::remove_dir_all(dir).unwrap();
}
