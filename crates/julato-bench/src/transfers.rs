//! `julato-bench transfers`: two-account transfer transactions per second
//! beside single sends per second, measured in the same run on one server.
//!
//! One release `julato serve` on a temporary data folder; the `account`
//! example is deployed and `--accounts` accounts (default 1,000, keys `a0`,
//! `a1`, …) are seeded with [`SEED_BALANCE`] each by `Deposit`s in bulk
//! (`POST /v1/events`). Then, with the suite's load generator and connection
//! count (default 256), each for `--seconds` after `--warmup`:
//!
//! - single sends: a `Deposit` of 1 to a random account per request
//!   (`POST /v1/functions/account/processes/{key}/events`); events/s, p50, p99;
//! - transfer transactions: one `POST /v1/transactions` per request, a
//!   `Withdraw` of 1 from a random account A and a `Deposit` of 1 to a random
//!   account B ≠ A, applied atomically; transactions/s, events/s (two per
//!   transaction), p50, p99, and transactions/s over single sends/s.
//!
//! Any non-2xx answer, warm-ups included, fails the run: the balances are
//! large, so no withdrawal may be refused. Then the money must add up: the
//! balances of all accounts (read with `POST /v1/states`, at most 1,000
//! processes a request) sum to what was seeded plus the deposits the single
//! sends acknowledged; and the store must hold exactly the events acknowledged
//! (one per seed and per single send, two per transaction).
//!
//! The suite (`suite.rs`) runs the same [`measure`] on its own server and
//! prints the same two workloads as rows of its table.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, ensure};
use comfy_table::{CellAlignment, Table, presets::ASCII_MARKDOWN};
use serde_json::json;

use crate::history::{self, Api, grouped, load_average};
use crate::suite::{self, Measured, Timing, ms2, per_s, ratio, x};
use crate::{BULK_REQUEST_TIMEOUT, MAX_BULK_EVENTS, Server};

/// What each account holds before the load: far more than it can lose.
pub(crate) const SEED_BALANCE: i64 = 1_000_000_000;
/// Most processes read in one `POST /v1/states`.
const STATES_PER_REQUEST: usize = 1000;

/// Options of `julato-bench transfers`.
#[derive(Debug, clap::Args)]
pub(crate) struct Options {
    #[command(flatten)]
    paths: crate::Paths,
    /// The account component.
    #[arg(long, default_value_os_t = crate::workspace_root().join("target/functions/account.wasm"))]
    account: PathBuf,
    /// Connections kept busy at once.
    #[arg(long, default_value_t = 256, value_parser = crate::positive)]
    connections: usize,
    /// Measured seconds of each workload.
    #[arg(long, default_value_t = 10.0, value_parser = crate::positive_seconds)]
    seconds: f64,
    /// Unmeasured seconds before each workload.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Accounts the sends and transfers pick from, each seeded with 1,000,000,000.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..))]
    accounts: u64,
}

/// Runs `julato-bench transfers`.
pub(crate) fn main(options: Options) -> anyhow::Result<()> {
    crate::require_files(&[
        ("julato binary", &options.paths.julato),
        ("component", &options.account),
    ])?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(run(options))
}

/// What the two workloads measured, after the checks passed.
pub(crate) struct Transfers {
    pub(crate) accounts: u64,
    /// Single `Deposit` sends (measured window).
    pub(crate) sends: Measured,
    /// Transfer transactions (measured window).
    pub(crate) transfers: Measured,
    /// Deposits acknowledged by single sends, warm-up included.
    pub(crate) deposits: u64,
    /// Transactions acknowledged, warm-up included.
    pub(crate) transactions: u64,
    /// The sum of all balances at the end.
    pub(crate) total: i128,
    /// Events the store holds for `account`.
    pub(crate) stored: u64,
}

impl Transfers {
    /// One line on what was checked.
    pub(crate) fn checks(&self) -> String {
        format!(
            "{} accounts hold {} in all = {} seeded + {} acknowledged deposits; the store \
             holds {} account events = {} seeds + {} deposits + 2 x {} transactions; no \
             non-2xx answer",
            grouped(self.accounts),
            grouped_i128(self.total),
            grouped_i128(i128::from(SEED_BALANCE) * i128::from(self.accounts)),
            grouped(self.deposits),
            grouped(self.stored),
            grouped(self.accounts),
            grouped(self.deposits),
            grouped(self.transactions),
        )
    }
}

/// `n` grouped by thousands, as [`grouped`] does.
fn grouped_i128(n: i128) -> String {
    u64::try_from(n).map_or_else(|_| n.to_string(), grouped)
}

