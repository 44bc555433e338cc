//! Integration tests of `metaopt step / run / demo / status` on temp projects.

mod common;
use common::*;
use serde_json::{Value, json};

fn gate_handoff(p: &Project) -> Value {
    p.json(".ml-metaopt/handoffs/metaopt-iteration-close-control-ROLL_ITERATION.json")
}

#[test]
fn demo_completes_and_is_reproducible() {
    let a = Project::empty();
    let b = Project::empty();
    for p in [&a, &b] {
        let out = p.run(&["demo", "--dir", ".", "--seed", "3", "--quiet"]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("COMPLETE"), "{}", text(&out));
    }
    assert_eq!(a.state()["status"], "COMPLETE");
    for f in [
        ".ml-metaopt/state.json",
        ".ml-metaopt/final_report.md",
        ".ml-metaopt/reports/iteration-1.md",
        ".ml-metaopt/journal.jsonl",
    ] {
        assert_eq!(
            a.read(f),
            b.read(f),
            "{f} differs between two runs with the same seed"
        );
        assert!(!a.read(f).is_empty(), "{f} empty");
    }
    let report = a.read(".ml-metaopt/final_report.md");
    for needle in [
        "# Final report",
        "stop reason:",
        "final baseline:",
        "total spend:",
        "| iteration |",
        "## Key learnings",
        "next action:",
    ] {
        assert!(
            report.contains(needle),
            "final report lacks {needle:?}:\n{report}"
        );
    }
}

#[test]
fn stops_when_the_baseline_reaches_the_target_metric() {
    let p = Project::example_with(|s| s.replace("target_metric: 0.990", "target_metric: 0.5"));
    let turn = p.sim_until("COMPLETE", 60);
    assert_eq!(turn["machine_state"], "COMPLETE");
    assert_eq!(gate_handoff(&p)["stop_reason"], "target_metric");
    assert_eq!(p.state()["current_iteration"], 1);
    assert!(
        p.read(".ml-metaopt/final_report.md")
            .contains("stop reason: target_metric")
    );
}

#[test]
fn stops_at_max_iterations() {
    let p = Project::example_with(|s| {
        s.replace("max_iterations: 20", "max_iterations: 2")
            .replace("target_metric: 0.990", "target_metric: 5.0")
    });
    p.sim_until("COMPLETE", 120);
    assert_eq!(p.state()["status"], "COMPLETE");
    assert_eq!(gate_handoff(&p)["stop_reason"], "max_iterations");
    assert_eq!(
        p.state()["completed_iterations"].as_array().map(Vec::len),
        Some(2)
    );
}

#[test]
fn stops_after_iterations_without_improvement() {
    let p = Project::example_with(|s| {
        s.replace(
            "max_no_improve_iterations: 5",
            "max_no_improve_iterations: 1",
        )
        .replace("target_metric: 0.990", "target_metric: 5.0")
    });
    p.sim_until("COMPLETE", 400);
    assert_eq!(p.state()["status"], "COMPLETE");
    assert_eq!(gate_handoff(&p)["stop_reason"], "max_no_improve_iterations");
    assert_eq!(p.state()["no_improve_iterations"], 1);
}

#[test]
fn budget_exhausted_blocks_with_a_final_report() {
    let p = Project::example_with(|s| {
        s.replace("max_budget_usd: 10", "max_budget_usd: 0.5")
            .replace("target_metric: 0.990", "target_metric: 5.0")
    });
    p.sim_until("BLOCKED_CONFIG", 200);
    let s = p.state();
    assert_eq!(s["status"], "BLOCKED_CONFIG");
    assert_eq!(gate_handoff(&p)["stop_reason"], "budget_exhausted");
    let next = s["next_action"].as_str().unwrap();
    assert!(next.contains("0.72") && next.contains("0.5"), "{next}");
    assert!(
        p.read(".ml-metaopt/final_report.md")
            .contains("stop reason: budget_exhausted")
    );
    assert!(!p.read("AGENTS.md").contains("ml-metaoptimization:begin"));
}

