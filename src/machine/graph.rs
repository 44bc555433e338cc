//! The machine as a graph of states and transitions, read from the raw
//! tables rather than from the compiled machine so that `machine check` can
//! still reason about a machine whose guards do not compile. The review tools
//! (`check`, `graph`, `diff`, `docs`) share this flattened view: fragments
//! spliced into phases, directive templates merged into directive items,
//! YAML merge keys of `set` expanded, exactly as the loader does.

use super::TableSource;
use super::model::{AgentTable, FragmentsTable, PolicyTable, StateKind, StatesTable, StepDef};
use indexmap::IndexMap;
use serde_yaml::Value as Yaml;
use std::collections::BTreeSet;
use std::fmt::Write as _;

/// How deep `use:` fragments may nest (the loader's limit).
const MAX_FRAGMENT_DEPTH: usize = 8;

/// The raw tables of a machine, parsed but not compiled.
#[derive(Debug, Clone)]
pub struct RawMachine {
    /// Where the tables came from.
    pub source: TableSource,
    /// `states.yaml`.
    pub states: StatesTable,
    /// `policy.yaml`, when it parses.
    pub policy: Option<PolicyTable>,
    /// `fragments.yaml` (empty when absent or unparsable).
    pub fragments: FragmentsTable,
    /// Agent tables that parse, in file order.
    pub agents: Vec<RawAgent>,
    /// Table files that did not parse (their errors come from the loader).
    pub unparsed: Vec<String>,
}

/// One agent table with its phases flattened.
#[derive(Debug, Clone)]
pub struct RawAgent {
    /// Table file relative to the machine root (`agents/x.yaml`).
    pub file: String,
    /// The table as written.
    pub table: AgentTable,
    /// Phases in declaration order, fragments spliced.
    pub phases: Vec<FlatPhase>,
}

/// A phase whose `use:` steps are replaced by the fragment's steps.
#[derive(Debug, Clone)]
pub struct FlatPhase {
    /// Phase name (`--mode`).
    pub name: String,
    /// Bindings and rules in evaluation order.
    pub items: Vec<FlatItem>,
}

/// One step of a flattened phase.
#[derive(Debug, Clone)]
pub enum FlatItem {
    /// `let:` / `output:` / `warnings:` that apply to later rules.
    Bind {
        /// Names the step binds.
        names: Vec<String>,
        /// The step as written.
        step: Box<StepDef>,
        /// Fragment the step came from.
        fragment: Option<String>,
    },
    /// A named rule.
    Rule(Box<FlatRule>),
}

/// A named rule of a flattened phase.
#[derive(Debug, Clone)]
pub struct FlatRule {
    /// `name:`.
    pub name: String,
    /// Fragment the rule came from (`None` = written in the agent table).
    pub fragment: Option<String>,
    /// The step as written.
    pub step: StepDef,
    /// `set:` with a YAML merge key (`<<: *anchor`) expanded.
    pub set: IndexMap<String, Yaml>,
}

/// Where a rule sends the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `error:` — a runtime error; the state does not change.
    Error,
    /// `next: ~` or no `next` — stay in the same state.
    Stay,
    /// `next: STATE`.
    To(String),
    /// `next: = expr` — computed at run time (the source text).
    Computed(String),
}

/// A directive item of a rule, after merging its `template:`.
#[derive(Debug, Clone)]
pub enum DirectiveItem {
    /// A map whose fields can be inspected.
    Map(IndexMap<String, Yaml>),
    /// `= expr`: known only at run time.
    Computed(String),
    /// Anything else (the engine rejects it at run time).
    Invalid,
}

impl FlatRule {
    /// The guard source, when the rule has one.
    pub fn guard(&self) -> Option<&str> {
        self.step.when.as_deref()
    }

    /// The guard with whitespace runs collapsed, or `None` when the rule always fires.
    pub fn normalized_guard(&self) -> Option<String> {
        self.guard().map(normalize_ws)
    }

    /// True when the rule's guard always holds (no guard or literally `true`).
    pub fn always_fires(&self) -> bool {
        self.normalized_guard().is_none_or(|g| g == "true")
    }

    /// Where the rule sends the machine.
    pub fn target(&self) -> Target {
        if self.step.error.is_some() {
            return Target::Error;
        }
        match &self.step.next {
            None => Target::Stay,
            Some(n) if n.starts_with('=') => Target::Computed(n.clone()),
            Some(n) => Target::To(n.clone()),
        }
    }

