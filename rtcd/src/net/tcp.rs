//! Passive ICE-TCP on `ice_port_tcp` (RFC 6544) with RFC 4571 framing: every frame is a
//! 16-bit big-endian length and one STUN/DTLS/SRTP packet. Per connection: frames are at most
//! 64 KiB by construction, at most [`SEND_QUEUE`] frames wait to be written, and a connection
//! that no session has accepted within [`AUTH_TIMEOUT`] is closed. At most
//! [`MAX_UNAUTHENTICATED`] such connections exist at once; more are refused on accept.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};

use super::{Datagram, Transport};
use crate::{metrics::Metrics, shard::stun_shard};

/// A connection no session accepted within this long is closed.
pub const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// An accepted connection silent for this long is closed (ICE consent checks come every few s).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections not yet accepted by a session, at most.
pub const MAX_UNAUTHENTICATED: usize = 256;
/// Frames queued for writing per connection; more are dropped, as UDP would drop them.
pub const SEND_QUEUE: usize = 512;

#[derive(Debug)]
struct Conn {
    tx: mpsc::Sender<Vec<u8>>,
    authenticated: Arc<AtomicBool>,
}

/// The open ICE-TCP connections, by remote address.
#[derive(Debug, Default)]
pub struct TcpConns {
    conns: Mutex<HashMap<SocketAddr, Conn>>,
    unauthenticated: AtomicUsize,
    metrics: Option<Arc<Metrics>>,
}

impl TcpConns {
    /// An empty table that counts drops in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            metrics: Some(metrics),
            ..Self::default()
        }
    }

    fn dropped(&self, reason: &str) {
        if let Some(m) = &self.metrics {
            m.net_dropped
                .get_or_create(&vec![("transport", "tcp".into()), ("reason", reason.into())])
                .inc();
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SocketAddr, Conn>> {
        self.conns.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Frames and queues `data` for the connection from `remote`.
    pub fn send(&self, remote: SocketAddr, data: &[u8]) -> bool {
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        let Some(tx) = self.lock().get(&remote).map(|c| c.tx.clone()) else {
            return false;
        };
        let mut frame = Vec::with_capacity(data.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(data);
        tx.try_send(frame).is_ok()
    }

    /// A session accepted a frame from `remote`: it is no longer subject to the auth timeout.
    pub fn authenticated(&self, remote: SocketAddr) {
        if let Some(c) = self.lock().get(&remote)
            && !c.authenticated.swap(true, Ordering::SeqCst)
        {
            self.unauthenticated.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().len()
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
        if conns.unauthenticated.load(Ordering::SeqCst) >= MAX_UNAUTHENTICATED {
            conns.dropped("too_many_unauthenticated");
            drop(stream);
            continue;
        }
        let Ok(local) = stream.local_addr() else { continue };
        let _ = stream.set_nodelay(true);
        conns.unauthenticated.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(stream, local, remote, conns.clone(), inboxes.clone()));
    }
}

async fn serve(
    stream: TcpStream,
    local: SocketAddr,
    remote: SocketAddr,
    conns: Arc<TcpConns>,
    inboxes: Arc<[mpsc::Sender<Datagram>]>,
) {
    let (read, mut write) = stream.into_split();
    let (out_tx, mut out_rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE);
    let authenticated = Arc::new(AtomicBool::new(false));
    conns.lock().insert(
        remote,
        Conn {
            tx: out_tx,
            authenticated: authenticated.clone(),
        },
    );

    let writer = async {
        while let Some(frame) = out_rx.recv().await {
            if write.write_all(&frame).await.is_err() {
                break;
            }
        }
    };
    let reader = async {
        let mut read = BufReader::with_capacity(4096, read);
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
            match tokio::time::timeout_at(limit, read.read_exact(&mut buf[..n])).await {
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
    };
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
    conns.lock().remove(&remote);
    if !authenticated.load(Ordering::SeqCst) {
        conns.unauthenticated.fetch_sub(1, Ordering::SeqCst);
    }
}
