//! `memory` tools on real parts: the in-process all-MiniLM-L6-v2 embedder, a real SQLite
//! file with sqlite-vec. Documents added by one run are found by another run of another
//! engine after the store was closed and reopened; recall@5 is measured on a labelled set
//! built from public text (`tests/memory/`: CPython's module docstrings, hand-written
//! queries).

use std::collections::BTreeMap;
use std::sync::Arc;

use nexus_engine::events::{RunStatus, StepStatus};
use nexus_engine::{EngineConfig, RunOptions, RunReport};
use nexus_store::SqliteStore;

use crate::{embedded, engine, go, plan};

async fn run(
    store: &Arc<SqliteStore>,
    yaml: &str,
    inputs: &[(&str, &str)],
) -> anyhow::Result<RunReport> {
    let plan = plan(yaml);
    let given: BTreeMap<String, String> = inputs
        .iter()
        .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
        .collect();
    let inputs = nexus_engine::resolve_inputs(&plan, &given)
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let engine = engine(
        vec![embedded()?],
        Some(Arc::clone(store)),
        EngineConfig::default(),
    );
    Ok(engine.run(plan, inputs, RunOptions::default()).await?)
}

fn json<'a>(report: &'a RunReport, id: &str) -> &'a serde_json::Value {
    let rec = report.steps.iter().find(|s| s.step_id == id);
    match rec.and_then(|r| r.output_json.as_ref()) {
        Some(v) => v,
        None => panic!("no JSON output for `{id}`: {rec:?}"),
    }
}

const ADD: &str = r#"
id: remember
inputs:
  text: {type: string}
  doc: {type: string}
  source: {type: string}
tools:
  kb: {memory: {collection: notes, chunk_size: 120, chunk_overlap: 20}}
steps:
  - id: add
    kind: tool
    tool: kb
    args: {op: add, text: "{{ inputs.text }}", document: "{{ inputs.doc }}", metadata: {source: "{{ inputs.source }}"}}
"#;

const SEARCH: &str = r#"
id: recall
inputs:
  q: {type: string}
tools:
  kb: {memory: {collection: notes}}
steps:
  - id: all
    kind: tool
    tool: kb
    args: {op: search, query: "{{ inputs.q }}", top_k: 3}
  - id: mail_only
    kind: tool
    tool: kb
    args: {op: search, query: "{{ inputs.q }}", top_k: 1, filter: {source: mail}}
"#;

