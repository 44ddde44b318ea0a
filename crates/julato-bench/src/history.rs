//! `julato-bench history`: what long histories cost, each figure printed
//! beside a baseline measured in the same run (nothing is asserted).
//!
//! - Rehydration: a process with 10,000 events is evicted
//!   (`POST /v1/managers/evict`), then read (`GET` its state) and sent one
//!   event; each beside the same request while the process is resident, the
//!   two interleaved round by round so that a change of machine load touches
//!   both alike.
//! - Time travel: `GET …?version=N` and `?seq=S` at random points (fixed seed)
//!   of a process with 1,000,000 events, beside the same on a process with
//!   10,000 events. A read replays from the newest snapshot at or before the
//!   point, so both should cost about the same. The long process is built
//!   with the bulk route (`POST /v1/events`); its rate is printed beside the
//!   rate of the build's first tenth.
//! - Restart: from starting `julato serve` on the data folder that holds the
//!   million events to its first answer of `/healthz` and of a state read,
//!   beside the same on a folder of 1,000 events.
//!
//! Everything goes over HTTP on loopback to release `julato serve` child
//! processes on temporary data folders, as the default benchmark does: the
//! figures include HTTP and JSON, as a client sees them.
//!
//! ```text
//! cargo build --release -p julato-cli -p julato-bench
//! target/release/julato-bench history [--big N] [--small N] [--rounds N] ...
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use comfy_table::{CellAlignment, Table, presets::ASCII_MARKDOWN};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{BULK_IN_FLIGHT, BULK_REQUEST_TIMEOUT, MAX_BULK_EVENTS, Server};

/// Unmeasured requests before each measured series.
const WARMUP: usize = 10;

/// Options of `julato-bench history`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    paths: crate::Paths,
    /// The counter component.
    #[arg(long, default_value_os_t = crate::workspace_root().join("target/functions/counter.wasm"))]
    counter: PathBuf,
    /// Events of the long process.
    #[arg(long, default_value_t = 1_000_000, value_parser = clap::value_parser!(u64).range(1..))]
    big: u64,
    /// Events of the short process, and of the rehydrated one.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    small: u64,
    /// Evict-then-read rounds.
    #[arg(long, default_value_t = 200, value_parser = crate::positive)]
    rounds: usize,
    /// Time-travel reads per process and per kind of point.
    #[arg(long, default_value_t = 500, value_parser = crate::positive)]
    reads: usize,
    /// Events per bulk request while building (at most the server's 100,000).
    #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=MAX_BULK_EVENTS))]
    batch: u64,
    /// Events in the small data folder of the restart benchmark.
    #[arg(long, default_value_t = 1_000, value_parser = clap::value_parser!(u64).range(1..))]
    restart_events: u64,
    /// Events in the middle data folder of the restart benchmark.
    #[arg(long, default_value_t = 250_000, value_parser = clap::value_parser!(u64).range(1..))]
    restart_middle: u64,
    /// Starts of each data folder.
    #[arg(long, default_value_t = 5, value_parser = crate::positive)]
    restarts: usize,
    /// `julato serve --snapshot-every`.
    #[arg(long, default_value_t = 100)]
    snapshot_every: u64,
    /// Seed of the random points.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// Runs the history benchmarks.
pub(crate) fn main(options: Options) -> anyhow::Result<()> {
    crate::require_files(&[
        ("julato binary", &options.paths.julato),
        ("component", &options.counter),
    ])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}
