//! The admin API over HTTPS (`admin.tls`): the same certificate machinery as SIP over TLS
//! (`driver/tls.rs`: loaded at start, checked by `--check-config`, reloaded with the
//! interfaces' on SIGHUP and `POST /tls/reload`, its expiry in `/metrics` as interface
//! `admin`). Handshakes run in tasks of their own under the handshake deadline, so a client
//! that never finishes one holds up no other; they pass a gate of their own (a rate and a cap
//! per source, [`MAX_HANDSHAKES`] at once), at most [`MAX_CONNECTIONS`] connections are open,
//! and one that sends nothing for [`IDLE`] (a request trickled in, or a kept-alive one left
//! idle) is closed: the API's tasks share the runtime with SIP's.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::server::TlsStream;

use crate::driver::tls::TlsContext;

/// Connections waiting to be served once their handshake ended.
const READY: usize = 64;
/// Admin connections open at once; further ones are closed at accept.
pub(crate) const MAX_CONNECTIONS: usize = 256;
/// Handshakes under way at once, and a second per source.
pub(crate) const MAX_HANDSHAKES: usize = 64;
const HANDSHAKES_PER_SOURCE: u32 = 10;
/// A connection that sends nothing for this long is closed.
pub(crate) const IDLE: Duration = Duration::from_secs(60);

/// A served connection: closed when idle for [`IDLE`], its place among the open connections
/// given back when dropped.
pub(crate) struct Guarded {
    inner: TlsStream<TcpStream>,
    idle: Pin<Box<tokio::time::Sleep>>,
    _open: OwnedSemaphorePermit,
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                let deadline = tokio::time::Instant::now() + IDLE;
                self.idle.as_mut().reset(deadline);
                Poll::Ready(r)
            }
            Poll::Pending if self.idle.as_mut().poll(cx).is_ready() => {
                Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "admin connection idle")))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A listener whose connections have finished their TLS handshake.
pub(crate) struct HttpsListener {
    ready: mpsc::Receiver<(Guarded, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    pub(crate) fn new(listener: TcpListener, tls: Arc<TlsContext>, deadline: Duration) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY);
        let open = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let gate = Arc::new(crate::driver::handshakes::HandshakeGate::new(HANDSHAKES_PER_SOURCE, MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let (stream, peer) = match listener.accept().await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "admin API accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(place) = open.clone().try_acquire_owned() else {
                    tracing::debug!(%peer, "admin API: too many connections, closed");
                    continue;
                };
                #[allow(clippy::disallowed_methods)] // driver-side: the gate's buckets are timed
                let Some(permit) = gate.begin(peer.ip(), false, std::time::Instant::now()) else {
                    tracing::debug!(%peer, "admin API: TLS handshake refused (rate or cap)");
                    continue;
                };
                let (tx, acceptor) = (tx.clone(), tls.acceptor());
                tokio::spawn(async move {
                    let handshake = tokio::time::timeout(deadline, acceptor.accept(stream)).await;
                    drop(permit);
                    match handshake {
                        Ok(Ok(s)) => {
                            let idle = Box::pin(tokio::time::sleep(IDLE));
                            let _ = tx.send((Guarded { inner: s, idle, _open: place }, peer)).await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin API: TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "admin API: TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

impl admin_api::Listener for HttpsListener {
    type Io = Guarded;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            // The accepting task is gone (the runtime is stopping): nothing comes any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// Serves the admin API on `listener`: over HTTPS when the runtime has `admin.tls`.
pub async fn serve_api<C: admin_api::Control>(
    runtime: &crate::driver::Runtime,
    listener: TcpListener,
    control: Arc<C>,
    api: admin_api::ApiConfig,
) -> std::io::Result<()> {
    match runtime.admin_tls() {
        Some((tls, deadline)) => {
            let https = HttpsListener::new(listener, tls, deadline)?;
            tokio::spawn(admin_api::serve(https, control, api));
        }
        None => {
            tokio::spawn(admin_api::serve(listener, control, api));
        }
    }
    Ok(())
}
