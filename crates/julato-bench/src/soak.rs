//! `julato-bench soak`: a long run at a steady fraction of the maximum rate,
//! to show that latency, errors and the server's memory stay flat over time.
//!
//! One release `julato serve` on a temporary data folder (default flags), with
//! `counter` deployed. First the maximum rate is measured: `Say` sends spread
//! over `--processes`, from `--connections` connections each sending as soon
//! as its previous one is answered, for `--probe-seconds` after a warm-up.
//! Then, for `--minutes` (default 10), the same sends at `--fraction` (80%) of
//! that rate, paced: each is due at a fixed time and timed from then, however
//! the answers come (an open-loop load). The server's resident memory (`VmRSS`
//! of `/proc/PID/status`) is sampled every `--sample-seconds`.
//!
//! At the end it prints the target and achieved rates, p50 and p99, every
//! error by kind and count, and the memory at the start, at its peak and at
//! the end. Errors do not stop the run: they are counted and printed. The
//! store must then hold exactly the events acknowledged.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::Context;
use comfy_table::{CellAlignment, Table, presets::ASCII_MARKDOWN};
use serde_json::json;

use crate::history::{self, Api, grouped, load_average};
use crate::suite::{self, MakeRequest, Measured, Timing, ms2, per_s};
use crate::{REQUEST_TIMEOUT, Server};

/// Sends that may be unanswered at once before the generator skips one.
const IN_FLIGHT: usize = 4096;

/// Options of `julato-bench soak`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    paths: crate::Paths,
    /// The counter component.
    #[arg(long, default_value_os_t = crate::workspace_root().join("target/functions/counter.wasm"))]
    counter: PathBuf,
    /// Minutes of the steady load.
    #[arg(long, default_value_t = 10.0, value_parser = crate::positive_seconds)]
    minutes: f64,
    /// Share of the measured maximum rate the steady load runs at.
    #[arg(long, default_value_t = 0.8, value_parser = fraction)]
    fraction: f64,
    /// Measured seconds of the maximum-rate probe.
    #[arg(long, default_value_t = 10.0, value_parser = crate::positive_seconds)]
    probe_seconds: f64,
    /// Unmeasured seconds before the probe.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Connections of the maximum-rate probe.
    #[arg(long, default_value_t = 256, value_parser = crate::positive)]
    connections: usize,
    /// Counter processes the sends are spread over.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    processes: u64,
    /// Seconds between two samples of the server's memory.
    #[arg(long, default_value_t = 5.0, value_parser = crate::positive_seconds)]
    sample_seconds: f64,
    /// Seconds of each row of the timeline printed under the table.
    #[arg(long, default_value_t = 60.0, value_parser = crate::positive_seconds)]
    window_seconds: f64,
}

