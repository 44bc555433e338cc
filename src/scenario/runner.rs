//! The parent side of `metaopt test`: finds and parses scenario files,
//! splits them into batches, runs each batch in a child process of this
//! binary (pinned clock, own trace file, its own project directories) on a
//! few threads, and gathers the results in scenario order. Children are
//! the only processes it starts, and the only ones it would ever stop
//! (by their handle, on timeout).

use super::child::{Job, JobItem, ScenarioResult};
use super::model::{Scenario, discover};
use crate::engine::trace;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The clock every scenario runs at.
pub const PINNED_NOW: &str = "2026-04-20T12:00:00Z";
/// Longest a child may run before it is stopped.
pub const CHILD_TIMEOUT: Duration = Duration::from_secs(600);

/// How a suite runs.
#[derive(Debug, Clone)]
pub struct SuiteConfig {
    /// The binary to run children with.
    pub exe: PathBuf,
    /// `--machine` for the `when` (None: the embedded tables).
    pub machine: Option<PathBuf>,
    /// Machine the project setup uses (None: the same as `machine`).
    pub setup_machine: Option<PathBuf>,
    /// Root fixture paths resolve against.
    pub root: PathBuf,
    /// Parallel children.
    pub jobs: usize,
    /// Stop at the first failure.
    pub fail_fast: bool,
    /// Remove project directories after each scenario.
    pub cleanup: bool,
    /// Directory for project directories, job files and traces.
    pub work: PathBuf,
}

/// A parsed scenario file, or why it does not parse.
pub struct Loaded {
    /// Scenario files found, in order.
    pub files: Vec<PathBuf>,
    /// Parsed scenarios by file index (None: did not parse).
    pub scenarios: Vec<Option<Scenario>>,
    /// `(file, reason)` of every file that did not parse.
    pub errors: Vec<(PathBuf, String)>,
}

/// Finds and parses every scenario under `paths`.
pub fn load_all(paths: &[PathBuf], root: &Path) -> Result<Loaded, String> {
    let files = discover(paths)?;
    let mut scenarios = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        match Scenario::load(f, root) {
            Ok(s) => scenarios.push(Some(s)),
            Err(e) => {
                errors.push((f.clone(), e));
                scenarios.push(None);
            }
        }
    }
    Ok(Loaded {
        files,
        scenarios,
        errors,
    })
}

/// Runs the scenarios `indices` of `files`; returns one result per index that ran.
pub fn run_suite(
    cfg: &SuiteConfig,
    files: &[PathBuf],
    indices: &[usize],
) -> Result<Vec<ScenarioResult>, String> {
    if indices.is_empty() {
        return Ok(vec![]);
    }
    std::fs::create_dir_all(&cfg.work).map_err(|e| format!("{}: {e}", cfg.work.display()))?;
    let jobs = cfg.jobs.clamp(1, indices.len());
    let mut batches: Vec<Vec<usize>> = vec![Vec::new(); jobs];
    for (k, i) in indices.iter().enumerate() {
        batches[k % jobs].push(*i);
    }
    let results = Mutex::new(Vec::new());
    let errors = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for (b, batch) in batches.iter().enumerate() {
            let results = &results;
            let errors = &errors;
            scope.spawn(move || match run_batch(cfg, files, b, batch) {
                Ok(mut r) => {
                    if let Ok(mut all) = results.lock() {
                        all.append(&mut r);
                    }
                }
                Err(e) => {
                    if let Ok(mut all) = errors.lock() {
                        all.push(e);
                    }
                }
            });
        }
    });
    let errors = errors.into_inner().unwrap_or_default();
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let mut results = results.into_inner().unwrap_or_default();
    results.sort_by_key(|r| r.index);
    Ok(results)
}

fn run_batch(
    cfg: &SuiteConfig,
    files: &[PathBuf],
    b: usize,
    batch: &[usize],
) -> Result<Vec<ScenarioResult>, String> {
    let job_path = cfg.work.join(format!("job-{b}.json"));
    let out = cfg.work.join(format!("results-{b}.jsonl"));
    let trace_path = cfg.work.join(format!("trace-{b}.jsonl"));
    let stderr_path = cfg.work.join(format!("stderr-{b}.txt"));
    let job = Job {
        root: cfg.root.clone(),
        items: batch
            .iter()
            .map(|i| JobItem {
                index: *i,
                file: absolute(&files[*i]),
                dir: cfg.work.join(format!("s{i:04}")),
            })
            .collect(),
        fail_fast: cfg.fail_fast,
        cleanup: cfg.cleanup,
        out: out.clone(),
    };
    let text = serde_json::to_string(&job).map_err(|e| e.to_string())?;
    std::fs::write(&job_path, text).map_err(|e| format!("{}: {e}", job_path.display()))?;
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| format!("{}: {e}", stderr_path.display()))?;
    let mut cmd = Command::new(&cfg.exe);
    if let Some(m) = &cfg.machine {
        cmd.arg("--machine").arg(m);
    }
    cmd.arg("test").arg("--worker").arg(&job_path);
    if let Some(m) = &cfg.setup_machine {
        cmd.arg("--setup-machine").arg(m);
    }
    cmd.current_dir(&cfg.root)
        .env("METAOPT_NOW", PINNED_NOW)
        .env(trace::ENV, &trace_path)
        .env_remove("METAOPT_MACHINE")
        .env_remove("METAOPT_AVAILABLE_MODELS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(stderr));
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", cfg.exe.display()))?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if started.elapsed() > CHILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("waiting for a scenario child: {e}")),
        }
    };
    let mut results: Vec<ScenarioResult> = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let ran: Vec<usize> = results.iter().map(|r| r.index).collect();
    let stopped_early = cfg.fail_fast && results.iter().any(|r| !r.failures.is_empty());
    let clean_exit = status.is_some_and(|s| s.success());
    if !stopped_early && (!clean_exit || ran.len() < batch.len()) {
        let err = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        let why = match status {
            None => format!("timed out after {} s", CHILD_TIMEOUT.as_secs()),
            Some(s) => format!("child exited with {s}"),
        };
        let tail: String = err
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n    ");
        // The first scenario without a result is the one the child died in.
        if let Some(i) = batch.iter().find(|i| !ran.contains(i)) {
            results.push(ScenarioResult {
                index: *i,
                failures: vec![format!("{why}; stderr:\n    {tail}")],
                trace: vec![],
            });
        }
    }
    for p in [&job_path, &out, &trace_path, &stderr_path] {
        let _ = std::fs::remove_file(p);
    }
    Ok(results)
}

/// `path` made absolute against the current directory.
pub fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    }
}
