//! The only module that opens media sockets: one UDP port for every peer, per local IP, as a
//! `SO_REUSEPORT` group with one socket per engine shard and 16 MiB buffers requested (each
//! shard reads and sends on its own). Passive ICE-TCP on `ice_port_tcp` ([`tcp`]): frames go
//! to the shard their STUN names. Sends never block (a full socket or queue drops, as UDP
//! would); [`udp`] batches each shard's reads and sends.

pub mod candidates;
pub mod stun;
pub mod tcp;
pub mod udp;

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use socket2::{Domain, Protocol as SockProto, Socket, Type};
use tokio::sync::mpsc;

use self::candidates::{Binding, HostOverride};
use crate::config::RtcConfig;

/// Requested socket buffer size (the kernel caps it at `net.core.rmem_max`/`wmem_max`).
pub const SOCKET_BUFFER: usize = 16 * 1024 * 1024;

/// How a datagram travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    /// The UDP port.
    Udp,
    /// An ICE-TCP connection (one RFC 4571 frame).
    Tcp,
}

/// One received datagram.
#[derive(Debug)]
pub struct Datagram {
    /// UDP or TCP.
    pub transport: Transport,
    /// The local socket address it arrived on.
    pub local: SocketAddr,
    /// The sender.
    pub remote: SocketAddr,
    /// The bytes.
    pub data: Vec<u8>,
}

/// One shard's UDP sockets: one per local address, each in that address's reuseport group.
#[derive(Debug, Default)]
pub struct ShardSockets(pub Vec<(SocketAddr, std::net::UdpSocket)>);

/// The address translation between local and advertised, and the ICE-TCP connections.
#[derive(Debug, Clone)]
pub struct MediaNet {
    /// local → advertised.
    to_advertised: Arc<HashMap<SocketAddr, SocketAddr>>,
    /// advertised → local.
    to_local: Arc<HashMap<SocketAddr, SocketAddr>>,
    /// ICE-TCP: local → advertised.
    tcp_to_advertised: Arc<HashMap<SocketAddr, SocketAddr>>,
    /// ICE-TCP connections.
    tcp: Arc<tcp::TcpConns>,
}

impl MediaNet {
    /// No sockets: for tests of the control plane.
    pub fn none() -> Self {
        Self {
            to_advertised: Arc::default(),
            to_local: Arc::default(),
            tcp_to_advertised: Arc::default(),
            tcp: Arc::default(),
        }
    }

    /// The advertised passive ICE-TCP candidate addresses.
    pub fn tcp_advertised(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.tcp_to_advertised.values().copied().collect();
        v.sort();
        v.dedup();
        v
    }

    /// The ICE-TCP connection table.
    pub fn tcp_conns(&self) -> &Arc<tcp::TcpConns> {
        &self.tcp
    }

    /// The advertised address for a local one, per transport.
    pub fn advertised_on(&self, transport: Transport, local: SocketAddr) -> SocketAddr {
        match transport {
            Transport::Udp => self.advertised_for(local),
            Transport::Tcp => self.tcp_to_advertised.get(&local).copied().unwrap_or(local),
        }
    }

    /// The advertised host-candidate addresses.
    pub fn advertised(&self) -> Vec<SocketAddr> {
        let mut v: Vec<SocketAddr> = self.to_advertised.values().copied().collect();
        v.sort();
        v.dedup();
        v
    }

    /// The advertised address for a local one.
    pub fn advertised_for(&self, local: SocketAddr) -> SocketAddr {
        self.to_advertised.get(&local).copied().unwrap_or(local)
    }

    /// The local socket address behind an advertised one.
    pub fn local_for(&self, advertised: SocketAddr) -> SocketAddr {
        self.to_local.get(&advertised).copied().unwrap_or(advertised)
    }
}

