//! Circuit breakers (persisted), the privacy policy, budgets, guardrails, the output
//! cache, the ladder's later rungs, human decisions and pausing — against a real SQLite
//! file, the scripted OpenAI-compatible server on loopback and the embedded model.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nexus_engine::breaker::{BreakerConfig, BreakerState};
use nexus_engine::events::{Event, RunStatus, StepStatus};
use nexus_engine::human::{HumanDecision, HumanHandler, HumanRequest};
use nexus_engine::provider::{Provider, ProviderErrorKind};
use nexus_engine::{EngineConfig, RunOptions};
use nexus_llm::{OllamaProvider, OpenAiProvider};
use nexus_tests::free_port;
use nexus_tests::scripted::{Behavior, ScriptedServer};

use crate::{embedded, engine, go, plan, temp_store};

fn scripted(server: &ScriptedServer, model: &str) -> anyhow::Result<Arc<dyn Provider>> {
    Ok(Arc::new(OpenAiProvider::new(
        &server.base_url,
        None,
        vec![model.into()],
    )?))
}

fn ok(words: &[&str]) -> Behavior {
    Behavior::Stream(words.iter().map(|w| (*w).to_string()).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breaker_trips_stays_open_across_a_restart_then_half_opens_and_closes()
-> anyhow::Result<()> {
    // Two failures, then the server recovers (the last behaviour repeats).
    let server = ScriptedServer::start(vec![
        Behavior::Status(503),
        Behavior::Status(503),
        ok(&["back"]),
    ])
    .await?;
    let (store, _dir) = temp_store().await?;
    let config = EngineConfig {
        breaker: BreakerConfig {
            consecutive_failures: 2,
            open_base: Duration::from_millis(1500),
            ..BreakerConfig::default()
        },
        ..EngineConfig::default()
    };
    // The fallback answers at once (a canned reply of the Ollama test server), so the
    // three runs below finish well within the breaker's open time even on a loaded
    // machine (the embedded model once took 8 s there, and the breaker half-opened early).
    let backup = tokio::task::spawn_blocking(|| {
        nexus_tests::OllamaServer::start_with_specs(
            &[],
            &[
                serde_json::json!({"name": "backup", "capabilities": ["completion"],
                                  "script": {"content": ["fine"]}}),
            ],
            &[],
        )
    })
    .await??;
    let providers = || -> anyhow::Result<Vec<Arc<dyn Provider>>> {
        Ok(vec![
            scripted(&server, "scripted")?,
            Arc::new(OllamaProvider::new(&backup.url)?),
        ])
    };
    let wf = plan(
        "id: breaker\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted, ollama:backup]\n    prompt: Say hi.\n    max_tokens: 4\n    cache: false\n    retry: {max_attempts: 2, initial_interval: 10ms, jitter: false}\n    fallback: {simplify: false}\n",
    );
    let key = "openai:scripted";

    // Run 1: two failures trip the breaker; the step falls back.
    let e1 = engine(providers()?, Some(store.clone()), config.clone());
    let (r1, ev1) = go(&e1, Arc::clone(&wf), RunOptions::default()).await?;
    assert_eq!(r1.status, RunStatus::Succeeded);
    assert_eq!(server.arrivals().len(), 2);
    assert!(
        ev1.iter()
            .any(|e| matches!(e, Event::BreakerChanged { model, transition }
        if model == key && matches!(transition.to, BreakerState::Open { .. })))
    );

    // Run 2: the breaker stays open, the model is not called, the reason is recorded.
    let (r2, _) = go(&e1, Arc::clone(&wf), RunOptions::default()).await?;
    assert_eq!(r2.status, RunStatus::Succeeded);
    assert_eq!(server.arrivals().len(), 2, "an open breaker is not called");
    let excluded = &r2.steps[0].selection.as_ref().expect("selection").excluded;
    assert!(
        excluded
            .iter()
            .any(|x| x.model == key && x.reason.contains("circuit breaker open")),
        "{excluded:?}"
    );

    // A restart: a new engine on the same database still sees the breaker open.
    drop(e1);
    let e2 = engine(providers()?, Some(store.clone()), config.clone());
    let states = e2.breaker_states().await?;
    let (_, state, snap) = states.iter().find(|(k, _, _)| k == key).expect("stored");
    assert!(matches!(state, BreakerState::Open { .. }), "{state:?}");
    assert_eq!(snap.trips, 1);
    let (r3, _) = go(&e2, Arc::clone(&wf), RunOptions::default()).await?;
    assert_eq!(r3.status, RunStatus::Succeeded);
    assert_eq!(server.arrivals().len(), 2, "still open after the restart");

    // After the open time: one half-open probe; it succeeds and the breaker closes.
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let (r4, ev4) = go(&e2, Arc::clone(&wf), RunOptions::default()).await?;
    assert_eq!(r4.status, RunStatus::Succeeded);
    assert_eq!(r4.steps[0].model.as_deref(), Some(key));
    assert_eq!(server.arrivals().len(), 3, "exactly one probe");
    assert!(
        ev4.iter()
            .any(|e| matches!(e, Event::BreakerChanged { transition, .. }
        if transition.from == BreakerState::HalfOpen && transition.to == BreakerState::Closed))
    );
    let states = e2.breaker_states().await?;
    assert!(
        states
            .iter()
            .any(|(k, s, _)| k == key && *s == BreakerState::Closed)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_only_workflow_never_reaches_the_cloud_even_when_every_local_option_fails()
-> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![ok(&["leaked"])]).await?;
    let dead_ollama = OllamaProvider::new(&format!("http://127.0.0.1:{}", free_port()?))?;
    let no_model = nexus_embedded::EmbeddedProvider::new("/nonexistent/model.gguf".into());
    let providers: Vec<Arc<dyn Provider>> = vec![
        Arc::new(dead_ollama),
        scripted(&server, "gpt-4o-mini")?,
        Arc::new(no_model),
    ];
    let wf = plan(
        r#"
id: private
local_only: true
agents:
  backup: {system: "You are terse."}
steps:
  - id: a
    kind: llm
    prompt: "Summarise our private notes."
    max_tokens: 8
    fallback: {agent: backup}
  - id: b
    kind: llm
    model: {min_context: 1000}
    prompt: "More private notes."
    max_tokens: 8
"#,
    );
    let e = engine(providers, None, EngineConfig::default());
    let (report, _) = go(&e, wf, RunOptions::default()).await?;
    assert_eq!(report.status, RunStatus::Failed);
    for step in &report.steps {
        assert_eq!(step.status, StepStatus::Failed);
        let sel = step.selection.as_ref().expect("selection");
        assert!(
            sel.excluded
                .iter()
                .any(|x| x.model == "openai:gpt-4o-mini" && x.reason.contains("local_only")),
            "{:?}",
            sel.excluded
        );
    }
    assert!(
        server.arrivals().is_empty(),
        "nothing was sent to the cloud"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_refuse_calls_before_they_are_made() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![ok(&["paid", " answer"])]).await?;
    // Tokens: the step may generate 256 tokens but the run may spend only 100.
    let e = engine(
        vec![scripted(&server, "scripted")?],
        None,
        EngineConfig::default(),
    );
    let (report, _) = go(
        &e,
        plan("id: tokens\nbudget: {max_tokens: 100}\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: Write an essay.\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed);
    let step = &report.steps[0];
    assert!(
        step.error.as_deref().unwrap_or_default().contains("budget"),
        "{:?}",
        step.error
    );
    assert!(step.attempts.is_empty());
    assert!(server.arrivals().is_empty(), "refused before the call");

    // Money: gpt-4o would cost more than the budget allows (catalog prices); the free
    // embedded model takes the step; the paid model is never called.
    let e = engine(
        vec![scripted(&server, "gpt-4o")?, embedded()?],
        None,
        EngineConfig::default(),
    );
    let (report, _) = go(
        &e,
        plan("id: money\nbudget: {max_cost_usd: 0.0001}\nsteps:\n  - id: a\n    kind: llm\n    prompt: Name a colour.\n    max_tokens: 8\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let step = &report.steps[0];
    assert_eq!(
        step.model.as_deref(),
        Some("embedded:smollm2-135m-instruct")
    );
    let sel = step.selection.as_ref().expect("selection");
    assert!(
        sel.excluded
            .iter()
            .any(|x| x.model == "openai:gpt-4o" && x.reason.contains("projected cost")),
        "{:?}",
        sel.excluded
    );
    assert!(server.arrivals().is_empty());

    // Within budget, the cost of a priced model is recorded from the provider's counts.
    let (report, _) = go(
        &engine(vec![scripted(&server, "gpt-4o")?], None, EngineConfig::default()),
        plan("id: priced\nbudget: {max_cost_usd: 1.0}\nsteps:\n  - id: a\n    kind: llm\n    prompt: Name a colour.\n    max_tokens: 8\n"),
        RunOptions::default(),
    )
    .await?;
    let cost = report.steps[0].cost_usd.expect("cost recorded");
    // 7 prompt + 2 completion tokens at $2.50 / $10.00 per million.
    assert!(
        (cost - (7.0 * 2.5 + 2.0 * 10.0) / 1e6).abs() < 1e-12,
        "{cost}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guardrails_redact_before_the_provider_sees_the_text_block_and_audit() -> anyhow::Result<()>
{
    let server =
        ScriptedServer::start(vec![ok(&["Reach me at ", "bob@example.org", " today."])]).await?;
    let (store, _dir) = temp_store().await?;
    let e = engine(
        vec![scripted(&server, "scripted")?],
        Some(store.clone()),
        EngineConfig::default(),
    );
    // Default rules: secrets are redacted, e-mail addresses only warned about.
    let (report, events) = go(
        &e,
        plan("id: guard\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: \"Deploy with key AKIAQ3VR7NXL2MTB5KDW and mail jane.doe@example.com\"\n    max_tokens: 8\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let sent = server.bodies()[0].to_string();
    assert!(
        !sent.contains("AKIAQ3VR7NXL2MTB5KDW"),
        "the key never left: {sent}"
    );
    assert!(sent.contains("[REDACTED:aws_access_key]"), "{sent}");
    assert!(sent.contains("jane.doe@example.com"), "warn keeps the text");
    let step = &report.steps[0];
    let verdict = |stage: &str, detector: &str| {
        step.guardrails
            .iter()
            .find(|g| g.stage == stage && g.detector == detector)
            .cloned()
    };
    let key = verdict("input", "aws_access_key").expect("key verdict");
    assert_eq!(key.action, "redact");
    assert!(
        !key.sample.contains("AKIAQ3VR7NXL2MTB5KDW"),
        "masked sample"
    );
    assert_eq!(verdict("input", "email").expect("email").action, "warn");
    assert_eq!(
        verdict("output", "email").expect("output email").action,
        "warn"
    );
    assert!(events.iter().any(
        |e| matches!(e, Event::GuardrailVerdict { detector, .. } if detector == "aws_access_key")
    ));
    let audit = store.guardrail_audit(10).await?;
    assert!(audit.len() >= 3, "{audit:?}");

    // A blocking rule: the step fails before any call, and is not retried.
    let before = server.arrivals().len();
    let (report, _) = go(
        &e,
        plan("id: block\nguardrails:\n  rules:\n    - {detector: email, severity: high, action: block}\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: \"Mail jane.doe@example.com\"\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(
        report.steps[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains(ProviderErrorKind::GuardrailBlock.as_str())
    );
    assert_eq!(server.arrivals().len(), before);

    // Redaction of the output.
    let (report, _) = go(
        &e,
        plan("id: redact_out\nguardrails:\n  rules:\n    - {detector: email, severity: medium, action: redact}\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: Where can I reach Bob?\n    cache: false\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(
        report.steps[0].output.as_deref(),
        Some("Reach me at [REDACTED:email] today.")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_one_step_reruns_only_it_and_its_dependants() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![ok(&["same"])]).await?;
    let (store, _dir) = temp_store().await?;
    let e = engine(
        vec![scripted(&server, "scripted")?],
        Some(store.clone()),
        EngineConfig::default(),
    );
    let wf = |b_prompt: &str| {
        plan(&format!(
            "id: cache\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: First.\n  - id: b\n    kind: llm\n    needs: [a]\n    model: [openai:scripted]\n    prompt: \"{b_prompt} {{{{ steps.a.output }}}}\"\n  - id: c\n    kind: llm\n    model: [openai:scripted]\n    prompt: Independent.\n"
        ))
    };
    let (r1, _) = go(&e, wf("Second."), RunOptions::default()).await?;
    assert_eq!(r1.status, RunStatus::Succeeded);
    assert_eq!(server.arrivals().len(), 3);

    // Unchanged: everything comes from the cache.
    let (r2, ev2) = go(&e, wf("Second."), RunOptions::default()).await?;
    assert_eq!(server.arrivals().len(), 3);
    assert!(r2.steps.iter().all(|s| s.cached), "{:?}", r2.steps);
    assert!(
        ev2.iter()
            .any(|e| matches!(e, Event::StepSucceeded { cached: true, .. }))
    );

    // Step b edited: only b runs again.
    let (r3, _) = go(&e, wf("Second, edited."), RunOptions::default()).await?;
    assert_eq!(server.arrivals().len(), 4);
    let cached: Vec<(&str, bool)> = r3
        .steps
        .iter()
        .map(|s| (s.step_id.as_str(), s.cached))
        .collect();
    assert!(
        cached.contains(&("a", true))
            && cached.contains(&("c", true))
            && cached.contains(&("b", false)),
        "{cached:?}"
    );

    // A fresh run ignores the cache.
    let (_, _) = go(
        &e,
        wf("Second, edited."),
        RunOptions {
            use_cache: false,
            ..RunOptions::default()
        },
    )
    .await?;
    assert_eq!(server.arrivals().len(), 7);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ladder_simplifies_then_substitutes_an_agent() -> anyhow::Result<()> {
    // Three failures (the retry policy's attempts), then the simplified call succeeds.
    let server = ScriptedServer::start(vec![
        Behavior::Status(500),
        Behavior::Status(500),
        Behavior::Status(500),
        ok(&["{\"count\": 1}"]),
    ])
    .await?;
    let e = engine(
        vec![scripted(&server, "scripted")?],
        None,
        EngineConfig {
            breaker: BreakerConfig {
                consecutive_failures: 0,
                ..BreakerConfig::default()
            },
            ..EngineConfig::default()
        },
    );
    let (report, _) = go(
        &e,
        plan("id: simplify\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: Count.\n    max_tokens: 100\n    output_schema: {type: object, properties: {count: {type: integer}}, required: [count]}\n    retry: {max_attempts: 3, initial_interval: 10ms, jitter: false}\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let step = &report.steps[0];
    assert_eq!(step.attempts.len(), 4);
    assert!(
        step.fallbacks.iter().any(|f| f.rung == "simplify"),
        "{:?}",
        step.fallbacks
    );
    let last = server.bodies().last().cloned().unwrap_or_default();
    assert_eq!(last["max_tokens"], 50, "half the max_tokens: {last}");
    assert!(
        last.get("response_format").is_none() || last["response_format"].is_null(),
        "no structured-output constraint: {last}"
    );
    assert!(
        last.to_string().contains("JSON Schema"),
        "the schema moves into the prompt"
    );

    // Every model rung fails: the substitute agent (on the embedded model) takes it.
    let down = ScriptedServer::start(vec![Behavior::Status(500)]).await?;
    let e = engine(
        vec![scripted(&down, "scripted")?, embedded()?],
        None,
        EngineConfig::default(),
    );
    let (report, _) = go(
        &e,
        plan("id: agent\nagents:\n  backup: {system: \"Answer in one word.\", model: [embedded]}\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: Name a fruit.\n    max_tokens: 6\n    retry: {max_attempts: 1}\n    fallback: {simplify: false, agent: backup}\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let step = &report.steps[0];
    assert_eq!(
        step.model.as_deref(),
        Some("embedded:smollm2-135m-instruct")
    );
    assert!(
        step.fallbacks
            .iter()
            .any(|f| f.rung == "agent" && f.to.contains("backup")),
        "{:?}",
        step.fallbacks
    );
    Ok(())
}

/// Answers with a fixed list of decisions, recording the questions.
struct Scripted {
    answers: Mutex<Vec<HumanDecision>>,
    asked: Mutex<Vec<HumanRequest>>,
}

#[async_trait]
impl HumanHandler for Scripted {
    async fn decide(&self, request: &HumanRequest) -> Option<HumanDecision> {
        self.asked.lock().ok()?.push(request.clone());
        let mut a = self.answers.lock().ok()?;
        if a.is_empty() {
            None
        } else {
            Some(a.remove(0))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn humans_approve_retry_or_write_the_output_and_runs_pause() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![Behavior::Status(401)]).await?;
    let (store, _dir) = temp_store().await?;
    let e = engine(
        vec![scripted(&server, "scripted")?],
        Some(store.clone()),
        EngineConfig::default(),
    );
    // The model fails for good; the human first asks for a retry, then writes the output;
    // the approval step is approved.
    let human = Arc::new(Scripted {
        answers: Mutex::new(vec![
            HumanDecision::Retry,
            HumanDecision::UseOutput {
                text: "written by hand".into(),
            },
            HumanDecision::Approve,
        ]),
        asked: Mutex::new(Vec::new()),
    });
    let wf = plan(
        "id: human\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: Hi.\n    fallback: {simplify: false, ask_human: true}\n  - id: ok\n    kind: approval\n    needs: [a]\n    prompt: \"Ship '{{ steps.a.output }}'?\"\n",
    );
    let (report, events) = go(
        &e,
        Arc::clone(&wf),
        RunOptions {
            human: Some(human.clone()),
            ..RunOptions::default()
        },
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let a = report.steps.iter().find(|s| s.step_id == "a").expect("a");
    assert_eq!(a.output.as_deref(), Some("written by hand"));
    assert_eq!(a.attempts.len(), 2, "the retry ran the ladder again");
    let asked = human.asked.lock().map(|a| a.clone()).unwrap_or_default();
    assert_eq!(asked.len(), 3);
    assert!(
        matches!(&asked[2], HumanRequest::Approval { message, .. } if message == "Ship 'written by hand'?")
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::WaitingForHuman { .. }))
    );

    // Nobody to ask: an approval step takes its default (reject by default).
    let (report, _) = go(
        &e,
        plan("id: nobody\nsteps:\n  - id: ok\n    kind: approval\n    prompt: Ship?\n    approval: {timeout: 1s}\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed);
    assert!(
        report.steps[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("default")
    );

    // Paused before it starts: no step starts until resumed.
    let ok_server = ScriptedServer::start(vec![ok(&["fine"])]).await?;
    let e = engine(
        vec![scripted(&ok_server, "scripted")?],
        Some(store.clone()),
        EngineConfig::default(),
    );
    let options = RunOptions::default();
    options.control.pause();
    let control = options.control.clone();
    let wf = plan(
        "id: pause\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: Hi.\n",
    );
    let task = {
        let e = Arc::clone(&e);
        tokio::spawn(async move { go(&e, wf, options).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(ok_server.arrivals().is_empty(), "paused: nothing started");
    let runs = store.list_runs(1).await?;
    assert_eq!(runs[0].status, "paused");
    control.resume();
    let (report, events) = task.await??;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert!(events.iter().any(|e| matches!(e, Event::RunPaused { .. })));
    assert!(events.iter().any(|e| matches!(e, Event::RunResumed { .. })));

    // Paused while its last step runs: the step finishes and the run ends (nothing is left
    // to start, so there is nothing to wait for).
    let slow = ScriptedServer::start(vec![Behavior::Paced(
        vec!["slow".into(), " reply".into()],
        Duration::from_millis(200),
    )])
    .await?;
    let e = engine(
        vec![scripted(&slow, "scripted")?],
        None,
        EngineConfig::default(),
    );
    let options = RunOptions::default();
    let control = options.control.clone();
    let wf = plan(
        "id: pause_last\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: Hi.\n",
    );
    let task = tokio::spawn(async move { go(&e, wf, options).await });
    tokio::time::sleep(Duration::from_millis(150)).await;
    control.pause();
    let (report, _) = tokio::time::timeout(Duration::from_secs(10), task).await???;
    assert_eq!(report.status, RunStatus::Succeeded);
    Ok(())
}

/// Answers after a delay, remembering when.
struct Slow {
    decided_at: Mutex<Option<chrono::DateTime<chrono::Utc>>>,
}

#[async_trait]
impl HumanHandler for Slow {
    async fn decide(&self, _: &HumanRequest) -> Option<HumanDecision> {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        if let Ok(mut d) = self.decided_at.lock() {
            *d = Some(chrono::Utc::now());
        }
        Some(HumanDecision::Skip)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asking_a_human_pauses_the_run() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![Behavior::Status(401)]).await?;
    let e = engine(
        vec![scripted(&server, "scripted")?, embedded()?],
        None,
        EngineConfig::default(),
    );
    let human = Arc::new(Slow {
        decided_at: Mutex::new(None),
    });
    let wf = plan(
        "id: pause_ask\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: Hi.\n    fallback: {simplify: false, ask_human: true}\n  - id: x\n    kind: llm\n    model: [embedded]\n    prompt: Name a colour.\n    max_tokens: 4\n  - id: b\n    kind: template\n    needs: [x]\n    template: \"after {{ steps.x.output }}\"\n",
    );
    let (report, events) = go(
        &e,
        wf,
        RunOptions {
            human: Some(human.clone()),
            ..RunOptions::default()
        },
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let a = report.steps.iter().find(|s| s.step_id == "a").expect("a");
    assert_eq!(a.status, StepStatus::Skipped, "the human skipped it");
    let b = report.steps.iter().find(|s| s.step_id == "b").expect("b");
    let decided = human
        .decided_at
        .lock()
        .ok()
        .and_then(|d| *d)
        .expect("asked");
    assert!(
        b.started_at >= decided,
        "no step started while the human was asked"
    );
    assert!(events.iter().any(|e| matches!(e, Event::RunPaused { .. })));
    assert!(events.iter().any(|e| matches!(e, Event::RunResumed { .. })));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_scoped_guardrails_scrub_or_block_only_what_goes_to_the_cloud() -> anyhow::Result<()>
{
    let server = ScriptedServer::start(vec![ok(&["noted"])]).await?;
    let e = engine(
        vec![scripted(&server, "scripted")?, embedded()?],
        None,
        EngineConfig::default(),
    );
    // Redact e-mail addresses for the cloud only: the cloud model gets the scrubbed text,
    // the step's own input (what a local model would see) keeps it.
    let (report, _) = go(
        &e,
        plan("id: scoped\nguardrails:\n  rules:\n    - {detector: email, severity: medium, action: redact, scope: cloud}\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted, embedded]\n    prompt: \"Mail jane.doe@example.com the notes\"\n    max_tokens: 6\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let step = &report.steps[0];
    assert_eq!(step.model.as_deref(), Some("openai:scripted"));
    let sent = server.bodies()[0].to_string();
    assert!(
        !sent.contains("jane.doe@example.com") && sent.contains("[REDACTED:email]"),
        "{sent}"
    );
    assert!(
        step.input
            .as_deref()
            .unwrap_or_default()
            .contains("jane.doe@example.com")
    );
    assert!(
        step.guardrails
            .iter()
            .any(|g| g.stage == "input (cloud)" && g.action == "redact")
    );

    // Block for the cloud only: the cloud model is never called, a local model serves it.
    let before = server.arrivals().len();
    let (report, _) = go(
        &e,
        plan("id: scoped_block\nguardrails:\n  rules:\n    - {detector: email, severity: high, action: block, scope: cloud}\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted, embedded]\n    prompt: \"Mail jane.doe@example.com the notes\"\n    max_tokens: 6\n"),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let step = &report.steps[0];
    assert_eq!(
        step.model.as_deref(),
        Some("embedded:smollm2-135m-instruct")
    );
    assert_eq!(server.arrivals().len(), before, "nothing went to the cloud");
    assert!(
        step.fallbacks[0]
            .reason
            .contains("keep this text from cloud models"),
        "{:?}",
        step.fallbacks
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_budget_counts_what_calls_used_not_what_they_reserved() -> anyhow::Result<()> {
    // Each step projects ~300 tokens (the prompt estimate + max_tokens 290) and uses 8
    // (the server counts 7 prompt + 1 completion). Five in a row fit a 1,000-token run
    // budget only if each call's reservation ends with the call.
    let server = ScriptedServer::start(vec![ok(&["word"])]).await?;
    let e = engine(
        vec![scripted(&server, "scripted")?],
        None,
        EngineConfig::default(),
    );
    let steps: String = (0..5)
        .map(|i| {
            let needs = if i > 0 {
                format!("    needs: [s{}]\n", i - 1)
            } else {
                String::new()
            };
            format!("  - id: s{i}\n    kind: llm\n    model: [openai:scripted]\n    prompt: Say one word.\n    max_tokens: 290\n    cache: false\n{needs}")
        })
        .collect();
    let (report, _) = go(
        &e,
        plan(&format!(
            "id: run_budget\nbudget: {{max_tokens: 1000}}\nsteps:\n{steps}"
        )),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(server.arrivals().len(), 5, "every step called the model");
    let used: u64 = report
        .steps
        .iter()
        .filter_map(|s| s.usage)
        .map(|u| u.prompt_tokens + u.completion_tokens)
        .sum();
    assert_eq!(used, 5 * 8);
    Ok(())
}

/// Forwards every event to a channel as it happens.
struct ChannelSink(tokio::sync::mpsc::UnboundedSender<Event>);

impl nexus_engine::EventSink for ChannelSink {
    fn emit(&self, event: &Event) {
        let _ = self.0.send(event.clone());
    }
}

/// The first question waits until a second one is asked, then is skipped; the second
/// waits until the test releases it.
struct TwoQuestions {
    asked: Mutex<u32>,
    second_asked: tokio::sync::Notify,
    release_second: tokio::sync::Notify,
}

#[async_trait]
impl HumanHandler for TwoQuestions {
    async fn decide(&self, _: &HumanRequest) -> Option<HumanDecision> {
        let n = {
            let mut a = self.asked.lock().ok()?;
            *a += 1;
            *a
        };
        if n == 1 {
            self.second_asked.notified().await;
        } else {
            self.second_asked.notify_one();
            self.release_second.notified().await;
        }
        Some(HumanDecision::Skip)
    }
}

/// Pauses the run (as the user would, from the run panel) while it is asked, then skips.
struct PausesThenSkips(nexus_engine::run::RunControl);

#[async_trait]
impl HumanHandler for PausesThenSkips {
    async fn decide(&self, _: &HumanRequest) -> Option<HumanDecision> {
        self.0.pause();
        Some(HumanDecision::Skip)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answering_one_question_keeps_a_run_paused_by_the_user_or_by_another_question()
-> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![Behavior::Status(401)]).await?;
    let e = engine(
        vec![scripted(&server, "scripted")?],
        None,
        EngineConfig::default(),
    );
    let failing = |id: &str| {
        format!(
            "  - id: {id}\n    kind: llm\n    model: [openai:scripted]\n    prompt: Hi.\n    fallback: {{simplify: false, ask_human: true}}\n"
        )
    };

    // Two failed steps ask at once: answering the first leaves the run paused.
    let control = nexus_engine::run::RunControl::default();
    let human = Arc::new(TwoQuestions {
        asked: Mutex::new(0),
        second_asked: tokio::sync::Notify::new(),
        release_second: tokio::sync::Notify::new(),
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let wf = plan(&format!(
        "id: two_questions\nsteps:\n{}{}",
        failing("a"),
        failing("b")
    ));
    let run = tokio::spawn({
        let (e, control, human) = (e.clone(), control.clone(), human.clone());
        async move {
            go(
                &e,
                wf,
                RunOptions {
                    human: Some(human),
                    control,
                    sinks: vec![Arc::new(ChannelSink(tx))],
                    ..RunOptions::default()
                },
            )
            .await
        }
    });
    while let Some(event) = rx.recv().await {
        if matches!(event, Event::HumanDecided { .. }) {
            break;
        }
    }
    assert!(
        control.is_paused(),
        "the second question still holds the run paused"
    );
    human.release_second.notify_one();
    let (report, _) = run.await??;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert!(!control.is_paused(), "no question holds it any more");

    // The user pauses the run while a question waits: the answer does not resume it.
    let control = nexus_engine::run::RunControl::default();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let wf = plan(&format!("id: user_pause\nsteps:\n{}", failing("a")));
    let run = tokio::spawn({
        let (e, control) = (e.clone(), control.clone());
        async move {
            go(
                &e,
                wf,
                RunOptions {
                    human: Some(Arc::new(PausesThenSkips(control.clone()))),
                    control,
                    sinks: vec![Arc::new(ChannelSink(tx))],
                    ..RunOptions::default()
                },
            )
            .await
        }
    });
    while let Some(event) = rx.recv().await {
        if matches!(event, Event::HumanDecided { .. }) {
            break;
        }
    }
    assert!(control.is_paused(), "the user's pause outlives the answer");
    control.resume();
    let (report, _) = run.await??;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let a = report.steps.iter().find(|s| s.step_id == "a").expect("a");
    assert_eq!(a.status, StepStatus::Skipped);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_inputs_template_outputs_and_approval_questions_pass_the_guardrails()
-> anyhow::Result<()> {
    let (store, _dir) = temp_store().await?;
    let e = engine(Vec::new(), Some(store.clone()), EngineConfig::default());
    // The key is in an input given to the run (the file has none), and built by a
    // template and by a question from two halves that are harmless alone.
    let wf = plan(concat!(
        "id: stored_text\n",
        "inputs:\n  note: {type: string}\n",
        "steps:\n",
        "  - id: echo\n    kind: template\n    template: \"{{ inputs.note }}\"\n",
        "  - id: built\n    kind: template\n    template: \"{{ 'AKIAQ3VR' ~ '7NXL2MTB5KDW' }}\"\n",
        "  - id: ask\n    kind: approval\n    prompt: \"Use key {{ 'AKIAQ3VR' ~ '7NXL2MTB5KDW' }}?\"\n",
    ));
    let human = Arc::new(Scripted {
        answers: Mutex::new(vec![HumanDecision::Approve]),
        asked: Mutex::new(Vec::new()),
    });
    let sink = Arc::new(nexus_engine::events::CollectingSink::new());
    let mut inputs = serde_json::Map::new();
    inputs.insert("note".into(), "deploy with AKIAQ3VR7NXL2MTB5KDW".into());
    let report = e
        .run(
            wf,
            inputs,
            RunOptions {
                human: Some(human.clone()),
                sinks: vec![sink.clone()],
                ..RunOptions::default()
            },
        )
        .await?;
    let events = sink.events();
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let stored = store.get_run(&report.run_id).await?;
    let everything = serde_json::to_string(&stored)?;
    assert!(
        !everything.contains("AKIAQ3VR7NXL2MTB5KDW"),
        "the key is stored nowhere: {everything}"
    );
    assert_eq!(
        stored.inputs["note"],
        "deploy with [REDACTED:aws_access_key]"
    );
    let step = |id: &str| stored.steps.iter().find(|s| s.step_id == id).expect(id);
    assert_eq!(
        step("built").output.as_deref(),
        Some("[REDACTED:aws_access_key]")
    );
    assert!(step("built").guardrails.iter().any(|g| g.stage == "output"));
    assert!(step("ask").guardrails.iter().any(|g| g.stage == "question"));
    let asked = format!(
        "{:?}",
        human.asked.lock().map(|a| a.clone()).unwrap_or_default()
    );
    assert!(
        !asked.contains("AKIAQ3VR7NXL2MTB5KDW"),
        "shown redacted: {asked}"
    );
    assert!(events.iter().any(|e| matches!(
        e,
        Event::GuardrailVerdict { stage, .. } if stage == "input `note`"
    )));

    // A block rule on an input refuses the run before anything is stored.
    let runs_before = store.list_runs(100).await?.len();
    let blocked = plan(concat!(
        "id: blocked_input\n",
        "guardrails:\n  rules:\n    - {detector: email, severity: high, action: block}\n",
        "inputs:\n  who: {type: string, default: \"jane.doe@example.com\"}\n",
        "steps:\n  - id: a\n    kind: template\n    template: \"{{ inputs.who }}\"\n",
    ));
    let err = go(&e, blocked, RunOptions::default())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("input `who`"), "{err}");
    assert!(
        !err.contains("jane.doe"),
        "the message never repeats the text"
    );
    assert_eq!(store.list_runs(100).await?.len(), runs_before);
    Ok(())
}
