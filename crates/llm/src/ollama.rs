//! Ollama provider: `ollama-rs`'s wire types over a `reqwest` client that caps every
//! read.
//!
//! The daemon is found at `OLLAMA_HOST` (as the Ollama CLI reads it: `host:port` or a
//! URL), default `http://127.0.0.1:11434`. Models come from `GET /api/tags`, with the
//! context window from `POST /api/show` (`model_info["<arch>.context_length"]`). Chat uses
//! `POST /api/chat` with NDJSON streaming; the final chunk (`done: true`) carries
//! `prompt_eval_count` and `eval_count`, which become the step's token counts
//! (Ollama's docs/api.md).
//!
//! Error mapping: a refused connection is [`ProviderErrorKind::Unavailable`]; an error
//! body saying the model is "not found" is [`ProviderErrorKind::ModelNotFound`]; both make
//! the engine fall back at once.
//!
//! Floods: `ollama-rs`'s own stream keeps every unfinished line in memory, so chat reads
//! the NDJSON itself (`tokio-util`'s `LinesCodec`, no line over [`http::EVENT_CAP`]) and
//! the reply goes through [`metered`] (cut past `num_predict` = `max_tokens` plus a
//! margin, or past the byte cap). Model lists are read within [`http::LIST_BODY_CAP`].
//!
//! The families Nexus recommends ([`RECOMMENDED_FAMILIES`]) reach the selector as
//! [`ModelInfo::recommended_family`].

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use nexus_engine::provider::{
    ChatChunk, ChatRequest, ChatStream, Locality, ModelInfo, Provider, ProviderError,
    ProviderErrorKind, Role, Usage, metered,
};
use ollama_rs::Ollama;
use ollama_rs::error::OllamaError;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::chat::{ChatMessage, ChatMessageResponse};
use ollama_rs::generation::parameters::{FormatType, JsonStructure};
use ollama_rs::models::{LocalModel, ModelOptions};
use tokio_util::codec::{FramedRead, LinesCodec};

use crate::http::{self, classify_reqwest, classify_wire};

/// Default address of the Ollama daemon.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:11434";

/// Ollama model families named by the product brief, for the reasons shown to users
/// (a model `llama3.1:8b` is of family `llama3.1`).
pub const RECOMMENDED_FAMILIES: [&str; 3] = ["llama3.1", "qwen2.5", "deepseek-r1"];

/// The recommended family of an Ollama model name, if any.
pub fn recommended_family(name: &str) -> Option<&'static str> {
    let base = name.split(':').next().unwrap_or(name);
    RECOMMENDED_FAMILIES.iter().copied().find(|f| base == *f)
}

/// The Ollama provider (id `ollama`, local).
#[derive(Debug, Clone)]
pub struct OllamaProvider {
    client: Ollama,
    http: reqwest::Client,
    url: String,
}

/// `GET /api/tags` (Ollama's docs/api.md, "List Local Models").
#[derive(serde::Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<LocalModel>,
}

/// An `{"error": "..."}` object, as a body or as a line of the stream.
#[derive(serde::Deserialize)]
struct ErrorLine {
    error: String,
}

/// Normalises an `OLLAMA_HOST` value to a URL: `0.0.0.0:11434` → `http://0.0.0.0:11434`.
pub fn host_url(value: &str) -> String {
    let v = value.trim().trim_end_matches('/');
    if v.is_empty() {
        DEFAULT_HOST.to_string()
    } else if v.contains("://") {
        v.to_string()
    } else if v.contains(':') {
        format!("http://{v}")
    } else {
        format!("http://{v}:11434")
    }
}

