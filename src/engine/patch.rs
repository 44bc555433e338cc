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
