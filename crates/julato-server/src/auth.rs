//! Who may call which route: API tokens of two scopes, `admin` and `client`,
//! compared in constant time, the one table of what each route needs, and the
//! middleware that checks a request's token and its client's rate before any
//! handler runs.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use crate::ApiError;
use crate::rate::{Caller, ClientRate, RateLimit};

/// Shortest token accepted, in bytes.
pub const MIN_TOKEN_BYTES: usize = 16;
/// Most of a refused request's body read before answering.
const DRAIN_BYTES: usize = 1 << 20;
/// Longest time spent reading a refused request's body.
const DRAIN_TIME: Duration = Duration::from_secs(2);

/// What a token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    /// Send events (single, bulk, transactions) and read everything.
    Client,
    /// Everything a client may do, plus deploys, checkpoints, restores,
    /// evictions and re-drives of dead letters.
    Admin,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        match text {
            "client" => Some(Scope::Client),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a route asks of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone, token or not.
    Open,
    /// A token of this scope or a wider one.
    Needs(Scope),
}

/// The route table: what each route (method and matched path) needs. A route
/// that is not listed answers `None`, which the middleware treats as admin-only,
/// so a route added without an entry is closed rather than open.
pub(crate) fn access(method: &Method, path: &str) -> Option<Access> {
    use Access::{Needs, Open};
    use Scope::{Admin, Client};

    let method = if method == Method::HEAD { "GET" } else { method.as_str() };
    let access = match (method, path) {
        ("GET", "/healthz" | "/v1/openapi.json") => Open,
        (
            "GET",
            "/v1/functions"
            | "/v1/functions/{function}"
            | "/v1/functions/{function}/processes"
            | "/v1/functions/{function}/processes/{key}"
            | "/v1/functions/{function}/processes/{key}/events"
            | "/v1/log"
            | "/v1/events/{seq}"
            | "/v1/events/{seq}/graph"
            | "/v1/managers"
            | "/v1/checkpoints"
            | "/v1/restores"
            | "/v1/dead-letters"
            | "/v1/transactions/{id}"
            | "/metrics",
        ) => Needs(Client),
        (
            "POST",
            "/v1/functions/{function}/processes/{key}/events"
            | "/v1/events"
            | "/v1/states"
            | "/v1/transactions"
            | "/v1/transactions/begin"
            | "/v1/transactions/{id}/events"
            | "/v1/transactions/{id}/commit"
            | "/v1/transactions/{id}/rollback",
        ) => Needs(Client),
        ("PUT", "/v1/functions/{function}") => Needs(Admin),
        (
            "POST",
            "/v1/checkpoints"
            | "/v1/restore"
            | "/v1/managers/evict"
            | "/v1/dead-letters/{id}/redrive",
        ) => Needs(Admin),
        _ => return None,
    };
    Some(access)
}

/// Why a token or a list of tokens was refused. `origin` names where it came
/// from (an environment variable, a line of a file); no message shows a token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("{origin}: a token is {length} bytes; tokens must be at least {MIN_TOKEN_BYTES}")]
    TooShort { origin: String, length: usize },
    #[error("{origin}: a token may hold only visible ASCII characters other than `,`")]
    InvalidCharacter { origin: String },
    #[error("{origin}: expected `admin TOKEN` or `client TOKEN`")]
    Malformed { origin: String },
    #[error("{origin}: the token is already configured")]
    Duplicate { origin: String },
}

/// The configured API tokens, each kept as its SHA-256 digest with its scope.
/// Empty means no token is needed.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Scope)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("admin", &self.count(Scope::Admin))
            .field("client", &self.count(Scope::Client))
            .finish()
    }
}

impl Tokens {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many tokens have `scope`.
    pub fn count(&self, scope: Scope) -> usize {
        self.entries.iter().filter(|(_, s)| *s == scope).count()
    }

