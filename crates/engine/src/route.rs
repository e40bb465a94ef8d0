//! Capability routing: the agent a `capability:` step runs as, chosen among the agents
//! that list the capability by their observed behaviour (the agent registry of the
//! orchestrator seeds: "capability matching", "performance history consideration").
//!
//! Each agent's runs are observed like a model's attempts ([`ModelStats`]: moving
//! averages of success and of the step's wall time, α = 0.2), kept per agent name across
//! workflows and runs (an agent of a shared `agents_file` learns from every workflow using
//! it) and persisted by the store. The score is `0.7 × success + 0.3 × speed`, with speed
//! `1 / (1 + latency_ms / 2000)`; an agent without observations scores with the priors
//! success 0.9 and speed 0.5 (those of the model selector), so a new agent is tried once
//! the known ones fall below that. Ties go to the first agent by name, so a choice
//! without statistics is deterministic.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::select::ModelStats;

/// Weight of the success rate in an agent's score (the rest is speed).
pub const SUCCESS_WEIGHT: f64 = 0.7;
/// Success rate assumed for an agent never observed.
pub const PRIOR_SUCCESS: f64 = 0.9;
/// Speed assumed for an agent never observed.
pub const PRIOR_SPEED: f64 = 0.5;

/// One candidate agent as ranked, for the step's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RankedAgent {
    /// The agent's name.
    pub agent: String,
    /// Its score, 0–1.
    pub score: f64,
    /// Runs observed.
    pub runs: u64,
    /// Moving average of success, 0–1, when observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success_rate: Option<f64>,
    /// Moving average of the step's wall time, ms, when observed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
}

/// The routing decision of a `capability:` step, stored with its selection record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentChoice {
    /// The capability asked for.
    pub capability: String,
    /// The agent picked.
    pub agent: String,
    /// Why, in words.
    pub reason: String,
    /// Every candidate, best first.
    pub ranked: Vec<RankedAgent>,
}

/// Ranks `agents` (in name order) by their statistics and picks the best.
pub fn route(
    capability: &str,
    agents: &[&str],
    stats: &HashMap<String, ModelStats>,
) -> AgentChoice {
    let mut ranked: Vec<RankedAgent> = agents
        .iter()
        .map(|name| {
            let observed = stats.get(*name).filter(|s| s.calls > 0);
            let success = observed.map_or(PRIOR_SUCCESS, |s| s.success_rate);
            let speed = observed.map_or(PRIOR_SPEED, |s| 1.0 / (1.0 + s.latency_ms / 2000.0));
            RankedAgent {
                agent: (*name).to_string(),
                score: SUCCESS_WEIGHT * success + (1.0 - SUCCESS_WEIGHT) * speed,
                runs: observed.map_or(0, |s| s.calls),
                success_rate: observed.map(|s| s.success_rate),
                latency_ms: observed.map(|s| s.latency_ms),
            }
        })
        .collect();
    // Stable: equal scores keep the name order.
    ranked.sort_by(|a, b| b.score.total_cmp(&a.score));
    let agent = ranked.first().map(|r| r.agent.clone()).unwrap_or_default();
    let reason = explain(capability, &ranked);
    AgentChoice {
        capability: capability.to_string(),
        agent,
        reason,
        ranked,
    }
}

/// "capability `x`: agent `a` (score 0.93: success 100% over 3 runs, 120 ms) over `b`
/// (...)".
fn explain(capability: &str, ranked: &[RankedAgent]) -> String {
    let describe = |r: &RankedAgent| match (r.success_rate, r.latency_ms) {
        (Some(s), Some(l)) => format!(
            "`{}` (score {:.2}: success {:.0}% over {} run(s), {:.0} ms)",
            r.agent,
            r.score,
            s * 100.0,
            r.runs,
            l
        ),
        _ => format!("`{}` (score {:.2}: no runs observed yet)", r.agent, r.score),
    };
    let mut out = format!("capability `{capability}`: agent ");
    if let Some((first, rest)) = ranked.split_first() {
        out.push_str(&describe(first));
        if rest.is_empty() {
            out.push_str(", the only agent listing it");
        } else {
            let others: Vec<String> = rest.iter().map(describe).collect();
            out.push_str(" over ");
            out.push_str(&others.join(", "));
            if rest.iter().all(|r| r.score == first.score) {
                out.push_str("; a tie, taken by name order");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(runs: &[(bool, u64)]) -> ModelStats {
        let mut s = ModelStats::default();
        for &(ok, ms) in runs {
            s.observe(ok, Some(ms), chrono::Utc::now());
        }
        s
    }

    #[test]
    fn without_statistics_the_first_by_name_wins() {
        let c = route("summarize", &["alpha", "beta"], &HashMap::new());
        assert_eq!(c.agent, "alpha");
        assert!(
            c.reason.contains("a tie, taken by name order"),
            "{}",
            c.reason
        );
        assert!(c.reason.contains("no runs observed yet"), "{}", c.reason);
    }

    #[test]
    fn the_agent_with_better_statistics_wins() {
        let mut m = HashMap::new();
        m.insert("alpha".to_string(), stats(&[(false, 900), (false, 900)]));
        m.insert("beta".to_string(), stats(&[(true, 50), (true, 60)]));
        let c = route("summarize", &["alpha", "beta"], &m);
        assert_eq!(c.agent, "beta");
        assert_eq!(c.ranked[1].agent, "alpha");
        assert!(
            c.reason.starts_with("capability `summarize`: agent `beta`"),
            "{}",
            c.reason
        );
        assert!(
            c.reason.contains("success 100% over 2 run(s)"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn equal_success_goes_to_the_faster_agent() {
        let mut m = HashMap::new();
        m.insert("alpha".to_string(), stats(&[(true, 4000)]));
        m.insert("beta".to_string(), stats(&[(true, 100)]));
        assert_eq!(route("c", &["alpha", "beta"], &m).agent, "beta");
    }
}
