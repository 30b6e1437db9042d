//! The controller: watch caches (reflector stores) of Nodes, the operator's pods, Services and
//! EndpointSlices; RtcdClusters reconciled when they or their children change, when a Node changes
//! in a way that matters (addresses, readiness, taints, labels, cordon), and when an instance's
//! health changes (the background health monitor); per-object exponential backoff with jitter on
//! errors. Holds the shared [`Context`].

use std::{
    collections::{HashMap, HashSet},
    hash::{Hash, Hasher},
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::{StreamExt, future::join_all};
use k8s_openapi::api::{
    core::v1::{Node, Pod, Service},
    discovery::v1::EndpointSlice,
};
use kube::{
    Api, Client, Resource, ResourceExt,
    core::{ApiResource, GroupVersionKind},
    runtime::{
        Controller, PredicateConfig, WatchStreamExt,
        controller::Action,
        events::{Event, EventType, Recorder, Reporter},
        predicates,
        reflector::{self, ObjectRef, Store, reflector},
        watcher,
    },
};

use crate::{
    Error,
    crd::RtcdCluster,
    health,
    metrics::Metrics,
    probe, reconcile,
    resources::{LABEL_CLUSTER, MANAGED_BY_SELECTOR},
};

/// How often the background monitor polls every instance's health.
const HEALTH_PERIOD: Duration = Duration::from_secs(10);
/// How often the canary looks for due probes.
const PROBE_TICK: Duration = Duration::from_secs(1);
/// How long a ServiceMonitor discovery answer is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// The watch caches.
#[derive(Clone)]
pub struct Stores {
    /// Every Node.
    pub nodes: Store<Node>,
    /// The operator's pods.
    pub pods: Store<Pod>,
    /// The operator's Services.
    pub services: Store<Service>,
    /// The EndpointSlices of the operator's Services.
    pub slices: Store<EndpointSlice>,
}

impl Stores {
    /// Waits (at most `limit`) until every cache has its first complete list.
    pub async fn wait_ready(&self, limit: Duration) -> bool {
        let all = async {
            self.nodes.wait_until_ready().await.is_ok()
                && self.pods.wait_until_ready().await.is_ok()
                && self.services.wait_until_ready().await.is_ok()
                && self.slices.wait_until_ready().await.is_ok()
        };
        tokio::time::timeout(limit, all).await.unwrap_or(false)
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The API client (requests bounded by timeouts).
    pub client: Client,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Operator metrics.
    pub metrics: Arc<Metrics>,
    /// rtcd health answers.
    pub health: health::Cache,
    /// The connectivity canary's targets, records and worker.
    pub probes: crate::probe::Prober,
    /// Hostname lookups for address linting.
    pub dns: crate::dns::Resolver,
    /// Images the privileged sysctl init container may run (`--sysctl-images`).
    pub sysctl_images: Vec<String>,
    /// The watch caches.
    pub stores: Stores,
    /// Failures in a row per cluster (`namespace/name`), for the backoff.
    failures: Mutex<HashMap<String, u32>>,
    /// When each cluster's status was last written.
    status_writes: Mutex<HashMap<String, Instant>>,
    /// The ServiceMonitor resource (None: its CRD is absent), and when it was looked up.
    service_monitor: tokio::sync::Mutex<Option<(Instant, Option<ApiResource>)>>,
}

/// `namespace/name` of `cr`: the key of its per-cluster state (backoff, status writes, the
/// canary's targets).
pub(crate) fn key_of(cr: &RtcdCluster) -> String {
    format!("{}/{}", cr.namespace().unwrap_or_default(), cr.name_any())
}

impl Context {
    /// Publishes an Event on `cr`; a failure is only logged.
    pub async fn event(&self, cr: &RtcdCluster, type_: EventType, reason: &str, action: &str, note: &str) {
        tracing::info!(cluster = %key_of(cr), reason, action, "{note}");
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &cr.object_ref(&())).await {
            tracing::warn!(error = %e, reason, "cannot publish event");
        }
    }

    /// A successful reconcile of `cr` ends its backoff.
    pub fn backoff_reset(&self, cr: &RtcdCluster) {
        if let Ok(mut m) = self.failures.lock() {
            m.remove(&key_of(cr));
        }
    }

    /// The delay before retrying `cr` after another failure: 5 s doubling per failure in a row,
    /// at most 5 minutes, ±20 % jitter so failing clusters do not retry in step.
    fn backoff_next(&self, cr: &RtcdCluster) -> Duration {
        let n = self
            .failures
            .lock()
            .map(|mut m| {
                let n = m.entry(key_of(cr)).or_insert(0);
                *n = n.saturating_add(1);
                *n
            })
            .unwrap_or(1);
        backoff(n, jitter())
    }

    /// Whether a load-only status change of `key` may be written now.
    pub fn status_refresh_due(&self, key: &str, every: Duration) -> bool {
        self.status_writes
            .lock()
            .map(|m| m.get(key).is_none_or(|t| t.elapsed() >= every))
            .unwrap_or(true)
    }

    /// Notes that `key`'s status was just written.
    pub fn status_written(&self, key: &str) {
        if let Ok(mut m) = self.status_writes.lock() {
            m.insert(key.to_string(), Instant::now());
        }
    }

    /// The ServiceMonitor API resource when its CRD exists (discovery; a hit is reused for a
    /// while, a miss is looked up again at the next pass, so a CRD installed later is found).
    pub async fn service_monitor_resource(&self) -> Option<ApiResource> {
        let mut cached = self.service_monitor.lock().await;
        if let Some((at, Some(ar))) = cached.as_ref()
            && at.elapsed() < DISCOVERY_TTL
        {
            return Some(ar.clone());
        }
        let gvk = GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
        let ar = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .ok()
            .map(|(ar, _)| ar);
        *cached = Some((Instant::now(), ar.clone()));
        ar
    }
}

/// `n` failures in a row → 5 s · 2^(n-1), at most 300 s, times `jitter` (0.8 to 1.2).
fn backoff(n: u32, jitter: f64) -> Duration {
    let base = 5.0 * 2f64.powi(i32::try_from(n.saturating_sub(1).min(10)).unwrap_or(10));
    Duration::from_secs_f64(base.min(300.0) * jitter)
}

fn jitter() -> f64 {
    let mut b = [0u8; 2];
    let _ = getrandom::fill(&mut b);
    0.8 + 0.4 * f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
}

/// What of a Node matters to the operator; heartbeats and other status churn do not.
fn node_fingerprint(n: &Node) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    n.labels().hash(&mut h);
    n.metadata.deletion_timestamp.is_some().hash(&mut h);
    if let Some(spec) = &n.spec {
        spec.unschedulable.hash(&mut h);
        for t in spec.taints.iter().flatten() {
            (&t.key, &t.value, &t.effect).hash(&mut h);
        }
    }
    if let Some(st) = &n.status {
        for a in st.addresses.iter().flatten() {
            (&a.type_, &a.address).hash(&mut h);
        }
        for c in st.conditions.iter().flatten() {
            (
                &c.type_,
                &c.status,
                c.last_transition_time.as_ref().map(|t| t.0.to_string()),
            )
                .hash(&mut h);
        }
    }
    Some(h.finish())
}

