//! The `RtcdCluster` custom resource (`rtcd-rs.dev/v1alpha1`): spec with defaults and schema
//! validation (CEL where a rule spans fields), status, and printer columns.

// KubeSchema re-emits each struct inside a private module, which trips this lint falsely.
#![allow(unreachable_pub)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group the project owns.
pub const GROUP: &str = "rtcd-rs.dev";
/// The one served version.
pub const VERSION: &str = "v1alpha1";

/// Default rtcd image.
pub const DEFAULT_IMAGE: &str = "ghcr.io/rtcd-rs/rtcd:0.1.0";
/// Default image of the sysctl init container: busybox 1.37's image index, pinned by digest
/// (the container runs privileged, so a tag that could be re-pointed is not accepted).
pub const DEFAULT_SYSCTL_IMAGE: &str =
    "busybox:1.37@sha256:9db7b59979c38555a39def84a31fb98b5296952f9e3afd4f6f11f05b07adfab0";
/// The only kernel settings the init container may write: the socket-buffer caps rtcd's UDP
/// sockets ask for. Anything else (`kernel.*`, `vm.*`, even `net.core.optmem_max`, which rtcd's
/// two bytes of ancillary data per send do not need) would be node-wide power handed to whoever
/// can write an RtcdCluster.
pub const ALLOWED_SYSCTLS: [&str; 2] = ["net.core.rmem_max", "net.core.wmem_max"];
/// The range of a socket-buffer cap: from Linux's usual default up to 64 MiB.
pub const SYSCTL_RANGE: std::ops::RangeInclusive<u64> = 212_992..=67_108_864;

/// A fleet of rtcd instances: one hostNetwork pod per matching Ready node, each advertising
/// its own node's public address.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "rtcd-rs.dev",
    version = "v1alpha1",
    kind = "RtcdCluster",
    plural = "rtcdclusters",
    shortname = "rtcd",
    namespaced,
    status = "RtcdClusterStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Nodes","type":"string","jsonPath":".status.readyNodes","description":"ready/desired rtcd nodes"}"#,
    printcolumn = r#"{"name":"Media","type":"string","jsonPath":".spec.media.mode","priority":1}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct RtcdClusterSpec {
    /// The rtcd container image.
    #[serde(default = "default_image")]
    #[schemars(length(min = 1, max = 1024))]
    pub image: String,
    /// Always, IfNotPresent or Never. Default: Kubernetes' own (IfNotPresent unless `:latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,
    /// Secrets for pulling the images.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,
    /// CPU and memory of the rtcd container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Only nodes with these labels run rtcd.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the rtcd pods tolerate; a node whose NoSchedule/NoExecute taints are not all
    /// tolerated gets no pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Passed to each pod. The operator already picks the node, so only the node-affinity
    /// terms decide eligibility; other terms are copied for the scheduler's checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// rtcd settings.
    #[serde(default)]
    pub config: RtcdConfig,
    /// The admin secret key. Absent: the operator generates one into an owned Secret and
    /// names it in `status.credentialsSecret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<SecretKeyRef>,
    /// Mattermost clients (the Calls plugin's rtcd client ID and auth key) that every instance
    /// knows from its start, so the plugin needs no registration on each pod and no
    /// self-registration. A change to a referenced Secret rolls the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<ClientSecret>,
    /// Where each node's advertised (ICE host) address comes from.
    #[serde(default)]
    pub ice_host_override: IceHostOverride,
    /// How media reaches the pods.
    #[serde(default)]
    pub media: Media,
    /// Kernel socket-buffer tuning on each node.
    #[serde(default)]
    pub sysctls: Sysctls,
    /// Graceful drain on pod removal.
    #[serde(default)]
    pub drain: Drain,
    /// A PodDisruptionBudget over the rtcd pods. Its `maxUnavailable` is also the operator's own
    /// budget: never more nodes draining or replaced at once.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
    /// How the operator reacts to nodes in trouble.
    #[serde(default)]
    pub node_trouble: NodeTrouble,
    /// A Prometheus-operator ServiceMonitor, created only when that CRD exists.
    #[serde(default)]
    pub service_monitor: ServiceMonitorSpec,
    /// The API Services.
    #[serde(default)]
    pub api: ApiSpec,
    /// The connectivity canary: the operator joins a one-person call on every ready instance
    /// through the address it advertises, over UDP and ICE-TCP.
    #[serde(default)]
    pub probe: ProbeSpec,
}

fn default_image() -> String {
    DEFAULT_IMAGE.into()
}

