//! Triggers end to end on a real workflows folder and a real SQLite file: cron with a
//! controllable clock (fires, overlap policies, missed fires after a simulated sleep, no
//! double fire across a restart or between two processes), file triggers on real file
//! changes, webhooks' checks. Each wait is for an event the triggers broadcast (with a
//! deadline so a broken trigger fails the test instead of hanging it).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use hmac::Mac;
use nexus_app::engine::human::HumanDecision;
use nexus_app::engine::store::RunTrigger;
use nexus_app::engine::{Event, EventSink, RunStatus};
use nexus_app::keys::ProcessSecrets;
use nexus_app::store::RunFilter;
use nexus_app::triggers::{
    AppTriggers, Clock, HookCall, HookError, Hosting, ManualClock, SinkFactory, TriggerEvent,
    Triggers,
};
use nexus_app::{Desktop, Paths};
use tokio::sync::{broadcast, mpsc};

const DEADLINE: Duration = Duration::from_secs(60);

fn utc(s: &str) -> DateTime<Utc> {
    s.parse().expect("RFC 3339")
}

/// A desktop whose workflows folder (`dir/workflows`) holds `files`.
fn desktop(dir: &Path, files: &[(&str, &str)]) -> anyhow::Result<Arc<Desktop>> {
    let folder = dir.join("workflows");
    std::fs::create_dir_all(&folder)?;
    for (name, text) in files {
        std::fs::write(folder.join(name), text)?;
    }
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

/// Forwards every event of the triggered runs to a channel.
struct Forward(mpsc::UnboundedSender<Event>);

impl EventSink for Forward {
    fn emit(&self, event: &Event) {
        let _ = self.0.send(event.clone());
    }
}

struct Harness {
    triggers: Triggers,
    events: broadcast::Receiver<TriggerEvent>,
    runs: mpsc::UnboundedReceiver<Event>,
}

fn arm(desktop: &Arc<Desktop>, clock: &Arc<ManualClock>, webhooks: bool) -> Harness {
    let (tx, runs) = mpsc::unbounded_channel();
    let sinks: SinkFactory = Arc::new(move || {
        let sink: Arc<dyn EventSink> = Arc::new(Forward(tx.clone()));
        (sink, Box::new(|_: &str| {}))
    });
    let triggers = Triggers::start(
        Arc::clone(desktop),
        Arc::clone(clock) as Arc<dyn Clock>,
        Hosting { webhooks },
        Some(sinks),
    );
    let events = triggers.subscribe();
    Harness {
        triggers,
        events,
        runs,
    }
}

impl Harness {
    /// The next trigger event that `pick` maps to `Some`, and every event before it.
    async fn until<T>(
        &mut self,
        mut pick: impl FnMut(&TriggerEvent) -> Option<T>,
    ) -> anyhow::Result<(T, Vec<TriggerEvent>)> {
        let mut before = Vec::new();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| {
                    format!("no such trigger event within {DEADLINE:?}; saw {before:#?}")
                })??;
            if let Some(found) = pick(&event) {
                return Ok((found, before));
            }
            before.push(event);
        }
    }

    /// Waits until the cron trigger `name` decided at `now` and sleeps: returns what it
    /// did on the way.
    async fn settled(
        &mut self,
        name: &str,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Vec<TriggerEvent>> {
        let now = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (_, before) = self
            .until(|e| match e {
                TriggerEvent::Waiting {
                    trigger, now: at, ..
                } if trigger == name && *at == now => Some(()),
                _ => None,
            })
            .await?;
        Ok(before)
    }

    /// Waits for a run event that `pick` maps to `Some`.
    async fn run_event<T>(
        &mut self,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let event = tokio::time::timeout_at(deadline, self.runs.recv())
                .await
                .context("no such run event in time")?
                .context("the run events ended")?;
            if let Some(found) = pick(&event) {
                return Ok(found);
            }
        }
    }

    async fn finished(&mut self, run_id: &str) -> anyhow::Result<RunStatus> {
        self.run_event(|e| match e {
            Event::RunFinished {
                run_id: id, status, ..
            } if id == run_id => Some(*status),
            _ => None,
        })
        .await
    }

    async fn asked(&mut self, run_id: &str) -> anyhow::Result<()> {
        self.run_event(|e| match e {
            Event::WaitingForHuman { run_id: id, .. } if id == run_id => Some(()),
            _ => None,
        })
        .await
    }
}

