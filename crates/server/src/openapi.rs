//! The OpenAPI 3.1 document of the API, generated from the handlers' `#[utoipa::path]`
//! annotations and the Rust types (`utoipa::ToSchema`), so it cannot drift from the
//! code. `schema/openapi.json` is this document, checked by a test for staleness.

use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};

use crate::api;

/// The document: every route of [`crate::router`] under `/api`.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Nexus",
        description = "The HTTP API of `nexus serve`: workflows, runs, human questions, models and circuit breakers, and a run's events as Server-Sent Events. Every failure is a JSON object tagged by `kind`. Loopback servers need no token; a server bound to another address needs `Authorization: Bearer <token>`.",
        license(name = "Apache-2.0")
    ),
    paths(
        api::health,
        api::settings,
        api::list_workflows,
        api::read_workflow,
        api::save_workflow,
        api::tool_functions,
        api::validate,
        api::templates,
        api::use_template,
        api::start_run,
        api::list_runs,
        api::get_run,
        api::pause_run,
        api::resume_run,
        api::cancel_run,
        api::run_events,
        api::questions,
        api::answer,
        api::models,
        api::breakers,
        api::metrics,
        api::list_triggers,
        crate::hooks::call,
        crate::callbacks::post_event,
        crate::callbacks::callback,
    ),
    components(schemas(nexus_app::engine::Event)),
    modifiers(&Security),
    tags(
        (name = "health", description = "Whether the server is up"),
        (name = "workflows", description = "The workflows folder: list, read, save, validate"),
        (name = "runs", description = "Start, follow, pause, resume and cancel runs; run history"),
        (name = "questions", description = "What runs ask a person"),
        (name = "models", description = "Providers, models and circuit breakers"),
        (name = "triggers", description = "Cron, webhook and file triggers; webhooks are called at `/hooks/<path>` with the hook's own token or signature"),
    )
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "The API token given to `nexus serve` in NEXUS_API_TOKEN (needed when the server has one)",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as pretty-printed JSON with a final newline (the form committed as
/// `schema/openapi.json`).
///
/// # Errors
/// [`serde_json::Error`] when it cannot be encoded (it always can).
pub fn json() -> Result<String, serde_json::Error> {
    let mut text = serde_json::to_string_pretty(&ApiDoc::openapi())?;
    text.push('\n');
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_openapi_document_is_current() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schema/openapi.json");
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        let generated = super::json().unwrap_or_default();
        assert!(
            committed == generated,
            "schema/openapi.json is stale: run `cargo run -p nexus-cli -- openapi > schema/openapi.json`"
        );
    }
}
