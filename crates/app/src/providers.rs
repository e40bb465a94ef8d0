//! Providers as configuration: `providers.yaml` in the Nexus config directory (or the
//! file `NEXUS_PROVIDERS` names) lists model hosts by id, in the spirit of LiteLLM's
//! `model_list`: several Ollama daemons (`ollama@gpu1`, `ollama@gpu2`), several
//! OpenAI-compatible endpoints each with its own key (`openai@groq`, `openai@lmstudio`),
//! Anthropic's Messages API (`anthropic`).
//!
//! ```yaml
//! providers:
//!   - id: ollama@gpu1            # family@name; families: ollama, openai, anthropic
//!     url: http://10.0.0.11:11434
//!     max_concurrency: 1         # requests per model at once (default: the provider's)
//!   - id: openai@groq
//!     url: https://api.groq.com/openai/v1
//!     key: groq                  # a secret's name: `nexus secret set groq`, or NEXUS_SECRET_GROQ
//!     models: [llama-3.1-8b-instant]
//!   - id: openai@lmstudio
//!     url: http://127.0.0.1:1234/v1
//!     locality: local            # a server on this machine: `local_only` steps may use it
//!   - id: anthropic
//!     key: anthropic
//!     models: [claude-3-5-haiku-latest]
//! ```
//!
//! Invariants: ids are unique and of a known family (the catalog's `providers:`); a key
//! is never in the file, only a secret's name, resolved through the
//! [`SecretResolver`] (the OS keychain, then the environment) when the providers are
//! built; a key named but not set is an error naming the file, the provider and how to
//! set it. Each configured provider has its own circuit breakers, statistics and slots,
//! because those are kept per `provider:model` reference. The environment's one-endpoint
//! setup (`OLLAMA_HOST`, `NEXUS_OPENAI_*`) keeps working for each family the file does
//! not configure.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nexus_engine::Provider;
use nexus_engine::provider::{Locality, family};
use nexus_engine::secrets::SecretResolver;
use serde::Deserialize;

use crate::{Error, Result};

/// The file's name in the Nexus config directory.
pub const FILE_NAME: &str = "providers.yaml";

/// The families a configured id may name, with the field `url` defaults to.
const FAMILIES: &[&str] = &["ollama", "openai", "anthropic"];

/// `providers.yaml` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvidersFile {
    /// The providers, in the selector's registration order.
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
}

/// One provider of `providers.yaml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    /// `family` or `family@name` (`ollama@gpu1`, `openai@groq`, `anthropic`); model
    /// references name it (`openai@groq:llama-3.1-8b-instant`) or its family
    /// (`ollama:llama3.1`, served by every Ollama host).
    pub id: String,
    /// Ollama: the daemon's address, read as `OLLAMA_HOST` is (default
    /// `http://127.0.0.1:11434`); OpenAI-compatible: the base URL with its `/v1`
    /// (default the public OpenAI API); Anthropic: the API's root without `/v1`
    /// (default `https://api.anthropic.com`).
    #[serde(default)]
    pub url: Option<String>,
    /// The name of the secret that holds the API key (OpenAI-compatible and Anthropic);
    /// never the key itself.
    #[serde(default)]
    pub key: Option<String>,
    /// The models to offer, instead of asking the endpoint (`GET /models`).
    #[serde(default)]
    pub models: Vec<String>,
    /// Requests one model of this provider serves at once (at least 1): a GPU box that
    /// runs one generation at a time is 1, a cloud key with a rate limit more. Default:
    /// the provider's own (1 local, 4 cloud; Ollama's `OLLAMA_NUM_PARALLEL`).
    #[serde(default)]
    pub max_concurrency: Option<usize>,
    /// OpenAI-compatible only: whether the server takes `tools` (default true).
    #[serde(default)]
    pub tools: Option<bool>,
    /// OpenAI-compatible only: where the endpoint runs (default `cloud`).
    #[serde(default)]
    pub locality: Option<Locality>,
}

/// Providers built from the file: in order, with the per-provider concurrency limits
/// (id → requests per model) for [`nexus_engine::EngineConfig::provider_limits`].
#[derive(Default)]
pub struct Configured {
    /// The providers, in the file's order.
    pub providers: Vec<Arc<dyn Provider>>,
    /// `max_concurrency` by provider id, where the file sets it.
    pub limits: HashMap<String, usize>,
    /// The families the file configures (the environment's provider of such a family
    /// is not added).
    pub families: HashSet<String>,
}

