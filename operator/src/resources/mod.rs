//! Pure builders: the Kubernetes objects an `RtcdCluster` wants, as functions of the CR and the
//! nodes. No I/O here; `reconcile` applies what these return.

pub mod address;
pub mod lint;
pub mod nodes;
pub mod pod;
pub mod services;

use std::collections::BTreeMap;

use k8s_openapi::{
    api::{
        core::v1::Secret,
        policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec},
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference},
        util::intstr::IntOrString,
    },
};
use kube::{Resource, ResourceExt};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::crd::{ClientSecret, DEFAULT_GENERATED_CLIENT_ID, RtcdCluster};

/// The one field manager for every server-side apply.
pub const FIELD_MANAGER: &str = "rtcd-operator";
/// Finalizer that drains and removes children before the CR goes.
pub const FINALIZER: &str = "rtcd-rs.dev/drain";
/// Label: the owning RtcdCluster.
pub const LABEL_CLUSTER: &str = "rtcd-rs.dev/cluster";
/// Selects everything the operator made (its pods and Services, and the Services'
/// EndpointSlices, which carry their labels).
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=rtcd-operator";
/// Label: the node a pod or per-node Service belongs to (name, or a hash when too long).
pub const LABEL_NODE: &str = "rtcd-rs.dev/node";
/// Annotation: the full node name.
pub const ANN_NODE: &str = "rtcd-rs.dev/node-name";
/// Annotation: hash of the pod spec, to detect a needed roll.
pub const ANN_SPEC_HASH: &str = "rtcd-rs.dev/spec-hash";
/// Annotation: the advertised address.
pub const ANN_ADDRESS: &str = "rtcd-rs.dev/address";
/// When the operator asked the pod's rtcd to drain through its API (RFC 3339): the pod then
/// counts against the disruption budget, and is deleted once idle or the drain cancelled.
pub const ANN_DRAIN_REQUESTED: &str = "rtcd-rs.dev/drain-requested-at";
/// Set on a pod while its instance has live calls, so node autoscalers leave its node alone:
/// cluster-autoscaler's and Karpenter's annotations, with the value each expects.
pub const EVICTION_ANNOTATIONS: [(&str, &str); 2] = [
    ("cluster-autoscaler.kubernetes.io/safe-to-evict", "false"),
    ("karpenter.sh/do-not-disrupt", "true"),
];

/// The merge patch that makes `pod`'s eviction annotations say `busy`, if they do not yet.
pub fn eviction_patch(pod: &k8s_openapi::api::core::v1::Pod, busy: bool) -> Option<serde_json::Value> {
    let have = pod.annotations();
    let mut changes = serde_json::Map::new();
    for (k, v) in EVICTION_ANNOTATIONS {
        match (busy, have.get(k).map(String::as_str)) {
            (true, Some(x)) if x == v => {}
            (true, _) => {
                changes.insert(k.into(), json!(v));
            }
            (false, Some(_)) => {
                changes.insert(k.into(), serde_json::Value::Null);
            }
            (false, None) => {}
        }
    }
    (!changes.is_empty()).then(|| json!({"metadata": {"annotations": changes}}))
}
/// Key of the generated admin secret.
pub const CREDENTIALS_KEY: &str = "adminSecretKey";

/// Labels every child carries; the first four also select the pods.
pub fn labels(cr: &RtcdCluster) -> BTreeMap<String, String> {
    let mut l = selector(cr);
    l.insert("app.kubernetes.io/managed-by".into(), "rtcd-operator".into());
    l
}

/// Labels selecting this cluster's rtcd pods.
pub fn selector(cr: &RtcdCluster) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "rtcd".to_string()),
        ("app.kubernetes.io/instance".to_string(), cr.name_any()),
        (LABEL_CLUSTER.to_string(), cr.name_any()),
    ])
}

/// The controller owner reference children carry.
pub fn owner(cr: &RtcdCluster) -> OwnerReference {
    // `controller_owner_ref` is None only for an object without a uid, which the apiserver never
    // hands us; the fallback keeps the function total for builders used in unit tests.
    cr.controller_owner_ref(&()).unwrap_or_else(|| OwnerReference {
        api_version: RtcdCluster::api_version(&()).into(),
        kind: RtcdCluster::kind(&()).into(),
        name: cr.name_any(),
        uid: cr.uid().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    })
}

/// Object metadata for a child called `name`.
pub fn meta(cr: &RtcdCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cr.namespace(),
        labels: Some(labels(cr)),
        owner_references: Some(vec![owner(cr)]),
        ..ObjectMeta::default()
    }
}

/// First 16 hex digits of SHA-256 over `bytes`.
pub fn short_hash(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A value usable as a label value for `node`: the name itself when it fits, else a hash.
pub fn node_label_value(node: &str) -> String {
    let valid = node.len() <= 63
        && node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && node.starts_with(|c: char| c.is_ascii_alphanumeric())
        && node.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        node.to_string()
    } else {
        format!("h-{}", short_hash(node.as_bytes()))
    }
}

/// `<prefix>-<node>` as a DNS-1035 label (≤ 63, lowercase alphanumerics and '-', no dots):
/// node names may hold dots and be long, so those are mapped and shortened with a hash.
pub fn dns_label(prefix: &str, node: &str) -> String {
    let clean: String = node
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let full = format!("{prefix}-{clean}");
    if full.len() <= 63 && full == full.trim_end_matches('-') && !full.contains("--") {
        return full;
    }
    let hash = &short_hash(node.as_bytes())[..8];
    let room = 63 - hash.len() - 1;
    let mut head: String = full.chars().take(room).collect();
    while head.ends_with('-') {
        head.pop();
    }
    format!("{head}-{hash}")
}

