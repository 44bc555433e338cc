//! The audit journal `.ml-metaopt/journal.jsonl`: one appended line per
//! phase a step applies, with the tables' hash so that an edit of `machine/`
//! between steps of one campaign is visible.

use crate::contract::canonical::sha256_hex;
use crate::machine::Machine;
use serde_json::{Value, json};
use std::io::Write;
use std::path::Path;

/// What one journal line records.
pub struct Entry<'a> {
    /// Time of the step.
    pub time: &'a str,
    /// Machine state before.
    pub before: &'a str,
    /// Machine state after.
    pub after: &'a str,
    /// Agent.
    pub agent: &'a str,
    /// Phase.
    pub phase: &'a str,
    /// Deciding rule.
    pub rule: &'a str,
    /// The handoff.
    pub handoff: &'a Value,
    /// The applied patch.
    pub patch: &'a Value,
    /// Directives executed with their outcome.
    pub directives: &'a [Value],
    /// Protocol violations.
    pub violations: &'a [String],
}

/// Path of the journal.
pub fn path(machine: &Machine) -> String {
    let state = crate::exec::step::layout(machine, "state");
    Path::new(state)
        .with_file_name("journal.jsonl")
        .display()
        .to_string()
}

/// Every entry of the journal (unparsable lines are skipped).
pub fn read(machine: &Machine) -> Vec<Value> {
    std::fs::read_to_string(path(machine))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// Appends one line.
pub fn append(machine: &Machine, e: &Entry) -> Result<(), String> {
    let p = path(machine);
    let existing = std::fs::read(&p).unwrap_or_default();
    let seq = existing.iter().filter(|b| **b == b'\n').count() + 1;
    let last_hash = existing
        .rsplit(|b| *b == b'\n')
        .find(|l| !l.is_empty())
        .and_then(|l| serde_json::from_slice::<Value>(l).ok())
        .and_then(|v| {
            v.get("machine_hash")
                .and_then(Value::as_str)
                .map(str::to_string)
        });
    let hash = machine.hash();
    let line = json!({
        "seq": seq,
        "time": e.time,
        "machine_state_before": e.before,
        "machine_state_after": e.after,
        "agent": e.agent,
        "phase": e.phase,
        "rule": e.rule,
        "handoff_sha256": sha256_hex(crate::engine::handoff::to_pretty(e.handoff).as_bytes()),
        "machine_hash": hash,
        "tables_changed": last_hash.is_some_and(|h| h != hash),
        "patch": e.patch,
        "directives": e.directives,
        "violations": e.violations,
    });
    crate::workspace::failpoint::hit(Path::new(&p)).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|err| format!("{p}: {err}"))?;
    writeln!(f, "{line}").map_err(|err| format!("{p}: {err}"))?;
    Ok(())
}
