//! `nexus`: run, validate and inspect workflows from the command line.
//!
//! Exit codes: 0 success; 1 the run finished with a failed step; 2 the workflow or the
//! command line is invalid; 3 the run was cancelled (Ctrl-C, `nexus cancel`); 4 the run
//! database failed. On failure the last line on stderr is a one-line reason.
//!
//! A running `nexus run` refreshes its run's heartbeat every second and obeys control
//! requests left in the database by `nexus pause|resume|cancel RUN` (from another
//! terminal or the desktop app). A run whose process died (its heartbeat is older than
//! [`runs::STALE_AFTER`]) is continued by `nexus resume RUN`.
//!
//! The CLI reaches the engine and the run database only through `nexus_app` (its
//! [`runs`] module is shared with the desktop app), so both build, run, watch and resume
//! runs the same way.

mod human;
mod progress;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use nexus_app::engine::diagnostic::render_all;
use nexus_app::engine::events::{EventSink, RunStatus, StepStatus};
use nexus_app::engine::plan::Plan;
use nexus_app::engine::provider::Locality;
use nexus_app::engine::select::{Catalog, SelectionInput};
use nexus_app::engine::{Diagnostic, RunOptions};
use nexus_app::runs::{self, Control, Resumption};
use nexus_app::setup::{Partial, ProviderSettings};
use nexus_app::store::SqliteStore;

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
        /// Ignore cached step outputs: run every step afresh.
        #[arg(long)]
        fresh: bool,
        /// Run from this step: run it and its dependants again, reuse the other steps'
        /// outputs from an earlier run (`--reuse`, default: this workflow's latest run).
        #[arg(long, value_name = "STEP")]
        from: Option<String>,
        /// The run whose outputs `--from` reuses (id or prefix).
        #[arg(long, value_name = "RUN", requires = "from")]
        reuse: Option<String>,
        /// Run up to this step: only it and the steps it depends on.
        #[arg(long, value_name = "STEP")]
        until: Option<String>,
        /// Give the `shell` tool NAME permission to run without asking (repeatable); it
        /// is remembered until the workflow file changes.
        #[arg(long = "allow-tool", value_name = "NAME")]
        allow_tools: Vec<String>,
    },
    /// Continue a run: a paused run is resumed by the process running it; an interrupted
    /// run (its process died) is continued here, keeping its completed steps.
    Resume {
        /// Run id or prefix.
        id: String,
        /// Print the run report as JSON.
        #[arg(long)]
        json: bool,
        /// Most `llm` steps in flight at once.
        #[arg(long, default_value_t = 8)]
        max_parallel: usize,
        /// Give the `shell` tool NAME permission to run without asking (repeatable).
        #[arg(long = "allow-tool", value_name = "NAME")]
        allow_tools: Vec<String>,
    },
    /// Pause a running run: steps in flight finish, no new step starts.
    Pause {
        /// Run id or prefix.
        id: String,
    },
    /// Cancel a running run: in-flight requests are aborted.
    Cancel {
        /// Run id or prefix.
        id: String,
    },
    /// Print the error taxonomy: each error class, its action and the rule's source.
    Errors,
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
    /// The permissions given to `shell` tools and stdio MCP servers.
    Permissions {
        #[command(subcommand)]
        command: PermissionsCommand,
    },
    /// Secrets that tools read by name (an `http` tool's `auth`), kept in the OS
    /// keychain; where there is none, set `NEXUS_SECRET_<NAME>` instead.
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Print the JSON Schema of the workflow file format.
    Schema,
    /// Serve the HTTP API (and the editor as a web app) until Ctrl-C. Binds loopback;
    /// another address needs --allow-remote and an API token in NEXUS_API_TOKEN (with a
    /// token set, loopback requests need it too).
    Serve {
        /// Where to listen (port 0: any free port; the address is printed).
        #[arg(long, default_value = nexus_server::DEFAULT_ADDR)]
        bind: std::net::SocketAddr,
        /// Allow a non-loopback address (needs NEXUS_API_TOKEN).
        #[arg(long)]
        allow_remote: bool,
        /// The workflows folder the API lists and saves to. Default: `NEXUS_WORKFLOWS`,
        /// else `workflows/` here or above, else `<documents>/Nexus/workflows`.
        #[arg(long, env = "NEXUS_WORKFLOWS")]
        workflows: Option<PathBuf>,
        /// The built editor to serve at `/` (`ui/dist`). Default: `ui/dist` here when
        /// it is built; without it only the API is served.
        #[arg(long, env = "NEXUS_EDITOR")]
        editor: Option<PathBuf>,
        /// The largest request body accepted, bytes.
        #[arg(long, default_value_t = nexus_server::DEFAULT_BODY_LIMIT)]
        body_limit: usize,
        /// The URL others reach this server at, the base of runs' callback URLs
        /// (`{{ run.callback_url }}`). Default: `http://<bound address>`.
        #[arg(long, env = "NEXUS_PUBLIC_URL")]
        public_url: Option<String>,
    },
    /// Print the OpenAPI document of `nexus serve`'s API.
    Openapi,
    /// Start `nexus serve` at login so schedules and webhooks fire without the desktop
    /// app: a systemd user unit (Linux), a launchd agent (macOS), a scheduled task
    /// (Windows).
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
}

