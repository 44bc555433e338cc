//! The handoff envelope: its canonical text (keys sorted, 2-space indent)
//! and its validation against the policy table — ownership, directive
//! allow-list and fields, launch-request policy, file confinement. Every
//! violation is listed; any one of them makes the handoff a protocol
//! violation.

use crate::engine::doc::{Printed, PrintedFields, print_fields, print_pretty};
use crate::engine::json_text;
use crate::engine::json_text::{Entry, Piece};
use crate::engine::patch::leaf_paths;
use crate::engine::phase::PhaseOutcome;
use crate::machine::Machine;
use crate::workspace::fsio::resolves_inside;
use rhai::Dynamic;
use serde_json::Value;
use std::borrow::Cow;
use std::path::Path;

/// Pretty JSON with sorted keys and a trailing newline.
pub fn to_pretty(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_else(|_| "null".into());
    s.push('\n');
    s
}

/// A state patch entry's value: its text at the depth it was printed, or the new
/// state's value, printed straight into the handoff.
enum PatchValue<'a> {
    Text(Cow<'a, str>, usize),
    State(&'a Dynamic),
}

/// A phase's handoff as written, and where its state patch is in the text.
#[derive(Debug)]
pub struct PrintedHandoff {
    /// The handoff, pretty, with a final newline (what [`to_pretty`] prints of the
    /// whole handoff).
    pub text: String,
    /// The bytes of `text` that hold the state patch's value.
    patch: std::ops::Range<usize>,
}

impl PrintedHandoff {
    /// The state patch's pretty text, as it is indented inside the handoff.
    pub fn patch(&self) -> &str {
        match self.text.get(self.patch.clone()) {
            Some(patch) if !patch.is_empty() => patch,
            _ => "null",
        }
    }
}

/// Prints `handoff`, whose state patch also holds the new `state`'s values at the keys
/// `from_state` names (see [`crate::engine::patch::Patch`]): their texts come from
/// `fields`, the state printed already, or are printed from `state` here.
pub fn print(
    handoff: &Value,
    from_state: &[String],
    state: Option<&Dynamic>,
    fields: Option<&PrintedFields>,
) -> Result<PrintedHandoff, String> {
    let pretty = |v: &Value| serde_json::to_string_pretty(v).unwrap_or_else(|_| "null".into());
    let Some(envelope) = handoff.as_object() else {
        let text = to_pretty(handoff);
        return Ok(PrintedHandoff { patch: 0..0, text });
    };
    // The patch's entries, when some are the state's: each value printed once.
    let state_map = state.and_then(|s| s.read_lock::<rhai::Map>());
    let patch_entries = match envelope.get("state_patch").and_then(Value::as_object) {
        Some(entries) if !from_state.is_empty() => {
            let mut texts: Vec<(&str, PatchValue)> = entries
                .iter()
                .map(|(k, v)| (k.as_str(), PatchValue::Text(Cow::Owned(pretty(v)), 0)))
                .collect();
            for key in from_state {
                // The state's text of it, else printed where it goes (two levels deep).
                let value = match fields.and_then(|f| f.text_of(key)) {
                    Some(piece) => PatchValue::Text(Cow::Borrowed(piece.text), piece.depth),
                    None => match state_map.as_ref().and_then(|m| m.get(key.as_str())) {
                        Some(v) => PatchValue::State(v),
                        None => PatchValue::Text(Cow::Borrowed("null"), 0),
                    },
                };
                texts.push((key.as_str(), value));
            }
            texts.sort_by(|a, b| a.0.cmp(b.0));
            Some(texts)
        }
        _ => None,
    };
    // The envelope (sorted already), its state patch written in place: one pass over a
    // pool. `None`: the patch whose values are the state's.
    let texts: Vec<(&str, Option<String>)> = envelope
        .iter()
        .map(|(k, v)| match (k.as_str(), &patch_entries) {
            ("state_patch", Some(_)) => (k.as_str(), None),
            _ => (k.as_str(), Some(pretty(v))),
        })
        .collect();
    let entries = texts.iter().map(|(k, text)| {
        let entry = match text {
            Some(t) => Entry::Text(Piece::top(t)),
            None => {
                let pieces = patch_entries.iter().flatten();
                let pieces = pieces.map(|(k, value)| {
                    let entry = match value {
                        PatchValue::Text(text, depth) => Entry::Text(Piece {
                            text,
                            depth: *depth,
                        }),
                        PatchValue::State(value) => Entry::Value(value),
                    };
                    (*k, entry)
                });
                Entry::Object(pieces.collect())
            }
        };
        (*k, entry)
    });
    let mut text = String::new();
    let ranges = json_text::push_object(&mut text, entries.collect(), 0)?;
    text.push('\n');
    let at = envelope.keys().position(|k| k == "state_patch");
    let patch = at.and_then(|i| ranges.get(i).cloned()).unwrap_or(0..0);
    Ok(PrintedHandoff { text, patch })
}

/// Prints `outcome`'s handoff and, with `print_state`, its new state. The state is
/// printed field by field, and the values the state patch holds whole are taken from
/// those texts: a proposal pool is printed once for both.
pub fn print_outcome(
    outcome: &PhaseOutcome,
    print_state: bool,
) -> Result<(PrintedHandoff, Option<Printed>), String> {
    let state = outcome.new_state.as_ref().filter(|_| print_state);
    let fields = match state {
        Some(s) => print_fields(s)?,
        None => None,
    };
    crate::engine::timing::mark("print state");
    let handoff = print(
        &outcome.handoff,
        &outcome.patch_from_state,
        outcome.new_state.as_ref(),
        fields.as_ref(),
    )?;
    let printed_state = match (state, fields) {
        (_, Some(f)) => Some(f.into_printed()),
        (Some(s), None) => Some(print_pretty(s)?),
        (None, None) => None,
    };
    Ok((handoff, printed_state))
}

/// Every way `handoff` breaks the policy, for `agent`, with files resolved from `base`;
/// its state patch also sets the top-level keys `from_state` names.
pub fn violations(
    machine: &Machine,
    agent: &str,
    handoff: &Value,
    from_state: &[String],
    base: &Path,
) -> Vec<String> {
    let policy = &machine.policy;
    let mut out = Vec::new();
    let Some(h) = handoff.as_object() else {
        return vec!["handoff is not a JSON object".into()];
    };
    for key in &policy.legacy_keys {
        if h.contains_key(key) {
            out.push(format!("legacy handoff key `{key}` is not allowed"));
        }
    }
    if h.get("schema_version").and_then(Value::as_i64) != Some(policy.handoff_schema_version) {
        out.push(format!(
            "schema_version must be {}",
            policy.handoff_schema_version
        ));
    }
    if h.get("control_agent").and_then(Value::as_str) != Some(agent) {
        out.push(format!("control_agent must be `{agent}`"));
    }
    match h.get("recommended_next_machine_state") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if machine.states.states.contains_key(s) => {}
        Some(other) => out.push(format!(
            "recommended_next_machine_state {other} is not a machine state"
        )),
    }
    let owns: Vec<&str> = machine
        .agent(agent)
        .map(|a| a.table.owns.iter().map(String::as_str).collect())
        .unwrap_or_default();
    match h.get("state_patch") {
        None | Some(Value::Null) => {}
        Some(p @ Value::Object(_)) => {
            let named = from_state.iter().map(|k| vec![k.clone()]);
            let mut paths: Vec<Vec<String>> = leaf_paths(p).into_iter().chain(named).collect();
            paths.sort();
            for path in paths {
                let top = path[0].as_str();
                if !owns.contains(&top) {
                    out.push(format!(
                        "state_patch path `{}` is not owned by `{agent}`",
                        path.join(".")
                    ));
                }
            }
        }
        Some(_) => out.push("state_patch must be an object or null".into()),
    }
    match h.get("directives") {
        Some(Value::Array(items)) => {
            for (i, d) in items.iter().enumerate() {
                directive_violations(machine, i, d, base, &mut out);
            }
        }
        _ => out.push("directives must be a list".into()),
    }
    match h.get("launch_requests") {
        Some(Value::Array(items)) => {
            for (i, l) in items.iter().enumerate() {
                launch_violations(machine, i, l, base, &mut out);
            }
        }
        _ => out.push("launch_requests must be a list".into()),
    }
    out
}