/// HTTP calls to one server, each timed from sending the request to having
/// read the whole answer.
#[derive(Clone)]
pub(crate) struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    pub(crate) fn new(client: &reqwest::Client, server: &Server) -> Self {
        Self { client: client.clone(), base: server.url.clone() }
    }

    async fn call(
        &self,
        what: &str,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<(Duration, Vec<u8>)> {
        let started = Instant::now();
        let response = request.send().await.with_context(|| what.to_owned())?;
        let status = response.status();
        let body = response.bytes().await.with_context(|| what.to_owned())?;
        let took = started.elapsed();
        if !status.is_success() {
            bail!("{what}: {status}: {}", String::from_utf8_lossy(&body[..body.len().min(500)]));
        }
        Ok((took, body.to_vec()))
    }

    pub(crate) async fn get(&self, path: &str) -> anyhow::Result<(Duration, Value)> {
        let what = format!("GET {path}");
        let (took, body) =
            self.call(&what, self.client.get(format!("{}{path}", self.base))).await?;
        Ok((took, parse(&what, &body)?))
    }

    pub(crate) async fn post(&self, path: &str, body: String) -> anyhow::Result<(Duration, Value)> {
        let what = format!("POST {path}");
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let (took, body) = self.call(&what, request).await?;
        Ok((took, parse(&what, &body)?))
    }

    pub(crate) async fn deploy_counter(&self, component: &[u8]) -> anyhow::Result<()> {
        let request =
            self.client.put(format!("{}/v1/functions/counter", self.base)).body(component.to_vec());
        self.call("deploying counter", request).await?;
        Ok(())
    }

    /// Sends `events` `Say` events to one process in one bulk request.
    async fn bulk(self, body: Vec<u8>, events: u64) -> anyhow::Result<u64> {
        #[derive(Deserialize)]
        struct Answer {
            accepted: u64,
            rejected: u64,
        }
        let request = self
            .client
            .post(format!("{}/v1/events", self.base))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        let (_, body) = self.call("POST /v1/events", request).await?;
        let answer: Answer = serde_json::from_slice(&body).context("the bulk answer")?;
        if answer.rejected > 0 || answer.accepted != events {
            let full = parse("the bulk answer", &body)?;
            let first = full["results"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r.get("error").is_some())
                .cloned()
                .unwrap_or(Value::Null);
            bail!(
                "a bulk request of {events} events: {} accepted, {} rejected (first: {first})",
                answer.accepted,
                answer.rejected
            );
        }
        Ok(answer.accepted)
    }

    /// The shards' counters, summed.
    async fn counters(&self) -> anyhow::Result<Counters> {
        let (_, managers) = self.get("/v1/managers").await?;
        let mut sum = Counters::default();
        for shard in managers["shards"].as_array().into_iter().flatten() {
            let field = |name: &str| shard[name].as_u64().unwrap_or(0);
            sum.resident += field("resident_processes");
            sum.snapshots += field("snapshots");
            sum.evicted += field("evicted");
            sum.rehydrated += field("rehydrated");
            sum.replayed += field("replayed");
        }
        Ok(sum)
    }
}

fn parse(what: &str, body: &[u8]) -> anyhow::Result<Value> {
    serde_json::from_slice(body).with_context(|| format!("{what}: the answer is not JSON"))
}

/// Counters of every shard, summed (see `GET /v1/managers`).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Counters {
    pub(crate) resident: u64,
    pub(crate) snapshots: u64,
    pub(crate) evicted: u64,
    pub(crate) rehydrated: u64,
    pub(crate) replayed: u64,
}

impl Counters {
    fn since(self, before: Counters) -> Counters {
        Counters {
            resident: self.resident,
            snapshots: self.snapshots - before.snapshots,
            evicted: self.evicted - before.evicted,
            rehydrated: self.rehydrated - before.rehydrated,
            replayed: self.replayed - before.replayed,
        }
    }
}

/// Latencies of one series.
#[derive(Default)]
pub(crate) struct Samples(Vec<Duration>);

impl Samples {
    fn push(&mut self, took: Duration) {
        self.0.push(took);
    }

    /// The `p` quantile (nearest rank), or zero without samples.
    pub(crate) fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.0.clone();
        sorted.sort_unstable();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let rank = ((sorted.len() - 1) as f64 * p).round() as usize;
        sorted[rank]
    }

    fn min(&self) -> Duration {
        self.0.iter().copied().min().unwrap_or_default()
    }

    fn max(&self) -> Duration {
        self.0.iter().copied().max().unwrap_or_default()
    }
}

