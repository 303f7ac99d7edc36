//! The RPC messages as Rust values ([`Call`], [`Reply`]) and their
//! flatbuffers encoding (`protocol/schema/placement.fbs`), both directions, so
//! the server and the client share one mapping.
//!
//! Decoding verifies the buffer first: a malformed request is an
//! `InvalidArgument` error, never a panic.

use flatbuffers::{FlatBufferBuilder, WIPOffset};
use robustmq_protocol::wire::placement_generated::robustmq::placement as fb;

use crate::error::ApiError;
use crate::keys::{NodeRecord, SegmentRecord, SegmentState, ShardRecord};
use crate::node::{MemberInfo, StatusInfo};

/// A request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// Cluster status.
    Status,
    /// Set a key.
    KvSet {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Get a key.
    KvGet(String),
    /// Delete a key.
    KvDelete(String),
    /// Whether a key exists.
    KvExists(String),
    /// Keys under a prefix.
    KvList {
        /// The prefix.
        prefix: String,
        /// The most returned; 0 is no limit.
        limit: u32,
    },
    /// Register a node.
    NodeRegister(NodeRecord),
    /// A node's heartbeat.
    NodeHeartbeat(u64),
    /// Unregister a node.
    NodeUnregister(u64),
    /// Registered nodes.
    NodeList,
    /// Add a Raft member.
    MemberAdd {
        /// Its node id.
        id: u64,
        /// Its address.
        addr: String,
    },
    /// Remove a Raft member.
    MemberRemove(u64),
    /// Create a journal shard (and its first segment).
    ShardCreate {
        /// Its name.
        name: String,
        /// Replica count.
        replicas: u32,
    },
    /// Delete a shard and its segments.
    ShardDelete(String),
    /// Shards whose name starts with a prefix.
    ShardList(String),
    /// A shard's segments.
    SegmentList(String),
    /// Ask the controller to seal a segment.
    SegmentSeal {
        /// The shard.
        shard: String,
        /// The segment.
        seq: u32,
        /// Its last offset.
        end_offset: u64,
    },
    /// Set an MQTT/connector metadata record.
    MetaSet {
        /// The [`fb::MetaKind`] value.
        kind: u8,
        /// Its name.
        name: String,
        /// The record's flatbuffer.
        value: Vec<u8>,
    },
    /// Get one.
    MetaGet {
        /// The kind.
        kind: u8,
        /// The name.
        name: String,
    },
    /// Delete one.
    MetaDelete {
        /// The kind.
        kind: u8,
        /// The name.
        name: String,
    },
    /// List them.
    MetaList {
        /// The kind.
        kind: u8,
        /// Name prefix.
        prefix: String,
    },
    /// Test hook: isolate this member.
    Fault(bool),
}

/// A call with its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// Matches the response to the request.
    pub id: u64,
    /// Deadline in ms; 0 for the server default.
    pub timeout_ms: u32,
    /// Allow a stale read.
    pub stale: bool,
    /// The call.
    pub call: Call,
}

/// A successful result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// Nothing to return.
    Empty,
    /// Cluster status.
    Status(StatusInfo),
    /// A value, if found.
    Value(Option<Vec<u8>>),
    /// A yes or no.
    Bool(bool),
    /// Named values.
    Pairs(Vec<(String, Vec<u8>)>),
    /// Registered nodes.
    Nodes(Vec<NodeRecord>),
    /// Shards.
    Shards(Vec<ShardRecord>),
    /// Segments.
    Segments(Vec<SegmentRecord>),
}

fn s(v: Option<&str>) -> String {
    v.unwrap_or_default().to_string()
}

fn bytes(v: Option<flatbuffers::Vector<'_, u8>>) -> Vec<u8> {
    v.map(|v| v.bytes().to_vec()).unwrap_or_default()
}

fn invalid(what: &str) -> ApiError {
    ApiError::InvalidArgument(format!("malformed request: {what}"))
}

