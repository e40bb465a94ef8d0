//! Cross-crate end-to-end tests: real workflows, real tokens from the embedded model, a
//! real SQLite file, real loopback servers. One test binary (modules below).

mod agent;
mod anthropic;
mod embedded;
mod embeddings;
mod fallback;
mod faults;
mod flood;
mod flow;
mod governance;
mod hosts;
mod http_auth;
mod loaded_models;
mod mcp;
mod memory;
mod ollama;
mod providers;
mod routing;
mod server_logs;
mod shell;
mod taxonomy;
mod tool_calls;
mod tools;
mod vote;

use std::path::Path;
use std::sync::Arc;

use nexus_engine::events::{CollectingSink, EventSink};
use nexus_engine::provider::Provider;
use nexus_engine::{Engine, EngineConfig, Plan, RunOptions, RunReport};
use nexus_store::SqliteStore;
use tokio_util::sync::CancellationToken;

/// Reading a chat stream in tests.
pub mod chat {
    use futures::StreamExt;
    use nexus_engine::provider::{ChatChunk, ChatRequest, Provider, ProviderError, ToolCall};

    /// Every item of a chat stream, the error that refused it as the only item.
    pub async fn items(
        provider: &dyn Provider,
        req: ChatRequest,
    ) -> Vec<Result<ChatChunk, ProviderError>> {
        match provider.chat(req).await {
            Ok(stream) => stream.collect().await,
            Err(e) => vec![Err(e)],
        }
    }

    /// The text deltas joined.
    pub fn answer(items: &[Result<ChatChunk, ProviderError>]) -> String {
        items
            .iter()
            .filter_map(|i| match i {
                Ok(ChatChunk::Delta(t)) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The tool calls, in order.
    pub fn calls(items: &[Result<ChatChunk, ProviderError>]) -> Vec<ToolCall> {
        items
            .iter()
            .filter_map(|i| match i {
                Ok(ChatChunk::ToolCall(c)) => Some(c.clone()),
                _ => None,
            })
            .collect()
    }
}

/// The embedded provider over the test model.
pub fn embedded() -> anyhow::Result<Arc<dyn Provider>> {
    Ok(Arc::new(nexus_embedded::EmbeddedProvider::new(
        nexus_tests::model_path()?,
    )))
}

/// A store on a fresh temporary file (kept alive by the returned guard).
pub async fn temp_store() -> anyhow::Result<(Arc<SqliteStore>, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("runs.db")).await?;
    Ok((Arc::new(store), dir))
}

/// Loads a workflow from text, panicking with the diagnostics if invalid.
pub fn plan(yaml: &str) -> Arc<Plan> {
    match nexus_engine::load_str(yaml, Some("test.yaml")) {
        Ok(p) => Arc::new(p),
        Err(d) => panic!(
            "invalid test workflow:\n{}",
            nexus_engine::diagnostic::render_all(&d)
        ),
    }
}

/// Loads an example workflow from `workflows/`.
pub fn example(name: &str) -> Arc<Plan> {
    let path = nexus_tests::repo_root().join("workflows").join(name);
    match nexus_engine::load_file(Path::new(&path)) {
        Ok(p) => Arc::new(p),
        Err(d) => panic!("{}", nexus_engine::diagnostic::render_all(&d)),
    }
}

/// An engine over `providers` with an optional store (keep it to run several times with
/// the same breakers and statistics).
pub fn engine(
    providers: Vec<Arc<dyn Provider>>,
    store: Option<Arc<SqliteStore>>,
    config: EngineConfig,
) -> Arc<Engine> {
    Arc::new(Engine::new(
        providers,
        store.map(|s| s as Arc<dyn nexus_engine::store::RunStore>),
        config,
    ))
}

/// Runs `plan` with default inputs on `engine`, returning the report and the events.
pub async fn go(
    engine: &Arc<Engine>,
    plan: Arc<Plan>,
    mut options: RunOptions,
) -> anyhow::Result<(RunReport, Vec<nexus_engine::Event>)> {
    let inputs = nexus_engine::resolve_inputs(&plan, &Default::default())
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let sink = Arc::new(CollectingSink::new());
    options.sinks.push(sink.clone());
    let report = engine.run(plan, inputs, options).await?;
    Ok((report, sink.events()))
}

/// Runs `plan` with default inputs on a new engine over `providers`, returning the report
/// and the events.
pub async fn run_plan(
    plan: Arc<Plan>,
    providers: Vec<Arc<dyn Provider>>,
    store: Option<Arc<SqliteStore>>,
    extra_sinks: Vec<Arc<dyn EventSink>>,
    cancel: CancellationToken,
) -> anyhow::Result<(RunReport, Vec<nexus_engine::Event>)> {
    let options = RunOptions {
        cancel,
        sinks: extra_sinks,
        ..RunOptions::default()
    };
    go(
        &engine(providers, store, EngineConfig::default()),
        plan,
        options,
    )
    .await
}
