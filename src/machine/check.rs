//! `metaopt machine check`: every problem of a set of tables at once, each
//! with its file, line and a one-line fix. Load errors (YAML, unknown keys,
//! guards that do not compile or name unknown variables) come from the
//! loader; the structural checks (dispatch, reachability, shadowed rules,
//! ownership, directive policy, terminal cleanup) run on the raw tables so
//! that they still run when a guard is broken. A reviewer sees the whole
//! list in one pass instead of fixing one error per run.

use super::graph::{DirectiveItem, FlatItem, FlatRule, Node, RawAgent, RawMachine, Target};
use super::graph::{TransitionKind, literal};
use super::model::{PolicyTable, SchemaTable, StateKind};
use super::{Machine, TableSource, suggest};
use indexmap::IndexMap;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};

/// One problem of the tables.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    /// Table file as shown to the user.
    pub file: String,
    /// 1-based line (best effort).
    pub line: usize,
    /// Stable kind slug (`unreachable-state`, `shadowed-rule`, …).
    pub kind: &'static str,
    /// What is wrong.
    pub message: String,
    /// How to fix it, in one line.
    pub hint: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: {}: {} (fix: {})",
            self.file, self.line, self.kind, self.message, self.hint
        )
    }
}

/// Every finding of the tables in `source`, sorted by file and line.
pub fn check(source: &TableSource) -> Vec<Finding> {
    let raw = RawMachine::parse(source);
    let mut c = Checker {
        source,
        findings: Vec::new(),
        graph_holes: false,
    };
    if let Err(errors) = Machine::from_source(source.clone()) {
        for e in &errors.0 {
            // The structural checks report unknown references themselves, with lines.
            if raw.is_some() && REFERENCE_ERRORS.iter().any(|p| e.contains(p)) {
                continue;
            }
            // Names defined in a file that does not parse are consequences, not problems.
            if CASCADES
                .iter()
                .any(|(file, p)| e.contains(p) && !parses(source, file))
            {
                continue;
            }
            c.load_error(e);
        }
    }
    if let Some(m) = &raw {
        c.references(m);
        // A graph with holes (a table that does not parse, a reference to nothing) would
        // only report the consequences of those holes; the holes are reported already.
        c.dispatch(m);
        let complete = m.unparsed.is_empty()
            && !c.graph_holes
            && !c
                .findings
                .iter()
                .any(|f| matches!(f.kind, "no-agent" | "no-phase"));
        if complete {
            c.reachability(m);
        }
        c.rules(m);
        c.unread(m);
        c.policy(m);
    }
    let mut findings = c.findings;
    findings.sort();
    findings.dedup();
    findings
}

/// Fragments of the loader's reference errors, which the static checks re-report with lines.
const REFERENCE_ERRORS: &[&str] = &[
    "initial state `",
    ".agent: unknown agent `",
    "has no phase `",
    "next: unknown state `",
];

/// Loader errors that only follow from another table not parsing: `(table, fragment)`.
const CASCADES: &[(&str, &str)] = &[
    ("policy.yaml", "unknown directive template `"),
    ("fragments.yaml", "unknown fragment `"),
];

/// True when `rel` is absent or parses as YAML.
fn parses(source: &TableSource, rel: &str) -> bool {
    source
        .get(rel)
        .is_none_or(|text| serde_yaml::from_str::<serde_yaml::Value>(text).is_ok())
}

/// One step of a line search: a mapping key, or a `field: value` pair.
#[derive(Debug, Clone, Copy)]
enum Anchor<'a> {
    /// `key:` at the start of a line (after `- `).
    Key(&'a str),
    /// `field: value` anywhere on a line (flow maps too).
    Field(&'a str, &'a str),
}

impl Anchor<'_> {
    fn matches(&self, line: &str) -> bool {
        match *self {
            Anchor::Key(k) => {
                let mut t = line.trim_start();
                while let Some(rest) = t.strip_prefix("- ") {
                    t = rest.trim_start();
                }
                [format!("{k}:"), format!("\"{k}\":"), format!("'{k}':")]
                    .iter()
                    .any(|p| t.starts_with(p.as_str()))
            }
            Anchor::Field(f, v) => {
                let needles = [
                    format!("{f}: {v}"),
                    format!("{f}: \"{v}\""),
                    format!("{f}: '{v}'"),
                ];
                needles.iter().any(|n| {
                    line.match_indices(n.as_str()).any(|(at, _)| {
                        let before = line[..at].chars().next_back();
                        let after = line[at + n.len()..].chars().next();
                        before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                            && after.is_none_or(|c| " ,}]#".contains(c))
                    })
                })
            }
        }
    }
}

/// The line of the last anchor found, searching each after the previous one.
fn locate(text: &str, anchors: &[Anchor]) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0;
    let mut found = 1;
    for anchor in anchors {
        match (from..lines.len()).find(|&i| anchor.matches(lines[i])) {
            Some(i) => {
                found = i + 1;
                from = i;
            }
            None => break,
        }
    }
    found
}

struct Checker<'a> {
    source: &'a TableSource,
    findings: Vec<Finding>,
    /// A state, agent or phase the transitions need is missing.
    graph_holes: bool,
}