#[tokio::test]
async fn what_one_run_remembers_another_finds_after_the_store_is_reopened() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runs.db");
    {
        let store = Arc::new(SqliteStore::open(&path).await?);
        let tea = "Green tea is steamed or pan-fired soon after picking, which keeps its leaves from oxidising. \
                   Black tea is fully oxidised before it is dried. Both come from the Camellia sinensis plant.";
        let r = run(
            &store,
            ADD,
            &[("text", tea), ("doc", "tea"), ("source", "web")],
        )
        .await?;
        assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.steps);
        let added = json(&r, "add");
        assert_eq!(added["document"], "tea");
        assert!(
            added["chunks"].as_u64().unwrap_or(0) >= 2,
            "120-character chunks: {added}"
        );
        let bikes = "To fix a flat bicycle tyre, take the wheel off, lever the tyre from the rim, find the puncture and patch the inner tube.";
        let r = run(
            &store,
            ADD,
            &[("text", bikes), ("doc", "bikes"), ("source", "mail")],
        )
        .await?;
        assert_eq!(r.status, RunStatus::Succeeded);
    }
    let store = Arc::new(SqliteStore::open(&path).await?);
    let r = run(
        &store,
        SEARCH,
        &[("q", "How is green tea processed after harvest?")],
    )
    .await?;
    assert_eq!(r.status, RunStatus::Succeeded, "{:?}", r.steps);
    let hits = json(&r, "all")["hits"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(hits.len(), 3);
    assert_eq!(hits[0]["document"], "tea", "{hits:?}");
    assert!(
        hits[0]["text"].as_str().unwrap_or("").contains("Green tea"),
        "{hits:?}"
    );
    let scores: Vec<f64> = hits.iter().filter_map(|h| h["score"].as_f64()).collect();
    assert!(
        scores.windows(2).all(|w| w[0] >= w[1]),
        "best first: {scores:?}"
    );
    let bike = hits.iter().find(|h| h["document"] == "bikes");
    assert!(
        bike.is_none_or(|b| b["score"].as_f64() < Some(scores[0] - 0.2)),
        "{hits:?}"
    );
    // The filter keeps only the mail document, however far it is from the query.
    let mail = json(&r, "mail_only")["hits"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0]["document"], "bikes");
    assert_eq!(mail[0]["metadata"]["source"], "mail");
    // The text output is the hits' texts; the record keeps the call.
    let rec = r.steps.iter().find(|s| s.step_id == "all");
    assert!(
        rec.and_then(|s| s.output.as_deref())
            .is_some_and(|t| t.contains("Green tea"))
    );
    assert!(
        rec.and_then(|s| s.input.as_deref())
            .is_some_and(|t| t.contains("green tea processed"))
    );

    // Adding `tea` again replaces its chunks instead of adding more.
    let r = run(
        &store,
        ADD,
        &[
            ("text", "Oolong is partly oxidised."),
            ("doc", "tea"),
            ("source", "web"),
        ],
    )
    .await?;
    assert_eq!(r.status, RunStatus::Succeeded);
    let r = run(&store, SEARCH, &[("q", "tea")]).await?;
    let docs: Vec<String> = json(&r, "all")["hits"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["text"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(docs.len(), 2, "one chunk of tea and one of bikes: {docs:?}");
    assert!(!docs.iter().any(|t| t.contains("Green tea")), "{docs:?}");
    Ok(())
}

#[tokio::test]
async fn a_collection_refuses_another_embedders_vectors_and_says_which() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("runs.db")).await?);
    let r = run(
        &store,
        ADD,
        &[("text", "some text"), ("doc", "a"), ("source", "web")],
    )
    .await?;
    assert_eq!(r.status, RunStatus::Succeeded);
    // The same collection with an Ollama embedder, but no Ollama here: the step fails
    // and says the provider is missing; with a store but no embedder it would mix spaces.
    let other = SEARCH.replace(
        "{collection: notes}",
        "{collection: notes, embedder: \"ollama:nomic-embed-text\"}",
    );
    let r = run(&store, &other, &[("q", "text")]).await?;
    assert_eq!(r.status, RunStatus::Failed);
    let err = r
        .steps
        .iter()
        .find(|s| s.step_id == "all")
        .and_then(|s| s.error.clone())
        .unwrap_or_default();
    assert!(err.contains("no `ollama` provider"), "{err}");
    Ok(())
}

