//! Status conditions: types and reasons as constants, and the pure computation of `Ready`,
//! `Progressing` and `Degraded` whose `lastTransitionTime` moves only when a status flips.

use crate::crd::{Condition, NodeStatus};

/// Condition types.
pub mod conditions {
    /// Every desired node serves calls.
    pub const READY: &str = "Ready";
    /// Pods are being created, rolled or drained.
    pub const PROGRESSING: &str = "Progressing";
    /// Something needs attention.
    pub const DEGRADED: &str = "Degraded";
    /// Too many nodes NotReady at once: the partition guard holds every node as it is.
    pub const NODES_PARTITIONED: &str = "NodesPartitioned";
    /// Every node advertises an address its clients can reach (`resources::lint`).
    pub const ADDRESSES_REACHABLE: &str = "AddressesReachable";
    /// The connectivity canary failed on a node `failureThreshold` times in a row.
    pub const PROBE_FAILED: &str = "ProbeFailed";
}

/// Condition reasons.
pub mod reasons {
    /// All desired nodes are ready.
    pub const ALL_NODES_READY: &str = "AllNodesReady";
    /// Some desired nodes are not ready.
    pub const NODES_NOT_READY: &str = "NodesNotReady";
    /// No node matches the selection.
    pub const NO_ELIGIBLE_NODES: &str = "NoEligibleNodes";
    /// The spec is invalid.
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A referenced Secret or key is missing.
    pub const SECRET_MISSING: &str = "SecretMissing";
    /// Nothing to do.
    pub const STABLE: &str = "Stable";
    /// Pods are being rolled to a new spec.
    pub const ROLLING_UPDATE: &str = "RollingUpdate";
    /// Pods are being created.
    pub const CREATING_PODS: &str = "CreatingPods";
    /// Pods are draining before removal.
    pub const DRAINING: &str = "Draining";
    /// A node has no usable address.
    pub const ADDRESS_MISSING: &str = "AddressMissing";
    /// A LoadBalancer has no ingress yet.
    pub const WAITING_FOR_LOAD_BALANCER: &str = "WaitingForLoadBalancer";
    /// The image cannot be pulled.
    pub const IMAGE_PULL_ERROR: &str = "ImagePullError";
    /// A pod is not ready or rtcd's health failed.
    pub const POD_NOT_READY: &str = "PodNotReady";
    /// The cluster is being deleted.
    pub const DELETING: &str = "Deleting";
    /// No problem.
    pub const AS_EXPECTED: &str = "AsExpected";
    /// A node is NotReady; its pod is left alone (grace period or partition guard).
    pub const NODE_NOT_READY: &str = "NodeNotReady";
    /// The partition guard is on.
    pub const PARTITION_SUSPECTED: &str = "PartitionSuspected";
    /// A node's pod waits for the disruption budget, or for its node.
    pub const WAITING_TO_LEAVE: &str = "WaitingToLeave";
    /// An instance's drain was cancelled: its node is back.
    pub const DRAIN_CANCELLED: &str = "DrainCancelled";
    /// The canary's call did not connect to the advertised address over a transport.
    pub const MEDIA_UNREACHABLE: &str = "MediaUnreachable";
    /// The canary could not join a call through the API.
    pub const PROBE_ERROR: &str = "ProbeError";
    /// `spec.probe.enabled` is false.
    pub const PROBE_DISABLED: &str = "ProbeDisabled";
    /// A node the canary had failed on answers it again.
    pub const PROBE_SUCCEEDED: &str = "ProbeSucceeded";
}

/// One problem on one node (or cluster-wide when `node` is empty).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Problem {
    /// Reason constant.
    pub reason: &'static str,
    /// Node name, or "" for the whole cluster.
    pub node: String,
    /// Details.
    pub detail: String,
}

/// What reconcile observed, the input of [`compute`].
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// A blocking error (invalid spec, missing Secret): nothing was changed.
    pub blocked: Option<Problem>,
    /// Per-node problems.
    pub problems: Vec<Problem>,
    /// What is in progress (reason, node).
    pub progress: Vec<Problem>,
    /// Desired nodes.
    pub desired: usize,
    /// Desired nodes whose pod is ready and healthy.
    pub ready: usize,
    /// Being deleted.
    pub deleting: bool,
    /// Why the partition guard is on, when it is.
    pub partition: Option<String>,
    /// What is wrong with the advertised addresses (`resources::lint`), by node.
    pub addresses: Vec<Problem>,
    /// Nodes the connectivity canary failed on, past the threshold.
    pub probes: Vec<Problem>,
    /// `spec.probe.enabled` is false.
    pub probe_disabled: bool,
}

