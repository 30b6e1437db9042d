//! Every invalid configuration, through the real binary: `--check-config` exits 2 and the
//! message names the key (and the variable when the environment supplied the value).
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

mod common;

use std::process::Output;

fn check(toml: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).unwrap();
    common::command(&path, env)
        .arg("--check-config")
        .output()
        .unwrap()
}

/// Asserts exit status 2 and that stderr contains every `needle`.
fn assert_rejected(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "message does not name {n:?}: {stderr}");
    }
}

macro_rules! invalid {
    ($name:ident, $toml:expr, [$($k:expr => $v:expr),*], $($needle:expr),+) => {
        #[test]
        fn $name() {
            assert_rejected(&check($toml, &[$(($k, $v)),*]), &[$($needle),+]);
        }
    };
}

invalid!(
    listen_address_without_port,
    "[api]\nhttp.listen_address = \"localhost\"",
    [],
    "api.http.listen_address",
    "localhost"
);
invalid!(
    listen_address_bad_port,
    "[api]\nhttp.listen_address = \":80450\"",
    [],
    "api.http.listen_address",
    ":80450"
);
invalid!(
    listen_address_unbracketed_v6,
    "[api]\nhttp.listen_address = \"::1:8045\"",
    [],
    "api.http.listen_address"
);
invalid!(
    udp_port_below_80,
    "[rtc]\nice_port_udp = 79",
    [],
    "rtc.ice_port_udp",
    "79",
    "80–49151"
);
invalid!(
    tcp_port_above_49151,
    "[rtc]\nice_port_tcp = 49152",
    [],
    "rtc.ice_port_tcp",
    "49152"
);
invalid!(udp_port_from_env, "", ["RTCD_RTC_ICEPORTUDP" => "50000"], "rtc.ice_port_udp", "50000", "RTCD_RTC_ICEPORTUDP");
invalid!(
    admin_without_secret,
    "[api]\nsecurity.enable_admin = true",
    [],
    "api.security.admin_secret_key",
    "enable_admin"
);
invalid!(admin_from_env_without_secret, "", ["RTCD_API_SECURITY_ENABLEADMIN" => "true"], "api.security.admin_secret_key");
invalid!(
    nack_buffer_not_power_of_two,
    "[rtc]\nnack_buffer_size = 100",
    [],
    "rtc.nack_buffer_size",
    "100",
    "power of two"
);
invalid!(
    nack_buffer_too_small,
    "[rtc]\nnack_buffer_size = 16",
    [],
    "rtc.nack_buffer_size",
    "16"
);
invalid!(
    nack_buffer_too_large,
    "[rtc]\nnack_buffer_size = 16384",
    [],
    "rtc.nack_buffer_size",
    "16384"
);
invalid!(
    ice_server_bad_scheme,
    "[rtc]\nice_servers = [\"http://stun.example.com\"]",
    [],
    "rtc.ice_servers",
    "http://stun.example.com",
    "stun:"
);
invalid!(
    ice_server_table_bad_scheme,
    "[rtc]\nice_servers = [{ urls = [\"turn:ok:3478\", \"udp://x\"] }]",
    [],
    "rtc.ice_servers",
    "udp://x"
);
invalid!(ice_servers_env_bad_scheme, "", ["RTCD_RTC_ICESERVERS" => "[\"example.com:3478\"]"], "rtc.ice_servers", "RTCD_RTC_ICESERVERS");
invalid!(ice_servers_env_not_json, "", ["RTCD_RTC_ICESERVERS" => "stun:a:1,stun:b:1"], "RTCD_RTC_ICESERVERS", "JSON");
invalid!(
    host_override_malformed_pairs,
    "[rtc]\nice_host_override = \"8.8.8.8/10.0.2.2,8.8.4.4\"",
    [],
    "rtc.ice_host_override",
    "8.8.4.4"
);
invalid!(
    host_override_pair_not_ip,
    "[rtc]\nice_host_override = \"public/10.0.2.2\"",
    [],
    "rtc.ice_host_override",
    "public"
);
invalid!(
    host_port_override_malformed,
    "[rtc]\nice_host_port_override = \"10.0.0.1:30443\"",
    [],
    "rtc.ice_host_port_override"
);
invalid!(
    host_port_override_out_of_range,
    "[rtc]\nice_host_port_override = 70000",
    [],
    "rtc.ice_host_port_override",
    "70000"
);
invalid!(
    console_level_unknown,
    "[logger]\nconsole_level = \"verbose\"",
    [],
    "logger.console_level",
    "verbose"
);
invalid!(
    file_level_unknown,
    "[logger]\nfile_level = \"LOUD\"",
    [],
    "logger.file_level",
    "LOUD"
);
invalid!(level_from_env_unknown, "", ["RTCD_LOGGER_CONSOLELEVEL" => "warning"], "logger.console_level", "RTCD_LOGGER_CONSOLELEVEL");
invalid!(
    tls_without_files,
    "[api]\nhttp.tls.enable = true",
    [],
    "api.http.tls.cert_file",
    "api.http.tls.cert_key"
);
invalid!(
    tls_unreadable_cert,
    "[api]\nhttp.tls.enable = true\nhttp.tls.cert_file = \"/nonexistent/cert.pem\"\nhttp.tls.cert_key = \"/nonexistent/key.pem\"",
    [],
    "api.http.tls.cert_file",
    "/nonexistent/cert.pem"
);
invalid!(
    unknown_key,
    "[rtc]\nice_port_udpp = 8443",
    [],
    "unknown key `rtc.ice_port_udpp`",
    "did you mean `rtc.ice_port_udp`?",
    "config.toml:2:1"
);
invalid!(
    fictional_port_range,
    "[rtc]\nice.port_range.min = 9000",
    [],
    "unknown key `rtc.ice`",
    "no port range"
);
invalid!(wrong_type, "[rtc]\nenable_ipv6 = \"no\"", [], "rtc.enable_ipv6");
invalid!(bad_toml, "[rtc\nx=1", [], "config.toml:1:");
invalid!(
    session_expiration_zero,
    "[api]\nsecurity.session_cache.expiration_minutes = 0",
    [],
    "api.security.session_cache.expiration_minutes"
);
invalid!(
    turn_expiration_a_week,
    "[rtc]\nturn.static_auth_secret = \"s\"\nturn.credentials_expiration_minutes = 10080",
    [],
    "rtc.turn.credentials_expiration_minutes",
    "10080"
);
invalid!(
    udp_sockets_zero,
    "[rtc]\nudp_sockets_count = 0",
    [],
    "rtc.udp_sockets_count"
);
invalid!(
    ice_address_not_ip,
    "[rtc]\nice_address_udp = \"10.0.0.1,eth0\"",
    [],
    "rtc.ice_address_udp",
    "eth0"
);
invalid!(
    no_log_target,
    "[logger]\nenable_console = false\nenable_file = false",
    [],
    "logger.enable_console",
    "logger.enable_file"
);
invalid!(
    empty_data_source,
    "[store]\ndata_source = \"\"",
    [],
    "store.data_source"
);
invalid!(
    origin_with_path,
    "[api]\nsecurity.allowed_origins = [\"https://mm.example.com/\"]",
    [],
    "api.security.allowed_origins",
    "https://mm.example.com/"
);
invalid!(
    origin_wildcard,
    "[api]\nsecurity.allowed_origins = [\"*\"]",
    [],
    "api.security.allowed_origins"
);
invalid!(
    drain_timeout_garbage,
    "[api]\ndrain_timeout = \"soon\"",
    [],
    "api.drain_timeout",
    "soon"
);
invalid!(
    prom_port_out_of_range,
    "[metrics]\nenable_prom = true\nprom_port = 0",
    [],
    "metrics.prom_port"
);
invalid!(
    prom_port_same_as_api,
    "[metrics]\nenable_prom = true\nprom_port = 8045",
    [],
    "metrics.prom_port",
    "API port"
);
invalid!(env_bool_garbage, "", ["RTCD_RTC_ENABLEIPV6" => "yes please"], "RTCD_RTC_ENABLEIPV6", "rtc.enable_ipv6");

