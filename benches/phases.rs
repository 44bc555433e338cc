//! Benchmarks of every control-agent phase, of `metaopt step` and of `metaopt demo`.
//!
//! * `phase/<size>/<mode>`: the in-process library call, `run_phase` on a project shaped
//!   so the phase takes its main branch (see `support/large.rs`, [`large::CASES`]), with
//!   the machine loaded once. `run_phase` reads paths relative to the current directory,
//!   so each case enters its project directory first. Nothing is written: every
//!   iteration sees the same input.
//! * `step/<size>/in-process`: `metaopt::exec::step::step` on a fresh copy of the
//!   generated project (WAIT_FOR_PROPOSALS: one gate merging every ideation result).
//! * `step/<size>/process` and `demo/process`: whole-process wall time of the `metaopt`
//!   binary cargo builds next to this bench (`target/release/metaopt` under `cargo bench`).
//!
//! `cargo bench --bench phases` runs everything: about two minutes for the example size,
//! and, while the large campaign takes seconds per phase, around twenty for the large one
//! (criterion takes at least ten samples). `METAOPT_BENCH_SIZES=example` (or `large`)
//! skips the other size's setup too; a criterion filter picks benchmarks within it,
//! e.g. `cargo bench --bench phases -- phase/example/analyze`.
//!
//! Prepare mode, for `scripts/bench.sh`: with `METAOPT_BENCH_PREPARE=DIR` set, the binary
//! writes the projects instead of benchmarking (`DIR/<size>/base` and `DIR/<size>/<mode>`,
//! each checked to take its main branch) plus `DIR/manifest.tsv`, one line per project:
//! `size, case, agent, dir, state bytes, serde floor ms, rule`.

#[path = "support/large.rs"]
mod large;

use criterion::{BatchSize, Criterion};
use metaopt::cli::{Cli, Command};
use metaopt::engine::phase::{PhaseArgs, lookup, run_phase};
use metaopt::exec::step::{StepOptions, step};
use metaopt::machine::Machine;
use std::hint::black_box;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Seed of every generated project.
const SEED: u64 = 42;
/// The clock every in-process phase sees.
const NOW: &str = "2026-06-01T12:00:00Z";

/// The phase arguments `metaopt agent <agent> --mode <mode>` uses, parsed by the real CLI.
fn phase_args(case: &large::Case) -> PhaseArgs {
    use clap::Parser;
    let cli = Cli::try_parse_from(["metaopt", "agent", case.agent, "--mode", case.mode])
        .expect("the agent command line parses");
    match cli.command {
        Command::Agent(a) => a.phase_args(),
        other => panic!("expected the agent command, got {other:?}"),
    }
}

/// Runs `case` in the current directory and panics unless one of its main rules decides.
fn check_case(machine: &Machine, case: &large::Case, args: &PhaseArgs) -> String {
    let (agent, phase) = lookup(machine, case.agent, Some(case.mode)).expect("known phase");
    let outcome = run_phase(machine, agent, phase, args, NOW);
    assert!(
        !outcome.is_error && case.rules.contains(&outcome.rule.as_str()),
        "{} {}: expected one of {:?}, got rule `{}`: {}",
        case.agent,
        case.mode,
        case.rules,
        outcome.rule,
        outcome.handoff["summary"]
    );
    outcome.rule
}

/// A generated project of `size` in a temporary directory.
fn template(size: &large::Size) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("metaopt-bench-{}-", size.name))
        .tempdir()
        .expect("temporary directory");
    large::generate_sized(dir.path(), SEED, size).expect("generate the project");
    dir
}

/// Benchmark settings per size: large phases take a large fraction of a second each.
fn configure(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    size: &large::Size,
) {
    if size == &large::LARGE {
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(8));
    } else {
        group
            .sample_size(30)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3));
    }
}

fn bench_phases(c: &mut Criterion, machine: &Machine, size: &large::Size, base: &Path) {
    let home = std::env::current_dir().expect("current directory");
    let work = tempfile::tempdir().expect("temporary directory");
    let mut group = c.benchmark_group(format!("phase/{}", size.name));
    configure(&mut group, size);
    for case in large::CASES {
        let dir = work.path().join(case.mode);
        large::setup_case(base, &dir, case, SEED).expect("set up the case");
        std::env::set_current_dir(&dir).expect("enter the project");
        let args = phase_args(case);
        check_case(machine, case, &args);
        let (agent, phase) = lookup(machine, case.agent, Some(case.mode)).expect("known phase");
        group.bench_function(case.mode, |b| {
            b.iter(|| black_box(run_phase(machine, agent, phase, &args, NOW)))
        });
        std::env::set_current_dir(&home).expect("leave the project");
    }
    group.finish();
}

