//! The one error type of `nexus-app`. It crosses the desktop app's IPC as JSON tagged by
//! `kind`, so the UI can switch on it (`{"kind":"invalid_workflow","diagnostics":[...]}`).

use nexus_engine::Diagnostic;
use serde::Serialize;

/// What went wrong in a desktop operation.
#[derive(Debug, thiserror::Error, Serialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Error {
    /// The workflow text does not parse or validate; each diagnostic names its place
    /// (line, column, step, field) and a fix.
    #[error("the workflow is not valid: {}", first(.diagnostics))]
    InvalidWorkflow {
        /// Every problem found.
        diagnostics: Vec<Diagnostic>,
    },
    /// The inputs given for a run are missing or of the wrong type.
    #[error("the run's inputs are not valid: {}", first(.diagnostics))]
    InvalidInputs {
        /// Every problem found, each naming the input.
        diagnostics: Vec<Diagnostic>,
    },
    /// A path outside the workflows folder, or not a workflow file name.
    #[error("`{path}` cannot be used: {reason}")]
    BadPath {
        /// The path as given.
        path: String,
        /// Why, and what would work.
        reason: String,
    },
    /// Reading or writing a file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file or folder.
        path: String,
        /// The operating system's message.
        message: String,
    },
    /// The run database failed (the runs already stored are kept).
    #[error("the run database failed: {message}")]
    Store {
        /// The database's message.
        message: String,
    },
    /// No run has this id (or the prefix is ambiguous).
    #[error("no run `{run_id}`: {message}")]
    UnknownRun {
        /// The id or prefix as given.
        run_id: String,
        /// Why it did not resolve.
        message: String,
    },
    /// A run or step named in the request is not active (finished, or never started).
    #[error("{message}")]
    NotActive {
        /// What is not active.
        message: String,
    },
    /// A model provider failed (Ollama unreachable, a pull refused).
    #[error("{message}")]
    Provider {
        /// The error's class in the taxonomy (`unavailable`, `model_not_found`, ...).
        class: String,
        /// The provider's message.
        message: String,
    },
    /// The OS keychain refused to store, read or delete a key.
    #[error("the keychain failed: {message}")]
    Keychain {
        /// The keychain's message.
        message: String,
    },
    /// An operation stopped before it finished (its worker thread panicked or was shut
    /// down); nothing was half-written, saves are atomic.
    #[error("the operation stopped before it finished: {message}")]
    Internal {
        /// What stopped.
        message: String,
    },
    /// The user's model catalog (`models.yaml`) is not valid.
    #[error("{message}")]
    Config {
        /// What is wrong, with the file's place.
        message: String,
    },
    /// An event posted to a run was refused: a name that cannot name an event.
    #[error("{message}")]
    InvalidEvent {
        /// What is wrong and what would work.
        message: String,
    },
    /// A run has as many events waiting for its `event` steps as it may keep
    /// ([`nexus_store::MAX_OPEN_EVENTS`]); nothing was stored.
    #[error("{message}")]
    TooManyEvents {
        /// Which run, and how many wait.
        message: String,
    },
    /// The workflow's guardrails refused the run before it started: an input matched a
    /// `block` rule (nothing was stored), or the rules do not compile.
    #[error("{message}")]
    Guardrails {
        /// Which input or rule, and what to change (never the text itself).
        message: String,
    },
    /// The workflow has no such tool, or it is not an `mcp` tool.
    #[error("{message}")]
    UnknownTool {
        /// The tool's name as given.
        tool: String,
        /// What the workflow has.
        message: String,
    },
    /// The tool starts a program on this machine and the user has not given it
    /// permission (the permission a run asks for, remembered for the workflow file).
    #[error("{message}")]
    ToolNotPermitted {
        /// The tool's name.
        tool: String,
        /// The program it would start, as an argv.
        command: Vec<String>,
        /// How to give the permission.
        message: String,
    },
    /// The tool's server could not be started or reached, or did not list its tools.
    #[error("{message}")]
    ToolFailed {
        /// The tool's name.
        tool: String,
        /// What failed.
        message: String,
    },
}

impl From<nexus_engine::DiscoverError> for Error {
    fn from(e: nexus_engine::DiscoverError) -> Self {
        use nexus_engine::DiscoverError as D;
        let message = e.to_string();
        match e {
            D::UnknownTool(_) => Error::UnknownTool {
                tool: String::new(),
                message,
            },
            D::NotPermitted { tool, command } => Error::ToolNotPermitted {
                tool,
                command,
                message,
            },
            D::Failed { tool, .. } => Error::ToolFailed { tool, message },
        }
    }
}

fn first(diags: &[Diagnostic]) -> String {
    match diags {
        [] => "no details".to_string(),
        [one] => one.to_string(),
        [one, rest @ ..] => format!("{one} (and {} more)", rest.len()),
    }
}

impl From<nexus_store::Error> for Error {
    fn from(e: nexus_store::Error) -> Self {
        match e {
            nexus_store::Error::NotFound(id) => Error::UnknownRun {
                run_id: id.clone(),
                message: "not in the run database".to_string(),
            },
            nexus_store::Error::Ambiguous(id) => Error::UnknownRun {
                run_id: id.clone(),
                message: "the prefix matches several runs; give more characters".to_string(),
            },
            e @ nexus_store::Error::TooManyEvents { .. } => Error::TooManyEvents {
                message: e.to_string(),
            },
            other => Error::Store {
                message: other.to_string(),
            },
        }
    }
}

impl From<nexus_engine::ProviderError> for Error {
    fn from(e: nexus_engine::ProviderError) -> Self {
        Error::Provider {
            class: e.kind.as_str().to_string(),
            message: e.message,
        }
    }
}

impl From<keyring::Error> for Error {
    fn from(e: keyring::Error) -> Self {
        Error::Keychain {
            message: e.to_string(),
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
