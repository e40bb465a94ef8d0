//! The HTTP API's handlers, one per route, each a thin call into [`nexus_app::Desktop`]
//! (the engine is reached only through `nexus_app`). Every route and type is in the
//! OpenAPI document ([`crate::openapi::ApiDoc`]); every failure is an [`ApiError`].

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{Stream, StreamExt};
use nexus_app::desktop::{BreakerView, ModelsView, PendingQuestion, Template};
use nexus_app::engine::human::HumanDecision;
use nexus_app::engine::{Diagnostic, EventSink};
use nexus_app::runs::Control;
use nexus_app::store::{RunSummary, StoredRun};
use nexus_app::{Desktop, RunRequest, Settings};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::{ApiError, HttpError};
use crate::hub::{Hub, RunLog};

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The app's operations (workflows folder, run database, engine, questions).
    pub desktop: Arc<Desktop>,
    /// Event logs of the runs started here.
    pub hub: Arc<Hub>,
    /// The largest request body accepted, bytes.
    pub body_limit: usize,
    /// Whether requests need the API token.
    pub token_required: bool,
    /// The workflows folder's triggers (`None`: this server runs none).
    pub triggers: Option<Arc<nexus_app::triggers::Triggers>>,
}

/// A JSON body whose rejections are [`ApiError`]s.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Body<T>(pub T);

/// Path parameters whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Param<T>(pub T);

/// A query string whose rejections are [`ApiError`]s.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct QueryOf<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        match r.status() {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::Http(HttpError::PayloadTooLarge {
                message: "the request body is too large; send a smaller workflow or fewer inputs"
                    .to_string(),
                limit_bytes: 0,
            }),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ApiError::Http(HttpError::UnsupportedMediaType {
                message: "send the body as JSON with `Content-Type: application/json`".to_string(),
            }),
            _ => ApiError::bad_request(format!("the JSON body is not valid: {}", r.body_text())),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::bad_request(format!("the path is not valid: {}", r.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::bad_request(format!("the query string is not valid: {}", r.body_text()))
    }
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

/// The rule for workflow and template names in paths (a regular expression, as stated
/// in the OpenAPI document): a file name without a folder, of ASCII letters, digits,
/// `.`, `_` and `-`, starting with a letter or digit, ending in `.yaml` or `.yml`.
pub const NAME_PATTERN: &str = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(yaml|yml)$";

/// Checks `name` against [`NAME_PATTERN`].
fn check_name(name: &str) -> ApiResult<()> {
    let stem = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"));
    let ok = stem.is_some_and(|stem| {
        stem.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
            && stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    });
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "`{name}` is not a workflow file name: use letters, digits, `.`, `_` and `-`, ending in `.yaml` or `.yml` (`my-flow.yaml`)"
        )))
    }
}

/// `GET /api/health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// Always `nexus`: the editor checks it to know it was loaded from `nexus serve`.
    pub service: String,
    /// `ok`.
    pub status: String,
    /// The server's version.
    pub version: String,
    /// Whether requests need the API token.
    pub token_required: bool,
}

/// Whether the server is up (no token needed).
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses((status = 200, body = Health)))]
pub async fn health(State(s): State<AppState>) -> axum::Json<Health> {
    axum::Json(Health {
        service: "nexus".to_string(),
        status: "ok".to_string(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        token_required: s.token_required,
    })
}

/// The settings the editor shows (the workflows folder).
#[utoipa::path(get, path = "/api/settings", tag = "workflows",
    responses((status = 200, body = Settings), (status = 401, body = ApiError)))]
pub async fn settings(State(s): State<AppState>) -> axum::Json<Settings> {
    axum::Json(s.desktop.settings())
}

/// The workflow files of the workflows folder, sorted by name.
#[utoipa::path(get, path = "/api/workflows", tag = "workflows",
    responses((status = 200, body = Vec<String>), (status = 500, body = ApiError)))]
pub async fn list_workflows(State(s): State<AppState>) -> ApiResult<axum::Json<Vec<String>>> {
    Ok(axum::Json(
        blocking(move || s.desktop.list_workflows()).await?,
    ))
}

/// A workflow file's text.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WorkflowText {
    /// File name in the workflows folder.
    pub name: String,
    /// The YAML text.
    pub text: String,
}

/// What `PUT /api/workflows/{name}` takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaveWorkflow {
    /// The YAML text, saved as given (an invalid workflow is saved too; see
    /// `diagnostics` in the answer).
    pub text: String,
}

