//! The placement client: one TCP connection to a member, pipelined calls,
//! and leader hints followed.
//!
//! Any member's address works: writes sent to a follower are forwarded by it.
//! A call that fails with `NotLeader` (never executed) is retried against
//! the hinted leader, or the next known address, until its deadline. Other
//! errors are returned: after a `Timeout` or a lost connection a write may or
//! may not have taken effect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::frame::{put_frame, read_frame, MAGIC_RPC};
use crate::keys::NodeRecord;
use crate::node::StatusInfo;
use crate::wire::{decode_response, encode_request, Call, Envelope, Reply};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Reply, ApiError>>>>>;

/// One open connection.
struct Conn {
    addr: String,
    tx: mpsc::Sender<Vec<u8>>,
    pending: Pending,
}

impl Conn {
    async fn open(addr: &str, timeout: Duration) -> Result<Conn, ApiError> {
        let unavailable =
            |e: String| ApiError::Unavailable(format!("cannot connect to {addr}: {e}"));
        let mut stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| unavailable("timeout".into()))?
            .map_err(|e| unavailable(e.to_string()))?;
        stream
            .set_nodelay(true)
            .map_err(|e| unavailable(e.to_string()))?;
        stream
            .write_all(MAGIC_RPC)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let (mut reader, mut writer) = stream.into_split();
        let pending: Pending = Arc::default();
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Some(first) = rx.recv().await {
                buf.clear();
                put_frame(&mut buf, &first);
                while let Ok(more) = rx.try_recv() {
                    put_frame(&mut buf, &more);
                    if buf.len() > 1 << 20 {
                        break;
                    }
                }
                if writer.write_all(&buf).await.is_err() {
                    return;
                }
            }
        });
        let reader_pending = pending.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            while let Ok(true) = read_frame(&mut reader, &mut buf).await {
                let Ok((id, result)) = decode_response(&buf) else {
                    break;
                };
                let waiter = reader_pending.lock().ok().and_then(|mut p| p.remove(&id));
                if let Some(w) = waiter {
                    let _ = w.send(result);
                }
            }
            if let Ok(mut p) = reader_pending.lock() {
                p.clear(); // dropping the senders fails the waiting calls
            }
        });
        Ok(Conn {
            addr: addr.to_string(),
            tx,
            pending,
        })
    }

    fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }

    async fn request(&self, env: &Envelope, timeout: Duration) -> Result<Reply, ApiError> {
        let (reply, rx) = oneshot::channel();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(env.id, reply);
        }
        let lost = || ApiError::Unavailable(format!("connection to {} lost", self.addr));
        if self.tx.send(encode_request(env)).await.is_err() {
            return Err(lost());
        }
        let result = tokio::time::timeout(timeout, rx).await;
        if let Ok(mut p) = self.pending.lock() {
            p.remove(&env.id);
        }
        match result {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(lost()),
            Err(_) => Err(ApiError::Timeout),
        }
    }
}

/// A client of the placement center.
pub struct Client {
    seeds: Vec<String>,
    next_seed: AtomicU64,
    conn: tokio::sync::Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
    timeout: Duration,
    leader_routing: bool,
}

impl Client {
    /// A client of the members at `addrs` (any one of them is enough); each
    /// call gives up after `timeout`. Connects lazily.
    pub fn new(addrs: Vec<String>, timeout: Duration) -> Client {
        Client {
            seeds: addrs,
            next_seed: AtomicU64::new(0),
            conn: tokio::sync::Mutex::new(None),
            next_id: AtomicU64::new(1),
            timeout,
            leader_routing: true,
        }
    }

    /// Whether a new connection moves to the leader (the default): writes
    /// then skip the follower's forwarding hop. Without it, calls stay on
    /// the member first reached and followers forward writes.
    pub fn leader_routing(mut self, on: bool) -> Client {
        self.leader_routing = on;
        self
    }

    /// The address of the member this client talks to now, if connected.
    pub async fn current_addr(&self) -> Option<String> {
        self.conn.lock().await.as_ref().map(|c| c.addr.clone())
    }

