//! `julato-bench hostile`: the latency of a well-behaved process while hostile
//! guests run on the same server, beside the same load with no hostile guest,
//! measured in the same run.
//!
//! One release `julato serve` on a temporary data folder with its default
//! budgets (fuel, wall clock, memory, output sizes); `counter` and `hostile`
//! are deployed. Each phase runs `--warmup` seconds unmeasured, then
//! `--seconds` measured:
//!
//! 1. alone: `Say` sends to `counter` at a fixed `--rate` (an open-loop load,
//!    each send timed from when it was due), spread over `--processes`;
//! 2. with hostile guests: the same load while `--hostile-connections`
//!    connections keep sending, each as soon as its previous one is answered,
//!    `Spin` (an endless loop), `Grow` (a memory bomb), `Recurse`, `HugeState`,
//!    `ManyEmits` and `Panic` to processes of `hostile`, in turn.
//!
//! It prints p50 and p99 of the counter's sends, the rate achieved and the
//! hostile events refused per second, each phase beside the other. Every
//! counter send must be answered 2xx and every hostile event refused with its
//! own code (counted by code); afterwards the store must hold exactly the
//! counter's acknowledged events and no event of `hostile`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use anyhow::{Context, ensure};
use comfy_table::{CellAlignment, Table, presets::ASCII_MARKDOWN};
use serde_json::json;

use crate::history::{self, Api, load_average};
use crate::suite::{self, MakeRequest, Measured, Timing, ms2, per_s, ratio, x};
use crate::{REQUEST_TIMEOUT, Server};

/// Counter sends that may be unanswered at once before the generator skips one.
const IN_FLIGHT: usize = 4096;