/// The engine's diagnostics for a workflow (empty when it is valid).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Validation {
    /// File name, when it has one.
    pub name: Option<String>,
    /// True when there are no diagnostics.
    pub valid: bool,
    /// Every problem, each with its place (line, column, step, field) and a fix.
    pub diagnostics: Vec<Diagnostic>,
}

/// Reads workflow `name`.
#[utoipa::path(get, path = "/api/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(yaml|yml)$", description = "File name in the workflows folder (`my-flow.yaml`)")),
    responses((status = 200, body = WorkflowText), (status = 400, body = ApiError),
        (status = 404, body = ApiError)))]
pub async fn read_workflow(
    State(s): State<AppState>,
    Param(name): Param<String>,
) -> ApiResult<axum::Json<WorkflowText>> {
    check_name(&name)?;
    let text = blocking(move || {
        if !s.desktop.workflow_exists(&name)? {
            return Ok(Err(ApiError::not_found(format!(
                "no workflow `{name}` in the workflows folder; GET /api/workflows lists them"
            ))));
        }
        s.desktop
            .read_workflow(&name)
            .map(|text| Ok(WorkflowText { name, text }))
    })
    .await??;
    Ok(axum::Json(text))
}

/// Lists the functions of workflow `name`'s `mcp` tool `tool` (connecting to its server
/// once): each with its description, the JSON Schema of its arguments and whether the
/// tool's `allow:` admits it. A stdio server starts only with the permission a run needs
/// (403 `tool_not_permitted` without it, saying how to give it).
#[utoipa::path(get, path = "/api/workflows/{name}/tools/{tool}/functions", tag = "workflows",
    params(
        ("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(yaml|yml)$", description = "File name in the workflows folder (`my-flow.yaml`)"),
        ("tool" = String, Path, description = "The tool's name under the workflow's `tools:`")),
    responses((status = 200, body = nexus_app::discover::ToolFunctions),
        (status = 400, body = ApiError), (status = 403, body = ApiError),
        (status = 404, body = ApiError), (status = 422, body = ApiError),
        (status = 502, body = ApiError)))]
pub async fn tool_functions(
    State(s): State<AppState>,
    Param((name, tool)): Param<(String, String)>,
) -> ApiResult<axum::Json<nexus_app::discover::ToolFunctions>> {
    check_name(&name)?;
    let exists = {
        let (d, name) = (Arc::clone(&s.desktop), name.clone());
        blocking(move || d.workflow_exists(&name)).await?
    };
    if !exists {
        return Err(ApiError::not_found(format!(
            "no workflow `{name}` in the workflows folder; GET /api/workflows lists them"
        )));
    }
    Ok(axum::Json(
        s.desktop.discover_tool_functions(&name, &tool).await?,
    ))
}

/// Saves workflow `name` atomically and answers with its diagnostics.
#[utoipa::path(put, path = "/api/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(yaml|yml)$", description = "File name in the workflows folder (`my-flow.yaml`)")),
    request_body = SaveWorkflow,
    responses((status = 200, body = Validation), (status = 400, body = ApiError),
        (status = 413, body = ApiError), (status = 415, body = ApiError)))]
pub async fn save_workflow(
    State(s): State<AppState>,
    Param(name): Param<String>,
    Body(body): Body<SaveWorkflow>,
) -> ApiResult<axum::Json<Validation>> {
    check_name(&name)?;
    let validation = blocking(move || {
        s.desktop.write_workflow(&name, &body.text)?;
        let diagnostics = s.desktop.validate(&body.text, Some(&name));
        Ok(Validation {
            valid: diagnostics.is_empty(),
            name: Some(name),
            diagnostics,
        })
    })
    .await?;
    Ok(axum::Json(validation))
}

/// What `POST /api/validate` takes.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The YAML text.
    pub text: String,
    /// Its file name, named in the diagnostics.
    #[serde(default)]
    pub file: Option<String>,
}

/// Validates a workflow text (saved or not).
#[utoipa::path(post, path = "/api/validate", tag = "workflows",
    request_body = ValidateRequest,
    responses((status = 200, body = Validation), (status = 400, body = ApiError),
        (status = 413, body = ApiError), (status = 415, body = ApiError)))]
pub async fn validate(
    State(s): State<AppState>,
    Body(body): Body<ValidateRequest>,
) -> ApiResult<axum::Json<Validation>> {
    let validation = blocking(move || {
        let diagnostics = s.desktop.validate(&body.text, body.file.as_deref());
        Ok(Validation {
            valid: diagnostics.is_empty(),
            name: body.file,
            diagnostics,
        })
    })
    .await?;
    Ok(axum::Json(validation))
}