/// Image pull policy.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Always pull.
    Always,
    /// Pull when absent.
    IfNotPresent,
    /// Never pull.
    Never,
}

impl PullPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// A Secret of the same namespace holding one client's ID and auth key.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientSecret {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub secret_name: String,
    /// The key holding the client ID (1–128 bytes, no `:`).
    #[serde(default = "default_client_id_key")]
    pub client_id_key: String,
    /// The key holding the auth key (32–72 bytes).
    #[serde(default = "default_auth_key_key")]
    pub auth_key_key: String,
    /// Create the Secret when it does not exist: the client ID `clientId` and a random 43-byte
    /// auth key under the keys above. An existing Secret is never rewritten. A generated Secret
    /// outlives the RtcdCluster (Mattermost's configuration holds its values): delete it yourself.
    #[serde(default, skip_serializing_if = "is_false")]
    pub generate: bool,
    /// The client ID a generated Secret gets (default `mattermost`); only with `generate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The client ID of a generated client Secret when `clientId` is not given.
pub const DEFAULT_GENERATED_CLIENT_ID: &str = "mattermost";

fn default_client_id_key() -> String {
    "clientID".into()
}

fn default_auth_key_key() -> String {
    "authKey".into()
}

/// A key in a Secret of the same namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[serde(default = "default_secret_key")]
    pub key: String,
}

fn default_secret_key() -> String {
    "adminSecretKey".into()
}

/// rtcd settings the operator renders into `RTCD_*` environment variables.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.apiPort != self.rtc.tcpPort").message("config.apiPort must differ from config.rtc.tcpPort (both listen on TCP)").field_path(".apiPort"))]
pub struct RtcdConfig {
    /// HTTP/WebSocket API port (host network).
    #[serde(default = "default_api_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub api_port: u16,
    /// Let clients (the Calls plugin) register themselves.
    #[serde(default)]
    pub allow_self_registration: bool,
    /// Session cache lifetime in minutes.
    #[serde(default = "default_session_minutes")]
    #[schemars(range(min = 1))]
    pub session_cache_expiration_minutes: u32,
    /// Extra allowed CORS origins (`scheme://host[:port]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// ICE settings.
    #[serde(default)]
    pub rtc: RtcConfig,
    /// Log level of the console logger (JSON on stdout).
    #[serde(default)]
    pub log_level: LogLevel,
    /// How long rtcd waits for calls to end after SIGTERM (`"30m"`); `"0s"` = until the pod's
    /// grace period ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"), length(max = 16))]
    pub drain_timeout: Option<String>,
    /// Each instance's capacity. `/system` (what the Calls plugin places new calls by) reports
    /// the largest of CPU utilisation and usage ÷ each limit set, and a full instance refuses
    /// new joins. Unset: no limit.
    #[serde(default, skip_serializing_if = "Capacity::is_unset")]
    pub capacity: Capacity,
    /// Any other `RTCD_*` setting; an entry here replaces a typed field's variable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_env: Vec<EnvVar>,
}

/// Per-instance capacity limits (rtcd's `[limits] max_*`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capacity {
    /// Live sessions (call participants) on one instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub max_sessions: Option<u32>,
    /// Tracks one instance forwards to viewers at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub max_forwarded_tracks: Option<u32>,
    /// Media bits per second one instance sends (e.g. 2000000000 for 2 Gbit/s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000_000_000_i64))]
    pub max_egress_bitrate: Option<u64>,
}

impl Capacity {
    /// No limit set.
    pub fn is_unset(&self) -> bool {
        *self == Self::default()
    }
}

impl Default for RtcdConfig {
    fn default() -> Self {
        Self {
            api_port: default_api_port(),
            allow_self_registration: false,
            session_cache_expiration_minutes: default_session_minutes(),
            allowed_origins: Vec::new(),
            rtc: RtcConfig::default(),
            log_level: LogLevel::default(),
            drain_timeout: None,
            capacity: Capacity::default(),
            extra_env: Vec::new(),
        }
    }
}

fn default_api_port() -> u16 {
    8045
}

fn default_session_minutes() -> u32 {
    1440
}

