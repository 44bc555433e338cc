//! The rhai sandbox guards and effects run in, and the small library of
//! domain-free primitives the tables call (read a file, list results, check a
//! schema, hash canonical JSON, find the highest number used). Guards are
//! compiled once, against the names in scope, with strict variables: an
//! unknown name is a load-time error, a runaway guard a bounded run-time one.

use crate::contract::canonical;
use crate::engine::schema::CompiledSchema;
use crate::machine::model::StateKind;
use crate::workspace::fsio::{self, ReadFailure};
use rhai::{AST, Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext, Position, Scope};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::HashMap;
use std::path::Path;
use std::rc::Rc;

/// Limits of the guard sandbox; documented in `references/table-format.md`.
pub mod limits {
    /// Operations one binding or effect evaluation may perform.
    pub const MAX_OPERATIONS: u64 = 20_000_000;
    /// Operations one guard evaluation may perform.
    pub const GUARD_OPERATIONS: u64 = 500_000;
    /// Nested function calls.
    pub const MAX_CALL_LEVELS: usize = 32;
    /// Expression nesting depth (global, inside functions).
    pub const MAX_EXPR_DEPTH: (usize, usize) = (64, 32);
}

/// Data the primitives consult: state statuses and schemas.
#[derive(Debug, Default)]
pub struct SharedTables {
    /// machine state → (status, kind).
    pub states: HashMap<String, (String, StateKind)>,
    /// schema name → the schema, built on first use.
    pub schemas: HashMap<String, LazySchema>,
}

/// A schema's structural rules and cross checks, compiled.
#[derive(Debug)]
pub struct BuiltSchema {
    /// The structural rules.
    pub schema: CompiledSchema,
    /// The cross checks (`checks:`).
    pub checks: SchemaChecks,
}

/// Builds a schema (parse and compile), reporting every error.
pub type SchemaBuilder = Box<dyn Fn(&Engine) -> Result<BuiltSchema, Vec<String>>>;

/// A schema table parsed and compiled on first use: a phase reads one or two of them.
pub struct LazySchema {
    build: SchemaBuilder,
    built: std::cell::OnceCell<Result<BuiltSchema, Vec<String>>>,
}

impl std::fmt::Debug for LazySchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazySchema")
            .field("built", &self.built)
            .finish()
    }
}

impl LazySchema {
    /// A schema that `build` makes when first asked for.
    pub fn new(build: SchemaBuilder) -> Self {
        Self {
            build,
            built: std::cell::OnceCell::new(),
        }
    }

    /// The built schema, or every error building it gave.
    pub fn get(&self, engine: &Engine) -> Result<&BuiltSchema, &[String]> {
        self.built
            .get_or_init(|| (self.build)(engine))
            .as_ref()
            .map_err(Vec::as_slice)
    }
}

/// The cross checks of one schema (`checks:`), compiled.
#[derive(Debug, Default)]
pub struct SchemaChecks {
    /// `(guard, message template)` per check.
    pub checks: Vec<(AST, AST)>,
    /// The checks' sources, for [`SchemaChecks::fields`].
    sources: Vec<String>,
    /// The projection, found on first use.
    fields: std::cell::OnceCell<Option<Vec<String>>>,
}

impl SchemaChecks {
    /// The compiled checks and the sources they were compiled from.
    pub fn new(checks: Vec<(AST, AST)>, sources: &[&str]) -> Self {
        Self {
            checks,
            sources: sources.iter().map(|s| s.to_string()).collect(),
            fields: std::cell::OnceCell::new(),
        }
    }

    /// The top-level fields the checks read, when they read `value` only as
    /// `value.<field>`: the checks then see a document of just those fields (a large
    /// state is not converted whole). `None`: the checks see the whole document.
    pub fn fields(&self) -> Option<&[String]> {
        self.fields
            .get_or_init(|| {
                let sources: Vec<&str> = self.sources.iter().map(String::as_str).collect();
                projected_fields(&sources, "value")
            })
            .as_deref()
    }

    /// The document the checks see: `doc` itself, or only the fields they read.
    fn view(&self, doc: &Dynamic) -> Dynamic {
        crate::engine::doc::view(doc, self.fields())
    }
}

/// The fields read as `<name>.<field>` (or `<name>?.<field>`) in `sources`, or `None`
/// when `name` is used any other way (passed whole, indexed, a method called on it, or
/// the word appears in text): then nothing is omitted.
pub fn projected_fields(sources: &[&str], name: &str) -> Option<Vec<String>> {
    projected_fields_with(sources, name, &|_, _| None)
}

/// [`projected_fields`], where a method called on `name` reads the fields `methods`
/// gives for its name and number of arguments (`None`: it may use its `this` whole).
pub fn projected_fields_with(
    sources: &[&str],
    name: &str,
    methods: &dyn Fn(&str, usize) -> Option<Vec<String>>,
) -> Option<Vec<String>> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut fields: Vec<String> = Vec::new();
    let mut add = |field: &str| {
        if !fields.iter().any(|f| f == field) {
            fields.push(field.to_string());
        }
    };
    for src in sources {
        let mut from = 0;
        while let Some(at) = src[from..].find(name) {
            let start = from + at;
            let end = start + name.len();
            from = end;
            let before = src[..start].chars().next_back();
            let after = src[end..].chars().next();
            if before.is_some_and(is_ident) || after.is_some_and(is_ident) {
                continue; // part of a longer word
            }
            let after_name = &src[end..];
            let rest = after_name
                .strip_prefix('.')
                .or_else(|| after_name.strip_prefix("?."))?;
            let len = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
            let field = &rest[..len];
            if field.is_empty() {
                return None;
            }
            if let Some(args) = rest[len..].trim_start().strip_prefix('(') {
                methods(field, arity(args)?)?.iter().for_each(|f| add(f));
            } else {
                add(field);
            }
        }
    }
    Some(fields)
}

