//! How answers are printed: readable tables by default, the server's JSON with
//! `--json`.

use std::io::Write as _;

use comfy_table::presets::UTF8_FULL_CONDENSED;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

pub struct Output {
    pub json: bool,
}

/// A JSON value as a table cell: strings bare, the rest as compact JSON.
fn cell(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => {
            let text = other.to_string();
            if text.chars().count() > 80 {
                format!("{}…", text.chars().take(79).collect::<String>())
            } else {
                text
            }
        }
    }
}

/// An answer's `function` and `key` as FUNCTION/KEY.
fn process(value: &Value) -> String {
    format!("{}/{}", cell(&value["function"]), cell(&value["key"]))
}

/// An event's data, marking raw bytes as base64.
fn data(event: &Value) -> String {
    if event.get("data_base64").is_some() {
        format!("base64:{}", cell(&event["data_base64"]))
    } else {
        cell(&event["data"])
    }
}

fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_content_arrangement(ContentArrangement::Dynamic);
    table.set_header(header.to_vec());
    table
}

fn pairs(rows: &[(&str, String)]) -> Table {
    let mut table = table(&["field", "value"]);
    for (name, value) in rows {
        table.add_row(vec![name.to_string(), value.clone()]);
    }
    table
}

impl Output {
    fn raw(&self, value: &Value) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string_pretty(value)?);
        Ok(())
    }

    pub fn deployed(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let rows = [
            ("function", cell(&value["function"])),
            ("version", cell(&value["version"])),
            ("digest", cell(&value["digest"])),
            ("size", cell(&value["size"])),
            (
                "event types",
                value["event_types"].as_array().map_or(String::new(), |types| {
                    types.iter().map(cell).collect::<Vec<_>>().join(", ")
                }),
            ),
        ];
        println!("{}", pairs(&rows));
        Ok(())
    }

    pub fn applied(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let mut rows = vec![
            ("process", format!("{}/{}", cell(&value["function"]), cell(&value["key"]))),
            ("seq", cell(&value["seq"])),
            ("version", cell(&value["version"])),
            ("state", cell(&value["state"])),
            ("reply", cell(&value["reply"])),
            ("token", cell(&value["token"])),
        ];
        if value["deduplicated"].as_bool() == Some(true) {
            rows.push(("deduplicated", "yes: the first answer to this idempotency key".into()));
        }
        println!("{}", pairs(&rows));
        Ok(())
    }

    pub fn state(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let rows = [
            ("process", format!("{}/{}", cell(&value["function"]), cell(&value["key"]))),
            (
                "version",
                format!("{} of {}", cell(&value["version"]), cell(&value["newest_version"])),
            ),
            ("seq", cell(&value["seq"])),
            ("updated", cell(&value["updated"])),
            ("function version", cell(&value["function_version"])),
            ("token", cell(&value["token"])),
        ];
        println!("{}", pairs(&rows));
        println!("{}", serde_json::to_string_pretty(&value["state"])?);
        Ok(())
    }

    pub fn events(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let mut table = table(&["seq", "process", "version", "type", "data", "time"]);
        for event in value["events"].as_array().into_iter().flatten() {
            let data = if event.get("data_base64").is_some() {
                format!("base64:{}", cell(&event["data_base64"]))
            } else {
                cell(&event["data"])
            };
            table.add_row(vec![
                cell(&event["seq"]),
                format!("{}/{}", cell(&event["function"]), cell(&event["key"])),
                cell(&event["version"]),
                cell(&event["type"]),
                data,
                cell(&event["time"]),
            ]);
        }
        println!("{table}");
        Ok(())
    }

    pub fn checkpoints(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let mut table = table(&["id", "seq", "time", "processes", "snapshots", "archived by"]);
        for c in value["checkpoints"].as_array().into_iter().flatten() {
            table.add_row(vec![
                cell(&c["id"]),
                cell(&c["seq"]),
                cell(&c["time"]),
                cell(&c["processes"]),
                cell(&c["snapshots"]),
                cell(&c["archived_by"]),
            ]);
        }
        println!("{table}");
        Ok(())
    }

    pub fn restored(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let branch = &value["branch"];
        let archived = if branch.is_null() {
            "nothing: no event was after that point".to_owned()
        } else {
            format!(
                "{} events, seqs {} to {}, as branch {} (julato log --branch {})",
                cell(&branch["events"]),
                cell(&branch["archived_from"]),
                cell(&branch["archived_upto"]),
                cell(&branch["branch"]),
                cell(&branch["branch"]),
            )
        };
        let rows = [
            ("restored to seq", cell(&value["restored_to"])),
            ("processes", cell(&value["processes"])),
            ("archived", archived),
        ];
        println!("{}", pairs(&rows));
        Ok(())
    }

    pub fn restores(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let mut table = table(&["branch", "restored to", "archived seqs", "events", "restored at"]);
        for b in value["restores"].as_array().into_iter().flatten() {
            table.add_row(vec![
                cell(&b["branch"]),
                cell(&b["restored_to"]),
                format!("{}..={}", cell(&b["archived_from"]), cell(&b["archived_upto"])),
                cell(&b["events"]),
                cell(&b["restored_at"]),
            ]);
        }
        println!("{table}");
        Ok(())
    }

    pub fn functions(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let mut table = table(&["function", "latest version", "versions", "event types"]);
        for function in value["functions"].as_array().into_iter().flatten() {
            let types = function["event_types"]
                .as_array()
                .map_or(String::new(), |t| t.iter().map(cell).collect::<Vec<_>>().join(", "));
            table.add_row(vec![
                cell(&function["name"]),
                cell(&function["latest_version"]),
                function["versions"].as_array().map_or(0, Vec::len).to_string(),
                types,
            ]);
        }
        println!("{table}");
        Ok(())
    }

    pub fn processes(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let mut table = table(&["key", "version", "last seq", "updated"]);
        for process in value["processes"].as_array().into_iter().flatten() {
            table.add_row(vec![
                cell(&process["key"]),
                cell(&process["version"]),
                cell(&process["seq"]),
                cell(&process["updated"]),
            ]);
        }
        println!("{table}");
        if let Some(next) = value["next_after"].as_str() {
            eprintln!("more: --after {next}");
        }
        Ok(())
    }

    /// A committed transaction: one row per event, then its id and token.
    pub fn committed(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let mut table = table(&["#", "process", "seq", "version", "state", "reply"]);
        for (index, event) in value["events"].as_array().into_iter().flatten().enumerate() {
            let mut seq = cell(&event["seq"]);
            if event["deduplicated"].as_bool() == Some(true) {
                seq.push_str(" (deduplicated)");
            }
            table.add_row(vec![
                index.to_string(),
                process(event),
                seq,
                cell(&event["version"]),
                cell(&event["state"]),
                cell(&event["reply"]),
            ]);
        }
        println!("{table}");
        println!("transaction {}  token {}", cell(&value["transaction"]), cell(&value["token"]));
        Ok(())
    }

    /// A new interactive transaction: its bare id on stdout, for scripts.
    pub fn begun(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        println!("{}", cell(&value["id"]));
        eprintln!("rolls back after {} ms idle", cell(&value["timeout_ms"]));
        Ok(())
    }

    /// The tentative answer to an event added to an open transaction.
    pub fn tentative(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let deduplicated = value["deduplicated"].as_bool() == Some(true);
        let status =
            if deduplicated { "first answer to this idempotency key" } else { "tentative" };
        let rows = [
            ("process", process(value)),
            ("version", format!("{} ({status})", cell(&value["version"]))),
            ("state", cell(&value["state"])),
            ("reply", cell(&value["reply"])),
            ("emitted", cell(&value["emitted"])),
        ];
        println!("{}", pairs(&rows));
        Ok(())
    }

    pub fn rolled_back(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        println!(
            "rolled back transaction {} ({} events dropped)",
            cell(&value["id"]),
            cell(&value["events"])
        );
        Ok(())
    }

    /// An open transaction: its event count and the processes it touched.
    pub fn transaction(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let events = value["events"].as_u64().unwrap_or(0);
        let plural = if events == 1 { "" } else { "s" };
        println!("transaction {}: {events} event{plural} added", cell(&value["id"]));
        if let Some(reason) = value["aborted_by"].as_str() {
            println!("aborted by a failed event, roll it back: {reason}");
        }
        let mut table = table(&["process", "read version", "tentative version"]);
        for p in value["processes"].as_array().into_iter().flatten() {
            table.add_row(vec![process(p), cell(&p["read_version"]), cell(&p["version"])]);
        }
        println!("{table}");
        Ok(())
    }

    /// A causal graph: its nodes, then its edges. DOT text is printed raw.
    pub fn graph(&self, value: &Value) -> anyhow::Result<()> {
        if let Value::String(dot) = value {
            // Piped into `dot`, which may exit early: a closed pipe is no error.
            let mut stdout = std::io::stdout().lock();
            let newline = if dot.ends_with('\n') { "" } else { "\n" };
            return match write!(stdout, "{dot}{newline}").and_then(|()| stdout.flush()) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => Ok(other?),
            };
        }
        if self.json {
            return self.raw(value);
        }
        println!(
            "{} of seq {}, depth {}",
            cell(&value["direction"]),
            cell(&value["root"]),
            cell(&value["depth"])
        );
        let mut nodes = table(&["seq", "depth", "process", "version", "type", "transaction"]);
        for n in value["nodes"].as_array().into_iter().flatten() {
            nodes.add_row(vec![
                cell(&n["seq"]),
                cell(&n["depth"]),
                process(n),
                cell(&n["version"]),
                cell(&n["type"]),
                cell(&n["transaction"]),
            ]);
        }
        println!("{nodes}");
        let mut edges = table(&["cause", "effect", "kind"]);
        for e in value["edges"].as_array().into_iter().flatten() {
            edges.add_row(vec![cell(&e["cause"]), cell(&e["effect"]), cell(&e["kind"])]);
        }
        println!("{edges}");
        if value["truncated"].as_bool() == Some(true) {
            eprintln!("truncated: the graph has more nodes than shown");
        }
        Ok(())
    }

    pub fn dead_letters(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let mut table = table(&["id", "target", "type", "data", "hops", "code", "message", "time"]);
        for d in value["dead_letters"].as_array().into_iter().flatten() {
            table.add_row(vec![
                cell(&d["id"]),
                process(d),
                cell(&d["type"]),
                data(d),
                cell(&d["hops"]),
                cell(&d["code"]),
                cell(&d["message"]),
                cell(&d["time"]),
            ]);
        }
        println!("{table}");
        if let Some(next) = value["next_after"].as_str() {
            eprintln!("more: --after {next}");
        }
        Ok(())
    }

    pub fn redriven(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        let d = &value["redriven"];
        println!(
            "redriving {}: {} to {} (delivered asynchronously)",
            cell(&d["id"]),
            cell(&d["type"]),
            process(d)
        );
        Ok(())
    }

    /// A consistent read: the cut, then one row per process.
    pub fn cut(&self, value: &Value) -> anyhow::Result<()> {
        if self.json {
            return self.raw(value);
        }
        println!("cut at seq {}  token {}", cell(&value["cut"]), cell(&value["token"]));
        let mut table = table(&["process", "version", "seq", "state", "updated"]);
        for s in value["states"].as_array().into_iter().flatten() {
            table.add_row(vec![
                process(s),
                format!("{} of {}", cell(&s["version"]), cell(&s["newest_version"])),
                cell(&s["seq"]),
                cell(&s["state"]),
                cell(&s["updated"]),
            ]);
        }
        println!("{table}");
        Ok(())
    }

    /// The summary of an ingest; `accepted` includes the `repeated` rows that an
    /// earlier run had already applied.
    pub fn ingested(&self, accepted: u64, repeated: u64, rejected: u64, skipped: u64, secs: f64) {
        if self.json {
            let summary = serde_json::json!({
                "accepted": accepted, "already_applied": repeated, "rejected": rejected,
                "skipped": skipped, "seconds": secs,
            });
            println!("{summary}");
        } else {
            let rate = if secs > 0.0 { accepted as f64 / secs } else { 0.0 };
            println!(
                "{accepted} events accepted ({repeated} already applied before), {rejected} \
                 rejected, {skipped} rows skipped in {secs:.1} s ({rate:.0} events/s)"
            );
        }
    }
}