fn fired(events: &[TriggerEvent]) -> Vec<(String, Option<String>)> {
    events
        .iter()
        .filter_map(|e| match e {
            TriggerEvent::Fired {
                run_id, fire_at, ..
            } => Some((run_id.clone(), fire_at.clone())),
            _ => None,
        })
        .collect()
}

fn fired_run(e: &TriggerEvent) -> Option<(String, Option<String>)> {
    match e {
        TriggerEvent::Fired {
            run_id, fire_at, ..
        } => Some((run_id.clone(), fire_at.clone())),
        _ => None,
    }
}

const NIGHTLY: &str = r#"id: nightly
inputs:
  topic: {type: string}
triggers:
  - kind: cron
    schedule: "0 9 * * *"
    timezone: UTC
    catch_up: all
    max_catch_up: 2
    inputs: {topic: tea}
steps:
  - id: hello
    kind: template
    template: "about {{ inputs.topic }}"
"#;

async fn cron_runs(desktop: &Desktop) -> anyhow::Result<Vec<String>> {
    let filter = RunFilter {
        trigger: Some("cron".into()),
    };
    Ok(desktop
        .list_runs_where(100, &filter)
        .await?
        .into_iter()
        .map(|r| r.run_id)
        .collect())
}

/// A schedule fires at its time with its inputs and the run records the trigger; a
/// restart right after does not fire again; fires missed during a simulated sleep are
/// caught up to the cap and the rest reported; two processes on one database start a
/// fire once.
#[tokio::test]
async fn cron_fires_once_per_fire_across_restarts_sleeps_and_two_processes() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), &[("nightly.yaml", NIGHTLY)])?;
    let clock = Arc::new(ManualClock::new(utc("2027-01-11T08:59:00Z")));
    let mut h = arm(&app, &clock, false);
    let (next, _) = h
        .until(|e| match e {
            TriggerEvent::Armed { next_fire, .. } => Some(next_fire.clone()),
            _ => None,
        })
        .await?;
    assert_eq!(next.as_deref(), Some("2027-01-11T09:00:00.000Z"));
    h.settled("cron", clock.now()).await?;

    clock.set(utc("2027-01-11T09:00:00Z"));
    let ((run_id, fire_at), _) = h.until(fired_run).await?;
    assert_eq!(fire_at.as_deref(), Some("2027-01-11T09:00:00.000Z"));
    assert_eq!(h.finished(&run_id).await?, RunStatus::Succeeded);
    let run = app.get_run(&run_id).await?;
    assert_eq!(
        run.trigger,
        Some(RunTrigger {
            kind: "cron".into(),
            name: "cron".into()
        })
    );
    assert_eq!(run.inputs["topic"], "tea");
    assert_eq!(run.steps[0].output.as_deref(), Some("about tea"));
    h.settled("cron", clock.now()).await?;
    let listed = h.triggers.list();
    assert_eq!(
        listed[0].last_fire.as_deref(),
        Some("2027-01-11T09:00:00.000Z")
    );
    assert_eq!(
        listed[0].next_fire.as_deref(),
        Some("2027-01-12T09:00:00.000Z")
    );
    drop(h);

    // A restart 30 s later: the fire is stored, nothing runs again.
    clock.set(utc("2027-01-11T09:00:30Z"));
    let mut h = arm(&app, &clock, false);
    let seen = h.settled("cron", clock.now()).await?;
    assert!(
        fired(&seen).is_empty(),
        "fired again after a restart: {seen:?}"
    );
    drop(h);

    // The machine sleeps four days: 4 fires missed, `max_catch_up: 2` runs the last two.
    clock.set(utc("2027-01-15T12:00:00Z"));
    let mut h = arm(&app, &clock, false);
    let seen = h.settled("cron", clock.now()).await?;
    // They run one after another (the second is queued behind the first).
    let mut caught = fired(&seen);
    while caught.len() < 2 {
        let (next, _) = h.until(fired_run).await?;
        caught.push(next);
    }
    let times: Vec<Option<String>> = caught.iter().map(|(_, at)| at.clone()).collect();
    assert_eq!(
        times,
        [
            Some("2027-01-14T09:00:00.000Z".into()),
            Some("2027-01-15T09:00:00.000Z".into())
        ],
        "{seen:#?}"
    );
    let skipped = seen.iter().find_map(|e| match e {
        TriggerEvent::Skipped { reason, .. } => Some(reason.clone()),
        _ => None,
    });
    assert!(
        skipped.is_some_and(|r| r.starts_with("2 fire(s) missed")),
        "{seen:?}"
    );
    for (id, _) in caught {
        assert_eq!(h.finished(&id).await?, RunStatus::Succeeded);
    }
    assert_eq!(cron_runs(&app).await?.len(), 3);
    drop(h);

    // Two processes (two apps on the same folder and database) and one fire: one run.
    let other = desktop(dir.path(), &[])?;
    let mut a = arm(&app, &clock, false);
    let mut b = arm(&other, &clock, false);
    a.settled("cron", clock.now()).await?;
    b.settled("cron", clock.now()).await?;
    clock.set(utc("2027-01-16T09:00:00Z"));
    let seen_a = a.settled("cron", clock.now()).await?;
    let seen_b = b.settled("cron", clock.now()).await?;
    let both: Vec<_> = fired(&seen_a).into_iter().chain(fired(&seen_b)).collect();
    assert_eq!(both.len(), 1, "{seen_a:?} {seen_b:?}");
    assert_eq!(cron_runs(&app).await?.len(), 4);
    Ok(())
}

