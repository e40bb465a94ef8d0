//! `vote` steps end to end: three voters on the Ollama-protocol test server (each model's
//! ballot scripted as the daemon streams a reply), weights, a veto, the ballots and the
//! tally stored in SQLite; and three ballots of the embedded model under the ballot's
//! grammar.

use std::sync::Arc;

use nexus_engine::RunOptions;
use nexus_engine::events::{RunStatus, StepStatus};
use nexus_engine::provider::Provider;
use nexus_llm::OllamaProvider;
use nexus_store::SqliteStore;
use nexus_tests::OllamaServer;
use serde_json::{Value, json};

use crate::agent::run_yaml;

/// A model of the test server whose reply is `ballot`.
fn voter(name: &str, ballot: Value) -> Value {
    json!({"name": name, "capabilities": ["completion"], "script": {"content": [ballot.to_string()]}})
}

fn workflow(voters: &str) -> String {
    format!(
        r#"
id: release-vote
steps:
  - id: decide
    kind: vote
    prompt: Ship release 2.0 on Friday?
    choices: [ship, wait]
    voters:
{voters}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_ballots_decide_a_veto_blocks_and_the_ballots_are_stored() -> anyhow::Result<()> {
    let specs = vec![
        voter(
            "lead:latest",
            json!({"choice": "ship", "reason": "tests are green"}),
        ),
        voter(
            "qa:latest",
            json!({"choice": "wait", "reason": "one flaky test"}),
        ),
        voter(
            "ops:latest",
            json!({"choice": "wait", "reason": "on-call is away"}),
        ),
    ];
    let server =
        tokio::task::spawn_blocking(move || OllamaServer::start_with_specs(&[], &specs, &[]))
            .await??;
    let provider: Arc<dyn Provider> = Arc::new(OllamaProvider::new(&server.url)?);
    let dir = tempfile::tempdir()?;
    let store = Arc::new(SqliteStore::open(&dir.path().join("runs.db")).await?);

    // The lead's weight 3 outweighs two ballots of weight 1: a weighted majority.
    let yaml = workflow(
        "      - {name: lead, model: ollama:lead:latest, weight: 3}\n      - {name: qa, model: ollama:qa:latest}\n      - {name: ops, model: ollama:ops:latest}",
    );
    let report = run_yaml(
        dir.path(),
        &yaml,
        vec![provider.clone()],
        Some(store.clone()),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let decide = &report.steps[0];
    assert_eq!(decide.output.as_deref(), Some("ship"));
    let json = decide.output_json.clone().unwrap_or_default();
    assert_eq!(json["tally"], json!({"ship": 3.0, "wait": 2.0}));
    let ballots: Vec<(String, String, String)> = json["ballots"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|b| {
            (
                b["voter"].as_str().unwrap_or_default().to_string(),
                b["choice"].as_str().unwrap_or_default().to_string(),
                b["model"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    assert_eq!(
        ballots,
        vec![
            ("lead".into(), "ship".into(), "ollama:lead:latest".into()),
            ("qa".into(), "wait".into(), "ollama:qa:latest".into()),
            ("ops".into(), "wait".into(), "ollama:ops:latest".into()),
        ]
    );
    assert_eq!(decide.attempts.len(), 3);
    let stored = store.get_run(&report.run_id).await?;
    assert_eq!(stored.steps[0].output_json, decide.output_json);

    // Without the weight it is a majority for `wait`; ops's veto does not block it, but a
    // veto held by qa against `ship` does once the lead outweighs the others again.
    let yaml = workflow(
        "      - {name: lead, model: ollama:lead:latest}\n      - {name: qa, model: ollama:qa:latest}\n      - {name: ops, model: ollama:ops:latest, veto: true}",
    );
    let report = run_yaml(
        dir.path(),
        &yaml,
        vec![provider.clone()],
        None,
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.steps[0].output.as_deref(), Some("wait"));
    let yaml = workflow(
        "      - {name: lead, model: ollama:lead:latest, weight: 3}\n      - {name: qa, model: ollama:qa:latest, veto: true}\n      - {name: ops, model: ollama:ops:latest}",
    );
    let report = run_yaml(
        dir.path(),
        &yaml,
        vec![provider],
        Some(store.clone()),
        RunOptions::default(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed);
    let decide = &report.steps[0];
    assert_eq!(decide.status, StepStatus::Failed);
    assert_eq!(
        decide.error.as_deref(),
        Some("`ship` is vetoed by qa, who chose `wait`: one flaky test")
    );
    // A failed vote keeps its ballots and tally.
    let stored = store.get_run(&report.run_id).await?;
    let json = stored.steps[0].output_json.clone().unwrap_or_default();
    assert_eq!(json["choice"], Value::Null);
    assert_eq!(json["ballots"].as_array().map(Vec::len), Some(3));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_model_casts_valid_ballots_under_the_grammar() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let yaml = workflow(
        "      - {name: a, model: embedded}\n      - {name: b, model: embedded}\n      - {name: c, model: embedded}",
    )
    .replace("    choices: [ship, wait]", "    choices: [ship, wait]\n    rule: weighted\n    on_tie: first_choice\n    max_tokens: 48");
    let report = run_yaml(
        dir.path(),
        &yaml,
        vec![crate::embedded()?],
        None,
        RunOptions::default(),
    )
    .await?;
    let decide = &report.steps[0];
    assert_eq!(decide.status, StepStatus::Succeeded, "{:?}", decide.error);
    let json = decide.output_json.clone().unwrap_or_default();
    let ballots = json["ballots"].as_array().cloned().unwrap_or_default();
    assert_eq!(ballots.len(), 3);
    for b in &ballots {
        assert!(
            matches!(b["choice"].as_str(), Some("ship" | "wait")),
            "{ballots:?}"
        );
    }
    let ship = json["tally"]["ship"].as_f64().unwrap_or(-1.0);
    let wait = json["tally"]["wait"].as_f64().unwrap_or(-1.0);
    assert_eq!(ship + wait, 3.0);
    let winner = if ship >= wait { "ship" } else { "wait" };
    assert_eq!(decide.output.as_deref(), Some(winner));
    Ok(())
}
