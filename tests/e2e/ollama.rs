//! The Ollama provider against the Ollama-protocol test server where the daemon's own
//! behaviour matters (issue 10): cloud models behind the local daemon, thinking models,
//! the context window the daemon runs a model with, capabilities, the NDJSON stream
//! (split characters, an error line mid-stream, `done_reason`), and `:latest`. Each
//! behaviour of the server cites the Ollama file it follows
//! (tests/servers/ollama_server.py); the scripted models answer canned text so the tests
//! do not wait on inference.

use std::sync::Arc;

use nexus_engine::events::{Event, RunStatus, StepStatus};
use nexus_engine::provider::{
    ChatChunk, ChatRequest, Locality, Message, ModelCapability, Provider, ProviderError,
    ProviderErrorKind, ToolChoice,
};
use nexus_llm::OllamaProvider;
use nexus_tests::OllamaServer;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::chat::{answer, items};
use crate::{plan, run_plan, temp_store};

async fn start(
    names: &'static [&'static str],
    specs: Vec<serde_json::Value>,
    args: &'static [&'static str],
) -> anyhow::Result<OllamaServer> {
    tokio::task::spawn_blocking(move || OllamaServer::start_with_specs(names, &specs, args)).await?
}

/// Runs `wf` on the one Ollama `provider`, with no extra event sinks and no cancellation.
async fn run_on(
    wf: Arc<nexus_engine::Plan>,
    provider: OllamaProvider,
    store: Option<Arc<nexus_store::SqliteStore>>,
) -> anyhow::Result<(nexus_engine::RunReport, Vec<Event>)> {
    run_plan(
        wf,
        vec![Arc::new(provider)],
        store,
        vec![],
        CancellationToken::new(),
    )
    .await
}

/// A model of the test server that answers `content` (canned chunks).
fn scripted(name: &str, caps: &[&str], script: serde_json::Value) -> serde_json::Value {
    json!({"name": name, "capabilities": caps, "script": script})
}

fn ask(model: &str, prompt: &str, max_tokens: u32) -> ChatRequest {
    ChatRequest {
        model: model.to_string(),
        messages: vec![Message::user(prompt.to_string())],
        temperature: 0.2,
        max_tokens,
        json_schema: None,
        think: None,
        tools: Vec::new(),
        tool_choice: ToolChoice::Auto,
    }
}

