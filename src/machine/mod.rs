//! The machine: tables loaded from `machine/` (embedded or a directory),
//! parsed into the model, and compiled once (guards, templates, schemas)
//! into the form the engine runs. Loading reports every problem it finds,
//! each naming the table file and the rule.

pub mod check;
pub mod diff;
pub mod docs;
pub mod graph;
pub mod model;
pub mod source;

use crate::engine::sandbox::{BuiltSchema, LazySchema, Sandbox, SchemaChecks, SharedTables};
use crate::engine::schema::CompiledSchema;
use crate::engine::template::Template;
use indexmap::IndexMap;
use model::*;
use rhai::AST;
use serde_yaml::Value as Yaml;
pub use source::TableSource;

/// Names every phase script sees before its own bindings.
pub const BASE_NAMES: &[&str] = &["args", "now", "vars"];

/// A compiled rule: its guard, compiled with the phase, and the rest (its body),
/// compiled the first time the rule fires. A phase evaluates the guards of the rules
/// before the one that fires and the body of that one only: compiling every body of
/// every rule was half the start-up of a phase. Directory tables (`machine check`,
/// `--machine DIR`) compile every body at load and report its errors there.
#[derive(Debug)]
pub struct CompiledRule {
    /// `name:` of the rule.
    pub name: String,
    /// Compiled guard and its source.
    pub when: Option<(AST, String)>,
    /// The body, once compiled (or why it does not compile).
    body: std::cell::OnceCell<Result<RuleBody, Vec<String>>>,
    /// What the body is compiled from: the rule's definition and the names in scope
    /// before its `let`.
    source: Box<(StepDef, Vec<String>)>,
}

impl CompiledRule {
    /// The rule's body, compiled on first use; its compile errors, each naming the
    /// table file and the rule.
    pub fn body(&self, machine: &Machine, phase: &CompiledPhase) -> Result<&RuleBody, &[String]> {
        let body = self.body.get_or_init(|| {
            let ctx = phase.ctx(machine);
            let (step, names) = &*self.source;
            let mut errors = Vec::new();
            let body = compile_body(&ctx, &self.name, step, names, &mut errors);
            collected(body, errors)
        });
        body.as_ref().map_err(Vec::as_slice)
    }
}

/// What a rule does once its guard holds.
#[derive(Debug)]
pub struct RuleBody {
    /// Rule-local bindings, evaluated once the guard holds.
    pub lets: Vec<(String, Template)>,
    /// `error:` summary and recovery.
    pub error: Option<(Template, Template)>,
    /// Target state (`None` = stay).
    pub next: Option<String>,
    /// `next: = expr` — a target computed at run time (e.g. the resumed state).
    pub next_expr: Option<Template>,
    /// `new_state:`.
    pub new_state: Option<Template>,
    /// `set:` paths and values.
    pub set: Vec<(Vec<String>, Template)>,
    /// `append:` paths and the lists appended there.
    pub append: Vec<(Vec<String>, Template)>,
    /// `output:` fields.
    pub output: Vec<(String, Template)>,
    /// `directives:` items.
    pub directives: Vec<Template>,
    /// `launch:` items.
    pub launch: Vec<Template>,
    /// `writes:` items.
    pub writes: Vec<Template>,
    /// `consume:` items.
    pub consume: Vec<Template>,
    /// `summary:`.
    pub summary: Option<Template>,
    /// `warnings:`.
    pub warnings: Option<Template>,
    /// `recovery:`.
    pub recovery: Option<Template>,
    /// `preserve_state:`.
    pub preserve_state: bool,
}

/// A compiled entry of a phase's steps.
#[derive(Debug)]
pub enum CompiledStep {
    /// Bindings, outputs and warnings that apply to every later outcome.
    Bind {
        /// `let:` bindings.
        lets: Vec<(String, Template)>,
        /// `output:` fields.
        output: Vec<(String, Template)>,
        /// `warnings:`.
        warnings: Option<Template>,
    },
    /// A rule.
    Rule(Box<CompiledRule>),
}

/// A compiled phase.
#[derive(Debug)]
pub struct CompiledPhase {
    /// Phase name (`--mode`).
    pub name: String,
    /// The table definition.
    pub def: PhaseDef,
    /// Table file of the agent, for messages.
    pub file: String,
    /// Steps with fragments spliced in, compiled on first use (see [`Machine::load`]).
    compiled: std::cell::OnceCell<Result<Vec<CompiledStep>, Vec<String>>>,
}

impl CompiledPhase {
    /// What this phase's scripts compile against (messages name its table file).
    fn ctx<'a>(&'a self, machine: &'a Machine) -> Ctx<'a> {
        Ctx {
            source: &machine.source,
            file: &self.file,
            phase: &self.name,
            sandbox: &machine.sandbox,
            policy: Some(&machine.policy),
        }
    }

