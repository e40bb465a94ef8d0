//! Engine tests without any model: validation corpus, format schema, no-panic on mangled
//! input, DAG semantics with template steps, retry delays.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nexus_engine::events::{CollectingSink, Event, EventSink, RunStatus, StepStatus};
use nexus_engine::workflow::RetryPolicy;
use nexus_engine::{Engine, EngineConfig, RunOptions};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every file of `tests/invalid/` is rejected with the code named on its first line
/// (`# expect: <code>`), every diagnostic is located, and the rendered text matches its
/// snapshot.
#[test]
fn invalid_corpus_gives_located_expected_errors() {
    let dir = repo().join("tests/invalid");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/invalid exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 25, "the corpus has {} files", files.len());
    for path in files {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let text = std::fs::read_to_string(&path).expect("readable");
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{name}: first line must be `# expect: <code>`"))
            .trim()
            .to_string();
        let shown = format!("tests/invalid/{name}");
        let diags = match nexus_engine::load_str(&text, Some(&shown)) {
            Ok(_) => panic!("{name}: expected `{expect}`, but the workflow is valid"),
            Err(d) => d,
        };
        assert!(
            diags.iter().any(|d| d.code.as_str() == expect),
            "{name}: expected `{expect}`, got:\n{}",
            nexus_engine::diagnostic::render_all(&diags)
        );
        for d in &diags {
            assert!(
                d.span.is_some() || d.step.is_some(),
                "{name}: unlocated diagnostic: {d}"
            );
            assert!(d.hint.is_some(), "{name}: diagnostic without a hint: {d}");
        }
        insta::assert_snapshot!(
            name.trim_end_matches(".yaml"),
            nexus_engine::diagnostic::render_all(&diags)
        );
    }
}

#[test]
fn example_workflows_are_valid() {
    let dir = repo().join("workflows");
    let mut n = 0;
    for entry in std::fs::read_dir(dir).expect("workflows/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "yaml") {
            if let Err(d) = nexus_engine::load_file(&path) {
                panic!("{}", nexus_engine::diagnostic::render_all(&d));
            }
            n += 1;
        }
    }
    assert!(n >= 3);
}

#[test]
fn committed_json_schema_is_current() {
    let generated = nexus_engine::workflow::json_schema();
    let path = repo().join("schema/workflow.schema.json");
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
            .unwrap_or_default();
    assert!(
        committed == generated,
        "schema/workflow.schema.json is stale: run `cargo run -p nexus-cli -- schema > schema/workflow.schema.json`"
    );
}

/// Deleting any one line, or cutting the file anywhere, never panics the parser or the
/// validator.
#[test]
fn mangled_workflows_never_panic() {
    for name in [
        "feature-spec.yaml",
        "document-report.yaml",
        "issue-triage.yaml",
    ] {
        let text = std::fs::read_to_string(repo().join("workflows").join(name)).expect("example");
        let lines: Vec<&str> = text.lines().collect();
        for skip in 0..lines.len() {
            let mangled: Vec<&str> = lines
                .iter()
                .enumerate()
                .filter(|(i, _)| *i != skip)
                .map(|(_, l)| *l)
                .collect();
            let _ = nexus_engine::load_str(&mangled.join("\n"), Some(name));
        }
        for cut in (0..text.len()).step_by(7) {
            if text.is_char_boundary(cut) {
                let _ = nexus_engine::load_str(&text[..cut], Some(name));
            }
        }
        for (i, _) in text.char_indices().step_by(11) {
            let mut s = text.clone();
            s.insert(i, '\t');
            let _ = nexus_engine::load_str(&s, Some(name));
        }
    }
}

#[test]
fn diagnostics_name_file_line_column_and_a_cycle() {
    let yaml = "id: w\nsteps:\n  - id: a\n    kind: template\n    template: x\n    needs: [c]\n  - id: b\n    kind: template\n    template: x\n    needs: [a]\n  - id: c\n    kind: template\n    template: x\n    needs: [b]\n";
    let diags = nexus_engine::load_str(yaml, Some("w.yaml")).expect_err("cycle");
    let text = nexus_engine::diagnostic::render_all(&diags);
    assert!(text.starts_with("w.yaml:6:"), "{text}");
    assert!(
        text.contains("the steps form a cycle: a → b → c → a"),
        "{text}"
    );
}

async fn run(
    yaml: &str,
    cancel: tokio_util::sync::CancellationToken,
) -> (nexus_engine::RunReport, Vec<Event>) {
    let plan = Arc::new(
        nexus_engine::load_str(yaml, None)
            .unwrap_or_else(|d| panic!("{}", nexus_engine::diagnostic::render_all(&d))),
    );
    let inputs = nexus_engine::resolve_inputs(&plan, &Default::default())
        .unwrap_or_else(|d| panic!("{}", nexus_engine::diagnostic::render_all(&d)));
    let engine = Arc::new(Engine::new(vec![], None, EngineConfig::default()));
    let sink = Arc::new(CollectingSink::new());
    let report = engine
        .run(
            plan,
            inputs,
            RunOptions {
                run_id: None,
                cancel,
                sinks: vec![sink.clone() as Arc<dyn EventSink>],
                ..RunOptions::default()
            },
        )
        .await
        .expect("run");
    (report, sink.events())
}

