//! `conn`: open N connections at R per second, hold them idle, close them.
//! Measures connect latency (TCP connect to CONNACK), failures, and the
//! broker's resident memory before and after when given its pid.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::client::{Conn, ConnOpts};
use super::pacing::Pacer;
use super::report::{ConnectStats, Report};
use super::stats::{new_histogram, si, Percentiles};

/// A `conn` run.
#[derive(Debug, Clone)]
pub struct ConnPlan {
    pub conn: ConnOpts,
    pub client_prefix: String,
    pub count: usize,
    /// Connections per second (all threads together); 0 = at once.
    pub rate: f64,
    /// How long to hold them once all are open.
    pub hold: Duration,
    pub threads: usize,
    pub broker_pid: Option<u32>,
    pub progress: bool,
}

/// The broker's VmRSS in KiB, from /proc.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Raises the descriptor limit and grows the table for `count`
/// connections before the threads start: once they share it, each
/// doubling of the table waits for an RCU grace period (10-25 ms here),
/// and the connections opened meanwhile would count it as connect latency
/// (`robustmq_core::runtime::fd_table`).
pub fn prepare_descriptors(count: usize) {
    use robustmq_core::runtime::fd_table;
    let limit = fd_table::raise_nofile_limit();
    let wanted = count.saturating_add(256);
    if let Ok(limit) = limit {
        if limit < wanted as u64 {
            tracing::warn!(
                limit,
                count,
                "RLIMIT_NOFILE is below the connection count; raise ulimit -n"
            );
        }
    }
    if let Err(e) = fd_table::reserve(wanted) {
        tracing::warn!("cannot grow the descriptor table: {e}");
    }
}

struct Done {
    opened: u64,
    failed: Vec<String>,
    last_connected: Option<Instant>,
    hist: hdrhistogram::Histogram<u64>,
}

/// Runs `conn`.
pub fn run(plan: ConnPlan) -> Result<Report, String> {
    prepare_descriptors(plan.count);
    let threads = plan.threads.max(1);
    let plan = Arc::new(plan);
    let rss_before = plan.broker_pid.and_then(rss_kib);
    let start = Instant::now();
    let (done_tx, done_rx) = mpsc::channel::<Done>();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut handles = Vec::new();
    for t in 0..threads {
        let (plan, done_tx, mut release) = (plan.clone(), done_tx.clone(), release_rx.clone());
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-conn-{t}"))
                .spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("a tokio runtime");
                    let local = tokio::task::LocalSet::new();
                    local.block_on(&rt, async move {
                        let held: Rc<RefCell<Vec<TcpStream>>> = Rc::default();
                        let hist = Rc::new(RefCell::new(new_histogram()));
                        let pacer = Pacer::new(plan.rate);
                        let mut tasks = Vec::new();
                        for i in (t..plan.count).step_by(threads) {
                            let due = tokio::time::Instant::from_std(start + pacer.due(i as u64));
                            tokio::time::sleep_until(due).await;
                            let (plan, held, hist) = (plan.clone(), held.clone(), hist.clone());
                            tasks.push(tokio::task::spawn_local(async move {
                                let id = format!("{}-conn-{i}", plan.client_prefix);
                                let t0 = Instant::now();
                                let (conn, _) = Conn::connect(&plan.conn, &id)
                                    .await
                                    .map_err(|e| format!("{id}: {e}"))?;
                                let at = Instant::now();
                                hist.borrow_mut()
                                    .saturating_record(at.duration_since(t0).as_nanos() as u64);
                                held.borrow_mut().push(conn.stream);
                                Ok::<_, String>(at)
                            }));
                        }
                        let mut done = Done {
                            opened: 0,
                            failed: Vec::new(),
                            last_connected: None,
                            hist: new_histogram(),
                        };
                        for task in tasks {
                            match task.await {
                                Ok(Ok(at)) => {
                                    done.opened += 1;
                                    done.last_connected = done.last_connected.max(Some(at));
                                }
                                Ok(Err(e)) => done.failed.push(e),
                                Err(e) => done.failed.push(format!("task: {e}")),
                            }
                        }
                        done.hist = hist.replace(new_histogram());
                        let _ = done_tx.send(done);
                        while !*release.borrow_and_update() {
                            if release.changed().await.is_err() {
                                break;
                            }
                        }
                        // Close with a reset: no TIME_WAIT left behind to
                        // exhaust the ephemeral ports of the next run.
                        let mut open = 0u64;
                        for s in held.borrow_mut().drain(..) {
                            let mut probe = [0u8; 1];
                            // A connection the broker closed reads EOF.
                            if !matches!(s.try_read(&mut probe), Ok(0)) {
                                open += 1;
                            }
                            #[allow(deprecated)] // linger 0 resets at once, it never blocks
                            let _ = s.set_linger(Some(Duration::ZERO));
                        }
                        open
                    })
                })
                .map_err(|e| format!("cannot start a thread: {e}"))?,
        );
    }
    drop(done_tx);
    let mut hist = new_histogram();
    let (mut opened, mut failed, mut last) = (0u64, Vec::new(), None);
    let expected_time = Pacer::new(plan.rate).due(plan.count as u64) + plan.conn.timeout;
    let limit = Instant::now() + expected_time + Duration::from_secs(30);
    let mut next_progress = start + Duration::from_secs(1);
    let mut reported = 0;
    while reported < threads {
        match done_rx.recv_timeout(Duration::from_millis(100)) {
            Ok(d) => {
                reported += 1;
                opened += d.opened;
                failed.extend(d.failed);
                last = last.max(d.last_connected);
                let _ = hist.add(&d.hist);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        let now = Instant::now();
        if plan.progress && now >= next_progress {
            eprintln!(
                "[{:6.1}s] opening {} connections at {}/s",
                now.duration_since(start).as_secs_f64(),
                plan.count,
                si(plan.rate)
            );
            next_progress += Duration::from_secs(1);
        }
        if now > limit {
            break;
        }
    }
    let open_secs = last
        .map(|l| l.duration_since(start).as_secs_f64())
        .unwrap_or(0.0)
        .max(1e-3);
    // Let the broker settle before reading its memory, then hold.
    let settle = Duration::from_secs(1).min(plan.hold);
    std::thread::sleep(settle);
    let rss_after = plan.broker_pid.and_then(rss_kib);
    if plan.progress {
        eprintln!(
            "[{:6.1}s] {opened} open, {} failed; holding {:?}",
            start.elapsed().as_secs_f64(),
            failed.len(),
            plan.hold
        );
    }
    std::thread::sleep(plan.hold.saturating_sub(settle));
    let _ = release_tx.send(true);
    let mut held = 0;
    for h in handles {
        held += h
            .join()
            .map_err(|_| "a bench thread panicked".to_string())?;
    }
    let n_failed = failed.len() as u64;
    failed.truncate(5);
    Ok(Report {
        scenario: "conn".into(),
        broker: plan.conn.addr.to_string(),
        version: format!("{:?}", plan.conn.version),
        threads,
        connect: ConnectStats {
            attempted: plan.count as u64,
            failed: n_failed,
            held,
            rate: opened as f64 / open_secs,
            latency: Percentiles::of(&hist),
            rss_before_kib: rss_before,
            rss_after_kib: rss_after,
        },
        errors: failed,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::rss_kib;

    #[test]
    fn reads_own_rss() {
        let kib = rss_kib(std::process::id()).expect("VmRSS of this process");
        assert!(kib > 0);
        assert_eq!(rss_kib(u32::MAX), None);
    }
}