    /// The compiled steps; compiles them on first use and reports every error.
    pub fn steps(&self, machine: &Machine) -> Result<&[CompiledStep], &[String]> {
        let compiled = self.compiled.get_or_init(|| {
            let ctx = self.ctx(machine);
            let mut names: Vec<String> = BASE_NAMES.iter().map(|s| s.to_string()).collect();
            let mut steps = Vec::new();
            let mut errors = Vec::new();
            compile_steps(
                &ctx,
                &self.def.steps,
                &machine.fragments,
                &mut names,
                &mut steps,
                &mut errors,
                0,
            );
            collected(steps, errors)
        });
        match compiled {
            Ok(steps) => Ok(steps),
            Err(errors) => Err(errors),
        }
    }
}

/// A compiled agent table.
#[derive(Debug)]
pub struct CompiledAgent {
    /// Table file, for messages.
    pub file: String,
    /// The table.
    pub table: AgentTable,
    /// Phases by name.
    pub phases: IndexMap<String, CompiledPhase>,
}

/// `agent:` and `short_name:` of an agent table, read ahead of the rest.
#[derive(serde::Deserialize)]
struct AgentHeader {
    agent: String,
    #[serde(default)]
    short_name: String,
}

/// An agent table, parsed and compiled when first asked for (a phase runs one agent).
#[derive(Debug)]
struct AgentSlot {
    /// Table file.
    file: String,
    /// `short_name:` (the agent can be asked for by it).
    short_name: String,
    /// The agent, or the errors parsing its table gave.
    compiled: std::cell::OnceCell<Result<CompiledAgent, Vec<String>>>,
}

impl AgentSlot {
    /// A slot for the table in `file`; `parsed` when it was parsed already.
    fn new(file: &str, short_name: String, parsed: Option<AgentTable>) -> Self {
        let compiled = std::cell::OnceCell::new();
        if let Some(table) = parsed {
            let _ = compiled.set(Ok(compile_agent(file, table)));
        }
        Self {
            file: file.to_string(),
            short_name,
            compiled,
        }
    }

    /// The agent, parsed on first use, or the errors its table gave.
    fn compiled(&self, machine: &Machine) -> Result<&CompiledAgent, &[String]> {
        self.compiled
            .get_or_init(|| {
                let mut errors = Vec::new();
                parse::<AgentTable>(&machine.source, &self.file, &mut errors)
                    .map(|table| compile_agent(&self.file, table))
                    .ok_or(errors)
            })
            .as_ref()
            .map_err(Vec::as_slice)
    }

    /// The agent, parsed on first use; `None` when its table does not parse.
    fn agent(&self, machine: &Machine) -> Option<&CompiledAgent> {
        self.compiled(machine).ok()
    }
}

/// The compiled form of an agent table: its phase definitions move into the phases.
fn compile_agent(file: &str, mut table: AgentTable) -> CompiledAgent {
    let mut phases = IndexMap::new();
    for (pname, def) in std::mem::take(&mut table.phases) {
        phases.insert(
            pname.clone(),
            CompiledPhase {
                name: pname,
                def,
                file: file.to_string(),
                compiled: std::cell::OnceCell::new(),
            },
        );
    }
    CompiledAgent {
        file: file.to_string(),
        table,
        phases,
    }
}

/// The loaded, compiled machine.
pub struct Machine {
    /// Where the tables came from.
    pub source: TableSource,
    /// `states.yaml`.
    pub states: StatesTable,
    /// `policy.yaml`.
    pub policy: PolicyTable,
    /// `vars.yaml` as JSON.
    pub vars: serde_json::Value,
    /// Agents by name.
    agents: IndexMap<String, AgentSlot>,
    /// Phase choice guards per state, compiled on first use.
    phase_guards: std::cell::OnceCell<Result<PhaseGuards, Vec<String>>>,
    /// Directive templates by name, compiled on first use.
    directive_templates: std::cell::OnceCell<Result<IndexMap<String, Template>, Vec<String>>>,
    /// Text templates by name.
    pub templates: std::rc::Rc<crate::engine::render::TextTemplates>,
    /// The sandbox everything runs in.
    pub sandbox: Sandbox,
    /// `fragments.yaml`, spliced into phases when they compile.
    pub fragments: FragmentsTable,
    /// `sha256:` of the tables, computed on first use.
    hash: std::cell::OnceCell<String>,
}

/// Compiled phase choice guards (`None` = unguarded) and phases, per state.
pub type PhaseGuards = IndexMap<String, Vec<(Option<AST>, String)>>;

/// Errors found while loading tables, each naming its file.
#[derive(Debug)]
pub struct LoadErrors(pub Vec<String>);

