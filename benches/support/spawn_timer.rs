//! `spawn-timer`: the wall time of whole processes, for `scripts/bench.sh`.
//!
//! A millisecond-scale figure (a phase on the example campaign) timed from a shell
//! carries the shell's own work: a subshell forked, `cd`, then the fork and exec of the
//! program (about 2 ms here, more than the program's start-up). This times what the
//! target is about: from spawning the process to its exit, as a host agent calling
//! `metaopt` sees it. Each run gets a fresh copy of the project, made before the clock
//! starts, written back (`sync`) and left to settle for 50 ms: the files a host runs a
//! step on were written and synced by an earlier step, not a moment ago (see
//! `fsio::Stamp`), and a program that `fsync`s should not wait for the copy's writes.
//!
//! Usage: `spawn-timer REPS SRC RUN -- PROGRAM [ARGS...]`. Each of REPS runs copies
//! directory SRC to RUN (`-` for an empty RUN), runs PROGRAM there with stdout
//! discarded, and prints its wall time in milliseconds on a line of its own. A run that
//! fails stops the timer: its stderr is shown and the exit code is 1.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

/// The parsed command line.
struct Args {
    reps: usize,
    src: Option<String>,
    run: String,
    program: Vec<String>,
}

fn parse(mut args: Vec<String>) -> Result<Args, String> {
    let usage = "usage: spawn-timer REPS SRC RUN -- PROGRAM [ARGS...]";
    let split = args.iter().position(|a| a == "--").ok_or(usage)?;
    let program = args.split_off(split + 1);
    args.pop();
    let [reps, src, run] = <[String; 3]>::try_from(args).map_err(|_| usage)?;
    let reps = reps
        .parse()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("REPS must be a whole number above 0, got `{reps}`"))?;
    if program.is_empty() {
        return Err(usage.into());
    }
    Ok(Args {
        reps,
        src: (src != "-").then_some(src),
        run,
        program,
    })
}

/// Runs a helper (`cp`) outside the timed window.
fn helper(program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .status()
        .map_err(|e| format!("{program}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{program} {}: {status}", args.join(" ")))
    }
}

fn time_runs(args: &Args) -> Result<(), String> {
    let stderr_path = format!("{}.stderr", args.run.trim_end_matches('/'));
    for _ in 0..args.reps {
        let run = Path::new(&args.run);
        if run.is_dir() {
            std::fs::remove_dir_all(run).map_err(|e| format!("{}: {e}", args.run))?;
        } else if run.exists() {
            return Err(format!("{}: RUN exists and is not a directory", args.run));
        }
        match &args.src {
            Some(src) => helper("cp", &["-a", src, &args.run])?,
            None => std::fs::create_dir_all(&args.run).map_err(|e| format!("{}: {e}", args.run))?,
        }
        nix::unistd::sync();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let stderr =
            std::fs::File::create(&stderr_path).map_err(|e| format!("{stderr_path}: {e}"))?;
        let start = Instant::now();
        let status = Command::new(&args.program[0])
            .args(&args.program[1..])
            .current_dir(&args.run)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .status()
            .map_err(|e| format!("{}: {e}", args.program[0]))?;
        let elapsed = start.elapsed();
        if !status.success() {
            let said = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            return Err(format!(
                "`{}` failed ({status}) in a copy of the project:\n{said}",
                args.program.join(" ")
            ));
        }
        println!("{:.3}", elapsed.as_secs_f64() * 1000.0);
    }
    let _ = std::fs::remove_file(&stderr_path);
    Ok(())
}

fn main() -> ExitCode {
    let outcome = parse(std::env::args().skip(1).collect()).and_then(|args| time_runs(&args));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spawn-timer: {e}");
            ExitCode::FAILURE
        }
    }
}
