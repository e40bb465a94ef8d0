//! The seeds' example workflows (workflows/) on the embedded model, checked in the stored
//! run: map items, loop iterations, switch branches, error handlers and the global
//! failure handler. The model decides what the steps say; the checks hold whatever it
//! says (each branch taken must agree with the stored value that chose it).

use std::collections::BTreeMap;
use std::sync::Arc;

use nexus_engine::events::{RunStatus, StepStatus};
use nexus_engine::{EngineConfig, RunOptions};
use nexus_store::StoredRun;

use crate::{embedded, engine, example, temp_store};

/// A finished example run: the report, the stored run, the store and its folder.
type Finished = (
    nexus_engine::RunReport,
    StoredRun,
    Arc<nexus_store::SqliteStore>,
    tempfile::TempDir,
);

/// Runs an example with `inputs` on the embedded model, storing it.
async fn run_example(name: &str, inputs: &[(&str, &str)]) -> anyhow::Result<Finished> {
    let (store, dir) = temp_store().await?;
    let plan = example(name);
    let given: BTreeMap<String, String> = inputs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let inputs = nexus_engine::resolve_inputs(&plan, &given)
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let engine = engine(
        vec![embedded()?],
        Some(store.clone()),
        EngineConfig::default(),
    );
    let report = engine.run(plan, inputs, RunOptions::default()).await?;
    let stored = store.get_run(&report.run_id).await?;
    Ok((report, stored, store, dir))
}

fn rec<'a>(run: &'a StoredRun, id: &str) -> &'a nexus_engine::store::StepRecord {
    run.steps
        .iter()
        .find(|s| s.step_id == id)
        .unwrap_or_else(|| panic!("no stored step `{id}`"))
}

