//! The plugin connections and which connection serves each session (rtcd's `connMap`):
//! messages go to the session's current connection, `close` to the one that carried the
//! `join` (as rtcd does). When that connection is gone — the plugin was re-activated, which
//! opens a new connection with the same client ID and sends no `reconnect` — they go to the
//! client's newest live connection instead of nowhere. Each connection has a bounded send
//! queue; a connection that cannot keep up is closed.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::sync::{Notify, mpsc};

use crate::{
    call::{GroupId, SessionId},
    engine::SignalSink,
    metrics::Metrics,
    protocol::ws::ClientMessage,
};

#[derive(Debug)]
struct Conn {
    client_id: String,
    /// Registration order: the newest live connection of a client has the highest.
    seq: u64,
    tx: mpsc::Sender<Vec<u8>>,
    kill: Arc<Notify>,
}

#[derive(Debug, Clone)]
struct Route {
    group: String,
    join_conn: String,
    conn: String,
}

#[derive(Debug, Default)]
struct Inner {
    conns: HashMap<String, Conn>,
    routes: HashMap<String, Route>,
    /// Routes per group (client ID), for `limits.sessions_per_client`.
    per_group: HashMap<String, usize>,
    registered: u64,
}

/// What [`ConnRegistry::bind`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// A new route.
    New,
    /// The session was already routed (a repeated `join`).
    Existing,
    /// The client already holds `limits.sessions_per_client` sessions: no route was made.
    OverLimit,
}

impl Inner {
    /// Forgets a session's route.
    fn remove_route(&mut self, session: &str) -> Option<Route> {
        let route = self.routes.remove(session)?;
        if let Some(n) = self.per_group.get_mut(&route.group) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_group.remove(&route.group);
            }
        }
        Some(route)
    }

    /// The connection a message for `route` goes to: `close` to the join's connection while
    /// it lives, anything else to the current one; when that one is gone, the client's newest
    /// live connection. `None` when the client has none.
    fn target(&self, route: &Route, is_close: bool) -> Option<String> {
        if is_close && self.conns.contains_key(&route.join_conn) {
            return Some(route.join_conn.clone());
        }
        if self.conns.contains_key(&route.conn) {
            return Some(route.conn.clone());
        }
        self.conns
            .iter()
            .filter(|(_, c)| c.client_id == route.group)
            .max_by_key(|(_, c)| c.seq)
            .map(|(id, _)| id.clone())
    }
}

/// Every open plugin connection and session route.
#[derive(Debug)]
pub struct ConnRegistry {
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    /// Frames queued on any connection and not yet written (or dropped) by its writer.
    unsent: AtomicUsize,
}

