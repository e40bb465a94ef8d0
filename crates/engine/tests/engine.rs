//! Engine tests without any model: validation corpus, format schema, no-panic on mangled
//! input, DAG semantics with template steps, retry delays.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

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
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        let text = serde_json::to_string_pretty(&generated).expect("schema as JSON");
        std::fs::write(&path, text + "\n").expect("write the schema");
    }
    let committed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_default())
            .unwrap_or_default();
    assert!(
        committed == generated,
        "schema/workflow.schema.json is stale: run `UPDATE_SCHEMA=1 cargo nextest run -p nexus-engine -E 'test(committed_json_schema)'` (or `nexus schema > schema/workflow.schema.json`)"
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

#[test]
fn every_error_class_has_one_taxonomy_row_and_the_readme_shows_the_table() {
    use nexus_engine::provider::{TAXONOMY, taxonomy_markdown};
    let mut kinds: Vec<&str> = TAXONOMY.iter().map(|r| r.kind.as_str()).collect();
    let n = kinds.len();
    kinds.sort_unstable();
    kinds.dedup();
    assert_eq!(kinds.len(), n, "a class appears twice");
    assert_eq!(n, 19, "every ProviderErrorKind has a row");
    for row in TAXONOMY {
        assert!(!row.source.is_empty() && !row.signals.is_empty(), "{row:?}");
        assert_eq!(
            nexus_engine::provider::ProviderErrorKind::parse(row.kind.as_str()),
            Some(row.kind)
        );
    }
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap_or_default();
    assert!(
        readme.contains(&taxonomy_markdown()),
        "README.md must contain the table printed by `nexus errors`"
    );
}

#[test]
fn the_builtin_catalog_parses_and_ranks_local_before_cloud_and_embedded_last() {
    use nexus_engine::provider::Locality;
    use nexus_engine::select::{ModelCatalog, SelectionInput, SelectorWeights, score};
    let catalog = ModelCatalog::builtin().expect("built-in catalog");
    let mini = catalog
        .lookup("openai", "gpt-4o-mini-2024-07-18")
        .expect("prefix match");
    assert_eq!(mini.name, "gpt-4o-mini");
    assert!(catalog.lookup("ollama", "llama3.1:8b").is_some());
    assert!(
        catalog.lookup("openai", "llama3.1").is_none(),
        "provider-specific entry"
    );
    let input = SelectionInput {
        prompt_tokens: 200,
        max_tokens: 256,
        ..SelectionInput::default()
    };
    let w = SelectorWeights::default();
    let local = score(
        Locality::Local,
        Some(131072),
        catalog.lookup("ollama", "llama3.1"),
        None,
        &input,
        &w,
    );
    let cloud = score(Locality::Cloud, Some(128000), Some(mini), None, &input, &w);
    assert!(
        local.total > cloud.total,
        "local {local:?} vs cloud {cloud:?}"
    );
    // A priced model costs something; a free one scores full cost marks.
    assert!(cloud.cost < 1.0 && local.cost == 1.0);
    // A user file extends and overrides.
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("models.yaml");
    std::fs::write(
        &file,
        "models:\n  - name: gpt-4o-mini\n    context_window: 1000\n    input_usd_per_mtok: 9\n",
    )
    .expect("write");
    let mut extended = catalog.clone();
    extended.extend_from_file(&file).expect("extend");
    assert_eq!(
        extended
            .lookup("openai", "gpt-4o-mini")
            .and_then(|e| e.context_window),
        Some(1000)
    );
    std::fs::write(&file, "weights: {quality: 0.9, locality: 0.0}\n").expect("write");
    extended.extend_from_file(&file).expect("weights");
    let w = extended.weights.expect("weights read");
    assert_eq!((w.quality, w.locality, w.reliability), (0.9, 0.0, 0.2));
    std::fs::write(&file, "models:\n  - name: x\n    prize: 1\n").expect("write");
    let err = extended.extend_from_file(&file).expect_err("unknown field");
    assert!(err.to_string().contains("models.yaml"), "{err}");
}

#[tokio::test]
async fn on_failure_skips_defaults_or_takes_the_alternate_branch() {
    let wf = r#"
id: failures
steps:
  - id: parse
    kind: template
    format: json
    template: "not json"
    on_failure: skip
  - id: after_skip
    kind: template
    needs: [parse]
    template: never
  - id: config
    kind: template
    format: json
    template: "{oops"
    on_failure:
      default: {retries: 3}
  - id: use_default
    kind: template
    needs: [config]
    template: "retries={{ steps.config.json.retries }}"
  - id: strict
    kind: template
    format: json
    template: "["
    on_failure:
      alternate: manual
  - id: normal_path
    kind: template
    needs: [strict]
    template: parsed
  - id: manual
    kind: template
    needs: [strict]
    template: "handled by hand"
outputs:
  value: "{{ steps.use_default.output }}"
"#;
    let (report, _) = run(wf, tokio_util::sync::CancellationToken::new()).await;
    let by = |id: &str| report.steps.iter().find(|s| s.step_id == id).expect(id);
    assert_eq!(
        report.status,
        nexus_engine::RunStatus::Succeeded,
        "{:?}",
        report.error
    );
    assert_eq!(by("parse").status, StepStatus::Skipped);
    assert_eq!(by("after_skip").status, StepStatus::Skipped);
    assert_eq!(by("config").status, StepStatus::Succeeded);
    assert_eq!(report.outputs["value"], "retries=3");
    assert_eq!(by("strict").status, StepStatus::Failed);
    assert!(by("strict").handled);
    assert_eq!(by("strict").fallbacks[0].rung, "on_failure");
    assert_eq!(by("normal_path").status, StepStatus::Skipped);
    assert_eq!(by("manual").status, StepStatus::Succeeded);
    assert_eq!(by("manual").output.as_deref(), Some("handled by hand"));
}

/// The example workflows as JSON values (what the schema describes), by file name.
fn example_workflow_values() -> Vec<(String, String, serde_json::Value)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(repo().join("workflows")).expect("workflows/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|x| x == "yaml") {
            let text = std::fs::read_to_string(&path).expect("readable");
            let value: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
            out.push((path.display().to_string(), text, value));
        }
    }
    assert!(out.len() >= 3);
    out
}

