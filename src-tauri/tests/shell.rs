//! The shell's commands through Tauri's IPC with the mock runtime (`tauri::test`): the
//! app's real context (capabilities included), real files, a real SQLite file and the
//! embedded model; plus the check that `ui/src/bindings.ts` is current.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nexus_app::keys::ProcessSecrets;
use nexus_app::{Desktop, Paths};
use serde_json::{Value, json};
use tauri::test::{INVOKE_KEY, MockRuntime, get_ipc_response, mock_builder};
use tauri::webview::InvokeRequest;
use tauri::{App, WebviewWindow, WebviewWindowBuilder};

fn app(dir: &Path) -> anyhow::Result<App<MockRuntime>> {
    let desktop = Desktop::new(
        Paths {
            settings_file: dir.join("desktop.json"),
            database: dir.join("nexus.db"),
            default_workflows: dir.join("workflows"),
            ollama_url: Some(format!("http://127.0.0.1:{}", nexus_tests::free_port()?)),
            embedded_model: nexus_tests::model_path()?,
        },
        Arc::new(ProcessSecrets::default()),
    );
    Ok(nexus_desktop::app(mock_builder(), desktop).build(tauri::generate_context!())?)
}

fn window(app: &App<MockRuntime>, label: &str) -> anyhow::Result<WebviewWindow<MockRuntime>> {
    Ok(WebviewWindowBuilder::new(app, label, Default::default()).build()?)
}

/// Invokes `cmd` with `args` as the web view would; `Err` carries the command's error
/// JSON (or the IPC layer's refusal).
fn invoke(w: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
    let url = if cfg!(windows) {
        "http://tauri.localhost"
    } else {
        "tauri://localhost"
    };
    get_ipc_response(
        w,
        InvokeRequest {
            cmd: cmd.into(),
            callback: tauri::ipc::CallbackFn(0),
            error: tauri::ipc::CallbackFn(1),
            url: url.parse().map_err(|e| json!(format!("{e}")))?,
            body: tauri::ipc::InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.to_string(),
        },
    )
    .map(|b| b.deserialize::<Value>().unwrap_or(Value::Null))
}

fn ok(w: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> anyhow::Result<Value> {
    invoke(w, cmd, args).map_err(|e| anyhow::anyhow!("{cmd}: {e}"))
}

#[test]
fn files_validation_and_errors_cross_ipc() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = app(dir.path())?;
    let w = window(&app, "main")?;
    let names = ok(&w, "list_workflows", json!({}))?;
    assert!(
        names
            .as_array()
            .context("array")?
            .contains(&json!("feature-spec.yaml"))
    );
    let text = "id: t\nsteps:\n  - id: a\n    kind: template\n    template: hi\n";
    ok(
        &w,
        "write_workflow",
        json!({"name": "t.yaml", "text": text}),
    )?;
    assert_eq!(
        ok(&w, "read_workflow", json!({"name": "t.yaml"}))?,
        json!(text)
    );
    assert_eq!(
        ok(&w, "validate", json!({"text": text, "file": "t.yaml"}))?,
        json!([])
    );
    let diags = ok(
        &w,
        "validate",
        json!({"text": "id: t\nsteps:\n  - id: a\n    kind: llm\n", "file": null}),
    )?;
    assert_eq!(diags[0]["step"], json!("a"), "{diags}");
    assert!(diags[0]["span"]["line"].is_number(), "{diags}");
    // Errors are tagged by kind for the UI.
    let err = invoke(&w, "read_workflow", json!({"name": "../x.yaml"}))
        .err()
        .context("refused")?;
    assert_eq!(err["kind"], json!("bad_path"), "{err}");
    let err = invoke(&w, "cancel_run", json!({"runId": "nope"}))
        .err()
        .context("refused")?;
    assert_eq!(err["kind"], json!("not_active"), "{err}");
    let templates = ok(&w, "templates", json!({}))?;
    assert_eq!(templates.as_array().map(Vec::len), Some(3));
    // The web view cannot name a folder: the folder comes from the native dialog only.
    let folder = dir.path().join("mine");
    std::fs::create_dir(&folder)?;
    let before = ok(&w, "settings", json!({}))?;
    assert!(invoke(&w, "set_workflows_folder", json!({"folder": folder})).is_err());
    assert_eq!(ok(&w, "settings", json!({}))?, before);
    // A template brings its data file into the folder.
    let text = ok(&w, "use_template", json!({"name": "document-report.yaml"}))?;
    assert!(
        text.as_str()
            .is_some_and(|t| t.contains("data/market-notes.txt"))
    );
    assert!(dir.path().join("workflows/data/market-notes.txt").is_file());
    Ok(())
}

