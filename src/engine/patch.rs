//! State patches: the minimal recursive diff between two states, and its
//! application. Objects are diffed key by key; anything else is replaced
//! whole. A key that disappears is written as `null`.

use serde_json::{Map, Value};

/// Minimal recursive patch that turns `old` into `new`, skipping `skip` keys at the top level.
pub fn diff(old: &Value, new: &Value, skip: &[&str]) -> Value {
    let empty = Map::new();
    let old_map = old.as_object().unwrap_or(&empty);
    let Some(new_map) = new.as_object() else {
        return Value::Object(Map::new());
    };
    let mut out = Map::new();
    diff_maps(old_map, new_map, skip, &mut out);
    Value::Object(out)
}

/// [`diff`] where only `keys` can differ: `old` holds those of them the old state had,
/// `new` is the whole new state. Equal to `diff(old_state, new)` for such states.
pub fn diff_keys(old: &Map<String, Value>, new: &Value, keys: &[String], skip: &[&str]) -> Value {
    let mut out = Map::new();
    let empty = Map::new();
    let new_map = new.as_object().unwrap_or(&empty);
    for key in keys {
        if skip.contains(&key.as_str()) {
            continue;
        }
        match (old.get(key), new_map.get(key)) {
            (Some(o), Some(n)) if o == n => {}
            (Some(Value::Object(o)), Some(Value::Object(n))) => {
                let mut inner = Map::new();
                diff_maps(o, n, &[], &mut inner);
                if !inner.is_empty() {
                    out.insert(key.clone(), Value::Object(inner));
                }
            }
            (_, Some(n)) => {
                out.insert(key.clone(), n.clone());
            }
            (Some(_), None) => {
                out.insert(key.clone(), Value::Null);
            }
            (None, None) => {}
        }
    }
    Value::Object(out)
}

fn diff_maps(
    old: &Map<String, Value>,
    new: &Map<String, Value>,
    skip: &[&str],
    out: &mut Map<String, Value>,
) {
    for (key, new_value) in new {
        if skip.contains(&key.as_str()) {
            continue;
        }
        match old.get(key) {
            Some(old_value) if old_value == new_value => {}
            Some(Value::Object(old_obj)) if new_value.is_object() => {
                let mut inner = Map::new();
                if let Some(new_obj) = new_value.as_object() {
                    diff_maps(old_obj, new_obj, &[], &mut inner);
                }
                if !inner.is_empty() {
                    out.insert(key.clone(), Value::Object(inner));
                }
            }
            _ => {
                out.insert(key.clone(), new_value.clone());
            }
        }
    }
    for key in old.keys() {
        if !new.contains_key(key) && !skip.contains(&key.as_str()) {
            out.insert(key.clone(), Value::Null);
        }
    }
}

/// Applies `patch` to `target`: objects merge recursively, everything else replaces.
pub fn apply(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (key, pv) in p {
                match t.get_mut(key) {
                    Some(tv) if tv.is_object() && pv.is_object() => apply(tv, pv),
                    _ => {
                        t.insert(key.clone(), pv.clone());
                    }
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// Every leaf path of a patch, as lists of keys (a leaf is a non-object or an empty object).
pub fn leaf_paths(patch: &Value) -> Vec<Vec<String>> {
    fn walk(v: &Value, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) if !m.is_empty() => {
                for (k, child) in m {
                    prefix.push(k.clone());
                    walk(child, prefix, out);
                    prefix.pop();
                }
            }
            _ => {
                if !prefix.is_empty() {
                    out.push(prefix.clone());
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(patch, &mut Vec::new(), &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn diff_keys_equals_the_full_diff() {
        let old = json!({"a": {"x": 1, "y": 2}, "b": [1], "c": null, "d": 4, "machine_state": "A"});
        let new =
            json!({"a": {"x": 1, "y": 3}, "b": [1], "c": null, "e": null, "machine_state": "B"});
        let keys: Vec<String> = ["a", "b", "c", "d", "e", "machine_state"]
            .iter()
            .map(|k| k.to_string())
            .collect();
        let before = old.as_object().unwrap().clone();
        let skip = ["machine_state"];
        assert_eq!(
            diff_keys(&before, &new, &keys, &skip),
            diff(&old, &new, &skip)
        );
        assert_eq!(
            diff_keys(&before, &new, &keys, &skip),
            json!({"a": {"y": 3}, "d": null, "e": null})
        );
    }

    #[test]
    fn diff_then_apply_roundtrips() {
        let old = json!({"a": {"x": 1, "y": 2}, "b": [1], "c": null, "machine_state": "A"});
        let new = json!({"a": {"x": 1, "y": 3}, "b": [1, 2], "c": {"k": 1}, "machine_state": "B"});
        let patch = diff(&old, &new, &["machine_state"]);
        assert_eq!(patch, json!({"a": {"y": 3}, "b": [1, 2], "c": {"k": 1}}));
        let mut applied = old.clone();
        apply(&mut applied, &patch);
        applied["machine_state"] = json!("B");
        assert_eq!(applied, new);
    }

    #[test]
    fn no_change_is_empty() {
        let s = json!({"a": 1});
        assert_eq!(diff(&s, &s, &[]), json!({}));
    }
}
