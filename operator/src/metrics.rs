//! Operator metrics: reconciles by result, failures by reason, reconcile durations, leadership,
//! API requests by verb, watch-cache sizes, each instance's sessions and CPU load (which status
//! writes only now and then), and the connectivity canary's answers.

use std::{
    sync::atomic::{AtomicI64, AtomicU64},
    time::Duration,
};

use prometheus_client::{
    encoding::{EncodeLabelSet, text::encode},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// Label of the failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Error kind.
    pub reason: String,
}

/// Label of the reconcile counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// ok or error.
    pub result: String,
}

/// Label of the API request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    /// get (reads, lists included), watch, create, update, patch, delete.
    pub verb: String,
}

/// Label of the cache-size gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CacheLabel {
    /// nodes, pods, services, endpointslices.
    pub cache: String,
}

/// Labels of the per-instance gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabel {
    /// The RtcdCluster's namespace.
    pub namespace: String,
    /// The RtcdCluster.
    pub cluster: String,
    /// The node.
    pub node: String,
}

/// Labels of the per-transport canary gauges.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// The RtcdCluster's namespace.
    pub namespace: String,
    /// The RtcdCluster.
    pub cluster: String,
    /// The node.
    pub node: String,
    /// udp or tcp.
    pub transport: String,
}

/// Labels of the canary's counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeResultLabel {
    /// The RtcdCluster's namespace.
    pub namespace: String,
    /// The RtcdCluster.
    pub cluster: String,
    /// The node.
    pub node: String,
    /// Reachable, Unreachable or Error.
    pub result: String,
}

/// The transports the canary tries.
const PROBE_TRANSPORTS: [&str; 2] = ["udp", "tcp"];

fn instance_label(namespace: &str, cluster: &str, node: &str) -> InstanceLabel {
    InstanceLabel {
        namespace: namespace.into(),
        cluster: cluster.into(),
        node: node.into(),
    }
}

fn transport_label(instance: &InstanceLabel, transport: &str) -> TransportLabel {
    TransportLabel {
        namespace: instance.namespace.clone(),
        cluster: instance.cluster.clone(),
        node: instance.node.clone(),
        transport: transport.into(),
    }
}

/// The families, registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<ResultLabel, Counter>,
    failures: Family<ReasonLabel, Counter>,
    duration: Histogram,
    /// 1 while this replica holds the lease.
    pub leader: Gauge<i64, AtomicI64>,
    api_requests: Family<VerbLabel, Counter>,
    cache_size: Family<CacheLabel, Gauge>,
    sessions: Family<InstanceLabel, Gauge>,
    cpu_load: Family<InstanceLabel, Gauge<f64, AtomicU64>>,
    address_ok: Family<InstanceLabel, Gauge>,
    probe_success: Family<TransportLabel, Gauge>,
    probe_rtt: Family<TransportLabel, Gauge<f64, AtomicU64>>,
    probe_connect: Family<TransportLabel, Gauge<f64, AtomicU64>>,
    probe_failing: Family<InstanceLabel, Gauge>,
    probes: Family<ProbeResultLabel, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("rtcd_operator");
        let reconciles = Family::<ResultLabel, Counter>::default();
        let failures = Family::<ReasonLabel, Counter>::default();
        let duration = Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register("reconciles", "Reconciles by result", reconciles.clone());
        registry.register(
            "reconcile_failures",
            "Failed reconciles by reason",
            failures.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Reconcile duration",
            duration.clone(),
        );
        registry.register("leader", "1 while this replica is the leader", leader.clone());
        let api_requests = Family::<VerbLabel, Counter>::default();
        registry.register(
            "api_requests",
            "Requests to the Kubernetes API server by verb (get includes lists)",
            api_requests.clone(),
        );
        let cache_size = Family::<CacheLabel, Gauge>::default();
        registry.register("cache_objects", "Objects in each watch cache", cache_size.clone());
        let sessions = Family::<InstanceLabel, Gauge>::default();
        registry.register(
            "instance_sessions",
            "Live sessions of each rtcd instance, from its health",
            sessions.clone(),
        );
        let cpu_load = Family::<InstanceLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "instance_cpu_load",
            "Each rtcd instance's /system cpu_load",
            cpu_load.clone(),
        );
        let address_ok = Family::<InstanceLabel, Gauge>::default();
        registry.register(
            "instance_address_ok",
            "1 when the node's advertised address is reachable by its clients, 0 when the AddressesReachable condition names it",
            address_ok.clone(),
        );
        let probe_success = Family::<TransportLabel, Gauge>::default();
        registry.register(
            "probe_success",
            "1 when the connectivity canary's last call connected to the node's advertised address over this transport, else 0",
            probe_success.clone(),
        );
        let probe_rtt = Family::<TransportLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "probe_rtt_seconds",
            "The canary's STUN round trip to the node's advertised address over this transport",
            probe_rtt.clone(),
        );
        let probe_connect = Family::<TransportLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "probe_connect_seconds",
            "From the canary's join to its connection (ICE and DTLS) over this transport",
            probe_connect.clone(),
        );
        let probe_failing = Family::<InstanceLabel, Gauge>::default();
        registry.register(
            "probe_failing",
            "1 while the ProbeFailed condition names the node (failureThreshold probes in a row not Reachable)",
            probe_failing.clone(),
        );
        let probes = Family::<ProbeResultLabel, Counter>::default();
        registry.register(
            "probes",
            "Connectivity canary probes by node and result (Reachable, Unreachable, Error)",
            probes.clone(),
        );
        Self {
            registry,
            address_ok,
            probe_success,
            probe_rtt,
            probe_connect,
            probe_failing,
            probes,
            reconciles,
            failures,
            duration,
            leader,
            api_requests,
            cache_size,
            sessions,
            cpu_load,
        }
    }
}

