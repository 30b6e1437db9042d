//! The rtcd pod of one node: hostNetwork, pinned to the node by affinity, the node's own host
//! override, the sysctl init container, probes on distinct endpoints, and a draining preStop.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{
        Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
        ExecAction, HTTPGetAction, KeyToPath, Lifecycle, LifecycleHandler, NodeAffinity, NodeSelector,
        NodeSelectorRequirement, NodeSelectorTerm, Pod, PodSpec, Probe, ProjectedVolumeSource,
        SecretKeySelector, SecretProjection, SecurityContext, Volume, VolumeMount, VolumeProjection,
    },
    apimachinery::pkg::util::intstr::IntOrString,
};
use kube::ResourceExt;

use super::{ANN_ADDRESS, ANN_NODE, ANN_SPEC_HASH, LABEL_NODE, address::Advertised, meta, node_label_value};
use crate::crd::{RtcdCluster, SecretKeyRef};

/// Path of the rtcd binary in the image (see Dockerfile.rtcd).
pub const RTCD_BINARY: &str = "/usr/local/bin/rtcd";
/// Where rtcd keeps its auth store.
const DATA_DIR: &str = "/data";
/// Where the `spec.clients` Secrets are mounted (`api.security.clients_dir`).
pub const CLIENTS_DIR: &str = "/etc/rtcd/clients";

/// The pod for `node`, advertising `adv`, with the admin key from `credentials`;
/// `clients_hash` is a hash of the contents of the `spec.clients` Secrets.
pub fn pod(
    cr: &RtcdCluster,
    node: &str,
    adv: &Advertised,
    credentials: &SecretKeyRef,
    clients_hash: &str,
) -> Pod {
    let spec = pod_spec(cr, node, adv, credentials);
    // The hash covers everything the pod's behaviour depends on, so a change to any of it rolls
    // the pod (pods are immutable in all the fields that matter). The configured clients are
    // read once at start, so a rotated client Secret rolls the pod too.
    let mut hashed = serde_json::to_vec(&spec).unwrap_or_default();
    hashed.extend_from_slice(clients_hash.as_bytes());
    let hash = super::short_hash(&hashed);
    let mut metadata = meta(cr, pod_name(cr, node));
    metadata
        .labels
        .get_or_insert_with(BTreeMap::new)
        .insert(LABEL_NODE.into(), node_label_value(node));
    metadata.annotations = Some(BTreeMap::from([
        (ANN_NODE.to_string(), node.to_string()),
        (ANN_SPEC_HASH.to_string(), hash),
        (ANN_ADDRESS.to_string(), adv.host_override.clone()),
    ]));
    Pod {
        metadata,
        spec: Some(spec),
        status: None,
    }
}

/// `<cluster>-<node>`, as a DNS label.
pub fn pod_name(cr: &RtcdCluster, node: &str) -> String {
    super::dns_label(&cr.name_any(), node)
}

