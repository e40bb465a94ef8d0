//! The fault-injection suite: real loopback servers (the OpenAI-compatible llama.cpp
//! server and the Ollama-protocol server, both answering with the real SmolLM2 model)
//! behind proxies the test controls. For each fault the first attempt's error class must
//! be the expected one, the engine's next move must be the action the taxonomy table
//! gives for that class (retry the same model, or move to another), and the step must
//! succeed on a viable fallback.

use std::sync::Arc;
use std::time::Duration;

use nexus_engine::events::{Event, RunStatus, StepStatus};
use nexus_engine::provider::{ErrorAction, Provider, ProviderErrorKind};
use nexus_llm::{OllamaProvider, OpenAiProvider};
use nexus_tests::proxy::{Fault, FaultProxy};
use nexus_tests::{LlamaServer, OllamaServer, free_port};
use tokio_util::sync::CancellationToken;

use crate::{embedded, plan, run_plan};

const OPENAI_CHAT: &str = "/v1/chat/completions";
const OLLAMA_CHAT: &str = "/api/chat";

struct Rig {
    openai: FaultProxy,
    ollama: FaultProxy,
    _llama: LlamaServer,
    _ollama_server: OllamaServer,
}

impl Rig {
    fn providers(&self) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
        Ok(vec![
            Arc::new(OllamaProvider::new(&self.ollama.base_url)?),
            Arc::new(OpenAiProvider::new(
                &format!("{}/v1", self.openai.base_url),
                None,
                vec!["smol".into()],
            )?),
            embedded()?,
        ])
    }
}

/// What a scenario expects.
struct Expect {
    name: &'static str,
    kind: ProviderErrorKind,
}

/// Checks the first failed attempt's class and that the engine's next move is the
/// taxonomy's action for it, and that the step succeeded.
fn check(expect: &Expect, report: &nexus_engine::RunReport, events: &[Event]) {
    let name = expect.name;
    let step = &report.steps[0];
    assert_eq!(
        report.status,
        RunStatus::Succeeded,
        "{name}: the step has a viable fallback and must succeed: {:?}",
        step.error
    );
    assert_eq!(step.status, StepStatus::Succeeded, "{name}");
    let first = &step.attempts[0];
    assert_eq!(
        first.error_kind,
        Some(expect.kind),
        "{name}: first attempt {:?}",
        first.error_message
    );
    let second = step
        .attempts
        .get(1)
        .unwrap_or_else(|| panic!("{name}: no second attempt: {:?}", step.attempts));
    let same_model = second.model == first.model;
    match expect.kind.action() {
        ErrorAction::FallBack | ErrorAction::LargerContext => {
            assert!(
                !same_model,
                "{name}: {} must move to another model, not retry {:?}",
                expect.kind, first.model
            );
            assert!(
                step.fallbacks
                    .iter()
                    .any(|f| f.reason.starts_with(expect.kind.as_str())),
                "{name}: the fallback names the class: {:?}",
                step.fallbacks
            );
        }
        ErrorAction::RetryWithBackoff
        | ErrorAction::WaitThenRetry
        | ErrorAction::DropParameter
        | ErrorAction::RepairThenFallBack => {
            assert!(
                same_model,
                "{name}: {} must retry the same model first, got {:?} then {:?}",
                expect.kind, first.model, second.model
            );
        }
        ErrorAction::Stop => panic!("{name}: a stopping class cannot have a fallback"),
    }
    // The event log says the same.
    assert!(
        events.iter().any(
            |e| matches!(e, Event::AttemptFailed { error_kind, .. } if *error_kind == expect.kind)
        ),
        "{name}: attempt_failed event with {}",
        expect.kind
    );
}

fn workflow(model: &str, extra: &str) -> Arc<nexus_engine::Plan> {
    let max_tokens = if extra.contains("max_tokens") {
        ""
    } else {
        "    max_tokens: 8\n"
    };
    plan(&format!(
        "id: taxonomy\nsteps:\n  - id: a\n    kind: llm\n    model: {model}\n    prompt: Say hello.\n{max_tokens}    retry: {{max_attempts: 3, initial_interval: 50ms, jitter: false}}\n    fallback: {{simplify: false}}\n{extra}"
    ))
}

