//! The flags of `julato serve` that bound what clients may do: API tokens
//! (from the environment or a tokens file) and the rule that a server other
//! hosts can reach has them, the per-client request rate, and the size and
//! count limits of requests and of handler outputs.

use std::net::ToSocketAddrs;
use std::num::NonZeroU32;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Args;
use julato_server::{RateLimit, RequestLimits, Scope, Tokens};

/// Environment variables holding comma-separated tokens of each scope.
const TOKEN_VARIABLES: [(&str, Scope); 2] =
    [("JULATO_ADMIN_TOKEN", Scope::Admin), ("JULATO_CLIENT_TOKEN", Scope::Client)];

#[derive(Debug, Args)]
pub struct AccessArgs {
    /// File of API tokens, one `admin TOKEN` or `client TOKEN` per line (`#`
    /// at the start of a line or after a blank starts a comment). Adds to the comma-separated lists in
    /// JULATO_ADMIN_TOKEN and JULATO_CLIENT_TOKEN.
    #[arg(long, env = "JULATO_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Requests per second each client may make: each token, or each address
    /// when no tokens are configured (default: no limit).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rate_limit: Option<u32>,
    /// Requests a client may make at once after a pause (default: one second's
    /// worth, the --rate-limit).
    #[arg(long, requires = "rate_limit", value_parser = clap::value_parser!(u32).range(1..))]
    rate_burst: Option<u32>,
}

#[derive(Debug, Args)]
pub struct LimitArgs {
    /// Largest event data, in KiB of JSON or raw bytes (`event_too_large`).
    #[arg(long, default_value_t = (julato_server::MAX_EVENT_DATA >> 10) as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_event_kib: u64,
    /// Largest state a handler may return, in KiB of JSON (`state_too_large`;
    /// default: 1024).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_state_kib: Option<u64>,
    /// Largest reply a handler may return, in KiB of JSON (`reply_too_large`;
    /// default: 64).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_reply_kib: Option<u64>,
    /// Most events one handler call may emit (`too_many_emits`; default: 100).
    #[arg(long, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    max_emits: Option<u64>,
    /// Largest body of a send or of any request other than a bulk request, a
    /// transaction or a deploy, in KiB (`body_too_large`).
    #[arg(long, default_value_t = (julato_server::MAX_EVENT_BODY >> 10) as u64,
          value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    max_body_kib: u64,
    /// Largest body of a bulk request or a transaction, in MiB (`body_too_large`).
    #[arg(long, default_value_t = (julato_server::MAX_BULK_BODY >> 20) as u64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_bulk_mib: u64,
    /// Most events in one bulk request, and processes in one read of several
    /// (`too_many_events`).
    #[arg(long, default_value_t = julato_server::MAX_BULK_EVENTS as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_bulk_events: u64,
    /// Largest component a deploy accepts, in MiB (`component_too_large`).
    #[arg(long, default_value_t = (julato_server::MAX_COMPONENT_BYTES >> 20) as u64,
          value_parser = clap::value_parser!(u64).range(1..=1024))]
    max_component_mib: u64,
    /// Commands each process-manager shard may queue; past it a send is
    /// answered 503 `overloaded` with `Retry-After`.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    queue_capacity: u64,
    /// Sends of one process that may wait at once; past it a send to that
    /// process is answered 429 `process_overloaded`, so one hot process cannot
    /// fill its shard's queue (at most a quarter of `--queue-capacity`).
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    process_queue: u64,
    /// Requests the server works on at once; past it a request is answered
    /// 503 `overloaded` with `Retry-After` (`/healthz` and `/metrics` are
    /// always answered).
    #[arg(long, default_value_t = julato_server::MAX_IN_FLIGHT as u64,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_in_flight: u64,
    /// Seconds a client may leave a request's body unfinished without sending
    /// more; past it the request is answered 408 `body_timeout`.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    body_timeout_secs: u64,
    /// Most events in one transaction (`too_many_events`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_transaction_events: u64,
    /// Most interactive transactions open at once (`overloaded`).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_open_transactions: u64,
}