/// The three conditions for `summary`, keeping each previous `lastTransitionTime` unless that
/// condition's status flipped.
pub fn compute(prev: &[Condition], generation: Option<i64>, now: &str, s: &Summary) -> Vec<Condition> {
    let list = |ps: &[Problem]| {
        let mut items: Vec<String> = ps
            .iter()
            .map(|p| {
                if p.node.is_empty() {
                    p.detail.clone()
                } else {
                    format!("{}: {}", p.node, p.detail)
                }
            })
            .collect();
        items.sort();
        items.dedup();
        items.join("; ")
    };
    let first_reason = |ps: &[Problem]| {
        let mut ps = ps.to_vec();
        ps.sort();
        ps.first().map(|p| p.reason).unwrap_or(reasons::AS_EXPECTED)
    };
    let (ready, ready_reason, ready_msg) = if s.deleting {
        (
            false,
            reasons::DELETING,
            "draining and removing every instance".to_string(),
        )
    } else if let Some(b) = &s.blocked {
        (false, b.reason, b.detail.clone())
    } else if s.desired == 0 {
        (
            false,
            reasons::NO_ELIGIBLE_NODES,
            "no Ready, schedulable node matches the selection".to_string(),
        )
    } else if s.ready == s.desired {
        (
            true,
            reasons::ALL_NODES_READY,
            format!("{}/{} nodes ready", s.ready, s.desired),
        )
    } else {
        (
            false,
            reasons::NODES_NOT_READY,
            format!("{}/{} nodes ready", s.ready, s.desired),
        )
    };
    let (progressing, p_reason, p_msg) = if s.progress.is_empty() {
        (false, reasons::STABLE, "every pod matches the spec".to_string())
    } else {
        (true, first_reason(&s.progress), list(&s.progress))
    };
    let mut problems = s.problems.clone();
    if let Some(b) = &s.blocked {
        problems.push(b.clone());
    }
    let (degraded, d_reason, d_msg) = if problems.is_empty() {
        (false, reasons::AS_EXPECTED, "no problem observed".to_string())
    } else {
        (true, first_reason(&problems), list(&problems))
    };
    let (partitioned, part_reason, part_msg) = match &s.partition {
        Some(why) => (true, reasons::PARTITION_SUSPECTED, why.clone()),
        None => (
            false,
            reasons::AS_EXPECTED,
            "NotReady nodes are few enough to act on".to_string(),
        ),
    };
    let (reachable, a_reason, a_msg) = if s.addresses.is_empty() {
        (
            true,
            reasons::AS_EXPECTED,
            "every advertised address is reachable by its clients".to_string(),
        )
    } else {
        (false, first_reason(&s.addresses), list(&s.addresses))
    };
    let (probe_failed, pr_reason, pr_msg) = if !s.probes.is_empty() {
        (true, first_reason(&s.probes), list(&s.probes))
    } else if s.probe_disabled {
        (
            false,
            reasons::PROBE_DISABLED,
            "spec.probe.enabled is false".to_string(),
        )
    } else {
        (
            false,
            reasons::AS_EXPECTED,
            "no instance failed the connectivity canary".to_string(),
        )
    };
    [
        (conditions::READY, ready, ready_reason, ready_msg),
        (conditions::PROGRESSING, progressing, p_reason, p_msg),
        (conditions::DEGRADED, degraded, d_reason, d_msg),
        (conditions::NODES_PARTITIONED, partitioned, part_reason, part_msg),
        (conditions::ADDRESSES_REACHABLE, reachable, a_reason, a_msg),
        (conditions::PROBE_FAILED, probe_failed, pr_reason, pr_msg),
    ]
    .into_iter()
    .map(|(t, st, reason, message)| {
        let status = if st { "True" } else { "False" }.to_string();
        let last = prev
            .iter()
            .find(|c| c.type_ == t && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| now.to_string());
        Condition {
            type_: t.into(),
            status,
            reason: reason.into(),
            message,
            last_transition_time: last,
            observed_generation: generation,
        }
    })
    .collect()
}

