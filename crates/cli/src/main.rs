//! `nexus`: run, validate and inspect workflows from the command line.
//!
//! Exit codes: 0 success; 1 the run finished with a failed step; 2 the workflow or the
//! command line is invalid; 3 the run was cancelled (Ctrl-C); 4 the run database failed.
//! On failure the last line on stderr is a one-line reason.

mod progress;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use nexus_engine::diagnostic::render_all;
use nexus_engine::events::{EventSink, RunStatus, StepStatus};
use nexus_engine::provider::Provider;
use nexus_engine::select::Catalog;
use nexus_engine::{Diagnostic, Engine, EngineConfig, RunOptions};
use nexus_store::SqliteStore;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "nexus", version, about = "Run LLM-agent workflows locally")]
struct Cli {
    /// Run database (SQLite). Default: `<data dir>/nexus/nexus.db`.
    #[arg(long, global = true, env = "NEXUS_DB")]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow file.
    Run {
        /// The workflow file (YAML).
        file: PathBuf,
        /// An input, as `name=value` (repeatable). `file` inputs take a path.
        #[arg(long = "input", short = 'i', value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// Print the run report as JSON on stdout instead of progress and text.
        #[arg(long)]
        json: bool,
        /// Most `llm` steps in flight at once.
        #[arg(long, default_value_t = 8)]
        max_parallel: usize,
    },
    /// Check workflow files and print every problem with its place.
    Validate {
        /// Workflow files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Print diagnostics as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the models available now and the order the selector tries them in.
    Models {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Inspect stored runs.
    Runs {
        #[command(subcommand)]
        command: RunsCommand,
    },
    /// Print the JSON Schema of the workflow file format.
    Schema,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The most recent runs.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Everything stored about one run (full id or a unique prefix).
    Show {
        /// Run id or prefix.
        id: String,
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        let e: anyhow::Error = e.into();
        Failure {
            code: 4,
            message: format!("{e:#}"),
        }
    }
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("NEXUS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let db = cli.db.clone().unwrap_or_else(nexus_store::default_path);
    match cli.command {
        Command::Run {
            file,
            inputs,
            json,
            max_parallel,
        } => run(&db, &file, &inputs, json, max_parallel).await,
        Command::Validate { files, json } => validate(&files, json),
        Command::Models { json } => models(json).await,
        Command::Runs { command } => runs(&db, command).await,
        Command::Schema => {
            let schema = nexus_engine::workflow::json_schema();
            println!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(())
        }
    }
}

/// The providers of this machine, in the selector's registration order: Ollama (at
/// `OLLAMA_HOST`), the OpenAI-compatible provider when configured, the embedded model.
fn providers() -> Result<Vec<Arc<dyn Provider>>, Failure> {
    let mut list: Vec<Arc<dyn Provider>> = Vec::new();
    let ollama = nexus_llm::OllamaProvider::from_env().map_err(|e| fail(2, e.to_string()))?;
    list.push(Arc::new(ollama));
    if let Some(openai) =
        nexus_llm::OpenAiProvider::from_env().map_err(|e| fail(2, e.to_string()))?
    {
        list.push(Arc::new(openai));
    }
    list.push(Arc::new(
        nexus_embedded::EmbeddedProvider::from_default_location(),
    ));
    Ok(list)
}

fn diagnostics_failure(diags: &[Diagnostic], what: &str) -> Failure {
    eprintln!("{}", render_all(diags));
    let n = diags.len();
    fail(
        2,
        format!("{what}: {n} problem{}", if n == 1 { "" } else { "s" }),
    )
}

fn parse_inputs(raw: &[String]) -> Result<BTreeMap<String, String>, Failure> {
    let mut map = BTreeMap::new();
    for item in raw {
        let Some((k, v)) = item.split_once('=') else {
            return Err(fail(2, format!("--input `{item}` is not NAME=VALUE")));
        };
        map.insert(k.trim().to_string(), v.to_string());
    }
    Ok(map)
}

async fn run(
    db: &Path,
    file: &Path,
    raw_inputs: &[String],
    json: bool,
    max_parallel: usize,
) -> Result<(), Failure> {
    let plan = nexus_engine::load_file(file).map_err(|d| {
        diagnostics_failure(&d, &format!("{} is not a valid workflow", file.display()))
    })?;
    let given = parse_inputs(raw_inputs)?;
    let inputs = nexus_engine::resolve_inputs(&plan, &given)
        .map_err(|d| diagnostics_failure(&d, "the run's inputs are not valid"))?;
    let store = SqliteStore::open(db).await?;
    let engine = Arc::new(Engine::new(
        providers()?,
        Some(Arc::new(store)),
        EngineConfig {
            max_parallel,
            ..EngineConfig::default()
        },
    ));
    let cancel = CancellationToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c.cancel();
        }
    });
    let plan = Arc::new(plan);
    let mut sinks: Vec<Arc<dyn EventSink>> = Vec::new();
    let progress = (!json).then(|| Arc::new(progress::Progress::new(&plan)));
    if let Some(p) = &progress {
        sinks.push(p.clone());
    }
    let report = engine
        .run(
            Arc::clone(&plan),
            inputs,
            RunOptions {
                run_id: None,
                cancel,
                sinks,
            },
        )
        .await
        .context("the run could not be recorded")?;
    if let Some(p) = &progress {
        p.finish();
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "run {} {} in {} ms",
            report.run_id,
            report.status.as_str(),
            report.duration_ms
        );
        for step in &report.steps {
            if step.status == StepStatus::Succeeded {
                continue;
            }
            println!(
                "  {} {}: {}",
                step.step_id,
                step.status.as_str(),
                step.error.as_deref().unwrap_or("")
            );
        }
        if !report.outputs.is_empty() {
            println!("\noutputs:");
            for (name, value) in &report.outputs {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("── {name} ──\n{}\n", text.trim_end());
            }
        }
    }
    match report.status {
        RunStatus::Succeeded => Ok(()),
        RunStatus::Cancelled => Err(fail(3, format!("run {} was cancelled", report.run_id))),
        _ => Err(fail(
            1,
            format!(
                "run {} failed: {}",
                report.run_id,
                report.error.unwrap_or_default()
            ),
        )),
    }
}