#[test]
fn tls_key_that_does_not_match_the_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let a = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let b = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let toml = common::tls_toml(dir.path(), &a.cert.pem(), &b.signing_key.serialize_pem());
    assert_rejected(&check(&toml, &[]), &["api.http.tls.cert_key", "does not match"]);
}

#[test]
fn tls_cert_file_that_is_not_pem() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    std::fs::write(&cert, "not a certificate").unwrap();
    let toml = format!(
        "[api]\nhttp.tls.enable = true\nhttp.tls.cert_file = {0:?}\nhttp.tls.cert_key = {0:?}\n",
        cert.display().to_string()
    );
    assert_rejected(
        &check(&toml, &[]),
        &["api.http.tls.cert_file", "no PEM certificate"],
    );
}

#[test]
fn a_missing_explicit_config_file_is_an_error() {
    let out = common::command(std::path::Path::new("/nonexistent/rtcd.toml"), &[])
        .arg("--check-config")
        .output()
        .unwrap();
    assert_rejected(&out, &["/nonexistent/rtcd.toml"]);
}

#[test]
fn starting_with_an_invalid_config_exits_2_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[rtc]\nice_port_udp = 1\n").unwrap();
    let out = common::command(&path, &[]).output().unwrap();
    assert_rejected(&out, &["rtc.ice_port_udp"]);
}

#[test]
fn a_valid_config_checks_ok_with_exit_0() {
    let out = check("[rtc]\nice_port_udp = 9443\n", &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
}
