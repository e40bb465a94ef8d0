//! Test support for the cross-crate tests: paths, the real servers the tests start on
//! loopback, and a scripted OpenAI-compatible server for fault injection.
//!
//! - [`LlamaServer`]: `python -m llama_cpp.server` (llama-cpp-python) with the embedded
//!   GGUF, a real OpenAI-compatible server.
//! - [`OllamaServer`]: `tests/servers/ollama_server.py`, a server that follows Ollama's
//!   documented API field for field with the same GGUF behind it (the Ollama daemon cannot
//!   be installed on the test machines).
//! - [`scripted`]: an axum server that speaks OpenAI's streaming chat completions and
//!   fails in the ways a test scripts (status codes, hangs, cut streams, slow streams).
//! - [`anthropic`]: an axum server that answers as Anthropic's Messages API streams.
//!
//! Invariant: a server process that exits on its own never passes for a refused
//! connection: its output is logged and a test that meets its death fails with its exit
//! status and the end of that log ([`ServerProcess`]).

pub mod anthropic;
pub mod proxy;
pub mod scripted;

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// Asserts that every stored step of `run` succeeded, naming the first that did not
/// with its error.
pub fn assert_steps_succeeded(run: &nexus_store::StoredRun) {
    for s in &run.steps {
        assert_eq!(
            s.status,
            nexus_engine::events::StepStatus::Succeeded,
            "{}: {:?}",
            s.step_id,
            s.error
        );
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The embedded GGUF model; fails with instructions when it is not in place.
pub fn model_path() -> anyhow::Result<PathBuf> {
    let p = nexus_embedded::default_model_path();
    if !p.exists() {
        bail!(
            "the embedded model is missing at {}: run scripts/fetch-model.sh",
            p.display()
        );
    }
    Ok(p)
}

/// A free TCP port on loopback.
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// How many lines of a server's log a failure shows.
pub const LOG_TAIL_LINES: usize = 40;
/// At most this many bytes from the end of a server's log are read for a failure
/// (a request log can grow; the tail is what explains a crash).
const LOG_TAIL_BYTES: u64 = 16 * 1024;

/// A server process a test started, killed on drop. Its stdout and stderr go to a log file
/// in a temporary directory (Python runs unbuffered with `faulthandler` on, so a crash in
/// native code leaves "Fatal Python error: Segmentation fault" and the stack there).
///
/// A server that exits on its own is a test failure that shows the server's exit status and
/// the last [`LOG_TAIL_LINES`] lines of its log: the start functions return it as their
/// error, [`ServerProcess::check`] and [`ServerProcess::explain`] return it during a test,
/// and otherwise dropping the process panics with it (or, when the test is already
/// panicking, prints it to stderr). A death is reported once; [`ServerProcess::stop`] is a
/// deliberate stop, never reported.
pub struct ServerProcess {
    child: Option<Child>,
    /// What the reports call it, e.g. "the llama-cpp-python server".
    name: &'static str,
    log: PathBuf,
    _log_dir: tempfile::TempDir,
    /// The port it listens on.
    pub port: u16,
}

impl ServerProcess {
    /// Spawns `cmd` with stderr (and stdout unless `pipe_stdout`) appended to a fresh log
    /// file; a piped stdout is returned for the caller to read (and copy to the log).
    fn spawn(
        name: &'static str,
        cmd: &mut Command,
        pipe_stdout: bool,
    ) -> anyhow::Result<(Self, Option<std::process::ChildStdout>)> {
        let log_dir = tempfile::Builder::new()
            .prefix("nexus-server-log")
            .tempdir()?;
        let log = log_dir.path().join("server.log");
        // Appending, so the server's writes and the copied stdout never overwrite each other.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let stdout = if pipe_stdout {
            Stdio::piped()
        } else {
            Stdio::from(file.try_clone()?)
        };
        let mut child = cmd
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONFAULTHANDLER", "1")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(Stdio::from(file))
            .spawn()
            .with_context(|| format!("cannot start {name} ({cmd:?})"))?;
        let piped = child.stdout.take();
        let process = ServerProcess {
            child: Some(child),
            name,
            log,
            _log_dir: log_dir,
            port: 0,
        };
        Ok((process, piped))
    }

    /// The log file (stdout and stderr of the server); removed with the process.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log opened for appending (a piped stdout is copied here).
    fn log_file(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new().append(true).open(&self.log)
    }

    /// The last [`LOG_TAIL_LINES`] lines of the log, lossily decoded; a note when it cannot
    /// be read.
    pub fn log_tail(&self) -> String {
        let read = || -> std::io::Result<String> {
            let mut f = std::fs::File::open(&self.log)?;
            let len = f.metadata()?.len();
            f.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes)?;
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        };
        match read() {
            Ok(text) => {
                let lines: Vec<&str> = text.lines().collect();
                let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
                if tail.is_empty() {
                    "(the log is empty)".to_string()
                } else {
                    tail.join("\n")
                }
            }
            Err(e) => format!("(cannot read the log {}: {e})", self.log.display()),
        }
    }

    /// The process id, while the process is ours.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Waits until the process exits (for a test that kills it from outside) and returns
    /// its status; `None` when it was already stopped or reported.
    pub fn wait(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.wait().ok())
    }

    /// The report of a server that exited on its own, taken once: `None` while it runs (or
    /// after [`Self::stop`] or an earlier report).
    fn take_death(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        let pid = self.child.take().map(|c| c.id()).unwrap_or_default();
        Some(format!(
            "{} (pid {pid}) exited on its own with {status}; the last lines of its log ({}):\n{}",
            self.name,
            self.log.display(),
            self.log_tail()
        ))
    }

    /// `Ok` while the server runs; the exit status and the tail of its log once it has
    /// exited on its own.
    ///
    /// # Errors
    /// The death report described on [`ServerProcess`].
    pub fn check(&mut self) -> anyhow::Result<()> {
        match self.take_death() {
            Some(report) => Err(anyhow::anyhow!(report)),
            None => Ok(()),
        }
    }

    /// `err` (e.g. a refused connection) with the death report attached when the server has
    /// exited on its own, else `err` as it is. Use it where a request to the server failed:
    /// `provider.chat(req).await.map_err(|e| server.process.explain(e))?`.
    pub fn explain(&mut self, err: impl Into<anyhow::Error>) -> anyhow::Error {
        let err = err.into();
        match self.take_death() {
            Some(report) => err.context(report),
            None => err,
        }
    }

    /// Stops the server now (SIGKILL) and waits for it; a deliberate stop, not reported.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(report) = self.take_death() {
            if std::thread::panicking() {
                eprintln!("{report}");
            } else {
                panic!("{report}");
            }
        } else if self.child.is_some() && std::thread::panicking() {
            eprintln!(
                "{} was still running when the test failed; the last lines of its log ({}):\n{}",
                self.name,
                self.log.display(),
                self.log_tail()
            );
        }
        self.stop();
    }
}