/// ICE settings of rtcd.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtcConfig {
    /// UDP media port (one port for every peer).
    #[serde(default = "default_media_port")]
    #[schemars(range(min = 80, max = 49151))]
    pub udp_port: u16,
    /// ICE-TCP media port.
    #[serde(default = "default_media_port")]
    #[schemars(range(min = 80, max = 49151))]
    pub tcp_port: u16,
    /// STUN/TURN servers rtcd uses (as rtcd's `ice_servers`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub ice_servers: Vec<IceServer>,
    /// coturn static-auth secret: TURN entries without credentials get REST credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub turn_static_auth_secret: Option<SecretKeyRef>,
    /// Lifetime of generated TURN credentials, minutes (< 10080).
    #[serde(default = "default_session_minutes")]
    #[schemars(range(min = 1, max = 10079))]
    pub turn_credentials_expiration_minutes: u32,
    /// Also gather IPv6 candidates.
    #[serde(default)]
    pub enable_ipv6: bool,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            udp_port: default_media_port(),
            tcp_port: default_media_port(),
            ice_servers: Vec::new(),
            turn_static_auth_secret: None,
            turn_credentials_expiration_minutes: default_session_minutes(),
            enable_ipv6: false,
        }
    }
}

fn default_media_port() -> u16 {
    8443
}

/// One STUN/TURN server entry.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    #[schemars(
        length(min = 1, max = 8),
        inner(regex(pattern = r"^(stun|stuns|turn|turns):.+"), length(max = 512))
    )]
    pub urls: Vec<String>,
    /// TURN username (omit to use the static-auth secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN credential, from a Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SecretKeyRef>,
}

/// rtcd log level.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Warnings and errors.
    Warn,
    /// The default.
    #[default]
    Info,
    /// Verbose.
    Debug,
    /// Very verbose.
    Trace,
}

impl LogLevel {
    /// rtcd's spelling.
    pub fn as_rtcd(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Warn => "WARN",
            Self::Info => "INFO",
            Self::Debug => "DEBUG",
            Self::Trace => "TRACE",
        }
    }
}

/// Which node address to advertise.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum NodeAddressType {
    /// `status.addresses[type=ExternalIP]`.
    ExternalIP,
    /// `status.addresses[type=InternalIP]`.
    InternalIP,
    /// `status.addresses[type=ExternalDNS]`.
    ExternalDNS,
}

impl NodeAddressType {
    /// The Kubernetes address type.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExternalIP => "ExternalIP",
            Self::InternalIP => "InternalIP",
            Self::ExternalDNS => "ExternalDNS",
        }
    }
}

/// Where each node's advertised address comes from, highest priority first: `static`, the
/// node annotation `annotation`, then `nodeAddress`, then each of `fallback` in order.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct IceHostOverride {
    /// The node address type tried first.
    #[serde(default = "default_node_address")]
    pub node_address: NodeAddressType,
    /// Types tried next, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<NodeAddressType>,
    /// A node annotation whose value (IP or hostname) wins over node addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotation: Option<String>,
    /// Node name → address, winning over everything else.
    #[serde(default, rename = "static", skip_serializing_if = "BTreeMap::is_empty")]
    pub static_addresses: BTreeMap<String, String>,
    /// NAT port mapping: the external port clients reach for UDP/TCP media.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_override: Option<PortOverride>,
    /// Where the clients are. `Internet` (default): an advertised private address (RFC 1918,
    /// CGNAT, ULA) is reported in the `AddressesReachable` condition. `Private`: clients share
    /// the nodes' network, private addresses are right.
    #[serde(default, skip_serializing_if = "ClientNetwork::is_internet")]
    pub client_network: ClientNetwork,
}

impl Default for IceHostOverride {
    fn default() -> Self {
        Self {
            node_address: default_node_address(),
            fallback: vec![NodeAddressType::InternalIP],
            annotation: None,
            static_addresses: BTreeMap::new(),
            port_override: None,
            client_network: ClientNetwork::Internet,
        }
    }
}

/// Where the clients of the advertised addresses are.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ClientNetwork {
    /// On the internet: private addresses are unreachable to them.
    #[default]
    Internet,
    /// On the nodes' own (private) network.
    Private,
}

impl ClientNetwork {
    /// The default.
    pub fn is_internet(&self) -> bool {
        *self == Self::Internet
    }
}

fn default_node_address() -> NodeAddressType {
    NodeAddressType::ExternalIP
}

/// External media port per node; rendered as rtcd's `ice_host_port_override`
/// (`<node InternalIP>/<port>`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.port) || (has(self.nodes) && size(self.nodes) > 0)").message("portOverride needs port or nodes"))]
pub struct PortOverride {
    /// The port for every node not listed in `nodes`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 80, max = 49151))]
    pub port: Option<u16>,
    /// Node name → port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub nodes: BTreeMap<String, u16>,
}

