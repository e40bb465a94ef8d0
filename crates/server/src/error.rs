//! The errors of `nexus-server`: [`Error`] when `nexus serve` cannot start or stops, and
//! [`ApiError`], the JSON body of every failed HTTP request. Both app errors
//! ([`nexus_app::Error`]) and HTTP-layer errors ([`HttpError`]) are tagged by `kind`, so
//! a client switches on one field (`{"kind":"invalid_workflow","diagnostics":[...]}`,
//! `{"kind":"unauthorized","message":"..."}`).

use std::net::SocketAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// Why `nexus serve` could not start, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A non-loopback address was given without `--allow-remote`.
    #[error(
        "`{addr}` is not a loopback address: other machines could reach the API; pass --allow-remote (with an API token in NEXUS_API_TOKEN) to serve on it, or bind 127.0.0.1"
    )]
    RemoteNotAllowed {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// A non-loopback address was allowed but no API token was given.
    #[error(
        "serving on `{addr}` needs an API token: set NEXUS_API_TOKEN (at least {min} characters) before `nexus serve --allow-remote`"
    )]
    TokenRequired {
        /// The address asked for.
        addr: SocketAddr,
        /// The shortest token accepted, characters.
        min: usize,
    },
    /// The API token is shorter than [`crate::auth::MIN_TOKEN_CHARS`].
    #[error(
        "the API token has {len} characters; give at least {min} (e.g. `openssl rand -hex 32`)"
    )]
    WeakToken {
        /// Its length, characters.
        len: usize,
        /// The shortest accepted.
        min: usize,
    },
    /// The address could not be bound (in use, not this machine's).
    #[error("cannot listen on {addr}: {message}; pick another --bind address or port")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's message.
        message: String,
    },
    /// The editor's folder (`--ui`) has no `index.html`.
    #[error(
        "`{path}` has no index.html; build the editor with `cd ui && npm run build`, or leave out --ui"
    )]
    NoEditor {
        /// The folder given.
        path: String,
    },
    /// Serving failed after it started.
    #[error("the server stopped: {message}")]
    Serve {
        /// What failed.
        message: String,
    },
}

/// An HTTP-layer failure (before or around the app): bad credentials, a malformed or
/// oversized body, an unknown route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum HttpError {
    /// No API token, or the wrong one (401). Send `Authorization: Bearer <token>` (the
    /// event stream also takes `?token=`).
    Unauthorized {
        /// What to send.
        message: String,
    },
    /// The `Host` header is not a loopback name on a server without an API token (403):
    /// a page on another site reached this server through DNS rebinding.
    ForbiddenHost {
        /// Which host and what works.
        message: String,
    },
    /// The request is malformed (400): not JSON, a missing field, a bad parameter.
    BadRequest {
        /// What is wrong, naming the field.
        message: String,
    },
    /// A run was asked for without a workflow: neither `file` nor `text` (422).
    NoWorkflow {
        /// What to give.
        message: String,
    },
    /// The body needs `Content-Type: application/json` (415).
    UnsupportedMediaType {
        /// What to send.
        message: String,
    },
    /// The body is larger than the server accepts (413).
    PayloadTooLarge {
        /// The limit and what to do.
        message: String,
        /// The limit, bytes.
        limit_bytes: u64,
    },
    /// No such route, workflow or template (404).
    NotFound {
        /// What was not found.
        message: String,
    },
    /// The route exists but not with this method (405).
    MethodNotAllowed {
        /// Which methods it takes.
        message: String,
    },
}

/// The JSON body of every failed request: an app error or an HTTP-layer error, both
/// tagged by `kind`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ApiError {
    /// What the app refused (an invalid workflow, an unknown run, ...).
    App(nexus_app::Error),
    /// What the HTTP layer refused.
    Http(HttpError),
}

impl From<nexus_app::Error> for ApiError {
    fn from(e: nexus_app::Error) -> Self {
        ApiError::App(e)
    }
}

impl From<HttpError> for ApiError {
    fn from(e: HttpError) -> Self {
        ApiError::Http(e)
    }
}

impl ApiError {
    /// A 400 naming what is wrong.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::Http(HttpError::BadRequest {
            message: message.into(),
        })
    }

    /// A 404 naming what is missing.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::Http(HttpError::NotFound {
            message: message.into(),
        })
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        use nexus_app::Error as E;
        match self {
            ApiError::App(e) => match e {
                E::InvalidWorkflow { .. } | E::InvalidInputs { .. } | E::Guardrails { .. } => {
                    StatusCode::UNPROCESSABLE_ENTITY
                }
                E::BadPath { .. } => StatusCode::BAD_REQUEST,
                E::InvalidEvent { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                E::TooManyEvents { .. } => StatusCode::TOO_MANY_REQUESTS,
                E::UnknownRun { .. } => StatusCode::NOT_FOUND,
                E::NotActive { .. } => StatusCode::CONFLICT,
                E::Provider { .. } | E::ToolFailed { .. } => StatusCode::BAD_GATEWAY,
                E::UnknownTool { .. } => StatusCode::NOT_FOUND,
                E::ToolNotPermitted { .. } => StatusCode::FORBIDDEN,
                E::Io { .. }
                | E::Store { .. }
                | E::Keychain { .. }
                | E::Internal { .. }
                | E::Config { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Http(e) => match e {
                HttpError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
                HttpError::ForbiddenHost { .. } => StatusCode::FORBIDDEN,
                HttpError::BadRequest { .. } => StatusCode::BAD_REQUEST,
                HttpError::NoWorkflow { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                HttpError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
                HttpError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                HttpError::NotFound { .. } => StatusCode::NOT_FOUND,
                HttpError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self)).into_response()
    }
}
