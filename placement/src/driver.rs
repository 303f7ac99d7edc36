//! The Raft loop: one thread that owns the `RawNode`, the storage, the state
//! machine and the controller.
//!
//! Each turn it takes every input that is waiting (up to a bound), so
//! proposals and reads arriving together are batched, ticks when a tick is
//! due, then handles the `Ready` in order: send the leader's messages, install
//! a snapshot, persist entries and hard state with one fsync, send the
//! messages that had to wait for it, apply committed entries, answer the
//! callers, advance. Linearizable reads arriving in the same turn share one
//! ReadIndex round. Snapshots are written by a thread of the storage; the
//! loop only encodes the state machine and, once the file is durable,
//! compacts the log.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, RecvTimeoutError, Select, TryRecvError};
use protobuf::Message as _;
use raft::eraftpb::{
    ConfChange, ConfChangeType, ConfChangeV2, ConfState, Entry, EntryType, Message, Snapshot,
};
use raft::{RawNode, ReadState, SnapshotStatus, StateRole, INVALID_ID};
use raft_proto::ConfChangeI;

use crate::command::{decode_origin, encode_origin, Txn};
use crate::config::PlacementConfig;
use crate::controller::Controller;
use crate::error::ApiError;
use crate::keys;
use crate::node::{Input, MemberInfo, Query, QueryResult, Reply, StatusInfo};
use crate::state::{Applied, StateMachine};
use crate::storage::{bootstrap_snapshot, DiskStorage, SnapshotReport};
use crate::transport::Transport;

/// Inputs taken in one turn at most.
const TURN_INPUTS: usize = 4096;
/// A Ready that takes longer than this is logged.
const SLOW_TURN: Duration = Duration::from_millis(50);

/// A read waiting for its ReadIndex round and then for the apply index.
struct ReadWaiter {
    query: Query,
    reply: Reply<QueryResult>,
    deadline: Instant,
}

/// A batch of reads sharing one ReadIndex request.
struct PendingRead {
    waiters: Vec<ReadWaiter>,
    issued: Instant,
}

/// A write waiting for its entry to be applied.
struct PendingWrite {
    reply: Reply<Applied>,
    deadline: Instant,
}

/// The Raft loop's state.
pub struct Driver {
    id: u64,
    config: PlacementConfig,
    node: RawNode<DiskStorage>,
    state: StateMachine,
    conf_state: ConfState,
    applied: u64,
    transport: Transport,
    inbox: Receiver<Input>,
    next_seq: u64,
    writes: HashMap<u64, PendingWrite>,
    new_reads: Vec<ReadWaiter>,
    reads: HashMap<u64, PendingRead>,
    reads_ready: Vec<(u64, ReadWaiter)>,
    controller: Controller,
    last_heard: HashMap<u64, Instant>,
    isolated: bool,
    /// Addresses from the configuration, for members the state does not name.
    config_peers: BTreeMap<u64, SocketAddr>,
    /// The snapshot writer's report (never, when none runs).
    snapshot_done: Receiver<SnapshotReport>,
}