/// The JSON Schema accepts every example workflow and rejects a step that carries a field
/// of another kind or an unknown field, as the engine does.
#[test]
fn the_json_schema_accepts_the_examples_and_rejects_stray_step_fields() {
    let schema = nexus_engine::workflow::json_schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    for (name, _, value) in example_workflow_values() {
        let errors: Vec<String> = validator
            .iter_errors(&value)
            .map(|e| e.to_string())
            .collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
    }
    let dir = repo().join("tests/invalid");
    let mut rejected = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/invalid") {
        let path = entry.expect("entry").path();
        let text = std::fs::read_to_string(&path).expect("readable");
        let expect = text.lines().next().unwrap_or_default();
        if expect.contains("unexpected_field") || text.contains("promt:") {
            let value: serde_json::Value = serde_saphyr::from_str(&text).expect("YAML");
            assert!(
                !validator.is_valid(&value),
                "{}: the schema accepts a step the engine rejects",
                path.display()
            );
            rejected += 1;
        }
    }
    assert!(rejected >= 6, "only {rejected} stray-field files checked");
}

/// The located reader (`parse`) and the serde types read the same workflow from a file,
/// and the stored JSON copy (what `resume` reads back) is the same workflow again.
#[test]
fn the_located_reader_and_the_format_types_agree() {
    for (name, text, _) in example_workflow_values() {
        let parsed = nexus_engine::parse::parse_str(&text, Some(&name))
            .unwrap_or_else(|d| panic!("{d}"))
            .workflow;
        let typed: nexus_engine::Workflow =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed, typed, "{name}");
        let stored = serde_json::to_value(&parsed).expect("serializes");
        let back: nexus_engine::Workflow =
            serde_json::from_value(stored).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(parsed, back, "{name}");
    }
}

