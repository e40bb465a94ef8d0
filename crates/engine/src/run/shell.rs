//! The `shell` tool's process: an argv run without a shell, in its working folder, with
//! only the environment variables the tool names, its output read up to a cap.
//!
//! Invariants: on its timeout or cancellation the program is killed and reaped before
//! the call returns (and the child is started with `kill_on_drop` should the call's
//! future be dropped); memory stays bounded ([`MAX_OUTPUT`] of standard output,
//! [`MAX_STDERR`] of standard error kept); nothing is passed to `sh`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::StepOutput;
use crate::workflow::ShellTool;

/// The most standard output a `shell` call may produce, bytes (10 MiB); more stops the
/// program and fails the step.
pub const MAX_OUTPUT: usize = 10 * 1024 * 1024;
/// How much of the standard error is kept for the step's error, bytes (the end of it).
pub const MAX_STDERR: usize = 64 * 1024;
/// The timeout of a `shell` call when the tool sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// How a call ended before its program did.
enum Stopped {
    TimedOut,
    Cancelled,
}

/// Runs `shell.command` followed by `extra` in `cwd`; its standard output, or why the call
/// failed (not started, timed out, cancelled, too much output, non-zero exit with the end
/// of its standard error).
pub(super) async fn run(
    shell: &ShellTool,
    cwd: &Path,
    extra: &[String],
    stdin: Option<&str>,
    cancel: &CancellationToken,
) -> Result<StepOutput, String> {
    let Some((program, first)) = shell.command.split_first() else {
        return Err("`command` names no program".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(first)
        .args(extra)
        .current_dir(cwd)
        .env_clear()
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    pass_env(&mut cmd, shell.env.as_deref(), &["PATH"]);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{program}`: {e}"))?;
    let (out, err, input) = (child.stdout.take(), child.stderr.take(), child.stdin.take());
    let feed = async {
        if let (Some(text), Some(mut input)) = (stdin, input) {
            // A program that exits without reading its input is not an error here.
            let _ = input.write_all(text.as_bytes()).await;
        }
    };
    let timeout = shell.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let outcome = {
        let work = async {
            let ((), stdout, stderr) = tokio::join!(feed, read_capped(out), read_tail(err));
            let stdout = stdout?;
            let status = child
                .wait()
                .await
                .map_err(|e| format!("`{program}` could not be waited for: {e}"))?;
            Ok::<_, String>((status, stdout, stderr))
        };
        tokio::select! {
            r = work => Ok(r),
            () = tokio::time::sleep(timeout) => Err(Stopped::TimedOut),
            () = cancel.cancelled() => Err(Stopped::Cancelled),
        }
    };
    let (status, stdout, stderr) = match outcome {
        Ok(Ok(done)) => done,
        Ok(Err(e)) => {
            // Too much output or an unreadable pipe: the program is stopped.
            let _ = child.kill().await;
            return Err(e);
        }
        Err(stopped) => {
            // Kill and reap it, so that it is gone when the step's record is written.
            let _ = child.kill().await;
            return Err(match stopped {
                Stopped::TimedOut => format!(
                    "`{program}` ran longer than its timeout of {} and was stopped",
                    humantime::format_duration(timeout)
                ),
                Stopped::Cancelled => format!("`{program}` was stopped: the run was cancelled"),
            });
        }
    };
    if !status.success() {
        let code = status
            .code()
            .map_or_else(|| "a signal".to_string(), |c| format!("exit code {c}"));
        let tail = String::from_utf8_lossy(&stderr);
        let tail = tail.trim();
        return Err(if tail.is_empty() {
            format!("`{program}` ended with {code}")
        } else {
            format!("`{program}` ended with {code}: {tail}")
        });
    }
    let text = String::from_utf8(stdout)
        .map_err(|_| format!("`{program}` wrote output that is not UTF-8 text"))?;
    let json = serde_json::from_str(text.trim())
        .ok()
        .filter(|v: &serde_json::Value| v.is_object() || v.is_array());
    Ok(StepOutput { text, json })
}

/// Passes on the variables of Nexus's environment that `names` lists (`default` when the
/// tool names none) to a command whose environment was cleared.
pub(super) fn pass_env(
    cmd: &mut tokio::process::Command,
    names: Option<&[String]>,
    default: &[&str],
) {
    let names: Vec<&str> = match names {
        Some(n) => n.iter().map(String::as_str).collect(),
        None => default.to_vec(),
    };
    for name in names {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
}

/// Reads `pipe` to its end, failing past [`MAX_OUTPUT`] bytes.
async fn read_capped(pipe: Option<impl AsyncRead + Unpin>) -> Result<Vec<u8>, String> {
    let Some(mut pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = pipe
            .read(&mut buf)
            .await
            .map_err(|e| format!("cannot read the program's output: {e}"))?;
        if n == 0 {
            return Ok(out);
        }
        if out.len() + n > MAX_OUTPUT {
            return Err(format!(
                "the program wrote more than {} MiB of output and was stopped",
                MAX_OUTPUT / (1024 * 1024)
            ));
        }
        out.extend_from_slice(&buf[..n]);
    }
}

/// Reads `pipe` to its end, keeping its last [`MAX_STDERR`] bytes.
async fn read_tail(pipe: Option<impl AsyncRead + Unpin>) -> Vec<u8> {
    let Some(mut pipe) = pipe else {
        return Vec::new();
    };
    let mut tail = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while let Ok(n) = pipe.read(&mut buf).await {
        if n == 0 {
            break;
        }
        tail.extend_from_slice(&buf[..n]);
        if tail.len() > MAX_STDERR {
            tail.drain(..tail.len() - MAX_STDERR);
        }
    }
    tail
}
