//! The DAG scheduler.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::Utc;
use tokio::task::JoinSet;

use super::budget::Spend;
use super::emit::Emitter;
use super::ladder::LlmContext;
use super::records::{apply_on_failure, final_event, keep_record, record_for};
use super::templates::render;
use super::{Engine, EngineError, Finished, RunOptions, RunReport, RunShared, StepOutput, ms};
use crate::events::{Event, RunStatus, StepStatus};
use crate::plan::{Action, Plan};
use crate::select::Catalog;
use crate::store::{RunFinish, RunRecord, StepRecord};
use crate::workflow::OutputFormat;

impl Engine {
    /// Runs a validated plan with resolved inputs (see [`crate::plan::resolve_inputs`]),
    /// or continues an interrupted run ([`RunOptions::resume`]).
    ///
    /// Returns when every step has finished, failed, been skipped or cancelled. A step
    /// failure is reported in the [`RunReport`], not as an error.
    ///
    /// # Errors
    /// [`EngineError::Store`] when the run's state cannot be stored;
    /// [`EngineError::Guardrails`] when the workflow's rules do not compile.
    pub async fn run(
        self: &Arc<Self>,
        plan: Arc<Plan>,
        inputs: serde_json::Map<String, serde_json::Value>,
        options: RunOptions,
    ) -> Result<RunReport, EngineError> {
        let started = Instant::now();
        let run_id = options
            .run_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        let emitter = Arc::new(Emitter {
            sinks: options.sinks.clone(),
            buffer: Mutex::new(Vec::new()),
        });
        let inputs = Arc::new(inputs);
        let n = plan.steps.len();
        self.load_state().await?;

        // Guardrails: rules for every text, and rules only for text bound to the cloud.
        let rules = match &plan.workflow.guardrails {
            Some(g) if !g.enabled => Vec::new(),
            Some(g) if !g.rules.is_empty() => g.rules.clone(),
            _ => nexus_guard::default_rules(),
        };
        let policy_of =
            |scope: nexus_guard::Scope| -> Result<Option<nexus_guard::Policy>, EngineError> {
                let chosen: Vec<nexus_guard::Rule> =
                    rules.iter().filter(|r| r.scope == scope).copied().collect();
                if chosen.is_empty() {
                    return Ok(None);
                }
                nexus_guard::Policy::new(chosen)
                    .map(Some)
                    .map_err(|e| EngineError::Guardrails(e.to_string()))
            };
        let guard = policy_of(nexus_guard::Scope::All)?;
        let guard_cloud = policy_of(nexus_guard::Scope::Cloud)?;

        let prior = options.resume.clone().unwrap_or_default();
        if let Some(store) = &self.store {
            if options.resume.is_some() {
                store
                    .set_run_status(
                        &run_id,
                        RunStatus::Running,
                        &[Event::RunResumed {
                            run_id: run_id.clone(),
                            completed_steps: prior.len(),
                        }],
                    )
                    .await?;
            } else {
                store
                    .create_run(&RunRecord {
                        run_id: run_id.clone(),
                        workflow_id: plan.workflow.id.clone(),
                        workflow_name: plan.workflow.name.clone(),
                        workflow_version: plan.workflow.version.clone(),
                        file: plan.file.clone(),
                        inputs: serde_json::Value::Object((*inputs).clone()),
                        workflow: serde_json::to_value(&plan.workflow).ok(),
                        started_at: Utc::now(),
                    })
                    .await?;
            }
        }
        if options.resume.is_some() {
            emitter.publish(&[Event::RunResumed {
                run_id: run_id.clone(),
                completed_steps: prior.len(),
            }]);
        } else {
            emitter.emit(Event::RunStarted {
                run_id: run_id.clone(),
                workflow_id: plan.workflow.id.clone(),
                steps: n,
            });
        }

        let has_llm = plan
            .steps
            .iter()
            .any(|s| matches!(s.action, Action::Llm(_)));
        let catalog = Arc::new(if has_llm {
            self.discover().await
        } else {
            Catalog::default()
        });
        let shared = Arc::new(RunShared {
            run_id: run_id.clone(),
            emitter: Arc::clone(&emitter),
            cancel: options.cancel.clone(),
            human: options.human.clone(),
            spend: Mutex::new(Spend::default()),
            budget: plan.workflow.budget.clone(),
            guard,
            guard_cloud,
            use_cache: options.use_cache,
            catalog,
            control: options.control.clone(),
        });

        let mut pending: Vec<usize> = plan.steps.iter().map(|s| s.needs.len()).collect();
        let mut status: Vec<Option<StepStatus>> = vec![None; n];
        let mut outputs: Vec<Option<Arc<StepOutput>>> = vec![None; n];
        let mut records: Vec<StepRecord> = Vec::with_capacity(n);
        for rec in prior {
            let Some(&i) = plan.index.get(&rec.step_id) else {
                continue;
            };
            if status[i].is_some() {
                continue;
            }
            keep_record(&plan, i, &rec, &mut status, &mut outputs, &mut pending);
            // What the interrupted run already spent (cached steps spent nothing).
            if let Ok(mut spend) = shared.spend.lock() {
                spend.tokens += rec
                    .attempts
                    .iter()
                    .filter_map(|a| a.usage)
                    .map(|u| u.prompt_tokens + u.completion_tokens)
                    .sum::<u64>();
                spend.cost_usd += rec.cost_usd.unwrap_or(0.0);
            }
            records.push(rec);
        }
        // Reused outputs and steps outside `only`: recorded at once, like kept records.
        let mut extra: Vec<StepRecord> = Vec::new();
        if let Some((from, reused)) = &options.reuse {
            for rec in reused {
                let Some(&i) = plan.index.get(&rec.step_id) else {
                    continue;
                };
                if status[i].is_some() || rec.status != StepStatus::Succeeded {
                    continue;
                }
                let mut r = rec.clone();
                r.cached = true;
                r.model_reason = Some(format!(
                    "output reused from run {from}{}",
                    rec.model_reason
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                ));
                r.attempts.clear();
                r.fallbacks.clear();
                r.usage = None;
                r.cost_usd = None;
                r.duration_ms = 0;
                r.started_at = Utc::now();
                status[i] = Some(StepStatus::Succeeded);
                extra.push(r);
            }
        }
        if let Some(only) = &options.only {
            let wanted = plan.ancestors(only);
            for (i, step) in plan.steps.iter().enumerate() {
                if status[i].is_none() && !wanted.contains(&i) {
                    status[i] = Some(StepStatus::Skipped);
                    extra.push(record_for(
                        step,
                        StepStatus::Skipped,
                        Some(&format!("not needed to run up to `{}`", only.join("`, `"))),
                        Utc::now(),
                    ));
                }
            }
        }
        if !extra.is_empty() {
            let finals: Vec<Event> = extra
                .iter()
                .filter_map(|r| {
                    plan.index
                        .get(&r.step_id)
                        .map(|&i| final_event(&run_id, &plan.steps[i], r))
                })
                .collect();
            if let Some(store) = &self.store {
                let mut events = emitter.drain();
                events.extend(finals.iter().cloned());
                let batch: Vec<&StepRecord> = extra.iter().collect();
                store.record_steps(&run_id, &batch, &events).await?;
            }
            emitter.publish(&finals);
            for rec in extra {
                let Some(&i) = plan.index.get(&rec.step_id) else {
                    continue;
                };
                keep_record(&plan, i, &rec, &mut status, &mut outputs, &mut pending);
                records.push(rec);
            }
        }
        let mut ready: Vec<usize> = (0..n)
            .filter(|&i| pending[i] == 0 && status[i].is_none())
            .rev()
            .collect();
        let mut tasks: JoinSet<Finished> = JoinSet::new();
        let mut task_steps: HashMap<tokio::task::Id, usize> = HashMap::new();
        let mut cancelled = false;
        let mut paused = false;
        let mut pause_rx = options.control.subscribe();
        let mut store_error: Option<EngineError> = None;

        loop {
            let mut done: Vec<Finished> = Vec::new();
            if options.cancel.is_cancelled() {
                cancelled = true;
            }
            let paused_now = options.control.is_paused() && !cancelled;
            if paused_now != paused {
                paused = paused_now;
                let (event, run_status) = if paused {
                    (
                        Event::RunPaused {
                            run_id: run_id.clone(),
                        },
                        RunStatus::Paused,
                    )
                } else {
                    (
                        Event::RunResumed {
                            run_id: run_id.clone(),
                            completed_steps: records.len(),
                        },
                        RunStatus::Running,
                    )
                };
                if let Some(store) = &self.store
                    && let Err(e) = store
                        .set_run_status(&run_id, run_status, std::slice::from_ref(&event))
                        .await
                {
                    store_error = Some(e.into());
                    options.cancel.cancel();
                }
                emitter.publish(&[event]);
            }
            // Start what is ready.
            while !paused && (tasks.len() < self.config.max_parallel.max(1) || !ready.is_empty()) {
                let Some(i) = ready.pop() else { break };
                let step = &plan.steps[i];
                let now = Utc::now();
                if cancelled || store_error.is_some() {
                    done.push((
                        i,
                        record_for(
                            step,
                            StepStatus::Cancelled,
                            Some("the run was cancelled before the step started"),
                            now,
                        ),
                        None,
                    ));
                    continue;
                }
                let blocking = step.needs.iter().find(|&&d| {
                    if step.alternate_of == Some(d) {
                        status[d] != Some(StepStatus::Failed)
                    } else {
                        status[d] != Some(StepStatus::Succeeded)
                    }
                });
                if let Some(&dep) = blocking {
                    let why = if step.alternate_of == Some(dep) {
                        "did not fail (this step is its alternate branch)"
                    } else {
                        match status[dep] {
                            Some(StepStatus::Failed) => "failed",
                            Some(StepStatus::Cancelled) => "was cancelled",
                            _ => "was skipped",
                        }
                    };
                    done.push((
                        i,
                        record_for(
                            step,
                            StepStatus::Skipped,
                            Some(&format!("dependency `{}` {why}", plan.steps[dep].id)),
                            now,
                        ),
                        None,
                    ));
                    continue;
                }
                if let Some(when) = &step.when {
                    match render(&plan, when, &inputs, &step.reads, &outputs) {
                        Ok(v) if v.trim() == "true" => {}
                        Ok(_) => {
                            done.push((
                                i,
                                record_for(
                                    step,
                                    StepStatus::Skipped,
                                    Some("its `when` condition is false"),
                                    now,
                                ),
                                None,
                            ));
                            continue;
                        }
                        Err(e) => {
                            let rec = record_for(
                                step,
                                StepStatus::Failed,
                                Some(&format!("condition failed to evaluate: {e}")),
                                now,
                            );
                            done.push((i, rec, None));
                            continue;
                        }
                    }
                }
                match &step.action {
                    Action::Template { template, format } => {
                        let t0 = Instant::now();
                        let result = render(&plan, template, &inputs, &step.reads, &outputs)
                            .and_then(|text| match format {
                                OutputFormat::Text => Ok(StepOutput { text, json: None }),
                                OutputFormat::Json => serde_json::from_str(&text)
                                    .map(|json| StepOutput {
                                        text,
                                        json: Some(json),
                                    })
                                    .map_err(|e| format!("rendered text is not JSON: {e}")),
                            });
                        let mut rec = record_for(step, StepStatus::Succeeded, None, now);
                        rec.duration_ms = ms(t0.elapsed());
                        match result {
                            Ok(out) => {
                                rec.output = Some(out.text.clone());
                                rec.output_json = out.json.clone();
                                done.push((i, rec, Some(out)));
                            }
                            Err(e) => {
                                rec.status = StepStatus::Failed;
                                rec.error = Some(format!("template failed: {e}"));
                                done.push((i, rec, None));
                            }
                        }
                    }
                    Action::Approval { prompt, settings } => {
                        if tasks.len() >= self.config.max_parallel.max(1) {
                            ready.push(i);
                            break;
                        }
                        let message = match render(&plan, prompt, &inputs, &step.reads, &outputs) {
                            Ok(m) => m,
                            Err(e) => {
                                let rec = record_for(
                                    step,
                                    StepStatus::Failed,
                                    Some(&format!("question failed to render: {e}")),
                                    now,
                                );
                                done.push((i, rec, None));
                                continue;
                            }
                        };
                        let engine = Arc::clone(self);
                        let sh = Arc::clone(&shared);
                        let step = step.clone();
                        let settings = settings.clone();
                        let handle = tasks.spawn(async move {
                            let (rec, out) = engine
                                .run_approval_step(&sh, &step, message, &settings)
                                .await;
                            (i, rec, out)
                        });
                        task_steps.insert(handle.id(), i);
                    }
                    Action::Llm(llm) => {
                        if tasks.len() >= self.config.max_parallel.max(1) {
                            ready.push(i);
                            break;
                        }
                        let r = |t: &str| render(&plan, t, &inputs, &step.reads, &outputs);
                        let prompt = r(&llm.prompt);
                        let system = llm.system.as_deref().map(r).transpose();
                        let substitute_system = llm
                            .substitute
                            .as_ref()
                            .and_then(|s| s.system.as_deref())
                            .map(r)
                            .transpose();
                        let (prompt, system, substitute_system) =
                            match (prompt, system, substitute_system) {
                                (Ok(p), Ok(s), Ok(ss)) => (p, s, ss),
                                (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                                    let rec = record_for(
                                        step,
                                        StepStatus::Failed,
                                        Some(&format!("prompt failed to render: {e}")),
                                        now,
                                    );
                                    done.push((i, rec, None));
                                    continue;
                                }
                            };
                        let engine = Arc::clone(self);
                        let ctx = LlmContext {
                            sh: Arc::clone(&shared),
                            step: step.clone(),
                            llm: (**llm).clone(),
                            prompt,
                            system,
                            substitute_system,
                            cancel: options.cancel.child_token(),
                        };
                        let handle = tasks.spawn(async move {
                            let (rec, out) = engine.run_llm_step(ctx).await;
                            (i, rec, out)
                        });
                        task_steps.insert(handle.id(), i);
                    }
                }
            }

            if done.is_empty() {
                // Nothing in flight and nothing ready: done, paused or not.
                if tasks.is_empty() && (ready.is_empty() || !paused) {
                    break;
                }
                tokio::select! {
                    joined = tasks.join_next_with_id(), if !tasks.is_empty() => {
                        if let Some(res) = joined {
                            done.push(self.joined(&plan, &task_steps, res));
                        }
                    }
                    () = options.cancel.cancelled(), if !cancelled => {
                        cancelled = true;
                        continue;
                    }
                    changed = pause_rx.changed() => {
                        if changed.is_err() {
                            // The control was dropped: nobody can resume, so do not wait.
                            options.control.resume();
                        }
                        continue;
                    }
                }
                while let Some(res) = tasks.try_join_next_with_id() {
                    done.push(self.joined(&plan, &task_steps, res));
                }
            }

            // Apply `on_failure` to failed steps.
            for (i, rec, out) in &mut done {
                if rec.status == StepStatus::Failed && !rec.handled {
                    apply_on_failure(&plan.steps[*i], rec, out);
                }
            }

            // Store the batch, then announce it, then release dependants.
            let mut finals = Vec::with_capacity(done.len());
            for (i, rec, _) in &done {
                finals.push(final_event(&run_id, &plan.steps[*i], rec));
            }
            if let Some(store) = &self.store
                && store_error.is_none()
            {
                let mut events = emitter.drain();
                events.extend(finals.iter().cloned());
                let batch: Vec<&StepRecord> = done.iter().map(|(_, r, _)| r).collect();
                if let Err(e) = store.record_steps(&run_id, &batch, &events).await {
                    store_error = Some(e.into());
                    options.cancel.cancel();
                }
            }
            emitter.publish(&finals);
            for (i, rec, out) in done {
                status[i] = Some(rec.status);
                outputs[i] = out.map(Arc::new);
                records.push(rec);
                for &d in &plan.dependants[i] {
                    pending[d] -= 1;
                    // A step already recorded (reused, or outside `only`) is not run.
                    if pending[d] == 0 && status[d].is_none() {
                        ready.push(d);
                    }
                }
            }
        }

        if let Some(e) = store_error {
            return Err(e);
        }

        let any_failed = records
            .iter()
            .any(|r| r.status == StepStatus::Failed && !r.handled);
        let run_status = if cancelled || options.cancel.is_cancelled() {
            RunStatus::Cancelled
        } else if any_failed {
            RunStatus::Failed
        } else {
            RunStatus::Succeeded
        };
        let mut out_values = serde_json::Map::new();
        for (name, tmpl, reads) in &plan.outputs {
            let value = if reads
                .iter()
                .all(|&r| status[r] == Some(StepStatus::Succeeded))
            {
                match render(&plan, tmpl, &inputs, reads, &outputs) {
                    Ok(text) => serde_json::Value::String(text),
                    Err(e) => serde_json::Value::String(format!("<output failed to render: {e}>")),
                }
            } else {
                serde_json::Value::Null
            };
            out_values.insert(name.clone(), value);
        }
        let error = match run_status {
            RunStatus::Cancelled => Some("the run was cancelled".to_string()),
            RunStatus::Failed => {
                let failed: Vec<String> = records
                    .iter()
                    .filter(|r| r.status == StepStatus::Failed && !r.handled)
                    .map(|r| format!("{}: {}", r.step_id, r.error.as_deref().unwrap_or("failed")))
                    .collect();
                Some(format!("step(s) failed: {}", failed.join("; ")))
            }
            _ => None,
        };
        let duration_ms = ms(started.elapsed());
        let finish_event = Event::RunFinished {
            run_id: run_id.clone(),
            status: run_status,
            duration_ms,
        };
        if let Some(store) = &self.store {
            let mut events = emitter.drain();
            events.push(finish_event.clone());
            store
                .finish_run(
                    &run_id,
                    &RunFinish {
                        status: run_status,
                        outputs: serde_json::Value::Object(out_values.clone()),
                        error: error.clone(),
                        finished_at: Utc::now(),
                    },
                    &events,
                )
                .await?;
        }
        emitter.publish(&[finish_event]);
        Ok(RunReport {
            run_id,
            status: run_status,
            outputs: out_values,
            steps: records,
            duration_ms,
            error,
        })
    }

    pub(super) fn joined(
        &self,
        plan: &Plan,
        task_steps: &HashMap<tokio::task::Id, usize>,
        res: Result<(tokio::task::Id, Finished), tokio::task::JoinError>,
    ) -> Finished {
        match res {
            Ok((_, value)) => value,
            Err(e) => {
                let i = task_steps.get(&e.id()).copied().unwrap_or(0);
                let rec = record_for(
                    &plan.steps[i],
                    StepStatus::Failed,
                    Some(&format!("internal error: {e}")),
                    Utc::now(),
                );
                (i, rec, None)
            }
        }
    }
}