#[tokio::test]
async fn conditions_skip_steps_and_their_dependants_and_outputs_render() {
    let yaml = r#"
id: w
inputs:
  mode: {default: short}
  n: {type: number, default: 3}
outputs:
  joined: "{{ steps.join.output }}"
  skipped: "{{ steps.long.output }}"
steps:
  - id: data
    kind: template
    format: json
    template: '{"items": [{% for i in range(inputs.n) %}{{ i }}{% if not loop.last %},{% endif %}{% endfor %}]}'
  - id: long
    kind: template
    when: inputs.mode == "long"
    template: long
  - id: after_long
    kind: template
    needs: [long]
    template: after
  - id: join
    kind: template
    needs: [data]
    template: '{{ steps.data.json["items"] | length }} items, mode {{ inputs.mode }}'
"#;
    let (report, events) = run(yaml, Default::default()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let by_id = |id: &str| {
        report
            .steps
            .iter()
            .find(|s| s.step_id == id)
            .expect("step")
            .clone()
    };
    assert_eq!(by_id("long").status, StepStatus::Skipped);
    assert_eq!(
        by_id("long").error.as_deref(),
        Some("its `when` condition is false")
    );
    assert_eq!(by_id("after_long").status, StepStatus::Skipped);
    assert_eq!(
        by_id("after_long").error.as_deref(),
        Some("dependency `long` was skipped")
    );
    assert_eq!(
        by_id("data").output_json,
        Some(serde_json::json!({"items": [0, 1, 2]}))
    );
    assert_eq!(report.outputs["joined"], "3 items, mode short");
    assert_eq!(report.outputs["skipped"], serde_json::Value::Null);
    assert_eq!(events.first().map(Event::name), Some("run_started"));
    assert_eq!(events.last().map(Event::name), Some("run_finished"));
}

#[tokio::test]
async fn a_template_that_fails_at_run_time_fails_its_step_only() {
    let yaml = "id: w\nsteps:\n  - id: bad\n    kind: template\n    format: json\n    template: not json\n  - id: fine\n    kind: template\n    template: ok\n";
    let (report, _) = run(yaml, Default::default()).await;
    assert_eq!(report.status, RunStatus::Failed);
    let bad = report
        .steps
        .iter()
        .find(|s| s.step_id == "bad")
        .expect("bad");
    assert!(
        bad.error
            .as_deref()
            .unwrap_or_default()
            .contains("not JSON")
    );
    let fine = report
        .steps
        .iter()
        .find(|s| s.step_id == "fine")
        .expect("fine");
    assert_eq!(fine.status, StepStatus::Succeeded);
}

#[tokio::test]
async fn a_cancelled_run_starts_no_step() {
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let (report, _) = run(
        "id: w\nsteps:\n  - id: a\n    kind: template\n    template: x\n",
        cancel,
    )
    .await;
    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(report.steps[0].status, StepStatus::Cancelled);
}

#[test]
fn missing_and_unknown_inputs_are_reported_with_the_fix() {
    let plan = nexus_engine::load_str("id: w\ninputs:\n  topic: {description: what to write about}\nsteps:\n  - id: a\n    kind: template\n    template: '{{ inputs.topic }}'\n", None).expect("valid");
    let diags = nexus_engine::resolve_inputs(&plan, &Default::default()).expect_err("missing");
    let text = nexus_engine::diagnostic::render_all(&diags);
    assert!(
        text.contains("required input `topic` was not given (what to write about)"),
        "{text}"
    );
    assert!(text.contains("--input topic=<string>"), "{text}");
    let given = [("topik".to_string(), "x".to_string())]
        .into_iter()
        .collect();
    let text = nexus_engine::diagnostic::render_all(
        &nexus_engine::resolve_inputs(&plan, &given).expect_err("unknown"),
    );
    assert!(text.contains("did you mean `topic`"), "{text}");
}

#[test]
fn retry_delays_follow_the_policy() {
    let policy = RetryPolicy {
        max_attempts: 5,
        initial_interval: Duration::from_millis(100),
        backoff_coefficient: 3.0,
        max_interval: Duration::from_millis(1000),
        jitter: false,
    };
    let delays: Vec<u128> = nexus_engine::run::retry_delays(&policy)
        .map(|d| d.as_millis())
        .collect();
    assert_eq!(delays, vec![100, 300, 900, 1000]);
    let jittered: Vec<Duration> = nexus_engine::run::retry_delays(&RetryPolicy {
        jitter: true,
        ..policy
    })
    .collect();
    assert_eq!(jittered.len(), 4);
    assert!(jittered[0] >= Duration::from_millis(100));
}
