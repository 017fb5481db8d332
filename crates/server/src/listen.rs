//! The node's listeners: accept loops that outlive accept errors, and connections that
//! close when idle.
//!
//! * [`Acceptor::next`] never fails. An accept error (`EMFILE` when the process is out of
//!   file descriptors, `ENFILE`, `ENOBUFS`, ...) is logged and retried after a pause that
//!   grows to one second, so the listener serves again as soon as descriptors are free.
//!   (tonic's own accept stream ends at such an error, and the server with it.)
//! * Every accepted connection is a [`Conn`]: when nothing has been read from it or
//!   written to it for the idle timeout, its next read or write fails and the server
//!   drops it. HTTP/2 servers ping their clients (`KEEPALIVE`), so a live gRPC connection,
//!   a long poll or a quiet stream is never idle; a connection that never speaks is.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
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
                    if errors == 1 || errors % 60 == 0 {
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

    /// The connections as a stream, for `tonic`'s `serve_with_incoming`. It never yields an
    /// error and never ends.
    pub fn into_stream(
        self,
    ) -> impl futures::Stream<Item = Result<Conn, io::Error>> + Send + 'static {
        futures::stream::unfold(self, |mut a| async move {
            let (conn, _) = a.next().await;
            Some((Ok(conn), a))
        })
    }
}

impl axum::serve::Listener for Acceptor {
    type Io = Conn;
    type Addr = SocketAddr;

    fn accept(&mut self) -> impl Future<Output = (Conn, SocketAddr)> + Send {
        self.next()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
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
}

impl Conn {
    fn new(io: TcpStream, idle: Duration) -> Conn {
        let now = Instant::now();
        Conn {
            io,
            idle,
            last: now,
            timer: Box::pin(tokio::time::sleep_until(now + idle)),
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

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
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