/// The example workflows.
#[utoipa::path(get, path = "/api/templates", tag = "workflows",
    responses((status = 200, body = Vec<Template>)))]
pub async fn templates(State(s): State<AppState>) -> axum::Json<Vec<Template>> {
    axum::Json(s.desktop.templates())
}

/// A template's text, after writing the data files it reads into the workflows folder.
#[utoipa::path(post, path = "/api/templates/{name}/use", tag = "workflows",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(yaml|yml)$", description = "Template file name (`feature-spec.yaml`)")),
    responses((status = 200, body = WorkflowText), (status = 400, body = ApiError),
        (status = 404, body = ApiError)))]
pub async fn use_template(
    State(s): State<AppState>,
    Param(name): Param<String>,
) -> ApiResult<axum::Json<WorkflowText>> {
    check_name(&name)?;
    if !s.desktop.templates().iter().any(|t| t.name == name) {
        return Err(ApiError::not_found(format!(
            "no template `{name}`; GET /api/templates lists them"
        )));
    }
    let text = blocking(move || {
        s.desktop
            .use_template(&name)
            .map(|text| WorkflowText { name, text })
    })
    .await?;
    Ok(axum::Json(text))
}

/// What `POST /api/runs` takes: which workflow, its inputs, and "run from / up to".
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// The workflow's file name in the workflows folder. Its saved text runs when `text`
    /// is absent; `file` inputs are read relative to its folder.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9._-]*\.(yaml|yml)$")]
    pub file: Option<String>,
    /// The workflow text to run (as in the editor, saved or not).
    #[serde(default)]
    pub text: Option<String>,
    /// Input values by name, as text (converted to the declared types).
    #[serde(default)]
    pub inputs: BTreeMap<String, String>,
    /// Run from this step: it and its dependants run, the other steps' outputs are
    /// reused from `reuse` (default: the workflow's latest run).
    #[serde(default)]
    pub from: Option<String>,
    /// The run whose outputs `from` reuses (id or prefix).
    #[serde(default)]
    pub reuse: Option<String>,
    /// Run up to this step: only it and what it needs.
    #[serde(default)]
    pub until: Option<String>,
    /// Ignore the step output cache.
    #[serde(default)]
    pub fresh: bool,
}

/// A run's id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RunId {
    /// The run's full id.
    pub run_id: String,
}

/// Starts a run in the background; answers once the run is stored. Follow it with
/// `GET /api/runs/{id}/events`.
#[utoipa::path(post, path = "/api/runs", tag = "runs",
    request_body = StartRun,
    responses((status = 201, body = RunId), (status = 400, body = ApiError),
        (status = 404, body = ApiError), (status = 409, body = ApiError),
        (status = 413, body = ApiError), (status = 415, body = ApiError),
        (status = 422, body = ApiError)))]
pub async fn start_run(
    State(s): State<AppState>,
    Body(body): Body<StartRun>,
) -> ApiResult<(StatusCode, axum::Json<RunId>)> {
    if let Some(file) = &body.file {
        check_name(file)?;
    }
    let text = match (body.text, &body.file) {
        (Some(text), _) => text,
        (None, Some(file)) => {
            let desktop = Arc::clone(&s.desktop);
            let file = file.clone();
            blocking(move || {
                if !desktop.workflow_exists(&file)? {
                    return Ok(Err(ApiError::not_found(format!(
                        "no workflow `{file}` in the workflows folder; GET /api/workflows lists them"
                    ))));
                }
                desktop.read_workflow(&file).map(Ok)
            })
            .await??
        }
        (None, None) => {
            return Err(ApiError::Http(HttpError::NoWorkflow {
                message:
                    "give `file` (a workflow in the workflows folder) or `text` (a workflow's YAML)"
                        .to_string(),
            }));
        }
    };
    let request = RunRequest {
        text,
        file: body.file,
        inputs: body.inputs,
        from: body.from,
        reuse: body.reuse,
        until: body.until,
        fresh: body.fresh,
    };
    let log = Arc::new(RunLog::default());
    let run_id = s
        .desktop
        .start_run(request, Arc::clone(&log) as Arc<dyn EventSink>)
        .await?;
    s.hub.register(&run_id, log);
    Ok((StatusCode::CREATED, axum::Json(RunId { run_id })))
}

/// `GET /api/runs` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListRuns {
    /// How many runs, newest first (1 to 1000, default 50).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Only the runs a trigger of this kind or name started (`cron`, `webhook`, `file`,
    /// a trigger's `name`); `manual`: the runs a person started.
    pub trigger: Option<String>,
}