impl std::fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    source: &TableSource,
    file: &str,
    errors: &mut Vec<String>,
) -> Option<T> {
    let Some(text) = source.get(file) else {
        errors.push(format!("{}: missing table file", source.display(file)));
        return None;
    };
    parse_text(&source.display(file), text, source.json(file))
        .map_err(|e| errors.push(e))
        .ok()
}

/// Parses a table from its JSON rendering when there is one (embedded tables), else
/// from its YAML text; an error names the file and the position.
fn parse_text<T: serde::de::DeserializeOwned>(
    display: &str,
    yaml: &str,
    json: Option<&str>,
) -> Result<T, String> {
    if let Some(json) = json
        && let Ok(v) = serde_json::from_str(json)
    {
        return Ok(v);
    }
    serde_yaml::from_str(yaml).map_err(|e| {
        let at = e
            .location()
            .map(|l| format!(":{}:{}", l.line(), l.column()))
            .unwrap_or_default();
        format!("{display}{at}: {e}")
    })
}

/// `value` when no error was collected making it, else the errors.
fn collected<T>(value: T, errors: Vec<String>) -> Result<T, Vec<String>> {
    if errors.is_empty() {
        Ok(value)
    } else {
        Err(errors)
    }
}

/// Parses and compiles one schema table (`display` names it in errors).
fn build_schema(
    engine: &rhai::Engine,
    library: &crate::engine::library::Library,
    display: &str,
    yaml: &str,
    json: Option<&str>,
) -> Result<BuiltSchema, Vec<String>> {
    let table: SchemaTable = parse_text(display, yaml, json).map_err(|e| vec![e])?;
    let mut errors = Vec::new();
    let mut checks = Vec::new();
    let mut sources = Vec::new();
    let names = vec!["value".to_string()];
    for (i, c) in table.checks.iter().enumerate() {
        sources.push(c.when.as_str());
        sources.push(c.message.as_str());
        let guard = crate::engine::sandbox::compile_script(engine, library, &c.when, &names);
        let msg = crate::engine::sandbox::compile_script(
            engine,
            library,
            &format!("`{}`", c.message),
            &names,
        );
        match (guard, msg) {
            (Ok(g), Ok(m)) => checks.push((g, m)),
            (Err(e), _) | (_, Err(e)) => errors.push(format!("{display}: checks[{i}]: {e}")),
        }
    }
    let checks = SchemaChecks::new(checks, &sources);
    let schema = CompiledSchema::compile(table).map_err(|e| vec![format!("{display}: {e}")])?;
    collected(BuiltSchema { schema, checks }, errors)
}

impl Machine {
    /// Loads the machine from `dir`, or the embedded default when `None`.
    ///
    /// Tables from a directory are user-edited: every phase compiles now and every
    /// error is reported at load time. The embedded tables are the ones `cargo test`
    /// and `metaopt machine check` verified, so their agents, schemas and phases are
    /// parsed and compiled on first use: a step pays only for what it runs.
    pub fn load(dir: Option<&std::path::Path>) -> Result<Self, LoadErrors> {
        match dir {
            Some(d) => {
                Self::from_source(TableSource::from_dir(d).map_err(|e| LoadErrors(vec![e]))?)
            }
            None => Self::from_source_with(TableSource::embedded(), false),
        }
    }

    /// Parses and compiles every table of `source`, collecting every error.
    pub fn from_source(source: TableSource) -> Result<Self, LoadErrors> {
        Self::from_source_with(source, true)
    }

