//! The desktop app's operations end to end, without a window: a real SQLite file, the
//! real embedded model, the Ollama-protocol server (tests/servers/ollama_server.py) on
//! loopback for pulls, and a folder of workflow files on disk.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nexus_app::desktop::PullProgress;
use nexus_app::keys::ProcessSecrets;
use nexus_app::{Desktop, Error, Paths, RunRequest};
use nexus_engine::events::CollectingSink;
use nexus_engine::human::HumanDecision;
use nexus_engine::{Event, RunStatus};

/// A desktop over a temporary folder: settings, database and workflows inside `dir`,
/// Ollama at `ollama` (a closed port when `None`), the test model as the embedded one.
fn desktop(dir: &Path, ollama: Option<&str>) -> anyhow::Result<Desktop> {
    desktop_with(dir, ollama, Arc::new(ProcessSecrets::default()))
}

fn desktop_with(
    dir: &Path,
    ollama: Option<&str>,
    secrets: Arc<dyn nexus_app::keys::SecretStore>,
) -> anyhow::Result<Desktop> {
    let closed = format!("http://127.0.0.1:{}", nexus_tests::free_port()?);
    Ok(Desktop::new(
        Paths {
            settings_file: dir.join("config/desktop.json"),
            database: dir.join("nexus.db"),
            default_workflows: dir.join("workflows"),
            ollama_url: Some(ollama.map_or(closed, str::to_string)),
            embedded_model: nexus_tests::model_path()?,
        },
        secrets,
    ))
}

/// Starts a run of `request`, collecting its events.
async fn start(app: &Desktop, request: RunRequest) -> nexus_app::Result<(String, CollectingSink)> {
    let sink = CollectingSink::default();
    let run_id = app.start_run(request, Arc::new(sink.clone())).await?;
    Ok((run_id, sink))
}

/// A plain run of `text`.
fn text(text: &str) -> RunRequest {
    RunRequest {
        text: text.to_string(),
        ..RunRequest::default()
    }
}

/// Waits for the run's `run_finished` event and returns its status.
async fn finished(sink: &CollectingSink, run_id: &str) -> anyhow::Result<RunStatus> {
    for _ in 0..1200 {
        let status = sink.events().iter().find_map(|e| match e {
            Event::RunFinished {
                run_id: id, status, ..
            } if id == run_id => Some(*status),
            _ => None,
        });
        if let Some(s) = status {
            return Ok(s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("run {run_id} did not finish in 120 s")
}

const TWO_STEPS: &str = "id: greet\ninputs:\n  name: {type: string, default: Ada}\nsteps:\n  - id: hello\n    kind: template\n    template: \"Hello {{ inputs.name }}\"\n  - id: answer\n    kind: llm\n    needs: [hello]\n    model: embedded\n    prompt: \"Say one word after: {{ steps.hello.output }}\"\n    max_tokens: 8\n";

#[tokio::test]
async fn the_workflows_folder_is_listed_saved_to_and_remembered() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), None)?;
    // A missing folder is created with the example workflows in it.
    let names = app.list_workflows()?;
    assert!(
        names.contains(&"feature-spec.yaml".to_string()),
        "{names:?}"
    );
    // Saving writes exactly the text given; reading it back gives the same bytes.
    let text = "# my notes\nid: mine\nsteps:\n  - id: a\n    kind: template\n    template: hi\n";
    app.write_workflow("mine.yaml", text)?;
    assert_eq!(app.read_workflow("mine.yaml")?, text);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("workflows/mine.yaml"))?,
        text
    );
    assert!(app.list_workflows()?.contains(&"mine.yaml".to_string()));
    // Paths outside the folder are refused with the reason.
    for bad in ["../escape.yaml", "/etc/passwd.yaml", "notes.txt", ""] {
        match app.write_workflow(bad, "x") {
            Err(Error::BadPath { path, reason }) => {
                assert_eq!(path, bad);
                assert!(!reason.is_empty());
            }
            other => bail!("{bad}: expected BadPath, got {other:?}"),
        }
    }
    assert!(!dir.path().join("escape.yaml").exists());
    // Another folder is remembered by the next app start.
    let other = dir.path().join("elsewhere");
    std::fs::create_dir(&other)?;
    let other = other.canonicalize()?;
    app.set_workflows_folder(&other)?;
    std::fs::write(other.join("x.yaml"), "id: x\n")?;
    let again = desktop(dir.path(), None)?;
    assert_eq!(
        again.settings().workflows_folder,
        other.display().to_string()
    );
    assert_eq!(again.list_workflows()?, vec!["x.yaml".to_string()]);
    Ok(())
}

