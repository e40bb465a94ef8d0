//! The control-flow kinds of the format: `switch`, `map` and `loop`, and the join rule
//! every step may carry (`trigger_rule`).
//!
//! A `map` or `loop` holds a body of steps (`steps:`), validated like a workflow's own
//! steps: ids unique across the whole file, `needs` inside the body. Each item or
//! iteration runs the body once; its steps are recorded under a path
//! (`<map>[<item>].<step>`, `<loop>[<iteration>].<step>`).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::Step;

/// When a step with dependencies runs, after Apache Airflow's trigger rules (the names and
/// meanings of Airflow 2's `TriggerRule`). The rule is evaluated once every dependency has
/// finished. A step that does not meet its rule is skipped; a dependency that was skipped
/// *because something above it failed* counts as failed (Airflow's `upstream_failed`), a
/// cancelled dependency counts as failed. The table of every rule against every mix of
/// dependency states is in the README ("Join rules").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum TriggerRule {
    /// Every dependency succeeded (the default).
    #[default]
    AllSuccess,
    /// Every dependency finished, whatever its state.
    AllDone,
    /// At least one dependency succeeded.
    OneSuccess,
    /// At least one dependency failed (an error handler's rule).
    OneFailed,
    /// Every dependency failed.
    AllFailed,
    /// No dependency failed: each succeeded or was skipped.
    NoneFailed,
    /// No dependency failed and at least one succeeded (the rule for the step that joins
    /// the branches of a `switch`).
    NoneFailedMinOneSuccess,
}

impl TriggerRule {
    /// The rule's name, as written in `trigger_rule:`.
    pub fn as_str(self) -> &'static str {
        match self {
            TriggerRule::AllSuccess => "all_success",
            TriggerRule::AllDone => "all_done",
            TriggerRule::OneSuccess => "one_success",
            TriggerRule::OneFailed => "one_failed",
            TriggerRule::AllFailed => "all_failed",
            TriggerRule::NoneFailed => "none_failed",
            TriggerRule::NoneFailedMinOneSuccess => "none_failed_min_one_success",
        }
    }

    /// Whether a step with this rule runs, given how many of its dependencies succeeded,
    /// failed (failed, cancelled, or skipped because of a failure) and were skipped
    /// otherwise. A step without dependencies always runs.
    pub fn met(self, succeeded: usize, failed: usize, skipped: usize) -> bool {
        let total = succeeded + failed + skipped;
        if total == 0 {
            return true;
        }
        match self {
            TriggerRule::AllSuccess => succeeded == total,
            TriggerRule::AllDone => true,
            TriggerRule::OneSuccess => succeeded > 0,
            TriggerRule::OneFailed => failed > 0,
            TriggerRule::AllFailed => failed == total,
            TriggerRule::NoneFailed => failed == 0,
            TriggerRule::NoneFailedMinOneSuccess => failed == 0 && succeeded > 0,
        }
    }
}

/// The fields of a `kind: switch` step: the first case whose condition holds is taken,
/// else `default`. The steps named by the cases that were not taken are skipped (and,
/// through their join rules, what depends on them); the steps named by the case taken run.
/// Each step named in a case depends on the switch (written in its `needs` or not).
/// Output: the name of the case taken as text, and `{"case": name, "index": n}` as JSON;
/// when no case holds the switch takes `default` (`{"case": "default", "index": -1}`),
/// which runs the steps under `default:`, if any.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchStep {
    /// The cases, tried in order.
    pub cases: Vec<SwitchCase>,
    /// The steps to run when no case holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default: Vec<String>,
}

/// One case of a `switch`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchCase {
    /// The case's name (default `case<N>`, counting from 0), the switch's output when
    /// it is taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A minijinja expression over `inputs` and the switch's dependencies, e.g.
    /// `steps.classify.json.kind == "bug"`.
    pub when: String,
    /// The steps that run when this case is taken.
    pub then: Vec<String>,
}

/// What a `map` does when an item's body fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnItemError {
    /// The first failed item fails the map; items in flight are cancelled, items not
    /// started are not run (the default, as AWS Step Functions' Map with no tolerance).
    #[default]
    FailFast,
    /// Every item runs; a failed item's result is `null` in `results`.
    Continue,
    /// Every item runs; a failed item is left out of `results`.
    Drop,
}

/// What a `loop` does when it reaches `max_iterations` before `until` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum LoopCap {
    /// The loop succeeds with the state after the last iteration (the default: "N
    /// rounds at most" is a normal end of a draft–critique–revise loop).
    #[default]
    Succeed,
    /// The loop fails.
    Fail,
}

/// The fields of a `kind: map` step: the body runs once per item of a list (fan-out, as
/// Step Functions' Map, Dify's Iteration and LangGraph's `Send`), at most `concurrency`
/// items at once. Each item's steps are recorded as `<map>[<n>].<step>`.
///
/// Output (`steps.<map>.json`): `{"results": [...], "items": [{"index", "status",
/// "error"}], "succeeded": n, "failed": n}`, results in input order; the text output is
/// `results` as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MapStep {
    /// A minijinja expression whose value is the list to map over, e.g.
    /// `steps.plan.json.tasks` or `inputs.files`.
    pub items: String,
    /// The name the body's templates read the item by (default `item`).
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub item_as: Option<String>,
    /// The name the body's templates read the item's position by, from 0 (default
    /// `index`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index_as: Option<String>,
    /// Items in flight at once, 1–1024 (default 4). Model calls are further bounded by
    /// each model's own limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// What a failed item does (default `fail_fast`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_item_error: Option<OnItemError>,
    /// With `continue` or `drop`: the map fails when more items than this fail (Step
    /// Functions' `ToleratedFailureCount`; default: any number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failures: Option<u32>,
    /// With `continue` or `drop`: the map fails when more than this percentage of the
    /// items fail, 0–100 (Step Functions' `ToleratedFailurePercentage`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerated_failure_percent: Option<f64>,
    /// A minijinja expression for each item's result, over the body's steps, the item
    /// and the map's dependencies (default: the JSON output of the body's last step if it
    /// has one, else its text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// The body: the steps run for each item.
    pub steps: Vec<Step>,
}

