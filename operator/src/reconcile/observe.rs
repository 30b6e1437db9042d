//! Phase 7, observing and reporting: each node's entry in status (its pod, address, state, rtcd's
//! health), the problems that make the cluster Degraded, and the status write, which happens only
//! on a meaningful change: a change of instances' load or session counts, or of the canary's
//! round trips, alone is written at most every [`LOAD_REFRESH`] (they are in metrics too).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;

use super::{desired::Desired, problem};
use crate::{
    Result,
    controller::Context,
    crd::{NodeStatus, RtcdCluster, RtcdClusterStatus},
    health::Health,
    plan::Plan,
    resources::{self, ANN_NODE, ANN_SPEC_HASH, FIELD_MANAGER},
    status::{self, Problem, Summary, reasons},
};

/// How often a status that differs only in load and session counts is written.
pub(super) const LOAD_REFRESH: Duration = Duration::from_secs(300);

/// Each listed node's status entry, the problems found, and how many desired nodes are ready.
pub(super) async fn nodes(
    ctx: &Context,
    cr: &RtcdCluster,
    d: &Desired,
    pods: &[Pod],
    health: &BTreeMap<String, Health>,
    plan: &Plan,
) -> (Vec<NodeStatus>, Vec<Problem>, usize) {
    let hashes: BTreeMap<&String, Option<&String>> = d
        .pods
        .iter()
        .map(|(n, p)| (n, p.annotations().get(ANN_SPEC_HASH)))
        .collect();
    let mut problems = Vec::new();
    let mut node_status = Vec::new();
    let mut ready_count = 0;
    let mut all_listed: BTreeSet<String> = d.pods.keys().cloned().collect();
    all_listed.extend(pods.iter().filter_map(|p| p.annotations().get(ANN_NODE).cloned()));
    all_listed.extend(d.addresses.keys().cloned());
    for node in &all_listed {
        let p = pods
            .iter()
            .filter(|p| p.annotations().get(ANN_NODE) == Some(node))
            .min_by_key(|p| p.metadata.deletion_timestamp.is_some());
        let mut entry = NodeStatus {
            node: node.clone(),
            pod: p.map(ResourceExt::name_any),
            address: p
                .and_then(|p| p.annotations().get(resources::ANN_ADDRESS).cloned())
                .or_else(|| d.addresses.get(node).and_then(|a| a.clone().ok())),
            ready: false,
            state: "Pending".into(),
            cpu_load: None,
            sessions: None,
            message: None,
            restarts: None,
            last_restart: None,
            probe: None,
        };
        let Some(p) = p else {
            entry.state = match d.addresses.get(node) {
                Some(Err(e)) if e.contains("LoadBalancer") => "WaitingForLoadBalancer".into(),
                Some(Err(e)) if e.starts_with("no address") => "WaitingForAddress".into(),
                Some(Err(_)) => "Removed".into(),
                _ => "Pending".into(),
            };
            entry.message = d.addresses.get(node).and_then(|a| a.clone().err());
            node_status.push(entry);
            continue;
        };
        entry.state = if p.metadata.deletion_timestamp.is_some() {
            "Draining".into()
        } else if hashes
            .get(node)
            .is_some_and(|h| p.annotations().get(ANN_SPEC_HASH) != *h)
        {
            "Updating".into()
        } else {
            p.status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into())
        };
        if let Some(reason) = image_problem(p) {
            problems.push(problem(reasons::IMAGE_PULL_ERROR, node, reason.clone()));
            ctx.event(
                cr,
                EventType::Warning,
                reasons::IMAGE_PULL_ERROR,
                "ObservePod",
                &format!("node {node}: {reason}"),
            )
            .await;
            entry.message = Some(reason);
        }
        if let Some((restarts, last)) = restarts(p) {
            let before = cr
                .status
                .as_ref()
                .and_then(|s| s.nodes.iter().find(|n| &n.node == node))
                .filter(|n| n.pod == entry.pod)
                .and_then(|n| n.restarts)
                .unwrap_or(0);
            if restarts > before {
                ctx.event(
                    cr,
                    EventType::Warning,
                    "InstanceRestarted",
                    "ObservePod",
                    &format!("node {node}: rtcd restarted ({restarts} in all); its last run: {last}"),
                )
                .await;
            }
            entry.restarts = Some(restarts);
            entry.last_restart = Some(last);
        }
        if let Some(why) = d.triage.held.get(node) {
            entry.message = Some(why.clone());
        }
        let mut healthy = false;
        if let Some(h) = health.get(&p.name_any()) {
            entry.cpu_load = h.cpu_load;
            entry.sessions = h.sessions;
            healthy = h.ok;
            if h.draining && entry.state != "Draining" {
                entry.state = "Draining".into();
            }
            if let Some(e) = &h.error {
                entry
                    .message
                    .get_or_insert_with(|| format!("health check failed: {e}"));
            }
        }
        entry.ready = pod_ready(p) && healthy && p.metadata.deletion_timestamp.is_none();
        if d.pods.contains_key(node) || d.keep.contains(node) {
            if entry.ready {
                ready_count += 1;
            } else if entry.state != "Draining" {
                let why = if !pod_ready(p) {
                    "pod is not ready".to_string()
                } else {
                    entry
                        .message
                        .clone()
                        .unwrap_or_else(|| "rtcd health is not ok".into())
                };
                entry.message.get_or_insert_with(|| why.clone());
                if !plan.create.contains(node) {
                    problems.push(problem(reasons::POD_NOT_READY, node, why));
                }
            }
        }
        ctx.metrics.instance(
            &cr.namespace().unwrap_or_default(),
            &cr.name_any(),
            node,
            entry.sessions,
            entry.cpu_load,
        );
        node_status.push(entry);
    }
    (node_status, problems, ready_count)
}

