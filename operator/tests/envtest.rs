//! The operator against a real control plane (etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler, kwok; see e2e/envtest/), with a real rtcd behind every fake node's address.
//! Run by `scripts/operator-e2e.sh`, which starts the stack inside a network namespace and sets
//! KUBECONFIG, RTCD_BIN and KUBECTL. Each test owns a namespace, a node label and an operator.

#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    core::v1::{Node, Pod, Secret, Service},
    discovery::v1::EndpointSlice,
    policy::v1::PodDisruptionBudget,
};
use kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use rtcd_operator::crd::RtcdCluster;
use serde_json::{Value, json};

const OPERATOR: &str = env!("CARGO_BIN_EXE_rtcd-operator");

fn rtcd_bin() -> String {
    std::env::var("RTCD_BIN").expect("RTCD_BIN (set by scripts/operator-e2e.sh)")
}

async fn client() -> Client {
    Client::try_default()
        .await
        .expect("KUBECONFIG (set by scripts/operator-e2e.sh)")
}

/// Polls `f` every 200 ms until it returns Some, for at most `secs`.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "timed out after {secs}s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A child process killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn stop(&mut self) {
        // Never signal a pid after the child was reaped: the number may belong to another process.
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The namespace and name of the operators' Lease: the chart's RBAC lets the operator's
/// ServiceAccount use that one Lease only, in its own namespace (scripts/operator-e2e.sh).
const LEASE: (&str, &str) = ("rtcd-system", "rtcd-operator");

fn start_operator(ns: &str, tag: &str) -> (Proc, u16) {
    start_operator_with(ns, tag, std::env::var("OPERATOR_KUBECONFIG").ok(), LEASE)
}

/// [`start_operator`] with its own kubeconfig (default: the runner's) and Lease, as identity
/// `operator-<tag>`.
fn start_operator_with(ns: &str, tag: &str, kubeconfig: Option<String>, lease: (&str, &str)) -> (Proc, u16) {
    let port = free_port();
    let log = std::env::temp_dir().join(format!("operator-{ns}-{tag}.log"));
    let mut cmd = Command::new(OPERATOR);
    // As the operator's own ServiceAccount (the shipped RBAC) when the runner provides it.
    if let Some(k) = kubeconfig {
        cmd.env("KUBECONFIG", k);
    }
    cmd.env("POD_NAME", format!("operator-{tag}"));
    let child = cmd
        .args(["--namespace", ns, "--admin-address", &format!("127.0.0.1:{port}")])
        .args([
            "--lease-namespace",
            lease.0,
            "--lease-name",
            lease.1,
            "--lease-seconds",
            "6",
        ])
        .env("RUST_LOG", "info,rtcd_operator=debug,kube=warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    (Proc { child, log }, port)
}

/// A real rtcd answering on the fake node's address, as the pod would.
fn start_rtcd(ip: &str) -> Proc {
    start_rtcd_with(ip, &[])
}

/// [`start_rtcd`] with more environment (what the pod's spec gives rtcd).
fn start_rtcd_with(ip: &str, env: &[(&str, String)]) -> Proc {
    let dir = std::env::temp_dir().join(format!("rtcd-{ip}"));
    let _ = std::fs::create_dir_all(&dir);
    let log = dir.join("stderr.log");
    let child = Command::new(rtcd_bin())
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("RTCD_API_HTTP_LISTENADDRESS", format!("{ip}:8045"))
        .env("RTCD_RTC_ICEADDRESSUDP", ip)
        .env("RTCD_RTC_ICEADDRESSTCP", ip)
        .env("RTCD_RTC_UDPSOCKETSCOUNT", "1")
        .env("RTCD_STORE_DATASOURCE", dir.join("db").display().to_string())
        .env("RTCD_LOGGER_ENABLEFILE", "false")
        .env("RTCD_API_SECURITY_ENABLEADMIN", "true")
        .env("RTCD_API_SECURITY_ADMINSECRETKEY", "envtest-admin-key")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    Proc { child, log }
}

async fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((
        code,
        text.split_once("\r\n\r\n")
            .map(|x| x.1.to_string())
            .unwrap_or_default(),
    ))
}

async fn create_namespace(c: &Client, ns: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(c.clone());
    let _ = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap(),
        )
        .await;
}

async fn create_node(c: &Client, name: &str, group: &str, internal: &str, external: Option<&str>) {
    let mut addresses = vec![
        json!({"type": "InternalIP", "address": internal}),
        json!({"type": "Hostname", "address": name}),
    ];
    if let Some(e) = external {
        addresses.push(json!({"type": "ExternalIP", "address": e}));
    }
    let res = json!({"cpu": "8", "memory": "16Gi", "pods": "110"});
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"type": "kwok", "rtcd-test": group, "kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "addresses": addresses,
            "capacity": res, "allocatable": res,
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kwok"}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "kubeletVersion": "fake", "kubeProxyVersion": "fake",
                         "machineID": "", "systemUUID": "", "bootID": "", "kernelVersion": "", "osImage": "", "containerRuntimeVersion": ""},
        },
    }))
    .unwrap();
    let api: Api<Node> = Api::all(c.clone());
    let _ = api.delete(name, &DeleteParams::default()).await;
    eventually("old node to go", 20, || {
        let api = api.clone();
        async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
    })
    .await;
    api.create(&PostParams::default(), &node).await.unwrap();
}

async fn delete_nodes(c: &Client, group: &str) {
    let api: Api<Node> = Api::all(c.clone());
    for n in api
        .list(&ListParams::default().labels(&format!("rtcd-test={group}")))
        .await
        .unwrap()
    {
        let _ = api.delete(&n.name_any(), &DeleteParams::default()).await;
    }
}

