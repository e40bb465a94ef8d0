//! Ollama provider: `ollama-rs`'s wire types over a `reqwest` client that caps every
//! read.
//!
//! The daemon is found at `OLLAMA_HOST`, read as the Ollama CLI reads it ([`host_url`],
//! after `envconfig/config.go` of the Ollama repository), default
//! `http://127.0.0.1:11434`. Models come from `GET /api/tags` (a cloud model served
//! through the local daemon carries `remote_host`: [`Locality::Cloud`]), with the
//! trained context window and the capabilities from `POST /api/show`
//! (`model_info["<arch>.context_length"]`, `capabilities`). Chat uses `POST /api/chat`
//! with NDJSON streaming; the final chunk (`done: true`) carries `prompt_eval_count`,
//! `eval_count` and `done_reason` (`stop`, `length`), which become the step's token counts
//! and finish reason (Ollama's docs/api.md).
//!
//! Context window: the daemon runs a model with its own `num_ctx` (4096 tokens below
//! 24 GiB of VRAM, `server/routes.go`) and silently truncates a longer prompt (HTTP 200,
//! `server/prompt.go`, `llm/llama_server.go`). Every chat therefore sends
//! `options.num_ctx` ([`num_ctx`]): the window of the loaded model (`GET /api/ps`
//! `context_length`) when it holds the prompt estimate plus `max_tokens`, else that need
//! rounded up to a power of two, within the trained window; a need over the trained
//! window is a [`ProviderErrorKind::ContextOverflow`] before anything is sent. The
//! selector filters on the same trained window with the same estimate.
//!
//! Thinking models: `think` is sent when the step sets it; `message.thinking` chunks and a
//! `<think>…</think>` block at the start of the content (older deepseek-r1 pulls) become
//! [`ChatChunk::Reasoning`], apart from the answer.
//!
//! Error mapping ([`classify_message`]): a refused connection is
//! [`ProviderErrorKind::Unavailable`]; "not found" and "file does not exist" are
//! [`ProviderErrorKind::ModelNotFound`]; the daemon's out-of-memory wording
//! (`llm/status.go`) is unavailable (fall back, no retry); "does not support" (chat,
//! thinking, tools: `server/routes.go`, `server/images.go`) is an invalid request and an
//! invalid `format` an unsupported parameter (never retried as transient); an
//! `{"error": ...}` line mid-stream keeps the daemon's words.
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
    ChatChunk, ChatRequest, ChatStream, Locality, ModelCapability, ModelInfo, Provider,
    ProviderError, ProviderErrorKind, Role, Usage, metered,
};
use ollama_rs::Ollama;
use ollama_rs::error::OllamaError;
use ollama_rs::generation::chat::ChatMessage;
use ollama_rs::generation::chat::request::ChatMessageRequest;
use ollama_rs::generation::parameters::{FormatType, JsonStructure};
use ollama_rs::models::ModelOptions;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// The daemon's default `num_ctx` below 24 GiB of VRAM (`server/routes.go`,
/// `defaultNumCtx`), tokens: the least [`num_ctx`] asks for, so small prompts never make
/// the daemon reload a model with a smaller window.
pub const DAEMON_DEFAULT_NUM_CTX: u32 = 4096;

/// The Ollama provider (id `ollama`, local; its cloud models are [`Locality::Cloud`]).
#[derive(Debug, Clone)]
pub struct OllamaProvider {
    client: Ollama,
    http: reqwest::Client,
    url: String,
    /// Trained context window per model name, tokens, as `/api/show` last reported it.
    windows: Arc<Mutex<HashMap<String, u32>>>,
    /// Requests one model serves at once ([`num_parallel`]).
    parallel: usize,
}

/// `GET /api/tags` (Ollama's docs/api.md, "List Local Models"; `api/types.go`
/// `ListModelResponse`).
#[derive(serde::Deserialize)]
struct Tags {
    #[serde(default)]
    models: Vec<TagModel>,
}

/// One model of `/api/tags`.
#[derive(serde::Deserialize)]
struct TagModel {
    name: String,
    #[serde(default)]
    size: u64,
    /// Set for a cloud model the daemon forwards to (`https://ollama.com:443`).
    #[serde(default)]
    remote_host: Option<String>,
    #[serde(default)]
    details: Option<TagDetails>,
}

/// `details` of a `/api/tags` model.
#[derive(serde::Deserialize)]
struct TagDetails {
    #[serde(default)]
    quantization_level: Option<String>,
}

