//! Runs one control-agent phase: evaluates the phase's steps in order
//! (bindings accumulate, the first rule whose guard holds decides), then
//! builds the handoff envelope, the new state and the files to write. The
//! runner knows nothing of any particular agent: all of that is in the table.

use crate::engine::patch;
use crate::engine::sandbox::to_dynamic;
use crate::machine::{CompiledAgent, CompiledPhase, CompiledRule, CompiledStep, Machine, RuleBody};
use rhai::{Dynamic, Scope};
use serde_json::{Map, Value, json};

/// File paths and flags a phase runs with (the `metaopt agent` flags).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseArgs {
    /// `--campaign-path`.
    pub campaign_path: String,
    /// `--state-path`.
    pub state_path: String,
    /// `--load-handoff`.
    pub load_handoff: String,
    /// `--agents-path`.
    pub agents_path: String,
    /// `--skills-manifest`.
    pub skills_manifest: String,
    /// `--tasks-dir`.
    pub tasks_dir: String,
    /// `--worker-results-dir`.
    pub worker_results_dir: String,
    /// `--executor-events-dir`.
    pub executor_events_dir: String,
    /// `--preflight-path`.
    pub preflight_path: String,
    /// `--secondary`.
    pub secondary: bool,
    /// `--apply-state`.
    pub apply_state: bool,
    /// Models the host offers (empty: assume the first of each class).
    pub available_models: Vec<String>,
}

/// A file a phase wants written.
#[derive(Debug, Clone, PartialEq)]
pub enum FileWrite {
    /// Plain text.
    Text {
        /// Path.
        path: String,
        /// Contents.
        text: String,
    },
    /// A marked block upserted into a text file.
    Block {
        /// Path.
        path: String,
        /// Begin marker line.
        begin: String,
        /// End marker line.
        end: String,
        /// Block body.
        body: String,
    },
}

impl FileWrite {
    /// The file's path.
    pub fn path(&self) -> &str {
        match self {
            FileWrite::Text { path, .. } | FileWrite::Block { path, .. } => path,
        }
    }
}

/// A guard seen during a run, for coverage.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GuardSeen {
    /// Agent name.
    pub agent: String,
    /// Phase name.
    pub phase: String,
    /// Rule name.
    pub rule: String,
    /// The guard's value.
    pub value: bool,
}

/// What a phase decided.
#[derive(Debug, Clone)]
pub struct PhaseOutcome {
    /// The handoff envelope, less the state patch's values named in `patch_from_state`.
    pub handoff: Value,
    /// Top-level keys of the state patch whose values are `new_state`'s, whole: they are
    /// printed from it, not copied into `handoff` (see [`patch::Patch`]).
    pub patch_from_state: Vec<String>,
    /// The full new state, when the outcome changes or confirms it.
    pub new_state: Option<Dynamic>,
    /// True when `new_state` differs from the state the phase read (its patch is not
    /// empty, or it moves the machine state or status).
    pub state_changed: bool,
    /// Files to write before the handoff.
    pub writes: Vec<FileWrite>,
    /// Files to move aside once the new state is persisted.
    pub consumes: Vec<String>,
    /// The rule that decided.
    pub rule: String,
    /// True when the outcome is a runtime error.
    pub is_error: bool,
    /// Guards evaluated, in order.
    pub guards: Vec<GuardSeen>,
    /// The top-level keys of `new_state` that need checking against the state schema
    /// (`None`: all of them): when the rule changed a state read valid only through
    /// `set`/`append` (or `consume`), the keys those touched and the two the runner
    /// places; the others are as they were read.
    pub unchecked: Option<Vec<String>>,
}

impl PhaseOutcome {
    /// The whole handoff as JSON, its state patch complete (copied when the patch names
    /// values of the new state; the runner prints it with
    /// [`crate::engine::handoff::print`] instead).
    pub fn handoff_value(&self) -> std::borrow::Cow<'_, Value> {
        patch::Patch::complete(
            &self.handoff,
            &self.patch_from_state,
            self.new_state.as_ref(),
        )
    }
}

/// A phase that could not run at all (unknown agent or phase).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PhaseLookupError(pub String);

