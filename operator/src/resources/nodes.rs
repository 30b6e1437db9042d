//! Which nodes run rtcd, node by node: selected by `nodeSelector` and required node affinity,
//! Ready (or for how long not), not cordoned, and with every NoExecute taint tolerated (a
//! NoSchedule taint only forbids a new pod).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Node, NodeSelectorRequirement, Taint, Toleration},
    jiff::Timestamp,
};
use kube::ResourceExt;

use crate::{crd::RtcdCluster, disruption::NodeState};

/// Taints the node lifecycle controller sets while a node is NotReady or unreachable: readiness
/// (with its grace period) decides about those nodes, not the taints, which also linger for a
/// moment after a node recovers.
const NODE_LIFECYCLE_TAINTS: [&str; 2] = ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

/// The node as [`crate::disruption::triage`] sees it, at `now`. Readiness comes before cordons
/// and taints: a cordoned node that is also NotReady may have no kubelet to run a pod's drain.
/// A `NoSchedule` taint keeps a running pod (it only forbids new ones); `NoExecute` and a cordon
/// drain it.
pub fn state(cr: &RtcdCluster, node: &Node, now: Timestamp) -> NodeState {
    if !selected(cr, node) {
        return NodeState::NotSelected;
    }
    if node.metadata.deletion_timestamp.is_some() {
        return NodeState::Ineligible("node is being deleted".into());
    }
    if !is_ready(node) {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
        let since = ready
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| t.0)
            .or_else(|| node.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let for_secs = since.map_or(0, |t| now.duration_since(t).as_secs().max(0));
        return NodeState::NotReady { for_secs };
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        return NodeState::Ineligible("node is cordoned".into());
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    let untolerated = |effect: &str| {
        taints.iter().find(|t| {
            t.effect == effect
                && !NODE_LIFECYCLE_TAINTS.contains(&t.key.as_str())
                && !cr.spec.tolerations.iter().any(|tol| tolerates(tol, t))
        })
    };
    if let Some(t) = untolerated("NoExecute") {
        return NodeState::Ineligible(format!("taint {}:NoExecute is not tolerated", t.key));
    }
    if let Some(t) = untolerated("NoSchedule") {
        return NodeState::NoNewPods(format!(
            "taint {}:NoSchedule is not tolerated (a running pod stays)",
            t.key
        ));
    }
    NodeState::Eligible
}

/// Whether selection (labels/affinity) includes the node at all; such nodes are listed in
/// status even when not Ready.
pub fn selected(cr: &RtcdCluster, node: &Node) -> bool {
    let labels = node.labels();
    if !cr
        .spec
        .node_selector
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
    {
        return false;
    }
    let required = cr
        .spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    match required {
        // Terms are ORed; expressions inside a term are ANDed.
        Some(sel) => sel.node_selector_terms.iter().any(|term| {
            term.match_expressions
                .iter()
                .flatten()
                .all(|r| requirement(r, labels))
                && term.match_fields.iter().flatten().all(|r| {
                    let fields = BTreeMap::from([("metadata.name".to_string(), node.name_any())]);
                    requirement(r, &fields)
                })
        }),
        None => true,
    }
}

fn requirement(r: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&r.key);
    let values = r.values.as_deref().unwrap_or_default();
    let num = |s: &str| s.parse::<i64>().ok();
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => !value.is_some_and(|v| values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(|v| num(v)), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a > b)
        }
        "Lt" => {
            matches!((value.and_then(|v| num(v)), values.first().and_then(|v| num(v))), (Some(a), Some(b)) if a < b)
        }
        _ => false,
    }
}

fn tolerates(tol: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = tol.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    match tol.operator.as_deref() {
        Some("Exists") => tol.key.as_deref().is_none_or(|k| k.is_empty() || k == taint.key),
        _ => {
            tol.key.as_deref() == Some(taint.key.as_str())
                && tol.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
    }
}

/// The node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The node's first address of `type_`.
pub fn address(node: &Node, type_: &str) -> Option<String> {
    node.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == type_ && !a.address.is_empty()))
        .map(|a| a.address.clone())
}

#[cfg(test)]
pub(crate) mod tests {
    use k8s_openapi::{
        api::core::v1::{NodeAddress, NodeCondition, NodeSpec, NodeStatus},
        apimachinery::pkg::apis::meta::v1::Time,
        jiff,
    };

