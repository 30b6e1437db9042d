//! `[limits]`: the bounds that keep one hostile or broken client from taking the daemon's
//! resources (HTTP timeouts and connection caps, the WS send queue, hashing concurrency,
//! sessions per client, candidates per session, ICE-TCP connection caps), and the instance's
//! optional capacity (sessions, forwarded tracks, egress bitrate) that `/system` reports against
//! and joins are refused past. Not in rtcd, whose HTTP timeouts (read 30 s, write 60 s, idle
//! 30 s) are the defaults here.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsConfig {
    /// Time to read a request's headers (and, for a kept-alive connection, to start the next
    /// request) and its body.
    pub http_read_timeout: String,
    /// Time to handle a request and write its response.
    pub http_write_timeout: String,
    /// A kept-alive HTTP connection with no request in flight is closed after this long.
    pub http_idle_timeout: String,
    /// Open API connections (HTTP and WebSocket), in total.
    pub http_max_connections: i64,
    /// Open API connections from one source address (an IPv6 /64 counts as one address).
    pub http_max_connections_per_ip: i64,
    /// Messages queued for one plugin WebSocket before it counts as a slow consumer and is
    /// closed.
    pub ws_send_queue: i64,
    /// bcrypt computations at once (logins, registrations); 0 = half the usable cores, at
    /// least 1, so hashing never takes every core from the media engine.
    pub auth_max_concurrent_hashes: i64,
    /// Live sessions one client (one plugin registration) may hold.
    pub sessions_per_client: i64,
    /// Remote ICE candidates one session may add.
    pub candidates_per_session: i64,
    /// ICE-TCP connections that no session has accepted yet, in total.
    pub ice_tcp_max_unauthenticated: i64,
    /// ICE-TCP connections that no session has accepted yet, from one source address.
    pub ice_tcp_max_unauthenticated_per_ip: i64,
    /// ICE-TCP connections, accepted by a session or not, in total.
    pub ice_tcp_max_connections: i64,
    /// Capacity: live sessions this instance takes (0: no limit). A join past it gets `close`.
    pub max_sessions: i64,
    /// Capacity: tracks this instance forwards to viewers at once (0: no limit). Joins are
    /// refused while it is reached.
    pub max_forwarded_tracks: i64,
    /// Capacity: media bits per second this instance sends (0: no limit). Joins are refused
    /// while it is reached.
    pub max_egress_bitrate: i64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            http_read_timeout: "30s".into(),
            http_write_timeout: "60s".into(),
            http_idle_timeout: "30s".into(),
            http_max_connections: 10_000,
            http_max_connections_per_ip: 512,
            ws_send_queue: 1024,
            auth_max_concurrent_hashes: 0,
            sessions_per_client: 10_000,
            candidates_per_session: 50,
            ice_tcp_max_unauthenticated: 256,
            ice_tcp_max_unauthenticated_per_ip: 16,
            ice_tcp_max_connections: 10_000,
            max_sessions: 0,
            max_forwarded_tracks: 0,
            max_egress_bitrate: 0,
        }
    }
}

/// The `[limits]` durations and counts, parsed: what the daemon uses. Built from a validated
/// configuration; a value that still fails to parse falls back to its default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `http_read_timeout`.
    pub http_read: Duration,
    /// `http_write_timeout`.
    pub http_write: Duration,
    /// `http_idle_timeout`.
    pub http_idle: Duration,
    /// `http_max_connections`.
    pub http_connections: usize,
    /// `http_max_connections_per_ip`.
    pub http_connections_per_ip: usize,
    /// `ws_send_queue`.
    pub ws_send_queue: usize,
    /// `auth_max_concurrent_hashes`, resolved.
    pub hashes: usize,
    /// `sessions_per_client`.
    pub sessions_per_client: usize,
    /// `candidates_per_session`.
    pub candidates_per_session: usize,
    /// `ice_tcp_max_unauthenticated`.
    pub tcp_unauthenticated: usize,
    /// `ice_tcp_max_unauthenticated_per_ip`.
    pub tcp_unauthenticated_per_ip: usize,
    /// `ice_tcp_max_connections`.
    pub tcp_connections: usize,
    /// `max_sessions`, `max_forwarded_tracks`, `max_egress_bitrate`.
    pub capacity: Capacity,
}

/// The instance's capacity: `None` is no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capacity {
    /// `max_sessions`.
    pub sessions: Option<usize>,
    /// `max_forwarded_tracks`.
    pub forwarded_tracks: Option<usize>,
    /// `max_egress_bitrate`, bits per second.
    pub egress_bitrate: Option<u64>,
}

/// The largest capacity value accepted: 10¹² (a terabit per second).
pub(super) const MAX_CAPACITY: i64 = 1_000_000_000_000;

fn capacity(v: i64) -> Option<u64> {
    u64::try_from(v).ok().filter(|v| *v > 0)
}

impl Default for Limits {
    fn default() -> Self {
        LimitsConfig::default().resolve()
    }
}

