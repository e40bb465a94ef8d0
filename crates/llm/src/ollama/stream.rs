//! The NDJSON stream of `POST /api/chat` as chat chunks: the answer, the reasoning of a
//! thinking model (`message.thinking`, or a `<think>` block in the content), complete
//! tool calls (`message.tool_calls`), the final line's counts and `done_reason`, and the
//! daemon's `{"error": ...}` line mid-stream (`server/routes.go` `ChatHandler` and
//! `streamResponse` of the Ollama repository).
//!
//! Invariant: the stream is read from bytes with a line codec (no line over
//! [`http::EVENT_CAP`], no more than [`http::wire_cap`] in all), so a character split
//! across TCP writes survives and a flood cannot grow memory; it ends at the first error.

use futures::{StreamExt, TryStreamExt};
use nexus_engine::provider::{
    ChatChunk, ChatStream, ProviderError, ProviderErrorKind, ToolCall, Usage,
};
use tokio_util::codec::{FramedRead, LinesCodec};

use super::errors::classify_message;
use super::wire::{self, ChatLine};
use crate::http::{self, classify_wire};

/// Splits a `<think>…</think>` block at the start of a reply's content from the answer,
/// across chunk boundaries (older deepseek-r1 pulls whose template has no thinking
/// support put the reasoning in the content; Ollama's own `thinking/parser.go` strips the
/// same opening and closing tags when it knows them).
#[derive(Debug, Default)]
pub struct ThinkTags {
    state: TagState,
    pending: String,
    trim_answer: bool,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum TagState {
    /// Nothing but whitespace seen: the content may still open with `<think>`.
    #[default]
    Start,
    /// Inside the block.
    Thinking,
    /// After the block, or content without one.
    Answer,
}

const OPEN_TAG: &str = "<think>";
const CLOSE_TAG: &str = "</think>";

impl ThinkTags {
    /// Feeds one chunk of content; returns (reasoning, answer) text ready to pass on
    /// (either may be empty; a possible partial tag is held back).
    pub fn push(&mut self, text: &str) -> (String, String) {
        let mut reasoning = String::new();
        let mut answer = String::new();
        self.pending.push_str(text);
        loop {
            match self.state {
                TagState::Start => {
                    let t = self.pending.trim_start();
                    if let Some(rest) = t.strip_prefix(OPEN_TAG) {
                        self.pending = rest.to_string();
                        self.state = TagState::Thinking;
                    } else if OPEN_TAG.starts_with(t) {
                        break;
                    } else {
                        self.state = TagState::Answer;
                    }
                }
                TagState::Thinking => {
                    if let Some(i) = self.pending.find(CLOSE_TAG) {
                        reasoning.push_str(&self.pending[..i]);
                        self.pending = self.pending[i + CLOSE_TAG.len()..].to_string();
                        self.state = TagState::Answer;
                        self.trim_answer = true;
                    } else {
                        let keep = partial_suffix(&self.pending, CLOSE_TAG);
                        let cut = self.pending.len() - keep;
                        reasoning.push_str(&self.pending[..cut]);
                        self.pending.drain(..cut);
                        break;
                    }
                }
                TagState::Answer => {
                    let mut t = std::mem::take(&mut self.pending);
                    if self.trim_answer {
                        t = t.trim_start().to_string();
                        self.trim_answer = t.is_empty();
                    }
                    answer.push_str(&t);
                    break;
                }
            }
        }
        (reasoning, answer)
    }

