//! The publish/subscribe scenarios (`pub`, `sub`, `fanin`, `fanout`,
//! `p2p`, `sharesub`) on one engine.
//!
//! `threads` worker threads each run a tokio current-thread runtime and
//! drive their share of the connections, one task per connection (so each
//! thread multiplexes many connections with one epoll). A connection task
//! batches: a publisher encodes every message it may send (by its rate and
//! its inflight window) into one buffer and writes it with one call; a
//! subscriber reads up to 64 KiB per call, decodes every packet in it,
//! takes the clock once for the batch and writes its acknowledgements back
//! in one call. The payload (allocated once per publisher) is copied into
//! the write buffer by the codec and its first 16 bytes patched with the
//! send time and sequence number: no allocation per message.
//!
//! The main thread sequences the phases (subscribers connected and
//! subscribed, publishers connected, run, stop), prints the progress line
//! and builds the report.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use hdrhistogram::Histogram;
use robustmq_protocol::mqtt::{Packet, PubReply, Publish, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

use super::client::{Conn, ConnOpts, READ_RESERVE};
use super::pacing::Pacer;
use super::payload::{self, Header, HEADER_LEN};
use super::report::{ConnectStats, Report};
use super::seq::SeqTracker;
use super::stats::{new_histogram, process_cpu_secs, si, Counters, Percentiles, Totals};

/// A publisher stops filling its buffer past this many bytes.
const WRITE_BATCH: usize = 64 * 1024;
/// Publisher ids above this are not ours (a `sub` listening to strangers).
const MAX_PUBLISHERS: u32 = 1 << 16;

/// Which publishers a subscriber (or its group) should hear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Every publisher of the run.
    All,
    /// One publisher (p2p).
    One(u32),
    /// Unknown publishers (`sub`): loss is judged from gaps.
    Unknown,
}

/// One publisher.
#[derive(Debug, Clone)]
pub struct PubSpec {
    pub client_id: String,
    pub topic: String,
}

/// One subscriber. Subscribers with the same `group` form one shared
/// subscription: each message should reach one of them.
#[derive(Debug, Clone)]
pub struct SubSpec {
    pub client_id: String,
    pub filter: String,
    pub group: usize,
    pub expect: Expect,
}

/// A whole run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub scenario: String,
    pub conn: ConnOpts,
    pub publishers: Vec<PubSpec>,
    pub subscribers: Vec<SubSpec>,
    pub qos: QoS,
    pub sub_qos: QoS,
    pub payload: usize,
    /// Messages per second per publisher; 0 = as fast as the broker takes.
    pub rate: f64,
    /// Messages per publisher; 0 = until the duration ends.
    pub count: u64,
    /// QoS 1/2 messages a publisher may have unacknowledged.
    pub inflight: u16,
    pub warmup: Duration,
    pub duration: Duration,
    /// After the publishers stop, how long to wait for the last messages.
    pub drain: Duration,
    /// Messages per second each subscriber reads at most (0 = as fast as
    /// it can): a slow consumer, for the broker's overload behaviour.
    pub sub_read_rate: f64,
    pub threads: usize,
    pub progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    ConnectSubs,
    ConnectPubs,
    Run,
    Stop,
}

/// When the run started, set before `Phase::Run`.
#[derive(Debug)]
struct Times {
    start: Instant,
    /// Messages sent before this (wall clock, ns) are warm-up.
    measure_from_ns: u64,
    pub_deadline: Instant,
}

struct Shared {
    counters: Vec<Counters>,
    times: OnceLock<Times>,
}

enum Ready {
    Subs { failed: Vec<String> },
    Pubs { failed: Vec<String> },
}

#[derive(Default)]
struct PubResult {
    id: u32,
    sent: u64,
    acked: u64,
}

struct SubResult {
    group: usize,
    expect: Expect,
    trackers: Vec<SeqTracker>,
    foreign: u64,
}

struct WorkerResult {
    pubs: Vec<PubResult>,
    subs: Vec<SubResult>,
    latency: Histogram<u64>,
    connect: Histogram<u64>,
    errors: Vec<String>,
}

