//! Expectation matching. A scenario states only what it cares about:
//! mappings match as subsets (recursively), lists match element by element
//! with equal length, and a one-key mapping whose key is an operator
//! (`contains`, `regex`, `len`, `absent`, `present`, `not`, `eq`, `any_of`,
//! `gt`, `gte`, `lt`, `lte`) states a property instead of a value. Every
//! mismatch names its JSON path and both values, so a failing scenario says
//! exactly what differed.

use serde_json::Value;

/// Operator keys recognised in a one-key mapping.
pub const OPERATORS: &[&str] = &[
    "contains", "regex", "len", "absent", "present", "not", "eq", "any_of", "gt", "gte", "lt",
    "lte",
];

/// Longest rendering of a value in a message.
const SHOW_MAX: usize = 400;

/// A value as compact JSON, shortened when long.
pub fn show(v: Option<&Value>) -> String {
    match v {
        None => "nothing (absent)".to_string(),
        Some(v) => {
            let s = serde_json::to_string(v).unwrap_or_else(|_| "?".into());
            if s.chars().count() > SHOW_MAX {
                format!("{}…", s.chars().take(SHOW_MAX).collect::<String>())
            } else {
                s
            }
        }
    }
}

fn child_path(path: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if plain {
        format!("{path}.{key}")
    } else {
        format!("{path}[{}]", serde_json::to_string(key).unwrap_or_default())
    }
}

/// The operator of a one-key mapping, with its argument.
fn operator(expected: &Value) -> Option<(&str, &Value)> {
    let m = expected.as_object()?;
    if m.len() != 1 {
        return None;
    }
    let (k, v) = m.iter().next()?;
    OPERATORS.contains(&k.as_str()).then_some((k.as_str(), v))
}

/// Checks operator arguments (types, regexes) before anything runs.
pub fn validate(expected: &Value) -> Result<(), String> {
    if let Some((op, arg)) = operator(expected) {
        return match op {
            "regex" => match arg.as_str() {
                Some(r) => regex_lite::Regex::new(r)
                    .map(|_| ())
                    .map_err(|e| format!("invalid regex `{r}`: {e}")),
                None => Err("`regex` needs a string".into()),
            },
            "len" => arg
                .as_u64()
                .map(|_| ())
                .ok_or_else(|| "`len` needs a non-negative integer".into()),
            "absent" | "present" => arg
                .as_bool()
                .map(|_| ())
                .ok_or_else(|| format!("`{op}` needs true or false")),
            "gt" | "gte" | "lt" | "lte" => arg
                .as_f64()
                .map(|_| ())
                .ok_or_else(|| format!("`{op}` needs a number")),
            "any_of" => match arg.as_array() {
                Some(items) if !items.is_empty() => items.iter().try_for_each(validate),
                _ => Err("`any_of` needs a non-empty list".into()),
            },
            "contains" => match arg {
                Value::Array(items) => items.iter().try_for_each(validate),
                other => validate(other),
            },
            "not" => validate(arg),
            _ => Ok(()),
        };
    }
    match expected {
        Value::Object(m) => m.values().try_for_each(validate),
        Value::Array(items) => items.iter().try_for_each(validate),
        _ => Ok(()),
    }
}

fn numbers_equal(a: &Value, b: &Value) -> Option<bool> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x == y);
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x == y);
    }
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) if a.is_number() && b.is_number() => Some(x == y),
        _ => None,
    }
}

/// Deep equality with numbers compared by value (`1` equals `1.0`).
pub fn deep_equal(a: &Value, b: &Value) -> bool {
    if let Some(eq) = numbers_equal(a, b) {
        return eq;
    }
    match (a, b) {
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| deep_equal(p, q))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| deep_equal(v, w)))
        }
        _ => a == b,
    }
}

/// True when `actual` matches `expected` (no messages).
pub fn matches(expected: &Value, actual: Option<&Value>) -> bool {
    let mut out = Vec::new();
    check("$", expected, actual, &mut out);
    out.is_empty()
}