    /// The directive items the rule emits, templates merged as the loader merges them.
    pub fn directive_items(&self, policy: Option<&PolicyTable>) -> Vec<DirectiveItem> {
        match &self.step.directives {
            Yaml::Null => vec![],
            Yaml::Sequence(items) => items
                .iter()
                .filter_map(|item| merged_directive(item, policy))
                .collect(),
            other => vec![item_kind(other)],
        }
    }

    /// The launch items of the rule.
    pub fn launch_items(&self) -> Vec<DirectiveItem> {
        match &self.step.launch {
            Yaml::Null => vec![],
            Yaml::Sequence(items) => items.iter().map(item_kind).collect(),
            other => vec![item_kind(other)],
        }
    }

    /// The `writes:` items of the rule.
    pub fn write_items(&self) -> Vec<DirectiveItem> {
        match &self.step.writes {
            Yaml::Null => vec![],
            Yaml::Sequence(items) => items.iter().map(item_kind).collect(),
            other => vec![item_kind(other)],
        }
    }

    /// Literal actions of the rule's directives, in order; `None` entries are computed.
    pub fn actions(&self, policy: Option<&PolicyTable>) -> Vec<Option<String>> {
        self.directive_items(policy)
            .iter()
            .map(|item| match item {
                DirectiveItem::Map(m) => m.get("action").and_then(literal).map(str::to_string),
                _ => None,
            })
            .collect()
    }
}

/// The template-merged form of one directive list item; `None` when its template is unknown.
fn merged_directive(item: &Yaml, policy: Option<&PolicyTable>) -> Option<DirectiveItem> {
    let Yaml::Mapping(m) = item else {
        return Some(item_kind(item));
    };
    let Some(tname) = m.get("template") else {
        return Some(item_kind(item));
    };
    let base = policy?.directive_templates.get(tname.as_str()?)?;
    let mut out: IndexMap<String, Yaml> = base.clone();
    for (k, v) in m {
        if let Some(k) = k.as_str()
            && k != "template"
        {
            out.insert(k.to_string(), v.clone());
        }
    }
    Some(DirectiveItem::Map(out))
}

fn item_kind(item: &Yaml) -> DirectiveItem {
    match item {
        Yaml::Mapping(m) => DirectiveItem::Map(
            m.iter()
                .filter_map(|(k, v)| k.as_str().map(|k| (k.to_string(), v.clone())))
                .collect(),
        ),
        Yaml::String(s) if s.starts_with('=') => DirectiveItem::Computed(s.clone()),
        _ => DirectiveItem::Invalid,
    }
}

/// The string a YAML value holds when it is a literal (not `= expr`, not `${…}`).
pub fn literal(y: &Yaml) -> Option<&str> {
    match y {
        Yaml::String(s) if !s.starts_with('=') && !s.contains("${") => Some(s),
        _ => None,
    }
}

