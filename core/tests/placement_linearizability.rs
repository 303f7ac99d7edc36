//! A concurrent KV history from many clients against three placement
//! members (real `robust-server` processes), with members killed (SIGKILL),
//! restarted and cut off while it runs, must be linearizable.
//!
//! The checker is the Wing-Gong-Lowe search as Porcupine does it: per key
//! (linearizability is compositional), find an order of the operations that
//! respects real time and the register's semantics, memoising
//! (linearized set, state) pairs. An operation whose outcome is unknown
//! (timeout, lost connection) may have taken effect at any time after its
//! call: it gets a return time of infinity. Operations that failed for sure
//! (`NotLeader`, never proposed) are left out.

mod placement_support;

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use placement_support::{Cluster, Opts};
use robustmq_placement::client::{BlockingClient, Client};
use robustmq_placement::error::ApiError;

const KEYS: [&str; 3] = ["a", "b", "c"];
const CLIENTS: usize = 6;
const RUN: Duration = Duration::from_secs(8);

/// What an operation did, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Op {
    /// Put this value.
    Put(u64),
    /// Read; the value seen, `None` for absent.
    Get(Option<u64>),
    /// Delete; whether the key existed (`None` if unknown).
    Delete(Option<bool>),
}

/// One operation of the history.
#[derive(Debug, Clone)]
struct Event {
    key: &'static str,
    op: Op,
    call: u64,
    /// `u64::MAX` when the outcome is unknown.
    ret: u64,
}

/// The outcome of a call: done, unknown, or surely not done.
enum Outcome<T> {
    Ok(T),
    Unknown,
    NotDone,
}

fn classify<T>(r: Result<T, ApiError>) -> Outcome<T> {
    match r {
        Ok(v) => Outcome::Ok(v),
        Err(ApiError::NotLeader { .. } | ApiError::InvalidArgument(_)) => Outcome::NotDone,
        Err(_) => Outcome::Unknown,
    }
}

/// A small xorshift generator (no dependency needed for a test nemesis).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

fn client_loop(
    addrs: Vec<String>,
    n: usize,
    start: Instant,
    stop: &AtomicBool,
    values: &AtomicU64,
    out: &Mutex<Vec<Event>>,
) {
    // Half the clients stay where they land, so followers forward their
    // writes and serve their ReadIndex reads; half move to the leader.
    let client = BlockingClient::with_client(
        Client::new(addrs, Duration::from_millis(1500)).leader_routing(n % 2 == 0),
    )
    .expect("client");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (n as u64 + 1));
    let now = || start.elapsed().as_micros() as u64;
    while !stop.load(Ordering::Relaxed) {
        let key = KEYS[(rng.next() % KEYS.len() as u64) as usize];
        let call = now();
        let event = match rng.next() % 10 {
            0..=3 => {
                let v = values.fetch_add(1, Ordering::Relaxed);
                match classify(client.kv_set(key, v.to_string().as_bytes())) {
                    Outcome::Ok(()) => Some((Op::Put(v), now())),
                    Outcome::Unknown => Some((Op::Put(v), u64::MAX)),
                    Outcome::NotDone => None,
                }
            }
            4 => match classify(client.kv_delete(key)) {
                Outcome::Ok(existed) => Some((Op::Delete(Some(existed)), now())),
                Outcome::Unknown => Some((Op::Delete(None), u64::MAX)),
                Outcome::NotDone => None,
            },
            _ => match classify(client.kv_get(key, false)) {
                Outcome::Ok(v) => {
                    let seen = v.map(|b| String::from_utf8_lossy(&b).parse().expect("a number"));
                    Some((Op::Get(seen), now()))
                }
                Outcome::Unknown | Outcome::NotDone => None,
            },
        };
        if let Some((op, ret)) = event {
            out.lock().unwrap().push(Event { key, op, call, ret });
        }
    }
}

/// Kills, restarts and isolates members until `stop`.
fn nemesis(c: &Mutex<Cluster>, stop: &AtomicBool) -> usize {
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let mut faults = 0;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(700));
        let victim = 1 + rng.next() % 3;
        if rng.next() % 3 == 0 {
            let cl = c
                .lock()
                .unwrap()
                .client_of(victim, Duration::from_millis(500));
            if cl.fault_isolate(true).is_ok() {
                std::thread::sleep(Duration::from_millis(800));
                let _ = cl.fault_isolate(false);
            }
        } else {
            c.lock().unwrap().kill(victim);
            std::thread::sleep(Duration::from_millis(600));
            c.lock().unwrap().spawn(victim);
        }
        faults += 1;
    }
    faults
}

#[test]
fn concurrent_kv_history_with_kills_is_linearizable() {
    let cluster = Cluster::start(
        "linearizable",
        3,
        Opts {
            snapshot_entries: 200,
            log_keep_entries: 50,
        },
    );
    cluster
        .wait_leader(Duration::from_secs(15))
        .expect("a first leader");
    let cluster = Arc::new(Mutex::new(cluster));
    let stop = Arc::new(AtomicBool::new(false));
    let values = Arc::new(AtomicU64::new(1));
    let history = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let mut threads = Vec::new();
    for n in 0..CLIENTS {
        // Clients start on different members (writes get forwarded).
        let mut addrs = cluster.lock().unwrap().addr_list();
        addrs.rotate_left(n % 3);
        let (stop, values, history) = (stop.clone(), values.clone(), history.clone());
        threads.push(std::thread::spawn(move || {
            client_loop(addrs, n, start, &stop, &values, &history)
        }));
    }
    let nemesis_thread = {
        let (c, stop) = (cluster.clone(), stop.clone());
        std::thread::spawn(move || nemesis(&c, &stop))
    };
    std::thread::sleep(RUN);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let faults = nemesis_thread.join().unwrap();
    let history = history.lock().unwrap().clone();
    let done = history.iter().filter(|e| e.ret != u64::MAX).count();
    eprintln!(
        "{} operations ({done} completed, the rest of unknown outcome), {faults} faults",
        history.len()
    );
    assert!(faults >= 5, "only {faults} faults injected");
    assert!(done >= 100, "only {done} operations completed");
    let mut by_key: BTreeMap<&str, Vec<Event>> = BTreeMap::new();
    for e in history {
        by_key.entry(e.key).or_default().push(e);
    }
    for (key, events) in by_key {
        assert!(
            linearizable(&events),
            "history of key {key} is not linearizable: {events:#?}"
        );
    }
}

