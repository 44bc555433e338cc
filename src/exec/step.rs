//! One orchestrator step (contract section 9): read the state, re-validate
//! the campaign, pick the governing agent and phase from the tables, run it,
//! validate the handoff, execute directives, apply the patch and persist —
//! in an order that leaves a resumable project after a crash at any point:
//! phase files and handoff first, then reports and hooks, then the state
//! (atomically), then consumed results are moved aside.

use crate::engine::doc;
use crate::engine::doc_cache::Doc;
use crate::engine::effects;
use crate::engine::handoff::{print_outcome, to_pretty, violations};
use crate::engine::phase::{GuardSeen, PhaseArgs, PhaseOutcome, lookup, run_phase};
use crate::exec::directives::{self, ExecutorKind};
use crate::exec::journal;
use crate::machine::Machine;
use crate::machine::model::StateKind;
use crate::workspace::fsio::{Durability, Inside, write_atomic_if_changed};
use crate::workspace::lock::ProjectLock;
use rhai::Dynamic;
use serde::Serialize;
use serde_json::{Value, json};
use std::path::Path;
use std::rc::Rc;

/// How a step runs.
#[derive(Debug, Clone, Default)]
pub struct StepOptions {
    /// Who executes backend directives.
    pub executor: ExecutorKind,
    /// Answer launch requests with simulated workers.
    pub simulate_workers: bool,
    /// Seed of the simulator.
    pub seed: u64,
    /// Models the host offers.
    pub available_models: Vec<String>,
}

/// A worker the host must run.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerTurn {
    /// `worker_ref`.
    pub worker: String,
    /// Resolved model.
    pub model: Value,
    /// Model class.
    pub model_class: Value,
    /// Slot id.
    pub slot_id: Value,
    /// Task file.
    pub task_file: String,
    /// Result file the worker must write.
    pub result_file: String,
}

/// One phase run within the step.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseRun {
    /// State the phase ran in.
    pub state: String,
    /// Agent.
    pub agent: String,
    /// Phase.
    pub phase: String,
    /// Deciding rule.
    pub rule: String,
    /// Handoff file.
    pub handoff_path: String,
    /// Handoff summary.
    pub summary: Value,
    /// Machine state after the phase.
    pub next_state: String,
    /// Protocol violations found in the handoff.
    pub violations: Vec<String>,
}

/// The machine-readable result of a step (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Turn {
    /// Machine state before the step.
    pub state_before: String,
    /// Machine state after the step.
    pub machine_state: String,
    /// Derived status.
    pub status: String,
    /// Last handoff written.
    pub handoff_path: Option<String>,
    /// Every phase the step ran (init states chain).
    pub phases: Vec<PhaseRun>,
    /// Workers the host must run before the next step.
    pub workers: Vec<WorkerTurn>,
    /// Directives left to the host (their result files do not exist yet).
    pub directives_for_host: Vec<Value>,
    /// Directives the step executed and what happened.
    pub directives_executed: Vec<Value>,
    /// Warnings of the handoffs.
    pub warnings: Vec<Value>,
    /// `next_action` of the state.
    pub next_action: Value,
    /// True in a terminal state.
    pub done: bool,
    /// Guards evaluated (for coverage tools).
    #[serde(skip)]
    pub guards: Vec<GuardSeen>,
}

/// Layout path `key` of the policy table.
pub fn layout<'m>(machine: &'m Machine, key: &str) -> &'m str {
    machine
        .policy
        .orchestrator
        .layout
        .get(key)
        .map(String::as_str)
        .unwrap_or("")
}

/// Phase arguments for a project in the current directory.
pub fn project_args(machine: &Machine, opts: &StepOptions) -> PhaseArgs {
    let manifest = layout(machine, "skills_manifest");
    PhaseArgs {
        campaign_path: layout(machine, "campaign").into(),
        state_path: layout(machine, "state").into(),
        load_handoff: layout(machine, "load_handoff").into(),
        agents_path: layout(machine, "agents").into(),
        skills_manifest: if Path::new(manifest).exists() {
            manifest.into()
        } else {
            String::new()
        },
        tasks_dir: layout(machine, "tasks").into(),
        worker_results_dir: layout(machine, "worker_results").into(),
        executor_events_dir: layout(machine, "executor_events").into(),
        preflight_path: layout(machine, "preflight").into(),
        secondary: false,
        apply_state: true,
        available_models: opts.available_models.clone(),
    }
}

