//! Native tool calls through the providers: Ollama against the Ollama-protocol test
//! server (tool calls as the daemon sends them, results read back by `tool_name`),
//! OpenAI-compatible against llama-cpp-python's real server (`chatml-function-calling`,
//! streamed `delta.tool_calls`) and against a loopback server that streams the chunks of
//! OpenAI's documentation field for field.

use crate::chat::{answer, calls, items};
use nexus_engine::provider::{
    ChatChunk, ChatRequest, Message, ModelInfo, Provider, ProviderError, ProviderErrorKind,
    ToolCall, ToolChoice, ToolSpec,
};
use nexus_llm::{OllamaProvider, OpenAiProvider};
use nexus_tests::scripted::{Behavior, ScriptedServer};
use nexus_tests::{LlamaServer, OllamaServer};
use serde_json::{Value, json};

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Get the weather in a given city".into(),
        parameters: json!({
            "type": "object",
            "properties": {"city": {"type": "string", "description": "The city to get the weather for"}},
            "required": ["city"]
        }),
    }
}

fn email_tool() -> ToolSpec {
    ToolSpec {
        name: "send_email".into(),
        description: "Send an email".into(),
        parameters: json!({"type": "object", "properties": {"to": {"type": "string"}}, "required": ["to"]}),
    }
}

fn finish_reason(items: &[Result<ChatChunk, ProviderError>]) -> Option<String> {
    match items.last() {
        Some(Ok(ChatChunk::Done { finish_reason, .. })) => finish_reason.clone(),
        _ => None,
    }
}

fn first_error(items: &[Result<ChatChunk, ProviderError>]) -> Option<ProviderError> {
    items.iter().find_map(|i| i.as_ref().err().cloned())
}

fn model<'a>(models: &'a [ModelInfo], name: &str) -> &'a ModelInfo {
    models
        .iter()
        .find(|m| m.name == name)
        .unwrap_or_else(|| panic!("no model {name}: {models:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ollama_tool_calls_arrive_whole_and_their_results_go_back_by_tool_name()
-> anyhow::Result<()> {
    let specs = vec![
        json!({"name": "llama3.1:latest", "capabilities": ["completion", "tools"], "script": {
            "tool_calls": [{"name": "get_weather", "arguments": {"city": "Tokyo"}},
                           {"name": "send_email", "arguments": {"to": "ops@example.com"}}],
            "after_tool": "{tool_name} ({tool_call_id}) said {content}; history {calls}"}}),
        json!({"name": "smol:latest", "capabilities": ["completion"], "script": {"content": ["plain"]}}),
    ];
    let server =
        tokio::task::spawn_blocking(move || OllamaServer::start_with_specs(&[], &specs, &[]))
            .await??;
    let provider = OllamaProvider::new(&server.url)?;
    let models = provider.list_models().await?;
    assert!(provider.native_tool_calls(model(&models, "llama3.1:latest")));
    assert!(!provider.native_tool_calls(model(&models, "smol:latest")));

    // docs/api.md "Chat request (Streaming with tools)": each call whole, object arguments.
    let ask = Message::user("What is the weather in Tokyo?");
    let mut req = ChatRequest::new("llama3.1:latest", vec![ask.clone()], 64);
    req.tools = vec![weather_tool(), email_tool()];
    let got = items(&provider, req.clone()).await;
    let made = calls(&got);
    assert_eq!(made.len(), 2, "{got:?}");
    assert_eq!(made[0].name, "get_weather");
    assert_eq!(made[0].arguments, json!({"city": "Tokyo"}));
    assert_eq!(made[1].arguments, json!({"to": "ops@example.com"}));
    // server/routes.go toolCallId: call_ and 8 characters, one per call.
    assert!(
        made.iter()
            .all(|c| c.id.starts_with("call_") && c.id.len() == 13)
            && made[0].id != made[1].id,
        "{made:?}"
    );
    assert_eq!(finish_reason(&got).as_deref(), Some("stop"));

    // A forced tool is offered alone (the daemon has no tool_choice); the model's call of
    // the other stays text, as tools/tools.go parses only offered tools.
    req.tool_choice = ToolChoice::Tool("get_weather".into());
    let got = items(&provider, req).await;
    let forced = calls(&got);
    assert_eq!(forced.len(), 1, "{got:?}");
    assert_eq!(forced[0].name, "get_weather");
    assert!(answer(&got).contains("send_email"), "{got:?}");

    // The result goes back as role `tool` with the tool's name and the call's id; the
    // assistant's call comes back with object arguments (api/types.go Message).
    let call = made[0].clone();
    let mut follow = ChatRequest::new(
        "llama3.1:latest",
        vec![
            ask,
            Message::assistant_tool_calls("", vec![call.clone()]),
            Message::tool_result(&call, "11 degrees celsius"),
        ],
        64,
    );
    follow.tools = vec![weather_tool()];
    let got = items(&provider, follow).await;
    let id = &call.id;
    assert_eq!(
        answer(&got),
        format!(
            r#"get_weather ({id}) said 11 degrees celsius; history [{{"id":"{id}","function":{{"index":0,"name":"get_weather","arguments":{{"city":"Tokyo"}}}}}}]"#
        ),
        "{got:?}"
    );

    // A model without the capability: the daemon's 400, an invalid request (no retry).
    let mut plain = ChatRequest::new("smol:latest", vec![Message::user("hi")], 8);
    plain.tools = vec![weather_tool()];
    let err = first_error(&items(&provider, plain).await);
    assert!(
        err.as_ref()
            .is_some_and(|e| e.kind == ProviderErrorKind::InvalidRequest
                && e.message.contains("does not support tools")),
        "{err:?}"
    );
    Ok(())
}

/// A chunk as OpenAI's function-calling guide ("Streaming") and "The chat completion
/// chunk object" show it.
fn chunk(delta: Value, finish_reason: Value) -> Value {
    json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
           "model": "gpt-4o-mini", "system_fingerprint": "fp_44709d6fcb",
           "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish_reason}]})
}

fn args(index: usize, piece: &str) -> Value {
    chunk(
        json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}),
        Value::Null,
    )
}

