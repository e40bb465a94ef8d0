//! The `nexus` binary end to end: exit codes, located errors, a real run on the embedded
//! model stored in a real SQLite file, and `runs list` / `runs show` reading it back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn nexus(args: &[&str], db: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(args)
        .env("NEXUS_DB", db)
        // Nothing listens here: the run must not depend on a local daemon.
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("NEXUS_OPENAI_BASE_URL")
        .env_remove("NEXUS_OPENAI_API_KEY")
        .current_dir(repo())
        .output()
        .expect("nexus runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_the_examples_and_locates_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("n.db");
    let ok = nexus(
        &[
            "validate",
            "workflows/feature-spec.yaml",
            "workflows/issue-triage.yaml",
            "workflows/document-report.yaml",
        ],
        &db,
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("workflows/feature-spec.yaml: ok (4 steps)"));

    let bad = nexus(&["validate", "tests/invalid/19_unknown_need.yaml"], &db);
    assert_eq!(bad.status.code(), Some(2));
    let err = text(&bad.stderr);
    assert!(
        err.starts_with("tests/invalid/19_unknown_need.yaml:"),
        "{err}"
    );
    assert!(err.contains("error[unknown_need]"), "{err}");
    assert!(err.contains("help:"), "{err}");
    assert_eq!(err.lines().last(), Some("error: 1 problem found"));
}

/// No file of the broken corpus makes the CLI panic (exit 101) or succeed.
#[test]
fn no_broken_file_panics_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("n.db");
    for entry in std::fs::read_dir(repo().join("tests/invalid")).expect("corpus") {
        let path = entry.expect("entry").path();
        let rel = path
            .strip_prefix(repo())
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        for cmd in [vec!["validate", rel.as_str()], vec!["run", rel.as_str()]] {
            let out = nexus(&cmd, &db);
            assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", text(&out.stderr));
            assert!(!text(&out.stderr).contains("panicked"), "{cmd:?}");
        }
    }
    let missing = nexus(&["run", "workflows/nope.yaml"], &db);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read the file"));
    let bad_input = nexus(
        &["run", "workflows/feature-spec.yaml", "--input", "featur=x"],
        &db,
    );
    assert_eq!(bad_input.status.code(), Some(2));
    assert!(
        text(&bad_input.stderr).contains("did you mean `feature`"),
        "{}",
        text(&bad_input.stderr)
    );
}

#[test]
fn run_on_the_embedded_model_then_read_the_run_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("n.db");
    let out = nexus(
        &[
            "run",
            "workflows/document-report.yaml",
            "--json",
            "--input",
            "audience=a CFO",
        ],
        &db,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["status"], "succeeded");
    let run_id = report["run_id"].as_str().expect("run id").to_string();
    assert!(
        report["outputs"]["report"]
            .as_str()
            .unwrap_or_default()
            .starts_with("# Report for a CFO")
    );
    assert!(db.exists());

    let list = nexus(&["runs", "list", "--json"], &db);
    assert!(list.status.success());
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).expect("JSON");
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["steps"], 4);
    assert!(runs[0]["tokens"].as_i64().unwrap_or(0) > 0);

    let show = nexus(&["runs", "show", &run_id[..13]], &db);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let shown = text(&show.stdout);
    assert!(
        shown.contains("model: embedded:smollm2-135m-instruct"),
        "{shown}"
    );
    assert!(shown.contains("why:"), "{shown}");
    assert!(
        shown.contains("attempt 1 on embedded:smollm2-135m-instruct"),
        "{shown}"
    );

    let unknown = nexus(&["runs", "show", "no-such-run"], &db);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn models_lists_the_embedded_model_and_the_selector_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = nexus(&["models"], &dir.path().join("n.db"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("ollama (Local): unavailable"), "{s}");
    assert!(s.contains("1. embedded:smollm2-135m-instruct"), "{s}");
}

/// The environment of a run against the scripted OpenAI-compatible server only.
fn scripted_env(cmd: &mut Command, db: &Path, base_url: &str) {
    cmd.env("NEXUS_DB", db)
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .env("NEXUS_OPENAI_BASE_URL", base_url)
        .env("NEXUS_OPENAI_MODELS", "scripted")
        .env("NEXUS_EMBEDDED_MODEL", "/nonexistent/model.gguf")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("NEXUS_OPENAI_API_KEY")
        .current_dir(repo());
}