/// The state as a step holds it: the kept parsed document (not a copy of it), replaced
/// by each new state a phase writes.
type StepState = Option<Rc<Doc>>;

/// The state document of a step's state, if any.
fn value(state: &StepState) -> Option<std::cell::Ref<'_, Dynamic>> {
    state.as_deref().map(Doc::value)
}

/// Reads the state strictly; `Ok(None)` when there is none.
pub fn read_state(machine: &Machine) -> Result<StepState, String> {
    let path = layout(machine, "state");
    // In a step, the fields the phase that will run leaves unread stay unread until a
    // phase reads them. Without a guess at the machine state, and outside a step (as
    // for `metaopt status`), every field is built.
    let schema = crate::engine::phase::STATE_SCHEMA;
    let keeping = crate::engine::doc_cache::keeping();
    let unread = |text: &str| match machine_state_hint(text) {
        Some(current) if keeping => likely_unread(machine, current, schema, text),
        _ => vec![],
    };
    let sandbox = &machine.sandbox;
    let loaded = crate::engine::sandbox::load_leaving_by_schema(
        &sandbox.engine,
        &sandbox.shared,
        path,
        schema,
        &unread,
    );
    match loaded {
        Err((false, _)) => Ok(None),
        Err((true, msg)) => Err(format!("{path}: {msg}")),
        Ok(None) => Err(format!("{path}: state file is empty")),
        Ok(Some(doc)) => {
            let issues = doc.issues(
                &machine.sandbox.engine,
                &machine.sandbox.shared.borrow(),
                schema,
            )?;
            if issues.is_empty() {
                Ok(Some(doc))
            } else {
                Err(format!("{path}: invalid state file: {}", issues.join("; ")))
            }
        }
    }
}

/// The fields of the state the phase that will run at machine state `current` leaves
/// unread: when its phases leave different ones, the phase its guards choose on the
/// fields they read, found in the text ([`top_level_hint`]); failing that, those every
/// phase leaves unread. A guess: a phase that reads a field left unread builds it.
fn likely_unread(machine: &Machine, current: &str, schema: &str, text: &str) -> Vec<String> {
    let by_phase = machine.unread_by_phase(current, schema);
    let first = by_phase.values().next();
    if by_phase.values().all(|l| Some(l) == first) {
        return first.cloned().unwrap_or_default();
    }
    let hinted = |fields: Option<&[String]>| {
        let mut map = rhai::Map::new();
        for field in fields? {
            map.insert(field.as_str().into(), top_level_hint(text, field)?);
        }
        Some(Dynamic::from_map(map))
    };
    match choose_phase(machine, current, hinted) {
        Ok((_, phase)) => by_phase.get(&phase).cloned().unwrap_or_default(),
        Err(_) => machine.unread_in_state(current, schema),
    }
}

/// The value of the top-level field `key` of a state file's text, found without parsing
/// the rest: the one `"key": ` written where our layout puts a top-level key (after a
/// line break and two spaces; a JSON string holds no line break), its value read alone.
fn top_level_hint(text: &str, key: &str) -> Option<Dynamic> {
    use serde::de::DeserializeSeed;
    let at = top_level_key_end(text, key)?;
    let mut de = serde_json::Deserializer::from_str(&text[at..]);
    doc::ScriptValue.deserialize(&mut de).ok()
}

/// Where the value of the one top-level `key` starts, in our layout ([`top_level_hint`]).
fn top_level_key_end(text: &str, key: &str) -> Option<usize> {
    let marker = format!("\n  {}: ", serde_json::to_string(key).ok()?);
    let mut found = memchr::memmem::find_iter(text.as_bytes(), marker.as_bytes());
    let at = found.next()? + marker.len();
    found.next().is_none().then_some(at)
}

/// The machine state a state file's text names, found without parsing it
/// ([`top_level_hint`]). A guess that only chooses which fields are parsed at once: a
/// wrong one costs time, never a result.
fn machine_state_hint(text: &str) -> Option<&str> {
    let at = top_level_key_end(text, "machine_state")?;
    let rest = text[at..].strip_prefix('"')?;
    rest.get(..memchr::memchr(b'"', rest.as_bytes())?)
}

