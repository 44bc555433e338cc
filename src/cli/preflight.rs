//! `metaopt preflight --campaign FILE [--cwd DIR]`: the one-shot readiness
//! check LOAD_CAMPAIGN gates on. Checks come from `machine/preflight.yaml`.

use crate::exec::preflight;
use clap::Args;
use std::path::{Path, PathBuf};

/// Flags of `metaopt preflight`.
#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// Campaign file.
    #[arg(long, default_value = "ml_metaopt_campaign.yaml")]
    pub campaign: PathBuf,
    /// Project root where `.ml-metaopt/` lives.
    #[arg(long, default_value = ".")]
    pub cwd: PathBuf,
    /// Print the artifact as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `metaopt preflight`: exit 0 READY, 1 FAILED, 2 usage or unreadable campaign.
pub fn run(machine_dir: Option<&Path>, args: PreflightArgs) -> i32 {
    let machine = match super::load_machine(machine_dir) {
        Ok(m) => m,
        Err(code) => return code,
    };
    let campaign = match std::fs::canonicalize(&args.campaign) {
        Ok(p) => p,
        Err(e) => {
            crate::tell!(
                "error: {}: campaign file not readable: {e}",
                args.campaign.display()
            );
            return super::EXIT_USAGE;
        }
    };
    if let Err(e) = super::step::enter(&args.cwd) {
        crate::tell!("error: {e}");
        return super::EXIT_USAGE;
    }
    match preflight::run(machine, &campaign) {
        Err(e) => {
            crate::tell!("error: {e}");
            super::EXIT_USAGE
        }
        Ok((path, artifact)) => {
            if args.json {
                crate::say!(
                    "{}",
                    serde_json::to_string_pretty(&artifact).unwrap_or_default()
                );
            } else {
                crate::say!("{path}: {}", artifact["status"].as_str().unwrap_or("?"));
                for f in artifact["failures"].as_array().into_iter().flatten() {
                    crate::say!(
                        "  {}: {} — {}",
                        f["check"].as_str().unwrap_or(""),
                        f["message"].as_str().unwrap_or(""),
                        f["remediation"].as_str().unwrap_or("")
                    );
                }
            }
            if artifact["status"] == "READY" { 0 } else { 1 }
        }
    }
}