/// Runs a plan to its end and reports.
pub fn run(plan: Plan) -> Result<Report, String> {
    if plan.payload < HEADER_LEN && !plan.publishers.is_empty() {
        return Err(format!("payload must be at least {HEADER_LEN} bytes"));
    }
    if plan.publishers.len() as u64 > MAX_PUBLISHERS as u64 {
        return Err(format!("at most {MAX_PUBLISHERS} publishers"));
    }
    let threads = plan.threads.max(1);
    let (cpu0, wall0) = (process_cpu_secs(), Instant::now());
    let plan = Arc::new(plan);
    let shared = Arc::new(Shared {
        counters: (0..threads).map(|_| Counters::default()).collect(),
        times: OnceLock::new(),
    });
    // Subscribers and publishers on separate threads when there are two or
    // more (so that unthrottled publishers never starve the subscribers of
    // their thread), each role dealt round robin over its threads.
    let mut subs_of: Vec<Vec<usize>> = vec![Vec::new(); threads];
    let mut pubs_of: Vec<Vec<usize>> = vec![Vec::new(); threads];
    let sub_threads = if threads >= 2 && !plan.publishers.is_empty() {
        (threads / 2).max(1)
    } else {
        threads
    };
    for i in 0..plan.subscribers.len() {
        subs_of[i % sub_threads].push(i);
    }
    let (first_pub, pub_threads) = if sub_threads < threads && !plan.subscribers.is_empty() {
        (sub_threads, threads - sub_threads)
    } else {
        (0, threads)
    };
    for i in 0..plan.publishers.len() {
        pubs_of[first_pub + i % pub_threads].push(i);
    }
    let (phase_tx, phase_rx) = watch::channel(Phase::ConnectSubs);
    let (ready_tx, ready_rx) = mpsc::channel();
    let mut handles = Vec::new();
    for t in 0..threads {
        let (plan, shared, ready, phase) = (
            plan.clone(),
            shared.clone(),
            ready_tx.clone(),
            phase_rx.clone(),
        );
        let (subs, pubs) = (
            std::mem::take(&mut subs_of[t]),
            std::mem::take(&mut pubs_of[t]),
        );
        let h = std::thread::Builder::new()
            .name(format!("bench-{t}"))
            .spawn(move || worker(t, plan, shared, subs, pubs, ready, phase))
            .map_err(|e| format!("cannot start a thread: {e}"))?;
        handles.push(h);
    }
    drop(ready_tx);
    let outcome = drive(&plan, &shared, &phase_tx, &ready_rx, threads);
    let _ = phase_tx.send(Phase::Stop);
    let mut results = Vec::new();
    for h in handles {
        results.push(
            h.join()
                .map_err(|_| "a bench thread panicked".to_string())?,
        );
    }
    let window = outcome?;
    let mut report = build_report(&plan, &shared, results, window);
    report.bench_cpu_cores = (process_cpu_secs() - cpu0) / wall0.elapsed().as_secs_f64().max(1e-3);
    Ok(report)
}

/// What the main thread measured.
struct Window {
    secs: f64,
    start: Totals,
    end: Totals,
}

fn wait_ready(
    rx: &mpsc::Receiver<Ready>,
    threads: usize,
    what: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut failed = Vec::new();
    for _ in 0..threads {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Ready::Subs { failed: f }) | Ok(Ready::Pubs { failed: f }) => failed.extend(f),
            Err(_) => return Err(format!("{what} did not connect in {timeout:?}")),
        }
    }
    if !failed.is_empty() {
        let n = failed.len();
        failed.truncate(3);
        return Err(format!(
            "{n} {what} failed to connect: {}",
            failed.join("; ")
        ));
    }
    Ok(())
}

