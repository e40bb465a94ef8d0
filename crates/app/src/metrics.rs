//! Prometheus metrics of the runs this app starts, counted from their engine events
//! ([`Metrics`] is one more [`EventSink`] of every run [`crate::Desktop`] launches) and
//! encoded with the Prometheus client library (`prometheus-client`) in the Prometheus
//! text format 0.0.4, for `GET /metrics` of `nexus serve`.
//!
//! Invariants:
//! - memory stays bounded: the per-step state (start times, the wait for a first token)
//!   lives only while the step runs and the run is in flight; label values come from a
//!   closed set (statuses, error classes, ladder rungs) or are capped: at most
//!   [`MAX_LABEL_VALUES`] workflow ids and model names each, later ones counted as
//!   `other`;
//! - gauges that describe the present (runs in flight, open questions, breaker states)
//!   are set when scraped, from the app's own state and the breakers' store, so they never
//!   drift from a missed event;
//! - durations are in seconds and costs in USD, as Prometheus' naming conventions ask
//!   (`_seconds`, `_total`; <https://prometheus.io/docs/practices/naming/>).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nexus_engine::breaker::BreakerState;
use nexus_engine::{Event, EventSink};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// The `Content-Type` of [`Metrics::encode`]'s text (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// At most this many distinct workflow ids and model names each become label values;
/// later ones are counted under `other` (a server that runs texts posted to it could
/// otherwise grow without bound).
pub const MAX_LABEL_VALUES: usize = 200;

/// `{workflow, status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowStatus {
    workflow: String,
    status: String,
}

/// `{workflow}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkflowLabel {
    workflow: String,
}

/// `{status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: String,
}

/// `{model}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

/// `{model, kind}`: token kind `prompt` or `completion`; error class.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelKind {
    model: String,
    kind: String,
}

/// `{rung}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RungLabel {
    rung: String,
}

/// `{outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// `{model, state}`, as resilience4j's `resilience4j_circuitbreaker_state`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelState {
    model: String,
    state: String,
}

type Seconds = Family<StatusLabel, Histogram, fn() -> Histogram>;
type ModelSeconds = Family<ModelLabel, Histogram, fn() -> Histogram>;

/// Step durations: 10 ms to about 11 min, doubling.
fn step_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 17))
}

/// Time to first token: 50 ms to about 100 s, doubling.
fn first_token_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 12))
}

/// The metric families (cheap clones of shared atomics).
#[derive(Clone)]
struct Families {
    runs_started: Family<WorkflowLabel, Counter>,
    runs_finished: Family<WorkflowStatus, Counter>,
    runs_in_flight: Gauge,
    steps_finished: Family<WorkflowStatus, Counter>,
    step_seconds: Seconds,
    attempts_failed: Family<ModelKind, Counter>,
    retries: Family<ModelLabel, Counter>,
    fallbacks: Family<RungLabel, Counter>,
    tokens: Family<ModelKind, Counter>,
    cost: Family<ModelLabel, Counter<f64, std::sync::atomic::AtomicU64>>,
    first_token: ModelSeconds,
    questions_open: Gauge,
    breaker_state: Family<ModelState, Gauge>,
    notifications: Family<OutcomeLabel, Counter>,
}

impl Families {
    fn register(registry: &mut Registry) -> Families {
        let f = Families {
            runs_started: Family::default(),
            runs_finished: Family::default(),
            runs_in_flight: Gauge::default(),
            steps_finished: Family::default(),
            step_seconds: Family::new_with_constructor(step_buckets),
            attempts_failed: Family::default(),
            retries: Family::default(),
            fallbacks: Family::default(),
            tokens: Family::default(),
            cost: Family::default(),
            first_token: Family::new_with_constructor(first_token_buckets),
            questions_open: Gauge::default(),
            breaker_state: Family::default(),
            notifications: Family::default(),
        };
        let r = registry;
        r.register(
            "nexus_runs_started",
            "Runs started (not counting resumptions), by workflow id",
            f.runs_started.clone(),
        );
        r.register(
            "nexus_runs_finished",
            "Runs finished, by workflow id and final status",
            f.runs_finished.clone(),
        );
        r.register(
            "nexus_runs_in_flight",
            "Runs this process is running now (paused ones and ones waiting for a person or an event included)",
            f.runs_in_flight.clone(),
        );
        r.register(
            "nexus_steps_finished",
            "Steps finished, by workflow id and status (succeeded, failed, skipped, cancelled)",
            f.steps_finished.clone(),
        );
        r.register(
            "nexus_step_duration_seconds",
            "Wall time of finished steps over all their attempts, by status",
            f.step_seconds.clone(),
        );
        r.register(
            "nexus_attempts_failed",
            "Failed attempts, by model and error class",
            f.attempts_failed.clone(),
        );
        r.register(
            "nexus_retries",
            "Attempts retried on the same model after a backoff, by model",
            f.retries.clone(),
        );
        r.register(
            "nexus_fallbacks",
            "Fallbacks taken, by the rung of the fallback ladder",
            f.fallbacks.clone(),
        );
        r.register(
            "nexus_tokens",
            "Tokens of succeeded model steps as the provider counted them, by model and kind (prompt, completion)",
            f.tokens.clone(),
        );
        r.register(
            "nexus_cost_usd",
            "Estimated cost of succeeded steps, USD (catalog prices times token counts), by model",
            f.cost.clone(),
        );
        r.register(
            "nexus_time_to_first_token_seconds",
            "Time from an attempt's start to its first generated token, by model",
            f.first_token.clone(),
        );
        r.register(
            "nexus_questions_open",
            "Questions runs of this process wait on a person to answer",
            f.questions_open.clone(),
        );
        r.register(
            "nexus_breaker_state",
            "Circuit breakers: 1 for the state each model's breaker is in (closed, open, half_open), 0 for the others",
            f.breaker_state.clone(),
        );
        r.register(
            "nexus_notifications",
            "Notifications of runs, by outcome: outgoing webhooks delivered, failed or dropped; desktop notifications shown, or no_desktop in a process without one",
            f.notifications.clone(),
        );
        f
    }
}

