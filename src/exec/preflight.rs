//! The preflight readiness artifact LOAD_CAMPAIGN gates on (contract
//! section 4): its shape, and the READY artifact the demo writes.

use crate::engine::handoff::to_pretty;
use crate::engine::phase::{lookup, run_phase};
use crate::exec::step::{StepOptions, layout, project_args};
use crate::machine::Machine;
use crate::workspace::fsio::write_atomic;
use serde_json::{Value, json};
use std::path::Path;

/// The campaign's identity hash as LOAD_CAMPAIGN computes it (`None` when invalid).
pub fn campaign_identity(machine: &Machine) -> Option<String> {
    let agent = machine
        .states
        .states
        .get(&machine.states.initial)?
        .agent
        .clone()?;
    let (a, p) = lookup(machine, &agent, None).ok()?;
    let outcome = run_phase(
        machine,
        a,
        p,
        &project_args(machine, &StepOptions::default()),
        &crate::now(),
    );
    outcome.handoff["campaign_identity_hash"]
        .as_str()
        .map(str::to_string)
}

/// A readiness artifact from check results `(id, passed, message, remediation)`.
pub fn artifact(
    identity: &str,
    checks: &[(String, bool, String, String)],
    bootstrapped: usize,
    duration: f64,
) -> Value {
    let failures: Vec<Value> = checks
        .iter()
        .filter(|c| !c.1)
        .map(|(id, _, message, remediation)| json!({"check": id, "message": message, "remediation": remediation}))
        .collect();
    let passed = checks.iter().filter(|c| c.1).count();
    let ready = failures.is_empty();
    json!({
        "schema_version": 1,
        "status": if ready { "READY" } else { "FAILED" },
        "campaign_identity_hash": identity,
        "failures": failures,
        "next_action": if ready { "run metaopt step".to_string() } else {
            format!("fix the {} failed preflight check(s) and re-run metaopt preflight", checks.len() - passed)
        },
        "emitted_at": crate::now(),
        "preflight_duration_seconds": (duration * 1000.0).round() / 1000.0,
        "checks_summary": {"total": checks.len() + bootstrapped, "passed": passed,
                           "failed": checks.len() - passed, "bootstrapped": bootstrapped, "warnings": 0},
        "diagnostics": checks.iter().map(|c| json!({"check": c.0, "passed": c.1, "message": c.2})).collect::<Vec<_>>(),
    })
}

/// Writes a READY artifact for the campaign in the current directory (demo and tests only).
pub fn write_simulated_ready(machine: &Machine) -> Result<(), String> {
    let identity = campaign_identity(machine)
        .ok_or("the campaign is invalid; cannot write a preflight artifact")?;
    let checks = vec![(
        "simulated".to_string(),
        true,
        "simulated environment (metaopt demo)".to_string(),
        String::new(),
    )];
    let path = layout(machine, "preflight");
    write_atomic(
        Path::new(path),
        to_pretty(&artifact(&identity, &checks, 0, 0.0)).as_bytes(),
    )
    .map_err(|e| format!("{path}: {e}"))
}