fn drive(
    plan: &Plan,
    shared: &Shared,
    phase: &watch::Sender<Phase>,
    ready: &mpsc::Receiver<Ready>,
    threads: usize,
) -> Result<Window, String> {
    let setup = plan.conn.timeout + Duration::from_secs(30);
    wait_ready(ready, threads, "subscribers", setup)?;
    let _ = phase.send(Phase::ConnectPubs);
    wait_ready(ready, threads, "publishers", setup)?;
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let pub_deadline = measure_from + plan.duration;
    let wall = payload::wall_ns();
    let _ = shared.times.set(Times {
        start,
        measure_from_ns: wall + plan.warmup.as_nanos() as u64,
        pub_deadline,
    });
    let _ = phase.send(Phase::Run);

    let n_pubs = plan.publishers.len() as u64;
    let factor = expect_factor(plan);
    let mut window_start: Option<(Instant, Totals)> = None;
    let mut window_end: Option<(Instant, Totals)> = None;
    let mut last_progress = (start, Totals::default());
    let mut next_progress = start + Duration::from_secs(1);
    let mut last_change = (Instant::now(), Totals::default());
    loop {
        std::thread::sleep(Duration::from_millis(10));
        let now = Instant::now();
        let t = Totals::of(&shared.counters);
        if window_start.is_none() && now >= measure_from {
            window_start = Some((now, t));
        }
        let pubs_done = n_pubs > 0 && t.publishers_done >= n_pubs;
        if window_end.is_none() && (now >= pub_deadline || pubs_done) {
            let ws = window_start.get_or_insert((start, Totals::default()));
            let _ = ws;
            window_end = Some((now, t));
        }
        if plan.progress && now >= next_progress {
            let dt = now.duration_since(last_progress.0).as_secs_f64();
            let p = last_progress.1;
            eprintln!(
                "[{:6.1}s] sent {:>8}/s  acked {:>8}/s  recv {:>8}/s  (total sent {}, recv {}{})",
                now.duration_since(start).as_secs_f64(),
                si((t.sent - p.sent) as f64 / dt),
                si((t.acked - p.acked) as f64 / dt),
                si((t.received - p.received) as f64 / dt),
                si(t.sent as f64),
                si(t.received as f64),
                if now < measure_from { ", warm-up" } else { "" },
            );
            last_progress = (now, t);
            next_progress += Duration::from_secs(1);
        }
        if t != last_change.1 {
            last_change = (now, t);
        }
        if let Some((end_at, _)) = window_end {
            let all_acked = n_pubs == 0 || pubs_done;
            let all_received =
                plan.subscribers.is_empty() || factor.is_some_and(|f| t.received >= t.sent * f);
            let quiet = now.duration_since(last_change.0) >= Duration::from_millis(1000);
            let drained = now.duration_since(end_at) >= plan.drain;
            if (all_acked && (all_received || quiet)) || drained {
                break;
            }
        }
    }
    let (s_at, s) = window_start.unwrap_or((start, Totals::default()));
    let (e_at, e) = window_end.expect("the window ends before the loop does");
    Ok(Window {
        secs: e_at.duration_since(s_at).as_secs_f64().max(1e-3),
        start: s,
        end: e,
    })
}

/// Deliveries expected per message sent, if every subscriber's group
/// expects every publisher or exactly one group expects each publisher.
fn expect_factor(plan: &Plan) -> Option<u64> {
    if plan.subscribers.iter().any(|s| s.expect == Expect::Unknown) {
        return None;
    }
    if plan
        .subscribers
        .iter()
        .all(|s| matches!(s.expect, Expect::One(_)))
    {
        return Some(1);
    }
    let mut groups: Vec<usize> = plan
        .subscribers
        .iter()
        .filter(|s| s.expect == Expect::All)
        .map(|s| s.group)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Some(groups.len() as u64)
}

fn worker(
    t: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    subs: Vec<usize>,
    pubs: Vec<usize>,
    ready: mpsc::Sender<Ready>,
    phase: watch::Receiver<Phase>,
) -> WorkerResult {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, worker_async(t, plan, shared, subs, pubs, ready, phase))
}

async fn wait_phase(phase: &mut watch::Receiver<Phase>, at_least: Phase) -> Phase {
    loop {
        let p = *phase.borrow_and_update();
        if p >= at_least {
            return p;
        }
        if phase.changed().await.is_err() {
            return Phase::Stop;
        }
    }
}

/// A client to connect: its index, client id, and filter and QoS to
/// subscribe to.
type ToConnect = (usize, String, Option<(String, QoS)>);

/// Connects `ids` concurrently; returns the connections and failures.
async fn connect_all(
    opts: &ConnOpts,
    ids: Vec<ToConnect>,
    connect_hist: &Rc<RefCell<Histogram<u64>>>,
) -> (Vec<(usize, Conn)>, Vec<String>) {
    let mut tasks = Vec::new();
    for (i, client_id, sub) in ids {
        let (opts, hist) = (opts.clone(), connect_hist.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let t0 = Instant::now();
            let (mut conn, _) = Conn::connect(&opts, &client_id)
                .await
                .map_err(|e| format!("{client_id}: {e}"))?;
            hist.borrow_mut()
                .saturating_record(t0.elapsed().as_nanos() as u64);
            if let Some((filter, qos)) = sub {
                tokio::time::timeout(opts.timeout, conn.subscribe(&[filter], qos))
                    .await
                    .map_err(|_| format!("{client_id}: no SUBACK in time"))?
                    .map_err(|e| format!("{client_id}: {e}"))?;
            }
            Ok::<_, String>((i, conn))
        }));
    }
    let (mut ok, mut failed) = (Vec::new(), Vec::new());
    for task in tasks {
        match task.await {
            Ok(Ok(c)) => ok.push(c),
            Ok(Err(e)) => failed.push(e),
            Err(e) => failed.push(format!("connect task: {e}")),
        }
    }
    (ok, failed)
}

