//! The SQLite store on real files: what the engine writes is read back whole, reopening
//! keeps it (migrations are idempotent), run ids resolve by unique prefix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use chrono::Utc;
use nexus_engine::events::{Event, RunStatus, StepStatus};
use nexus_engine::provider::{ProviderErrorKind, Usage};
use nexus_engine::store::{
    AttemptRecord, FallbackRecord, RunFinish, RunRecord, RunStore, StepRecord,
};
use nexus_store::{Error, SqliteStore};

fn run(id: &str) -> RunRecord {
    RunRecord {
        run_id: id.to_string(),
        workflow_id: "wf".into(),
        workflow_name: Some("Workflow".into()),
        workflow_version: Some("1.0".into()),
        file: Some("workflows/wf.yaml".into()),
        inputs: serde_json::json!({"topic": "tea"}),
        workflow: Some(serde_json::json!({"id": "wf", "steps": []})),
        started_at: Utc::now(),
        parent: None,
        trigger: None,
    }
}

fn step(id: &str) -> StepRecord {
    StepRecord {
        step_id: id.to_string(),
        kind: "llm".into(),
        status: StepStatus::Succeeded,
        input: Some("prompt".into()),
        output: Some("{\"ok\": true}".into()),
        reasoning: Some("The user wants a yes: ok is true.".into()),
        output_json: Some(serde_json::json!({"ok": true})),
        model: Some("embedded:m".into()),
        model_reason: Some("why".into()),
        usage: Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 5,
        }),
        started_at: Utc::now(),
        duration_ms: 42,
        error: None,
        attempts: vec![
            AttemptRecord {
                attempt: 1,
                model: Some("ollama:llama3.1".into()),
                started_at: Utc::now(),
                duration_ms: 1,
                first_token_ms: None,
                error_kind: Some(ProviderErrorKind::Unavailable),
                error_message: Some("connection refused".into()),
                usage: None,
            },
            AttemptRecord {
                attempt: 2,
                model: Some("embedded:m".into()),
                started_at: Utc::now(),
                duration_ms: 40,
                first_token_ms: Some(7),
                error_kind: None,
                error_message: None,
                usage: Some(Usage {
                    prompt_tokens: 12,
                    completion_tokens: 5,
                }),
            },
        ],
        fallbacks: vec![FallbackRecord {
            from: "ollama:llama3.1".into(),
            to: "embedded:m".into(),
            reason: "unavailable".into(),
            rung: "next_model".into(),
        }],
        cached: false,
        cost_usd: Some(0.000_25),
        selection: Some(nexus_engine::select::SelectionRecord {
            task: "general".into(),
            prompt_tokens: 12,
            ranked: vec![],
            excluded: vec![nexus_engine::select::ExcludedRecord {
                model: "openai:gpt-4o".into(),
                reason: "local_only".into(),
            }],
            all_breakers_open: false,
            agent: None,
        }),
        guardrails: vec![nexus_engine::store::GuardrailRecord {
            stage: "input".into(),
            detector: "email".into(),
            severity: "low".into(),
            action: "warn".into(),
            count: 1,
            sample: "a…@example.com".into(),
        }],
        handled: false,
        transcript: Vec::new(),
    }
}

