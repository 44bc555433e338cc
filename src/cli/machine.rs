//! `metaopt machine check | graph | diff | docs`: review tools for tables.

use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};

/// Flags of `metaopt machine`.
#[derive(Debug, Args)]
pub struct MachineArgs {
    /// The tool.
    #[command(subcommand)]
    pub command: MachineCommand,
}

/// Table tools.
#[derive(Debug, Subcommand)]
pub enum MachineCommand {
    /// Report every problem of the tables.
    Check,
    /// Draw the machine.
    Graph {
        /// Output format.
        #[arg(long, default_value = "mermaid")]
        format: String,
    },
    /// Semantic diff of two machine directories.
    Diff {
        /// Old tables.
        old: PathBuf,
        /// New tables.
        new: PathBuf,
        /// Output format (text or json).
        #[arg(long, default_value = "text")]
        format: String,
    },
    /// Regenerate the generated regions of references/.
    Docs {
        /// Exit 1 when a document drifted instead of rewriting it.
        #[arg(long)]
        check: bool,
    },
}

/// `metaopt machine`.
pub fn run(_machine_dir: Option<&Path>, _args: MachineArgs) -> i32 {
    eprintln!("error: metaopt machine is being built");
    super::EXIT_USAGE
}
