//! The executor of `tool` steps: the arguments are rendered when the step starts, then
//! the call runs as a task under the step's cancellation token.
//!
//! `http`: the request goes only to an allowed host (loopback only in a `local_only`
//! workflow: checked again on the final URL, so a templated `path` cannot leave); 429,
//! 5xx and connection failures are retried under the step's retry policy; the body is
//! read up to [`MAX_BODY`] bytes. `file`: every path is resolved inside the workspace
//! with symbolic links followed, and refused when it leads outside. `shell`: runs only
//! with the user's permission for the workflow file as it is (found in the store, or
//! asked once per run through the [`crate::human::HumanHandler`]); refused, nothing runs.

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use super::http_pages;
use super::records::record_for;
use super::scheduler::Sched;
use super::{Engine, RunShared, StepOutput, ms};
use crate::events::StepStatus;
use crate::human::{HumanDecision, HumanRequest};
use crate::plan::tools::{allowed_hosts, is_loopback};
use crate::plan::{PlannedStep, ToolAction};
use crate::store::{AttemptRecord, StepRecord};
use crate::workflow::{HttpTool, McpTool, ShellTool, ToolDecl};

/// What every request of one `http` call shares.
struct HttpCall<'a> {
    http: &'a HttpTool,
    client: reqwest::Client,
    auth: Option<&'a http_pages::ResolvedAuth>,
}

/// The largest response body an `http` tool reads, bytes (10 MiB).
pub const MAX_BODY: usize = 10 * 1024 * 1024;

/// A tool call ready to run: its step, tool and rendered arguments.
pub(super) struct ToolCall {
    step: PlannedStep,
    tool: ToolAction,
    args: serde_json::Map<String, serde_json::Value>,
    cancel: CancellationToken,
    /// The workflow's id, stored with a permission.
    workflow_id: String,
    /// The run (its permissions and MCP connections).
    shared: Arc<RunShared>,
}

/// Renders the arguments of the tool step at `i`; the call, or why the step fails.
pub(super) fn prepare(s: &Sched, i: usize, tool: &ToolAction) -> Result<ToolCall, String> {
    let step = &s.plan.steps[i];
    let mut args = tool.args.clone();
    for (pointer, template) in &tool.templated {
        let text = s
            .render_for(i, template)
            .map_err(|e| format!("`args{}` failed to render: {e}", pointer.replace('/', ".")))?;
        if let Some(slot) = args.pointer_mut(pointer) {
            *slot = serde_json::Value::String(text);
        }
    }
    let serde_json::Value::Object(args) = args else {
        return Err("`args` is not an object".into());
    };
    Ok(ToolCall {
        step: s.recorded(step),
        tool: tool.clone(),
        args,
        cancel: s.options.cancel.child_token(),
        workflow_id: s.plan.workflow.id.clone(),
        shared: Arc::clone(&s.shared),
    })
}

impl ToolCall {
    /// A call an agent step makes: the step's tool with the model's arguments, under
    /// `cancel` (a child of the step's token).
    pub(super) fn for_agent(
        step: &PlannedStep,
        tool: ToolAction,
        args: serde_json::Map<String, serde_json::Value>,
        cancel: CancellationToken,
        workflow_id: &str,
        shared: &Arc<RunShared>,
    ) -> ToolCall {
        ToolCall {
            step: step.clone(),
            tool,
            args,
            cancel,
            workflow_id: workflow_id.to_string(),
            shared: Arc::clone(shared),
        }
    }

    /// Whether the call needs the user's permission first (a `shell` tool, an `mcp`
    /// server started over stdio).
    pub(super) fn needs_permission(&self) -> bool {
        crate::plan::tools::needs_permission(&self.tool.decl)
    }

    /// Makes the call once the permission is there; without it the step fails (or is
    /// cancelled, when the run was) and nothing runs.
    pub(super) async fn run_permitted(
        self,
        engine: Arc<Engine>,
    ) -> (StepRecord, Option<StepOutput>) {
        let sh = Arc::clone(&self.shared);
        match engine.permit(&sh, &self).await {
            Ok(()) => self.run(engine).await,
            Err((status, error)) => {
                let mut rec = record_for(&self.step, status, Some(&error), Utc::now());
                rec.input = Some(
                    serde_json::json!({ "tool": self.tool.name, "args": self.args }).to_string(),
                );
                (rec, None)
            }
        }
    }

