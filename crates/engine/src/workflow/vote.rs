//! The `vote` step kind: several voters (models or agents) answer one question with one
//! of the given choices, and a rule decides (consensus, seeds/000 §5.6: weighted votes,
//! majority and supermajority rules, vetoes).
//!
//! Outcomes, all defined: each voter's ballot is one model call whose reply is
//! constrained to `{"choice": <one of choices>, "reason": <text>}`; a voter whose call
//! fails casts no ballot (it is recorded with its error). Fewer ballots than the quorum
//! fail the step. The rule then picks the winner over the ballots' weights; no winner
//! (no majority, no supermajority, not unanimous) fails the step; a tie for the most
//! weight fails it too, unless `on_tie: first_choice` names the tied choice listed first
//! in `choices`. A voter with `veto: true` whose ballot is not the winner blocks it: the
//! step fails, naming the voter and its reason. The ballots and the tally are stored with
//! the step (its JSON output) whatever the outcome.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::ModelSpec;

/// How a `vote` step decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum VoteRule {
    /// The choice with more than half of the ballots' weight.
    #[default]
    Majority,
    /// The choice with at least `threshold` of the ballots' weight.
    Supermajority,
    /// The choice with the most weight (a plurality).
    Weighted,
    /// The choice of every ballot.
    Unanimous,
}

/// What a tie for the most weight gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnTie {
    /// The step fails, naming the tied choices.
    #[default]
    Fail,
    /// The tied choice listed first in `choices` wins.
    FirstChoice,
}

/// One voter: a model (or an agent persona from `agents:`), its weight, its veto.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Voter {
    /// The voter's name in the ballots (default: the agent's name, else `voter N`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// An agent from the workflow's `agents` whose system prompt and model this voter uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Which models may serve this voter (replaces the agent's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// The ballot's weight (default 1; more than 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
    /// Whether a ballot of this voter that is not the winner blocks it (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veto: Option<bool>,
}

/// The fields of a `kind: vote` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VoteStep {
    /// The question every voter answers, a minijinja template over `inputs` and `steps`.
    pub prompt: String,
    /// The choices, at least two, each once.
    pub choices: Vec<String>,
    /// The voters, at least one.
    pub voters: Vec<Voter>,
    /// How the ballots decide (default `majority`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<VoteRule>,
    /// For `supermajority`: the share of the weight the winner needs, above 0.5 and at
    /// most 1 (default 2/3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The fewest ballots that count (default: more than half of the voters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u32>,
    /// What a tie for the most weight gives (default `fail`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_tie: Option<OnTie>,
    /// Maximum tokens of each ballot (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// Sampling temperature of each ballot, 0.0–2.0 (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
}
