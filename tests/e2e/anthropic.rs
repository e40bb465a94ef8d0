//! The Anthropic provider against a loopback server (axum) that speaks Anthropic's
//! Messages API as its docs show it: "Streaming Messages" (the tool-use stream byte for
//! byte: `event:` and `data:` lines, a `ping`, text deltas split across events, a
//! `tool_use` block whose `input_json_delta` pieces are cut mid-token; an `error`
//! event mid-stream), "Errors" (each error body, `retry-after` on 429) and "Models"
//! (`GET /v1/models`, paged by `after_id`). The server checks the key, so a wrong key is
//! a real 401; the body is cut into 16-byte reads, so events and JSON arrive split.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::chat::{answer, calls, items};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nexus_engine::provider::{
    ChatChunk, ChatRequest, Message, Provider, ProviderError, ProviderErrorKind, ToolCall,
    ToolChoice, ToolSpec, Usage,
};
use nexus_llm::AnthropicProvider;
use serde_json::{Value, json};

const KEY: &str = "sk-ant-api03-loopback-test-key";

/// "Streaming Messages", "Streaming request with tool use": the documented stream, as
/// sent (compact JSON, the `ping` with a space).
const TOOL_USE_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_014p7gG3wDgGV9EUtLvnow3U","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":472,"output_tokens":2},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}

event: ping
data: {"type": "ping"}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Okay"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" let"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"'s"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" check"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" the"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" weather"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" for"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" Francisco"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":","}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" CA"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":":"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"get_weather","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"location\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" \"San"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" Francisc"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"o,"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":" CA\""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":", "}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"unit\": \"fah"}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"renheit\"}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":89}}

event: message_stop
data: {"type":"message_stop"}

"#;

/// "Streaming Messages", "Error events": an `overloaded_error` after some text.
const OVERLOADED_MID_STREAM: &str = r#"event: message_start
data: {"type": "message_start", "message": {"id": "msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY", "type": "message", "role": "assistant", "content": [], "model": "claude-sonnet-4-5", "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 25, "output_tokens": 1}}}

event: content_block_start
data: {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}

event: content_block_delta
data: {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}

event: error
data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}

"#;

/// The structured answer: the forced `json_answer` tool, its input in pieces.
const JSON_ANSWER_STREAM: &str = r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_01","type":"message","role":"assistant","model":"claude-sonnet-4-5","stop_sequence":null,"usage":{"input_tokens":61,"output_tokens":1},"content":[],"stop_reason":null}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"toolu_01A","name":"json_answer","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"{\"city\": \"Pa"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"ris\", \"rain\": tr"}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"ue}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":22}}

event: message_stop
data: {"type":"message_stop"}

"#;

/// One request the server got.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    headers: HashMap<String, String>,
    query: HashMap<String, String>,
    body: Value,
}

#[derive(Default)]
struct Server {
    seen: Mutex<Vec<Seen>>,
}

impl Server {
    fn record(&self, path: &str, headers: &HeaderMap, query: HashMap<String, String>, body: Value) {
        let headers = headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        if let Ok(mut seen) = self.seen.lock() {
            seen.push(Seen {
                path: path.into(),
                headers,
                query,
                body,
            });
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// An Anthropic error response ("Errors": `{"type": "error", "error": {...},
/// "request_id"}`).
fn error(
    status: u16,
    kind: &str,
    message: &str,
    headers: &[(&'static str, &'static str)],
) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": "req_011CSHoEeqs5C35K2UUqR7Fy"
    });
    let mut resp = (status, axum::Json(body)).into_response();
    for (k, v) in headers {
        resp.headers_mut()
            .insert(*k, axum::http::HeaderValue::from_static(v));
    }
    resp
}

