//! Configuration loading through the library: defaults, partial files, environment over file,
//! the shipped sample and the setup guide's example, unknown keys, redaction.
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

use rtcd::config::{Config, ConfigError, ENV_VARS, Source, load, load_str};

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn embedded_defaults_are_rtcds() {
    let c = load_str("", "<test>", &[]).unwrap().config;
    assert_eq!(c.api.http.listen_address, ":8045");
    assert!(!c.api.http.tls.enable);
    assert!(!c.api.security.allow_self_registration);
    assert!(!c.api.security.enable_admin);
    assert_eq!(c.api.security.session_cache.expiration_minutes, 1440);
    assert_eq!((c.rtc.ice_port_udp, c.rtc.ice_port_tcp), (8443, 8443));
    assert_eq!(c.rtc.turn.credentials_expiration_minutes, 1440);
    assert_eq!(c.rtc.nack_buffer_size, 256);
    assert!(c.rtc.nack_disable_copy);
    let cpus = std::thread::available_parallelism().unwrap().get() as i64;
    assert_eq!(c.rtc.udp_sockets_count, cpus * 100);
    assert_eq!(c.store.data_source, "/tmp/rtcd_db");
    let l = &c.logger;
    assert!(l.enable_console && !l.console_json && l.console_level == "INFO");
    assert!(l.enable_file && l.file_json && l.file_level == "DEBUG" && l.file_location == "rtcd.log");
    assert!(!l.enable_color);
    assert!(!c.metrics.enable_prom);
    assert_eq!(c.metrics.prom_port, 9090);
    assert_eq!(c.api.drain_timeout(), None, "0s means wait for ever");
}

#[test]
fn defaults_survive_a_partial_file() {
    let text = "[rtc]\nice_port_udp = 9443\n[api]\nsecurity.session_cache.expiration_minutes = 5\n";
    let c = load_str(text, "partial.toml", &[]).unwrap().config;
    assert_eq!(c.rtc.ice_port_udp, 9443);
    assert_eq!(c.rtc.ice_port_tcp, 8443, "sibling key keeps its default");
    assert_eq!(c.api.security.session_cache.expiration_minutes, 5);
    assert!(!c.api.security.enable_admin, "sibling table keeps its default");
    assert_eq!(c.api.http.listen_address, ":8045");
    assert_eq!(
        c.logger,
        Config::default().logger,
        "untouched section is all defaults"
    );
}

#[test]
fn environment_beats_file() {
    let text = "[rtc]\nice_port_udp = 9443\nice_host_override = \"file.example.com\"\n[logger]\nconsole_level = \"DEBUG\"\n";
    let e = env(&[
        ("RTCD_RTC_ICEPORTUDP", "10443"),
        ("RTCD_LOGGER_CONSOLELEVEL", "trace"),
        ("RTCD_API_SECURITY_ENABLEADMIN", "true"),
        ("RTCD_API_SECURITY_ADMINSECRETKEY", "s3cr3t-admin-key"),
        (
            "RTCD_RTC_ICESERVERS",
            r#"[{"urls":["turn:t.example.com:3478"],"username":"u","credential":"p"}]"#,
        ),
        ("RTCD_RTC_ICEHOSTPORTOVERRIDE", "30443"),
        (
            "RTCD_API_SECURITY_ALLOWEDORIGINS",
            "https://a.example.com, https://b.example.com",
        ),
        ("RTCD_API_DRAINTIMEOUT", "90s"),
        ("UNRELATED", "x"),
    ]);
    let loaded = load_str(text, "f.toml", &e).unwrap();
    let c = &loaded.config;
    assert_eq!(c.rtc.ice_port_udp, 10443);
    assert_eq!(
        c.rtc.ice_host_override, "file.example.com",
        "file value stays where env is silent"
    );
    assert_eq!(c.logger.console_level, "trace");
    assert!(c.api.security.enable_admin);
    assert_eq!(c.api.security.admin_secret_key.expose(), "s3cr3t-admin-key");
    assert_eq!(c.rtc.ice_servers.len(), 1);
    assert_eq!(c.rtc.ice_servers[0].urls, ["turn:t.example.com:3478"]);
    assert_eq!(c.rtc.ice_servers[0].credential.expose(), "p");
    assert_eq!(c.rtc.ice_host_port_override.0, "30443");
    assert_eq!(
        c.api.security.allowed_origins,
        ["https://a.example.com", "https://b.example.com"]
    );
    assert_eq!(c.api.drain_timeout(), Some(std::time::Duration::from_secs(90)));
    assert!(
        loaded
            .from_env
            .contains(&("rtc.ice_port_udp", "RTCD_RTC_ICEPORTUDP"))
    );
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
}

#[test]
fn ice_servers_env_accepts_a_plain_url_list_like_rtcd() {
    let c = load_str(
        "",
        "-",
        &env(&[(
            "RTCD_RTC_ICESERVERS",
            r#"["stun:a.example.com:3478","stun:b:3478"]"#,
        )]),
    )
    .unwrap()
    .config;
    assert_eq!(c.rtc.ice_servers.len(), 1, "rtcd makes one server of a URL list");
    assert_eq!(c.rtc.ice_servers[0].urls.len(), 2);
}

#[test]
fn ice_servers_in_toml_take_strings_and_tables() {
    let text = r#"[rtc]
ice_servers = ["stun:s.example.com:3478", { urls = ["turn:t.example.com:3478"], username = "u", credential = "p" }]
ice_host_port_override = 30443
"#;
    let c = load_str(text, "-", &[]).unwrap().config;
    assert_eq!(c.rtc.ice_servers[0].urls, ["stun:s.example.com:3478"]);
    assert_eq!(c.rtc.ice_servers[1].username, "u");
    assert_eq!(
        c.rtc.ice_host_port_override.0, "30443",
        "an integer is accepted, as in rtcd"
    );
}