    /// Parses `source`. When `eager` (user tables) every agent, schema, phase, guard, rule
    /// body and directive template is parsed and compiled now and cross-table references are
    /// checked, so every error shows at load; otherwise (the embedded tables, checked by
    /// the tests) each is parsed or compiled when first used.
    pub fn from_source_with(source: TableSource, eager: bool) -> Result<Self, LoadErrors> {
        let mut errors = Vec::new();
        let states: Option<StatesTable> = parse(&source, "states.yaml", &mut errors);
        let policy: Option<PolicyTable> = parse(&source, "policy.yaml", &mut errors);
        let fragments: FragmentsTable = if source.get("fragments.yaml").is_some() {
            parse(&source, "fragments.yaml", &mut errors).unwrap_or_default()
        } else {
            IndexMap::new()
        };
        let vars: serde_json::Value = if source.get("vars.yaml").is_some() {
            parse(&source, "vars.yaml", &mut errors).unwrap_or(serde_json::Value::Null)
        } else {
            serde_json::Value::Null
        };
        let mut sandbox = Sandbox::new();
        // Script library first: every script compiled from now on carries the library
        // functions it calls (compiled on first need; all of them now when `eager`).
        let lib_files: Vec<(String, String)> = source
            .files_in("lib/", ".rhai")
            .into_iter()
            .map(|file| {
                let text = source.get(&file).unwrap_or_default().to_string();
                (source.display(&file), text)
            })
            .collect();
        sandbox.library = std::rc::Rc::new(crate::engine::library::Library::new(&lib_files));
        if eager {
            errors.extend(sandbox.library.compile_all(&sandbox.engine));
        }

        let mut shared = SharedTables::default();
        if let Some(st) = &states {
            for (name, def) in &st.states {
                shared
                    .states
                    .insert(name.clone(), (def.status.clone(), def.kind));
            }
        }
        // Schemas are parsed and compiled on first use (a phase reads one or two); the
        // tables of a directory are all built now, so that every error shows at load.
        for file in source.files_in("schemas/", ".yaml") {
            let display = source.display(&file);
            // Embedded texts are borrowed from the binary (no copy).
            let text = source.files().get(&file).cloned().unwrap_or_default();
            let json = source.json(&file);
            let library = sandbox.library.clone();
            let schema = LazySchema::new(Box::new(move |engine: &rhai::Engine| {
                build_schema(engine, &library, &display, &text, json)
            }));
            if eager && let Err(e) = schema.get(&sandbox.engine) {
                errors.extend(e.iter().cloned());
            }
            shared.schemas.insert(stem(&file), schema);
        }
        let template_sources: IndexMap<String, String> = source
            .files_in("templates/", ".md")
            .into_iter()
            .map(|file| {
                (
                    stem(&file),
                    source.get(&file).unwrap_or_default().to_string(),
                )
            })
            .collect();
        let templates = std::rc::Rc::new(crate::engine::render::TextTemplates::new(
            template_sources,
            sandbox.library.clone(),
        ));
        if eager {
            for (name, e) in templates.compile_all(&sandbox.engine) {
                errors.push(format!(
                    "{}: {e}",
                    source.display(&format!("templates/{name}.md"))
                ));
            }
        }
        *sandbox.shared.borrow_mut() = shared;
        crate::engine::render::register(&mut sandbox, &templates);

        // Agent tables: only `agent:` and `short_name:` are read now (the embedded
        // tables); the rest when the agent is first asked for. A directory's tables are
        // parsed whole now, so that every error shows at load.
        let mut agents: IndexMap<String, AgentSlot> = IndexMap::new();
        for file in source.files_in("agents/", ".yaml") {
            let (name, slot) = if eager {
                let Some(table) = parse::<AgentTable>(&source, &file, &mut errors) else {
                    continue;
                };
                let (name, short) = (table.agent.clone(), table.short_name.clone());
                (name, AgentSlot::new(&file, short, Some(table)))
            } else {
                let Some(header) = parse::<AgentHeader>(&source, &file, &mut errors) else {
                    continue;
                };
                (header.agent, AgentSlot::new(&file, header.short_name, None))
            };
            if agents.contains_key(&name) {
                errors.push(format!(
                    "{}: agent `{name}` is defined twice",
                    source.display(&file),
                ));
            }
            agents.insert(name, slot);
        }

        let (Some(states), Some(policy)) = (states, policy) else {
            return Err(LoadErrors(errors));
        };
        let machine = Machine {
            source,
            states,
            policy,
            vars,
            agents,
            phase_guards: std::cell::OnceCell::new(),
            directive_templates: std::cell::OnceCell::new(),
            templates,
            sandbox,
            fragments,
            hash: std::cell::OnceCell::new(),
        };
        if eager {
            // Embedded tables were checked by the tests: these run for user tables only.
            errors.extend(machine.reference_errors());
            if let Err(e) = machine.phase_guards() {
                errors.extend(e.iter().cloned());
            }
            if let Err(e) = machine.directive_templates() {
                errors.extend(e.iter().cloned());
            }
            for agent in machine.agents() {
                for phase in agent.phases.values() {
                    match phase.steps(&machine) {
                        Err(e) => errors.extend(e.iter().cloned()),
                        Ok(steps) => {
                            for step in steps {
                                if let CompiledStep::Rule(rule) = step
                                    && let Err(e) = rule.body(&machine, phase)
                                {
                                    errors.extend(e.iter().cloned());
                                }
                            }
                        }
                    }
                }
            }
        }
        if errors.is_empty() {
            Ok(machine)
        } else {
            Err(LoadErrors(errors))
        }
    }

