//! `metaopt step` and `metaopt run`: drive a campaign in a project
//! directory, one persisted step at a time.

use crate::exec::directives::ExecutorKind;
use crate::exec::step::{StepOptions, Turn, step};
use crate::machine::Machine;
use clap::Args;
use std::path::{Path, PathBuf};

/// Flags shared by `step` and `run`.
#[derive(Debug, Args, Clone)]
pub struct DriveArgs {
    /// Project root (holds ml_metaopt_campaign.yaml).
    #[arg(long, default_value = ".")]
    pub project: PathBuf,
    /// Who executes backend directives.
    #[arg(long, value_enum, default_value_t = ExecutorKind::Host)]
    pub executor: ExecutorKind,
    /// Answer worker launch requests with deterministic simulated workers.
    #[arg(long)]
    pub simulate_workers: bool,
    /// Seed of the simulated backend and workers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Models the host offers, comma-separated.
    #[arg(long, env = "METAOPT_AVAILABLE_MODELS", value_delimiter = ',')]
    pub available_models: Vec<String>,
    /// Print the machine-readable turn.
    #[arg(long)]
    pub json: bool,
}

impl DriveArgs {
    /// Step options these flags describe.
    pub fn options(&self) -> StepOptions {
        StepOptions {
            executor: self.executor,
            simulate_workers: self.simulate_workers,
            seed: self.seed,
            available_models: super::offered_models(&self.available_models),
        }
    }
}

/// Flags of `metaopt run`.
#[derive(Debug, Args, Clone)]
pub struct RunArgs {
    /// Shared flags.
    #[command(flatten)]
    pub drive: DriveArgs,
    /// Stop after this many steps.
    #[arg(long, default_value_t = 1000)]
    pub max_steps: usize,
    /// Seconds to pause between polls of a running sweep.
    #[arg(long, default_value_t = 0.0)]
    pub poll_interval: f64,
}

/// Enters the project directory.
pub fn enter(project: &Path) -> Result<(), String> {
    std::env::set_current_dir(project)
        .map_err(|e| format!("{}: cannot enter project: {e}", project.display()))
}

/// One line per phase: `STATE --agent.phase[rule]--> NEXT  summary`.
pub fn describe(turn: &Turn) -> String {
    let mut lines = Vec::new();
    for p in &turn.phases {
        let summary = p
            .summary
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| p.summary.to_string());
        lines.push(format!(
            "{} --{}.{}[{}]--> {}  {}",
            p.state, p.agent, p.phase, p.rule, p.next_state, summary
        ));
        for v in &p.violations {
            lines.push(format!("    protocol violation: {v}"));
        }
    }
    if turn.phases.is_empty() {
        lines.push(format!(
            "{}: campaign is {}; nothing to do",
            turn.machine_state, turn.status
        ));
    }
    for w in &turn.workers {
        lines.push(format!(
            "    launch {} ({}) task {} -> {}",
            w.worker, w.model, w.task_file, w.result_file
        ));
    }
    for d in &turn.directives_for_host {
        lines.push(format!(
            "    host directive {}: {}",
            d["action"], d["result_file"]
        ));
    }
    lines.join("\n")
}

fn print_turn(turn: &Turn, json: bool) {
    if json {
        crate::say!("{}", serde_json::to_string_pretty(turn).unwrap_or_default());
    } else {
        crate::say!("{}", describe(turn));
    }
}

/// `metaopt step`.
pub fn run_step(machine_dir: Option<&Path>, args: DriveArgs) -> i32 {
    let machine = match super::load_machine(machine_dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if let Err(e) = enter(&args.project) {
        crate::tell!("error: {e}");
        return super::EXIT_USAGE;
    }
    crate::engine::exit::leave_step_handoffs();
    match step(machine, &args.options()) {
        Ok(turn) => {
            print_turn(&turn, args.json);
            0
        }
        Err(e) => {
            crate::tell!("error: {e}");
            1
        }
    }
}

/// True when the host must act before another step can progress.
pub fn host_must_act(turn: &Turn) -> bool {
    !turn.workers.is_empty() || !turn.directives_for_host.is_empty()
}

/// Steps until the host must act, a terminal state, or the step limit; calls `on_turn` after each.
pub fn drive(
    machine: &Machine,
    opts: &StepOptions,
    max_steps: usize,
    pause: f64,
    mut on_turn: impl FnMut(&Turn),
) -> Result<Option<Turn>, String> {
    let mut last = None;
    for _ in 0..max_steps {
        let turn = step(machine, opts)?;
        on_turn(&turn);
        let stop = turn.done || host_must_act(&turn);
        let polling = turn.phases.last().is_some_and(|p| p.next_state == p.state);
        last = Some(turn);
        if stop {
            break;
        }
        if polling && pause > 0.0 {
            std::thread::sleep(std::time::Duration::from_secs_f64(pause));
        }
    }
    Ok(last)
}

/// `metaopt run`.
pub fn run_run(machine_dir: Option<&Path>, args: RunArgs) -> i32 {
    let machine = match super::load_machine(machine_dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    if let Err(e) = enter(&args.drive.project) {
        crate::tell!("error: {e}");
        return super::EXIT_USAGE;
    }
    let json = args.drive.json;
    match drive(
        machine,
        &args.drive.options(),
        args.max_steps,
        args.poll_interval,
        |t| print_turn(t, json),
    ) {
        Ok(_) => 0,
        Err(e) => {
            crate::tell!("error: {e}");
            1
        }
    }
}
