//! Nexus workflow engine.
//!
//! Data flows one way: a workflow file is parsed ([`parse`]) and validated into a
//! [`plan::Plan`]; the scheduler ([`run::Engine`]) runs it on tokio, choosing models
//! ([`select`]) among [`provider::Provider`]s, recording every step through a
//! [`store::RunStore`] and pushing typed [`events::Event`]s to subscribers.
//!
//! This crate knows nothing of Tauri, SQLite or any provider's wire format.

pub mod breaker;
pub mod diagnostic;
pub mod events;
pub mod human;
pub mod memory;
pub mod parse;
pub mod plan;
pub mod provider;
pub mod route;
pub mod run;
pub mod secrets;
pub mod select;
pub mod store;
pub mod workflow;

pub use diagnostic::{Diagnostic, DiagnosticCode};
pub use events::{Event, EventSink, RunStatus, StepStatus};
pub use plan::{
    FileInputs, Plan, load_file, load_str, load_str_within, resolve_inputs, resolve_inputs_in,
};
pub use provider::{
    ChatChunk, ChatRequest, ChatStream, Locality, ModelInfo, Provider, ProviderError,
    ProviderErrorKind,
};
pub use run::{
    CallbackUrls, ChildSinks, DiscoverError, Engine, EngineConfig, EngineError, McpFunction,
    RunOptions, RunReport,
};
pub use workflow::Workflow;
