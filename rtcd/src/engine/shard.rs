//! One engine shard: a thread with a single-threaded runtime that owns a [`Sfu`], reads its own
//! sockets on the media port (handing a datagram of another shard's session to that shard's
//! inbox), takes its inbox, its commands and its timers, and sends from its own sockets.

use std::{
    collections::HashMap,
    net::SocketAddr,
    os::fd::AsRawFd,
    sync::Arc,
    time::{Duration, Instant},
};

use prometheus_client::metrics::counter::Counter;
use tokio::{net::UdpSocket, sync::mpsc};

use super::{Command, SignalSink, health::Beat, placement::Placement};
use crate::{
    call::{Protocol, Sfu, SfuConfig, SfuOutput},
    metrics::{Metrics, TRAFFIC},
    net::{
        Datagram, MediaNet, ShardSockets, Transport,
        udp::{self, Receiver, Sender},
    },
    shard::stun_shard,
};

/// Datagrams read from one socket or inbox before outputs are flushed.
const BATCH: usize = 2 * udp::BATCH;
/// Learnt remote → shard routes kept per shard, at most (a STUN flood cannot grow it further).
const MAX_ROUTES: usize = 1 << 16;
/// A route unused this long is forgotten.
const ROUTE_IDLE: Duration = Duration::from_secs(120);

/// What a shard is built from.
pub(super) struct ShardParts {
    pub(super) index: usize,
    pub(super) sfu: SfuConfig,
    pub(super) metrics: Arc<Metrics>,
    pub(super) net: MediaNet,
    pub(super) sockets: ShardSockets,
    pub(super) commands: mpsc::Receiver<Command>,
    pub(super) inbox: mpsc::Receiver<Datagram>,
    pub(super) inboxes: Arc<[mpsc::Sender<Datagram>]>,
    pub(super) sink: Arc<dyn SignalSink>,
    pub(super) placement: Arc<Placement>,
    pub(super) beat: Arc<Beat>,
}

/// Counters this shard bumps per packet, created once.
struct Counters {
    no_session_udp: Counter,
    no_session_tcp: Counter,
    oversize: Counter,
    queue_full: Counter,
    send_failed_udp: Counter,
    send_failed_tcp: Counter,
    /// `rtcd_net_{packets,bytes}_total`, in [`TRAFFIC`] order.
    traffic: [(Counter, Counter); 4],
}

/// Indexes of [`TRAFFIC`].
const UDP_IN: usize = 0;
const UDP_OUT: usize = 1;
const TCP_IN: usize = 2;
const TCP_OUT: usize = 3;

/// Packets and bytes this shard moved since it last published them, in [`TRAFFIC`] order:
/// plain integers on the per-packet path, added to the shared counters on each beat.
#[derive(Default)]
struct Tally([(u64, u64); 4]);

impl Tally {
    fn add(&mut self, i: usize, bytes: usize) {
        if let Some((p, b)) = self.0.get_mut(i) {
            *p += 1;
            *b += bytes as u64;
        }
    }
}

impl Counters {
    fn new(m: &Metrics) -> Self {
        let dropped = |transport: &str, reason: &str| {
            m.net_dropped
                .get_or_create(&vec![("transport", transport.into()), ("reason", reason.into())])
                .clone()
        };
        let failed = |transport: &str| {
            m.net_send_failed
                .get_or_create(&vec![("transport", transport.into())])
                .clone()
        };
        Self {
            no_session_udp: dropped("udp", "no_session"),
            no_session_tcp: dropped("tcp", "no_session"),
            oversize: dropped("udp", "oversize"),
            queue_full: dropped("udp", "shard_queue_full"),
            send_failed_udp: failed("udp"),
            send_failed_tcp: failed("tcp"),
            traffic: TRAFFIC.map(|(transport, direction)| {
                let labels = vec![("transport", transport.into()), ("direction", direction.into())];
                (
                    m.net_packets.get_or_create(&labels).clone(),
                    m.net_bytes.get_or_create(&labels).clone(),
                )
            }),
        }
    }
}

/// A learnt route: datagrams from this remote go to `shard`.
struct Route {
    shard: usize,
    seen: Instant,
}

pub(super) struct Shard {
    index: usize,
    sfu: Sfu,
    net: MediaNet,
    std_sockets: ShardSockets,
    commands: mpsc::Receiver<Command>,
    inbox: mpsc::Receiver<Datagram>,
    inboxes: Arc<[mpsc::Sender<Datagram>]>,
    sink: Arc<dyn SignalSink>,
    placement: Arc<Placement>,
    beat: Arc<Beat>,
    counters: Counters,
    tally: Tally,
    routes: HashMap<SocketAddr, Route>,
    metrics: Arc<Metrics>,
}

