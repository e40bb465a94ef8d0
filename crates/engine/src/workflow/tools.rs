//! Tools of the format: declared once per workflow under `tools:`, called by `kind: tool`
//! steps with templated arguments.
//!
//! Two kinds so far: `http` (a request to an allowed host) and `file` (read, write and
//! list inside a workspace folder of the workflow).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tool, tagged by its kind (`http:` or `file:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolDecl {
    /// HTTP requests to one service.
    Http(HttpTool),
    /// Files inside a workspace folder.
    File(FileTool),
}

/// An `http` tool: a base URL, default method and headers, the hosts a call may reach.
///
/// A call's `args` may give `path` (joined to `url` as a relative reference, RFC 3986),
/// `query` (an object), `headers` (an object), `method`, and one of `body` (JSON),
/// `form` (an object, `application/x-www-form-urlencoded`) or `raw` (text). A response
/// with status 429 or 5xx, or a failed connection, is retried under the step's `retry`
/// policy (Retry-After is honoured up to the policy's `max_interval`); any other status
/// of 400 or more fails the step with the status and the start of the body. The body is
/// the step's text output and, when it is JSON, its JSON output; bodies over 10 MiB are
/// refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpTool {
    /// The service's URL, e.g. `http://127.0.0.1:8080/api/`.
    pub url: String,
    /// Default method (default `GET`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Headers sent with every call.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The hosts calls may reach (default: the host of `url`). In a `local_only`
    /// workflow only loopback hosts are allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_hosts: Vec<String>,
    /// Longest time for one request, e.g. `30s` (default `30s`).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
}

/// A `file` tool: a workspace folder, relative to the workflow file's folder. A call's
/// `args` give `op` (`read`, `write` or `list`), `path` (relative to the workspace; for
/// `list`, default the workspace itself) and, for `write`, `content`. Paths are resolved
/// with symbolic links followed; one that leads outside the workspace is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileTool {
    /// The workspace folder (it must exist).
    pub workspace: String,
}

/// The fields of a `kind: tool` step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolStep {
    /// The tool, by its name under the workflow's `tools:`.
    pub tool: String,
    /// The call's arguments (see the tool's kind); string values are templates over
    /// `inputs` and the step's dependencies.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub args: BTreeMap<String, serde_json::Value>,
}
