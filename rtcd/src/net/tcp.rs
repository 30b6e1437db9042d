//! Passive ICE-TCP on `ice_port_tcp` (RFC 6544) with RFC 4571 framing: every frame is a
//! 16-bit big-endian length and one STUN/DTLS/SRTP packet. Per connection: frames are at most
//! 64 KiB by construction, at most [`SEND_QUEUE`] frames wait to be written, and a connection
//! that no session has accepted within [`AUTH_TIMEOUT`] is closed. The `[limits]` caps
//! connections no session has accepted, in total and per source address (an IPv6 /64 counts
//! as one), and all connections in total; more are refused on accept. The table is keyed by
//! remote address, each entry tagged with its connection, so a closing connection never
//! removes a newer one from the same address.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use super::{Datagram, Transport};
use crate::{
    config::{Limits, ip_key},
    metrics::Metrics,
    shard::stun_shard,
};

/// A connection no session accepted within this long is closed.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// An accepted connection silent for this long is closed (ICE consent checks come every few s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Frames queued for writing per connection; more are dropped, as UDP would drop them.
pub const SEND_QUEUE: usize = 512;

#[derive(Debug)]
struct Conn {
    /// Which connection: a newer one from the same address replaces the entry.
    id: u64,
    tx: mpsc::Sender<Vec<u8>>,
    authenticated: Arc<AtomicBool>,
    /// The source address's limit key.
    ip: IpAddr,
}

#[derive(Debug, Default)]
struct Table {
    by_remote: HashMap<SocketAddr, Conn>,
    /// Open connections, authenticated or not.
    open: usize,
    /// Connections no session has accepted yet, in total and by source address.
    unauthenticated: usize,
    unauthenticated_by_ip: HashMap<IpAddr, usize>,
    next_id: u64,
}

impl Table {
    fn authenticated(&mut self, ip: IpAddr) {
        self.unauthenticated = self.unauthenticated.saturating_sub(1);
        if let Some(n) = self.unauthenticated_by_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.unauthenticated_by_ip.remove(&ip);
            }
        }
    }
}

/// The open ICE-TCP connections, by remote address.
#[derive(Debug, Default)]
pub struct TcpConns {
    table: Mutex<Table>,
    limits: Limits,
    metrics: Option<Arc<Metrics>>,
    /// Connections admitted and not yet closed (tasks), for leak checks.
    tasks: AtomicUsize,
}

/// An admitted connection's place in the table.
#[derive(Debug, Clone, Copy)]
struct Admitted {
    id: u64,
    ip: IpAddr,
}

impl TcpConns {
    /// An empty table under `limits` that counts drops in `metrics`.
    pub fn new(metrics: Arc<Metrics>, limits: Limits) -> Self {
        Self {
            metrics: Some(metrics),
            limits,
            ..Self::default()
        }
    }

