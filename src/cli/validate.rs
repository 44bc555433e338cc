//! `metaopt validate [FILE]`: every campaign issue at once, each with the
//! file, the line (when one can be found) and the field.

use crate::engine::sandbox::{parse_file, schema_issues};
use clap::Args;
use std::path::Path;

/// Flags of `metaopt validate`.
#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Campaign file (default `ml_metaopt_campaign.yaml`).
    #[arg(default_value = "ml_metaopt_campaign.yaml")]
    pub file: String,
    /// Schema table to validate against.
    #[arg(long, default_value = "campaign")]
    pub schema: String,
}

/// Every issue of the campaign file as `(line, message)`.
pub fn campaign_issues(
    machine: &crate::machine::Machine,
    file: &str,
    schema: &str,
) -> Vec<(Option<usize>, String)> {
    let doc = match parse_file(file, true) {
        Ok(Some(doc)) => doc,
        Ok(None) => return vec![(None, "campaign file is empty".into())],
        Err((false, _)) => return vec![(None, "campaign file not found".into())],
        Err((true, msg)) => {
            let line = msg
                .split(" at line ")
                .nth(1)
                .and_then(|r| r.split(' ').next())
                .and_then(|n| n.parse().ok());
            return vec![(line, msg)];
        }
    };
    let text = std::fs::read_to_string(file).unwrap_or_default();
    match schema_issues(
        &machine.sandbox.engine,
        &machine.sandbox.shared.borrow(),
        schema,
        &crate::engine::sandbox::to_dynamic(&doc),
    ) {
        Ok(issues) => issues.into_iter().map(|i| (locate(&text, &i), i)).collect(),
        Err(e) => vec![(None, e)],
    }
}

/// Best-effort line of the field an issue names, for block-style YAML.
fn locate(text: &str, issue: &str) -> Option<usize> {
    let path = issue
        .strip_prefix("missing required field: ")
        .unwrap_or(issue);
    let path = path.split(':').next()?.trim();
    let parts: Vec<&str> = path
        .split('.')
        .map(|p| p.split('[').next().unwrap_or(p))
        .collect();
    let mut line_no = 0;
    let mut found = None;
    let mut depth = 0;
    for (i, line) in text.lines().enumerate() {
        let Some(part) = parts.get(depth) else { break };
        let trimmed = line.trim_start();
        if trimmed.starts_with(&format!("{part}:")) {
            found = Some(i + 1);
            line_no = i + 1;
            depth += 1;
        }
    }
    if depth == parts.len() {
        found
    } else if line_no > 0 {
        Some(line_no)
    } else {
        None
    }
}

/// `metaopt validate`.
pub fn run(machine_dir: Option<&Path>, args: ValidateArgs) -> i32 {
    let machine = match super::load_machine(machine_dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let issues = campaign_issues(machine, &args.file, &args.schema);
    if issues.is_empty() {
        crate::say!("{}: valid", args.file);
        return 0;
    }
    crate::tell!("{}: {} issue(s)", args.file, issues.len());
    for (line, msg) in &issues {
        match line {
            Some(l) => crate::tell!("  {}:{l}: {msg}", args.file),
            None => crate::tell!("  {}: {msg}", args.file),
        }
    }
    1
}
