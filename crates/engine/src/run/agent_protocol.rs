//! How an agent's tools reach a model, and how a reply becomes tool calls or a final
//! answer: natively, or through a JSON protocol for models without native tool calls,
//! with a ReAct text parser as the last resort.
//!
//! - `native`: the provider takes the [`ToolSpec`]s (Ollama `tools` in `/api/chat`,
//!   OpenAI `tools`) and answers with [`ToolCall`]s.
//! - `json`: the tools are described in the system prompt and the model answers with
//!   one JSON object, `{"tool": NAME, "args": {...}}` or `{"final": ANSWER}`, constrained
//!   by a JSON Schema (`oneOf` of one branch per tool, each with the tool's argument
//!   schema, and the final answer's), which the embedded provider turns into a llama.cpp
//!   grammar, Ollama into `format` and OpenAI-compatible servers into `response_format`.
//!   Tool calls and results in the history are written as that JSON and as user
//!   messages (`Result of tool ...`), which every chat template renders.
//! - `react`: a `json` reply that is not JSON (the constraint was dropped, or a server
//!   ignored it) is read as ReAct text (Yao et al. 2022, "ReAct: Synergizing Reasoning
//!   and Acting in Language Models"; LangChain's `ReActSingleInputOutputParser`):
//!   `Action: NAME` with `Action Input: {...}`, or `Final Answer: ...`.
//!
//! Invariant: a decoded turn is either at least one tool call or a final answer that
//! passed the checks of an `llm` step's reply (not empty, valid against the output
//! schema); anything else is an `invalid_output` attempt, which the taxonomy repairs
//! once and then falls back on.

use serde_json::{Value, json};

use super::attempt::{AttemptOutput, check_output, cut_note, parse_json_reply};
use crate::plan::LlmAction;
use crate::provider::{
    ChatRequest, Message, ProviderError, ProviderErrorKind, Role, ToolCall, ToolSpec,
};
use crate::select::Candidate;
use crate::workflow::ToolDecl;

/// How an agent's tools reached the model in one turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Strategy {
    /// The provider's own tool calls.
    Native,
    /// The JSON protocol.
    Json,
    /// A reply of the JSON protocol read as ReAct text.
    React,
}

impl Strategy {
    /// The strategy for a candidate: native when its provider takes tools for the model.
    pub(super) fn for_candidate(cand: &Candidate) -> Strategy {
        if cand.native_tools {
            Strategy::Native
        } else {
            Strategy::Json
        }
    }

    /// Its name in the transcript: `native`, `json`, `react`.
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Strategy::Native => "native",
            Strategy::Json => "json",
            Strategy::React => "react",
        }
    }
}

/// Shapes one turn's request for the strategy: the tools for a native candidate (no
/// JSON constraint, since a constraint would forbid calls); the protocol's messages for
/// the others (the request's `json_schema` is the protocol's schema, unless a
/// `drop_parameter` retry removed it).
pub(super) fn shape_request(request: &mut ChatRequest, specs: &[ToolSpec], strategy: Strategy) {
    match strategy {
        Strategy::Native => {
            request.tools = specs.to_vec();
            request.json_schema = None;
        }
        Strategy::Json | Strategy::React => {
            request.messages = protocol_messages(&request.messages, specs);
        }
    }
}

/// The JSON Schema of a protocol reply: one branch per tool (`tool` the tool's name,
/// `args` its argument schema) and the final answer (`final`, the step's output schema,
/// or text).
pub(super) fn protocol_schema(specs: &[ToolSpec], output_schema: Option<&Value>) -> Value {
    let mut branches: Vec<Value> = specs
        .iter()
        .map(|t| {
            json!({
                "type": "object",
                "properties": {"tool": {"const": t.name}, "args": t.parameters},
                "required": ["tool", "args"],
                "additionalProperties": false,
            })
        })
        .collect();
    branches.push(json!({
        "type": "object",
        "properties": {"final": output_schema.cloned().unwrap_or_else(|| json!({"type": "string"}))},
        "required": ["final"],
        "additionalProperties": false,
    }));
    json!({ "oneOf": branches })
}

