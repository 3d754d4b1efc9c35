//! Telling protocols apart on one TCP port, so a locked-down network that allows only TCP 443
//! still reaches TURN.
//!
//! Before TLS: a ClientHello starts with the TLS handshake record type (0x16); a STUN message
//! starts with two zero bits and carries the magic cookie at bytes 4..8. After TLS the same STUN
//! test separates TURN over TLS from HTTP: no HTTP method starts with a byte below 0x40. A TURN
//! client always opens with a STUN request (Allocate or Binding) — ChannelData needs a channel,
//! which needs an allocation on the same connection — so the first message decides. Nothing here
//! looks at SNI (a `turns:` URI with an IP address carries none).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the first bytes of a connection say it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS record (ClientHello): HTTPS or TURN over TLS.
    Tls,
    /// A STUN message: TURN or STUN over a stream.
    Stun,
    /// Anything else (HTTP inside TLS, or junk before TLS).
    Other,
    /// Not enough bytes yet to decide.
    NeedMore,
}

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];

/// Classifies the first bytes of a stream. Decides as early as it can: one byte is enough
/// unless it could start a STUN header, which needs eight.
pub fn classify(first: &[u8]) -> Protocol {
    match first.first() {
        None => Protocol::NeedMore,
        Some(0x16) => Protocol::Tls,
        Some(b) if b & 0xC0 != 0 => Protocol::Other,
        Some(_) if first.len() < 8 => Protocol::NeedMore,
        Some(_) if first[4..8] == MAGIC_COOKIE => Protocol::Stun,
        Some(_) => Protocol::Other,
    }
}

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct Rewind<S> {
    prefix: Vec<u8>,
    pos: usize,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            pos: 0,
            inner,
        }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.pos < self.prefix.len() {
            let n = (self.prefix.len() - self.pos).min(buf.remaining());
            let start = self.pos;
            buf.put_slice(&self.prefix[start..start + n]);
            self.pos += n;
            if self.pos == self.prefix.len() {
                self.prefix = Vec::new();
                self.pos = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A byte stream of any transport.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn stun_header() -> [u8; 20] {
        let mut h = [0u8; 20];
        h[0..2].copy_from_slice(&0x0003u16.to_be_bytes()); // Allocate request
        h[4..8].copy_from_slice(&MAGIC_COOKIE);
        h
    }

    #[test]
    fn a_client_hello_is_tls_from_its_first_byte() {
        assert_eq!(classify(&[0x16]), Protocol::Tls);
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Protocol::Tls);
    }

    #[test]
    fn a_stun_request_is_stun_once_the_cookie_is_seen() {
        let h = stun_header();
        for n in 1..8 {
            assert_eq!(classify(&h[..n]), Protocol::NeedMore, "{n} bytes");
        }
        assert_eq!(classify(&h[..8]), Protocol::Stun);
        assert_eq!(classify(&h), Protocol::Stun);
    }

    #[test]
    fn http_methods_and_the_http2_preface_are_other_from_the_first_byte() {
        for start in [
            "GET / HTTP/1.1",
            "POST /",
            "HEAD /",
            "OPTIONS *",
            "PRI * HTTP/2.0",
            "DELETE",
        ] {
            assert_eq!(classify(start.as_bytes()), Protocol::Other, "{start}");
            assert_eq!(classify(&start.as_bytes()[..1]), Protocol::Other, "{start}");
        }
    }

    #[test]
    fn zero_bits_without_the_cookie_are_not_stun() {
        assert_eq!(classify(&[0, 1, 0, 0, 1, 2, 3, 4]), Protocol::Other);
        assert_eq!(classify(&[]), Protocol::NeedMore);
    }

    #[tokio::test]
    async fn rewind_replays_the_prefix_then_reads_on() {
        let inner: &[u8] = b" world";
        let mut s = Rewind::new(b"hello".to_vec(), inner);
        let mut out = String::new();
        s.read_to_string(&mut out).await.expect("read");
        assert_eq!(out, "hello world");
    }
}
