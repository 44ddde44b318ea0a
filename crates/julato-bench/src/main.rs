//! `julato-bench`: benchmarks of Julato, each figure printed beside a
//! baseline measured in the same run on the same machine.
//!
//! ```text
//! cargo build --release -p julato-cli -p julato-bench
//! target/release/julato-bench [suite] [options]   # the whole suite, one table (see `suite`)
//! target/release/julato-bench history [options]   # long histories (see `history`)
//! target/release/julato-bench transfers [options] # transfer transactions beside single sends (see `transfers`)
//! target/release/julato-bench hostile [options]   # a process's latency while hostile guests run (see `hostile`)
//! target/release/julato-bench soak [options]      # minutes at 80% of the maximum rate (see `soak`)
//! target/release/julato-bench sends [options]     # quick: Say sends beside GET /healthz
//! ```
//!
//! `sends` starts a release `julato` server on a temporary data folder,
//! deploys the `counter` example, and drives it with an async HTTP load
//! generator on loopback, beside the same server's `GET /healthz`, the
//! cheapest request it answers.

mod flights;
mod history;
mod hostile;
mod peers;
mod soak;
mod suite;
mod transfers;

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};

/// Longest wait for the server to print its address.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest wait for one answer of the suite and history modes, whose bulk
/// requests of many events take a while.
const BULK_REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Bulk requests in flight, so the server parses one while its shards apply
/// the other.
const BULK_IN_FLIGHT: usize = 2;
/// Most events the server takes in one bulk request (`MAX_BULK_EVENTS` of
/// `julato-server`).
const MAX_BULK_EVENTS: u64 = 100_000;

/// Benchmarks of Julato, each figure beside a baseline measured in the same run.
#[derive(Debug, Parser)]
#[command(name = "julato-bench", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    mode: Option<Mode>,
    /// With no mode given: the options of `suite`.
    #[command(flatten)]
    suite: suite::Options,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// The whole suite, one table (the default; see BENCHMARKS.md).
    Suite(suite::Options),
    /// Rehydration, time travel and restart with long histories.
    History(history::Options),
    /// The quick send benchmark: counter sends beside GET /healthz.
    Sends(Options),
    /// Two-account transfer transactions per second beside single sends per second.
    Transfers(transfers::Options),
    /// A well-behaved process's latency while hostile guests run, beside it alone.
    Hostile(hostile::Options),
    /// Minutes at a steady share of the maximum send rate: latency, errors, memory.
    Soak(soak::Options),
}

/// Where the julato binary is, for every mode.
#[derive(Debug, clap::Args)]
struct Paths {
    /// The julato binary to serve.
    #[arg(long, default_value_os_t = workspace_root().join("target/release/julato"))]
    julato: PathBuf,
}

/// Options of `julato-bench sends`.
#[derive(Debug, clap::Args)]
struct Options {
    #[command(flatten)]
    paths: Paths,
    /// The counter component.
    #[arg(long, default_value_os_t = workspace_root().join("target/functions/counter.wasm"))]
    counter: PathBuf,
    /// Connections kept busy at once.
    #[arg(long, default_value_t = 64, value_parser = positive)]
    concurrency: usize,
    /// Measured seconds per workload.
    #[arg(long, default_value_t = 5.0, value_parser = positive_seconds)]
    seconds: f64,
    /// Unmeasured seconds before each workload.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Counter processes the sends are spread over.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    processes: u64,
}

