//! What each call does: validation, the key layout, and the Raft write or
//! read it turns into.

use std::time::Duration;

use raft::eraftpb::{ConfChange, ConfChangeType};
use robustmq_protocol::wire::placement_generated::robustmq::placement as fb;

use crate::command::{Check, Op, Txn};
use crate::error::ApiError;
use crate::keys::{self, NodeRecord, SegmentRecord, SegmentState, ShardRecord};
use crate::node::{NodeHandle, Query, QueryResult};
use crate::wire::{Call, Envelope, Reply};

/// Longest key or name accepted.
pub const MAX_KEY: usize = 4096;
/// Largest value accepted.
pub const MAX_VALUE: usize = 1 << 20;

/// Serves calls for one member.
#[derive(Clone, Debug)]
pub struct Service {
    node: NodeHandle,
    default_timeout: Duration,
    fault_injection: bool,
}

/// A call's options.
#[derive(Clone, Copy)]
struct Opts {
    timeout: Duration,
    stale: bool,
}

impl Service {
    /// A service over `node`.
    pub fn new(node: NodeHandle, default_timeout: Duration, fault_injection: bool) -> Self {
        Service {
            node,
            default_timeout,
            fault_injection,
        }
    }

    /// Executes one call.
    pub async fn execute(&self, env: Envelope) -> Result<Reply, ApiError> {
        let timeout = match env.timeout_ms {
            0 => self.default_timeout,
            ms => Duration::from_millis(u64::from(ms)),
        };
        let o = Opts {
            timeout,
            stale: env.stale,
        };
        match env.call {
            Call::Status => self.node.status(timeout).await.map(Reply::Status),
            Call::KvSet { key, value } => self.kv_set(key, value, o).await,
            Call::KvGet(key) => self.kv_get(key, o).await,
            Call::KvDelete(key) => self.kv_delete(key, o).await,
            Call::KvExists(key) => {
                let v = self.kv_get(key, o).await?;
                Ok(Reply::Bool(matches!(v, Reply::Value(Some(_)))))
            }
            Call::KvList { prefix, limit } => self.kv_list(prefix, limit, o).await,
            Call::NodeRegister(n) => self.node_register(n, o).await,
            Call::NodeHeartbeat(id) => self.node.heartbeat(id, timeout).await.map(|_| Reply::Empty),
            Call::NodeUnregister(id) => self.delete(keys::id_key(keys::NODES, id), o).await,
            Call::NodeList => {
                self.list_records(keys::NODES.to_vec(), o, Reply::Nodes)
                    .await
            }
            Call::MemberAdd { id, addr } => self.member_add(id, addr, o).await,
            Call::MemberRemove(id) => {
                self.member_change(id, ConfChangeType::RemoveNode, "", o)
                    .await
            }
            other => self.execute_more(other, o).await,
        }
    }

    async fn execute_more(&self, call: Call, o: Opts) -> Result<Reply, ApiError> {
        match call {
            Call::ShardCreate { name, replicas } => self.shard_create(name, replicas, o).await,
            Call::ShardDelete(name) => self.shard_delete(name, o).await,
            Call::ShardList(prefix) => {
                check_name(&prefix, true)?;
                self.list_records(keys::shard_key(&prefix), o, Reply::Shards)
                    .await
            }
            Call::SegmentList(shard) => {
                check_name(&shard, false)?;
                self.list_records(keys::segment_prefix(&shard), o, Reply::Segments)
                    .await
            }
            Call::SegmentSeal {
                shard,
                seq,
                end_offset,
            } => self.segment_seal(shard, seq, end_offset, o).await,
            Call::MetaSet { kind, name, value } => self.meta_set(kind, name, value, o).await,
            Call::MetaGet { kind, name } => {
                check_meta(kind, &name, false)?;
                let key = keys::key(&keys::meta_prefix(kind), name.as_bytes());
                Ok(Reply::Value(self.get(key, o).await?))
            }
            Call::MetaDelete { kind, name } => {
                check_meta(kind, &name, false)?;
                self.delete(keys::key(&keys::meta_prefix(kind), name.as_bytes()), o)
                    .await
            }
            Call::MetaList { kind, prefix } => {
                check_meta(kind, &prefix, true)?;
                let meta = keys::meta_prefix(kind);
                let pairs = self.list(keys::key(&meta, prefix.as_bytes()), 0, o).await?;
                Ok(Reply::Pairs(strip(&meta, pairs)))
            }
            Call::Fault(isolate) => self.fault(isolate),
            _ => Err(ApiError::InvalidArgument("unknown call".into())),
        }
    }

    async fn write(&self, txn: Txn, o: Opts) -> Result<crate::state::Applied, ApiError> {
        self.node.write(txn.encode(), o.timeout).await
    }

    async fn get(&self, key: Vec<u8>, o: Opts) -> Result<Option<Vec<u8>>, ApiError> {
        match self.node.read(Query::Get(key), o.stale, o.timeout).await? {
            QueryResult::Value(v) => Ok(v),
            QueryResult::Pairs(_) => Err(ApiError::Internal("unexpected read result".into())),
        }
    }

