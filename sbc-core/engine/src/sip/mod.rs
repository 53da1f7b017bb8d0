//! The sans-IO SIP core: no sockets, no tokio, no clock. Time is passed in by the driver.

pub mod digest;
pub mod msg;
pub mod transaction;