/// A count that must be at least one.
fn positive(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A number of seconds that must be more than zero.
fn positive_seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(s),
        Ok(_) => Err("must be a number of seconds above 0".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Fails with a hint to build first when a file the benchmark needs is missing.
fn require_files(files: &[(&str, &PathBuf)]) -> anyhow::Result<()> {
    for (what, path) in files {
        if !path.is_file() {
            bail!(
                "no {what} at {}: build it first (`cargo build --release -p julato-cli`, \
                 `make functions`)",
                path.display()
            );
        }
    }
    Ok(())
}

fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// The server under test: a child process on a data folder, temporary unless
/// the caller keeps it.
struct Server {
    child: Child,
    url: String,
    stderr: Arc<Mutex<VecDeque<String>>>,
    _data: Option<tempfile::TempDir>,
}

impl Server {
    fn start(binary: &Path) -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("julato-bench-").tempdir()?;
        let dir = data.path().to_path_buf();
        Self::start_in(binary, &dir, &[], Some(data))
    }

    /// Serves `dir` with `extra` arguments to `julato serve`; returns once the
    /// server has printed its address. `owned` is removed when the server is
    /// dropped.
    fn start_in(
        binary: &Path,
        dir: &Path,
        extra: &[String],
        owned: Option<tempfile::TempDir>,
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary)
            .arg("serve")
            .arg("--data")
            .arg(dir)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let pipe = child.stderr.take().context("the server's stderr")?;
        let stderr: Arc<Mutex<VecDeque<String>>> = Arc::default();
        let (found, address) = mpsc::channel();
        let lines = stderr.clone();
        // Drains stderr for the server's whole life; keeps the last lines.
        std::thread::spawn(move || {
            let mut found = Some(found);
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find("julato listening on ")
                    && let Some(tx) = found.take()
                {
                    let _ = tx.send(line[at + "julato listening on ".len()..].trim().to_owned());
                }
                let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                if lines.len() == 50 {
                    lines.pop_front();
                }
                lines.push_back(line);
            }
        });
        let mut server = Server { child, url: String::new(), stderr, _data: owned };
        server.url = address.recv_timeout(START_TIMEOUT).map_err(|e| {
            anyhow!("the server did not print its address ({e}):\n{}", server.last_lines())
        })?;
        if !server.url.starts_with("http://127.0.0.1:") {
            bail!("the server listens on {}, not on loopback", server.url);
        }
        Ok(server)
    }

    fn last_lines(&self) -> String {
        let lines = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// SIGTERM, and waits a while for a graceful exit.
    fn stop(mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("the server did not stop within 30 s of SIGTERM; killing it");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What one workload measured.
struct Measured {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    elapsed: Duration,
    /// Latencies of the successful requests, in microseconds, sorted.
    latencies: Vec<u32>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// A latency percentile in milliseconds.
    fn percentile_ms(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return f64::NAN;
        }
        let rank = ((self.latencies.len() - 1) as f64 * p).round() as usize;
        f64::from(self.latencies[rank]) / 1000.0
    }
}

/// Builds the `n`-th request of a workload.
type MakeRequest = Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// Keeps `concurrency` requests in flight for `duration`, each task sending its
/// next request as soon as the previous one is answered.
async fn load(
    client: &reqwest::Client,
    concurrency: usize,
    duration: Duration,
    counter: &Arc<AtomicU64>,
    make: &MakeRequest,
) -> Measured {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, counter, make) = (client.clone(), counter.clone(), make.clone());
            tokio::spawn(async move {
                let (mut ok, mut errors, mut first_error) = (0u64, 0u64, None);
                let mut latencies = Vec::with_capacity(16 * 1024);
                while Instant::now() < deadline {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    let sent = Instant::now();
                    let outcome = match make(&client, n).send().await {
                        Ok(response) => {
                            let status = response.status();
                            match response.bytes().await {
                                Ok(_) if status.is_success() => Ok(()),
                                Ok(body) => Err(format!(
                                    "{status}: {}",
                                    String::from_utf8_lossy(&body[..body.len().min(300)])
                                )),
                                Err(e) => Err(e.to_string()),
                            }
                        }
                        Err(e) => Err(e.to_string()),
                    };
                    match outcome {
                        Ok(()) => {
                            ok += 1;
                            let micros = sent.elapsed().as_micros();
                            latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                        }
                        Err(error) => {
                            errors += 1;
                            first_error.get_or_insert(error);
                        }
                    }
                }
                (ok, errors, first_error, latencies)
            })
        })
        .collect();

    let mut measured = Measured {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latencies: vec![],
    };
    for task in tasks {
        match task.await {
            Ok((ok, errors, first_error, latencies)) => {
                measured.ok += ok;
                measured.errors += errors;
                if measured.first_error.is_none() {
                    measured.first_error = first_error;
                }
                measured.latencies.extend(latencies);
            }
            Err(e) => {
                measured.errors += 1;
                measured.first_error.get_or_insert(format!("a load task failed: {e}"));
            }
        }
    }
    measured.elapsed = started.elapsed();
    measured.latencies.sort_unstable();
    measured
}

/// Warms up, then measures one workload; reports errors on stderr.
async fn workload(
    name: &str,
    client: &reqwest::Client,
    options: &Options,
    counter: &Arc<AtomicU64>,
    make: MakeRequest,
) -> (Measured, u64) {
    let mut answered = 0;
    if options.warmup > 0.0 {
        let warm = Duration::from_secs_f64(options.warmup);
        let warmed = load(client, options.concurrency, warm, counter, &make).await;
        answered += warmed.ok;
    }
    let measured =
        load(client, options.concurrency, Duration::from_secs_f64(options.seconds), counter, &make)
            .await;
    answered += measured.ok;
    eprintln!(
        "{name}: {} answered in {:.2?}, {} errors{}",
        measured.ok,
        measured.elapsed,
        measured.errors,
        measured.first_error.as_deref().map(|e| format!(" (first: {e})")).unwrap_or_default()
    );
    (measured, answered)
}

async fn get_json(client: &reqwest::Client, url: &str) -> anyhow::Result<Value> {
    let response = client.get(url).send().await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("GET {url}: {status}: {body}");
    }
    Ok(body)
}

/// Every process of a function with its version.
async fn versions(client: &reqwest::Client, base: &str, function: &str) -> anyhow::Result<u64> {
    let (mut total, mut after) = (0u64, None::<String>);
    loop {
        let mut url = format!("{base}/v1/functions/{function}/processes?limit=1000");
        if let Some(after) = &after {
            url.push_str(&format!("&after={after}"));
        }
        let page = get_json(client, &url).await?;
        for process in page["processes"].as_array().into_iter().flatten() {
            total += process["version"].as_u64().unwrap_or(0);
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok(total),
        }
    }
}

