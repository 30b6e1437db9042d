//! Semantic checks on a parsed [`Config`]: every problem names its key, its value and, when the
//! value came from the environment, the variable. All problems are collected, not just the first.

use std::{fmt, net::IpAddr};

use super::{Config, IceServer, LoggerConfig, RtcConfig};

/// One invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The dotted key, e.g. `rtc.ice_port_udp`.
    pub key: String,
    /// The value as given (never a secret).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
    /// The `RTCD_*` variable that supplied it, if any.
    pub env: Option<&'static str>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = {:?}", self.key, self.value)?;
        if let Some(var) = self.env {
            write!(f, " (from {var})")?;
        }
        write!(f, ": {}", self.reason)
    }
}

/// rtcd's allowed range for ICE ports.
pub const ICE_PORT_RANGE: std::ops::RangeInclusive<i64> = 80..=49151;
/// rtcd's `MaxTURNCredentialsExpiration`: one week, in minutes (exclusive bound).
pub const MAX_TURN_EXPIRATION_MINUTES: i64 = 7 * 24 * 60;
/// rtcd's (mlog's) level names; matched case-insensitively.
pub const LOG_LEVELS: &[&str] = &["panic", "fatal", "error", "warn", "info", "debug", "trace"];

struct Checker<'a> {
    from_env: &'a [(&'static str, &'static str)],
    problems: Vec<Problem>,
}

impl Checker<'_> {
    fn fail(&mut self, key: &str, value: impl fmt::Display, reason: impl Into<String>) {
        let env = self.from_env.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        self.problems.push(Problem {
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
            env,
        });
    }

    fn check(&mut self, key: &str, value: impl fmt::Display, result: Result<(), String>) {
        if let Err(reason) = result {
            self.fail(key, value, reason);
        }
    }
}

impl Config {
    /// Checks every value; `from_env` says which keys the environment set (for messages).
    pub fn validate(&self, from_env: &[(&'static str, &'static str)]) -> Result<(), Vec<Problem>> {
        let mut c = Checker {
            from_env,
            problems: Vec::new(),
        };
        let api = &self.api;
        let listen = &api.http.listen_address;
        let api_port = parse_listen_address(listen);
        c.check(
            "api.http.listen_address",
            listen,
            api_port.as_ref().map(|_| ()).map_err(Clone::clone),
        );

        let tls = &api.http.tls;
        if tls.enable {
            if tls.cert_file.is_empty() {
                c.fail(
                    "api.http.tls.cert_file",
                    "",
                    "required when api.http.tls.enable is true",
                );
            }
            if tls.cert_key.is_empty() {
                c.fail(
                    "api.http.tls.cert_key",
                    "",
                    "required when api.http.tls.enable is true",
                );
            }
            if !tls.cert_file.is_empty() && !tls.cert_key.is_empty() {
                match crate::tls::load_certificates(&tls.cert_file) {
                    Err(e) => c.fail("api.http.tls.cert_file", &tls.cert_file, e),
                    Ok(_) => {
                        if let Err(e) = crate::tls::server_config(&tls.cert_file, &tls.cert_key) {
                            c.fail("api.http.tls.cert_key", &tls.cert_key, e);
                        }
                    }
                }
            }
        }

        let sec = &api.security;
        if sec.enable_admin && sec.admin_secret_key.is_empty() {
            c.fail(
                "api.security.admin_secret_key",
                "",
                "must be set when api.security.enable_admin is true",
            );
        }
        let minutes = sec.session_cache.expiration_minutes;
        if minutes <= 0 {
            c.fail(
                "api.security.session_cache.expiration_minutes",
                minutes,
                "must be a positive number",
            );
        }
        for origin in &sec.allowed_origins {
            c.check("api.security.allowed_origins", origin, check_origin(origin));
        }
        c.check(
            "api.drain_timeout",
            &api.drain_timeout,
            humantime::parse_duration(&api.drain_timeout)
                .map(|_| ())
                .map_err(|e| format!("expected a duration such as \"0s\", \"30s\" or \"10m\": {e}")),
        );

        check_rtc(&mut c, &self.rtc);

        if self.store.data_source.is_empty() {
            c.fail("store.data_source", "", "must not be empty");
        }

        check_logger(&mut c, &self.logger);

        let m = &self.metrics;
        if m.enable_prom {
            if !(1..=65535).contains(&m.prom_port) {
                c.fail("metrics.prom_port", m.prom_port, "must be a TCP port in 1–65535");
            } else if let Ok((_, port)) = &api_port
                && i64::from(*port) == m.prom_port
                && *port != 0
            {
                c.fail("metrics.prom_port", m.prom_port, "must differ from the API port");
            }
        }

        let l = &self.limits;
        for (key, value) in l.durations() {
            c.check(
                key,
                value,
                humantime::parse_duration(value)
                    .map_err(|e| format!("expected a duration such as \"30s\" or \"2m\": {e}"))
                    .and_then(|d| {
                        if d.is_zero() {
                            Err("must be longer than 0s".into())
                        } else {
                            Ok(())
                        }
                    }),
            );
        }
        for (key, value) in l.counts() {
            let zero_ok = key == "limits.auth_max_concurrent_hashes";
            if value < 0 || (value == 0 && !zero_ok) || value > 1_000_000_000 {
                c.fail(
                    key,
                    value,
                    if zero_ok {
                        "must be in 0–1000000000 (0: half the usable cores)"
                    } else {
                        "must be in 1–1000000000"
                    },
                );
            }
        }

        for (key, value) in l.capacities() {
            if !(0..=super::limits::MAX_CAPACITY).contains(&value) {
                c.fail(key, value, "must be in 0–1000000000000 (0: no limit)");
            }
        }

        if c.problems.is_empty() {
            Ok(())
        } else {
            Err(c.problems)
        }
    }
}

