//! `nexus serve`: the HTTP API of Nexus over [`nexus_app::Desktop`] (the engine is
//! reached only through `nexus_app`, as from the desktop shell and the CLI), and the
//! editor as a web app.
//!
//! Invariants:
//! - the server binds a loopback address unless [`Config::allow_remote`] is set, and a
//!   non-loopback address needs an API token ([`auth`]): it refuses to start otherwise;
//! - CORS is closed: no response carries `Access-Control-Allow-*`, so pages of other
//!   origins cannot read answers, and JSON bodies (which need a preflight) cannot be
//!   sent from them;
//! - a request body is at most [`Config::body_limit`] bytes (413 beyond);
//! - every failure under `/api` is a JSON [`ApiError`] tagged by `kind`;
//! - the routes and types are described by the OpenAPI document ([`openapi`]).

pub mod api;
pub mod auth;
pub mod callbacks;
mod error;
pub mod hooks;
pub mod hub;
pub mod openapi;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower_http::cors::CorsLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::services::{ServeDir, ServeFile};

pub use error::{ApiError, Error, HttpError};

/// The default address: loopback, port 7878 (the login service's too).
pub const DEFAULT_ADDR: &str = nexus_app::service::DEFAULT_BIND;

/// The default request body limit, bytes (1 MiB: a workflow is a few kilobytes).
pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

/// How `nexus serve` runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen (port 0: any free port; the bound address is passed to `ready`).
    pub addr: SocketAddr,
    /// Allows a non-loopback address (then `token` is required).
    pub allow_remote: bool,
    /// The API token (kept only as its SHA-256); required on a non-loopback address,
    /// optional on loopback (then every request needs it too).
    pub token: Option<String>,
    /// The built editor (`ui/dist`), served at `/`; `None` serves the API only.
    pub editor: Option<PathBuf>,
    /// The largest request body accepted, bytes.
    pub body_limit: usize,
    /// The address others reach this server at (`https://nexus.example.org`), the base
    /// of runs' callback URLs; `None`: `http://<bound address>`.
    pub public_url: Option<String>,
}

impl Config {
    /// Checks the address and token rules (see the module header) and returns the
    /// token's digest.
    ///
    /// # Errors
    /// [`Error::RemoteNotAllowed`], [`Error::TokenRequired`], [`Error::WeakToken`],
    /// [`Error::NoEditor`].
    pub fn check(&self) -> Result<Option<auth::TokenHash>, Error> {
        let token = self
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        if !self.addr.ip().is_loopback() {
            if !self.allow_remote {
                return Err(Error::RemoteNotAllowed { addr: self.addr });
            }
            if token.is_none() {
                return Err(Error::TokenRequired {
                    addr: self.addr,
                    min: auth::MIN_TOKEN_CHARS,
                });
            }
        }
        if let Some(t) = token
            && t.chars().count() < auth::MIN_TOKEN_CHARS
        {
            return Err(Error::WeakToken {
                len: t.chars().count(),
                min: auth::MIN_TOKEN_CHARS,
            });
        }
        if let Some(dir) = &self.editor
            && !dir.join("index.html").is_file()
        {
            return Err(Error::NoEditor {
                path: dir.display().to_string(),
            });
        }
        Ok(token.map(auth::TokenHash::of))
    }
}

/// The whole application: `/api/...` (checked by [`auth::check`]), the OpenAPI
/// document at `/api/openapi.json`, and the editor's files at `/` when `editor` is set.
pub fn router(
    desktop: Arc<nexus_app::Desktop>,
    token: Option<auth::TokenHash>,
    editor: Option<PathBuf>,
    body_limit: usize,
    triggers: Option<(Arc<nexus_app::triggers::Triggers>, Arc<hub::Hub>)>,
) -> Router {
    let (triggers, hub) = match triggers {
        Some((t, hub)) => (Some(t), hub),
        None => (None, Arc::new(hub::Hub::default())),
    };
    let state = api::AppState {
        desktop,
        hub,
        body_limit,
        token_required: token.is_some(),
        triggers,
    };
    let access = auth::Access { token };
    let api = Router::new()
        .route("/health", get(api::health))
        .route("/openapi.json", get(openapi_document))
        .route("/settings", get(api::settings))
        .route("/workflows", get(api::list_workflows))
        .route(
            "/workflows/{name}",
            get(api::read_workflow).put(api::save_workflow),
        )
        .route(
            "/workflows/{name}/tools/{tool}/functions",
            get(api::tool_functions),
        )
        .route("/validate", post(api::validate))
        .route("/templates", get(api::templates))
        .route("/templates/{name}/use", post(api::use_template))
        .route("/runs", get(api::list_runs).post(api::start_run))
        .route("/runs/{id}", get(api::get_run))
        .route("/runs/{id}/pause", post(api::pause_run))
        .route("/runs/{id}/resume", post(api::resume_run))
        .route("/runs/{id}/cancel", post(api::cancel_run))
        .route("/runs/{id}/events", get(api::run_events))
        .route("/runs/{id}/events/{name}", post(callbacks::post_event))
        .route("/runs/{id}/steps/{step}/answer", post(api::answer))
        .route("/questions", get(api::questions))
        .route("/models", get(api::models))
        .route("/breakers", get(api::breakers))
        .route("/triggers", get(api::list_triggers))
        .route("/metrics", get(api::metrics))
        .fallback(api::no_route)
        .method_not_allowed_fallback(api::wrong_method)
        .layer(axum::middleware::from_fn_with_state(
            access.clone(),
            auth::check,
        ));
    // Prometheus' default path, checked like the API.
    let metrics = Router::new()
        .route("/metrics", get(api::metrics))
        .route_layer(axum::middleware::from_fn_with_state(access, auth::check));
    let mut app = Router::new()
        .nest("/api", api)
        .merge(metrics)
        .route("/hooks/{*path}", axum::routing::any(hooks::call))
        .route("/callbacks/{id}/{key}/{name}", post(callbacks::callback));
    if let Some(dir) = editor {
        // Unknown paths get the editor's page (it has one route).
        let index = ServeFile::new(dir.join("index.html"));
        app = app.fallback_service(ServeDir::new(dir).fallback(index));
    } else {
        app = app.fallback(no_editor);
    }
    app.layer(RequestBodyLimitLayer::new(body_limit))
        .layer(DefaultBodyLimit::max(body_limit))
        // No origin is allowed: a preflight gets no `Access-Control-Allow-*` header.
        .layer(CorsLayer::new())
        // Outermost, so it sees the 413s of the limit layers too.
        .layer(axum::middleware::map_response_with_state(
            state.clone(),
            too_large,
        ))
        .with_state(state)
}