/// `GET /api/ps` (`api/types.go` `ProcessResponse`): the models loaded now.
#[derive(serde::Deserialize)]
struct Ps {
    #[serde(default)]
    models: Vec<PsModel>,
}

/// One loaded model and the `num_ctx` its runner was started with.
#[derive(serde::Deserialize)]
struct PsModel {
    name: String,
    #[serde(default)]
    context_length: u32,
}

/// An `{"error": "..."}` object, as a body or as a line of the stream.
#[derive(serde::Deserialize)]
struct ErrorLine {
    error: String,
}

/// The URL a client connects to for an `OLLAMA_HOST` value, as the Ollama CLI reads it
/// (`envconfig/config.go` of the Ollama repository: `Var`, `Host`, `ConnectableHost`):
/// spaces and quotes around the value are dropped; without a scheme it is `http` (and
/// `ollama.com` alone is `https://ollama.com:443`); the default port is 11434, or 80 for
/// `http://` and 443 for `https://`; a path after the host (a reverse proxy's prefix) is
/// kept; a bare IPv4 or IPv6 address takes the default port; a port that is not 0–65535
/// becomes the default; an unspecified address (`0.0.0.0`, `::`) becomes loopback
/// (`127.0.0.1`, `::1`). `0.0.0.0` → `http://127.0.0.1:11434`, `host/prefix` →
/// `http://host:11434/prefix`, `::1` → `http://[::1]:11434`, `http://host` →
/// `http://host:80`.
pub fn host_url(value: &str) -> String {
    let s = value.trim().trim_matches(['"', '\'']).trim();
    let (scheme, hostport, default_port) = match s.split_once("://") {
        None if s == "ollama.com" => ("https", "ollama.com:443", "11434"),
        None => ("http", s, "11434"),
        Some(("http", rest)) => ("http", rest, "80"),
        Some(("https", rest)) => ("https", rest, "443"),
        Some((scheme, rest)) => (scheme, rest, "11434"),
    };
    let (hostport, path) = hostport.split_once('/').unwrap_or((hostport, ""));
    let (host, port) = match split_host_port(hostport) {
        Some((h, p)) => (h.to_string(), p.to_string()),
        None => {
            let bare = hostport.trim_start_matches('[').trim_end_matches(']');
            let host = match bare.parse::<std::net::IpAddr>() {
                Ok(ip) => ip.to_string(),
                Err(_) if !hostport.is_empty() => hostport.to_string(),
                Err(_) => "127.0.0.1".to_string(),
            };
            (host, default_port.to_string())
        }
    };
    let port = match port.parse::<u32>() {
        Ok(n) if n <= 65535 => n.to_string(),
        _ => default_port.to_string(),
    };
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(ip)) if ip.is_unspecified() => "127.0.0.1".to_string(),
        Ok(std::net::IpAddr::V6(ip)) if ip.is_unspecified() => "::1".to_string(),
        _ => host,
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        format!("{scheme}://{host}:{port}")
    } else {
        format!("{scheme}://{host}:{port}/{path}")
    }
}

/// Go's `net.SplitHostPort`: `host:port` or `[v6]:port`; `None` without a port or with
/// a bare IPv6 address (too many colons).
fn split_host_port(hostport: &str) -> Option<(&str, &str)> {
    if let Some(rest) = hostport.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = after.strip_prefix(':')?;
        return Some((host, port));
    }
    let (host, port) = hostport.rsplit_once(':')?;
    if host.contains(':') || host.contains('[') || host.contains(']') {
        return None;
    }
    Some((host, port))
}

/// Requests the daemon serves at once per loaded model, from an `OLLAMA_NUM_PARALLEL`
/// value read as the daemon reads it (`envconfig/config.go` `Var` and `Uint`: spaces and
/// quotes dropped, a value that is not an unsigned integer means the default 1;
/// `server/sched.go`: at least 1). More requests than this only queue in the daemon, and
/// fewer leave its slots idle, so it is the provider's per-model concurrency.
pub fn num_parallel(value: Option<&str>) -> usize {
    value
        .map(|v| v.trim().trim_matches(['"', '\'']))
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1)
        .max(1)
}