/// Runs one step in the current directory (the project root).
pub fn step(machine: &Machine, opts: &StepOptions) -> Result<Turn, String> {
    let lock_path = Path::new(layout(machine, "state")).with_file_name("lock");
    let _lock = ProjectLock::acquire(&lock_path)?;
    // A step reads the state in up to four phases: parse it once.
    crate::engine::doc_cache::keep_documents();
    crate::engine::timing::mark("step start");
    let mut state = read_state(machine)?;
    crate::engine::timing::mark("read state");
    let initial = machine.states.initial.clone();
    let mut current = state_name(&state).unwrap_or_else(|| initial.clone());
    let state_before = current.clone();
    let mut turn = Turn {
        state_before: state_before.clone(),
        machine_state: current.clone(),
        status: machine.status_of(&current).unwrap_or_default().to_string(),
        handoff_path: None,
        phases: vec![],
        workers: vec![],
        directives_for_host: vec![],
        directives_executed: vec![],
        warnings: vec![],
        next_action: value(&state)
            .map(|s| next_action(&s))
            .unwrap_or(Value::Null),
        done: machine.is_terminal(&current),
        guards: vec![],
    };
    let args = project_args(machine, opts);
    if turn.done {
        let names = &machine.policy.orchestrator.terminal_step_directives;
        let directives = template_directives(machine, names, &args, &crate::now())?;
        turn.directives_executed = directives::execute_builtin(
            machine,
            &directives,
            value(&state).as_deref(),
            &Value::Null,
            &[],
        )?;
        return Ok(turn);
    }
    let now = crate::now();

    // Every step re-validates the campaign: LOAD_CAMPAIGN's phase runs each time.
    let (load_agent, load_phase) = dispatch(machine, &initial, &state)?;
    let load_outcome = run_named(machine, &load_agent, &load_phase, &args, &now)?;
    write_atomic_if_changed(
        Path::new(&args.load_handoff),
        &to_pretty(&load_outcome.handoff_value()),
        Durability::Durable,
    )
    .map_err(|e| format!("{}: {e}", args.load_handoff))?;
    let mut load_outcome = Some(load_outcome);
    crate::engine::timing::mark("write load handoff");

    for _ in 0..machine.states.states.len() {
        let kind = machine
            .states
            .states
            .get(&current)
            .map(|d| d.kind)
            .ok_or(format!("unknown state {current}"))?;
        let (agent, phase, outcome) = if kind == StateKind::Init {
            let (agent, phase) = dispatch(machine, &current, &state)?;
            let outcome = match (current == initial, load_outcome.take()) {
                (true, Some(o)) => o,
                _ => run_named(machine, &agent, &phase, &args, &now)?,
            };
            (agent, phase, outcome)
        } else {
            let gate_agent = machine.policy.orchestrator.agent.clone();
            let gate_phase = machine.policy.orchestrator.gate_phase.clone();
            let gate = run_named(machine, &gate_agent, &gate_phase, &args, &now)?;
            let blocks = gate.is_error || !gate.handoff["recommended_next_machine_state"].is_null();
            if blocks {
                (gate_agent, gate_phase, gate)
            } else {
                turn.guards.extend(gate.guards);
                let (agent, phase) = dispatch(machine, &current, &state)?;
                let outcome = run_named(machine, &agent, &phase, &args, &now)?;
                (agent, phase, outcome)
            }
        };
        let before = current.clone();
        let applied = apply_outcome(
            machine, opts, &args, &now, &before, &agent, &phase, outcome, &mut state, &mut turn,
        )?;
        current = applied;
        let next_kind = machine.states.states.get(&current).map(|d| d.kind);
        if !(next_kind == Some(StateKind::Init) && current != before) {
            break;
        }
    }

    turn.machine_state = current.clone();
    turn.status = machine.status_of(&current).unwrap_or_default().to_string();
    turn.done = machine.is_terminal(&current);
    turn.next_action = value(&state)
        .map(|s| next_action(&s))
        .unwrap_or(Value::Null);
    Ok(turn)
}

fn state_name(state: &StepState) -> Option<String> {
    value(state).and_then(|s| doc::field_str(&s, "machine_state"))
}

/// The state's `next_action` (null when it has none).
fn next_action(state: &Dynamic) -> Value {
    state
        .read_lock::<rhai::Map>()
        .and_then(|m| m.get("next_action").map(doc::to_json))
        .unwrap_or(Value::Null)
}

/// The governing agent and phase of `current`, chosen by the states table.
pub fn dispatch(
    machine: &Machine,
    current: &str,
    state: &StepState,
) -> Result<(String, String), String> {
    let seen = |fields: Option<&[String]>| {
        Some(value(state).map_or(Dynamic::UNIT, |s| doc::view_read(&s, fields)))
    };
    choose_phase(machine, current, seen)
}