fn cluster(name: &str, group: &str, extra: Value) -> RtcdCluster {
    let mut spec = json!({
        "image": "rtcd-rs/rtcd:envtest",
        "nodeSelector": {"rtcd-test": group},
        "drain": {"terminationGracePeriodSeconds": 60},
    });
    merge(&mut spec, extra);
    serde_json::from_value(json!({
        "apiVersion": "rtcd-rs.dev/v1alpha1", "kind": "RtcdCluster",
        "metadata": {"name": name}, "spec": spec,
    }))
    .unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

/// Waits (at most 60 s) until `cluster` has exactly `n` pods, all ready; returns them by node.
async fn ready_pods(c: &Client, ns: &str, cluster: &str, n: usize) -> BTreeMap<String, Pod> {
    eventually(&format!("{n} ready pods of {cluster}"), 60, || {
        let c = c.clone();
        async move {
            let p = pods_by_node(&c, ns, cluster).await;
            (p.len() == n && p.values().all(is_ready)).then_some(p)
        }
    })
    .await
}

/// Waits (at most 60 s) until RtcdCluster `name` is Ready with `nodes` ("ready/desired").
async fn cluster_ready(c: &Client, ns: &str, name: &str, nodes: &str) {
    eventually(&format!("{name} Ready {nodes}"), 60, || {
        let c = c.clone();
        async move {
            let cr = get_cr(&c, ns, name).await;
            (condition(&cr, "Ready").map(|x| x.0) == Some("True".into())
                && cr.status.as_ref()?.ready_nodes.as_deref() == Some(nodes))
            .then_some(())
        }
    })
    .await;
}

/// Creates Secret `rtcd-admin` in `ns` holding the admin key every test rtcd runs with
/// ([`start_rtcd`]); returns the `spec.credentials` that names it. With it the operator's drain
/// calls and the connectivity canary's registration go through.
async fn envtest_credentials(c: &Client, ns: &str) -> Value {
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    let admin: Secret = serde_json::from_value(json!({"metadata": {"name": "rtcd-admin"},
        "stringData": {"adminSecretKey": "envtest-admin-key"}}))
    .unwrap();
    let _ = secrets.create(&PostParams::default(), &admin).await;
    json!({"name": "rtcd-admin", "key": "adminSecretKey"})
}

/// The chart's default `spec.clients`: the plugin's client Secret, generated by the operator.
fn generated_plugin_client() -> Value {
    json!({"clients": [{"secretName": "calls-plugin-client", "generate": true}]})
}

/// Creates RtcdCluster `name` (see [`cluster`]) in `ns`.
async fn create_cluster(c: &Client, ns: &str, name: &str, group: &str, extra: Value) -> Api<RtcdCluster> {
    let crs: Api<RtcdCluster> = Api::namespaced(c.clone(), ns);
    crs.create(&PostParams::default(), &cluster(name, group, extra))
        .await
        .unwrap();
    crs
}

/// Deletes RtcdCluster `name` and waits (at most 60 s) until the operator has let it go.
async fn delete_cluster(crs: &Api<RtcdCluster>, name: &str) {
    crs.delete(name, &DeleteParams::default()).await.unwrap();
    eventually(&format!("RtcdCluster {name} gone"), 60, || {
        let crs = crs.clone();
        async move { crs.get_opt(name).await.unwrap().is_none().then_some(()) }
    })
    .await;
}

async fn pods_by_node(c: &Client, ns: &str, name: &str) -> BTreeMap<String, Pod> {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    api.list(&ListParams::default().labels(&format!("rtcd-rs.dev/cluster={name}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| {
            (
                p.annotations()
                    .get("rtcd-rs.dev/node-name")
                    .cloned()
                    .unwrap_or_default(),
                p,
            )
        })
        .collect()
}

fn env_of(p: &Pod, name: &str) -> Option<String> {
    p.spec.as_ref()?.containers[0]
        .env
        .as_ref()?
        .iter()
        .find(|e| e.name == name)?
        .value
        .clone()
}

fn is_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn condition(cr: &RtcdCluster, t: &str) -> Option<(String, String, String)> {
    let c = cr.status.as_ref()?.conditions.iter().find(|c| c.type_ == t)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn get_cr(c: &Client, ns: &str, name: &str) -> RtcdCluster {
    Api::<RtcdCluster>::namespaced(c.clone(), ns)
        .get(name)
        .await
        .unwrap()
}

/// Ready endpoints of the headless Service: address → ready.
async fn hosts_endpoints(c: &Client, ns: &str, svc: &str) -> BTreeMap<String, bool> {
    let api: Api<EndpointSlice> = Api::namespaced(c.clone(), ns);
    let mut out = BTreeMap::new();
    for s in api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={svc}")))
        .await
        .unwrap()
    {
        for e in s.endpoints.into_iter().flatten() {
            let ready = e.conditions.as_ref().and_then(|c| c.ready).unwrap_or(false);
            for a in e.addresses {
                out.insert(a, ready);
            }
        }
    }
    out
}

async fn set_pod_ready(c: &Client, ns: &str, pod: &str, ready: bool) {
    let api: Api<Pod> = Api::namespaced(c.clone(), ns);
    let s = if ready { "True" } else { "False" };
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": s}, {"type": "ContainersReady", "status": s}]}});
    api.patch_status(pod, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
}

/// resourceVersion of every `K` the operator manages in `ns`, keyed `<kind>/<name>`.
async fn versions_of<K>(c: &Client, ns: &str, kind: &str, out: &mut BTreeMap<String, String>)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let sel = ListParams::default().labels("app.kubernetes.io/managed-by=rtcd-operator");
    for o in Api::<K>::namespaced(c.clone(), ns).list(&sel).await.unwrap() {
        out.insert(
            format!("{kind}/{}", o.name_any()),
            o.resource_version().unwrap_or_default(),
        );
    }
}

async fn resource_versions(c: &Client, ns: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    versions_of::<Pod>(c, ns, "pod", &mut out).await;
    versions_of::<Service>(c, ns, "service", &mut out).await;
    versions_of::<Secret>(c, ns, "secret", &mut out).await;
    versions_of::<PodDisruptionBudget>(c, ns, "pdb", &mut out).await;
    out
}

fn kubectl(args: &[&str]) -> Option<String> {
    let bin = std::env::var("KUBECTL").ok()?;
    let out = Command::new(bin).args(args).output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr))
}

/// The Events of namespace `ns` as `kubectl get events -o custom-columns=<columns>` prints them
/// (empty when kubectl cannot run).
fn events(ns: &str, columns: &str) -> String {
    kubectl(&[
        "get",
        "events",
        "-n",
        ns,
        "-o",
        &format!("custom-columns={columns}"),
    ])
    .unwrap_or_default()
}

#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn fleet_lifecycle() {
    let c = client().await;
    let (ns, group) = ("fleet", "fleet");
    create_namespace(&c, ns).await;
    let ips = ["198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4"];
    let _rtcds: Vec<Proc> = ips.iter().map(|ip| start_rtcd(ip)).collect();
    for (i, ip) in ips.iter().take(3).enumerate() {
        create_node(
            &c,
            &format!("fleet-{i}"),
            group,
            ip,
            Some(&format!("203.0.113.{}", i + 1)),
        )
        .await;
    }
    let (mut op, admin) = start_operator(ns, "1");
    let crs: Api<RtcdCluster> = Api::namespaced(c.clone(), ns);
    // No NotReady grace here: node_trouble_is_handled_like_a_careful_human covers the grace.
    crs.create(
        &PostParams::default(),
        &cluster(
            "calls",
            group,
            json!({"nodeTrouble": {"notReadyGraceSeconds": 0}}),
        ),
    )
    .await
    .unwrap();

    // 3 nodes with ExternalIPs → 3 pods, each advertising its own node.
    let pods = ready_pods(&c, ns, "calls", 3).await;
    for (i, ip) in ips.iter().take(3).enumerate() {
        let p = &pods[&format!("fleet-{i}")];
        assert_eq!(
            env_of(p, "RTCD_RTC_ICEHOSTOVERRIDE"),
            Some(format!("203.0.113.{}/{ip}", i + 1))
        );
        let spec = p.spec.as_ref().unwrap();
        assert_eq!(spec.host_network, Some(true));
        assert_eq!(spec.dns_policy.as_deref(), Some("ClusterFirstWithHostNet"));
        assert_eq!(
            spec.node_name.as_deref(),
            Some(format!("fleet-{i}").as_str()),
            "scheduled onto its node"
        );
        let init = &spec.init_containers.as_ref().unwrap()[0];
        assert!(init.command.as_ref().unwrap()[2].contains("sysctl -w net.core.rmem_max=16777216"));
        let ctr = &spec.containers[0];
        assert_eq!(
            ctr.liveness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/version")
        );
        assert_eq!(
            ctr.readiness_probe
                .as_ref()
                .unwrap()
                .http_get
                .as_ref()
                .unwrap()
                .path
                .as_deref(),
            Some("/api/v1/health")
        );
        assert!(ctr.startup_probe.is_some());
        assert_eq!(
            p.status.as_ref().unwrap().pod_ip.as_deref(),
            Some(*ip),
            "hostNetwork pod IP is the node's"
        );
    }
    let svcs: Api<Service> = Api::namespaced(c.clone(), ns);
    let hosts = svcs.get("calls-hosts").await.unwrap();
    let ports: Vec<(i32, String)> = hosts
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| (p.port, p.protocol.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        ports,
        vec![(8045, "TCP".into()), (8443, "UDP".into()), (8443, "TCP".into())]
    );
    assert_eq!(
        svcs.get("calls").await.unwrap().spec.unwrap().type_.as_deref(),
        Some("ClusterIP")
    );
    assert!(
        Api::<PodDisruptionBudget>::namespaced(c.clone(), ns)
            .get("calls")
            .await
            .is_ok()
    );

    // Status: Ready, per-node health polled from the real rtcd, a generated Secret by name only.
    let cr = eventually("Ready=True", 60, || {
        let c = c.clone();
        async move {
            let cr = get_cr(&c, ns, "calls").await;
            (condition(&cr, "Ready").map(|x| x.0) == Some("True".into())).then_some(cr)
        }
    })
    .await;
    let st = cr.status.clone().unwrap();
    assert_eq!(st.ready_nodes.as_deref(), Some("3/3"));
    assert_eq!(st.observed_generation, cr.metadata.generation);
    assert_eq!(st.credentials_secret.as_deref(), Some("calls-credentials"));
    for n in &st.nodes {
        assert!(n.ready && n.state == "Running", "{n:?}");
        assert!(n.cpu_load.is_some(), "cpu_load from /system: {n:?}");
        assert_eq!(n.sessions, Some(0));
    }
    assert_eq!(
        condition(&cr, "AddressesReachable").map(|x| (x.0, x.1)),
        Some(("True".into(), "AsExpected".into())),
        "every node advertises its own public address"
    );
    let secret = Api::<Secret>::namespaced(c.clone(), ns)
        .get("calls-credentials")
        .await
        .unwrap();
    let key = secret.data.unwrap()["adminSecretKey"].0.clone();
    assert!(key.len() >= 32, "a strong generated key");
    assert!(
        !serde_json::to_string(&cr.status)
            .unwrap()
            .contains(&String::from_utf8_lossy(&key).to_string())
    );
    let eps = eventually("3 ready endpoints", 30, || {
        let c = c.clone();
        async move {
            let e = hosts_endpoints(&c, ns, "calls-hosts").await;
            (e.len() == 3 && e.values().all(|r| *r)).then_some(e)
        }
    })
    .await;
    assert_eq!(
        eps.keys().cloned().collect::<Vec<_>>(),
        vec!["198.18.1.1", "198.18.1.2", "198.18.1.3"]
    );
    if let Some(out) = kubectl(&["get", "rtcdclusters", "-n", ns]) {
        let header = out.lines().next().unwrap_or_default().to_string();
        assert!(
            header.contains("READY") && header.contains("NODES") && header.contains("AGE"),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("calls") && l.contains("True") && l.contains("3/3")),
            "{out}"
        );
    }
    let (code, m) = http_get(&format!("127.0.0.1:{admin}"), "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(m.contains("rtcd_operator_reconciles_total{result=\"ok\"}"), "{m}");
    assert!(
        m.contains(
            "rtcd_operator_instance_address_ok{namespace=\"fleet\",cluster=\"calls\",node=\"fleet-0\"} 1"
        ),
        "{m}"
    );
    assert_eq!(
        http_get(&format!("127.0.0.1:{admin}"), "/readyz")
            .await
            .map(|x| x.0),
        Some(200)
    );

    // ServiceMonitor: none while its CRD is absent; created once the CRD appears.
    let gvk = kube::core::GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor");
    assert!(
        kube::discovery::pinned_kind(&c, &gvk).await.is_err(),
        "no ServiceMonitor CRD yet"
    );
    let crd: k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition =
        serde_json::from_value(json!({
            "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
            "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                     "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor", "listKind": "ServiceMonitorList"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
        }))
        .unwrap();
    Api::all(c.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let sm = eventually(
        "ServiceMonitor (found at the next pass, within a minute)",
        120,
        || {
            let c = c.clone();
            let gvk = gvk.clone();
            async move {
                let (ar, _) = kube::discovery::pinned_kind(&c, &gvk).await.ok()?;
                Api::<kube::api::DynamicObject>::namespaced_with(c.clone(), ns, &ar)
                    .get_opt("calls")
                    .await
                    .ok()?
            }
        },
    )
    .await;
    assert_eq!(sm.data["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        sm.data["spec"]["selector"]["matchLabels"]["rtcd-rs.dev/service"],
        "calls-api"
    );

    // A pod turns unready → out of the headless Service's endpoints, Degraded names the node.
    set_pod_ready(&c, ns, "calls-fleet-1", false).await;
    eventually("endpoint 198.18.1.2 not ready", 30, || {
        let c = c.clone();
        async move {
            (hosts_endpoints(&c, ns, "calls-hosts").await.get("198.18.1.2") != Some(&true)).then_some(())
        }
    })
    .await;
    let (_, reason, msg) = eventually("Degraded naming fleet-1", 30, || {
        let c = c.clone();
        async move {
            let cr = get_cr(&c, ns, "calls").await;
            condition(&cr, "Degraded").filter(|d| d.0 == "True" && d.2.contains("fleet-1"))
        }
    })
    .await;
    assert_eq!(reason, "PodNotReady");
    assert!(msg.contains("fleet-1: pod is not ready"), "{msg}");
    assert_eq!(
        condition(&get_cr(&c, ns, "calls").await, "Ready").unwrap().0,
        "False"
    );
    set_pod_ready(&c, ns, "calls-fleet-1", true).await;
    eventually("Ready again", 30, || {
        let c = c.clone();
        async move {
            (condition(&get_cr(&c, ns, "calls").await, "Ready").map(|x| x.0) == Some("True".into()))
                .then_some(())
        }
    })
    .await;

    // Restart the operator → zero writes to children.
    let before = resource_versions(&c, ns).await;
    assert_eq!(
        before.len(),
        7,
        "3 pods, 2 Services, the Secret, the PDB: {before:?}"
    );
    op.stop();
    let (op2, admin2) = start_operator(ns, "2");
    let lease_held = eventually("new operator leads", 30, || {
        let log = op2.log();
        async move { log.contains("leading").then_some(()) }
    });
    lease_held.await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(
        resource_versions(&c, ns).await,
        before,
        "a restarted operator must not rewrite children"
    );
    drop(op);
    let _op = op2;

    // Add a node → a new pod.
    create_node(&c, "fleet-3", group, ips[3], Some("203.0.113.4")).await;
    eventually("pod on fleet-3", 60, || {
        let c = c.clone();
        async move {
            pods_by_node(&c, ns, "calls")
                .await
                .get("fleet-3")
                .filter(|p| is_ready(p))
                .map(|_| ())
        }
    })
    .await;

    // An address change rolls that node's pod only.
    let nodes: Api<Node> = Api::all(c.clone());
    let old_uid = pods_by_node(&c, ns, "calls").await["fleet-3"].uid();
    let patch = json!({"status": {"addresses": [{"type": "InternalIP", "address": ips[3]}, {"type": "Hostname", "address": "fleet-3"}, {"type": "ExternalIP", "address": "203.0.113.44"}]}});
    nodes
        .patch_status("fleet-3", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    eventually("fleet-3 rolled to the new address", 60, || {
        let c = c.clone();
        let old_uid = old_uid.clone();
        async move {
            let p = pods_by_node(&c, ns, "calls").await;
            let p = p.get("fleet-3")?;
            (p.uid() != old_uid
                && env_of(p, "RTCD_RTC_ICEHOSTOVERRIDE").as_deref() == Some("203.0.113.44/198.18.1.4"))
            .then_some(())
        }
    })
    .await;

    // NotReady (no grace, idle) → its pod goes; Ready again → back.
    let not_ready = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "KubeletNotReady", "message": "test"}]}});
    nodes
        .patch_status("fleet-0", &PatchParams::default(), &Patch::Strategic(&not_ready))
        .await
        .unwrap();
    eventually("pod of the NotReady node gone", 60, || {
        let c = c.clone();
        async move { (!pods_by_node(&c, ns, "calls").await.contains_key("fleet-0")).then_some(()) }
    })
    .await;
    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test"}]}});
    nodes
        .patch_status("fleet-0", &PatchParams::default(), &Patch::Strategic(&ready))
        .await
        .unwrap();

    // Cordon one → its pod drains and goes. Delete another → its pod goes.
    nodes
        .patch(
            "fleet-2",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    nodes.delete("fleet-3", &DeleteParams::default()).await.unwrap();
    eventually("pods of fleet-2 and fleet-3 gone", 60, || {
        let c = c.clone();
        async move {
            let p = pods_by_node(&c, ns, "calls").await;
            (!p.contains_key("fleet-2") && !p.contains_key("fleet-3") && p.len() == 2).then_some(())
        }
    })
    .await;
    let ev = events(ns, "REASON:.reason,NOTE:.note");
    assert!(
        ev.is_empty() || (ev.contains("PodCreated") && ev.contains("PodDraining")),
        "{ev}"
    );
    nodes
        .patch(
            "fleet-2",
            &PatchParams::default(),
            &Patch::Merge(&json!({"spec": {"unschedulable": false}})),
        )
        .await
        .unwrap();
    ready_pods(&c, ns, "calls", 3).await;
    cluster_ready(&c, ns, "calls", "3/3").await;

    // A spec change rolls one node at a time: never more than one node without a ready pod.
    let before: BTreeMap<String, String> = pods_by_node(&c, ns, "calls")
        .await
        .into_iter()
        .map(|(n, p)| (n, p.uid().unwrap()))
        .collect();
    crs.patch(
        "calls",
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"config": {"logLevel": "debug"}}})),
    )
    .await
    .unwrap();
    let start = Instant::now();
    let mut worst = 0;
    loop {
        let p = pods_by_node(&c, ns, "calls").await;
        let serving = before
            .keys()
            .filter(|n| {
                p.get(*n)
                    .is_some_and(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
            })
            .count();
        worst = worst.max(before.len() - serving);
        let rolled = before.iter().all(|(n, uid)| {
            p.get(n).is_some_and(|p| {
                p.uid().as_ref() != Some(uid)
                    && is_ready(p)
                    && env_of(p, "RTCD_LOGGER_CONSOLELEVEL").as_deref() == Some("DEBUG")
            })
        });
        if rolled {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "rolling update did not finish: {:?}",
            p.keys()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        worst <= 1,
        "{worst} nodes were out of service at once during the roll"
    );

    // Address linting: a private address advertised to internet clients, another node's
    // address, and a hostname that does not resolve (this namespace has no route to any DNS
    // server: the lookup fails at once, nothing leaves), each named with its node and value in
    // AddressesReachable, an Event and a metric.
    crs.patch(
        "calls",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"iceHostOverride": {"static": {
            "fleet-0": "10.1.2.3", "fleet-1": "203.0.113.3", "fleet-2": "rtc.invalid"}}}})),
    )
    .await
    .unwrap();
    let (reason, msg) = eventually("AddressesReachable=False", 60, || {
        let c = c.clone();
        async move {
            let (st, reason, msg) = condition(&get_cr(&c, ns, "calls").await, "AddressesReachable")?;
            (st == "False" && msg.contains("fleet-1") && msg.contains("fleet-2")).then_some((reason, msg))
        }
    })
    .await;
    assert_eq!(reason, "OtherNodesAddress", "{msg}");
    assert!(
        msg.contains("fleet-0 advertises 10.1.2.3, a private address, to clients on the internet"),
        "{msg}"
    );
    assert!(
        msg.contains("fleet-1 advertises 203.0.113.3, which is node fleet-2's address"),
        "{msg}"
    );
    assert!(
        msg.contains("fleet-2 advertises rtc.invalid, a hostname that does not resolve"),
        "{msg}"
    );
    let ev = events(ns, "REASON:.reason,MESSAGE:.message");
    assert!(
        ev.contains("PrivateAddress") && ev.contains("fleet-0 advertises 10.1.2.3"),
        "{ev}"
    );
    assert!(
        ev.contains("OtherNodesAddress") && ev.contains("UnresolvableHostname"),
        "{ev}"
    );
    // The operator leading now is the second one (started above).
    let (_, m) = http_get(&format!("127.0.0.1:{admin2}"), "/metrics")
        .await
        .unwrap();
    assert!(
        m.contains(
            "rtcd_operator_instance_address_ok{namespace=\"fleet\",cluster=\"calls\",node=\"fleet-0\"} 0"
        ),
        "{m}"
    );
    // Clients on the nodes' own network: private addresses are right; the mix-up is fixed.
    crs.patch(
        "calls",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"iceHostOverride": {"clientNetwork": "Private", "static": {"fleet-1": null, "fleet-2": null}}}})),
    )
    .await
    .unwrap();
    eventually("AddressesReachable=True", 60, || {
        let c = c.clone();
        async move {
            let (st, ..) = condition(&get_cr(&c, ns, "calls").await, "AddressesReachable")?;
            (st == "True").then_some(())
        }
    })
    .await;

    // Delete the CR → the finalizer drains and every child goes.
    crs.delete("calls", &DeleteParams::default()).await.unwrap();
    eventually("CR and children gone", 60, || {
        let c = c.clone();
        async move {
            let gone = Api::<RtcdCluster>::namespaced(c.clone(), ns)
                .get_opt("calls")
                .await
                .unwrap()
                .is_none();
            (gone && resource_versions(&c, ns).await.is_empty()).then_some(())
        }
    })
    .await;
    delete_nodes(&c, group).await;
}