/// What is tracked while runs and steps are in flight.
#[derive(Default)]
struct Live {
    /// Run id → workflow id (label value), while the run is in flight.
    runs: HashMap<String, String>,
    /// (run, step) → when its first attempt started.
    steps: HashMap<(String, String), Instant>,
    /// (run, step) → (attempt start, model), until its first token.
    first_token: HashMap<(String, String), (Instant, String)>,
    /// Workflow ids and model names given a label value of their own.
    workflows: HashSet<String>,
    models: HashSet<String>,
}

impl Live {
    fn workflow(&mut self, run_id: &str) -> String {
        self.runs
            .get(run_id)
            .cloned()
            .unwrap_or_else(|| "unknown".to_string())
    }
}

/// `value` as a label value when `seen` has room or holds it already, else `other`.
fn capped(seen: &mut HashSet<String>, value: &str) -> String {
    if seen.contains(value) {
        return value.to_string();
    }
    if seen.len() < MAX_LABEL_VALUES {
        seen.insert(value.to_string());
        return value.to_string();
    }
    "other".to_string()
}

/// The app's metrics: counts the events of every run it launches, encodes on a scrape.
pub struct Metrics {
    registry: Registry,
    families: Families,
    live: Mutex<Live>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// A breaker's state now, for [`Metrics::encode`].
#[derive(Debug, Clone)]
pub struct BreakerGauge {
    /// `provider:model`.
    pub model: String,
    /// Its state.
    pub state: BreakerState,
}

impl Metrics {
    /// Metrics with every family registered and no samples.
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let families = Families::register(&mut registry);
        Metrics {
            registry,
            families,
            live: Mutex::new(Live::default()),
        }
    }

    fn live(&self) -> MutexGuard<'_, Live> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Says that run `run_id` of workflow `workflow_id` is starting here (before its first
    /// event, so a resumed run, whose `run_resumed` names no workflow, is labelled too).
    pub fn run_launched(&self, run_id: &str, workflow_id: &str) {
        let mut live = self.live();
        let workflow = capped(&mut live.workflows, workflow_id);
        live.runs.insert(run_id.to_string(), workflow);
    }

