//! `sbc-engine`: the SBC's sans-IO engine. `sip` is the protocol core (messages,
//! transactions); `b2bua` turns one call into two independent dialogs. Time and the results
//! of I/O are inputs; what to send, and what to ask of the relay or call control, are outputs.
//! Admission control, next-hop health and the registration cache are ports it owns
//! (`admission`, `health`, `registrations`), implemented outside. This crate binds no socket, spawns no thread, reads
//! no clock, takes no lock and depends on no async runtime: its `clippy.toml` bans those
//! calls and types, and `test.sh` checks its dependency tree. `sbc-core` drives it.

pub mod admission;
pub mod b2bua;
pub mod connections;
pub mod health;
pub mod registrations;
pub mod sip;