/// Decodes a request frame; on failure, the id (0 if unreadable) and error.
pub fn decode_request(buf: &[u8]) -> Result<Envelope, (u64, ApiError)> {
    let req = fb::root_as_request(buf).map_err(|e| (0, invalid(&e.to_string())))?;
    let call = decode_call(&req).ok_or_else(|| (req.id(), invalid("missing or unknown body")))?;
    Ok(Envelope {
        id: req.id(),
        timeout_ms: req.timeout_ms(),
        stale: req.stale(),
        call,
    })
}

fn decode_call(req: &fb::Request<'_>) -> Option<Call> {
    use fb::RequestBody as B;
    Some(match req.body_type() {
        B::StatusReq => Call::Status,
        B::KvSetReq => {
            let b = req.body_as_kv_set_req()?;
            Call::KvSet {
                key: s(b.key()),
                value: bytes(b.value()),
            }
        }
        B::KvGetReq => Call::KvGet(s(req.body_as_kv_get_req()?.key())),
        B::KvDeleteReq => Call::KvDelete(s(req.body_as_kv_delete_req()?.key())),
        B::KvExistsReq => Call::KvExists(s(req.body_as_kv_exists_req()?.key())),
        B::KvListReq => {
            let b = req.body_as_kv_list_req()?;
            Call::KvList {
                prefix: s(b.prefix()),
                limit: b.limit(),
            }
        }
        B::NodeRegisterReq => {
            Call::NodeRegister(node_from_fb(&req.body_as_node_register_req()?.node()?))
        }
        B::NodeHeartbeatReq => Call::NodeHeartbeat(req.body_as_node_heartbeat_req()?.node_id()),
        B::NodeUnregisterReq => Call::NodeUnregister(req.body_as_node_unregister_req()?.node_id()),
        B::NodeListReq => Call::NodeList,
        B::MemberAddReq => {
            let b = req.body_as_member_add_req()?;
            Call::MemberAdd {
                id: b.id(),
                addr: s(b.addr()),
            }
        }
        B::MemberRemoveReq => Call::MemberRemove(req.body_as_member_remove_req()?.id()),
        _ => return decode_call_more(req),
    })
}

fn decode_call_more(req: &fb::Request<'_>) -> Option<Call> {
    use fb::RequestBody as B;
    Some(match req.body_type() {
        B::ShardCreateReq => {
            let b = req.body_as_shard_create_req()?;
            Call::ShardCreate {
                name: s(b.name()),
                replicas: b.replicas(),
            }
        }
        B::ShardDeleteReq => Call::ShardDelete(s(req.body_as_shard_delete_req()?.name())),
        B::ShardListReq => Call::ShardList(s(req.body_as_shard_list_req()?.prefix())),
        B::SegmentListReq => Call::SegmentList(s(req.body_as_segment_list_req()?.shard())),
        B::SegmentSealReq => {
            let b = req.body_as_segment_seal_req()?;
            Call::SegmentSeal {
                shard: s(b.shard()),
                seq: b.seq(),
                end_offset: b.end_offset(),
            }
        }
        B::MetaSetReq => {
            let b = req.body_as_meta_set_req()?;
            Call::MetaSet {
                kind: b.kind().0,
                name: s(b.name()),
                value: bytes(b.value()),
            }
        }
        B::MetaGetReq => {
            let b = req.body_as_meta_get_req()?;
            Call::MetaGet {
                kind: b.kind().0,
                name: s(b.name()),
            }
        }
        B::MetaDeleteReq => {
            let b = req.body_as_meta_delete_req()?;
            Call::MetaDelete {
                kind: b.kind().0,
                name: s(b.name()),
            }
        }
        B::MetaListReq => {
            let b = req.body_as_meta_list_req()?;
            Call::MetaList {
                kind: b.kind().0,
                prefix: s(b.prefix()),
            }
        }
        B::FaultReq => Call::Fault(req.body_as_fault_req()?.isolate()),
        _ => return None,
    })
}

fn node_from_fb(n: &fb::NodeInfo<'_>) -> NodeRecord {
    NodeRecord {
        node_id: n.node_id(),
        addr: s(n.addr()),
        roles: n
            .roles()
            .map(|r| r.iter().map(str::to_string).collect())
            .unwrap_or_default(),
        registered_ms: n.registered_ms(),
        alive: n.alive(),
    }
}

