//! Guard trace for coverage and mutation tools. When the environment
//! variable `METAOPT_TRACE` names a file, every phase run appends one JSON
//! line per guard it evaluated (`{agent, phase, rule, value}`) and one line
//! for the rule that decided (`{agent, phase, decided}`). It exists so that
//! `metaopt test` can learn, from a child process, which rules a scenario
//! took and which way each guard went, without the engine knowing about
//! tests. Tracing never changes an outcome: a write failure is ignored.

use crate::engine::phase::PhaseOutcome;
use serde::{Deserialize, Serialize};
use std::io::Write;

/// Environment variable naming the trace file.
pub const ENV: &str = "METAOPT_TRACE";

/// One line of a trace file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TraceLine {
    /// A guard was evaluated: `{agent, phase, rule, value}`.
    Guard {
        /// Agent name.
        agent: String,
        /// Phase name.
        phase: String,
        /// Rule name.
        rule: String,
        /// The guard's boolean value.
        value: bool,
    },
    /// The rule that decided the phase: `{agent, phase, decided}`.
    Decided {
        /// Agent name.
        agent: String,
        /// Phase name.
        phase: String,
        /// Deciding rule.
        decided: String,
    },
}

/// Appends the guards and the deciding rule of `outcome` to the trace file, if tracing is on.
pub fn record(agent: &str, phase: &str, outcome: &PhaseOutcome) {
    let Some(path) = std::env::var_os(ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let mut lines = String::new();
    for g in &outcome.guards {
        let line = TraceLine::Guard {
            agent: g.agent.clone(),
            phase: g.phase.clone(),
            rule: g.rule.clone(),
            value: g.value,
        };
        push_line(&mut lines, &line);
    }
    if !outcome.rule.is_empty() {
        let line = TraceLine::Decided {
            agent: agent.to_string(),
            phase: phase.to_string(),
            decided: outcome.rule.clone(),
        };
        push_line(&mut lines, &line);
    }
    if lines.is_empty() {
        return;
    }
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = f.write_all(lines.as_bytes());
    }
}

fn push_line(out: &mut String, line: &TraceLine) {
    if let Ok(s) = serde_json::to_string(line) {
        out.push_str(&s);
        out.push('\n');
    }
}

/// Parses the lines of a trace file, skipping any that do not parse.
pub fn parse(text: &str) -> Vec<TraceLine> {
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}
