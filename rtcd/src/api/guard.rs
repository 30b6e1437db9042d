//! The API listener's connection guard: caps on open connections in total and per source
//! address (an IPv6 /64 counts as one), refused with a plain `503` on HTTP (a bare close on
//! TLS), and per connection the read timeout of a request head (slowloris), the idle timeout
//! between requests and the write-stall timeout (a client that stops reading), each refusal
//! counted in `rtcd_limit_refusals_total`. The body and handler timeouts are tower-http's,
//! in [`super::router`].

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use axum_server::accept::Accept;
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::TcpStream,
    time::Sleep,
};

use crate::{config::ip_key, metrics::Metrics};

/// What a refused plain-HTTP connection reads before it is closed.
const REFUSAL: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\nRetry-After: 5\r\nContent-Length: 48\r\n\r\ntoo many open connections (limits.http_max_*)\r\n\r\n";

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// Open connections, counted per source address.
#[derive(Debug)]
pub struct ConnLimits {
    counts: Mutex<Counts>,
    max_total: usize,
    max_per_ip: usize,
    metrics: Arc<Metrics>,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Permit {
    limits: Arc<ConnLimits>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut c = self.limits.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_ip.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_ip.remove(&self.ip);
            }
        }
        drop(c);
        self.limits.metrics.http_connections.dec();
    }
}

impl ConnLimits {
    /// Caps of `max_total` connections and `max_per_ip` per source address.
    pub fn new(max_total: usize, max_per_ip: usize, metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            counts: Mutex::default(),
            max_total,
            max_per_ip,
            metrics,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A place for a connection from `ip`, or the name of the limit that refuses it.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Permit, &'static str> {
        let ip = ip_key(ip);
        let mut c = self.lock();
        if c.total >= self.max_total {
            return Err("http_max_connections");
        }
        let n = c.by_ip.entry(ip).or_insert(0);
        if *n >= self.max_per_ip {
            return Err("http_max_connections_per_ip");
        }
        *n += 1;
        c.total += 1;
        drop(c);
        self.metrics.http_connections.inc();
        Ok(Permit {
            limits: self.clone(),
            ip,
        })
    }

    /// Source addresses with open connections (a table size, for leak checks).
    pub fn addresses(&self) -> usize {
        self.lock().by_ip.len()
    }
}

/// The acceptor: admits or refuses each TCP connection, then wraps it in [`Guarded`].
#[derive(Debug, Clone)]
pub struct Guard {
    limits: Arc<ConnLimits>,
    timeouts: Timeouts,
    /// Whether refusals may be answered in plain HTTP (not on a TLS listener).
    plain: bool,
}

impl Guard {
    /// A guard over `limits`; `plain` for a listener without TLS.
    pub fn new(limits: Arc<ConnLimits>, timeouts: Timeouts, plain: bool) -> Self {
        Self {
            limits,
            timeouts,
            plain,
        }
    }
}

impl<S: Send + 'static> Accept<TcpStream, S> for Guard {
    type Stream = Guarded<TcpStream>;
    type Service = Tracked<S>;
    type Future = Pin<Box<dyn Future<Output = io::Result<(Self::Stream, Tracked<S>)>> + Send>>;

    fn accept(&self, mut stream: TcpStream, service: S) -> Self::Future {
        let guard = self.clone();
        Box::pin(async move {
            let peer = stream.peer_addr()?;
            match guard.limits.admit(peer.ip()) {
                Ok(permit) => {
                    let conn = Arc::new(ConnState::default());
                    Ok((
                        Guarded {
                            inner: stream,
                            _permit: permit,
                            t: guard.timeouts,
                            conn: conn.clone(),
                            metrics: guard.limits.metrics.clone(),
                            partial_since: None,
                            last_active: Instant::now(),
                            read_timer: None,
                            stall: None,
                        },
                        Tracked { inner: service, conn },
                    ))
                }
                Err(limit) => {
                    guard.limits.metrics.limit_refused(limit);
                    tracing::debug!(remote = %peer, limit, "api connection refused");
                    if guard.plain {
                        let _ = tokio::time::timeout(Duration::from_millis(500), async {
                            let _ = stream.write_all(REFUSAL).await;
                            let _ = stream.shutdown().await;
                        })
                        .await;
                    }
                    Err(io::Error::other(format!("{peer}: refused by limits.{limit}")))
                }
            }
        })
    }
}

