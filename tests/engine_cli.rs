//! Integration tests of the engine through `metaopt agent` and `metaopt validate`.

mod common;
use common::*;
use serde_json::{Value, json};

const EXAMPLE_HASH: &str =
    "sha256:76d87a271abe95ba765ac749237a1383dd4c75956671de88f15bba9cca13bc81";

#[test]
fn example_campaign_hashes_to_the_contract_value() {
    let p = Project::example();
    let h = p.run_json(&[
        "agent",
        "metaopt-load-campaign",
        "--output",
        ".ml-metaopt/handoffs/load.json",
    ]);
    assert_eq!(h["campaign_identity_hash"], EXAMPLE_HASH);
    assert_eq!(h["campaign_valid"], true);
    assert_eq!(h["recommended_next_machine_state"], "HYDRATE_STATE");
    assert_eq!(h["state_patch"], Value::Null);
    assert_eq!(h["handoff_type"], "load_campaign.validate");
    // stdout and --output carry the same text
    let written = p.read(".ml-metaopt/handoffs/load.json");
    let out = p.run(&["agent", "metaopt-load-campaign"]);
    assert_eq!(written, String::from_utf8_lossy(&out.stdout));
}

#[test]
fn non_ascii_names_hash_like_python_json_dumps() {
    // Vector from python3: json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    let p = Project::empty();
    p.write(
        "ml_metaopt_campaign.yaml",
        &example_campaign().replace(
            "name: gnn-mnist-optimization",
            "name: \"gnn-mnist-optimización-🚀\"",
        ),
    );
    let h = p.run_json(&["agent", "metaopt-load-campaign"]);
    assert_eq!(
        h["campaign_identity_hash"],
        "sha256:675dbe385f0a3ca0e1c85144d530bf1509c986c2014e9777f96150f818cf011f"
    );
}

#[test]
fn edits_outside_identity_keep_the_hash() {
    let p = Project::example_with(|s| {
        s.replace("max_budget_usd: 10", "max_budget_usd: 20")
            .replace("current_target: 5", "current_target: 2")
    });
    let h = p.run_json(&["agent", "metaopt-load-campaign"]);
    assert_eq!(h["campaign_identity_hash"], EXAMPLE_HASH);
}

