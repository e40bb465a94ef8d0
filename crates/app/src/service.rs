//! `nexus service install|uninstall|status`: registers `nexus serve` to start at login,
//! so schedules and webhooks fire without the desktop window open — a systemd user unit
//! on Linux, a launchd agent on macOS, a scheduled task ("at log on") on Windows.
//!
//! Invariants:
//! - the service runs this very binary (its canonical path) with `serve` and the
//!   arguments given, binding loopback only: an API token is never written into a unit
//!   file, so a service that needs one is refused here;
//! - installing writes the file first (atomically) and then asks the service manager to
//!   enable and start it; `--no-enable` stops after the file (for a machine without a
//!   user session manager); uninstalling disables first, then removes the file;
//! - the files' formats follow their managers' documentation: systemd.service(5) and
//!   systemd.syntax(7) for quoting, launchd.plist(5) (written by the `plist` crate),
//!   `schtasks /create` for Windows.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};

/// The systemd unit's name (Linux).
pub const SYSTEMD_UNIT: &str = "nexus-serve.service";
/// The launchd agent's label (macOS).
pub const LAUNCHD_LABEL: &str = "dev.nexus.serve";
/// The scheduled task's name (Windows).
pub const WINDOWS_TASK: &str = "Nexus serve";

/// Which service manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, specta::Type)]
#[serde(rename_all = "snake_case")]
pub enum Manager {
    /// systemd, per user (`systemctl --user`).
    Systemd,
    /// launchd, per user (`~/Library/LaunchAgents`).
    Launchd,
    /// The Windows Task Scheduler (`schtasks`).
    TaskScheduler,
}

impl Manager {
    /// This machine's manager.
    pub fn native() -> Manager {
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else if cfg!(windows) {
            Manager::TaskScheduler
        } else {
            Manager::Systemd
        }
    }
}

/// What the service runs: `program serve args...`.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The `nexus` binary (absolute).
    pub program: PathBuf,
    /// The arguments after the program, `serve` first.
    pub args: Vec<String>,
    /// Where its output goes (launchd only; systemd keeps it in the journal, Windows
    /// discards it), absolute.
    pub log_file: PathBuf,
}

/// Where the service listens unless told otherwise (`nexus serve`'s default address).
pub const DEFAULT_BIND: &str = "127.0.0.1:7878";

/// The service of `program` (the `nexus` binary, absolute): `serve --bind <bind>
/// --workflows <folder> --db <db>`, its log (launchd) under `home`. `folder` and `db` are
/// made absolute (the service does not start in this working directory).
pub fn serve_spec(
    program: PathBuf,
    bind: std::net::SocketAddr,
    folder: &Path,
    db: &Path,
    home: &Path,
) -> ServiceSpec {
    let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    ServiceSpec {
        program,
        args: vec![
            "serve".into(),
            "--bind".into(),
            bind.to_string(),
            "--workflows".into(),
            absolute(folder).display().to_string(),
            "--db".into(),
            absolute(db).display().to_string(),
        ],
        log_file: home.join("Library/Logs/Nexus/serve.log"),
    }
}

/// The `nexus` command-line program the desktop app registers as the service: the one
/// installed beside the app's own executable `beside` (a bundle's sidecar), else the
/// first on `path` (the `PATH` variable's value); canonical.
///
/// # Errors
/// [`Error::Config`] naming where it looked and how to install it.
pub fn find_cli(beside: &Path, path: Option<&std::ffi::OsStr>) -> Result<PathBuf> {
    let name = if cfg!(windows) { "nexus.exe" } else { "nexus" };
    let dirs = beside
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .chain(path.map(std::env::split_paths).into_iter().flatten());
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate.canonicalize().map_err(|e| Error::Io {
                path: candidate.display().to_string(),
                message: e.to_string(),
            });
        }
    }
    Err(Error::Config {
        message: format!(
            "the `{name}` command-line program is neither beside this app ({}) nor on PATH; the service runs `nexus serve`, so install it (`cargo install --path crates/cli` in the source tree) and try again",
            beside.display()
        ),
    })
}

/// Where the service's file lives for `manager`, under the user's `home` and
/// `config` folders (`None` for Windows, whose task lives in the Task Scheduler).
pub fn file_path(manager: Manager, home: &Path, config: &Path) -> Option<PathBuf> {
    match manager {
        Manager::Systemd => Some(config.join("systemd/user").join(SYSTEMD_UNIT)),
        Manager::Launchd => Some(
            home.join("Library/LaunchAgents")
                .join(format!("{LAUNCHD_LABEL}.plist")),
        ),
        Manager::TaskScheduler => None,
    }
}

