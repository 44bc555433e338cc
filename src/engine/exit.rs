//! Memory left to the process exit. A command that runs one phase (`metaopt agent`) or
//! one step (`metaopt step`) and then exits need not free what it will not reuse:
//! freeing a large state's maps of maps, or a handoff whose patch holds both proposal
//! pools, costs tens of milliseconds that the exit spends on nothing. Commands that run
//! many steps (`run`, `demo`, `test`) never turn this on: the memory of one phase or
//! step is reused by the next.

use std::sync::atomic::{AtomicBool, Ordering};

static LEAVE_SCOPES: AtomicBool = AtomicBool::new(false);
static LEAVE_HANDOFFS: AtomicBool = AtomicBool::new(false);

/// From now on, a phase's scope is left to the process exit (`metaopt agent`).
pub fn leave_phase_scopes() {
    LEAVE_SCOPES.store(true, Ordering::Relaxed);
}

/// From now on, a step's handoffs are left to the process exit (`metaopt step`); a step
/// then holds every handoff it made (one per phase, three or four) until it ends.
pub fn leave_step_handoffs() {
    LEAVE_HANDOFFS.store(true, Ordering::Relaxed);
}

/// Drops a phase's scope, or leaves it to the exit (see [`leave_phase_scopes`]).
pub fn drop_scope(scope: rhai::Scope<'_>) {
    leave_or_drop(&LEAVE_SCOPES, scope);
}

/// Drops a step's handoff, or leaves it to the exit (see [`leave_step_handoffs`]).
pub fn drop_handoff(handoff: serde_json::Value) {
    leave_or_drop(&LEAVE_HANDOFFS, handoff);
}

/// Leaves `value` to the process exit: for a command that returns right after.
pub fn leave<T>(value: T) {
    std::mem::forget(value);
}

fn leave_or_drop<T>(flag: &AtomicBool, value: T) {
    if flag.load(Ordering::Relaxed) {
        std::mem::forget(value);
    }
}
