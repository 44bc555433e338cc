//! State patches: the minimal recursive diff between two states, and its
//! application. Objects are diffed key by key; anything else is replaced
//! whole. A key that disappears is written as `null`.
//!
//! A phase's patch ([`Patch`]) does not copy the top-level values it replaces
//! whole: it names them, and they are printed from the new state (for a large
//! campaign they are whole proposal pools, which the state prints anyway).

use crate::engine::doc::{from_json, same, to_json};
use rhai::{Dynamic, Map};
use serde_json::Value;

/// JSON object (the patch being built).
type JsonMap = serde_json::Map<String, Value>;

/// Minimal recursive patch that turns `old` into `new`, skipping `skip` keys at the top level.
pub fn diff(old: &Value, new: &Value, skip: &[&str]) -> Value {
    let new = from_json(new);
    diff_values(&from_json(old), &new, skip).to_value(Some(&new))
}

/// A phase's state patch: a JSON object, less the top-level keys whose new value (not
/// a map) replaces the old one whole; those are named, and their values are the new
/// state's.
#[derive(Debug, Clone, PartialEq)]
pub struct Patch {
    /// The patch without the keys in `from_state` (an object).
    pub json: Value,
    /// Top-level keys whose patch value is the new state's value there, whole.
    pub from_state: Vec<String>,
}

impl Patch {
    /// The patch of an agent that patches no state.
    pub fn null() -> Self {
        Self {
            json: Value::Null,
            from_state: Vec::new(),
        }
    }

    /// No change.
    pub fn empty() -> Self {
        Self {
            json: Value::Object(JsonMap::new()),
            from_state: Vec::new(),
        }
    }

    /// True when the patch changes nothing (a `null` patch, of an agent that patches no
    /// state, counts as empty).
    pub fn is_empty(&self) -> bool {
        self.from_state.is_empty() && self.json.as_object().is_none_or(JsonMap::is_empty)
    }

    /// `handoff` with its state patch complete: the values `from_state` names taken from
    /// `state` (borrowed as it is when it names none).
    pub fn complete<'h>(
        handoff: &'h Value,
        from_state: &[String],
        state: Option<&Dynamic>,
    ) -> std::borrow::Cow<'h, Value> {
        if from_state.is_empty() {
            return std::borrow::Cow::Borrowed(handoff);
        }
        let mut h = handoff.clone();
        if let Some(obj) = h.as_object_mut() {
            let patch = Self {
                json: obj.remove("state_patch").unwrap_or(Value::Null),
                from_state: from_state.to_vec(),
            };
            obj.insert("state_patch".into(), patch.to_value(state));
        }
        std::borrow::Cow::Owned(h)
    }

    /// The patch as one JSON object, its named values taken from `state` (`null` for a
    /// value `state` does not have, as the handoff prints it).
    pub fn to_value(&self, state: Option<&Dynamic>) -> Value {
        let mut out = self.json.clone();
        let map = state.and_then(|s| s.read_lock::<Map>());
        if let Some(obj) = out.as_object_mut() {
            for key in &self.from_state {
                let value = map
                    .as_ref()
                    .and_then(|m| m.get(key.as_str()))
                    .map_or(Value::Null, to_json);
                obj.insert(key.clone(), value);
            }
        }
        out
    }
}

/// [`diff`] of two script values (states are held as script values), whole top-level
/// values named (see [`Patch`]).
pub fn diff_values(old: &Dynamic, new: &Dynamic, skip: &[&str]) -> Patch {
    let empty = Map::new();
    let old_lock = old.read_lock::<Map>();
    let old_map = old_lock.as_deref().unwrap_or(&empty);
    let mut patch = Patch::empty();
    let Some(new_map) = new.read_lock::<Map>() else {
        return patch;
    };
    let mut out = JsonMap::new();
    diff_maps(
        old_map,
        &new_map,
        skip,
        &mut out,
        Some(&mut patch.from_state),
    );
    patch.json = Value::Object(out);
    patch
}

