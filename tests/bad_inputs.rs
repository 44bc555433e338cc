//! The bad-input corpus: every case under `tests/bad-inputs/` is one broken input
//! file with its expected outcome (format: `tests/bad-inputs/README.md`). Each case
//! runs the real binary in its own temp project, in parallel, and must hold:
//! no panic (exit code 101, `panicked` on stderr) and no hang; the documented exit
//! code; messages naming the file and the field; and every pre-existing file of the
//! project (and of the case's outside directory) byte-for-byte unchanged, except the
//! paths the case allows to change. A case marked `known_bug` only has to run
//! without a panic or a hang; its other expectations are reported, not enforced.

#![forbid(unsafe_code)]

mod common;

use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Identity hash of the example campaign (contract section 3).
const EXAMPLE_HASH: &str =
    "sha256:76d87a271abe95ba765ac749237a1383dd4c75956671de88f15bba9cca13bc81";
/// Identity hash the state fixtures carry, replaced by [`EXAMPLE_HASH`].
const FIXTURE_HASH: &str =
    "sha256:1111111111111111111111111111111111111111111111111111111111111111";
/// Marker in case paths and arguments for the case's directory outside the project.
const OUTSIDE: &str = "$OUTSIDE";

/// One case file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    /// Defaults to the file stem.
    #[serde(default)]
    name: String,
    /// What the case proves.
    #[serde(default)]
    description: String,
    #[serde(default)]
    setup: Setup,
    /// Edits applied in order after the setup.
    #[serde(rename = "break", default)]
    breaks: Vec<Break>,
    /// Arguments of the binary, run in the project directory.
    run: Vec<String>,
    expect: Expect,
    /// A known failure: only "no panic, no hang" is enforced.
    #[serde(default)]
    known_bug: Option<String>,
    /// Run with stderr a pipe whose reader is already gone (`metaopt … 2>&1 | head`).
    #[serde(default)]
    close_stderr: bool,
}

/// The project before the break.
#[derive(Debug, Deserialize, Clone, Hash, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
struct Setup {
    /// Write the example campaign.
    campaign: bool,
    /// Write a READY preflight artifact for the example campaign.
    preflight: bool,
    /// A state fixture of `tests/fixtures/state/` (stem), identity hash replaced.
    state: Option<String>,
    /// Simulated steps (`step --executor sim --simulate-workers`) before the break.
    steps: usize,
    /// Write the LOAD_CAMPAIGN handoff afterwards (for `metaopt agent` cases).
    load_handoff: bool,
    /// Copy `machine/` to `machine-copy/` in the project.
    machine_copy: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            campaign: true,
            preflight: true,
            state: None,
            steps: 0,
            load_handoff: false,
            machine_copy: false,
        }
    }
}

/// One edit of the project. Exactly one action per entry (checked when applied).
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Break {
    /// The file (or directory) the edit applies to, relative to the project.
    file: Option<String>,
    /// Whole new content. With `bytes: true`, `{xHH}` stands for the byte 0xHH.
    content: Option<String>,
    bytes: bool,
    /// Replace the first occurrence of `[from, to]` (it must occur).
    replace: Option<(String, String)>,
    /// Keep only the first N bytes.
    truncate: Option<usize>,
    /// Append spaces until the file has this many bytes.
    pad_to: Option<u64>,
    /// Content `before + open×times + middle + close×times + after`.
    repeat: Option<Repeat>,
    /// JSON edits: dotted paths (array indices as numbers) set to values.
    json_set: BTreeMap<String, serde_yaml::Value>,
    /// JSON edits: dotted paths removed.
    json_remove: Vec<String>,
    /// Replace the file by a directory holding one file.
    make_dir: bool,
    /// Remove the file or directory.
    remove: bool,
    /// Make the file a symlink to this target (`$OUTSIDE` allowed).
    symlink: Option<String>,
    /// chmod the file (e.g. 0 for `000`); restored before cleanup.
    chmod: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Repeat {
    #[serde(default)]
    before: String,
    open: String,
    #[serde(default)]
    middle: String,
    close: String,
    times: usize,
    #[serde(default)]
    after: String,
}

/// What must hold after the run.
#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Expect {
    exit_code: i32,
    /// Substrings of stdout / stderr / either.
    stdout_contains: Vec<String>,
    stderr_contains: Vec<String>,
    output_contains: Vec<String>,
    stdout_not_contains: Vec<String>,
    /// stdout parsed as JSON (a handoff or a `step --json` turn): dotted path → matcher.
    stdout_json: BTreeMap<String, Matcher>,
    /// A JSON file of the project afterwards: path → (dotted path → matcher).
    file_json: BTreeMap<String, BTreeMap<String, Matcher>>,
    /// Text files afterwards: path → substrings (`absent` checks absence instead).
    file_contains: BTreeMap<String, Vec<String>>,
    /// Paths that must not exist afterwards.
    absent: Vec<String>,
    /// Pre-existing paths that must be byte-for-byte unchanged (see [`Unchanged`]).
    unchanged: Unchanged,
    /// Seconds before the run counts as hung.
    timeout_seconds: Option<u64>,
}