    async fn connection(
        &self,
        prefer: Option<String>,
        deadline: Instant,
    ) -> Result<Arc<Conn>, ApiError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            if !c.is_closed() && prefer.as_ref().is_none_or(|p| *p == c.addr) {
                return Ok(c.clone());
            }
        }
        let addr = match prefer {
            Some(a) => a,
            None => {
                let n = self.seeds.len().max(1) as u64;
                let i = self.next_seed.fetch_add(1, Ordering::Relaxed) % n;
                self.seeds.get(i as usize).cloned().unwrap_or_default()
            }
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let mut conn = Arc::new(Conn::open(&addr, left.min(Duration::from_secs(1))).await?);
        if self.leader_routing {
            if let Some(leader) = self.to_leader(&conn, deadline).await {
                conn = leader;
            }
        }
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// A connection to the leader, if `conn` is to another member that
    /// knows it and the leader answers.
    async fn to_leader(&self, conn: &Conn, deadline: Instant) -> Option<Arc<Conn>> {
        let left = deadline.saturating_duration_since(Instant::now());
        let env = Envelope {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            timeout_ms: 1000,
            stale: true,
            call: Call::Status,
        };
        let Ok(Reply::Status(st)) = conn.request(&env, left.min(Duration::from_secs(1))).await
        else {
            return None;
        };
        if st.leader_id == 0 || st.leader_id == st.node_id || st.leader_addr.is_empty() {
            return None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let leader = Conn::open(&st.leader_addr, left.min(Duration::from_secs(1))).await;
        leader.ok().map(Arc::new)
    }

    async fn drop_connection(&self) {
        *self.conn.lock().await = None;
    }

    /// Makes a call, following leader hints until the deadline.
    pub async fn call(&self, call: Call, stale: bool) -> Result<Reply, ApiError> {
        let deadline = Instant::now() + self.timeout;
        let mut prefer = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ApiError::Timeout);
            }
            let conn = match self.connection(prefer.take(), deadline).await {
                Ok(c) => c,
                Err(e) => {
                    self.backoff(deadline).await.ok_or(e)?;
                    continue;
                }
            };
            let env = Envelope {
                id: self.next_id.fetch_add(1, Ordering::Relaxed),
                timeout_ms: left.as_millis().min(u128::from(u32::MAX)) as u32,
                stale,
                call: call.clone(),
            };
            match conn.request(&env, left).await {
                Err(ApiError::NotLeader { leader_addr, .. }) => {
                    if leader_addr.is_empty() || leader_addr == conn.addr {
                        self.drop_connection().await;
                        self.backoff(deadline).await.ok_or(ApiError::Timeout)?;
                    } else {
                        prefer = Some(leader_addr);
                    }
                }
                Err(e @ ApiError::Unavailable(_)) => {
                    self.drop_connection().await;
                    return Err(e);
                }
                other => return other,
            }
        }
    }

    /// Sleeps a little before a retry; `None` when the deadline is too near.
    async fn backoff(&self, deadline: Instant) -> Option<()> {
        let pause = Duration::from_millis(50);
        if Instant::now() + pause >= deadline {
            return None;
        }
        tokio::time::sleep(pause).await;
        Some(())
    }

    /// The answering member's view of the group.
    pub async fn status(&self) -> Result<StatusInfo, ApiError> {
        match self.call(Call::Status, false).await? {
            Reply::Status(s) => Ok(s),
            _ => Err(unexpected()),
        }
    }

    /// Sets a key.
    pub async fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        let call = Call::KvSet {
            key: key.into(),
            value: value.to_vec(),
        };
        self.call(call, false).await.map(|_| ())
    }

    /// Gets a key (linearizable unless `stale`).
    pub async fn kv_get(&self, key: &str, stale: bool) -> Result<Option<Vec<u8>>, ApiError> {
        match self.call(Call::KvGet(key.into()), stale).await? {
            Reply::Value(v) => Ok(v),
            _ => Err(unexpected()),
        }
    }

    /// Deletes a key; whether it existed.
    pub async fn kv_delete(&self, key: &str) -> Result<bool, ApiError> {
        self.boolean(Call::KvDelete(key.into()), false).await
    }

    /// Whether a key exists.
    pub async fn kv_exists(&self, key: &str, stale: bool) -> Result<bool, ApiError> {
        self.boolean(Call::KvExists(key.into()), stale).await
    }

    /// Pairs under a prefix (0 = no limit).
    pub async fn kv_list(
        &self,
        prefix: &str,
        limit: u32,
        stale: bool,
    ) -> Result<Vec<(String, Vec<u8>)>, ApiError> {
        let call = Call::KvList {
            prefix: prefix.into(),
            limit,
        };
        match self.call(call, stale).await? {
            Reply::Pairs(p) => Ok(p),
            _ => Err(unexpected()),
        }
    }

    /// Registers a node.
    pub async fn node_register(&self, node: NodeRecord) -> Result<(), ApiError> {
        self.call(Call::NodeRegister(node), false).await.map(|_| ())
    }

    /// Sends a node's heartbeat to the leader.
    pub async fn node_heartbeat(&self, node_id: u64) -> Result<(), ApiError> {
        self.call(Call::NodeHeartbeat(node_id), false)
            .await
            .map(|_| ())
    }

    /// Registered nodes.
    pub async fn node_list(&self) -> Result<Vec<NodeRecord>, ApiError> {
        match self.call(Call::NodeList, false).await? {
            Reply::Nodes(n) => Ok(n),
            _ => Err(unexpected()),
        }
    }

    /// Adds a Raft member.
    pub async fn member_add(&self, id: u64, addr: &str) -> Result<(), ApiError> {
        let call = Call::MemberAdd {
            id,
            addr: addr.into(),
        };
        self.call(call, false).await.map(|_| ())
    }

    /// Removes a Raft member.
    pub async fn member_remove(&self, id: u64) -> Result<(), ApiError> {
        self.call(Call::MemberRemove(id), false).await.map(|_| ())
    }

    /// Test hook: isolates (or reconnects) the member this client talks to.
    pub async fn fault_isolate(&self, isolate: bool) -> Result<(), ApiError> {
        self.call(Call::Fault(isolate), false).await.map(|_| ())
    }

    async fn boolean(&self, call: Call, stale: bool) -> Result<bool, ApiError> {
        match self.call(call, stale).await? {
            Reply::Bool(b) => Ok(b),
            _ => Err(unexpected()),
        }
    }
}

