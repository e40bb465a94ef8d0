//! Providers that flood: a loopback server that ignores `max_tokens` and streams forever
//! (OpenAI-compatible SSE, Ollama NDJSON), one that opens a stream event or line and
//! never ends it, and one that answers a 64 MiB non-streamed body. Each time the reply
//! is cut at the step's `max_tokens` (plus the documented margin) or the byte cap, the
//! attempt is an `oversized_reply` in the stored run record, and the step falls back to
//! the next model at once. The embedded model stops at `max_tokens` by itself. (Peak
//! memory under a flood is measured by `bench/src/bin/flood.rs`, not here.)

use std::sync::Arc;

use futures::StreamExt;
use nexus_engine::events::{Event, RunStatus, StepStatus};
use nexus_engine::provider::{
    ChatChunk, ChatRequest, Message, Provider, ProviderErrorKind, REPLY_BYTE_CAP, ToolChoice,
    reply_token_ceiling,
};
use nexus_llm::{OllamaProvider, OpenAiProvider};
use nexus_tests::scripted::{Behavior, OllamaBehavior, ScriptedOllama, ScriptedServer};
use tokio_util::sync::CancellationToken;

use crate::{embedded, plan, run_plan, temp_store};

const MAX_TOKENS: u32 = 50;

fn words(w: &[&str]) -> Vec<String> {
    w.iter().map(|s| (*s).to_string()).collect()
}

fn workflow(models: &str) -> Arc<nexus_engine::Plan> {
    plan(&format!(
        "id: flood\nsteps:\n  - id: a\n    kind: llm\n    model: [{models}]\n    prompt: hi\n    max_tokens: {MAX_TOKENS}\n    retry: {{max_attempts: 3, initial_interval: 10ms, jitter: false}}\n    fallback: {{simplify: false}}\n"
    ))
}

/// The text streamed by the first attempt (tokens before its `AttemptFailed`).
fn first_attempt_text(events: &[Event]) -> (usize, String) {
    let mut n = 0;
    let mut text = String::new();
    for e in events {
        match e {
            Event::Token { text: t, .. } => {
                n += 1;
                text.push_str(t);
            }
            Event::AttemptFailed { .. } => break,
            _ => {}
        }
    }
    (n, text)
}

