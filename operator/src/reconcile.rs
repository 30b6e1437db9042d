//! One reconcile of an `RtcdCluster`: finalizer → validate → Secrets → Services → per-node pods
//! (the rollout plan) → health → status, with an Event for each action.

use std::{
    collections::{BTreeMap, BTreeSet, HashSet},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        core::v1::{Node, Pod, Secret, Service},
        policy::v1::PodDisruptionBudget,
    },
    jiff::Timestamp,
};
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
    core::GroupVersionKind,
    runtime::{controller::Action, events::EventType},
};
use serde_json::json;

use crate::{
    Error, Result,
    controller::Context,
    crd::{ClientSecret, MediaMode, NodeStatus, RtcdCluster, RtcdClusterStatus, SecretKeyRef},
    disruption::{self, NodeState},
    health::{self, Health},
    plan::{self, Existing},
    resources::{
        self, ANN_DRAIN_REQUESTED, ANN_NODE, ANN_SPEC_HASH, CREDENTIALS_KEY, FIELD_MANAGER, FINALIZER,
        LABEL_CLUSTER,
        address::{self, AddressError},
        nodes, pod, services,
    },
    status::{self, Problem, Summary, reasons},
    validate,
};

/// Health answers younger than this are reused.
const HEALTH_MAX_AGE: Duration = Duration::from_secs(10);
/// Requeue while something is moving.
const BUSY: Duration = Duration::from_secs(3);
/// Requeue when stable (refreshes health in status).
const IDLE: Duration = Duration::from_secs(15);

/// Reconciles one cluster.
pub async fn reconcile(cr: Arc<RtcdCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let result = reconcile_inner(&cr, &ctx).await;
    ctx.metrics.observe(&result, started.elapsed());
    result
}

