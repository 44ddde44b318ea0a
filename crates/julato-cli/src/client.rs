//! A small blocking client of the HTTP API, turning error answers into
//! readable errors that keep the server's code.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use julato_core::{FunctionName, ProcessKey};
use serde_json::{Value, json};

pub struct Client {
    base: String,
    http: reqwest::blocking::Client,
}

/// Splits and checks `FUNCTION/KEY`, so that no name can turn into another
/// route once it is in a URL.
pub fn split_process(process: &str) -> anyhow::Result<(&str, &str)> {
    let (function, key) = process
        .split_once('/')
        .filter(|(f, k)| !f.is_empty() && !k.is_empty())
        .ok_or_else(|| anyhow!("`{process}` is not FUNCTION/KEY"))?;
    check_function(function)?;
    ProcessKey::new(key).with_context(|| format!("`{process}` is not FUNCTION/KEY"))?;
    Ok((function, key))
}

/// Checks a function name before it goes into a URL.
pub fn check_function(function: &str) -> anyhow::Result<()> {
    FunctionName::new(function).map(|_| ()).context("not a function name")
}

/// The JSON body of a send.
pub fn event_body(
    event_type: &str,
    data: Option<&str>,
    bytes: bool,
    idempotency_key: Option<String>,
    expected_version: Option<u64>,
) -> anyhow::Result<Value> {
    let mut body = json!({ "type": event_type });
    match (data, bytes) {
        (Some(text), true) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
            body["data_base64"] = Value::String(encoded);
        }
        (Some(text), false) => {
            body["data"] = serde_json::from_str(text)
                .with_context(|| format!("event data `{text}` is not JSON"))?;
        }
        (None, _) => {}
    }
    if let Some(key) = idempotency_key {
        body["idempotency_key"] = Value::String(key);
    }
    if let Some(version) = expected_version {
        body["expected_version"] = json!(version);
    }
    Ok(body)
}

/// A point in a process's history, named by at most one of its flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Point {
    /// As of this version (0 is the initial state).
    #[arg(long, conflicts_with_all = ["seq", "at"])]
    pub version: Option<u64>,
    /// As of this log position.
    #[arg(long, conflicts_with = "at")]
    pub seq: Option<u64>,
    /// As of this RFC 3339 time, inclusive.
    #[arg(long)]
    pub at: Option<String>,
}

impl Point {
    fn query(&self) -> Option<String> {
        match (self.version, self.seq, &self.at) {
            (Some(v), _, _) => Some(format!("version={v}")),
            (_, Some(s), _) => Some(format!("seq={s}")),
            (_, _, Some(at)) => Some(format!("at={}", encode(at))),
            _ => None,
        }
    }
}

fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl Client {
    pub fn new(base: &str) -> Self {
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .expect("building the HTTP client");
        Self { base: base.trim_end_matches('/').to_owned(), http }
    }

    fn answer(
        &self,
        what: &str,
        response: reqwest::Result<reqwest::blocking::Response>,
    ) -> anyhow::Result<Value> {
        let response =
            response.with_context(|| format!("cannot reach the Julato server at {}", self.base))?;
        let status = response.status();
        let text = response.text().context("reading the answer")?;
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(body);
        }
        match body.get("error") {
            Some(error) => bail!(
                "{what} failed ({status}, {}): {}",
                error["code"].as_str().unwrap_or("?"),
                error["message"].as_str().unwrap_or("")
            ),
            None => bail!("{what} failed ({status}): {body}"),
        }
    }

    fn get(&self, what: &str, path: &str) -> anyhow::Result<Value> {
        self.answer(what, self.http.get(format!("{}{path}", self.base)).send())
    }

    fn post(&self, what: &str, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.answer(what, self.http.post(format!("{}{path}", self.base)).json(body).send())
    }

    pub fn deploy(&self, name: &str, file: &Path) -> anyhow::Result<Value> {
        check_function(name)?;
        let bytes = std::fs::read(file).with_context(|| format!("reading `{}`", file.display()))?;
        let url = format!("{}/v1/functions/{}", self.base, encode(name));
        self.answer("deploy", self.http.put(url).body(bytes).send())
    }

    pub fn send(&self, function: &str, key: &str, body: &Value) -> anyhow::Result<Value> {
        let path = format!("/v1/functions/{}/processes/{}/events", encode(function), encode(key));
        self.post("send", &path, body)
    }

    pub fn send_bulk(&self, events: &[Value]) -> anyhow::Result<Value> {
        self.post("bulk send", "/v1/events", &json!({ "events": events }))
    }

    pub fn state(&self, function: &str, key: &str, point: &Point) -> anyhow::Result<Value> {
        let mut path = format!("/v1/functions/{}/processes/{}", encode(function), encode(key));
        if let Some(query) = point.query() {
            path.push('?');
            path.push_str(&query);
        }
        self.get("state", &path)
    }

    pub fn history(
        &self,
        function: &str,
        key: &str,
        from_version: u64,
        limit: usize,
        point: &Point,
    ) -> anyhow::Result<Value> {
        let mut path = format!(
            "/v1/functions/{}/processes/{}/events?from_version={from_version}&limit={limit}",
            encode(function),
            encode(key)
        );
        if let Some(query) = point.query() {
            path.push('&');
            path.push_str(&query);
        }
        self.get("history", &path)
    }

    pub fn checkpoint(&self) -> anyhow::Result<Value> {
        let taken = self.post("checkpoint", "/v1/checkpoints", &json!({}))?;
        Ok(json!({ "checkpoints": [taken] }))
    }

    pub fn checkpoints(&self) -> anyhow::Result<Value> {
        self.get("checkpoints", "/v1/checkpoints")
    }

    pub fn restore(&self, seq: Option<u64>, at: Option<&str>) -> anyhow::Result<Value> {
        let body = match (seq, at) {
            (Some(seq), None) => json!({ "seq": seq }),
            (None, Some(at)) => json!({ "at": at }),
            _ => bail!("give exactly one of --seq and --at"),
        };
        self.post("restore", "/v1/restore", &body)
    }

    pub fn restores(&self) -> anyhow::Result<Value> {
        self.get("restores", "/v1/restores")
    }

    pub fn functions(&self) -> anyhow::Result<Value> {
        self.get("functions", "/v1/functions")
    }

    pub fn processes(
        &self,
        function: &str,
        after: Option<&str>,
        limit: usize,
    ) -> anyhow::Result<Value> {
        check_function(function)?;
        let mut path = format!("/v1/functions/{}/processes?limit={limit}", encode(function));
        if let Some(after) = after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        self.get("processes", &path)
    }

    pub fn log(&self, from: u64, limit: usize, branch: Option<u64>) -> anyhow::Result<Value> {
        let mut path = format!("/v1/log?from={from}&limit={limit}");
        if let Some(branch) = branch {
            path.push_str(&format!("&branch={branch}"));
        }
        self.get("log", &path)
    }
}
