//! Prometheus metrics: rtcd's families with rtcd's names, labels and buckets
//! (`service/perf/metrics.go`), so dashboards built for rtcd keep working, plus
//! `rtcd_build_info` and `rtcd_process_*` read from `/proc` at scrape time.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::{ConstGauge, Gauge},
        histogram::Histogram,
    },
    registry::Registry,
};

use crate::version::{PACKAGE_VERSION, VersionInfo};

/// A label set: rtcd's label names are camelCase (`groupID`, `clientID`), so plain pairs.
pub type Labels = Vec<(&'static str, String)>;
type Hist = Family<Labels, Histogram, fn() -> Histogram>;

const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0,
];
const LOSS_BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0,
];
/// client_golang's `DefBuckets`, which rtcd's timing histograms use.
const DEFAULT_BUCKETS: [f64; 11] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}
fn loss_histogram() -> Histogram {
    Histogram::new(LOSS_BUCKETS)
}
fn default_histogram() -> Histogram {
    Histogram::new(DEFAULT_BUCKETS)
}

/// Every metric family the daemon exports. Cheap to clone handles out of; registered once.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// `rtcd_rtc_rtp_tracks_total{groupID,direction,type}` (gauge).
    pub rtp_tracks: Family<Labels, Gauge>,
    /// `rtcd_rtc_rtp_tracks_writes_time{groupID,type}`: observed per forwarded packet write
    /// from the engine shards without a lock (see [`TrackWrites`]).
    pub rtp_track_writes: Arc<TrackWrites>,
    /// `rtcd_rtc_sessions_total{groupID}` (gauge).
    pub rtc_sessions: Family<Labels, Gauge>,
    /// `rtcd_rtc_conn_states_total{type}`.
    pub rtc_conn_states: Family<Labels, Counter>,
    /// `rtcd_rtc_errors_total{groupID,type}`.
    pub rtc_errors: Family<Labels, Counter>,
    /// `rtcd_rtc_connection_time{groupID}`.
    pub rtc_connection_time: Hist,
    /// `rtcd_rtc_dc_open_time{groupID}`.
    pub rtc_dc_open_time: Hist,
    /// `rtcd_rtc_signaling_lock_grab_time{groupID}`.
    pub rtc_signaling_lock_grab_time: Hist,
    /// `rtcd_rtc_signaling_lock_locked_time{groupID}`.
    pub rtc_signaling_lock_locked_time: Hist,
    /// `rtcd_rtc_client_loss_rate{groupID}`.
    pub rtc_client_loss: Hist,
    /// `rtcd_rtc_client_rtt{groupID}`.
    pub rtc_client_rtt: Hist,
    /// `rtcd_rtc_client_jitter{groupID}`.
    pub rtc_client_jitter: Hist,
    /// `rtcd_ws_connections_total{clientID}` (gauge).
    pub ws_connections: Family<Labels, Gauge>,
    /// `rtcd_ws_messages_total{clientID,type,direction}`.
    pub ws_messages: Family<Labels, Counter>,
    /// `rtcd_net_dropped_total{transport,reason}` (ours): input dropped before any session.
    pub net_dropped: Family<Labels, Counter>,
    /// `rtcd_rtc_keyframe_requests_total{groupID,direction}` (ours): PLIs from viewers (in) and
    /// to publishers (out).
    pub rtc_keyframe_requests: Family<Labels, Counter>,
    /// `rtcd_rtc_layer_switches_total{groupID,layer}` (ours): simulcast switches per target layer.
    pub rtc_layer_switches: Family<Labels, Counter>,
    /// `rtcd_rtc_simulcast_viewers{groupID,layer}` (ours, gauge): viewers receiving each layer.
    pub rtc_simulcast_viewers: Family<Labels, Gauge>,
    /// `rtcd_rtc_nacks_total{groupID,direction}` (ours): NACKs received from viewers (in, each
    /// answered from the retransmission buffer) and sent to publishers (out).
    pub rtc_nacks: Family<Labels, Counter>,
    /// `rtcd_net_send_failed_total{transport}` (ours): datagrams and frames the socket or the
    /// connection's queue refused.
    pub net_send_failed: Family<Labels, Counter>,
    /// `rtcd_engine_shard_sessions{shard}` (ours, gauge): sessions placed on each engine shard.
    pub engine_shard_sessions: Family<Labels, Gauge>,
    /// `rtcd_limit_refusals_total{limit}` (ours): what a `[limits]` bound refused, by the key.
    pub limit_refusals: Family<Labels, Counter>,
    /// `rtcd_http_connections` (ours, gauge): open API connections (HTTP and WebSocket).
    pub http_connections: Gauge,
    /// `rtcd_table_entries{table}` (ours, gauge): entries in the control plane's tables, set
    /// when `/metrics` is read. Back to zero once everyone has left (the limiter's after its
    /// window).
    pub tables: Family<Labels, Gauge>,
    /// `rtcd_engine_table_entries{shard,table}` (ours, gauge): entries in each engine shard's
    /// tables, set every second by the shard.
    pub engine_tables: Family<Labels, Gauge>,
    /// `rtcd_rtc_first_packet_time{groupID}` (ours): join to the first media packet forwarded
    /// to the session.
    pub rtc_first_packet_time: Hist,
    /// `rtcd_rtc_forwarded_tracks` (ours, gauge): tracks forwarded to viewers now, the sum of
    /// `rtcd_rtc_rtp_tracks_total{direction="out"}` (what `limits.max_forwarded_tracks` caps).
    pub forwarded_tracks: Gauge,
    /// `rtcd_net_packets_total{transport,direction}` (ours): datagrams and ICE-TCP frames on the
    /// media port (STUN, DTLS, RTP, RTCP), received (in) and sent (out).
    pub net_packets: Family<Labels, Counter>,
    /// `rtcd_net_bytes_total{transport,direction}` (ours): their bytes (UDP/TCP payload).
    pub net_bytes: Family<Labels, Counter>,
    /// `rtcd_load_ratio` (ours, gauge): what `/system` reports as `cpu_load`, set on each scrape.
    pub load_ratio: FloatGauge,
    /// `rtcd_cpu_utilization` (ours, gauge): the machine's busy share of its CPUs, 0–1, over
    /// the last second.
    pub cpu_utilization: FloatGauge,
    /// `rtcd_limit_usage_ratio{limit}` (ours, gauge): usage ÷ limit for each capacity limit
    /// that is set (1 = full), set on each scrape.
    pub limit_usage: Family<Labels, FloatGauge>,
    /// `rtcd_egress_bitrate` (ours, gauge): bits per second sent on the media port over the
    /// last second.
    pub egress_bitrate: FloatGauge,
    /// `rtcd_engine_healthy` (ours, gauge): 1 while every engine shard beats, else 0; set on
    /// each scrape.
    pub engine_healthy: Gauge,
}