/// Fixed-seed random numbers (splitmix64), so every run reads the same points.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.next() % (high - low + 1)
    }
}

fn state_path(key: &str) -> String {
    format!("/v1/functions/counter/processes/{key}")
}

/// Checks a counter read: it is at `version` (when given) and, since every
/// event was one `Say`, its state equals its version.
fn check_counter(answer: &Value, version: Option<u64>, what: &str) -> anyhow::Result<u64> {
    let got =
        answer["version"].as_u64().ok_or_else(|| anyhow!("{what}: no version in {answer}"))?;
    if let Some(version) = version {
        ensure!(got == version, "{what}: version {got}, expected {version}");
    }
    ensure!(
        answer["state"].as_u64() == Some(got),
        "{what}: state {} at version {got}",
        answer["state"]
    );
    Ok(got)
}

/// What one build measured.
pub(crate) struct Build {
    events: u64,
    elapsed: Duration,
    /// Events per second over the first and the last tenth of the build.
    first_tenth: f64,
    last_tenth: f64,
}

impl Build {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// The body of a bulk request of `events` `Say` events to process `key`.
fn bulk_body(key: &str, events: u64) -> Vec<u8> {
    let event =
        json!({ "function": "counter", "key": key, "type": "Say", "data": { "text": "h" } })
            .to_string();
    let mut body = String::with_capacity(16 + (event.len() + 1) * events as usize);
    body.push_str("{\"events\":[");
    for i in 0..events {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&event);
    }
    body.push_str("]}");
    body.into_bytes()
}

/// Appends `events` `Say` events to process `key` with the bulk route,
/// [`BULK_IN_FLIGHT`] requests of `batch` events in flight.
pub(crate) async fn build(api: &Api, key: &str, events: u64, batch: u64) -> anyhow::Result<Build> {
    let full = bulk_body(key, batch.min(events));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let (mut sent, mut done) = (0u64, 0u64);
    // When each request finished, with how many events were done by then.
    let mut marks: Vec<(u64, Duration)> = vec![(0, Duration::ZERO)];
    let mut next_report = events / 10;
    while done < events {
        while sent < events && tasks.len() < BULK_IN_FLIGHT {
            let n = batch.min(events - sent);
            let body = if n == batch.min(events) { full.clone() } else { bulk_body(key, n) };
            tasks.spawn(api.clone().bulk(body, n));
            sent += n;
        }
        let Some(finished) = tasks.join_next().await else { break };
        done += finished.context("a bulk request task failed")??;
        marks.push((done, started.elapsed()));
        if events >= 100_000 && done >= next_report {
            eprintln!(
                "  {key}: {done} of {events} events in {:.1?} ({:.0} events/s)",
                started.elapsed(),
                done as f64 / started.elapsed().as_secs_f64()
            );
            next_report += events / 10;
        }
    }
    let elapsed = started.elapsed();
    // Rates over the marks that bound the first and the last tenth of the events.
    let tenth = (events / 10).max(1);
    let rate = |from: (u64, Duration), to: (u64, Duration)| {
        (to.0 - from.0) as f64 / (to.1 - from.1).as_secs_f64().max(1e-9)
    };
    let first_end = marks.iter().copied().find(|(n, _)| *n >= tenth).unwrap_or((done, elapsed));
    let last_start =
        marks.iter().copied().rev().find(|(n, _)| *n <= events - tenth).unwrap_or(marks[0]);
    Ok(Build {
        events: done,
        elapsed,
        first_tenth: rate(marks[0], first_end),
        last_tenth: rate(last_start, (done, elapsed)),
    })
}

/// Time-travel latencies of one process.
#[derive(Default)]
struct TimeTravel {
    by_version: Samples,
    by_seq: Samples,
    /// Events the `?version` reads replay after their snapshot, summed: each
    /// version modulo the snapshot interval, since below its newest version
    /// such a process has only the periodic snapshots.
    after_snapshot: u64,
}

