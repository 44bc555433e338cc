//! Parsed documents, kept for the rest of the process. A step reads the same
//! large state file up to four times (the step itself, the campaign check,
//! the orchestrator gate, the governing phase) and `metaopt run` reads the
//! campaign file every step; parsing, converting and schema-checking a 10 MB
//! state costs about 0.2 s each time. The file is read every time and a kept
//! document is used only when the text is byte for byte the one it was parsed
//! from (compared block by block as the file is read, without copying it):
//! reading and comparing is cheap, and no file-system clock or inode reuse can
//! make a stale copy look current. The cache holds a few entries
//! (the smallest goes first: large documents are the ones worth keeping).
//! Only processes that run several phases keep documents ([`keep_documents`],
//! called by the orchestrator step): a single `metaopt agent` phase reads each
//! file once and would only hold more memory.
//!
//! A kept map is *lent* to the phase that reads it, not copied: copying and later
//! freeing a large state costs 50–100 ms per phase. Lending happens only while a phase
//! runs ([`begin_phase`]); the phase runner gives the binding back when the phase ends
//! ([`settle`]); a document whose value was not given back (it became the phase's new
//! state, or went elsewhere) is parsed again from its text when next asked for. The
//! state a step writes is kept with the text written ([`keep_written`]), so the phases
//! after it in the same step do not parse it.
//!
//! The running phase's `unread:` column lives here too ([`leave_unread`]): a document
//! parsed for a phase leaves the declared fields unread ([`load_leaving`]). A kept
//! document may hold fields unread that a later phase of the step reads (the step reads
//! its state leaving what the phase it guesses will run leaves): that phase builds
//! them in the value lent to it, and so in the kept document
//! ([`crate::engine::unread::materialize_fields`]).

use rhai::Dynamic;
use std::cell::{Cell, Ref, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Entries kept; when full, the smallest is dropped first.
const ENTRIES: usize = 8;

/// Where a document's value is.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Home {
    /// In the document.
    Here,
    /// Lent to a running phase; the address of the lent map identifies it on return.
    Lent(usize),
    /// Lent and not given back: parse the text again when asked for.
    Lost,
}

/// The file and text a document was parsed from.
#[derive(Debug)]
struct Source {
    path: String,
    /// Shared with the fields left unread in the value.
    text: Rc<String>,
    yaml: bool,
    /// The file's stamp when `text` was read from it, if the file had settled.
    stamp: Option<crate::workspace::fsio::Stamp>,
}

impl Source {
    /// Whether the file at the path still holds the text: its stamp unchanged (a
    /// `statx`), else its contents compared as they are read. A text over the read cap
    /// never does (reading the file reports it).
    fn still_current(&self) -> bool {
        use crate::workspace::fsio;
        let path = std::path::Path::new(&self.path);
        if self.text.len() as u64 > fsio::MAX_READ_BYTES {
            return false;
        }
        let unchanged = self.stamp.is_some() && fsio::stamp(path) == self.stamp;
        unchanged || fsio::holds(path, &self.text)
    }
}

/// A parsed document (as the script value the tables read) and what was derived from it.
#[derive(Debug)]
pub struct Doc {
    value: RefCell<Dynamic>,
    /// The text it was parsed from (kept documents only: they can be lent).
    source: Option<Source>,
    home: Cell<Home>,
    /// Schema name → issues found.
    issues: RefCell<HashMap<String, Vec<String>>>,
}

/// The address of the map `value` holds (stable while the value moves), if a map.
fn map_address(value: &Dynamic) -> Option<usize> {
    value
        .read_lock::<rhai::Map>()
        .map(|m| &*m as *const rhai::Map as usize)
}

impl Doc {
    /// A document built in memory (never lent).
    pub fn new(value: Dynamic) -> Self {
        Self::with_source(value, None)
    }

    fn with_source(value: Dynamic, source: Option<Source>) -> Self {
        Self {
            value: RefCell::new(value),
            source,
            home: Cell::new(Home::Here),
            issues: RefCell::new(HashMap::new()),
        }
    }

