//! A controllable HTTP reverse proxy on loopback for fault-injection tests against a real
//! upstream LLM server.
//!
//! [`FaultProxy`] listens on `127.0.0.1` (a free port) and forwards every request to an
//! upstream server: an OpenAI-compatible one (`python -m llama_cpp.server`: SSE
//! `chat.completion.chunk` events ending in `data: [DONE]`) or one that speaks Ollama's
//! protocol (`/api/chat` streaming NDJSON lines ending in `"done": true`). A test queues
//! [`Fault`]s per request path; each request takes the first queued fault whose path
//! matches, then the path's default, else it passes through unchanged. The faults cover
//! what a flaky server does: refuse the connection, answer an error status (with
//! `Retry-After`), hang, cut or stall a stream part way, or stream a completion whose text
//! is empty or replaced.
//!
//! Streams are forwarded chunk by chunk as they arrive, never buffered whole. The faults
//! that rewrite or count a stream split it into SSE events (on blank lines) or NDJSON lines
//! and rewrite the JSON content fields with `serde_json`.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use futures::{Stream, StreamExt};
use serde_json::{Map, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a cut stream waits after its last event before it drops the connection, so
/// that the events already sent reach the client before the connection goes.
const CUT_FLUSH_DELAY: Duration = Duration::from_millis(100);

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward the request and stream the upstream answer back unchanged, chunk by chunk.
    Pass,
    /// Drop the TCP connection (with a reset) without any HTTP response: the client sees a
    /// connection error, never a status.
    Refuse,
    /// Answer with this status and body without asking the upstream. The body is sent as
    /// `application/json` when it parses as JSON, else as `text/plain`.
    Status {
        /// The HTTP status code.
        status: u16,
        /// The response body.
        body: String,
        /// The value of a `Retry-After` header, when one is sent.
        retry_after: Option<String>,
    },
    /// Accept the request and never answer, until the client disconnects (counted by
    /// [`FaultProxy::client_disconnects`]) or the proxy is dropped.
    Hang,
    /// Forward the upstream stream but drop the connection abruptly after `events` SSE
    /// events with data (comments do not count) or non-empty NDJSON lines: the client reads
    /// those events, then gets a body error, and never sees `[DONE]` or `"done": true`
    /// (unless the stream had no more than `events` events).
    CutAfter {
        /// How many events reach the client.
        events: usize,
    },
    /// Like [`Fault::CutAfter`], but the response body ends cleanly (a well-formed end of
    /// the chunked body) after `events` events: a stream that stops early without error.
    EndAfter {
        /// How many events reach the client.
        events: usize,
    },
    /// Forward `events` events, then send nothing more while keeping the connection open,
    /// until the client disconnects (counted by [`FaultProxy::client_disconnects`]) or the
    /// proxy is dropped: a stream that stalls.
    StallAfter {
        /// How many events reach the client.
        events: usize,
    },
    /// Forward the stream but blank every content delta (OpenAI:
    /// `choices[].delta.content`, `choices[].message.content` or `choices[].text`; Ollama:
    /// `message.content` or `response`), so the completion has no text. Every chunk,
    /// including the final one with `finish_reason`/`done` and usage, is still sent.
    EmptyContent,
    /// Forward the stream but replace the whole generated text with this string: it is
    /// sent as the first content delta (or in the final chunk when no chunk carried
    /// content) and every other content delta is blanked. Non-streaming JSON answers get
    /// it as their message content.
    ReplaceContent(String),
}

impl Fault {
    /// A [`Fault::Status`] with this status and body and no `Retry-After`.
    pub fn status(status: u16, body: impl Into<String>) -> Fault {
        Fault::Status {
            status,
            body: body.into(),
            retry_after: None,
        }
    }

    /// The variant's name, as recorded by [`FaultProxy::log`]: `"Pass"`, `"Refuse"`,
    /// `"Status"`, `"Hang"`, `"CutAfter"`, `"EndAfter"`, `"StallAfter"`, `"EmptyContent"`
    /// or `"ReplaceContent"`.
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Pass => "Pass",
            Fault::Refuse => "Refuse",
            Fault::Status { .. } => "Status",
            Fault::Hang => "Hang",
            Fault::CutAfter { .. } => "CutAfter",
            Fault::EndAfter { .. } => "EndAfter",
            Fault::StallAfter { .. } => "StallAfter",
            Fault::EmptyContent => "EmptyContent",
            Fault::ReplaceContent(_) => "ReplaceContent",
        }
    }
}

