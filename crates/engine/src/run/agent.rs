//! The executor of `agent` steps: a model in a loop that calls tools until it gives a
//! final answer.
//!
//! Each iteration is one model call through the selector's chain ([`super::chain`]):
//! breakers, budgets (the step's budget covers the whole loop), cloud guardrails, the
//! retry policy and the fallback to the next model apply to that one call, so a retry
//! never starts the loop over. The tools reach each candidate natively or through the
//! JSON protocol ([`super::agent_protocol`]). Each tool call runs as a `tool` step's call
//! does (the permission of a `shell` tool or a stdio MCP server, a file tool's workspace,
//! an http tool's hosts), under the step's cancellation token; a failing call's error is
//! the call's result, so the model can recover.
//!
//! Invariants: the transcript ([`TranscriptEntry`]) records every model call and tool
//! call in order and is kept whatever the outcome; the loop makes at most
//! `max_iterations` model calls and `max_tool_calls` tool calls; a tool result given to
//! the model is at most [`MAX_RESULT_CHARS`] characters (head and tail kept); the final
//! answer passes the output guardrails before it is stored.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;

use super::agent_protocol::{Strategy, builtin_spec, model_name, protocol_schema};
use super::ladder::{
    Call, ChainEnd, Ladder, LlmContext, StepEnd, Success, finish, stopped, trim_middle,
};
use super::records::record_for;
use super::tool::ToolCall as ToolRun;
use super::{Engine, StepOutput, ms};
use crate::events::StepStatus;
use crate::plan::AgentAction;
use crate::provider::{Message, ProviderErrorKind, ToolCall, ToolSpec, Usage};
use crate::select::estimate_tokens;
use crate::store::{StepRecord, TranscriptEntry};
use crate::workflow::ToolDecl;

/// The longest tool result given to the model, characters (about 4,000 tokens); the
/// transcript stores the same text.
pub const MAX_RESULT_CHARS: usize = 16_000;

/// The system prompt of an agent step that sets none.
const DEFAULT_SYSTEM: &str = "You are an agent that completes the user's task. Call the tools you need, one step at a time, and read their results; when you can answer, give the final answer.";

/// One tool as the model sees it: its spec, the step's tool that serves it, and for an
/// MCP server's tool the server's name for it.
struct Offered {
    spec: ToolSpec,
    tool: usize,
    mcp_call: Option<String>,
}

/// What an agent step runs with: the model call's context, the step's tools and caps,
/// the workflow's id (stored with a permission).
pub(super) struct AgentContext {
    pub(super) llm: LlmContext,
    pub(super) agent: Arc<AgentAction>,
    pub(super) workflow_id: String,
}

/// How one tool call ended.
struct ToolEnd {
    ok: bool,
    result: String,
    duration_ms: u64,
}