    /// The document (parsed again from its text if it was lent and not given back).
    pub fn value(&self) -> Ref<'_, Dynamic> {
        if self.home.get() != Home::Here {
            self.home.set(Home::Here);
            if let Some(src) = &self.source
                && let Ok(Some(v)) = crate::engine::sandbox::parse_text_dynamic(&src.text, src.yaml)
            {
                *self.value.borrow_mut() = v;
            }
        }
        self.value.borrow()
    }

    /// The document for a phase to own: lent (moved out, see [`settle`]) when it is a
    /// kept map and a phase is running, else moved when nobody else holds it, else copied.
    pub fn into_value(self: Rc<Self>) -> Dynamic {
        if self.source.is_some() && !self.is_lent() && LENDING.with(Cell::get) {
            drop(self.value());
            if let Ok(mut slot) = self.value.try_borrow_mut()
                && let Some(address) = map_address(&slot)
            {
                let taken = std::mem::take(&mut *slot);
                self.home.set(Home::Lent(address));
                LENT.with(|l| l.borrow_mut().push(self.clone()));
                return taken;
            }
        }
        self.unwrap_value()
    }

    /// The document, moved out when nobody else holds it, else copied (never lent).
    pub fn unwrap_value(self: Rc<Self>) -> Dynamic {
        match Rc::try_unwrap(self) {
            Ok(doc) => {
                drop(doc.value());
                doc.value.into_inner()
            }
            Err(shared) => shared.value().clone(),
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
        let found = crate::engine::sandbox::schema_issues(engine, shared, schema, &self.value())?;
        self.issues
            .borrow_mut()
            .insert(schema.to_string(), found.clone());
        Ok(found)
    }

    /// Whether this document's value is lent to a running phase.
    fn is_lent(&self) -> bool {
        matches!(self.home.get(), Home::Lent(_))
    }
}

/// Kept documents (each with its source: path and text), in the order they were parsed.
type Entries = RefCell<Vec<Rc<Doc>>>;

thread_local! {
    static KEEP: Cell<bool> = const { Cell::new(false) };
    // Never dropped: at process exit the kernel frees it faster than a destructor.
    static CACHE: std::mem::ManuallyDrop<Entries> =
        const { std::mem::ManuallyDrop::new(RefCell::new(Vec::new())) };
    /// Documents lent to the running phase.
    static LENT: RefCell<Vec<Rc<Doc>>> = const { RefCell::new(Vec::new()) };
    /// A phase is running: kept documents it reads are lent to it.
    static LENDING: Cell<bool> = const { Cell::new(false) };
    /// The running phase's `unread:` column.
    static UNREAD: RefCell<indexmap::IndexMap<String, Vec<String>>> =
        RefCell::new(indexmap::IndexMap::new());
}

/// A phase starts: until [`settle`], kept maps it reads are lent to it, not copied.
pub fn begin_phase() {
    LENDING.with(|l| l.set(true));
}

/// The fields the running phase leaves unread in documents read with each schema
/// (its `unread:` column; see [`crate::engine::unread`]).
pub fn leave_unread(unread: indexmap::IndexMap<String, Vec<String>>) {
    UNREAD.with(|u| u.replace(unread));
}

/// The fields the running phase leaves unread in a document read with `schema`.
pub fn unread_for(schema: &str) -> Option<Vec<String>> {
    UNREAD.with(|u| u.borrow().get(schema).cloned())
}

