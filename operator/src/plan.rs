//! The rollout decision, pure: given the pods each node should run and the pods that exist,
//! what to do now. New nodes get pods at once. Pods of nodes leaving the fleet go within a
//! disruption budget (`maxUnavailable` nodes draining or replaced at once): an instance that
//! still has calls is first drained through its API (no new calls; the node may come back and
//! the drain be cancelled) and deleted once idle. Spec changes roll one node at a time, and only
//! while every other instance is ready and nothing else is disrupted.

use std::collections::{BTreeMap, BTreeSet};

use crate::disruption::Leave;

/// An existing rtcd pod, as the plan needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Existing {
    /// Pod name.
    pub name: String,
    /// Its node.
    pub node: String,
    /// Its spec hash.
    pub hash: String,
    /// Ready condition True.
    pub ready: bool,
    /// Has a deletionTimestamp (draining).
    pub terminating: bool,
    /// The operator asked its rtcd to drain (the pod's annotation).
    pub drain_requested: bool,
    /// Live sessions, when its rtcd answered; `None` when it could not be reached.
    pub sessions: Option<u64>,
    /// The drain began longer ago than the termination grace period.
    pub drain_expired: bool,
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Nodes whose pod to create.
    pub create: Vec<String>,
    /// Pods whose rtcd to drain through its API (their node is leaving; calls are live).
    pub drain: Vec<String>,
    /// Pods to delete (graceful: preStop waits for calls).
    pub delete: Vec<String>,
    /// Pods to delete at once: their node is gone, nothing will run their preStop.
    pub force_delete: Vec<String>,
    /// Pods whose drain to cancel: their node is back.
    pub cancel: Vec<String>,
    /// Pod to delete to roll it to the new spec (at most one).
    pub roll: Option<String>,
    /// Pods waiting for their turn to roll.
    pub outdated: Vec<String>,
    /// Pods draining now (terminating, or drained through the API).
    pub draining: Vec<String>,
    /// Pods of leaving nodes that wait, and why.
    pub waiting: Vec<(String, String)>,
}