fn json(run: &StoredRun, id: &str) -> serde_json::Value {
    rec(run, id).output_json.clone().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_development_maps_over_its_task_list_and_resolves_issues_only_when_found()
-> anyhow::Result<()> {
    let (report, run, _store, _dir) = run_example("feature-development.yaml", &[]).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    // One implementation item per task of the breakdown, each stored under its path.
    let tasks = json(&run, "task_breakdown")["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!((1..=3).contains(&tasks.len()), "{tasks:?}");
    let map = json(&run, "implementation_tasks");
    assert_eq!(map["results"].as_array().map(Vec::len), Some(tasks.len()));
    assert_eq!(map["succeeded"], tasks.len());
    for (k, task) in tasks.iter().enumerate() {
        let item = rec(&run, &format!("implementation_tasks[{k}].implement"));
        assert_eq!(item.status, StepStatus::Succeeded);
        assert_eq!(
            item.model.as_deref(),
            Some("embedded:smollm2-135m-instruct")
        );
        let title = task["title"].as_str().unwrap_or_default();
        assert!(
            item.input.as_deref().unwrap_or_default().contains(title),
            "item {k}"
        );
        assert_eq!(map["results"][k].as_str(), item.output.as_deref());
    }
    // Issue resolution ran exactly when a review found issues; final validation with it.
    let found = json(&run, "test_execution")["has_issues"] == true
        || json(&run, "security_review")["has_issues"] == true;
    let want = if found {
        StepStatus::Succeeded
    } else {
        StepStatus::Skipped
    };
    assert_eq!(rec(&run, "issue_resolution").status, want);
    assert_eq!(rec(&run, "final_validation").status, want);
    assert_eq!(
        rec(&run, "documentation_review").status,
        StepStatus::Succeeded
    );
    // The completion outputs follow the seed's conditions.
    let outputs = run.outputs.clone().unwrap_or_default();
    let implemented = if found {
        "issue_resolution"
    } else {
        "integration"
    };
    assert_eq!(
        outputs["implemented_feature"].as_str(),
        rec(&run, implemented).output.as_deref()
    );
    let validation = if found {
        "validated after fixes"
    } else {
        "passed without fixes"
    };
    assert_eq!(outputs["validation"], validation);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn project_setup_takes_the_branches_its_plan_and_review_decide() -> anyhow::Result<()> {
    let (report, run, _store, _dir) = run_example("project-setup.yaml", &[]).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let scaffold = json(&run, "create_plan")["requires_scaffolding"] == true;
    assert_eq!(
        rec(&run, "setup_decisions").output.as_deref(),
        Some(if scaffold { "scaffold" } else { "default" })
    );
    let want = if scaffold {
        StepStatus::Succeeded
    } else {
        StepStatus::Skipped
    };
    assert_eq!(rec(&run, "scaffold_project").status, want);
    // The repository is set up on either branch (join rule `none_failed`).
    let repo = rec(&run, "setup_repository")
        .output
        .clone()
        .unwrap_or_default();
    assert_eq!(repo.contains("(from the scaffold)"), scaffold, "{repo}");
    let issues = json(&run, "review_code")["issues"]
        .as_array()
        .map_or(0, Vec::len);
    let fix = if issues > 0 {
        StepStatus::Succeeded
    } else {
        StepStatus::Skipped
    };
    assert_eq!(rec(&run, "fix_issues").status, fix);
    let tests = rec(&run, "run_tests").output.clone().unwrap_or_default();
    assert_eq!(tests.contains("after fixes"), issues > 0, "{tests}");
    assert_eq!(rec(&run, "deploy_project").status, StepStatus::Succeeded);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_processing_hands_failures_to_its_handlers_and_the_global_handler()
-> anyhow::Result<()> {
    // A broken source: the fetch fails, its handler reads the error, the backup is used,
    // and the run succeeds.
    let (report, run, _store, _dir) =
        run_example("data-processing.yaml", &[("source", "broken")]).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let fetch = rec(&run, "fetch_data");
    assert_eq!(fetch.status, StepStatus::Failed);
    assert!(fetch.handled, "the failure is stored as handled");
    let incident = rec(&run, "handle_fetch_error")
        .output
        .clone()
        .unwrap_or_default();
    assert!(
        incident.starts_with("incident (high): step fetch_data failed: template failed"),
        "{incident}"
    );
    assert_eq!(rec(&run, "use_backup_data").status, StepStatus::Succeeded);
    assert_eq!(rec(&run, "transform_data").status, StepStatus::Succeeded);
    assert_eq!(
        run.outputs.clone().unwrap_or_default()["data_from"],
        "backup"
    );
    assert_eq!(report.on_failure_run, None);

    // A failure nothing handles: the run fails and the global handler runs as a linked
    // child run that names the failed step.
    let (report, run, store, _dir) =
        run_example("data-processing.yaml", &[("notify", "broken")]).await?;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!(rec(&run, "handle_fetch_error").status, StepStatus::Skipped);
    let (handler_id, status) = report
        .on_failure_run
        .clone()
        .expect("the global handler ran");
    assert_eq!(status, RunStatus::Succeeded);
    let handler = store.get_run(&handler_id).await?;
    assert_eq!(handler.workflow_id, "global-error-handler");
    let logged = handler.outputs.clone().unwrap_or_default()["logged"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(logged.contains(&report.run_id), "{logged}");
    assert!(
        logged.contains("send_notification (template failed"),
        "{logged}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draft_critique_revise_carries_its_state_until_the_score_is_reached() -> anyhow::Result<()>
{
    let (report, run, _store, _dir) = run_example("draft-critique-revise.yaml", &[]).await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let out = json(&run, "refine");
    let rounds = out["iterations"].as_u64().unwrap_or_default() as usize;
    assert!((1..=3).contains(&rounds), "{out}");
    let mut draft = rec(&run, "draft").output.clone().unwrap_or_default();
    for k in 0..rounds {
        // Each round critiques the draft the previous round left.
        let critique = rec(&run, &format!("refine[{k}].critique"));
        let shown: String = draft.chars().take(40).collect();
        assert!(
            critique
                .input
                .as_deref()
                .unwrap_or_default()
                .contains(shown.trim()),
            "round {k}"
        );
        let score = critique
            .output_json
            .as_ref()
            .and_then(|j| j["score"].as_i64())
            .unwrap_or_default();
        let last = k + 1 == rounds;
        // Rounds before the last scored below the target; the loop stopped by `until`
        // only when the last one reached it.
        if !last {
            assert!(score < 8, "round {k} scored {score} but the loop went on");
        } else if out["stopped_by"] == "until" {
            assert!(score >= 8, "stopped by `until` at score {score}");
        } else {
            assert_eq!(
                (out["stopped_by"].as_str(), rounds),
                (Some("max_iterations"), 3)
            );
        }
        draft = rec(&run, &format!("refine[{k}].revise"))
            .output
            .clone()
            .unwrap_or_default();
    }
    assert_eq!(out["state"]["draft"].as_str(), Some(draft.as_str()));
    assert!(
        !run.steps
            .iter()
            .any(|s| s.step_id == format!("refine[{rounds}].critique"))
    );
    Ok(())
}
