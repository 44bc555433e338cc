//! `metaopt demo`: the main job on the bundled example. Copies the example
//! campaign into a fresh directory, writes a READY preflight artifact, and
//! drives the campaign offline to a terminal state with simulated workers
//! and the simulated backend, printing every transition.

use crate::exec::directives::ExecutorKind;
use crate::exec::step::{StepOptions, layout};
use clap::Args;
use std::path::{Path, PathBuf};

/// The bundled example campaign.
pub const EXAMPLE_CAMPAIGN: &str = include_str!("../../examples/ml_metaopt_campaign.example.yaml");

/// Flags of `metaopt demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory to run in (default: a new temporary directory, kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Seed of the simulation.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop after this many steps.
    #[arg(long, default_value_t = 2000)]
    pub max_steps: usize,
    /// Print only the final summary.
    #[arg(long)]
    pub quiet: bool,
}

/// `metaopt demo`.
pub fn run(machine_dir: Option<&Path>, args: DemoArgs) -> i32 {
    let machine = match super::load_machine(machine_dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let dir = match &args.dir {
        Some(d) => d.clone(),
        None => match tempfile::Builder::new().prefix("metaopt-demo-").tempdir() {
            Ok(t) => t.keep(),
            Err(e) => {
                crate::tell!("error: cannot create a temporary directory: {e}");
                return 1;
            }
        },
    };
    if let Err(e) = std::fs::create_dir_all(&dir)
        .map_err(|e| e.to_string())
        .and_then(|_| super::step::enter(&dir))
    {
        crate::tell!("error: {}: {e}", dir.display());
        return super::EXIT_USAGE;
    }
    if Path::new(layout(machine, "state")).exists() {
        crate::tell!(
            "error: {} already holds a campaign state; pass an empty --dir",
            dir.display()
        );
        return super::EXIT_USAGE;
    }
    let campaign = layout(machine, "campaign").to_string();
    if let Err(e) = std::fs::write(&campaign, EXAMPLE_CAMPAIGN) {
        crate::tell!("error: {campaign}: {e}");
        return 1;
    }
    if let Err(e) = crate::exec::preflight::write_simulated_ready(machine) {
        crate::tell!("error: {e}");
        return 1;
    }
    crate::say!("metaopt demo in {} (seed {})", dir.display(), args.seed);
    let opts = StepOptions {
        executor: ExecutorKind::Sim,
        simulate_workers: true,
        seed: args.seed,
        available_models: vec![],
    };
    let mut steps = 0;
    let quiet = args.quiet;
    let last = super::step::drive(machine, &opts, args.max_steps, 0.0, |turn| {
        steps += 1;
        if !quiet {
            crate::say!("{}", super::step::describe(turn));
        }
    });
    let last = match last {
        Ok(Some(t)) => t,
        Ok(None) => return 1,
        Err(e) => {
            crate::tell!("error: {e}");
            return 1;
        }
    };
    crate::say!(
        "\nfinished after {steps} step(s): {} ({})",
        last.machine_state,
        last.status
    );
    let report_path = machine
        .policy
        .directives
        .values()
        .filter(|d| d.executor == "render_report")
        .find_map(|d| {
            d.output
                .as_ref()
                .filter(|o| !o.contains('{') && Path::new(o).exists())
                .cloned()
        });
    match report_path {
        Some(p) => {
            crate::say!("final report: {}\n", dir.join(&p).display());
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            for line in text.lines().take(12) {
                crate::say!("  {line}");
            }
        }
        None => crate::say!("no final report was written"),
    }
    if last.done { 0 } else { 1 }
}
