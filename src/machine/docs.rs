//! `metaopt machine docs`: the tables of `references/*.md` that mirror the
//! machine are generated from it, so the prose a person reads can never
//! drift from the tables the engine runs. A region is the text between
//! `<!-- generated:NAME:begin -->` and `<!-- generated:NAME:end -->`;
//! everything outside the markers is the writer's and is left alone.

use super::graph::{DirectiveItem, FlatItem, FlatRule, RawMachine, Target, literal, normalize_ws};
use super::model::StateKind;
use std::path::{Path, PathBuf};

/// Names of the regions this module can generate.
pub const REGIONS: &[&str] = &[
    "states",
    "dispatch",
    "transitions",
    "ownership",
    "directives",
    "stop-conditions",
];

const MARK_OPEN: &str = "<!-- generated:";
const MARK_BEGIN: &str = ":begin -->";
const MARK_END: &str = ":end -->";

/// The generated body of region `name` (without markers), or `None` for an unknown name.
pub fn region(m: &RawMachine, name: &str) -> Option<String> {
    let rows = match name {
        "states" => states(m),
        "dispatch" => dispatch(m),
        "transitions" => transitions(m),
        "ownership" => ownership(m),
        "directives" => directives(m),
        "stop-conditions" => stop_conditions(m),
        _ => return None,
    };
    Some(rows.join("\n"))
}

/// Escapes a table cell.
fn cell(s: &str) -> String {
    normalize_ws(s).replace('|', "\\|")
}

/// A code span for a cell.
fn code(s: &str) -> String {
    let s = cell(s);
    if s.contains('`') {
        format!("`` {s} ``")
    } else {
        format!("`{s}`")
    }
}

fn or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "—".to_string()
    } else {
        items.join(", ")
    }
}

fn header(cols: &[&str]) -> Vec<String> {
    vec![
        format!("| {} |", cols.join(" | ")),
        format!("|{}", "---|".repeat(cols.len())),
    ]
}

fn row(cells: &[String]) -> String {
    format!("| {} |", cells.join(" | "))
}

fn states(m: &RawMachine) -> Vec<String> {
    let mut out = header(&[
        "state",
        "kind",
        "status",
        "governing agent",
        "cleanup on entry",
        "description",
    ]);
    for (name, def) in &m.states.states {
        out.push(row(&[
            cell(name),
            format!("{:?}", def.kind).to_lowercase(),
            cell(&def.status),
            cell(def.agent.as_deref().unwrap_or("—")),
            cell(&or_dash(&def.cleanup)),
            cell(&def.description),
        ]));
    }
    out.push(String::new());
    out.push(format!("Initial state: `{}`.", m.states.initial));
    out
}

fn guard_cell(g: Option<&str>) -> String {
    match g {
        None => "always".to_string(),
        Some(g) => code(g),
    }
}

fn dispatch(m: &RawMachine) -> Vec<String> {
    let mut out = header(&["state", "control agent", "phase", "when"]);
    for (name, def) in &m.states.states {
        if def.kind == StateKind::Terminal {
            continue;
        }
        let agent = def.agent.as_deref().unwrap_or("—");
        if def.phases.is_empty() {
            out.push(row(&[cell(name), cell(agent), "—".into(), "—".into()]));
        }
        for choice in &def.phases {
            out.push(row(&[
                cell(name),
                cell(agent),
                cell(&choice.phase),
                guard_cell(choice.when.as_deref()),
            ]));
        }
    }
    out
}

fn target_cell(rule: &FlatRule) -> String {
    let t = match rule.target() {
        Target::Error => return "runtime error".to_string(),
        Target::Stay => "stay".to_string(),
        Target::To(s) => cell(&s),
        Target::Computed(e) => format!("{} (computed)", code(&e)),
    };
    if rule.step.preserve_state {
        format!("{t} (state preserved)")
    } else {
        t
    }
}