/// The real OpenAI-compatible server (llama-cpp-python).
pub struct LlamaServer {
    /// The process.
    pub process: ServerProcess,
    /// `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
}

impl LlamaServer {
    /// Starts `python3 -m llama_cpp.server` serving the embedded GGUF as `alias`, and waits
    /// until `GET /v1/models` answers.
    ///
    /// # Errors
    /// When python or llama-cpp-python is missing (run scripts/setup-test-servers.sh), the
    /// server exits while starting (its exit status and log tail) or does not answer within
    /// 120 s.
    pub fn start(alias: &str) -> anyhow::Result<Self> {
        Self::start_with_model(alias, &model_path()?)
    }

    /// [`LlamaServer::start`] with another GGUF file.
    ///
    /// # Errors
    /// As [`LlamaServer::start`].
    pub fn start_with_model(alias: &str, model: &Path) -> anyhow::Result<Self> {
        Self::start_with(alias, model, &[])
    }

    /// [`LlamaServer::start`] with more of the server's options (`--chat_format
    /// chatml-function-calling`, `--embedding true`).
    ///
    /// # Errors
    /// As [`LlamaServer::start`].
    pub fn start_with_args(alias: &str, args: &[&str]) -> anyhow::Result<Self> {
        Self::start_with(alias, &model_path()?, args)
    }

    fn start_with(alias: &str, model: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "llama_cpp.server", "--model"])
            .arg(model)
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--model_alias",
                alias,
                "--n_ctx",
                "2048",
            ])
            .args(args);
        let (mut process, _) = ServerProcess::spawn("the llama-cpp-python server", &mut cmd, false)
            .context("run scripts/setup-test-servers.sh")?;
        process.port = port;
        let base_url = format!("http://127.0.0.1:{port}/v1");
        // A server started with `--api_key` answers only requests that carry it.
        let key = args
            .iter()
            .position(|a| *a == "--api_key")
            .and_then(|i| args.get(i + 1))
            .copied();
        wait_http(
            &mut process,
            &format!("{base_url}/models"),
            key,
            Duration::from_secs(120),
        )?;
        Ok(LlamaServer { process, base_url })
    }
}