/// `text` as an event stream, in 16-byte reads.
fn sse(text: &'static str) -> Response {
    let pieces: Vec<Result<Bytes, std::io::Error>> = text
        .as_bytes()
        .chunks(16)
        .map(|c| Ok(Bytes::from_static(c)))
        .collect();
    (
        StatusCode::OK,
        [
            ("content-type", "text/event-stream; charset=utf-8"),
            ("cache-control", "no-cache"),
        ],
        Body::from_stream(futures::stream::iter(pieces)),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("x-api-key").and_then(|v| v.to_str().ok()) == Some(KEY)
}

/// `POST /v1/messages`: the answer depends on the model asked for.
async fn messages(State(server): State<Arc<Server>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or_default();
    server.record("/v1/messages", &headers, HashMap::new(), body.clone());
    if !authorized(&headers) {
        return error(401, "authentication_error", "invalid x-api-key", &[]);
    }
    match body["model"].as_str().unwrap_or_default() {
        "claude-busy" => error(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute.",
            &[
                ("retry-after", "7"),
                ("anthropic-ratelimit-requests-remaining", "0"),
            ],
        ),
        "claude-overloaded" => error(529, "overloaded_error", "Overloaded", &[]),
        "claude-long" => error(
            400,
            "invalid_request_error",
            "prompt is too long: 210000 tokens > 200000 maximum",
            &[],
        ),
        "claude-midstream" => sse(OVERLOADED_MID_STREAM),
        "claude-json" => sse(JSON_ANSWER_STREAM),
        "claude-sonnet-4-5" => sse(TOOL_USE_STREAM),
        other => error(404, "not_found_error", &format!("model: {other}"), &[]),
    }
}

/// `GET /v1/models`: two pages, the second after the first's `last_id`.
async fn models(
    State(server): State<Arc<Server>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    server.record("/v1/models", &headers, query.clone(), Value::Null);
    if !authorized(&headers) {
        return error(401, "authentication_error", "invalid x-api-key", &[]);
    }
    let model = |id: &str, name: &str| json!({"type": "model", "id": id, "display_name": name, "created_at": "2025-09-29T00:00:00Z"});
    let page = match query.get("after_id").map(String::as_str) {
        None => json!({
            "data": [model("claude-sonnet-4-5", "Claude Sonnet 4.5"), model("claude-opus-4-1", "Claude Opus 4.1")],
            "has_more": true, "first_id": "claude-sonnet-4-5", "last_id": "claude-opus-4-1"
        }),
        Some("claude-opus-4-1") => json!({
            "data": [model("claude-3-5-haiku-20241022", "Claude Haiku 3.5")],
            "has_more": false, "first_id": "claude-3-5-haiku-20241022", "last_id": "claude-3-5-haiku-20241022"
        }),
        Some(_) => json!({"data": [], "has_more": false, "first_id": null, "last_id": null}),
    };
    axum::Json(page).into_response()
}

/// Starts the server; its base URL (without `/v1`) and what it saw.
async fn serve() -> anyhow::Result<(String, Arc<Server>)> {
    let server = Arc::new(Server::default());
    let app = Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/models", get(models))
        .with_state(Arc::clone(&server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), server))
}

fn weather_tool() -> ToolSpec {
    ToolSpec {
        name: "get_weather".into(),
        description: "Get the current weather in a given location".into(),
        parameters: json!({
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}
            },
            "required": ["location"]
        }),
    }
}

fn request(model: &str) -> ChatRequest {
    let mut r = ChatRequest::new(
        model,
        vec![
            Message::system("You are a weather assistant."),
            Message::user("What is the weather like in San Francisco?"),
        ],
        1024,
    );
    r.tools = vec![weather_tool()];
    r
}

fn provider(base: &str, key: &str) -> anyhow::Result<AnthropicProvider> {
    Ok(AnthropicProvider::new(base, Some(key.into()), Vec::new())?)
}