/// A running fault-injection proxy; the server stops when it is dropped.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, without a trailing slash (append `/v1` for an
    /// OpenAI-compatible client).
    pub base_url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("base_url", &self.base_url)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (e.g. `http://127.0.0.1:8081`; a trailing
    /// slash is ignored). Request paths are appended to it unchanged.
    ///
    /// # Errors
    /// When it cannot bind a loopback port or build its HTTP client.
    pub async fn start(upstream: &str) -> anyhow::Result<FaultProxy> {
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder().no_proxy().build()?,
            rules: Mutex::new(Rules::default()),
            disconnects: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::clone(&shared))
            .into_make_service_with_connect_info::<Conn>();
        let serve = axum::serve(KillListener(listener), app);
        let task = tokio::spawn(async move {
            let _ = serve.await;
        });
        Ok(FaultProxy {
            base_url: format!("http://127.0.0.1:{port}"),
            shared,
            task,
        })
    }

    /// Queues `fault` for the next request whose path is `path` (e.g.
    /// `/v1/chat/completions`, `/api/chat`; `""` matches any path). Each request takes the
    /// first queued fault that matches it, in the order they were pushed; when none
    /// matches, the path's default applies (see [`FaultProxy::set_default`]), else
    /// [`Fault::Pass`].
    pub fn push(&self, path: &str, fault: Fault) {
        self.shared
            .rules()
            .queue
            .push_back((path.to_owned(), fault));
    }

    /// Queues `fault` for the next `n` requests whose path is `path` (see
    /// [`FaultProxy::push`]).
    pub fn push_n(&self, path: &str, fault: Fault, n: usize) {
        let mut rules = self.shared.rules();
        for _ in 0..n {
            rules.queue.push_back((path.to_owned(), fault.clone()));
        }
    }

    /// Sets the fault for requests to `path` (`""`: any path without its own default) when
    /// no queued fault matches them, e.g. [`Fault::Refuse`] for every request from now on.
    pub fn set_default(&self, path: &str, fault: Fault) {
        self.shared.rules().defaults.insert(path.to_owned(), fault);
    }

    /// Drops every queued fault and every default: from now on requests pass. The request
    /// log and counters are kept.
    pub fn clear(&self) {
        let mut rules = self.shared.rules();
        rules.queue.clear();
        rules.defaults.clear();
    }

    /// Empties the request log, so [`FaultProxy::requests`] counts from zero again.
    pub fn clear_log(&self) {
        self.shared.rules().log.clear();
    }

    /// How many requests arrived at `path` (at any path for `""`), whatever their fault.
    pub fn requests(&self, path: &str) -> usize {
        self.shared
            .rules()
            .log
            .iter()
            .filter(|(p, _)| path.is_empty() || p == path)
            .count()
    }

    /// Every request so far, in order of arrival: its path and the name of the fault it
    /// got ([`Fault::name`]).
    pub fn log(&self) -> Vec<(String, String)> {
        self.shared.rules().log.clone()
    }

    /// How many hangs and streams (of any fault, [`Fault::Pass`] included) ended because
    /// the client went away before the proxy finished answering.
    pub fn client_disconnects(&self) -> usize {
        self.shared.disconnects.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.task.abort();
    }
}

/// State shared by the proxy handle, the server and its streams.
struct Shared {
    upstream: String,
    client: reqwest::Client,
    rules: Mutex<Rules>,
    disconnects: AtomicUsize,
    shutdown: CancellationToken,
}

#[derive(Default)]
struct Rules {
    queue: VecDeque<(String, Fault)>,
    defaults: HashMap<String, Fault>,
    log: Vec<(String, String)>,
}

impl Shared {
    fn rules(&self) -> MutexGuard<'_, Rules> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the fault for a request to `path` and logs the request.
    fn next_fault(&self, path: &str) -> Fault {
        let mut rules = self.rules();
        let queued = rules
            .queue
            .iter()
            .position(|(p, _)| p.is_empty() || p == path)
            .and_then(|i| rules.queue.remove(i))
            .map(|(_, fault)| fault);
        let fault = queued
            .or_else(|| {
                rules
                    .defaults
                    .get(path)
                    .or_else(|| rules.defaults.get(""))
                    .cloned()
            })
            .unwrap_or(Fault::Pass);
        rules.log.push((path.to_owned(), fault.name().to_owned()));
        fault
    }

    fn client_gone(&self) {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
    }
}

/// One accepted connection: a handler sets `killed` to make the connection fail its next
/// read or write, so hyper drops it without writing a response.
#[derive(Debug, Clone, Default)]
struct Conn(Arc<AtomicBool>);

