//! `/hooks/<path>`: the webhook triggers of the workflows folder (see
//! [`nexus_app::triggers`]). Outside `/api`: a hook is checked by its own token or
//! signature, never by the API token, so a sender such as GitHub needs only the hook's
//! secret.
//!
//! Answers: `202` with `{"run_id"}` (`respond: accepted`, or `respond: wait` when the run
//! outlasts `wait_ms`), `200` with the run's status and outputs (`respond: wait`), or a
//! JSON error tagged by `kind`: 400 bad body, 401 bad token or signature, 404 no such
//! hook, 405 wrong method (`Allow`), 413 body over the limit, 422 inputs that do not
//! validate, 429 over the rate (`Retry-After`, seconds), 503 secret not configured.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nexus_app::engine::workflow::Respond;
use nexus_app::triggers::{HookCall, HookError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::AppState;

/// What a hook call started.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookAnswer {
    /// The run started.
    pub run_id: String,
    /// `running` (`202`), or how it ended (`200`, `respond: wait`).
    pub status: String,
    /// The run's outputs once it ended (`respond: wait`).
    pub outputs: Option<serde_json::Value>,
}

/// Calls the webhook trigger at `/hooks/{path}`: checks the call, starts the run with the
/// inputs the body gives, answers at once or with the outputs.
#[utoipa::path(post, path = "/hooks/{path}", tag = "triggers",
    params(("path" = String, Path, description = "The trigger's `path`, e.g. `github/push`")),
    request_body(content = serde_json::Value, description = "A JSON object (the inputs, or what the trigger's `inputs` templates read as `body`)"),
    responses(
        (status = 200, body = HookAnswer, description = "The run ended (`respond: wait`)"),
        (status = 202, body = HookAnswer, description = "The run started"),
        (status = 400, body = HookError), (status = 401, body = HookError),
        (status = 404, body = HookError), (status = 405, body = HookError),
        (status = 422, body = HookError), (status = 429, body = HookError),
        (status = 503, body = HookError)),
    security(()))]
pub async fn call(
    State(s): State<AppState>,
    method: Method,
    Path(path): Path<String>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(triggers) = s.triggers.clone() else {
        return refuse(HookError::NotFound {
            message: "this server runs no triggers".into(),
        });
    };
    let header_text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let signature = triggers
        .webhook(&path)
        .and_then(|w| w.signature_header())
        .and_then(|h| header_text(&h));
    let query = match query {
        Ok(Query(q)) => q,
        Err(e) => {
            return refuse(HookError::BadBody {
                message: format!("the query string cannot be read: {e}"),
            });
        }
    };
    let call = HookCall {
        method: method.to_string(),
        authorization: header_text(header::AUTHORIZATION.as_str()),
        signature,
        body: body.to_vec(),
        query,
        host: header_text(header::HOST.as_str()),
    };
    let started = match triggers.call_webhook(&path, call).await {
        Ok(s) => s,
        Err(e) => return refuse(e),
    };
    let running = |run_id: String| {
        let answer = HookAnswer {
            run_id,
            status: "running".into(),
            outputs: None,
        };
        (StatusCode::ACCEPTED, axum::Json(answer)).into_response()
    };
    if started.respond == Respond::Accepted {
        return running(started.run_id);
    }
    let wait = Duration::from_millis(started.wait_ms);
    let Some(status) = triggers.wait_finished(&started.run_id, wait).await else {
        return running(started.run_id);
    };
    let outputs = s
        .desktop
        .get_run(&started.run_id)
        .await
        .ok()
        .and_then(|r| r.outputs);
    let answer = HookAnswer {
        run_id: started.run_id,
        status: status.as_str().to_string(),
        outputs,
    };
    (StatusCode::OK, axum::Json(answer)).into_response()
}

/// The status and headers of a refused call.
fn refuse(e: HookError) -> Response {
    let status = match &e {
        HookError::NotFound { .. } => StatusCode::NOT_FOUND,
        HookError::WrongMethod { .. } => StatusCode::METHOD_NOT_ALLOWED,
        HookError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
        HookError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        HookError::BadBody { .. } => StatusCode::BAD_REQUEST,
        HookError::InvalidInputs { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        HookError::NotConfigured { .. } => StatusCode::SERVICE_UNAVAILABLE,
        HookError::Start { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut extra = HeaderMap::new();
    match &e {
        HookError::RateLimited { retry_after_s, .. } => {
            extra.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_s));
        }
        HookError::WrongMethod { allowed, .. } => {
            if let Ok(v) = HeaderValue::from_str(allowed) {
                extra.insert(header::ALLOW, v);
            }
        }
        _ => {}
    }
    (status, extra, axum::Json(e)).into_response()
}