/// The Ollama-protocol server (tests/servers/ollama_server.py).
pub struct OllamaServer {
    /// The process.
    pub process: ServerProcess,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl OllamaServer {
    /// Starts the server reporting `names` as the installed models (all served by the
    /// embedded GGUF).
    ///
    /// # Errors
    /// When it exits while starting (its exit status and log tail) or does not print
    /// `READY <port>` within 120 s.
    pub fn start(names: &[&str]) -> anyhow::Result<Self> {
        Self::start_with_model(names, &model_path()?)
    }

    /// [`OllamaServer::start`] with another GGUF file.
    ///
    /// # Errors
    /// As [`OllamaServer::start`].
    pub fn start_with_model(names: &[&str], model: &Path) -> anyhow::Result<Self> {
        Self::start_with(names, model, &[], &[])
    }

    /// [`OllamaServer::start`] with more models described by `specs` (each a JSON
    /// object, see the `--spec` option in tests/servers/ollama_server.py: capabilities,
    /// a trained window, `remote_host` for a cloud model, a canned `script` reply) and
    /// more command-line arguments (`--default-num-ctx 2048`).
    ///
    /// # Errors
    /// As [`OllamaServer::start`].
    pub fn start_with_specs(
        names: &[&str],
        specs: &[serde_json::Value],
        args: &[&str],
    ) -> anyhow::Result<Self> {
        Self::start_with(names, &model_path()?, specs, args)
    }

    fn start_with(
        names: &[&str],
        model: &Path,
        specs: &[serde_json::Value],
        args: &[&str],
    ) -> anyhow::Result<Self> {
        let script = repo_root().join("tests/servers/ollama_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg("--model")
            .arg(model)
            .args(["--port", "0"])
            .args(args);
        for spec in specs {
            cmd.arg("--spec").arg(spec.to_string());
        }
        if let Some((first, rest)) = names.split_first() {
            cmd.args(["--name", first]);
            for n in rest {
                cmd.args(["--alias", n]);
            }
        }
        let (mut process, stdout) =
            ServerProcess::spawn("the Ollama-protocol server", &mut cmd, true)?;
        let stdout = stdout.context("no stdout")?;
        let mut log = process.log_file()?;
        let (tx, rx) = std::sync::mpsc::channel();
        // Copies stdout to the log; the first `READY <port>` line is sent. The channel
        // closes when stdout does, i.e. when the server exits.
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                if let Some(port) = line.strip_prefix("READY ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let port = match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(port)) => port,
            Ok(None) => bail!(
                "the Ollama-protocol server printed an unreadable READY line; its log:\n{}",
                process.log_tail()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                // Its stdout closed: it is exiting; wait for the status.
                process.wait();
                process.check()?;
                bail!("the Ollama-protocol server closed its stdout without READY");
            }
            Err(RecvTimeoutError::Timeout) => {
                process.check()?;
                bail!(
                    "the Ollama-protocol server did not print READY within 120 s; its log:\n{}",
                    process.log_tail()
                )
            }
        };
        process.port = port;
        Ok(OllamaServer {
            process,
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

/// Asks `url` until it answers 200, failing with the server's death report as soon as the
/// process exits, or with its log tail after `limit`.
fn wait_http(
    process: &mut ServerProcess,
    url: &str,
    bearer: Option<&str>,
    limit: Duration,
) -> anyhow::Result<()> {
    let headers = match bearer {
        Some(key) => format!("{{'Authorization': 'Bearer {key}'}}"),
        None => "{}".to_string(),
    };
    let start = Instant::now();
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    while start.elapsed() < limit {
        process.check()?;
        if std::net::TcpStream::connect(&addr).is_ok() {
            // The port is open; the app may still be loading: ask until it answers 200.
            let ok = std::process::Command::new("python3")
                .args(["-c", &format!("import urllib.request,sys; sys.exit(0 if urllib.request.urlopen(urllib.request.Request('{url}', headers={headers}), timeout=5).status==200 else 1)")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if ok {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    process.check()?;
    bail!(
        "{url} did not answer within {} s; the last lines of the server's log:\n{}",
        limit.as_secs(),
        process.log_tail()
    )
}
