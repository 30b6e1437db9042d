//! The HTTP surface through `router()` with `oneshot`: no sockets.
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

use std::sync::Arc;

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
};
use http_body_util::BodyExt;
use rtcd::{
    api::{AppState, metrics_router, router},
    lifecycle::Lifecycle,
    metrics::Metrics,
};
use tower::ServiceExt;

async fn state(origins: &[&str]) -> AppState {
    let dir = tempfile::tempdir().unwrap();
    let mut config = rtcd::config::Config::default();
    config.api.security.allowed_origins = origins.iter().map(|s| s.to_string()).collect();
    config.store.data_source = dir.keep().display().to_string();
    rtcd::server::build_state(
        &config,
        Arc::new(Metrics::new()),
        Lifecycle::new(),
        rtcd::net::MediaNet::none(),
        Vec::new(),
        rtcd::engine::Inboxes::new(1),
    )
    .await
    .unwrap()
}

async fn call(app: axum::Router, req: Request<Body>) -> (StatusCode, axum::http::HeaderMap, String) {
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    let app = app.layer(axum::extract::connect_info::MockConnectInfo(peer));
    let resp = app.oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

#[tokio::test]
async fn version_has_rtcds_exact_keys_and_a_version_the_plugin_accepts() {
    let (status, headers, body) = call(router(state(&[]).await), get("/version")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&body).unwrap();
    let mut keys: Vec<_> = v.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "buildDate",
            "buildHash",
            "buildVersion",
            "goArch",
            "goOS",
            "goVersion"
        ]
    );
    assert!(v.values().all(|x| x.is_string()));
    let tag = v["buildVersion"].as_str().unwrap();
    let parsed = semver::Version::parse(tag.strip_prefix('v').expect("buildVersion is a v-tag")).unwrap();
    // mattermost-plugin-calls' manifest `min_rtcd_version`.
    assert!(parsed >= semver::Version::new(0, 17, 0), "{tag}");
    // The Calls webapp's `hasDCSignalingLockSupport` wants rtcd >= 1.1.0.
    assert!(parsed >= semver::Version::new(1, 1, 0), "{tag}");
    assert!(v["goVersion"].as_str().unwrap().starts_with("rustc "));
    assert_eq!(v["goOS"], std::env::consts::OS);
}

#[tokio::test]
async fn system_reports_cpu_load_as_a_number() {
    let (status, _, body) = call(router(state(&[]).await), get("/system")).await;
    assert_eq!(status, StatusCode::OK);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["cpu_load"].is_f64(), "{body}");
    assert_eq!(v.as_object().unwrap().len(), 1);
}

#[tokio::test]
async fn health_is_ok_then_503_once_draining() {
    let st = state(&[]).await;
    let (status, _, body) = call(router(st.clone()), get("/api/v1/health")).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, r#"{"status":"ok","sessions":0}"#)
    );
    st.lifecycle.start_drain();
    let (status, _, body) = call(router(st), get("/api/v1/health")).await;
    assert_eq!(
        (status, body.as_str()),
        (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"status":"draining","sessions":0}"#
        )
    );
}

