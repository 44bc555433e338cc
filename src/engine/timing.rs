//! Stage timings for profiling: with `METAOPT_TIMING=1` in the environment,
//! every [`mark`] prints to stderr how long the stage it names took since the
//! previous mark (or since the process started). Off by default; when off a
//! mark costs one cached flag check. `scripts/bench.sh` measures whole
//! processes; this tells where inside one the time goes.

use std::cell::Cell;
use std::sync::OnceLock;
use std::time::Instant;

/// Environment variable that turns the stage timings on.
pub const ENV: &str = "METAOPT_TIMING";

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os(ENV).is_some_and(|v| !v.is_empty() && v != "0"))
}

thread_local! {
    static LAST: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// [`mark`] with a label built only when timings are on (no allocation on the hot path).
pub fn mark_with(stage: impl FnOnce() -> String) {
    if enabled() {
        mark(&stage());
    }
}

/// Prints the time since the previous mark, labelled `stage`, when timings are on.
pub fn mark(stage: &str) {
    if !enabled() {
        return;
    }
    let now = Instant::now();
    let since = LAST.with(|l| l.replace(Some(now)));
    match since {
        Some(t) => eprintln!("[timing] {stage}: {:.2} ms", (now - t).as_secs_f64() * 1e3),
        None => eprintln!("[timing] {stage}: (first mark)"),
    }
}
