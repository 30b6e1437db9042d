//! Services: the API Service (the Calls plugin's "RTCD Service URL"), the headless Service whose
//! DNS lists only ready instances, and per-node media LoadBalancers.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Service, ServicePort, ServiceSpec},
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::ResourceExt;

use super::{LABEL_NODE, meta, node_label_value, selector};
use crate::crd::RtcdCluster;

/// Name of the API Service.
pub fn api_service_name(cr: &RtcdCluster) -> String {
    cr.name_any()
}

/// Name of the headless Service.
pub fn hosts_service_name(cr: &RtcdCluster) -> String {
    format!("{}-hosts", cr.name_any())
}

/// Extra label telling the API Service apart (the ServiceMonitor selects it).
pub fn api_service_selector(cr: &RtcdCluster) -> BTreeMap<String, String> {
    BTreeMap::from([(
        "rtcd-rs.dev/service".to_string(),
        format!("{}-api", cr.name_any()),
    )])
}

fn sport(name: &str, port: u16, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        target_port: Some(IntOrString::Int(i32::from(port))),
        protocol: Some(protocol.into()),
        ..ServicePort::default()
    }
}

/// ClusterIP Service on the API port.
pub fn api_service(cr: &RtcdCluster) -> Service {
    let mut m = meta(cr, api_service_name(cr));
    m.labels
        .get_or_insert_with(BTreeMap::new)
        .extend(api_service_selector(cr));
    m.annotations = (!cr.spec.api.annotations.is_empty()).then(|| cr.spec.api.annotations.clone());
    Service {
        metadata: m,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(cr)),
            ports: Some(vec![sport("api", cr.spec.config.api_port, "TCP")]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Headless Service: one A record per *ready* rtcd pod (its node's IP), with the API and media
/// ports. `publishNotReadyAddresses: false`, so draining and unhealthy instances drop out.
pub fn hosts_service(cr: &RtcdCluster) -> Service {
    let mut m = meta(cr, hosts_service_name(cr));
    m.annotations = (!cr.spec.api.annotations.is_empty()).then(|| cr.spec.api.annotations.clone());
    let rtc = &cr.spec.config.rtc;
    Service {
        metadata: m,
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector(cr)),
            publish_not_ready_addresses: Some(false),
            ports: Some(vec![
                sport("api", cr.spec.config.api_port, "TCP"),
                sport("media-udp", rtc.udp_port, "UDP"),
                sport("media-tcp", rtc.tcp_port, "TCP"),
            ]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Names of `node`'s media Services: one (mixed UDP+TCP) or two (`-udp`, `-tcp`).
pub fn media_service_names(cr: &RtcdCluster, node: &str) -> Vec<String> {
    let base = super::dns_label(&format!("{}-media", cr.name_any()), node);
    let mixed = cr
        .spec
        .media
        .load_balancer
        .as_ref()
        .is_none_or(|l| l.mixed_protocol);
    if mixed {
        vec![base]
    } else {
        // Leave room for the suffix inside 63 characters.
        let short = if base.len() > 59 {
            base[..59].trim_end_matches('-').to_string()
        } else {
            base
        };
        vec![format!("{short}-udp"), format!("{short}-tcp")]
    }
}

/// `node`'s media LoadBalancer Service(s), selecting only that node's pod, with
/// `externalTrafficPolicy: Local` so the client address survives and no hop crosses nodes.
pub fn media_services(cr: &RtcdCluster, node: &str) -> Vec<Service> {
    let lb = cr.spec.media.load_balancer.clone().unwrap_or_default();
    let rtc = &cr.spec.config.rtc;
    let names = media_service_names(cr, node);
    let port_sets: Vec<Vec<ServicePort>> = if names.len() == 1 {
        vec![vec![
            sport("media-udp", rtc.udp_port, "UDP"),
            sport("media-tcp", rtc.tcp_port, "TCP"),
        ]]
    } else {
        vec![
            vec![sport("media-udp", rtc.udp_port, "UDP")],
            vec![sport("media-tcp", rtc.tcp_port, "TCP")],
        ]
    };
    let mut sel = selector(cr);
    sel.insert(LABEL_NODE.into(), node_label_value(node));
    names
        .into_iter()
        .zip(port_sets)
        .map(|(name, ports)| {
            let mut m = meta(cr, name);
            m.labels
                .get_or_insert_with(BTreeMap::new)
                .insert(LABEL_NODE.into(), node_label_value(node));
            m.annotations = Some({
                let mut a = lb.annotations.clone();
                a.insert(super::ANN_NODE.into(), node.into());
                a
            });
            Service {
                metadata: m,
                spec: Some(ServiceSpec {
                    type_: Some("LoadBalancer".into()),
                    external_traffic_policy: Some("Local".into()),
                    load_balancer_source_ranges: (!lb.source_ranges.is_empty())
                        .then(|| lb.source_ranges.clone()),
                    load_balancer_class: lb.class.clone(),
                    selector: Some(sel.clone()),
                    ports: Some(ports),
                    ..ServiceSpec::default()
                }),
                status: None,
            }
        })
        .collect()
}

/// The first ingress IP or hostname of a LoadBalancer Service.
pub fn ingress_address(svc: &Service) -> Option<String> {
    let ing = svc
        .status
        .as_ref()?
        .load_balancer
        .as_ref()?
        .ingress
        .as_ref()?
        .first()?;
    ing.ip
        .clone()
        .filter(|s| !s.is_empty())
        .or_else(|| ing.hostname.clone().filter(|s| !s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crd::{LoadBalancer, MediaMode},
        resources::nodes::tests::cr,
    };

    #[test]
    fn headless_lists_ready_only_with_media_ports() {
        let s = hosts_service(&cr());
        let spec = s.spec.expect("spec");
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(false));
        let ports: Vec<(i32, String)> = spec
            .ports
            .expect("ports")
            .into_iter()
            .map(|p| (p.port, p.protocol.unwrap_or_default()))
            .collect();
        assert_eq!(
            ports,
            vec![(8045, "TCP".into()), (8443, "UDP".into()), (8443, "TCP".into())]
        );
    }

    #[test]
    fn per_node_lb_mixed_or_split() {
        let mut c = cr();
        c.spec.media.mode = MediaMode::LoadBalancer;
        c.spec.media.load_balancer = Some(LoadBalancer {
            source_ranges: vec!["192.0.2.0/24".into()],
            mixed_protocol: true,
            ..LoadBalancer::default()
        });
        let one = media_services(&c, "node-a");
        assert_eq!(one.len(), 1);
        let spec = one[0].spec.as_ref().expect("spec");
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
        assert_eq!(spec.selector.as_ref().expect("sel")[LABEL_NODE], "node-a");
        assert_eq!(spec.ports.as_ref().expect("p").len(), 2);
        c.spec.media.load_balancer.as_mut().expect("lb").mixed_protocol = false;
        let two = media_services(&c, "node-a");
        let names: Vec<String> = two.iter().map(|s| s.name_any()).collect();
        assert_eq!(names, vec!["rtcd-media-node-a-udp", "rtcd-media-node-a-tcp"]);
    }
}
