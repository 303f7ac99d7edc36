//! `robust-bench journal`: appends to the Journal Engine in-process with N
//! concurrent writers for a fixed time, and prints records/s, MB/s and the
//! p50/p99 append latency (acknowledged under the shard's fsync policy).
//! With `--fio`, runs fio's sequential direct-I/O writes on the same
//! directory right after, for comparison in the same run.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use robustmq_journal::{FsyncPolicy, Journal, JournalOptions, RecordIn, ShardConfig};

/// Arguments of `robust-bench journal`.
#[derive(Debug, clap::Args)]
pub struct JournalBenchArgs {
    /// Directory for the journal's files (created; the bench's shard is
    /// deleted at the end).
    #[arg(long)]
    pub dir: PathBuf,
    /// Concurrent writers, each waiting for its append before the next.
    #[arg(long, default_value_t = 64)]
    pub writers: usize,
    /// Payload bytes per record.
    #[arg(long, default_value_t = 1024)]
    pub record_size: usize,
    /// Fsync policy of the shard: always, interval or never.
    #[arg(long, default_value = "always")]
    pub fsync: FsyncPolicy,
    /// Seconds to run.
    #[arg(long, default_value_t = 5)]
    pub duration: u64,
    /// Records per append.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// fdatasync period under `interval`, in milliseconds.
    #[arg(long, default_value_t = 10)]
    pub fsync_interval_ms: u64,
    /// Journal cores (executors); shards are spread over them.
    #[arg(long, default_value_t = 1)]
    pub cores: usize,
    /// Shards written (writer i appends to shard i % shards).
    #[arg(long, default_value_t = 1)]
    pub shards: usize,
    /// Where the writer tasks run: `core` (on the journal core that owns
    /// their shard: the design's data plane, where the broker's tasks and
    /// the journal share one executor per core) or `thread` (a client
    /// executor on a thread of its own, one more hop each way).
    #[arg(long, default_value = "core")]
    pub client: ClientPlacement,
    /// Also run fio (sequential 1 MiB direct io_uring writes) on --dir.
    #[arg(long)]
    pub fio: bool,
    /// With --fio, also run fio on a file large enough that it never wraps
    /// around (2.5 GB per second of run; a warning says when it did), so
    /// that, like the journal without recycled files, it only
    /// writes space never written before (the default 2 GiB file is
    /// overwritten after its first pass, which costs the file system less).
    #[arg(long)]
    pub fio_fresh: bool,
    /// Seconds of that fresh-space fio run (default: --duration); its file
    /// takes 2.5 GB per second, which a shared disk may not have.
    #[arg(long)]
    pub fio_fresh_secs: Option<u64>,
    /// Segment size of the bench's shards, in bytes.
    #[arg(long, default_value_t = 1 << 30)]
    pub segment_bytes: u64,
    /// Retention of the bench's shards by size (0: none). With it, sealed
    /// segments are dropped (checked every 100 ms) and their files recycled
    /// for the next ones: a shard in steady state, on bounded disk space.
    #[arg(long, default_value_t = 0)]
    pub retention_bytes: u64,
    /// Segment files of deleted segments the engine keeps for new ones
    /// (its `recycle_segments`).
    #[arg(long, default_value_t = robustmq_journal::engine::DEFAULT_RECYCLE_SEGMENTS)]
    pub recycle: usize,
    /// Before the measured run, fill and delete a shard of `--recycle`
    /// segments, so that the measured shard's segments are recycled files
    /// (written space) as in a shard whose retention deletes segments,
    /// rather than new preallocated (unwritten) space.
    #[arg(long)]
    pub prefill_pool: bool,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
}

/// Where the bench's writer tasks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientPlacement {
    /// A client executor on its own thread.
    Thread,
    /// The journal core that owns the writer's shard.
    Core,
}

/// What one run measured.
#[derive(Debug, Clone)]
struct Outcome {
    records: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    errors: u64,
}