    /// The end of the content: whatever was held back (an unclosed block is reasoning).
    pub fn finish(&mut self) -> (String, String) {
        let rest = std::mem::take(&mut self.pending);
        match self.state {
            TagState::Thinking => (rest, String::new()),
            TagState::Start | TagState::Answer => (String::new(), rest),
        }
    }
}

/// Bytes at the end of `text` that could begin `tag`.
fn partial_suffix(text: &str, tag: &str) -> usize {
    (1..tag.len())
        .rev()
        .find(|&n| {
            text.len() >= n
                && text.is_char_boundary(text.len() - n)
                && tag.starts_with(&text[text.len() - n..])
        })
        .unwrap_or(0)
}

/// What one reply has seen so far: the `<think>` splitter and the tool calls passed on.
#[derive(Debug, Default)]
pub(super) struct Reply {
    tags: ThinkTags,
    calls: usize,
}

/// One NDJSON line of `POST /api/chat` as chunks: its reasoning, content and tool calls,
/// then `Done` when it is the last (`done: true`, with `prompt_eval_count`, `eval_count`
/// and `done_reason`); an `{"error": ...}` line is the daemon's error, classified by its
/// words.
pub(super) fn line_chunks(line: &str, reply: &mut Reply) -> Vec<Result<ChatChunk, ProviderError>> {
    if line.trim().is_empty() {
        return Vec::new();
    }
    let resp = match serde_json::from_str::<ChatLine>(line) {
        Ok(r) => r,
        Err(e) => {
            return vec![Err(ProviderError::new(
                ProviderErrorKind::Protocol,
                format!("bad line from Ollama: {e}"),
            ))];
        }
    };
    if let Some(error) = resp.error {
        return vec![Err(classify_message(&error))];
    }
    let mut out = Vec::with_capacity(3);
    let mut push = |reasoning: String, answer: String| {
        if !reasoning.is_empty() {
            out.push(Ok(ChatChunk::Reasoning(reasoning)));
        }
        if !answer.is_empty() {
            out.push(Ok(ChatChunk::Delta(answer)));
        }
    };
    let mut calls = Vec::new();
    if let Some(m) = resp.message {
        push(m.thinking, String::new());
        if !m.content.is_empty() {
            let (r, a) = reply.tags.push(&m.content);
            push(r, a);
        }
        calls = m.tool_calls;
    }
    for call in calls {
        out.push(tool_call(call, reply.calls));
        reply.calls += 1;
    }
    if resp.done {
        let (r, a) = reply.tags.finish();
        let mut tail = Vec::new();
        if !r.is_empty() {
            tail.push(Ok(ChatChunk::Reasoning(r)));
        }
        if !a.is_empty() {
            tail.push(Ok(ChatChunk::Delta(a)));
        }
        out.extend(tail);
        out.push(Ok(ChatChunk::Done {
            usage: Usage {
                prompt_tokens: resp.prompt_eval_count.unwrap_or(0),
                completion_tokens: resp.eval_count.unwrap_or(0),
            },
            finish_reason: Some(resp.done_reason.unwrap_or_else(|| "stop".into())),
        }));
    }
    out
}

/// A tool call of the daemon's as a chunk: the daemon parses the model's output into
/// complete calls before it sends them (`tools/tools.go` `Parser.Add`), with the
/// arguments as a JSON object. A call without an `id` (daemons before `toolCallId`) gets
/// [`ToolCall::fallback_id`] of its place in the reply; arguments sent as a JSON string
/// are parsed.
///
/// # Errors
/// [`ProviderErrorKind::InvalidOutput`] naming the tool when the arguments are a string
/// that is not JSON.
fn tool_call(call: wire::ToolCall, nth: usize) -> Result<ChatChunk, ProviderError> {
    let wire::ToolCall { id, function } = call;
    let arguments = match function.arguments {
        serde_json::Value::String(text) => serde_json::from_str(&text).map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::InvalidOutput,
                format!(
                    "ollama: the arguments of the call of tool `{}` are not JSON: {e}",
                    function.name
                ),
            )
        })?,
        serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
        other => other,
    };
    Ok(ChatChunk::ToolCall(ToolCall {
        id: id
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| ToolCall::fallback_id(nth)),
        name: function.name,
        arguments,
    }))
}

