//! Watching pipeline.toml and the plugin files for changes.
//!
//! Editors save through a rename and cargo rewrites a component in several
//! steps, so the watcher watches the files' directories (a watch on the file
//! itself would follow the old inode) and the caller debounces: a reload
//! starts once the files have been quiet for [`QUIET`]. A file caught
//! half-written fails validation, and the write that completes it triggers
//! the next reload.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc::UnboundedSender;

/// How long the watched files must stay unchanged before a reload.
pub const QUIET: Duration = Duration::from_millis(250);

/// Watches `files`; each change to one of them sends `()` on `changed`.
/// The watch lasts as long as the returned watcher.
pub fn watch(
    files: &[PathBuf],
    changed: UnboundedSender<()>,
) -> notify::Result<RecommendedWatcher> {
    let names: HashSet<PathBuf> = files.iter().map(|f| normalise(f)).collect();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| names.contains(&normalise(p))) {
            let _ = changed.send(());
        }
    })?;
    let dirs: HashSet<PathBuf> = files
        .iter()
        .filter_map(|f| normalise(f).parent().map(Path::to_path_buf))
        .collect();
    for dir in dirs {
        watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    }
    Ok(watcher)
}

/// An absolute path with its directory canonicalised (the file itself may
/// not exist for a moment during a rename).
fn normalise(path: &Path) -> PathBuf {
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    match (absolute.parent(), absolute.file_name()) {
        (Some(dir), Some(name)) => dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .join(name),
        _ => absolute,
    }
}