/// The hostile events, in the order each connection sends them, with the code
/// each must be refused with under the server's default budgets.
const HOSTILE: [(&str, &str, &str); 6] = [
    ("Spin", "{}", "422 fuel_exhausted"),
    ("Grow", r#"{"mib": 1024}"#, "422 memory_limit_exceeded"),
    ("Recurse", "{}", "422 stack_overflow"),
    ("HugeState", r#"{"bytes": 2000000}"#, "422 state_too_large"),
    ("ManyEmits", r#"{"count": 1000}"#, "422 too_many_emits"),
    ("Panic", "{}", "422 handler_trapped"),
];

/// Hostile processes each event type is spread over.
const HOSTILE_KEYS: u64 = 64;

/// Options of `julato-bench hostile`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    paths: crate::Paths,
    /// The folder with the components counter.wasm and hostile.wasm.
    #[arg(long, default_value_os_t = crate::workspace_root().join("target/functions"))]
    functions: PathBuf,
    /// Counter sends per second, in both phases.
    #[arg(long, default_value_t = 1000.0, value_parser = crate::positive_seconds)]
    rate: f64,
    /// Counter processes the sends are spread over.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    processes: u64,
    /// Connections that keep sending hostile events.
    #[arg(long, default_value_t = 4, value_parser = crate::positive)]
    hostile_connections: usize,
    /// Measured seconds of each phase.
    #[arg(long, default_value_t = 10.0, value_parser = crate::positive_seconds)]
    seconds: f64,
    /// Unmeasured seconds before each phase.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
}

/// Runs `julato-bench hostile`.
pub(crate) fn main(options: Options) -> anyhow::Result<()> {
    crate::require_files(&[
        ("julato binary", &options.paths.julato),
        ("component", &options.functions.join("counter.wasm")),
        ("component", &options.functions.join("hostile.wasm")),
    ])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

/// The counter's `Say` sends, round robin over `processes`.
fn counter_sends(base: &str, processes: u64) -> MakeRequest {
    let base = base.to_owned();
    let body = json!({ "type": "Say", "data": { "text": "well-behaved" } }).to_string();
    Arc::new(move |client, n| {
        client
            .post(format!("{base}/v1/functions/counter/processes/p{}/events", n % processes))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
    })
}

/// The hostile events: request `n` sends the `n % 6`-th kind to one of
/// [`HOSTILE_KEYS`] processes of its kind.
fn hostile_sends(base: &str) -> MakeRequest {
    let base = base.to_owned();
    Arc::new(move |client, n| {
        let (event_type, data, _) = HOSTILE[n as usize % HOSTILE.len()];
        let key = (n / HOSTILE.len() as u64) % HOSTILE_KEYS;
        client
            .post(format!("{base}/v1/functions/hostile/processes/{event_type}-{key}/events"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(format!(r#"{{"type":"{event_type}","data":{data}}}"#))
    })
}

/// The counter's load for one phase: the warm-up, then the measured window.
async fn counter_phase(
    name: &str,
    client: &reqwest::Client,
    options: &Options,
    make: &MakeRequest,
) -> (Measured, Measured) {
    let next = Arc::new(AtomicU64::new(0));
    let paced = |seconds: f64| {
        let duration = Duration::from_secs_f64(seconds);
        suite::paced(client, options.rate, duration, duration, IN_FLIGHT, &next, make)
    };
    let (_, warm) = paced(options.warmup).await;
    let (_, measured) = paced(options.seconds).await;
    suite::report(name, &measured);
    (measured, warm)
}

/// Fails unless every counter send of a phase, warm-up included, succeeded.
fn all_answered(name: &str, measured: &Measured, warm: &Measured) -> anyhow::Result<()> {
    ensure!(
        measured.errors() == 0 && warm.errors() == 0,
        "{name}: counter sends failed: {} measured, {} in the warm-up",
        measured.error_summary(),
        warm.error_summary()
    );
    ensure!(measured.ok > 0, "{name}: no counter send was answered");
    Ok(())
}

/// Fails unless every hostile event was refused with its own code.
fn all_refused(measured: &Measured, warm: &Measured) -> anyhow::Result<()> {
    let expected: Vec<&str> = HOSTILE.iter().map(|(_, _, code)| *code).collect();
    for window in [measured, warm] {
        ensure!(window.ok == 0, "{} hostile events were accepted", window.ok);
        for (kind, n) in window.failures() {
            ensure!(
                expected.contains(&kind.as_str()),
                "{n} hostile events got {kind}, which is none of their codes ({})",
                window.error_summary()
            );
        }
    }
    Ok(())
}

async fn run(options: Options) -> anyhow::Result<()> {
    let load_before = load_average();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let counter = std::fs::read(options.functions.join("counter.wasm"))
        .with_context(|| format!("reading counter.wasm in {}", options.functions.display()))?;
    let hostile = std::fs::read(options.functions.join("hostile.wasm"))
        .with_context(|| format!("reading hostile.wasm in {}", options.functions.display()))?;
    let client = suite::http_client(IN_FLIGHT, REQUEST_TIMEOUT)?;
    let server = Server::start(&options.paths.julato)?;
    let base = server.url.clone();
    eprintln!(
        "julato-bench hostile: {} on {base} (default budgets); counter at {} sends/s over {} \
         processes, {} hostile connections; {} s measured after {} s warm-up per phase; {cores} \
         cores shared by server and load generator, load average {load_before}",
        options.paths.julato.display(),
        options.rate,
        options.processes,
        options.hostile_connections,
        options.seconds,
        options.warmup
    );
    let api = Api::new(&client, &server);
    api.deploy_counter(&counter).await?;
    let deployed = client.put(format!("{base}/v1/functions/hostile")).body(hostile).send().await?;
    ensure!(deployed.status().is_success(), "deploying hostile: {}", deployed.status());

    let sends = counter_sends(&base, options.processes);
    let (alone, alone_warm) = counter_phase("counter alone", &client, &options, &sends).await;

    let timing = Timing {
        connections: options.hostile_connections,
        seconds: options.seconds,
        warmup: options.warmup,
    };
    let ((beside, beside_warm), (hostile, hostile_warm)) = tokio::join!(
        counter_phase("counter beside hostile guests", &client, &options, &sends),
        suite::timed("hostile events", &client, timing, hostile_sends(&base)),
    );

    let acknowledged = alone.ok + alone_warm.ok + beside.ok + beside_warm.ok;
    let unanswered = alone.errors() + alone_warm.errors() + beside.errors() + beside_warm.errors();
    let stored = suite::check_stored(&api, "counter", acknowledged, unanswered).await;
    let (hostile_stored, hostile_processes) = suite::stored_events(&api, "hostile").await?;
    server.stop();

    let refused = hostile.errors() as f64 / hostile.elapsed().as_secs_f64();
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header([
        "counter sends",
        "alone",
        "beside hostile guests",
        "ratio",
    ]);
    table.add_row([
        "p50".to_owned(),
        ms2(alone.p(0.5)),
        ms2(beside.p(0.5)),
        x(ratio(beside.p(0.5), alone.p(0.5))),
    ]);
    table.add_row([
        "p99".to_owned(),
        ms2(alone.p(0.99)),
        ms2(beside.p(0.99)),
        x(ratio(beside.p(0.99), alone.p(0.99))),
    ]);
    table.add_row([
        "answered per second".to_owned(),
        per_s(alone.rate()),
        per_s(beside.rate()),
        x(ratio(beside.rate(), alone.rate())),
    ]);
    table.add_row([
        "hostile events refused per second".to_owned(),
        "-".to_owned(),
        per_s(refused),
        "-".to_owned(),
    ]);
    for column in 1..4 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{table}");
    println!();
    println!(
        "counter: {} sends/s, {} processes, each timed from when it was due; {} hostile \
         connections; {} s measured after {} s warm-up per phase; {cores} cores shared by server \
         and load generator; default budgets",
        history::rate(options.rate),
        history::grouped(options.processes),
        options.hostile_connections,
        options.seconds,
        options.warmup
    );
    let by_code: Vec<String> = hostile
        .failures()
        .iter()
        .map(|(kind, n)| format!("{kind} {}", history::grouped(*n)))
        .collect();
    println!("hostile events refused (measured window), by code: {}", by_code.join(", "));
    println!(
        "counter errors: alone {}, beside hostile guests {} (warm-ups: {}, {})",
        alone.error_summary(),
        beside.error_summary(),
        alone_warm.error_summary(),
        beside_warm.error_summary()
    );
    println!("load average: {load_before} at the start, {} at the end", load_average());

    all_answered("alone", &alone, &alone_warm)?;
    all_answered("beside hostile guests", &beside, &beside_warm)?;
    all_refused(&hostile, &hostile_warm)?;
    let stored = stored?;
    ensure!(
        hostile_stored == 0 && hostile_processes == 0,
        "the store holds {hostile_stored} events of hostile in {hostile_processes} processes"
    );
    println!(
        "checks: every counter send answered 2xx and stored ({} events for {} acknowledged); \
         every hostile event refused with its code, none stored",
        history::grouped(stored),
        history::grouped(acknowledged)
    );
    Ok(())
}
