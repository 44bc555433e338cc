//! The interpreter: sandbox, templates, phase runner, patches, handoff validation.

pub mod doc;
pub mod doc_cache;
pub mod effects;
pub mod exit;
pub mod handoff;
pub mod json_text;
pub mod library;
pub mod patch;
pub mod phase;
pub mod pretty;
pub mod render;
pub mod reprint;
pub mod sandbox;
pub mod schema;
pub mod template;
pub mod timing;
pub mod trace;
pub mod unread;
pub mod workers;