/// Resolves `ice_host_override` (a hostname gets one second, as in rtcd).
pub async fn resolve_host_override(value: &str) -> anyhow::Result<HostOverride> {
    match HostOverride::parse(value) {
        Ok(h) => Ok(h),
        Err(host) => {
            let addrs = tokio::time::timeout(
                Duration::from_secs(1),
                tokio::net::lookup_host((host.as_str(), 0)),
            )
            .await
            .with_context(|| format!("rtc.ice_host_override: resolving {host} timed out"))?
            .with_context(|| format!("rtc.ice_host_override: cannot resolve {host}"))?;
            let ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            let ip = ips
                .iter()
                .find(|ip| ip.is_ipv4())
                .or(ips.first())
                .copied()
                .with_context(|| format!("rtc.ice_host_override: {host} has no address"))?;
            Ok(HostOverride::Single(ip))
        }
    }
}

/// Binds `rtc.ice_port_udp` on every selected local IP, one socket per shard each (returned by
/// shard), and starts the ICE-TCP listeners, whose frames go to `inboxes`.
pub async fn bind(
    cfg: &RtcConfig,
    inboxes: Arc<[mpsc::Sender<Datagram>]>,
    metrics: Arc<crate::metrics::Metrics>,
    limits: crate::config::Limits,
) -> anyhow::Result<(MediaNet, Vec<ShardSockets>)> {
    let shards = inboxes.len().max(1);
    let port = u16::try_from(cfg.ice_port_udp).context("rtc.ice_port_udp")?;
    let interfaces = candidates::interface_ips(cfg.enable_ipv6);
    let locals = candidates::select_local_ips(&cfg.ice_address_udp, cfg.enable_ipv6, &interfaces);
    anyhow::ensure!(!locals.is_empty(), "rtc.ice_address_udp: no usable local address");
    let host = resolve_host_override(&cfg.ice_host_override).await?;
    let port_override = candidates::port_override(&cfg.ice_host_port_override.0, &locals);

    // With no override, ask the first STUN server for our public address, from the media
    // socket itself (before the rest of its group exists, so the answer comes back to it).
    let stun_server = match (
        &host,
        stun::first_stun_url(&cfg.ice_servers).and_then(stun::parse_url),
    ) {
        (HostOverride::None, Some((h, p))) => tokio::net::lookup_host((h.as_str(), p))
            .await
            .map(|a| a.collect::<Vec<_>>())
            .unwrap_or_default(),
        _ => Vec::new(),
    };

    let mut sockets: Vec<ShardSockets> = (0..shards).map(|_| ShardSockets::default()).collect();
    let mut to_advertised = HashMap::new();
    let mut to_local = HashMap::new();
    let mut discovered: HashMap<IpAddr, IpAddr> = HashMap::new();
    for Binding {
        local,
        mut advertised,
        mut external,
    } in candidates::bindings(&locals, &host)
    {
        let addr = SocketAddr::new(local, port);
        let bind =
            || reuseport_socket(addr).with_context(|| format!("rtc.ice_port_udp: cannot bind UDP {addr}"));
        let mut first = bind()?;
        if let Some(server) = stun_server.iter().find(|a| a.is_ipv4() == local.is_ipv4()) {
            let sock = tokio::net::UdpSocket::from_std(first)
                .with_context(|| format!("rtc.ice_port_udp: cannot use UDP {addr}"))?;
            let found = stun::discover(&sock, *server).await;
            first = sock
                .into_std()
                .with_context(|| format!("rtc.ice_port_udp: cannot use UDP {addr}"))?;
            match found {
                Some(public) => {
                    tracing::info!(%local, %public, stun = %server, "public address discovered");
                    advertised = public;
                    external = true;
                    discovered.insert(local, public);
                }
                None => {
                    tracing::warn!(%local, stun = %server, "no STUN answer within 5 s: advertising the local address");
                }
            }
        }
        let adv_port = if external {
            port_override.unwrap_or(port)
        } else {
            port
        };
        let adv = SocketAddr::new(advertised, adv_port);
        let mut group = vec![first];
        for _ in 1..shards {
            group.push(bind()?);
        }
        for (shard, sock) in group.into_iter().enumerate() {
            sockets[shard].0.push((addr, sock));
        }
        tracing::info!(local = %addr, advertised = %adv, sockets = shards, "rtc udp listening");
        to_advertised.insert(addr, adv);
        to_local.entry(adv).or_insert(addr);
    }
    // Passive ICE-TCP: every interface on ice_port_tcp unless addresses are listed.
    let tcp_port = u16::try_from(cfg.ice_port_tcp).context("rtc.ice_port_tcp")?;
    let tcp_locals = candidates::select_local_ips(&cfg.ice_address_tcp, cfg.enable_ipv6, &interfaces);
    let listen: Vec<SocketAddr> = if cfg.ice_address_tcp.trim().is_empty() {
        let mut v = vec![SocketAddr::new(IpAddr::from([0, 0, 0, 0]), tcp_port)];
        if cfg.enable_ipv6 {
            v.push(SocketAddr::new(IpAddr::from([0u16; 8]), tcp_port));
        }
        v
    } else {
        tcp_locals
            .iter()
            .map(|ip| SocketAddr::new(*ip, tcp_port))
            .collect()
    };
    let conns = Arc::new(tcp::TcpConns::new(metrics, limits));
    for addr in listen {
        let listener =
            tcp_listener(addr).with_context(|| format!("rtc.ice_port_tcp: cannot listen on TCP {addr}"))?;
        tokio::spawn(tcp::accept_loop(listener, conns.clone(), inboxes.clone()));
    }
    let tcp_port_override = candidates::port_override(&cfg.ice_host_port_override.0, &tcp_locals);
    let mut tcp_to_advertised = HashMap::new();
    for Binding {
        local,
        mut advertised,
        mut external,
    } in candidates::bindings(&tcp_locals, &host)
    {
        if let Some(public) = discovered.get(&local) {
            advertised = *public;
            external = true;
        }
        let port = if external {
            tcp_port_override.unwrap_or(tcp_port)
        } else {
            tcp_port
        };
        let adv = SocketAddr::new(advertised, port);
        tracing::info!(local = %SocketAddr::new(local, tcp_port), advertised = %adv, "rtc ice-tcp listening");
        tcp_to_advertised.insert(SocketAddr::new(local, tcp_port), adv);
    }
    let net = MediaNet {
        to_advertised: Arc::new(to_advertised),
        to_local: Arc::new(to_local),
        tcp_to_advertised: Arc::new(tcp_to_advertised),
        tcp: conns,
    };
    Ok((net, sockets))
}

