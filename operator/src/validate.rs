//! Checks of an `RtcdCluster` spec that the CRD schema cannot express. Each problem names the
//! field (`spec.config.rtc.iceServers[1].credential`), so `Ready=False` says what to fix.

use std::net::IpAddr;

use crate::crd::{RtcdClusterSpec, SecretKeyRef};

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct FieldError {
    /// JSON path of the field, from `spec`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem in `spec`, sorted by field.
/// `allowed_sysctl_images`: the images the operator lets the privileged init container run.
pub fn validate(spec: &RtcdClusterSpec, allowed_sysctl_images: &[String]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut err = |field: String, message: String| errs.push(FieldError { field, message });
    if spec.image.trim().is_empty() {
        err("spec.image".into(), "must not be empty".into());
    }
    let c = &spec.config;
    for (i, o) in c.allowed_origins.iter().enumerate() {
        if !valid_origin(o) {
            err(
                format!("spec.config.allowedOrigins[{i}]"),
                format!("{o:?} is not scheme://host[:port]"),
            );
        }
    }
    if c.api_port == c.rtc.tcp_port {
        err(
            "spec.config.apiPort".into(),
            format!("{} is also config.rtc.tcpPort; both listen on TCP", c.api_port),
        );
    }
    for (i, s) in c.rtc.ice_servers.iter().enumerate() {
        let path = format!("spec.config.rtc.iceServers[{i}]");
        if s.urls.is_empty() {
            err(format!("{path}.urls"), "needs at least one URL".into());
        }
        let mut kinds = std::collections::BTreeSet::new();
        for (j, u) in s.urls.iter().enumerate() {
            match u.split_once(':') {
                Some(("stun" | "stuns", rest)) if !rest.is_empty() => {
                    kinds.insert("stun");
                }
                Some(("turn" | "turns", rest)) if !rest.is_empty() => {
                    kinds.insert("turn");
                }
                _ => err(
                    format!("{path}.urls[{j}]"),
                    format!("{u:?} must start with stun:, stuns:, turn: or turns: and name a host"),
                ),
            }
        }
        if kinds.len() > 1 {
            err(
                format!("{path}.urls"),
                "one entry must not mix STUN and TURN URLs".into(),
            );
        }
        if s.username.is_some() != s.credential.is_some() {
            err(path.clone(), "username and credential go together".into());
        }
        if kinds.contains("turn") && c.rtc.turn_static_auth_secret.is_none() {
            err(
                path.clone(),
                "rtcd uses TURN servers only with config.rtc.turnStaticAuthSecret set".into(),
            );
        }
        if let Some(cred) = &s.credential {
            secret_ref(&mut err, &format!("{path}.credential"), cred);
        }
    }
    if let Some(s) = &c.rtc.turn_static_auth_secret {
        secret_ref(&mut err, "spec.config.rtc.turnStaticAuthSecret", s);
    }
    let mut client_secrets = std::collections::BTreeSet::new();
    for (i, cl) in spec.clients.iter().enumerate() {
        let path = format!("spec.clients[{i}]");
        if !valid_dns_subdomain(&cl.secret_name) {
            err(
                format!("{path}.secretName"),
                format!("{:?} is not a valid Secret name", cl.secret_name),
            );
        } else if !client_secrets.insert(cl.secret_name.clone()) {
            err(
                format!("{path}.secretName"),
                format!("Secret {:?} is listed twice", cl.secret_name),
            );
        }
        for (field, key) in [
            ("clientIdKey", &cl.client_id_key),
            ("authKeyKey", &cl.auth_key_key),
        ] {
            if !valid_secret_key(key) {
                err(
                    format!("{path}.{field}"),
                    format!("{key:?} is not a valid Secret key"),
                );
            }
        }
    }
    for (i, cl) in spec.clients.iter().enumerate() {
        match (&cl.client_id, cl.generate) {
            (Some(_), false) => err(
                format!("spec.clients[{i}].clientId"),
                "is only used with generate: true (it is the ID a generated Secret gets)".into(),
            ),
            (Some(id), true) => {
                if let Some(why) = client_id_problem(id) {
                    err(format!("spec.clients[{i}].clientId"), why);
                }
            }
            (None, _) => {}
        }
    }
    if let Some(s) = &spec.credentials {
        secret_ref(&mut err, "spec.credentials", s);
    }
    if let Some(d) = &c.drain_timeout {
        match parse_duration_secs(d) {
            Some(secs) if secs > spec.drain.termination_grace_period_seconds.max(0) as u64 => err(
                "spec.config.drainTimeout".into(),
                format!(
                    "{d} is longer than drain.terminationGracePeriodSeconds ({}s); the kubelet would kill rtcd first",
                    spec.drain.termination_grace_period_seconds
                ),
            ),
            Some(_) => {}
            None => err(
                "spec.config.drainTimeout".into(),
                format!("{d:?} is not a duration like 30s or 15m"),
            ),
        }
    }
    for (i, e) in c.extra_env.iter().enumerate() {
        let ok = e
            .name
            .starts_with(|ch: char| ch.is_ascii_alphabetic() || ch == '_')
            && e.name.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !ok {
            err(
                format!("spec.config.extraEnv[{i}].name"),
                format!("{:?} is not an environment variable name", e.name),
            );
        }
    }
    let ho = &spec.ice_host_override;
    for (node, addr) in &ho.static_addresses {
        if !valid_host(addr) {
            err(
                format!("spec.iceHostOverride.static[{node}]"),
                format!("{addr:?} is not an IP address or DNS name"),
            );
        }
    }
    if let Some(k) = &ho.annotation
        && !valid_qualified_name(k)
    {
        err(
            "spec.iceHostOverride.annotation".into(),
            format!("{k:?} is not a valid annotation key"),
        );
    }
    if let Some(p) = &ho.port_override {
        for (node, port) in &p.nodes {
            if !(80..=49151).contains(port) {
                err(
                    format!("spec.iceHostOverride.portOverride.nodes[{node}]"),
                    format!("{port} is outside 80-49151"),
                );
            }
        }
    }
    if let Some(lb) = &spec.media.load_balancer {
        for (i, r) in lb.source_ranges.iter().enumerate() {
            if !valid_cidr(r) {
                err(
                    format!("spec.media.loadBalancer.sourceRanges[{i}]"),
                    format!("{r:?} is not a CIDR"),
                );
            }
        }
    }
    for (k, v) in &spec.sysctls.values {
        let field = format!("spec.sysctls.values[{k}]");
        if !crate::crd::ALLOWED_SYSCTLS.contains(&k.as_str()) {
            err(
                field,
                format!(
                    "only {} may be set: the init container runs privileged on the node",
                    crate::crd::ALLOWED_SYSCTLS.join(" and ")
                ),
            );
        } else if !v
            .parse::<u64>()
            .is_ok_and(|n| crate::crd::SYSCTL_RANGE.contains(&n))
        {
            err(
                field,
                format!(
                    "{v:?} is not a number of bytes from {} to {}",
                    crate::crd::SYSCTL_RANGE.start(),
                    crate::crd::SYSCTL_RANGE.end()
                ),
            );
        }
    }
    if spec.sysctls.enabled {
        let image = &spec.sysctls.image;
        if !pinned_by_digest(image) {
            err(
                "spec.sysctls.image".into(),
                format!(
                    "{image:?} is not pinned by digest (name@sha256:<64 hex digits>): it runs privileged on the node"
                ),
            );
        } else if !allowed_sysctl_images.iter().any(|a| a == image) {
            err(
                "spec.sysctls.image".into(),
                format!(
                    "{image:?} is not among the images this operator runs privileged (its --sysctl-images: {})",
                    allowed_sysctl_images.join(", ")
                ),
            );
        }
    }
    errs.sort();
    errs
}

fn secret_ref(err: &mut impl FnMut(String, String), path: &str, r: &SecretKeyRef) {
    if !valid_dns_subdomain(&r.name) {
        err(
            format!("{path}.name"),
            format!("{:?} is not a valid Secret name", r.name),
        );
    }
    if !valid_secret_key(&r.key) {
        err(
            format!("{path}.key"),
            format!("{:?} is not a valid Secret key", r.key),
        );
    }
}

fn valid_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c))
}

