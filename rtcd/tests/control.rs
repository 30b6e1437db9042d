//! The control plane of the real binary over real sockets: registration, login, unregister,
//! rate limiting, the WebSocket (hello, Origin, frame limit, keepalive), the sessions API,
//! metrics, the drain with a live session, and the engine's shards (placement, heartbeat).
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

mod common;

use std::{net::SocketAddr, time::Duration};

use base64::Engine as _;
use common::{Daemon, Response};
use futures_util::{SinkExt, StreamExt};
use rtcd::protocol::ws::{ClientMessage, Join};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};

const ADMIN: &str = "admin-secret-for-tests-0123456789abcdef";
const KEY: &str = "client-key-0123456789-abcdefghijklmnop";

fn basic(id: &str, key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{id}:{key}"))
    )
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> Response {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    common::parse_response(&raw)
}

fn creds(id: &str, key: &str) -> String {
    serde_json::json!({"clientID": id, "authKey": key}).to_string()
}

async fn admin_daemon(extra: &str) -> Daemon {
    Daemon::start(
        &format!("[api]\nsecurity.enable_admin = true\nsecurity.admin_secret_key = {ADMIN:?}\n{extra}"),
        &[],
    )
    .await
}

async fn ws_connect(
    addr: SocketAddr,
    auth: &str,
    origin: Option<&str>,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut().insert("Authorization", auth.parse().unwrap());
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

async fn next_message<S>(ws: &mut S) -> ClientMessage
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        let m = tokio::time::timeout(Duration::from_secs(20), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Message::Binary(b) = m {
            return ClientMessage::decode(&b).unwrap();
        }
    }
}

/// The next message that is not sessA's signaling (its answer and candidates).
async fn next_non_rtc<S>(ws: &mut S) -> ClientMessage
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match next_message(ws).await {
            ClientMessage::Rtc(_) => continue,
            other => return other,
        }
    }
}

fn join(call: &str, session: &str) -> Message {
    join_as(call, session, "user")
}

fn join_as(call: &str, session: &str, user: &str) -> Message {
    Message::Binary(
        ClientMessage::Join(Join {
            call_id: call.into(),
            user_id: user.into(),
            session_id: session.into(),
            channel_id: "channel".into(),
            av1_support: false,
            dc_signaling: false,
        })
        .encode()
        .into(),
    )
}

fn leave(session: &str) -> Message {
    Message::Binary(
        ClientMessage::Leave {
            session_id: session.into(),
        }
        .encode()
        .into(),
    )
}

#[tokio::test]
async fn registration_login_and_unregister_answer_like_rtcd() {
    let d = admin_daemon("").await;
    let admin = vec![("Authorization", basic("", ADMIN))];

    // Self-registration is off: no credentials → 401; the admin may register.
    let r = request(d.api, "POST", "/register", &[], &creds("c1", KEY)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["code"], "401");
    let r = request(d.api, "POST", "/register", &admin, &creds("c1", KEY)).await;
    assert_eq!(
        (r.status, r.json()),
        (201, serde_json::json!({"clientID": "c1", "code": "201"}))
    );

    for (body, why) in [
        (creds("c1", KEY), "already registered"),
        (creds("c2", "short"), "key not long enough"),
        (creds("", KEY), "invalid client id"),
    ] {
        let r = request(d.api, "POST", "/register", &admin, &body).await;
        assert_eq!(r.status, 400, "{why}");
        assert_eq!(r.json()["code"], "400");
        assert!(r.json()["error"].as_str().unwrap().contains(why), "{}", r.body);
    }
    let r = request(d.api, "POST", "/register", &admin, "{not json").await;
    assert_eq!((r.status, r.json()["code"].as_str()), (400, Some("400")));

    // A registered client may not register others here (rtcd allows it; see the issue note).
    let client = vec![("Authorization", basic("c1", KEY))];
    let r = request(d.api, "POST", "/register", &client, &creds("c3", KEY)).await;
    assert_eq!(r.status, 403);

    // Login: a 32-character bearer token, which authenticates the sessions API.
    let r = request(d.api, "POST", "/login", &[], &creds("c1", KEY)).await;
    assert_eq!(r.status, 200);
    let token = r.json()["bearerToken"].as_str().unwrap().to_string();
    assert_eq!(token.len(), 32);
    assert_eq!(r.json()["code"], "200");
    let bearer = vec![("Authorization", format!("Bearer {token}"))];
    let r = request(d.api, "GET", "/calls/nope/sessions", &bearer, "").await;
    assert_eq!(r.status, 404, "authenticated, unknown call");
    let r = request(
        d.api,
        "POST",
        "/login",
        &[],
        &creds("c1", "wrong-key-0123456789-abcdefghijklmno"),
    )
    .await;
    assert_eq!(r.status, 400);

    // Unregister: not someone else's, yes one's own; the token dies with it.
    request(d.api, "POST", "/register", &admin, &creds("c2", KEY)).await;
    let r = request(
        d.api,
        "POST",
        "/unregister",
        &client,
        &serde_json::json!({"clientID": "c2"}).to_string(),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("client id not valid"))
    );
    let r = request(
        d.api,
        "POST",
        "/unregister",
        &client,
        &serde_json::json!({"clientID": ""}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400);
    let r = request(
        d.api,
        "POST",
        "/unregister",
        &client,
        &serde_json::json!({"clientID": "c1"}).to_string(),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, serde_json::json!({"code": "200"})));
    let r = request(d.api, "GET", "/calls/nope/sessions", &bearer, "").await;
    assert_eq!(r.status, 401, "token revoked by unregister");
    let r = request(
        d.api,
        "POST",
        "/unregister",
        &admin,
        &serde_json::json!({"clientID": "c1"}).to_string(),
    )
    .await;
    assert_eq!(r.status, 400, "already gone");
}