fn validate(files: &[PathBuf], json: bool) -> Result<(), Failure> {
    let mut all: Vec<Diagnostic> = Vec::new();
    let mut ok = Vec::new();
    for file in files {
        match nexus_engine::load_file(file) {
            Ok(plan) => ok.push((file.display().to_string(), plan.steps.len())),
            Err(d) => all.extend(d),
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "valid": ok.iter().map(|(f, _)| f).collect::<Vec<_>>(), "diagnostics": all })
            )?
        );
    } else {
        for (f, n) in &ok {
            println!("{f}: ok ({n} steps)");
        }
        if !all.is_empty() {
            eprintln!("{}", render_all(&all));
        }
    }
    if all.is_empty() {
        Ok(())
    } else {
        let n = all.len();
        Err(fail(
            2,
            format!("{n} problem{} found", if n == 1 { "" } else { "s" }),
        ))
    }
}

async fn models(json: bool) -> Result<(), Failure> {
    let providers = providers()?;
    let catalog = Catalog::discover(&providers, std::time::Duration::from_secs(3)).await;
    let order = catalog.default_order();
    if json {
        let providers: Vec<_> = catalog
            .providers
            .iter()
            .map(|s| match &s.models {
                Ok(models) => serde_json::json!({"provider": s.provider.id(), "locality": s.provider.locality(), "reachable": true, "models": models}),
                Err(e) => serde_json::json!({"provider": s.provider.id(), "locality": s.provider.locality(), "reachable": false, "error": e.to_string()}),
            })
            .collect();
        let order: Vec<_> = order
            .candidates
            .iter()
            .map(|c| serde_json::json!({"model": c.reference, "reason": c.reason}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"providers": providers, "selector_order": order})
            )?
        );
        return Ok(());
    }
    for status in &catalog.providers {
        match &status.models {
            Ok(models) => {
                println!(
                    "{} ({:?}): {} model(s)",
                    status.provider.id(),
                    status.provider.locality(),
                    models.len()
                );
                for m in models {
                    let mut details = Vec::new();
                    if let Some(c) = m.context_length {
                        details.push(format!("context {c}"));
                    }
                    if let Some(s) = m.size_bytes {
                        details.push(format!("{:.1} MB", s as f64 / 1e6));
                    }
                    if let Some(p) = &m.parameter_size {
                        details.push(p.clone());
                    }
                    if let Some(q) = &m.quantization {
                        details.push(q.clone());
                    }
                    println!("  {}  {}", m.reference(), details.join(", "));
                }
            }
            Err(e) => println!(
                "{} ({:?}): unavailable: {e}",
                status.provider.id(),
                status.provider.locality()
            ),
        }
    }
    println!("\nselector order (steps without an explicit model list):");
    if order.candidates.is_empty() {
        println!(
            "  (none: no model is available; run scripts/fetch-model.sh for the embedded model)"
        );
    }
    for (i, c) in order.candidates.iter().enumerate() {
        println!("  {}. {} — {}", i + 1, c.reference, c.reason);
    }
    for e in &order.excluded {
        println!("  skipped: {e}");
    }
    Ok(())
}

