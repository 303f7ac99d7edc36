//! Requests on the wire.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, ForwardsUOffset, Vector, WIPOffset};
use robustmq_protocol::wire::journal_generated::robustmq::journal as fb;

use crate::engine::Request;
use crate::meta::{FsyncPolicy, ShardConfig};
use crate::record::{Header, RecordIn};
use crate::shard::ReadLimits;
use crate::wire::{DEFAULT_READ_BYTES, DEFAULT_READ_RECORDS, MAX_READ_BYTES};

/// A request that does not decode, with its id when that much was readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRequest {
    /// The request's id, or 0.
    pub id: u64,
    /// What is wrong.
    pub reason: String,
}

type Fbb<'a> = FlatBufferBuilder<'a>;

pub(crate) fn fsync_to_fb(p: FsyncPolicy) -> fb::FsyncPolicy {
    match p {
        FsyncPolicy::Always => fb::FsyncPolicy::Always,
        FsyncPolicy::Interval => fb::FsyncPolicy::Interval,
        FsyncPolicy::Never => fb::FsyncPolicy::Never,
    }
}

pub(crate) fn config_to_fb<'a>(
    fbb: &mut Fbb<'a>,
    c: &ShardConfig,
) -> WIPOffset<fb::ShardConfig<'a>> {
    fb::ShardConfig::create(
        fbb,
        &fb::ShardConfigArgs {
            fsync: fsync_to_fb(c.fsync),
            fsync_interval_ms: c.fsync_interval_ms,
            segment_bytes: c.segment_bytes,
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
            index_interval_bytes: c.index_interval_bytes,
        },
    )
}

/// Reads a config; zero fields take the defaults.
pub(crate) fn config_from_fb(c: Option<fb::ShardConfig<'_>>) -> Result<ShardConfig, String> {
    let d = ShardConfig::default();
    let Some(c) = c else { return Ok(d) };
    let or = |v: u64, d: u64| if v == 0 { d } else { v };
    let fsync = match c.fsync() {
        fb::FsyncPolicy::Always => FsyncPolicy::Always,
        fb::FsyncPolicy::Interval => FsyncPolicy::Interval,
        fb::FsyncPolicy::Never => FsyncPolicy::Never,
        other => return Err(format!("unknown fsync policy {}", other.0)),
    };
    Ok(ShardConfig {
        fsync,
        fsync_interval_ms: or(c.fsync_interval_ms(), d.fsync_interval_ms),
        segment_bytes: or(c.segment_bytes(), d.segment_bytes),
        retention_ms: c.retention_ms(),
        retention_bytes: c.retention_bytes(),
        index_interval_bytes: or(c.index_interval_bytes(), d.index_interval_bytes),
    })
}

type Strings<'a> = WIPOffset<Vector<'a, ForwardsUOffset<&'a str>>>;
type Headers<'a> = WIPOffset<Vector<'a, ForwardsUOffset<fb::Header<'a>>>>;

pub(crate) fn tags_to_fb<'a>(fbb: &mut Fbb<'a>, tags: &[String]) -> Option<Strings<'a>> {
    if tags.is_empty() {
        return None;
    }
    let offs: Vec<_> = tags.iter().map(|t| fbb.create_string(t)).collect();
    Some(fbb.create_vector(&offs))
}

pub(crate) fn headers_to_fb<'a>(fbb: &mut Fbb<'a>, headers: &[Header]) -> Option<Headers<'a>> {
    if headers.is_empty() {
        return None;
    }
    let offs: Vec<_> = headers
        .iter()
        .map(|h| {
            let name = Some(fbb.create_string(&h.name));
            let value = Some(fbb.create_vector(&h.value[..]));
            fb::Header::create(fbb, &fb::HeaderArgs { name, value })
        })
        .collect();
    Some(fbb.create_vector(&offs))
}

pub(crate) fn tags_from_fb(v: Option<Vector<'_, ForwardsUOffset<&str>>>) -> Vec<String> {
    v.map(|v| v.iter().map(str::to_string).collect())
        .unwrap_or_default()
}