#[tokio::test]
async fn a_run_is_read_back_whole_after_reopening() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("sub/dir/runs.db");
    {
        let store = SqliteStore::open(&path).await?;
        store.create_run(&run("0001-aaaa")).await?;
        let a = step("a");
        let mut b = step("b");
        b.status = StepStatus::Skipped;
        b.error = Some("dependency `x` failed".into());
        b.usage = None;
        b.attempts.clear();
        b.fallbacks.clear();
        let events = vec![Event::StepSucceeded {
            run_id: "0001-aaaa".into(),
            step_id: "a".into(),
            model: Some("embedded:m".into()),
            usage: None,
            duration_ms: 42,
            cached: false,
            cost_usd: None,
        }];
        store.record_steps("0001-aaaa", &[&a, &b], &events).await?;
        store
            .finish_run(
                "0001-aaaa",
                &RunFinish {
                    status: RunStatus::Succeeded,
                    outputs: serde_json::json!({"out": "x"}),
                    error: None,
                    finished_at: Utc::now(),
                },
                &[Event::RunFinished {
                    run_id: "0001-aaaa".into(),
                    status: RunStatus::Succeeded,
                    duration_ms: 50,
                }],
            )
            .await?;
    }
    let store = SqliteStore::open(&path).await?;
    let got = store.get_run("0001").await?;
    assert_eq!(got.status, "succeeded");
    assert_eq!(got.inputs, serde_json::json!({"topic": "tea"}));
    assert_eq!(got.outputs, Some(serde_json::json!({"out": "x"})));
    assert_eq!(got.steps.len(), 2);
    let a = &got.steps[0];
    assert_eq!(a.step_id, "a");
    assert_eq!(a.output_json, Some(serde_json::json!({"ok": true})));
    assert_eq!(
        a.reasoning.as_deref(),
        Some("The user wants a yes: ok is true.")
    );
    assert_eq!(
        a.usage,
        Some(Usage {
            prompt_tokens: 12,
            completion_tokens: 5
        })
    );
    assert_eq!(a.attempts.len(), 2);
    assert_eq!(
        a.attempts[0].error_kind,
        Some(ProviderErrorKind::Unavailable)
    );
    assert_eq!(a.attempts[1].first_token_ms, Some(7));
    assert_eq!(a.fallbacks, step("a").fallbacks);
    assert_eq!(got.steps[1].status, StepStatus::Skipped);
    assert_eq!(got.steps[1].usage, None);
    let names: Vec<&str> = got.events.iter().map(Event::name).collect();
    assert_eq!(names, vec!["step_succeeded", "run_finished"]);

    let list = store.list_runs(10).await?;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].tokens, 17);
    Ok(())
}

#[tokio::test]
async fn run_ids_resolve_by_unique_prefix() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("runs.db")).await?;
    store.create_run(&run("abc-1")).await?;
    store.create_run(&run("abc-2")).await?;
    assert_eq!(store.resolve_run_id("abc-2").await?, "abc-2");
    assert!(matches!(
        store.resolve_run_id("abc").await,
        Err(Error::Ambiguous(_))
    ));
    assert!(matches!(
        store.resolve_run_id("zzz").await,
        Err(Error::NotFound(_))
    ));
    // LIKE wildcards in the prefix are taken literally.
    assert!(matches!(
        store.resolve_run_id("abc_").await,
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        store.resolve_run_id("%").await,
        Err(Error::NotFound(_))
    ));
    // A step written twice for one run is refused (the engine records each step once).
    let s = step("a");
    store.record_steps("abc-1", &[&s], &[]).await?;
    assert!(store.record_steps("abc-1", &[&s], &[]).await.is_err());
    Ok(())
}

/// A child run (id: the parent's id and the step's path) is stored with its parent, is
/// read back for the parent's resume, and its parent's full id still resolves although
/// it is a prefix of the child's.
#[tokio::test]
async fn a_child_run_is_linked_to_its_parent_and_read_back() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("runs.db")).await?;
    store.create_run(&run("p-1")).await?;
    let mut child = run("p-1.each[2].summarize");
    child.parent = Some(("p-1".into(), "each[2].summarize".into()));
    store.create_run(&child).await?;
    assert_eq!(store.resolve_run_id("p-1").await?, "p-1");
    assert!(store.child_run("p-1.other").await?.is_none());
    store
        .record_steps("p-1.each[2].summarize", &[&step("a")], &[])
        .await?;
    let got = store
        .child_run("p-1.each[2].summarize")
        .await?
        .expect("stored");
    assert_eq!(got.status, RunStatus::Running);
    assert_eq!(got.steps.len(), 1);
    assert_eq!(got.steps[0].step_id, "a");
    let parent: Option<String> =
        sqlx::query_scalar("SELECT parent_run_id FROM runs WHERE run_id = 'p-1.each[2].summarize'")
            .fetch_one(
                &sqlx::SqlitePool::connect(&format!(
                    "sqlite://{}",
                    dir.path().join("runs.db").display()
                ))
                .await?,
            )
            .await?;
    assert_eq!(parent.as_deref(), Some("p-1"));
    Ok(())
}