/// A namespace (and node group) of the same name with one node at `ip`, a real rtcd there, and
/// an operator for the namespace.
async fn one_node_setup(
    ns: &str,
    node: &str,
    ip: &str,
    external: &str,
) -> (Client, Api<RtcdCluster>, Proc, Proc) {
    let c = client().await;
    create_namespace(&c, ns).await;
    let rtcd = start_rtcd(ip);
    create_node(&c, node, ns, ip, Some(external)).await;
    let (op, _) = start_operator(ns, "1");
    let crs = Api::namespaced(c.clone(), ns);
    (c, crs, rtcd, op)
}

#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn invalid_specs_and_missing_secrets_are_reported_not_rolled_out() {
    let (ns, group) = ("invalid", "invalid");
    let (c, crs, _rtcd, _op) = one_node_setup(ns, "invalid-0", "198.18.1.21", "203.0.113.21").await;

    // The schema rejects what it can, naming the field.
    let bad_mode = serde_json::from_value::<Value>(json!({
        "apiVersion": "rtcd-rs.dev/v1alpha1", "kind": "RtcdCluster",
        "metadata": {"name": "bad-mode"}, "spec": {"media": {"mode": "Bogus"}, "config": {"rtc": {"udpPort": 70000}}},
    }))
    .unwrap();
    let dynamic: Api<kube::api::DynamicObject> =
        Api::namespaced_with(c.clone(), ns, &kube::api::ApiResource::erase::<RtcdCluster>(&()));
    let err = dynamic
        .create(&PostParams::default(), &serde_json::from_value(bad_mode).unwrap())
        .await
        .expect_err("schema must reject");
    let text = err.to_string();
    assert!(
        text.contains("spec.media.mode") && text.contains("spec.config.rtc.udpPort"),
        "{text}"
    );
    // The privileged init container: only the two socket-buffer caps, only an image pinned by
    // digest; the API server refuses anything else, naming the field.
    let privileged = |name: &str, sysctls: Value| {
        serde_json::from_value::<kube::api::DynamicObject>(json!({
            "apiVersion": "rtcd-rs.dev/v1alpha1", "kind": "RtcdCluster",
            "metadata": {"name": name}, "spec": {"sysctls": sysctls},
        }))
        .unwrap()
    };
    for (name, sysctls, field) in [
        (
            "bad-sysctl",
            json!({"values": {"kernel.core_pattern": "1"}}),
            "spec.sysctls.values",
        ),
        (
            "bad-optmem",
            json!({"values": {"net.core.optmem_max": "16777216"}}),
            "spec.sysctls.values",
        ),
        (
            "bad-image",
            json!({"image": "busybox:1.37"}),
            "spec.sysctls.image",
        ),
    ] {
        let err = dynamic
            .create(&PostParams::default(), &privileged(name, sysctls))
            .await
            .expect_err("the API server must reject");
        let text = err.to_string();
        assert!(text.contains(field), "{name}: {text}");
    }

    // What the schema cannot see: Ready=False naming the field; nothing is created.
    crs.create(
        &PostParams::default(),
        &cluster("late", group, json!({"config": {"drainTimeout": "2h"}})),
    )
    .await
    .unwrap();
    let (_, reason, msg) = eventually("InvalidSpec", 30, || {
        let c = c.clone();
        async move {
            condition(&get_cr(&c, ns, "late").await, "Ready")
                .filter(|r| r.0 == "False" && r.1 == "InvalidSpec")
        }
    })
    .await;
    assert_eq!(reason, "InvalidSpec");
    assert!(msg.contains("spec.config.drainTimeout"), "{msg}");
    assert!(
        pods_by_node(&c, ns, "late").await.is_empty(),
        "no partial rollout"
    );

    // A missing Secret: a condition and an Event, no pod.
    crs.create(
        &PostParams::default(),
        &cluster("nosecret", group, json!({"credentials": {"name": "absent"}})),
    )
    .await
    .unwrap();
    let (_, _, msg) = eventually("SecretMissing", 30, || {
        let c = c.clone();
        async move { condition(&get_cr(&c, ns, "nosecret").await, "Ready").filter(|r| r.1 == "SecretMissing") }
    })
    .await;
    assert!(
        msg.contains("spec.credentials") && msg.contains("absent"),
        "{msg}"
    );
    assert!(pods_by_node(&c, ns, "nosecret").await.is_empty());
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(c.clone(), ns);
    eventually("SecretMissing event", 30, || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .any(|e| {
                    e.reason.as_deref() == Some("SecretMissing")
                        && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("nosecret")
                })
                .then_some(())
        }
    })
    .await;
    // Creating the Secret heals it.
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": "absent"}, "stringData": {"adminSecretKey": "k".repeat(32)}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(c.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    eventually("pod once the Secret exists", 60, || {
        let c = c.clone();
        async move { (pods_by_node(&c, ns, "nosecret").await.len() == 1).then_some(()) }
    })
    .await;

    // An image that cannot be pulled (as the kubelet reports it): a condition and an Event.
    let pod = pods_by_node(&c, ns, "nosecret")
        .await
        .remove("invalid-0")
        .unwrap();
    let waiting = json!({"status": {"containerStatuses": [{"name": "rtcd", "image": "rtcd-rs/rtcd:envtest", "imageID": "",
        "ready": false, "restartCount": 0,
        "state": {"waiting": {"reason": "ImagePullBackOff", "message": "Back-off pulling image"}}}]}});
    Api::<Pod>::namespaced(c.clone(), ns)
        .patch_status(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Strategic(&waiting),
        )
        .await
        .unwrap();
    let (_, reason, msg) =
        eventually("ImagePullError", 60, || {
            let c = c.clone();
            async move {
                condition(&get_cr(&c, ns, "nosecret").await, "Degraded").filter(|d| d.1 == "ImagePullError")
            }
        })
        .await;
    assert_eq!(reason, "ImagePullError");
    assert!(
        msg.contains("invalid-0") && msg.contains("ImagePullBackOff"),
        "{msg}"
    );
    eventually("ImagePullError event", 30, || {
        let events = events.clone();
        async move {
            events
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .iter()
                .any(|e| e.reason.as_deref() == Some("ImagePullError"))
                .then_some(())
        }
    })
    .await;

    // A node without the requested address: a condition naming it.
    crs.create(
        &PostParams::default(),
        &cluster(
            "noaddr",
            group,
            json!({"iceHostOverride": {"nodeAddress": "ExternalDNS", "fallback": []}}),
        ),
    )
    .await
    .unwrap();
    let (_, reason, msg) = eventually("AddressMissing", 30, || {
        let c = c.clone();
        async move { condition(&get_cr(&c, ns, "noaddr").await, "Degraded").filter(|d| d.0 == "True") }
    })
    .await;
    assert_eq!(reason, "AddressMissing");
    assert!(msg.contains("invalid-0") && msg.contains("ExternalDNS"), "{msg}");
    for name in ["late", "nosecret", "noaddr"] {
        crs.delete(name, &DeleteParams::default()).await.unwrap();
    }
    delete_nodes(&c, group).await;
}