pub(crate) fn headers_from_fb(
    v: Option<Vector<'_, ForwardsUOffset<fb::Header<'_>>>>,
) -> Vec<Header> {
    v.map(|v| {
        v.iter()
            .map(|h| Header {
                name: h.name().unwrap_or_default().to_string(),
                value: Bytes::copy_from_slice(h.value().map(|b| b.bytes()).unwrap_or_default()),
            })
            .collect()
    })
    .unwrap_or_default()
}

fn record_to_fb<'a>(fbb: &mut Fbb<'a>, r: &RecordIn) -> WIPOffset<fb::RecordIn<'a>> {
    let key = r.key.as_ref().map(|k| fbb.create_vector(&k[..]));
    let tags = tags_to_fb(fbb, &r.tags);
    let headers = headers_to_fb(fbb, &r.headers);
    let payload = Some(fbb.create_vector(&r.payload[..]));
    fb::RecordIn::create(
        fbb,
        &fb::RecordInArgs {
            key,
            tags,
            headers,
            payload,
        },
    )
}

fn record_from_fb(r: fb::RecordIn<'_>) -> RecordIn {
    RecordIn {
        key: r.key().map(|k| Bytes::copy_from_slice(k.bytes())),
        tags: tags_from_fb(r.tags()),
        headers: headers_from_fb(r.headers()),
        payload: Bytes::copy_from_slice(r.payload().map(|p| p.bytes()).unwrap_or_default()),
    }
}

fn body<'a>(
    fbb: &mut Fbb<'a>,
    req: &Request,
) -> (fb::RequestBody, WIPOffset<flatbuffers::UnionWIPOffset>) {
    use fb::RequestBody as B;
    match req {
        Request::CreateShard { name, config } => {
            let name = Some(fbb.create_string(name));
            let config = Some(config_to_fb(fbb, config));
            let t = fb::CreateShard::create(fbb, &fb::CreateShardArgs { name, config });
            (B::CreateShard, t.as_union_value())
        }
        Request::DeleteShard { name } => {
            let name = Some(fbb.create_string(name));
            let t = fb::DeleteShard::create(fbb, &fb::DeleteShardArgs { name });
            (B::DeleteShard, t.as_union_value())
        }
        Request::ListShards => {
            let t = fb::ListShards::create(fbb, &fb::ListShardsArgs {});
            (B::ListShards, t.as_union_value())
        }
        Request::DescribeShard { name } => {
            let name = Some(fbb.create_string(name));
            let t = fb::DescribeShard::create(fbb, &fb::DescribeShardArgs { name });
            (B::DescribeShard, t.as_union_value())
        }
        Request::Append { shard, records } => {
            let shard = Some(fbb.create_string(shard));
            let recs: Vec<_> = records.iter().map(|r| record_to_fb(fbb, r)).collect();
            let records = Some(fbb.create_vector(&recs));
            let t = fb::Append::create(fbb, &fb::AppendArgs { shard, records });
            (B::Append, t.as_union_value())
        }
        Request::Read {
            shard,
            offset,
            limits,
        } => {
            let shard = Some(fbb.create_string(shard));
            let args = fb::ReadArgs {
                shard,
                offset: *offset,
                max_records: limits.max_records.min(u32::MAX as usize) as u32,
                max_bytes: limits.max_bytes.min(u32::MAX as usize) as u32,
            };
            (B::Read, fb::Read::create(fbb, &args).as_union_value())
        }
        Request::OffsetForTime { shard, timestamp } => {
            let shard = Some(fbb.create_string(shard));
            let args = fb::OffsetForTimeArgs {
                shard,
                timestamp: *timestamp,
            };
            (
                B::OffsetForTime,
                fb::OffsetForTime::create(fbb, &args).as_union_value(),
            )
        }
        Request::ListSegments { shard } => {
            let shard = Some(fbb.create_string(shard));
            let t = fb::ListSegments::create(fbb, &fb::ListSegmentsArgs { shard });
            (B::ListSegments, t.as_union_value())
        }
        Request::DescribeSegment { shard, base_offset } => {
            let shard = Some(fbb.create_string(shard));
            let args = fb::DescribeSegmentArgs {
                shard,
                base_offset: *base_offset,
            };
            let t = fb::DescribeSegment::create(fbb, &args);
            (B::DescribeSegment, t.as_union_value())
        }
        Request::SealSegment { shard } => {
            let shard = Some(fbb.create_string(shard));
            let t = fb::SealSegment::create(fbb, &fb::SealSegmentArgs { shard });
            (B::SealSegment, t.as_union_value())
        }
        Request::DeleteSegment { shard, base_offset } => {
            let shard = Some(fbb.create_string(shard));
            let args = fb::DeleteSegmentArgs {
                shard,
                base_offset: *base_offset,
            };
            (
                B::DeleteSegment,
                fb::DeleteSegment::create(fbb, &args).as_union_value(),
            )
        }
        Request::CommitOffset {
            shard,
            group,
            offset,
        } => {
            let shard = Some(fbb.create_string(shard));
            let group = Some(fbb.create_string(group));
            let args = fb::CommitOffsetArgs {
                shard,
                group,
                offset: *offset,
            };
            (
                B::CommitOffset,
                fb::CommitOffset::create(fbb, &args).as_union_value(),
            )
        }
        Request::GetOffset { shard, group } => {
            let shard = Some(fbb.create_string(shard));
            let group = Some(fbb.create_string(group));
            let t = fb::GetOffset::create(fbb, &fb::GetOffsetArgs { shard, group });
            (B::GetOffset, t.as_union_value())
        }
    }
}

