//! The engine across cores, driven from plain threads through the handle.

mod common;

use common::{payload, temp_dir};
use futures_lite::future::block_on;
use robustmq_journal::{
    FsyncPolicy, Journal, JournalError, JournalOptions, ReadLimits, RecordIn, ShardConfig,
};

const ALL: ReadLimits = ReadLimits {
    max_records: usize::MAX,
    max_bytes: usize::MAX,
};

fn options(dir: &std::path::Path) -> JournalOptions {
    JournalOptions {
        cores: 2,
        ..JournalOptions::new(dir)
    }
}

#[test]
fn shards_spread_over_cores_and_survive_a_restart() {
    let dir = temp_dir("engine");
    let journal = Journal::start(options(&dir)).unwrap();
    let names: Vec<String> = (0..6).map(|i| format!("shard-{i}")).collect();
    for n in &names {
        let config = ShardConfig {
            fsync: FsyncPolicy::Interval,
            ..ShardConfig::default()
        };
        block_on(journal.create_shard(n, config)).unwrap();
    }
    assert!(matches!(
        block_on(journal.create_shard("shard-0", ShardConfig::default())),
        Err(JournalError::ShardExists(_))
    ));
    let writers: Vec<_> = names
        .iter()
        .map(|n| {
            let (journal, n) = (journal.clone(), n.clone());
            std::thread::spawn(move || {
                for i in 0..50u64 {
                    let r = RecordIn::from_payload(payload(i, 100));
                    let ack = block_on(journal.append(&n, vec![r])).unwrap();
                    assert_eq!(ack.base_offset, i);
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    let listed = block_on(journal.list_shards()).unwrap();
    assert_eq!(
        listed.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        names
    );
    assert!(listed.iter().all(|s| s.end_offset == 50));
    block_on(journal.commit_offset("shard-1", "g", 25)).unwrap();
    block_on(journal.delete_shard("shard-5")).unwrap();
    assert!(matches!(
        block_on(journal.append("shard-5", vec![RecordIn::from_payload("x")])),
        Err(JournalError::ShardNotFound(_))
    ));
    journal.stop();
    assert!(matches!(
        block_on(journal.describe_shard("shard-0")),
        Err(JournalError::Stopped)
    ));

    let journal = Journal::start(options(&dir)).unwrap();
    assert_eq!(block_on(journal.list_shards()).unwrap().len(), 5);
    let got = block_on(journal.read("shard-3", 10, ALL)).unwrap();
    assert_eq!(got.len(), 40);
    assert_eq!(got[0].payload, payload(10, 100));
    assert_eq!(
        block_on(journal.get_offset("shard-1", "g")).unwrap(),
        Some(25)
    );
    let segs = block_on(journal.list_segments("shard-0")).unwrap();
    assert_eq!(segs.len(), 1);
    assert_eq!(block_on(journal.seal_segment("shard-0")).unwrap(), 0);
    block_on(journal.delete_segment("shard-0", 0)).unwrap();
    assert_eq!(
        block_on(journal.describe_shard("shard-0"))
            .unwrap()
            .start_offset,
        50
    );
    assert!(block_on(journal.offset_for_time("shard-2", 0)).unwrap() == Some(0));
    journal.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn retention_runs_by_itself() {
    let dir = temp_dir("engine-retention");
    let journal = Journal::start(JournalOptions {
        retention_check: std::time::Duration::from_millis(50),
        ..JournalOptions::new(&dir)
    })
    .unwrap();
    let config = ShardConfig {
        segment_bytes: 64 * 1024,
        retention_ms: 1,
        fsync: FsyncPolicy::Never,
        ..ShardConfig::default()
    };
    block_on(journal.create_shard("r", config)).unwrap();
    for i in 0..30u64 {
        let batch = (0..10)
            .map(|j| RecordIn::from_payload(payload(i * 10 + j, 1000)))
            .collect();
        block_on(journal.append("r", batch)).unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let segs = block_on(journal.list_segments("r")).unwrap();
        if segs.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "retention never ran: {segs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let info = block_on(journal.describe_shard("r")).unwrap();
    assert!(info.start_offset > 0 && info.end_offset == 300, "{info:?}");
    journal.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn more_appends_than_the_queue_holds_all_get_acknowledged() {
    let dir = temp_dir("engine-full-queue");
    let journal = Journal::start(options(&dir)).unwrap();
    let config = ShardConfig {
        fsync: FsyncPolicy::Always,
        ..ShardConfig::default()
    };
    block_on(journal.create_shard("busy", config)).unwrap();
    let client = journal.clone();
    let mut offsets = common::run(move || async move {
        let tasks: Vec<_> = (0..3000u64)
            .map(|i| {
                let j = client.clone();
                glommio::spawn_local(async move {
                    let r = RecordIn::from_payload(payload(i, 64));
                    j.append("busy", vec![r]).await.unwrap().base_offset
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await);
        }
        out
    });
    offsets.sort_unstable();
    assert_eq!(offsets, (0..3000).collect::<Vec<u64>>());
    journal.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn appends_made_on_the_owning_core_skip_its_channel_and_behave_the_same() {
    let dir = temp_dir("engine-local");
    let journal = Journal::start(options(&dir)).unwrap();
    let config = ShardConfig {
        fsync: FsyncPolicy::Always,
        ..ShardConfig::default()
    };
    block_on(journal.create_shard("here", config)).unwrap();
    // The future of an append stays Send (usable from any runtime).
    fn assert_send<T: Send>(_: &T) {}
    let f = journal.append("here", vec![]);
    assert_send(&f);
    drop(f);
    // 3,000 appends from tasks on the owning core: more than the writer's
    // queue holds, so some wait for room.
    let (tx, rx) = std::sync::mpsc::channel();
    let j = journal.clone();
    journal
        .run_on_core(journal.owner_core("here"), move || {
            glommio::spawn_local(async move {
                let tasks: Vec<_> = (0..3000u64)
                    .map(|i| {
                        let j = j.clone();
                        glommio::spawn_local(async move {
                            let r = RecordIn::from_payload(payload(i, 64));
                            (i, j.append("here", vec![r]).await.unwrap().base_offset)
                        })
                    })
                    .collect();
                let mut out = Vec::new();
                for t in tasks {
                    out.push(t.await);
                }
                let missing = j.append("nowhere", vec![RecordIn::from_payload(payload(0, 8))]);
                let empty = j.append("here", vec![]);
                let errors = (missing.await.err(), empty.await.err());
                let _ = tx.send((out, errors));
            })
            .detach();
        })
        .unwrap();
    let (acks, errors) = rx.recv().unwrap();
    assert!(matches!(errors.0, Some(JournalError::ShardNotFound(_))));
    assert!(matches!(errors.1, Some(JournalError::InvalidArgument(_))));
    let records = block_on(journal.read("here", 0, ALL)).unwrap();
    assert_eq!(records.len(), 3000);
    let mut offsets: Vec<u64> = acks.iter().map(|a| a.1).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, (0..3000).collect::<Vec<u64>>());
    for (i, offset) in acks {
        assert_eq!(records[offset as usize].payload, payload(i, 64));
    }
    journal.stop();
    // Once stopped, appends fail instead of reaching a closed core.
    assert!(block_on(journal.append("here", vec![RecordIn::from_payload(payload(1, 8))])).is_err());
    std::fs::remove_dir_all(dir).unwrap();
}
