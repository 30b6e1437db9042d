//! Phase 6, acting on the rollout plan: create pods, drain instances through their API (and
//! cancel drains), delete pods, roll one, and keep the autoscalers' annotations in line with each
//! instance's live calls. Each action is an Event and a progress line.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
};

use k8s_openapi::{api::core::v1::Pod, jiff::Timestamp};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, Patch, PatchParams},
    runtime::events::EventType,
};
use serde_json::json;

use super::{
    children::{apply, delete_pod},
    problem,
};
use crate::{
    Result,
    controller::Context,
    crd::RtcdCluster,
    health::{self, Health},
    plan::Plan,
    resources::{self, ANN_DRAIN_REQUESTED},
    status::{Problem, reasons},
};

/// What acting needs besides the plan.
pub(super) struct Scene<'a> {
    /// The cluster.
    pub cr: &'a RtcdCluster,
    /// Its namespace's pods API.
    pub pods_api: &'a Api<Pod>,
    /// Its pods, as observed.
    pub pods: &'a [Pod],
    /// Node → desired pod.
    pub desired: &'a BTreeMap<String, Pod>,
    /// Pod name → its rtcd's health.
    pub health: &'a BTreeMap<String, Health>,
    /// Node → why it has no address (for Events).
    pub addresses: &'a BTreeMap<String, Result<String, String>>,
    /// The admin key, for the drain API.
    pub admin_key: &'a str,
    /// The pods' API port.
    pub api_port: u16,
    /// Now.
    pub now: Timestamp,
}

impl Scene<'_> {
    fn node_of(&self, pod: &str) -> String {
        self.pods
            .iter()
            .find(|p| p.name_any() == pod)
            .and_then(|p| p.annotations().get(resources::ANN_NODE).cloned())
            .unwrap_or_default()
    }

    fn pod_addr(&self, name: &str) -> Option<SocketAddr> {
        self.pods
            .iter()
            .find(|p| p.name_any() == name)
            .and_then(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, self.api_port))
    }

    fn uid_of(&self, name: &str) -> Option<String> {
        self.pods
            .iter()
            .find(|p| p.name_any() == name)
            .and_then(ResourceExt::uid)
    }

    fn why_leaving(&self, node: &str) -> String {
        self.addresses
            .get(node)
            .and_then(|a| a.clone().err())
            .unwrap_or_else(|| "node is gone".into())
    }

    async fn annotate(&self, name: &str, patch: &serde_json::Value) -> Result<()> {
        match self
            .pods_api
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Carries out `plan`; returns the progress lines.
pub(super) async fn act(ctx: &Context, s: &Scene<'_>, plan: &Plan) -> Result<Vec<Problem>> {
    let cr = s.cr;
    let mut progress = Vec::new();
    for node in &plan.create {
        if let Some(p) = s.desired.get(node) {
            apply(s.pods_api, p).await?;
            progress.push(problem(reasons::CREATING_PODS, node, "creating pod".into()));
            ctx.event(
                cr,
                EventType::Normal,
                "PodCreated",
                "CreatePod",
                &format!("created {} on node {node}", p.name_any()),
            )
            .await;
        }
    }
    for name in &plan.drain {
        let node = s.node_of(name);
        let Some(addr) = s.pod_addr(name) else { continue };
        match health::set_drain(addr, s.admin_key, true).await {
            Ok(()) => {
                s.annotate(
                    name,
                    &json!({"metadata": {"annotations": {ANN_DRAIN_REQUESTED: s.now.to_string()}}}),
                )
                .await?;
                ctx.health.forget(s.uid_of(name).as_deref());
                progress.push(problem(reasons::DRAINING, &node, format!("draining {name}")));
                ctx.event(
                    cr,
                    EventType::Normal,
                    "InstanceDraining",
                    "DrainInstance",
                    &format!(
                        "{name} takes no new calls; its live calls go on ({})",
                        s.why_leaving(&node)
                    ),
                )
                .await;
            }
            Err(e) => progress.push(problem(
                reasons::WAITING_TO_LEAVE,
                &node,
                format!("{name}: cannot start its drain: {e}"),
            )),
        }
    }
    for name in &plan.cancel {
        let node = s.node_of(name);
        let Some(addr) = s.pod_addr(name) else { continue };
        match health::set_drain(addr, s.admin_key, false).await {
            Ok(()) => {
                s.annotate(
                    name,
                    &json!({"metadata": {"annotations": {ANN_DRAIN_REQUESTED: null}}}),
                )
                .await?;
                ctx.health.forget(s.uid_of(name).as_deref());
                ctx.event(
                    cr,
                    EventType::Normal,
                    reasons::DRAIN_CANCELLED,
                    "CancelDrain",
                    &format!("node {node} is back: {name} takes calls again"),
                )
                .await;
            }
            Err(e) => progress.push(problem(
                reasons::DRAINING,
                &node,
                format!("{name}: cannot cancel its drain yet: {e}"),
            )),
        }
    }
    for (name, force) in plan
        .delete
        .iter()
        .map(|n| (n, false))
        .chain(plan.force_delete.iter().map(|n| (n, true)))
    {
        let node = s.node_of(name);
        // A pod whose node is gone has no kubelet to drain it; anything else drains in full.
        let dp = if force {
            DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            }
        } else {
            DeleteParams::default()
        };
        delete_pod(s.pods_api, name, &dp).await?;
        progress.push(problem(reasons::DRAINING, &node, format!("removing {name}")));
        ctx.event(
            cr,
            EventType::Normal,
            "PodDraining",
            "DeletePod",
            &format!("removing {name}: {}", s.why_leaving(&node)),
        )
        .await;
    }
    for (name, why) in &plan.waiting {
        progress.push(problem(
            reasons::WAITING_TO_LEAVE,
            &s.node_of(name),
            format!("{name} {why}"),
        ));
    }
    if let Some(name) = &plan.roll {
        delete_pod(s.pods_api, name, &DeleteParams::default()).await?;
        ctx.event(
            cr,
            EventType::Normal,
            "RollingUpdate",
            "DeletePod",
            &format!("rolling {name} to the new spec"),
        )
        .await;
    }
    for name in &plan.outdated {
        progress.push(problem(
            reasons::ROLLING_UPDATE,
            &s.node_of(name),
            format!("{name} waits to roll"),
        ));
    }
    for name in &plan.draining {
        progress.push(problem(
            reasons::DRAINING,
            &s.node_of(name),
            format!("{name} is draining"),
        ));
    }

    // Autoscalers leave a node alone while its instance carries calls.
    let removed: BTreeSet<&String> = plan
        .delete
        .iter()
        .chain(&plan.force_delete)
        .chain(&plan.roll)
        .collect();
    for p in s
        .pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !removed.contains(&p.name_any()))
    {
        let Some(sessions) = s
            .health
            .get(&p.name_any())
            .filter(|h| h.ok || h.draining)
            .and_then(|h| h.sessions)
        else {
            continue;
        };
        if let Some(patch) = resources::eviction_patch(p, sessions > 0) {
            s.annotate(&p.name_any(), &patch).await?;
        }
    }
    Ok(progress)
}