fn node_to_fb<'a>(fbb: &mut FlatBufferBuilder<'a>, n: &NodeRecord) -> WIPOffset<fb::NodeInfo<'a>> {
    let addr = fbb.create_string(&n.addr);
    let roles: Vec<_> = n.roles.iter().map(|r| fbb.create_string(r)).collect();
    let roles = fbb.create_vector(&roles);
    fb::NodeInfo::create(
        fbb,
        &fb::NodeInfoArgs {
            node_id: n.node_id,
            addr: Some(addr),
            roles: Some(roles),
            registered_ms: n.registered_ms,
            alive: n.alive,
        },
    )
}

/// Encodes a request frame.
pub fn encode_request(env: &Envelope) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let (body_type, body) = encode_call(&mut fbb, &env.call);
    let req = fb::Request::create(
        &mut fbb,
        &fb::RequestArgs {
            id: env.id,
            timeout_ms: env.timeout_ms,
            stale: env.stale,
            body_type,
            body: Some(body),
        },
    );
    fbb.finish(req, None);
    fbb.finished_data().to_vec()
}

type Union = WIPOffset<flatbuffers::UnionWIPOffset>;

fn encode_call(fbb: &mut FlatBufferBuilder<'_>, call: &Call) -> (fb::RequestBody, Union) {
    use fb::RequestBody as B;
    match call {
        Call::Status => (
            B::StatusReq,
            fb::StatusReq::create(fbb, &fb::StatusReqArgs {}).as_union_value(),
        ),
        Call::KvSet { key, value } => {
            let key = Some(fbb.create_string(key));
            let value = Some(fbb.create_vector(value));
            let t = fb::KvSetReq::create(fbb, &fb::KvSetReqArgs { key, value });
            (B::KvSetReq, t.as_union_value())
        }
        Call::KvGet(k) => {
            let key = Some(fbb.create_string(k));
            (
                B::KvGetReq,
                fb::KvGetReq::create(fbb, &fb::KvGetReqArgs { key }).as_union_value(),
            )
        }
        Call::KvDelete(k) => {
            let key = Some(fbb.create_string(k));
            let t = fb::KvDeleteReq::create(fbb, &fb::KvDeleteReqArgs { key });
            (B::KvDeleteReq, t.as_union_value())
        }
        Call::KvExists(k) => {
            let key = Some(fbb.create_string(k));
            let t = fb::KvExistsReq::create(fbb, &fb::KvExistsReqArgs { key });
            (B::KvExistsReq, t.as_union_value())
        }
        Call::KvList { prefix, limit } => {
            let prefix = Some(fbb.create_string(prefix));
            let t = fb::KvListReq::create(
                fbb,
                &fb::KvListReqArgs {
                    prefix,
                    limit: *limit,
                },
            );
            (B::KvListReq, t.as_union_value())
        }
        Call::NodeRegister(n) => {
            let node = Some(node_to_fb(fbb, n));
            let t = fb::NodeRegisterReq::create(fbb, &fb::NodeRegisterReqArgs { node });
            (B::NodeRegisterReq, t.as_union_value())
        }
        Call::NodeHeartbeat(id) => {
            let t = fb::NodeHeartbeatReq::create(fbb, &fb::NodeHeartbeatReqArgs { node_id: *id });
            (B::NodeHeartbeatReq, t.as_union_value())
        }
        Call::NodeUnregister(id) => {
            let t = fb::NodeUnregisterReq::create(fbb, &fb::NodeUnregisterReqArgs { node_id: *id });
            (B::NodeUnregisterReq, t.as_union_value())
        }
        Call::NodeList => (
            B::NodeListReq,
            fb::NodeListReq::create(fbb, &fb::NodeListReqArgs {}).as_union_value(),
        ),
        Call::MemberAdd { id, addr } => {
            let addr = Some(fbb.create_string(addr));
            let t = fb::MemberAddReq::create(fbb, &fb::MemberAddReqArgs { id: *id, addr });
            (B::MemberAddReq, t.as_union_value())
        }
        Call::MemberRemove(id) => {
            let t = fb::MemberRemoveReq::create(fbb, &fb::MemberRemoveReqArgs { id: *id });
            (B::MemberRemoveReq, t.as_union_value())
        }
        other => encode_call_more(fbb, other),
    }
}