/// `unchanged: all` | `unchanged: [paths]` | `unchanged: {all_except: [globs]}`.
#[derive(Debug, Deserialize, Default)]
#[serde(untagged)]
enum Unchanged {
    #[default]
    Nothing,
    Keyword(String),
    Paths(Vec<String>),
    AllExcept {
        all_except: Vec<String>,
    },
}

/// A literal JSON value, or `{contains: s}` / `{not_null: true}` / `{absent: true}` / `{one_of: [...]}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Matcher {
    Rule(MatchRule),
    Literal(serde_yaml::Value),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MatchRule {
    #[serde(default)]
    contains: Option<String>,
    #[serde(default)]
    not_null: Option<bool>,
    #[serde(default)]
    absent: Option<bool>,
    #[serde(default)]
    len: Option<usize>,
}

/// A loaded case and where it came from.
struct Loaded {
    file: PathBuf,
    case: Case,
    /// Files of a directory case (`files/`), copied into the project before the break.
    files_dir: Option<PathBuf>,
}

fn corpus_dir() -> PathBuf {
    common::repo().join("tests/bad-inputs")
}

fn load_cases() -> Vec<Loaded> {
    let mut out = Vec::new();
    let mut entries: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("tests/bad-inputs")
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for path in entries {
        let (file, files_dir) = if path.is_dir() {
            let files = path.join("files");
            (path.join("case.yaml"), files.is_dir().then_some(files))
        } else if path.extension().is_some_and(|e| e == "yaml") {
            (path.clone(), None)
        } else {
            continue;
        };
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        let mut case: Case = serde_yaml::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: not a valid case: {e}", file.display()));
        if case.name.is_empty() {
            let stem = if path.is_dir() {
                path.as_path()
            } else {
                file.as_path()
            };
            case.name = stem
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
        }
        out.push(Loaded {
            file,
            case,
            files_dir,
        });
    }
    out
}

/// Runs the binary in `dir`; `(exit code, stdout, stderr, elapsed, timed out)`.
fn run_bin(
    dir: &Path,
    args: &[String],
    timeout: Duration,
    close_stderr: bool,
) -> (Option<i32>, String, String, Duration, bool) {
    let started = Instant::now();
    let stderr = if close_stderr {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        Stdio::from(writer)
    } else {
        Stdio::piped()
    };
    let mut child = Command::new(env!("CARGO_BIN_EXE_metaopt"))
        .current_dir(dir)
        .env("METAOPT_NOW", common::NOW)
        .env_remove("METAOPT_MACHINE")
        .env_remove("METAOPT_FAILPOINT")
        .env_remove("METAOPT_AVAILABLE_MODELS")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn metaopt");
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        let _ = out.read_to_end(&mut b);
        b
    });
    let err_t = std::thread::spawn(move || {
        let mut b = Vec::new();
        if let Some(err) = err.as_mut() {
            let _ = err.read_to_end(&mut b);
        }
        b
    });
    let mut hung = false;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        if started.elapsed() > timeout {
            hung = true;
            let _ = child.kill();
            break child.wait().expect("wait");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = String::from_utf8_lossy(&out_t.join().unwrap_or_default()).into_owned();
    let stderr = String::from_utf8_lossy(&err_t.join().unwrap_or_default()).into_owned();
    (status.code(), stdout, stderr, started.elapsed(), hung)
}