#[test]
fn the_shipped_sample_loads_and_equals_the_defaults() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config/config.sample.toml");
    let loaded = load(Some(std::path::Path::new(path)), &[]).unwrap();
    assert_eq!(loaded.source, Source::File(path.into()));
    assert_eq!(
        loaded.config,
        Config::default(),
        "the sample documents the defaults"
    );
}

#[test]
fn the_sample_mentions_every_key_and_env_var() {
    let sample = include_str!("../config/config.sample.toml");
    for v in ENV_VARS {
        assert!(sample.contains(v.name), "sample does not mention {}", v.name);
        let leaf = v.key.rsplit('.').next().unwrap();
        assert!(sample.contains(leaf), "sample does not mention {}", v.key);
    }
}

#[test]
fn the_setup_guides_comprehensive_example_loads_unchanged() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/guide-comprehensive.toml");
    let c = load(Some(std::path::Path::new(path)), &[]).unwrap().config;
    assert!(c.api.security.enable_admin);
    assert_eq!(c.api.security.allowed_origins, ["https://mattermost.example.com"]);
    assert_eq!(c.rtc.ice_host_override, "rtcd.example.com");
    assert!(c.metrics.enable_prom);
    assert_eq!(c.metrics.prom_port, 9090);
}

#[test]
fn an_unknown_key_names_file_line_column_and_a_suggestion() {
    let text = "[api]\nhttp.listen_address = \":8045\"\n\n[rtc]\nice_prot_udp = 8443\n";
    match load_str(text, "my.toml", &[]).unwrap_err() {
        ConfigError::UnknownKey {
            origin,
            line,
            column,
            key,
            hint,
        } => {
            assert_eq!((origin.as_str(), line, column), ("my.toml", 5, 1));
            assert_eq!(key, "rtc.ice_prot_udp");
            assert_eq!(hint.as_deref(), Some("did you mean `rtc.ice_port_udp`?"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_nested_key_is_found_under_dotted_and_table_headers() {
    let text = "[api.security]\nsession_cache.expiration_minute = 5\n";
    let e = load_str(text, "f", &[]).unwrap_err().to_string();
    assert!(
        e.starts_with("f:2:15: unknown key `api.security.session_cache.expiration_minute`"),
        "{e}"
    );
    assert!(
        e.contains("did you mean `api.security.session_cache.expiration_minutes`?"),
        "{e}"
    );
}

#[test]
fn a_wrong_type_names_the_key_and_position() {
    let e = load_str("[logger]\nenable_file = \"yes\"\n", "f", &[])
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("f:2:"), "{e}");
    assert!(e.contains("`logger.enable_file`"), "{e}");
}

#[test]
fn an_env_value_of_the_wrong_kind_names_the_variable() {
    let e = load_str("", "-", &env(&[("RTCD_API_HTTP_TLS_ENABLE", "maybe")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("RTCD_API_HTTP_TLS_ENABLE=maybe"), "{e}");
    let e = load_str("", "-", &env(&[("RTCD_RTC_ICESERVERS", "stun:x:1")]))
        .unwrap_err()
        .to_string();
    assert!(e.contains("RTCD_RTC_ICESERVERS"), "{e}");
}

#[test]
fn print_config_redacts_every_secret() {
    let text = r#"[api]
security.enable_admin = true
security.admin_secret_key = "ADMIN-SECRET-1234567890"
[rtc]
turn.static_auth_secret = "TURN-SECRET-0987654321"
ice_servers = [{ urls = ["turn:t:3478"], username = "u", credential = "ICE-CREDENTIAL-55555" }]
"#;
    let c = load_str(text, "-", &[]).unwrap().config;
    let shown = c.to_redacted_toml();
    for secret in [
        "ADMIN-SECRET-1234567890",
        "TURN-SECRET-0987654321",
        "ICE-CREDENTIAL-55555",
    ] {
        assert!(!shown.contains(secret), "{secret} printed:\n{shown}");
        assert!(!format!("{c:?}").contains(secret), "{secret} in Debug");
    }
    assert_eq!(shown.matches("<redacted>").count(), 3, "{shown}");
    // The redacted rendering is itself a loadable file.
    assert!(toml::from_str::<toml::Table>(&shown).is_ok());
}

#[test]
fn unknown_rtcd_env_vars_warn_with_a_suggestion() {
    let loaded = load_str("", "-", &env(&[("RTCD_RTC_ICEHOSTOVERIDE", "x")])).unwrap();
    assert_eq!(loaded.warnings.len(), 1);
    assert!(
        loaded.warnings[0].contains("RTCD_RTC_ICEHOSTOVERRIDE"),
        "{:?}",
        loaded.warnings
    );
}

#[test]
fn all_problems_are_reported_together() {
    let text = "[rtc]\nice_port_udp = 1\nice_port_tcp = 2\n";
    match load_str(text, "-", &[]).unwrap_err() {
        ConfigError::Invalid(p) => {
            let keys: Vec<_> = p.iter().map(|p| p.key.as_str()).collect();
            assert_eq!(keys, ["rtc.ice_port_udp", "rtc.ice_port_tcp"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn docs_configuration_lists_every_key_and_env_var() {
    let doc = include_str!("../../docs/configuration.md");
    for v in ENV_VARS {
        assert!(
            doc.contains(v.name),
            "docs/configuration.md does not list {}",
            v.name
        );
        let leaf = v.key.rsplit('.').next().unwrap();
        assert!(doc.contains(&format!("{leaf}`")), "docs lack {}", v.key);
    }
}