/// A fresh copy of `base` to run a step in.
fn fresh_copy(base: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temporary directory");
    large::copy_dir(base, dir.path()).expect("copy the project");
    dir
}

fn bench_step(c: &mut Criterion, machine: &Machine, size: &large::Size, base: &Path) {
    let home = std::env::current_dir().expect("current directory");
    let mut group = c.benchmark_group(format!("step/{}", size.name));
    configure(&mut group, size);
    group.bench_function("in-process", |b| {
        b.iter_batched(
            || {
                let dir = fresh_copy(base);
                std::env::set_current_dir(dir.path()).expect("enter the project");
                dir
            },
            |dir| {
                let turn = step(machine, &StepOptions::default()).expect("the step runs");
                (dir, turn)
            },
            BatchSize::PerIteration,
        )
    });
    std::env::set_current_dir(&home).expect("leave the project");
    let bin = large::metaopt_bin();
    group.bench_function("process", |b| {
        b.iter_batched(
            || fresh_copy(base),
            |dir| {
                let status = std::process::Command::new(&bin)
                    .arg("step")
                    .arg("--project")
                    .arg(dir.path())
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("run metaopt step");
                assert!(status.success(), "metaopt step failed: {status}");
                dir
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn bench_demo(c: &mut Criterion) {
    let bin = large::metaopt_bin();
    let mut group = c.benchmark_group("demo");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    group.bench_function("process", |b| {
        b.iter_batched(
            || tempfile::tempdir().expect("temporary directory"),
            |dir| {
                let status = std::process::Command::new(&bin)
                    .args(["demo", "--quiet", "--dir"])
                    .arg(dir.path().join("demo"))
                    .stdout(std::process::Stdio::null())
                    .status()
                    .expect("run metaopt demo");
                assert!(status.success(), "metaopt demo failed: {status}");
                dir
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

/// Writes the projects and the manifest `scripts/bench.sh` measures (see the module docs).
fn prepare(root: &Path, machine: &Machine) -> std::io::Result<()> {
    let home = std::env::current_dir()?;
    std::fs::create_dir_all(root)?;
    let root = root.canonicalize()?;
    let mut manifest = std::fs::File::create(root.join("manifest.tsv"))?;
    for size in [&large::EXAMPLE, &large::LARGE] {
        let size_dir = root.join(size.name);
        if size_dir.exists() {
            std::fs::remove_dir_all(&size_dir)?;
        }
        let base = size_dir.join("base");
        large::generate_sized(&base, SEED, size)?;
        let mut line = |case: &str, agent: &str, dir: &PathBuf, rule: &str| {
            let state = dir.join(large::STATE_PATH);
            let bytes = std::fs::metadata(&state)?.len();
            let floor = large::floor_ms(&state, 9)?;
            writeln!(
                manifest,
                "{}\t{case}\t{agent}\t{}\t{bytes}\t{floor:.3}\t{rule}",
                size.name,
                dir.display()
            )
        };
        line("step", "-", &base, "-")?;
        for case in large::CASES {
            let dir = size_dir.join(case.mode);
            large::setup_case(&base, &dir, case, SEED)?;
            std::env::set_current_dir(&dir)?;
            let rule = check_case(machine, case, &phase_args(case));
            std::env::set_current_dir(&home)?;
            line(case.mode, case.agent, &dir, &rule)?;
        }
        eprintln!("prepared {} projects in {}", size.name, size_dir.display());
    }
    Ok(())
}

fn main() {
    let machine = Machine::load(None).expect("the embedded machine loads");
    if let Some(dir) = std::env::var_os("METAOPT_BENCH_PREPARE").filter(|d| !d.is_empty()) {
        if let Err(e) = prepare(Path::new(&dir), &machine) {
            eprintln!("error: cannot prepare the bench projects: {e}");
            std::process::exit(1);
        }
        return;
    }
    let sizes = std::env::var("METAOPT_BENCH_SIZES").unwrap_or_else(|_| "example large".into());
    let mut c = Criterion::default().configure_from_args();
    for size in [&large::EXAMPLE, &large::LARGE] {
        if !sizes.split_whitespace().any(|s| s == size.name) {
            continue;
        }
        let base = template(size);
        bench_phases(&mut c, &machine, size, base.path());
        bench_step(&mut c, &machine, size, base.path());
    }
    bench_demo(&mut c);
    c.final_summary();
}