/// Collapses every run of whitespace into one space.
pub fn normalize_ws(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

use super::expand_merge_key;

fn parse<T: serde::de::DeserializeOwned>(
    source: &TableSource,
    file: &str,
    unparsed: &mut Vec<String>,
) -> Option<T> {
    let text = source.get(file)?;
    match serde_yaml::from_str(text) {
        Ok(v) => Some(v),
        Err(_) => {
            unparsed.push(file.to_string());
            None
        }
    }
}

fn flatten(
    steps: &[StepDef],
    fragments: &FragmentsTable,
    fragment: Option<&str>,
    depth: usize,
    out: &mut Vec<FlatItem>,
) {
    for step in steps {
        if let Some(name) = &step.use_fragment {
            if depth < MAX_FRAGMENT_DEPTH
                && let Some(inner) = fragments.get(name)
            {
                flatten(inner, fragments, Some(name), depth + 1, out);
            }
            continue;
        }
        match &step.name {
            None => out.push(FlatItem::Bind {
                names: step
                    .bindings
                    .as_ref()
                    .map(|b| b.keys().cloned().collect())
                    .unwrap_or_default(),
                step: Box::new(step.clone()),
                fragment: fragment.map(str::to_string),
            }),
            Some(name) => out.push(FlatItem::Rule(Box::new(FlatRule {
                name: name.clone(),
                fragment: fragment.map(str::to_string),
                set: expand_merge_key(&step.set),
                step: step.clone(),
            }))),
        }
    }
}

impl FlatPhase {
    /// The rules of the phase, in order.
    pub fn rules(&self) -> impl Iterator<Item = &FlatRule> {
        self.items.iter().filter_map(|i| match i {
            FlatItem::Rule(r) => Some(r.as_ref()),
            FlatItem::Bind { .. } => None,
        })
    }
}

impl RawAgent {
    /// The flattened phase `name`.
    pub fn phase(&self, name: &str) -> Option<&FlatPhase> {
        self.phases.iter().find(|p| p.name == name)
    }

    /// `short_name.phase`, the handoff type of a phase.
    pub fn label(&self, phase: &str) -> String {
        format!("{}.{phase}", self.table.short_name)
    }
}

impl RawMachine {
    /// Parses every table of `source` that parses; `None` when `states.yaml` does not.
    pub fn parse(source: &TableSource) -> Option<Self> {
        let mut unparsed = Vec::new();
        let states: StatesTable = parse(source, "states.yaml", &mut unparsed)?;
        let policy: Option<PolicyTable> = parse(source, "policy.yaml", &mut unparsed);
        let fragments: FragmentsTable =
            parse(source, "fragments.yaml", &mut unparsed).unwrap_or_default();
        let mut agents = Vec::new();
        for file in source.files_in("agents/", ".yaml") {
            let Some(table) = parse::<AgentTable>(source, &file, &mut unparsed) else {
                continue;
            };
            let phases = table
                .phases
                .iter()
                .map(|(name, def)| {
                    let mut items = Vec::new();
                    flatten(&def.steps, &fragments, None, 0, &mut items);
                    FlatPhase {
                        name: name.clone(),
                        items,
                    }
                })
                .collect();
            agents.push(RawAgent {
                file,
                table,
                phases,
            });
        }
        Some(Self {
            source: source.clone(),
            states,
            policy,
            fragments,
            agents,
            unparsed,
        })
    }

    /// The agent named `name`.
    pub fn agent(&self, name: &str) -> Option<&RawAgent> {
        self.agents.iter().find(|a| a.table.agent == name)
    }

    /// The orchestrator's gate phase (`policy.orchestrator.{agent, gate_phase}`), when defined.
    pub fn gate(&self) -> Option<(&RawAgent, &FlatPhase)> {
        let policy = self.policy.as_ref()?;
        let agent = self.agent(&policy.orchestrator.agent)?;
        Some((agent, agent.phase(&policy.orchestrator.gate_phase)?))
    }

    /// True when `state` is a terminal state.
    pub fn is_terminal(&self, state: &str) -> bool {
        self.states
            .states
            .get(state)
            .is_some_and(|d| d.kind == StateKind::Terminal)
    }

    /// States of kind `kind`, in declaration order.
    pub fn states_of_kind(&self, kind: StateKind) -> Vec<&str> {
        self.states
            .states
            .iter()
            .filter(|(_, d)| d.kind == kind)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// Non-terminal states, in declaration order.
    pub fn non_terminal_states(&self) -> Vec<&str> {
        self.states
            .states
            .iter()
            .filter(|(_, d)| d.kind != StateKind::Terminal)
            .map(|(n, _)| n.as_str())
            .collect()
    }

    /// `(state, agent, phase)` for every phase a state dispatches, in table order.
    pub fn dispatch(&self) -> Vec<(&str, &RawAgent, &FlatPhase)> {
        let mut out = Vec::new();
        for (state, def) in &self.states.states {
            let Some(agent) = def.agent.as_deref().and_then(|a| self.agent(a)) else {
                continue;
            };
            for choice in &def.phases {
                if let Some(phase) = agent.phase(&choice.phase) {
                    out.push((state.as_str(), agent, phase));
                }
            }
        }
        out
    }

    /// Agents in the order they first govern a state, then the rest by name.
    pub fn agents_in_order(&self) -> Vec<&RawAgent> {
        let mut out: Vec<&RawAgent> = Vec::new();
        for def in self.states.states.values() {
            if let Some(a) = def.agent.as_deref().and_then(|a| self.agent(a))
                && !out.iter().any(|o| o.table.agent == a.table.agent)
            {
                out.push(a);
            }
        }
        let mut rest: Vec<&RawAgent> = self
            .agents
            .iter()
            .filter(|a| !out.iter().any(|o| o.table.agent == a.table.agent))
            .collect();
        rest.sort_by(|a, b| a.table.agent.cmp(&b.table.agent));
        out.extend(rest);
        out
    }

    /// Every transition of the machine, with the implicit ones.
    pub fn transitions(&self) -> Vec<Transition> {
        let mut out = vec![Transition {
            from: Node::Start,
            to: Node::State(self.states.initial.clone()),
            label: String::new(),
            kind: TransitionKind::Initial,
        }];
        for (state, agent, phase) in self.dispatch() {
            if self.is_terminal(state) {
                continue;
            }
            for rule in phase.rules() {
                let label = format!("{}: {}", agent.label(&phase.name), rule.name);
                let from = Node::State(state.to_string());
                match rule.target() {
                    Target::Error => {}
                    Target::Stay => out.push(Transition {
                        to: from.clone(),
                        from,
                        label,
                        kind: TransitionKind::Stay,
                    }),
                    Target::To(t) => out.push(Transition {
                        from,
                        to: Node::State(t),
                        label,
                        kind: TransitionKind::Rule,
                    }),
                    Target::Computed(expr) => out.push(Transition {
                        from,
                        to: Node::AnyRunning,
                        label: format!("{label} ({})", normalize_ws(&expr)),
                        kind: TransitionKind::Computed,
                    }),
                }
            }
        }
        if let Some((gate, phase)) = self.gate() {
            for rule in phase.rules() {
                let label = format!("{}: {}", gate.label(&phase.name), rule.name);
                let to = match rule.target() {
                    Target::To(t) => Node::State(t),
                    Target::Computed(_) => Node::AnyRunning,
                    Target::Error | Target::Stay => continue,
                };
                out.push(Transition {
                    from: Node::AnyRunning,
                    to,
                    label,
                    kind: TransitionKind::Gate,
                });
            }
        }
        if let Some(p) = &self.policy {
            out.push(Transition {
                from: Node::AnyNonTerminal,
                to: Node::State(p.orchestrator.protocol_violation_state.clone()),
                label: "protocol violation".to_string(),
                kind: TransitionKind::Violation,
            });
        }
        out
    }

    /// The states `node` stands for.
    pub fn expand(&self, node: &Node) -> Vec<String> {
        match node {
            Node::State(s) => vec![s.clone()],
            Node::AnyRunning => self
                .states_of_kind(StateKind::Running)
                .into_iter()
                .map(str::to_string)
                .collect(),
            Node::AnyNonTerminal => self
                .non_terminal_states()
                .into_iter()
                .map(str::to_string)
                .collect(),
            Node::Start => vec![],
        }
    }
}

/// An end of a transition.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Node {
    /// Where a campaign without a state file enters.
    Start,
    /// One state.
    State(String),
    /// Every running state (the orchestrator gate; computed `next`).
    AnyRunning,
    /// Every non-terminal state (a protocol violation).
    AnyNonTerminal,
}

/// What makes a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TransitionKind {
    /// The entry into the initial state.
    Initial,
    /// A rule with `next: STATE`.
    Rule,
    /// A rule that stays (`next: ~`).
    Stay,
    /// A rule with `next: = expr`.
    Computed,
    /// A rule of the orchestrator's own phases, run before every running state's phase.
    Gate,
    /// The orchestrator's move on a handoff that fails validation.
    Violation,
}

