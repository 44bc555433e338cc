//! Command-line surface. Clap types stay here; each subcommand lives in its
//! own file and returns an exit code.

pub mod agent;
pub mod demo;
pub mod history;
pub mod machine;
pub mod preflight;
pub mod status;
pub mod step;
pub mod test;
pub mod validate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Exit code for usage errors and unloadable inputs.
pub const EXIT_USAGE: i32 = 2;

/// `metaopt`: a table-driven runtime for ml-metaoptimization campaigns.
#[derive(Debug, Parser)]
#[command(name = "metaopt", version, about)]
pub struct Cli {
    /// Use the machine tables in DIR instead of the embedded ones.
    #[arg(long, global = true, env = "METAOPT_MACHINE", value_name = "DIR")]
    pub machine: Option<PathBuf>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one control-agent phase on explicit paths and write its handoff.
    Agent(agent::AgentArgs),
    /// Validate a campaign file and print every issue.
    Validate(validate::ValidateArgs),
    /// One orchestrator step in a project directory.
    Step(step::DriveArgs),
    /// Step until the host must act, a terminal state, or --max-steps.
    Run(step::RunArgs),
    /// Where a campaign stands.
    Status(status::StatusArgs),
    /// Run the bundled example campaign offline to a terminal state.
    Demo(demo::DemoArgs),
    /// The audit journal of a project.
    History(history::HistoryArgs),
    /// The one-shot readiness check LOAD_CAMPAIGN gates on.
    Preflight(preflight::PreflightArgs),
    /// Review tools for the machine tables.
    Machine(machine::MachineArgs),
    /// Run scenario files against the machine.
    Test(test::TestArgs),
}

/// Parses the process arguments and runs the command.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    run(cli)
}

/// Loads the machine or prints every load error. The machine lives until the process
/// exits (leaked on purpose: dropping hundreds of compiled scripts costs more than a step).
pub fn load_machine(
    dir: Option<&std::path::Path>,
) -> Result<&'static crate::machine::Machine, i32> {
    match crate::machine::Machine::load(dir) {
        Ok(m) => Ok(Box::leak(Box::new(m))),
        Err(e) => {
            crate::tell!("error: the machine tables do not load:");
            for line in &e.0 {
                crate::tell!("  {line}");
            }
            Err(EXIT_USAGE)
        }
    }
}

/// Loads the machine and enters the project directory (exit code on failure).
pub fn open_project(
    machine_dir: Option<&std::path::Path>,
    project: &std::path::Path,
) -> Result<&'static crate::machine::Machine, i32> {
    let machine = load_machine(machine_dir)?;
    step::enter(project).map_err(|e| {
        crate::tell!("error: {e}");
        EXIT_USAGE
    })?;
    Ok(machine)
}

/// Host-offered models from a comma list, empty entries dropped.
pub fn offered_models(list: &[String]) -> Vec<String> {
    list.iter().filter(|m| !m.is_empty()).cloned().collect()
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> i32 {
    let machine_dir = cli.machine.as_deref();
    match cli.command {
        Command::Agent(a) => agent::run(machine_dir, a),
        Command::Validate(v) => validate::run(machine_dir, v),
        Command::Step(a) => step::run_step(machine_dir, a),
        Command::Run(a) => step::run_run(machine_dir, a),
        Command::Status(a) => status::run(machine_dir, a),
        Command::Demo(a) => demo::run(machine_dir, a),
        Command::History(a) => history::run(machine_dir, a),
        Command::Preflight(a) => preflight::run(machine_dir, a),
        Command::Machine(a) => machine::run(machine_dir, a),
        Command::Test(a) => test::run(machine_dir, a),
    }
}