/// The number of arguments of a call whose text starts right after its `(`, or `None`
/// when the parentheses do not close (strings and nested brackets are skipped).
fn arity(args: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut commas = 0;
    let mut any = false;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    for c in args.chars() {
        if let Some(q) = quote {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == q {
                quote = None;
            }
            continue;
        }
        match c {
            '"' | '\'' | '`' => quote = Some(c),
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' if depth > 0 => depth -= 1,
            ')' => return Some(if any { commas + 1 } else { 0 }),
            ',' if depth == 0 => commas += 1,
            _ => {}
        }
        if !c.is_whitespace() {
            any = true;
        }
    }
    None
}

mod package {
    use rhai::def_package;
    use rhai::packages::{
        BasicArrayPackage, BasicMapPackage, BasicMathPackage, CorePackage, LogicPackage,
        MoreStringPackage,
    };

    def_package! {
        /// rhai's standard package without blobs and bit fields (JSON documents hold
        /// neither): fewer functions to register on every start.
        pub SandboxPackage(lib):
            CorePackage, LogicPackage, BasicMathPackage, BasicArrayPackage, BasicMapPackage,
            MoreStringPackage
        {}
    }
}
use package::SandboxPackage;

/// The configured rhai engine plus the script library of `machine/lib/`.
pub struct Sandbox {
    /// The sandboxed engine.
    pub engine: Engine,
    /// Functions of `machine/lib/*.rhai`, carried by the scripts that call them.
    pub library: Rc<crate::engine::library::Library>,
    /// Tables the primitives read.
    pub shared: Rc<RefCell<SharedTables>>,
    /// Operation budget of the evaluation in progress.
    budget: Rc<std::cell::Cell<u64>>,
}

impl Sandbox {
    /// Builds the sandboxed engine and registers the primitives.
    pub fn new() -> Self {
        let shared = Rc::new(RefCell::new(SharedTables::default()));
        let budget = Rc::new(std::cell::Cell::new(limits::MAX_OPERATIONS));
        // The standard library the scripts see (see `SandboxPackage`).
        let std_lib = rhai::packages::Package::as_shared_module(&SandboxPackage::new());
        // No data-size limits: with any of them on, rhai re-measures the whole root
        // value after every method call on it (a guard reading `pool.len()` would walk
        // a 10,000-proposal pool). Growth is bounded by the operation budget and the
        // read cap instead.
        let engine = configured(&budget, &shared, &std_lib);
        Self {
            engine,
            library: Default::default(),
            shared,
            budget,
        }
    }

    /// Compiles a script against the names in `scope_names`; the script carries the
    /// library functions it calls.
    pub fn compile(&self, script: &str, scope_names: &[String]) -> Result<AST, String> {
        compile_script(&self.engine, &self.library, script, scope_names)
    }

    /// Evaluates a compiled script in `scope`, leaving the scope as it was.
    pub fn eval(&self, scope: &mut Scope, ast: &AST) -> Result<Dynamic, String> {
        self.eval_with_budget(scope, ast, limits::MAX_OPERATIONS)
    }

    /// Evaluates a guard: the same engine, with the smaller guard budget.
    pub fn eval_guard(&self, scope: &mut Scope, ast: &AST) -> Result<Dynamic, String> {
        self.eval_with_budget(scope, ast, limits::GUARD_OPERATIONS)
    }

    fn eval_with_budget(
        &self,
        scope: &mut Scope,
        ast: &AST,
        budget: u64,
    ) -> Result<Dynamic, String> {
        self.budget.set(budget);
        let len = scope.len();
        let result = self.engine.eval_ast_with_scope::<Dynamic>(scope, ast);
        scope.rewind(len);
        self.budget.set(limits::MAX_OPERATIONS);
        result.map_err(|e| describe_error(&e))
    }
}

/// [`Sandbox::compile`] with an explicit engine and library (for templates compiled from
/// inside a running script).
pub fn compile_script(
    engine: &Engine,
    library: &crate::engine::library::Library,
    script: &str,
    scope_names: &[String],
) -> Result<AST, String> {
    let mut scope = Scope::new();
    for name in scope_names {
        scope.push_dynamic(name.as_str(), Dynamic::UNIT);
    }
    let mut ast = engine
        .compile_with_scope(&scope, script)
        .map_err(|e| format!("{e} (in `{}`)", one_line(script)))?;
    if let Some(lib) = library.needed_by(engine, script)? {
        ast += lib;
    }
    Ok(ast)
}

