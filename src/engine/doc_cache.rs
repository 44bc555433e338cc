//! Parsed documents, kept for the rest of the process. A step reads the same
//! large state file up to four times (the step itself, the campaign check,
//! the orchestrator gate, the governing phase) and `metaopt run` reads the
//! campaign file every step; parsing, converting and schema-checking a 10 MB
//! state costs about 0.2 s each time. The file is read every time and a kept
//! document is used only when the text is byte for byte the one it was parsed
//! from: reading and comparing is cheap, and no file-system clock or inode
//! reuse can make a stale copy look current. The cache holds a few entries
//! (the smallest goes first: large documents are the ones worth keeping).
//! Only processes that run several phases keep documents ([`keep_documents`],
//! called by the orchestrator step): a single `metaopt agent` phase reads each
//! file once and would only hold more memory.

use rhai::Dynamic;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Entries kept; when full, the smallest is dropped first.
const ENTRIES: usize = 8;

/// A parsed document (as the script value the tables read) and what was derived from it.
#[derive(Debug)]
pub struct Doc {
    /// The document.
    pub value: Dynamic,
    /// Schema name → issues found.
    issues: RefCell<HashMap<String, Vec<String>>>,
}

impl Doc {
    /// A document not (yet) derived from.
    pub fn new(value: Dynamic) -> Self {
        Self {
            value,
            issues: RefCell::new(HashMap::new()),
        }
    }

    /// The document, without a copy when nobody else holds it.
    pub fn into_value(self: Rc<Self>) -> Dynamic {
        match Rc::try_unwrap(self) {
            Ok(doc) => doc.value,
            Err(shared) => shared.value.clone(),
        }
    }

    /// The issues of the document against `schema` (structure and cross checks),
    /// computed once per schema.
    pub fn issues(
        &self,
        engine: &rhai::Engine,
        shared: &crate::engine::sandbox::SharedTables,
        schema: &str,
    ) -> Result<Vec<String>, String> {
        if let Some(found) = self.issues.borrow().get(schema) {
            return Ok(found.clone());
        }
        let found = crate::engine::sandbox::schema_issues(engine, shared, schema, &self.value)?;
        self.issues
            .borrow_mut()
            .insert(schema.to_string(), found.clone());
        Ok(found)
    }
}

/// What a kept document was parsed from.
#[derive(Debug)]
struct Key {
    path: String,
    yaml: bool,
    text: String,
}

/// Kept documents, in the order they were parsed.
type Entries = RefCell<Vec<(Key, Rc<Doc>)>>;

thread_local! {
    static KEEP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    // Never dropped: at process exit the kernel frees it faster than a destructor.
    static CACHE: std::mem::ManuallyDrop<Entries> =
        const { std::mem::ManuallyDrop::new(RefCell::new(Vec::new())) };
}

/// From now on, parsed documents are kept for the rest of the process.
pub fn keep_documents() {
    KEEP.with(|k| k.set(true));
}

/// The document at `path` (`yaml`: parsed as YAML), parsed unless a copy parsed from the
/// same text is kept. `Ok(None)`: an empty file. Read and parse errors are
/// `(file exists, message)`, as [`crate::engine::sandbox::parse_file`] gives them.
pub fn load(path: &str, yaml: bool) -> Result<Option<Rc<Doc>>, (bool, String)> {
    let text = crate::engine::sandbox::read_file(path)?;
    let kept = CACHE.with(|c| {
        c.borrow()
            .iter()
            .find(|(k, _)| k.yaml == yaml && k.path == path && k.text == text)
            .map(|(_, d)| d.clone())
    });
    if let Some(doc) = kept {
        return Ok(Some(doc));
    }
    let Some(value) = crate::engine::sandbox::parse_text_dynamic(&text, yaml)? else {
        return Ok(None);
    };
    let doc = Rc::new(Doc::new(value));
    if !KEEP.with(std::cell::Cell::get) {
        return Ok(Some(doc));
    }
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|(k, _)| k.path != path || k.yaml != yaml);
        // Full: the smallest document goes (the cheapest to parse again). A gate that
        // reads a thousand small result files then never pushes the large state out.
        if c.len() >= ENTRIES
            && let Some(smallest) = (0..c.len()).min_by_key(|&i| c[i].0.text.len())
        {
            c.remove(smallest);
        }
        let key = Key {
            path: path.to_string(),
            yaml,
            text,
        };
        c.push((key, doc.clone()));
    });
    Ok(Some(doc))
}

/// The listed top-level fields of the JSON document at `path` (a document that is not a
/// map: whole). While documents are kept (a step) the whole document is parsed and kept,
/// for the phases that read it next; otherwise only the fields are built.
/// `Ok(None)`: an empty file; errors as [`load`] gives them.
pub fn load_fields(path: &str, fields: &[&str]) -> Result<Option<Dynamic>, (bool, String)> {
    if KEEP.with(std::cell::Cell::get) {
        return Ok(load(path, false)?
            .map(|doc| crate::engine::doc::project(&doc.value, fields.iter().copied())));
    }
    let text = crate::engine::sandbox::read_file(path)?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    crate::engine::doc::parse_json_fields(&text, fields)
        .map(Some)
        .map_err(|e| crate::engine::sandbox::json_error(&text, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `text` to `dir/name`; its path as text.
    fn file(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().expect("utf-8 path").to_string()
    }

    #[test]
    fn a_kept_document_is_used_only_for_the_same_text() {
        keep_documents();
        let dir = tempfile::tempdir().expect("temporary directory");
        let path_text = &file(&dir, "doc.json", r#"{"n": 1}"#);
        let path = std::path::Path::new(path_text);
        let first = load(path_text, false).unwrap().unwrap();
        let again = load(path_text, false).unwrap().unwrap();
        assert!(Rc::ptr_eq(&first, &again), "same text: the kept document");
        // Same size, same path, other content: parsed anew, whatever the file clock says.
        std::fs::write(path, r#"{"n": 2}"#).unwrap();
        let changed = load(path_text, false).unwrap().unwrap();
        assert!(!Rc::ptr_eq(&first, &changed));
        assert_eq!(crate::engine::doc::to_json(&changed.value)["n"], 2);
        std::fs::write(path, "  ").unwrap();
        assert!(load(path_text, false).unwrap().is_none(), "an empty file");
        std::fs::remove_file(path).unwrap();
        assert!(!load(path_text, false).unwrap_err().0, "missing");
    }

    #[test]
    fn a_full_cache_drops_its_smallest_document_first() {
        keep_documents();
        let dir = tempfile::tempdir().expect("temporary directory");
        let big_text = &file(
            &dir,
            "big.json",
            &format!(r#"{{"pad": "{}"}}"#, "x".repeat(10_000)),
        );
        let first = load(big_text, false).unwrap().unwrap();
        // Many more small documents than the cache holds.
        for i in 0..3 * ENTRIES {
            let small = file(&dir, &format!("r{i}.json"), &format!(r#"{{"n": {i}}}"#));
            load(&small, false).unwrap().unwrap();
        }
        let again = load(big_text, false).unwrap().unwrap();
        assert!(
            Rc::ptr_eq(&first, &again),
            "the large document is still kept"
        );
    }
}
