//! `nexus service` on Linux end to end: the real binary writes a systemd user unit under
//! a temporary home; systemd's own parser (`systemd-analyze verify`) accepts it, with a
//! workflows folder whose name needs quoting (a space, `%` and `$` doubled as
//! systemd.service(5) says); `status` sees it and
//! `uninstall` removes it. No service manager runs here (no user session bus), so the
//! unit is written with `--no-enable`; a non-loopback bind is refused.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may stop at the failing line

use std::path::Path;
use std::process::{Command, Output};

use anyhow::Result;

fn nexus(home: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new(env!("CARGO_BIN_EXE_nexus"))
        .args(args)
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join("config"))
        .env("NEXUS_DB", home.join("runs.db"))
        .env_remove("NEXUS_WORKFLOWS")
        .output()?)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn install_writes_a_unit_systemd_accepts_and_uninstall_removes_it() -> Result<()> {
    let home = tempfile::tempdir()?;
    let flows = home.path().join("my flows 100% $HOME");
    std::fs::create_dir_all(&flows)?;
    let flows_arg = flows.to_str().unwrap();
    let out = nexus(
        home.path(),
        &[
            "service",
            "install",
            "--no-enable",
            "--workflows",
            flows_arg,
        ],
    )?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let unit = home.path().join("config/systemd/user/nexus-serve.service");
    let written = std::fs::read_to_string(&unit)?;
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_nexus"))?;
    let exec = written
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("an ExecStart line");
    assert!(
        exec.starts_with(&format!(
            "\"{}\" \"serve\" \"--bind\" \"127.0.0.1:",
            exe.display()
        )),
        "{exec}"
    );
    assert!(
        exec.contains("my flows 100%% $$HOME"),
        "quoted for systemd: {exec}"
    );
    assert!(text(&out.stdout).contains("systemctl --user enable --now nexus-serve.service"));

    // systemd's own parser: an unbalanced quote or a program that is not there fails it.
    let runtime = home.path().join("run");
    std::fs::create_dir_all(&runtime)?;
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(&unit)
        .env("XDG_RUNTIME_DIR", &runtime)
        .env("HOME", home.path())
        .env("XDG_CONFIG_HOME", home.path().join("config"))
        .output()?;
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}{}",
        text(&verify.stdout),
        text(&verify.stderr)
    );

    let status = nexus(home.path(), &["service", "status", "--json"])?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(
        (&status["manager"], &status["installed"]),
        (&serde_json::json!("systemd"), &serde_json::json!(true)),
        "{status}"
    );
    let out = nexus(home.path(), &["service", "uninstall"])?;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!unit.exists());
    let status = nexus(home.path(), &["service", "status", "--json"])?;
    let status: serde_json::Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(status["installed"], serde_json::json!(false));

    // The service never holds a token, so it binds loopback only.
    let out = nexus(
        home.path(),
        &[
            "service",
            "install",
            "--no-enable",
            "--bind",
            "0.0.0.0:7878",
        ],
    )?;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("loopback only"),
        "{}",
        text(&out.stderr)
    );
    assert!(!unit.exists(), "nothing written");
    Ok(())
}
