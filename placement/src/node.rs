//! The interface between the RPC side and the Raft loop: the inputs the loop
//! takes, and [`NodeHandle`], the async, cloneable way to call into it.
//!
//! Every call carries a reply channel and a deadline. The inbox is bounded:
//! when it is full a call fails at once with `Unavailable` rather than queue
//! without limit.

use std::time::{Duration, Instant};

use crossbeam::channel::{Sender, TrySendError};
use raft::eraftpb::{ConfChange, Message};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::state::Applied;

/// Capacity of the Raft loop's inbox.
pub const INBOX: usize = 65_536;

/// Where a call's result goes.
pub type Reply<T> = oneshot::Sender<Result<T, ApiError>>;

/// A read of the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// One key.
    Get(Vec<u8>),
    /// Keys under a prefix, in order, at most `limit`.
    List {
        /// The prefix.
        prefix: Vec<u8>,
        /// The most pairs returned.
        limit: usize,
    },
}

/// The answer to a [`Query`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult {
    /// The value of the key, if any.
    Value(Option<Vec<u8>>),
    /// The pairs found.
    Pairs(Vec<(Vec<u8>, Vec<u8>)>),
}

/// A member as the status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// Node id.
    pub id: u64,
    /// Its address.
    pub addr: String,
    /// Whether it votes (otherwise a learner).
    pub voter: bool,
}

/// One member's view of the group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusInfo {
    /// The member that answered.
    pub node_id: u64,
    /// leader, follower, candidate or pre-candidate.
    pub role: String,
    /// The leader, 0 if unknown.
    pub leader_id: u64,
    /// The leader's address, empty if unknown.
    pub leader_addr: String,
    /// Current term.
    pub term: u64,
    /// Commit index.
    pub commit_index: u64,
    /// Applied index.
    pub applied_index: u64,
    /// Index of the latest snapshot.
    pub snapshot_index: u64,
    /// Whether the leader-only controller runs here.
    pub controller: bool,
    /// The members.
    pub members: Vec<MemberInfo>,
}

/// What the Raft loop takes in.
pub enum Input {
    /// A message from a peer.
    Raft(Box<Message>),
    /// The transport lost a peer.
    Unreachable(u64),
    /// A snapshot was sent to a peer (true) or failed to be (false).
    SnapshotStatus(u64, bool),
    /// A write: an encoded [`crate::command::Txn`].
    Write {
        /// The encoded transaction.
        txn: Vec<u8>,
        /// The result.
        reply: Reply<Applied>,
        /// When to give up.
        deadline: Instant,
    },
    /// A membership change.
    ConfChange {
        /// The change; its context is the new member's address.
        cc: ConfChange,
        /// The result.
        reply: Reply<Applied>,
        /// When to give up.
        deadline: Instant,
    },
    /// A read.
    Read {
        /// What to read.
        query: Query,
        /// Serve from local state without a ReadIndex round.
        stale: bool,
        /// The result.
        reply: Reply<QueryResult>,
        /// When to give up.
        deadline: Instant,
    },
    /// The member's status.
    Status(Reply<StatusInfo>),
    /// A registered node's heartbeat (leader only).
    Heartbeat {
        /// The node.
        node_id: u64,
        /// Ok, NotFound, or NotLeader.
        reply: Reply<()>,
    },
    /// Test hook: drop every Raft message to and from this member.
    Isolate(bool),
    /// Stop the loop.
    Stop,
}

/// A cloneable handle on the Raft loop.
#[derive(Clone, Debug)]
pub struct NodeHandle {
    tx: Sender<Input>,
}

impl NodeHandle {
    /// A handle sending to `tx`.
    pub fn new(tx: Sender<Input>) -> Self {
        NodeHandle { tx }
    }

    /// Sends an input without waiting; false if the loop is gone or full.
    pub fn send(&self, input: Input) -> bool {
        self.tx.try_send(input).is_ok()
    }

    async fn call<T>(
        &self,
        timeout: Duration,
        make: impl FnOnce(Reply<T>, Instant) -> Input,
    ) -> Result<T, ApiError> {
        let (reply, rx) = oneshot::channel();
        let deadline = Instant::now() + timeout;
        match self.tx.try_send(make(reply, deadline)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(ApiError::Unavailable("placement member overloaded".into()))
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(ApiError::Unavailable("placement member stopped".into()))
            }
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(ApiError::Unavailable("placement member stopped".into())),
            Err(_) => Err(ApiError::Timeout),
        }
    }

    /// Replicates and applies a write.
    pub async fn write(&self, txn: Vec<u8>, timeout: Duration) -> Result<Applied, ApiError> {
        self.call(timeout, |reply, deadline| Input::Write {
            txn,
            reply,
            deadline,
        })
        .await
    }

    /// Changes the membership.
    pub async fn conf_change(
        &self,
        cc: ConfChange,
        timeout: Duration,
    ) -> Result<Applied, ApiError> {
        self.call(timeout, |reply, deadline| Input::ConfChange {
            cc,
            reply,
            deadline,
        })
        .await
    }

    /// Reads, linearizably unless `stale`.
    pub async fn read(
        &self,
        query: Query,
        stale: bool,
        timeout: Duration,
    ) -> Result<QueryResult, ApiError> {
        self.call(timeout, |reply, deadline| Input::Read {
            query,
            stale,
            reply,
            deadline,
        })
        .await
    }

    /// This member's view of the group.
    pub async fn status(&self, timeout: Duration) -> Result<StatusInfo, ApiError> {
        self.call(timeout, |reply, _| Input::Status(reply)).await
    }

    /// Records a node's heartbeat on the leader.
    pub async fn heartbeat(&self, node_id: u64, timeout: Duration) -> Result<(), ApiError> {
        self.call(timeout, |reply, _| Input::Heartbeat { node_id, reply })
            .await
    }
}
