//! The catalog of deployed functions: every version's metadata in memory, the
//! component bytes in the store and the compiled code in the executor.

use std::collections::BTreeMap;
use std::sync::Arc;

use julato_core::{
    Clock, DeployedVersion, FunctionInfo, FunctionName, FunctionVersion, SystemClock,
};
use julato_executor::{Executor, Loaded};
use julato_store::{Commit, Store};
use parking_lot::{Mutex, RwLock};

use crate::SendError;

/// Why a deploy failed.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(transparent)]
    Component(#[from] julato_executor::Error),
    #[error("the component handles no event type")]
    NoEventTypes,
    #[error("cannot store the function: {0}")]
    Storage(#[from] julato_store::Error),
}

/// Deployed functions and their versions; cheap to share behind an `Arc`.
pub struct Catalog {
    store: Store,
    executor: Arc<Executor>,
    functions: RwLock<BTreeMap<FunctionName, FunctionInfo>>,
    deploying: Mutex<()>,
}

impl Catalog {
    /// Loads the metadata of every deployed function from the store.
    ///
    /// # Errors
    /// Fails when the store cannot be read.
    pub fn open(store: Store, executor: Arc<Executor>) -> Result<Self, julato_store::Error> {
        let functions = store.functions()?.into_iter().map(|f| (f.name.clone(), f)).collect();
        Ok(Self { store, executor, functions: RwLock::new(functions), deploying: Mutex::new(()) })
    }

    pub fn executor(&self) -> &Arc<Executor> {
        &self.executor
    }

    /// Every function, by name.
    pub fn list(&self) -> Vec<FunctionInfo> {
        self.functions.read().values().cloned().collect()
    }

    /// One function with its versions.
    pub fn get(&self, name: &FunctionName) -> Option<FunctionInfo> {
        self.functions.read().get(name).cloned()
    }

    /// The version that handles new events.
    pub fn latest(&self, name: &FunctionName) -> Option<FunctionVersion> {
        self.functions.read().get(name).and_then(|f| f.latest()).map(|v| v.version)
    }

    /// Compiled code of a version, compiled or loaded from the cache on first use.
    ///
    /// # Errors
    /// [`SendError::Component`] when the component is missing or cannot be compiled.
    pub fn loaded(
        &self,
        name: &FunctionName,
        version: FunctionVersion,
    ) -> Result<Arc<Loaded>, SendError> {
        self.executor
            .load(name, version, || {
                self.store
                    .component(name, version)
                    .map_err(|e| julato_executor::Error::InvalidComponent(e.to_string()))?
                    .ok_or_else(|| {
                        julato_executor::Error::InvalidComponent(format!(
                            "component of `{name}` version {version} is missing from the store"
                        ))
                    })
            })
            .map_err(|e| SendError::Component(e.to_string()))
    }

    /// Deploys a new immutable version of a function from component bytes. The
    /// same bytes as the newest version make no new version: the answer is that
    /// version, with `false` for "not created".
    ///
    /// # Errors
    /// [`DeployError`] when the bytes are not a fitting component, the component
    /// cannot describe itself, or the store fails.
    pub fn deploy(
        &self,
        name: &FunctionName,
        bytes: Vec<u8>,
    ) -> Result<(DeployedVersion, bool), DeployError> {
        let loaded = self.executor.compile(&bytes)?;
        let mut event_types = self.executor.event_types(&loaded)?;
        event_types.sort();
        event_types.dedup();
        if event_types.is_empty() {
            return Err(DeployError::NoEventTypes);
        }

        let _one_at_a_time = self.deploying.lock();
        let mut info = self
            .get(name)
            .unwrap_or_else(|| FunctionInfo { name: name.clone(), versions: Vec::new() });
        if let Some(latest) = info.latest().filter(|v| v.digest == loaded.digest) {
            return Ok((latest.clone(), false));
        }
        let deployed = DeployedVersion {
            version: info.next_version(),
            digest: loaded.digest.clone(),
            size: bytes.len() as u64,
            event_types,
            deployed_at: SystemClock.now(),
        };
        info.versions.push(deployed.clone());
        let commit =
            Commit { deploy: Some((info.clone(), deployed.version, bytes)), ..Commit::default() };
        self.store.append(commit)?;
        self.functions.write().insert(name.clone(), info);
        tracing::info!(function = %name, version = %deployed.version, digest = %deployed.digest, "deployed");
        Ok((deployed, true))
    }
}