fn ratio(figure: f64, baseline: f64) -> String {
    if baseline > 0.0 && figure.is_finite() {
        format!("{:.2}", figure / baseline)
    } else {
        "-".into()
    }
}

fn print_table(rows: &[[String; 4]]) {
    let header = ["workload", "figure", "baseline", "ratio"].map(String::from);
    let mut widths = [0usize; 4];
    for row in std::iter::once(&header).chain(rows) {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |row: &[String; 4]| {
        format!(
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:>w3$} |",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        )
    };
    let rule = format!(
        "|{}|{}|{}|{}|",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 2),
        "-".repeat(widths[2] + 2),
        "-".repeat(widths[3] + 2)
    );
    println!("{}", line(&header));
    println!("{rule}");
    for row in rows {
        println!("{}", line(row));
    }
}

async fn run(options: Options) -> anyhow::Result<()> {
    let server = Server::start(&options.paths.julato)?;
    let base = server.url.clone();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "julato-bench: {} on {base}, {} connections, {} s per workload after {} s warmup, \
         {cores} cores shared by server and load generator",
        options.paths.julato.display(),
        options.concurrency,
        options.seconds,
        options.warmup
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_max_idle_per_host(options.concurrency)
        .tcp_nodelay(true)
        .build()?;

    let component = std::fs::read(&options.counter)
        .with_context(|| format!("reading {}", options.counter.display()))?;
    let deployed =
        client.put(format!("{base}/v1/functions/counter")).body(component).send().await?;
    if deployed.status().as_u16() != 201 {
        bail!("deploying counter: {} {}", deployed.status(), deployed.text().await?);
    }

    // (a) The baseline: the trivial endpoint of the same server.
    let counter = Arc::new(AtomicU64::new(0));
    let health_url = format!("{base}/healthz");
    let health: MakeRequest = Arc::new(move |client, _| client.get(&health_url));
    let (health, _) = workload("GET /healthz", &client, &options, &counter, health).await;

    // (b) Single sends of `Say`, round robin over the processes.
    let counter = Arc::new(AtomicU64::new(0));
    let processes = options.processes;
    let base_for_say = base.clone();
    let body = json!({ "type": "Say", "data": { "text": "bench" } }).to_string();
    let say: MakeRequest = Arc::new(move |client, n| {
        client
            .post(format!(
                "{base_for_say}/v1/functions/counter/processes/p{}/events",
                n % processes
            ))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
    });
    let say_name = format!("Say send ({processes} processes)");
    let (say, acknowledged) = workload(&say_name, &client, &options, &counter, say).await;

    // Sanity: the store holds at least every acknowledged event.
    let stored = versions(&client, &base, "counter").await?;
    let managers = get_json(&client, &format!("{base}/v1/managers")).await?;
    let (fsyncs, commits) =
        (managers["store"]["fsyncs"].as_u64(), managers["store"]["commits"].as_u64());
    server.stop();

    let rows = [
        [
            "GET /healthz (baseline)".to_owned(),
            format!("{:.0} req/s", health.rate()),
            format!("{:.0} req/s", health.rate()),
            "1.00".to_owned(),
        ],
        [
            say_name.clone(),
            format!("{:.0} events/s", say.rate()),
            format!("{:.0} req/s", health.rate()),
            ratio(say.rate(), health.rate()),
        ],
        [
            "Say latency p50".to_owned(),
            format!("{:.2} ms", say.percentile_ms(0.50)),
            format!("{:.2} ms", health.percentile_ms(0.50)),
            ratio(say.percentile_ms(0.50), health.percentile_ms(0.50)),
        ],
        [
            "Say latency p99".to_owned(),
            format!("{:.2} ms", say.percentile_ms(0.99)),
            format!("{:.2} ms", health.percentile_ms(0.99)),
            ratio(say.percentile_ms(0.99), health.percentile_ms(0.99)),
        ],
    ];
    print_table(&rows);
    println!();
    println!(
        "{} connections, {:.1} s measured per workload; errors: healthz {}, Say {}",
        options.concurrency, options.seconds, health.errors, say.errors
    );
    if let (Some(fsyncs), Some(commits)) = (fsyncs, commits) {
        let group = if fsyncs > 0 { commits as f64 / fsyncs as f64 } else { 0.0 };
        println!("store: {commits} commits in {fsyncs} fsyncs ({group:.1} commits per fsync)");
    }
    println!("check: {stored} events stored, {acknowledged} acknowledged");
    if stored < acknowledged {
        bail!("the store holds fewer events ({stored}) than were acknowledged ({acknowledged})");
    }
    if health.ok == 0 || say.ok == 0 {
        bail!("a workload got no successful answer");
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.mode.unwrap_or(Mode::Suite(cli.suite)) {
        Mode::Suite(options) => suite::main(options),
        Mode::History(options) => history::main(options),
        Mode::Transfers(options) => transfers::main(options),
        Mode::Hostile(options) => hostile::main(options),
        Mode::Soak(options) => soak::main(options),
        Mode::Sends(options) => require_files(&[
            ("julato binary", &options.paths.julato),
            ("component", &options.counter),
        ])
        .and_then(|()| {
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(run(options))
        }),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("julato-bench: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
