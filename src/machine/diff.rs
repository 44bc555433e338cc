//! `metaopt machine diff OLD NEW`: what a change to the tables does to the
//! machine, at the level a reviewer thinks in — states, transitions, guards,
//! rule order, ownership, directive and worker policy — rather than YAML
//! lines. Both sides are compared as parsed structures, so a reformat, a
//! reordered map key or a new comment is "no semantic change".

use super::graph::{FlatItem, FlatPhase, FlatRule, RawAgent, RawMachine, Target, normalize_ws};
use indexmap::IndexMap;
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// One semantic difference between two machines.
#[derive(Debug, Clone, Serialize)]
pub struct Change {
    /// Stable kind slug (`transition-retargeted`, `guard-changed`, …).
    pub kind: &'static str,
    /// What changed: a state, `short_name.phase: rule`, `policy.directives.x`, a file.
    pub subject: String,
    /// One-line description.
    pub message: String,
    /// The old value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub old: Option<Value>,
    /// The new value, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new: Option<Value>,
}

fn to_json<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).unwrap_or(Value::Null)
}

struct Diff {
    changes: Vec<Change>,
}

impl Diff {
    fn add(&mut self, kind: &'static str, subject: impl Into<String>, message: impl Into<String>) {
        self.changes.push(Change {
            kind,
            subject: subject.into(),
            message: message.into(),
            old: None,
            new: None,
        });
    }

    fn add_values(
        &mut self,
        kind: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        old: Value,
        new: Value,
    ) {
        self.changes.push(Change {
            kind,
            subject: subject.into(),
            message: message.into(),
            old: Some(old),
            new: Some(new),
        });
    }

