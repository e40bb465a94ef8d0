//! Running a `capability:` step: the agent picked by [`crate::route`] from the engine's
//! agent statistics, the step run as that agent, its outcome observed and persisted.

use chrono::Utc;

use super::{Engine, lock};
use crate::events::StepStatus;
use crate::plan::{LlmAction, ToolAction};
use crate::route::AgentChoice;
use crate::store::StepRecord;

/// A step routed to an agent: its model call as the agent's, the agent's own tools (for
/// an `agent` step) and the decision.
pub(super) struct Routed {
    pub(super) llm: LlmAction,
    pub(super) tools: Vec<ToolAction>,
    pub(super) choice: AgentChoice,
}

impl Engine {
    /// The step as the agent that [`crate::route::route`] picks, or `None` for a step
    /// without `capability:`.
    pub(super) fn route_step(&self, llm: &LlmAction) -> Option<Routed> {
        let route = llm.route.as_ref()?;
        let names: Vec<&str> = route.candidates.iter().map(|c| c.agent.as_str()).collect();
        let choice = {
            let stats = lock(&self.agent_stats);
            crate::route::route(&route.capability, &names, &stats)
        };
        let cand = route
            .candidates
            .iter()
            .find(|c| c.agent == choice.agent)
            .or(route.candidates.first())?;
        tracing::info!(agent = %cand.agent, "{}", choice.reason);
        let mut routed = llm.clone();
        routed.route = None;
        routed.agent = Some(cand.agent.clone());
        routed.system = cand.system.clone();
        routed.model = cand.model.clone();
        Some(Routed {
            llm: routed,
            tools: cand.tools.clone(),
            choice,
        })
    }

    /// Stores the decision with the step's record and observes the agent's run: a
    /// success or a failure with the step's wall time (a cancelled or skipped step
    /// teaches nothing), persisted through the store.
    pub(super) async fn observe_agent(&self, choice: AgentChoice, rec: &mut StepRecord) {
        let success = match rec.status {
            StepStatus::Succeeded => true,
            StepStatus::Failed => false,
            _ => {
                rec.selection.get_or_insert_with(Default::default).agent = Some(choice);
                return;
            }
        };
        let stats = {
            let mut all = lock(&self.agent_stats);
            let entry = all.entry(choice.agent.clone()).or_default();
            entry.observe(success, Some(rec.duration_ms), Utc::now());
            *entry
        };
        if let Some(store) = &self.store
            && let Err(e) = store.save_agent_stats(&choice.agent, &stats).await
        {
            tracing::warn!("cannot store the statistics of agent {}: {e}", choice.agent);
        }
        rec.selection.get_or_insert_with(Default::default).agent = Some(choice);
    }

    /// Observed statistics of every agent that ran a `capability:` step, by name.
    pub fn agent_stats(&self) -> std::collections::HashMap<String, crate::select::ModelStats> {
        lock(&self.agent_stats).clone()
    }
}