/// Opens the storage and builds the loop (not started).
pub fn open(
    id: u64,
    dir: &Path,
    config: &PlacementConfig,
    transport: Transport,
    inbox: Receiver<Input>,
) -> Result<Driver, String> {
    config.validate(id)?;
    let members = config.initial_members(id)?;
    let bootstrap = members.contains_key(&id).then(|| {
        let mut sm = StateMachine::default();
        for (mid, addr) in &members {
            sm.put(
                keys::id_key(keys::MEMBERS, *mid),
                addr.to_string().into_bytes(),
            );
        }
        bootstrap_snapshot(members.keys().copied().collect(), sm.image())
    });
    let storage = DiskStorage::open(dir, bootstrap).map_err(|e| e.to_string())?;
    let snap = storage.snapshot_ref();
    let state = StateMachine::from_image(snap.get_data()).map_err(|e| e.to_string())?;
    let applied = snap.get_metadata().index;
    let conf_state = snap.get_metadata().get_conf_state().clone();
    let raft_config = raft::Config {
        id,
        election_tick: config.election_ticks,
        heartbeat_tick: config.heartbeat_ticks,
        // Randomised election timeouts in [1, 1.5) x election_ticks, so a
        // dead leader is replaced well within two election timeouts.
        max_election_tick: config.election_ticks + (config.election_ticks / 2).max(2),
        applied,
        check_quorum: true,
        pre_vote: true,
        max_size_per_msg: 1 << 20,
        max_inflight_msgs: 256,
        ..Default::default()
    };
    let logger = crate::logger::raft_logger(id);
    let node = RawNode::new(&raft_config, storage, &logger).map_err(|e| e.to_string())?;
    let mut driver = Driver {
        id,
        config: config.clone(),
        node,
        state,
        conf_state,
        applied,
        transport,
        inbox,
        next_seq: 1,
        writes: HashMap::new(),
        new_reads: Vec::new(),
        reads: HashMap::new(),
        reads_ready: Vec::new(),
        controller: Controller::new(Duration::from_millis(config.node_timeout_ms)),
        last_heard: HashMap::new(),
        isolated: false,
        config_peers: members,
        snapshot_done: crossbeam::channel::never(),
    };
    driver.refresh_members();
    if driver.conf_state.voters == [id] && driver.conf_state.learners.is_empty() {
        // Alone in the group: no one to wait for.
        driver.node.campaign().map_err(|e| e.to_string())?;
    }
    tracing::info!(id, applied, voters = ?driver.conf_state.voters, "placement member opened");
    Ok(driver)
}