#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn load_balancer_mode_advertises_the_ingress_address() {
    let (ns, group) = ("lb", "lb");
    let (c, crs, _rtcd, _op) = one_node_setup(ns, "lb-0", "198.18.1.11", "203.0.113.11").await;
    let extra = json!({"media": {"mode": "LoadBalancer", "loadBalancer": {"sourceRanges": ["192.0.2.0/24"], "annotations": {"example.com/lb": "udp"}}}});
    crs.create(&PostParams::default(), &cluster("edge", group, extra))
        .await
        .unwrap();
    let svcs: Api<Service> = Api::namespaced(c.clone(), ns);
    let svc = eventually("per-node LB Service", 30, || {
        let svcs = svcs.clone();
        async move { svcs.get_opt("edge-media-lb-0").await.ok().flatten() }
    })
    .await;
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        spec.load_balancer_source_ranges,
        Some(vec!["192.0.2.0/24".to_string()])
    );
    let protos: Vec<String> = spec
        .ports
        .unwrap()
        .into_iter()
        .map(|p| p.protocol.unwrap_or_default())
        .collect();
    assert_eq!(protos, vec!["UDP", "TCP"]);
    assert_eq!(
        svc.annotations().get("example.com/lb").map(String::as_str),
        Some("udp")
    );
    // No ingress yet: no pod, Progressing says why.
    let (_, reason, _) = eventually("WaitingForLoadBalancer", 30, || {
        let c = c.clone();
        async move { condition(&get_cr(&c, ns, "edge").await, "Progressing").filter(|p| p.0 == "True") }
    })
    .await;
    assert_eq!(reason, "WaitingForLoadBalancer");
    assert!(pods_by_node(&c, ns, "edge").await.is_empty());
    // The cloud (here: the test) assigns an ingress IP → the pod advertises it.
    let patch = json!({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.50"}]}}});
    svcs.patch_status("edge-media-lb-0", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let pod = eventually("pod advertising the LB", 60, || {
        let c = c.clone();
        async move { pods_by_node(&c, ns, "edge").await.remove("lb-0") }
    })
    .await;
    assert_eq!(
        env_of(&pod, "RTCD_RTC_ICEHOSTOVERRIDE").as_deref(),
        Some("192.0.2.50/198.18.1.11")
    );
    assert_eq!(
        pod.labels().get("rtcd-rs.dev/node").map(String::as_str),
        Some("lb-0")
    );
    crs.delete("edge", &DeleteParams::default()).await.unwrap();
    eventually("LB Service gone", 60, || {
        let svcs = svcs.clone();
        async move {
            svcs.get_opt("edge-media-lb-0")
                .await
                .ok()?
                .is_none()
                .then_some(())
        }
    })
    .await;
    delete_nodes(&c, group).await;
}

/// `spec.clients`: a client Secret that does not exist yet blocks the rollout naming the field;
/// once it exists, every pod mounts it where rtcd reads configured clients
/// (`RTCD_API_SECURITY_CLIENTSDIR`), and rotating its auth key rolls the pod (rtcd reads the
/// clients once, at start).
#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn client_secrets_are_mounted_and_a_rotation_rolls_the_pod() {
    let (ns, group) = ("clients", "clients");
    let (c, crs, _rtcd, _op) = one_node_setup(ns, "clients-0", "198.18.1.31", "203.0.113.31").await;
    crs.create(
        &PostParams::default(),
        &cluster(
            "withclients",
            group,
            json!({"clients": [{"secretName": "calls-plugin"}]}),
        ),
    )
    .await
    .unwrap();
    let (_, _, msg) =
        eventually("SecretMissing for spec.clients", 30, || {
            let c = c.clone();
            async move {
                condition(&get_cr(&c, ns, "withclients").await, "Ready").filter(|r| r.1 == "SecretMissing")
            }
        })
        .await;
    assert!(
        msg.contains("spec.clients[0].clientIdKey") && msg.contains("calls-plugin"),
        "{msg}"
    );
    assert!(pods_by_node(&c, ns, "withclients").await.is_empty());

    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    let secret = |key: &str| -> Secret {
        serde_json::from_value(json!({"metadata": {"name": "calls-plugin"},
            "stringData": {"clientID": "mattermost-calls", "authKey": key}}))
        .unwrap()
    };
    secrets
        .create(&PostParams::default(), &secret(&"a".repeat(40)))
        .await
        .unwrap();
    let pod = eventually("pod once the client Secret exists", 60, || {
        let c = c.clone();
        async move { pods_by_node(&c, ns, "withclients").await.remove("clients-0") }
    })
    .await;
    assert_eq!(
        env_of(&pod, "RTCD_API_SECURITY_CLIENTSDIR").as_deref(),
        Some("/etc/rtcd/clients")
    );
    let spec = pod.spec.as_ref().unwrap();
    let paths: Vec<String> = rtcd_operator::resources::pod::client_files(spec)
        .into_iter()
        .map(|(name, key, path)| format!("{name}:{key}->{path}"))
        .collect();
    assert_eq!(
        paths,
        [
            "calls-plugin:clientID->0-calls-plugin/clientID",
            "calls-plugin:authKey->0-calls-plugin/authKey"
        ]
    );
    let hash = |p: &Pod| p.annotations().get("rtcd-rs.dev/spec-hash").cloned();
    let before = hash(&pod);

    secrets
        .replace("calls-plugin", &PostParams::default(), &secret(&"b".repeat(40)))
        .await
        .unwrap();
    eventually("the pod rolled after the client Secret rotated", 150, || {
        let c = c.clone();
        let before = before.clone();
        async move {
            let p = pods_by_node(&c, ns, "withclients").await.remove("clients-0")?;
            (hash(&p) != before && p.metadata.deletion_timestamp.is_none()).then_some(())
        }
    })
    .await;
    crs.delete("withclients", &DeleteParams::default()).await.unwrap();
    delete_nodes(&c, group).await;
}

/// The chart's default: `spec.clients` with `generate: true`. The operator creates the plugin's
/// client Secret; an rtcd instance started afterwards from the pod's spec (its clients volume
/// materialized from the Secret, as the kubelet would, and its self-registration setting) lets
/// rtcd's own Go client (`service.Client`, what the Calls plugin runs) connect with those
/// credentials and carry a call, while self-registration stays off. The generated Secret
/// outlives the RtcdCluster (Mattermost holds its values).
#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn the_plugin_client_connects_to_an_instance_started_after_it_was_configured() {
    let (ns, group, node, ip) = ("plugin", "plugin", "plugin-0", "198.18.1.41");
    let c = client().await;
    create_namespace(&c, ns).await;
    create_node(&c, node, group, ip, Some("203.0.113.41")).await;
    let (_op, _) = start_operator(ns, "1");
    let crs = create_cluster(&c, ns, "calls", group, generated_plugin_client()).await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    let secret = eventually("the generated client Secret", 30, || {
        let secrets = secrets.clone();
        async move { secrets.get_opt("calls-plugin-client").await.unwrap() }
    })
    .await;
    let value =
        |s: &Secret, k: &str| -> String { String::from_utf8(s.data.as_ref().unwrap()[k].0.clone()).unwrap() };
    let (client_id, auth_key) = (value(&secret, "clientID"), value(&secret, "authKey"));
    assert_eq!(client_id, "mattermost");
    assert_eq!(auth_key.len(), 43, "32 random bytes, base64url");
    assert!(secret.owner_references().is_empty(), "outlives the RtcdCluster");

    let pod = eventually("the pod", 60, || {
        let c = c.clone();
        async move { pods_by_node(&c, ns, "calls").await.remove(node) }
    })
    .await;
    assert_eq!(
        env_of(&pod, "RTCD_API_SECURITY_ALLOWSELFREGISTRATION").as_deref(),
        Some("false")
    );
    // Play the kubelet: the pod's projected clients volume, from the Secret it names.
    let dir = std::env::temp_dir().join(format!("rtcd-{ip}-clients"));
    let _ = std::fs::remove_dir_all(&dir);
    let files = rtcd_operator::resources::pod::client_files(pod.spec.as_ref().unwrap());
    assert_eq!(files.len(), 2, "{files:?}");
    for (name, key, path) in files {
        let s = secrets.get(&name).await.unwrap();
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, value(&s, &key)).unwrap();
    }
    let self_registration = "RTCD_API_SECURITY_ALLOWSELFREGISTRATION";
    let env = [
        ("RTCD_API_SECURITY_CLIENTSDIR", dir.display().to_string()),
        (self_registration, env_of(&pod, self_registration).unwrap()),
    ];
    let _rtcd = start_rtcd_with(ip, &env);
    let addr = format!("{ip}:8045");
    eventually("rtcd up", 20, || {
        let addr = addr.clone();
        async move { http_get(&addr, "/version").await.filter(|r| r.0 == 200) }
    })
    .await;

    let compat = std::env::var("COMPAT_TEST_BIN").expect("COMPAT_TEST_BIN (set by scripts/operator-e2e.sh)");
    let out = tokio::process::Command::new(&compat)
        .args([
            "-test.run",
            "^TestConfiguredClient$",
            "-test.v",
            "-test.count=1",
            "-test.timeout=120s",
        ])
        .env("RTCD_URL", format!("http://{addr}"))
        .env("COMPAT_LABEL", "rtcd-rs")
        .env("COMPAT_CLIENT_ID", &client_id)
        .env("COMPAT_AUTH_KEY", &auth_key)
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("--- PASS: TestConfiguredClient"),
        "rtcd's service.Client as the plugin's client:\n{text}"
    );

    delete_cluster(&crs, "calls").await;
    assert!(
        secrets.get_opt("calls-plugin-client").await.unwrap().is_some(),
        "the generated client Secret was deleted with the RtcdCluster"
    );
    delete_nodes(&c, group).await;
}