fn run_ok(dir: &Path, args: &[&str]) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (code, out, err, _, _) = run_bin(dir, &args, Duration::from_secs(60), false);
    assert_eq!(code, Some(0), "setup `metaopt {args:?}` failed: {out}{err}");
}

/// Builds a base project for `setup` (without the machine copy).
fn build_base(setup: &Setup) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = dir.path();
    std::fs::create_dir_all(p.join(".ml-metaopt")).expect("mkdir");
    if setup.campaign {
        std::fs::write(
            p.join("ml_metaopt_campaign.yaml"),
            common::example_campaign(),
        )
        .expect("campaign");
    }
    if setup.preflight {
        let artifact = serde_json::json!({"schema_version": 1, "status": "READY",
            "campaign_identity_hash": EXAMPLE_HASH, "failures": [], "next_action": "run metaopt step"});
        std::fs::write(
            p.join(".ml-metaopt/preflight-readiness.json"),
            serde_json::to_string_pretty(&artifact).expect("json"),
        )
        .expect("preflight");
    }
    if let Some(fixture) = &setup.state {
        let src = common::repo().join(format!("tests/fixtures/state/{fixture}.json"));
        let text =
            std::fs::read_to_string(&src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        std::fs::write(
            p.join(".ml-metaopt/state.json"),
            text.replace(FIXTURE_HASH, EXAMPLE_HASH),
        )
        .expect("state");
    }
    for _ in 0..setup.steps {
        run_ok(p, &["step", "--executor", "sim", "--simulate-workers"]);
    }
    if setup.load_handoff {
        run_ok(
            p,
            &[
                "agent",
                "metaopt-load-campaign",
                "--output",
                ".ml-metaopt/handoffs/load_campaign.latest.json",
            ],
        );
    }
    dir
}

type BaseCache = Mutex<HashMap<String, Arc<OnceLock<tempfile::TempDir>>>>;

/// The base project for `setup`, built once and shared by every case that needs it.
fn base(cache: &BaseCache, setup: &Setup) -> PathBuf {
    let mut key_setup = setup.clone();
    key_setup.machine_copy = false;
    let key = format!("{key_setup:?}");
    let cell = cache.lock().expect("cache").entry(key).or_default().clone();
    cell.get_or_init(|| build_base(&key_setup))
        .path()
        .to_path_buf()
}

/// Recursive copy preserving symlinks.
fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir").flatten() {
        let to = dst.join(e.file_name());
        let ft = e.file_type().expect("file type");
        if ft.is_symlink() {
            let target = std::fs::read_link(e.path()).expect("readlink");
            std::os::unix::fs::symlink(target, &to).expect("symlink");
        } else if ft.is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).expect("copy");
        }
    }
}

/// What a path holds, for before/after comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    File(Vec<u8>),
    /// A file the test cannot read (permissions): size and permission bits.
    Unreadable(u64, u32),
    Dir(u32),
    Link(PathBuf),
}

fn snapshot(root: &Path) -> BTreeMap<String, Entry> {
    use std::os::unix::fs::PermissionsExt;
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .into_owned();
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let mode = meta.permissions().mode();
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    Entry::Link(std::fs::read_link(&path).unwrap_or_default()),
                );
            } else if meta.is_dir() {
                out.insert(rel, Entry::Dir(mode));
                walk(root, &path, out);
            } else {
                let entry = match std::fs::read(&path) {
                    Ok(b) => Entry::File(b),
                    Err(_) => Entry::Unreadable(meta.len(), mode),
                };
                out.insert(rel, entry);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// `*` matches within one path segment, `**` any number of segments.
fn glob(pattern: &str, path: &str) -> bool {
    fn seg(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => seg(&p[1..], s) || (!s.is_empty() && seg(p, &s[1..])),
            (Some(a), Some(b)) if a == b => seg(&p[1..], &s[1..]),
            _ => false,
        }
    }
    fn parts(p: &[&str], s: &[&str]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(&"**"), _) => parts(&p[1..], s) || (!s.is_empty() && parts(p, &s[1..])),
            (Some(a), Some(b)) if seg(a.as_bytes(), b.as_bytes()) => parts(&p[1..], &s[1..]),
            _ => false,
        }
    }
    let p: Vec<&str> = pattern.split('/').collect();
    let s: Vec<&str> = path.split('/').collect();
    parts(&p, &s)
}

