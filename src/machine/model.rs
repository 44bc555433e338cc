//! Serde types of the machine tables: exactly what a YAML file under
//! `machine/` may say. Unknown keys are rejected so that a typo in a table is
//! a load-time error, not a silently ignored rule.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_yaml::Value as Yaml;

/// `machine/states.yaml`: the states, their kinds and who governs them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatesTable {
    /// `initial: LOAD_CAMPAIGN` — where a campaign without a state file starts.
    pub initial: String,
    /// `states: {NAME: {kind, status, agent, phases, cleanup}}` in display order.
    pub states: IndexMap<String, StateDef>,
}

/// One state of `states.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StateDef {
    /// `kind: init | running | terminal`.
    pub kind: StateKind,
    /// `status: RUNNING` — the status derived from this machine state.
    pub status: String,
    /// `agent: metaopt-background-control` — the governing control agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// `phases: [{phase: finalize, when: guard}, {phase: plan}]` — first match wins.
    #[serde(default)]
    pub phases: Vec<PhaseChoice>,
    /// `cleanup: [remove_agents_hook]` — directive actions every entry must carry.
    #[serde(default)]
    pub cleanup: Vec<String>,
    /// `description: ...` — one line for docs and graphs.
    #[serde(default)]
    pub description: String,
}

/// The kind of a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StateKind {
    /// `init`: chained within one step until a running or terminal state.
    Init,
    /// `running`: one governing phase per step.
    Running,
    /// `terminal`: the campaign is over; steps do nothing.
    Terminal,
}

/// `{phase: NAME, when: GUARD}` inside a state's `phases` list.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseChoice {
    /// `phase: plan_select_design`.
    pub phase: String,
    /// `when: file_exists(...)` — rhai guard; absent means always.
    #[serde(default)]
    pub when: Option<String>,
}

/// `machine/agents/<name>.yaml`: one control agent and its phases.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AgentTable {
    /// `agent: metaopt-background-control`.
    pub agent: String,
    /// `short_name: background_control` — prefix of `handoff_type`.
    pub short_name: String,
    /// `description: ...`.
    #[serde(default)]
    pub description: String,
    /// `owns: [proposal_cycle, ...]` — top-level state keys the agent may patch.
    #[serde(default)]
    pub owns: Vec<String>,
    /// `patches_state: false` — the agent's handoffs always carry `state_patch: null`.
    #[serde(default = "yes")]
    pub patches_state: bool,
    /// `phases: {name: {...}}` in declaration order.
    pub phases: IndexMap<String, PhaseDef>,
}

fn yes() -> bool {
    true
}

/// One phase of an agent table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhaseDef {
    /// `description: ...`.
    #[serde(default)]
    pub description: String,
    /// `secondary: true` — `--secondary` forces the recommendation to null.
    #[serde(default)]
    pub secondary: bool,
    /// `steps: [...]` — bindings and rules, evaluated in order; first rule whose guard holds wins.
    pub steps: Vec<StepDef>,
    /// `unread: {schema: [field, ...]}` — top-level fields of documents read with that
    /// schema which this phase never reads: scanned and checked, not built (see
    /// `engine::unread`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub unread: IndexMap<String, Vec<String>>,
}

/// One entry of a `steps` list: `{use: fragment}`, `{let: {...}}` or a rule.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StepDef {
    /// `use: require-state` — splice the steps of a fragment here.
    #[serde(rename = "use", default)]
    pub use_fragment: Option<String>,
    /// `let: {name: expr}` — bind names for later steps (or for this rule's effects).
    #[serde(rename = "let", default)]
    pub bindings: Option<IndexMap<String, Yaml>>,
    /// `name: pool-ready` — makes the entry a rule.
    #[serde(default)]
    pub name: Option<String>,
    /// `when: pool_size >= target` — rhai guard; absent means always.
    #[serde(default)]
    pub when: Option<String>,
    /// `error: {summary, recovery}` — the phase ends as a runtime error.
    #[serde(default)]
    pub error: Option<ErrorDef>,
    /// `next: STATE` or `next: ~` (stay).
    #[serde(default)]
    pub next: Option<String>,
    /// `new_state: = expr` — replace the whole state before `set` applies.
    #[serde(default)]
    pub new_state: Option<Yaml>,
    /// `set: {dotted.path: value}` — state changes; the patch is their minimal diff.
    #[serde(default)]
    pub set: IndexMap<String, Yaml>,
    /// `append: {dotted.path: list}` — items appended to a list of the state in place
    /// (no copy of the list); the patch carries the whole list when items were added.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub append: IndexMap<String, Yaml>,
    /// `output: {field: value}` — extra handoff fields.
    #[serde(default)]
    pub output: IndexMap<String, Yaml>,
    /// `directives: [{template: x, ...}]` — directives to emit.
    #[serde(default)]
    pub directives: Yaml,
    /// `launch: [{worker_ref, task_file, result_file, slot_id}]` — worker launch requests.
    #[serde(default)]
    pub launch: Yaml,
    /// `writes: [{path, text|json|block}]` — files the phase writes.
    #[serde(default)]
    pub writes: Yaml,
    /// `consume: [path]` — files moved aside once the new state is applied.
    #[serde(default)]
    pub consume: Yaml,
    /// `summary: "text ${x}"`.
    #[serde(default)]
    pub summary: Option<Yaml>,
    /// `warnings: [..]` or `warnings: = expr`.
    #[serde(default)]
    pub warnings: Option<Yaml>,
    /// `preserve_state: true` — never write the state file for this outcome.
    #[serde(default)]
    pub preserve_state: bool,
    /// `recovery: "..."` — recovery_action on a non-error outcome.
    #[serde(default)]
    pub recovery: Option<Yaml>,
}

