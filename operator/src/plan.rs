//! The rollout decision, pure: given the pods each node should run and the pods that exist,
//! which to create and which to delete now. New nodes get pods at once; removed or ineligible
//! nodes are drained at once; spec changes roll one node at a time, and only while every other
//! instance is ready, so a config change never cuts every call together.

use std::collections::{BTreeMap, BTreeSet};

/// An existing rtcd pod, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
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
}

/// What to do now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Nodes whose pod to create.
    pub create: Vec<String>,
    /// Pods to delete because their node no longer runs rtcd.
    pub remove: Vec<String>,
    /// Pod to delete to roll it to the new spec (at most one).
    pub roll: Option<String>,
    /// Pods waiting for their turn to roll.
    pub outdated: Vec<String>,
    /// Pods draining now.
    pub draining: Vec<String>,
}

/// `desired`: node → spec hash. `keep`: nodes without a desired pod whose existing pod stays
/// (e.g. its address vanished: better a stale address than cutting live calls).
pub fn plan(desired: &BTreeMap<String, String>, keep: &BTreeSet<String>, existing: &[Existing]) -> Plan {
    let mut p = Plan::default();
    let mut by_node: BTreeMap<&str, Vec<&Existing>> = BTreeMap::new();
    for e in existing {
        by_node.entry(e.node.as_str()).or_default().push(e);
    }
    for e in existing.iter().filter(|e| e.terminating) {
        p.draining.push(e.name.clone());
    }
    for (node, pods) in &by_node {
        let live: Vec<&&Existing> = pods.iter().filter(|e| !e.terminating).collect();
        if !desired.contains_key(*node) && !keep.contains(*node) {
            p.remove.extend(live.iter().map(|e| e.name.clone()));
            continue;
        }
        // More than one live pod on a node (never made by us, but be safe): keep the first by
        // name, remove the others.
        for extra in live.iter().skip(1) {
            p.remove.push(extra.name.clone());
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
        .filter(|e| !p.remove.contains(&e.name))
        .collect();
    outdated.sort_by(|a, b| a.node.cmp(&b.node));
    p.outdated = outdated.iter().map(|e| e.name.clone()).collect();
    // One at a time: nothing else draining or missing, and every other desired pod ready.
    let others_ready = desired.keys().all(|node| {
        by_node
            .get(node.as_str())
            .is_some_and(|pods| pods.iter().any(|e| !e.terminating && e.ready))
    });
    let quiet = p.draining.is_empty() && p.create.is_empty() && p.remove.is_empty();
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
        }
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
        assert_eq!(p.remove, vec!["p-c"]);
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
        assert!(p.remove.is_empty());
    }
}
