//! Failpoints, a testing aid: `METAOPT_FAILPOINT=<n>` makes the n-th
//! atomic write of the process abort the process before it happens (exit code
//! 86), so that tests can crash a step at every write point and check that the
//! next step resumes correctly. `METAOPT_FAILPOINT=list` prints each write
//! point to stderr instead.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

static WRITES: AtomicUsize = AtomicUsize::new(0);

/// Exit code of a process stopped by a failpoint.
pub const FAILPOINT_EXIT: i32 = 86;

/// Counts a write point and crashes here when the environment says so.
pub fn hit(path: &Path) -> std::io::Result<()> {
    let n = WRITES.fetch_add(1, Ordering::SeqCst) + 1;
    match std::env::var("METAOPT_FAILPOINT").ok().as_deref() {
        Some("list") => eprintln!("failpoint {n}: {}", path.display()),
        Some(v) if v.parse::<usize>().ok() == Some(n) => {
            eprintln!("failpoint {n} hit before writing {}", path.display());
            std::process::exit(FAILPOINT_EXIT);
        }
        _ => {}
    }
    Ok(())
}