/// A gauge holding a float.
pub type FloatGauge = Gauge<f64, AtomicU64>;

/// The `transport` × `direction` series of `rtcd_net_{packets,bytes}_total`.
pub const TRAFFIC: [(&str, &str); 4] = [("udp", "in"), ("udp", "out"), ("tcp", "in"), ("tcp", "out")];

/// The `limit` label values of `rtcd_limit_refusals_total`: each `[limits]` key that refuses
/// something, plus `auth_attempts` (the failed-login lockout) and `ws_message_size`.
pub const LIMITS: &[&str] = &[
    "http_max_connections",
    "http_max_connections_per_ip",
    "http_read_timeout",
    "http_write_timeout",
    "ws_send_queue",
    "ws_message_size",
    "auth_attempts",
    "client_id_length",
    "sessions_per_client",
    "candidates_per_session",
    "remote_address_changes",
    "ice_tcp_max_unauthenticated",
    "ice_tcp_max_unauthenticated_per_ip",
    "ice_tcp_max_connections",
    "max_sessions",
    "max_forwarded_tracks",
    "max_egress_bitrate",
];

impl Metrics {
    /// Sets `rtcd_table_entries{table}`.
    pub fn set_table(&self, table: &'static str, entries: usize) {
        self.tables
            .get_or_create(&vec![("table", table.to_string())])
            .set(i64::try_from(entries).unwrap_or(i64::MAX));
    }

