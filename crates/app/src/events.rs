//! Events posted to runs for their `event` steps, and runs' callback URLs.
//!
//! An event is stored first ([`nexus_store::SqliteStore::post_event`]) and then
//! announced to the engine, so a run that is down when its event comes takes it when it
//! resumes. A run's callback URL is `{base}/callbacks/{run id}/{key}`, where the key is
//! the HMAC-SHA256 of the run id under a random secret of the database (the first 16
//! bytes, hex): a caller who knows the URL may post that run's events without the API
//! token, as with n8n's `$execution.resumeUrl`, and cannot guess another run's.
//!
//! Invariant: an event is accepted only for a run that exists and has not finished;
//! nothing is stored for a refused one.

use std::sync::Arc;

use hmac::{Hmac, Mac};
use nexus_engine::CallbackUrls;
use serde::Serialize;
use sha2::Sha256;

use crate::desktop::Desktop;
use crate::error::{Error, Result};

/// The name of the database secret that keys callback URLs.
const SECRET: &str = "callback";
/// Bytes of the HMAC kept in a callback key (128 bits).
const KEY_BYTES: usize = 16;

/// An event accepted for a run.
#[derive(Debug, Clone, PartialEq, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct PostedEventView {
    /// The run.
    pub run_id: String,
    /// The event's name.
    pub name: String,
    /// The stored event's number (increasing in the database).
    pub event_id: i64,
}

/// Makes callback URLs under one base URL.
struct Callbacks {
    base: String,
    secret: Vec<u8>,
}

impl CallbackUrls for Callbacks {
    fn url(&self, run_id: &str) -> Option<String> {
        Some(format!(
            "{}/callbacks/{run_id}/{}",
            self.base,
            callback_key(&self.secret, run_id)
        ))
    }
}

/// The key of run `run_id`'s callback URL under `secret` (32 hex digits).
pub fn callback_key(secret: &[u8], run_id: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return String::new();
    };
    mac.update(run_id.as_bytes());
    hex::encode(&mac.finalize().into_bytes()[..KEY_BYTES])
}

/// Whether `key` is run `run_id`'s callback key, compared in constant time.
fn key_matches(secret: &[u8], run_id: &str, key: &str) -> bool {
    let Ok(given) = hex::decode(key) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(run_id.as_bytes());
    given.len() == KEY_BYTES && mac.verify_truncated_left(&given).is_ok()
}

impl Desktop {
    /// Where this process receives callbacks (`http://127.0.0.1:7878`, no trailing
    /// slash): runs started afterwards render `{{ run.callback_url }}` under it. Set
    /// once by `nexus serve`; without it the callback URL renders empty.
    ///
    /// # Errors
    /// [`Error::Store`] when the secret cannot be read or made.
    pub async fn set_callback_base(&self, base: &str) -> Result<()> {
        let secret = self.store().await?.instance_secret(SECRET).await?;
        let urls: Arc<dyn CallbackUrls> = Arc::new(Callbacks {
            base: base.trim_end_matches('/').to_string(),
            secret,
        });
        self.set_callback_urls(urls).await
    }

    /// Stores event `name` with `body` for run `run_id` (a full id) and wakes the run's
    /// `event` steps waiting for it in this process.
    ///
    /// # Errors
    /// [`Error::InvalidEvent`] (a bad name), [`Error::UnknownRun`], [`Error::NotActive`]
    /// (the run finished), [`Error::TooManyEvents`], [`Error::Store`].
    pub async fn post_event(
        &self,
        run_id: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<PostedEventView> {
        if !nexus_engine::plan::valid_event_name(name) {
            return Err(Error::InvalidEvent {
                message: format!(
                    "`{name}` cannot name an event: use 1 to {} letters, digits, `-`, `_` or `.`",
                    nexus_engine::plan::MAX_EVENT_NAME
                ),
            });
        }
        let store = self.store().await?;
        let run = store.get_run(run_id).await?;
        if run.run_id != run_id {
            return Err(Error::UnknownRun {
                run_id: run_id.to_string(),
                message: "events need the run's full id".to_string(),
            });
        }
        crate::runs::ensure_unfinished(&run)?;
        let event_id = store.post_event(run_id, name, body).await?;
        if let Some(engine) = self.engine_if_started().await {
            engine.event_posted(run_id, name);
        }
        Ok(PostedEventView {
            run_id: run_id.to_string(),
            name: name.to_string(),
            event_id,
        })
    }

    /// [`Desktop::post_event`] through a callback URL: `key` must be the run's callback
    /// key, else the run is reported unknown (a wrong key tells nothing about which runs
    /// exist).
    ///
    /// # Errors
    /// [`Error::UnknownRun`] for a wrong key; those of [`Desktop::post_event`].
    pub async fn post_callback(
        &self,
        run_id: &str,
        key: &str,
        name: &str,
        body: &serde_json::Value,
    ) -> Result<PostedEventView> {
        let secret = self.store().await?.instance_secret(SECRET).await?;
        if !key_matches(&secret, run_id, key) {
            return Err(Error::UnknownRun {
                run_id: run_id.to_string(),
                message: "no run has this callback URL".to_string(),
            });
        }
        self.post_event(run_id, name, body).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_matches_only_its_run_and_secret() {
        let key = callback_key(b"secret-one", "run-1");
        assert_eq!(key.len(), 32);
        assert!(key_matches(b"secret-one", "run-1", &key));
        assert!(!key_matches(b"secret-one", "run-2", &key));
        assert!(!key_matches(b"secret-two", "run-1", &key));
        assert!(!key_matches(b"secret-one", "run-1", &key[..30]));
        assert!(!key_matches(b"secret-one", "run-1", "not hex"));
    }
}