fn subst(s: &str, outside: &Path) -> String {
    s.replace(OUTSIDE, &outside.display().to_string())
}

fn unescape_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 2..i + 4)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (
            b.get(i..i + 2),
            hex.and_then(|h| u8::from_str_radix(h, 16).ok()),
            b.get(i + 4),
        ) {
            (Some(b"{x"), Some(byte), Some(b'}')) => {
                out.push(byte);
                i += 5;
            }
            _ => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    out
}

fn yaml_to_json(v: &serde_yaml::Value) -> Value {
    serde_json::to_value(v).expect("case value as JSON")
}

fn json_path<'a>(v: &'a mut Value, path: &str) -> (&'a mut Value, String) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().expect("path").to_string();
    let mut cur = v;
    for p in parts {
        cur = match p.parse::<usize>() {
            Ok(i) if cur.is_array() => &mut cur[i],
            _ => &mut cur[p],
        };
    }
    (cur, last)
}

/// Applies one edit; errors describe a broken case.
fn apply_break(
    project: &Path,
    outside: &Path,
    b: &Break,
    chmods: &mut Vec<PathBuf>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let rel = b.file.as_deref().ok_or("every break needs `file`")?;
    let path = project.join(subst(rel, outside));
    let mut actions = 0;
    if let Some(c) = &b.content {
        actions += 1;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        let bytes = if b.bytes {
            unescape_bytes(c)
        } else {
            c.clone().into_bytes()
        };
        std::fs::write(&path, bytes).map_err(|e| format!("{rel}: {e}"))?;
    }
    if let Some((from, to)) = &b.replace {
        actions += 1;
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{rel}: {e}"))?;
        if !text.contains(from.as_str()) {
            return Err(format!("{rel} does not contain {from:?}"));
        }
        std::fs::write(&path, text.replacen(from.as_str(), to, 1)).map_err(|e| e.to_string())?;
    }
    if let Some(n) = b.truncate {
        actions += 1;
        let bytes = std::fs::read(&path).map_err(|e| format!("{rel}: {e}"))?;
        std::fs::write(&path, &bytes[..n.min(bytes.len())]).map_err(|e| e.to_string())?;
    }
    if let Some(size) = b.pad_to {
        actions += 1;
        let mut bytes = std::fs::read(&path).map_err(|e| format!("{rel}: {e}"))?;
        bytes.push(b'\n');
        bytes.resize(size.max(bytes.len() as u64) as usize, b' ');
        std::fs::write(&path, bytes).map_err(|e| e.to_string())?;
    }
    if let Some(r) = &b.repeat {
        actions += 1;
        let text = format!(
            "{}{}{}{}{}",
            r.before,
            r.open.repeat(r.times),
            r.middle,
            r.close.repeat(r.times),
            r.after
        );
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::write(&path, text).map_err(|e| e.to_string())?;
    }
    if !b.json_set.is_empty() || !b.json_remove.is_empty() {
        actions += 1;
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{rel}: {e}"))?;
        let mut v: Value = serde_json::from_str(&text).map_err(|e| format!("{rel}: {e}"))?;
        for (p, val) in &b.json_set {
            let (parent, key) = json_path(&mut v, p);
            match (key.parse::<usize>(), parent) {
                // An index one past the end appends.
                (Ok(i), Value::Array(a)) if i == a.len() => a.push(yaml_to_json(val)),
                (Ok(i), Value::Array(a)) if i < a.len() => a[i] = yaml_to_json(val),
                (Ok(i), Value::Array(_)) => {
                    return Err(format!("{rel}: index {i} of {p} is out of range"));
                }
                (_, parent) => parent[key.as_str()] = yaml_to_json(val),
            }
        }
        for p in &b.json_remove {
            let (parent, key) = json_path(&mut v, p);
            match parent {
                Value::Object(m) => {
                    m.remove(&key).ok_or(format!("{rel}: no {p} to remove"))?;
                }
                Value::Array(a) => {
                    a.remove(key.parse::<usize>().map_err(|e| e.to_string())?);
                }
                _ => return Err(format!("{rel}: no {p} to remove")),
            }
        }
        std::fs::write(&path, serde_json::to_string_pretty(&v).expect("json"))
            .map_err(|e| e.to_string())?;
    }
    if b.make_dir {
        actions += 1;
        let _ = std::fs::remove_file(&path);
        std::fs::create_dir_all(&path).map_err(|e| e.to_string())?;
        std::fs::write(
            path.join("keep.txt"),
            "a directory where a file should be\n",
        )
        .map_err(|e| e.to_string())?;
    }
    if b.remove {
        actions += 1;
        if path.is_dir() {
            std::fs::remove_dir_all(&path).map_err(|e| format!("{rel}: {e}"))?;
        } else {
            std::fs::remove_file(&path).map_err(|e| format!("{rel}: {e}"))?;
        }
    }
    if let Some(target) = &b.symlink {
        actions += 1;
        if path.is_dir() && !path.is_symlink() {
            std::fs::remove_dir_all(&path).map_err(|e| e.to_string())?;
        } else {
            let _ = std::fs::remove_file(&path);
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::os::unix::fs::symlink(subst(target, outside), &path).map_err(|e| e.to_string())?;
    }
    if let Some(mode) = b.chmod {
        actions += 1;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| e.to_string())?;
        chmods.push(path.clone());
    }
    if actions != 1 {
        return Err(format!(
            "a break of {rel} needs exactly one action, got {actions}"
        ));
    }
    Ok(())
}