    /// Counts an unauthenticated connection from `remote`, or names the limit that refuses it.
    fn admit(&self, remote: SocketAddr) -> Result<Admitted, &'static str> {
        let ip = ip_key(remote.ip());
        let mut t = self.lock();
        if t.open >= self.limits.tcp_connections {
            return Err("ice_tcp_max_connections");
        }
        if t.unauthenticated >= self.limits.tcp_unauthenticated {
            return Err("ice_tcp_max_unauthenticated");
        }
        let n = t.unauthenticated_by_ip.entry(ip).or_insert(0);
        if *n >= self.limits.tcp_unauthenticated_per_ip {
            return Err("ice_tcp_max_unauthenticated_per_ip");
        }
        *n += 1;
        t.unauthenticated += 1;
        t.open += 1;
        t.next_id += 1;
        Ok(Admitted { id: t.next_id, ip })
    }

    /// A connection ended: frees its counts, and its table entry unless a newer connection
    /// from the same address has taken it.
    fn closed(&self, remote: SocketAddr, admitted: Admitted, authenticated: bool) {
        let mut t = self.lock();
        t.open = t.open.saturating_sub(1);
        if !authenticated {
            t.authenticated(admitted.ip);
        }
        if t.by_remote.get(&remote).is_some_and(|c| c.id == admitted.id) {
            t.by_remote.remove(&remote);
        }
    }

    /// Table sizes: connections in the table, unauthenticated ones, source addresses with
    /// unauthenticated connections, connection tasks.
    pub fn sizes(&self) -> (usize, usize, usize, usize) {
        let t = self.lock();
        (
            t.by_remote.len(),
            t.unauthenticated,
            t.unauthenticated_by_ip.len(),
            self.tasks.load(Ordering::SeqCst),
        )
    }

    fn dropped(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.net_dropped
                .get_or_create(&vec![("transport", "tcp".into()), ("reason", reason.into())])
                .inc();
        }
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frames and queues `data` for the connection from `remote`.
    pub fn send(&self, remote: SocketAddr, data: &[u8]) -> bool {
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        let Some(tx) = self.lock().by_remote.get(&remote).map(|c| c.tx.clone()) else {
            return false;
        };
        let mut frame = Vec::with_capacity(data.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(data);
        tx.try_send(frame).is_ok()
    }

    /// A session accepted a frame from `remote`: it is no longer subject to the auth timeout.
    pub fn authenticated(&self, remote: SocketAddr) {
        let mut t = self.lock();
        let Some(c) = t.by_remote.get(&remote) else { return };
        if !c.authenticated.swap(true, Ordering::SeqCst) {
            let ip = c.ip;
            t.authenticated(ip);
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().by_remote.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Accepts ICE-TCP connections on `listener` until the runtime stops.
pub async fn accept_loop(
    listener: TcpListener,
    conns: Arc<TcpConns>,
    inboxes: Arc<[mpsc::Sender<Datagram>]>,
) {
    loop {
        let (stream, remote) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!(error = %e, "ice-tcp accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(local) = stream.local_addr() else { continue };
        let admitted = match conns.admit(remote) {
            Ok(a) => a,
            Err(limit) => {
                // RFC 4571 has no way to say why: the connection is closed at once.
                conns.dropped(if limit == "ice_tcp_max_connections" {
                    "too_many_connections"
                } else {
                    "too_many_unauthenticated"
                });
                if let Some(m) = &conns.metrics {
                    m.limit_refused(limit);
                }
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        conns.tasks.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(
            stream,
            local,
            remote,
            admitted,
            conns.clone(),
            inboxes.clone(),
        ));
    }
}

async fn serve(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    admitted: Admitted,
    conns: Arc<TcpConns>,
    inboxes: Arc<[mpsc::Sender<Datagram>]>,
) {
    let (read, mut write) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE);
    let authenticated = Arc::new(AtomicBool::new(false));
    // A newer connection from the same address replaces an older entry (whose writer then
    // ends); the older one's close leaves this entry alone.
    conns.lock().by_remote.insert(
        remote,
        Conn {
            id: admitted.id,
            tx: out_tx,
            authenticated: authenticated.clone(),
            ip: admitted.ip,
        },
    );

    let writer = async {
        while let Some(frame) = out_rx.recv().await {
            if write.write_all(&frame).await.is_err() {
                break;
            }
        }
    };
    let reader = read_frames(
        BufReader::with_capacity(4096, read),
        &authenticated,
        &conns,
        &inboxes,
        local,
        remote,
    );
    let why = tokio::select! {
        () = writer => "write failed",
        why = reader => why,
    };
    tracing::debug!(%remote, why, "ice-tcp connection closed");
    match why {
        "no ICE within 10 s" => conns.dropped("unauthenticated_timeout"),
        "truncated frame" | "frame timeout" => conns.dropped("truncated_frame"),
        _ => {}
    }
    conns.closed(remote, admitted, authenticated.load(Ordering::SeqCst));
    conns.tasks.fetch_sub(1, Ordering::SeqCst);
}

/// Reads RFC 4571 frames (a 16-bit big-endian length, then that many bytes; a zero length is
/// skipped) from `read`, and hands each to the inbox of the shard its STUN names (the last
/// one named, at first 0), until the stream ends, a deadline passes or the engine stops.
/// Returns why it stopped.
pub async fn read_frames<R: AsyncRead + Unpin>(
    mut read: R,
    authenticated: &AtomicBool,
    conns: &TcpConns,
    inboxes: &[mpsc::Sender<Datagram>],
    local: SocketAddr,
    remote: SocketAddr,
) -> &'static str {
    let started = tokio::time::Instant::now();
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    // The shard of the session this connection serves, as its STUN names it.
    let mut shard = 0;
    loop {
        let limit = if authenticated.load(Ordering::SeqCst) {
            tokio::time::Instant::now() + IDLE_TIMEOUT
        } else {
            started + AUTH_TIMEOUT
        };
        let mut len = [0u8; 2];
        match tokio::time::timeout_at(limit, read.read_exact(&mut len)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return "closed",
            Err(_) => {
                return if authenticated.load(Ordering::SeqCst) {
                    "idle"
                } else {
                    "no ICE within 10 s"
                };
            }
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n == 0 {
            continue;
        }
        let Some(frame) = buf.get_mut(..n) else {
            return "truncated frame";
        };
        match tokio::time::timeout_at(limit, read.read_exact(frame)).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => return "truncated frame",
            Err(_) => return "frame timeout",
        }
        let frame = &buf[..n];
        if let Some(s) = stun_shard(frame, inboxes.len()) {
            shard = s;
        }
        let Some(tx) = inboxes.get(shard) else {
            return "engine stopped";
        };
        let dg = Datagram {
            transport: Transport::Tcp,
            local,
            remote,
            data: frame.to_vec(),
        };
        match tx.try_send(dg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => conns.dropped("shard_queue_full"),
            Err(mpsc::error::TrySendError::Closed(_)) => return "engine stopped",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conns(per_ip: usize, unauth: usize, total: usize) -> TcpConns {
        TcpConns::new(
            Arc::new(Metrics::new()),
            Limits {
                tcp_unauthenticated_per_ip: per_ip,
                tcp_unauthenticated: unauth,
                tcp_connections: total,
                ..Limits::default()
            },
        )
    }

    fn enter(c: &TcpConns, remote: SocketAddr, a: Admitted) -> Arc<AtomicBool> {
        let (tx, _rx) = mpsc::channel(1);
        let authenticated = Arc::new(AtomicBool::new(false));
        c.lock().by_remote.insert(
            remote,
            Conn {
                id: a.id,
                tx,
                authenticated: authenticated.clone(),
                ip: a.ip,
            },
        );
        authenticated
    }

    #[test]
    fn authenticated_connections_have_a_total_cap_and_free_their_unauthenticated_place() {
        let c = conns(1, 10, 2);
        let r1: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let a1 = c.admit(r1).unwrap();
        let _f1 = enter(&c, r1, a1);
        assert_eq!(c.admit(r1).unwrap_err(), "ice_tcp_max_unauthenticated_per_ip");
        c.authenticated(r1);
        // Accepted by a session: no longer counted against its address.
        let r2: SocketAddr = "192.0.2.1:5001".parse().unwrap();
        let a2 = c.admit(r2).unwrap();
        let _f2 = enter(&c, r2, a2);
        c.authenticated(r2);
        // Two open connections: the total cap refuses a third, from anywhere.
        let r3: SocketAddr = "198.51.100.1:5000".parse().unwrap();
        assert_eq!(c.admit(r3).unwrap_err(), "ice_tcp_max_connections");
        c.closed(r1, a1, true);
        c.closed(r2, a2, true);
        assert_eq!(c.sizes(), (0, 0, 0, 0));
    }

    #[test]
    fn a_closing_connection_never_removes_a_newer_one_from_the_same_address() {
        let c = conns(4, 10, 10);
        let remote: SocketAddr = "192.0.2.1:5000".parse().unwrap();
        let old = c.admit(remote).unwrap();
        let _ = enter(&c, remote, old);
        let new = c.admit(remote).unwrap();
        let _ = enter(&c, remote, new);
        c.closed(remote, old, false);
        assert_eq!(c.len(), 1, "the newer connection is still in the table");
        assert!(c.lock().by_remote.get(&remote).is_some_and(|e| e.id == new.id));
        c.closed(remote, new, false);
        assert_eq!(c.sizes(), (0, 0, 0, 0));
    }
}