#[tokio::test]
async fn unregister_is_forbidden_without_admin_or_self_registration() {
    let d = Daemon::start("", &[]).await;
    let r = request(d.api, "POST", "/unregister", &[], "{}").await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("unregister not enabled"))
    );
}

#[tokio::test]
async fn registrations_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!(
        "[store]\ndata_source = {:?}\n[api]\nsecurity.allow_self_registration = true\n",
        dir.path().display().to_string()
    );
    let d = Daemon::start(&store, &[]).await;
    assert_eq!(
        request(d.api, "POST", "/register", &[], &creds("persisted", KEY))
            .await
            .status,
        201
    );
    drop(d);
    let d = Daemon::start(&store, &[]).await;
    let r = request(d.api, "POST", "/login", &[], &creds("persisted", KEY)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(dir.path().join(rtcd::auth::store::DB_FILE).exists());
}

#[tokio::test]
async fn a_corrupt_store_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(rtcd::auth::store::DB_FILE),
        b"definitely not a database",
    )
    .unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\ndata_source = {:?}\n[api]\nhttp.listen_address = \"127.0.0.1:{}\"\n[logger]\nenable_file = false\n[rtc]\nice_address_udp = \"127.0.0.1\"\nice_port_udp = {}\n",
            dir.path().display().to_string(),
            common::free_port(),
            common::free_ice_port()
        ),
    )
    .unwrap();
    let out = common::command(&cfg, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("store.data_source") && stderr.contains(rtcd::auth::store::DB_FILE),
        "{stderr}"
    );
}

#[tokio::test]
async fn failed_authentication_is_rate_limited_with_retry_after() {
    let d = Daemon::start("[api]\nsecurity.allow_self_registration = true\n", &[]).await;
    request(d.api, "POST", "/register", &[], &creds("victim", KEY)).await;
    let wrong = vec![(
        "Authorization",
        basic("victim", "wrong-key-0123456789-abcdefghijklmnop"),
    )];
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            request(d.api, "GET", "/calls/x/sessions", &wrong, "")
                .await
                .status,
        );
    }
    assert!(statuses[..10].iter().all(|s| *s == 401), "{statuses:?}");
    let r = request(d.api, "GET", "/calls/x/sessions", &wrong, "").await;
    assert_eq!(r.status, 429, "{statuses:?}");
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    // Even the right key waits out the lockout for that client ID.
    let right = vec![("Authorization", basic("victim", KEY))];
    assert_eq!(
        request(d.api, "GET", "/calls/x/sessions", &right, "")
            .await
            .status,
        429
    );
}

#[tokio::test]
async fn ws_auth_failure_gets_rtcds_empty_200_and_success_gets_hello() {
    let d = admin_daemon("").await;
    request(
        d.api,
        "POST",
        "/register",
        &[("Authorization", basic("", ADMIN))],
        &creds("wsclient", KEY),
    )
    .await;
    match ws_connect(
        d.api,
        &basic("wsclient", "bad-key-0123456789-abcdefghijklmnopq"),
        None,
    )
    .await
    {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 200);
            assert!(resp.body().as_ref().is_none_or(|b| b.is_empty()));
        }
        other => panic!("expected a failed handshake, got {:?}", other.map(|_| ())),
    }
    let mut ws = ws_connect(d.api, &basic("wsclient", KEY), None).await.unwrap();
    let ClientMessage::Hello { client_id, conn_id } = next_message(&mut ws).await else {
        panic!("no hello")
    };
    assert_eq!(client_id, "wsclient");
    assert_eq!(conn_id.len(), 26);
    assert!(
        conn_id
            .chars()
            .all(|c| "ybndrfg8ejkmcpqxot1uwisza345h769".contains(c))
    );
    let mut ws2 = ws_connect(d.api, &basic("wsclient", KEY), None).await.unwrap();
    let ClientMessage::Hello { conn_id: second, .. } = next_message(&mut ws2).await else {
        panic!()
    };
    assert_ne!(conn_id, second, "every connection gets a fresh id");
}

