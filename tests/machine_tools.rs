//! Integration tests of `metaopt machine check | graph | diff | docs`: the
//! real binary runs on temp copies of `machine/`, each deliberately broken or
//! edited the way a reviewer would, and on temp `references/` documents.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository's `machine/`.
fn shipped() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("machine")
}

/// Runs the binary; returns the exit code and stdout + stderr.
fn run(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_metaopt"))
        .args(args)
        .env_remove("METAOPT_MACHINE")
        .output()
        .expect("run metaopt");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// A temp copy of the shipped tables.
struct Tables {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Tables {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("machine");
        copy_dir(&shipped(), &dir);
        Self { _tmp: tmp, dir }
    }

    fn path(&self) -> &str {
        self.dir.to_str().expect("utf-8 path")
    }

    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel)).expect("read table")
    }

    fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.dir.join(rel), text).expect("write table");
    }

    /// Replaces the first `from` found after `anchor` in a table file.
    fn edit_after(&self, rel: &str, anchor: &str, from: &str, to: &str) -> &Self {
        let text = self.read(rel);
        let start = text
            .find(anchor)
            .unwrap_or_else(|| panic!("{rel}: anchor {anchor:?} not found"));
        let at = text[start..]
            .find(from)
            .unwrap_or_else(|| panic!("{rel}: {from:?} not found after {anchor:?}"))
            + start;
        self.write(
            rel,
            &format!("{}{to}{}", &text[..at], &text[at + from.len()..]),
        );
        self
    }

    /// Replaces the first `from` in a table file.
    fn edit(&self, rel: &str, from: &str, to: &str) -> &Self {
        self.edit_after(rel, "", from, to)
    }

    fn append(&self, rel: &str, text: &str) -> &Self {
        let mut all = self.read(rel);
        if !all.ends_with('\n') {
            all.push('\n');
        }
        all.push_str(text);
        self.write(rel, &all);
        self
    }

    fn check(&self) -> (i32, String) {
        run(&["machine", "check", "--machine", self.path()])
    }
}

/// Asserts `check` fails and reports `kind` at `file:LINE:` with every needle.
fn assert_finding(t: &Tables, file: &str, kind: &str, needles: &[&str]) -> String {
    let (code, out) = t.check();
    assert_eq!(code, 1, "check should fail:\n{out}");
    let line = out
        .lines()
        .find(|l| l.contains(&format!(": {kind}: ")) && needles.iter().all(|n| l.contains(n)))
        .unwrap_or_else(|| panic!("no `{kind}` finding with {needles:?}:\n{out}"));
    let shown = t.dir.join(file).display().to_string();
    let rest = line
        .strip_prefix(&format!("{shown}:"))
        .unwrap_or_else(|| panic!("finding does not start with {shown}: {line}"));
    let number: String = rest.chars().take_while(char::is_ascii_digit).collect();
    assert!(
        number.parse::<usize>().is_ok_and(|n| n > 0),
        "no line number: {line}"
    );
    assert!(line.contains("(fix: "), "no fix hint: {line}");
    out
}

/// The line (1-based) of the first occurrence of `needle` in a table.
fn line_of(t: &Tables, rel: &str, needle: &str) -> usize {
    let text = t.read(rel);
    let at = text.find(needle).expect("needle");
    text[..at].matches('\n').count() + 1
}

// ---------------------------------------------------------------- check

