//! The real `rtcd` binary on free loopback ports: health, metrics on both listeners, TLS,
//! signals, logging targets and secrecy, default config path, start-up failures.
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

mod common;

use std::{sync::Arc, time::Duration};

use common::{Daemon, get};

const ADMIN_KEY: &str = "ADMIN-KEY-never-logged-0123456789abcdef";
const TURN_SECRET: &str = "TURN-SECRET-never-logged-fedcba9876";
const ICE_CREDENTIAL: &str = "ICE-CREDENTIAL-never-logged-42";

#[tokio::test]
async fn serves_health_and_metrics_on_both_ports_then_exits_on_sigterm() {
    let prom = common::free_port();
    let extra = format!("[metrics]\nenable_prom = true\nprom_port = {prom}\n");
    let mut d = Daemon::start(&extra, &[]).await;

    let r = get(d.api, "/api/v1/health").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"status":"ok","sessions":0}"#)
    );
    let r = get(d.api, "/version").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["buildVersion"], "v1.2.6");

    let prom_addr = format!("127.0.0.1:{prom}").parse().unwrap();
    for addr in [d.api, prom_addr] {
        let r = get(addr, "/metrics").await;
        assert_eq!(r.status, 200, "{addr}");
        assert!(r.body.contains("rtcd_build_info{"), "{addr}: {}", r.body);
        assert!(r.body.contains("rtcd_process_resident_memory_bytes "), "{addr}");
    }
    assert_eq!(
        get(prom_addr, "/api/v1/health").await.status,
        404,
        "the metrics port serves only /metrics"
    );

    d.signal("TERM");
    let (status, took) = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    assert!(
        took < Duration::from_secs(1),
        "SIGTERM with no sessions took {took:?}"
    );
    let out = d.output();
    assert!(out.contains("shutdown requested"), "{out}");
}

#[tokio::test]
async fn sigint_exits_0_too() {
    let mut d = Daemon::start("", &[]).await;
    d.signal("INT");
    let (status, _) = d.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn system_reports_a_sampled_cpu_load() {
    let d = Daemon::start("", &[]).await;
    // rtcd publishes after its second one-second sample (about 2 s; later when the machine is
    // busy and its sampler is scheduled late): poll, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let v = loop {
        let v = get(d.api, "/system").await.json();
        if v["cpu_load"].as_f64().unwrap() > 0.0 || std::time::Instant::now() >= deadline {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(v["cpu_load"].as_f64().unwrap() > 0.0, "{v}");
}

#[tokio::test]
async fn no_secret_reaches_any_log_line() {
    let extra = format!(
        "[api]\nsecurity.enable_admin = true\n[rtc]\nturn.static_auth_secret = {TURN_SECRET:?}\n\
         ice_servers = [{{ urls = [\"turn:turn.example.com:3478\"], username = \"u\", credential = {ICE_CREDENTIAL:?} }}]\n\
         [logger]\nconsole_level = \"trace\"\nfile_level = \"trace\"\nconsole_json = true\n"
    );
    let mut d = Daemon::start(&extra, &[("RTCD_API_SECURITY_ADMINSECRETKEY", ADMIN_KEY)]).await;
    get(d.api, "/version").await;
    get(d.api, "/nope").await;
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(10));
    let console = d.output();
    let file = std::fs::read_to_string(d.log_path()).unwrap();
    // Both targets really logged, including the effective configuration at debug level.
    for (name, text) in [("console", &console), ("file", &file)] {
        assert!(
            text.contains("effective configuration"),
            "{name} lacks the config dump:\n{text}"
        );
        assert!(
            text.contains("<redacted>"),
            "{name}: secrets should show as <redacted>"
        );
        for secret in [ADMIN_KEY, TURN_SECRET, ICE_CREDENTIAL] {
            assert!(!text.contains(secret), "{name} log contains a secret");
        }
    }
    // JSON on the console, one object per line.
    let first = console
        .lines()
        .find(|l| l.starts_with('{'))
        .expect("a JSON console line");
    let v: serde_json::Value = serde_json::from_str(first).unwrap();
    assert!(v["level"].is_string() && v["message"].is_string(), "{first}");
}

#[tokio::test]
async fn plain_and_json_targets_and_levels_are_independent() {
    let extra = "[logger]\nconsole_json = false\nconsole_level = \"error\"\nfile_json = true\nfile_level = \"info\"\n";
    let mut d = Daemon::start(extra, &[]).await;
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(10));
    let console = d.output();
    assert!(
        !console.contains("http api listening"),
        "console at error level shows info lines:\n{console}"
    );
    let file = std::fs::read_to_string(d.log_path()).unwrap();
    let line = file
        .lines()
        .find(|l| l.contains("http api listening"))
        .expect("file at info level");
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["level"], "INFO");
    assert!(
        !file.contains("effective configuration"),
        "debug line in an info-level file"
    );
}

