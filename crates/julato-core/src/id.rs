//! Identifiers: function names, process keys, log positions and versions, each a
//! newtype so that a seq is never passed where a version is meant.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest function name accepted.
pub const MAX_FUNCTION_NAME_LEN: usize = 64;
/// Longest process key accepted, in bytes.
pub const MAX_PROCESS_KEY_LEN: usize = 256;

/// Why a function name or process key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    #[error("{what} is empty")]
    Empty { what: &'static str },
    #[error("{what} is longer than {max} bytes")]
    TooLong { what: &'static str, max: usize },
    #[error("{what} contains the character {found:?}, which is not allowed")]
    BadCharacter { what: &'static str, found: char },
    #[error("{what} must start with a lowercase letter")]
    MustStartWithLetter { what: &'static str },
    #[error("{what} `{name}` is reserved")]
    Reserved { what: &'static str, name: String },
}

/// Name of a deployed function: lowercase ASCII letters, digits, `-` and `_`,
/// starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FunctionName(String);

impl FunctionName {
    /// Validates and wraps a function name.
    ///
    /// # Errors
    /// Returns [`InvalidName`] when the name is empty, too long, does not start
    /// with a letter or contains anything but `a-z`, `0-9`, `-` and `_`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        let what = "function name";
        if name.is_empty() {
            return Err(InvalidName::Empty { what });
        }
        if name.len() > MAX_FUNCTION_NAME_LEN {
            return Err(InvalidName::TooLong { what, max: MAX_FUNCTION_NAME_LEN });
        }
        if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(InvalidName::MustStartWithLetter { what });
        }
        for (i, c) in name.chars().enumerate() {
            let ok =
                c.is_ascii_lowercase() || (i > 0 && (c.is_ascii_digit() || c == '-' || c == '_'));
            if !ok {
                return Err(InvalidName::BadCharacter { what, found: c });
            }
        }
        Ok(Self(name))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FunctionName {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<FunctionName> for String {
    fn from(value: FunctionName) -> Self {
        value.0
    }
}

impl fmt::Display for FunctionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Key of a process within its function: any printable UTF-8 without `/`,
/// control characters or path tricks, at most [`MAX_PROCESS_KEY_LEN`] bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ProcessKey(String);

impl ProcessKey {
    /// Validates and wraps a process key.
    ///
    /// # Errors
    /// Returns [`InvalidName`] for an empty or over-long key, one holding `/`,
    /// `\`, a control character, or one that is `.` or `..`.
    pub fn new(key: impl Into<String>) -> Result<Self, InvalidName> {
        let key = key.into();
        let what = "process key";
        if key.is_empty() {
            return Err(InvalidName::Empty { what });
        }
        if key.len() > MAX_PROCESS_KEY_LEN {
            return Err(InvalidName::TooLong { what, max: MAX_PROCESS_KEY_LEN });
        }
        if key == "." || key == ".." {
            return Err(InvalidName::Reserved { what, name: key });
        }
        if let Some(c) = key.chars().find(|c| c.is_control() || *c == '/' || *c == '\\') {
            return Err(InvalidName::BadCharacter { what, found: c });
        }
        Ok(Self(key))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ProcessKey {
    type Error = InvalidName;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<ProcessKey> for String {
    fn from(value: ProcessKey) -> Self {
        value.0
    }
}

impl fmt::Display for ProcessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One addressable process, `function/key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessId {
    pub function: FunctionName,
    pub key: ProcessKey,
}

impl ProcessId {
    /// Checks both names.
    ///
    /// # Errors
    /// [`InvalidName`] when the function name or the key is not allowed.
    pub fn parse(function: &str, key: &str) -> Result<Self, InvalidName> {
        Ok(Self::new(FunctionName::new(function)?, ProcessKey::new(key)?))
    }

    pub fn new(function: FunctionName, key: ProcessKey) -> Self {
        Self { function, key }
    }
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.function, self.key)
    }
}

/// Position of an event in the global log. Strictly increasing in commit order;
/// a rejected event leaves its number unused, so the log may have gaps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Seq(pub u64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Number of events applied to a process. A process's versions are 1, 2, 3 …
/// with no gap; version 0 is the initial state.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Version of a deployed function; every deploy makes a new one, starting at 1.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct FunctionVersion(pub u32);

impl fmt::Display for FunctionVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_are_checked() {
        assert!(FunctionName::new("counter").is_ok());
        assert!(FunctionName::new("my-fn_2").is_ok());
        assert!(FunctionName::new("").is_err());
        assert!(FunctionName::new("2fast").is_err());
        assert!(FunctionName::new("Upper").is_err());
        assert!(FunctionName::new("../etc").is_err());
        assert!(FunctionName::new("a".repeat(65)).is_err());
    }

    #[test]
    fn process_keys_are_checked() {
        assert!(ProcessKey::new("N14228").is_ok());
        assert!(ProcessKey::new("user@example.com").is_ok());
        assert!(ProcessKey::new("ünïcode key").is_ok());
        assert!(ProcessKey::new("").is_err());
        assert!(ProcessKey::new("..").is_err());
        assert!(ProcessKey::new("a/b").is_err());
        assert!(ProcessKey::new("a\nb").is_err());
        assert!(ProcessKey::new("k".repeat(257)).is_err());
    }
}