    /// Added / removed / changed entries of two keyed maps, compared as JSON.
    fn keyed<T: Serialize>(
        &mut self,
        kinds: (&'static str, &'static str, &'static str),
        prefix: &str,
        old: &IndexMap<String, T>,
        new: &IndexMap<String, T>,
    ) {
        for (k, v) in old {
            match new.get(k) {
                None => self.add(kinds.1, format!("{prefix}{k}"), "removed"),
                Some(n) => {
                    let (o, n) = (to_json(v), to_json(n));
                    if o != n {
                        let what = changed_fields(&o, &n);
                        self.add_values(kinds.2, format!("{prefix}{k}"), what, o, n);
                    }
                }
            }
        }
        for (k, v) in new {
            if !old.contains_key(k) {
                self.add_values(
                    kinds.0,
                    format!("{prefix}{k}"),
                    "added",
                    Value::Null,
                    to_json(v),
                );
            }
        }
    }
}

/// "field a: x -> y; field b: …" for two JSON objects, or the whole values otherwise.
fn changed_fields(old: &Value, new: &Value) -> String {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            keys.into_iter()
                .filter(|k| o.get(*k) != n.get(*k))
                .map(|k| {
                    format!(
                        "{k}: {} -> {}",
                        short(o.get(k).unwrap_or(&Value::Null)),
                        short(n.get(k).unwrap_or(&Value::Null))
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        }
        _ => format!("{} -> {}", short(old), short(new)),
    }
}

fn short(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if s.chars().count() > 120 {
        format!("{}…", s.chars().take(120).collect::<String>())
    } else {
        s
    }
}

fn set_delta(old: &[String], new: &[String]) -> String {
    let added: Vec<String> = new
        .iter()
        .filter(|x| !old.contains(x))
        .map(|x| format!("+{x}"))
        .collect();
    let removed: Vec<String> = old
        .iter()
        .filter(|x| !new.contains(x))
        .map(|x| format!("-{x}"))
        .collect();
    let mut all = added;
    all.extend(removed);
    if all.is_empty() {
        "same entries, new order".to_string()
    } else {
        all.join(" ")
    }
}

fn target_text(t: &Target) -> String {
    match t {
        Target::Error => "runtime error".to_string(),
        Target::Stay => "stay".to_string(),
        Target::To(s) => s.clone(),
        Target::Computed(e) => normalize_ws(e),
    }
}

/// Every semantic change from `old` to `new`, in table order.
pub fn diff(old: &RawMachine, new: &RawMachine) -> Vec<Change> {
    let mut d = Diff {
        changes: Vec::new(),
    };
    if old.states.initial != new.states.initial {
        d.add_values(
            "initial-changed",
            "initial",
            format!("{} -> {}", old.states.initial, new.states.initial),
            json!(old.states.initial),
            json!(new.states.initial),
        );
    }
    states(&mut d, old, new);
    agents(&mut d, old, new);
    policy(&mut d, old, new);
    files(&mut d, old, new);
    d.changes
}

fn states(d: &mut Diff, old: &RawMachine, new: &RawMachine) {
    for (name, o) in &old.states.states {
        let Some(n) = new.states.states.get(name) else {
            d.add("state-removed", name, "removed");
            continue;
        };
        let phases = |def: &super::model::StateDef| -> Value {
            def.phases
                .iter()
                .map(|c| json!({"phase": c.phase, "when": c.when.as_deref().map(normalize_ws)}))
                .collect()
        };
        let fields = [
            ("kind", to_json(&o.kind), to_json(&n.kind)),
            ("status", json!(o.status), json!(n.status)),
            ("agent", json!(o.agent), json!(n.agent)),
            ("phases", phases(o), phases(n)),
            ("cleanup", json!(o.cleanup), json!(n.cleanup)),
            ("description", json!(o.description), json!(n.description)),
        ];
        for (field, ov, nv) in fields {
            if ov == nv {
                continue;
            }
            let message = if field == "cleanup" {
                format!("cleanup {}", set_delta(&o.cleanup, &n.cleanup))
            } else {
                format!("{field}: {} -> {}", short(&ov), short(&nv))
            };
            d.add_values("state-changed", format!("{name}.{field}"), message, ov, nv);
        }
    }
    for (name, n) in &new.states.states {
        if !old.states.states.contains_key(name) {
            let agent = n.agent.as_deref().unwrap_or("no agent");
            d.add_values(
                "state-added",
                name,
                format!(
                    "added ({}, {agent})",
                    to_json(&n.kind).as_str().unwrap_or("")
                ),
                Value::Null,
                to_json(n),
            );
        }
    }
}

fn agents(d: &mut Diff, old: &RawMachine, new: &RawMachine) {
    let names: BTreeSet<&String> = old
        .agents
        .iter()
        .chain(new.agents.iter())
        .map(|a| &a.table.agent)
        .collect();
    for name in names {
        match (old.agent(name), new.agent(name)) {
            (Some(_), None) => d.add("agent-removed", name, "removed"),
            (None, Some(n)) => d.add(
                "agent-added",
                name,
                format!(
                    "added (owns: {}; phases: {})",
                    n.table.owns.join(", "),
                    n.phases
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
            (Some(o), Some(n)) => agent(d, o, n),
            (None, None) => {}
        }
    }
}

fn agent(d: &mut Diff, o: &RawAgent, n: &RawAgent) {
    let name = &n.table.agent;
    if o.table.owns != n.table.owns {
        d.add_values(
            "ownership-changed",
            name,
            format!("owns {}", set_delta(&o.table.owns, &n.table.owns)),
            json!(o.table.owns),
            json!(n.table.owns),
        );
    }
    if o.table.patches_state != n.table.patches_state {
        d.add_values(
            "ownership-changed",
            name,
            format!(
                "patches_state: {} -> {}",
                o.table.patches_state, n.table.patches_state
            ),
            json!(o.table.patches_state),
            json!(n.table.patches_state),
        );
    }
    for (field, ov, nv) in [
        ("short_name", &o.table.short_name, &n.table.short_name),
        ("description", &o.table.description, &n.table.description),
    ] {
        if ov != nv {
            d.add_values(
                "agent-changed",
                format!("{name}.{field}"),
                format!("{field}: {ov} -> {nv}"),
                json!(ov),
                json!(nv),
            );
        }
    }
    for op in &o.phases {
        let label = n.label(&op.name);
        let Some(np) = n.phase(&op.name) else {
            d.add("phase-removed", label, "removed");
            continue;
        };
        let (od, nd) = (o.table.phases.get(&op.name), n.table.phases.get(&op.name));
        if let (Some(od), Some(nd)) = (od, nd) {
            for (field, ov, nv) in [
                ("description", json!(od.description), json!(nd.description)),
                ("secondary", json!(od.secondary), json!(nd.secondary)),
                ("unread", json!(od.unread), json!(nd.unread)),
            ] {
                if ov != nv {
                    d.add_values(
                        "phase-changed",
                        format!("{label}.{field}"),
                        format!("{field}: {} -> {}", short(&ov), short(&nv)),
                        ov,
                        nv,
                    );
                }
            }
        }
        phase(d, &label, op, np);
    }
    for np in &n.phases {
        if o.phase(&np.name).is_none() {
            let rules: Vec<&str> = np.rules().map(|r| r.name.as_str()).collect();
            d.add(
                "phase-added",
                n.label(&np.name),
                format!("added (rules: {})", rules.join(", ")),
            );
        }
    }
}

/// Rules keyed by name, with an occurrence number for repeated names.
fn keyed_rules(p: &FlatPhase) -> Vec<(String, &FlatRule)> {
    let mut seen: IndexMap<&str, usize> = IndexMap::new();
    p.rules()
        .map(|r| {
            let n = seen.entry(r.name.as_str()).or_default();
            *n += 1;
            let key = if *n == 1 {
                r.name.clone()
            } else {
                format!("{}#{n}", r.name)
            };
            (key, r)
        })
        .collect()
}

/// A rule's effects: everything but its name, guard and target, with `set` merge keys expanded.
fn effects(r: &FlatRule) -> Value {
    let mut v = to_json(&r.step);
    if let Value::Object(m) = &mut v {
        for k in ["name", "when", "next"] {
            m.remove(k);
        }
        m.insert("set".to_string(), to_json(&r.set));
        m.retain(|_, v| !is_empty_json(v));
    }
    v
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null | Value::Bool(false) => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

fn bindings(p: &FlatPhase) -> Vec<Value> {
    p.items
        .iter()
        .filter_map(|i| match i {
            FlatItem::Bind { step, .. } => Some(to_json(step)),
            FlatItem::Rule(_) => None,
        })
        .collect()
}

fn phase(d: &mut Diff, label: &str, o: &FlatPhase, n: &FlatPhase) {
    let (orules, nrules) = (keyed_rules(o), keyed_rules(n));
    let find = |rules: &[(String, &FlatRule)], k: &str| -> Option<usize> {
        rules.iter().position(|(key, _)| key == k)
    };
    for (key, orule) in &orules {
        let subject = format!("{label}: {key}");
        let Some(i) = find(&nrules, key) else {
            d.add("rule-removed", subject, "removed");
            continue;
        };
        let nrule = nrules[i].1;
        let (og, ng) = (orule.normalized_guard(), nrule.normalized_guard());
        if og != ng {
            d.add_values(
                "guard-changed",
                subject.clone(),
                "guard changed",
                json!(og.as_deref().unwrap_or("always")),
                json!(ng.as_deref().unwrap_or("always")),
            );
        }
        let (ot, nt) = (orule.target(), nrule.target());
        if ot != nt {
            d.add_values(
                "transition-retargeted",
                subject.clone(),
                format!("{} -> {}", target_text(&ot), target_text(&nt)),
                json!(target_text(&ot)),
                json!(target_text(&nt)),
            );
        }
        let (oe, ne) = (effects(orule), effects(nrule));
        if oe != ne {
            d.add_values(
                "rule-changed",
                subject,
                format!("effects changed: {}", changed_keys(&oe, &ne)),
                oe,
                ne,
            );
        }
    }
    for (i, (key, nrule)) in nrules.iter().enumerate() {
        if find(&orules, key).is_none() {
            let after = if i == 0 {
                "first".to_string()
            } else {
                format!("after `{}`", nrules[i - 1].0)
            };
            d.add_values(
                "rule-added",
                format!("{label}: {key}"),
                format!(
                    "added {after}: when {} -> {}",
                    nrule.normalized_guard().as_deref().unwrap_or("always"),
                    target_text(&nrule.target())
                ),
                Value::Null,
                to_json(&nrule.step),
            );
        }
    }
    let common_old: Vec<&String> = orules
        .iter()
        .map(|(k, _)| k)
        .filter(|k| find(&nrules, k).is_some())
        .collect();
    let common_new: Vec<&String> = nrules
        .iter()
        .map(|(k, _)| k)
        .filter(|k| find(&orules, k).is_some())
        .collect();
    if common_old != common_new {
        d.add_values(
            "rules-reordered",
            label,
            format!(
                "rule order {} -> {}",
                common_old
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                common_new
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            json!(common_old),
            json!(common_new),
        );
    }
    let (ob, nb) = (bindings(o), bindings(n));
    if ob != nb {
        d.add_values(
            "bindings-changed",
            label,
            "`let`/`output`/`warnings` steps changed",
            Value::Array(ob),
            Value::Array(nb),
        );
    }
}

fn changed_keys(o: &Value, n: &Value) -> String {
    match (o, n) {
        (Value::Object(o), Value::Object(n)) => {
            let keys: BTreeSet<&String> = o.keys().chain(n.keys()).collect();
            keys.into_iter()
                .filter(|k| o.get(*k) != n.get(*k))
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join(", ")
        }
        _ => "everything".to_string(),
    }
}

fn policy(d: &mut Diff, old: &RawMachine, new: &RawMachine) {
    let (Some(o), Some(n)) = (&old.policy, &new.policy) else {
        if old.policy.is_some() != new.policy.is_some() {
            d.add(
                "policy-changed",
                "policy.yaml",
                "policy.yaml does not parse on one side",
            );
        }
        return;
    };
    for (action, od) in &o.directives {
        let subject = format!("policy.directives.{action}");
        let Some(nd) = n.directives.get(action) else {
            d.add("directive-removed", subject, "no longer allowed");
            continue;
        };
        if od.required != nd.required {
            d.add_values(
                "directive-changed",
                subject.clone(),
                format!("required {}", set_delta(&od.required, &nd.required)),
                json!(od.required),
                json!(nd.required),
            );
        }
        let (mut oj, mut nj) = (to_json(od), to_json(nd));
        for v in [&mut oj, &mut nj] {
            if let Value::Object(m) = v {
                m.remove("required");
            }
        }
        if oj != nj {
            d.add_values(
                "directive-changed",
                subject,
                changed_fields(&oj, &nj),
                oj,
                nj,
            );
        }
    }
    for (action, nd) in &n.directives {
        if !o.directives.contains_key(action) {
            d.add_values(
                "directive-added",
                format!("policy.directives.{action}"),
                format!("allowed (required: {})", nd.required.join(", ")),
                Value::Null,
                to_json(nd),
            );
        }
    }
    if o.blocked_directives != n.blocked_directives {
        d.add_values(
            "blocked-changed",
            "policy.blocked_directives",
            format!(
                "blocked {}",
                set_delta(&o.blocked_directives, &n.blocked_directives)
            ),
            json!(o.blocked_directives),
            json!(n.blocked_directives),
        );
    }
    d.keyed(
        ("worker-added", "worker-removed", "worker-changed"),
        "policy.workers.",
        &o.workers,
        &n.workers,
    );
    d.keyed(
        (
            "model-class-added",
            "model-class-removed",
            "model-class-changed",
        ),
        "policy.model_classes.",
        &o.model_classes,
        &n.model_classes,
    );
    d.keyed(
        (
            "directive-template-added",
            "directive-template-removed",
            "directive-template-changed",
        ),
        "policy.directive_templates.",
        &o.directive_templates,
        &n.directive_templates,
    );
    for (field, ov, nv) in [
        (
            "handoff_schema_version",
            json!(o.handoff_schema_version),
            json!(n.handoff_schema_version),
        ),
        ("legacy_keys", json!(o.legacy_keys), json!(n.legacy_keys)),
        (
            "confinement",
            to_json(&o.confinement),
            to_json(&n.confinement),
        ),
        (
            "orchestrator",
            to_json(&o.orchestrator),
            to_json(&n.orchestrator),
        ),
    ] {
        if ov != nv {
            d.add_values(
                "policy-changed",
                format!("policy.{field}"),
                changed_fields(&ov, &nv),
                ov,
                nv,
            );
        }
    }
}

/// The parsed value of a YAML file, or its text with line ends and trailing blanks normalised.
fn file_meaning(rel: &str, text: &str) -> Value {
    if rel.ends_with(".yaml")
        && let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(text)
    {
        return to_json(&v);
    }
    let lines: Vec<&str> = text.lines().map(str::trim_end).collect();
    json!(lines.join("\n").trim_end())
}

/// Files the other comparisons do not cover: vars, schemas, script library, text templates.
fn files(d: &mut Diff, old: &RawMachine, new: &RawMachine) {
    let covered = |rel: &str| {
        matches!(rel, "states.yaml" | "policy.yaml" | "fragments.yaml")
            || rel.starts_with("agents/")
    };
    let (of, nf) = (old.source.files(), new.source.files());
    let rels: BTreeSet<&String> = of.keys().chain(nf.keys()).filter(|r| !covered(r)).collect();
    for rel in rels {
        match (of.get(rel), nf.get(rel)) {
            (Some(_), None) => d.add("file-removed", rel, "removed"),
            (None, Some(_)) => d.add("file-added", rel, "added"),
            (Some(o), Some(n)) => {
                if file_meaning(rel, o) != file_meaning(rel, n) {
                    d.add("file-changed", rel, "content changed");
                }
            }
            (None, None) => {}
        }
    }
}

/// The changes as text, one per line (guards with their old and new source).
pub fn render_text(changes: &[Change]) -> String {
    if changes.is_empty() {
        return "no semantic change\n".to_string();
    }
    let mut out = String::new();
    for c in changes {
        out.push_str(&format!("{}: {}: {}\n", c.kind, c.subject, c.message));
        if c.kind == "guard-changed" {
            let text = |v: &Option<Value>| v.as_ref().map(short).unwrap_or_default();
            out.push_str(&format!("    - {}\n    + {}\n", text(&c.old), text(&c.new)));
        }
    }
    out.push_str(&format!("{} semantic change(s)\n", changes.len()));
    out
}

/// The changes as one JSON document: `{equal, changes: [{kind, subject, message, old?, new?}]}`.
pub fn render_json(changes: &[Change]) -> String {
    let doc = json!({"equal": changes.is_empty(), "changes": changes});
    serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n"
}