/// The NDJSON stream of a chat reply, no line over [`http::EVENT_CAP`], no more than
/// [`http::wire_cap`] bytes in all; it ends at the first error.
pub(super) fn ndjson_reply(resp: reqwest::Response, max_tokens: u32) -> ChatStream {
    let bytes = http::total_capped(resp, http::wire_cap(max_tokens)).map_err(std::io::Error::other);
    let lines = FramedRead::new(
        tokio_util::io::StreamReader::new(bytes),
        LinesCodec::new_with_max_length(http::EVENT_CAP),
    );
    let mut reply = Reply::default();
    let chunks = lines
        .map(move |line| match line {
            Ok(line) => line_chunks(&line, &mut reply),
            Err(e) => {
                let e = crate::Error::from(e);
                let mut err = classify_wire(&e);
                if err.kind == ProviderErrorKind::Protocol {
                    err.message = format!("the Ollama stream broke: {}", err.message);
                }
                vec![Err(err)]
            }
        })
        .flat_map(futures::stream::iter);
    let mut failed = false;
    Box::pin(chunks.take_while(move |item| {
        let go = !failed;
        failed |= item.is_err();
        futures::future::ready(go)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_blocks_are_split_from_the_answer_across_chunk_boundaries() {
        let chunks = [
            "\n<th",
            "ink>The user",
            " wants JSON.</thi",
            "nk>\n\n",
            "{\"a\"",
            ": 1}",
        ];
        let mut tags = ThinkTags::default();
        let (mut reasoning, mut answer) = (String::new(), String::new());
        for c in chunks {
            let (r, a) = tags.push(c);
            reasoning.push_str(&r);
            answer.push_str(&a);
        }
        let (r, a) = tags.finish();
        reasoning.push_str(&r);
        answer.push_str(&a);
        assert_eq!(reasoning, "The user wants JSON.");
        assert_eq!(answer, "{\"a\": 1}");

        // Content without a block passes unchanged, even if it mentions a tag later.
        let mut tags = ThinkTags::default();
        let (r, a) = tags.push("Use <think> tags");
        assert_eq!((r.as_str(), a.as_str()), ("", "Use <think> tags"));
        // A short first chunk that could open a tag is held, then released.
        let mut tags = ThinkTags::default();
        assert_eq!(tags.push("<t"), (String::new(), String::new()));
        assert_eq!(tags.push("able>"), (String::new(), "<table>".to_string()));
        // An unclosed block is reasoning.
        let mut tags = ThinkTags::default();
        let (r, _) = tags.push("<think>still thinking</");
        assert_eq!(r, "still thinking");
        assert_eq!(tags.finish(), ("</".to_string(), String::new()));
    }

    #[test]
    fn thinking_lines_become_reasoning_and_done_reason_is_kept() {
        let mut tags = Reply::default();
        let line = r#"{"model":"m","message":{"role":"assistant","content":"","thinking":"Hmm"},"done":false}"#;
        assert_eq!(
            line_chunks(line, &mut tags),
            vec![Ok(ChatChunk::Reasoning("Hmm".into()))]
        );
        let done = r#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","prompt_eval_count":7,"eval_count":3}"#;
        assert_eq!(
            line_chunks(done, &mut tags),
            vec![Ok(ChatChunk::Done {
                usage: Usage {
                    prompt_tokens: 7,
                    completion_tokens: 3
                },
                finish_reason: Some("length".into())
            })]
        );
        let err = line_chunks(r#"{"error":"CUDA error: out of memory"}"#, &mut tags);
        let Some(Err(e)) = err.first() else {
            panic!("an error line must be an error: {err:?}");
        };
        assert_eq!(e.kind, ProviderErrorKind::Unavailable);
        assert!(e.message.contains("CUDA error: out of memory"), "{e}");
    }

    #[test]
    fn tool_calls_become_complete_calls_with_an_id() {
        let mut reply = Reply::default();
        // docs/api.md "Chat request (Streaming with tools)"; server/routes.go sets `id`.
        let line = r#"{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"id":"call_ab12cd34","function":{"index":0,"name":"get_weather","arguments":{"city":"Tokyo"}}}]},"done":false}"#;
        assert_eq!(
            line_chunks(line, &mut reply),
            vec![Ok(ChatChunk::ToolCall(ToolCall {
                id: "call_ab12cd34".into(),
                name: "get_weather".into(),
                arguments: serde_json::json!({"city": "Tokyo"}),
            }))]
        );
        // An older daemon: no id; the second call of the reply is `call_1`.
        let line = r#"{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_time","arguments":{}}}]},"done":false}"#;
        let got = line_chunks(line, &mut reply);
        assert!(
            matches!(&got[..], [Ok(ChatChunk::ToolCall(c))] if c.id == "call_1" && c.name == "get_time"),
            "{got:?}"
        );
        // Arguments that are a string of broken JSON: an invalid output naming the tool.
        let line = r#"{"message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_time","arguments":"{\"tz\": "}}]},"done":false}"#;
        let got = line_chunks(line, &mut reply);
        assert!(
            matches!(&got[..], [Err(e)] if e.kind == ProviderErrorKind::InvalidOutput && e.message.contains("`get_time`")),
            "{got:?}"
        );
    }
}
