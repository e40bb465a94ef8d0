//! `tool` steps against real parts: an HTTP server on loopback (axum) for the `http`
//! tool, a real folder for the `file` tool.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use nexus_engine::events::{RunStatus, StepStatus};
use nexus_engine::{EngineConfig, RunOptions, RunReport};

use crate::engine;

/// A loopback service: `/listings?city=` answers JSON, `/echo` returns the posted JSON,
/// `/flaky` answers 503 (with Retry-After: 0) until its third call, `/missing` is 404.
async fn service() -> anyhow::Result<(String, Arc<AtomicUsize>)> {
    let flaky = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new()
        .route(
            "/api/listings",
            get(
                |Query(q): Query<std::collections::HashMap<String, String>>| async move {
                    let city = q.get("city").cloned().unwrap_or_default();
                    Json(serde_json::json!({"city": city, "listings": [{"id": 1}, {"id": 2}]}))
                },
            ),
        )
        .route(
            "/api/echo",
            post(|Json(v): Json<serde_json::Value>| async move { Json(v) }),
        )
        .route(
            "/api/flaky",
            get(|State(n): State<Arc<AtomicUsize>>| async move {
                if n.fetch_add(1, Ordering::SeqCst) < 2 {
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        [("retry-after", "0")],
                        "busy",
                    )
                        .into_response()
                } else {
                    (StatusCode::OK, [("retry-after", "0")], "fine").into_response()
                }
            }),
        )
        .with_state(Arc::clone(&flaky));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/api/"), flaky))
}

/// Writes `yaml` as `wf.yaml` in a new folder with a `ws` workspace, and runs it.
async fn run_in_folder(yaml: &str) -> anyhow::Result<(RunReport, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("ws"))?;
    let path = dir.path().join("wf.yaml");
    std::fs::write(&path, yaml)?;
    let plan = nexus_engine::load_file(&path)
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let inputs = nexus_engine::resolve_inputs(&plan, &Default::default())
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let engine = engine(vec![], None, EngineConfig::default());
    let report = engine
        .run(Arc::new(plan), inputs, RunOptions::default())
        .await?;
    Ok((report, dir))
}

fn rec<'a>(report: &'a RunReport, id: &str) -> &'a nexus_engine::store::StepRecord {
    report.steps.iter().find(|s| s.step_id == id).expect("step")
}

#[tokio::test]
async fn an_http_tool_calls_the_service_with_templated_arguments() -> anyhow::Result<()> {
    let (base, flaky) = service().await?;
    let yaml = format!(
        r#"
id: http
inputs:
  city: {{default: Lisbon}}
tools:
  market:
    http: {{url: "{base}", headers: {{accept: application/json}}}}
steps:
  - id: listings
    kind: tool
    tool: market
    args: {{path: listings, query: {{city: "{{{{ inputs.city }}}}"}}}}
  - id: echo
    kind: tool
    tool: market
    needs: [listings]
    args:
      path: echo
      method: POST
      body: {{count: "{{{{ steps.listings.json.listings | length }}}}", city: "{{{{ steps.listings.json.city }}}}"}}
  - id: flaky
    kind: tool
    tool: market
    retry: {{max_attempts: 3, initial_interval: 10ms}}
    args: {{path: flaky}}
  - id: missing
    kind: tool
    tool: market
    retry: {{max_attempts: 3, initial_interval: 10ms}}
    args: {{path: missing}}
  - id: elsewhere
    kind: tool
    tool: market
    args: {{path: "http://example.com/steal"}}
"#
    );
    let (report, _dir) = run_in_folder(&yaml).await?;
    let listings = rec(&report, "listings");
    assert_eq!(
        listings.status,
        StepStatus::Succeeded,
        "{:?}",
        listings.error
    );
    assert_eq!(listings.output_json.as_ref().unwrap()["city"], "Lisbon");
    let echo = rec(&report, "echo");
    assert_eq!(
        echo.output_json,
        Some(serde_json::json!({"count": "2", "city": "Lisbon"}))
    );
    // 503 twice, then 200: three attempts, the last one good.
    let f = rec(&report, "flaky");
    assert_eq!(f.status, StepStatus::Succeeded, "{:?}", f.error);
    assert_eq!(f.output.as_deref(), Some("fine"));
    assert_eq!(f.attempts.len(), 3);
    assert_eq!(flaky.load(Ordering::SeqCst), 3);
    // A 404 is not retried.
    let m = rec(&report, "missing");
    assert_eq!(m.status, StepStatus::Failed);
    assert_eq!(m.attempts.len(), 1);
    assert!(
        m.error.as_deref().unwrap().contains("HTTP 404"),
        "{:?}",
        m.error
    );
    // A path that points at another host is refused before anything is sent.
    let e = rec(&report, "elsewhere");
    assert_eq!(e.status, StepStatus::Failed);
    assert!(
        e.error
            .as_deref()
            .unwrap()
            .contains("host `example.com` is not among the tool's allowed hosts"),
        "{:?}",
        e.error
    );
    assert_eq!(report.status, RunStatus::Failed);
    Ok(())
}