/// What the connection's reader and its request handler share.
#[derive(Debug, Default)]
struct ConnState {
    /// Requests being handled.
    in_flight: AtomicUsize,
    /// Upgraded to a WebSocket: its own deadlines apply from then on.
    upgraded: AtomicBool,
    /// A request began: the bytes read since the last one are no longer a partial request.
    began: AtomicBool,
}

/// The per-connection service: tells the connection when requests begin and end.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    inner: S,
    conn: Arc<ConnState>,
}

/// Ends a request when its future completes or is dropped.
struct InFlight(Arc<ConnState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<S, B> tower::Service<Request<Incoming>> for Tracked<S>
where
    S: tower::Service<Request<Incoming>, Response = Response<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.conn.in_flight.fetch_add(1, Ordering::AcqRel);
        self.conn.began.store(true, Ordering::Release);
        let in_flight = InFlight(self.conn.clone());
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            if let Ok(resp) = &r
                && resp.status() == StatusCode::SWITCHING_PROTOCOLS
            {
                in_flight.0.upgraded.store(true, Ordering::Release);
            }
            drop(in_flight);
            r
        })
    }
}

/// An admitted connection: holds its [`Permit`]; closes it when a request's head (or a TLS
/// handshake) takes longer than the read timeout, when it stays idle for the idle timeout
/// between requests, or when a write makes no progress for the write timeout.
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    _permit: Permit,
    t: Timeouts,
    conn: Arc<ConnState>,
    metrics: Arc<Metrics>,
    /// When the bytes of a request not yet handed to the service started arriving.
    partial_since: Option<Instant>,
    /// The last read or the end of the last request.
    last_active: Instant,
    /// The read deadline's timer.
    read_timer: Option<Pin<Box<Sleep>>>,
    /// Started when a write first returned `Pending`; cleared by any progress.
    stall: Option<Pin<Box<Sleep>>>,
}

/// The three HTTP timeouts.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// A request's head, from its first byte (`limits.http_read_timeout`).
    pub read: Duration,
    /// A write without progress (`limits.http_write_timeout`).
    pub write: Duration,
    /// No request between requests (`limits.http_idle_timeout`).
    pub idle: Duration,
}