/// The history as the JSON protocol writes it: the tools explained in the system
/// message, each tool call as the JSON the model would have written, each result as a
/// user message.
fn protocol_messages(messages: &[Message], specs: &[ToolSpec]) -> Vec<Message> {
    let mut tools = String::new();
    for t in specs {
        tools.push_str(&format!(
            "\n- `{}`: {} Arguments (JSON Schema): {}",
            t.name, t.description, t.parameters
        ));
    }
    let protocol = format!(
        "You can call tools. Answer with exactly one JSON object and nothing else: \
         {{\"tool\": \"<tool name>\", \"args\": {{...}}}} to call a tool (its result comes \
         back in the next message), or {{\"final\": <your answer>}} once you can answer.\n\
         Tools:{tools}"
    );
    let mut out = Vec::with_capacity(messages.len() + 1);
    match messages.first() {
        Some(m) if m.role == Role::System => {
            out.push(Message::system(format!("{}\n\n{protocol}", m.content)));
        }
        _ => out.push(Message::system(protocol)),
    }
    for m in messages.iter().skip_while(|m| m.role == Role::System) {
        match m.role {
            Role::Assistant if !m.tool_calls.is_empty() => {
                let calls: Vec<String> = m
                    .tool_calls
                    .iter()
                    .map(|c| json!({"tool": c.name, "args": c.arguments}).to_string())
                    .collect();
                out.push(Message::assistant(calls.join("\n")));
            }
            Role::Tool => out.push(Message::user(format!(
                "Result of tool `{}`:\n{}",
                m.tool_name.as_deref().unwrap_or("?"),
                m.content
            ))),
            _ => out.push(Message::new(m.role, m.content.clone())),
        }
    }
    out
}

/// A decoded turn: the attempt (its `tool_calls`, or its final `text`), the final
/// answer's JSON, and the strategy that read it.
pub(super) type Decoded = (AttemptOutput, Option<Value>, Option<Strategy>);

/// One turn's reply: its tool calls (the attempt's `tool_calls`, with empty text), or
/// its final answer (the attempt's `text`, with the JSON output when the step has an
/// output schema), and the strategy that read it.
pub(super) fn decode_turn(
    llm: &LlmAction,
    strategy: Strategy,
    mut out: AttemptOutput,
) -> Result<Decoded, (ProviderError, Option<u64>)> {
    let ftm = out.first_token_ms;
    if strategy == Strategy::Native {
        if !out.tool_calls.is_empty() {
            return Ok((out, None, Some(strategy)));
        }
        let (out, json) = check_output(llm, out, false)?;
        return Ok((out, json, Some(strategy)));
    }
    out.tool_calls.clear();
    let (turn, used) = match parse_json_reply(&out.text) {
        Ok(v) => (protocol_turn(v), Strategy::Json),
        Err(_) => (react_turn(&out.text), Strategy::React),
    };
    match turn {
        Some(Turn::Call(call)) => {
            out.text.clear();
            out.tool_calls.push(call);
            Ok((out, None, Some(used)))
        }
        Some(Turn::Final(text)) => {
            out.text = text;
            let (out, json) = check_output(llm, out, false)?;
            Ok((out, json, Some(used)))
        }
        None => Err((
            ProviderError::new(
                ProviderErrorKind::InvalidOutput,
                format!(
                    "the reply is neither a tool call nor a final answer: answer with {{\"tool\": NAME, \"args\": {{...}}}} or {{\"final\": ...}} (got `{}`){}",
                    out.text.chars().take(120).collect::<String>(),
                    cut_note(llm, &out)
                ),
            ),
            ftm,
        )),
    }
}

/// A reply read as a call or an answer.
#[derive(Debug, PartialEq)]
enum Turn {
    Call(ToolCall),
    Final(String),
}