async fn worker_async(
    t: usize,
    plan: Arc<Plan>,
    shared: Arc<Shared>,
    subs: Vec<usize>,
    pubs: Vec<usize>,
    ready: mpsc::Sender<Ready>,
    mut phase: watch::Receiver<Phase>,
) -> WorkerResult {
    let connect_hist = Rc::new(RefCell::new(new_histogram()));
    let latency = Rc::new(RefCell::new(new_histogram()));
    let mut result = WorkerResult {
        pubs: Vec::new(),
        subs: Vec::new(),
        latency: new_histogram(),
        connect: new_histogram(),
        errors: Vec::new(),
    };
    let sub_ids = subs
        .iter()
        .map(|&i| {
            let s = &plan.subscribers[i];
            (
                i,
                s.client_id.clone(),
                Some((s.filter.clone(), plan.sub_qos)),
            )
        })
        .collect();
    let (sub_conns, failed) = connect_all(&plan.conn, sub_ids, &connect_hist).await;
    let _ = ready.send(Ready::Subs { failed });
    let mut pub_conns = Vec::new();
    if wait_phase(&mut phase, Phase::ConnectPubs).await == Phase::ConnectPubs {
        let pub_ids = pubs
            .iter()
            .map(|&i| (i, plan.publishers[i].client_id.clone(), None))
            .collect();
        let (c, failed) = connect_all(&plan.conn, pub_ids, &connect_hist).await;
        pub_conns = c;
        let _ = ready.send(Ready::Pubs { failed });
    }
    let go = wait_phase(&mut phase, Phase::Run).await == Phase::Run;
    let mut sub_tasks = Vec::new();
    let mut pub_tasks = Vec::new();
    if go {
        let times = shared.times.get().expect("times are set before Run");
        for (i, conn) in sub_conns {
            let (plan, shared, latency, phase) =
                (plan.clone(), shared.clone(), latency.clone(), phase.clone());
            sub_tasks.push(tokio::task::spawn_local(async move {
                let times = shared.times.get().expect("set");
                run_subscriber(conn, &plan, i, &shared.counters[t], times, &latency, phase).await
            }));
        }
        let _ = times;
        for (i, conn) in pub_conns {
            let (plan, shared, phase) = (plan.clone(), shared.clone(), phase.clone());
            pub_tasks.push(tokio::task::spawn_local(async move {
                let times = shared.times.get().expect("set");
                run_publisher(conn, &plan, i, &shared.counters[t], times, phase).await
            }));
        }
    }
    for task in pub_tasks {
        match task.await {
            Ok((r, err)) => {
                if let Some(e) = err {
                    result.errors.push(e);
                }
                result.pubs.push(r);
            }
            Err(e) => result.errors.push(format!("publisher task: {e}")),
        }
    }
    for task in sub_tasks {
        match task.await {
            Ok((r, err)) => {
                if let Some(e) = err {
                    result.errors.push(e);
                }
                result.subs.push(r);
            }
            Err(e) => result.errors.push(format!("subscriber task: {e}")),
        }
    }
    result.latency = latency.replace(new_histogram());
    result.connect = connect_hist.replace(new_histogram());
    result
}

fn ping_interval(opts: &ConnOpts) -> Duration {
    if opts.keep_alive == 0 {
        Duration::from_secs(3600)
    } else {
        Duration::from_secs(opts.keep_alive as u64) / 2
    }
}

