//! Contract-level pieces that are not tables: canonical JSON and hashing.

pub mod canonical;