/// A JSON protocol reply: `{"tool", "args"}` or `{"final"}`.
fn protocol_turn(v: Value) -> Option<Turn> {
    let Value::Object(mut o) = v else { return None };
    if let Some(Value::String(name)) = o.remove("tool") {
        let arguments = match o.remove("args") {
            Some(a @ Value::Object(_)) => a,
            None | Some(Value::Null) => json!({}),
            Some(_) => return None,
        };
        return Some(Turn::Call(ToolCall {
            id: ToolCall::fallback_id(0),
            name,
            arguments,
        }));
    }
    match o.remove("final")? {
        Value::String(s) => Some(Turn::Final(s)),
        other => Some(Turn::Final(other.to_string())),
    }
}

/// A ReAct reply: `Action: NAME` and `Action Input: JSON` (a call), or `Final Answer:`
/// (the rest of the text).
fn react_turn(text: &str) -> Option<Turn> {
    if let Some(at) = text.find("Action:") {
        let rest = &text[at + "Action:".len()..];
        let name = rest.lines().next()?.trim().trim_matches('`').to_string();
        if name.is_empty() {
            return None;
        }
        let arguments = match rest.find("Action Input:") {
            Some(i) => {
                let input = &rest[i + "Action Input:".len()..];
                let input = input.split("Observation:").next().unwrap_or(input).trim();
                match parse_json_reply(input) {
                    Ok(v @ Value::Object(_)) => v,
                    _ => return None,
                }
            }
            None => json!({}),
        };
        return Some(Turn::Call(ToolCall {
            id: ToolCall::fallback_id(0),
            name,
            arguments,
        }));
    }
    let at = text.find("Final Answer:")?;
    let answer = text[at + "Final Answer:".len()..].trim();
    (!answer.is_empty()).then(|| Turn::Final(answer.to_string()))
}

/// The name a model calls a tool by: letters, digits, `_` and `-` (OpenAI's rule for
/// function names), at most 64 characters.
pub(super) fn model_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect()
}