#[tokio::test]
async fn validation_names_the_place() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), None)?;
    assert!(app.validate(TWO_STEPS, Some("greet.yaml")).is_empty());
    let broken = TWO_STEPS.replace("needs: [hello]", "needs: [helo]");
    let diags = app.validate(&broken, Some("greet.yaml"));
    // The unknown step (with a suggestion), and the template reading a step it does not need.
    assert_eq!(diags.len(), 2, "{diags:?}");
    assert_eq!(diags[0].step.as_deref(), Some("answer"));
    assert_eq!(diags[0].field.as_deref(), Some("needs[0]"));
    assert!(diags[0].span.is_some_and(|s| s.line == 10), "{diags:?}");
    assert!(
        diags[0].message.contains("did you mean `hello`"),
        "{diags:?}"
    );
    // A run of a broken workflow is refused with the same diagnostics.
    let err = start(&app, text(&broken)).await;
    assert!(
        matches!(err, Err(Error::InvalidWorkflow { ref diagnostics }) if diagnostics.len() == 2),
        "{err:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_run_on_the_embedded_model_streams_events_and_is_stored() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), None)?;
    let (run_id, sink) = start(
        &app,
        RunRequest {
            file: Some("greet.yaml".into()),
            inputs: BTreeMap::from([("name".to_string(), "Grace".to_string())]),
            ..text(TWO_STEPS)
        },
    )
    .await?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    let events = sink.events();
    assert!(
        matches!(events.first(), Some(Event::RunStarted { .. })),
        "{events:?}"
    );
    assert!(matches!(events.last(), Some(Event::RunFinished { .. })));
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::Token { step_id, .. } if step_id == "answer")),
        "tokens of the llm step stream"
    );
    // The history shows it, with what the run panel needs per step.
    let runs = app.list_runs(10).await?;
    assert_eq!(
        runs.first().map(|r| r.run_id.as_str()),
        Some(run_id.as_str())
    );
    let stored = app.get_run(&run_id[..12]).await?;
    assert_eq!(stored.status, "succeeded");
    let hello = stored
        .steps
        .iter()
        .find(|s| s.step_id == "hello")
        .context("hello")?;
    assert_eq!(hello.output.as_deref(), Some("Hello Grace"));
    let answer = stored
        .steps
        .iter()
        .find(|s| s.step_id == "answer")
        .context("answer")?;
    assert!(
        answer
            .input
            .as_deref()
            .unwrap_or("")
            .contains("Hello Grace")
    );
    assert!(
        answer
            .model
            .as_deref()
            .unwrap_or("")
            .starts_with("embedded:")
    );
    assert!(answer.model_reason.is_some());
    assert!(answer.usage.is_some_and(|u| u.completion_tokens > 0));
    assert_eq!(answer.attempts.len(), 1);
    assert!(
        stored.workflow.is_some(),
        "the workflow as run is kept to show it on the canvas"
    );

    // "Run from this step" reuses `hello` and runs only `answer` again.
    let (again, sink2) = start(
        &app,
        RunRequest {
            from: Some("answer".into()),
            reuse: Some(run_id.clone()),
            fresh: true,
            ..text(TWO_STEPS)
        },
    )
    .await?;
    assert_eq!(finished(&sink2, &again).await?, RunStatus::Succeeded);
    let started: Vec<String> = sink2
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step_id, .. } => Some(step_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(started, vec!["answer".to_string()]);
    Ok(())
}

