//! `mcp` tools: connections to Model Context Protocol servers through the official Rust
//! SDK (`rmcp`), one per tool and run, over stdio (a child process) or streamable HTTP.
//!
//! Invariants: a server is connected at its first call in a run and its tool list read
//! once (the run's calls reuse both); every connection of a run is closed when the run
//! ends, cancelled or not ([`McpSessions::close_all`]); a stdio server runs in a process
//! group of its own (a job object on Windows), so closing it also ends the processes it
//! started (`npx` starts `node`); each call waits at most its timeout.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use tokio_util::sync::CancellationToken;

use super::StepOutput;
use crate::provider::ToolSpec;
use crate::workflow::McpTool;

/// The timeout of one call when the tool sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest time connecting to a server (starting it, the initialize handshake, the
/// tool list) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a cancelled call still lets a starting server finish its handshake.
const CANCEL_GRACE: Duration = Duration::from_secs(5);

/// One connected server: the client, and the tools it listed (name, description, input
/// schema).
struct Session {
    service: tokio::sync::Mutex<Option<RunningService<RoleClient, ()>>>,
    peer: rmcp::service::Peer<RoleClient>,
    tools: Vec<ToolSpec>,
}

/// The MCP connections of one run, by tool name.
#[derive(Default)]
pub(super) struct McpSessions {
    open: tokio::sync::Mutex<HashMap<String, Arc<Session>>>,
}

impl McpSessions {
    /// The connection of tool `name`, connecting (once per run) when there is none.
    async fn session(
        &self,
        name: &str,
        mcp: &McpTool,
        cwd: Option<&Path>,
    ) -> Result<Arc<Session>, String> {
        let mut open = self.open.lock().await;
        if let Some(s) = open.get(name) {
            return Ok(Arc::clone(s));
        }
        let connecting = connect(mcp, cwd);
        let service = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
            .await
            .map_err(|_| {
                format!(
                    "the MCP server did not answer within {}",
                    humantime::format_duration(CONNECT_TIMEOUT)
                )
            })??;
        let peer = service.peer().clone();
        let tools = match tokio::time::timeout(CONNECT_TIMEOUT, peer.list_all_tools()).await {
            Ok(Ok(tools)) => tools
                .into_iter()
                .map(|t| ToolSpec {
                    name: t.name.to_string(),
                    description: t.description.map(|d| d.to_string()).unwrap_or_default(),
                    parameters: serde_json::Value::Object((*t.input_schema).clone()),
                })
                .collect(),
            Ok(Err(e)) => {
                let _ = service.cancel().await;
                return Err(format!("the MCP server did not list its tools: {e}"));
            }
            Err(_) => {
                let _ = service.cancel().await;
                return Err("the MCP server did not list its tools in time".into());
            }
        };
        let session = Arc::new(Session {
            service: tokio::sync::Mutex::new(Some(service)),
            peer,
            tools,
        });
        open.insert(name.to_string(), Arc::clone(&session));
        Ok(session)
    }

    /// Closes every connection of the run (a stdio server is asked to exit by closing
    /// its input, then stopped; see `rmcp`'s `graceful_shutdown`).
    pub(super) async fn close_all(&self) {
        let sessions: Vec<Arc<Session>> = self.open.lock().await.drain().map(|(_, s)| s).collect();
        for s in sessions {
            if let Some(service) = s.service.lock().await.take()
                && let Err(e) = service.cancel().await
            {
                tracing::warn!("closing an MCP connection failed: {e}");
            }
        }
    }

    /// The connection of tool `name`, or why there is none; a cancel while connecting
    /// gives a starting server a moment to finish its handshake, so that it is kept and
    /// closed with the run rather than left to a kill on drop.
    async fn connected(
        &self,
        name: &str,
        mcp: &McpTool,
        cwd: Option<&Path>,
        cancel: &CancellationToken,
    ) -> Result<Arc<Session>, String> {
        let connecting = self.session(name, mcp, cwd);
        tokio::pin!(connecting);
        tokio::select! {
            s = &mut connecting => s,
            () = cancel.cancelled() => {
                let _ = tokio::time::timeout(CANCEL_GRACE, &mut connecting).await;
                Err("cancelled while connecting to the MCP server".into())
            }
        }
    }