fn encode_call_more(fbb: &mut FlatBufferBuilder<'_>, call: &Call) -> (fb::RequestBody, Union) {
    use fb::RequestBody as B;
    match call {
        Call::ShardCreate { name, replicas } => {
            let name = Some(fbb.create_string(name));
            let t = fb::ShardCreateReq::create(
                fbb,
                &fb::ShardCreateReqArgs {
                    name,
                    replicas: *replicas,
                },
            );
            (B::ShardCreateReq, t.as_union_value())
        }
        Call::ShardDelete(n) => {
            let name = Some(fbb.create_string(n));
            let t = fb::ShardDeleteReq::create(fbb, &fb::ShardDeleteReqArgs { name });
            (B::ShardDeleteReq, t.as_union_value())
        }
        Call::ShardList(p) => {
            let prefix = Some(fbb.create_string(p));
            let t = fb::ShardListReq::create(fbb, &fb::ShardListReqArgs { prefix });
            (B::ShardListReq, t.as_union_value())
        }
        Call::SegmentList(shard) => {
            let shard = Some(fbb.create_string(shard));
            let t = fb::SegmentListReq::create(fbb, &fb::SegmentListReqArgs { shard });
            (B::SegmentListReq, t.as_union_value())
        }
        Call::SegmentSeal {
            shard,
            seq,
            end_offset,
        } => {
            let shard = Some(fbb.create_string(shard));
            let args = fb::SegmentSealReqArgs {
                shard,
                seq: *seq,
                end_offset: *end_offset,
            };
            (
                B::SegmentSealReq,
                fb::SegmentSealReq::create(fbb, &args).as_union_value(),
            )
        }
        Call::MetaSet { kind, name, value } => {
            let name = Some(fbb.create_string(name));
            let value = Some(fbb.create_vector(value));
            let args = fb::MetaSetReqArgs {
                kind: fb::MetaKind(*kind),
                name,
                value,
            };
            (
                B::MetaSetReq,
                fb::MetaSetReq::create(fbb, &args).as_union_value(),
            )
        }
        Call::MetaGet { kind, name } => {
            let name = Some(fbb.create_string(name));
            let args = fb::MetaGetReqArgs {
                kind: fb::MetaKind(*kind),
                name,
            };
            (
                B::MetaGetReq,
                fb::MetaGetReq::create(fbb, &args).as_union_value(),
            )
        }
        Call::MetaDelete { kind, name } => {
            let name = Some(fbb.create_string(name));
            let args = fb::MetaDeleteReqArgs {
                kind: fb::MetaKind(*kind),
                name,
            };
            (
                B::MetaDeleteReq,
                fb::MetaDeleteReq::create(fbb, &args).as_union_value(),
            )
        }
        Call::MetaList { kind, prefix } => {
            let prefix = Some(fbb.create_string(prefix));
            let args = fb::MetaListReqArgs {
                kind: fb::MetaKind(*kind),
                prefix,
            };
            (
                B::MetaListReq,
                fb::MetaListReq::create(fbb, &args).as_union_value(),
            )
        }
        Call::Fault(isolate) => {
            let t = fb::FaultReq::create(fbb, &fb::FaultReqArgs { isolate: *isolate });
            (B::FaultReq, t.as_union_value())
        }
        _ => (
            B::StatusReq,
            fb::StatusReq::create(fbb, &fb::StatusReqArgs {}).as_union_value(),
        ),
    }
}

/// Encodes a response frame.
pub fn encode_response(id: u64, result: &Result<Reply, ApiError>) -> Vec<u8> {
    let mut fbb = FlatBufferBuilder::with_capacity(128);
    let (error, body_type, body) = match result {
        Ok(reply) => {
            let (t, b) = encode_reply(&mut fbb, reply);
            (None, t, Some(b))
        }
        Err(e) => (
            Some(encode_error(&mut fbb, e)),
            fb::ResponseBody::NONE,
            None,
        ),
    };
    let resp = fb::Response::create(
        &mut fbb,
        &fb::ResponseArgs {
            id,
            error,
            body_type,
            body,
        },
    );
    fbb.finish(resp, None);
    fbb.finished_data().to_vec()
}

