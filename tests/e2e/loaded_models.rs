//! How many models Nexus keeps in flight on one Ollama daemon: at most
//! `OLLAMA_MAX_LOADED_MODELS` different models (the daemon unloads one to load another,
//! `server/sched.go`), each with at most `OLLAMA_NUM_PARALLEL` requests, and a waiting
//! model starts as soon as one of the loaded ones is done.
//!
//! The daemon here is a loopback server at the wire level (docs/api.md `/api/tags`,
//! `/api/show`, `/api/ps`, `/api/chat` NDJSON) whose chats wait at a gate the test opens
//! one request at a time, counting what is in flight.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use nexus_engine::events::{Event, EventSink, RunStatus};
use nexus_engine::{EngineConfig, RunOptions};
use nexus_llm::OllamaProvider;
use serde_json::json;

use crate::{engine, go, plan};

/// The gate and what it saw.
#[derive(Default)]
struct Gate {
    /// Requests held now: (model, release).
    held: Mutex<Vec<(String, tokio::sync::oneshot::Sender<()>)>>,
    /// Steps the engine started (its `step_started` events).
    started: AtomicUsize,
    /// Wakes the driver on every arrival and every start.
    changed: tokio::sync::Notify,
    most_models: AtomicUsize,
    most_per_model: AtomicUsize,
}

impl Gate {
    fn counts(held: &[(String, tokio::sync::oneshot::Sender<()>)]) -> HashMap<&str, usize> {
        let mut per: HashMap<&str, usize> = HashMap::new();
        for (m, _) in held {
            *per.entry(m.as_str()).or_default() += 1;
        }
        per
    }

    /// Waits until `ready` holds for the requests held and the steps started.
    async fn until(&self, ready: impl Fn(usize, usize) -> bool) {
        loop {
            let notified = self.changed.notified();
            let held = self.held.lock().map(|h| h.len()).unwrap_or_default();
            if ready(held, self.started.load(Ordering::SeqCst)) {
                return;
            }
            notified.await;
        }
    }

    /// Releases one held request: of `prefer`'s model when one is held, else the oldest.
    fn release(&self, prefer: Option<&str>) -> Option<String> {
        let mut held = self.held.lock().ok()?;
        let at = prefer
            .and_then(|p| held.iter().position(|(m, _)| m == p))
            .unwrap_or(0);
        if held.is_empty() {
            return None;
        }
        let (model, tx) = held.remove(at);
        let _ = tx.send(());
        Some(model)
    }
}

impl EventSink for Gate {
    fn emit(&self, event: &Event) {
        if matches!(event, Event::StepStarted { .. }) {
            self.started.fetch_add(1, Ordering::SeqCst);
            self.changed.notify_one();
        }
    }
}

const MODELS: [&str; 3] = ["m1:latest", "m2:latest", "m3:latest"];

async fn tags() -> Response {
    let models: Vec<_> = MODELS
        .iter()
        .map(|m| json!({"name": m, "model": m, "size": 1000, "digest": "sha256:0",
                        "details": {"format": "gguf", "family": "llama", "quantization_level": "Q4_0"}}))
        .collect();
    axum::Json(json!({"models": models})).into_response()
}

async fn show() -> Response {
    axum::Json(
        json!({"model_info": {"general.architecture": "llama", "llama.context_length": 8192},
                      "capabilities": ["completion"]}),
    )
    .into_response()
}

async fn ps() -> Response {
    axum::Json(json!({"models": []})).into_response()
}

async fn chat(State(gate): State<Arc<Gate>>, body: Bytes) -> Response {
    let req: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let model = req["model"].as_str().unwrap_or_default().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel();
    if let Ok(mut held) = gate.held.lock() {
        held.push((model.clone(), tx));
        let per = Gate::counts(&held);
        gate.most_models.fetch_max(per.len(), Ordering::SeqCst);
        let most = per.values().copied().max().unwrap_or_default();
        gate.most_per_model.fetch_max(most, Ordering::SeqCst);
    }
    gate.changed.notify_one();
    let _ = rx.await;
    let lines = [
        json!({"model": model, "created_at": "2024-06-04T14:38:31Z",
               "message": {"role": "assistant", "content": "ok"}, "done": false}),
        json!({"model": model, "created_at": "2024-06-04T14:38:31Z",
               "message": {"role": "assistant", "content": ""}, "done": true, "done_reason": "stop",
               "prompt_eval_count": 3, "eval_count": 1}),
    ];
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    ([("content-type", "application/x-ndjson")], body).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_max_loaded_models_are_in_flight_on_one_daemon() -> anyhow::Result<()> {
    let gate = Arc::new(Gate::default());
    let app = Router::new()
        .route("/api/tags", get(tags))
        .route("/api/ps", get(ps))
        .route("/api/show", post(show))
        .route("/api/chat", post(chat))
        .with_state(Arc::clone(&gate));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://127.0.0.1:{}", listener.local_addr()?.port());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    // OLLAMA_NUM_PARALLEL=2, OLLAMA_MAX_LOADED_MODELS=2; two steps for each of 3 models.
    let provider = OllamaProvider::new(&url)?
        .with_parallel(2)
        .with_max_loaded_models(2);
    let mut yaml = String::from("id: loaded\nsteps:\n");
    for (i, m) in MODELS.iter().enumerate() {
        for k in 0..2 {
            yaml.push_str(&format!(
                "  - id: s{i}{k}\n    kind: llm\n    model: [ollama:{m}]\n    prompt: Say ok.\n    max_tokens: 8\n    retry: {{max_attempts: 1}}\n"
            ));
        }
    }
    let eng = engine(vec![Arc::new(provider)], None, EngineConfig::default());
    let options = RunOptions {
        sinks: vec![Arc::clone(&gate) as Arc<dyn EventSink>],
        ..RunOptions::default()
    };
    let run = tokio::spawn({
        let eng = Arc::clone(&eng);
        async move { go(&eng, plan(&yaml), options).await }
    });

    let driver = async {
        // Two models' two requests each arrive, and every step has started (the third
        // model's two wait inside Nexus, not at the daemon).
        gate.until(|held, started| held >= 4 && started >= 6).await;
        // Opened one at a time; the held count each step waits for is what the bound
        // allows: the first model keeps its slot until both its requests are done, then
        // the third model's two come in at once.
        let mut last = None;
        for want in [3, 4, 3, 2, 1, 0] {
            last = gate.release(last.as_deref());
            gate.until(|held, _| held >= want).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(60), driver)
        .await
        .map_err(|_| anyhow::anyhow!("the run never had what the limits allow in flight"))?;
    let (report, _) = run.await??;
    server.abort();
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(
        gate.most_models.load(Ordering::SeqCst),
        2,
        "models in flight"
    );
    assert_eq!(
        gate.most_per_model.load(Ordering::SeqCst),
        2,
        "requests per model"
    );
    Ok(())
}
