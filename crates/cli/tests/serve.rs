//! `nexus serve` end to end: the real binary on a loopback port, a real SQLite file, the
//! embedded model, and a real HTTP client (reqwest; the event stream parsed by
//! `eventsource-stream`). Every endpoint, the token and host checks, the order of a real
//! run's events, and a run continued after the server was killed with SIGKILL.
//!
//! Synchronisation is on observable state only: the server's "listening on" line, the
//! run's events on its stream, its status through the API.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result, bail};
use eventsource_stream::Eventsource;
use futures::StreamExt;
use nexus_app::engine::{Event, RunStatus};
use serde_json::{Value, json};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A `nexus serve` process, killed (SIGKILL) on drop.
struct Server {
    child: Child,
    base: String,
    stderr: PathBuf,
}

impl Server {
    /// Starts `nexus serve ARGS` on `db` and `workflows` and waits for its "listening"
    /// line; `token` goes to NEXUS_API_TOKEN.
    fn start(dir: &Path, args: &[&str], token: Option<&str>) -> Result<Server> {
        Server::start_with(dir, args, token, &[])
    }

    /// [`Server::start`] with more environment variables.
    fn start_with(
        dir: &Path,
        args: &[&str],
        token: Option<&str>,
        env: &[(&str, &str)],
    ) -> Result<Server> {
        let stderr = dir.join(format!("serve-{}.log", std::process::id()));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&stderr)?;
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nexus"));
        cmd.arg("serve")
            .args(args)
            .env("NEXUS_DB", dir.join("runs.db"))
            .env("NEXUS_WORKFLOWS", dir.join("workflows"))
            // Nothing listens here: the runs use the embedded model only.
            .env("OLLAMA_HOST", "127.0.0.1:9")
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .env_remove("NEXUS_OPENAI_BASE_URL")
            .env_remove("NEXUS_OPENAI_API_KEY")
            .env_remove("NEXUS_EDITOR")
            .current_dir(dir)
            .stdout(Stdio::piped())
            .stderr(log);
        match token {
            Some(t) => cmd.env("NEXUS_API_TOKEN", t),
            None => cmd.env_remove("NEXUS_API_TOKEN"),
        };
        cmd.envs(env.iter().copied());
        let mut child = cmd.spawn().context("spawn nexus serve")?;
        let stdout = child.stdout.take().context("stdout")?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let Some(base) = line.trim().strip_prefix("nexus serve: listening on ") else {
            let status = child.wait()?;
            bail!(
                "nexus serve did not start ({status}): {}",
                std::fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        let base = base.replace("0.0.0.0", "127.0.0.1");
        Ok(Server {
            child,
            base,
            stderr,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Kills the process with SIGKILL (no chance to clean up) and reaps it.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "nexus serve's log:\n{}",
                std::fs::read_to_string(&self.stderr).unwrap_or_default()
            );
        }
    }
}

/// A temporary folder with `workflows/` in it.
fn folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(dir.path().join("workflows")).expect("workflows");
    dir
}

/// A template step, an approval, then an `llm` step on the embedded model.
const APPROVE: &str = "id: approve\nsteps:\n  - id: draft\n    kind: template\n    template: \"v{{ inputs.version }}\"\n  - id: ship\n    kind: approval\n    needs: [draft]\n    prompt: \"Release {{ steps.draft.output }}?\"\n  - id: note\n    kind: llm\n    needs: [ship]\n    model: [embedded:smollm2-135m-instruct]\n    max_tokens: 24\n    prompt: \"Write one sentence announcing release {{ steps.draft.output }}.\"\ninputs:\n  version: {type: string}\n";

async fn json_of(r: reqwest::Response) -> Result<(u16, Value)> {
    let status = r.status().as_u16();
    let text = r.text().await?;
    let v = serde_json::from_str(&text).with_context(|| format!("not JSON ({status}): {text}"))?;
    Ok((status, v))
}

/// The run's event stream, from its start.
async fn events(
    http: &reqwest::Client,
    server: &Server,
    run_id: &str,
) -> Result<impl futures::Stream<Item = (usize, Event)> + use<>> {
    let r = http
        .get(server.url(&format!("/api/runs/{run_id}/events")))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str()?,
        "text/event-stream",
        "SSE content type"
    );
    Ok(r.bytes_stream().eventsource().map(|e| {
        let e = e.expect("a well-formed SSE event");
        let event: Event = serde_json::from_str(&e.data).expect("an engine event");
        (e.id.parse::<usize>().expect("numeric id"), event)
    }))
}

/// Reads the stream until `stop` matches, returning the events read.
async fn read_until(
    stream: &mut (impl futures::Stream<Item = (usize, Event)> + Unpin),
    seen: &mut Vec<(usize, Event)>,
    stop: impl Fn(&Event) -> bool,
) {
    while let Some((id, event)) = stream.next().await {
        let done = stop(&event);
        seen.push((id, event));
        if done {
            return;
        }
    }
    panic!("the stream ended before the awaited event: {seen:?}");
}

fn waiting(e: &Event) -> bool {
    matches!(e, Event::WaitingForHuman { .. })
}

fn finished(e: &Event) -> bool {
    matches!(e, Event::RunFinished { .. })
}

