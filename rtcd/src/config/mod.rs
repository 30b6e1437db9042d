//! The daemon's configuration: the typed model, rtcd's defaults, and loading in the order
//! defaults → TOML file → `RTCD_*` environment → [`Config::validate`].
//!
//! The key names, defaults and environment variable names are rtcd's (`service/config.go`,
//! `service/rtc/config.go`, `logger/config.go`, `docs/env_config.md` in mattermost/rtcd), plus
//! `api.security.allowed_origins`, `api.security.clients_dir`, `api.drain_timeout`,
//! `[metrics]` and `[limits]`. Unlike rtcd, an unknown
//! key is an error that names the file, line, column and key. `docs/configuration.md` lists
//! every key and variable.

mod env;
mod limits;
mod load;
mod validate;

use std::{fmt, time::Duration};

use serde::{Deserialize, Serialize};

pub use env::{ENV_VARS, EnvKind, EnvVar};
pub use limits::{Capacity, Limits, LimitsConfig, ip_key};
pub use load::{DEFAULT_CONFIG_PATH, Loaded, Source, load, load_str};
pub use validate::{
    ICE_PORT_RANGE, LOG_LEVELS, MAX_TURN_EXPIRATION_MINUTES, Problem, parse_level as validate_parse_level,
    parse_listen_address,
};

/// Where loading or validating the configuration went wrong. Every variant names the thing
/// that is wrong; [`fmt::Display`] is what the operator sees.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path that was named.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a value has the wrong type.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// The file (or `<embedded>`).
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the key where one is known.
        message: String,
    },
    /// A key that rtcd does not have.
    #[error("{origin}:{line}:{column}: unknown key `{key}`{}", hint_suffix(.hint))]
    UnknownKey {
        /// The file.
        origin: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The full dotted key, e.g. `rtc.ice_prot_udp`.
        key: String,
        /// "did you mean …" or an explanation.
        hint: Option<String>,
    },
    /// An `RTCD_*` variable whose value cannot be parsed for its kind.
    #[error("environment variable {var}={value}: {reason}")]
    Env {
        /// The variable's name.
        var: String,
        /// Its value (`<redacted>` for secrets).
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// Values that parse but are not acceptable.
    #[error("invalid configuration:\n{}", problems_list(.0))]
    Invalid(Vec<Problem>),
}

fn hint_suffix(hint: &Option<String>) -> String {
    hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

fn problems_list(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  - {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Keys set from the environment, each with the `RTCD_*` variable that set it.
pub type FromEnv = Vec<(&'static str, &'static str)>;

/// A string that must never be printed: `Debug` and `Serialize` show `<redacted>` when it is set.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for the code that needs it (authentication, HMAC).
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no value is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    fn shown(&self) -> &'static str {
        if self.0.is_empty() { "" } else { REDACTED }
    }
}

/// What secrets look like wherever they would be shown.
pub const REDACTED: &str = "<redacted>";

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.shown())
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.shown())
    }
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[api]`: the HTTP/WebSocket control API.
    pub api: ApiConfig,
    /// `[rtc]`: the media server.
    pub rtc: RtcConfig,
    /// `[store]`: persistent data.
    pub store: StoreConfig,
    /// `[logger]`: console and file logging.
    pub logger: LoggerConfig,
    /// `[metrics]`: an optional second Prometheus listener.
    pub metrics: MetricsConfig,
    /// `[limits]`: bounds on what one client can take (not in rtcd).
    pub limits: LimitsConfig,
}

/// `[api]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// `http.*`
    pub http: HttpConfig,
    /// `security.*`
    pub security: SecurityConfig,
    /// How long SIGTERM waits for live sessions to end before exiting, as a duration string
    /// (`"30s"`, `"15m"`). `"0s"` waits for ever, as rtcd does.
    pub drain_timeout: String,
    /// Serve the end-user connectivity test page at `/test` (not in rtcd; off by default).
    pub enable_connectivity_test: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            http: HttpConfig::default(),
            security: SecurityConfig::default(),
            drain_timeout: "0s".into(),
            enable_connectivity_test: false,
        }
    }
}

impl ApiConfig {
    /// The drain timeout; `None` means wait for ever. Call only on a validated config.
    pub fn drain_timeout(&self) -> Option<Duration> {
        humantime::parse_duration(&self.drain_timeout)
            .ok()
            .filter(|d| !d.is_zero())
    }
}

/// `[api] http.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port`; an empty host means every interface (`:8045`).
    pub listen_address: String,
    /// `http.tls.*`
    pub tls: TlsConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen_address: ":8045".into(),
            tls: TlsConfig::default(),
        }
    }
}

/// `[api] http.tls.*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Serve the API over TLS.
    pub enable: bool,
    /// PEM certificate chain.
    pub cert_file: String,
    /// PEM private key.
    pub cert_key: String,
}

/// `[api] security.*`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// Anyone may `POST /register`.
    pub allow_self_registration: bool,
    /// Accept `admin_secret_key` as a superuser password.
    pub enable_admin: bool,
    /// The admin password.
    pub admin_secret_key: Secret,
    /// `session_cache.*`
    pub session_cache: SessionCacheConfig,
    /// Browser origins allowed by CORS and for the WebSocket `Origin` header. Empty: none.
    pub allowed_origins: Vec<String>,
    /// A directory of clients known from the start, one entry per client with the files
    /// `clientID` and `authKey` (mounted Secrets). Empty: none.
    pub clients_dir: String,
}

/// `[api] security.session_cache.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionCacheConfig {
    /// Lifetime of bearer tokens.
    pub expiration_minutes: i64,
}

impl Default for SessionCacheConfig {
    fn default() -> Self {
        Self {
            expiration_minutes: 1440,
        }
    }
}

