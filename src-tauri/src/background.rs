//! What the app does besides answering the window: it runs the workflows folder's
//! `cron` and `file` triggers while it is open ([`nexus_app::triggers::AppTriggers`]),
//! shows the workflows' desktop notifications (the notification plugin), and keeps
//! running in the tray when the window closes while a trigger is armed.
//!
//! Invariants: closing the window never loses a run or a trigger: with an armed trigger
//! the app stays in the tray (its icon's menu opens the window again or quits); without
//! one, closing the window quits as before. The tray needs the system's tray library
//! (libayatana-appindicator on Linux); where it is missing, the app says so in its log and
//! closing the window quits (a trigger with no way to reopen the window would be a
//! process the user cannot see).
//! Trigger events reach the window as the Tauri event [`TRIGGER_EVENT`].

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nexus_app::Desktop;
use nexus_app::notify::DesktopNotice;
use nexus_app::triggers::{AppTriggers, SystemClock};
use tauri::menu::{Menu, MenuItem};
use tauri::tray::TrayIconBuilder;
use tauri::{AppHandle, Emitter, Manager, RunEvent, Runtime, WebviewWindowBuilder};
use tauri_plugin_notification::NotificationExt;

/// The Tauri event each [`nexus_app::triggers::TriggerEvent`] is sent to the window as.
pub const TRIGGER_EVENT: &str = "nexus://trigger";

/// The main window's label (`tauri.conf.json`).
const MAIN: &str = "main";

/// Whether the tray icon exists (so closing the window may keep the app running).
#[derive(Default)]
pub struct Tray(AtomicBool);

/// Arms the triggers, hands desktop notifications to the notification plugin, and puts
/// the icon in the tray. Called from the app's `setup`.
pub fn start<R: Runtime>(app: &AppHandle<R>, desktop: &Arc<Desktop>) {
    let handle = app.clone();
    desktop.set_desktop_notifications(Arc::new(move |n: &DesktopNotice| {
        notify(&handle, &n.title, &n.body);
    }));
    // Triggers spawn their tasks on the app's tokio runtime.
    let _runtime = tauri::async_runtime::handle().inner().enter();
    let triggers = AppTriggers::start(Arc::clone(desktop), Arc::new(SystemClock));
    let mut events = triggers.subscribe();
    let handle = app.clone();
    tauri::async_runtime::spawn(async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match events.recv().await {
                Ok(event) => drop(handle.emit(TRIGGER_EVENT, &event)),
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    });
    app.manage(triggers);
    let tray = Tray::default();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| tray_icon(app))) {
        Ok(Ok(())) => tray.0.store(true, Ordering::SeqCst),
        Ok(Err(e)) => tracing::warn!("no tray icon ({e}): closing the window quits the app"),
        Err(_) => tracing::warn!(
            "no tray icon (the system's tray library is missing; on Linux install libayatana-appindicator3-1): closing the window quits the app"
        ),
    }
    app.manage(tray);
}

/// Shows a desktop notification; a failure is logged (a notification never stops a
/// run).
fn notify<R: Runtime>(app: &AppHandle<R>, title: &str, body: &str) {
    if let Err(e) = app.notification().builder().title(title).body(body).show() {
        tracing::warn!("desktop notification not shown ({e}): {title}: {body}");
    }
}

/// The tray icon and its menu: open the window, quit.
fn tray_icon<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    let open = MenuItem::with_id(app, "open", "Open Nexus", true, None::<&str>)?;
    let quit_item = MenuItem::with_id(app, "quit", "Quit Nexus", true, None::<&str>)?;
    let menu = Menu::with_items(app, &[&open, &quit_item])?;
    let mut builder = TrayIconBuilder::with_id("nexus")
        .tooltip("Nexus")
        .menu(&menu)
        .show_menu_on_left_click(true)
        .on_menu_event(|app, event| match event.id.as_ref() {
            "open" => open_window(app),
            "quit" => quit(app),
            _ => {}
        });
    if let Some(icon) = app.default_window_icon() {
        builder = builder.icon(icon.clone());
    }
    builder.build(app)?;
    Ok(())
}

/// Shows the main window, making it again from the configuration when it was closed.
fn open_window<R: Runtime>(app: &AppHandle<R>) {
    if let Some(w) = app.get_webview_window(MAIN) {
        let _ = w.unminimize();
        let _ = w.show();
        let _ = w.set_focus();
        return;
    }
    let Some(config) = app.config().app.windows.iter().find(|w| w.label == MAIN) else {
        return;
    };
    match WebviewWindowBuilder::from_config(app, config).and_then(|b| b.build()) {
        Ok(w) => drop(w.set_focus()),
        Err(e) => tracing::error!("the window could not be opened again: {e}"),
    }
}

/// Disarms the triggers and quits.
fn quit<R: Runtime>(app: &AppHandle<R>) {
    if let Some(t) = app.try_state::<Arc<AppTriggers>>() {
        t.stop();
    }
    app.exit(0);
}

/// The app's run-loop events: when the last window closed (an exit without a code) and
/// a trigger is armed and the tray icon exists, the app stays running in the tray and
/// says so once.
pub fn on_run_event<R: Runtime>(app: &AppHandle<R>, event: &RunEvent) {
    let RunEvent::ExitRequested {
        code: None, api, ..
    } = event
    else {
        return;
    };
    let in_tray = app
        .try_state::<Tray>()
        .is_some_and(|t| t.0.load(Ordering::SeqCst));
    let armed = app.try_state::<Arc<AppTriggers>>().map_or(0, |t| t.armed());
    if in_tray && armed > 0 {
        api.prevent_exit();
        static TOLD: AtomicBool = AtomicBool::new(false);
        if !TOLD.swap(true, Ordering::SeqCst) {
            let what = if armed == 1 { "trigger" } else { "triggers" };
            notify(
                app,
                "Nexus keeps running",
                &format!("{armed} {what} stay armed; open or quit Nexus from its tray icon"),
            );
        }
    }
}