#[tokio::test]
async fn a_local_only_workflow_cannot_declare_an_http_tool_that_leaves_the_machine()
-> anyhow::Result<()> {
    let yaml = "id: private\nlocal_only: true\ntools:\n  web:\n    http: {url: \"https://api.example.com/v1/\"}\nsteps:\n  - id: call\n    kind: tool\n    tool: web\n";
    let diags = nexus_engine::load_str(yaml, Some("private.yaml")).expect_err("refused");
    let text = nexus_engine::diagnostic::render_all(&diags);
    assert!(
        text.contains("tool `web` may reach `api.example.com`, but the workflow is `local_only`"),
        "{text}"
    );
    Ok(())
}

#[tokio::test]
async fn a_file_tool_reads_writes_and_lists_inside_its_workspace_only() -> anyhow::Result<()> {
    let yaml = r#"
id: files
tools:
  notes:
    file: {workspace: ws}
steps:
  - id: write
    kind: tool
    tool: notes
    args: {op: write, path: report.md, content: "hello {{ 1 + 1 }}"}
  - id: read
    kind: tool
    tool: notes
    needs: [write]
    args: {op: read, path: report.md}
  - id: list
    kind: tool
    tool: notes
    needs: [write]
    args: {op: list}
  - id: escape
    kind: tool
    tool: notes
    args: {op: read, path: ../wf.yaml}
  - id: through_link
    kind: tool
    tool: notes
    args: {op: read, path: outside/wf.yaml}
  - id: write_through_link
    kind: tool
    tool: notes
    args: {op: write, path: outside/new.txt, content: x}
"#;
    // `ws/outside` is a symbolic link to the folder above the workspace.
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("ws"))?;
    std::os::unix::fs::symlink(dir.path(), dir.path().join("ws/outside"))?;
    let path = dir.path().join("wf.yaml");
    std::fs::write(&path, yaml)?;
    let plan = nexus_engine::load_file(&path)
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let engine = engine(vec![], None, EngineConfig::default());
    let report = engine
        .run(Arc::new(plan), Default::default(), RunOptions::default())
        .await?;
    assert_eq!(rec(&report, "read").output.as_deref(), Some("hello 2"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("ws/report.md"))?,
        "hello 2"
    );
    assert_eq!(
        rec(&report, "list").output_json,
        Some(serde_json::json!(["outside", "report.md"]))
    );
    let escape = rec(&report, "escape").error.clone().unwrap_or_default();
    assert!(
        escape.contains("`../wf.yaml` leaves the workspace"),
        "{escape}"
    );
    for id in ["through_link", "write_through_link"] {
        let e = rec(&report, id).error.clone().unwrap_or_default();
        assert!(e.contains("leads outside the workspace"), "{id}: {e}");
    }
    assert!(
        !dir.path().join("new.txt").exists(),
        "nothing was written outside"
    );
    Ok(())
}
