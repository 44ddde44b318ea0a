//! Harness shared by the end-to-end tests: a real `julato serve` child process on
//! a temporary data folder, a small blocking client of its HTTP API, and a runner
//! for the binary's client verbs. Every wait is bounded; every address is loopback.

// Each test file compiles this module on its own and uses a different part of it.
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

/// Longest wait for a server to print its address.
pub const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest wait for a server to exit after SIGTERM or SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest wait for one HTTP answer (a 5000-event bulk request in a debug build
/// is the slowest).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest run of one client verb of the binary.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// How many lines of the server's stderr a failing test prints.
const STDERR_TAIL: usize = 200;

const LISTENING: &str = "julato listening on ";

/// The `julato` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_julato")
}

/// The workspace's root folder.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// A data file of the repository, such as `data/flights-2013-01.csv`.
pub fn data_file(relative: &str) -> PathBuf {
    let path = workspace_root().join(relative);
    assert!(path.is_file(), "missing data file {}", path.display());
    path
}

/// The built example component `name`, from `target/functions/<name>.wasm`.
pub fn function_wasm(name: &str) -> PathBuf {
    let path = workspace_root().join("target/functions").join(format!("{name}.wasm"));
    if !path.is_file() {
        panic!("{} is missing: run `make functions` first", path.display());
    }
    path
}

/// Standard base64, as `data_base64` takes it.
pub fn b64(bytes: impl AsRef<[u8]>) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The `counter` reply to `Say {"text": text}` that brought the state to `state`.
pub fn say_reply(text: &str, state: u64) -> String {
    format!("handle: Say({text:?}), state: {state}")
}

/// An RFC 3339 UTC time as the server writes it (`…T10:00:00.5Z`), as a key that
/// sorts in time order: the whole seconds and the nanoseconds.
#[track_caller]
pub fn time_key(time: &Value) -> (String, u32) {
    let text = time.as_str().unwrap_or_else(|| panic!("not a time: {time}"));
    let utc = text.strip_suffix('Z').unwrap_or_else(|| panic!("not a UTC time: {text}"));
    let (whole, fraction) = utc.split_once('.').unwrap_or((utc, ""));
    assert_eq!(whole.len(), "2013-01-01T05:00:00".len(), "unexpected time format: {text}");
    let digits_ok = fraction.len() <= 9 && fraction.bytes().all(|b| b.is_ascii_digit());
    assert!(digits_ok, "unexpected fraction of a second: {text}");
    let nanos = format!("{fraction:0<9}").parse().expect("nanoseconds");
    (whole.to_owned(), nanos)
}

/// Percent-encodes one path segment.
pub fn enc(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An HTTP answer: its status and its body as JSON (a JSON string when the body
/// is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
}

impl Answer {
    /// The body of a 2xx answer; panics with the answer otherwise.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert!((200..300).contains(&self.status), "expected success, got {self:?}");
        self.body
    }

    /// The body, after checking the status.
    #[track_caller]
    pub fn expect(self, status: u16) -> Value {
        assert_eq!(self.status, status, "unexpected status: {self:?}");
        self.body
    }

    /// The `error.code` of an error answer, or "" when there is none.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// The `error.message` of an error answer, or "" when there is none.
    pub fn message(&self) -> &str {
        self.body["error"]["message"].as_str().unwrap_or("")
    }

    /// Checks that this is an error answer with this status and code, and that its
    /// message is not empty.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) -> &Self {
        assert_eq!((self.status, self.code()), (status, code), "unexpected answer: {self:?}");
        assert!(!self.message().is_empty(), "error without a message: {self:?}");
        self
    }
}

/// A blocking client of one server's API; cheap to clone into threads.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::blocking::Client,
}

impl Api {
    /// A client of the server at `base` (`http://127.0.0.1:PORT`).
    pub fn new(base: &str) -> Self {
        Self::with_headers(base, reqwest::header::HeaderMap::new())
    }

    fn with_headers(base: &str, headers: reqwest::header::HeaderMap) -> Self {
        assert!(base.starts_with("http://127.0.0.1:"), "not a loopback address: {base}");
        let http = reqwest::blocking::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .no_proxy()
            .default_headers(headers)
            .build()
            .expect("building the HTTP client");
        Self { base: base.trim_end_matches('/').to_owned(), http }
    }

