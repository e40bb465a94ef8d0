//! `agent` steps end to end: native tool calls against the Ollama-protocol test server
//! (an agent's rounds scripted as the daemon sends calls) and an OpenAI-compatible
//! server streaming tool-call deltas as OpenAI documents them, the JSON protocol on the
//! embedded model, tool errors returned to the model, the caps, the transcript stored in
//! SQLite, and cancellation during a tool call (the program, the MCP server and the HTTP
//! request end).

use std::path::Path;
use std::sync::Arc;

use nexus_engine::events::{RunStatus, StepStatus};
use nexus_engine::human::{HumanDecision, HumanHandler};
use nexus_engine::provider::Provider;
use nexus_engine::store::{StepRecord, TranscriptEntry};
use nexus_engine::{EngineConfig, RunOptions, RunReport};
use nexus_llm::{OllamaProvider, OpenAiProvider};
use nexus_store::SqliteStore;
use nexus_tests::OllamaServer;
use nexus_tests::scripted::{Behavior, ScriptedServer};
use serde_json::{Value, json};

use crate::engine;
use crate::shell::ended;

/// Approves every permission.
struct Yes;

#[async_trait::async_trait]
impl HumanHandler for Yes {
    async fn decide(&self, _request: &nexus_engine::human::HumanRequest) -> Option<HumanDecision> {
        Some(HumanDecision::Approve)
    }
}

/// Runs the workflow `yaml` (written to `dir/wf.yaml`) on `providers`, with a store
/// when given.
pub(crate) async fn run_yaml(
    dir: &Path,
    yaml: &str,
    providers: Vec<Arc<dyn Provider>>,
    store: Option<Arc<SqliteStore>>,
    options: RunOptions,
) -> anyhow::Result<RunReport> {
    let path = dir.join("wf.yaml");
    std::fs::write(&path, yaml)?;
    let plan = nexus_engine::load_file(&path)
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let inputs = nexus_engine::resolve_inputs(&plan, &Default::default())
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let engine = engine(providers, store, EngineConfig::default());
    Ok(engine.run(Arc::new(plan), inputs, options).await?)
}

fn rec<'a>(report: &'a RunReport, id: &str) -> &'a StepRecord {
    report.steps.iter().find(|s| s.step_id == id).expect("step")
}

/// The tool entries of a transcript: (name, arguments, ok, result).
fn tool_entries(t: &[TranscriptEntry]) -> Vec<(String, Value, bool, String)> {
    t.iter()
        .filter_map(|e| match e {
            TranscriptEntry::Tool {
                name,
                arguments,
                ok,
                result,
                ..
            } => Some((name.clone(), arguments.clone(), *ok, result.clone())),
            TranscriptEntry::Model { .. } => None,
        })
        .collect()
}

/// The model entries of a transcript: (iteration, strategy, called tool names, text).
fn model_entries(t: &[TranscriptEntry]) -> Vec<(u32, String, Vec<String>, String)> {
    t.iter()
        .filter_map(|e| match e {
            TranscriptEntry::Model {
                iteration,
                strategy,
                tool_calls,
                text,
                ..
            } => Some((
                *iteration,
                strategy.clone(),
                tool_calls.iter().map(|c| c.name.clone()).collect(),
                text.clone(),
            )),
            TranscriptEntry::Tool { .. } => None,
        })
        .collect()
}

/// The Ollama-protocol test server with one tool-capable model whose replies follow
/// `script` (see `tests/servers/ollama_server.py`, `rounds` and `after_tool`).
pub(crate) async fn ollama_agent(
    script: Value,
) -> anyhow::Result<(OllamaServer, Arc<dyn Provider>)> {
    let specs = vec![
        json!({"name": "llama3.1:latest", "capabilities": ["completion", "tools"], "script": script}),
    ];
    let server =
        tokio::task::spawn_blocking(move || OllamaServer::start_with_specs(&[], &specs, &[]))
            .await??;
    let provider: Arc<dyn Provider> = Arc::new(OllamaProvider::new(&server.url)?);
    Ok((server, provider))
}