/// Chooses, from a document's text, the fields to leave unread, each with the schema
/// rule its scan builds a view for.
pub type Leave<'r> =
    dyn Fn(&str) -> Vec<(String, Option<&'r crate::machine::model::FieldRule>)> + 'r;

/// [`load`] of a JSON document, the top-level fields `unread` chooses left unread when
/// it is parsed now, each scanned against its schema rule
/// ([`crate::engine::unread::parse_json_leaving`]). A kept document may hold other
/// fields unread, or these built.
pub fn load_leaving(path: &str, unread: &Leave) -> Result<Option<Rc<Doc>>, (bool, String)> {
    load_with(path, false, Some(unread))
}

/// Whether the running phase holds a lent document (one [`settle`] must take back).
pub fn lent_any() -> bool {
    LENT.with(|l| !l.borrow().is_empty())
}

/// From now on, parsed documents are kept for the rest of the process.
pub fn keep_documents() {
    KEEP.with(|k| k.set(true));
}

/// Forgets every kept document and stops keeping: the process starts afresh (the
/// scenario runner runs each scenario as its own process would).
pub fn reset() {
    KEEP.with(|k| k.set(false));
    CACHE.with(|c| c.borrow_mut().clear());
}

/// Whether parsed documents are kept (a step).
pub fn keeping() -> bool {
    KEEP.with(Cell::get)
}

/// Ends a phase: `returned` (the phase's binding of a document it read, if it still
/// holds it unchanged) goes back to the document it was lent from; every other lent
/// document is parsed again when next asked for. In debug builds (the tests) a returned
/// value that no longer matches its text is an error: the tables changed a document
/// they read in place.
pub fn settle(returned: Option<Dynamic>) -> Result<(), String> {
    LENDING.with(|l| l.set(false));
    UNREAD.with(|u| u.borrow_mut().clear());
    let lent = LENT.with(|l| std::mem::take(&mut *l.borrow_mut()));
    let address = returned.as_ref().and_then(map_address);
    let mut returned = returned;
    let mut result = Ok(());
    for doc in lent {
        match doc.home.get() {
            Home::Lent(a) if Some(a) == address => {
                let value = returned.take().unwrap_or_default();
                if cfg!(debug_assertions) {
                    result = result.and(unchanged(&doc, &value));
                }
                *doc.value.borrow_mut() = value;
                doc.home.set(Home::Here);
            }
            Home::Lent(_) => doc.home.set(Home::Lost),
            _ => {}
        }
    }
    result
}

/// `Err` when `value`, given back to `doc`, differs from what its text parses to.
fn unchanged(doc: &Doc, value: &Dynamic) -> Result<(), String> {
    let Some(src) = &doc.source else {
        return Ok(());
    };
    match crate::engine::sandbox::parse_text_dynamic(&src.text, src.yaml) {
        Ok(Some(parsed)) if crate::engine::doc::same(&parsed, value) => Ok(()),
        _ => Err(format!(
            "{}: the phase changed the document it read in place (the state changes only \
             through set, append and new_state)",
            src.path
        )),
    }
}

/// Finds the kept document of `path` (parsed as YAML or not, as asked).
fn kept_at(path: &str, yaml: bool) -> Option<Rc<Doc>> {
    CACHE.with(|c| {
        c.borrow()
            .iter()
            .find(|d| {
                d.source
                    .as_ref()
                    .is_some_and(|s| s.path == path && s.yaml == yaml)
            })
            .cloned()
    })
}

/// Keeps `value`, made from `source`, as the document of its path (replacing the one
/// kept before); the document.
fn remember(value: Dynamic, source: Source) -> Rc<Doc> {
    let path = source.path.clone();
    let doc = Rc::new(Doc::with_source(value, Some(source)));
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        c.retain(|d| d.source.as_ref().is_none_or(|s| s.path != path));
        // Full: the smallest document goes (the cheapest to parse again). A gate that
        // reads a thousand small result files then never pushes the large state out.
        let size = |d: &Rc<Doc>| d.source.as_ref().map_or(0, |s| s.text.len());
        if c.len() >= ENTRIES
            && let Some(smallest) = (0..c.len()).min_by_key(|&i| size(&c[i]))
        {
            c.remove(smallest);
        }
        c.push(doc.clone());
    });
    doc
}

/// The document at `path` (`yaml`: parsed as YAML), parsed unless a copy parsed from the
/// same text is kept. `Ok(None)`: an empty file. Read and parse errors are
/// `(file exists, message)`, as [`crate::engine::sandbox::parse_file`] gives them.
pub fn load(path: &str, yaml: bool) -> Result<Option<Rc<Doc>>, (bool, String)> {
    load_with(path, yaml, None)
}

