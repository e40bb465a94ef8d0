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

/// The market and listings fixture of seeds/002's workflows: market data per location,
/// three listings, an owner per listing.
async fn real_estate_service() -> anyhow::Result<String> {
    use axum::extract::Path;
    let app = axum::Router::new()
        .route(
            "/market",
            get(|Query(q): Query<std::collections::HashMap<String, String>>| async move {
                Json(serde_json::json!({
                    "location": q.get("location").cloned().unwrap_or_default(),
                    "median_price": 412000, "inventory": 1840, "days_on_market": 37
                }))
            }),
        )
        .route(
            "/listings",
            get(|| async {
                Json(serde_json::json!({"listings": [
                    {"id": 11, "address": "Rua das Flores 5", "price": 390000},
                    {"id": 12, "address": "Avenida da Boavista 80", "price": 520000},
                    {"id": 13, "address": "Rua de Santa Catarina 210", "price": 305000}
                ]}))
            }),
        )
        .route(
            "/owners/{id}",
            get(|Path(id): Path<u32>| async move {
                Json(serde_json::json!({"owner": format!("Owner {id}"), "phone": format!("+351 900 000 {id:03}")}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}/"))
}

/// Approves every permission (the examples' filesystem MCP server is a stdio program).
struct Yes;

#[async_trait::async_trait]
impl nexus_engine::human::HumanHandler for Yes {
    async fn decide(
        &self,
        _request: &nexus_engine::human::HumanRequest,
    ) -> Option<nexus_engine::human::HumanDecision> {
        Some(nexus_engine::human::HumanDecision::Approve)
    }
}

/// Runs an example of `workflows/` from a copy in a new folder (so what it writes stays
/// there) on the embedded model, with `service` as its service input, storing the run in
/// SQLite; the run as stored and the folder. The example's `npx -y` server command is
/// replaced by the same server installed for the tests (`tests/servers/mcp/`), so the
/// test needs no network; the permission it asks for is given.
async fn run_example_copy(
    name: &str,
    service: &str,
) -> anyhow::Result<(RunReport, nexus_store::StoredRun, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("reports"))?;
    let text = std::fs::read_to_string(nexus_tests::repo_root().join("workflows").join(name))?;
    let npx = r#"npx, -y, "@modelcontextprotocol/server-filesystem@2026.8.31""#;
    anyhow::ensure!(
        text.contains(npx),
        "{name} starts the filesystem server with npx"
    );
    let bin = crate::mcp::server_bin("mcp-server-filesystem")?;
    let text = text.replace(npx, &format!("\"{bin}\""));
    let path = dir.path().join(name);
    std::fs::write(&path, text)?;
    let plan = nexus_engine::load_file(&path)
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let given = [("service".to_string(), service.to_string())]
        .into_iter()
        .collect();
    let inputs = nexus_engine::resolve_inputs(&plan, &given)
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let store = Arc::new(nexus_store::SqliteStore::open(&dir.path().join("runs.db")).await?);
    let engine = engine(
        vec![crate::embedded()?],
        Some(Arc::clone(&store)),
        EngineConfig::default(),
    );
    let options = RunOptions {
        human: Some(Arc::new(Yes)),
        ..RunOptions::default()
    };
    let report = engine.run(Arc::new(plan), inputs, options).await?;
    let stored = store.get_run(&report.run_id).await?;
    Ok((report, stored, dir))
}

/// The stored record of step `id`: its call (tool, server tool, arguments) as stored,
/// and its output, which is the filesystem server's answer.
fn stored_mcp_call<'a>(
    stored: &'a nexus_store::StoredRun,
    id: &str,
) -> anyhow::Result<(serde_json::Value, &'a str)> {
    let step = stored
        .steps
        .iter()
        .find(|s| s.step_id == id)
        .ok_or_else(|| anyhow::anyhow!("step {id} is stored"))?;
    let call: serde_json::Value = serde_json::from_str(step.input.as_deref().unwrap_or("{}"))?;
    Ok((call, step.output.as_deref().unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_market_analysis_calls_the_service_and_saves_the_report() -> anyhow::Result<()> {
    let service = real_estate_service().await?;
    let (report, stored, dir) = run_example_copy("market-analysis.yaml", &service).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    // The stored run shows each tool call: the HTTP request and the MCP server's write.
    let (fetch, _) = stored_mcp_call(&stored, "collect_market_data")?;
    assert_eq!(fetch["tool"], "market");
    let (save, answer) = stored_mcp_call(&stored, "save_report")?;
    assert_eq!(save["tool"], "reports");
    assert_eq!(save["args"]["call"], "write_file");
    assert_eq!(save["args"]["arguments"]["path"], "market-lisbon.md");
    assert!(
        answer.contains("Successfully wrote to"),
        "the server wrote it: {answer}"
    );
    assert_eq!(report.outputs["report_file"], "reports/market-lisbon.md");
    let collect = rec(&report, "collect_market_data");
    let call: serde_json::Value = serde_json::from_str(collect.input.as_deref().unwrap_or("{}"))?;
    assert_eq!(call["tool"], "market");
    assert_eq!(call["args"]["query"]["location"], "Lisbon");
    assert_eq!(
        collect.output_json.as_ref().unwrap()["median_price"],
        412000
    );
    let saved = std::fs::read_to_string(dir.path().join("reports/market-lisbon.md"))?;
    assert!(
        saved.starts_with("# Market report: Lisbon\n\nMedian price: 412000"),
        "{saved}"
    );
    let generated = rec(&report, "generate_report")
        .output
        .clone()
        .unwrap_or_default();
    assert!(
        saved.contains(generated.trim()),
        "the model's report is in the file"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_lead_generation_maps_over_listings_and_updates_the_crm() -> anyhow::Result<()> {
    let service = real_estate_service().await?;
    let (report, stored, dir) = run_example_copy("lead-generation.yaml", &service).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    // The stored run shows each tool call: the search, each owner lookup, the CRM write
    // by the MCP server.
    let (search, _) = stored_mcp_call(&stored, "search_properties")?;
    assert_eq!(search["args"]["query"]["location"], "Porto");
    for k in 0..3 {
        let (owner, _) = stored_mcp_call(&stored, &format!("properties[{k}].extract_owner_info"))?;
        assert_eq!(owner["tool"], "listings");
    }
    let (crm_call, answer) = stored_mcp_call(&stored, "update_crm")?;
    assert_eq!(crm_call["tool"], "crm");
    assert_eq!(crm_call["args"]["call"], "write_file");
    assert_eq!(crm_call["args"]["arguments"]["path"], "crm-porto.json");
    assert!(
        answer.contains("Successfully wrote to"),
        "the server wrote it: {answer}"
    );
    assert_eq!(report.outputs["crm_file"], "reports/crm-porto.json");
    // One item per listing, each with its owner looked up over HTTP.
    for (k, id) in [11, 12, 13].iter().enumerate() {
        let owner = rec(&report, &format!("properties[{k}].extract_owner_info"));
        let call: serde_json::Value = serde_json::from_str(owner.input.as_deref().unwrap_or("{}"))?;
        assert!(
            call["args"]["path"]
                .as_str()
                .unwrap_or_default()
                .ends_with(&format!("owners/{id}"))
        );
        assert_eq!(
            owner.output_json.as_ref().unwrap()["owner"],
            format!("Owner {id}")
        );
    }
    let crm: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        dir.path().join("reports/crm-porto.json"),
    )?)?;
    assert_eq!(crm["leads"].as_array().map(Vec::len), Some(3));
    assert_eq!(crm["leads"][1]["owner"], "Owner 12");
    // The outreach drafted agrees with the qualification the model gave.
    let qualified: Vec<i64> = crm["qualified"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_i64())
        .collect();
    let outreach = crm["outreach"].as_str().unwrap_or_default();
    for (id, address) in [
        (11, "Rua das Flores 5"),
        (12, "Avenida da Boavista 80"),
        (13, "Rua de Santa Catarina 210"),
    ] {
        assert_eq!(
            outreach.contains(address),
            qualified.contains(&id),
            "lead {id}: {outreach}"
        );
    }
    Ok(())
}
