//! The `julato` binary: `serve` runs a node on the embedded store; every other
//! verb is a client of a running node's HTTP API. Data goes to stdout, progress
//! and diagnostics to stderr.

mod access;
mod client;
mod ingest;
mod output;
mod serve;
mod tx;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::Client;

/// Julato: stateful, event-sourced functions on WebAssembly.
#[derive(Debug, Parser)]
#[command(name = "julato", version, about)]
struct Cli {
    /// Address of a running Julato server.
    #[arg(long, global = true, env = "JULATO_URL", default_value = "http://127.0.0.1:7700")]
    url: String,
    /// Print the server's JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// API token sent as `Authorization: Bearer TOKEN`, for a server that has
    /// tokens configured.
    #[arg(long, global = true, env = "JULATO_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a Julato node on the embedded store.
    Serve(serve::ServeArgs),
    /// Deploy a function component as a new version.
    Deploy {
        /// Function name: lowercase letters, digits, `-` and `_`.
        name: String,
        /// The component's `.wasm` file.
        file: PathBuf,
    },
    /// Send one event to a process and print the answer.
    Send {
        /// The process, as FUNCTION/KEY.
        process: String,
        /// The event type, such as `Say`.
        event_type: String,
        /// The event data as JSON (default `null`).
        data: Option<String>,
        /// Send DATA as raw UTF-8 bytes instead of JSON.
        #[arg(long)]
        bytes: bool,
        /// Make retries of this send return the first answer.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Fail with a conflict unless the process is at this version.
        #[arg(long)]
        expected_version: Option<u64>,
        /// Apply the event only once the server has seen this token (from an
        /// earlier answer), so that it comes after what the token names.
        #[arg(long)]
        after: Option<String>,
    },
    /// Apply events as one transaction (all or none): `julato tx FILE`, or
    /// interactively with `tx begin`, `tx add`, `tx commit`, `tx rollback`.
    Tx(tx::TxArgs),
    /// Read several processes at one consistent cut of the log.
    Read {
        /// The processes, each as FUNCTION/KEY.
        #[arg(required = true)]
        processes: Vec<String>,
        /// Read only once the server has seen this token.
        #[arg(long)]
        after: Option<String>,
    },
    /// Print the causes (or effects) of an event as a graph.
    Graph {
        /// The event's seq.
        seq: u64,
        /// Follow effects (what the event caused) instead of causes.
        #[arg(long)]
        effects: bool,
        /// How many hops to follow (the server allows at most 64).
        #[arg(long, default_value_t = 1)]
        depth: u32,
        /// Print Graphviz DOT text, as in `julato graph 1 --effects --dot | dot -Tsvg`.
        #[arg(long)]
        dot: bool,
    },
    /// List emitted events that could not be delivered.
    DeadLetters {
        /// Show dead letters after this id (SEQ.INDEX).
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Deliver a dead letter again, asynchronously.
    Redrive {
        /// The dead letter's id, SEQ.INDEX.
        id: String,
    },
    /// Print a process's state, now or as of an earlier point.
    State {
        /// The process, as FUNCTION/KEY.
        process: String,
        #[command(flatten)]
        point: client::Point,
    },
    /// Print a process's events, up to an earlier point if one is given.
    History {
        /// The process, as FUNCTION/KEY.
        process: String,
        /// First version to show.
        #[arg(long, default_value_t = 1)]
        from_version: u64,
        /// Most events to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        point: client::Point,
    },
    /// Take a checkpoint: a consistent cut of every process at one log position.
    Checkpoint,
    /// List checkpoints.
    Checkpoints,
    /// Put every process back to an earlier log position or time. Events after
    /// it are kept as an archived branch of the log.
    #[command(group = clap::ArgGroup::new("point").required(true).args(["seq", "at"]))]
    Restore {
        /// Keep every event at or below this seq.
        #[arg(long)]
        seq: Option<u64>,
        /// Keep every event at or before this RFC 3339 time.
        #[arg(long)]
        at: Option<String>,
    },
    /// List restores and the branches of the log they archived.
    Restores,
    /// List deployed functions.
    Functions,
    /// List a function's processes.
    Processes {
        function: String,
        /// Show keys after this one.
        #[arg(long)]
        after: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Print the global event log.
    Log {
        /// First seq to show.
        #[arg(long, default_value_t = 1)]
        from: u64,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Show the events restore N archived instead of the live timeline.
        #[arg(long)]
        branch: Option<u64>,
    },
    /// Feed a CSV file to a function, one event per row, through the bulk route.
    Ingest(ingest::IngestArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve::run(args),
        command => Client::new(&cli.url, cli.token.as_deref())
            .and_then(|client| run_client(&client, cli.json, command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_client(client: &Client, json: bool, command: Command) -> anyhow::Result<()> {
    let out = output::Output { json };
    match command {
        Command::Serve(_) => unreachable!("serve is handled before"),
        Command::Deploy { name, file } => out.deployed(&client.deploy(&name, &file)?),
        Command::Send {
            process,
            event_type,
            data,
            bytes,
            idempotency_key,
            expected_version,
            after,
        } => {
            let (function, key) = client::split_process(&process)?;
            let mut body = client::event_body(
                &event_type,
                data.as_deref(),
                bytes,
                idempotency_key,
                expected_version,
            )?;
            if let Some(after) = after {
                body["after"] = serde_json::Value::String(after);
            }
            out.applied(&client.send(function, key, &body)?)
        }
        Command::Tx(args) => tx::run(client, &out, args),
        Command::Read { processes, after } => {
            let pairs = processes
                .iter()
                .map(|p| client::split_process(p))
                .collect::<Result<Vec<_>, _>>()?;
            out.cut(&client.read(&pairs, after.as_deref())?)
        }
        Command::Graph { seq, effects, depth, dot } => {
            out.graph(&client.graph(seq, effects, depth, dot)?)
        }
        Command::DeadLetters { after, limit } => {
            out.dead_letters(&client.dead_letters(after.as_deref(), limit)?)
        }
        Command::Redrive { id } => out.redriven(&client.redrive(&id)?),
        Command::State { process, point } => {
            let (function, key) = client::split_process(&process)?;
            out.state(&client.state(function, key, &point)?)
        }
        Command::History { process, from_version, limit, point } => {
            let (function, key) = client::split_process(&process)?;
            out.events(&client.history(function, key, from_version, limit, &point)?)
        }
        Command::Checkpoint => out.checkpoints(&client.checkpoint()?),
        Command::Checkpoints => out.checkpoints(&client.checkpoints()?),
        Command::Restore { seq, at } => out.restored(&client.restore(seq, at.as_deref())?),
        Command::Restores => out.restores(&client.restores()?),
        Command::Functions => out.functions(&client.functions()?),
        Command::Processes { function, after, limit } => {
            out.processes(&client.processes(&function, after.as_deref(), limit)?)
        }
        Command::Log { from, limit, branch } => out.events(&client.log(from, limit, branch)?),
        Command::Ingest(args) => ingest::run(client, &out, args),
    }
}