    /// Adds one token.
    ///
    /// # Errors
    /// When it is shorter than [`MIN_TOKEN_BYTES`], holds a character a header
    /// cannot carry (or a `,`), or is configured already.
    pub fn add(&mut self, scope: Scope, token: &str, origin: &str) -> Result<(), TokenError> {
        if !token.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
            return Err(TokenError::InvalidCharacter { origin: origin.to_owned() });
        }
        if token.len() < MIN_TOKEN_BYTES {
            return Err(TokenError::TooShort { origin: origin.to_owned(), length: token.len() });
        }
        let digest = digest(token.as_bytes());
        if self.entries.iter().any(|(known, _)| *known == digest) {
            return Err(TokenError::Duplicate { origin: origin.to_owned() });
        }
        self.entries.push((digest, scope));
        Ok(())
    }

    /// Adds the comma-separated tokens of `list`, such as the value of
    /// `JULATO_ADMIN_TOKEN`; an empty list adds none.
    ///
    /// # Errors
    /// As [`Tokens::add`], for any of them, or an empty item.
    pub fn add_list(&mut self, scope: Scope, list: &str, origin: &str) -> Result<(), TokenError> {
        if list.trim().is_empty() {
            return Ok(());
        }
        for token in list.split(',') {
            self.add(scope, token.trim(), origin)?;
        }
        Ok(())
    }

    /// Adds the tokens of a tokens file: one `admin TOKEN` or `client TOKEN`
    /// per line. A `#` at the start of a line or after a blank starts a
    /// comment that runs to the end of the line (a `#` inside a token is part
    /// of it); blank lines are skipped.
    ///
    /// # Errors
    /// On the first line that is none of these, or whose token
    /// [`Tokens::add`] refuses; the error names the line.
    pub fn add_file(&mut self, text: &str) -> Result<(), TokenError> {
        for (index, line) in text.lines().enumerate() {
            let line = without_comment(line).trim();
            if line.is_empty() {
                continue;
            }
            let origin = format!("line {}", index + 1);
            let mut words = line.split_whitespace();
            let (Some(scope), Some(token), None) = (words.next(), words.next(), words.next())
            else {
                return Err(TokenError::Malformed { origin });
            };
            let scope =
                Scope::parse(scope).ok_or(TokenError::Malformed { origin: origin.clone() })?;
            self.add(scope, token, &origin)?;
        }
        Ok(())
    }

    /// The token `presented` matches, as its index and scope. Its digest is
    /// compared with every configured one, without stopping at a match, in
    /// constant time, so the time taken tells nothing about the tokens.
    pub fn find(&self, presented: &[u8]) -> Option<(usize, Scope)> {
        let presented = digest(presented);
        let mut found = Choice::from(0);
        let mut index = 0u64;
        let mut admin = 0u8;
        for (i, (known, scope)) in self.entries.iter().enumerate() {
            let same = known[..].ct_eq(&presented[..]);
            found |= same;
            index.conditional_assign(&(i as u64), same);
            admin.conditional_assign(&u8::from(*scope == Scope::Admin), same);
        }
        let scope = if admin == 1 { Scope::Admin } else { Scope::Client };
        bool::from(found).then_some((index as usize, scope))
    }
}

/// `line` up to its comment: a `#` at its start or after a blank.
fn without_comment(line: &str) -> &str {
    let mut previous_blank = true;
    for (at, c) in line.char_indices() {
        if c == '#' && previous_blank {
            return &line[..at];
        }
        previous_blank = c.is_whitespace();
    }
    line
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

/// The token of an `Authorization: Bearer TOKEN` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// What the middleware checks: the tokens and, if set, the client rate.
pub(crate) struct Guard {
    tokens: Tokens,
    rate: Option<ClientRate>,
}

impl Guard {
    /// The guard of a configuration, or `None` when it would let everything
    /// through (no tokens, no rate limit), so that no middleware is added.
    pub(crate) fn new(tokens: &Tokens, rate: Option<RateLimit>) -> Option<Arc<Self>> {
        if tokens.is_empty() && rate.is_none() {
            return None;
        }
        Some(Arc::new(Self { tokens: tokens.clone(), rate: rate.map(ClientRate::new) }))
    }

    /// The answer refusing `request`, or `None` when it may go on.
    fn refusal(&self, request: &Request) -> Option<Response> {
        let access = match request.extensions().get::<MatchedPath>() {
            Some(path) => {
                access(request.method(), path.as_str()).unwrap_or(Access::Needs(Scope::Admin))
            }
            // No route matched: the answer is a 404, for which any token will do.
            None => Access::Needs(Scope::Client),
        };
        let Access::Needs(needed) = access else { return None };
        let presented = bearer(request.headers());
        let caller = presented.and_then(|token| self.tokens.find(token.as_bytes()));

        if let Some(rate) = &self.rate {
            let key = match caller {
                Some((index, _)) => Caller::Token(index),
                None => Caller::peer(peer(request)),
            };
            if let Err(wait) = rate.check(&key) {
                return Some(rate_limited(wait));
            }
        }
        if self.tokens.is_empty() {
            return None;
        }
        match caller {
            None => Some(unauthorized(presented.is_some())),
            Some((_, scope)) if scope < needed => Some(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!(
                        "this route needs an `{needed}` token; this one has the `{scope}` scope"
                    ),
                )
                .into_response(),
            ),
            Some(_) => None,
        }
    }
}