/// A share above 0 and at most 1.
fn fraction(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        Ok(_) => Err("must be above 0 and at most 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// Runs `julato-bench soak`.
pub(crate) fn main(options: Options) -> anyhow::Result<()> {
    crate::require_files(&[
        ("julato binary", &options.paths.julato),
        ("component", &options.counter),
    ])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

/// The resident memory of process `pid`, in KiB (`VmRSS` of its status).
fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no VmRSS in {path}"))
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Memory samples of the server: when (seconds into the steady load) and how
/// much (KiB).
#[derive(Default)]
struct Samples(Vec<(f64, u64)>);

impl Samples {
    fn start(&self) -> u64 {
        self.0.first().map_or(0, |s| s.1)
    }

    fn end(&self) -> u64 {
        self.0.last().map_or(0, |s| s.1)
    }

    fn peak(&self) -> (f64, u64) {
        self.0.iter().copied().max_by_key(|s| s.1).unwrap_or_default()
    }

    /// The sample nearest to `at` seconds.
    fn at(&self, at: f64) -> u64 {
        let distance = |s: &(f64, u64)| (s.0 - at).abs();
        self.0.iter().min_by(|a, b| distance(a).total_cmp(&distance(b))).map_or(0, |s| s.1)
    }

    /// About `count` samples spread over the run, for a one-line timeline.
    fn timeline(&self, count: usize) -> String {
        let step = self.0.len().div_ceil(count).max(1);
        let mut picked: Vec<(f64, u64)> = self.0.iter().copied().step_by(step).collect();
        if let Some(last) = self.0.last()
            && picked.last() != Some(last)
        {
            picked.push(*last);
        }
        let parts: Vec<String> =
            picked.iter().map(|(at, kib)| format!("{at:.0} s {}", mib(*kib))).collect();
        parts.join(", ")
    }
}

/// Samples the server's memory every `every` until `stop` is set; reports each
/// minute's sample on stderr.
async fn sample_memory(
    pid: u32,
    every: Duration,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Samples> {
    let started = Instant::now();
    let mut samples = Samples::default();
    let mut stop = stop;
    let mut reported = 0u64;
    loop {
        let at = started.elapsed().as_secs_f64();
        let kib = rss_kib(pid)?;
        samples.0.push((at, kib));
        if at as u64 / 60 >= reported {
            eprintln!("soak: {:.0} s in, server memory {}", at, mib(kib));
            reported = at as u64 / 60 + 1;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {
                samples.0.push((started.elapsed().as_secs_f64(), rss_kib(pid)?));
                return Ok(samples);
            }
        }
    }
}

/// One row per window of the steady load: its rate, latency, errors, and the
/// server's memory at its end.
fn timeline(windows: &[Measured], memory: &Samples) -> Table {
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header([
        "seconds",
        "answered/s",
        "p50",
        "p99",
        "errors",
        "server memory",
    ]);
    let mut from = 0.0;
    for window in windows {
        let to = from + window.elapsed().as_secs_f64();
        table.add_row([
            format!("{from:.0}-{to:.0}"),
            per_s(window.rate()),
            ms2(window.p(0.5)),
            ms2(window.p(0.99)),
            grouped(window.errors()),
            mib(memory.at(to)),
        ]);
        from = to;
    }
    for column in 1..6 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

async fn run(options: Options) -> anyhow::Result<()> {
    let load_before = load_average();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let component = std::fs::read(&options.counter)
        .with_context(|| format!("reading {}", options.counter.display()))?;
    let client = suite::http_client(IN_FLIGHT.max(options.connections), REQUEST_TIMEOUT)?;
    let server = Server::start(&options.paths.julato)?;
    let base = server.url.clone();
    let pid = server.child.id();
    eprintln!(
        "julato-bench soak: {} on {base}; {} min at {:.0}% of the maximum rate over {} \
         processes; {cores} cores shared by server and load generator, load average \
         {load_before}",
        options.paths.julato.display(),
        options.minutes,
        options.fraction * 100.0,
        grouped(options.processes)
    );
    let api = Api::new(&client, &server);
    api.deploy_counter(&component).await?;

    let (processes, send_base) = (options.processes, base.clone());
    let body = json!({ "type": "Say", "data": { "text": "soak" } }).to_string();
    let say: MakeRequest = Arc::new(move |client, n| {
        client
            .post(format!("{send_base}/v1/functions/counter/processes/p{}/events", n % processes))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
    });

    let timing = Timing {
        connections: options.connections,
        seconds: options.probe_seconds,
        warmup: options.warmup,
    };
    let (probe, probe_warm) = suite::timed("maximum rate", &client, timing, say.clone()).await;
    let maximum = probe.rate();
    let target = maximum * options.fraction;
    anyhow::ensure!(target > 0.0, "the probe got no answer: {}", probe.error_summary());
    eprintln!(
        "soak: {} sends/s for {} min ({:.0}% of {}/s)",
        history::rate(target),
        options.minutes,
        options.fraction * 100.0,
        history::rate(maximum)
    );

    let (stop, stopped) = tokio::sync::watch::channel(false);
    let every = Duration::from_secs_f64(options.sample_seconds);
    let sampler = tokio::spawn(sample_memory(pid, every, stopped));
    let next = Arc::new(AtomicU64::new(0));
    let duration = Duration::from_secs_f64(options.minutes * 60.0);
    let window = Duration::from_secs_f64(options.window_seconds);
    let (windows, soak) =
        suite::paced(&client, target, duration, window, IN_FLIGHT, &next, &say).await;
    let _ = stop.send(true);
    let memory = sampler.await.context("the memory sampler")??;
    suite::report("soak", &soak);

    let acknowledged = probe.ok + probe_warm.ok + soak.ok;
    let unanswered = probe.errors() + probe_warm.errors() + soak.errors();
    let stored = suite::check_stored(&api, "counter", acknowledged, unanswered).await;
    server.stop();

    let (peak_at, peak) = memory.peak();
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header(["soak", "figure"]);
    let rows = [
        (
            format!(
                "maximum rate ({} connections, {} s)",
                options.connections, options.probe_seconds
            ),
            per_s(maximum),
        ),
        (format!("target rate ({:.0}% of it)", options.fraction * 100.0), per_s(target)),
        (format!("achieved rate ({} min)", options.minutes), per_s(soak.rate())),
        ("answered".to_owned(), grouped(soak.ok)),
        ("p50".to_owned(), ms2(soak.p(0.5))),
        ("p99".to_owned(), ms2(soak.p(0.99))),
        ("p99.9".to_owned(), ms2(soak.p(0.999))),
        ("max".to_owned(), ms2(soak.p(1.0))),
        ("errors".to_owned(), grouped(soak.errors())),
        ("server memory at the start".to_owned(), mib(memory.start())),
        (format!("server memory at its peak ({peak_at:.0} s in)"), mib(peak)),
        ("server memory at the end".to_owned(), mib(memory.end())),
    ];
    for (name, figure) in rows {
        table.add_row([name, figure]);
    }
    if let Some(column) = table.column_mut(1) {
        column.set_cell_alignment(CellAlignment::Right);
    }
    println!("{table}");
    println!();
    println!(
        "counter: Say sends over {} processes, each timed from when it was due; {cores} cores \
         shared by server and load generator",
        grouped(options.processes)
    );
    if soak.errors() == 0 {
        println!("errors: none");
    } else {
        println!("errors by kind:");
        for (kind, n) in soak.failures() {
            println!("  {kind}: {}", grouped(n));
        }
        println!("  first: {}", soak.first_error().unwrap_or("?"));
    }
    println!("probe errors: {} (warm-up: {})", probe.error_summary(), probe_warm.error_summary());
    println!();
    println!("{}", timeline(&windows, &memory));
    println!();
    println!("server memory (VmRSS): {}", memory.timeline(10));
    println!("load average: {load_before} at the start, {} at the end", load_average());
    let stored = stored?;
    println!(
        "check: the store holds {} counter events for {} acknowledged",
        grouped(stored),
        grouped(acknowledged)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_samples_give_start_peak_end_and_the_nearest() {
        let samples = Samples(vec![(0.0, 100), (5.0, 300), (10.0, 200), (10.4, 250)]);
        assert_eq!((samples.start(), samples.end()), (100, 250));
        assert_eq!(samples.peak(), (5.0, 300));
        assert_eq!(samples.at(4.0), 300);
        assert_eq!(samples.at(10.1), 200);
        assert_eq!(samples.timeline(2), "0 s 0.1 MiB, 10 s 0.2 MiB, 10 s 0.2 MiB");
    }

    #[test]
    fn the_status_file_gives_the_resident_memory() {
        assert!(rss_kib(std::process::id()).unwrap() > 0);
        assert!(fraction("0.8").is_ok() && fraction("0").is_err() && fraction("1.5").is_err());
    }
}
