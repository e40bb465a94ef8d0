//! A test whose server died fails with that server's own log, not with a bare "connection
//! refused": the start functions, `ServerProcess::explain` and the drop of a dead server
//! report its exit status and the last lines of what it printed.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use anyhow::{Context, bail, ensure};
use nexus_engine::provider::Provider;
use nexus_llm::OpenAiProvider;
use nexus_tests::{LlamaServer, OllamaServer, ServerProcess};

/// A file named like a model that is not a GGUF (kept alive by the returned guard).
fn not_a_gguf() -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("not-a-model.gguf");
    std::fs::write(&path, "this is a text file, not a GGUF model\n")?;
    Ok((dir, path))
}

/// Crashes the server as native code would (SIGSEGV, with core dumps off for it) and waits
/// until it has exited.
fn crash(process: &mut ServerProcess) -> anyhow::Result<()> {
    let pid = process.pid().context("the server is not running")?;
    let no_core = std::process::Command::new("prlimit")
        .args(["--core=0", "--pid", &pid.to_string()])
        .status()?;
    ensure!(no_core.success(), "prlimit --core=0 --pid {pid}: {no_core}");
    let kill = std::process::Command::new("kill")
        .args(["-SEGV", &pid.to_string()])
        .status()?;
    ensure!(kill.success(), "kill -SEGV {pid}: {kill}");
    let status = process.wait().context("no exit status")?;
    ensure!(!status.success(), "the server exited cleanly: {status}");
    Ok(())
}

#[test]
fn a_server_that_cannot_load_its_model_fails_with_its_own_message() -> anyhow::Result<()> {
    let (_dir, bad) = not_a_gguf()?;
    let llama = match LlamaServer::start_with_model("smol", &bad) {
        Ok(_) => bail!("llama-cpp-python's server started on a text file"),
        Err(e) => format!("{e:#}"),
    };
    let ollama = match OllamaServer::start_with_model(&["smol:1"], &bad) {
        Ok(_) => bail!("the Ollama-protocol server started on a text file"),
        Err(e) => format!("{e:#}"),
    };
    for (name, report) in [
        ("the llama-cpp-python server", llama),
        ("the Ollama-protocol server", ollama),
    ] {
        assert!(report.contains(name), "{report}");
        assert!(
            report.contains("exited on its own with exit status: 1"),
            "{report}"
        );
        // llama-cpp-python's own exception, from the server's stderr.
        assert!(
            report.contains("Failed to load model from file"),
            "{report}"
        );
        assert!(report.contains("not-a-model.gguf"), "{report}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_to_a_server_that_crashed_reports_its_status_and_log() -> anyhow::Result<()> {
    let mut server = tokio::task::spawn_blocking(|| LlamaServer::start("smol")).await??;
    // No configured model list: listing asks the server.
    let provider = OpenAiProvider::new(&server.base_url, None, vec![])?;
    provider.list_models().await?;
    server.process.check()?;

    crash(&mut server.process)?;
    let err = match provider.list_models().await {
        Ok(models) => bail!("a crashed server listed {models:?}"),
        Err(e) => e,
    };
    let refused = err.to_string();
    let report = format!("{:#}", server.process.explain(err));
    assert!(report.contains("the llama-cpp-python server"), "{report}");
    assert!(report.contains("SIGSEGV"), "{report}");
    // Python's faulthandler, as the server's own stderr shows a crash in native code.
    assert!(
        report.contains("Fatal Python error: Segmentation fault"),
        "{report}"
    );
    // The request's own error stays in the chain.
    assert!(report.ends_with(&refused), "{report}");
    // Reported once: the drop below does not fail again.
    server.process.check()?;
    Ok(())
}

#[test]
fn dropping_a_server_that_died_fails_the_test_with_its_log() -> anyhow::Result<()> {
    let mut server = OllamaServer::start(&["smol:1"])?;
    crash(&mut server.process)?;
    let payload = match catch_unwind(AssertUnwindSafe(move || drop(server))) {
        Ok(()) => bail!("dropping a server that died did not fail"),
        Err(p) => p,
    };
    let report = payload
        .downcast_ref::<String>()
        .cloned()
        .context("the panic carries no message")?;
    assert!(report.contains("the Ollama-protocol server"), "{report}");
    assert!(report.contains("SIGSEGV"), "{report}");
    assert!(
        report.contains("Fatal Python error: Segmentation fault"),
        "{report}"
    );
    // What it printed on stdout is in the log too.
    assert!(report.contains("READY "), "{report}");

    // A deliberate stop is no failure.
    let mut server = OllamaServer::start(&["smol:1"])?;
    server.process.stop();
    drop(server);
    Ok(())
}
