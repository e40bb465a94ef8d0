//! `http` tools with `auth` and `paginate` against a real loopback service (axum): each
//! auth kind sends its header with the secret read by name, the secret never reaches the
//! run's records (an echo is replaced), a missing secret fails with its name and how to
//! set it, and both pagination styles stop at the end and at `max_pages`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Json;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::routing::get;
use nexus_engine::events::StepStatus;
use nexus_engine::secrets::SecretResolver;
use nexus_engine::{EngineConfig, RunOptions, RunReport};
use serde_json::{Value, json};

use crate::engine;

const SECRET: &str = "s3cr3t-VALUE-42";

/// Secrets held by the test (the app passes one over the OS keychain).
struct Held(HashMap<String, String>);

impl SecretResolver for Held {
    fn resolve(&self, name: &str) -> Result<Option<String>, String> {
        Ok(self.0.get(name).cloned())
    }
}

/// Requests seen per path, and the auth headers `/api/whoami` got.
#[derive(Default)]
struct Seen {
    linked: AtomicUsize,
    numbered: AtomicUsize,
    headers: std::sync::Mutex<Vec<(Option<String>, Option<String>)>>,
}

/// `/api/whoami` echoes the auth headers; `/api/linked?cursor=N` is page N of 3 with a
/// `next` link; `/api/numbered?page=N` has two items for N = 1..=3, none after.
async fn service() -> anyhow::Result<(String, Arc<Seen>)> {
    let seen = Arc::new(Seen::default());
    let app = axum::Router::new()
        .route(
            "/api/whoami",
            get(|State(s): State<Arc<Seen>>, h: HeaderMap| async move {
                let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let (auth, key) = (get("authorization"), get("x-api-key"));
                if let Ok(mut seen) = s.headers.lock() {
                    seen.push((auth.clone(), key.clone()));
                }
                Json(json!({"authorization": auth, "x-api-key": key}))
            }),
        )
        .route(
            "/api/linked",
            get(
                |State(s): State<Arc<Seen>>, Query(q): Query<HashMap<String, String>>| async move {
                    s.linked.fetch_add(1, Ordering::SeqCst);
                    let n: u64 = q.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(1);
                    let next = (n < 3).then(|| format!("linked?cursor={}", n + 1));
                    Json(json!({"items": [n * 10 + 1, n * 10 + 2], "next": next}))
                },
            ),
        )
        .route(
            "/api/numbered",
            get(
                |State(s): State<Arc<Seen>>, Query(q): Query<HashMap<String, String>>| async move {
                    s.numbered.fetch_add(1, Ordering::SeqCst);
                    let n: u64 = q.get("page").and_then(|c| c.parse().ok()).unwrap_or(0);
                    let items: Vec<u64> = if (1..=3).contains(&n) {
                        vec![n * 10 + 1, n * 10 + 2]
                    } else {
                        vec![]
                    };
                    Json(json!(items))
                },
            ),
        )
        .route(
            "/api/escape",
            get(|| async { Json(json!({"items": [1], "next": "http://192.0.2.1/steal"})) }),
        )
        .with_state(Arc::clone(&seen));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}/api/"), seen))
}

/// Runs `yaml` with `secrets` (none: the engine's default, the environment).
async fn run(yaml: &str, secrets: Option<Held>) -> anyhow::Result<RunReport> {
    let plan = nexus_engine::load_str(yaml, None)
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let inputs = nexus_engine::resolve_inputs(&plan, &Default::default())
        .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
    let engine = engine(vec![], None, EngineConfig::default());
    if let Some(s) = secrets {
        engine.set_secrets(Arc::new(s));
    }
    Ok(engine
        .run(Arc::new(plan), inputs, RunOptions::default())
        .await?)
}

fn held() -> Held {
    Held(HashMap::from([(
        "API_TOKEN".to_string(),
        SECRET.to_string(),
    )]))
}

