//! Events for runs' `event` steps: `POST /api/runs/{id}/events/{name}` (checked by the
//! API token like the rest of `/api`) and a run's callback URL,
//! `POST /callbacks/{id}/{key}/{name}` (outside `/api`: the key in the URL is the
//! credential, as with n8n's `$execution.resumeUrl`, so a third party needs only the
//! URL it was given). See [`nexus_app::events`].
//!
//! A callback's body is JSON when its `Content-Type` says so (a JSON type or `+json`),
//! otherwise its text (UTF-8) becomes a JSON string; an empty body is `null`. Answers:
//! `202` with the stored event, or a JSON error tagged by `kind` (400 a body that is not
//! what its type says, 404 no such run or a wrong key, 409 the run finished, 413 over
//! the body limit, 422 a bad name, 429 too many events waiting).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use nexus_app::events::PostedEventView;

use crate::api::{ApiResult, AppState, Body, Param};
use crate::error::ApiError;

/// Posts event `name` to run `id`; the run's `event` steps waiting for `name` take it.
#[utoipa::path(post, path = "/api/runs/{id}/events/{name}", tag = "runs",
    params(("id" = String, Path, description = "The run's full id"),
        ("name" = String, Path, description = "The event's name (the step's `event`)")),
    request_body(content = serde_json::Value, description = "The event's body, any JSON: the step's output"),
    responses((status = 202, body = PostedEventView, description = "Stored; a waiting step takes it"),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError), (status = 413, body = ApiError),
        (status = 415, body = ApiError), (status = 422, body = ApiError),
        (status = 429, body = ApiError)))]
pub async fn post_event(
    State(s): State<AppState>,
    Param((id, name)): Param<(String, String)>,
    Body(body): Body<serde_json::Value>,
) -> ApiResult<(StatusCode, axum::Json<PostedEventView>)> {
    let posted = s.desktop.post_event(&id, &name, &body).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(posted)))
}

/// A run's callback URL: posts event `name` to run `id` when `key` is the run's key.
#[utoipa::path(post, path = "/callbacks/{id}/{key}/{name}", tag = "runs",
    params(("id" = String, Path, description = "The run's full id"),
        ("key" = String, Path, description = "The run's callback key (in `{{ run.callback_url }}`)"),
        ("name" = String, Path, description = "The event's name")),
    request_body(content = serde_json::Value, description = "JSON, or any text (kept as a JSON string)"),
    responses((status = 202, body = PostedEventView, description = "Stored; a waiting step takes it"),
        (status = 400, body = ApiError), (status = 404, body = ApiError),
        (status = 409, body = ApiError), (status = 413, body = ApiError),
        (status = 422, body = ApiError), (status = 429, body = ApiError)),
    security(()))]
pub async fn callback(
    State(s): State<AppState>,
    Param((id, key, name)): Param<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, axum::Json<PostedEventView>)> {
    let value = body_value(&headers, &body)?;
    let posted = s.desktop.post_callback(&id, &key, &name, &value).await?;
    Ok((StatusCode::ACCEPTED, axum::Json(posted)))
}

/// The JSON value of a callback's body (see the module header).
fn body_value(headers: &HeaderMap, body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.is_empty() {
        return Ok(serde_json::Value::Null);
    }
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .is_some_and(|m| m == "application/json" || m.ends_with("+json"));
    if json {
        return serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the body says it is JSON but is not: {e}"))
        });
    }
    match std::str::from_utf8(body) {
        Ok(text) => Ok(serde_json::Value::String(text.to_string())),
        Err(e) => Err(ApiError::bad_request(format!(
            "the body is neither JSON (`Content-Type: application/json`) nor UTF-8 text: {e}"
        ))),
    }
}