/// Directive actions and launched workers of a rule, literal where known.
fn effects_cell(m: &RawMachine, rule: &FlatRule) -> String {
    let mut parts = Vec::new();
    let actions: Vec<String> = rule
        .directive_items(m.policy.as_ref())
        .iter()
        .map(|d| match d {
            DirectiveItem::Map(map) => map
                .get("action")
                .and_then(literal)
                .map_or_else(|| "(computed)".to_string(), cell),
            DirectiveItem::Computed(e) => format!("(computed: {})", code(e)),
            DirectiveItem::Invalid => "(invalid)".to_string(),
        })
        .collect();
    if !actions.is_empty() {
        parts.push(actions.join(", "));
    }
    let launches: Vec<String> = rule
        .launch_items()
        .iter()
        .map(|l| match l {
            DirectiveItem::Map(map) => map
                .get("worker_ref")
                .and_then(literal)
                .map_or_else(|| "(computed)".to_string(), cell),
            DirectiveItem::Computed(e) => format!("(computed: {})", code(e)),
            DirectiveItem::Invalid => "(invalid)".to_string(),
        })
        .collect();
    if !launches.is_empty() {
        parts.push(format!("launches {}", launches.join(", ")));
    }
    let writes: Vec<String> = rule
        .write_items()
        .iter()
        .map(|w| match w {
            DirectiveItem::Map(map) => match map.get("path") {
                Some(serde_yaml::Value::String(p)) => code(p),
                _ => "(computed)".to_string(),
            },
            DirectiveItem::Computed(e) => format!("(computed: {})", code(e)),
            DirectiveItem::Invalid => "(invalid)".to_string(),
        })
        .collect();
    if !writes.is_empty() {
        parts.push(format!("writes {}", writes.join(", ")));
    }
    if parts.is_empty() {
        "—".to_string()
    } else {
        parts.join("; ")
    }
}