#[test]
fn poll_over_the_cap_blocks_whatever_the_status() {
    let p = Project::example_with(|s| s.replace("max_budget_usd: 10", "max_budget_usd: 0.2"));
    p.sim_until("BLOCKED_CONFIG", 200);
    let h = p.json(".ml-metaopt/handoffs/metaopt-remote-execution-control-WAIT_FOR_SWEEP.json");
    assert_eq!(h["recommended_next_machine_state"], "BLOCKED_CONFIG");
    assert!(
        h["warnings"]
            .as_array()
            .unwrap()
            .contains(&json!("budget exceeded"))
    );
    assert!(
        p.state()["next_action"]
            .as_str()
            .unwrap()
            .contains("0.2 USD cap")
    );
}

fn to_local_sanity(p: &Project) {
    let turn = p.sim_until("LOCAL_SANITY", 40);
    assert_eq!(turn["machine_state"], "LOCAL_SANITY");
}

#[test]
fn failing_smoke_test_fails_the_campaign_and_removes_the_hook() {
    let p = Project::example_with(|s| {
        s.replace(
            "python train.py --smoke --max-steps 10",
            "echo boom >&2; exit 3",
        )
    });
    p.write("AGENTS.md", "# Notes\nkeep me\n");
    to_local_sanity(&p);
    assert!(p.read("AGENTS.md").contains("ml-metaoptimization:begin"));
    let turn = p.step(&["--executor", "local"]);
    assert_eq!(
        turn["machine_state"], "LOCAL_SANITY",
        "first step runs the smoke test: {turn}"
    );
    let smoke = p.json(".ml-metaopt/executor-events/smoke-test-iter-1.json");
    assert_eq!(smoke["exit_code"], 3);
    assert_eq!(smoke["stderr_tail"], "boom\n");
    let turn = p.step(&["--executor", "local"]);
    assert_eq!(turn["machine_state"], "FAILED");
    assert_eq!(p.state()["status"], "FAILED");
    let agents = p.read("AGENTS.md");
    assert!(agents.starts_with("# Notes\nkeep me\n"), "{agents:?}");
    assert!(!agents.contains("ml-metaoptimization"));
}