/// One edge of the graph.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Transition {
    /// Source.
    pub from: Node,
    /// Target.
    pub to: Node,
    /// `short_name.phase: rule`.
    pub label: String,
    /// What makes it.
    pub kind: TransitionKind,
}

/// Output format of `machine graph`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// Mermaid flowchart.
    Mermaid,
    /// Graphviz dot.
    Dot,
}

impl std::str::FromStr for GraphFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "mermaid" => Ok(Self::Mermaid),
            "dot" => Ok(Self::Dot),
            other => Err(format!(
                "unknown graph format `{other}` (expected mermaid or dot)"
            )),
        }
    }
}

const START_ID: &str = "__start__";
const ANY_RUNNING_ID: &str = "__any_running__";
const ANY_STATE_ID: &str = "__any_state__";

fn node_id(node: &Node) -> String {
    match node {
        Node::Start => START_ID.to_string(),
        Node::AnyRunning => ANY_RUNNING_ID.to_string(),
        Node::AnyNonTerminal => ANY_STATE_ID.to_string(),
        Node::State(s) => {
            let mut id: String = s
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect();
            // Mermaid keywords and ids starting with a digit would break the chart.
            if id.is_empty()
                || id.starts_with(|c: char| c.is_ascii_digit())
                || matches!(
                    id.to_ascii_lowercase().as_str(),
                    "end" | "graph" | "subgraph" | "flowchart" | "click" | "style" | "class"
                )
            {
                id = format!("s_{id}");
            }
            id
        }
    }
}

