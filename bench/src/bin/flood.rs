//! Peak memory of Nexus under a provider that floods, one JSON object per line.
//!
//! A loopback server in this process (axum) ignores `max_tokens` and sends as fast as
//! Nexus reads; the real engine runs a one-step workflow whose first model is the
//! flooder and whose fallback is an honest model on a second server. Each scenario runs
//! in its own child process (this binary with `--scenario NAME`), which reports its
//! peak resident memory (`VmHWM` of `/proc/self/status`, so the server's own memory
//! counts too), how long the flood took to be cut, and the class of the cut.
//!
//! Scenarios (`max_tokens` 100,000 unless said, the ceiling of the engine's reply
//! meter then being the 8 MiB byte cap rather than the token count):
//! - `sse-small`: OpenAI-compatible SSE, one short chunk after another, `max_tokens` 50;
//! - `sse-large`: SSE chunks of 4 KiB of content (cut at the 8 MiB byte cap);
//! - `sse-event`: one SSE event that never ends (cut at the 1 MiB event cap);
//! - `json-64mib`: a 64 MiB non-streamed `chat.completion` body (cut at 16 MiB + 64 KiB);
//! - `ndjson-large`: Ollama NDJSON lines of 4 KiB of content (cut at the byte cap);
//! - `parallel-8`: eight `sse-large` steps at once (a fan-out).
//!
//! Usage: `cargo run --release -p nexus-bench --bin flood` (all scenarios).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use axum::routing::{get, post};
use nexus_engine::provider::Provider;
use nexus_engine::{Engine, EngineConfig, RunOptions, RunStatus};
use nexus_llm::{OllamaProvider, OpenAiProvider};

const SCENARIOS: &[&str] = &[
    "sse-small",
    "sse-large",
    "sse-event",
    "json-64mib",
    "ndjson-large",
    "parallel-8",
];

/// Peak resident set size so far, MiB (`VmHWM`).
fn peak_rss_mib() -> anyhow::Result<f64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmHWM in /proc/self/status")?;
    Ok(kb / 1024.0)
}

fn sse_chunk(content: &str) -> Bytes {
    let v = serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 0, "model": "flood",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]
    });
    Bytes::from(format!("data: {v}\n\n"))
}

fn ndjson_line(content: &str) -> Bytes {
    let v = serde_json::json!({
        "model": "flood:latest", "created_at": "2023-08-04T08:52:19.385406455-07:00",
        "message": {"role": "assistant", "content": content}, "done": false
    });
    Bytes::from(format!("{v}\n"))
}

fn endless(head: Bytes, piece: impl Fn(u64) -> Bytes + Send + 'static) -> Body {
    let body = futures::stream::unfold(0u64, move |i| {
        let next = piece(i);
        async move { Some((Ok::<_, Infallible>(next), i + 1)) }
    });
    Body::from_stream(futures::StreamExt::chain(
        futures::stream::iter([Ok(head)]),
        body,
    ))
}

fn response(content_type: &'static str, body: Body) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(body)
        .unwrap_or_default()
}

