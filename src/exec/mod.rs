//! Everything a step does outside the phase itself: the step sequence,
//! directive executors, the journal, the smoke-test runner, the simulator.

pub mod directives;
pub mod journal;
pub mod marked_block;
pub mod preflight;
pub mod sim;
pub mod smoke;
pub mod step;
