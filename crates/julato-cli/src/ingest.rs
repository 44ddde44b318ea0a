//! `julato ingest`: feeds a CSV file to a function, one event per row, through
//! the bulk route, with a progress bar. Numbers become JSON numbers and `NA` or
//! an empty field becomes null.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Map, Value, json};

use crate::client::Client;
use crate::output::Output;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// Function that receives the events.
    function: String,
    /// CSV file with a header row.
    file: PathBuf,
    /// Column whose value is the process key.
    #[arg(long)]
    key_column: String,
    /// Event type of every row.
    #[arg(long = "type")]
    event_type: String,
    /// Events per bulk request.
    #[arg(long, default_value_t = 2000)]
    batch: usize,
    /// Stop after this many rows.
    #[arg(long)]
    limit: Option<usize>,
    /// Give row N the idempotency key `PREFIX:N`, so that running the same
    /// ingest again, after a failure part way, applies no row twice.
    #[arg(long, value_name = "PREFIX")]
    idempotency_prefix: Option<String>,
}

/// One CSV field as JSON: null for `NA` or empty, a number when it parses as one.
pub fn field(text: &str) -> Value {
    if text.is_empty() || text == "NA" {
        return Value::Null;
    }
    if let Ok(n) = text.parse::<i64>() {
        return json!(n);
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() => json!(f),
        _ => Value::String(text.to_owned()),
    }
}

pub fn run(client: &Client, out: &Output, args: IngestArgs) -> anyhow::Result<()> {
    let total_rows = count_rows(&args.file)?;
    let total = args.limit.map_or(total_rows, |l| l.min(total_rows));
    let mut reader = csv::Reader::from_path(&args.file)
        .with_context(|| format!("opening `{}`", args.file.display()))?;
    let headers = reader.headers()?.clone();
    let Some(key_index) = headers.iter().position(|h| h == args.key_column) else {
        bail!("`{}` has no column `{}`", args.file.display(), args.key_column);
    };

    let progress = ProgressBar::new(total as u64);
    progress.set_style(
        ProgressStyle::with_template(
            "{spinner} ingesting [{bar:40}] {pos}/{len} rows, {per_sec}, eta {eta}",
        )
        .expect("a valid progress template")
        .progress_chars("=> "),
    );

    let started = Instant::now();
    let (mut accepted, mut rejected, mut skipped, mut repeated) = (0u64, 0u64, 0u64, 0u64);
    let mut batch = Vec::with_capacity(args.batch);
    let mut first_errors = Vec::new();
    for (row, record) in reader.records().take(total).enumerate() {
        let record = record.with_context(|| format!("reading row {}", row + 2))?;
        let key = record.get(key_index).unwrap_or("");
        if key.is_empty() || key == "NA" {
            skipped += 1;
            progress.inc(1);
            continue;
        }
        let data: Map<String, Value> =
            headers.iter().zip(record.iter()).map(|(h, v)| (h.to_owned(), field(v))).collect();
        let mut event = json!({
            "function": args.function, "key": key, "type": args.event_type, "data": data,
        });
        if let Some(prefix) = &args.idempotency_prefix {
            event["idempotency_key"] = Value::String(format!("{prefix}:{}", row + 1));
        }
        batch.push(event);
        if batch.len() >= args.batch {
            let (a, r, d) = flush(client, &mut batch, &mut first_errors).with_context(|| {
                format!("after {accepted} events accepted and {rejected} rejected")
            })?;
            accepted += a;
            rejected += r;
            repeated += d;
            progress.set_position((row + 1) as u64);
        }
    }
    let (a, r, d) = flush(client, &mut batch, &mut first_errors)
        .with_context(|| format!("after {accepted} events accepted and {rejected} rejected"))?;
    accepted += a;
    rejected += r;
    repeated += d;
    progress.finish_and_clear();

    for error in &first_errors {
        eprintln!("rejected: {error}");
    }
    out.ingested(accepted, repeated, rejected, skipped, started.elapsed().as_secs_f64());
    if skipped > 0 {
        eprintln!("{skipped} rows had no `{}` and were skipped", args.key_column);
    }
    if rejected > 0 {
        bail!("{rejected} events were rejected");
    }
    Ok(())
}

/// Sends one batch; answers the events accepted, rejected and already applied
/// before (repeats of an idempotency key).
fn flush(
    client: &Client,
    batch: &mut Vec<Value>,
    first_errors: &mut Vec<String>,
) -> anyhow::Result<(u64, u64, u64)> {
    if batch.is_empty() {
        return Ok((0, 0, 0));
    }
    let answer = client.send_bulk(batch)?;
    for result in answer["results"].as_array().into_iter().flatten() {
        if let Some(error) = result.get("error")
            && first_errors.len() < 5
        {
            first_errors.push(error.to_string());
        }
    }
    batch.clear();
    let count = |field: &str| answer[field].as_u64().unwrap_or(0);
    Ok((count("accepted"), count("rejected"), count("deduplicated")))
}

fn count_rows(file: &PathBuf) -> anyhow::Result<usize> {
    let mut reader =
        csv::Reader::from_path(file).with_context(|| format!("opening `{}`", file.display()))?;
    Ok(reader.records().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_become_json() {
        assert_eq!(field("NA"), Value::Null);
        assert_eq!(field(""), Value::Null);
        assert_eq!(field("517"), json!(517));
        assert_eq!(field("-3"), json!(-3));
        assert_eq!(field("2.5"), json!(2.5));
        assert_eq!(field("N14228"), json!("N14228"));
        assert_eq!(field("2013-01-01T10:00:00Z"), json!("2013-01-01T10:00:00Z"));
        assert_eq!(field("inf"), json!("inf"));
    }
}
