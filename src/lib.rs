//! `metaopt`: a deterministic, resumable, table-driven state machine for
//! ml-metaoptimization campaigns. The behaviour lives in `machine/` (YAML
//! tables and rhai guards); this crate loads, checks and interprets them.
#![forbid(unsafe_code)]

/// `println!` that ignores a closed stdout (`metaopt demo | head` must not panic).
#[macro_export]
macro_rules! say {
    () => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout());
    }};
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed or full stderr (`metaopt step 2>&1 | head` must not panic).
#[macro_export]
macro_rules! tell {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

pub mod cli;
pub mod contract;
pub mod engine;
pub mod exec;
pub mod machine;
pub mod scenario;
pub mod workspace;

/// Current time as ISO-8601 UTC; `METAOPT_NOW` pins it (tests, reproducible demos).
pub fn now() -> String {
    match std::env::var("METAOPT_NOW") {
        Ok(v) if !v.is_empty() => v,
        _ => humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
    }
}
