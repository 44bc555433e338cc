//! File primitives every writer goes through: atomic replace (temp file,
//! fsync, rename, directory fsync) so that a crash never leaves a torn file,
//! and size-capped reads so that a hostile result file cannot exhaust memory.
//! Audit records the campaign never reads back are replaced atomically without
//! the syncs (see [`Durability`]).

use std::fs;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

/// Largest file the engine reads into memory (16 MiB).
pub const MAX_READ_BYTES: u64 = 16 * 1024 * 1024;

/// Why a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadFailure {
    /// No such file.
    Missing,
    /// Present but unreadable (a directory, permissions, not UTF-8, too large).
    Unreadable(String),
}

/// How long a file must have been left alone before its stamp is trusted: more than a
/// tick of the clock file systems stamp changes with (1-10 ms, by kernel, on a file
/// system that keeps nanoseconds).
pub const SETTLED: std::time::Duration = std::time::Duration::from_millis(20);

/// [`SETTLED`] for a file whose times hold no fraction of a second: its file system may
/// keep whole seconds only (ext4 with small inodes, ext3) or even seconds (FAT).
pub const SETTLED_COARSE: std::time::Duration = std::time::Duration::from_secs(3);

/// What the file system says of a file's identity and last change (device, inode,
/// length, modification and change times). A stamp taken when the file had not changed
/// for [`SETTLED`] tells whether it changed since: any write, rename onto it or change
/// of its times moves its change time past the stamp's. (A stamp of a file that changed
/// a moment before could miss a write of the same length in the same clock tick: such a
/// stamp is not taken.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    len: u64,
    modified: (i64, i64),
    changed: (i64, i64),
}

