//! Growth with the size of the state, the target "the time per step grows at most
//! linearly with the size of the state". Generates the campaign of `support/large.rs` at
//! 1/8, 1/4, 1/2 and 1 × the large campaign (proposals, iterations, learnings and
//! ideation results all scaled), then times whole processes, as a host runs them, each
//! in a fresh copy of its project:
//!   - `metaopt step` (the gate merging every ideation result: work on both the state
//!     and the results);
//!   - `metaopt agent metaopt-orchestrator --mode gate` (reads and checks the state).
//!
//! It prints, per size, the state size, the median wall time and the time per MB, and
//! per command the growth exponent: the slope of log(time) against log(state size),
//! least squares over the four sizes. 1 is linear; the target holds (PASS) while the
//! slope stays at most 1.15 (the process's fixed start-up cost pulls it below 1, machine
//! noise moves it by a few hundredths).
//!
//! `cargo bench --bench scale` (`-- --reps N`, default 5; `--quick`: 3).

#[path = "support/large.rs"]
mod large;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Seed of every generated project.
const SEED: u64 = 42;
/// Largest slope of log(time) over log(state size) that counts as linear growth.
const LINEAR_SLOPE: f64 = 1.15;

/// The large campaign divided by `divisor` (at least one of each).
fn scaled(name: &'static str, divisor: usize) -> large::Size {
    let part = |n: usize| (n / divisor).max(1);
    let l = large::LARGE;
    large::Size {
        name,
        current_proposals: part(l.current_proposals),
        next_proposals: part(l.next_proposals),
        completed_iterations: part(l.completed_iterations),
        key_learnings: part(l.key_learnings),
        ideation_results: part(l.ideation_results),
    }
}

/// Median wall time in ms of `reps` runs of `metaopt args…`, each in a fresh copy of
/// `template`; panics when a run fails (a benchmark of a failing command means nothing).
fn median_ms(template: &Path, args: &[&str], reps: usize) -> f64 {
    let bin = large::metaopt_bin();
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let run = tempfile::tempdir().expect("temporary directory");
            large::copy_dir(template, run.path()).expect("copy the project");
            // Written back and left to settle, as a host's files are (see
            // scripts/bench.sh).
            nix::unistd::sync();
            std::thread::sleep(std::time::Duration::from_millis(50));
            let started = Instant::now();
            let status = Command::new(&bin)
                .args(args)
                .current_dir(run.path())
                .env_remove("METAOPT_MACHINE")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("metaopt runs");
            let ms = started.elapsed().as_secs_f64() * 1e3;
            assert!(status.success(), "metaopt {args:?} failed: {status}");
            ms
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Least-squares slope of `ln y` against `ln x`.
fn log_log_slope(points: &[(f64, f64)]) -> f64 {
    let logs: Vec<(f64, f64)> = points.iter().map(|(x, y)| (x.ln(), y.ln())).collect();
    let n = logs.len() as f64;
    let mx = logs.iter().map(|p| p.0).sum::<f64>() / n;
    let my = logs.iter().map(|p| p.1).sum::<f64>() / n;
    let sxy: f64 = logs.iter().map(|(x, y)| (x - mx) * (y - my)).sum();
    let sxx: f64 = logs.iter().map(|(x, _)| (x - mx).powi(2)).sum();
    sxy / sxx
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut reps = 5;
    if args.iter().any(|a| a == "--quick") {
        reps = 3;
    }
    if let Some(i) = args.iter().position(|a| a == "--reps") {
        reps = args
            .get(i + 1)
            .and_then(|n| n.parse().ok())
            .filter(|&n: &usize| n > 0)
            .expect("--reps takes a positive number");
    }
    let sizes = [
        scaled("1/8", 8),
        scaled("1/4", 4),
        scaled("1/2", 2),
        scaled("1", 1),
    ];
    let commands: [(&str, &[&str]); 2] = [
        ("metaopt step", &["step"]),
        (
            "gate phase",
            &["agent", "metaopt-orchestrator", "--mode", "gate"],
        ),
    ];
    println!(
        "growth with the state size: {reps} runs per cell (median), whole processes, fresh copies"
    );
    println!();
    println!("| size | proposals | state MB | step ms | step ms/MB | gate ms | gate ms/MB |");
    println!("|---|---|---|---|---|---|---|");
    let mut points: Vec<Vec<(f64, f64)>> = vec![Vec::new(); commands.len()];
    for size in &sizes {
        let template = tempfile::tempdir().expect("temporary directory");
        large::generate_sized(template.path(), SEED, size).expect("generate the project");
        let bytes = std::fs::metadata(template.path().join(large::STATE_PATH))
            .expect("the state file")
            .len() as f64;
        let mb = bytes / 1_048_576.0;
        let mut cells = Vec::new();
        for (k, (_, args)) in commands.iter().enumerate() {
            let ms = median_ms(template.path(), args, reps);
            points[k].push((bytes, ms));
            cells.push(format!("{ms:.1} | {:.1}", ms / mb));
        }
        println!(
            "| {} | {} | {mb:.2} | {} |",
            size.name,
            size.current_proposals + size.next_proposals,
            cells.join(" | ")
        );
    }
    println!();
    for ((label, _), pts) in commands.iter().zip(&points) {
        let slope = log_log_slope(pts);
        let verdict = if slope <= LINEAR_SLOPE {
            "PASS"
        } else {
            "**FAIL**"
        };
        println!(
            "{label}: time grows as size^{slope:.2} (linear: 1; target at most {LINEAR_SLOPE}) {verdict}"
        );
    }
}
