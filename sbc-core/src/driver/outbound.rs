//! What leaves through the sockets: transmissions (a name resolved first for an in-dialog
//! target), RFC 3263 resolutions for the engine, and the failures reported back to shards.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;

use super::{capture, rfc3263, tcp, ShardInput, Shared};
use crate::b2bua::{Destination, Peer, Transport, TxId};

impl Shared {
    /// Resolves a request's named next hops in a task of their own (all at once) and hands the
    /// targets back to `shard`.
    pub(crate) fn resolve(
        self: &Arc<Self>,
        shard: u8,
        ticket: crate::b2bua::ResolveTicket,
        queries: Vec<crate::b2bua::TargetQuery>,
    ) {
        let me = self.clone();
        tokio::spawn(async move {
            let lookups = queries.iter().map(|q| rfc3263::targets(&me.dns, q));
            let answers = futures_util::future::join_all(lookups).await;
            for (q, targets) in queries.iter().zip(&answers) {
                tracing::debug!(host = %q.host, targets = ?targets, "next hop resolved");
            }
            if let Some(q) = me.shards.get(usize::from(shard)) {
                let _ = q.send(ShardInput::Targets(ticket, answers)).await;
            }
        });
    }

    /// Reports a failed transmission back to the shard that owns the transaction.
    pub(crate) fn report_error(&self, shard: u8, tx: Option<TxId>) {
        self.counters.send_errors.fetch_add(1, Ordering::Relaxed);
        if let (Some(tx), Some(q)) = (tx, self.shards.get(usize::from(shard))) {
            let _ = q.try_send(ShardInput::TransportError(tx));
        }
    }

    /// Sends one message. Never blocks the calling shard for long: name resolution and TCP
    /// connects run in their own tasks and report failures back.
    /// `correlation`: the HEP correlation id of the message's call (with HEP on).
    pub(crate) fn transmit(
        self: &Arc<Self>,
        shard: u8,
        dest: Destination,
        bytes: Bytes,
        tx: Option<TxId>,
        correlation: Option<Arc<[u8]>>,
    ) {
        let addr = match &dest.peer {
            Peer::Addr(a) | Peer::Named { addr: a, .. } => *a,
            Peer::Host(host, port) => {
                let (me, host, port) = (self.clone(), host.clone(), *port);
                tokio::spawn(async move {
                    match me.dns.resolve(&host, port).await {
                        Ok(addr) => {
                            // Queued before the request leaves, so before any response to it.
                            if let (Some(tx), Some(q)) = (tx, me.shards.get(usize::from(shard))) {
                                let _ = q.try_send(ShardInput::Resolved(tx, addr));
                            }
                            me.send_to(shard, &dest, addr, bytes, tx, correlation.as_deref())
                        }
                        Err(why) => {
                            tracing::info!(%host, ?why, "cannot resolve");
                            me.report_error(shard, tx);
                        }
                    }
                });
                return;
            }
        };
        self.send_to(shard, &dest, addr, bytes, tx, correlation.as_deref());
    }

    fn send_to(
        self: &Arc<Self>,
        shard: u8,
        dest: &Destination,
        addr: SocketAddr,
        bytes: Bytes,
        tx: Option<TxId>,
        correlation: Option<&[u8]>,
    ) {
        if let (Some(hep), Some(local)) = (&self.hep, self.sockets.get(usize::from(dest.local))) {
            #[allow(clippy::disallowed_methods)] // driver-side: capture times are wall-clock times
            let at = std::time::SystemTime::now();
            let m = capture::Captured {
                at,
                transport: dest.transport,
                src: local.addr,
                dst: addr,
                correlation,
                payload: &bytes,
            };
            hep.export(dest.local, &m);
        }
        match dest.transport {
            Transport::Udp => {
                let Some(Some(sock)) = self.udp.get(usize::from(dest.local)) else {
                    return self.report_error(shard, tx);
                };
                match sock.try_send_to(&bytes, addr) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        let (sock, me) = (sock.clone(), self.clone());
                        tokio::spawn(async move {
                            if sock.send_to(&bytes, addr).await.is_err() {
                                me.report_error(shard, tx);
                            }
                        });
                    }
                    Err(e) => {
                        tracing::debug!(%addr, error = %e, "udp send failed");
                        self.report_error(shard, tx);
                    }
                }
            }
            Transport::Tcp | Transport::Tls => tcp::send(self, shard, dest, addr, bytes, tx),
        }
    }
}
