//! Several model hosts of one family: two Ollama-protocol servers ("GPU boxes", one slow
//! and one fast) serve the same model, configured as `ollama@slow` and `ollama@fast`;
//! steps name the family (`ollama:llama3.1:8b`). The fast host takes more of the work;
//! when it stops, its breaker opens and the slow one takes all; when it comes back on
//! its address it is used again.

use std::collections::HashMap;
use std::sync::Arc;

use nexus_engine::breaker::{BreakerConfig, BreakerState};
use nexus_engine::events::{Event, RunStatus};
use nexus_engine::provider::Provider;
use nexus_engine::{EngineConfig, RunOptions};
use nexus_llm::OllamaProvider;
use nexus_tests::OllamaServer;
use serde_json::json;

use crate::{engine, go, plan, temp_store};

const MODEL: &str = "llama3.1:8b";
const SLOW: &str = "ollama@slow";
const FAST: &str = "ollama@fast";

/// The scripted model, its chunks `gap_ms` apart (the first one too, so the time to the
/// first token is `gap_ms`).
fn host(gap_ms: u64, port: Option<u16>) -> anyhow::Result<OllamaServer> {
    let spec = json!({"name": MODEL, "capabilities": ["completion"],
                      "script": {"content": ["Fine", ".", " Thanks", "."], "gap_ms": gap_ms}});
    let port = port.map(|p| p.to_string());
    let args: Vec<&str> = match &port {
        Some(p) => vec!["--port", p.as_str()],
        None => Vec::new(),
    };
    OllamaServer::start_with_specs(&[], &[spec], &args)
}

/// Run options without the output cache: every step asks a host.
fn fresh() -> RunOptions {
    RunOptions {
        use_cache: false,
        ..RunOptions::default()
    }
}

/// `n` independent steps, each asking the model family.
fn workflow(n: usize) -> String {
    let mut yaml = String::from("id: hosts\nsteps:\n");
    for i in 0..n {
        yaml.push_str(&format!(
            "  - id: s{i}\n    kind: llm\n    model: ollama:{MODEL}\n    prompt: How are you, {i}?\n    max_tokens: 8\n    retry: {{max_attempts: 1}}\n"
        ));
    }
    yaml
}

/// How many steps each host served, after checking every step succeeded.
async fn served(
    store: &nexus_store::SqliteStore,
    report: &nexus_engine::RunReport,
) -> anyhow::Result<HashMap<String, usize>> {
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let stored = store.get_run(&report.run_id).await?;
    nexus_tests::assert_steps_succeeded(&stored);
    let mut by_host = HashMap::new();
    for s in &stored.steps {
        let model = s.model.clone().unwrap_or_default();
        let host = model.split(':').next().unwrap_or_default().to_string();
        *by_host.entry(host).or_insert(0) += 1;
    }
    Ok(by_host)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fast_host_takes_more_a_stopped_one_is_left_and_a_returning_one_is_used_again()
-> anyhow::Result<()> {
    let slow = tokio::task::spawn_blocking(|| host(150, None)).await??;
    let mut fast = tokio::task::spawn_blocking(|| host(0, None)).await??;
    let fast_port = fast.process.port;
    // The slow host registers first: without balancing it would take everything.
    let providers: Vec<Arc<dyn Provider>> = vec![
        Arc::new(
            OllamaProvider::new(&slow.url)?
                .with_id(SLOW)
                .with_parallel(1),
        ),
        Arc::new(
            OllamaProvider::new(&fast.url)?
                .with_id(FAST)
                .with_parallel(1),
        ),
    ];
    let (store, _dir) = temp_store().await?;
    let config = EngineConfig {
        max_parallel: 4,
        breaker: BreakerConfig {
            open_base: std::time::Duration::from_millis(300),
            open_multiplier: 1.0,
            ..BreakerConfig::default()
        },
        ..EngineConfig::default()
    };
    let engine = engine(providers, Some(store.clone()), config);
    let wf = plan(&workflow(16));

    // 1. Both up: the fast one serves more steps.
    let (report, _) = go(&engine, wf.clone(), fresh()).await?;
    let first = served(&store, &report).await?;
    let (on_fast, on_slow) = (first.get(FAST).copied(), first.get(SLOW).copied());
    assert_eq!(on_fast.unwrap_or(0) + on_slow.unwrap_or(0), 16, "{first:?}");
    assert!(
        on_fast.unwrap_or(0) > on_slow.unwrap_or(0),
        "the fast host should take more work: {first:?}"
    );

    // 2. The fast one stops: its breaker opens and the slow one serves every step.
    fast.process.stop();
    let (report, events) = go(&engine, wf.clone(), fresh()).await?;
    let second = served(&store, &report).await?;
    assert_eq!(second.get(SLOW).copied(), Some(16), "{second:?}");
    let opened = events.iter().any(|e| {
        matches!(e, Event::BreakerChanged { model, transition }
            if model == &format!("{FAST}:{MODEL}") && matches!(transition.to, BreakerState::Open { .. }))
    });
    assert!(opened, "the stopped host's breaker should open");
    let stored = store.get_run(&report.run_id).await?;
    assert!(
        stored
            .steps
            .iter()
            .flat_map(|s| &s.fallbacks)
            .any(|f| f.from == format!("{FAST}:{MODEL}") && f.to == format!("{SLOW}:{MODEL}")),
        "a step should record its fallback from the stopped host"
    );

    // 3. It comes back on its address: once its breaker half-opens, a step tries it
    //    again (it is the host with the shortest expected wait) and it serves work.
    let back = tokio::task::spawn_blocking(move || host(0, Some(fast_port))).await??;
    assert_eq!(back.process.port, fast_port);
    let (report, _) = go(&engine, wf, fresh()).await?;
    let third = served(&store, &report).await?;
    assert!(
        third.get(FAST).copied().unwrap_or(0) > 0,
        "the host that came back should be used again: {third:?}"
    );
    Ok(())
}
