//! The node's listeners: accept loops that outlive accept errors, and connections that
//! close when idle.
//!
//! * [`Acceptor::next`] never fails. An accept error (`EMFILE` when the process is out of
//!   file descriptors, `ENFILE`, `ENOBUFS`, ...) is logged and retried after a pause that
//!   grows to one second, so the listener serves again as soon as descriptors are free.
//!   (tonic's own accept stream ends at such an error, and the server with it.)
//! * [`Acceptor::incoming`] hands connections to a server, after a TLS handshake when the
//!   listener has TLS: handshakes run beside the accept loop, each bounded in time, so a
//!   client that never finishes one holds up nobody else.
//! * Every accepted connection is a [`Conn`]: when nothing has been read from it or
//!   written to it for the idle timeout, its next read or write fails and the server
//!   drops it. HTTP/2 servers ping their clients (`KEEPALIVE`), so a live gRPC connection,
//!   a long poll or a quiet stream is never idle; a connection that never speaks is.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls::pki_types::CertificateDer;
use trellis_cluster::retry::Backoff;

/// How often HTTP/2 servers ping their clients, and how long they wait for the answer.
pub const KEEPALIVE: Duration = Duration::from_secs(30);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A listener whose accept loop survives errors.
pub struct Acceptor {
    listener: TcpListener,
    idle: Duration,
    /// Which listener, for the logs: "grpc", "http" or "peer".
    name: &'static str,
    /// The pauses between accepts while they fail (its attempts: errors in a row).
    failing: Backoff,
    /// Whether the connection cap was reached (logged once each time).
    at_cap: bool,
}

/// While accepts fail: pauses growing by 50 ms to a second.
fn failing() -> Backoff {
    Backoff::unbounded(Duration::from_millis(50), Duration::from_secs(1))
}

impl Acceptor {
    pub fn new(listener: TcpListener, idle: Duration, name: &'static str) -> Acceptor {
        Acceptor {
            listener,
            idle,
            name,
            failing: failing(),
            at_cap: false,
        }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection; waits out accept errors.
    pub async fn next(&mut self) -> (Conn, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => {
                    if self.failing.attempts() > 0 {
                        tracing::info!(
                            listener = self.name,
                            errors = self.failing.attempts(),
                            "accepting connections again"
                        );
                        self.failing = failing();
                    }
                    // Small request/response pairs: without TCP_NODELAY each reply waits
                    // ~40 ms for a delayed ACK.
                    let _ = stream.set_nodelay(true);
                    return (Conn::new(stream, self.idle), addr);
                }
                // The client gave up before we took it: nothing to wait for.
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    let errors = self.failing.attempts() + 1;
                    if errors == 1 || errors.is_multiple_of(60) {
                        tracing::warn!(
                            listener = self.name,
                            error = %e,
                            errors,
                            "cannot accept connections (out of file descriptors?); retrying"
                        );
                    }
                    self.failing.again().await;
                }
            }
        }
    }
}

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// TLS handshakes in progress at once on one listener; more connections wait to be taken.
const HANDSHAKES: usize = 256;

impl Acceptor {
    /// The listener's connections, after a TLS handshake with `tls` when it is given; at
    /// most `max_connections` open at once (more wait in the kernel's backlog until one
    /// closes). The accept loop runs until the [`Incoming`] is dropped.
    pub fn incoming(
        self,
        tls: Option<Arc<trellis_tls::rustls::ServerConfig>>,
        max_connections: usize,
    ) -> Incoming {
        let local = self.listener.local_addr().ok();
        let (tx, rx) = mpsc::channel(64);
        let open = Arc::new(Semaphore::new(max_connections.max(1)));
        let task = tokio::spawn(accept_loop(self, tls, open, tx));
        Incoming { rx, local, task }
    }

    /// The next connection once fewer than the cap are open; it holds its place until it
    /// closes.
    async fn next_within(&mut self, open: &Arc<Semaphore>) -> Option<(Conn, SocketAddr)> {
        let place = match open.clone().try_acquire_owned() {
            Ok(p) => {
                self.at_cap = false;
                p
            }
            Err(_) => {
                if !self.at_cap {
                    self.at_cap = true;
                    tracing::warn!(
                        listener = self.name,
                        "as many connections open as allowed (node.max_connections); new ones wait"
                    );
                }
                open.clone().acquire_owned().await.ok()?
            }
        };
        let (mut conn, addr) = self.next().await;
        conn.place = Some(place);
        Some((conn, addr))
    }
}