/// `error: {summary, recovery}` of a rule.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDef {
    /// What went wrong, for humans (template).
    pub summary: Yaml,
    /// What a person must do (template).
    pub recovery: Yaml,
}

/// `machine/fragments.yaml`: named step lists shared by phases.
pub type FragmentsTable = IndexMap<String, Vec<StepDef>>;

/// `machine/policy.yaml`: handoff envelope, directive and worker policy.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTable {
    /// `schema_version: 1` of handoffs.
    pub handoff_schema_version: i64,
    /// Envelope keys a handoff must never carry.
    #[serde(default)]
    pub legacy_keys: Vec<String>,
    /// `directives: {action: {required: [..], executor: kind, ...}}`.
    pub directives: IndexMap<String, DirectivePolicy>,
    /// Directive templates rules refer to with `template: name`.
    #[serde(default)]
    pub directive_templates: IndexMap<String, IndexMap<String, Yaml>>,
    /// Actions rejected outright.
    #[serde(default)]
    pub blocked_directives: Vec<String>,
    /// Worker dispatch policy by `worker_ref`.
    pub workers: IndexMap<String, WorkerPolicy>,
    /// `model_classes: {class: [model, ...]}` — first available wins.
    pub model_classes: IndexMap<String, Vec<String>>,
    /// Directive fields and launch-request fields that name files, with the dirs they must resolve into.
    pub confinement: Confinement,
    /// Orchestrator settings.
    pub orchestrator: OrchestratorPolicy,
}

/// Policy of one directive action.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DirectivePolicy {
    /// Fields the directive must carry besides `action` and `reason`.
    #[serde(default)]
    pub required: Vec<String>,
    /// How the orchestrator executes it: `remove_block`, `render_report`, `delete_file`, `noop`, `external`.
    pub executor: String,
    /// For `render_report`: the template name.
    #[serde(default)]
    pub template: Option<String>,
    /// For `render_report`: output path template, relative to the project.
    #[serde(default)]
    pub output: Option<String>,
    /// For `remove_block` / `delete_file`: the field holding the path.
    #[serde(default)]
    pub path_field: Option<String>,
    /// For `external`: the backend operation name.
    #[serde(default)]
    pub operation: Option<String>,
    /// For `remove_block`: the `vars` entry holding `{begin, end}` markers.
    #[serde(default)]
    pub markers: Option<String>,
}

/// Policy of one worker.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerPolicy {
    /// `launchable: false` for directive-only executors.
    #[serde(default = "yes")]
    pub launchable: bool,
    /// `slot_class: background`.
    #[serde(default)]
    pub slot_class: Option<String>,
    /// `mode: ideation`.
    #[serde(default)]
    pub mode: Option<String>,
    /// `model_class: general_worker`.
    #[serde(default)]
    pub model_class: Option<String>,
    /// `simulator: ideation` — which simulated worker answers it in demos.
    #[serde(default)]
    pub simulator: Option<String>,
}

/// Where files named in handoffs must live.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Confinement {
    /// Directories (relative to the project) a result file may resolve into.
    pub result_dirs: Vec<String>,
    /// Directories a task file may resolve into.
    pub task_dirs: Vec<String>,
    /// Directive fields holding result paths.
    pub result_fields: Vec<String>,
    /// Directive fields that must name one fixed file: `{agents_path: AGENTS.md}`.
    #[serde(default)]
    pub fixed_fields: IndexMap<String, String>,
}

/// Orchestrator settings of `policy.yaml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OrchestratorPolicy {
    /// The pseudo-agent that owns gate and protocol-violation patches.
    pub agent: String,
    /// Its phase run before every running state's phase (null recommendation = pass).
    pub gate_phase: String,
    /// State a handoff that fails validation moves the machine to.
    pub protocol_violation_state: String,
    /// Directive templates executed on a protocol violation.
    pub protocol_violation_directives: Vec<String>,
    /// Directive templates a step in a terminal state runs (idempotent cleanup, e.g. a
    /// resume hook left behind by a crash).
    #[serde(default)]
    pub terminal_step_directives: Vec<String>,
    /// Project-relative paths of the workspace.
    pub layout: IndexMap<String, String>,
}

