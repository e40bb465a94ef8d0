//! Tools of the format: declared once per workflow under `tools:`, called by `kind: tool`
//! steps with templated arguments.
//!
//! Four kinds: `http` (a request to an allowed host), `file` (read, write and list inside
//! a workspace folder of the workflow), `shell` (a program run with an argv, only with
//! the user's permission), `mcp` (the tools of a Model Context Protocol server) and
//! `memory` (a collection of documents searched by meaning).

use std::collections::BTreeMap;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A tool, tagged by its kind (`http:`, `file:`, `shell:`, `mcp:` or `memory:`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolDecl {
    /// HTTP requests to one service.
    Http(HttpTool),
    /// Files inside a workspace folder.
    File(FileTool),
    /// A program run with an argv.
    Shell(ShellTool),
    /// A Model Context Protocol server.
    Mcp(McpTool),
    /// A memory collection: documents added, chunks searched by similarity.
    Memory(MemoryTool),
}

/// A `memory` tool: a collection of documents in the run database, cut into chunks,
/// each embedded, searched by similarity to a query (the vector stores of LangChain,
/// Dify's knowledge bases and n8n's vector-store nodes, kept with the runs).
///
/// A call's `args` give `op`:
/// - `add`: `text` (the document), optional `document` (its id; default a hash of the
///   text, so adding the same text again changes nothing) and `metadata` (an object kept
///   with every chunk). A document added again under its id replaces its chunks. The
///   text passes the workflow's guardrails before it is stored. Output: `{"collection",
///   "document", "chunks"}`.
/// - `search`: `query`, optional `top_k` (default the tool's, else 5; at most 100),
///   `min_score` (a cosine similarity, -1 to 1) and `filter` (metadata that must match
///   exactly: strings, numbers, booleans). Output JSON `{"hits": [{"document", "chunk",
///   "text", "score", "metadata"}]}`, best first; the text output is the hits' texts.
/// - `delete`: `document`. Output `{"deleted": true|false}`.
///
/// One collection holds the vectors of one embedder: the first add fixes it, and a tool
/// that names another embedder for the same collection is refused at its call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MemoryTool {
    /// The collection's name, shared by every workflow using the same run database.
    pub collection: String,
    /// The embedding model, `provider:model`: `embedded:all-minilm-l6-v2` (the default,
    /// in-process, 384 numbers), an Ollama model such as `ollama:nomic-embed-text`, or
    /// an OpenAI-compatible one such as `openai:text-embedding-3-small`. A cloud
    /// embedder is refused in a `local_only` workflow.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedder: Option<String>,
    /// Largest chunk, in characters (default 800, which fits the default embedder's
    /// 256-token window for English text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_size: Option<usize>,
    /// Characters shared by consecutive chunks (default 100; less than `chunk_size`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunk_overlap: Option<usize>,
    /// Hits a search returns when the call does not say (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
}

impl MemoryTool {
    /// The default embedder, in-process.
    pub const DEFAULT_EMBEDDER: &'static str = "embedded:all-minilm-l6-v2";
    /// The default chunk size, characters.
    pub const DEFAULT_CHUNK_SIZE: usize = 800;
    /// The default overlap, characters.
    pub const DEFAULT_CHUNK_OVERLAP: usize = 100;
    /// The default number of hits.
    pub const DEFAULT_TOP_K: usize = 5;
    /// The most hits a search may ask for.
    pub const MAX_TOP_K: usize = 100;

    /// The embedder as written, else [`MemoryTool::DEFAULT_EMBEDDER`].
    pub fn embedder(&self) -> &str {
        self.embedder.as_deref().unwrap_or(Self::DEFAULT_EMBEDDER)
    }
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
    /// How every call authenticates, with a secret read by name when the call is made
    /// (never written in the file, never stored in a run record or a log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<HttpAuth>,
    /// Follow the response's pages (see [`Paginate`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paginate: Option<Paginate>,
}

/// How an `http` tool authenticates. `secret` names a secret, looked up when a call is
/// made: in the desktop app and the `nexus` command, the OS keychain (service `nexus`,
/// account `secret:NAME`, set with `nexus secret set NAME`), else the environment
/// variable `NEXUS_SECRET_NAME` (for headless machines and CI). A response that echoes
/// the secret has it replaced by `[secret NAME]` before it is stored or passed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HttpAuth {
    /// `Authorization: Bearer <secret>` (RFC 6750).
    Bearer {
        /// The secret's name, e.g. `GITHUB_TOKEN`.
        secret: String,
    },
    /// `Authorization: Basic base64(<username>:<secret>)` (RFC 7617).
    Basic {
        /// The user name (not a secret).
        username: String,
        /// The password's secret name.
        secret: String,
    },
    /// A header of the service's own, e.g. `X-Api-Key: <secret>`.
    Header {
        /// The header's name.
        name: String,
        /// The secret's name.
        secret: String,
    },
}