impl Engine {
    /// Runs one `agent` step; its record (with the transcript) and output.
    pub(super) async fn run_agent_step(self: Arc<Self>, ax: AgentContext) -> StepEnd {
        let cx = &ax.llm;
        let mut lad = Ladder {
            attempt_no: 0,
            last_error: None,
            last_model: None,
            spend: super::budget::Spend::default(),
            t0: Instant::now(),
            cloud_verdicts_recorded: false,
        };
        let mut rec = record_for(&cx.step, StepStatus::Failed, None, Utc::now());
        let g = match self.guard_step_input(cx, &mut rec).await {
            Ok(g) => g,
            Err(e) => return (finish(rec, &lad, stopped(&e), Some(e.to_string())), None),
        };
        rec.input = Some(g.prompt.clone());
        let offered = match self.offer_tools(&ax).await {
            Ok(o) => o,
            Err((status, e)) => return (finish(rec, &lad, status, Some(e)), None),
        };
        let specs: Arc<Vec<ToolSpec>> = Arc::new(offered.iter().map(|o| o.spec.clone()).collect());
        let schema = protocol_schema(&specs, cx.llm.output_schema.as_ref().map(|(s, _)| s));
        let mut history = vec![
            Message::system(g.system.clone().unwrap_or_else(|| DEFAULT_SYSTEM.into())),
            Message::user(g.prompt.clone()),
        ];
        let mut usage = Usage::default();
        let mut calls_made: u32 = 0;
        for iteration in 1..=ax.agent.max_iterations {
            let call = Call {
                est_prompt: history.iter().map(message_tokens).sum::<u64>() + 8,
                messages: history.clone(),
                max_tokens: cx.llm.max_tokens,
                json_schema: Some(schema.clone()),
                tools: Some(Arc::clone(&specs)),
            };
            let t0 = Instant::now();
            let turn = match self.turn(cx, &mut rec, &mut lad, &call).await {
                Ok(turn) => turn,
                Err(error) => {
                    let status = if cx.cancel.is_cancelled() {
                        StepStatus::Cancelled
                    } else {
                        StepStatus::Failed
                    };
                    rec.usage = Some(usage);
                    let error = format!("iteration {iteration}: {error}");
                    return (finish(rec, &lad, status, Some(error)), None);
                }
            };
            usage.prompt_tokens += turn.usage.prompt_tokens;
            usage.completion_tokens += turn.usage.completion_tokens;
            rec.usage = Some(usage);
            let strategy = turn.strategy.unwrap_or(Strategy::Native);
            let mut calls = turn.tool_calls.clone();
            if strategy != Strategy::Native {
                // The protocol's calls carry no id of the provider's: one per call.
                for (k, c) in calls.iter_mut().enumerate() {
                    c.id = format!("call_{iteration}_{k}");
                }
            }
            rec.transcript.push(TranscriptEntry::Model {
                iteration,
                model: turn.reference.clone(),
                strategy: strategy.as_str().into(),
                text: turn.text.clone(),
                tool_calls: calls.clone(),
                prompt_tokens: turn.usage.prompt_tokens,
                completion_tokens: turn.usage.completion_tokens,
                duration_ms: ms(t0.elapsed()),
            });
            rec.model = Some(turn.reference.clone());
            rec.model_reason = Some(format!("{}: {}", turn.reference, turn.reason));
            if calls.is_empty() {
                return self.answer(cx, rec, &lad, turn).await;
            }
            calls_made = calls_made.saturating_add(u32::try_from(calls.len()).unwrap_or(u32::MAX));
            if calls_made > ax.agent.max_tool_calls {
                let error = format!(
                    "the agent asked for more than `max_tool_calls` ({}) tool calls; its transcript is kept",
                    ax.agent.max_tool_calls
                );
                return (finish(rec, &lad, StepStatus::Failed, Some(error)), None);
            }
            history.push(Message::assistant_tool_calls(turn.text, calls.clone()));
            for c in &calls {
                let end = self.call_offered(&ax, &offered, c).await;
                if cx.cancel.is_cancelled() {
                    let error = format!("cancelled during the call of tool `{}`", c.name);
                    record_tool(&mut rec, iteration, c, &end);
                    return (finish(rec, &lad, StepStatus::Cancelled, Some(error)), None);
                }
                record_tool(&mut rec, iteration, c, &end);
                history.push(Message::tool_result(c, end.result));
            }
        }
        let error = format!(
            "the agent reached `max_iterations` ({}) without a final answer; its transcript is kept",
            ax.agent.max_iterations
        );
        (finish(rec, &lad, StepStatus::Failed, Some(error)), None)
    }

    /// One model call of the loop through the selector's chain; why it failed otherwise.
    async fn turn(
        &self,
        cx: &LlmContext,
        rec: &mut StepRecord,
        lad: &mut Ladder,
        call: &Call,
    ) -> Result<Success, String> {
        let selection = self.selection_for(cx, &cx.llm.model, call, lad.spend);
        if rec.selection.is_none() {
            rec.selection = Some(selection.record.clone());
        }
        let mut chain = selection.candidates.clone();
        if !cx.llm.fallback.next_model {
            chain.truncate(1);
        }
        let all_open = selection.record.all_breakers_open;
        let retry = cx.llm.fallback.retry_same;
        match self
            .chain(cx, rec, lad, call, &chain, all_open, retry, "next_model")
            .await
        {
            Ok(success) => Ok(success),
            Err(ChainEnd::Stop(e)) if e.kind == ProviderErrorKind::Cancelled => {
                Err("cancelled".into())
            }
            Err(ChainEnd::Stop(e)) => Err(e.to_string()),
            Err(ChainEnd::Exhausted) if chain.is_empty() => Err(format!(
                "no model can serve this step ({})",
                selection.excluded().join("; ")
            )),
            Err(ChainEnd::Exhausted) => Err(match &lad.last_error {
                Some(e) => format!("every model of the chain failed; last error: {e}"),
                None => "every model of the chain failed".into(),
            }),
        }
    }

    /// The final answer: through the output guardrails, then stored.
    async fn answer(
        &self,
        cx: &LlmContext,
        mut rec: StepRecord,
        lad: &Ladder,
        turn: Success,
    ) -> StepEnd {
        match self
            .guard_output(&cx.sh, &cx.step.id, turn.text, turn.json, &mut rec)
            .await
        {
            Ok(StepOutput { text, json }) => {
                rec.output = Some(text.clone());
                rec.output_json = json.clone();
                (
                    finish(rec, lad, StepStatus::Succeeded, None),
                    Some(StepOutput { text, json }),
                )
            }
            Err(e) => (finish(rec, lad, stopped(&e), Some(e.to_string())), None),
        }
    }