/// The flooder's answer to one chat request, by scenario.
fn flood(scenario: &str) -> Response {
    let big = "x".repeat(4096);
    match scenario {
        "sse-small" => response(
            "text/event-stream",
            endless(Bytes::new(), |i| sse_chunk(&format!("flood {i} "))),
        ),
        "sse-event" => response(
            "text/event-stream",
            endless(
                Bytes::from_static(br#"data: {"choices":[{"index":0,"delta":{"content":""#),
                |_| Bytes::from(vec![b'x'; 16 << 10]),
            ),
        ),
        "json-64mib" => {
            let head = Bytes::from_static(
                br#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":""#,
            );
            let pieces = futures::stream::iter(
                (0..1024).map(|_| Ok::<_, Infallible>(Bytes::from(vec![b'x'; 64 << 10]))),
            );
            let all = futures::StreamExt::chain(
                futures::StreamExt::chain(futures::stream::iter([Ok(head)]), pieces),
                futures::stream::iter([Ok(Bytes::from_static(br#""}}]}"#))]),
            );
            response("application/json", Body::from_stream(all))
        }
        "ndjson-large" => response(
            "application/x-ndjson",
            endless(Bytes::new(), move |_| ndjson_line(&big)),
        ),
        _ => response(
            "text/event-stream",
            endless(Bytes::new(), move |_| sse_chunk(&big)),
        ),
    }
}

/// Starts the servers: the flooder and an honest fallback, each with OpenAI-compatible
/// and Ollama routes. Returns their base URLs.
async fn servers(scenario: &'static str) -> anyhow::Result<(String, String)> {
    let flooder = Router::new()
        .route("/v1/chat/completions", post(move || async move { flood(scenario) }))
        .route("/api/chat", post(move || async move { flood(scenario) }))
        .route(
            "/api/tags",
            get(|| async { axum::Json(serde_json::json!({"models": [{"name": "flood:latest", "model": "flood:latest", "modified_at": "2024-06-04T14:38:31.83753-07:00", "size": 1, "digest": "sha256:0"}]})) }),
        );
    let honest = Router::new()
        .route(
            "/api/tags",
            get(|| async { axum::Json(serde_json::json!({"models": [{"name": "honest:latest", "model": "honest:latest", "modified_at": "2024-06-04T14:38:31.83753-07:00", "size": 1, "digest": "sha256:0"}]})) }),
        )
        .route(
            "/api/chat",
            post(|| async {
                let done = serde_json::json!({
                    "model": "honest:latest", "created_at": "2023-08-04T19:22:45.499127Z",
                    "message": {"role": "assistant", "content": ""}, "done": true,
                    "total_duration": 1, "load_duration": 1, "prompt_eval_count": 3,
                    "prompt_eval_duration": 1, "eval_count": 1, "eval_duration": 1
                });
                response(
                    "application/x-ndjson",
                    Body::from(format!("{}{done}\n", String::from_utf8_lossy(&ndjson_line("fine")))),
                )
            }),
        )
        .route(
            "/v1/chat/completions",
            post(|| async {
                let mut body = String::from_utf8_lossy(&sse_chunk("fine")).into_owned();
                body.push_str("data: [DONE]\n\n");
                response("text/event-stream", Body::from(body))
            }),
        );
    let mut urls = Vec::new();
    for app in [flooder, honest] {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        urls.push(format!(
            "http://127.0.0.1:{}",
            listener.local_addr()?.port()
        ));
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
    }
    Ok((urls[0].clone(), urls[1].clone()))
}

async fn run_scenario(scenario: &'static str) -> anyhow::Result<serde_json::Value> {
    let (flood_url, honest_url) = servers(scenario).await?;
    let max_tokens = if scenario == "sse-small" { 50 } else { 100_000 };
    // The flooder first, an honest model of the other protocol as its fallback.
    let (models, providers): (&str, Vec<Arc<dyn Provider>>) = if scenario == "ndjson-large" {
        (
            "ollama:flood, openai:honest",
            vec![
                Arc::new(OllamaProvider::new(&flood_url)?),
                Arc::new(OpenAiProvider::new(
                    &format!("{honest_url}/v1"),
                    None,
                    vec!["honest".into()],
                )?),
            ],
        )
    } else {
        (
            "openai:flood, ollama:honest",
            vec![
                Arc::new(OpenAiProvider::new(
                    &format!("{flood_url}/v1"),
                    None,
                    vec!["flood".into()],
                )?),
                Arc::new(OllamaProvider::new(&honest_url)?),
            ],
        )
    };
    let steps = if scenario == "parallel-8" { 8 } else { 1 };
    let mut yaml = String::from("id: flood\nsteps:\n");
    for i in 0..steps {
        yaml.push_str(&format!(
            "  - id: s{i}\n    kind: llm\n    model: [{models}]\n    prompt: hi\n    max_tokens: {max_tokens}\n    fallback: {{simplify: false}}\n"
        ));
    }
    let plan = Arc::new(
        nexus_engine::load_str(&yaml, None)
            .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?,
    );
    let config = EngineConfig {
        max_parallel: 8,
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(providers, None, config));
    let before = peak_rss_mib()?;
    let t0 = Instant::now();
    let report = engine
        .run(plan, Default::default(), RunOptions::default())
        .await?;
    let ms = t0.elapsed().as_secs_f64() * 1000.0;
    let first = report.steps.first();
    let kind = first
        .and_then(|s| s.attempts.first())
        .and_then(|a| a.error_kind)
        .map(|k| k.as_str().to_string());
    let message = first
        .and_then(|s| s.attempts.first())
        .and_then(|a| a.error_message.clone());
    anyhow::ensure!(
        report.status == RunStatus::Succeeded,
        "{scenario}: run {:?} ({:?})",
        report.status,
        report.error
    );
    Ok(serde_json::json!({
        "bench": "flood",
        "scenario": scenario,
        "max_tokens": max_tokens,
        "steps": steps,
        "status": format!("{:?}", report.status).to_lowercase(),
        "first_attempt": kind,
        "message": message,
        "run_ms": (ms * 10.0).round() / 10.0,
        "rss_before_mib": (before * 10.0).round() / 10.0,
        "peak_rss_mib": (peak_rss_mib()? * 10.0).round() / 10.0,
    }))
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--scenario") {
        let name = args.get(pos + 1).context("--scenario NAME")?;
        let scenario = SCENARIOS
            .iter()
            .copied()
            .find(|s| s == name)
            .with_context(|| format!("unknown scenario `{name}`; one of {SCENARIOS:?}"))?;
        let rt = tokio::runtime::Runtime::new()?;
        let line = rt.block_on(run_scenario(scenario))?;
        println!("{line}");
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    for scenario in SCENARIOS {
        let out = std::process::Command::new(&exe)
            .args(["--scenario", scenario])
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        anyhow::ensure!(
            out.status.success(),
            "{scenario} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}