fn check_rtc(c: &mut Checker<'_>, rtc: &RtcConfig) {
    c.check(
        "rtc.ice_address_udp",
        &rtc.ice_address_udp,
        check_ip_list(&rtc.ice_address_udp),
    );
    c.check(
        "rtc.ice_address_tcp",
        &rtc.ice_address_tcp,
        check_ip_list(&rtc.ice_address_tcp),
    );
    for (key, port) in [
        ("rtc.ice_port_udp", rtc.ice_port_udp),
        ("rtc.ice_port_tcp", rtc.ice_port_tcp),
    ] {
        if !ICE_PORT_RANGE.contains(&port) {
            c.fail(key, port, "must be in the range 80–49151");
        }
    }
    c.check(
        "rtc.ice_host_override",
        &rtc.ice_host_override,
        check_host_override(&rtc.ice_host_override),
    );
    let hpo = &rtc.ice_host_port_override.0;
    c.check("rtc.ice_host_port_override", hpo, check_port_override(hpo));
    for server in &rtc.ice_servers {
        c.check("rtc.ice_servers", server.urls.join(","), check_ice_server(server));
    }
    let turn = &rtc.turn;
    if !turn.static_auth_secret.is_empty()
        && !(1..MAX_TURN_EXPIRATION_MINUTES).contains(&turn.credentials_expiration_minutes)
    {
        c.fail(
            "rtc.turn.credentials_expiration_minutes",
            turn.credentials_expiration_minutes,
            "must be positive and less than one week (10080 minutes)",
        );
    }
    if rtc.udp_sockets_count <= 0 {
        c.fail(
            "rtc.udp_sockets_count",
            rtc.udp_sockets_count,
            "must be greater than 0",
        );
    }
    let max = i64::try_from(crate::shard::MAX_SHARDS).unwrap_or(i64::MAX);
    if !(0..=max).contains(&rtc.engine_shards) {
        c.fail(
            "rtc.engine_shards",
            rtc.engine_shards,
            "must be from 0 (one shard per usable core) to 256",
        );
    }
    let n = rtc.nack_buffer_size;
    // 0 is what rtcd treats as "use the default".
    if n != 0 && !((32..=8192).contains(&n) && n & (n - 1) == 0) {
        c.fail(
            "rtc.nack_buffer_size",
            n,
            "must be a power of two from 32 to 8192 (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)",
        );
    }
}