/// The user's home and configuration folders (`$HOME`, `$XDG_CONFIG_HOME` or
/// `~/.config` on Linux; the platform's on the others).
///
/// # Errors
/// [`Error::Config`] when the user has no home folder.
pub fn user_folders() -> Result<(PathBuf, PathBuf)> {
    let home = dirs::home_dir().ok_or_else(|| Error::Config {
        message: "this user has no home folder (set HOME)".to_string(),
    })?;
    let config = dirs::config_dir().unwrap_or_else(|| home.join(".config"));
    Ok((home, config))
}

/// `arg` quoted for a systemd command line (systemd.syntax(7), systemd.service(5)
/// "Command lines"): in double quotes with `\` and `"` escaped, `%` doubled (a
/// specifier otherwise) and `$` doubled (a variable otherwise).
pub fn systemd_quote(arg: &str) -> String {
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('"');
    for c in arg.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The systemd user unit for `spec`.
pub fn systemd_unit(spec: &ServiceSpec) -> String {
    let mut exec = systemd_quote(&spec.program.to_string_lossy());
    for a in &spec.args {
        exec.push(' ');
        exec.push_str(&systemd_quote(a));
    }
    format!(
        "# Written by `nexus service install`; remove with `nexus service uninstall`.\n\
         [Unit]\n\
         Description=Nexus: workflow triggers and the HTTP API (nexus serve)\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n"
    )
}

/// The launchd agent's property list for `spec` (XML).
///
/// # Errors
/// [`Error::Internal`] if the `plist` crate cannot write it (it writes to memory).
pub fn launchd_plist(spec: &ServiceSpec) -> Result<String> {
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct KeepAlive {
        successful_exit: bool,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "PascalCase")]
    struct Agent<'a> {
        label: &'a str,
        program_arguments: Vec<String>,
        run_at_load: bool,
        keep_alive: KeepAlive,
        standard_out_path: String,
        standard_error_path: String,
    }
    let mut args = vec![spec.program.to_string_lossy().into_owned()];
    args.extend(spec.args.iter().cloned());
    let log = spec.log_file.to_string_lossy().into_owned();
    let agent = Agent {
        label: LAUNCHD_LABEL,
        program_arguments: args,
        run_at_load: true,
        keep_alive: KeepAlive {
            successful_exit: false,
        },
        standard_out_path: log.clone(),
        standard_error_path: log,
    };
    let mut out = Vec::new();
    plist::to_writer_xml(&mut out, &agent).map_err(|e| Error::Internal {
        message: format!("the launchd property list could not be written: {e}"),
    })?;
    String::from_utf8(out).map_err(|e| Error::Internal {
        message: format!("the launchd property list is not UTF-8: {e}"),
    })
}

/// `arg` quoted for a Windows command line (the rules `CommandLineToArgvW` reads).
fn windows_quote(arg: &str) -> String {
    let mut out = String::from("\"");
    let mut backslashes = 0;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.push_str(&"\\".repeat(backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            c => {
                out.push_str(&"\\".repeat(backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.push_str(&"\\".repeat(backslashes * 2));
    out.push('"');
    out
}

/// The `schtasks` arguments that create the Windows task for `spec`.
pub fn schtasks_create(spec: &ServiceSpec) -> Vec<String> {
    let mut line = windows_quote(&spec.program.to_string_lossy());
    for a in &spec.args {
        line.push(' ');
        line.push_str(&windows_quote(a));
    }
    [
        "/Create",
        "/F",
        "/SC",
        "ONLOGON",
        "/RL",
        "LIMITED",
        "/TN",
        WINDOWS_TASK,
        "/TR",
    ]
    .iter()
    .map(|s| (*s).to_string())
    .chain(std::iter::once(line))
    .collect()
}

/// What `nexus service status` and the desktop app report.
#[derive(Debug, Clone, Serialize, specta::Type)]
pub struct ServiceStatus {
    /// The manager.
    pub manager: Manager,
    /// The service's file, where it has one.
    pub file: Option<PathBuf>,
    /// Whether the service is installed (its file or task exists).
    pub installed: bool,
    /// What the manager says about it (`active`, `inactive`, ...), or why it could not
    /// be asked.
    pub state: String,
}

/// A command's outcome: its output on success, else a sentence with its error output.
async fn run(program: &str, args: &[&str]) -> std::result::Result<String, String> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("`{program}` could not be started: {e}"))?;
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            text(&out.stderr)
        ))
    }
}