#[test]
fn check_passes_on_the_shipped_machine() {
    let (code, out) = run(&["machine", "check"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no findings"), "{out}");
    let t = Tables::new();
    let (code, out) = t.check();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("no findings"), "{out}");
}

#[test]
fn check_reports_an_unknown_state() {
    let t = Tables::new();
    t.edit(
        "agents/select-design.yaml",
        "next: LOCAL_SANITY",
        "next: LOCAL_SANITYY",
    );
    let out = assert_finding(
        &t,
        "agents/select-design.yaml",
        "unknown-reference",
        &[
            "unknown state `LOCAL_SANITYY`",
            "did you mean `LOCAL_SANITY`",
        ],
    );
    // The consequences of the hole (dead ends) are not reported on top of it.
    assert!(!out.contains("dead-end"), "{out}");
}

#[test]
fn check_reports_an_unknown_agent() {
    let t = Tables::new();
    t.edit_after(
        "states.yaml",
        "  IDEATE:",
        "agent: metaopt-background-control",
        "agent: metaopt-background-contrl",
    );
    assert_finding(
        &t,
        "states.yaml",
        "unknown-reference",
        &["`IDEATE`", "unknown agent `metaopt-background-contrl`"],
    );
}

#[test]
fn check_reports_an_unknown_gate_phase_and_unreached_orchestrator_phase() {
    let t = Tables::new();
    t.edit("policy.yaml", "gate_phase: gate", "gate_phase: gaet");
    assert_finding(
        &t,
        "policy.yaml",
        "unknown-reference",
        &["gate_phase `gaet`", "did you mean `gate`"],
    );
    let t = Tables::new();
    t.append(
        "agents/orchestrator.yaml",
        "\n  spare_gate:\n    steps:\n      - name: pass\n        next: ~\n",
    );
    assert_finding(
        &t,
        "agents/orchestrator.yaml",
        "unreached-phase",
        &["`orchestrator.spare_gate`"],
    );
}

#[test]
fn check_reports_a_running_state_without_agent() {
    let t = Tables::new();
    t.edit_after(
        "states.yaml",
        "  ANALYZE:",
        "    agent: metaopt-remote-execution-control\n    phases: [{ phase: analyze }]\n",
        "",
    );
    assert_finding(
        &t,
        "states.yaml",
        "no-agent",
        &["`ANALYZE` has no governing agent"],
    );
}

#[test]
fn check_reports_a_phase_no_state_dispatches() {
    let t = Tables::new();
    t.append(
        "agents/background-control.yaml",
        "\n  spare_phase:\n    description: nobody runs this\n    steps:\n      - name: idle\n        next: ~\n",
    );
    let out = assert_finding(
        &t,
        "agents/background-control.yaml",
        "unreached-phase",
        &["`background_control.spare_phase`"],
    );
    let line = line_of(&t, "agents/background-control.yaml", "  spare_phase:");
    assert!(
        out.contains(&format!("background-control.yaml:{line}: unreached-phase")),
        "{out}"
    );
}

#[test]
fn check_reports_an_unreachable_state() {
    let t = Tables::new();
    t.append(
        "states.yaml",
        "  ORPHAN:\n    kind: running\n    status: RUNNING\n    agent: metaopt-background-control\n    phases: [{ phase: plan_background_work }]\n    description: nobody moves here\n",
    );
    let out = assert_finding(
        &t,
        "states.yaml",
        "unreachable-state",
        &["`ORPHAN` cannot be reached from the initial state"],
    );
    let line = line_of(&t, "states.yaml", "  ORPHAN:");
    assert!(
        out.contains(&format!("states.yaml:{line}: unreachable-state")),
        "{out}"
    );
}

#[test]
fn check_reports_a_state_that_can_never_end() {
    let t = Tables::new();
    // Both ways out of ANALYZE now stay: no rule path reaches a terminal state.
    let rel = "agents/remote-execution-control.yaml";
    t.edit_after(
        rel,
        "name: baseline-improved",
        "next: ROLL_ITERATION",
        "next: ~",
    )
    .edit_after(
        rel,
        "name: baseline-kept",
        "next: ROLL_ITERATION",
        "next: ~",
    );
    assert_finding(&t, "states.yaml", "dead-end", &["state `ANALYZE`"]);
    assert_finding(
        &t,
        "states.yaml",
        "unreachable-state",
        &["`ROLL_ITERATION`"],
    );
}

#[test]
fn check_reports_a_guard_with_an_unknown_variable() {
    let t = Tables::new();
    t.edit(
        "agents/background-control.yaml",
        "when: pool_size >= target",
        "when: pool_sizee >= target",
    );
    let out = assert_finding(
        &t,
        "agents/background-control.yaml",
        "guard",
        &["pool-ready", "pool_sizee"],
    );
    let line = line_of(&t, "agents/background-control.yaml", "name: pool-ready");
    assert!(
        out.contains(&format!("background-control.yaml:{line}: guard")),
        "{out}"
    );
}

#[test]
fn check_reports_a_guard_that_does_not_compile() {
    let t = Tables::new();
    t.edit(
        "agents/background-control.yaml",
        "when: pool_size >= target",
        "when: pool_size >= ",
    );
    assert_finding(
        &t,
        "agents/background-control.yaml",
        "guard",
        &["guard does not compile"],
    );
}

#[test]
fn check_reports_a_rule_body_that_does_not_compile() {
    // Rule bodies of the embedded tables compile when the rule fires; tables checked or
    // given with --machine compile them all at load.
    let t = Tables::new();
    t.edit(
        "agents/background-control.yaml",
        "pool at ${merged.current_count}/${target}",
        "pool at ${merged.current_count(}",
    );
    let out = assert_finding(
        &t,
        "agents/background-control.yaml",
        "load",
        &["gate_background_work.pool-building.summary", "Unexpected"],
    );
    let (code, _) = run(&[
        "agent",
        "metaopt-background-control",
        "--mode",
        "gate_background_work",
        "--machine",
        t.path(),
    ]);
    assert_eq!(code, 2, "a directory that does not load: {out}");
}

#[test]
fn check_reports_a_yaml_error_with_its_line() {
    let t = Tables::new();
    t.edit(
        "policy.yaml",
        "handoff_schema_version: 1",
        "handoff_schema_version: [1",
    );
    assert_finding(&t, "policy.yaml", "load", &[]);
}

#[test]
fn check_reports_a_rule_shadowed_by_an_unguarded_rule() {
    let t = Tables::new();
    t.edit(
        "agents/remote-execution-control.yaml",
        "        when: smoke.value.timed_out == true\n",
        "",
    );
    assert_finding(
        &t,
        "agents/remote-execution-control.yaml",
        "shadowed-rule",
        &[
            "`smoke-exit-nonzero`",
            "earlier rule `smoke-timed-out` has no guard",
        ],
    );
}

#[test]
fn check_reports_a_rule_shadowed_by_an_identical_guard() {
    let t = Tables::new();
    t.edit(
        "agents/iteration-close-control.yaml",
        "when: state.current_iteration >= stops.max_iterations",
        "when: \"state.no_improve_iterations   >=  stops.max_no_improve_iterations\"",
    );
    assert_finding(
        &t,
        "agents/iteration-close-control.yaml",
        "shadowed-rule",
        &[
            "`stop-no-improvement`",
            "`stop-max-iterations` has the same guard",
        ],
    );
}

#[test]
fn check_reports_a_set_outside_ownership() {
    let t = Tables::new();
    t.edit(
        "agents/select-design.yaml",
        "owns: [proposal_cycle, selected_sweep, next_action]",
        "owns: [proposal_cycle, next_action]",
    );
    assert_finding(
        &t,
        "agents/select-design.yaml",
        "ownership",
        &["sets `selected_sweep`", "does not own `selected_sweep`"],
    );
}

#[test]
fn check_reports_an_append_outside_ownership() {
    let t = Tables::new();
    t.edit(
        "agents/background-control.yaml",
        "owns: [proposal_cycle, current_proposals, next_proposals, next_action]",
        "owns: [proposal_cycle, current_proposals, next_action]",
    );
    assert_finding(
        &t,
        "agents/background-control.yaml",
        "ownership",
        &["appends `next_proposals`", "does not own `next_proposals`"],
    );
}

#[test]
fn check_reports_unknown_and_blocked_directive_actions() {
    let t = Tables::new();
    let rel = "agents/remote-execution-control.yaml";
    t.edit(rel, "- action: run_smoke_test", "- action: run_smoke_tset")
        .edit(rel, "- action: launch_sweep", "- action: raw_ssh");
    assert_finding(
        &t,
        rel,
        "directive",
        &[
            "unknown action `run_smoke_tset`",
            "did you mean `run_smoke_test`",
        ],
    );
    assert_finding(&t, rel, "directive", &["blocked action `raw_ssh`"]);
}

#[test]
fn check_reports_a_directive_without_a_required_field() {
    let t = Tables::new();
    let rel = "agents/remote-execution-control.yaml";
    t.edit_after(
        rel,
        "- action: run_smoke_test",
        "            result_file: = smoke_path\n",
        "",
    );
    assert_finding(
        &t,
        rel,
        "directive",
        &[
            "`smoke-test-needed`",
            "`run_smoke_test` lacks required field `result_file`",
        ],
    );
}

#[test]
fn check_reports_a_terminal_transition_without_cleanup() {
    let t = Tables::new();
    let rel = "agents/remote-execution-control.yaml";
    t.edit_after(
        rel,
        "name: smoke-timed-out",
        "- template: remove_agents_hook",
        "- template: emit_final_report",
    );
    assert_finding(
        &t,
        rel,
        "cleanup",
        &[
            "`smoke-timed-out`",
            "terminal state `FAILED`",
            "`remove_agents_hook`",
        ],
    );
}

#[test]
fn check_reports_every_problem_at_once() {
    let t = Tables::new();
    t.edit(
        "agents/select-design.yaml",
        "owns: [proposal_cycle, selected_sweep, next_action]",
        "owns: [proposal_cycle, next_action]",
    )
    .edit(
        "agents/remote-execution-control.yaml",
        "- action: run_smoke_test",
        "- action: run_smoke_tset",
    )
    .edit(
        "agents/background-control.yaml",
        "when: pool_size >= target",
        "when: pool_sizee >= target",
    );
    let (code, out) = t.check();
    assert_eq!(code, 1, "{out}");
    for kind in [": ownership: ", ": directive: ", ": guard: "] {
        assert!(out.contains(kind), "missing {kind}:\n{out}");
    }
    assert!(out.contains("3 finding(s)"), "{out}");
}

#[test]
fn check_of_a_missing_directory_is_a_usage_error() {
    let (code, out) = run(&["machine", "check", "--machine", "/nonexistent/machine"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("not found"), "{out}");
}

// ---------------------------------------------------------------- diff

fn diff(old: &Tables, new: &Tables, format: &str) -> (i32, String) {
    run(&[
        "machine",
        "diff",
        old.path(),
        new.path(),
        "--format",
        format,
    ])
}

#[test]
fn diff_of_identical_tables_is_empty() {
    let (a, b) = (Tables::new(), Tables::new());
    let (code, out) = diff(&a, &b, "text");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "no semantic change");
}

#[test]
fn diff_of_a_pure_reformat_is_no_semantic_change() {
    let (a, b) = (Tables::new(), Tables::new());
    // Round-trip every YAML table through a parser: comments, quoting, flow
    // style, anchors and key layout all change; the meaning does not.
    let mut rels = vec!["states.yaml".to_string(), "policy.yaml".to_string()];
    for entry in std::fs::read_dir(b.dir.join("agents")).expect("agents") {
        let name = entry.expect("entry").file_name();
        rels.push(format!("agents/{}", name.to_string_lossy()));
    }
    for rel in &rels {
        let value: serde_yaml::Value = serde_yaml::from_str(&b.read(rel)).expect("parse");
        let text = serde_yaml::to_string(&value).expect("dump");
        assert_ne!(text, b.read(rel));
        b.write(rel, &format!("# reformatted\n{text}"));
    }
    let (code, out) = run(&["machine", "check", "--machine", b.path()]);
    assert_eq!(code, 0, "reformatted tables must still pass:\n{out}");
    let (code, out) = diff(&a, &b, "text");
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.trim(), "no semantic change");
}

