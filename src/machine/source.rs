//! Where table files come from: the copy embedded in the binary at build
//! time, or a directory given at run time (`--machine DIR` /
//! `METAOPT_MACHINE`) so that an edited table takes effect without a build.

use include_dir::{Dir, include_dir};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

static EMBEDDED: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/machine");
/// The same YAML tables converted to JSON by `build.rs` (faster to parse).
static EMBEDDED_JSON: Dir<'static> = include_dir!("$OUT_DIR/machine-json");

/// Table files by path relative to the machine root.
#[derive(Debug, Clone)]
pub struct TableSource {
    /// Directory the tables were read from (`None` = embedded).
    pub root: Option<PathBuf>,
    files: BTreeMap<String, Cow<'static, str>>,
    /// JSON renderings of YAML tables (embedded tables only), by YAML path.
    json: BTreeMap<String, &'static str>,
}

/// Table texts by path relative to the machine root (embedded ones are borrowed from
/// the binary, not copied).
pub type TableFiles = BTreeMap<String, Cow<'static, str>>;

impl TableSource {
    /// The tables embedded in the binary.
    pub fn embedded() -> Self {
        let mut files = BTreeMap::new();
        fn walk(dir: &Dir<'static>, files: &mut BTreeMap<String, &'static str>) {
            for f in dir.files() {
                if let Some(text) = f.contents_utf8() {
                    files.insert(f.path().to_string_lossy().replace('\\', "/"), text);
                }
            }
            for d in dir.dirs() {
                walk(d, files);
            }
        }
        walk(&EMBEDDED, &mut files);
        let files: TableFiles = files
            .into_iter()
            .map(|(k, v)| (k, Cow::Borrowed(v)))
            .collect();
        let mut converted = BTreeMap::new();
        walk(&EMBEDDED_JSON, &mut converted);
        let json = converted
            .into_iter()
            .filter_map(|(k, v)| {
                k.strip_suffix(".json")
                    .map(|stem| (format!("{stem}.yaml"), v))
            })
            .filter(|(k, _)| files.contains_key(k))
            .collect();
        Self {
            root: None,
            files,
            json,
        }
    }

    /// Every `.yaml`, `.rhai` and `.md` file under `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self, String> {
        if !dir.is_dir() {
            return Err(format!("{}: machine directory not found", dir.display()));
        }
        let mut files = BTreeMap::new();
        fn walk(
            root: &Path,
            dir: &Path,
            files: &mut BTreeMap<String, String>,
        ) -> Result<(), String> {
            let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    walk(root, &path, files)?;
                } else if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "rhai" | "md")
                ) {
                    let rel = path
                        .strip_prefix(root)
                        .unwrap_or(&path)
                        .to_string_lossy()
                        .replace('\\', "/");
                    let text = crate::workspace::fsio::read_text_capped(&path)
                        .map_err(|e| format!("{}: unreadable table file: {e:?}", path.display()))?;
                    files.insert(rel, text);
                }
            }
            Ok(())
        }
        walk(dir, dir, &mut files)?;
        Ok(Self::from_files(Some(dir.to_path_buf()), files))
    }

    /// Tables from an in-memory file map.
    pub fn from_files(root: Option<PathBuf>, files: BTreeMap<String, String>) -> Self {
        Self {
            root,
            files: files.into_iter().map(|(k, v)| (k, Cow::Owned(v))).collect(),
            json: BTreeMap::new(),
        }
    }

    /// The JSON rendering of a YAML table, when one was made at build time.
    pub fn json(&self, rel: &str) -> Option<&'static str> {
        self.json.get(rel).copied()
    }

    /// Text of a table file.
    pub fn get(&self, rel: &str) -> Option<&str> {
        self.files.get(rel).map(|t| t.as_ref())
    }

    /// Files under `prefix` ending in `suffix`, sorted.
    pub fn files_in(&self, prefix: &str, suffix: &str) -> Vec<String> {
        self.files
            .keys()
            .filter(|k| k.starts_with(prefix) && k.ends_with(suffix))
            .cloned()
            .collect()
    }

    /// These tables with the file `rel` replaced by (or added as) `text` (tests,
    /// mutation testing); the other texts are shared, not copied.
    pub fn with_file(&self, rel: &str, text: String) -> Self {
        let mut files = self.files.clone();
        files.insert(rel.to_string(), Cow::Owned(text));
        let mut json = self.json.clone();
        json.remove(rel);
        Self {
            root: self.root.clone(),
            files,
            json,
        }
    }

    /// All files, sorted by path.
    pub fn files(&self) -> &TableFiles {
        &self.files
    }

    /// The path to show in messages for a table file.
    pub fn display(&self, rel: &str) -> String {
        match &self.root {
            Some(root) => root.join(rel).display().to_string(),
            None => format!("machine/{rel}"),
        }
    }

    /// `sha256:` over every file path and content.
    pub fn hash(&self) -> String {
        let mut all = String::new();
        for (k, v) in &self.files {
            all.push_str(k);
            all.push('\0');
            all.push_str(v);
            all.push('\0');
        }
        crate::contract::canonical::sha256_tagged(&all)
    }
}