/// Encodes a request (without the frame length).
pub fn encode_request(id: u64, req: &Request) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let (body_type, body) = body(&mut fbb, req);
    let root = fb::Request::create(
        &mut fbb,
        &fb::RequestArgs {
            id,
            body_type,
            body: Some(body),
        },
    );
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

fn need<T>(v: Option<T>, what: &str) -> Result<T, String> {
    v.ok_or_else(|| format!("missing {what}"))
}

fn limits(max_records: u32, max_bytes: u32) -> ReadLimits {
    ReadLimits {
        max_records: match max_records {
            0 => DEFAULT_READ_RECORDS,
            n => n as usize,
        },
        max_bytes: match max_bytes {
            0 => DEFAULT_READ_BYTES,
            n => (n as usize).min(MAX_READ_BYTES),
        },
    }
}

fn decode_body(r: &fb::Request<'_>) -> Result<Request, String> {
    use fb::RequestBody as B;
    let missing = || "missing request body".to_string();
    let s = |v: Option<&str>, what: &str| need(v, what).map(str::to_string);
    Ok(match r.body_type() {
        B::CreateShard => {
            let b = r.body_as_create_shard().ok_or_else(missing)?;
            Request::CreateShard {
                name: s(b.name(), "name")?,
                config: config_from_fb(b.config())?,
            }
        }
        B::DeleteShard => {
            let b = r.body_as_delete_shard().ok_or_else(missing)?;
            Request::DeleteShard {
                name: s(b.name(), "name")?,
            }
        }
        B::ListShards => Request::ListShards,
        B::DescribeShard => {
            let b = r.body_as_describe_shard().ok_or_else(missing)?;
            Request::DescribeShard {
                name: s(b.name(), "name")?,
            }
        }
        B::Append => {
            let b = r.body_as_append().ok_or_else(missing)?;
            Request::Append {
                shard: s(b.shard(), "shard")?,
                records: b
                    .records()
                    .map(|v| v.iter().map(record_from_fb).collect())
                    .unwrap_or_default(),
            }
        }
        B::Read => {
            let b = r.body_as_read().ok_or_else(missing)?;
            Request::Read {
                shard: s(b.shard(), "shard")?,
                offset: b.offset(),
                limits: limits(b.max_records(), b.max_bytes()),
            }
        }
        B::OffsetForTime => {
            let b = r.body_as_offset_for_time().ok_or_else(missing)?;
            Request::OffsetForTime {
                shard: s(b.shard(), "shard")?,
                timestamp: b.timestamp(),
            }
        }
        B::ListSegments => {
            let b = r.body_as_list_segments().ok_or_else(missing)?;
            Request::ListSegments {
                shard: s(b.shard(), "shard")?,
            }
        }
        B::DescribeSegment => {
            let b = r.body_as_describe_segment().ok_or_else(missing)?;
            Request::DescribeSegment {
                shard: s(b.shard(), "shard")?,
                base_offset: b.base_offset(),
            }
        }
        B::SealSegment => {
            let b = r.body_as_seal_segment().ok_or_else(missing)?;
            Request::SealSegment {
                shard: s(b.shard(), "shard")?,
            }
        }
        B::DeleteSegment => {
            let b = r.body_as_delete_segment().ok_or_else(missing)?;
            Request::DeleteSegment {
                shard: s(b.shard(), "shard")?,
                base_offset: b.base_offset(),
            }
        }
        B::CommitOffset => {
            let b = r.body_as_commit_offset().ok_or_else(missing)?;
            Request::CommitOffset {
                shard: s(b.shard(), "shard")?,
                group: s(b.group(), "group")?,
                offset: b.offset(),
            }
        }
        B::GetOffset => {
            let b = r.body_as_get_offset().ok_or_else(missing)?;
            Request::GetOffset {
                shard: s(b.shard(), "shard")?,
                group: s(b.group(), "group")?,
            }
        }
        other => return Err(format!("unknown request type {}", other.0)),
    })
}