async fn run_publisher(
    mut conn: Conn,
    plan: &Plan,
    index: usize,
    counters: &Counters,
    times: &Times,
    mut phase: watch::Receiver<Phase>,
) -> (PubResult, Option<String>) {
    let id = index as u32;
    let qos = plan.qos;
    let pacer = Pacer::spread(plan.rate, index, plan.publishers.len());
    let window: u64 = if qos == QoS::AtMostOnce {
        u64::MAX
    } else {
        plan.inflight.clamp(1, conn.server_receive_max) as u64
    };
    let plen = plan.payload;
    let mut packet = Packet::Publish(Publish {
        qos,
        topic: plan.publishers[index].topic.clone().into(),
        payload: Bytes::from(vec![0u8; plen]),
        ..Default::default()
    });
    let packet_len = packet.encoded_len(conn.version).max(1);
    let batch_max = (WRITE_BATCH / packet_len).max(1) as u64;
    let ping_every = ping_interval(&plan.conn);
    let mut next_ping = tokio::time::Instant::now() + ping_every;
    let deadline = tokio::time::Instant::from_std(times.pub_deadline);
    let (mut seq, mut inflight, mut acked) = (0u64, 0u64, 0u64);
    let mut next_pid: u16 = 1;
    let mut error = None;
    let version = conn.version;
    let Conn {
        stream,
        rbuf,
        wbuf,
        decoder,
        ..
    } = &mut conn;
    let (mut rd, mut wr) = stream.split();
    loop {
        let now = Instant::now();
        let stopped = *phase.borrow() >= Phase::Stop;
        let sending = !stopped
            && now < times.pub_deadline
            && (plan.count == 0 || seq < plan.count)
            && seq < u32::MAX as u64;
        if !sending && wbuf.is_empty() && (inflight == 0 || stopped) {
            break;
        }
        if sending && wbuf.len() < WRITE_BATCH / 2 {
            let allowed = pacer.allowed(now.saturating_duration_since(times.start));
            let mut n = allowed.saturating_sub(seq).min(batch_max);
            n = n.min(window.saturating_sub(inflight));
            if plan.count > 0 {
                n = n.min(plan.count - seq);
            }
            if n > 0 {
                let ts = payload::wall_ns();
                for _ in 0..n {
                    if let Packet::Publish(p) = &mut packet {
                        if qos != QoS::AtMostOnce {
                            p.packet_id = next_pid;
                            next_pid = next_pid.checked_add(1).unwrap_or(1);
                        }
                    }
                    if let Err(e) = packet.encode(version, wbuf) {
                        error = Some(format!("encode: {e}"));
                        break;
                    }
                    let end = wbuf.len();
                    payload::encode(
                        &mut wbuf[end - plen..],
                        Header {
                            sent_ns: ts,
                            publisher: id,
                            seq: seq as u32,
                        },
                    );
                    seq += 1;
                }
                if qos != QoS::AtMostOnce {
                    inflight += n;
                }
                Counters::add(&counters.sent, n);
                if error.is_some() {
                    break;
                }
            }
        }
        let can_send_more = sending && inflight < window;
        let next_due = if can_send_more && !pacer.unlimited() {
            tokio::time::Instant::from_std(times.start + pacer.due(seq))
        } else {
            deadline
        };
        if rbuf.capacity() - rbuf.len() < READ_RESERVE / 4 {
            rbuf.reserve(READ_RESERVE);
        }
        tokio::select! {
            biased;
            r = rd.read_buf(rbuf) => {
                match r {
                    Ok(0) | Err(_) => {
                        error = Some(format!("publisher {id}: connection closed by the broker"));
                        break;
                    }
                    Ok(_) => {}
                }
                let mut acks = 0;
                loop {
                    match decoder.decode(rbuf) {
                        Ok(Some(Packet::PubAck(_))) | Ok(Some(Packet::PubComp(_))) => {
                            acks += 1;
                        }
                        Ok(Some(Packet::PubRec(r))) => {
                            let rel = Packet::PubRel(PubReply::new(r.packet_id));
                            let _ = rel.encode(version, wbuf);
                        }
                        Ok(Some(Packet::Disconnect(d))) => {
                            error = Some(format!("publisher {id}: DISCONNECT {}", d.reason_code));
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => {
                            error = Some(format!("publisher {id}: decode: {e}"));
                            break;
                        }
                    }
                }
                inflight = inflight.saturating_sub(acks);
                acked += acks;
                Counters::add(&counters.acked, acks);
                if error.is_some() {
                    break;
                }
            }
            r = wr.write(wbuf), if !wbuf.is_empty() => {
                match r {
                    Ok(n) if n > 0 => {
                        wbuf.advance(n);
                        if wbuf.is_empty() {
                            wbuf.clear();
                        }
                    }
                    _ => {
                        error = Some(format!("publisher {id}: write failed"));
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(next_due), if wbuf.is_empty() && sending => {}
            _ = tokio::time::sleep_until(next_ping) => {
                next_ping += ping_every;
                let _ = Packet::PingReq.encode(version, wbuf);
            }
            r = phase.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
    }
    Counters::add(&counters.publishers_done, 1);
    if error.is_some() {
        Counters::add(&counters.errors, 1);
    }
    let result = PubResult {
        id,
        sent: seq,
        acked,
    };
    if error.is_none() {
        conn.disconnect().await;
    }
    (result, error)
}

async fn run_subscriber(
    mut conn: Conn,
    plan: &Plan,
    index: usize,
    counters: &Counters,
    times: &Times,
    latency: &RefCell<Histogram<u64>>,
    mut phase: watch::Receiver<Phase>,
) -> (SubResult, Option<String>) {
    let spec = &plan.subscribers[index];
    let mut result = SubResult {
        group: spec.group,
        expect: spec.expect,
        trackers: Vec::new(),
        foreign: 0,
    };
    let known = match spec.expect {
        Expect::Unknown => MAX_PUBLISHERS,
        _ => plan.publishers.len() as u32,
    };
    let read_pacer = Pacer::new(plan.sub_read_rate);
    let mut taken = 0u64;
    let ping_every = ping_interval(&plan.conn);
    let mut next_ping = tokio::time::Instant::now() + ping_every;
    let mut error = None;
    let version = conn.version;
    let Conn {
        stream,
        rbuf,
        wbuf,
        decoder,
        ..
    } = &mut conn;
    let (mut rd, mut wr) = stream.split();
    loop {
        if *phase.borrow() >= Phase::Stop {
            break;
        }
        if rbuf.capacity() - rbuf.len() < READ_RESERVE / 4 {
            rbuf.reserve(READ_RESERVE);
        }
        tokio::select! {
            biased;
            r = rd.read_buf(rbuf) => {
                match r {
                    Ok(0) | Err(_) => {
                        error = Some(format!("subscriber {index}: connection closed by the broker"));
                        break;
                    }
                    Ok(_) => {}
                }
                let now_ns = payload::wall_ns();
                let mut got = 0u64;
                {
                    let mut hist = latency.borrow_mut();
                    loop {
                        match decoder.decode(rbuf) {
                            Ok(Some(Packet::Publish(p))) => {
                                got += 1;
                                match payload::decode(&p.payload) {
                                    Some(h) if h.publisher < known => {
                                        let i = h.publisher as usize;
                                        if i >= result.trackers.len() {
                                            result.trackers.resize_with(i + 1, SeqTracker::default);
                                        }
                                        result.trackers[i].record(h.seq);
                                        if h.sent_ns >= times.measure_from_ns {
                                            hist.saturating_record(now_ns.saturating_sub(h.sent_ns));
                                        }
                                    }
                                    _ => result.foreign += 1,
                                }
                                match p.qos {
                                    QoS::AtMostOnce => {}
                                    QoS::AtLeastOnce => {
                                        let _ = Packet::PubAck(PubReply::new(p.packet_id))
                                            .encode(version, wbuf);
                                    }
                                    QoS::ExactlyOnce => {
                                        let _ = Packet::PubRec(PubReply::new(p.packet_id))
                                            .encode(version, wbuf);
                                    }
                                }
                            }
                            Ok(Some(Packet::PubRel(r))) => {
                                let _ = Packet::PubComp(PubReply::new(r.packet_id)).encode(version, wbuf);
                            }
                            Ok(Some(Packet::Disconnect(d))) => {
                                error = Some(format!("subscriber {index}: DISCONNECT {}", d.reason_code));
                                break;
                            }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e) => {
                                error = Some(format!("subscriber {index}: decode: {e}"));
                                break;
                            }
                        }
                    }
                }
                Counters::add(&counters.received, got);
                taken += got;
                if !read_pacer.unlimited() {
                    // A slow consumer: no more reads until its rate allows.
                    let due = times.start + read_pacer.due(taken);
                    tokio::time::sleep_until(tokio::time::Instant::from_std(due)).await;
                }
                if error.is_some() {
                    break;
                }
            }
            r = wr.write(wbuf), if !wbuf.is_empty() => {
                match r {
                    Ok(n) if n > 0 => {
                        wbuf.advance(n);
                        if wbuf.is_empty() {
                            wbuf.clear();
                        }
                    }
                    _ => {
                        error = Some(format!("subscriber {index}: write failed"));
                        break;
                    }
                }
            }
            _ = tokio::time::sleep_until(next_ping) => {
                next_ping += ping_every;
                let _ = Packet::PingReq.encode(version, wbuf);
            }
            r = phase.changed() => {
                if r.is_err() {
                    break;
                }
            }
        }
    }
    if error.is_some() {
        Counters::add(&counters.errors, 1);
    } else {
        // Acknowledge what was received before leaving.
        if !wbuf.is_empty() {
            let _ = tokio::time::timeout(Duration::from_millis(500), wr.write_all(wbuf)).await;
            wbuf.clear();
        }
        conn.disconnect().await;
    }
    (result, error)
}

fn build_report(plan: &Plan, shared: &Shared, results: Vec<WorkerResult>, w: Window) -> Report {
    let mut latency = new_histogram();
    let mut connect = new_histogram();
    let mut sent_by = vec![0u64; plan.publishers.len()];
    let (mut sent, mut acked) = (0u64, 0u64);
    let mut groups: Vec<(usize, Expect, Vec<SeqTracker>, u64)> = Vec::new();
    let mut errors = Vec::new();
    for r in results {
        let _ = latency.add(&r.latency);
        let _ = connect.add(&r.connect);
        errors.extend(r.errors);
        for p in r.pubs {
            sent_by[p.id as usize] = p.sent;
            sent += p.sent;
            acked += p.acked;
        }
        for s in r.subs {
            match groups.iter_mut().find(|g| g.0 == s.group) {
                Some(g) => {
                    if g.2.len() < s.trackers.len() {
                        g.2.resize_with(s.trackers.len(), SeqTracker::default);
                    }
                    for (a, b) in g.2.iter_mut().zip(&s.trackers) {
                        a.merge(b);
                    }
                    g.3 += s.foreign;
                }
                None => groups.push((s.group, s.expect, s.trackers, s.foreign)),
            }
        }
    }
    let (mut expected, mut received, mut unique) = (0u64, 0u64, 0u64);
    let (mut lost, mut dups, mut reordered, mut foreign) = (0u64, 0u64, 0u64, 0u64);
    for (_, expect, trackers, f) in &groups {
        foreign += f;
        let empty = SeqTracker::default();
        let tracker = |p: usize| trackers.get(p).unwrap_or(&empty);
        for t in trackers {
            received += t.received;
            unique += t.unique;
            dups += t.duplicates;
            reordered += t.reordered;
        }
        match *expect {
            Expect::All => {
                for (p, &n) in sent_by.iter().enumerate() {
                    expected += n;
                    lost += tracker(p).lost_of(n);
                }
            }
            Expect::One(p) => {
                let n = sent_by.get(p as usize).copied().unwrap_or(0);
                expected += n;
                lost += tracker(p as usize).lost_of(n);
            }
            Expect::Unknown => {
                for t in trackers {
                    expected += t.unique + t.gaps();
                    lost += t.gaps();
                }
            }
        }
    }
    let _ = shared;
    let secs = w.secs;
    let rate = |a: u64, b: u64| b.saturating_sub(a) as f64 / secs;
    Report {
        scenario: plan.scenario.clone(),
        broker: plan.conn.addr.to_string(),
        version: format!("{:?}", plan.conn.version),
        qos: plan.qos as u8,
        payload: plan.payload,
        publishers: plan.publishers.len(),
        subscribers: plan.subscribers.len(),
        threads: plan.threads,
        rate_per_publisher: plan.rate,
        inflight: plan.inflight,
        window_secs: secs,
        sent,
        acked,
        received: received + foreign,
        unique,
        expected,
        lost,
        duplicates: dups,
        reordered,
        foreign,
        sent_rate: rate(w.start.sent, w.end.sent),
        acked_rate: rate(w.start.acked, w.end.acked),
        received_rate: rate(w.start.received, w.end.received),
        latency: Percentiles::of(&latency),
        connect: ConnectStats {
            attempted: (plan.publishers.len() + plan.subscribers.len()) as u64,
            failed: 0,
            latency: Percentiles::of(&connect),
            ..Default::default()
        },
        errors,
        total_received: Totals::of(&shared.counters).received,
        bench_cpu_cores: 0.0,
    }
}
