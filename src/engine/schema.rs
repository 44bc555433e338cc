//! Generic structural validation of JSON documents against the schema tables
//! of `machine/schemas/`. It reports every issue, each naming the dotted
//! field path and what was expected, so that a user fixes a file in one pass.

use crate::engine::doc::{self, as_number, json_text, with_str};
use crate::machine::model::{FieldRule, Placeholders, SchemaTable, TypeSpec};
use regex_lite::Regex;
use rhai::{Array, Dynamic, Map};
use std::collections::HashMap;

/// A schema with its patterns compiled.
#[derive(Debug)]
pub struct CompiledSchema {
    /// The table as written.
    pub table: SchemaTable,
    patterns: HashMap<String, Regex>,
}

impl CompiledSchema {
    /// Compiles every `pattern:` of the table; errors name the field.
    pub fn compile(table: SchemaTable) -> Result<Self, String> {
        let mut patterns = HashMap::new();
        fn walk(
            prefix: &str,
            fields: &indexmap::IndexMap<String, FieldRule>,
            out: &mut HashMap<String, Regex>,
        ) -> Result<(), String> {
            for (name, rule) in fields {
                let path = join(prefix, name);
                collect(&path, rule, out)?;
            }
            Ok(())
        }
        fn collect(
            path: &str,
            rule: &FieldRule,
            out: &mut HashMap<String, Regex>,
        ) -> Result<(), String> {
            if let Some(p) = &rule.pattern {
                let re = Regex::new(p).map_err(|e| format!("field `{path}`: bad pattern: {e}"))?;
                out.insert(p.clone(), re);
            }
            walk(path, &rule.fields, out)?;
            if let Some(items) = &rule.items {
                collect(&format!("{path}[]"), items, out)?;
            }
            Ok(())
        }
        walk("", &table.fields, &mut patterns)?;
        Ok(Self { table, patterns })
    }

    /// Every structural issue of `doc` (cross-field checks are run by the sandbox), in
    /// the top-level fields named in `only` (all when `None`).
    pub fn issues(&self, doc: &Dynamic, only: Option<&[String]>) -> Vec<String> {
        let mut issues = Vec::new();
        let Some(map) = doc.read_lock::<Map>() else {
            issues.push(format!(
                "{} must be a mapping/object, got {}",
                self.subject(),
                doc::type_name(doc)
            ));
            return issues;
        };
        let wanted = |name: &String| only.is_none_or(|names| names.contains(name));
        let fields = self.table.fields.iter().filter(|(name, _)| wanted(name));
        self.check_fields(&Path::Root, fields, &map, &mut issues);
        issues
    }

    fn subject(&self) -> &str {
        if self.table.subject.is_empty() {
            "document"
        } else {
            &self.table.subject
        }
    }

    fn check_fields<'r>(
        &self,
        prefix: &Path,
        fields: impl IntoIterator<Item = (&'r String, &'r FieldRule)>,
        map: &Map,
        issues: &mut Vec<String>,
    ) {
        for (name, rule) in fields {
            let path = Path::Field(prefix, name);
            match map.get(name.as_str()) {
                None => {
                    if rule.required {
                        issues.push(format!("missing required field: {path}"));
                    }
                }
                Some(value) => self.check_value(&path, rule, value, issues),
            }
        }
    }

    fn check_value(
        &self,
        path: &Path,
        rule: &FieldRule,
        value: &Dynamic,
        issues: &mut Vec<String>,
    ) {
        if crate::engine::unread::may_be_unread(value)
            && let Some(unread) = value.read_lock::<crate::engine::unread::Unread>()
        {
            // Checked as the rule sees it, without building the rest.
            match unread.view_for(rule) {
                Ok((view, appended)) => {
                    self.check_value(path, rule, &view, issues);
                    let read = view
                        .read_lock::<rhai::Array>()
                        .map_or(0, |items| items.len());
                    // (A list its rule does not type as one has its items unchecked.)
                    if let Some(item_rule) = rule.items.as_ref().filter(|_| typed(rule, &view)) {
                        for (i, item) in appended.iter().enumerate() {
                            let at = Path::Index(path, read + i);
                            self.check_value(&at, item_rule, item, issues);
                        }
                    }
                }
                Err(e) => issues.push(format!("{path}: {e}")),
            }
            return;
        }
        if !typed(rule, value) {
            let allowed = allowed_types(rule);
            issues.push(format!(
                "{path}: expected {}, got {}",
                allowed.join(" or "),
                describe(value)
            ));
            return;
        }
        if value.is_unit() {
            return;
        }
        if rule.non_empty && is_empty(value) {
            issues.push(format!("{path}: must be non-empty"));
            return;
        }
        if let Some(s) = value.read_lock::<rhai::ImmutableString>() {
            let s = s.as_str();
            if rule.no_placeholder && is_placeholder(&self.table.placeholders, s) {
                issues.push(format!(
                    "{path}: contains a placeholder ({s:?}); replace it with a real value"
                ));
            }
            if rule.no_whitespace && s.chars().any(char::is_whitespace) {
                issues.push(format!("{path}: must not contain whitespace, got {s:?}"));
            }
            if let Some(p) = &rule.pattern
                && let Some(re) = self.patterns.get(p)
                && !re.is_match(s)
            {
                issues.push(format!("{path}: expected a value matching {p}, got {s:?}"));
            }
        }
        if !rule.one_of.is_empty() {
            let ok = rule.one_of.iter().any(|allowed| yaml_eq(allowed, value));
            if !ok {
                let names: Vec<String> = rule.one_of.iter().map(yaml_text).collect();
                issues.push(format!(
                    "{path}: must be one of {}, got {}",
                    names.join(", "),
                    describe(value)
                ));
            }
        }
        if let Some(n) = as_number(value) {
            if !n.is_finite() {
                issues.push(format!("{path}: must be a finite number"));
            }
            let lo = rule
                .min
                .map(|m| (m, "["))
                .or(rule.exclusive_min.map(|m| (m, "(")));
            let out_of_range = rule.min.is_some_and(|m| n < m)
                || rule.exclusive_min.is_some_and(|m| n <= m)
                || rule.max.is_some_and(|m| n > m);
            if out_of_range {
                let lower = lo
                    .map(|(m, b)| format!("{b}{}", fmt_num(m)))
                    .unwrap_or("(-inf".into());
                let upper = rule
                    .max
                    .map(|m| format!("{}]", fmt_num(m)))
                    .unwrap_or("inf)".into());
                issues.push(format!(
                    "{path}: must be in {lower}, {upper}, got {}",
                    json_text(value)
                ));
            }
        }
        if let Some(obj) = value.read_lock::<Map>() {
            self.check_fields(path, &rule.fields, &obj, issues);
        }
        if let Some(items) = value.read_lock::<Array>() {
            if let Some(item_rule) = &rule.items {
                for (i, item) in items.iter().enumerate() {
                    self.check_value(&Path::Index(path, i), item_rule, item, issues);
                }
            }
            if rule.unique {
                let mut seen = std::collections::HashSet::new();
                for item in items.iter() {
                    let text = json_text(item);
                    if !seen.insert(text.clone()) {
                        issues.push(format!("{path}: duplicate entry {text}"));
                    }
                }
            }
        }
    }
}

