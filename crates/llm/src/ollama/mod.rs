//! Ollama provider: the daemon's REST API (`docs/api.md` of the Ollama repository) over
//! a `reqwest` client that caps every read, with Nexus's own wire types ([`wire`]).
//!
//! The daemon is found at `OLLAMA_HOST`, read as the Ollama CLI reads it ([`host_url`],
//! after `envconfig/config.go` of the Ollama repository), default
//! `http://127.0.0.1:11434`. Models come from `GET /api/tags` (a cloud model served
//! through the local daemon carries `remote_host`: [`Locality::Cloud`]), with the
//! trained context window and the capabilities from `POST /api/show`
//! (`model_info["<arch>.context_length"]`, `capabilities`). Chat uses `POST /api/chat`
//! with NDJSON streaming ([`stream`]); the final chunk (`done: true`) carries
//! `prompt_eval_count`, `eval_count` and `done_reason` (`stop`, `length`), which become
//! the step's token counts and finish reason.
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
//! [`ChatChunk::Reasoning`](nexus_engine::provider::ChatChunk::Reasoning), apart from the answer.
//!
//! Tools: a model whose `/api/show` capabilities include `tools` takes
//! [`ChatRequest::tools`] natively ([`Provider::native_tool_calls`]); the daemon sends
//! each call complete in `message.tool_calls` (object `arguments`, `id`, `index`), which
//! becomes one [`ChatChunk::ToolCall`](nexus_engine::provider::ChatChunk::ToolCall); results go back as `role: "tool"` messages with
//! `tool_name` and `tool_call_id`. Embeddings: `POST /api/embed` ([`embed`]). Pulls:
//! `POST /api/pull` with the layers' progress summed ([`pull`]).
//!
//! Concurrency: `OLLAMA_NUM_PARALLEL` requests per model ([`num_parallel`]), and at most
//! `OLLAMA_MAX_LOADED_MODELS` models in flight on the daemon ([`max_loaded_models`]).
//!
//! Error mapping ([`classify_message`], [`errors`]): a refused connection is
//! [`ProviderErrorKind::Unavailable`]; "not found" and "file does not exist" are
//! [`ProviderErrorKind::ModelNotFound`]; the daemon's out-of-memory wording
//! (`llm/status.go`) is unavailable (fall back, no retry); "does not support" (chat,
//! thinking, tools: `server/routes.go`, `server/images.go`) is an invalid request and an
//! invalid `format` an unsupported parameter (never retried as transient); an
//! `{"error": ...}` line mid-stream keeps the daemon's words.
//!
//! Floods: chat reads the NDJSON itself (`tokio-util`'s `LinesCodec`, no line over
//! [`http::EVENT_CAP`]) and the reply goes through [`metered`] (cut past `num_predict` =
//! `max_tokens` plus a margin, or past the byte cap). Model lists and embeddings are
//! read within caps ([`http::LIST_BODY_CAP`], [`http::embed_body_cap`]).
//!
//! The families Nexus recommends ([`RECOMMENDED_FAMILIES`]) reach the selector as
//! [`ModelInfo::recommended_family`].

mod embed;
pub mod errors;
pub mod pull;
pub mod stream;
mod wire;

