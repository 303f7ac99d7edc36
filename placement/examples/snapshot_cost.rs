//! What a snapshot costs the Raft loop and what it costs the snapshot
//! thread: a state machine of `KEYS` user keys with 64-byte values (the
//! benchmark's), a log of as many entries, then `start_snapshot` (what the
//! loop does: encode the map, start a log segment, hand over) and the wait
//! until the file is durable (the thread). `cargo run --release -p
//! robustmq-placement --example snapshot_cost -- [DIR] [KEYS] [ROUNDS]`.

use std::time::{Duration, Instant};

use raft::eraftpb::{ConfState, Entry};
use robustmq_placement::state::StateMachine;
use robustmq_placement::storage::{bootstrap_snapshot, DiskStorage};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("placement-snapshot-cost"));
    let keys: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let rounds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(5);
    let _ = std::fs::remove_dir_all(&dir);
    let mut sm = StateMachine::default();
    for k in 0..keys {
        sm.put(format!("k/bench/{k:08}").into_bytes(), vec![b'v'; 64]);
    }
    let mut s =
        DiskStorage::open(&dir, Some(bootstrap_snapshot(vec![1], Vec::new()))).expect("open");
    let mut index = 1;
    for round in 0..rounds {
        let ents: Vec<Entry> = (0..keys)
            .map(|_| {
                index += 1;
                Entry {
                    index,
                    term: 2,
                    data: vec![7u8; 100].into(),
                    ..Default::default()
                }
            })
            .collect();
        s.append(&ents).expect("append");
        s.set_commit(index);
        s.sync().expect("sync");
        let t = Instant::now();
        let image = sm.image();
        let encode = t.elapsed();
        let bytes = image.len();
        s.start_snapshot(index, ConfState::from((vec![1], vec![])), image)
            .expect("start");
        let loop_total = t.elapsed();
        while s.finish_snapshot(1000).expect("finish").is_none() {
            std::thread::sleep(Duration::from_micros(100));
        }
        let durable = t.elapsed();
        println!(
            "round {round}: {keys} keys, image {bytes} B: loop {:.2} ms (encode {:.2} ms, \
             segment roll + hand-over {:.2} ms); durable after {:.2} ms",
            loop_total.as_secs_f64() * 1e3,
            encode.as_secs_f64() * 1e3,
            (loop_total - encode).as_secs_f64() * 1e3,
            durable.as_secs_f64() * 1e3,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
