//! Causal tokens: what a client hands back to say "observe at least what I saw".

use std::fmt;
use std::str::FromStr;

use crate::Seq;

/// Covers every event of the log up to and including `seq`.
///
/// Written as `v1.<seq>`; the prefix leaves room for a token that names one
/// position per log partition once several nodes own parts of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct CausalToken {
    pub seq: Seq,
}

impl fmt::Display for CausalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v1.{}", self.seq.0)
    }
}

/// The token text was not one Julato writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a causal token")]
pub struct InvalidToken(pub String);

impl FromStr for CausalToken {
    type Err = InvalidToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("v1.")
            .and_then(|n| n.parse::<u64>().ok())
            .map(|n| CausalToken { seq: Seq(n) })
            .ok_or_else(|| InvalidToken(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = CausalToken { seq: Seq(42) };
        assert_eq!(t.to_string(), "v1.42");
        assert_eq!("v1.42".parse::<CausalToken>().unwrap(), t);
        assert!("42".parse::<CausalToken>().is_err());
        assert!("v1.x".parse::<CausalToken>().is_err());
    }
}
