//! The HTTP providers against real loopback servers: the OpenAI-compatible provider
//! against llama-cpp-python's server, the Ollama provider against a server that follows
//! Ollama's documented API with the same model behind it.

use std::sync::Arc;

use futures::StreamExt;
use nexus_engine::events::{Event, RunStatus};
use nexus_engine::provider::{
    ChatChunk, ChatRequest, Message, Provider, ProviderErrorKind, ToolChoice,
};
use nexus_llm::{OllamaProvider, OpenAiProvider};
use nexus_tests::{LlamaServer, OllamaServer, free_port};
use tokio_util::sync::CancellationToken;

use crate::{plan, run_plan, temp_store};

fn request(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.to_string(),
        messages: vec![
            Message::system("You are brief."),
            Message::user("Name three colors."),
        ],
        temperature: 0.2,
        max_tokens: 24,
        json_schema: None,
        think: None,
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
    }
}

/// The error of a chat request that must fail before streaming.
async fn chat_error(provider: &dyn Provider, model: &str) -> nexus_engine::ProviderError {
    match provider.chat(request(model)).await {
        Ok(_) => panic!("the request to `{model}` should have failed"),
        Err(e) => e,
    }
}

async fn collect(
    provider: &dyn Provider,
    req: ChatRequest,
) -> anyhow::Result<(Vec<String>, ChatChunk)> {
    let mut stream = provider.chat(req).await?;
    let mut deltas = Vec::new();
    while let Some(chunk) = stream.next().await {
        match chunk? {
            ChatChunk::Delta(t) => deltas.push(t),
            ChatChunk::Reasoning(_) | ChatChunk::ToolCall(_) => {}
            done @ ChatChunk::Done { .. } => return Ok((deltas, done)),
        }
    }
    anyhow::bail!("stream ended without done")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_provider_streams_from_a_real_server() -> anyhow::Result<()> {
    let server = tokio::task::spawn_blocking(|| LlamaServer::start("smol")).await??;
    let provider = OpenAiProvider::new(&server.base_url, Some("test-key".into()), vec![])?;
    let models = provider.list_models().await?;
    assert!(models.iter().any(|m| m.name == "smol"), "{models:?}");

    let (deltas, done) = collect(&provider, request("smol")).await?;
    assert!(
        deltas.len() > 3,
        "expected several streamed chunks, got {deltas:?}"
    );
    let ChatChunk::Done { usage, .. } = done else {
        unreachable!()
    };
    assert!(usage.completion_tokens > 0);

    // A whole workflow step through the engine, recorded in SQLite.
    let (store, _dir) = temp_store().await?;
    let wf = plan(
        "id: t\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:smol]\n    prompt: Say hello.\n    max_tokens: 16\n",
    );
    let (report, events) = run_plan(
        wf,
        vec![Arc::new(provider)],
        Some(store.clone()),
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let stored = store.get_run(&report.run_id).await?;
    assert_eq!(stored.steps[0].model.as_deref(), Some("openai:smol"));
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Token { .. }))
            .count()
            > 1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_provider_classifies_refused_connections() -> anyhow::Result<()> {
    let port = free_port()?;
    let provider = OpenAiProvider::new(
        &format!("http://127.0.0.1:{port}/v1"),
        None,
        vec!["x".into()],
    )?;
    let err = chat_error(&provider, "x").await;
    assert_eq!(err.kind, ProviderErrorKind::Unavailable, "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_provider_against_the_documented_protocol() -> anyhow::Result<()> {
    let server =
        tokio::task::spawn_blocking(|| OllamaServer::start(&["qwen2.5:0.5b", "llama3.1:latest"]))
            .await??;
    let provider = OllamaProvider::new(&server.url)?;

    // Installed models with their details.
    let models = provider.list_models().await?;
    let names: Vec<&str> = models.iter().map(|m| m.name.as_str()).collect();
    assert!(
        names.contains(&"llama3.1:latest") && names.contains(&"qwen2.5:0.5b"),
        "{names:?}"
    );
    assert!(
        models
            .iter()
            .all(|m| m.context_length.is_some_and(|c| c > 0)),
        "{models:?}"
    );

    // The selector prefers llama3.1 over qwen2.5.
    let catalog = nexus_engine::select::Catalog::discover(
        &[Arc::new(provider.clone()) as Arc<dyn Provider>],
        std::time::Duration::from_secs(10),
    )
    .await;
    let order = catalog.default_order();
    assert_eq!(order.candidates[0].reference, "ollama:llama3.1:latest");
    assert_eq!(order.candidates[1].reference, "ollama:qwen2.5:0.5b");

    // Streaming chat: several chunks, then the final chunk's counts.
    let (deltas, done) = collect(&provider, request("llama3.1:latest")).await?;
    assert!(deltas.len() > 3, "{deltas:?}");
    let ChatChunk::Done { usage, .. } = done else {
        unreachable!()
    };
    assert!(
        usage.prompt_tokens > 0 && usage.completion_tokens > 0,
        "{usage:?}"
    );

    // A model that is not installed.
    let err = chat_error(&provider, "mistral:7b").await;
    assert_eq!(err.kind, ProviderErrorKind::ModelNotFound, "{err}");

    // `ollama:llama3.1` in a workflow resolves to the installed tag.
    let wf = plan(
        "id: t\nsteps:\n  - id: a\n    kind: llm\n    model: [ollama:llama3.1]\n    prompt: Say hello.\n    max_tokens: 12\n",
    );
    let (report, _) = run_plan(
        wf,
        vec![Arc::new(provider)],
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(
        report.steps[0].model.as_deref(),
        Some("ollama:llama3.1:latest")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_provider_reports_a_refused_connection_as_unavailable() -> anyhow::Result<()> {
    let port = free_port()?;
    let provider = OllamaProvider::new(&format!("127.0.0.1:{port}"))?;
    let err = provider.list_models().await.expect_err("must fail");
    assert_eq!(err.kind, ProviderErrorKind::Unavailable, "{err}");
    let err = chat_error(&provider, "llama3.1").await;
    assert_eq!(err.kind, ProviderErrorKind::Unavailable, "{err}");
    Ok(())
}
