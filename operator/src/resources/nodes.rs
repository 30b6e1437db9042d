//! Which nodes run rtcd: Ready, schedulable, matching `nodeSelector` and required node
//! affinity, and with every NoSchedule/NoExecute taint tolerated.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, Taint, Toleration};
use kube::ResourceExt;

use crate::crd::RtcdCluster;

/// Why a node gets no pod (or loses its pod).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    /// Ready condition is not True.
    NotReady,
    /// `spec.unschedulable` (cordoned).
    Cordoned,
    /// Being deleted.
    Deleting,
    /// `nodeSelector` or node affinity excludes it.
    NotSelected,
    /// A taint not tolerated.
    Tainted(String),
}

impl std::fmt::Display for Ineligible {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NotReady => f.write_str("node is not Ready"),
            Self::Cordoned => f.write_str("node is cordoned"),
            Self::Deleting => f.write_str("node is being deleted"),
            Self::NotSelected => f.write_str("node does not match nodeSelector/affinity"),
            Self::Tainted(k) => write!(f, "taint {k} is not tolerated"),
        }
    }
}

/// Whether `node` should run one of `cr`'s pods.
pub fn eligible(cr: &RtcdCluster, node: &Node) -> Result<(), Ineligible> {
    if node.metadata.deletion_timestamp.is_some() {
        return Err(Ineligible::Deleting);
    }
    if !selected(cr, node) {
        return Err(Ineligible::NotSelected);
    }
    if node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) {
        return Err(Ineligible::Cordoned);
    }
    if !is_ready(node) {
        return Err(Ineligible::NotReady);
    }
    let taints = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or_default();
    for t in taints {
        if matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
            && !cr.spec.tolerations.iter().any(|tol| tolerates(tol, t))
        {
            return Err(Ineligible::Tainted(t.key.clone()));
        }
    }
    Ok(())
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
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition, NodeSpec, NodeStatus};

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

    #[test]
    fn ready_schedulable_node_is_eligible() {
        assert_eq!(eligible(&cr(), &node("a", "10.0.0.1", None)), Ok(()));
    }

    #[test]
    fn cordoned_notready_tainted_unselected() {
        let c = cr();
        let mut n = node("a", "10.0.0.1", None);
        n.spec.as_mut().expect("spec").unschedulable = Some(true);
        assert_eq!(eligible(&c, &n), Err(Ineligible::Cordoned));

        let mut n = node("a", "10.0.0.1", None);
        n.status.as_mut().expect("status").conditions.as_mut().expect("c")[0].status = "False".into();
        assert_eq!(eligible(&c, &n), Err(Ineligible::NotReady));

        let mut n = node("a", "10.0.0.1", None);
        n.spec.as_mut().expect("spec").taints = Some(vec![Taint {
            key: "dedicated".into(),
            value: Some("db".into()),
            effect: "NoSchedule".into(),
            ..Default::default()
        }]);
        assert_eq!(eligible(&c, &n), Err(Ineligible::Tainted("dedicated".into())));
        let mut tolerant = cr();
        tolerant.spec.tolerations = vec![Toleration {
            key: Some("dedicated".into()),
            operator: Some("Equal".into()),
            value: Some("db".into()),
            effect: Some("NoSchedule".into()),
            ..Default::default()
        }];
        assert_eq!(eligible(&tolerant, &n), Ok(()));

        let mut picky = cr();
        picky.spec.node_selector = BTreeMap::from([("media".to_string(), "yes".to_string())]);
        assert_eq!(
            eligible(&picky, &node("a", "10.0.0.1", None)),
            Err(Ineligible::NotSelected)
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
