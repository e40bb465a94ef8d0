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

pub mod proxy;
pub mod scripted;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

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

/// A child process killed on drop.
pub struct ServerProcess {
    child: Option<Child>,
    /// The port it listens on.
    pub port: u16,
}

impl ServerProcess {
    /// Stops the server now (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
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
    /// When python or llama-cpp-python is missing (run scripts/setup-test-servers.sh) or
    /// the server does not come up within 120 s.
    pub fn start(alias: &str) -> anyhow::Result<Self> {
        let model = model_path()?;
        let port = free_port()?;
        let child = Command::new("python3")
            .args(["-m", "llama_cpp.server", "--model"])
            .arg(&model)
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
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context(
                "cannot start python3 -m llama_cpp.server (run scripts/setup-test-servers.sh)",
            )?;
        let process = ServerProcess {
            child: Some(child),
            port,
        };
        let base_url = format!("http://127.0.0.1:{port}/v1");
        wait_http(&format!("{base_url}/models"), Duration::from_secs(120))?;
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
    /// When it does not print `READY <port>` within 120 s.
    pub fn start(names: &[&str]) -> anyhow::Result<Self> {
        let model = model_path()?;
        let script = repo_root().join("tests/servers/ollama_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .arg("--model")
            .arg(&model)
            .args(["--port", "0"]);
        if let Some((first, rest)) = names.split_first() {
            cmd.args(["--name", first]);
            for n in rest {
                cmd.args(["--alias", n]);
            }
        }
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start tests/servers/ollama_server.py")?;
        let stdout = child.stdout.take().context("no stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line.strip_prefix("READY ") {
                    let _ = tx.send(port.trim().parse::<u16>().ok());
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(120))
            .ok()
            .flatten()
            .context("the Ollama-protocol server did not get ready")?;
        Ok(OllamaServer {
            process: ServerProcess {
                child: Some(child),
                port,
            },
            url: format!("http://127.0.0.1:{port}"),
        })
    }
}

fn wait_http(url: &str, limit: Duration) -> anyhow::Result<()> {
    let start = Instant::now();
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_string();
    while start.elapsed() < limit {
        if std::net::TcpStream::connect(&addr).is_ok() {
            // The port is open; the app may still be loading: ask until it answers 200.
            let ok = std::process::Command::new("python3")
                .args(["-c", &format!("import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('{url}', timeout=5).status==200 else 1)")])
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
    bail!("{url} did not answer within {} s", limit.as_secs())
}