/// How media traffic reaches rtcd.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode == 'LoadBalancer' || !has(self.loadBalancer)").message("media.loadBalancer is only valid with mode LoadBalancer").field_path(".loadBalancer"))]
pub struct Media {
    /// `HostNetwork`: clients reach the node directly. `LoadBalancer`: one LoadBalancer
    /// Service per node, whose ingress address is advertised.
    #[serde(default)]
    pub mode: MediaMode,
    /// LoadBalancer settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancer: Option<LoadBalancer>,
}

/// Media exposure mode.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum MediaMode {
    /// Pods use the node's network; the node address is advertised.
    #[default]
    HostNetwork,
    /// A UDP+TCP LoadBalancer Service per node.
    LoadBalancer,
}

/// Per-node LoadBalancer Services.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancer {
    /// Annotations for the cloud's load-balancer controller.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Allowed client CIDRs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_ranges: Vec<String>,
    /// `spec.loadBalancerClass`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    /// false: one UDP and one TCP Service per node, for clouds without mixed-protocol LBs.
    #[serde(default = "yes")]
    pub mixed_protocol: bool,
}

fn yes() -> bool {
    true
}

/// Node-level socket-buffer sysctls, set by a privileged init container. `net.core.*` is not
/// namespaced: with hostNetwork this changes the node's own kernel settings. Only raised, never
/// lowered. `enabled: false` leaves node tuning to the cluster admin (rtcd logs the buffer sizes
/// it gets).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.image.matches('@sha256:[0-9a-f]{64}$')").message("sysctls.image must be pinned by digest (name@sha256:<64 hex digits>): it runs privileged on the node").field_path(".image"))]
#[x_kube(validation = Rule::new("self.values.all(k, k in ['net.core.rmem_max', 'net.core.wmem_max'])").message("sysctls.values: only net.core.rmem_max and net.core.wmem_max may be set").field_path(".values"))]
pub struct Sysctls {
    /// Run the init container.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Its image, pinned by digest (needs `sh` and `sysctl`); it must also be one the operator
    /// allows (`--sysctl-images`).
    #[serde(default = "default_sysctl_image")]
    #[schemars(length(max = 512))]
    pub image: String,
    /// `net.core.rmem_max` and/or `net.core.wmem_max` → bytes (212992 to 67108864).
    /// Default: both 16777216.
    #[serde(default = "default_sysctl_values")]
    #[schemars(length(max = 2), inner(regex(pattern = r"^[0-9]{1,12}$")))]
    pub values: BTreeMap<String, String>,
}

impl Default for Sysctls {
    fn default() -> Self {
        Self {
            enabled: true,
            image: default_sysctl_image(),
            values: default_sysctl_values(),
        }
    }
}

fn default_sysctl_image() -> String {
    DEFAULT_SYSCTL_IMAGE.into()
}

fn default_sysctl_values() -> BTreeMap<String, String> {
    ALLOWED_SYSCTLS
        .into_iter()
        .map(|k| (k.to_string(), "16777216".to_string()))
        .collect()
}

/// Drain on pod removal: the pod leaves DNS, then a preStop hook waits until rtcd's health
/// reports no sessions, bounded by the grace period.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    /// The pod's grace period: the longest a call keeps its instance after removal starts.
    #[serde(default = "default_grace")]
    #[schemars(range(min = 1))]
    pub termination_grace_period_seconds: i64,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            termination_grace_period_seconds: default_grace(),
        }
    }
}

fn default_grace() -> i64 {
    3600
}

/// PodDisruptionBudget settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Pods that may be evicted at once.
    #[serde(default = "one")]
    #[schemars(range(min = 1))]
    pub max_unavailable: i32,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: 1,
        }
    }
}

fn one() -> i32 {
    1
}

/// Reactions to nodes in trouble: a NotReady node keeps its pod for a grace period; after it,
/// the instance is drained through its API (no new calls, live calls go on) and its pod removed
/// once idle, a drain cancelled if the node recovers first. Many nodes NotReady at once look
/// like a partition: then nothing is done.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeTrouble {
    /// Seconds a node may be NotReady before anything is done about it (default 300, as
    /// Kubernetes' own `default-unreachable-toleration-seconds`).
    #[serde(default = "default_not_ready_grace")]
    #[schemars(range(min = 0, max = 86400))]
    pub not_ready_grace_seconds: i64,
    /// When more than this percentage of the selected nodes is NotReady at once, act on none
    /// of them and raise the `NodesPartitioned` condition (default 50).
    #[serde(default = "default_partition_percent")]
    #[schemars(range(min = 1, max = 100))]
    pub partition_threshold_percent: i32,
}