/// `[rtc]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RtcConfig {
    /// Comma-separated local IPs for UDP; empty = all interfaces.
    pub ice_address_udp: String,
    /// The one UDP port that carries every peer's media.
    pub ice_port_udp: i64,
    /// Comma-separated local IPs for ICE-TCP; empty = all interfaces.
    pub ice_address_tcp: String,
    /// The ICE-TCP port.
    pub ice_port_tcp: i64,
    /// Public host/IP advertised in host candidates, or `ext/int,ext/int` NAT pairs.
    pub ice_host_override: String,
    /// A port, or `localIP/port,…`, advertised instead of the listening port.
    pub ice_host_port_override: HostPortOverride,
    /// STUN/TURN servers.
    pub ice_servers: Vec<IceServer>,
    /// `turn.*`
    pub turn: TurnConfig,
    /// Also listen on IPv6.
    pub enable_ipv6: bool,
    /// rtcd's SO_REUSEPORT socket count per local address.
    pub udp_sockets_count: i64,
    /// Packets kept per SSRC for NACK retransmission: a power of two in 32–8192 (0 = 256).
    pub nack_buffer_size: i64,
    /// Accepted for compatibility; this implementation always stores copies.
    pub nack_disable_copy: bool,
    /// Media engine shards (threads), each owning whole calls: 0 = one per usable core
    /// (CPU affinity and cgroup quota), at most 256. Not in rtcd.
    pub engine_shards: i64,
}

impl Default for RtcConfig {
    fn default() -> Self {
        Self {
            ice_address_udp: String::new(),
            ice_port_udp: 8443,
            ice_address_tcp: String::new(),
            ice_port_tcp: 8443,
            ice_host_override: String::new(),
            ice_host_port_override: HostPortOverride::default(),
            ice_servers: Vec::new(),
            turn: TurnConfig::default(),
            enable_ipv6: false,
            udp_sockets_count: default_udp_sockets_count(),
            nack_buffer_size: 256,
            nack_disable_copy: true,
            engine_shards: 0,
        }
    }
}

/// rtcd's default: NumCPU × 100.
fn default_udp_sockets_count() -> i64 {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    i64::try_from(cpus).unwrap_or(1).saturating_mul(100)
}

/// `ice_host_port_override`: rtcd accepts an integer or a string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPortOverride(pub String);

impl Serialize for HostPortOverride {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.parse::<i64>() {
            Ok(port) => s.serialize_i64(port),
            Err(_) => s.serialize_str(&self.0),
        }
    }
}

impl<'de> Deserialize<'de> for HostPortOverride {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Str(String),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Int(i)) => Ok(Self(i.to_string())),
            Ok(Raw::Str(s)) => Ok(Self(s)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a port number or a string like \"10.0.0.1/30443,10.0.0.2/30444\"",
            )),
        }
    }
}

/// One `ice_servers` entry: a URL string, or `{urls, username, credential}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IceServer {
    /// `stun:`, `stuns:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub username: String,
    /// TURN password.
    #[serde(skip_serializing_if = "Secret::is_empty")]
    pub credential: Secret,
}

impl<'de> Deserialize<'de> for IceServer {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Full {
            #[serde(default)]
            urls: Vec<String>,
            #[serde(default)]
            username: String,
            #[serde(default)]
            credential: Secret,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Url(String),
            Full(Full),
        }
        match Raw::deserialize(d) {
            Ok(Raw::Url(url)) => Ok(Self {
                urls: vec![url],
                ..Self::default()
            }),
            Ok(Raw::Full(f)) => Ok(Self {
                urls: f.urls,
                username: f.username,
                credential: f.credential,
            }),
            Err(_) => Err(serde::de::Error::custom(
                "each ice_servers entry must be a URL string or a table with only `urls` (list of \
                 strings), `username` and `credential`",
            )),
        }
    }
}

/// `[rtc] turn.*`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TurnConfig {
    /// coturn `static-auth-secret` for short-lived TURN credentials.
    pub static_auth_secret: Secret,
    /// Lifetime of generated TURN credentials.
    pub credentials_expiration_minutes: i64,
}

impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            static_auth_secret: Secret::default(),
            credentials_expiration_minutes: 1440,
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where registered clients are persisted.
    pub data_source: String,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            data_source: "/tmp/rtcd_db".into(),
        }
    }
}

/// `[logger]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggerConfig {
    /// Log to standard output.
    pub enable_console: bool,
    /// JSON lines on the console.
    pub console_json: bool,
    /// Console level (panic, fatal, error, warn, info, debug, trace; any case).
    pub console_level: String,
    /// Log to `file_location`.
    pub enable_file: bool,
    /// JSON lines in the file.
    pub file_json: bool,
    /// File level.
    pub file_level: String,
    /// The log file, created if missing.
    pub file_location: String,
    /// ANSI colours on a plain console.
    pub enable_color: bool,
}

impl Default for LoggerConfig {
    fn default() -> Self {
        Self {
            enable_console: true,
            console_json: false,
            console_level: "INFO".into(),
            enable_file: true,
            file_json: true,
            file_level: "DEBUG".into(),
            file_location: "rtcd.log".into(),
            enable_color: false,
        }
    }
}

/// `[metrics]`: `/metrics` is always on the API port; this adds a second listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Also serve `/metrics` on `prom_port`.
    pub enable_prom: bool,
    /// Port of that listener, on the API's host.
    pub prom_port: i64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enable_prom: false,
            prom_port: 9090,
        }
    }
}

impl Config {
    /// The configuration as TOML, secrets shown as `<redacted>` (`--print-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render configuration: {e}\n"))
    }
}