    async fn list(
        &self,
        prefix: Vec<u8>,
        limit: u32,
        o: Opts,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, ApiError> {
        let limit = if limit == 0 {
            usize::MAX
        } else {
            limit as usize
        };
        match self
            .node
            .read(Query::List { prefix, limit }, o.stale, o.timeout)
            .await?
        {
            QueryResult::Pairs(p) => Ok(p),
            QueryResult::Value(_) => Err(ApiError::Internal("unexpected read result".into())),
        }
    }

    async fn delete(&self, key: Vec<u8>, o: Opts) -> Result<Reply, ApiError> {
        let applied = self.write(Txn::delete(key), o).await?;
        Ok(Reply::Bool(applied.removed > 0))
    }

    async fn kv_set(&self, key: String, value: Vec<u8>, o: Opts) -> Result<Reply, ApiError> {
        check_key(&key)?;
        if value.len() > MAX_VALUE {
            return Err(ApiError::InvalidArgument(format!(
                "value longer than {MAX_VALUE} bytes"
            )));
        }
        self.write(Txn::put(keys::key(keys::KV, key.as_bytes()), value), o)
            .await?;
        Ok(Reply::Empty)
    }

    async fn kv_get(&self, key: String, o: Opts) -> Result<Reply, ApiError> {
        check_key(&key)?;
        Ok(Reply::Value(
            self.get(keys::key(keys::KV, key.as_bytes()), o).await?,
        ))
    }

    async fn kv_delete(&self, key: String, o: Opts) -> Result<Reply, ApiError> {
        check_key(&key)?;
        self.delete(keys::key(keys::KV, key.as_bytes()), o).await
    }

    async fn kv_list(&self, prefix: String, limit: u32, o: Opts) -> Result<Reply, ApiError> {
        if prefix.len() > MAX_KEY {
            return Err(ApiError::InvalidArgument("prefix too long".into()));
        }
        let pairs = self
            .list(keys::key(keys::KV, prefix.as_bytes()), limit, o)
            .await?;
        Ok(Reply::Pairs(strip(keys::KV, pairs)))
    }

    async fn list_records<T: serde::de::DeserializeOwned>(
        &self,
        prefix: Vec<u8>,
        o: Opts,
        wrap: fn(Vec<T>) -> Reply,
    ) -> Result<Reply, ApiError> {
        let pairs = self.list(prefix, 0, o).await?;
        Ok(wrap(
            pairs.iter().filter_map(|(_, v)| keys::decode(v)).collect(),
        ))
    }

    async fn node_register(&self, mut n: NodeRecord, o: Opts) -> Result<Reply, ApiError> {
        if n.node_id == 0 || n.addr.is_empty() || n.addr.len() > MAX_KEY {
            return Err(ApiError::InvalidArgument(
                "a node needs an id and an address".into(),
            ));
        }
        n.registered_ms = keys::now_ms();
        n.alive = true;
        let key = keys::id_key(keys::NODES, n.node_id);
        self.write(Txn::put(key, keys::encode(&n)), o).await?;
        Ok(Reply::Empty)
    }

    async fn member_add(&self, id: u64, addr: String, o: Opts) -> Result<Reply, ApiError> {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ApiError::InvalidArgument(format!(
                "`{addr}` is not an ip:port"
            )));
        }
        self.member_change(id, ConfChangeType::AddNode, &addr, o)
            .await
    }

    async fn member_change(
        &self,
        id: u64,
        kind: ConfChangeType,
        addr: &str,
        o: Opts,
    ) -> Result<Reply, ApiError> {
        if id == 0 {
            return Err(ApiError::InvalidArgument("node id 0 is reserved".into()));
        }
        let mut cc = ConfChange::default();
        cc.set_change_type(kind);
        cc.node_id = id;
        cc.context = addr.as_bytes().to_vec().into();
        self.node.conf_change(cc, o.timeout).await?;
        Ok(Reply::Empty)
    }

    async fn shard_create(&self, name: String, replicas: u32, o: Opts) -> Result<Reply, ApiError> {
        check_name(&name, false)?;
        let shard = ShardRecord {
            name: name.clone(),
            replicas: replicas.max(1),
            active_segment: 0,
            created_ms: keys::now_ms(),
        };
        let first = SegmentRecord {
            shard: name.clone(),
            seq: 0,
            status: SegmentState::Write,
            start_offset: 0,
            end_offset: 0,
        };
        let key = keys::shard_key(&name);
        let txn = Txn {
            checks: vec![Check::Absent(key.clone())],
            ops: vec![
                Op::DeletePrefix(keys::segment_prefix(&name)),
                Op::Put(key, keys::encode(&shard)),
                Op::Put(keys::segment_key(&name, 0), keys::encode(&first)),
            ],
        };
        if !self.write(txn, o).await?.succeeded {
            return Err(ApiError::InvalidArgument(format!(
                "shard `{name}` already exists"
            )));
        }
        Ok(Reply::Empty)
    }

    async fn shard_delete(&self, name: String, o: Opts) -> Result<Reply, ApiError> {
        check_name(&name, false)?;
        let key = keys::shard_key(&name);
        let txn = Txn {
            checks: vec![Check::Present(key.clone())],
            ops: vec![
                Op::Delete(key),
                Op::DeletePrefix(keys::segment_prefix(&name)),
            ],
        };
        if !self.write(txn, o).await?.succeeded {
            return Err(ApiError::NotFound(format!("shard `{name}`")));
        }
        Ok(Reply::Empty)
    }

    async fn segment_seal(
        &self,
        shard: String,
        seq: u32,
        end_offset: u64,
        o: Opts,
    ) -> Result<Reply, ApiError> {
        check_name(&shard, false)?;
        let key = keys::segment_key(&shard, seq);
        let lin = Opts { stale: false, ..o };
        let current = self
            .get(key.clone(), lin)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("segment {shard}/{seq}")))?;
        let seg: SegmentRecord = keys::decode(&current)
            .ok_or_else(|| ApiError::Internal("undecodable segment".into()))?;
        if seg.status != SegmentState::Write {
            return Ok(Reply::Bool(false));
        }
        if end_offset < seg.start_offset {
            return Err(ApiError::InvalidArgument(
                "end_offset before the segment start".into(),
            ));
        }
        let updated = SegmentRecord {
            status: SegmentState::SealRequested,
            end_offset,
            ..seg
        };
        let txn = Txn {
            checks: vec![Check::Equals(key.clone(), current)],
            ops: vec![Op::Put(key, keys::encode(&updated))],
        };
        if !self.write(txn, o).await?.succeeded {
            return Err(ApiError::Unavailable(
                "segment changed concurrently; retry".into(),
            ));
        }
        Ok(Reply::Bool(true))
    }

    async fn meta_set(
        &self,
        kind: u8,
        name: String,
        value: Vec<u8>,
        o: Opts,
    ) -> Result<Reply, ApiError> {
        check_meta(kind, &name, false)?;
        let record_name = meta_record_name(kind, &value)?;
        if record_name != name {
            return Err(ApiError::InvalidArgument(format!(
                "the record is named `{record_name}`, not `{name}`"
            )));
        }
        let key = keys::key(&keys::meta_prefix(kind), name.as_bytes());
        self.write(Txn::put(key, value), o).await?;
        Ok(Reply::Empty)
    }

    fn fault(&self, isolate: bool) -> Result<Reply, ApiError> {
        if !self.fault_injection {
            return Err(ApiError::InvalidArgument(
                "fault injection is disabled on this member".into(),
            ));
        }
        if !self.node.send(crate::node::Input::Isolate(isolate)) {
            return Err(ApiError::Unavailable("placement member busy".into()));
        }
        Ok(Reply::Empty)
    }
}