/// Deploys `account` as `account` on the server at `base`, seeds `accounts`
/// accounts, measures single sends and then transfer transactions, and checks
/// every answer, the money and the store.
pub(crate) async fn measure(
    api: &Api,
    client: &reqwest::Client,
    base: &str,
    component: &[u8],
    accounts: u64,
    timing: Timing,
) -> anyhow::Result<Transfers> {
    ensure!(accounts >= 2, "a transfer needs at least 2 accounts");
    let response =
        client.put(format!("{base}/v1/functions/account")).body(component.to_vec()).send().await?;
    ensure!(response.status().is_success(), "deploying account: {}", response.status());
    seed(api, accounts).await?;

    let send_base = base.to_owned();
    let deposit = json!({ "type": "Deposit", "data": { "amount": 1 } }).to_string();
    let name = format!("single sends (Deposit 1 to 1 of {} accounts)", grouped(accounts));
    let (sends, sends_warm) = suite::timed(
        &name,
        client,
        timing,
        Arc::new(move |client, n| {
            let key = mix(n) % accounts;
            client
                .post(format!("{send_base}/v1/functions/account/processes/a{key}/events"))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(deposit.clone())
        }),
    )
    .await;
    no_failures(&name, &sends, &sends_warm)?;

    let url = format!("{base}/v1/transactions");
    let name = "transfer transactions (Withdraw 1 from A, Deposit 1 to B)";
    let (transfers, transfers_warm) = suite::timed(
        name,
        client,
        timing,
        Arc::new(move |client, n| {
            let (from, to) = pair(n, accounts);
            client
                .post(&url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(transfer_body(from, to))
        }),
    )
    .await;
    no_failures(name, &transfers, &transfers_warm)?;

    let deposits = sends.ok + sends_warm.ok;
    let transactions = transfers.ok + transfers_warm.ok;
    let total = total_balance(api, accounts).await?;
    let expected = i128::from(SEED_BALANCE) * i128::from(accounts) + i128::from(deposits);
    ensure!(
        total == expected,
        "the money does not add up: the accounts hold {total} in all, expected {expected} \
         ({accounts} x {SEED_BALANCE} seeded + {deposits} acknowledged deposits)"
    );
    let (stored, processes) = suite::stored_events(api, "account").await?;
    let expected = accounts + deposits + 2 * transactions;
    ensure!(
        stored == expected && processes == accounts,
        "account: the store holds {stored} events in {processes} processes; expected {expected} \
         ({accounts} seeds + {deposits} deposits + 2 x {transactions} transactions) in \
         {accounts} processes"
    );
    Ok(Transfers { accounts, sends, transfers, deposits, transactions, total, stored })
}

/// Fails if any answer of a workload, warm-up included, was not 2xx.
fn no_failures(name: &str, measured: &Measured, warm: &Measured) -> anyhow::Result<()> {
    ensure!(
        measured.errors() == 0 && warm.errors() == 0,
        "{name}: non-2xx answers: {} measured, {} in the warm-up",
        measured.error_summary(),
        warm.error_summary()
    );
    ensure!(measured.ok > 0, "{name}: no successful answer");
    Ok(())
}

/// Deposits [`SEED_BALANCE`] into each account, in bulk.
async fn seed(api: &Api, accounts: u64) -> anyhow::Result<()> {
    let keys: Vec<u64> = (0..accounts).collect();
    for chunk in keys.chunks(MAX_BULK_EVENTS as usize) {
        let events: Vec<_> = chunk
            .iter()
            .map(|key| {
                json!({
                    "function": "account",
                    "key": format!("a{key}"),
                    "type": "Deposit",
                    "data": { "amount": SEED_BALANCE },
                })
            })
            .collect();
        let (_, answer) = api.post("/v1/events", json!({ "events": events }).to_string()).await?;
        let accepted = answer["accepted"].as_u64();
        ensure!(
            accepted == Some(chunk.len() as u64) && answer["rejected"].as_u64() == Some(0),
            "seeding {} accounts: {accepted:?} accepted, {} rejected",
            chunk.len(),
            answer["rejected"]
        );
    }
    Ok(())
}

/// The sum of every account's balance, read in cuts of at most
/// [`STATES_PER_REQUEST`] processes.
async fn total_balance(api: &Api, accounts: u64) -> anyhow::Result<i128> {
    let keys: Vec<u64> = (0..accounts).collect();
    let mut total = 0i128;
    for chunk in keys.chunks(STATES_PER_REQUEST) {
        let processes: Vec<_> = chunk
            .iter()
            .map(|key| json!({ "function": "account", "key": format!("a{key}") }))
            .collect();
        let (_, answer) =
            api.post("/v1/states", json!({ "processes": processes }).to_string()).await?;
        let states = answer["states"].as_array().context("POST /v1/states: no states")?;
        ensure!(
            states.len() == chunk.len(),
            "POST /v1/states: {} states for {} processes",
            states.len(),
            chunk.len()
        );
        for (key, state) in chunk.iter().zip(states) {
            let balance = state["state"]["balance"]
                .as_i64()
                .with_context(|| format!("account a{key}: no balance in {state}"))?;
            total += i128::from(balance);
        }
    }
    Ok(total)
}

/// The body of one transfer: `Withdraw` 1 from `from`, `Deposit` 1 to `to`.
fn transfer_body(from: u64, to: u64) -> String {
    format!(
        "{{\"events\":[\
         {{\"function\":\"account\",\"key\":\"a{from}\",\"type\":\"Withdraw\",\"data\":{{\"amount\":1}}}},\
         {{\"function\":\"account\",\"key\":\"a{to}\",\"type\":\"Deposit\",\"data\":{{\"amount\":1}}}}\
         ]}}"
    )
}

/// Two different accounts for the `n`-th transfer, uniformly at random.
fn pair(n: u64, accounts: u64) -> (u64, u64) {
    let from = mix(2 * n) % accounts;
    let to = (from + 1 + mix(2 * n + 1) % (accounts - 1)) % accounts;
    (from, to)
}

/// SplitMix64's output function: a well-mixed hash of `n`, so the `n`-th
/// request picks its accounts without a shared random state.
fn mix(n: u64) -> u64 {
    let mut z = n.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

async fn run(options: Options) -> anyhow::Result<()> {
    let timing = Timing {
        connections: options.connections,
        seconds: options.seconds,
        warmup: options.warmup,
    };
    let load_before = load_average();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let component = std::fs::read(&options.account)
        .with_context(|| format!("reading {}", options.account.display()))?;
    let client = suite::http_client(options.connections, BULK_REQUEST_TIMEOUT)?;
    let server = Server::start(&options.paths.julato)?;
    let base = server.url.clone();
    eprintln!(
        "julato-bench transfers: {} on {base}; {} accounts, {} connections, {} s measured \
         after {} s warm-up; {cores} cores shared by server and load generator, load average \
         {load_before}",
        options.paths.julato.display(),
        grouped(options.accounts),
        options.connections,
        options.seconds,
        options.warmup
    );
    let api = Api::new(&client, &server);
    let measured = measure(&api, &client, &base, &component, options.accounts, timing).await;
    server.stop();
    let t = measured?;

    let (sends, transfers) = (t.sends.rate(), t.transfers.rate());
    let mut table = Table::new();
    table.load_preset(ASCII_MARKDOWN).set_header([
        "workload",
        "per second",
        "events/s",
        "p50",
        "p99",
        "vs single sends/s",
    ]);
    table.add_row([
        format!("single sends (Deposit, {} accounts)", grouped(t.accounts)),
        format!("{} sends/s", history::rate(sends)),
        per_s(sends),
        ms2(t.sends.p(0.5)),
        ms2(t.sends.p(0.99)),
        x(1.0),
    ]);
    table.add_row([
        "transfer transactions (Withdraw A + Deposit B)".to_owned(),
        format!("{} tx/s", history::rate(transfers)),
        per_s(2.0 * transfers),
        ms2(t.transfers.p(0.5)),
        ms2(t.transfers.p(0.99)),
        x(ratio(transfers, sends)),
    ]);
    for column in 1..6 {
        if let Some(column) = table.column_mut(column) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    println!("{table}");
    println!();
    println!(
        "HTTP: {} connections, {} s measured after {} s warm-up per workload; {cores} cores \
         shared by server and load generator",
        options.connections, options.seconds, options.warmup
    );
    println!("checks: {}", t.checks());
    println!("load average: {load_before} at the start, {} at the end", load_average());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_two_accounts_in_range() {
        for accounts in [2, 3, 1000] {
            for n in 0..10_000 {
                let (from, to) = pair(n, accounts);
                assert!(from < accounts && to < accounts && from != to);
            }
        }
    }

    #[test]
    fn transfer_body_is_json() {
        let body: serde_json::Value = serde_json::from_str(&transfer_body(3, 7)).unwrap();
        assert_eq!(body["events"][0]["key"], "a3");
        assert_eq!(body["events"][0]["type"], "Withdraw");
        assert_eq!(body["events"][1]["key"], "a7");
        assert_eq!(body["events"][1]["data"]["amount"], 1);
    }
}