impl HttpAuth {
    /// The name of the secret the auth reads.
    pub fn secret(&self) -> &str {
        match self {
            HttpAuth::Bearer { secret }
            | HttpAuth::Basic { secret, .. }
            | HttpAuth::Header { secret, .. } => secret,
        }
    }
}

/// Pagination of an `http` tool: one call requests page after page, at most
/// `max_pages`, and its output joins them. Two ways to find the next page:
///
/// - `next_url`: where the next page's URL is in a response: a JSON pointer into the body
///   (`/links/next`), or a minijinja expression over `response` (the body as JSON) and
///   `headers` (lowercase names), e.g. `response.paging.next`. A missing, null or empty
///   value ends the pages; a relative URL is resolved against the page's URL.
/// - `page_param`: a query parameter counting pages from `start` (default 1); a page with
///   no items ends them.
///
/// The items of a page are the array at `items` (a JSON pointer, e.g. `/data`), or the
/// body itself when it is an array. When every page has items, the output is one array of
/// all of them; otherwise it is the list of the pages' bodies. Every page's URL is checked
/// against the allowed hosts, like the first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Paginate {
    /// Where the next page's URL is (a JSON pointer or a minijinja expression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_url: Option<String>,
    /// The query parameter that numbers pages, e.g. `page`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_param: Option<String>,
    /// The first page's number for `page_param` (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<u64>,
    /// Where a page's items are: a JSON pointer into its body (default: the body, when
    /// it is an array).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<String>,
    /// Most pages one call requests (required: a cap on a service that never ends).
    pub max_pages: u32,
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

/// A `shell` tool: a program and its first arguments, run without a shell (no string is
/// ever parsed by `sh`), in a working folder, with only the environment variables it
/// names, for at most `timeout`.
///
/// A call's `args` may give `argv` (a list of further arguments, each a template) and
/// `stdin` (text written to the program's input). The program's standard output is the
/// step's text output and, when it is a JSON object or array, its JSON output; a
/// non-zero exit code fails the step with the code and the end of its standard error.
/// Output over 10 MiB stops the program and fails the step. Cancelling the run, or the
/// timeout, kills the program.
///
/// A `shell` tool runs only with the user's permission for this workflow and this tool,
/// asked before its first call (in the terminal, the desktop app's run panel or
/// `nexus serve`'s questions) and remembered for the file as it is: any change to the
/// workflow file asks again (the rule of VS Code's workspace trust and Claude Code's
/// per-command permissions, kept per file hash). `nexus run --allow-tool NAME` gives
/// the permission without asking.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ShellTool {
    /// The program and its first arguments, e.g. `[git, status, --short]`. The program is
    /// looked up on `PATH` (of the environment given to it) unless it is a path.
    pub command: Vec<String>,
    /// The working folder, relative to the workflow file's folder (default: that folder).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Names of environment variables passed on from Nexus's environment (default: only
    /// `PATH`). Every other variable is removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Longest time the program may run, e.g. `2m` (default `60s`).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
}

/// An `mcp` tool: a Model Context Protocol server (specification 2025-06-18 and later,
/// through the official Rust SDK `rmcp`), started as a child process speaking over its
/// standard input and output (`command`), or reached over streamable HTTP (`url`).
///
/// A call's `args` give `call` (the server's tool) and `arguments` (an object; string
/// values are templates). The server is connected at the first call of a run and its
/// tool list read once; every call of the run uses that connection, and it is closed
/// when the run ends (a stdio server's process group is killed if it does not exit, and
/// when the run is cancelled). Each call waits at most `timeout`. The result's text
/// content is the step's text output; its structured content (or its text when that is
/// a JSON object or array) the JSON output; a result marked as an error fails the step
/// with the server's text.
///
/// A stdio server is a program started on this machine: like a `shell` tool it needs
/// the user's permission for the workflow file as it is. A `url` server must be on
/// loopback in a `local_only` workflow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct McpTool {
    /// The server's program and arguments, for a stdio server, e.g.
    /// `[npx, -y, "@modelcontextprotocol/server-filesystem", ./data]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// The server's streamable HTTP endpoint, e.g. `http://127.0.0.1:3001/mcp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For a stdio server: its working folder, relative to the workflow file's folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// For a stdio server: names of environment variables passed on (default: `PATH`
    /// and `HOME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// The server's tools that calls may use (default: all it lists).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// Longest time for one call, e.g. `2m` (default `60s`).
    #[serde(
        default,
        with = "humantime_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "Option<String>")]
    pub timeout: Option<Duration>,
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