/// Reads the two processes at random versions and random seqs, alternating
/// between them so that both see the same machine.
async fn time_travel(
    api: &Api,
    processes: [(&str, u64); 2],
    options: &Options,
) -> anyhow::Result<[TimeTravel; 2]> {
    let mut random = Random(options.seed);
    // The seqs each process spans, for `?seq=` points.
    let mut spans = Vec::new();
    for (key, events) in processes {
        let (_, first) = api.get(&format!("{}?version=1", state_path(key))).await?;
        let (_, last) = api.get(&format!("{}?version={events}", state_path(key))).await?;
        let seq = |v: &Value| v["seq"].as_u64().ok_or_else(|| anyhow!("no seq in {v}"));
        spans.push((seq(&first)?, seq(&last)?));
    }
    let mut results = [TimeTravel::default(), TimeTravel::default()];
    for round in 0..WARMUP + options.reads {
        let measured = round >= WARMUP;
        for (i, (key, events)) in processes.into_iter().enumerate() {
            let version = random.between(1, events);
            let path = format!("{}?version={version}", state_path(key));
            let (took, answer) = api.get(&path).await?;
            check_counter(&answer, Some(version), &path)?;
            let (low, high) = spans[i];
            let seq = random.between(low, high);
            let path = format!("{}?seq={seq}", state_path(key));
            let (took_seq, answer) = api.get(&path).await?;
            check_counter(&answer, None, &path)?;
            let at = answer["seq"].as_u64().unwrap_or(u64::MAX);
            ensure!(at <= seq, "{path}: answered the version made at seq {at}");
            if measured {
                results[i].by_version.push(took);
                results[i].by_seq.push(took_seq);
                results[i].after_snapshot += version % options.snapshot_every.max(1);
            }
        }
    }
    Ok(results)
}

/// Rehydration latencies: after an eviction and while resident.
#[derive(Default)]
pub(crate) struct Rehydration {
    pub(crate) cold_read: Samples,
    pub(crate) warm_read: Samples,
    pub(crate) cold_send: Samples,
    pub(crate) warm_send: Samples,
    pub(crate) counters: Counters,
    pub(crate) evicted_answers: u64,
}

/// Rounds of: evict everything; read (rebuilt, not resident); send one event
/// (rehydrates into the shard); read again (resident); send again (resident).
pub(crate) async fn rehydration(
    api: &Api,
    key: &str,
    mut version: u64,
    rounds: usize,
) -> anyhow::Result<(Rehydration, u64)> {
    let mut result = Rehydration::default();
    let read_path = state_path(key);
    let send_path = format!("{read_path}/events");
    let event = json!({ "type": "Say", "data": { "text": "h" } }).to_string();
    let mut before = api.counters().await?;
    for round in 0..WARMUP + rounds {
        if round == WARMUP {
            before = api.counters().await?;
        }
        let measured = round >= WARMUP;
        let (_, evicted) = api.post("/v1/managers/evict", String::new()).await?;
        let (cold_read, answer) = api.get(&read_path).await?;
        check_counter(&answer, Some(version), "read after eviction")?;
        version += 1;
        let (cold_send, answer) = api.post(&send_path, event.clone()).await?;
        check_counter(&answer, Some(version), "send after eviction")?;
        let (warm_read, answer) = api.get(&read_path).await?;
        check_counter(&answer, Some(version), "read while resident")?;
        version += 1;
        let (warm_send, answer) = api.post(&send_path, event.clone()).await?;
        check_counter(&answer, Some(version), "send while resident")?;
        if measured {
            result.evicted_answers += evicted["evicted"].as_u64().unwrap_or(0);
            result.cold_read.push(cold_read);
            result.cold_send.push(cold_send);
            result.warm_read.push(warm_read);
            result.warm_send.push(warm_send);
        }
    }
    result.counters = api.counters().await?.since(before);
    Ok((result, version))
}

