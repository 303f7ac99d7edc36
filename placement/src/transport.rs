//! Raft messages between members over TCP.
//!
//! One outgoing connection per peer, owned by a task on the control-plane
//! runtime. The Raft loop hands it messages through a bounded queue and never
//! waits: a full queue drops the message (Raft retransmits). The task writes
//! whatever is queued as one batch of frames per `write`, and reconnects with
//! a backoff when the connection breaks, telling the Raft loop the peer is
//! unreachable (and that a snapshot in flight failed) so Raft probes again.
//!
//! Incoming peer connections are accepted by [`crate::server`], which reads
//! the frames and feeds them to the Raft loop.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use crossbeam::channel::Sender;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::frame::{put_frame, MAGIC_RAFT};
use crate::node::Input;

/// Messages queued per peer before new ones are dropped.
const PEER_QUEUE: usize = 4096;
/// Messages written in one batch at most.
const BATCH: usize = 512;
/// Bytes written in one batch at most (a snapshot may exceed it alone).
const BATCH_BYTES: usize = 4 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_millis(500);

struct Peer {
    addr: SocketAddr,
    tx: mpsc::Sender<Message>,
}

/// A message that could not be queued (unknown peer or full queue).
#[derive(Debug, Clone, Copy)]
pub struct Undelivered {
    /// Its recipient.
    pub to: u64,
    /// Whether it carried a snapshot.
    pub snapshot: bool,
}

/// The sending side of the transport, owned by the Raft loop.
pub struct Transport {
    me: u64,
    rt: tokio::runtime::Handle,
    inbox: Sender<Input>,
    peers: HashMap<u64, Peer>,
}

impl Transport {
    /// A transport for member `me`; peer tasks run on `rt` and report to `inbox`.
    pub fn new(me: u64, rt: tokio::runtime::Handle, inbox: Sender<Input>) -> Self {
        Transport {
            me,
            rt,
            inbox,
            peers: HashMap::new(),
        }
    }

    /// Connects to exactly these members (other than this one).
    pub fn set_members(&mut self, members: &BTreeMap<u64, SocketAddr>) {
        self.peers
            .retain(|id, p| members.get(id).is_some_and(|a| *a == p.addr));
        for (&id, &addr) in members {
            if id == self.me || self.peers.contains_key(&id) {
                continue;
            }
            let (tx, rx) = mpsc::channel(PEER_QUEUE);
            let link = Link {
                me: self.me,
                to: id,
                addr,
                inbox: self.inbox.clone(),
            };
            self.rt.spawn(link.run(rx));
            self.peers.insert(id, Peer { addr, tx });
        }
    }

    /// Queues a message without waiting.
    pub fn send(&mut self, msg: Message) -> Result<(), Undelivered> {
        let undelivered = Undelivered {
            to: msg.to,
            snapshot: is_snapshot(&msg),
        };
        match self.peers.get(&msg.to) {
            Some(peer) => peer.tx.try_send(msg).map_err(|_| undelivered),
            None => Err(undelivered),
        }
    }
}

/// One outgoing connection to a peer.
struct Link {
    me: u64,
    to: u64,
    addr: SocketAddr,
    inbox: Sender<Input>,
}

impl Link {
    async fn run(self, mut rx: mpsc::Receiver<Message>) {
        let mut backoff = Duration::from_millis(20);
        loop {
            match self.connect().await {
                Ok(stream) => {
                    backoff = Duration::from_millis(20);
                    if self.pump(stream, &mut rx).await {
                        return;
                    }
                }
                Err(e) => {
                    tracing::debug!(to = self.to, addr = %self.addr, "cannot connect: {e}");
                    self.fail_queued(&mut rx);
                    if rx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    async fn connect(&self) -> std::io::Result<TcpStream> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
        stream.set_nodelay(true)?;
        let mut hello = MAGIC_RAFT.to_vec();
        hello.extend_from_slice(&self.me.to_be_bytes());
        let mut stream = stream;
        stream.write_all(&hello).await?;
        Ok(stream)
    }

    /// Writes queued messages until the connection breaks (`false`) or the
    /// queue is closed (`true`).
    async fn pump(&self, mut stream: TcpStream, rx: &mut mpsc::Receiver<Message>) -> bool {
        let mut buf = Vec::new();
        loop {
            let Some(first) = rx.recv().await else {
                return true;
            };
            buf.clear();
            let mut snapshots = usize::from(is_snapshot(&first));
            encode(&mut buf, &first);
            let mut n = 1;
            while n < BATCH && buf.len() < BATCH_BYTES {
                let Ok(m) = rx.try_recv() else { break };
                snapshots += usize::from(is_snapshot(&m));
                encode(&mut buf, &m);
                n += 1;
            }
            let ok = stream.write_all(&buf).await.is_ok();
            for _ in 0..snapshots {
                let _ = self.inbox.try_send(Input::SnapshotStatus(self.to, ok));
            }
            if !ok {
                tracing::debug!(to = self.to, "connection lost");
                let _ = self.inbox.try_send(Input::Unreachable(self.to));
                return false;
            }
        }
    }

    /// Drops what is queued while the peer is unreachable (Raft resends).
    fn fail_queued(&self, rx: &mut mpsc::Receiver<Message>) {
        let mut dropped = false;
        while let Ok(m) = rx.try_recv() {
            dropped = true;
            if is_snapshot(&m) {
                let _ = self.inbox.try_send(Input::SnapshotStatus(self.to, false));
            }
        }
        if dropped {
            let _ = self.inbox.try_send(Input::Unreachable(self.to));
        }
    }
}

fn is_snapshot(m: &Message) -> bool {
    m.get_msg_type() == MessageType::MsgSnapshot
}

fn encode(buf: &mut Vec<u8>, m: &Message) {
    match m.write_to_bytes() {
        Ok(bytes) => put_frame(buf, &bytes),
        Err(e) => tracing::error!("cannot encode a raft message: {e}"),
    }
}