/// Applies an operation to the register; `None` if it cannot happen now.
fn step(state: Option<u64>, op: &Op) -> Option<Option<u64>> {
    match op {
        Op::Put(v) => Some(Some(*v)),
        Op::Get(seen) => (*seen == state).then_some(state),
        Op::Delete(Some(existed)) => (*existed == state.is_some()).then_some(None),
        Op::Delete(None) => Some(None),
    }
}

/// The Wing-Gong-Lowe search over one key's history.
fn linearizable(events: &[Event]) -> bool {
    // Entries: (time, is_return, op index), calls before returns at equal times.
    let mut entries: Vec<(u64, bool, usize)> = Vec::new();
    for (i, e) in events.iter().enumerate() {
        entries.push((e.call, false, i));
        entries.push((e.ret, true, i));
    }
    entries.sort();
    let n = entries.len();
    // A doubly linked list over entries; index n is the head sentinel.
    let mut next: Vec<usize> = (1..=n).chain([0]).collect();
    let mut prev: Vec<usize> = vec![n; n + 1];
    for (i, p) in prev.iter_mut().enumerate().take(n).skip(1) {
        *p = i - 1;
    }
    next[n] = if n > 0 { 0 } else { usize::MAX };
    if n > 0 {
        next[n - 1] = usize::MAX;
        prev[0] = n;
    }
    let mut ret_of = vec![0; events.len()];
    for (pos, (_, is_ret, op)) in entries.iter().enumerate() {
        if *is_ret {
            ret_of[*op] = pos;
        }
    }
    let words = events.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut state: Option<u64> = None;
    let mut cur = next[n];
    while next[n] != usize::MAX {
        let (_, is_ret, op) = entries[cur];
        if !is_ret {
            if let Some(new_state) = step(state, &events[op].op) {
                let mut bits = linearized.clone();
                bits[op / 64] |= 1 << (op % 64);
                if cache.insert((bits.clone(), new_state)) {
                    stack.push((cur, state));
                    state = new_state;
                    linearized = bits;
                    unlink(&mut next, &mut prev, cur);
                    unlink(&mut next, &mut prev, ret_of[op]);
                    cur = next[n];
                    continue;
                }
            }
            cur = next[cur];
        } else {
            let Some((call_pos, old_state)) = stack.pop() else {
                return false;
            };
            let op = entries[call_pos].2;
            state = old_state;
            linearized[op / 64] &= !(1 << (op % 64));
            relink(&mut next, &mut prev, ret_of[op]);
            relink(&mut next, &mut prev, call_pos);
            cur = next[call_pos];
        }
        if cur == usize::MAX {
            return false;
        }
    }
    true
}

fn unlink(next: &mut [usize], prev: &mut [usize], i: usize) {
    let (p, nx) = (prev[i], next[i]);
    next[p] = nx;
    if nx != usize::MAX {
        prev[nx] = p;
    }
}

fn relink(next: &mut [usize], prev: &mut [usize], i: usize) {
    let (p, nx) = (prev[i], next[i]);
    next[p] = i;
    if nx != usize::MAX {
        prev[nx] = i;
    }
}

#[test]
fn checker_accepts_and_rejects_known_histories() {
    let ev = |op, call, ret| Event {
        key: "k",
        op,
        call,
        ret,
    };
    // put 1 then a read of 1: fine; a read of nothing after the put: not.
    assert!(linearizable(&[
        ev(Op::Put(1), 0, 10),
        ev(Op::Get(Some(1)), 11, 12)
    ]));
    assert!(!linearizable(&[
        ev(Op::Put(1), 0, 10),
        ev(Op::Get(None), 11, 12)
    ]));
    // Concurrent put and read may see either.
    assert!(linearizable(&[
        ev(Op::Put(1), 0, 10),
        ev(Op::Get(None), 5, 6)
    ]));
    // Unknown put may take effect late, or never.
    assert!(linearizable(&[
        ev(Op::Put(1), 0, u64::MAX),
        ev(Op::Get(None), 5, 6),
        ev(Op::Get(Some(1)), 7, 8),
    ]));
    assert!(linearizable(&[
        ev(Op::Put(1), 0, u64::MAX),
        ev(Op::Get(None), 5, 6)
    ]));
    // A stale read after a newer acknowledged put is caught.
    assert!(!linearizable(&[
        ev(Op::Put(1), 0, 1),
        ev(Op::Put(2), 2, 3),
        ev(Op::Get(Some(1)), 4, 5),
    ]));
    // Delete reports existence correctly or not.
    assert!(linearizable(&[
        ev(Op::Put(1), 0, 1),
        ev(Op::Delete(Some(true)), 2, 3)
    ]));
    assert!(!linearizable(&[
        ev(Op::Put(1), 0, 1),
        ev(Op::Delete(Some(false)), 2, 3)
    ]));
}
