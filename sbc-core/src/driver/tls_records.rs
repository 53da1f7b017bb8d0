//! The message clock for TLS: rustls hands the reader plaintext only once a whole record has
//! come, so a peer trickling a record a byte at a time would start no message clock and hold
//! its connection until the idle timeout. This reader, under rustls, follows the record
//! framing (RFC 8446 §5.1: a 5-byte header with the length, then the body) and fails the read
//! with `TimedOut` when a record is not complete `limit` after its first byte (the TCP
//! transport's `tcp_message_timeout`).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// Where the reader is in the record stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// `have` bytes of a header so far (0: between records).
    Header { have: usize, len: [u8; 2] },
    /// `left` bytes of a body to come.
    Body { left: usize },
}

pub(crate) struct RecordClock<S> {
    inner: S,
    limit: Duration,
    at: At,
    /// When the incomplete record must be complete (one timer, reset per record).
    timer: Pin<Box<Sleep>>,
    /// A record is incomplete: the timer counts.
    armed: bool,
}

impl<S> RecordClock<S> {
    pub(crate) fn new(inner: S, limit: Duration) -> Self {
        let timer = Box::pin(tokio::time::sleep(limit));
        Self { inner, limit, at: At::Header { have: 0, len: [0; 2] }, timer, armed: false }
    }

    /// Follows `bytes` through the framing; a record begun arms the clock, the last one
    /// completed disarms it.
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.at {
                At::Header { have, mut len } => {
                    if have == 0 {
                        // A new record: its clock starts now.
                        let at = Instant::now() + self.limit;
                        self.timer.as_mut().reset(at);
                        self.armed = true;
                    }
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    if have == 3 || have == 4 {
                        len[have - 3] = b;
                    }
                    self.at = if have == 4 {
                        At::Body { left: usize::from(u16::from_be_bytes(len)) }
                    } else {
                        At::Header { have: have + 1, len }
                    };
                }
                At::Body { left } => {
                    let n = left.min(bytes.len());
                    bytes = &bytes[n..];
                    self.at = At::Body { left: left - n };
                }
            }
            if self.at == (At::Body { left: 0 }) {
                self.at = At::Header { have: 0, len: [0; 2] };
                self.armed = false;
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for RecordClock<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                self.feed(&buf.filled()[before..]);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let late = self.armed && self.timer.as_mut().poll(cx).is_ready();
                if late {
                    Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "a TLS record came too slowly")))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for RecordClock<S> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_record_trickled_in_fails_the_read_and_whole_ones_never_do() {
        let (mut peer, ours) = tokio::io::duplex(64);
        let mut clock = RecordClock::new(ours, Duration::from_secs(30));
        let mut buf = [0u8; 64];
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Two whole records (a header saying 3 bytes, and 3 bytes), and a silence: no clock.
        peer.write_all(&[23, 3, 3, 0, 3, 1, 2, 3, 23, 3, 3, 0, 1, 9]).await.expect("write");
        let n = clock.read(&mut buf).await.expect("read");
        assert_eq!(n, 14);
        assert!(!clock.armed);
        // A record begun and never finished: the read fails after 30 s.
        peer.write_all(&[23, 3, 3, 0, 100, 1]).await.expect("write");
        assert_eq!(clock.read(&mut buf).await.expect("the first bytes"), 6);
        let e = clock.read(&mut buf).await.expect_err("the record never ends");
        assert_eq!(e.kind(), std::io::ErrorKind::TimedOut);
    }
}
