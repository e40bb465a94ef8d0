//! The embedded model provider: llama.cpp in-process (crate `llama-cpp-2`) running a GGUF
//! file, so a machine with neither Ollama nor a cloud key still runs workflows.
//!
//! The default model is SmolLM2-135M-Instruct (Apache-2.0), Q4_1 GGUF, ~98 MB;
//! `scripts/fetch-model.sh` puts it in place. The model file is found at
//! `NEXUS_EMBEDDED_MODEL`, else `models/SmolLM2-135M-Instruct.Q4_1.gguf` under the
//! current directory, else under `<data dir>/nexus/models/`.
//!
//! Generation runs on a blocking thread: the prompt is formatted with the model's own
//! chat template, decoded in one batch, then tokens are sampled one at a time (top-k 40,
//! top-p 0.95, temperature, a light repetition penalty; greedy at temperature 0; a
//! grammar from the step's JSON Schema when structured output is asked) and sent through
//! a channel. The thread stops as soon as the receiving stream is dropped, which is how
//! cancellation and timeouts reach it. One generation runs at a time.
//!
//! Invariant: generation stops after `max_tokens` sampled tokens (`finish_reason`
//! `length`), and the stream is also [`metered`] like every provider's, so the reply
//! never passes the engine's token and byte ceilings.

mod embeddings;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use nexus_engine::provider::tools::no_native_tools;
use nexus_engine::provider::{
    ChatChunk, ChatRequest, ChatStream, Locality, ModelInfo, Provider, ProviderError,
    ProviderErrorKind, Usage, metered,
};

/// File name of the default embedded model.
pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// Context window used for generation, in tokens (the model may support more; 4096 keeps
/// memory small on a laptop).
pub const CONTEXT_TOKENS: u32 = 4096;

/// Errors of the embedded provider.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model file does not exist.
    #[error(
        "embedded model not found at {0}; run `scripts/fetch-model.sh` or set NEXUS_EMBEDDED_MODEL"
    )]
    Missing(PathBuf),
    /// llama.cpp failed to initialise or load the file.
    #[error("cannot load the embedded model {path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// llama.cpp's error.
        message: String,
    },
}

/// Where the embedded model is looked for, in order.
pub fn candidate_paths() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("NEXUS_EMBEDDED_MODEL") {
        paths.push(PathBuf::from(p));
        return paths;
    }
    paths.push(PathBuf::from("models").join(DEFAULT_MODEL_FILE));
    paths.push(default_models_dir().join(DEFAULT_MODEL_FILE));
    paths
}

/// `<data dir>/nexus/models`.
pub fn default_models_dir() -> PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("nexus")
        .join("models")
}

/// The first existing candidate path, or the last candidate (for the error message).
pub fn default_model_path() -> PathBuf {
    let paths = candidate_paths();
    paths
        .iter()
        .find(|p| p.exists())
        .cloned()
        .or_else(|| paths.last().cloned())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_MODEL_FILE))
}

fn backend() -> Result<&'static LlamaBackend, String> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            LlamaBackend::init()
                .map(|mut b| {
                    b.void_logs();
                    b
                })
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(Clone::clone)
}

struct Loaded {
    model: LlamaModel,
}

/// The embedded provider (id `embedded`).
pub struct EmbeddedProvider {
    path: PathBuf,
    name: String,
    loaded: Arc<tokio::sync::OnceCell<Arc<Loaded>>>,
    gate: Arc<tokio::sync::Semaphore>,
    /// The sentence encoder behind [`Provider::embed`] (`embedded:all-minilm-l6-v2`).
    encoder: Arc<embeddings::Encoder>,
}

impl std::fmt::Debug for EmbeddedProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedProvider")
            .field("path", &self.path)
            .field("name", &self.name)
            .finish()
    }
}

/// The model name derived from a GGUF file name: `SmolLM2-135M-Instruct.Q4_1.gguf` →
/// `smollm2-135m-instruct`.
pub fn model_name(path: &Path) -> String {
    let stem = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("model")
        .trim_end_matches(".gguf");
    stem.split('.').next().unwrap_or(stem).to_lowercase()
}

impl EmbeddedProvider {
    /// A provider for the GGUF file at `path` (loaded on first use).
    pub fn new(path: PathBuf) -> Self {
        EmbeddedProvider {
            name: model_name(&path),
            path,
            loaded: Arc::new(tokio::sync::OnceCell::new()),
            gate: Arc::new(tokio::sync::Semaphore::new(1)),
            encoder: Arc::new(embeddings::Encoder::new(nexus_embed::default_model_dir())),
        }
    }