/// Appends one message per mismatch between `expected` and `actual` at `path`.
pub fn check(path: &str, expected: &Value, actual: Option<&Value>, out: &mut Vec<String>) {
    let mismatch = |out: &mut Vec<String>, what: String| {
        out.push(format!("{path}: expected {what}, got {}", show(actual)));
    };
    if let Some((op, arg)) = operator(expected) {
        match op {
            "absent" | "present" => {
                let present_wanted = (op == "present") == (arg.as_bool() == Some(true));
                if present_wanted != actual.is_some() {
                    let want = if present_wanted { "a value" } else { "absent" };
                    mismatch(out, want.to_string());
                }
            }
            "eq" if !actual.is_some_and(|a| deep_equal(arg, a)) => {
                mismatch(out, format!("exactly {}", show(Some(arg))));
            }
            "not" if matches(arg, actual) => {
                mismatch(out, format!("anything but {}", show(Some(arg))));
            }
            "any_of" => {
                let items = arg.as_array().cloned().unwrap_or_default();
                if !items.iter().any(|i| matches(i, actual)) {
                    mismatch(out, format!("one of {}", show(Some(arg))));
                }
            }
            "len" => {
                let n = match actual {
                    Some(Value::Array(a)) => Some(a.len()),
                    Some(Value::Object(m)) => Some(m.len()),
                    Some(Value::String(s)) => Some(s.chars().count()),
                    _ => None,
                };
                if n.map(|n| n as u64) != arg.as_u64() {
                    mismatch(out, format!("length {}", show(Some(arg))));
                }
            }
            "regex" => {
                let re = arg.as_str().and_then(|r| regex_lite::Regex::new(r).ok());
                let ok = match (re, actual) {
                    (Some(re), Some(Value::String(s))) => re.is_match(s),
                    _ => false,
                };
                if !ok {
                    mismatch(
                        out,
                        format!("a string matching /{}/", arg.as_str().unwrap_or("")),
                    );
                }
            }
            "gt" | "gte" | "lt" | "lte" => {
                let ok = match (actual.and_then(Value::as_f64), arg.as_f64()) {
                    (Some(a), Some(b)) => match op {
                        "gt" => a > b,
                        "gte" => a >= b,
                        "lt" => a < b,
                        _ => a <= b,
                    },
                    _ => false,
                };
                if !ok {
                    mismatch(out, format!("a number {op} {}", show(Some(arg))));
                }
            }
            "contains" => contains(path, arg, actual, out),
            _ => {}
        }
        return;
    }
    match (expected, actual) {
        (_, None) => mismatch(out, show(Some(expected))),
        (Value::Object(exp), Some(Value::Object(act))) => {
            for (k, v) in exp {
                check(&child_path(path, k), v, act.get(k), out);
            }
        }
        (Value::Array(exp), Some(Value::Array(act))) => {
            if exp.len() != act.len() {
                out.push(format!(
                    "{path}: expected a list of {} item(s) {}, got {} item(s) {}",
                    exp.len(),
                    show(Some(expected)),
                    act.len(),
                    show(actual)
                ));
                return;
            }
            for (i, (e, a)) in exp.iter().zip(act).enumerate() {
                check(&format!("{path}[{i}]"), e, Some(a), out);
            }
        }
        (e, Some(a)) => {
            if !deep_equal(e, a) {
                mismatch(out, show(Some(e)));
            }
        }
    }
}

fn contains(path: &str, arg: &Value, actual: Option<&Value>, out: &mut Vec<String>) {
    match actual {
        Some(Value::String(s)) => {
            let wanted: Vec<&Value> = match arg {
                Value::Array(items) => items.iter().collect(),
                other => vec![other],
            };
            for w in wanted {
                match w.as_str() {
                    Some(text) if s.contains(text) => {}
                    _ => out.push(format!(
                        "{path}: expected a string containing {}, got {}",
                        show(Some(w)),
                        show(actual)
                    )),
                }
            }
        }
        Some(Value::Array(items)) => {
            let wanted: Vec<&Value> = match arg {
                Value::Array(w) => w.iter().collect(),
                other => vec![other],
            };
            for w in wanted {
                if !items.iter().any(|i| matches(w, Some(i))) {
                    out.push(format!(
                        "{path}: expected a list containing an item matching {}, got {}",
                        show(Some(w)),
                        show(actual)
                    ));
                }
            }
        }
        _ => out.push(format!(
            "{path}: expected a string or list containing {}, got {}",
            show(Some(arg)),
            show(actual)
        )),
    }
}

/// Checks the form of a `expect.files` entry.
pub fn check_file_expectation(e: &Value) -> Result<(), String> {
    match e {
        Value::String(s) if s == "present" || s == "absent" => Ok(()),
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                match k.as_str() {
                    "contains" | "not_contains" => {
                        let ok = v.is_string()
                            || v.as_array().is_some_and(|a| a.iter().all(Value::is_string));
                        if !ok {
                            return Err(format!("`{k}` needs a string or a list of strings"));
                        }
                    }
                    "equals" => {
                        if !v.is_string() {
                            return Err("`equals` needs a string".into());
                        }
                    }
                    "regex" => validate(&serde_json::json!({ "regex": v }))?,
                    "json" => validate(v)?,
                    other => {
                        return Err(format!(
                            "unknown key `{other}` (use contains, not_contains, equals, regex, json)"
                        ));
                    }
                }
            }
            Ok(())
        }
        other => Err(format!(
            "expected present, absent or a mapping of contains/not_contains/equals/regex/json, got {other}"
        )),
    }
}