/// Model references are checked against the catalog's provider declarations: a cloud
/// provider is refused on a `local_only` step, a provider whose declaration makes the
/// model optional may be named alone, an undeclared one is named with the forms allowed.
#[test]
fn model_references_follow_the_catalogs_provider_declarations() {
    use nexus_engine::provider::Locality;
    use nexus_engine::select::ModelCatalog;
    let catalog = ModelCatalog::builtin().expect("built-in catalog");
    let cloud: Vec<&str> = catalog
        .providers
        .iter()
        .filter(|p| p.locality == Locality::Cloud)
        .map(|p| p.id.as_str())
        .collect();
    assert_eq!(cloud, ["openai", "anthropic"]);
    let step = |model: &str, local_only: bool| {
        format!(
            "id: w\nlocal_only: {local_only}\nsteps:\n  - id: a\n    kind: llm\n    prompt: hi\n    model: {{prefer: [\"{model}\"]}}\n"
        )
    };
    assert!(nexus_engine::load_str(&step("embedded", true), None).is_ok());
    assert!(nexus_engine::load_str(&step("ollama:llama3.1", true), None).is_ok());
    let errs = nexus_engine::load_str(&step("openai:gpt-4o-mini", true), None).unwrap_err();
    assert!(errs[0].message.contains("is a cloud model"), "{errs:?}");
    let errs = nexus_engine::load_str(&step("ollama", false), None).unwrap_err();
    assert!(errs[0].message.contains("has no model name"), "{errs:?}");
    // One host of a family (providers.yaml): the family's declaration applies, and an
    // instance's locality is left to the selector (`openai@lmstudio` may be local).
    assert!(nexus_engine::load_str(&step("ollama@gpu1:llama3.1", true), None).is_ok());
    assert!(nexus_engine::load_str(&step("openai@lmstudio:qwen", true), None).is_ok());
    assert!(nexus_engine::load_str(&step("anthropic@team:claude-3-5-haiku", false), None).is_ok());
    let errs = nexus_engine::load_str(&step("anthropic:claude-3-5-haiku", true), None).unwrap_err();
    assert!(errs[0].message.contains("is a cloud model"), "{errs:?}");
    let errs = nexus_engine::load_str(&step("ollama@:llama3.1", false), None).unwrap_err();
    assert!(
        errs[0].message.contains("names no provider after `@`"),
        "{errs:?}"
    );
    let errs = nexus_engine::load_str(&step("vllm@box:x", false), None).unwrap_err();
    assert!(
        errs[0].message.contains("unknown provider `vllm@box`"),
        "{errs:?}"
    );
    let errs = nexus_engine::load_str(&step("vllm:x", false), None).unwrap_err();
    assert_eq!(
        errs[0].hint.as_deref(),
        Some("write `ollama:<model>`, `openai:<model>`, `anthropic:<model>` or `embedded`")
    );
    // A user's file may add a provider declaration; the same id replaces the built-in one.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("models.yaml");
    std::fs::write(
        &path,
        "providers:\n  - {id: openai, locality: local, example: openai:local-model}\n",
    )
    .expect("write");
    let mut catalog = catalog;
    catalog.extend_from_file(&path).expect("extend");
    let openai: Vec<_> = catalog
        .providers
        .iter()
        .filter(|p| p.id == "openai")
        .collect();
    assert_eq!(openai.len(), 1);
    assert_eq!(openai[0].locality, Locality::Local);
}

fn cron_of(yaml: &str) -> nexus_engine::workflow::CronTrigger {
    let text = format!(
        "id: t\ntriggers:\n  - {yaml}\nsteps:\n  - id: a\n    kind: template\n    template: hi\n"
    );
    let plan = nexus_engine::load_str(&text, None).expect("valid");
    match &plan.workflow.triggers[0] {
        nexus_engine::workflow::Trigger::Cron(c) => c.clone(),
        other => panic!("not cron: {other:?}"),
    }
}

fn utc(s: &str) -> chrono::DateTime<chrono::Utc> {
    s.parse().expect("RFC 3339")
}

