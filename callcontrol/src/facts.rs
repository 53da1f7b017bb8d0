//! What hooks know about a call.

use std::net::SocketAddr;
use std::time::SystemTime;

/// The call as the caller started it (the incoming INVITE), stamped by the driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFacts {
    /// The call's number, unique in this process (shard and the shard's call handle).
    pub call: u64,
    pub profile: String,
    pub source: SocketAddr,
    pub from: String,
    pub to: String,
    pub ruri: String,
    pub call_id: String,
}

/// Wall-clock times of the call, taken by the driver when the events arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    pub start: SystemTime,
    pub connect: Option<SystemTime>,
    pub end: Option<SystemTime>,
}

/// Who ended a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    Caller,
    Callee,
    /// The SBC itself: a timer, a refusal, an error, the operator.
    Sbc,
}

impl EndedBy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Callee => "callee",
            Self::Sbc => "local",
        }
    }
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallEnd {
    pub by: EndedBy,
    /// The final code of the call's INVITE (200 for answered calls).
    pub code: u16,
    /// Its reason phrase.
    pub phrase: String,
    /// Why: `bye`, `rejected`, `cancelled`, `timeout`, `call_timer` ...
    pub reason: String,
    pub answered: bool,
    /// The address the callee's leg went to, once it had one.
    pub destination_ip: Option<std::net::IpAddr>,
}