/// [`diff_values`] where only `keys` can differ: `old` holds those of them the old state
/// had, `new` is the whole new state. Equal to `diff_values(old_state, new)` for such
/// states, but for the order of the names (every reader sorts them).
pub fn diff_keys(old: &Map, new: &Dynamic, keys: &[String], skip: &[&str]) -> Patch {
    let mut out = JsonMap::new();
    let mut patch = Patch::empty();
    let empty = Map::new();
    let new_lock = new.read_lock::<Map>();
    let new_map = new_lock.as_deref().unwrap_or(&empty);
    for key in keys.iter().filter(|k| !skip.contains(&k.as_str())) {
        diff_entry(
            key,
            old.get(key.as_str()),
            new_map.get(key.as_str()),
            &mut out,
            Some(&mut patch.from_state),
        );
    }
    patch.json = Value::Object(out);
    patch
}

/// Whether `value` is a field left unread that is not a list (it may hold a map).
fn unread_other_than_list(value: &Dynamic) -> bool {
    crate::engine::unread::may_be_unread(value)
        && value
            .read_lock::<crate::engine::unread::Unread>()
            .is_some_and(|field| !field.is_list())
}

/// Diffs two maps into `out`; with `named`, a value replaced whole is named there
/// instead of converted (the top level of a [`Patch`]).
fn diff_maps(
    old: &Map,
    new: &Map,
    skip: &[&str],
    out: &mut JsonMap,
    mut named: Option<&mut Vec<String>>,
) {
    let kept = |key: &str| !skip.contains(&key);
    for (key, new_value) in new.iter().filter(|(k, _)| kept(k.as_str())) {
        diff_entry(
            key,
            old.get(key.as_str()),
            Some(new_value),
            out,
            named.as_deref_mut(),
        );
    }
    for key in old.keys().filter(|k| kept(k.as_str())) {
        if !new.contains_key(key.as_str()) {
            out.insert(key.to_string(), Value::Null);
        }
    }
}

/// The patch entry of one key: nothing when equal, the inner diff of two maps, `null`
/// for a key that disappears, the new value otherwise (named in `named`, when given).
fn diff_entry(
    key: &str,
    old: Option<&Dynamic>,
    new: Option<&Dynamic>,
    out: &mut JsonMap,
    named: Option<&mut Vec<String>>,
) {
    match (old, new) {
        (Some(o), Some(n)) if same(o, n) => {}
        (Some(o), Some(n)) if o.is_map() && n.is_map() => {
            let mut inner = JsonMap::new();
            if let (Some(o), Some(n)) = (o.read_lock::<Map>(), n.read_lock::<Map>()) {
                diff_maps(&o, &n, &[], &mut inner, None);
            }
            if !inner.is_empty() {
                out.insert(key.to_string(), Value::Object(inner));
            }
        }
        // A map stays in the JSON patch: its keys are paths the ownership check walks
        // (and so does a field left unread that may hold one: not a list).
        (_, Some(n)) => match named {
            Some(named) if !n.is_map() && !unread_other_than_list(n) => named.push(key.to_string()),
            _ => {
                out.insert(key.to_string(), to_json(n));
            }
        },
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
        let new = json!({"a": {"x": 1, "y": 3}, "b": [1], "c": null, "e": null, "f": {"k": [2]},
                         "machine_state": "B"});
        let keys: Vec<String> = ["a", "b", "c", "d", "e", "f", "machine_state"]
            .iter()
            .map(|k| k.to_string())
            .collect();
        let before = from_json(&old).cast::<Map>();
        let new_value = from_json(&new);
        let skip = ["machine_state"];
        let patch = diff_keys(&before, &new_value, &keys, &skip);
        assert_eq!(patch, diff_values(&from_json(&old), &new_value, &skip));
        assert_eq!(patch.to_value(Some(&new_value)), diff(&old, &new, &skip));
        assert_eq!(
            patch.to_value(Some(&new_value)),
            json!({"a": {"y": 3}, "d": null, "e": null, "f": {"k": [2]}})
        );
        // Whole top-level values are named, not copied; maps, nested values and
        // removals are not.
        assert_eq!(patch.from_state, ["e"]);
        assert_eq!(
            patch.json,
            json!({"a": {"y": 3}, "d": null, "f": {"k": [2]}})
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