#[tokio::test]
async fn anthropic_documented_stream_gives_text_usage_and_a_parsed_tool_call() -> anyhow::Result<()>
{
    let (base, server) = serve().await?;
    let provider = provider(&base, KEY)?;
    let got = items(&provider, request("claude-sonnet-4-5")).await;
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert_eq!(
        answer(&got),
        "Okay, let's check the weather for San Francisco, CA:"
    );
    assert_eq!(
        calls(&got),
        vec![ToolCall {
            id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
            name: "get_weather".into(),
            arguments: json!({"location": "San Francisco, CA", "unit": "fahrenheit"}),
        }]
    );
    assert_eq!(
        got.last().and_then(|i| i.as_ref().ok()),
        Some(&ChatChunk::Done {
            usage: Usage {
                prompt_tokens: 472,
                completion_tokens: 89
            },
            finish_reason: Some("tool_calls".into()),
        })
    );
    // The call comes before `Done`, after the text.
    let order: Vec<&str> = got
        .iter()
        .filter_map(|i| match i {
            Ok(ChatChunk::Delta(_)) => Some("text"),
            Ok(ChatChunk::ToolCall(_)) => Some("call"),
            Ok(ChatChunk::Done { .. }) => Some("done"),
            _ => None,
        })
        .collect();
    assert_eq!(order.iter().filter(|o| **o == "call").count(), 1);
    assert_eq!(order[order.len() - 2..], ["call", "done"]);

    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    let req = &seen[0];
    assert_eq!(req.path, "/v1/messages");
    assert_eq!(req.headers.get("x-api-key").map(String::as_str), Some(KEY));
    assert_eq!(
        req.headers.get("anthropic-version").map(String::as_str),
        Some("2023-06-01")
    );
    assert!(
        req.headers
            .get("content-type")
            .is_some_and(|v| v.starts_with("application/json")),
        "{:?}",
        req.headers
    );
    assert!(
        !req.headers.contains_key("authorization"),
        "no bearer token"
    );
    let body = &req.body;
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["max_tokens"], 1024);
    assert_eq!(body["stream"], true);
    assert_eq!(body["system"], "You are a weather assistant.");
    assert_eq!(
        body["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "What is the weather like in San Francisco?"}]}])
    );
    assert_eq!(body["tools"][0]["name"], "get_weather");
    assert_eq!(body["tools"][0]["input_schema"], weather_tool().parameters);
    assert_eq!(body["tool_choice"], json!({"type": "auto"}));
    Ok(())
}

#[tokio::test]
async fn anthropic_tool_results_go_back_in_one_user_turn() -> anyhow::Result<()> {
    let (base, server) = serve().await?;
    let provider = provider(&base, KEY)?;
    let sf = ToolCall {
        id: "toolu_01T1x1fJ34qAmk2tNTrN7Up6".into(),
        name: "get_weather".into(),
        arguments: json!({"location": "San Francisco, CA"}),
    };
    let ny = ToolCall {
        id: "toolu_02".into(),
        name: "get_weather".into(),
        arguments: json!({"location": "New York, NY"}),
    };
    let mut req = request("claude-sonnet-4-5");
    req.messages.push(Message::assistant_tool_calls(
        "Okay, let's check the weather for San Francisco, CA:",
        vec![sf.clone(), ny.clone()],
    ));
    req.messages.push(Message::tool_result(&sf, "15 degrees"));
    req.messages.push(Message::tool_result(&ny, "20 degrees"));
    req.tool_choice = ToolChoice::Tool("get_weather".into());
    let got = items(&provider, req).await;
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    let seen = server.seen();
    let body = &seen[0].body;
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "What is the weather like in San Francisco?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Okay, let's check the weather for San Francisco, CA:"},
                {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather", "input": {"location": "San Francisco, CA"}},
                {"type": "tool_use", "id": "toolu_02", "name": "get_weather", "input": {"location": "New York, NY"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "content": "15 degrees"},
                {"type": "tool_result", "tool_use_id": "toolu_02", "content": "20 degrees"}
            ]}
        ])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "get_weather"})
    );
    Ok(())
}

#[tokio::test]
async fn anthropic_documented_errors_have_their_taxonomy_class() -> anyhow::Result<()> {
    let (base, server) = serve().await?;
    let good = provider(&base, KEY)?;
    let first_error =
        |items: Vec<Result<ChatChunk, ProviderError>>| items.into_iter().find_map(Result::err);

    // A wrong key: the server's own 401.
    let bad = provider(&base, "sk-ant-wrong")?;
    let e = first_error(items(&bad, request("claude-sonnet-4-5")).await);
    assert_eq!(
        e.as_ref().map(|e| e.kind),
        Some(ProviderErrorKind::Auth),
        "{e:?}"
    );
    assert!(
        e.as_ref()
            .is_some_and(|e| e.message.contains("authentication_error")
                && !e.message.contains("sk-ant-wrong")),
        "{e:?}"
    );

    let e = first_error(items(&good, request("claude-busy")).await);
    assert_eq!(
        e.as_ref().map(|e| e.kind),
        Some(ProviderErrorKind::RateLimited),
        "{e:?}"
    );
    assert_eq!(e.and_then(|e| e.retry_after), Some(Duration::from_secs(7)));

    let e = first_error(items(&good, request("claude-overloaded")).await);
    assert_eq!(
        e.as_ref().map(|e| e.kind),
        Some(ProviderErrorKind::Transient),
        "{e:?}"
    );
    assert!(e.is_some_and(|e| e.message.starts_with("HTTP 529")));

    let e = first_error(items(&good, request("claude-long")).await);
    assert_eq!(
        e.as_ref().map(|e| e.kind),
        Some(ProviderErrorKind::ContextOverflow),
        "{e:?}"
    );

    let e = first_error(items(&good, request("claude-nope")).await);
    assert_eq!(
        e.as_ref().map(|e| e.kind),
        Some(ProviderErrorKind::ModelNotFound),
        "{e:?}"
    );
    assert_eq!(server.seen().len(), 5);
    Ok(())
}

