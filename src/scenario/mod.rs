//! Table-driven scenario testing (`metaopt test`). The machine's behaviour
//! lives in YAML tables that people edit without recompiling, so its tests
//! must be data too: each file in `tests/scenarios/` gives a project
//! (campaign, state, preflight, worker results), runs one control-agent
//! phase or orchestrator steps against it, and states what must hold
//! afterwards. On top of pass/fail, `--coverage` reports which rules the
//! suite takes and whether every guard was seen both ways, and `--mutate`
//! negates each guard in turn to show which ones no scenario pins down.
//!
//! Layout: `model` (the file format), `matcher` (subset matching with
//! JSON-path messages), `child` (the worker process that sets up, runs and
//! checks scenarios), `runner` (batches and child processes), `coverage`
//! and `mutate`.

pub mod child;
pub mod coverage;
pub mod matcher;
pub mod model;
pub mod mutate;
pub mod runner;

use crate::machine::{Machine, TableSource};
use child::ScenarioResult;
use runner::{SuiteConfig, load_all, run_suite};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Exit code when a scenario fails (or coverage/mutation requirements are not met).
pub const EXIT_FAILED: i32 = 1;

/// What `metaopt test` was asked to do.
#[derive(Debug, Clone)]
pub struct TestOptions {
    /// Scenario files or directories.
    pub paths: Vec<PathBuf>,
    /// `--machine DIR` (None: embedded tables).
    pub machine: Option<PathBuf>,
    /// Root fixture paths resolve against.
    pub root: PathBuf,
    /// Parallel children.
    pub jobs: usize,
    /// Report coverage.
    pub coverage: bool,
    /// Run guard mutants.
    pub mutate: bool,
    /// Incomplete coverage or a surviving mutant fails the run.
    pub require_full: bool,
    /// Keep project directories and print where they are.
    pub keep: bool,
    /// Print passing scenarios too.
    pub verbose: bool,
}

/// Loads the machine (`None`: embedded tables), printing every load error.
pub fn load_machine(dir: Option<&Path>) -> Result<Machine, i32> {
    Machine::load(dir).map_err(|e| {
        eprintln!("error: the machine tables do not load:");
        for line in &e.0 {
            eprintln!("  {line}");
        }
        crate::cli::EXIT_USAGE
    })
}

/// Runs the suite as `metaopt test` does and returns the exit code.
pub fn run(opts: &TestOptions) -> i32 {
    let started = Instant::now();
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: cannot locate the metaopt binary: {e}");
            return crate::cli::EXIT_USAGE;
        }
    };
    // Mutation runs use the machine directory for the baseline as well, so that
    // baseline and mutants differ by exactly one guard.
    let machine_dir = if opts.mutate {
        match mutate::machine_dir(opts.machine.as_deref()) {
            Ok(d) => Some(runner::absolute(&d)),
            Err(e) => {
                eprintln!("error: {e}");
                return crate::cli::EXIT_USAGE;
            }
        }
    } else {
        opts.machine.as_deref().map(runner::absolute)
    };
    let machine = match load_machine(machine_dir.as_deref()) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let loaded = match load_all(&opts.paths, &opts.root) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::cli::EXIT_USAGE;
        }
    };
    for (f, e) in &loaded.errors {
        eprintln!("error: {}: scenario does not parse: {e}", f.display());
    }
    if loaded.files.is_empty() {
        eprintln!("error: no scenario files found");
        return crate::cli::EXIT_USAGE;
    }
    let work = match tempfile::Builder::new().prefix("metaopt-test-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot create a temporary directory: {e}");
            return crate::cli::EXIT_USAGE;
        }
    };
    let cfg = SuiteConfig {
        exe,
        machine: machine_dir.clone(),
        setup_machine: None,
        root: runner::absolute(&opts.root),
        jobs: opts.jobs.max(1),
        fail_fast: false,
        cleanup: !opts.keep,
        work: work.path().join("suite"),
    };
    let indices: Vec<usize> = (0..loaded.files.len())
        .filter(|i| loaded.scenarios[*i].is_some())
        .collect();
    let results = match run_suite(&cfg, &loaded.files, &indices) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return crate::cli::EXIT_USAGE;
        }
    };
    let (failed, pending) = report(opts, &loaded, &indices, &results, &cfg.work);
    println!(
        "{} scenario(s): {} passed, {} failed, {} pending, {} did not parse ({:.1} s)",
        loaded.files.len(),
        indices.len() - failed - pending,
        failed,
        pending,
        loaded.errors.len(),
        started.elapsed().as_secs_f64()
    );
    // Only scenarios that pass verify anything: pending ones count for neither
    // coverage nor mutation.
    let results: Vec<ScenarioResult> = results
        .into_iter()
        .filter(|r| verdict(&loaded, r.index, Some(r)) == Verdict::Passed)
        .collect();
    let mut code = if !loaded.errors.is_empty() {
        crate::cli::EXIT_USAGE
    } else if failed > 0 {
        EXIT_FAILED
    } else {
        0
    };
    if opts.keep {
        let kept = work.keep();
        println!(
            "project directories kept under {}",
            kept.join("suite").display()
        );
    }
    if opts.coverage {
        let rows = coverage::rows(&machine, results.iter().flat_map(|r| r.trace.iter()));
        print!("{}", coverage::render(&rows));
        if opts.require_full && rows.iter().any(|r| !r.complete()) {
            eprintln!("error: coverage is incomplete (--require-full)");
            code = code.max(EXIT_FAILED);
        }
    }
    if opts.mutate {
        if failed > 0 || !loaded.errors.is_empty() {
            eprintln!("error: mutation testing needs a passing suite first");
            return code.max(EXIT_FAILED);
        }
        let Some(dir) = machine_dir else {
            return crate::cli::EXIT_USAGE;
        };
        let survivors = match run_mutants(opts, &cfg, &dir, &machine, &loaded.files, &results) {
            Ok(n) => n,
            Err(e) => {
                eprintln!("error: {e}");
                return crate::cli::EXIT_USAGE;
            }
        };
        if opts.require_full && survivors > 0 {
            eprintln!("error: {survivors} mutant(s) survived (--require-full)");
            code = code.max(EXIT_FAILED);
        }
    }
    code
}