#[test]
fn validate_reports_every_issue_with_lines() {
    let p = Project::empty();
    p.write("ok.yaml", &example_campaign());
    let ok = p.run(&["validate", "ok.yaml"]);
    assert!(ok.status.success(), "{}", text(&ok));
    let bad = example_campaign()
        .replace("num_sweep_agents: 4", "num_sweep_agents: true")
        .replace("entity: my-wandb-entity", "entity: YOUR_ENTITY")
        .replace("max_budget_usd: 10", "max_budget_usd: 500")
        .replace("provider: vast_ai", "provider: aws");
    let bad = bad[..bad.find("stop_conditions:").unwrap()].to_string();
    p.write("bad.yaml", &bad);
    let out = p.run(&["validate", "bad.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let t = text(&out);
    for needle in [
        "compute.num_sweep_agents: expected integer, got boolean true",
        "wandb.entity: contains a placeholder",
        "compute.max_budget_usd: must be in (0, 100]",
        "compute.provider: must be one of vast_ai",
        "missing required field: stop_conditions",
        "bad.yaml:18: compute.num_sweep_agents",
    ] {
        assert!(t.contains(needle), "missing {needle:?} in:\n{t}");
    }
}

#[test]
fn validate_names_empty_missing_and_unparsable_files() {
    let p = Project::empty();
    p.write("empty.yaml", "  \n");
    p.write("broken.yaml", "campaign: [unclosed\n");
    for (file, needle) in [
        ("empty.yaml", "campaign file is empty"),
        ("nope.yaml", "campaign file not found"),
        ("broken.yaml", "invalid yaml"),
    ] {
        let out = p.run(&["validate", file]);
        assert_eq!(out.status.code(), Some(1), "{file}");
        assert!(text(&out).contains(needle), "{file}: {}", text(&out));
    }
}

#[test]
fn invalid_campaign_blocks_load_with_every_issue() {
    let p = Project::example_with(|s| {
        s.replace("direction: maximize", "direction: sideways")
            .replace(
                "repo: git@github.com:my-org/dg_image.git",
                "repo: <your repo>",
            )
    });
    let h = p.run_json(&["agent", "metaopt-load-campaign"]);
    assert_eq!(h["campaign_valid"], false);
    assert_eq!(h["recommended_next_machine_state"], "BLOCKED_CONFIG");
    assert_eq!(h["recovery_action"], "repair ml_metaopt_campaign.yaml");
    assert_eq!(h["validation_issues"].as_array().map(Vec::len), Some(2));
    assert_eq!(h["preflight_readiness"]["status"], "not_evaluated");
    let actions: Vec<&str> = h["directives"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|d| d["action"].as_str())
        .collect();
    assert_eq!(actions, ["remove_agents_hook", "emit_final_report"]);
}

fn hydrate(p: &Project) -> Value {
    p.run_json(&[
        "agent",
        "metaopt-load-campaign",
        "--output",
        ".ml-metaopt/handoffs/load_campaign.latest.json",
    ]);
    p.run_json(&["agent", "metaopt-hydrate-state", "--apply-state"])
}

#[test]
fn hydrate_fresh_writes_state_and_hook_only_with_apply_state() {
    let p = Project::example();
    p.run_json(&[
        "agent",
        "metaopt-load-campaign",
        "--output",
        ".ml-metaopt/handoffs/load_campaign.latest.json",
    ]);
    let dry = p.run_json(&["agent", "metaopt-hydrate-state"]);
    assert_eq!(dry["resume_mode"], "fresh");
    assert!(
        !p.path(".ml-metaopt/state.json").exists(),
        "no --apply-state: no state written"
    );
    assert_eq!(dry["agents_hook_action"], "created");
    let h = p.run_json(&["agent", "metaopt-hydrate-state", "--apply-state"]);
    assert_eq!(h["recommended_next_machine_state"], "IDEATE");
    assert_eq!(h["agents_hook_action"], "unchanged");
    let s = p.state();
    assert_eq!(s["machine_state"], "IDEATE");
    assert_eq!(s["status"], "RUNNING");
    assert_eq!(
        s["proposal_cycle"],
        json!({"cycle_id": "iter-1-cycle-1", "current_pool_frozen": false})
    );
    assert_eq!(s["campaign_started_at"], NOW);
    assert!(
        p.read("AGENTS.md")
            .contains("<!-- ml-metaoptimization:begin -->")
    );
}

#[test]
fn hydrate_preserves_a_mismatched_state_byte_for_byte() {
    let p = Project::example();
    let fixture =
        std::fs::read_to_string(repo().join("tests/fixtures/state/running.json")).unwrap();
    p.write(".ml-metaopt/state.json", &fixture);
    p.write("AGENTS.md", "# mine\n");
    let h = hydrate(&p);
    assert_eq!(h["recommended_next_machine_state"], "BLOCKED_CONFIG");
    assert_eq!(
        h["recovery_action"],
        "archive or remove the stale state before starting a new campaign"
    );
    assert_eq!(p.read(".ml-metaopt/state.json"), fixture);
    assert_eq!(p.read("AGENTS.md"), "# mine\n");
}

#[test]
fn invalid_state_fixtures_are_runtime_errors_and_untouched() {
    for fixture in [
        "invalid-status-pair.json",
        "invalid-missing-proposal-cycle.json",
    ] {
        let p = Project::example();
        let text_before =
            std::fs::read_to_string(repo().join("tests/fixtures/state").join(fixture)).unwrap();
        p.write(".ml-metaopt/state.json", &text_before);
        let h = hydrate(&p);
        assert_eq!(
            h["recommended_next_machine_state"],
            Value::Null,
            "{fixture}"
        );
        assert_eq!(h["state_patch"], Value::Null);
        assert_eq!(
            h["recovery_action"],
            "repair or replace .ml-metaopt/state.json"
        );
        let summary = h["summary"].as_str().unwrap();
        let field = if fixture.contains("status") {
            "status"
        } else {
            "proposal_cycle"
        };
        assert!(summary.contains(field), "{fixture}: {summary}");
        assert_eq!(p.read(".ml-metaopt/state.json"), text_before);
        let step = p.run(&["step"]);
        assert_eq!(step.status.code(), Some(1), "step rejects {fixture}");
        assert!(
            text(&step).contains(".ml-metaopt/state.json"),
            "{}",
            text(&step)
        );
        assert_eq!(p.read(".ml-metaopt/state.json"), text_before);
    }
}

#[test]
fn crash_recovery_polls_the_existing_sweep() {
    let p = Project::example();
    let mut s: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("tests/fixtures/state/running.json")).unwrap(),
    )
    .unwrap();
    s["campaign_identity_hash"] = json!(EXAMPLE_HASH);
    p.write_json(".ml-metaopt/state.json", &s);
    let h = hydrate(&p);
    assert_eq!(h["recommended_next_machine_state"], "WAIT_FOR_SWEEP");
    let d = &h["directives"][0];
    assert_eq!(d["action"], "poll_sweep");
    assert_eq!(d["sweep_id"], "wandb-sweep-abc123");
    assert_eq!(
        d["result_file"],
        ".ml-metaopt/executor-events/poll-sweep-iter-2.json"
    );
    assert!(
        h["directives"]
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["action"] != "launch_sweep")
    );
}

