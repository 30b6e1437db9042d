//! One reconcile of an `RtcdCluster`, in phases over the watch caches: finalizer → validate →
//! Secrets ([`secrets`]) → Services, PDB, ServiceMonitor, each applied only when changed
//! ([`children`]) → `desired = f(spec, observed)` ([`desired`]) → the rollout plan
//! ([`crate::plan`]) carried out ([`act`]) → the canary's targets and answers ([`canary`]) →
//! status, written only on a meaningful change ([`observe`]). Deletion is [`cleanup`]. Nodes,
//! pods and Services come from the caches; rtcd's health from the background monitor's cache (a
//! pod about to leave is polled afresh).

mod act;
mod canary;
mod children;
mod cleanup;
mod desired;
mod observe;
mod secrets;

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::core::v1::{Node, Pod, Service},
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;

use crate::{
    Error, Result,
    controller::Context,
    crd::RtcdCluster,
    health::Health,
    plan::{self, Existing},
    resources::{ANN_DRAIN_REQUESTED, ANN_NODE, ANN_SPEC_HASH, FINALIZER, LABEL_CLUSTER, lint},
    status::{self, Problem, Summary, reasons},
    validate,
};

/// Health answers younger than this are used as they are (the monitor refreshes them).
const HEALTH_MAX_AGE: Duration = Duration::from_secs(30);
/// Requeue while something is moving.
const BUSY: Duration = Duration::from_secs(3);
/// Requeue when stable. Changes of nodes, pods, Services and instances' health arrive as events;
/// referenced Secrets are not watched (that would take list/watch on every Secret of the
/// namespace), so this is how soon a rotated Secret is seen.
const IDLE: Duration = Duration::from_secs(60);

/// Reconciles one cluster.
pub async fn reconcile(cr: Arc<RtcdCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&cr, &ctx).await;
    ctx.metrics.observe(&result, started.elapsed());
    if result.is_ok() {
        ctx.backoff_reset(&cr);
    }
    result
}

