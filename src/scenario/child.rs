//! The worker side of `metaopt test`: a child process of the same binary
//! that runs a batch of scenarios one after another. It exists because a
//! scenario needs its own working directory (`step` runs in the project
//! root) and a pinned clock (`METAOPT_NOW`), and both are process-wide:
//! the parent sets them up per child instead of mutating its own process.
//! For each scenario it builds the project directory with the setup machine,
//! runs the `when` with the machine under test exactly as `metaopt agent` /
//! `metaopt step --json` would, collects the guard trace of that run only,
//! and checks the expectations. Results go to a JSON-lines file.

use super::matcher::{self, show};
use super::model::{ABSENT, AGENT_OUTPUT, Action, Expect, Scenario, StateGiven, substitute};
use crate::cli::agent::{AgentArgs, execute};
use crate::engine::handoff::to_pretty;
use crate::engine::trace::{self, TraceLine};
use crate::exec::preflight::{artifact, campaign_identity};
use crate::exec::step::{layout, step};
use crate::machine::Machine;
use crate::workspace::fsio::{read_text_capped, write_atomic};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Hash a `stale` preflight artifact is bound to (no campaign has it).
pub const STALE_IDENTITY: &str =
    "sha256:0000000000000000000000000000000000000000000000000000000000000000";

/// A batch of scenarios for one child.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    /// Root fixture paths resolve against.
    pub root: PathBuf,
    /// Scenarios and the project directory each runs in.
    pub items: Vec<JobItem>,
    /// Stop at the first failing scenario (mutation runs).
    pub fail_fast: bool,
    /// Remove each project directory after its scenario.
    pub cleanup: bool,
    /// Where to write the results (JSON lines).
    pub out: PathBuf,
}

/// One scenario of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobItem {
    /// Index in the parent's list.
    pub index: usize,
    /// Scenario file.
    pub file: PathBuf,
    /// Project directory to create and run in.
    pub dir: PathBuf,
}

/// What a child reports for one scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioResult {
    /// Index in the parent's list.
    pub index: usize,
    /// Every mismatch (empty: passed).
    pub failures: Vec<String>,
    /// Guards evaluated and rules decided by the `when` (not the setup).
    pub trace: Vec<TraceLine>,
}

/// What the `when` produced.
#[derive(Debug, Default)]
struct Observation {
    exit_code: i32,
    error: Option<String>,
    handoff: Option<Value>,
    turn: Option<Value>,
    visited: Vec<Value>,
}

/// Runs the job file at `job_path` (the hidden `metaopt test --worker` mode).
pub fn run_job(machine_dir: Option<&Path>, setup_dir: Option<&Path>, job_path: &Path) -> i32 {
    let job: Job = match std::fs::read_to_string(job_path)
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
    {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: {}: {e}", job_path.display());
            return crate::cli::EXIT_USAGE;
        }
    };
    let machine = match super::load_machine(machine_dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let setup_machine = match setup_dir {
        Some(d) => match super::load_machine(Some(d)) {
            Ok(m) => Some(m),
            Err(code) => return code,
        },
        None => None,
    };
    let setup = setup_machine.as_ref().unwrap_or(&machine);
    let mut out = match std::fs::File::create(&job.out) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("error: {}: {e}", job.out.display());
            return crate::cli::EXIT_USAGE;
        }
    };
    let trace_path = std::env::var_os(trace::ENV).map(PathBuf::from);
    for item in &job.items {
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_one(&machine, setup, &job.root, item, trace_path.as_deref())
        }));
        let result = result.unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            ScenarioResult {
                index: item.index,
                failures: vec![format!("the engine panicked: {msg}")],
                trace: vec![],
            }
        });
        let _ = std::env::set_current_dir(&job.root);
        if job.cleanup {
            let _ = std::fs::remove_dir_all(&item.dir);
        }
        let failed = !result.failures.is_empty();
        let line = serde_json::to_string(&result).unwrap_or_default();
        if writeln!(out, "{line}").and_then(|_| out.flush()).is_err() {
            eprintln!("error: {}: cannot write results", job.out.display());
            return 1;
        }
        if failed && job.fail_fast {
            break;
        }
    }
    0
}