/// Finds the agent and phase; a single-phase agent needs no mode.
pub fn lookup<'m>(
    machine: &'m Machine,
    agent: &str,
    mode: Option<&str>,
) -> Result<(&'m CompiledAgent, &'m CompiledPhase), PhaseLookupError> {
    if let Some(problem) = machine.agent_problem(agent) {
        return Err(PhaseLookupError(format!(
            "control agent `{agent}` cannot be loaded: {problem}"
        )));
    }
    let a = machine.agent(agent).ok_or_else(|| {
        PhaseLookupError(format!(
            "unknown control agent `{agent}`{}; known: {}",
            crate::machine::suggest(agent, machine.agent_names()),
            machine
                .agent_names()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let phase = match mode {
        Some(m) => a.phases.get(m).ok_or_else(|| {
            PhaseLookupError(format!(
                "control agent `{}` has no mode `{m}`{}; modes: {}",
                a.table.agent,
                crate::machine::suggest(m, a.phases.keys()),
                a.phases.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?,
        None if a.phases.len() == 1 => &a.phases[0],
        None => {
            return Err(PhaseLookupError(format!(
                "control agent `{}` needs --mode, one of: {}",
                a.table.agent,
                a.phases.keys().cloned().collect::<Vec<_>>().join(", ")
            )));
        }
    };
    Ok((a, phase))
}

struct Run<'m> {
    machine: &'m Machine,
    agent: &'m CompiledAgent,
    phase: &'m CompiledPhase,
    scope: Scope<'static>,
    output: Map<String, Value>,
    warnings: Vec<Value>,
    guards: Vec<GuardSeen>,
}

/// The names every script sees first: `args`, `now`, `vars` (see `machine::BASE_NAMES`).
pub fn base_scope(machine: &Machine, args: &PhaseArgs, now: &str) -> Scope<'static> {
    let mut scope = Scope::new();
    scope.push_dynamic(
        "args",
        to_dynamic(&serde_json::to_value(args).unwrap_or(Value::Null)),
    );
    scope.push_dynamic("now", Dynamic::from(now.to_string()));
    scope.push_dynamic("vars", to_dynamic(&machine.vars));
    scope
}

/// Runs `phase` of `agent` with `args` at time `now`.
pub fn run_phase(
    machine: &Machine,
    agent: &CompiledAgent,
    phase: &CompiledPhase,
    args: &PhaseArgs,
    now: &str,
) -> PhaseOutcome {
    let scope = base_scope(machine, args, now);
    let mut run = Run {
        machine,
        agent,
        phase,
        scope,
        output: Map::new(),
        warnings: Vec::new(),
        guards: Vec::new(),
    };
    crate::engine::timing::mark("phase start");
    crate::engine::doc_cache::begin_phase();
    // Also with --apply-state: an unread field is written back from its text.
    crate::engine::doc_cache::leave_unread(phase.def.unread.clone());
    let decided = run.decide();
    crate::engine::timing::mark("decide");
    let mut outcome = match decided {
        Ok(Some((rule, body))) => match run.outcome(rule, body, args) {
            Ok(o) => match o.new_state.as_ref().and_then(|s| {
                crate::engine::timing::mark("outcome");
                state_problem(machine, s, o.unchecked.as_deref())
            }) {
                // Never hand on a state the next step could not load (an input the
                // tables copied into it unchecked): the phase fails instead.
                Some(problem) => {
                    let mut e = run.engine_error(&format!(
                        "rule `{}` would write a state file that does not load: {problem}",
                        rule.name
                    ));
                    e.guards = o.guards;
                    e
                }
                None => o,
            },
            Err(e) => run.engine_error(&format!("rule `{}`: {e}", rule.name)),
        },
        Ok(None) => run.engine_error("no rule matched"),
        Err(e) => run.engine_error(&e),
    };
    crate::engine::timing::mark("state check");
    // The state binding, unless it became the new state, goes back to the kept
    // document it was lent from (see `doc_cache`). Nothing lent: it stays in the scope
    // (taken out, a single-phase process would free it instead of leaking it with the
    // scope: 45 ms for a large state).
    let returned = match &outcome.new_state {
        None if crate::engine::doc_cache::lent_any() => {
            run.scope.get_mut(STATE_BINDING).map(std::mem::take)
        }
        _ => None,
    };
    if let Err(e) = crate::engine::doc_cache::settle(returned) {
        outcome = run.engine_error(&e);
    }
    crate::engine::trace::record(&agent.table.agent, &phase.name, &outcome);
    crate::engine::exit::drop_scope(run.scope);
    outcome
}

/// What a rule makes of the state: the patch, the new state, the two placed keys as
/// they were, and the keys to check again (see [`PhaseOutcome::unchecked`]).
struct NewState {
    patch: patch::Patch,
    state: Dynamic,
    place_before: [Option<String>; 2],
    unchecked: Option<Vec<String>>,
}

/// Top-level state keys a phase's patch leaves out: the runner sets them from the
/// recommended machine state (and its status) itself.
const PLACE_KEYS: [&str; 2] = ["machine_state", "status"];

/// Schema the state file is loaded with (`machine/schemas/state.yaml`).
pub const STATE_SCHEMA: &str = "state";

/// The binding a rule's state changes apply to (and the patch is computed against).
const STATE_BINDING: &str = "state";

/// The deepest nesting of arrays and objects serde_json reads back (its recursion limit).
const MAX_NESTING: usize = 127;

/// How deeply arrays and objects nest in `v` (a scalar: 0); stops counting past the limit.
fn nesting(v: &Dynamic) -> usize {
    crate::engine::doc::nesting(v, MAX_NESTING)
}

/// Why `state`, once written, would not load back strictly (JSON nesting, schema), if so;
/// only the top-level keys in `only` are looked at when given (the rest were checked).
fn state_problem(machine: &Machine, state: &Dynamic, only: Option<&[String]>) -> Option<String> {
    let too_deep = match (only, state.read_lock::<rhai::Map>()) {
        (Some(keys), Some(map)) => keys
            .iter()
            .filter_map(|k| map.get(k.as_str()))
            .any(|v| nesting(v) + 1 > MAX_NESTING),
        _ => nesting(state) > MAX_NESTING,
    };
    if too_deep {
        return Some(format!(
            "invalid json: recursion limit exceeded (arrays and objects nested deeper than {MAX_NESTING})"
        ));
    }
    let issues = crate::engine::sandbox::schema_issues_in(
        &machine.sandbox.engine,
        &machine.sandbox.shared.borrow(),
        STATE_SCHEMA,
        state,
        only,
    );
    match issues {
        Ok(issues) if issues.is_empty() => unchecked_change(machine, state, only),
        Ok(issues) => Some(issues.join("; ")),
        Err(e) => Some(e),
    }
}

/// In debug builds (the tests), the whole state is checked too when only some keys were:
/// a table that changed the `state` binding outside `set`/`append` fails its phase.
fn unchecked_change(machine: &Machine, state: &Dynamic, only: Option<&[String]>) -> Option<String> {
    if !cfg!(debug_assertions) || only.is_none() {
        return None;
    }
    state_problem(machine, state, None)
        .map(|p| format!("the `state` binding was changed outside `set`/`append`/`new_state`: {p}"))
}

impl<'m> Run<'m> {
    fn place(&self) -> String {
        format!(
            "{} phase `{}`",
            self.machine.source.display(&self.agent.file),
            self.phase.name
        )
    }

    fn bind(&mut self, lets: &[(String, crate::engine::template::Template)]) -> Result<(), String> {
        for (name, t) in lets {
            let v = self
                .eval_dynamic(t)
                .map_err(|e| format!("let `{name}`: {e}"))?;
            crate::engine::sandbox::push_binding(&mut self.scope, name, v);
            crate::engine::timing::mark_with(|| format!("let {name}"));
        }
        Ok(())
    }

    /// Evaluates a template to a rhai value without a JSON round trip when it is a script.
    fn eval_dynamic(&mut self, t: &crate::engine::template::Template) -> Result<Dynamic, String> {
        match t {
            crate::engine::template::Template::Script(ast, src) => self
                .machine
                .sandbox
                .eval(&mut self.scope, ast)
                .map_err(|e| format!("{e} (in `{src}`)")),
            other => Ok(to_dynamic(
                &other.eval(&self.machine.sandbox, &mut self.scope)?,
            )),
        }
    }

    fn eval(&mut self, t: &crate::engine::template::Template) -> Result<Value, String> {
        t.eval(&self.machine.sandbox, &mut self.scope)
    }

    fn decide(&mut self) -> Result<Option<(&'m CompiledRule, &'m RuleBody)>, String> {
        let steps = self.phase.steps(self.machine).map_err(|e| e.join("; "))?;
        for step in steps {
            match step {
                CompiledStep::Bind {
                    lets,
                    output,
                    warnings,
                } => {
                    self.bind(lets)?;
                    for (k, t) in output {
                        let v = self.eval(t).map_err(|e| format!("output `{k}`: {e}"))?;
                        self.output.insert(k.clone(), v);
                    }
                    if let Some(w) = warnings {
                        let list = w.eval_spliced(&self.machine.sandbox, &mut self.scope)?;
                        self.warnings.extend(list);
                    }
                }
                CompiledStep::Rule(rule) => {
                    let holds = match &rule.when {
                        None => true,
                        Some((ast, src)) => {
                            let v = self
                                .machine
                                .sandbox
                                .eval_guard(&mut self.scope, ast)
                                .map_err(|e| format!("rule `{}` guard `{src}`: {e}", rule.name))?;
                            let b = v.as_bool().map_err(|t| {
                                format!(
                                    "rule `{}` guard `{src}` must be a boolean, got {t}",
                                    rule.name
                                )
                            })?;
                            self.guards.push(GuardSeen {
                                agent: self.agent.table.agent.clone(),
                                phase: self.phase.name.clone(),
                                rule: rule.name.clone(),
                                value: b,
                            });
                            b
                        }
                    };
                    if holds {
                        let body = rule
                            .body(self.machine, self.phase)
                            .map_err(|e| e.join("; "))?;
                        self.bind(&body.lets)
                            .map_err(|e| format!("rule `{}`: {e}", rule.name))?;
                        return Ok(Some((rule, body)));
                    }
                }
            }
        }
        Ok(None)
    }

    fn envelope(
        &self,
        next: Option<&str>,
        patch: Value,
        summary: Value,
        recovery: Value,
    ) -> Map<String, Value> {
        let table = &self.agent.table;
        let mut h = self.output.clone();
        h.insert(
            "schema_version".into(),
            json!(self.machine.policy.handoff_schema_version),
        );
        h.insert(
            "handoff_type".into(),
            json!(format!("{}.{}", table.short_name, self.phase.name)),
        );
        h.insert("control_agent".into(), json!(table.agent));
        h.insert(
            "recommended_next_machine_state".into(),
            next.map_or(Value::Null, |s| json!(s)),
        );
        h.insert("state_patch".into(), patch);
        h.insert("directives".into(), json!([]));
        h.insert("launch_requests".into(), json!([]));
        h.insert("summary".into(), summary);
        h.insert("warnings".into(), Value::Array(self.warnings.clone()));
        h.insert("recovery_action".into(), recovery);
        h
    }

    fn engine_error(&mut self, msg: &str) -> PhaseOutcome {
        let summary = json!(format!("phase could not be evaluated: {msg}"));
        let recovery = json!(format!(
            "fix the machine table or the input it reads ({})",
            self.place()
        ));
        let h = self.envelope(None, Value::Null, summary, recovery);
        PhaseOutcome {
            handoff: Value::Object(h),
            patch_from_state: Vec::new(),
            new_state: None,
            state_changed: false,
            writes: vec![],
            consumes: vec![],
            rule: String::new(),
            is_error: true,
            guards: std::mem::take(&mut self.guards),
            unchecked: None,
        }
    }

    /// True when the binding named `state` is a state already in `target` (or no target).
    fn state_stays_in(&self, target: Option<&str>) -> bool {
        let Some(map) = self
            .scope
            .get(STATE_BINDING)
            .and_then(|d| d.read_lock::<rhai::Map>())
        else {
            return false;
        };
        let Some(current) = map
            .get("machine_state")
            .and_then(|v| v.read_lock::<rhai::ImmutableString>())
        else {
            return false;
        };
        target.is_none_or(|t| t == current.as_str())
    }

    /// The state the rule writes and its patch against the binding named `state`. The
    /// binding is moved out of the scope (no copy of a large state): call this after
    /// everything else of the outcome is evaluated.
    fn new_state(&mut self, rule: &RuleBody) -> Result<NewState, String> {
        let whole = rule
            .new_state
            .as_ref()
            .map(|t| self.eval_dynamic(t))
            .transpose()?;
        let mut sets = Vec::with_capacity(rule.set.len());
        for (path, t) in &rule.set {
            let v = self
                .eval_dynamic(t)
                .map_err(|e| format!("set `{}`: {e}", path.join(".")))?;
            sets.push((path, v));
        }
        let mut appends = Vec::with_capacity(rule.append.len());
        for (path, t) in &rule.append {
            let v = self
                .eval_dynamic(t)
                .map_err(|e| format!("append `{}`: {e}", path.join(".")))?;
            let items = v
                .into_array()
                .map_err(|t| format!("append `{}`: expected a list, got {t}", path.join(".")))?;
            if !items.is_empty() {
                appends.push((path, items));
            }
        }
        let base = self
            .scope
            .get_mut(STATE_BINDING)
            .map(std::mem::take)
            .filter(Dynamic::is_map)
            .unwrap_or_else(|| rhai::Map::new().into());
        let skip = PLACE_KEYS;
        let place = skip.map(|k| crate::engine::doc::field_str(&base, k));
        if let Some(mut new_state) = whole {
            // A whole new state: diffed against the base key by key.
            for (path, v) in sets {
                set_path(&mut new_state, path, v)?;
            }
            for (path, items) in appends {
                append_at(&mut new_state, path, items)?;
            }
            return Ok(NewState {
                patch: patch::diff_values(&base, &new_state, &skip),
                state: new_state,
                place_before: place,
                unchecked: None,
            });
        }
        // The base with `set` applied: only the top-level keys a `set` touches can
        // differ, so they alone are kept aside and diffed (no copy of a large state).
        // A base read checked against the state schema needs only its changed keys
        // (and the two the runner places) checked again.
        let checked = base.tag() == crate::engine::sandbox::schema_tag(STATE_SCHEMA);
        let mut new_state = base;
        let mut before = rhai::Map::new();
        let mut touched: Vec<String> = Vec::new();
        for (path, v) in sets {
            if let Some(top) = path.first()
                && !touched.contains(top)
                && let Some(mut m) = new_state.write_lock::<rhai::Map>()
            {
                touched.push(top.clone());
                let old = if path.len() == 1 {
                    m.remove(top.as_str())
                } else {
                    m.get(top.as_str()).cloned()
                };
                if let Some(old) = old {
                    before.insert(top.as_str().into(), old);
                }
            }
            set_path(&mut new_state, path, v)?;
        }
        // Appended lists grow in place. A top-level list is not kept aside: it changed
        // (items were added), so its patch entry is the whole new list.
        for (path, items) in appends {
            if let Some(top) = path.first()
                && !touched.contains(top)
            {
                touched.push(top.clone());
                if path.len() > 1
                    && let Some(old) = new_state
                        .read_lock::<rhai::Map>()
                        .and_then(|m| m.get(top.as_str()).cloned())
                {
                    before.insert(top.as_str().into(), old);
                }
            }
            append_at(&mut new_state, path, items)?;
        }
        let patch_value = patch::diff_keys(&before, &new_state, &touched, &skip);
        let unchecked = checked.then(|| {
            let mut keys = touched;
            keys.extend(PLACE_KEYS.iter().map(|k| k.to_string()));
            keys
        });
        Ok(NewState {
            patch: patch_value,
            state: new_state,
            place_before: place,
            unchecked,
        })
    }

    fn outcome(
        &mut self,
        rule: &CompiledRule,
        body: &RuleBody,
        args: &PhaseArgs,
    ) -> Result<PhaseOutcome, String> {
        for (k, t) in &body.output {
            let v = self.eval(t).map_err(|e| format!("output `{k}`: {e}"))?;
            self.output.insert(k.clone(), v);
        }
        if let Some(w) = &body.warnings {
            let list = w.eval_spliced(&self.machine.sandbox, &mut self.scope)?;
            self.warnings.extend(list);
        }
        let guards = std::mem::take(&mut self.guards);
        if let Some((summary, recovery)) = &body.error {
            let s = self.eval(summary)?;
            let r = self.eval(recovery)?;
            let h = self.envelope(None, Value::Null, s, r);
            return Ok(PhaseOutcome {
                handoff: Value::Object(h),
                patch_from_state: Vec::new(),
                new_state: None,
                state_changed: false,
                writes: vec![],
                consumes: vec![],
                rule: rule.name.clone(),
                is_error: true,
                guards,
                unchecked: None,
            });
        }
        let dynamic_next = match &body.next_expr {
            Some(t) => match self.eval(t)? {
                Value::String(s) if self.machine.states.states.contains_key(&s) => Some(s),
                other => return Err(format!("next evaluated to {other}, not a machine state")),
            },
            None => None,
        };
        let next = body.next.as_deref().or(dynamic_next.as_deref());
        let forced_null = self.phase.def.secondary && args.secondary;
        let recommended = if forced_null { None } else { next };

        let mut directives = Vec::new();
        for t in &body.directives {
            for d in t.eval_spliced(&self.machine.sandbox, &mut self.scope)? {
                directives.push(d);
            }
        }
        let mut launches = Vec::new();
        for t in &body.launch {
            for mut l in t.eval_spliced(&self.machine.sandbox, &mut self.scope)? {
                crate::engine::workers::fill_policy(
                    &self.machine.policy,
                    &mut l,
                    &args.available_models,
                );
                launches.push(l);
            }
        }
        let mut writes = Vec::new();
        for t in &body.writes {
            for w in t.eval_spliced(&self.machine.sandbox, &mut self.scope)? {
                writes.push(file_write(w)?);
            }
        }
        let mut consumes = Vec::new();
        for t in &body.consume {
            for c in t.eval_spliced(&self.machine.sandbox, &mut self.scope)? {
                if let Some(s) = c.as_str() {
                    consumes.push(s.to_string());
                }
            }
        }
        let summary = match &body.summary {
            Some(t) => self.eval(t)?,
            None => json!(rule.name),
        };
        let recovery = match &body.recovery {
            Some(t) => self.eval(t)?,
            None => Value::Null,
        };
        // State: the binding named `state` is the base the patch is computed against. It
        // is evaluated last: `new_state` moves the binding out of the scope.
        let (patch_value, state_out, state_changed, unchecked) = if !self.agent.table.patches_state
        {
            (patch::Patch::null(), None, false, None)
        } else if body.preserve_state {
            (patch::Patch::empty(), None, false, None)
        } else if body.set.is_empty()
            && body.append.is_empty()
            && body.new_state.is_none()
            && body.consume.is_empty()
            && self.state_stays_in(recommended)
        {
            // Nothing to change: no copy of the state, no patch, nothing to write.
            (patch::Patch::empty(), None, false, None)
        } else {
            let NewState {
                patch: patch_value,
                state: mut new_state,
                place_before,
                unchecked,
            } = self.new_state(body)?;
            let target = recommended
                .map(str::to_string)
                .or_else(|| crate::engine::doc::field_str(&new_state, "machine_state"));
            if let (Some(target), Some(mut map)) = (target, new_state.write_lock::<rhai::Map>()) {
                let status = self.machine.status_of(&target).unwrap_or("RUNNING");
                map.insert("status".into(), status.into());
                map.insert("machine_state".into(), target.into());
            }
            let place_after = PLACE_KEYS.map(|k| crate::engine::doc::field_str(&new_state, k));
            let changed = place_after != place_before || !patch_value.is_empty();
            (
                patch_value,
                new_state.is_map().then_some(new_state),
                changed,
                unchecked,
            )
        };
        let mut h = self.envelope(recommended, patch_value.json, summary, recovery);
        h.insert("directives".into(), Value::Array(directives));
        h.insert("launch_requests".into(), Value::Array(launches));
        Ok(PhaseOutcome {
            handoff: Value::Object(h),
            patch_from_state: patch_value.from_state,
            new_state: state_out,
            state_changed,
            writes,
            consumes,
            rule: rule.name.clone(),
            is_error: false,
            guards,
            unchecked,
        })
    }
}

fn set_path(target: &mut Dynamic, path: &[String], value: Dynamic) -> Result<(), String> {
    let Some((first, rest)) = path.split_first() else {
        *target = value;
        return Ok(());
    };
    crate::engine::unread::materialize(target)?;
    if !target.is_map() {
        *target = rhai::Map::new().into();
    }
    let Some(mut map) = target.write_lock::<rhai::Map>() else {
        return Ok(());
    };
    if rest.is_empty() {
        map.insert(first.as_str().into(), value);
        return Ok(());
    }
    let child = map
        .entry(first.as_str().into())
        .or_insert_with(|| rhai::Map::new().into());
    set_path(child, rest, value)
}

/// [`append_path`], its error naming the `append:` entry.
fn append_at(target: &mut Dynamic, path: &[String], items: rhai::Array) -> Result<(), String> {
    append_path(target, path, items).map_err(|e| format!("append `{}`: {e}", path.join(".")))
}

/// Appends `items` to the list at `path` of `target` (a missing or null value is an
/// empty list; maps on the way are created).
pub(crate) fn append_path(
    target: &mut Dynamic,
    path: &[String],
    mut items: rhai::Array,
) -> Result<(), String> {
    // A list left unread grows without being read: its items are printed after its text.
    if path.is_empty()
        && crate::engine::unread::may_be_unread(target)
        && let Some(mut grown) = target
            .read_lock::<crate::engine::unread::Unread>()
            .filter(|list| list.is_list())
            .map(|list| list.clone())
    {
        grown.extend(std::mem::take(&mut items))?;
        *target = Dynamic::from(grown);
        return Ok(());
    }
    crate::engine::unread::materialize(target)?;
    let Some((first, rest)) = path.split_first() else {
        if target.is_unit() {
            *target = rhai::Array::new().into();
        }
        if !target.is_array() {
            return Err(format!(
                "the state holds {} there, not a list",
                crate::engine::doc::type_name(target)
            ));
        }
        if let Some(mut list) = target.write_lock::<rhai::Array>() {
            list.extend(items);
        }
        return Ok(());
    };
    if target.is_unit() {
        *target = rhai::Map::new().into();
    }
    if !target.is_map() {
        return Err(format!(
            "the state holds {} above `{first}`, not an object",
            crate::engine::doc::type_name(target)
        ));
    }
    let Some(mut map) = target.write_lock::<rhai::Map>() else {
        return Ok(());
    };
    let child = map.entry(first.as_str().into()).or_insert(Dynamic::UNIT);
    append_path(child, rest, items)
}

/// The write a `writes:` item describes; its text is moved, not copied (task files can
/// hold a whole pool).
fn file_write(mut w: Value) -> Result<FileWrite, String> {
    let path = w
        .get("path")
        .and_then(Value::as_str)
        .ok_or("write needs a string `path`")?
        .to_string();
    if let Some(text) = w.get_mut("text").map(Value::take) {
        let text = match text {
            Value::String(s) => s,
            other => serde_json::to_string_pretty(&other).map_err(|e| e.to_string())? + "\n",
        };
        return Ok(FileWrite::Text { path, text });
    }
    if let Some(json) = w.get("json") {
        let text = crate::engine::handoff::to_pretty(json);
        return Ok(FileWrite::Text { path, text });
    }
    if let Some(block) = w.get("block") {
        let field = |k: &str| {
            block
                .get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or(format!("block needs `{k}`"))
        };
        return Ok(FileWrite::Block {
            path,
            begin: field("begin")?,
            end: field("end")?,
            body: field("body")?,
        });
    }
    Err(format!("write to {path} needs `text`, `json` or `block`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for i in 0..levels {
            v = if i % 2 == 0 {
                json!([v])
            } else {
                json!({ "k": v })
            };
        }
        v
    }

    #[test]
    fn nesting_limit_matches_what_serde_json_reads_back() {
        for levels in 0..140 {
            let v = nested(levels);
            let text = crate::engine::handoff::to_pretty(&v);
            let reads = serde_json::from_str::<Value>(&text).is_ok();
            assert_eq!(
                nesting(&to_dynamic(&v)) <= MAX_NESTING,
                reads,
                "{levels} levels: nesting {}",
                nesting(&to_dynamic(&v))
            );
        }
    }
}

#[cfg(test)]
mod recheck_tests {
    use super::*;

    fn state() -> Dynamic {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/scenarios/fixtures/state-roll.json"
        ))
        .expect("fixture");
        crate::engine::doc::parse_json(&text).expect("parses")
    }

    fn set(doc: &mut Dynamic, key: &str, value: Dynamic) {
        doc.write_lock::<rhai::Map>()
            .expect("a map")
            .insert(key.into(), value);
    }

    #[test]
    fn a_checked_state_is_checked_again_in_the_keys_given_only() {
        let machine = Machine::load(None).expect("embedded tables load");
        let mut doc = state();
        assert_eq!(state_problem(&machine, &doc, None), None);
        // A broken key outside `only` is not looked at by the schema check (debug builds
        // then check the whole state and name the change); inside, it is reported.
        set(&mut doc, "current_iteration", "three".into());
        let only = vec!["next_action".to_string()];
        let partial = crate::engine::sandbox::schema_issues_in(
            &machine.sandbox.engine,
            &machine.sandbox.shared.borrow(),
            STATE_SCHEMA,
            &doc,
            Some(&only),
        );
        assert_eq!(partial, Ok(vec![]));
        let debug_check = state_problem(&machine, &doc, Some(&only));
        assert_eq!(
            debug_check.is_some_and(|p| p.contains("changed outside `set`/`append`")),
            cfg!(debug_assertions)
        );
        let only = vec!["current_iteration".to_string()];
        let problem = state_problem(&machine, &doc, Some(&only)).expect("reported");
        assert!(problem.contains("current_iteration"), "{problem}");
        assert!(state_problem(&machine, &doc, None).is_some());
        // The cross checks run either way.
        let mut doc = state();
        set(&mut doc, "status", "NOT_A_STATUS".into());
        assert!(state_problem(&machine, &doc, Some(&[])).is_some());
    }

    #[test]
    fn schema_tags_differ_by_schema_and_are_never_the_default() {
        let (a, b) = (
            crate::engine::sandbox::schema_tag("state"),
            crate::engine::sandbox::schema_tag("campaign"),
        );
        assert_ne!(a, b);
        assert_ne!(a, 0);
        assert_ne!(crate::engine::sandbox::schema_tag(""), 0);
    }
}

#[cfg(test)]
mod unread_tests {
    use super::*;
    use crate::engine::doc::{parse_json, same};

    /// The sweep fixture, parsed whole and with `current_sweep` left unread.
    fn both() -> (Dynamic, Dynamic) {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/scenarios/fixtures/state-sweep.json"
        ))
        .expect("fixture");
        let whole = parse_json(&text).expect("parses");
        let left = crate::engine::unread::parse_json_leaving(
            &std::rc::Rc::new(text),
            &[("current_sweep", None), ("key_learnings", None)],
        )
        .expect("parses");
        (whole, left)
    }

    #[test]
    fn set_and_append_below_an_unread_field_change_its_value_not_a_stand_in() {
        let (mut whole, mut left) = both();
        let path = ["current_sweep".to_string(), "best_run_id".to_string()];
        set_path(&mut whole, &path, "run-x".into()).expect("sets");
        set_path(&mut left, &path, "run-x".into()).expect("sets");
        let appended = ["key_learnings".to_string()];
        append_at(&mut whole, &appended, vec!["new".into()]).expect("appends");
        append_at(&mut left, &appended, vec!["new".into()]).expect("appends");
        assert!(same(&whole, &left));
        let sweep = crate::engine::doc::to_json(&left)["current_sweep"].clone();
        assert_eq!(sweep["best_run_id"], "run-x");
        assert!(
            sweep["sweep_id"].is_string(),
            "the rest of the sweep is kept: {sweep}"
        );
    }

    #[test]
    fn an_unread_field_moved_elsewhere_is_checked_and_measured_as_its_value() {
        let (_, left) = both();
        let sweep = left.read_lock::<rhai::Map>().expect("map")["current_sweep"].clone();
        // Checked against another rule: the value, not the view built for its own rule.
        let rule: crate::machine::model::FieldRule =
            serde_yaml::from_str("{ type: object, fields: { sweep_id: { type: integer } } }")
                .expect("rule");
        let view = sweep
            .read_lock::<crate::engine::unread::Unread>()
            .expect("unread")
            .view_for(&rule)
            .expect("parses")
            .0
            .into_owned();
        assert!(crate::engine::doc::to_json(&view)["sweep_id"].is_string());
        assert_eq!(
            nesting(&sweep),
            nesting(&parse_json(r#"{"a": [1]}"#).unwrap())
        );
    }
}
