//! API keys of cloud providers, kept in the OS keychain (macOS Keychain, Windows
//! Credential Manager, the Secret Service on Linux via the `keyring` crate) and never in
//! a file or the run database. Keychain calls can block (D-Bus, Security framework), so
//! callers run them on a blocking thread.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::{Error, Result};

/// The cloud providers whose key the desktop app manages, by provider id.
pub const CLOUD_PROVIDERS: &[&str] = &["openai"];

/// The keychain service name entries are stored under (`nexus` / provider id).
pub const SERVICE: &str = "nexus";

/// Where API keys live.
pub trait SecretStore: Send + Sync {
    /// The key stored for `provider`, if any.
    ///
    /// # Errors
    /// [`Error::Keychain`] when the keychain cannot be read.
    fn get(&self, provider: &str) -> Result<Option<String>>;
    /// Stores `key` for `provider`, replacing any earlier one.
    ///
    /// # Errors
    /// [`Error::Keychain`].
    fn set(&self, provider: &str, key: &str) -> Result<()>;
    /// Removes the key for `provider`; removing a missing key is not an error.
    ///
    /// # Errors
    /// [`Error::Keychain`].
    fn delete(&self, provider: &str) -> Result<()>;
}

/// The OS keychain through `keyring` (service [`SERVICE`], user = provider id).
#[derive(Debug, Clone)]
pub struct Keychain {
    service: String,
}

impl Keychain {
    /// Entries under `service` (normally [`SERVICE`]).
    pub fn new(service: &str) -> Self {
        Keychain {
            service: service.to_string(),
        }
    }

    fn entry(&self, provider: &str) -> Result<keyring::Entry> {
        Ok(keyring::Entry::new(&self.service, provider)?)
    }
}

impl SecretStore for Keychain {
    fn get(&self, provider: &str) -> Result<Option<String>> {
        match self.entry(provider)?.get_password() {
            Ok(key) => Ok(Some(key)),
            Err(keyring::Error::NoEntry) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn set(&self, provider: &str, key: &str) -> Result<()> {
        Ok(self.entry(provider)?.set_password(key)?)
    }

    fn delete(&self, provider: &str) -> Result<()> {
        match self.entry(provider)?.delete_credential() {
            Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Keys held in this process only, for machines without a keychain service (a headless
/// CI machine) and for tests; nothing is written anywhere.
#[derive(Debug, Default)]
pub struct ProcessSecrets {
    keys: Mutex<HashMap<String, String>>,
}

impl ProcessSecrets {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl SecretStore for ProcessSecrets {
    fn get(&self, provider: &str) -> Result<Option<String>> {
        Ok(self.lock().get(provider).cloned())
    }

    fn set(&self, provider: &str, key: &str) -> Result<()> {
        self.lock().insert(provider.to_string(), key.to_string());
        Ok(())
    }

    fn delete(&self, provider: &str) -> Result<()> {
        self.lock().remove(provider);
        Ok(())
    }
}

/// Checks a provider id against [`CLOUD_PROVIDERS`].
///
/// # Errors
/// [`Error::NotActive`] naming the known providers.
pub fn known_provider(provider: &str) -> Result<()> {
    if CLOUD_PROVIDERS.contains(&provider) {
        Ok(())
    } else {
        Err(Error::NotActive {
            message: format!(
                "no cloud provider `{provider}`; known: {}",
                CLOUD_PROVIDERS.join(", ")
            ),
        })
    }
}

/// The keychain account of a tool secret: `secret:NAME` (next to the providers' keys,
/// which are stored under their provider id).
pub fn secret_account(name: &str) -> String {
    format!("secret:{name}")
}

/// The secrets of workflows' tools (an `http` tool's `auth`) for the engine: the
/// [`SecretStore`] (the OS keychain) under [`secret_account`], else the environment
/// variable `NEXUS_SECRET_<NAME>` (a headless machine or CI, where there may be no
/// keychain service: a keychain that cannot be read falls back to the environment too).
pub struct ToolSecrets {
    store: std::sync::Arc<dyn SecretStore>,
}

impl ToolSecrets {
    /// Secrets from `store`, then the environment.
    pub fn new(store: std::sync::Arc<dyn SecretStore>) -> Self {
        ToolSecrets { store }
    }
}

impl nexus_engine::secrets::SecretResolver for ToolSecrets {
    fn resolve(&self, name: &str) -> std::result::Result<Option<String>, String> {
        match self.store.get(&secret_account(name)) {
            Ok(Some(v)) => return Ok(Some(v)),
            Ok(None) => {}
            Err(e) => tracing::debug!(
                "the keychain cannot be read ({e}); secret {name} is looked up in the environment"
            ),
        }
        nexus_engine::secrets::EnvSecrets.resolve(name)
    }

    fn how_to_set(&self, name: &str) -> String {
        format!(
            "store it in the OS keychain with `nexus secret set {name}` (the value is read from standard input), or set the environment variable {}",
            nexus_engine::secrets::env_var(name)
        )
    }
}
