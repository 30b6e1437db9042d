//! `RTCD_*` environment overrides: rtcd's exact variable names (envconfig: `RTCD_` + the Go
//! field path upper-cased, `_` between levels), each mapped to its TOML key and parsed strictly.

use super::ConfigError;

/// How a variable's text becomes a TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvKind {
    /// Taken as is.
    Str,
    /// Taken as is and never echoed.
    Secret,
    /// Go's `strconv.ParseBool`: 1 t T TRUE true True 0 f F FALSE false False.
    Bool,
    /// A decimal integer.
    Int,
    /// rtcd's JSON: `["stun:h:3478"]` or `[{"urls":[…],"username":…,"credential":…}]`.
    IceServersJson,
    /// Comma-separated list.
    List,
}

/// One known variable.
#[derive(Debug, Clone, Copy)]
pub struct EnvVar {
    /// e.g. `RTCD_RTC_ICEPORTUDP`.
    pub name: &'static str,
    /// e.g. `rtc.ice_port_udp`.
    pub key: &'static str,
    /// How its value is parsed.
    pub kind: EnvKind,
}

const fn var(name: &'static str, key: &'static str, kind: EnvKind) -> EnvVar {
    EnvVar { name, key, kind }
}

use EnvKind::{Bool, IceServersJson, Int, List, Secret, Str};

/// Every variable this daemon reads: rtcd's 30 (`docs/env_config.md`) first, then the ones for
/// the keys rtcd lacks.
pub const ENV_VARS: &[EnvVar] = &[
    var("RTCD_API_HTTP_LISTENADDRESS", "api.http.listen_address", Str),
    var("RTCD_API_HTTP_TLS_ENABLE", "api.http.tls.enable", Bool),
    var("RTCD_API_HTTP_TLS_CERTFILE", "api.http.tls.cert_file", Str),
    var("RTCD_API_HTTP_TLS_CERTKEY", "api.http.tls.cert_key", Str),
    var("RTCD_API_SECURITY_ENABLEADMIN", "api.security.enable_admin", Bool),
    var(
        "RTCD_API_SECURITY_ADMINSECRETKEY",
        "api.security.admin_secret_key",
        Secret,
    ),
    var(
        "RTCD_API_SECURITY_ALLOWSELFREGISTRATION",
        "api.security.allow_self_registration",
        Bool,
    ),
    var(
        "RTCD_API_SECURITY_SESSIONCACHE_EXPIRATIONMINUTES",
        "api.security.session_cache.expiration_minutes",
        Int,
    ),
    var("RTCD_RTC_ICEADDRESSUDP", "rtc.ice_address_udp", Str),
    var("RTCD_RTC_ICEPORTUDP", "rtc.ice_port_udp", Int),
    var("RTCD_RTC_ICEADDRESSTCP", "rtc.ice_address_tcp", Str),
    var("RTCD_RTC_ICEPORTTCP", "rtc.ice_port_tcp", Int),
    var("RTCD_RTC_ICEHOSTOVERRIDE", "rtc.ice_host_override", Str),
    var("RTCD_RTC_ICEHOSTPORTOVERRIDE", "rtc.ice_host_port_override", Str),
    var("RTCD_RTC_ICESERVERS", "rtc.ice_servers", IceServersJson),
    var(
        "RTCD_RTC_TURNCONFIG_STATICAUTHSECRET",
        "rtc.turn.static_auth_secret",
        Secret,
    ),
    var(
        "RTCD_RTC_TURNCONFIG_CREDENTIALSEXPIRATIONMINUTES",
        "rtc.turn.credentials_expiration_minutes",
        Int,
    ),
    var("RTCD_RTC_ENABLEIPV6", "rtc.enable_ipv6", Bool),
    var("RTCD_RTC_UDPSOCKETSCOUNT", "rtc.udp_sockets_count", Int),
    var("RTCD_RTC_NACKBUFFERSIZE", "rtc.nack_buffer_size", Int),
    var("RTCD_RTC_NACKDISABLECOPY", "rtc.nack_disable_copy", Bool),
    var("RTCD_RTC_ENGINESHARDS", "rtc.engine_shards", Int),
    var("RTCD_STORE_DATASOURCE", "store.data_source", Str),
    var("RTCD_LOGGER_ENABLECONSOLE", "logger.enable_console", Bool),
    var("RTCD_LOGGER_CONSOLEJSON", "logger.console_json", Bool),
    var("RTCD_LOGGER_CONSOLELEVEL", "logger.console_level", Str),
    var("RTCD_LOGGER_ENABLEFILE", "logger.enable_file", Bool),
    var("RTCD_LOGGER_FILEJSON", "logger.file_json", Bool),
    var("RTCD_LOGGER_FILELEVEL", "logger.file_level", Str),
    var("RTCD_LOGGER_FILELOCATION", "logger.file_location", Str),
    var("RTCD_LOGGER_ENABLECOLOR", "logger.enable_color", Bool),
    // Keys rtcd does not have.
    var(
        "RTCD_API_SECURITY_ALLOWEDORIGINS",
        "api.security.allowed_origins",
        List,
    ),
    var("RTCD_API_SECURITY_CLIENTSDIR", "api.security.clients_dir", Str),
    var("RTCD_API_DRAINTIMEOUT", "api.drain_timeout", Str),
    var(
        "RTCD_API_ENABLECONNECTIVITYTEST",
        "api.enable_connectivity_test",
        Bool,
    ),
    var("RTCD_METRICS_ENABLEPROM", "metrics.enable_prom", Bool),
    var("RTCD_METRICS_PROMPORT", "metrics.prom_port", Int),
    var("RTCD_LIMITS_HTTPREADTIMEOUT", "limits.http_read_timeout", Str),
    var("RTCD_LIMITS_HTTPWRITETIMEOUT", "limits.http_write_timeout", Str),
    var("RTCD_LIMITS_HTTPIDLETIMEOUT", "limits.http_idle_timeout", Str),
    var(
        "RTCD_LIMITS_HTTPMAXCONNECTIONS",
        "limits.http_max_connections",
        Int,
    ),
    var(
        "RTCD_LIMITS_HTTPMAXCONNECTIONSPERIP",
        "limits.http_max_connections_per_ip",
        Int,
    ),
    var("RTCD_LIMITS_WSSENDQUEUE", "limits.ws_send_queue", Int),
    var(
        "RTCD_LIMITS_AUTHMAXCONCURRENTHASHES",
        "limits.auth_max_concurrent_hashes",
        Int,
    ),
    var("RTCD_LIMITS_SESSIONSPERCLIENT", "limits.sessions_per_client", Int),
    var(
        "RTCD_LIMITS_CANDIDATESPERSESSION",
        "limits.candidates_per_session",
        Int,
    ),
    var(
        "RTCD_LIMITS_ICETCPMAXUNAUTHENTICATED",
        "limits.ice_tcp_max_unauthenticated",
        Int,
    ),
    var(
        "RTCD_LIMITS_ICETCPMAXUNAUTHENTICATEDPERIP",
        "limits.ice_tcp_max_unauthenticated_per_ip",
        Int,
    ),
    var(
        "RTCD_LIMITS_ICETCPMAXCONNECTIONS",
        "limits.ice_tcp_max_connections",
        Int,
    ),
    var("RTCD_LIMITS_MAXSESSIONS", "limits.max_sessions", Int),
    var(
        "RTCD_LIMITS_MAXFORWARDEDTRACKS",
        "limits.max_forwarded_tracks",
        Int,
    ),
    var("RTCD_LIMITS_MAXEGRESSBITRATE", "limits.max_egress_bitrate", Int),
];