/// One start of `julato serve` on an existing data folder.
struct Start {
    healthz: Duration,
    first_read: Duration,
}

async fn restart(
    client: &reqwest::Client,
    options: &Options,
    dir: &Path,
    key: &str,
    version: u64,
) -> anyhow::Result<Start> {
    let started = Instant::now();
    let server = Server::start_in(&options.paths.julato, dir, &serve_flags(options), None)?;
    let api = Api::new(client, &server);
    let healthz = loop {
        if api.get("/healthz").await.is_ok() {
            break started.elapsed();
        }
        ensure!(started.elapsed() < Duration::from_secs(60), "no /healthz within 60 s");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let (_, answer) = api.get(&state_path(key)).await?;
    let first_read = started.elapsed();
    check_counter(&answer, Some(version), "the first read after a restart")?;
    server.stop();
    Ok(Start { healthz, first_read })
}

fn serve_flags(options: &Options) -> Vec<String> {
    // Idle eviction off, so a process stays resident between the requests of
    // one round unless the benchmark evicts it.
    vec![
        "--snapshot-every".into(),
        options.snapshot_every.to_string(),
        "--idle-evict-secs".into(),
        "0".into(),
    ]
}

/// Bytes on disk of every file under `dir` (allocated blocks: the store's
/// journal is a preallocated, mostly sparse file).
fn folder_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else { return 0 };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => folder_bytes(&entry.path()),
            Ok(_) => entry.metadata().map_or(0, |m| allocated(&m)),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(unix)]
fn allocated(metadata: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    metadata.blocks() * 512
}

#[cfg(not(unix))]
fn allocated(metadata: &std::fs::Metadata) -> u64 {
    metadata.len()
}

pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|text| text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// `1234567` as `1,234,567`.
pub(crate) fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Events per second, rounded and grouped.
pub(crate) fn rate(per_second: f64) -> String {
    if per_second.is_finite() { grouped(per_second.round() as u64) } else { "-".into() }
}

fn ratio(figure: f64, baseline: f64) -> String {
    if baseline > 0.0 && figure.is_finite() {
        format!("{:.2}", figure / baseline)
    } else {
        "-".into()
    }
}

fn ratio_of(figure: Duration, baseline: Duration) -> String {
    ratio(figure.as_secs_f64(), baseline.as_secs_f64())
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort_unstable();
    values.get(values.len() / 2).copied().unwrap_or_default()
}

