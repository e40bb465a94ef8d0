//! The `nexus-desktop` binary: starts the Tauri app.

// No console window next to the app in Windows release builds.
#![cfg_attr(not(debug_assertions), windows_subsystem = "windows")]

fn main() {
    nexus_desktop::run();
}