    /// Creates the per-group event counters of `group` at 0 (errors by type, NACKs, keyframe
    /// requests, layer switches), so their rates and alerts read 0 rather than nothing before
    /// the first event (rtcd creates them at the first event).
    pub fn touch_group(&self, group: &str) {
        let g = || ("groupID", group.to_string());
        for kind in ["ice", "signaling", "signaling_lock_timeout", "rtp", "panic"] {
            let _series = self.rtc_errors.get_or_create(&vec![g(), ("type", kind.into())]);
        }
        for direction in ["in", "out"] {
            let _series = self
                .rtc_nacks
                .get_or_create(&vec![g(), ("direction", direction.into())]);
            let _series = self
                .rtc_keyframe_requests
                .get_or_create(&vec![g(), ("direction", direction.into())]);
        }
        for layer in ["h", "l"] {
            let _series = self
                .rtc_layer_switches
                .get_or_create(&vec![g(), ("layer", layer.into())]);
        }
    }

    /// Bytes sent on the media port so far (both transports).
    pub fn egress_bytes(&self) -> u64 {
        ["udp", "tcp"]
            .into_iter()
            .map(|t| {
                self.net_bytes
                    .get_or_create(&vec![("transport", t.into()), ("direction", "out".into())])
                    .get()
            })
            .sum()
    }

