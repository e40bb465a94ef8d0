//! Control flow without a model: `map` (concurrency, order, item errors, tolerance,
//! nesting), `loop` (state, `until`, the cap), `switch` and the join rules, and resuming
//! runs interrupted inside bodies. Body steps are `template` steps, and `approval` steps
//! answered by a test handler that holds each question until the test lets it go (the
//! engine's own human-handler interface, so the engine runs as it does for a person).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use nexus_engine::events::{CollectingSink, Event, EventSink, RunStatus, StepStatus};
use nexus_engine::human::{HumanDecision, HumanHandler, HumanRequest};
use nexus_engine::store::StepRecord;
use nexus_engine::{Engine, EngineConfig, RunOptions, RunReport};
use serde_json::json;

fn plan(yaml: &str) -> Arc<nexus_engine::Plan> {
    Arc::new(
        nexus_engine::load_str(yaml, Some("flow.yaml"))
            .unwrap_or_else(|d| panic!("{}", nexus_engine::diagnostic::render_all(&d))),
    )
}

async fn run_with(yaml: &str, options: RunOptions) -> (RunReport, Vec<Event>) {
    let plan = plan(yaml);
    let inputs = nexus_engine::resolve_inputs(&plan, &Default::default())
        .unwrap_or_else(|d| panic!("{}", nexus_engine::diagnostic::render_all(&d)));
    let engine = Arc::new(Engine::new(vec![], None, EngineConfig::default()));
    let sink = Arc::new(CollectingSink::new());
    let mut options = options;
    options.sinks.push(sink.clone() as Arc<dyn EventSink>);
    let report = engine.run(plan, inputs, options).await.expect("run");
    (report, sink.events())
}

async fn run(yaml: &str) -> RunReport {
    run_with(yaml, RunOptions::default()).await.0
}

fn step<'a>(report: &'a RunReport, id: &str) -> &'a StepRecord {
    report
        .steps
        .iter()
        .find(|s| s.step_id == id)
        .unwrap_or_else(|| {
            let ids: Vec<&str> = report.steps.iter().map(|s| s.step_id.as_str()).collect();
            panic!("no record `{id}`; records: {ids:?}")
        })
}

fn json_of(report: &RunReport, id: &str) -> serde_json::Value {
    step(report, id).output_json.clone().unwrap_or_default()
}

/// Holds each approval question until the test's driver releases it; counts how many
/// wait at once.
#[derive(Default)]
struct Gate {
    waiting: Mutex<Vec<(usize, tokio::sync::oneshot::Sender<()>)>>,
    changed: tokio::sync::Notify,
    most_at_once: AtomicUsize,
}

#[async_trait]
impl HumanHandler for Gate {
    async fn decide(&self, request: &HumanRequest) -> Option<HumanDecision> {
        let HumanRequest::Approval { message, .. } = request else {
            return None;
        };
        let k: usize = message
            .trim_start_matches("item ")
            .parse()
            .expect("item number");
        let (tx, rx) = tokio::sync::oneshot::channel();
        {
            let mut w = self.waiting.lock().unwrap();
            w.push((k, tx));
            self.most_at_once.fetch_max(w.len(), Ordering::SeqCst);
        }
        self.changed.notify_one();
        rx.await.ok()?;
        Some(HumanDecision::Approve)
    }
}

impl Gate {
    /// Lets `total` questions go, one at a time, each once `expect(released)` of them
    /// wait, the newest first (so items finish in another order than they started).
    async fn drive(&self, total: usize, expect: impl Fn(usize) -> usize) {
        for released in 0..total {
            loop {
                let notified = self.changed.notified();
                if self.waiting.lock().unwrap().len() >= expect(released) {
                    break;
                }
                notified.await;
            }
            let mut w = self.waiting.lock().unwrap();
            let newest = (0..w.len()).max_by_key(|&j| w[j].0).unwrap();
            let (_, tx) = w.remove(newest);
            let _ = tx.send(());
        }
    }
}

const GATED_MAP: &str = r#"
id: gated
steps:
  - id: list
    kind: template
    format: json
    template: '[{% for i in range(7) %}{{ i }}{% if not loop.last %},{% endif %}{% endfor %}]'
  - id: each
    kind: map
    needs: [list]
    items: steps.list.json
    concurrency: 3
    steps:
      - id: ask
        kind: approval
        prompt: "item {{ index }}"
      - id: done
        kind: template
        needs: [ask]
        template: "{{ item }}-done"
"#;

/// At most `concurrency` items are in flight, the map uses all of them, and the results
/// are in input order although the items finish newest first.
#[tokio::test]
async fn a_map_runs_at_most_concurrency_items_and_keeps_input_order() {
    let gate = Arc::new(Gate::default());
    let driver = {
        let gate = Arc::clone(&gate);
        // Three wait at once until fewer than three items are left to start.
        tokio::spawn(async move { gate.drive(7, |released| 3.min(7 - released)).await })
    };
    let options = RunOptions {
        human: Some(gate.clone() as Arc<dyn HumanHandler>),
        ..RunOptions::default()
    };
    let (report, _) = tokio::time::timeout(Duration::from_secs(60), run_with(GATED_MAP, options))
        .await
        .expect("the map never had three items in flight");
    driver.await.unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(gate.most_at_once.load(Ordering::SeqCst), 3);
    let out = json_of(&report, "each");
    let want: Vec<String> = (0..7).map(|i| format!("{i}-done")).collect();
    assert_eq!(out["results"], json!(want));
    assert_eq!(out["succeeded"], 7);
    // Every item's steps are recorded under their path.
    for k in 0..7 {
        assert_eq!(
            step(&report, &format!("each[{k}].ask")).status,
            StepStatus::Succeeded
        );
        assert_eq!(
            step(&report, &format!("each[{k}].done")).output.as_deref(),
            Some(format!("{k}-done").as_str())
        );
    }
}

