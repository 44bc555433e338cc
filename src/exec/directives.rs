//! Directive execution. The policy table says how each action is carried
//! out (its `executor` kind); this module knows the kinds, not the actions:
//! built-in effects on project files, and backend operations that go to the
//! host, the local smoke-test runner or the simulated backend.

use crate::exec::marked_block;
use crate::machine::Machine;
use crate::workspace::fsio::{self, write_atomic};
use rhai::Dynamic;
use serde_json::{Value, json};
use std::path::Path;

/// Who executes backend (`external`) directives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// Leave them to the host (reported in the `--json` turn).
    #[default]
    Host,
    /// Run the smoke test locally; leave launch and poll to the host.
    Local,
    /// Simulated backend: everything offline and deterministic.
    Sim,
}

fn field<'a>(d: &'a Value, name: &str) -> &'a str {
    d.get(name).and_then(Value::as_str).unwrap_or_default()
}

/// Executes every built-in directive of `list` with the post-step `state`; returns what
/// happened. The handoff's state patch also holds `state`'s values at the keys
/// `from_state` names (see [`crate::engine::patch::Patch`]).
pub fn execute_builtin(
    machine: &Machine,
    list: &[Value],
    state: Option<&rhai::Dynamic>,
    handoff: &Value,
    from_state: &[String],
) -> Result<Vec<Value>, String> {
    let mut done = Vec::new();
    for d in list {
        let action = field(d, "action");
        let Some(policy) = machine.policy.directives.get(action) else {
            continue;
        };
        let outcome = match policy.executor.as_str() {
            "remove_block" => {
                let path = field(d, policy.path_field.as_deref().unwrap_or_default());
                let markers = policy.markers.as_deref().and_then(|m| machine.vars.get(m));
                let begin = markers
                    .and_then(|m| m.get("begin"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let end = markers
                    .and_then(|m| m.get("end"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match fsio::read_text_capped(Path::new(path)) {
                    Ok(text) => match marked_block::removed(&text, begin, end) {
                        Some(new) => {
                            write_atomic(Path::new(path), new.as_bytes())
                                .map_err(|e| format!("{path}: {e}"))?;
                            "block removed".to_string()
                        }
                        None => "no block present".to_string(),
                    },
                    Err(_) => "file absent".to_string(),
                }
            }
            "render_report" => {
                let template = policy.template.as_deref().unwrap_or_default();
                let mut out = policy.output.clone().unwrap_or_default();
                if let Some(obj) = d.as_object() {
                    for (k, v) in obj {
                        let text = v
                            .as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| v.to_string());
                        out = out.replace(&format!("{{{k}}}"), &text);
                    }
                }
                let handoff = (handoff, from_state);
                let text = render_report(machine, template, d, state, handoff)?;
                write_atomic(Path::new(&out), text.as_bytes())
                    .map_err(|e| format!("{out}: {e}"))?;
                format!("wrote {out}")
            }
            "delete_file" => {
                let path = field(d, policy.path_field.as_deref().unwrap_or_default());
                match std::fs::remove_file(path) {
                    Ok(()) => format!("deleted {path}"),
                    Err(_) => "file absent".to_string(),
                }
            }
            "noop" => "nothing to do".to_string(),
            _ => continue,
        };
        done.push(json!({"action": action, "outcome": outcome}));
    }
    Ok(done)
}

/// Renders report `template`; `handoff` is the handoff and the keys its state patch
/// takes from `state` (see [`crate::engine::patch::Patch`]).
fn render_report(
    machine: &Machine,
    template: &str,
    directive: &Value,
    state: Option<&rhai::Dynamic>,
    (handoff, from_state): (&Value, &[String]),
) -> Result<String, String> {
    if !machine.templates.contains(template) {
        return Err(format!("unknown report template `{template}`"));
    }
    let load = fsio::read_text_capped(Path::new(crate::exec::step::layout(
        machine,
        "load_handoff",
    )))
    .ok()
    .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    .unwrap_or(Value::Null);
    let status = state
        .and_then(|s| crate::engine::doc::field_str(s, "status"))
        .map(|s| json!(s))
        .or_else(|| {
            handoff["recommended_next_machine_state"]
                .as_str()
                .and_then(|s| machine.status_of(s))
                .map(|s| json!(s))
        })
        .unwrap_or(Value::Null);
    let to_dynamic = crate::engine::sandbox::to_dynamic;
    // The state and the handoff (which can hold whole pools) are shown as the fields the
    // template reads: a large state was converted and copied three times per report.
    let fields = |entry: &str| machine.templates.fields_read(template, entry);
    let handoff_fields = fields("handoff");
    // The patch whole only for a template that reads it.
    let reads_patch = handoff_fields
        .as_ref()
        .is_none_or(|keys| keys.iter().any(|k| k == "state_patch"));
    let from_state = if reads_patch { from_state } else { &[] };
    let handoff = crate::engine::patch::Patch::complete(handoff, from_state, state);
    let handoff = handoff.as_ref();
    let state = state.map_or(Dynamic::UNIT, |s| {
        crate::engine::doc::view_read(s, fields("state").as_deref())
    });
    let handoff = match (handoff_fields, handoff.as_object()) {
        (Some(keys), Some(h)) => to_dynamic(&Value::Object(
            h.iter()
                .filter(|(k, _)| keys.contains(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )),
        _ => to_dynamic(handoff),
    };
    let mut ctx = rhai::Map::new();
    ctx.insert("directive".into(), to_dynamic(directive));
    ctx.insert("state".into(), state);
    ctx.insert("status".into(), to_dynamic(&status));
    ctx.insert("handoff".into(), handoff);
    let campaign_name = load.get("campaign_id").cloned().unwrap_or(Value::Null);
    ctx.insert("campaign_name".into(), to_dynamic(&campaign_name));
    let max_budget = load
        .get("compute")
        .and_then(|c| c.get("max_budget_usd"))
        .cloned()
        .unwrap_or(Value::Null);
    ctx.insert("max_budget".into(), to_dynamic(&max_budget));
    ctx.insert("load".into(), to_dynamic(&load));
    crate::engine::render::render_with(
        &machine.templates,
        &machine.sandbox.engine,
        template,
        ctx.into(),
    )
}

/// Executes backend directives the chosen executor handles; returns (executed, left to host).
pub fn execute_external(
    machine: &Machine,
    opts: &crate::exec::step::StepOptions,
    list: &[Value],
) -> Result<(Vec<Value>, Vec<Value>), String> {
    let mut done = Vec::new();
    let mut left = Vec::new();
    for d in list {
        let action = field(d, "action");
        let Some(policy) = machine.policy.directives.get(action) else {
            continue;
        };
        if policy.executor != "external" {
            continue;
        }
        let result_file = field(d, "result_file");
        if !result_file.is_empty() && Path::new(result_file).exists() {
            done.push(
                json!({"action": action, "outcome": "result already present; not executed again"}),
            );
            continue;
        }
        let operation = policy.operation.as_deref().unwrap_or_default();
        let outcome = match (opts.executor, operation) {
            (ExecutorKind::Sim, op) => Some(crate::exec::sim::backend(op, d, opts.seed)?),
            (ExecutorKind::Local, "smoke_test") => Some(crate::exec::smoke::run(d)?),
            _ => None,
        };
        match outcome {
            Some(o) => done.push(json!({"action": action, "outcome": o})),
            None => left.push(d.clone()),
        }
    }
    Ok((done, left))
}