#[test]
fn diff_reports_a_retargeted_transition() {
    let (a, b) = (Tables::new(), Tables::new());
    b.edit_after(
        "agents/remote-execution-control.yaml",
        "name: sweep-completed",
        "next: ANALYZE",
        "next: ROLL_ITERATION",
    );
    let (code, out) = diff(&a, &b, "text");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "transition-retargeted: remote_execution.poll_sweep: sweep-completed: ANALYZE -> ROLL_ITERATION"
        ),
        "{out}"
    );
    assert!(out.contains("1 semantic change(s)"), "{out}");
}

#[test]
fn diff_reports_a_changed_guard_with_both_texts() {
    let (a, b) = (Tables::new(), Tables::new());
    b.edit(
        "agents/background-control.yaml",
        "when: pool_size >= target",
        "when: pool_size > target",
    );
    let (code, out) = diff(&a, &b, "text");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("guard-changed: background_control.plan_background_work: pool-ready"),
        "{out}"
    );
    assert!(out.contains("- pool_size >= target"), "{out}");
    assert!(out.contains("+ pool_size > target"), "{out}");
}

#[test]
fn diff_reports_an_added_state() {
    let (a, b) = (Tables::new(), Tables::new());
    b.append(
        "states.yaml",
        "  PAUSED:\n    kind: terminal\n    status: PAUSED\n    description: paused by hand\n",
    );
    let (code, out) = diff(&a, &b, "text");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("state-added: PAUSED: added (terminal"),
        "{out}"
    );
}

