//! The end-to-end suite for any cluster, driven only by `KUBECONFIG` (plus optional `E2E_*`):
//! install through the Helm chart, wait for the RtcdCluster to be Ready, reach rtcd's health on
//! its node, register and log in, open the WebSocket and join a call, scale by labelling nodes,
//! and uninstall cleanly. The test runner must reach node IPs on the API port (kind on Linux,
//! or scripts/cluster-e2e.sh's namespace).
//!
//! Env: KUBECONFIG; E2E_HELM (helm); E2E_CHART (charts/mattermost-rtcd); E2E_NAMESPACE
//! (rtcd-e2e); E2E_SET (extra `helm --set`, comma-separated); E2E_NODE_LABEL (nodes with this
//! label = "true" form the pool; default: every schedulable Ready node).
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

use std::{
    path::PathBuf,
    process::Command,
    time::{Duration, Instant},
};

use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod, Secret, Service};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};
use rtcd::protocol::ws::{ClientMessage, Join};
use rtcd_operator::crd::RtcdCluster;
use serde_json::json;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const RELEASE: &str = "rtcd-e2e";
const CLUSTER: &str = "e2e";
const MEMBER: &str = "rtcd-rs.dev/e2e-member";

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn helm(args: &[&str]) -> String {
    let bin = env_or("E2E_HELM", "helm");
    let out = Command::new(&bin)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "helm {args:?} failed:\n{text}");
    text
}

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
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// (status code, body) of one HTTP/1.1 request.
async fn http(addr: &str, method: &str, path: &str, auth: Option<&str>, body: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
        .ok()?;
    let auth = auth
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    // Chunked bodies: keep the JSON between the first '{' / '[' and the last '}' / ']'.
    let body = match (body.find(['{', '[']), body.rfind(['}', ']'])) {
        (Some(a), Some(b)) if b >= a => body[a..=b].to_string(),
        _ => body,
    };
    Some((code, body))
}

fn basic(id: &str, key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"))
    )
}

fn schedulable_ready(n: &Node) -> bool {
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    let spec = n.spec.clone().unwrap_or_default();
    let tainted = spec
        .taints
        .unwrap_or_default()
        .iter()
        .any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute");
    ready && !spec.unschedulable.unwrap_or(false) && !tainted
}