/// Size of fio's never-written file per second of run: more than this
/// disk's fio ever wrote on fresh space (about 2 GB/s), and small enough
/// for a shared disk.
const FRESH_BYTES_PER_SEC: u64 = 2_500_000_000;

/// Runs the benchmark.
pub fn run(args: JournalBenchArgs) -> Result<(), String> {
    if args.writers == 0 || args.batch == 0 || args.shards == 0 || args.duration == 0 {
        return Err("--writers, --batch, --shards and --duration must be positive".into());
    }
    let dir = args.dir.join("robust-bench-journal");
    let journal = Journal::start(JournalOptions {
        cores: args.cores,
        recycle_segments: args.recycle,
        retention_check: Duration::from_millis(100),
        ..JournalOptions::new(&dir)
    })
    .map_err(|e| e.to_string())?;
    if args.prefill_pool {
        prefill_pool(&journal, args.recycle, args.segment_bytes)?;
    }
    let shards = create_shards(&journal, &args)?;
    let outcome = drive(&journal, &shards, &args);
    for s in &shards {
        let _ = futures_lite::future::block_on(journal.delete_shard(s));
    }
    journal.stop();
    let _ = std::fs::remove_dir_all(&dir);
    let outcome = outcome?;
    if args.fio {
        settle_disk();
    }
    let fio = if args.fio {
        Some(run_fio(&args.dir, args.duration, 2 << 30)?)
    } else {
        None
    };
    let fio_fresh = if args.fio && args.fio_fresh {
        settle_disk();
        let secs = args.fio_fresh_secs.unwrap_or(args.duration).max(1);
        Some(run_fio(&args.dir, secs, FRESH_BYTES_PER_SEC * secs)?)
    } else {
        None
    };
    report(&args, &outcome, fio, fio_fresh);
    Ok(())
}

/// Writes `segments` default-size segments to a scratch shard and deletes
/// it: its files go to the engine's recycling pool.
fn prefill_pool(journal: &Journal, segments: usize, segment_bytes: u64) -> Result<(), String> {
    let name = "bench-prefill";
    let config = ShardConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes,
        ..ShardConfig::default()
    };
    let block = |e: robustmq_journal::JournalError| e.to_string();
    let _ = futures_lite::future::block_on(journal.delete_shard(name));
    futures_lite::future::block_on(journal.create_shard(name, config.clone())).map_err(block)?;
    let payload = Bytes::from(vec![0x5au8; 1 << 20]);
    let appends = segments as u64 * config.segment_bytes / (1 << 20) + 1;
    let t = Instant::now();
    let tasks: Vec<_> = (0..8)
        .map(|w| {
            let (journal, payload) = (journal.clone(), payload.clone());
            std::thread::spawn(move || {
                for _ in (w..appends).step_by(8) {
                    let r = vec![RecordIn::from_payload(payload.clone())];
                    futures_lite::future::block_on(journal.append(name, r))?;
                }
                Ok::<_, robustmq_journal::JournalError>(())
            })
        })
        .collect();
    for t in tasks {
        t.join()
            .map_err(|_| "prefill writer panicked")?
            .map_err(block)?;
    }
    futures_lite::future::block_on(journal.delete_shard(name)).map_err(block)?;
    tracing::info!(
        segments,
        secs = t.elapsed().as_secs_f64(),
        "recycling pool filled"
    );
    Ok(())
}

fn create_shards(journal: &Journal, args: &JournalBenchArgs) -> Result<Vec<String>, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut names = Vec::new();
    for i in 0..args.shards {
        let name = format!("bench-{stamp}-{i}");
        let config = ShardConfig {
            fsync: args.fsync,
            fsync_interval_ms: args.fsync_interval_ms,
            segment_bytes: args.segment_bytes,
            retention_bytes: args.retention_bytes,
            ..ShardConfig::default()
        };
        futures_lite::future::block_on(journal.create_shard(&name, config))
            .map_err(|e| e.to_string())?;
        names.push(name);
    }
    Ok(names)
}