#[test]
fn diff_reports_reordered_rules() {
    let (a, b) = (Tables::new(), Tables::new());
    let rel = "agents/remote-execution-control.yaml";
    let text = b.read(rel);
    let first = text.find("      - name: smoke-timed-out").expect("first");
    let second = text
        .find("      - name: smoke-exit-nonzero")
        .expect("second");
    let third = text.find("      - name: smoke-passed").expect("third");
    let swapped = format!(
        "{}{}{}{}",
        &text[..first],
        &text[second..third],
        &text[first..second],
        &text[third..]
    );
    b.write(rel, &swapped);
    let (code, out) = diff(&a, &b, "text");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("rules-reordered: remote_execution.gate_local_sanity"),
        "{out}"
    );
    assert!(!out.contains("rule-added"), "{out}");
}

#[test]
fn diff_reports_an_ownership_change() {
    let (a, b) = (Tables::new(), Tables::new());
    b.edit(
        "agents/select-design.yaml",
        "owns: [proposal_cycle, selected_sweep, next_action]",
        "owns: [proposal_cycle, selected_sweep, next_action, baseline]",
    );
    let (code, out) = diff(&a, &b, "text");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("ownership-changed: metaopt-select-design: owns +baseline"),
        "{out}"
    );
}

#[test]
fn diff_reports_policy_and_rule_changes_as_json() {
    let (a, b) = (Tables::new(), Tables::new());
    b.edit(
        "policy.yaml",
        "blocked_directives: [ssh_command,",
        "blocked_directives: [sky_exec, ssh_command,",
    )
    .edit_after(
        "agents/remote-execution-control.yaml",
        "name: sweep-running",
        "next: ~",
        "next: ~\n        recovery: keep polling",
    );
    let (code, out) = diff(&a, &b, "json");
    assert_eq!(code, 1, "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(doc["equal"], false);
    let changes = doc["changes"].as_array().expect("changes");
    let kinds: Vec<&str> = changes.iter().filter_map(|c| c["kind"].as_str()).collect();
    assert!(kinds.contains(&"blocked-changed"), "{out}");
    assert!(kinds.contains(&"rule-changed"), "{out}");
    let blocked = changes
        .iter()
        .find(|c| c["kind"] == "blocked-changed")
        .expect("blocked");
    assert!(
        blocked["new"]
            .as_array()
            .is_some_and(|a| a.iter().any(|v| v == "sky_exec"))
    );
}

#[test]
fn diff_of_a_directory_that_does_not_load_is_an_error() {
    let (a, b) = (Tables::new(), Tables::new());
    b.edit(
        "agents/background-control.yaml",
        "when: pool_size >= target",
        "when: pool_sizee >= target",
    );
    let (code, out) = diff(&a, &b, "text");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("pool_sizee"), "{out}");
    let (code, _) = run(&["machine", "diff", a.path(), "/nonexistent/machine"]);
    assert_eq!(code, 2);
}

