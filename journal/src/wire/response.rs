//! Responses on the wire.

use bytes::Bytes;
use flatbuffers::{FlatBufferBuilder, UnionWIPOffset, WIPOffset};
use robustmq_protocol::wire::journal_generated::robustmq::journal as fb;

use crate::engine::Response;
use crate::error::JournalError;
use crate::lifecycle::SegmentStatus;
use crate::record::Record;
use crate::shard::{AppendAck, SegmentInfo, ShardInfo};
use crate::wire::codes::ErrorCode;
use crate::wire::request::{
    config_from_fb, config_to_fb, headers_from_fb, headers_to_fb, tags_from_fb, tags_to_fb,
};

/// An error answer from the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct RemoteError {
    /// What kind of error.
    pub code: ErrorCode,
    /// The server's message.
    pub message: String,
}

type Fbb<'a> = FlatBufferBuilder<'a>;
type Body = (fb::ResponseBody, WIPOffset<UnionWIPOffset>);

fn status_to_fb(s: SegmentStatus) -> fb::SegmentStatus {
    match s {
        SegmentStatus::Idle => fb::SegmentStatus::Idle,
        SegmentStatus::Write => fb::SegmentStatus::Write,
        SegmentStatus::PrepareSealUp => fb::SegmentStatus::PrepareSealUp,
        SegmentStatus::SealUp => fb::SegmentStatus::SealUp,
        SegmentStatus::PrepareDelete => fb::SegmentStatus::PrepareDelete,
        SegmentStatus::Deleting => fb::SegmentStatus::Deleting,
    }
}

fn status_from_fb(s: fb::SegmentStatus) -> Result<SegmentStatus, String> {
    Ok(match s {
        fb::SegmentStatus::Idle => SegmentStatus::Idle,
        fb::SegmentStatus::Write => SegmentStatus::Write,
        fb::SegmentStatus::PrepareSealUp => SegmentStatus::PrepareSealUp,
        fb::SegmentStatus::SealUp => SegmentStatus::SealUp,
        fb::SegmentStatus::PrepareDelete => SegmentStatus::PrepareDelete,
        fb::SegmentStatus::Deleting => SegmentStatus::Deleting,
        other => return Err(format!("unknown segment status {}", other.0)),
    })
}

fn shard_info_to_fb<'a>(fbb: &mut Fbb<'a>, s: &ShardInfo) -> WIPOffset<fb::ShardInfo<'a>> {
    let name = Some(fbb.create_string(&s.name));
    let config = Some(config_to_fb(fbb, &s.config));
    let args = fb::ShardInfoArgs {
        name,
        config,
        start_offset: s.start_offset,
        end_offset: s.end_offset,
        segments: s.segments as u32,
        bytes: s.bytes,
    };
    fb::ShardInfo::create(fbb, &args)
}

fn shard_info_from_fb(s: fb::ShardInfo<'_>) -> Result<ShardInfo, String> {
    Ok(ShardInfo {
        name: s.name().ok_or("missing shard name")?.to_string(),
        config: config_from_fb(s.config())?,
        start_offset: s.start_offset(),
        end_offset: s.end_offset(),
        segments: s.segments() as usize,
        bytes: s.bytes(),
    })
}

fn record_to_fb<'a>(fbb: &mut Fbb<'a>, r: &Record) -> WIPOffset<fb::Record<'a>> {
    let key = r.key.as_ref().map(|k| fbb.create_vector(&k[..]));
    let tags = tags_to_fb(fbb, &r.tags);
    let headers = headers_to_fb(fbb, &r.headers);
    let payload = Some(fbb.create_vector(&r.payload[..]));
    let args = fb::RecordArgs {
        offset: r.offset,
        timestamp: r.timestamp,
        key,
        tags,
        headers,
        payload,
    };
    fb::Record::create(fbb, &args)
}

fn record_from_fb(r: fb::Record<'_>) -> Record {
    Record {
        offset: r.offset(),
        timestamp: r.timestamp(),
        key: r.key().map(|k| Bytes::copy_from_slice(k.bytes())),
        tags: tags_from_fb(r.tags()),
        headers: headers_from_fb(r.headers()),
        payload: Bytes::copy_from_slice(r.payload().map(|p| p.bytes()).unwrap_or_default()),
    }
}