fn encode_error<'a>(fbb: &mut FlatBufferBuilder<'a>, e: &ApiError) -> WIPOffset<fb::Error<'a>> {
    let message = Some(fbb.create_string(&e.message()));
    let (leader_id, addr) = match e {
        ApiError::NotLeader {
            leader_id,
            leader_addr,
        } => (*leader_id, leader_addr.as_str()),
        _ => (0, ""),
    };
    let leader_addr = Some(fbb.create_string(addr));
    fb::Error::create(
        fbb,
        &fb::ErrorArgs {
            code: e.code(),
            message,
            leader_id,
            leader_addr,
        },
    )
}

fn encode_reply(fbb: &mut FlatBufferBuilder<'_>, reply: &Reply) -> (fb::ResponseBody, Union) {
    use fb::ResponseBody as R;
    match reply {
        Reply::Empty => (
            R::Empty,
            fb::Empty::create(fbb, &fb::EmptyArgs {}).as_union_value(),
        ),
        Reply::Status(st) => (R::ClusterStatus, encode_status(fbb, st).as_union_value()),
        Reply::Value(v) => {
            let value = v.as_ref().map(|v| fbb.create_vector(v));
            let args = fb::ValueRespArgs {
                found: v.is_some(),
                value,
            };
            (
                R::ValueResp,
                fb::ValueResp::create(fbb, &args).as_union_value(),
            )
        }
        Reply::Bool(value) => {
            let t = fb::BoolResp::create(fbb, &fb::BoolRespArgs { value: *value });
            (R::BoolResp, t.as_union_value())
        }
        Reply::Pairs(pairs) => {
            let items: Vec<_> = pairs
                .iter()
                .map(|(k, v)| {
                    let key = Some(fbb.create_string(k));
                    let value = Some(fbb.create_vector(v));
                    fb::KvPair::create(fbb, &fb::KvPairArgs { key, value })
                })
                .collect();
            let pairs = Some(fbb.create_vector(&items));
            let t = fb::KvListResp::create(fbb, &fb::KvListRespArgs { pairs });
            (R::KvListResp, t.as_union_value())
        }
        Reply::Nodes(nodes) => {
            let items: Vec<_> = nodes.iter().map(|n| node_to_fb(fbb, n)).collect();
            let nodes = Some(fbb.create_vector(&items));
            let t = fb::NodeListResp::create(fbb, &fb::NodeListRespArgs { nodes });
            (R::NodeListResp, t.as_union_value())
        }
        Reply::Shards(shards) => (
            R::ShardListResp,
            encode_shards(fbb, shards).as_union_value(),
        ),
        Reply::Segments(segs) => (
            R::SegmentListResp,
            encode_segments(fbb, segs).as_union_value(),
        ),
    }
}

fn encode_status<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    st: &StatusInfo,
) -> WIPOffset<fb::ClusterStatus<'a>> {
    let members: Vec<_> = st
        .members
        .iter()
        .map(|m| {
            let addr = Some(fbb.create_string(&m.addr));
            let kind = Some(fbb.create_string(if m.voter { "voter" } else { "learner" }));
            fb::Member::create(
                fbb,
                &fb::MemberArgs {
                    id: m.id,
                    addr,
                    kind,
                },
            )
        })
        .collect();
    let members = Some(fbb.create_vector(&members));
    let role = Some(fbb.create_string(&st.role));
    let leader_addr = Some(fbb.create_string(&st.leader_addr));
    fb::ClusterStatus::create(
        fbb,
        &fb::ClusterStatusArgs {
            node_id: st.node_id,
            role,
            leader_id: st.leader_id,
            leader_addr,
            term: st.term,
            commit_index: st.commit_index,
            applied_index: st.applied_index,
            snapshot_index: st.snapshot_index,
            controller: st.controller,
            members,
        },
    )
}

fn encode_shards<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    shards: &[ShardRecord],
) -> WIPOffset<fb::ShardListResp<'a>> {
    let items: Vec<_> = shards
        .iter()
        .map(|sh| {
            let name = Some(fbb.create_string(&sh.name));
            let args = fb::ShardInfoArgs {
                name,
                replicas: sh.replicas,
                active_segment: sh.active_segment,
                created_ms: sh.created_ms,
            };
            fb::ShardInfo::create(fbb, &args)
        })
        .collect();
    let shards = Some(fbb.create_vector(&items));
    fb::ShardListResp::create(fbb, &fb::ShardListRespArgs { shards })
}

