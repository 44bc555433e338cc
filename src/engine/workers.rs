//! Worker launch requests: filling in what the worker policy decides
//! (slot class, mode, model class, preferred model) and resolving a model
//! class to a concrete model, first available wins.

use crate::machine::model::PolicyTable;
use serde_json::{Value, json};

/// Fills policy fields the request lacks and `preferred_model`.
pub fn fill_policy(policy: &PolicyTable, request: &mut Value, available: &[String]) {
    let Some(obj) = request.as_object_mut() else {
        return;
    };
    let worker = obj
        .get("worker_ref")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(wp) = policy.workers.get(&worker) {
        for (key, value) in [
            ("slot_class", &wp.slot_class),
            ("mode", &wp.mode),
            ("model_class", &wp.model_class),
        ] {
            if let Some(v) = value {
                obj.entry(key).or_insert_with(|| json!(v));
            }
        }
    }
    if !obj.contains_key("preferred_model") {
        let class = obj
            .get("model_class")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if let Some(model) = resolve_model(policy, class, available) {
            obj.insert("preferred_model".into(), json!(model));
        }
    }
}

/// The model for `class`: with no host list, the first entry; else the first entry the host
/// offers, preferring a newer version of the same family.
pub fn resolve_model(policy: &PolicyTable, class: &str, available: &[String]) -> Option<String> {
    let candidates = policy.model_classes.get(class)?;
    if available.is_empty() {
        return candidates.first().cloned();
    }
    for candidate in candidates {
        let (family, version) = split_version(candidate);
        let best = available
            .iter()
            .filter_map(|m| {
                let (f, v) = split_version(m);
                (f == family && v >= version).then_some((v, m))
            })
            .max_by(|a, b| a.0.cmp(&b.0));
        if let Some((_, m)) = best {
            return Some(m.clone());
        }
    }
    None
}

/// `claude-opus-4.6` → (`claude-opus`, [4, 6]).
fn split_version(model: &str) -> (&str, Vec<u64>) {
    match model.rsplit_once('-') {
        Some((family, ver))
            if ver
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) =>
        {
            (
                family,
                ver.split('.').filter_map(|p| p.parse().ok()).collect(),
            )
        }
        _ => (model, vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::split_version;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(
            split_version("claude-opus-4.6"),
            ("claude-opus", vec![4, 6])
        );
        assert!(split_version("gpt-5.10").1 > split_version("gpt-5.4").1);
        assert_eq!(split_version("mystery"), ("mystery", vec![]));
    }
}
