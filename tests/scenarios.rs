//! The table-driven scenario suite (`tests/scenarios/`) run through the real
//! binary, exactly as a reviewer runs it: `metaopt test` must pass with full
//! rule and guard coverage, and a failing, a broken and a stale-pending
//! scenario must each be reported with the right exit code and message.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `metaopt --machine <repo>/machine test ARGS` from the repository root: the tables
/// on disk, not a possibly stale embedded copy.
fn metaopt_test(args: &[&str]) -> Output {
    let root = root();
    Command::new(env!("CARGO_BIN_EXE_metaopt"))
        .arg("--machine")
        .arg(root.join("machine"))
        .arg("test")
        .args(args)
        .current_dir(&root)
        .env_remove("METAOPT_MACHINE")
        .env_remove("METAOPT_AVAILABLE_MODELS")
        .output()
        .expect("run metaopt test")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("write scenario");
    p
}

#[test]
fn the_scenario_suite_passes_with_full_coverage() {
    let out = metaopt_test(&["tests/scenarios", "--coverage", "--require-full"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("0 failed"), "{all}");
    assert!(
        all.contains("rules taken") && all.contains("(100.0%)"),
        "{all}"
    );
    let count = all
        .lines()
        .find_map(|l| {
            l.split(" scenario(s):")
                .next()?
                .trim()
                .parse::<usize>()
                .ok()
        })
        .unwrap_or(0);
    assert!(count >= 60, "expected at least 60 scenarios, found {count}");
}

#[test]
fn a_failing_scenario_exits_1_naming_the_path_and_both_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "wrong.yaml",
        "name: deliberately wrong\n\
         when:\n  agent: { name: metaopt-load-campaign }\n\
         expect:\n  handoff:\n    recommended_next_machine_state: IDEATE\n    preflight_readiness: { status: fresh_ready }\n",
    );
    let out = metaopt_test(&[file.to_str().expect("utf-8 path")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("FAIL") && all.contains("wrong.yaml"), "{all}");
    assert!(
        all.contains(
            "handoff.recommended_next_machine_state: expected \"IDEATE\", got \"HYDRATE_STATE\""
        ),
        "{all}"
    );
    // Only the mismatching path is reported.
    assert!(!all.contains("preflight_readiness"), "{all}");
}

#[test]
fn a_scenario_that_does_not_parse_exits_2_with_file_and_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "broken.yaml",
        "name: typo in a key\nwhen:\n  agent: { name: metaopt-load-campaign }\nexpect:\n  handof: {}\n",
    );
    let out = metaopt_test(&[file.to_str().expect("utf-8 path")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(all.contains("broken.yaml"), "{all}");
    assert!(all.contains("unknown field `handof`"), "{all}");
}

#[test]
fn a_pending_scenario_that_passes_must_lose_its_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = write(
        dir.path(),
        "stale-pending.yaml",
        "name: already fixed\npending: was broken once\n\
         when:\n  agent: { name: metaopt-load-campaign }\n\
         expect:\n  handoff: { recommended_next_machine_state: HYDRATE_STATE }\n",
    );
    let out = metaopt_test(&[file.to_str().expect("utf-8 path")]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(1), "{all}");
    assert!(all.contains("remove the `pending` marker"), "{all}");
}
