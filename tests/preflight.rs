//! `metaopt preflight` with stub `sky` and `git` programs on PATH.

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

fn stub(dir: &std::path::Path, name: &str, script: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn preflight(p: &Project, bin: &std::path::Path, key: &str) -> std::process::Output {
    let path = format!("{}:/usr/bin:/bin", bin.display());
    p.run_env(
        &["preflight", "--campaign", "ml_metaopt_campaign.yaml"],
        &[
            ("PATH", &path),
            ("WANDB_API_KEY", key),
            ("NETRC", "/nonexistent"),
        ],
    )
}

#[test]
fn ready_environment_lets_the_first_step_reach_hydrate() {
    let p = Project::empty();
    p.write("ml_metaopt_campaign.yaml", &example_campaign());
    let bin = p.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    stub(&bin, "sky", "echo 'Vast: enabled'");
    stub(&bin, "git", "echo 'abc123 HEAD'");
    let out = preflight(&p, &bin, "secret");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let a = p.json(".ml-metaopt/preflight-readiness.json");
    assert_eq!(a["status"], "READY");
    assert_eq!(
        a["campaign_identity_hash"],
        "sha256:76d87a271abe95ba765ac749237a1383dd4c75956671de88f15bba9cca13bc81"
    );
    let s = &a["checks_summary"];
    assert_eq!(
        s["passed"].as_u64().unwrap()
            + s["failed"].as_u64().unwrap()
            + s["bootstrapped"].as_u64().unwrap()
            + s["warnings"].as_u64().unwrap(),
        s["total"].as_u64().unwrap()
    );
    assert!(p.read(".gitignore").contains(".ml-metaopt/"));
    assert!(p.path(".ml-metaopt/worker-results").is_dir());
    let turn = p.step(&[]);
    assert_eq!(turn["phases"][0]["next_state"], "HYDRATE_STATE");
    assert_eq!(turn["machine_state"], "IDEATE");
}

#[test]
fn failing_checks_block_the_first_step_naming_preflight() {
    let p = Project::empty();
    p.write("ml_metaopt_campaign.yaml", &example_campaign());
    let bin = p.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    stub(&bin, "sky", "echo 'Vast: disabled (no credentials)'");
    stub(
        &bin,
        "git",
        "echo 'fatal: repository not found' >&2; exit 128",
    );
    let out = preflight(&p, &bin, "");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let a = p.json(".ml-metaopt/preflight-readiness.json");
    assert_eq!(a["status"], "FAILED");
    let ids: Vec<&str> = a["failures"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["check"].as_str())
        .collect();
    assert_eq!(ids, ["sky_vast", "wandb_credentials", "git_remote"]);
    assert!(
        a["failures"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| !f["remediation"].as_str().unwrap().is_empty())
    );
    let turn = p.step(&[]);
    assert_eq!(turn["machine_state"], "BLOCKED_CONFIG");
    let load = p.json(".ml-metaopt/handoffs/load_campaign.latest.json");
    assert_eq!(load["preflight_readiness"]["status"], "fresh_failed");
    assert!(
        load["recovery_action"]
            .as_str()
            .unwrap()
            .contains("preflight")
    );
}

#[test]
fn campaign_edited_after_preflight_is_stale() {
    let p = Project::empty();
    p.write("ml_metaopt_campaign.yaml", &example_campaign());
    let bin = p.path("bin");
    std::fs::create_dir_all(&bin).unwrap();
    stub(&bin, "sky", "echo 'Vast: enabled'");
    stub(&bin, "git", "true");
    assert_eq!(preflight(&p, &bin, "k").status.code(), Some(0));
    p.write(
        "ml_metaopt_campaign.yaml",
        &example_campaign().replace("metric: val/accuracy", "metric: val/f1"),
    );
    let h = p.run_json(&["agent", "metaopt-load-campaign"]);
    assert_eq!(h["preflight_readiness"]["status"], "stale");
    assert!(
        h["recovery_action"]
            .as_str()
            .unwrap()
            .contains("metaopt-preflight")
    );
}

#[test]
fn unreadable_campaign_is_a_usage_error_without_artifact() {
    let p = Project::empty();
    let out = p.run(&["preflight", "--campaign", "missing.yaml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(!p.path(".ml-metaopt/preflight-readiness.json").exists());
    p.write("bad.yaml", "a: [b\n");
    let out = p.run(&["preflight", "--campaign", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("invalid yaml"));
}
