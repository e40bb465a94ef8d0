//! Retries, timeouts and cancellation against a scripted OpenAI-compatible server on
//! loopback: attempts and delays follow the policy.

use std::sync::Arc;
use std::time::Duration;

use nexus_engine::events::{Event, EventSink, RunStatus, StepStatus};
use nexus_engine::provider::{Provider, ProviderErrorKind};
use nexus_llm::OpenAiProvider;
use nexus_tests::scripted::{Behavior, ScriptedServer};
use tokio_util::sync::CancellationToken;

use crate::{plan, run_plan};

fn tokens(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_string()).collect()
}

fn workflow(extra: &str) -> Arc<nexus_engine::Plan> {
    plan(&format!(
        "id: faults\nsteps:\n  - id: a\n    kind: llm\n    model: [openai:scripted]\n    prompt: hi\n    fallback: {{simplify: false}}\n{extra}"
    ))
}

async fn provider(server: &ScriptedServer) -> anyhow::Result<Vec<Arc<dyn Provider>>> {
    Ok(vec![Arc::new(OpenAiProvider::new(
        &server.base_url,
        None,
        vec!["scripted".into()],
    )?)])
}

fn retry_delays(events: &[Event]) -> Vec<Option<u64>> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::AttemptFailed { retry_in_ms, .. } => Some(*retry_in_ms),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn transient_failures_are_retried_with_exponential_backoff() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![
        Behavior::Status(500),
        Behavior::Status(503),
        Behavior::Stream(tokens(&["ok", "!"])),
    ])
    .await?;
    let wf = workflow(
        "    retry: {max_attempts: 4, initial_interval: 100ms, backoff_coefficient: 2.0, max_interval: 1s, jitter: false}\n",
    );
    let (report, events) = run_plan(
        wf,
        provider(&server).await?,
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let step = &report.steps[0];
    assert_eq!(step.output.as_deref(), Some("ok!"));
    assert_eq!(step.attempts.len(), 3);
    assert_eq!(
        step.attempts[0].error_kind,
        Some(ProviderErrorKind::Transient)
    );
    assert_eq!(
        step.attempts[1].error_kind,
        Some(ProviderErrorKind::Transient)
    );
    assert_eq!(retry_delays(&events), vec![Some(100), Some(200)]);
    let arrivals = server.arrivals();
    assert_eq!(arrivals.len(), 3);
    assert!(arrivals[1] - arrivals[0] >= Duration::from_millis(100));
    assert!(arrivals[2] - arrivals[1] >= Duration::from_millis(200));
    Ok(())
}

#[tokio::test]
async fn attempts_stop_at_max_attempts_and_the_step_fails() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![Behavior::Status(500)]).await?;
    let wf = workflow(
        "    retry: {max_attempts: 3, initial_interval: 20ms, backoff_coefficient: 3.0, max_interval: 1s, jitter: false}\n  - id: after\n    kind: template\n    needs: [a]\n    template: x\n",
    );
    let (report, events) = run_plan(
        wf,
        provider(&server).await?,
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed);
    let a = report.steps.iter().find(|s| s.step_id == "a").expect("a");
    assert_eq!(a.status, StepStatus::Failed);
    assert_eq!(a.attempts.len(), 3);
    assert_eq!(retry_delays(&events), vec![Some(20), Some(60), None]);
    assert_eq!(server.arrivals().len(), 3);
    let after = report
        .steps
        .iter()
        .find(|s| s.step_id == "after")
        .expect("after");
    assert_eq!(after.status, StepStatus::Skipped);
    assert_eq!(after.error.as_deref(), Some("dependency `a` failed"));
    Ok(())
}

