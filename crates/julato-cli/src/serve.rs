//! `julato serve`: one node on the embedded store, until Ctrl-C or SIGTERM.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, ValueEnum};
use julato_server::serve;

use crate::access::{self, AccessArgs, LimitArgs};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Folder holding all of the node's data.
    #[arg(long, env = "JULATO_DATA", default_value = "julato-data")]
    data: PathBuf,
    /// Address to listen on.
    #[arg(long, env = "JULATO_LISTEN", default_value = "127.0.0.1:7700")]
    listen: String,
    /// Process-manager shards at start (default: four per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    shards: Option<u64>,
    /// Fewest shards the autoscaler keeps (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    min_shards: Option<u64>,
    /// Most shards the autoscaler runs (default: sixteen per core).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_shards: Option<u64>,
    /// How often the autoscaler looks at the shards, in milliseconds (0: never;
    /// the shard count then stays as started).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
    scale_interval_ms: u64,
    /// Fuel per handler invocation.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    fuel: Option<u64>,
    /// Wall-clock limit per handler invocation, in milliseconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    handler_timeout_ms: Option<u64>,
    /// Memory limit per handler instance, in MiB (a guest's linear memory
    /// is at most 4 GiB).
    #[arg(long, value_parser = clap::value_parser!(u64).range(4..=4096))]
    memory_mib: Option<u64>,
    /// Snapshot each process every N events (0: only on eviction and checkpoints).
    #[arg(long, default_value_t = 100)]
    snapshot_every: u64,
    /// Evict a process from memory after this many seconds without use (0: never).
    #[arg(long, default_value_t = 300.0)]
    idle_evict_secs: f64,
    /// MiB of hot process state all shards may hold before evicting the least
    /// recently used.
    #[arg(long, default_value_t = 512)]
    state_memory_mib: usize,
    /// Most emits between a client's event and a delivered one; an emit past
    /// it becomes a `hop_limit` dead letter.
    #[arg(long, default_value_t = 32)]
    max_hops: u32,
    /// On SIGTERM, seconds to finish the requests in flight before stopping
    /// without them (a second signal stops at once). The store is flushed
    /// either way.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(0..=3_600))]
    shutdown_grace_secs: u64,
    /// An interactive transaction idle this many seconds rolls back.
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    transaction_timeout_secs: u64,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    limits: LimitArgs,
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JULATO_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    init_logging(args.log_format);
    // Before the store opens, so that the groups it writes while recovering count.
    julato_server::install_metrics();
    let mut config = julato_coordinator::Config::new(&args.data);
    if let Some(shards) = args.shards {
        config.shards = shards as usize;
    }
    if let Some(min) = args.min_shards {
        config.scaling.min_shards = min as usize;
    }
    if let Some(max) = args.max_shards {
        config.scaling.max_shards = max as usize;
    }
    anyhow::ensure!(
        config.scaling.min_shards <= config.scaling.max_shards,
        "--min-shards {} is above --max-shards {}",
        config.scaling.min_shards,
        config.scaling.max_shards
    );
    if args.min_shards.is_some() || args.max_shards.is_some() {
        config.shards = config.shards.clamp(config.scaling.min_shards, config.scaling.max_shards);
    }
    config.scaling.interval = (args.scale_interval_ms > 0)
        .then(|| std::time::Duration::from_millis(args.scale_interval_ms));
    if let Some(fuel) = args.fuel {
        config.limits.fuel = fuel;
    }
    if let Some(ms) = args.handler_timeout_ms {
        config.limits.wall_time = std::time::Duration::from_millis(ms);
    }
    if let Some(mib) = args.memory_mib {
        config.limits.memory_bytes = (mib as usize) << 20;
    }
    config.snapshots = julato_core::SnapshotPolicy { every: args.snapshot_every };
    anyhow::ensure!(
        args.idle_evict_secs.is_finite() && args.idle_evict_secs >= 0.0,
        "--idle-evict-secs must be a number of seconds, 0 or more"
    );
    config.idle_eviction = if args.idle_evict_secs > 0.0 {
        Some(std::time::Duration::try_from_secs_f64(args.idle_evict_secs).map_err(|_| {
            anyhow::anyhow!("--idle-evict-secs {} is too long", args.idle_evict_secs)
        })?)
    } else {
        None
    };
    config.memory_budget = args.state_memory_mib << 20;
    config.max_hops = args.max_hops;
    config.transaction_timeout = std::time::Duration::from_secs(args.transaction_timeout_secs);
    args.limits.apply(&mut config);

    let tokens = args.access.tokens()?;
    access::check_exposure(&args.listen, &tokens)?;
    tracing::info!(
        admin_tokens = tokens.count(julato_server::Scope::Admin),
        client_tokens = tokens.count(julato_server::Scope::Client),
        rate_limit = ?args.access.rate_limit(),
        "API access"
    );
    let server = julato_server::Config {
        limits: args.limits.requests(),
        tokens,
        rate_limit: args.access.rate_limit(),
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("julato-http")
        .build()
        .context("starting the async runtime")?;
    let stopped = runtime.block_on(async move {
        let coordinator = Arc::new(
            julato_coordinator::Coordinator::open(config)
                .with_context(|| format!("opening the data folder `{}`", args.data.display()))?,
        );
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        // Scripts and tests wait for this line to learn the address.
        eprintln!("julato listening on http://{addr}");
        let (signalled, mut on_signal) = tokio::sync::watch::channel(false);
        let shutdown = async move {
            shutdown_signal().await;
            tracing::info!("shutting down: finishing requests in flight");
            let _ = signalled.send(true);
        };
        let grace = std::time::Duration::from_secs(args.shutdown_grace_secs);
        // Requests still unfinished after the grace period, or at a second
        // signal, are dropped: their clients get no answer, and nothing of
        // them is acknowledged that is not committed.
        let deadline = async move {
            let _ = on_signal.wait_for(|signalled| *signalled).await;
            tokio::select! {
                () = tokio::time::sleep(grace) => {
                    tracing::warn!(?grace, "requests still in flight after the grace period: stopping without them");
                }
                () = shutdown_signal() => {
                    tracing::warn!("a second signal: stopping without the requests in flight");
                }
            }
        };
        tokio::select! {
            served = serve(coordinator.clone(), listener, &server, shutdown) => {
                served.context("serving HTTP")?;
            }
            () = deadline => {}
        }
        let started = std::time::Instant::now();
        let flushing = coordinator.clone();
        match tokio::task::spawn_blocking(move || flushing.flush()).await {
            Ok(Ok(())) => tracing::info!(took = ?started.elapsed(), "store flushed"),
            Ok(Err(error)) => tracing::warn!(error = %error, "store not flushed; the next start replays its journal"),
            Err(error) => tracing::warn!(error = %error, "store flush did not finish"),
        }
        tracing::info!("stopped");
        Ok(())
    });
    // Handlers still running for requests dropped at the deadline end within
    // their own wall-time limit; do not wait on anything longer.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    stopped
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