fn first_error(items: &[Result<ChatChunk, ProviderError>]) -> Option<&ProviderError> {
    items.iter().find_map(|i| i.as_ref().err())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_only_run_never_reaches_a_cloud_model_behind_the_local_daemon() -> anyhow::Result<()>
{
    // api/types.go ListModelResponse: a cloud model is listed with remote_host.
    let server = start(
        &["gpt-oss:20b-cloud"],
        vec![json!({
            "name": "gpt-oss:20b-cloud",
            "capabilities": ["completion", "tools", "thinking"],
            "remote_host": "https://ollama.com:443",
            "remote_model": "gpt-oss:20b",
            "script": {"content": ["Sent to the cloud."]},
        })],
        &[],
    )
    .await?;
    let provider = OllamaProvider::new(&server.url)?;
    let models = provider.list_models().await?;
    assert_eq!(models.len(), 1, "{models:?}");
    assert_eq!(models[0].locality, Locality::Cloud, "{models:?}");

    let wf = plan(
        "id: private\nlocal_only: true\nsteps:\n  - id: a\n    kind: llm\n    prompt: Summarise my medical record.\n    max_tokens: 16\n",
    );
    let (report, _) = run_on(wf, provider.clone(), None).await?;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.steps[0].error.clone().unwrap_or_default();
    assert!(
        error.contains("no model can serve this step")
            && error.contains("ollama:gpt-oss:20b-cloud")
            && error.contains("cloud model served through the local ollama daemon")
            && error.contains("local_only"),
        "{error}"
    );
    assert!(report.steps[0].attempts.is_empty(), "{:?}", report.steps[0]);
    // The daemon never loaded it: no request reached it (api/ps lists loaded models).
    let models = provider.list_models().await?;
    assert_eq!(models[0].loaded_context_length, None, "{models:?}");

    // Without local_only the same model serves, named as cloud in the reason.
    let wf = plan(
        "id: open\nsteps:\n  - id: a\n    kind: llm\n    prompt: Say hi.\n    max_tokens: 16\n",
    );
    let (report, _) = run_on(wf, provider, None).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let reason = report.steps[0].model_reason.clone().unwrap_or_default();
    assert!(
        reason.contains("cloud model served through the local"),
        "{reason}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thinking_stream_is_reasoning_apart_from_the_answer_and_the_next_json_step_gets_clean_json()
-> anyhow::Result<()> {
    let thinking = [
        "The user",
        " wants",
        " a colour",
        " for the",
        " logo;",
        " teal",
        " fits.",
    ];
    let server = start(
        &[],
        vec![
            // A thinking model: message.thinking chunks, paced slower in all than the
            // step's first-token timeout, then the answer (routes.go ChatHandler).
            scripted(
                "deepseek-r1:8b",
                &["completion", "thinking"],
                json!({"thinking": thinking, "content": ["Use ", "teal."], "gap_ms": 120}),
            ),
            // An older pull: no thinking capability, the block inside the content.
            scripted(
                "deepseek-r1:1.5b",
                &["completion"],
                json!({"think_tags": true, "thinking": ["The plan", " says teal."],
                       "content": ["{\"colour\"", ": \"teal\"}"]}),
            ),
        ],
        &[],
    )
    .await?;
    let provider = OllamaProvider::new(&server.url)?;
    let (store, _dir) = temp_store().await?;
    let wf = plan(
        r#"id: think
steps:
  - id: plan
    kind: llm
    model: [ollama:deepseek-r1:8b]
    think: true
    prompt: Pick a colour for the logo.
    max_tokens: 64
    retry: {max_attempts: 1}
    timeout: {first_token: 500ms, idle: 500ms}
  - id: pick
    kind: llm
    needs: [plan]
    model: [ollama:deepseek-r1:1.5b]
    prompt: "Turn this into JSON: {{ steps.plan.output }}"
    output_schema: {type: object, properties: {colour: {type: string}}, required: [colour]}
    max_tokens: 64
    retry: {max_attempts: 1}
"#,
    );
    let (report, events) = run_on(wf, provider, Some(store.clone())).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.steps);

    // The reasoning streamed as its own events, before the answer's tokens.
    let plan_events: Vec<&Event> = events
        .iter()
        .filter(|e| e.step_id() == Some("plan"))
        .filter(|e| matches!(e, Event::Reasoning { .. } | Event::Token { .. }))
        .collect();
    let reasoning: String = plan_events
        .iter()
        .filter_map(|e| match e {
            Event::Reasoning { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(reasoning, thinking.concat());
    assert!(
        matches!(plan_events.first(), Some(Event::Reasoning { .. })),
        "{plan_events:?}"
    );

    // Stored apart from the output; the next step's prompt holds only the answer.
    let stored = store.get_run(&report.run_id).await?;
    let plan_rec = &stored.steps[0];
    assert_eq!(plan_rec.step_id, "plan");
    assert_eq!(plan_rec.output.as_deref(), Some("Use teal."));
    assert_eq!(
        plan_rec.reasoning.as_deref(),
        Some(thinking.concat().as_str())
    );
    let pick = &stored.steps[1];
    assert_eq!(pick.step_id, "pick");
    let input = pick.input.clone().unwrap_or_default();
    assert!(
        input.contains("Use teal.") && !input.contains("The user wants"),
        "{input}"
    );
    // The <think> block is reasoning; the JSON step gets clean JSON on its first try.
    assert_eq!(
        pick.output_json,
        Some(json!({"colour": "teal"})),
        "{pick:?}"
    );
    assert_eq!(pick.reasoning.as_deref(), Some("The plan says teal."));
    assert_eq!(pick.attempts.len(), 1, "{:?}", pick.attempts);
    assert_eq!(pick.status, StepStatus::Succeeded);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_prompts_are_sent_with_a_num_ctx_that_holds_them() -> anyhow::Result<()> {
    // The daemon runs models with a smaller window than they were trained for and cuts a
    // longer prompt silently (server/prompt.go, llm/llama_server.go).
    let server = start(
        &[],
        vec![
            json!({"name": "echo:latest", "capabilities": ["completion"], "context_length": 32768,
                   "script": {"echo_tokens": true}}),
            json!({"name": "small:latest", "capabilities": ["completion"], "context_length": 1024,
                   "script": {"echo_tokens": true}}),
        ],
        &["--default-num-ctx", "2048"],
    )
    .await?;
    let provider = OllamaProvider::new(&server.url)?;
    let models = provider.list_models().await?;
    let echo = models.iter().find(|m| m.name == "echo:latest");
    assert_eq!(
        echo.and_then(|m| m.context_length),
        Some(32768),
        "{models:?}"
    );

    let prompt = format!(
        "FIRSTWORD {}",
        "The quick brown fox jumps over the lazy dog. ".repeat(400)
    );
    let got = items(&provider, ask("echo:latest", &prompt, 32)).await;
    let reply = answer(&got);
    let seen: Vec<u64> = reply
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    assert!(
        reply.contains("the first word was kept") && seen.len() == 2 && seen[0] == seen[1],
        "the daemon cut the prompt: {reply}"
    );
    assert!(seen[0] > 3000, "{reply}");
    let Some(Ok(ChatChunk::Done {
        usage,
        finish_reason,
    })) = got.last()
    else {
        panic!("no done: {got:?}");
    };
    assert_eq!(usage.prompt_tokens, seen[0]);
    assert_eq!(finish_reason.as_deref(), Some("stop"));
    // The runner is loaded with the window Nexus asked for (api/ps context_length).
    let models = provider.list_models().await?;
    let loaded = models
        .iter()
        .find(|m| m.name == "echo:latest")
        .and_then(|m| m.loaded_context_length);
    assert!(
        loaded.is_some_and(|c| u64::from(c) >= seen[0]),
        "{models:?}"
    );

    // A prompt over the trained window is a context overflow, never a silent cut.
    let got = items(&provider, ask("small:latest", &prompt, 32)).await;
    let err = first_error(&got).map(|e| e.kind);
    assert_eq!(err, Some(ProviderErrorKind::ContextOverflow), "{got:?}");
    let models = provider.list_models().await?;
    let small = models.iter().find(|m| m.name == "small:latest");
    assert_eq!(
        small.and_then(|m| m.loaded_context_length),
        None,
        "{models:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_decide_which_models_may_chat_and_think() -> anyhow::Result<()> {
    let ok = json!({"content": ["ok"]});
    let server = start(
        &[],
        vec![
            scripted("bge-m3:latest", &["embedding"], ok.clone()),
            scripted("all-minilm:latest", &["embedding"], ok.clone()),
            scripted("llama3.1:latest", &["completion", "tools"], ok.clone()),
            scripted(
                "qwen3:latest",
                &["completion", "tools", "thinking"],
                ok.clone(),
            ),
        ],
        &[],
    )
    .await?;
    let provider = OllamaProvider::new(&server.url)?;
    let models = provider.list_models().await?;
    let qwen = models.iter().find(|m| m.name == "qwen3:latest");
    assert!(
        qwen.is_some_and(|m| m.has(ModelCapability::Thinking) && m.has(ModelCapability::Tools)),
        "{models:?}"
    );

    let catalog = nexus_engine::select::Catalog::discover(
        &[Arc::new(provider.clone()) as Arc<dyn Provider>],
        std::time::Duration::from_secs(10),
    )
    .await;
    let order = catalog.default_order();
    let refs: Vec<&str> = order
        .candidates
        .iter()
        .map(|c| c.reference.as_str())
        .collect();
    assert!(
        !refs.contains(&"ollama:bge-m3:latest") && !refs.contains(&"ollama:all-minilm:latest"),
        "embedding models must never chat: {refs:?}"
    );
    assert_eq!(refs.first(), Some(&"ollama:llama3.1:latest"), "{refs:?}");

    // A step that asks to think goes to the model that can.
    let wf = plan(
        "id: t\nsteps:\n  - id: a\n    kind: llm\n    think: true\n    prompt: Think first.\n    max_tokens: 16\n",
    );
    let (report, _) = run_on(wf, provider.clone(), None).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(
        report.steps[0].model.as_deref(),
        Some("ollama:qwen3:latest")
    );
    let excluded = report.steps[0]
        .selection
        .as_ref()
        .map(|s| s.excluded.clone())
        .unwrap_or_default();
    assert!(
        excluded
            .iter()
            .any(|x| x.model == "ollama:llama3.1:latest" && x.reason.contains("thinking")),
        "{excluded:?}"
    );

    // What the daemon answers when asked anyway (routes.go ChatHandler): permanent.
    let got = items(&provider, ask("bge-m3:latest", "hi", 8)).await;
    let err = first_error(&got).cloned();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.kind == ProviderErrorKind::InvalidRequest
                && e.message.contains("does not support chat")),
        "{err:?}"
    );
    let mut req = ask("llama3.1:latest", "hi", 8);
    req.think = Some(true);
    let got = items(&provider, req).await;
    let err = first_error(&got).cloned();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.kind == ProviderErrorKind::InvalidRequest
                && e.message.contains("does not support thinking")),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_keeps_split_characters_the_daemons_error_line_and_done_reason()
-> anyhow::Result<()> {
    let server = start(
        &[],
        vec![
            scripted(
                "utf8:latest",
                &["completion"],
                json!({"content": ["Grüße aus Köln — ", "東京 🚀 ", "done."], "split_utf8": true}),
            ),
            scripted(
                "oom:latest",
                &["completion"],
                json!({"content": ["Partial answer "], "error_after": "CUDA error: out of memory"}),
            ),
            scripted(
                "long:latest",
                &["completion"],
                json!({"content": ["one ", "two ", "three ", "four ", "five "]}),
            ),
        ],
        &[],
    )
    .await?;
    let provider = OllamaProvider::new(&server.url)?;

    let got = items(&provider, ask("utf8:latest", "greet", 32)).await;
    assert_eq!(answer(&got), "Grüße aus Köln — 東京 🚀 done.", "{got:?}");
    assert!(first_error(&got).is_none(), "{got:?}");

    // routes.go streamResponse: after the first write an error is one more line.
    let got = items(&provider, ask("oom:latest", "greet", 32)).await;
    assert_eq!(answer(&got), "Partial answer ");
    let err = first_error(&got).cloned();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.kind == ProviderErrorKind::Unavailable
                && e.message.contains("CUDA error: out of memory")),
        "{got:?}"
    );

    // num_predict reached: done_reason "length" (llm/server.go).
    let got = items(&provider, ask("long:latest", "count", 3)).await;
    assert_eq!(answer(&got), "one two three ");
    assert!(
        matches!(got.last(), Some(Ok(ChatChunk::Done { finish_reason: Some(r), .. })) if r == "length"),
        "{got:?}"
    );

    // Through the engine: the daemon's words are recorded and the step falls back at
    // once (no retry of a model that cannot be loaded).
    let wf = plan(
        "id: t\nsteps:\n  - id: a\n    kind: llm\n    model: [ollama:oom, ollama:utf8]\n    prompt: Greet.\n    max_tokens: 32\n",
    );
    let (report, _) = run_on(wf, provider, None).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let step = &report.steps[0];
    assert_eq!(step.model.as_deref(), Some("ollama:utf8:latest"));
    assert_eq!(step.attempts.len(), 2, "{:?}", step.attempts);
    assert_eq!(
        step.attempts[0].error_kind,
        Some(ProviderErrorKind::Unavailable)
    );
    let message = step.attempts[0].error_message.clone().unwrap_or_default();
    assert!(message.contains("CUDA error: out of memory"), "{message}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_model_name_means_the_latest_tag() -> anyhow::Result<()> {
    let server = start(
        &[],
        vec![
            scripted(
                "llama3.1:8b",
                &["completion"],
                json!({"content": ["eight"]}),
            ),
            scripted(
                "llama3.1:latest",
                &["completion"],
                json!({"content": ["latest"]}),
            ),
        ],
        &[],
    )
    .await?;
    let provider = OllamaProvider::new(&server.url)?;
    let wf = plan(
        "id: t\nsteps:\n  - id: a\n    kind: llm\n    model: [ollama:llama3.1]\n    prompt: Hi.\n    max_tokens: 8\n",
    );
    let (report, _) = run_on(wf.clone(), provider, None).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(
        report.steps[0].model.as_deref(),
        Some("ollama:llama3.1:latest")
    );
    assert_eq!(report.steps[0].output.as_deref(), Some("latest"));

    // Only another tag installed: `llama3.1` is not it (the daemon would answer 404).
    let server = start(
        &[],
        vec![scripted(
            "llama3.1:8b",
            &["completion"],
            json!({"content": ["eight"]}),
        )],
        &[],
    )
    .await?;
    let provider = OllamaProvider::new(&server.url)?;
    let (report, _) = run_on(wf, provider, None).await?;
    assert_eq!(report.status, RunStatus::Failed);
    let step = &report.steps[0];
    assert_eq!(
        step.attempts.first().and_then(|a| a.error_kind),
        Some(ProviderErrorKind::ModelNotFound),
        "{step:?}"
    );
    Ok(())
}

/// A thinking model's reasoning is stored and shown, so it passes the guardrails as the
/// output does: a key in the reasoning is redacted in the stored record by the default
/// policy, and the audit names the stage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reasoning_passes_the_guardrails_before_it_is_stored() -> anyhow::Result<()> {
    let server = start(
        &[],
        vec![scripted(
            "deepseek-r1:8b",
            &["completion", "thinking"],
            json!({"thinking": ["The key is ", "AKIAQ3VR7NXL2MTB5KDW", ", so use it."],
                   "content": ["Done."]}),
        )],
        &[],
    )
    .await?;
    let provider = OllamaProvider::new(&server.url)?;
    let (store, _dir) = temp_store().await?;
    let wf = plan(
        "id: think-guard\nsteps:\n  - id: plan\n    kind: llm\n    model: [ollama:deepseek-r1:8b]\n    think: true\n    prompt: Plan it.\n    max_tokens: 64\n    retry: {max_attempts: 1}\n",
    );
    let (report, _) = run_on(wf, provider, Some(store.clone())).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.steps);
    let stored = store.get_run(&report.run_id).await?;
    let reasoning = stored.steps[0].reasoning.clone().unwrap_or_default();
    assert!(!reasoning.contains("AKIAQ3VR7NXL2MTB5KDW"), "{reasoning}");
    assert!(
        reasoning.contains("[REDACTED:aws_access_key]"),
        "{reasoning}"
    );
    assert!(
        stored.steps[0]
            .guardrails
            .iter()
            .any(|g| g.stage == "reasoning"),
        "{:?}",
        stored.steps[0].guardrails
    );
    Ok(())
}

/// A pull reports each layer with its own count (server/images.go PullModel,
/// server/download.go); Nexus sums them, so the bytes pulled never go back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_sums_the_layers_so_its_progress_never_goes_back() -> anyhow::Result<()> {
    use futures::TryStreamExt;
    let server = start(&["llama3.1:8b"], vec![], &[]).await?;
    let provider = OllamaProvider::new(&server.url)?;
    let lines: Vec<nexus_llm::ollama::PullProgress> =
        provider.pull("llama3.1:8b").await?.try_collect().await?;
    assert_eq!(
        lines.first().map(|l| l.status.as_str()),
        Some("pulling manifest")
    );
    assert_eq!(lines.last().map(|l| l.status.as_str()), Some("success"));
    let digests: std::collections::BTreeSet<&str> =
        lines.iter().filter_map(|l| l.digest.as_deref()).collect();
    assert_eq!(digests.len(), 4, "the GGUF, template, params and config");
    // The daemon's own count starts again at each layer (the case the sums are for) ...
    let layer_counts: Vec<u64> = lines
        .iter()
        .filter(|l| l.digest.is_some())
        .map(|l| l.layer_completed_bytes.unwrap_or(0))
        .collect();
    assert!(
        layer_counts.windows(2).any(|w| w[1] < w[0]),
        "{layer_counts:?}"
    );
    // ... and the sums never go back, ending at every layer's bytes.
    assert!(
        lines
            .windows(2)
            .all(|w| w[1].completed_bytes >= w[0].completed_bytes),
        "{lines:?}"
    );
    let model_bytes = std::fs::metadata(nexus_tests::model_path()?)?.len();
    let last = lines.last().cloned().unwrap_or_else(|| unreachable!());
    assert_eq!(last.layers, 4);
    assert_eq!(last.completed_bytes, last.total_bytes);
    assert!(last.total_bytes > model_bytes, "{last:?}");

    // Pulled again: every blob is on disk, one complete line per layer, the same sums.
    let again: Vec<nexus_llm::ollama::PullProgress> =
        provider.pull("llama3.1:8b").await?.try_collect().await?;
    let layer_lines: Vec<_> = again.iter().filter(|l| l.digest.is_some()).collect();
    assert_eq!(layer_lines.len(), 4, "{again:?}");
    assert!(
        layer_lines
            .iter()
            .all(|l| l.layer_completed_bytes == l.layer_total_bytes)
    );
    assert_eq!(again.last().map(|l| l.total_bytes), Some(last.total_bytes));

    // An unknown name: the daemon's error line after the 200, a missing model.
    let unknown: Result<Vec<_>, _> = provider.pull("no-such-model").await?.try_collect().await;
    let err = unknown.err();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.kind == ProviderErrorKind::ModelNotFound
                && e.message.contains("file does not exist")),
        "{err:?}"
    );
    Ok(())
}