    /// Counts one refusal by the `[limits]` bound `limit` (one of [`LIMITS`]).
    pub fn limit_refused(&self, limit: &'static str) {
        debug_assert!(LIMITS.contains(&limit), "unknown limit label {limit}");
        self.limit_refusals
            .get_or_create(&vec![("limit", limit.to_string())])
            .inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rtcd");
        let hist = |ctor: fn() -> Histogram| Hist::new_with_constructor(ctor);
        let m = Self {
            registry: Registry::default(),
            rtp_tracks: Family::default(),
            rtp_track_writes: Arc::default(),
            rtc_sessions: Family::default(),
            rtc_conn_states: Family::default(),
            rtc_errors: Family::default(),
            rtc_connection_time: hist(default_histogram),
            rtc_dc_open_time: hist(default_histogram),
            rtc_signaling_lock_grab_time: hist(default_histogram),
            rtc_signaling_lock_locked_time: hist(default_histogram),
            rtc_client_loss: hist(loss_histogram),
            rtc_client_rtt: hist(latency_histogram),
            rtc_client_jitter: hist(latency_histogram),
            ws_connections: Family::default(),
            ws_messages: Family::default(),
            net_dropped: Family::default(),
            rtc_keyframe_requests: Family::default(),
            rtc_layer_switches: Family::default(),
            rtc_simulcast_viewers: Family::default(),
            rtc_nacks: Family::default(),
            net_send_failed: Family::default(),
            engine_shard_sessions: Family::default(),
            limit_refusals: Family::default(),
            http_connections: Gauge::default(),
            tables: Family::default(),
            engine_tables: Family::default(),
            rtc_first_packet_time: hist(default_histogram),
            forwarded_tracks: Gauge::default(),
            net_packets: Family::default(),
            net_bytes: Family::default(),
            load_ratio: FloatGauge::default(),
            cpu_utilization: FloatGauge::default(),
            limit_usage: Family::default(),
            egress_bitrate: FloatGauge::default(),
            engine_healthy: Gauge::default(),
        };
        let r = &mut registry;
        r.register(
            "rtc_rtp_tracks_total",
            "Total number of active RTP tracks",
            m.rtp_tracks.clone(),
        );
        r.register_collector(Box::new(TrackWritesFamily(m.rtp_track_writes.clone())));
        r.register(
            "rtc_sessions_total",
            "Total number of active RTC sessions",
            m.rtc_sessions.clone(),
        );
        r.register(
            "rtc_conn_states",
            "Total number of RTC connection state changes",
            m.rtc_conn_states.clone(),
        );
        r.register(
            "rtc_errors",
            "Total number of RTC related errors",
            m.rtc_errors.clone(),
        );
        r.register(
            "ws_connections_total",
            "Total number of active WebSocket sessions",
            m.ws_connections.clone(),
        );
        r.register(
            "ws_messages",
            "Total number of sent/received WebSocket messages",
            m.ws_messages.clone(),
        );
        r.register(
            "rtc_connection_time",
            "Time taken to establish the connection",
            m.rtc_connection_time.clone(),
        );
        r.register(
            "rtc_dc_open_time",
            "Time taken to open the data channel",
            m.rtc_dc_open_time.clone(),
        );
        r.register(
            "rtc_signaling_lock_grab_time",
            "Time taken to acquire the signaling lock",
            m.rtc_signaling_lock_grab_time.clone(),
        );
        r.register(
            "rtc_signaling_lock_locked_time",
            "Time the signaling lock was held",
            m.rtc_signaling_lock_locked_time.clone(),
        );
        r.register(
            "rtc_client_loss_rate",
            "Client loss rate",
            m.rtc_client_loss.clone(),
        );
        r.register(
            "rtc_client_rtt",
            "Client round trip time",
            m.rtc_client_rtt.clone(),
        );
        r.register(
            "rtc_client_jitter",
            "Client latency jitter",
            m.rtc_client_jitter.clone(),
        );
        r.register(
            "net_dropped",
            "Datagrams, frames, connections and RTP packets dropped: before reaching a session, or as media the session never declared",
            m.net_dropped.clone(),
        );
        // Present from the start at 0, so rates and alerts need no "absent" special case.
        for (transport, reason) in [
            ("udp", "no_session"),
            ("tcp", "no_session"),
            ("udp", "shard_queue_full"),
            ("tcp", "shard_queue_full"),
            ("rtp", "undeclared_ssrc"),
            ("rtp", "undeclared_payload_type"),
        ] {
            let _series = m
                .net_dropped
                .get_or_create(&vec![("transport", transport.into()), ("reason", reason.into())]);
        }
        r.register(
            "rtc_keyframe_requests",
            "Keyframe requests received from viewers (in) and sent to publishers (out)",
            m.rtc_keyframe_requests.clone(),
        );
        r.register(
            "rtc_layer_switches",
            "Simulcast layer switches, by the layer switched to",
            m.rtc_layer_switches.clone(),
        );
        r.register(
            "rtc_simulcast_viewers",
            "Viewers receiving each simulcast layer",
            m.rtc_simulcast_viewers.clone(),
        );
        r.register(
            "rtc_nacks",
            "NACKs received from viewers (in) and sent to publishers (out)",
            m.rtc_nacks.clone(),
        );
        r.register(
            "net_send_failed",
            "Datagrams and ICE-TCP frames that could not be sent (full socket buffer or connection queue, or an error)",
            m.net_send_failed.clone(),
        );
        for transport in ["udp", "tcp"] {
            let _series = m
                .net_send_failed
                .get_or_create(&vec![("transport", transport.into())]);
        }
        r.register(
            "engine_shard_sessions",
            "Sessions placed on each media engine shard",
            m.engine_shard_sessions.clone(),
        );
        r.register(
            "limit_refusals",
            "Requests, connections, sessions and candidates refused by a [limits] bound, by the bound",
            m.limit_refusals.clone(),
        );
        for limit in LIMITS {
            let _series = m
                .limit_refusals
                .get_or_create(&vec![("limit", (*limit).to_string())]);
        }
        r.register(
            "http_connections",
            "Open API connections (HTTP and WebSocket)",
            m.http_connections.clone(),
        );
        r.register(
            "table_entries",
            "Entries in the control plane's internal tables (connections, routes, limiter, tokens, ICE-TCP, placement, tasks)",
            m.tables.clone(),
        );
        r.register(
            "engine_table_entries",
            "Entries in each engine shard's internal tables",
            m.engine_tables.clone(),
        );
        r.register(
            "rtc_first_packet_time",
            "Time from join to the first media packet forwarded to the session",
            m.rtc_first_packet_time.clone(),
        );
        r.register(
            "rtc_forwarded_tracks",
            "Tracks forwarded to viewers now (all groups)",
            m.forwarded_tracks.clone(),
        );
        r.register(
            "net_packets",
            "Datagrams and ICE-TCP frames on the media port, received (in) and sent (out)",
            m.net_packets.clone(),
        );
        r.register(
            "net_bytes",
            "Bytes of the datagrams and ICE-TCP frames on the media port, received (in) and sent (out)",
            m.net_bytes.clone(),
        );
        for (transport, direction) in TRAFFIC {
            let labels = vec![("transport", transport.into()), ("direction", direction.into())];
            let _series = m.net_packets.get_or_create(&labels);
            let _series = m.net_bytes.get_or_create(&labels);
        }
        r.register(
            "load_ratio",
            "What /system reports as cpu_load: the largest of CPU utilisation and each capacity limit's usage ratio, plus the recent-admission penalty; 2 or more when full",
            m.load_ratio.clone(),
        );
        r.register(
            "cpu_utilization",
            "Busy share of the machine's CPUs over the last second (0-1)",
            m.cpu_utilization.clone(),
        );
        r.register(
            "limit_usage_ratio",
            "Usage divided by each configured capacity limit (1 = full)",
            m.limit_usage.clone(),
        );
        r.register(
            "egress_bitrate",
            "Bits per second sent on the media port over the last second",
            m.egress_bitrate.clone(),
        );
        r.register(
            "engine_healthy",
            "1 while every media engine shard is running and beating, else 0",
            m.engine_healthy.clone(),
        );
        r.register_collector(Box::new(BuildInfo(VersionInfo::current())));
        r.register_collector(Box::new(ProcessCollector));
        Self { registry, ..m }
    }