#[tokio::test]
async fn serves_tls_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let extra = common::tls_toml(dir.path(), &cert.cert.pem(), &cert.signing_key.serialize_pem());
    let d = Daemon::start(&extra, &[]).await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(d.api).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tls = connector.connect(name, tcp).await.unwrap();
    let r = common::request_on(tls, "GET", "/api/v1/health").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, r#"{"status":"ok","sessions":0}"#)
    );

    // Plain HTTP on the TLS port gets no HTTP answer.
    let plain = tokio::net::TcpStream::connect(d.api).await.unwrap();
    let mut raw = Vec::new();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut plain = plain;
    plain
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut raw)).await;
    assert!(!String::from_utf8_lossy(&raw).contains("\"status\":\"ok\""));
}

#[test]
fn uses_config_config_toml_from_the_working_directory_when_no_flag_is_given() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("config")).unwrap();
    std::fs::write(
        dir.path().join("config/config.toml"),
        "[rtc]\nice_port_udp = 9999\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--print-config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("ice_port_udp = 9999"));
    let out = std::process::Command::new(common::BIN)
        .arg("--check-config")
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("config/config.toml"));

    // Without the file: embedded defaults.
    let empty = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("--check-config")
        .current_dir(empty.path())
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("built-in defaults"));
}

#[test]
fn print_config_shows_env_overrides_and_redacts_secrets() {
    let out = common::command(
        std::path::Path::new("/dev/null"),
        &[
            ("RTCD_API_SECURITY_ENABLEADMIN", "true"),
            ("RTCD_API_SECURITY_ADMINSECRETKEY", ADMIN_KEY),
            ("RTCD_RTC_ICEHOSTOVERRIDE", "rtcd.example.com"),
        ],
    )
    .arg("--print-config")
    .output()
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("ice_host_override = \"rtcd.example.com\""),
        "{text}"
    );
    assert!(text.contains("admin_secret_key = \"<redacted>\""), "{text}");
    assert!(!text.contains(ADMIN_KEY));
}

#[test]
fn version_flag_prints_the_version() {
    let out = std::process::Command::new(common::BIN)
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("rtcd 0."), "{text}");
    assert!(text.contains("v1.2.6"), "{text}");
}

#[test]
fn a_log_file_that_cannot_be_created_is_a_clear_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    let port = common::free_port();
    std::fs::write(
        &path,
        format!("[api]\nhttp.listen_address = \"127.0.0.1:{port}\"\n[logger]\nfile_location = \"/nonexistent-dir/rtcd.log\"\n"),
    )
    .unwrap();
    let out = common::command(&path, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("/nonexistent-dir/rtcd.log") && stderr.contains("logger.file_location"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_busy_port_is_a_clear_startup_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!("[api]\nhttp.listen_address = \"127.0.0.1:{port}\"\n[logger]\nenable_file = false\n"),
    )
    .unwrap();
    let out = common::command(&path, &[]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("api.http.listen_address"), "{stderr}");
}

fn udp_listening_line(out: &str) -> String {
    out.lines()
        .find(|l| l.contains("rtc udp listening"))
        .unwrap_or_else(|| panic!("no listening line:\n{out}"))
        .to_string()
}

#[tokio::test]
async fn host_and_port_overrides_are_advertised() {
    let extra =
        "[rtc]\nice_host_override = \"8.8.8.8/127.0.0.1\"\nice_host_port_override = \"127.0.0.1/30443\"\n";
    let mut d = Daemon::start(extra, &[]).await;
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(10));
    let line = udp_listening_line(&d.output());
    assert!(line.contains("advertised=8.8.8.8:30443"), "{line}");
}

#[tokio::test]
async fn the_public_address_is_discovered_by_stun_from_the_media_socket() {
    // A STUN server on loopback that, like one seen through NAT, reports a public address.
    let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let stun_port = server.local_addr().unwrap().port();
    let responder = tokio::spawn(async move {
        let mut buf = [0u8; 512];
        let (_, from) = server.recv_from(&mut buf).await.unwrap();
        let mut reply = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
        reply.extend_from_slice(&buf[8..20]);
        reply.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
        reply.extend_from_slice(&(from.port() ^ 0x2112).to_be_bytes());
        reply.extend(
            [203u8, 0, 113, 9]
                .iter()
                .zip([0x21u8, 0x12, 0xa4, 0x42])
                .map(|(o, m)| o ^ m),
        );
        server.send_to(&reply, from).await.unwrap();
        from
    });
    let extra = format!("[rtc]\nice_servers = [\"stun:127.0.0.1:{stun_port}\"]\n");
    let mut d = Daemon::start(&extra, &[]).await;
    let asked_from = tokio::time::timeout(Duration::from_secs(5), responder)
        .await
        .unwrap()
        .unwrap();
    d.signal("TERM");
    d.wait_exit(Duration::from_secs(10));
    let out = d.output();
    let line = udp_listening_line(&out);
    assert!(
        line.contains(&format!("advertised=203.0.113.9:{}", asked_from.port())),
        "{line}"
    );
    assert!(
        line.contains(&format!("local=127.0.0.1:{}", asked_from.port())),
        "asked from the media port: {line}"
    );
}
