//! `sbc-engine`: the SBC's sans-IO engine. `sip` is the protocol core (messages,
//! transactions); `b2bua` turns one call into two independent dialogs; `admission` decides
//! which new requests are taken. Time and the results of I/O are inputs, what to send and what
//! to ask of the relay or call control are outputs: this crate binds no socket, spawns no
//! thread, reads no clock and depends on no async runtime (its `clippy.toml` says so, and
//! `test.sh` checks its dependency tree). `sbc-core` drives it.

pub mod admission;
pub mod b2bua;
pub mod sip;
