//! Node trouble, triaged the way a careful human would, pure: a NotReady node keeps its pod for
//! a grace period (a kubelet heartbeat loss is not a dead node); after it, the node's instance
//! leaves the fleet; when more than a set share of the selected nodes is NotReady at once, that
//! looks like a partition or a control-plane problem, and no node is acted on.

use std::collections::{BTreeMap, BTreeSet};

/// A node as triage sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeState {
    /// Runs rtcd.
    Eligible,
    /// Selected, but its Ready condition has not been True for `for_secs` seconds.
    NotReady {
        /// Seconds since the Ready condition last changed.
        for_secs: i64,
    },
    /// Selected, Ready, but not to run rtcd now (cordoned, a `NoExecute` taint, being deleted).
    Ineligible(String),
    /// A running pod stays, but no new one is made (a `NoSchedule` taint).
    NoNewPods(String),
    /// Not selected by `nodeSelector`/affinity.
    NotSelected,
}

/// How a node's pod leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leave {
    /// NotReady past the grace period: its kubelet may be gone, so a pod whose rtcd cannot be
    /// reached waits for the node to return or be deleted.
    NotReady,
    /// The node is up but should not run rtcd (cordoned, tainted, no longer selected).
    Other,
    /// The Node object is gone: nothing will ever drain the pod.
    Gone,
}

/// The policy (`spec.nodeTrouble`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Seconds a node may be NotReady before anything is done.
    pub grace_secs: i64,
    /// More than this percentage of selected nodes NotReady at once: act on none.
    pub partition_percent: i32,
    /// Seconds since the partition guard last turned off, if known: nodes still NotReady then
    /// get a fresh grace period (they are most likely recovering with the others), so a guard
    /// lifting node by node does not drain the last ones at once.
    pub since_guard_lifted: Option<i64>,
}

/// What triage decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Triage {
    /// Nodes whose pod stays as it is, with why.
    pub held: BTreeMap<String, String>,
    /// Nodes whose pod leaves, and how.
    pub leaving: BTreeMap<String, Leave>,
    /// Why the partition guard is on, when it is.
    pub partition: Option<String>,
    /// Seconds until the first held node's grace ends (reconcile again then).
    pub recheck_secs: Option<u64>,
}

