//! Deterministic campaign projects for the benchmarks (shared by every bench target and
//! by `scripts/bench.sh` through the `phases` bench's prepare mode).
//!
//! [`generate`] writes a large project for the bundled example campaign: a READY preflight
//! artifact bound to its identity, a valid state file with 10,000 proposals across both
//! pools, 2,000 completed iterations and 500 key learnings, 1,000 ideation results waiting
//! to be merged in one gate, and the load handoff `metaopt agent metaopt-load-campaign`
//! writes for it. [`generate_sized`] writes the same shape at any [`Size`] ([`EXAMPLE`] is
//! a small, realistic one). [`setup_case`] copies a generated project and shapes it so that
//! one control-agent phase takes its main branch ([`CASES`]).
//!
//! Everything is a function of the seed (a hand-written splitmix64 drives every choice);
//! no clock is read, so two runs with one seed write byte-identical projects.
#![allow(dead_code)] // each bench target uses a different part of this module

use serde_json::{Map, Value, json};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The bundled example campaign (`examples/ml_metaopt_campaign.example.yaml`).
pub const EXAMPLE_CAMPAIGN: &str = include_str!("../../examples/ml_metaopt_campaign.example.yaml");
/// Identity hash of [`EXAMPLE_CAMPAIGN`].
pub const IDENTITY_HASH: &str =
    "sha256:76d87a271abe95ba765ac749237a1383dd4c75956671de88f15bba9cca13bc81";
/// `campaign.name` of [`EXAMPLE_CAMPAIGN`], hence the state's `campaign_id`.
pub const CAMPAIGN_ID: &str = "gnn-mnist-optimization";
/// Objective metric of [`EXAMPLE_CAMPAIGN`].
pub const METRIC: &str = "val/accuracy";
/// Objective direction of [`EXAMPLE_CAMPAIGN`].
pub const DIRECTION: &str = "maximize";
/// The state file, relative to the project root.
pub const STATE_PATH: &str = ".ml-metaopt/state.json";
/// The load handoff, relative to the project root.
pub const LOAD_HANDOFF: &str = ".ml-metaopt/handoffs/load_campaign.latest.json";
/// Worker results directory, relative to the project root.
pub const WORKER_RESULTS: &str = ".ml-metaopt/worker-results";
/// Executor events directory, relative to the project root.
pub const EXECUTOR_EVENTS: &str = ".ml-metaopt/executor-events";

/// How much history a generated project carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    /// Name used in bench ids and directory names.
    pub name: &'static str,
    /// Proposals in `current_proposals`.
    pub current_proposals: usize,
    /// Proposals in `next_proposals`.
    pub next_proposals: usize,
    /// Entries of `completed_iterations` (the state is at iteration this + 1).
    pub completed_iterations: usize,
    /// Unique `key_learnings`.
    pub key_learnings: usize,
    /// Ideation results `.ml-metaopt/worker-results/bg-<k>.json` waiting to be merged.
    pub ideation_results: usize,
}

/// The large campaign of the performance targets.
pub const LARGE: Size = Size {
    name: "large",
    current_proposals: 5_000,
    next_proposals: 5_000,
    completed_iterations: 2_000,
    key_learnings: 500,
    ideation_results: 1_000,
};

/// A small campaign, the size the bundled example has after one iteration.
pub const EXAMPLE: Size = Size {
    name: "example",
    current_proposals: 3,
    next_proposals: 2,
    completed_iterations: 1,
    key_learnings: 2,
    ideation_results: 3,
};

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough to pick fixtures.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// A timestamp in 2026, `YYYY-MM-DDTHH:MM:SSZ`.
fn timestamp(rng: &mut SplitMix64) -> String {
    format!(
        "2026-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        1 + rng.below(12),
        1 + rng.below(28),
        rng.below(24),
        rng.below(60),
        rng.below(60)
    )
}

fn hex(rng: &mut SplitMix64, digits: usize) -> String {
    let s = format!("{:016x}", rng.next_u64());
    s[..digits.min(16)].to_string()
}

const PARAMETERS: [&str; 10] = [
    "lr",
    "weight_decay",
    "dropout",
    "num_layers",
    "hidden_dim",
    "batch_size",
    "optimizer",
    "pool_type",
    "activation",
    "warmup_steps",
];

