//! What every HTTP provider shares: transport errors and HTTP statuses as taxonomy
//! classes, the `Retry-After` header, and reads of a response that never hold more of
//! the wire than a cap.
//!
//! Invariant: no response body is read without a cap. Error bodies keep their first
//! [`ERROR_BODY_CAP`] bytes; JSON bodies over their cap and stream events (SSE events,
//! NDJSON lines) over [`EVENT_CAP`] end the reply as
//! [`ProviderErrorKind::OversizedReply`], so a provider that floods cannot grow Nexus's
//! memory past a few MiB per reply.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use nexus_engine::provider::{
    ProviderError, ProviderErrorKind, reply_byte_ceiling, reply_token_ceiling,
};

use crate::Error;

/// Bytes of an error body kept for the message and its classification (64 KiB; the
/// message shown is cut to 500 bytes).
pub const ERROR_BODY_CAP: usize = 64 << 10;

/// Most bytes one stream event (an SSE event, an NDJSON line) may carry (1 MiB). An
/// honest event is one chunk of a few tokens; the SSE parser rescans its buffer for
/// every piece of an unfinished event, so the cap also keeps a flood cheap to refuse.
pub const EVENT_CAP: usize = 1 << 20;

/// Most bytes of a model list (`GET /models`, `/api/tags`, `/api/show`): 16 MiB, far over
/// the largest public lists (OpenRouter's is under 2 MiB).
pub const LIST_BODY_CAP: usize = 16 << 20;

/// Most bytes of an embeddings reply of `inputs` vectors: 256 KiB a vector (8,192
/// numbers of up to 32 characters of JSON) plus 64 KiB, at most 64 MiB.
pub fn embed_body_cap(inputs: usize) -> usize {
    inputs
        .saturating_mul(256 << 10)
        .saturating_add(64 << 10)
        .min(64 << 20)
}

/// Wire bytes one streamed reply to `max_tokens` may take in all, framing included:
/// twice the reply's byte ceiling (JSON escapes) plus 2 KiB of framing per admitted
/// chunk (an OpenAI chunk object is ~250 bytes) plus 1 MiB. A server that streams only
/// empty chunks or comments, which the reply meter never sees, is cut here.
pub fn wire_cap(max_tokens: u32) -> usize {
    let chunks = usize::try_from(reply_token_ceiling(max_tokens)).unwrap_or(usize::MAX);
    reply_byte_ceiling(max_tokens)
        .saturating_mul(2)
        .saturating_add(chunks.saturating_mul(2 << 10))
        .saturating_add(1 << 20)
}

/// Classifies a `reqwest` transport error: a refused or failed connection means the
/// provider is unavailable (fall back at once), a timeout is a timeout, anything else
/// (reset mid-body, decode) is transient.
pub fn classify_reqwest(e: &reqwest::Error) -> ProviderError {
    let kind = if e.is_connect() {
        ProviderErrorKind::Unavailable
    } else if e.is_timeout() {
        ProviderErrorKind::Timeout
    } else if e.is_builder() || e.is_request() && e.url().is_none() {
        ProviderErrorKind::InvalidRequest
    } else {
        ProviderErrorKind::Transient
    };
    // reqwest's Display omits the cause ("error sending request"); add the chain.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    ProviderError::new(kind, message)
}

/// Classifies an HTTP error status by the rules every provider shares ([RFC 9110] and
/// the OpenAI/Anthropic SDK retry rules): 401/403 auth, 402 quota, 404 missing model,
/// 429 rate limit, 408, 409 and 5xx transient, any other 4xx an invalid request. The
/// provider's module refines it by the body's wording.
///
/// [RFC 9110]: https://www.rfc-editor.org/rfc/rfc9110#section-15
pub fn status_kind(status: u16) -> ProviderErrorKind {
    match status {
        401 | 403 => ProviderErrorKind::Auth,
        402 => ProviderErrorKind::Quota,
        429 => ProviderErrorKind::RateLimited,
        404 => ProviderErrorKind::ModelNotFound,
        408 | 409 | 500..=599 => ProviderErrorKind::Transient,
        _ => ProviderErrorKind::InvalidRequest,
    }
}

/// `HTTP <status>: <body>`, the body trimmed and cut to 500 bytes on a character
/// boundary.
pub fn status_message(status: u16, body: &str) -> String {
    let body = body.trim();
    let body = if body.len() > 500 {
        &body[..body.floor_char_boundary(500)]
    } else {
        body
    };
    format!("HTTP {status}: {body}")
}

/// Parses an HTTP `Retry-After` value: delay-seconds or an HTTP-date (RFC 9110
/// §10.2.3; dates parsed by the `httpdate` crate: IMF-fixdate, RFC 850 and asctime). A
/// date in the past gives zero; an unreadable value gives `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e9)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// The response's `Retry-After`, read now.
pub(crate) fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()))
}