    /// Errors that make the machine unrunnable: references to unknown states, agents, phases.
    fn reference_errors(&self) -> Vec<String> {
        let mut errors = Vec::new();
        let states_file = self.source.display("states.yaml");
        if !self.states.states.contains_key(&self.states.initial) {
            errors.push(format!(
                "{states_file}: initial state `{}` is not defined",
                self.states.initial
            ));
        }
        for (name, def) in &self.states.states {
            if let Some(agent) = &def.agent {
                match self.agents.get(agent).and_then(|s| s.agent(self)) {
                    None => errors.push(format!(
                        "{states_file}: states.{name}.agent: unknown agent `{agent}`{}",
                        suggest(agent, self.agents.keys())
                    )),
                    Some(a) => {
                        for choice in &def.phases {
                            if !a.phases.contains_key(&choice.phase) {
                                errors.push(format!(
                                    "{states_file}: states.{name}.phases: agent `{agent}` has no phase `{}`{}",
                                    choice.phase,
                                    suggest(&choice.phase, a.phases.keys())
                                ));
                            }
                        }
                    }
                }
            }
        }
        for agent in self.agents() {
            for phase in agent.phases.values() {
                let mut rules = Vec::new();
                raw_rules(&phase.def.steps, &self.fragments, &mut rules, 0);
                for rule in rules {
                    if let (Some(name), Some(next)) = (&rule.name, &rule.next)
                        && !next.starts_with('=')
                        && !self.states.states.contains_key(next)
                    {
                        errors.push(format!(
                            "{}: phases.{}.{}: next: unknown state `{next}`{}",
                            self.source.display(&agent.file),
                            phase.name,
                            name,
                            suggest(next, self.states.states.keys())
                        ));
                    }
                }
            }
        }
        errors
    }

    /// The status a machine state implies.
    pub fn status_of(&self, state: &str) -> Option<&str> {
        self.states.states.get(state).map(|d| d.status.as_str())
    }

    /// True for terminal states.
    pub fn is_terminal(&self, state: &str) -> bool {
        self.states
            .states
            .get(state)
            .is_some_and(|d| d.kind == StateKind::Terminal)
    }

    /// The agent whose `short_name` or name is `name`.
    pub fn agent(&self, name: &str) -> Option<&CompiledAgent> {
        self.slot(name)?.agent(self)
    }

    /// Why the agent named `name` (or by its `short_name`) cannot be used: the errors its
    /// table gave when it was parsed on first use; `None` when it loads or is unknown.
    pub fn agent_problem(&self, name: &str) -> Option<String> {
        let errors = self.slot(name)?.compiled(self).err()?;
        Some(errors.join("; "))
    }

    /// The slot of the agent named `name`, or whose `short_name` is `name`.
    fn slot(&self, name: &str) -> Option<&AgentSlot> {
        self.agents
            .get(name)
            .or_else(|| self.agents.values().find(|a| a.short_name == name))
    }

    /// Every agent, in file order (each parsed now if it was not yet).
    pub fn agents(&self) -> impl Iterator<Item = &CompiledAgent> {
        self.agents.values().filter_map(|slot| slot.agent(self))
    }

    /// The top-level fields of documents read with `schema` that every phase of machine
    /// state `state` leaves unread (empty: a state without phases, or unknown).
    pub fn unread_in_state(&self, state: &str, schema: &str) -> Vec<String> {
        let mut common: Option<Vec<String>> = None;
        for fields in self.unread_by_phase(state, schema).into_values() {
            common = Some(match common {
                None => fields,
                Some(c) => c.into_iter().filter(|f| fields.contains(f)).collect(),
            });
        }
        common.unwrap_or_default()
    }

    /// For each phase of machine state `state`, in the states table's order, the
    /// top-level fields of documents read with `schema` that it leaves unread.
    pub fn unread_by_phase(&self, state: &str, schema: &str) -> IndexMap<String, Vec<String>> {
        let Some(def) = self.states.states.get(state) else {
            return IndexMap::new();
        };
        let Some(agent) = def.agent.as_deref().and_then(|a| self.agent(a)) else {
            return IndexMap::new();
        };
        def.phases
            .iter()
            .map(|choice| {
                let fields = agent
                    .phases
                    .get(&choice.phase)
                    .and_then(|p| p.def.unread.get(schema))
                    .cloned()
                    .unwrap_or_default();
                (choice.phase.clone(), fields)
            })
            .collect()
    }

    /// The names of the agents, in file order.
    pub fn agent_names(&self) -> impl Iterator<Item = &String> {
        self.agents.keys()
    }

    /// The phase choice guards of every state (compiled on first use: a phase run
    /// alone never needs them).
    pub fn phase_guards(&self) -> Result<&PhaseGuards, &[String]> {
        let compiled = self.phase_guards.get_or_init(|| {
            let mut errors = Vec::new();
            let mut all = IndexMap::new();
            for (name, def) in &self.states.states {
                let mut guards = Vec::new();
                for choice in &def.phases {
                    let ast = match &choice.when {
                        None => None,
                        Some(src) => match self.sandbox.compile(src, &phase_choice_names()) {
                            Ok(a) => Some(a),
                            Err(e) => {
                                errors.push(format!(
                                    "{}: states.{name}.phases[{}]: guard does not compile: {e}",
                                    self.source.display("states.yaml"),
                                    choice.phase
                                ));
                                None
                            }
                        },
                    };
                    guards.push((ast, choice.phase.clone()));
                }
                all.insert(name.clone(), guards);
            }
            collected(all, errors)
        });
        compiled.as_ref().map_err(Vec::as_slice)
    }