impl<S> Guarded<S> {
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        let timeout = self.t.write;
        let sleep = self
            .stall
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        sleep.as_mut().poll(cx).is_ready()
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match r {
            Poll::Pending if self.stalled(cx) => {
                self.metrics.limit_refused("http_write_timeout");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the client did not read the response (limits.http_write_timeout)",
                )))
            }
            Poll::Pending => Poll::Pending,
            ready => {
                self.stall = None;
                ready
            }
        }
    }

    /// The read deadline now, and whether passing it is a refusal (a slow request head)
    /// rather than a plain idle close. `None` while a request is handled or after an upgrade.
    fn read_deadline(&mut self) -> Option<(Instant, bool)> {
        if self.conn.upgraded.load(Ordering::Acquire) || self.conn.in_flight.load(Ordering::Acquire) > 0 {
            self.last_active = Instant::now();
            return None;
        }
        if self.conn.began.swap(false, Ordering::AcqRel) {
            // The request we were timing was handed over: time the next one from now.
            self.partial_since = None;
            self.last_active = Instant::now();
        }
        Some(match self.partial_since {
            Some(since) => (since + self.t.read, true),
            None => (self.last_active + self.t.idle, false),
        })
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let got = buf.filled().len() > before;
        let Some((deadline, slow_head)) = self.read_deadline() else {
            self.read_timer = None;
            return r;
        };
        if got {
            if self.partial_since.is_none() {
                self.partial_since = Some(Instant::now());
            }
            self.last_active = Instant::now();
            return r;
        }
        if r.is_ready() {
            return r;
        }
        let timer = self
            .read_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline.into())));
        if timer.deadline() != deadline.into() {
            timer.as_mut().reset(deadline.into());
        }
        if timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        self.read_timer = None;
        if slow_head {
            self.metrics.limit_refused("http_read_timeout");
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "request head not received in time (limits.http_read_timeout)",
            )))
        } else {
            Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "idle connection closed (limits.http_idle_timeout)",
            )))
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.progress(cx, r)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.progress(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_flush(cx);
        self.progress(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let r = Pin::new(&mut self.inner).poll_shutdown(cx);
        self.progress(cx, r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_total_and_per_address_and_frees_on_drop() {
        let limits = ConnLimits::new(3, 2, Arc::new(Metrics::new()));
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let p1 = limits.admit(a).unwrap();
        let _p2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).unwrap_err(), "http_max_connections_per_ip");
        let _p3 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).unwrap_err(), "http_max_connections");
        drop(p1);
        assert!(limits.admit(a).is_ok());
        assert_eq!(limits.addresses(), 2);
    }

    fn guarded(
        io: tokio::io::DuplexStream,
        t: Timeouts,
        metrics: &Arc<Metrics>,
    ) -> (Guarded<tokio::io::DuplexStream>, Arc<ConnState>) {
        let limits = ConnLimits::new(10, 10, metrics.clone());
        let conn = Arc::new(ConnState::default());
        let g = Guarded {
            inner: io,
            _permit: limits.admit("192.0.2.1".parse().unwrap()).unwrap(),
            t,
            conn: conn.clone(),
            metrics: metrics.clone(),
            partial_since: None,
            last_active: Instant::now(),
            read_timer: None,
            stall: None,
        };
        (g, conn)
    }

    const SHORT: Timeouts = Timeouts {
        read: Duration::from_millis(200),
        write: Duration::from_millis(200),
        idle: Duration::from_millis(400),
    };

    fn refused(m: &Metrics, limit: &str) -> bool {
        m.encode()
            .unwrap()
            .contains(&format!("rtcd_limit_refusals_total{{limit=\"{limit}\"}} 1"))
    }

    #[tokio::test]
    async fn a_slow_request_head_is_cut_and_counted() {
        use tokio::io::AsyncReadExt;
        let m = Arc::new(Metrics::new());
        let (server, mut client) = tokio::io::duplex(1024);
        let (mut g, _) = guarded(server, SHORT, &m);
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let start = Instant::now();
        let mut buf = [0u8; 64];
        let _ = g.read(&mut buf).await.unwrap();
        let err = g.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() >= Duration::from_millis(150),
            "{:?}",
            start.elapsed()
        );
        assert!(refused(&m, "http_read_timeout"));
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_without_counting_a_refusal() {
        use tokio::io::AsyncReadExt;
        let m = Arc::new(Metrics::new());
        let (server, _client) = tokio::io::duplex(1024);
        let (mut g, _) = guarded(server, SHORT, &m);
        let start = Instant::now();
        let err = g.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() >= Duration::from_millis(350),
            "idle, not read timeout"
        );
        assert!(!refused(&m, "http_read_timeout"));
    }

    #[tokio::test]
    async fn no_read_deadline_while_a_request_runs_or_after_an_upgrade() {
        use tokio::io::AsyncReadExt;
        let m = Arc::new(Metrics::new());
        let (server, mut client) = tokio::io::duplex(1024);
        let (mut g, conn) = guarded(server, SHORT, &m);
        conn.upgraded.store(true, Ordering::Release);
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(600)).await;
            client.write_all(b"x").await.unwrap();
            client
        });
        let mut b = [0u8; 1];
        assert_eq!(
            g.read(&mut b).await.unwrap(),
            1,
            "a WebSocket may be quiet for long"
        );
        drop(late.await.unwrap());
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_is_cut_and_counted() {
        let m = Arc::new(Metrics::new());
        let (server, _client) = tokio::io::duplex(1024);
        let (mut g, _) = guarded(server, SHORT, &m);
        let start = Instant::now();
        let err = g.write_all(&[0u8; 64 * 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(start.elapsed() >= Duration::from_millis(150));
        assert!(refused(&m, "http_write_timeout"));
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let limits = ConnLimits::new(10, 1, Arc::new(Metrics::new()));
        let _p = limits.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert!(limits.admit("2001:db8::ffff:2".parse().unwrap()).is_err());
        assert!(limits.admit("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