async fn runs(db: &Path, command: RunsCommand) -> Result<(), Failure> {
    let store = SqliteStore::open(db).await?;
    match command {
        RunsCommand::List { limit, json } => {
            let runs = store.list_runs(limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("no runs stored in {}", store.path().display());
            } else {
                println!(
                    "{:<36}  {:<24}  {:<10}  {:>5}  {:>7}  started",
                    "run", "workflow", "status", "steps", "tokens"
                );
                for r in runs {
                    println!(
                        "{:<36}  {:<24}  {:<10}  {:>5}  {:>7}  {}",
                        r.run_id, r.workflow_id, r.status, r.steps, r.tokens, r.started_at
                    );
                }
            }
        }
        RunsCommand::Show { id, json } => {
            let run = store.get_run(&id).await.map_err(|e| match e {
                nexus_store::Error::NotFound(_) | nexus_store::Error::Ambiguous(_) => {
                    fail(2, e.to_string())
                }
                other => fail(4, other.to_string()),
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&run)?);
                return Ok(());
            }
            println!("run       {}", run.run_id);
            println!(
                "workflow  {}{}",
                run.workflow_id,
                run.file
                    .as_deref()
                    .map(|f| format!(" ({f})"))
                    .unwrap_or_default()
            );
            println!("status    {}", run.status);
            println!("started   {}", run.started_at);
            if let Some(f) = &run.finished_at {
                println!("finished  {f}");
            }
            println!("inputs    {}", run.inputs);
            if let Some(e) = &run.error {
                println!("error     {e}");
            }
            for s in &run.steps {
                println!(
                    "\n● {} [{}] {} — {} ms",
                    s.step_id,
                    s.kind,
                    s.status.as_str(),
                    s.duration_ms
                );
                if let Some(m) = &s.model {
                    println!("  model: {m}");
                }
                if let Some(r) = &s.model_reason {
                    println!("  why:   {r}");
                }
                if let Some(u) = &s.usage {
                    println!(
                        "  tokens: {} prompt + {} completion",
                        u.prompt_tokens, u.completion_tokens
                    );
                }
                for a in &s.attempts {
                    let outcome = match (&a.error_kind, &a.error_message) {
                        (Some(k), Some(m)) => format!("failed ({k}): {m}"),
                        _ => "ok".to_string(),
                    };
                    println!(
                        "  attempt {} on {} — {} ms — {outcome}",
                        a.attempt,
                        a.model.as_deref().unwrap_or("-"),
                        a.duration_ms
                    );
                }
                for f in &s.fallbacks {
                    println!("  fallback: {} → {} ({})", f.from, f.to, f.reason);
                }
                if let Some(e) = &s.error {
                    println!("  error: {e}");
                }
                if let Some(o) = &s.output {
                    println!("  output: {}", o.trim());
                }
            }
            if let Some(outputs) = &run.outputs {
                println!("\noutputs: {}", serde_json::to_string_pretty(outputs)?);
            }
        }
    }
    Ok(())
}