/// Appends one message per mismatch between a file expectation and the file's text.
pub fn check_file(path: &str, e: &Value, text: Option<&str>, out: &mut Vec<String>) {
    let at = format!("files[{}]", serde_json::to_string(path).unwrap_or_default());
    match (e, text) {
        (Value::String(s), None) if s == "present" => {
            out.push(format!(
                "{at}: expected the file to exist, got nothing (absent)"
            ));
        }
        (Value::String(s), Some(t)) if s == "absent" => {
            out.push(format!(
                "{at}: expected no file, got a file of {} byte(s): {}",
                t.len(),
                show(Some(&Value::String(t.to_string())))
            ));
        }
        (Value::Object(_), None) => {
            out.push(format!(
                "{at}: expected the file to exist, got nothing (absent)"
            ));
        }
        (Value::Object(m), Some(text)) => {
            let shown = show(Some(&Value::String(text.to_string())));
            for (k, v) in m {
                let list = |v: &Value| -> Vec<String> {
                    match v {
                        Value::String(s) => vec![s.clone()],
                        Value::Array(a) => a
                            .iter()
                            .filter_map(|x| x.as_str().map(str::to_string))
                            .collect(),
                        _ => vec![],
                    }
                };
                match k.as_str() {
                    "contains" => {
                        for s in list(v) {
                            if !text.contains(&s) {
                                out.push(format!(
                                    "{at}: expected text containing {}, got {shown}",
                                    show(Some(&Value::String(s.clone())))
                                ));
                            }
                        }
                    }
                    "not_contains" => {
                        for s in list(v) {
                            if text.contains(&s) {
                                out.push(format!(
                                    "{at}: expected text without {}, got {shown}",
                                    show(Some(&Value::String(s.clone())))
                                ));
                            }
                        }
                    }
                    "equals" if v.as_str() != Some(text) => {
                        out.push(format!(
                            "{at}: expected exactly {}, got {shown}",
                            show(Some(v))
                        ));
                    }
                    "regex" => check(
                        &at,
                        &serde_json::json!({ "regex": v }),
                        Some(&Value::String(text.to_string())),
                        out,
                    ),
                    "json" => match serde_json::from_str::<Value>(text) {
                        Ok(doc) => check(&at, v, Some(&doc), out),
                        Err(err) => out.push(format!(
                            "{at}: expected JSON matching {}, got text that is not JSON ({err}): {shown}",
                            show(Some(v))
                        )),
                    },
                    _ => {}
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msgs(e: Value, a: Value) -> Vec<String> {
        let mut out = Vec::new();
        check("h", &e, Some(&a), &mut out);
        out
    }

    #[test]
    fn maps_match_as_subsets_and_name_the_path() {
        assert!(msgs(json!({"a": 1}), json!({"a": 1.0, "b": 2})).is_empty());
        let m = msgs(json!({"a": {"b": "x"}}), json!({"a": {"b": "y"}}));
        assert_eq!(m, vec!["h.a.b: expected \"x\", got \"y\"".to_string()]);
    }

    #[test]
    fn lists_match_exactly_unless_contains() {
        assert_eq!(msgs(json!([1]), json!([1, 2])).len(), 1);
        assert!(msgs(json!({"contains": [2]}), json!([1, 2])).is_empty());
        assert!(msgs(json!([{"a": 1}]), json!([{"a": 1, "b": 2}])).is_empty());
    }

    #[test]
    fn operators() {
        assert!(msgs(json!({"regex": "^ab"}), json!("abc")).is_empty());
        assert!(msgs(json!({"len": 2}), json!([1, 2])).is_empty());
        assert!(msgs(json!({"k": {"absent": true}}), json!({})).is_empty());
        assert_eq!(
            msgs(json!({"k": {"absent": true}}), json!({"k": 1})).len(),
            1
        );
        assert!(msgs(json!({"not": "x"}), json!("y")).is_empty());
        assert!(msgs(json!({"gte": 1}), json!(1.5)).is_empty());
        assert!(msgs(json!({"any_of": [1, "x"]}), json!("x")).is_empty());
        assert!(msgs(json!({"contains": "ell"}), json!("hello")).is_empty());
        assert!(msgs(json!({"eq": {"a": 1}}), json!({"a": 1})).is_empty());
        assert_eq!(
            msgs(json!({"eq": {"a": 1}}), json!({"a": 1, "b": 2})).len(),
            1
        );
    }

    #[test]
    fn validation_rejects_bad_operators() {
        assert!(validate(&json!({"regex": "("})).is_err());
        assert!(validate(&json!({"len": "x"})).is_err());
        assert!(validate(&json!({"a": {"contains": [{"regex": 1}]}})).is_err());
    }
}