    /// The metrics in the Prometheus text format 0.0.4 ([`CONTENT_TYPE`]), with the
    /// present-state gauges set from `questions_open` and `breakers`.
    ///
    /// # Errors
    /// Only a formatting error of the encoder (writing to a `String` does not fail).
    pub fn encode(
        &self,
        questions_open: usize,
        breakers: &[BreakerGauge],
    ) -> Result<String, std::fmt::Error> {
        let f = &self.families;
        {
            let mut live = self.live();
            f.runs_in_flight
                .set(i64::try_from(live.runs.len()).unwrap_or(i64::MAX));
            f.breaker_state.clear();
            for b in breakers {
                let model = capped(&mut live.models, &b.model);
                let now = match b.state {
                    BreakerState::Closed => "closed",
                    BreakerState::Open { .. } => "open",
                    BreakerState::HalfOpen => "half_open",
                };
                for state in ["closed", "open", "half_open"] {
                    f.breaker_state
                        .get_or_create(&ModelState {
                            model: model.clone(),
                            state: state.to_string(),
                        })
                        .set(i64::from(state == now));
                }
            }
        }
        f.questions_open
            .set(i64::try_from(questions_open).unwrap_or(i64::MAX));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// Counts a notification's outcome (`delivered`, `failed`, `dropped`, `shown`,
    /// `no_desktop`).
    pub(crate) fn notification(&self, outcome: &str) {
        self.families
            .notifications
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }

    fn step_ended(&self, live: &mut Live, run_id: &str, step_id: &str, status: &str) {
        let key = (run_id.to_string(), step_id.to_string());
        live.first_token.remove(&key);
        let started = live.steps.remove(&key);
        let workflow = live.workflow(run_id);
        self.families
            .steps_finished
            .get_or_create(&WorkflowStatus {
                workflow,
                status: status.to_string(),
            })
            .inc();
        if status == "failed"
            && let Some(at) = started
        {
            self.observe_step("failed", at.elapsed().as_secs_f64());
        }
    }

    fn observe_step(&self, status: &str, seconds: f64) {
        self.families
            .step_seconds
            .get_or_create(&StatusLabel {
                status: status.to_string(),
            })
            .observe(seconds);
    }

    fn succeeded(&self, live: &mut Live, event: &Event) {
        let Event::StepSucceeded {
            run_id,
            step_id,
            model,
            usage,
            duration_ms,
            cost_usd,
            ..
        } = event
        else {
            return;
        };
        self.step_ended(live, run_id, step_id, "succeeded");
        self.observe_step(
            "succeeded",
            Duration::from_millis(*duration_ms).as_secs_f64(),
        );
        let Some(model) = model else { return };
        let model = capped(&mut live.models, model);
        if let Some(u) = usage {
            for (kind, n) in [
                ("prompt", u.prompt_tokens),
                ("completion", u.completion_tokens),
            ] {
                self.families
                    .tokens
                    .get_or_create(&ModelKind {
                        model: model.clone(),
                        kind: kind.to_string(),
                    })
                    .inc_by(n);
            }
        }
        if let Some(cost) = cost_usd.filter(|c| c.is_finite() && *c > 0.0) {
            self.families
                .cost
                .get_or_create(&ModelLabel { model })
                .inc_by(cost);
        }
    }

    fn attempt_failed(&self, live: &mut Live, event: &Event) {
        let Event::AttemptFailed {
            run_id,
            step_id,
            model,
            error_kind,
            retry_in_ms,
            ..
        } = event
        else {
            return;
        };
        live.first_token
            .remove(&(run_id.to_string(), step_id.to_string()));
        let model = capped(&mut live.models, model.as_deref().unwrap_or("none"));
        let kind = serde_json::to_value(error_kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "other".to_string());
        self.families
            .attempts_failed
            .get_or_create(&ModelKind {
                model: model.clone(),
                kind,
            })
            .inc();
        if retry_in_ms.is_some() {
            self.families
                .retries
                .get_or_create(&ModelLabel { model })
                .inc();
        }
    }

    fn run_event(&self, live: &mut Live, event: &Event) {
        match event {
            Event::RunStarted {
                run_id,
                workflow_id,
                ..
            } => {
                let workflow = capped(&mut live.workflows, workflow_id);
                live.runs.insert(run_id.clone(), workflow.clone());
                self.families
                    .runs_started
                    .get_or_create(&WorkflowLabel { workflow })
                    .inc();
            }
            // In flight again (after an interruption it was launched here with its
            // workflow: [`Metrics::run_launched`]); not a new start.
            Event::RunResumed { run_id, .. } if !live.runs.contains_key(run_id) => {
                let workflow = capped(&mut live.workflows, "unknown");
                live.runs.insert(run_id.clone(), workflow);
            }
            Event::RunFinished { run_id, status, .. } => {
                let workflow = live
                    .runs
                    .remove(run_id)
                    .unwrap_or_else(|| "unknown".to_string());
                live.steps.retain(|(run, _), _| run != run_id);
                live.first_token.retain(|(run, _), _| run != run_id);
                self.families
                    .runs_finished
                    .get_or_create(&WorkflowStatus {
                        workflow,
                        status: status.as_str().to_string(),
                    })
                    .inc();
            }
            _ => {}
        }
    }
}

impl EventSink for Metrics {
    fn emit(&self, event: &Event) {
        let mut live = self.live();
        match event {
            Event::StepStarted {
                run_id,
                step_id,
                model,
                ..
            } => {
                let key = (run_id.clone(), step_id.clone());
                let now = Instant::now();
                live.steps.entry(key.clone()).or_insert(now);
                if let Some(model) = model {
                    live.first_token.insert(key, (now, model.clone()));
                }
            }
            Event::Token {
                run_id, step_id, ..
            } => {
                if let Some((at, model)) =
                    live.first_token.remove(&(run_id.clone(), step_id.clone()))
                {
                    let model = capped(&mut live.models, &model);
                    self.families
                        .first_token
                        .get_or_create(&ModelLabel { model })
                        .observe(at.elapsed().as_secs_f64());
                }
            }
            Event::AttemptFailed { .. } => self.attempt_failed(&mut live, event),
            Event::FallbackTaken { rung, .. } => {
                let rung = if rung.is_empty() { "unknown" } else { rung };
                self.families
                    .fallbacks
                    .get_or_create(&RungLabel {
                        rung: rung.to_string(),
                    })
                    .inc();
            }
            Event::StepSucceeded { .. } => self.succeeded(&mut live, event),
            Event::StepFailed {
                run_id, step_id, ..
            } => self.step_ended(&mut live, run_id, step_id, "failed"),
            Event::StepSkipped {
                run_id,
                step_id,
                status,
                ..
            } => self.step_ended(&mut live, run_id, step_id, status.as_str()),
            _ => self.run_event(&mut live, event),
        }
    }
}
