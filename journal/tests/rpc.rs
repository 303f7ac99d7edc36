//! The journal RPC over real TCP: every operation through the client, and
//! bad input answered with typed errors on a connection that stays open.

mod common;

use std::io::Write;

use bytes::Bytes;
use common::{payload, temp_dir};
use robustmq_journal::engine::{Request, Response};
use robustmq_journal::wire::{decode_response, ErrorCode, MAX_FRAME};
use robustmq_journal::{
    ClientError, FsyncPolicy, Header, Journal, JournalClient, JournalOptions, ReadLimits, RecordIn,
    ShardConfig,
};

fn start(dir: &std::path::Path) -> Journal {
    Journal::start(JournalOptions {
        cores: 2,
        listen: Some("127.0.0.1:0".parse().unwrap()),
        ..JournalOptions::new(dir)
    })
    .unwrap()
}

fn code(e: ClientError) -> ErrorCode {
    match e {
        ClientError::Server(r) => r.code,
        other => panic!("not a server error: {other}"),
    }
}

#[test]
fn every_operation_over_tcp() {
    let dir = temp_dir("rpc");
    let journal = start(&dir);
    let mut c = JournalClient::connect(journal.rpc_addr().unwrap()).unwrap();
    let config = ShardConfig {
        fsync: FsyncPolicy::Always,
        segment_bytes: 64 * 1024,
        ..ShardConfig::default()
    };
    c.create_shard("orders", config.clone()).unwrap();
    c.create_shard("events", ShardConfig::default()).unwrap();
    assert_eq!(
        code(c.create_shard("orders", config).unwrap_err()),
        ErrorCode::ShardExists
    );
    assert_eq!(
        code(c.create_shard("a/b", ShardConfig::default()).unwrap_err()),
        ErrorCode::InvalidName
    );
    let names: Vec<_> = c
        .list_shards()
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["events", "orders"]);

    let rich = RecordIn {
        key: Some(Bytes::from_static(b"k")),
        tags: vec!["red".into()],
        headers: vec![Header {
            name: "h".into(),
            value: Bytes::from_static(b"v"),
        }],
        payload: Bytes::from_static(b"first"),
    };
    assert_eq!(
        c.append("orders", vec![rich.clone()]).unwrap().base_offset,
        0
    );
    for i in 1..200u64 {
        let batch = vec![RecordIn::from_payload(payload(i, 700))];
        assert_eq!(c.append("orders", batch).unwrap().base_offset, i);
    }
    let got = c
        .read(
            "orders",
            0,
            ReadLimits {
                max_records: 10,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
    assert_eq!(got.len(), 10);
    assert_eq!(got[0].key, rich.key);
    assert_eq!(got[0].tags, rich.tags);
    assert_eq!(got[0].headers, rich.headers);
    assert_eq!(got[0].payload, rich.payload);
    assert_eq!(got[5].payload, payload(5, 700));
    let all = c
        .read(
            "orders",
            0,
            ReadLimits {
                max_records: 0,
                max_bytes: 0,
            },
        )
        .unwrap();
    assert_eq!(all.len(), 200, "zero limits take the defaults");
    assert_eq!(
        code(
            c.read(
                "orders",
                500,
                ReadLimits {
                    max_records: 1,
                    max_bytes: 1
                }
            )
            .unwrap_err()
        ),
        ErrorCode::OffsetOutOfRange
    );
    assert_eq!(
        code(c.append("nope", vec![rich]).unwrap_err()),
        ErrorCode::ShardNotFound
    );
    assert_eq!(
        code(c.append("orders", vec![]).unwrap_err()),
        ErrorCode::InvalidArgument
    );

    assert_eq!(c.describe_shard("orders").unwrap().end_offset, 200);
    let segs = c.list_segments("orders").unwrap();
    assert!(segs.len() > 1);
    let ts = segs[0].max_ts.unwrap();
    assert_eq!(c.offset_for_time("orders", 0).unwrap(), Some(0));
    assert!(c.offset_for_time("orders", ts).unwrap().is_some());
    assert_eq!(c.offset_for_time("orders", u64::MAX).unwrap(), None);
    let first = c.describe_segment("orders", 0).unwrap();
    assert_eq!(first, segs[0]);
    assert_eq!(
        code(c.describe_segment("orders", 12345).unwrap_err()),
        ErrorCode::SegmentNotFound
    );
    let active = segs.last().unwrap().base_offset;
    assert_eq!(c.seal_segment("orders").unwrap(), active);
    assert!(
        c.delete_segment("orders", active).is_err(),
        "not the oldest"
    );
    c.delete_segment("orders", 0).unwrap();
    assert!(c.describe_shard("orders").unwrap().start_offset > 0);

    c.commit_offset("orders", "billing", 150).unwrap();
    assert_eq!(c.get_offset("orders", "billing").unwrap(), Some(150));
    assert_eq!(c.get_offset("orders", "other").unwrap(), None);
    c.delete_shard("events").unwrap();
    assert_eq!(
        code(c.describe_shard("events").unwrap_err()),
        ErrorCode::ShardNotFound
    );
    drop(c);
    journal.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_requests_get_typed_errors_and_the_connection_stays() {
    let dir = temp_dir("rpc-bad");
    let journal = start(&dir);
    let addr = journal.rpc_addr().unwrap();
    let mut c = JournalClient::connect(addr).unwrap();
    for garbage in [&b""[..], b"\x01\x02\x03", &[0xffu8; 100]] {
        let answer = c.call_raw(garbage).unwrap();
        let (id, result) = decode_response(&answer).unwrap();
        assert_eq!(id, 0);
        assert_eq!(result.unwrap_err().code, ErrorCode::BadRequest);
    }
    c.create_shard("still-works", ShardConfig::default())
        .unwrap();

    // A frame over the limit is skipped and answered.
    let mut raw = std::net::TcpStream::connect(addr).unwrap();
    let len = MAX_FRAME + 1;
    raw.write_all(&(len as u32).to_be_bytes()).unwrap();
    let chunk = vec![0u8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        raw.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    let mut len_buf = [0u8; 4];
    std::io::Read::read_exact(&mut raw, &mut len_buf).unwrap();
    let mut answer = vec![0u8; u32::from_be_bytes(len_buf) as usize];
    std::io::Read::read_exact(&mut raw, &mut answer).unwrap();
    let (_, result) = decode_response(&answer).unwrap();
    assert_eq!(result.unwrap_err().code, ErrorCode::TooLarge);
    journal.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn damaged_data_is_a_corrupt_error_over_the_wire() {
    let dir = temp_dir("rpc-corrupt");
    let journal = start(&dir);
    let mut c = JournalClient::connect(journal.rpc_addr().unwrap()).unwrap();
    c.create_shard("d", ShardConfig::default()).unwrap();
    for i in 0..20u64 {
        c.append("d", vec![RecordIn::from_payload(payload(i, 500))])
            .unwrap();
    }
    // Sealed: a sealed segment is not rescanned at start, so the damage
    // is found by the read. (Damage in the Write segment is cut at start
    // instead, like a torn tail: see shard.rs.)
    assert_eq!(c.seal_segment("d").unwrap(), 0);
    drop(c);
    journal.stop();
    let log = dir.join("d").join(format!("{:020}.log", 0));
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[5000] ^= 0x10;
    std::fs::write(&log, bytes).unwrap();
    let journal = start(&dir);
    let mut c = JournalClient::connect(journal.rpc_addr().unwrap()).unwrap();
    let limits = ReadLimits {
        max_records: 100,
        max_bytes: 1 << 20,
    };
    let before = c.read("d", 0, limits).unwrap();
    assert!(!before.is_empty() && before.len() < 20);
    let err = c.read("d", before.len() as u64, limits).unwrap_err();
    assert_eq!(code(err), ErrorCode::Corrupt);
    let first = c
        .read(
            "d",
            0,
            ReadLimits {
                max_records: 2,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
    assert_eq!(first.len(), 2, "records before the damage still read");
    drop(c);
    journal.stop();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let dir = temp_dir("rpc-pipeline");
    let journal = start(&dir);
    let mut c = JournalClient::connect(journal.rpc_addr().unwrap()).unwrap();
    let config = ShardConfig {
        fsync: FsyncPolicy::Always,
        ..ShardConfig::default()
    };
    c.create_shard("piped", config).unwrap();
    // 300 appends (more than one window), one to a missing shard among them.
    let reqs: Vec<Request> = (0..300u32)
        .map(|i| Request::Append {
            shard: if i == 150 { "missing" } else { "piped" }.to_string(),
            records: vec![RecordIn::from_payload(Bytes::from(
                i.to_le_bytes().to_vec(),
            ))],
        })
        .collect();
    let results = c.pipeline(&reqs).unwrap();
    assert_eq!(results.len(), 300);
    let mut offsets = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(Response::Appended(ack)) => {
                assert_ne!(i, 150);
                offsets.push((ack.base_offset, i as u32));
            }
            Err(e) => {
                assert_eq!(i, 150);
                assert_eq!(e.code, ErrorCode::ShardNotFound);
            }
            Ok(other) => panic!("unexpected answer {other:?}"),
        }
    }
    // Every append got its own offset, and each offset holds its payload.
    offsets.sort();
    let expected: Vec<u64> = (0..299).collect();
    assert_eq!(offsets.iter().map(|o| o.0).collect::<Vec<_>>(), expected);
    let records = c
        .read(
            "piped",
            0,
            ReadLimits {
                max_records: 1000,
                max_bytes: 1 << 20,
            },
        )
        .unwrap();
    assert_eq!(records.len(), 299);
    for (offset, i) in offsets {
        assert_eq!(
            records[offset as usize].payload,
            Bytes::from(i.to_le_bytes().to_vec())
        );
    }
    // The connection still serves plain calls.
    assert_eq!(c.describe_shard("piped").unwrap().name, "piped");
    journal.stop();
    std::fs::remove_dir_all(dir).unwrap();
}
