//! `robust-bench compare`: the matrix against Mosquitto and
//! robust-server, alternating, each row on freshly started brokers on free
//! ports; a table with the ratios written into docs/benchmarks.md between
//! two markers of the section "## MQTT broker vs Mosquitto (robust-bench)".

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Args, Parser};

use super::report::Report;
use super::stats::si;
use super::MqttCommand;

/// The heading of the section `compare` owns in docs/benchmarks.md.
pub const SECTION: &str = "## MQTT broker vs Mosquitto (robust-bench)";
const BEGIN: &str = "<!-- robust-bench compare: begin -->";
const END: &str = "<!-- robust-bench compare: end -->";

/// `compare` options.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// The robust-server binary (a release build).
    #[arg(long, default_value = "target/release/robust-server")]
    pub robust_server: PathBuf,
    /// Extra config for robust-server (--config).
    #[arg(long)]
    pub robust_config: Option<PathBuf>,
    /// The mosquitto binary.
    #[arg(long, default_value = "mosquitto")]
    pub mosquitto: String,
    /// Seconds measured per row (the issue asks for 10).
    #[arg(long, default_value_t = 10.0)]
    pub seconds: f64,
    /// Seconds of warm-up per row.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Bench threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Only the rows whose key contains one of these (comma-separated):
    /// fanin0, fanin1, fanout, p2p, sharesub, conn, conn5k.
    #[arg(long, value_delimiter = ',')]
    pub rows: Vec<String>,
    /// The markdown file to write the table into.
    #[arg(long, default_value = "docs/benchmarks.md")]
    pub out: PathBuf,
    /// Print the table only.
    #[arg(long)]
    pub no_write: bool,
    /// Each run's JSON, one line per run, appended here.
    #[arg(long)]
    pub raw: Option<PathBuf>,
}

#[derive(Parser)]
struct Wrap {
    #[command(subcommand)]
    cmd: MqttCommand,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    /// Deliveries per second, higher is better.
    Received,
    /// p99 latency, lower is better.
    P99,
    /// Broker memory per connection, lower is better.
    BytesPerConn,
    /// p99 connect latency (TCP connect to CONNACK), lower is better.
    ConnectP99,
}

impl Metric {
    /// A `conn` row: connections, not messages.
    fn is_connections(self) -> bool {
        matches!(self, Metric::BytesPerConn | Metric::ConnectP99)
    }
}

struct Row {
    key: &'static str,
    title: &'static str,
    args: &'static str,
    metric: Metric,
}

const ROWS: &[Row] = &[
    Row {
        key: "fanin0",
        title: "fan-in 8 -> 1 (`t/#`), QoS 0, unthrottled",
        args: "fanin --qos 0",
        metric: Metric::Received,
    },
    Row {
        key: "fanin1",
        title: "fan-in 8 -> 1 (`t/#`), QoS 1, 64 in flight",
        args: "fanin --qos 1 --inflight 64",
        metric: Metric::Received,
    },
    Row {
        key: "fanout",
        title: "fan-out 1 -> 50, QoS 0",
        args: "fanout --qos 0",
        metric: Metric::Received,
    },
    Row {
        key: "p2p",
        title: "p2p 50 pairs x 200 msgs/s, QoS 0",
        args: "p2p --rate 200",
        metric: Metric::P99,
    },
    Row {
        key: "sharesub",
        title: "shared 8 -> `$share/g/t/#` x 4, QoS 1",
        args: "sharesub --qos 1 --inflight 64",
        metric: Metric::Received,
    },
    Row {
        key: "conn",
        title: "10,000 idle connections at 2,000/s",
        args: "conn -n 10000 -r 2000",
        metric: Metric::BytesPerConn,
    },
    Row {
        key: "conn5k",
        title: "10,000 connections at 5,000/s",
        args: "conn -n 10000 -r 5000",
        metric: Metric::ConnectP99,
    },
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Broker {
    Mosquitto,
    Robust,
}

impl Broker {
    fn name(self) -> &'static str {
        match self {
            Broker::Mosquitto => "Mosquitto",
            Broker::Robust => "RobustMQ",
        }
    }
}