/// A WandB search space for `name`; `grid` sweeps get discrete values only.
fn parameter(rng: &mut SplitMix64, name: &str, grid: bool) -> Value {
    let log_range = |rng: &mut SplitMix64, lo: f64, span: f64| {
        let min = round(lo * (1.0 + 9.0 * rng.unit()), 7);
        (min, round(min * span, 7))
    };
    match name {
        "lr" | "weight_decay" => {
            let (lo, span) = if name == "lr" {
                (1e-4, 30.0)
            } else {
                (1e-6, 100.0)
            };
            let (min, max) = log_range(rng, lo, span);
            if grid {
                json!({ "values": [min, round((min * max).sqrt(), 7), max] })
            } else {
                json!({ "distribution": "log_uniform_values", "min": min, "max": max })
            }
        }
        "dropout" => {
            let min = round(0.2 * rng.unit(), 2);
            let max = round(min + 0.1 + 0.3 * rng.unit(), 2);
            if grid {
                json!({ "values": [min, max] })
            } else {
                json!({ "distribution": "uniform", "min": min, "max": max })
            }
        }
        "warmup_steps" => {
            let max = 500 * (1 + rng.below(6));
            if grid {
                json!({ "values": [0, max / 2, max] })
            } else {
                json!({ "distribution": "int_uniform", "min": 0, "max": max })
            }
        }
        "num_layers" => {
            let lo = 2 + rng.below(3);
            json!({ "values": (lo..lo + 2 + rng.below(3)).collect::<Vec<_>>() })
        }
        "hidden_dim" => {
            let start = rng.below(3);
            json!({ "values": &[64, 128, 256, 512][start..start + 2] })
        }
        "batch_size" => {
            let choices: [&[u32]; 3] = [&[32, 64], &[64, 128], &[32, 64, 128]];
            json!({ "values": *rng.pick(&choices) })
        }
        "optimizer" => {
            let choices: [&[&str]; 2] = [&["adam", "adamw"], &["adamw", "sgd"]];
            json!({ "values": *rng.pick(&choices) })
        }
        "pool_type" => json!({ "values": ["mean", "max", "attention"] }),
        _ => {
            let choices: [&[&str]; 2] = [&["relu", "gelu"], &["gelu", "elu", "silu"]];
            json!({ "values": *rng.pick(&choices) })
        }
    }
}

/// A valid WandB sweep config for the example objective, 3–6 parameters.
pub fn sweep_config(rng: &mut SplitMix64) -> Value {
    let method = *rng.pick(&["bayes", "bayes", "random", "grid"]);
    let mut names: Vec<&str> = PARAMETERS.to_vec();
    let count = 3 + rng.below(4);
    let mut parameters = Map::new();
    for _ in 0..count {
        let name = names.swap_remove(rng.below(names.len()));
        parameters.insert(name.to_string(), parameter(rng, name, method == "grid"));
    }
    json!({
        "method": method,
        "metric": { "name": METRIC, "goal": DIRECTION },
        "parameters": parameters,
    })
}