/// [`load`], leaving `unread` unread when the (JSON) text is parsed now.
fn load_with(
    path: &str,
    yaml: bool,
    unread: Option<&Leave>,
) -> Result<Option<Rc<Doc>>, (bool, String)> {
    // A kept document is still current when the file's stamp is the one taken when it
    // was read or written; else when the file, compared as it is read, holds its text
    // (reading a 10 MB state into a new string and comparing costs 10-15 ms). A text
    // over the read cap never holds: reading the file reports it.
    if let Some(doc) = kept_at(path, yaml)
        && let Some(src) = &doc.source
        && src.still_current()
    {
        if !doc.is_lent() {
            return Ok(Some(doc));
        }
        // Lent to the running phase already (a second read): a copy of its own.
        return Ok(crate::engine::sandbox::parse_text_dynamic(&src.text, yaml)?
            .map(|value| Rc::new(Doc::new(value))));
    }
    let (text, stamp) = crate::engine::sandbox::read_file_stamped(path)?;
    let text = Rc::new(text);
    let chosen = unread.map(|pick| pick(&text)).unwrap_or_default();
    let parsed = if chosen.is_empty() {
        crate::engine::sandbox::parse_text_dynamic(&text, yaml)?
    } else if text.trim().is_empty() {
        None
    } else {
        let leave: Vec<_> = chosen.iter().map(|(f, rule)| (f.as_str(), *rule)).collect();
        let value = crate::engine::unread::parse_json_leaving(&text, &leave)
            .map_err(|e| crate::engine::sandbox::json_error(&text, &e))?;
        Some(value)
    };
    let Some(value) = parsed else {
        return Ok(None);
    };
    if !keeping() {
        return Ok(Some(Rc::new(Doc::new(value))));
    }
    let source = Source {
        path: path.to_string(),
        text,
        yaml,
        stamp,
    };
    Ok(Some(remember(value, source)))
}

/// Keeps `value` as the document of the JSON file at `path`, which was just written
/// as `printed` (a step's new state: the next phase reads it without parsing it). A
/// value the text does not give back as it is (a non-finite number prints as `null`)
/// is replaced by the text's parse. Returns the document.
pub fn keep_written(path: &str, printed: crate::engine::doc::Printed, value: Dynamic) -> Rc<Doc> {
    if !keeping() {
        return Rc::new(Doc::new(value));
    }
    let text = printed.text;
    let value = if printed.faithful {
        value
    } else {
        match crate::engine::sandbox::parse_text_dynamic(&text, false) {
            Ok(Some(parsed)) => parsed,
            _ => return Rc::new(Doc::new(value)),
        }
    };
    let source = Source {
        path: path.to_string(),
        text: Rc::new(text),
        yaml: false,
        // Written a moment ago: no stamp can be trusted yet (see `fsio::Stamp`).
        stamp: None,
    };
    remember(value, source)
}