/// A workspace with `notes.txt`, and the workflow of an agent over a `file` tool.
fn notes_workflow(dir: &Path, extra: &str) -> anyhow::Result<String> {
    std::fs::create_dir(dir.join("ws"))?;
    std::fs::write(dir.join("ws/notes.txt"), "Ship on Friday.")?;
    Ok(format!(
        r#"
id: agent-notes
tools:
  files:
    file:
      workspace: ws
steps:
  - id: helper
    kind: agent
    model: ollama:llama3.1:latest
    prompt: What do my notes say?
    tools: [files]
{extra}
"#
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_calls_two_tools_in_sequence_and_answers_from_their_results() -> anyhow::Result<()>
{
    let (_server, provider) = ollama_agent(json!({
        "rounds": [
            [{"name": "files", "arguments": {"op": "list", "path": "."}}],
            [{"name": "files", "arguments": {"op": "read", "path": "notes.txt"}}]
        ],
        "after_tool": "Results: {results}"
    }))
    .await?;
    let dir = tempfile::tempdir()?;
    let yaml = notes_workflow(dir.path(), "")?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("runs.db")).await?);
    let report = run_yaml(
        dir.path(),
        &yaml,
        vec![provider],
        Some(store.clone()),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let helper = rec(&report, "helper");
    assert_eq!(helper.kind, "agent");
    // The model's last reply quotes every tool result it was given, in order: the listing,
    // then the file the listing showed.
    let output = helper.output.clone().unwrap_or_default();
    let results: Vec<String> =
        serde_json::from_str(output.trim_start_matches("Results: ")).unwrap_or_default();
    assert_eq!(
        results,
        vec!["notes.txt".to_string(), "Ship on Friday.".to_string()],
        "{output}"
    );
    let models = model_entries(&helper.transcript);
    assert_eq!(
        models
            .iter()
            .map(|m| (m.0, m.1.as_str(), m.2.clone()))
            .collect::<Vec<_>>(),
        vec![
            (1, "native", vec!["files".to_string()]),
            (2, "native", vec!["files".to_string()]),
            (3, "native", vec![]),
        ]
    );
    let tools = tool_entries(&helper.transcript);
    assert_eq!(tools.len(), 2);
    assert_eq!(tools[0].1, json!({"op": "list", "path": "."}));
    assert_eq!((tools[1].2, tools[1].3.as_str()), (true, "Ship on Friday."));
    // Each model call is an attempt of the step; the step's tokens are their sum.
    assert_eq!(helper.attempts.len(), 3);
    let usage = helper.usage.expect("usage");
    let summed: u64 = helper
        .attempts
        .iter()
        .filter_map(|a| a.usage)
        .map(|u| u.prompt_tokens)
        .sum();
    assert_eq!(usage.prompt_tokens, summed);

    // The transcript is stored with the step and read back whole.
    let stored = store.get_run(&report.run_id).await?;
    let stored_helper = stored
        .steps
        .iter()
        .find(|s| s.step_id == "helper")
        .expect("stored step");
    assert_eq!(stored_helper.transcript, helper.transcript);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tool_error_goes_back_to_the_model_which_recovers() -> anyhow::Result<()> {
    let (_server, provider) = ollama_agent(json!({
        "rounds": [
            [{"name": "files", "arguments": {"op": "read", "path": "missing.txt"}}],
            [{"name": "nothere", "arguments": {}}, {"name": "files", "arguments": {"op": "read", "path": "notes.txt"}}]
        ],
        "after_tool": "{results}"
    }))
    .await?;
    let dir = tempfile::tempdir()?;
    let yaml = notes_workflow(dir.path(), "")?;
    let report = run_yaml(
        dir.path(),
        &yaml,
        vec![provider],
        None,
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let helper = rec(&report, "helper");
    let tools = tool_entries(&helper.transcript);
    assert_eq!(tools.len(), 2, "{tools:?}");
    assert!(!tools[0].2, "reading a missing file must fail: {tools:?}");
    assert!(tools[0].3.contains("missing.txt"), "{}", tools[0].3);
    assert!(tools[1].2);
    // What the model saw: the error as the first call's result, then the file.
    let seen: Vec<String> =
        serde_json::from_str(helper.output.as_deref().unwrap_or("")).unwrap_or_default();
    assert_eq!(seen.len(), 2, "{:?}", helper.output);
    assert!(
        seen[0].starts_with("error:") && seen[0].contains("missing.txt"),
        "{seen:?}"
    );
    assert_eq!(seen[1], "Ship on Friday.");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_iterations_fails_the_step_and_keeps_the_transcript() -> anyhow::Result<()> {
    let list = json!([{"name": "files", "arguments": {"op": "list", "path": "."}}]);
    let (_server, provider) =
        ollama_agent(json!({"rounds": [list, list, list, list, list], "after_tool": "done"}))
            .await?;
    let dir = tempfile::tempdir()?;
    let yaml = notes_workflow(dir.path(), "    max_iterations: 2")?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("runs.db")).await?);
    let report = run_yaml(
        dir.path(),
        &yaml,
        vec![provider.clone()],
        Some(store.clone()),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed);
    let helper = rec(&report, "helper");
    assert_eq!(helper.status, StepStatus::Failed);
    assert!(
        helper
            .error
            .as_deref()
            .is_some_and(|e| e.contains("`max_iterations` (2)")),
        "{:?}",
        helper.error
    );
    assert_eq!(model_entries(&helper.transcript).len(), 2);
    assert_eq!(tool_entries(&helper.transcript).len(), 2);
    let stored = store.get_run(&report.run_id).await?;
    assert_eq!(stored.steps[0].transcript, helper.transcript);

    // `max_tool_calls` bounds the calls over the loop the same way.
    let dir2 = tempfile::tempdir()?;
    let yaml = notes_workflow(dir2.path(), "    max_iterations: 5\n    max_tool_calls: 1")?;
    let report = run_yaml(
        dir2.path(),
        &yaml,
        vec![provider],
        None,
        RunOptions::default(),
    )
    .await?;
    let helper = rec(&report, "helper");
    assert!(
        helper
            .error
            .as_deref()
            .is_some_and(|e| e.contains("`max_tool_calls` (1)")),
        "{:?}",
        helper.error
    );
    assert_eq!(tool_entries(&helper.transcript).len(), 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_compatible_server_streams_the_tool_call_an_agent_runs() -> anyhow::Result<()> {
    // A call streamed as OpenAI's function-calling guide shows it (`delta.tool_calls`
    // fragments by index, the arguments a JSON string in pieces), then the final answer.
    let chunk = |delta: Value, finish: Value| {
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1694268190,
               "model": "gpt-4o-mini", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    };
    let call = vec![
        chunk(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"index": 0, "id": "call_abc", "type": "function", "function": {"name": "files", "arguments": ""}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"op\": \"re"}}]}),
            Value::Null,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "ad\", \"path\": \"notes.txt\"}"}}]}),
            Value::Null,
        ),
        chunk(json!({}), json!("tool_calls")),
    ];
    let server = ScriptedServer::start(vec![
        Behavior::Events(call),
        Behavior::Stream(vec!["Friday".into()]),
    ])
    .await?;
    let provider: Arc<dyn Provider> = Arc::new(OpenAiProvider::new(
        &server.base_url,
        None,
        vec!["gpt-4o-mini".into()],
    )?);
    let dir = tempfile::tempdir()?;
    let yaml =
        notes_workflow(dir.path(), "")?.replace("ollama:llama3.1:latest", "openai:gpt-4o-mini");
    let report = run_yaml(
        dir.path(),
        &yaml,
        vec![provider],
        None,
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let helper = rec(&report, "helper");
    assert_eq!(helper.output.as_deref(), Some("Friday"));
    assert_eq!(
        tool_entries(&helper.transcript),
        vec![(
            "files".to_string(),
            json!({"op": "read", "path": "notes.txt"}),
            true,
            "Ship on Friday.".to_string()
        )]
    );
    // The second request carried the call and its result, as OpenAI's API takes them.
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 2);
    assert_eq!(bodies[0]["tools"][0]["function"]["name"], "files");
    let messages = bodies[1]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let result = messages.last().cloned().unwrap_or_default();
    assert_eq!(result["role"], "tool");
    assert_eq!(result["tool_call_id"], "call_abc");
    assert_eq!(result["content"], "Ship on Friday.");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_model_drives_an_agent_through_the_json_protocol() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // Greedy decoding (the prompt has no random part, so every run takes the same path)
    // and room for a whole answer: a reply cut at the cap is not JSON, whatever grammar.
    let yaml = notes_workflow(
        dir.path(),
        "    max_iterations: 3\n    max_tokens: 256\n    temperature: 0",
    )?
    .replace("ollama:llama3.1:latest", "embedded");
    let report = run_yaml(
        dir.path(),
        &yaml,
        vec![crate::embedded()?],
        None,
        RunOptions::default(),
    )
    .await?;
    let helper = rec(&report, "helper");
    // The model has no native tool calls: every turn is the grammar-constrained JSON
    // protocol, so each reply is a call of the offered tool or a final answer, never an
    // unreadable reply; the loop ends with an answer or at its cap.
    let models = model_entries(&helper.transcript);
    assert!(!models.is_empty(), "{:?}", helper.error);
    for (_, strategy, calls, text) in &models {
        assert_eq!(strategy, "json", "{models:?}");
        assert!(
            calls.iter().all(|c| c == "files") && (calls.len() == 1 || !text.trim().is_empty()),
            "{models:?}"
        );
    }
    assert!(
        helper.attempts.iter().all(|a| a.error_kind.is_none()),
        "a turn failed: {:?}",
        helper.attempts
    );
    match helper.status {
        StepStatus::Succeeded => {
            assert_eq!(models.last().map(|m| m.2.len()), Some(0));
            assert_eq!(
                helper.output.as_deref(),
                models.last().map(|m| m.3.as_str())
            );
        }
        _ => assert!(
            helper
                .error
                .as_deref()
                .is_some_and(|e| e.contains("`max_iterations` (3)")),
            "{:?}",
            helper.error
        ),
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_during_a_tool_call_ends_the_program_the_mcp_server_and_the_request()
-> anyhow::Result<()> {
    let bin = crate::mcp::server_bin("mcp-server-everything")?;
    let hang = ScriptedServer::start(vec![Behavior::Hang]).await?;
    let (_server, provider) = ollama_agent(json!({
        "rounds": [[{"name": "slow", "arguments": {}}], [{"name": "web", "arguments": {"method": "POST", "path": "chat/completions", "body": {"model": "x"}}}]],
        "after_tool": "done"
    }))
    .await?;
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("pid");
    anyhow::ensure!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()?
            .success()
    );
    std::fs::create_dir(dir.path().join("srv"))?;
    let yaml = format!(
        r#"
id: agent-cancel
tools:
  slow:
    shell:
      command: [sh, -c, 'echo $$ > pid; exec sleep 600']
      timeout: 10m
  everything:
    mcp:
      command: ["{bin}", stdio]
      cwd: srv
  web:
    http:
      url: {}/
steps:
  - id: helper
    kind: agent
    model: ollama:llama3.1:latest
    prompt: Work.
    tools: [everything, slow, web]
"#,
        hang.base_url
    );
    // First: cancelled while the shell program runs (its pid arrives through the FIFO).
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = RunOptions {
        human: Some(Arc::new(Yes)),
        cancel: cancel.clone(),
        ..RunOptions::default()
    };
    let run = {
        let (dir, yaml, provider) = (dir.path().to_path_buf(), yaml.clone(), provider.clone());
        tokio::spawn(async move { run_yaml(&dir, &yaml, vec![provider], None, options).await })
    };
    let fifo2 = fifo.clone();
    let pid: u32 = tokio::task::spawn_blocking(move || std::fs::read_to_string(fifo2))
        .await??
        .trim()
        .parse()?;
    let servers = crate::mcp::running_in(&dir.path().join("srv"));
    assert!(!servers.is_empty(), "the MCP server is not running");
    cancel.cancel();
    let report = run.await??;
    assert_eq!(report.status, RunStatus::Cancelled);
    let helper = rec(&report, "helper");
    assert_eq!(helper.status, StepStatus::Cancelled);
    assert_eq!(tool_entries(&helper.transcript).len(), 1);
    assert!(ended(pid), "the cancelled program {pid} is still running");
    assert!(
        servers.iter().all(|&p| ended(p)),
        "the MCP server outlived its cancelled run"
    );

    // Then: cancelled while the http tool's request waits for an answer that never comes.
    let yaml = yaml.replace("    tools: [everything, slow, web]", "    tools: [web]");
    let (_server2, provider) = ollama_agent(json!({
        "rounds": [[{"name": "web", "arguments": {"method": "POST", "path": "chat/completions", "body": {"model": "x"}}}]],
        "after_tool": "done"
    }))
    .await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = RunOptions {
        cancel: cancel.clone(),
        ..RunOptions::default()
    };
    let run = {
        let dir = dir.path().to_path_buf();
        tokio::spawn(async move { run_yaml(&dir, &yaml, vec![provider], None, options).await })
    };
    let mut polls = 0;
    while hang.arrivals().is_empty() {
        polls += 1;
        anyhow::ensure!(polls < 2400, "the http tool's request never arrived");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    cancel.cancel();
    let report = run.await??;
    assert_eq!(report.status, RunStatus::Cancelled);
    let mut polls = 0;
    while !hang.client_disconnected() {
        polls += 1;
        anyhow::ensure!(polls < 400, "the http request outlived its cancelled run");
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    Ok(())
}