/// Variables that rtcd reads outside its config struct; accepted and ignored here.
const RECOGNISED_WITHOUT_EFFECT: &[&str] = &["RTCD_RTC_DTLS_INSECURE_SKIP_HELLOVERIFY"];

/// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT…` for a Service named `rtcd`;
/// those are not configuration.
fn is_kubernetes_service_link(name: &str) -> bool {
    name.starts_with("RTCD_SERVICE_") || name == "RTCD_PORT" || name.starts_with("RTCD_PORT_")
}

/// Applies every known `RTCD_*` variable in `env` to `doc`. Returns the keys set (with the
/// variable that set them) and warnings for unknown `RTCD_*` names.
pub(super) fn apply(
    doc: &mut toml::Table,
    env: &[(String, String)],
) -> Result<(super::FromEnv, Vec<String>), ConfigError> {
    let mut applied = Vec::new();
    let mut warnings = Vec::new();
    for (name, value) in env {
        if !name.starts_with("RTCD_") {
            continue;
        }
        let Some(known) = ENV_VARS.iter().find(|v| v.name == name) else {
            if !RECOGNISED_WITHOUT_EFFECT.contains(&name.as_str()) && !is_kubernetes_service_link(name) {
                warnings.push(unknown_var_warning(name));
            }
            continue;
        };
        let parsed = parse(known, value)?;
        set_path(doc, known.key, parsed);
        applied.push((known.key, known.name));
    }
    Ok((applied, warnings))
}