#[test]
fn capabilities_grant_the_commands_to_the_main_window_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = app(dir.path())?;
    let other = window(&app, "other")?;
    let refused = invoke(&other, "list_workflows", json!({}))
        .err()
        .context("refused")?;
    assert!(refused.to_string().contains("not allowed"), "{refused}");
    let main = window(&app, "main")?;
    ok(&main, "list_workflows", json!({}))?;
    // Core commands not granted by the capability file are refused too.
    let refused = invoke(&main, "plugin:window|close", json!({}))
        .err()
        .context("refused")?;
    assert!(refused.to_string().contains("not allowed"), "{refused}");
    Ok(())
}

#[test]
fn a_run_started_over_ipc_is_stored_and_listed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let app = app(dir.path())?;
    let w = window(&app, "main")?;
    let text = "id: greet\nsteps:\n  - id: hello\n    kind: template\n    template: Hello\n  - id: answer\n    kind: llm\n    needs: [hello]\n    model: embedded\n    prompt: \"Continue: {{ steps.hello.output }}\"\n    max_tokens: 6\n";
    let run_id = ok(
        &w,
        "start_run",
        json!({"request": {"text": text, "file": "greet.yaml", "inputs": {}, "from": null, "reuse": null, "until": null, "fresh": false}, "events": "__CHANNEL__:7"}),
    )?;
    let run_id = run_id.as_str().context("run id")?.to_string();
    let mut status = String::new();
    for _ in 0..600 {
        let run = ok(&w, "get_run", json!({"runId": run_id}))?;
        status = run["status"].as_str().unwrap_or_default().to_string();
        if status != "running" {
            let answer = run["steps"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["step_id"] == "answer"))
                .context("answer step")?;
            assert!(
                answer["model"]
                    .as_str()
                    .unwrap_or("")
                    .starts_with("embedded:")
            );
            assert!(answer["attempts"].as_array().is_some_and(|a| a.len() == 1));
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if status != "succeeded" {
        bail!("the run ended {status}");
    }
    let runs = ok(&w, "list_runs", json!({"limit": 5}))?;
    assert_eq!(runs[0]["run_id"], json!(run_id));
    let bad = invoke(&w, "start_run", json!({"request": {"text": "id: x\n", "file": null, "inputs": {}, "from": null, "reuse": null, "until": null, "fresh": false}, "events": "__CHANNEL__:8"}))
        .err()
        .context("refused")?;
    assert_eq!(bad["kind"], json!("invalid_workflow"), "{bad}");
    Ok(())
}

#[test]
fn the_committed_typescript_bindings_are_current() -> anyhow::Result<()> {
    let generated = nexus_desktop::bindings::<tauri::Wry>()
        .export_str(nexus_desktop::typescript())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(nexus_desktop::BINDINGS_PATH);
    if std::env::var_os("UPDATE_BINDINGS").is_some() {
        std::fs::write(&path, &generated)?;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "{} is out of date with the commands' Rust types: run `UPDATE_BINDINGS=1 cargo nextest run --workspace -E 'test(bindings)'` and commit the result",
        path.display()
    );
    Ok(())
}
