//! Parsed documents, kept for the rest of the process. A step reads the same
//! large state file up to four times (the step itself, the campaign check,
//! the orchestrator gate, the governing phase); parsing, converting and
//! schema-checking a 10 MB state costs about 0.2 s each time. Files under
//! [`MIN_BYTES`] are not kept (they are cheap to read again). An entry is
//! used only while the file is unchanged: its key is the path plus the
//! file's device, inode, size and modification time, and every write of this
//! program replaces the file by rename (a new inode). The cache holds a few
//! entries (a `metaopt run` loop reads a new state each step).

use crate::engine::sandbox::to_dynamic;
use rhai::Dynamic;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Files smaller than this are parsed on every read.
pub const MIN_BYTES: u64 = 256 * 1024;
/// Entries kept; the oldest is dropped first.
const ENTRIES: usize = 4;

/// A parsed document and what was derived from it.
#[derive(Debug)]
pub struct Doc {
    /// The document.
    pub value: Value,
    /// Its script value, converted on first use.
    converted: RefCell<Option<Dynamic>>,
    /// Schema name → issues found.
    issues: RefCell<HashMap<String, Vec<String>>>,
}

impl Doc {
    /// A document not (yet) derived from.
    pub fn new(value: Value) -> Self {
        Self {
            value,
            converted: RefCell::new(None),
            issues: RefCell::new(HashMap::new()),
        }
    }

    /// The script value (a copy of the one kept).
    pub fn converted(&self) -> Dynamic {
        self.converted
            .borrow_mut()
            .get_or_insert_with(|| to_dynamic(&self.value))
            .clone()
    }

    /// The script value, without a copy when nobody else holds the document.
    pub fn into_converted(self: Rc<Self>) -> Dynamic {
        match Rc::try_unwrap(self) {
            Ok(doc) => doc
                .converted
                .into_inner()
                .unwrap_or_else(|| to_dynamic(&doc.value)),
            Err(shared) => shared.converted(),
        }
    }

    /// The issues `check` finds for `schema`, computed once per schema.
    pub fn issues(
        &self,
        schema: &str,
        check: impl FnOnce(&Value) -> Result<Vec<String>, String>,
    ) -> Result<Vec<String>, String> {
        if let Some(found) = self.issues.borrow().get(schema) {
            return Ok(found.clone());
        }
        let found = check(&self.value)?;
        self.issues
            .borrow_mut()
            .insert(schema.to_string(), found.clone());
        Ok(found)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    path: String,
    yaml: bool,
    dev: u64,
    ino: u64,
    len: u64,
    modified: Option<std::time::SystemTime>,
}

/// Kept documents, oldest first.
type Entries = RefCell<Vec<(Key, Rc<Doc>)>>;

thread_local! {
    // Never dropped: at process exit the kernel frees it faster than a destructor.
    static CACHE: std::mem::ManuallyDrop<Entries> =
        const { std::mem::ManuallyDrop::new(RefCell::new(Vec::new())) };
}

fn key(path: &str, yaml: bool) -> Option<Key> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    (meta.is_file() && meta.len() >= MIN_BYTES).then(|| Key {
        path: path.to_string(),
        yaml,
        dev: meta.dev(),
        ino: meta.ino(),
        len: meta.len(),
        modified: meta.modified().ok(),
    })
}

/// The document at `path`, parsed by `parse` unless an unchanged copy is kept.
/// `Ok(None)`: an empty file (never kept). Errors are not kept either.
pub fn load<E>(
    path: &str,
    yaml: bool,
    parse: impl FnOnce() -> Result<Option<Value>, E>,
) -> Result<Option<Rc<Doc>>, E> {
    let key = key(path, yaml);
    if let Some(k) = &key
        && let Some(doc) = CACHE.with(|c| {
            c.borrow()
                .iter()
                .find(|(ek, _)| ek == k)
                .map(|(_, d)| d.clone())
        })
    {
        return Ok(Some(doc));
    }
    let Some(value) = parse()? else {
        return Ok(None);
    };
    let doc = Rc::new(Doc::new(value));
    // Keep it only if the file did not change while it was read.
    if let Some(k) = key
        && self::key(path, yaml).as_ref() == Some(&k)
    {
        CACHE.with(|c| {
            let mut c = c.borrow_mut();
            c.retain(|(ek, _)| ek.path != k.path || ek.yaml != k.yaml);
            if c.len() >= ENTRIES {
                c.remove(0);
            }
            c.push((k, doc.clone()));
        });
    }
    Ok(Some(doc))
}

/// The kept document of `path`, if one is kept and the file is unchanged.
pub fn kept(path: &str) -> Option<Rc<Doc>> {
    let k = key(path, false)?;
    CACHE.with(|c| {
        c.borrow()
            .iter()
            .find(|(ek, _)| *ek == k)
            .map(|(_, d)| d.clone())
    })
}
