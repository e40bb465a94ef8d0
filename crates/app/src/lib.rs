//! What the Nexus desktop app does, with no Tauri dependency: the shell in `src-tauri`
//! exposes [`Desktop`]'s methods as commands, one line each, and its tests run here
//! against a real SQLite file, the real embedded model and loopback HTTP servers.
//!
//! [`setup`] is shared with the `nexus` CLI: both build providers, the engine's settings
//! and partial runs the same way.

pub mod desktop;
pub mod discover;
mod error;
pub mod events;
pub mod keys;
pub mod metrics;
pub mod notify;
pub mod providers;
pub mod runs;
pub mod service;
pub mod setup;
pub mod telemetry;
pub mod triggers;

pub use desktop::{Desktop, Paths, RunRequest, Settings};
pub use error::{Error, Result};
/// The engine, for the CLI (which reaches it only through this crate).
pub use nexus_engine as engine;
/// The run database, for the CLI.
pub use nexus_store as store;