impl Stamp {
    /// The stamp of `meta`.
    fn of(meta: &fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        Self {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            modified: (meta.mtime(), meta.mtime_nsec()),
            changed: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether the file's last change was [`SETTLED`] before `now` ([`SETTLED_COARSE`]
    /// when its times are whole seconds).
    fn settled_at(&self, now: std::time::SystemTime) -> bool {
        let nanos = |(secs, nsec): (i64, i64)| i128::from(secs) * 1_000_000_000 + i128::from(nsec);
        let now = match now.duration_since(std::time::UNIX_EPOCH) {
            Ok(since) => since.as_nanos() as i128,
            Err(_) => return false,
        };
        let coarse = self.changed.1 == 0 && self.modified.1 == 0;
        let wait = if coarse { SETTLED_COARSE } else { SETTLED };
        let last = nanos(self.changed).max(nanos(self.modified));
        last + wait.as_nanos() as i128 <= now
    }
}

/// The stamp of the file at `path` now; `None` when it cannot be looked at.
pub fn stamp(path: &Path) -> Option<Stamp> {
    fs::metadata(path).ok().map(|m| Stamp::of(&m))
}

/// Reads a UTF-8 file of at most [`MAX_READ_BYTES`].
pub fn read_text_capped(path: &Path) -> Result<String, ReadFailure> {
    read_text_stamped(path).map(|(text, _)| text)
}

/// [`read_text_capped`], with the file's stamp taken before it was read when the file
/// had [`SETTLED`] by then (see [`Stamp`]): a later equal stamp says the text is still
/// the file's. (A writer at work while it is read changes the stamp: the next look
/// finds it changed.)
pub fn read_text_stamped(path: &Path) -> Result<(String, Option<Stamp>), ReadFailure> {
    let now = std::time::SystemTime::now();
    // Opened first, then looked at: the stamp is the opened file's, the one read.
    let unreadable = |e: std::io::Error| ReadFailure::Unreadable(e.to_string());
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(ReadFailure::Missing),
        // A directory that cannot be opened is still named a directory.
        Err(_) if fs::metadata(path).is_ok_and(|m| m.is_dir()) => return Err(not_a_file()),
        Err(e) => return Err(unreadable(e)),
    };
    let meta = file.metadata().map_err(unreadable)?;
    if meta.is_dir() {
        return Err(not_a_file());
    }
    if meta.len() > MAX_READ_BYTES {
        return Err(ReadFailure::Unreadable(format!(
            "file is {} bytes, over the {} byte cap",
            meta.len(),
            MAX_READ_BYTES
        )));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_READ_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    if bytes.len() as u64 > MAX_READ_BYTES {
        return Err(ReadFailure::Unreadable(
            "file grew over the size cap".into(),
        ));
    }
    let text =
        String::from_utf8(bytes).map_err(|_| ReadFailure::Unreadable("not valid UTF-8".into()))?;
    let stamp = Stamp::of(&meta);
    Ok((text, stamp.settled_at(now).then_some(stamp)))
}

/// What reading a directory gives.
fn not_a_file() -> ReadFailure {
    ReadFailure::Unreadable("is a directory, expected a file".into())
}

/// Whether the file at `path` holds exactly `text`, compared as it is read, a block
/// at a time: no copy of the file is made. Any error reading it is `false` (the caller
/// reads it the ordinary way, which reports the error), and so is a text over
/// [`MAX_READ_BYTES`], which [`read_text_capped`] refuses.
pub fn holds(path: &Path, text: &str) -> bool {
    if text.len() as u64 > MAX_READ_BYTES {
        return false;
    }
    let Ok(mut file) = fs::File::open(path) else {
        return false;
    };
    if file.metadata().map(|m| m.len()).ok() != Some(text.len() as u64) {
        return false;
    }
    let mut expected = text.as_bytes();
    let mut block = vec![0u8; text.len().clamp(1, 256 * 1024)];
    loop {
        match file.read(&mut block) {
            Ok(0) => return expected.is_empty(),
            Ok(n) => match expected.strip_prefix(&block[..n]) {
                Some(rest) => expected = rest,
                None => return false,
            },
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
}

/// Writes `contents` to `path` atomically, creating parent directories.
pub fn write_atomic(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let parent = write_atomic_unsynced(path, contents)?;
    sync_dir(&parent);
    Ok(())
}

/// How far an atomic write goes before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The file and its name are on disk (the file synced, then its directory): for
    /// every file the campaign reads back (state, load handoff, tasks, results).
    Durable,
    /// Replaced atomically, not forced to disk: a failed step never leaves it torn, and
    /// a power cut may lose the latest one. For audit records nothing reads back (the
    /// step handoffs; the journal is appended the same way).
    Record,
}

/// An atomic write of `text` to `path` as `durability` asks, unless the file already
/// holds exactly `text` (compared as it is read): then nothing is written. For files a
/// step rewrites with, as a rule, the same text (the load handoff, a poll's handoff):
/// two `fsync`s saved each time. The file found is what is on disk (after a crash, the
/// page cache is the disk), so a write that did not survive is made again.
pub fn write_atomic_if_changed(
    path: &Path,
    text: &str,
    durability: Durability,
) -> std::io::Result<()> {
    if holds(path, text) {
        return Ok(());
    }
    match durability {
        Durability::Durable => write_atomic(path, text.as_bytes()),
        Durability::Record => replace(path, text.as_bytes(), false).map(|_| ()),
    }
}

/// [`write_atomic`] without the directory sync: the file is complete on disk, its
/// rename durable once [`sync_dir`] runs on the directory returned (writers of several
/// files sync each directory once, at the end).
pub fn write_atomic_unsynced(path: &Path, contents: &[u8]) -> std::io::Result<PathBuf> {
    replace(path, contents, true)
}

/// Writes `contents` beside `path` and renames it into place, the new file synced
/// first with `sync`; returns the directory (parents are created).
fn replace(path: &Path, contents: &[u8], sync: bool) -> std::io::Result<PathBuf> {
    crate::workspace::failpoint::hit(path)?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    fs::create_dir_all(&parent).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot create directory {}: {e}", parent.display()),
        )
    })?;
    let mut tmp = tempfile::NamedTempFile::new_in(&parent)?;
    tmp.write_all(contents)?;
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(parent)
}

