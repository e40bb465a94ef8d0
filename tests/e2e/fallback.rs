//! Fallback: with the Ollama endpoint refusing connections and the OpenAI-compatible
//! server stopped mid-run, the workflow completes on the next candidate and the run record
//! shows each fallback and its reason.

use std::sync::{Arc, Mutex};

use nexus_engine::events::{Event, EventSink, RunStatus, StepStatus};
use nexus_engine::provider::{Provider, ProviderErrorKind};
use nexus_llm::{OllamaProvider, OpenAiProvider};
use nexus_tests::{LlamaServer, free_port};
use tokio_util::sync::CancellationToken;

use crate::{embedded, plan, run_plan, temp_store};

/// Stops the server as soon as the first step has succeeded.
struct StopAfterFirstStep(Mutex<Option<LlamaServer>>);

impl EventSink for StopAfterFirstStep {
    fn emit(&self, event: &Event) {
        if let Event::StepSucceeded { step_id, .. } = event
            && step_id == "first"
            && let Ok(mut server) = self.0.lock()
            && let Some(mut s) = server.take()
        {
            s.process.stop();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_past_a_dead_daemon_and_a_server_stopped_mid_run() -> anyhow::Result<()> {
    let server = tokio::task::spawn_blocking(|| LlamaServer::start("smol")).await??;
    let ollama = OllamaProvider::new(&format!("http://127.0.0.1:{}", free_port()?))?;
    let openai = OpenAiProvider::new(&server.base_url, None, vec!["smol".into()])?;
    let providers: Vec<Arc<dyn Provider>> = vec![Arc::new(ollama), Arc::new(openai), embedded()?];
    let wf = plan(
        r#"
id: fallback
steps:
  - id: first
    kind: llm
    model: [ollama:llama3.1, openai:smol, embedded]
    prompt: Name a fruit.
    max_tokens: 12
  - id: second
    kind: llm
    needs: [first]
    model: [ollama:llama3.1, openai:smol, embedded]
    prompt: "Name a color. Previous answer: {{ steps.first.output }}"
    max_tokens: 12
"#,
    );
    let (store, _dir) = temp_store().await?;
    let stopper: Arc<dyn EventSink> = Arc::new(StopAfterFirstStep(Mutex::new(Some(server))));
    let (report, events) = run_plan(
        wf,
        providers,
        Some(store.clone()),
        vec![stopper],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);

    let stored = store.get_run(&report.run_id).await?;
    let first = stored
        .steps
        .iter()
        .find(|s| s.step_id == "first")
        .expect("first");
    let second = stored
        .steps
        .iter()
        .find(|s| s.step_id == "second")
        .expect("second");
    assert_eq!(first.status, StepStatus::Succeeded);
    assert_eq!(first.model.as_deref(), Some("openai:smol"));
    assert_eq!(first.fallbacks.len(), 1);
    assert_eq!(first.fallbacks[0].from, "ollama:llama3.1");
    assert_eq!(first.fallbacks[0].to, "openai:smol");
    assert!(
        first.fallbacks[0].reason.starts_with("unavailable"),
        "{}",
        first.fallbacks[0].reason
    );
    // No retry was spent on the dead daemon: one attempt on it, then the next model.
    assert_eq!(first.attempts.len(), 2);
    assert_eq!(
        first.attempts[0].error_kind,
        Some(ProviderErrorKind::Unavailable)
    );

    assert_eq!(
        second.model.as_deref(),
        Some("embedded:smollm2-135m-instruct")
    );
    let hops: Vec<(&str, &str)> = second
        .fallbacks
        .iter()
        .map(|f| (f.from.as_str(), f.to.as_str()))
        .collect();
    assert_eq!(
        hops,
        vec![
            ("ollama:llama3.1", "openai:smol"),
            ("openai:smol", "embedded:smollm2-135m-instruct")
        ]
    );
    assert!(
        second
            .fallbacks
            .iter()
            .all(|f| f.reason.starts_with("unavailable")),
        "{:?}",
        second.fallbacks
    );
    assert!(
        second
            .model_reason
            .as_deref()
            .unwrap_or_default()
            .contains("after the ladder")
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::FallbackTaken { .. }))
            .count(),
        3
    );
    // The stored event log has the fallbacks too.
    assert_eq!(
        stored
            .events
            .iter()
            .filter(|e| e.name() == "fallback_taken")
            .count(),
        3
    );
    Ok(())
}
