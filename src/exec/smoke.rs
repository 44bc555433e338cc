//! The local smoke-test executor: runs the campaign's smoke command through
//! the shell in its own process group and kills the whole group at exactly
//! 60 seconds. A command still running then passes (`killed_at_limit`), as
//! the contract decides; one that exits earlier reports its own exit code.

use crate::workspace::fsio::write_atomic;
use serde_json::{Value, json};
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The limit; deliberately not configurable.
pub const SMOKE_LIMIT: Duration = Duration::from_secs(60);
/// Bytes of stdout and stderr kept.
pub const TAIL_BYTES: usize = 4096;

fn reader(
    mut source: impl Read + Send + 'static,
) -> (Arc<Mutex<Vec<u8>>>, std::thread::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = buf.clone();
    let handle = std::thread::spawn(move || {
        let mut chunk = [0u8; 8192];
        while let Ok(n) = source.read(&mut chunk) {
            if n == 0 {
                break;
            }
            if let Ok(mut b) = sink.lock() {
                b.extend_from_slice(&chunk[..n]);
                if b.len() > TAIL_BYTES * 2 {
                    let cut = b.len() - TAIL_BYTES;
                    b.drain(..cut);
                }
            }
        }
    });
    (buf, handle)
}

fn tail(buf: &Arc<Mutex<Vec<u8>>>) -> String {
    let b = buf.lock().map(|b| b.clone()).unwrap_or_default();
    let start = b.len().saturating_sub(TAIL_BYTES);
    String::from_utf8_lossy(&b[start..]).into_owned()
}

fn kill_group(pgid: u32) {
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(pgid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Runs the command of a smoke-test directive and writes its `result_file`.
pub fn run(directive: &Value) -> Result<String, String> {
    let command = directive["command"].as_str().unwrap_or_default();
    let result_file = directive["result_file"].as_str().unwrap_or_default();
    let result = run_command(command, SMOKE_LIMIT);
    let verdict = if result["killed_at_limit"] == json!(true) {
        "still running at the limit: passed".to_string()
    } else {
        format!("exit code {}", result["exit_code"])
    };
    let text = crate::engine::handoff::to_pretty(&result);
    write_atomic(Path::new(result_file), text.as_bytes())
        .map_err(|e| format!("{result_file}: {e}"))?;
    Ok(verdict)
}

/// Runs `command` with `limit`; the smoke-test payload.
pub fn run_command(command: &str, limit: Duration) -> Value {
    let started = Instant::now();
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn();
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            return json!({"exit_code": null, "timed_out": true, "killed_at_limit": false,
                          "duration_seconds": 0.0, "stdout_tail": "", "stderr_tail": format!("could not start: {e}")});
        }
    };
    let pgid = child.id();
    let (out, out_h) = reader(child.stdout.take().expect("piped stdout"));
    let (err, err_h) = reader(child.stderr.take().expect("piped stderr"));
    let mut killed = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() >= limit => {
                kill_group(pgid);
                killed = true;
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => break None,
        }
    };
    // No child of the command outlives the smoke test.
    kill_group(pgid);
    let _ = out_h.join();
    let _ = err_h.join();
    let duration = started.elapsed().as_secs_f64();
    let exit_code = match (&status, killed) {
        (_, true) => json!(0),
        (Some(s), false) => json!(s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))),
        (None, false) => Value::Null,
    };
    json!({
        "exit_code": exit_code,
        "timed_out": status.is_none() && !killed,
        "killed_at_limit": killed,
        "duration_seconds": (duration * 1000.0).round() / 1000.0,
        "stdout_tail": tail(&out),
        "stderr_tail": tail(&err),
    })
}