/// `machine/schemas/<name>.yaml`: a generic structural schema.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SchemaTable {
    /// What the schema describes, used in messages (`campaign`, `state`).
    #[serde(default)]
    pub subject: String,
    /// Strings counting as unfilled placeholders.
    #[serde(default)]
    pub placeholders: Placeholders,
    /// Field rules of the root object.
    pub fields: IndexMap<String, FieldRule>,
    /// Cross-field rhai checks: `{when: expr-that-is-true-when-broken, message}`; `value` is the document.
    #[serde(default)]
    pub checks: Vec<CrossCheck>,
}

/// Placeholder detection rules.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Placeholders {
    /// Any of these substrings makes a placeholder.
    #[serde(default)]
    pub contains_any: Vec<String>,
    /// All of these substrings together make a placeholder.
    #[serde(default)]
    pub contains_all: Vec<Vec<String>>,
}

/// One field of a schema.
#[derive(Debug, Clone, Deserialize, Serialize, Default, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FieldRule {
    /// `type: integer` or `type: [object, "null"]`.
    #[serde(rename = "type", default)]
    pub types: TypeSpec,
    /// `required: true` — absence is an issue.
    #[serde(default)]
    pub required: bool,
    /// `non_empty: true` for strings, arrays, maps.
    #[serde(default)]
    pub non_empty: bool,
    /// `no_placeholder: true`.
    #[serde(default)]
    pub no_placeholder: bool,
    /// `no_whitespace: true`.
    #[serde(default)]
    pub no_whitespace: bool,
    /// `enum: [a, b]`.
    #[serde(rename = "enum", default)]
    pub one_of: Vec<Yaml>,
    /// `min: 1` (inclusive).
    #[serde(default)]
    pub min: Option<f64>,
    /// `max: 16` (inclusive).
    #[serde(default)]
    pub max: Option<f64>,
    /// `exclusive_min: 0`.
    #[serde(default)]
    pub exclusive_min: Option<f64>,
    /// `pattern: '^sha256:[0-9a-f]{64}$'`.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `unique: true` for arrays of scalars.
    #[serde(default)]
    pub unique: bool,
    /// Nested object fields.
    #[serde(default)]
    pub fields: IndexMap<String, FieldRule>,
    /// Rule for each array item.
    #[serde(default)]
    pub items: Option<Box<FieldRule>>,
}

/// `type:` of a field: one name or a list of names.
#[derive(Debug, Clone, Serialize, Default, PartialEq)]
#[serde(untagged)]
pub enum TypeSpec {
    /// No type constraint.
    #[default]
    Any,
    /// `type: integer`.
    One(String),
    /// `type: [object, "null"]`.
    Many(Vec<String>),
}

// Written out rather than `#[serde(untagged)]`, which buffers every value first and
// took a twentieth of a short phase's start-up (the state schema is read on each run).
impl<'de> Deserialize<'de> for TypeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TypeSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a type name or a list of type names")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<TypeSpec, E> {
                Ok(TypeSpec::Any)
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<TypeSpec, E> {
                Ok(TypeSpec::Any)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<TypeSpec, E> {
                Ok(TypeSpec::One(v.to_string()))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<TypeSpec, A::Error> {
                let mut names = Vec::new();
                while let Some(n) = seq.next_element::<String>()? {
                    names.push(n);
                }
                Ok(TypeSpec::Many(names))
            }
        }
        d.deserialize_any(V)
    }
}

/// A cross-field check of a schema.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CrossCheck {
    /// Guard that holds when the document is broken (`value` is the document).
    pub when: String,
    /// Message template.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_type_is_a_name_a_list_of_names_or_null_from_yaml_and_json() {
        let yaml: FieldRule = serde_yaml::from_str("type: [object, \"null\"]").unwrap();
        assert!(matches!(yaml.types, TypeSpec::Many(ref t) if t == &["object", "null"]));
        let json: FieldRule = serde_json::from_str(r#"{"type": "integer"}"#).unwrap();
        assert!(matches!(json.types, TypeSpec::One(ref t) if t == "integer"));
        let none: FieldRule = serde_yaml::from_str("type: ~").unwrap();
        assert!(matches!(none.types, TypeSpec::Any));
        let absent: FieldRule = serde_json::from_str("{}").unwrap();
        assert!(matches!(absent.types, TypeSpec::Any));
        let wrong = serde_yaml::from_str::<FieldRule>("type: 3").unwrap_err();
        assert!(
            wrong
                .to_string()
                .contains("a type name or a list of type names"),
            "{wrong}"
        );
    }
}