/// Where a rule is written: its file and the anchors leading to it.
struct RuleAt<'a> {
    file: String,
    anchors: Vec<Anchor<'a>>,
    subject: String,
}

impl<'a> Checker<'a> {
    fn push(
        &mut self,
        rel: &str,
        anchors: &[Anchor],
        kind: &'static str,
        message: String,
        hint: String,
    ) {
        let line = self
            .source
            .get(rel)
            .map(|text| locate(text, anchors))
            .unwrap_or(1);
        self.findings.push(Finding {
            file: self.source.display(rel),
            line,
            kind,
            message,
            hint,
        });
    }

    fn rule_at<'r>(agent: &'r RawAgent, phase: &'r str, rule: &'r FlatRule) -> RuleAt<'r> {
        let subject = format!("rule `{}` of `{}`", rule.name, agent.label(phase));
        match &rule.fragment {
            Some(f) => RuleAt {
                file: "fragments.yaml".to_string(),
                anchors: vec![Anchor::Key(f), Anchor::Field("name", &rule.name)],
                subject: format!("{subject} (from fragment `{f}`)"),
            },
            None => RuleAt {
                file: agent.file.clone(),
                anchors: vec![
                    Anchor::Key("phases"),
                    Anchor::Key(phase),
                    Anchor::Field("name", &rule.name),
                ],
                subject,
            },
        }
    }

    /// Turns one loader error into a finding, locating the rule it names.
    fn load_error(&mut self, msg: &str) {
        let mut files: Vec<&String> = self.source.files().keys().collect();
        let fallback = ["states.yaml".to_string(), "policy.yaml".to_string()];
        files.extend(fallback.iter());
        let hit = files
            .iter()
            .map(|rel| (rel.as_str(), self.source.display(rel)))
            .filter(|(_, shown)| msg.starts_with(&format!("{shown}:")))
            .max_by_key(|(_, shown)| shown.len());
        let (kind, hint) = load_hint(msg);
        let Some((rel, shown)) = hit else {
            self.findings.push(Finding {
                file: "machine".to_string(),
                line: 1,
                kind,
                message: msg.to_string(),
                hint,
            });
            return;
        };
        let rest = msg[shown.len() + 1..].trim_start();
        let text = self.source.get(rel).unwrap_or_default();
        let line = explicit_line(rel, rest).unwrap_or_else(|| {
            let path = rest.split_whitespace().next().unwrap_or_default();
            let path = path.trim_end_matches(':');
            let segments: Vec<&str> = path.split('.').collect();
            let mut anchors = Vec::new();
            match segments.as_slice() {
                ["phases", phase, rule, ..] => {
                    anchors.push(Anchor::Key("phases"));
                    anchors.push(Anchor::Key(phase));
                    let rule = rule.split('[').next().unwrap_or(rule);
                    if rule != "steps" {
                        anchors.push(Anchor::Field("name", rule));
                    }
                }
                ["phases", phase] => {
                    anchors.push(Anchor::Key("phases"));
                    anchors.push(Anchor::Key(phase.split('[').next().unwrap_or(phase)));
                }
                ["states", state, rest @ ..] => {
                    anchors.push(Anchor::Key("states"));
                    anchors.push(Anchor::Key(state));
                    if let Some(choice) = rest
                        .first()
                        .and_then(|r| r.strip_prefix("phases["))
                        .and_then(|r| r.strip_suffix(']'))
                    {
                        anchors.push(Anchor::Field("phase", choice));
                    }
                }
                [top, name, ..] => {
                    anchors.push(Anchor::Key(top));
                    anchors.push(Anchor::Key(name));
                }
                _ => {}
            }
            locate(text, &anchors)
        });
        self.findings.push(Finding {
            file: shown,
            line,
            kind,
            message: rest.to_string(),
            hint,
        });
    }

    /// Unknown states, agents, phases and actions the tables name.
    fn references(&mut self, m: &RawMachine) {
        let before = self.findings.len();
        self.graph_references(m);
        self.graph_holes = self.findings.len() > before;
        self.other_references(m);
    }

    /// References the transitions are made of: initial, agents, phases, targets.
    fn graph_references(&mut self, m: &RawMachine) {
        let states = &m.states.states;
        let agent_names: Vec<String> = m.agents.iter().map(|a| a.table.agent.clone()).collect();
        if !states.contains_key(&m.states.initial) {
            self.push(
                "states.yaml",
                &[Anchor::Key("initial")],
                "unknown-reference",
                format!(
                    "initial state `{}` is not defined{}",
                    m.states.initial,
                    suggest(&m.states.initial, states.keys())
                ),
                "name a state of `states:` as `initial:`".into(),
            );
        }
        for (name, def) in states {
            let Some(agent_name) = &def.agent else {
                continue;
            };
            match m.agent(agent_name) {
                // An agent file that does not parse is reported by the loader.
                None if !m.unparsed.iter().any(|f| f.starts_with("agents/")) => self.push(
                    "states.yaml",
                    &[
                        Anchor::Key("states"),
                        Anchor::Key(name),
                        Anchor::Key("agent"),
                    ],
                    "unknown-reference",
                    format!(
                        "state `{name}` is governed by unknown agent `{agent_name}`{}",
                        suggest(agent_name, agent_names.iter())
                    ),
                    format!(
                        "use an agent defined under agents/ ({})",
                        agent_names.join(", ")
                    ),
                ),
                None => {}
                Some(agent) => {
                    let phases: Vec<String> = agent.phases.iter().map(|p| p.name.clone()).collect();
                    for choice in &def.phases {
                        if agent.phase(&choice.phase).is_none() {
                            self.push(
                                "states.yaml",
                                &[
                                    Anchor::Key("states"),
                                    Anchor::Key(name),
                                    Anchor::Field("phase", &choice.phase),
                                ],
                                "unknown-reference",
                                format!(
                                    "state `{name}` dispatches phase `{}` that agent `{agent_name}` does not define{}",
                                    choice.phase,
                                    suggest(&choice.phase, phases.iter())
                                ),
                                format!("use one of the phases of {}: {}", agent.file, phases.join(", ")),
                            );
                        }
                    }
                }
            }
        }
        for agent in &m.agents {
            for phase in &agent.phases {
                for rule in phase.rules() {
                    if let Target::To(next) = rule.target()
                        && !states.contains_key(&next)
                    {
                        let at = Self::rule_at(agent, &phase.name, rule);
                        self.push(
                            &at.file,
                            &at.anchors,
                            "unknown-reference",
                            format!(
                                "{} moves to unknown state `{next}`{}",
                                at.subject,
                                suggest(&next, states.keys())
                            ),
                            "use a state defined in states.yaml, or add the state".into(),
                        );
                    }
                }
            }
        }
        let Some(policy) = &m.policy else {
            return;
        };
        let pv = &policy.orchestrator.protocol_violation_state;
        if !states.contains_key(pv) {
            self.push(
                "policy.yaml",
                &[
                    Anchor::Key("orchestrator"),
                    Anchor::Key("protocol_violation_state"),
                ],
                "unknown-reference",
                format!(
                    "orchestrator.protocol_violation_state `{pv}` is not a state{}",
                    suggest(pv, states.keys())
                ),
                "name a terminal state of states.yaml".into(),
            );
        }
        let gate = &policy.orchestrator.agent;
        let gate_phase = &policy.orchestrator.gate_phase;
        if let Some(agent) = m.agent(gate)
            && agent.phase(gate_phase).is_none()
        {
            let phases: Vec<String> = agent.phases.iter().map(|p| p.name.clone()).collect();
            self.push(
                "policy.yaml",
                &[Anchor::Key("orchestrator"), Anchor::Key("gate_phase")],
                "unknown-reference",
                format!(
                    "orchestrator.gate_phase `{gate_phase}` is not a phase of `{gate}`{}",
                    suggest(gate_phase, phases.iter())
                ),
                format!(
                    "use one of the phases of {}: {}",
                    agent.file,
                    phases.join(", ")
                ),
            );
        }
        if m.agent(gate).is_none() && !m.unparsed.iter().any(|f| f.starts_with("agents/")) {
            self.push(
                "policy.yaml",
                &[Anchor::Key("orchestrator"), Anchor::Key("agent")],
                "unknown-reference",
                format!(
                    "orchestrator.agent `{gate}` is not defined under agents/{}",
                    suggest(gate, agent_names.iter())
                ),
                "add the orchestrator's agent table or fix the name".into(),
            );
        }
    }

    /// References that do not shape the graph: cleanup actions.
    fn other_references(&mut self, m: &RawMachine) {
        let Some(policy) = &m.policy else {
            return;
        };
        for (name, def) in &m.states.states {
            for action in &def.cleanup {
                if !policy.directives.contains_key(action) {
                    self.push(
                        "states.yaml",
                        &[
                            Anchor::Key("states"),
                            Anchor::Key(name),
                            Anchor::Key("cleanup"),
                        ],
                        "unknown-reference",
                        format!(
                            "cleanup of `{name}` names unknown directive action `{action}`{}",
                            suggest(action, policy.directives.keys())
                        ),
                        "use an action listed under `directives:` in policy.yaml".into(),
                    );
                }
            }
        }
    }

    /// Governing agents, phase choices, and phases nothing dispatches.
    fn dispatch(&mut self, m: &RawMachine) {
        for (name, def) in &m.states.states {
            if def.kind == StateKind::Terminal {
                continue;
            }
            let at = [Anchor::Key("states"), Anchor::Key(name)];
            let Some(agent) = &def.agent else {
                self.push(
                    "states.yaml",
                    &at,
                    "no-agent",
                    format!(
                        "{} state `{name}` has no governing agent",
                        format!("{:?}", def.kind).to_lowercase()
                    ),
                    "add `agent:` and `phases:` to the state, or make it `kind: terminal`".into(),
                );
                continue;
            };
            if def.phases.is_empty() {
                self.push(
                    "states.yaml",
                    &at,
                    "no-phase",
                    format!("state `{name}` names agent `{agent}` but no phase to run"),
                    "list the phase(s) to run under `phases:`".into(),
                );
            }
            if let Some(i) = def
                .phases
                .iter()
                .position(|c| c.when.as_deref().is_none_or(|w| w.trim() == "true"))
            {
                for later in &def.phases[i + 1..] {
                    self.push(
                        "states.yaml",
                        &[
                            Anchor::Key("states"),
                            Anchor::Key(name),
                            Anchor::Field("phase", &later.phase),
                        ],
                        "shadowed-phase",
                        format!(
                            "phase `{}` of state `{name}` is never chosen: `{}` before it has no guard",
                            later.phase, def.phases[i].phase
                        ),
                        "move the unguarded phase last or give it a `when:`".into(),
                    );
                }
            }
        }
        // Without a policy the orchestrator's gate phase is unknown.
        let Some(policy) = &m.policy else {
            return;
        };
        let gate = (
            policy.orchestrator.agent.as_str(),
            policy.orchestrator.gate_phase.as_str(),
        );
        let reached: HashSet<(&str, &str)> = m
            .dispatch()
            .into_iter()
            .map(|(_, a, p)| (a.table.agent.as_str(), p.name.as_str()))
            .collect();
        for agent in &m.agents {
            for phase in &agent.phases {
                let key = (agent.table.agent.as_str(), phase.name.as_str());
                if key != gate && !reached.contains(&key) {
                    self.push(
                        &agent.file,
                        &[Anchor::Key("phases"), Anchor::Key(&phase.name)],
                        "unreached-phase",
                        format!(
                            "phase `{}` is not dispatched by any state's `phases` list",
                            agent.label(&phase.name)
                        ),
                        format!(
                            "add `{{ phase: {} }}` to a state governed by `{}`, or delete the phase",
                            phase.name, agent.table.agent
                        ),
                    );
                }
            }
        }
    }

    /// States unreachable from `initial`, and states from which no rule path ends the campaign.
    fn reachability(&mut self, m: &RawMachine) {
        let transitions = m.transitions();
        let mut all: HashMap<String, BTreeSet<String>> = HashMap::new();
        let mut progress: HashMap<String, BTreeSet<String>> = HashMap::new();
        for t in &transitions {
            if t.from == Node::Start {
                continue;
            }
            let targets = m.expand(&t.to);
            for from in m.expand(&t.from) {
                if m.is_terminal(&from) {
                    continue;
                }
                // A computed target (a resume) returns to a state the machine was in
                // before, so it never makes a state reachable on its own.
                if t.kind != TransitionKind::Computed {
                    all.entry(from.clone())
                        .or_default()
                        .extend(targets.iter().cloned());
                }
                if matches!(t.kind, TransitionKind::Rule | TransitionKind::Computed) {
                    progress
                        .entry(from)
                        .or_default()
                        .extend(targets.iter().cloned());
                }
            }
        }
        let states = &m.states.states;
        if states.contains_key(&m.states.initial) {
            let seen = bfs(std::slice::from_ref(&m.states.initial), &all);
            for name in states.keys() {
                if !seen.contains(name) {
                    self.push(
                        "states.yaml",
                        &[Anchor::Key("states"), Anchor::Key(name)],
                        "unreachable-state",
                        format!(
                            "state `{name}` cannot be reached from the initial state `{}`",
                            m.states.initial
                        ),
                        format!(
                            "add a rule with `next: {name}` to a phase of a reachable state, or remove the state"
                        ),
                    );
                }
            }
        }
        let mut reverse: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (from, tos) in &progress {
            for to in tos {
                reverse.entry(to.clone()).or_default().insert(from.clone());
            }
        }
        let terminals: Vec<String> = m
            .states_of_kind(StateKind::Terminal)
            .into_iter()
            .map(str::to_string)
            .collect();
        let can_end = bfs(&terminals, &reverse);
        for name in m.non_terminal_states() {
            if !can_end.contains(name) {
                self.push(
                    "states.yaml",
                    &[Anchor::Key("states"), Anchor::Key(name)],
                    "dead-end",
                    format!(
                        "no path of rules leads from state `{name}` to a terminal state, so a campaign there could never end"
                    ),
                    "add a rule whose `next:` leads toward a terminal state".into(),
                );
            }
        }
    }

    /// Shadowed rules, ownership, directives, launches and terminal cleanup of every rule.
    fn rules(&mut self, m: &RawMachine) {
        let policy = m.policy.as_ref();
        for agent in &m.agents {
            for phase in &agent.phases {
                self.shadowed(agent, &phase.name, &phase.items);
                for rule in phase.rules() {
                    self.ownership(agent, &phase.name, rule);
                    if let Some(policy) = policy {
                        self.directives(agent, &phase.name, rule, policy);
                        self.launches(agent, &phase.name, rule, policy);
                    }
                    // Without a policy, directive templates (and so cleanup) cannot be resolved.
                    if policy.is_some() {
                        self.cleanup(m, agent, &phase.name, rule);
                    }
                }
            }
        }
    }

    /// `unread:` columns: each names a schema table and top-level fields of it, and the
    /// phase's own steps never mention those fields (a use would fail at run time).
    fn unread(&mut self, m: &RawMachine) {
        for agent in &m.agents {
            for phase in &agent.phases {
                let Some(def) = agent.table.phases.get(&phase.name) else {
                    continue;
                };
                for (schema, fields) in &def.unread {
                    let anchors = [
                        Anchor::Key("phases"),
                        Anchor::Key(&phase.name),
                        Anchor::Key("unread"),
                    ];
                    let rel = format!("schemas/{schema}.yaml");
                    // A table that does not parse is reported by the loader.
                    let Some(text) = self.source.get(&rel) else {
                        self.push(
                            &agent.file,
                            &anchors,
                            "unknown-reference",
                            format!(
                                "`unread:` of `{}` names schema `{schema}`, which has no table {rel}",
                                agent.label(&phase.name)
                            ),
                            "name a schema of machine/schemas/ (the one the phase reads the document with)".into(),
                        );
                        continue;
                    };
                    let Ok(table) = serde_yaml::from_str::<SchemaTable>(text) else {
                        continue;
                    };
                    for field in fields {
                        if !table.fields.contains_key(field) {
                            self.push(
                                &agent.file,
                                &anchors,
                                "unknown-reference",
                                format!(
                                    "`unread:` of `{}` names `{field}`, not a top-level field of schema `{schema}`{}",
                                    agent.label(&phase.name),
                                    suggest(field, table.fields.keys())
                                ),
                                format!("use a field listed under `fields:` in {rel}"),
                            );
                        } else if let Some(at) = mentions_field(
                            &phase.items,
                            field,
                            table
                                .fields
                                .get(field)
                                .and_then(crate::engine::unread::answered_item_fields)
                                .as_deref(),
                        ) {
                            self.push(
                                &agent.file,
                                &anchors,
                                "unread-field-used",
                                format!(
                                    "`{}` declares `{field}` unread, but {at} mentions it",
                                    agent.label(&phase.name)
                                ),
                                format!("remove `{field}` from `unread:`, or stop reading it in the phase"),
                            );
                        }
                    }
                }
            }
        }
    }

    fn shadowed(&mut self, agent: &RawAgent, phase: &str, items: &[FlatItem]) {
        for (i, item) in items.iter().enumerate() {
            let FlatItem::Rule(rule) = item else {
                continue;
            };
            let guard = rule.normalized_guard();
            let mut rebound: HashSet<&str> = HashSet::new();
            let mut shadow: Option<(&FlatRule, &'static str)> = None;
            for earlier in items[..i].iter().rev() {
                match earlier {
                    FlatItem::Bind { names, .. } => {
                        rebound.extend(names.iter().map(String::as_str))
                    }
                    FlatItem::Rule(e) => {
                        if e.always_fires() {
                            shadow = Some((e, "has no guard (or `true`), so it always fires"));
                        } else if let Some(g) = &guard
                            && e.normalized_guard().as_ref() == Some(g)
                            && !identifiers(g).any(|id| rebound.contains(id))
                        {
                            shadow = Some((e, "has the same guard"));
                        }
                    }
                }
            }
            // The earliest shadowing rule is the one to report.
            if let Some((e, why)) = shadow {
                let at = Self::rule_at(agent, phase, rule);
                self.push(
                    &at.file,
                    &at.anchors,
                    "shadowed-rule",
                    format!(
                        "{} can never fire: earlier rule `{}` {why}",
                        at.subject, e.name
                    ),
                    format!(
                        "move `{}` before `{}`, tighten `{}`'s guard, or delete the dead rule",
                        rule.name, e.name, e.name
                    ),
                );
            }
        }
    }

    fn ownership(&mut self, agent: &RawAgent, phase: &str, rule: &FlatRule) {
        let owns = &agent.table.owns;
        let changes = !rule.set.is_empty() || !rule.step.append.is_empty();
        if !agent.table.patches_state && (changes || rule.step.new_state.is_some()) {
            let at = Self::rule_at(agent, phase, rule);
            self.push(
                &at.file,
                &at.anchors,
                "ownership",
                format!(
                    "{} changes the state but agent `{}` has `patches_state: false`",
                    at.subject, agent.table.agent
                ),
                "drop `set:`/`append:`/`new_state:` from the rule, or let the agent patch the state"
                    .into(),
            );
            return;
        }
        let append = crate::machine::expand_merge_key(&rule.step.append);
        let appended = append.keys().map(|k| (k, "append"));
        for (key, column) in rule.set.keys().map(|k| (k, "set")).chain(appended) {
            let top = key.split('.').next().unwrap_or(key);
            if owns.iter().any(|o| o == top) {
                continue;
            }
            let at = Self::rule_at(agent, phase, rule);
            let mut anchors = at.anchors.clone();
            anchors.push(Anchor::Key(key));
            self.push(
                &at.file,
                &anchors,
                "ownership",
                format!(
                    "{} {column}s `{key}` but agent `{}` does not own `{top}`",
                    at.subject, agent.table.agent
                ),
                format!(
                    "add `{top}` to `owns:` of {}, or remove `{key}` from `{column}:`",
                    agent.file
                ),
            );
        }
    }

    fn directives(&mut self, agent: &RawAgent, phase: &str, rule: &FlatRule, policy: &PolicyTable) {
        for (i, item) in rule.directive_items(Some(policy)).iter().enumerate() {
            let problems = match item {
                DirectiveItem::Map(map) => directive_problems(map, policy, true),
                DirectiveItem::Computed(_) => vec![],
                DirectiveItem::Invalid => vec![(
                    "is neither a map nor an `= expr`".to_string(),
                    "write the directive as `{action: ..., reason: ..., ...}` or `- template: NAME`"
                        .to_string(),
                )],
            };
            for (problem, hint) in problems {
                let at = Self::rule_at(agent, phase, rule);
                let mut anchors = at.anchors.clone();
                anchors.push(Anchor::Key("directives"));
                self.push(
                    &at.file,
                    &anchors,
                    "directive",
                    format!("{}: directives[{i}] {problem}", at.subject),
                    hint,
                );
            }
        }
    }

    fn launches(&mut self, agent: &RawAgent, phase: &str, rule: &FlatRule, policy: &PolicyTable) {
        for (i, item) in rule.launch_items().iter().enumerate() {
            let DirectiveItem::Map(map) = item else {
                continue;
            };
            let Some(worker) = map.get("worker_ref").and_then(literal) else {
                continue;
            };
            let problem = match policy.workers.get(worker) {
                None => format!(
                    "launches unknown worker `{worker}`{}",
                    suggest(worker, policy.workers.keys())
                ),
                Some(w) if !w.launchable => {
                    format!("launches `{worker}`, which policy.yaml marks `launchable: false`")
                }
                Some(_) => continue,
            };
            let at = Self::rule_at(agent, phase, rule);
            let mut anchors = at.anchors.clone();
            anchors.push(Anchor::Key("launch"));
            self.push(
                &at.file,
                &anchors,
                "launch",
                format!("{}: launch[{i}] {problem}", at.subject),
                "launch a worker listed under `workers:` in policy.yaml; directive-only executors go through directives".into(),
            );
        }
    }

    fn cleanup(&mut self, m: &RawMachine, agent: &RawAgent, phase: &str, rule: &FlatRule) {
        let Target::To(next) = rule.target() else {
            return;
        };
        let Some(def) = m.states.states.get(&next) else {
            return;
        };
        if def.kind != StateKind::Terminal || def.cleanup.is_empty() {
            return;
        }
        let actions = rule.actions(m.policy.as_ref());
        let missing: Vec<&String> = def
            .cleanup
            .iter()
            .filter(|c| !actions.iter().any(|a| a.as_ref() == Some(*c)))
            .collect();
        if missing.is_empty() {
            return;
        }
        let computed = actions.iter().any(Option::is_none);
        let at = Self::rule_at(agent, phase, rule);
        let mut anchors = at.anchors.clone();
        anchors.push(Anchor::Field("next", &next));
        let list = missing
            .iter()
            .map(|a| format!("`{a}`"))
            .collect::<Vec<_>>()
            .join(", ");
        self.push(
            &at.file,
            &anchors,
            "cleanup",
            format!(
                "{} moves to terminal state `{next}` without its cleanup directive(s) {list}{}",
                at.subject,
                if computed {
                    " (computed directives cannot be verified)"
                } else {
                    ""
                }
            ),
            format!(
                "add {} to the rule's `directives:` (states.yaml `{next}.cleanup`)",
                missing
                    .iter()
                    .map(|a| format!("`- template: {a}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
    }

    /// Directive templates, protocol-violation directives and worker policy.
    fn policy(&mut self, m: &RawMachine) {
        let Some(policy) = &m.policy else {
            return;
        };
        for (name, map) in &policy.directive_templates {
            for (problem, hint) in directive_problems(map, policy, false) {
                self.push(
                    "policy.yaml",
                    &[Anchor::Key("directive_templates"), Anchor::Key(name)],
                    "directive",
                    format!("directive template `{name}` {problem}"),
                    hint,
                );
            }
        }
        for action in &policy.blocked_directives {
            if policy.directives.contains_key(action) {
                self.push(
                    "policy.yaml",
                    &[Anchor::Key("directives"), Anchor::Key(action)],
                    "directive",
                    format!("action `{action}` is both allowed and blocked"),
                    "remove it from `directives:` or from `blocked_directives:`".into(),
                );
            }
        }
        let pv_at = [
            Anchor::Key("orchestrator"),
            Anchor::Key("protocol_violation_directives"),
        ];
        let mut pv_actions = Vec::new();
        for name in &policy.orchestrator.protocol_violation_directives {
            match policy.directive_templates.get(name) {
                None => self.push(
                    "policy.yaml",
                    &pv_at,
                    "unknown-reference",
                    format!(
                        "protocol_violation_directives names unknown directive template `{name}`{}",
                        suggest(name, policy.directive_templates.keys())
                    ),
                    "name a template of `directive_templates:`".into(),
                ),
                Some(map) => {
                    for (problem, hint) in directive_problems(map, policy, true) {
                        self.push(
                            "policy.yaml",
                            &pv_at,
                            "directive",
                            format!("protocol-violation directive `{name}` {problem}"),
                            hint,
                        );
                    }
                    if let Some(a) = map.get("action").and_then(literal) {
                        pv_actions.push(a.to_string());
                    }
                }
            }
        }
        let pv = &policy.orchestrator.protocol_violation_state;
        if let Some(def) = m.states.states.get(pv) {
            let missing: Vec<String> = def
                .cleanup
                .iter()
                .filter(|c| !pv_actions.contains(c))
                .map(|c| format!("`{c}`"))
                .collect();
            if !missing.is_empty() {
                self.push(
                    "policy.yaml",
                    &pv_at,
                    "cleanup",
                    format!(
                        "a protocol violation moves to `{pv}` without its cleanup directive(s) {}",
                        missing.join(", ")
                    ),
                    "add the missing templates to `orchestrator.protocol_violation_directives`"
                        .into(),
                );
            }
        }
        for (name, w) in &policy.workers {
            if let Some(class) = &w.model_class
                && !policy.model_classes.contains_key(class)
            {
                self.push(
                    "policy.yaml",
                    &[
                        Anchor::Key("workers"),
                        Anchor::Key(name),
                        Anchor::Key("model_class"),
                    ],
                    "unknown-reference",
                    format!(
                        "worker `{name}` uses unknown model class `{class}`{}",
                        suggest(class, policy.model_classes.keys())
                    ),
                    "use a class listed under `model_classes:`".into(),
                );
            }
        }
    }
}

/// What is wrong with one directive map; `complete` also demands every required field.
fn directive_problems(
    map: &IndexMap<String, Yaml>,
    policy: &PolicyTable,
    complete: bool,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let present = |k: &str| map.get(k).is_some_and(|v| !v.is_null());
    let action = match map.get("action") {
        None | Some(Yaml::Null) => {
            out.push((
                "has no `action`".to_string(),
                "add `action:` or use `- template: NAME`".to_string(),
            ));
            None
        }
        Some(v) => literal(v),
    };
    let shown = action.unwrap_or("(computed)");
    if complete && (!present("reason") || map.get("reason").and_then(literal) == Some("")) {
        out.push((
            format!("`{shown}` has no `reason`"),
            "add a non-empty `reason:` saying why the directive is emitted".to_string(),
        ));
    }
    let Some(action) = action else {
        return out;
    };
    if policy.blocked_directives.iter().any(|b| b == action) {
        out.push((
            format!("uses blocked action `{action}`"),
            "blocked actions (policy.yaml `blocked_directives`) may never be emitted; use an allowed action".to_string(),
        ));
        return out;
    }
    let Some(dp) = policy.directives.get(action) else {
        out.push((
            format!(
                "uses unknown action `{action}`{}",
                suggest(action, policy.directives.keys())
            ),
            "use an action listed under `directives:` in policy.yaml, or add it there".to_string(),
        ));
        return out;
    };
    if complete {
        for field in &dp.required {
            if !present(field) {
                out.push((
                    format!("`{action}` lacks required field `{field}`"),
                    format!("add `{field}:` to the directive (policy.yaml `directives.{action}.required`)"),
                ));
            }
        }
    }
    out
}

/// The first step of `items` that mentions `field`: as a property (`.field`), a quoted
/// name (`"field"`, `'field'`: an index) or a key, whole or dotted (`set:`, `append:`);
/// described for a finding. `.field.to_json()` is not a mention (the text is printed).
/// What an unread list answers is not one either, when its rule checks items:
/// `.field.len()`, `.field.string_set(..)`, `.field.has_item(..)`, `.field.unseen_items(..)`,
/// `.field.max_suffix(..)`,
/// `.field.join_field("x", ..)` when `x` is among `answers` (see
/// `engine::unread::answered_item_fields`), `append: { field: .. }` and
/// `set: { field: .. }`.
fn mentions_field(items: &[FlatItem], field: &str, answers: Option<&[String]>) -> Option<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let answered = |rest: &str| {
        // Printed from its text, whatever the field is.
        if rest.starts_with(".to_json()") {
            return true;
        }
        let Some(fields) = answers else {
            return false;
        };
        if [".len()", ".string_set(", ".has_item(", ".unseen_items("]
            .iter()
            .any(|call| rest.starts_with(call))
        {
            return true;
        }
        // The first argument, a string literal, and what follows it.
        let named = |call: &str| {
            rest.strip_prefix(call)
                .map(str::trim_start)
                .and_then(|arg| arg.strip_prefix('"'))
                .and_then(|arg| arg.split_once('"'))
        };
        // `max_suffix(field, prefix)` reads one item field; `max_suffix(prefix)` reads
        // whole items.
        if named(".max_suffix(").is_some_and(|(_, after)| after.trim_start().starts_with(',')) {
            return true;
        }
        named(".join_field(").is_some_and(|(name, _)| fields.iter().any(|f| f == name))
    };
    let mentions = |text: &str| {
        text == field
            || text
                .strip_prefix(field)
                .is_some_and(|rest| rest.starts_with('.'))
            || text.match_indices(field).any(|(at, _)| {
                let before = text[..at].chars().next_back();
                let rest = &text[at + field.len()..];
                let after = rest.chars().next();
                let quoted = |q: char| before == Some(q) && after == Some(q);
                (before == Some('.') && !after.is_some_and(is_ident) && !answered(rest))
                    || quoted('"')
                    || quoted('\'')
            })
    };
    items.iter().find_map(|item| {
        let (step, what) = match item {
            FlatItem::Bind { step, .. } => (&**step, "a `let:` step".to_string()),
            FlatItem::Rule(rule) => (&rule.step, format!("rule `{}`", rule.name)),
        };
        // Each string of the step, so that escaping cannot hide or fake a quote.
        let mut yaml = serde_yaml::to_value(step).ok()?;
        if answers.is_some() {
            let written = writes_unnamed(&mut yaml, field);
            if written.iter().flat_map(strings_of).any(&mentions) {
                return Some(what);
            }
        }
        strings_of(&yaml).any(&mentions).then_some(what)
    })
}

/// Takes `field`'s own key out from under `append:` and `set:` in `step`, and returns
/// the values it had (they are still scanned): an unread list grows, and a field is
/// replaced whole, without being read (a dotted key below the field still reads it).
fn writes_unnamed(step: &mut Yaml, field: &str) -> Vec<Yaml> {
    // (Also in a merged mapping: `set: { <<: *close, .. }`.)
    fn unname(writes: &mut Yaml, field: &str, values: &mut Vec<Yaml>) {
        if let Yaml::Sequence(merged) = writes {
            merged.iter_mut().for_each(|m| unname(m, field, values));
        }
        let Yaml::Mapping(writes) = writes else {
            return;
        };
        values.extend(writes.remove(field));
        if let Some(merged) = writes.get_mut("<<") {
            unname(merged, field, values);
        }
    }
    let mut values = Vec::new();
    for entry in ["append", "set"] {
        if let Some(writes) = step.get_mut(entry) {
            unname(writes, field, &mut values);
        }
    }
    values
}

/// Every string of `v`, keys included.
fn strings_of(v: &Yaml) -> Box<dyn Iterator<Item = &str> + '_> {
    match v {
        Yaml::String(s) => Box::new(std::iter::once(s.as_str())),
        Yaml::Sequence(items) => Box::new(items.iter().flat_map(strings_of)),
        Yaml::Mapping(m) => Box::new(
            m.iter()
                .flat_map(|(k, v)| strings_of(k).chain(strings_of(v))),
        ),
        Yaml::Tagged(t) => strings_of(&t.value),
        _ => Box::new(std::iter::empty()),
    }
}

/// Identifiers of a guard (names it may read).
fn identifiers(guard: &str) -> impl Iterator<Item = &str> {
    guard
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty())
}

fn bfs(start: &[String], edges: &HashMap<String, BTreeSet<String>>) -> HashSet<String> {
    let mut seen: HashSet<String> = start.iter().cloned().collect();
    let mut queue: VecDeque<String> = start.iter().cloned().collect();
    while let Some(s) = queue.pop_front() {
        for next in edges.get(&s).into_iter().flatten() {
            if seen.insert(next.clone()) {
                queue.push_back(next.clone());
            }
        }
    }
    seen
}

/// A line number the loader already gave: `:LINE:COL:` of a YAML error, `line N` of a template or script.
fn explicit_line(rel: &str, rest: &str) -> Option<usize> {
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if !digits.is_empty() && rest[digits.len()..].starts_with(':') {
        return digits.parse().ok();
    }
    if !(rel.ends_with(".rhai") || rel.ends_with(".md")) {
        return None;
    }
    let at = rest.find("line ")?;
    let n: String = rest[at + 5..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    n.parse().ok()
}

/// The kind and fix hint of a loader error.
fn load_hint(msg: &str) -> (&'static str, String) {
    let unbound = msg.contains("Undefined variable") || msg.contains("Variable not found");
    let hint = if msg.contains("guard does not compile") && unbound {
        "bind the name in an earlier `let:` step or fix its spelling; a guard sees only `args`, `now`, `vars` and names bound before it"
    } else if msg.contains("guard does not compile") {
        "fix the rhai expression of the guard"
    } else if unbound {
        "bind the name in an earlier `let:` step or fix its spelling"
    } else if msg.contains("unknown fragment") {
        "define the fragment in fragments.yaml or fix the name after `use:`"
    } else if msg.contains("unknown directive template") {
        "define the template under `directive_templates:` in policy.yaml or fix its name"
    } else if msg.contains("missing table file") {
        "restore the table file"
    } else if msg.contains("defined twice") {
        "give each agent table its own `agent:` name"
    } else if msg.contains("unknown field") || msg.contains("missing field") {
        "use only the keys the table format defines (references/table-format.md)"
    } else if msg.contains("invalid type") || msg.contains("invalid value") {
        "give the key a value of the type the table format expects"
    } else if msg.contains(" at line ") && msg.contains(" column ") {
        "fix the YAML syntax there; quote a value that starts with `!`, `&`, `*` or `%` or contains `: `"
    } else {
        "fix the table so that it loads"
    };
    let kind = if msg.contains("guard does not compile") {
        "guard"
    } else {
        "load"
    };
    (kind, hint.to_string())
}