fn encode_segments<'a>(
    fbb: &mut FlatBufferBuilder<'a>,
    segs: &[SegmentRecord],
) -> WIPOffset<fb::SegmentListResp<'a>> {
    let items: Vec<_> = segs
        .iter()
        .map(|sg| {
            let shard = Some(fbb.create_string(&sg.shard));
            let status = match sg.status {
                SegmentState::Write => fb::SegmentStatus::Write,
                SegmentState::SealRequested => fb::SegmentStatus::SealRequested,
                SegmentState::Sealed => fb::SegmentStatus::Sealed,
            };
            let args = fb::SegmentInfoArgs {
                shard,
                seq: sg.seq,
                status,
                start_offset: sg.start_offset,
                end_offset: sg.end_offset,
            };
            fb::SegmentInfo::create(fbb, &args)
        })
        .collect();
    let segments = Some(fbb.create_vector(&items));
    fb::SegmentListResp::create(fbb, &fb::SegmentListRespArgs { segments })
}

/// Decodes a response frame: its id and result.
pub fn decode_response(buf: &[u8]) -> Result<(u64, Result<Reply, ApiError>), String> {
    let resp = flatbuffers::root::<fb::Response>(buf).map_err(|e| e.to_string())?;
    if let Some(e) = resp.error() {
        let err = ApiError::from_wire(e.code(), s(e.message()), e.leader_id(), s(e.leader_addr()));
        return Ok((resp.id(), Err(err)));
    }
    let reply = decode_reply(&resp).ok_or("response without a body")?;
    Ok((resp.id(), Ok(reply)))
}

fn decode_reply(resp: &fb::Response<'_>) -> Option<Reply> {
    use fb::ResponseBody as R;
    Some(match resp.body_type() {
        R::Empty => Reply::Empty,
        R::ClusterStatus => Reply::Status(decode_status(&resp.body_as_cluster_status()?)),
        R::ValueResp => {
            let v = resp.body_as_value_resp()?;
            Reply::Value(v.found().then(|| bytes(v.value())))
        }
        R::BoolResp => Reply::Bool(resp.body_as_bool_resp()?.value()),
        R::KvListResp => Reply::Pairs(
            resp.body_as_kv_list_resp()?
                .pairs()
                .map(|v| v.iter().map(|p| (s(p.key()), bytes(p.value()))).collect())
                .unwrap_or_default(),
        ),
        R::NodeListResp => Reply::Nodes(
            resp.body_as_node_list_resp()?
                .nodes()
                .map(|v| v.iter().map(|n| node_from_fb(&n)).collect())
                .unwrap_or_default(),
        ),
        R::ShardListResp => Reply::Shards(
            resp.body_as_shard_list_resp()?
                .shards()
                .map(|v| v.iter().map(|sh| shard_from_fb(&sh)).collect())
                .unwrap_or_default(),
        ),
        R::SegmentListResp => Reply::Segments(
            resp.body_as_segment_list_resp()?
                .segments()
                .map(|v| v.iter().map(|sg| segment_from_fb(&sg)).collect())
                .unwrap_or_default(),
        ),
        _ => return None,
    })
}

fn shard_from_fb(sh: &fb::ShardInfo<'_>) -> ShardRecord {
    ShardRecord {
        name: s(sh.name()),
        replicas: sh.replicas(),
        active_segment: sh.active_segment(),
        created_ms: sh.created_ms(),
    }
}

fn segment_from_fb(sg: &fb::SegmentInfo<'_>) -> SegmentRecord {
    let status = match sg.status() {
        fb::SegmentStatus::SealRequested => SegmentState::SealRequested,
        fb::SegmentStatus::Sealed => SegmentState::Sealed,
        _ => SegmentState::Write,
    };
    SegmentRecord {
        shard: s(sg.shard()),
        seq: sg.seq(),
        status,
        start_offset: sg.start_offset(),
        end_offset: sg.end_offset(),
    }
}