// ---------------------------------------------------------------- graph

fn state_names() -> Vec<String> {
    let text = std::fs::read_to_string(shipped().join("states.yaml")).expect("states");
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
    doc["states"]
        .as_mapping()
        .expect("states map")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_string))
        .collect()
}

#[test]
fn graph_is_deterministic_and_draws_every_state() {
    for format in ["mermaid", "dot"] {
        let (code, first) = run(&["machine", "graph", "--format", format]);
        assert_eq!(code, 0, "{first}");
        let (_, second) = run(&["machine", "graph", "--format", format]);
        assert_eq!(first, second, "{format} output is not deterministic");
        for state in state_names() {
            assert!(first.contains(&state), "{format} graph lacks {state}");
        }
        let lines: Vec<&str> = first.lines().collect();
        let mut unique = lines.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), lines.len(), "duplicate lines in {format}");
    }
    let (_, mermaid) = run(&["machine", "graph"]);
    assert!(mermaid.starts_with("flowchart"), "{mermaid}");
    assert!(
        mermaid.contains("(((\"COMPLETE\"))):::terminal"),
        "{mermaid}"
    );
    assert!(
        mermaid.contains(
            "WAIT_FOR_SWEEP -->|\"remote_execution.poll_sweep: sweep-completed\"| ANALYZE"
        ),
        "{mermaid}"
    );
    let (_, dot) = run(&["machine", "graph", "--format", "dot"]);
    assert!(dot.contains("\"COMPLETE\" [shape=doublecircle];"), "{dot}");
}

