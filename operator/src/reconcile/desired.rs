//! Phase 4, what the cluster should look like, pure: `desired = f(spec, observed)`. From the
//! spec, the Secrets' outcome and what the caches hold (Nodes, the cluster's pods and media
//! Services) at a given time: which node gets which pod, which pods stay as they are, which media
//! Services must exist, the node triage, and why a node has no pod.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::{
    api::core::v1::{Node, Pod, Service},
    jiff::Timestamp,
};
use kube::ResourceExt;

use super::{problem, secrets::Resolved};
use crate::{
    crd::{MediaMode, RtcdCluster},
    disruption::{self, NodeState, Triage},
    resources::{
        ANN_NODE,
        address::{self, AddressError},
        nodes, pod, services,
    },
    status::{Problem, reasons},
};

/// The outcome.
#[derive(Debug, Default)]
pub(super) struct Desired {
    /// Node → the pod it should run.
    pub pods: BTreeMap<String, Pod>,
    /// Nodes whose existing pod stays as it is, though none is desired.
    pub keep: BTreeSet<String>,
    /// Node → its advertised address, or why it has none (for status).
    pub addresses: BTreeMap<String, Result<String, String>>,
    /// The media Services that must exist (LoadBalancer mode).
    pub media: Vec<Service>,
    /// The node triage.
    pub triage: Triage,
    /// Problems found (reason, node, detail).
    pub problems: Vec<Problem>,
    /// Work in progress found.
    pub progress: Vec<Problem>,
}

/// `desired = f(spec, observed)`: `nodes` every Node, `pods` and `media` this cluster's;
/// `guard_lifted` when the partition guard last turned off (its condition's transition).
pub(super) fn desired(
    cr: &RtcdCluster,
    secrets: &Resolved,
    nodes: &[Node],
    pods: &[Pod],
    media: &[Service],
    now: Timestamp,
    guard_lifted: Option<Timestamp>,
) -> Desired {
    let states: Vec<(String, NodeState)> = nodes
        .iter()
        .map(|n| (n.name_any(), nodes::state(cr, n, now)))
        .collect();
    let pod_nodes: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.annotations().get(ANN_NODE).cloned())
        .collect();
    let policy = disruption::Policy {
        grace_secs: cr.spec.node_trouble.not_ready_grace_seconds,
        partition_percent: cr.spec.node_trouble.partition_threshold_percent,
        since_guard_lifted: guard_lifted.map(|t| now.duration_since(t).as_secs().max(0)),
    };
    let mut d = Desired {
        triage: disruption::triage(&states, &pod_nodes, policy),
        ..Desired::default()
    };
    for (node, (name, state)) in nodes.iter().zip(&states) {
        let name = name.clone();
        match state {
            NodeState::Eligible => {}
            NodeState::NotSelected => continue,
            NodeState::NotReady { .. } => {
                let why = d
                    .triage
                    .held
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| "node is not Ready".into());
                if d.triage.held.contains_key(&name) {
                    d.keep.insert(name.clone());
                    if pod_nodes.contains(&name) {
                        d.problems
                            .push(problem(reasons::NODE_NOT_READY, &name, why.clone()));
                    }
                }
                d.addresses.insert(name, Err(why));
                continue;
            }
            NodeState::NoNewPods(why) => {
                d.keep.insert(name.clone());
                d.addresses.insert(name, Err(why.clone()));
                continue;
            }
            NodeState::Ineligible(why) => {
                d.addresses.insert(name, Err(why.clone()));
                continue;
            }
        }
        let lb_ingress = if cr.spec.media.mode == MediaMode::LoadBalancer {
            let want = services::media_services(cr, &name);
            // The first Service's ingress, once the load balancer has one (its status changes
            // reach the watch cache and trigger the next pass).
            let ingress = want.first().and_then(|w| {
                media
                    .iter()
                    .find(|m| m.name_any() == w.name_any())
                    .and_then(services::ingress_address)
            });
            d.media.extend(want);
            ingress
        } else {
            None
        };
        match address::advertised(cr, node, lb_ingress.as_deref()) {
            Ok(adv) => {
                d.addresses.insert(name.clone(), Ok(adv.host_override.clone()));
                d.pods.insert(
                    name.clone(),
                    pod::pod(cr, &name, &adv, &secrets.credentials, &secrets.clients_hash),
                );
            }
            Err(e) => {
                let reason = match e {
                    AddressError::Missing(_) => reasons::ADDRESS_MISSING,
                    AddressError::WaitingForLoadBalancer => reasons::WAITING_FOR_LOAD_BALANCER,
                };
                let p = problem(reason, &name, e.to_string());
                if reason == reasons::WAITING_FOR_LOAD_BALANCER {
                    d.progress.push(p);
                } else {
                    d.problems.push(p);
                }
                d.addresses.insert(name.clone(), Err(e.to_string()));
                d.keep.insert(name);
            }
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{crd::SecretKeyRef, resources::nodes::tests::node};

    fn resolved() -> Resolved {
        Resolved {
            credentials: SecretKeyRef {
                name: "admin".into(),
                key: "k".into(),
            },
            admin_key: String::new(),
            clients_hash: String::new(),
        }
    }

    fn cluster(spec: serde_json::Value) -> RtcdCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "rtcd-rs.dev/v1alpha1", "kind": "RtcdCluster",
            "metadata": {"name": "calls", "namespace": "ns", "uid": "u"}, "spec": spec,
        }))
        .expect("cluster")
    }

    #[test]
    fn the_same_observation_gives_the_same_pods_and_a_node_without_an_address_keeps_its_pod() {
        let cr = cluster(serde_json::json!({}));
        let nodes = [node("a", "10.0.0.1", Some("203.0.113.1")), node("b", "", None)];
        let now = Timestamp::now();
        let one = desired(&cr, &resolved(), &nodes, &[], &[], now, None);
        let two = desired(&cr, &resolved(), &nodes, &[], &[], now, None);
        assert_eq!(one.pods.keys().collect::<Vec<_>>(), ["a"]);
        assert_eq!(one.pods, two.pods, "pure: same input, same pods");
        assert!(one.keep.contains("b") && one.problems.iter().any(|p| p.reason == reasons::ADDRESS_MISSING));
        assert!(one.media.is_empty());
    }

    #[test]
    fn load_balancer_mode_waits_for_the_observed_ingress() {
        let cr = cluster(serde_json::json!({"media": {"mode": "LoadBalancer"}}));
        let nodes = [node("a", "10.0.0.1", None)];
        let now = Timestamp::now();
        let d = desired(&cr, &resolved(), &nodes, &[], &[], now, None);
        assert!(
            d.pods.is_empty() && !d.media.is_empty(),
            "no ingress yet: no pod, the Service wanted"
        );
        assert!(
            d.progress
                .iter()
                .any(|p| p.reason == reasons::WAITING_FOR_LOAD_BALANCER)
        );
        let mut svc = d.media[0].clone();
        svc.status = Some(
            serde_json::from_value(
                serde_json::json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.9"}]}}),
            )
            .expect("status"),
        );
        let d = desired(&cr, &resolved(), &nodes, &[], &[svc], now, None);
        assert!(
            d.addresses["a"]
                .as_ref()
                .is_ok_and(|a| a.starts_with("198.51.100.9")),
            "{:?}",
            d.addresses
        );
        assert!(d.pods.contains_key("a"));
    }
}