fn segment_to_fb<'a>(fbb: &mut Fbb<'a>, s: &SegmentInfo) -> WIPOffset<fb::SegmentInfo<'a>> {
    let args = fb::SegmentInfoArgs {
        base_offset: s.base_offset,
        end_offset: s.end_offset,
        status: status_to_fb(s.status),
        bytes: s.bytes,
        has_max_ts: s.max_ts.is_some(),
        max_ts: s.max_ts.unwrap_or(0),
        index_entries: s.index_entries as u32,
    };
    fb::SegmentInfo::create(fbb, &args)
}

fn segment_from_fb(s: fb::SegmentInfo<'_>) -> Result<SegmentInfo, String> {
    Ok(SegmentInfo {
        base_offset: s.base_offset(),
        end_offset: s.end_offset(),
        status: status_from_fb(s.status())?,
        bytes: s.bytes(),
        max_ts: s.has_max_ts().then_some(s.max_ts()),
        index_entries: s.index_entries() as usize,
    })
}

fn ok_body<'a>(fbb: &mut Fbb<'a>, r: &Response) -> Body {
    use fb::ResponseBody as B;
    match r {
        Response::Done => (
            B::Done,
            fb::Done::create(fbb, &fb::DoneArgs {}).as_union_value(),
        ),
        Response::Shards(list) => {
            let offs: Vec<_> = list.iter().map(|s| shard_info_to_fb(fbb, s)).collect();
            let shards = Some(fbb.create_vector(&offs));
            (
                B::Shards,
                fb::Shards::create(fbb, &fb::ShardsArgs { shards }).as_union_value(),
            )
        }
        Response::Shard(s) => (B::ShardInfo, shard_info_to_fb(fbb, s).as_union_value()),
        Response::Appended(a) => {
            let args = fb::AppendedArgs {
                base_offset: a.base_offset,
                count: a.count,
            };
            (
                B::Appended,
                fb::Appended::create(fbb, &args).as_union_value(),
            )
        }
        Response::Records(list) => {
            let offs: Vec<_> = list.iter().map(|r| record_to_fb(fbb, r)).collect();
            let records = Some(fbb.create_vector(&offs));
            (
                B::Records,
                fb::Records::create(fbb, &fb::RecordsArgs { records }).as_union_value(),
            )
        }
        Response::Offset(o) => {
            let args = fb::OffsetAnswerArgs {
                found: o.is_some(),
                offset: o.unwrap_or(0),
            };
            (
                B::OffsetAnswer,
                fb::OffsetAnswer::create(fbb, &args).as_union_value(),
            )
        }
        Response::Segments(list) => {
            let offs: Vec<_> = list.iter().map(|s| segment_to_fb(fbb, s)).collect();
            let segments = Some(fbb.create_vector(&offs));
            let t = fb::Segments::create(fbb, &fb::SegmentsArgs { segments });
            (B::Segments, t.as_union_value())
        }
        Response::Segment(s) => (B::SegmentInfo, segment_to_fb(fbb, s).as_union_value()),
        Response::Sealed(b) => {
            let t = fb::Sealed::create(fbb, &fb::SealedArgs { base_offset: *b });
            (B::Sealed, t.as_union_value())
        }
    }
}

fn error_body<'a>(fbb: &mut Fbb<'a>, code: ErrorCode, message: &str) -> Body {
    let message = Some(fbb.create_string(message));
    let args = fb::ErrorArgs {
        code: code.to_fb(),
        message,
    };
    (
        fb::ResponseBody::Error,
        fb::Error::create(fbb, &args).as_union_value(),
    )
}

/// Encodes an answer (without the frame length).
pub fn encode_response(id: u64, result: &Result<Response, RemoteError>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::new();
    let (body_type, body) = match result {
        Ok(r) => ok_body(&mut fbb, r),
        Err(e) => error_body(&mut fbb, e.code, &e.message),
    };
    let args = fb::ResponseArgs {
        id,
        body_type,
        body: Some(body),
    };
    let root = fb::Response::create(&mut fbb, &args);
    fbb.finish(root, None);
    fbb.finished_data().to_vec()
}

