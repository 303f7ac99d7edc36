//! The controller: cluster housekeeping that only the leader does.
//!
//! It marks registered nodes dead when their heartbeats stop (and alive again
//! when they resume), and drives journal segment transitions: a segment whose
//! sealing was requested is sealed and the shard's next segment created, in
//! one transaction. Heartbeats are kept in the leader's memory only (a Raft
//! write per heartbeat would cap the cluster at the group's write rate);
//! a new leader gives every live node a full timeout of grace.
//!
//! The Raft loop activates it while this member is leader *and* has heard
//! from a quorum within one election timeout (a leader lease), so it stops
//! within one election timeout once leadership may have moved. Every change
//! it proposes is guarded by a check on the value it read, so a stale
//! decision can never overwrite a newer one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::command::{Check, Op, Txn};
use crate::keys::{self, NodeRecord, SegmentRecord, SegmentState, ShardRecord};
use crate::state::StateMachine;

/// The leader-only controller.
#[derive(Debug)]
pub struct Controller {
    active: bool,
    last_seen: HashMap<u64, Instant>,
    next_run: Instant,
    node_timeout: Duration,
    interval: Duration,
}

impl Controller {
    /// A stopped controller.
    pub fn new(node_timeout: Duration) -> Self {
        Controller {
            active: false,
            last_seen: HashMap::new(),
            next_run: Instant::now(),
            node_timeout,
            interval: (node_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(1)),
        }
    }

    /// Whether it is running.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Starts or stops it as this member's leadership changes.
    pub fn set_active(&mut self, active: bool, now: Instant) {
        if active == self.active {
            return;
        }
        self.active = active;
        self.last_seen.clear();
        self.next_run = now;
        if active {
            tracing::info!("controller started");
        } else {
            tracing::info!("controller stopped");
        }
    }

    /// Records a heartbeat.
    pub fn heartbeat(&mut self, node_id: u64, now: Instant) {
        self.last_seen.insert(node_id, now);
    }

    /// The changes due now, if it runs and its interval has passed.
    pub fn run(&mut self, state: &StateMachine, now: Instant) -> Vec<Txn> {
        if !self.active || now < self.next_run {
            return Vec::new();
        }
        self.next_run = now + self.interval;
        let mut out = self.liveness(state, now);
        out.extend(segment_transitions(state));
        out
    }

    fn liveness(&mut self, state: &StateMachine, now: Instant) -> Vec<Txn> {
        let mut out = Vec::new();
        for (k, v) in state.range(keys::NODES, usize::MAX) {
            let Some(rec) = keys::decode::<NodeRecord>(v) else {
                continue;
            };
            let seen = match self.last_seen.get(&rec.node_id) {
                Some(t) => *t,
                None if rec.alive => *self.last_seen.entry(rec.node_id).or_insert(now),
                None => continue,
            };
            let alive = now.duration_since(seen) <= self.node_timeout;
            if alive != rec.alive {
                tracing::info!(node_id = rec.node_id, alive, "node liveness changed");
                let updated = NodeRecord { alive, ..rec };
                out.push(Txn {
                    checks: vec![Check::Equals(k.clone(), v.clone())],
                    ops: vec![Op::Put(k.clone(), keys::encode(&updated))],
                });
            }
        }
        out
    }
}

/// Seals every segment whose sealing was requested and opens the next one.
fn segment_transitions(state: &StateMachine) -> Vec<Txn> {
    let mut out = Vec::new();
    for (k, v) in state.range(keys::SEGMENTS, usize::MAX) {
        let Some(seg) = keys::decode::<SegmentRecord>(v) else {
            continue;
        };
        if seg.status != SegmentState::SealRequested {
            continue;
        }
        if let Some(txn) = seal(state, k, v, seg) {
            out.push(txn);
        }
    }
    out
}

