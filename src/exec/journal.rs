//! The audit journal `.ml-metaopt/journal.jsonl`: one appended line per
//! phase a step applies, with the tables' hash so that an edit of `machine/`
//! between steps of one campaign is visible.

use crate::contract::canonical::sha256_hex;
use crate::engine::handoff::PrintedHandoff;
use crate::machine::Machine;
use serde_json::Value;
use serde_json::value::RawValue;
use std::io::Write;
use std::path::Path;

/// What a journal line takes from the handoff: the digest of its text and its patch
/// as compact JSON. For a large patch these are the costly parts of a line; the step
/// works them out on a helper thread while it writes the handoff and the state (from
/// a MiB of handoff: `HELPER_THREAD_FROM` in `exec::step`).
pub struct HandoffParts {
    sha256: String,
    patch: Box<RawValue>,
}

impl HandoffParts {
    /// The parts of the handoff printed as `printed`.
    pub fn of(printed: &PrintedHandoff) -> Self {
        let patch = crate::engine::json_text::compact(printed.patch());
        Self {
            sha256: sha256_hex(printed.text.as_bytes()),
            // Printed JSON, so it parses (the default is `null`).
            patch: RawValue::from_string(patch).unwrap_or_default(),
        }
    }
}

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
    /// What the line takes from the handoff.
    pub handoff: &'a HandoffParts,
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

/// What `metaopt status` and `metaopt history` show of a journal line: everything but
/// its patch and directives, which are scanned over, not built (a pool-changing step's
/// line holds a pool: megabytes).
#[derive(Debug, serde::Deserialize)]
pub struct Summary {
    /// Agent.
    #[serde(default)]
    pub agent: Value,
    /// Phase.
    #[serde(default)]
    pub phase: Value,
    /// Deciding rule.
    #[serde(default)]
    pub rule: Value,
    /// Line number.
    #[serde(default)]
    pub seq: Value,
    /// Time of the step.
    #[serde(default)]
    pub time: Value,
    /// Machine state before.
    #[serde(default)]
    pub machine_state_before: Value,
    /// Machine state after.
    #[serde(default)]
    pub machine_state_after: Value,
    /// Hash of the tables that ran.
    #[serde(default)]
    pub machine_hash: Value,
    /// Whether the tables changed since the line before.
    #[serde(default)]
    pub tables_changed: Value,
}

/// Calls `each` with every line of the journal that is a JSON object, as written and
/// summarised, in order (other lines, and lines that are not UTF-8, are skipped). The
/// journal is read a line at a time: it grows with the campaign, by megabytes a
/// pool-changing step.
pub fn scan(machine: &Machine, mut each: impl FnMut(&str, Summary)) {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path(machine)) else {
        return;
    };
    let mut reader = std::io::BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        // A line that is not UTF-8, not an object or not JSON is skipped, not the end.
        let Ok(text) = std::str::from_utf8(&line) else {
            continue;
        };
        let text = text.trim_end_matches(['\n', '\r']);
        if let Some(summary) = entry::<Summary>(text.as_bytes()) {
            each(text, summary);
        }
    }
}

/// One journal line as written: the fields in the order of their names, the patch in
/// the middle. The line is written from three pieces (the fields before the patch, the
/// patch, the fields after it) in one `writev`: the patch (a pool, megabytes) is not
/// copied into a line first.
#[derive(serde::Serialize)]
struct LineHead<'a> {
    agent: &'a str,
    directives: &'a [Value],
    handoff_sha256: &'a str,
    machine_hash: &'a str,
    machine_state_after: &'a str,
    machine_state_before: &'a str,
}

/// The fields of a journal line after its patch.
#[derive(serde::Serialize)]
struct LineTail<'a> {
    phase: &'a str,
    rule: &'a str,
    seq: u64,
    tables_changed: bool,
    time: &'a str,
    violations: &'a [String],
}

/// The pieces of the line `head`, a patch and `tail` make, around the patch:
/// `{<head's fields>,"patch":` and `,<tail's fields>}` with a line break. With the patch
/// between them they are what serializing one struct of all the fields prints.
fn line_pieces(head: &LineHead, tail: &LineTail) -> serde_json::Result<(Vec<u8>, Vec<u8>)> {
    let mut before = serde_json::to_vec(head)?;
    before.pop(); // its `}`
    before.extend_from_slice(b",\"patch\":");
    let mut after = serde_json::to_vec(tail)?;
    after[0] = b','; // its `{`
    after.push(b'\n');
    Ok((before, after))
}