const CRASH_WORKFLOW: &str = r#"
id: crash
steps:
  - id: a
    kind: llm
    model: [openai:scripted]
    prompt: Start.
  - id: b
    kind: llm
    needs: [a]
    model: [openai:scripted]
    prompt: "B after {{ steps.a.output }}"
  - id: c
    kind: llm
    needs: [a]
    model: [openai:scripted]
    prompt: "C after {{ steps.a.output }}"
  - id: d
    kind: llm
    needs: [b, c]
    model: [openai:scripted]
    prompt: "D after {{ steps.b.output }} and {{ steps.c.output }}"
  - id: e
    kind: template
    needs: [d]
    template: "E: {{ steps.d.output }}"
  - id: f
    kind: llm
    needs: [e]
    model: [openai:scripted]
    prompt: "F after {{ steps.e.output }}"
outputs:
  final: "{{ steps.f.output }}"
  middle: "{{ steps.d.output }}"
"#;

/// What a stored step looked like: enough to tell whether it ran again.
fn snapshot(
    run: &nexus_app::store::StoredRun,
) -> std::collections::BTreeMap<String, (String, String, u64, usize)> {
    run.steps
        .iter()
        .map(|s| {
            (
                s.step_id.clone(),
                (
                    s.status.as_str().to_string(),
                    s.started_at.to_rfc3339(),
                    s.duration_ms,
                    s.attempts.len(),
                ),
            )
        })
        .collect()
}