    /// A client of the same server that sends `Authorization: Bearer TOKEN`
    /// with every request.
    pub fn with_token(&self, token: &str) -> Self {
        let mut headers = reqwest::header::HeaderMap::new();
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .expect("a token fit for a header");
        headers.insert(reqwest::header::AUTHORIZATION, value);
        Self::with_headers(&self.base, headers)
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    /// Sends a request and reads the whole answer; panics when the server cannot
    /// be reached or answers nothing.
    #[track_caller]
    pub fn call(&self, request: reqwest::blocking::RequestBuilder) -> Answer {
        match self.try_call(request) {
            Ok(answer) => answer,
            Err(error) => panic!("request to {} failed: {error:#}", self.base),
        }
    }

    /// Like [`Api::call`], and also returns the answer's headers.
    #[track_caller]
    pub fn call_with_headers(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> (Answer, reqwest::header::HeaderMap) {
        let response = request
            .send()
            .unwrap_or_else(|error| panic!("request to {} failed: {error:#}", self.base));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().expect("reading an answer");
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (Answer { status, body }, headers)
    }

    /// Like [`Api::call`], but a transport error is returned instead of panicking.
    pub fn try_call(
        &self,
        request: reqwest::blocking::RequestBuilder,
    ) -> Result<Answer, reqwest::Error> {
        let response = request.send()?;
        let status = response.status().as_u16();
        let text = response.text()?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok(Answer { status, body })
    }

    pub fn http(&self) -> &reqwest::blocking::Client {
        &self.http
    }

    pub fn full(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    #[track_caller]
    pub fn get(&self, path: &str) -> Answer {
        self.call(self.http.get(self.full(path)))
    }

    #[track_caller]
    pub fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.call(self.http.post(self.full(path)).json(body))
    }

    /// POSTs raw bytes labelled as JSON.
    #[track_caller]
    pub fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Answer {
        let request = self
            .http
            .post(self.full(path))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.into());
        self.call(request)
    }

    #[track_caller]
    pub fn put_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Answer {
        self.call(self.http.put(self.full(path)).body(body.into()))
    }

    pub fn process_path(function: &str, key: &str) -> String {
        format!("/v1/functions/{}/processes/{}", enc(function), enc(key))
    }

    pub fn events_path(function: &str, key: &str) -> String {
        format!("{}/events", Self::process_path(function, key))
    }

    /// Deploys `target/functions/<name>.wasm` under its own name; returns the
    /// deploy answer.
    #[track_caller]
    pub fn deploy(&self, name: &str) -> Value {
        self.deploy_as(name, name)
    }

    /// Deploys `target/functions/<file>.wasm` as the function `name`.
    #[track_caller]
    pub fn deploy_as(&self, name: &str, file: &str) -> Value {
        let bytes = std::fs::read(function_wasm(file)).expect("reading a component");
        let deployed = self.put_raw(&format!("/v1/functions/{}", enc(name)), bytes).expect(201);
        assert_eq!(deployed["function"], json!(name), "deploy answer: {deployed}");
        deployed
    }

    /// Sends one event, as a `POST …/events` body.
    #[track_caller]
    pub fn send(&self, function: &str, key: &str, body: &Value) -> Answer {
        self.post_json(&Self::events_path(function, key), body)
    }

    /// Sends `Say {"text": text}` and returns the (successful) answer.
    #[track_caller]
    pub fn say(&self, function: &str, key: &str, text: &str) -> Value {
        self.send(function, key, &json!({ "type": "Say", "data": { "text": text } })).ok()
    }

    #[track_caller]
    pub fn state(&self, function: &str, key: &str) -> Answer {
        self.get(&Self::process_path(function, key))
    }

    /// A process's whole history, every page.
    #[track_caller]
    pub fn history(&self, function: &str, key: &str) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = 1u64;
        loop {
            let path =
                format!("{}?from_version={from}&limit=1000", Self::events_path(function, key));
            let page = self.get(&path).ok();
            events.extend(page["events"].as_array().expect("events").iter().cloned());
            match page["next_from_version"].as_u64() {
                Some(next) => {
                    assert!(next > from, "history paging does not advance: {next} after {from}");
                    from = next;
                }
                None => return events,
            }
        }
    }