#[test]
fn missing_load_handoff_is_a_runtime_error() {
    let p = Project::example();
    let out = p.run(&[
        "agent",
        "metaopt-background-control",
        "--mode",
        "plan_background_work",
    ]);
    assert!(out.status.success());
    let h: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        h["recovery_action"],
        "repair or replace load_campaign.latest.json"
    );
    assert!(h["summary"].as_str().unwrap().contains("missing"));
}

#[test]
fn unknown_agent_or_mode_is_a_usage_error() {
    let p = Project::example();
    let out = p.run(&["agent", "metaopt-background-controll", "--mode", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out).contains("did you mean `metaopt-background-control`"),
        "{}",
        text(&out)
    );
    let out = p.run(&["agent", "metaopt-background-control"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("needs --mode"));
}

#[test]
fn edited_tables_change_behaviour_without_rebuilding() {
    let mut p = Project::example_with(|s| s.replace("num_sweep_agents: 4", "num_sweep_agents: 20"));
    let out = p.run(&["validate"]);
    assert_eq!(out.status.code(), Some(1));
    let m = p.own_machine();
    edit_file(
        &m.join("schemas/campaign.yaml"),
        "min: 1, max: 16",
        "min: 1, max: 32",
    );
    let out = p.run(&["validate"]);
    assert!(out.status.success(), "{}", text(&out));
    // Retarget a transition: a fresh campaign starts in WAIT_FOR_PROPOSALS.
    edit_file(
        &m.join("agents/hydrate-state.yaml"),
        "- name: fresh-campaign\n        when: \"!state_file.exists\"\n        next: IDEATE",
        "- name: fresh-campaign\n        when: \"!state_file.exists\"\n        next: WAIT_FOR_PROPOSALS",
    );
    p.ready_preflight();
    let turn = p.step(&[]);
    assert_eq!(turn["machine_state"], "WAIT_FOR_PROPOSALS");
}

#[test]
fn broken_tables_are_reported_with_their_file() {
    let mut p = Project::example();
    let m = p.own_machine();
    edit_file(
        &m.join("agents/select-design.yaml"),
        "next: LOCAL_SANITY",
        "next: LOCAL_SANITYY",
    );
    edit_file(
        &m.join("agents/background-control.yaml"),
        "when: pool_size >= target",
        "when: pool_size >= targt",
    );
    let out = p.run(&["agent", "metaopt-load-campaign"]);
    assert_eq!(out.status.code(), Some(2));
    let t = text(&out);
    assert!(
        t.contains("select-design.yaml")
            && t.contains("unknown state `LOCAL_SANITYY`")
            && t.contains("did you mean `LOCAL_SANITY`"),
        "{t}"
    );
    assert!(
        t.contains("background-control.yaml") && t.contains("targt"),
        "{t}"
    );
}

#[test]
fn runaway_guard_is_stopped_by_the_sandbox() {
    let mut p = Project::example();
    let m = p.own_machine();
    edit_file(
        &m.join("agents/background-control.yaml"),
        "when: pool_size >= target",
        "when: \"{ let i = 0; loop { i += 1; } }\"",
    );
    p.step(&[]);
    let before = p.read(".ml-metaopt/state.json");
    let started = std::time::Instant::now();
    let turn = p.step(&[]);
    assert!(started.elapsed().as_secs() < 20);
    let summary = turn["phases"][1]["summary"]
        .as_str()
        .unwrap_or_default()
        .to_string()
        + turn["phases"][0]["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("operation limit"), "{turn}");
    assert_eq!(p.read(".ml-metaopt/state.json"), before, "state untouched");
}

/// Every file under `dir` (but the tables copy) with its bytes.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fn walk(
        root: &std::path::Path,
        at: &std::path::Path,
        out: &mut std::collections::BTreeMap<String, Vec<u8>>,
    ) {
        for entry in std::fs::read_dir(at).expect("read dir").flatten() {
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .expect("inside")
                .to_string_lossy()
                .to_string();
            if rel == "machine-copy" {
                continue;
            }
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.insert(rel, std::fs::read(&path).expect("read file"));
            }
        }
    }
    let mut out = std::collections::BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn phases_leaving_the_pools_unread_write_what_a_whole_parse_writes() {
    // Two copies of one campaign: the shipped tables, and the same tables without any
    // `unread:` column (every phase then builds the whole state).
    let p = Project::example();
    let mut whole = Project::example();
    let m = whole.own_machine();
    let mut stripped_tables = 0;
    for entry in std::fs::read_dir(m.join("agents"))
        .expect("agents")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).expect("table");
        let stripped: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("unread:"))
            .map(|l| format!("{l}\n"))
            .collect();
        if stripped != text {
            stripped_tables += 1;
            std::fs::write(entry.path(), stripped).expect("write table");
        }
    }
    assert!(stripped_tables >= 4, "the tables declare unread fields");
    // A third copy whose rollover plan reads the pools: at ROLL_ITERATION its phases
    // leave different fields unread, and a step guesses its phase before reading.
    let mut guess = Project::example();
    let g = guess
        .own_machine()
        .join("agents/iteration-close-control.yaml");
    let table = std::fs::read_to_string(&g).expect("table");
    let unread = "    unread: { state: [current_proposals, next_proposals] }\n";
    let plan = "  plan_roll_iteration:";
    let at = table.find(plan).expect("the plan") + plan.len();
    let column = at + table[at..].find(unread).expect("the plan's unread column");
    assert!(column < table.find("  gate_roll_iteration:").expect("the gate"));
    let edited = format!("{}{}", &table[..column], &table[column + unread.len()..]);
    std::fs::write(&g, edited).expect("write");
    let remote = "metaopt-remote-execution-control";
    let background = "metaopt-background-control";
    let close = "metaopt-iteration-close-control";
    // (The first merge finds empty pools: appended to `[]`; the second, full ones.)
    let cases = [
        ("WAIT_FOR_PROPOSALS", background, "gate_background_work"),
        (
            "SELECT_AND_DESIGN_SWEEP",
            "metaopt-hydrate-state",
            "hydrate",
        ),
        (
            "SELECT_AND_DESIGN_SWEEP",
            "metaopt-select-design",
            "plan_select_design",
        ),
        (
            "SELECT_AND_DESIGN_SWEEP",
            "metaopt-background-control",
            "plan_background_work",
        ),
        (
            "SELECT_AND_DESIGN_SWEEP",
            "metaopt-select-design",
            "finalize_select_design",
        ),
        ("LOCAL_SANITY", remote, "gate_local_sanity"),
        ("LAUNCH_SWEEP", remote, "plan_launch"),
        ("WAIT_FOR_SWEEP", remote, "poll_sweep"),
        ("ANALYZE", remote, "analyze"),
        ("ROLL_ITERATION", close, "plan_roll_iteration"),
        ("ROLL_ITERATION", close, "gate_roll_iteration"),
        ("WAIT_FOR_PROPOSALS", background, "gate_background_work"),
    ];
    for (i, (state, agent, mode)) in cases.into_iter().enumerate() {
        let turn = p.sim_until(state, 80);
        assert_eq!(turn["machine_state"], state, "{turn}");
        if mode == "gate_roll_iteration" {
            // The gate applies the rollover its plan wrote.
            let plan = [
                "agent",
                close,
                "--mode",
                "plan_roll_iteration",
                "--apply-state",
            ];
            assert!(p.run(&plan).status.success());
        }
        let pooled = p.state()["current_proposals"]
            .as_array()
            .is_some_and(|a| !a.is_empty());
        assert_eq!(
            pooled,
            i > 0,
            "{state}: the pools hold proposals after the first merge"
        );
        // A phase leaves the fields unread with or without --apply-state (written back,
        // they are printed from their text), and so does a step whose governing phase
        // does: each must write what the whole parse writes. The state is tried as
        // written and rewritten on one line (no guess at the machine state: the step
        // leaves unread what any phase may), with a proposal whose keys are out of
        // order and escaped (its pool printed from a parse, not from its text).
        let written = std::fs::read_to_string(p.path(".ml-metaopt/state.json")).expect("state");
        let one_line = serde_json::to_string(&p.state()).expect("prints").replacen(
            r#""current_proposals":[{"#,
            r#""current_proposals":[{"zz":"caf\u00e9 \/","#,
            1,
        );
        assert_eq!(one_line.contains("zz"), pooled, "a proposal to rewrite");
        if mode == "gate_background_work" {
            let results = std::fs::read_dir(p.path(".ml-metaopt/worker-results"))
                .expect("worker results")
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("bg-"))
                .count();
            assert!(results > 0, "{state}: ideation results to merge");
        }
        let runs: [&[&str]; 5] = [
            &["agent", "metaopt-orchestrator", "--mode", "gate"],
            &["agent", agent, "--mode", mode],
            &[
                "agent",
                "metaopt-orchestrator",
                "--mode",
                "gate",
                "--apply-state",
            ],
            &["agent", agent, "--mode", mode, "--apply-state"],
            &["step"],
        ];
        // Each run starts from the files the simulation reached (a run may change them).
        let saved = tempfile::tempdir().expect("tempdir");
        copy_dir(&p.path(".ml-metaopt"), saved.path());
        let hook = std::fs::read(p.path("AGENTS.md")).ok();
        let reset = |project: &Project, state_text: &str| {
            let _ = std::fs::remove_dir_all(project.path(".ml-metaopt"));
            copy_dir(saved.path(), &project.path(".ml-metaopt"));
            let _ = std::fs::remove_file(project.path("AGENTS.md"));
            if let Some(hook) = &hook {
                std::fs::write(project.path("AGENTS.md"), hook).expect("hook");
            }
            std::fs::write(project.path(".ml-metaopt/state.json"), state_text).expect("state");
        };
        for (layout, state_text) in [("as written", &written), ("on one line", &one_line)] {
            for args in runs {
                reset(&p, state_text);
                reset(&whole, state_text);
                let (a, b) = (p.run(args), whole.run(args));
                assert!(a.status.success(), "{args:?} {layout}: {}", text(&a));
                if args.contains(&"finalize_select_design") {
                    // The winner is looked up in the pool, and found.
                    assert!(text(&a).contains("sweep config final"), "{}", text(&a));
                }
                if args.contains(&"plan_roll_iteration") {
                    // Survivors picked and carried (the pools hold some by then).
                    assert!(text(&a).contains("proposal(s) carried"), "{}", text(&a));
                    assert!(!text(&a).contains(" 0 proposal(s) carried"), "{}", text(&a));
                }
                assert_eq!(text(&a), text(&b), "{args:?} {layout}: output");
                // The journal names each project's own tables (their hash): the rest of
                // each line must match.
                let files = |project: &Project| {
                    let mut files = snapshot(project.dir.path());
                    if let Some(journal) = files.get_mut(".ml-metaopt/journal.jsonl") {
                        let lines: Vec<String> = String::from_utf8_lossy(journal)
                            .lines()
                            .map(|l| {
                                let mut entry: Value = serde_json::from_str(l).expect("JSON");
                                entry["machine_hash"] = Value::Null;
                                entry["tables_changed"] = Value::Null;
                                entry.to_string()
                            })
                            .collect();
                        *journal = lines.join("\n").into_bytes();
                    }
                    files
                };
                let differ = |a: &Project, b: &Project| {
                    let (sa, sb) = (files(a), files(b));
                    let keys: Vec<String> = sa
                        .keys()
                        .chain(sb.keys())
                        .filter(|k| sa.get(*k) != sb.get(*k))
                        .cloned()
                        .collect();
                    keys
                };
                let found = differ(&p, &whole);
                assert!(
                    found.is_empty(),
                    "{args:?} {layout}: files differ: {found:?}"
                );
                if args == ["step"] {
                    reset(&guess, state_text);
                    let c = guess.run(args);
                    assert_eq!(text(&c), text(&b), "{state} {layout}: a guessing step");
                    let found = differ(&guess, &whole);
                    assert!(
                        found.is_empty(),
                        "{state} {layout}: a guessing step: {found:?}"
                    );
                }
            }
        }
        // The simulation goes on from where it was.
        reset(&p, &written);
    }
}