    /// The OpenMetrics text exposition of every family.
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// `Content-Type` of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `rtcd_build_info{version,rtcd_version,commit,rustc} 1`.
#[derive(Debug)]
struct BuildInfo(VersionInfo);

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let gauge = ConstGauge::new(1i64);
        let mut family = encoder.encode_descriptor(
            "build_info",
            "Build information about this rtcd",
            None,
            gauge.metric_type(),
        )?;
        let labels: Labels = vec![
            ("version", PACKAGE_VERSION.to_string()),
            ("rtcd_version", self.0.build_version.clone()),
            ("commit", self.0.build_hash.clone()),
            ("rustc", self.0.go_version.clone()),
        ];
        gauge.encode(family.encode_family(&labels)?)
    }
}

/// `rtcd_process_*`, as client_golang's process collector names them, plus `threads`.
#[derive(Debug)]
struct ProcessCollector;

/// Linux's `USER_HZ`, the unit of `/proc/*/stat` CPU times; 100 on every supported platform.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// A snapshot of this process from `/proc/self`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessStats {
    /// User + system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size, bytes.
    pub resident_bytes: u64,
    /// Virtual size, bytes.
    pub virtual_bytes: u64,
    /// Open file descriptors.
    pub open_fds: u64,
    /// The soft limit on file descriptors.
    pub max_fds: u64,
    /// OS threads.
    pub threads: u64,
    /// Anonymous resident memory (heap, thread stacks): `RssAnon`.
    pub heap_bytes: u64,
    /// Start time, seconds since the Unix epoch.
    pub start_time_seconds: f64,
}

