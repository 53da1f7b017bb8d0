//! `profiles`: what makes the B2BUA an SBC. Per call, an `active_profile` chain picks a
//! profile; its options (SER pseudo-variable patterns, filters, routing) are expanded against
//! the incoming request and applied by `sbc-core`.
//!
//! - [`config`]: the YAML configuration (and the SEMS `sbc.conf` import),
//! - [`conf`]: SEMS's `key=value` file syntax,
//! - [`pattern`]: pseudo-variables, compiled once, expanded per call,
//! - [`regex_map`]: `$M()` maps, [`selection`]: the chain, [`profile`]: the options
//!   ([`session_timer`]: their session-timer part),
//! - [`evaluate`]: a profile expanded for one call, [`filters`] and [`sdp`]: header, method,
//!   reply and SDP rules,
//! - [`store`]: the immutable snapshot and its atomic, validated replacement,
//! - [`reply`]: [`LocalReply`], a reply the SBC gives itself (shared with call control and the
//!   engine).
//!
//! This crate is a leaf: it knows nothing of the SIP stack (requests are read through
//! [`pattern::RequestView`]) and does no I/O except reading configuration files.

pub mod cc_spec;
pub mod conf;
pub mod config;
pub mod error;
pub mod evaluate;
pub mod filters;
pub mod options;
pub mod pattern;
pub mod per_call;
pub mod profile;
pub mod regex_map;
pub mod reply;
pub mod sdp;
pub mod selection;
pub mod session_timer;
pub mod store;
pub mod uri;
pub mod weighted;

pub use error::ConfigError;
pub use profile::Profile;
pub use reply::LocalReply;
pub use store::{Snapshot, Store};
