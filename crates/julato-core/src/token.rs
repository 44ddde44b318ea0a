//! Causal tokens: what a client hands back to say "observe at least what I saw".
//!
//! A token is a vector of log positions, one per log partition. The embedded
//! store has one partition (0) holding the whole log; a cluster whose nodes
//! each own a partition of the log names one position per partition, and a
//! node serves a read only once every partition it reads from has reached the
//! token's position for it. Tokens merge by taking the larger position of each
//! partition, so a client that talks to several nodes keeps one token.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::Seq;

/// The partition of the embedded store: the whole log.
pub const LOCAL_PARTITION: u32 = 0;

/// Most partitions one token may name; keeps a hostile token's cost bounded.
const MAX_PARTITIONS: usize = 1024;

/// Covers, for each partition it names, every event of that partition up to
/// and including the position given; partitions it does not name are not
/// constrained.
///
/// Written as `v2.` followed by `PARTITION-SEQ` pairs joined by `.`, such as
/// `v2.0-42` or `v2.0-42.3-17`. The older `v1.SEQ` form reads as partition 0.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CausalToken {
    positions: BTreeMap<u32, Seq>,
}

impl CausalToken {
    /// A token covering the local log up to `seq`.
    pub fn at(seq: Seq) -> Self {
        Self::default().with(LOCAL_PARTITION, seq)
    }

    /// This token, also covering `partition` up to `seq` (keeps the larger).
    #[must_use]
    pub fn with(mut self, partition: u32, seq: Seq) -> Self {
        if seq.0 > 0 {
            let entry = self.positions.entry(partition).or_insert(seq);
            *entry = (*entry).max(seq);
        }
        self
    }

    /// The position this token requires of `partition` (`Seq(0)`: nothing).
    pub fn position(&self, partition: u32) -> Seq {
        self.positions.get(&partition).copied().unwrap_or(Seq(0))
    }

    /// The position required of the local log.
    pub fn seq(&self) -> Seq {
        self.position(LOCAL_PARTITION)
    }

    /// Every partition this token constrains, with its position.
    pub fn positions(&self) -> impl Iterator<Item = (u32, Seq)> + '_ {
        self.positions.iter().map(|(p, s)| (*p, *s))
    }

    /// The smallest token covering both.
    #[must_use]
    pub fn merge(mut self, other: &CausalToken) -> Self {
        for (partition, seq) in other.positions() {
            self = self.with(partition, seq);
        }
        self
    }

    /// Whether everything `other` covers is covered by this token too.
    pub fn covers(&self, other: &CausalToken) -> bool {
        other.positions().all(|(partition, seq)| self.position(partition) >= seq)
    }
}

impl fmt::Display for CausalToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("v2")?;
        if self.positions.is_empty() {
            return write!(f, ".{LOCAL_PARTITION}-0");
        }
        for (partition, seq) in &self.positions {
            write!(f, ".{partition}-{}", seq.0)?;
        }
        Ok(())
    }
}

/// The token text was not one Julato writes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a causal token (expected v2.PARTITION-SEQ[.PARTITION-SEQ...])")]
pub struct InvalidToken(pub String);

impl FromStr for CausalToken {
    type Err = InvalidToken;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidToken(s.chars().take(80).collect());
        if let Some(seq) = s.strip_prefix("v1.") {
            let seq = seq.parse::<u64>().map_err(|_| invalid())?;
            return Ok(Self::at(Seq(seq)));
        }
        let rest = s.strip_prefix("v2.").ok_or_else(invalid)?;
        let mut token = CausalToken::default();
        for (count, pair) in rest.split('.').enumerate() {
            if count >= MAX_PARTITIONS {
                return Err(invalid());
            }
            let (partition, seq) = pair.split_once('-').ok_or_else(invalid)?;
            let partition = partition.parse::<u32>().map_err(|_| invalid())?;
            let seq = seq.parse::<u64>().map_err(|_| invalid())?;
            token = token.with(partition, Seq(seq));
        }
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip() {
        let t = CausalToken::at(Seq(42));
        assert_eq!(t.to_string(), "v2.0-42");
        assert_eq!("v2.0-42".parse::<CausalToken>().unwrap(), t);
        assert_eq!("v1.42".parse::<CausalToken>().unwrap(), t);
        let two = CausalToken::at(Seq(5)).with(3, Seq(17));
        assert_eq!(two.to_string(), "v2.0-5.3-17");
        assert_eq!(two.to_string().parse::<CausalToken>().unwrap(), two);
        assert_eq!(CausalToken::default().to_string(), "v2.0-0");
        assert_eq!("v2.0-0".parse::<CausalToken>().unwrap(), CausalToken::default());
        for bad in ["42", "v1.x", "v2.", "v2.0", "v2.0-x", "v2.a-1", "v3.0-1", "v2.0-1."] {
            assert!(bad.parse::<CausalToken>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_merge_and_cover_per_partition() {
        let a = CausalToken::at(Seq(10)).with(1, Seq(3));
        let b = CausalToken::at(Seq(7)).with(2, Seq(9));
        let m = a.clone().merge(&b);
        assert_eq!(m.position(0), Seq(10));
        assert_eq!(m.position(1), Seq(3));
        assert_eq!(m.position(2), Seq(9));
        assert!(m.covers(&a) && m.covers(&b));
        assert!(!a.covers(&b), "a says nothing of partition 2");
        assert!(a.covers(&CausalToken::default()));
    }
}