/// How a scenario ended, pending markers taken into account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Passed.
    Passed,
    /// Failed.
    Failed,
    /// Marked `pending` and failed as expected.
    Pending,
    /// Marked `pending` but passed: the marker must go.
    UnexpectedPass,
}

/// The verdict of scenario `i`.
pub fn verdict(loaded: &runner::Loaded, i: usize, result: Option<&ScenarioResult>) -> Verdict {
    let pending = loaded.scenarios[i]
        .as_ref()
        .is_some_and(|s| s.file.pending.is_some());
    match (result.map(|r| r.failures.is_empty()), pending) {
        (Some(true), false) => Verdict::Passed,
        (Some(true), true) => Verdict::UnexpectedPass,
        (Some(false), true) => Verdict::Pending,
        (Some(false), false) | (None, _) => Verdict::Failed,
    }
}

/// Prints failures (and passes with `--verbose`); returns `(failed, pending)`.
fn report(
    opts: &TestOptions,
    loaded: &runner::Loaded,
    indices: &[usize],
    results: &[ScenarioResult],
    work: &Path,
) -> (usize, usize) {
    let (mut failed, mut pending) = (0, 0);
    for i in indices {
        let file = loaded.files[*i].display();
        let scenario = loaded.scenarios[*i].as_ref();
        let name = scenario.map(|s| s.file.name.clone()).unwrap_or_default();
        let why = scenario
            .and_then(|s| s.file.pending.clone())
            .unwrap_or_default();
        let result = results.iter().find(|r| r.index == *i);
        let failures = result
            .map(|r| r.failures.clone())
            .unwrap_or_else(|| vec!["did not run (its child process stopped earlier)".to_string()]);
        match verdict(loaded, *i, result) {
            Verdict::Passed => {
                if opts.verbose {
                    println!("ok   {file} — {name}");
                }
            }
            Verdict::Pending => {
                pending += 1;
                println!("PENDING {file} — {name}\n  pending: {why}");
                if opts.verbose {
                    for f in &failures {
                        println!("  {f}");
                    }
                }
            }
            Verdict::UnexpectedPass => {
                failed += 1;
                println!(
                    "FAIL {file} — {name}\n  marked pending ({why}) but passes: remove the `pending` marker"
                );
            }
            Verdict::Failed => {
                failed += 1;
                println!("FAIL {file} — {name}");
                for f in &failures {
                    println!("  {f}");
                }
                if opts.keep {
                    println!("  project: {}", work.join(format!("s{i:04}")).display());
                }
            }
        }
    }
    (failed, pending)
}

