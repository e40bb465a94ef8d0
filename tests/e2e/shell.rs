//! `shell` tools against real processes: the permission (refused, given, remembered per
//! workflow file in a real SQLite store, asked again after a change), the output, the
//! exit code, the environment allow-list, the timeout and cancellation (the child is
//! gone afterwards).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use nexus_engine::events::{RunStatus, StepStatus};
use nexus_engine::human::{HumanDecision, HumanHandler, HumanRequest};
use nexus_engine::{EngineConfig, RunOptions, RunReport};
use nexus_store::SqliteStore;

use crate::engine;

/// Answers every permission question with `answer` and counts them.
struct Answer {
    answer: HumanDecision,
    asked: AtomicUsize,
}

impl Answer {
    fn new(answer: HumanDecision) -> Arc<Self> {
        Arc::new(Answer {
            answer,
            asked: AtomicUsize::new(0),
        })
    }
}

#[async_trait]
impl HumanHandler for Answer {
    async fn decide(&self, request: &HumanRequest) -> Option<HumanDecision> {
        assert!(
            matches!(request, HumanRequest::Permission { .. }),
            "only permissions are asked here: {request:?}"
        );
        self.asked.fetch_add(1, Ordering::SeqCst);
        Some(self.answer.clone())
    }
}

/// Validates `dir/wf.yaml` and runs it with `human` and `store`.
async fn run_file(
    dir: &Path,
    store: Option<Arc<SqliteStore>>,
    human: Option<Arc<dyn HumanHandler>>,
    cancel: Option<tokio_util::sync::CancellationToken>,
) -> anyhow::Result<RunReport> {
    let plan = nexus_engine::load_file(&dir.join("wf.yaml"))
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let inputs = nexus_engine::resolve_inputs(&plan, &Default::default())
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let engine = engine(vec![], store, EngineConfig::default());
    let mut options = RunOptions {
        human,
        ..RunOptions::default()
    };
    if let Some(c) = cancel {
        options.cancel = c;
    }
    Ok(engine.run(Arc::new(plan), inputs, options).await?)
}

fn rec<'a>(report: &'a RunReport, id: &str) -> &'a nexus_engine::store::StepRecord {
    report.steps.iter().find(|s| s.step_id == id).expect("step")
}

const TOUCH: &str = r#"
id: touch
tools:
  mark:
    shell:
      command: [touch, ran]
      cwd: ws
steps:
  - id: mark
    kind: tool
    tool: mark
"#;

#[tokio::test]
async fn a_shell_tool_runs_only_with_permission_remembered_until_the_file_changes()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir(dir.path().join("ws"))?;
    std::fs::write(dir.path().join("wf.yaml"), TOUCH)?;
    let ran = dir.path().join("ws/ran");
    let store = Arc::new(SqliteStore::open(&dir.path().join("runs.db")).await?);

    // Nobody to ask: refused, nothing ran.
    let report = run_file(dir.path(), Some(Arc::clone(&store)), None, None).await?;
    assert_eq!(report.status, RunStatus::Failed);
    let error = rec(&report, "mark").error.clone().unwrap_or_default();
    assert!(
        error.contains("needs the user's permission") && error.contains("--allow-tool mark"),
        "{error}"
    );
    assert!(!ran.exists(), "the program ran without permission");

    // Refused when asked: asked once, nothing ran.
    let no = Answer::new(HumanDecision::Reject);
    let report = run_file(dir.path(), Some(Arc::clone(&store)), Some(no.clone()), None).await?;
    assert_eq!(rec(&report, "mark").status, StepStatus::Failed);
    assert!(
        rec(&report, "mark")
            .error
            .as_deref()
            .is_some_and(|e| e.contains("refused") && e.contains("touch ran")),
        "{:?}",
        rec(&report, "mark").error
    );
    assert_eq!(no.asked.load(Ordering::SeqCst), 1);
    assert!(!ran.exists(), "the program ran although refused");

    // Given: it runs, and the permission is stored.
    let yes = Answer::new(HumanDecision::Approve);
    let report = run_file(
        dir.path(),
        Some(Arc::clone(&store)),
        Some(yes.clone()),
        None,
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(yes.asked.load(Ordering::SeqCst), 1);
    assert!(ran.exists(), "the program did not run");
    std::fs::remove_file(&ran)?;

    // The same file again, with a store reopened (a restart) and a human who would
    // refuse: not asked, it runs.
    drop(store);
    let store = Arc::new(SqliteStore::open(&dir.path().join("runs.db")).await?);
    let no = Answer::new(HumanDecision::Reject);
    let report = run_file(dir.path(), Some(Arc::clone(&store)), Some(no.clone()), None).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(
        no.asked.load(Ordering::SeqCst),
        0,
        "a remembered permission was asked"
    );
    assert!(ran.exists());
    std::fs::remove_file(&ran)?;

    // The file changed: asked again (and refused here).
    std::fs::write(
        dir.path().join("wf.yaml"),
        TOUCH.replace("id: touch\n", "id: touch\ndescription: changed\n"),
    )?;
    let report = run_file(dir.path(), Some(Arc::clone(&store)), Some(no.clone()), None).await?;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(no.asked.load(Ordering::SeqCst), 1);
    assert!(!ran.exists(), "a changed file ran on the old permission");
    Ok(())
}