/// The file in use: `NEXUS_PROVIDERS` when set, else [`FILE_NAME`] in the Nexus config
/// directory when it exists.
pub fn find() -> Option<PathBuf> {
    match std::env::var_os("NEXUS_PROVIDERS").filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => dirs::config_dir()
            .map(|d| d.join("nexus").join(FILE_NAME))
            .filter(|p| p.exists()),
    }
}

/// Reads and checks `path`.
///
/// # Errors
/// [`Error::Config`] naming the file: it cannot be read, is not YAML of this shape (with
/// line and column), or an entry is wrong (unknown family, duplicate id, a field its
/// family does not take, a URL that is not one).
pub fn load(path: &Path) -> Result<ProvidersFile> {
    let at = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
        message: format!("cannot read the providers file {at}: {e}"),
    })?;
    parse(&text, &at.to_string())
}

/// Parses and checks the text of a providers file named `at` (in messages).
///
/// # Errors
/// As [`load`].
pub fn parse(text: &str, at: &str) -> Result<ProvidersFile> {
    let file: ProvidersFile = serde_saphyr::from_str(text).map_err(|e| Error::Config {
        message: format!(
            "{at}: {}; the file lists `providers:`, each with `id` and optionally url, key, models, max_concurrency, tools, locality",
            e.to_string().lines().next().unwrap_or_default()
        ),
    })?;
    let mut seen = HashSet::new();
    for (i, entry) in file.providers.iter().enumerate() {
        check(entry).map_err(|why| Error::Config {
            message: format!("{at}: providers[{i}] (`{}`): {why}", entry.id),
        })?;
        if !seen.insert(entry.id.as_str()) {
            return Err(Error::Config {
                message: format!(
                    "{at}: providers[{i}]: the id `{}` is used twice; give each host its own name (`{}@<name>`)",
                    entry.id,
                    family(&entry.id)
                ),
            });
        }
    }
    Ok(file)
}

/// What is wrong with one entry, if anything.
fn check(entry: &ProviderEntry) -> std::result::Result<(), String> {
    let fam = family(&entry.id);
    if !FAMILIES.contains(&fam) {
        return Err(format!(
            "unknown provider family `{fam}`; write one of {} (optionally `@<name>`)",
            FAMILIES.join(", ")
        ));
    }
    if let Some((_, name)) = entry.id.split_once('@')
        && (name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "the name after `@` must be letters, digits, `-`, `_` or `.` (e.g. `{fam}@gpu1`)"
        ));
    }
    if fam == "ollama" && entry.key.is_some() {
        return Err("an Ollama daemon takes no API key; remove `key`".into());
    }
    if fam != "openai" && (entry.tools.is_some() || entry.locality.is_some()) {
        return Err("`tools` and `locality` apply to OpenAI-compatible endpoints only".into());
    }
    if entry.locality == Some(Locality::Embedded) {
        return Err("`locality` is `local` or `cloud`".into());
    }
    if entry.max_concurrency == Some(0) {
        return Err("`max_concurrency` is 0; give 1 or more".into());
    }
    if let Some(url) = &entry.url
        && fam != "ollama"
        && let Err(e) = reqwest::Url::parse(url)
    {
        return Err(format!("`url` {url} is not a URL ({e})"));
    }
    Ok(())
}