/// Triage of `nodes` (every Node that exists) and of the nodes that have one of the cluster's
/// pods (`pod_nodes`; those not in `nodes` are gone). The partition guard compares the fleet's
/// members that are NotReady (nodes with a pod) with all its members (those plus every
/// eligible node), so new nodes still joining do not count.
pub fn triage(nodes: &[(String, NodeState)], pod_nodes: &BTreeSet<String>, policy: Policy) -> Triage {
    let mut t = Triage::default();
    let member = |n: &String, s: &NodeState| {
        *s == NodeState::Eligible || (pod_nodes.contains(n) && *s != NodeState::NotSelected)
    };
    let selected = nodes.iter().filter(|(n, s)| member(n, s)).count();
    let not_ready = nodes
        .iter()
        .filter(|(n, s)| matches!(s, NodeState::NotReady { .. }) && pod_nodes.contains(n))
        .count();
    if not_ready > 0 && not_ready * 100 > selected * policy.partition_percent.max(0) as usize {
        t.partition = Some(format!(
            "{not_ready} of {selected} nodes running rtcd are NotReady at once (more than {}%): \
             this looks like a partition or a control-plane problem, so no node is drained or \
             replaced until fewer are",
            policy.partition_percent
        ));
    }
    for (name, state) in nodes {
        match state {
            NodeState::Eligible => {}
            NodeState::NoNewPods(why) => {
                t.held.insert(name.clone(), why.clone());
            }
            NodeState::NotReady { for_secs } => {
                let for_secs = &policy
                    .since_guard_lifted
                    .map_or(*for_secs, |lifted| (*for_secs).min(lifted));
                if t.partition.is_some() {
                    t.held
                        .insert(name.clone(), "NotReady; held by the partition guard".into());
                } else if *for_secs < policy.grace_secs {
                    t.held.insert(
                        name.clone(),
                        format!("NotReady for {for_secs}s; acting after {}s", policy.grace_secs),
                    );
                    let left = u64::try_from(policy.grace_secs - for_secs).unwrap_or(1).max(1);
                    t.recheck_secs = Some(t.recheck_secs.map_or(left, |r| r.min(left)));
                } else {
                    t.leaving.insert(name.clone(), Leave::NotReady);
                }
            }
            NodeState::Ineligible(_) | NodeState::NotSelected => {
                t.leaving.insert(name.clone(), Leave::Other);
            }
        }
    }
    for node in pod_nodes {
        if !nodes.iter().any(|(n, _)| n == node) {
            t.leaving.insert(node.clone(), Leave::Gone);
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        grace_secs: 300,
        partition_percent: 50,
        since_guard_lifted: None,
    };

    #[test]
    fn nodes_still_not_ready_when_the_guard_lifts_get_a_fresh_grace() {
        let n = nodes(&[
            ("a", NodeState::NotReady { for_secs: 900 }),
            ("b", NodeState::Eligible),
            ("c", NodeState::Eligible),
        ]);
        let lifted = Policy {
            since_guard_lifted: Some(30),
            ..POLICY
        };
        let t = triage(&n, &all(&n), lifted);
        assert!(t.held.contains_key("a") && t.leaving.is_empty(), "{t:?}");
        assert_eq!(t.recheck_secs, Some(270));
        let long_ago = Policy {
            since_guard_lifted: Some(3600),
            ..POLICY
        };
        assert_eq!(triage(&n, &all(&n), long_ago).leaving["a"], Leave::NotReady);
    }

    fn nodes(states: &[(&str, NodeState)]) -> Vec<(String, NodeState)> {
        states.iter().map(|(n, s)| (n.to_string(), s.clone())).collect()
    }

    /// Every listed node runs a pod.
    fn all(n: &[(String, NodeState)]) -> BTreeSet<String> {
        n.iter().map(|(n, _)| n.clone()).collect()
    }

    #[test]
    fn a_node_not_ready_for_less_than_the_grace_is_held() {
        let n = nodes(&[
            ("a", NodeState::NotReady { for_secs: 45 }),
            ("b", NodeState::Eligible),
            ("c", NodeState::Eligible),
        ]);
        let t = triage(&n, &all(&n), POLICY);
        assert!(
            t.held.contains_key("a") && t.leaving.is_empty() && t.partition.is_none(),
            "{t:?}"
        );
        assert_eq!(t.recheck_secs, Some(255));
        let n = nodes(&[
            ("a", NodeState::NotReady { for_secs: 300 }),
            ("b", NodeState::Eligible),
            ("c", NodeState::Eligible),
        ]);
        assert_eq!(triage(&n, &all(&n), POLICY).leaving["a"], Leave::NotReady);
    }

    #[test]
    fn many_nodes_not_ready_together_is_a_partition_and_nothing_moves() {
        let n = nodes(&[
            ("a", NodeState::NotReady { for_secs: 900 }),
            ("b", NodeState::NotReady { for_secs: 900 }),
            ("c", NodeState::NotReady { for_secs: 10 }),
            ("d", NodeState::Eligible),
            ("x", NodeState::NotSelected),
        ]);
        let t = triage(&n, &all(&n), POLICY);
        let why = t.partition.clone().expect("partition");
        assert!(why.contains("3 of 4"), "{why}");
        assert_eq!(t.held.len(), 3);
        assert_eq!(
            t.leaving.keys().collect::<Vec<_>>(),
            ["x"],
            "only the unselected node leaves"
        );
        // Exactly half is not more than 50 %.
        let n = nodes(&[
            ("a", NodeState::NotReady { for_secs: 900 }),
            ("b", NodeState::Eligible),
        ]);
        let t = triage(&n, &all(&n), POLICY);
        assert!(
            t.partition.is_none() && t.leaving["a"] == Leave::NotReady,
            "{t:?}"
        );
    }

    #[test]
    fn a_pod_without_its_node_leaves_as_gone_and_other_reasons_as_other() {
        let n = nodes(&[
            ("a", NodeState::Ineligible("node is cordoned".into())),
            ("b", NodeState::Eligible),
        ]);
        let pods = BTreeSet::from(["a".to_string(), "b".to_string(), "dead".to_string()]);
        let t = triage(&n, &pods, POLICY);
        assert_eq!(t.leaving["a"], Leave::Other);
        assert_eq!(t.leaving["dead"], Leave::Gone);
        assert!(!t.leaving.contains_key("b"));
    }
}