/// `desired`: node → spec hash. `keep`: nodes without a desired pod whose existing pod stays as
/// it is (its address vanished, its node is NotReady within the grace period or held by the
/// partition guard). `leaving`: how every other node's pods leave (a node absent from all
/// three is treated as [`Leave::Other`]). `max_unavailable`: the disruption budget.
pub fn plan(
    desired: &BTreeMap<String, String>,
    keep: &BTreeSet<String>,
    leaving: &BTreeMap<String, Leave>,
    existing: &[Existing],
    max_unavailable: usize,
) -> Plan {
    let mut p = Plan::default();
    let mut by_node: BTreeMap<&str, Vec<&Existing>> = BTreeMap::new();
    for e in existing {
        by_node.entry(e.node.as_str()).or_default().push(e);
    }
    let leave_of = |node: &str| leaving.get(node).cloned().unwrap_or(Leave::Other);
    let staying = |node: &str| desired.contains_key(node) || keep.contains(node);
    // Disruptions in flight: pods terminating (except on gone nodes, already lost) and pods
    // drained through the API on leaving nodes.
    let mut in_flight = 0;
    for e in existing {
        if e.terminating {
            p.draining.push(e.name.clone());
            if leave_of(&e.node) == Leave::Gone && !staying(&e.node) {
                p.force_delete.push(e.name.clone());
            } else {
                in_flight += 1;
            }
        } else if e.drain_requested && !desired.contains_key(&e.node) {
            p.draining.push(e.name.clone());
            in_flight += 1;
        }
    }
    let mut budget = max_unavailable.saturating_sub(in_flight);
    let over_budget = format!("waits for the disruption budget (maxUnavailable {max_unavailable})");
    for (node, pods) in &by_node {
        let live: Vec<&Existing> = pods.iter().filter(|e| !e.terminating).copied().collect();
        if staying(node) {
            // More than one live pod on a node (never made by us, but be safe): keep the first
            // by name, remove the others.
            for extra in live.iter().skip(1) {
                p.delete.push(extra.name.clone());
            }
            if desired.contains_key(*node)
                && let Some(first) = live.first()
                && first.drain_requested
            {
                p.cancel.push(first.name.clone());
            }
            continue;
        }
        let leave = leave_of(node);
        for e in live {
            if leave == Leave::Gone {
                if e.drain_requested || budget > 0 {
                    budget -= usize::from(!e.drain_requested);
                    p.force_delete.push(e.name.clone());
                } else {
                    p.waiting.push((e.name.clone(), over_budget.clone()));
                }
                continue;
            }
            if e.drain_requested {
                match e.sessions {
                    Some(0) => p.delete.push(e.name.clone()),
                    _ if e.drain_expired => p.delete.push(e.name.clone()),
                    None if leave == Leave::Other => p.delete.push(e.name.clone()),
                    Some(n) => p
                        .waiting
                        .push((e.name.clone(), format!("draining: {n} live sessions"))),
                    None => p.waiting.push((
                        e.name.clone(),
                        "draining; rtcd does not answer on a NotReady node".into(),
                    )),
                }
                continue;
            }
            match e.sessions {
                None if leave == Leave::NotReady => p.waiting.push((
                    e.name.clone(),
                    "rtcd does not answer on a NotReady node: waits for the node to return or be deleted"
                        .into(),
                )),
                _ if budget == 0 => p.waiting.push((e.name.clone(), over_budget.clone())),
                Some(n) if n > 0 => {
                    budget -= 1;
                    p.drain.push(e.name.clone());
                }
                _ => {
                    budget -= 1;
                    p.delete.push(e.name.clone());
                }
            }
        }
    }
    for node in desired.keys() {
        // Wait until any terminating pod of the node is gone: the new pod needs its ports.
        if !by_node.contains_key(node.as_str()) {
            p.create.push(node.clone());
        }
    }
    let mut outdated: Vec<&Existing> = existing
        .iter()
        .filter(|e| !e.terminating && desired.get(&e.node).is_some_and(|h| *h != e.hash))
        .filter(|e| !p.delete.contains(&e.name))
        .collect();
    outdated.sort_by(|a, b| a.node.cmp(&b.node));
    p.outdated = outdated.iter().map(|e| e.name.clone()).collect();
    // One at a time, within the budget (what drains counts against it): nothing missing or
    // leaving, and every other desired pod ready.
    let others_ready = desired.keys().all(|node| {
        by_node
            .get(node.as_str())
            .is_some_and(|pods| pods.iter().any(|e| !e.terminating && e.ready))
    });
    let quiet = p.create.is_empty()
        && p.delete.is_empty()
        && p.drain.is_empty()
        && p.force_delete.is_empty()
        && p.waiting.is_empty()
        && budget > 0;
    if quiet {
        // A pod that is not ready serves no call: roll it first, even if others are not ready.
        if let Some(e) = outdated.iter().find(|e| !e.ready) {
            p.roll = Some(e.name.clone());
        } else if others_ready {
            p.roll = outdated.first().map(|e| e.name.clone());
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(name: &str, node: &str, hash: &str, ready: bool, terminating: bool) -> Existing {
        Existing {
            name: name.into(),
            node: node.into(),
            hash: hash.into(),
            ready,
            terminating,
            sessions: Some(0),
            ..Existing::default()
        }
    }

    fn plan(d: &BTreeMap<String, String>, keep: &BTreeSet<String>, pods: &[Existing]) -> Plan {
        super::plan(d, keep, &BTreeMap::new(), pods, 1)
    }

    fn want(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(n, h)| (n.to_string(), h.to_string()))
            .collect()
    }

    #[test]
    fn creates_missing_and_removes_unwanted() {
        let p = plan(
            &want(&[("a", "h1"), ("b", "h1")]),
            &BTreeSet::new(),
            &[e("p-a", "a", "h1", true, false), e("p-c", "c", "h1", true, false)],
        );
        assert_eq!(p.create, vec!["b"]);
        assert_eq!(p.delete, vec!["p-c"], "idle: deleted without a drain");
        assert_eq!(p.roll, None);
    }

    #[test]
    fn rolls_one_at_a_time_when_all_ready() {
        let d = want(&[("a", "h2"), ("b", "h2"), ("c", "h2")]);
        let pods = [
            e("p-a", "a", "h1", true, false),
            e("p-b", "b", "h1", true, false),
            e("p-c", "c", "h1", true, false),
        ];
        let p = plan(&d, &BTreeSet::new(), &pods);
        assert_eq!(p.roll.as_deref(), Some("p-a"));
        assert_eq!(p.outdated.len(), 3);
        // p-a draining: nothing else rolls, and its node waits for it to go.
        let pods2 = [
            e("p-a", "a", "h1", true, true),
            e("p-b", "b", "h1", true, false),
            e("p-c", "c", "h1", true, false),
        ];
        let p2 = plan(&d, &BTreeSet::new(), &pods2);
        assert_eq!(p2.roll, None);
        assert!(p2.create.is_empty());
        assert_eq!(p2.draining, vec!["p-a"]);
        // Gone: recreate a.
        let p3 = plan(&d, &BTreeSet::new(), &pods2[1..]);
        assert_eq!(p3.create, vec!["a"]);
        assert_eq!(p3.roll, None);
        // New a not ready yet: wait.
        let pods4 = [
            e("p-a", "a", "h2", false, false),
            e("p-b", "b", "h1", true, false),
            e("p-c", "c", "h1", true, false),
        ];
        assert_eq!(plan(&d, &BTreeSet::new(), &pods4).roll, None);
        // Ready: next.
        let pods5 = [
            e("p-a", "a", "h2", true, false),
            e("p-b", "b", "h1", true, false),
            e("p-c", "c", "h1", true, false),
        ];
        assert_eq!(plan(&d, &BTreeSet::new(), &pods5).roll.as_deref(), Some("p-b"));
    }

    #[test]
    fn unready_outdated_pod_rolls_first() {
        let d = want(&[("a", "h2"), ("b", "h2")]);
        let pods = [
            e("p-a", "a", "h1", true, false),
            e("p-b", "b", "h1", false, false),
        ];
        assert_eq!(plan(&d, &BTreeSet::new(), &pods).roll.as_deref(), Some("p-b"));
    }

    #[test]
    fn kept_nodes_keep_their_pod() {
        let keep = BTreeSet::from(["a".to_string()]);
        let p = plan(&want(&[]), &keep, &[e("p-a", "a", "h1", true, false)]);
        assert!(p.delete.is_empty() && p.drain.is_empty());
    }

    fn busy(name: &str, node: &str, sessions: Option<u64>) -> Existing {
        Existing {
            sessions,
            ..e(name, node, "h1", true, false)
        }
    }

    #[test]
    fn leaving_nodes_go_within_the_budget_busy_ones_drained_first() {
        let d = want(&[("ok", "h1")]);
        let leaving = BTreeMap::from([
            ("a".to_string(), Leave::NotReady),
            ("b".to_string(), Leave::Other),
            ("c".to_string(), Leave::Other),
        ]);
        let pods = [
            busy("p-ok", "ok", Some(1)),
            busy("p-a", "a", Some(3)),
            busy("p-b", "b", Some(0)),
            busy("p-c", "c", None),
        ];
        let p = super::plan(&d, &BTreeSet::new(), &leaving, &pods, 1);
        assert_eq!(p.drain, ["p-a"], "busy: drained through its API, not deleted");
        assert!(p.delete.is_empty() && p.roll.is_none());
        assert_eq!(p.waiting.len(), 2, "{:?}", p.waiting);
        assert!(p.waiting.iter().all(|(_, why)| why.contains("maxUnavailable 1")));
        // A budget of 3: all at once; idle p-b deleted; unreachable p-c on an up node deleted.
        let p = super::plan(&d, &BTreeSet::new(), &leaving, &pods, 3);
        assert_eq!(
            (p.drain.clone(), p.delete.clone()),
            (
                vec!["p-a".to_string()],
                vec!["p-b".to_string(), "p-c".to_string()]
            )
        );
    }

    #[test]
    fn a_drained_pod_is_deleted_when_idle_and_its_drain_cancelled_when_the_node_returns() {
        let leaving = BTreeMap::from([("a".to_string(), Leave::NotReady)]);
        let drained = |sessions| Existing {
            drain_requested: true,
            ..busy("p-a", "a", sessions)
        };
        let others = busy("p-b", "b", Some(0));
        let d = want(&[("b", "h1")]);
        let p = super::plan(
            &d,
            &BTreeSet::new(),
            &leaving,
            &[drained(Some(2)), others.clone()],
            1,
        );
        assert!(
            p.delete.is_empty() && p.draining == ["p-a"] && p.waiting[0].1.contains("2 live"),
            "{p:?}"
        );
        let p = super::plan(
            &d,
            &BTreeSet::new(),
            &leaving,
            &[drained(Some(0)), others.clone()],
            1,
        );
        assert_eq!(p.delete, ["p-a"]);
        let p = super::plan(
            &d,
            &BTreeSet::new(),
            &leaving,
            &[drained(None), others.clone()],
            1,
        );
        assert!(p.delete.is_empty(), "unreachable on a NotReady node: wait");
        let expired = Existing {
            drain_expired: true,
            ..drained(Some(2))
        };
        assert_eq!(
            super::plan(&d, &BTreeSet::new(), &leaving, &[expired, others.clone()], 1).delete,
            ["p-a"]
        );
        // The node is back (desired again): cancel, nothing deleted, nothing created.
        let d2 = want(&[("a", "h1"), ("b", "h1")]);
        let p = super::plan(
            &d2,
            &BTreeSet::new(),
            &BTreeMap::new(),
            &[drained(Some(2)), others],
            1,
        );
        assert_eq!(p.cancel, ["p-a"]);
        assert!(
            p.delete.is_empty() && p.create.is_empty() && p.draining.is_empty(),
            "{p:?}"
        );
    }

    #[test]
    fn an_unreachable_pod_on_a_not_ready_node_waits_until_the_node_is_gone() {
        let d = want(&[("b", "h1")]);
        let others = busy("p-b", "b", Some(0));
        let stuck = busy("p-a", "a", None);
        let not_ready = BTreeMap::from([("a".to_string(), Leave::NotReady)]);
        let p = super::plan(
            &d,
            &BTreeSet::new(),
            &not_ready,
            &[stuck.clone(), others.clone()],
            1,
        );
        assert!(
            p.delete.is_empty() && p.force_delete.is_empty() && p.waiting.len() == 1,
            "{p:?}"
        );
        assert!(p.roll.is_none(), "no roll while a node is leaving");
        let gone = BTreeMap::from([("a".to_string(), Leave::Gone)]);
        let p = super::plan(&d, &BTreeSet::new(), &gone, &[stuck.clone(), others.clone()], 1);
        assert_eq!(p.force_delete, ["p-a"]);
        // A terminating pod on a gone node is force-deleted too, outside the budget.
        let term = Existing {
            terminating: true,
            ..stuck
        };
        let p = super::plan(&d, &BTreeSet::new(), &gone, &[term, others], 1);
        assert_eq!(p.force_delete, ["p-a"]);
    }

    #[test]
    fn a_roll_waits_for_the_budget() {
        let d = want(&[("a", "h2"), ("b", "h2")]);
        let held = Existing {
            drain_requested: true,
            ..busy("p-x", "x", Some(1))
        };
        let keep = BTreeSet::from(["x".to_string()]);
        let pods = [busy("p-a", "a", Some(0)), busy("p-b", "b", Some(0)), held];
        let p = super::plan(&d, &keep, &BTreeMap::new(), &pods, 1);
        assert_eq!(p.roll, None, "a drained pod on a held node uses the budget");
        assert_eq!(
            super::plan(&d, &keep, &BTreeMap::new(), &pods, 2).roll.as_deref(),
            Some("p-a")
        );
    }
}