fn run_one(
    machine: &Machine,
    setup_machine: &Machine,
    root: &Path,
    item: &JobItem,
    trace_path: Option<&Path>,
) -> ScenarioResult {
    let mut result = ScenarioResult {
        index: item.index,
        failures: vec![],
        trace: vec![],
    };
    let scenario = match Scenario::load(&item.file, root) {
        Ok(s) => s,
        Err(e) => {
            result.failures.push(format!("scenario does not load: {e}"));
            return result;
        }
    };
    let _ = std::fs::remove_dir_all(&item.dir);
    if let Err(e) = std::fs::create_dir_all(&item.dir)
        .map_err(|e| e.to_string())
        .and_then(|_| std::env::set_current_dir(&item.dir).map_err(|e| e.to_string()))
    {
        result
            .failures
            .push(format!("setup: {}: {e}", item.dir.display()));
        return result;
    }
    let identity = match build_project(setup_machine, &scenario) {
        Ok(id) => id,
        Err(e) => {
            result.failures.push(format!("setup: {e}"));
            return result;
        }
    };
    if let Some(t) = trace_path {
        let _ = std::fs::remove_file(t);
    }
    let state_path = layout(machine, "state").to_string();
    let state_before = std::fs::read(&state_path).ok();
    // The action runs as its own process would: no document kept by an earlier scenario
    // or the setup.
    crate::engine::doc_cache::reset();
    let obs = act(machine, &scenario.action);
    if let Some(t) = trace_path {
        result.trace = std::fs::read_to_string(t)
            .map(|text| trace::parse(&text))
            .unwrap_or_default();
        let _ = std::fs::remove_file(t);
    }
    let mut expect = scenario.file.expect.clone();
    if let Err(e) = substitute_expect(&mut expect, identity.as_deref()) {
        result.failures.push(format!("expect: {e}"));
        return result;
    }
    result.failures = verify(&expect, &obs, &state_path, state_before.as_deref());
    result
}

fn write_text(path: &str, text: &str) -> Result<(), String> {
    write_atomic(Path::new(path), text.as_bytes()).map_err(|e| format!("{path}: {e}"))
}

/// Writes the campaign, state, preflight artifact, files and load handoff the scenario gives.
fn build_project(machine: &Machine, s: &Scenario) -> Result<Option<String>, String> {
    let g = &s.file.given;
    if let Some(text) = &s.campaign_text {
        write_text(layout(machine, "campaign"), text)?;
    }
    // The identity as LOAD_CAMPAIGN computes it (None: campaign invalid or absent).
    let identity = campaign_identity(machine);
    let id = identity.as_deref();
    match &s.state {
        None => {}
        Some(StateGiven::Text(t)) if !t.contains(super::model::IDENTITY) => {
            write_text(layout(machine, "state"), t)?;
        }
        Some(StateGiven::Text(t)) => {
            let mut v: Value = serde_json::from_str(t)
                .map_err(|e| format!("given.state uses $identity but is not JSON: {e}"))?;
            substitute(&mut v, id).map_err(|e| format!("given.state: {e}"))?;
            write_text(layout(machine, "state"), &to_pretty(&v))?;
        }
        Some(StateGiven::Json(v)) => {
            let mut v = v.clone();
            substitute(&mut v, id).map_err(|e| format!("given.state: {e}"))?;
            write_text(layout(machine, "state"), &to_pretty(&v))?;
        }
    }
    let preflight_path = layout(machine, "preflight");
    let check = |ok: bool| {
        vec![(
            "scenario".to_string(),
            ok,
            if ok {
                "scenario fixture: environment ready".to_string()
            } else {
                "scenario fixture: a preflight check failed".to_string()
            },
            if ok {
                String::new()
            } else {
                "fix the scenario environment".to_string()
            },
        )]
    };
    match &g.preflight {
        None => {
            if let Some(id) = id {
                write_text(
                    preflight_path,
                    &to_pretty(&artifact(id, &check(true), 0, 0.0)),
                )?;
            }
        }
        Some(Value::String(kind)) => match kind.as_str() {
            "ready" | "failed" => {
                let id = id.ok_or(format!(
                    "given.preflight: {kind}: the campaign is invalid or absent, so there is no identity to bind"
                ))?;
                let a = artifact(id, &check(kind == "ready"), 0, 0.0);
                write_text(preflight_path, &to_pretty(&a))?;
            }
            "stale" => {
                let a = artifact(STALE_IDENTITY, &check(true), 0, 0.0);
                write_text(preflight_path, &to_pretty(&a))?;
            }
            _ => {}
        },
        Some(v) => {
            let mut v = v.clone();
            substitute(&mut v, id).map_err(|e| format!("given.preflight: {e}"))?;
            write_text(preflight_path, &to_pretty(&v))?;
        }
    }
    for (rel, content) in &g.files {
        let text = match content {
            Value::String(t) => t.clone(),
            other => {
                let mut v = other.clone();
                substitute(&mut v, id).map_err(|e| format!("given.files[{rel}]: {e}"))?;
                to_pretty(&v)
            }
        };
        write_text(rel, &text)?;
    }
    let load_path = layout(machine, "load_handoff");
    match &g.load_handoff {
        Some(Value::String(s)) if s == ABSENT => {}
        Some(v @ Value::Object(_)) => {
            let mut v = v.clone();
            substitute(&mut v, id).map_err(|e| format!("given.load_handoff: {e}"))?;
            write_text(load_path, &to_pretty(&v))?;
        }
        _ => {
            let agent = machine
                .states
                .states
                .get(&machine.states.initial)
                .and_then(|d| d.agent.clone())
                .ok_or("the initial state has no governing agent")?;
            let args = AgentArgs {
                agent,
                output: Some(PathBuf::from(load_path)),
                ..default_agent_args()
            };
            execute(machine, &args).map_err(|e| format!("load_handoff: auto: {e}"))?;
        }
    }
    Ok(identity)
}

