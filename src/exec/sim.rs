//! Deterministic simulation for demos and tests: a backend whose sweeps
//! reach a best metric given by a seeded synthetic objective of the sweep
//! config (a few `running` polls, then `completed`; spend accrues per agent
//! per poll; `budget_exceeded` at the cap), and simulated leaf workers that
//! read their task context and write valid results. Payloads have the same
//! shapes as the real backend's stdout JSON.

use crate::contract::canonical::{canonical_json, sha256_hex};
use crate::machine::Machine;
use crate::workspace::fsio::{self, write_atomic};
use serde_json::{Value, json};
use std::path::Path;

/// Polls reported `running` before a sweep completes.
pub const RUNNING_POLLS: u64 = 2;
/// Simulated spend per sweep agent per poll, USD.
pub const SPEND_PER_AGENT_POLL: f64 = 0.03;

/// A number in [0, 1) from the hash of `parts`.
pub fn unit(parts: &[&str]) -> f64 {
    let hex = sha256_hex(parts.join("\u{1f}").as_bytes());
    let n = u64::from_str_radix(&hex[..13], 16).unwrap_or(0);
    n as f64 / (1u64 << 52) as f64
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// The synthetic objective: what the best run of a sweep with `config` reaches.
pub fn synthetic_metric(config: &Value, seed: u64) -> f64 {
    let u = unit(&[&canonical_json(config), &seed.to_string()]);
    let goal = config
        .pointer("/metric/goal")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if goal == "minimize" {
        round(0.30 - 0.28 * u, 4)
    } else {
        round(0.90 + 0.095 * u, 4)
    }
}

fn read_json(path: &str) -> Option<Value> {
    fsio::read_text_capped(Path::new(path))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

fn write(path: &str, value: &Value) -> Result<(), String> {
    write_atomic(
        Path::new(path),
        crate::engine::handoff::to_pretty(value).as_bytes(),
    )
    .map_err(|e| format!("{path}: {e}"))
}

fn sim_record_path(result_file: &str, sweep_id: &str) -> String {
    let dir = Path::new(result_file)
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    dir.join("sim")
        .join(format!("{sweep_id}.json"))
        .display()
        .to_string()
}

/// Executes backend operation `op` of `directive` and writes its result file.
pub fn backend(op: &str, directive: &Value, seed: u64) -> Result<String, String> {
    let result_file = directive["result_file"].as_str().unwrap_or_default();
    let action = directive["action"].clone();
    let (result, verdict) = match op {
        "smoke_test" => (
            json!({"exit_code": 0, "timed_out": false, "killed_at_limit": false, "duration_seconds": 4.2,
                   "stdout_tail": "simulated: training started", "stderr_tail": ""}),
            "simulated smoke test passed".to_string(),
        ),
        "launch" => {
            let config = &directive["sweep_config"];
            let spec = &directive["sky_task_spec"];
            let id = format!(
                "sim-{}",
                &sha256_hex(format!("{}{seed}{result_file}", canonical_json(config)).as_bytes())
                    [..8]
            );
            let agents = spec["num_sweep_agents"].as_u64().unwrap_or(1);
            let record = json!({"sweep_id": id, "polls": 0, "spend": 0.0, "agents": agents,
                                "max_budget_usd": spec["max_budget_usd"], "best": synthetic_metric(config, seed)});
            write(&sim_record_path(result_file, &id), &record)?;
            let jobs: Vec<Value> = (1..=agents)
                .map(|k| json!(format!("sky-{id}-{k}")))
                .collect();
            (
                json!({"operation": action, "exit_code": 0, "sweep_id": id,
                       "sweep_url": format!("https://wandb.ai/sim/sweeps/{id}"),
                       "sky_job_ids": jobs, "launched_at": crate::now()}),
                format!("simulated sweep {id} launched"),
            )
        }
        "poll" => {
            let id = directive["sweep_id"].as_str().unwrap_or_default();
            let record_path = sim_record_path(result_file, id);
            let mut record = read_json(&record_path)
                .ok_or(format!("{record_path}: unknown simulated sweep {id}"))?;
            let polls = record["polls"].as_u64().unwrap_or(0) + 1;
            let agents = record["agents"].as_u64().unwrap_or(1) as f64;
            let spend = round(
                record["spend"].as_f64().unwrap_or(0.0) + SPEND_PER_AGENT_POLL * agents,
                2,
            );
            let cap = record["max_budget_usd"].as_f64().unwrap_or(f64::INFINITY);
            let best_final = record["best"].as_f64().unwrap_or(0.0);
            let status = if spend >= cap {
                "budget_exceeded"
            } else if polls > RUNNING_POLLS {
                "completed"
            } else {
                "running"
            };
            let progress = (polls.min(RUNNING_POLLS + 1) as f64) / (RUNNING_POLLS + 1) as f64;
            let best = round(best_final * (0.97 + 0.03 * progress), 4);
            record["polls"] = json!(polls);
            record["spend"] = json!(spend);
            write(&record_path, &record)?;
            let run = format!("{id}-run-{polls:03}");
            (
                json!({"operation": action, "exit_code": 0, "sweep_status": status,
                       "best_metric_value": best, "best_run_id": run,
                       "best_run_url": format!("https://wandb.ai/sim/runs/{run}"),
                       "killed_runs": [], "cumulative_spend_usd": spend}),
                format!("simulated poll: {status}"),
            )
        }
        other => return Err(format!("simulated backend has no operation `{other}`")),
    };
    write(result_file, &result)?;
    Ok(verdict)
}

/// Writes results for every launch request whose result file does not exist yet.
pub fn answer_workers(
    machine: &Machine,
    seed: u64,
    launches: &[Value],
    state: Option<&Value>,
    _args: &crate::engine::phase::PhaseArgs,
) -> Result<(), String> {
    let Some(state) = state else { return Ok(()) };
    for l in launches {
        let result_file = l["result_file"].as_str().unwrap_or_default();
        if result_file.is_empty() || Path::new(result_file).exists() {
            continue;
        }
        let worker = l["worker_ref"].as_str().unwrap_or_default();
        let kind = machine
            .policy
            .workers
            .get(worker)
            .and_then(|w| w.simulator.as_deref())
            .unwrap_or_default();
        let slot = l["slot_id"].as_str().unwrap_or_default();
        let result = match kind {
            "ideation" => ideation(state, slot, seed),
            "selection" => selection(state, seed),
            "analysis" => analysis(state),
            other => return Err(format!("no simulated worker `{other}` for `{worker}`")),
        };
        write(result_file, &result)?;
    }
    Ok(())
}

fn ideation(state: &Value, slot: &str, seed: u64) -> Value {
    let metric = state
        .pointer("/objective_snapshot/metric")
        .cloned()
        .unwrap_or(Value::Null);
    let goal = state
        .pointer("/objective_snapshot/direction")
        .cloned()
        .unwrap_or(Value::Null);
    let s = seed.to_string();
    let lr_lo = round(1e-4 * (1.0 + 9.0 * unit(&[slot, &s, "lr"])), 6);
    let layers = 2 + (unit(&[slot, &s, "layers"]) * 3.0) as u64;
    let hidden = [64, 128, 256, 512][(unit(&[slot, &s, "hidden"]) * 4.0) as usize % 4];
    let method = ["bayes", "random", "grid"][(unit(&[slot, &s, "method"]) * 3.0) as usize % 3];
    json!({
        "slot_id": slot,
        "mode": "ideation",
        "status": "completed",
        "summary": format!("simulated ideation for {slot}"),
        "proposal_candidates": [{
            "rationale": format!("explore lr from {lr_lo} with {layers} layers and hidden {hidden}"),
            "sweep_config": {
                "method": method,
                "metric": {"name": metric, "goal": goal},
                "parameters": {
                    "lr": {"values": [lr_lo, round(lr_lo * 3.0, 6), round(lr_lo * 10.0, 6)]},
                    "num_layers": {"values": [layers, layers + 1]},
                    "hidden_dim": {"values": [hidden]}
                }
            }
        }]
    })
}

fn selection(state: &Value, seed: u64) -> Value {
    let pool = state["current_proposals"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let maximize = state
        .pointer("/objective_snapshot/direction")
        .and_then(Value::as_str)
        != Some("minimize");
    let best = pool
        .iter()
        .filter(|p| p["sweep_config"].is_object())
        .map(|p| (synthetic_metric(&p["sweep_config"], seed), p))
        .max_by(|a, b| {
            let ord = a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal);
            if maximize { ord } else { ord.reverse() }
        });
    match best.or_else(|| pool.first().map(|p| (0.0, p))) {
        Some((score, p)) => json!({
            "winning_proposal": {"proposal_id": p["proposal_id"]},
            "sweep_config": p["sweep_config"],
            "ranking_rationale": format!("simulated ranking: expected best {score}"),
        }),
        None => {
            json!({"winning_proposal": null, "sweep_config": null, "ranking_rationale": "empty pool"})
        }
    }
}

fn analysis(state: &Value) -> Value {
    let sweep = &state["current_sweep"];
    let value = sweep["best_metric_value"].clone();
    let param = state
        .pointer("/selected_sweep/sweep_config/parameters")
        .and_then(Value::as_object)
        .and_then(|m| m.keys().next().cloned());
    json!({
        "improved": null,
        "best_metric_value": value,
        "best_run_id": sweep["best_run_id"],
        "best_run_url": sweep["best_run_url"],
        "learnings": [format!("sweep {} reached {} (simulated; most sensitive: {})",
            sweep["sweep_id"].as_str().unwrap_or("?"), value, param.unwrap_or_else(|| "unknown".into()))],
    })
}