/// [`dispatch`] with the state its guards see given by `seen`, from the fields they
/// read (`None`: the whole state); `seen` answering `None` is an error.
fn choose_phase(
    machine: &Machine,
    current: &str,
    seen: impl FnOnce(Option<&[String]>) -> Option<Dynamic>,
) -> Result<(String, String), String> {
    let def = machine
        .states
        .states
        .get(current)
        .ok_or(format!("unknown machine state `{current}`"))?;
    let agent = def
        .agent
        .clone()
        .ok_or(format!("state `{current}` has no governing agent"))?;
    let guards = machine
        .phase_guards()
        .map_err(|e| e.join("; "))?
        .get(current)
        .ok_or(format!("state `{current}` has no phases"))?;
    // A state whose first phase choice is unguarded needs no scope: skip converting the
    // whole state (the common case, and a large cost for large campaigns).
    if let Some((None, phase)) = guards.first() {
        return Ok((agent, phase.clone()));
    }
    let mut scope = crate::engine::phase::base_scope(
        machine,
        &project_args(machine, &StepOptions::default()),
        &crate::now(),
    );
    // The guards see the state fields they read (as `state.<field>`), not a copy of the
    // whole state, when that is all they do with it.
    let sources: Vec<&str> = def
        .phases
        .iter()
        .filter_map(|c| c.when.as_deref())
        .collect();
    let fields = crate::engine::sandbox::projected_fields(&sources, "state");
    let seen = seen(fields.as_deref()).ok_or("the state the guards read is not at hand")?;
    crate::engine::sandbox::push_binding(&mut scope, "state", seen);
    for (guard, phase) in guards {
        let holds = match guard {
            None => true,
            Some(ast) => machine
                .sandbox
                .eval_guard(&mut scope, ast)
                .map_err(|e| format!("states.yaml: {current}.phases[{phase}] guard: {e}"))?
                .as_bool()
                .unwrap_or(false),
        };
        if holds {
            return Ok((agent, phase.clone()));
        }
    }
    Err(format!("no phase of state `{current}` applies"))
}

fn run_named(
    machine: &Machine,
    agent: &str,
    phase: &str,
    args: &PhaseArgs,
    now: &str,
) -> Result<PhaseOutcome, String> {
    let (a, p) = lookup(machine, agent, Some(phase)).map_err(|e| e.to_string())?;
    Ok(run_phase(machine, a, p, args, now))
}

/// The handoff size (bytes) from which its journal parts are worked out on a helper
/// thread, alongside the step's writes.
const HELPER_THREAD_FROM: usize = 1 << 20;

