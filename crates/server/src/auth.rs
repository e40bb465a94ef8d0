//! Who may call the API: the API token (kept only as its SHA-256, compared in constant
//! time) and, on a server without a token, the `Host` check that keeps web pages of
//! other sites out (DNS rebinding: a page whose name resolves to 127.0.0.1 would
//! otherwise reach a loopback server with the browser's help).
//!
//! Rules:
//! - a token, when configured, is required on every route but `GET /api/health` and the
//!   editor's files, as `Authorization: Bearer <token>`; the event stream also takes
//!   `?token=<token>` because a browser's `EventSource` cannot send headers;
//! - without a token (loopback only, see [`crate::Config`]), `Host` must be
//!   `127.0.0.1`, `localhost` or `[::1]`, with any port.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, HttpError};

/// The shortest API token accepted, characters (32 hex characters are 128 bits).
pub const MIN_TOKEN_CHARS: usize = 32;

/// The server's API token as its SHA-256 digest; the token itself is not kept.
#[derive(Clone)]
pub struct TokenHash([u8; 32]);

impl std::fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenHash(..)")
    }
}

impl TokenHash {
    /// The digest of `token` (surrounding white space removed).
    pub fn of(token: &str) -> Self {
        TokenHash(Sha256::digest(token.trim().as_bytes()).into())
    }

    /// Whether `presented` is the token: both digests are compared in constant time, so
    /// the time taken says nothing about how much of it matched.
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        bool::from(digest.ct_eq(&self.0))
    }
}

/// What the access check knows.
#[derive(Clone, Debug)]
pub struct Access {
    /// The token's digest, when the server has one.
    pub token: Option<TokenHash>,
}

/// The access check, as an axum middleware over the API routes.
pub async fn check(State(access): State<Access>, req: Request, next: Next) -> Response {
    match allowed(&access, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn allowed(access: &Access, req: &Request) -> Result<(), ApiError> {
    // Under `/api` the router sees paths without the prefix.
    let path = req.uri().path();
    if path == "/health" || path == "/api/health" {
        return Ok(());
    }
    let Some(token) = &access.token else {
        return loopback_host(req);
    };
    let presented = bearer(req).or_else(|| {
        (path.ends_with("/events"))
            .then(|| query_token(req.uri().query().unwrap_or("")))
            .flatten()
    });
    match presented {
        Some(t) if token.matches(&t) => Ok(()),
        Some(_) => Err(HttpError::Unauthorized {
            message:
                "the API token is wrong; send the one given to `nexus serve` in NEXUS_API_TOKEN"
                    .to_string(),
        }
        .into()),
        None => Err(HttpError::Unauthorized {
            message: "this server needs its API token: send `Authorization: Bearer <token>`"
                .to_string(),
        }
        .into()),
    }
}

fn bearer(req: &Request) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_string())
}

fn query_token(query: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Q {
        token: Option<String>,
    }
    parse_query(query).and_then(|q: Q| q.token)
}

fn parse_query<T: serde::de::DeserializeOwned>(query: &str) -> Option<T> {
    axum::extract::Query::<T>::try_from_uri(&format!("/?{query}").parse().ok()?)
        .ok()
        .map(|q| q.0)
}

fn loopback_host(req: &Request) -> Result<(), ApiError> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| req.uri().host())
        .unwrap_or("");
    if nexus_app::triggers::is_loopback_host(host) {
        Ok(())
    } else {
        Err(HttpError::ForbiddenHost {
            message: format!(
                "host `{host}` is not a loopback name; open the server as http://127.0.0.1:<port> (a server reachable under other names needs --allow-remote and an API token)"
            ),
        }
        .into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_matches_only_itself() {
        let hash = TokenHash::of("0123456789abcdef0123456789abcdef");
        assert!(hash.matches("0123456789abcdef0123456789abcdef"));
        assert!(!hash.matches("0123456789abcdef0123456789abcdee"));
        assert!(!hash.matches(""));
    }

    #[test]
    fn the_query_token_is_read_from_the_events_query() {
        assert_eq!(query_token("a=1&token=xy%20z").as_deref(), Some("xy z"));
        assert_eq!(query_token("a=1"), None);
    }
}