impl OllamaProvider {
    /// A provider for the daemon at `url`.
    ///
    /// # Errors
    /// [`ProviderErrorKind::InvalidRequest`] when `url` is not a URL.
    pub fn new(url: &str) -> Result<Self, ProviderError> {
        let url = host_url(url);
        let client = Ollama::try_new(url.as_str()).map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                format!("OLLAMA_HOST `{url}` is not a valid URL: {e}"),
            )
        })?;
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::new(ProviderErrorKind::Internal, e.to_string()))?;
        Ok(OllamaProvider { client, http, url })
    }

    /// A provider for `OLLAMA_HOST`, or the default address.
    ///
    /// # Errors
    /// As [`OllamaProvider::new`].
    pub fn from_env() -> Result<Self, ProviderError> {
        let host = std::env::var("OLLAMA_HOST").unwrap_or_else(|_| DEFAULT_HOST.to_string());
        Self::new(&host)
    }

    /// The daemon's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sends `body` to `path` (`/api/...`); a non-2xx answer is classified by its
    /// `{"error": ...}` text.
    async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<reqwest::Response, ProviderError> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .map_err(|e| classify_reqwest(&e))?;
        check(resp).await
    }

    /// Reads a JSON body of at most [`http::LIST_BODY_CAP`] bytes.
    async fn json<T: serde::de::DeserializeOwned>(
        resp: reqwest::Response,
    ) -> Result<T, ProviderError> {
        let body = http::read_capped(resp, http::LIST_BODY_CAP)
            .await
            .map_err(|e| classify_wire(&e))?;
        serde_json::from_slice(&body).map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::Protocol,
                format!("bad JSON from Ollama: {e}"),
            )
        })
    }

    /// Pulls (downloads) `model` into the daemon (`POST /api/pull`, streamed), yielding
    /// the daemon's progress lines as they come: a status text (`pulling manifest`,
    /// `pulling <digest>`, `verifying sha256 digest`, `success`) with byte counts while a
    /// layer downloads. The stream ends after `success`.
    ///
    /// # Errors
    /// Classified like chat errors: [`ProviderErrorKind::Unavailable`] when the daemon
    /// cannot be reached, [`ProviderErrorKind::ModelNotFound`] for an unknown name (the
    /// daemon answers `{"error": "pull model manifest: file does not exist"}`).
    pub async fn pull(
        &self,
        model: &str,
    ) -> Result<
        impl futures::Stream<Item = Result<PullProgress, ProviderError>> + Send + use<>,
        ProviderError,
    > {
        let stream = self
            .client
            .pull_model_stream(model.to_string(), false)
            .await
            .map_err(classify)?;
        Ok(stream.map(|item| {
            item.map(|s| PullProgress {
                status: s.message,
                digest: s.digest,
                total_bytes: s.total,
                completed_bytes: s.completed,
            })
            .map_err(classify)
        }))
    }
}

/// One progress line of [`OllamaProvider::pull`] (Ollama's docs/api.md, "Pull a Model").
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PullProgress {
    /// The daemon's status text (`pulling manifest`, `pulling <digest>`, `success`).
    pub status: String,
    /// The layer being downloaded, when downloading.
    pub digest: Option<String>,
    /// The layer's size, bytes, when downloading.
    pub total_bytes: Option<u64>,
    /// Bytes of the layer downloaded so far.
    pub completed_bytes: Option<u64>,
}

/// Passes a 2xx response; classifies any other by its error text.
async fn check(resp: reqwest::Response) -> Result<reqwest::Response, ProviderError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let body = http::error_body(resp).await;
    let message = serde_json::from_str::<ErrorLine>(&body)
        .map(|e| e.error)
        .unwrap_or(body);
    let message = if message.trim().is_empty() {
        http::status_message(status, "")
    } else {
        message
    };
    Err(classify_message(&message))
}

fn classify(e: OllamaError) -> ProviderError {
    match e {
        OllamaError::ReqwestError(e) => classify_reqwest(&e),
        OllamaError::InternalError(inner) => classify_message(&inner.message),
        OllamaError::Other(body) => {
            // ollama-rs hands back the error body; the daemon answers `{"error": "..."}`.
            let message = serde_json::from_str::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v.get("error").and_then(|m| m.as_str()).map(str::to_owned))
                .unwrap_or(body);
            classify_message(&message)
        }
        OllamaError::JsonError(e) => ProviderError::new(
            ProviderErrorKind::Protocol,
            format!("bad JSON from Ollama: {e}"),
        ),
        OllamaError::ToolCallError(e) => {
            ProviderError::new(ProviderErrorKind::Protocol, format!("tool call error: {e}"))
        }
    }
}

/// Classifies the daemon's `{"error": ...}` text (ollama-rs drops the HTTP status): a
/// missing model, a context overflow or a policy refusal by their wording, a model that
/// cannot be loaded (out of memory) as unavailable, anything else as transient.
fn classify_message(message: &str) -> ProviderError {
    let lower = message.to_ascii_lowercase();
    let kind = if lower.contains("not found") {
        ProviderErrorKind::ModelNotFound
    } else if lower.contains("unable to load") || lower.contains("out of memory") {
        ProviderErrorKind::Unavailable
    } else {
        // Ollama relays llama.cpp's wording for context and policy errors.
        crate::openai::classify_message(message, ProviderErrorKind::Transient)
    };
    ProviderError::new(kind, format!("ollama: {message}"))
}

fn context_length(info: &serde_json::Map<String, serde_json::Value>) -> Option<u32> {
    info.iter()
        .find(|(k, _)| k.ends_with(".context_length"))
        .and_then(|(_, v)| v.as_u64())
        .and_then(|v| u32::try_from(v).ok())
}

