//! Contract pins (spec sections 5-10): the example campaigns, the backend and
//! state fixtures, the status/machine_state pairing of every state, and the
//! consistency of SKILL.md + references/ with the machine tables.

mod common;
use common::*;

use regex_lite::Regex;
use serde_json::Value;
use serde_yaml::Value as Yaml;
use std::collections::{BTreeMap, BTreeSet};

/// Identity hash of examples/ml_metaopt_campaign.example.yaml.
const EXAMPLE_HASH: &str =
    "sha256:76d87a271abe95ba765ac749237a1383dd4c75956671de88f15bba9cca13bc81";

// ---------------------------------------------------------------- helpers

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: not YAML: {e}"))
}

fn fixture_json(rel: &str) -> Value {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: not JSON: {e}"))
}

fn keys(v: &Yaml) -> Vec<String> {
    v.as_mapping()
        .map(|m| {
            m.keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn str_list(v: &Yaml) -> Vec<String> {
    v.as_sequence()
        .map(|s| {
            s.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// One control agent table (machine/agents/*.yaml).
struct Agent {
    file: String,
    name: String,
    short_name: String,
    owns: Vec<String>,
    patches_state: bool,
    phases: Vec<String>,
}

fn agents() -> Vec<Agent> {
    let mut files: Vec<_> = std::fs::read_dir(repo().join("machine/agents"))
        .expect("machine/agents")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let rel = format!(
                "machine/agents/{}",
                p.file_name().unwrap().to_string_lossy()
            );
            let y = yaml(&rel);
            Agent {
                name: y["agent"].as_str().expect("agent").to_string(),
                short_name: y["short_name"].as_str().expect("short_name").to_string(),
                owns: str_list(&y["owns"]),
                patches_state: y["patches_state"].as_bool().unwrap_or(true),
                phases: keys(&y["phases"]),
                file: rel,
            }
        })
        .collect()
}

/// (state, status) from machine/states.yaml.
fn states() -> Vec<(String, String)> {
    let y = yaml("machine/states.yaml");
    let m = y["states"].as_mapping().expect("states mapping");
    m.iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("state name").to_string(),
                v["status"].as_str().expect("state status").to_string(),
            )
        })
        .collect()
}

/// SKILL.md and every references/*.md, as (name, text).
fn documents() -> Vec<(String, String)> {
    let mut docs = vec![("SKILL.md".to_string(), read("SKILL.md"))];
    let mut refs: Vec<_> = std::fs::read_dir(repo().join("references"))
        .expect("references")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    refs.sort();
    for p in refs {
        let rel = format!("references/{}", p.file_name().unwrap().to_string_lossy());
        docs.push((rel.clone(), read(&rel)));
    }
    docs
}

/// True when `name` occurs in `text` as a whole identifier.
fn mentions(text: &str, name: &str) -> bool {
    let re = Regex::new(&format!(
        r"(?:^|[^A-Za-z0-9_-]){}(?:$|[^A-Za-z0-9_])",
        regex_lite::escape(name)
    ))
    .expect("regex");
    re.is_match(text)
}

/// A project holding `state` as its state file; returns `status --json` output.
fn status_of(state: &Value) -> std::process::Output {
    let p = Project::empty();
    p.write_json(".ml-metaopt/state.json", state);
    p.run(&["status", "--json"])
}

// ------------------------------------------------------ 1. example campaigns

#[test]
fn example_campaigns_validate_and_hash_as_documented() {
    let minimize_text = read("examples/ml_metaopt_campaign.minimize.yaml");
    let comment_hash = Regex::new(r"(?m)^#.*?(sha256:[0-9a-f]{64})")
        .unwrap()
        .captures(&minimize_text)
        .map(|c| c[1].to_string())
        .expect("minimize example: no `sha256:<hex>` identity hash in its comments");
    for (file, expected) in [
        ("examples/ml_metaopt_campaign.example.yaml", EXAMPLE_HASH),
        (
            "examples/ml_metaopt_campaign.minimize.yaml",
            comment_hash.as_str(),
        ),
    ] {
        let path = repo().join(file);
        let p = Project::empty();
        let out = p.run(&["validate", path.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{file} does not validate: {}",
            text(&out)
        );
        let h = p.run_json(&[
            "agent",
            "metaopt-load-campaign",
            "--campaign-path",
            path.to_str().unwrap(),
        ]);
        assert_eq!(h["campaign_valid"], true, "{file}: campaign_valid: {h}");
        assert_eq!(
            h["campaign_identity_hash"], expected,
            "{file}: campaign_identity_hash differs from the documented {expected}"
        );
    }
}

// ------------------------------------------------------ 2. backend payloads

fn require(file: &str, v: &Value, field: &str, ok: impl Fn(&Value) -> bool, what: &str) {
    assert!(
        ok(&v[field]),
        "{file}: field `{field}` must be {what}, got {}",
        v[field]
    );
}

#[test]
fn backend_fixtures_carry_the_fields_of_their_operation() {
    let dir = repo().join("tests/fixtures/backend");
    let mut seen = BTreeSet::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("backend fixtures")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let is_str = |v: &Value| v.as_str().is_some_and(|s| !s.is_empty());
    let is_int = |v: &Value| v.is_i64();
    let is_str_list = |v: &Value| {
        v.as_array()
            .is_some_and(|a| a.iter().all(|x| x.as_str().is_some()))
    };
    for name in names {
        let file = format!("tests/fixtures/backend/{name}");
        let v = fixture_json(&file);
        let op = v["operation"].as_str().unwrap_or_default().to_string();
        require(&file, &v, "exit_code", is_int, "an integer");
        match op.as_str() {
            "launch_sweep" => {
                for f in ["sweep_id", "sweep_url", "launched_at"] {
                    require(&file, &v, f, is_str, "a non-empty string");
                }
                require(&file, &v, "sky_job_ids", is_str_list, "a list of strings");
            }
            "poll_sweep" => {
                require(
                    &file,
                    &v,
                    "sweep_status",
                    |s| {
                        ["running", "completed", "failed", "budget_exceeded"]
                            .contains(&s.as_str().unwrap_or_default())
                    },
                    "one of running|completed|failed|budget_exceeded",
                );
                require(&file, &v, "best_metric_value", Value::is_number, "a number");
                require(&file, &v, "best_run_id", is_str, "a non-empty string");
                require(&file, &v, "killed_runs", is_str_list, "a list of strings");
                require(
                    &file,
                    &v,
                    "cumulative_spend_usd",
                    |s| s.as_f64().is_some_and(|x| x >= 0.0),
                    "a number >= 0",
                );
            }
            other => panic!("{file}: unknown operation {other:?} (launch_sweep|poll_sweep)"),
        }
        seen.insert(op);
    }
    assert!(
        seen.contains("launch_sweep") && seen.contains("poll_sweep"),
        "tests/fixtures/backend/ must hold launch and poll payloads, has {seen:?}"
    );
}

#[test]
fn poll_fixtures_drive_the_poll_phase_as_documented() {
    let running = fixture_json("tests/fixtures/state/running.json");
    let iteration = running["current_iteration"].as_i64().expect("iteration");
    for (fixture, next, summary) in [
        ("poll-sweep-running.json", Value::Null, "still running"),
        ("poll-sweep-completed.json", "ANALYZE".into(), ""),
        (
            "poll-sweep-budget-exceeded.json",
            "BLOCKED_CONFIG".into(),
            "",
        ),
    ] {
        let p = Project::empty();
        p.write("ml_metaopt_campaign.yaml", &example_campaign());
        p.write_json(
            ".ml-metaopt/preflight-readiness.json",
            &serde_json::json!({"schema_version": 1, "status": "READY",
                "campaign_identity_hash": EXAMPLE_HASH, "failures": [], "next_action": "x"}),
        );
        let mut state = running.clone();
        state["campaign_identity_hash"] = EXAMPLE_HASH.into();
        p.write_json(".ml-metaopt/state.json", &state);
        let load = p.run_json(&[
            "agent",
            "metaopt-load-campaign",
            "--output",
            ".ml-metaopt/handoffs/load_campaign.latest.json",
        ]);
        assert_eq!(
            load["recommended_next_machine_state"], "HYDRATE_STATE",
            "{load}"
        );
        let payload = read(&format!("tests/fixtures/backend/{fixture}"));
        p.write(
            &format!(".ml-metaopt/executor-events/poll-sweep-iter-{iteration}.json"),
            &payload,
        );
        let h = p.run_json(&[
            "agent",
            "metaopt-remote-execution-control",
            "--mode",
            "poll_sweep",
        ]);
        assert_eq!(
            h["recommended_next_machine_state"], next,
            "{fixture}: poll phase recommended the wrong state: {h}"
        );
        assert_eq!(h["handoff_type"], "remote_execution.poll_sweep", "{h}");
        assert!(
            h["recovery_action"].is_null(),
            "{fixture}: poll phase hit a runtime error: {h}"
        );
        let summary_text = h["summary"].as_str().unwrap_or_default();
        assert!(
            summary_text.contains(summary),
            "{fixture}: summary {summary_text:?} lacks {summary:?}"
        );
        let payload: Value = serde_json::from_str(&payload).unwrap();
        // The patch is a minimal diff: an unchanged spend is absent from it.
        let patched = &h["state_patch"]["current_sweep"]["cumulative_spend_usd"];
        let spend = if patched.is_null() {
            &state["current_sweep"]["cumulative_spend_usd"]
        } else {
            patched
        };
        assert_eq!(
            spend.as_f64(),
            payload["cumulative_spend_usd"].as_f64(),
            "{fixture}: spend not copied into current_sweep: {h}"
        );
        if fixture.contains("budget") {
            let w = h["warnings"].to_string();
            assert!(
                w.contains("budget exceeded"),
                "{fixture}: warnings lack `budget exceeded`: {w}"
            );
        }
    }
}

// ------------------------------------------------------ 3. state fixtures

#[test]
fn state_fixtures_load_or_are_rejected_naming_the_field() {
    for valid in ["running.json", "complete.json", "blocked-protocol.json"] {
        let file = format!("tests/fixtures/state/{valid}");
        let state = fixture_json(&file);
        let out = status_of(&state);
        assert!(
            out.status.success(),
            "{file} must load (`status --json`): {}",
            text(&out)
        );
        let s: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
        assert_eq!(s["machine_state"], state["machine_state"], "{file}: {s}");
        assert_eq!(s["status"], state["status"], "{file}: {s}");
    }
    for (invalid, field) in [
        ("invalid-status-pair.json", "status"),
        ("invalid-missing-proposal-cycle.json", "proposal_cycle"),
    ] {
        let file = format!("tests/fixtures/state/{invalid}");
        let out = status_of(&fixture_json(&file));
        let msg = text(&out);
        assert!(
            !out.status.success(),
            "{file} must be rejected, loaded: {msg}"
        );
        assert!(
            msg.contains("invalid state file") && msg.contains(field),
            "{file}: rejection must name `{field}`: {msg}"
        );
    }
}

// ------------------------------------------------------ 4. status pairing

#[test]
fn every_state_pairs_with_exactly_its_status() {
    let states = states();
    let schema = yaml("machine/schemas/state.yaml");
    let statuses = str_list(&schema["fields"]["status"]["enum"]);
    assert!(statuses.len() >= 5, "status enum: {statuses:?}");
    let base = fixture_json("tests/fixtures/state/running.json");
    std::thread::scope(|s| {
        for (state, status) in &states {
            assert!(
                statuses.contains(status),
                "machine/states.yaml: {state} has status {status} outside the schema enum {statuses:?}"
            );
            for candidate in &statuses {
                let base = &base;
                s.spawn(move || {
                    let mut v = base.clone();
                    v["machine_state"] = state.as_str().into();
                    v["status"] = candidate.as_str().into();
                    let out = status_of(&v);
                    if candidate == status {
                        assert!(
                            out.status.success(),
                            "machine_state {state} with its status {status} must load: {}",
                            text(&out)
                        );
                    } else {
                        let msg = text(&out);
                        assert!(
                            !out.status.success() && msg.contains("status"),
                            "machine_state {state} with status {candidate} (expected {status}) \
                             must be rejected naming `status`: {msg}"
                        );
                    }
                });
            }
        }
    });
}

// ------------------------------------------------------ 5. documents vs tables

/// Everything the documents should talk about, read from machine/.
struct Tables {
    states: Vec<String>,
    agents: Vec<Agent>,
    actions: Vec<String>,
    blocked: Vec<String>,
    workers: Vec<String>,
    state_fields: Vec<String>,
    campaign_sections: Vec<String>,
    orchestrator_keys: Vec<String>,
    layout: BTreeMap<String, String>,
}

fn tables() -> Tables {
    let policy = yaml("machine/policy.yaml");
    let layout = policy["orchestrator"]["layout"]
        .as_mapping()
        .expect("orchestrator.layout")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().unwrap().to_string(),
                v.as_str().unwrap().to_string(),
            )
        })
        .collect();
    Tables {
        states: states().into_iter().map(|(s, _)| s).collect(),
        agents: agents(),
        actions: keys(&policy["directives"]),
        blocked: str_list(&policy["blocked_directives"]),
        workers: keys(&policy["workers"]),
        state_fields: keys(&yaml("machine/schemas/state.yaml")["fields"]),
        campaign_sections: keys(&yaml("machine/schemas/campaign.yaml")["fields"]),
        orchestrator_keys: keys(&policy["orchestrator"]),
        layout,
    }
}