fn directive_violations(
    machine: &Machine,
    i: usize,
    d: &Value,
    base: &Path,
    out: &mut Vec<String>,
) {
    let policy = &machine.policy;
    let Some(obj) = d.as_object() else {
        out.push(format!("directives[{i}] is not an object"));
        return;
    };
    let action = obj
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if action.is_empty() {
        out.push(format!("directives[{i}] has no action"));
        return;
    }
    if obj
        .get("reason")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        out.push(format!("directives[{i}] `{action}` has no reason"));
    }
    if policy.blocked_directives.iter().any(|b| b == action) {
        out.push(format!("directives[{i}]: action `{action}` is blocked"));
        return;
    }
    let Some(dp) = policy.directives.get(action) else {
        out.push(format!("directives[{i}]: unknown action `{action}`"));
        return;
    };
    for field in &dp.required {
        if obj.get(field).is_none_or(Value::is_null) {
            out.push(format!(
                "directives[{i}] `{action}` lacks required field `{field}`"
            ));
        }
    }
    for field in &policy.confinement.result_fields {
        if let Some(path) = obj.get(field).and_then(Value::as_str)
            && !policy
                .confinement
                .result_dirs
                .iter()
                .any(|dir| resolves_inside(base, path, dir))
        {
            out.push(format!(
                "directives[{i}] `{action}`: {field} `{path}` escapes the result directories"
            ));
        }
    }
    for (field, layout_key) in &policy.confinement.fixed_fields {
        if let Some(path) = obj.get(field).and_then(Value::as_str) {
            let expected = policy
                .orchestrator
                .layout
                .get(layout_key)
                .map(String::as_str)
                .unwrap_or(layout_key);
            if crate::workspace::fsio::normalize(Path::new(path)) != Path::new(expected) {
                out.push(format!(
                    "directives[{i}] `{action}`: {field} must be `{expected}`, got `{path}`"
                ));
            }
        }
    }
}