    /// Makes the call; the step's record and output.
    pub(super) async fn run(self, engine: Arc<Engine>) -> (StepRecord, Option<StepOutput>) {
        let t0 = Instant::now();
        let mut rec = record_for(&self.step, StepStatus::Succeeded, None, Utc::now());
        rec.input =
            Some(serde_json::json!({ "tool": self.tool.name, "args": self.args }).to_string());
        let result = if matches!(self.tool.decl, ToolDecl::Shell(_) | ToolDecl::Mcp(_)) {
            // A `shell` or `mcp` call ends itself on cancellation (a program killed first).
            self.call(&mut rec, &engine).await
        } else {
            tokio::select! {
                r = self.call(&mut rec, &engine) => r,
                () = self.cancel.cancelled() => Err(Ended),
            }
        };
        rec.duration_ms = ms(t0.elapsed());
        match result {
            Ok(out) => {
                rec.output = Some(out.text.clone());
                rec.output_json = out.json.clone();
                (rec, Some(out))
            }
            Err(Ended) if self.cancel.is_cancelled() => {
                rec.status = StepStatus::Cancelled;
                rec.error = Some(format!(
                    "cancelled during the call of tool `{}`",
                    self.tool.name
                ));
                (rec, None)
            }
            Err(Ended) => (rec, None),
        }
    }

    async fn call(&self, rec: &mut StepRecord, engine: &Engine) -> Result<StepOutput, Ended> {
        let result = match &self.tool.decl {
            ToolDecl::Http(http) => self.http(http, rec).await,
            ToolDecl::File(_) => self.file().await,
            ToolDecl::Shell(shell) => self.shell(shell, rec).await,
            ToolDecl::Mcp(mcp) => self.mcp(mcp, rec).await,
            ToolDecl::Memory(memory) => {
                let call = super::memory::MemoryCall {
                    engine,
                    shared: &self.shared,
                    step_id: &self.step.id,
                    tool: memory,
                    args: &self.args,
                };
                call.run(rec).await
            }
        };
        result.map_err(|e| {
            rec.status = StepStatus::Failed;
            rec.error = Some(format!("tool `{}`: {e}", self.tool.name));
            Ended
        })
    }

    fn arg_str(&self, key: &str) -> Option<&str> {
        self.args.get(key).and_then(serde_json::Value::as_str)
    }

    /// One `http` call: its auth resolved, then one request (with retries), or its pages
    /// under `paginate`; a secret the response echoes is replaced.
    async fn http(&self, http: &HttpTool, rec: &mut StepRecord) -> Result<StepOutput, String> {
        let base = reqwest::Url::parse(&http.url).map_err(|e| format!("bad URL: {e}"))?;
        let mut url = match self.arg_str("path") {
            Some(path) => base
                .join(path)
                .map_err(|e| format!("`path` `{path}`: {e}"))?,
            None => base,
        };
        if let Some(serde_json::Value::Object(query)) = self.args.get("query") {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in query {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                pairs.append_pair(k, &v);
            }
        }
        let auth = match &http.auth {
            Some(a) => Some(http_pages::resolve_auth(a, Arc::clone(&self.shared.secrets)).await?),
            None => None,
        };
        let client = reqwest::Client::builder()
            .timeout(http.timeout.unwrap_or(Duration::from_secs(30)))
            .build()
            .map_err(|e| e.to_string())?;
        let call = HttpCall {
            http,
            client,
            auth: auth.as_ref(),
        };
        let out = match &http.paginate {
            None => self.fetch(&call, url, rec).await.map(|(out, _)| out),
            Some(p) => self.pages(&call, p, url, rec).await,
        };
        match &auth {
            Some(a) => out.map(|o| a.redact(o)).map_err(|e| a.redact_text(e)),
            None => out,
        }
    }

    /// Requests page after page under `p`, at most `max_pages`, and joins them.
    async fn pages(
        &self,
        call: &HttpCall<'_>,
        p: &crate::workflow::Paginate,
        first: reqwest::Url,
        rec: &mut StepRecord,
    ) -> Result<StepOutput, String> {
        let mut pages = Vec::new();
        let mut url = first.clone();
        for number in 0..u64::from(p.max_pages) {
            if let Some(param) = &p.page_param {
                url = http_pages::numbered_page(&first, param, p.start.unwrap_or(1) + number);
            }
            let (page, headers) = self.fetch(call, url.clone(), rec).await?;
            let next = match &p.next_url {
                Some(rule) => http_pages::next_url(rule, &page, &headers, &url)?,
                None => None,
            };
            let empty = p.page_param.is_some()
                && http_pages::items(p, &page).is_none_or(|items| items.is_empty());
            if empty {
                break;
            }
            pages.push(page);
            match next {
                Some(n) if n != url => url = n,
                _ if p.next_url.is_some() => break,
                _ => {}
            }
        }
        Ok(http_pages::join(p, &pages))
    }

