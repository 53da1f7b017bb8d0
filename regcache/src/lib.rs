//! `regcache`: the registration cache behind `enable_reg_caching` and the local registrar
//! (`cc_registrar`), docs/manual/access.md, Registration caching.
//!
//! A registered contact gets an *alias*: a stable user part at the SBC's address that the
//! registrar stores instead of the UA's (private) contact. Calls to the alias are retargeted to
//! the contact, sent to the address, transport and interface the REGISTER came from.
//!
//! The cache is plain data behind a lock, shared by every shard; it never reads a clock (times
//! are passed in). Every change goes to a [`Persist`] hook; [`SqliteStore`] writes it to an
//! embedded SQLite file from its own thread, so phones stay reachable across a restart.

mod aor;
mod binding;
mod cache;
#[cfg(feature = "sqlite")]
mod store;
mod view;

pub use aor::canonical_aor;
pub use binding::{alias_of, Binding, Origin, Relay};
pub use cache::{NoPersist, Persist, RegCache};
#[cfg(feature = "sqlite")]
pub use store::{SqliteStore, StoreError, WallClock};
pub use view::{RegQuery, RegView};