fn check_logger(c: &mut Checker<'_>, log: &LoggerConfig) {
    if !log.enable_console && !log.enable_file {
        c.fail(
            "logger.enable_console",
            false,
            "at least one of logger.enable_console and logger.enable_file must be true",
        );
    }
    let levels = LOG_LEVELS.join(", ");
    if log.enable_console && parse_level(&log.console_level).is_none() {
        c.fail(
            "logger.console_level",
            &log.console_level,
            format!("unknown level; use one of {levels}"),
        );
    }
    if log.enable_file {
        if parse_level(&log.file_level).is_none() {
            c.fail(
                "logger.file_level",
                &log.file_level,
                format!("unknown level; use one of {levels}"),
            );
        }
        if log.file_location.is_empty() {
            c.fail(
                "logger.file_location",
                "",
                "must be set when logger.enable_file is true",
            );
        }
    }
}

/// A level name (any case) as a tracing level; `panic` and `fatal` log as errors.
pub fn parse_level(name: &str) -> Option<tracing::Level> {
    Some(match name.to_ascii_lowercase().as_str() {
        "panic" | "fatal" | "error" => tracing::Level::ERROR,
        "warn" => tracing::Level::WARN,
        "info" => tracing::Level::INFO,
        "debug" => tracing::Level::DEBUG,
        "trace" => tracing::Level::TRACE,
        _ => return None,
    })
}

/// Go's `host:port` listen syntax: `:8045`, `0.0.0.0:8045`, `[::1]:8045`, `localhost:8045`.
/// Returns the host (empty = every interface) and the port.
pub fn parse_listen_address(addr: &str) -> Result<(String, u16), String> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port, e.g. \":8045\" or \"127.0.0.1:8045\"".to_string())?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("port {port:?} is not a number in 0–65535"))?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => {
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{v6:?} is not an IPv6 address"))?;
            v6.to_string()
        }
        None if host.contains(':') => {
            return Err("an IPv6 host must be in brackets, e.g. \"[::1]:8045\"".into());
        }
        None => {
            if !host.is_empty() && host.parse::<IpAddr>().is_err() {
                check_hostname(host)?;
            }
            host.to_string()
        }
    };
    Ok((host, port))
}

fn check_hostname(host: &str) -> Result<(), String> {
    let ok = host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{host:?} is neither an IP address nor a valid hostname"))
    }
}

fn check_ip_list(list: &str) -> Result<(), String> {
    if list.is_empty() {
        return Ok(());
    }
    for addr in list.split(',').map(str::trim) {
        addr.parse::<IpAddr>()
            .map_err(|_| format!("{addr:?} is not a valid IP address"))?;
    }
    Ok(())
}

fn check_host_override(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if !value.contains('/') {
        return if value.parse::<IpAddr>().is_ok() {
            Ok(())
        } else {
            check_hostname(value)
        };
    }
    for pair in value.split(',').map(str::trim) {
        let syntax =
            || format!("{pair:?} is not an \"externalIP/internalIP\" pair, e.g. \"8.8.8.8/10.0.2.2\"");
        let (ext, int) = pair.split_once('/').ok_or_else(syntax)?;
        if int.contains('/') {
            return Err(syntax());
        }
        for ip in [ext, int] {
            ip.trim()
                .parse::<IpAddr>()
                .map_err(|_| format!("{ip:?} in pair {pair:?} is not an IP address"))?;
        }
    }
    Ok(())
}

