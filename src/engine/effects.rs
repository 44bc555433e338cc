//! Applying a phase's file effects: writes (atomic) and consumed results
//! (moved aside so that a result is never processed twice).

use crate::engine::phase::FileWrite;
use crate::exec::marked_block;
use crate::workspace::fsio;
use std::path::{Path, PathBuf};

/// Performs the writes in order; the first failure stops and names the file. Each
/// directory written into is synced once, after the last file (not after each).
pub fn apply_writes(writes: &[FileWrite]) -> Result<(), String> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let result = write_each(writes, &mut dirs);
    for d in &dirs {
        fsio::sync_dir(d);
    }
    result
}

fn write_each(writes: &[FileWrite], dirs: &mut Vec<PathBuf>) -> Result<(), String> {
    for w in writes {
        let path = Path::new(w.path());
        let upserted;
        let text: &str = match w {
            FileWrite::Text { text, .. } => text,
            FileWrite::Block {
                begin, end, body, ..
            } => {
                // A file that exists but cannot be read as text is never replaced by the block.
                let existing = match fsio::read_text_capped(path) {
                    Ok(text) => Some(text),
                    Err(fsio::ReadFailure::Missing) => None,
                    Err(fsio::ReadFailure::Unreadable(why)) => {
                        return Err(format!(
                            "{}: cannot update the marked block: {why}; the file is left as it is",
                            path.display()
                        ));
                    }
                };
                let new = marked_block::upserted(existing.as_deref(), begin, end, body);
                if existing.as_deref() == Some(new.as_str()) {
                    continue;
                }
                upserted = new;
                &upserted
            }
        };
        let dir = fsio::write_atomic_unsynced(path, text.as_bytes())
            .map_err(|e| format!("{}: cannot write: {e}", path.display()))?;
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    Ok(())
}

/// Moves each existing file to `<dir>/consumed/<stem>.<n>.<ext>` (n counts up).
pub fn consume(paths: &[String]) -> Result<Vec<String>, String> {
    let mut moved = Vec::new();
    // Results sit in one or two directories: each `consumed/` is created once.
    let mut created: Vec<PathBuf> = Vec::new();
    for p in paths {
        let path = Path::new(p);
        if !path.is_file() {
            continue;
        }
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let consumed = dir.join("consumed");
        if !created.contains(&consumed) {
            std::fs::create_dir_all(&consumed)
                .map_err(|e| format!("{}: {e}", consumed.display()))?;
            created.push(consumed.clone());
        }
        let stem = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let ext = path
            .extension()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        // The first free `<stem>.<n>.<ext>`: each try moves the file unless the name is
        // taken (one call a try, no look first).
        crate::workspace::failpoint::hit(&consumed).map_err(|e| e.to_string())?;
        let mut n = 1;
        let target = loop {
            let t = consumed.join(format!("{stem}.{n}.{ext}"));
            let done = fsio::rename_no_replace(path, &t)
                .map_err(|e| format!("{}: cannot move aside: {e}", path.display()))?;
            if done {
                break t;
            }
            n += 1;
        };
        moved.push(target.display().to_string());
    }
    Ok(moved)
}
