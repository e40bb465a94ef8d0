//! Capability routing end to end: a `capability:` step runs as the agent with the best
//! observed success and latency, the decision and its reason are stored with the step,
//! and the agents' statistics survive a new engine over the same SQLite file. The two
//! agents' models are real providers on loopback: an OpenAI-compatible server that
//! refuses every call (401) and a scripted Ollama daemon that answers.

use std::sync::Arc;

use nexus_engine::events::StepStatus;
use nexus_engine::provider::Provider;
use nexus_engine::route::AgentChoice;
use nexus_engine::{EngineConfig, RunOptions};
use nexus_llm::{OllamaProvider, OpenAiProvider};
use nexus_store::SqliteStore;
use nexus_tests::scripted::{Behavior, OllamaBehavior, ScriptedOllama, ScriptedServer};

use crate::{engine, go};

const WORKFLOW: &str = r#"
id: routed
agents:
  alpha:
    system: You are alpha.
    model: [openai:refusing]
    capabilities: [summarize]
  beta:
    system: You are beta.
    model: [ollama:answering:latest]
    capabilities: [summarize, translate]
steps:
  - id: sum
    kind: llm
    capability: summarize
    prompt: Summarize the news.
    fallback: {next_model: false, simplify: false}
"#;

fn choice(rec: &nexus_engine::store::StepRecord) -> AgentChoice {
    rec.selection
        .as_ref()
        .and_then(|s| s.agent.clone())
        .expect("the routing decision is recorded")
}

#[tokio::test]
async fn capability_steps_go_to_the_agent_that_does_better() -> anyhow::Result<()> {
    let refusing = ScriptedServer::start(vec![Behavior::Status(401)]).await?;
    let answering = ScriptedOllama::start(
        "answering:latest",
        vec![OllamaBehavior::Stream(vec!["short".into(), ".".into()])],
    )
    .await?;
    let providers: Vec<Arc<dyn Provider>> = vec![
        Arc::new(OpenAiProvider::new(
            &refusing.base_url,
            None,
            vec!["refusing".into()],
        )?),
        Arc::new(OllamaProvider::new(&answering.url)?),
    ];
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("runs.db");
    let plan = Arc::new(
        nexus_engine::load_str(WORKFLOW, None)
            .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?,
    );

    let store = Arc::new(SqliteStore::open(&db).await?);
    let first = engine(
        providers.clone(),
        Some(store.clone()),
        EngineConfig::default(),
    );
    // No statistics: a tie, taken by name order.
    let (report, _) = go(&first, plan.clone(), RunOptions::default()).await?;
    let rec = &report.steps[0];
    assert_eq!(rec.status, StepStatus::Failed);
    let c = choice(rec);
    assert_eq!(c.agent, "alpha");
    assert!(
        c.reason.contains("a tie, taken by name order"),
        "{}",
        c.reason
    );
    // alpha failed: beta, never observed, now scores higher.
    let (report, _) = go(&first, plan.clone(), RunOptions::default()).await?;
    let rec = &report.steps[0];
    assert_eq!(rec.status, StepStatus::Succeeded, "{:?}", rec.error);
    assert_eq!(rec.output.as_deref(), Some("short."));
    assert_eq!(rec.model.as_deref(), Some("ollama:answering:latest"));
    let c = choice(rec);
    assert_eq!(c.agent, "beta");
    assert!(
        c.reason.starts_with("capability `summarize`: agent `beta`"),
        "{}",
        c.reason
    );
    assert!(c.reason.contains("`alpha` (score 0."), "{}", c.reason);
    assert!(
        c.reason.contains("success 0% over 1 run(s)"),
        "{}",
        c.reason
    );
    // The stored record holds the decision and its reason.
    let stored = store.get_run(&report.run_id).await?;
    let stored_choice = choice(&stored.steps[0]);
    assert_eq!(stored_choice, c);
    drop(first);

    // A new engine over the same database keeps routing to beta.
    let store = Arc::new(SqliteStore::open(&db).await?);
    let second = engine(providers, Some(store), EngineConfig::default());
    let (report, _) = go(&second, plan, RunOptions::default()).await?;
    let c = choice(&report.steps[0]);
    assert_eq!(c.agent, "beta");
    assert!(
        c.reason.contains("success 100% over 1 run(s)"),
        "{}",
        c.reason
    );
    let stats = second.agent_stats();
    assert_eq!(stats["alpha"].calls, 1);
    assert_eq!(stats["beta"].calls, 2);
    Ok(())
}