#[tokio::test]
async fn a_heartbeat_reaches_the_run_and_its_unfinished_children_only() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("runs.db")).await?;
    // Children are `<id>.<step path>` and `<id>:on_failure`; `p-1x`, `p-10` and `p-1/`
    // only share a prefix; `p-1.done` is finished.
    for id in [
        "p-1",
        "p-1.each[0].s",
        "p-1:on_failure",
        "p-1x",
        "p-10",
        "p-1/",
        "p-1.done",
    ] {
        store.create_run(&run(id)).await?;
    }
    store
        .finish_run(
            "p-1.done",
            &RunFinish {
                status: RunStatus::Succeeded,
                outputs: serde_json::json!({}),
                error: None,
                finished_at: Utc::now(),
            },
            &[],
        )
        .await?;
    let pool = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}",
        dir.path().join("runs.db").display()
    ))
    .await?;
    sqlx::query("UPDATE runs SET heartbeat_at = 'long ago'")
        .execute(&pool)
        .await?;
    store.heartbeat("p-1").await?;
    for (id, alive) in [
        ("p-1", true),
        ("p-1.each[0].s", true),
        ("p-1:on_failure", true),
        ("p-1x", false),
        ("p-10", false),
        ("p-1/", false),
        ("p-1.done", false),
    ] {
        let beat: String = sqlx::query_scalar("SELECT heartbeat_at FROM runs WHERE run_id = ?")
            .bind(id)
            .fetch_one(&pool)
            .await?;
        assert_eq!(beat != "long ago", alive, "{id}: {beat}");
    }
    Ok(())
}

#[tokio::test]
async fn durability_is_a_setting_applied_to_every_connection() -> anyhow::Result<()> {
    use nexus_store::Durability;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("d.db");
    let full = SqliteStore::open_with(&path, Durability::PowerLoss).await?;
    // Several connections (parallel steps write at once): each one syncs.
    let checks = (0..8).map(|_| full.durability());
    for level in futures::future::try_join_all(checks).await? {
        assert_eq!(level, Durability::PowerLoss);
    }
    full.create_run(&run("r-full")).await?;
    assert_eq!(full.get_run("r-full").await?.run_id, "r-full");
    drop(full);
    let normal = SqliteStore::open_with(&path, Durability::Process).await?;
    assert_eq!(normal.durability().await?, Durability::Process);
    assert_eq!(Durability::default(), Durability::Process);
    // SAFETY: nextest runs each test in its own process; this runtime is
    // single-threaded, nothing reads the environment concurrently.
    unsafe { std::env::set_var("NEXUS_DB_SYNC", "full") };
    assert_eq!(Durability::from_env()?, Durability::PowerLoss);
    let from_env = SqliteStore::open(&path).await?;
    assert_eq!(from_env.durability().await?, Durability::PowerLoss);
    unsafe { std::env::set_var("NEXUS_DB_SYNC", "sometimes") };
    let refused = SqliteStore::open(&path).await;
    assert!(
        matches!(&refused, Err(Error::Setting(m)) if m.contains("`full`")),
        "{refused:?}"
    );
    Ok(())
}