/// Builds the providers of `file` (named `at` in messages), resolving each `key`
/// through `secrets`. Keychain reads may block: call this on a blocking thread.
///
/// # Errors
/// [`Error::Config`] when a named key is not set or cannot be read, or a provider
/// cannot be built from its entry.
pub fn build(file: &ProvidersFile, at: &str, secrets: &dyn SecretResolver) -> Result<Configured> {
    let mut out = Configured::default();
    for entry in &file.providers {
        let fail = |why: String| Error::Config {
            message: format!("{at}: provider `{}`: {why}", entry.id),
        };
        let key = match &entry.key {
            None => None,
            Some(name) => Some(
                secrets
                    .resolve(name)
                    .map_err(|e| fail(format!("cannot read the key `{name}`: {e}")))?
                    .ok_or_else(|| {
                        fail(format!(
                            "the key `{name}` is not set; {}",
                            secrets.how_to_set(name)
                        ))
                    })?,
            ),
        };
        let provider: Arc<dyn Provider> = match family(&entry.id) {
            "ollama" => {
                let mut p = crate::setup::ollama(entry.url.as_deref())
                    .map_err(|e| fail(e.to_string()))?
                    .with_id(entry.id.clone());
                if let Some(n) = entry.max_concurrency {
                    p = p.with_parallel(n);
                }
                Arc::new(p)
            }
            "openai" => {
                let url = entry
                    .url
                    .as_deref()
                    .unwrap_or(nexus_llm::openai::DEFAULT_BASE_URL);
                let p = nexus_llm::OpenAiProvider::new(url, key, entry.models.clone())
                    .map_err(|e| fail(e.message))?
                    .with_id(entry.id.clone())
                    .with_native_tools(entry.tools.unwrap_or(true))
                    .with_locality(entry.locality.unwrap_or(Locality::Cloud));
                Arc::new(p)
            }
            _ => {
                let url = entry
                    .url
                    .as_deref()
                    .unwrap_or(nexus_llm::anthropic::DEFAULT_BASE_URL);
                let p = nexus_llm::AnthropicProvider::new(url, key, entry.models.clone())
                    .map_err(|e| fail(e.message))?
                    .with_id(entry.id.clone());
                Arc::new(p)
            }
        };
        if let Some(n) = entry.max_concurrency {
            out.limits.insert(entry.id.clone(), n);
        }
        out.families.insert(family(&entry.id).to_string());
        out.providers.push(provider);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Keys;
    impl SecretResolver for Keys {
        fn resolve(&self, name: &str) -> std::result::Result<Option<String>, String> {
            Ok((name == "groq").then(|| "gsk-test".to_string()))
        }
    }

    fn message(r: Result<ProvidersFile>) -> String {
        match r {
            Err(Error::Config { message }) => message,
            other => format!("not a config error: {other:?}"),
        }
    }

    #[test]
    fn a_file_with_two_hosts_and_two_endpoints_builds_each_under_its_id() -> anyhow::Result<()> {
        let file = parse(
            "providers:\n  - id: ollama@gpu1\n    url: http://127.0.0.1:1\n    max_concurrency: 1\n  - id: ollama@gpu2\n    url: 127.0.0.1:2\n  - id: openai@groq\n    url: http://127.0.0.1:3/v1\n    key: groq\n    models: [llama-3.1-8b-instant]\n  - id: openai@lmstudio\n    url: http://127.0.0.1:4/v1\n    locality: local\n",
            "p.yaml",
        )?;
        let built = build(&file, "p.yaml", &Keys)?;
        let ids: Vec<&str> = built.providers.iter().map(|p| p.id()).collect();
        assert_eq!(
            ids,
            [
                "ollama@gpu1",
                "ollama@gpu2",
                "openai@groq",
                "openai@lmstudio"
            ]
        );
        assert_eq!(built.limits.get("ollama@gpu1"), Some(&1));
        assert_eq!(built.providers[3].locality(), Locality::Local);
        assert_eq!(built.providers[2].locality(), Locality::Cloud);
        assert!(built.families.contains("ollama") && built.families.contains("openai"));
        Ok(())
    }

    #[test]
    fn bad_entries_are_refused_with_the_place_and_the_fix() {
        let cases = [
            (
                "providers:\n  - id: vllm\n",
                "unknown provider family `vllm`",
            ),
            ("providers:\n  - id: ollama@\n", "the name after `@`"),
            (
                "providers:\n  - id: ollama@a\n  - id: ollama@a\n",
                "providers[1]: the id `ollama@a` is used twice",
            ),
            (
                "providers:\n  - id: ollama\n    key: k\n",
                "takes no API key",
            ),
            (
                "providers:\n  - id: anthropic\n    tools: false\n",
                "OpenAI-compatible endpoints only",
            ),
            (
                "providers:\n  - id: openai\n    url: not a url\n",
                "is not a URL",
            ),
            (
                "providers:\n  - id: openai\n    max_concurrency: 0\n",
                "is 0",
            ),
            ("providers:\n  - id: openai\n    base_url: x\n", "p.yaml: "),
        ];
        for (text, want) in cases {
            let got = message(parse(text, "p.yaml"));
            assert!(got.contains(want), "{text:?}: {got}");
            assert!(got.starts_with("p.yaml"), "{text:?}: {got}");
        }
    }

    #[test]
    fn a_key_named_but_not_set_says_how_to_set_it() -> anyhow::Result<()> {
        let file = parse("providers:\n  - id: anthropic\n    key: claude\n", "p.yaml")?;
        let got = match build(&file, "p.yaml", &Keys) {
            Err(Error::Config { message }) => message,
            Ok(_) => String::from("built"),
            Err(e) => e.to_string(),
        };
        assert!(
            got.contains("provider `anthropic`: the key `claude` is not set"),
            "{got}"
        );
        assert!(got.contains("NEXUS_SECRET_CLAUDE"), "{got}");
        Ok(())
    }
}