    /// The same provider with its embedding model (see [`nexus_embed`]) in `dir` instead
    /// of [`nexus_embed::default_model_dir`].
    #[must_use]
    pub fn with_embedding_model(mut self, dir: PathBuf) -> Self {
        self.encoder = Arc::new(embeddings::Encoder::new(dir));
        self
    }

    /// A provider for [`default_model_path`].
    pub fn from_default_location() -> Self {
        Self::new(default_model_path())
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    async fn load(&self) -> Result<Arc<Loaded>, ProviderError> {
        let path = self.path.clone();
        self.loaded
            .get_or_try_init(|| async move {
                if !path.exists() {
                    return Err(ProviderError::new(
                        ProviderErrorKind::Unavailable,
                        Error::Missing(path).to_string(),
                    ));
                }
                tokio::task::spawn_blocking(move || {
                    let backend = backend().map_err(|message| Error::Load {
                        path: path.clone(),
                        message,
                    })?;
                    let model =
                        LlamaModel::load_from_file(backend, &path, &LlamaModelParams::default())
                            .map_err(|e| Error::Load {
                                path: path.clone(),
                                message: e.to_string(),
                            })?;
                    Ok::<_, Error>(Arc::new(Loaded { model }))
                })
                .await
                .map_err(|e| ProviderError::new(ProviderErrorKind::Internal, e.to_string()))?
                .map_err(|e| ProviderError::new(ProviderErrorKind::Internal, e.to_string()))
            })
            .await
            .cloned()
    }
}

type Tx = tokio::sync::mpsc::Sender<Result<ChatChunk, ProviderError>>;

fn internal(message: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(ProviderErrorKind::Internal, message.to_string())
}

/// Runs one generation on the calling (blocking) thread, sending chunks to `tx`.
/// Returns when done, on error, or as soon as `tx` is closed.
fn generate(loaded: &Loaded, request: &ChatRequest, tx: &Tx) -> Result<(), ProviderError> {
    let backend = backend().map_err(internal)?;
    let model = &loaded.model;
    let vocab = model.vocab();
    let template = model.chat_template(None).map_err(internal)?;
    let messages = request
        .messages
        .iter()
        .map(|m| {
            let role = m.role.as_str();
            LlamaChatMessage::new(role.to_string(), m.content.clone()).map_err(internal)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let prompt = model
        .apply_chat_template(&template, &messages, true)
        .map_err(internal)?;
    let tokens = vocab.tokenize(prompt.as_bytes(), vocab.should_add_bos(), true);
    let n_ctx = CONTEXT_TOKENS.min(model.n_ctx_train().max(512));
    let budget = u32::try_from(tokens.len())
        .unwrap_or(u32::MAX)
        .saturating_add(request.max_tokens);
    if budget > n_ctx {
        return Err(ProviderError::new(
            ProviderErrorKind::ContextOverflow,
            format!(
                "context overflow: the prompt has {} tokens and max_tokens is {}, over the embedded model's {n_ctx}-token window",
                tokens.len(),
                request.max_tokens
            ),
        ));
    }
    let threads = std::thread::available_parallelism()
        .map(|n| i32::try_from(n.get()).unwrap_or(1))
        .unwrap_or(1);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_ctx)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(backend, params).map_err(internal)?;

    let mut batch = LlamaBatch::new(n_ctx as usize, 1);
    let last = tokens.len().saturating_sub(1);
    for (i, token) in tokens.iter().enumerate() {
        batch
            .add(
                *token,
                i32::try_from(i).unwrap_or(i32::MAX),
                &[0],
                i == last,
            )
            .map_err(internal)?;
    }
    ctx.decode(&mut batch).map_err(internal)?;

    let mut samplers = Vec::new();
    if let Some(schema) = &request.json_schema {
        let grammar = llama_cpp_2::json_schema_to_grammar(&schema.to_string()).map_err(|e| {
            ProviderError::new(
                ProviderErrorKind::InvalidRequest,
                format!("output schema not supported by the embedded model: {e}"),
            )
        })?;
        samplers.push(LlamaSampler::grammar(model, &grammar, "root").map_err(internal)?);
    }
    samplers.push(LlamaSampler::penalties(vocab.n_tokens(), 64, 1.1, 0.0, 0.0));
    if request.temperature <= 0.0 {
        samplers.push(LlamaSampler::greedy());
    } else {
        samplers.push(LlamaSampler::top_k(40));
        samplers.push(LlamaSampler::top_p(0.95, 1));
        samplers.push(LlamaSampler::temp(request.temperature));
        samplers.push(LlamaSampler::dist(rand_seed()));
    }
    let mut sampler = LlamaSampler::chain_simple(samplers);

    let first_pos = i32::try_from(tokens.len()).unwrap_or(i32::MAX);
    let mut pending: Vec<u8> = Vec::new();
    let mut generated = 0u64;
    let mut finish = "length";
    for (pos, _) in (first_pos..).zip(0..request.max_tokens) {
        let token = sampler.sample(&ctx, batch.n_tokens() - 1);
        if vocab.is_eog(token) {
            finish = "stop";
            break;
        }
        generated += 1;
        pending.extend(vocab.token_to_piece(token, false, None));
        // Send the longest valid UTF-8 prefix; keep a split multi-byte character.
        let valid = match std::str::from_utf8(&pending) {
            Ok(s) => s.len(),
            Err(e) => e.valid_up_to(),
        };
        if valid > 0 {
            let text = String::from_utf8_lossy(&pending[..valid]).into_owned();
            pending.drain(..valid);
            if tx.blocking_send(Ok(ChatChunk::Delta(text))).is_err() {
                return Ok(()); // the stream was dropped: cancelled or timed out
            }
        }
        batch.clear();
        batch.add(token, pos, &[0], true).map_err(internal)?;
        ctx.decode(&mut batch).map_err(internal)?;
    }
    if !pending.is_empty() {
        let text = String::from_utf8_lossy(&pending).into_owned();
        let _ = tx.blocking_send(Ok(ChatChunk::Delta(text)));
    }
    let _ = tx.blocking_send(Ok(ChatChunk::Done {
        usage: Usage {
            prompt_tokens: tokens.len() as u64,
            completion_tokens: generated,
        },
        finish_reason: Some(finish.to_string()),
    }));
    Ok(())
}

fn rand_seed() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0);
    #[allow(clippy::cast_possible_truncation)]
    let seed = h.finish() as u32;
    seed
}

