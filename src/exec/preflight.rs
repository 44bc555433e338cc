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
    load_campaign(machine, layout(machine, "campaign"))["campaign_identity_hash"]
        .as_str()
        .map(str::to_string)
}

/// LOAD_CAMPAIGN's handoff for the campaign at `path` (nothing written).
pub fn load_campaign(machine: &Machine, path: &str) -> Value {
    let Some(agent) = machine
        .states
        .states
        .get(&machine.states.initial)
        .and_then(|s| s.agent.clone())
    else {
        return Value::Null;
    };
    let Ok((a, p)) = lookup(machine, &agent, None) else {
        return Value::Null;
    };
    let mut args = project_args(machine, &StepOptions::default());
    args.campaign_path = path.to_string();
    run_phase(machine, a, p, &args, &crate::now())
        .handoff_value()
        .into_owned()
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

/// `machine/preflight.yaml`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreflightTable {
    /// Workspace to create.
    pub scaffold: Scaffold,
    /// Checks in order.
    pub checks: Vec<CheckDef>,
}

/// Workspace scaffolding.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scaffold {
    /// Directories to create.
    pub dirs: Vec<String>,
    /// Line the project's .gitignore must hold.
    pub gitignore_entry: String,
}

/// One environment check.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckDef {
    /// Check id.
    pub id: String,
    /// Program that must be on PATH.
    #[serde(default)]
    pub which: Option<String>,
    /// Command that must succeed.
    #[serde(default)]
    pub run: Option<String>,
    /// Timeout of `run`.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Regex the output must match.
    #[serde(default)]
    pub expect: Option<String>,
    /// Regex the output must not match.
    #[serde(default)]
    pub reject: Option<String>,
    /// Environment variables any of which holds a credential.
    #[serde(default)]
    pub env_any: Vec<String>,
    /// netrc machine holding a credential.
    #[serde(default)]
    pub netrc_machine: Option<String>,
    /// Check that must pass first.
    #[serde(default)]
    pub needs: Option<String>,
    /// What a person should do when it fails.
    #[serde(default)]
    pub remediation: String,
}

fn default_timeout() -> u64 {
    60
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn fill(command: &str, campaign: &Value) -> String {
    let re = regex_lite::Regex::new(r"\{([a-z_]+(?:\.[a-z_]+)*)\}").expect("static regex");
    re.replace_all(command, |c: &regex_lite::Captures| {
        let pointer = format!("/{}", c[1].replace('.', "/"));
        let v = campaign.pointer(&pointer).map(|v| {
            v.as_str()
                .map(str::to_string)
                .unwrap_or_else(|| v.to_string())
        });
        shell_quote(&v.unwrap_or_default())
    })
    .into_owned()
}

fn netrc_has(machine: &str) -> bool {
    let path = std::env::var_os("NETRC")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".netrc")));
    path.and_then(|p| std::fs::read_to_string(p).ok())
        .is_some_and(|t| {
            t.split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| w[0] == "machine" && w[1] == machine)
        })
}