impl From<&JournalError> for RemoteError {
    fn from(e: &JournalError) -> Self {
        RemoteError {
            code: ErrorCode::of(e),
            message: e.to_string(),
        }
    }
}

fn decode_ok(r: &fb::Response<'_>) -> Result<Response, String> {
    use fb::ResponseBody as B;
    let missing = || "missing response body".to_string();
    Ok(match r.body_type() {
        B::Done => Response::Done,
        B::Shards => {
            let b = r.body_as_shards().ok_or_else(missing)?;
            let list = b
                .shards()
                .map(|v| v.iter().map(shard_info_from_fb).collect());
            Response::Shards(list.unwrap_or(Ok(Vec::new()))?)
        }
        B::ShardInfo => Response::Shard(shard_info_from_fb(
            r.body_as_shard_info().ok_or_else(missing)?,
        )?),
        B::Appended => {
            let b = r.body_as_appended().ok_or_else(missing)?;
            Response::Appended(AppendAck {
                base_offset: b.base_offset(),
                count: b.count(),
            })
        }
        B::Records => {
            let b = r.body_as_records().ok_or_else(missing)?;
            Response::Records(
                b.records()
                    .map(|v| v.iter().map(record_from_fb).collect())
                    .unwrap_or_default(),
            )
        }
        B::OffsetAnswer => {
            let b = r.body_as_offset_answer().ok_or_else(missing)?;
            Response::Offset(b.found().then_some(b.offset()))
        }
        B::Segments => {
            let b = r.body_as_segments().ok_or_else(missing)?;
            let list = b
                .segments()
                .map(|v| v.iter().map(segment_from_fb).collect());
            Response::Segments(list.unwrap_or(Ok(Vec::new()))?)
        }
        B::SegmentInfo => Response::Segment(segment_from_fb(
            r.body_as_segment_info().ok_or_else(missing)?,
        )?),
        B::Sealed => Response::Sealed(r.body_as_sealed().ok_or_else(missing)?.base_offset()),
        other => return Err(format!("unknown response type {}", other.0)),
    })
}

/// Decodes an answer: its id, and the result or the server's error.
pub fn decode_response(buf: &[u8]) -> Result<(u64, Result<Response, RemoteError>), String> {
    let r = flatbuffers::root::<fb::Response>(buf)
        .map_err(|e| format!("not a journal response: {e}"))?;
    if let Some(e) = r.body_as_error() {
        let err = RemoteError {
            code: ErrorCode::from_fb(e.code()),
            message: e.message().unwrap_or_default().to_string(),
        };
        return Ok((r.id(), Err(err)));
    }
    Ok((r.id(), Ok(decode_ok(&r)?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::ShardConfig;

    fn round_trip(r: Result<Response, RemoteError>) {
        let bytes = encode_response(42, &r);
        let (id, back) = decode_response(&bytes).unwrap();
        assert_eq!(id, 42);
        assert_eq!(format!("{back:?}"), format!("{r:?}"));
    }

    #[test]
    fn responses_round_trip() {
        round_trip(Ok(Response::Done));
        round_trip(Ok(Response::Offset(None)));
        round_trip(Ok(Response::Offset(Some(0))));
        round_trip(Ok(Response::Sealed(5)));
        round_trip(Ok(Response::Shards(vec![ShardInfo {
            name: "s".into(),
            config: ShardConfig::default(),
            start_offset: 1,
            end_offset: 2,
            segments: 3,
            bytes: 4,
        }])));
        round_trip(Ok(Response::Segments(vec![SegmentInfo {
            base_offset: 0,
            end_offset: 9,
            status: SegmentStatus::SealUp,
            bytes: 100,
            max_ts: Some(7),
            index_entries: 2,
        }])));
        round_trip(Ok(Response::Records(vec![Record {
            offset: 3,
            timestamp: 4,
            key: None,
            tags: vec!["a".into()],
            headers: vec![],
            payload: Bytes::from_static(b"xyz"),
        }])));
        round_trip(Err(RemoteError {
            code: ErrorCode::Corrupt,
            message: "bad".into(),
        }));
    }

    #[test]
    fn garbage_answers_are_errors() {
        assert!(decode_response(&[1, 2, 3]).is_err());
    }
}