/// Marks the shard stopped however its thread ends (a panic outside any session included).
struct StopOnDrop(Arc<Beat>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Shard {
    pub(super) fn new(p: ShardParts) -> Self {
        Self {
            index: p.index,
            counters: Counters::new(&p.metrics),
            sfu: Sfu::new(p.sfu),
            net: p.net,
            std_sockets: p.sockets,
            commands: p.commands,
            inbox: p.inbox,
            inboxes: p.inboxes,
            sink: p.sink,
            placement: p.placement,
            beat: p.beat,
            tally: Tally::default(),
            routes: HashMap::new(),
            metrics: p.metrics,
        }
    }

    /// Runs on the calling thread until every command sender is gone.
    pub(super) fn run(mut self) {
        let _stop = StopOnDrop(self.beat.clone());
        let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(rt) => rt,
            Err(e) => {
                tracing::error!(shard = self.index, error = %e, "cannot start the shard's runtime");
                return;
            }
        };
        rt.block_on(async move {
            let sockets = match self.register_sockets() {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(shard = self.index, error = %e, "cannot register the shard's sockets");
                    return;
                }
            };
            self.event_loop(&sockets).await;
        });
    }

    fn register_sockets(&mut self) -> std::io::Result<Vec<(SocketAddr, UdpSocket)>> {
        std::mem::take(&mut self.std_sockets)
            .0
            .into_iter()
            .map(|(local, s)| Ok((local, UdpSocket::from_std(s)?)))
            .collect()
    }

    async fn event_loop(&mut self, sockets: &[(SocketAddr, UdpSocket)]) {
        // Both hold kernel message headers (not `Send`): they live on the shard's own thread.
        let mut receiver = Receiver::default();
        let mut sender = Sender::new(true);
        let mut beat = tokio::time::interval(super::health::BEAT_EVERY);
        beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut prune = tokio::time::interval(ROUTE_IDLE / 4);
        loop {
            self.beat.beat(Instant::now());
            let deadline = self.sfu.next_deadline();
            let sleep = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                cmd = self.commands.recv() => {
                    let Some(cmd) = cmd else { return };
                    self.command(cmd);
                }
                Some(dg) = self.inbox.recv() => {
                    let now = Instant::now();
                    self.receive(now, dg.transport, dg.local, dg.remote, &dg.data);
                    for _ in 1..BATCH {
                        let Ok(dg) = self.inbox.try_recv() else { break };
                        self.receive(now, dg.transport, dg.local, dg.remote, &dg.data);
                    }
                }
                i = readable(sockets) => {
                    let (local, sock) = &sockets[i];
                    let local = *local;
                    let now = Instant::now();
                    for _ in 0..BATCH / udp::BATCH {
                        match receiver.recv(sock, |remote, data| self.udp_datagram(now, local, remote, data)) {
                            Ok(r) => self.counters.oversize.inc_by(r.truncated as u64),
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(e) => {
                                tracing::debug!(local = %local, error = %e, "udp receive error");
                                break;
                            }
                        };
                    }
                }
                () = sleep => self.sfu.handle_timeout(Instant::now()),
                _ = beat.tick() => {
                    self.publish_traffic();
                    self.publish_tables();
                }
                _ = prune.tick() => self.prune_routes(Instant::now()),
            }
            self.flush(sockets, &mut sender);
        }
    }

    /// Adds what this shard moved since the last beat to `rtcd_net_{packets,bytes}_total`.
    fn publish_traffic(&mut self) {
        let tally = std::mem::take(&mut self.tally);
        for ((packets, bytes), (p, b)) in self.counters.traffic.iter().zip(tally.0) {
            if p > 0 {
                packets.inc_by(p);
                bytes.inc_by(b);
            }
        }
    }

    /// Sets `rtcd_engine_table_entries{shard,table}` from this shard's tables.
    fn publish_tables(&mut self) {
        // Routes only serve live sessions: with none left anywhere, forget them all at once
        // (otherwise they age out after ROUTE_IDLE).
        if self.placement.sizes().1 == 0 {
            self.routes.clear();
        }
        let shard = self.index.to_string();
        let sfu = self.sfu.table_sizes();
        let own = [("routes", self.routes.len())];
        for (table, n) in sfu.iter().chain(own.iter()) {
            self.metrics
                .engine_tables
                .get_or_create(&vec![("shard", shard.clone()), ("table", (*table).to_string())])
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// A datagram read from this shard's socket: handled here or handed to its shard.
    fn udp_datagram(&mut self, now: Instant, local: SocketAddr, remote: SocketAddr, data: &[u8]) {
        let shard = self.route(now, remote, data);
        if shard == self.index {
            self.receive(now, Transport::Udp, local, remote, data);
            return;
        }
        let Some(tx) = self.inboxes.get(shard) else {
            return;
        };
        let dg = Datagram {
            transport: Transport::Udp,
            local,
            remote,
            data: data.to_vec(),
        };
        if tx.try_send(dg).is_err() {
            self.counters.queue_full.inc();
        }
    }

    /// The shard for a datagram from `remote`: a STUN request names it in its ufrag (and
    /// teaches the route); anything else follows the route its STUN taught, or stays here
    /// (where an unknown sender is dropped and counted).
    fn route(&mut self, now: Instant, remote: SocketAddr, data: &[u8]) -> usize {
        let n = self.inboxes.len();
        if n <= 1 {
            return self.index;
        }
        if let Some(shard) = stun_shard(data, n) {
            if let Some(r) = self.routes.get_mut(&remote) {
                r.shard = shard;
                r.seen = now;
            } else if self.routes.len() < MAX_ROUTES {
                self.routes.insert(remote, Route { shard, seen: now });
            }
            return shard;
        }
        match self.routes.get_mut(&remote) {
            Some(r) => {
                r.seen = now;
                r.shard
            }
            None => self.index,
        }
    }

    fn prune_routes(&mut self, now: Instant) {
        self.routes.retain(|_, r| now.duration_since(r.seen) < ROUTE_IDLE);
    }

    fn receive(
        &mut self,
        now: Instant,
        transport: Transport,
        local: SocketAddr,
        remote: SocketAddr,
        data: &[u8],
    ) {
        let destination = self.net.advertised_on(transport, local);
        let proto = match transport {
            Transport::Udp => Protocol::Udp,
            Transport::Tcp => Protocol::Tcp,
        };
        self.tally
            .add(if proto == Protocol::Tcp { TCP_IN } else { UDP_IN }, data.len());
        if self.sfu.handle_receive(now, proto, remote, destination, data) {
            if proto == Protocol::Tcp {
                self.net.tcp_conns().authenticated(remote);
            }
        } else if proto == Protocol::Tcp {
            self.counters.no_session_tcp.inc();
        } else {
            self.counters.no_session_udp.inc();
        }
    }

    fn command(&mut self, cmd: Command) {
        let now = Instant::now();
        let result = match cmd {
            Command::Join { cfg, guard } => {
                #[cfg(feature = "fault-injection")]
                if self.sfu.faults().stall_user.as_deref() == Some(cfg.user_id.as_str()) {
                    tracing::warn!(
                        shard = self.index,
                        "fault injection: RTCD_FAULT_STALL_USER stalls the shard for 6 s"
                    );
                    std::thread::sleep(Duration::from_secs(6));
                }
                let sid = cfg.session_id.clone();
                let r = self
                    .sfu
                    .handle_join(now, cfg, guard)
                    .map_err(|e| format!("join {sid}: {e}"));
                if r.is_err() && !self.sfu.has_session(&sid) {
                    self.placement.release(&sid);
                    self.sink.forget(&sid);
                }
                r
            }
            Command::Leave { group, session } => self.sfu.handle_leave(now, &group, &session),
            Command::Rtc { group, msg } => self.sfu.handle_rtc(now, &group, msg),
            Command::Sessions { group, call, reply } => {
                let _ = reply.send(self.sfu.sessions(&group, &call));
                Ok(())
            }
        };
        if let Err(e) = result {
            // A client's message we cannot act on: the client's problem, not the operator's.
            tracing::warn!(error = %e, "failed to handle message");
        }
    }

    /// Acts on everything the core wants done.
    fn flush(&mut self, sockets: &[(SocketAddr, UdpSocket)], sender: &mut Sender) {
        while let Some(out) = self.sfu.poll_output() {
            match out {
                SfuOutput::Transmit {
                    proto: Protocol::Udp,
                    source,
                    destination,
                    data,
                } => {
                    let local = self.net.local_for(source);
                    match sockets.iter().position(|(l, _)| *l == local) {
                        Some(i) => {
                            self.tally.add(UDP_OUT, data.len());
                            sender.push(i, destination, data);
                        }
                        None => {
                            self.counters.send_failed_udp.inc();
                        }
                    }
                }
                SfuOutput::Transmit {
                    proto: Protocol::Tcp,
                    destination,
                    data,
                    ..
                } => {
                    if self.net.tcp_conns().send(destination, &data) {
                        self.tally.add(TCP_OUT, data.len());
                    } else {
                        self.counters.send_failed_tcp.inc();
                    }
                }
                SfuOutput::Transmit { .. } => {}
                SfuOutput::Signal {
                    group_id,
                    session_id,
                    msg,
                } => self.sink.deliver(&group_id, &session_id, msg),
                SfuOutput::SessionClosed { session_id, guard } => {
                    self.placement.release(&session_id);
                    // Its `close` is already queued on the plugin's connection.
                    drop(guard);
                }
            }
        }
        if !sender.is_empty() {
            let sent = sender.flush(|i| sockets.get(i).map(|(_, s)| s.as_raw_fd()));
            self.counters.send_failed_udp.inc_by(sent.failed as u64);
        }
    }
}

/// The index of a socket that is readable (never resolves without sockets).
async fn readable(sockets: &[(SocketAddr, UdpSocket)]) -> usize {
    match sockets {
        [] => std::future::pending().await,
        [(_, s)] => {
            let _ = s.readable().await;
            0
        }
        _ => {
            let (_, i, _) =
                futures_util::future::select_all(sockets.iter().map(|(_, s)| Box::pin(s.readable()))).await;
            i
        }
    }
}