impl Metrics {
    /// Records one reconcile.
    pub fn observe<T>(&self, result: &Result<T, crate::Error>, took: Duration) {
        let label = if result.is_ok() { "ok" } else { "error" };
        self.reconciles
            .get_or_create(&ResultLabel { result: label.into() })
            .inc();
        self.duration.observe(took.as_secs_f64());
    }

    /// Records a failure by reason.
    pub fn failure(&self, reason: &str) {
        self.failures
            .get_or_create(&ReasonLabel {
                reason: reason.into(),
            })
            .inc();
    }

    /// Counts one API request: `method` and the URI's query say the verb.
    pub fn api_request(&self, method: &str, query: Option<&str>) {
        let verb = match method {
            "GET" if query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")) => {
                "watch"
            }
            "GET" => "get",
            "POST" => "create",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "other",
        };
        self.api_requests
            .get_or_create(&VerbLabel { verb: verb.into() })
            .inc();
    }

    /// Sets the cache-size gauges.
    pub fn cache_sizes(&self, sizes: &[(&str, usize)]) {
        for (cache, n) in sizes {
            self.cache_size
                .get_or_create(&CacheLabel {
                    cache: (*cache).into(),
                })
                .set(i64::try_from(*n).unwrap_or(i64::MAX));
        }
    }

    /// Sets one instance's gauges (absent figures leave them as they were).
    pub fn instance(
        &self,
        namespace: &str,
        cluster: &str,
        node: &str,
        sessions: Option<u64>,
        cpu_load: Option<f64>,
    ) {
        let label = instance_label(namespace, cluster, node);
        if let Some(n) = sessions {
            self.sessions
                .get_or_create(&label)
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
        if let Some(l) = cpu_load {
            self.cpu_load.get_or_create(&label).set(l);
        }
    }

    /// Sets whether one node's advertised address passed the lint.
    pub fn address_ok(&self, namespace: &str, cluster: &str, node: &str, ok: bool) {
        let label = instance_label(namespace, cluster, node);
        self.address_ok.get_or_create(&label).set(i64::from(ok));
    }

    /// Records one canary probe of `node`: `failing` is whether the node is now past its failure
    /// threshold.
    pub fn probe(
        &self,
        namespace: &str,
        cluster: &str,
        node: &str,
        judged: &crate::probe::Judged,
        failing: bool,
    ) {
        let instance = instance_label(namespace, cluster, node);
        self.probes
            .get_or_create(&ProbeResultLabel {
                namespace: instance.namespace.clone(),
                cluster: instance.cluster.clone(),
                node: instance.node.clone(),
                result: judged.result.into(),
            })
            .inc();
        self.probe_failing
            .get_or_create(&instance)
            .set(i64::from(failing));
        if judged.transports.is_empty() {
            // No call was joined: neither transport is known to work.
            for t in PROBE_TRANSPORTS {
                self.probe_success
                    .get_or_create(&transport_label(&instance, t))
                    .set(0);
            }
        }
        for t in &judged.transports {
            let l = transport_label(&instance, &t.transport);
            self.probe_success.get_or_create(&l).set(i64::from(t.reachable));
            for (family, ms) in [(&self.probe_rtt, t.rtt_ms), (&self.probe_connect, t.connect_ms)] {
                match ms {
                    Some(ms) => {
                        family.get_or_create(&l).set(ms / 1e3);
                    }
                    None => {
                        family.remove(&l);
                    }
                }
            }
        }
    }

    /// Drops the canary's series of a node no longer probed.
    pub fn forget_probe(&self, namespace: &str, cluster: &str, node: &str) {
        let instance = instance_label(namespace, cluster, node);
        self.probe_failing.remove(&instance);
        for t in PROBE_TRANSPORTS {
            let l = transport_label(&instance, t);
            self.probe_success.remove(&l);
            self.probe_rtt.remove(&l);
            self.probe_connect.remove(&l);
        }
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut s = String::new();
        encode(&mut s, &self.registry)?;
        Ok(s)
    }
}