fn check_port_override(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    if let Ok(port) = value.trim().parse::<i64>() {
        return if ICE_PORT_RANGE.contains(&port) {
            Ok(())
        } else {
            Err(format!("{port} is not in the range 80–49151"))
        };
    }
    let mut ips = Vec::new();
    let mut ports = Vec::new();
    for pair in value.split(',').map(str::trim) {
        let (ip, port) = pair
            .split_once('/')
            .ok_or_else(|| format!("{pair:?} is not a \"localIP/port\" pair, e.g. \"10.0.0.1/30443\""))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} in {pair:?} is not an IP address"))?;
        let port: i64 = port
            .parse()
            .map_err(|_| format!("{port:?} in {pair:?} is not a port number"))?;
        if !ICE_PORT_RANGE.contains(&port) {
            return Err(format!("port {port} in {pair:?} is not in the range 80–49151"));
        }
        if ips.contains(&ip) {
            return Err(format!("duplicate mapping for {ip}"));
        }
        if ports.contains(&port) {
            return Err(format!("duplicate port {port}"));
        }
        ips.push(ip);
        ports.push(port);
    }
    Ok(())
}

fn check_ice_server(server: &IceServer) -> Result<(), String> {
    if server.urls.is_empty() {
        return Err("an ice_servers entry needs at least one URL".into());
    }
    let scheme = |u: &str| {
        ["stun:", "stuns:", "turn:", "turns:"]
            .into_iter()
            .find(|s| u.starts_with(s))
    };
    for url in &server.urls {
        match scheme(url) {
            None => return Err(format!("{url:?} must start with stun:, stuns:, turn: or turns:")),
            Some(s) if url.len() == s.len() => return Err(format!("{url:?} has no host")),
            Some(_) => {}
        }
    }
    let stun = server.urls.iter().all(|u| u.starts_with("stun"));
    let turn = server.urls.iter().all(|u| u.starts_with("turn"));
    if !stun && !turn {
        return Err("one entry must not mix STUN and TURN URLs; use two entries".into());
    }
    Ok(())
}

fn check_origin(origin: &str) -> Result<(), String> {
    let rest = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .ok_or_else(|| format!("{origin:?} is not an origin: it must be scheme://host[:port], e.g. \"https://mattermost.example.com\""))?;
    if rest.is_empty() || rest.contains('/') || rest.contains('*') || rest.contains(char::is_whitespace) {
        return Err(format!(
            "{origin:?} is not an origin: no path, wildcard or trailing slash, e.g. \"https://mattermost.example.com\""
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(parse_listen_address(":8045").unwrap(), (String::new(), 8045));
        assert_eq!(
            parse_listen_address("127.0.0.1:1").unwrap(),
            ("127.0.0.1".into(), 1)
        );
        assert_eq!(parse_listen_address("[::1]:8045").unwrap(), ("::1".into(), 8045));
        assert_eq!(
            parse_listen_address("rtcd.internal:80").unwrap(),
            ("rtcd.internal".into(), 80)
        );
        for bad in ["8045", ":port", ":70000", "::1:8045", "bad host:1", "[zz]:1"] {
            assert!(parse_listen_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_overrides() {
        for ok in [
            "",
            "8.8.8.8",
            "rtcd.example.com",
            "8.8.8.8/10.0.2.2,8.8.4.4/10.0.2.1",
            "2001:db8::1",
        ] {
            assert!(check_host_override(ok).is_ok(), "{ok}");
        }
        for bad in [
            "8.8.8.8/",
            "8.8.8.8/10.0.2.2,",
            "a/b",
            "1.1.1.1/2.2.2.2/3.3.3.3",
            "bad host",
        ] {
            assert!(check_host_override(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_overrides() {
        for ok in ["", "30443", "10.0.0.1/30443,10.0.0.2/30444"] {
            assert!(check_port_override(ok).is_ok(), "{ok}");
        }
        for bad in [
            "79",
            "49152",
            "10.0.0.1/30443,10.0.0.1/30444",
            "10.0.0.1/1,10.0.0.2/1",
            "x/30443",
            "10.0.0.1",
        ] {
            assert!(check_port_override(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn levels_are_case_insensitive() {
        for l in [
            "INFO", "info", "Debug", "TRACE", "warn", "error", "fatal", "panic",
        ] {
            assert!(parse_level(l).is_some(), "{l}");
        }
        assert!(parse_level("verbose").is_none());
        assert!(parse_level("warning").is_none());
    }
}
