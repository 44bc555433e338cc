//! `metaopt test`: table-driven scenario tests, rule/guard coverage and
//! guard mutation testing. The flags live here; the runner is
//! `crate::scenario`.

use crate::scenario::{self, TestOptions};
use clap::Args;
use std::path::{Path, PathBuf};

/// Flags of `metaopt test`.
#[derive(Debug, Args)]
pub struct TestArgs {
    /// Scenario files or directories (default tests/scenarios).
    pub paths: Vec<PathBuf>,
    /// Report rule and guard coverage.
    #[arg(long)]
    pub coverage: bool,
    /// Negate each guard in turn and report surviving mutants.
    #[arg(long)]
    pub mutate: bool,
    /// Fail when coverage is incomplete or a mutant survives.
    #[arg(long)]
    pub require_full: bool,
    /// Directory fixture paths in scenarios are relative to.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Scenario processes run in parallel (default: available CPUs).
    #[arg(long, short = 'j')]
    pub jobs: Option<usize>,
    /// Keep the project directories of the run and print where they are.
    #[arg(long)]
    pub keep: bool,
    /// Also list passing scenarios and killed mutants.
    #[arg(long, short = 'v')]
    pub verbose: bool,
    /// Internal: run the scenario batch described by this job file.
    #[arg(long, hide = true)]
    pub worker: Option<PathBuf>,
    /// Internal: machine directory the project setup uses.
    #[arg(long, hide = true)]
    pub setup_machine: Option<PathBuf>,
}

/// `metaopt test`.
pub fn run(machine_dir: Option<&Path>, args: TestArgs) -> i32 {
    if let Some(job) = &args.worker {
        return scenario::child::run_job(machine_dir, args.setup_machine.as_deref(), job);
    }
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from("tests/scenarios")]
    } else {
        args.paths
    };
    let jobs = args.jobs.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
    });
    scenario::run(&TestOptions {
        paths,
        machine: machine_dir.map(Path::to_path_buf),
        root: args.root,
        jobs,
        coverage: args.coverage,
        mutate: args.mutate,
        require_full: args.require_full,
        keep: args.keep,
        verbose: args.verbose,
    })
}