/// A schedule is read in its IANA zone, seconds are optional, and a daylight-saving
/// change moves a fire out of the skipped hour and fires a repeated hour once.
#[test]
fn cron_schedules_follow_their_time_zone_and_daylight_saving() {
    use nexus_engine::plan::Schedule;
    // 9:00 in Berlin is 08:00 UTC in winter and 07:00 UTC in summer.
    let s = Schedule::of(&cron_of(
        "{kind: cron, schedule: '0 9 * * *', timezone: Europe/Berlin}",
    ))
    .expect("schedule");
    assert_eq!(
        s.next_after(utc("2027-01-10T08:00:00Z")),
        Some(utc("2027-01-11T08:00:00Z"))
    );
    assert_eq!(
        s.next_after(utc("2027-07-01T06:59:59Z")),
        Some(utc("2027-07-01T07:00:00Z"))
    );
    // Six fields: seconds first.
    let s = Schedule::of(&cron_of(
        "{kind: cron, schedule: '*/30 * * * * *', timezone: UTC}",
    ))
    .expect("schedule");
    assert_eq!(
        s.next_after(utc("2027-01-10T08:00:00Z")),
        Some(utc("2027-01-10T08:00:30Z"))
    );
    // 02:30 does not exist in Berlin on 2027-03-28 (clocks jump from 02:00 to 03:00).
    let s = Schedule::of(&cron_of(
        "{kind: cron, schedule: '30 2 * * *', timezone: Europe/Berlin}",
    ))
    .expect("schedule");
    let after_gap = s
        .next_after(utc("2027-03-27T12:00:00Z"))
        .expect("a next fire");
    // The fire moves to the first time after the gap, 03:00 local (as Vixie cron does).
    assert_eq!(after_gap, utc("2027-03-28T01:00:00Z"));
    // 02:30 happens twice in Berlin on 2027-10-31 (clocks go back from 03:00 to 02:00).
    let first = s.next_after(utc("2027-10-30T12:00:00Z")).expect("first");
    let second = s.next_after(first).expect("second");
    assert!(
        second - first >= chrono::Duration::hours(23),
        "{first} then {second}"
    );
    assert!(
        Schedule::of(&nexus_engine::workflow::CronTrigger {
            timezone: Some("Mars/Olympus".into()),
            ..cron_of("{kind: cron, schedule: '0 9 * * *'}")
        })
        .is_err()
    );
}

/// An `agents_file` next to the workflow is merged with the inline agents (an inline one
/// replaces the file's of the same name), a `capability:` step gets every agent that
/// lists it, and a file outside the workflow's folder is refused at its place.
#[test]
fn agents_file_is_merged_and_must_stay_in_the_workflow_folder() {
    let dir = tempfile::tempdir().unwrap();
    let flows = dir.path().join("flows");
    std::fs::create_dir(&flows).unwrap();
    std::fs::write(
        flows.join("agents.yaml"),
        "agents:\n  shared: {system: \"You are shared.\", capabilities: [summarize]}\n  writer: {system: \"Old writer.\", capabilities: [translate]}\n",
    )
    .unwrap();
    let wf = "id: merged\nagents_file: agents.yaml\nagents:\n  writer: {system: \"New writer.\", capabilities: [summarize]}\nsteps:\n  - id: sum\n    kind: llm\n    capability: summarize\n    prompt: Summarize.\n";
    std::fs::write(flows.join("wf.yaml"), wf).unwrap();
    let plan = nexus_engine::load_file(&flows.join("wf.yaml"))
        .unwrap_or_else(|d| panic!("{}", nexus_engine::diagnostic::render_all(&d)));
    assert_eq!(plan.workflow.agents_file, None);
    assert_eq!(
        plan.workflow.agents["writer"].system.as_deref(),
        Some("New writer.")
    );
    let nexus_engine::plan::Action::Llm(llm) = &plan.steps[0].action else {
        panic!("an llm step");
    };
    let route = llm.route.as_ref().expect("a capability step is routed");
    let names: Vec<&str> = route.candidates.iter().map(|c| c.agent.as_str()).collect();
    assert_eq!(names, ["shared", "writer"]);

    std::fs::write(dir.path().join("outside.yaml"), "agents: {}\n").unwrap();
    let escaping = "id: escaping\nagents_file: ../outside.yaml\nsteps:\n  - id: a\n    kind: template\n    template: hi\n";
    std::fs::write(flows.join("escaping.yaml"), escaping).unwrap();
    let diags = nexus_engine::load_file(&flows.join("escaping.yaml")).unwrap_err();
    let d = &diags[0];
    assert_eq!(d.code.as_str(), "invalid_value", "{d}");
    assert!(d.message.contains("outside the workflow's folder"), "{d}");
    assert_eq!(d.span.map(|s| s.line), Some(2));
}
