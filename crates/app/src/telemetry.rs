//! Logs and traces of a Nexus process: the log lines on stderr, and the engine's
//! `tracing` spans (`run` → `step` → `attempt`, see the README) exported over OTLP when
//! an OpenTelemetry endpoint is configured.
//!
//! Configuration follows the OpenTelemetry SDK environment variables (the
//! specification's "OTLP Exporter" page), read by `opentelemetry-otlp` itself:
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the full URL, e.g.
//! `http://127.0.0.1:4318/v1/traces`) or `OTEL_EXPORTER_OTLP_ENDPOINT` (a base URL, to
//! which `/v1/traces` is added), `OTEL_EXPORTER_OTLP_HEADERS`,
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (ms), `OTEL_SERVICE_NAME` (default `nexus`) and
//! `OTEL_RESOURCE_ATTRIBUTES`. Neither endpoint set: nothing is exported and no
//! exporter thread starts.
//!
//! Invariants: the protocol is OTLP over HTTP with protobuf bodies
//! (`http/protobuf`, the specification's default); `grpc` or `http/json` in
//! `OTEL_EXPORTER_OTLP_PROTOCOL` / `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` is refused with
//! a warning instead of exporting something else. A bad configuration never stops the
//! program: logging starts, the problem is returned for the caller to print, and
//! nothing is exported. Spans are sent in batches from the SDK's own thread (at most
//! 2048 queued, the SDK's default; more are dropped, never buffered without bound), and
//! [`Telemetry::shutdown`] sends what is left.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The environment variables that turn the export on (either one).
pub const ENDPOINT_VARS: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// The spans exported: the engine's, the app's and the server's at `info` and above,
/// whatever the log filter says (a collector wants the whole run tree, the terminal
/// only warnings).
const EXPORT_FILTER: &str = "nexus_engine=info,nexus_app=info,nexus_server=info";

/// How long one export request may take when `OTEL_EXPORTER_OTLP_TIMEOUT` is unset, ms
/// (the specification's default, 10 s).
const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// The process's tracing set-up; keep it until the program ends, then call
/// [`Telemetry::shutdown`] (outside any async runtime) so the last spans are sent.
#[must_use = "dropping it without shutdown loses the spans not yet sent"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported over OTLP.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Sends the spans still queued (waiting for the export, at most its timeout) and
    /// stops the exporter thread. Call it outside an async runtime.
    pub fn shutdown(self) -> Result<(), String> {
        match self.provider {
            Some(p) => p
                .shutdown()
                .map_err(|e| format!("the last spans could not be sent over OTLP: {e}")),
            None => Ok(()),
        }
    }
}

/// Installs the global `tracing` subscriber: log lines on stderr filtered by the
/// environment variable `log_var` (an `EnvFilter` directive such as `info` or
/// `nexus_engine=debug`; `default_level` when unset or invalid), and the OTLP exporter
/// when [`ENDPOINT_VARS`] configure one. Call it once, before any async runtime starts
/// (the exporter's HTTP client runs its own).
///
/// Returns the set-up and, when the OTLP configuration is refused, why (to print; the
/// program goes on without export).
pub fn init(log_var: &str, default_level: &str) -> (Telemetry, Option<String>) {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(
            EnvFilter::try_from_env(log_var).unwrap_or_else(|_| EnvFilter::new(default_level)),
        );
    let (provider, problem) = match exporter_provider() {
        Ok(p) => (p, None),
        Err(e) => (None, Some(e)),
    };
    let spans = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("nexus"))
            .with_filter(EnvFilter::new(EXPORT_FILTER))
    });
    // A second call (tests) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init();
    (Telemetry { provider }, problem)
}

/// The tracer provider when an endpoint is configured; `Ok(None)` when none is.
fn exporter_provider() -> Result<Option<SdkTracerProvider>, String> {
    let set = |k: &str| std::env::var(k).is_ok_and(|v| !v.trim().is_empty());
    if !ENDPOINT_VARS.iter().any(|k| set(k)) {
        return Ok(None);
    }
    for var in [
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_PROTOCOL",
    ] {
        if let Ok(p) = std::env::var(var)
            && !p.trim().is_empty()
            && p.trim() != "http/protobuf"
        {
            return Err(format!(
                "{var}={p} is not supported: Nexus exports traces as OTLP http/protobuf only; unset it or set it to http/protobuf (the collector's port 4318)"
            ));
        }
    }
    let timeout = std::env::var("OTEL_EXPORTER_OTLP_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(DEFAULT_TIMEOUT_MS);
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_millis(timeout))
        .build()
        .map_err(|e| format!("the OTLP HTTP client could not start: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingClient(client))
        .with_timeout(Duration::from_millis(timeout))
        .build()
        .map_err(|e| {
            format!(
                "the OTLP exporter could not be configured ({e}); check {} (an http:// or https:// URL)",
                ENDPOINT_VARS.join(" / ")
            )
        })?;
    let mut resource = Resource::builder();
    if !set("OTEL_SERVICE_NAME") {
        resource = resource.with_service_name("nexus");
    }
    Ok(Some(
        SdkTracerProvider::builder()
            .with_resource(resource.build())
            .with_batch_exporter(exporter)
            .build(),
    ))
}

/// The OTLP exporter's HTTP client: reqwest's blocking client (rustls on ring, like
/// every other request Nexus makes), called from the SDK's batch thread, never from an
/// async task.
#[derive(Debug)]
struct BlockingClient(reqwest::blocking::Client);

/// The largest collector reply read, bytes (the SDK's own clients read 4 MiB).
const MAX_REPLY_BYTES: u64 = 4 * 1024 * 1024;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingClient {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        use std::io::Read;
        let (parts, body) = request.into_parts();
        let mut reply = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.to_vec())
            .send()?;
        let status = reply.status();
        let headers = std::mem::take(reply.headers_mut());
        let mut buf = Vec::new();
        reply.take(MAX_REPLY_BYTES).read_to_end(&mut buf)?;
        let mut response = http::Response::builder()
            .status(status)
            .body(bytes::Bytes::from(buf))?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}