    /// The directive templates of `policy.yaml` (compiled on first use).
    pub fn directive_templates(&self) -> Result<&IndexMap<String, Template>, &[String]> {
        let compiled = self.directive_templates.get_or_init(|| {
            let base: Vec<String> = BASE_NAMES.iter().map(|s| s.to_string()).collect();
            let mut errors = Vec::new();
            let mut all = IndexMap::new();
            for (name, map) in &self.policy.directive_templates {
                let yaml = Yaml::Mapping(
                    map.iter()
                        .map(|(k, v)| (Yaml::String(k.clone()), v.clone()))
                        .collect(),
                );
                match Template::compile(&self.sandbox, &yaml, &base) {
                    Ok(t) => {
                        all.insert(name.clone(), t);
                    }
                    Err(e) => errors.push(format!(
                        "{}: directive_templates.{name}: {e}",
                        self.source.display("policy.yaml")
                    )),
                }
            }
            collected(all, errors)
        });
        compiled.as_ref().map_err(Vec::as_slice)
    }

    /// Hash of the tables in force.
    pub fn hash(&self) -> String {
        // Hashed once: the journal asks on every phase a step applies.
        self.hash.get_or_init(|| self.source.hash()).clone()
    }
}

/// Every step of `steps` with fragments spliced in (uncompiled).
fn raw_rules<'a>(
    steps: &'a [StepDef],
    fragments: &'a FragmentsTable,
    out: &mut Vec<&'a StepDef>,
    depth: usize,
) {
    for step in steps {
        match step.use_fragment.as_ref().and_then(|f| fragments.get(f)) {
            Some(inner) if depth < 8 => raw_rules(inner, fragments, out, depth + 1),
            _ => out.push(step),
        }
    }
}

/// Names phase-choice guards see.
pub fn phase_choice_names() -> Vec<String> {
    let mut n: Vec<String> = BASE_NAMES.iter().map(|s| s.to_string()).collect();
    n.push("state".into());
    n
}

/// Expands a YAML merge key (`<<: *anchor`): anchor entries first, explicit keys win.
pub(crate) fn expand_merge_key(map: &IndexMap<String, Yaml>) -> IndexMap<String, Yaml> {
    let mut out = IndexMap::new();
    if let Some(Yaml::Mapping(base)) = map.get("<<") {
        for (k, v) in base {
            if let Some(k) = k.as_str() {
                out.insert(k.to_string(), v.clone());
            }
        }
    }
    for (k, v) in map {
        if k != "<<" {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

fn n_names(names: &[String]) -> &[String] {
    names
}

fn stem(file: &str) -> String {
    let name = file.rsplit('/').next().unwrap_or(file);
    name.split('.').next().unwrap_or(name).to_string()
}

/// ` (did you mean `x`?)` when a close name exists.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a String>) -> String {
    let mut best: Option<(usize, &String)> = None;
    for c in candidates {
        let d = edit_distance(name, c);
        if d <= 3.max(name.len() / 4) && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, c));
        }
    }
    best.map(|(_, c)| format!(" (did you mean `{c}`?)"))
        .unwrap_or_default()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(ca != *cb))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

struct Ctx<'a> {
    source: &'a TableSource,
    file: &'a str,
    phase: &'a str,
    sandbox: &'a Sandbox,
    policy: Option<&'a PolicyTable>,
}