#[tokio::test]
async fn anthropic_error_event_mid_stream_surfaces_as_an_error() -> anyhow::Result<()> {
    let (base, _server) = serve().await?;
    let provider = provider(&base, KEY)?;
    let got = items(&provider, request("claude-midstream")).await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], Ok(ChatChunk::Delta("Hello".into())));
    let e = got[1].as_ref().err();
    assert_eq!(
        e.map(|e| e.kind),
        Some(ProviderErrorKind::Transient),
        "{got:?}"
    );
    assert!(
        e.is_some_and(|e| e.message.contains("overloaded_error")),
        "{e:?}"
    );
    Ok(())
}

#[tokio::test]
async fn anthropic_structured_output_is_the_forced_tool_input_as_text() -> anyhow::Result<()> {
    let (base, server) = serve().await?;
    let provider = provider(&base, KEY)?;
    let schema = json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "rain": {"type": "boolean"}},
        "required": ["city", "rain"]
    });
    let mut req = ChatRequest::new(
        "claude-json",
        vec![Message::user("Where does it rain?")],
        256,
    );
    req.json_schema = Some(schema.clone());
    let got = items(&provider, req).await;
    assert!(got.iter().all(Result::is_ok), "{got:?}");
    assert!(
        calls(&got).is_empty(),
        "the answer's tool is no call: {got:?}"
    );
    let answer: Value = serde_json::from_str(&answer(&got))?;
    assert_eq!(answer, json!({"city": "Paris", "rain": true}));
    assert!(
        matches!(got.last(), Some(Ok(ChatChunk::Done { finish_reason: Some(f), usage })) if f == "stop" && usage.completion_tokens == 22),
        "{got:?}"
    );
    let body = &server.seen()[0].body;
    assert_eq!(
        body["tools"],
        json!([{
            "name": "json_answer",
            "description": body["tools"][0]["description"],
            "input_schema": schema
        }])
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "tool", "name": "json_answer"})
    );
    Ok(())
}

#[tokio::test]
async fn anthropic_list_models_reads_v1_models_page_after_page() -> anyhow::Result<()> {
    let (base, server) = serve().await?;
    let team = provider(&base, KEY)?.with_id("anthropic@team");
    let models = team.list_models().await?;
    let names: Vec<(&str, &str)> = models
        .iter()
        .map(|m| (m.provider.as_str(), m.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("anthropic@team", "claude-sonnet-4-5"),
            ("anthropic@team", "claude-opus-4-1"),
            ("anthropic@team", "claude-3-5-haiku-20241022"),
        ]
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 2);
    assert!(seen.iter().all(|s| s.path == "/v1/models"
        && s.headers.get("x-api-key").map(String::as_str) == Some(KEY)
        && s.headers.get("anthropic-version").map(String::as_str) == Some("2023-06-01")));
    assert_eq!(seen[0].query.get("after_id"), None);
    assert_eq!(
        seen[1].query.get("after_id").map(String::as_str),
        Some("claude-opus-4-1")
    );
    assert_eq!(seen[0].query.get("limit").map(String::as_str), Some("1000"));

    // A wrong key fails the list as auth.
    let bad = provider(&base, "sk-ant-wrong")?;
    let e = bad.list_models().await.err().map(|e| e.kind);
    assert_eq!(e, Some(ProviderErrorKind::Auth));
    // A configured list needs no request.
    let fixed = AnthropicProvider::new(&base, Some(KEY.into()), vec!["claude-x".into()])?;
    let listed = fixed.list_models().await?;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].name, "claude-x");
    assert_eq!(listed[0].provider, "anthropic");
    assert_eq!(
        server.seen().len(),
        3,
        "only the wrong key's request was added"
    );
    Ok(())
}
