//! The admin API over HTTPS (`admin.tls`): the same certificate machinery as SIP over TLS
//! (`driver/tls.rs`: loaded at start, checked by `--check-config`, reloaded with the
//! interfaces' on SIGHUP and `POST /tls/reload`, its expiry in `/metrics` as interface
//! `admin`). Handshakes run in tasks of their own under the handshake deadline, so a client
//! that never finishes one holds up no other.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::driver::tls::TlsContext;

/// Connections waiting to be served once their handshake ended.
const READY: usize = 64;

/// A listener whose connections have finished their TLS handshake.
pub(crate) struct HttpsListener {
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl HttpsListener {
    pub(crate) fn new(listener: TcpListener, tls: Arc<TlsContext>, deadline: Duration) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(READY);
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
                let (tx, acceptor) = (tx.clone(), tls.acceptor());
                tokio::spawn(async move {
                    match tokio::time::timeout(deadline, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => {
                            let _ = tx.send((s, peer)).await;
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
    type Io = TlsStream<TcpStream>;
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