#[async_trait]
impl Provider for EmbeddedProvider {
    fn id(&self) -> &str {
        "embedded"
    }

    fn locality(&self) -> Locality {
        Locality::Embedded
    }

    /// Embeddings with `all-minilm-l6-v2` ([`nexus_embed`]).
    fn can_embed(&self) -> bool {
        true
    }

    async fn embed(
        &self,
        request: nexus_engine::provider::embed::EmbedRequest,
    ) -> Result<nexus_engine::provider::embed::Embeddings, ProviderError> {
        self.encoder.embed(request).await
    }

    async fn list_models(&self) -> Result<Vec<ModelInfo>, ProviderError> {
        if !self.path.exists() {
            return Err(ProviderError::new(
                ProviderErrorKind::Unavailable,
                Error::Missing(self.path.clone()).to_string(),
            ));
        }
        let size = std::fs::metadata(&self.path).ok().map(|m| m.len());
        let context = self
            .loaded
            .get()
            .map(|l| l.model.n_ctx_train().min(CONTEXT_TOKENS))
            .or(Some(CONTEXT_TOKENS));
        Ok(vec![ModelInfo {
            provider: "embedded".into(),
            name: self.name.clone(),
            locality: Locality::Embedded,
            context_length: context,
            size_bytes: size,
            parameter_size: None,
            recommended_family: None,
            capabilities: Vec::new(),
            loaded_context_length: None,
            quantization: self
                .path
                .file_name()
                .and_then(|s| s.to_str())
                .and_then(|s| s.trim_end_matches(".gguf").rsplit('.').next())
                .map(str::to_owned),
        }])
    }

    /// No native tool calls: the model has no tool-calling template, so an agent step
    /// uses its JSON strategy (a grammar-constrained reply) with it.
    async fn chat(&self, request: ChatRequest) -> Result<ChatStream, ProviderError> {
        if !request.tools.is_empty() {
            return Err(no_native_tools(self.id(), &request.model));
        }
        let loaded = self.load().await?;
        let permit = Arc::clone(&self.gate)
            .acquire_owned()
            .await
            .map_err(internal)?;
        let max_tokens = request.max_tokens;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if let Err(e) = generate(&loaded, &request, &tx) {
                let _ = tx.blocking_send(Err(e));
            }
        });
        let mut rx = rx;
        let stream: ChatStream = Box::pin(futures::stream::poll_fn(move |cx| rx.poll_recv(cx)));
        Ok(metered(stream, max_tokens))
    }
}