/// The middleware: rate first (a caller over its rate learns nothing about its
/// token), then the token against the route table.
pub(crate) async fn check(
    State(guard): State<Arc<Guard>>,
    request: Request,
    next: Next,
) -> Response {
    match guard.refusal(&request) {
        Some(answer) => refuse(request, answer).await,
        None => next.run(request).await,
    }
}

/// Answers a refused request. Its body is read and dropped first, up to
/// [`DRAIN_BYTES`], so that a client still sending it reads the answer rather
/// than a reset connection; past that, the answer closes the connection, so
/// the client does not reuse one the server is about to close.
async fn refuse(request: Request, mut answer: Response) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|length| length.to_str().ok()?.parse::<usize>().ok());
    let drained = declared.is_none_or(|length| length <= DRAIN_BYTES)
        && tokio::time::timeout(DRAIN_TIME, drain(request.into_body())).await.unwrap_or(false);
    if !drained {
        answer.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    answer
}

/// Reads and drops a body; `false` when it is longer than [`DRAIN_BYTES`] or fails.
async fn drain(mut body: Body) -> bool {
    let mut read = 0usize;
    while !body.is_end_stream() {
        match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Ok(frame)) => {
                read += frame.data_ref().map_or(0, |data| data.len());
                if read > DRAIN_BYTES {
                    return false;
                }
            }
            Some(Err(_)) => return false,
        }
    }
    true
}

/// The peer address; unspecified when the server was not started with
/// connection info (all such requests then share one bucket).
fn peer(request: &Request) -> IpAddr {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(addr)| addr.ip())
}