fn launch_violations(machine: &Machine, i: usize, l: &Value, base: &Path, out: &mut Vec<String>) {
    let policy = &machine.policy;
    let Some(obj) = l.as_object() else {
        out.push(format!("launch_requests[{i}] is not an object"));
        return;
    };
    for field in ["worker_ref", "model_class", "task_file", "result_file"] {
        if obj
            .get(field)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            out.push(format!("launch_requests[{i}] lacks `{field}`"));
        }
    }
    if obj.contains_key("slot_class") != obj.contains_key("mode") {
        out.push(format!(
            "launch_requests[{i}]: slot_class and mode come together or not at all"
        ));
    }
    let worker = obj
        .get("worker_ref")
        .and_then(Value::as_str)
        .unwrap_or_default();
    match policy.workers.get(worker) {
        None => out.push(format!("launch_requests[{i}]: unknown worker `{worker}`")),
        Some(wp) if !wp.launchable => out.push(format!(
            "launch_requests[{i}]: `{worker}` is directive-only and cannot be launched"
        )),
        Some(wp) => {
            for (key, expected) in [
                ("slot_class", &wp.slot_class),
                ("mode", &wp.mode),
                ("model_class", &wp.model_class),
            ] {
                if let (Some(e), Some(got)) = (expected, obj.get(key).and_then(Value::as_str))
                    && e != got
                {
                    out.push(format!(
                        "launch_requests[{i}]: `{worker}` needs {key} `{e}`, got `{got}`"
                    ));
                }
            }
        }
    }
    let c = &policy.confinement;
    if let Some(p) = obj.get("task_file").and_then(Value::as_str)
        && !c.task_dirs.iter().any(|d| resolves_inside(base, p, d))
    {
        out.push(format!(
            "launch_requests[{i}]: task_file `{p}` escapes the task directories"
        ));
    }
    if let Some(p) = obj.get("result_file").and_then(Value::as_str)
        && !c.result_dirs.iter().any(|d| resolves_inside(base, p, d))
    {
        out.push(format!(
            "launch_requests[{i}]: result_file `{p}` escapes the result directories"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::doc::from_json;
    use crate::engine::json_text::{compact, strategies::json_values};
    use crate::engine::patch::Patch;
    use proptest::prelude::*;
    use serde_json::json;

    proptest! {
        /// The printed handoff is the whole handoff printed, whether the named values
        /// come from the printed state or are printed on their own; the journal's patch
        /// is the patch printed compactly.
        #[test]
        fn a_handoff_printed_in_pieces_is_the_whole_handoff_printed(
            values in prop::collection::vec(json_values(), 5),
            named in prop::collection::vec(any::<bool>(), 6),
        ) {
            let keys = ["a", "b \"q\"", "c", "d", "e", "missing"];
            let state: serde_json::Map<String, Value> = keys[..5]
                .iter()
                .zip(&values)
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let state = from_json(&Value::Object(state));
            let from_state: Vec<String> = keys
                .iter()
                .zip(&named)
                .filter(|(_, n)| **n)
                .map(|(k, _)| k.to_string())
                .collect();
            let json_part: serde_json::Map<String, Value> = keys[..5]
                .iter()
                .zip(&values)
                .zip(&named)
                .filter(|(_, n)| !**n)
                .map(|((k, v), _)| (format!("{k}_json"), v.clone()))
                .collect();
            let handoff = json!({"control_agent": "x", "state_patch": json_part,
                                 "summary": "s\n\"t\"", "warnings": [1, {"w": []}], "z": {}});
            let whole = Patch::complete(&handoff, &from_state, Some(&state));
            let fields = print_fields(&state).unwrap();
            for fields in [None, fields.as_ref()] {
                let printed = print(&handoff, &from_state, Some(&state), fields).unwrap();
                prop_assert_eq!(&printed.text, &to_pretty(&whole));
                prop_assert_eq!(
                    compact(printed.patch()),
                    serde_json::to_string(&whole["state_patch"]).unwrap()
                );
            }
        }
    }

    #[test]
    fn a_handoff_without_a_patch_has_a_null_patch() {
        let handoff = json!({"control_agent": "x", "state_patch": null});
        let printed = print(&handoff, &[], None, None).unwrap();
        assert_eq!(printed.text, to_pretty(&handoff));
        assert_eq!(printed.patch(), "null");
        let printed = print(&json!([1]), &[], None, None).unwrap();
        assert_eq!(
            (printed.text.as_str(), printed.patch()),
            ("[\n  1\n]\n", "null")
        );
    }
}