fn rationale(rng: &mut SplitMix64, config: &Value) -> String {
    let params: Vec<&String> = config["parameters"]
        .as_object()
        .map(|m| m.keys().collect())
        .unwrap_or_default();
    let verb = rng.pick(&["Explore", "Narrow", "Widen", "Re-centre", "Probe"]);
    let why = rng.pick(&[
        "the last sweeps plateaued around the baseline",
        "the best runs clustered at the edge of the previous range",
        "validation accuracy was noisy across seeds",
        "deeper models overfit without regularisation",
        "the analysis worker flagged this interaction as sensitive",
    ]);
    format!(
        "{verb} {} jointly with {}: {why}.",
        params[0],
        params[1..]
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

fn proposal(rng: &mut SplitMix64, number: usize, slot: usize, iteration: usize) -> Value {
    let config = sweep_config(rng);
    json!({
        "proposal_id": format!("{CAMPAIGN_ID}-p{number}"),
        "rationale": rationale(rng, &config),
        "sweep_config": config,
        "source_slot_id": format!("bg-{slot}"),
        "source_file": format!("{WORKER_RESULTS}/bg-{slot}.json"),
        "creation_iteration": 1 + rng.below(iteration),
        "created_at": timestamp(rng),
    })
}

fn learning(rng: &mut SplitMix64, index: usize, iterations: usize) -> String {
    let param = rng.pick(&PARAMETERS);
    let other = rng.pick(&PARAMETERS);
    let effect = rng.pick(&[
        "diverges above",
        "helps only below",
        "has no measurable effect beyond",
        "interacts strongly with",
        "should stay fixed at",
    ]);
    format!(
        "L{index}: {param} {effect} {other} (iteration {}, {:.3} val/accuracy)",
        1 + rng.below(iterations.max(1)),
        0.9 + 0.08 * rng.unit()
    )
}

/// Everything generated for one project, for the per-phase setups.
struct Generated {
    state: Value,
    results: Vec<(String, Value)>,
}

fn build(seed: u64, size: &Size) -> Generated {
    let mut rng = SplitMix64::new(seed);
    let iteration = size.completed_iterations + 1;
    let mut completed = Vec::with_capacity(size.completed_iterations);
    let mut best: f64 = 0.0;
    let mut best_run = String::new();
    for i in 1..=size.completed_iterations {
        let value = round(0.90 + 0.08 * rng.unit(), 4);
        let improved = value > best + 0.005;
        let sweep = format!("wandb-sweep-{}", hex(&mut rng, 8));
        if improved {
            best = value;
            best_run = format!("run-{}", hex(&mut rng, 8));
        }
        completed.push(json!({
            "iteration": i,
            "sweep_id": sweep,
            "best_metric_value": value,
            "spend_usd": round(0.12 + 0.8 * rng.unit(), 2),
            "improved_baseline": improved,
            "proposal_id": format!("{CAMPAIGN_ID}-p{i}"),
        }));
    }
    // Pool proposals are numbered after the ones that ran; two per (consumed) ideation slot.
    let total = size.current_proposals + size.next_proposals;
    let pool: Vec<Value> = (0..total)
        .map(|k| {
            proposal(
                &mut rng,
                size.completed_iterations + 1 + k,
                1 + k / 2,
                iteration,
            )
        })
        .collect();
    let (current, next) = pool.split_at(size.current_proposals);
    let learnings: Vec<String> = (1..=size.key_learnings)
        .map(|i| learning(&mut rng, i, size.completed_iterations))
        .collect();
    let baseline = if best_run.is_empty() {
        Value::Null
    } else {
        json!({
            "metric": METRIC,
            "value": best,
            "wandb_run_id": best_run,
            "wandb_run_url": format!("https://wandb.ai/my-wandb-entity/gnn-mnist-metaopt/runs/{best_run}"),
            "established_at": timestamp(&mut rng),
        })
    };
    let state = json!({
        "version": 4,
        "campaign_id": CAMPAIGN_ID,
        "campaign_identity_hash": IDENTITY_HASH,
        "status": "RUNNING",
        "machine_state": "WAIT_FOR_PROPOSALS",
        "current_iteration": iteration,
        "next_action": format!("wait for {} ideation worker(s)", size.ideation_results),
        "objective_snapshot": { "metric": METRIC, "direction": DIRECTION, "improvement_threshold": 0.005 },
        "proposal_cycle": { "cycle_id": format!("iter-{iteration}-cycle-1"), "current_pool_frozen": false },
        "current_sweep": null,
        "selected_sweep": null,
        "baseline": baseline,
        "current_proposals": current,
        "next_proposals": next,
        "key_learnings": learnings,
        "completed_iterations": completed,
        "no_improve_iterations": 2,
        "campaign_started_at": "2026-01-01T00:00:00Z",
    });
    // Pending ideation results use slots after those the pools came from.
    let first_slot = total.div_ceil(2) + 1;
    let results = (0..size.ideation_results)
        .map(|k| {
            let slot = format!("bg-{}", first_slot + k);
            let candidates: Vec<Value> = (0..1 + rng.below(3))
                .map(|_| {
                    let config = sweep_config(&mut rng);
                    json!({ "rationale": rationale(&mut rng, &config), "sweep_config": config })
                })
                .collect();
            let result = json!({
                "slot_id": slot,
                "mode": "ideation",
                "status": "completed",
                "summary": format!("{} candidate(s) for {slot}", candidates.len()),
                "proposal_candidates": candidates,
                "saturated": false,
            });
            (format!("{WORKER_RESULTS}/{slot}.json"), result)
        })
        .collect();
    Generated { state, results }
}

/// JSON as the engine writes it: pretty, two-space indent, trailing newline.
pub fn pretty(value: &Value) -> String {
    let mut s = serde_json::to_string_pretty(value).expect("JSON values always serialise");
    s.push('\n');
    s
}

fn write_json(dir: &Path, rel: &str, value: &Value) -> io::Result<()> {
    let path = dir.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, pretty(value))
}

/// The release (or test-profile) `metaopt` binary cargo built next to this bench.
pub fn metaopt_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_metaopt"))
}