async fn run(
    rig: &Rig,
    wf: Arc<nexus_engine::Plan>,
) -> anyhow::Result<(nexus_engine::RunReport, Vec<Event>)> {
    run_plan(wf, rig.providers()?, None, vec![], CancellationToken::new()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_gets_its_taxonomy_action_and_the_step_succeeds() -> anyhow::Result<()> {
    let (llama, ollama_server) = tokio::task::spawn_blocking(|| {
        Ok::<_, anyhow::Error>((
            LlamaServer::start("smol")?,
            OllamaServer::start(&["llama3.1:latest"])?,
        ))
    })
    .await??;
    let llama_root = llama.base_url.trim_end_matches("/v1").to_string();
    let rig = Rig {
        openai: FaultProxy::start(&llama_root).await?,
        ollama: FaultProxy::start(&ollama_server.url).await?,
        _llama: llama,
        _ollama_server: ollama_server,
    };
    let cloud_first = "[openai:smol, ollama:llama3.1, embedded]";
    let local_first = "[ollama:llama3.1, openai:smol, embedded]";

    // Connection refused: the local daemon is down → fall back at once.
    {
        let dead = OllamaProvider::new(&format!("http://127.0.0.1:{}", free_port()?))?;
        let providers: Vec<Arc<dyn Provider>> = vec![
            Arc::new(dead),
            Arc::new(OpenAiProvider::new(
                &format!("{}/v1", rig.openai.base_url),
                None,
                vec!["smol".into()],
            )?),
        ];
        let (report, events) = run_plan(
            workflow(local_first, ""),
            providers,
            None,
            vec![],
            CancellationToken::new(),
        )
        .await?;
        check(
            &Expect {
                name: "connection refused",
                kind: ProviderErrorKind::Unavailable,
            },
            &report,
            &events,
        );
    }

    // A connection reset before any byte: transient → retry the same model.
    rig.openai.push(OPENAI_CHAT, Fault::Refuse);
    let (report, events) = run(&rig, workflow(cloud_first, "")).await?;
    check(
        &Expect {
            name: "connection reset",
            kind: ProviderErrorKind::Transient,
        },
        &report,
        &events,
    );

    // 429 with a short Retry-After: wait for it, then retry the same model.
    rig.openai.push(
        OPENAI_CHAT,
        Fault::Status {
            status: 429,
            body: r#"{"error":{"message":"Rate limit reached","type":"rate_limit_error"}}"#.into(),
            retry_after: Some("1".into()),
        },
    );
    let (report, events) = run(&rig, workflow(cloud_first, "")).await?;
    check(
        &Expect {
            name: "429 Retry-After 1",
            kind: ProviderErrorKind::RateLimited,
        },
        &report,
        &events,
    );
    let waited = events.iter().find_map(|e| match e {
        Event::AttemptFailed { retry_in_ms, .. } => *retry_in_ms,
        _ => None,
    });
    assert!(
        waited.is_some_and(|w| w >= 1000),
        "Retry-After honoured: {waited:?}"
    );

    // 429 with an absurd Retry-After: over the cap → fall back at once instead of waiting.
    rig.openai.push(
        OPENAI_CHAT,
        Fault::Status {
            status: 429,
            body: r#"{"error":{"message":"Rate limit reached"}}"#.into(),
            retry_after: Some("259200".into()),
        },
    );
    let (report, _) = run(&rig, workflow(cloud_first, "")).await?;
    assert_eq!(report.status, RunStatus::Succeeded);
    let step = &report.steps[0];
    assert_eq!(step.attempts.len(), 2, "{:?}", step.attempts);
    assert_ne!(step.attempts[1].model, step.attempts[0].model);
    assert!(
        step.fallbacks[0].reason.contains("over the"),
        "{:?}",
        step.fallbacks
    );

    // 500s: transient → retried with backoff on the same model.
    rig.openai.push_n(
        OPENAI_CHAT,
        Fault::status(500, r#"{"error":{"message":"boom"}}"#),
        2,
    );
    let (report, events) = run(&rig, workflow(cloud_first, "")).await?;
    check(
        &Expect {
            name: "500",
            kind: ProviderErrorKind::Transient,
        },
        &report,
        &events,
    );
    assert_eq!(report.steps[0].attempts.len(), 3);

    // 401: auth → no retry, next model.
    rig.openai.push(
        OPENAI_CHAT,
        Fault::status(401, r#"{"error":{"message":"Incorrect API key provided"}}"#),
    );
    let before = rig.openai.requests(OPENAI_CHAT);
    let (report, events) = run(&rig, workflow(cloud_first, "")).await?;
    check(
        &Expect {
            name: "401",
            kind: ProviderErrorKind::Auth,
        },
        &report,
        &events,
    );
    assert_eq!(
        rig.openai.requests(OPENAI_CHAT) - before,
        1,
        "401 is not retried"
    );

    // A hang past the first-token timeout: timeout → retried.
    rig.openai.push(OPENAI_CHAT, Fault::Hang);
    let (report, events) = run(
        &rig,
        workflow(cloud_first, "    timeout: {first_token: 1s}\n"),
    )
    .await?;
    check(
        &Expect {
            name: "hang",
            kind: ProviderErrorKind::Timeout,
        },
        &report,
        &events,
    );

    // The same on the Ollama protocol.
    rig.ollama.push(OLLAMA_CHAT, Fault::Hang);
    let (report, events) = run(
        &rig,
        workflow(local_first, "    timeout: {first_token: 1s}\n"),
    )
    .await?;
    check(
        &Expect {
            name: "ollama hang",
            kind: ProviderErrorKind::Timeout,
        },
        &report,
        &events,
    );

    // A stream cut after some tokens: its own class, retried with a fresh request.
    rig.openai.push(OPENAI_CHAT, Fault::CutAfter { events: 3 });
    let (report, events) = run(&rig, workflow(cloud_first, "")).await?;
    check(
        &Expect {
            name: "openai stream cut",
            kind: ProviderErrorKind::StreamBroken,
        },
        &report,
        &events,
    );
    rig.ollama.push(OLLAMA_CHAT, Fault::CutAfter { events: 3 });
    let (report, events) = run(&rig, workflow(local_first, "")).await?;
    check(
        &Expect {
            name: "ollama stream cut",
            kind: ProviderErrorKind::StreamBroken,
        },
        &report,
        &events,
    );

    // An empty reply: repaired once on the same model; empty again → next model.
    rig.openai.push_n(OPENAI_CHAT, Fault::EmptyContent, 2);
    let (report, events) = run(&rig, workflow(cloud_first, "")).await?;
    check(
        &Expect {
            name: "empty output",
            kind: ProviderErrorKind::InvalidOutput,
        },
        &report,
        &events,
    );
    let step = &report.steps[0];
    assert_eq!(
        step.attempts[1].error_kind,
        Some(ProviderErrorKind::InvalidOutput)
    );
    assert_ne!(
        step.attempts[2].model, step.attempts[0].model,
        "then falls back"
    );

    // Invalid JSON for a structured step: repaired on the same model. (llama-cpp-python
    // refuses `json_schema` with a validation error and the provider retries with
    // `json_object` inside the attempt, so the reply to rewrite is the second request's.)
    rig.openai.push_n(
        OPENAI_CHAT,
        Fault::ReplaceContent("{\"answer\": ".into()),
        2,
    );
    let (report, events) = run(
        &rig,
        workflow(
            cloud_first,
            "    output_schema: {type: object, properties: {answer: {type: string}}, required: [answer]}\n    max_tokens: 40\n",
        ),
    )
    .await?;
    check(
        &Expect {
            name: "invalid JSON",
            kind: ProviderErrorKind::InvalidOutput,
        },
        &report,
        &events,
    );
    assert!(report.steps[0].output_json.is_some());

    // A 5xx on the Ollama protocol (the daemon's `{"error": ...}` body): retried.
    rig.ollama.push(
        OLLAMA_CHAT,
        Fault::status(500, r#"{"error":"llama runner process has terminated"}"#),
    );
    let (report, events) = run(&rig, workflow(local_first, "")).await?;
    check(
        &Expect {
            name: "ollama 500",
            kind: ProviderErrorKind::Transient,
        },
        &report,
        &events,
    );

    // A model the daemon does not have (the real server's 404): fall back at once.
    let (report, events) = run(
        &rig,
        workflow("[ollama:mistral, openai:smol, embedded]", ""),
    )
    .await?;
    check(
        &Expect {
            name: "model missing",
            kind: ProviderErrorKind::ModelNotFound,
        },
        &report,
        &events,
    );

    // Context overflow: the body is the one llama-cpp-python and OpenAI answer a
    // non-streaming request with (captured from the real server with a 2,048-token
    // window). In streaming mode llama-cpp-python instead answers 200 and closes the stream
    // empty (its bug), which the engine can only see as a broken stream; so the proxy
    // injects the documented answer. The next model takes the step.
    rig.openai.push(
        OPENAI_CHAT,
        Fault::status(
            400,
            r#"{"error":{"message":"This model's maximum context length is 2048 tokens. However, you requested 2640 tokens (2632 in the messages, 8 in the completion). Please reduce the length of the messages or completion.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        ),
    );
    let (report, events) = run(&rig, workflow(cloud_first, "")).await?;
    check(
        &Expect {
            name: "context overflow",
            kind: ProviderErrorKind::ContextOverflow,
        },
        &report,
        &events,
    );
    assert_eq!(
        report.steps[0].model.as_deref(),
        Some("ollama:llama3.1:latest")
    );
    tokio::time::sleep(Duration::from_millis(10)).await;
    Ok(())
}
