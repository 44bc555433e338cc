//! `metaopt test`: table-driven scenario tests.

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
}

/// `metaopt test`.
pub fn run(_machine_dir: Option<&Path>, _args: TestArgs) -> i32 {
    eprintln!("error: metaopt test is being built");
    super::EXIT_USAGE
}