/// `ready/desired` for the printer column.
pub fn ready_nodes(nodes: &[NodeStatus], desired: usize) -> String {
    format!("{}/{}", nodes.iter().filter(|n| n.ready).count(), desired)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(cs: &'a [Condition], t: &str) -> &'a Condition {
        cs.iter().find(|c| c.type_ == t).expect("condition")
    }

    #[test]
    fn transition_time_moves_only_on_flip() {
        let ok = Summary {
            desired: 2,
            ready: 2,
            ..Summary::default()
        };
        let c1 = compute(&[], Some(1), "t1", &ok);
        assert_eq!(get(&c1, "Ready").status, "True");
        let c2 = compute(&c1, Some(2), "t2", &ok);
        assert_eq!(
            get(&c2, "Ready").last_transition_time,
            "t1",
            "unchanged status keeps its time"
        );
        let bad = Summary {
            desired: 2,
            ready: 1,
            problems: vec![Problem {
                reason: reasons::POD_NOT_READY,
                node: "b".into(),
                detail: "pod not ready".into(),
            }],
            ..Summary::default()
        };
        let c3 = compute(&c2, Some(2), "t3", &bad);
        assert_eq!(get(&c3, "Ready").last_transition_time, "t3");
        assert_eq!(get(&c3, "Degraded").status, "True");
        assert_eq!(get(&c3, "Degraded").message, "b: pod not ready");
        assert_eq!(get(&c3, "Progressing").last_transition_time, "t1");
    }

    #[test]
    fn messages_are_sorted_and_name_nodes() {
        let s = Summary {
            desired: 3,
            ready: 1,
            problems: vec![
                Problem {
                    reason: reasons::POD_NOT_READY,
                    node: "zeta".into(),
                    detail: "pod not ready".into(),
                },
                Problem {
                    reason: reasons::ADDRESS_MISSING,
                    node: "alpha".into(),
                    detail: "no address found (tried ExternalIP)".into(),
                },
            ],
            ..Summary::default()
        };
        let cs = compute(&[], None, "t", &s);
        let d = get(&cs, "Degraded");
        assert_eq!(d.reason, reasons::ADDRESS_MISSING);
        assert_eq!(
            d.message,
            "alpha: no address found (tried ExternalIP); zeta: pod not ready"
        );
    }

    #[test]
    fn blocked_spec_is_not_ready_and_degraded() {
        let s = Summary {
            blocked: Some(Problem {
                reason: reasons::INVALID_SPEC,
                node: String::new(),
                detail: "spec.config.drainTimeout: bad".into(),
            }),
            ..Summary::default()
        };
        let cs = compute(&[], None, "t", &s);
        assert_eq!(get(&cs, "Ready").reason, reasons::INVALID_SPEC);
        assert_eq!(get(&cs, "Ready").message, "spec.config.drainTimeout: bad");
        assert_eq!(get(&cs, "Degraded").status, "True");
    }

    #[test]
    fn probe_failures_name_the_node_and_disabling_says_so() {
        let s = Summary {
            probes: vec![Problem {
                reason: reasons::MEDIA_UNREACHABLE,
                node: "n1".into(),
                detail: "udp to 203.0.113.7 unreachable: ICE/DTLS did not complete within 10 s".into(),
            }],
            ..Summary::default()
        };
        let cs = compute(&[], None, "t", &s);
        let p = get(&cs, "ProbeFailed");
        assert_eq!(
            (p.status.as_str(), p.reason.as_str()),
            ("True", "MediaUnreachable")
        );
        assert_eq!(
            p.message,
            "n1: udp to 203.0.113.7 unreachable: ICE/DTLS did not complete within 10 s"
        );
        let off = Summary {
            probe_disabled: true,
            ..Summary::default()
        };
        let p = compute(&cs, None, "t2", &off);
        let p = get(&p, "ProbeFailed");
        assert_eq!((p.status.as_str(), p.reason.as_str()), ("False", "ProbeDisabled"));
        assert_eq!(p.last_transition_time, "t2");
    }
}