/// The latest runs (of this server, the CLI and the desktop app), newest first.
#[utoipa::path(get, path = "/api/runs", tag = "runs", params(ListRuns),
    responses((status = 200, body = Vec<RunSummary>), (status = 400, body = ApiError)))]
pub async fn list_runs(
    State(s): State<AppState>,
    QueryOf(q): QueryOf<ListRuns>,
) -> ApiResult<axum::Json<Vec<RunSummary>>> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit {limit} is out of range; give 1 to 1000"
        )));
    }
    let filter = nexus_app::store::RunFilter { trigger: q.trigger };
    Ok(axum::Json(s.desktop.list_runs_where(limit, &filter).await?))
}

/// The triggers of the workflows folder: what each reacts to, whether it is armed, a
/// cron trigger's next and last fire, and what keeps a trigger from working.
#[utoipa::path(get, path = "/api/triggers", tag = "triggers",
    responses((status = 200, body = Vec<nexus_app::triggers::TriggerView>)))]
pub async fn list_triggers(
    State(s): State<AppState>,
) -> axum::Json<Vec<nexus_app::triggers::TriggerView>> {
    axum::Json(s.triggers.as_ref().map(|t| t.list()).unwrap_or_default())
}

/// Everything stored about a run: every step record (input, output, model and why,
/// tokens, attempts, fallbacks, guardrails), its events, the workflow as run.
#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 200, body = StoredRun), (status = 404, body = ApiError)))]
pub async fn get_run(
    State(s): State<AppState>,
    Param(id): Param<String>,
) -> ApiResult<axum::Json<StoredRun>> {
    Ok(axum::Json(s.desktop.get_run(&id).await?))
}

async fn control(s: &AppState, id: &str, request: Control) -> ApiResult<axum::Json<RunId>> {
    let run_id = s.desktop.control_run(id, request).await?;
    Ok(axum::Json(RunId { run_id }))
}

/// Pauses a running run: steps in flight finish, no new step starts. Works on runs of
/// this server and of other processes (`nexus run`, the desktop app).
#[utoipa::path(post, path = "/api/runs/{id}/pause", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 200, body = RunId), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn pause_run(
    State(s): State<AppState>,
    Param(id): Param<String>,
) -> ApiResult<axum::Json<RunId>> {
    control(&s, &id, Control::Pause).await
}

/// Cancels a running run: steps in flight are stopped; the run ends `cancelled`.
#[utoipa::path(post, path = "/api/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 200, body = RunId), (status = 404, body = ApiError),
        (status = 409, body = ApiError)))]
pub async fn cancel_run(
    State(s): State<AppState>,
    Param(id): Param<String>,
) -> ApiResult<axum::Json<RunId>> {
    control(&s, &id, Control::Cancel).await
}

/// Continues a run: a paused run goes on; an interrupted run (its process died, e.g.
/// this server was killed) is continued here with its completed steps kept, its events
/// on `GET /api/runs/{id}/events`.
#[utoipa::path(post, path = "/api/runs/{id}/resume", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 200, body = RunId), (status = 404, body = ApiError),
        (status = 409, body = ApiError), (status = 422, body = ApiError)))]
pub async fn resume_run(
    State(s): State<AppState>,
    Param(id): Param<String>,
) -> ApiResult<axum::Json<RunId>> {
    let log = Arc::new(RunLog::default());
    let run_id = s
        .desktop
        .resume_run(&id, Arc::clone(&log) as Arc<dyn EventSink>)
        .await?;
    s.hub.register(&run_id, log);
    Ok(axum::Json(RunId { run_id }))
}

/// One message of a run's event stream (Server-Sent Events), as the OpenAPI 3.1
/// convention for `text/event-stream` describes it: the fields of one SSE event.
#[derive(Debug, ToSchema)]
pub struct RunEventMessage {
    /// The event's index in the run's log, from 0 (send the last one seen back as
    /// `Last-Event-ID` to continue after it).
    pub id: String,
    /// The SSE event name: always `message`.
    pub event: Option<String>,
    /// The engine event as JSON (the `Event` schema, tagged by `type`).
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// A run's events as Server-Sent Events: each `data:` is one engine event (JSON tagged
/// by `type`), its `id:` the event's index; the stream ends after `run_finished`. A
/// run of this server streams from its start (tokens included) or after
/// `Last-Event-ID`; another run replays its stored events (no tokens).
#[utoipa::path(get, path = "/api/runs/{id}/events", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix"),
        ("Last-Event-ID" = Option<String>, Header, description = "Resume after this event index"),
        ("token" = Option<String>, Query, description = "The API token, for clients that cannot send headers (EventSource)")),
    responses((status = 200, content_type = "text/event-stream", body = RunEventMessage),
        (status = 404, body = ApiError)))]