#[tokio::test]
async fn runs_are_cancelled_and_questions_answered_from_the_panel() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), None)?;
    let approve = "id: approve\nsteps:\n  - id: draft\n    kind: template\n    template: v1.2.0\n  - id: ship\n    kind: approval\n    needs: [draft]\n    prompt: \"Release {{ steps.draft.output }}?\"\n    approval: {default: reject, timeout: 10m}\n  - id: done\n    kind: template\n    needs: [ship]\n    template: shipped\n";
    let (run_id, sink) = start(&app, text(approve)).await?;
    // The question shows up, the answer lets the run go on.
    let mut asked = false;
    for _ in 0..200 {
        if let Some(q) = app.pending_questions().first() {
            assert_eq!(q.run_id, run_id);
            assert!(q.request.question().contains("Release v1.2.0?"));
            asked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(asked, "the approval step asks");
    assert!(matches!(
        app.answer(&run_id, "nope", HumanDecision::Approve),
        Err(Error::NotActive { .. })
    ));
    app.answer(&run_id, "ship", HumanDecision::Approve)?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    assert!(app.pending_questions().is_empty());

    // Cancel while the approval waits: the run ends cancelled, `done` never runs.
    let (run_id, sink) = start(&app, text(approve)).await?;
    while app.pending_questions().is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.cancel_run(&run_id)?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Cancelled);
    let stored = app.get_run(&run_id).await?;
    assert!(
        stored
            .steps
            .iter()
            .all(|s| s.step_id != "done" || s.status != nexus_engine::StepStatus::Succeeded)
    );
    assert!(
        matches!(app.cancel_run(&run_id), Err(Error::NotActive { .. })),
        "a finished run is not active"
    );
    Ok(())
}

#[tokio::test]
async fn the_models_view_pulls_from_ollama_and_keeps_keys_in_the_secret_store() -> anyhow::Result<()>
{
    let dir = tempfile::tempdir()?;
    // Ollama not running: the view says so and still lists the embedded model.
    let app = desktop(dir.path(), None)?;
    let view = app.models().await?;
    let ollama = view
        .providers
        .iter()
        .find(|p| p.id == "ollama")
        .context("ollama")?;
    assert!(!ollama.reachable);
    assert!(ollama.error.is_some());
    assert!(view.embedded_present);
    assert!(
        view.order
            .iter()
            .any(|m| m.reference.starts_with("embedded:"))
    );
    match app.pull_model("llama3.1", |_| {}).await {
        Err(Error::Provider { class, .. }) => assert_eq!(class, "unavailable"),
        other => bail!("pull without a daemon: {other:?}"),
    }

    // The Ollama-protocol server: installed models with sizes and context, a pull with
    // progress, an unknown name refused.
    let server = nexus_tests::OllamaServer::start(&["llama3.1:8b"])?;
    let app = desktop(dir.path(), Some(&server.url))?;
    let view = app.models().await?;
    let ollama = view
        .providers
        .iter()
        .find(|p| p.id == "ollama")
        .context("ollama")?;
    assert!(ollama.reachable, "{:?}", ollama.error);
    let model = ollama
        .models
        .iter()
        .find(|m| m.name == "llama3.1:8b")
        .context("model listed")?;
    assert!(model.size_bytes.is_some_and(|s| s > 0));
    assert!(model.context_length.is_some());
    let lines = std::sync::Mutex::new(Vec::<PullProgress>::new());
    app.pull_model("llama3.1:8b", |p| {
        lines.lock().map(|mut l| l.push(p)).unwrap_or(())
    })
    .await?;
    let lines = lines.into_inner().unwrap_or_default();
    assert_eq!(
        lines.first().map(|l| l.status.as_str()),
        Some("pulling manifest")
    );
    assert_eq!(lines.last().map(|l| l.status.as_str()), Some("success"));
    let done: Vec<f64> = lines.iter().filter_map(|l| l.completed_bytes).collect();
    assert!(
        done.len() >= 2 && done.windows(2).all(|w| w[0] <= w[1]),
        "{done:?}"
    );
    // Summed over the model's layers (the daemon counts each from 0): past the GGUF's
    // own size at the end, all four layers seen.
    let model_bytes = std::fs::metadata(nexus_tests::model_path()?)?.len() as f64;
    assert!(done.last().is_some_and(|&d| d > model_bytes), "{done:?}");
    assert_eq!(lines.iter().map(|l| l.layers).max(), Some(4));
    // The daemon's "pull model manifest: file does not exist" (an NDJSON error line after
    // the 200) is a missing model, not a transient failure.
    let unknown = app.pull_model("no-such-model", |_| {}).await;
    assert!(
        matches!(&unknown, Err(Error::Provider { class, message })
            if class == "model_not_found" && message.contains("file does not exist")),
        "{unknown:?}"
    );

    // Keys: stored, shown as present (never returned), removed; unknown providers refused.
    assert!(!view.keys.iter().any(|k| k.in_keychain));
    app.set_api_key("openai", "sk-test-123").await?;
    let view = app.models().await?;
    assert!(
        view.keys
            .iter()
            .any(|k| k.provider == "openai" && k.in_keychain)
    );
    assert!(
        !serde_json::to_string(&view)?.contains("sk-test-123"),
        "the key never leaves the store"
    );
    assert!(
        view.providers.iter().any(|p| p.id == "openai"),
        "a stored key configures the provider"
    );
    app.delete_api_key("openai").await?;
    assert!(!app.models().await?.keys.iter().any(|k| k.in_keychain));
    assert!(matches!(
        app.set_api_key("acme", "k").await,
        Err(Error::NotActive { .. })
    ));
    Ok(())
}