fn approving(name: &str, overlap: &str) -> String {
    format!(
        r#"id: {name}
triggers:
  - kind: cron
    name: every10s
    schedule: "*/10 * * * * *"
    timezone: UTC
    overlap: {overlap}
steps:
  - id: ship
    kind: approval
    prompt: Ship it?
    approval: {{default: reject, timeout: 10m}}
"#
    )
}

/// `overlap: skip` drops a fire while the trigger's run waits; `queue` starts it when
/// the running one ends; `allow` starts it at once.
#[tokio::test]
async fn overlap_policies_skip_queue_or_allow_a_fire_while_a_run_goes_on() -> anyhow::Result<()> {
    for overlap in ["skip", "queue", "allow"] {
        let dir = tempfile::tempdir()?;
        let app = desktop(dir.path(), &[("ship.yaml", &approving("ship", overlap))])?;
        let clock = Arc::new(ManualClock::new(utc("2027-01-11T09:00:05Z")));
        let mut h = arm(&app, &clock, false);
        h.settled("every10s", clock.now()).await?;
        clock.set(utc("2027-01-11T09:00:10Z"));
        let ((first, _), _) = h.until(fired_run).await?;
        h.asked(&first).await?;
        clock.set(utc("2027-01-11T09:00:20Z"));
        let seen = h.settled("every10s", clock.now()).await?;
        let second = fired(&seen);
        match overlap {
            "skip" => {
                assert!(second.is_empty(), "{seen:?}");
                assert!(seen.iter().any(|e| matches!(e, TriggerEvent::Skipped { reason, .. } if reason.contains("overlap: skip"))));
            }
            "queue" => assert!(second.is_empty(), "queued, not started: {seen:?}"),
            _ => assert_eq!(second.len(), 1, "{seen:?}"),
        }
        app.answer(&first, "ship", HumanDecision::Approve)?;
        assert_eq!(h.finished(&first).await?, RunStatus::Succeeded);
        if overlap == "queue" {
            // The queued fire starts once the first run ended, with its own fire time.
            let ((queued, at), _) = h.until(fired_run).await?;
            assert_eq!(at.as_deref(), Some("2027-01-11T09:00:20.000Z"));
            h.asked(&queued).await?;
            app.answer(&queued, "ship", HumanDecision::Reject)?;
            h.finished(&queued).await?;
        }
        if overlap == "skip" {
            // With the run over, the next fire runs.
            clock.set(utc("2027-01-11T09:00:30Z"));
            let seen = h.settled("every10s", clock.now()).await?;
            assert_eq!(fired(&seen).len(), 1, "{seen:?}");
        }
    }
    Ok(())
}

const WATCHER: &str = r#"id: watcher
inputs:
  path: {type: string}