/// An engine with the sandbox settings and primitives.
fn configured(
    budget: &Rc<std::cell::Cell<u64>>,
    shared: &Rc<RefCell<SharedTables>>,
    std_lib: &rhai::Shared<rhai::Module>,
) -> Engine {
    // A raw engine plus the standard library: what `Engine::new` builds, without a file
    // module resolver (imports are disabled) and without the strings interner (which
    // costs more than it saves on scripts that run once).
    let mut engine = Engine::new_raw();
    engine.register_global_module(std_lib.clone());
    let watched = budget.clone();
    engine.on_progress(move |ops| {
        (ops > watched.get()).then(|| {
            Dynamic::from(format!(
                "exceeded the sandbox operation limit of {}",
                watched.get()
            ))
        })
    });
    // No AST optimisation: the scripts are short and most run once per process, so
    // optimising them cost more than it saved (about a tenth of a short phase).
    engine.set_optimization_level(rhai::OptimizationLevel::None);
    engine
        .set_strict_variables(true)
        .set_max_operations(limits::MAX_OPERATIONS + 1)
        .set_max_call_levels(limits::MAX_CALL_LEVELS)
        .set_max_expr_depths(limits::MAX_EXPR_DEPTH.0, limits::MAX_EXPR_DEPTH.1)
        .set_max_modules(1)
        .disable_symbol("eval")
        .disable_symbol("import")
        .disable_symbol("export");
    engine.on_print(|_| {});
    engine.on_debug(|_, _, _| {});
    register_primitives(&mut engine, shared);
    engine
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}

fn one_line(s: &str) -> String {
    let flat: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 80 {
        format!("{}…", flat.chars().take(80).collect::<String>())
    } else {
        flat
    }
}

fn describe_error(e: &EvalAltResult) -> String {
    match e.unwrap_inner() {
        EvalAltResult::ErrorTerminated(reason, _) => format!("{reason} ({})", e.position()),
        EvalAltResult::ErrorTooManyOperations(_) => {
            format!("exceeded the sandbox operation limit ({})", e.position())
        }
        _ => e.to_string(),
    }
}

/// Binds `name` to `value` in `scope`. `Scope::push_dynamic` walks the whole value to
/// mark it writable (tens of milliseconds for a large state); a new script value is
/// writable already, so it is put in place of a pushed `()` instead.
pub fn push_binding(scope: &mut Scope<'_>, name: &str, value: Dynamic) {
    scope.push_dynamic(name.to_string(), Dynamic::UNIT);
    if let Some(slot) = scope.get_mut(name) {
        *slot = value;
    }
}

/// JSON ↔ script value conversions (defined in [`crate::engine::doc`]).
pub use crate::engine::doc::{from_json as to_dynamic, to_json};

fn err(msg: impl Into<String>) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        msg.into().into(),
        Position::NONE,
    ))
}

/// `item[field]` as text, when `item` is a map holding `field`. An unread list answers
/// `join_field` through this from its scan (`Unread::join_field`), which is exact only
/// while this reads one key of a map item and prints a scalar as it is.
fn field_text(item: &Dynamic, field: &str) -> Option<String> {
    item.read_lock::<Map>()
        .and_then(|m| m.get(field).map(|v| v.to_string()))
}

/// `item[field]` when `item` is a map holding a string there.
fn field_string(item: &Dynamic, field: &str) -> Option<rhai::ImmutableString> {
    item.read_lock::<Map>()?
        .get(field)?
        .read_lock::<rhai::ImmutableString>()
        .map(|s| s.clone())
}

/// The result map every read primitive returns.
fn read_result(
    path: &str,
    outcome: Result<(Dynamic, bool), (bool, String)>,
    issues: Vec<String>,
) -> Map {
    let mut m = Map::new();
    m.insert("path".into(), path.into());
    match outcome {
        Ok((value, empty)) => {
            m.insert("exists".into(), true.into());
            m.insert("ok".into(), (issues.is_empty() && !empty).into());
            m.insert("empty".into(), empty.into());
            m.insert("value".into(), value);
            m.insert(
                "error".into(),
                issues.first().cloned().unwrap_or_default().into(),
            );
        }
        Err((exists, msg)) => {
            m.insert("exists".into(), exists.into());
            m.insert("ok".into(), false.into());
            m.insert("empty".into(), false.into());
            m.insert("value".into(), Dynamic::UNIT);
            m.insert("error".into(), msg.into());
        }
    }
    m.insert(
        "issues".into(),
        issues
            .into_iter()
            .map(Dynamic::from)
            .collect::<Array>()
            .into(),
    );
    m
}

/// Parses a file as JSON or YAML into JSON; `Ok(None)` when empty.
pub fn parse_file(path: &str, yaml: bool) -> Result<Option<Value>, (bool, String)> {
    parse_text(&read_file(path)?, yaml)
}

/// The text of `path`; `Err((exists, message))` when it cannot be read.
pub fn read_file(path: &str) -> Result<String, (bool, String)> {
    read_file_stamped(path).map(|(text, _)| text)
}

/// [`read_file`] with the file's stamp (see [`fsio::read_text_stamped`]).
pub fn read_file_stamped(path: &str) -> Result<(String, Option<fsio::Stamp>), (bool, String)> {
    match fsio::read_text_stamped(Path::new(path)) {
        Ok(read) => Ok(read),
        Err(ReadFailure::Missing) => Err((false, "file not found".into())),
        Err(ReadFailure::Unreadable(msg)) => Err((true, format!("unreadable: {msg}"))),
    }
}

/// Parses `text` as JSON or YAML into a script value; `Ok(None)` when empty. JSON is
/// parsed straight into the script value (no JSON tree in between).
pub fn parse_text_dynamic(text: &str, yaml: bool) -> Result<Option<Dynamic>, (bool, String)> {
    if yaml || text.trim().is_empty() {
        return Ok(parse_text(text, yaml)?.as_ref().map(to_dynamic));
    }
    crate::engine::doc::parse_json(text)
        .map(Some)
        .map_err(|e| json_error(text, &e))
}