async fn start_approve(http: &reqwest::Client, server: &Server) -> Result<String> {
    let (status, body) = json_of(
        http.post(server.url("/api/runs"))
            .json(&json!({"file": "approve.yaml", "inputs": {"version": "1.2"}}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    Ok(body["run_id"].as_str().context("run_id")?.to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn every_endpoint_answers_and_a_real_run_streams_its_events_in_order() -> Result<()> {
    let dir = folder();
    std::fs::write(dir.path().join("workflows/approve.yaml"), APPROVE)?;
    let server = Server::start(dir.path(), &["--bind", "127.0.0.1:0"], None)?;
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(server.url(path)).send();

    let (s, health) = json_of(get("/api/health").await?).await?;
    assert_eq!(
        (s, &health["service"], &health["token_required"]),
        (200, &json!("nexus"), &json!(false))
    );
    let (s, settings) = json_of(get("/api/settings").await?).await?;
    assert_eq!(s, 200);
    assert!(
        settings["workflows_folder"]
            .as_str()
            .unwrap()
            .ends_with("workflows")
    );

    // Workflows: list, read, save, validate.
    let (s, list) = json_of(get("/api/workflows").await?).await?;
    assert_eq!((s, list), (200, json!(["approve.yaml"])));
    let (s, wf) = json_of(get("/api/workflows/approve.yaml").await?).await?;
    assert_eq!((s, wf["text"].as_str()), (200, Some(APPROVE)));
    let (s, missing) = json_of(get("/api/workflows/nope.yaml").await?).await?;
    assert_eq!(
        (s, &missing["kind"]),
        (404, &json!("not_found")),
        "{missing}"
    );
    for bad_name in ["notes.txt", "..%2Fescape.yaml", "%2Fetc%2Fhosts.yaml"] {
        let (s, bad) = json_of(get(&format!("/api/workflows/{bad_name}")).await?).await?;
        assert_eq!((s, &bad["kind"]), (400, &json!("bad_request")), "{bad}");
        assert!(
            bad["message"].as_str().unwrap().contains("my-flow.yaml"),
            "{bad}"
        );
    }
    let broken =
        "id: broken\nsteps:\n  - id: a\n    kind: template\n    template: x\n    needs: [ghost]\n";
    let (s, saved) = json_of(
        http.put(server.url("/api/workflows/broken.yaml"))
            .json(&json!({"text": broken}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &saved["valid"]), (200, &json!(false)), "{saved}");
    assert!(
        saved["diagnostics"][0]["message"]
            .as_str()
            .unwrap()
            .contains("ghost"),
        "{saved}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("workflows/broken.yaml"))?,
        broken
    );
    let (s, v) = json_of(
        http.post(server.url("/api/validate"))
            .json(&json!({"text": APPROVE, "file": "approve.yaml"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(
        (s, &v["valid"], &v["diagnostics"]),
        (200, &json!(true), &json!([]))
    );
    let (s, templates) = json_of(get("/api/templates").await?).await?;
    assert_eq!(s, 200);
    assert!(
        templates
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["name"] == "feature-spec.yaml")
    );
    let (s, used) = json_of(
        http.post(server.url("/api/templates/document-report.yaml/use"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(s, 200);
    assert!(used["text"].as_str().unwrap().contains("id:"));
    assert!(dir.path().join("workflows/data/market-notes.txt").is_file());
    let (s, e) = json_of(
        http.post(server.url("/api/templates/nope.yaml/use"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (404, &json!("not_found")), "{e}");

    // Bad requests are tagged JSON errors, and nothing runs.
    let (s, e) = json_of(http.post(server.url("/api/runs")).body("{}").send().await?).await?;
    assert_eq!(
        (s, &e["kind"]),
        (415, &json!("unsupported_media_type")),
        "{e}"
    );
    let (s, e) = json_of(
        http.post(server.url("/api/runs"))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (400, &json!("bad_request")), "{e}");
    let (s, e) = json_of(
        http.post(server.url("/api/runs"))
            .json(&json!({}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (422, &json!("no_workflow")), "{e}");
    let (s, e) = json_of(
        http.post(server.url("/api/runs"))
            .json(&json!({"file": "approve.yaml"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (422, &json!("invalid_inputs")), "{e}");
    let (s, e) = json_of(
        http.post(server.url("/api/runs"))
            .json(&json!({"file": "broken.yaml"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (422, &json!("invalid_workflow")), "{e}");
    // An oversized body is refused from its announced length, before it is read (sent
    // by hand: an HTTP client still writing the body would meet the closed connection).
    let (s, e) = oversized(&server, nexus_server::DEFAULT_BODY_LIMIT + 1).await?;
    assert_eq!((s, &e["kind"]), (413, &json!("payload_too_large")), "{e}");
    assert_eq!(
        e["limit_bytes"],
        json!(nexus_server::DEFAULT_BODY_LIMIT),
        "{e}"
    );
    let (s, e) = json_of(http.delete(server.url("/api/runs")).send().await?).await?;
    assert_eq!((s, &e["kind"]), (405, &json!("method_not_allowed")), "{e}");
    let (s, e) = json_of(get("/api/nothing-here").await?).await?;
    assert_eq!((s, &e["kind"]), (404, &json!("not_found")), "{e}");
    let (s, runs) = json_of(get("/api/runs").await?).await?;
    assert_eq!(
        (s, runs),
        (200, json!([])),
        "nothing was started by a bad request"
    );

    // A real run: the approval waits, is answered over the API, the model streams.
    let run_id = start_approve(&http, &server).await?;
    let mut stream = Box::pin(events(&http, &server, &run_id).await?);
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, waiting).await;
    // The engine emits `waiting_for_human` just before it starts waiting: the question
    // is listed from then on.
    let questions = open_questions(&http, &server).await?;
    assert_eq!(questions.as_array().unwrap().len(), 1, "{questions}");
    assert_eq!(questions[0]["run_id"], json!(run_id));
    assert_eq!(questions[0]["request"]["kind"], json!("approval"));
    assert_eq!(questions[0]["request"]["message"], json!("Release v1.2?"));
    let (s, run) = json_of(get(&format!("/api/runs/{run_id}")).await?).await?;
    assert_eq!(
        (s, &run["status"]),
        (200, &json!("waiting_for_human")),
        "{run}"
    );
    let (s, e) = json_of(
        http.post(server.url(&format!("/api/runs/{run_id}/steps/nope/answer")))
            .json(&json!({"decision": "approve"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (409, &json!("not_active")), "{e}");
    let r = http
        .post(server.url(&format!("/api/runs/{run_id}/steps/ship/answer")))
        .json(&json!({"decision": "approve"}))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    read_until(&mut stream, &mut seen, finished).await;
    assert!(
        stream.next().await.is_none(),
        "the stream ends after run_finished"
    );

    // In order: ids 0, 1, 2, ...; started first, finished last, tokens inside `note`.
    let ids: Vec<usize> = seen.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (0..seen.len()).collect::<Vec<_>>());
    assert!(
        matches!(seen[0].1, Event::RunStarted { .. }),
        "{:?}",
        seen[0]
    );
    assert!(matches!(
        seen.last().unwrap().1,
        Event::RunFinished {
            status: RunStatus::Succeeded,
            ..
        }
    ));
    let at = |f: &dyn Fn(&Event) -> bool| seen.iter().position(|(_, e)| f(e)).unwrap();
    let draft_done =
        at(&|e| matches!(e, Event::StepSucceeded { step_id, .. } if step_id == "draft"));
    let asked = at(&|e| matches!(e, Event::WaitingForHuman { .. }));
    let decided =
        at(&|e| matches!(e, Event::HumanDecided { decision, .. } if decision == "approve"));
    let note_started =
        at(&|e| matches!(e, Event::StepStarted { step_id, .. } if step_id == "note"));
    let first_token = at(&|e| matches!(e, Event::Token { .. }));
    let note_done = at(&|e| matches!(e, Event::StepSucceeded { step_id, .. } if step_id == "note"));
    assert!(draft_done < asked && asked < decided && decided < note_started);
    assert!(note_started < first_token && first_token < note_done);
    let streamed: String = seen
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Token { text, .. } => Some(text.as_str()),
            _ => None,
        })
        .collect();

    // The stored run has every step record; the history lists it.
    let (s, run) = json_of(get(&format!("/api/runs/{run_id}")).await?).await?;
    assert_eq!((s, &run["status"]), (200, &json!("succeeded")));
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["draft", "ship", "note"]);
    let note = &run["steps"][2];
    assert_eq!(note["model"], json!("embedded:smollm2-135m-instruct"));
    assert_eq!(
        note["output"].as_str().unwrap().trim(),
        streamed.trim(),
        "the stored output is the streamed text"
    );
    assert!(note["usage"]["completion_tokens"].as_u64().unwrap() > 0);
    assert_eq!(note["attempts"].as_array().unwrap().len(), 1);
    let prefix = &run_id[..13];
    let (s, by_prefix) = json_of(get(&format!("/api/runs/{prefix}")).await?).await?;
    assert_eq!((s, &by_prefix["run_id"]), (200, &json!(run_id)));
    let (s, runs) = json_of(get("/api/runs?limit=5").await?).await?;
    assert_eq!(
        (s, &runs[0]["run_id"], &runs[0]["steps"]),
        (200, &json!(run_id), &json!(3))
    );
    let (s, e) = json_of(get("/api/runs?limit=0").await?).await?;
    assert_eq!((s, &e["kind"]), (400, &json!("bad_request")));
    let (s, e) = json_of(get("/api/runs/ffffffff-no-such-run").await?).await?;
    assert_eq!((s, &e["kind"]), (404, &json!("unknown_run")), "{e}");
    // A late subscriber gets the whole log again, after `Last-Event-ID` when given.
    let r = http
        .get(server.url(&format!("/api/runs/{run_id}/events")))
        .header("Last-Event-ID", (seen.len() - 2).to_string())
        .send()
        .await?;
    let tail: Vec<_> = r
        .bytes_stream()
        .eventsource()
        .map(|e| e.unwrap().id)
        .collect()
        .await;
    assert_eq!(tail, vec![(seen.len() - 1).to_string()]);

    // Pause, resume and cancel a waiting run; control of a finished run is refused.
    let second = start_approve(&http, &server).await?;
    let mut stream = Box::pin(events(&http, &server, &second).await?);
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, waiting).await;
    for verb in ["pause", "resume"] {
        let (s, body) = json_of(
            http.post(server.url(&format!("/api/runs/{second}/{verb}")))
                .send()
                .await?,
        )
        .await?;
        assert_eq!(
            (s, &body["run_id"]),
            (200, &json!(second)),
            "{verb}: {body}"
        );
    }
    let (s, _) = json_of(
        http.post(server.url(&format!("/api/runs/{second}/cancel")))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(s, 200);
    read_until(&mut stream, &mut seen, finished).await;
    assert!(
        seen.iter()
            .any(|(_, e)| matches!(e, Event::RunPaused { .. })),
        "{seen:?}"
    );
    assert!(matches!(
        seen.last().unwrap().1,
        Event::RunFinished {
            status: RunStatus::Cancelled,
            ..
        }
    ));
    let (s, e) = json_of(
        http.post(server.url(&format!("/api/runs/{second}/cancel")))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (409, &json!("not_active")), "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("already finished"),
        "{e}"
    );

    // Models and breakers; the OpenAPI document served is the committed one.
    let (s, models) = json_of(get("/api/models").await?).await?;
    assert_eq!(s, 200);
    assert!(
        models["providers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "embedded" && p["reachable"] == json!(true)),
        "{models}"
    );
    let (s, breakers) = json_of(get("/api/breakers").await?).await?;
    assert_eq!(s, 200);
    assert!(breakers.is_array());
    assert_metrics(&http, &server, note).await?;
    let served = get("/api/openapi.json").await?.text().await?;
    assert_eq!(
        served,
        std::fs::read_to_string(repo().join("schema/openapi.json"))?
    );

    // CORS is closed: a preflight from another origin is not allowed anything.
    let r = http
        .request(reqwest::Method::OPTIONS, server.url("/api/runs"))
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await?;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    // A page that reached the server through another host name (DNS rebinding) is refused.
    let (s, e) = json_of(get_with_host(&http, &server, "/api/runs", "evil.example").await?).await?;
    assert_eq!((s, &e["kind"]), (403, &json!("forbidden_host")), "{e}");
    Ok(())
}

/// The value of the sample `name{labels}` (its labels exactly `labels`).
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| {
            s.metric == name
                && s.labels.len() == labels.len()
                && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
        })
        .and_then(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => Some(v),
            _ => None,
        })
}

/// `/metrics` (and `/api/metrics`) after one succeeded and one cancelled run of
/// `approve`, parsed with a Prometheus text-format parser: the counts are the runs',
/// the tokens the stored step's.
async fn assert_metrics(http: &reqwest::Client, server: &Server, note: &Value) -> Result<()> {
    let r = http.get(server.url("/metrics")).send().await?;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"].to_str()?,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await?;
    let api = http.get(server.url("/api/metrics")).send().await?;
    assert_eq!(api.status(), 200);
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;
    let wf = ("workflow", "approve");
    for (status, n) in [("succeeded", 1.0), ("cancelled", 1.0)] {
        assert_eq!(
            sample(
                &scrape,
                "nexus_runs_finished_total",
                &[wf, ("status", status)]
            ),
            Some(n),
            "{text}"
        );
    }
    assert_eq!(
        sample(&scrape, "nexus_runs_started_total", &[wf]),
        Some(2.0),
        "{text}"
    );
    assert_eq!(sample(&scrape, "nexus_runs_in_flight", &[]), Some(0.0));
    assert_eq!(sample(&scrape, "nexus_questions_open", &[]), Some(0.0));
    // Steps the cancellation stopped count as `cancelled`, those not run as `skipped`,
    // as their records say.
    let (_, runs) = json_of(http.get(server.url("/api/runs")).send().await?).await?;
    let mut stored = std::collections::BTreeMap::<String, f64>::new();
    for run in runs.as_array().context("runs")? {
        let id = run["run_id"].as_str().context("run id")?;
        let (_, full) = json_of(
            http.get(server.url(&format!("/api/runs/{id}")))
                .send()
                .await?,
        )
        .await?;
        for step in full["steps"].as_array().context("steps")? {
            *stored
                .entry(step["status"].as_str().unwrap_or("").to_string())
                .or_default() += 1.0;
        }
    }
    assert!(stored.contains_key("cancelled"), "{stored:?}");
    for status in ["skipped", "cancelled"] {
        assert_eq!(
            sample(
                &scrape,
                "nexus_steps_finished_total",
                &[wf, ("status", status)]
            ),
            stored.get(status).copied(),
            "{status}: {stored:?}\n{text}"
        );
    }
    // draft, ship and note of the first run, draft of the second.
    assert_eq!(
        sample(
            &scrape,
            "nexus_steps_finished_total",
            &[wf, ("status", "succeeded")]
        ),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &scrape,
            "nexus_step_duration_seconds_count",
            &[("status", "succeeded")]
        ),
        Some(4.0),
        "{text}"
    );
    let model = ("model", "embedded:smollm2-135m-instruct");
    let completion = note["usage"]["completion_tokens"].as_f64();
    assert_eq!(
        sample(
            &scrape,
            "nexus_tokens_total",
            &[model, ("kind", "completion")]
        ),
        completion,
        "{text}"
    );
    assert_eq!(
        sample(&scrape, "nexus_time_to_first_token_seconds_count", &[model]),
        Some(1.0),
        "{text}"
    );
    let ttft = scrape
        .samples
        .iter()
        .find(|s| s.metric == "nexus_time_to_first_token_seconds")
        .map(|s| s.value.clone());
    assert!(
        matches!(ttft, Some(prometheus_parse::Value::Histogram(ref b)) if b.last().is_some_and(|b| b.less_than.is_infinite() && b.count == 1.0)),
        "{ttft:?}"
    );
    assert!(scrape.docs.contains_key("nexus_breaker_state"), "{text}");
    Ok(())
}

/// `GET /api/questions` once it lists a question (polled: the question is listed once
/// the engine waits, just after its `waiting_for_human` event).
async fn open_questions(http: &reqwest::Client, server: &Server) -> Result<Value> {
    for _ in 0..500 {
        let (s, questions) = json_of(http.get(server.url("/api/questions")).send().await?).await?;
        assert_eq!(s, 200);
        if questions.as_array().is_some_and(|q| !q.is_empty()) {
            return Ok(questions);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    bail!("no question was listed within 10 s of its waiting_for_human event")
}

/// `POST /api/validate` announcing a body of `len` bytes and sending none; the status
/// and JSON body of the answer.
async fn oversized(server: &Server, len: usize) -> Result<(u16, Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = server.base.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(addr).await?;
    let head = format!(
        "POST /api/validate HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(head.as_bytes()).await?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer).await?;
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("status line")?;
    let body = answer.split("\r\n\r\n").nth(1).context("body")?;
    Ok((status, serde_json::from_str(body.trim())?))
}

async fn get_with_host(
    http: &reqwest::Client,
    server: &Server,
    path: &str,
    host: &str,
) -> Result<reqwest::Response> {
    Ok(http
        .get(server.url(path))
        .header("host", host)
        .send()
        .await?)
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

async fn assert_token_needed(server: &Server) -> Result<()> {
    let http = reqwest::Client::new();
    let (s, health) = json_of(http.get(server.url("/api/health")).send().await?).await?;
    assert_eq!((s, &health["token_required"]), (200, &json!(true)));
    let (s, e) = json_of(http.get(server.url("/api/runs")).send().await?).await?;
    assert_eq!((s, &e["kind"]), (401, &json!("unauthorized")), "{e}");
    let (s, e) = json_of(
        http.get(server.url("/api/runs"))
            .bearer_auth("wrong-token-wrong-token-wrong-tok")
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (401, &json!("unauthorized")), "{e}");
    let (s, e) = json_of(
        http.post(server.url("/api/runs"))
            .json(&json!({"file": "approve.yaml", "inputs": {"version": "1"}}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (401, &json!("unauthorized")), "{e}");
    let (s, runs) = json_of(
        http.get(server.url("/api/runs"))
            .bearer_auth(TOKEN)
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, runs), (200, json!([])), "nothing ran without the token");
    for path in ["/metrics", "/api/metrics"] {
        let (s, e) = json_of(http.get(server.url(path)).send().await?).await?;
        assert_eq!(
            (s, &e["kind"]),
            (401, &json!("unauthorized")),
            "{path}: {e}"
        );
    }
    let r = http
        .get(server.url("/metrics"))
        .bearer_auth(TOKEN)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    // The event stream takes the token in the query (EventSource sends no headers).
    let (s, e) = json_of(
        http.get(server.url("/api/runs/nope/events?token=wrong"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (401, &json!("unauthorized")));
    let (s, e) = json_of(
        http.get(server.url(&format!("/api/runs/nope/events?token={TOKEN}")))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (404, &json!("unknown_run")));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_non_loopback_bind_needs_the_flag_and_a_token_and_then_refuses_requests_without_it()
-> Result<()> {
    let dir = folder();
    let refused = |args: &[&str], token: Option<&str>| {
        Server::start(dir.path(), args, token)
            .err()
            .expect("refused")
            .to_string()
    };
    let e = refused(&["--bind", "0.0.0.0:0"], Some(TOKEN));
    assert!(
        e.contains("not a loopback address") && e.contains("--allow-remote"),
        "{e}"
    );
    let e = refused(&["--bind", "0.0.0.0:0", "--allow-remote"], None);
    assert!(
        e.contains("needs an API token") && e.contains("NEXUS_API_TOKEN"),
        "{e}"
    );
    let e = refused(&["--bind", "0.0.0.0:0", "--allow-remote"], Some("short"));
    assert!(e.contains("at least 32"), "{e}");
    // Bound to every address of this machine, reached here through loopback.
    let server = Server::start(
        dir.path(),
        &["--bind", "0.0.0.0:0", "--allow-remote"],
        Some(TOKEN),
    )?;
    assert_token_needed(&server).await?;
    // A token on a loopback server is enforced the same way.
    let local = Server::start(dir.path(), &["--bind", "127.0.0.1:0"], Some(TOKEN))?;
    assert_token_needed(&local).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_interrupted_by_sigkill_is_continued_by_the_next_server() -> Result<()> {
    let dir = folder();
    std::fs::write(dir.path().join("workflows/approve.yaml"), APPROVE)?;
    let http = reqwest::Client::new();
    let first = Server::start(dir.path(), &["--bind", "127.0.0.1:0"], None)?;
    let run_id = start_approve(&http, &first).await?;
    let mut stream = Box::pin(events(&http, &first, &run_id).await?);
    let mut seen = Vec::new();
    // Mid-run for certain: `draft` is stored and the approval waits.
    read_until(&mut stream, &mut seen, waiting).await;
    drop(stream);
    first.kill();

    let second = Server::start(dir.path(), &["--bind", "127.0.0.1:0"], None)?;
    let (s, run) = json_of(
        http.get(second.url(&format!("/api/runs/{run_id}")))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(s, 200);
    assert_eq!(
        run["status"],
        json!("waiting_for_human"),
        "the record still says mid-run: {run}"
    );
    let (s, body) = json_of(
        http.post(second.url(&format!("/api/runs/{run_id}/resume")))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &body["run_id"]), (200, &json!(run_id)), "{body}");
    let mut stream = Box::pin(events(&http, &second, &run_id).await?);
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, waiting).await;
    assert!(
        matches!(
            seen[0].1,
            Event::RunResumed {
                completed_steps: 1,
                ..
            }
        ),
        "{:?}",
        seen[0]
    );
    let r = http
        .post(second.url(&format!("/api/runs/{run_id}/steps/ship/answer")))
        .json(&json!({"decision": "approve"}))
        .send()
        .await?;
    assert_eq!(r.status(), 204);
    read_until(&mut stream, &mut seen, finished).await;
    assert!(matches!(
        seen.last().unwrap().1,
        Event::RunFinished {
            status: RunStatus::Succeeded,
            ..
        }
    ));
    let (_, run) = json_of(
        http.get(second.url(&format!("/api/runs/{run_id}")))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(run["status"], json!("succeeded"));
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["draft", "ship", "note"],
        "`draft` was kept, not run again"
    );
    let draft_runs = run["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "step_succeeded" && e["step_id"] == "draft")
        .count();
    assert_eq!(draft_runs, 1);
    // Resuming it again is refused: it has finished.
    let (s, e) = json_of(
        http.post(second.url(&format!("/api/runs/{run_id}/resume")))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (409, &json!("not_active")), "{e}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_built_editor_is_served_at_the_root_and_an_editorless_server_says_how_to_get_it()
-> Result<()> {
    let dir = folder();
    let dist = dir.path().join("dist");
    std::fs::create_dir_all(dist.join("assets"))?;
    std::fs::write(
        dist.join("index.html"),
        "<!doctype html><title>Nexus editor</title>",
    )?;
    std::fs::write(dist.join("assets/app.js"), "console.log('nexus')")?;
    let http = reqwest::Client::new();
    let server = Server::start(
        dir.path(),
        &["--bind", "127.0.0.1:0", "--editor", &dist.to_string_lossy()],
        None,
    )?;
    for (path, body) in [
        ("/", "<title>Nexus editor</title>"),
        ("/assets/app.js", "console.log('nexus')"),
        // The editor's own routes get its page.
        ("/some/editor/route", "<title>Nexus editor</title>"),
    ] {
        let r = http.get(server.url(path)).send().await?;
        assert_eq!(r.status(), 200, "{path}");
        assert!(r.text().await?.contains(body), "{path}");
    }
    // The API is not shadowed by the editor's fallback.
    let (s, e) = json_of(http.get(server.url("/api/nothing")).send().await?).await?;
    assert_eq!((s, &e["kind"]), (404, &json!("not_found")));
    drop(server);

    let bare = Server::start(dir.path(), &["--bind", "127.0.0.1:0"], None)?;
    let r = http.get(bare.url("/")).send().await?;
    assert_eq!(r.status(), 404);
    assert!(r.text().await?.contains("--editor ui/dist"));
    let e = Server::start(
        dir.path(),
        &[
            "--bind",
            "127.0.0.1:0",
            "--editor",
            &dir.path().to_string_lossy(),
        ],
        None,
    )
    .err()
    .expect("refused")
    .to_string();
    assert!(
        e.contains("has no index.html") && e.contains("npm run build"),
        "{e}"
    );
    Ok(())
}

const HOOKED: &str = r#"id: intake
inputs:
  title: {type: string}
triggers:
  - kind: webhook
    path: github/issues
    auth: {kind: hmac_sha256, secret_env: NEXUS_HOOK_SECRET}
    respond: wait
    wait_ms: 60000
    rate_per_minute: 5
    inputs:
      title: "{{ body.issue.title }}"
  - kind: webhook
    name: later
    path: intake
    auth: {kind: token, secret_env: NEXUS_HOOK_SECRET}
  - kind: cron
    schedule: "0 9 * * *"
    timezone: Europe/Lisbon
    inputs: {title: daily}
steps:
  - id: hello
    kind: template
    template: "issue {{ inputs.title }}"
outputs:
  said: "{{ steps.hello.output }}"
"#;

fn signed(body: &[u8]) -> String {
    signed_with("hook-secret", body)
}

/// Webhooks on the real server: a signed call waits for the outputs, an accepted call
/// answers 202 with the run id; a missing or wrong signature, a wrong method, a body that
/// is not JSON, one over the size limit and calls over the rate are refused with their
/// status and start nothing; `/api/triggers` lists the triggers and `/api/runs?trigger=`
/// filters by them.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_start_runs_only_for_good_calls_and_triggers_are_listed() -> Result<()> {
    let dir = folder();
    std::fs::write(dir.path().join("workflows/intake.yaml"), HOOKED)?;
    let server = Server::start_with(
        dir.path(),
        &["--body-limit", "4096"],
        None,
        &[("NEXUS_HOOK_SECRET", "hook-secret")],
    )?;
    let http = reqwest::Client::new();
    let (status, list) = json_of(http.get(server.url("/api/triggers")).send().await?).await?;
    assert_eq!(status, 200);
    let kinds: Vec<(&str, bool)> = list
        .as_array()
        .context("a list")?
        .iter()
        .map(|t| {
            (
                t["kind"].as_str().unwrap_or(""),
                t["armed"].as_bool() == Some(true),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [("webhook", true), ("webhook", true), ("cron", true)],
        "{list}"
    );
    assert_eq!(list[0]["detail"], "POST /hooks/github/issues");
    let hook = server.url("/hooks/github/issues");
    let body = br#"{"issue": {"title": "crash on save"}}"#.to_vec();

    let refused = [
        http.post(&hook).body(body.clone()).send().await?,
        http.post(&hook)
            .header("X-Hub-Signature-256", signed(b"{}"))
            .body(body.clone())
            .send()
            .await?,
        http.get(&hook).send().await?,
        http.post(&hook)
            .header("X-Hub-Signature-256", signed(b"{not json"))
            .body(b"{not json".to_vec())
            .send()
            .await?,
        http.post(&hook).body(vec![b' '; 8192]).send().await?,
        http.post(server.url("/hooks/nowhere"))
            .body("{}")
            .send()
            .await?,
    ];
    let mut answers = Vec::new();
    for r in refused {
        let allow = r
            .headers()
            .get("allow")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let (status, v) = json_of(r).await?;
        answers.push((status, v["kind"].as_str().unwrap_or("").to_string(), allow));
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.0).collect();
    assert_eq!(statuses, [401, 401, 405, 400, 413, 404], "{answers:?}");
    assert_eq!(answers[0].1, "unauthorized");
    assert_eq!(answers[2].2.as_deref(), Some("POST"));
    assert_eq!(answers[3].1, "bad_body");
    let (_, runs) = json_of(http.get(server.url("/api/runs")).send().await?).await?;
    assert_eq!(runs, json!([]), "a refused call started a run");

    // A good signature: the call waits for the run and gets its outputs.
    let (status, done) = json_of(
        http.post(&hook)
            .header("X-Hub-Signature-256", signed(&body))
            .body(body.clone())
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["outputs"]["said"], "issue crash on save");
    // A token hook answers at once; its run is listed by trigger.
    let (status, later) = json_of(
        http.post(server.url("/hooks/intake"))
            .bearer_auth("hook-secret")
            .json(&json!({"title": "later"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 202, "{later}");
    let run_id = later["run_id"].as_str().context("run id")?.to_string();
    let mut stream = Box::pin(events(&http, &server, &run_id).await?);
    read_until(&mut stream, &mut Vec::new(), finished).await;
    let (_, by_name) = json_of(
        http.get(server.url("/api/runs?trigger=later"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(by_name.as_array().map(Vec::len), Some(1), "{by_name}");
    assert_eq!(
        by_name[0]["trigger"],
        json!({"kind": "webhook", "name": "later"})
    );
    let (_, by_kind) = json_of(
        http.get(server.url("/api/runs?trigger=webhook"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(by_kind.as_array().map(Vec::len), Some(2), "{by_kind}");
    let (_, manual) = json_of(
        http.get(server.url("/api/runs?trigger=manual"))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(manual, json!([]));

    // `rate_per_minute: 5`: 5 authenticated calls to this hook so far (the 2 wrong
    // signatures are refused before the bucket); the next ones get 429 with Retry-After.
    let mut limited = None;
    for _ in 0..6 {
        let r = http
            .post(&hook)
            .header("X-Hub-Signature-256", signed(b"{not json"))
            .body(b"{not json".to_vec())
            .send()
            .await?;
        if r.status().as_u16() == 429 {
            limited = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or("").to_string());
            break;
        }
    }
    let secs: u64 = limited.context("no 429 within the rate")?.parse()?;
    assert!((1..=60).contains(&secs), "{secs}");
    Ok(())
}

/// A run told its callback URL, waiting for `payment` (posted to the callback URL) and
/// then `confirm` (posted to the API by name).
const PAYMENT: &str = r#"id: payment
steps:
  - id: url
    kind: template
    template: "{{ run.callback_url }}"
  - id: paid
    kind: event
    event: payment
    needs: [url]
  - id: confirmed
    kind: event
    event: confirm
    needs: [paid]
  - id: done
    kind: template
    needs: [confirmed]
    template: "paid {{ steps.paid.json.amount }}, {{ steps.confirmed.output }}"
"#;

fn step_started(step: &'static str) -> impl Fn(&Event) -> bool {
    move |e| matches!(e, Event::StepStarted { step_id, .. } if step_id == step)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_waiting_for_an_event_takes_it_from_its_callback_url_after_a_restart() -> Result<()> {
    let dir = folder();
    std::fs::write(dir.path().join("workflows/payment.yaml"), PAYMENT)?;
    let http = reqwest::Client::new();
    let first = Server::start(dir.path(), &["--bind", "127.0.0.1:0"], None)?;
    let (status, body) = json_of(
        http.post(first.url("/api/runs"))
            .json(&json!({"file": "payment.yaml"}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(status, 201, "{body}");
    let run_id = body["run_id"].as_str().context("run_id")?.to_string();
    let mut stream = Box::pin(events(&http, &first, &run_id).await?);
    // The step says what it waits for.
    read_until(&mut stream, &mut Vec::new(), |e| {
        matches!(e, Event::WaitingForEvent { step_id, event, until: None, .. } if step_id == "paid" && event == "payment")
    })
    .await;
    drop(stream);
    let (_, run) = json_of(
        http.get(first.url(&format!("/api/runs/{run_id}")))
            .send()
            .await?,
    )
    .await?;
    let url = run["steps"][0]["output"]
        .as_str()
        .context("url")?
        .to_string();
    let path = url
        .strip_prefix(&first.base)
        .with_context(|| format!("{url} is under {}", first.base))?
        .to_string();
    assert!(path.starts_with(&format!("/callbacks/{run_id}/")), "{path}");

    // Refused calls store nothing: a wrong key, a bad name, a body that is not the JSON
    // it says it is.
    let wrong = format!("/callbacks/{run_id}/{}/payment", "0".repeat(32));
    let r = http
        .post(first.url(&wrong))
        .json(&json!({"amount": 1}))
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    let (s, e) = json_of(
        http.post(first.url(&format!("/api/runs/{run_id}/events/pay%20ment")))
            .json(&json!(1))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (422, &json!("invalid_event")), "{e}");
    let r = http
        .post(first.url(&format!("{path}/payment")))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await?;
    assert_eq!(r.status(), 400);
    first.kill();

    // The event comes while no server runs the run; the next server stores it (the
    // key survives the restart), and the resumed run takes it.
    let second = Server::start(dir.path(), &["--bind", "127.0.0.1:0"], None)?;
    let (s, posted) = json_of(
        http.post(second.url(&format!("{path}/payment")))
            .json(&json!({"amount": 5}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &posted["name"]), (202, &json!("payment")), "{posted}");
    let r = http
        .post(second.url(&format!("/api/runs/{run_id}/resume")))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let mut stream = Box::pin(events(&http, &second, &run_id).await?);
    let mut seen = Vec::new();
    read_until(&mut stream, &mut seen, step_started("confirmed")).await;
    // Named, through the API, while the step waits.
    let r = http
        .post(second.url(&format!("/api/runs/{run_id}/events/confirm")))
        .json(&json!("confirmed by mail"))
        .send()
        .await?;
    assert_eq!(r.status(), 202);
    read_until(&mut stream, &mut seen, finished).await;
    let (_, run) = json_of(
        http.get(second.url(&format!("/api/runs/{run_id}")))
            .send()
            .await?,
    )
    .await?;
    assert_eq!(run["status"], json!("succeeded"), "{run}");
    let done = run["steps"]
        .as_array()
        .context("steps")?
        .iter()
        .find(|s| s["step_id"] == "done")
        .context("done")?;
    assert_eq!(done["output"], json!("paid 5, confirmed by mail"));
    // A finished run takes no more events.
    let (s, e) = json_of(
        http.post(second.url(&format!("{path}/payment")))
            .json(&json!({"amount": 6}))
            .send()
            .await?,
    )
    .await?;
    assert_eq!((s, &e["kind"]), (409, &json!("not_active")), "{e}");
    Ok(())
}

/// What a notification receiver saw: the path, the headers it checks, the body.
#[derive(Debug, Clone)]
struct Received {
    path: String,
    event: String,
    delivery: String,
    signature: Option<String>,
    body: Vec<u8>,
}

/// A receiver on loopback: `/flaky` answers 503 to its first request and 200 after,
/// `/gone` always 410; every request is passed on in order.
async fn receiver() -> Result<(String, tokio::sync::mpsc::UnboundedReceiver<Received>)> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let flaky_calls = std::sync::Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/{name}",
        axum::routing::post(
            move |axum::extract::Path(name): axum::extract::Path<String>,
                  headers: axum::http::HeaderMap,
                  body: axum::body::Bytes| {
                let tx = tx.clone();
                let flaky_calls = flaky_calls.clone();
                async move {
                    let header = |n: &str| {
                        headers
                            .get(n)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned)
                    };
                    let _ = tx.send(Received {
                        path: name.clone(),
                        event: header("x-nexus-event").unwrap_or_default(),
                        delivery: header("x-nexus-delivery").unwrap_or_default(),
                        signature: header("x-nexus-signature-256"),
                        body: body.to_vec(),
                    });
                    match name.as_str() {
                        "flaky" if flaky_calls.fetch_add(1, Ordering::SeqCst) == 0 => {
                            axum::http::StatusCode::SERVICE_UNAVAILABLE
                        }
                        "gone" => axum::http::StatusCode::GONE,
                        _ => axum::http::StatusCode::NO_CONTENT,
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((base, rx))
}

async fn next_received(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv())
        .await
        .expect("a notification within a minute")
        .expect("the receiver runs")
}

#[tokio::test(flavor = "multi_thread")]
async fn notifications_are_signed_retried_after_a_5xx_and_not_after_a_4xx() -> Result<()> {
    const SECRET: &str = "notify-secret-for-the-test";
    let (base, mut rx) = receiver().await?;
    let dir = folder();
    let flow = APPROVE.replace(
        "inputs:\n",
        &format!(
            "notifications:\n  - on: [waiting_for_human, succeeded]\n    webhook: {{url: \"{base}/flaky\", secret_env: NOTIFY_SECRET}}\n  - on: [succeeded]\n    webhook: {{url: \"{base}/gone\"}}\ninputs:\n"
        ),
    );
    std::fs::write(dir.path().join("workflows/approve.yaml"), &flow)?;
    let server = Server::start_with(
        dir.path(),
        &["--bind", "127.0.0.1:0"],
        None,
        &[("NOTIFY_SECRET", SECRET)],
    )?;
    let http = reqwest::Client::new();
    let run_id = start_approve(&http, &server).await?;

    // Waiting for a person: refused once with 503, delivered again with the same id.
    let first = next_received(&mut rx).await;
    let again = next_received(&mut rx).await;
    for r in [&first, &again] {
        assert_eq!(
            (r.path.as_str(), r.event.as_str()),
            ("flaky", "waiting_for_human")
        );
        let body: Value = serde_json::from_slice(&r.body)?;
        assert_eq!(
            (&body["run_id"], &body["workflow_id"], &body["step_id"]),
            (&json!(run_id), &json!("approve"), &json!("ship")),
            "{body}"
        );
        assert_eq!(body["question"], json!("Release v1.2?"));
        assert_eq!(
            r.signature.as_deref(),
            Some(signed_with(SECRET, &r.body).as_str()),
            "signed as GitHub signs webhooks"
        );
    }
    assert_eq!(first.delivery, again.delivery, "one delivery, two attempts");

    let answered = http
        .post(server.url(&format!("/api/runs/{run_id}/steps/ship/answer")))
        .json(&json!({"decision": "approve"}))
        .send()
        .await?;
    assert!(answered.status().is_success(), "{answered:?}");
    // Succeeded: both receivers are told; `/gone` (410) once, unsigned, not retried.
    let mut done = [next_received(&mut rx).await, next_received(&mut rx).await];
    done.sort_by(|a, b| a.path.cmp(&b.path));
    assert_eq!(
        done.iter()
            .map(|r| (r.path.as_str(), r.event.as_str()))
            .collect::<Vec<_>>(),
        [("flaky", "run_succeeded"), ("gone", "run_succeeded")]
    );
    let body: Value = serde_json::from_slice(&done[0].body)?;
    assert_eq!(
        (&body["status"], body["duration_ms"].is_u64()),
        (&json!("succeeded"), true)
    );
    assert!(done[1].signature.is_none());
    // The metrics count both outcomes once both deliveries ended.
    let mut counts = (None, None);
    for _ in 0..500 {
        let text = http
            .get(server.url("/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))?;
        counts = (
            sample(
                &scrape,
                "nexus_notifications_total",
                &[("outcome", "delivered")],
            ),
            sample(
                &scrape,
                "nexus_notifications_total",
                &[("outcome", "failed")],
            ),
        );
        if counts == (Some(2.0), Some(1.0)) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(counts, (Some(2.0), Some(1.0)));
    assert!(
        rx.try_recv().is_err(),
        "no further attempt after the final 4xx"
    );
    Ok(())
}

fn signed_with(secret: &str, body: &[u8]) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// A reference MCP server's program in `tests/servers/mcp/node_modules/.bin`.
fn mcp_bin(name: &str) -> Result<String> {
    let bin = repo()
        .join("tests/servers/mcp/node_modules/.bin")
        .join(name);
    anyhow::ensure!(
        bin.exists(),
        "{} is missing: run scripts/setup-test-servers.sh (it installs the reference MCP servers)",
        bin.display()
    );
    Ok(bin.display().to_string())
}

/// `server-everything` over streamable HTTP on a free loopback port, killed on drop.
struct EverythingHttp {
    child: Child,
    url: String,
}

impl EverythingHttp {
    fn start(dir: &Path) -> Result<EverythingHttp> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut child = Command::new(mcp_bin("mcp-server-everything")?)
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child.stderr.take().context("stderr")?;
        let mut lines = BufReader::new(stderr).lines();
        loop {
            let line = lines
                .next()
                .context("server-everything ended before listening")??;
            if line.contains(&format!("listening on port {port}")) {
                break;
            }
        }
        // Keep reading its log so that it never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(EverythingHttp {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        })
    }
}

impl Drop for EverythingHttp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_editor_lists_an_mcp_tools_functions_with_the_permission_a_run_needs() -> Result<()> {
    let dir = folder();
    let everything = EverythingHttp::start(dir.path())?;
    let stdio = mcp_bin("mcp-server-everything")?;
    let wf = format!(
        "id: tools\ntools:\n  web: {{mcp: {{url: \"{}\", allow: [echo]}}}}\n  local: {{mcp: {{command: [\"{stdio}\"], allow: [get-sum]}}}}\n  api: {{http: {{url: \"http://127.0.0.1:9/\"}}}}\nsteps:\n  - id: sum\n    kind: tool\n    tool: local\n    args: {{call: get-sum, arguments: {{a: 1, b: 2}}}}\n",
        everything.url
    );
    std::fs::write(dir.path().join("workflows/tools.yaml"), &wf)?;
    let server = Server::start(dir.path(), &["--bind", "127.0.0.1:0"], None)?;
    let http = reqwest::Client::new();
    let functions = |tool: &str| {
        http.get(server.url(&format!("/api/workflows/tools.yaml/tools/{tool}/functions")))
            .send()
    };

    // Streamable HTTP: no program starts here, so no permission is needed.
    let (status, body) = json_of(functions("web").await?).await?;
    assert_eq!(status, 200, "{body}");
    let listed = body["functions"].as_array().context("functions")?;
    let echo = listed
        .iter()
        .find(|f| f["name"] == "echo")
        .context("echo")?;
    assert_eq!(echo["allowed"], true);
    assert!(echo["description"].as_str().is_some_and(|d| !d.is_empty()));
    assert_eq!(
        echo["input_schema"]["properties"]["message"]["type"],
        "string"
    );
    let sum = listed
        .iter()
        .find(|f| f["name"] == "get-sum")
        .context("get-sum")?;
    assert_eq!(sum["allowed"], false, "not in `allow`");

    // Stdio: refused, tagged, until the user gives the permission a run asks for.
    let (status, body) = json_of(functions("local").await?).await?;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["kind"], "tool_not_permitted");
    assert_eq!(body["tool"], "local");
    assert_eq!(body["command"], json!([stdio]));
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("--allow-tool local"),
        "{body}"
    );
    let run = Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args([
            "run",
            "workflows/tools.yaml",
            "--allow-tool",
            "local",
            "--json",
        ])
        .env("NEXUS_DB", dir.path().join("runs.db"))
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .current_dir(dir.path())
        .output()?;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (status, body) = json_of(functions("local").await?).await?;
    assert_eq!(status, 200, "{body}");
    let listed = body["functions"].as_array().context("functions")?;
    assert!(
        listed
            .iter()
            .any(|f| f["name"] == "get-sum" && f["allowed"] == true),
        "{body}"
    );
    assert!(
        listed
            .iter()
            .any(|f| f["name"] == "echo" && f["allowed"] == false),
        "{body}"
    );

    // Not an MCP tool, not a tool, not a workflow.
    let (status, body) = json_of(functions("api").await?).await?;
    assert_eq!(
        (status, body["kind"].as_str()),
        (404, Some("unknown_tool")),
        "{body}"
    );
    let (status, body) = json_of(functions("nope").await?).await?;
    assert_eq!(
        (status, body["kind"].as_str()),
        (404, Some("unknown_tool")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("local, web"),
        "{body}"
    );
    let missing = http
        .get(server.url("/api/workflows/none.yaml/tools/web/functions"))
        .send()
        .await?;
    assert_eq!(missing.status().as_u16(), 404);
    Ok(())
}