/// Writes the large project ([`LARGE`]) into `dir` (created if needed).
pub fn generate(dir: &Path, seed: u64) -> io::Result<()> {
    generate_sized(dir, seed, &LARGE)
}

/// Writes a project of `size` into `dir`: campaign, READY preflight, state in
/// WAIT_FOR_PROPOSALS, pending ideation results, and the load handoff produced by
/// `metaopt agent metaopt-load-campaign --output …` run in `dir`.
pub fn generate_sized(dir: &Path, seed: u64, size: &Size) -> io::Result<()> {
    for sub in ["handoffs", "tasks", "worker-results", "executor-events"] {
        std::fs::create_dir_all(dir.join(".ml-metaopt").join(sub))?;
    }
    std::fs::write(dir.join("ml_metaopt_campaign.yaml"), EXAMPLE_CAMPAIGN)?;
    write_json(
        dir,
        ".ml-metaopt/preflight-readiness.json",
        &json!({
            "schema_version": 1,
            "status": "READY",
            "campaign_identity_hash": IDENTITY_HASH,
            "failures": [],
            "next_action": "run metaopt step",
        }),
    )?;
    let generated = build(seed, size);
    write_json(dir, STATE_PATH, &generated.state)?;
    for (rel, result) in &generated.results {
        write_json(dir, rel, result)?;
    }
    let status = Command::new(metaopt_bin())
        .args(["agent", "metaopt-load-campaign", "--output", LOAD_HANDOFF])
        .current_dir(dir)
        .env_remove("METAOPT_MACHINE")
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!(
            "metaopt agent metaopt-load-campaign failed in {}: {status}",
            dir.display()
        )));
    }
    let handoff: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(LOAD_HANDOFF))?)?;
    if handoff["recommended_next_machine_state"] != "HYDRATE_STATE" {
        return Err(io::Error::other(format!(
            "the generated load handoff does not recommend HYDRATE_STATE: {}",
            handoff["summary"]
        )));
    }
    Ok(())
}

/// One control-agent phase to benchmark and the state it runs in.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    /// Control agent.
    pub agent: &'static str,
    /// Phase (`--mode`); unique across agents, so also the case's id.
    pub mode: &'static str,
    /// `machine_state` the state file is put in.
    pub machine_state: &'static str,
    /// Rules that count as the phase's main branch (the bench checks one of them decides).
    pub rules: &'static [&'static str],
}

/// Every phase of every control agent, in the order a campaign runs them.
pub const CASES: &[Case] = &[
    Case {
        agent: "metaopt-load-campaign",
        mode: "validate",
        machine_state: "WAIT_FOR_PROPOSALS",
        rules: &["preflight-ready"],
    },
    Case {
        agent: "metaopt-hydrate-state",
        mode: "hydrate",
        machine_state: "WAIT_FOR_PROPOSALS",
        rules: &["resume"],
    },
    Case {
        agent: "metaopt-orchestrator",
        mode: "gate",
        machine_state: "WAIT_FOR_PROPOSALS",
        rules: &["campaign-still-valid"],
    },
    Case {
        agent: "metaopt-background-control",
        mode: "plan_background_work",
        machine_state: "IDEATE",
        rules: &["launch-ideation"],
    },
    Case {
        agent: "metaopt-background-control",
        mode: "gate_background_work",
        machine_state: "WAIT_FOR_PROPOSALS",
        rules: &["pool-ready", "pool-building"],
    },
    Case {
        agent: "metaopt-select-design",
        mode: "plan_select_design",
        machine_state: "SELECT_AND_DESIGN_SWEEP",
        rules: &["request-selection"],
    },
    Case {
        agent: "metaopt-select-design",
        mode: "finalize_select_design",
        machine_state: "SELECT_AND_DESIGN_SWEEP",
        rules: &["selection-final"],
    },
    Case {
        agent: "metaopt-remote-execution-control",
        mode: "gate_local_sanity",
        machine_state: "LOCAL_SANITY",
        rules: &["smoke-passed"],
    },
    Case {
        agent: "metaopt-remote-execution-control",
        mode: "plan_launch",
        machine_state: "LAUNCH_SWEEP",
        rules: &["sweep-launched"],
    },
    Case {
        agent: "metaopt-remote-execution-control",
        mode: "poll_sweep",
        machine_state: "WAIT_FOR_SWEEP",
        rules: &["sweep-completed"],
    },
    Case {
        agent: "metaopt-remote-execution-control",
        mode: "analyze",
        machine_state: "ANALYZE",
        rules: &["baseline-improved", "baseline-kept"],
    },
    Case {
        agent: "metaopt-iteration-close-control",
        mode: "plan_roll_iteration",
        machine_state: "ROLL_ITERATION",
        rules: &["rollover-planned"],
    },
    Case {
        agent: "metaopt-iteration-close-control",
        mode: "gate_roll_iteration",
        machine_state: "ROLL_ITERATION",
        // The large campaign is far past the example's max_iterations (20).
        rules: &["continue-campaign", "stop-max-iterations"],
    },
];