/// A keychain that cannot be reached (no Secret Service on the session bus).
struct NoKeychain;

impl nexus_app::keys::SecretStore for NoKeychain {
    fn get(&self, _: &str) -> nexus_app::Result<Option<String>> {
        Err(Error::Keychain {
            message: "Platform secure storage failure: no Secret Service".into(),
        })
    }
    fn set(&self, p: &str, _: &str) -> nexus_app::Result<()> {
        self.get(p).map(|_| ())
    }
    fn delete(&self, p: &str) -> nexus_app::Result<()> {
        self.get(p).map(|_| ())
    }
}

#[tokio::test]
async fn runs_go_on_when_the_keychain_cannot_be_read() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop_with(dir.path(), None, Arc::new(NoKeychain))?;
    let (run_id, sink) = start(&app, text(TWO_STEPS)).await?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    let view = app.models().await?;
    let openai = view
        .keys
        .iter()
        .find(|k| k.provider == "openai")
        .context("openai")?;
    assert!(!openai.in_keychain);
    assert!(
        openai
            .keychain_error
            .as_deref()
            .is_some_and(|e| e.contains("Secret Service"))
    );
    assert!(matches!(
        app.set_api_key("openai", "k").await,
        Err(Error::Keychain { .. })
    ));
    Ok(())
}

/// An OpenAI-compatible `GET /v1/models` that wants `Authorization: Bearer <key>` and
/// answers anything else with 401 and OpenAI's error body (`invalid_api_key`).
async fn keyed_models_server(key: &'static str) -> anyhow::Result<String> {
    use axum::http::{HeaderMap, StatusCode, header};
    let models = move |headers: HeaderMap| async move {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if auth == Some(&format!("Bearer {key}")) {
            let list = serde_json::json!({"object": "list", "data": [{"id": "keyed-model", "object": "model", "created": 0, "owned_by": "test"}]});
            (StatusCode::OK, axum::Json(list))
        } else {
            let error = serde_json::json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}});
            (StatusCode::UNAUTHORIZED, axum::Json(error))
        }
    };
    let app = axum::Router::new().route("/v1/models", axum::routing::get(models));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(format!("http://127.0.0.1:{port}/v1"))
}

