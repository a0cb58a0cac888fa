//! The listening sockets and the connections they hold: how many may be open (from the
//! open-file limit, so accepting never fails with EMFILE), closing it the moment a stop
//! begins, and accept errors logged at a bounded rate.

use std::collections::HashSet;
use std::io::{Error as IoError, Result as IoResult};
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use salvo::conn::tcp::{TcpAcceptor, TcpCoupler};
use salvo::conn::{Accepted, Acceptor, Holding};
use salvo::fuse::ArcFusePolicy;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::drain::Drain;
use crate::config::ServerConfig;

/// Descriptors kept for everything but client connections and their upstream calls:
/// the store, log files, the profile watch, DNS, idle pooled upstream connections.
const RESERVED_FDS: u64 = 256;

/// `count` listening sockets on `addr`, one per worker (`SO_REUSEPORT`: the kernel
/// spreads new connections over them), with `TCP_NODELAY` inherited by
/// every accepted connection (without it each small streamed chunk can wait ~40 ms for
/// Nagle). Call within a runtime.
pub async fn bind(addr: SocketAddr, count: usize) -> IoResult<Vec<TcpListener>> {
    // A plain bind first, so that a port already in use is an error as ever: sockets
    // that all set `SO_REUSEPORT` would share it with another diglot without a word.
    let first = listen(addr, false)?;
    if count <= 1 {
        return Ok(vec![first]);
    }
    if cfg!(target_os = "linux") {
        let addr = first.local_addr()?;
        drop(first);
        (0..count).map(|_| listen(addr, true)).collect()
    } else {
        // Elsewhere `SO_REUSEPORT` does not spread connections: the workers share one
        // socket and take turns accepting.
        let mut all = (1..count).map(|_| first.try_clone()).collect::<IoResult<Vec<_>>>()?;
        all.push(first);
        Ok(all)
    }
}

fn listen(addr: SocketAddr, reuse_port: bool) -> IoResult<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    #[cfg(not(unix))]
    let _ = reuse_port;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)?.into_std()
}

/// One listening socket on `addr`, for serving on the caller's runtime.
pub async fn bind_one(addr: SocketAddr) -> IoResult<TcpAcceptor> {
    acceptor(listen(addr, false)?)
}

/// `listener` registered with the calling runtime, as salvo serves it.
pub fn acceptor(listener: TcpListener) -> IoResult<TcpAcceptor> {
    TcpAcceptor::try_from(tokio::net::TcpListener::from_std(listener)?)
}

/// How many client connections are open, and the bounds on them.
#[derive(Debug)]
pub struct Connections {
    /// One permit per connection the listener may hold open; accepting waits for one.
    slots: Arc<Semaphore>,
    /// One permit per connection served; one accepted without is told 503.
    serving: Arc<Semaphore>,
    /// The peers of the open connections accepted past `max`.
    overflow: Mutex<HashSet<SocketAddr>>,
    /// Listening sockets still open (one per worker).
    listening: AtomicUsize,
    pub max: usize,
}

impl Connections {
    /// The bounds for `server` under the process's open-file limit, raised first to its
    /// hard limit as nginx and Go do. A configured `max_connections` the limit cannot
    /// carry is lowered, with a warning.
    pub fn new(server: &ServerConfig) -> Self {
        let nofile = raise_nofile_limit();
        let (max, accept_cap) = capacity(server.max_connections, nofile);
        if server.max_connections > max {
            tracing::warn!(
                configured = server.max_connections,
                serving = max,
                nofile,
                "server.max_connections needs two file descriptors per connection, more than the \
                 open-file limit allows; raise `ulimit -n` (LimitNOFILE= under systemd) to serve more"
            );
        }
        Self {
            slots: Arc::new(Semaphore::new(accept_cap)),
            serving: Arc::new(Semaphore::new(max)),
            overflow: Mutex::default(),
            listening: AtomicUsize::new(0),
            max,
        }
    }

    /// Whether the connection from `peer` was accepted past `max` (its requests get 503).
    pub fn is_overflow(&self, peer: Option<SocketAddr>) -> bool {
        peer.is_some_and(|peer| self.overflow.lock().unwrap_or_else(|e| e.into_inner()).contains(&peer))
    }

    /// The permit a new connection from `peer` holds while open: a serving one, or its
    /// place in the overflow.
    fn admit(self: &Arc<Self>, peer: Option<SocketAddr>) -> Admission {
        match (self.serving.clone().try_acquire_owned(), peer) {
            (Ok(permit), _) => Admission::Served { _permit: permit },
            (Err(_), Some(peer)) => {
                self.overflow.lock().unwrap_or_else(|e| e.into_inner()).insert(peer);
                Admission::Overflow(self.clone(), peer)
            }
            (Err(_), None) => Admission::None,
        }
    }
}

/// What an open connection holds (see `Connections::admit`); dropped when it closes.
enum Admission {
    Served { _permit: OwnedSemaphorePermit },
    Overflow(Arc<Connections>, SocketAddr),
    None,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Self::Overflow(connections, peer) = self {
            connections
                .overflow
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(peer);
        }
    }
}