impl Default for NodeTrouble {
    fn default() -> Self {
        Self {
            not_ready_grace_seconds: default_not_ready_grace(),
            partition_threshold_percent: default_partition_percent(),
        }
    }
}

fn default_not_ready_grace() -> i64 {
    300
}

fn default_partition_percent() -> i32 {
    50
}

/// ServiceMonitor settings.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceMonitorSpec {
    /// Create it when `servicemonitors.monitoring.coreos.com` exists.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Scrape interval.
    #[serde(default = "default_interval")]
    pub interval: String,
    /// Extra labels (for the Prometheus selector).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for ServiceMonitorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval: default_interval(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_interval() -> String {
    "30s".into()
}

/// The connectivity canary. Every `intervalSeconds` the operator joins a one-person call on each
/// ready instance with a real WebRTC peer (ICE and DTLS over UDP, then over ICE-TCP) against the
/// address that instance advertises, and reports reachability, round trip and the candidate that
/// won in `status.nodes[].probe`, the `ProbeFailed` condition, Events and metrics.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeSpec {
    /// Run the canary.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Seconds between two probes of one instance (default 60).
    #[serde(default = "default_probe_interval")]
    #[schemars(range(min = 5, max = 86400))]
    pub interval_seconds: u32,
    /// Seconds each transport may take to connect (default 10).
    #[serde(default = "default_probe_timeout")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: u32,
    /// Failed probes in a row before `ProbeFailed` names the node (default 2).
    #[serde(default = "default_probe_failures")]
    #[schemars(range(min = 1, max = 10))]
    pub failure_threshold: u32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: default_probe_interval(),
            timeout_seconds: default_probe_timeout(),
            failure_threshold: default_probe_failures(),
        }
    }
}

fn default_probe_interval() -> u32 {
    60
}

fn default_probe_timeout() -> u32 {
    10
}

fn default_probe_failures() -> u32 {
    2
}

/// The API Services: `<name>` (ClusterIP, the "RTCD Service URL") and `<name>-hosts`
/// (headless, ready pods only, for DNS-based host selection).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiSpec {
    /// Annotations on both Services.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// Observed state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RtcdClusterStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Progressing`, `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// "ready/desired".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_nodes: Option<String>,
    /// The Secret holding the admin key (its name only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
    /// One entry per node that runs, or should run, rtcd.
    #[serde(default)]
    pub nodes: Vec<NodeStatus>,
}

/// A status condition (the shape of `metav1.Condition`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type.
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// CamelCase reason.
    pub reason: String,
    /// Human-readable details.
    pub message: String,
    /// When `status` last changed (RFC 3339).
    pub last_transition_time: String,
    /// The generation this condition describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Per-node state.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// Node name.
    pub node: String,
    /// Pod name, once it exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The ICE host override the pod advertises.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The pod is Ready and rtcd's health says ok.
    pub ready: bool,
    /// Pending, Running, Draining, Updating, Failed, WaitingForAddress, WaitingForLoadBalancer.
    pub state: String,
    /// rtcd's `/system` cpu_load.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_load: Option<f64>,
    /// Live sessions reported by `/api/v1/health`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions: Option<u64>,
    /// Why the node is not ready, if it is not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Times the kubelet restarted this pod's rtcd container (absent while 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarts: Option<i32>,
    /// How rtcd's previous run ended, e.g. `exit 137 (Error) at 2026-12-07T16:40:02Z`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_restart: Option<String>,
    /// The connectivity canary's last answer (`spec.probe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<ProbeStatus>,
}

/// What the connectivity canary saw on one node.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProbeStatus {
    /// `Reachable`, `Unreachable` (a transport did not connect, or connected elsewhere than the
    /// advertised address) or `Error` (the call could not be joined through the API).
    pub result: String,
    /// Probes in a row that were not `Reachable`.
    pub consecutive_failures: u32,
    /// When the last probe ended (RFC 3339).
    pub last_probe_time: String,
    /// What went wrong, when something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Each transport tried, UDP first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub transports: Vec<TransportProbe>,
}

/// One transport's outcome in a probe.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransportProbe {
    /// `udp` or `tcp`.
    pub transport: String,
    /// ICE and DTLS completed with the advertised address.
    pub reachable: bool,
    /// The selected candidate pair's STUN round trip, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// From the join to the connection, ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<f64>,
    /// The server candidate that won, e.g. `udp 203.0.113.7:8443`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub candidate: Option<String>,
}
