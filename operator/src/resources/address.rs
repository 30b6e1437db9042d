//! The address each node's rtcd advertises (rtcd's `ice_host_override`) and its NAT port
//! (`ice_host_port_override`), from the CR's `iceHostOverride` rules or the node's LoadBalancer.

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::nodes;
use crate::crd::{MediaMode, RtcdCluster};

/// What the pod of one node advertises.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// Value of `RTCD_RTC_ICEHOSTOVERRIDE`.
    pub host_override: String,
    /// Value of `RTCD_RTC_ICEHOSTPORTOVERRIDE`, if any.
    pub port_override: Option<String>,
    /// Where the address came from, for status and events.
    pub source: String,
}

/// Why no address could be chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressError {
    /// None of the configured sources gave an address.
    Missing(String),
    /// The node's LoadBalancer Service has no ingress yet.
    WaitingForLoadBalancer,
}

impl std::fmt::Display for AddressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing(tried) => write!(f, "no address found (tried {tried})"),
            Self::WaitingForLoadBalancer => f.write_str("waiting for the LoadBalancer's ingress address"),
        }
    }
}

/// Chooses `node`'s advertised address. `lb_ingress` is the ingress IP or hostname of the
/// node's media LoadBalancer Service (LoadBalancer mode only).
pub fn advertised(
    cr: &RtcdCluster,
    node: &Node,
    lb_ingress: Option<&str>,
) -> Result<Advertised, AddressError> {
    let rules = &cr.spec.ice_host_override;
    let name = node.name_any();
    let internal = nodes::address(node, "InternalIP");
    let (address, source) = if cr.spec.media.mode == MediaMode::LoadBalancer {
        match lb_ingress {
            Some(a) if !a.is_empty() => (a.to_string(), "LoadBalancer ingress".to_string()),
            _ => return Err(AddressError::WaitingForLoadBalancer),
        }
    } else if let Some(a) = rules.static_addresses.get(&name) {
        (a.clone(), "static map".to_string())
    } else if let Some(a) = rules
        .annotation
        .as_ref()
        .and_then(|k| node.annotations().get(k))
        .filter(|a| !a.trim().is_empty())
    {
        (
            a.trim().to_string(),
            format!("annotation {}", rules.annotation.as_deref().unwrap_or("")),
        )
    } else {
        let mut order = vec![rules.node_address];
        order.extend(
            rules
                .fallback
                .iter()
                .copied()
                .filter(|t| *t != rules.node_address),
        );
        let found = order
            .iter()
            .find_map(|t| nodes::address(node, t.as_str()).map(|a| (a, t.as_str().to_string())));
        match found {
            Some(f) => f,
            None => {
                let mut tried: Vec<String> = Vec::new();
                if rules.static_addresses.contains_key(&name) {
                    tried.push("static map".into());
                }
                if let Some(k) = &rules.annotation {
                    tried.push(format!("annotation {k}"));
                }
                tried.extend(order.iter().map(|t| t.as_str().to_string()));
                return Err(AddressError::Missing(tried.join(", ")));
            }
        }
    };
    // A pair `external/internal` pins the mapping to the node's own interface, so a node with
    // several interfaces does not advertise the public address for every one of them. Pairs
    // need IPs on both sides; a hostname is passed as is.
    let host_override = match &internal {
        Some(int) if address.parse::<std::net::IpAddr>().is_ok() && *int != address => {
            format!("{address}/{int}")
        }
        _ => address,
    };
    let port = rules
        .port_override
        .as_ref()
        .and_then(|p| p.nodes.get(&name).copied().or(p.port));
    let port_override = match (port, internal) {
        (Some(port), Some(int)) => Some(format!("{int}/{port}")),
        (Some(port), None) => Some(port.to_string()),
        (None, _) => None,
    };
    Ok(Advertised {
        host_override,
        port_override,
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::{
        crd::{NodeAddressType, PortOverride},
        resources::nodes::tests::{cr, node},
    };

    #[test]
    fn external_ip_first_then_fallback() {
        let c = cr();
        let a = advertised(&c, &node("a", "10.0.0.1", Some("203.0.113.1")), None).expect("addr");
        assert_eq!(a.host_override, "203.0.113.1/10.0.0.1");
        assert_eq!(a.source, "ExternalIP");
        assert_eq!(a.port_override, None);
        let b = advertised(&c, &node("b", "10.0.0.2", None), None).expect("fallback");
        assert_eq!(b.host_override, "10.0.0.2", "InternalIP needs no pair");
        assert_eq!(b.source, "InternalIP");
    }

    #[test]
    fn no_fallback_means_missing() {
        let mut c = cr();
        c.spec.ice_host_override.fallback.clear();
        c.spec.ice_host_override.annotation = Some("example.com/public-ip".into());
        let err = advertised(&c, &node("a", "10.0.0.1", None), None).expect_err("missing");
        assert_eq!(
            err,
            AddressError::Missing("annotation example.com/public-ip, ExternalIP".into())
        );
    }

    #[test]
    fn static_beats_annotation_beats_node_address() {
        let mut c = cr();
        c.spec.ice_host_override.annotation = Some("example.com/public-ip".into());
        let mut n = node("a", "10.0.0.1", Some("203.0.113.1"));
        n.metadata.annotations = Some(BTreeMap::from([(
            "example.com/public-ip".to_string(),
            "198.51.100.7".to_string(),
        )]));
        assert_eq!(
            advertised(&c, &n, None).expect("a").host_override,
            "198.51.100.7/10.0.0.1"
        );
        c.spec.ice_host_override.static_addresses =
            BTreeMap::from([("a".to_string(), "rtc.example.com".to_string())]);
        let a = advertised(&c, &n, None).expect("a");
        assert_eq!(a.host_override, "rtc.example.com", "hostnames are not paired");
        assert_eq!(a.source, "static map");
    }

    #[test]
    fn external_dns_and_port_override() {
        let mut c = cr();
        c.spec.ice_host_override.node_address = NodeAddressType::ExternalDNS;
        c.spec.ice_host_override.port_override = Some(PortOverride {
            port: Some(30443),
            nodes: BTreeMap::from([("b".to_string(), 30444)]),
        });
        let mut n = node("a", "10.0.0.1", None);
        n.status.as_mut().expect("s").addresses.as_mut().expect("a").push(
            k8s_openapi::api::core::v1::NodeAddress {
                type_: "ExternalDNS".into(),
                address: "a.nodes.example.com".into(),
            },
        );
        let a = advertised(&c, &n, None).expect("a");
        assert_eq!(a.host_override, "a.nodes.example.com");
        assert_eq!(a.port_override.as_deref(), Some("10.0.0.1/30443"));
        let b = advertised(&c, &node("b", "10.0.0.2", None), None).expect("b");
        assert_eq!(b.port_override.as_deref(), Some("10.0.0.2/30444"));
    }

    #[test]
    fn load_balancer_mode_waits_for_ingress() {
        let mut c = cr();
        c.spec.media.mode = MediaMode::LoadBalancer;
        let n = node("a", "10.0.0.1", Some("203.0.113.1"));
        assert_eq!(
            advertised(&c, &n, None),
            Err(AddressError::WaitingForLoadBalancer)
        );
        let a = advertised(&c, &n, Some("192.0.2.50")).expect("lb");
        assert_eq!(a.host_override, "192.0.2.50/10.0.0.1");
        assert_eq!(a.source, "LoadBalancer ingress");
    }
}