/// Makes the renames into `dir` durable (best effort: not every platform can).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Moves `from` to `to` unless something is at `to` already: `Ok(false)`, nothing
/// moved. One `renameat2(RENAME_NOREPLACE)` where the system has it (no look before the
/// move, and no race with another writer of `to`), else a look and a rename.
pub fn rename_no_replace(from: &Path, to: &Path) -> std::io::Result<bool> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
        match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
            Ok(()) => return Ok(true),
            Err(nix::errno::Errno::EEXIST) => return Ok(false),
            // Not supported here (a file system or kernel without it): look, then move.
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if to.symlink_metadata().is_ok() {
        return Ok(false);
    }
    fs::rename(from, to).map(|()| true)
}

/// Lexically normalises `path` (drops `.`, resolves `..` where possible) without touching the disk.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// True when `path` (relative to `base`) resolves inside `base/dir`, symlinks followed.
pub fn resolves_inside(base: &Path, path: &str, dir: &str) -> bool {
    Inside::new(base, dir).contains(path)
}

/// [`resolves_inside`] for many paths under one `base/dir`: the directory is resolved
/// once (a gate that consumes 1,000 result files checks each of them), and so is each
/// parent directory of the paths checked. Build one per batch of checks: it does not
/// see directories that change after it resolved them.
#[derive(Debug, Clone)]
pub struct Inside {
    base: PathBuf,
    root: PathBuf,
    /// The directory with symlinks followed; `None` when it leads out of `base`.
    real_root: Option<PathBuf>,
    /// Directories resolved so far (the paths checked share a few parents).
    parents: std::cell::RefCell<std::collections::HashMap<PathBuf, PathBuf>>,
}

impl Inside {
    /// Confinement to `base/dir`.
    pub fn new(base: &Path, dir: &str) -> Self {
        let root = normalize(&base.join(dir));
        // The directory itself must not be a symlink leading out of the project.
        let real_root = resolve(&root);
        let real_root = real_root.starts_with(resolve(base)).then_some(real_root);
        Self {
            base: base.to_path_buf(),
            root,
            real_root,
            parents: Default::default(),
        }
    }

    /// True when `path` (relative to the base) resolves inside the directory.
    pub fn contains(&self, path: &str) -> bool {
        let candidate = Path::new(path);
        if candidate.is_absolute() || path.is_empty() {
            return false;
        }
        if candidate
            .components()
            .any(|c| matches!(c, Component::ParentDir))
        {
            return false;
        }
        let lexical = normalize(&self.base.join(candidate));
        if !lexical.starts_with(&self.root) {
            return false;
        }
        self.real_root
            .as_ref()
            .is_some_and(|real_root| self.resolve(&lexical).starts_with(real_root))
    }

    /// [`resolve`] of `path`, its parent directory resolved once for all the paths
    /// under it: a path that is not a symlink resolves to its resolved parent joined
    /// with its name (one `lstat` instead of a walk of every component).
    fn resolve(&self, path: &Path) -> PathBuf {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return resolve(path);
        };
        if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return resolve(path);
        }
        let mut parents = self.parents.borrow_mut();
        parents
            .entry(parent.to_path_buf())
            .or_insert_with(|| resolve(parent))
            .join(name)
    }
}

/// `path` with symlinks followed as far as it exists, the rest appended lexically.
fn resolve(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest = Vec::new();
    while !existing.as_os_str().is_empty() && fs::symlink_metadata(&existing).is_err() {
        match existing.file_name() {
            Some(name) => rest.push(name.to_os_string()),
            None => break,
        }
        if !existing.pop() {
            break;
        }
    }
    let base = if existing.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        existing
    };
    let mut real = fs::canonicalize(&base).unwrap_or(base);
    for name in rest.iter().rev() {
        real.push(name);
    }
    real
}