impl ProcessStats {
    /// Reads `/proc/self/{stat,status,fd,limits}` and `/proc/stat`; missing parts stay zero.
    pub fn read() -> Self {
        let mut s = Self::default();
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name, which may itself contain spaces.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let f: Vec<&str> = rest.split_whitespace().collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
            // After ')': state=0, utime=11, stime=12, num_threads=17, starttime=19.
            s.cpu_seconds = (num(11) + num(12)) / CLOCK_TICKS_PER_SECOND;
            s.threads = num(17) as u64;
            let boot = std::fs::read_to_string("/proc/stat").ok().and_then(|t| {
                t.lines().find_map(|l| {
                    l.strip_prefix("btime ")
                        .and_then(|v| v.trim().parse::<f64>().ok())
                })
            });
            s.start_time_seconds = boot.unwrap_or(0.0) + num(19) / CLOCK_TICKS_PER_SECOND;
        }
        if let Ok(status) = std::fs::read_to_string("/proc/self/status") {
            let kb = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    .unwrap_or(0)
                    * 1024
            };
            s.resident_bytes = kb("VmRSS:");
            s.heap_bytes = kb("RssAnon:");
            s.virtual_bytes = kb("VmSize:");
        }
        s.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        s.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("Max open files"))
                    .and_then(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
            })
            .unwrap_or(0);
        s
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let s = ProcessStats::read();
        let cpu = ConstCounter::new(s.cpu_seconds);
        cpu.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds.",
            None,
            cpu.metric_type(),
        )?)?;
        let gauges: [(&str, &str, f64); 7] = [
            (
                "process_heap_bytes",
                "Anonymous resident memory (heap and thread stacks), RssAnon: rtcd-rs's equivalent of go_memstats_heap_inuse_bytes",
                s.heap_bytes as f64,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                s.resident_bytes as f64,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                s.virtual_bytes as f64,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                s.open_fds as f64,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                s.max_fds as f64,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                s.threads as f64,
            ),
            (
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                s.start_time_seconds,
            ),
        ];
        for (name, help, value) in gauges {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
        }
        Ok(())
    }
}

/// One writer's share of `rtcd_rtc_rtp_tracks_writes_time` for one label set: plain atomics,
/// bumped by a single engine shard (so never contended), summed with the other shards' at
/// scrape time.
#[derive(Debug, Default)]
pub struct WriteTimer {
    /// Per bucket of [`LATENCY_BUCKETS`], then +Inf (not cumulative).
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

impl WriteTimer {
    /// Records one write that took `d`.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// `rtcd_rtc_rtp_tracks_writes_time`, kept as one [`WriteTimer`] per (shard, label set): a
/// shard asks for its handle when an out-track is negotiated (never per packet) and observes
/// on it with no lock; the scrape merges the shards.
#[derive(Debug, Default)]
pub struct TrackWrites {
    handles: Mutex<HashMap<(usize, Labels), Arc<WriteTimer>>>,
}

impl TrackWrites {
    /// The handle of `shard` for `labels` (`groupID`, `type`).
    pub fn handle(&self, shard: usize, labels: Labels) -> Arc<WriteTimer> {
        self.handles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry((shard, labels))
            .or_default()
            .clone()
    }

    /// Writes observed so far, over every shard and label set.
    pub fn total(&self) -> u64 {
        let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        handles.values().map(|h| h.count.load(Ordering::Relaxed)).sum()
    }