/// Name of the generated credentials Secret.
pub fn credentials_secret_name(cr: &RtcdCluster) -> String {
    format!("{}-credentials", cr.name_any())
}

/// The generated credentials Secret holding `key`. Created once, never re-applied, so the key
/// does not change under running instances.
pub fn credentials_secret(cr: &RtcdCluster, key: &str) -> Secret {
    Secret {
        metadata: meta(cr, credentials_secret_name(cr)),
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([(CREDENTIALS_KEY.to_string(), key.to_string())])),
        ..Secret::default()
    }
}

/// A generated client Secret (`spec.clients[n].generate`): the client ID and `auth_key` under the
/// entry's keys. It has no owner reference, so deleting the RtcdCluster leaves it: Mattermost's
/// configuration holds its values, and a reinstall must find the same ones.
pub fn client_secret(cr: &RtcdCluster, client: &ClientSecret, auth_key: &str) -> Secret {
    let id = client
        .client_id
        .clone()
        .unwrap_or_else(|| DEFAULT_GENERATED_CLIENT_ID.into());
    let mut metadata = meta(cr, client.secret_name.clone());
    metadata.owner_references = None;
    Secret {
        metadata,
        type_: Some("Opaque".into()),
        string_data: Some(BTreeMap::from([
            (client.client_id_key.clone(), id),
            (client.auth_key_key.clone(), auth_key.to_string()),
        ])),
        ..Secret::default()
    }
}

/// PodDisruptionBudget over the rtcd pods of `instances` nodes.
///
/// It says `minAvailable: instances - maxUnavailable`, not `maxUnavailable`: for `maxUnavailable`
/// the disruption controller needs the pods' controller to have a scale subresource, and an
/// RtcdCluster has none (its size is the set of eligible nodes). With `maxUnavailable` the
/// budget fails to sync ("does not implement the scale subresource"), allows no disruption, and
/// every eviction — `kubectl drain` — is refused forever. An integer `minAvailable` is counted
/// against the pods found, so the operator rewrites it when the number of instances changes.
pub fn pdb(cr: &RtcdCluster, instances: usize) -> PodDisruptionBudget {
    let max_unavailable = usize::try_from(cr.spec.pod_disruption_budget.max_unavailable.max(0)).unwrap_or(0);
    let min_available = i32::try_from(instances.saturating_sub(max_unavailable)).unwrap_or(i32::MAX);
    PodDisruptionBudget {
        metadata: meta(cr, cr.name_any()),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(min_available)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(cr)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// The prometheus-operator ServiceMonitor scraping `/metrics` on the API Service.
pub fn service_monitor(cr: &RtcdCluster) -> serde_json::Value {
    let mut labels = labels(cr);
    labels.extend(cr.spec.service_monitor.labels.clone());
    json!({
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": {
            "name": cr.name_any(),
            "namespace": cr.namespace(),
            "labels": labels,
            "ownerReferences": [owner(cr)],
        },
        "spec": {
            "selector": {"matchLabels": services::api_service_selector(cr)},
            "endpoints": [{"port": "api", "path": "/metrics", "interval": cr.spec.service_monitor.interval}],
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_label_values() {
        assert_eq!(node_label_value("node-a.example.com"), "node-a.example.com");
        let long = "n".repeat(70);
        let v = node_label_value(&long);
        assert!(v.starts_with("h-") && v.len() <= 63, "{v}");
        assert_ne!(node_label_value("-bad"), "-bad");
    }

    #[test]
    fn the_budget_counts_instances_instead_of_asking_for_a_scale() {
        let mut cr = super::nodes::tests::cr();
        let min = |cr: &RtcdCluster, n| pdb(cr, n).spec.and_then(|s| s.min_available);
        assert_eq!(min(&cr, 3), Some(IntOrString::Int(2)));
        assert_eq!(min(&cr, 1), Some(IntOrString::Int(0)));
        assert_eq!(min(&cr, 0), Some(IntOrString::Int(0)));
        cr.spec.pod_disruption_budget.max_unavailable = 2;
        assert_eq!(min(&cr, 5), Some(IntOrString::Int(3)));
        assert_eq!(pdb(&cr, 5).spec.and_then(|s| s.max_unavailable), None);
    }

    #[test]
    fn dns_labels() {
        assert_eq!(dns_label("rtcd-media", "node-a"), "rtcd-media-node-a");
        let dotted = dns_label("rtcd-media", "ip-10-0-0-1.ec2.internal");
        assert_eq!(dotted, "rtcd-media-ip-10-0-0-1-ec2-internal");
        let long = dns_label("rtcd-media", &"x".repeat(100));
        assert!(long.len() <= 63, "{long}");
        // Two long names that share a prefix stay distinct.
        let a = dns_label("p", &format!("{}a", "y".repeat(80)));
        let b = dns_label("p", &format!("{}b", "y".repeat(80)));
        assert_ne!(a, b);
    }

    #[test]
    fn eviction_annotations_follow_live_calls() {
        let mut pod = k8s_openapi::api::core::v1::Pod::default();
        assert_eq!(eviction_patch(&pod, false), None);
        let on = eviction_patch(&pod, true).expect("patch");
        assert_eq!(
            on,
            json!({"metadata": {"annotations": {
                "cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                "karpenter.sh/do-not-disrupt": "true"}}})
        );
        pod.metadata.annotations = Some(
            EVICTION_ANNOTATIONS
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        assert_eq!(eviction_patch(&pod, true), None, "already set");
        assert_eq!(
            eviction_patch(&pod, false),
            Some(json!({"metadata": {"annotations": {
                "cluster-autoscaler.kubernetes.io/safe-to-evict": null,
                "karpenter.sh/do-not-disrupt": null}}}))
        );
    }
}