impl ConnRegistry {
    /// An empty registry.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Mutex::default(),
            metrics,
            unsent: AtomicUsize::new(0),
        }
    }

    /// A connection's writer is done with `n` queued frames (written, failed or dropped).
    pub fn frames_done(&self, n: usize) {
        // Never below zero, whatever the order of the counts.
        let _ = self
            .unsent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| Some(u.saturating_sub(n)));
    }

    /// Waits (at most `limit`) until every queued frame was written: before the process exits,
    /// so the last `close` of a drain reaches the plugin.
    pub async fn wait_sent(&self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if self.unsent.load(Ordering::Acquire) == 0 {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a connection; `kill` is notified when it must close.
    pub fn register(&self, conn_id: &str, client_id: &str, tx: mpsc::Sender<Vec<u8>>, kill: Arc<Notify>) {
        let mut inner = self.lock();
        inner.registered += 1;
        let seq = inner.registered;
        inner.conns.insert(
            conn_id.to_string(),
            Conn {
                client_id: client_id.to_string(),
                seq,
                tx,
                kill,
            },
        );
    }

    /// Removes a connection (its sessions keep their routes until a `reconnect`).
    pub fn unregister(&self, conn_id: &str) {
        self.lock().conns.remove(conn_id);
    }

    /// Routes a newly joined session to `conn_id`, unless it is already routed or the group
    /// already has `max_per_group` routes.
    pub fn bind(&self, session: &str, group: &str, conn_id: &str, max_per_group: usize) -> Bind {
        let mut inner = self.lock();
        if inner.routes.contains_key(session) {
            return Bind::Existing;
        }
        let n = inner.per_group.get(group).copied().unwrap_or(0);
        if n >= max_per_group {
            return Bind::OverLimit;
        }
        inner.per_group.insert(group.to_string(), n + 1);
        inner.routes.insert(
            session.to_string(),
            Route {
                group: group.to_string(),
                join_conn: conn_id.to_string(),
                conn: conn_id.to_string(),
            },
        );
        Bind::New
    }

    /// Forgets a session's route without a message: its join was refused.
    pub fn unbind(&self, session: &str) {
        self.lock().remove_route(session);
    }

    /// Table sizes: open connections, routed sessions, groups with routes.
    pub fn sizes(&self) -> (usize, usize, usize) {
        let inner = self.lock();
        (inner.conns.len(), inner.routes.len(), inner.per_group.len())
    }

    /// `reconnect`: from now on the session's messages go to `conn_id`. Only the group that
    /// owns the session may move it.
    pub fn rebind(&self, session: &str, group: &str, conn_id: &str) -> bool {
        match self.lock().routes.get_mut(session) {
            Some(r) if r.group == group => {
                r.conn = conn_id.to_string();
                true
            }
            _ => false,
        }
    }

    /// Queues a frame on a connection; a full queue closes it.
    pub fn send_to_conn(&self, conn_id: &str, msg: &ClientMessage) -> bool {
        let inner = self.lock();
        let Some(conn) = inner.conns.get(conn_id) else {
            return false;
        };
        self.unsent.fetch_add(1, Ordering::AcqRel);
        match conn.tx.try_send(msg.encode()) {
            Ok(()) => {
                self.metrics
                    .ws_messages
                    .get_or_create(&vec![
                        ("clientID", conn.client_id.clone()),
                        ("type", msg.metric_type().to_string()),
                        ("direction", "out".into()),
                    ])
                    .inc();
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.frames_done(1);
                self.metrics.limit_refused("ws_send_queue");
                tracing::warn!(conn = conn_id, client = %conn.client_id, "send queue full: closing slow connection");
                conn.kill.notify_one();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.frames_done(1);
                false
            }
        }
    }
}

impl ConnRegistry {
    /// Sends `close` for a session (to its join connection) and forgets its route.
    pub fn deliver_close(&self, session: &str) {
        let id = SessionId::from(session.to_string());
        self.deliver(
            &GroupId::from(String::new()),
            &id,
            ClientMessage::Close {
                session_id: session.to_string(),
            },
        );
    }
}

impl SignalSink for ConnRegistry {
    fn forget(&self, session: &SessionId) {
        self.unbind(session.as_str());
    }

    fn deliver(&self, _group: &GroupId, session: &SessionId, msg: ClientMessage) {
        let is_close = matches!(msg, ClientMessage::Close { .. });
        let target = {
            let mut inner = self.lock();
            let route = if is_close {
                inner.remove_route(session.as_str())
            } else {
                inner.routes.get(session.as_str()).cloned()
            };
            let Some(route) = route else {
                tracing::debug!(%session, "no connection for session: message dropped");
                return;
            };
            let target = inner.target(&route, is_close);
            if let Some(t) = &target
                && *t != route.conn
                && *t != route.join_conn
            {
                tracing::debug!(%session, conn = %t, "the session's connection is gone: using the client's live one");
                if let Some(r) = inner.routes.get_mut(session.as_str()) {
                    // Later messages follow, as after a `reconnect`.
                    r.conn.clone_from(t);
                }
            }
            target
        };
        match target {
            Some(t) if self.send_to_conn(&t, &msg) => {}
            Some(t) => tracing::debug!(%session, conn = %t, "connection gone: message dropped"),
            None => tracing::debug!(%session, "the client has no live connection: message dropped"),
        }
    }
}

/// A fresh 26-character connection ID: a random UUIDv4 in Mattermost's base32 alphabet.
pub fn new_conn_id() -> String {
    const ALPHABET: &[u8; 32] = b"ybndrfg8ejkmcpqxot1uwisza345h769";
    let mut b = [0u8; 16];
    // An all-zero ID only if the OS has no randomness, which getrandom reports as an error.
    let _ = getrandom::fill(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let mut out = String::with_capacity(26);
    let (mut acc, mut bits) = (0u32, 0u32);
    for byte in b {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_ids_are_26_chars_of_the_alphabet_and_fresh() {
        let a = new_conn_id();
        assert_eq!(a.len(), 26);
        assert!(
            a.chars().all(|c| "ybndrfg8ejkmcpqxot1uwisza345h769".contains(c)),
            "{a}"
        );
        assert_ne!(a, new_conn_id());
    }

    #[tokio::test]
    async fn close_goes_to_the_join_connection_and_a_full_queue_kills() {
        let reg = ConnRegistry::new(Arc::new(Metrics::new()));
        let (tx1, mut rx1) = mpsc::channel(1);
        let (tx2, mut rx2) = mpsc::channel(1);
        let kill2 = Arc::new(Notify::new());
        reg.register("c1", "client", tx1, Arc::new(Notify::new()));
        reg.register("c2", "client", tx2, kill2.clone());
        reg.bind("s", "client", "c1", 10);
        assert!(reg.rebind("s", "client", "c2"));
        assert!(
            !reg.rebind("s", "other-client", "c2"),
            "another group cannot steal a session"
        );
        let g = GroupId::from("client");
        let s = SessionId::from("s");
        reg.deliver(&g, &s, ClientMessage::Vad(Default::default()));
        assert!(rx2.try_recv().is_ok(), "rtc/vad go to the current connection");
        reg.deliver(
            &g,
            &s,
            ClientMessage::Close {
                session_id: "s".into(),
            },
        );
        assert!(rx1.try_recv().is_ok(), "close goes to the join connection");
        // c2's queue holds one frame: the second send finds it full and kills c2.
        reg.send_to_conn(
            "c2",
            &ClientMessage::Close {
                session_id: "x".into(),
            },
        );
        assert!(!reg.send_to_conn(
            "c2",
            &ClientMessage::Close {
                session_id: "y".into()
            }
        ));
        tokio::time::timeout(std::time::Duration::from_secs(1), kill2.notified())
            .await
            .unwrap();
    }

    #[test]
    fn sessions_per_client_are_capped_and_every_way_out_frees_the_place() {
        let reg = ConnRegistry::new(Arc::new(Metrics::new()));
        let (tx, _rx) = mpsc::channel(16);
        reg.register("c", "client", tx, Arc::new(Notify::new()));
        assert_eq!(reg.bind("s1", "client", "c", 2), Bind::New);
        assert_eq!(
            reg.bind("s1", "client", "c", 2),
            Bind::Existing,
            "a repeated join"
        );
        assert_eq!(reg.bind("s2", "client", "c", 2), Bind::New);
        assert_eq!(reg.bind("s3", "client", "c", 2), Bind::OverLimit);
        assert_eq!(
            reg.bind("t1", "other", "c", 2),
            Bind::New,
            "another client has its own"
        );
        // A refused join (the engine's `forget`) and a close both free a place.
        reg.forget(&SessionId::from("s1"));
        assert_eq!(reg.bind("s3", "client", "c", 2), Bind::New);
        reg.deliver_close("s2");
        reg.deliver_close("s3");
        reg.deliver_close("t1");
        assert_eq!(
            reg.sizes(),
            (1, 0, 0),
            "back to zero: only the connection is left"
        );
    }

    #[test]
    fn with_its_connections_gone_a_session_is_served_by_its_clients_newest_live_one() {
        let reg = ConnRegistry::new(Arc::new(Metrics::new()));
        let (tx1, _rx1) = mpsc::channel(4);
        let (tx2, mut rx2) = mpsc::channel(4);
        let (tx3, mut rx3) = mpsc::channel(4);
        let (tx4, mut rx4) = mpsc::channel(4);
        reg.register("old", "client", tx1, Arc::new(Notify::new()));
        reg.bind("s", "client", "old", 10);
        reg.unregister("old");
        reg.register("other", "another-client", tx4, Arc::new(Notify::new()));
        reg.register("new1", "client", tx2, Arc::new(Notify::new()));
        reg.register("new2", "client", tx3, Arc::new(Notify::new()));
        let (g, s) = (GroupId::from("client"), SessionId::from("s"));
        reg.deliver(&g, &s, ClientMessage::Vad(Default::default()));
        assert!(rx3.try_recv().is_ok(), "the newest live connection of the client");
        assert!(rx2.try_recv().is_err() && rx4.try_recv().is_err());
        // The route followed: new2 goes away, so the close goes to new1, never to another client.
        reg.unregister("new2");
        reg.deliver(
            &g,
            &s,
            ClientMessage::Close {
                session_id: "s".into(),
            },
        );
        assert!(rx2.try_recv().is_ok());
        assert!(rx4.try_recv().is_err(), "never to another client's connection");
        // The route is gone with the close.
        reg.deliver(&g, &s, ClientMessage::Vad(Default::default()));
        assert!(rx2.try_recv().is_err());
    }

    #[tokio::test]
    async fn the_exit_waits_for_queued_frames_until_their_writer_is_done_with_them() {
        let reg = ConnRegistry::new(Arc::new(Metrics::new()));
        let (tx, _rx) = mpsc::channel(4);
        reg.register("c", "client", tx, Arc::new(Notify::new()));
        assert!(reg.wait_sent(Duration::from_millis(10)).await, "nothing queued");
        reg.send_to_conn(
            "c",
            &ClientMessage::Close {
                session_id: "s".into(),
            },
        );
        assert!(
            !reg.wait_sent(Duration::from_millis(50)).await,
            "a frame is queued"
        );
        reg.frames_done(1);
        assert!(reg.wait_sent(Duration::from_millis(10)).await);
        // A frame to a connection whose writer is gone is not waited for.
        let (tx2, rx2) = mpsc::channel(4);
        reg.register("gone", "client", tx2, Arc::new(Notify::new()));
        drop(rx2);
        assert!(!reg.send_to_conn(
            "gone",
            &ClientMessage::Close {
                session_id: "s".into()
            }
        ));
        assert!(reg.wait_sent(Duration::from_millis(10)).await);
    }
}
