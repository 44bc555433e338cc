//! `metaopt agent <control-agent> [--mode PHASE] …`: one control-agent
//! phase on explicit paths, with the flags hosts already pass to the
//! original handoff scripts. The handoff goes to `--output` and stdout; the
//! exit code is 0 for every outcome the contract describes.

use crate::engine::effects;
use crate::engine::handoff::print_outcome;
use crate::engine::phase::{PhaseArgs, PhaseOutcome, lookup, run_phase};
use crate::machine::Machine;
use crate::workspace::fsio::write_atomic;
use clap::Args;
use std::path::{Path, PathBuf};

/// Flags of `metaopt agent`.
#[derive(Debug, Args, Clone, Default)]
pub struct AgentArgs {
    /// Control agent name (e.g. `metaopt-background-control`).
    pub agent: String,
    /// Phase of agents that have several.
    #[arg(long)]
    pub mode: Option<String>,
    /// Campaign file.
    #[arg(long, default_value = "ml_metaopt_campaign.yaml")]
    pub campaign_path: String,
    /// State file.
    #[arg(long, default_value = ".ml-metaopt/state.json")]
    pub state_path: String,
    /// LOAD_CAMPAIGN handoff to read.
    #[arg(long, default_value = ".ml-metaopt/handoffs/load_campaign.latest.json")]
    pub load_handoff: String,
    /// AGENTS.md holding the resume hook.
    #[arg(long, default_value = "AGENTS.md")]
    pub agents_path: String,
    /// Worker skills manifest.
    #[arg(long, default_value = "")]
    pub skills_manifest: String,
    /// Task files directory.
    #[arg(long, default_value = ".ml-metaopt/tasks")]
    pub tasks_dir: String,
    /// Worker results directory.
    #[arg(long, default_value = ".ml-metaopt/worker-results")]
    pub worker_results_dir: String,
    /// Executor events directory.
    #[arg(long, default_value = ".ml-metaopt/executor-events")]
    pub executor_events_dir: String,
    /// Preflight readiness artifact.
    #[arg(long, default_value = ".ml-metaopt/preflight-readiness.json")]
    pub preflight_path: String,
    /// Where to write the handoff.
    #[arg(long)]
    pub output: Option<PathBuf>,
    /// Write the new state to the state file.
    #[arg(long)]
    pub apply_state: bool,
    /// Secondary invocation: force the recommendation to null.
    #[arg(long)]
    pub secondary: bool,
    /// Models the host offers, comma-separated (default: first of each class).
    #[arg(long, env = "METAOPT_AVAILABLE_MODELS", value_delimiter = ',')]
    pub available_models: Vec<String>,
}

impl AgentArgs {
    /// The phase arguments these flags describe.
    pub fn phase_args(&self) -> PhaseArgs {
        PhaseArgs {
            campaign_path: self.campaign_path.clone(),
            state_path: self.state_path.clone(),
            load_handoff: self.load_handoff.clone(),
            agents_path: self.agents_path.clone(),
            skills_manifest: self.skills_manifest.clone(),
            tasks_dir: self.tasks_dir.clone(),
            worker_results_dir: self.worker_results_dir.clone(),
            executor_events_dir: self.executor_events_dir.clone(),
            preflight_path: self.preflight_path.clone(),
            secondary: self.secondary,
            apply_state: self.apply_state,
            available_models: super::offered_models(&self.available_models),
        }
    }
}

/// Runs the phase and applies its effects as `metaopt agent` does: files first, then the
/// handoff, then (with `--apply-state`) the state and consumed results.
/// Returns the outcome and the handoff's text.
pub fn execute(machine: &Machine, args: &AgentArgs) -> Result<(PhaseOutcome, String), String> {
    let (agent, phase) =
        lookup(machine, &args.agent, args.mode.as_deref()).map_err(|e| e.to_string())?;
    let outcome = run_phase(machine, agent, phase, &args.phase_args(), &crate::now());
    effects::apply_writes(&outcome.writes)?;
    let apply = args.apply_state && outcome.new_state.is_some();
    let (handoff, state_text) = print_outcome(&outcome, apply)
        .map_err(|e| format!("{}: cannot write state: {e}", args.state_path))?;
    if let Some(out) = &args.output {
        write_atomic(out, handoff.text.as_bytes())
            .map_err(|e| format!("{}: cannot write handoff: {e}", out.display()))?;
    }
    if let Some(state_text) = state_text {
        crate::engine::doc::write_state_text(&args.state_path, &state_text.text)?;
        effects::consume(&outcome.consumes)?;
    }
    Ok((outcome, handoff.text))
}

/// `metaopt agent`.
pub fn run(machine_dir: Option<&Path>, args: AgentArgs) -> i32 {
    crate::engine::timing::mark("process start");
    let machine = match super::load_machine(machine_dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    crate::engine::timing::mark("load tables");
    crate::engine::exit::leave_phase_scopes();
    match execute(machine, &args) {
        Ok((outcome, text)) => {
            crate::engine::timing::mark("write files");
            crate::say!("{}", text.trim_end());
            crate::engine::timing::mark("print handoff");
            // The process ends here: its memory goes back without a destructor walk.
            crate::engine::exit::leave(outcome);
            0
        }
        Err(e) => {
            crate::tell!("error: {e}");
            super::EXIT_USAGE
        }
    }
}