fn failing_map(mode: &str, extra: &str) -> String {
    format!(
        r#"
id: failing
steps:
  - id: each
    kind: map
    items: '[1, 2, 0, 4, 0, 6]'
    concurrency: 1
    on_item_error: {mode}
    {extra}
    steps:
      - id: check
        kind: template
        format: json
        template: '{{% if item == 0 %}}not json{{% else %}}{{{{ item * 10 }}}}{{% endif %}}'
  - id: after
    kind: template
    needs: [each]
    template: "{{{{ steps.each.json.results | length }}}}"
"#
    )
}

#[tokio::test]
async fn fail_fast_stops_at_the_first_failed_item() {
    let report = run(&failing_map("fail_fast", "")).await;
    assert_eq!(report.status, RunStatus::Failed);
    let each = step(&report, "each");
    assert_eq!(each.status, StepStatus::Failed);
    let error = each.error.as_deref().unwrap_or_default();
    assert!(error.contains("1 of 6 items failed (item 2:"), "{error}");
    let items = &each.output_json.as_ref().unwrap()["items"];
    let states: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        states,
        [
            "succeeded",
            "succeeded",
            "failed",
            "not_run",
            "not_run",
            "not_run"
        ]
    );
    assert!(
        report
            .steps
            .iter()
            .all(|s| !s.step_id.starts_with("each[3]"))
    );
    assert_eq!(step(&report, "after").status, StepStatus::Skipped);
}