fn decode_status(st: &fb::ClusterStatus<'_>) -> StatusInfo {
    StatusInfo {
        node_id: st.node_id(),
        role: s(st.role()),
        leader_id: st.leader_id(),
        leader_addr: s(st.leader_addr()),
        term: st.term(),
        commit_index: st.commit_index(),
        applied_index: st.applied_index(),
        snapshot_index: st.snapshot_index(),
        controller: st.controller(),
        members: st
            .members()
            .map(|v| {
                v.iter()
                    .map(|m| MemberInfo {
                        id: m.id(),
                        addr: s(m.addr()),
                        voter: m.kind() != Some("learner"),
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(call: Call) {
        let env = Envelope {
            id: 7,
            timeout_ms: 100,
            stale: true,
            call,
        };
        assert_eq!(decode_request(&encode_request(&env)).unwrap(), env);
    }

    #[test]
    fn every_call_round_trips() {
        round_trip(Call::Status);
        round_trip(Call::KvSet {
            key: "k".into(),
            value: vec![1, 2],
        });
        round_trip(Call::KvGet("k".into()));
        round_trip(Call::KvDelete("k".into()));
        round_trip(Call::KvExists("k".into()));
        round_trip(Call::KvList {
            prefix: "p".into(),
            limit: 3,
        });
        round_trip(Call::NodeRegister(NodeRecord {
            node_id: 4,
            addr: "a".into(),
            roles: vec!["mqtt".into()],
            registered_ms: 1,
            alive: true,
        }));
        round_trip(Call::NodeHeartbeat(4));
        round_trip(Call::NodeUnregister(4));
        round_trip(Call::NodeList);
        round_trip(Call::MemberAdd {
            id: 4,
            addr: "x".into(),
        });
        round_trip(Call::MemberRemove(4));
        round_trip(Call::ShardCreate {
            name: "s".into(),
            replicas: 3,
        });
        round_trip(Call::ShardDelete("s".into()));
        round_trip(Call::ShardList("s".into()));
        round_trip(Call::SegmentList("s".into()));
        round_trip(Call::SegmentSeal {
            shard: "s".into(),
            seq: 1,
            end_offset: 9,
        });
        round_trip(Call::MetaSet {
            kind: 2,
            name: "n".into(),
            value: vec![9],
        });
        round_trip(Call::MetaGet {
            kind: 1,
            name: "n".into(),
        });
        round_trip(Call::MetaDelete {
            kind: 1,
            name: "n".into(),
        });
        round_trip(Call::MetaList {
            kind: 4,
            prefix: "".into(),
        });
        round_trip(Call::Fault(true));
    }

    #[test]
    fn replies_and_errors_round_trip() {
        let replies = vec![
            Reply::Empty,
            Reply::Value(None),
            Reply::Value(Some(vec![])),
            Reply::Value(Some(b"v".to_vec())),
            Reply::Bool(true),
            Reply::Pairs(vec![("a".into(), b"1".to_vec())]),
            Reply::Status(StatusInfo {
                node_id: 1,
                role: "leader".into(),
                leader_id: 1,
                leader_addr: "x".into(),
                term: 2,
                commit_index: 3,
                applied_index: 3,
                snapshot_index: 1,
                controller: true,
                members: vec![MemberInfo {
                    id: 1,
                    addr: "x".into(),
                    voter: true,
                }],
            }),
        ];
        for r in replies {
            let buf = encode_response(5, &Ok(r.clone()));
            assert_eq!(decode_response(&buf).unwrap(), (5, Ok(r)));
        }
        let e = ApiError::NotLeader {
            leader_id: 2,
            leader_addr: "h:1".into(),
        };
        let buf = encode_response(6, &Err(e.clone()));
        assert_eq!(decode_response(&buf).unwrap(), (6, Err(e)));
    }

    #[test]
    fn garbage_requests_are_invalid_arguments() {
        for junk in [&b""[..], b"\x00\x00\x00\x00", b"garbage garbage garbage"] {
            let (_, e) = decode_request(junk).unwrap_err();
            assert!(matches!(e, ApiError::InvalidArgument(_)));
        }
    }
}