/// The spec of an `http`, `file`, `shell` or `memory` tool: its call arguments as a JSON Schema
/// (those of `kind: tool` steps, see [`crate::workflow::ToolDecl`]); `None` for an `mcp`
/// tool, whose server lists its own tools.
pub(super) fn builtin_spec(name: &str, decl: &ToolDecl) -> Option<ToolSpec> {
    let (description, parameters) = match decl {
        ToolDecl::Http(http) => (
            format!("An HTTP request to {} (`path` is relative to it).", http.url),
            json!({
                "type": "object",
                "properties": {
                    "path": {"type": "string"},
                    "method": {"type": "string", "enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
                    "query": {"type": "object", "additionalProperties": {"type": "string"}},
                    "body": {"type": "object"},
                },
                "additionalProperties": false,
            }),
        ),
        ToolDecl::File(_) => (
            "Reads, writes or lists files inside the workflow's workspace folder (paths are relative to it).".to_string(),
            json!({
                "type": "object",
                "properties": {
                    "op": {"type": "string", "enum": ["read", "write", "list"]},
                    "path": {"type": "string"},
                    "content": {"type": "string"},
                },
                "required": ["op", "path"],
                "additionalProperties": false,
            }),
        ),
        ToolDecl::Shell(shell) => (
            format!(
                "Runs `{}` with further arguments `argv` and optional standard input `stdin`.",
                shell.command.join(" ")
            ),
            json!({
                "type": "object",
                "properties": {
                    "argv": {"type": "array", "items": {"type": "string"}},
                    "stdin": {"type": "string"},
                },
                "additionalProperties": false,
            }),
        ),
        ToolDecl::Memory(memory) => (
            format!(
                "The memory collection `{}`: `op: search` with a `query` returns the passages most similar to it (optionally `top_k`, `filter` on metadata); `op: add` with a `text` stores a document (optionally `document` id and `metadata`).",
                memory.collection
            ),
            json!({
                "type": "object",
                "properties": {
                    "op": {"type": "string", "enum": ["search", "add"]},
                    "query": {"type": "string"},
                    "top_k": {"type": "integer", "minimum": 1, "maximum": 100},
                    "filter": {"type": "object"},
                    "text": {"type": "string"},
                    "document": {"type": "string"},
                    "metadata": {"type": "object"},
                },
                "required": ["op"],
                "additionalProperties": false,
            }),
        ),
        ToolDecl::Mcp(_) => return None,
    };
    Some(ToolSpec {
        name: model_name(name),
        description,
        parameters,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_replies_become_calls_or_answers() {
        let call = protocol_turn(json!({"tool": "notes", "args": {"op": "read"}}));
        assert!(
            matches!(call, Some(Turn::Call(ref c)) if c.name == "notes" && c.arguments == json!({"op": "read"}))
        );
        assert_eq!(
            protocol_turn(json!({"final": "42"})),
            Some(Turn::Final("42".into()))
        );
        assert_eq!(
            protocol_turn(json!({"final": {"a": 1}})),
            Some(Turn::Final("{\"a\":1}".into()))
        );
        assert_eq!(protocol_turn(json!({"tool": "x", "args": [1]})), None);
        assert_eq!(protocol_turn(json!({"answer": 1})), None);
        assert_eq!(protocol_turn(json!([1])), None);
    }

    #[test]
    fn react_text_is_read_as_a_call_or_a_final_answer() {
        let text = "Thought: I need the weather.\nAction: get_weather\nAction Input: {\"city\": \"Oslo\"}\nObservation:";
        match react_turn(text) {
            Some(Turn::Call(c)) => {
                assert_eq!(c.name, "get_weather");
                assert_eq!(c.arguments, json!({"city": "Oslo"}));
            }
            other => panic!("not a call: {other:?}"),
        }
        assert_eq!(
            react_turn("Thought: done\nFinal Answer: It is sunny."),
            Some(Turn::Final("It is sunny.".into()))
        );
        assert_eq!(react_turn("Action: x\nAction Input: not json"), None);
        assert_eq!(react_turn("just some text"), None);
    }

    #[test]
    fn the_history_is_rewritten_for_the_json_protocol() {
        let call = ToolCall {
            id: "call_1".into(),
            name: "notes".into(),
            arguments: json!({"op": "list", "path": "."}),
        };
        let spec = ToolSpec {
            name: "notes".into(),
            description: "Files.".into(),
            parameters: json!({"type": "object"}),
        };
        let history = vec![
            Message::system("Be brief."),
            Message::user("What is in the folder?"),
            Message::assistant_tool_calls("", vec![call.clone()]),
            Message::tool_result(&call, "a.txt"),
        ];
        let out = protocol_messages(&history, std::slice::from_ref(&spec));
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].role, Role::System);
        assert!(out[0].content.starts_with("Be brief.") && out[0].content.contains("`notes`"));
        assert_eq!(out[2].role, Role::Assistant);
        assert_eq!(
            serde_json::from_str::<Value>(&out[2].content).ok(),
            Some(json!({"tool": "notes", "args": {"op": "list", "path": "."}}))
        );
        assert_eq!(out[3].role, Role::User);
        assert!(out[3].content.contains("a.txt"));
        assert!(out.iter().all(|m| m.tool_calls.is_empty()));
    }

    #[test]
    fn the_protocol_schema_has_one_branch_per_tool_and_the_final_answer() {
        let spec = ToolSpec {
            name: "notes".into(),
            description: String::new(),
            parameters: json!({"type": "object", "properties": {"path": {"type": "string"}}}),
        };
        let schema = protocol_schema(&[spec], None);
        let v = jsonschema::validator_for(&schema).ok();
        let Some(v) = v else {
            panic!("the protocol schema does not compile")
        };
        assert!(v.is_valid(&json!({"tool": "notes", "args": {"path": "a"}})));
        assert!(v.is_valid(&json!({"final": "done"})));
        assert!(!v.is_valid(&json!({"tool": "other", "args": {}})));
        assert!(!v.is_valid(&json!({"final": 3})));
        assert!(!v.is_valid(&json!({"tool": "notes"})));
    }

    #[test]
    fn tool_names_follow_the_function_name_rule() {
        assert_eq!(model_name("files.read file"), "files_read_file");
        assert_eq!(model_name(&"x".repeat(80)).len(), 64);
    }
}
