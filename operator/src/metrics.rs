//! Operator metrics: reconciles by result, failures by reason, reconcile durations, leadership,
//! API requests by verb, watch-cache sizes, and each instance's sessions and CPU load (which
//! status writes only now and then).

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
        Self {
            registry,
            address_ok,
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
        let label = InstanceLabel {
            namespace: namespace.into(),
            cluster: cluster.into(),
            node: node.into(),
        };
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
        let label = InstanceLabel {
            namespace: namespace.into(),
            cluster: cluster.into(),
            node: node.into(),
        };
        self.address_ok.get_or_create(&label).set(i64::from(ok));
    }

    /// OpenMetrics text.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut s = String::new();
        encode(&mut s, &self.registry)?;
        Ok(s)
    }
}
