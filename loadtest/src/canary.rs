//! `rtcd-loadtest probe <url>`: the connectivity canary. A one-person call against any rtcd with
//! a real peer, first over UDP, then over ICE-TCP: whether ICE and DTLS complete, how long the
//! join took to connect, the selected pair's STUN round trip, and which server candidate won.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result, anyhow};
use serde::Serialize;

pub use rtcd::lifecycle::{CANARY_CLIENT_PREFIX, is_canary_client};

use crate::run::{self, Options};

/// What to probe.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeOptions {
    /// rtcd's API URL (http:// only).
    pub url: String,
    /// Client ID the plugin authenticates as (registered on first use). rtcd-rs takes IDs
    /// starting with `rtcd-canary` for canaries: their calls are not live sessions (health,
    /// drain, placement).
    #[arg(long, default_value = CANARY_CLIENT_PREFIX)]
    pub client_id: String,
    /// Its auth key (at least 32 characters).
    #[arg(long, default_value = "rtcd-canary-auth-key-0123456789abcdef")]
    pub auth_key: String,
    /// Admin secret, to register when self-registration is off.
    #[arg(long)]
    pub admin_key: Option<String>,
    /// Which transports to try: udp, tcp or both (UDP first).
    #[arg(long, default_value = "both", value_parser = ["udp", "tcp", "both"])]
    pub transport: String,
    /// Seconds each attempt may take to connect.
    #[arg(long, default_value_t = 10.0)]
    pub timeout: f64,
    /// Local address the peer binds and offers; 0.0.0.0: the one the system routes the URL's
    /// host from.
    #[arg(long, default_value = "0.0.0.0")]
    pub bind: IpAddr,
}

/// One transport's outcome.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Attempt {
    /// `udp` or `tcp`.
    pub transport: String,
    /// ICE and DTLS completed.
    pub reachable: bool,
    /// Join to connected, ms.
    pub connect_ms: Option<f64>,
    /// The selected pair's STUN round trip, ms.
    pub rtt_ms: Option<f64>,
    /// The server candidate that won: `udp|tcp address:port`.
    pub candidate: Option<String>,
    /// Why it is not reachable.
    pub error: Option<String>,
}

/// The probe's report.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeReport {
    /// The URL probed.
    pub url: String,
    /// Every transport tried, in order.
    pub attempts: Vec<Attempt>,
}

impl ProbeReport {
    /// Every transport tried connected.
    pub fn ok(&self) -> bool {
        !self.attempts.is_empty() && self.attempts.iter().all(|a| a.reachable)
    }

    /// One line per attempt.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for a in &self.attempts {
            if a.reachable {
                out += &format!(
                    "{} {}: reachable, connected in {} ms, RTT {} ms, candidate {}\n",
                    self.url,
                    a.transport,
                    a.connect_ms.map_or("-".into(), |v| format!("{v:.0}")),
                    a.rtt_ms.map_or("-".into(), |v| format!("{v:.1}")),
                    a.candidate.as_deref().unwrap_or("-"),
                );
            } else {
                out += &format!(
                    "{} {}: UNREACHABLE: {}\n",
                    self.url,
                    a.transport,
                    a.error.as_deref().unwrap_or("ICE/DTLS did not complete")
                );
            }
        }
        out
    }
}

fn options(p: &ProbeOptions, tcp: bool) -> Options {
    Options {
        url: p.url.clone(),
        client_id: p.client_id.clone(),
        auth_key: p.auth_key.clone(),
        admin_key: p.admin_key.clone(),
        calls: 1,
        users_per_call: 1,
        unmuted: 1,
        screen: false,
        // Long enough for two peer-stats events after connecting.
        duration: 2.5,
        warmup: 0.0,
        ramp: 50.0,
        join_timeout: p.timeout,
        churn: 0.0,
        visit: 3.0,
        tcp_share: if tcp { 1.0 } else { 0.0 },
        bind: p.bind,
        server_pid: None,
        placement: false,
        peer_stats: true,
    }
}

/// The local address the system routes `url`'s host from (a connected UDP socket's; nothing is
/// sent).
async fn route_source(url: &str) -> Result<IpAddr> {
    let (host, port) = crate::placement::name_and_port(url)?;
    let addr = tokio::net::lookup_host((host.as_str(), port))
        .await
        .with_context(|| format!("resolving {host}"))?
        .next()
        .ok_or_else(|| anyhow!("{host} has no address"))?;
    let any: IpAddr = if addr.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let s = tokio::net::UdpSocket::bind((any, 0)).await?;
    s.connect(addr)
        .await
        .with_context(|| format!("no route to {addr}"))?;
    Ok(s.local_addr()?.ip())
}

/// Runs the probe; must be called inside a `LocalSet`.
pub async fn probe(p: &ProbeOptions) -> Result<ProbeReport> {
    let mut p = p.clone();
    if p.bind.is_unspecified() {
        p.bind = route_source(&p.url).await?;
    }
    let p = &p;
    let transports: &[bool] = match p.transport.as_str() {
        "udp" => &[false],
        "tcp" => &[true],
        _ => &[false, true],
    };
    let mut attempts = Vec::new();
    for &tcp in transports {
        let transport = if tcp { "tcp" } else { "udp" }.to_string();
        // An unusable API (unreachable, credentials refused) ends the probe: it is the same
        // for both transports.
        let r = run::run(&options(p, tcp)).await?;
        let j = r.joins.first();
        let connected = j.and_then(|j| j.connected_ns.map(|c| c.saturating_sub(j.joined_ns) as f64 / 1e6));
        attempts.push(Attempt {
            transport,
            reachable: connected.is_some(),
            connect_ms: connected,
            rtt_ms: j.and_then(|j| j.ice_rtt_ms),
            candidate: j.and_then(|j| j.remote_candidate.clone()),
            error: connected
                .is_none()
                .then(|| format!("ICE/DTLS did not complete within {} s", p.timeout)),
        });
    }
    Ok(ProbeReport {
        url: p.url.clone(),
        attempts,
    })
}