#[test]
fn every_machine_name_is_documented() {
    let t = tables();
    let docs = documents();
    let all: String = docs.iter().map(|(_, d)| d.as_str()).collect();
    let mut missing = Vec::new();
    let mut check = |kind: &str, name: &str, source: &str| {
        if !mentions(&all, name) {
            missing.push(format!(
                "{kind} `{name}` ({source}) is mentioned nowhere in SKILL.md or references/"
            ));
        }
    };
    for s in &t.states {
        check("state", s, "machine/states.yaml");
    }
    for a in &t.agents {
        check("control agent", &a.name, &a.file);
        for p in &a.phases {
            check("phase", p, &a.file);
            check("handoff_type", &format!("{}.{}", a.short_name, p), &a.file);
        }
    }
    for d in &t.actions {
        check("directive action", d, "machine/policy.yaml directives");
    }
    for d in &t.blocked {
        check(
            "blocked directive",
            d,
            "machine/policy.yaml blocked_directives",
        );
    }
    for w in &t.workers {
        check("worker", w, "machine/policy.yaml workers");
    }
    for f in &t.state_fields {
        check("state field", f, "machine/schemas/state.yaml");
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

#[test]
fn every_machine_like_token_in_the_documents_exists() {
    let t = tables();
    let states: BTreeSet<&str> = t.states.iter().map(String::as_str).collect();
    let mut agent_like: BTreeSet<&str> = t.agents.iter().map(|a| a.name.as_str()).collect();
    agent_like.extend(t.workers.iter().map(String::as_str));
    // Not a machine name: `metaopt-preflight` is the readiness-check skill that the
    // load-campaign table's recovery text tells users to run.
    agent_like.insert("metaopt-preflight");
    let phases: BTreeMap<&str, BTreeSet<&str>> = t
        .agents
        .iter()
        .map(|a| {
            (
                a.short_name.as_str(),
                a.phases.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    // `a.b` tokens whose `a` is a campaign section, a state field or a rule-scope
    // variable are dotted paths, not handoff types.
    let mut namespaces: BTreeSet<&str> = t
        .campaign_sections
        .iter()
        .chain(&t.state_fields)
        .map(String::as_str)
        .collect();
    namespaces.extend(["args", "vars", "hook", "state", "metric", "campaign"]);

    let state_re = Regex::new(r"<?\b[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+\b>?").unwrap();
    let agent_re = Regex::new(r"\bmetaopt-[a-z0-9]+(?:-[a-z0-9]+)*").unwrap();
    let dotted_re = Regex::new(r#"[`"]([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)[`"]"#).unwrap();
    let mut bad = Vec::new();
    let (mut n_states, mut n_agents, mut n_handoffs) = (0, 0, 0);
    for (doc, body) in documents() {
        for m in state_re.find_iter(&body) {
            n_states += 1;
            let tok = m.as_str();
            // Allowed, not machine states: `<PLACEHOLDER>`s (e.g. `<MACHINE_STATE>` in a
            // path pattern), METAOPT_* environment variables, and YOUR_* campaign
            // placeholders (schemas/campaign.yaml rejects them).
            if tok.starts_with('<')
                || tok.starts_with("METAOPT_")
                || tok.starts_with("YOUR_")
                || states.contains(tok)
            {
                continue;
            }
            bad.push(format!(
                "{doc}: state-like token `{tok}` is not a state of machine/states.yaml"
            ));
        }
        for m in agent_re.find_iter(&body) {
            n_agents += 1;
            let tok = m.as_str();
            if !agent_like.contains(tok) {
                bad.push(format!(
                    "{doc}: agent-like token `{tok}` is neither an agent of machine/agents/ \
                     nor a worker of machine/policy.yaml"
                ));
            }
        }
        for c in dotted_re.captures_iter(&body) {
            let (a, b) = (&c[1], &c[2]);
            if ["md", "yaml", "rhai", "json", "jsonl"].contains(&b) || namespaces.contains(a) {
                continue;
            }
            let handoff_like = phases.contains_key(a) || a.contains('_');
            if !handoff_like {
                continue;
            }
            n_handoffs += 1;
            // `orchestrator.<key>` also names keys of policy.yaml's orchestrator section.
            let ok = phases.get(a).is_some_and(|p| p.contains(b))
                || (a == "orchestrator" && t.orchestrator_keys.iter().any(|k| k == b));
            if !ok {
                bad.push(format!(
                    "{doc}: handoff_type-like `{a}.{b}` is not <short_name>.<phase> of any agent \
                     in machine/agents/ (short names and phases: {phases:?})"
                ));
            }
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
    // The scan saw the documents at all (a broken regex would pass vacuously).
    assert!(
        n_states >= 10 && n_agents >= 10 && n_handoffs >= 12,
        "too few tokens scanned: {n_states} state-like, {n_agents} agent-like, \
         {n_handoffs} handoff_type-like"
    );
}

#[test]
fn per_iteration_paths_match_paths_rhai() {
    let t = tables();
    let lib = read("machine/lib/paths.rhai");
    let def = Regex::new(r#"iter_file\(args\.([a-z_]+), "([a-z-]+)", iteration, "\.([a-z]+)"\)"#)
        .unwrap();
    // stem-iter-<N>.ext -> directory
    let mut table: BTreeMap<String, String> = BTreeMap::new();
    for c in def.captures_iter(&lib) {
        let dir_key = c[1].trim_end_matches("_dir");
        let dir = t
            .layout
            .get(dir_key)
            .unwrap_or_else(|| panic!("paths.rhai: args.{} not in orchestrator.layout", &c[1]));
        table.insert(format!("{}-iter-<N>.{}", &c[2], &c[3]), dir.clone());
    }
    assert!(
        table.len() >= 5,
        "paths.rhai: iter_file patterns: {table:?}"
    );
    let used =
        Regex::new(r"(?:(\.ml-metaopt/[a-z-]+)/)?\b([a-z]+(?:-[a-z]+)*-iter-<N>\.[a-z]+)").unwrap();
    let mut bad = Vec::new();
    let mut mentioned = BTreeSet::new();
    for (doc, body) in documents() {
        for c in used.captures_iter(&body) {
            let pattern = &c[2];
            match table.get(pattern) {
                None => bad.push(format!(
                    "{doc}: per-iteration path `{pattern}` is not built by machine/lib/paths.rhai \
                     (known: {:?})",
                    table.keys().collect::<Vec<_>>()
                )),
                Some(dir) => {
                    mentioned.insert(pattern.to_string());
                    if let Some(d) = c.get(1)
                        && d.as_str() != dir
                    {
                        bad.push(format!(
                            "{doc}: `{}/{pattern}` lives in `{dir}/` per machine/lib/paths.rhai",
                            d.as_str()
                        ));
                    }
                }
            }
        }
    }
    for p in table.keys() {
        if !mentioned.contains(p) {
            bad.push(format!(
                "machine/lib/paths.rhai builds `{p}` but no document mentions it"
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn ownership_table_matches_each_agent() {
    let doc = "references/control-protocol.md";
    let body = read(doc);
    let begin = "<!-- generated:ownership:begin -->";
    let end = "<!-- generated:ownership:end -->";
    let start = body
        .find(begin)
        .unwrap_or_else(|| panic!("{doc}: no {begin}"));
    let stop = body.find(end).unwrap_or_else(|| panic!("{doc}: no {end}"));
    let mut rows: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in body[start..stop].lines() {
        let cells: Vec<String> = line
            .trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect();
        if cells.len() == 4 && cells[0].starts_with("metaopt-") {
            rows.insert(cells[0].clone(), cells);
        }
    }
    let agents = agents();
    let mut bad = Vec::new();
    for a in &agents {
        let Some(row) = rows.get(&a.name) else {
            bad.push(format!("{doc}: ownership table has no row for {}", a.name));
            continue;
        };
        let owns: Vec<String> = if row[2] == "—" {
            vec![]
        } else {
            row[2].split(',').map(|s| s.trim().to_string()).collect()
        };
        if row[1] != a.short_name {
            bad.push(format!(
                "{doc}: {} short_name `{}`, expected `{}` ({})",
                a.name, row[1], a.short_name, a.file
            ));
        }
        if owns != a.owns {
            bad.push(format!(
                "{doc}: {} may patch {owns:?}, expected owns {:?} ({})",
                a.name, a.owns, a.file
            ));
        }
        if row[3] != a.patches_state.to_string() {
            bad.push(format!(
                "{doc}: {} patches_state `{}`, expected `{}` ({})",
                a.name, row[3], a.patches_state, a.file
            ));
        }
    }
    for name in rows.keys() {
        if !agents.iter().any(|a| &a.name == name) {
            bad.push(format!("{doc}: ownership row for unknown agent `{name}`"));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}
