//! The scenario file format (`tests/scenarios/**/*.yaml`): serde types,
//! parsed strictly (unknown keys are errors, so a typo in an expectation
//! can never make a scenario pass vacuously), with fixture paths resolved
//! and command lines checked at load time, so that a broken scenario is
//! reported with its file and reason before anything runs.

use super::matcher;
use crate::cli::agent::AgentArgs;
use crate::cli::step::DriveArgs;
use clap::Parser;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::{Component, Path, PathBuf};

/// Campaign written when a scenario names none (relative to the root).
pub const DEFAULT_CAMPAIGN: &str = "examples/ml_metaopt_campaign.example.yaml";
/// Keyword that removes a default (`campaign: absent`, `state: absent`, ...).
pub const ABSENT: &str = "absent";
/// Patch value that deletes the key it is written at.
pub const DELETE: &str = "$delete";
/// String replaced by the campaign's identity hash in given state, files and handoffs.
pub const IDENTITY: &str = "$identity";
/// Handoff file of an `agent` scenario, relative to the project.
pub const AGENT_OUTPUT: &str = ".ml-metaopt/handoffs/out.json";
/// Step limit of `run_until` when none is given.
pub const DEFAULT_MAX_STEPS: usize = 200;

/// One scenario file as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScenarioFile {
    /// `name:` one line.
    pub name: String,
    /// `description:` what the scenario proves and which contract rule it encodes.
    #[serde(default)]
    pub description: String,
    /// `given:` the project before the run.
    #[serde(default)]
    pub given: Given,
    /// `when:` what runs.
    pub when: When,
    /// `expect:` what must hold afterwards.
    #[serde(default)]
    pub expect: Expect,
    /// `pending:` why the machine does not meet this (contract) scenario yet; it is
    /// expected to fail, and passing is reported so the marker gets removed.
    pub pending: Option<String>,
}

/// `given:` the project directory before the run.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Given {
    /// `campaign:` inline mapping, raw text (a string), or `absent`.
    pub campaign: Option<Value>,
    /// `campaign_file:` path relative to the root (default: the example campaign).
    pub campaign_file: Option<String>,
    /// `campaign_patch:` mapping deep-merged over the campaign.
    pub campaign_patch: Option<Value>,
    /// `state:` inline mapping, a fixture path, or `absent` (default).
    pub state: Option<Value>,
    /// `state_patch:` mapping deep-merged over the state.
    pub state_patch: Option<Value>,
    /// `preflight:` `ready` (default) | `failed` | `stale` | `missing` | inline artifact.
    pub preflight: Option<Value>,
    /// `load_handoff:` `auto` (default) | `absent` | inline handoff.
    pub load_handoff: Option<Value>,
    /// `files:` relative path → text, or a mapping/list written as JSON.
    #[serde(default)]
    pub files: Map<String, Value>,
}

/// `when:` exactly one of `agent`, `step`, `run_until`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct When {
    /// `agent: {name, mode?, secondary?, apply_state?, args?}` — one `metaopt agent` phase.
    pub agent: Option<AgentWhen>,
    /// `step: {executor?, simulate_workers?, seed?, args?}` — one `metaopt step --json`.
    pub step: Option<StepWhen>,
    /// `run_until: {state, max_steps?, executor?, simulate_workers?, seed?}` — steps until a state.
    pub run_until: Option<RunUntil>,
}

/// `when.agent`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentWhen {
    /// Control agent name.
    pub name: String,
    /// `--mode`.
    pub mode: Option<String>,
    /// `--secondary`.
    #[serde(default)]
    pub secondary: bool,
    /// `--apply-state`.
    #[serde(default)]
    pub apply_state: bool,
    /// Extra `metaopt agent` flags, e.g. `[--skills-manifest, skills.json]`.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `when.step`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepWhen {
    /// `--executor host|local|sim`.
    pub executor: Option<String>,
    /// `--simulate-workers`.
    #[serde(default)]
    pub simulate_workers: bool,
    /// `--seed`.
    pub seed: Option<u64>,
    /// Extra `metaopt step` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `when.run_until`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunUntil {
    /// Machine state to reach.
    pub state: String,
    /// Step limit (default 200).
    pub max_steps: Option<usize>,
    /// `--executor host|local|sim`.
    pub executor: Option<String>,
    /// `--simulate-workers`.
    #[serde(default)]
    pub simulate_workers: bool,
    /// `--seed`.
    pub seed: Option<u64>,
    /// Extra `metaopt step` flags.
    #[serde(default)]
    pub args: Vec<String>,
}

