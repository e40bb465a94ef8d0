//! `mcp` tools against the official reference MCP servers from npm
//! (`@modelcontextprotocol/server-filesystem` and `server-everything`, pinned in
//! `tests/servers/mcp/`, installed by `scripts/setup-test-servers.sh`): over stdio and over
//! streamable HTTP; the server's processes end with the run, cancelled or not.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use nexus_engine::events::{Event, EventSink, RunStatus, StepStatus};
use nexus_engine::human::{HumanDecision, HumanHandler};
use nexus_engine::{EngineConfig, RunOptions, RunReport};

use crate::engine;

/// A reference server's program in `tests/servers/mcp/node_modules/.bin`.
pub(crate) fn server_bin(name: &str) -> anyhow::Result<String> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("servers/mcp/node_modules/.bin")
        .join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: run scripts/setup-test-servers.sh (it installs the reference MCP servers)",
        bin.display()
    );
    Ok(bin.display().to_string())
}

/// Approves every permission.
struct Yes;

#[async_trait::async_trait]
impl HumanHandler for Yes {
    async fn decide(&self, _request: &nexus_engine::human::HumanRequest) -> Option<HumanDecision> {
        Some(HumanDecision::Approve)
    }
}

async fn run_yaml(dir: &Path, yaml: &str, options: RunOptions) -> anyhow::Result<RunReport> {
    let path = dir.join("wf.yaml");
    std::fs::write(&path, yaml)?;
    let plan = nexus_engine::load_file(&path)
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let inputs = nexus_engine::resolve_inputs(&plan, &Default::default())
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let engine = engine(vec![], None, EngineConfig::default());
    Ok(engine.run(Arc::new(plan), inputs, options).await?)
}

fn rec<'a>(report: &'a RunReport, id: &str) -> &'a nexus_engine::store::StepRecord {
    report.steps.iter().find(|s| s.step_id == id).expect("step")
}

/// The live (not zombie) processes whose working folder is `dir`.
pub(crate) fn running_in(dir: &Path) -> Vec<u32> {
    let Ok(dir) = std::fs::canonicalize(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let cwd: Option<PathBuf> = std::fs::read_link(entry.path().join("cwd")).ok();
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|s| s.rsplit_once(") ").map(|(_, r)| r.starts_with('Z')))
            .unwrap_or(true);
        if cwd.as_deref() == Some(dir.as_path()) && !zombie {
            found.push(pid);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filesystem_server_over_stdio_writes_reads_and_lists_then_ends_with_the_run()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("crm"))?;
    let bin = server_bin("mcp-server-filesystem")?;
    let yaml = format!(
        r##"
id: mcp-files
tools:
  crm:
    mcp:
      command: ["{bin}", crm]
      allow: [write_file, read_text_file, list_directory]
      timeout: 30s
steps:
  - id: save
    kind: tool
    tool: crm
    args:
      call: write_file
      arguments: {{path: leads.md, content: "# Leads\n- Ada, 3 rooms"}}
  - id: load
    kind: tool
    tool: crm
    needs: [save]
    args:
      call: read_text_file
      arguments: {{path: leads.md}}
  - id: list
    kind: tool
    tool: crm
    needs: [save]
    args:
      call: list_directory
      arguments: {{path: .}}
"##
    );
    let options = RunOptions {
        human: Some(Arc::new(Yes)),
        ..RunOptions::default()
    };
    let report = run_yaml(dir.path(), &yaml, options).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("crm/leads.md"))?,
        "# Leads\n- Ada, 3 rooms"
    );
    assert_eq!(
        rec(&report, "load").output.as_deref(),
        Some("# Leads\n- Ada, 3 rooms")
    );
    let listing = rec(&report, "list").output.clone().unwrap_or_default();
    assert!(listing.contains("leads.md"), "{listing}");
    // The stored input names the call, so the run shows each tool call.
    assert!(
        rec(&report, "save")
            .input
            .as_deref()
            .is_some_and(|i| i.contains("write_file") && i.contains("leads.md"))
    );
    assert_eq!(
        running_in(dir.path()),
        Vec::<u32>::new(),
        "the server outlived its run"
    );

    // A tool the server does not have: the step fails naming what it has.
    let bad = yaml.replace(
        "      allow: [write_file, read_text_file, list_directory]\n",
        "",
    );
    let bad = bad.replace("call: list_directory", "call: list_everything");
    let options = RunOptions {
        human: Some(Arc::new(Yes)),
        ..RunOptions::default()
    };
    let report = run_yaml(dir.path(), &bad, options).await?;
    let error = rec(&report, "list").error.clone().unwrap_or_default();
    assert!(
        error.contains("no tool `list_everything`") && error.contains("read_text_file"),
        "{error}"
    );
    assert_eq!(running_in(dir.path()), Vec::<u32>::new());
    Ok(())
}