#[derive(Subcommand)]
enum ServiceCommand {
    /// Write the service's file (this binary, `serve`, loopback) and enable and start it.
    Install {
        /// Where the service listens (loopback only: a unit file never holds a token).
        #[arg(long, default_value = nexus_server::DEFAULT_ADDR)]
        bind: std::net::SocketAddr,
        /// The workflows folder it serves. Default: as `nexus serve` finds it from here.
        #[arg(long, env = "NEXUS_WORKFLOWS")]
        workflows: Option<PathBuf>,
        /// Only write the file; do not ask the service manager to enable it (e.g. on a
        /// machine without a user session manager); the command to do so is printed.
        #[arg(long)]
        no_enable: bool,
        /// Print the file that would be written, and where, and change nothing.
        #[arg(long)]
        print: bool,
    },
    /// Stop and disable the service and remove its file.
    Uninstall,
    /// Whether the service is installed and what its manager says about it.
    Status {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The most recent runs.
    List {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only the runs a trigger of this kind or name started (`cron`, `webhook`,
        /// `file`, a trigger's name); `manual`: the runs a person started.
        #[arg(long)]
        trigger: Option<String>,
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

#[derive(Subcommand)]
enum SecretCommand {
    /// Store secret NAME, its value read from standard input (one line; never an
    /// argument, so it stays out of the shell's history).
    Set {
        /// The secret's name, as a tool's `auth` gives it.
        name: String,
    },
    /// Remove secret NAME from the keychain.
    Delete {
        /// The secret's name.
        name: String,
    },
}

#[derive(Subcommand)]
enum PermissionsCommand {
    /// Every permission given, newest first.
    List {
        /// Print as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Take back a workflow's permissions (all its tools, or one); its next run asks again.
    Revoke {
        /// The workflow's id.
        workflow: String,
        /// Only this tool.
        #[arg(long)]
        tool: Option<String>,
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
    // Log lines on stderr (`NEXUS_LOG`), spans over OTLP when `OTEL_EXPORTER_OTLP_*`
    // configures an endpoint; before the runtime, whose blocking HTTP client it is not.
    let (telemetry, problem) = nexus_app::telemetry::init("NEXUS_LOG", "warn");
    if let Some(problem) = problem {
        eprintln!("warning: traces are not exported: {problem}");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(4);
        }
    };
    let result = runtime.block_on(dispatch(cli));
    // Do not wait for a blocking read of the terminal that no question needs any more.
    runtime.shutdown_background();
    if let Err(e) = telemetry.shutdown() {
        eprintln!("warning: {e}");
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), Failure> {
    let db = cli
        .db
        .clone()
        .unwrap_or_else(nexus_app::store::default_path);
    match cli.command {
        Command::Run {
            file,
            inputs,
            json,
            max_parallel,
            fresh,
            from,
            reuse,
            until,
            allow_tools,
        } => {
            let partial = Partial { from, reuse, until };
            let session = Session {
                json,
                max_parallel,
                allow_tools,
            };
            run(&db, &file, &inputs, fresh, partial, session).await
        }
        Command::Resume {
            id,
            json,
            max_parallel,
            allow_tools,
        } => {
            let session = Session {
                json,
                max_parallel,
                allow_tools,
            };
            resume(&db, &id, session).await
        }
        Command::Pause { id } => control(&db, &id, Control::Pause).await,
        Command::Cancel { id } => control(&db, &id, Control::Cancel).await,
        Command::Errors => {
            print!("{}", nexus_app::engine::provider::taxonomy_markdown());
            Ok(())
        }
        Command::Validate { files, json } => validate(&files, json),
        Command::Models { json } => models(&db, json).await,
        Command::Runs { command } => runs(&db, command).await,
        Command::Permissions { command } => permissions(&db, command).await,
        Command::Secret { command } => secret(command),
        Command::Serve {
            bind,
            allow_remote,
            workflows,
            editor,
            body_limit,
            public_url,
        } => {
            let site = Site {
                bind,
                allow_remote,
                editor,
                body_limit,
                public_url,
            };
            serve(db, workflows, site).await
        }
        Command::Service { command } => service(db, command).await,
        Command::Openapi => {
            use std::io::Write;
            let text = nexus_server::openapi::json()?;
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(())
        }
        Command::Schema => {
            use std::io::Write;
            let schema = nexus_app::engine::workflow::json_schema();
            let text = format!("{}\n", serde_json::to_string_pretty(&schema)?);
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(())
        }
    }
}

/// `nexus service ...` (see [`nexus_app::service`]).
async fn service(db: PathBuf, command: ServiceCommand) -> Result<(), Failure> {
    use nexus_app::service::{self as svc, Manager};
    let manager = Manager::native();
    let (home, config) = svc::user_folders()?;
    let file = svc::file_path(manager, &home, &config);
    match command {
        ServiceCommand::Install {
            bind,
            workflows,
            no_enable,
            print,
        } => {
            if !bind.ip().is_loopback() {
                return Err(Failure {
                    code: 2,
                    message: format!(
                        "the service binds loopback only (a unit file must not hold an API token); `{bind}` is not; run `nexus serve --allow-remote` yourself for that"
                    ),
                });
            }
            let program = std::env::current_exe()?.canonicalize()?;
            let folder =
                workflows.unwrap_or_else(|| nexus_app::Paths::standard().default_workflows);
            let spec = svc::serve_spec(program, bind, &folder, &db, &home);
            if print {
                match manager {
                    Manager::Systemd => print!("{}", svc::systemd_unit(&spec)),
                    Manager::Launchd => print!("{}", svc::launchd_plist(&spec)?),
                    Manager::TaskScheduler => {
                        println!("schtasks {}", svc::schtasks_create(&spec).join(" "))
                    }
                }
                if let Some(f) = &file {
                    eprintln!("would be written to {}", f.display());
                }
                return Ok(());
            }
            let ran = svc::install(manager, &spec, file.as_deref(), !no_enable).await?;
            if let Some(f) = &file {
                println!("written: {}", f.display());
            }
            for cmd in ran {
                println!("ran: {cmd}");
            }
            if no_enable && manager == Manager::Systemd {
                println!(
                    "enable it with: systemctl --user enable --now {}",
                    svc::SYSTEMD_UNIT
                );
            }
            Ok(())
        }
        ServiceCommand::Uninstall => {
            for note in svc::uninstall(manager, file.as_deref()).await? {
                eprintln!("note: {note}");
            }
            println!("the service is removed");
            Ok(())
        }
        ServiceCommand::Status { json } => {
            let status = svc::status(manager, file.as_deref()).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                let file = status
                    .file
                    .as_ref()
                    .map(|f| format!(" ({})", f.display()))
                    .unwrap_or_default();
                println!(
                    "{}{file}; {}",
                    if status.installed {
                        "installed"
                    } else {
                        "not installed"
                    },
                    status.state
                );
            }
            Ok(())
        }
    }
}

/// Where and how `nexus serve` listens (its flags).
struct Site {
    bind: std::net::SocketAddr,
    allow_remote: bool,
    editor: Option<PathBuf>,
    body_limit: usize,
    public_url: Option<String>,
}

/// `nexus serve`: the app's operations over HTTP; the run database is shared with the
/// CLI and the desktop app. Cloud keys come from the environment only.
async fn serve(db: PathBuf, workflows: Option<PathBuf>, site: Site) -> Result<(), Failure> {
    let Site {
        bind: addr,
        allow_remote,
        editor,
        body_limit,
        public_url,
    } = site;
    let mut paths = nexus_app::Paths::standard();
    paths.database = db;
    if let Some(folder) = workflows {
        paths.default_workflows = std::path::absolute(&folder).unwrap_or(folder);
    }
    // The server never changes the folder, so it never writes this file; the desktop
    // app's own settings file is not read.
    if let Some(dir) = paths.settings_file.parent() {
        paths.settings_file = dir.join("serve.json");
    }
    let editor = editor.or_else(|| {
        let built = PathBuf::from("ui/dist");
        built.join("index.html").is_file().then_some(built)
    });
    let config = nexus_server::Config {
        addr,
        allow_remote,
        token: std::env::var("NEXUS_API_TOKEN").ok(),
        editor,
        body_limit,
        public_url,
    };
    let desktop =
        nexus_app::Desktop::new(paths, Arc::new(nexus_app::keys::ProcessSecrets::default()));
    let with_editor = config.editor.is_some();
    nexus_server::serve(desktop, config, |bound| {
        use std::io::Write;
        // A closed stdout (the starting process stopped reading) must not stop the
        // server: write errors are ignored (`println!` would panic).
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "nexus serve: listening on http://{bound}");
        if with_editor {
            let _ = writeln!(out, "nexus serve: the editor is at http://{bound}/");
        }
        let _ = out.flush();
    })
    .await
    .map_err(|e| fail(2, e.to_string()))
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

/// The exit code and message of an app error: 4 for the run database, 2 for the rest
/// (bad workflow, unknown or finished run, configuration); diagnostics are printed.
fn app_failure(e: nexus_app::Error) -> Failure {
    match e {
        nexus_app::Error::Store { message } => fail(4, message),
        nexus_app::Error::InvalidWorkflow { diagnostics } => {
            diagnostics_failure(&diagnostics, "the stored workflow is no longer valid")
        }
        other => fail(2, other.to_string()),
    }
}

/// How a run is shown and answered in this terminal.
struct Session {
    /// Print the report as JSON instead of progress and text.
    json: bool,
    /// Most `llm` steps in flight at once.
    max_parallel: usize,
    /// `shell` tools given permission on the command line.
    allow_tools: Vec<String>,
}

async fn run(
    db: &Path,
    file: &Path,
    raw_inputs: &[String],
    fresh: bool,
    partial: Partial,
    session: Session,
) -> Result<(), Failure> {
    let plan = nexus_app::engine::load_file(file).map_err(|d| {
        diagnostics_failure(&d, &format!("{} is not a valid workflow", file.display()))
    })?;
    let given = parse_inputs(raw_inputs)?;
    let inputs = nexus_app::engine::resolve_inputs(&plan, &given)
        .map_err(|d| diagnostics_failure(&d, "the run's inputs are not valid"))?;
    let store = runs::open_store(db).await.map_err(app_failure)?;
    let mut options = RunOptions {
        use_cache: !fresh,
        ..RunOptions::default()
    };
    nexus_app::setup::apply_partial(&store, &plan, &partial, &mut options)
        .await
        .map_err(app_failure)?;
    execute(store, Arc::new(plan), inputs, options, session).await
}

/// Runs (or continues) a run with progress, heartbeat, control requests and a terminal
/// for human questions; prints the report and maps the outcome to the exit code.
async fn execute(
    store: Arc<SqliteStore>,
    plan: Arc<Plan>,
    inputs: serde_json::Map<String, serde_json::Value>,
    mut options: RunOptions,
    session: Session,
) -> Result<(), Failure> {
    let Session {
        json,
        max_parallel,
        allow_tools,
    } = session;
    // The CLI takes the environment's cloud keys, and the providers file's and tools'
    // secrets from the keychain, then the environment.
    let engine = runs::engine(Arc::clone(&store), &cli_provider_settings(), max_parallel)
        .await
        .map_err(app_failure)?;
    engine.set_secrets(Arc::new(nexus_app::keys::ToolSecrets::new(Arc::new(
        nexus_app::keys::Keychain::new(nexus_app::keys::SERVICE),
    ))));
    let c = options.cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            c.cancel();
        }
    });
    let progress = (!json).then(|| Arc::new(progress::Progress::new(&plan)));
    if let Some(p) = &progress {
        options.sinks.push(p.clone() as Arc<dyn EventSink>);
    }
    // The notifications of the workflow and of its sub-workflows' files, sent before
    // this process exits (at most 30 s more).
    let notifier = Arc::new(nexus_app::notify::Notifier::new(Arc::new(
        nexus_app::metrics::Metrics::new(),
    )));
    let run_id = options.run_id.get_or_insert_with(runs::new_run_id).clone();
    notifier.attach(&mut options, &run_id, &plan.workflow);
    options.human = Some(Arc::new(human::Terminal::new(
        progress.as_ref().map(|p| p.multi()),
        allow_tools,
    )));
    // Heartbeat and control requests from `nexus pause|resume|cancel`.
    let report = runs::execute(&engine, &store, Arc::clone(&plan), inputs, options)
        .await
        .map_err(app_failure);
    // The database's worker threads hold the span of their last statement (sqlx), so
    // the run's span ends only once they are done: close them before the spans are
    // exported at exit.
    store.close().await;
    let report = report?;
    if let Some(p) = &progress {
        p.finish();
    }
    let left = notifier.drain(std::time::Duration::from_secs(30)).await;
    if left > 0 {
        eprintln!("{left} notification(s) still being retried were abandoned at exit");
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

async fn control(db: &Path, id: &str, request: Control) -> Result<(), Failure> {
    let store = runs::open_store(db).await.map_err(app_failure)?;
    let run_id = runs::request_control(&store, id, request)
        .await
        .map_err(app_failure)?;
    println!("asked the process running {run_id} to {}", request.as_str());
    Ok(())
}

async fn resume(db: &Path, id: &str, session: Session) -> Result<(), Failure> {
    let store = runs::open_store(db).await.map_err(app_failure)?;
    let run = match runs::prepare_resume(&store, id, None)
        .await
        .map_err(app_failure)?
    {
        Resumption::Asked { run_id } => {
            println!("asked the process running {run_id} to resume");
            return Ok(());
        }
        Resumption::Continue(run) => *run,
    };
    if !session.json {
        eprintln!(
            "resuming run {} ({} of {} steps already completed)",
            run.run_id,
            run.completed,
            run.plan.steps.len()
        );
    }
    execute(store, Arc::new(run.plan), run.inputs, run.options, session).await
}

fn validate(files: &[PathBuf], json: bool) -> Result<(), Failure> {
    let mut all: Vec<Diagnostic> = Vec::new();
    let mut ok = Vec::new();
    for file in files {
        match nexus_app::engine::load_file(file) {
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

/// The CLI's providers: the environment's, and `providers.yaml`'s with their keys from
/// the keychain, then the environment (`NEXUS_SECRET_<NAME>`).
fn cli_provider_settings() -> ProviderSettings {
    ProviderSettings {
        secrets: Some(Arc::new(nexus_app::keys::ToolSecrets::new(Arc::new(
            nexus_app::keys::Keychain::new(nexus_app::keys::SERVICE),
        )))),
        ..ProviderSettings::default()
    }
}

async fn models(db: &Path, json: bool) -> Result<(), Failure> {
    let store = runs::open_store(db).await.map_err(app_failure)?;
    let engine = runs::engine(store, &cli_provider_settings(), 8)
        .await
        .map_err(app_failure)?;
    let breakers = engine.breaker_states().await?;
    let stats = engine.model_stats();
    let catalog = Catalog::discover(engine.providers(), std::time::Duration::from_secs(3)).await;
    let order = engine.rank(
        &SelectionInput {
            max_tokens: nexus_app::engine::plan::DEFAULT_MAX_TOKENS,
            ..SelectionInput::default()
        },
        &catalog,
    );
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
            .map(|c| serde_json::json!({"model": c.reference, "score": c.score.total, "reason": c.reason}))
            .collect();
        let breakers: Vec<_> = breakers
            .iter()
            .map(|(k, state, snap)| serde_json::json!({"model": k, "state": state, "trips": snap.trips, "last_failure": snap.last_failure}))
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"providers": providers, "selector_order": order, "breakers": breakers, "stats": stats})
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
                    let mut details = vec![format!("{:?}", m.locality).to_lowercase()];
                    if m.locality == Locality::Cloud
                        && status.provider.locality() != Locality::Cloud
                    {
                        details[0].push_str(" (through the local daemon)");
                    }
                    match (m.context_length, m.loaded_context_length) {
                        (Some(c), Some(l)) => {
                            details.push(format!("context {c} tokens (loaded now with {l})"));
                        }
                        (Some(c), None) => details.push(format!("context {c} tokens")),
                        (None, Some(l)) => details.push(format!("context {l} tokens (loaded)")),
                        (None, None) => {}
                    }
                    if !m.capabilities.is_empty() {
                        let caps: Vec<&str> = m.capabilities.iter().map(|c| c.as_str()).collect();
                        details.push(format!("capabilities {}", caps.join("+")));
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
        println!(
            "  {}. {} — {}; {}",
            i + 1,
            c.reference,
            c.reason,
            c.score
                .describe(nexus_app::engine::workflow::TaskClass::General)
        );
    }
    for e in &order.excluded() {
        println!("  skipped: {e}");
    }
    println!("\ncircuit breakers:");
    if breakers.is_empty() {
        println!("  (none yet: every model is closed)");
    }
    for (key, state, snap) in &breakers {
        let state = match state {
            nexus_app::engine::breaker::BreakerState::Closed => "closed".to_string(),
            nexus_app::engine::breaker::BreakerState::HalfOpen => "half-open".to_string(),
            nexus_app::engine::breaker::BreakerState::Open { until } => {
                format!("open until {}", until.to_rfc3339())
            }
        };
        let calls = stats.get(key).map_or(0, |s| s.calls);
        println!(
            "  {key}: {state} (trips {}, {calls} calls observed{})",
            snap.trips,
            snap.last_failure
                .as_deref()
                .map(|f| format!(", last failure: {f}"))
                .unwrap_or_default()
        );
    }
    Ok(())
}

/// `nexus secret set|delete NAME`: the OS keychain entry `nexus` / `secret:NAME`.
fn secret(command: SecretCommand) -> Result<(), Failure> {
    use nexus_app::keys::{Keychain, SERVICE, SecretStore, secret_account};
    let keychain = Keychain::new(SERVICE);
    let keychain_failure = |e: nexus_app::Error| {
        fail(
            1,
            format!("{e}; where there is no keychain, set the environment variable instead"),
        )
    };
    match command {
        SecretCommand::Set { name } => {
            let mut value = String::new();
            std::io::stdin()
                .read_line(&mut value)
                .map_err(|e| fail(1, format!("cannot read the value from standard input: {e}")))?;
            let value = value.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                return Err(fail(2, "the value is empty: give it on standard input"));
            }
            keychain
                .set(&secret_account(&name), value)
                .map_err(keychain_failure)?;
            eprintln!("secret `{name}` stored in the OS keychain");
        }
        SecretCommand::Delete { name } => {
            keychain
                .delete(&secret_account(&name))
                .map_err(keychain_failure)?;
            eprintln!("secret `{name}` removed");
        }
    }
    Ok(())
}

async fn permissions(db: &Path, command: PermissionsCommand) -> Result<(), Failure> {
    let store: Arc<SqliteStore> = runs::open_store(db).await.map_err(app_failure)?;
    match command {
        PermissionsCommand::List { json } => {
            let all = store.list_permissions().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&all)?);
            } else if all.is_empty() {
                println!("no permissions given in {}", store.path().display());
            } else {
                for p in all {
                    println!(
                        "{}  {}  `{}`  (file {}…, given {})",
                        p.workflow_id,
                        p.tool,
                        p.command.join(" "),
                        p.workflow_hash.chars().take(12).collect::<String>(),
                        p.granted_at
                    );
                }
            }
        }
        PermissionsCommand::Revoke { workflow, tool } => {
            let n = store.revoke_permissions(&workflow, tool.as_deref()).await?;
            println!("revoked {n} permission(s) of `{workflow}`; its next run asks again");
        }
    }
    Ok(())
}

async fn runs(db: &Path, command: RunsCommand) -> Result<(), Failure> {
    let store: Arc<SqliteStore> = runs::open_store(db).await.map_err(app_failure)?;
    match command {
        RunsCommand::List {
            limit,
            trigger,
            json,
        } => {
            let filter = nexus_app::store::RunFilter { trigger };
            let runs = store.list_runs_where(limit, &filter).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&runs)?);
            } else if runs.is_empty() {
                println!("no runs stored in {}", store.path().display());
            } else {
                println!(
                    "{:<36}  {:<24}  {:<10}  {:>5}  {:>7}  {:<16}  started",
                    "run", "workflow", "status", "steps", "tokens", "trigger"
                );
                for r in runs {
                    let by = r.trigger.as_ref().map_or_else(
                        || "manual".to_string(),
                        |t| format!("{}:{}", t.kind, t.name),
                    );
                    println!(
                        "{:<36}  {:<24}  {:<10}  {:>5}  {:>7}  {:<16}  {}",
                        r.run_id, r.workflow_id, r.status, r.steps, r.tokens, by, r.started_at
                    );
                }
            }
        }
        RunsCommand::Show { id, json } => {
            let run = store
                .get_run(&id)
                .await
                .map_err(|e| app_failure(e.into()))?;
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
                if s.cached {
                    println!("  cached: output reused from an earlier run");
                }
                if let Some(sel) = &s.selection {
                    println!(
                        "  selector (task {}, ~{} prompt tokens):",
                        sel.task, sel.prompt_tokens
                    );
                    for (i, r) in sel.ranked.iter().enumerate() {
                        println!(
                            "    {}. {} {} est ${:.6} — {}",
                            i + 1,
                            r.model,
                            r.score.describe(
                                serde_json::from_value(serde_json::Value::String(sel.task.clone()))
                                    .unwrap_or_default()
                            ),
                            r.est_cost_usd,
                            r.reason
                        );
                    }
                    for x in &sel.excluded {
                        println!("    excluded {}: {}", x.model, x.reason);
                    }
                }
                if let Some(c) = s.cost_usd {
                    println!("  cost:  ${c:.6}");
                }
                for g in &s.guardrails {
                    println!(
                        "  guardrail: {} {} × {} ({}, {}) e.g. {}",
                        g.stage, g.detector, g.count, g.severity, g.action, g.sample
                    );
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
                    println!(
                        "  fallback [{}]: {} → {} ({})",
                        f.rung, f.from, f.to, f.reason
                    );
                }
                if let Some(e) = &s.error {
                    println!("  error: {e}");
                }
                if let Some(r) = &s.reasoning {
                    println!("  reasoning (not passed on): {}", r.trim());
                }
                print_transcript(&s.transcript);
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

/// An agent step's transcript, one line per model call and tool call (long texts cut at
/// 200 characters).
fn print_transcript(transcript: &[nexus_app::engine::store::TranscriptEntry]) {
    use nexus_app::engine::store::TranscriptEntry;
    let short = |t: &str| {
        let t = t.trim().replace('\n', " ");
        if t.chars().count() > 200 {
            format!("{}…", t.chars().take(200).collect::<String>())
        } else {
            t
        }
    };
    for e in transcript {
        match e {
            TranscriptEntry::Model {
                iteration,
                model,
                strategy,
                text,
                tool_calls,
                prompt_tokens,
                completion_tokens,
                duration_ms,
            } => {
                let calls: Vec<&str> = tool_calls.iter().map(|c| c.name.as_str()).collect();
                let said = if calls.is_empty() {
                    format!("answered: {}", short(text))
                } else {
                    format!("called {}", calls.join(", "))
                };
                println!(
                    "  [{iteration}] model {model} ({strategy}) — {prompt_tokens}+{completion_tokens} tokens, {duration_ms} ms — {said}"
                );
            }
            TranscriptEntry::Tool {
                iteration,
                name,
                arguments,
                ok,
                result,
                duration_ms,
                ..
            } => println!(
                "  [{iteration}] tool {name}({}) — {} in {duration_ms} ms: {}",
                short(&arguments.to_string()),
                if *ok { "ok" } else { "error" },
                short(result)
            ),
        }
    }
}