/// The Ready condition of pod `p` is True.
pub(super) fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Why pod `p`'s image cannot run, if it cannot (pull errors, a bad image name).
fn image_problem(p: &Pod) -> Option<String> {
    let st = p.status.as_ref()?;
    st.init_container_statuses
        .iter()
        .flatten()
        .chain(st.container_statuses.iter().flatten())
        .find_map(|c| {
            let w = c.state.as_ref()?.waiting.as_ref()?;
            let reason = w.reason.as_deref()?;
            matches!(
                reason,
                "ErrImagePull" | "ImagePullBackOff" | "InvalidImageName" | "ErrImageNeverPull"
            )
            .then(|| {
                format!(
                    "container {} cannot pull {}: {reason}{}",
                    c.name,
                    c.image,
                    w.message
                        .as_deref()
                        .map(|m| format!(" ({m})"))
                        .unwrap_or_default()
                )
            })
        })
}

/// Status for a pass that changed nothing: the node list stays as last observed.
pub(super) async fn write_kept_status(
    cr: &RtcdCluster,
    ctx: &Context,
    prev: &RtcdClusterStatus,
    summary: Summary,
    credentials_secret: Option<String>,
) -> Result<()> {
    write_status(cr, ctx, prev, summary, prev.nodes.clone(), credentials_secret).await
}

/// Writes the status if it changed meaningfully (see the module's note).
pub(super) async fn write_status(
    cr: &RtcdCluster,
    ctx: &Context,
    prev: &RtcdClusterStatus,
    summary: Summary,
    mut nodes: Vec<NodeStatus>,
    credentials_secret: Option<String>,
) -> Result<()> {
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    let now = Timestamp::now().to_string();
    let status = RtcdClusterStatus {
        observed_generation: cr.metadata.generation,
        conditions: status::compute(&prev.conditions, cr.metadata.generation, &now, &summary),
        ready_nodes: Some(status::ready_nodes(&nodes, summary.desired)),
        credentials_secret,
        nodes,
    };
    let Some(current) = cr.status.as_ref() else {
        return patch_status(cr, ctx, &status).await;
    };
    if *current == status {
        return Ok(());
    }
    let key = format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any());
    let threshold = cr.spec.probe.failure_threshold;
    if without_load(current, threshold) == without_load(&status, threshold)
        && !ctx.status_refresh_due(&key, LOAD_REFRESH)
    {
        return Ok(());
    }
    patch_status(cr, ctx, &status).await?;
    ctx.status_written(&key);
    Ok(())
}

/// `s` without the figures that move all the time: load, session counts beyond idle/busy (the
/// canary's calls are not sessions: rtcd does not count canary clients), the canary's times and round trips, and its count of failures beyond the `threshold` that
/// decides.
fn without_load(s: &RtcdClusterStatus, threshold: u32) -> RtcdClusterStatus {
    let mut s = s.clone();
    for n in &mut s.nodes {
        n.cpu_load = None;
        n.sessions = n.sessions.map(|x| x.min(1));
        if let Some(p) = &mut n.probe {
            p.last_probe_time.clear();
            p.consecutive_failures = p.consecutive_failures.min(threshold);
            for t in &mut p.transports {
                t.rtt_ms = None;
                t.connect_ms = None;
            }
        }
    }
    s
}