async fn reconcile_inner(cr: &RtcdCluster, ctx: &Context) -> Result<Action> {
    let ns = cr
        .namespace()
        .ok_or(Error::Invalid("RtcdCluster without namespace".into()))?;
    let crs: Api<RtcdCluster> = Api::namespaced(ctx.client.clone(), &ns);
    if cr.meta().deletion_timestamp.is_some() {
        return cleanup(cr, ctx, &ns).await;
    }
    if !cr.finalizers().iter().any(|f| f == FINALIZER) {
        let mut f = cr.finalizers().to_vec();
        f.push(FINALIZER.into());
        let patch = json!({"metadata": {"finalizers": f, "resourceVersion": cr.resource_version()}});
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
        write_kept_status(cr, ctx, &prev, summary, prev.credentials_secret.clone()).await?;
        return Ok(Action::requeue(Duration::from_secs(300)));
    }

    // 2. Secrets.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let credentials = match &cr.spec.credentials {
        Some(r) => r.clone(),
        None => ensure_generated_credentials(cr, ctx, &secrets).await?,
    };
    for c in cr.spec.clients.iter().filter(|c| c.generate) {
        ensure_generated_client(cr, ctx, &secrets, c).await?;
    }
    let mut refs: Vec<(String, SecretKeyRef)> = vec![("spec.credentials".into(), credentials.clone())];
    if let Some(r) = &cr.spec.config.rtc.turn_static_auth_secret {
        refs.push(("spec.config.rtc.turnStaticAuthSecret".into(), r.clone()));
    }
    for (i, s) in cr.spec.config.rtc.ice_servers.iter().enumerate() {
        if let Some(r) = &s.credential {
            refs.push((format!("spec.config.rtc.iceServers[{i}].credential"), r.clone()));
        }
    }
    for (i, c) in cr.spec.clients.iter().enumerate() {
        for (field, key) in [("clientIdKey", &c.client_id_key), ("authKeyKey", &c.auth_key_key)] {
            refs.push((
                format!("spec.clients[{i}].{field}"),
                SecretKeyRef {
                    name: c.secret_name.clone(),
                    key: key.clone(),
                },
            ));
        }
    }
    let mut missing = Vec::new();
    // The configured clients' values, hashed: rtcd reads them once at start, so a rotation
    // must roll the pods.
    let mut clients_digest = Vec::new();
    // Each Secret is read once, however many of its keys are referenced (a client's two).
    let mut fetched: BTreeMap<String, Option<Secret>> = BTreeMap::new();
    for (field, r) in &refs {
        if !fetched.contains_key(&r.name) {
            fetched.insert(r.name.clone(), secrets.get_opt(&r.name).await?);
        }
        match fetched.get(&r.name).and_then(Option::as_ref) {
            None => missing.push(format!("{field}: Secret {ns}/{} not found", r.name)),
            Some(s) if !has_key(s, &r.key) => {
                missing.push(format!("{field}: Secret {ns}/{} has no key {:?}", r.name, r.key))
            }
            Some(s) => {
                if field.starts_with("spec.clients[") {
                    // What rtcd would refuse at start is reported here, before a pod crash-loops.
                    let value = secret_value(s, &r.key);
                    let why = if field.ends_with(".authKeyKey") {
                        validate::auth_key_problem(value.len())
                    } else {
                        validate::client_id_problem(&String::from_utf8_lossy(&value))
                    };
                    if let Some(why) = why {
                        missing.push(format!("{field}: Secret {ns}/{} key {:?}: {why}", r.name, r.key));
                    }
                    clients_digest.extend_from_slice(field.as_bytes());
                    clients_digest.extend_from_slice(&value);
                }
            }
        }
    }
    let clients_hash = if clients_digest.is_empty() {
        String::new()
    } else {
        resources::short_hash(&clients_digest)
    };
    if !missing.is_empty() {
        let detail = missing.join("; ");
        ctx.event(
            cr,
            EventType::Warning,
            reasons::SECRET_MISSING,
            "Validate",
            &detail,
        )
        .await;
        let summary = blocked(reasons::SECRET_MISSING, detail);
        write_kept_status(cr, ctx, &prev, summary, Some(credentials.name.clone())).await?;
        return Ok(Action::requeue(Duration::from_secs(20)));
    }

    // 3. Cluster-wide children.
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    apply(&svcs, &services::api_service(cr)).await?;
    apply(&svcs, &services::hosts_service(cr)).await?;
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
    if cr.spec.pod_disruption_budget.enabled {
        apply(&pdbs, &resources::pdb(cr)).await?;
    } else {
        delete_owned(&pdbs, cr, &cr.name_any()).await?;
    }
    reconcile_service_monitor(cr, ctx, &ns).await?;

    // 4. Nodes → desired pods.
    let all_nodes = Api::<Node>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{LABEL_CLUSTER}={}", cr.name_any());
    let pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    let media_svcs = svcs.list(&ListParams::default().labels(&selector)).await?.items;
    let now = Timestamp::now();
    let states: Vec<(String, NodeState)> = all_nodes
        .iter()
        .map(|n| (n.name_any(), nodes::state(cr, n, now)))
        .collect();
    let pod_nodes: BTreeSet<String> = pods
        .iter()
        .filter_map(|p| p.annotations().get(ANN_NODE).cloned())
        .collect();
    let policy = disruption::Policy {
        grace_secs: cr.spec.node_trouble.not_ready_grace_seconds,
        partition_percent: cr.spec.node_trouble.partition_threshold_percent,
    };
    let triage = disruption::triage(&states, &pod_nodes, policy);
    if let Some(why) = &triage.partition {
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

    let mut problems = Vec::new();
    let mut progress = Vec::new();
    let mut desired: BTreeMap<String, Pod> = BTreeMap::new();
    let mut keep = BTreeSet::new();
    let mut addresses: BTreeMap<String, Result<String, String>> = BTreeMap::new();
    let mut wanted_media: BTreeSet<String> = BTreeSet::new();
    for (node, (name, state)) in all_nodes.iter().zip(&states) {
        let name = name.clone();
        match state {
            NodeState::Eligible => {}
            NodeState::NotSelected => continue,
            NodeState::NotReady { .. } => {
                let why = triage
                    .held
                    .get(&name)
                    .cloned()
                    .unwrap_or_else(|| "node is not Ready".into());
                if triage.held.contains_key(&name) {
                    keep.insert(name.clone());
                    if pod_nodes.contains(&name) {
                        problems.push(problem(reasons::NODE_NOT_READY, &name, why.clone()));
                    }
                }
                addresses.insert(name, Err(why));
                continue;
            }
            NodeState::NoNewPods(why) => {
                keep.insert(name.clone());
                addresses.insert(name, Err(why.clone()));
                continue;
            }
            NodeState::Ineligible(why) => {
                addresses.insert(name, Err(why.clone()));
                continue;
            }
        }
        let lb_ingress = if cr.spec.media.mode == MediaMode::LoadBalancer {
            let want = services::media_services(cr, &name);
            let mut first_ingress = None;
            for (i, svc) in want.iter().enumerate() {
                wanted_media.insert(svc.name_any());
                let applied = apply(&svcs, svc).await?;
                if i == 0 {
                    first_ingress = services::ingress_address(&applied);
                }
            }
            first_ingress
        } else {
            None
        };
        match address::advertised(cr, node, lb_ingress.as_deref()) {
            Ok(adv) => {
                addresses.insert(name.clone(), Ok(adv.host_override.clone()));
                desired.insert(
                    name.clone(),
                    pod::pod(cr, &name, &adv, &credentials, &clients_hash),
                );
            }
            Err(e) => {
                let reason = match e {
                    AddressError::Missing(_) => reasons::ADDRESS_MISSING,
                    AddressError::WaitingForLoadBalancer => reasons::WAITING_FOR_LOAD_BALANCER,
                };
                if reason == reasons::WAITING_FOR_LOAD_BALANCER {
                    progress.push(problem(reason, &name, e.to_string()));
                } else {
                    problems.push(problem(reason, &name, e.to_string()));
                    ctx.event(
                        cr,
                        EventType::Warning,
                        reason,
                        "ChooseAddress",
                        &format!("node {name}: {e}"),
                    )
                    .await;
                }
                addresses.insert(name.clone(), Err(e.to_string()));
                keep.insert(name);
            }
        }
    }
    // Media Services of nodes that no longer run rtcd.
    for svc in &media_svcs {
        if svc.annotations().contains_key(ANN_NODE) && !wanted_media.contains(&svc.name_any()) {
            delete_owned(&svcs, cr, &svc.name_any()).await?;
        }
    }

    // 5. rtcd's own health, every instance at once (cached for a short while).
    let api_port = cr.spec.config.api_port;
    let live_uids: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
    ctx.health.retain(&live_uids);
    // A pod about to leave is judged on a fresh answer: a cached "no sessions" could delete it
    // under a call that started since.
    let fresh: BTreeSet<String> = pods
        .iter()
        .filter(|p| {
            p.annotations()
                .get(ANN_NODE)
                .is_some_and(|n| triage.leaving.contains_key(n))
        })
        .map(ResourceExt::name_any)
        .collect();
    let health = poll_health(ctx, &pods, api_port, &fresh).await;

    // 6. The rollout plan.
    let grace = cr.spec.drain.termination_grace_period_seconds.max(0);
    let existing: Vec<Existing> = pods
        .iter()
        .filter_map(|p| {
            let drain_at = p.annotations().get(ANN_DRAIN_REQUESTED);
            Some(Existing {
                name: p.name_any(),
                node: p.annotations().get(ANN_NODE)?.clone(),
                hash: p.annotations().get(ANN_SPEC_HASH).cloned().unwrap_or_default(),
                ready: pod_ready(p),
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
    let hashes: BTreeMap<String, String> = desired
        .iter()
        .map(|(n, p)| {
            (
                n.clone(),
                p.annotations().get(ANN_SPEC_HASH).cloned().unwrap_or_default(),
            )
        })
        .collect();
    let max_unavailable = usize::try_from(cr.spec.pod_disruption_budget.max_unavailable.max(1)).unwrap_or(1);
    let plan = plan::plan(&hashes, &keep, &triage.leaving, &existing, max_unavailable);
    let node_of = |pod: &str| {
        existing
            .iter()
            .find(|e| e.name == pod)
            .map(|e| e.node.clone())
            .unwrap_or_default()
    };
    for node in &plan.create {
        if let Some(p) = desired.get(node) {
            apply(&pods_api, p).await?;
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
    let admin_key = fetched
        .get(&credentials.name)
        .and_then(Option::as_ref)
        .map(|s| String::from_utf8_lossy(&secret_value(s, &credentials.key)).to_string())
        .unwrap_or_default();
    let pod_addr = |name: &str| {
        pods.iter()
            .find(|p| p.name_any() == name)
            .and_then(|p| p.status.as_ref()?.pod_ip.as_deref()?.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, api_port))
    };
    let why_leaving = |node: &str| {
        addresses
            .get(node)
            .and_then(|a| a.clone().err())
            .unwrap_or_else(|| "node is gone".into())
    };
    for name in &plan.drain {
        let node = node_of(name);
        let Some(addr) = pod_addr(name) else { continue };
        match health::set_drain(addr, &admin_key, true).await {
            Ok(()) => {
                let patch = json!({"metadata": {"annotations": {ANN_DRAIN_REQUESTED: now.to_string()}}});
                pods_api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                ctx.health.forget(name_uid(&pods, name).as_deref());
                progress.push(problem(reasons::DRAINING, &node, format!("draining {name}")));
                ctx.event(
                    cr,
                    EventType::Normal,
                    "InstanceDraining",
                    "DrainInstance",
                    &format!(
                        "{name} takes no new calls; its live calls go on ({})",
                        why_leaving(&node)
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
        let node = node_of(name);
        let Some(addr) = pod_addr(name) else { continue };
        match health::set_drain(addr, &admin_key, false).await {
            Ok(()) => {
                let patch = json!({"metadata": {"annotations": {ANN_DRAIN_REQUESTED: null}}});
                pods_api
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                ctx.health.forget(name_uid(&pods, name).as_deref());
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
        let node = node_of(name);
        // A pod whose node is gone has no kubelet to drain it; anything else drains in full.
        let dp = if force {
            DeleteParams {
                grace_period_seconds: Some(0),
                ..DeleteParams::default()
            }
        } else {
            DeleteParams::default()
        };
        delete_pod(&pods_api, name, &dp).await?;
        progress.push(problem(reasons::DRAINING, &node, format!("removing {name}")));
        ctx.event(
            cr,
            EventType::Normal,
            "PodDraining",
            "DeletePod",
            &format!("removing {name}: {}", why_leaving(&node)),
        )
        .await;
    }
    for (name, why) in &plan.waiting {
        let node = node_of(name);
        progress.push(problem(reasons::WAITING_TO_LEAVE, &node, format!("{name} {why}")));
    }
    if let Some(name) = &plan.roll {
        delete_pod(&pods_api, name, &DeleteParams::default()).await?;
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
        let node = node_of(name);
        progress.push(problem(
            reasons::ROLLING_UPDATE,
            &node,
            format!("{name} waits to roll"),
        ));
    }
    for name in &plan.draining {
        let node = node_of(name);
        progress.push(problem(reasons::DRAINING, &node, format!("{name} is draining")));
    }

    // 7. Autoscalers leave a node alone while its instance carries calls.
    let removed: BTreeSet<&String> = plan
        .delete
        .iter()
        .chain(&plan.force_delete)
        .chain(&plan.roll)
        .collect();
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !removed.contains(&p.name_any()))
    {
        let Some(sessions) = health
            .get(&p.name_any())
            .filter(|h| h.ok || h.draining)
            .and_then(|h| h.sessions)
        else {
            continue;
        };
        if let Some(patch) = resources::eviction_patch(p, sessions > 0) {
            match pods_api
                .patch(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    // 8. Observe: pods and rtcd's own health.
    let mut node_status = Vec::new();
    let mut ready_count = 0;
    let mut all_listed: BTreeSet<String> = desired.keys().cloned().collect();
    all_listed.extend(existing.iter().map(|e| e.node.clone()));
    all_listed.extend(addresses.keys().cloned());
    for node in &all_listed {
        let p = pods
            .iter()
            .filter(|p| p.annotations().get(ANN_NODE) == Some(node))
            .min_by_key(|p| p.metadata.deletion_timestamp.is_some());
        let mut ns_entry = NodeStatus {
            node: node.clone(),
            pod: p.map(ResourceExt::name_any),
            address: p
                .and_then(|p| p.annotations().get(resources::ANN_ADDRESS).cloned())
                .or_else(|| addresses.get(node).and_then(|a| a.clone().ok())),
            ready: false,
            state: "Pending".into(),
            cpu_load: None,
            sessions: None,
            message: None,
        };
        let Some(p) = p else {
            ns_entry.state = match addresses.get(node) {
                Some(Err(e)) if e.contains("LoadBalancer") => "WaitingForLoadBalancer".into(),
                Some(Err(e)) if e.starts_with("no address") => "WaitingForAddress".into(),
                Some(Err(_)) => "Removed".into(),
                _ => "Pending".into(),
            };
            ns_entry.message = addresses.get(node).and_then(|a| a.clone().err());
            node_status.push(ns_entry);
            continue;
        };
        if p.metadata.deletion_timestamp.is_some() {
            ns_entry.state = "Draining".into();
        } else if hashes
            .get(node)
            .is_some_and(|h| p.annotations().get(ANN_SPEC_HASH) != Some(h))
        {
            ns_entry.state = "Updating".into();
        } else {
            ns_entry.state = p
                .status
                .as_ref()
                .and_then(|s| s.phase.clone())
                .unwrap_or_else(|| "Pending".into());
        }
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
            ns_entry.message = Some(reason);
        }
        if let Some(why) = triage.held.get(node) {
            ns_entry.message = Some(why.clone());
        }
        let mut healthy = false;
        if let Some(h) = health.get(&p.name_any()) {
            ns_entry.cpu_load = h.cpu_load;
            ns_entry.sessions = h.sessions;
            healthy = h.ok;
            if h.draining && ns_entry.state != "Draining" {
                ns_entry.state = "Draining".into();
            }
            if let Some(e) = &h.error {
                ns_entry
                    .message
                    .get_or_insert_with(|| format!("health check failed: {e}"));
            }
        }
        ns_entry.ready = pod_ready(p) && healthy && p.metadata.deletion_timestamp.is_none();
        if desired.contains_key(node) || keep.contains(node) {
            if ns_entry.ready {
                ready_count += 1;
            } else if ns_entry.state != "Draining" {
                let why = if !pod_ready(p) {
                    "pod is not ready".to_string()
                } else {
                    ns_entry
                        .message
                        .clone()
                        .unwrap_or_else(|| "rtcd health is not ok".into())
                };
                ns_entry.message.get_or_insert_with(|| why.clone());
                if !plan.create.contains(node) {
                    problems.push(problem(reasons::POD_NOT_READY, node, why));
                }
            }
        }
        node_status.push(ns_entry);
    }
    let desired_count = desired.len()
        + keep
            .iter()
            .filter(|n| existing.iter().any(|e| &e.node == *n))
            .count();
    let summary = Summary {
        blocked: None,
        problems,
        progress,
        desired: desired_count,
        ready: ready_count,
        deleting: false,
        partition: triage.partition.clone(),
    };
    let busy = !summary.progress.is_empty();
    write_status(
        cr,
        ctx,
        &prev,
        summary,
        node_status,
        Some(credentials.name.clone()),
    )
    .await?;
    let mut next = if busy { BUSY } else { IDLE };
    if let Some(secs) = triage.recheck_secs {
        next = next.min(Duration::from_secs(secs));
    }
    Ok(Action::requeue(next))
}

/// The finalizer: drain every pod, then remove every child, then let the CR go.
async fn cleanup(cr: &RtcdCluster, ctx: &Context, ns: &str) -> Result<Action> {
    if !cr.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(Action::await_change());
    }
    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = format!("{LABEL_CLUSTER}={}", cr.name_any());
    let pods = pods_api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items;
    if !pods.is_empty() {
        for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            delete_pod(&pods_api, &p.name_any(), &DeleteParams::default()).await?;
            ctx.event(
                cr,
                EventType::Normal,
                "PodDraining",
                "DeletePod",
                &format!("draining {} (cluster deleted)", p.name_any()),
            )
            .await;
        }
        let prev = cr.status.clone().unwrap_or_default();
        let summary = Summary {
            deleting: true,
            progress: pods
                .iter()
                .map(|p| {
                    problem(
                        reasons::DRAINING,
                        &p.annotations().get(ANN_NODE).cloned().unwrap_or_default(),
                        format!("{} is draining", p.name_any()),
                    )
                })
                .collect(),
            ..Summary::default()
        };
        write_kept_status(cr, ctx, &prev, summary, prev.credentials_secret.clone()).await?;
        return Ok(Action::requeue(BUSY));
    }
    let svcs: Api<Service> = Api::namespaced(ctx.client.clone(), ns);
    for s in svcs.list(&ListParams::default().labels(&selector)).await?.items {
        delete_owned(&svcs, cr, &s.name_any()).await?;
    }
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), ns);
    delete_owned(&pdbs, cr, &cr.name_any()).await?;
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    delete_owned(&secrets, cr, &resources::credentials_secret_name(cr)).await?;
    if let Some(api) = service_monitor_api(ctx, ns).await {
        delete_owned(&api, cr, &cr.name_any()).await?;
    }
    let rest: Vec<&String> = cr.finalizers().iter().filter(|f| *f != FINALIZER).collect();
    let crs: Api<RtcdCluster> = Api::namespaced(ctx.client.clone(), ns);
    let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": cr.resource_version()}});
    crs.patch(&cr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    ctx.event(
        cr,
        EventType::Normal,
        "Deleted",
        "Finalize",
        "every instance drained and every child removed",
    )
    .await;
    Ok(Action::await_change())
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

/// Status for a pass that changed nothing: the node list stays as last observed.
async fn write_kept_status(
    cr: &RtcdCluster,
    ctx: &Context,
    prev: &RtcdClusterStatus,
    summary: Summary,
    credentials_secret: Option<String>,
) -> Result<()> {
    write_status(cr, ctx, prev, summary, prev.nodes.clone(), credentials_secret).await
}

async fn write_status(
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
    if cr.status.as_ref() == Some(&status) {
        return Ok(());
    }
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

/// Server-side apply with the one field manager.
async fn apply<K>(api: &Api<K>, obj: &K) -> Result<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::Invalid("object without a name".into()))?;
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

async fn delete_pod(api: &Api<Pod>, name: &str, dp: &DeleteParams) -> Result<()> {
    match api.delete(name, dp).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes `name` if it exists and `cr` controls it.
async fn delete_owned<K>(api: &Api<K>, cr: &RtcdCluster, name: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(());
    };
    let ours = obj
        .owner_references()
        .iter()
        .any(|o| Some(&o.uid) == cr.metadata.uid.as_ref());
    if ours {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A Secret's value for `key` (from `data`, or `stringData` before the API server merged it).
fn secret_value(s: &Secret, key: &str) -> Vec<u8> {
    s.data
        .as_ref()
        .and_then(|d| d.get(key))
        .map(|v| v.0.clone())
        .or_else(|| {
            s.string_data
                .as_ref()
                .and_then(|d| d.get(key))
                .map(|v| v.clone().into_bytes())
        })
        .unwrap_or_default()
}

fn has_key(s: &Secret, key: &str) -> bool {
    s.data.as_ref().is_some_and(|d| d.contains_key(key))
        || s.string_data.as_ref().is_some_and(|d| d.contains_key(key))
}

/// The generated admin-key Secret: created once with 32 random bytes, never rewritten.
async fn ensure_generated_credentials(
    cr: &RtcdCluster,
    ctx: &Context,
    secrets: &Api<Secret>,
) -> Result<SecretKeyRef> {
    let name = resources::credentials_secret_name(cr);
    if secrets.get_opt(&name).await?.is_none() {
        let key = random_key()?;
        secrets
            .create(
                &kube::api::PostParams::default(),
                &resources::credentials_secret(cr, &key),
            )
            .await?;
        ctx.event(
            cr,
            EventType::Normal,
            "CredentialsGenerated",
            "CreateSecret",
            &format!("generated admin key in Secret {name}"),
        )
        .await;
    }
    Ok(SecretKeyRef {
        name,
        key: CREDENTIALS_KEY.into(),
    })
}

/// A client Secret the operator generates (`spec.clients[n].generate`): created once when absent,
/// never rewritten, so the values Mattermost was given stay valid.
async fn ensure_generated_client(
    cr: &RtcdCluster,
    ctx: &Context,
    secrets: &Api<Secret>,
    client: &ClientSecret,
) -> Result<()> {
    if secrets.get_opt(&client.secret_name).await?.is_some() {
        return Ok(());
    }
    let key = random_key()?;
    match secrets
        .create(
            &kube::api::PostParams::default(),
            &resources::client_secret(cr, client, &key),
        )
        .await
    {
        Ok(_) => {}
        // Created meanwhile (by a user or a previous leader): theirs stands.
        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    ctx.event(
        cr,
        EventType::Normal,
        "ClientGenerated",
        "CreateSecret",
        &format!(
            "generated the client {:?} in Secret {}",
            client
                .client_id
                .as_deref()
                .unwrap_or(crate::crd::DEFAULT_GENERATED_CLIENT_ID),
            client.secret_name
        ),
    )
    .await;
    Ok(())
}

/// 32 random bytes, base64url without padding (43 characters).
fn random_key() -> Result<String> {
    let mut raw = [0u8; 32];
    getrandom::fill(&mut raw).map_err(|e| Error::Invalid(format!("no randomness: {e}")))?;
    use base64::Engine as _;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw))
}

/// rtcd's health of every running pod with an address, polled at once, by pod name; the pods
/// named in `fresh` are polled whatever the cache holds.
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

/// The UID of the pod called `name`.
fn name_uid(pods: &[Pod], name: &str) -> Option<String> {
    pods.iter()
        .find(|p| p.name_any() == name)
        .and_then(ResourceExt::uid)
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// An image that cannot be pulled, from container (or init container) waiting reasons.
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

async fn service_monitor_api(ctx: &Context, ns: &str) -> Option<Api<DynamicObject>> {
    let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    let (ar, _) = kube::discovery::pinned_kind(&ctx.client, &gvk).await.ok()?;
    Some(Api::namespaced_with(ctx.client.clone(), ns, &ar))
}

async fn reconcile_service_monitor(cr: &RtcdCluster, ctx: &Context, ns: &str) -> Result<()> {
    let Some(api) = service_monitor_api(ctx, ns).await else {
        return Ok(());
    };
    if cr.spec.service_monitor.enabled {
        let obj: DynamicObject = serde_json::from_value(resources::service_monitor(cr))?;
        api.patch(
            &cr.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?;
    } else {
        delete_owned(&api, cr, &cr.name_any()).await?;
    }
    Ok(())
}