async fn reconcile_inner(cr: &RtcdCluster, ctx: &Context) -> Result<Action> {
    let ns = cr
        .namespace()
        .ok_or(Error::Invalid("RtcdCluster without namespace".into()))?;
    // Decisions need complete caches: an empty node cache would read as "no node".
    if !ctx.stores.wait_ready(Duration::from_secs(10)).await {
        return Ok(Action::requeue(BUSY));
    }
    if cr.meta().deletion_timestamp.is_some() {
        return cleanup::cleanup(cr, ctx, &ns).await;
    }
    if !cr.finalizers().iter().any(|f| f == FINALIZER) {
        let mut f = cr.finalizers().to_vec();
        f.push(FINALIZER.into());
        let patch = json!({"metadata": {"finalizers": f, "resourceVersion": cr.resource_version()}});
        let crs: Api<RtcdCluster> = Api::namespaced(ctx.client.clone(), &ns);
        crs.patch(&cr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    let prev = cr.status.clone().unwrap_or_default();

    // 1. A spec the schema let through but that cannot work: change nothing, say which field.
    let errors = validate::validate(&cr.spec, &ctx.sysctl_images);
    if !errors.is_empty() {
        let detail = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        ctx.event(cr, EventType::Warning, reasons::INVALID_SPEC, "Validate", &detail)
            .await;
        let summary = blocked(reasons::INVALID_SPEC, detail);
        observe::write_kept_status(cr, ctx, &prev, summary, prev.credentials_secret.clone()).await?;
        return Ok(Action::requeue(IDLE));
    }

    // 2. Secrets.
    let secrets = match secrets::resolve(cr, ctx, &ns).await? {
        Ok(r) => r,
        Err(detail) => {
            ctx.event(
                cr,
                EventType::Warning,
                reasons::SECRET_MISSING,
                "Validate",
                &detail,
            )
            .await;
            let summary = blocked(reasons::SECRET_MISSING, detail);
            let name = cr.spec.credentials.as_ref().map_or_else(
                || crate::resources::credentials_secret_name(cr),
                |c| c.name.clone(),
            );
            observe::write_kept_status(cr, ctx, &prev, summary, Some(name)).await?;
            // Secrets are not watched: look again soon.
            return Ok(Action::requeue(Duration::from_secs(20)));
        }
    };

    // 3. What is observed, from the caches.
    let cluster = cr.name_any();
    let mine = |labels: &BTreeMap<String, String>| labels.get(LABEL_CLUSTER) == Some(&cluster);
    let nodes: Vec<Node> = ctx.stores.nodes.state().iter().map(|n| (**n).clone()).collect();
    let pods: Vec<Pod> = ctx
        .stores
        .pods
        .state()
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()) && mine(p.labels()))
        .map(|p| (**p).clone())
        .collect();
    let media: Vec<Service> = ctx
        .stores
        .services
        .state()
        .iter()
        .filter(|s| s.namespace().as_deref() == Some(ns.as_str()) && mine(s.labels()))
        .filter(|s| s.annotations().contains_key(ANN_NODE))
        .map(|s| (**s).clone())
        .collect();
    let now = Timestamp::now();

    // 4. desired = f(spec, observed).
    // When the partition guard last turned off: its condition's transition to False, or now
    // if it is still on (should it lift in this pass, the grace starts now).
    let guard_lifted = prev
        .conditions
        .iter()
        .find(|c| c.type_ == status::conditions::NODES_PARTITIONED)
        .and_then(|c| {
            if c.status == "True" {
                Some(now)
            } else {
                c.last_transition_time.parse::<Timestamp>().ok()
            }
        });
    let d = desired::desired(cr, &secrets, &nodes, &pods, &media, now, guard_lifted);
    if let Some(why) = &d.triage.partition {
        let was = prev
            .conditions
            .iter()
            .any(|c| c.type_ == status::conditions::NODES_PARTITIONED && c.status == "True");
        if !was {
            ctx.event(
                cr,
                EventType::Warning,
                reasons::PARTITION_SUSPECTED,
                "TriageNodes",
                why,
            )
            .await;
        }
    }
    for p in d.problems.iter().filter(|p| p.reason == reasons::ADDRESS_MISSING) {
        let known = prev
            .nodes
            .iter()
            .any(|n| n.node == p.node && n.message.as_deref() == Some(p.detail.as_str()));
        if !known {
            ctx.event(
                cr,
                EventType::Warning,
                reasons::ADDRESS_MISSING,
                "ChooseAddress",
                &format!("node {}: {}", p.node, p.detail),
            )
            .await;
        }
    }

    // 4b. Address linting: what each node advertises, checked before it takes traffic.
    let findings = lint_addresses(cr, ctx, &nodes, &d.addresses).await;
    let cluster_name = cr.name_any();
    for (node, a) in &d.addresses {
        if a.is_ok() {
            let ok = !findings.iter().any(|f| &f.node == node);
            ctx.metrics.address_ok(&ns, &cluster_name, node, ok);
        }
    }
    let prev_addresses = prev
        .conditions
        .iter()
        .find(|c| c.type_ == status::conditions::ADDRESSES_REACHABLE)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    for f in findings.iter().filter(|f| !prev_addresses.contains(&f.message)) {
        ctx.event(cr, EventType::Warning, f.reason, "CheckAddress", &f.message)
            .await;
    }
    let address_problems: Vec<Problem> = findings
        .iter()
        .map(|f| Problem {
            reason: f.reason,
            node: String::new(),
            detail: f.message.clone(),
        })
        .collect();

    // 5. Cluster-wide children, applied only when changed.
    children::reconcile(cr, ctx, &ns, &d.media, d.pods.len() + d.keep.len()).await?;

    // 6. rtcd's health: cached; a pod about to leave is judged on a fresh answer (a cached "no
    //    sessions" could delete it under a call that started since).
    let api_port = cr.spec.config.api_port;
    let fresh: BTreeSet<String> = pods
        .iter()
        .filter(|p| {
            p.annotations()
                .get(ANN_NODE)
                .is_some_and(|n| d.triage.leaving.contains_key(n))
        })
        .map(ResourceExt::name_any)
        .collect();
    let health = poll_health(ctx, &pods, api_port, &fresh).await;

    // 7. The rollout plan, carried out.
    let grace = cr.spec.drain.termination_grace_period_seconds.max(0);
    let existing: Vec<Existing> = pods
        .iter()
        .filter_map(|p| {
            let drain_at = p.annotations().get(ANN_DRAIN_REQUESTED);
            Some(Existing {
                name: p.name_any(),
                node: p.annotations().get(ANN_NODE)?.clone(),
                hash: p.annotations().get(ANN_SPEC_HASH).cloned().unwrap_or_default(),
                ready: observe::pod_ready(p),
                terminating: p.metadata.deletion_timestamp.is_some(),
                drain_requested: drain_at.is_some(),
                sessions: health
                    .get(&p.name_any())
                    .filter(|h| h.ok || h.draining)
                    .and_then(|h| h.sessions),
                drain_expired: drain_at
                    .and_then(|t| t.parse::<Timestamp>().ok())
                    .is_some_and(|t| now.duration_since(t).as_secs() > grace),
            })
        })
        .collect();
    let hashes: BTreeMap<String, String> = d
        .pods
        .iter()
        .map(|(n, p)| {
            (
                n.clone(),
                p.annotations().get(ANN_SPEC_HASH).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let max_unavailable = usize::try_from(cr.spec.pod_disruption_budget.max_unavailable.max(1)).unwrap_or(1);
    let plan = plan::plan(&hashes, &d.keep, &d.triage.leaving, &existing, max_unavailable);
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let scene = act::Scene {
        cr,
        pods_api: &pods_api,
        pods: &pods,
        desired: &d.pods,
        health: &health,
        addresses: &d.addresses,
        admin_key: &secrets.admin_key,
        api_port,
        now,
    };
    let mut progress = d.progress.clone();
    progress.extend(act::act(ctx, &scene, &plan).await?);

    // 8. Observe and report.
    let (mut node_status, mut problems, ready) = observe::nodes(ctx, cr, &d, &pods, &health, &plan).await;
    let probe_problems = canary::probes(ctx, cr, &mut node_status, &pods, &health, &secrets.admin_key).await;
    problems.extend(d.problems.iter().cloned());
    let desired_count = d.pods.len()
        + d.keep
            .iter()
            .filter(|n| existing.iter().any(|e| &e.node == *n))
            .count();
    let summary = Summary {
        blocked: None,
        problems,
        progress,
        desired: desired_count,
        ready,
        deleting: false,
        partition: d.triage.partition.clone(),
        addresses: address_problems,
        probes: probe_problems,
        probe_disabled: !cr.spec.probe.enabled,
    };
    let busy = !summary.progress.is_empty();
    observe::write_status(
        cr,
        ctx,
        &prev,
        summary,
        node_status,
        Some(secrets.credentials.name.clone()),
    )
    .await?;
    let mut next = if busy { BUSY } else { IDLE };
    if let Some(secs) = d.triage.recheck_secs {
        next = next.min(Duration::from_secs(secs));
    }
    Ok(Action::requeue(next))
}

/// rtcd's health of every running pod with an address, by pod name: the cached answer when young
/// enough, else (and always for the pods named in `fresh`) a poll, all at once.
async fn poll_health(
    ctx: &Context,
    pods: &[Pod],
    api_port: u16,
    fresh: &BTreeSet<String>,
) -> BTreeMap<String, Health> {
    let polls = pods.iter().filter_map(|p| {
        let ip = p.status.as_ref()?.pod_ip.as_deref()?.parse::<IpAddr>().ok()?;
        let running = p.status.as_ref()?.phase.as_deref() == Some("Running");
        let uid = p.uid()?;
        let name = p.name_any();
        let max_age = if fresh.contains(&name) {
            Duration::ZERO
        } else {
            HEALTH_MAX_AGE
        };
        running.then_some(async move {
            let h = ctx
                .health
                .get_or_poll(&uid, SocketAddr::new(ip, api_port), max_age)
                .await;
            (name, h)
        })
    });
    futures::future::join_all(polls).await.into_iter().collect()
}

/// The lint of every node's advertised address (`resources::lint`), hostnames looked up.
async fn lint_addresses(
    cr: &RtcdCluster,
    ctx: &Context,
    nodes: &[Node],
    addresses: &BTreeMap<String, std::result::Result<String, String>>,
) -> Vec<lint::Finding> {
    let owners: BTreeMap<String, String> = nodes
        .iter()
        .flat_map(|n| {
            let name = n.name_any();
            n.status
                .as_ref()
                .and_then(|s| s.addresses.as_ref())
                .into_iter()
                .flatten()
                .map(move |a| (a.address.clone(), name.clone()))
        })
        .collect();
    let internet = cr.spec.ice_host_override.client_network.is_internet();
    let mut out = Vec::new();
    for (node, a) in addresses {
        let Ok(h) = a else { continue };
        let host = lint::advertised_host(h);
        let resolved = if host.parse::<IpAddr>().is_err() {
            Some(ctx.dns.lookup(host).await)
        } else {
            None
        };
        out.extend(lint::lint(node, h, internet, resolved.as_ref(), &owners));
    }
    out
}

fn blocked(reason: &'static str, detail: String) -> Summary {
    Summary {
        blocked: Some(Problem {
            reason,
            node: String::new(),
            detail,
        }),
        ..Summary::default()
    }
}

fn problem(reason: &'static str, node: &str, detail: String) -> Problem {
    Problem {
        reason,
        node: node.to_string(),
        detail,
    }
}

/// `items` as one line.
fn problem_list(items: &[String]) -> String {
    items.join("; ")
}
