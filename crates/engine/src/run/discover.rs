//! The functions of a workflow's `mcp` tool, for the editor: the server is connected
//! once, its tool list read and the connection closed. A stdio server is a program
//! started on this machine, so it is listed only with the permission a run needs for it
//! (the one remembered in the store, for the workflow file as it is); without it nothing
//! starts and [`DiscoverError::NotPermitted`] says how to give it.

use serde::Serialize;

use super::Engine;
use crate::plan::Plan;
use crate::workflow::{McpTool, ToolDecl};

/// One function an MCP server offers.
#[cfg_attr(feature = "specta", derive(specta::Type))]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct McpFunction {
    /// The server's name for it (what a call's `call` gives).
    pub name: String,
    /// What it does, as the server describes it (empty when it does not).
    pub description: String,
    /// The JSON Schema of its arguments (what a call's `arguments` must be).
    #[cfg_attr(feature = "specta", specta(type = serde_json::Value))]
    #[cfg_attr(feature = "utoipa", schema(value_type = Object))]
    pub input_schema: serde_json::Value,
    /// Whether the tool's `allow:` admits it (every function when `allow` is empty).
    pub allowed: bool,
}

/// Why the functions could not be listed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DiscoverError {
    /// The workflow has no tool of that name, or it is not an `mcp` tool.
    #[error("{0}")]
    UnknownTool(String),
    /// The tool starts a program and the user has not given it permission.
    #[error("tool `{tool}` starts `{}` on this machine and needs your permission first: run the workflow and answer yes when asked, or run `nexus run <file> --allow-tool {tool}`", command.join(" "))]
    NotPermitted {
        /// The tool's name.
        tool: String,
        /// The program it would start.
        command: Vec<String>,
    },
    /// The server could not be started, reached or did not list its tools.
    #[error("tool `{tool}`: {message}")]
    Failed {
        /// The tool's name.
        tool: String,
        /// What failed.
        message: String,
    },
}

impl Engine {
    /// The functions of `plan`'s `mcp` tool `tool`, each marked by whether its `allow`
    /// admits it, in the server's order.
    ///
    /// # Errors
    /// [`DiscoverError`]: no such `mcp` tool, no permission for a stdio server, or the
    /// server failed.
    pub async fn mcp_functions(
        &self,
        plan: &Plan,
        tool: &str,
    ) -> Result<Vec<McpFunction>, DiscoverError> {
        let mcp = mcp_tool(plan, tool)?;
        if let Some(command) = &mcp.command {
            let hash = crate::plan::tools::workflow_hash(&plan.workflow);
            let permitted = match &self.store {
                Some(store) => store.permission(&hash, tool).await.unwrap_or_else(|e| {
                    tracing::warn!("cannot read the permissions: {e}");
                    false
                }),
                None => false,
            };
            if !permitted {
                return Err(DiscoverError::NotPermitted {
                    tool: tool.to_string(),
                    command: command.clone(),
                });
            }
        }
        let failed = |message: String| DiscoverError::Failed {
            tool: tool.to_string(),
            message,
        };
        let cwd = working_folder(plan, mcp).map_err(failed)?;
        let listed = super::mcp::list_once(mcp, cwd.as_deref()).await;
        let specs = listed.map_err(|message| DiscoverError::Failed {
            tool: tool.to_string(),
            message,
        })?;
        Ok(specs
            .into_iter()
            .map(|t| McpFunction {
                allowed: mcp.allow.is_empty() || mcp.allow.contains(&t.name),
                name: t.name,
                description: t.description,
                input_schema: t.parameters,
            })
            .collect())
    }
}

/// The `mcp` tool `tool` of the plan's workflow.
fn mcp_tool<'a>(plan: &'a Plan, tool: &str) -> Result<&'a McpTool, DiscoverError> {
    match plan.workflow.tools.get(tool) {
        Some(ToolDecl::Mcp(mcp)) => Ok(mcp),
        Some(_) => Err(DiscoverError::UnknownTool(format!(
            "tool `{tool}` is not an `mcp` tool; only an MCP server lists functions"
        ))),
        None => {
            let known: Vec<&str> = plan
                .workflow
                .tools
                .iter()
                .filter(|(_, d)| matches!(d, ToolDecl::Mcp(_)))
                .map(|(n, _)| n.as_str())
                .collect();
            Err(DiscoverError::UnknownTool(format!(
                "the workflow has no tool `{tool}`; its mcp tools: {}",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )))
        }
    }
}

/// A stdio server's working folder: its `cwd` from the workflow file's folder.
fn working_folder(plan: &Plan, mcp: &McpTool) -> Result<Option<std::path::PathBuf>, String> {
    if mcp.command.is_none() {
        return Ok(None);
    }
    let base = plan
        .file
        .as_deref()
        .and_then(|f| std::path::Path::new(f).parent())
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let dir = base.join(mcp.cwd.as_deref().unwrap_or("."));
    let dir = if dir.as_os_str().is_empty() {
        std::path::PathBuf::from(".")
    } else {
        dir
    };
    std::fs::canonicalize(&dir)
        .map(Some)
        .map_err(|e| format!("the working folder {} is not there: {e}", dir.display()))
}
