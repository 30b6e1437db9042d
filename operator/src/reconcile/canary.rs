//! Phase 8b, the connectivity canary: every ready instance that takes calls is a target of the
//! background prober ([`crate::probe`]); each node's status entry gets its last probe; a node the
//! canary failed `spec.probe.failureThreshold` times in a row is a `ProbeFailed` problem, with a
//! Warning Event when it starts failing and a Normal one when it answers again.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;
use kube::{
    ResourceExt,
    runtime::{events::EventType, reflector::ObjectRef},
};

use crate::{
    controller::Context,
    crd::{NodeStatus, ProbeStatus, RtcdCluster},
    health::Health,
    probe::{self, Target},
    resources::lint,
    status::{Problem, reasons},
};

/// An instance whose `/system` cpu_load is at least this is full and refuses joins
/// (`rtcd::system`): probing it would only be refused.
const FULL_LOAD: f64 = 2.0;

/// Replaces the canary's targets for `cr` (none: it stops probing `cr`); the series of nodes no
/// longer probed go.
pub(super) fn set_targets(ctx: &Context, cr: &RtcdCluster, targets: Vec<Target>) {
    let (ns, name) = (cr.namespace().unwrap_or_default(), cr.name_any());
    for gone in ctx.probes.set_targets(&crate::controller::key_of(cr), targets) {
        ctx.metrics.forget_probe(&ns, &name, &gone);
    }
}

/// Sets the canary's targets for `cr`, fills `nodes[].probe`, emits the Events of nodes that
/// start or stop failing, and returns the failing nodes as problems.
pub(super) async fn probes(
    ctx: &Context,
    cr: &RtcdCluster,
    nodes: &mut [NodeStatus],
    pods: &[Pod],
    health: &BTreeMap<String, Health>,
    admin_key: &str,
) -> Vec<Problem> {
    let prev = cr.status.clone().unwrap_or_default();
    let api_port = cr.spec.config.api_port;
    let spec = &cr.spec.probe;
    let threshold = spec.failure_threshold.max(1);
    let uid_of = |pod: Option<&String>| {
        let p = pods.iter().find(|p| Some(&p.name_any()) == pod)?;
        Some((p.uid()?, p))
    };
    let targets: Vec<Target> = if spec.enabled {
        nodes
            .iter()
            .filter(|n| n.ready && n.state != "Draining")
            .filter_map(|n| {
                let (uid, p) = uid_of(n.pod.as_ref())?;
                if health
                    .get(&p.name_any())
                    .and_then(|h| h.cpu_load)
                    .is_some_and(|l| l >= FULL_LOAD)
                {
                    return None;
                }
                let ip = p.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
                Some(Target {
                    cluster: ObjectRef::from_obj(cr),
                    node: n.node.clone(),
                    pod_uid: uid,
                    api: std::net::SocketAddr::new(ip, api_port),
                    advertised: lint::advertised_host(n.address.as_deref()?).to_string(),
                    admin_key: admin_key.to_string(),
                    interval: std::time::Duration::from_secs(u64::from(spec.interval_seconds.max(5))),
                    timeout: std::time::Duration::from_secs(u64::from(spec.timeout_seconds.max(1))),
                    failure_threshold: threshold,
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    set_targets(ctx, cr, targets);
    let failing = |p: Option<&ProbeStatus>| p.is_some_and(|p| p.consecutive_failures >= threshold);
    let mut problems = Vec::new();
    for n in nodes.iter_mut() {
        n.probe = uid_of(n.pod.as_ref()).and_then(|(uid, _)| ctx.probes.status(&uid));
        let was = failing(
            prev.nodes
                .iter()
                .find(|p| p.node == n.node)
                .and_then(|p| p.probe.as_ref()),
        );
        let Some(p) = &n.probe else { continue };
        let message = p.message.clone().unwrap_or_else(|| p.result.clone());
        if failing(Some(p)) {
            let reason = if p.result == probe::results::ERROR {
                reasons::PROBE_ERROR
            } else {
                reasons::MEDIA_UNREACHABLE
            };
            if !was {
                ctx.event(
                    cr,
                    EventType::Warning,
                    crate::status::conditions::PROBE_FAILED,
                    "ProbeInstance",
                    &format!(
                        "node {}: {message} ({} probes in a row)",
                        n.node, p.consecutive_failures
                    ),
                )
                .await;
            }
            problems.push(Problem {
                reason,
                node: n.node.clone(),
                detail: message,
            });
        } else if was && p.result == probe::results::REACHABLE {
            let over: Vec<&str> = p.transports.iter().map(|t| t.transport.as_str()).collect();
            ctx.event(
                cr,
                EventType::Normal,
                reasons::PROBE_SUCCEEDED,
                "ProbeInstance",
                &format!(
                    "node {}: the canary connects to {} again over {}",
                    n.node,
                    n.address.as_deref().unwrap_or("its address"),
                    over.join(" and ")
                ),
            )
            .await;
        }
    }
    problems
}