/// Natural ordering key: `bg-10` sorts after `bg-9`.
pub fn natural_key(name: &str) -> Vec<(String, u64)> {
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut digits = String::new();
    for ch in name.chars() {
        if ch.is_ascii_digit() {
            digits.push(ch);
        } else {
            if !digits.is_empty() {
                parts.push((
                    std::mem::take(&mut text),
                    digits.parse().unwrap_or(u64::MAX),
                ));
                digits.clear();
            }
            text.push(ch);
        }
    }
    parts.push((text, digits.parse().unwrap_or(0)));
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn an_unchanged_file_is_not_written_again() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("h/load.json");
        write_atomic_if_changed(&path, "{}\n", Durability::Durable).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{}\n");
        // An atomic write renames a new file into place: a new inode.
        let inode = fs::metadata(&path).unwrap().ino();
        write_atomic_if_changed(&path, "{}\n", Durability::Record).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode, "left as it was");
        write_atomic_if_changed(&path, "{\"a\": 1}\n", Durability::Record).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"a\": 1}\n");
        assert_ne!(fs::metadata(&path).unwrap().ino(), inode, "written again");
    }

    #[test]
    fn a_stamp_is_taken_of_a_settled_file_only_and_changes_with_any_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let written = std::time::Instant::now();
        fs::write(&path, "{\"n\": 1}").unwrap();
        let (text, stamp) = read_text_stamped(&path).unwrap();
        assert_eq!(text, "{\"n\": 1}");
        if written.elapsed() < SETTLED {
            assert_eq!(stamp, None, "changed a moment ago: no stamp");
        }
        std::thread::sleep(SETTLED * 2);
        let (_, stamp) = read_text_stamped(&path).unwrap();
        let stamp = stamp.expect("settled: stamped");
        assert_eq!(super::stamp(&path), Some(stamp), "unchanged");
        // The same length written again, its modification time put back.
        let modified = fs::metadata(&path).unwrap().modified().unwrap();
        fs::write(&path, "{\"n\": 2}").unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(modified).unwrap();
        assert_ne!(super::stamp(&path), Some(stamp), "its change time moved");
        // Replaced by another file with the same text.
        std::thread::sleep(SETTLED * 2);
        let (_, stamp) = read_text_stamped(&path).unwrap();
        let stamp = stamp.expect("settled again");
        write_atomic(&path, b"{\"n\": 2}").unwrap();
        assert_ne!(super::stamp(&path), Some(stamp), "another inode");
    }

    #[test]
    fn whole_second_times_wait_for_the_coarse_margin() {
        let at = |secs, nsec| Stamp {
            dev: 1,
            ino: 1,
            len: 1,
            modified: (secs, nsec),
            changed: (secs, nsec),
        };
        let now = |secs: u64, millis: u64| {
            std::time::UNIX_EPOCH + std::time::Duration::from_millis(secs * 1000 + millis)
        };
        assert!(at(100, 5).settled_at(now(100, 30)), "nanoseconds: 20 ms");
        assert!(!at(100, 5).settled_at(now(100, 10)));
        // Whole seconds: the file system may round a later write down to the same second.
        assert!(!at(100, 0).settled_at(now(101, 0)));
        assert!(at(100, 0).settled_at(now(103, 0)));
        assert!(!at(100, 5).settled_at(std::time::UNIX_EPOCH - std::time::Duration::from_secs(1)));
    }

    #[test]
    fn a_rename_without_replace_moves_only_to_a_free_name() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        fs::write(&a, "a").unwrap();
        fs::write(&b, "b").unwrap();
        assert!(!rename_no_replace(&a, &b).unwrap(), "b is taken");
        assert_eq!(fs::read_to_string(&b).unwrap(), "b");
        assert_eq!(fs::read_to_string(&a).unwrap(), "a", "left where it was");
        assert!(rename_no_replace(&a, &c).unwrap());
        assert_eq!(fs::read_to_string(&c).unwrap(), "a");
        assert!(!a.exists());
        assert!(
            rename_no_replace(&a, &dir.path().join("d")).is_err(),
            "nothing to move"
        );
    }

    #[test]
    fn holds_compares_the_whole_file_block_by_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // Longer than one block, so the last block is compared too.
        let text: String = (0..40_000).map(|i| format!("{i:08}")).collect();
        fs::write(&path, &text).unwrap();
        assert!(holds(&path, &text));
        let mut changed = text.clone().into_bytes();
        *changed.last_mut().unwrap() = b'x';
        assert!(!holds(&path, std::str::from_utf8(&changed).unwrap()));
        assert!(!holds(&path, &text[..text.len() - 1]));
        assert!(!holds(&path, &format!("{text}0")));
        assert!(!holds(&dir.path().join("missing.json"), ""));
        assert!(!holds(dir.path(), &text));
        fs::write(&path, "").unwrap();
        assert!(holds(&path, ""));
    }

    #[test]
    fn confinement_rejects_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        fs::create_dir_all(base.join(".ml-metaopt/worker-results")).unwrap();
        assert!(resolves_inside(
            base,
            ".ml-metaopt/worker-results/a.json",
            ".ml-metaopt/worker-results"
        ));
        assert!(!resolves_inside(
            base,
            ".ml-metaopt/worker-results/../state.json",
            ".ml-metaopt/worker-results"
        ));
        assert!(!resolves_inside(
            base,
            "/etc/passwd",
            ".ml-metaopt/worker-results"
        ));
        assert!(!resolves_inside(
            base,
            "elsewhere/a.json",
            ".ml-metaopt/worker-results"
        ));
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/tmp", base.join(".ml-metaopt/worker-results/link"))
                .unwrap();
            assert!(!resolves_inside(
                base,
                ".ml-metaopt/worker-results/link/x.json",
                ".ml-metaopt/worker-results"
            ));
            // The result directory itself linked out of the project.
            let outside = tempfile::tempdir().unwrap();
            std::os::unix::fs::symlink(outside.path(), base.join(".ml-metaopt/executor-events"))
                .unwrap();
            assert!(!resolves_inside(
                base,
                ".ml-metaopt/executor-events/x.json",
                ".ml-metaopt/executor-events"
            ));
        }
    }

    #[cfg(unix)]
    #[test]
    fn inside_resolves_each_path_with_its_parent_resolved_once() {
        let dir = tempfile::tempdir().unwrap();
        let base = dir.path();
        let results = base.join(".ml-metaopt/worker-results");
        fs::create_dir_all(&results).unwrap();
        fs::write(results.join("a.json"), "{}").unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.json"), "{}").unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret.json"), results.join("out.json"))
            .unwrap();
        std::os::unix::fs::symlink(outside.path(), results.join("link")).unwrap();
        let inside = Inside::new(base, ".ml-metaopt");
        // The parent is resolved by the first path, then reused for its siblings.
        assert!(inside.contains(".ml-metaopt/worker-results/a.json"));
        assert!(inside.contains(".ml-metaopt/worker-results/missing.json"));
        assert!(
            !inside.contains(".ml-metaopt/worker-results/out.json"),
            "a file linked out"
        );
        assert!(
            !inside.contains(".ml-metaopt/worker-results/link/x.json"),
            "a directory linked out"
        );
        assert!(inside.contains(".ml-metaopt/worker-results/a.json"));
        assert!(!inside.contains("elsewhere/a.json"));
    }

    #[test]
    fn natural_order() {
        let mut names = vec!["bg-10.json", "bg-9.json", "bg-1.json"];
        names.sort_by_key(|n| natural_key(n));
        assert_eq!(names, vec!["bg-1.json", "bg-9.json", "bg-10.json"]);
    }
}