/// A JSON parse error of `text` as the read primitives report it.
pub fn json_error(text: &str, e: &serde_json::Error) -> (bool, String) {
    (true, format!("invalid json: {e}{}", near(text, e)))
}

/// Parses `text` as JSON or YAML into JSON; `Ok(None)` when empty.
pub fn parse_text(text: &str, yaml: bool) -> Result<Option<Value>, (bool, String)> {
    if text.trim().is_empty() {
        return Ok(None);
    }
    if yaml {
        let doc = serde_yaml::from_str::<Value>(text)
            .map_err(|e| (true, format!("invalid yaml: {e}")))?;
        // A YAML mapping with a duplicate key is an error, not "the last one wins"
        // (deserialising straight into JSON silently keeps the last).
        let mut raw = serde_yaml::from_str::<serde_yaml::Value>(text)
            .map_err(|e| (true, format!("invalid yaml: {e}")))?;
        // JSON has no NaN or infinity: keep `.nan` / `.inf` as text so that the schema
        // reports "expected number, got string \".nan\"" instead of a silent null.
        if name_non_finite(&mut raw) {
            return serde_json::to_value(&raw)
                .map(Some)
                .map_err(|e| (true, format!("invalid yaml: {e}")));
        }
        // A document of comments only (or `~`) is as empty as a blank file.
        Ok(Some(doc).filter(|d| !d.is_null()))
    } else {
        serde_json::from_str::<Value>(text)
            .map(Some)
            .map_err(|e| (true, format!("invalid json: {e}{}", near(text, &e))))
    }
}

/// ` near `…`` : the text around a JSON syntax error, so that the message shows the field.
fn near(text: &str, e: &serde_json::Error) -> String {
    let Some(line) = e.line().checked_sub(1).and_then(|l| text.lines().nth(l)) else {
        return String::new();
    };
    let chars: Vec<char> = line.chars().collect();
    let at = e.column().min(chars.len());
    let snippet: String = chars[at.saturating_sub(40)..(at + 20).min(chars.len())]
        .iter()
        .collect();
    let snippet = snippet.trim();
    if snippet.is_empty() {
        String::new()
    } else {
        format!(" near `{snippet}`")
    }
}

/// Replaces every non-finite float of `v` by its YAML spelling; true when there was one.
fn name_non_finite(v: &mut serde_yaml::Value) -> bool {
    match v {
        serde_yaml::Value::Number(n) => {
            let text = match n.as_f64() {
                Some(f) if f.is_nan() => ".nan",
                Some(f) if f == f64::INFINITY => ".inf",
                Some(f) if f == f64::NEG_INFINITY => "-.inf",
                _ => return false,
            };
            *v = serde_yaml::Value::String(text.into());
            true
        }
        // Every item is visited (each rename is an effect): no short-circuit.
        serde_yaml::Value::Sequence(items) => {
            items.iter_mut().map(name_non_finite).filter(|c| *c).count() > 0
        }
        serde_yaml::Value::Mapping(m) => {
            m.iter_mut()
                .map(|(_, i)| name_non_finite(i))
                .filter(|c| *c)
                .count()
                > 0
        }
        serde_yaml::Value::Tagged(t) => name_non_finite(&mut t.value),
        _ => false,
    }
}

/// The tag a document gets once it was read and found valid against `schema`
/// (`Dynamic::tag`; moves and copies keep it): a change to such a document needs only
/// its changed keys checked again.
pub fn schema_tag(schema: &str) -> i32 {
    // FNV-1a, folded to a non-zero i32 (0 is every value's default tag).
    let mut h: u32 = 0x811c_9dc5;
    for b in schema.bytes() {
        h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
    }
    (h | 1) as i32
}

/// Runs the structural schema and its cross checks on `doc` (the checks see only the
/// fields they read: see [`SchemaChecks::fields`]).
pub fn schema_issues(
    engine: &Engine,
    shared: &SharedTables,
    schema: &str,
    doc: &Dynamic,
) -> Result<Vec<String>, String> {
    schema_issues_in(engine, shared, schema, doc, None)
}

/// [`schema_issues`] over the top-level fields in `only` (all when `None`); the cross
/// checks always run.
pub fn schema_issues_in(
    engine: &Engine,
    shared: &SharedTables,
    schema: &str,
    doc: &Dynamic,
    only: Option<&[String]>,
) -> Result<Vec<String>, String> {
    let built = shared
        .schemas
        .get(schema)
        .ok_or_else(|| format!("unknown schema `{schema}`"))?
        .get(engine)
        .map_err(|e| e.join("; "))?;
    let mut issues = built.schema.issues(doc, only);
    let checks = &built.checks;
    if issues.is_empty() && !checks.checks.is_empty() {
        let mut scope = Scope::new();
        push_binding(&mut scope, "value", checks.view(doc));
        for (guard, message) in &checks.checks {
            let broken = engine
                .eval_ast_with_scope::<Dynamic>(&mut scope, guard)
                .map_err(|e| e.to_string())?;
            if broken.as_bool().unwrap_or(true) {
                let msg = engine
                    .eval_ast_with_scope::<Dynamic>(&mut scope, message)
                    .map_err(|e| e.to_string())?;
                issues.push(msg.to_string());
            }
        }
    }
    Ok(issues)
}

