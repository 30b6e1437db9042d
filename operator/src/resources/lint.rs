//! Address linting: what a node's rtcd advertises, checked before it takes traffic. A loopback,
//! unspecified, link-local or multicast address is never reachable by clients; a private one
//! (RFC 1918, shared CGNAT space, IPv6 ULA) is unreachable from the internet; a hostname must
//! resolve; and an address that belongs to another node is a mapping mistake (a `static` entry
//! or an annotation copied from the wrong node). Pure: hostname lookups are done by the caller.

use std::{collections::BTreeMap, net::IpAddr};

/// One finding about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A reason constant, CamelCase.
    pub reason: &'static str,
    /// The node.
    pub node: String,
    /// The advertised value.
    pub value: String,
    /// What is wrong, naming the node and the value.
    pub message: String,
}

/// Reasons.
pub mod reasons {
    /// Loopback, unspecified, link-local or multicast.
    pub const UNREACHABLE_ADDRESS: &str = "UnreachableAddress";
    /// Private while clients come from the internet.
    pub const PRIVATE_ADDRESS: &str = "PrivateAddress";
    /// A hostname that does not resolve.
    pub const UNRESOLVABLE_HOSTNAME: &str = "UnresolvableHostname";
    /// Another node's own address.
    pub const OTHER_NODES_ADDRESS: &str = "OtherNodesAddress";
}

/// What kind of address `ip` is, if it is one clients cannot use: `Some(kind)`.
pub fn unreachable_kind(ip: IpAddr) -> Option<&'static str> {
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80 => Some("a link-local address"),
        _ => None,
    }
}

/// Whether `ip` is private: RFC 1918, 100.64.0.0/10 (CGNAT), fc00::/7 (ULA).
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private() || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => (v6.segments()[0] & 0xfe00) == 0xfc00,
    }
}

/// The advertised host of an `ice_host_override` value: `external/internal` pairs advertise the
/// external side.
pub fn advertised_host(host_override: &str) -> &str {
    host_override.split('/').next().unwrap_or(host_override).trim()
}

/// Lints node `node`'s advertised `host_override`. `internet` is whether clients come from the
/// internet (`iceHostOverride.clientNetwork: Internet`); `resolved` is the lookup of a hostname
/// (`None` while not done yet, when nothing is said about it); `owners` maps every node address
/// in the cluster to its node.
pub fn lint(
    node: &str,
    host_override: &str,
    internet: bool,
    resolved: Option<&Result<Vec<IpAddr>, String>>,
    owners: &BTreeMap<String, String>,
) -> Vec<Finding> {
    let value = advertised_host(host_override).to_string();
    let finding = |reason, message: String| Finding {
        reason,
        node: node.to_string(),
        value: value.clone(),
        message,
    };
    let mut out = Vec::new();
    let ips: Vec<IpAddr> = match value.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) => match resolved {
            None => Vec::new(),
            Some(Err(e)) => {
                out.push(finding(
                    reasons::UNRESOLVABLE_HOSTNAME,
                    format!("{node} advertises {value}, a hostname that does not resolve ({e})"),
                ));
                Vec::new()
            }
            Some(Ok(ips)) if ips.is_empty() => {
                out.push(finding(
                    reasons::UNRESOLVABLE_HOSTNAME,
                    format!("{node} advertises {value}, a hostname with no address"),
                ));
                Vec::new()
            }
            Some(Ok(ips)) => ips.clone(),
        },
    };
    let via = |ip: IpAddr| {
        if value.parse::<IpAddr>().is_ok() {
            String::new()
        } else {
            format!(" (which resolves to {ip})")
        }
    };
    for ip in ips {
        if let Some(kind) = unreachable_kind(ip) {
            out.push(finding(
                reasons::UNREACHABLE_ADDRESS,
                format!("{node} advertises {value}{}, {kind} no client can reach", via(ip)),
            ));
        } else if internet && is_private(ip) {
            out.push(finding(
                reasons::PRIVATE_ADDRESS,
                format!(
                    "{node} advertises {value}{}, a private address, to clients on the internet (set iceHostOverride to the node's public address, or clientNetwork: Private if clients share this network)",
                    via(ip)
                ),
            ));
        }
        if let Some(owner) = owners.get(&ip.to_string()).filter(|o| o.as_str() != node) {
            out.push(finding(
                reasons::OTHER_NODES_ADDRESS,
                format!(
                    "{node} advertises {value}{}, which is node {owner}'s address",
                    via(ip)
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owners() -> BTreeMap<String, String> {
        BTreeMap::from([
            ("203.0.113.1".to_string(), "node-a".to_string()),
            ("10.0.0.1".to_string(), "node-a".to_string()),
            ("203.0.113.2".to_string(), "node-b".to_string()),
        ])
    }

    #[test]
    fn a_public_own_address_is_fine() {
        assert!(lint("node-a", "203.0.113.1/10.0.0.1", true, None, &owners()).is_empty());
    }

    #[test]
    fn loopback_and_link_local_are_never_reachable() {
        for v in [
            "127.0.0.1",
            "0.0.0.0",
            "169.254.1.2",
            "::1",
            "fe80::1",
            "224.0.0.5",
        ] {
            let f = lint("node-a", v, false, None, &owners());
            assert_eq!(f.len(), 1, "{v}: {f:?}");
            assert_eq!(f[0].reason, reasons::UNREACHABLE_ADDRESS);
            assert!(
                f[0].message.contains("node-a") && f[0].message.contains(v),
                "{}",
                f[0].message
            );
        }
    }

    #[test]
    fn private_addresses_only_matter_for_internet_clients() {
        for v in ["10.1.2.3", "172.16.0.9", "192.168.1.1", "100.64.0.1", "fd00::1"] {
            let f = lint("node-a", v, true, None, &owners());
            assert_eq!(f[0].reason, reasons::PRIVATE_ADDRESS, "{v}");
            assert!(
                f[0].message
                    .starts_with(&format!("node-a advertises {v}, a private address"))
            );
            assert!(
                lint("node-a", v, false, None, &owners()).is_empty(),
                "{v} on a private network"
            );
        }
        assert!(
            lint("node-a", "100.128.0.1", true, None, &owners()).is_empty(),
            "outside CGNAT space"
        );
    }

    #[test]
    fn hostnames_must_resolve_and_are_judged_by_their_addresses() {
        assert!(
            lint("node-a", "rtc.example.com", true, None, &owners()).is_empty(),
            "not looked up yet"
        );
        let nx: Result<Vec<IpAddr>, String> = Err("no such host".into());
        let f = lint("node-a", "rtc.example.com", true, Some(&nx), &owners());
        assert_eq!(f[0].reason, reasons::UNRESOLVABLE_HOSTNAME);
        assert_eq!(
            f[0].message,
            "node-a advertises rtc.example.com, a hostname that does not resolve (no such host)"
        );
        let private: Result<Vec<IpAddr>, String> = Ok(vec!["10.9.9.9".parse().unwrap()]);
        let f = lint("node-a", "rtc.example.com", true, Some(&private), &owners());
        assert_eq!(f[0].reason, reasons::PRIVATE_ADDRESS);
        assert!(
            f[0].message
                .contains("rtc.example.com (which resolves to 10.9.9.9)")
        );
    }

    #[test]
    fn another_node_s_address_is_a_mapping_mistake() {
        let f = lint("node-a", "203.0.113.2", true, None, &owners());
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].reason, reasons::OTHER_NODES_ADDRESS);
        assert_eq!(
            f[0].message,
            "node-a advertises 203.0.113.2, which is node node-b's address"
        );
    }
}