#[tokio::test]
async fn each_auth_kind_sends_its_header_and_the_secret_stays_out_of_records() -> anyhow::Result<()>
{
    let (url, seen) = service().await?;
    // base64("robot:<secret>") (RFC 7617), worked out here rather than by the engine.
    let basic = {
        let raw = format!("robot:{SECRET}");
        let table = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in raw.as_bytes().chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(table[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    };
    let cases = [
        (
            "{bearer: {secret: API_TOKEN}}",
            "authorization",
            format!("Bearer {SECRET}"),
        ),
        (
            "{basic: {username: robot, secret: API_TOKEN}}",
            "authorization",
            format!("Basic {basic}"),
        ),
        (
            "{header: {name: X-Api-Key, secret: API_TOKEN}}",
            "x-api-key",
            SECRET.to_string(),
        ),
    ];
    for (k, (auth, header, sent)) in cases.iter().enumerate() {
        let yaml = format!(
            "id: auth\ntools:\n  api: {{http: {{url: \"{url}\", auth: {auth}}}}}\nsteps:\n  - id: who\n    kind: tool\n    tool: api\n    args: {{path: whoami}}\n"
        );
        let report = run(&yaml, Some(held())).await?;
        let rec = &report.steps[0];
        assert_eq!(rec.status, StepStatus::Succeeded, "{auth}: {:?}", rec.error);
        // The service got the header with the secret.
        let got = seen
            .headers
            .lock()
            .map(|h| h[k].clone())
            .unwrap_or_default();
        let got = if *header == "authorization" {
            got.0
        } else {
            got.1
        };
        assert_eq!(got.as_deref(), Some(sent.as_str()), "{auth}");
        // What the run keeps has the echoed secret (raw or base64) replaced.
        let echoed = rec
            .output_json
            .as_ref()
            .and_then(|j| j[header].as_str())
            .unwrap_or_default();
        let shown = sent
            .replace(SECRET, "[secret API_TOKEN]")
            .replace(&basic, "[secret API_TOKEN]");
        assert_eq!(echoed, shown, "{auth}");
        let stored = serde_json::to_string(&report.steps)?;
        assert!(
            !stored.contains(SECRET) && !stored.contains(&basic),
            "{auth}: the secret is in the records: {stored}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_missing_secret_fails_naming_it_and_how_to_set_it() -> anyhow::Result<()> {
    let (url, _) = service().await?;
    let yaml = format!(
        "id: auth\ntools:\n  api: {{http: {{url: \"{url}\", auth: {{bearer: {{secret: NEXUS_TEST_NEVER_SET}}}}}}}}\nsteps:\n  - id: who\n    kind: tool\n    tool: api\n    args: {{path: whoami}}\n"
    );
    let report = run(&yaml, None).await?;
    let rec = &report.steps[0];
    assert_eq!(rec.status, StepStatus::Failed);
    let error = rec.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("secret `NEXUS_TEST_NEVER_SET` is not set")
            && error.contains("NEXUS_SECRET_NEXUS_TEST_NEVER_SET"),
        "{error}"
    );
    assert!(
        rec.attempts.is_empty(),
        "no request is sent without the secret"
    );
    Ok(())
}

fn items(report: &RunReport) -> Vec<u64> {
    let rec = &report.steps[0];
    assert_eq!(rec.status, StepStatus::Succeeded, "{:?}", rec.error);
    rec.output_json
        .as_ref()
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn next_url_pagination_stops_at_the_end_and_at_the_cap() -> anyhow::Result<()> {
    let (url, seen) = service().await?;
    for (next, max, expect, requests) in [
        ("/next", 10, vec![11, 12, 21, 22, 31, 32], 3),
        ("response.next", 2, vec![11, 12, 21, 22], 2),
    ] {
        seen.linked.store(0, Ordering::SeqCst);
        let yaml = format!(
            "id: pages\ntools:\n  api: {{http: {{url: \"{url}\", paginate: {{next_url: \"{next}\", items: /items, max_pages: {max}}}}}}}\nsteps:\n  - id: all\n    kind: tool\n    tool: api\n    args: {{path: linked}}\n"
        );
        let report = run(&yaml, None).await?;
        assert_eq!(items(&report), expect, "{next}, max {max}");
        assert_eq!(
            seen.linked.load(Ordering::SeqCst),
            requests,
            "{next}, max {max}"
        );
        assert_eq!(report.steps[0].attempts.len(), requests);
    }
    Ok(())
}

#[tokio::test]
async fn page_param_pagination_stops_at_an_empty_page_and_at_the_cap() -> anyhow::Result<()> {
    let (url, seen) = service().await?;
    for (max, expect, requests) in [
        (10, vec![11, 12, 21, 22, 31, 32], 4),
        (2, vec![11, 12, 21, 22], 2),
    ] {
        seen.numbered.store(0, Ordering::SeqCst);
        let yaml = format!(
            "id: pages\ntools:\n  api: {{http: {{url: \"{url}\", paginate: {{page_param: page, start: 1, max_pages: {max}}}}}}}\nsteps:\n  - id: all\n    kind: tool\n    tool: api\n    args: {{path: numbered}}\n"
        );
        let report = run(&yaml, None).await?;
        assert_eq!(items(&report), expect, "max {max}");
        assert_eq!(seen.numbered.load(Ordering::SeqCst), requests, "max {max}");
    }
    Ok(())
}

#[tokio::test]
async fn a_next_page_on_another_host_is_refused() -> anyhow::Result<()> {
    let (url, _) = service().await?;
    let yaml = format!(
        "id: pages\ntools:\n  api: {{http: {{url: \"{url}\", paginate: {{next_url: /next, items: /items, max_pages: 5}}}}}}\nsteps:\n  - id: all\n    kind: tool\n    tool: api\n    args: {{path: escape}}\n"
    );
    let report = run(&yaml, None).await?;
    let rec = &report.steps[0];
    assert_eq!(rec.status, StepStatus::Failed);
    let error = rec.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("host `192.0.2.1` is not among the tool's allowed hosts"),
        "{error}"
    );
    assert_eq!(rec.attempts.len(), 1, "the other host is never called");
    Ok(())
}
