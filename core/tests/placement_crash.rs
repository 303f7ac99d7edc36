//! A one-member placement group snapshotting every 50 entries (so a
//! snapshot write and a log segment roll or deletion is under way much of
//! the time) is killed with SIGKILL again and again under concurrent
//! writes: every acknowledged write is still there after each restart, and
//! old log segments do not pile up.

mod placement_support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use placement_support::{Cluster, Opts};

const CALL: Duration = Duration::from_secs(3);
const WRITERS: usize = 4;
const KILLS: u64 = 6;

fn segments(c: &Cluster) -> Vec<String> {
    let dir = c.dir.join("data1").join("placement");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n == "wal" || n.starts_with("wal."))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[test]
fn kill_during_snapshots_and_log_rolls_loses_no_acknowledged_write() {
    let opts = Opts {
        snapshot_entries: 50,
        log_keep_entries: 10,
    };
    let mut c = Cluster::start("crash", 1, opts);
    c.wait_leader(Duration::from_secs(15)).expect("a leader");
    let acked = Arc::new(Mutex::new(Vec::new()));
    for round in 0..KILLS {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let client = c.client(Duration::from_secs(1));
                std::thread::spawn(move || {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let k = format!("r{round}w{w}k{i}");
                        if client.kv_set(&k, k.as_bytes()).is_ok() {
                            acked.lock().unwrap().push(k);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        // Kill at a different point of the snapshot cycle each round.
        std::thread::sleep(Duration::from_millis(150 + 70 * round));
        c.kill(1);
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.join().unwrap();
        }
        c.spawn(1);
        c.wait_leader(Duration::from_secs(15))
            .unwrap_or_else(|| panic!("no leader after restart {round}:\n{}", c.log_tail(1)));
        let client = c.client(CALL);
        let acked = acked.lock().unwrap();
        for k in acked.iter() {
            let got = client
                .kv_get(k, false)
                .unwrap_or_else(|e| panic!("get {k} after restart {round}: {e}"));
            assert_eq!(
                got.as_deref(),
                Some(k.as_bytes()),
                "acknowledged {k} lost after restart {round}:\n{}",
                c.log_tail(1)
            );
        }
    }
    let total = acked.lock().unwrap().len();
    assert!(total > 0, "no write was acknowledged");
    // Enough writes after the last restart for several snapshots: the
    // segments they cover are deleted.
    let client = c.client(CALL);
    for i in 0..500 {
        let k = format!("tail{i}");
        client
            .kv_set(&k, k.as_bytes())
            .expect("write after the kills");
    }
    let status = client.status().expect("status");
    assert!(status.snapshot_index > 0, "no snapshot was taken");
    // What the kills interrupted (for the test's output, not asserted:
    // where a SIGKILL lands is up to the scheduler).
    let log = std::fs::read_to_string(c.dir.join("node1.log")).unwrap_or_default();
    let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    eprintln!(
        "{total} acknowledged writes over {KILLS} kills; snapshots started {}, \
         unfinished snapshot files removed {}, torn log tails cut {}",
        count("snapshot started"),
        count("removing an unfinished snapshot"),
        count("torn log tail"),
    );
    let left = segments(&c);
    assert!(left.len() <= 5, "log segments piling up: {left:?}");
}