/// Reads at most `cap` bytes of `resp`'s body.
///
/// # Errors
/// [`Error::BodyTooLong`] once the body passes `cap` (reading stops there), or the
/// transport's error.
pub(crate) async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, Error> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > cap {
            return Err(Error::BodyTooLong(cap));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `resp` when its status is 2xx; otherwise the error `classify` makes of its status
/// and body (the first [`ERROR_BODY_CAP`] bytes), with its `Retry-After`. Each provider
/// passes its own classifier, which knows its vendors' error wording.
pub(crate) async fn checked(
    resp: reqwest::Response,
    classify: fn(u16, &str) -> ProviderError,
) -> Result<reqwest::Response, ProviderError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let retry_after = retry_after(&resp);
    let text = error_body(resp).await;
    Err(classify(status.as_u16(), &text).with_retry_after(retry_after))
}

/// The first [`ERROR_BODY_CAP`] bytes of an error response's body, as text (empty when
/// it cannot be read).
pub(crate) async fn error_body(mut resp: reqwest::Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = ERROR_BODY_CAP - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY_CAP {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// Tracks the size of the SSE event being received: bytes since the last event
/// boundary, a blank line (WHATWG HTML §9.2.6: lines end in CR, LF or CRLF).
#[derive(Debug, Default)]
struct EventSize {
    pending: usize,
    line: usize,
    after_cr: bool,
}

impl EventSize {
    fn feed(&mut self, bytes: &[u8], cap: usize) -> Result<(), Error> {
        for &b in bytes {
            if b == b'\n' && self.after_cr {
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                if self.line == 0 {
                    self.pending = 0;
                }
                self.line = 0;
                continue;
            }
            self.line += 1;
            self.pending += 1;
            if self.pending > cap {
                return Err(Error::EventTooLong(cap));
            }
        }
        Ok(())
    }
}

/// Passes a response's bytes through, failing with [`Error::EventTooLong`] as soon as
/// one SSE event (bytes between blank lines) passes `event_cap` bytes, so the SSE parser
/// never buffers more than that, and with [`Error::BodyTooLong`] once the stream passes
/// `total_cap` bytes.
pub(crate) fn sse_capped(
    resp: reqwest::Response,
    event_cap: usize,
    total_cap: usize,
) -> impl Stream<Item = Result<Bytes, Error>> + Send {
    let mut size = EventSize::default();
    total_capped(resp, total_cap).map(move |item| {
        let bytes = item?;
        size.feed(&bytes, event_cap)?;
        Ok(bytes)
    })
}

/// Passes a response's bytes through, failing with [`Error::BodyTooLong`] once they pass
/// `cap` bytes in all.
pub(crate) fn total_capped(
    resp: reqwest::Response,
    cap: usize,
) -> impl Stream<Item = Result<Bytes, Error>> + Send {
    let mut seen = 0usize;
    resp.bytes_stream().map(move |item| {
        let bytes = item?;
        seen = seen.saturating_add(bytes.len());
        if seen > cap {
            return Err(Error::BodyTooLong(cap));
        }
        Ok(bytes)
    })
}

/// The taxonomy class of a wire error.
pub(crate) fn classify_wire(e: &Error) -> ProviderError {
    match e {
        Error::Transport(t) => classify_reqwest(t),
        // The byte stream's own errors come back wrapped in `io::Error`.
        Error::Lines(tokio_util::codec::LinesCodecError::Io(io)) => {
            match io.get_ref().and_then(|e| e.downcast_ref::<Error>()) {
                Some(inner @ (Error::EventTooLong(_) | Error::BodyTooLong(_))) => {
                    classify_wire(inner)
                }
                _ => ProviderError::new(ProviderErrorKind::Protocol, io.to_string()),
            }
        }
        Error::Lines(tokio_util::codec::LinesCodecError::MaxLineLengthExceeded) => {
            ProviderError::new(
                ProviderErrorKind::OversizedReply,
                format!(
                    "the NDJSON stream: a line passed {EVENT_CAP} bytes; Nexus stopped reading the reply"
                ),
            )
        }
        Error::EventTooLong(_) | Error::BodyTooLong(_) => ProviderError::new(
            ProviderErrorKind::OversizedReply,
            format!("{e}; Nexus stopped reading the reply"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_sse_event_is_measured_between_blank_lines_with_any_line_end() {
        let mut s = EventSize::default();
        assert!(s.feed(b"data: 1234\n\ndata: 12", 10).is_ok());
        assert!(s.feed(b"34\r\n\r\ndata: 1234\r\rdata", 10).is_ok());
        // Many `data:` lines without a blank line are one growing event.
        let mut s = EventSize::default();
        assert!(s.feed(b"data: 12\ndata: 12\n", 10).is_err());
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_784_000_000);
        assert_eq!(parse_retry_after("2", now), Some(Duration::from_secs(2)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(30))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(30));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-1", now), None);
    }
}