#[tokio::test]
async fn metrics_exports_rtcds_families_with_its_names_and_labels() {
    let st = state(&[]).await;
    let m = &st.metrics;
    let g = || ("groupID", "g1".to_string());
    m.rtp_tracks
        .get_or_create(&vec![
            g(),
            ("direction", "in".into()),
            ("type", "audio/opus".into()),
        ])
        .inc();
    m.rtp_track_writes
        .handle(0, vec![g(), ("type", "voice".into())])
        .observe(std::time::Duration::from_millis(2));
    m.rtc_sessions.get_or_create(&vec![g()]).inc();
    m.rtc_conn_states
        .get_or_create(&vec![("type", "connected".into())])
        .inc();
    m.rtc_errors
        .get_or_create(&vec![g(), ("type", "ice".into())])
        .inc();
    m.rtc_connection_time.get_or_create(&vec![g()]).observe(0.3);
    m.rtc_dc_open_time.get_or_create(&vec![g()]).observe(0.3);
    m.rtc_signaling_lock_grab_time
        .get_or_create(&vec![g()])
        .observe(0.01);
    m.rtc_signaling_lock_locked_time
        .get_or_create(&vec![g()])
        .observe(0.01);
    m.rtc_client_loss.get_or_create(&vec![g()]).observe(0.01);
    m.rtc_client_rtt.get_or_create(&vec![g()]).observe(0.05);
    m.rtc_client_jitter.get_or_create(&vec![g()]).observe(0.005);
    m.ws_connections
        .get_or_create(&vec![("clientID", "c1".into())])
        .inc();
    m.ws_messages
        .get_or_create(&vec![
            ("clientID", "c1".into()),
            ("type", "join".into()),
            ("direction", "in".into()),
        ])
        .inc();

    let (status, headers, body) = call(router(st), get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    for line in [
        r#"rtcd_rtc_rtp_tracks_total{groupID="g1",direction="in",type="audio/opus"} 1"#,
        r#"rtcd_rtc_rtp_tracks_writes_time_bucket{le="0.0075",groupID="g1",type="voice"} 1"#,
        r#"rtcd_rtc_sessions_total{groupID="g1"} 1"#,
        r#"rtcd_rtc_conn_states_total{type="connected"} 1"#,
        r#"rtcd_rtc_errors_total{groupID="g1",type="ice"} 1"#,
        r#"rtcd_rtc_connection_time_bucket{le="2.5",groupID="g1"} 1"#,
        r#"rtcd_rtc_dc_open_time_count{groupID="g1"} 1"#,
        r#"rtcd_rtc_signaling_lock_grab_time_count{groupID="g1"} 1"#,
        r#"rtcd_rtc_signaling_lock_locked_time_count{groupID="g1"} 1"#,
        r#"rtcd_rtc_client_loss_rate_bucket{le="0.025",groupID="g1"} 1"#,
        r#"rtcd_rtc_client_rtt_count{groupID="g1"} 1"#,
        r#"rtcd_rtc_client_jitter_count{groupID="g1"} 1"#,
        r#"rtcd_ws_connections_total{clientID="c1"} 1"#,
        r#"rtcd_ws_messages_total{clientID="c1",type="join",direction="in"} 1"#,
    ] {
        assert!(body.lines().any(|l| l == line), "missing line {line}\n{body}");
    }
    for name in [
        "rtcd_build_info{",
        "rtcd_process_cpu_seconds_total ",
        "rtcd_process_resident_memory_bytes ",
        "rtcd_process_open_fds ",
        "rtcd_process_threads ",
    ] {
        assert!(body.contains(name), "missing {name}\n{body}");
    }
    // rtcd's 0.0075 latency bucket only exists with its bucket layout.
    assert!(body.contains(r#"le="0.3""#));
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_are_404_json_like_rtcd() {
    for req in [
        get("/nope"),
        get("/api/v1/nope"),
        Request::post("/version").body(Body::empty()).unwrap(),
        Request::delete("/api/v1/health").body(Body::empty()).unwrap(),
        Request::put("/metrics").body(Body::from("{not json")).unwrap(),
        get("/call/x/sessions"),
        get("/calls/x"),
    ] {
        let what = format!("{} {}", req.method(), req.uri());
        let (status, _, body) = call(router(state(&[]).await), req).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{what}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["code"], "404", "{what}: code is a string");
        assert!(v["error"].is_string(), "{what}");
    }
}

#[tokio::test]
async fn the_prometheus_listener_serves_only_metrics() {
    let (status, _, body) = call(metrics_router(state(&[]).await), get("/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("rtcd_build_info"));
    let (status, _, _) = call(metrics_router(state(&[]).await), get("/version")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

fn preflight(origin: &str) -> Request<Body> {
    Request::builder()
        .method(Method::OPTIONS)
        .uri("/version")
        .header(header::ORIGIN, origin)
        .header(header::ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .body(Body::empty())
        .unwrap()
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let st = state(&["https://mm.example.com"]).await;
    let app = || router(st.clone());
    let (_, headers, _) = call(app(), preflight("https://mm.example.com")).await;
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://mm.example.com"
    );

    let (_, headers, _) = call(app(), preflight("https://evil.example.com")).await;
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());

    let req = Request::get("/version")
        .header(header::ORIGIN, "https://mm.example.com")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = call(app(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::ACCESS_CONTROL_ALLOW_ORIGIN],
        "https://mm.example.com"
    );
}

#[tokio::test]
async fn no_configured_origins_means_no_cors_headers() {
    let req = Request::get("/version")
        .header(header::ORIGIN, "https://mm.example.com")
        .body(Body::empty())
        .unwrap();
    let (status, headers, _) = call(router(state(&[]).await), req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.get(header::ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
}