fn unauthorized(presented: bool) -> Response {
    let message = if presented {
        "the API token is not valid"
    } else {
        "this route needs an API token: send `Authorization: Bearer TOKEN`"
    };
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn rate_limited(wait: Duration) -> Response {
    let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    let seconds = seconds.max(1);
    let mut response = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("over this client's request rate; retry in {seconds} s"),
    )
    .into_response();
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADMIN: &str = "admin-0123456789abcdef";
    const CLIENT: &str = "client-0123456789abcdef";

    fn tokens() -> Tokens {
        let mut tokens = Tokens::default();
        tokens.add(Scope::Admin, ADMIN, "test").expect("a valid token");
        tokens
            .add_list(Scope::Client, &format!("{CLIENT}, other-client-token-1"), "test")
            .expect("valid tokens");
        tokens
    }

    #[test]
    fn a_token_is_found_with_its_scope() {
        let tokens = tokens();
        assert_eq!(tokens.find(ADMIN.as_bytes()), Some((0, Scope::Admin)));
        assert_eq!(tokens.find(CLIENT.as_bytes()), Some((1, Scope::Client)));
        assert_eq!(tokens.find(b"other-client-token-1"), Some((2, Scope::Client)));
    }

    #[test]
    fn near_misses_are_unknown() {
        let tokens = tokens();
        let mut same_length = ADMIN.as_bytes().to_vec();
        *same_length.last_mut().expect("not empty") ^= 1;
        assert_eq!(tokens.find(&same_length), None);
        assert_eq!(tokens.find(&ADMIN.as_bytes()[..ADMIN.len() - 1]), None);
        assert_eq!(tokens.find(format!("{ADMIN}x").as_bytes()), None);
        assert_eq!(tokens.find(b""), None);
        assert_eq!(Tokens::default().find(ADMIN.as_bytes()), None);
    }

    #[test]
    fn bad_tokens_are_refused() {
        let mut tokens = Tokens::default();
        let short = tokens.add(Scope::Admin, "short", "`JULATO_ADMIN_TOKEN`").unwrap_err();
        assert_eq!(
            short.to_string(),
            "`JULATO_ADMIN_TOKEN`: a token is 5 bytes; tokens must be at least 16"
        );
        assert!(matches!(
            tokens.add(Scope::Admin, "with a space in the token", "x"),
            Err(TokenError::InvalidCharacter { .. })
        ));
        assert!(matches!(
            tokens.add_list(Scope::Client, "0123456789abcdef,,fedcba9876543210", "x"),
            Err(TokenError::TooShort { length: 0, .. })
        ));
        let mut tokens = Tokens::default();
        tokens.add(Scope::Admin, ADMIN, "x").expect("a valid token");
        assert!(matches!(tokens.add(Scope::Client, ADMIN, "y"), Err(TokenError::Duplicate { .. })));
        assert_eq!(tokens.count(Scope::Client), 0);
    }

    #[test]
    fn tokens_files_name_their_bad_line() {
        let mut tokens = Tokens::default();
        let text = format!("# who may do what\n\nadmin {ADMIN}\n  client   {CLIENT}  \n");
        tokens.add_file(&text).expect("a valid file");
        assert_eq!((tokens.count(Scope::Admin), tokens.count(Scope::Client)), (1, 1));
        assert_eq!(tokens.find(CLIENT.as_bytes()).map(|(_, s)| s), Some(Scope::Client));

        let mut commented = Tokens::default();
        let text = format!("admin {ADMIN} # the operator\nclient {CLIENT}#x\t# a tool\n");
        commented.add_file(&text).expect("a file with comments");
        assert_eq!(commented.find(ADMIN.as_bytes()).map(|(_, s)| s), Some(Scope::Admin));
        assert!(commented.find(CLIENT.as_bytes()).is_none(), "a # inside a token is part of it");
        let with_hash = format!("{CLIENT}#x");
        assert_eq!(commented.find(with_hash.as_bytes()).map(|(_, s)| s), Some(Scope::Client));

        for (text, message) in [
            (format!("admin {ADMIN}\nowner {CLIENT}\n"), "line 2: expected"),
            (format!("admin {ADMIN} extra\n"), "line 1: expected"),
            ("client\n".to_owned(), "line 1: expected"),
            ("\n\nclient tooshort\n".to_owned(), "line 3: a token is 8 bytes"),
        ] {
            let error = Tokens::default().add_file(&text).unwrap_err().to_string();
            assert!(error.starts_with(message), "{error:?} for {text:?}");
            assert!(!error.contains(ADMIN) && !error.contains(CLIENT), "{error} shows a token");
        }
    }

    #[test]
    fn bearer_tokens_are_read_from_the_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer abc"));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("bearer  abc "));
        assert_eq!(bearer(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer(&headers), None);
    }

    /// Every operation of the OpenAPI document (which a test of the routes
    /// keeps complete) has an entry in the route table, and the scope the
    /// document states (`x-julato-scope`) is the one the table enforces.
    #[test]
    fn every_route_has_its_documented_scope() {
        let spec: serde_json::Value =
            serde_json::from_str(include_str!("../openapi.json")).expect("valid JSON");
        let paths = spec["paths"].as_object().expect("paths");
        let mut checked = 0;
        for (path, operations) in paths {
            for (method, operation) in operations.as_object().expect("operations") {
                let Ok(method) = method.to_uppercase().parse::<Method>() else { continue };
                if !operation.is_object() {
                    continue;
                }
                let documented = match operation["x-julato-scope"].as_str() {
                    Some("open") => Access::Open,
                    Some("client") => Access::Needs(Scope::Client),
                    Some("admin") => Access::Needs(Scope::Admin),
                    other => panic!("{method} {path} has no valid `x-julato-scope`: {other:?}"),
                };
                assert_eq!(access(&method, path), Some(documented), "{method} {path}");
                checked += 1;
            }
        }
        assert!(checked >= 28, "only {checked} operations documented");
    }

    #[test]
    fn unlisted_routes_are_closed() {
        assert_eq!(access(&Method::DELETE, "/v1/functions/{function}"), None);
        assert_eq!(access(&Method::POST, "/v1/functions/{function}"), None);
        assert_eq!(access(&Method::HEAD, "/v1/log"), Some(Access::Needs(Scope::Client)));
    }
}
