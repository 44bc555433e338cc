//! `metaopt machine check | graph | diff | docs`: review tools for tables.

use crate::machine::graph::{GraphFormat, RawMachine};
use crate::machine::{TableSource, check, diff, docs};
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
    ///
    /// Load errors (YAML, unknown keys, guards that do not compile or name
    /// unknown variables), unknown states/agents/phases/actions, non-terminal
    /// states without an agent, phases no state dispatches, states unreachable
    /// from `initial`, states from which no rule path reaches a terminal
    /// state, shadowed phases and rules, `set`/`append` keys the agent does not own,
    /// directives that are unknown, blocked or lack required fields, launches
    /// of unknown workers, and transitions into a terminal state without its
    /// `cleanup` directives. Exit 1 when anything is found.
    Check,
    /// Draw the machine.
    Graph {
        /// Output format (mermaid or dot).
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
    ///
    /// A region is the text between `<!-- generated:NAME:begin -->` and
    /// `<!-- generated:NAME:end -->` in `ROOT/references/*.md`; NAME is one of
    /// states, dispatch, transitions, ownership, directives, stop-conditions.
    /// The stop conditions are the rules, in order, of every running state's
    /// phase that can both end the campaign (a rule whose `next` is terminal)
    /// and start another round (a rule whose `next` is a non-terminal state
    /// declared earlier in states.yaml).
    Docs {
        /// Exit 1 when a document drifted instead of rewriting it.
        #[arg(long)]
        check: bool,
        /// Project root whose `references/*.md` hold the regions.
        #[arg(long, default_value = ".", value_name = "DIR")]
        root: PathBuf,
    },
}

/// `metaopt machine`.
pub fn run(machine_dir: Option<&Path>, args: MachineArgs) -> i32 {
    match args.command {
        MachineCommand::Check => run_check(machine_dir),
        MachineCommand::Graph { format } => run_graph(machine_dir, &format),
        MachineCommand::Diff { old, new, format } => run_diff(&old, &new, &format),
        MachineCommand::Docs { check, root } => run_docs(machine_dir, &root, check),
    }
}

fn source(dir: Option<&Path>) -> Result<TableSource, i32> {
    match dir {
        Some(d) => TableSource::from_dir(d).map_err(|e| {
            crate::tell!("error: {e}");
            super::EXIT_USAGE
        }),
        None => Ok(TableSource::embedded()),
    }
}

/// Loads and compiles the machine, then returns its raw view (exit 2 when it does not load).
fn loaded(dir: Option<&Path>) -> Result<RawMachine, i32> {
    let machine = super::load_machine(dir)?;
    RawMachine::parse(&machine.source).ok_or_else(|| {
        crate::tell!("error: states.yaml does not parse");
        super::EXIT_USAGE
    })
}

fn run_check(dir: Option<&Path>) -> i32 {
    let source = match source(dir) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let findings = check::check(&source);
    if findings.is_empty() {
        println!("no findings");
        return 0;
    }
    for f in &findings {
        println!("{f}");
    }
    println!("{} finding(s)", findings.len());
    1
}

fn run_graph(dir: Option<&Path>, format: &str) -> i32 {
    let format: GraphFormat = match format.parse() {
        Ok(f) => f,
        Err(e) => {
            crate::tell!("error: {e}");
            return super::EXIT_USAGE;
        }
    };
    match loaded(dir) {
        Ok(m) => {
            print!("{}", crate::machine::graph::render(&m, format));
            0
        }
        Err(code) => code,
    }
}

fn run_diff(old: &Path, new: &Path, format: &str) -> i32 {
    if !matches!(format, "text" | "json") {
        crate::tell!("error: unknown diff format `{format}` (expected text or json)");
        return super::EXIT_USAGE;
    }
    let (o, n) = match (loaded(Some(old)), loaded(Some(new))) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(code), _) | (_, Err(code)) => return code,
    };
    let changes = diff::diff(&o, &n);
    if format == "json" {
        print!("{}", diff::render_json(&changes));
    } else {
        print!("{}", diff::render_text(&changes));
    }
    i32::from(!changes.is_empty())
}

fn run_docs(dir: Option<&Path>, root: &Path, check: bool) -> i32 {
    let m = match loaded(dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let reports = match docs::run(&m, root, check) {
        Ok(r) => r,
        Err(e) => {
            crate::tell!("error: {e}");
            return super::EXIT_USAGE;
        }
    };
    let mut drifted = 0;
    for r in &reports {
        for name in &r.drifted {
            drifted += 1;
            if check {
                println!(
                    "{}: region `{name}` drifted from the machine",
                    r.path.display()
                );
            } else {
                println!("{}: regenerated region `{name}`", r.path.display());
            }
        }
    }
    let regions: usize = reports.iter().map(|r| r.regions).sum();
    if drifted == 0 {
        println!("{regions} generated region(s) up to date");
        0
    } else if check {
        println!("{drifted} region(s) drifted; run `metaopt machine docs` to regenerate");
        1
    } else {
        0
    }
}