/// `read_json(path, fields)`: the read result of `path` whose value holds only the
/// listed top-level fields (a document that is not a map is given whole). A peek at a
/// large kept document copies only what it reads.
fn read_fields(path: &str, fields: &Array) -> Map {
    let names: Vec<String> = fields
        .iter()
        .filter_map(|f| {
            f.read_lock::<rhai::ImmutableString>()
                .map(|s| s.to_string())
        })
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    match crate::engine::doc_cache::load_fields(path, &names) {
        Ok(None) => read_result(path, Ok((Dynamic::UNIT, true)), vec![]),
        Ok(Some(value)) => read_result(path, Ok((value, false)), vec![]),
        Err(e) => read_result(path, Err(e), vec![]),
    }
}

/// [`crate::engine::doc_cache::load_leaving`] of the fields `unread` chooses from the
/// text, each with its rule in `schema` (a schema that does not build: the document is
/// loaded whole, and its check reports it).
pub fn load_leaving_by_schema(
    engine: &Engine,
    shared: &Rc<RefCell<SharedTables>>,
    path: &str,
    schema: &str,
    unread: &dyn Fn(&str) -> Vec<String>,
) -> Result<Option<Rc<crate::engine::doc_cache::Doc>>, (bool, String)> {
    let tables = shared.borrow();
    let Some(Ok(built)) = tables.schemas.get(schema).map(|s| s.get(engine)) else {
        return crate::engine::doc_cache::load(path, false);
    };
    let fields = &built.schema.table.fields;
    let pick = |text: &str| {
        let chosen = unread(text).into_iter();
        chosen
            .map(|f| (fields.get(&f), f))
            .map(|(rule, f)| (f, rule))
            .collect()
    };
    crate::engine::doc_cache::load_leaving(path, &pick)
}

fn read_doc(
    ctx: &NativeCallContext,
    shared: &Rc<RefCell<SharedTables>>,
    path: &str,
    yaml: bool,
    schema: &str,
) -> Map {
    use crate::engine::doc_cache::{load, unread_for};
    let loaded = match unread_for(schema) {
        Some(unread) if !yaml => {
            load_leaving_by_schema(ctx.engine(), shared, path, schema, &|_| unread.clone())
        }
        _ => load(path, yaml),
    };
    match loaded {
        Ok(None) => read_result(path, Ok((Dynamic::UNIT, true)), vec![]),
        Ok(Some(doc)) => {
            crate::engine::timing::mark("read and parse");
            let issues = if schema.is_empty() {
                vec![]
            } else {
                doc.issues(ctx.engine(), &shared.borrow(), schema)
                    .unwrap_or_else(|e| vec![e])
            };
            crate::engine::timing::mark("schema check");
            let mut value = doc.into_value();
            // A kept document may hold unread fields this phase reads: built now, in the
            // value lent to the phase (given back with them built, for later phases).
            let phase_unread = unread_for(schema).unwrap_or_default();
            let built = match value.write_lock::<Map>() {
                Some(mut map) => crate::engine::unread::materialize_fields(&mut map, |k| {
                    phase_unread.iter().any(|f| f == k)
                }),
                None => Ok(()),
            };
            if let Err(e) = built {
                return read_result(path, Err((true, e)), vec![]);
            }
            // Tagged only as read this time (a kept value may carry an earlier read's tag).
            let valid = !schema.is_empty() && issues.is_empty();
            value.set_tag(if valid { schema_tag(schema) } else { 0 });
            read_result(path, Ok((value, false)), issues)
        }
        Err(e) => read_result(path, Err(e), vec![]),
    }
}

/// The `field` value of each item of `items` that is a map holding one, in order.
pub(crate) fn field_values(items: &[Dynamic], field: &str) -> Array {
    items
        .iter()
        .filter_map(|item| item.read_lock::<Map>()?.get(field).cloned())
        .collect()
}

/// The largest number after `prefix` in the text of an item's `field` (0 for none).
fn max_suffix_of(items: &Array, field: &str, prefix: &str) -> i64 {
    max_suffix_in(&field_values(items, field), prefix)
}

/// The largest number after `prefix` in the text of a value of `values` (0 for none).
fn max_suffix_in(values: &[Dynamic], prefix: &str) -> i64 {
    values
        .iter()
        .filter_map(|v| suffix_number(&v.to_string(), prefix))
        .max()
        .unwrap_or(0)
}

/// Where the items of `unseen_items` are in `items`: those whose string `item[field]`
/// is not a key of `seen`, each value once (the first wins); items without a string
/// `field` are kept.
pub(crate) fn unseen_indices(items: &[Dynamic], field: &str, seen: &Map) -> Vec<usize> {
    let mut taken = std::collections::HashSet::new();
    (0..items.len())
        .filter(|&i| match field_string(&items[i], field) {
            Some(key) => !seen.contains_key(key.as_str()) && taken.insert(key),
            None => true,
        })
        .collect()
}

/// Whether an item of `items` is a map whose `field` is the same as `value`.
fn has_item_of(items: &Array, field: &str, value: &Dynamic) -> bool {
    has_value(&field_values(items, field), value)
}

/// Whether a value of `values` is the same as `value`.
fn has_value(values: &[Dynamic], value: &Dynamic) -> bool {
    values.iter().any(|v| crate::engine::doc::same(v, value))
}

/// The string values of `item[field]` as the keys of a map (a set).
fn string_set_of(items: &Array, field: &str) -> Map {
    string_set_in(&field_values(items, field))
}

