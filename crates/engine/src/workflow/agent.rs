//! The `agent` step kind: a language model in a loop that calls the workflow's tools
//! until it gives a final answer (ReAct, Yao et al. 2022; the tool-calling agents of
//! LangGraph, n8n and Dify).
//!
//! An agent step has the model fields of an `llm` step (prompt, system, agent persona,
//! model, sampling, budget, fallback, output schema) plus the tools it may call and two
//! caps. Every model call of the loop goes through the selector, the circuit breakers,
//! the budgets, the guardrails and the retry policy like an `llm` step's; a retry repeats
//! one call, never the loop (n8n's retry of an agent node starts its tool history over).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{Budget, FallbackLadder, LlmStep, ModelSpec, TaskClass};

/// Default `max_iterations` of an agent step: model calls, each answering with tool calls
/// or the final answer.
pub const DEFAULT_AGENT_ITERATIONS: u32 = 10;
/// Default `max_tool_calls` of an agent step, over the whole loop.
pub const DEFAULT_AGENT_TOOL_CALLS: u32 = 20;

/// The fields of a `kind: agent` step.
///
/// The loop: the model sees the prompt and the tools; it answers either with tool calls,
/// which run (a failing call's error goes back to the model as that call's result, so it
/// can recover) and whose results are added to the conversation, or with its final answer,
/// which is the step's output (checked against `output_schema` when given). Reaching
/// `max_iterations` model calls without a final answer, or going over `max_tool_calls`,
/// fails the step; its transcript is kept in the step's record either way.
///
/// Models with native tool calls (Ollama's `tools`, OpenAI's `tools`/`tool_calls`) get
/// them; other models (the embedded one) answer in a JSON protocol that a grammar
/// constrains (`{"tool": NAME, "args": {...}}` or `{"final": ANSWER}`), read as ReAct text
/// (`Action:` / `Action Input:` / `Final Answer:`) when a reply is not JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentStep {
    /// System prompt (a template); a default one explaining the loop is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<String>,
    /// The kind of work, for the model selector (default `general`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskClass>,
    /// An agent from the workflow's `agents` whose system prompt and model preferences
    /// this step uses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Instead of `agent`: a capability, routed at run time to the agent listing it with
    /// the best observed success rate and latency (see [`crate::route`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capability: Option<String>,
    /// Token and cost limits of this step, over every model call of the loop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    /// The fallback ladder of each model call: `retry_same` and `next_model` apply; the
    /// simplify, substitute-agent and human rungs are those of `llm` steps only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback: Option<FallbackLadder>,
    /// The task, a minijinja template over `inputs` and `steps`.
    pub prompt: String,
    /// Which models may serve the step (default: the selector's order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<ModelSpec>,
    /// Sampling temperature, 0.0–2.0 (default 0.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Maximum tokens each model call generates (default 256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    /// A JSON Schema the final answer must satisfy; a final answer that does not is sent
    /// back to the model with the errors, within `max_iterations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_schema: Option<serde_json::Value>,
    /// The tools the agent may call, by their names under the workflow's `tools:`. An
    /// `mcp` tool offers each of its server's tools (those its `allow` admits) as
    /// `<tool>__<server tool>`. The step's agent's `tools` are offered too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
    /// Most model calls of the loop (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u32>,
    /// Most tool calls over the loop (default 20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tool_calls: Option<u32>,
}

impl AgentStep {
    /// The step's model fields as an `llm` step's, which the `llm` planner checks.
    pub fn as_llm(&self) -> LlmStep {
        LlmStep {
            system: self.system.clone(),
            task: self.task,
            agent: self.agent.clone(),
            capability: self.capability.clone(),
            budget: self.budget.clone(),
            fallback: self.fallback.clone(),
            prompt: self.prompt.clone(),
            model: self.model.clone(),
            temperature: self.temperature,
            max_tokens: self.max_tokens,
            think: None,
            output_schema: self.output_schema.clone(),
        }
    }
}