/// Writes all of `pieces` to `file` (appending: each `writev` lands at the end).
fn write_pieces(file: &mut std::fs::File, pieces: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<std::io::IoSlice> =
        pieces.iter().map(|p| std::io::IoSlice::new(p)).collect();
    let mut rest = &mut slices[..];
    while !rest.is_empty() {
        match file.write_vectored(rest) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => std::io::IoSlice::advance_slices(&mut rest, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What the next line takes from the last one. Its other fields (a patch can hold a
/// whole proposal pool) are scanned, not built.
#[derive(serde::Deserialize)]
struct LastLine {
    machine_hash: Option<Value>,
    seq: Option<Value>,
}

/// What `T` takes from a journal line, when the line is a JSON object (a line of
/// another kind, even valid JSON, is no entry).
fn entry<'a, T: serde::Deserialize<'a>>(line: &'a [u8]) -> Option<T> {
    let first = line.iter().find(|b| !b.is_ascii_whitespace())?;
    if *first != b'{' {
        return None;
    }
    serde_json::from_slice(line).ok()
}

/// The last line of the journal at `p` (read from the end: the journal grows with the
/// campaign) and the number of lines, or `None` when there is no journal.
fn last_line(p: &str) -> Option<(Vec<u8>, Option<u64>)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(p).ok()?;
    let len = f.metadata().ok()?.len();
    let mut tail: Vec<u8> = Vec::new();
    let mut pos = len;
    const CHUNK: u64 = 64 * 1024;
    loop {
        let start = pos.saturating_sub(CHUNK);
        let mut chunk = vec![0; (pos - start) as usize];
        f.seek(SeekFrom::Start(start)).ok()?;
        f.read_exact(&mut chunk).ok()?;
        chunk.extend_from_slice(&tail);
        tail = chunk;
        pos = start;
        let body = tail.strip_suffix(b"\n").unwrap_or(&tail);
        if let Some(i) = body.iter().rposition(|b| *b == b'\n') {
            return Some((body[i + 1..].to_vec(), None));
        }
        if pos == 0 {
            // A single line (or none): count what there is.
            let lines = tail.iter().filter(|b| **b == b'\n').count() as u64;
            return Some((body.to_vec(), Some(lines)));
        }
    }
}

/// Appends one line for the phase `e` describes.
pub fn append(machine: &Machine, e: &Entry) -> Result<(), String> {
    let p = path(machine);
    let last = last_line(&p);
    let last_doc = last.as_ref().and_then(|(l, _)| entry::<LastLine>(l));
    let last_hash = last_doc
        .as_ref()
        .and_then(|d| d.machine_hash.as_ref()?.as_str());
    // Lines so far: the last line's own number when it has one, else count them.
    let lines = match (
        &last,
        last_doc.as_ref().and_then(|d| d.seq.as_ref()?.as_u64()),
    ) {
        (None, _) => 0,
        (Some((_, Some(counted))), _) => *counted,
        (Some(_), Some(seq)) => seq,
        (Some(_), None) => std::fs::read(&p)
            .unwrap_or_default()
            .iter()
            .filter(|b| **b == b'\n')
            .count() as u64,
    };
    let hash = machine.hash();
    let head = LineHead {
        agent: e.agent,
        directives: e.directives,
        handoff_sha256: &e.handoff.sha256,
        machine_hash: &hash,
        machine_state_after: e.after,
        machine_state_before: e.before,
    };
    let tail = LineTail {
        phase: e.phase,
        rule: e.rule,
        seq: lines + 1,
        tables_changed: last_hash.is_some_and(|h| h != hash),
        time: e.time,
        violations: e.violations,
    };
    let (before, after) = line_pieces(&head, &tail).map_err(|err| format!("{p}: {err}"))?;
    crate::workspace::failpoint::hit(Path::new(&p)).map_err(|e| e.to_string())?;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|err| format!("{p}: {err}"))?;
    // The whole line in one `writev` as a rule (a 10 MB patch written token by token
    // took seconds).
    let patch = e.handoff.patch.get().as_bytes();
    write_pieces(&mut f, &[&before, patch, &after]).map_err(|err| format!("{p}: {err}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_in_pieces_is_the_line_serialized_whole() {
        let directives = vec![serde_json::json!({"action": "a", "reason": "r \"q\""})];
        let violations = vec!["v".to_string()];
        let head = LineHead {
            agent: "agent",
            directives: &directives,
            handoff_sha256: "abc",
            machine_hash: "def",
            machine_state_after: "B",
            machine_state_before: "A",
        };
        let tail = LineTail {
            phase: "p",
            rule: "r",
            seq: 7,
            tables_changed: true,
            time: "2026-11-26T00:00:00Z",
            violations: &violations,
        };
        let patch = r#"{"pool":[{"id":"x-1"}]}"#;
        let (before, after) = line_pieces(&head, &tail).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut file = std::fs::File::create(&path).unwrap();
        write_pieces(&mut file, &[&before, patch.as_bytes(), &after]).unwrap();
        let whole = serde_json::json!({
            "agent": "agent",
            "directives": directives,
            "handoff_sha256": "abc",
            "machine_hash": "def",
            "machine_state_after": "B",
            "machine_state_before": "A",
            "patch": serde_json::from_str::<Value>(patch).unwrap(),
            "phase": "p",
            "rule": "r",
            "seq": 7,
            "tables_changed": true,
            "time": "2026-11-26T00:00:00Z",
            "violations": violations,
        });
        let expected = serde_json::to_string(&whole).unwrap() + "\n";
        assert_eq!(std::fs::read_to_string(&path).unwrap(), expected);
    }
}