    /// The tools the model is offered: each `http`, `file` and `shell` tool as one, each
    /// allowed tool of an `mcp` server as `<tool>__<server tool>` (the server connected,
    /// after the permission of a stdio server).
    async fn offer_tools(
        self: &Arc<Self>,
        ax: &AgentContext,
    ) -> Result<Vec<Offered>, (StepStatus, String)> {
        let cx = &ax.llm;
        let mut offered = Vec::new();
        for (k, tool) in ax.agent.tools.iter().enumerate() {
            let ToolDecl::Mcp(mcp) = &tool.decl else {
                if let Some(spec) = builtin_spec(&tool.name, &tool.decl) {
                    offered.push(Offered {
                        spec,
                        tool: k,
                        mcp_call: None,
                    });
                }
                continue;
            };
            let probe = ToolRun::for_agent(
                &cx.step,
                tool.clone(),
                serde_json::Map::new(),
                cx.cancel.child_token(),
                &ax.workflow_id,
                &cx.sh,
            );
            if probe.needs_permission() {
                self.permit(&cx.sh, &probe).await?;
            }
            let listed = cx
                .sh
                .mcp
                .list(&tool.name, mcp, tool.workspace.as_deref(), &cx.cancel)
                .await
                .map_err(|e| {
                    let status = if cx.cancel.is_cancelled() {
                        StepStatus::Cancelled
                    } else {
                        StepStatus::Failed
                    };
                    (status, format!("tool `{}`: {e}", tool.name))
                })?;
            for t in listed {
                offered.push(Offered {
                    spec: ToolSpec {
                        name: model_name(&format!("{}__{}", tool.name, t.name)),
                        description: t.description,
                        parameters: t.parameters,
                    },
                    tool: k,
                    mcp_call: Some(t.name),
                });
            }
        }
        Ok(offered)
    }

    /// Runs one tool call the model made; a call of an unknown tool, or with arguments
    /// that are not an object, is an error result.
    async fn call_offered(
        self: &Arc<Self>,
        ax: &AgentContext,
        offered: &[Offered],
        call: &ToolCall,
    ) -> ToolEnd {
        let t0 = Instant::now();
        let failed = |result: String| ToolEnd {
            ok: false,
            result,
            duration_ms: ms(t0.elapsed()),
        };
        let Some(o) = offered.iter().find(|o| o.spec.name == call.name) else {
            let names: Vec<&str> = offered.iter().map(|o| o.spec.name.as_str()).collect();
            return failed(format!(
                "error: there is no tool `{}`; the tools are: {}",
                call.name,
                names.join(", ")
            ));
        };
        let serde_json::Value::Object(args) = call.arguments.clone() else {
            return failed(format!(
                "error: the arguments of `{}` must be a JSON object",
                call.name
            ));
        };
        let args = match &o.mcp_call {
            Some(name) => serde_json::Map::from_iter([
                ("call".to_string(), serde_json::Value::String(name.clone())),
                ("arguments".to_string(), serde_json::Value::Object(args)),
            ]),
            None => args,
        };
        let Some(tool) = ax.agent.tools.get(o.tool) else {
            return failed(format!("error: tool `{}` is not planned", call.name));
        };
        let cx = &ax.llm;
        let run = ToolRun::for_agent(
            &cx.step,
            tool.clone(),
            args,
            cx.cancel.child_token(),
            &ax.workflow_id,
            &cx.sh,
        );
        let (rec, out) = if run.needs_permission() {
            run.run_permitted(Arc::clone(self)).await
        } else {
            run.run(Arc::clone(self)).await
        };
        match (rec.status, out) {
            (StepStatus::Succeeded, Some(out)) => ToolEnd {
                ok: true,
                result: trim_middle(&out.text, MAX_RESULT_CHARS),
                duration_ms: ms(t0.elapsed()),
            },
            _ => failed(format!(
                "error: {}",
                trim_middle(
                    rec.error.as_deref().unwrap_or("the tool failed"),
                    MAX_RESULT_CHARS
                )
            )),
        }
    }
}

/// Adds a tool call and its result to the transcript.
fn record_tool(rec: &mut StepRecord, iteration: u32, call: &ToolCall, end: &ToolEnd) {
    rec.transcript.push(TranscriptEntry::Tool {
        iteration,
        id: call.id.clone(),
        name: call.name.clone(),
        arguments: call.arguments.clone(),
        ok: end.ok,
        result: end.result.clone(),
        duration_ms: end.duration_ms,
    });
}

/// The estimated tokens of a message: its text and its tool calls' arguments.
fn message_tokens(m: &Message) -> u64 {
    estimate_tokens(&m.content)
        + m.tool_calls
            .iter()
            .map(|c| estimate_tokens(&c.arguments.to_string()) + 4)
            .sum::<u64>()
        + 4
}
