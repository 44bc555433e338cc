//! State patches: the minimal recursive diff between two states, and its
//! application. Objects are diffed key by key; anything else is replaced
//! whole. A key that disappears is written as `null`.

use crate::engine::doc::{from_json, same, to_json};
use rhai::{Dynamic, Map};
use serde_json::Value;

/// JSON object (the patch being built).
type JsonMap = serde_json::Map<String, Value>;

/// Minimal recursive patch that turns `old` into `new`, skipping `skip` keys at the top level.
pub fn diff(old: &Value, new: &Value, skip: &[&str]) -> Value {
    diff_values(&from_json(old), &from_json(new), skip)
}

/// [`diff`] of two script values (states are held as script values).
pub fn diff_values(old: &Dynamic, new: &Dynamic, skip: &[&str]) -> Value {
    let empty = Map::new();
    let old_lock = old.read_lock::<Map>();
    let old_map = old_lock.as_deref().unwrap_or(&empty);
    let Some(new_map) = new.read_lock::<Map>() else {
        return Value::Object(JsonMap::new());
    };
    let mut out = JsonMap::new();
    diff_maps(old_map, &new_map, skip, &mut out);
    Value::Object(out)
}

/// [`diff_values`] where only `keys` can differ: `old` holds those of them the old state
/// had, `new` is the whole new state. Equal to `diff_values(old_state, new)` for such states.
pub fn diff_keys(old: &Map, new: &Dynamic, keys: &[String], skip: &[&str]) -> Value {
    let mut out = JsonMap::new();
    let empty = Map::new();
    let new_lock = new.read_lock::<Map>();
    let new_map = new_lock.as_deref().unwrap_or(&empty);
    for key in keys.iter().filter(|k| !skip.contains(&k.as_str())) {
        diff_entry(
            key,
            old.get(key.as_str()),
            new_map.get(key.as_str()),
            &mut out,
        );
    }
    Value::Object(out)
}

fn diff_maps(old: &Map, new: &Map, skip: &[&str], out: &mut JsonMap) {
    let kept = |key: &str| !skip.contains(&key);
    for (key, new_value) in new.iter().filter(|(k, _)| kept(k.as_str())) {
        diff_entry(key, old.get(key.as_str()), Some(new_value), out);
    }
    for key in old.keys().filter(|k| kept(k.as_str())) {
        if !new.contains_key(key.as_str()) {
            out.insert(key.to_string(), Value::Null);
        }
    }
}

/// The patch entry of one key: nothing when equal, the inner diff of two maps, `null`
/// for a key that disappears, the new value otherwise.
fn diff_entry(key: &str, old: Option<&Dynamic>, new: Option<&Dynamic>, out: &mut JsonMap) {
    match (old, new) {
        (Some(o), Some(n)) if same(o, n) => {}
        (Some(o), Some(n)) if o.is_map() && n.is_map() => {
            let mut inner = JsonMap::new();
            if let (Some(o), Some(n)) = (o.read_lock::<Map>(), n.read_lock::<Map>()) {
                diff_maps(&o, &n, &[], &mut inner);
            }
            if !inner.is_empty() {
                out.insert(key.to_string(), Value::Object(inner));
            }
        }
        (_, Some(n)) => {
            out.insert(key.to_string(), to_json(n));
        }
        (Some(_), None) => {
            out.insert(key.to_string(), Value::Null);
        }
        (None, None) => {}
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
        let before = from_json(&old).cast::<Map>();
        let new_value = from_json(&new);
        let skip = ["machine_state"];
        assert_eq!(
            diff_keys(&before, &new_value, &keys, &skip),
            diff(&old, &new, &skip)
        );
        assert_eq!(
            diff_keys(&before, &new_value, &keys, &skip),
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
