//! `metaopt status`: where a campaign stands, for people and hosts.

use crate::exec::{journal, step};
use clap::Args;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// Flags of `metaopt status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Project root.
    #[arg(long, default_value = ".")]
    pub project: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn bar(spent: f64, cap: f64) -> String {
    let width = 20usize;
    let filled = if cap > 0.0 {
        ((spent / cap).clamp(0.0, 1.0) * width as f64).round() as usize
    } else {
        0
    };
    format!("[{}{}]", "#".repeat(filled), ".".repeat(width - filled))
}

/// What `status` reads of a handoff: its launch requests (its state patch, a pool at
/// times, is scanned over, not built).
#[derive(serde::Deserialize)]
struct Launches {
    #[serde(default)]
    launch_requests: Value,
}

/// `metaopt status`.
pub fn run(machine_dir: Option<&Path>, args: StatusArgs) -> i32 {
    let machine = match super::open_project(machine_dir, &args.project) {
        Ok(m) => m,
        Err(code) => return code,
    };
    // The fields shown, as JSON; the pools are counted, not converted (a large
    // campaign's pools are megabytes).
    let (state, pool_sizes) = match step::read_state(machine) {
        Ok(Some(s)) => {
            let doc = s.value();
            let Some(map) = doc.read_lock::<rhai::Map>() else {
                crate::tell!(
                    "error: {}: not a JSON object",
                    step::layout(machine, "state")
                );
                return 1;
            };
            let shown = [
                "campaign_id",
                "machine_state",
                "status",
                "current_iteration",
                "baseline",
                "current_sweep",
                "completed_iterations",
                "next_action",
            ];
            let fields: serde_json::Map<String, Value> = shown
                .iter()
                .filter_map(|k| {
                    let v = map.get(*k)?;
                    Some((k.to_string(), crate::engine::doc::to_json(v)))
                })
                .collect();
            let count = |k: &str| map.get(k).and_then(crate::engine::unread::list_len);
            let sizes = (count("current_proposals"), count("next_proposals"));
            (Value::Object(fields), sizes)
        }
        Ok(None) => {
            if args.json {
                crate::say!("{}", json!({"state": null}));
            } else {
                crate::say!(
                    "no campaign state yet ({}); run `metaopt step`",
                    step::layout(machine, "state")
                );
            }
            return 0;
        }
        Err(e) => {
            crate::tell!("error: {e}");
            return 1;
        }
    };
    let load = std::fs::read_to_string(step::layout(machine, "load_handoff"))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
        .unwrap_or(Value::Null);
    let cap = load
        .pointer("/compute/max_budget_usd")
        .and_then(Value::as_f64);
    let completed = state["completed_iterations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let spent: f64 = completed
        .iter()
        .filter_map(|c| c["spend_usd"].as_f64())
        .sum::<f64>()
        + state
            .pointer("/current_sweep/cumulative_spend_usd")
            .and_then(Value::as_f64)
            .unwrap_or(0.0);
    let (mut changed_between, mut last_hash) = (false, None);
    journal::scan(machine, |_, e| {
        changed_between |= e.tables_changed == json!(true);
        last_hash = Some(e.machine_hash);
    });
    let tables_changed =
        changed_between || last_hash.is_some_and(|h| h.as_str() != Some(machine.hash().as_str()));
    let pending: Vec<Value> = std::fs::read_dir(step::layout(machine, "handoffs"))
        .ok()
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|t| t.trim_start().starts_with('{'))
        .filter_map(|t| serde_json::from_str::<Launches>(&t).ok())
        .flat_map(|h| h.launch_requests.as_array().cloned().unwrap_or_default())
        .filter(|l| {
            l["result_file"]
                .as_str()
                .is_some_and(|p| !Path::new(p).exists())
        })
        .collect();
    let summary = json!({
        "machine_state": state["machine_state"],
        "status": state["status"],
        "iteration": state["current_iteration"],
        "baseline": state["baseline"],
        "spend_usd": (spent * 100.0).round() / 100.0,
        "max_budget_usd": cap,
        "current_proposals": pool_sizes.0,
        "next_proposals": pool_sizes.1,
        "completed_iterations": completed.len(),
        "pending_workers": pending,
        "next_action": state["next_action"],
        "tables_changed_during_campaign": tables_changed,
    });
    if args.json {
        crate::say!(
            "{}",
            serde_json::to_string_pretty(&summary).unwrap_or_default()
        );
        return 0;
    }
    crate::say!(
        "campaign   {}",
        state["campaign_id"].as_str().unwrap_or("?")
    );
    crate::say!(
        "state      {} ({})",
        state["machine_state"].as_str().unwrap_or("?"),
        state["status"].as_str().unwrap_or("?")
    );
    crate::say!(
        "iteration  {} ({} completed)",
        state["current_iteration"],
        completed.len()
    );
    // (Indexing the value, not its map: a missing field reads as null.)
    let baseline = &state["baseline"];
    if baseline.is_object() {
        crate::say!(
            "baseline   {} = {} ({})",
            baseline["metric"].as_str().unwrap_or("?"),
            baseline["value"],
            baseline["wandb_run_url"]
        );
    } else {
        crate::say!("baseline   none yet");
    }
    match cap {
        Some(c) => crate::say!("spend      {} {:.2} / {:.2} USD", bar(spent, c), spent, c),
        None => crate::say!("spend      {spent:.2} USD"),
    }
    crate::say!(
        "pools      current {} / next {}",
        summary["current_proposals"],
        summary["next_proposals"]
    );
    crate::say!("workers    {} pending", pending.len());
    crate::say!(
        "next       {}",
        state["next_action"].as_str().unwrap_or("-")
    );
    if tables_changed {
        crate::say!(
            "note       the machine tables changed during this campaign (see `metaopt history`)"
        );
    }
    0
}