#[tokio::test]
async fn continue_keeps_failed_items_as_null_and_drop_leaves_them_out() {
    let (report, events) = run_with(&failing_map("continue", ""), RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    // One progress event per item, counting up to all six with the two failures.
    let progress: Vec<(u32, u32, u32)> = events
        .iter()
        .filter_map(|e| match e {
            Event::MapProgress {
                done,
                failed,
                total,
                ..
            } => Some((*done, *failed, *total)),
            _ => None,
        })
        .collect();
    assert_eq!(
        progress,
        [
            (1, 0, 6),
            (2, 0, 6),
            (3, 1, 6),
            (4, 1, 6),
            (5, 2, 6),
            (6, 2, 6)
        ]
    );
    let out = json_of(&report, "each");
    assert_eq!(out["results"], json!([10, 20, null, 40, null, 60]));
    assert_eq!(
        (out["succeeded"].clone(), out["failed"].clone()),
        (json!(4), json!(2))
    );
    assert_eq!(step(&report, "each[2].check").status, StepStatus::Failed);
    assert_eq!(step(&report, "after").output.as_deref(), Some("6"));

    let report = run(&failing_map("drop", "")).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(json_of(&report, "each")["results"], json!([10, 20, 40, 60]));
    assert_eq!(step(&report, "after").output.as_deref(), Some("4"));
}

#[tokio::test]
async fn a_tolerance_fails_the_map_when_more_items_fail() {
    let within = run(&failing_map("continue", "tolerated_failures: 2")).await;
    assert_eq!(step(&within, "each").status, StepStatus::Succeeded);
    let over = run(&failing_map("continue", "tolerated_failures: 1")).await;
    let each = step(&over, "each");
    assert_eq!(each.status, StepStatus::Failed);
    assert!(
        each.error
            .as_deref()
            .unwrap()
            .contains("2 of 6 items failed"),
        "{:?}",
        each.error
    );
    // 2 of 6 is 33 %.
    let pct = run(&failing_map("drop", "tolerated_failure_percent: 30")).await;
    assert_eq!(step(&pct, "each").status, StepStatus::Failed);
    let pct = run(&failing_map("drop", "tolerated_failure_percent: 34")).await;
    assert_eq!(step(&pct, "each").status, StepStatus::Succeeded);
}

#[tokio::test]
async fn maps_nest_and_read_the_enclosing_item_and_steps() {
    let report = run(r#"
id: nested
inputs:
  sep: {default: "x"}
steps:
  - id: sizes
    kind: template
    format: json
    template: '{"rows": [[1, 2], [3], []]}'
  - id: rows
    kind: map
    needs: [sizes]
    items: steps.sizes.json.rows
    as: row
    index_as: r
    steps:
      - id: cells
        kind: map
        items: row
        as: cell
        steps:
          - id: show
            kind: template
            template: "{{ r }}{{ inputs.sep }}{{ index }}={{ cell }} of {{ steps.sizes.json.rows | length }}"
"#)
    .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(
        step(&report, "rows[0].cells[1].show").output.as_deref(),
        Some("0x1=2 of 3")
    );
    assert_eq!(
        step(&report, "rows[1].cells[0].show").output.as_deref(),
        Some("1x0=3 of 3")
    );
    let rows = json_of(&report, "rows");
    assert_eq!(
        rows["results"][0]["results"],
        json!(["0x0=1 of 3", "0x1=2 of 3"])
    );
    assert_eq!(rows["results"][2]["results"], json!([]));
    assert_eq!(step(&report, "rows[2].cells").status, StepStatus::Succeeded);
}

#[tokio::test]
async fn a_map_over_something_that_is_not_a_list_fails_with_what_it_got() {
    let report = run("id: m\nsteps:\n  - id: each\n    kind: map\n    items: '{\"a\": 1}'\n    steps:\n      - id: x\n        kind: template\n        template: hi\n").await;
    let each = step(&report, "each");
    assert_eq!(each.status, StepStatus::Failed);
    assert_eq!(
        each.error.as_deref(),
        Some("`items` is an object, not a list; give an expression whose value is a JSON array")
    );
}

const LOOP: &str = r#"
id: refine
inputs:
  target: {type: number, default: 3}
steps:
  - id: seed
    kind: template
    template: draft
  - id: rounds
    kind: loop
    needs: [seed]
    max_iterations: 10
    state:
      text: "{{ steps.seed.output }}"
      score: 0
    set:
      text: steps.revise.output
      score: state.score + 1
    until: state.score >= inputs.target
    steps:
      - id: revise
        kind: template
        template: "{{ state.text }}+r{{ iteration }}"
"#;

#[tokio::test]
async fn a_loop_carries_its_state_and_stops_when_until_holds() {
    let report = run(LOOP).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let out = json_of(&report, "rounds");
    assert_eq!(out["iterations"], 3);
    assert_eq!(out["stopped_by"], "until");
    assert_eq!(out["state"], json!({"text": "draft+r0+r1+r2", "score": 3}));
    assert_eq!(
        step(&report, "rounds[1].revise").output.as_deref(),
        Some("draft+r0+r1")
    );
    assert!(report.steps.iter().all(|s| s.step_id != "rounds[3].revise"));
}

#[tokio::test]
async fn a_loop_at_its_cap_succeeds_or_fails_as_written() {
    let capped = LOOP.replace("max_iterations: 10", "max_iterations: 2");
    let report = run(&capped).await;
    let out = json_of(&report, "rounds");
    assert_eq!(step(&report, "rounds").status, StepStatus::Succeeded);
    assert_eq!(
        (out["iterations"].clone(), out["stopped_by"].clone()),
        (json!(2), json!("max_iterations"))
    );

    let failing = capped.replace(
        "max_iterations: 2",
        "max_iterations: 2\n    on_max_iterations: fail",
    );
    let report = run(&failing).await;
    let rounds = step(&report, "rounds");
    assert_eq!(rounds.status, StepStatus::Failed);
    assert!(
        rounds
            .error
            .as_deref()
            .unwrap()
            .contains("`until` did not hold within `max_iterations` (2)")
    );
    assert_eq!(report.status, RunStatus::Failed);
}

fn switch_workflow(kind: &str) -> String {
    format!(
        r#"
id: route
inputs:
  kind: {{default: "{kind}"}}
steps:
  - id: route
    kind: switch
    cases:
      - name: bug
        when: inputs.kind == "bug"
        then: [fix]
      - name: docs
        when: inputs.kind == "docs"
        then: [write, review]
    default: [triage]
  - id: fix
    kind: template
    template: fixed
  - id: write
    kind: template
    template: written
  - id: review
    kind: template
    needs: [write]
    template: "reviewed {{{{ steps.write.output }}}}"
  - id: triage
    kind: template
    template: triaged
  - id: join
    kind: template
    needs: [fix, review, triage]
    trigger_rule: none_failed_min_one_success
    template: "done ({{{{ steps.route.output }}}})"
  - id: strict
    kind: template
    needs: [fix, review, triage]
    template: never
"#
    )
}

#[tokio::test]
async fn a_switch_runs_the_case_taken_and_skips_the_others() {
    for (kind, ran, skipped) in [
        ("bug", vec!["fix"], vec!["write", "review", "triage"]),
        ("docs", vec!["write", "review"], vec!["fix", "triage"]),
        ("other", vec!["triage"], vec!["fix", "write", "review"]),
    ] {
        let report = run(&switch_workflow(kind)).await;
        assert_eq!(
            report.status,
            RunStatus::Succeeded,
            "{kind}: {:?}",
            report.error
        );
        for id in ran {
            assert_eq!(
                step(&report, id).status,
                StepStatus::Succeeded,
                "{kind}: {id}"
            );
        }
        for id in skipped {
            let rec = step(&report, id);
            assert_eq!(rec.status, StepStatus::Skipped, "{kind}: {id}");
        }
        let case = if kind == "other" { "default" } else { kind };
        assert_eq!(step(&report, "route").output.as_deref(), Some(case));
        assert_eq!(
            step(&report, "join").output.as_deref(),
            Some(format!("done ({case})").as_str())
        );
        // The default rule (all_success) after the branches: never runs.
        assert_eq!(step(&report, "strict").status, StepStatus::Skipped);
    }
    let report = run(&switch_workflow("bug")).await;
    assert_eq!(
        step(&report, "triage").error.as_deref(),
        Some("not on the branch switch `route` took (case `bug`)")
    );
}

/// Every join rule against dependencies that succeeded (`ok`), failed (`bad`), were
/// skipped by a false condition (`off`), or were skipped because their own dependency
/// failed (`after_bad`, Airflow's `upstream_failed`).
#[tokio::test]
async fn join_rules_follow_the_table() {
    // (rule, dependencies, runs?)
    let table: &[(&str, &[&str], bool)] = &[
        ("all_success", &["ok", "ok2"], true),
        ("all_success", &["ok", "off"], false),
        ("all_success", &["ok", "bad"], false),
        ("all_done", &["ok", "bad", "off"], true),
        ("one_success", &["bad", "off", "ok"], true),
        ("one_success", &["bad", "off"], false),
        ("one_failed", &["ok", "bad"], true),
        ("one_failed", &["ok", "off"], false),
        ("one_failed", &["ok", "after_bad"], true),
        ("all_failed", &["bad", "after_bad"], true),
        ("all_failed", &["bad", "ok"], false),
        ("none_failed", &["ok", "off"], true),
        ("none_failed", &["off"], true),
        ("none_failed", &["ok", "bad"], false),
        ("none_failed", &["ok", "after_bad"], false),
        ("none_failed_min_one_success", &["ok", "off"], true),
        ("none_failed_min_one_success", &["off"], false),
        ("none_failed_min_one_success", &["ok", "after_bad"], false),
    ];
    for (rule, deps, runs) in table {
        let yaml = format!(
            r#"
id: join
steps:
  - id: ok
    kind: template
    template: a
  - id: ok2
    kind: template
    template: b
  - id: bad
    kind: template
    format: json
    template: not json
  - id: off
    kind: template
    when: "false"
    template: c
  - id: after_bad
    kind: template
    needs: [bad]
    template: d
  - id: target
    kind: template
    needs: [{deps}]
    trigger_rule: {rule}
    template: ran
  - id: below
    kind: template
    needs: [target]
    trigger_rule: none_failed
    template: below
"#,
            deps = deps.join(", ")
        );
        let report = run(&yaml).await;
        let target = step(&report, "target");
        let want = if *runs {
            StepStatus::Succeeded
        } else {
            StepStatus::Skipped
        };
        assert_eq!(
            target.status, want,
            "{rule} after {deps:?}: {:?}",
            target.error
        );
        // A skip because of a failure travels down; any other skip does not.
        let failed_above = !runs
            && deps.iter().any(|d| *d == "bad" || *d == "after_bad")
            && !matches!(*rule, "one_failed" | "all_failed");
        let below = step(&report, "below").status;
        let want_below = if failed_above {
            StepStatus::Skipped
        } else {
            StepStatus::Succeeded
        };
        assert_eq!(below, want_below, "below {rule} after {deps:?}");
    }
}

/// A run interrupted inside a map and a loop (some item and iteration steps stored,
/// others not) resumes from the stored records: no stored step runs again, the others
/// run, and the outputs equal those of an uninterrupted run.
#[tokio::test]
async fn a_run_resumed_inside_a_map_and_a_loop_runs_only_what_is_missing() {
    let yaml = r#"
id: resume
steps:
  - id: each
    kind: map
    items: '[1, 2, 3, 4]'
    steps:
      - id: a
        kind: template
        template: "a{{ item }}"
      - id: b
        kind: template
        needs: [a]
        template: "{{ steps.a.output }}b"
  - id: rounds
    kind: loop
    needs: [each]
    max_iterations: 3
    state: {acc: ""}
    set: {acc: steps.add.output}
    steps:
      - id: add
        kind: template
        template: "{{ state.acc }}{{ iteration }}"
"#;
    let (full, _) = run_with(yaml, RunOptions::default()).await;
    assert_eq!(full.status, RunStatus::Succeeded, "{:?}", full.error);
    // What a crash could have left: items 0 and 2 complete, item 1 half done, the
    // loop's first iteration done; nothing of the map or loop steps themselves.
    let kept_ids = [
        "each[0].a",
        "each[0].b",
        "each[1].a",
        "each[2].a",
        "each[2].b",
        "rounds[0].add",
    ];
    let kept: Vec<StepRecord> = full
        .steps
        .iter()
        .filter(|s| kept_ids.contains(&s.step_id.as_str()))
        .cloned()
        .collect();
    assert_eq!(kept.len(), kept_ids.len());
    let options = RunOptions {
        run_id: Some(full.run_id.clone()),
        resume: Some(kept.clone()),
        ..RunOptions::default()
    };
    let (resumed, events) = run_with(yaml, options).await;
    assert_eq!(resumed.status, RunStatus::Succeeded, "{:?}", resumed.error);
    let ran: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            Event::StepSucceeded { step_id, .. } => Some(step_id.clone()),
            _ => None,
        })
        .collect();
    for id in kept_ids {
        assert!(!ran.iter().any(|r| r == id), "`{id}` ran again");
        let before = kept.iter().find(|k| k.step_id == id).unwrap();
        assert_eq!(step(&resumed, id).started_at, before.started_at, "{id}");
    }
    for id in [
        "each[1].b",
        "each[3].a",
        "each[3].b",
        "rounds[1].add",
        "rounds[2].add",
        "each",
        "rounds",
    ] {
        assert!(ran.iter().any(|r| r == id), "`{id}` did not run: {ran:?}");
    }
    let by_id = |r: &RunReport| -> BTreeMap<String, Option<String>> {
        r.steps
            .iter()
            .map(|s| (s.step_id.clone(), s.output.clone()))
            .collect()
    };
    assert_eq!(by_id(&resumed), by_id(&full));
}