/// The crash test: `nexus run` is killed with SIGKILL at 50 moments spread over a run
/// (from before the run is stored to after it finished), then `nexus resume` continues
/// it. No completed step may be lost or run again, every run must finish, and the
/// outputs must have the structure of an uninterrupted run.
#[test]
fn runs_killed_at_any_moment_resume_without_losing_or_repeating_steps() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt
        .block_on(nexus_tests::scripted::ScriptedServer::start(vec![
            nexus_tests::scripted::Behavior::Paced(
                vec!["one".into(), " two".into(), " three".into()],
                std::time::Duration::from_millis(40),
            ),
        ]))
        .expect("scripted server");
    let dir = tempfile::tempdir().expect("tmp");
    let wf = dir.path().join("crash.yaml");
    std::fs::write(&wf, CRASH_WORKFLOW).expect("write workflow");
    let wf = wf.to_string_lossy().into_owned();

    // An uninterrupted run: its duration spaces the kill moments; its outputs are the
    // reference structure.
    let db = dir.path().join("baseline.db");
    let started = std::time::Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
    scripted_env(&mut cmd, &db, &server.base_url);
    let out = cmd.args(["run", &wf, "--json"]).output().expect("run");
    let full = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let baseline: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
    let keys = |v: &serde_json::Value| -> Vec<String> {
        v["outputs"]
            .as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };

    let mut resumed = 0;
    let mut finished_before_kill = 0;
    let mut before_start = 0;
    let kills = 50u32;
    for i in 0..kills {
        let db = dir.path().join(format!("crash-{i}.db"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        scripted_env(&mut cmd, &db, &server.base_url);
        let mut child = cmd
            .args(["run", &wf, "--json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // Kill moments spread evenly over 110 % of an uninterrupted run, with a
        // per-iteration offset so they do not line up with step boundaries.
        let at = full.mul_f64(1.1 * f64::from(i) / f64::from(kills))
            + std::time::Duration::from_millis(u64::from(i * 7 % 23));
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        let store = rt
            .block_on(nexus_app::store::SqliteStore::open(&db))
            .expect("open store");
        let runs = rt.block_on(store.list_runs(1)).expect("list");
        let Some(summary) = runs.first() else {
            before_start += 1;
            continue;
        };
        let before = rt.block_on(store.get_run(&summary.run_id)).expect("run");
        let kept = snapshot(&before);
        if before.status == "succeeded" {
            finished_before_kill += 1;
            assert_eq!(before.steps.len(), 6);
            continue;
        }
        assert_eq!(before.status, "running", "killed mid-run");
        drop(store);

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        scripted_env(&mut cmd, &db, &server.base_url);
        let out = cmd
            .args(["resume", &before.run_id, "--json"])
            .output()
            .expect("resume");
        assert!(
            out.status.success(),
            "kill {i} at {at:?}: resume failed: {}",
            text(&out.stderr)
        );
        resumed += 1;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("report");
        assert_eq!(report["status"], "succeeded");
        assert_eq!(keys(&report), keys(&baseline));
        assert!(
            report["outputs"]["final"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        );

        let store = rt
            .block_on(nexus_app::store::SqliteStore::open(&db))
            .expect("open store");
        let after = rt.block_on(store.get_run(&before.run_id)).expect("run");
        assert_eq!(after.status, "succeeded");
        assert_eq!(after.steps.len(), 6, "every step exactly once");
        let now = snapshot(&after);
        for (step, was) in &kept {
            assert_eq!(
                now.get(step),
                Some(was),
                "kill {i}: step `{step}` was lost or ran again"
            );
        }
        // Each step succeeded exactly once in the event log.
        for step in ["a", "b", "c", "d", "e", "f"] {
            let n = after
                .events
                .iter()
                .filter(|e| matches!(e, nexus_app::engine::Event::StepSucceeded { step_id, .. } if step_id == step))
                .count();
            assert_eq!(n, 1, "kill {i}: step `{step}` succeeded {n} times");
        }
        assert!(
            after
                .events
                .iter()
                .any(|e| matches!(e, nexus_app::engine::Event::RunResumed { .. }))
        );
    }
    eprintln!(
        "{kills} kills: {resumed} resumed mid-run, {finished_before_kill} after the run finished, {before_start} before the run was stored"
    );
    assert!(resumed >= 30, "most kills land mid-run ({resumed})");
}

const CRASH_FLOW: &str = r#"
id: crash-flow
steps:
  - id: list
    kind: template
    format: json
    template: '[1, 2, 3, 4]'
  - id: each
    kind: map
    needs: [list]
    items: steps.list.json
    concurrency: 2
    steps:
      - id: write
        kind: llm
        model: [openai:scripted]
        prompt: "Item {{ item }}"
  - id: rounds
    kind: loop
    needs: [each]
    max_iterations: 2
    state: {n: 0}
    set: {n: state.n + 1}
    steps:
      - id: think
        kind: llm
        model: [openai:scripted]
        prompt: "Round {{ iteration }} after {{ steps.each.json.results | length }} items"
  - id: child
    kind: workflow
    needs: [rounds]
    workflow: crash-child.yaml
  - id: last
    kind: template
    needs: [child]
    template: "{{ steps.child.output }} / {{ steps.rounds.json.state.n }}"
outputs:
  final: "{{ steps.last.output }}"
"#;

const CRASH_CHILD: &str = r#"
id: crash-child
outputs:
  said: "{{ steps.b.output }}"
steps:
  - id: a
    kind: llm
    model: [openai:scripted]
    prompt: Child start.
  - id: b
    kind: llm
    needs: [a]
    model: [openai:scripted]
    prompt: "Child after {{ steps.a.output }}"
"#;

/// The crash test inside bodies and a child run: `nexus run` is killed with SIGKILL at
/// 30 moments spread over a run with a map (items in flight), a loop and a sub-workflow,
/// then `nexus resume` continues it. No completed item, iteration or child step may be
/// lost or run again, and every one succeeds exactly once.
#[test]
fn runs_killed_inside_a_map_a_loop_and_a_sub_workflow_resume_without_repeating_steps() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt
        .block_on(nexus_tests::scripted::ScriptedServer::start(vec![
            nexus_tests::scripted::Behavior::Paced(
                vec!["one".into(), " two".into()],
                std::time::Duration::from_millis(30),
            ),
        ]))
        .expect("scripted server");
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::write(dir.path().join("crash-child.yaml"), CRASH_CHILD).expect("write child");
    let wf = dir.path().join("crash-flow.yaml");
    std::fs::write(&wf, CRASH_FLOW).expect("write workflow");
    let wf = wf.to_string_lossy().into_owned();
    let parent_steps = [
        "list",
        "each",
        "each[0].write",
        "each[1].write",
        "each[2].write",
        "each[3].write",
        "rounds",
        "rounds[0].think",
        "rounds[1].think",
        "child",
        "last",
    ];

    let started = std::time::Instant::now();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
    scripted_env(&mut cmd, &dir.path().join("baseline.db"), &server.base_url);
    let out = cmd.args(["run", &wf, "--json"]).output().expect("run");
    let full = started.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let kills = 30u32;
    let mut resumed = 0;
    for i in 0..kills {
        let db = dir.path().join(format!("crash-flow-{i}.db"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        scripted_env(&mut cmd, &db, &server.base_url);
        let mut child = cmd
            .args(["run", &wf, "--json"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        // Kill moments spread over the run, offset so they do not line up with steps.
        let at = full.mul_f64(f64::from(i) / f64::from(kills))
            + std::time::Duration::from_millis(u64::from(i * 11 % 29));
        std::thread::sleep(at);
        let _ = child.kill(); // SIGKILL
        let _ = child.wait();

        let store = rt
            .block_on(nexus_app::store::SqliteStore::open(&db))
            .expect("open store");
        let runs = rt.block_on(store.list_runs(10)).expect("list");
        let Some(parent) = runs.iter().find(|r| !r.run_id.contains('.')) else {
            continue;
        };
        let before = rt.block_on(store.get_run(&parent.run_id)).expect("run");
        if before.status == "succeeded" {
            continue;
        }
        let child_id = format!("{}.child", before.run_id);
        let child_before = rt.block_on(store.get_run(&child_id)).ok();
        let kept = snapshot(&before);
        let kept_child = child_before.as_ref().map(snapshot).unwrap_or_default();
        drop(store);

        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        scripted_env(&mut cmd, &db, &server.base_url);
        let out = cmd
            .args(["resume", &before.run_id, "--json"])
            .output()
            .expect("resume");
        assert!(
            out.status.success(),
            "kill {i} at {at:?}: resume failed: {}",
            text(&out.stderr)
        );
        resumed += 1;
        let store = rt
            .block_on(nexus_app::store::SqliteStore::open(&db))
            .expect("open store");
        let after = rt.block_on(store.get_run(&before.run_id)).expect("run");
        assert_eq!(after.status, "succeeded", "kill {i}");
        let now = snapshot(&after);
        let ids: Vec<&str> = now.keys().map(String::as_str).collect();
        let mut want = parent_steps.to_vec();
        want.sort_unstable();
        assert_eq!(ids, want, "kill {i}: every step exactly once");
        for (step, was) in &kept {
            assert_eq!(
                now.get(step),
                Some(was),
                "kill {i}: `{step}` was lost or ran again"
            );
        }
        for step in parent_steps {
            let n = after
                .events
                .iter()
                .filter(|e| matches!(e, nexus_app::engine::Event::StepSucceeded { step_id, .. } if step_id == step))
                .count();
            assert_eq!(n, 1, "kill {i}: `{step}` succeeded {n} times");
        }
        let child_after = rt.block_on(store.get_run(&child_id)).expect("child run");
        assert_eq!(child_after.status, "succeeded", "kill {i}");
        assert_eq!(
            child_after.steps.len(),
            2,
            "kill {i}: child steps once each"
        );
        let child_now = snapshot(&child_after);
        for (step, was) in &kept_child {
            assert_eq!(
                child_now.get(step),
                Some(was),
                "kill {i}: child `{step}` ran again"
            );
        }
    }
    eprintln!("{kills} kills: {resumed} resumed mid-run");
    assert!(resumed >= 15, "most kills land mid-run ({resumed})");
}

/// Runs `nexus ARGS` on the database `db` with Ollama unreachable, writing `stdin` (when
/// given) as the terminal's answers and then closing it.
fn run_answering(args: &[&str], db: &Path, stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(args)
        .env("NEXUS_DB", db)
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    if let Some(mut input) = child.stdin.take()
        && let Some(answer) = stdin
    {
        let _ = input.write_all(answer.as_bytes());
    }
    child.wait_with_output().expect("output")
}

/// Approval steps ask on the terminal; the answer is read from stdin.
#[test]
fn approval_steps_ask_in_the_terminal() {
    let dir = tempfile::tempdir().expect("tmp");
    let wf = dir.path().join("approve.yaml");
    std::fs::write(
        &wf,
        "id: approve\nsteps:\n  - id: draft\n    kind: template\n    template: v1.2.0\n  - id: ship\n    kind: approval\n    needs: [draft]\n    prompt: \"Release {{ steps.draft.output }}?\"\n    approval: {default: approve}\n  - id: done\n    kind: template\n    needs: [ship]\n    template: shipped\n",
    )
    .expect("write");
    let wf = wf.to_string_lossy().into_owned();
    let db = dir.path().join("a.db");
    let run_with = |stdin: Option<&str>| run_answering(&["run", &wf], &db, stdin);
    let yes = run_with(Some("y\n"));
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    assert!(
        text(&yes.stderr).contains("Release v1.2.0?"),
        "{}",
        text(&yes.stderr)
    );

    let no = run_with(Some("maybe\nn\n"));
    assert_eq!(no.status.code(), Some(1), "{}", text(&no.stderr));
    assert!(text(&no.stderr).contains("not one of the choices"));
    assert!(
        text(&no.stdout).contains("rejected (decided by human)"),
        "{}",
        text(&no.stdout)
    );

    // Closed input: nobody can answer, the step's default (approve) applies.
    let closed = run_with(None);
    assert!(closed.status.success(), "{}", text(&closed.stderr));
}

/// `nexus pause`, `nexus resume` and `nexus cancel` act on a run in another process.
#[test]
fn a_shell_tool_asks_in_the_terminal_and_allow_tool_gives_the_permission() {
    let dir = tempfile::tempdir().expect("tmp");
    let wf = dir.path().join("shell.yaml");
    let yaml = "id: shell\ntools:\n  hello:\n    shell:\n      command: [echo, hello from the shell]\nsteps:\n  - id: greet\n    kind: tool\n    tool: hello\noutputs:\n  said: \"{{ steps.greet.output }}\"\n";
    std::fs::write(&wf, yaml).expect("write");
    let wf = wf.to_string_lossy().into_owned();
    let db = dir.path().join("s.db");
    let run_with = |extra: &[&str], stdin: Option<&str>| {
        let args: Vec<&str> = ["run", wf.as_str()]
            .into_iter()
            .chain(extra.iter().copied())
            .collect();
        run_answering(&args, &db, stdin)
    };
    // Closed input: nobody can give the permission; the step fails saying how to.
    let closed = run_with(&[], None);
    assert_eq!(closed.status.code(), Some(1), "{}", text(&closed.stderr));
    assert!(
        text(&closed.stderr).contains("allow tool `hello` to run `echo hello from the shell`"),
        "{}",
        text(&closed.stderr)
    );
    assert!(
        text(&closed.stdout).contains("--allow-tool hello"),
        "{}",
        text(&closed.stdout)
    );
    assert!(!text(&closed.stdout).contains("hello from the shell\n"));
    // Answered yes: it runs, and the next run does not ask.
    let yes = run_with(&[], Some("y\n"));
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    assert!(text(&yes.stdout).contains("hello from the shell"));
    let again = run_with(&[], None);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        !text(&again.stderr).contains("allow tool"),
        "{}",
        text(&again.stderr)
    );
    // `nexus permissions` lists what was given and takes it back: the next run asks.
    let listed = run_answering(&["permissions", "list", "--json"], &db, None);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let given: serde_json::Value = serde_json::from_str(&text(&listed.stdout)).expect("json");
    assert_eq!(given.as_array().map(Vec::len), Some(1), "{given}");
    assert_eq!(given[0]["workflow_id"], "shell");
    assert_eq!(given[0]["tool"], "hello");
    assert_eq!(
        given[0]["command"],
        serde_json::json!(["echo", "hello from the shell"])
    );
    let revoked = run_answering(&["permissions", "revoke", "shell"], &db, None);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    assert!(text(&revoked.stdout).contains("revoked 1 permission"));
    let asked = run_with(&[], None);
    assert_eq!(asked.status.code(), Some(1), "{}", text(&asked.stderr));
    let yes = run_with(&[], Some("y\n"));
    assert!(yes.status.success(), "{}", text(&yes.stderr));
    // A changed file asks again; --allow-tool gives the permission without a question.
    std::fs::write(&wf, yaml.replace("hello from the shell", "hello again")).expect("write");
    let changed = run_with(&[], None);
    assert_eq!(changed.status.code(), Some(1), "{}", text(&changed.stderr));
    let allowed = run_with(&["--allow-tool", "hello"], None);
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    assert!(text(&allowed.stdout).contains("hello again"));
}

#[test]
fn pause_resume_and_cancel_reach_a_run_in_another_process() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt
        .block_on(nexus_tests::scripted::ScriptedServer::start(vec![
            nexus_tests::scripted::Behavior::Paced(
                vec!["a".into(), "b".into()],
                std::time::Duration::from_millis(150),
            ),
        ]))
        .expect("scripted server");
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("c.db");
    let wf = dir.path().join("slow.yaml");
    let mut y = String::from("id: slow\nsteps:\n");
    for i in 0..8 {
        y.push_str(&format!(
            "  - id: s{i}\n    kind: llm\n    model: [openai:scripted]\n    prompt: step {i}\n    cache: false\n"
        ));
        if i > 0 {
            y.push_str(&format!("    needs: [s{}]\n", i - 1));
        }
    }
    std::fs::write(&wf, y).expect("write");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
    scripted_env(&mut cmd, &db, &server.base_url);
    let child = cmd
        .args(["run", &wf.to_string_lossy(), "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    let store = || {
        rt.block_on(nexus_app::store::SqliteStore::open(&db))
            .expect("store")
    };
    // Wait for the run to be stored.
    let run_id = loop {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if db.exists()
            && let Ok(runs) = rt.block_on(store().list_runs(1))
            && let Some(r) = runs.first()
        {
            break r.run_id.clone();
        }
    };
    let ctl = |verb: &str| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        scripted_env(&mut cmd, &db, &server.base_url);
        let out = cmd.args([verb, &run_id]).output().expect("ctl");
        assert!(out.status.success(), "{verb}: {}", text(&out.stderr));
    };
    let status = || rt.block_on(store().get_run(&run_id)).expect("run").status;
    ctl("pause");
    let mut seen = String::new();
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        seen = status();
        if seen == "paused" {
            break;
        }
    }
    assert_eq!(seen, "paused");
    // Paused: no new step starts.
    std::thread::sleep(std::time::Duration::from_millis(600));
    let n = rt
        .block_on(store().get_run(&run_id))
        .expect("run")
        .steps
        .len();
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(
        rt.block_on(store().get_run(&run_id))
            .expect("run")
            .steps
            .len(),
        n,
        "no step finished while paused"
    );
    ctl("resume");
    for _ in 0..50 {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if status() == "running" {
            break;
        }
    }
    assert_eq!(status(), "running");
    ctl("cancel");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert_eq!(status(), "cancelled");
    // A finished run cannot be resumed.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
    scripted_env(&mut cmd, &db, &server.base_url);
    let again = cmd.args(["resume", &run_id]).output().expect("resume");
    assert_eq!(again.status.code(), Some(2));
    assert!(text(&again.stderr).contains("already finished"));
}

/// "Run from this step" reuses the earlier run's upstream outputs; "run up to this step"
/// runs only what the step needs.
#[test]
fn run_from_and_until_a_step_reuse_and_limit_work() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = rt
        .block_on(nexus_tests::scripted::ScriptedServer::start(vec![
            nexus_tests::scripted::Behavior::Stream(vec!["out".into()]),
        ]))
        .expect("scripted server");
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("p.db");
    let wf = dir.path().join("chain.yaml");
    std::fs::write(
        &wf,
        "id: chain\nsteps:\n  - {id: a, kind: llm, model: [openai:scripted], prompt: A, cache: false}\n  - {id: b, kind: llm, model: [openai:scripted], needs: [a], prompt: \"B {{ steps.a.output }}\", cache: false}\n  - {id: c, kind: llm, model: [openai:scripted], needs: [b], prompt: \"C {{ steps.b.output }}\", cache: false}\n",
    )
    .expect("write");
    let wf = wf.to_string_lossy().into_owned();
    let nexus_run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        scripted_env(&mut cmd, &db, &server.base_url);
        let out = cmd
            .args(["run", &wf, "--json"])
            .args(extra)
            .output()
            .expect("run");
        assert!(out.status.success(), "{extra:?}: {}", text(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("report")
    };
    let first = nexus_run(&[]);
    assert_eq!(server.arrivals().len(), 3);

    // From `b`: `a` is reused from the first run, `b` and `c` run again.
    let from = nexus_run(&["--from", "b"]);
    assert_eq!(server.arrivals().len(), 5);
    let steps = from["steps"].as_array().expect("steps");
    let a = steps.iter().find(|s| s["step_id"] == "a").expect("a");
    assert_eq!(a["cached"], true);
    assert!(
        a["model_reason"]
            .as_str()
            .unwrap_or_default()
            .contains(first["run_id"].as_str().expect("id")),
        "{a}"
    );

    // Up to `b`: `c` is not run.
    let until = nexus_run(&["--until", "b"]);
    assert_eq!(server.arrivals().len(), 7);
    let c = until["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .find(|s| s["step_id"] == "c")
        .expect("c")
        .clone();
    assert_eq!(c["status"], "skipped");

    // An unknown step is a usage error.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
    scripted_env(&mut cmd, &db, &server.base_url);
    let bad = cmd
        .args(["run", &wf, "--until", "zz"])
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2));
}

/// `nexus` against the Ollama-protocol test server at `url` only.
fn nexus_on_ollama(args: &[&str], db: &Path, url: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(args)
        .env("NEXUS_DB", db)
        .env("OLLAMA_HOST", url)
        .env("NEXUS_EMBEDDED_MODEL", "/nonexistent/model.gguf")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("NEXUS_OPENAI_BASE_URL")
        .env_remove("NEXUS_OPENAI_API_KEY")
        .current_dir(repo())
        .output()
        .expect("nexus runs")
}

fn ollama_server(specs: &[serde_json::Value]) -> nexus_tests::OllamaServer {
    nexus_tests::OllamaServer::start_with_specs(&[], specs, &[]).expect("Ollama-protocol server")
}

#[test]
fn models_shows_each_ollama_models_window_capabilities_and_locality() {
    let server = ollama_server(&[
        serde_json::json!({"name": "qwen3:8b", "context_length": 40960,
            "capabilities": ["completion", "tools", "thinking"], "script": {"content": ["ok"]}}),
        serde_json::json!({"name": "bge-m3:latest", "context_length": 8192,
            "capabilities": ["embedding"], "script": {"content": ["ok"]}}),
        serde_json::json!({"name": "gpt-oss:120b-cloud", "remote_host": "https://ollama.com:443",
            "remote_model": "gpt-oss:120b", "context_length": 131072,
            "capabilities": ["completion", "tools", "thinking"], "script": {"content": ["ok"]}}),
    ]);
    let dir = tempfile::tempdir().expect("tmp");
    let out = nexus_on_ollama(&["models"], &dir.path().join("n.db"), &server.url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    let line = |name: &str| {
        s.lines()
            .find(|l| l.contains(name))
            .unwrap_or_else(|| panic!("no line for {name}:\n{s}"))
            .to_string()
    };
    let qwen = line("ollama:qwen3:8b ");
    assert!(
        qwen.contains("local,")
            && qwen.contains("context 40960 tokens")
            && qwen.contains("capabilities completion+tools+thinking"),
        "{qwen}"
    );
    let bge = line("ollama:bge-m3:latest ");
    assert!(bge.contains("capabilities embedding"), "{bge}");
    let cloud = line("ollama:gpt-oss:120b-cloud ");
    assert!(
        cloud.contains("cloud (through the local daemon)") && cloud.contains("context 131072"),
        "{cloud}"
    );
    // The embedding model is never in the selector's order.
    assert!(!s.contains(". ollama:bge-m3:latest"), "{s}");
}

#[test]
fn a_thinking_run_shows_its_reasoning_in_the_progress_and_the_record() {
    let server = ollama_server(&[serde_json::json!({"name": "deepseek-r1:8b",
        "capabilities": ["completion", "thinking"],
        "script": {"thinking": ["Weighing", " the options"], "content": ["Teal."]}})]);
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("n.db");
    let wf = dir.path().join("think.yaml");
    std::fs::write(
        &wf,
        "id: think\nsteps:\n  - id: plan\n    kind: llm\n    model: [ollama:deepseek-r1:8b]\n    think: true\n    prompt: Pick a colour.\n    max_tokens: 32\n",
    )
    .expect("write workflow");
    let out = nexus_on_ollama(&["run", &wf.to_string_lossy()], &db, &server.url);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let progress = text(&out.stderr);
    assert!(
        progress.contains("plan is thinking: Weighing"),
        "{progress}"
    );
    let list = nexus_on_ollama(&["runs", "list", "--json"], &db, &server.url);
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).expect("JSON");
    let run_id = runs[0]["run_id"].as_str().expect("run id").to_string();
    let show = nexus_on_ollama(&["runs", "show", &run_id], &db, &server.url);
    let shown = text(&show.stdout);
    assert!(
        shown.contains("reasoning (not passed on): Weighing the options")
            && shown.contains("output: Teal."),
        "{shown}"
    );
}

/// `nexus run` sends the workflow's notifications before it exits: a receiver on
/// loopback (axum) gets the signed `run_succeeded` by the time the process has ended.
#[test]
fn nexus_run_sends_its_notifications_before_it_exits() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<(Option<String>, Vec<u8>)>();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/told",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let sig = headers
                    .get("x-nexus-signature-256")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let _ = tx.send((sig, body.to_vec()));
                async { axum::http::StatusCode::NO_CONTENT }
            },
        ),
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("told.yaml");
    std::fs::write(
        &flow,
        format!(
            "id: told\nnotifications:\n  - on: [succeeded]\n    webhook: {{url: \"http://{addr}/told\", secret_env: TOLD_SECRET}}\nsteps:\n  - id: a\n    kind: template\n    template: done\n"
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(["run", flow.to_str().unwrap()])
        .env("NEXUS_DB", dir.path().join("runs.db"))
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .env("TOLD_SECRET", "s3cret")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (sig, raw) = rx
        .try_recv()
        .expect("the notification arrived before nexus run exited");
    let body: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    assert_eq!(
        (&body["event"], &body["workflow_id"]),
        (
            &serde_json::json!("run_succeeded"),
            &serde_json::json!("told")
        )
    );
    assert!(
        text(&out.stdout).contains(body["run_id"].as_str().unwrap()),
        "{}",
        text(&out.stdout)
    );
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
    mac.update(&raw);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig.as_deref(), Some(expected.as_str()));
}

/// A span as the test reads it from OTLP: name, ids and string attributes.
#[derive(Debug, Clone)]
struct OtlpSpan {
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attrs: std::collections::HashMap<String, String>,
}

/// Decodes the OTLP/HTTP protobuf export requests a collector received into spans, with
/// the resource's `service.name` of each.
fn otlp_spans(bodies: &[Vec<u8>]) -> Vec<(String, OtlpSpan)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;
    let string = |kv: &opentelemetry_proto::tonic::common::v1::KeyValue| match kv
        .value
        .as_ref()
        .and_then(|v| v.value.as_ref())
    {
        Some(Value::StringValue(s)) => Some((kv.key.clone(), s.clone())),
        _ => None,
    };
    let mut out = Vec::new();
    for body in bodies {
        let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        for rs in req.resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .filter_map(string)
                .find(|(k, _)| k == "service.name")
                .map(|(_, v)| v)
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                out.push((
                    service.clone(),
                    OtlpSpan {
                        name: span.name,
                        trace_id: span.trace_id,
                        span_id: span.span_id,
                        parent: span.parent_span_id,
                        attrs: span.attributes.iter().filter_map(string).collect(),
                    },
                ));
            }
        }
    }
    out
}

