//! The planner of `tool` steps: the tool must be declared; its arguments are checked
//! against the tool's kind and their templated strings compiled; an `http` tool's URL
//! and hosts are checked (loopback only in a `local_only` workflow), a `file` tool's
//! workspace and a `shell` tool's working folder are resolved.

use std::path::Path;

use crate::diagnostic::DiagnosticCode;
use crate::plan::report::did_you_mean;
use crate::plan::step::StepPlanner;
use crate::plan::{Action, ToolAction};
use crate::workflow::{HttpTool, McpTool, ShellTool, ToolDecl, ToolStep};

/// The arguments an `http` tool call may give.
const HTTP_ARGS: [&str; 7] = ["path", "query", "headers", "method", "body", "form", "raw"];
/// The arguments a `file` tool call may give.
const FILE_ARGS: [&str; 3] = ["op", "path", "content"];
/// The arguments a `shell` tool call may give.
const SHELL_ARGS: [&str; 2] = ["argv", "stdin"];
/// The arguments an `mcp` tool call may give.
const MCP_ARGS: [&str; 2] = ["call", "arguments"];
/// The methods an `http` tool may use.
const METHODS: [&str; 7] = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"];

/// Whether `host` names this machine (`localhost`, 127.0.0.0/8, `::1`).
pub(crate) fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The hosts an `http` tool may reach: as declared, or the host of its URL.
pub(crate) fn allowed_hosts(tool: &HttpTool) -> Vec<String> {
    if !tool.allow_hosts.is_empty() {
        return tool.allow_hosts.clone();
    }
    reqwest::Url::parse(&tool.url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .into_iter()
        .collect()
}

/// Plans a `tool` step.
pub(super) fn plan(p: &mut StepPlanner<'_, '_>, step: &ToolStep) -> Action {
    let Some(decl) = p.wf.tools.get(&step.tool).cloned() else {
        if p.locs.missing.is_none() {
            let dym = did_you_mean(&step.tool, p.wf.tools.keys().map(String::as_str));
            p.report(
                "tool",
                DiagnosticCode::UnknownStep,
                format!("`tool` names unknown tool `{}`{dym}", step.tool),
                "declare the tool under the workflow's `tools:` (`http:`, `file:`, `shell:`, `mcp:` or `memory:`) or fix the name",
            );
        }
        return placeholder(step);
    };
    let allowed: &[&str] = match &decl {
        ToolDecl::Http(_) => &HTTP_ARGS,
        ToolDecl::File(_) => &FILE_ARGS,
        ToolDecl::Shell(_) => &SHELL_ARGS,
        ToolDecl::Mcp(_) => &MCP_ARGS,
        ToolDecl::Memory(_) => &super::memory::MEMORY_ARGS,
    };
    for key in step.args.keys() {
        if !allowed.contains(&key.as_str()) {
            p.report(
                "args",
                DiagnosticCode::UnexpectedField,
                format!("`args.{key}` is not an argument of tool `{}`", step.tool),
                &format!("its arguments are: {}", allowed.join(", ")),
            );
        }
    }
    let workspace = match &decl {
        ToolDecl::Http(http) => {
            check_http(p, &step.tool, http, step);
            None
        }
        ToolDecl::File(file) => {
            check_op(p, &step.tool, step);
            folder(p, &step.tool, "workspace", &file.workspace)
        }
        ToolDecl::Shell(shell) => check_shell(p, &step.tool, shell, step),
        ToolDecl::Mcp(mcp) => check_mcp(p, &step.tool, mcp, step),
        ToolDecl::Memory(memory) => {
            super::memory::check_tool(p, &step.tool, memory);
            super::memory::check_call(p, &step.tool, step);
            None
        }
    };
    let args = serde_json::to_value(&step.args).unwrap_or_default();
    let mut templated = Vec::new();
    compile_strings(p, &args, String::new(), &mut templated);
    let workflow_hash = needs_permission(&decl).then(|| workflow_hash(p.wf));
    Action::Tool(Box::new(ToolAction {
        name: step.tool.clone(),
        decl,
        args,
        templated,
        workspace,
        local_only: p.wf.local_only,
        workflow_hash,
    }))
}

/// The tool `name` as an agent step offers it: the tool-level checks of [`plan`] without
/// a call's arguments (the model gives those at run time).
pub(in crate::plan) fn agent_tool(
    p: &mut StepPlanner<'_, '_>,
    name: &str,
    decl: &ToolDecl,
) -> ToolAction {
    let no_args = ToolStep {
        tool: name.to_string(),
        args: std::collections::BTreeMap::new(),
    };
    let workspace = match decl {
        ToolDecl::Http(http) => {
            check_http(p, name, http, &no_args);
            None
        }
        ToolDecl::File(file) => folder(p, name, "workspace", &file.workspace),
        ToolDecl::Shell(shell) => check_shell(p, name, shell, &no_args),
        ToolDecl::Mcp(mcp) => check_mcp_server(p, name, mcp),
        ToolDecl::Memory(memory) => {
            super::memory::check_tool(p, name, memory);
            None
        }
    };
    ToolAction {
        name: name.to_string(),
        decl: decl.clone(),
        args: serde_json::Value::Object(serde_json::Map::new()),
        templated: Vec::new(),
        workspace,
        local_only: p.wf.local_only,
        workflow_hash: needs_permission(decl).then(|| workflow_hash(p.wf)),
    }
}

/// Whether calls of the tool start a program on this machine, so need the user's
/// permission: a `shell` tool, an `mcp` server over stdio.
pub(crate) fn needs_permission(decl: &ToolDecl) -> bool {
    match decl {
        ToolDecl::Shell(_) => true,
        ToolDecl::Mcp(mcp) => mcp.command.is_some(),
        ToolDecl::Http(_) | ToolDecl::File(_) | ToolDecl::Memory(_) => false,
    }
}

/// sha256 over the workflow's JSON form, hex: a permission given for a `shell` tool holds
/// for the workflow as it is, and any change asks again.
pub(crate) fn workflow_hash(wf: &crate::workflow::Workflow) -> String {
    use sha2::Digest;
    let json = serde_json::to_vec(wf).unwrap_or_default();
    super::hex(&sha2::Sha256::digest(&json))
}

/// What a step with an unknown tool plans to (discarded: the error is reported).
fn placeholder(step: &ToolStep) -> Action {
    Action::Tool(Box::new(ToolAction {
        name: step.tool.clone(),
        decl: ToolDecl::File(crate::workflow::FileTool {
            workspace: String::new(),
        }),
        args: serde_json::Value::Null,
        templated: Vec::new(),
        workspace: None,
        local_only: false,
        workflow_hash: None,
    }))
}

/// The URL parses, the method is known, the hosts are allowed for the workflow.
fn check_http(p: &mut StepPlanner<'_, '_>, name: &str, http: &HttpTool, step: &ToolStep) {
    let url = match reqwest::Url::parse(&http.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        Ok(u) => {
            p.report(
                "tool",
                DiagnosticCode::InvalidValue,
                format!(
                    "tool `{name}`: `{}` is not an http or https URL (scheme `{}`)",
                    http.url,
                    u.scheme()
                ),
                "give an http:// or https:// URL",
            );
            return;
        }
        Err(e) => {
            p.report(
                "tool",
                DiagnosticCode::InvalidValue,
                format!("tool `{name}`: `{}` is not a URL: {e}", http.url),
                "give a full URL such as `http://127.0.0.1:8080/api/`",
            );
            return;
        }
    };
    let method = step
        .args
        .get("method")
        .and_then(serde_json::Value::as_str)
        .or(http.method.as_deref())
        .unwrap_or("GET");
    if !method.contains('{') && !METHODS.contains(&method.to_ascii_uppercase().as_str()) {
        p.report(
            "args",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: method `{method}` is not an HTTP method"),
            &format!("use one of {}", METHODS.join(", ")),
        );
    }
    if p.wf.local_only {
        let hosts = allowed_hosts(http);
        let host = url.host_str().unwrap_or_default().to_string();
        for h in hosts.iter().chain(std::iter::once(&host)) {
            if !is_loopback(h) {
                p.report(
                    "tool",
                    DiagnosticCode::InvalidValue,
                    format!("tool `{name}` may reach `{h}`, but the workflow is `local_only`"),
                    "in a local_only workflow an http tool may reach only this machine (localhost, 127.0.0.1, ::1)",
                );
                break;
            }
        }
    }
    super::http::check_auth_and_pages(p, name, http);
}

/// The operation of a `file` call, if written as text, is known.
fn check_op(p: &mut StepPlanner<'_, '_>, name: &str, step: &ToolStep) {
    if let Some(op) = step.args.get("op").and_then(serde_json::Value::as_str)
        && !op.contains('{')
        && !matches!(op, "read" | "write" | "list")
    {
        p.report(
            "args",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `op: {op}` is not an operation"),
            "use `read`, `write` or `list`",
        );
    }
}

/// A `shell` tool has a program; `argv` is a list; its working folder exists.
fn check_shell(
    p: &mut StepPlanner<'_, '_>,
    name: &str,
    shell: &ShellTool,
    step: &ToolStep,
) -> Option<std::path::PathBuf> {
    if shell.command.first().is_none_or(|c| c.trim().is_empty()) {
        p.report(
            "tool",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `command` names no program"),
            "give the program and its first arguments as a list, e.g. `command: [git, status]`",
        );
    }
    if let Some(argv) = step.args.get("argv")
        && !argv.is_array()
    {
        p.report(
            "args",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `argv` is not a list"),
            "give the further arguments as a list of texts, e.g. `argv: [\"--file\", \"{{ inputs.path }}\"]`",
        );
    }
    folder(p, name, "cwd", shell.cwd.as_deref().unwrap_or("."))
}

/// A call of an `mcp` tool names a tool the server's `allow` list admits, `arguments` is
/// an object; then the server's checks ([`check_mcp_server`]).
fn check_mcp(
    p: &mut StepPlanner<'_, '_>,
    name: &str,
    mcp: &McpTool,
    step: &ToolStep,
) -> Option<std::path::PathBuf> {
    match step.args.get("call") {
        Some(serde_json::Value::String(call)) => {
            if !call.contains('{') && !mcp.allow.is_empty() && !mcp.allow.contains(call) {
                p.report(
                    "args",
                    DiagnosticCode::InvalidValue,
                    format!(
                        "tool `{name}`: `call: {call}` is not among the server's allowed tools"
                    ),
                    &format!(
                        "call one of {}, or add it to the tool's `allow`",
                        mcp.allow.join(", ")
                    ),
                );
            }
        }
        _ => p.report(
            "args",
            DiagnosticCode::MissingField,
            format!("tool `{name}`: a call of an MCP server needs `args.call`, the server's tool"),
            "give the tool's name, e.g. `args: {call: read_file, arguments: {path: notes.md}}`",
        ),
    }
    if step.args.get("arguments").is_some_and(|a| !a.is_object()) {
        p.report(
            "args",
            DiagnosticCode::InvalidValue,
            format!("tool `{name}`: `arguments` is not an object"),
            "give the tool's arguments by name, e.g. `arguments: {path: notes.md}`",
        );
    }
    check_mcp_server(p, name, mcp)
}

/// An `mcp` tool has `command` or `url` (not both), a loopback URL in a `local_only`
/// workflow; the stdio server's working folder, when it has one.
fn check_mcp_server(
    p: &mut StepPlanner<'_, '_>,
    name: &str,
    mcp: &McpTool,
) -> Option<std::path::PathBuf> {
    match (&mcp.command, &mcp.url) {
        (Some(command), None) => {
            if command.first().is_none_or(|c| c.trim().is_empty()) {
                p.report(
                    "tool",
                    DiagnosticCode::InvalidValue,
                    format!("tool `{name}`: `command` names no program"),
                    "give the server's program and arguments as a list, e.g. `command: [npx, -y, \"@modelcontextprotocol/server-filesystem\", .]`",
                );
            }
            folder(p, name, "cwd", mcp.cwd.as_deref().unwrap_or("."))
        }
        (None, Some(url)) => {
            let host = reqwest::Url::parse(url)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
                .and_then(|u| u.host_str().map(str::to_owned));
            match host {
                None => p.report(
                    "tool",
                    DiagnosticCode::InvalidValue,
                    format!("tool `{name}`: `{url}` is not an http or https URL"),
                    "give the server's streamable HTTP endpoint, e.g. `http://127.0.0.1:3001/mcp`",
                ),
                Some(h) if p.wf.local_only && !is_loopback(&h) => p.report(
                    "tool",
                    DiagnosticCode::InvalidValue,
                    format!("tool `{name}` reaches `{h}`, but the workflow is `local_only`"),
                    "in a local_only workflow an MCP server must be on this machine (localhost, 127.0.0.1, ::1) or started with `command`",
                ),
                Some(_) => {}
            }
            None
        }
        _ => {
            p.report(
                "tool",
                DiagnosticCode::InvalidValue,
                format!("tool `{name}`: an MCP server needs exactly one of `command` (stdio) and `url` (streamable HTTP)"),
                "give `command: [program, args...]` to start the server, or `url:` to reach a running one",
            );
            None
        }
    }
}

/// The folder `rel` (a tool's `workspace` or `cwd`), resolved from the workflow file's
/// folder, canonical; reported when it is not a folder.
fn folder(
    p: &mut StepPlanner<'_, '_>,
    name: &str,
    field: &str,
    rel: &str,
) -> Option<std::path::PathBuf> {
    let base =
        p.cx.file
            .map(Path::new)
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
    let base = if base.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base
    };
    match std::fs::canonicalize(base.join(rel)) {
        Ok(dir) if dir.is_dir() => Some(dir),
        _ => {
            p.report(
                "tool",
                DiagnosticCode::Io,
                format!(
                    "tool `{name}`: the {field} `{}` is not a folder",
                    base.join(rel).display()
                ),
                "create the folder, or give its path relative to the workflow file's folder",
            );
            None
        }
    }
}

/// Compiles every string with template syntax in `value` (at JSON pointer `at`).
fn compile_strings(
    p: &mut StepPlanner<'_, '_>,
    value: &serde_json::Value,
    at: String,
    out: &mut Vec<(String, String)>,
) {
    match value {
        serde_json::Value::String(text) if text.contains('{') => {
            let suffix = format!("args{}", at.replace('/', "."));
            if let Some(name) = p.compile_named(&suffix, "args", text.clone()) {
                out.push((at, name));
            }
        }
        serde_json::Value::Array(items) => {
            for (k, v) in items.iter().enumerate() {
                compile_strings(p, v, format!("{at}/{k}"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                let key = k.replace('~', "~0").replace('/', "~1");
                compile_strings(p, v, format!("{at}/{key}"), out);
            }
        }
        _ => {}
    }
}