/// Writes workflow files into a temporary folder; returns it and the first file's path.
fn files(list: &[(&str, &str)]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in list {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let first = dir.path().join(list[0].0);
    (dir, first)
}

const CHILD: &str = r#"
id: child
inputs:
  topic: {}
  times: {type: number, default: 2}
outputs:
  summary: "{{ steps.say.output }}"
steps:
  - id: say
    kind: template
    template: "{{ inputs.topic }} x{{ inputs.times }}"
"#;

async fn run_file(path: &std::path::Path, options: RunOptions) -> RunReport {
    let plan = Arc::new(
        nexus_engine::load_file(path)
            .unwrap_or_else(|d| panic!("{}", nexus_engine::diagnostic::render_all(&d))),
    );
    let inputs = nexus_engine::resolve_inputs(&plan, &Default::default()).unwrap();
    let engine = Arc::new(Engine::new(vec![], None, EngineConfig::default()));
    engine.run(plan, inputs, options).await.expect("run")
}

#[tokio::test]
async fn a_sub_workflow_runs_with_its_inputs_and_its_outputs_become_the_steps() {
    let (_dir, parent) = files(&[
        (
            "parent.yaml",
            r#"
id: parent
steps:
  - id: topic
    kind: template
    template: tea
  - id: call
    kind: workflow
    needs: [topic]
    workflow: child.yaml
    inputs:
      topic: "{{ steps.topic.output }}"
      times: 3
  - id: after
    kind: template
    needs: [call]
    template: "got {{ steps.call.json.summary }}"
"#,
        ),
        ("child.yaml", CHILD),
    ]);
    let report = run_file(&parent, RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let call = step(&report, "call");
    assert_eq!(call.output.as_deref(), Some("tea x3"));
    let input: serde_json::Value = serde_json::from_str(call.input.as_deref().unwrap()).unwrap();
    assert_eq!(input["run_id"], format!("{}.call", report.run_id));
    assert_eq!(input["inputs"], json!({"topic": "tea", "times": 3}));
    assert_eq!(step(&report, "after").output.as_deref(), Some("got tea x3"));
}

#[tokio::test]
async fn a_failed_sub_workflow_fails_the_step_with_the_childs_run_and_error() {
    let failing_child = CHILD.replace(
        "template: \"{{ inputs.topic }} x{{ inputs.times }}\"",
        "format: json\n    template: \"not json {{ inputs.topic }}\"",
    );
    let (_dir, parent) = files(&[
        (
            "parent.yaml",
            "id: parent\nsteps:\n  - id: call\n    kind: workflow\n    workflow: child.yaml\n    inputs: {topic: tea}\n",
        ),
        ("child.yaml", &failing_child),
    ]);
    let report = run_file(&parent, RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = step(&report, "call").error.clone().unwrap();
    let child_id = format!("{}.call", report.run_id);
    assert!(
        error.contains(&format!("the child run {child_id} of `")),
        "{error}"
    );
    assert!(
        error.contains("ended failed: step(s) failed: say: "),
        "{error}"
    );
}

/// Answers nothing: each question waits until the run is cancelled; says when asked.
#[derive(Default)]
struct Never {
    asked: tokio::sync::Notify,
}

#[async_trait]
impl HumanHandler for Never {
    async fn decide(&self, _request: &HumanRequest) -> Option<HumanDecision> {
        self.asked.notify_one();
        std::future::pending().await
    }
}

#[tokio::test]
async fn cancelling_the_parent_cancels_the_child_run() {
    let (_dir, parent) = files(&[
        (
            "parent.yaml",
            "id: parent\nsteps:\n  - id: call\n    kind: workflow\n    workflow: child.yaml\n",
        ),
        (
            "child.yaml",
            "id: child\nsteps:\n  - id: wait\n    kind: approval\n    prompt: go on?\n",
        ),
    ]);
    let never = Arc::new(Never::default());
    let cancel = tokio_util::sync::CancellationToken::new();
    let options = RunOptions {
        cancel: cancel.clone(),
        human: Some(never.clone() as Arc<dyn HumanHandler>),
        ..RunOptions::default()
    };
    let run = tokio::spawn(async move { run_file(&parent, options).await });
    never.asked.notified().await;
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the cancel reached the child")
        .unwrap();
    assert_eq!(report.status, RunStatus::Cancelled);
    let call = step(&report, "call");
    assert_eq!(call.status, StepStatus::Cancelled);
    assert!(call.error.as_deref().unwrap().contains("was cancelled"));
}

#[test]
fn files_that_call_each_other_are_rejected_with_the_chain() {
    let call = |target: &str| {
        format!("id: w\nsteps:\n  - id: call\n    kind: workflow\n    workflow: {target}\n")
    };
    let (_dir, a) = files(&[
        ("a.yaml", &call("b.yaml")),
        ("b.yaml", &call("c.yaml")),
        ("c.yaml", &call("a.yaml")),
    ]);
    let diags = nexus_engine::load_file(&a).expect_err("a cycle");
    let text = nexus_engine::diagnostic::render_all(&diags);
    assert!(
        text.contains(
            "workflow files call each other in a cycle: a.yaml → b.yaml → c.yaml → a.yaml"
        ),
        "{text}"
    );
    assert!(
        diags
            .iter()
            .all(|d| d.code == nexus_engine::DiagnosticCode::Cycle),
        "{text}"
    );
    // A file that calls itself.
    let (_dir, me) = files(&[("me.yaml", &call("me.yaml"))]);
    let text = nexus_engine::diagnostic::render_all(&nexus_engine::load_file(&me).err().unwrap());
    assert!(text.contains("cycle: me.yaml → me.yaml"), "{text}");
}

#[test]
fn a_sub_workflow_call_is_checked_against_the_childs_inputs() {
    let (_dir, parent) = files(&[
        (
            "parent.yaml",
            "id: p\nsteps:\n  - id: call\n    kind: workflow\n    workflow: child.yaml\n    inputs: {topik: tea}\n  - id: typed\n    kind: workflow\n    workflow: child.yaml\n    inputs: {topic: tea, times: many}\n  - id: missing\n    kind: workflow\n    workflow: nowhere.yaml\n",
        ),
        ("child.yaml", CHILD),
    ]);
    let text =
        nexus_engine::diagnostic::render_all(&nexus_engine::load_file(&parent).err().unwrap());
    assert!(
        text.contains("`inputs.topik` is not an input of `"),
        "{text}"
    );
    assert!(text.contains("declares: times, topic"), "{text}");
    assert!(
        text.contains("child.yaml` needs the input `topic`, which the step does not give"),
        "{text}"
    );
    assert!(text.contains("cannot read the sub-workflow `"), "{text}");
    assert!(
        text.contains("`inputs.times` is `\"many\"`, but `"),
        "{text}"
    );
    assert!(text.contains("declares it a number"), "{text}");
}

fn handled_workflow(fetch: &str) -> String {
    format!(
        r#"
id: data
steps:
  - id: fetch
    kind: template
    format: json
    template: '{fetch}'
    on_error: [handle_fetch]
  - id: handle_fetch
    kind: template
    template: "{{{{ error.step }}}} failed: {{{{ error.message }}}}"
  - id: use_backup
    kind: template
    needs: [handle_fetch]
    format: json
    template: '{{"rows": [9]}}'
  - id: transform
    kind: template
    needs: [fetch, use_backup]
    trigger_rule: none_failed_min_one_success
    template: "{{% if steps.fetch is defined %}}{{{{ steps.fetch.json.rows }}}}{{% else %}}{{{{ steps.use_backup.json.rows }}}}{{% endif %}}"
"#
    )
}

/// seeds/003's `onError`: a failed step hands over to its handler, which reads the error;
/// the backup path joins the main path again, and the run does not fail.
#[tokio::test]
async fn on_error_handlers_read_the_error_and_the_run_goes_on() {
    let report = run(&handled_workflow("not json")).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let fetch = step(&report, "fetch");
    assert_eq!(fetch.status, StepStatus::Failed);
    assert!(fetch.handled);
    assert_eq!(
        fetch.fallbacks.last().map(|f| f.rung.as_str()),
        Some("on_error")
    );
    let handled = step(&report, "handle_fetch").output.clone().unwrap();
    assert!(
        handled.starts_with("fetch failed: template failed: rendered text is not JSON"),
        "{handled}"
    );
    assert_eq!(step(&report, "transform").output.as_deref(), Some("[9]"));

    // Without a failure the handlers are skipped and the main path's output is used.
    let report = run(&handled_workflow(r#"{"rows": [1, 2]}"#)).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(step(&report, "handle_fetch").status, StepStatus::Skipped);
    assert_eq!(step(&report, "use_backup").status, StepStatus::Skipped);
    assert_eq!(step(&report, "transform").output.as_deref(), Some("[1, 2]"));
}

const WAIT: &str = r#"
id: wait
steps:
  - id: before
    kind: template
    template: done
  - id: pause
    kind: wait
    needs: [before]
    duration: 1h
  - id: after
    kind: template
    needs: [pause]
    template: "after {{ steps.pause.output }}"
"#;

/// A resumed wait counts from when its dependencies finished, as stored: a wait whose
/// time has passed while the process was down finishes at once.
#[tokio::test]
async fn a_resumed_wait_waits_only_for_what_is_left() {
    let (full, _) = {
        // The stored record of `before`, as if the run was interrupted two hours ago.
        let plan = plan(WAIT);
        let inputs = nexus_engine::resolve_inputs(&plan, &Default::default()).unwrap();
        let engine = Arc::new(Engine::new(vec![], None, EngineConfig::default()));
        let cancel = tokio_util::sync::CancellationToken::new();
        let sink = Arc::new(CancelOnStart {
            step: "pause".into(),
            cancel: cancel.clone(),
        });
        let options = RunOptions {
            cancel,
            sinks: vec![sink as Arc<dyn EventSink>],
            ..RunOptions::default()
        };
        (engine.run(plan, inputs, options).await.unwrap(), ())
    };
    // Cancelled while waiting: the wait said so.
    let pause = step(&full, "pause");
    assert_eq!(pause.status, StepStatus::Cancelled);
    assert!(
        pause
            .error
            .as_deref()
            .unwrap()
            .starts_with("cancelled while waiting until ")
    );

    let mut before = step(&full, "before").clone();
    before.started_at = chrono::Utc::now() - chrono::Duration::hours(2);
    let finished_at = before.started_at + chrono::Duration::milliseconds(before.duration_ms as i64);
    let options = RunOptions {
        run_id: Some(full.run_id.clone()),
        resume: Some(vec![before]),
        ..RunOptions::default()
    };
    let (report, _) = tokio::time::timeout(Duration::from_secs(30), run_with(WAIT, options))
        .await
        .expect("the wait's time had passed");
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let want = (finished_at + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    assert_eq!(
        step(&report, "pause").output.as_deref(),
        Some(want.as_str())
    );
    assert_eq!(step(&report, "after").output, Some(format!("after {want}")));
}

#[tokio::test]
async fn a_wait_for_a_time_already_past_finishes_at_once() {
    let yaml = "id: w\ninputs:\n  at: {default: \"2020-01-01T00:00:00Z\"}\nsteps:\n  - id: pause\n    kind: wait\n    until: \"{{ inputs.at }}\"\n";
    let report = tokio::time::timeout(Duration::from_secs(30), run(yaml))
        .await
        .expect("finished at once");
    assert_eq!(
        step(&report, "pause").output.as_deref(),
        Some("2020-01-01T00:00:00.000Z")
    );
    let bad = run(&yaml.replace("2020-01-01T00:00:00Z", "next tuesday")).await;
    let error = step(&bad, "pause").error.clone().unwrap();
    assert!(
        error.contains("`until` rendered `next tuesday`, which is not an RFC 3339 time"),
        "{error}"
    );
}

/// Cancels the run when step `step` starts.
struct CancelOnStart {
    step: String,
    cancel: tokio_util::sync::CancellationToken,
}

impl EventSink for CancelOnStart {
    fn emit(&self, event: &Event) {
        if let Event::StepStarted { step_id, .. } = event
            && *step_id == self.step
        {
            self.cancel.cancel();
        }
    }
}

/// A failed run starts its workflow's failure handler (seeds/003's `errorHandlers`) with
/// the facts the handler declares; a run that succeeds does not.
#[tokio::test]
async fn a_failed_run_runs_its_failure_handler_with_the_failed_steps() {
    let handler = r#"
id: handler
inputs:
  run_id: {}
  failed_steps: {type: json}
outputs:
  said: "{{ steps.log.output }}"
steps:
  - id: log
    kind: template
    template: "{{ inputs.failed_steps | length }} failed in {{ inputs.run_id }}: {{ inputs.failed_steps[0].step }}"
"#;
    let failing = "id: main\non_failure: {workflow: handler.yaml}\nsteps:\n  - id: parse\n    kind: template\n    format: json\n    template: nope\n";
    let (_dir, main) = files(&[("main.yaml", failing), ("handler.yaml", handler)]);
    let report = run_file(&main, RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Failed);
    let (id, status) = report.on_failure_run.clone().expect("the handler ran");
    assert_eq!(id, format!("{}:on_failure", report.run_id));
    assert_eq!(status, RunStatus::Succeeded);

    let ok = failing.replace("template: nope", "template: '[]'");
    let (_dir, main) = files(&[("main.yaml", &ok), ("handler.yaml", handler)]);
    let report = run_file(&main, RunOptions::default()).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    assert_eq!(report.on_failure_run, None);

    // A handler needing an input a failed run does not give is refused at validation.
    let needy = handler.replace("run_id: {}", "run_id: {}\n  ticket: {}");
    let (_dir, main) = files(&[("main.yaml", failing), ("handler.yaml", &needy)]);
    let text = nexus_engine::diagnostic::render_all(&nexus_engine::load_file(&main).unwrap_err());
    assert!(
        text.contains("needs the input `ticket`, which a failed run does not give"),
        "{text}"
    );
}

/// A `fail_fast` map cancels the items in flight, including one waiting for a human
/// (the question ends with the item instead of holding the map forever).
#[tokio::test]
async fn fail_fast_ends_an_item_waiting_for_a_human() {
    let yaml = r#"
id: ff
steps:
  - id: each
    kind: map
    items: '[0, 1]'
    concurrency: 2
    steps:
      - id: ask
        kind: approval
        when: item == 1
        prompt: "item {{ index }}"
      - id: check
        kind: template
        needs: [ask]
        trigger_rule: all_done
        format: json
        template: '{% if item == 0 %}broken{% else %}1{% endif %}'
"#;
    let never = Arc::new(Never::default());
    let options = RunOptions {
        human: Some(never.clone() as Arc<dyn HumanHandler>),
        ..RunOptions::default()
    };
    let (report, _) = tokio::time::timeout(Duration::from_secs(30), run_with(yaml, options))
        .await
        .expect("the waiting item was cancelled");
    let each = step(&report, "each");
    assert_eq!(each.status, StepStatus::Failed);
    assert_eq!(step(&report, "each[1].ask").status, StepStatus::Cancelled);
    assert_eq!(
        each.output_json.as_ref().unwrap()["items"][1]["status"],
        "cancelled"
    );
}

/// Answers every question with "cancel the run".
struct CancelAll;

#[async_trait]
impl HumanHandler for CancelAll {
    async fn decide(&self, _request: &HumanRequest) -> Option<HumanDecision> {
        Some(HumanDecision::Cancel)
    }
}

#[tokio::test]
async fn an_approver_cancelling_inside_a_sub_workflow_cancels_the_parent_run() {
    let (_dir, parent) = files(&[
        (
            "parent.yaml",
            "id: parent\nsteps:\n  - id: call\n    kind: workflow\n    workflow: child.yaml\n  - id: after\n    kind: template\n    needs: [call]\n    trigger_rule: all_done\n    template: after\n",
        ),
        (
            "child.yaml",
            "id: child\nsteps:\n  - id: ok\n    kind: approval\n    prompt: go?\n",
        ),
    ]);
    let options = RunOptions {
        human: Some(Arc::new(CancelAll) as Arc<dyn HumanHandler>),
        ..RunOptions::default()
    };
    let report = run_file(&parent, options).await;
    assert_eq!(report.status, RunStatus::Cancelled, "{:?}", report.error);
    assert_eq!(step(&report, "call").status, StepStatus::Cancelled);
}

/// A resumed run judges kept skips as the run did: a step skipped by `on_failure: skip`
/// after `all_done` is a plain skip, so a `none_failed` step below it still runs.
#[tokio::test]
async fn a_resumed_run_keeps_the_join_results_of_the_uninterrupted_run() {
    let yaml = r#"
id: resume-join
steps:
  - id: a
    kind: template
    format: json
    template: broken
    on_failure: skip
  - id: b
    kind: template
    format: json
    template: broken
  - id: notify
    kind: template
    needs: [b]
    trigger_rule: all_done
    format: json
    template: broken
    on_failure: skip
  - id: report
    kind: template
    needs: [notify, a]
    trigger_rule: none_failed
    template: reported
"#;
    let (full, _) = run_with(yaml, RunOptions::default()).await;
    assert_eq!(
        step(&full, "report").status,
        StepStatus::Succeeded,
        "{:?}",
        step(&full, "report").error
    );
    let kept: Vec<StepRecord> = full
        .steps
        .iter()
        .filter(|s| ["a", "b", "notify"].contains(&s.step_id.as_str()))
        .cloned()
        .collect();
    let options = RunOptions {
        run_id: Some(full.run_id.clone()),
        resume: Some(kept),
        ..RunOptions::default()
    };
    let (resumed, _) = run_with(yaml, options).await;
    assert_eq!(
        step(&resumed, "report").status,
        StepStatus::Succeeded,
        "{:?}",
        step(&resumed, "report").error
    );
}

#[test]
fn a_local_only_workflow_makes_the_files_it_calls_local_only() {
    let (_dir, parent) = files(&[
        (
            "parent.yaml",
            "id: parent\nlocal_only: true\nsteps:\n  - id: call\n    kind: workflow\n    workflow: child.yaml\n",
        ),
        (
            "child.yaml",
            "id: child\nsteps:\n  - id: ask\n    kind: llm\n    model: openai:gpt-4o-mini\n    prompt: hi\n",
        ),
    ]);
    let text = nexus_engine::diagnostic::render_all(&nexus_engine::load_file(&parent).unwrap_err());
    assert!(text.contains("the sub-workflow `"), "{text}");
    assert!(text.contains("local"), "{text}");
}

/// A span as opened: its name and fields.
type OpenedSpan = (String, BTreeMap<String, String>);

/// The spans a `tracing` subscriber saw opened, in order.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<OpenedSpan>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Spans {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Fields(BTreeMap<String, String>);
        impl tracing::field::Visit for Fields {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.insert(f.name().to_string(), format!("{v:?}"));
            }
        }
        let mut fields = Fields(BTreeMap::new());
        attrs.record(&mut fields);
        self.0
            .lock()
            .unwrap()
            .push((attrs.metadata().name().to_string(), fields.0));
    }
}

#[tokio::test]
async fn a_run_and_its_steps_are_tracing_spans_with_their_ids() {
    use tracing_subscriber::layer::SubscriberExt;
    let spans = Spans::default();
    // The test's runtime has one thread, so the default subscriber sees the step tasks.
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(spans.clone()));
    let report = run(
        "id: traced\nsteps:\n  - id: each\n    kind: map\n    items: \"[1, 2]\"\n    steps:\n      - id: show\n        kind: template\n        template: \"{{ item }}\"\n",
    )
    .await;
    assert_eq!(report.status, RunStatus::Succeeded);
    let seen = spans.0.lock().unwrap().clone();
    let named = |name: &str| {
        seen.iter()
            .filter(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .collect::<Vec<_>>()
    };
    let runs = named("run");
    assert_eq!(runs.len(), 1, "{seen:?}");
    assert_eq!(runs[0]["run_id"], report.run_id);
    assert_eq!(runs[0]["workflow"], "traced");
    let steps = named("step");
    assert!(
        steps
            .iter()
            .any(|f| f["step_id"] == "each" && f["run_id"] == report.run_id),
        "{seen:?}"
    );
    // Steps that finish inline (the map's template, once per item) have spans too.
    let shows = steps
        .iter()
        .filter(|f| f["step_id"].contains("show"))
        .count();
    assert_eq!(shows, 2, "{seen:?}");
}