fn strip(prefix: &[u8], pairs: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<(String, Vec<u8>)> {
    pairs
        .into_iter()
        .map(|(k, v)| (String::from_utf8_lossy(&k[prefix.len()..]).into_owned(), v))
        .collect()
}

fn check_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() || key.len() > MAX_KEY {
        return Err(ApiError::InvalidArgument(format!(
            "a key must be 1 to {MAX_KEY} bytes"
        )));
    }
    Ok(())
}

/// Names of shards and metadata records: no `/`, at most `MAX_KEY` bytes.
fn check_name(name: &str, prefix: bool) -> Result<(), ApiError> {
    if (!prefix && name.is_empty()) || name.len() > MAX_KEY || name.contains('/') {
        return Err(ApiError::InvalidArgument(format!(
            "invalid name `{name}` (1 to {MAX_KEY} bytes, no `/`)"
        )));
    }
    Ok(())
}

fn check_meta(kind: u8, name: &str, prefix: bool) -> Result<(), ApiError> {
    if kind > fb::MetaKind::ENUM_MAX {
        return Err(ApiError::InvalidArgument(format!(
            "unknown metadata kind {kind}"
        )));
    }
    check_name(name, prefix)
}

/// Verifies a metadata record's flatbuffer against its kind; its name.
fn meta_record_name(kind: u8, value: &[u8]) -> Result<String, ApiError> {
    let bad = |e: flatbuffers::InvalidFlatbuffer| {
        ApiError::InvalidArgument(format!("malformed record: {e}"))
    };
    let name = match fb::MetaKind(kind) {
        fb::MetaKind::User => flatbuffers::root::<fb::User>(value)
            .map_err(bad)?
            .username(),
        fb::MetaKind::Acl => flatbuffers::root::<fb::AclRule>(value).map_err(bad)?.name(),
        fb::MetaKind::Blacklist => flatbuffers::root::<fb::BlacklistEntry>(value)
            .map_err(bad)?
            .name(),
        fb::MetaKind::Connector => flatbuffers::root::<fb::ConnectorConfig>(value)
            .map_err(bad)?
            .name(),
        fb::MetaKind::Schema => flatbuffers::root::<fb::SchemaConfig>(value)
            .map_err(bad)?
            .name(),
        _ => None,
    };
    name.map(str::to_string)
        .ok_or_else(|| ApiError::InvalidArgument("the record has no name".into()))
}