/// Runs the controller until `shutdown` resolves. `client` serves requests (bounded by
/// timeouts), `watch_client` the watches.
pub async fn run(
    client: Client,
    watch_client: Client,
    metrics: Arc<Metrics>,
    sysctl_images: Vec<String>,
    namespace: Option<String>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    fn scoped<K>(client: &Client, ns: Option<&str>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = namespace.as_deref();
    let owned = watcher::Config::default().labels(MANAGED_BY_SELECTOR);

    let (nodes, nodes_w) = reflector::store::<Node>();
    let (pods, pods_w) = reflector::store::<Pod>();
    let (services, services_w) = reflector::store::<Service>();
    let (slices, slices_w) = reflector::store::<EndpointSlice>();
    let stores = Stores {
        nodes,
        pods,
        services,
        slices,
    };
    let node_events = reflector(
        nodes_w,
        watcher(Api::<Node>::all(watch_client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .applied_objects()
    .predicate_filter(node_fingerprint, PredicateConfig::default());
    let pod_events = reflector(pods_w, watcher(scoped::<Pod>(&watch_client, ns), owned.clone()))
        .default_backoff()
        .touched_objects();
    let service_events = reflector(
        services_w,
        watcher(scoped::<Service>(&watch_client, ns), owned.clone()),
    )
    .default_backoff()
    .touched_objects();
    let slice_events = reflector(
        slices_w,
        watcher(scoped::<EndpointSlice>(&watch_client, ns), owned),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(predicates::resource_version, PredicateConfig::default());

    let ctx = Arc::new(Context {
        client: client.clone(),
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: "rtcd-operator".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        metrics,
        health: health::Cache::default(),
        probes: crate::probe::Prober::default(),
        dns: crate::dns::Resolver::default(),
        sysctl_images,
        stores: stores.clone(),
        failures: Mutex::default(),
        status_writes: Mutex::default(),
        service_monitor: tokio::sync::Mutex::default(),
    });
    let (health_tx, health_rx) = tokio::sync::mpsc::channel::<ObjectRef<RtcdCluster>>(256);
    let monitor = tokio::spawn(monitor_health(ctx.clone(), health_tx.clone()));
    let prober = tokio::spawn(monitor_probes(ctx.clone(), health_tx));

    let controller = Controller::new(
        scoped::<RtcdCluster>(&watch_client, ns),
        watcher::Config::default(),
    );
    let clusters = controller.store();
    controller
        .owns_stream(pod_events)
        .owns_stream(service_events)
        .watches_stream(slice_events, |s: EndpointSlice| {
            // Our Services' labels, copied onto their EndpointSlices, name the cluster.
            let ns = s.namespace()?;
            s.labels()
                .get(LABEL_CLUSTER)
                .map(|c| ObjectRef::new(c).within(&ns))
        })
        .watches_stream(node_events, move |_node: Node| {
            // A node change that matters may add, remove or move an instance of any cluster.
            clusters
                .state()
                .into_iter()
                .map(|cr| ObjectRef::from_obj(&*cr))
                .collect::<Vec<_>>()
        })
        .reconcile_on(futures::stream::unfold(health_rx, |mut rx| async move {
            rx.recv().await.map(|r| (r, rx))
        }))
        .graceful_shutdown_on(shutdown)
        .run(reconcile::reconcile, error_policy, ctx)
        .for_each(|res| async move {
            match res {
                Ok((obj, _)) => tracing::debug!(cluster = %obj.name, "reconciled"),
                Err(e) => tracing::warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    monitor.abort();
    prober.abort();
}

/// Starts the canary's due probes every [`PROBE_TICK`] (at most [`probe::MAX_IN_FLIGHT`] at
/// once), each judged against the advertised address when it ends; a change of what status says
/// requeues its cluster.
async fn monitor_probes(ctx: Arc<Context>, tx: tokio::sync::mpsc::Sender<ObjectRef<RtcdCluster>>) {
    loop {
        tokio::time::sleep(PROBE_TICK).await;
        let room = probe::MAX_IN_FLIGHT.saturating_sub(ctx.probes.in_flight());
        for t in ctx.probes.take_due(Instant::now(), room) {
            let ctx = ctx.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let outcome = ctx.probes.probe(&t).await;
                // A literal resolves to itself, a hostname through the cached resolver.
                let ips = ctx.dns.lookup(&t.advertised).await.ok();
                let judged = probe::judge(&outcome, &t.advertised, ips.as_deref());
                let time = k8s_openapi::jiff::Timestamp::now().to_string();
                let Some((changed, failures)) = ctx.probes.record(&t, judged.clone(), time) else {
                    return;
                };
                let ns = t.cluster.namespace.clone().unwrap_or_default();
                ctx.metrics.probe(
                    &ns,
                    &t.cluster.name,
                    &t.node,
                    &judged,
                    failures >= t.failure_threshold,
                );
                if changed {
                    tracing::info!(
                        cluster = %format!("{ns}/{}", t.cluster.name),
                        node = %t.node,
                        result = judged.result,
                        failures,
                        message = judged.message.as_deref().unwrap_or(""),
                        "canary"
                    );
                    let _ = tx.try_send(t.cluster.clone());
                }
            });
        }
    }
}

/// Polls every instance's health every [`HEALTH_PERIOD`], all at once (each poll bounded), into
/// the cache; a change that matters (up/down, draining, idle/busy) requeues its cluster. Also
/// keeps the cache-size metrics.
async fn monitor_health(ctx: Arc<Context>, tx: tokio::sync::mpsc::Sender<ObjectRef<RtcdCluster>>) {
    let mut last: HashMap<String, (bool, bool, bool, bool)> = HashMap::new();
    loop {
        tokio::time::sleep(HEALTH_PERIOD).await;
        let s = &ctx.stores;
        ctx.metrics.cache_sizes(&[
            ("nodes", s.nodes.state().len()),
            ("pods", s.pods.state().len()),
            ("services", s.services.state().len()),
            ("endpointslices", s.slices.state().len()),
        ]);
        let pods = s.pods.state();
        let live: HashSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
        ctx.health.retain(&live);
        last.retain(|uid, _| live.contains(uid));
        let polls = pods.iter().filter_map(|p| {
            let st = p.status.as_ref()?;
            let ip = st.pod_ip.as_deref()?.parse::<IpAddr>().ok()?;
            if st.phase.as_deref() != Some("Running") || p.metadata.deletion_timestamp.is_some() {
                return None;
            }
            let port = p
                .spec
                .as_ref()?
                .containers
                .first()?
                .ports
                .iter()
                .flatten()
                .find(|c| c.name.as_deref() == Some("api"))?
                .container_port;
            let uid = p.uid()?;
            let cluster = ObjectRef::new(p.labels().get(LABEL_CLUSTER)?).within(&p.namespace()?);
            let addr = SocketAddr::new(ip, u16::try_from(port).ok()?);
            let ctx = ctx.clone();
            Some(async move {
                let h = ctx.health.get_or_poll(&uid, addr, Duration::ZERO).await;
                let mark = (h.ok, h.draining, h.error.is_some(), h.sessions.unwrap_or(0) > 0);
                (uid, cluster, mark)
            })
        });
        for (uid, cluster, mark) in join_all(polls).await {
            if last.insert(uid, mark) != Some(mark) {
                let _ = tx.try_send(cluster);
            }
        }
    }
}

fn error_policy(cr: Arc<RtcdCluster>, err: &Error, ctx: Arc<Context>) -> Action {
    let delay = ctx.backoff_next(&cr);
    tracing::warn!(cluster = %cr.name_any(), error = %err, retry_in_ms = delay.as_millis() as u64, "reconcile error");
    ctx.metrics.failure(err.metric_label());
    Action::requeue(delay)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_five_minutes_with_jitter() {
        assert_eq!(backoff(1, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(2, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(4, 1.0), Duration::from_secs(40));
        assert_eq!(backoff(9, 1.0), Duration::from_secs(300));
        assert_eq!(backoff(1000, 1.0), Duration::from_secs(300));
        assert_eq!(backoff(1, 0.8), Duration::from_secs(4));
        for _ in 0..100 {
            let j = jitter();
            assert!((0.8..=1.2).contains(&j), "{j}");
        }
    }

    #[test]
    fn only_node_changes_that_matter_pass_the_filter() {
        let mut n = crate::resources::nodes::tests::node("a", "10.0.0.1", None);
        let base = node_fingerprint(&n);
        // A heartbeat: same condition status, new heartbeat time.
        if let Some(c) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) {
            c[0].last_heartbeat_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        }
        n.metadata.resource_version = Some("99".into());
        assert_eq!(node_fingerprint(&n), base, "a heartbeat is not a change");
        n.status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .expect("conditions")[0]
            .status = "False".into();
        assert_ne!(node_fingerprint(&n), base, "readiness is");
        let mut m = crate::resources::nodes::tests::node("a", "10.0.0.2", None);
        assert_ne!(node_fingerprint(&m), base, "an address is");
        m = crate::resources::nodes::tests::node("a", "10.0.0.1", None);
        m.spec.as_mut().expect("spec").unschedulable = Some(true);
        assert_ne!(node_fingerprint(&m), base, "a cordon is");
    }
}