    /// The host of `url` is allowed for the tool (and on loopback in a `local_only`
    /// workflow).
    fn check_host(&self, http: &HttpTool, url: &reqwest::Url) -> Result<(), String> {
        let host = url.host_str().unwrap_or_default().to_string();
        if !allowed_hosts(http)
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&host))
        {
            return Err(format!(
                "host `{host}` is not among the tool's allowed hosts ({})",
                allowed_hosts(http).join(", ")
            ));
        }
        if self.tool.local_only && !is_loopback(&host) {
            return Err(format!(
                "host `{host}` is not this machine, and the workflow is `local_only`"
            ));
        }
        Ok(())
    }

    /// One request to `url` with retries: its output and its response headers
    /// (lowercase names).
    async fn fetch(
        &self,
        call: &HttpCall<'_>,
        url: reqwest::Url,
        rec: &mut StepRecord,
    ) -> Result<(StepOutput, serde_json::Map<String, serde_json::Value>), String> {
        let http = call.http;
        self.check_host(http, &url)?;
        let method = self
            .arg_str("method")
            .or(http.method.as_deref())
            .unwrap_or("GET")
            .to_ascii_uppercase();
        let method = reqwest::Method::from_bytes(method.as_bytes())
            .map_err(|_| format!("`{method}` is not an HTTP method"))?;
        let policy = self.step.retry.clone();
        let mut delays = super::attempt::retry_delays(&policy);
        let mut attempt = rec.attempts.len() as u32;
        loop {
            attempt += 1;
            let started = Utc::now();
            let t0 = Instant::now();
            let outcome = self.send(call, method.clone(), url.clone()).await;
            let (retryable, error, wait) = match outcome {
                Ok(out) => {
                    rec.attempts
                        .push(attempt_record(attempt, started, t0, None));
                    return Ok(out);
                }
                Err(f) => f,
            };
            let error = call.auth.map_or(error.clone(), |a| a.redact_text(error));
            rec.attempts
                .push(attempt_record(attempt, started, t0, Some(error.clone())));
            let Some(delay) = delays.next().filter(|_| retryable) else {
                return Err(error);
            };
            tokio::time::sleep(wait.map_or(delay, |w| w.min(policy.max_interval))).await;
        }
    }

    /// Sends one request; on failure, whether to retry, the error, and Retry-After.
    #[allow(clippy::type_complexity)]
    async fn send(
        &self,
        call: &HttpCall<'_>,
        method: reqwest::Method,
        url: reqwest::Url,
    ) -> Result<
        (StepOutput, serde_json::Map<String, serde_json::Value>),
        (bool, String, Option<Duration>),
    > {
        let mut req = call.client.request(method, url);
        for (k, v) in &call.http.headers {
            req = req.header(k, v);
        }
        if let Some(auth) = call.auth {
            req = auth.apply(req);
        }
        if let Some(serde_json::Value::Object(headers)) = self.args.get("headers") {
            for (k, v) in headers {
                req = req.header(k, v.as_str().map_or_else(|| v.to_string(), str::to_owned));
            }
        }
        if let Some(body) = self.args.get("body") {
            req = req.json(body);
        } else if let Some(serde_json::Value::Object(form)) = self.args.get("form") {
            let pairs: Vec<(String, String)> = form
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect();
            req = req.form(&pairs);
        } else if let Some(raw) = self.arg_str("raw") {
            req = req.body(raw.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| (true, format!("request failed: {e}"), None))?;
        let status = resp.status();
        let wait = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let json_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.contains("json"));
        let headers: serde_json::Map<String, serde_json::Value> = resp
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                let v = v.to_str().ok()?;
                Some((k.as_str().to_string(), serde_json::Value::String(v.into())))
            })
            .collect();
        let text = read_body(resp).await.map_err(|e| (false, e, None))?;
        if !status.is_success() {
            let retry = status.as_u16() == 429 || status.is_server_error();
            let start: String = text.chars().take(200).collect();
            return Err((retry, format!("HTTP {status}: {start}"), wait));
        }
        let json = if json_type {
            Some(serde_json::from_str(&text).map_err(|e| {
                (
                    false,
                    format!("the response says JSON but is not: {e}"),
                    None,
                )
            })?)
        } else {
            serde_json::from_str(&text)
                .ok()
                .filter(|v: &serde_json::Value| v.is_object() || v.is_array())
        };
        Ok((StepOutput { text, json }, headers))
    }

    /// One `shell` call (the permission was checked).
    async fn shell(&self, shell: &ShellTool, rec: &mut StepRecord) -> Result<StepOutput, String> {
        let cwd = self
            .tool
            .workspace
            .clone()
            .ok_or("the working folder is not known")?;
        let extra: Vec<String> = match self.args.get("argv") {
            None => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect(),
            Some(_) => return Err("`argv` is not a list".into()),
        };
        let (started, t0) = (Utc::now(), Instant::now());
        let stdin = self.arg_str("stdin");
        let result = super::shell::run(shell, &cwd, &extra, stdin, &self.cancel).await;
        let error = result.as_ref().err().cloned();
        rec.attempts.push(attempt_record(1, started, t0, error));
        result
    }

    /// One `mcp` call (the permission of a stdio server was checked).
    async fn mcp(&self, mcp: &McpTool, rec: &mut StepRecord) -> Result<StepOutput, String> {
        let call = self
            .arg_str("call")
            .ok_or("`call` names no tool of the server")?;
        let arguments = match self.args.get("arguments") {
            None => serde_json::Map::new(),
            Some(serde_json::Value::Object(a)) => a.clone(),
            Some(_) => return Err("`arguments` is not an object".into()),
        };
        let (started, t0) = (Utc::now(), Instant::now());
        let result = self
            .shared
            .mcp
            .call(
                &self.tool.name,
                mcp,
                self.tool.workspace.as_deref(),
                call,
                arguments,
                &self.cancel,
            )
            .await;
        let error = result.as_ref().err().cloned();
        rec.attempts.push(attempt_record(1, started, t0, error));
        result
    }

    /// One `file` operation.
    async fn file(&self) -> Result<StepOutput, String> {
        let workspace = self
            .tool
            .workspace
            .clone()
            .ok_or("the workspace is not known")?;
        let op = self.arg_str("op").unwrap_or("read");
        let rel = self
            .arg_str("path")
            .unwrap_or(if op == "list" { "." } else { "" });
        if rel.is_empty() {
            return Err(format!("`{op}` needs a `path`"));
        }
        let path = inside(&workspace, rel, op == "write").await?;
        match op {
            "read" => {
                let text = tokio::fs::read_to_string(&path)
                    .await
                    .map_err(|e| format!("cannot read `{rel}`: {e}"))?;
                Ok(StepOutput { text, json: None })
            }
            "write" => {
                let content = self.arg_str("content").unwrap_or_default();
                tokio::fs::write(&path, content)
                    .await
                    .map_err(|e| format!("cannot write `{rel}`: {e}"))?;
                let json = serde_json::json!({ "path": rel, "bytes": content.len() });
                Ok(StepOutput {
                    text: rel.to_string(),
                    json: Some(json),
                })
            }
            "list" => {
                let mut entries = tokio::fs::read_dir(&path)
                    .await
                    .map_err(|e| format!("cannot list `{rel}`: {e}"))?;
                let mut names = Vec::new();
                while let Ok(Some(e)) = entries.next_entry().await {
                    names.push(e.file_name().to_string_lossy().into_owned());
                }
                names.sort();
                Ok(StepOutput {
                    text: names.join("\n"),
                    json: Some(serde_json::json!(names)),
                })
            }
            other => Err(format!(
                "`op: {other}` is not an operation (read, write, list)"
            )),
        }
    }
}

