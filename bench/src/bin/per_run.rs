//! Fixed cost of a run: many runs of a one-step `template` workflow on one engine, in
//! memory and with every run recorded in a real SQLite file (WAL). What a run pays before
//! and after its first step (guardrail policies, catalog, run record) shows here, not in
//! the per-step figures; the server needs hundreds of runs per second.
//!
//! Prints one JSON object per mode: `{"bench":"per_run","mode":..,"runs":..,
//! "us_per_run":..,"first_run_us":..}` (best of `--repeat` batches; `first_run_us` is the
//! first run of a fresh process, which compiles the default guardrail policy).

use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use nexus_engine::store::RunStore;
use nexus_engine::{Engine, EngineConfig, RunOptions, RunStatus};

#[derive(Parser)]
struct Args {
    /// Runs per batch.
    #[arg(long, default_value_t = 500)]
    runs: usize,
    /// Batches per mode; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// `memory`, `sqlite`.
    #[arg(long, value_delimiter = ',', default_value = "memory,sqlite")]
    modes: Vec<String>,
}

const ONE_STEP: &str = "id: one\nsteps:\n  - id: a\n    kind: template\n    template: ok\n";

async fn one_run(engine: &Arc<Engine>, plan: &Arc<nexus_engine::Plan>) -> anyhow::Result<()> {
    let report = engine
        .run(Arc::clone(plan), Default::default(), RunOptions::default())
        .await?;
    anyhow::ensure!(
        report.status == RunStatus::Succeeded,
        "run failed: {:?}",
        report.error
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let plan = Arc::new(
        nexus_engine::load_str(ONE_STEP, None)
            .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?,
    );
    let mut first_run_us = None;
    for mode in &args.modes {
        let dir = tempfile::tempdir()?;
        let store: Option<Arc<dyn RunStore>> = if mode == "sqlite" {
            Some(Arc::new(
                nexus_store::SqliteStore::open(&dir.path().join("bench.db")).await?,
            ))
        } else {
            None
        };
        let engine = Arc::new(Engine::new(vec![], store, EngineConfig::default()));
        if first_run_us.is_none() {
            let t = Instant::now();
            one_run(&engine, &plan).await?;
            first_run_us = Some(t.elapsed().as_secs_f64() * 1e6);
        }
        let mut best = f64::MAX;
        for _ in 0..args.repeat.max(1) {
            let t = Instant::now();
            for _ in 0..args.runs {
                one_run(&engine, &plan).await?;
            }
            best = best.min(t.elapsed().as_secs_f64() * 1e6 / args.runs as f64);
        }
        println!(
            "{}",
            serde_json::json!({
                "bench": "per_run", "mode": mode, "runs": args.runs,
                "us_per_run": (best * 10.0).round() / 10.0,
                "first_run_us": first_run_us.map(|f| (f * 10.0).round() / 10.0),
            })
        );
    }
    Ok(())
}