    /// Every process of a function, every page.
    #[track_caller]
    pub fn processes(&self, function: &str) -> Vec<Value> {
        let mut processes = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let mut path = format!("/v1/functions/{}/processes?limit=1000", enc(function));
            if let Some(after) = &after {
                path.push_str(&format!("&after={}", enc(after)));
            }
            let page = self.get(&path).ok();
            processes.extend(page["processes"].as_array().expect("processes").iter().cloned());
            match page["next_after"].as_str() {
                Some(next) => after = Some(next.to_owned()),
                None => return processes,
            }
        }
    }

    /// The whole global log, every page.
    #[track_caller]
    pub fn log(&self) -> Vec<Value> {
        let mut events = Vec::new();
        let mut from = 1u64;
        loop {
            let page = self.get(&format!("/v1/log?from={from}&limit=1000")).ok();
            let batch = page["events"].as_array().expect("events");
            if batch.is_empty() {
                return events;
            }
            events.extend(batch.iter().cloned());
            let next = page["next_from"].as_u64().expect("next_from");
            assert!(next > from, "log paging does not advance: {next} after {from}");
            from = next;
        }
    }

    /// Sends events through `POST /v1/events`; returns the (successful) answer.
    #[track_caller]
    pub fn bulk(&self, events: &[Value]) -> Value {
        self.post_json("/v1/events", &json!({ "events": events })).ok()
    }

    /// Sends one HTTP/1.1 request over a plain socket, with `path` written on the
    /// wire exactly as given (no URL normalisation of dot segments or escapes).
    #[track_caller]
    pub fn raw(&self, method: &str, path: &str, body: &[u8]) -> Answer {
        let address = self.base.trim_start_matches("http://");
        let mut stream = TcpStream::connect(address).expect("connecting to the server");
        stream.set_read_timeout(Some(REQUEST_TIMEOUT)).expect("a read timeout");
        stream.set_write_timeout(Some(REQUEST_TIMEOUT)).expect("a write timeout");
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).expect("writing a request");
        stream.write_all(body).expect("writing a request body");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("reading an answer");

        let split = answer
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(&answer)));
        let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status in {head:?}"));
        let mut body = answer[split + 4..].to_vec();
        if head.contains("transfer-encoding: chunked") {
            body = dechunk(&body);
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Answer { status, body }
    }

    #[track_caller]
    pub fn healthy(&self) -> bool {
        let answer = self.get("/healthz");
        answer.status == 200 && answer.body["status"] == "ok"
    }
}

/// Decodes a chunked HTTP/1.1 body.
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(end) = body.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = String::from_utf8_lossy(&body[..end]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .unwrap_or_else(|_| panic!("bad chunk size {size:?}"));
        if size == 0 {
            return out;
        }
        let start = end + 2;
        out.extend_from_slice(&body[start..start + size]);
        body = &body[(start + size + 2).min(body.len())..];
    }
}

/// A `julato serve` child process on its own temporary data folder.
pub struct Server {
    data: tempfile::TempDir,
    child: Option<Child>,
    api: Api,
    /// Every stderr line of every run of this server, oldest first.
    stderr: Arc<Mutex<Vec<String>>>,
    runs: usize,
    /// Extra arguments of `julato serve`, given at every start of this server.
    serve_args: Vec<String>,
    /// Extra environment of `julato serve`, given at every start of this server.
    serve_env: Vec<(String, String)>,
}

impl Deref for Server {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl Server {
    /// Starts a server on a new, empty data folder and waits until it listens.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Like [`Server::start`], with extra arguments of `julato serve` (such as
    /// `--snapshot-every 5`) that every restart of this server gives again.
    pub fn start_with(serve_args: &[&str]) -> Self {
        Self::start_with_env(serve_args, &[])
    }

    /// Like [`Server::start_with`], with extra environment variables (such as
    /// `JULATO_ADMIN_TOKEN`) that every restart of this server gives again.
    pub fn start_with_env(serve_args: &[&str], env: &[(&str, &str)]) -> Self {
        let data = tempfile::Builder::new()
            .prefix("julato-e2e-")
            .tempdir()
            .expect("creating a temporary data folder");
        let mut server = Server {
            data,
            child: None,
            api: Api::new("http://127.0.0.1:0"),
            stderr: Arc::default(),
            runs: 0,
            serve_args: serve_args.iter().map(|a| (*a).to_owned()).collect(),
            serve_env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        };
        server.spawn();
        server
    }

    /// The API's base URL (changes at each restart: the port is picked anew).
    pub fn url(&self) -> &str {
        self.api.url()
    }

    /// A client of the current run, to move into threads.
    pub fn api(&self) -> Api {
        self.api.clone()
    }

    pub fn data_dir(&self) -> &Path {
        self.data.path()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the server is not running").id()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Everything the server wrote on stderr so far, every run.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).join("\n")
    }