fn run_check(c: &CheckDef, campaign: &Value, failed: &[String]) -> (bool, String) {
    if let Some(need) = &c.needs
        && failed.contains(need)
    {
        return (false, format!("skipped: {need} failed"));
    }
    if let Some(p) = &c.which {
        return if on_path(p) {
            (true, format!("{p} found on PATH"))
        } else {
            (false, format!("{p} not found on PATH"))
        };
    }
    if let Some(cmd) = &c.run {
        let cmd = fill(cmd, campaign);
        let r = crate::exec::smoke::run_command(
            &cmd,
            std::time::Duration::from_secs(c.timeout_seconds),
        );
        let output = format!(
            "{}{}",
            r["stdout_tail"].as_str().unwrap_or(""),
            r["stderr_tail"].as_str().unwrap_or("")
        );
        if r["killed_at_limit"] == true {
            return (
                false,
                format!("`{cmd}` timed out after {} s", c.timeout_seconds),
            );
        }
        if r["exit_code"] != 0 {
            return (
                false,
                format!("`{cmd}` exited with {}: {}", r["exit_code"], output.trim()),
            );
        }
        let matches = |re: &Option<String>| {
            re.as_ref()
                .map(|r| regex_lite::Regex::new(r).is_ok_and(|re| re.is_match(&output)))
        };
        if matches(&c.expect) == Some(false) {
            return (
                false,
                format!(
                    "`{cmd}` output does not match {}",
                    c.expect.as_deref().unwrap_or("")
                ),
            );
        }
        if matches(&c.reject) == Some(true) {
            return (false, format!("`{cmd}` reports: {}", output.trim()));
        }
        return (true, format!("`{cmd}` succeeded"));
    }
    if c.env_any
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|x| !x.trim().is_empty()))
    {
        return (true, "credential found in the environment".into());
    }
    if c.netrc_machine.as_deref().is_some_and(netrc_has) {
        return (true, "credential found in netrc".into());
    }
    (
        false,
        format!("no credential in {} or netrc", c.env_any.join(", ")),
    )
}

/// Runs preflight for `campaign_path` in the current directory; writes and returns the artifact.
pub fn run(machine: &Machine, campaign_path: &Path) -> Result<(String, Value), String> {
    let started = std::time::Instant::now();
    let table: PreflightTable = serde_yaml::from_str(
        machine
            .source
            .get("preflight.yaml")
            .ok_or("machine/preflight.yaml is missing")?,
    )
    .map_err(|e| format!("{}: {e}", machine.source.display("preflight.yaml")))?;
    let path_text = campaign_path.display().to_string();
    let campaign = match crate::engine::sandbox::parse_file(&path_text, true) {
        Ok(Some(v)) => v,
        Ok(None) => return Err(format!("{path_text}: campaign file is empty")),
        Err((_, msg)) => return Err(format!("{path_text}: {msg}")),
    };
    let load = load_campaign(machine, &path_text);
    let mut checks = Vec::new();
    let issues: Vec<String> = load["validation_issues"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    checks.push((
        "campaign".to_string(),
        issues.is_empty(),
        if issues.is_empty() {
            "campaign valid".to_string()
        } else {
            issues.join("; ")
        },
        "repair ml_metaopt_campaign.yaml (see `metaopt validate`)".to_string(),
    ));
    let mut bootstrapped = 0;
    for d in &table.scaffold.dirs {
        if !Path::new(d).is_dir() {
            std::fs::create_dir_all(d).map_err(|e| format!("{d}: {e}"))?;
            bootstrapped += 1;
        }
    }
    let gitignore = std::fs::read_to_string(".gitignore").unwrap_or_default();
    if !gitignore
        .lines()
        .any(|l| l.trim() == table.scaffold.gitignore_entry)
    {
        let sep = if gitignore.is_empty() || gitignore.ends_with('\n') {
            ""
        } else {
            "\n"
        };
        write_atomic(
            Path::new(".gitignore"),
            format!("{gitignore}{sep}{}\n", table.scaffold.gitignore_entry).as_bytes(),
        )
        .map_err(|e| format!(".gitignore: {e}"))?;
        bootstrapped += 1;
    }
    let mut failed: Vec<String> = Vec::new();
    for c in &table.checks {
        let (ok, message) = run_check(c, &campaign, &failed);
        if !ok {
            failed.push(c.id.clone());
        }
        checks.push((c.id.clone(), ok, message, c.remediation.clone()));
    }
    let identity = load["campaign_identity_hash"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut art = artifact(
        &identity,
        &checks,
        bootstrapped,
        started.elapsed().as_secs_f64(),
    );
    if identity.is_empty() {
        art["campaign_identity_hash"] = Value::Null;
    }
    art["campaign_id"] = load["campaign_id"].clone();
    let path = layout(machine, "preflight").to_string();
    write_atomic(Path::new(&path), to_pretty(&art).as_bytes())
        .map_err(|e| format!("{path}: {e}"))?;
    Ok((path, art))
}