/// Where a checked value sits in its document, formatted only for an issue (a large
/// state has tens of thousands of values and, as a rule, no issue).
enum Path<'a> {
    /// The document itself.
    Root,
    /// A field of a map.
    Field(&'a Path<'a>, &'a str),
    /// An item of a list.
    Index(&'a Path<'a>, usize),
}

impl Path<'_> {
    /// Whether the path prints as nothing (the root, or fields named `""` under it).
    fn is_empty(&self) -> bool {
        match self {
            Path::Root => true,
            Path::Field(parent, name) => name.is_empty() && parent.is_empty(),
            Path::Index(..) => false,
        }
    }
}

impl std::fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Path::Root => Ok(()),
            Path::Field(parent, name) if parent.is_empty() => f.write_str(name),
            Path::Field(parent, name) => write!(f, "{parent}.{name}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

fn join(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// True when `s` is an unfilled placeholder under `rules`.
pub fn is_placeholder(rules: &Placeholders, s: &str) -> bool {
    rules.contains_any.iter().any(|p| s.contains(p.as_str()))
        || rules
            .contains_all
            .iter()
            .any(|group| !group.is_empty() && group.iter().all(|p| s.contains(p.as_str())))
}

/// Whether `value` has a type `rule` allows (any, when it names none).
fn typed(rule: &FieldRule, value: &Dynamic) -> bool {
    let allowed = allowed_types(rule);
    allowed.is_empty() || allowed.iter().any(|t| has_type(value, t))
}

/// The types `rule` allows (none named: any).
fn allowed_types(rule: &FieldRule) -> &[String] {
    match &rule.types {
        TypeSpec::Any => &[],
        TypeSpec::One(t) => std::slice::from_ref(t),
        TypeSpec::Many(ts) => ts,
    }
}

fn has_type(value: &Dynamic, t: &str) -> bool {
    match t {
        "null" => value.is_unit(),
        "boolean" => value.is_bool(),
        "integer" => value.is_int(),
        "number" => value.is_int() || value.is_float(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_map(),
        _ => false,
    }
}

fn is_empty(value: &Dynamic) -> bool {
    if let Some(empty) = with_str(value, |s| s.trim().is_empty()) {
        return empty;
    }
    if let Some(a) = value.read_lock::<Array>() {
        return a.is_empty();
    }
    value.read_lock::<Map>().is_some_and(|m| m.is_empty())
}

fn describe(value: &Dynamic) -> String {
    if value.is_unit() {
        return "null".to_string();
    }
    if value.is_array() || value.is_map() {
        return doc::type_name(value).to_string();
    }
    if let Some(Some(long)) = with_str(value, |s| {
        (s.len() > 60).then(|| format!("string {:?}…", &s.chars().take(60).collect::<String>()))
    }) {
        return long;
    }
    format!("{} {}", doc::type_name(value), json_text(value))
}

fn yaml_eq(allowed: &serde_yaml::Value, value: &Dynamic) -> bool {
    serde_json::to_value(allowed).is_ok_and(|a| {
        let value = doc::to_json(value);
        a == value || (a.is_number() && value.is_number() && a.as_f64() == value.as_f64())
    })
}

fn yaml_text(v: &serde_yaml::Value) -> String {
    serde_json::to_string(v)
        .unwrap_or_default()
        .trim_matches('"')
        .to_string()
}