struct Running {
    child: Child,
    port: u16,
    _dir: TempDir,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> std::io::Result<TempDir> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p =
            std::env::temp_dir().join(format!("robust-bench-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port free on 127.0.0.1 right now.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts on the port.
pub fn wait_for_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn start(broker: Broker, a: &CompareArgs) -> Result<Running, String> {
    let port = free_port().map_err(|e| format!("free port: {e}"))?;
    let dir = TempDir::new(broker.name()).map_err(|e| format!("temp dir: {e}"))?;
    let mut cmd = match broker {
        Broker::Mosquitto => {
            let conf = dir.0.join("mosquitto.conf");
            std::fs::write(
                &conf,
                format!(
                    "listener {port} 127.0.0.1\nallow_anonymous true\n\
                     persistence false\nlog_dest stderr\nlog_type error\n"
                ),
            )
            .map_err(|e| format!("mosquitto.conf: {e}"))?;
            let mut c = Command::new(&a.mosquitto);
            c.arg("-c").arg(conf);
            c
        }
        Broker::Robust => {
            let mut c = Command::new(&a.robust_server);
            c.args(["--roles", "mqtt", "--mqtt-addr"])
                .arg(format!("127.0.0.1:{port}"))
                .arg("--data-dir")
                .arg(dir.0.join("data"));
            if let Some(conf) = &a.robust_config {
                c.arg("--config").arg(conf);
            }
            c
        }
    };
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", broker.name()))?;
    let running = Running {
        child,
        port,
        _dir: dir,
    };
    if !wait_for_port(port, Duration::from_secs(20)) {
        return Err(format!("{} did not listen on {port}", broker.name()));
    }
    Ok(running)
}

fn run_row(row: &Row, broker: Broker, a: &CompareArgs) -> Result<Report, String> {
    let mut running = start(broker, a)?;
    let pid = running.child.id();
    let mut argv: Vec<String> = vec!["robust-bench".into()];
    argv.extend(row.args.split_whitespace().map(String::from));
    argv.extend([
        "--port".to_string(),
        running.port.to_string(),
        "--threads".into(),
        a.threads.to_string(),
        "--client-prefix".into(),
        "cmp".into(),
        "--quiet".into(),
    ]);
    if row.metric.is_connections() {
        argv.extend(["--broker-pid".into(), pid.to_string()]);
        argv.extend(["--duration".into(), "2".into()]);
    } else {
        argv.extend(["--duration".into(), a.seconds.to_string()]);
        argv.extend(["--warmup".into(), a.warmup.to_string()]);
    }
    let cmd = Wrap::try_parse_from(&argv)
        .map_err(|e| format!("row {}: {e}", row.key))?
        .cmd;
    let report = match &cmd {
        MqttCommand::Conn(c) => super::conn::run(super::conn::ConnPlan {
            conn: c.common.conn_opts()?,
            client_prefix: c.common.client_prefix.clone(),
            count: c.count,
            rate: c.rate,
            hold: super::secs(c.duration),
            threads: c.common.threads,
            broker_pid: c.broker_pid,
            progress: false,
        })?,
        _ => super::scenario::run(super::plan_for(&cmd)?)?,
    };
    if let Ok(Some(status)) = running.child.try_wait() {
        return Err(format!("{} exited during the run: {status}", broker.name()));
    }
    Ok(report)
}

fn cell(r: &Report, m: Metric) -> String {
    match m {
        Metric::Received => format!(
            "**{}/s** recv (sent {}/s), loss {:.2}%, p99 {:.2} ms, bench {:.1} cores",
            si(r.received_rate),
            si(r.sent_rate),
            r.loss_pct(),
            r.latency.p99,
            r.bench_cpu_cores
        ),
        Metric::P99 => format!(
            "**p99 {:.3} ms** (p50 {:.3}, p99.9 {:.3}, max {:.2}), {}/s, loss {:.2}%",
            r.latency.p99,
            r.latency.p50,
            r.latency.p999,
            r.latency.max,
            si(r.received_rate),
            r.loss_pct()
        ),
        Metric::BytesPerConn => format!(
            "**{:.0} B/conn** (RSS {} -> {} KiB), {}/s opened, connect p99 {:.2} ms, {} failed",
            r.connect.bytes_per_conn().unwrap_or(f64::NAN),
            r.connect.rss_before_kib.unwrap_or(0),
            r.connect.rss_after_kib.unwrap_or(0),
            si(r.connect.rate),
            r.connect.latency.p99,
            r.connect.failed
        ),
        Metric::ConnectP99 => format!(
            "**connect p99 {:.2} ms** (p50 {:.2}, max {:.2}), {}/s opened, {} failed",
            r.connect.latency.p99,
            r.connect.latency.p50,
            r.connect.latency.max,
            si(r.connect.rate),
            r.connect.failed
        ),
    }
}

/// A row's figures in a few characters, for the chart.
fn short(r: &Report, m: Metric) -> String {
    match m {
        Metric::Received => format!("{}/s", si(r.received_rate)),
        Metric::P99 => format!("p99 {:.3} ms", r.latency.p99),
        Metric::BytesPerConn => format!(
            "{:.0} B/conn",
            r.connect.bytes_per_conn().unwrap_or(f64::NAN)
        ),
        Metric::ConnectP99 => format!("connect p99 {:.2} ms", r.connect.latency.p99),
    }
}

/// One row of the chart.
#[derive(Debug, Clone)]
struct Bar {
    title: String,
    /// How many times better RobustMQ did than Mosquitto (below 1: worse),
    /// whichever way the row's figure is better.
    advantage: f64,
    mosquitto: String,
    robust: String,
}

/// Where the chart goes: beside the markdown file, `<stem>-compare.svg`.
fn chart_path(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_else(|| "benchmarks".into());
    out.with_file_name(format!("{stem}-compare.svg"))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A horizontal bar chart of the advantage per row on a log scale from
/// 1/4x to 128x, parity marked: green bars ahead, red behind.
fn chart_svg(bars: &[Bar], caption: &str) -> String {
    const LEFT: f64 = 330.0;
    const WIDTH: f64 = 420.0;
    const ROW: f64 = 44.0;
    const TOP: f64 = 50.0;
    let (lo, hi) = (-2.0f64, 7.0f64); // log2 of 1/4x and 128x
    let x = |factor: f64| {
        let l = factor.max(f64::MIN_POSITIVE).log2().clamp(lo, hi);
        LEFT + (l - lo) / (hi - lo) * WIDTH
    };
    let height = TOP + ROW * bars.len() as f64 + 40.0;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"10\" y=\"20\" font-size=\"14\" font-weight=\"bold\">RobustMQ against \
         Mosquitto: times better (log scale; left of 1x: behind)</text>\n\
         <text x=\"10\" y=\"38\" fill=\"#555\">{}</text>\n",
        xml_escape(caption),
        w = LEFT + WIDTH + 60.0,
    );
    for (i, factor) in [0.25, 1.0, 4.0, 16.0, 64.0].iter().enumerate() {
        let gx = x(*factor);
        let label = if i == 0 {
            "1/4x".to_string()
        } else {
            format!("{factor}x")
        };
        svg += &format!(
            "<line x1=\"{gx:.1}\" y1=\"{TOP}\" x2=\"{gx:.1}\" y2=\"{:.1}\" stroke=\"{}\"/>\n\
             <text x=\"{gx:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#555\">{label}</text>\n",
            height - 30.0,
            if *factor == 1.0 { "#000" } else { "#ddd" },
            height - 15.0,
        );
    }
    for (i, bar) in bars.iter().enumerate() {
        let y = TOP + ROW * i as f64 + 8.0;
        let (x0, x1) = (x(1.0), x(bar.advantage));
        let (from, to) = if x1 >= x0 { (x0, x1) } else { (x1, x0) };
        let colour = if bar.advantage >= 1.0 {
            "#2e7d32"
        } else {
            "#c62828"
        };
        svg += &format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"#555\" font-size=\"10\">\
             Mosquitto {} / RobustMQ {}</text>\n\
             <rect x=\"{from:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"18\" fill=\"{colour}\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\">{:.2}x</text>\n",
            LEFT - 8.0,
            y + 9.0,
            xml_escape(&bar.title),
            LEFT - 8.0,
            y + 22.0,
            xml_escape(&bar.mosquitto),
            xml_escape(&bar.robust),
            (to - from).max(1.0),
            to + 4.0,
            y + 13.0,
            bar.advantage,
        );
    }
    svg += "</svg>\n";
    svg
}

fn value(r: &Report, m: Metric) -> f64 {
    match m {
        Metric::Received => r.received_rate,
        Metric::P99 => r.latency.p99,
        Metric::BytesPerConn => r.connect.bytes_per_conn().unwrap_or(f64::NAN),
        Metric::ConnectP99 => r.connect.latency.p99,
    }
}

fn sh(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> String {
    let model = sh("lscpu", &[])
        .lines()
        .find(|l| l.starts_with("Model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{model}, {} cores", sh("nproc", &[]))
}

/// Replaces the text between the markers of the section, or appends the
/// section; the rest of the file is left as it is.
pub fn splice(doc: &str, table: &str) -> String {
    let block = format!("{BEGIN}\n{table}{END}");
    if let (Some(b), Some(e)) = (doc.find(BEGIN), doc.find(END)) {
        if b < e {
            return format!("{}{}{}", &doc[..b], block, &doc[e + END.len()..]);
        }
    }
    if let Some(h) = doc.find(SECTION) {
        let after = h + SECTION.len();
        let next = doc[after..]
            .find("\n## ")
            .map(|i| after + i + 1)
            .unwrap_or(doc.len());
        let mut section_end = doc[..next].trim_end().len();
        if section_end < after {
            section_end = after;
        }
        return format!(
            "{}\n\n{}\n{}",
            &doc[..section_end],
            block,
            if next < doc.len() {
                format!("\n{}", &doc[next..])
            } else {
                String::new()
            }
        );
    }
    let mut out = doc.trim_end().to_string();
    out += &format!("\n\n{SECTION}\n\n{block}\n");
    out
}

/// Runs the matrix.
pub fn run(a: &CompareArgs) -> Result<(), String> {
    if !Path::new(&a.robust_server).exists() {
        return Err(format!(
            "{} not found: cargo build --release --bin robust-server",
            a.robust_server.display()
        ));
    }
    let rows: Vec<&Row> = ROWS
        .iter()
        .filter(|r| a.rows.is_empty() || a.rows.iter().any(|k| r.key.contains(k.as_str())))
        .collect();
    let mut raw = match &a.raw {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))?,
        ),
        None => None,
    };
    let mut lines = Vec::new();
    let mut bars = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let order = if i % 2 == 0 {
            [Broker::Mosquitto, Broker::Robust]
        } else {
            [Broker::Robust, Broker::Mosquitto]
        };
        let mut got: [Option<Result<Report, String>>; 2] = [None, None];
        for b in order {
            eprintln!("compare: {} on {} ...", row.title, b.name());
            let r = run_row(row, b, a);
            match &r {
                Ok(rep) => {
                    eprint!("{}", rep.summary());
                    if let Some(f) = raw.as_mut() {
                        let mut j = rep.to_json();
                        j["broker_name"] = b.name().into();
                        j["row"] = row.key.into();
                        let _ = writeln!(f, "{j}");
                    }
                }
                Err(e) => eprintln!("compare: {}: {e}", b.name()),
            }
            got[(b == Broker::Robust) as usize] = Some(r);
            // Let sockets in TIME_WAIT and the CPU settle between runs.
            std::thread::sleep(Duration::from_millis(500));
        }
        let show = |r: &Option<Result<Report, String>>| match r {
            Some(Ok(rep)) => cell(rep, row.metric),
            Some(Err(e)) => format!("failed: {e}"),
            None => "-".into(),
        };
        let ratio = match (&got[0], &got[1]) {
            (Some(Ok(m)), Some(Ok(r))) => {
                let (vm, vr) = (value(m, row.metric), value(r, row.metric));
                let x = vr / vm;
                bars.push(Bar {
                    title: row.title.replace('`', ""),
                    advantage: match row.metric {
                        Metric::Received => x,
                        _ => 1.0 / x,
                    },
                    mosquitto: short(m, row.metric),
                    robust: short(r, row.metric),
                });
                let better = match row.metric {
                    Metric::Received => x >= 1.0,
                    _ => x <= 1.0,
                };
                let verdict = if better { "ahead" } else { "behind" };
                if !row.metric.is_connections() && r.loss_pct() > 1.0 {
                    format!("{x:.2}x ({verdict}, but loses {:.1}%)", r.loss_pct())
                } else {
                    format!("{x:.2}x ({verdict})")
                }
            }
            _ => "-".into(),
        };
        lines.push(format!(
            "| {} | {} | {} | {} |",
            row.title,
            show(&got[0]),
            show(&got[1]),
            ratio
        ));
    }
    let commit = sh("git", &["rev-parse", "--short", "HEAD"]);
    let date = sh("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mut table = format!(
        "Machine: {}; date: {}; commit: {}; `robust-bench compare --seconds {} \
         --warmup {} --threads {}` (64 B payloads, MQTT 3.1.1, {} s measured per \
         row after {} s of warm-up; bench, broker and the other engineers' \
         builds share the 2 cores). Each row starts both brokers afresh, in \
         alternating order. Ratio = RobustMQ / Mosquitto of the bold figure \
         (received rate: higher is better; p99, connect p99 and bytes per \
         connection: lower is better). Mosquitto runs with its defaults; robust-server \
         with `--roles mqtt`{}.\n\n",
        machine(),
        date,
        commit,
        a.seconds,
        a.warmup,
        a.threads,
        a.seconds,
        a.warmup,
        match &a.robust_config {
            Some(c) => format!(" and `--config {}`", c.display()),
            None => " and its default config".into(),
        }
    );
    let chart_path = chart_path(&a.out);
    if !bars.is_empty() {
        let name = chart_path
            .file_name()
            .map(|n| n.to_string_lossy().to_string());
        table += &format!(
            "![RobustMQ against Mosquitto, row by row]({})\n\n",
            name.unwrap_or_default()
        );
    }
    table += "| row | Mosquitto | RobustMQ | RobustMQ / Mosquitto |\n|---|---|---|---|\n";
    for l in &lines {
        table += l;
        table.push('\n');
    }
    println!("{table}");
    if !a.no_write {
        let doc = std::fs::read_to_string(&a.out).unwrap_or_default();
        std::fs::write(&a.out, splice(&doc, &table))
            .map_err(|e| format!("{}: {e}", a.out.display()))?;
        eprintln!("compare: wrote {}", a.out.display());
        if !bars.is_empty() {
            let caption = format!("{date}, commit {commit}, {}", machine());
            std::fs::write(&chart_path, chart_svg(&bars, &caption))
                .map_err(|e| format!("{}: {e}", chart_path.display()))?;
            eprintln!("compare: wrote {}", chart_path.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_appends_then_replaces_only_between_markers() {
        let doc = "# Benchmarks\n\n## Journal\n\nfigures\n";
        let once = splice(doc, "| a |\n");
        assert!(once.starts_with(doc.trim_end()));
        assert!(once.contains(SECTION));
        assert!(once.contains("| a |"));
        let mut edited = once.replace(BEGIN, &format!("notes by hand\n\n{BEGIN}"));
        edited += "\n## Placement\n\nother\n";
        let twice = splice(&edited, "| b |\n");
        assert!(!twice.contains("| a |"));
        assert!(twice.contains("| b |"));
        assert!(twice.contains("notes by hand"));
        assert!(twice.contains("## Journal\n\nfigures"));
        assert!(twice.contains("## Placement\n\nother"));
    }

    #[test]
    fn splice_into_an_existing_section_without_markers() {
        let doc = format!("# B\n\n{SECTION}\n\nprose\n\n## Next\n\nx\n");
        let out = splice(&doc, "| t |\n");
        let s = out.find(SECTION).unwrap();
        let t = out.find("| t |").unwrap();
        let n = out.find("## Next").unwrap();
        assert!(s < t && t < n, "{out}");
        assert!(out.contains("prose"));
    }

    #[test]
    fn the_chart_has_a_bar_per_row_sized_by_the_advantage() {
        let bar = |title: &str, advantage| Bar {
            title: title.into(),
            advantage,
            mosquitto: "1/s".into(),
            robust: "2/s".into(),
        };
        let svg = chart_svg(
            &[
                bar("ahead <8x>", 8.0),
                bar("behind", 0.5),
                bar("far", 1000.0),
            ],
            "a & b",
        );
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        assert!(svg.contains("ahead &lt;8x&gt;") && svg.contains("a &amp; b"));
        let widths: Vec<f64> = svg
            .lines()
            .filter(|l| l.starts_with("<rect x="))
            .map(|l| {
                let w = l.split("width=\"").nth(1).unwrap();
                w[..w.find('"').unwrap()].parse().unwrap()
            })
            .collect();
        assert_eq!(widths.len(), 3, "one bar per row");
        // 8x is 3 of 9 octaves, 1/2x is one: three times as long; 1000x is
        // cut at the scale's end (7 octaves).
        assert!((widths[0] / widths[1] - 3.0).abs() < 0.01, "{widths:?}");
        assert!((widths[2] / widths[1] - 7.0).abs() < 0.01, "{widths:?}");
        assert!(svg.contains("fill=\"#c62828\""), "behind is red");
        assert_eq!(
            chart_path(Path::new("docs/benchmarks.md")),
            PathBuf::from("docs/benchmarks-compare.svg")
        );
    }

    #[test]
    fn every_row_parses() {
        for row in ROWS {
            let mut argv = vec!["robust-bench".to_string()];
            argv.extend(row.args.split_whitespace().map(String::from));
            argv.extend(["--port".into(), "1".into()]);
            Wrap::try_parse_from(&argv).unwrap_or_else(|e| panic!("{}: {e}", row.key));
        }
    }
}