/// The call ended without an output: it failed (the record says why) or was cancelled.
struct Ended;

impl Engine {
    /// The permission of the `shell` tool `call` uses: given earlier in this run, found in
    /// the store for this workflow hash, or asked now (approve: remembered in the store).
    /// Parallel calls wait for one question. Otherwise the status and error of the step.
    pub(super) async fn permit(
        &self,
        sh: &RunShared,
        call: &ToolCall,
    ) -> Result<(), (StepStatus, String)> {
        let command = match &call.tool.decl {
            ToolDecl::Shell(shell) => shell.command.clone(),
            ToolDecl::Mcp(McpTool {
                command: Some(command),
                ..
            }) => command.clone(),
            _ => return Ok(()),
        };
        let hash = call.tool.workflow_hash.clone().unwrap_or_default();
        let name = call.tool.name.clone();
        let refused = || {
            (
                StepStatus::Failed,
                format!(
                    "tool `{name}` may not run `{}`: the permission was refused (answer yes when asked, or run with `--allow-tool {name}`)",
                    command.join(" ")
                ),
            )
        };
        let mut decided = sh.permissions.lock().await;
        let key = (hash.clone(), name.clone());
        match decided.get(&key) {
            Some(true) => return Ok(()),
            Some(false) => return Err(refused()),
            None => {}
        }
        if let Some(store) = &self.store {
            match store.permission(&hash, &name).await {
                Ok(true) => {
                    decided.insert(key, true);
                    return Ok(());
                }
                Ok(false) => {}
                Err(e) => tracing::warn!("cannot read the permissions: {e}"),
            }
        }
        let cwd = call
            .tool
            .workspace
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let request = HumanRequest::Permission {
            run_id: sh.run_id.clone(),
            step_id: call.step.id.clone(),
            tool: name.clone(),
            command: command.clone(),
            cwd,
        };
        match self.ask(sh, request, None, &call.cancel).await {
            Some(HumanDecision::Approve) => {
                if let Some(store) = &self.store
                    && let Err(e) = store
                        .grant_permission(&hash, &name, &call.workflow_id, &command)
                        .await
                {
                    tracing::warn!("cannot remember the permission: {e}");
                }
                decided.insert(key, true);
                Ok(())
            }
            Some(HumanDecision::Cancel) => {
                sh.cancel.cancel();
                Err((
                    StepStatus::Cancelled,
                    "the run was cancelled when asked for the permission".into(),
                ))
            }
            None if sh.cancel.is_cancelled() || call.cancel.is_cancelled() => Err((
                StepStatus::Cancelled,
                "cancelled while asking for the permission".into(),
            )),
            None => Err((
                StepStatus::Failed,
                format!(
                    "tool `{name}` may not run `{}`: it needs the user's permission and nobody could be asked (run with `--allow-tool {name}`, or answer when asked)",
                    command.join(" ")
                ),
            )),
            Some(_) => {
                decided.insert(key, false);
                Err(refused())
            }
        }
    }
}