/// `30s`, `15m`, `2h`, `500ms` → whole seconds.
fn parse_duration_secs(s: &str) -> Option<u64> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    let n: u64 = digits.parse().ok()?;
    match &s[digits.len()..] {
        "ms" => Some(n / 1000),
        "s" => Some(n),
        "m" => n.checked_mul(60),
        "h" => n.checked_mul(3600),
        _ => None,
    }
}

fn valid_origin(o: &str) -> bool {
    let Some((scheme, rest)) = o.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https") && !rest.is_empty() && !rest.contains('/') && !rest.contains('*')
}

fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn valid_host(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok() || valid_dns_subdomain(&s.to_ascii_lowercase())
}

fn valid_qualified_name(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    prefix.is_none_or(valid_dns_subdomain)
        && !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn valid_cidr(s: &str) -> bool {
    let Some((ip, len)) = s.split_once('/') else {
        return false;
    };
    match (ip.parse::<IpAddr>(), len.parse::<u8>()) {
        (Ok(IpAddr::V4(_)), Ok(l)) => l <= 32,
        (Ok(IpAddr::V6(_)), Ok(l)) => l <= 128,
        _ => false,
    }
}

/// Whether `image` names a digest (`...@sha256:` and 64 lowercase hex digits).
pub fn pinned_by_digest(image: &str) -> bool {
    image.rsplit_once("@sha256:").is_some_and(|(name, hex)| {
        !name.is_empty()
            && hex.len() == 64
            && hex
                .chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
    })
}

/// Why rtcd would refuse `id` as a client ID (it is a Basic auth user name), if it would.
pub fn client_id_problem(id: &str) -> Option<String> {
    if id.is_empty() || id.len() > 128 {
        Some(format!("client ID {id:?} must be 1 to 128 bytes long"))
    } else if id.contains(':') || id.chars().any(char::is_control) {
        Some(format!(
            "client ID {id:?} must not contain ':' or control characters (a Basic auth user name)"
        ))
    } else {
        None
    }
}

/// Why rtcd would refuse an auth key of `len` bytes, if it would.
pub fn auth_key_problem(len: usize) -> Option<String> {
    (!(32..=72).contains(&len)).then(|| format!("the auth key has {len} bytes; rtcd needs 32 to 72"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::IceServer;

    fn spec() -> RtcdClusterSpec {
        serde_json::from_value(serde_json::json!({})).expect("defaults")
    }

    fn allowed() -> Vec<String> {
        vec![crate::crd::DEFAULT_SYSCTL_IMAGE.to_string()]
    }

    #[test]
    fn sysctls_are_an_allowlist_run_from_a_pinned_allowed_image() {
        let mut s = spec();
        s.sysctls.values.insert("kernel.core_pattern".into(), "1".into());
        s.sysctls.values.insert("net.core.rmem_max".into(), "1".into());
        s.sysctls.image = "busybox:1.37".into();
        let errs = validate(&s, &allowed());
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.sysctls.image",
                "spec.sysctls.values[kernel.core_pattern]",
                "spec.sysctls.values[net.core.rmem_max]"
            ],
            "{errs:?}"
        );
        assert!(errs[0].message.contains("pinned by digest"), "{errs:?}");
        let other = format!("evil/img@sha256:{}", "a".repeat(64));
        s = spec();
        s.sysctls.image = other;
        let errs = validate(&s, &allowed());
        assert!(
            errs.len() == 1 && errs[0].message.contains("--sysctl-images"),
            "{errs:?}"
        );
        s.sysctls.enabled = false;
        assert_eq!(validate(&s, &allowed()), vec![], "not run: not checked");
        assert!(pinned_by_digest(crate::crd::DEFAULT_SYSCTL_IMAGE));
        assert!(
            !pinned_by_digest("x@sha256:ABC") && !pinned_by_digest(&format!("@sha256:{}", "a".repeat(64)))
        );
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(validate(&spec(), &allowed()), vec![]);
    }

    #[test]
    fn each_error_names_its_field() {
        let mut s = spec();
        s.config.allowed_origins = vec!["https://ok.example.com".into(), "ftp:/nope".into()];
        s.config.rtc.ice_servers = vec![IceServer {
            urls: vec![
                "turn:turn.example.com:3478".into(),
                "stun:stun.example.com:3478".into(),
            ],
            username: Some("u".into()),
            credential: None,
        }];
        s.config.drain_timeout = Some("2h".into());
        s.ice_host_override
            .static_addresses
            .insert("node-a".into(), "not an address!".into());
        s.config.extra_env = vec![k8s_openapi::api::core::v1::EnvVar {
            name: "1BAD".into(),
            ..Default::default()
        }];
        let fields: Vec<String> = validate(&s, &allowed()).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.config.allowedOrigins[1]",
                "spec.config.drainTimeout",
                "spec.config.extraEnv[0].name",
                "spec.config.rtc.iceServers[0]",
                "spec.config.rtc.iceServers[0]",
                "spec.config.rtc.iceServers[0].urls",
                "spec.iceHostOverride.static[node-a]",
            ]
        );
    }

    #[test]
    fn client_secrets_are_checked_by_name_and_key() {
        let mut s: RtcdClusterSpec = serde_json::from_value(serde_json::json!({"clients": [
            {"secretName": "calls-plugin"},
            {"secretName": "calls-plugin"},
            {"secretName": "Not_A_Name"},
            {"secretName": "other", "clientIdKey": "id/x", "authKeyKey": ""},
        ]}))
        .expect("clients");
        assert_eq!(s.clients[0].client_id_key, "clientID");
        assert_eq!(s.clients[0].auth_key_key, "authKey");
        let fields: Vec<String> = validate(&s, &allowed()).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            vec![
                "spec.clients[1].secretName",
                "spec.clients[2].secretName",
                "spec.clients[3].authKeyKey",
                "spec.clients[3].clientIdKey",
            ]
        );
        s.clients.truncate(1);
        assert_eq!(validate(&s, &allowed()), vec![]);
        s.clients[0].client_id = Some("mattermost".into());
        let fields: Vec<String> = validate(&s, &allowed()).into_iter().map(|e| e.field).collect();
        assert_eq!(fields, ["spec.clients[0].clientId"], "clientId without generate");
        s.clients[0].generate = true;
        assert_eq!(validate(&s, &allowed()), vec![]);
        s.clients[0].client_id = Some("a:b".into());
        let errs = validate(&s, &allowed());
        assert!(errs.len() == 1 && errs[0].message.contains("':'"), "{errs:?}");
        assert!(auth_key_problem(31).is_some() && auth_key_problem(73).is_some());
        assert!(auth_key_problem(43).is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("30s"), Some(30));
        assert_eq!(parse_duration_secs("15m"), Some(900));
        assert_eq!(parse_duration_secs("2h"), Some(7200));
        assert_eq!(parse_duration_secs("1d"), None);
        assert_eq!(parse_duration_secs(""), None);
    }
}