#[async_trait]
impl Provider for OllamaProvider {
    fn id(&self) -> &str {
        "ollama"
    }

    fn locality(&self) -> Locality {
        Locality::Local
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, ProviderError> {
        let resp = self
            .http
            .get(format!("{}/api/tags", self.url))
            .send()
            .await
            .map_err(|e| classify_reqwest(&e))?;
        let local = Self::json::<Tags>(check(resp).await?).await?.models;
        let details = futures::future::join_all(local.iter().map(|m| async {
            // `model` per the current docs; `name` for daemons before 0.5.
            let body = serde_json::json!({ "model": m.name, "name": m.name });
            let resp = self.post("/api/show", &body).await?;
            Self::json::<ollama_rs::models::ModelInfo>(resp).await
        }))
        .await;
        Ok(local
            .into_iter()
            .zip(details)
            .map(|(m, info)| {
                let info = info.ok();
                ModelInfo {
                    provider: "ollama".into(),
                    recommended_family: recommended_family(&m.name).map(str::to_owned),
                    name: m.name,
                    locality: Locality::Local,
                    context_length: info.as_ref().and_then(|i| context_length(&i.model_info)),
                    size_bytes: Some(m.size),
                    parameter_size: info.as_ref().and_then(|i| {
                        i.model_info
                            .get("general.parameter_count")
                            .and_then(serde_json::Value::as_u64)
                            .map(|n| format!("{:.1}B", n as f64 / 1e9))
                    }),
                    quantization: None,
                }
            })
            .collect())
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        let messages = request
            .messages
            .into_iter()
            .map(|m| match m.role {
                Role::System => ChatMessage::system(m.content),
                Role::User => ChatMessage::user(m.content),
                Role::Assistant => ChatMessage::assistant(m.content),
            })
            .collect();
        let options = ModelOptions::default()
            .temperature(request.temperature)
            .num_predict(i32::try_from(request.max_tokens).unwrap_or(i32::MAX));
        let mut req = ChatMessageRequest::new(request.model, messages).options(options);
        if let Some(schema) = request.json_schema {
            let format = serde_json::from_value::<JsonStructure>(schema)
                .map(|s| FormatType::StructuredJson(Box::new(s)))
                .unwrap_or(FormatType::Json);
            req = req.format(format);
        }
        let max_tokens = request.max_tokens;
        let mut body = serde_json::to_value(&req).map_err(|e| {
            ProviderError::new(ProviderErrorKind::Internal, format!("chat request: {e}"))
        })?;
        body["stream"] = serde_json::Value::Bool(true);
        let resp = self.post("/api/chat", &body).await?;
        Ok(metered(ndjson_reply(resp, max_tokens), max_tokens))
    }
}

/// One NDJSON line of `POST /api/chat` as chunks: its content, then `Done` when it is
/// the last (`done: true`, with `prompt_eval_count` and `eval_count`).
fn line_chunks(line: &str) -> Vec<Result<ChatChunk, ProviderError>> {
    if line.trim().is_empty() {
        return Vec::new();
    }
    let resp = match serde_json::from_str::<ChatMessageResponse>(line) {
        Ok(r) => r,
        Err(e) => {
            let err = match serde_json::from_str::<ErrorLine>(line) {
                Ok(l) => classify_message(&l.error),
                Err(_) => ProviderError::new(
                    ProviderErrorKind::Protocol,
                    format!("bad line from Ollama: {e}"),
                ),
            };
            return vec![Err(err)];
        }
    };
    let mut out = Vec::with_capacity(2);
    if !resp.message.content.is_empty() {
        out.push(Ok(ChatChunk::Delta(resp.message.content)));
    }
    if resp.done {
        let usage = resp
            .final_data
            .map(|d| Usage {
                prompt_tokens: d.prompt_eval_count,
                completion_tokens: d.eval_count,
            })
            .unwrap_or_default();
        out.push(Ok(ChatChunk::Done {
            usage,
            finish_reason: Some("stop".into()),
        }));
    }
    out
}

/// The NDJSON stream of a chat reply, no line over [`http::EVENT_CAP`], no more than
/// [`http::wire_cap`] bytes in all; it ends at the first error.
fn ndjson_reply(resp: reqwest::Response, max_tokens: u32) -> ChatStream {
    let bytes = http::total_capped(resp, http::wire_cap(max_tokens)).map_err(std::io::Error::other);
    let lines = FramedRead::new(
        tokio_util::io::StreamReader::new(bytes),
        LinesCodec::new_with_max_length(http::EVENT_CAP),
    );
    let chunks = lines
        .map(|line| match line {
            Ok(line) => line_chunks(&line),
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