/// `expect:` assertions; every one given must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// `exit_code:` of the command (default 0).
    pub exit_code: Option<i32>,
    /// `error:` matcher against the command's error message (non-zero exit).
    pub error: Option<Value>,
    /// `handoff:` matcher against the handoff written (agent: `--output`; step: the turn's).
    pub handoff: Option<Value>,
    /// `state:` matcher against `.ml-metaopt/state.json` afterwards, or `absent`.
    pub state: Option<Value>,
    /// `state_unchanged: true` — the state file is byte-for-byte what it was.
    pub state_unchanged: Option<bool>,
    /// `turn:` matcher against the `--json` turn (step, run_until: the last).
    pub turn: Option<Value>,
    /// `visited:` matcher against the machine state after each step.
    pub visited: Option<Value>,
    /// `files:` relative path → `present` | `absent` | `{contains, not_contains, regex, equals, json}`.
    #[serde(default)]
    pub files: Map<String, Value>,
}

/// What runs, as validated command lines.
#[derive(Debug, Clone)]
pub enum Action {
    /// One `metaopt agent` phase.
    Agent(Box<AgentArgs>),
    /// One `metaopt step`.
    Step(Box<DriveArgs>),
    /// Steps until `state` or `max_steps`.
    RunUntil {
        /// Flags of each step.
        drive: Box<DriveArgs>,
        /// Target machine state.
        state: String,
        /// Step limit.
        max_steps: usize,
    },
}

/// A scenario ready to run: the file, with fixtures read and commands parsed.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Where it came from.
    pub path: PathBuf,
    /// The file as written.
    pub file: ScenarioFile,
    /// Campaign text to write (`None`: no campaign file).
    pub campaign_text: Option<String>,
    /// State to write: raw text of a fixture, or a JSON value.
    pub state: Option<StateGiven>,
    /// The action.
    pub action: Action,
}

/// The given state.
#[derive(Debug, Clone)]
pub enum StateGiven {
    /// Fixture text written verbatim.
    Text(String),
    /// A value written as pretty JSON (after `$identity` substitution).
    Json(Value),
}

#[derive(Parser)]
#[command(name = "agent", no_binary_name = false)]
struct AgentCli {
    #[command(flatten)]
    args: AgentArgs,
}

#[derive(Parser)]
#[command(name = "step")]
struct StepCli {
    #[command(flatten)]
    args: DriveArgs,
}

/// Deep-merges `patch` over `base`: objects key by key, `$delete` removes, anything else replaces.
pub fn deep_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.as_str() == Some(DELETE) {
                    b.remove(k);
                } else if let Some(slot) = b.get_mut(k) {
                    deep_merge(slot, v);
                } else {
                    let mut fresh = Value::Null;
                    deep_merge(&mut fresh, v);
                    b.insert(k.clone(), fresh);
                }
            }
        }
        (b, p) => {
            *b = strip_deletes(p);
        }
    }
}