/// Runs `wf` on `providers` with a store and checks what every flood test checks: the
/// step succeeded on the fallback with `output`, after exactly one attempt on the
/// flooder, stored as `oversized_reply`. Returns the stored error message and the
/// events.
async fn run_flood(
    wf: Arc<nexus_engine::Plan>,
    providers: Vec<Arc<dyn Provider>>,
    flooder: &str,
    fallback: &str,
    output: &str,
) -> anyhow::Result<(String, Vec<Event>)> {
    let (store, _dir) = temp_store().await?;
    let (report, events) = run_plan(
        wf,
        providers,
        Some(store.clone()),
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let stored = store.get_run(&report.run_id).await?;
    let step = &stored.steps[0];
    assert_eq!(step.status, StepStatus::Succeeded);
    assert_eq!(step.output.as_deref(), Some(output));
    assert_eq!(step.model.as_deref(), Some(fallback));
    assert_eq!(step.attempts.len(), 2, "{:?}", step.attempts);
    let first = &step.attempts[0];
    assert_eq!(first.model.as_deref(), Some(flooder));
    assert_eq!(first.error_kind, Some(ProviderErrorKind::OversizedReply));
    assert_eq!(step.fallbacks.len(), 1);
    assert_eq!(step.fallbacks[0].from, flooder);
    assert_eq!(step.fallbacks[0].to, fallback);
    assert!(
        step.fallbacks[0].reason.contains("oversized_reply"),
        "{:?}",
        step.fallbacks[0]
    );
    Ok((first.error_message.clone().unwrap_or_default(), events))
}

#[tokio::test]
async fn an_sse_flood_is_cut_at_max_tokens_and_the_step_falls_back() -> anyhow::Result<()> {
    let flood = ScriptedServer::start(vec![Behavior::Flood]).await?;
    let honest = ScriptedOllama::start(
        "honest:latest",
        vec![OllamaBehavior::Stream(words(&["fine", "."]))],
    )
    .await?;
    let providers: Vec<Arc<dyn Provider>> = vec![
        Arc::new(OpenAiProvider::new(
            &flood.base_url,
            None,
            vec!["flood".into()],
        )?),
        Arc::new(OllamaProvider::new(&honest.url)?),
    ];
    let (message, events) = run_flood(
        workflow("openai:flood, ollama:honest"),
        providers,
        "openai:flood",
        "ollama:honest:latest",
        "fine.",
    )
    .await?;
    let ceiling = reply_token_ceiling(MAX_TOKENS);
    assert_eq!(ceiling, 71, "50 + 10 % + 16");
    let (n, text) = first_attempt_text(&events);
    assert_eq!(
        n as u64, ceiling,
        "the reply is cut at the ceiling, not later"
    );
    let expected: String = (0..ceiling).map(|i| format!("flood {i} ")).collect();
    assert_eq!(text, expected);
    assert!(
        message.contains("reply cut after 71 tokens") && message.contains("max_tokens 50"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn an_ollama_ndjson_flood_is_cut_at_num_predict_and_the_step_falls_back() -> anyhow::Result<()>
{
    let flood = ScriptedOllama::start("flood:latest", vec![OllamaBehavior::Flood]).await?;
    let honest = ScriptedServer::start(vec![Behavior::Stream(words(&["ok"]))]).await?;
    let providers: Vec<Arc<dyn Provider>> = vec![
        Arc::new(OllamaProvider::new(&flood.url)?),
        Arc::new(OpenAiProvider::new(
            &honest.base_url,
            None,
            vec!["honest".into()],
        )?),
    ];
    let (message, events) = run_flood(
        workflow("ollama:flood, openai:honest"),
        providers,
        "ollama:flood:latest",
        "openai:honest",
        "ok",
    )
    .await?;
    let (n, text) = first_attempt_text(&events);
    assert_eq!(n as u64, reply_token_ceiling(MAX_TOKENS));
    assert!(text.starts_with("flood 0 flood 1 ") && text.ends_with("flood 70 "));
    assert!(message.contains("reply cut after 71 tokens"), "{message}");
    Ok(())
}

#[tokio::test]
async fn an_endless_sse_event_or_ndjson_line_is_cut_at_the_event_cap() -> anyhow::Result<()> {
    let sse = ScriptedServer::start(vec![Behavior::FloodEvent]).await?;
    let line = ScriptedOllama::start("line:latest", vec![OllamaBehavior::FloodLine]).await?;
    let request = ChatRequest {
        model: String::new(),
        messages: vec![Message::user("hi")],
        temperature: 0.0,
        max_tokens: MAX_TOKENS,
        json_schema: None,
        think: None,
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
    };
    let openai = OpenAiProvider::new(&sse.base_url, None, vec!["sse".into()])?;
    let ollama = OllamaProvider::new(&line.url)?;
    for (provider, model) in [
        (&openai as &dyn Provider, "sse"),
        (&ollama as &dyn Provider, "line:latest"),
    ] {
        let stream = provider
            .chat(ChatRequest {
                model: model.into(),
                ..request.clone()
            })
            .await?;
        let items: Vec<_> = stream.collect().await;
        assert_eq!(items.len(), 1, "{model}: no content before the cut");
        let err = items[0].as_ref().expect_err("an error");
        assert_eq!(
            err.kind,
            ProviderErrorKind::OversizedReply,
            "{model}: {err}"
        );
        assert!(err.message.contains("1048576"), "{model}: {err}");
    }
    Ok(())
}

#[tokio::test]
async fn a_stream_of_empty_chunks_is_cut_at_the_wire_cap() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![Behavior::FloodEmpty]).await?;
    let openai = OpenAiProvider::new(&server.base_url, None, vec!["empty".into()])?;
    let stream = openai
        .chat(ChatRequest {
            model: "empty".into(),
            messages: vec![Message::user("hi")],
            temperature: 0.0,
            max_tokens: MAX_TOKENS,
            json_schema: None,
            think: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
        })
        .await?;
    let items: Vec<_> = stream.collect().await;
    assert_eq!(items.len(), 1);
    let err = items[0].as_ref().expect_err("an error");
    assert_eq!(err.kind, ProviderErrorKind::OversizedReply, "{err}");
    let cap = nexus_llm::http::wire_cap(MAX_TOKENS);
    assert!(
        err.message.contains(&format!("passed {cap} bytes")),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_64_mib_non_streamed_body_is_refused_at_the_byte_cap_and_the_step_falls_back()
-> anyhow::Result<()> {
    let flood = ScriptedServer::start(vec![Behavior::FloodBody(64 << 20)]).await?;
    let honest = ScriptedOllama::start(
        "honest:latest",
        vec![OllamaBehavior::Stream(words(&["fine"]))],
    )
    .await?;
    let providers: Vec<Arc<dyn Provider>> = vec![
        Arc::new(OpenAiProvider::new(
            &flood.base_url,
            None,
            vec!["flood".into()],
        )?),
        Arc::new(OllamaProvider::new(&honest.url)?),
    ];
    let (message, events) = run_flood(
        workflow("openai:flood, ollama:honest"),
        providers,
        "openai:flood",
        "ollama:honest:latest",
        "fine",
    )
    .await?;
    assert_eq!(
        first_attempt_text(&events).0,
        0,
        "nothing of the body is kept"
    );
    // 71 tokens × 256 bytes × 2 (JSON escapes) + 64 KiB of framing.
    assert!(message.contains("passed 101888 bytes"), "{message}");
    const { assert!(101_888 < REPLY_BYTE_CAP) };
    Ok(())
}

#[tokio::test]
async fn a_non_streamed_reply_within_the_caps_is_read() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![Behavior::Whole("whole reply".into())]).await?;
    let openai = OpenAiProvider::new(&server.base_url, None, vec!["whole".into()])?;
    let (report, _) = run_plan(
        workflow("openai:whole"),
        vec![Arc::new(openai)],
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(report.steps[0].output.as_deref(), Some("whole reply"));
    Ok(())
}

#[tokio::test]
async fn the_embedded_model_stops_at_max_tokens() -> anyhow::Result<()> {
    let model = embedded()?;
    let info = model.list_models().await?;
    let stream = model
        .chat(ChatRequest {
            model: info[0].name.clone(),
            messages: vec![Message::user("Count from 1 to 500, one number a line.")],
            temperature: 0.0,
            max_tokens: 8,
            json_schema: None,
            think: None,
            tools: Vec::new(),
            tool_choice: ToolChoice::Auto,
        })
        .await?;
    let items: Vec<_> = stream.collect().await;
    let deltas = items
        .iter()
        .filter(|i| matches!(i, Ok(ChatChunk::Delta(_))))
        .count();
    let Some(Ok(ChatChunk::Done {
        usage,
        finish_reason,
    })) = items.last()
    else {
        panic!("no Done: {items:?}");
    };
    assert_eq!(usage.completion_tokens, 8, "{items:?}");
    assert_eq!(finish_reason.as_deref(), Some("length"));
    assert!((1..=8).contains(&deltas), "{deltas} deltas");
    Ok(())
}