/// Decodes a request (the bytes of one frame).
pub fn decode_request(buf: &[u8]) -> Result<(u64, Request), BadRequest> {
    let r = flatbuffers::root::<fb::Request>(buf).map_err(|e| BadRequest {
        id: 0,
        reason: format!("not a journal request: {e}"),
    })?;
    let id = r.id();
    decode_body(&r)
        .map(|req| (id, req))
        .map_err(|reason| BadRequest { id, reason })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        let reqs = vec![
            Request::CreateShard {
                name: "a".into(),
                config: ShardConfig {
                    fsync: FsyncPolicy::Interval,
                    retention_ms: 5,
                    ..ShardConfig::default()
                },
            },
            Request::Append {
                shard: "a".into(),
                records: vec![RecordIn {
                    key: Some(Bytes::from_static(b"")),
                    tags: vec!["t".into()],
                    headers: vec![Header {
                        name: "h".into(),
                        value: Bytes::from_static(b"v"),
                    }],
                    payload: Bytes::from_static(b"p"),
                }],
            },
            Request::CommitOffset {
                shard: "a".into(),
                group: "g".into(),
                offset: 9,
            },
            Request::ListShards,
        ];
        for (i, req) in reqs.into_iter().enumerate() {
            let bytes = encode_request(i as u64 + 1, &req);
            let (id, back) = decode_request(&bytes).unwrap();
            assert_eq!(id, i as u64 + 1);
            assert_eq!(format!("{back:?}"), format!("{req:?}"));
        }
    }

    #[test]
    fn garbage_is_a_bad_request_not_a_panic() {
        assert_eq!(decode_request(b"").unwrap_err().id, 0);
        assert!(decode_request(&[0xff; 64]).is_err());
        let mut fbb = FlatBufferBuilder::new();
        let body = fb::Append::create(&mut fbb, &fb::AppendArgs::default());
        let root = fb::Request::create(
            &mut fbb,
            &fb::RequestArgs {
                id: 7,
                body_type: fb::RequestBody::Append,
                body: Some(body.as_union_value()),
            },
        );
        fbb.finish(root, None);
        let err = decode_request(fbb.finished_data()).unwrap_err();
        assert_eq!(err.id, 7);
        assert_eq!(err.reason, "missing shard");
    }

    #[test]
    fn read_limits_are_capped() {
        let l = limits(0, u32::MAX);
        assert_eq!(l.max_records, DEFAULT_READ_RECORDS);
        assert_eq!(l.max_bytes, MAX_READ_BYTES);
    }
}