#[tokio::test]
async fn a_keychain_key_is_used_with_a_base_url_from_the_environment() -> anyhow::Result<()> {
    let base = keyed_models_server("sk-keychain-1").await?;
    // SAFETY: nextest runs each test in its own process, and this test's runtime is
    // single-threaded, so nothing reads the environment concurrently.
    unsafe {
        std::env::set_var("NEXUS_OPENAI_BASE_URL", &base);
        std::env::remove_var("NEXUS_OPENAI_API_KEY");
        std::env::remove_var("OPENAI_API_KEY");
    }
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), None)?;
    // No key anywhere: the provider is configured by the base URL and refused.
    let openai = |view: &nexus_app::desktop::ModelsView| {
        view.providers
            .iter()
            .find(|p| p.id == "openai")
            .cloned()
            .context("openai listed")
    };
    let view = app.models().await?;
    assert!(!openai(&view)?.reachable, "no key: 401");
    // The key saved in the keychain goes with the environment's base URL.
    app.set_api_key("openai", "sk-keychain-1").await?;
    let view = app.models().await?;
    let provider = openai(&view)?;
    assert!(provider.reachable, "{:?}", provider.error);
    assert!(provider.models.iter().any(|m| m.name == "keyed-model"));
    Ok(())
}

/// Waits until the panel shows a question of `run_id`.
async fn asked(app: &Desktop, run_id: &str) -> anyhow::Result<()> {
    for _ in 0..1200 {
        if app.pending_questions().iter().any(|q| q.run_id == run_id) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("run {run_id} never asked")
}

#[tokio::test]
async fn a_question_leaves_the_panel_when_its_approval_times_out_or_its_run_is_cancelled()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), None)?;
    let approval = |timeout: &str| {
        format!(
            "id: approve\nsteps:\n  - id: ship\n    kind: approval\n    prompt: Ship it?\n    approval: {{default: approve, timeout: {timeout}}}\n  - id: done\n    kind: template\n    needs: [ship]\n    template: shipped\n"
        )
    };
    // Nobody answers: the default decision is taken and the question is gone.
    let (run_id, sink) = start(&app, text(&approval("1s"))).await?;
    asked(&app, &run_id).await?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    assert!(
        app.pending_questions().is_empty(),
        "{:?}",
        app.pending_questions()
    );
    assert!(matches!(
        app.answer(&run_id, "ship", HumanDecision::Reject),
        Err(Error::NotActive { .. })
    ));
    // The run is cancelled while the question waits: the question is gone too.
    let (run_id, sink) = start(&app, text(&approval("10m"))).await?;
    asked(&app, &run_id).await?;
    app.cancel_run(&run_id)?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Cancelled);
    assert!(
        app.pending_questions().is_empty(),
        "{:?}",
        app.pending_questions()
    );
    Ok(())
}

/// A workflow that shows its `file` input.
const SHOW_FILE: &str = "id: show\ninputs:\n  doc: {type: file}\nsteps:\n  - id: show\n    kind: template\n    template: \"{{ inputs.doc }}\"\n";

/// `doc=<value>` for [`SHOW_FILE`].
fn show(value: &str) -> RunRequest {
    RunRequest {
        inputs: BTreeMap::from([("doc".to_string(), value.to_string())]),
        ..text(SHOW_FILE)
    }
}