async fn patch_status(cr: &RtcdCluster, ctx: &Context, status: &RtcdClusterStatus) -> Result<()> {
    let crs: Api<RtcdCluster> = Api::namespaced(ctx.client.clone(), &cr.namespace().unwrap_or_default());
    let body = json!({
        "apiVersion": RtcdCluster::api_version(&()),
        "kind": RtcdCluster::kind(&()),
        "status": status,
    });
    crs.patch_status(
        &cr.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// The rtcd container's restart count, when the kubelet restarted it, and how its previous run
/// ended.
fn restarts(p: &Pod) -> Option<(i32, String)> {
    let cs = p
        .status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == "rtcd")?;
    if cs.restart_count == 0 {
        return None;
    }
    let last = cs
        .last_state
        .as_ref()
        .and_then(|l| l.terminated.as_ref())
        .map(|t| {
            let mut s = format!("exit {}", t.exit_code);
            if let Some(sig) = t.signal.filter(|s| *s != 0) {
                s.push_str(&format!(" (signal {sig})"));
            }
            if let Some(r) = &t.reason {
                s.push_str(&format!(" ({r})"));
            }
            if let Some(at) = &t.finished_at {
                s.push_str(&format!(" at {}", at.0));
            }
            s
        })
        .unwrap_or_else(|| "unknown".into());
    Some((cs.restart_count, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_rtcd_is_described_from_its_container_status() {
        let pod: Pod = serde_json::from_value(json!({"status": {"containerStatuses": [
            {"name": "sidecar", "restartCount": 7, "ready": true, "image": "x", "imageID": "x"},
            {"name": "rtcd", "restartCount": 1, "ready": true, "image": "x", "imageID": "x",
             "lastState": {"terminated": {"exitCode": 137, "reason": "Error",
                                          "finishedAt": "2026-12-07T16:40:02Z"}}}]}}))
        .expect("pod");
        assert_eq!(
            restarts(&pod),
            Some((1, "exit 137 (Error) at 2026-12-07T16:40:02Z".into()))
        );
        let fresh: Pod = serde_json::from_value(json!({"status": {"containerStatuses": [
            {"name": "rtcd", "restartCount": 0, "ready": true, "image": "x", "imageID": "x"}]}}))
        .expect("pod");
        assert_eq!(restarts(&fresh), None);
    }

    #[test]
    fn load_figures_alone_are_not_a_meaningful_change_but_idle_to_busy_is() {
        let entry = |cpu: Option<f64>, sessions: Option<u64>| NodeStatus {
            node: "a".into(),
            pod: Some("p".into()),
            address: None,
            ready: true,
            state: "Running".into(),
            cpu_load: cpu,
            sessions,
            message: None,
            restarts: None,
            last_restart: None,
            probe: None,
        };
        let status = |e: NodeStatus| RtcdClusterStatus {
            nodes: vec![e],
            ..RtcdClusterStatus::default()
        };
        let a = status(entry(Some(0.1), Some(3)));
        assert_eq!(
            without_load(&a, 2),
            without_load(&status(entry(Some(0.7), Some(9))), 2)
        );
        assert_ne!(
            without_load(&a, 2),
            without_load(&status(entry(Some(0.1), Some(0))), 2)
        );
        let mut b = a.clone();
        b.nodes[0].ready = false;
        assert_ne!(without_load(&a, 2), without_load(&b, 2));
        // The canary: new times and round trips are not news, a new verdict or count is, up to
        // the threshold.
        let probed = |failures: u32, rtt: f64, at: &str| {
            let mut s = a.clone();
            s.nodes[0].probe = Some(crate::crd::ProbeStatus {
                result: if failures == 0 { "Reachable" } else { "Unreachable" }.into(),
                consecutive_failures: failures,
                last_probe_time: at.into(),
                message: None,
                transports: vec![crate::crd::TransportProbe {
                    transport: "udp".into(),
                    reachable: failures == 0,
                    rtt_ms: Some(rtt),
                    connect_ms: Some(rtt * 3.0),
                    candidate: Some("udp 203.0.113.7:8443".into()),
                }],
            });
            s
        };
        assert_eq!(
            without_load(&probed(0, 0.4, "t1"), 2),
            without_load(&probed(0, 9.1, "t2"), 2)
        );
        assert_ne!(
            without_load(&probed(0, 0.4, "t1"), 2),
            without_load(&probed(1, 0.4, "t1"), 2)
        );
        assert_ne!(
            without_load(&probed(1, 0.4, "t1"), 2),
            without_load(&probed(2, 0.4, "t1"), 2)
        );
        assert_eq!(
            without_load(&probed(2, 0.4, "t1"), 2),
            without_load(&probed(7, 0.4, "t2"), 2)
        );
    }
}