triggers:
  - kind: file
    paths: [inbox]
    debounce_ms: 100
steps:
  - id: hello
    kind: template
    template: "got {{ inputs.path }}"
"#;

/// A file written into a watched folder starts a run with its path; a workflow file
/// added to the folder is armed without a restart; a trigger that cannot work is listed
/// with its problem.
#[tokio::test]
async fn a_changed_file_starts_a_run_and_new_workflow_files_are_armed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("workflows/inbox"))?;
    let missing = WATCHER
        .replace("[inbox]", "[nowhere]")
        .replace("id: watcher", "id: lost");
    let broken = NIGHTLY.replace("0 9 * * *", "0 9 * *");
    let app = desktop(
        dir.path(),
        &[
            ("watcher.yaml", WATCHER),
            ("lost.yaml", &missing),
            ("broken.yaml", &broken),
        ],
    )?;
    let clock = Arc::new(ManualClock::new(utc("2027-01-11T08:00:00Z")));
    let mut h = arm(&app, &clock, false);
    h.until(|e| matches!(e, TriggerEvent::Armed { kind, .. } if kind == "file").then_some(()))
        .await?;
    let views = h.triggers.list();
    let of = |file: &str| {
        views
            .iter()
            .find(|v| v.file == file)
            .cloned()
            .expect("listed")
    };
    assert!(of("watcher.yaml").armed);
    assert!(
        of("lost.yaml")
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("does not exist")),
        "{views:?}"
    );
    assert!(
        of("broken.yaml")
            .problem
            .as_deref()
            .is_some_and(|p| p.contains("does not validate")),
        "{views:?}"
    );

    let written = dir.path().join("workflows/inbox/report.txt");
    std::fs::write(&written, "quarterly numbers")?;
    let ((run_id, _), _) = h.until(fired_run).await?;
    assert_eq!(h.finished(&run_id).await?, RunStatus::Succeeded);
    let run = app.get_run(&run_id).await?;
    assert_eq!(run.trigger.as_ref().map(|t| t.kind.as_str()), Some("file"));
    let path = run.inputs["path"].as_str().unwrap_or_default().to_string();
    assert!(path.ends_with("inbox/report.txt"), "{path}");

    // A new workflow with a schedule is armed from the folder watcher.
    std::fs::write(dir.path().join("workflows/nightly.yaml"), NIGHTLY)?;
    h.until(|e| matches!(e, TriggerEvent::Armed { kind, workflow_id, .. } if kind == "cron" && workflow_id == "nightly").then_some(()))
        .await?;
    Ok(())
}

/// The desktop app arms the folder's `cron` and `file` triggers while it is open, and
/// after the user chooses another workflows folder it runs that folder's triggers and no
/// longer the old one's.
#[tokio::test]
async fn the_desktop_app_arms_its_folder_and_rearms_a_new_one() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("workflows/inbox"))?;
    let app = desktop(
        dir.path(),
        &[("watcher.yaml", WATCHER), ("nightly.yaml", NIGHTLY)],
    )?;
    let clock = Arc::new(ManualClock::new(utc("2027-01-11T08:00:00Z")));
    let host = AppTriggers::start(Arc::clone(&app), Arc::clone(&clock) as Arc<dyn Clock>);
    let mut events = host.subscribe();
    host.first_scan().await;
    assert_eq!(host.armed(), 2, "{:?}", host.list());

    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("inbox"))?;
    std::fs::write(other.join("watcher.yaml"), WATCHER)?;
    app.set_workflows_folder(&other)?;
    host.restart();
    host.first_scan().await;
    let views = host.list();
    assert_eq!(views.len(), 1, "{views:?}");
    assert!(
        views[0].armed && views[0].kind.as_deref() == Some("file"),
        "{views:?}"
    );

    // The old folder's inbox is no longer watched; the new one's is.
    std::fs::write(dir.path().join("workflows/inbox/old.txt"), "old")?;
    std::fs::write(other.join("inbox/new.txt"), "new")?;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let run_id = loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .context("no run was fired")??;
        if let TriggerEvent::Fired { run_id, .. } = event {
            break run_id;
        }
    };
    // The run is stored before its trigger reports it fired.
    let run = app.get_run(&run_id).await?;
    let path = run.inputs["path"].as_str().unwrap_or_default().to_string();
    assert!(path.ends_with("other/inbox/new.txt"), "{path}");
    host.stop();
    assert_eq!(host.armed(), 0);
    Ok(())
}

