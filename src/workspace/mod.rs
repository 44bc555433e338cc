//! Files on disk: atomic writes, capped reads, confinement, failpoints.

pub mod failpoint;
pub mod fsio;
pub mod lock;