/// `(max_connections, accept cap)` for `nofile` descriptors: a served connection holds two
/// (client and upstream), one past `max_connections` holds one while it is told 503; the
/// listener stops accepting when the descriptors left are spoken for.
fn capacity(configured: usize, nofile: u64) -> (usize, usize) {
    let budget = usize::try_from(nofile.saturating_sub(RESERVED_FDS).max(64)).unwrap_or(usize::MAX / 4);
    // Four ninths of the budget served (eight ninths of the descriptors), the rest for 503s.
    let fits = budget / 9 * 4;
    let max = if configured == 0 { fits } else { configured.min(fits) };
    (max, max + (budget - 2 * max))
}

/// Raises the soft open-file limit to the hard one and returns it (1024, the usual soft
/// default, when it cannot be read).
fn raise_nofile_limit() -> u64 {
    #[cfg(unix)]
    {
        match rlimit::increase_nofile_limit(u64::MAX) {
            Ok(limit) => limit,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read or raise the open-file limit");
                rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft)
            }
        }
    }
    #[cfg(not(unix))]
    1024
}

/// The listening socket: accepts while a connection slot is free, and closes (new
/// connections are refused) as soon as a stop begins, whatever the server does next.
pub struct Listener {
    inner: Option<TcpAcceptor>,
    holdings: Vec<Holding>,
    connections: Arc<Connections>,
    drain: Drain,
    errors: AcceptErrors,
}

impl Listener {
    pub fn new(inner: TcpAcceptor, connections: Arc<Connections>, drain: Drain) -> Self {
        connections.listening.fetch_add(1, Ordering::Relaxed);
        Self {
            holdings: inner.holdings().to_vec(),
            inner: Some(inner),
            connections,
            drain,
            errors: AcceptErrors::default(),
        }
    }
}

type Stream = Counted<<TcpAcceptor as Acceptor>::Stream>;

impl Acceptor for Listener {
    type Coupler = TcpCoupler<Stream>;
    type Stream = Stream;

    fn holdings(&self) -> &[Holding] {
        &self.holdings
    }

    async fn accept(&mut self, fuse_policy: Option<ArcFusePolicy>) -> IoResult<Accepted<Self::Coupler, Self::Stream>> {
        loop {
            let Some(inner) = self.inner.as_mut() else {
                return std::future::pending().await;
            };
            let slots = self.connections.slots.clone();
            let next = async {
                let slot = slots.acquire_owned().await.map_err(IoError::other)?;
                inner.accept(fuse_policy.clone()).await.map(|accepted| (slot, accepted))
            };
            let accepted = tokio::select! {
                biased;
                () = self.drain.stopping.cancelled() => None,
                accepted = next => Some(accepted),
            };
            match accepted {
                None => {
                    // Dropping the socket closes it: once every worker's is closed, new
                    // connections are refused.
                    self.inner = None;
                    if self.connections.listening.fetch_sub(1, Ordering::AcqRel) == 1 {
                        self.drain.closed.cancel();
                        tracing::info!("stopped listening");
                    }
                }
                Some(Ok((slot, a))) => {
                    let admission = self.connections.admit(a.remote_addr.clone().into_std());
                    return Ok(Accepted {
                        coupler: TcpCoupler::new(),
                        stream: Counted {
                            inner: a.stream,
                            _slot: slot,
                            _admission: admission,
                        },
                        fuse_config: a.fuse_config,
                        conn_ctrl: a.conn_ctrl,
                        local_addr: a.local_addr,
                        remote_addr: a.remote_addr,
                        http_scheme: a.http_scheme,
                    });
                }
                Some(Err(e)) => {
                    self.errors.log(&e);
                    // EMFILE and its kind persist until a connection closes: wait a little
                    // instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Accept errors, logged at most once a second with how many were not.
#[derive(Default)]
struct AcceptErrors {
    last: Option<Instant>,
    unlogged: u64,
}

impl AcceptErrors {
    fn log(&mut self, error: &IoError) {
        let now = Instant::now();
        if self
            .last
            .is_some_and(|last| now.duration_since(last) < Duration::from_secs(1))
        {
            self.unlogged += 1;
            return;
        }
        tracing::error!(%error, also_failed = self.unlogged, "accepting a connection failed");
        self.last = Some(now);
        self.unlogged = 0;
    }
}

/// A connection's stream, holding its slot and admission until the connection closes.
pub struct Counted<S> {
    inner: S,
    _slot: OwnedSemaphorePermit,
    _admission: Admission,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<IoResult<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<IoResult<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<IoResult<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<IoResult<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::capacity;

    #[test]
    fn connections_fit_the_open_file_limit() {
        for nofile in [1024, 20_000, 1_048_576] {
            let (max, cap) = capacity(0, nofile);
            // Served connections take two descriptors, the 503s one: all within the limit.
            assert!(2 * max + (cap - max) + 256 <= nofile as usize, "{nofile}: {max} {cap}");
            assert!(max > 0 && cap > max);
        }
        assert_eq!(capacity(0, 20_000).0, 8772);
        // A smaller configured cap is kept and leaves more room for 503s; a larger one is lowered.
        assert_eq!(capacity(4000, 20_000), (4000, 4000 + 19_744 - 8000));
        assert_eq!(capacity(50_000, 20_000).0, 8772);
    }
}