fn unexpected() -> ApiError {
    ApiError::Internal("unexpected reply type".into())
}

/// A blocking client: the async [`Client`] on a private current-thread
/// runtime, for tools and tests that are not async.
pub struct BlockingClient {
    rt: tokio::runtime::Runtime,
    inner: Client,
}

impl BlockingClient {
    /// See [`Client::new`].
    pub fn new(addrs: Vec<String>, timeout: Duration) -> Result<BlockingClient, ApiError> {
        Self::with_client(Client::new(addrs, timeout))
    }

    /// Wraps a configured client.
    pub fn with_client(inner: Client) -> Result<BlockingClient, ApiError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        Ok(BlockingClient { rt, inner })
    }

    /// Makes a call (see [`Client::call`]).
    pub fn call(&self, call: Call, stale: bool) -> Result<Reply, ApiError> {
        self.rt.block_on(self.inner.call(call, stale))
    }

    /// See [`Client::status`].
    pub fn status(&self) -> Result<StatusInfo, ApiError> {
        self.rt.block_on(self.inner.status())
    }

    /// See [`Client::kv_set`].
    pub fn kv_set(&self, key: &str, value: &[u8]) -> Result<(), ApiError> {
        self.rt.block_on(self.inner.kv_set(key, value))
    }

    /// See [`Client::kv_get`].
    pub fn kv_get(&self, key: &str, stale: bool) -> Result<Option<Vec<u8>>, ApiError> {
        self.rt.block_on(self.inner.kv_get(key, stale))
    }

    /// See [`Client::kv_delete`].
    pub fn kv_delete(&self, key: &str) -> Result<bool, ApiError> {
        self.rt.block_on(self.inner.kv_delete(key))
    }

    /// See [`Client::fault_isolate`].
    pub fn fault_isolate(&self, isolate: bool) -> Result<(), ApiError> {
        self.rt.block_on(self.inner.fault_isolate(isolate))
    }
}