impl Driver {
    /// Runs until stopped, the inbox closes, or storage fails.
    pub fn run(mut self) {
        let tick = Duration::from_millis(self.config.tick_ms);
        let mut next_tick = Instant::now() + tick;
        loop {
            let wait = next_tick.saturating_duration_since(Instant::now());
            if self.node.store().snapshot_in_progress() {
                // Wait for an input or the snapshot writer, taking nothing yet.
                let ready = {
                    let mut sel = Select::new();
                    sel.recv(&self.inbox);
                    sel.recv(&self.snapshot_done);
                    sel.ready_timeout(wait).ok()
                };
                if ready == Some(1) {
                    if let Err(e) = self.finish_snapshot() {
                        tracing::error!("placement snapshot failed, stopping this member: {e}");
                        break;
                    }
                }
            } else {
                match self.inbox.recv_timeout(wait) {
                    Ok(input) => {
                        if !self.handle(input) {
                            break;
                        }
                    }
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            }
            if !self.take_inputs() {
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.node.tick();
                next_tick = (next_tick + tick).max(now);
                self.on_tick(now);
            }
            self.issue_reads();
            if let Err(e) = self.on_ready() {
                tracing::error!("placement storage failed, stopping this member: {e}");
                break;
            }
        }
        self.fail_all();
        tracing::info!(id = self.id, "placement raft loop stopped");
    }

    /// Handles the inputs already waiting (up to `TURN_INPUTS`); false to stop.
    fn take_inputs(&mut self) -> bool {
        for _ in 0..TURN_INPUTS {
            match self.inbox.try_recv() {
                Ok(input) => {
                    if !self.handle(input) {
                        return false;
                    }
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return false,
            }
        }
        true
    }

    fn handle(&mut self, input: Input) -> bool {
        match input {
            Input::Raft(m) => self.step(*m),
            Input::Unreachable(id) => self.node.report_unreachable(id),
            Input::SnapshotStatus(id, ok) => {
                let status = if ok {
                    SnapshotStatus::Finish
                } else {
                    SnapshotStatus::Failure
                };
                self.node.report_snapshot(id, status);
            }
            Input::Write {
                txn,
                reply,
                deadline,
            } => self.propose(txn, reply, deadline),
            Input::ConfChange {
                cc,
                reply,
                deadline,
            } => self.propose_conf_change(cc, reply, deadline),
            Input::Read {
                query,
                stale,
                reply,
                deadline,
            } => self.read(query, stale, reply, deadline),
            Input::Status(reply) => {
                let _ = reply.send(Ok(self.status()));
            }
            Input::Heartbeat { node_id, reply } => {
                let _ = reply.send(self.heartbeat(node_id));
            }
            Input::Isolate(on) => {
                tracing::warn!(isolated = on, "fault injection: raft traffic");
                self.isolated = on;
            }
            Input::Stop => return false,
        }
        true
    }

    fn step(&mut self, m: Message) {
        if self.isolated {
            return;
        }
        if m.term >= self.node.raft.term && m.from != INVALID_ID {
            self.last_heard.insert(m.from, Instant::now());
        }
        if let Err(e) = self.node.step(m) {
            tracing::debug!("raft step: {e}");
        }
    }

    fn not_leader(&self) -> ApiError {
        let leader_id = self.node.raft.leader_id;
        ApiError::NotLeader {
            leader_id,
            leader_addr: self.member_addr(leader_id).unwrap_or_default(),
        }
    }

    fn member_addr(&self, id: u64) -> Option<String> {
        if id == INVALID_ID {
            return None;
        }
        match self.state.get(&keys::id_key(keys::MEMBERS, id)) {
            Some(a) => Some(String::from_utf8_lossy(a).into_owned()),
            None => self.config_peers.get(&id).map(|a| a.to_string()),
        }
    }

    fn seq(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn propose(&mut self, txn: Vec<u8>, reply: Reply<Applied>, deadline: Instant) {
        if self.node.raft.leader_id == INVALID_ID {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let seq = self.seq();
        match self.node.propose(encode_origin(self.id, seq), txn) {
            Ok(()) => {
                self.writes.insert(seq, PendingWrite { reply, deadline });
            }
            Err(_) => {
                let _ = reply.send(Err(self.not_leader()));
            }
        }
    }

    fn propose_conf_change(&mut self, cc: ConfChange, reply: Reply<Applied>, deadline: Instant) {
        if self.node.raft.state != StateRole::Leader {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        let seq = self.seq();
        match self
            .node
            .propose_conf_change(encode_origin(self.id, seq), cc)
        {
            Ok(()) => {
                self.writes.insert(seq, PendingWrite { reply, deadline });
            }
            Err(e) => {
                let _ = reply.send(Err(ApiError::Unavailable(format!(
                    "membership change refused: {e}"
                ))));
            }
        }
    }

    fn read(&mut self, query: Query, stale: bool, reply: Reply<QueryResult>, deadline: Instant) {
        if stale {
            let _ = reply.send(Ok(self.query(&query)));
        } else if self.node.raft.leader_id == INVALID_ID {
            let _ = reply.send(Err(self.not_leader()));
        } else {
            self.new_reads.push(ReadWaiter {
                query,
                reply,
                deadline,
            });
        }
    }

    fn query(&self, query: &Query) -> QueryResult {
        match query {
            Query::Get(k) => QueryResult::Value(self.state.get(k).cloned()),
            Query::List { prefix, limit } => QueryResult::Pairs(
                self.state
                    .range(prefix, *limit)
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
        }
    }

    /// Starts one ReadIndex round for the reads that arrived this turn.
    fn issue_reads(&mut self) {
        if self.new_reads.is_empty() {
            return;
        }
        let leader = self.node.raft.state == StateRole::Leader;
        if leader && !self.node.raft.commit_to_current_term() {
            return; // raft-rs drops reads until the leader commits in its term
        }
        let seq = self.seq();
        self.node.read_index(seq.to_le_bytes().to_vec());
        let waiters = std::mem::take(&mut self.new_reads);
        self.reads.insert(
            seq,
            PendingRead {
                waiters,
                issued: Instant::now(),
            },
        );
    }

    fn on_tick(&mut self, now: Instant) {
        self.expire(now);
        self.retry_reads(now);
        if let Err(e) = self.maybe_snapshot() {
            tracing::error!("cannot take a snapshot: {e}");
        }
        let lease = self.has_lease(now);
        self.controller.set_active(lease, now);
        for txn in self.controller.run(&self.state, now) {
            let _ = self.node.propose(encode_origin(self.id, 0), txn.encode());
        }
    }

    /// Leader, and heard from a quorum within one election timeout.
    fn has_lease(&self, now: Instant) -> bool {
        if self.node.raft.state != StateRole::Leader || self.isolated {
            return false;
        }
        let window = self.config.election_timeout();
        let voters = &self.conf_state.voters;
        let heard = voters
            .iter()
            .filter(|v| {
                **v == self.id
                    || self
                        .last_heard
                        .get(v)
                        .is_some_and(|t| now.duration_since(*t) < window)
            })
            .count();
        heard * 2 > voters.len()
    }

    /// Re-sends ReadIndex requests that got no answer (lost, or dropped by a
    /// leader not yet ready), keeping their context.
    fn retry_reads(&mut self, now: Instant) {
        let after = self.config.election_timeout() / 2;
        let stale: Vec<u64> = self
            .reads
            .iter()
            .filter(|(_, r)| now.duration_since(r.issued) >= after)
            .map(|(seq, _)| *seq)
            .collect();
        if self.node.raft.leader_id == INVALID_ID {
            return;
        }
        for seq in stale {
            if let Some(r) = self.reads.get_mut(&seq) {
                r.issued = now;
            }
            self.node.read_index(seq.to_le_bytes().to_vec());
        }
    }

    /// Answers `Timeout` to every caller whose deadline passed.
    fn expire(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .writes
            .iter()
            .filter(|(_, w)| w.deadline <= now || w.reply.is_closed())
            .map(|(s, _)| *s)
            .collect();
        for s in expired {
            if let Some(w) = self.writes.remove(&s) {
                let _ = w.reply.send(Err(ApiError::Timeout));
            }
        }
        for r in self.reads.values_mut() {
            expire_waiters(&mut r.waiters, now);
        }
        self.reads.retain(|_, r| !r.waiters.is_empty());
        expire_waiters(&mut self.new_reads, now);
    }

    fn on_ready(&mut self) -> Result<(), String> {
        if !self.node.has_ready() {
            return Ok(());
        }
        let started = Instant::now();
        let mut rd = self.node.ready();
        self.send(rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.install_snapshot(rd.snapshot().clone())?;
        }
        let store = self.node.mut_store();
        store.append(rd.entries()).map_err(|e| e.to_string())?;
        if let Some(hs) = rd.hs() {
            store.set_hard_state(hs.clone());
        }
        let appended = rd.entries().len();
        let synced = Instant::now();
        if rd.must_sync() {
            // New entries, term or vote: durable before anyone hears of them.
            store.sync().map_err(|e| e.to_string())?;
        }
        let sync_time = synced.elapsed();
        // Otherwise only the commit index moved: it rides with the next sync.
        self.send(rd.take_persisted_messages());
        self.apply(rd.take_committed_entries());
        self.take_read_states(rd.take_read_states());
        let mut light = self.node.advance(rd);
        if let Some(commit) = light.commit_index() {
            self.node.mut_store().set_commit(commit);
        }
        self.send(light.take_messages());
        self.apply(light.take_committed_entries());
        self.node.advance_apply_to(self.applied);
        self.serve_reads();
        self.maybe_snapshot()?;
        let took = started.elapsed();
        if took >= SLOW_TURN {
            tracing::warn!(
                took_ms = took.as_millis() as u64,
                fsync_ms = sync_time.as_millis() as u64,
                appended,
                "slow raft turn"
            );
        }
        Ok(())
    }

    fn send(&mut self, msgs: Vec<Message>) {
        if self.isolated {
            return;
        }
        for m in msgs {
            if let Err(u) = self.transport.send(m) {
                if u.snapshot {
                    self.node.report_snapshot(u.to, SnapshotStatus::Failure);
                }
                self.node.report_unreachable(u.to);
            }
        }
    }

    fn install_snapshot(&mut self, snap: Snapshot) -> Result<(), String> {
        let meta = snap.get_metadata().clone();
        let state = StateMachine::from_image(snap.get_data()).map_err(|e| e.to_string())?;
        self.node
            .mut_store()
            .apply_snapshot(snap)
            .map_err(|e| e.to_string())?;
        // Any local snapshot in progress was finished or dropped.
        self.snapshot_done = crossbeam::channel::never();
        self.state = state;
        self.applied = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        self.refresh_members();
        tracing::info!(index = meta.index, term = meta.term, "installed snapshot");
        Ok(())
    }

    fn apply(&mut self, entries: Vec<Entry>) {
        for e in entries {
            if e.index <= self.applied {
                continue;
            }
            match e.get_entry_type() {
                EntryType::EntryNormal => self.apply_normal(&e),
                EntryType::EntryConfChange => {
                    let cc = ConfChange::parse_from_bytes(e.get_data()).map(|c| c.into_v2());
                    self.apply_conf_change(&e, cc.ok());
                }
                EntryType::EntryConfChangeV2 => {
                    let cc = ConfChangeV2::parse_from_bytes(e.get_data()).ok();
                    self.apply_conf_change(&e, cc);
                }
            }
            self.applied = e.index;
        }
    }

    fn apply_normal(&mut self, e: &Entry) {
        if e.get_data().is_empty() {
            return; // a new leader's empty entry
        }
        let result = match Txn::decode(e.get_data()) {
            Some(txn) => Ok(self.state.apply(&txn)),
            None => {
                tracing::error!(index = e.index, "undecodable entry skipped");
                Err(ApiError::Internal("undecodable log entry".into()))
            }
        };
        self.answer(e.get_context(), result);
    }

    fn apply_conf_change(&mut self, e: &Entry, cc: Option<ConfChangeV2>) {
        let Some(cc) = cc else {
            tracing::error!(index = e.index, "undecodable conf change skipped");
            return;
        };
        let result = match self.node.apply_conf_change(&cc) {
            Ok(cs) => {
                self.conf_state = cs;
                for change in cc.get_changes() {
                    let key = keys::id_key(keys::MEMBERS, change.node_id);
                    match change.get_change_type() {
                        ConfChangeType::RemoveNode => self.state.remove(&key),
                        _ if !cc.get_context().is_empty() => {
                            self.state.put(key, cc.get_context().to_vec())
                        }
                        _ => {}
                    }
                }
                self.refresh_members();
                tracing::info!(voters = ?self.conf_state.voters, learners = ?self.conf_state.learners, "membership changed");
                Ok(Applied {
                    succeeded: true,
                    removed: 0,
                })
            }
            Err(err) => Err(ApiError::InvalidArgument(format!(
                "membership change rejected: {err}"
            ))),
        };
        self.answer(e.get_context(), result);
    }

    fn answer(&mut self, ctx: &[u8], result: Result<Applied, ApiError>) {
        let Some((origin, seq)) = decode_origin(ctx) else {
            return;
        };
        if origin != self.id {
            return;
        }
        if let Some(w) = self.writes.remove(&seq) {
            let _ = w.reply.send(result);
        }
    }

    fn take_read_states(&mut self, states: Vec<ReadState>) {
        for rs in states {
            let Ok(ctx) = <[u8; 8]>::try_from(rs.request_ctx.as_slice()) else {
                continue;
            };
            if let Some(r) = self.reads.remove(&u64::from_le_bytes(ctx)) {
                self.reads_ready
                    .extend(r.waiters.into_iter().map(|w| (rs.index, w)));
            }
        }
    }

    fn serve_reads(&mut self) {
        if self.reads_ready.is_empty() {
            return;
        }
        let applied = self.applied;
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.reads_ready)
            .into_iter()
            .partition(|(index, _)| *index <= applied);
        self.reads_ready = waiting;
        for (_, w) in ready {
            let _ = w.reply.send(Ok(self.query(&w.query)));
        }
    }

    /// Starts a snapshot when enough entries were applied since the last
    /// one (or Raft needs a fresher one for a peer): the loop encodes the
    /// state machine; a thread of the storage writes and syncs it.
    fn maybe_snapshot(&mut self) -> Result<(), String> {
        let store = self.node.store();
        if store.snapshot_in_progress() {
            return Ok(());
        }
        let snap_index = store.snapshot_ref().get_metadata().index;
        let wanted = store.take_snapshot_wanted() && self.applied > snap_index;
        if !wanted && self.applied < snap_index + self.config.snapshot_entries {
            return Ok(());
        }
        let started = Instant::now();
        let image = self.state.image();
        let store = self.node.mut_store();
        store
            .start_snapshot(self.applied, self.conf_state.clone(), image)
            .map_err(|e| e.to_string())?;
        self.snapshot_done = store.snapshot_done();
        tracing::info!(
            index = self.applied,
            handover_us = started.elapsed().as_micros() as u64,
            "snapshot started"
        );
        Ok(())
    }

    /// The snapshot thread finished: compact the log behind it.
    fn finish_snapshot(&mut self) -> Result<(), String> {
        let keep = self.config.log_keep_entries;
        let done = self
            .node
            .mut_store()
            .finish_snapshot(keep)
            .map_err(|e| e.to_string())?;
        if !self.node.store().snapshot_in_progress() {
            self.snapshot_done = crossbeam::channel::never();
        }
        if let Some(index) = done {
            tracing::info!(
                index,
                first_index = self.node.store().first_log_index(),
                "snapshot durable, log compacted"
            );
        }
        Ok(())
    }

    /// Points the transport at the current members.
    fn refresh_members(&mut self) {
        let mut addrs = BTreeMap::new();
        let ids = self
            .conf_state
            .voters
            .iter()
            .chain(&self.conf_state.learners)
            .chain(&self.conf_state.voters_outgoing);
        for id in ids {
            if let Some(addr) = self.member_addr(*id).and_then(|a| a.parse().ok()) {
                addrs.insert(*id, addr);
            }
        }
        // A member waiting to be added knows the others only from its config.
        for (id, addr) in &self.config_peers {
            addrs.entry(*id).or_insert(*addr);
        }
        self.transport.set_members(&addrs);
    }

    fn heartbeat(&mut self, node_id: u64) -> Result<(), ApiError> {
        if !self.controller.is_active() {
            return Err(self.not_leader());
        }
        if self
            .state
            .get(&keys::id_key(keys::NODES, node_id))
            .is_none()
        {
            return Err(ApiError::NotFound(format!(
                "node {node_id} is not registered"
            )));
        }
        self.controller.heartbeat(node_id, Instant::now());
        Ok(())
    }

    fn status(&self) -> StatusInfo {
        let raft = &self.node.raft;
        let role = match raft.state {
            StateRole::Leader => "leader",
            StateRole::Follower => "follower",
            StateRole::Candidate => "candidate",
            StateRole::PreCandidate => "pre-candidate",
        };
        let member = |id: &u64, voter| MemberInfo {
            id: *id,
            addr: self.member_addr(*id).unwrap_or_default(),
            voter,
        };
        let mut members: Vec<_> = self
            .conf_state
            .voters
            .iter()
            .map(|id| member(id, true))
            .collect();
        members.extend(self.conf_state.learners.iter().map(|id| member(id, false)));
        members.sort_by_key(|m| m.id);
        StatusInfo {
            node_id: self.id,
            role: role.into(),
            leader_id: raft.leader_id,
            leader_addr: self.member_addr(raft.leader_id).unwrap_or_default(),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: self.applied,
            snapshot_index: self.node.store().snapshot_ref().get_metadata().index,
            controller: self.controller.is_active(),
            members,
        }
    }

    fn fail_all(&mut self) {
        let stopping = || ApiError::Unavailable("placement member stopping".into());
        for (_, w) in self.writes.drain() {
            let _ = w.reply.send(Err(stopping()));
        }
        for (_, r) in self.reads.drain() {
            for w in r.waiters {
                let _ = w.reply.send(Err(stopping()));
            }
        }
        for w in self.new_reads.drain(..) {
            let _ = w.reply.send(Err(stopping()));
        }
        for (_, w) in self.reads_ready.drain(..) {
            let _ = w.reply.send(Err(stopping()));
        }
    }
}

fn expire_waiters(waiters: &mut Vec<ReadWaiter>, now: Instant) {
    let (expired, live): (Vec<_>, Vec<_>) = std::mem::take(waiters)
        .into_iter()
        .partition(|w| w.deadline <= now || w.reply.is_closed());
    *waiters = live;
    for w in expired {
        let _ = w.reply.send(Err(ApiError::Timeout));
    }
}
