//! What Julato remembers about a deployed function and its versions.

use serde::{Deserialize, Serialize};

use crate::{EventTime, FunctionName, FunctionVersion};

/// One immutable deployed version of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployedVersion {
    pub version: FunctionVersion,
    /// SHA-256 of the component bytes, hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// The event types this version handles, sorted.
    pub event_types: Vec<String>,
    pub deployed_at: EventTime,
}

/// A function and every version deployed so far, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    pub name: FunctionName,
    pub versions: Vec<DeployedVersion>,
}

impl FunctionInfo {
    /// The newest version, which handles new events.
    pub fn latest(&self) -> Option<&DeployedVersion> {
        self.versions.last()
    }

    /// The version that would be made by the next deploy.
    pub fn next_version(&self) -> FunctionVersion {
        FunctionVersion(self.latest().map_or(1, |v| v.version.0 + 1))
    }
}