impl Ctx<'_> {
    fn at(&self, what: &str) -> String {
        format!(
            "{}: phases.{}.{what}",
            self.source.display(self.file),
            self.phase
        )
    }
    fn tpl(
        &self,
        y: &Yaml,
        names: &[String],
        what: &str,
        errors: &mut Vec<String>,
    ) -> Option<Template> {
        match Template::compile(self.sandbox, y, names) {
            Ok(t) => Some(t),
            Err(e) => {
                errors.push(format!("{}: {e}", self.at(what)));
                None
            }
        }
    }
    /// A list (one template per item) or a single template; `~` is no template.
    fn tpls(
        &self,
        y: &Yaml,
        names: &[String],
        what: &str,
        errors: &mut Vec<String>,
    ) -> Vec<Template> {
        match y {
            Yaml::Null => vec![],
            Yaml::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(i, y)| self.tpl(y, names, &format!("{what}[{i}]"), errors))
                .collect(),
            other => self.tpl(other, names, what, errors).into_iter().collect(),
        }
    }
    fn lets(
        &self,
        map: &IndexMap<String, Yaml>,
        names: &mut Vec<String>,
        what: &str,
        errors: &mut Vec<String>,
    ) -> Vec<(String, Template)> {
        let mut out = Vec::new();
        for (k, v) in map {
            if let Some(t) = self.tpl(v, names, &format!("{what}.let.{k}"), errors) {
                out.push((k.clone(), t));
            }
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
        out
    }
    /// Directive items: `{template: name, ...overrides}` merge the named template.
    fn directive(
        &self,
        y: &Yaml,
        names: &[String],
        what: &str,
        errors: &mut Vec<String>,
    ) -> Option<Template> {
        let merged = match y {
            Yaml::Mapping(m) if m.contains_key("template") => {
                let tname = m.get("template").and_then(Yaml::as_str).unwrap_or_default();
                let Some(base) = self.policy.and_then(|p| p.directive_templates.get(tname)) else {
                    errors.push(format!(
                        "{}: unknown directive template `{tname}`",
                        self.at(what)
                    ));
                    return None;
                };
                let mut out = serde_yaml::Mapping::new();
                for (k, v) in base {
                    out.insert(Yaml::String(k.clone()), v.clone());
                }
                for (k, v) in m {
                    if k.as_str() != Some("template") {
                        out.insert(k.clone(), v.clone());
                    }
                }
                Yaml::Mapping(out)
            }
            other => other.clone(),
        };
        self.tpl(&merged, names, what, errors)
    }
}

fn compile_steps(
    ctx: &Ctx,
    defs: &[StepDef],
    fragments: &FragmentsTable,
    names: &mut Vec<String>,
    out: &mut Vec<CompiledStep>,
    errors: &mut Vec<String>,
    depth: usize,
) {
    for (i, step) in defs.iter().enumerate() {
        if let Some(fragment) = &step.use_fragment {
            match fragments.get(fragment) {
                Some(steps) if depth < 8 => {
                    compile_steps(ctx, steps, fragments, names, out, errors, depth + 1)
                }
                Some(_) => errors.push(format!(
                    "{}: fragments nest too deeply",
                    ctx.at(&format!("steps[{i}]"))
                )),
                None => errors.push(format!(
                    "{}: unknown fragment `{fragment}`{}",
                    ctx.at(&format!("steps[{i}]")),
                    suggest(fragment, fragments.keys())
                )),
            }
            continue;
        }
        let Some(name) = &step.name else {
            let what = format!("steps[{i}]");
            let lets = step
                .bindings
                .as_ref()
                .map(|b| ctx.lets(b, names, &what, errors))
                .unwrap_or_default();
            let output = step
                .output
                .iter()
                .filter_map(|(k, v)| {
                    ctx.tpl(v, names, &format!("{what}.output.{k}"), errors)
                        .map(|t| (k.clone(), t))
                })
                .collect();
            let warnings = step
                .warnings
                .as_ref()
                .and_then(|w| ctx.tpl(w, names, &format!("{what}.warnings"), errors));
            out.push(CompiledStep::Bind {
                lets,
                output,
                warnings,
            });
            continue;
        };
        let what = name.as_str();
        let when = step
            .when
            .as_ref()
            .and_then(|src| match ctx.sandbox.compile(src, names) {
                Ok(a) => Some((a, src.clone())),
                Err(e) => {
                    errors.push(format!("{}: guard does not compile: {e}", ctx.at(what)));
                    None
                }
            });
        out.push(CompiledStep::Rule(Box::new(CompiledRule {
            name: name.clone(),
            when,
            body: std::cell::OnceCell::new(),
            source: Box::new((step.clone(), names.clone())),
        })));
    }
}