async fn run(options: Options) -> anyhow::Result<()> {
    let began = Instant::now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load_before = load_average();
    eprintln!(
        "julato-bench history: HTTP on loopback to {} serve {} (child processes), \
         {cores} cores shared by servers and client, load average {load_before}",
        options.paths.julato.display(),
        serve_flags(&options).join(" ")
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(BULK_REQUEST_TIMEOUT)
        .tcp_nodelay(true)
        .build()?;
    let component = std::fs::read(&options.counter)
        .with_context(|| format!("reading {}", options.counter.display()))?;

    // The folder with the long process; kept for the restart benchmark.
    let big_dir = tempfile::Builder::new().prefix("julato-bench-history-").tempdir()?;
    let server =
        Server::start_in(&options.paths.julato, big_dir.path(), &serve_flags(&options), None)?;
    let api = Api::new(&client, &server);
    api.deploy_counter(&component).await?;

    eprintln!("building: {} + {} + {} events", options.small, options.small, options.big);
    build(&api, "short", options.small, options.batch).await?;
    build(&api, "rehydrate", options.small, options.batch).await?;
    let long = build(&api, "long", options.big, options.batch).await?;
    eprintln!(
        "built {} events of `long` in {:.1?} ({:.0} events/s)",
        long.events,
        long.elapsed,
        long.rate()
    );

    eprintln!("time travel: {} reads of each process at random versions and seqs", options.reads);
    let [travel_long, travel_short] =
        time_travel(&api, [("long", options.big), ("short", options.small)], &options).await?;

    eprintln!("rehydration: {} evict-then-read rounds", options.rounds);
    let (rehydrated, rehydrate_version) =
        rehydration(&api, "rehydrate", options.small, options.rounds).await?;

    // Every process is where it should be, and the folder's size.
    let (_, answer) = api.get(&state_path("long")).await?;
    check_counter(&answer, Some(options.big), "the long process")?;
    let big_events = options.big + options.small + rehydrate_version;
    server.stop();
    let big_bytes = folder_bytes(big_dir.path());

    // The small folder for the restart baseline.
    let small_dir = tempfile::Builder::new().prefix("julato-bench-history-").tempdir()?;
    let server =
        Server::start_in(&options.paths.julato, small_dir.path(), &serve_flags(&options), None)?;
    let small_api = Api::new(&client, &server);
    small_api.deploy_counter(&component).await?;
    build(&small_api, "short", options.restart_events, options.batch).await?;
    server.stop();
    let small_bytes = folder_bytes(small_dir.path());

    // A middle folder: past the store's journal bound, like the big one, so
    // the two show whether restart time still grows with the log.
    let middle_dir = tempfile::Builder::new().prefix("julato-bench-history-").tempdir()?;
    let server =
        Server::start_in(&options.paths.julato, middle_dir.path(), &serve_flags(&options), None)?;
    let middle_api = Api::new(&client, &server);
    middle_api.deploy_counter(&component).await?;
    build(&middle_api, "short", options.restart_middle, options.batch).await?;
    server.stop();

    eprintln!("restart: {} starts of each data folder, alternating", options.restarts);
    let (mut big_starts, mut middle_starts, mut small_starts) =
        (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..options.restarts {
        big_starts.push(restart(&client, &options, big_dir.path(), "long", options.big).await?);
        middle_starts.push(
            restart(&client, &options, middle_dir.path(), "short", options.restart_middle).await?,
        );
        small_starts.push(
            restart(&client, &options, small_dir.path(), "short", options.restart_events).await?,
        );
    }
    let healthz = |starts: &[Start]| median(starts.iter().map(|s| s.healthz).collect());
    let first_read = |starts: &[Start]| median(starts.iter().map(|s| s.first_read).collect());

    let mut rows: Vec<[String; 4]> = Vec::new();
    let big_label = grouped(options.big);
    let small_label = grouped(options.small);
    rows.push([
        format!("bulk build of a {big_label}-event process, events/s"),
        format!("{} (whole build, {:.1} s)", rate(long.rate()), long.elapsed.as_secs_f64()),
        format!("{} (first tenth)", rate(long.first_tenth)),
        ratio(long.rate(), long.first_tenth),
    ]);
    rows.push([
        "bulk build, last tenth vs first tenth, events/s".into(),
        rate(long.last_tenth),
        rate(long.first_tenth),
        ratio(long.last_tenth, long.first_tenth),
    ]);
    for (name, figure, baseline) in [
        ("GET state", &rehydrated.cold_read, &rehydrated.warm_read),
        ("send one event", &rehydrated.cold_send, &rehydrated.warm_send),
    ] {
        for (p, label) in [(0.50, "p50"), (0.99, "p99")] {
            rows.push([
                format!("{name} after eviction vs resident ({small_label} events), {label}"),
                ms(figure.percentile(p)),
                ms(baseline.percentile(p)),
                ratio_of(figure.percentile(p), baseline.percentile(p)),
            ]);
        }
    }
    for (name, pick) in [
        ("?version=random", (|t: &TimeTravel| &t.by_version) as fn(&TimeTravel) -> &Samples),
        ("?seq=random", |t: &TimeTravel| &t.by_seq),
    ] {
        for (p, label) in [(0.50, "p50"), (0.99, "p99")] {
            let (figure, baseline) = (pick(&travel_long), pick(&travel_short));
            rows.push([
                format!("time travel {name}, {big_label} vs {small_label} events, {label}"),
                ms(figure.percentile(p)),
                ms(baseline.percentile(p)),
                ratio_of(figure.percentile(p), baseline.percentile(p)),
            ]);
        }
    }
    let restart_events = grouped(options.restart_events);
    for (baseline_events, baseline_starts) in
        [(options.restart_middle, &middle_starts), (options.restart_events, &small_starts)]
    {
        for (name, figure, baseline) in [
            ("to /healthz", healthz(&big_starts), healthz(baseline_starts)),
            ("to first state read", first_read(&big_starts), first_read(baseline_starts)),
        ] {
            rows.push([
                format!(
                    "restart {name}, {} vs {} events, median of {}",
                    grouped(big_events),
                    grouped(baseline_events),
                    options.restarts
                ),
                ms(figure),
                ms(baseline),
                ratio_of(figure, baseline),
            ]);
        }
    }

    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header(["workload", "figure", "baseline", "ratio"]);
    for row in rows {
        table.add_row(row);
    }
    for column in 1..4 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{table}");
    println!();
    println!(
        "mode: HTTP on loopback to release `julato serve` child processes ({}), one request \
         at a time; {cores} cores shared by servers and client",
        serve_flags(&options).join(" ")
    );
    let c = rehydrated.counters;
    println!(
        "rehydration, {} measured rounds: evicted {} (answers said {}), snapshots written {}, \
         shard rehydrations {}, events replayed by them {}, resident processes at the end {}; \
         reads after eviction: {} to {}, resident reads: {} to {}",
        options.rounds,
        c.evicted,
        rehydrated.evicted_answers,
        c.snapshots,
        c.rehydrated,
        c.replayed,
        c.resident,
        ms(rehydrated.cold_read.min()),
        ms(rehydrated.cold_read.max()),
        ms(rehydrated.warm_read.min()),
        ms(rehydrated.warm_read.max()),
    );
    let mean_after = |t: &TimeTravel| t.after_snapshot as f64 / options.reads as f64;
    println!(
        "time travel: {} reads per process and kind, seed {}; events after the snapshot per \
         ?version read (version mod {}): mean {:.1} ({big_label}), {:.1} ({small_label}); \
         every answer checked",
        options.reads,
        options.seed,
        options.snapshot_every,
        mean_after(&travel_long),
        mean_after(&travel_short),
    );
    let spread = |starts: &[Start]| {
        let reads: Vec<Duration> = starts.iter().map(|s| s.first_read).collect();
        format!(
            "{} to {}",
            ms(reads.iter().copied().min().unwrap_or_default()),
            ms(reads.iter().copied().max().unwrap_or_default())
        )
    };
    println!(
        "restart: folders of {} events ({:.1} MiB) and {restart_events} events ({:.1} MiB); \
         first reads {} and {} (middle folder: {}); each start after a graceful stop \
         (SIGTERM); a start replays the store's unflushed journal, at most 64 MiB, so a \
         folder far smaller than that starts faster",
        grouped(big_events),
        big_bytes as f64 / f64::from(1 << 20),
        small_bytes as f64 / f64::from(1 << 20),
        spread(&big_starts),
        spread(&small_starts),
        spread(&middle_starts),
    );
    println!(
        "load average: {load_before} at the start, {} at the end; {:.0} s in all",
        load_average(),
        began.elapsed().as_secs_f64()
    );

    // What the counters must show, whatever the timings.
    ensure!(
        c.rehydrated == options.rounds as u64,
        "{} shard rehydrations for {} sends after eviction",
        c.rehydrated,
        options.rounds
    );
    if c.replayed > c.rehydrated * options.snapshot_every {
        bail!(
            "rehydration replayed {} events in {} rehydrations: more than the snapshot interval",
            c.replayed,
            c.rehydrated
        );
    }
    Ok(())
}