/// Runs every guard mutant; prints the outcome; returns the number of survivors.
fn run_mutants(
    opts: &TestOptions,
    cfg: &SuiteConfig,
    dir: &Path,
    machine: &Machine,
    files: &[PathBuf],
    baseline: &[ScenarioResult],
) -> Result<usize, String> {
    let started = Instant::now();
    let source = TableSource::from_dir(dir)?;
    let all = mutate::mutants(&source, machine);
    // Scenarios that evaluated each rule's guard, cheapest (shortest trace) first.
    let mut order: Vec<&ScenarioResult> = baseline.iter().collect();
    order.sort_by_key(|r| r.trace.len());
    let evaluated = |m: &mutate::Mutant| -> Vec<usize> {
        order
            .iter()
            .filter(|r| {
                r.trace.iter().any(|l| match l {
                    crate::engine::trace::TraceLine::Guard {
                        agent, phase, rule, ..
                    } => m
                        .affected
                        .iter()
                        .any(|k| &k.0 == agent && &k.1 == phase && &k.2 == rule),
                    _ => false,
                })
            })
            .map(|r| r.index)
            .collect()
    };
    let work = cfg.work.with_file_name("mutants");
    let next = AtomicUsize::new(0);
    let fates: Mutex<Vec<(usize, mutate::Fate)>> = Mutex::new(Vec::new());
    let threads = opts.jobs.max(1).min(all.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let Some(m) = all.get(k) else { break };
                    let fate = match m {
                        Err((_, e)) => mutate::Fate::Invalid(e.clone()),
                        Ok(m) => run_mutant(cfg, &work, k, m, files, &evaluated(m), dir),
                    };
                    if let Ok(mut f) = fates.lock() {
                        f.push((k, fate));
                    }
                }
            });
        }
    });
    let mut fates = fates.into_inner().unwrap_or_default();
    fates.sort_by_key(|(k, _)| *k);
    let (mut killed, mut survived, mut invalid) = (0, 0, 0);
    println!(
        "mutation testing: {} guard mutant(s) of {}",
        all.len(),
        dir.display()
    );
    for (k, fate) in &fates {
        let (at, guard) = match &all[*k] {
            Ok(m) => (format!("{}:{}", m.file, m.line), m.guard.clone()),
            Err((at, _)) => (at.clone(), String::new()),
        };
        match fate {
            mutate::Fate::Killed(i, msg) => {
                killed += 1;
                if opts.verbose {
                    println!("killed   {at} `{guard}` by {}: {msg}", files[*i].display());
                }
            }
            mutate::Fate::Survived(n) => {
                survived += 1;
                let rules: Vec<String> = match &all[*k] {
                    Ok(m) => m
                        .affected
                        .iter()
                        .map(|(a, p, r)| format!("{a}.{p}[{r}]"))
                        .collect(),
                    Err(_) => vec![],
                };
                println!(
                    "SURVIVED {at} `!({guard})` — {n} scenario(s) evaluate it, none failed; rules: {}",
                    rules.join(", ")
                );
            }
            mutate::Fate::Invalid(e) => {
                invalid += 1;
                println!("invalid  {at}: the mutated tables do not load: {e}");
            }
        }
    }
    println!(
        "mutants: {} generated, {killed} killed, {survived} survived, {invalid} invalid ({:.1} s)",
        all.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(survived)
}

fn run_mutant(
    cfg: &SuiteConfig,
    work: &Path,
    k: usize,
    m: &mutate::Mutant,
    files: &[PathBuf],
    candidates: &[usize],
    original: &Path,
) -> mutate::Fate {
    if candidates.is_empty() {
        return mutate::Fate::Survived(0);
    }
    let base = work.join(format!("m{k:03}"));
    let tables = base.join("machine");
    if let Err(e) = mutate::write_tables(&m.files, &tables) {
        return mutate::Fate::Invalid(e);
    }
    let mcfg = SuiteConfig {
        machine: Some(tables),
        setup_machine: Some(original.to_path_buf()),
        jobs: 1,
        fail_fast: true,
        cleanup: true,
        work: base.join("run"),
        ..cfg.clone()
    };
    let fate = match run_suite(&mcfg, files, candidates) {
        Err(e) => mutate::Fate::Invalid(format!("the run broke: {e}")),
        Ok(results) => match results.iter().find(|r| !r.failures.is_empty()) {
            Some(r) => mutate::Fate::Killed(r.index, r.failures[0].clone()),
            None => mutate::Fate::Survived(candidates.len()),
        },
    };
    let _ = std::fs::remove_dir_all(&base);
    fate
}