fn tcp_listener(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(SockProto::TCP))?;
    sock.set_reuse_address(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    sock.listen(1024)?;
    tokio::net::TcpListener::from_std(sock.into())
}

/// Says once what the kernel granted of [`SOCKET_BUFFER`] (it reports double what it grants,
/// for its own bookkeeping), and warns, naming the sysctl, when it capped the grant: nodes tuned
/// by their admin (no privileged init container) show here whether the tuning took.
fn log_buffers_once(recv: usize, send: usize) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let (got_recv, got_send) = (recv / 2, send / 2);
        if got_recv < SOCKET_BUFFER || got_send < SOCKET_BUFFER {
            tracing::warn!(
                asked = SOCKET_BUFFER,
                recv = got_recv,
                send = got_send,
                "UDP socket buffers: asked {SOCKET_BUFFER} bytes, got {got_recv} (receive) and {got_send} (send): \
                 raise net.core.rmem_max / net.core.wmem_max on this node to at least {SOCKET_BUFFER}, or bursts of \
                 media may be dropped"
            );
        } else {
            tracing::info!(
                recv = got_recv,
                send = got_send,
                "UDP socket buffers: asked {SOCKET_BUFFER} bytes, got {got_recv} (receive) and {got_send} (send)"
            );
        }
    });
}

fn reuseport_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(SockProto::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    if addr.is_ipv6() {
        sock.set_only_v6(true)?;
    }
    // Best effort: the kernel caps these at rmem_max/wmem_max.
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER);
    log_buffers_once(
        sock.recv_buffer_size().unwrap_or(0),
        sock.send_buffer_size().unwrap_or(0),
    );
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    Ok(sock.into())
}