fn count(v: i64, default: i64) -> usize {
    usize::try_from(if v > 0 { v } else { default }).unwrap_or(1)
}

fn duration(v: &str, default: &str) -> Duration {
    humantime::parse_duration(v)
        .or_else(|_| humantime::parse_duration(default))
        .unwrap_or(Duration::from_secs(30))
}

impl LimitsConfig {
    /// The parsed values.
    pub fn resolve(&self) -> Limits {
        let d = Self::default();
        let hashes = if self.auth_max_concurrent_hashes > 0 {
            count(self.auth_max_concurrent_hashes, 1)
        } else {
            (crate::shard::usable_cores() / 2).max(1)
        };
        Limits {
            http_read: duration(&self.http_read_timeout, &d.http_read_timeout),
            http_write: duration(&self.http_write_timeout, &d.http_write_timeout),
            http_idle: duration(&self.http_idle_timeout, &d.http_idle_timeout),
            http_connections: count(self.http_max_connections, d.http_max_connections),
            http_connections_per_ip: count(self.http_max_connections_per_ip, d.http_max_connections_per_ip),
            ws_send_queue: count(self.ws_send_queue, d.ws_send_queue),
            hashes,
            sessions_per_client: count(self.sessions_per_client, d.sessions_per_client),
            candidates_per_session: count(self.candidates_per_session, d.candidates_per_session),
            tcp_unauthenticated: count(self.ice_tcp_max_unauthenticated, d.ice_tcp_max_unauthenticated),
            tcp_unauthenticated_per_ip: count(
                self.ice_tcp_max_unauthenticated_per_ip,
                d.ice_tcp_max_unauthenticated_per_ip,
            ),
            tcp_connections: count(self.ice_tcp_max_connections, d.ice_tcp_max_connections),
            capacity: Capacity {
                sessions: capacity(self.max_sessions).and_then(|v| usize::try_from(v).ok()),
                forwarded_tracks: capacity(self.max_forwarded_tracks).and_then(|v| usize::try_from(v).ok()),
                egress_bitrate: capacity(self.max_egress_bitrate),
            },
        }
    }

    /// Every capacity key with its value, for validation (0 is no limit).
    pub(super) fn capacities(&self) -> [(&'static str, i64); 3] {
        [
            ("limits.max_sessions", self.max_sessions),
            ("limits.max_forwarded_tracks", self.max_forwarded_tracks),
            ("limits.max_egress_bitrate", self.max_egress_bitrate),
        ]
    }

    /// Every count key with its value, for validation.
    pub(super) fn counts(&self) -> [(&'static str, i64); 9] {
        [
            ("limits.http_max_connections", self.http_max_connections),
            (
                "limits.http_max_connections_per_ip",
                self.http_max_connections_per_ip,
            ),
            ("limits.ws_send_queue", self.ws_send_queue),
            ("limits.sessions_per_client", self.sessions_per_client),
            ("limits.candidates_per_session", self.candidates_per_session),
            (
                "limits.ice_tcp_max_unauthenticated",
                self.ice_tcp_max_unauthenticated,
            ),
            (
                "limits.ice_tcp_max_unauthenticated_per_ip",
                self.ice_tcp_max_unauthenticated_per_ip,
            ),
            ("limits.ice_tcp_max_connections", self.ice_tcp_max_connections),
            (
                "limits.auth_max_concurrent_hashes",
                self.auth_max_concurrent_hashes,
            ),
        ]
    }

    /// Every duration key with its value, for validation.
    pub(super) fn durations(&self) -> [(&'static str, &str); 3] {
        [
            ("limits.http_read_timeout", &self.http_read_timeout),
            ("limits.http_write_timeout", &self.http_write_timeout),
            ("limits.http_idle_timeout", &self.http_idle_timeout),
        ]
    }
}

/// The key a source address is limited under: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber usually holds a whole /64). IPv4-mapped IPv6 addresses count as IPv4.
pub fn ip_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    use std::net::{IpAddr, Ipv6Addr};
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    #[test]
    fn defaults_are_rtcds_timeouts() {
        let l = Limits::default();
        assert_eq!(l.http_read, Duration::from_secs(30));
        assert_eq!(l.http_write, Duration::from_secs(60));
        assert_eq!(l.http_idle, Duration::from_secs(30));
        assert!(l.hashes >= 1);
        assert_eq!(
            l.capacity,
            Capacity::default(),
            "no capacity limit unless configured"
        );
    }

    #[test]
    fn capacity_zero_is_no_limit() {
        let c = LimitsConfig {
            max_sessions: 200,
            max_forwarded_tracks: 0,
            max_egress_bitrate: 500_000_000,
            ..LimitsConfig::default()
        }
        .resolve()
        .capacity;
        assert_eq!(c.sessions, Some(200));
        assert_eq!(c.forwarded_tracks, None);
        assert_eq!(c.egress_bitrate, Some(500_000_000));
    }

    #[test]
    fn ipv6_addresses_share_a_key_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(ip_key(a), ip_key(b));
        assert_ne!(ip_key(a), ip_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(ip_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