    use super::*;
    use crate::crd::RtcdClusterSpec;

    pub(crate) fn cr() -> RtcdCluster {
        let spec: RtcdClusterSpec = serde_json::from_value(serde_json::json!({})).expect("defaults");
        let mut cr = RtcdCluster::new("rtcd", spec);
        cr.metadata.namespace = Some("calls".into());
        cr.metadata.uid = Some("uid-1".into());
        cr.metadata.generation = Some(1);
        cr
    }

    pub(crate) fn node(name: &str, internal: &str, external: Option<&str>) -> Node {
        let mut addresses = vec![NodeAddress {
            type_: "InternalIP".into(),
            address: internal.into(),
        }];
        if let Some(e) = external {
            addresses.push(NodeAddress {
                type_: "ExternalIP".into(),
                address: e.into(),
            });
        }
        Node {
            metadata: kube::api::ObjectMeta {
                name: Some(name.into()),
                labels: Some(BTreeMap::from([("type".to_string(), "kwok".to_string())])),
                ..Default::default()
            },
            spec: Some(NodeSpec::default()),
            status: Some(NodeStatus {
                addresses: Some(addresses),
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    fn at(n: &Node) -> NodeState {
        state(&cr(), n, Timestamp::now())
    }

    #[test]
    fn ready_schedulable_node_is_eligible() {
        assert_eq!(at(&node("a", "10.0.0.1", None)), NodeState::Eligible);
    }

    #[test]
    fn cordoned_notready_tainted_unselected() {
        let mut n = node("a", "10.0.0.1", None);
        n.spec.as_mut().expect("spec").unschedulable = Some(true);
        assert_eq!(at(&n), NodeState::Ineligible("node is cordoned".into()));

        // NotReady comes first, with how long (no transition time: since the node's creation).
        let mut n = node("a", "10.0.0.1", None);
        n.spec.as_mut().expect("spec").unschedulable = Some(true);
        n.status.as_mut().expect("status").conditions.as_mut().expect("c")[0].status = "False".into();
        n.metadata.creation_timestamp = Some(Time(Timestamp::now() - jiff::SignedDuration::from_secs(90)));
        assert!(
            matches!(at(&n), NodeState::NotReady { for_secs } if (89..=91).contains(&for_secs)),
            "{:?}",
            at(&n)
        );

        let taint = |effect: &str| Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: effect.into(),
            ..Default::default()
        };
        let mut n = node("a", "10.0.0.1", None);
        n.spec.as_mut().expect("spec").taints = Some(vec![taint("NoSchedule")]);
        assert!(
            matches!(at(&n), NodeState::NoNewPods(_)),
            "NoSchedule keeps a running pod"
        );
        n.spec.as_mut().expect("spec").taints = Some(vec![taint("NoExecute")]);
        assert!(matches!(at(&n), NodeState::Ineligible(_)));
        let mut tolerant = cr();
        tolerant.spec.tolerations = vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("db".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        }];
        assert_eq!(state(&tolerant, &n, Timestamp::now()), NodeState::Eligible);
        // The lifecycle controller's taints lingering on a recovered node change nothing.
        n.spec.as_mut().expect("spec").taints = Some(vec![Taint {
            key: "node.kubernetes.io/not-ready".into(),
            effect: "NoExecute".into(),
            ..Default::default()
        }]);
        assert_eq!(at(&n), NodeState::Eligible);

        let mut picky = cr();
        picky.spec.node_selector = BTreeMap::from([("media".to_string(), "yes".to_string())]);
        assert_eq!(
            state(&picky, &node("a", "10.0.0.1", None), Timestamp::now()),
            NodeState::NotSelected
        );
    }

    #[test]
    fn required_node_affinity() {
        let mut c = cr();
        c.spec.affinity = Some(
            serde_json::from_value(serde_json::json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "type", "operator": "In", "values": ["kwok"]}]},
                                      {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}))
            .expect("affinity"),
        );
        assert!(selected(&c, &node("a", "10.0.0.1", None)));
        let mut other = node("b", "10.0.0.2", None);
        other.metadata.labels = None;
        assert!(selected(&c, &other), "second term matches by name");
        other.metadata.name = Some("c".into());
        assert!(!selected(&c, &other));
    }
}