#[tokio::test]
async fn file_access_stays_inside_the_workflows_folder() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), None)?;
    app.list_workflows()?;
    let folder = dir.path().join("workflows");
    let outside = dir.path().join("secret.txt");
    std::fs::write(&outside, "the secret")?;
    std::fs::write(folder.join("notes.txt"), "my notes")?;
    std::os::unix::fs::symlink(&outside, folder.join("link.txt"))?;
    std::os::unix::fs::symlink(dir.path(), folder.join("up"))?;
    std::fs::write(dir.path().join("outside.yaml"), "id: outside\n")?;

    // A file of the folder is read, relative to it.
    let (run_id, sink) = start(&app, show("notes.txt")).await?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    let stored = app.get_run(&run_id).await?;
    assert_eq!(stored.steps[0].output.as_deref(), Some("my notes"));

    // Outside the folder: by absolute path, by `..`, through a link; the run is refused
    // before it starts and the secret appears nowhere.
    let escapes = [
        outside.display().to_string(),
        "../secret.txt".to_string(),
        "link.txt".to_string(),
        "up/secret.txt".to_string(),
    ];
    for value in &escapes {
        match start(&app, show(value)).await {
            Err(Error::InvalidInputs { diagnostics }) => {
                assert!(
                    diagnostics[0]
                        .message
                        .contains("outside the workflows folder"),
                    "{value}: {diagnostics:?}"
                );
                assert!(!format!("{diagnostics:?}").contains("the secret"));
            }
            other => bail!("{value}: expected InvalidInputs, got {other:?}"),
        }
    }
    // Workflow files through a link out of the folder are refused too.
    for name in ["up/outside.yaml", "up/new.yaml"] {
        assert!(
            matches!(app.read_workflow(name), Err(Error::BadPath { .. })),
            "{name}"
        );
        assert!(
            matches!(
                app.write_workflow(name, "id: x\n"),
                Err(Error::BadPath { .. })
            ),
            "{name}"
        );
    }
    assert!(!dir.path().join("new.yaml").exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("outside.yaml"))?,
        "id: outside\n"
    );

    // A sub-workflow (or failure handler) is read only from inside the folder: by `..`
    // and through a link it is refused at validation, and the run does not start.
    std::fs::write(
        folder.join("child.yaml"),
        "id: child\nsteps:\n  - {id: c, kind: template, template: hi}\n",
    )?;
    let calling = |target: &str| {
        format!("id: main\nsteps:\n  - {{id: sub, kind: workflow, workflow: \"{target}\"}}\n")
    };
    assert!(
        app.validate(&calling("child.yaml"), Some("main.yaml"))
            .is_empty()
    );
    let handler = "id: main\non_failure: {workflow: ../outside.yaml}\nsteps:\n  - {id: c, kind: template, template: hi}\n";
    for text in [
        calling("../outside.yaml"),
        calling("up/outside.yaml"),
        handler.to_string(),
    ] {
        let diagnostics = app.validate(&text, Some("main.yaml"));
        assert!(
            diagnostics
                .iter()
                .any(|d| d.message.contains("is outside the workflows folder")),
            "{text}: {diagnostics:?}"
        );
    }

    // A file the user chose in the dialog is allowed (by the path the grant returns).
    let granted = app.grant_file(&outside)?;
    let (run_id, sink) = start(&app, show(&granted)).await?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    let stored = app.get_run(&run_id).await?;
    assert_eq!(stored.steps[0].output.as_deref(), Some("the secret"));
    assert!(matches!(
        app.grant_file(&dir.path().join("missing.txt")),
        Err(Error::BadPath { .. })
    ));

    // The workflows folder: an existing folder, given absolutely.
    for bad in [
        dir.path().join("no-such-folder"),
        outside.clone(),
        "relative/folder".into(),
    ] {
        assert!(
            matches!(app.set_workflows_folder(&bad), Err(Error::BadPath { .. })),
            "{bad:?}"
        );
    }
    assert!(!dir.path().join("no-such-folder").exists());
    Ok(())
}

#[tokio::test]
async fn file_inputs_resolve_against_the_workflow_folder_and_templates_bring_their_data()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), None)?;
    // The process runs elsewhere than the workflows folder (nextest: the crate's folder).
    assert!(!Path::new("data/market-notes.txt").exists());
    // A folder of the user's, without the data file: using the template writes it.
    let mine = dir.path().join("mine");
    std::fs::create_dir(&mine)?;
    app.set_workflows_folder(&mine.canonicalize()?)?;
    let report = app.use_template("document-report.yaml")?;
    assert!(mine.join("data/market-notes.txt").is_file());
    app.write_workflow("document-report.yaml", &report)?;
    // The default `data/market-notes.txt` is read from the workflow's folder; the
    // first step's prompt shows the document. `until` keeps the run to one model call.
    let (run_id, sink) = start(
        &app,
        RunRequest {
            file: Some("document-report.yaml".into()),
            until: Some("key_points".into()),
            ..text(&report)
        },
    )
    .await?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    let stored = app.get_run(&run_id).await?;
    let notes = std::fs::read_to_string(mine.join("data/market-notes.txt"))?;
    let first_line = notes.lines().next().context("notes")?;
    let key_points = stored
        .steps
        .iter()
        .find(|s| s.step_id == "key_points")
        .context("key_points")?;
    assert!(
        key_points
            .input
            .as_deref()
            .is_some_and(|i| i.contains(first_line)),
        "{:?}",
        key_points.input
    );
    // A value typed in the run dialog is relative to the workflow's folder too.
    std::fs::create_dir(mine.join("sub"))?;
    std::fs::write(mine.join("sub/a.txt"), "in sub")?;
    let (run_id, sink) = start(&app, show("sub/a.txt")).await?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    assert_eq!(
        app.get_run(&run_id).await?.steps[0].output.as_deref(),
        Some("in sub")
    );
    // A fresh default folder gets the templates with their data.
    let fresh = desktop(&dir.path().join("fresh"), None)?;
    fresh.list_workflows()?;
    assert!(
        dir.path()
            .join("fresh/workflows/data/market-notes.txt")
            .is_file()
    );
    Ok(())
}