#[test]
fn graph_follows_the_tables_and_rejects_unknown_formats() {
    let t = Tables::new();
    t.edit_after(
        "agents/remote-execution-control.yaml",
        "name: sweep-completed",
        "next: ANALYZE",
        "next: ROLL_ITERATION",
    );
    let (code, out) = run(&["machine", "graph", "--machine", t.path()]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sweep-completed\"| ROLL_ITERATION"), "{out}");
    let (code, out) = run(&["machine", "graph", "--format", "png"]);
    assert_eq!(code, 2, "{out}");
}

// ---------------------------------------------------------------- docs

const STALE_DOC: &str = "# Notes\n\nHand-written text stays.\n\n<!-- generated:states:begin -->\n| state |\n|---|\n| STALE |\n<!-- generated:states:end -->\n\nMiddle text.\n\n<!-- generated:directives:begin -->\n<!-- generated:directives:end -->\n\nTail.\n";

#[test]
fn docs_check_detects_drift_and_docs_regenerates() {
    let root = tempfile::tempdir().expect("tempdir");
    let refs = root.path().join("references");
    std::fs::create_dir_all(&refs).expect("mkdir");
    let doc = refs.join("notes.md");
    std::fs::write(&doc, STALE_DOC).expect("write");
    let root_str = root.path().to_str().expect("utf-8");

    let (code, out) = run(&["machine", "docs", "--check", "--root", root_str]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("notes.md: region `states` drifted"), "{out}");
    assert!(
        out.contains("notes.md: region `directives` drifted"),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&doc).expect("read"),
        STALE_DOC,
        "--check must not write"
    );

    let (code, out) = run(&["machine", "docs", "--root", root_str]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&doc).expect("read");
    assert!(!text.contains("STALE"), "{text}");
    for kept in [
        "# Notes\n\nHand-written text stays.\n\n",
        "\n\nMiddle text.\n\n",
        "\n\nTail.\n",
    ] {
        assert!(
            text.contains(kept),
            "text outside the regions changed:\n{text}"
        );
    }
    for state in state_names() {
        assert!(
            text.contains(&format!("| {state} |")),
            "no row for {state}:\n{text}"
        );
    }
    assert!(text.contains("Blocked outright: "), "{text}");

    let (code, out) = run(&["machine", "docs", "--check", "--root", root_str]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("2 generated region(s) up to date"), "{out}");
}