#[tokio::test]
async fn ws_origin_must_be_allowed_or_same_origin() {
    let d = admin_daemon("security.allowed_origins = [\"https://mm.example.com\"]\n").await;
    let admin = basic("", ADMIN);
    assert!(
        ws_connect(d.api, &admin, Some("https://mm.example.com"))
            .await
            .is_ok()
    );
    match ws_connect(d.api, &admin, Some("https://evil.example.com")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 403),
        other => panic!("expected 403, got {:?}", other.map(|_| ())),
    }
    assert!(
        ws_connect(d.api, &admin, None).await.is_ok(),
        "no Origin: a server-to-server client"
    );
}

#[tokio::test]
async fn ws_frames_over_1_mib_close_the_connection_but_not_the_server() {
    let d = admin_daemon("").await;
    let mut ws = ws_connect(d.api, &basic("", ADMIN), None).await.unwrap();
    next_message(&mut ws).await;
    let _ = ws.send(Message::Binary(vec![0u8; (1 << 20) + 1].into())).await;
    let code = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                None | Some(Err(_)) => return None,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(code, Some(1009), "rtcd closes with 1009 (message too big)");
    assert_eq!(common::get(d.api, "/api/v1/health").await.status, 200);
    let mut again = ws_connect(d.api, &basic("", ADMIN), None).await.unwrap();
    assert!(matches!(
        next_message(&mut again).await,
        ClientMessage::Hello { .. }
    ));
}

#[tokio::test]
async fn ws_pings_every_10s_and_drops_a_peer_that_never_pongs() {
    let d = admin_daemon("").await;
    // A raw handshake, after which this client never reads, so it never answers a ping.
    let mut s = tokio::net::TcpStream::connect(d.api).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nAuthorization: {}\r\n\r\n",
        basic("", ADMIN)
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let start = std::time::Instant::now();
    let mut raw = Vec::new();
    let mut saw_ping = None;
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        // A server frame 0x89 is a ping.
        if saw_ping.is_none() && raw.windows(2).any(|w| w == [0x89, 0x00]) {
            saw_ping = Some(start.elapsed());
        }
    }
    let closed_after = start.elapsed();
    let ping = saw_ping.expect("no ping frame");
    assert!(
        ping >= Duration::from_secs(9) && ping <= Duration::from_secs(12),
        "first ping after {ping:?}"
    );
    assert!(
        closed_after >= Duration::from_secs(19) && closed_after <= Duration::from_secs(25),
        "closed after {closed_after:?}"
    );
}

/// Registers `id` with the admin key and opens its WebSocket, past the hello.
async fn client_ws(
    d: &Daemon,
    id: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let r = request(
        d.api,
        "POST",
        "/register",
        &[("Authorization", basic("", ADMIN))],
        &creds(id, KEY),
    )
    .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let mut ws = ws_connect(d.api, &basic(id, KEY), None).await.unwrap();
    assert!(matches!(next_message(&mut ws).await, ClientMessage::Hello { .. }));
    ws
}