pub async fn run_events(
    State(s): State<AppState>,
    Param(id): Param<String>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>> {
    let from = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok())
        .map_or(0, |i| i + 1);
    let log = match s.hub.get(&id) {
        Some(log) => log,
        None => {
            let run = s.desktop.get_run(&id).await?;
            match s.hub.get(&run.run_id) {
                Some(log) => log,
                None => Arc::new(RunLog::finished(run.events)),
            }
        }
    };
    let stream = log.subscribe(from).map(|(i, event)| {
        let sse = SseEvent::default().id(i.to_string());
        Ok(sse
            .json_data(&event)
            .unwrap_or_else(|e| SseEvent::default().comment(format!("unencodable event: {e}"))))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

/// The questions runs of this server wait on (approvals, guardrail approvals, failed
/// steps asking what to do).
#[utoipa::path(get, path = "/api/questions", tag = "questions",
    responses((status = 200, body = Vec<PendingQuestion>)))]
pub async fn questions(State(s): State<AppState>) -> axum::Json<Vec<PendingQuestion>> {
    axum::Json(s.desktop.pending_questions())
}

/// Answers the question step `step` of run `id` waits on.
#[utoipa::path(post, path = "/api/runs/{id}/steps/{step}/answer", tag = "questions",
    params(("id" = String, Path, description = "The run's full id"),
        ("step" = String, Path, description = "The step's id")),
    request_body = HumanDecision,
    responses((status = 204, description = "The run goes on"), (status = 400, body = ApiError),
        (status = 409, body = ApiError), (status = 413, body = ApiError),
        (status = 415, body = ApiError)))]
pub async fn answer(
    State(s): State<AppState>,
    Param((id, step)): Param<(String, String)>,
    Body(decision): Body<HumanDecision>,
) -> ApiResult<StatusCode> {
    s.desktop.answer(&id, &step, decision)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Providers, their models, the selector's order, the embedded model, key status.
#[utoipa::path(get, path = "/api/models", tag = "models",
    responses((status = 200, body = ModelsView), (status = 500, body = ApiError)))]
pub async fn models(State(s): State<AppState>) -> ApiResult<axum::Json<ModelsView>> {
    Ok(axum::Json(s.desktop.models().await?))
}

/// Every circuit breaker with its state now.
#[utoipa::path(get, path = "/api/breakers", tag = "models",
    responses((status = 200, body = Vec<BreakerView>), (status = 500, body = ApiError)))]
pub async fn breakers(State(s): State<AppState>) -> ApiResult<axum::Json<Vec<BreakerView>>> {
    Ok(axum::Json(s.desktop.breakers().await?))
}

/// The metrics of the runs this server started (counts by status, step durations,
/// tokens and cost by model, retries, fallbacks by rung, time to first token, breaker
/// states, runs in flight, open questions), in the Prometheus text format 0.0.4 for a
/// Prometheus scrape (`metrics_path: /metrics`, with `authorization: {credentials:
/// <token>}` when the server has a token). Also at `/api/metrics`.
#[utoipa::path(get, path = "/metrics", tag = "models",
    responses((status = 200, content_type = "text/plain", body = String,
        description = "Prometheus text format 0.0.4"),
        (status = 500, body = ApiError)))]
pub async fn metrics(State(s): State<AppState>) -> ApiResult<axum::response::Response> {
    use axum::response::IntoResponse;
    let text = s.desktop.metrics_text().await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            nexus_app::metrics::CONTENT_TYPE,
        )],
        text,
    )
        .into_response())
}

/// The 404 of an unknown API route.
pub async fn no_route(axum::extract::OriginalUri(uri): axum::extract::OriginalUri) -> ApiError {
    ApiError::not_found(format!(
        "no API route `{}`; GET /api/openapi.json lists them",
        uri.path()
    ))
}

/// The 405 of a known route called with another method.
pub async fn wrong_method(
    method: axum::http::Method,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
) -> Response {
    ApiError::Http(HttpError::MethodNotAllowed {
        message: format!(
            "`{}` does not take {method}; GET /api/openapi.json lists its methods",
            uri.path()
        ),
    })
    .into_response()
}

/// Runs `f` (file system work) on a blocking thread.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> nexus_app::Result<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::App(nexus_app::Error::Internal {
                message: e.to_string(),
            })
        })?
        .map_err(ApiError::App)
}
