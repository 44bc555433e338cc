//! Property tests: patch round trip, ownership checking, canonical JSON, and
//! "never panics" on arbitrary bytes for every parser of user input.

use metaopt::contract::canonical::{canonical_json, sha256_tagged};
use metaopt::engine::{handoff, patch, sandbox};
use metaopt::machine::{Machine, TableSource};
use proptest::prelude::*;
use serde_json::{Value, json};

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 40, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-e]{1,3}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[a-e]{1,3}", value(), 0..6)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// `new` keeps every key of `old` at every level (states never drop keys; a merge
/// patch could not express it), changing and adding values anywhere.
fn evolve(old: &Value, change: &Value) -> Value {
    match (old, change) {
        (Value::Object(o), Value::Object(c)) => {
            let mut out = o.clone();
            for (k, v) in c {
                let merged = match o.get(k) {
                    Some(prev) => evolve(prev, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (_, c) => c.clone(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn applying_the_computed_patch_gives_the_new_state(old in object(), change in object()) {
        let new = evolve(&old, &change);
        let p = patch::diff(&old, &new, &[]);
        let mut applied = old.clone();
        patch::apply(&mut applied, &p);
        prop_assert_eq!(applied, new);
        prop_assert_eq!(patch::diff(&old, &old, &[]), json!({}));
    }

    #[test]
    fn canonical_json_is_ascii_and_round_trips(v in value()) {
        let text = canonical_json(&v);
        prop_assert!(text.is_ascii());
        let back: Value = serde_json::from_str(&text).unwrap();
        // Floats may print differently but must parse to the same number.
        prop_assert_eq!(canonical_json(&back), text.clone());
        prop_assert!(sha256_tagged(&text).len() == 71);
    }

    #[test]
    fn identity_strings_escape_every_non_ascii_char(s in "\\PC{0,20}") {
        let text = canonical_json(&Value::String(s.clone()));
        let back: String = serde_json::from_str(&text).unwrap();
        prop_assert_eq!(back, s);
        prop_assert!(text.is_ascii());
    }

}

proptest! {
    // Each case compiles the whole machine twice: fewer cases keep `cargo test` fast.
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn arbitrary_bytes_never_panic_any_parser(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("input");
        std::fs::write(&f, &bytes).unwrap();
        let path = f.display().to_string();
        let m = machine();
        for yaml in [true, false] {
            if let Ok(Some(doc)) = sandbox::parse_file(&path, yaml) {
                for schema in ["campaign", "state"] {
                    let _ = sandbox::schema_issues(&m.sandbox.engine, &m.sandbox.shared.borrow(), schema, &sandbox::to_dynamic(&doc));
                }
                let _ = handoff::violations(&m, "metaopt-background-control", &doc, &[], dir.path());
            }
        }
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let source = TableSource::embedded().with_file("states.yaml", text.clone());
        let _ = Machine::from_source(source.clone());
        let source = source.with_file("agents/background-control.yaml", text);
        let _ = Machine::from_source(source);
    }
}

thread_local! {
    static MACHINE: std::rc::Rc<Machine> = std::rc::Rc::new(Machine::load(None).expect("embedded machine loads"));
}

fn machine() -> std::rc::Rc<Machine> {
    MACHINE.with(|m| m.clone())
}

fn handoff_with_patch(patch: Value) -> Value {
    json!({"schema_version": 1, "control_agent": "metaopt-remote-execution-control", "recommended_next_machine_state": null,
           "state_patch": patch, "directives": [], "launch_requests": [], "summary": "", "warnings": [], "recovery_action": null})
}

const STATE_KEYS: &[&str] = &[
    "version",
    "campaign_id",
    "campaign_identity_hash",
    "current_iteration",
    "next_action",
    "objective_snapshot",
    "proposal_cycle",
    "current_proposals",
    "next_proposals",
    "selected_sweep",
    "current_sweep",
    "baseline",
    "completed_iterations",
    "key_learnings",
    "no_improve_iterations",
    "campaign_started_at",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ownership_accepts_owned_paths_and_rejects_every_other(keys in prop::collection::btree_set(prop::sample::select(STATE_KEYS), 1..5), leafv in leaf()) {
        let m = machine();
        let agent = m.agent("metaopt-remote-execution-control").unwrap();
        let owns: Vec<&str> = agent.table.owns.iter().map(String::as_str).collect();
        let mut p = serde_json::Map::new();
        for k in &keys {
            p.insert(k.to_string(), json!({"x": leafv.clone()}));
        }
        let found = handoff::violations(&m, "metaopt-remote-execution-control", &handoff_with_patch(Value::Object(p)), &[], std::path::Path::new("."));
        let unowned: Vec<&&str> = keys.iter().filter(|k| !owns.contains(k)).collect();
        prop_assert_eq!(found.len(), unowned.len(), "{:?}", found);
        for k in unowned {
            let needle = format!("`{}.x`", k);
            prop_assert!(found.iter().any(|f| f.contains(&needle)));
        }
    }
}

/// What a step leaves unread when it reads the state: the fields every phase of the
/// machine state leaves unread (`Machine::unread_in_state`).
#[test]
fn a_step_leaves_unread_what_every_phase_of_its_state_leaves_unread() {
    let m = Machine::load(None).expect("embedded tables load");
    let pools = vec![
        "current_proposals".to_string(),
        "next_proposals".to_string(),
    ];
    assert_eq!(m.unread_in_state("LAUNCH_SWEEP", "state"), pools);
    // The gate merges results into the pools without reading them (answered from the text).
    assert_eq!(m.unread_in_state("WAIT_FOR_PROPOSALS", "state"), pools);
    // The selection counts, prints and searches the pool from its text; the rollover
    // picks its survivors by id and copies their texts.
    assert_eq!(m.unread_in_state("SELECT_AND_DESIGN_SWEEP", "state"), pools);
    assert_eq!(m.unread_in_state("ROLL_ITERATION", "state"), pools);
    // Unknown states and schemas leave nothing.
    for (state, schema) in [("NO_SUCH_STATE", "state"), ("LAUNCH_SWEEP", "campaign")] {
        assert!(
            m.unread_in_state(state, schema).is_empty(),
            "{state} {schema}"
        );
    }
}