/// The strings of `values` as the keys of a map (a set).
fn string_set_in(values: &[Dynamic]) -> Map {
    let mut set = Map::new();
    for s in values
        .iter()
        .filter_map(|v| v.read_lock::<rhai::ImmutableString>())
    {
        set.insert(s.as_str().into(), Dynamic::TRUE);
    }
    set
}

/// The text of each item's `field` (empty when it has none), joined by `sep`.
pub fn join_field(items: &Array, field: &str, sep: &str) -> String {
    items
        .iter()
        .map(|item| field_text(item, field).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(sep)
}

fn register_primitives(engine: &mut Engine, shared: &Rc<RefCell<SharedTables>>) {
    use crate::engine::unread::Unread;
    // A field the phase declared unread: any use is an error naming it.
    engine.register_type_with_name::<Unread>(crate::engine::doc::UNREAD_TYPE);
    engine.register_indexer_get(
        |u: &mut Unread, _: &str| -> Result<Dynamic, Box<EvalAltResult>> {
            Err(u.refusal().into())
        },
    );
    engine.register_indexer_get(
        |u: &mut Unread, _: rhai::INT| -> Result<Dynamic, Box<EvalAltResult>> {
            Err(u.refusal().into())
        },
    );
    // What an unread list still answers (its scan kept one entry per item).
    engine.register_fn(
        "len",
        |u: &mut Unread| -> Result<rhai::INT, Box<EvalAltResult>> { u.item_count().map_err(err) },
    );
    engine.register_fn(
        "join_field",
        |u: &mut Unread, field: &str, sep: &str| -> Result<String, Box<EvalAltResult>> {
            u.join_field(field, sep).map_err(err)
        },
    );
    engine.register_fn(
        "push",
        |u: &mut Unread, item: Dynamic| -> Result<(), Box<EvalAltResult>> {
            u.push(item).map_err(err)
        },
    );
    // The primitives that read one field of each item: on that field alone (an item
    // reduced to it answers as the whole item does).
    engine.register_fn(
        "string_set",
        |u: &mut Unread, field: &str| -> Result<Map, Box<EvalAltResult>> {
            Ok(string_set_in(&u.item_field(field).map_err(err)?))
        },
    );
    engine.register_fn(
        "max_suffix",
        |u: &mut Unread, field: &str, prefix: &str| -> Result<i64, Box<EvalAltResult>> {
            Ok(max_suffix_in(&u.item_field(field).map_err(err)?, prefix))
        },
    );
    // A selection of an unread list, and two joined, are unread lists (see
    // `Unread::unseen_items`): their items' texts are copied when they can be.
    engine.register_fn(
        "unseen_items",
        |u: &mut Unread, field: &str, seen: Map| -> Result<Unread, Box<EvalAltResult>> {
            u.unseen_items(field, &seen).map_err(err)
        },
    );
    // `+=` and `append` of an unread list: its items follow, unread when both are (a
    // built list's `+=` is rhai's own and pushes one item: `append` joins either way).
    for name in ["+=", "append"] {
        engine.register_fn(
            name,
            |u: &mut Unread, other: Unread| -> Result<(), Box<EvalAltResult>> {
                if let Some(joined) = u.followed_by(&other) {
                    *u = joined;
                    return Ok(());
                }
                u.extend(other.items().map_err(err)?).map_err(err)
            },
        );
        engine.register_fn(
            name,
            |u: &mut Unread, items: Array| -> Result<(), Box<EvalAltResult>> {
                u.extend(items).map_err(err)
            },
        );
    }
    engine.register_fn(
        "append",
        |items: &mut Array, other: Unread| -> Result<(), Box<EvalAltResult>> {
            items.extend(other.items().map_err(err)?);
            Ok(())
        },
    );
    engine.register_fn(
        "has_item",
        |u: &mut Unread, field: &str, value: Dynamic| -> Result<bool, Box<EvalAltResult>> {
            Ok(has_value(&u.item_field(field).map_err(err)?, &value))
        },
    );
    for name in ["to_string", "to_debug"] {
        engine.register_fn(
            name,
            |u: &mut Unread| -> Result<String, Box<EvalAltResult>> { Err(u.refusal().into()) },
        );
    }
    let s = shared.clone();
    engine.register_fn("read_json", move |ctx: NativeCallContext, path: &str| {
        read_doc(&ctx, &s, path, false, "")
    });
    let s = shared.clone();
    engine.register_fn(
        "read_json",
        move |ctx: NativeCallContext, path: &str, schema: &str| {
            read_doc(&ctx, &s, path, false, schema)
        },
    );
    engine.register_fn("read_json", |path: &str, fields: Array| {
        read_fields(path, &fields)
    });
    let s = shared.clone();
    engine.register_fn(
        "read_yaml",
        move |ctx: NativeCallContext, path: &str, schema: &str| {
            read_doc(&ctx, &s, path, true, schema)
        },
    );
    let s = shared.clone();
    engine.register_fn(
        "check_schema",
        move |ctx: NativeCallContext,
              value: Dynamic,
              schema: &str|
              -> Result<Array, Box<EvalAltResult>> {
            let issues = schema_issues(ctx.engine(), &s.borrow(), schema, &value).map_err(err)?;
            Ok(issues.into_iter().map(Dynamic::from).collect())
        },
    );
    let s = shared.clone();
    engine.register_fn("status_of", move |state: &str| -> Dynamic {
        s.borrow()
            .states
            .get(state)
            .map(|(status, _)| Dynamic::from(status.clone()))
            .unwrap_or(Dynamic::UNIT)
    });
    let s = shared.clone();
    engine.register_fn("is_terminal", move |state: &str| -> bool {
        s.borrow()
            .states
            .get(state)
            .is_some_and(|(_, k)| *k == StateKind::Terminal)
    });
    engine.register_fn("file_exists", |path: &str| Path::new(path).is_file());
    engine.register_fn("read_text", |path: &str| -> Dynamic {
        fsio::read_text_capped(Path::new(path))
            .map(Dynamic::from)
            .unwrap_or(Dynamic::UNIT)
    });
    engine.register_fn(
        "list_files",
        |dir: &str, prefix: &str, suffix: &str| -> Array {
            list_files(dir, prefix, suffix)
                .into_iter()
                .map(Dynamic::from)
                .collect()
        },
    );
    engine.register_fn(
        "list_names",
        |dir: &str, prefix: &str, suffix: &str| -> Array {
            list_files(dir, prefix, suffix)
                .into_iter()
                .map(|p| Dynamic::from(p.rsplit('/').next().unwrap_or(&p).to_string()))
                .collect()
        },
    );
    engine.register_fn("expand_path", |path: &str| -> String {
        match (path.strip_prefix("~/"), std::env::var("HOME")) {
            (Some(rest), Ok(home)) => format!("{home}/{rest}"),
            _ => path.to_string(),
        }
    });
    engine.register_fn("path_join", |dir: &str, name: &str| -> String {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{}/{}", dir.trim_end_matches('/'), name)
        }
    });
    engine.register_fn("basename", |path: &str| -> String {
        Path::new(path)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    engine.register_fn("canonical_json", |v: Dynamic| {
        canonical::canonical_json(&to_json(&v))
    });
    engine.register_fn("sha256_tagged", |s: &str| canonical::sha256_tagged(s));
    // By reference: `big.to_json()` prints a large value without copying it first.
    // Printed as the state is printed: a field left unread from its text, not named.
    let pretty = |v: &Dynamic| -> Result<String, Box<EvalAltResult>> {
        let mut text = crate::engine::doc::to_pretty(v).map_err(err)?;
        text.pop(); // the final newline
        Ok(text)
    };
    engine.register_fn("to_json", move |v: &mut Dynamic| pretty(v));
    // The same for a map: rhai's own `to_json(map)` (compact, slower) would be chosen.
    engine.register_fn("to_json", move |m: &mut Map| {
        let v = Dynamic::from_map(std::mem::take(m));
        let text = pretty(&v);
        *m = v.cast::<Map>();
        text
    });
    engine.register_fn("type_name", |v: Dynamic| -> String {
        crate::engine::doc::type_name(&v).to_string()
    });
    engine.register_fn(
        "max_suffix",
        |items: &mut Array, field: &str, prefix: &str| -> i64 {
            max_suffix_of(items, field, prefix)
        },
    );
    engine.register_fn("max_suffix", |items: &mut Array, prefix: &str| -> i64 {
        max_suffix_in(items, prefix)
    });
    engine.register_fn("join", |items: &mut Array, sep: &str| -> String {
        items
            .iter()
            .map(|v| v.to_string())
            .collect::<Vec<_>>()
            .join(sep)
    });
    engine.register_fn(
        "join_field",
        |items: &mut Array, field: &str, sep: &str| -> String { join_field(items, field, sep) },
    );
    // Type tests that read a value in place (`type_of(x)` copies `x` first).
    engine.register_fn("is_map", |v: &mut Dynamic| v.is_map());
    engine.register_fn("is_array", |v: &mut Dynamic| v.is_array());
    // The string values of `item[field]` as the keys of a map (a set; `contains` is a lookup).
    engine.register_fn("string_set", |items: &mut Array, field: &str| -> Map {
        string_set_of(items, field)
    });
    // True when a map item holds `value` at `field` (reads the list in place).
    engine.register_fn(
        "has_item",
        |items: &mut Array, field: &str, value: Dynamic| -> bool {
            has_item_of(items, field, &value)
        },
    );
    // The items whose string `item[field]` is not a key of `seen`, each value once (the
    // first wins); items without a string `field` are kept. Reads the list in place.
    engine.register_fn(
        "unseen_items",
        |items: &mut Array, field: &str, seen: Map| -> Array {
            unseen_indices(items, field, &seen)
                .into_iter()
                .map(|i| items[i].clone())
                .collect()
        },
    );
    engine.register_fn("append_unique", |list: Array, extra: Array| -> Array {
        let mut seen: std::collections::HashSet<String> =
            list.iter().map(|v| v.to_string()).collect();
        let mut out = list;
        for item in extra {
            if seen.insert(item.to_string()) {
                out.push(item);
            }
        }
        out
    });
    engine.register_fn(
        "block_action",
        |path: &str, begin: &str, end: &str, body: &str| -> String {
            crate::exec::marked_block::plan(Path::new(path), begin, end, body)
                .as_str()
                .to_string()
        },
    );
    engine.register_fn("has_block", |path: &str, begin: &str, end: &str| -> bool {
        crate::exec::marked_block::present(Path::new(path), begin, end)
    });
    engine.register_fn("fail", |msg: &str| -> Result<Dynamic, Box<EvalAltResult>> {
        Err(err(msg))
    });
}

/// Files of `dir` whose names start with `prefix` and end with `suffix`, in natural order, as paths.
pub fn list_files(dir: &str, prefix: &str, suffix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| {
            n.starts_with(prefix) && n.ends_with(suffix) && n.len() >= prefix.len() + suffix.len()
        })
        .collect();
    names.sort_by_cached_key(|n| fsio::natural_key(n));
    let dir = dir.trim_end_matches('/');
    names
        .into_iter()
        .map(|n| {
            if dir.is_empty() {
                n
            } else {
                format!("{dir}/{n}")
            }
        })
        .collect()
}

/// `n` when `value` is `prefix` followed by digits `n` (and optionally a file extension).
pub fn suffix_number(value: &str, prefix: &str) -> Option<i64> {
    let rest = value.strip_prefix(prefix)?;
    let digits: &str = rest.split('.').next().unwrap_or(rest);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod projection_tests {
    use super::projected_fields;

    #[test]
    fn checks_reading_fields_see_only_those_fields() {
        let f = projected_fields(
            &[
                "status_of(value.machine_state) == ()",
                "`${value.status} x`",
            ],
            "value",
        );
        assert_eq!(f, Some(vec!["machine_state".into(), "status".into()]));
    }

    #[test]
    fn any_other_use_of_value_sees_the_whole_document() {
        for src in [
            "f(value)",
            "value[\"a\"]",
            "value.len()",
            "value . a",
            "a bad value",
        ] {
            assert_eq!(projected_fields(&[src], "value"), None, "{src}");
        }
        assert_eq!(
            projected_fields(&["values.x + value_x"], "value"),
            Some(vec![])
        );
        assert_eq!(
            projected_fields(&["state.a && f(args, state.b)"], "state"),
            Some(vec!["a".into(), "b".into()])
        );
    }

    #[test]
    fn a_method_reads_the_fields_its_body_reads() {
        use super::projected_fields_with;
        let methods = |m: &str, arity: usize| match (m, arity) {
            ("body", 1) => Some(vec!["x".to_string(), "a".to_string()]),
            _ => None,
        };
        assert_eq!(
            projected_fields_with(&["ctx.s?.a + ctx.s.body(1)"], "ctx.s", &methods),
            Some(vec!["a".into(), "x".into()])
        );
        for other in [
            "ctx.s.other()",
            "ctx.s.body()",
            "ctx.s.body(1, (2, 3))",
            "ctx.s.body(1",
        ] {
            assert_eq!(
                projected_fields_with(&[other], "ctx.s", &methods),
                None,
                "{other}"
            );
        }
        assert_eq!(
            projected_fields_with(&["ctx.s.body(f(\"a, b)\", [1, 2]))"], "ctx.s", &methods),
            Some(vec!["x".into(), "a".into()])
        );
        assert_eq!(projected_fields(&["ctx.s.body()"], "ctx.s"), None);
    }
}

#[cfg(test)]
mod read_tests {
    use super::*;

    #[test]
    fn read_json_with_fields_gives_only_those_fields() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("doc.json");
        std::fs::write(&path, r#"{"a": 1, "b": {"big": [1, 2, 3]}, "c": "x"}"#).unwrap();
        let fields: Array = vec!["a".into(), "c".into(), "missing".into()];
        let read = read_fields(path.to_str().unwrap(), &fields);
        assert_eq!(read["ok"].as_bool(), Ok(true));
        let value = to_json(&read["value"]);
        assert_eq!(value, serde_json::json!({"a": 1, "c": "x"}));
        // A document that is not a map is given whole; a missing file reads as missing.
        std::fs::write(&path, "[1, 2]").unwrap();
        let read = read_fields(path.to_str().unwrap(), &fields);
        assert_eq!(to_json(&read["value"]), serde_json::json!([1, 2]));
        let read = read_fields(dir.path().join("none.json").to_str().unwrap(), &fields);
        assert_eq!(read["exists"].as_bool(), Ok(false));
    }
}

#[cfg(test)]
mod primitive_tests {
    use super::*;

    fn eval(script: &str) -> serde_json::Value {
        let sandbox = Sandbox::new();
        let ast = sandbox.compile(script, &[]).expect("compiles");
        let v = sandbox.eval(&mut Scope::new(), &ast).expect("runs");
        to_json(&v)
    }

    #[test]
    fn unseen_items_drops_seen_and_repeated_values_and_keeps_items_without_one() {
        let v = eval(
            r#"let items = [#{ id: "a" }, #{ id: "b", n: 1 }, #{ id: "b", n: 2 }, #{ x: 1 }, 5, #{ id: "c" }];
               items.unseen_items("id", #{ c: true })"#,
        );
        assert_eq!(
            v,
            serde_json::json!([{"id": "a"}, {"id": "b", "n": 1}, {"x": 1}, 5])
        );
    }

    #[test]
    fn has_item_finds_a_map_item_by_field_value() {
        let v = eval(
            r#"let items = [5, #{ id: "a" }, #{ id: 2 }];
               [items.has_item("id", "a"), items.has_item("id", 2), items.has_item("id", "b"),
                items.has_item("id", 2.0), items.has_item("other", "a")]"#,
        );
        assert_eq!(v, serde_json::json!([true, true, false, false, false]));
    }

    #[test]
    fn to_json_prints_maps_and_lists_pretty_and_leaves_them_in_place() {
        let v = eval(r#"let m = #{ a: [1, 2.5], b: "x" }; [m.to_json(), m.b, [1].to_json()]"#);
        assert_eq!(
            v,
            serde_json::json!([
                "{\n  \"a\": [\n    1,\n    2.5\n  ],\n  \"b\": \"x\"\n}",
                "x",
                "[\n  1\n]"
            ])
        );
    }
}
