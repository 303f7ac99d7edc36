//! A shard on one glommio executor: appends, reads, rolls, recovery,
//! corruption detection, retention and group offsets.

mod common;

use std::path::Path;

use bytes::Bytes;
use common::{payload, run, temp_dir};
use robustmq_journal::lifecycle::SegmentStatus;
use robustmq_journal::shard::{ReadLimits, Shard};
use robustmq_journal::{FsyncPolicy, JournalError, RecordIn, ShardConfig};

const ALL: ReadLimits = ReadLimits {
    max_records: usize::MAX,
    max_bytes: usize::MAX,
};

fn small(fsync: FsyncPolicy) -> ShardConfig {
    ShardConfig {
        fsync,
        segment_bytes: 64 * 1024,
        index_interval_bytes: 4096,
        ..ShardConfig::default()
    }
}

fn records(from: u64, n: u64, len: usize) -> Vec<RecordIn> {
    (from..from + n)
        .map(|i| RecordIn::from_payload(payload(i, len)))
        .collect()
}

async fn fill(shard: &Shard, batches: u64, per: u64, len: usize) {
    for b in 0..batches {
        let ack = shard.append(records(b * per, per, len)).await.unwrap();
        assert_eq!(ack.base_offset, b * per);
        assert_eq!(ack.count as u64, per);
    }
}

async fn check_all(shard: &Shard, n: u64, len: usize) {
    let got = shard.read(0, ALL).await.unwrap();
    assert_eq!(got.len() as u64, n);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.payload, Bytes::from(payload(i as u64, len)));
    }
}