fn pod_spec(cr: &RtcdCluster, node: &str, adv: &Advertised, credentials: &SecretKeyRef) -> PodSpec {
    let s = &cr.spec;
    let api_port = i32::from(s.config.api_port);
    let http = |path: &str| HTTPGetAction {
        path: Some(path.into()),
        port: IntOrString::Int(api_port),
        ..HTTPGetAction::default()
    };
    let probe = |path: &str, period: i32, failures: i32| Probe {
        http_get: Some(http(path)),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    };
    let low_port = [s.config.api_port, s.config.rtc.udp_port, s.config.rtc.tcp_port]
        .iter()
        .any(|p| *p < 1024);
    let rtcd = Container {
        name: "rtcd".into(),
        image: Some(s.image.clone()),
        image_pull_policy: s.image_pull_policy.map(|p| p.as_str().to_string()),
        env: Some(env(cr, adv, credentials)),
        ports: Some(vec![
            port("api", api_port, "TCP"),
            port("media-udp", i32::from(s.config.rtc.udp_port), "UDP"),
            port("media-tcp", i32::from(s.config.rtc.tcp_port), "TCP"),
        ]),
        resources: s.resources.clone(),
        // Liveness and readiness probe different endpoints: `/version` answers while draining,
        // so a draining instance is taken out of DNS but never restarted.
        startup_probe: Some(probe("/version", 2, 30)),
        liveness_probe: Some(probe("/version", 10, 3)),
        readiness_probe: Some(probe("/api/v1/health", 5, 2)),
        lifecycle: Some(Lifecycle {
            // Runs once the pod is terminating (and already out of the Service endpoints):
            // waits until rtcd reports no live sessions; the grace period bounds it.
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec![RTCD_BINARY.into(), "--wait-idle".into()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(65532),
            run_as_group: Some(65532),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                add: low_port.then(|| vec!["NET_BIND_SERVICE".into()]),
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts(cr)),
        ..Container::default()
    };
    let init_containers = s.sysctls.enabled.then(|| {
        let script = s
            .sysctls
            .values
            .iter()
            // Only raised, never lowered (an admin may have set more). A key the node's kernel
            // does not expose here (e.g. kind nodes, whose network namespace is not the host's)
            // is reported, not fatal: rtcd still runs untuned. Keys and values were validated
            // (an allowlist of two, numbers only), so nothing here comes unchecked from the spec.
            .map(|(k, v)| {
                format!(
                    "cur=$(sysctl -n {k} 2>/dev/null || echo 0); \
                     if [ \"$cur\" -ge {v} ]; then echo \"{k} = $cur (kept)\"; \
                     else sysctl -w {k}={v} || echo 'rtcd-operator: could not set {k}' >&2; fi"
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
        vec![Container {
            name: "sysctl".into(),
            image: Some(s.sysctls.image.clone()),
            // Its own image: the rtcd image's pull policy (say Never for a side-loaded image)
            // does not apply to it.
            command: Some(vec!["sh".into(), "-c".into(), script]),
            // net.core.* is not namespaced: with hostNetwork this writes the node's settings.
            security_context: Some(SecurityContext {
                privileged: Some(true),
                run_as_user: Some(0),
                run_as_non_root: Some(false),
                ..SecurityContext::default()
            }),
            ..Container::default()
        }]
    });
    PodSpec {
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".into()),
        affinity: Some(affinity(cr, node)),
        tolerations: (!s.tolerations.is_empty()).then(|| s.tolerations.clone()),
        node_selector: (!s.node_selector.is_empty()).then(|| s.node_selector.clone()),
        image_pull_secrets: (!s.image_pull_secrets.is_empty()).then(|| s.image_pull_secrets.clone()),
        termination_grace_period_seconds: Some(s.drain.termination_grace_period_seconds),
        // A bare pod is recreated by the operator, not restarted in place on failure of the
        // whole pod; containers still restart.
        restart_policy: Some("Always".into()),
        enable_service_links: Some(false),
        automount_service_account_token: Some(false),
        init_containers,
        containers: vec![rtcd],
        volumes: Some(volumes(cr)),
        ..PodSpec::default()
    }
}

/// What a pod's clients volume maps: (Secret, key, path under `CLIENTS_DIR`), in order.
pub fn client_files(spec: &PodSpec) -> Vec<(String, String, String)> {
    spec.volumes
        .iter()
        .flatten()
        .filter(|v| v.name == "clients")
        .filter_map(|v| v.projected.as_ref())
        .flat_map(|p| p.sources.iter().flatten())
        .filter_map(|s| s.secret.as_ref())
        .flat_map(|s| {
            s.items
                .iter()
                .flatten()
                .map(|i| (s.name.clone(), i.key.clone(), i.path.clone()))
        })
        .collect()
}

fn volume_mounts(cr: &RtcdCluster) -> Vec<VolumeMount> {
    let mut m = vec![VolumeMount {
        name: "data".into(),
        mount_path: DATA_DIR.into(),
        ..VolumeMount::default()
    }];
    if !cr.spec.clients.is_empty() {
        m.push(VolumeMount {
            name: "clients".into(),
            mount_path: CLIENTS_DIR.into(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    m
}

/// The store's emptyDir and, with `spec.clients`, one projected volume holding each client
/// Secret's two keys as `<n>-<secret>/clientID` and `<n>-<secret>/authKey`: the layout rtcd's
/// `api.security.clients_dir` reads.
fn volumes(cr: &RtcdCluster) -> Vec<Volume> {
    let mut v = vec![Volume {
        name: "data".into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    if !cr.spec.clients.is_empty() {
        let sources = cr
            .spec
            .clients
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let dir = format!("{i}-{}", c.secret_name);
                VolumeProjection {
                    secret: Some(SecretProjection {
                        name: c.secret_name.clone(),
                        items: Some(vec![
                            KeyToPath {
                                key: c.client_id_key.clone(),
                                path: format!("{dir}/clientID"),
                                ..KeyToPath::default()
                            },
                            KeyToPath {
                                key: c.auth_key_key.clone(),
                                path: format!("{dir}/authKey"),
                                ..KeyToPath::default()
                            },
                        ]),
                        optional: Some(false),
                    }),
                    ..VolumeProjection::default()
                }
            })
            .collect();
        v.push(Volume {
            name: "clients".into(),
            projected: Some(ProjectedVolumeSource {
                // Readable by rtcd (uid 65532; the files belong to root): the pod runs nothing
                // else.
                default_mode: Some(0o444),
                sources: Some(sources),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    v
}

fn port(name: &str, n: i32, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: n,
        protocol: Some(protocol.into()),
        ..ContainerPort::default()
    }
}

/// The user's affinity with a required term pinning the pod to `node` (as the DaemonSet
/// controller does), so the scheduler still checks resources and host ports.
fn affinity(cr: &RtcdCluster, node: &str) -> Affinity {
    let mut a = cr.spec.affinity.clone().unwrap_or_default();
    let pin = NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
            ..NodeSelectorTerm::default()
        }],
    };
    // Eligibility already applied the user's required terms; replacing them with the pin keeps
    // the pod schedulable on exactly this node.
    let na = a.node_affinity.get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(pin);
    a
}

fn plain(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn from_secret(name: &str, r: &SecretKeyRef) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: r.name.clone(),
                key: r.key.clone(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// rtcd's environment. Secret values are never inlined: they come from `secretKeyRef`, and the
/// ICE servers JSON refers to them through `$(VAR)` expansion.
fn env(cr: &RtcdCluster, adv: &Advertised, credentials: &SecretKeyRef) -> Vec<EnvVar> {
    let c = &cr.spec.config;
    let mut env = vec![
        plain("RTCD_API_HTTP_LISTENADDRESS", format!(":{}", c.api_port)),
        plain("RTCD_API_SECURITY_ENABLEADMIN", "true"),
        from_secret("RTCD_API_SECURITY_ADMINSECRETKEY", credentials),
        plain(
            "RTCD_API_SECURITY_ALLOWSELFREGISTRATION",
            c.allow_self_registration.to_string(),
        ),
        plain(
            "RTCD_API_SECURITY_SESSIONCACHE_EXPIRATIONMINUTES",
            c.session_cache_expiration_minutes.to_string(),
        ),
        plain("RTCD_RTC_ICEPORTUDP", c.rtc.udp_port.to_string()),
        plain("RTCD_RTC_ICEPORTTCP", c.rtc.tcp_port.to_string()),
        plain("RTCD_RTC_ICEHOSTOVERRIDE", adv.host_override.clone()),
        plain("RTCD_RTC_ENABLEIPV6", c.rtc.enable_ipv6.to_string()),
        plain("RTCD_STORE_DATASOURCE", format!("{DATA_DIR}/rtcd_db")),
        plain("RTCD_LOGGER_ENABLEFILE", "false"),
        plain("RTCD_LOGGER_ENABLECONSOLE", "true"),
        plain("RTCD_LOGGER_CONSOLEJSON", "true"),
        plain("RTCD_LOGGER_CONSOLELEVEL", c.log_level.as_rtcd()),
    ];
    if !cr.spec.clients.is_empty() {
        env.push(plain("RTCD_API_SECURITY_CLIENTSDIR", CLIENTS_DIR));
    }
    if !c.allowed_origins.is_empty() {
        env.push(plain(
            "RTCD_API_SECURITY_ALLOWEDORIGINS",
            c.allowed_origins.join(","),
        ));
    }
    if let Some(d) = &c.drain_timeout {
        env.push(plain("RTCD_API_DRAINTIMEOUT", d.clone()));
    }
    if let Some(p) = &adv.port_override {
        env.push(plain("RTCD_RTC_ICEHOSTPORTOVERRIDE", p.clone()));
    }
    let cap = &c.capacity;
    for (var, value) in [
        ("RTCD_LIMITS_MAXSESSIONS", cap.max_sessions.map(u64::from)),
        (
            "RTCD_LIMITS_MAXFORWARDEDTRACKS",
            cap.max_forwarded_tracks.map(u64::from),
        ),
        ("RTCD_LIMITS_MAXEGRESSBITRATE", cap.max_egress_bitrate),
    ] {
        if let Some(v) = value {
            env.push(plain(var, v.to_string()));
        }
    }
    if let Some(secret) = &c.rtc.turn_static_auth_secret {
        env.push(from_secret("RTCD_RTC_TURNCONFIG_STATICAUTHSECRET", secret));
        env.push(plain(
            "RTCD_RTC_TURNCONFIG_CREDENTIALSEXPIRATIONMINUTES",
            c.rtc.turn_credentials_expiration_minutes.to_string(),
        ));
    }
    if !c.rtc.ice_servers.is_empty() {
        let mut servers = Vec::new();
        for (i, s) in c.rtc.ice_servers.iter().enumerate() {
            let mut entry = serde_json::Map::new();
            entry.insert("urls".into(), serde_json::json!(s.urls));
            if let Some(u) = &s.username {
                entry.insert("username".into(), serde_json::json!(u));
            }
            if let Some(cred) = &s.credential {
                let var = format!("RTCD_OPERATOR_ICE_CREDENTIAL_{i}");
                // Defined before RTCD_RTC_ICESERVERS so the kubelet can expand it.
                env.push(from_secret(&var, cred));
                entry.insert("credential".into(), serde_json::json!(format!("$({var})")));
            }
            servers.push(serde_json::Value::Object(entry));
        }
        env.push(plain(
            "RTCD_RTC_ICESERVERS",
            serde_json::Value::Array(servers).to_string(),
        ));
    }
    // extraEnv wins: an entry replaces the typed variable of the same name.
    env.retain(|e| !c.extra_env.iter().any(|x| x.name == e.name));
    env.extend(c.extra_env.iter().cloned());
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crd::IceServer,
        resources::{
            address::advertised,
            nodes::tests::{cr, node},
        },
    };

    fn creds() -> SecretKeyRef {
        SecretKeyRef {
            name: "rtcd-credentials".into(),
            key: "adminSecretKey".into(),
        }
    }

    fn env_of(p: &Pod) -> BTreeMap<String, EnvVar> {
        p.spec.as_ref().expect("spec").containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    }

    #[test]
    fn pod_shape() {
        let c = cr();
        let n = node("node-a", "10.0.0.1", Some("203.0.113.1"));
        let adv = advertised(&c, &n, None).expect("address");
        let p = pod(&c, "node-a", &adv, &creds(), "");
        assert_eq!(p.metadata.name.as_deref(), Some("rtcd-node-a"));
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        let init = &spec.init_containers.as_ref().expect("init")[0];
        assert_eq!(
            init.security_context.as_ref().and_then(|s| s.privileged),
            Some(true)
        );
        let script = &init.command.as_ref().expect("cmd")[2];
        assert!(
            script.contains("sysctl -w net.core.rmem_max=16777216"),
            "{script}"
        );
        assert!(script.contains("net.core.wmem_max") && !script.contains("optmem"));
        let c0 = &spec.containers[0];
        let live = c0
            .liveness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone());
        let ready = c0
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone());
        assert_eq!(live.as_deref(), Some("/version"));
        assert_eq!(ready.as_deref(), Some("/api/v1/health"));
        assert_ne!(live, ready);
        assert!(c0.startup_probe.is_some());
        let env = env_of(&p);
        assert_eq!(
            env["RTCD_RTC_ICEHOSTOVERRIDE"].value.as_deref(),
            Some("203.0.113.1/10.0.0.1")
        );
        let key = env["RTCD_API_SECURITY_ADMINSECRETKEY"]
            .value_from
            .as_ref()
            .expect("secret");
        assert_eq!(
            key.secret_key_ref.as_ref().map(|s| s.name.as_str()),
            Some("rtcd-credentials")
        );
        let pin = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .expect("pin");
        let term = &pin
            .required_during_scheduling_ignored_during_execution
            .as_ref()
            .expect("req")
            .node_selector_terms[0];
        assert_eq!(
            term.match_fields.as_ref().expect("fields")[0].values,
            Some(vec!["node-a".to_string()])
        );
        assert_eq!(p.labels()[LABEL_NODE], "node-a");
    }

    #[test]
    fn capacity_limits_become_rtcd_variables_only_when_set() {
        let mut c = cr();
        let n = node("node-a", "10.0.0.1", Some("203.0.113.1"));
        let adv = advertised(&c, &n, None).expect("address");
        let env = env_of(&pod(&c, "node-a", &adv, &creds(), ""));
        assert!(!env.keys().any(|k| k.starts_with("RTCD_LIMITS_MAX")), "{env:?}");
        c.spec.config.capacity.max_sessions = Some(300);
        c.spec.config.capacity.max_egress_bitrate = Some(2_000_000_000);
        let env = env_of(&pod(&c, "node-a", &adv, &creds(), ""));
        assert_eq!(env["RTCD_LIMITS_MAXSESSIONS"].value.as_deref(), Some("300"));
        assert_eq!(
            env["RTCD_LIMITS_MAXEGRESSBITRATE"].value.as_deref(),
            Some("2000000000")
        );
        assert!(!env.contains_key("RTCD_LIMITS_MAXFORWARDEDTRACKS"));
    }

    #[test]
    fn hash_follows_spec_and_address() {
        let c = cr();
        let n = node("a", "10.0.0.1", Some("203.0.113.1"));
        let adv = advertised(&c, &n, None).expect("address");
        let h = |p: &Pod| p.annotations()[ANN_SPEC_HASH].clone();
        let base = h(&pod(&c, "a", &adv, &creds(), ""));
        assert_eq!(base, h(&pod(&c, "a", &adv, &creds(), "")), "deterministic");
        let moved = advertised(&c, &node("a", "10.0.0.1", Some("203.0.113.9")), None).expect("a");
        assert_ne!(
            base,
            h(&pod(&c, "a", &moved, &creds(), "")),
            "address change rolls"
        );
        let mut c2 = cr();
        c2.spec.config.log_level = crate::crd::LogLevel::Debug;
        assert_ne!(base, h(&pod(&c2, "a", &adv, &creds(), "")), "config change rolls");
    }

    #[test]
    fn client_secrets_are_mounted_where_rtcd_reads_them_and_a_rotation_rolls() {
        let mut c = cr();
        let n = node("a", "10.0.0.1", Some("203.0.113.1"));
        let adv = advertised(&c, &n, None).expect("address");
        let none = pod(&c, "a", &adv, &creds(), "");
        assert!(!env_of(&none).contains_key("RTCD_API_SECURITY_CLIENTSDIR"));
        c.spec.clients = serde_json::from_value(serde_json::json!([
            {"secretName": "calls-plugin"},
            {"secretName": "second", "clientIdKey": "id", "authKeyKey": "key"},
        ]))
        .expect("clients");
        let p = pod(&c, "a", &adv, &creds(), "h1");
        assert_eq!(
            env_of(&p)["RTCD_API_SECURITY_CLIENTSDIR"].value.as_deref(),
            Some(CLIENTS_DIR)
        );
        let spec = p.spec.as_ref().expect("spec");
        let mount = spec.containers[0]
            .volume_mounts
            .as_ref()
            .and_then(|m| m.iter().find(|m| m.name == "clients"))
            .expect("mount");
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (CLIENTS_DIR, Some(true))
        );
        let items = client_files(spec);
        let want = [
            ("calls-plugin", "clientID", "0-calls-plugin/clientID"),
            ("calls-plugin", "authKey", "0-calls-plugin/authKey"),
            ("second", "id", "1-second/clientID"),
            ("second", "key", "1-second/authKey"),
        ];
        assert_eq!(
            items,
            want.map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
        );
        let h = |p: &Pod| p.annotations()[ANN_SPEC_HASH].clone();
        assert_eq!(h(&p), h(&pod(&c, "a", &adv, &creds(), "h1")));
        assert_ne!(
            h(&p),
            h(&pod(&c, "a", &adv, &creds(), "h2")),
            "a rotated client Secret rolls the pod"
        );
        assert_ne!(h(&p), h(&none));
    }

    #[test]
    fn ice_servers_reference_secrets_and_extra_env_wins() {
        let mut c = cr();
        c.spec.config.rtc.ice_servers = vec![
            IceServer {
                urls: vec!["stun:stun.example.com:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec!["turn:turn.example.com:3478".into()],
                username: Some("u".into()),
                credential: Some(SecretKeyRef {
                    name: "turn".into(),
                    key: "password".into(),
                }),
            },
        ];
        c.spec.config.extra_env = vec![plain("RTCD_LOGGER_CONSOLELEVEL", "DEBUG")];
        let adv = advertised(&c, &node("a", "10.0.0.1", None), None).expect("address");
        let p = pod(&c, "a", &adv, &creds(), "");
        let env = env_of(&p);
        let json = env["RTCD_RTC_ICESERVERS"].value.clone().expect("json");
        assert_eq!(
            json,
            r#"[{"urls":["stun:stun.example.com:3478"]},{"credential":"$(RTCD_OPERATOR_ICE_CREDENTIAL_1)","urls":["turn:turn.example.com:3478"],"username":"u"}]"#
        );
        let names: Vec<&str> = p.spec.as_ref().expect("s").containers[0]
            .env
            .iter()
            .flatten()
            .map(|e| e.name.as_str())
            .collect();
        let cred = names
            .iter()
            .position(|n| *n == "RTCD_OPERATOR_ICE_CREDENTIAL_1")
            .expect("cred");
        let servers = names
            .iter()
            .position(|n| *n == "RTCD_RTC_ICESERVERS")
            .expect("servers");
        assert!(cred < servers, "defined before use");
        assert_eq!(
            names.iter().filter(|n| **n == "RTCD_LOGGER_CONSOLELEVEL").count(),
            1
        );
        assert_eq!(env["RTCD_LOGGER_CONSOLELEVEL"].value.as_deref(), Some("DEBUG"));
    }

    /// The init container's script, run by `sh` against a stand-in `sysctl` over files: it
    /// raises a setting below the wanted value, keeps one above it, and goes on past a key the
    /// kernel refuses.
    #[test]
    fn the_sysctl_script_only_raises() {
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("state");
        std::fs::write(state.join("net.core.rmem_max"), "212992").expect("rmem");
        std::fs::write(state.join("net.core.wmem_max"), "33554432").expect("wmem");
        let stub = dir.path().join("sysctl");
        std::fs::write(
            &stub,
            format!(
                "#!/bin/sh\nS={}\nif [ \"$1\" = -n ]; then cat \"$S/$2\"; exit; fi\n\
                 k=${{2%%=*}}; v=${{2#*=}}; [ -e \"$S/$k\" ] || exit 1; echo \"$v\" > \"$S/$k\"; echo \"$k = $v\"\n",
                state.display()
            ),
        )
        .expect("stub");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut c = cr();
        c.spec
            .sysctls
            .values
            .insert("net.core.rmem_max".into(), "16777216".into());
        c.spec
            .sysctls
            .values
            .insert("net.core.wmem_max".into(), "16777216".into());
        let n = node("node-a", "10.0.0.1", Some("203.0.113.1"));
        let adv = advertised(&c, &n, None).expect("address");
        let p = pod(&c, "node-a", &adv, &creds(), "");
        let init = &p
            .spec
            .as_ref()
            .expect("spec")
            .init_containers
            .as_ref()
            .expect("init")[0];
        let script = init.command.as_ref().expect("cmd")[2].clone();
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("PATH", format!("{}:/usr/bin:/bin", dir.path().display()))
            .output()
            .expect("sh");
        assert!(out.status.success(), "{out:?}");
        let read = |k: &str| {
            std::fs::read_to_string(state.join(k))
                .expect("read")
                .trim()
                .to_string()
        };
        assert_eq!(read("net.core.rmem_max"), "16777216", "raised");
        assert_eq!(
            read("net.core.wmem_max"),
            "33554432",
            "an admin's larger value kept"
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("net.core.wmem_max = 33554432 (kept)"), "{stdout}");
    }
}
