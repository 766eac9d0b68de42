//! A deadline on every round trip of an ordinary connection.
//!
//! A connection whose peer vanished without closing it (a NAT or firewall
//! that forgot the flow, a relay moved to another host) answers nothing,
//! and the kernel gives up on it only after minutes or hours. So every
//! connection's socket is watched: the messages crossing it are counted
//! (each query or Sync the client sends is answered by one ReadyForQuery),
//! and a connection that owes an answer while no byte has moved either way
//! for the deadline is looked at from a new connection. Its server process
//! still running the statement (a long merge, an index build) is progress;
//! anything else (idle, waiting on the client, gone) means the answer was
//! lost: the connection is dropped, every request on it fails as a lost
//! connection, and the worker retries on a new one.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, TlsConnect, TlsStream};

/// Which layer of a connection carries the protocol in the clear.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(super) enum Layer {
    /// Not yet known (startup and TLS negotiation carry no typed messages).
    None = 0,
    Socket = 1,
    Tls = 2,
}

/// What a connection's socket has seen: shared by its wrappers and its
/// watchdog.
pub(super) struct Monitor {
    born: Instant,
    /// Milliseconds after `born` when a byte last moved either way.
    last_io: AtomicU64,
    /// Requests sent and not yet answered by a ReadyForQuery.
    owed: AtomicI64,
    /// Whether the client's last read found nothing to read (it waits on
    /// the server, rather than the server on a busy client).
    waiting: AtomicBool,
    layer: AtomicU8,
    tls: AtomicBool,
    /// The worker's progress, told whenever the server sends something.
    progress: Option<crate::health::Progress>,
}

impl Monitor {
    pub(super) fn new() -> Arc<Monitor> {
        Arc::new(Monitor {
            born: Instant::now(),
            last_io: AtomicU64::new(0),
            owed: AtomicI64::new(0),
            waiting: AtomicBool::new(false),
            layer: AtomicU8::new(Layer::None as u8),
            tls: AtomicBool::new(false),
            progress: crate::health::Progress::current(),
        })
    }

    fn now_ms(&self) -> u64 {
        self.born.elapsed().as_millis() as u64
    }

    fn moved(&self) {
        self.last_io.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The connection is up: from now on its messages are counted, on the
    /// layer that carries them in the clear.
    pub(super) fn start(&self) {
        let layer = if self.tls.load(Ordering::Relaxed) {
            Layer::Tls
        } else {
            Layer::Socket
        };
        self.layer.store(layer as u8, Ordering::Relaxed);
        self.moved();
    }

    fn counts(&self, layer: Layer) -> bool {
        self.layer.load(Ordering::Relaxed) == layer as u8
    }

    /// How long the connection has owed an answer with nothing moving
    /// while the client waits to read (None: it owes nothing, or the client
    /// is busy elsewhere and not reading).
    pub(super) fn silent_for(&self) -> Option<Duration> {
        if self.owed.load(Ordering::Relaxed) <= 0 || !self.waiting.load(Ordering::Relaxed) {
            return None;
        }
        let since = self
            .now_ms()
            .saturating_sub(self.last_io.load(Ordering::Relaxed));
        Some(Duration::from_millis(since))
    }

    /// A probe found the statement running: that is progress.
    pub(super) fn still_running(&self) {
        self.moved();
        if let Some(p) = &self.progress {
            p.tick();
        }
    }
}

/// Where a direction of the stream is within the message it carries.
#[derive(Default)]
struct Scan {
    header: [u8; 5],
    have: usize,
    /// Bytes of the current message's body still to pass.
    skip: usize,
}

impl Scan {
    /// Passes `bytes`, calling `on_type` with each message's type byte.
    fn feed(&mut self, mut bytes: &[u8], mut on_type: impl FnMut(u8)) {
        while !bytes.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(bytes.len());
                self.skip -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (5 - self.have).min(bytes.len());
            self.header[self.have..self.have + n].copy_from_slice(&bytes[..n]);
            self.have += n;
            bytes = &bytes[n..];
            if self.have == 5 {
                let len = u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]);
                self.skip = (len as usize).saturating_sub(4);
                self.have = 0;
                on_type(self.header[0]);
            }
        }
    }
}

/// A stream whose traffic a [`Monitor`] sees.
pub(super) struct Watched<S> {
    inner: S,
    monitor: Arc<Monitor>,
    layer: Layer,
    read: Scan,
    write: Scan,
}

impl<S> Watched<S> {
    pub(super) fn new(inner: S, monitor: Arc<Monitor>, layer: Layer) -> Watched<S> {
        Watched {
            inner,
            monitor,
            layer,
            read: Scan::default(),
            write: Scan::default(),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        let m = &this.monitor;
        if !new.is_empty() {
            m.moved();
        }
        if m.counts(this.layer) {
            if new.is_empty() {
                m.waiting.store(polled.is_pending(), Ordering::Relaxed);
            } else {
                m.waiting.store(false, Ordering::Relaxed);
                this.read.feed(new, |t| {
                    if t == b'Z' {
                        m.owed.fetch_sub(1, Ordering::Relaxed);
                    }
                });
                if let Some(p) = &m.progress {
                    p.tick();
                }
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                let m = &this.monitor;
                m.moved();
                if m.counts(this.layer) {
                    // A simple query and a Sync are each answered by one
                    // ReadyForQuery.
                    this.write.feed(&buf[..n], |t| {
                        if t == b'Q' || t == b'S' {
                            m.owed.fetch_add(1, Ordering::Relaxed);
                        }
                    });
                }
            }
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: TlsStream + Unpin> TlsStream for Watched<S> {
    fn channel_binding(&self) -> ChannelBinding {
        self.inner.channel_binding()
    }
}

/// A TLS connector whose streams are watched.
pub(super) struct WatchTls<T> {
    pub(super) inner: T,
    pub(super) monitor: Arc<Monitor>,
}

impl<S, T> TlsConnect<S> for WatchTls<T>
where
    T: TlsConnect<S>,
    T::Future: Send + 'static,
    T::Stream: 'static,
{
    type Stream = Watched<T::Stream>;
    type Error = T::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Stream, T::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let monitor = self.monitor;
        monitor.tls.store(true, Ordering::Relaxed);
        let handshake = self.inner.connect(stream);
        Box::pin(async move {
            let stream = handshake.await?;
            Ok(Watched::new(stream, monitor, Layer::Tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_found_across_reads() {
        // Q (len 9: "SELECT" is not needed, any body), then Z, split at odd places.
        let mut wire = vec![b'Q', 0, 0, 0, 9, b'a', b'b', b'c', b'd', 0];
        wire.extend([b'Z', 0, 0, 0, 5, b'I']);
        wire.extend([b'd', 0, 0, 0, 4]);
        for cut in 0..wire.len() {
            let mut scan = Scan::default();
            let mut seen = Vec::new();
            scan.feed(&wire[..cut], |t| seen.push(t));
            scan.feed(&wire[cut..], |t| seen.push(t));
            assert_eq!(seen, [b'Q', b'Z', b'd'], "cut at {cut}");
        }
    }
}
