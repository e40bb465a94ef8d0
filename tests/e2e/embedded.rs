//! Example workflows on the embedded model (real tokens), recorded in a real SQLite file.

use nexus_engine::events::{Event, RunStatus, StepStatus};
use tokio_util::sync::CancellationToken;

use crate::{embedded, example, run_plan, temp_store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feature_spec_runs_on_the_embedded_model_and_is_stored() -> anyhow::Result<()> {
    let (store, _dir) = temp_store().await?;
    let (report, events) = run_plan(
        example("feature-spec.yaml"),
        vec![embedded()?],
        Some(store.clone()),
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);

    let stored = store.get_run(&report.run_id).await?;
    assert_eq!(stored.status, "succeeded");
    assert_eq!(stored.steps.len(), 4);
    for step in &stored.steps {
        assert_eq!(step.status, StepStatus::Succeeded, "{}", step.step_id);
        assert_eq!(
            step.model.as_deref(),
            Some("embedded:smollm2-135m-instruct")
        );
        let reason = step.model_reason.as_deref().unwrap_or_default();
        assert!(reason.contains("embedded model"), "why: {reason}");
        let usage = step.usage.expect("token counts stored");
        assert!(usage.prompt_tokens > 10, "{}: {usage:?}", step.step_id);
        assert!(usage.completion_tokens > 0, "{}: {usage:?}", step.step_id);
        assert_eq!(step.attempts.len(), 1);
        assert!(step.attempts[0].error_kind.is_none());
        assert!(step.attempts[0].first_token_ms.is_some());
        let output = step.output.as_deref().unwrap_or_default();
        assert!(
            output.trim().len() > 5,
            "{} output: {output:?}",
            step.step_id
        );
        // The prompt stored is the rendered one (upstream output substituted).
        if step.step_id == "architecture" {
            let req = stored
                .steps
                .iter()
                .find(|s| s.step_id == "requirements")
                .and_then(|s| s.output.clone())
                .unwrap_or_default();
            assert!(
                step.input
                    .as_deref()
                    .unwrap_or_default()
                    .contains(req.trim())
            );
        }
    }
    // Architecture and test plan depend only on requirements; summary comes last.
    assert_eq!(stored.steps[0].step_id, "requirements");
    assert_eq!(stored.steps[3].step_id, "summary");
    let outputs = stored.outputs.expect("outputs stored");
    assert!(
        outputs["summary"]
            .as_str()
            .is_some_and(|s| !s.trim().is_empty())
    );
    // Tokens streamed as events; the stored log has no token events but the rest.
    assert!(
        events
            .iter()
            .filter(|e| matches!(e, Event::Token { .. }))
            .count()
            > 20
    );
    let kinds: Vec<&str> = stored.events.iter().map(|e| e.name()).collect();
    assert_eq!(kinds.first(), Some(&"run_started"));
    assert_eq!(kinds.last(), Some(&"run_finished"));
    assert_eq!(kinds.iter().filter(|k| **k == "step_succeeded").count(), 4);
    assert!(!kinds.contains(&"token"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output_is_valid_json_following_the_schema() -> anyhow::Result<()> {
    let (store, _dir) = temp_store().await?;
    let (report, _) = run_plan(
        example("issue-triage.yaml"),
        vec![embedded()?],
        Some(store.clone()),
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let stored = store.get_run(&report.run_id).await?;
    for id in ["triage_a", "triage_b", "triage_c"] {
        let step = stored
            .steps
            .iter()
            .find(|s| s.step_id == id)
            .expect("step stored");
        let json = step.output_json.as_ref().expect("parsed JSON stored");
        let severity = json["severity"].as_str().unwrap_or_default();
        assert!(
            ["high", "medium", "low"].contains(&severity),
            "{id}: {json}"
        );
        assert!(json["area"].is_string(), "{id}: {json}");
    }
    let table = report.outputs["table"].as_str().unwrap_or_default();
    assert_eq!(table.lines().count(), 5, "{table}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_report_reads_its_file_input() -> anyhow::Result<()> {
    let (report, _) = run_plan(
        example("document-report.yaml"),
        vec![embedded()?],
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let key_points = report
        .steps
        .iter()
        .find(|s| s.step_id == "key_points")
        .expect("step");
    // The document's text (from workflows/data/market-notes.txt) reached the prompt.
    assert!(
        key_points
            .input
            .as_deref()
            .unwrap_or_default()
            .contains("espresso machines")
    );
    let text = report.outputs["report"].as_str().unwrap_or_default();
    assert!(text.starts_with("# Report for a product manager"), "{text}");
    assert!(text.contains("## Risks") && text.contains("## Opportunities"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_reply_cut_at_max_tokens_says_to_raise_max_tokens() -> anyhow::Result<()> {
    // Four tokens cannot close this object, so the model's grammar-constrained reply is
    // cut by the cap (`finish_reason: length`) on every attempt: the error names the cap.
    let yaml = "id: cut\nsteps:\n  - id: a\n    kind: llm\n    model: embedded\n    prompt: Describe the weather in Oslo in detail.\n    max_tokens: 4\n    temperature: 0\n    cache: false\n    output_schema:\n      type: object\n      required: [summary, forecast]\n      properties:\n        summary: {type: string, minLength: 20}\n        forecast: {type: string, minLength: 20}\n";
    let (report, _) = run_plan(
        crate::plan(yaml),
        vec![embedded()?],
        None,
        vec![],
        CancellationToken::new(),
    )
    .await?;
    assert_eq!(report.status, RunStatus::Failed, "{:?}", report.steps);
    let error = report.steps[0].error.as_deref().unwrap_or_default();
    assert!(
        error.contains("cut at `max_tokens` (4)")
            && error.contains("raise the step's `max_tokens`"),
        "{error}"
    );
    Ok(())
}
