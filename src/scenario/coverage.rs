//! Rule and guard coverage of a scenario suite. The inventory is every rule
//! of every phase as the machine compiled it (fragments spliced in, so a
//! shared rule counts once per phase that uses it); the observations are
//! the guard traces the scenario children recorded. A rule is covered when
//! some scenario took it; its guard is covered when it was seen both true
//! and false.

use crate::engine::trace::TraceLine;
use crate::machine::{CompiledStep, Machine};
use std::collections::{BTreeMap, BTreeSet};

/// `(agent, phase, rule)`.
pub type RuleKey = (String, String, String);

/// One row of the coverage table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The rule.
    pub key: RuleKey,
    /// Guard source (`None`: the rule has no guard).
    pub guard: Option<String>,
    /// Some scenario took the rule.
    pub taken: bool,
    /// Guard seen true.
    pub seen_true: bool,
    /// Guard seen false.
    pub seen_false: bool,
}

impl Row {
    /// The rule is fully covered.
    pub fn complete(&self) -> bool {
        self.taken && (self.guard.is_none() || (self.seen_true && self.seen_false))
    }
}

/// Every rule of every phase, in table order.
pub fn inventory(machine: &Machine) -> Vec<(RuleKey, Option<String>)> {
    let mut out = Vec::new();
    for agent in machine.agents() {
        for phase in agent.phases.values() {
            for step in phase.steps(machine).unwrap_or_default() {
                if let CompiledStep::Rule(rule) = step {
                    out.push((
                        (
                            agent.table.agent.clone(),
                            phase.name.clone(),
                            rule.name.clone(),
                        ),
                        rule.when.as_ref().map(|(_, src)| src.clone()),
                    ));
                }
            }
        }
    }
    out
}

/// Coverage rows for `machine` from the traces `lines`.
pub fn rows<'a>(machine: &Machine, lines: impl Iterator<Item = &'a TraceLine>) -> Vec<Row> {
    let mut taken = BTreeSet::new();
    let mut seen: BTreeMap<RuleKey, (bool, bool)> = BTreeMap::new();
    for l in lines {
        match l {
            TraceLine::Decided {
                agent,
                phase,
                decided,
            } => {
                taken.insert((agent.clone(), phase.clone(), decided.clone()));
            }
            TraceLine::Guard {
                agent,
                phase,
                rule,
                value,
            } => {
                let e = seen
                    .entry((agent.clone(), phase.clone(), rule.clone()))
                    .or_default();
                if *value {
                    e.0 = true;
                } else {
                    e.1 = true;
                }
            }
        }
    }
    inventory(machine)
        .into_iter()
        .map(|(key, guard)| {
            let (t, f) = seen.get(&key).copied().unwrap_or_default();
            Row {
                taken: taken.contains(&key),
                seen_true: t,
                seen_false: f,
                guard,
                key,
            }
        })
        .collect()
}

/// Totals: `(rules taken, rules, guards seen both ways, guards)`.
pub fn totals(rows: &[Row]) -> (usize, usize, usize, usize) {
    let taken = rows.iter().filter(|r| r.taken).count();
    let guards: Vec<&Row> = rows.iter().filter(|r| r.guard.is_some()).collect();
    let both = guards
        .iter()
        .filter(|r| r.seen_true && r.seen_false)
        .count();
    (taken, rows.len(), both, guards.len())
}

fn pct(a: usize, b: usize) -> f64 {
    if b == 0 {
        100.0
    } else {
        100.0 * a as f64 / b as f64
    }
}

/// The coverage table and totals as text.
pub fn render(rows: &[Row]) -> String {
    let w_agent = rows.iter().map(|r| r.key.0.len()).max().unwrap_or(5).max(5);
    let w_phase = rows.iter().map(|r| r.key.1.len()).max().unwrap_or(5).max(5);
    let w_rule = rows.iter().map(|r| r.key.2.len()).max().unwrap_or(4).max(4);
    let mut out = format!(
        "{:w_agent$}  {:w_phase$}  {:w_rule$}  taken  true  false\n",
        "agent", "phase", "rule"
    );
    let mark = |b: bool| if b { "yes" } else { "NO" };
    for r in rows {
        let (t, f) = match r.guard {
            None => ("-", "-"),
            Some(_) => (mark(r.seen_true), mark(r.seen_false)),
        };
        out.push_str(&format!(
            "{:w_agent$}  {:w_phase$}  {:w_rule$}  {:5}  {:4}  {}\n",
            r.key.0,
            r.key.1,
            r.key.2,
            mark(r.taken),
            t,
            f
        ));
    }
    let (taken, n, both, guards) = totals(rows);
    out.push_str(&format!(
        "coverage: rules taken {taken}/{n} ({:.1}%), guards seen both ways {both}/{guards} ({:.1}%), total {}/{} ({:.1}%)\n",
        pct(taken, n),
        pct(both, guards),
        taken + both,
        n + guards,
        pct(taken + both, n + guards)
    ));
    out
}