/// `metaopt agent` defaults (what clap fills in when no flag is given).
fn default_agent_args() -> AgentArgs {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: AgentArgs,
    }
    Cli::try_parse_from(["agent", "x"])
        .map(|c| c.args)
        .unwrap_or_default()
}

fn act(machine: &Machine, action: &Action) -> Observation {
    let mut obs = Observation::default();
    match action {
        Action::Agent(args) => match execute(machine, args) {
            Ok((outcome, _)) => obs.handoff = Some(outcome.handoff_value().into_owned()),
            Err(e) => {
                // As `metaopt agent` does: usage-class exit code.
                obs.exit_code = crate::cli::EXIT_USAGE;
                obs.error = Some(e);
                obs.handoff = read_json(AGENT_OUTPUT);
            }
        },
        Action::Step(drive) => match step(machine, &drive.options()) {
            Ok(turn) => record_turn(&mut obs, &turn),
            Err(e) => {
                obs.exit_code = 1;
                obs.error = Some(e);
            }
        },
        Action::RunUntil {
            drive,
            state,
            max_steps,
        } => {
            let opts = drive.options();
            let mut reached = false;
            for _ in 0..*max_steps {
                match step(machine, &opts) {
                    Ok(turn) => {
                        record_turn(&mut obs, &turn);
                        if &turn.machine_state == state {
                            reached = true;
                            break;
                        }
                        if turn.done {
                            break;
                        }
                    }
                    Err(e) => {
                        obs.exit_code = 1;
                        obs.error = Some(e);
                        return obs;
                    }
                }
            }
            if !reached {
                let at = obs
                    .turn
                    .as_ref()
                    .and_then(|t| t["machine_state"].as_str())
                    .unwrap_or("?")
                    .to_string();
                obs.exit_code = 1;
                obs.error = Some(format!(
                    "run_until: did not reach {state} within {max_steps} step(s); stopped at {at}"
                ));
            }
        }
    }
    obs
}

fn record_turn(obs: &mut Observation, turn: &crate::exec::step::Turn) {
    obs.visited.push(json!(turn.machine_state));
    obs.handoff = turn.handoff_path.as_deref().and_then(read_json);
    obs.turn = serde_json::to_value(turn).ok();
}

fn read_json(path: &str) -> Option<Value> {
    read_text_capped(Path::new(path))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// `$identity` in expectations, as in given data.
fn substitute_expect(e: &mut Expect, identity: Option<&str>) -> Result<(), String> {
    for v in [
        &mut e.handoff,
        &mut e.state,
        &mut e.turn,
        &mut e.error,
        &mut e.visited,
    ]
    .into_iter()
    .flatten()
    {
        substitute(v, identity)?;
    }
    for v in e.files.values_mut() {
        substitute(v, identity)?;
    }
    Ok(())
}

fn verify(e: &Expect, obs: &Observation, state_path: &str, before: Option<&[u8]>) -> Vec<String> {
    let mut out = Vec::new();
    let want_code = e.exit_code.unwrap_or(0);
    if obs.exit_code != want_code {
        out.push(format!(
            "exit_code: expected {want_code}, got {}{}",
            obs.exit_code,
            obs.error
                .as_deref()
                .map(|m| format!(" (error: {m})"))
                .unwrap_or_default()
        ));
    }
    if let Some(m) = &e.error {
        let actual = obs.error.clone().map(Value::String);
        matcher::check("error", m, actual.as_ref(), &mut out);
    }
    if let Some(m) = &e.handoff {
        matcher::check("handoff", m, obs.handoff.as_ref(), &mut out);
    }
    if let Some(m) = &e.turn {
        matcher::check("turn", m, obs.turn.as_ref(), &mut out);
    }
    if let Some(m) = &e.visited {
        let v = Value::Array(obs.visited.clone());
        matcher::check("visited", m, Some(&v), &mut out);
    }
    let after = std::fs::read(state_path).ok();
    if let Some(m) = &e.state {
        match (m.as_str() == Some(ABSENT), &after) {
            (true, None) => {}
            (true, Some(bytes)) => out.push(format!(
                "state: expected absent, got a state file of {} byte(s)",
                bytes.len()
            )),
            (false, None) => out.push(format!(
                "state: expected {}, got nothing (no state file)",
                show(Some(m))
            )),
            (false, Some(bytes)) => match serde_json::from_slice::<Value>(bytes) {
                Ok(doc) => matcher::check("state", m, Some(&doc), &mut out),
                Err(err) => out.push(format!("state: the state file is not JSON: {err}")),
            },
        }
    }
    if e.state_unchanged == Some(true) && after.as_deref() != before {
        let describe = |b: Option<&[u8]>| match b {
            None => "no state file".to_string(),
            Some(b) => show(Some(&Value::String(
                String::from_utf8_lossy(b).into_owned(),
            ))),
        };
        out.push(format!(
            "state_unchanged: expected {}, got {}",
            describe(before),
            describe(after.as_deref())
        ));
    }
    for (rel, m) in &e.files {
        let text = std::fs::read(rel)
            .ok()
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        matcher::check_file(rel, m, text.as_deref(), &mut out);
    }
    out
}
