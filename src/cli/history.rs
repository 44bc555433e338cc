//! `metaopt history`: the audit journal of a project.

use crate::exec::journal;
use clap::Args;
use std::path::{Path, PathBuf};

/// Flags of `metaopt history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Project root.
    #[arg(long, default_value = ".")]
    pub project: PathBuf,
    /// Print the raw JSON lines.
    #[arg(long)]
    pub json: bool,
}

/// `metaopt history`.
pub fn run(machine_dir: Option<&Path>, args: HistoryArgs) -> i32 {
    let machine = match super::open_project(machine_dir, &args.project) {
        Ok(m) => m,
        Err(code) => return code,
    };
    journal::scan(machine, |line, e| {
        if args.json {
            crate::say!("{line}");
        } else {
            let changed = if e.tables_changed == serde_json::json!(true) {
                "  [tables changed]"
            } else {
                ""
            };
            crate::say!(
                "{:>4} {} {} --{}.{}[{}]--> {}{changed}",
                e.seq,
                e.time.as_str().unwrap_or(""),
                e.machine_state_before.as_str().unwrap_or(""),
                e.agent.as_str().unwrap_or(""),
                e.phase.as_str().unwrap_or(""),
                e.rule.as_str().unwrap_or(""),
                e.machine_state_after.as_str().unwrap_or("")
            );
        }
    });
    0
}
