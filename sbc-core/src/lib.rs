//! `sbc-core`: the SBC around its engine. The sans-IO engine (`sip`, `b2bua`) is the
//! `sbc-engine` crate, re-exported here; `admission` implements its admission port; `driver`
//! and the `sbcd` binary are the thin tokio driver around it. It never blocks the per-message
//! path on I/O and never panics on network input.

pub mod admin;
/// The configuration lives in the `profiles` crate (it owns the schema and the SEMS import).
pub use profiles::config;
pub use sbc_engine::{b2bua, sip};
pub mod admission;
pub mod crash;
pub mod driver;
pub mod explain;
pub mod health;
pub mod media_policy;