/// With `OTEL_EXPORTER_OTLP_ENDPOINT` set, `nexus run` exports the run → step → attempt
/// span tree to a collector over OTLP/HTTP protobuf (a receiver on loopback decoding
/// the official protobuf messages) before it exits; a protocol it does not speak is
/// refused with a warning and the run still succeeds.
#[test]
fn nexus_run_exports_its_spans_over_otlp() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let _ = tx.send(body.to_vec());
            async {
                (
                    [(axum::http::header::CONTENT_TYPE, "application/x-protobuf")],
                    Vec::<u8>::new(),
                )
            }
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    let server = ollama_server(&[serde_json::json!({"name": "llama3.1:latest",
        "capabilities": ["completion"], "script": {"content": ["Teal."]}})]);
    let dir = tempfile::tempdir().unwrap();
    let wf = dir.path().join("traced.yaml");
    std::fs::write(
        &wf,
        "id: traced\nsteps:\n  - id: pick\n    kind: llm\n    model: [ollama:llama3.1:latest]\n    prompt: Pick a colour.\n    max_tokens: 8\n    cache: false\n  - id: say\n    kind: template\n    needs: [pick]\n    template: \"{{ steps.pick.output }}\"\n",
    )
    .unwrap();
    let run = |envs: &[(&str, String)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        cmd.args(["run", wf.to_str().unwrap()])
            .env("NEXUS_DB", dir.path().join("runs.db"))
            .env("OLLAMA_HOST", &server.url)
            .env("NEXUS_EMBEDDED_MODEL", "/nonexistent/model.gguf")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL")
            .env_remove("OTEL_SERVICE_NAME");
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    };
    let out = run(&[("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}"))]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let bodies: Vec<Vec<u8>> = rx.try_iter().collect();
    let spans = otlp_spans(&bodies);
    let find = |name: &str| -> Vec<OtlpSpan> {
        spans
            .iter()
            .filter(|(_, s)| s.name == name)
            .map(|(_, s)| s.clone())
            .collect()
    };
    assert!(spans.iter().all(|(svc, _)| svc == "nexus"), "{spans:?}");
    let runs = find("run");
    assert_eq!(runs.len(), 1, "{spans:?}");
    let run_span = &runs[0];
    assert_eq!(
        run_span.attrs.get("workflow").map(String::as_str),
        Some("traced")
    );
    let run_id = run_span.attrs.get("run_id").cloned().unwrap_or_default();
    assert!(text(&out.stdout).contains(&run_id), "{}", text(&out.stdout));
    let steps = find("step");
    let mut step_ids: Vec<&str> = steps
        .iter()
        .map(|s| s.attrs.get("step_id").map(String::as_str).unwrap_or(""))
        .collect();
    step_ids.sort_unstable();
    assert_eq!(step_ids, ["pick", "say"], "{steps:?}");
    for s in &steps {
        assert_eq!(
            (&s.trace_id, &s.parent),
            (&run_span.trace_id, &run_span.span_id),
            "a step's span is a child of the run's: {s:?}"
        );
    }
    let pick = steps
        .iter()
        .find(|s| s.attrs.get("step_id").map(String::as_str) == Some("pick"))
        .unwrap();
    let attempts = find("attempt");
    assert_eq!(attempts.len(), 1, "{attempts:?}");
    assert_eq!(attempts[0].parent, pick.span_id, "{attempts:?}");
    assert_eq!(
        attempts[0].attrs.get("model").map(String::as_str),
        Some("ollama:llama3.1:latest")
    );

    // A protocol Nexus does not speak: a warning naming the variable, no export, and
    // the run is unaffected.
    let out = run(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{addr}")),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".into()),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("OTEL_EXPORTER_OTLP_PROTOCOL=grpc is not supported"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(rx.try_iter().count(), 0);
}
