//! How answers are printed: readable tables by default, the server's JSON with
//! `--json`.

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