use async_trait::async_trait;
use nexus_engine::provider::{
    ChatRequest, ChatStream, EmbedRequest, Embeddings, Locality, ModelCapability, ModelInfo,
    Provider, ProviderError, ProviderErrorKind, ToolChoice, metered,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use errors::check;
pub use errors::{OUT_OF_MEMORY_PHRASES, classify_message, classify_with};
pub use pull::{PullProgress, PullStream};
pub use stream::ThinkTags;

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
    http: reqwest::Client,
    url: String,
    /// Trained context window per model name, tokens, as `/api/show` last reported it.
    windows: Arc<Mutex<HashMap<String, u32>>>,
    /// Requests one model serves at once ([`num_parallel`]).
    parallel: usize,
    /// Models the daemon keeps loaded at once ([`max_loaded_models`]).
    max_loaded: usize,
    /// `ollama`, or `ollama@<name>` for one of several hosts ([`OllamaProvider::with_id`]).
    id: String,
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

/// Models the daemon keeps loaded per GPU when `OLLAMA_MAX_LOADED_MODELS` is 0 or unset
/// (`server/sched.go` `defaultModelsPerGPU`).
pub const DEFAULT_MODELS_PER_GPU: usize = 3;

/// How many different models the daemon keeps loaded at once, from an
/// `OLLAMA_MAX_LOADED_MODELS` value read as the daemon reads it (`envconfig/config.go`
/// `MaxRunners`: `Var` and `Uint`, default 0; a value that is not an unsigned integer
/// means the default). 0 means [`DEFAULT_MODELS_PER_GPU`] per GPU, or 3 on a CPU
/// (`server/sched.go` `processPending`: `defaultModelsPerGPU * max(len(gpus), 1)`); Nexus
/// cannot count the daemon's GPUs, so it takes one (3), and a daemon with several GPUs
/// is set with [`OllamaProvider::with_max_loaded_models`]. Past this the daemon unloads
/// a model to load another, so it bounds the models Nexus has in flight on it.
pub fn max_loaded_models(value: Option<&str>) -> usize {
    value
        .map(|v| v.trim().trim_matches(['"', '\'']))
        .filter(|v| !v.is_empty())
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(DEFAULT_MODELS_PER_GPU)
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
        if let Err(e) = reqwest::Url::parse(&url) {
            return Err(ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                format!("OLLAMA_HOST `{url}` is not a valid URL: {e}"),
            ));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| ProviderError::new(ProviderErrorKind::Internal, e.to_string()))?;
        let env = |name: &str| std::env::var(name).ok();
        Ok(OllamaProvider {
            http,
            url,
            windows: Arc::default(),
            parallel: num_parallel(env("OLLAMA_NUM_PARALLEL").as_deref()),
            max_loaded: max_loaded_models(env("OLLAMA_MAX_LOADED_MODELS").as_deref()),
            id: "ollama".to_string(),
        })
    }

    /// The same provider under another id, `ollama@<name>` (`ollama@gpu1`), so one
    /// process can use several daemons (GPU boxes): each has its own breakers,
    /// statistics and slots, and a reference to the family (`ollama:llama3.1`) may be
    /// served by any of them ([`nexus_engine::provider::family`]).
    #[must_use]
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
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

    /// The same provider with at most `n` models in flight (at least 1), for a daemon
    /// started with another `OLLAMA_MAX_LOADED_MODELS` than this process sees, or with
    /// several GPUs (3 per GPU by default).
    #[must_use]
    pub fn with_max_loaded_models(mut self, n: usize) -> Self {
        self.max_loaded = n.max(1);
        self
    }

    /// Sends `body` to `path` (`/api/...`); a non-2xx answer is classified by its
    /// `{"error": ...}` text.
    async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
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
    /// the daemon's progress lines as they come, each with the sums over all layers
    /// ([`pull`]): a status text (`pulling manifest`, `pulling <digest>`, `verifying
    /// sha256 digest`, `success`) with byte counts while a layer downloads. The stream
    /// ends after `success`.
    ///
    /// # Errors
    /// Classified like chat errors: [`ProviderErrorKind::Unavailable`] when the daemon
    /// cannot be reached, [`ProviderErrorKind::ModelNotFound`] for an unknown name (the
    /// daemon answers `{"error": "pull model manifest: file does not exist"}` after the
    /// 200), [`ProviderErrorKind::Protocol`] for a stream that ends before `success`.
    pub async fn pull(&self, model: &str) -> Result<pull::PullStream, ProviderError> {
        let body = wire::PullRequest {
            model,
            name: model,
            stream: true,
        };
        let resp = self.post("/api/pull", &body).await?;
        Ok(pull::progress_stream(resp))
    }
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
        &self.id
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
        let tags = Self::json::<wire::Tags>(check(resp).await?).await?.models;
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
                let capabilities = info
                    .as_ref()
                    .map(|i| i.capabilities.iter().map(|c| capability(c)).collect())
                    .unwrap_or_default();
                ModelInfo {
                    provider: self.id.clone(),
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
                    capabilities,
                }
            })
            .collect())
    }

    /// [`max_loaded_models`] of `OLLAMA_MAX_LOADED_MODELS`, or
    /// [`OllamaProvider::with_max_loaded_models`].
    fn max_loaded_models(&self) -> Option<usize> {
        Some(self.max_loaded)
    }

    /// The `tools` capability of `/api/show` (`types/model/capability.go`): without it
    /// the daemon refuses `tools` with "does not support tools" (`server/images.go`).
    fn native_tool_calls(&self, model: &ModelInfo) -> bool {
        model.has(ModelCapability::Tools)
    }

    fn can_embed(&self) -> bool {
        true
    }

    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        let prompt_tokens = prompt_estimate(&request);
        let (loaded, trained) = self.windows_of(&request.model).await;
        let num_ctx = num_ctx(prompt_tokens, request.max_tokens, loaded, trained)?;
        let max_tokens = request.max_tokens;
        let body = chat_body(&request, num_ctx);
        let resp = self.post("/api/chat", &body).await?;
        Ok(metered(stream::ndjson_reply(resp, max_tokens), max_tokens))
    }

    /// `POST /api/embed` ([`embed`]).
    async fn embed(&self, request: EmbedRequest) -> Result<Embeddings, ProviderError> {
        embed::embed(self, &request).await
    }
}

