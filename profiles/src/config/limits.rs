//! `limits:`: caps on calls, connections, buffers and queues (docs/operations.md, security
//! model).

use serde::Deserialize;

use super::admission;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct FileLimits {
    pub(super) max_calls: usize,
    pub(super) max_call_duration_s: u64,
    pub(super) tcp_max_connections: usize,
    pub(super) tcp_max_connections_per_source: usize,
    pub(super) tcp_idle_timeout_s: u64,
    pub(super) tcp_message_timeout_s: u64,
    pub(super) tcp_first_message_timeout_s: u64,
    pub(super) tls_handshake_timeout_s: u64,
    pub(super) tls_handshakes_per_source: u32,
    pub(super) tls_max_handshakes: usize,
    pub(super) tcp_max_outbound_connections: usize,
    pub(super) tcp_max_buffered_kib: usize,
    pub(super) retransmission_cache_kib: usize,
    pub(super) queue_depth: usize,
    pub(super) admission: admission::FileAdmission,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            max_calls: 100_000,
            max_call_duration_s: 43_200,
            tcp_max_connections: 10_000,
            tcp_max_connections_per_source: 64,
            tcp_idle_timeout_s: 3600,
            tcp_message_timeout_s: 30,
            tcp_first_message_timeout_s: 10,
            tls_handshake_timeout_s: 5,
            tls_handshakes_per_source: 20,
            tls_max_handshakes: 1024,
            tcp_max_outbound_connections: 10_000,
            tcp_max_buffered_kib: 64 * 1024,
            retransmission_cache_kib: 32 * 1024,
            queue_depth: 8192,
            admission: admission::FileAdmission::default(),
        }
    }
}