async fn accept_loop(
    mut acceptor: Acceptor,
    tls: Option<Arc<trellis_tls::rustls::ServerConfig>>,
    open: Arc<Semaphore>,
    tx: mpsc::Sender<(Io, SocketAddr)>,
) {
    let Some(tls) = tls else {
        while let Some((conn, addr)) = acceptor.next_within(&open).await {
            if tx.send((Io::Plain(conn), addr)).await.is_err() {
                return;
            }
        }
        return;
    };
    let tls = trellis_tls::TlsAcceptor::from(tls);
    let slots = Arc::new(Semaphore::new(HANDSHAKES));
    let name = acceptor.name;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some((conn, addr)) = acceptor.next_within(&open).await else {
            return;
        };
        if tx.is_closed() {
            return;
        }
        let (tls, tx) = (tls.clone(), tx.clone());
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(conn)).await {
                Ok(Ok(s)) => {
                    let _ = tx.send((Io::Tls(Box::new(s)), addr)).await;
                }
                // A scanner, a client that does not trust us, a peer without the cluster's
                // certificate: routine, and the client has been told.
                Ok(Err(e)) => {
                    tracing::debug!(listener = name, %addr, error = %e, "TLS handshake failed")
                }
                Err(_) => {
                    tracing::debug!(listener = name, %addr, "TLS handshake timed out")
                }
            }
        });
    }
}

/// The connections a listener accepted (and shook hands with), for a server.
pub struct Incoming {
    rx: mpsc::Receiver<(Io, SocketAddr)>,
    local: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Incoming {
    /// The connections as a stream, for `tonic`'s `serve_with_incoming`. It never yields an
    /// error.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Io, io::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut i| async move {
            let (io, _) = i.rx.recv().await?;
            Some((Ok(io), i))
        })
    }
}

impl axum::serve::Listener for Incoming {
    type Io = Io;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Io, SocketAddr) {
        match self.rx.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.local
            .ok_or_else(|| io::Error::other("the listener has no local address"))
    }
}

/// A served connection: plain, or TLS over a [`Conn`].
pub enum Io {
    Plain(Conn),
    Tls(Box<trellis_tls::TlsStream<Conn>>),
}

/// What a gRPC handler can learn of its connection: the client's address, and its
/// certificate chain when it presented one that the listener verified.
#[derive(Clone, Debug)]
pub struct IoInfo {
    pub remote: Option<SocketAddr>,
    pub peer_certificates: Option<Arc<Vec<CertificateDer<'static>>>>,
}

impl tonic::transport::server::Connected for Io {
    type ConnectInfo = IoInfo;

    fn connect_info(&self) -> IoInfo {
        match self {
            Io::Plain(c) => IoInfo {
                remote: c.io.peer_addr().ok(),
                peer_certificates: None,
            },
            Io::Tls(s) => {
                let (conn, session) = s.get_ref();
                IoInfo {
                    remote: conn.io.peer_addr().ok(),
                    peer_certificates: session.peer_certificates().map(|c| Arc::new(c.to_vec())),
                }
            }
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            Io::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            Io::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(c) => c.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// An accepted connection that fails its reads and writes once it has been idle too long.
pub struct Conn {
    io: TcpStream,
    idle: Duration,
    /// The last read or write that made progress.
    last: Instant,
    /// Fires at `last + idle` or earlier; moved on lazily, so progress costs no timer update.
    timer: Pin<Box<Sleep>>,
    /// Its place under the listener's connection cap, given back when it closes.
    place: Option<OwnedSemaphorePermit>,
}

impl Conn {
    fn new(io: TcpStream, idle: Duration) -> Conn {
        let now = Instant::now();
        Conn {
            io,
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
            place: None,
        }
    }

    fn progressed(&mut self) {
        self.last = Instant::now();
    }

    /// Called when the connection has nothing to do: `Ready(Err)` once it was idle too long.
    fn poll_idle<T>(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<T>> {
        loop {
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let due = self.last + self.idle;
            if Instant::now() >= due {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connection idle for {:?}", self.idle),
                )));
            }
            self.timer.as_mut().reset(due);
        }
    }
}

macro_rules! poll_io {
    ($self:ident, $cx:ident, $call:expr) => {{
        let this = &mut *$self;
        match $call(Pin::new(&mut this.io), &mut *$cx) {
            Poll::Ready(r) => {
                this.progressed();
                Poll::Ready(r)
            }
            Poll::Pending => this.poll_idle($cx),
        }
    }};
}

impl AsyncRead for Conn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        poll_io!(self, cx, |io: Pin<&mut TcpStream>, cx| io
            .poll_read(cx, buf))
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        poll_io!(self, cx, |io: Pin<&mut TcpStream>, cx| io
            .poll_write(cx, buf))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        poll_io!(self, cx, |io: Pin<&mut TcpStream>, cx| io
            .poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_io!(self, cx, |io: Pin<&mut TcpStream>, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_idle_connection_fails_and_a_busy_one_does_not() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut acceptor = Acceptor::new(listener, Duration::from_secs(10), "test");
        let mut client = TcpStream::connect(addr).await.unwrap();
        let (mut conn, _) = acceptor.next().await;

        // Traffic every 6 s keeps it open past the 10 s timeout.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(6)).await;
            client.write_all(b"x").await.unwrap();
            let mut b = [0u8; 1];
            conn.read_exact(&mut b).await.unwrap();
        }
        // Then silence: the next read fails once 10 s have passed.
        let mut b = [0u8; 1];
        let err = conn.read(&mut b).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
