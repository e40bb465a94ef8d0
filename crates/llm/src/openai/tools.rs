//! Streamed tool calls of OpenAI-compatible servers, assembled into complete calls.
//!
//! OpenAI streams a call as `delta.tool_calls[]` fragments keyed by `index` ("The chat
//! completion chunk object", and OpenAI's function-calling guide, "Streaming"): the
//! first fragment of an index carries `id`, `type` and `function.name` with an empty
//! `function.arguments`, the next ones carry pieces of the arguments' JSON text only;
//! the choice ends with `finish_reason: "tool_calls"`. llama-cpp-python repeats `id` and
//! the whole `name` in every fragment (`llama_chat_format.py`
//! `_convert_completion_to_chat_function`), so a name that comes again is the same name,
//! not more of it. Ollama's OpenAI-compatible endpoint sends each call whole with the
//! `index` its parser gave it (`openai/openai.go` `ToToolCalls`), 0 for every call of a
//! parser that counts none, so a fragment with a new `id` at an index already holding a
//! call with another id starts a new call. The arguments are parsed once the call is
//! complete; text that is not JSON is the model's fault, a
//! [`ProviderErrorKind::InvalidOutput`] naming the tool.

use std::collections::BTreeMap;

use nexus_engine::provider::{ProviderError, ProviderErrorKind, ToolCall};

use super::wire::ToolCallDelta;

/// Most tool calls one reply may make (OpenAI runs parallel calls in the handful).
pub const MAX_TOOL_CALLS: usize = 128;

/// The calls of one reply being assembled, in the order they started.
#[derive(Debug, Default)]
pub(crate) struct Assembler {
    calls: Vec<Partial>,
    /// The call each `index` is adding to now.
    current: BTreeMap<usize, usize>,
}

#[derive(Debug, Default)]
struct Partial {
    id: Option<String>,
    name: String,
    arguments: String,
}

impl Assembler {
    /// Whether any fragment arrived.
    pub(crate) fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Adds one fragment.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Protocol`] past [`MAX_TOOL_CALLS`] calls.
    pub(crate) fn push(&mut self, delta: ToolCallDelta) -> Result<(), ProviderError> {
        let id = delta.id.filter(|i| !i.is_empty());
        let held =
            self.current
                .get(&delta.index)
                .copied()
                .filter(|&at| match (&self.calls[at].id, &id) {
                    (Some(old), Some(new)) => old == new,
                    _ => true,
                });
        let at = match held {
            Some(at) => at,
            None => {
                if self.calls.len() >= MAX_TOOL_CALLS {
                    return Err(ProviderError::new(
                        ProviderErrorKind::Protocol,
                        format!("the reply made more than {MAX_TOOL_CALLS} tool calls"),
                    ));
                }
                self.calls.push(Partial::default());
                self.current.insert(delta.index, self.calls.len() - 1);
                self.calls.len() - 1
            }
        };
        let call = &mut self.calls[at];
        if let Some(id) = id {
            call.id.get_or_insert(id);
        }
        if let Some(f) = delta.function {
            if let Some(name) = f.name.filter(|n| !n.is_empty())
                && call.name.is_empty()
            {
                call.name = name;
            }
            if let Some(piece) = f.arguments {
                call.arguments.push_str(&piece);
            }
        }
        Ok(())
    }

    /// The complete calls, in the order they started.
    ///
    /// # Errors
    /// [`ProviderErrorKind::Protocol`] for a call without a name;
    /// [`ProviderErrorKind::InvalidOutput`] naming the tool for arguments that are not
    /// one JSON value (cut short, or not JSON at all). Empty arguments are `{}`.
    pub(crate) fn finish(self) -> Result<Vec<ToolCall>, ProviderError> {
        self.calls
            .into_iter()
            .enumerate()
            .map(|(index, call)| {
                if call.name.is_empty() {
                    return Err(ProviderError::new(
                        ProviderErrorKind::Protocol,
                        format!("tool call {index} of the reply has no function name"),
                    ));
                }
                let arguments = if call.arguments.trim().is_empty() {
                    serde_json::Value::Object(serde_json::Map::new())
                } else {
                    serde_json::from_str(&call.arguments).map_err(|e| {
                        ProviderError::new(
                            ProviderErrorKind::InvalidOutput,
                            format!(
                                "the arguments of the call of tool `{}` are not complete JSON ({e}): {}",
                                call.name,
                                excerpt(&call.arguments)
                            ),
                        )
                    })?
                };
                Ok(ToolCall {
                    id: call.id.unwrap_or_else(|| ToolCall::fallback_id(index)),
                    name: call.name,
                    arguments,
                })
            })
            .collect()
    }
}

/// The first 200 bytes of `text`, cut on a character boundary.
fn excerpt(text: &str) -> &str {
    &text[..text.floor_char_boundary(200)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::openai::wire::FunctionDelta;

    fn delta(index: usize, id: Option<&str>, name: Option<&str>, args: &str) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            function: Some(FunctionDelta {
                name: name.map(str::to_owned),
                arguments: Some(args.to_string()),
            }),
        }
    }

    #[test]
    fn fragments_are_joined_by_index_and_a_repeated_name_is_one_name() {
        let mut a = Assembler::default();
        for d in [
            delta(0, Some("call_a"), Some("get_weather"), ""),
            delta(1, Some("call_b"), Some("get_time"), "{\"tz\":"),
            delta(0, None, None, "{\"city\": \"To"),
            // llama-cpp-python: id and name again in every fragment.
            delta(0, Some("call_a"), Some("get_weather"), "kyo\"}"),
            delta(1, None, None, " \"UTC\"}"),
        ] {
            assert!(a.push(d).is_ok());
        }
        let calls = a.finish().unwrap_or_default();
        assert_eq!(calls.len(), 2);
        assert_eq!(
            (calls[0].id.as_str(), calls[0].name.as_str()),
            ("call_a", "get_weather")
        );
        assert_eq!(calls[0].arguments, serde_json::json!({"city": "Tokyo"}));
        assert_eq!(calls[1].arguments, serde_json::json!({"tz": "UTC"}));
    }

    #[test]
    fn cut_arguments_are_an_invalid_output_naming_the_tool() {
        let mut a = Assembler::default();
        assert!(
            a.push(delta(0, Some("c"), Some("get_weather"), "{\"city\": \"To"))
                .is_ok()
        );
        let err = a.finish().err();
        assert!(
            err.as_ref()
                .is_some_and(|e| e.kind == ProviderErrorKind::InvalidOutput
                    && e.message.contains("`get_weather`")
                    && e.message.contains("{\"city\": \"To")),
            "{err:?}"
        );
        let mut a = Assembler::default();
        assert!(a.push(delta(0, None, None, "{}")).is_ok());
        let err = a.finish().err().map(|e| e.kind);
        assert_eq!(err, Some(ProviderErrorKind::Protocol));
    }

    #[test]
    fn a_new_id_at_an_index_in_use_is_a_new_call() {
        // Ollama's OpenAI-compatible endpoint: two whole calls, both at index 0.
        let mut a = Assembler::default();
        assert!(
            a.push(delta(
                0,
                Some("call_1"),
                Some("get_weather"),
                "{\"city\":\"Oslo\"}"
            ))
            .is_ok()
        );
        assert!(
            a.push(delta(
                0,
                Some("call_2"),
                Some("get_weather"),
                "{\"city\":\"Rome\"}"
            ))
            .is_ok()
        );
        let calls = a.finish().unwrap_or_default();
        let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["call_1", "call_2"]);
        assert_eq!(calls[1].arguments, serde_json::json!({"city": "Rome"}));
    }
}