/// Polls `/api/v1/health` (every 20 ms, at most 5 s) until its body contains `want`; returns
/// the last answer.
async fn health_until(d: &Daemon, want: &str) -> Response {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let h = common::get(d.api, "/api/v1/health").await;
        if h.body.contains(want) || std::time::Instant::now() >= deadline {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn metrics(d: &Daemon) -> String {
    common::get(d.api, "/metrics").await.body
}

#[tokio::test]
async fn join_counts_in_sessions_api_and_metrics_and_the_drain_waits_for_it() {
    let mut d = admin_daemon("drain_timeout = \"0s\"\n").await;
    let mut ws = client_ws(&d, "mm1").await;
    ws.send(join("call1", "sessA")).await.unwrap();
    // With its offer sent, sessA outlives the 10 s offer timeout however slowly this test runs
    // (the drain below must see it live).
    ws.send(rtc("sessA", 2, &client_offer())).await.unwrap();
    let auth = vec![("Authorization", basic("mm1", KEY))];
    let mut sessions = Response {
        status: 0,
        headers: vec![],
        body: String::new(),
    };
    for _ in 0..50 {
        sessions = request(d.api, "GET", "/calls/call1/sessions", &auth, "").await;
        if sessions.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sessions.status, 200, "{}", sessions.body);
    assert_eq!(
        sessions.json(),
        serde_json::json!([{"GroupID": "mm1", "CallID": "call1", "UserID": "user", "SessionID": "sessA",
            "Props": {"av1Support": false, "channelID": "channel", "dcSignaling": false}}])
    );
    let one = request(d.api, "GET", "/calls/call1/sessions/sessA", &auth, "").await;
    assert_eq!(one.json()["SessionID"], "sessA");
    assert_eq!(
        request(d.api, "GET", "/calls/call1/sessions/nope", &auth, "")
            .await
            .status,
        404
    );
    let admin_auth = vec![("Authorization", basic("", ADMIN))];
    let r = request(d.api, "GET", "/calls/call1/sessions", &admin_auth, "").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "unauthorized\n"),
        "rtcd refuses the admin here"
    );

    let m = metrics(&d).await;
    for line in [
        r#"rtcd_rtc_sessions_total{groupID="mm1"} 1"#,
        r#"rtcd_ws_connections_total{clientID="mm1"} 1"#,
        r#"rtcd_ws_messages_total{clientID="mm1",type="join",direction="in"} 1"#,
        r#"rtcd_ws_messages_total{clientID="mm1",type="hello",direction="out"} 1"#,
    ] {
        assert!(m.lines().any(|l| l == line), "missing {line}\n{m}");
    }

    // SIGTERM with a live session: health turns 503 at once, new joins are refused with close,
    // the process waits until the session ends.
    d.signal("TERM");
    let h = health_until(&d, "draining").await;
    assert_eq!(
        (h.status, h.body.as_str()),
        (503, r#"{"status":"draining","sessions":1}"#)
    );
    ws.send(join("call1", "sessB")).await.unwrap();
    match next_non_rtc(&mut ws).await {
        ClientMessage::Close { session_id } => assert_eq!(session_id, "sessB"),
        other => panic!("expected close for the refused join, got {other:?}"),
    }
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "exited with a live session"
    );
    ws.send(leave("sessA")).await.unwrap();
    match next_non_rtc(&mut ws).await {
        ClientMessage::Close { session_id } => assert_eq!(session_id, "sessA"),
        other => panic!("expected close after leave, got {other:?}"),
    }
    let (status, _) = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn wait_idle_blocks_while_a_session_lives_and_returns_when_it_ends() {
    let mut d = admin_daemon("").await;
    let mut ws = client_ws(&d, "mm1").await;
    ws.send(join("call1", "sessA")).await.unwrap();
    let config = d.dir.path().join("config.toml");
    let mut health = String::new();
    for _ in 0..50 {
        health = common::get(d.api, "/api/v1/health").await.body;
        if health.contains(r#""sessions":1"#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health, r#"{"status":"ok","sessions":1}"#);
    // The preStop hook as the operator's pod runs it (config from the same file/env).
    let mut hook = std::process::Command::new(common::BIN)
        .args(["--config", config.to_str().unwrap(), "--wait-idle"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        hook.try_wait().unwrap().is_none(),
        "--wait-idle returned with a live session"
    );
    // A bounded wait gives up with exit 1.
    let timed = std::process::Command::new(common::BIN)
        .args([
            "--config",
            config.to_str().unwrap(),
            "--wait-idle",
            "--wait-idle-timeout",
            "0",
        ])
        .output()
        .unwrap();
    assert_eq!(timed.status.code(), Some(1));
    ws.send(leave("sessA")).await.unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = hook.try_wait().unwrap() {
            break st;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "--wait-idle did not return after the leave"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(status.code(), Some(0));
    assert!(d.child.try_wait().unwrap().is_none(), "rtcd itself keeps running");
}

#[tokio::test]
async fn a_second_signal_exits_at_once_while_sessions_are_live() {
    let mut d = admin_daemon("").await;
    let mut ws = client_ws(&d, "mm2").await;
    ws.send(join("call1", "s1")).await.unwrap();
    health_until(&d, r#""sessions":1"#).await;
    d.signal("TERM");
    let h = health_until(&d, "draining").await;
    assert_eq!(h.status, 503, "{}", h.body);
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "the first signal must wait for the session"
    );
    d.signal("TERM");
    let (status, took) = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(1));
    assert!(took < Duration::from_secs(2), "{took:?}");
}

/// A connectivity canary's call (client `rtcd-canary…`) is a real session, in the sessions API and
/// the metrics, but not a live one: health does not count it, `max_sessions` leaves room for it,
/// the drain does not wait for it, and a draining instance refuses it like any join.
#[tokio::test]
async fn a_canarys_call_is_a_session_but_not_a_live_one() {
    let mut d = admin_daemon("drain_timeout = \"0s\"\n[limits]\nmax_sessions = 1\n").await;
    let mut canary = client_ws(&d, "rtcd-canary-operator").await;
    canary.send(join("probe", "canA")).await.unwrap();
    canary.send(rtc("canA", 2, &client_offer())).await.unwrap();
    let auth = vec![("Authorization", basic("rtcd-canary-operator", KEY))];
    let mut listed = 0;
    for _ in 0..50 {
        let r = request(d.api, "GET", "/calls/probe/sessions", &auth, "").await;
        if r.status == 200 {
            listed = r.json().as_array().map_or(0, Vec::len);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(listed, 1, "the canary's session is a real one");
    let m = metrics(&d).await;
    assert!(
        m.lines()
            .any(|l| l == r#"rtcd_rtc_sessions_total{groupID="rtcd-canary-operator"} 1"#),
        "{m}"
    );
    assert_eq!(
        common::get(d.api, "/api/v1/health").await.body,
        r#"{"status":"ok","sessions":0}"#
    );
    // max_sessions = 1 still admits the plugin's user: the canary holds no place.
    let mut ws = client_ws(&d, "mm1").await;
    ws.send(join("call1", "sessA")).await.unwrap();
    ws.send(rtc("sessA", 2, &client_offer())).await.unwrap();
    let h = health_until(&d, r#""sessions":1"#).await;
    assert_eq!(h.body, r#"{"status":"ok","sessions":1}"#);
    let m = metrics(&d).await;
    assert!(
        m.lines()
            .any(|l| l == r#"rtcd_limit_usage_ratio{limit="max_sessions"} 1.0"#),
        "the limit is on, and full with the user alone: {m}"
    );

    // SIGTERM: a new canary join is refused with close; the drain waits for the user's session
    // only, and the process exits while the canary's call is still up.
    d.signal("TERM");
    health_until(&d, "draining").await;
    canary.send(join("probe", "canB")).await.unwrap();
    match next_non_rtc(&mut canary).await {
        ClientMessage::Close { session_id } => assert_eq!(session_id, "canB"),
        other => panic!("expected close for the canary's join while draining, got {other:?}"),
    }
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "exited with the user's session live"
    );
    ws.send(leave("sessA")).await.unwrap();
    let (status, _) = d.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "the canary's call held the drain");
}

/// A browser-like offer made by a str0m peer: one audio m-line and a data channel.
fn client_offer() -> String {
    use str0m::media::{Direction, MediaKind};
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    api.add_channel("calls-dc".into());
    let (offer, _pending) = api.apply().unwrap();
    serde_json::json!({"type": "offer", "sdp": offer.to_sdp_string()}).to_string()
}

fn rtc(session: &str, kind: i64, data: &str) -> Message {
    let msg = rtcd::protocol::rtc::RtcMessage {
        session_id: session.into(),
        msg_type: kind,
        data: data.as_bytes().to_vec(),
        ..Default::default()
    };
    Message::Binary(ClientMessage::Rtc(msg).encode().into())
}

#[tokio::test]
async fn after_reconnect_a_sessions_messages_follow_the_new_connection() {
    let d = admin_daemon("").await;
    let mut first = client_ws(&d, "mm4").await;
    first.send(join("call1", "roamer")).await.unwrap();
    health_until(&d, r#""sessions":1"#).await;
    drop(first);

    let mut second = ws_connect(d.api, &basic("mm4", KEY), None).await.unwrap();
    next_message(&mut second).await;
    second
        .send(Message::Binary(
            ClientMessage::Reconnect {
                session_id: "roamer".into(),
            }
            .encode()
            .into(),
        ))
        .await
        .unwrap();
    second.send(rtc("roamer", 2, &client_offer())).await.unwrap();
    let ClientMessage::Rtc(answer) = next_message(&mut second).await else {
        panic!("expected the answer")
    };
    assert_eq!(answer.session_id, "roamer");
    assert_eq!(
        (
            answer.group_id.as_str(),
            answer.call_id.as_str(),
            answer.user_id.as_str()
        ),
        ("mm4", "call1", "user")
    );
    assert_eq!(answer.msg_type, 2);
    let sdp: serde_json::Value = serde_json::from_slice(&answer.data).unwrap();
    assert_eq!(sdp["type"], "answer");
    let sdp = sdp["sdp"].as_str().unwrap();
    assert!(
        sdp.contains("a=ice-lite") && sdp.contains("opus/48000/2") && sdp.contains("webrtc-datachannel"),
        "{sdp}"
    );
    // Then rtcd trickles its host candidate.
    let ClientMessage::Rtc(ice) = next_message(&mut second).await else {
        panic!("expected a candidate")
    };
    assert_eq!(ice.msg_type, 1);
    let ice: serde_json::Value = serde_json::from_slice(&ice.data).unwrap();
    assert_eq!(ice["type"], "candidate");
    assert!(
        ice["candidate"]["candidate"]
            .as_str()
            .unwrap()
            .starts_with("candidate:")
    );
    // The join connection is gone, so `close` comes here too.
    second
        .send(Message::Binary(
            ClientMessage::Leave {
                session_id: "roamer".into(),
            }
            .encode()
            .into(),
        ))
        .await
        .unwrap();
    // Then the passive TCP candidate, then the close.
    let ClientMessage::Rtc(tcp) = next_message(&mut second).await else {
        panic!("expected the TCP candidate")
    };
    let tcp: serde_json::Value = serde_json::from_slice(&tcp.data).unwrap();
    assert!(
        tcp["candidate"]["candidate"]
            .as_str()
            .unwrap()
            .contains("tcptype passive"),
        "{tcp}"
    );
    assert_eq!(
        next_message(&mut second).await,
        ClientMessage::Close {
            session_id: "roamer".into()
        }
    );
}

/// The plugin disabled and enabled again mid-call: its new connection (same client ID) sends
/// no `reconnect`. The session's `close` still reaches the plugin, on that connection, and is
/// counted; the leave that causes it (and a late one) log nothing at WARN or above.
#[tokio::test]
async fn a_close_reaches_the_plugins_new_connection_without_a_reconnect() {
    let d = admin_daemon("").await;
    let mut first = client_ws(&d, "mm6").await;
    first.send(join("call1", "reactivated")).await.unwrap();
    health_until(&d, r#""sessions":1"#).await;
    drop(first);
    let mut second = ws_connect(d.api, &basic("mm6", KEY), None).await.unwrap();
    assert!(matches!(
        next_message(&mut second).await,
        ClientMessage::Hello { .. }
    ));
    // Until the server has seen the first connection go, a close would still be sent to it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while gauge(&metrics(&d).await, r#"rtcd_ws_connections_total{clientID="mm6"}"#) != Some(1) {
        assert!(
            std::time::Instant::now() < deadline,
            "the first connection never went"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.send(leave("reactivated")).await.unwrap();
    // Bounded as a whole: the server's pings keep each read short of its own timeout.
    let close = tokio::time::timeout(Duration::from_secs(10), next_non_rtc(&mut second))
        .await
        .expect("no close reached the new connection within 10 s");
    assert_eq!(
        close,
        ClientMessage::Close {
            session_id: "reactivated".into()
        }
    );
    // Sent after the close, so the server has handled it once its answer arrives.
    second.send(leave("reactivated")).await.unwrap();
    health_until(&d, r#""sessions":0"#).await;
    let m = metrics(&d).await;
    assert!(
        m.contains(r#"rtcd_ws_messages_total{clientID="mm6",type="close",direction="out"} 1"#),
        "{m}"
    );
    let log = log_until(&d, "leave for a session that has gone").await;
    let loud: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(r#""level":"WARN""#) || l.contains(r#""level":"ERROR""#))
        // The start's note about this machine's socket buffer caps is not about the plugin.
        .filter(|l| !l.contains("UDP socket buffers"))
        .collect();
    assert!(
        loud.is_empty(),
        "a normal plugin re-activation logged:\n{}",
        loud.join("\n")
    );
}

/// The daemon's JSON log file once it contains `want` (polled every 20 ms, at most 5 s).
async fn log_until(d: &Daemon, want: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = std::fs::read_to_string(d.log_path()).unwrap_or_default();
        if log.contains(want) {
            return log;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the log never said {want:?}:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn another_client_cannot_touch_a_session() {
    let d = admin_daemon("").await;
    let mut owner = client_ws(&d, "owner").await;
    let mut intruder = client_ws(&d, "intruder").await;
    owner.send(join("call1", "mine")).await.unwrap();
    health_until(&d, r#""sessions":1"#).await;
    intruder
        .send(Message::Binary(
            ClientMessage::Reconnect {
                session_id: "mine".into(),
            }
            .encode()
            .into(),
        ))
        .await
        .unwrap();
    intruder
        .send(Message::Binary(
            ClientMessage::Leave {
                session_id: "mine".into(),
            }
            .encode()
            .into(),
        ))
        .await
        .unwrap();
    intruder.send(rtc("mine", 2, &client_offer())).await.unwrap();
    // The owner still gets the answer to its own offer; the intruder got nothing.
    owner.send(rtc("mine", 2, &client_offer())).await.unwrap();
    let ClientMessage::Rtc(answer) = next_message(&mut owner).await else {
        panic!("owner lost its session")
    };
    assert_eq!(answer.msg_type, 2);
    let nothing = tokio::time::timeout(Duration::from_millis(500), intruder.next()).await;
    assert!(nothing.is_err(), "the intruder received {nothing:?}");
}

fn gauge(metrics: &str, series: &str) -> Option<i64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

async fn shard_sessions(d: &Daemon) -> (Option<i64>, Option<i64>) {
    let m = metrics(d).await;
    (
        gauge(&m, r#"rtcd_engine_shard_sessions{shard="0"}"#),
        gauge(&m, r#"rtcd_engine_shard_sessions{shard="1"}"#),
    )
}

#[tokio::test]
async fn calls_spread_over_engine_shards_and_joins_follow_their_call() {
    let d = admin_daemon("[rtc]\nengine_shards = 2\n").await;
    let mut ws = client_ws(&d, "mm1").await;
    // c1 → shard 0 (both empty); c1's second session follows it; c2 and c3 → shard 1 (the
    // emptier one); c4 → shard 0 again (a tie goes to the lowest).
    for (call, session) in [
        ("c1", "s1"),
        ("c1", "s2"),
        ("c2", "s3"),
        ("c3", "s4"),
        ("c4", "s5"),
    ] {
        ws.send(join(call, session)).await.unwrap();
    }
    let auth = vec![("Authorization", basic("mm1", KEY))];
    let mut found = Vec::new();
    for _ in 0..100 {
        found.clear();
        for call in ["c1", "c2", "c3", "c4"] {
            let r = request(d.api, "GET", &format!("/calls/{call}/sessions"), &auth, "").await;
            if r.status == 200 {
                let ids: Vec<String> = r
                    .json()
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s["SessionID"].as_str().unwrap().to_string())
                    .collect();
                found.push((call, ids));
            }
        }
        if found.len() == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        found,
        vec![
            ("c1", strings(&["s1", "s2"])),
            ("c2", strings(&["s3"])),
            ("c3", strings(&["s4"])),
            ("c4", strings(&["s5"])),
        ],
        "every call answers from its own shard"
    );
    assert_eq!(shard_sessions(&d).await, (Some(3), Some(2)));
    let h = common::get(d.api, "/api/v1/health").await;
    assert_eq!(
        (h.status, h.body.as_str()),
        (200, r#"{"status":"ok","sessions":5}"#)
    );

    for s in ["s1", "s2", "s3", "s4", "s5"] {
        ws.send(leave(s)).await.unwrap();
        match next_message(&mut ws).await {
            ClientMessage::Close { session_id } => assert_eq!(session_id, s),
            other => panic!("expected close after leave, got {other:?}"),
        }
    }
    let mut load = (None, None);
    for _ in 0..100 {
        load = shard_sessions(&d).await;
        if load == (Some(0), Some(0)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(load, (Some(0), Some(0)), "closed sessions leave their shard");
}

#[tokio::test]
async fn a_stalled_engine_shard_turns_health_503_with_the_reason_until_it_runs_again() {
    // The debug build has the fault-injection feature (make test-rust): a join of this user
    // blocks its shard's thread for 6 s.
    let d = Daemon::start(
        &format!("[api]\nsecurity.enable_admin = true\nsecurity.admin_secret_key = {ADMIN:?}\n[rtc]\nengine_shards = 2\n"),
        &[("RTCD_FAULT_STALL_USER", "staller")],
    )
    .await;
    let mut ws = client_ws(&d, "mm1").await;
    let h = common::get(d.api, "/api/v1/health").await;
    assert_eq!(h.status, 200, "{}", h.body);
    ws.send(join("busy", "s0")).await.unwrap();
    ws.send(join_as("stall", "s1", "staller")).await.unwrap();
    let sent = std::time::Instant::now();
    let mut unhealthy = None;
    while sent.elapsed() < Duration::from_secs(5) {
        let h = common::get(d.api, "/api/v1/health").await;
        if h.status == 503 {
            unhealthy = Some((sent.elapsed(), h.json()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (after, body) = unhealthy.expect("health never turned 503 while a shard was stalled");
    assert_eq!(body["status"], "unhealthy", "{body}");
    let reason = body["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("engine shard 1 has not run for") && reason.ends_with("(stalled)"),
        "{reason}"
    );
    eprintln!(
        "health 503 {:.1} s after the stalling join: {reason}",
        after.as_secs_f64()
    );
    // The stall ends after 6 s: the shard beats again and health is ok.
    let mut back = false;
    while sent.elapsed() < Duration::from_secs(12) {
        let h = common::get(d.api, "/api/v1/health").await;
        if h.status == 200 {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "health did not recover once the shard ran again");
}

/// A client mounted from a Secret into `api.security.clients_dir` is known from the start:
/// with self-registration off and no admin, the Calls plugin's credentials open the WebSocket
/// and read the sessions API, a wrong key is refused, and the log names the client but never
/// its key. With admin on, it can be neither registered again nor unregistered.
#[tokio::test]
async fn a_configured_client_is_known_from_the_start() {
    let secrets = tempfile::tempdir().unwrap();
    let entry = secrets.path().join("calls-plugin");
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("clientID"), "mattermost-calls\n").unwrap();
    std::fs::write(entry.join("authKey"), format!("{KEY}\n")).unwrap();
    std::fs::create_dir_all(secrets.path().join("..data")).unwrap();
    let dir = format!(
        "security.clients_dir = {:?}\n",
        secrets.path().display().to_string()
    );

    let d = Daemon::start(&format!("[api]\n{dir}"), &[]).await;
    let mut ws = ws_connect(d.api, &basic("mattermost-calls", KEY), None)
        .await
        .expect("the configured client's WebSocket");
    let ClientMessage::Hello { client_id, .. } = next_message(&mut ws).await else {
        panic!("no hello");
    };
    assert_eq!(client_id, "mattermost-calls");
    let auth = basic("mattermost-calls", KEY);
    let r = request(
        d.api,
        "GET",
        "/calls/nosuchcall/sessions",
        &[("Authorization", auth)],
        "",
    )
    .await;
    assert_eq!(r.status, 404, "authenticated, no such call: {}", r.body);
    let wrong = basic("mattermost-calls", &format!("{KEY}x"));
    let r = request(
        d.api,
        "GET",
        "/calls/nosuchcall/sessions",
        &[("Authorization", wrong)],
        "",
    )
    .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let log = std::fs::read_to_string(d.log_path()).unwrap();
    assert!(
        log.contains("configured clients loaded") && log.contains("mattermost-calls"),
        "{log}"
    );
    assert!(!log.contains(KEY), "the key reached the log");
    drop(ws);
    drop(d);

    let d = admin_daemon(&dir).await;
    let admin = basic("admin", ADMIN);
    let r = request(
        d.api,
        "POST",
        "/register",
        &[("Authorization", admin.clone())],
        &creds("mattermost-calls", KEY),
    )
    .await;
    assert_ne!(r.status, 201, "registered over a configured client: {}", r.body);
    let r = request(
        d.api,
        "POST",
        "/unregister",
        &[("Authorization", admin)],
        &creds("mattermost-calls", KEY),
    )
    .await;
    assert_ne!(r.status, 200, "unregistered a configured client: {}", r.body);
    let mut ws = ws_connect(d.api, &basic("mattermost-calls", KEY), None)
        .await
        .expect("still known after the refused unregister");
    assert!(matches!(next_message(&mut ws).await, ClientMessage::Hello { .. }));
}

/// A bad entry in `api.security.clients_dir` stops the start with its path, never the key.
#[test]
fn a_bad_configured_client_is_a_clear_startup_error() {
    let secrets = tempfile::tempdir().unwrap();
    let entry = secrets.path().join("calls-plugin");
    std::fs::create_dir_all(&entry).unwrap();
    std::fs::write(entry.join("clientID"), "mattermost-calls").unwrap();
    std::fs::write(entry.join("authKey"), "too-short-a-key").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = common::free_port();
    std::fs::write(
        &path,
        format!(
            "[api]\nhttp.listen_address = \"127.0.0.1:{port}\"\nsecurity.clients_dir = {:?}\n[logger]\nenable_file = false\n[store]\ndata_source = {:?}\n",
            secrets.path().display().to_string(),
            dir.path().join("db").display().to_string()
        ),
    )
    .unwrap();
    let out = common::command(&path, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("api.security.clients_dir")
            && stderr.contains(&entry.join("authKey").display().to_string())
            && stderr.contains("32 to 72 bytes")
            && !stderr.contains("too-short-a-key"),
        "{stderr}"
    );
}

/// `PUT /api/v1/drain` (admin only): new joins are refused with rtcd's close and health turns
/// 503 `draining` while the live session goes on and the process keeps running; cancelling it
/// admits joins again. What rtcd-operator does to an instance on a node in trouble.
#[tokio::test]
async fn an_admin_drain_refuses_new_joins_until_cancelled() {
    let mut d = admin_daemon("").await;
    let mut ws = client_ws(&d, "mm1").await;
    ws.send(join("call1", "sessA")).await.unwrap();
    ws.send(rtc("sessA", 2, &client_offer())).await.unwrap();
    let admin = vec![("Authorization", basic("", ADMIN))];
    let client = vec![("Authorization", basic("mm1", KEY))];
    let body = r#"{"draining": true}"#;
    assert_eq!(
        request(d.api, "PUT", "/api/v1/drain", &[], body).await.status,
        401
    );
    let r = request(d.api, "PUT", "/api/v1/drain", &client, body).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let r = request(d.api, "PUT", "/api/v1/drain", &admin, r#"{"drain": true}"#).await;
    assert!(r.status == 400 && r.body.contains("draining"), "{}", r.body);
    assert_eq!(
        common::get(d.api, "/api/v1/health").await.status,
        200,
        "a refused request changed nothing"
    );

    let r = request(d.api, "PUT", "/api/v1/drain", &admin, body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["draining"], true);
    assert_eq!(r.json()["shutdown"], false);
    let h = health_until(&d, "draining").await;
    assert_eq!(
        (h.status, h.body.as_str()),
        (503, r#"{"status":"draining","sessions":1}"#)
    );
    ws.send(join("call1", "sessB")).await.unwrap();
    match next_non_rtc(&mut ws).await {
        ClientMessage::Close { session_id } => assert_eq!(session_id, "sessB"),
        other => panic!("expected close for the refused join, got {other:?}"),
    }
    assert!(
        d.child.try_wait().unwrap().is_none(),
        "an admin drain stopped the process"
    );

    let r = request(d.api, "PUT", "/api/v1/drain", &admin, r#"{"draining": false}"#).await;
    assert_eq!(
        (r.status, r.json()["draining"].clone()),
        (200, serde_json::json!(false))
    );
    assert_eq!(r.json()["sessions"], 1, "the live session went on");
    let h = health_until(&d, "\"ok\"").await;
    assert_eq!(h.status, 200, "{}", h.body);
    let g = request(d.api, "GET", "/api/v1/drain", &admin, "").await;
    assert_eq!(g.json()["draining"], false);
    ws.send(join("call1", "sessC")).await.unwrap();
    ws.send(rtc("sessC", 2, &client_offer())).await.unwrap();
    // sessC is admitted: its answer arrives (sessA's trickled candidates may come first).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(std::time::Instant::now() < deadline, "no answer for sessC");
        match next_message(&mut ws).await {
            ClientMessage::Rtc(m) if m.session_id == "sessC" && m.msg_type == 2 => break,
            ClientMessage::Rtc(_) => continue,
            other => panic!("expected sessC's answer after the drain was cancelled, got {other:?}"),
        }
    }
}