/// Compiles the body of the rule `what` (see [`CompiledRule::body`]); `names` are the
/// names in scope before its `let`.
fn compile_body(
    ctx: &Ctx,
    what: &str,
    step: &StepDef,
    names: &[String],
    errors: &mut Vec<String>,
) -> RuleBody {
    let mut local = names.to_vec();
    let lets = step
        .bindings
        .as_ref()
        .map(|b| ctx.lets(b, &mut local, what, errors))
        .unwrap_or_default();
    let n = &local;
    let error = step.error.as_ref().and_then(|e| {
        let s = ctx.tpl(&e.summary, n, &format!("{what}.error.summary"), errors)?;
        let r = ctx.tpl(&e.recovery, n, &format!("{what}.error.recovery"), errors)?;
        Some((s, r))
    });
    let paths = |column: &str, entries: &IndexMap<String, Yaml>, errors: &mut Vec<String>| {
        entries
            .iter()
            .filter_map(|(k, v)| {
                let path: Vec<String> = k.split('.').map(str::to_string).collect();
                ctx.tpl(v, n, &format!("{what}.{column}.{k}"), errors)
                    .map(|t| (path, t))
            })
            .collect::<Vec<_>>()
    };
    let set = paths("set", &expand_merge_key(&step.set), errors);
    let append = paths("append", &expand_merge_key(&step.append), errors);
    RuleBody {
        error,
        next: step.next.clone().filter(|n| !n.starts_with('=')),
        next_expr: step
            .next
            .as_ref()
            .filter(|n| n.starts_with('='))
            .and_then(|n| {
                ctx.tpl(
                    &Yaml::String(n.clone()),
                    n_names(&local),
                    &format!("{what}.next"),
                    errors,
                )
            }),
        new_state: step
            .new_state
            .as_ref()
            .and_then(|y| ctx.tpl(y, n, &format!("{what}.new_state"), errors)),
        set,
        append,
        output: step
            .output
            .iter()
            .filter_map(|(k, v)| {
                ctx.tpl(v, n, &format!("{what}.output.{k}"), errors)
                    .map(|t| (k.clone(), t))
            })
            .collect(),
        directives: match &step.directives {
            Yaml::Sequence(items) => items
                .iter()
                .enumerate()
                .filter_map(|(j, y)| {
                    ctx.directive(y, n, &format!("{what}.directives[{j}]"), errors)
                })
                .collect(),
            other => ctx.tpls(other, n, &format!("{what}.directives"), errors),
        },
        launch: ctx.tpls(&step.launch, n, &format!("{what}.launch"), errors),
        writes: ctx.tpls(&step.writes, n, &format!("{what}.writes"), errors),
        consume: ctx.tpls(&step.consume, n, &format!("{what}.consume"), errors),
        summary: step
            .summary
            .as_ref()
            .and_then(|y| ctx.tpl(y, n, &format!("{what}.summary"), errors)),
        warnings: step
            .warnings
            .as_ref()
            .and_then(|y| ctx.tpl(y, n, &format!("{what}.warnings"), errors)),
        recovery: step
            .recovery
            .as_ref()
            .and_then(|y| ctx.tpl(y, n, &format!("{what}.recovery"), errors)),
        preserve_state: step.preserve_state,
        lets,
    }
}

#[cfg(test)]
mod lazy_tests {
    use super::*;

    /// The embedded tables with `agents/orchestrator.yaml` replaced by `text`, loaded the
    /// lazy way (as the embedded tables are).
    fn lazily_with_orchestrator(text: &str) -> Machine {
        let source = TableSource::embedded().with_file("agents/orchestrator.yaml", text.into());
        Machine::from_source_with(source, false).expect("the other tables load")
    }

    #[test]
    fn an_agent_table_parsed_on_first_use_reports_its_errors_when_asked_for() {
        let original = TableSource::embedded()
            .get("agents/orchestrator.yaml")
            .expect("embedded")
            .to_string();
        let broken = original.replace("phases:", "phases:\n  gate: [not, a, phase]\n  x:");
        let m = lazily_with_orchestrator(&broken);
        let name = "metaopt-orchestrator";
        let problem = m.agent_problem(name).expect("a parse error");
        assert!(problem.contains("agents/orchestrator.yaml"), "{problem}");
        assert!(m.agent(name).is_none());
        let err = crate::engine::phase::lookup(&m, name, Some("gate")).unwrap_err();
        assert!(err.0.contains("cannot be loaded"), "{}", err.0);
        // Intact, it loads on first use.
        let m = lazily_with_orchestrator(&original);
        assert!(m.agent_problem(name).is_none());
        assert!(m.agent(name).is_some_and(|a| a.phases.contains_key("gate")));
    }

    #[test]
    fn a_rule_body_is_compiled_when_the_rule_fires_and_reports_its_errors() {
        let original = TableSource::embedded()
            .get("agents/orchestrator.yaml")
            .expect("embedded")
            .to_string();
        let broken = original.replace(
            "summary: campaign still valid",
            "summary: = campaign still valid (",
        );
        assert_ne!(broken, original);
        let m = lazily_with_orchestrator(&broken);
        let agent = m.agent("metaopt-orchestrator").expect("parsed");
        let phase = &agent.phases["gate"];
        let steps = phase.steps(&m).expect("the guards compile");
        let rules: Vec<&CompiledRule> = steps
            .iter()
            .filter_map(|s| match s {
                CompiledStep::Rule(r) => Some(&**r),
                CompiledStep::Bind { .. } => None,
            })
            .collect();
        let last = rules.last().expect("rules");
        assert_eq!(last.name, "campaign-still-valid");
        assert!(last.body.get().is_none(), "not compiled before it fires");
        let errors = last.body(&m, phase).unwrap_err();
        assert!(
            errors[0].contains("agents/orchestrator.yaml")
                && errors[0].contains("campaign-still-valid.summary"),
            "{errors:?}"
        );
        assert!(rules[0].body(&m, phase).is_ok(), "the other bodies compile");
    }
}