#[tokio::test]
async fn a_shell_call_gives_its_output_its_exit_code_and_only_the_allowed_environment()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::write(
        dir.path().join("wf.yaml"),
        r#"
id: shell-output
inputs:
  n: {type: number, default: 41}
tools:
  printf:
    shell:
      command: [printf]
  env:
    shell:
      command: [env]
  fail:
    shell:
      command: [sh, -c, 'echo "no such table" >&2; exit 3']
  count:
    shell:
      command: [wc, -c]
steps:
  - id: json
    kind: tool
    tool: printf
    args:
      argv: ['{"n": %s, "items": [1, 2]}', "{{ inputs.n + 1 }}"]
  - id: environment
    kind: tool
    tool: env
  - id: broken
    kind: tool
    tool: fail
  - id: input
    kind: tool
    tool: count
    needs: [json]
    args:
      stdin: "{{ steps.json.output }}"
  - id: each
    kind: map
    items: '[1, 2, 3]'
    concurrency: 3
    steps:
      - id: show
        kind: tool
        tool: printf
        args:
          argv: ["item %s", "{{ item }}"]
"#,
    )?;
    let yes = Answer::new(HumanDecision::Approve);
    let report = run_file(dir.path(), None, Some(yes.clone()), None).await?;
    let json = rec(&report, "json");
    assert_eq!(json.status, StepStatus::Succeeded, "{:?}", json.error);
    assert_eq!(
        json.output_json,
        Some(serde_json::json!({"n": 42, "items": [1, 2]}))
    );
    // Only PATH is passed on by default; every other variable of this process is removed.
    let env = rec(&report, "environment")
        .output
        .clone()
        .unwrap_or_default();
    let names: Vec<&str> = env.lines().filter_map(|l| l.split('=').next()).collect();
    assert_eq!(names, ["PATH"], "{env}");
    let broken = rec(&report, "broken");
    assert_eq!(broken.status, StepStatus::Failed);
    assert_eq!(
        broken.error.as_deref(),
        Some("tool `fail`: `sh` ended with exit code 3: no such table")
    );
    let input = rec(&report, "input");
    assert_eq!(
        input.output.as_deref().map(str::trim),
        Some(
            json.output
                .as_deref()
                .unwrap_or_default()
                .len()
                .to_string()
                .as_str()
        )
    );
    let shows: Vec<String> = report
        .steps
        .iter()
        .filter(|s| s.step_id.ends_with(".show"))
        .filter_map(|s| s.output.clone())
        .collect();
    assert_eq!(shows.len(), 3, "{shows:?}");
    // Four tools, each asked once, although three map items called `printf` at once.
    assert_eq!(yes.asked.load(Ordering::SeqCst), 4);
    Ok(())
}

/// Whether process `pid` has ended (gone, or a zombie waiting to be reaped).
pub(crate) fn ended(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X')),
    }
}

#[tokio::test]
async fn a_shell_call_is_stopped_by_its_timeout_and_killed_when_the_run_is_cancelled()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let fifo = dir.path().join("pid");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status()?;
    anyhow::ensure!(made.success(), "mkfifo failed");
    std::fs::write(
        dir.path().join("wf.yaml"),
        r#"
id: shell-stop
tools:
  slow:
    shell:
      command: [sh, -c, 'echo $$ > pid; exec sleep 600']
      timeout: 1s
steps:
  - id: slow
    kind: tool
    tool: slow
"#,
    )?;
    // The timeout: the program is stopped and the step fails saying so.
    let reader = {
        let fifo = fifo.clone();
        tokio::task::spawn_blocking(move || std::fs::read_to_string(fifo))
    };
    let yes = Answer::new(HumanDecision::Approve);
    let report = run_file(dir.path(), None, Some(yes.clone()), None).await?;
    let pid: u32 = reader.await??.trim().parse()?;
    let slow = rec(&report, "slow");
    assert_eq!(slow.status, StepStatus::Failed);
    assert!(
        slow.error
            .as_deref()
            .is_some_and(|e| e.contains("longer than its timeout of 1s")),
        "{:?}",
        slow.error
    );
    assert!(ended(pid), "the timed-out program {pid} is still running");

    // Cancellation: once the program has written its pid, the run is cancelled.
    let yaml = std::fs::read_to_string(dir.path().join("wf.yaml"))?;
    std::fs::write(
        dir.path().join("wf.yaml"),
        yaml.replace("timeout: 1s", "timeout: 10m"),
    )?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let run = {
        let (dir, cancel, yes) = (dir.path().to_path_buf(), cancel.clone(), yes.clone());
        tokio::spawn(async move { run_file(&dir, None, Some(yes), Some(cancel)).await })
    };
    let fifo2 = fifo.clone();
    let pid: u32 = tokio::task::spawn_blocking(move || std::fs::read_to_string(fifo2))
        .await??
        .trim()
        .parse()?;
    cancel.cancel();
    let report = run.await??;
    assert_eq!(report.status, RunStatus::Cancelled);
    assert_eq!(rec(&report, "slow").status, StepStatus::Cancelled);
    assert!(ended(pid), "the cancelled program {pid} is still running");
    Ok(())
}
