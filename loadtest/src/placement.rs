//! `robust-bench placement`: concurrent KV puts or gets against the
//! Placement Center (or, with the `etcd` feature, against etcd doing the
//! same operations), closed loop: each client sends its next call when the
//! previous one returns. Reports ops/s and latency percentiles.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use robustmq_placement::client::Client;

/// Arguments of `robust-bench placement`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlacementBenchArgs {
    /// Members to talk to (comma-separated; any one works). For etcd, its
    /// client URL(s), e.g. http://127.0.0.1:2379.
    #[arg(long, default_value = "127.0.0.1:1228", value_delimiter = ',')]
    pub addr: Vec<String>,
    /// Concurrent clients, each with its own connection.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds to run (after a one-second warm-up).
    #[arg(long, default_value_t = 10)]
    pub duration: u64,
    /// The operation.
    #[arg(long, value_enum, default_value_t = BenchOp::Put)]
    pub op: BenchOp,
    /// Value size in bytes.
    #[arg(long, default_value_t = 64)]
    pub value_size: usize,
    /// Distinct keys written or read.
    #[arg(long, default_value_t = 10_000)]
    pub keys: u64,
    /// The system under test.
    #[arg(long, value_enum, default_value_t = Target::Placement)]
    pub target: Target,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Placement only: keep each client on the member it first reaches
    /// (followers forward writes) instead of moving to the leader.
    #[arg(long)]
    pub no_leader_routing: bool,
}

/// The measured operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum BenchOp {
    /// Puts of `value_size` bytes.
    Put,
    /// Linearizable gets (keys are written first).
    Get,
    /// Half puts, half gets (keys are written first).
    Mixed,
}

/// The system under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// The RobustMQ Placement Center.
    Placement,
    /// etcd v3 (needs robust-bench built with `--features etcd`).
    Etcd,
}

/// What one client measured.
struct Tally {
    hist: Histogram<u64>,
    errors: u64,
}

/// Runs the benchmark.
pub fn run(args: PlacementBenchArgs) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(bench(args))
}