/// The commands that register (Windows), enable and start the service once its file is
/// written; with `enable` false only what registers it.
fn enable_commands(
    manager: Manager,
    spec: &ServiceSpec,
    file: Option<&Path>,
    enable: bool,
) -> Vec<(&'static str, Vec<String>)> {
    let owned = |a: &[&str]| a.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
    let mut cmds = match manager {
        Manager::Systemd => vec![
            ("systemctl", owned(&["--user", "daemon-reload"])),
            (
                "systemctl",
                owned(&["--user", "enable", "--now", SYSTEMD_UNIT]),
            ),
        ],
        Manager::Launchd => {
            let path = file
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            vec![("launchctl", vec!["load".into(), "-w".into(), path])]
        }
        Manager::TaskScheduler => vec![
            ("schtasks", schtasks_create(spec)),
            ("schtasks", owned(&["/Run", "/TN", WINDOWS_TASK])),
        ],
    };
    if !enable {
        cmds.retain(|(_, args)| args.first().is_some_and(|a| a == "/Create"));
    }
    cmds
}

/// Installs the service: writes its file (atomically) and, with `enable`, enables and
/// starts it. Returns the commands run.
///
/// # Errors
/// [`Error::Io`] writing the file; [`Error::Config`] when the manager refused (the
/// message has its error output and the command to try by hand).
pub async fn install(
    manager: Manager,
    spec: &ServiceSpec,
    file: Option<&Path>,
    enable: bool,
) -> Result<Vec<String>> {
    let text = match manager {
        Manager::Systemd => Some(systemd_unit(spec)),
        Manager::Launchd => Some(launchd_plist(spec)?),
        Manager::TaskScheduler => None,
    };
    if let (Some(text), Some(path)) = (text, file) {
        write_atomically(path, &text)?;
    }
    let mut ran = Vec::new();
    for (program, args) in enable_commands(manager, spec, file, enable) {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(program, &refs).await.map_err(|e| Error::Config {
            message: format!(
                "{e}; the service file is written{}: enable it in your session with `{program} {}`",
                file.map(|f| format!(" at {}", f.display()))
                    .unwrap_or_default(),
                args.join(" ")
            ),
        })?;
        ran.push(format!("{program} {}", args.join(" ")));
    }
    Ok(ran)
}

/// Uninstalls: disables and stops the service (a manager that cannot be reached is
/// noted, not fatal), then removes its file.
///
/// # Errors
/// [`Error::Io`] removing the file.
pub async fn uninstall(manager: Manager, file: Option<&Path>) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let path = file
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let cmds: Vec<(&str, Vec<&str>)> = match manager {
        Manager::Systemd => vec![(
            "systemctl",
            vec!["--user", "disable", "--now", SYSTEMD_UNIT],
        )],
        Manager::Launchd => vec![("launchctl", vec!["unload", "-w", path.as_str()])],
        Manager::TaskScheduler => vec![("schtasks", vec!["/Delete", "/F", "/TN", WINDOWS_TASK])],
    };
    let installed = file.is_none_or(Path::exists);
    if installed {
        for (program, args) in cmds {
            if let Err(e) = run(program, &args).await {
                notes.push(e);
            }
        }
    }
    if let Some(f) = file
        && f.exists()
    {
        std::fs::remove_file(f).map_err(|e| Error::Io {
            path: f.display().to_string(),
            message: e.to_string(),
        })?;
        if manager == Manager::Systemd {
            let _ = run("systemctl", &["--user", "daemon-reload"]).await;
        }
    }
    Ok(notes)
}

/// The service's status now.
pub async fn status(manager: Manager, file: Option<&Path>) -> ServiceStatus {
    let (installed, state) = match manager {
        Manager::Systemd => {
            let installed = file.is_some_and(Path::exists);
            // `is-active` exits non-zero for "inactive"; its output is the state.
            let state = match tokio::process::Command::new("systemctl")
                .args(["--user", "is-active", SYSTEMD_UNIT])
                .kill_on_drop(true)
                .output()
                .await
            {
                Ok(o) if !o.stdout.is_empty() => {
                    String::from_utf8_lossy(&o.stdout).trim().to_string()
                }
                Ok(o) => format!(
                    "unknown: systemctl --user answered {}: {}",
                    o.status,
                    String::from_utf8_lossy(&o.stderr).trim()
                ),
                Err(e) => format!("unknown: systemctl could not be started: {e}"),
            };
            (installed, state)
        }
        Manager::Launchd => {
            let installed = file.is_some_and(Path::exists);
            let state = match run("launchctl", &["list", LAUNCHD_LABEL]).await {
                Ok(_) => "loaded".to_string(),
                Err(e) => format!("not loaded ({e})"),
            };
            (installed, state)
        }
        Manager::TaskScheduler => match run("schtasks", &["/Query", "/TN", WINDOWS_TASK]).await {
            Ok(out) => (true, out.lines().last().unwrap_or_default().to_string()),
            Err(e) => (false, e),
        },
    };
    ServiceStatus {
        manager,
        file: file.map(Path::to_path_buf),
        installed,
        state,
    }
}

/// Writes `text` to `path` through a temporary file in the same folder, renamed over it.
fn write_atomically(path: &Path, text: &str) -> Result<()> {
    let io = |e: std::io::Error| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes()).map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// The desktop app's service: `nexus serve` of the app's workflows folder and run
