//! The parts of an `http` tool call around the request: its `auth` resolved to a header
//! (the secret read by name through the engine's [`SecretResolver`]), and its
//! [`Paginate`] rules: the next page's URL, a page's items, the pages joined.

use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};

use super::StepOutput;
use crate::secrets::SecretResolver;
use crate::workflow::{HttpAuth, Paginate};

/// An `auth` with its secret read: what each request of the call sends.
pub(super) struct ResolvedAuth {
    kind: AuthHeader,
    /// The secret's name and value.
    secret: (String, String),
    /// The texts replaced in a response or an error that echoes them: the secret, and
    /// for `basic` the base64 credentials it is sent as.
    hidden: Vec<String>,
}

/// The header an auth sends.
enum AuthHeader {
    Bearer,
    Basic(String),
    /// The header's name and its value (marked sensitive, so it is never printed).
    Named(HeaderName, HeaderValue),
}

impl ResolvedAuth {
    /// Adds the auth header to `req` (reqwest marks `Authorization` sensitive).
    pub(super) fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let value = &self.secret.1;
        match &self.kind {
            AuthHeader::Bearer => req.bearer_auth(value),
            AuthHeader::Basic(user) => req.basic_auth(user, Some(value)),
            AuthHeader::Named(name, v) => req.header(name.clone(), v.clone()),
        }
    }

    /// `out` with every occurrence of the secret replaced by `[secret NAME]`.
    pub(super) fn redact(&self, out: StepOutput) -> StepOutput {
        if !self.hidden.iter().any(|h| out.text.contains(h.as_str())) {
            return out;
        }
        let text = self.redact_text(out.text);
        let json = out.json.map(|j| {
            serde_json::from_str(&self.redact_text(j.to_string()))
                .unwrap_or(serde_json::Value::Null)
        });
        StepOutput { text, json }
    }

    /// `message` with the secret replaced, for an error or an output.
    pub(super) fn redact_text(&self, mut message: String) -> String {
        for h in &self.hidden {
            if let Some(r) = crate::secrets::redact(&message, &self.secret.0, h) {
                message = r;
            }
        }
        message
    }
}

/// Reads the secret of `auth` (on a blocking thread: a keychain call may block); a
/// missing secret is an error that names it and says how to set it.
pub(super) async fn resolve_auth(
    auth: &HttpAuth,
    secrets: Arc<dyn SecretResolver>,
) -> Result<ResolvedAuth, String> {
    let name = auth.secret().to_string();
    let lookup = {
        let (secrets, key) = (Arc::clone(&secrets), name.clone());
        tokio::task::spawn_blocking(move || secrets.resolve(&key))
            .await
            .map_err(|e| format!("reading secret `{name}` failed: {e}"))?
    };
    let value = match lookup {
        Ok(Some(v)) => v,
        Ok(None) => {
            return Err(format!(
                "secret `{name}` is not set: {}",
                secrets.how_to_set(&name)
            ));
        }
        Err(e) => return Err(format!("secret `{name}` cannot be read: {e}")),
    };
    let kind = match auth {
        HttpAuth::Bearer { .. } => AuthHeader::Bearer,
        HttpAuth::Basic { username, .. } => AuthHeader::Basic(username.clone()),
        HttpAuth::Header { name: header, .. } => {
            let header_name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| format!("`{header}` is not a header name"))?;
            let mut v = HeaderValue::from_str(&value)
                .map_err(|_| format!("secret `{name}` holds characters a header cannot carry"))?;
            v.set_sensitive(true);
            AuthHeader::Named(header_name, v)
        }
    };
    let mut hidden = vec![value.clone()];
    if let AuthHeader::Basic(user) = &kind {
        // The credentials as reqwest encodes them (RFC 7617), read back from a request.
        let encoded = reqwest::Client::new()
            .get("http://127.0.0.1/")
            .basic_auth(user, Some(&value))
            .build()
            .ok()
            .and_then(|r| {
                let v = r
                    .headers()
                    .get(reqwest::header::AUTHORIZATION)?
                    .to_str()
                    .ok()?;
                v.strip_prefix("Basic ").map(str::to_owned)
            });
        hidden.extend(encoded);
    }
    Ok(ResolvedAuth {
        kind,
        secret: (name, value),
        hidden,
    })
}

/// The URL of page `number` (0-based) for `page_param` pagination: `base` with the
/// parameter set to `start + number` (replacing one the URL has).
pub(super) fn numbered_page(base: &reqwest::Url, param: &str, value: u64) -> reqwest::Url {
    let kept: Vec<(String, String)> = base
        .query_pairs()
        .filter(|(k, _)| k != param)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut url = base.clone();
    {
        let mut pairs = url.query_pairs_mut();
        pairs.clear();
        for (k, v) in &kept {
            pairs.append_pair(k, v);
        }
        pairs.append_pair(param, &value.to_string());
    }
    url
}

/// The next page's URL under `next_url`, from a page's body and headers; `None` when
/// the value is missing, null or empty.
pub(super) fn next_url(
    rule: &str,
    page: &StepOutput,
    headers: &serde_json::Map<String, serde_json::Value>,
    current: &reqwest::Url,
) -> Result<Option<reqwest::Url>, String> {
    let body = page.json.clone().unwrap_or(serde_json::Value::Null);
    let value = if rule.starts_with('/') {
        body.pointer(rule)
            .cloned()
            .unwrap_or(serde_json::Value::Null)
    } else {
        let env = minijinja::Environment::new();
        let expr = env
            .compile_expression(rule)
            .map_err(|e| format!("`paginate.next_url` does not compile: {e}"))?;
        let ctx = minijinja::context! { response => body, headers => headers };
        let v = expr
            .eval(ctx)
            .map_err(|e| format!("`paginate.next_url` failed: {e}"))?;
        serde_json::to_value(&v).unwrap_or(serde_json::Value::Null)
    };
    let text = match value {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => return Ok(None),
        other => other.to_string(),
    };
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    current
        .join(text)
        .map(Some)
        .map_err(|e| format!("the next page's URL `{text}` is not a URL: {e}"))
}

/// A page's items: the array at `items`, or the body when it is an array.
pub(super) fn items<'a>(p: &Paginate, page: &'a StepOutput) -> Option<&'a Vec<serde_json::Value>> {
    let body = page.json.as_ref()?;
    match &p.items {
        Some(pointer) => body.pointer(pointer)?.as_array(),
        None => body.as_array(),
    }
}

/// The pages joined: one array of every item when each page has items, else the list of
/// the pages' bodies (JSON, or the text of a page that is not JSON).
pub(super) fn join(p: &Paginate, pages: &[StepOutput]) -> StepOutput {
    let all: Option<Vec<&Vec<serde_json::Value>>> = pages.iter().map(|pg| items(p, pg)).collect();
    let json = match all {
        Some(lists) => serde_json::Value::Array(lists.into_iter().flatten().cloned().collect()),
        None => serde_json::Value::Array(
            pages
                .iter()
                .map(|pg| {
                    pg.json
                        .clone()
                        .unwrap_or_else(|| serde_json::Value::String(pg.text.clone()))
                })
                .collect(),
        ),
    };
    StepOutput {
        text: json.to_string(),
        json: Some(json),
    }
}