fn lookup<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = v;
    for p in path.split('.') {
        cur = match (p.parse::<usize>(), cur) {
            (Ok(i), Value::Array(a)) => a.get(i)?,
            (_, Value::Object(m)) => m.get(p)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn check_json(
    what: &str,
    doc: &Value,
    checks: &BTreeMap<String, Matcher>,
    problems: &mut Vec<String>,
) {
    for (path, m) in checks {
        let got = lookup(doc, path);
        let ok = match m {
            Matcher::Literal(expected) => got == Some(&yaml_to_json(expected)),
            Matcher::Rule(r) => {
                let text = got.map(|g| {
                    g.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| g.to_string())
                });
                r.contains
                    .as_ref()
                    .is_none_or(|c| text.as_deref().is_some_and(|t| t.contains(c.as_str())))
                    && r.not_null
                        .is_none_or(|want| want == got.is_some_and(|g| !g.is_null()))
                    && r.absent.is_none_or(|want| want == got.is_none())
                    && r.len
                        .is_none_or(|n| got.and_then(Value::as_array).is_some_and(|a| a.len() == n))
            }
        };
        if !ok {
            problems.push(format!(
                "{what}: `{path}` is {} but expected {m:?}",
                got.map(Value::to_string).unwrap_or("absent".into())
            ));
        }
    }
}

/// True when the current user cannot read a file with mode 000 (not root).
fn permissions_apply(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    static CACHE: OnceLock<bool> = OnceLock::new();
    *CACHE.get_or_init(|| {
        let probe = dir.join(".perm-probe");
        std::fs::write(&probe, "x").expect("probe");
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o0)).expect("chmod");
        let readable = std::fs::read(&probe).is_ok();
        let _ = std::fs::remove_file(&probe);
        !readable
    })
}

/// The outcome of one case.
struct Outcome {
    name: String,
    file: PathBuf,
    problems: Vec<String>,
    /// Problems of a `known_bug` case (not enforced).
    known: Option<(String, Vec<String>)>,
    skipped: Option<String>,
    elapsed: Duration,
}

