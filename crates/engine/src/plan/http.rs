//! Checks of an `http` tool's `auth` and `paginate` (see [`crate::workflow::HttpAuth`],
//! [`crate::workflow::Paginate`]): a secret name and header name that can work, exactly
//! one way to find pages, a positive cap, pointers and expressions that compile.

use super::step::StepPlanner;
use crate::diagnostic::DiagnosticCode;
use crate::workflow::{HttpAuth, HttpTool};

/// Reports what cannot work in `http`'s `auth` and `paginate`.
pub(super) fn check_auth_and_pages(p: &mut StepPlanner<'_, '_>, name: &str, http: &HttpTool) {
    if let Some(auth) = &http.auth {
        let secret = auth.secret();
        if secret.is_empty()
            || !secret
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            p.report(
                "tool",
                DiagnosticCode::InvalidValue,
                format!("tool `{name}`: `auth` secret name `{secret}` is not a name"),
                "name the secret with letters, digits, `_`, `-` or `.` (e.g. `GITHUB_TOKEN`); its value goes in the OS keychain or NEXUS_SECRET_<NAME>, never in the file",
            );
        }
        if let HttpAuth::Header { name: header, .. } = auth
            && reqwest::header::HeaderName::from_bytes(header.as_bytes()).is_err()
        {
            p.report(
                "tool",
                DiagnosticCode::InvalidValue,
                format!("tool `{name}`: `auth.header.name` `{header}` is not a header name"),
                "give a header name such as `X-Api-Key`",
            );
        }
    }
    let Some(pg) = &http.paginate else { return };
    match (&pg.next_url, &pg.page_param) {
        (Some(_), Some(_)) | (None, None) => p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `paginate` needs exactly one of `next_url` and `page_param`"),
            "give `next_url: <JSON pointer or expression>` to follow links, or `page_param: page` to count pages",
        ),
        (Some(rule), None) if !rule.starts_with('/') => {
            if let Err(e) = minijinja::Environment::new().compile_expression(rule) {
                p.report(
                    "tool",
                    DiagnosticCode::TemplateSyntax,
                    format!("tool `{name}`: `paginate.next_url` does not compile: {e}"),
                    "write a JSON pointer such as `/links/next` or an expression such as `response.paging.next`",
                );
            }
        }
        _ => {}
    }
    if pg.start.is_some() && pg.page_param.is_none() {
        p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `paginate.start` is for `page_param` pagination"),
            "remove `start`, or use `page_param`",
        );
    }
    if pg
        .items
        .as_deref()
        .is_some_and(|i| !i.is_empty() && !i.starts_with('/'))
    {
        p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `paginate.items` is not a JSON pointer"),
            "write a JSON pointer such as `/data` (RFC 6901)",
        );
    }
    if pg.max_pages == 0 {
        p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `paginate.max_pages` is 0"),
            "use a positive number of pages, e.g. 10",
        );
    }
}