/// A human who never answers (the run waits until it is dropped).
struct Silent;

#[async_trait::async_trait]
impl nexus_engine::human::HumanHandler for Silent {
    async fn decide(
        &self,
        _: &nexus_engine::human::HumanRequest,
    ) -> Option<nexus_engine::human::HumanDecision> {
        futures::future::pending().await
    }
}

#[tokio::test]
async fn an_interrupted_run_is_resumed_from_the_desktop_with_the_clis_code() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let approve = "id: approve\nsteps:\n  - id: draft\n    kind: template\n    template: v1.2.0\n  - id: ship\n    kind: approval\n    needs: [draft]\n    prompt: \"Release {{ steps.draft.output }}?\"\n    approval: {default: reject, timeout: 10m}\n  - id: done\n    kind: template\n    needs: [ship]\n    template: \"shipped {{ steps.draft.output }}\"\n";
    // A process runs it through the shared code and dies while the approval waits: the
    // task is dropped, nothing more is written (no finish, no heartbeat).
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
        nexus_engine::load_str(approve, Some("approve.yaml"))
            .map_err(|d| anyhow::anyhow!("{d:?}"))?,
    );
    let run_id = uuid::Uuid::now_v7().to_string();
    let options = nexus_engine::RunOptions {
        run_id: Some(run_id.clone()),
        human: Some(Arc::new(Silent)),
        ..Default::default()
    };
    let task = {
        let (engine, store) = (Arc::clone(&engine), Arc::clone(&store));
        tokio::spawn(async move {
            nexus_app::runs::execute(&engine, &store, plan, Default::default(), options).await
        })
    };
    let mut waiting = false;
    for _ in 0..600 {
        if let Ok(run) = store.get_run(&run_id).await
            && run.status == "waiting_for_human"
        {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(waiting, "the run reached its approval");
    task.abort();
    let _ = task.await;

    // The desktop continues it: `draft` is kept, the approval asks in the panel.
    let app = desktop(dir.path(), None)?;
    let sink = CollectingSink::default();
    let resumed = app
        .resume_run(&run_id[..13], Arc::new(sink.clone()))
        .await?;
    assert_eq!(resumed, run_id);
    asked(&app, &run_id).await?;
    app.answer(&run_id, "ship", HumanDecision::Approve)?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    let started: Vec<String> = sink
        .events()
        .iter()
        .filter_map(|e| match e {
            Event::StepStarted { step_id, .. } => Some(step_id.clone()),
            _ => None,
        })
        .collect();
    assert!(!started.contains(&"draft".to_string()), "{started:?}");
    let stored = app.get_run(&run_id).await?;
    assert_eq!(stored.status, "succeeded");
    let done = stored
        .steps
        .iter()
        .find(|s| s.step_id == "done")
        .context("done")?;
    assert_eq!(done.output.as_deref(), Some("shipped v1.2.0"));
    // A finished run is not resumed again.
    assert!(matches!(
        app.resume_run(&run_id, Arc::new(CollectingSink::default()))
            .await,
        Err(Error::NotActive { .. })
    ));
    Ok(())
}

/// `notifications: [{desktop: true}]` reaches the handler the desktop shell sets: once
/// per event it is sent on (however many entries ask), with the question (cut to
/// `NOTICE_MAX_CHARS`) or the run's outcome, and not for events it is not sent on.
#[tokio::test]
async fn desktop_notifications_reach_the_shells_handler() -> anyhow::Result<()> {
    use nexus_app::notify::{DesktopNotice, NOTICE_MAX_CHARS};
    let dir = tempfile::tempdir()?;
    let app = desktop(dir.path(), None)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DesktopNotice>();
    app.set_desktop_notifications(Arc::new(move |n: &DesktopNotice| {
        let _ = tx.send(n.clone());
    }));
    let question = format!("Ship {}?", "v".repeat(300));
    let workflow = format!(
        "id: release\nnotifications:\n  - on: [waiting_for_human, succeeded]\n    desktop: true\n  - on: [succeeded]\n    desktop: true\n  - on: [failed, cancelled]\n    desktop: true\nsteps:\n  - id: ship\n    kind: approval\n    prompt: \"{question}\"\n    approval: {{default: reject, timeout: 10m}}\n"
    );
    let (run_id, sink) = start(&app, text(&workflow)).await?;
    let next = async |rx: &mut tokio::sync::mpsc::UnboundedReceiver<DesktopNotice>| {
        tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .context("no desktop notification")?
            .context("the handler was dropped")
    };
    let asked = next(&mut rx).await?;
    assert_eq!(asked.event, "waiting_for_human");
    assert_eq!(asked.run_id, run_id);
    assert_eq!(asked.title, "release: waiting for you");
    assert!(
        asked.body.starts_with("step `ship` asks: Ship vvv"),
        "{}",
        asked.body
    );
    assert_eq!(asked.body.chars().count(), NOTICE_MAX_CHARS);
    assert!(asked.body.ends_with('…'));

    app.answer(&run_id, "ship", HumanDecision::Approve)?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    let done = next(&mut rx).await?;
    assert_eq!(done.event, "run_succeeded");
    assert_eq!(done.title, "release: run succeeded");
    assert!(
        done.body.starts_with("the run succeeded after "),
        "{}",
        done.body
    );
    assert!(rx.try_recv().is_err(), "one notification per event");

    // A notification with neither a webhook nor `desktop: true` does not validate.
    let nowhere = "id: x\nnotifications:\n  - on: [failed]\nsteps:\n  - id: a\n    kind: template\n    template: a\n";
    let diags = app.validate(nowhere, None);
    assert!(
        diags.iter().any(|d| d.message.contains("goes nowhere")),
        "{diags:?}"
    );
    Ok(())
}

/// A sub-workflow's run is a run of its own file: its `notifications:` are sent for it
/// (the parent declares none here), naming the child's workflow and run.
#[tokio::test]
async fn a_child_run_sends_its_own_workflows_notifications() -> anyhow::Result<()> {
    use nexus_app::notify::DesktopNotice;
    let dir = tempfile::tempdir()?;
    let folder = dir.path().join("workflows");
    std::fs::create_dir_all(&folder)?;
    let parent = "id: parent\nsteps:\n  - id: call\n    kind: workflow\n    workflow: child.yaml\n";
    std::fs::write(folder.join("parent.yaml"), parent)?;
    std::fs::write(
        folder.join("child.yaml"),
        "id: child\nnotifications:\n  - on: [succeeded]\n    desktop: true\nsteps:\n  - id: a\n    kind: template\n    template: done\n",
    )?;
    let app = desktop(dir.path(), None)?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<DesktopNotice>();
    app.set_desktop_notifications(Arc::new(move |n: &DesktopNotice| {
        let _ = tx.send(n.clone());
    }));
    let request = RunRequest {
        text: parent.to_string(),
        file: Some("parent.yaml".into()),
        ..RunRequest::default()
    };
    let (run_id, sink) = start(&app, request).await?;
    assert_eq!(finished(&sink, &run_id).await?, RunStatus::Succeeded);
    let notice = tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .context("no notification for the child run")?
        .context("the handler was dropped")?;
    assert_eq!(notice.workflow_id, "child");
    assert_eq!(notice.title, "child: run succeeded");
    assert_eq!(notice.run_id, format!("{run_id}.call"));
    assert!(
        rx.try_recv().is_err(),
        "the parent declares no notification"
    );
    Ok(())
}