fn run_case(loaded: &Loaded, cache: &BaseCache) -> Outcome {
    let case = &loaded.case;
    let started = Instant::now();
    let mut problems = Vec::new();
    let mut skipped = None;
    let project_dir = tempfile::tempdir().expect("tempdir");
    let outside_dir = tempfile::tempdir().expect("tempdir");
    let project = project_dir.path();
    let outside = outside_dir.path();
    std::fs::write(outside.join("outside.txt"), "outside the project\n").expect("outside");
    copy_tree(&base(cache, &case.setup), project);
    if case.setup.machine_copy {
        copy_tree(
            &common::repo().join("machine"),
            &project.join("machine-copy"),
        );
    }
    if let Some(files) = &loaded.files_dir {
        copy_tree(files, project);
    }
    let mut chmods = Vec::new();
    for b in &case.breaks {
        if let Err(e) = apply_break(project, outside, b, &mut chmods) {
            panic!("{}: broken case: {e}", loaded.file.display());
        }
    }
    if !chmods.is_empty() && !permissions_apply(outside) {
        skipped =
            Some("running as root: file permissions do not make files unreadable".to_string());
    }
    let before = snapshot(project);
    let outside_before = snapshot(outside);
    let args: Vec<String> = case.run.iter().map(|a| subst(a, outside)).collect();
    let timeout = Duration::from_secs(case.expect.timeout_seconds.unwrap_or(30));
    let (code, stdout, stderr, elapsed, hung) = run_bin(project, &args, timeout, case.close_stderr);
    let after = snapshot(project);
    let outside_after = snapshot(outside);
    for path in &chmods {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
    }

    // Never enforced away: no panic, no hang.
    let mut fatal = Vec::new();
    if hung {
        fatal.push(format!("hung: killed after {}s", timeout.as_secs()));
    }
    if code == Some(101) || stderr.contains("panicked") {
        fatal.push(format!("panicked (exit {code:?}): {}", stderr.trim()));
    }

    let e = &case.expect;
    if code != Some(e.exit_code) {
        problems.push(format!("exit code {code:?}, expected {}", e.exit_code));
    }
    for s in &e.stdout_contains {
        if !stdout.contains(s.as_str()) {
            problems.push(format!("stdout lacks {s:?}"));
        }
    }
    for s in &e.stdout_not_contains {
        if stdout.contains(s.as_str()) {
            problems.push(format!("stdout contains {s:?}"));
        }
    }
    for s in &e.stderr_contains {
        if !stderr.contains(s.as_str()) {
            problems.push(format!("stderr lacks {s:?}"));
        }
    }
    for s in &e.output_contains {
        if !stdout.contains(s.as_str()) && !stderr.contains(s.as_str()) {
            problems.push(format!("neither stdout nor stderr contains {s:?}"));
        }
    }
    if !e.stdout_json.is_empty() {
        match serde_json::from_str::<Value>(&stdout) {
            Ok(doc) => check_json("stdout", &doc, &e.stdout_json, &mut problems),
            Err(err) => problems.push(format!("stdout is not JSON ({err})")),
        }
    }
    for (file, checks) in &e.file_json {
        match std::fs::read_to_string(project.join(file))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        {
            Some(doc) => check_json(file, &doc, checks, &mut problems),
            None => problems.push(format!("{file} is missing or not JSON")),
        }
    }
    for (file, needles) in &e.file_contains {
        let text = std::fs::read_to_string(project.join(file)).unwrap_or_default();
        for n in needles {
            if !text.contains(n.as_str()) {
                problems.push(format!("{file} lacks {n:?}"));
            }
        }
    }
    for file in &e.absent {
        if project.join(file).symlink_metadata().is_ok() {
            problems.push(format!("{file} exists"));
        }
    }
    let guarded: Vec<&String> = match &e.unchanged {
        Unchanged::Nothing => vec![],
        Unchanged::Keyword(k) if k == "all" => before.keys().collect(),
        Unchanged::Keyword(k) => panic!(
            "{}: unchanged: {k:?} (use all, a list or all_except)",
            loaded.file.display()
        ),
        Unchanged::Paths(paths) => {
            for p in paths {
                if !before.contains_key(p) {
                    panic!(
                        "{}: unchanged path {p} does not exist before the run",
                        loaded.file.display()
                    );
                }
            }
            before.keys().filter(|k| paths.contains(k)).collect()
        }
        Unchanged::AllExcept { all_except } => before
            .keys()
            .filter(|k| !all_except.iter().any(|g| glob(g, k)))
            .collect(),
    };
    // The project lock is the step's own file; its content is the holder's pid.
    for path in guarded
        .into_iter()
        .filter(|p| p.as_str() != ".ml-metaopt/lock")
    {
        match (before.get(path), after.get(path)) {
            (Some(b), Some(a)) if a == b => {}
            (_, None) => problems.push(format!("{path} was removed")),
            _ => problems.push(format!("{path} changed")),
        }
    }
    if outside_before != outside_after {
        problems.push(format!(
            "files outside the project changed: {outside_after:?}"
        ));
    }
    if skipped.is_some() {
        problems.clear();
    }
    let context = if problems.is_empty() && fatal.is_empty() {
        vec![]
    } else {
        vec![format!(
            "metaopt {} → exit {code:?} in {:.1}s\n      stdout: {}\n      stderr: {}",
            args.join(" "),
            elapsed.as_secs_f64(),
            stdout
                .chars()
                .take(1500)
                .collect::<String>()
                .replace('\n', "\n              "),
            stderr
                .chars()
                .take(1500)
                .collect::<String>()
                .replace('\n', "\n              ")
        )]
    };
    let known = case
        .known_bug
        .as_ref()
        .map(|b| (b.clone(), std::mem::take(&mut problems)));
    problems.extend(fatal);
    if !problems.is_empty() {
        problems.extend(context);
    }
    let _ = &case.description;
    Outcome {
        name: case.name.clone(),
        file: loaded.file.clone(),
        problems,
        known,
        skipped,
        elapsed: started.elapsed(),
    }
}