#[allow(clippy::too_many_arguments)]
fn apply_outcome(
    machine: &Machine,
    opts: &StepOptions,
    args: &PhaseArgs,
    now: &str,
    current: &str,
    agent: &str,
    phase: &str,
    mut outcome: PhaseOutcome,
    state: &mut StepState,
    turn: &mut Turn,
) -> Result<String, String> {
    let handoff_path = format!("{}/{agent}-{current}.json", layout(machine, "handoffs"));
    let mut found = violations(
        machine,
        agent,
        &outcome.handoff,
        &outcome.patch_from_state,
        Path::new("."),
    );
    let workspace = Inside::new(Path::new("."), ".ml-metaopt");
    for w in &outcome.writes {
        let p = w.path();
        let inside = Path::new(p).parent().is_some_and(|_| workspace.contains(p));
        if !inside && p != args.agents_path {
            found.push(format!("phase writes `{p}` outside .ml-metaopt/"));
        }
    }
    for p in &outcome.consumes {
        if !workspace.contains(p) {
            found.push(format!(
                "phase moves `{p}`, which resolves outside .ml-metaopt/"
            ));
        }
    }
    turn.guards.extend(outcome.guards.iter().cloned());
    if let Some(w) = outcome.handoff["warnings"].as_array() {
        turn.warnings.extend(w.iter().cloned());
    }
    crate::engine::timing::mark("validate handoff");
    let applies = found.is_empty() && !outcome.is_error && outcome.state_changed;
    let (printed, state_text) = print_outcome(&outcome, applies)
        .map_err(|e| format!("{}: cannot write state: {e}", layout(machine, "state")))?;
    crate::engine::timing::mark("print handoff and state");
    // What the journal takes from the handoff (its patch compacted and its digest: tens
    // of milliseconds for a pool) is worked out on a helper thread while the step writes;
    // for a handoff under a MiB it is less work than starting the thread.
    let printed = std::sync::Arc::new(printed);
    let parts_job = (printed.text.len() >= HELPER_THREAD_FROM)
        .then(|| {
            let printed = std::sync::Arc::clone(&printed);
            std::thread::Builder::new()
                .spawn(move || journal::HandoffParts::of(&printed))
                .ok()
        })
        .flatten();
    let handoff_text = printed.text.as_str();
    let mut executed = Vec::new();
    // Every outcome keeps its handoff; where in the order depends on the outcome. It is
    // an audit record (nothing reads it back), replaced atomically but not synced.
    let write_handoff = || {
        write_atomic_if_changed(Path::new(&handoff_path), handoff_text, Durability::Record)
            .map_err(|e| format!("{handoff_path}: {e}"))
    };

    let next = if !found.is_empty() {
        // Protocol violation: keep the handoff, block, run the violation directives.
        write_handoff()?;
        let target = machine.policy.orchestrator.protocol_violation_state.clone();
        let directives = protocol_directives(machine, args, now)?;
        let blocked = value(state).map(|s| s.clone());
        if let Some(mut blocked) = blocked {
            if let Some(mut s) = blocked.write_lock::<rhai::Map>() {
                let status = machine.status_of(&target).unwrap_or_default();
                s.insert("machine_state".into(), target.as_str().into());
                s.insert("status".into(), status.into());
                let why = format!(
                    "protocol violation by {agent}.{phase}: {}",
                    found.join("; ")
                );
                s.insert("next_action".into(), why.into());
            }
            *state = Some(Rc::new(Doc::new(blocked)));
        }
        // The state is not the phase's: its patch is shown whole.
        executed.extend(directives::execute_builtin(
            machine,
            &directives,
            value(state).as_deref(),
            &outcome.handoff_value(),
            &[],
        )?);
        persist_state(machine, state, None)?;
        target
    } else if outcome.is_error {
        write_handoff()?;
        current.to_string()
    } else {
        effects::apply_writes(&outcome.writes)?;
        crate::engine::timing::mark("phase writes");
        write_handoff()?;
        let recommended = outcome.handoff["recommended_next_machine_state"]
            .as_str()
            .map(str::to_string);
        crate::engine::timing::mark("write handoff");
        let changed = match outcome.new_state.take() {
            Some(new_state) if outcome.state_changed => {
                *state = Some(Rc::new(Doc::new(new_state)));
                true
            }
            _ => false,
        };
        let next = recommended.unwrap_or_else(|| current.to_string());
        let list: Vec<Value> = outcome.handoff["directives"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // The state is the phase's new state (or the state as it was, when the patch
        // is empty): the values the patch names are its.
        executed.extend(directives::execute_builtin(
            machine,
            &list,
            value(state).as_deref(),
            &outcome.handoff,
            &outcome.patch_from_state,
        )?);
        crate::engine::timing::mark("directives");
        if changed {
            persist_state(machine, state, state_text)?;
        }
        crate::engine::timing::mark("persist state");
        effects::consume(&outcome.consumes)?;
        crate::engine::timing::mark("consume");
        // Backend directives run once their phase's inputs are consumed: a re-poll after
        // a discarded poll result must not find that result still in place.
        let (done, left) = directives::execute_external(machine, opts, &list)?;
        executed.extend(done);
        turn.directives_for_host.extend(left);
        let launches = outcome.handoff["launch_requests"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if opts.simulate_workers {
            let state = value(state).map(|s| doc::to_json(&s));
            crate::exec::sim::answer_workers(machine, opts.seed, &launches, state.as_ref(), args)?;
        }
        for l in launches {
            let result_file = l["result_file"].as_str().unwrap_or_default().to_string();
            if Path::new(&result_file).exists() {
                continue;
            }
            turn.workers.push(WorkerTurn {
                worker: l["worker_ref"].as_str().unwrap_or_default().to_string(),
                model: l["preferred_model"].clone(),
                model_class: l["model_class"].clone(),
                slot_id: l["slot_id"].clone(),
                task_file: l["task_file"].as_str().unwrap_or_default().to_string(),
                result_file,
            });
        }
        next
    };
    turn.directives_executed.extend(executed.iter().cloned());
    turn.handoff_path = Some(handoff_path.clone());
    turn.phases.push(PhaseRun {
        state: current.to_string(),
        agent: agent.to_string(),
        phase: phase.to_string(),
        rule: outcome.rule.clone(),
        handoff_path: handoff_path.clone(),
        summary: outcome.handoff["summary"].clone(),
        next_state: next.clone(),
        violations: found.clone(),
    });
    // A thread that did not start or did not finish leaves the work to this one.
    let journal_parts = parts_job
        .and_then(|job| job.join().ok())
        .unwrap_or_else(|| journal::HandoffParts::of(&printed));
    // The handoff's text is written and digested by now: not held while the journal
    // line (a compacted copy of its patch) is built.
    drop(printed);
    // The state is persisted by now: a journal that cannot be written is a warning,
    // not a failed step (which would tell the host nothing happened).
    let journaled = journal::append(
        machine,
        &journal::Entry {
            time: now,
            before: current,
            after: &next,
            agent,
            phase,
            rule: &outcome.rule,
            handoff: &journal_parts,
            directives: &executed,
            violations: &found,
        },
    );
    crate::engine::timing::mark("journal");
    if let Err(e) = journaled {
        turn.warnings
            .push(json!(format!("journal entry not written: {e}")));
    }
    crate::engine::exit::drop_handoff(outcome.handoff);
    Ok(next)
}

fn protocol_directives(
    machine: &Machine,
    args: &PhaseArgs,
    now: &str,
) -> Result<Vec<Value>, String> {
    template_directives(
        machine,
        &machine.policy.orchestrator.protocol_violation_directives,
        args,
        now,
    )
}

/// Evaluates the named directive templates of `policy.yaml`.
fn template_directives(
    machine: &Machine,
    names: &[String],
    args: &PhaseArgs,
    now: &str,
) -> Result<Vec<Value>, String> {
    let mut scope = crate::engine::phase::base_scope(machine, args, now);
    let mut out = Vec::new();
    for name in names {
        let t = machine
            .directive_templates()
            .map_err(|e| e.join("; "))?
            .get(name)
            .ok_or(format!("policy.yaml: unknown directive template `{name}`"))?;
        out.push(t.eval(&machine.sandbox, &mut scope)?);
    }
    Ok(out)
}

/// Writes the step's state (as `text` when printed already) and keeps it as the parsed
/// state file: the phases that read it next in this step find it without parsing it.
fn persist_state(
    machine: &Machine,
    state: &mut StepState,
    printed: Option<doc::Printed>,
) -> Result<(), String> {
    let Some(doc) = state.take() else {
        return Ok(());
    };
    let value = doc.unwrap_value();
    let path = layout(machine, "state");
    let printed = match printed {
        Some(printed) => {
            doc::write_state_text(path, &printed.text)?;
            printed
        }
        None => doc::write_state(path, &value)?,
    };
    *state = Some(crate::engine::doc_cache::keep_written(path, printed, value));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{machine_state_hint, top_level_hint};

    #[test]
    fn the_machine_state_is_found_only_at_a_top_level_key_of_our_layout() {
        let pretty = "{\n  \"baseline\": {\n    \"machine_state\": \"X\"\n  },\n  \"machine_state\": \"S\",\n  \"status\": \"RUNNING\"\n}\n";
        // (The nested key is deeper: not a match.)
        assert_eq!(machine_state_hint(pretty), Some("S"));
        for text in [
            r#"{"machine_state": "S"}"#,
            "{\n  \"machine_state\": \"A\",\n  \"machine_state\": \"B\"\n}",
            "{\n  \"machine_state\": 3\n}",
            "{\n  \"machine_state\": \"unterminated",
            "",
        ] {
            assert_eq!(machine_state_hint(text), None, "{text}");
        }
    }

    #[test]
    fn a_top_level_value_is_read_alone_where_our_layout_puts_it() {
        let text = "{\n  \"a\": {\n    \"n\": 1\n  },\n  \"n\": 7,\n  \"q\\\"\": [true, \"x\"],\n  \"s\": \"t\"\n}\n";
        let hint = |key: &str| top_level_hint(text, key).map(|v| crate::engine::doc::to_json(&v));
        assert_eq!(hint("n"), Some(serde_json::json!(7)));
        assert_eq!(hint("q\""), Some(serde_json::json!([true, "x"])));
        assert_eq!(hint("a"), Some(serde_json::json!({"n": 1})));
        assert_eq!(hint("s"), Some(serde_json::json!("t")));
        assert_eq!(hint("missing"), None);
        assert!(
            top_level_hint(r#"{"n": 7}"#, "n").is_none(),
            "another layout: no guess"
        );
    }
}