fn unknown_var_warning(name: &str) -> String {
    let best = ENV_VARS
        .iter()
        .map(|v| (strsim::normalized_damerau_levenshtein(name, v.name), v.name))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match best {
        Some((score, candidate)) if score >= 0.8 => {
            format!("ignoring unknown environment variable {name} (did you mean {candidate}?)")
        }
        _ => format!("ignoring unknown environment variable {name}"),
    }
}

fn parse(var: &EnvVar, value: &str) -> Result<toml::Value, ConfigError> {
    let err = |reason: String| ConfigError::Env {
        var: var.name.to_string(),
        value: if var.kind == Secret {
            super::REDACTED.to_string()
        } else {
            value.to_string()
        },
        reason,
    };
    Ok(match var.kind {
        Str | Secret => toml::Value::String(value.to_string()),
        Bool => toml::Value::Boolean(match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => true,
            "0" | "f" | "F" | "FALSE" | "false" | "False" => false,
            _ => return Err(err(format!("expected a boolean (true/false) for {}", var.key))),
        }),
        Int => toml::Value::Integer(
            value
                .trim()
                .parse::<i64>()
                .map_err(|_| err(format!("expected an integer for {}", var.key)))?,
        ),
        List => toml::Value::Array(
            value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        IceServersJson => ice_servers_from_json(value).map_err(err)?,
    })
}

/// rtcd's `ICEServers.Decode`: a JSON list of URLs (one server), else a JSON list of servers.
fn ice_servers_from_json(value: &str) -> Result<toml::Value, String> {
    if let Ok(urls) = serde_json::from_str::<Vec<String>>(value) {
        let mut server = toml::Table::new();
        server.insert(
            "urls".into(),
            toml::Value::Array(urls.into_iter().map(toml::Value::String).collect()),
        );
        return Ok(toml::Value::Array(vec![toml::Value::Table(server)]));
    }
    let servers: Vec<serde_json::Value> = serde_json::from_str(value).map_err(|e| {
        format!(
            "expected JSON for rtc.ice_servers, e.g. [\"stun:host:3478\"] or \
             [{{\"urls\":[\"turn:host:3478\"],\"username\":\"u\",\"credential\":\"p\"}}]: {e}"
        )
    })?;
    let servers = servers
        .into_iter()
        .map(|s| toml::Value::try_from(s).map_err(|e| format!("rtc.ice_servers entry: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(toml::Value::Array(servers))
}

fn set_path(doc: &mut toml::Table, dotted: &str, value: toml::Value) {
    let mut parts = dotted.split('.').peekable();
    let mut table = doc;
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            table.insert(part.to_string(), value);
            return;
        }
        let entry = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(next) = entry else { return };
        table = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variable_names_a_real_key() {
        let defaults = toml::Table::try_from(super::super::Config::default()).unwrap();
        for v in ENV_VARS {
            let mut node = &toml::Value::Table(defaults.clone());
            for part in v.key.split('.') {
                node = node
                    .get(part)
                    .unwrap_or_else(|| panic!("{} maps to missing key {}", v.name, v.key));
            }
        }
    }

    #[test]
    fn go_style_booleans() {
        let v = ENV_VARS.iter().find(|v| v.kind == Bool).unwrap();
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(parse(v, t).unwrap(), toml::Value::Boolean(true));
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(parse(v, f).unwrap(), toml::Value::Boolean(false));
        }
        assert!(parse(v, "yes").is_err());
    }

    #[test]
    fn secret_values_are_not_echoed_in_errors() {
        let v = EnvVar {
            name: "X",
            key: "k",
            kind: Secret,
        };
        // Secrets are strings and always parse; make sure the redaction path is what errors use.
        assert!(parse(&v, "hunter2").is_ok());
        let int = EnvVar {
            name: "RTCD_RTC_ICEPORTUDP",
            key: "rtc.ice_port_udp",
            kind: Int,
        };
        let e = parse(&int, "eighty").unwrap_err().to_string();
        assert!(e.contains("RTCD_RTC_ICEPORTUDP=eighty"), "{e}");
    }

    #[test]
    fn kubernetes_service_links_are_not_warned_about() {
        let mut doc = toml::Table::new();
        let env = vec![
            ("RTCD_SERVICE_HOST".to_string(), "10.0.0.1".to_string()),
            (
                "RTCD_PORT_8045_TCP".to_string(),
                "tcp://10.0.0.1:8045".to_string(),
            ),
            ("RTCD_RTC_ICEPORTUPD".to_string(), "9000".to_string()),
        ];
        let (applied, warnings) = apply(&mut doc, &env).unwrap();
        assert!(applied.is_empty());
        assert_eq!(warnings.len(), 1);
        assert!(
            warnings[0].contains("did you mean RTCD_RTC_ICEPORTUDP"),
            "{warnings:?}"
        );
    }
}