/// Sets node `name`'s Ready condition, as changed `secs_ago` seconds ago.
async fn set_node_ready(c: &Client, name: &str, ready: bool, secs_ago: i64) {
    let at = (k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_secs(secs_ago))
        .to_string();
    let (status, reason) = if ready {
        ("True", "KubeletReady")
    } else {
        ("Unknown", "NodeStatusUnknown")
    };
    let patch = json!({"status": {"conditions": [{"type": "Ready", "status": status, "reason": reason,
        "message": "envtest", "lastTransitionTime": at, "lastHeartbeatTime": at}]}});
    Api::<Node>::all(c.clone())
        .patch_status(name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
}

/// A call held on the rtcd at `ip` by rtcd's Go client and two pion peers (the compat suite's
/// `TestHeldCall`) until [`HeldCall::end`] or drop.
struct HeldCall {
    child: tokio::process::Child,
    stop: PathBuf,
}

impl HeldCall {
    async fn start(ip: &str) -> Self {
        let stop = std::env::temp_dir().join(format!("held-call-{ip}.stop"));
        let _ = std::fs::remove_file(&stop);
        let log = std::env::temp_dir().join(format!("held-call-{ip}.log"));
        let compat =
            std::env::var("COMPAT_TEST_BIN").expect("COMPAT_TEST_BIN (set by scripts/operator-e2e.sh)");
        let child = tokio::process::Command::new(compat)
            .args([
                "-test.run",
                "^TestHeldCall$",
                "-test.v",
                "-test.count=1",
                "-test.timeout=300s",
            ])
            .env("RTCD_URL", format!("http://{ip}:8045"))
            .env("RTCD_ADMIN_KEY", "envtest-admin-key")
            .env("COMPAT_LABEL", "rtcd-rs")
            .env("COMPAT_HOLD_FILE", &stop)
            .env("COMPAT_HOLD_SECONDS", "240")
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let addr = format!("{ip}:8045");
        eventually(
            &format!("a held call on {ip} (log {})", log.display()),
            30,
            || {
                let addr = addr.clone();
                async move {
                    http_get(&addr, "/api/v1/health")
                        .await
                        .filter(|(_, body)| body.contains("\"sessions\":2"))
                }
            },
        )
        .await;
        Self { child, stop }
    }

    /// Ends the call and checks that its media never stopped while it was held.
    async fn end(mut self) {
        std::fs::write(&self.stop, b"").unwrap();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the held call ends")
            .unwrap();
        assert!(
            status.success(),
            "the held call failed (its media stopped?): see held-call-*.log"
        );
    }
}

/// The health body of the rtcd at `ip`.
async fn health_of(ip: &str) -> String {
    http_get(&format!("{ip}:8045"), "/api/v1/health")
        .await
        .map(|r| r.1)
        .unwrap_or_default()
}

/// The pods of `cluster` by node, each with (uid, terminating, drain requested).
async fn pod_marks(c: &Client, ns: &str, cluster: &str) -> BTreeMap<String, (String, bool, bool)> {
    pods_by_node(c, ns, cluster)
        .await
        .into_iter()
        .map(|(n, p)| {
            let drained = p.annotations().contains_key("rtcd-rs.dev/drain-requested-at");
            (
                n,
                (p.uid().unwrap(), p.metadata.deletion_timestamp.is_some(), drained),
            )
        })
        .collect()
}

/// Node trouble (issue: node blips must not drain the fleet), with a real rtcd per node and real
/// calls: a node NotReady for less than the grace changes nothing; 3 of 4 NotReady at once is a
/// partition: condition and Event, and nothing moves; two busy nodes NotReady past the grace are
/// drained through rtcd's API one at a time (the budget), their calls going on, and the drains are
/// cancelled when the nodes return; an unreachable instance on a NotReady node stays until the
/// node is deleted, and then goes at once.
#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn node_trouble_is_handled_like_a_careful_human() {
    let (ns, group) = ("trouble", "trouble");
    let c = client().await;
    create_namespace(&c, ns).await;
    let names = ["trouble-0", "trouble-1", "trouble-2", "trouble-3"];
    let ips = ["198.18.1.51", "198.18.1.52", "198.18.1.53", "198.18.1.54"];
    let mut rtcds: Vec<Option<Proc>> = ips.iter().map(|ip| Some(start_rtcd(ip))).collect();
    for (n, ip) in names.iter().zip(ips) {
        create_node(&c, n, group, ip, None).await;
    }
    let credentials = envtest_credentials(&c, ns).await;
    let (_op, _) = start_operator(ns, "1");
    let crs = create_cluster(
        &c,
        ns,
        "calls",
        group,
        json!({"credentials": credentials,
                   "nodeTrouble": {"notReadyGraceSeconds": 20, "partitionThresholdPercent": 50}}),
    )
    .await;
    ready_pods(&c, ns, "calls", 4).await;
    let marks = pod_marks(&c, ns, "calls").await;
    // Nothing moves: same pods, none terminating, none drained, every rtcd still takes calls.
    let unmoved = |c: Client, want: BTreeMap<String, (String, bool, bool)>, secs: u64| async move {
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            assert_eq!(pod_marks(&c, ns, "calls").await, want, "a pod moved");
            for ip in ips {
                assert!(health_of(ip).await.contains("\"ok\""), "rtcd at {ip} drains");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };

    // 1. One node NotReady, for less than the grace: nothing moves; the status says why.
    set_node_ready(&c, names[0], false, 0).await;
    eventually("NodeNotReady in status", 20, || {
        let c = c.clone();
        async move {
            let cr = get_cr(&c, ns, "calls").await;
            let (_, reason, msg) = condition(&cr, "Degraded")?;
            (reason == "NodeNotReady" && msg.contains("acting after 20s")).then_some(())
        }
    })
    .await;
    unmoved(c.clone(), marks.clone(), 8).await;
    set_node_ready(&c, names[0], true, 0).await;

    // 2. Three of four NotReady together (within the grace, as a partition begins), then past
    //    it: the partition guard holds them all.
    for n in &names[..3] {
        set_node_ready(&c, n, false, 10).await;
    }
    let (_, reason, msg) = eventually("NodesPartitioned", 20, || {
        let c = c.clone();
        async move { condition(&get_cr(&c, ns, "calls").await, "NodesPartitioned").filter(|x| x.0 == "True") }
    })
    .await;
    assert_eq!(reason, "PartitionSuspected");
    assert!(msg.contains("3 of 4"), "{msg}");
    unmoved(c.clone(), marks.clone(), 14).await;
    let ev = events(ns, "REASON:.reason");
    assert!(ev.contains("PartitionSuspected"), "{ev}");
    // They recover one by one; once the guard lifts, the nodes still NotReady get a fresh grace
    // (they are recovering too), so nothing moves meanwhile either.
    for n in &names[..3] {
        set_node_ready(&c, n, true, 0).await;
    }
    unmoved(c.clone(), marks.clone(), 3).await;
    eventually("NodesPartitioned False", 20, || {
        let c = c.clone();
        async move { condition(&get_cr(&c, ns, "calls").await, "NodesPartitioned").filter(|x| x.0 == "False") }
    })
    .await;

    // 3. Two busy nodes NotReady past the grace (2 of 4: not a partition): drained through
    //    rtcd's API one at a time, their calls going on; back → the drain is cancelled.
    let call1 = HeldCall::start(ips[1]).await;
    let call2 = HeldCall::start(ips[2]).await;
    // While an instance carries calls, autoscalers are told to leave its node alone.
    let eviction_marks = |c: Client| async move {
        pods_by_node(&c, ns, "calls")
            .await
            .into_iter()
            .filter(|(_, p)| {
                p.annotations()
                    .get("cluster-autoscaler.kubernetes.io/safe-to-evict")
                    .map(String::as_str)
                    == Some("false")
                    && p.annotations()
                        .get("karpenter.sh/do-not-disrupt")
                        .map(String::as_str)
                        == Some("true")
            })
            .map(|(n, _)| n)
            .collect::<Vec<_>>()
    };
    eventually("eviction annotations on the busy pods", 45, || {
        let c = c.clone();
        async move { (eviction_marks(c).await == names[1..3]).then_some(()) }
    })
    .await;
    for n in &names[1..3] {
        set_node_ready(&c, n, false, 600).await;
    }
    // (The guard lifted moments ago: they get their fresh grace first.)
    let drained = eventually("one of the two drained", 60, || {
        let c = c.clone();
        async move {
            let m = pod_marks(&c, ns, "calls").await;
            let d: Vec<String> = names[1..3]
                .iter()
                .filter(|n| m[**n].2)
                .map(|n| n.to_string())
                .collect();
            (d.len() == 1).then(|| d[0].clone())
        }
    })
    .await;
    let drained_ip = ips[names.iter().position(|n| *n == drained).unwrap()];
    assert!(
        health_of(drained_ip).await.contains("draining"),
        "{drained} was not drained through its API"
    );
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        let m = pod_marks(&c, ns, "calls").await;
        let busy = names[1..3]
            .iter()
            .filter(|n| m.get(**n).is_some_and(|x| x.1 || x.2))
            .count();
        assert_eq!(busy, 1, "more nodes disrupted than maxUnavailable (1): {m:?}");
        assert!(
            !m[drained.as_str()].1,
            "a drained pod with live calls was deleted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cr = get_cr(&c, ns, "calls").await;
    let (_, _, progressing) = condition(&cr, "Progressing").unwrap();
    assert!(progressing.contains("disruption budget"), "{progressing}");
    for n in &names[1..3] {
        set_node_ready(&c, n, true, 0).await;
    }
    eventually("the drain cancelled", 30, || {
        let c = c.clone();
        async move {
            let m = pod_marks(&c, ns, "calls").await;
            let ok = health_of(drained_ip).await.contains("\"ok\"");
            (ok && names.iter().all(|n| m.get(*n).is_some_and(|x| !x.1 && !x.2))).then_some(())
        }
    })
    .await;
    assert_eq!(pod_marks(&c, ns, "calls").await, marks, "no pod was replaced");
    let ev = events(ns, "REASON:.reason");
    assert!(
        ev.contains("InstanceDraining") && ev.contains("DrainCancelled"),
        "{ev}"
    );
    call1.end().await;
    call2.end().await;
    eventually("eviction annotations gone once idle", 45, || {
        let c = c.clone();
        async move { eviction_marks(c).await.is_empty().then_some(()) }
    })
    .await;

    // 4. An rtcd that does not answer on a NotReady node: its pod stays (no kubelet would drain
    //    it) until the Node is deleted, then goes at once.
    rtcds[3].take();
    set_node_ready(&c, names[3], false, 600).await;
    let (_, _, msg) = eventually("waiting for the node", 30, || {
        let c = c.clone();
        async move {
            condition(&get_cr(&c, ns, "calls").await, "Progressing")
                .filter(|x| x.2.contains("waits for the node to return or be deleted"))
        }
    })
    .await;
    assert!(msg.contains(names[3]), "{msg}");
    let m = pod_marks(&c, ns, "calls").await;
    assert!(!m[names[3]].1, "deleted while its node may come back");
    Api::<Node>::all(c.clone())
        .delete(names[3], &DeleteParams::default())
        .await
        .unwrap();
    eventually("the pod of the deleted node gone", 30, || {
        let c = c.clone();
        async move { (!pods_by_node(&c, ns, "calls").await.contains_key(names[3])).then_some(()) }
    })
    .await;

    delete_cluster(&crs, "calls").await;
    delete_nodes(&c, group).await;
}

/// A TCP relay to the API server that can be frozen: it then forwards nothing more, in either
/// direction, and keeps every connection open (a hung API server, as the client sees it).
struct FreezableRelay {
    port: u16,
    frozen: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl FreezableRelay {
    async fn start(upstream: String) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let frozen = std::sync::Arc::new(AtomicBool::new(false));
        let f = frozen.clone();
        tokio::spawn(async move {
            while let Ok((down, _)) = listener.accept().await {
                let f = f.clone();
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(up) = tokio::net::TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let (dr, dw) = down.into_split();
                    let (ur, uw) = up.into_split();
                    async fn pump(
                        mut r: tokio::net::tcp::OwnedReadHalf,
                        mut w: tokio::net::tcp::OwnedWriteHalf,
                        f: std::sync::Arc<AtomicBool>,
                    ) {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buf = vec![0u8; 16384];
                        loop {
                            let Ok(n) = r.read(&mut buf).await else { return };
                            while f.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            if n == 0 || w.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    }
                    tokio::join!(pump(dr, uw, f.clone()), pump(ur, dw, f));
                });
            }
        });
        Self { port, frozen }
    }

    fn freeze(&self) {
        self.frozen.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The operators' Lease's holder, renew time and duration.
async fn lease_of(c: &Client) -> Option<(String, k8s_openapi::jiff::Timestamp, i64)> {
    let l = Api::<k8s_openapi::api::coordination::v1::Lease>::namespaced(c.clone(), LEASE.0)
        .get_opt(LEASE.1)
        .await
        .ok()??;
    let s = l.spec?;
    Some((
        s.holder_identity?,
        s.renew_time?.0,
        i64::from(s.lease_duration_seconds?),
    ))
}

/// Leader election: the leader's API server hangs (its connection frozen, every request
/// unanswered); it must stop leading before its lease can expire, and a standby then takes over
/// and reconciles.
#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn a_hung_renewal_gives_up_leadership_before_the_lease_expires() {
    let ns = "leader";
    let c = client().await;
    create_namespace(&c, ns).await;
    // The leader talks to the API server through a relay the test can freeze.
    let kubeconfig = std::env::var("OPERATOR_KUBECONFIG").unwrap();
    let server = kubectl(&[
        "--kubeconfig",
        &kubeconfig,
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ])
    .unwrap();
    let upstream = server.trim().trim_start_matches("https://").to_string();
    let relay = FreezableRelay::start(upstream).await;
    let relayed = std::env::temp_dir().join("operator-leader-relayed.kubeconfig");
    std::fs::copy(&kubeconfig, &relayed).unwrap();
    let relayed = relayed.display().to_string();
    let cluster_name = kubectl(&[
        "--kubeconfig",
        &relayed,
        "config",
        "view",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].name}",
    ])
    .unwrap();
    kubectl(&[
        "--kubeconfig",
        &relayed,
        "config",
        "set-cluster",
        cluster_name.trim(),
        &format!("--server=https://127.0.0.1:{}", relay.port),
    ])
    .unwrap();

    let (mut a, _) = start_operator_with(ns, "a", Some(relayed), LEASE);
    eventually("operator-a leads", 30, || {
        let c = c.clone();
        async move { lease_of(&c).await.filter(|l| l.0 == "operator-a") }
    })
    .await;
    // Let it renew a few times, then hang its API server.
    tokio::time::sleep(Duration::from_secs(3)).await;
    relay.freeze();
    let frozen_at = k8s_openapi::jiff::Timestamp::now();
    let deadline = Instant::now() + Duration::from_secs(15);
    let exited_at = loop {
        if a.child.try_wait().unwrap().is_some() {
            break k8s_openapi::jiff::Timestamp::now();
        }
        assert!(
            Instant::now() < deadline,
            "operator-a still runs 15 s after its API server hung"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (holder, renewed, secs) = lease_of(&c).await.unwrap();
    assert_eq!(holder, "operator-a", "nobody else may hold the lease yet");
    let expires = renewed + k8s_openapi::jiff::SignedDuration::from_secs(secs);
    assert!(
        exited_at < expires,
        "operator-a stopped at {exited_at}, after its lease expired at {expires} (renewed {renewed}, frozen {frozen_at})"
    );
    println!(
        "operator-a stopped {} ms after its API server hung, {} ms before its lease expired",
        exited_at.duration_since(frozen_at).as_millis(),
        expires.duration_since(exited_at).as_millis()
    );
    let log = std::fs::read_to_string(&a.log).unwrap_or_default();
    assert!(log.contains("lost the leader lease"), "{log}");

    // A standby takes over once the lease has expired, and reconciles.
    let (_b, _) = start_operator(ns, "b");
    let (_, taken, _) = eventually("operator-b leads", 30, || {
        let c = c.clone();
        async move { lease_of(&c).await.filter(|l| l.0 == "operator-b") }
    })
    .await;
    assert!(
        taken >= expires,
        "operator-b took the lease at {taken}, before it expired at {expires}"
    );
    let crs: Api<RtcdCluster> = Api::namespaced(c.clone(), ns);
    crs.create(
        &PostParams::default(),
        &cluster("calls", "leader-none", json!({})),
    )
    .await
    .unwrap();
    eventually("operator-b reconciles", 30, || {
        let c = c.clone();
        async move { condition(&get_cr(&c, ns, "calls").await, "Ready").filter(|r| r.1 == "NoEligibleNodes") }
    })
    .await;
    crs.delete("calls", &DeleteParams::default()).await.unwrap();
}

/// Least privilege: an operator installed with `operator.watchNamespace` runs with exactly the
/// chart's namespace-scoped RBAC (a Role in the watched namespace, Nodes read cluster-wide, its
/// own Lease in its own namespace): it reconciles a cluster there end to end (generated Secrets,
/// pod, status, Events), and its token can read no Secret, pod or Lease anywhere else.
#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn a_namespace_scoped_operator_runs_with_the_charts_role() {
    let (ns, group, node, ip) = ("scoped", "scoped", "scoped-0", "198.18.1.61");
    let scoped =
        std::env::var("SCOPED_KUBECONFIG").expect("SCOPED_KUBECONFIG (set by scripts/operator-e2e.sh)");
    let c = client().await;
    let _rtcd = start_rtcd(ip);
    create_node(&c, node, group, ip, Some("203.0.113.61")).await;
    let (_op, _) = start_operator_with(ns, "1", Some(scoped.clone()), ("rtcd-scoped", "scoped-operator"));
    let crs = create_cluster(&c, ns, "calls", group, generated_plugin_client()).await;
    cluster_ready(&c, ns, "calls", "1/1").await;
    let secrets: Api<Secret> = Api::namespaced(c.clone(), ns);
    for name in ["calls-credentials", "calls-plugin-client"] {
        assert!(
            secrets.get_opt(name).await.unwrap().is_some(),
            "{name} not generated"
        );
    }
    let ev = events(ns, "REASON:.reason");
    assert!(ev.contains("PodCreated"), "{ev}");
    let can = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", scoped.as_str(), "auth", "can-i"];
        all.extend_from_slice(args);
        // The answer is the first line; a warning may follow.
        kubectl(&all)
            .unwrap_or_default()
            .lines()
            .next()
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    for (args, want) in [
        (&["get", "secrets", "-n", "scoped"][..], "yes"),
        (&["get", "secrets", "-n", "default"], "no"),
        (&["get", "secrets", "-n", "rtcd-scoped"], "no"),
        (&["list", "pods", "--all-namespaces"], "no"),
        (&["create", "pods", "-n", "default"], "no"),
        (&["list", "nodes"], "yes"),
        (&["patch", "nodes"], "no"),
        (&["update", "leases/scoped-operator", "-n", "rtcd-scoped"], "yes"),
        (&["update", "leases/other", "-n", "rtcd-scoped"], "no"),
        (&["create", "leases", "-n", "scoped"], "no"),
    ] {
        assert_eq!(can(args), want, "can-i {args:?}");
    }
    delete_cluster(&crs, "calls").await;
    delete_nodes(&c, group).await;
}

/// The operator's requests in the API server's audit log (e2e/envtest/up.sh records every
/// ServiceAccount request) received in `[from, to)`, leases left out: (verb, resource) → count.
fn audited_requests(
    from: k8s_openapi::jiff::Timestamp,
    to: k8s_openapi::jiff::Timestamp,
) -> BTreeMap<(String, String), usize> {
    let run = std::env::var("ENVTEST_RUN").expect("ENVTEST_RUN (set by e2e/envtest/up.sh's env)");
    let log = std::fs::read_to_string(PathBuf::from(run).join("audit.log")).unwrap();
    let mut counts = BTreeMap::new();
    for line in log.lines() {
        let Ok(e) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if e["stage"] != "ResponseComplete"
            || e["user"]["username"] != "system:serviceaccount:rtcd-system:rtcd-operator"
        {
            continue;
        }
        let Some(at) = e["requestReceivedTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<k8s_openapi::jiff::Timestamp>().ok())
        else {
            continue;
        };
        let resource = e["objectRef"]["resource"].as_str().unwrap_or("").to_string();
        if at < from || at >= to || resource == "leases" {
            continue;
        }
        let verb = e["verb"].as_str().unwrap_or("").to_string();
        *counts.entry((verb, resource)).or_insert(0) += 1;
    }
    counts
}

/// A steady cluster costs the API server nothing: over 60 s after it settled, the operator
/// (reconciling from watch caches, applying only changed children, writing status only on a
/// meaningful change, polling rtcd's health in the background) makes no write at all, by the API
/// server's own audit log (its leader Lease aside), and at most a handful of reads.
#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn a_steady_cluster_makes_no_writes_and_few_reads() {
    let (ns, group) = ("steady", "steady");
    let c = client().await;
    create_namespace(&c, ns).await;
    let ips = ["198.18.1.71", "198.18.1.72"];
    let _rtcds: Vec<Proc> = ips.iter().map(|ip| start_rtcd(ip)).collect();
    for (i, ip) in ips.iter().enumerate() {
        create_node(&c, &format!("steady-{i}"), group, ip, None).await;
    }
    // The instances' admin key, so the connectivity canary's calls go through (every 60 s).
    let credentials = envtest_credentials(&c, ns).await;
    let (op, admin_port) = start_operator(ns, "1");
    let mut spec = generated_plugin_client();
    merge(&mut spec, json!({ "credentials": credentials }));
    let crs = create_cluster(&c, ns, "calls", group, spec).await;
    cluster_ready(&c, ns, "calls", "2/2").await;
    eventually("nothing in progress", 60, || {
        let c = c.clone();
        async move { condition(&get_cr(&c, ns, "calls").await, "Progressing").filter(|x| x.0 == "False") }
    })
    .await;
    // Let the last health answers and their effects settle.
    tokio::time::sleep(Duration::from_secs(15)).await;
    let probes = || async {
        let (_, m) = http_get(&format!("127.0.0.1:{admin_port}"), "/metrics")
            .await
            .unwrap();
        m.lines()
            .filter(|l| l.starts_with("rtcd_operator_probes_total{") && l.contains("result=\"Reachable\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let probes_before = probes().await;
    let rv = get_cr(&c, ns, "calls").await.resource_version();
    let from = k8s_openapi::jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_secs(62)).await;
    let to = k8s_openapi::jiff::Timestamp::now();
    // The canary called both instances in the window: its answers are not writes either.
    let probes_after = probes().await;
    assert!(
        probes_after >= probes_before + 2.0,
        "the canary did not run in the window: {probes_before} → {probes_after}"
    );
    let counts = audited_requests(from, to);
    println!("the operator's requests over 62 s of a steady cluster (leases aside): {counts:?}");
    let writes: Vec<_> = counts
        .iter()
        .filter(|((verb, _), _)| !matches!(verb.as_str(), "get" | "list" | "watch"))
        .collect();
    assert!(
        writes.is_empty(),
        "writes in steady state: {writes:?}\n{}",
        op.log()
    );
    let reads: usize = counts
        .iter()
        .filter(|((verb, _), _)| matches!(verb.as_str(), "get" | "list"))
        .map(|(_, n)| n)
        .sum();
    assert!(
        reads <= 12,
        "{reads} reads in 62 s of a steady cluster: {counts:?}"
    );
    assert_eq!(
        get_cr(&c, ns, "calls").await.resource_version(),
        rv,
        "the status was rewritten"
    );
    // The audit log does see the operator: the same window while it works has its requests.
    let busy_from = k8s_openapi::jiff::Timestamp::now();
    delete_cluster(&crs, "calls").await;
    let busy = audited_requests(busy_from, k8s_openapi::jiff::Timestamp::now());
    assert!(
        busy.keys().any(|(verb, _)| verb == "delete" || verb == "patch"),
        "{busy:?}"
    );
    delete_nodes(&c, group).await;
}

/// An nftables table of the test's network namespace dropping UDP to `ip:port`, removed on drop.
struct UdpBlock(&'static str);

impl UdpBlock {
    fn new(table: &'static str, ip: &str, port: u16) -> Self {
        let rules = format!(
            "table inet {table} {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  ip daddr {ip} udp dport {port} drop\n }}\n}}\n"
        );
        let mut child = Command::new("nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (nftables) runs");
        use std::io::Write as _;
        child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft refused {rules}");
        Self(table)
    }
}

impl Drop for UdpBlock {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", self.0])
            .status();
    }
}

/// `status.nodes[node].probe` as (result, consecutive failures, message, transports as
/// `transport reachable candidate`).
fn probe_of(cr: &RtcdCluster, node: &str) -> Option<(String, u32, String, Vec<String>)> {
    let n = cr.status.as_ref()?.nodes.iter().find(|n| n.node == node)?;
    let p = n.probe.as_ref()?;
    Some((
        p.result.clone(),
        p.consecutive_failures,
        p.message.clone().unwrap_or_default(),
        p.transports
            .iter()
            .map(|t| {
                format!(
                    "{} {} {}",
                    t.transport,
                    t.reachable,
                    t.candidate.as_deref().unwrap_or("-")
                )
            })
            .collect(),
    ))
}

/// The value of the metric line starting with `prefix` (name and labels as printed).
fn metric(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
#[ignore = "needs envtest (scripts/operator-e2e.sh)"]
async fn the_canary_probes_every_instance_and_reports_a_udp_block() {
    let (ns, group) = ("canary", "canary");
    let c = client().await;
    create_namespace(&c, ns).await;
    let names = ["canary-0", "canary-1"];
    let ips = ["198.18.1.81", "198.18.1.82"];
    let _rtcds: Vec<Proc> = ips.iter().map(|ip| start_rtcd(ip)).collect();
    for (n, ip) in names.iter().zip(ips) {
        create_node(&c, n, group, ip, None).await;
    }
    // The canary registers its client with the admin key the instances hold.
    let credentials = envtest_credentials(&c, ns).await;
    let (op, admin_port) = start_operator(ns, "1");
    let crs = create_cluster(
        &c,
        ns,
        "calls",
        group,
        json!({"credentials": credentials,
               "probe": {"intervalSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 2}}),
    )
    .await;
    cluster_ready(&c, ns, "calls", "2/2").await;

    // 1. Both instances answer over UDP and ICE-TCP, through the address each advertises.
    let both_ok = |c: Client| async move {
        let cr = get_cr(&c, ns, "calls").await;
        let all = names
            .iter()
            .zip(ips)
            .map(|(n, ip)| {
                let p = probe_of(&cr, n)?;
                (p.0 == "Reachable"
                    && p.3
                        == vec![
                            format!("udp true udp {ip}:8443"),
                            format!("tcp true tcp {ip}:8443"),
                        ])
                .then_some(())
            })
            .all(|x| x.is_some());
        (all && condition(&cr, "ProbeFailed").is_some_and(|x| x.0 == "False")).then_some(cr)
    };
    let cr = eventually("both instances Reachable over udp and tcp", 60, || {
        both_ok(c.clone())
    })
    .await;
    let node0 = cr
        .status
        .as_ref()
        .unwrap()
        .nodes
        .iter()
        .find(|n| n.node == names[0])
        .unwrap();
    let p0 = node0.probe.as_ref().unwrap();
    assert!(
        p0.transports
            .iter()
            .all(|t| t.rtt_ms.is_some() && t.connect_ms.is_some()),
        "round trip and connect time reported: {p0:?}"
    );
    assert!(!p0.last_probe_time.is_empty());
    let (_, m) = http_get(&format!("127.0.0.1:{admin_port}"), "/metrics")
        .await
        .unwrap();
    let label = |node: &str, t: &str| {
        format!(
            "rtcd_operator_probe_success{{namespace=\"{ns}\",cluster=\"calls\",node=\"{node}\",transport=\"{t}\"}}"
        )
    };
    for n in names {
        for t in ["udp", "tcp"] {
            assert_eq!(metric(&m, &label(n, t)), Some(1.0), "{}\n{m}", label(n, t));
        }
    }
    for series in [
        "rtcd_operator_probe_rtt_seconds",
        "rtcd_operator_probe_connect_seconds",
    ] {
        let v = metric(
            &m,
            &format!("{series}{{namespace=\"{ns}\",cluster=\"calls\",node=\"canary-0\",transport=\"udp\"}}"),
        );
        // A loopback round trip may round to 0 (status keeps 0.1 ms); never negative, never
        // beyond the connect timeout.
        assert!(v.is_some_and(|v| (0.0..3.0).contains(&v)), "{series}: {v:?}\n{m}");
    }

    // 2. UDP to canary-0's media port dropped: after two probes in a row, ProbeFailed names the
    //    node and the transport; ICE-TCP still works there, and canary-1 is untouched.
    let block = UdpBlock::new("canarytest", ips[0], 8443);
    let cr = eventually("ProbeFailed naming canary-0", 90, || {
        let c = c.clone();
        async move {
            let cr = get_cr(&c, ns, "calls").await;
            condition(&cr, "ProbeFailed")
                .is_some_and(|x| x.0 == "True")
                .then_some(cr)
        }
    })
    .await;
    let (_, reason, message) = condition(&cr, "ProbeFailed").unwrap();
    assert_eq!(reason, "MediaUnreachable");
    assert!(
        message.starts_with("canary-0: udp to 198.18.1.81 unreachable: ICE/DTLS did not complete within 3 s"),
        "{message}"
    );
    assert!(!message.contains("canary-1"), "{message}");
    let (result, failures, _, transports) = probe_of(&cr, names[0]).unwrap();
    assert_eq!(result, "Unreachable");
    assert!(failures >= 2, "{failures}");
    assert_eq!(
        transports,
        vec!["udp false -".to_string(), format!("tcp true tcp {}:8443", ips[0])]
    );
    assert_eq!(probe_of(&cr, names[1]).unwrap().0, "Reachable");
    // The instance itself is healthy: the canary reports, it does not take it out of service.
    assert_eq!(cr.status.as_ref().unwrap().ready_nodes.as_deref(), Some("2/2"));
    let (_, m) = http_get(&format!("127.0.0.1:{admin_port}"), "/metrics")
        .await
        .unwrap();
    assert_eq!(metric(&m, &label(names[0], "udp")), Some(0.0), "{m}");
    assert_eq!(metric(&m, &label(names[0], "tcp")), Some(1.0), "{m}");
    assert_eq!(
        metric(
            &m,
            &format!("rtcd_operator_probe_failing{{namespace=\"{ns}\",cluster=\"calls\",node=\"canary-0\"}}")
        ),
        Some(1.0),
        "{m}"
    );
    let until = Instant::now() + Duration::from_secs(20);
    let ev = loop {
        let ev = events(ns, "TYPE:.type,REASON:.reason,MESSAGE:.message");
        let found = ev
            .lines()
            .any(|l| l.contains("Warning") && l.contains("ProbeFailed") && l.contains("node canary-0: udp"));
        if found {
            break ev;
        }
        assert!(Instant::now() < until, "no ProbeFailed Event for canary-0:\n{ev}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!ev.contains("node canary-1"), "{ev}");

    // 3. UDP back: the condition clears and a Normal Event says so.
    drop(block);
    let cr = eventually("ProbeFailed False again", 60, || both_ok(c.clone())).await;
    assert_eq!(
        condition(&cr, "ProbeFailed").unwrap().1,
        "AsExpected",
        "{:?}",
        cr.status
    );
    eventually("the ProbeSucceeded Event", 20, || async {
        events(ns, "TYPE:.type,REASON:.reason,MESSAGE:.message")
            .lines()
            .any(|l| l.contains("Normal") && l.contains("ProbeSucceeded") && l.contains("node canary-0"))
            .then_some(())
    })
    .await;

    // 4. Disabled: no more probes, the condition says so and the series go.
    crs.patch(
        "calls",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"probe": {"enabled": false}}})),
    )
    .await
    .unwrap();
    eventually("ProbeFailed says disabled", 30, || {
        let c = c.clone();
        async move {
            let cr = get_cr(&c, ns, "calls").await;
            (condition(&cr, "ProbeFailed").is_some_and(|x| x.1 == "ProbeDisabled")
                && cr.status.as_ref()?.nodes.iter().all(|n| n.probe.is_none()))
            .then_some(())
        }
    })
    .await;
    let (_, m) = http_get(&format!("127.0.0.1:{admin_port}"), "/metrics")
        .await
        .unwrap();
    assert!(!m.contains("rtcd_operator_probe_success{"), "{m}");
    assert!(!op.log().contains("panicked"), "{}", op.log());
    delete_cluster(&crs, "calls").await;
    delete_nodes(&c, group).await;
}