/// Step writes that arrive together are committed together (group commit) without
/// changing what each caller sees: every write returns once its records are stored, the
/// records of a run keep distinct sequence numbers in the order they were queued per
/// caller, and a bad write in a group (a step recorded twice) fails only its caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_step_writes_are_grouped_and_a_bad_one_fails_alone() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = std::sync::Arc::new(SqliteStore::open(&dir.path().join("runs.db")).await?);
    store.create_run(&run("g-1")).await?;
    store.create_run(&run("g-2")).await?;
    store.record_steps("g-1", &[&step("dup")], &[]).await?;
    let mut tasks = tokio::task::JoinSet::new();
    for k in 0..60 {
        let store = std::sync::Arc::clone(&store);
        tasks.spawn(async move {
            let (run_id, id) = match k {
                30 => ("g-1", "dup".to_string()),
                _ if k % 2 == 0 => ("g-1", format!("s{k}")),
                _ => ("g-2", format!("s{k}")),
            };
            (k, store.record_steps(run_id, &[&step(&id)], &[]).await)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let (k, result) = joined?;
        if k == 30 {
            assert!(result.is_err(), "the duplicate write must fail");
        } else {
            assert!(result.is_ok(), "write {k} failed: {result:?}");
        }
    }
    for (run_id, count) in [("g-1", 30), ("g-2", 30)] {
        let stored = store.get_run(run_id).await?;
        assert_eq!(stored.steps.len(), count, "{run_id}");
        let seqs: Vec<i64> =
            sqlx::query_scalar("SELECT seq FROM steps WHERE run_id = ? ORDER BY seq")
                .bind(run_id)
                .fetch_all(
                    &sqlx::SqlitePool::connect(&format!(
                        "sqlite://{}",
                        dir.path().join("runs.db").display()
                    ))
                    .await?,
                )
                .await?;
        let want: Vec<i64> = (1..=i64::try_from(count)?).collect();
        assert_eq!(seqs, want, "{run_id}: one sequence number per step");
    }
    Ok(())
}

/// A run keeps the trigger that started it, and the list filters by a trigger's kind or
/// name (`manual`: the runs a person started).
#[tokio::test]
async fn runs_record_and_filter_by_their_trigger() -> anyhow::Result<()> {
    use nexus_engine::store::RunTrigger;
    use nexus_store::RunFilter;
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(&dir.path().join("runs.db")).await?;
    store.create_run(&run("0001-person")).await?;
    let mut nightly = run("0002-nightly");
    nightly.trigger = Some(RunTrigger {
        kind: "cron".into(),
        name: "nightly".into(),
    });
    store.create_run(&nightly).await?;
    let mut hook = run("0003-hook");
    hook.trigger = Some(RunTrigger {
        kind: "webhook".into(),
        name: "webhook".into(),
    });
    store.create_run(&hook).await?;
    let ids = |filter: Option<&str>| {
        let store = &store;
        let filter = RunFilter {
            trigger: filter.map(str::to_string),
        };
        async move {
            let mut ids: Vec<String> = store
                .list_runs_where(10, &filter)
                .await
                .expect("list")
                .into_iter()
                .map(|r| r.run_id)
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(ids(None).await.len(), 3);
    assert_eq!(ids(Some("cron")).await, ["0002-nightly"]);
    assert_eq!(ids(Some("nightly")).await, ["0002-nightly"]);
    assert_eq!(ids(Some("webhook")).await, ["0003-hook"]);
    assert_eq!(ids(Some("manual")).await, ["0001-person"]);
    assert!(ids(Some("file")).await.is_empty());
    let stored = store.get_run("0002-nightly").await?;
    assert_eq!(stored.trigger, nightly.trigger);
    let listed = store.list_runs(10).await?;
    let person = listed
        .iter()
        .find(|r| r.run_id == "0001-person")
        .expect("listed");
    assert_eq!(person.trigger, None);
    Ok(())
}

/// A cron fire is claimed once: a second claim of the same or an earlier time is refused,
/// also through a second connection to the same file (another process) and after
/// reopening it (a restart), and the last fire is read back.
#[tokio::test]
async fn a_fire_is_claimed_once_across_connections_and_restarts() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("runs.db");
    let nine: chrono::DateTime<Utc> = "2027-01-11T09:00:00Z".parse()?;
    let ten: chrono::DateTime<Utc> = "2027-01-11T10:00:00Z".parse()?;
    {
        let a = SqliteStore::open(&path).await?;
        let b = SqliteStore::open(&path).await?;
        assert_eq!(a.last_fire("wf", "cron").await?, None);
        assert!(a.claim_fire("wf", "cron", nine).await?);
        assert!(
            !b.claim_fire("wf", "cron", nine).await?,
            "the same fire twice"
        );
        assert!(b.claim_fire("wf", "other", nine).await?, "another trigger");
        assert_eq!(b.last_fire("wf", "cron").await?, Some(nine));
    }
    let reopened = SqliteStore::open(&path).await?;
    assert!(!reopened.claim_fire("wf", "cron", nine).await?);
    assert!(reopened.claim_fire("wf", "cron", ten).await?);
    assert!(
        !reopened.claim_fire("wf", "cron", nine).await?,
        "an earlier fire"
    );
    assert_eq!(reopened.last_fire("wf", "cron").await?, Some(ten));
    Ok(())
}
