//! Which addresses to listen on and which to advertise: rtcd's `ice_address_udp` selection,
//! `ice_host_override` (an IP, a hostname, or `external/internal` pairs: pion's NAT 1:1) and
//! `ice_host_port_override`. Pure, apart from [`interface_ips`].

use std::{collections::HashMap, net::IpAddr};

/// One listening address and what host candidates advertise for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The local IP the socket binds.
    pub local: IpAddr,
    /// The IP advertised in candidates.
    pub advertised: IpAddr,
    /// Whether `advertised` came from an override (only those get a port override, as in rtcd).
    pub external: bool,
}

/// The machine's interface addresses: IPv4, plus global IPv6 when `ipv6`.
pub fn interface_ips(ipv6: bool) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|i| i.ip())
        .filter(|ip| match ip {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => ipv6 && is_global_v6(v6),
        })
        .collect();
    ips.sort();
    ips.dedup();
    ips
}

fn is_global_v6(ip: &std::net::Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    // 2000::/3 is global unicast.
    (first & 0xe000) == 0x2000
}

/// `ice_address_udp`/`tcp`: the listed IPs, or every interface IP when empty.
pub fn select_local_ips(configured: &str, ipv6: bool, interfaces: &[IpAddr]) -> Vec<IpAddr> {
    if configured.trim().is_empty() {
        return interfaces.to_vec();
    }
    configured
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|ip: &IpAddr| ipv6 || ip.is_ipv4())
        .collect()
}

/// What `ice_host_override` says, once a hostname is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostOverride {
    /// Not set.
    None,
    /// One public address (a literal IP or a resolved hostname).
    Single(IpAddr),
    /// `external/internal` pairs.
    Pairs(Vec<(IpAddr, IpAddr)>),
}

impl HostOverride {
    /// Parses a validated value; a hostname is returned as `Err(hostname)` for the caller to
    /// resolve.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(Self::None);
        }
        if value.contains('/') {
            let pairs = value
                .split(',')
                .filter_map(|p| {
                    let (e, i) = p.trim().split_once('/')?;
                    Some((e.trim().parse().ok()?, i.trim().parse().ok()?))
                })
                .collect();
            return Ok(Self::Pairs(pairs));
        }
        value.parse().map(Self::Single).map_err(|_| value.to_string())
    }
}

/// rtcd's mapping (pion NAT 1:1, host candidates): a single override maps the only local IP,
/// or else every same-family non-loopback IP; loopback maps to itself. Pairs map their
/// internal IP. Unmapped IPs advertise themselves.
pub fn bindings(locals: &[IpAddr], host: &HostOverride) -> Vec<Binding> {
    let same = |a: &IpAddr, b: &IpAddr| a.is_ipv4() == b.is_ipv4();
    locals
        .iter()
        .map(|local| {
            let mapped = match host {
                HostOverride::None => None,
                HostOverride::Single(ext) => {
                    if locals.len() == 1 || (!local.is_loopback() && same(local, ext)) {
                        Some(*ext)
                    } else {
                        None
                    }
                }
                HostOverride::Pairs(pairs) => pairs.iter().find(|(_, int)| int == local).map(|(ext, _)| *ext),
            };
            match mapped {
                Some(ext) if !(local.is_loopback() && locals.len() > 1) => Binding {
                    local: *local,
                    advertised: ext,
                    external: true,
                },
                _ => Binding {
                    local: *local,
                    advertised: *local,
                    external: false,
                },
            }
        })
        .collect()
}

/// `ice_host_port_override`: a single port, or `localIP/port,…` where the entry for one of
/// this machine's local IPs applies. Returns the port for external candidates, if any.
pub fn port_override(value: &str, locals: &[IpAddr]) -> Option<u16> {
    let value = value.trim();
    if value.is_empty() {
        return None;
    }
    if let Ok(p) = value.parse::<u16>() {
        return Some(p);
    }
    let map: HashMap<IpAddr, u16> = value
        .split(',')
        .filter_map(|pair| {
            let (ip, port) = pair.trim().split_once('/')?;
            Some((ip.trim().parse().ok()?, port.trim().parse().ok()?))
        })
        .collect();
    locals.iter().find_map(|ip| map.get(ip).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn single_override_maps_the_only_ip() {
        let b = bindings(&[ip("10.0.0.5")], &HostOverride::Single(ip("8.8.8.8")));
        assert_eq!(
            b,
            [Binding {
                local: ip("10.0.0.5"),
                advertised: ip("8.8.8.8"),
                external: true
            }]
        );
    }

    #[test]
    fn single_override_keeps_loopback_and_other_families() {
        let locals = [ip("127.0.0.1"), ip("10.0.0.5"), ip("2001:db8::1")];
        let b = bindings(&locals, &HostOverride::Single(ip("8.8.8.8")));
        assert_eq!(b[0].advertised, ip("127.0.0.1"));
        assert_eq!(b[1].advertised, ip("8.8.8.8"));
        assert_eq!(b[2].advertised, ip("2001:db8::1"));
    }

    #[test]
    fn pairs_map_their_internal_ip() {
        let host = HostOverride::parse("8.8.8.8/10.0.2.2,8.8.4.4/10.0.2.1").unwrap();
        let b = bindings(&[ip("10.0.2.1"), ip("10.0.2.9")], &host);
        assert_eq!(b[0].advertised, ip("8.8.4.4"));
        assert!(b[0].external);
        assert_eq!(b[1].advertised, ip("10.0.2.9"));
        assert!(!b[1].external);
    }

    #[test]
    fn hostnames_are_left_to_resolve() {
        assert_eq!(
            HostOverride::parse("rtcd.example.com"),
            Err("rtcd.example.com".into())
        );
        assert_eq!(HostOverride::parse(""), Ok(HostOverride::None));
    }

    #[test]
    fn port_overrides() {
        let locals = [ip("10.0.0.2")];
        assert_eq!(port_override("30443", &locals), Some(30443));
        assert_eq!(
            port_override("10.0.0.1/30443,10.0.0.2/30444", &locals),
            Some(30444)
        );
        assert_eq!(port_override("10.0.0.1/30443", &locals), None);
        assert_eq!(port_override("", &locals), None);
    }

    #[test]
    fn configured_addresses_win_over_interfaces() {
        let ifs = [ip("127.0.0.1"), ip("10.0.0.1")];
        assert_eq!(select_local_ips("", false, &ifs), ifs);
        assert_eq!(select_local_ips("10.0.0.1", false, &ifs), [ip("10.0.0.1")]);
        assert_eq!(
            select_local_ips("10.0.0.1, 2001:db8::1", false, &ifs),
            [ip("10.0.0.1")]
        );
    }
}
