//! Engine overhead on no-op workflows: `template` steps that render a constant, so the
//! time measured is the scheduler's (readiness, events, records) and, in `sqlite` mode,
//! the durable recording of every step in a real SQLite file (WAL).
//!
//! Shapes: `chain` (N steps in a line), `fanout` (one root, N-2 parallel steps, one
//! join that needs them all) and `templated` (a chain whose steps render
//! `{{ steps.<previous>.output | length }}`: a compiled template and a checked reference
//! per step; not in the default set, LangGraph has no counterpart) and `map` (one `map`
//! step over N items, 16 in flight, each item a body of one no-op step: `us_per_step` is
//! then per item). Prints one JSON object per line, best of `--repeat` runs:
//! `{"engine":"nexus","shape":..,"steps":..,"mode":..,"total_ms":..,"us_per_step":..,"validate_ms":..}`
//! (`validate_ms`: parsing and validating the workflow text into a plan, best of `--repeat`;
//! `validate_cpu_ms`: the same in CPU time of the validating thread, which a loaded
//! machine inflates less than wall time; `parse_cpu_ms`: the YAML reading part of it).
//! `bench/run.sh` runs this and `bench/langgraph_noop.py` side by side.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use nexus_engine::store::RunStore;
use nexus_engine::{Engine, EngineConfig, RunOptions, RunStatus};

#[derive(Parser)]
struct Args {
    /// Step counts.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    sizes: Vec<usize>,
    /// `chain`, `fanout`, `templated`, `map`.
    #[arg(long, value_delimiter = ',', default_value = "chain,fanout")]
    shapes: Vec<String>,
    /// `memory`, `sqlite` (the default durability, `synchronous = NORMAL`),
    /// `sqlite-full` (`NEXUS_DB_SYNC=full`: `synchronous = FULL`, a sync per commit).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "memory,sqlite,sqlite-full"
    )]
    modes: Vec<String>,
    /// Runs per configuration; the best is reported.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
}

fn workflow(shape: &str, n: usize) -> String {
    let mut y = String::with_capacity(n * 64);
    y.push_str("id: noop\nsteps:\n");
    if shape == "map" {
        // One map step over N items, each running a body of one no-op step.
        let _ = write!(
            y,
            "  - id: each\n    kind: map\n    items: range({n}) | list\n    concurrency: 16\n    steps:\n      - id: s\n        kind: template\n        template: ok\n"
        );
        return y;
    }
    for i in 0..n {
        if shape == "templated" && i > 0 {
            // Each step reads the one before it: a compiled template and a checked
            // reference per step, as in real workflows.
            let _ = write!(
                y,
                "  - id: s{i}\n    kind: template\n    template: \"{{{{ steps.s{p}.output | length }}}}\"\n    needs: [s{p}]\n",
                p = i - 1
            );
            continue;
        }
        let _ = write!(y, "  - id: s{i}\n    kind: template\n    template: ok\n");
        match shape {
            "chain" if i > 0 => {
                let _ = writeln!(y, "    needs: [s{}]", i - 1);
            }
            "fanout" if i > 0 && i < n - 1 => y.push_str("    needs: [s0]\n"),
            "fanout" if i == n - 1 && n > 1 => {
                y.push_str("    needs: [");
                for j in 1..n - 1 {
                    if j > 1 {
                        y.push_str(", ");
                    }
                    let _ = write!(y, "s{j}");
                }
                y.push_str("]\n");
            }
            _ => {}
        }
    }
    y
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for shape in &args.shapes {
        for &n in &args.sizes {
            let text = workflow(shape, n);
            // Parsing and validating the file text into a plan, best of `--repeat`.
            let mut validate_ms = f64::MAX;
            let mut validate_cpu_ms = f64::MAX;
            let mut parse_cpu_ms = 0.0;
            let mut plan = None;
            for _ in 0..args.repeat.max(1) {
                let t = Instant::now();
                let cpu = cpu_time::ThreadTime::now();
                let parsed = nexus_engine::parse::parse_str(&text, None)
                    .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&[*d])))?;
                let parsed_at = cpu.elapsed();
                let p = nexus_engine::plan::validate(&parsed)
                    .map_err(|d| anyhow::anyhow!(nexus_engine::diagnostic::render_all(&d)))?;
                drop(parsed);
                let cpu_ms = cpu.elapsed().as_secs_f64() * 1e3;
                if cpu_ms < validate_cpu_ms {
                    validate_cpu_ms = cpu_ms;
                    parse_cpu_ms = parsed_at.as_secs_f64() * 1e3;
                }
                validate_ms = validate_ms.min(t.elapsed().as_secs_f64() * 1e3);
                plan = Some(p);
            }
            let plan = plan.ok_or_else(|| anyhow::anyhow!("no plan"))?;
            let plan = Arc::new(plan);
            for mode in &args.modes {
                let mut best = f64::MAX;
                for _ in 0..args.repeat.max(1) {
                    let dir = tempfile::tempdir()?;
                    let durability = match mode.as_str() {
                        "sqlite" => Some(nexus_store::Durability::Process),
                        "sqlite-full" => Some(nexus_store::Durability::PowerLoss),
                        _ => None,
                    };
                    let store: Option<Arc<dyn RunStore>> = match durability {
                        Some(d) => Some(Arc::new(
                            nexus_store::SqliteStore::open_with(&dir.path().join("bench.db"), d)
                                .await?,
                        )),
                        None => None,
                    };
                    let engine = Arc::new(Engine::new(vec![], store, EngineConfig::default()));
                    let t = Instant::now();
                    let report = engine
                        .run(Arc::clone(&plan), Default::default(), RunOptions::default())
                        .await?;
                    let ms = t.elapsed().as_secs_f64() * 1e3;
                    anyhow::ensure!(
                        report.status == RunStatus::Succeeded,
                        "run failed: {:?}",
                        report.error
                    );
                    // A map records its items' steps and itself.
                    let want = if shape == "map" { n + 1 } else { n };
                    anyhow::ensure!(
                        report.steps.len() == want,
                        "expected {want} steps, got {}",
                        report.steps.len()
                    );
                    best = best.min(ms);
                }
                println!(
                    "{}",
                    serde_json::json!({
                        "engine": "nexus", "shape": shape, "steps": n, "mode": mode,
                        "total_ms": (best * 1000.0).round() / 1000.0,
                        "us_per_step": (best * 1000.0 / n as f64 * 100.0).round() / 100.0,
                        "validate_ms": (validate_ms * 1000.0).round() / 1000.0,
                        "validate_cpu_ms": (validate_cpu_ms * 1000.0).round() / 1000.0,
                        "parse_cpu_ms": (parse_cpu_ms * 1000.0).round() / 1000.0,
                    })
                );
            }
        }
    }
    Ok(())
}
