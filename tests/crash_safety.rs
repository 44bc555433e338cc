//! Crash safety: the step is crashed at every write point of every step of a
//! whole (short) campaign via the `METAOPT_FAILPOINT` testing aid, and each
//! crashed project is resumed to the end. Every resumed run must reach the
//! same outcome as the uncrashed one: a state that always loads, the same
//! terminal state and iteration count, no proposal merged twice, no sweep
//! launched twice, no iteration recorded twice.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const SIM: &[&str] = &["step", "--json", "--executor", "sim", "--simulate-workers"];

fn run_in(dir: &Path, args: &[&str], failpoint: Option<usize>) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_metaopt"));
    cmd.current_dir(dir)
        .env("METAOPT_NOW", NOW)
        .env_remove("METAOPT_MACHINE")
        .args(args);
    if let Some(n) = failpoint {
        cmd.env("METAOPT_FAILPOINT", n.to_string());
    }
    cmd.output().expect("run metaopt")
}

fn done(out: &std::process::Output) -> bool {
    serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|t| t["done"] == true)
}

fn drive_to_end(dir: &Path) {
    let out = run_in(
        dir,
        &[
            "run",
            "--executor",
            "sim",
            "--simulate-workers",
            "--max-steps",
            "200",
        ],
        None,
    );
    assert!(
        out.status.success(),
        "resume failed in {}: {}",
        dir.display(),
        text(&out)
    );
}

/// Outcome facts that must not depend on where a crash happened.
fn facts(dir: &Path) -> Value {
    let state: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(".ml-metaopt/state.json")).unwrap())
            .unwrap();
    let ids: Vec<String> = ["current_proposals", "next_proposals"]
        .iter()
        .flat_map(|k| state[k].as_array().cloned().unwrap_or_default())
        .chain(
            state["completed_iterations"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        )
        .filter_map(|p| p["proposal_id"].as_str().map(str::to_string))
        .collect();
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        ids.len(),
        "a proposal id appears twice in {}",
        dir.display()
    );
    let iterations: Vec<u64> = state["completed_iterations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["iteration"].as_u64().unwrap())
        .collect();
    let sweeps = std::fs::read_dir(dir.join(".ml-metaopt/sim"))
        .map(|d| d.count())
        .unwrap_or(0);
    serde_json::json!({
        "machine_state": state["machine_state"],
        "iterations": iterations,
        "sweeps_launched": sweeps,
        "current_iteration": state["current_iteration"],
        "pool_size": state["current_proposals"].as_array().map(Vec::len),
        "hook_present": std::fs::read_to_string(dir.join("AGENTS.md")).unwrap_or_default().contains("ml-metaoptimization:begin"),
        "final_report": dir.join(".ml-metaopt/final_report.md").exists(),
    })
}

#[test]
fn a_crash_at_any_write_point_resumes_to_the_same_outcome() {
    let p = Project::example_with(|s| {
        s.replace("max_iterations: 20", "max_iterations: 1")
            .replace("target_metric: 0.990", "target_metric: 5.0")
    });
    let root = tempfile::tempdir().unwrap();
    // Reference run, keeping a copy of the project before every step.
    let mut before_steps = Vec::new();
    for k in 0..200 {
        let snap = root.path().join(format!("before-{k}"));
        copy_dir(p.dir.path(), &snap);
        before_steps.push(snap);
        let out = run_in(p.dir.path(), SIM, None);
        assert!(out.status.success(), "{}", text(&out));
        if done(&out) {
            break;
        }
    }
    let reference = facts(p.dir.path());
    assert_eq!(reference["machine_state"], "COMPLETE");

    let jobs: Vec<(usize, std::path::PathBuf)> = before_steps.into_iter().enumerate().collect();
    let chunks: Vec<Vec<(usize, std::path::PathBuf)>> = jobs
        .chunks(jobs.len().div_ceil(2))
        .map(|c| c.to_vec())
        .collect();
    let root_path = root.path().to_path_buf();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let reference = reference.clone();
            let root_path = root_path.clone();
            std::thread::spawn(move || {
                let mut crashes = 0;
                for (k, snap) in chunk {
                    for point in 1..100 {
                        let work = root_path.join(format!("crash-{k}-{point}"));
                        copy_dir(&snap, &work);
                        let out = run_in(&work, SIM, Some(point));
                        if out.status.code() == Some(0) {
                            break; // this step has fewer write points
                        }
                        assert_eq!(
                            out.status.code(),
                            Some(86),
                            "step {k} point {point}: {}",
                            text(&out)
                        );
                        crashes += 1;
                        // The state is the pre-step or the post-step state, never torn.
                        let status = run_in(&work, &["status", "--json"], None);
                        assert!(
                            status.status.success(),
                            "step {k} point {point}: state unreadable: {}",
                            text(&status)
                        );
                        drive_to_end(&work);
                        assert_eq!(
                            facts(&work),
                            reference,
                            "step {k}, crash at write point {point}"
                        );
                        let _ = std::fs::remove_dir_all(&work);
                    }
                }
                crashes
            })
        })
        .collect();
    let crashes: usize = handles
        .into_iter()
        .map(|h| h.join().expect("worker thread"))
        .sum();
    assert!(crashes > 50, "only {crashes} write points were crashed");
    eprintln!("crashed and resumed {crashes} write points");
}
