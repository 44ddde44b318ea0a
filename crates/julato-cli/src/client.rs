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
    /// A client of the server at `base`, sending `token` (if any) with every
    /// request.
    ///
    /// # Errors
    /// When the token cannot be sent in a header, or the HTTP client cannot be built.
    pub fn new(base: &str, token: Option<&str>) -> anyhow::Result<Self> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token.map(str::trim).filter(|t| !t.is_empty()) {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| anyhow!("the API token holds characters a header cannot carry"))?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(600))
            .default_headers(headers)
            .build()
            .context("building the HTTP client")?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }

    fn answer(
        &self,
        what: &str,
        response: reqwest::Result<reqwest::blocking::Response>,
    ) -> anyhow::Result<Value> {
        let text = self.answer_text(what, response)?;
        Ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The text of a successful answer; an error answer becomes an error that
    /// keeps the server's code and, for a transaction, the failing event.
    fn answer_text(
        &self,
        what: &str,
        response: reqwest::Result<reqwest::blocking::Response>,
    ) -> anyhow::Result<String> {
        let response =
            response.with_context(|| format!("cannot reach the Julato server at {}", self.base))?;
        let status = response.status();
        let text = response.text().context("reading the answer")?;
        if status.is_success() {
            return Ok(text);
        }
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        match body.get("error") {
            Some(error) => {
                let failing = match (error.get("event"), error.get("function"), error.get("key")) {
                    (Some(index), Some(function), Some(key)) => format!(
                        " at event {index} ({}/{})",
                        function.as_str().unwrap_or("?"),
                        key.as_str().unwrap_or("?")
                    ),
                    (Some(index), _, _) => format!(" at event {index}"),
                    _ => String::new(),
                };
                bail!(
                    "{what} failed ({status}, {}){failing}: {}",
                    error["code"].as_str().unwrap_or("?"),
                    error["message"].as_str().unwrap_or("")
                )
            }
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

    /// Applies several events as one transaction: all are stored or none.
    pub fn transact(&self, body: &Value) -> anyhow::Result<Value> {
        self.post("transaction", "/v1/transactions", body)
    }

    /// Opens an interactive transaction.
    /// Opens an interactive transaction, idle for at most `timeout_ms`, that
    /// first observes the causal token `after`.
    pub fn begin(&self, timeout_ms: Option<u64>, after: Option<String>) -> anyhow::Result<Value> {
        let mut body = json!({});
        if let Some(ms) = timeout_ms {
            body["timeout_ms"] = json!(ms);
        }
        if let Some(after) = after {
            body["after"] = json!(after);
        }
        self.post("begin", "/v1/transactions/begin", &body)
    }

    /// Adds one event, with its `function` and `key`, to an open transaction.
    pub fn add(&self, id: &str, event: &Value) -> anyhow::Result<Value> {
        self.post("add", &format!("/v1/transactions/{}/events", encode(id)), event)
    }

    pub fn commit(&self, id: &str) -> anyhow::Result<Value> {
        self.post("commit", &format!("/v1/transactions/{}/commit", encode(id)), &json!({}))
    }

    pub fn rollback(&self, id: &str) -> anyhow::Result<Value> {
        self.post("rollback", &format!("/v1/transactions/{}/rollback", encode(id)), &json!({}))
    }

    pub fn transaction(&self, id: &str) -> anyhow::Result<Value> {
        self.get("transaction", &format!("/v1/transactions/{}", encode(id)))
    }

    /// The causes (or effects) of an event as JSON, or as Graphviz text if `dot`.
    pub fn graph(&self, seq: u64, effects: bool, depth: u32, dot: bool) -> anyhow::Result<Value> {
        let direction = if effects { "effects" } else { "causes" };
        let format = if dot { "dot" } else { "json" };
        let url = format!(
            "{}/v1/events/{seq}/graph?direction={direction}&depth={depth}&format={format}",
            self.base
        );
        let text = self.answer_text("graph", self.http.get(url).send())?;
        if dot {
            return Ok(Value::String(text));
        }
        serde_json::from_str(&text).context("the graph answer is not JSON")
    }

    pub fn dead_letters(&self, after: Option<&str>, limit: usize) -> anyhow::Result<Value> {
        let mut path = format!("/v1/dead-letters?limit={limit}");
        if let Some(after) = after {
            path.push_str(&format!("&after={}", encode(after)));
        }
        self.get("dead letters", &path)
    }

    pub fn redrive(&self, id: &str) -> anyhow::Result<Value> {
        self.post("redrive", &format!("/v1/dead-letters/{}/redrive", encode(id)), &json!({}))
    }

    /// Reads several processes at one consistent cut of the log.
    pub fn read(&self, processes: &[(&str, &str)], after: Option<&str>) -> anyhow::Result<Value> {
        let list: Vec<Value> =
            processes.iter().map(|(f, k)| json!({ "function": f, "key": k })).collect();
        let mut body = json!({ "processes": list });
        if let Some(after) = after {
            body["after"] = Value::String(after.to_owned());
        }
        self.post("read", "/v1/states", &body)
    }
}
