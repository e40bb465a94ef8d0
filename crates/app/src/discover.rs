//! The functions of a workflow's `mcp` tool, for the editor's tool panel
//! (`discover_tool_functions` in the desktop app, `GET
//! /api/workflows/{name}/tools/{tool}/functions` in `nexus serve`).

use serde::Serialize;

use crate::{Desktop, Error, Result};

/// What an `mcp` tool's server offers: `{"functions": [{"name", "description",
/// "input_schema", "allowed"}]}`, in the server's order.
#[derive(Debug, Clone, Serialize, serde::Deserialize, specta::Type)]
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
pub struct ToolFunctions {
    /// Each function, marked by whether the tool's `allow:` admits it.
    pub functions: Vec<nexus_engine::McpFunction>,
}

impl Desktop {
    /// The functions of tool `tool` of workflow `workflow` (a file in the workflows
    /// folder). A stdio server is started only when the user gave the tool the
    /// permission a run needs (see [`nexus_engine::Engine::mcp_functions`]).
    ///
    /// # Errors
    /// [`Error::BadPath`], [`Error::Io`], [`Error::InvalidWorkflow`] for the file;
    /// [`Error::UnknownTool`], [`Error::ToolNotPermitted`], [`Error::ToolFailed`].
    pub async fn discover_tool_functions(
        &self,
        workflow: &str,
        tool: &str,
    ) -> Result<ToolFunctions> {
        let text = self.read_workflow(workflow)?;
        let plan = nexus_engine::load_str(&text, self.plan_path(Some(workflow)).as_deref())
            .map_err(|diagnostics| Error::InvalidWorkflow { diagnostics })?;
        let engine = self.engine().await?;
        let functions =
            engine
                .mcp_functions(&plan, tool)
                .await
                .map_err(|e| match Error::from(e) {
                    Error::UnknownTool { message, .. } => Error::UnknownTool {
                        tool: tool.to_string(),
                        message,
                    },
                    other => other,
                })?;
        Ok(ToolFunctions { functions })
    }
}