/// `rel` inside `workspace`: no absolute path, no `..`, and after following symbolic
/// links still inside (for a file to write, its folder must be).
async fn inside(workspace: &Path, rel: &str, new_file: bool) -> Result<PathBuf, String> {
    let relative = Path::new(rel);
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "`{rel}` leaves the workspace (give a path inside it, without `..`)"
        ));
    }
    let joined = workspace.join(relative);
    let (check, tail) = if new_file {
        let parent = joined
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| workspace.to_path_buf());
        (parent, joined.file_name().map(|n| n.to_os_string()))
    } else {
        (joined.clone(), None)
    };
    let real = tokio::fs::canonicalize(&check)
        .await
        .map_err(|e| format!("`{rel}`: {e}"))?;
    if !real.starts_with(workspace) {
        return Err(format!(
            "`{rel}` leads outside the workspace (through a symbolic link)"
        ));
    }
    if let Some(name) = tail {
        let target = real.join(name);
        // An existing symbolic link as the file itself may point outside.
        if let Ok(meta) = tokio::fs::symlink_metadata(&target).await
            && meta.file_type().is_symlink()
        {
            let to = tokio::fs::canonicalize(&target)
                .await
                .map_err(|e| format!("`{rel}`: {e}"))?;
            if !to.starts_with(workspace) {
                return Err(format!(
                    "`{rel}` leads outside the workspace (through a symbolic link)"
                ));
            }
        }
        return Ok(target);
    }
    Ok(real)
}

/// Reads a body up to [`MAX_BODY`] bytes as text.
async fn read_body(resp: reqwest::Response) -> Result<String, String> {
    let mut body = Vec::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| format!("the response broke off: {e}"))?;
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!(
                "the response is larger than {} MiB",
                MAX_BODY / (1024 * 1024)
            ));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "the response is not UTF-8 text".to_string())
}

fn attempt_record(
    attempt: u32,
    started: chrono::DateTime<Utc>,
    t0: Instant,
    error: Option<String>,
) -> AttemptRecord {
    AttemptRecord {
        attempt,
        model: None,
        started_at: started,
        duration_ms: ms(t0.elapsed()),
        first_token_ms: None,
        // A tool's failure has no model error class; its message says what failed.
        error_kind: None,
        error_message: error,
        usage: None,
    }
}
