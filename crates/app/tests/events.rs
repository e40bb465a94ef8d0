//! `event` steps end to end on a real SQLite file: an event posted through the run's
//! callback URL (its key checked) or by name finishes the step with the event's body;
//! an event posted while the run's process is dead is taken when the run resumes; the
//! timeout's output; refused posts store nothing. Waits are for the run's own events,
//! with a deadline so a broken step fails the test instead of hanging it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use nexus_app::keys::ProcessSecrets;
use nexus_app::{Desktop, Error, Paths, RunRequest};
use nexus_engine::{Event, EventSink, RunStatus};
use tokio::sync::mpsc;

const DEADLINE: Duration = Duration::from_secs(60);

const PAYMENT: &str = r#"id: wait-for-payment
steps:
  - id: url
    kind: template
    template: "{{ run.callback_url }}"
  - id: paid
    kind: event
    event: payment
    needs: [url]
  - id: done
    kind: template
    needs: [paid]
    template: "paid {{ steps.paid.json.amount }} for {{ run.id }}"
"#;

fn desktop(dir: &Path) -> anyhow::Result<Arc<Desktop>> {
    let folder = dir.join("workflows");
    std::fs::create_dir_all(&folder)?;
    let closed = format!("http://127.0.0.1:{}", nexus_tests::free_port()?);
    Ok(Arc::new(Desktop::new(
        Paths {
            settings_file: dir.join("config/desktop.json"),
            database: dir.join("nexus.db"),
            default_workflows: folder,
            ollama_url: Some(closed),
            embedded_model: nexus_tests::model_path()?,
        },
        Arc::new(ProcessSecrets::default()),
    )))
}

struct Forward(mpsc::UnboundedSender<Event>);

impl EventSink for Forward {
    fn emit(&self, event: &Event) {
        let _ = self.0.send(event.clone());
    }
}

fn sink() -> (Arc<dyn EventSink>, mpsc::UnboundedReceiver<Event>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Forward(tx)), rx)
}

/// Waits for the first event that `pick` maps to a value.
async fn until<T>(
    rx: &mut mpsc::UnboundedReceiver<Event>,
    mut pick: impl FnMut(&Event) -> Option<T>,
) -> anyhow::Result<T> {
    tokio::time::timeout(DEADLINE, async {
        while let Some(e) = rx.recv().await {
            if let Some(v) = pick(&e) {
                return Ok(v);
            }
        }
        anyhow::bail!("the run's events ended")
    })
    .await
    .context("no such event within the deadline")?
}

fn started(step: &'static str) -> impl FnMut(&Event) -> Option<()> {
    move |e| matches!(e, Event::StepStarted { step_id, .. } if step_id == step).then_some(())
}

fn finished(e: &Event) -> Option<RunStatus> {
    match e {
        Event::RunFinished { status, .. } => Some(*status),
        _ => None,
    }
}

async fn output(app: &Desktop, run_id: &str, step: &str) -> anyhow::Result<Option<String>> {
    let run = app.get_run(run_id).await?;
    Ok(run
        .steps
        .iter()
        .find(|s| s.step_id == step)
        .and_then(|s| s.output.clone()))
}

fn request(text: &str) -> RunRequest {
    RunRequest {
        text: text.to_string(),
        ..RunRequest::default()
    }
}