#[test]
fn appends_roll_segments_and_read_back_after_reopen() {
    let dir = temp_dir("roll");
    let root = dir.clone();
    run(move || async move {
        let shard = Shard::create(&root, "s1", small(FsyncPolicy::Always))
            .await
            .unwrap();
        fill(&shard, 60, 10, 300).await;
        let segs = shard.segments();
        assert!(segs.len() > 2, "{segs:?}");
        assert_eq!(
            segs.iter()
                .filter(|s| s.status == SegmentStatus::Write)
                .count(),
            1
        );
        assert!(segs[..segs.len() - 1]
            .iter()
            .all(|s| s.status == SegmentStatus::SealUp));
        check_all(&shard, 600, 300).await;
        let mid = shard
            .read(
                333,
                ReadLimits {
                    max_records: 5,
                    max_bytes: usize::MAX,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            mid.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![333, 334, 335, 336, 337]
        );
        let one = shard
            .read(
                0,
                ReadLimits {
                    max_records: 100,
                    max_bytes: 1,
                },
            )
            .await
            .unwrap();
        assert_eq!(one.len(), 1, "at least one record, then the byte limit");
        assert!(shard.read(600, ALL).await.unwrap().is_empty());
        assert!(matches!(
            shard.read(601, ALL).await,
            Err(JournalError::OffsetOutOfRange { .. })
        ));
        shard.close().await.unwrap();
        let shard = Shard::open(&root.join("s1")).await.unwrap();
        assert_eq!(shard.recovery_report(), Default::default());
        check_all(&shard, 600, 300).await;
        let ack = shard.append(records(600, 1, 300)).await.unwrap();
        assert_eq!(ack.base_offset, 600);
        shard.close().await.unwrap();
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn every_policy_reads_back_and_survives_reopen() {
    for (name, policy) in [
        ("always", FsyncPolicy::Always),
        ("interval", FsyncPolicy::Interval),
        ("never", FsyncPolicy::Never),
    ] {
        let dir = temp_dir(&format!("policy-{name}"));
        let root = dir.clone();
        run(move || async move {
            let shard = Shard::create(&root, "p", small(policy)).await.unwrap();
            fill(&shard, 20, 5, 100).await;
            check_all(&shard, 100, 100).await;
            shard.close().await.unwrap();
            let shard = Shard::open(&root.join("p")).await.unwrap();
            check_all(&shard, 100, 100).await;
            shard.close().await.unwrap();
        });
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn concurrent_appends_share_group_commits() {
    let dir = temp_dir("group");
    let root = dir.clone();
    run(move || async move {
        let shard = Shard::create(&root, "g", small(FsyncPolicy::Always))
            .await
            .unwrap();
        let tasks: Vec<_> = (0..32)
            .map(|w| {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let mut offsets = Vec::new();
                    for i in 0..20u64 {
                        let r = RecordIn::from_payload(format!("w{w}-{i}"));
                        offsets.push(shard.append(vec![r]).await.unwrap().base_offset);
                    }
                    offsets
                })
            })
            .collect();
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await);
        }
        all.sort_unstable();
        assert_eq!(all, (0..640).collect::<Vec<u64>>());
        assert_eq!(shard.read(0, ALL).await.unwrap().len(), 640);
        shard.close().await.unwrap();
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn large_groups_go_out_as_several_padded_writes_in_flight() {
    for (name, policy) in [
        ("always", FsyncPolicy::Always),
        ("interval", FsyncPolicy::Interval),
        ("never", FsyncPolicy::Never),
    ] {
        let dir = temp_dir(&format!("pipeline-{name}"));
        let root = dir.clone();
        run(move || async move {
            let config = ShardConfig {
                fsync: policy,
                segment_bytes: 4 << 20,
                ..ShardConfig::default()
            };
            let shard = Shard::create(&root, "big", config).await.unwrap();
            let tasks: Vec<_> = (0..48u64)
                .map(|w| {
                    let shard = shard.clone();
                    glommio::spawn_local(async move {
                        let mut got = Vec::new();
                        for i in 0..6u64 {
                            let n = w * 6 + i;
                            let r =
                                RecordIn::from_payload(payload(n, 40_000 + (n as usize % 7) * 333));
                            got.push((shard.append(vec![r]).await.unwrap().base_offset, n));
                        }
                        got
                    })
                })
                .collect();
            // A reader follows the writers: it must only ever see whole,
            // checked records, never bytes of a write still in flight.
            let follower = {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let mut next = 0u64;
                    while next < 288 {
                        let got = shard.read(next, ALL).await.unwrap();
                        for r in &got {
                            assert_eq!(r.offset, next);
                            next += 1;
                        }
                        glommio::timer::sleep(std::time::Duration::from_micros(200)).await;
                    }
                })
            };
            let mut expected = std::collections::HashMap::new();
            for t in tasks {
                expected.extend(t.await);
            }
            follower.await;
            assert_eq!(expected.len(), 288);
            let first = std::fs::read(root.join("big").join(format!("{:020}.log", 0))).unwrap();
            let pads = first.windows(4).filter(|w| w == b"RJPD").count();
            assert!(pads > 0, "no write went out padded");
            assert!(shard.segments().len() >= 3, "{:?}", shard.segments());
            for pass in 0..2 {
                let got = shard.read(0, ALL).await.unwrap();
                assert_eq!(got.len(), 288, "pass {pass}");
                for r in &got {
                    let n = expected[&r.offset];
                    assert_eq!(
                        r.payload,
                        Bytes::from(payload(n, 40_000 + (n as usize % 7) * 333))
                    );
                }
                shard.close().await.unwrap();
                let reopened = Shard::open(&root.join("big")).await.unwrap();
                assert_eq!(reopened.recovery_report(), Default::default());
                reopened.close().await.unwrap();
            }
        });
        std::fs::remove_dir_all(dir).unwrap();
    }
}

#[test]
fn interval_syncs_keep_coming_under_sustained_load() {
    let dir = temp_dir("interval-load");
    let root = dir.clone();
    run(move || async move {
        let config = ShardConfig {
            fsync: FsyncPolicy::Interval,
            fsync_interval_ms: 10,
            segment_bytes: 64 << 20,
            ..ShardConfig::default()
        };
        let shard = Shard::create(&root, "il", config).await.unwrap();
        let until = std::time::Instant::now() + std::time::Duration::from_millis(400);
        let tasks: Vec<_> = (0..32u64)
            .map(|w| {
                let shard = shard.clone();
                glommio::spawn_local(async move {
                    let mut i = 0;
                    while std::time::Instant::now() < until {
                        let r = RecordIn::from_payload(payload(w * 1_000_000 + i, 30_000));
                        shard.append(vec![r]).await.unwrap();
                        i += 1;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await;
        }
        let syncs = shard.sync_count();
        assert!(syncs >= 6, "only {syncs} fdatasyncs in 400 ms of load");
        shard.close().await.unwrap();
    });
    std::fs::remove_dir_all(dir).unwrap();
}

fn active_log(shard_dir: &Path) -> std::path::PathBuf {
    let mut logs: Vec<_> = std::fs::read_dir(shard_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

fn flip(path: &Path, at: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at as usize] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn a_torn_tail_is_cut_at_the_last_valid_record_and_reported() {
    let dir = temp_dir("torn");
    let root = dir.clone();
    run(move || async move {
        let shard = Shard::create(&root, "t", small(FsyncPolicy::Always))
            .await
            .unwrap();
        fill(&shard, 10, 3, 200).await;
        let end = shard.segments().last().unwrap().bytes;
        shard.close().await.unwrap();
        // Damage the last batch: a torn write.
        let log = active_log(&root.join("t"));
        flip(&log, end - 5);
        let shard = Shard::open(&root.join("t")).await.unwrap();
        let report = shard.recovery_report();
        assert_eq!(report.truncated.len(), 1, "{report:?}");
        check_all(&shard, 27, 200).await;
        // The log goes on from the cut, and a reopen does not bring back the
        // stale bytes behind it.
        let ack = shard.append(records(27, 1, 10)).await.unwrap();
        assert_eq!(ack.base_offset, 27);
        shard.close().await.unwrap();
        let shard = Shard::open(&root.join("t")).await.unwrap();
        assert_eq!(shard.info().end_offset, 28);
        shard.close().await.unwrap();
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_rebuilt_sealed_index_steps_over_damage_and_keeps_what_follows() {
    let dir = temp_dir("sealed-rebuild-damage");
    let root = dir.clone();
    run(move || async move {
        let shard = Shard::create(&root, "m", small(FsyncPolicy::Always))
            .await
            .unwrap();
        fill(&shard, 10, 1, 500).await;
        assert_eq!(shard.seal().await.unwrap(), 0);
        shard.close().await.unwrap();
        // A flipped payload byte in the fourth batch of the sealed segment,
        // whose index is gone: the rebuild scan meets the damage.
        let log = root.join("m").join(format!("{:020}.log", 0));
        let batch = (48 + 8 + 8 + 4 + 2 + 2 + 500) as u64;
        flip(&log, 3 * batch + 200);
        std::fs::remove_file(log.with_extension("index")).unwrap();
        let shard = Shard::open(&root.join("m")).await.unwrap();
        let report = shard.recovery_report();
        assert!(report.truncated.is_empty(), "{report:?}");
        assert_eq!(report.damaged.len(), 1, "{report:?}");
        assert_eq!(shard.info().end_offset, 10);
        let before = shard.read(0, ALL).await.unwrap();
        assert_eq!(before.len(), 3, "records before the damage");
        let err = shard.read(3, ALL).await.unwrap_err();
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
        let after = shard.read(4, ALL).await.unwrap();
        assert_eq!(after.len(), 6);
        assert_eq!(after[0].payload, Bytes::from(payload(4, 500)));
        shard.close().await.unwrap();
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn damage_in_a_sealed_segment_is_an_error_never_data() {
    let dir = temp_dir("sealed-damage");
    let root = dir.clone();
    run(move || async move {
        let shard = Shard::create(&root, "d", small(FsyncPolicy::Always))
            .await
            .unwrap();
        fill(&shard, 30, 10, 300).await;
        shard.close().await.unwrap();
        let first = root.join("d").join(format!("{:020}.log", 0));
        flip(&first, 20_000);
        let shard = Shard::open(&root.join("d")).await.unwrap();
        // A read returns the records before the damaged batch; the next
        // one, starting in it, is an error.
        let before = shard.read(0, ALL).await.unwrap();
        assert!(!before.is_empty() && before.len() < 300);
        for (i, r) in before.iter().enumerate() {
            assert_eq!(r.payload, Bytes::from(payload(i as u64, 300)));
        }
        let err = shard.read(before.len() as u64, ALL).await.unwrap_err();
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
        let ok = shard
            .read(
                0,
                ReadLimits {
                    max_records: 5,
                    max_bytes: usize::MAX,
                },
            )
            .await
            .unwrap();
        assert_eq!(ok.len(), 5);
        shard.close().await.unwrap();
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn damaged_or_missing_indexes_are_rebuilt() {
    let dir = temp_dir("index-damage");
    let root = dir.clone();
    run(move || async move {
        let shard = Shard::create(&root, "i", small(FsyncPolicy::Always))
            .await
            .unwrap();
        fill(&shard, 30, 10, 300).await;
        shard.close().await.unwrap();
        let sdir = root.join("i");
        flip(&sdir.join(format!("{:020}.index", 0)), 30);
        let active = active_log(&sdir);
        std::fs::remove_file(active.with_extension("timeindex")).unwrap();
        let shard = Shard::open(&sdir).await.unwrap();
        let report = shard.recovery_report();
        assert_eq!(report.rebuilt_indexes.len(), 2, "{report:?}");
        assert!(
            report.truncated.is_empty() && report.damaged.is_empty(),
            "{report:?}"
        );
        check_all(&shard, 300, 300).await;
        assert!(shard
            .segments()
            .iter()
            .all(|s| s.bytes < 8192 || s.index_entries > 0));
        shard.close().await.unwrap();
        let shard = Shard::open(&sdir).await.unwrap();
        assert_eq!(shard.recovery_report(), Default::default());
        shard.close().await.unwrap();
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn seal_delete_retention_time_lookup_and_group_offsets() {
    let dir = temp_dir("ops");
    let root = dir.clone();
    run(move || async move {
        let config = ShardConfig {
            retention_bytes: 100 * 1024,
            ..small(FsyncPolicy::Always)
        };
        let shard = Shard::create(&root, "o", config).await.unwrap();
        assert!(
            shard.seal().await.is_err(),
            "an empty segment is not sealed"
        );
        fill(&shard, 2, 5, 100).await;
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        glommio::timer::sleep(std::time::Duration::from_millis(5)).await;
        let late = shard.append(records(10, 3, 100)).await.unwrap();
        assert_eq!(
            shard.offset_for_time(before + 2).await.unwrap(),
            Some(late.base_offset)
        );
        assert_eq!(shard.offset_for_time(0).await.unwrap(), Some(0));
        assert_eq!(shard.offset_for_time(u64::MAX).await.unwrap(), None);
        assert_eq!(shard.seal().await.unwrap(), 0);
        let segs = shard.segments();
        assert_eq!(segs[0].status, SegmentStatus::SealUp);
        assert_eq!(segs[1].status, SegmentStatus::Write);
        assert!(shard.delete_segment(segs[1].base_offset).is_err());
        shard.delete_segment(0).unwrap();
        assert!(matches!(
            shard.read(0, ALL).await,
            Err(JournalError::OffsetOutOfRange { start: 13, .. })
        ));
        // Retention by size: write well past 100 KiB, then apply.
        for b in 0..40 {
            shard.append(records(13 + b * 10, 10, 500)).await.unwrap();
        }
        let dropped = shard.apply_retention(0).unwrap();
        assert!(!dropped.is_empty());
        assert!(
            shard.info().bytes <= 100 * 1024 + 64 * 1024,
            "{:?}",
            shard.info()
        );
        let start = shard.info().start_offset;
        assert_eq!(shard.read(start, ALL).await.unwrap()[0].offset, start);
        // Group offsets persist.
        shard.commit_offset("g1", 7).unwrap();
        assert!(shard.commit_offset("bad/name", 7).is_err());
        assert!(shard.commit_offset("g1", 1_000_000).is_err());
        shard.close().await.unwrap();
        let shard = Shard::open(&root.join("o")).await.unwrap();
        assert_eq!(shard.get_offset("g1").unwrap(), Some(7));
        assert_eq!(shard.get_offset("g2").unwrap(), None);
        assert_eq!(shard.info().start_offset, start);
        shard.destroy().await.unwrap();
        assert!(!root.join("o").exists());
    });
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_appends_get_typed_errors() {
    let dir = temp_dir("bad");
    let root = dir.clone();
    run(move || async move {
        let shard = Shard::create(&root, "b", small(FsyncPolicy::Never))
            .await
            .unwrap();
        assert!(matches!(
            shard.append(vec![]).await,
            Err(JournalError::InvalidArgument(_))
        ));
        let huge = RecordIn::from_payload(vec![0u8; 70 * 1024]);
        assert!(matches!(
            shard.append(vec![huge]).await,
            Err(JournalError::TooLarge { .. })
        ));
        assert!(Shard::create(&root, "b", ShardConfig::default())
            .await
            .is_err());
        assert!(Shard::create(&root, "../x", ShardConfig::default())
            .await
            .is_err());
        shard.close().await.unwrap();
    });
    std::fs::remove_dir_all(dir).unwrap();
}

/// A new shard's segment made from a deleted shard's file: the old batches
/// behind its end have exactly the offsets, sizes and valid CRCs that the
/// new shard's next records would have, and must still read as the end of
/// the log (by generation), never as records.
#[test]
fn recycled_segment_files_never_resurrect_their_old_batches() {
    use robustmq_journal::recycle::Recycler;
    let dir = temp_dir("recycle");
    let root = dir.clone();
    run(move || async move {
        let pool = Recycler::new(&root, 4);
        let config = small(FsyncPolicy::Always);
        let old = Shard::create_in(&root, "old", config.clone(), pool.clone())
            .await
            .unwrap();
        fill(&old, 40, 1, 500).await;
        assert_eq!(old.segments().len(), 1);
        old.destroy().await.unwrap();
        assert_eq!(pool.len(), 1, "the deleted segment's file is kept");

        let new = Shard::create_in(&root, "new", config.clone(), pool.clone())
            .await
            .unwrap();
        assert_eq!(pool.len(), 0, "the new segment took it");
        // Reopened before its first append, the new segment starts with the
        // old shard's batches, offsets 0.. and all: none of them is data.
        new.close().await.unwrap();
        drop(new);
        let new = Shard::open_in(&root.join("new"), pool.clone())
            .await
            .unwrap();
        assert_eq!(new.info().end_offset, 0, "old batches 0..40 came back");
        assert!(new.read(0, ALL).await.unwrap().is_empty());
        fill(&new, 25, 1, 500).await;
        new.close().await.unwrap();
        drop(new);
        let new = Shard::open_in(&root.join("new"), pool.clone())
            .await
            .unwrap();
        assert_eq!(new.info().end_offset, 25, "old batches 25..40 came back");
        check_all(&new, 25, 500).await;
        assert!(new.recovery_report().truncated.is_empty());
        // Appends go on over the old batches, and survive another reopen.
        let ack = new.append(records(25, 1, 500)).await.unwrap();
        assert_eq!(ack.base_offset, 25);
        new.close().await.unwrap();
        drop(new);
        let new = Shard::open_in(&root.join("new"), pool.clone())
            .await
            .unwrap();
        check_all(&new, 26, 500).await;
        // Rolls take recycled files too, and sealed segments keep their size.
        fill_from(&new, 26, 300, 500).await;
        let deleted = new.apply_retention(u64::MAX).unwrap();
        assert!(deleted.is_empty());
        new.close().await.unwrap();
        drop(new);
        let new = Shard::open_in(&root.join("new"), pool).await.unwrap();
        check_all(&new, 326, 500).await;
    });
    let _ = std::fs::remove_dir_all(dir);
}

/// Without a pool, a new shard's segment file starts as zeros (and the
/// deleted shard's files are gone).
#[test]
fn without_recycling_deleted_files_are_removed() {
    use robustmq_journal::recycle::Recycler;
    let dir = temp_dir("norecycle");
    let root = dir.clone();
    run(move || async move {
        let old = Shard::create_in(&root, "old", small(FsyncPolicy::Always), Recycler::off())
            .await
            .unwrap();
        fill(&old, 10, 1, 500).await;
        old.destroy().await.unwrap();
        assert!(!root.join("old").exists());
        assert!(!root.join(robustmq_journal::recycle::POOL_DIR).exists());
    });
    let _ = std::fs::remove_dir_all(dir);
}

async fn fill_from(shard: &Shard, from: u64, n: u64, len: usize) {
    for i in from..from + n {
        let ack = shard.append(records(i, 1, len)).await.unwrap();
        assert_eq!(ack.base_offset, i);
    }
}

/// A crash between the steps of a deletion leaves the oldest segment
/// `PrepareDelete` or `Deleting` in the metadata, with or without its
/// files: the next open finishes the deletion and the rest reads back.
#[test]
fn interrupted_deletions_are_finished_at_open() {
    use robustmq_journal::meta;
    for (status, keep_file) in [
        (SegmentStatus::PrepareDelete, true),
        (SegmentStatus::PrepareDelete, false),
        (SegmentStatus::Deleting, true),
        (SegmentStatus::Deleting, false),
    ] {
        let dir = temp_dir("interrupted-delete");
        let root = dir.clone();
        run(move || async move {
            let shard = Shard::create(&root, "d", small(FsyncPolicy::Always))
                .await
                .unwrap();
            fill(&shard, 60, 10, 300).await;
            let first = shard.segments()[0].clone();
            let second = shard.segments()[1].base_offset;
            assert_eq!(first.status, SegmentStatus::SealUp);
            shard.close().await.unwrap();
            drop(shard);
            let sdir = root.join("d");
            let mut m = meta::load(&sdir).unwrap();
            m.segments[0].status = status;
            meta::save(&sdir, &m).unwrap();
            if !keep_file {
                let log = robustmq_journal::segment::log_path(&sdir, first.base_offset);
                std::fs::remove_file(log).unwrap();
            }
            let shard = Shard::open(&sdir).await.unwrap();
            assert_eq!(shard.segments()[0].base_offset, second, "{status:?}");
            assert_eq!(shard.info().start_offset, second);
            let got = shard.read(second, ALL).await.unwrap();
            assert_eq!(got.len() as u64, 600 - second);
        });
        let _ = std::fs::remove_dir_all(dir);
    }
}