fn seal(state: &StateMachine, key: &[u8], value: &[u8], seg: SegmentRecord) -> Option<Txn> {
    let shard_key = keys::shard_key(&seg.shard);
    let shard_bytes = state.get(&shard_key)?;
    let shard = keys::decode::<ShardRecord>(shard_bytes)?;
    let next_seq = seg.seq.checked_add(1)?;
    let next_key = keys::segment_key(&seg.shard, next_seq);
    let next = SegmentRecord {
        shard: seg.shard.clone(),
        seq: next_seq,
        status: SegmentState::Write,
        start_offset: seg.end_offset.saturating_add(1),
        end_offset: 0,
    };
    let sealed = SegmentRecord {
        status: SegmentState::Sealed,
        ..seg
    };
    let shard_updated = ShardRecord {
        active_segment: shard.active_segment.max(next_seq),
        ..shard
    };
    tracing::info!(shard = %sealed.shard, seq = sealed.seq, "sealing segment");
    Some(Txn {
        checks: vec![
            Check::Equals(key.to_vec(), value.to_vec()),
            Check::Equals(shard_key.clone(), shard_bytes.clone()),
            Check::Absent(next_key.clone()),
        ],
        ops: vec![
            Op::Put(key.to_vec(), keys::encode(&sealed)),
            Op::Put(next_key, keys::encode(&next)),
            Op::Put(shard_key, keys::encode(&shard_updated)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: u64, alive: bool) -> Txn {
        let rec = NodeRecord {
            node_id: id,
            addr: "x".into(),
            roles: vec![],
            registered_ms: 0,
            alive,
        };
        Txn::put(keys::id_key(keys::NODES, id), keys::encode(&rec))
    }

    fn alive(sm: &StateMachine, id: u64) -> bool {
        keys::decode::<NodeRecord>(sm.get(&keys::id_key(keys::NODES, id)).unwrap())
            .unwrap()
            .alive
    }

    #[test]
    fn inactive_controller_does_nothing() {
        let mut sm = StateMachine::default();
        sm.apply(&node(1, true));
        let mut c = Controller::new(Duration::from_millis(100));
        assert!(c
            .run(&sm, Instant::now() + Duration::from_secs(10))
            .is_empty());
    }

    #[test]
    fn missed_heartbeats_mark_dead_and_a_heartbeat_revives() {
        let mut sm = StateMachine::default();
        sm.apply(&node(1, true));
        sm.apply(&node(2, true));
        let t0 = Instant::now();
        let mut c = Controller::new(Duration::from_millis(100));
        c.set_active(true, t0);
        assert!(c.run(&sm, t0).is_empty(), "grace period on activation");
        let t1 = t0 + Duration::from_millis(150);
        c.heartbeat(2, t1);
        for txn in c.run(&sm, t1) {
            assert!(sm.apply(&txn).succeeded);
        }
        assert!(!alive(&sm, 1));
        assert!(alive(&sm, 2));
        let t2 = t1 + Duration::from_millis(100);
        c.heartbeat(1, t2);
        for txn in c.run(&sm, t2) {
            sm.apply(&txn);
        }
        assert!(alive(&sm, 1));
        // A new leader does not revive a dead node without a heartbeat.
        c.set_active(false, t2);
        sm.apply(&node(3, false));
        c.set_active(true, t2);
        assert!(c.run(&sm, t2).is_empty());
    }

    #[test]
    fn sealing_opens_the_next_segment_once() {
        let mut sm = StateMachine::default();
        let shard = ShardRecord {
            name: "s".into(),
            replicas: 1,
            active_segment: 0,
            created_ms: 0,
        };
        sm.apply(&Txn::put(keys::shard_key("s"), keys::encode(&shard)));
        let seg = SegmentRecord {
            shard: "s".into(),
            seq: 0,
            status: SegmentState::SealRequested,
            start_offset: 0,
            end_offset: 99,
        };
        sm.apply(&Txn::put(keys::segment_key("s", 0), keys::encode(&seg)));
        let txns = segment_transitions(&sm);
        assert_eq!(txns.len(), 1);
        assert!(sm.apply(&txns[0]).succeeded);
        assert!(!sm.apply(&txns[0]).succeeded, "a replay changes nothing");
        let next: SegmentRecord =
            keys::decode(sm.get(&keys::segment_key("s", 1)).unwrap()).unwrap();
        assert_eq!((next.status, next.start_offset), (SegmentState::Write, 100));
        let shard: ShardRecord = keys::decode(sm.get(&keys::shard_key("s")).unwrap()).unwrap();
        assert_eq!(shard.active_segment, 1);
        assert!(segment_transitions(&sm).is_empty());
    }
}