#[test]
fn every_bad_input_case_holds() {
    let cases = load_cases();
    assert!(
        cases.len() >= 80,
        "the corpus holds {} cases, fewer than 80",
        cases.len()
    );
    let mut names = std::collections::HashSet::new();
    for c in &cases {
        assert!(
            names.insert(c.case.name.clone()),
            "duplicate case name {}",
            c.case.name
        );
    }
    let started = Instant::now();
    let cache: BaseCache = Mutex::new(HashMap::new());
    let next = Mutex::new(0usize);
    let outcomes = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism()
        .map_or(4, |n| n.get())
        .clamp(4, 12);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().expect("queue");
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(case) = cases.get(i) else { break };
                    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        run_case(case, &cache)
                    }))
                    .unwrap_or_else(|panic| Outcome {
                        name: case.case.name.clone(),
                        file: case.file.clone(),
                        problems: vec![format!(
                            "the case itself is broken: {}",
                            panic
                                .downcast_ref::<String>()
                                .cloned()
                                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                                .unwrap_or_default()
                        )],
                        known: None,
                        skipped: None,
                        elapsed: Duration::ZERO,
                    });
                    outcomes.lock().expect("outcomes").push(outcome);
                }
            });
        }
    });
    let mut outcomes = outcomes.into_inner().expect("outcomes");
    outcomes.sort_by(|a, b| a.name.cmp(&b.name));
    let mut report = Vec::new();
    for o in &outcomes {
        if let Some((bug, problems)) = &o.known {
            let status = if problems.is_empty() {
                "now passes: remove known_bug"
            } else {
                "still fails"
            };
            eprintln!("known bug  {} ({status}): {bug}", o.name);
        }
        if let Some(why) = &o.skipped {
            eprintln!("skipped    {}: {why} (ran for panics only)", o.name);
        }
        if !o.problems.is_empty() {
            report.push(format!(
                "{} ({}):\n    {}",
                o.name,
                o.file.display(),
                o.problems.join("\n    ")
            ));
        }
    }
    let slowest = outcomes
        .iter()
        .max_by_key(|o| o.elapsed)
        .map(|o| format!("{} {:.1}s", o.name, o.elapsed.as_secs_f64()));
    eprintln!(
        "{} bad-input cases in {:.1}s on {workers} threads (slowest: {})",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        slowest.unwrap_or_default()
    );
    assert!(
        report.is_empty(),
        "{} of {} bad-input cases failed:\n{}",
        report.len(),
        outcomes.len(),
        report.join("\n")
    );
}