/// Runs the writers: as tasks of one client executor (its own thread), or
/// on the journal cores that own their shards.
fn drive(journal: &Journal, shards: &[String], args: &JournalBenchArgs) -> Result<Outcome, String> {
    // Writer i appends to shard i % shards.
    let assigned: Vec<String> = (0..args.writers)
        .map(|w| shards[w % shards.len()].clone())
        .collect();
    let (batch, size) = (args.batch, args.record_size);
    let duration = Duration::from_secs(args.duration);
    let deadline = Instant::now() + duration;
    if args.client == ClientPlacement::Thread {
        let journal = journal.clone();
        return LocalExecutorBuilder::new(Placement::Unbound)
            .name("bench-client")
            .spawn(
                move || async move { writers_loop(journal, assigned, batch, size, deadline).await },
            )
            .map_err(|e| e.to_string())?
            .join()
            .map_err(|e| e.to_string());
    }
    let mut per_core: Vec<Vec<String>> = vec![Vec::new(); journal.cores()];
    for shard in assigned {
        per_core[journal.owner_core(&shard)].push(shard);
    }
    let mut results = Vec::new();
    for (core, shards) in per_core.into_iter().enumerate() {
        if shards.is_empty() {
            continue;
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let j = journal.clone();
        journal
            .run_on_core(core, move || {
                glommio::spawn_local(async move {
                    let _ = tx.send(writers_loop(j, shards, batch, size, deadline).await);
                })
                .detach();
            })
            .map_err(|e| e.to_string())?;
        results.push(rx);
    }
    let mut total: Option<Outcome> = None;
    for rx in results {
        let o = rx
            .recv()
            .map_err(|_| "a journal core stopped".to_string())?;
        total = Some(match total {
            None => o,
            Some(mut t) => {
                t.records += o.records;
                t.errors += o.errors;
                t.elapsed = t.elapsed.max(o.elapsed);
                t.latency.add(&o.latency).map_err(|e| e.to_string())?;
                t
            }
        });
    }
    total.ok_or_else(|| "no writers".to_string())
}

/// Runs one writer task per entry of `shards` (its shard) until `deadline`.
async fn writers_loop(
    journal: Journal,
    shards: Vec<String>,
    batch: usize,
    size: usize,
    deadline: Instant,
) -> Outcome {
    let payload = Bytes::from(vec![0xa5u8; size]);
    let hist = Rc::new(RefCell::new(Histogram::<u64>::new(3).expect("histogram")));
    let counts = Rc::new(RefCell::new((0u64, 0u64)));
    let start = Instant::now();
    let tasks: Vec<_> = shards
        .into_iter()
        .map(|shard| {
            let journal = journal.clone();
            let (payload, hist, counts) = (payload.clone(), hist.clone(), counts.clone());
            glommio::spawn_local(async move {
                // One clock read per append: it ends this one's latency and
                // starts the next (the writer runs on the journal's core).
                let mut t = Instant::now();
                while t < deadline {
                    let records = vec![RecordIn::from_payload(payload.clone()); batch];
                    let ok = journal.append(&shard, records).await.is_ok();
                    let now = Instant::now();
                    let us = now.duration_since(t).as_micros() as u64;
                    t = now;
                    let _ = hist.borrow_mut().record(us.max(1));
                    let mut c = counts.borrow_mut();
                    if ok {
                        c.0 += batch as u64;
                    } else {
                        c.1 += 1;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    let elapsed = start.elapsed();
    let (records, errors) = *counts.borrow();
    let latency = hist.borrow().clone();
    Outcome {
        records,
        elapsed,
        latency,
        errors,
    }
}

/// Lets the work that deleting the journal's (or fio's) files left behind
/// (with `-o discard` each freed extent is discarded on the device; dirty
/// metadata) finish before the next fio run, so that fio does not pay for it.
fn settle_disk() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(2));
}

/// fio's sequential 1 MiB direct io_uring writes on a file of `size` bytes
/// in `dir` (written from the start again when the run outlasts a pass):
/// MB/s.
fn run_fio(dir: &std::path::Path, secs: u64, size: u64) -> Result<f64, String> {
    let out = std::process::Command::new("fio")
        .args([
            "--name=seqwrite",
            "--rw=write",
            "--bs=1M",
            &format!("--size={size}"),
            "--direct=1",
            "--ioengine=io_uring",
            "--iodepth=8",
            "--time_based",
            &format!("--runtime={secs}"),
            "--output-format=json",
        ])
        .arg(format!("--directory={}", dir.display()))
        .output()
        .map_err(|e| format!("cannot run fio (apt-get install -y fio): {e}"))?;
    let _ = std::fs::remove_file(dir.join("seqwrite.0.0"));
    if !out.status.success() {
        return Err(format!(
            "fio failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("fio output: {e}"))?;
    let bytes = v["jobs"][0]["write"]["bw_bytes"]
        .as_f64()
        .ok_or("fio output has no write bandwidth")?;
    let written = v["jobs"][0]["write"]["io_bytes"].as_u64().unwrap_or(0);
    if written > size && size > 2 << 30 {
        tracing::warn!(
            written,
            size,
            "fio wrapped around its never-written file: it overwrote some"
        );
    }
    Ok(bytes / 1e6)
}

fn report(args: &JournalBenchArgs, o: &Outcome, fio: Option<f64>, fio_fresh: Option<f64>) {
    let secs = o.elapsed.as_secs_f64();
    let rps = o.records as f64 / secs;
    let mbps = rps * args.record_size as f64 / 1e6;
    let (p50, p99, max) = (
        o.latency.value_at_quantile(0.50),
        o.latency.value_at_quantile(0.99),
        o.latency.max(),
    );
    println!(
        "journal: {} writers ({:?}), {} B records x{} per append, fsync {:?}, {} core(s), {} shard(s), {:.1} s{}",
        args.writers, args.client, args.record_size, args.batch, args.fsync, args.cores, args.shards, secs,
        if args.prefill_pool { format!(", over {} recycled segment files", args.recycle) } else { String::new() }
    );
    println!("  {rps:.0} records/s, {mbps:.1} MB/s, append latency p50 {p50} us, p99 {p99} us, max {max} us, {} errors", o.errors);
    if let Some(fio) = fio {
        println!(
            "  fio sequential 1 MiB direct writes: {fio:.1} MB/s; journal/fio = {:.2}",
            mbps / fio
        );
    }
    if let Some(fresh) = fio_fresh {
        println!(
            "  fio on never-written space ({} GB file): {fresh:.1} MB/s; journal/fio = {:.2}",
            FRESH_BYTES_PER_SEC * args.fio_fresh_secs.unwrap_or(args.duration).max(1)
                / 1_000_000_000,
            mbps / fresh
        );
    }
    if args.json {
        let mut fio_field = fio.map_or(String::new(), |f| format!(",\"fio_mb_per_s\":{f:.1}"));
        if let Some(f) = fio_fresh {
            fio_field.push_str(&format!(",\"fio_fresh_mb_per_s\":{f:.1}"));
        }
        println!(
            "{{\"records_per_s\":{rps:.0},\"mb_per_s\":{mbps:.1},\"p50_us\":{p50},\"p99_us\":{p99},\"max_us\":{max},\"errors\":{},\"writers\":{},\"record_size\":{},\"batch\":{},\"fsync\":\"{:?}\",\"cores\":{},\"shards\":{},\"client\":\"{:?}\",\"recycled\":{},\"seconds\":{secs:.2}{fio_field}}}",
            o.errors, args.writers, args.record_size, args.batch, args.fsync, args.cores, args.shards, args.client,
            if args.prefill_pool { args.recycle } else { 0 }
        );
    }
}
