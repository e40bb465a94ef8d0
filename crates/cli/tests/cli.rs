//! The `nexus` binary end to end: exit codes, located errors, a real run on the embedded
//! model stored in a real SQLite file, and `runs list` / `runs show` reading it back.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn nexus(args: &[&str], db: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(args)
        .env("NEXUS_DB", db)
        // Nothing listens here: the run must not depend on a local daemon.
        .env("OLLAMA_HOST", "127.0.0.1:9")
        .env_remove("OPENAI_API_KEY")
        .env_remove("OPENAI_BASE_URL")
        .env_remove("NEXUS_OPENAI_BASE_URL")
        .env_remove("NEXUS_OPENAI_API_KEY")
        .current_dir(repo())
        .output()
        .expect("nexus runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_the_examples_and_locates_errors() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("n.db");
    let ok = nexus(
        &[
            "validate",
            "workflows/feature-spec.yaml",
            "workflows/issue-triage.yaml",
            "workflows/document-report.yaml",
        ],
        &db,
    );
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("workflows/feature-spec.yaml: ok (4 steps)"));

    let bad = nexus(&["validate", "tests/invalid/19_unknown_need.yaml"], &db);
    assert_eq!(bad.status.code(), Some(2));
    let err = text(&bad.stderr);
    assert!(
        err.starts_with("tests/invalid/19_unknown_need.yaml:"),
        "{err}"
    );
    assert!(err.contains("error[unknown_need]"), "{err}");
    assert!(err.contains("help:"), "{err}");
    assert_eq!(err.lines().last(), Some("error: 1 problem found"));
}

/// No file of the broken corpus makes the CLI panic (exit 101) or succeed.
#[test]
fn no_broken_file_panics_the_cli() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("n.db");
    for entry in std::fs::read_dir(repo().join("tests/invalid")).expect("corpus") {
        let path = entry.expect("entry").path();
        let rel = path
            .strip_prefix(repo())
            .unwrap_or(&path)
            .to_string_lossy()
            .into_owned();
        for cmd in [vec!["validate", rel.as_str()], vec!["run", rel.as_str()]] {
            let out = nexus(&cmd, &db);
            assert_eq!(out.status.code(), Some(2), "{cmd:?}: {}", text(&out.stderr));
            assert!(!text(&out.stderr).contains("panicked"), "{cmd:?}");
        }
    }
    let missing = nexus(&["run", "workflows/nope.yaml"], &db);
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("cannot read the file"));
    let bad_input = nexus(
        &["run", "workflows/feature-spec.yaml", "--input", "featur=x"],
        &db,
    );
    assert_eq!(bad_input.status.code(), Some(2));
    assert!(
        text(&bad_input.stderr).contains("did you mean `feature`"),
        "{}",
        text(&bad_input.stderr)
    );
}

#[test]
fn run_on_the_embedded_model_then_read_the_run_back() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("n.db");
    let out = nexus(
        &[
            "run",
            "workflows/document-report.yaml",
            "--json",
            "--input",
            "audience=a CFO",
        ],
        &db,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    assert_eq!(report["status"], "succeeded");
    let run_id = report["run_id"].as_str().expect("run id").to_string();
    assert!(
        report["outputs"]["report"]
            .as_str()
            .unwrap_or_default()
            .starts_with("# Report for a CFO")
    );
    assert!(db.exists());

    let list = nexus(&["runs", "list", "--json"], &db);
    assert!(list.status.success());
    let runs: serde_json::Value = serde_json::from_slice(&list.stdout).expect("JSON");
    assert_eq!(runs[0]["run_id"], run_id.as_str());
    assert_eq!(runs[0]["steps"], 4);
    assert!(runs[0]["tokens"].as_i64().unwrap_or(0) > 0);

    let show = nexus(&["runs", "show", &run_id[..13]], &db);
    assert!(show.status.success(), "{}", text(&show.stderr));
    let shown = text(&show.stdout);
    assert!(
        shown.contains("model: embedded:smollm2-135m-instruct"),
        "{shown}"
    );
    assert!(shown.contains("why:"), "{shown}");
    assert!(
        shown.contains("attempt 1 on embedded:smollm2-135m-instruct"),
        "{shown}"
    );

    let unknown = nexus(&["runs", "show", "no-such-run"], &db);
    assert_eq!(unknown.status.code(), Some(2));
}

#[test]
fn models_lists_the_embedded_model_and_the_selector_order() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = nexus(&["models"], &dir.path().join("n.db"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("ollama (Local): unavailable"), "{s}");
    assert!(s.contains("1. embedded:smollm2-135m-instruct"), "{s}");
}