    fn note(&self, line: String) {
        self.stderr.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none(), "the server is already running");
        self.runs += 1;
        self.note(format!("---- test harness: start #{} ----", self.runs));
        let mut command = Command::new(binary());
        command
            .arg("serve")
            .arg("--data")
            .arg(self.data.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(&self.serve_args)
            .env("JULATO_LOG", std::env::var("JULATO_LOG").unwrap_or_else(|_| "info".into()))
            .env("NO_COLOR", "1")
            .env_remove("JULATO_DATA")
            .env_remove("JULATO_LISTEN")
            .env_remove("JULATO_ADMIN_TOKEN")
            .env_remove("JULATO_CLIENT_TOKEN")
            .env_remove("JULATO_TOKENS_FILE")
            .envs(self.serve_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawning `julato serve`");
        let stderr = child.stderr.take().expect("piped stderr");

        // The reader keeps draining stderr for the child's whole life, so the pipe
        // never fills; the first listening line is handed over.
        let (found, address) = mpsc::channel::<String>();
        let lines = self.stderr.clone();
        std::thread::Builder::new()
            .name("julato-stderr".into())
            .spawn(move || {
                let mut found = Some(found);
                for line in BufReader::new(stderr).split(b'\n') {
                    let Ok(line) = line else { break };
                    let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                    if let Some(at) = line.find(LISTENING)
                        && let Some(tx) = found.take()
                    {
                        let _ = tx.send(line[at + LISTENING.len()..].trim().to_owned());
                    }
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            })
            .expect("spawning the stderr reader");

        match address.recv_timeout(START_TIMEOUT) {
            Ok(url) => {
                self.api = Api::new(&url);
                self.child = Some(child);
            }
            Err(error) => {
                let _ = child.kill();
                let status = child.wait();
                panic!(
                    "the server did not print its address ({error:?}, exit: {status:?}); \
                     stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// SIGKILL: the process dies at once, with no chance to flush anything.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("the server is not running");
        self.note("---- test harness: SIGKILL ----".into());
        child.kill().expect("sending SIGKILL");
        if wait_timeout(&mut child, STOP_TIMEOUT).is_none() {
            panic!("the server did not die within {STOP_TIMEOUT:?} of SIGKILL");
        }
    }

    /// SIGTERM, then waits for the server to finish the requests in flight and
    /// exit; returns its exit status.
    pub fn stop(&mut self) -> ExitStatus {
        self.stop_with("TERM")
    }

    /// Sends the signal `name` (`TERM`, `INT`) and waits for the server to exit;
    /// returns its exit status.
    pub fn stop_with(&mut self, name: &str) -> ExitStatus {
        let mut child = self.child.take().expect("the server is not running");
        self.note(format!("---- test harness: SIG{name} ----"));
        signal(child.id(), name);
        match wait_timeout(&mut child, STOP_TIMEOUT) {
            Some(status) => status,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "the server did not stop within {STOP_TIMEOUT:?} of SIG{name}; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Stops the server gracefully (checking that it exits with success) if it
    /// runs, then starts it again on the same data folder.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(status.success(), "graceful stop exited with {status}:\n{}", self.stderr());
        }
        self.spawn();
    }

    /// Runs a client verb of the binary against this server (`--url` given).
    pub fn cli(&self, args: &[&str]) -> CliOutput {
        let mut full = vec!["--url", self.url()];
        full.extend_from_slice(args);
        run_cli(&full, &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = wait_timeout(&mut child, STOP_TIMEOUT);
        }
        if std::thread::panicking() {
            let lines = self.stderr.lock().unwrap_or_else(|e| e.into_inner());
            let tail: VecDeque<&String> =
                lines.iter().skip(lines.len().saturating_sub(STDERR_TAIL)).collect();
            eprintln!("==== server stderr (last {} lines) ====", tail.len());
            for line in tail {
                eprintln!("{line}");
            }
            eprintln!("==== end of server stderr ====");
        }
    }
}

/// Sends a signal by name (`TERM`, `KILL`, …) to a process.
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("running `kill`");
    assert!(status.success(), "`kill -{name} {pid}` failed: {status}");
}

/// Waits for a child to exit, at most `timeout`.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Ok(None) => return None,
            Err(error) => panic!("waiting for a child: {error}"),
        }
    }
}

/// What a run of the binary's client printed.
#[derive(Debug)]
pub struct CliOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Stdout of a successful run; panics with both streams otherwise.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert!(self.status.success(), "the CLI failed: {self:#?}");
        &self.stdout
    }

    /// Stdout of a successful run, parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        let out = self.ok();
        serde_json::from_str(out).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {out}"))
    }

    /// Stderr of a failed run; panics when the run succeeded.
    #[track_caller]
    pub fn failed(&self) -> &str {
        assert!(!self.status.success(), "the CLI should have failed: {self:#?}");
        &self.stderr
    }
}

/// Runs the binary with `args` and extra environment, at most [`CLI_TIMEOUT`].
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env_remove("JULATO_URL")
        .env_remove("JULATO_TOKEN")
        .env_remove("JULATO_ADMIN_TOKEN")
        .env_remove("JULATO_CLIENT_TOKEN")
        .env_remove("JULATO_TOKENS_FILE")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().expect("spawning the julato CLI");
    let out = drain(child.stdout.take().expect("piped stdout"));
    let err = drain(child.stderr.take().expect("piped stderr"));
    let Some(status) = wait_timeout(&mut child, CLI_TIMEOUT) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`julato {}` did not finish within {CLI_TIMEOUT:?}", args.join(" "));
    };
    let stdout = out.join().expect("stdout reader");
    let stderr = err.join().expect("stderr reader");
    CliOutput { status, stdout, stderr }
}

fn drain(mut stream: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stream.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}