#[test]
fn smoke_test_still_running_at_60_seconds_is_killed_and_passes() {
    let marker = format!("sleep 12{}", std::process::id() % 10);
    let cmd = format!("{marker}0 & {marker}0");
    let p = Project::example_with(|s| s.replace("python train.py --smoke --max-steps 10", &cmd));
    to_local_sanity(&p);
    let started = std::time::Instant::now();
    p.step(&["--executor", "local"]);
    let took = started.elapsed().as_secs_f64();
    assert!((59.0..75.0).contains(&took), "smoke step took {took}s");
    let smoke = p.json(".ml-metaopt/executor-events/smoke-test-iter-1.json");
    assert_eq!(smoke["killed_at_limit"], true);
    assert_eq!(smoke["exit_code"], 0);
    assert_eq!(smoke["timed_out"], false);
    let left = std::process::Command::new("pgrep")
        .args(["-f", &format!("{marker}0")])
        .output()
        .expect("pgrep");
    assert!(
        left.stdout.is_empty(),
        "children left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
    let turn = p.step(&["--executor", "local"]);
    assert_eq!(turn["machine_state"], "LAUNCH_SWEEP");
}

#[test]
fn crash_between_launch_and_poll_resumes_without_a_second_launch() {
    let p = Project::example();
    let turn = p.sim_until("LAUNCH_SWEEP", 40);
    assert_eq!(turn["machine_state"], "LAUNCH_SWEEP");
    // The host executes the launch (host executor leaves it to us).
    let turn = p.step(&[]);
    let launch = &turn["directives_for_host"][0];
    assert_eq!(launch["action"], "launch_sweep");
    let fixture =
        std::fs::read_to_string(repo().join("tests/fixtures/backend/launch-sweep-valid.json"))
            .unwrap();
    p.write(launch["result_file"].as_str().unwrap(), &fixture);
    // Crash the next step at its first write point, then resume.
    let out = p.run_env(&["step"], &[("METAOPT_FAILPOINT", "1")]);
    assert_eq!(out.status.code(), Some(86), "{}", text(&out));
    assert_eq!(p.state()["machine_state"], "LAUNCH_SWEEP");
    let turn = p.step(&[]);
    assert_eq!(turn["machine_state"], "WAIT_FOR_SWEEP");
    assert_eq!(p.state()["current_sweep"]["sweep_id"], "wandb-sweep-abc123");
    let next = p.step(&[]);
    assert_eq!(next["directives_for_host"][0]["action"], "poll_sweep");
    let launches = p
        .read(".ml-metaopt/journal.jsonl")
        .matches("\"action\":\"launch_sweep\"")
        .count();
    assert_eq!(launches, 0, "the host executor never ran a launch itself");
}

#[test]
fn identity_change_blocks_and_keeps_the_old_state() {
    let p = Project::example();
    p.sim_until("WAIT_FOR_PROPOSALS", 10);
    let before = p.state();
    p.write(
        "ml_metaopt_campaign.yaml",
        &example_campaign().replace("name: gnn-mnist-optimization", "name: another-campaign"),
    );
    p.ready_preflight();
    let turn = p.step(&[]);
    assert_eq!(turn["machine_state"], "BLOCKED_CONFIG");
    let after = p.state();
    assert!(
        after["next_action"]
            .as_str()
            .unwrap()
            .contains("campaign identity changed")
    );
    for key in [
        "campaign_identity_hash",
        "current_proposals",
        "proposal_cycle",
        "current_iteration",
        "campaign_started_at",
    ] {
        assert_eq!(before[key], after[key], "{key} changed");
    }
}

#[test]
fn invalid_campaign_mid_run_blocks_with_the_reason() {
    let p = Project::example();
    p.sim_until("SELECT_AND_DESIGN_SWEEP", 10);
    p.write(
        "ml_metaopt_campaign.yaml",
        &example_campaign().replace("num_sweep_agents: 4", "num_sweep_agents: 99"),
    );
    let turn = p.step(&[]);
    assert_eq!(turn["machine_state"], "BLOCKED_CONFIG");
    assert_eq!(p.state()["next_action"], "repair ml_metaopt_campaign.yaml");
    assert!(p.path(".ml-metaopt/final_report.md").exists());
}

#[test]
fn unowned_patch_in_an_edited_table_is_a_protocol_violation() {
    let mut p = Project::example();
    let m = p.own_machine();
    edit_file(
        &m.join("agents/background-control.yaml"),
        "          proposal_cycle.current_pool_frozen: false\n",
        "          proposal_cycle.current_pool_frozen: false\n          current_iteration: 99\n",
    );
    p.write("AGENTS.md", "mine\n");
    p.step(&[]);
    let turn = p.step(&[]);
    assert_eq!(turn["machine_state"], "BLOCKED_PROTOCOL");
    let s = p.state();
    assert_eq!(s["status"], "BLOCKED_PROTOCOL");
    assert!(
        s["next_action"]
            .as_str()
            .unwrap()
            .contains("current_iteration"),
        "{}",
        s["next_action"]
    );
    assert_eq!(s["current_iteration"], 1, "the patch was not applied");
    assert_eq!(
        p.read("AGENTS.md"),
        "mine\n\n",
        "hook removed, the rest kept"
    );
    assert!(
        p.json(".ml-metaopt/handoffs/metaopt-background-control-IDEATE.json")["state_patch"]["current_iteration"]
            == 99,
        "handoff kept for inspection"
    );
}

#[test]
fn blocked_directive_in_an_edited_table_is_a_protocol_violation() {
    let mut p = Project::example();
    let m = p.own_machine();
    edit_file(
        &m.join("agents/background-control.yaml"),
        "        launch: = ideation_launches(slots)\n",
        "        launch: = ideation_launches(slots)\n        directives:\n          - action: ssh_command\n            reason: shortcut\n",
    );
    p.step(&[]);
    let turn = p.step(&[]);
    assert_eq!(turn["machine_state"], "BLOCKED_PROTOCOL");
    assert!(
        p.state()["next_action"]
            .as_str()
            .unwrap()
            .contains("`ssh_command` is blocked")
    );
}

#[test]
fn second_ideation_round_merges_every_result_once() {
    let p = Project::example();
    p.step(&[]);
    let turn = p.step(&[]);
    assert_eq!(turn["workers"].as_array().map(Vec::len), Some(5));
    let candidate = |slot: &str| {
        json!({"slot_id": slot, "mode": "ideation", "status": "completed", "summary": "s",
               "proposal_candidates": [{"rationale": slot, "sweep_config": {"method": "random",
                 "metric": {"name": "val/accuracy", "goal": "maximize"}, "parameters": {"lr": {"values": [0.1]}}}}]})
    };
    for k in 1..=3 {
        p.write_json(
            &format!(".ml-metaopt/worker-results/bg-{k}.json"),
            &candidate(&format!("bg-{k}")),
        );
    }
    let gate = p.step(&[]);
    assert_eq!(gate["machine_state"], "IDEATE");
    let round2 = p.step(&[]);
    let slots: Vec<&str> = round2["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["slot_id"].as_str())
        .collect();
    assert_eq!(
        slots,
        ["bg-6", "bg-7"],
        "slot numbers continue, never reused"
    );
    for k in [4, 5, 6, 7] {
        p.write_json(
            &format!(".ml-metaopt/worker-results/bg-{k}.json"),
            &candidate(&format!("bg-{k}")),
        );
    }
    let gate = p.step(&[]);
    assert_eq!(gate["machine_state"], "SELECT_AND_DESIGN_SWEEP");
    let ids: Vec<String> = p.state()["current_proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["proposal_id"].as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = (1..=7)
        .map(|n| format!("gnn-mnist-optimization-p{n}"))
        .collect();
    assert_eq!(ids, expected);
    let state = p.state();
    let sources: Vec<&str> = state["current_proposals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["source_slot_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        sources,
        ["bg-1", "bg-2", "bg-3", "bg-4", "bg-5", "bg-6", "bg-7"]
    );
    assert!(
        !p.path(".ml-metaopt/worker-results/bg-1.json").exists(),
        "merged results are moved aside"
    );
}

#[test]
fn a_second_writer_fails_at_once_naming_the_holder() {
    use std::io::Write;
    let p = Project::example();
    p.step(&[]);
    let before = p.read(".ml-metaopt/state.json");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(p.path(".ml-metaopt/lock"))
        .unwrap();
    f.try_lock().expect("lock");
    f.set_len(0).unwrap();
    write!(f, "4242").unwrap();
    let out = p.run(&["step"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("pid 4242"), "{}", text(&out));
    assert_eq!(p.read(".ml-metaopt/state.json"), before);
    drop(f);
    assert!(
        p.run(&["step"]).status.success(),
        "lock of a gone holder is taken over"
    );
}

#[test]
fn status_and_history_describe_the_campaign() {
    let p = Project::example();
    p.sim_until("ANALYZE", 40);
    let s = p.run_json(&["status", "--json"]);
    assert_eq!(s["machine_state"], "ANALYZE");
    assert_eq!(s["max_budget_usd"], 10.0);
    // What status shows of the state is the state's.
    let state = p.state();
    let len = |k: &str| state[k].as_array().map(Vec::len);
    assert_eq!(
        s["current_proposals"].as_u64().map(|n| n as usize),
        len("current_proposals")
    );
    assert_eq!(
        s["next_proposals"].as_u64().map(|n| n as usize),
        len("next_proposals")
    );
    assert_eq!(
        s["completed_iterations"].as_u64().map(|n| n as usize),
        len("completed_iterations")
    );
    for k in ["status", "baseline", "next_action"] {
        assert_eq!(s[k], state[k], "{k}");
    }
    assert_eq!(s["iteration"], state["current_iteration"]);
    assert!(s["pending_workers"].is_array());
    assert!(s["spend_usd"].as_f64().unwrap() > 0.0);
    let out = p.run(&["status"]);
    assert!(
        text(&out).contains("spend      [") && text(&out).contains("/ 10.00 USD"),
        "{}",
        text(&out)
    );
    let h = p.run(&["history"]);
    assert!(text(&h).contains("LAUNCH_SWEEP --metaopt-remote-execution-control.plan_launch[sweep-launched]--> WAIT_FOR_SWEEP"), "{}", text(&h));
}

#[test]
fn history_and_status_read_the_journal_a_line_at_a_time_and_skip_what_is_not_an_entry() {
    let p = Project::example();
    p.sim_until("IDEATE", 10);
    let journal = p.read(".ml-metaopt/journal.jsonl");
    let lines = journal.lines().count();
    assert!(lines >= 2, "{journal}");
    let s = p.run_json(&["status", "--json"]);
    assert_eq!(s["tables_changed_during_campaign"], false);
    // A torn line and a line that is no entry are skipped; an entry that saw the
    // tables change is counted.
    let mut edited: Vec<String> = journal.lines().map(str::to_string).collect();
    let mut changed: Value = serde_json::from_str(&edited[0]).unwrap();
    changed["tables_changed"] = Value::Bool(true);
    edited[0] = changed.to_string();
    edited.insert(1, "{\"agent\": \"torn".into());
    edited.insert(2, "42".into());
    edited.insert(3, "[1, 2, 3, 4]".into());
    let mut bytes = (edited.join("\n") + "\n").into_bytes();
    // A line that is not UTF-8 is skipped too, not the end of the journal.
    let at = edited[0].len() + 1;
    bytes.splice(at..at, b"\xff\xfe\n".iter().copied());
    std::fs::write(p.path(".ml-metaopt/journal.jsonl"), bytes).unwrap();
    let h = p.run(&["history"]);
    assert_eq!(text(&h).lines().count(), lines, "{}", text(&h));
    assert!(
        text(&h)
            .lines()
            .next()
            .unwrap()
            .ends_with("[tables changed]"),
        "{}",
        text(&h)
    );
    let raw = p.run(&["history", "--json"]);
    assert_eq!(
        text(&raw).lines().next().unwrap(),
        edited[0],
        "the line as written"
    );
    let s = p.run_json(&["status", "--json"]);
    assert_eq!(s["tables_changed_during_campaign"], true);
}

#[test]
fn the_journal_records_the_digest_and_patch_of_each_written_handoff() {
    let p = Project::example();
    let mut patched = 0;
    for _ in 0..6 {
        let turn = p.step(&["--simulate-workers"]);
        let journal = p.read(".ml-metaopt/journal.jsonl");
        let last: Value = serde_json::from_str(journal.lines().last().expect("a line")).unwrap();
        let text = p.read(turn["handoff_path"].as_str().expect("a handoff"));
        assert_eq!(
            last["handoff_sha256"],
            metaopt::contract::canonical::sha256_hex(text.as_bytes()),
            "the digest of the handoff file as written"
        );
        let handoff: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(last["patch"], handoff["state_patch"]);
        patched += usize::from(last["patch"].as_object().is_some_and(|o| !o.is_empty()));
    }
    assert!(patched > 0, "some phase patched the state");
}

#[test]
fn a_campaign_blocked_before_it_has_a_state_gets_a_final_report_saying_so() {
    let p = Project::example_with(|s| s.replace("max_iterations: 20", "max_iterations: -1"));
    let turn = p.step(&[]);
    assert_eq!(turn["machine_state"], "BLOCKED_CONFIG", "{turn}");
    let report = p.read(".ml-metaopt/final_report.md");
    assert!(
        report.contains("- no campaign state was created"),
        "{report}"
    );
    assert!(
        report.contains("block reason: campaign invalid"),
        "{report}"
    );
}