#[test]
fn docs_follow_the_machine_given() {
    let t = Tables::new();
    t.edit_after(
        "agents/remote-execution-control.yaml",
        "name: sweep-completed",
        "next: ANALYZE",
        "next: ROLL_ITERATION",
    );
    let root = tempfile::tempdir().expect("tempdir");
    let refs = root.path().join("references");
    std::fs::create_dir_all(&refs).expect("mkdir");
    let doc = refs.join("machine.md");
    let body = "<!-- generated:transitions:begin -->\n<!-- generated:transitions:end -->\n<!-- generated:stop-conditions:begin -->\n<!-- generated:stop-conditions:end -->\n<!-- generated:dispatch:begin -->\n<!-- generated:dispatch:end -->\n<!-- generated:ownership:begin -->\n<!-- generated:ownership:end -->\n";
    std::fs::write(&doc, body).expect("write");
    let root_str = root.path().to_str().expect("utf-8");
    let (code, out) = run(&["machine", "docs", "--machine", t.path(), "--root", root_str]);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&doc).expect("read");
    assert!(
        text.contains("| WAIT_FOR_SWEEP | `remote_execution.poll_sweep` | sweep-completed | `poll.value.sweep_status == \"completed\"` | ROLL_ITERATION |"),
        "{text}"
    );
    // The stop conditions are the rules of the phase that can end the campaign or start a new round.
    assert!(
        text.contains("| 1 | `iteration_close.gate_roll_iteration` |"),
        "{text}"
    );
    assert!(
        text.contains("| metaopt-select-design | select_design |"),
        "{text}"
    );
    // The shipped machine's docs now drift from this machine.
    let (code, _) = run(&["machine", "docs", "--check", "--root", root_str]);
    assert_eq!(code, 1);
}

#[test]
fn docs_reject_unknown_and_unterminated_regions() {
    let root = tempfile::tempdir().expect("tempdir");
    let refs = root.path().join("references");
    std::fs::create_dir_all(&refs).expect("mkdir");
    let root_str = root.path().to_str().expect("utf-8");
    std::fs::write(
        refs.join("a.md"),
        "<!-- generated:nonsense:begin -->\n<!-- generated:nonsense:end -->\n",
    )
    .expect("write");
    let (code, out) = run(&["machine", "docs", "--check", "--root", root_str]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("unknown generated region `nonsense`"), "{out}");
    std::fs::write(
        refs.join("a.md"),
        "<!-- generated:states:begin -->\nno end\n",
    )
    .expect("write");
    let (code, out) = run(&["machine", "docs", "--check", "--root", root_str]);
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("has no `<!-- generated:states:end -->`"),
        "{out}"
    );
}