#[tokio::test]
async fn a_callback_with_the_runs_key_finishes_the_event_step_with_its_body() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path())?;
    app.set_callback_base("http://127.0.0.1:7878/").await?;
    let (events, mut rx) = sink();
    let run_id = app.start_run(request(PAYMENT), events).await?;
    until(&mut rx, started("paid")).await?;

    let url = output(&app, &run_id, "url").await?.context("url output")?;
    let prefix = format!("http://127.0.0.1:7878/callbacks/{run_id}/");
    let key = url.strip_prefix(&prefix).context(url.clone())?.to_string();
    assert_eq!(key.len(), 32, "{url}");

    // A wrong key, another run's key, a bad name: refused, nothing stored.
    let body = serde_json::json!({"amount": 42});
    let wrong = "0".repeat(32);
    assert!(matches!(
        app.post_callback(&run_id, &wrong, "payment", &body).await,
        Err(Error::UnknownRun { .. })
    ));
    assert!(matches!(
        app.post_callback("another-run", &key, "payment", &body)
            .await,
        Err(Error::UnknownRun { .. })
    ));
    assert!(matches!(
        app.post_event(&run_id, "pay ment/../x", &body).await,
        Err(Error::InvalidEvent { .. })
    ));
    // An event of another name waits for a step that never comes; the step goes on
    // waiting for its own.
    app.post_event(&run_id, "refund", &serde_json::json!({"amount": 1}))
        .await?;
    let posted = app.post_callback(&run_id, &key, "payment", &body).await?;
    assert_eq!(posted.name, "payment");
    assert_eq!(
        until(&mut rx, finished).await?,
        RunStatus::Succeeded,
        "{:?}",
        app.get_run(&run_id).await?.error
    );
    assert_eq!(
        output(&app, &run_id, "paid").await?.as_deref(),
        Some(r#"{"amount":42}"#)
    );
    assert_eq!(
        output(&app, &run_id, "done").await?,
        Some(format!("paid 42 for {run_id}"))
    );
    // A finished run takes no more events.
    assert!(matches!(
        app.post_callback(&run_id, &key, "payment", &body).await,
        Err(Error::NotActive { .. })
    ));
    Ok(())
}

#[tokio::test]
async fn an_event_posted_while_the_run_was_down_is_taken_when_it_resumes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A process runs it and dies while the step waits: the task is dropped, nothing
    // more is written.
    let store = nexus_app::runs::open_store(&dir.path().join("nexus.db")).await?;
    let engine = nexus_app::runs::engine(
        Arc::clone(&store),
        &nexus_app::setup::ProviderSettings {
            ollama_url: Some(format!("http://127.0.0.1:{}", nexus_tests::free_port()?)),
            ..Default::default()
        },
        2,
    )
    .await?;
    let plan = Arc::new(
        nexus_engine::load_str(PAYMENT, Some("payment.yaml"))
            .map_err(|d| anyhow::anyhow!("{d:?}"))?,
    );
    let run_id = uuid::Uuid::now_v7().to_string();
    let (events, mut rx) = sink();
    let options = nexus_engine::RunOptions {
        run_id: Some(run_id.clone()),
        sinks: vec![events],
        ..Default::default()
    };
    let task = {
        let (engine, store) = (Arc::clone(&engine), Arc::clone(&store));
        tokio::spawn(async move {
            nexus_app::runs::execute(&engine, &store, plan, Default::default(), options).await
        })
    };
    until(&mut rx, started("paid")).await?;
    task.abort();
    let _ = task.await;
    drop(engine);

    // The event comes while nothing runs the run: it is stored.
    let app = desktop(dir.path())?;
    app.post_event(&run_id, "payment", &serde_json::json!({"amount": 7}))
        .await?;
    let (events, mut rx) = sink();
    app.resume_run(&run_id, events).await?;
    assert_eq!(until(&mut rx, finished).await?, RunStatus::Succeeded);
    assert_eq!(
        output(&app, &run_id, "done").await?,
        Some(format!("paid 7 for {run_id}"))
    );
    // Without a callback base the URL renders empty.
    assert_eq!(output(&app, &run_id, "url").await?.as_deref(), Some(""));
    Ok(())
}

#[tokio::test]
async fn the_timeout_gives_the_timeout_output_or_fails_the_step() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path())?;
    let text = r#"id: approve-or-not
steps:
  - id: answer
    kind: event
    within: 300ms
    timeout_output: {approved: false}
  - id: strict
    kind: event
    event: answer
    within: 300ms
  - id: said
    kind: template
    needs: [answer]
    template: "approved: {{ steps.answer.json.approved | tojson }}"
"#;
    let (events, mut rx) = sink();
    let run_id = app.start_run(request(text), events).await?;
    assert_eq!(until(&mut rx, finished).await?, RunStatus::Failed);
    let run = app.get_run(&run_id).await?;
    let said = run
        .steps
        .iter()
        .find(|s| s.step_id == "said")
        .context("said")?;
    assert_eq!(said.output.as_deref(), Some("approved: false"));
    let strict = run
        .steps
        .iter()
        .find(|s| s.step_id == "strict")
        .context("strict")?;
    let error = strict.error.as_deref().unwrap_or_default();
    assert!(error.contains("no event `answer` came before"), "{error}");
    Ok(())
}