/// Rows for a phase's rules; consecutive error rules spliced from fragments share one row.
fn phase_rows(m: &RawMachine, from: &str, label: &str, items: &[FlatItem]) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending: Vec<(&str, &str)> = Vec::new();
    let flush = |pending: &mut Vec<(&str, &str)>, out: &mut Vec<String>| {
        if pending.is_empty() {
            return;
        }
        let names: Vec<&str> = pending.iter().map(|(n, _)| *n).collect();
        let mut frags: Vec<&str> = pending.iter().map(|(_, f)| *f).collect();
        frags.dedup();
        out.push(row(&[
            cell(from),
            code(label),
            cell(&names.join(", ")),
            format!(
                "(fragment {})",
                frags
                    .iter()
                    .map(|f| format!("`{f}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "runtime error".to_string(),
            "—".to_string(),
        ]));
        pending.clear();
    };
    for item in items {
        let FlatItem::Rule(rule) = item else {
            continue;
        };
        if let (Some(f), Target::Error) = (&rule.fragment, rule.target()) {
            pending.push((&rule.name, f));
            continue;
        }
        flush(&mut pending, &mut out);
        out.push(row(&[
            cell(from),
            code(label),
            cell(&rule.name),
            guard_cell(rule.guard()),
            target_cell(rule),
            effects_cell(m, rule),
        ]));
    }
    flush(&mut pending, &mut out);
    out
}

fn transitions(m: &RawMachine) -> Vec<String> {
    let mut out = header(&[
        "from",
        "phase",
        "rule",
        "when",
        "to",
        "directives / launches",
    ]);
    let gate = m
        .gate()
        .map(|(a, p)| (a.table.agent.clone(), p.name.clone()));
    for (state, agent, phase) in m.dispatch() {
        if m.is_terminal(state) {
            continue;
        }
        out.extend(phase_rows(
            m,
            state,
            &agent.label(&phase.name),
            &phase.items,
        ));
    }
    let reached: Vec<(String, String)> = m
        .dispatch()
        .iter()
        .map(|(_, a, p)| (a.table.agent.clone(), p.name.clone()))
        .collect();
    for agent in m.agents_in_order() {
        for phase in &agent.phases {
            let key = (agent.table.agent.clone(), phase.name.clone());
            if reached.contains(&key) {
                continue;
            }
            let from = if Some(&key) == gate.as_ref() {
                "any running state"
            } else {
                "not dispatched"
            };
            out.extend(phase_rows(m, from, &agent.label(&phase.name), &phase.items));
        }
    }
    if let Some(p) = &m.policy {
        let actions: Vec<String> = p
            .orchestrator
            .protocol_violation_directives
            .iter()
            .map(|t| {
                p.directive_templates
                    .get(t)
                    .and_then(|d| d.get("action"))
                    .and_then(literal)
                    .unwrap_or(t)
                    .to_string()
            })
            .collect();
        out.push(row(&[
            "any non-terminal state".to_string(),
            "handoff validation".to_string(),
            "protocol violation".to_string(),
            "a handoff fails validation".to_string(),
            cell(&p.orchestrator.protocol_violation_state),
            cell(&or_dash(&actions)),
        ]));
    }
    out
}

fn ownership(m: &RawMachine) -> Vec<String> {
    let mut out = header(&["agent", "short_name", "may patch (`owns`)", "patches_state"]);
    for a in m.agents_in_order() {
        out.push(row(&[
            cell(&a.table.agent),
            cell(&a.table.short_name),
            cell(&or_dash(&a.table.owns)),
            a.table.patches_state.to_string(),
        ]));
    }
    out
}

fn directives(m: &RawMachine) -> Vec<String> {
    let mut out = header(&["action", "required fields", "executor", "details"]);
    let Some(p) = &m.policy else {
        return out;
    };
    for (action, d) in &p.directives {
        let required: Vec<String> = d.required.iter().map(|f| code(f)).collect();
        let mut details = Vec::new();
        if let Some(op) = &d.operation {
            details.push(format!("operation {}", code(op)));
        }
        match (&d.template, &d.output) {
            (Some(t), Some(o)) => details.push(format!("template {} → {}", code(t), code(o))),
            (Some(t), None) => details.push(format!("template {}", code(t))),
            (None, Some(o)) => details.push(format!("output {}", code(o))),
            (None, None) => {}
        }
        if let Some(f) = &d.path_field {
            details.push(format!("path field {}", code(f)));
        }
        if let Some(mk) = &d.markers {
            details.push(format!("markers {}", code(&format!("vars.{mk}"))));
        }
        out.push(row(&[
            code(action),
            or_dash(&required),
            cell(&d.executor),
            if details.is_empty() {
                "—".to_string()
            } else {
                details.join("; ")
            },
        ]));
    }
    out.push(String::new());
    let blocked: Vec<String> = p.blocked_directives.iter().map(|b| code(b)).collect();
    out.push(format!("Blocked outright: {}.", or_dash(&blocked)));
    out
}

/// The phases that close a round: a running state's phase that can both end the campaign
/// (a rule whose `next` is terminal) and start another round (a rule whose `next` is a
/// non-terminal state declared before the phase's own state in `states.yaml`).
fn stop_conditions(m: &RawMachine) -> Vec<String> {
    let mut out = header(&["order", "phase", "rule", "when", "next", "output"]);
    let order: Vec<&String> = m.states.states.keys().collect();
    let pos = |s: &str| order.iter().position(|o| o.as_str() == s);
    for (state, agent, phase) in m.dispatch() {
        let running = m
            .states
            .states
            .get(state)
            .is_some_and(|d| d.kind == StateKind::Running);
        let targets: Vec<String> = phase
            .rules()
            .filter_map(|r| match r.target() {
                Target::To(t) => Some(t),
                _ => None,
            })
            .collect();
        let ends = targets.iter().any(|t| m.is_terminal(t));
        let loops = targets
            .iter()
            .any(|t| !m.is_terminal(t) && pos(t).zip(pos(state)).is_some_and(|(a, b)| a < b));
        if !(running && ends && loops) {
            continue;
        }
        let rules = phase.rules().filter(|r| r.target() != Target::Error);
        for (i, rule) in rules.enumerate() {
            let outputs: Vec<String> = rule
                .step
                .output
                .iter()
                .filter_map(|(k, v)| match v {
                    serde_yaml::Value::Null => Some(format!("{k}: null")),
                    serde_yaml::Value::Bool(b) => Some(format!("{k}: {b}")),
                    serde_yaml::Value::Number(n) => Some(format!("{k}: {n}")),
                    other => literal(other).map(|s| format!("{k}: {s}")),
                })
                .collect();
            out.push(row(&[
                (i + 1).to_string(),
                code(&agent.label(&phase.name)),
                cell(&rule.name),
                guard_cell(rule.guard()),
                target_cell(rule),
                cell(&or_dash(&outputs)),
            ]));
        }
    }
    out
}

/// One region found in a document.
#[derive(Debug, Clone)]
pub struct Region {
    /// Region name.
    pub name: String,
    /// Byte range of the body (between the begin marker's line end and the end marker).
    pub body: std::ops::Range<usize>,
}

/// The generated regions of a markdown text, in order.
pub fn find_regions(text: &str) -> Result<Vec<Region>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    while let Some(open) = text[at..].find(MARK_OPEN) {
        let start = at + open + MARK_OPEN.len();
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let marker = &text[start..line_end];
        let line = text[..start].matches('\n').count() + 1;
        let Some(name) = marker.trim_end().strip_suffix(MARK_BEGIN) else {
            if marker.trim_end().ends_with(MARK_END) {
                return Err(format!("line {line}: end marker without a begin marker"));
            }
            return Err(format!("line {line}: malformed generated-region marker"));
        };
        let end_marker = format!("{MARK_OPEN}{name}{MARK_END}");
        let body_start = (line_end + 1).min(text.len());
        let Some(end) = text[body_start..].find(&end_marker) else {
            return Err(format!(
                "line {line}: region `{name}` has no `{end_marker}`"
            ));
        };
        out.push(Region {
            name: name.to_string(),
            body: body_start..body_start + end,
        });
        at = body_start + end + end_marker.len();
    }
    Ok(out)
}

/// `text` with every known region regenerated, and the names of the regions that changed.
pub fn regenerate(m: &RawMachine, text: &str) -> Result<(String, Vec<String>), String> {
    let regions = find_regions(text)?;
    let mut out = String::with_capacity(text.len());
    let mut drifted = Vec::new();
    let mut last = 0;
    for r in regions {
        let Some(body) = region(m, &r.name) else {
            return Err(format!(
                "unknown generated region `{}` (known: {})",
                r.name,
                REGIONS.join(", ")
            ));
        };
        let body = format!("{body}\n");
        out.push_str(&text[last..r.body.start]);
        out.push_str(&body);
        if text[r.body.clone()] != body {
            drifted.push(r.name.clone());
        }
        last = r.body.end;
    }
    out.push_str(&text[last..]);
    Ok((out, drifted))
}

/// What `docs` found in one file.
#[derive(Debug, Clone)]
pub struct DocReport {
    /// The markdown file.
    pub path: PathBuf,
    /// Regions whose text differs from the machine.
    pub drifted: Vec<String>,
    /// Regions in the file.
    pub regions: usize,
}

/// The markdown files under `ROOT/references/`, sorted.
pub fn reference_files(root: &Path) -> Result<Vec<PathBuf>, String> {
    let dir = root.join("references");
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "md"))
        .collect();
    files.sort();
    Ok(files)
}

/// Regenerates (or, with `check`, only compares) every region under `ROOT/references/`.
pub fn run(m: &RawMachine, root: &Path, check: bool) -> Result<Vec<DocReport>, String> {
    let mut reports = Vec::new();
    for path in reference_files(root)? {
        let text = crate::workspace::fsio::read_text_capped(&path)
            .map_err(|e| format!("{}: unreadable: {e:?}", path.display()))?;
        let (new, drifted) =
            regenerate(m, &text).map_err(|e| format!("{}: {e}", path.display()))?;
        let regions = find_regions(&text).map(|r| r.len()).unwrap_or_default();
        if !check && new != text {
            crate::workspace::fsio::write_atomic(&path, new.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
        }
        reports.push(DocReport {
            path,
            drifted,
            regions,
        });
    }
    Ok(reports)
}