/// Draws every state and transition, sorted, parallel edges with one label drawn once.
pub fn render(machine: &RawMachine, format: GraphFormat) -> String {
    let edges: BTreeSet<Transition> = machine.transitions().into_iter().collect();
    let uses = |n: &Node| edges.iter().any(|e| &e.from == n || &e.to == n);
    let mut states: Vec<(&String, StateKind)> = machine
        .states
        .states
        .iter()
        .map(|(n, d)| (n, d.kind))
        .collect();
    states.sort_by(|a, b| a.0.cmp(b.0));
    match format {
        GraphFormat::Mermaid => mermaid(&edges, &states, &uses),
        GraphFormat::Dot => dot(&edges, &states, &uses),
    }
}

fn mermaid_text(s: &str) -> String {
    s.replace('"', "#quot;")
}

fn mermaid(
    edges: &BTreeSet<Transition>,
    states: &[(&String, StateKind)],
    uses: &dyn Fn(&Node) -> bool,
) -> String {
    let mut out = String::from("flowchart TD\n");
    out.push_str("    classDef terminal stroke-width:4px\n");
    out.push_str("    classDef implicit stroke-dasharray:5 5\n");
    out.push_str(&format!("    {START_ID}((start))\n"));
    for (name, kind) in states {
        let id = node_id(&Node::State((*name).clone()));
        let text = mermaid_text(name);
        let _ = match kind {
            StateKind::Terminal => writeln!(out, "    {id}(((\"{text}\"))):::terminal"),
            StateKind::Init => writeln!(out, "    {id}([\"{text}\"])"),
            StateKind::Running => writeln!(out, "    {id}[\"{text}\"]"),
        };
    }
    if uses(&Node::AnyRunning) {
        let _ = writeln!(
            out,
            "    {ANY_RUNNING_ID}{{{{\"any running state\"}}}}:::implicit"
        );
    }
    if uses(&Node::AnyNonTerminal) {
        let _ = writeln!(
            out,
            "    {ANY_STATE_ID}{{{{\"any non-terminal state\"}}}}:::implicit"
        );
    }
    for e in edges {
        let (from, to) = (node_id(&e.from), node_id(&e.to));
        let arrow = match e.kind {
            TransitionKind::Gate | TransitionKind::Violation => "-.->",
            _ => "-->",
        };
        if e.label.is_empty() {
            let _ = writeln!(out, "    {from} {arrow} {to}");
        } else {
            let _ = writeln!(
                out,
                "    {from} {arrow}|\"{}\"| {to}",
                mermaid_text(&e.label)
            );
        }
    }
    out
}

fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(
    edges: &BTreeSet<Transition>,
    states: &[(&String, StateKind)],
    uses: &dyn Fn(&Node) -> bool,
) -> String {
    let mut out = String::from("digraph machine {\n");
    out.push_str("    rankdir=TB;\n    node [shape=box];\n");
    let _ = writeln!(out, "    \"{START_ID}\" [shape=point];");
    for (name, kind) in states {
        let id = dot_text(name);
        let _ = match kind {
            StateKind::Terminal => writeln!(out, "    \"{id}\" [shape=doublecircle];"),
            StateKind::Init => writeln!(out, "    \"{id}\" [style=rounded];"),
            StateKind::Running => writeln!(out, "    \"{id}\";"),
        };
    }
    if uses(&Node::AnyRunning) {
        let _ = writeln!(
            out,
            "    \"{ANY_RUNNING_ID}\" [label=\"any running state\", shape=hexagon, style=dashed];"
        );
    }
    if uses(&Node::AnyNonTerminal) {
        let _ = writeln!(
            out,
            "    \"{ANY_STATE_ID}\" [label=\"any non-terminal state\", shape=hexagon, style=dashed];"
        );
    }
    for e in edges {
        let id = |n: &Node| match n {
            Node::State(s) => dot_text(s),
            other => node_id(other),
        };
        let mut attrs = Vec::new();
        if !e.label.is_empty() {
            attrs.push(format!("label=\"{}\"", dot_text(&e.label)));
        }
        if matches!(e.kind, TransitionKind::Gate | TransitionKind::Violation) {
            attrs.push("style=dashed".to_string());
        }
        let attrs = if attrs.is_empty() {
            String::new()
        } else {
            format!(" [{}]", attrs.join(", "))
        };
        let _ = writeln!(out, "    \"{}\" -> \"{}\"{attrs};", id(&e.from), id(&e.to));
    }
    out.push_str("}\n");
    out
}