/// On a first start the workflows folder does not exist: the triggers' scan, which runs
/// before the window lists the folder, creates it with the example workflows as the
/// window would (it once created it empty, and the window then showed no examples).
#[tokio::test]
async fn the_first_scan_of_a_missing_folder_brings_the_examples() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), &[])?;
    std::fs::remove_dir(dir.path().join("workflows"))?;
    let clock = Arc::new(ManualClock::new(utc("2027-01-11T08:00:00Z")));
    let host = AppTriggers::start(Arc::clone(&app), Arc::clone(&clock) as Arc<dyn Clock>);
    host.first_scan().await;
    let listed = app.list_workflows()?;
    let examples: Vec<String> = app.templates().into_iter().map(|t| t.name).collect();
    assert!(!examples.is_empty());
    for name in &examples {
        assert!(listed.contains(name), "{name} missing from {listed:?}");
    }
    Ok(())
}

const HOOK: &str = r#"id: intake
inputs:
  title: {type: string}
  count: {type: number, default: 1}
triggers:
  - kind: webhook
    path: github/issues
    auth: {kind: hmac_sha256, secret_env: NEXUS_TEST_HOOK_SECRET}
    rate_per_minute: 3
    inputs:
      title: "{{ body.issue.title }}"
  - kind: webhook
    name: plain
    path: intake
    auth: {kind: token, secret_env: NEXUS_TEST_HOOK_TOKEN}
steps:
  - id: hello
    kind: template
    template: "issue {{ inputs.title }} x{{ inputs.count }}"