#[test]
fn check_reports_unread_fields_a_phase_reads_or_its_schema_lacks() {
    let t = Tables::new();
    // plan_select_design counts and prints the current pool, which an unread list
    // answers (`len()`, `to_json()`); handing the field itself on is a use.
    let (code, out) = t.check();
    assert_eq!(code, 0, "{out}");
    t.edit(
        "agents/select-design.yaml",
        "pool_json: state.current_proposals.to_json()",
        "pool_json: state.current_proposals",
    );
    assert_finding(
        &t,
        "agents/select-design.yaml",
        "unread-field-used",
        &["plan_select_design", "`current_proposals`", "mentions it"],
    );
    // A dotted `set:` key below the field is a use too.
    let t = Tables::new();
    t.edit_after(
        "agents/remote-execution-control.yaml",
        "poll_sweep:",
        "unread: { state: [current_proposals, next_proposals] }",
        "unread: { state: [current_proposals, next_proposals, proposal_cycle] }",
    );
    t.edit_after(
        "agents/remote-execution-control.yaml",
        "poll_sweep:",
        "        set:\n",
        "        set:\n          proposal_cycle.current_pool_frozen: true\n",
    );
    assert_finding(
        &t,
        "agents/remote-execution-control.yaml",
        "unread-field-used",
        &["poll_sweep", "`proposal_cycle`"],
    );
    // What an unread list answers is not a use: `len()`, and `join_field` of an item
    // field its rule types as a scalar; `join_field` of another field is.
    // (`binding(x)`: plan_background_work, which leaves the pools unread, also binds `x`.)
    let binding = |extra: &str| {
        let t = Tables::new();
        t.edit(
            "agents/background-control.yaml",
            "pool_size: = state.current_proposals.len()",
            &format!("pool_size: = state.current_proposals.len()\n          {extra}"),
        );
        t
    };
    let t = binding(r#"ids: = state.current_proposals.join_field("proposal_id", ", ")"#);
    let (code, out) = t.check();
    assert_eq!(code, 0, "{out}");
    let t = binding(r#"ids: = state.current_proposals.join_field("rationale", ", ")"#);
    assert_finding(
        &t,
        "agents/background-control.yaml",
        "unread-field-used",
        &["plan_background_work", "`current_proposals`"],
    );
    // `string_set`, `max_suffix` and `has_item` of any item field are answered too, and
    // so is `to_json()`; replacing the field whole (`set:` of its own key) or appending
    // to it does not read it.
    let t = binding(
        r#"seen: = state.next_proposals.string_set("rationale")
          top: = state.current_proposals.max_suffix("proposal_id", "p")
          found: = state.next_proposals.has_item("proposal_id", "p-1")
          kept: = state.current_proposals.unseen_items("proposal_id", seen)
          printed: = state.current_proposals.to_json()"#,
    );
    t.edit(
        "agents/background-control.yaml",
        "        set:\n          next_action: select and design the sweep",
        "        set:\n          next_proposals: []\n          next_action: select and design the sweep",
    );
    let (code, out) = t.check();
    assert_eq!(code, 0, "{out}");
    // `max_suffix(prefix)` reads whole items (their text): a use.
    let t = binding(r#"top: = state.current_proposals.max_suffix("p")"#);
    assert_finding(
        &t,
        "agents/background-control.yaml",
        "unread-field-used",
        &["plan_background_work", "`current_proposals`"],
    );
    // `len()` of a field whose rule checks no items is a use.
    let t = Tables::new();
    t.edit(
        "agents/remote-execution-control.yaml",
        "unread: { state: [current_proposals, next_proposals] }\n    steps:\n      - use: require-load\n      - use: require-state\n      - let:\n          smoke_path",
        "unread: { state: [current_proposals, next_proposals, proposal_cycle] }\n    steps:\n      - use: require-load\n      - use: require-state\n      - let:\n          cycles: = state.proposal_cycle.len()\n          smoke_path",
    );
    assert_finding(
        &t,
        "agents/remote-execution-control.yaml",
        "unread-field-used",
        &["gate_local_sanity", "`proposal_cycle`"],
    );
    // Unknown schema and unknown field, with a suggestion.
    let t = Tables::new();
    t.edit(
        "agents/orchestrator.yaml",
        "unread: { state: [current_proposals, next_proposals] }",
        "unread: { state: [current_proposal], stat: [x] }",
    );
    assert_finding(
        &t,
        "agents/orchestrator.yaml",
        "unknown-reference",
        &["`current_proposal`", "did you mean `current_proposals`"],
    );
    assert_finding(
        &t,
        "agents/orchestrator.yaml",
        "unknown-reference",
        &["schema `stat`", "schemas/stat.yaml"],
    );
}