/// The listed top-level fields of the JSON document at `path` (a document that is not a
/// map: whole). While documents are kept (a step) the whole document is parsed and kept,
/// for the phases that read it next; otherwise only the fields are built.
/// `Ok(None)`: an empty file; errors as [`load`] gives them.
pub fn load_fields(path: &str, fields: &[&str]) -> Result<Option<Dynamic>, (bool, String)> {
    if keeping() {
        let fields: Vec<String> = fields.iter().map(|f| f.to_string()).collect();
        return Ok(load(path, false)?
            .map(|doc| crate::engine::doc::view_read(&doc.value(), Some(&fields))));
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
        assert_eq!(crate::engine::doc::to_json(&changed.value())["n"], 2);
        std::fs::write(path, "  ").unwrap();
        assert!(load(path_text, false).unwrap().is_none(), "an empty file");
        std::fs::remove_file(path).unwrap();
        assert!(!load(path_text, false).unwrap_err().0, "missing");
    }

    #[test]
    fn a_settled_document_is_checked_by_its_stamp_and_a_rewrite_is_still_seen() {
        keep_documents();
        let dir = tempfile::tempdir().expect("temporary directory");
        let path_text = &file(&dir, "doc.json", r#"{"n": 1}"#);
        std::thread::sleep(crate::workspace::fsio::SETTLED * 2);
        let first = load(path_text, false).unwrap().unwrap();
        assert!(first.source.as_ref().unwrap().stamp.is_some(), "stamped");
        let again = load(path_text, false).unwrap().unwrap();
        assert!(
            Rc::ptr_eq(&first, &again),
            "unchanged stamp: the kept document"
        );
        // The same length at once (in the same tick of a coarse clock, perhaps).
        let written = std::time::Instant::now();
        std::fs::write(path_text, r#"{"n": 2}"#).unwrap();
        let changed = load(path_text, false).unwrap().unwrap();
        assert!(!Rc::ptr_eq(&first, &changed));
        assert_eq!(crate::engine::doc::to_json(&changed.value())["n"], 2);
        assert!(
            written.elapsed() >= crate::workspace::fsio::SETTLED
                || changed.source.as_ref().unwrap().stamp.is_none(),
            "not settled"
        );
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

    #[test]
    fn a_lent_document_comes_back_or_is_parsed_again() {
        keep_documents();
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = &file(&dir, "state.json", r#"{"n": 1, "list": [1, 2]}"#);
        let doc = load(path, false).unwrap().unwrap();
        // Outside a phase (dispatch, directives) a read is a copy.
        let copy = doc.clone().into_value();
        assert!(!doc.is_lent());
        assert_ne!(map_address(&copy), map_address(&doc.value()));
        begin_phase();
        let lent = doc.clone().into_value();
        let address = map_address(&lent);
        assert!(doc.is_lent(), "a kept map is lent, not copied");
        // A second read while lent is a copy of its own, not the lent value.
        let copy = load(path, false).unwrap().unwrap().into_value();
        assert_ne!(map_address(&copy), address);
        assert_eq!(crate::engine::doc::to_json(&copy)["n"], 1);
        settle(Some(lent)).unwrap();
        assert_eq!(map_address(&doc.value()), address, "given back, not parsed");
        // Lent again and not given back (it became a new state): parsed from the text.
        begin_phase();
        let mut gone = doc.clone().into_value();
        gone.write_lock::<rhai::Map>()
            .unwrap()
            .insert("n".into(), 2.into());
        settle(None).unwrap();
        assert_eq!(crate::engine::doc::to_json(&doc.value())["n"], 1);
    }

    #[test]
    fn a_document_changed_in_place_is_refused_in_debug_builds() {
        keep_documents();
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = &file(&dir, "state.json", r#"{"n": 1}"#);
        let doc = load(path, false).unwrap().unwrap();
        begin_phase();
        let mut lent = doc.clone().into_value();
        lent.write_lock::<rhai::Map>()
            .unwrap()
            .insert("n".into(), 2.into());
        let settled = settle(Some(lent));
        if cfg!(debug_assertions) {
            let e = settled.unwrap_err();
            assert!(e.contains("in place") && e.contains(path.as_str()), "{e}");
        }
    }

    #[test]
    fn a_written_document_is_kept_for_its_text() {
        keep_documents();
        let dir = tempfile::tempdir().expect("temporary directory");
        let text = "{\n  \"n\": 3\n}\n";
        let path = &file(&dir, "state.json", text);
        let value = crate::engine::doc::parse_json(text).unwrap();
        let printed = crate::engine::doc::print_pretty(&value).unwrap();
        assert_eq!(printed.text, text);
        let written = keep_written(path, printed, value);
        let read = load(path, false).unwrap().unwrap();
        assert!(Rc::ptr_eq(&written, &read), "read back without parsing");
        std::fs::write(path, "{\"n\": 4}").unwrap();
        let changed = load(path, false).unwrap().unwrap();
        assert!(!Rc::ptr_eq(&written, &changed));
    }

    #[test]
    fn a_kept_text_over_the_read_cap_is_refused_as_the_file_would_be() {
        keep_documents();
        let dir = tempfile::tempdir().expect("temporary directory");
        let cap = crate::workspace::fsio::MAX_READ_BYTES as usize;
        let text = format!("{{\"pad\": \"{}\"}}\n", "x".repeat(cap));
        let path = &file(&dir, "state.json", &text);
        let printed = crate::engine::doc::Printed {
            text,
            faithful: true,
        };
        keep_written(path, printed, Dynamic::UNIT);
        let err = load(path, false).expect_err("over the cap");
        assert!(err.1.contains("over the"), "{}", err.1);
    }

    #[test]
    fn a_written_value_the_text_does_not_give_back_is_read_from_the_text() {
        keep_documents();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut value = crate::engine::doc::parse_json(r#"{"x": 1.5}"#).unwrap();
        value
            .write_lock::<rhai::Map>()
            .unwrap()
            .insert("x".into(), f64::NAN.into());
        assert!(!crate::engine::doc::round_trips(&value));
        let printed = crate::engine::doc::print_pretty(&value).unwrap();
        assert!(!printed.faithful);
        let path = &file(&dir, "state.json", &printed.text);
        let kept = keep_written(path, printed, value);
        assert!(kept.value().read_lock::<rhai::Map>().unwrap()["x"].is_unit());
        let plain = crate::engine::doc::parse_json(r#"{"x": [1, "s", null, true, 2.5]}"#).unwrap();
        assert!(crate::engine::doc::round_trips(&plain));
    }
}