/// Copies `src` into `dst` recursively (files and directories only).
pub fn copy_dir(src: &Path, dst: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dst)?;
    for entry in std::fs::read_dir(src)? {
        let entry = entry?;
        let to = dst.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to)?;
        }
    }
    Ok(())
}

fn launched_sweep(rng: &mut SplitMix64, with_progress: bool) -> Value {
    let id = format!("wandb-sweep-{}", hex(rng, 8));
    let jobs: Vec<String> = (1..=4).map(|k| format!("sky-{id}-{k}")).collect();
    let run = format!("run-{}", hex(rng, 8));
    json!({
        "sweep_id": id,
        "sweep_url": format!("https://wandb.ai/my-wandb-entity/gnn-mnist-metaopt/sweeps/{id}"),
        "sky_job_ids": jobs,
        "launched_at": timestamp(rng),
        "cumulative_spend_usd": if with_progress { 2.4 } else { 0.0 },
        "best_run_id": if with_progress { json!(run) } else { Value::Null },
        "best_run_url": if with_progress {
            json!(format!("https://wandb.ai/my-wandb-entity/gnn-mnist-metaopt/runs/{run}"))
        } else {
            Value::Null
        },
        "best_metric_value": if with_progress { json!(0.9412) } else { Value::Null },
    })
}