async fn set_member(nodes: &Api<Node>, name: &str, on: bool) {
    let value = if on {
        json!("true")
    } else {
        serde_json::Value::Null
    };
    let patch = json!({"metadata": {"labels": {MEMBER: value}}});
    nodes
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

async fn cluster_status(crs: &Api<RtcdCluster>) -> Option<(String, String)> {
    let cr = crs.get_opt(CLUSTER).await.ok()??;
    let st = cr.status?;
    let ready = st.conditions.iter().find(|c| c.type_ == "Ready")?.status.clone();
    Some((ready, st.ready_nodes.unwrap_or_default()))
}

async fn wait_ready_nodes(crs: &Api<RtcdCluster>, want: &str, secs: u64) {
    eventually(&format!("RtcdCluster Ready with {want} nodes"), secs, || async {
        (cluster_status(crs).await == Some(("True".into(), want.into()))).then_some(())
    })
    .await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The next rtcd message on the plugin's WebSocket, within 10 s.
async fn next(ws: &mut Ws) -> Result<ClientMessage, tokio::time::error::Elapsed> {
    let fut = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Binary(b))) => return ClientMessage::decode(&b).expect("msgpack"),
                Some(Ok(_)) => continue,
                other => panic!("WebSocket ended: {other:?}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await
}

#[tokio::test]
#[ignore = "needs a cluster: KUBECONFIG (see e2e/kind/README.md, scripts/cluster-e2e.sh)"]
async fn install_call_scale_uninstall() {
    let client = Client::try_default().await.expect("KUBECONFIG");
    let ns = env_or("E2E_NAMESPACE", "rtcd-e2e");
    let chart = std::env::var("E2E_CHART")
        .map(PathBuf::from)
        .unwrap_or_else(|_| repo().join("charts/mattermost-rtcd"));
    let nodes: Api<Node> = Api::all(client.clone());

    // The pool: labelled nodes, else every schedulable Ready node.
    let all = nodes.list(&ListParams::default()).await.unwrap().items;
    let pool: Vec<String> = match std::env::var("E2E_NODE_LABEL").ok().filter(|l| !l.is_empty()) {
        Some(label) => all
            .iter()
            .filter(|n| n.labels().get(&label).map(String::as_str) == Some("true"))
            .map(ResourceExt::name_any)
            .collect(),
        None => all
            .iter()
            .filter(|n| schedulable_ready(n))
            .map(ResourceExt::name_any)
            .collect(),
    };
    assert!(!pool.is_empty(), "no node in the pool");
    println!("e2e: node pool {pool:?}");
    for n in &pool {
        set_member(&nodes, n, false).await;
    }
    set_member(&nodes, &pool[0], true).await;

    // Install through the chart.
    let mut args = vec![
        "upgrade".to_string(),
        "--install".into(),
        RELEASE.into(),
        chart.display().to_string(),
        "--namespace".into(),
        ns.clone(),
        "--create-namespace".into(),
        "--set".into(),
        format!("rtcdCluster.name={CLUSTER}"),
        "--set".into(),
        "rtcdCluster.spec.nodeSelector.rtcd-rs\\.dev/e2e-member=true".into(),
        "--set".into(),
        "rtcdCluster.spec.config.allowSelfRegistration=true".into(),
    ];
    if let Ok(extra) = std::env::var("E2E_SET")
        && !extra.is_empty()
    {
        args.extend(["--set".to_string(), extra]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let t0 = Instant::now();
    println!("e2e: {}", helm(&args).lines().next().unwrap_or_default());
    let crs: Api<RtcdCluster> = Api::namespaced(client.clone(), &ns);
    wait_ready_nodes(&crs, "1/1", 300).await;
    println!(
        "e2e: Ready 1/1 {:.1}s after helm install",
        t0.elapsed().as_secs_f64()
    );

    // rtcd's health on its node (hostNetwork: pod IP = node IP).
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let sel = ListParams::default().labels(&format!("rtcd-rs.dev/cluster={CLUSTER}"));
    let pod = pods
        .list(&sel)
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .expect("an rtcd pod");
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("pod IP");
    let cr = crs.get(CLUSTER).await.unwrap();
    let api = format!("{ip}:{}", cr.spec.config.api_port);
    let (code, body) = http(&api, "GET", "/api/v1/health", None, "")
        .await
        .expect("health answers");
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body).unwrap()["status"],
        "ok"
    );

    // Register (with the admin key from the cluster's Secret) and log in, as the plugin does.
    let (secret_name, key_name) = match &cr.spec.credentials {
        Some(c) => (c.name.clone(), c.key.clone()),
        None => (
            cr.status
                .as_ref()
                .and_then(|s| s.credentials_secret.clone())
                .expect("credentials Secret"),
            "adminSecretKey".into(),
        ),
    };
    let secret = Api::<Secret>::namespaced(client.clone(), &ns)
        .get(&secret_name)
        .await
        .unwrap();
    let admin_key = String::from_utf8(secret.data.unwrap()[&key_name].0.clone()).unwrap();
    let (id, key) = ("e2eplugin", "e2e-client-key-0123456789abcdefghij");
    let creds = json!({"clientID": id, "authKey": key}).to_string();
    let (code, body) = http(&api, "POST", "/register", Some(&basic("", &admin_key)), &creds)
        .await
        .expect("register");
    assert!(
        code == 201 || code == 403 && body.contains("already"),
        "register: {code} {body}"
    );
    let (code, body) = http(&api, "POST", "/login", None, &creds).await.expect("login");
    assert_eq!(code, 200, "{body}");
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["bearerToken"]
        .as_str()
        .unwrap()
        .to_string();

    // The plugin's WebSocket: hello, join, the session is listed, leave closes it.
    let mut req = format!("ws://{api}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("Authorization", basic(id, key).parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(req).await.expect("WebSocket");
    assert!(matches!(
        next(&mut ws).await.expect("hello"),
        ClientMessage::Hello { .. }
    ));
    let join = ClientMessage::Join(Join {
        call_id: "e2ecall".into(),
        user_id: "user".into(),
        session_id: "e2esession".into(),
        channel_id: "channel".into(),
        av1_support: false,
        dc_signaling: false,
    });
    ws.send(Message::Binary(join.encode().into())).await.unwrap();
    let listed = eventually("the session in GET /calls/e2ecall/sessions", 20, || {
        let (api, token) = (api.clone(), token.clone());
        async move {
            let (code, body) = http(
                &api,
                "GET",
                "/calls/e2ecall/sessions",
                Some(&format!("Bearer {token}")),
                "",
            )
            .await?;
            (code == 200 && body.contains("e2esession")).then_some(body)
        }
    })
    .await;
    println!("e2e: joined: {listed}");
    let leave = ClientMessage::Leave {
        session_id: "e2esession".into(),
    };
    ws.send(Message::Binary(leave.encode().into())).await.unwrap();
    match next(&mut ws).await.expect("close") {
        ClientMessage::Close { session_id } => assert_eq!(session_id, "e2esession"),
        other => panic!("expected close, got {other:?}"),
    }

    // Scale: another node joins the pool, then leaves it.
    if pool.len() >= 2 {
        set_member(&nodes, &pool[1], true).await;
        wait_ready_nodes(&crs, "2/2", 300).await;
        println!("e2e: scaled to 2/2");
        set_member(&nodes, &pool[1], false).await;
        eventually("back to 1 pod", 300, || {
            let pods = pods.clone();
            let sel = sel.clone();
            async move { (pods.list(&sel).await.ok()?.items.len() == 1).then_some(()) }
        })
        .await;
        wait_ready_nodes(&crs, "1/1", 120).await;
        println!("e2e: scaled back to 1/1");
    } else {
        println!("e2e: one node in the pool: scaling not exercised");
    }

    // Uninstall: the RtcdCluster, its pods and Services go.
    println!(
        "e2e: {}",
        helm(&[
            "uninstall",
            RELEASE,
            "--namespace",
            &ns,
            "--wait",
            "--timeout",
            "5m"
        ])
        .trim()
    );
    let svcs: Api<Service> = Api::namespaced(client.clone(), &ns);
    eventually("everything gone", 300, || {
        let (crs, pods, svcs, sel) = (crs.clone(), pods.clone(), svcs.clone(), sel.clone());
        async move {
            let cr_gone = crs.get_opt(CLUSTER).await.ok()?.is_none();
            let pods_gone = pods.list(&sel).await.ok()?.items.is_empty();
            let svcs_gone = svcs.list(&sel).await.ok()?.items.is_empty();
            (cr_gone && pods_gone && svcs_gone).then_some(())
        }
    })
    .await;
    set_member(&nodes, &pool[0], false).await;
    println!("e2e: uninstalled cleanly");
}