fn opening(index: usize, id: &str, name: &str) -> Value {
    chunk(
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"index": index, "id": id, "type": "function", "function": {"name": name, "arguments": ""}}]}),
        Value::Null,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_streamed_tool_call_deltas_are_joined_by_index() -> anyhow::Result<()> {
    // Two parallel calls whose argument pieces interleave, the end of the choice, then
    // `stream_options.include_usage`'s last chunk without choices.
    let usage = json!({"id": "chatcmpl-123", "object": "chat.completion.chunk", "created": 1694268190,
                       "model": "gpt-4o-mini", "choices": [],
                       "usage": {"prompt_tokens": 82, "completion_tokens": 18, "total_tokens": 100}});
    let parallel = vec![
        opening(0, "call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather"),
        args(0, "{\"ci"),
        opening(1, "call_Xg2hcA9pD3", "send_email"),
        args(0, "ty\": \"Par"),
        args(1, "{\"to\": \"ops@example.com\"}"),
        args(0, "is\"}"),
        chunk(json!({}), json!("tool_calls")),
        usage,
    ];
    // The same call cut short: the stream ends inside the arguments' JSON.
    let cut = vec![
        opening(0, "call_1", "get_weather"),
        args(0, "{\"city\": \"Pa"),
        chunk(json!({}), json!("tool_calls")),
    ];
    let server =
        ScriptedServer::start(vec![Behavior::Events(parallel), Behavior::Events(cut)]).await?;
    let provider = OpenAiProvider::new(&server.base_url, None, vec!["gpt-4o-mini".into()])?;
    let models = provider.list_models().await?;
    assert!(provider.native_tool_calls(&models[0]));

    // A history with a call and its result, so the request's shape is checked too.
    let earlier = ToolCall {
        id: "call_0".into(),
        name: "get_weather".into(),
        arguments: json!({"city": "Oslo"}),
    };
    let mut req = ChatRequest::new(
        "gpt-4o-mini",
        vec![
            Message::user("Weather in Oslo and Paris, and mail ops."),
            Message::assistant_tool_calls("", vec![earlier.clone()]),
            Message::tool_result(&earlier, "-3 C"),
        ],
        64,
    );
    req.tools = vec![weather_tool(), email_tool()];
    let got = items(&provider, req.clone()).await;
    let made = calls(&got);
    assert_eq!(made.len(), 2, "{got:?}");
    assert_eq!(
        (made[0].id.as_str(), made[0].name.as_str()),
        ("call_DdmO9pD3xa9XTPNJ32zg2hcA", "get_weather")
    );
    assert_eq!(made[0].arguments, json!({"city": "Paris"}));
    assert_eq!(
        (made[1].id.as_str(), made[1].arguments.clone()),
        ("call_Xg2hcA9pD3", json!({"to": "ops@example.com"}))
    );
    assert!(answer(&got).is_empty(), "{got:?}");
    match got.last() {
        Some(Ok(ChatChunk::Done {
            usage,
            finish_reason,
        })) => {
            assert_eq!((usage.prompt_tokens, usage.completion_tokens), (82, 18));
            assert_eq!(finish_reason.as_deref(), Some("tool_calls"));
        }
        other => panic!("no done: {other:?}"),
    }
    let body = &server.bodies()[0];
    assert_eq!(body["tool_choice"], json!("auto"));
    assert_eq!(
        body["tools"][0],
        json!({"type": "function", "function": {"name": "get_weather",
               "description": "Get the weather in a given city", "parameters": weather_tool().parameters}})
    );
    // An assistant message with only calls has null content and string arguments; the
    // result quotes the call's id.
    assert_eq!(
        body["messages"][1],
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_0", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]})
    );
    assert_eq!(
        body["messages"][2],
        json!({"role": "tool", "content": "-3 C", "tool_call_id": "call_0"})
    );

    // Cut arguments: an invalid output naming the tool, never a partial call.
    req.tool_choice = ToolChoice::Tool("get_weather".into());
    let got = items(&provider, req.clone()).await;
    assert!(calls(&got).is_empty(), "{got:?}");
    let err = first_error(&got);
    assert!(
        err.as_ref()
            .is_some_and(|e| e.kind == ProviderErrorKind::InvalidOutput
                && e.message.contains("`get_weather`")),
        "{err:?}"
    );
    assert_eq!(
        server.bodies()[1]["tool_choice"],
        json!({"type": "function", "function": {"name": "get_weather"}})
    );

    // A server configured without tools refuses the request before sending it.
    let no_tools = provider.with_native_tools(false);
    assert!(!no_tools.native_tool_calls(&models[0]));
    let err = first_error(&items(&no_tools, req).await);
    assert_eq!(err.map(|e| e.kind), Some(ProviderErrorKind::InvalidRequest));
    assert_eq!(server.bodies().len(), 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_compatible_tool_calls_stream_from_llama_cpp_python() -> anyhow::Result<()> {
    // llama-cpp-python's `chatml-function-calling` format streams a forced call's
    // arguments, constrained by the tool's schema (its automatic choice does not stream).
    let server = tokio::task::spawn_blocking(|| {
        LlamaServer::start_with_args("smol", &["--chat_format", "chatml-function-calling"])
    })
    .await??;
    let provider = OpenAiProvider::new(&server.base_url, None, vec![])?;
    let mut req = ChatRequest::new(
        "smol",
        vec![
            Message::system("You are a helpful assistant."),
            Message::user("What is the weather in Tokyo?"),
        ],
        128,
    );
    req.temperature = 0.0;
    req.tools = vec![weather_tool()];
    req.tool_choice = ToolChoice::Tool("get_weather".into());
    let got = items(&provider, req).await;
    let made = calls(&got);
    assert_eq!(made.len(), 1, "{got:?}");
    assert_eq!(made[0].name, "get_weather");
    assert!(made[0].id.starts_with("call_"), "{made:?}");
    assert!(
        made[0].arguments.get("city").is_some_and(Value::is_string),
        "{made:?}"
    );
    assert_eq!(
        finish_reason(&got).as_deref(),
        Some("tool_calls"),
        "{got:?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_embedded_model_calls_no_tools_and_embeds_only_with_its_sentence_encoder()
-> anyhow::Result<()> {
    let provider = crate::embedded()?;
    let models = provider.list_models().await?;
    assert!(!provider.native_tool_calls(&models[0]));
    // Embeddings come from the in-process all-MiniLM-L6-v2, not from the chat model.
    assert!(provider.can_embed());
    // Refused before the model is loaded: an invalid request, so the engine moves on.
    let mut req = ChatRequest::new(models[0].name.clone(), vec![Message::user("hi")], 8);
    req.tools = vec![weather_tool()];
    let err = first_error(&items(provider.as_ref(), req).await);
    assert!(
        err.as_ref()
            .is_some_and(|e| e.kind == ProviderErrorKind::InvalidRequest
                && e.message.contains("no native tool calls")),
        "{err:?}"
    );
    let err = provider
        .embed(nexus_engine::provider::EmbedRequest {
            model: models[0].name.clone(),
            inputs: vec!["hi".into()],
            dimensions: None,
            truncate: false,
        })
        .await
        .err();
    assert!(
        err.as_ref()
            .is_some_and(|e| e.kind == ProviderErrorKind::InvalidRequest
                && e.message.contains("embeds with `all-minilm-l6-v2` only")),
        "{err:?}"
    );
    let ok = provider
        .embed(nexus_engine::provider::EmbedRequest {
            model: "all-minilm-l6-v2".into(),
            inputs: vec!["hi".into(), "there".into()],
            dimensions: None,
            truncate: false,
        })
        .await?;
    assert_eq!((ok.vectors.len(), ok.dimensions), (2, 384));
    Ok(())
}