async fn bench(args: PlacementBenchArgs) -> Result<(), String> {
    let kv = kv_factory(&args).await?;
    if args.op != BenchOp::Put {
        preload(&args, &kv).await?;
    }
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let seq = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for n in 0..args.clients {
        let store = kv.connect(n).await?;
        let (args, counting, stop, seq) =
            (args.clone(), counting.clone(), stop.clone(), seq.clone());
        tasks.push(tokio::spawn(async move {
            client_loop(store, &args, &counting, &stop, &seq).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(args.duration)).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    let mut total = Histogram::<u64>::new(3).map_err(|e| e.to_string())?;
    let mut errors = 0;
    for t in tasks {
        let tally = t.await.map_err(|e| e.to_string())?;
        total.add(&tally.hist).map_err(|e| e.to_string())?;
        errors += tally.errors;
    }
    report(&args, &total, errors, elapsed);
    Ok(())
}

async fn client_loop(
    store: Store,
    args: &PlacementBenchArgs,
    counting: &AtomicBool,
    stop: &AtomicBool,
    seq: &AtomicU64,
) -> Tally {
    let mut tally = Tally {
        hist: Histogram::new(3).expect("histogram"),
        errors: 0,
    };
    let value = vec![b'v'; args.value_size];
    while !stop.load(Ordering::Relaxed) {
        let n = seq.fetch_add(1, Ordering::Relaxed);
        let key = format!("bench/{:08}", n % args.keys);
        let t = Instant::now();
        let put = match args.op {
            BenchOp::Put => true,
            BenchOp::Get => false,
            BenchOp::Mixed => n % 2 == 0,
        };
        let ok = if put {
            store.put(&key, &value).await
        } else {
            store.get(&key).await
        };
        if counting.load(Ordering::Relaxed) {
            if ok {
                let _ = tally.hist.record(t.elapsed().as_micros() as u64);
            } else {
                tally.errors += 1;
            }
        }
    }
    tally
}

/// Writes every key once so gets find values.
async fn preload(args: &PlacementBenchArgs, kv: &Factory) -> Result<(), String> {
    let value = vec![b'v'; args.value_size];
    let mut tasks = Vec::new();
    let writers = 32.min(args.keys as usize).max(1);
    for w in 0..writers {
        let store = kv.connect(w).await?;
        let (value, keys) = (value.clone(), args.keys);
        tasks.push(tokio::spawn(async move {
            let mut k = w as u64;
            while k < keys {
                store.put(&format!("bench/{k:08}"), &value).await;
                k += writers as u64;
            }
        }));
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn report(args: &PlacementBenchArgs, h: &Histogram<u64>, errors: u64, elapsed: Duration) {
    let ops = h.len();
    let rate = ops as f64 / elapsed.as_secs_f64();
    let target = match args.target {
        Target::Placement => "placement",
        Target::Etcd => "etcd",
    };
    let op = match args.op {
        BenchOp::Put => "put",
        BenchOp::Get => "get",
        BenchOp::Mixed => "mixed",
    };
    if args.json {
        let doc = serde_json::json!({
            "target": target,
            "op": op,
            "addr": args.addr,
            "clients": args.clients,
            "leader_routing": args.target == Target::Placement && !args.no_leader_routing,
            "value_size": args.value_size,
            "duration_s": elapsed.as_secs_f64(),
            "ops": ops,
            "errors": errors,
            "ops_per_sec": rate.round(),
            "p50_us": h.value_at_quantile(0.50),
            "p99_us": h.value_at_quantile(0.99),
            "p999_us": h.value_at_quantile(0.999),
            "max_us": h.max(),
        });
        println!("{doc}");
    } else {
        println!(
            "{target} {op}: {} clients, {ops} ops in {:.1} s = {rate:.0} ops/s; \
             latency p50 {} us, p99 {} us, p99.9 {} us, max {} us; {errors} errors",
            args.clients,
            elapsed.as_secs_f64(),
            h.value_at_quantile(0.50),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        );
    }
}

/// Opens one connection per client to the system under test.
enum Factory {
    Placement(Vec<String>, bool),
    #[cfg(feature = "etcd")]
    Etcd(Vec<String>),
}

/// One client's connection.
enum Store {
    Placement(Client),
    #[cfg(feature = "etcd")]
    Etcd(etcd_client::KvClient),
}

async fn kv_factory(args: &PlacementBenchArgs) -> Result<Factory, String> {
    match args.target {
        Target::Placement => Ok(Factory::Placement(
            args.addr.clone(),
            !args.no_leader_routing,
        )),
        #[cfg(feature = "etcd")]
        Target::Etcd => Ok(Factory::Etcd(args.addr.clone())),
        #[cfg(not(feature = "etcd"))]
        Target::Etcd => Err("robust-bench was built without the `etcd` feature".into()),
    }
}

impl Factory {
    async fn connect(&self, n: usize) -> Result<Store, String> {
        match self {
            Factory::Placement(addrs, routing) => {
                // Spread first contacts over the members.
                let mut addrs = addrs.clone();
                let len = addrs.len().max(1);
                addrs.rotate_left(n % len);
                let client = Client::new(addrs, Duration::from_secs(5)).leader_routing(*routing);
                Ok(Store::Placement(client))
            }
            #[cfg(feature = "etcd")]
            Factory::Etcd(urls) => {
                let mut urls = urls.clone();
                let len = urls.len().max(1);
                urls.rotate_left(n % len);
                let c = etcd_client::Client::connect(urls, None)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Store::Etcd(c.kv_client()))
            }
        }
    }
}

impl Store {
    async fn put(&self, key: &str, value: &[u8]) -> bool {
        match self {
            Store::Placement(c) => c.kv_set(key, value).await.is_ok(),
            #[cfg(feature = "etcd")]
            Store::Etcd(c) => c.clone().put(key, value, None).await.is_ok(),
        }
    }

    async fn get(&self, key: &str) -> bool {
        match self {
            Store::Placement(c) => c.kv_get(key, false).await.is_ok(),
            #[cfg(feature = "etcd")]
            Store::Etcd(c) => c.clone().get(key, None).await.is_ok(),
        }
    }
}