/// Arms the workflows folder's triggers on the system clock, webhooks included; the
/// events of the runs they start are kept in `hub` like those started over the API.
pub fn start_triggers(
    desktop: &Arc<nexus_app::Desktop>,
    hub: &Arc<hub::Hub>,
) -> nexus_app::triggers::Triggers {
    use nexus_app::triggers::{Hosting, SinkFactory, SystemClock, Triggers};
    let hub = Arc::clone(hub);
    let sinks: SinkFactory = Arc::new(move || {
        let log = Arc::new(hub::RunLog::default());
        let hub = Arc::clone(&hub);
        let sink: Arc<dyn nexus_app::engine::EventSink> = Arc::clone(&log) as _;
        let stored: Box<dyn FnOnce(&str) + Send> = Box::new(move |run_id: &str| {
            hub.register(run_id, log);
        });
        (sink, stored)
    });
    Triggers::start(
        Arc::clone(desktop),
        Arc::new(SystemClock),
        Hosting { webhooks: true },
        Some(sinks),
    )
}

async fn openapi_document() -> Response {
    match openapi::json() {
        Ok(text) => ([(header::CONTENT_TYPE, "application/json")], text).into_response(),
        Err(e) => ApiError::App(nexus_app::Error::Internal {
            message: e.to_string(),
        })
        .into_response(),
    }
}

async fn no_editor() -> Response {
    (
        StatusCode::NOT_FOUND,
        "This `nexus serve` serves the API only (/api/openapi.json describes it). To use the editor in a browser, build it (`cd ui && npm run build`) and start `nexus serve --editor ui/dist`.\n",
    )
        .into_response()
}

/// Every 413 (from the body limit layers or an extractor) as a JSON [`HttpError`]
/// naming the limit.
async fn too_large(State(s): State<api::AppState>, response: Response) -> Response {
    if response.status() != StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    ApiError::Http(HttpError::PayloadTooLarge {
        message: format!(
            "the request body is larger than this server's limit of {} bytes; send a smaller workflow or fewer inputs",
            s.body_limit
        ),
        limit_bytes: s.body_limit as u64,
    })
    .into_response()
}

/// Serves `desktop` with `config` until the process is stopped (Ctrl-C); calls `ready`
/// with the bound address once it listens. Runs in flight when the process stops are
/// interrupted, and continued by `POST /api/runs/{id}/resume` after a restart.
///
/// # Errors
/// [`Config::check`]'s errors; [`Error::Bind`]; [`Error::Serve`].
pub async fn serve(
    desktop: nexus_app::Desktop,
    config: Config,
    ready: impl FnOnce(SocketAddr),
) -> Result<(), Error> {
    let token = config.check()?;
    let listener = tokio::net::TcpListener::bind(config.addr)
        .await
        .map_err(|e| Error::Bind {
            addr: config.addr,
            message: e.to_string(),
        })?;
    let bound = listener.local_addr().map_err(|e| Error::Bind {
        addr: config.addr,
        message: e.to_string(),
    })?;
    let base = config
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{bound}"));
    desktop
        .set_callback_base(&base)
        .await
        .map_err(|e| Error::Serve {
            message: format!("cannot make the callback key: {e}"),
        })?;
    let desktop = Arc::new(desktop);
    let hub = Arc::new(hub::Hub::default());
    let triggers = Arc::new(start_triggers(&desktop, &hub));
    // Ready only once the folder's triggers are armed (or listed with their problems).
    triggers.first_scan().await;
    let app = router(
        desktop,
        token,
        config.editor,
        config.body_limit,
        Some((triggers, hub)),
    );
    ready(bound);
    // Open event streams would hold a graceful shutdown forever: Ctrl-C stops at once.
    tokio::select! {
        served = axum::serve(listener, app) => served.map_err(|e| Error::Serve { message: e.to_string() }),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
