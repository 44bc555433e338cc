//! Shared builder for integration tests: a temp project directory, files in
//! it, and the real `metaopt` binary run inside it with time pinned.
#![allow(dead_code)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Pinned time for reproducible output.
pub const NOW: &str = "2026-11-25T12:00:00Z";

/// The example campaign of the repository.
pub fn example_campaign() -> String {
    std::fs::read_to_string(repo().join("examples/ml_metaopt_campaign.example.yaml"))
        .expect("example campaign")
}

/// Repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A temp project.
pub struct Project {
    /// Keeps the directory alive.
    pub dir: tempfile::TempDir,
    /// Extra `--machine` directory.
    pub machine: Option<PathBuf>,
}

impl Project {
    /// An empty project.
    pub fn empty() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
            machine: None,
        }
    }

    /// A project with the example campaign (edited by `edit`) and a READY preflight.
    pub fn example_with(edit: impl Fn(&str) -> String) -> Self {
        let p = Self::empty();
        p.write("ml_metaopt_campaign.yaml", &edit(&example_campaign()));
        p.ready_preflight();
        p
    }

    /// The example campaign with a READY preflight.
    pub fn example() -> Self {
        Self::example_with(|s| s.to_string())
    }

    /// Path inside the project.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (parents created).
    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    /// Writes JSON.
    pub fn write_json(&self, rel: &str, v: &Value) {
        self.write(rel, &serde_json::to_string_pretty(v).expect("json"));
    }

    /// Reads a file.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_default()
    }

    /// Reads JSON (Null when absent).
    pub fn json(&self, rel: &str) -> Value {
        serde_json::from_str(&self.read(rel)).unwrap_or(Value::Null)
    }

    /// The state file.
    pub fn state(&self) -> Value {
        self.json(".ml-metaopt/state.json")
    }

    /// Runs the binary in the project.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_env(args, &[])
    }

    /// Runs the binary with extra environment.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_metaopt"));
        cmd.current_dir(self.dir.path())
            .env("METAOPT_NOW", NOW)
            .env_remove("METAOPT_MACHINE");
        if let Some(m) = &self.machine {
            cmd.arg("--machine").arg(m);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args).output().expect("run metaopt")
    }

    /// Runs and parses stdout as JSON.
    pub fn run_json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "metaopt {args:?} failed: {}",
            text(&out)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stdout not JSON ({e}): {}", text(&out)))
    }

    /// Writes a READY preflight for the current campaign.
    pub fn ready_preflight(&self) {
        let h = self.run_json(&["agent", "metaopt-load-campaign"]);
        let hash = h["campaign_identity_hash"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        self.write_json(
            ".ml-metaopt/preflight-readiness.json",
            &serde_json::json!({"schema_version": 1, "status": "READY", "campaign_identity_hash": hash,
                                "failures": [], "next_action": "run metaopt step"}),
        );
    }

    /// One `step --json` with extra flags.
    pub fn step(&self, flags: &[&str]) -> Value {
        let mut args = vec!["step", "--json"];
        args.extend_from_slice(flags);
        self.run_json(&args)
    }

    /// Steps with the simulator until `state` (or terminal); returns the last turn.
    pub fn sim_until(&self, state: &str, max: usize) -> Value {
        let mut last = Value::Null;
        for _ in 0..max {
            last = self.step(&["--executor", "sim", "--simulate-workers"]);
            if last["machine_state"] == state || last["done"] == true {
                break;
            }
        }
        last
    }

    /// Copies the repository's machine/ into the project and uses it.
    pub fn own_machine(&mut self) -> PathBuf {
        let dst = self.path("machine-copy");
        copy_dir(&repo().join("machine"), &dst);
        self.machine = Some(dst.clone());
        dst
    }
}

/// Stdout and stderr, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Recursive copy.
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).expect("mkdir");
    for e in std::fs::read_dir(src).expect("read_dir").flatten() {
        let to = dst.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), to).expect("copy");
        }
    }
}

/// Replaces `from` with `to` in a file, asserting it was there.
pub fn edit_file(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    assert!(
        text.contains(from),
        "{} does not contain {from:?}",
        path.display()
    );
    std::fs::write(path, text.replacen(from, to, 1)).expect("write");
}