"#;

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A webhook call with a good signature starts a run with the mapped inputs; a bad or
/// missing signature, a wrong token, a wrong method, a body that is not JSON, an
/// unknown field, inputs that do not validate and calls over the rate start nothing.
#[tokio::test]
async fn webhook_calls_are_checked_before_anything_starts() -> anyhow::Result<()> {
    // SAFETY: nextest runs each test in its own process; only this test reads them.
    unsafe {
        std::env::set_var("NEXUS_TEST_HOOK_SECRET", "s3cret");
        std::env::set_var("NEXUS_TEST_HOOK_TOKEN", "t0ken-t0ken");
    }
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), &[("intake.yaml", HOOK)])?;
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let mut h = arm(&app, &clock, true);
    for _ in 0..2 {
        h.until(|e| {
            matches!(e, TriggerEvent::Armed { kind, .. } if kind == "webhook").then_some(())
        })
        .await?;
    }
    let body = br#"{"issue": {"title": "crash on save"}}"#.to_vec();
    let call = |signature: Option<String>, body: &[u8]| HookCall {
        method: "POST".into(),
        signature,
        body: body.to_vec(),
        ..HookCall::default()
    };
    let err = |r: Result<nexus_app::triggers::HookStarted, HookError>| match r {
        Ok(s) => panic!("started {s:?}"),
        Err(e) => e,
    };
    let t = &h.triggers;
    assert!(matches!(
        err(t.call_webhook("github/issues", call(None, &body)).await),
        HookError::Unauthorized { .. }
    ));
    let wrong = sign("other", &body);
    assert!(matches!(
        err(t
            .call_webhook("github/issues", call(Some(wrong), &body))
            .await),
        HookError::Unauthorized { .. }
    ));
    let tampered = sign("s3cret", b"{}");
    assert!(matches!(
        err(t
            .call_webhook("github/issues", call(Some(tampered), &body))
            .await),
        HookError::Unauthorized { .. }
    ));
    let mut get = call(Some(sign("s3cret", &body)), &body);
    get.method = "GET".into();
    assert!(matches!(
        err(t.call_webhook("github/issues", get).await),
        HookError::WrongMethod { .. }
    ));
    assert!(matches!(
        err(t.call_webhook("nope", call(None, &body)).await),
        HookError::NotFound { .. }
    ));
    let not_json = b"title=crash".to_vec();
    assert!(matches!(
        err(t
            .call_webhook(
                "github/issues",
                call(Some(sign("s3cret", &not_json)), &not_json)
            )
            .await),
        HookError::BadBody { .. }
    ));
    assert!(
        app.list_runs(10).await?.is_empty(),
        "a refused call started a run"
    );

    let started = t
        .call_webhook("github/issues", call(Some(sign("s3cret", &body)), &body))
        .await?;
    assert_eq!(h.finished(&started.run_id).await?, RunStatus::Succeeded);
    let run = app.get_run(&started.run_id).await?;
    assert_eq!(
        run.steps[0].output.as_deref(),
        Some("issue crash on save x1")
    );
    assert_eq!(
        run.trigger.as_ref().map(|t| t.name.as_str()),
        Some("webhook")
    );

    // The token hook takes the body's fields as inputs.
    let token = |t: &str, body: &[u8]| HookCall {
        method: "POST".into(),
        authorization: Some(format!("Bearer {t}")),
        body: body.to_vec(),
        ..HookCall::default()
    };
    let t = &h.triggers;
    assert!(matches!(
        err(t
            .call_webhook("intake", token("wrong", br#"{"title": "x"}"#))
            .await),
        HookError::Unauthorized { .. }
    ));
    assert!(matches!(
        err(t.call_webhook("intake", token("t0ken-t0ken", br#"{"titel": "x"}"#)).await),
        HookError::BadBody { message } if message.contains("`titel`")
    ));
    assert!(matches!(
        err(t
            .call_webhook(
                "intake",
                token("t0ken-t0ken", br#"{"title": "x", "count": "many"}"#)
            )
            .await),
        HookError::InvalidInputs { .. }
    ));
    let ok = t
        .call_webhook(
            "intake",
            token("t0ken-t0ken", br#"{"title": "x", "count": 3}"#),
        )
        .await?;
    assert_eq!(h.finished(&ok.run_id).await?, RunStatus::Succeeded);
    assert_eq!(app.list_runs(10).await?.len(), 2);

    // `rate_per_minute: 3`: every authenticated call counts (the one whose body was not
    // JSON too), so one more passes and the next waits about 20 s.
    let t = &h.triggers;
    let mut results = Vec::new();
    for _ in 0..2 {
        results.push(
            t.call_webhook("github/issues", call(Some(sign("s3cret", &body)), &body))
                .await,
        );
    }
    assert!(results[0].is_ok(), "{results:?}");
    assert!(
        matches!(&results[1], Err(HookError::RateLimited { retry_after_s, .. }) if (1..=20).contains(retry_after_s)),
        "{results:?}"
    );
    Ok(())
}

/// A hook without a secret (`auth: none`) answers only calls made to a loopback name, so
/// a web page that reaches a loopback server through DNS rebinding (its own name in
/// `Host`) starts nothing.
#[tokio::test]
async fn a_hook_without_auth_answers_only_under_a_loopback_name() -> anyhow::Result<()> {
    let open = "id: open\ntriggers:\n  - kind: webhook\n    path: open\n    auth: {kind: none}\nsteps:\n  - id: a\n    kind: template\n    template: hi\n";
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), &[("open.yaml", open)])?;
    let clock = Arc::new(ManualClock::new(utc("2027-01-11T08:00:00Z")));
    let mut h = arm(&app, &clock, true);
    h.until(|e| matches!(e, TriggerEvent::Armed { kind, .. } if kind == "webhook").then_some(()))
        .await?;
    let call = |host: Option<&str>| HookCall {
        method: "POST".into(),
        host: host.map(str::to_string),
        ..HookCall::default()
    };
    for host in [Some("rebind.example:7878"), Some("127.0.0.1.nip.io"), None] {
        let got = h.triggers.call_webhook("open", call(host)).await;
        assert!(
            matches!(&got, Err(HookError::Unauthorized { message }) if message.contains("loopback name")),
            "{host:?}: {got:?}"
        );
    }
    for host in ["127.0.0.1:7878", "localhost", "[::1]:7878"] {
        let started = h.triggers.call_webhook("open", call(Some(host))).await?;
        assert_eq!(
            h.finished(&started.run_id).await?,
            RunStatus::Succeeded,
            "{host}"
        );
    }
    let runs = app.list_runs(10).await?;
    assert_eq!(runs.len(), 3, "only the loopback calls started runs");
    Ok(())
}
