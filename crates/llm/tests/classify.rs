//! HTTP statuses, OpenAI-compatible servers' wording and `Retry-After` as taxonomy
//! classes (moved here from the engine's tests with the code they test).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

#[test]
fn http_errors_are_classified_by_status_and_wording() {
    use nexus_engine::provider::ProviderErrorKind as K;
    use nexus_llm::http::parse_retry_after;
    use nexus_llm::openai::from_status;
    let cases = [
        (401, "", K::Auth),
        (402, "", K::Quota),
        (429, r#"{"error":{"code":"insufficient_quota"}}"#, K::Quota),
        (429, "slow down", K::RateLimited),
        (404, "model not found", K::ModelNotFound),
        (503, "overloaded", K::Transient),
        (529, "overloaded", K::Transient),
        (
            400,
            r#"{"error":{"code":"context_length_exceeded"}}"#,
            K::ContextOverflow,
        ),
        (
            400,
            "prompt is too long: 210000 tokens > 200000 maximum",
            K::ContextOverflow,
        ),
        (
            400,
            "Unsupported parameter: 'response_format'",
            K::UnsupportedParameter,
        ),
        (
            400,
            r#"{"error":{"code":"content_policy_violation"}}"#,
            K::ContentPolicy,
        ),
        (400, "bad request", K::InvalidRequest),
        (
            500,
            "1 validation error: response_format ... Input should be 'text'",
            K::UnsupportedParameter,
        ),
    ];
    for (status, body, kind) in cases {
        assert_eq!(from_status(status, body).kind, kind, "{status} {body}");
    }
    let now = std::time::SystemTime::now();
    assert_eq!(
        parse_retry_after("2", now),
        Some(std::time::Duration::from_secs(2))
    );
    // An HTTP-date (IMF-fixdate, RFC 9110 §5.6.7), as servers send it.
    let later = httpdate::fmt_http_date(now + std::time::Duration::from_secs(30));
    let d = parse_retry_after(&later, now).expect("http date");
    assert!((29..=30).contains(&d.as_secs()), "{d:?}");
    assert_eq!(parse_retry_after("soon", now), None);
}