impl Conn {
    fn kill(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    fn killed(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Connected<IncomingStream<'_, KillListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, KillListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP listener whose connections can be killed from a request handler.
struct KillListener(TcpListener);

impl Listener for KillListener {
    type Io = KillableIo;
    type Addr = Conn;

    async fn accept(&mut self) -> (KillableIo, Conn) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Conn::default();
                    let io = KillableIo {
                        stream,
                        conn: conn.clone(),
                    };
                    return (io, conn);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Conn> {
        self.0.local_addr().map(|_| Conn::default())
    }
}

/// A TCP stream that fails every operation once its [`Conn`] is killed; it then closes
/// with a reset (zero linger) rather than an orderly shutdown.
struct KillableIo {
    stream: TcpStream,
    conn: Conn,
}

impl KillableIo {
    fn check(&self) -> io::Result<()> {
        if self.conn.killed() {
            let _ = self.stream.set_zero_linger();
            return Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "connection dropped by FaultProxy",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for KillableIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check()?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.conn.killed() {
            // No FIN: dropping the stream sends the reset.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

/// Counts a client disconnect when dropped while armed.
struct DisconnectGuard {
    shared: Arc<Shared>,
    armed: bool,
}

impl Drop for DisconnectGuard {
    fn drop(&mut self) {
        if self.armed {
            self.shared.client_gone();
        }
    }
}

/// A response hyper never sends: the connection is killed before it is written.
fn dropped(conn: &Conn) -> Response {
    conn.kill();
    Response::new(Body::empty())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    req: Request,
) -> Response {
    let path = req.uri().path().to_owned();
    match shared.next_fault(&path) {
        Fault::Refuse => dropped(&conn),
        Fault::Status {
            status,
            body,
            retry_after,
        } => status_response(status, body, retry_after),
        Fault::Hang => {
            // Dropped by hyper when the client disconnects.
            let mut guard = DisconnectGuard {
                shared: Arc::clone(&shared),
                armed: true,
            };
            shared.shutdown.cancelled().await;
            guard.armed = false;
            dropped(&conn)
        }
        fault => match forward(&shared, &conn, req, Plan::of(&fault)).await {
            Ok(response) => response,
            Err(e) => {
                let mut response = Response::new(Body::from(format!(
                    "FaultProxy: upstream {} failed: {e:#}",
                    shared.upstream
                )));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                response
            }
        },
    }
}

fn status_response(status: u16, body: String, retry_after: Option<String>) -> Response {
    let content_type = if serde_json::from_str::<Value>(&body).is_ok() {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(header::RETRY_AFTER, value);
    }
    response
}

/// Headers that belong to one hop of a connection, never forwarded.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ]
    .contains(name)
}

/// Forwards the request upstream and streams the answer back through a pump task that
/// applies `plan`.
async fn forward(
    shared: &Arc<Shared>,
    conn: &Conn,
    req: Request,
    plan: Plan,
) -> anyhow::Result<Response> {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await?;
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path_and_query}", shared.upstream);
    let mut headers = parts.headers;
    headers.retain_hop_safe();
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    let send = shared
        .client
        .request(parts.method, url)
        .headers(headers)
        .body(body)
        .send();
    let upstream = tokio::select! {
        upstream = send => upstream?,
        () = shared.shutdown.cancelled() => return Ok(dropped(conn)),
    };

    let status = upstream.status();
    let mut headers = upstream.headers().clone();
    headers.retain_hop_safe();
    let framing = if plan.is_pass() || !status.is_success() {
        None
    } else {
        headers.remove(header::CONTENT_LENGTH);
        Some(Framing::of(&headers))
    };
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(pump(
        Arc::clone(shared),
        upstream.bytes_stream(),
        framing,
        plan,
        tx,
    ));
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let mut response = Response::new(Body::from_stream(body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Removes the hop-by-hop headers.
trait RetainHopSafe {
    fn retain_hop_safe(&mut self);
}

impl RetainHopSafe for HeaderMap {
    fn retain_hop_safe(&mut self) {
        let names: Vec<HeaderName> = self.keys().filter(|n| is_hop_by_hop(n)).cloned().collect();
        for name in names {
            self.remove(name);
        }
    }
}

/// How a fault treats an upstream stream.
struct Plan {
    rewrite: Rewrite,
    stop: Option<(usize, Stop)>,
}

/// What happens once a stream has sent its allowed events.
#[derive(Clone, Copy)]
enum Stop {
    Cut,
    End,
    Stall,
}

impl Plan {
    fn of(fault: &Fault) -> Plan {
        let (rewrite, stop) = match fault {
            Fault::CutAfter { events } => (Rewrite::Keep, Some((*events, Stop::Cut))),
            Fault::EndAfter { events } => (Rewrite::Keep, Some((*events, Stop::End))),
            Fault::StallAfter { events } => (Rewrite::Keep, Some((*events, Stop::Stall))),
            Fault::EmptyContent => (Rewrite::Empty, None),
            Fault::ReplaceContent(text) => (
                Rewrite::Replace {
                    text: text.clone(),
                    sent: false,
                },
                None,
            ),
            _ => (Rewrite::Keep, None),
        };
        Plan { rewrite, stop }
    }

    fn is_pass(&self) -> bool {
        matches!(self.rewrite, Rewrite::Keep) && self.stop.is_none()
    }
}

type Chunk = Result<Bytes, io::Error>;

/// Moves the upstream body to the client, unit by unit, applying the plan. `framing` is
/// `None` to forward the raw chunks untouched.
async fn pump<S>(
    shared: Arc<Shared>,
    mut upstream: S,
    framing: Option<Framing>,
    mut plan: Plan,
    tx: mpsc::Sender<Chunk>,
) where
    S: Stream<Item = reqwest::Result<Bytes>> + Unpin + Send,
{
    let mut framer = framing.map(Framer::new);
    let mut sent = 0;
    let mut stop = plan.stop.filter(|(limit, _)| *limit == 0).map(|(_, s)| s);
    while stop.is_none() {
        let item = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => {
                let _ = tx.try_send(Err(io::Error::other("FaultProxy stopped")));
                return;
            }
            () = tx.closed() => {
                shared.client_gone();
                return;
            }
            item = upstream.next() => item,
        };
        let (units, last) = match item {
            Some(Ok(chunk)) => match framer.as_mut() {
                Some(framer) => (framer.push(&chunk), false),
                None => (vec![Unit::raw(chunk)], false),
            },
            Some(Err(e)) => {
                let _ = tx.send(Err(io::Error::other(e))).await;
                return;
            }
            None => (
                framer.as_mut().map(Framer::finish).unwrap_or_default(),
                true,
            ),
        };
        for unit in units {
            let event = unit.event;
            let bytes = match framer.as_ref() {
                Some(framer) => framer.render(unit, &mut plan.rewrite),
                None => unit.bytes,
            };
            if tx.send(Ok(bytes)).await.is_err() {
                shared.client_gone();
                return;
            }
            if event {
                sent += 1;
                if let Some((limit, s)) = plan.stop
                    && sent >= limit
                {
                    stop = Some(s);
                    break;
                }
            }
        }
        if last {
            return;
        }
    }
    drop(upstream);
    match stop {
        Some(Stop::Cut) => {
            tokio::time::sleep(CUT_FLUSH_DELAY).await;
            let _ = tx
                .send(Err(io::Error::other("stream cut by FaultProxy")))
                .await;
        }
        Some(Stop::Stall) => {
            tokio::select! {
                () = shared.shutdown.cancelled() => {
                    let _ = tx.try_send(Err(io::Error::other("FaultProxy stopped")));
                }
                () = tx.closed() => shared.client_gone(),
            }
        }
        Some(Stop::End) | None => {}
    }
}

/// How an upstream body splits into units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// Server-sent events, each ending with a blank line (`\n\n` or `\r\n\r\n`).
    Sse,
    /// Lines ending with `\n` (NDJSON, and any other content type).
    Lines,
    /// One JSON document, buffered whole (a non-streaming `application/json` answer).
    Whole,
}

impl Framing {
    fn of(headers: &HeaderMap) -> Framing {
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        if content_type.contains("event-stream") {
            Framing::Sse
        } else if content_type.contains("ndjson") || !content_type.contains("json") {
            Framing::Lines
        } else {
            Framing::Whole
        }
    }
}

/// A piece of the body: one SSE event, one line, one whole document, or a raw chunk.
struct Unit {
    bytes: Bytes,
    /// Whether it counts as an event for [`Fault::CutAfter`] and the like.
    event: bool,
}

impl Unit {
    fn raw(bytes: Bytes) -> Unit {
        Unit {
            bytes,
            event: false,
        }
    }

    fn framed(framing: Framing, bytes: Vec<u8>) -> Unit {
        let event = match framing {
            Framing::Sse => sse_lines(&bytes).any(|l| l.starts_with(b"data:")),
            Framing::Lines | Framing::Whole => !bytes.trim_ascii().is_empty(),
        };
        Unit {
            bytes: Bytes::from(bytes),
            event,
        }
    }
}

/// The lines of an SSE event without their line endings.
fn sse_lines(event: &[u8]) -> impl Iterator<Item = &[u8]> {
    event
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty())
}

/// The end (exclusive) of the first complete SSE event in `buf`: after its blank line.
fn sse_event_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    for (i, &b) in buf.iter().enumerate() {
        if b == b'\n' {
            let line = &buf[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some(i + 1);
            }
            line_start = i + 1;
        }
    }
    None
}

/// Splits a body into units as its chunks arrive.
struct Framer {
    framing: Framing,
    buf: Vec<u8>,
}

impl Framer {
    fn new(framing: Framing) -> Framer {
        Framer {
            framing,
            buf: Vec::new(),
        }
    }

    /// The units completed by `chunk`.
    fn push(&mut self, chunk: &[u8]) -> Vec<Unit> {
        self.buf.extend_from_slice(chunk);
        let mut units = Vec::new();
        loop {
            let end = match self.framing {
                Framing::Sse => sse_event_end(&self.buf),
                Framing::Lines => self.buf.iter().position(|&b| b == b'\n').map(|i| i + 1),
                Framing::Whole => None,
            };
            let Some(end) = end else { break };
            let unit: Vec<u8> = self.buf.drain(..end).collect();
            units.push(Unit::framed(self.framing, unit));
        }
        units
    }

    /// The units left at the end of the body.
    fn finish(&mut self) -> Vec<Unit> {
        let rest = std::mem::take(&mut self.buf);
        if rest.is_empty() {
            return Vec::new();
        }
        if self.framing == Framing::Whole && serde_json::from_slice::<Value>(&rest).is_err() {
            // Not one document: NDJSON served as `application/json`.
            self.framing = Framing::Lines;
            let mut units = self.push(&rest);
            units.extend(self.finish());
            return units;
        }
        vec![Unit::framed(self.framing, rest)]
    }

    /// The bytes to send for `unit`, rewritten when the plan asks for it.
    fn render(&self, unit: Unit, rewrite: &mut Rewrite) -> Bytes {
        if !unit.event || matches!(rewrite, Rewrite::Keep) {
            return unit.bytes;
        }
        let rewritten = match self.framing {
            Framing::Sse => rewrite_sse(&unit.bytes, rewrite),
            Framing::Lines | Framing::Whole => rewrite_line(&unit.bytes, rewrite),
        };
        rewritten.map_or(unit.bytes, Bytes::from)
    }
}

/// Rewrites the JSON data of an SSE event; `None` when it is left as it is.
fn rewrite_sse(event: &[u8], rewrite: &mut Rewrite) -> Option<String> {
    let text = std::str::from_utf8(event).ok()?;
    let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.is_empty())
        .collect();
    let data: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    let mut value: Value = serde_json::from_str(&data.join("\n")).ok()?;
    if !rewrite.apply(&mut value) {
        return None;
    }
    let mut out = String::new();
    let mut data_written = false;
    for line in lines {
        if !line.starts_with("data:") {
            out.push_str(line);
            out.push_str(eol);
        } else if !data_written {
            out.push_str("data: ");
            out.push_str(&value.to_string());
            out.push_str(eol);
            data_written = true;
        }
    }
    out.push_str(eol);
    Some(out)
}

/// Rewrites one JSON line (or document), keeping its line ending; `None` when it is left
/// as it is.
fn rewrite_line(line: &[u8], rewrite: &mut Rewrite) -> Option<String> {
    let text = std::str::from_utf8(line).ok()?;
    let json = text.trim_end();
    let mut value: Value = serde_json::from_str(json).ok()?;
    if !rewrite.apply(&mut value) {
        return None;
    }
    Some(format!("{value}{}", &text[json.len()..]))
}

/// How content fields are rewritten.
enum Rewrite {
    Keep,
    Empty,
    Replace { text: String, sent: bool },
}

impl Rewrite {
    /// Rewrites the content fields of one chunk (OpenAI or Ollama); whether it changed.
    fn apply(&mut self, value: &mut Value) -> bool {
        if matches!(self, Rewrite::Keep) {
            return false;
        }
        let Some(object) = value.as_object_mut() else {
            return false;
        };
        let mut changed = false;
        if let Some(choices) = object.get_mut("choices").and_then(Value::as_array_mut) {
            // OpenAI: a streamed chunk, a completion, or a legacy text completion.
            for choice in choices.iter_mut().filter_map(Value::as_object_mut) {
                let last = choice.get("finish_reason").is_some_and(|f| !f.is_null());
                if let Some(delta) = choice.get_mut("delta").and_then(Value::as_object_mut) {
                    changed |= self.edit(delta, "content", last);
                } else if let Some(message) =
                    choice.get_mut("message").and_then(Value::as_object_mut)
                {
                    changed |= self.edit(message, "content", true);
                } else if choice.contains_key("text") {
                    changed |= self.edit(choice, "text", last);
                }
            }
            return changed;
        }
        // Ollama: `/api/chat` (`message.content`) or `/api/generate` (`response`).
        let last = object.get("done").and_then(Value::as_bool).unwrap_or(true);
        if let Some(message) = object.get_mut("message").and_then(Value::as_object_mut) {
            changed |= self.edit(message, "content", last);
        } else if object.contains_key("response") {
            changed |= self.edit(object, "response", last);
        }
        changed
    }

    /// Rewrites `object[key]`; `last` when the chunk is the final one of its stream.
    fn edit(&mut self, object: &mut Map<String, Value>, key: &str, last: bool) -> bool {
        let current = object.get(key).and_then(Value::as_str);
        match self {
            Rewrite::Keep => false,
            Rewrite::Replace { text, sent } if !*sent && (current.is_some() || last) => {
                object.insert(key.to_owned(), Value::String(text.clone()));
                *sent = true;
                true
            }
            Rewrite::Empty | Rewrite::Replace { .. } => {
                if current.is_some_and(|c| !c.is_empty()) {
                    object.insert(key.to_owned(), Value::String(String::new()));
                    true
                } else {
                    false
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Every fault against an in-process upstream that speaks both protocols with a fixed
    //! five-token completion.

    use std::convert::Infallible;
    use std::time::Instant;

    use axum::Json;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use serde_json::json;

    use super::*;

    const TOKENS: [&str; 5] = ["Hel", "lo", ", wor", "ld", "!"];
    const TEXT: &str = "Hello, world!";
    const CHAT: &str = "/v1/chat/completions";
    const OLLAMA: &str = "/api/chat";

    fn openai_chunk(delta: Value, finish: Value) -> Value {
        json!({"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    }

    /// The SSE events of a streamed completion, with sse-starlette's `\r\n` line endings
    /// and a leading comment.
    fn openai_events() -> Vec<String> {
        let mut data = vec![openai_chunk(json!({"role": "assistant"}), Value::Null)];
        data.extend(
            TOKENS
                .iter()
                .map(|t| openai_chunk(json!({"content": t}), Value::Null)),
        );
        data.push(openai_chunk(json!({}), json!("stop")));
        data.push(
            json!({"id": "c1", "object": "chat.completion.chunk", "created": 1,
                         "model": "m", "choices": [],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}),
        );
        let mut events = vec![": ping\r\n\r\n".to_owned()];
        events.extend(data.iter().map(|d| format!("data: {d}\r\n\r\n")));
        events.push("data: [DONE]\r\n\r\n".to_owned());
        events
    }

    fn ollama_lines() -> Vec<String> {
        let mut lines: Vec<String> = TOKENS
            .iter()
            .map(|t| {
                json!({"model": "m", "created_at": "2024-01-01T00:00:00Z",
                       "message": {"role": "assistant", "content": t}, "done": false})
                .to_string()
                    + "\n"
            })
            .collect();
        lines.push(
            json!({"model": "m", "created_at": "2024-01-01T00:00:00Z",
                   "message": {"role": "assistant", "content": ""}, "done": true,
                   "done_reason": "stop", "eval_count": 5, "prompt_eval_count": 3})
            .to_string()
                + "\n",
        );
        lines
    }

    /// A body that sends `parts` with a short pause before each.
    fn paced(parts: Vec<String>) -> Body {
        Body::from_stream(futures::stream::iter(parts).then(|p| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, Infallible>(p)
        }))
    }

    fn with_type(body: Body, content_type: &'static str) -> Response {
        let mut response = Response::new(body);
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }

    async fn openai_chat(Json(req): Json<Value>) -> Response {
        if req["stream"] == json!(true) {
            with_type(paced(openai_events()), "text/event-stream; charset=utf-8")
        } else {
            let body = json!({"id": "c1", "object": "chat.completion", "model": "m",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": TEXT}}]});
            Json(body).into_response()
        }
    }

    async fn ollama_chat(Json(req): Json<Value>) -> Response {
        if req.get("model").is_none() {
            let mut response = Json(json!({"error": "model is required"})).into_response();
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
        with_type(paced(ollama_lines()), "application/x-ndjson")
    }

    /// Echoes what it received.
    async fn echo(req: Request) -> Response {
        let (parts, body) = req.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let mut response = Json(json!({
            "method": parts.method.as_str(),
            "uri": parts.uri.to_string(),
            "x_test": parts.headers.get("x-test").and_then(|v| v.to_str().ok()),
            "host": parts.headers.get("host").and_then(|v| v.to_str().ok()),
            "body": String::from_utf8_lossy(&body),
        }))
        .into_response();
        response
            .headers_mut()
            .insert("x-echo", HeaderValue::from_static("yes"));
        response
    }

    /// One chunk, then the next only after three seconds.
    async fn slow() -> Response {
        let parts = futures::stream::iter([0u64, 3]).then(|wait| async move {
            tokio::time::sleep(Duration::from_secs(wait)).await;
            Ok::<_, Infallible>(format!("after {wait}s\n"))
        });
        with_type(Body::from_stream(parts), "text/plain")
    }

    /// The upstream's base URL; it runs until the test's runtime ends.
    async fn upstream() -> String {
        let app = Router::new()
            .route(CHAT, post(openai_chat))
            .route(
                "/v1/models",
                get(|| async { Json(json!({"object": "list", "data": [{"id": "m"}]})) }),
            )
            .route(OLLAMA, post(ollama_chat))
            .route(
                "/api/tags",
                get(|| async { Json(json!({"models": [{"name": "m"}]})) }),
            )
            .route("/echo", post(echo))
            .route("/slow", get(slow));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        format!("http://127.0.0.1:{port}")
    }

    async fn setup() -> (String, FaultProxy) {
        let upstream = upstream().await;
        let proxy = FaultProxy::start(&upstream).await.unwrap();
        (upstream, proxy)
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    async fn post_chat(base: &str, path: &str) -> reqwest::Result<reqwest::Response> {
        let body = if path == CHAT {
            json!({"model": "m", "stream": true, "messages": [{"role": "user", "content": "hi"}]})
        } else {
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        };
        client()
            .post(format!("{base}{path}"))
            .json(&body)
            .send()
            .await
    }

    /// The whole body, and the error that ended it early, if any.
    async fn read_all(response: reqwest::Response) -> (Vec<u8>, Option<reqwest::Error>) {
        let mut stream = response.bytes_stream();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            match chunk {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(e) => return (body, Some(e)),
            }
        }
        (body, None)
    }

    /// The `data:` payloads of an SSE body.
    fn sse_data(body: &[u8]) -> Vec<String> {
        String::from_utf8_lossy(body)
            .replace("\r\n", "\n")
            .split("\n\n")
            .flat_map(|event| {
                event
                    .lines()
                    .filter_map(|l| l.strip_prefix("data: "))
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn openai_text(data: &[String]) -> String {
        data.iter()
            .filter_map(|d| serde_json::from_str::<Value>(d).ok())
            .filter_map(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .map(str::to_owned)
            })
            .collect()
    }

    fn ndjson(body: &[u8]) -> Vec<Value> {
        String::from_utf8_lossy(body)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn ollama_text(lines: &[Value]) -> String {
        lines
            .iter()
            .filter_map(|v| v["message"]["content"].as_str())
            .collect()
    }

    async fn eventually(what: &str, check: impl Fn() -> bool) {
        let start = Instant::now();
        while !check() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "timed out: {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn pass_forwards_the_same_bytes_and_headers() {
        let (upstream, proxy) = setup().await;
        for path in [CHAT, OLLAMA] {
            let direct = post_chat(&upstream, path).await.unwrap();
            let proxied = post_chat(&proxy.base_url, path).await.unwrap();
            assert_eq!(proxied.status(), 200);
            assert_eq!(
                proxied.headers()[header::CONTENT_TYPE],
                direct.headers()[header::CONTENT_TYPE]
            );
            let (direct, _) = read_all(direct).await;
            let (proxied, err) = read_all(proxied).await;
            assert!(err.is_none(), "{path}: {err:?}");
            assert_eq!(proxied, direct, "{path}");
        }
        assert_eq!(
            sse_data(
                &read_all(post_chat(&proxy.base_url, CHAT).await.unwrap())
                    .await
                    .0
            )
            .last()
            .map(String::as_str),
            Some("[DONE]")
        );
        for path in ["/v1/models", "/api/tags"] {
            let direct = client()
                .get(format!("{upstream}{path}"))
                .send()
                .await
                .unwrap();
            let proxied = client()
                .get(format!("{}{path}", proxy.base_url))
                .send()
                .await
                .unwrap();
            assert_eq!(
                proxied.headers()["content-length"],
                direct.headers()["content-length"]
            );
            assert_eq!(
                proxied.bytes().await.unwrap(),
                direct.bytes().await.unwrap()
            );
        }
        // Upstream errors pass through with their status.
        let bad = client()
            .post(format!("{}{OLLAMA}", proxy.base_url))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(
            bad.json::<Value>().await.unwrap()["error"],
            "model is required"
        );
        assert_eq!(proxy.client_disconnects(), 0);
    }

    #[tokio::test]
    async fn pass_forwards_method_query_headers_and_body() {
        let (_upstream, proxy) = setup().await;
        let response = client()
            .post(format!("{}/echo?a=1&b=two", proxy.base_url))
            .header("x-test", "value")
            .body("payload")
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["x-echo"], "yes");
        let echo: Value = response.json().await.unwrap();
        assert_eq!(echo["method"], "POST");
        assert_eq!(echo["uri"], "/echo?a=1&b=two");
        assert_eq!(echo["x_test"], "value");
        assert_eq!(echo["body"], "payload");
        assert_ne!(
            echo["host"],
            json!(proxy.base_url.trim_start_matches("http://"))
        );
    }

    #[tokio::test]
    async fn pass_streams_without_buffering() {
        let (_upstream, proxy) = setup().await;
        let start = Instant::now();
        let response = client()
            .get(format!("{}/slow", proxy.base_url))
            .send()
            .await
            .unwrap();
        let mut stream = response.bytes_stream();
        let first = stream.next().await.unwrap().unwrap();
        assert_eq!(&first[..], b"after 0s\n");
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn refuse_drops_the_connection() {
        let (_upstream, proxy) = setup().await;
        for path in [CHAT, OLLAMA] {
            proxy.push(path, Fault::Refuse);
            let err = post_chat(&proxy.base_url, path).await.unwrap_err();
            assert!(err.status().is_none(), "{err:?}");
            assert!(err.is_connect() || err.is_request(), "{err:?}");
            // The queue is empty again: the next request passes.
            let response = post_chat(&proxy.base_url, path).await.unwrap();
            assert_eq!(response.status(), 200);
        }
        // A client that reuses its kept-alive connection sees the error as well.
        let shared = client();
        let url = format!("{}/v1/models", proxy.base_url);
        assert_eq!(shared.get(&url).send().await.unwrap().status(), 200);
        proxy.push("/v1/models", Fault::Refuse);
        let err = shared.get(&url).send().await.unwrap_err();
        assert!(err.is_connect() || err.is_request(), "{err:?}");
        assert_eq!(shared.get(&url).send().await.unwrap().status(), 200);

        proxy.set_default(CHAT, Fault::Refuse);
        for _ in 0..3 {
            assert!(post_chat(&proxy.base_url, CHAT).await.is_err());
        }
        assert!(post_chat(&proxy.base_url, OLLAMA).await.is_ok());
        proxy.clear();
        assert!(post_chat(&proxy.base_url, CHAT).await.is_ok());
    }

    #[tokio::test]
    async fn status_answers_without_the_upstream() {
        let (_upstream, proxy) = setup().await;
        proxy.push(
            CHAT,
            Fault::Status {
                status: 429,
                body: r#"{"error":{"message":"slow down"}}"#.to_owned(),
                retry_after: Some("2".to_owned()),
            },
        );
        proxy.push(OLLAMA, Fault::status(503, "overloaded"));
        let response = post_chat(&proxy.base_url, CHAT).await.unwrap();
        assert_eq!(response.status(), 429);
        assert_eq!(response.headers()[header::RETRY_AFTER], "2");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["message"], "slow down");

        let response = post_chat(&proxy.base_url, OLLAMA).await.unwrap();
        assert_eq!(response.status(), 503);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(response.text().await.unwrap(), "overloaded");
    }

    #[tokio::test]
    async fn hang_never_answers_until_the_client_leaves() {
        let (_upstream, proxy) = setup().await;
        for (i, path) in [CHAT, OLLAMA].into_iter().enumerate() {
            proxy.push(path, Fault::Hang);
            let started = Instant::now();
            let err = client()
                .post(format!("{}{path}", proxy.base_url))
                .timeout(Duration::from_millis(300))
                .json(&json!({"model": "m", "stream": true}))
                .send()
                .await
                .unwrap_err();
            assert!(err.is_timeout(), "{err:?}");
            assert!(started.elapsed() >= Duration::from_millis(300));
            eventually("hang disconnect", || proxy.client_disconnects() == i + 1).await;
        }
    }

    #[tokio::test]
    async fn cut_after_drops_the_stream_part_way() {
        let (_upstream, proxy) = setup().await;
        proxy.push(CHAT, Fault::CutAfter { events: 3 });
        let response = post_chat(&proxy.base_url, CHAT).await.unwrap();
        assert_eq!(response.status(), 200);
        let (body, err) = read_all(response).await;
        assert!(err.is_some(), "the stream ended cleanly");
        let data = sse_data(&body);
        assert_eq!(data.len(), 3, "{data:?}");
        assert!(!data.iter().any(|d| d == "[DONE]"));
        assert_eq!(openai_text(&data), "Hello");

        proxy.push(OLLAMA, Fault::CutAfter { events: 2 });
        let (body, err) = read_all(post_chat(&proxy.base_url, OLLAMA).await.unwrap()).await;
        assert!(err.is_some(), "the stream ended cleanly");
        let lines = ndjson(&body);
        assert_eq!(lines.len(), 2);
        assert!(lines.iter().all(|l| l["done"] == false));
        assert_eq!(ollama_text(&lines), "Hello");

        // Zero events: the headers, then nothing.
        proxy.push(CHAT, Fault::CutAfter { events: 0 });
        let (body, err) = read_all(post_chat(&proxy.base_url, CHAT).await.unwrap()).await;
        assert!(err.is_some());
        assert!(sse_data(&body).is_empty());
        assert_eq!(proxy.client_disconnects(), 0);
    }

    #[tokio::test]
    async fn end_after_ends_the_stream_cleanly_part_way() {
        let (_upstream, proxy) = setup().await;
        proxy.push(CHAT, Fault::EndAfter { events: 4 });
        let (body, err) = read_all(post_chat(&proxy.base_url, CHAT).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        let data = sse_data(&body);
        assert_eq!(data.len(), 4);
        assert_eq!(openai_text(&data), "Hello, wor");

        proxy.push(OLLAMA, Fault::EndAfter { events: 5 });
        let (body, err) = read_all(post_chat(&proxy.base_url, OLLAMA).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        let lines = ndjson(&body);
        assert_eq!(lines.len(), 5);
        assert!(lines.iter().all(|l| l["done"] == false));
        assert_eq!(ollama_text(&lines), TEXT);
    }

    #[tokio::test]
    async fn stall_after_keeps_the_stream_open_without_data() {
        let (_upstream, proxy) = setup().await;
        for (i, (path, events)) in [(CHAT, 2), (OLLAMA, 1)].into_iter().enumerate() {
            proxy.push(path, Fault::StallAfter { events });
            let response = post_chat(&proxy.base_url, path).await.unwrap();
            let mut stream = response.bytes_stream();
            let mut body = Vec::new();
            let stalled = tokio::time::timeout(Duration::from_millis(500), async {
                while let Some(chunk) = stream.next().await {
                    body.extend_from_slice(&chunk.unwrap());
                }
            })
            .await;
            assert!(stalled.is_err(), "{path}: the stream ended");
            let units = if path == CHAT {
                sse_data(&body).len()
            } else {
                ndjson(&body).len()
            };
            assert_eq!(units, events, "{path}");
            drop(stream);
            eventually("stall disconnect", || proxy.client_disconnects() == i + 1).await;
        }
    }

    #[tokio::test]
    async fn empty_content_blanks_the_text_but_keeps_the_chunks() {
        let (upstream, proxy) = setup().await;
        proxy.push(CHAT, Fault::EmptyContent);
        let (direct, _) = read_all(post_chat(&upstream, CHAT).await.unwrap()).await;
        let (body, err) = read_all(post_chat(&proxy.base_url, CHAT).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        let (data, direct) = (sse_data(&body), sse_data(&direct));
        assert_eq!(data.len(), direct.len());
        assert_eq!(openai_text(&direct), TEXT);
        assert_eq!(openai_text(&data), "");
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let usage: Value = serde_json::from_str(&data[data.len() - 2]).unwrap();
        assert_eq!(usage["usage"]["completion_tokens"], 5);
        let finish: Value = serde_json::from_str(&data[data.len() - 3]).unwrap();
        assert_eq!(finish["choices"][0]["finish_reason"], "stop");
        // The rewritten events keep the upstream's `\r\n` framing.
        assert!(String::from_utf8_lossy(&body).contains("\"content\":\"\"}"));
        assert!(
            !String::from_utf8_lossy(&body)
                .replace("\r\n", "")
                .contains('\n')
        );

        proxy.push(OLLAMA, Fault::EmptyContent);
        let (body, err) = read_all(post_chat(&proxy.base_url, OLLAMA).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        let lines = ndjson(&body);
        assert_eq!(lines.len(), 6);
        assert_eq!(ollama_text(&lines), "");
        assert_eq!(lines[5]["done"], true);
        assert_eq!(lines[5]["eval_count"], 5);
    }

    #[tokio::test]
    async fn replace_content_swaps_the_whole_text() {
        let (_upstream, proxy) = setup().await;
        let bad = r#"{"a": "#;
        proxy.push(CHAT, Fault::ReplaceContent(bad.to_owned()));
        let (body, err) = read_all(post_chat(&proxy.base_url, CHAT).await.unwrap()).await;
        assert!(err.is_none(), "{err:?}");
        let data = sse_data(&body);
        assert_eq!(data.len(), 9);
        assert_eq!(openai_text(&data), bad);
        let first: Value = serde_json::from_str(&data[1]).unwrap();
        assert_eq!(first["choices"][0]["delta"]["content"], bad);

        proxy.push(OLLAMA, Fault::ReplaceContent(bad.to_owned()));
        let (body, _) = read_all(post_chat(&proxy.base_url, OLLAMA).await.unwrap()).await;
        let lines = ndjson(&body);
        assert_eq!(ollama_text(&lines), bad);
        assert_eq!(lines[0]["message"]["content"], bad);
        assert_eq!(lines[5]["done"], true);

        // A non-streaming completion gets it as its message.
        proxy.push(CHAT, Fault::ReplaceContent("x".to_owned()));
        let response = client()
            .post(format!("{}{CHAT}", proxy.base_url))
            .json(&json!({"model": "m", "stream": false}))
            .send()
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["choices"][0]["message"]["content"], "x");
    }

    #[tokio::test]
    async fn faults_apply_in_order_per_path_and_requests_are_counted() {
        let (_upstream, proxy) = setup().await;
        proxy.push(OLLAMA, Fault::status(500, "boom"));
        proxy.push_n(CHAT, Fault::status(502, "bad"), 2);
        proxy.push("", Fault::status(503, "any"));
        // A chat request skips the Ollama fault and takes the first chat fault.
        let statuses = [CHAT, CHAT, CHAT, OLLAMA, OLLAMA, CHAT];
        let mut got = Vec::new();
        for path in statuses {
            got.push(
                post_chat(&proxy.base_url, path)
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        assert_eq!(got, [502, 502, 503, 500, 200, 200]);
        assert_eq!(proxy.requests(CHAT), 4);
        assert_eq!(proxy.requests(OLLAMA), 2);
        assert_eq!(proxy.requests(""), 6);
        assert_eq!(proxy.requests("/v1/models"), 0);
        let log = proxy.log();
        assert_eq!(log[0], (CHAT.to_owned(), "Status".to_owned()));
        assert_eq!(log[4], (OLLAMA.to_owned(), "Pass".to_owned()));
        proxy.clear_log();
        assert_eq!(proxy.requests(""), 0);

        proxy.set_default("", Fault::status(418, "teapot"));
        proxy.set_default(OLLAMA, Fault::Pass);
        assert_eq!(
            post_chat(&proxy.base_url, CHAT).await.unwrap().status(),
            418
        );
        assert_eq!(
            post_chat(&proxy.base_url, OLLAMA).await.unwrap().status(),
            200
        );
    }

    #[tokio::test]
    async fn dropping_the_proxy_stops_it() {
        let (_upstream, proxy) = setup().await;
        let base = proxy.base_url.clone();
        proxy.push(CHAT, Fault::Hang);
        let hanging = tokio::spawn({
            let base = base.clone();
            async move { post_chat(&base, CHAT).await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(proxy);
        let result = tokio::time::timeout(Duration::from_secs(5), hanging)
            .await
            .expect("the hanging request outlived the proxy")
            .unwrap();
        assert!(result.is_err());
        tokio::time::sleep(Duration::from_millis(50)).await;
        let err = post_chat(&base, CHAT).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
    }
}