    /// Every label set with its summed (sum in seconds, count, per-bucket counts).
    fn merged(&self) -> BTreeMap<Labels, (f64, u64, Vec<u64>)> {
        let handles = self.handles.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: BTreeMap<Labels, (f64, u64, Vec<u64>)> = BTreeMap::new();
        for ((_, labels), h) in handles.iter() {
            let e = out
                .entry(labels.clone())
                .or_insert_with(|| (0.0, 0, vec![0; LATENCY_BUCKETS.len() + 1]));
            e.0 += Duration::from_nanos(h.sum_ns.load(Ordering::Relaxed)).as_secs_f64();
            e.1 += h.count.load(Ordering::Relaxed);
            for (acc, b) in e.2.iter_mut().zip(&h.buckets) {
                *acc += b.load(Ordering::Relaxed);
            }
        }
        out
    }
}

/// Encodes [`TrackWrites`] as rtcd's histogram family (absent until it has a series, as in
/// client_golang).
#[derive(Debug)]
struct TrackWritesFamily(Arc<TrackWrites>);

impl Collector for TrackWritesFamily {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let merged = self.0.merged();
        if merged.is_empty() {
            return Ok(());
        }
        let mut family = encoder.encode_descriptor(
            "rtc_rtp_tracks_writes_time",
            "Time taken to write to RTP tracks",
            None,
            MetricType::Histogram,
        )?;
        for (labels, (sum, count, counts)) in &merged {
            let bounds = LATENCY_BUCKETS
                .iter()
                .copied()
                .chain(std::iter::once(f64::INFINITY));
            let buckets: Vec<(f64, u64)> = bounds.zip(counts.iter().copied()).collect();
            family
                .encode_family(labels)?
                .encode_histogram::<NoLabelSet>(*sum, *count, &buckets, None)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_stats_are_read_from_proc() {
        let s = ProcessStats::read();
        assert!(s.resident_bytes > 0);
        assert!(s.threads >= 1);
        assert!(s.open_fds >= 3);
        assert!(s.max_fds >= s.open_fds);
        assert!(s.start_time_seconds > 1.6e9, "{}", s.start_time_seconds);
    }

    #[test]
    fn write_times_from_two_shards_merge_into_one_series() {
        let m = Metrics::new();
        let labels = || vec![("groupID", "g".to_string()), ("type", "voice".to_string())];
        let a = m.rtp_track_writes.handle(0, labels());
        let b = m.rtp_track_writes.handle(1, labels());
        assert!(
            Arc::ptr_eq(&a, &m.rtp_track_writes.handle(0, labels())),
            "one handle per shard"
        );
        a.observe(Duration::from_micros(3)); // ≤ 0.001
        b.observe(Duration::from_millis(6)); // ≤ 0.0075
        b.observe(Duration::from_secs(2)); // +Inf
        let text = m.encode().unwrap();
        for line in [
            r#"rtcd_rtc_rtp_tracks_writes_time_count{groupID="g",type="voice"} 3"#,
            r#"rtcd_rtc_rtp_tracks_writes_time_bucket{le="0.001",groupID="g",type="voice"} 1"#,
            r#"rtcd_rtc_rtp_tracks_writes_time_bucket{le="0.0075",groupID="g",type="voice"} 2"#,
            r#"rtcd_rtc_rtp_tracks_writes_time_bucket{le="1.0",groupID="g",type="voice"} 2"#,
            r#"rtcd_rtc_rtp_tracks_writes_time_bucket{le="+Inf",groupID="g",type="voice"} 3"#,
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix(r#"rtcd_rtc_rtp_tracks_writes_time_sum{groupID="g",type="voice"} "#))
            .unwrap()
            .parse()
            .unwrap();
        assert!((sum - 2.006003).abs() < 1e-9, "{sum}");
    }

    #[test]
    fn no_write_time_series_until_a_write() {
        assert!(
            !Metrics::new()
                .encode()
                .unwrap()
                .contains("rtc_rtp_tracks_writes_time")
        );
    }
}
