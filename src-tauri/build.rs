//! Generates the Tauri context and the permissions of the app's own commands: each
//! command listed here gets an `allow-<command>` permission, and only commands granted
//! by a capability file (`capabilities/`) can be called from the window.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let commands: &[&str] = &include!("commands.in");
    tauri_build::try_build(
        tauri_build::Attributes::new()
            .app_manifest(tauri_build::AppManifest::new().commands(commands)),
    )
    .map_err(|e| format!("tauri-build failed: {e:#}").into())
}