#[tokio::test]
async fn recall_at_5_on_python_module_docs_with_hand_written_queries() -> anyhow::Result<()> {
    let root = nexus_tests::repo_root().join("tests").join("memory");
    let docs: Vec<serde_json::Value> = std::fs::read_to_string(root.join("docs.jsonl"))?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let queries: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(root.join("queries.json"))?)?;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("runs.db")).await?);
    // One run adds every document (a map over them), another searches every query.
    let add = format!(
        r#"
id: index
inputs:
  docs: {{type: json, default: {docs}}}
tools:
  kb: {{memory: {{collection: stdlib}}}}
steps:
  - id: each
    kind: map
    items: inputs.docs
    as: doc
    steps:
      - {{id: add, kind: tool, tool: kb, args: {{op: add, text: "{{{{ doc.text }}}}", document: "{{{{ doc.id }}}}"}}}}
"#,
        docs = serde_json::Value::Array(docs.clone())
    );
    let engine = engine(
        vec![embedded()?],
        Some(Arc::clone(&store)),
        EngineConfig::default(),
    );
    let (r, _) = go(&engine, plan(&add), RunOptions::default()).await?;
    assert_eq!(
        r.status,
        RunStatus::Succeeded,
        "{:?}",
        r.steps.iter().find(|s| s.status != StepStatus::Succeeded)
    );
    let search = format!(
        r#"
id: ask
inputs:
  queries: {{type: json, default: {queries}}}
tools:
  kb: {{memory: {{collection: stdlib}}}}
steps:
  - id: each
    kind: map
    items: inputs.queries
    as: q
    steps:
      - {{id: find, kind: tool, tool: kb, args: {{op: search, query: "{{{{ q.query }}}}", top_k: 5}}}}
"#,
        queries = serde_json::Value::Array(queries.clone())
    );
    let (r, _) = go(&engine, plan(&search), RunOptions::default()).await?;
    assert_eq!(r.status, RunStatus::Succeeded);
    let results = json(&r, "each")["results"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(results.len(), queries.len());
    let mut found = 0;
    let mut misses = Vec::new();
    for (q, result) in queries.iter().zip(&results) {
        let hit = result["hits"]
            .as_array()
            .is_some_and(|hits| hits.iter().any(|h| h["document"] == q["module"]));
        if hit {
            found += 1;
        } else {
            misses.push(q["module"].to_string());
        }
    }
    #[allow(clippy::cast_precision_loss)]
    let recall = f64::from(found) / queries.len() as f64;
    println!(
        "recall@5 = {recall:.3} ({found}/{}); missed: {misses:?}",
        queries.len()
    );
    assert!(recall >= 0.85, "recall@5 {recall:.3}; missed {misses:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_remembers_through_the_memory_tool_and_finds_it_again() -> anyhow::Result<()> {
    // The Ollama-protocol test server scripts the agent's rounds (an add, then a search);
    // the embedder is the in-process model.
    let (_server, ollama) = crate::agent::ollama_agent(serde_json::json!({
        "rounds": [
            [{"name": "kb", "arguments": {"op": "add", "text": "The product launch moved to Friday the 12th.", "document": "launch"}}],
            [{"name": "kb", "arguments": {"op": "search", "query": "When is the launch?", "top_k": 1}}]
        ],
        "after_tool": "Results: {results}"
    }))
    .await?;
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("runs.db")).await?);
    let yaml = r#"
id: agent-memory
tools:
  kb: {memory: {collection: team}}
steps:
  - id: helper
    kind: agent
    model: ollama:llama3.1:latest
    prompt: Remember the launch date, then look it up.
    tools: [kb]
"#;
    let engine = engine(
        vec![ollama, embedded()?],
        Some(Arc::clone(&store)),
        EngineConfig::default(),
    );
    let (report, _) = go(&engine, plan(yaml), RunOptions::default()).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let helper = report.steps.iter().find(|s| s.step_id == "helper");
    let output = helper.and_then(|h| h.output.clone()).unwrap_or_default();
    let results: Vec<String> =
        serde_json::from_str(output.trim_start_matches("Results: ")).unwrap_or_default();
    assert_eq!(results.len(), 2, "{output}");
    let added: serde_json::Value = serde_json::from_str(&results[0])?;
    assert_eq!(added["document"], "launch");
    assert_eq!(results[1], "The product launch moved to Friday the 12th.");
    // The memory outlives the run: a search step of another run finds it.
    let search = r#"
id: later
tools:
  kb: {memory: {collection: team}}
steps:
  - {id: find, kind: tool, tool: kb, args: {op: search, query: "launch date", top_k: 1}}
"#;
    let (r, _) = go(&engine, plan(search), RunOptions::default()).await?;
    assert_eq!(json(&r, "find")["hits"][0]["document"], "launch");
    Ok(())
}