    /// The tools of tool `name`'s server that the workflow allows (all it lists when
    /// `allow` is empty), connecting once per run: what an agent step offers the model.
    pub(super) async fn list(
        &self,
        name: &str,
        mcp: &McpTool,
        cwd: Option<&Path>,
        cancel: &CancellationToken,
    ) -> Result<Vec<ToolSpec>, String> {
        let session = self.connected(name, mcp, cwd, cancel).await?;
        Ok(session
            .tools
            .iter()
            .filter(|t| mcp.allow.is_empty() || mcp.allow.contains(&t.name))
            .cloned()
            .collect())
    }

    /// Calls `call` with `arguments` on tool `name`'s server; the result as the step's
    /// output, or why it failed (not connected, not allowed or not listed, timed out,
    /// cancelled, an error result with the server's text).
    pub(super) async fn call(
        &self,
        name: &str,
        mcp: &McpTool,
        cwd: Option<&Path>,
        call: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
        cancel: &CancellationToken,
    ) -> Result<StepOutput, String> {
        let session = self.connected(name, mcp, cwd, cancel).await?;
        if !mcp.allow.is_empty() && !mcp.allow.iter().any(|a| a == call) {
            return Err(format!(
                "`{call}` is not among the tools this workflow allows ({})",
                mcp.allow.join(", ")
            ));
        }
        if !session.tools.iter().any(|t| t.name == call) {
            let names: Vec<&str> = session.tools.iter().map(|t| t.name.as_str()).collect();
            return Err(format!(
                "the server has no tool `{call}`; it lists: {}",
                names.join(", ")
            ));
        }
        let params = CallToolRequestParams::new(call.to_string()).with_arguments(arguments);
        let timeout = mcp.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let result = tokio::select! {
            r = tokio::time::timeout(timeout, session.peer.call_tool(params)) => match r {
                Ok(Ok(result)) => result,
                Ok(Err(e)) => return Err(format!("the call of `{call}` failed: {e}")),
                Err(_) => {
                    return Err(format!(
                        "`{call}` did not answer within its timeout of {}",
                        humantime::format_duration(timeout)
                    ));
                }
            },
            () = cancel.cancelled() => return Err(format!("cancelled during the call of `{call}`")),
        };
        output_of(call, result)
    }
}

/// The tools `mcp`'s server lists, from a connection of its own closed right after
/// (the editor's discovery; a run keeps its connection, see [`McpSessions`]).
pub(super) async fn list_once(mcp: &McpTool, cwd: Option<&Path>) -> Result<Vec<ToolSpec>, String> {
    let sessions = McpSessions::default();
    let listed = sessions
        .session("discover", mcp, cwd)
        .await
        .map(|s| s.tools.clone());
    sessions.close_all().await;
    listed
}

/// Starts (stdio) or reaches (streamable HTTP) the server and does the initialize
/// handshake.
async fn connect(
    mcp: &McpTool,
    cwd: Option<&Path>,
) -> Result<RunningService<RoleClient, ()>, String> {
    if let Some(url) = &mcp.url {
        let transport = rmcp::transport::StreamableHttpClientTransport::from_uri(url.as_str());
        return ()
            .serve(transport)
            .await
            .map_err(|e| format!("cannot connect to the MCP server at {url}: {e}"));
    }
    let Some((program, args)) = mcp.command.as_deref().and_then(<[String]>::split_first) else {
        return Err("the MCP server has neither `command` nor `url`".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).env_clear();
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    super::shell::pass_env(&mut cmd, mcp.env.as_deref(), &["PATH", "HOME"]);
    let mut wrap = process_wrap::tokio::CommandWrap::from(cmd);
    #[cfg(unix)]
    wrap.wrap(process_wrap::tokio::ProcessGroup::leader());
    #[cfg(windows)]
    wrap.wrap(process_wrap::tokio::JobObject);
    let (transport, _) = rmcp::transport::TokioChildProcess::builder(wrap)
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the MCP server `{program}`: {e}"))?;
    ().serve(transport)
        .await
        .map_err(|e| format!("the MCP server `{program}` did not start the protocol: {e}"))
}

/// A call's result as a step output: the text content joined, the structured content
/// (or the text when it is a JSON object or array) as JSON; an error result fails.
fn output_of(call: &str, result: CallToolResult) -> Result<StepOutput, String> {
    let text: Vec<&str> = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.as_str()))
        .collect();
    let text = text.join("\n");
    if result.is_error == Some(true) {
        return Err(format!("`{call}` answered with an error: {text}"));
    }
    let json = result.structured_content.or_else(|| {
        serde_json::from_str(text.trim())
            .ok()
            .filter(|v: &serde_json::Value| v.is_object() || v.is_array())
    });
    Ok(StepOutput { text, json })
}