/// database on [`DEFAULT_BIND`], so its schedules fire while the app is closed.
impl crate::Desktop {
    /// Whether the service is installed and running.
    ///
    /// # Errors
    /// [`Error::Config`] when the user has no home folder.
    pub async fn service_status(&self) -> Result<ServiceStatus> {
        let manager = Manager::native();
        let (home, config) = user_folders()?;
        Ok(status(manager, file_path(manager, &home, &config).as_deref()).await)
    }

    /// Installs, enables and starts the service with the `nexus` program beside the
    /// app or on `PATH` ([`find_cli`]); returns its status after.
    ///
    /// # Errors
    /// [`Error::Config`] when `nexus` is not found or the service manager refused;
    /// [`Error::Io`] writing the service's file.
    pub async fn install_service(&self) -> Result<ServiceStatus> {
        let manager = Manager::native();
        let (home, config) = user_folders()?;
        let exe = std::env::current_exe().map_err(|e| Error::Io {
            path: "the app's executable".into(),
            message: e.to_string(),
        })?;
        let program = find_cli(&exe, std::env::var_os("PATH").as_deref())?;
        let bind = DEFAULT_BIND.parse().map_err(|_| Error::Internal {
            message: format!("`{DEFAULT_BIND}` is not an address"),
        })?;
        let folder = self.root()?;
        let spec = serve_spec(program, bind, &folder, &self.paths.database, &home);
        let file = file_path(manager, &home, &config);
        install(manager, &spec, file.as_deref(), true).await?;
        Ok(status(manager, file.as_deref()).await)
    }

    /// Stops, disables and removes the service; returns its status after.
    ///
    /// # Errors
    /// [`Error::Io`] removing its file.
    pub async fn uninstall_service(&self) -> Result<ServiceStatus> {
        let manager = Manager::native();
        let (home, config) = user_folders()?;
        let file = file_path(manager, &home, &config);
        for note in uninstall(manager, file.as_deref()).await? {
            tracing::warn!("service uninstall: {note}");
        }
        Ok(status(manager, file.as_deref()).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_quoting_escapes_quotes_backslashes_specifiers_and_variables() {
        assert_eq!(systemd_quote("plain"), "\"plain\"");
        assert_eq!(
            systemd_quote(r#"a "b" \c 100% $HOME"#),
            r#""a \"b\" \\c 100%% $$HOME""#
        );
    }

    #[test]
    fn windows_quoting_follows_commandlinetoargvw() {
        assert_eq!(
            windows_quote(r"C:\Program Files\nexus.exe"),
            r#""C:\Program Files\nexus.exe""#
        );
        assert_eq!(windows_quote(r#"say "hi""#), r#""say \"hi\"""#);
        assert_eq!(windows_quote(r"C:\flows\"), r#""C:\flows\\""#);
    }

    /// The desktop app finds `nexus` beside its own executable first, then on `PATH`,
    /// and says how to install it when neither has it.
    #[test]
    fn the_cli_is_found_beside_the_app_then_on_path()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let (app, bin) = (dir.path().join("app"), dir.path().join("bin"));
        std::fs::create_dir_all(&app)?;
        std::fs::create_dir_all(&bin)?;
        let name = if cfg!(windows) { "nexus.exe" } else { "nexus" };
        let exe = app.join("nexus-desktop");
        let path = std::env::join_paths([dir.path().join("empty"), bin.clone()])?;
        let missing = find_cli(&exe, Some(&path));
        assert!(
            matches!(&missing, Err(Error::Config { message }) if message.contains("nor on PATH") && message.contains("cargo install")),
            "{missing:?}"
        );
        std::fs::write(bin.join(name), "")?;
        assert_eq!(find_cli(&exe, Some(&path))?, bin.join(name).canonicalize()?);
        std::fs::write(app.join(name), "")?;
        assert_eq!(find_cli(&exe, Some(&path))?, app.join(name).canonicalize()?);
        Ok(())
    }

    #[test]
    fn the_serve_spec_has_absolute_paths_and_the_bind_address()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let spec = serve_spec(
            PathBuf::from("/opt/nexus"),
            DEFAULT_BIND.parse()?,
            Path::new("flows"),
            Path::new("runs.db"),
            Path::new("/home/ada"),
        );
        assert_eq!(spec.args[..3], ["serve", "--bind", DEFAULT_BIND]);
        assert_eq!(spec.args[3], "--workflows");
        assert!(Path::new(&spec.args[4]).is_absolute() && spec.args[4].ends_with("flows"));
        assert_eq!(spec.args[5], "--db");
        assert!(Path::new(&spec.args[6]).is_absolute() && spec.args[6].ends_with("runs.db"));
        Ok(())
    }
}
