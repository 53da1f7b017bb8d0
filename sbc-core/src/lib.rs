//! `sbc-core`: the B2BUA of the SBC. `sip` is the sans-IO protocol core (messages,
//! transactions); `b2bua` turns one call into two independent dialogs; `driver` and the
//! `sbcd` binary are the thin tokio driver around them. It never blocks the per-message path on
//! I/O and never panics on network input.

pub mod admin;
pub mod admission;
pub mod b2bua;
/// The configuration lives in the `profiles` crate (it owns the schema and the SEMS import).
pub use profiles::config;
pub mod crash;
pub mod driver;
pub mod explain;
pub mod media_policy;
pub mod sip;
