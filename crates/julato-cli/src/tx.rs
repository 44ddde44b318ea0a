//! `julato tx`: transactions, either one-shot from a JSON file (`julato tx FILE`
//! or `julato tx run FILE`) or interactive (`begin`, `add`, `commit`,
//! `rollback`, `show`).

use std::io::Read as _;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use serde_json::{Value, json};

use crate::client::{self, Client};
use crate::output::Output;

/// Either a file to apply in one shot or one interactive step.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, arg_required_else_help = true)]
pub struct TxArgs {
    /// A JSON file (`-` for stdin) holding `{"events":[...]}` or a bare array
    /// of events, each `{function, key, type, data, ...}`, applied all or none.
    file: Option<String>,
    /// Apply the events only once the server has seen this token.
    #[arg(long)]
    after: Option<String>,
    #[command(subcommand)]
    command: Option<TxCommand>,
}

#[derive(Debug, Subcommand)]
enum TxCommand {
    /// Apply a file of events as one transaction (the same as `julato tx FILE`).
    Run {
        /// JSON file, or `-` for stdin.
        file: String,
        /// Apply the events only once the server has seen this token.
        #[arg(long)]
        after: Option<String>,
    },
    /// Open an interactive transaction and print its id.
    Begin {
        /// Roll back after this many milliseconds idle (bounded by the server).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// Read only once the server has seen this token; it becomes a cause
        /// of every event added without one of its own.
        #[arg(long)]
        after: Option<String>,
    },
    /// Add one event to an open transaction and print the tentative state.
    Add {
        /// The transaction id, from `julato tx begin`.
        id: String,
        /// The process, as FUNCTION/KEY.
        process: String,
        /// The event type, such as `Deposit`.
        event_type: String,
        /// The event data as JSON (default `null`).
        data: Option<String>,
        /// Send DATA as raw UTF-8 bytes instead of JSON.
        #[arg(long)]
        bytes: bool,
        /// Make retries of this event return the first answer.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Fail with a conflict unless the process is at this version.
        #[arg(long)]
        expected_version: Option<u64>,
        /// Run the event only once the server has seen this token.
        #[arg(long)]
        after: Option<String>,
    },
    /// Commit an open transaction: store all its events or none.
    Commit {
        /// The transaction id.
        id: String,
    },
    /// Drop an open transaction's events.
    Rollback {
        /// The transaction id.
        id: String,
    },
    /// Show an open transaction's processes and event count.
    Show {
        /// The transaction id.
        id: String,
    },
}

pub fn run(client: &Client, out: &Output, args: TxArgs) -> anyhow::Result<()> {
    match (args.command, args.file) {
        (Some(TxCommand::Run { file, after }), _) => one_shot(client, out, &file, after),
        (None, Some(file)) => one_shot(client, out, &file, args.after),
        (None, None) => bail!("give a FILE of events or a subcommand; see `julato tx --help`"),
        (Some(TxCommand::Begin { timeout_ms, after }), _) => {
            out.begun(&client.begin(timeout_ms, after)?)
        }
        (
            Some(TxCommand::Add {
                id,
                process,
                event_type,
                data,
                bytes,
                idempotency_key,
                expected_version,
                after,
            }),
            _,
        ) => {
            let (function, key) = client::split_process(&process)?;
            let mut event = client::event_body(
                &event_type,
                data.as_deref(),
                bytes,
                idempotency_key,
                expected_version,
            )?;
            event["function"] = json!(function);
            event["key"] = json!(key);
            if let Some(after) = after {
                event["after"] = json!(after);
            }
            out.tentative(&client.add(&id, &event)?)
        }
        (Some(TxCommand::Commit { id }), _) => out.committed(&client.commit(&id)?),
        (Some(TxCommand::Rollback { id }), _) => out.rolled_back(&client.rollback(&id)?),
        (Some(TxCommand::Show { id }), _) => out.transaction(&client.transaction(&id)?),
    }
}

/// Reads the events of FILE and applies them as one transaction.
fn one_shot(
    client: &Client,
    out: &Output,
    file: &str,
    after: Option<String>,
) -> anyhow::Result<()> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading events from stdin")?;
        text
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading `{file}`"))?
    };
    let parsed: Value =
        serde_json::from_str(&text).with_context(|| format!("`{file}` is not JSON"))?;
    let mut body = match parsed {
        Value::Array(events) => json!({ "events": events }),
        Value::Object(ref object) if object.get("events").is_some_and(Value::is_array) => parsed,
        _ => bail!("`{file}` holds neither {{\"events\": [...]}} nor an array of events"),
    };
    if let Some(after) = after {
        body["after"] = Value::String(after);
    }
    out.committed(&client.transact(&body)?)
}