/// The `num_ctx` to send for a prompt of `prompt_tokens` (estimated with
/// [`nexus_engine::select::estimate_tokens`], the selector's estimate) and `max_tokens`,
/// tokens: the window of the loaded runner (`loaded`, from `/api/ps`) when it holds the
/// need (no reload), else the need rounded up to a power of two and at least
/// [`DAEMON_DEFAULT_NUM_CTX`], within `trained` (the model's trained window, when known).
///
/// # Errors
/// [`ProviderErrorKind::ContextOverflow`] when the need is over `trained`: the daemon
/// would cut the prompt without a word.
pub fn num_ctx(
    prompt_tokens: u64,
    max_tokens: u32,
    loaded: Option<u32>,
    trained: Option<u32>,
) -> Result<u32, ProviderError> {
    let need = prompt_tokens.saturating_add(u64::from(max_tokens));
    if let Some(t) = trained
        && need > u64::from(t)
    {
        return Err(ProviderError::new(
            ProviderErrorKind::ContextOverflow,
            format!(
                "ollama: the prompt (~{prompt_tokens} tokens) and max_tokens {max_tokens} do not fit the model's context window of {t} tokens"
            ),
        ));
    }
    if let Some(l) = loaded
        && u64::from(l) >= need
    {
        return Ok(l);
    }
    let want = need
        .max(u64::from(DAEMON_DEFAULT_NUM_CTX))
        .checked_next_power_of_two()
        .unwrap_or(u64::MAX);
    let want = u32::try_from(want).unwrap_or(u32::MAX);
    Ok(trained.map_or(want, |t| want.min(t)))
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
        Ok(OllamaProvider {
            client,
            http,
            url,
            windows: Arc::default(),
            parallel: num_parallel(std::env::var("OLLAMA_NUM_PARALLEL").ok().as_deref()),
        })
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

    /// The same provider with `n` requests in flight per model (at least 1), for a
    /// daemon started with another `OLLAMA_NUM_PARALLEL` than this process sees.
    #[must_use]
    pub fn with_parallel(mut self, n: usize) -> Self {
        self.parallel = n.max(1);
        self
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
    Err(classify_status(status, &message))
}

/// Classifies an HTTP error answer of the daemon by its status and words: a 4xx that
/// [`classify_message`] does not recognise is an invalid request (never retried), a 5xx
/// transient.
fn classify_status(status: u16, message: &str) -> ProviderError {
    let fallback = if (400..500).contains(&status) && status != 408 && status != 429 {
        ProviderErrorKind::InvalidRequest
    } else if status == 429 {
        ProviderErrorKind::RateLimited
    } else {
        ProviderErrorKind::Transient
    };
    classify_with(message, fallback)
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

/// The daemon's words for a model that cannot be loaded for lack of memory
/// (`llm/status.go` `outOfMemorySubstrings` of the Ollama repository), lower case, plus
/// "unable to load".
pub const OUT_OF_MEMORY_PHRASES: &[&str] = &[
    "out of memory",
    "out of device memory",
    "cudamalloc failed",
    "hipmalloc failed",
    "failed to allocate",
    "allocation failed",
    "not enough memory",
    "insufficient memory",
    "vk_error_out_of_device_memory",
    "erroroutofmemory",
    "unable to load",
];

/// Classifies the daemon's `{"error": ...}` text without a status (ollama-rs's errors, a
/// line of a stream): as [`classify_with`], anything unrecognised transient.
pub fn classify_message(message: &str) -> ProviderError {
    classify_with(message, ProviderErrorKind::Transient)
}

/// Classifies the daemon's error text, `fallback` when the words say nothing:
/// - "not found", "file does not exist" (a pull of an unknown name): model not found;
/// - [`OUT_OF_MEMORY_PHRASES`]: unavailable (the model cannot be loaded here; fall back);
/// - "invalid format" (`llm/llama_server.go`): an unsupported parameter (the structured
///   output is dropped);
/// - "does not support" (chat, generate, thinking, tools, insert: `server/routes.go`,
///   `server/images.go` `CheckCapabilities`): an invalid request, which no retry mends;
/// - llama.cpp's context and policy wording, relayed by Ollama, as for OpenAI servers.
pub fn classify_with(message: &str, fallback: ProviderErrorKind) -> ProviderError {
    let lower = message.to_ascii_lowercase();
    let kind = if lower.contains("not found") || lower.contains("file does not exist") {
        ProviderErrorKind::ModelNotFound
    } else if OUT_OF_MEMORY_PHRASES.iter().any(|p| lower.contains(p)) {
        ProviderErrorKind::Unavailable
    } else if lower.contains("invalid format") {
        ProviderErrorKind::UnsupportedParameter
    } else if lower.contains("does not support") {
        ProviderErrorKind::InvalidRequest
    } else {
        crate::openai::classify_message(message, fallback)
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

    fn resolve_name(&self, name: &str) -> String {
        tagged(name)
    }

    /// [`num_parallel`] of `OLLAMA_NUM_PARALLEL`, or [`OllamaProvider::with_parallel`].
    fn max_concurrency(&self) -> usize {
        self.parallel
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, ProviderError> {
        let resp = self
            .http
            .get(format!("{}/api/tags", self.url))
            .send()
            .await
            .map_err(|e| classify_reqwest(&e))?;
        let tags = Self::json::<Tags>(check(resp).await?).await?.models;
        let (details, loaded) = futures::future::join(
            futures::future::join_all(tags.iter().map(|m| self.show(&m.name))),
            self.loaded(),
        )
        .await;
        Ok(tags
            .into_iter()
            .zip(details)
            .map(|(m, info)| {
                let info = info.ok();
                let context_length = info.as_ref().and_then(|i| context_length(&i.model_info));
                if let (Some(ctx), Ok(mut w)) = (context_length, self.windows.lock()) {
                    w.insert(m.name.clone(), ctx);
                }
                ModelInfo {
                    provider: "ollama".into(),
                    recommended_family: recommended_family(&m.name).map(str::to_owned),
                    // A cloud model behind the daemon: the prompt leaves the machine.
                    locality: if m.remote_host.as_deref().is_some_and(|h| !h.is_empty()) {
                        Locality::Cloud
                    } else {
                        Locality::Local
                    },
                    loaded_context_length: loaded.get(&m.name).copied(),
                    name: m.name,
                    context_length,
                    size_bytes: Some(m.size),
                    parameter_size: info.as_ref().and_then(|i| {
                        i.model_info
                            .get("general.parameter_count")
                            .and_then(serde_json::Value::as_u64)
                            .map(|n| format!("{:.1}B", n as f64 / 1e9))
                    }),
                    quantization: m.details.and_then(|d| d.quantization_level),
                    capabilities: info
                        .map(|i| i.capabilities.iter().map(|c| capability(c)).collect())
                        .unwrap_or_default(),
                }
            })
            .collect())
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        let prompt_tokens: u64 = request
            .messages
            .iter()
            .map(|m| nexus_engine::select::estimate_tokens(&m.content))
            .sum();
        let (loaded, trained) = self.windows_of(&request.model).await;
        let num_ctx = num_ctx(prompt_tokens, request.max_tokens, loaded, trained)?;
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
            .num_predict(i32::try_from(request.max_tokens).unwrap_or(i32::MAX))
            .num_ctx(u64::from(num_ctx));
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
        // `think` only when the step says: absent, a thinking model thinks and any other
        // answers (`server/routes.go` ChatHandler); `true` on a model without the
        // capability is a 400.
        if let Some(think) = request.think {
            body["think"] = serde_json::Value::Bool(think);
        }
        let resp = self.post("/api/chat", &body).await?;
        Ok(metered(ndjson_reply(resp, max_tokens), max_tokens))
    }
}

impl OllamaProvider {
    /// `POST /api/show` of one model (`model` per the current docs; `name` for daemons
    /// before 0.5).
    async fn show(&self, name: &str) -> Result<ollama_rs::models::ModelInfo, ProviderError> {
        let body = serde_json::json!({ "model": name, "name": name });
        let resp = self.post("/api/show", &body).await?;
        Self::json::<ollama_rs::models::ModelInfo>(resp).await
    }

    /// The models loaded now and their runners' windows, tokens (`GET /api/ps`; empty
    /// when the daemon does not answer).
    async fn loaded(&self) -> HashMap<String, u32> {
        let ps = async {
            let resp = self
                .http
                .get(format!("{}/api/ps", self.url))
                .send()
                .await
                .ok()?;
            Self::json::<Ps>(check(resp).await.ok()?).await.ok()
        }
        .await;
        ps.map(|p| {
            p.models
                .into_iter()
                .filter(|m| m.context_length > 0)
                .map(|m| (m.name, m.context_length))
                .collect()
        })
        .unwrap_or_default()
    }

    /// The window of the runner loaded for `model` now (`GET /api/ps`), and the model's
    /// trained window (from the last listing, else `/api/show`), tokens; `None` for what
    /// the daemon does not say.
    async fn windows_of(&self, model: &str) -> (Option<u32>, Option<u32>) {
        let loaded = self.loaded().await.get(model).copied();
        let known = self.windows.lock().ok().and_then(|w| w.get(model).copied());
        let trained = match known {
            Some(t) => Some(t),
            None => {
                let t = self
                    .show(model)
                    .await
                    .ok()
                    .and_then(|i| context_length(&i.model_info));
                if let (Some(t), Ok(mut w)) = (t, self.windows.lock()) {
                    w.insert(model.to_string(), t);
                }
                t
            }
        };
        (loaded, trained)
    }
}

/// An Ollama model name with its tag: `llama3.1` is `llama3.1:latest`, as the daemon
/// reads it (`types/model/name.go` of the Ollama repository: the default tag is
/// `latest`); a name with a tag, or a digest, is kept.
pub fn tagged(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if name.is_empty() || last.contains(':') || name.contains('@') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

/// An Ollama capability name (`types/model/capability.go`).
fn capability(name: &str) -> ModelCapability {
    serde_json::from_value(serde_json::Value::String(name.to_string()))
        .unwrap_or(ModelCapability::Other)
}

/// One NDJSON line of `POST /api/chat` (`api/types.go` `ChatResponse`), or an error line.
#[derive(serde::Deserialize)]
struct ChatLine {
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: Option<u64>,
    #[serde(default)]
    eval_count: Option<u64>,
    #[serde(default)]
    error: Option<String>,
}

/// `message` of a chat line: the answer's text and the reasoning's.
#[derive(serde::Deserialize)]
struct LineMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    thinking: String,
}

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

/// One NDJSON line of `POST /api/chat` as chunks: its reasoning and content, then `Done`
/// when it is the last (`done: true`, with `prompt_eval_count`, `eval_count` and
/// `done_reason`); an `{"error": ...}` line is the daemon's error, classified by its words.
fn line_chunks(line: &str, tags: &mut ThinkTags) -> Vec<Result<ChatChunk, ProviderError>> {
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
    if let Some(m) = resp.message {
        push(m.thinking, String::new());
        if !m.content.is_empty() {
            let (r, a) = tags.push(&m.content);
            push(r, a);
        }
    }
    if resp.done {
        let (r, a) = tags.finish();
        push(r, a);
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

/// The NDJSON stream of a chat reply, no line over [`http::EVENT_CAP`], no more than
/// [`http::wire_cap`] bytes in all; it ends at the first error.
fn ndjson_reply(resp: reqwest::Response, max_tokens: u32) -> ChatStream {
    let bytes = http::total_capped(resp, http::wire_cap(max_tokens)).map_err(std::io::Error::other);
    let lines = FramedRead::new(
        tokio_util::io::StreamReader::new(bytes),
        LinesCodec::new_with_max_length(http::EVENT_CAP),
    );
    let mut tags = ThinkTags::default();
    let chunks = lines
        .map(move |line| match line {
            Ok(line) => line_chunks(&line, &mut tags),
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
    fn ollama_host_is_read_as_the_ollama_cli_reads_it() {
        // envconfig/config.go Host and ConnectableHost of the Ollama repository.
        let cases = [
            ("", "http://127.0.0.1:11434"),
            ("   ", "http://127.0.0.1:11434"),
            ("0.0.0.0", "http://127.0.0.1:11434"),
            ("0.0.0.0:11434", "http://127.0.0.1:11434"),
            ("::", "http://[::1]:11434"),
            ("[::]:8080", "http://[::1]:8080"),
            ("::1", "http://[::1]:11434"),
            ("[::1]:11434", "http://[::1]:11434"),
            ("fe80::1", "http://[fe80::1]:11434"),
            ("example.com", "http://example.com:11434"),
            ("example.com:56789", "http://example.com:56789"),
            ("example.com/ollama", "http://example.com:11434/ollama"),
            (
                "example.com:8080/path/to/ollama/",
                "http://example.com:8080/path/to/ollama",
            ),
            ("http://example.com", "http://example.com:80"),
            ("https://example.com", "https://example.com:443"),
            (
                "https://example.com:8443/ollama",
                "https://example.com:8443/ollama",
            ),
            ("\"10.0.0.5:11434\"", "http://10.0.0.5:11434"),
            ("'10.0.0.5'", "http://10.0.0.5:11434"),
            ("10.0.0.5:99999", "http://10.0.0.5:11434"),
            ("10.0.0.5:", "http://10.0.0.5:11434"),
            ("ollama.com", "https://ollama.com:443"),
            ("http://127.0.0.1:11434", "http://127.0.0.1:11434"),
        ];
        for (value, want) in cases {
            assert_eq!(host_url(value), want, "OLLAMA_HOST={value:?}");
        }
    }

    #[test]
    fn num_parallel_is_read_as_the_daemon_reads_it() {
        assert_eq!(num_parallel(None), 1);
        assert_eq!(num_parallel(Some("")), 1);
        assert_eq!(num_parallel(Some("4")), 4);
        assert_eq!(num_parallel(Some(" \"2\" ")), 2);
        assert_eq!(num_parallel(Some("0")), 1);
        assert_eq!(num_parallel(Some("-3")), 1);
        assert_eq!(num_parallel(Some("many")), 1);
        let p = OllamaProvider::new("127.0.0.1:9").map(|p| p.with_parallel(3));
        assert_eq!(p.map(|p| p.max_concurrency()).ok(), Some(3));
    }

    #[test]
    fn a_name_without_a_tag_means_latest() {
        assert_eq!(tagged("llama3.1"), "llama3.1:latest");
        assert_eq!(tagged("llama3.1:8b"), "llama3.1:8b");
        assert_eq!(tagged("library/llama3.1"), "library/llama3.1:latest");
        assert_eq!(
            tagged("registry:5000/me/model"),
            "registry:5000/me/model:latest"
        );
        assert_eq!(tagged("me/model@sha256:abc"), "me/model@sha256:abc");
    }

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
        let mut tags = ThinkTags::default();
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
    fn the_daemons_words_decide_the_class() {
        let kind = |status: Option<u16>, msg: &str| match status {
            Some(s) => classify_status(s, msg).kind,
            None => classify_message(msg).kind,
        };
        use ProviderErrorKind as K;
        // server/routes.go ChatHandler and server/images.go CheckCapabilities.
        assert_eq!(
            kind(Some(400), "\"bge-m3\" does not support chat"),
            K::InvalidRequest
        );
        assert_eq!(
            kind(Some(400), "\"llama3.1\" does not support thinking"),
            K::InvalidRequest
        );
        assert_eq!(kind(Some(400), "does not support tools"), K::InvalidRequest);
        // llm/llama_server.go: a bad `format` (HTTP 500 when it reaches streamResponse).
        assert_eq!(
            kind(
                Some(500),
                "invalid format: \"yaml\"; expected \"json\" or a valid JSON Schema object"
            ),
            K::UnsupportedParameter
        );
        // llm/status.go out-of-memory wording: fall back, no retry.
        for oom in [
            "model requires more system memory (9.5 GiB) than is available: insufficient memory",
            "failed to allocate compute buffers",
            "CUDA error: out of memory",
            "llama runner process has terminated: cudaMalloc failed: out of memory",
        ] {
            assert_eq!(kind(Some(500), oom), K::Unavailable, "{oom}");
            assert_eq!(kind(None, oom), K::Unavailable, "{oom}");
        }
        // The desktop pull of an unknown name (server/images.go pullModelManifest).
        assert_eq!(
            kind(None, "pull model manifest: file does not exist"),
            K::ModelNotFound
        );
        assert_eq!(
            kind(Some(404), "model \"x\" not found, try pulling it first"),
            K::ModelNotFound
        );
        assert_eq!(kind(Some(400), "missing request body"), K::InvalidRequest);
        assert_eq!(
            kind(
                Some(503),
                "server busy, please try again.  maximum pending requests exceeded"
            ),
            K::Transient
        );
        assert_eq!(kind(None, "an unexpected failure"), K::Transient);
    }

    #[test]
    fn num_ctx_holds_the_prompt_within_the_trained_window() {
        // A small prompt: the daemon's default, no reload of a model loaded with it.
        assert_eq!(num_ctx(100, 256, None, Some(131_072)).ok(), Some(4096));
        // A long one: the need rounded up to a power of two.
        assert_eq!(num_ctx(5000, 256, None, Some(131_072)).ok(), Some(8192));
        // The loaded runner's window when it holds the need.
        assert_eq!(
            num_ctx(5000, 256, Some(32_768), Some(131_072)).ok(),
            Some(32_768)
        );
        assert_eq!(
            num_ctx(5000, 256, Some(4096), Some(131_072)).ok(),
            Some(8192)
        );
        // Never past the trained window; a need past it is a context overflow.
        assert_eq!(num_ctx(6000, 256, None, Some(7000)).ok(), Some(7000));
        let err = num_ctx(7000, 256, None, Some(7000)).err().map(|e| e.kind);
        assert_eq!(err, Some(ProviderErrorKind::ContextOverflow));
        // An unknown window: the need, rounded.
        assert_eq!(num_ctx(40_000, 0, None, None).ok(), Some(65_536));
    }
}