/// The fields of a `kind: loop` step: the body runs again and again, in order, until
/// `until` holds or `max_iterations` is reached (Windmill's while-loop, seeds/000 §3.2's
/// iterative execution). `state` variables carry values across iterations: after each
/// iteration every `set` expression is evaluated and the state updated; the state is
/// kept with the iteration's records, so a resumed loop continues with it. Each
/// iteration's steps are recorded as `<loop>[<n>].<step>`.
///
/// Output (`steps.<loop>.json`): `{"state": {...}, "iterations": n, "stopped_by":
/// "until" | "max_iterations"}`; the text output is the final state as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LoopStep {
    /// The most iterations, 1–10,000 (required: a loop without a cap is a defect
    /// waiting to happen).
    pub max_iterations: u32,
    /// State variables and their initial values (JSON values; a string is a template
    /// over `inputs` and the loop's dependencies). Templates read them as
    /// `state.<name>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub state: BTreeMap<String, serde_json::Value>,
    /// After each iteration: state variable → a minijinja expression over the
    /// iteration's steps, `state` and `iteration`, whose value becomes the variable's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    /// A minijinja expression evaluated after `set`; the loop stops when it is true
    /// (default: run `max_iterations` times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// What reaching `max_iterations` does (default `succeed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_max_iterations: Option<LoopCap>,
    /// The body: the steps run in each iteration.
    pub steps: Vec<Step>,
}

/// The fields of a `kind: workflow` step (a sub-workflow, as n8n's Execute Sub-workflow
/// and Windmill's flows-in-flows): another workflow file runs as a run of its own, linked
/// to this step, and its outputs become this step's output (JSON: the outputs object;
/// text: the only output, or the object as JSON when there are several).
///
/// The child run's id is derived from the parent's (`<parent run>.<step path>`), so a
/// resumed parent continues the same child run instead of starting it again. Cancelling
/// or pausing the parent reaches the child; a failed child fails the step with the
/// child's run id and error. Files that call each other in a cycle are rejected at
/// validation with the chain named; calls nest at most [`MAX_WORKFLOW_DEPTH`] deep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubWorkflowStep {
    /// The workflow file to run, relative to this file's folder, e.g. `summarize.yaml`.
    pub workflow: String,
    /// The child's inputs by name: a value as the child declares it (a string with
    /// template syntax is rendered over `inputs` and this step's dependencies).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, serde_json::Value>,
}

/// How deep `workflow` steps may nest (a file calling a file calling a file ...).
pub const MAX_WORKFLOW_DEPTH: usize = 8;

/// The fields of a `kind: wait` step: it finishes when a duration has passed or at a
/// time (Step Functions' Wait state, n8n's Wait node). The wait is durable: a duration
/// counts from when the step's dependencies finished (the latest of them), or from the
/// run's start for a step without dependencies (the child run's start inside a
/// sub-workflow), both read from the stored run, so a run resumed after a restart waits
/// only for what is left. Inside a `map` or `loop` body a wait without dependencies
/// counts from the body's first stored step, or from when the body started in this
/// process when none was stored: give it a dependency to make it exact. Output: the time it waited for
/// (RFC 3339) as text, `{"until": ..., "waited_ms": n}` as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitStep {
    /// How long to wait, e.g. `90s`, `10m`, `2h` (humantime).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub duration: Option<std::time::Duration>,
    /// The time to wait for, RFC 3339 (`2026-12-24T09:00:00Z`); a template over `inputs`
    /// and the step's dependencies. A time already past finishes at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

/// The fields of a `kind: event` step: it waits for an external event named `name`,
/// posted to the run while it waits or before (`POST /api/runs/{id}/events/{name}`, or
/// the run's callback URL `{{ run.callback_url }}/{name}`, like n8n's Wait node "on
/// webhook call" and Temporal's signals). Events are stored first, so one posted while
/// the run was down is taken when it resumes, and each event is taken by one step. The
/// timeout counts from stored facts like a `wait` step's duration (the dependencies'
/// end, or the run's start). Output: the event's body, as text (a JSON string's value,
/// otherwise the JSON) and as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventStep {
    /// The event's name: letters, digits, `-`, `_` and `.`; the step's id when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<String>,
    /// How long to wait for it, e.g. `30m`, `7d` (humantime); forever when absent.
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub within: Option<std::time::Duration>,
    /// The output (any JSON value) when `within` passes without the event; without it
    /// the step fails.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_output: Option<serde_json::Value>,
}

/// A handler workflow run when a run fails (seeds/003's `errorHandlers`): the file runs
/// as a child run (`<run id>:on_failure`) with the inputs it declares among `run_id`,
/// `workflow_id`, `error` (the run's error) and `failed_steps` (JSON: `[{step, error}]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunFailureHandler {
    /// The handler workflow file, relative to this file's folder.
    pub workflow: String,
}
