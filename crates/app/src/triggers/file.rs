//! `file` triggers and the watcher of the workflows folder, on `notify-debouncer-full`
//! (events of one file within the debounce time arrive as one).
//!
//! Invariant: the debouncer's thread only hands paths to a bounded channel (`try_send`:
//! when 256 changes wait, more are dropped with a warning), so a burst of changes never
//! blocks it or grows memory; runs start on the tokio side.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nexus_engine::workflow::{DEFAULT_DEBOUNCE_MS, FileTrigger};
use notify_debouncer_full::notify::event::ModifyKind;
use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio::sync::mpsc;

use super::{Inner, Target, TriggerEvent};

/// A running watcher; dropping it stops it.
pub(super) struct Watcher {
    _debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
}

/// Changed paths waiting for their runs, at most.
const PENDING: usize = 256;

/// Whether an event of `kind` changed a file's content or existence: created, written,
/// renamed or removed. Opening, reading and metadata changes (a read that updates the
/// access time) are not changes: the folder's own scan reads every workflow file, and
/// taking its reads for changes made every scan start the next one (found by the
/// real-window test).
pub(super) fn is_change(kind: &EventKind) -> bool {
    match kind {
        // `Any`: the platform did not say what happened; take it for a change.
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Any => true,
        EventKind::Modify(m) => !matches!(m, ModifyKind::Metadata(_)),
        EventKind::Access(_) | EventKind::Other => false,
    }
}

/// Watches `folder` (not its subfolders) and sends `()` on `tx` after changes to its
/// `.yaml`/`.yml` files settle.
pub(super) fn watch_folder(
    folder: &Path,
    debounce: Duration,
    tx: mpsc::Sender<()>,
) -> Result<Watcher, String> {
    let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        let workflow_changed = events.iter().filter(|e| is_change(&e.kind)).any(|e| {
            e.paths
                .iter()
                .any(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        });
        if workflow_changed {
            // A full channel already holds a rescan request.
            let _ = tx.try_send(());
        }
    })
    .map_err(|e| e.to_string())?;
    debouncer
        .watch(folder, RecursiveMode::NonRecursive)
        .map_err(|e| format!("{}: {e}", folder.display()))?;
    Ok(Watcher {
        _debouncer: debouncer,
    })
}

/// Arms a file trigger: watches its paths (relative to the workflow file's folder;
/// folders recursively) and starts one run per changed file, with its absolute path as
/// the trigger's `input`.
///
/// # Errors
/// A sentence naming a path that does not exist or cannot be watched.
pub(super) fn arm(inner: &Arc<Inner>, target: &Target, f: &FileTrigger) -> Result<Watcher, String> {
    let paths: Vec<PathBuf> = f.paths.iter().map(|p| target.folder.join(p)).collect();
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        return Err(format!(
            "`{}` does not exist; create it, or change the trigger's `paths`",
            missing.display()
        ));
    }
    let (tx, mut rx) = mpsc::channel::<PathBuf>(PENDING);
    let debounce = Duration::from_millis(f.debounce_ms.unwrap_or(DEFAULT_DEBOUNCE_MS));
    let file = target.file.clone();
    let mut debouncer = new_debouncer(debounce, None, move |result: DebounceEventResult| {
        let Ok(events) = result else { return };
        let changed: BTreeSet<PathBuf> = events
            .iter()
            .filter(|e| !matches!(e.kind, EventKind::Remove(_)) && is_change(&e.kind))
            .flat_map(|e| e.paths.iter().cloned())
            .filter(|p| p.is_file())
            .collect();
        for path in changed {
            if tx.try_send(path).is_err() {
                tracing::warn!(file = %file, "file trigger: {PENDING} changes wait already; a change was dropped");
            }
        }
    })
    .map_err(|e| e.to_string())?;
    for p in &paths {
        let mode = if p.is_dir() {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        debouncer
            .watch(p, mode)
            .map_err(|e| format!("`{}` cannot be watched: {e}", p.display()))?;
    }
    let (inner, target, trigger) = (Arc::clone(inner), target.clone(), f.clone());
    inner.emit(TriggerEvent::Armed {
        file: target.file.clone(),
        workflow_id: target.workflow_id.clone(),
        trigger: target.name.clone(),
        kind: "file".into(),
        next_fire: None,
    });
    tokio::spawn(async move {
        // Ends when the watcher is dropped (its handler, holding `tx`, goes with it).
        while let Some(path) = rx.recv().await {
            let mut inputs = trigger.inputs.clone();
            let input = trigger.input.clone().unwrap_or_else(|| "path".into());
            inputs.insert(input, path.display().to_string());
            inner.fire(&target, None, inputs, false).await;
        }
    });
    Ok(Watcher {
        _debouncer: debouncer,
    })
}

#[cfg(test)]
mod tests {
    use notify_debouncer_full::notify::event::{
        AccessKind, AccessMode, CreateKind, DataChange, MetadataKind, ModifyKind, RemoveKind,
        RenameMode,
    };

    use super::*;

    #[test]
    fn reads_and_metadata_are_not_changes_writes_renames_and_removals_are() {
        let kinds = [
            (EventKind::Access(AccessKind::Open(AccessMode::Read)), false),
            (
                EventKind::Access(AccessKind::Close(AccessMode::Read)),
                false,
            ),
            (
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::AccessTime)),
                false,
            ),
            (
                EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any)),
                false,
            ),
            (EventKind::Other, false),
            (EventKind::Any, true),
            (EventKind::Create(CreateKind::File), true),
            (
                EventKind::Modify(ModifyKind::Data(DataChange::Content)),
                true,
            ),
            (EventKind::Modify(ModifyKind::Name(RenameMode::To)), true),
            (EventKind::Modify(ModifyKind::Any), true),
            (EventKind::Remove(RemoveKind::File), true),
        ];
        for (kind, change) in kinds {
            assert_eq!(is_change(&kind), change, "{kind:?}");
        }
    }
}