/// Signals when a step starts.
struct Started(tokio::sync::mpsc::UnboundedSender<String>);

impl EventSink for Started {
    fn emit(&self, event: &Event) {
        if let Event::StepStarted { step_id, .. } = event {
            let _ = self.0.send(step_id.clone());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_run_ends_its_stdio_server() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let bin = server_bin("mcp-server-everything")?;
    let yaml = format!(
        r#"
id: mcp-cancel
tools:
  everything:
    mcp:
      command: ["{bin}", stdio]
steps:
  - id: long
    kind: tool
    tool: everything
    args:
      call: trigger-long-running-operation
      arguments: {{duration: 600, steps: 600}}
"#
    );
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = RunOptions {
        human: Some(Arc::new(Yes)),
        sinks: vec![Arc::new(Started(tx))],
        cancel: cancel.clone(),
        ..RunOptions::default()
    };
    let run = {
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move { run_yaml(&dir, &yaml, options).await })
    };
    assert_eq!(rx.recv().await.as_deref(), Some("long"));
    // Cancelled once the server runs (its handshake or the long call in flight).
    let mut polls = 0;
    while running_in(dir.path()).is_empty() {
        polls += 1;
        anyhow::ensure!(polls < 1200, "the MCP server never started");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    cancel.cancel();
    let report = run.await??;
    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(rec(&report, "long").status, StepStatus::Cancelled);
    assert_eq!(
        running_in(dir.path()),
        Vec::<u32>::new(),
        "the server outlived its cancelled run"
    );
    Ok(())
}

/// Starts `server-everything` over streamable HTTP on a free loopback port; the child
/// (killed on drop) and the endpoint, once the server says it listens.
async fn http_server(dir: &Path) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(server_bin("mcp-server-everything")?)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stderr = child
        .stderr
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stderr"))?;
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let mut said = Vec::new();
    loop {
        let Some(line) = lines.next_line().await? else {
            anyhow::bail!("the streamable HTTP server ended: {}", said.join("\n"));
        };
        if line.contains(&format!("listening on port {port}")) {
            break;
        }
        said.push(line);
    }
    // Keep reading its log so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, format!("http://127.0.0.1:{port}/mcp")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_over_streamable_http_answers_text_and_structured_content() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (_server, url) = http_server(dir.path()).await?;
    let yaml = format!(
        r#"
id: mcp-http
local_only: true
inputs:
  who: {{type: string, default: Ada}}
tools:
  everything:
    mcp:
      url: {url}
steps:
  - id: echo
    kind: tool
    tool: everything
    args:
      call: echo
      arguments: {{message: "hello {{{{ inputs.who }}}}"}}
  - id: sum
    kind: tool
    tool: everything
    args:
      call: get-sum
      arguments: {{a: 2, b: 40}}
  - id: weather
    kind: tool
    tool: everything
    args:
      call: get-structured-content
      arguments: {{location: Chicago}}
"#
    );
    // No human: an HTTP server starts no program here, so it needs no permission.
    let report = run_yaml(dir.path(), &yaml, RunOptions::default()).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let echo = rec(&report, "echo").output.clone().unwrap_or_default();
    assert!(echo.contains("hello Ada"), "{echo}");
    let sum = rec(&report, "sum").output.clone().unwrap_or_default();
    assert!(sum.contains("42"), "{sum}");
    let weather = rec(&report, "weather")
        .output_json
        .clone()
        .unwrap_or_default();
    assert!(
        weather
            .get("temperature")
            .is_some_and(serde_json::Value::is_number)
            && weather
                .get("conditions")
                .is_some_and(serde_json::Value::is_string),
        "{weather}"
    );

    // A local_only workflow cannot name a server on another machine.
    let remote = yaml.replace(&url, "https://mcp.example.com/mcp");
    let diags = nexus_engine::load_str(&remote, Some("remote.yaml"))
        .err()
        .unwrap_or_default();
    assert!(
        diags.iter().any(|d| d
            .message
            .contains("reaches `mcp.example.com`, but the workflow is `local_only`")),
        "{}",
        nexus_engine::diagnostic::render_all(&diags)
    );
    Ok(())
}