/// The prompt's tokens as the selector estimates them: the messages' text, the tool
/// calls' arguments and the tools' schemas (the daemon renders them into the prompt).
fn prompt_estimate(request: &ChatRequest) -> u64 {
    let estimate = nexus_engine::select::estimate_tokens;
    let messages: u64 = request
        .messages
        .iter()
        .map(|m| {
            estimate(&m.content)
                + m.tool_calls
                    .iter()
                    .map(|c| estimate(&c.name) + estimate(&c.arguments.to_string()))
                    .sum::<u64>()
        })
        .sum();
    let tools: u64 = request
        .tools
        .iter()
        .map(|t| estimate(&t.description) + estimate(&t.parameters.to_string()) + 4)
        .sum();
    messages + tools
}

/// The body of `POST /api/chat` for `request` (`api/types.go` `ChatRequest`).
fn chat_body(request: &ChatRequest, num_ctx: u32) -> wire::ChatRequest<'_> {
    let messages = request
        .messages
        .iter()
        .map(|m| wire::Message {
            role: m.role.as_str(),
            content: &m.content,
            tool_calls: m
                .tool_calls
                .iter()
                .enumerate()
                .map(|(index, c)| wire::ToolCall {
                    id: Some(c.id.clone()),
                    function: wire::ToolCallFunction {
                        index,
                        name: c.name.clone(),
                        arguments: c.arguments.clone(),
                    },
                })
                .collect(),
            tool_name: m.tool_name.as_deref(),
            tool_call_id: m.tool_call_id.as_deref(),
        })
        .collect();
    // The daemon has no `tool_choice`: a forced tool is offered alone.
    let tools = request
        .tools
        .iter()
        .filter(|t| match &request.tool_choice {
            ToolChoice::Tool(name) => &t.name == name,
            ToolChoice::Auto | ToolChoice::Required => true,
        })
        .map(|t| wire::Tool {
            kind: "function",
            function: wire::ToolFunction {
                name: &t.name,
                description: &t.description,
                parameters: &t.parameters,
            },
        })
        .collect();
    wire::ChatRequest {
        model: &request.model,
        messages,
        stream: true,
        // A schema object as it is; anything else asks for plain JSON (`"json"`).
        format: request.json_schema.as_ref().map(|s| {
            if s.is_object() {
                s.clone()
            } else {
                serde_json::Value::String("json".into())
            }
        }),
        tools,
        options: wire::Options {
            temperature: request.temperature,
            num_predict: i64::from(request.max_tokens),
            num_ctx,
        },
        // `think` only when the step says: absent, a thinking model thinks and any other
        // answers (`server/routes.go` ChatHandler); `true` on a model without the
        // capability is a 400.
        think: request.think,
    }
}

impl OllamaProvider {
    /// `POST /api/show` of one model (`model` per the current docs; `name` for daemons
    /// before 0.5).
    async fn show(&self, name: &str) -> Result<wire::Show, ProviderError> {
        let body = serde_json::json!({ "model": name, "name": name });
        let resp = self.post("/api/show", &body).await?;
        Self::json::<wire::Show>(resp).await
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
            Self::json::<wire::Ps>(check(resp).await.ok()?).await.ok()
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