#[tokio::test]
async fn rate_limits_are_retried_but_auth_errors_are_not() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![
        Behavior::Status(429),
        Behavior::Stream(tokens(&["fine"])),
    ])
    .await?;
    let wf = workflow("    retry: {max_attempts: 2, initial_interval: 10ms, jitter: false}\n");
    let (report, _) = run_plan(
        wf,
        provider(&server).await?,
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(
        report.steps[0].attempts[0].error_kind,
        Some(ProviderErrorKind::RateLimited)
    );

    let server = ScriptedServer::start(vec![Behavior::Status(401)]).await?;
    let wf = workflow("    retry: {max_attempts: 5, initial_interval: 10ms, jitter: false}\n");
    let (report, _) = run_plan(
        wf,
        provider(&server).await?,
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(report.steps[0].attempts.len(), 1, "no retry on 401");
    assert_eq!(
        report.steps[0].attempts[0].error_kind,
        Some(ProviderErrorKind::Auth)
    );
    assert_eq!(server.arrivals().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_hang_before_the_first_token_times_out_and_is_retried() -> anyhow::Result<()> {
    let server =
        ScriptedServer::start(vec![Behavior::Hang, Behavior::Stream(tokens(&["late"]))]).await?;
    let wf = workflow(
        "    retry: {max_attempts: 2, initial_interval: 10ms, jitter: false}\n    timeout: {first_token: 300ms}\n",
    );
    let (report, _) = run_plan(
        wf,
        provider(&server).await?,
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let first = &report.steps[0].attempts[0];
    assert_eq!(first.error_kind, Some(ProviderErrorKind::Timeout));
    assert!(
        first
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("first token")
    );
    assert!(first.duration_ms >= 300);
    Ok(())
}

#[tokio::test]
async fn an_idle_gap_in_the_stream_times_out() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![Behavior::StreamThenHang(tokens(&["a", "b"]))]).await?;
    let wf =
        workflow("    retry: {max_attempts: 1}\n    timeout: {first_token: 5s, idle: 200ms}\n");
    let (report, events) = run_plan(
        wf,
        provider(&server).await?,
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed);
    let attempt = &report.steps[0].attempts[0];
    assert_eq!(attempt.error_kind, Some(ProviderErrorKind::Timeout));
    assert!(
        attempt
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("idle"),
        "{attempt:?}"
    );
    assert_eq!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Token { .. }))
            .count(),
        2
    );
    Ok(())
}

#[tokio::test]
async fn a_slow_stream_is_not_cut_without_a_total_timeout_but_is_with_one() -> anyhow::Result<()> {
    // Tokens every 50 ms for longer than the idle limit in total: the idle limit is per
    // gap, so the stream is not cut; with `total` set it is.
    let server = ScriptedServer::start(vec![Behavior::Slow(Duration::from_millis(50))]).await?;
    let wf = workflow(
        "    retry: {max_attempts: 1}\n    timeout: {first_token: 2s, idle: 500ms, total: 1s}\n",
    );
    let (report, events) = run_plan(
        wf,
        provider(&server).await?,
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed);
    let attempt = &report.steps[0].attempts[0];
    assert!(
        attempt
            .error_message
            .as_deref()
            .unwrap_or_default()
            .contains("total timeout"),
        "{attempt:?}"
    );
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Token { .. }))
            .count()
            >= 5
    );
    Ok(())
}

#[tokio::test]
async fn a_stream_cut_before_done_is_a_failed_attempt() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![
        Behavior::StreamThenCut(tokens(&["par", "tial"])),
        Behavior::Stream(tokens(&["whole"])),
    ])
    .await?;
    let wf = workflow("    retry: {max_attempts: 2, initial_interval: 10ms, jitter: false}\n");
    let (report, _) = run_plan(
        wf,
        provider(&server).await?,
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded);
    // The break came after tokens: its own class, retried with a fresh request.
    assert_eq!(
        report.steps[0].attempts[0].error_kind,
        Some(ProviderErrorKind::StreamBroken)
    );
    assert_eq!(
        report.steps[0].output.as_deref(),
        Some("whole"),
        "partial text is not kept"
    );
    Ok(())
}

/// Cancels the run after the third token.
struct CancelAfter(CancellationToken, std::sync::atomic::AtomicUsize);
impl EventSink for CancelAfter {
    fn emit(&self, event: &Event) {
        if matches!(event, Event::Token { .. })
            && self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == 3
        {
            self.0.cancel();
        }
    }
}

#[tokio::test]
async fn cancel_mid_stream_aborts_the_http_request() -> anyhow::Result<()> {
    let server = ScriptedServer::start(vec![Behavior::Slow(Duration::from_millis(30))]).await?;
    let wf = workflow(
        "    retry: {max_attempts: 3}\n  - id: next\n    kind: template\n    needs: [a]\n    template: x\n",
    );
    let cancel = CancellationToken::new();
    let sink: Arc<dyn EventSink> = Arc::new(CancelAfter(cancel.clone(), Default::default()));
    let (report, _) = run_plan(wf, provider(&server).await?, None, vec![sink], cancel).await?;
    assert_eq!(report.status, RunStatus::Cancelled);
    let a = report.steps.iter().find(|s| s.step_id == "a").expect("a");
    assert_eq!(a.status, StepStatus::Cancelled);
    assert_eq!(a.attempts.len(), 1, "a cancelled attempt is never retried");
    let next = report
        .steps
        .iter()
        .find(|s| s.step_id == "next")
        .expect("next");
    assert_ne!(next.status, StepStatus::Succeeded);
    // The server saw the client go away.
    for _ in 0..50 {
        if server.client_disconnected() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        server.client_disconnected(),
        "the HTTP request was not aborted"
    );
    assert_eq!(server.arrivals().len(), 1);
    Ok(())
}