impl LimitArgs {
    /// Sets the handler output limits the flags give.
    pub fn apply(&self, config: &mut julato_coordinator::Config) {
        if let Some(kib) = self.max_state_kib {
            config.limits.state_bytes = (kib as usize) << 10;
        }
        if let Some(kib) = self.max_reply_kib {
            config.limits.reply_bytes = (kib as usize) << 10;
        }
        if let Some(emits) = self.max_emits {
            config.limits.emits = emits as usize;
        }
        config.queue_capacity = self.queue_capacity as usize;
        config.process_queue = self.process_queue as usize;
        config.transactions = julato_coordinator::transactions::TransactionLimits {
            events: self.max_transaction_events as usize,
            open: self.max_open_transactions as usize,
        };
    }

    /// The limits the HTTP layer checks.
    pub fn requests(&self) -> RequestLimits {
        RequestLimits {
            event_body: (self.max_body_kib as usize) << 10,
            bulk_body: (self.max_bulk_mib as usize) << 20,
            bulk_events: self.max_bulk_events as usize,
            component_bytes: (self.max_component_mib as usize) << 20,
            event_data: (self.max_event_kib as usize) << 10,
            in_flight: self.max_in_flight as usize,
            body_timeout: std::time::Duration::from_secs(self.body_timeout_secs),
        }
    }
}

impl AccessArgs {
    /// The client rate limit, if one is set.
    pub fn rate_limit(&self) -> Option<RateLimit> {
        let per_second = NonZeroU32::new(self.rate_limit?)?;
        let burst = self.rate_burst.and_then(NonZeroU32::new).unwrap_or(per_second);
        Some(RateLimit { per_second, burst })
    }

    /// The API tokens of the environment and of the tokens file.
    ///
    /// # Errors
    /// When a token is malformed or too short, or the file cannot be read or
    /// has a bad line; the error names the variable or the file and line.
    pub fn tokens(&self) -> anyhow::Result<Tokens> {
        let mut tokens = Tokens::default();
        for (variable, scope) in TOKEN_VARIABLES {
            match std::env::var(variable) {
                Ok(list) => tokens.add_list(scope, &list, &format!("`{variable}`"))?,
                Err(std::env::VarError::NotPresent) => {}
                Err(std::env::VarError::NotUnicode(_)) => bail!("`{variable}` is not UTF-8"),
            }
        }
        if let Some(path) = &self.tokens_file {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the tokens file `{}`", path.display()))?;
            tokens
                .add_file(&text)
                .with_context(|| format!("in the tokens file `{}`", path.display()))?;
            if tokens.is_empty() {
                bail!("the tokens file `{}` holds no token", path.display());
            }
        }
        Ok(tokens)
    }
}

/// Refuses to serve other hosts without tokens: any address `listen` resolves
/// to that is not loopback needs them, since anyone reaching the server could
/// otherwise deploy code and restore data.
///
/// # Errors
/// When `listen` does not resolve, or resolves to a non-loopback address and
/// `tokens` is empty.
pub fn check_exposure(listen: &str, tokens: &Tokens) -> anyhow::Result<()> {
    if !tokens.is_empty() {
        return Ok(());
    }
    let addresses =
        listen.to_socket_addrs().with_context(|| format!("resolving the address `{listen}`"))?;
    if let Some(exposed) = addresses.into_iter().find(|a| !a.ip().is_loopback()) {
        bail!(
            "refusing to listen on {exposed} without API tokens: anyone who can reach it \
             could deploy code and restore data. Set JULATO_ADMIN_TOKEN (and \
             JULATO_CLIENT_TOKEN), or give --tokens-file, or listen on a loopback address \
             such as 127.0.0.1:7700"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served_without_tokens() {
        let none = Tokens::default();
        assert!(check_exposure("127.0.0.1:0", &none).is_ok());
        assert!(check_exposure("[::1]:0", &none).is_ok());
        for exposed in ["0.0.0.0:0", "[::]:0", "192.0.2.7:7700"] {
            let error = check_exposure(exposed, &none).expect_err(exposed).to_string();
            assert!(error.contains("without API tokens"), "{error}");
        }
        let mut tokens = Tokens::default();
        tokens.add(Scope::Client, "0123456789abcdef", "test").expect("a valid token");
        assert!(check_exposure("0.0.0.0:0", &tokens).is_ok());
    }
}
