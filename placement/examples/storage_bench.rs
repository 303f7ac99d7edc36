//! Measures the durable Raft log: appends of `batch` entries of `size`
//! bytes, each batch followed by one fdatasync, as the Raft loop does per
//! Ready. `cargo run --release -p robustmq-placement --example storage_bench
//! -- [DIR] [SECONDS]`.

use std::time::{Duration, Instant};

use raft::eraftpb::{Entry, HardState};
use robustmq_placement::storage::{bootstrap_snapshot, DiskStorage};

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("placement-storage-bench"));
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(3);
    for (batch, size) in [(1, 100), (16, 100), (128, 100), (128, 1024)] {
        let _ = std::fs::remove_dir_all(&dir);
        let boot = bootstrap_snapshot(vec![1], Vec::new());
        let mut s = DiskStorage::open(&dir, Some(boot)).expect("open");
        let mut index = 1;
        let mut syncs = 0u64;
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(secs) {
            let ents: Vec<Entry> = (0..batch)
                .map(|_| {
                    index += 1;
                    Entry {
                        index,
                        term: 2,
                        data: vec![7u8; size].into(),
                        ..Default::default()
                    }
                })
                .collect();
            s.append(&ents).expect("append");
            s.set_hard_state(HardState {
                term: 2,
                vote: 1,
                commit: index,
                ..Default::default()
            });
            s.sync().expect("sync");
            syncs += 1;
        }
        let el = start.elapsed().as_secs_f64();
        println!(
            "batch {batch:>3} x {size:>4} B: {:>8.0} entries/s, {:>6.0} fsyncs/s, {:>5.1} us per batch",
            (index - 1) as f64 / el,
            syncs as f64 / el,
            el * 1e6 / syncs as f64
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