/// Copies the generated project `template` to `dir` and shapes it for `case`: the
/// `machine_state`, the state fields and the result files its main branch needs.
pub fn setup_case(template: &Path, dir: &Path, case: &Case, seed: u64) -> io::Result<()> {
    copy_dir(template, dir)?;
    let mut rng = SplitMix64::new(seed ^ 0x5EED_CA5E);
    let mut state: Value = serde_json::from_str(&std::fs::read_to_string(dir.join(STATE_PATH))?)?;
    let iteration = state["current_iteration"].as_u64().unwrap_or(1);
    let winner = state["current_proposals"]
        .as_array()
        .and_then(|p| p.last())
        .cloned()
        .unwrap_or(Value::Null);
    let selected = json!({
        "proposal_id": winner["proposal_id"],
        "sweep_config": winner["sweep_config"],
    });
    let events = |stem: &str| format!("{EXECUTOR_EVENTS}/{stem}-iter-{iteration}.json");
    let results = |stem: &str| format!("{WORKER_RESULTS}/{stem}-iter-{iteration}.json");
    state["machine_state"] = json!(case.machine_state);
    let frozen = !matches!(case.machine_state, "IDEATE" | "WAIT_FOR_PROPOSALS")
        && case.mode != "plan_select_design";
    state["proposal_cycle"]["current_pool_frozen"] = json!(frozen);
    let running_sweep = matches!(
        case.mode,
        "poll_sweep" | "analyze" | "plan_roll_iteration" | "gate_roll_iteration"
    );
    let after_selection = matches!(
        case.machine_state,
        "LOCAL_SANITY" | "LAUNCH_SWEEP" | "WAIT_FOR_SWEEP" | "ANALYZE" | "ROLL_ITERATION"
    );
    if after_selection {
        state["selected_sweep"] = selected.clone();
    }
    if running_sweep {
        state["current_sweep"] = launched_sweep(&mut rng, true);
    }
    match case.mode {
        "plan_background_work" => {
            // An emptied current pool: every proposal waits in next_proposals, so the
            // phase launches `current_target` ideation workers (its main branch).
            let mut current = state["current_proposals"].take();
            if let (Some(next), Some(current)) = (
                state["next_proposals"].as_array_mut(),
                current.as_array_mut(),
            ) {
                next.append(current);
            }
            state["current_proposals"] = json!([]);
            state["next_action"] = json!("maintain background pool");
        }
        "finalize_select_design" => write_json(
            dir,
            &results("select-design"),
            &json!({
                "winning_proposal": { "proposal_id": winner["proposal_id"] },
                "sweep_config": winner["sweep_config"],
                "ranking_rationale": "highest expected gain over the baseline at the lowest cost",
            }),
        )?,
        "gate_local_sanity" => write_json(
            dir,
            &events("smoke-test"),
            &json!({
                "exit_code": 0, "timed_out": false, "killed_at_limit": false,
                "duration_seconds": 4.2, "stdout_tail": "epoch 0 step 10 loss 2.301",
                "stderr_tail": "",
            }),
        )?,
        "plan_launch" => {
            state["current_sweep"] = json!({
                "sweep_id": null, "sweep_url": null, "sky_job_ids": [], "launched_at": null,
                "cumulative_spend_usd": 0.0, "best_run_id": null, "best_run_url": null,
                "best_metric_value": null,
            });
            let sweep = launched_sweep(&mut rng, false);
            write_json(
                dir,
                &results("launch-sweep"),
                &json!({
                    "operation": "launch_sweep", "exit_code": 0,
                    "sweep_id": sweep["sweep_id"], "sweep_url": sweep["sweep_url"],
                    "sky_job_ids": sweep["sky_job_ids"], "launched_at": sweep["launched_at"],
                }),
            )?;
        }
        "poll_sweep" => write_json(
            dir,
            &events("poll-sweep"),
            &json!({
                "operation": "poll_sweep", "exit_code": 0, "sweep_status": "completed",
                "best_metric_value": 0.957, "best_run_id": "run-iter-best-019",
                "best_run_url": "https://wandb.ai/my-wandb-entity/gnn-mnist-metaopt/runs/run-iter-best-019",
                "killed_runs": ["run-iter-003"], "cumulative_spend_usd": 6.8,
            }),
        )?,
        "analyze" => write_json(
            dir,
            &results("sweep-analysis"),
            &json!({
                "improved": false,
                "best_metric_value": state["current_sweep"]["best_metric_value"],
                "best_run_id": state["current_sweep"]["best_run_id"],
                "best_run_url": state["current_sweep"]["best_run_url"],
                "learnings": [
                    format!("iteration {iteration}: dropout above 0.4 hurts with hidden_dim 64"),
                    "lr between 3e-4 and 1e-3 is the stable region".to_string(),
                ],
            }),
        )?,
        "gate_roll_iteration" => {
            // What plan_roll_iteration writes: both pools minus anything that ran, plus
            // two candidates a reviewer added.
            let mut ran: std::collections::HashSet<String> = state["completed_iterations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["proposal_id"].as_str().map(str::to_string))
                .collect();
            ran.extend(selected["proposal_id"].as_str().map(str::to_string));
            let survivors: Vec<Value> = ["current_proposals", "next_proposals"]
                .iter()
                .flat_map(|k| state[*k].as_array().cloned().unwrap_or_default())
                .filter(|p| {
                    p["proposal_id"]
                        .as_str()
                        .is_some_and(|id| ran.insert(id.to_string()))
                })
                .collect();
            let merged: Vec<Value> = (0..2)
                .map(|_| {
                    let config = sweep_config(&mut rng);
                    json!({ "rationale": rationale(&mut rng, &config), "sweep_config": config })
                })
                .collect();
            let summary = format!(
                "{} proposal(s) carried into iteration {}",
                survivors.len(),
                iteration + 1
            );
            write_json(
                dir,
                &results("rollover"),
                &json!({
                    "filtered_proposals": survivors,
                    "merged_proposals": merged,
                    "needs_fresh_ideation": false,
                    "summary": summary,
                }),
            )?;
        }
        _ => {}
    }
    write_json(dir, STATE_PATH, &state)
}

/// The serde floor: parse `text` into a `serde_json::Value` and pretty-print it again
/// (the least any phase that reads and rewrites the state must do). Returns the length
/// of the output so that the work cannot be optimised away.
pub fn floor_once(text: &str) -> usize {
    let value: Value = serde_json::from_str(text).expect("the state file is JSON");
    serde_json::to_string_pretty(&value)
        .expect("JSON values always serialise")
        .len()
}

/// Median wall time of [`floor_once`] on the file at `path` over `reps` runs, in ms.
pub fn floor_ms(path: &Path, reps: usize) -> io::Result<f64> {
    let text = std::fs::read_to_string(path)?;
    let mut times: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let start = std::time::Instant::now();
            std::hint::black_box(floor_once(std::hint::black_box(&text)));
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}