fn strip_deletes(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(_, v)| v.as_str() != Some(DELETE))
                .map(|(k, v)| (k.clone(), strip_deletes(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A relative path that stays inside the project (no absolute path, no `..`).
pub fn check_relative(path: &str) -> Result<(), String> {
    let p = Path::new(path);
    if path.is_empty() || p.is_absolute() {
        return Err(format!("`{path}` must be a relative path"));
    }
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("`{path}` must not contain `..`"));
    }
    Ok(())
}

fn read_fixture(root: &Path, rel: &str, what: &str) -> Result<String, String> {
    let path = root.join(rel);
    std::fs::read_to_string(&path).map_err(|e| format!("{what} `{rel}` ({}): {e}", path.display()))
}

fn tool_args(
    executor: &Option<String>,
    simulate: bool,
    seed: Option<u64>,
    extra: &[String],
) -> Vec<String> {
    let mut argv = vec!["step".to_string(), "--json".to_string()];
    if let Some(e) = executor {
        argv.push("--executor".into());
        argv.push(e.clone());
    }
    if simulate {
        argv.push("--simulate-workers".into());
    }
    if let Some(s) = seed {
        argv.push("--seed".into());
        argv.push(s.to_string());
    }
    argv.extend(extra.iter().cloned());
    argv
}

fn parse_step(argv: Vec<String>) -> Result<DriveArgs, String> {
    StepCli::try_parse_from(&argv).map(|c| c.args).map_err(|e| {
        format!(
            "when: `metaopt {}`: {}",
            argv.join(" "),
            first_line(&e.to_string())
        )
    })
}

fn first_line(s: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_string()
}

impl When {
    fn action(&self) -> Result<Action, String> {
        let count = [
            self.agent.is_some(),
            self.step.is_some(),
            self.run_until.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if count != 1 {
            return Err("when: needs exactly one of `agent`, `step`, `run_until`".into());
        }
        if let Some(a) = &self.agent {
            let mut argv = vec!["agent".to_string(), a.name.clone()];
            if let Some(m) = &a.mode {
                argv.push("--mode".into());
                argv.push(m.clone());
            }
            if a.secondary {
                argv.push("--secondary".into());
            }
            if a.apply_state {
                argv.push("--apply-state".into());
            }
            argv.push("--output".into());
            argv.push(AGENT_OUTPUT.into());
            argv.extend(a.args.iter().cloned());
            let args = AgentCli::try_parse_from(&argv)
                .map(|c| c.args)
                .map_err(|e| {
                    format!(
                        "when.agent: `metaopt {}`: {}",
                        argv.join(" "),
                        first_line(&e.to_string())
                    )
                })?;
            return Ok(Action::Agent(Box::new(args)));
        }
        if let Some(s) = &self.step {
            let argv = tool_args(&s.executor, s.simulate_workers, s.seed, &s.args);
            return Ok(Action::Step(Box::new(parse_step(argv)?)));
        }
        let r = self.run_until.as_ref().ok_or("when: nothing to run")?;
        let argv = tool_args(&r.executor, r.simulate_workers, r.seed, &r.args);
        Ok(Action::RunUntil {
            drive: Box::new(parse_step(argv)?),
            state: r.state.clone(),
            max_steps: r.max_steps.unwrap_or(DEFAULT_MAX_STEPS),
        })
    }
}

impl Scenario {
    /// Reads, parses and checks the scenario at `path`; fixture paths resolve against `root`.
    pub fn load(path: &Path, root: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
        let file: ScenarioFile = serde_yaml::from_str(&text).map_err(|e| {
            let at = e
                .location()
                .map(|l| format!("line {}, column {}: ", l.line(), l.column()))
                .unwrap_or_default();
            format!("{at}{e}")
        })?;
        if file.name.trim().is_empty() {
            return Err("name: must not be empty".into());
        }
        let g = &file.given;
        let campaign_text = match (&g.campaign, &g.campaign_file) {
            (Some(_), Some(_)) => {
                return Err("given: `campaign` and `campaign_file` exclude each other".into());
            }
            (Some(Value::String(s)), None) if s == ABSENT => None,
            (Some(Value::String(s)), None) => Some(s.clone()),
            (Some(v @ Value::Object(_)), None) => Some(yaml_text(v)?),
            (Some(other), None) => {
                return Err(format!(
                    "given.campaign: expected a mapping, raw text or `absent`, got {other}"
                ));
            }
            (None, file) => Some(read_fixture(
                root,
                file.as_deref().unwrap_or(DEFAULT_CAMPAIGN),
                "given.campaign_file",
            )?),
        };
        let campaign_text = match (&g.campaign_patch, campaign_text) {
            (None, t) => t,
            (Some(_), None) => return Err("given.campaign_patch: there is no campaign".into()),
            (Some(patch), Some(t)) => {
                if !patch.is_object() {
                    return Err("given.campaign_patch: expected a mapping".into());
                }
                let mut base: Value = serde_yaml::from_str(&t)
                    .map_err(|e| format!("given.campaign_patch: campaign is not YAML: {e}"))?;
                deep_merge(&mut base, patch);
                Some(yaml_text(&base)?)
            }
        };
        let state = match &g.state {
            None => None,
            Some(Value::String(s)) if s == ABSENT => None,
            Some(Value::String(rel)) => {
                Some(StateGiven::Text(read_fixture(root, rel, "given.state")?))
            }
            Some(v @ Value::Object(_)) => Some(StateGiven::Json(v.clone())),
            Some(other) => {
                return Err(format!(
                    "given.state: expected a mapping, a fixture path or `absent`, got {other}"
                ));
            }
        };
        let state = match (&g.state_patch, state) {
            (None, s) => s,
            (Some(_), None) => return Err("given.state_patch: there is no state".into()),
            (Some(patch), Some(s)) => {
                if !patch.is_object() {
                    return Err("given.state_patch: expected a mapping".into());
                }
                let mut base = match s {
                    StateGiven::Json(v) => v,
                    StateGiven::Text(t) => serde_json::from_str(&t).map_err(|e| {
                        format!("given.state_patch: state fixture is not JSON: {e}")
                    })?,
                };
                deep_merge(&mut base, patch);
                Some(StateGiven::Json(base))
            }
        };
        match &g.preflight {
            None => {}
            Some(Value::String(s))
                if ["ready", "failed", "stale", "missing"].contains(&s.as_str()) => {}
            Some(Value::Object(_)) => {}
            Some(other) => {
                return Err(format!(
                    "given.preflight: expected ready|failed|stale|missing or an inline artifact, got {other}"
                ));
            }
        }
        match &g.load_handoff {
            None | Some(Value::Object(_)) => {}
            Some(Value::String(s)) if s == "auto" || s == ABSENT => {}
            Some(other) => {
                return Err(format!(
                    "given.load_handoff: expected auto, absent or an inline handoff, got {other}"
                ));
            }
        }
        for key in g.files.keys() {
            check_relative(key).map_err(|e| format!("given.files: {e}"))?;
        }
        let action = file.when.action()?;
        let e = &file.expect;
        for key in e.files.keys() {
            check_relative(key).map_err(|e| format!("expect.files: {e}"))?;
            matcher::check_file_expectation(&e.files[key])
                .map_err(|m| format!("expect.files[\"{key}\"]: {m}"))?;
        }
        for (what, m) in [
            ("handoff", &e.handoff),
            ("turn", &e.turn),
            ("error", &e.error),
            ("visited", &e.visited),
        ] {
            if let Some(m) = m {
                matcher::validate(m).map_err(|err| format!("expect.{what}: {err}"))?;
            }
        }
        if let Some(s) = &e.state
            && s.as_str() != Some(ABSENT)
        {
            matcher::validate(s).map_err(|err| format!("expect.state: {err}"))?;
        }
        if matches!(action, Action::Agent(_)) && (e.turn.is_some() || e.visited.is_some()) {
            return Err(
                "expect.turn / expect.visited need `when: step` or `when: run_until`".into(),
            );
        }
        Ok(Scenario {
            path: path.to_path_buf(),
            file,
            campaign_text,
            state,
            action,
        })
    }
}

fn yaml_text(v: &Value) -> Result<String, String> {
    serde_yaml::to_string(v).map_err(|e| format!("cannot write YAML: {e}"))
}

/// Replaces every string equal to `$identity` in `v` with `identity`.
pub fn substitute(v: &mut Value, identity: Option<&str>) -> Result<(), String> {
    match v {
        Value::String(s) if s == IDENTITY => {
            *s = identity
                .ok_or("`$identity` used but the campaign is invalid (no identity hash)")?
                .to_string();
        }
        Value::Array(items) => {
            for i in items {
                substitute(i, identity)?;
            }
        }
        Value::Object(m) => {
            for (_, i) in m.iter_mut() {
                substitute(i, identity)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Every scenario file under `paths` (files as given, directories walked), sorted.
pub fn discover(paths: &[PathBuf]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            walk(p, &mut out)?;
        } else if p.is_file() {
            out.push(p.clone());
        } else {
            return Err(format!(
                "{}: no such scenario file or directory",
                p.display()
            ));
        }
    }
    out.sort();
    out.dedup();
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}
