//! Client authentication, rtcd's way (`service/auth.go`, `service/auth/`): Basic
//! `clientID:authKey` checked against bcrypt hashes in the [`store`], the admin secret as a
//! superuser password, and bearer tokens from `/login` held in memory until they expire.
//! Unlike rtcd, failed attempts are rate-limited per client ID and per source IP.

pub mod limiter;
pub mod preset;
pub mod store;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use subtle::ConstantTimeEq;
use tokio::sync::Semaphore;

use self::{limiter::FailureLimiter, store::Store};
use crate::config::{Config, Secret};

/// rtcd's `MinKeyLen`: auth keys and bearer tokens are at least this long.
pub const MIN_KEY_LEN: usize = 32;
/// bcrypt ignores bytes past 72; longer keys are refused rather than silently truncated.
pub const MAX_KEY_LEN: usize = 72;
/// Longest accepted client ID.
pub const MAX_CLIENT_ID_LEN: usize = 128;
/// bcrypt cost for new hashes (Go's `bcrypt.DefaultCost`).
pub const BCRYPT_COST: u32 = 10;

/// Who a request is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The admin secret was given (rtcd reports clientID "").
    Admin,
    /// A registered client.
    Client(String),
}

impl Principal {
    /// rtcd's clientID for this principal: "" for the admin.
    pub fn client_id(&self) -> &str {
        match self {
            Self::Admin => "",
            Self::Client(id) => id,
        }
    }
}

/// Why authentication or registration failed. `Display` is rtcd's wording where it has one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable `Authorization` header.
    #[error("authentication failed: invalid auth header")]
    BadHeader,
    /// Wrong credentials, unknown client, expired token.
    #[error("authentication failed")]
    Unauthorized,
    /// Too many failures from this client ID or address.
    #[error("too many failed authentication attempts")]
    RateLimited {
        /// When to try again.
        retry_after: Duration,
    },
    /// A client ID longer than [`MAX_CLIENT_ID_LEN`], at any endpoint.
    #[error("invalid client ID: longer than {MAX_CLIENT_ID_LEN} bytes")]
    ClientIdTooLong,
    /// `/register` input refused.
    #[error("registration failed: {0}")]
    Registration(&'static str),
    /// `/unregister` of a client that does not exist.
    #[error("unregister failed: not found")]
    NotFound,
    /// Storage or internal failure (logged; shown to clients only as a generic 500).
    #[error("internal error: {0}")]
    Internal(String),
}

#[derive(Debug, Default)]
struct Tokens {
    by_token: HashMap<String, (String, Instant)>,
    by_client: HashMap<String, String>,
}

/// The authentication service shared by the HTTP and WebSocket handlers.
#[derive(Debug)]
pub struct AuthService {
    store: Arc<Store>,
    /// Clients configured in `api.security.clients_dir`: ID → bcrypt hash of the key.
    preset: HashMap<String, String>,
    admin_key: Option<Secret>,
    token_ttl: Duration,
    tokens: Mutex<Tokens>,
    limiter: Mutex<FailureLimiter>,
    /// bcrypt is deliberately slow: bound how many run at once so a flood cannot take the cores
    /// the media engine needs.
    bcrypt_slots: Semaphore,
    /// Where refusals are counted (`rtcd_limit_refusals_total`).
    metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl AuthService {
    /// A service over `store`, configured from `[api] security`.
    pub fn new(store: Arc<Store>, config: &Config) -> Self {
        let sec = &config.api.security;
        let minutes = u64::try_from(sec.session_cache.expiration_minutes)
            .unwrap_or(1)
            .max(1);
        let hashes = config.limits.resolve().hashes;
        Self {
            store,
            preset: HashMap::new(),
            admin_key: sec
                .enable_admin
                .then(|| sec.admin_secret_key.clone())
                .filter(|k| !k.is_empty()),
            token_ttl: Duration::from_secs(minutes * 60),
            tokens: Mutex::default(),
            limiter: Mutex::new(FailureLimiter::default()),
            bcrypt_slots: Semaphore::new(hashes),
            metrics: None,
        }
    }

    /// Counts refusals (lockouts, over-long client IDs) in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<crate::metrics::Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    fn refused(&self, limit: &'static str) {
        if let Some(m) = &self.metrics {
            m.limit_refused(limit);
        }
    }

    /// Bearer tokens held (expired ones are dropped first).
    pub fn token_count(&self) -> usize {
        let now = Instant::now();
        let mut t = self.tokens();
        let expired: Vec<String> = t
            .by_token
            .iter()
            .filter(|(_, (_, expiry))| *expiry <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for token in expired {
            if let Some((id, _)) = t.by_token.remove(&token)
                && t.by_client.get(&id) == Some(&token)
            {
                t.by_client.remove(&id);
            }
        }
        t.by_token.len()
    }

    /// Keys the failure limiter tracks (a table size, for leak checks).
    pub fn limiter_entries(&self) -> usize {
        let mut l = self.limiter();
        l.expire(Instant::now());
        l.len()
    }

    /// Adds the clients configured in `api.security.clients_dir`, hashing their keys (they are
    /// not kept in clear). They take precedence over registered clients of the same ID.
    pub async fn with_presets(mut self, presets: Vec<preset::Preset>) -> Result<Self, AuthError> {
        for p in presets {
            let key = p.key;
            let hash = tokio::task::spawn_blocking(move || bcrypt::hash(key, BCRYPT_COST))
                .await
                .map_err(|e| AuthError::Internal(e.to_string()))?
                .map_err(|e| AuthError::Internal(e.to_string()))?;
            self.preset.insert(p.id, hash);
        }
        Ok(self)
    }

    /// How many clients are configured (not registered).
    pub fn preset_count(&self) -> usize {
        self.preset.len()
    }

    fn limiter(&self) -> std::sync::MutexGuard<'_, FailureLimiter> {
        self.limiter
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn tokens(&self) -> std::sync::MutexGuard<'_, Tokens> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Checks an `Authorization` header value (Basic or Bearer) from `ip`.
    pub async fn authenticate_header(
        &self,
        header: Option<&str>,
        ip: IpAddr,
    ) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::BadHeader)?;
        if let Some(token) = strip_prefix_ignore_case(header, "Bearer ") {
            return self.authenticate_bearer(token);
        }
        let (id, key) = parse_basic(header).ok_or(AuthError::BadHeader)?;
        self.authenticate_basic(&id, &key, ip).await
    }

    /// A bearer token from `/login`.
    pub fn authenticate_bearer(&self, token: &str) -> Result<Principal, AuthError> {
        let now = Instant::now();
        let mut tokens = self.tokens();
        match tokens.by_token.get(token) {
            Some((id, expiry)) if *expiry > now => Ok(Principal::Client(id.clone())),
            Some((id, _)) => {
                let id = id.clone();
                tokens.by_token.remove(token);
                tokens.by_client.remove(&id);
                Err(AuthError::Unauthorized)
            }
            None => Err(AuthError::Unauthorized),
        }
    }

    /// `clientID:authKey`, or any user with the admin secret when admin is enabled.
    pub async fn authenticate_basic(&self, id: &str, key: &str, ip: IpAddr) -> Result<Principal, AuthError> {
        if id.len() > MAX_CLIENT_ID_LEN {
            // Never a limiter key, never hashed.
            self.refused("client_id_length");
            return Err(AuthError::ClientIdTooLong);
        }
        let now = Instant::now();
        // Counted before the hash: concurrent guesses cannot all pass the check.
        let attempt = self.limiter().attempt(id, ip, now).map_err(|retry_after| {
            self.refused("auth_attempts");
            AuthError::RateLimited { retry_after }
        })?;
        if let Some(admin) = &self.admin_key
            && bool::from(admin.expose().as_bytes().ct_eq(key.as_bytes()))
        {
            self.limiter().succeeded(&attempt);
            return Ok(Principal::Admin);
        }
        let ok = !id.is_empty() && self.verify(id, key).await?;
        if ok {
            self.limiter().succeeded(&attempt);
            Ok(Principal::Client(id.to_string()))
        } else {
            Err(AuthError::Unauthorized)
        }
    }

    /// bcrypt-compares `key` with the stored hash; unknown clients cost the same time.
    async fn verify(&self, id: &str, key: &str) -> Result<bool, AuthError> {
        let hash = match self.preset.get(id) {
            Some(h) => Some(h.clone()),
            None => {
                self.blocking({
                    let store = self.store.clone();
                    let id = id.to_string();
                    move || store.get(&id)
                })
                .await?
            }
        };
        // Unknown clients are checked against a fixed hash so timing does not reveal who is
        // registered; they can never succeed.
        let known = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.to_string());
        let key = key.to_string();
        let matched = self
            .bcrypt(move || bcrypt::verify(key, &hash).unwrap_or(false))
            .await?;
        Ok(known && matched)
    }

    /// Runs a bcrypt computation on the blocking pool, at most `limits.auth_max_concurrent_hashes`
    /// at a time (by default half the cores: the media shards keep the rest).
    async fn bcrypt<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let _slot = self
            .bcrypt_slots
            .acquire()
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, store::StoreError> + Send + 'static,
    ) -> Result<T, AuthError> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| AuthError::Internal(e.to_string()))?
            .map_err(|e| AuthError::Internal(e.to_string()))
    }

    /// Registers `id` with `key` (≥ 32 characters), as `POST /register` does.
    pub async fn register(&self, id: &str, key: &str) -> Result<(), AuthError> {
        if id.len() > MAX_CLIENT_ID_LEN {
            self.refused("client_id_length");
            return Err(AuthError::ClientIdTooLong);
        }
        if id.is_empty() {
            return Err(AuthError::Registration("invalid client id"));
        }
        if key.len() < MIN_KEY_LEN {
            return Err(AuthError::Registration("key not long enough"));
        }
        if key.len() > MAX_KEY_LEN {
            return Err(AuthError::Registration("key too long"));
        }
        if self.preset.contains_key(id) {
            return Err(AuthError::Registration("already registered"));
        }
        let exists = self.blocking({
            let store = self.store.clone();
            let id = id.to_string();
            move || store.get(&id)
        });
        if exists.await?.is_some() {
            return Err(AuthError::Registration("already registered"));
        }
        let key = key.to_string();
        let hash = self
            .bcrypt(move || bcrypt::hash(key, BCRYPT_COST))
            .await?
            .map_err(|e| AuthError::Internal(e.to_string()))?;
        let store = self.store.clone();
        let id = id.to_string();
        match tokio::task::spawn_blocking(move || store.insert_new(&id, &hash)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(store::StoreError::Conflict)) => Err(AuthError::Registration("already registered")),
            Ok(Err(e)) => Err(AuthError::Internal(e.to_string())),
            Err(e) => Err(AuthError::Internal(e.to_string())),
        }
    }

    /// Removes `id` and revokes its bearer token.
    pub async fn unregister(&self, id: &str) -> Result<(), AuthError> {
        if id.len() > MAX_CLIENT_ID_LEN {
            self.refused("client_id_length");
            return Err(AuthError::ClientIdTooLong);
        }
        if self.preset.contains_key(id) {
            return Err(AuthError::Registration(
                "the client is configured in api.security.clients_dir, not registered",
            ));
        }
        let existed = self.blocking({
            let store = self.store.clone();
            let id = id.to_string();
            move || store.delete(&id)
        });
        if !existed.await? {
            return Err(AuthError::NotFound);
        }
        let mut tokens = self.tokens();
        if let Some(token) = tokens.by_client.remove(id) {
            tokens.by_token.remove(&token);
        }
        Ok(())
    }

    /// Checks the credentials and issues a 32-character bearer token (one per client: a new
    /// login replaces the previous token).
    pub async fn login(&self, id: &str, key: &str, ip: IpAddr) -> Result<String, AuthError> {
        match self.authenticate_basic(id, key, ip).await? {
            Principal::Client(id) => {
                let token = random_token(MIN_KEY_LEN).map_err(AuthError::Internal)?;
                let now = Instant::now();
                let mut tokens = self.tokens();
                tokens.by_token.retain(|_, (_, expiry)| *expiry > now);
                if let Some(old) = tokens.by_client.insert(id.clone(), token.clone()) {
                    tokens.by_token.remove(&old);
                }
                tokens.by_token.insert(token.clone(), (id, now + self.token_ttl));
                Ok(token)
            }
            // rtcd's Login needs a registered client; the admin secret is not one.
            Principal::Admin => Err(AuthError::Unauthorized),
        }
    }
}

/// A bcrypt hash of a random string, so that unknown client IDs take as long as known ones.
const DUMMY_HASH: &str = "$2b$10$CwTycUXWue0Thq9StjUM0uJ8zTuVX3ZGR3TrCbFzGnR0SsXhWfz6W";

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    (s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix))
    .then(|| &s[prefix.len()..])
}

/// `Basic base64(id:key)` → (id, key), as Go's `Request.BasicAuth`.
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let encoded = strip_prefix_ignore_case(header, "Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, key) = text.split_once(':')?;
    Some((id.to_string(), key.to_string()))
}

/// `len` URL-safe base64 characters of fresh randomness (6 bits each), as rtcd's tokens.
pub fn random_token(len: usize) -> Result<String, String> {
    let mut bytes = vec![0u8; 1 + len * 3 / 4];
    getrandom::fill(&mut bytes).map_err(|e| e.to_string())?;
    let mut s = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    s.truncate(len);
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_header_parsing() {
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("id:key:with:colons")
        );
        assert_eq!(parse_basic(&h), Some(("id".into(), "key:with:colons".into())));
        assert_eq!(parse_basic("basic !!!"), None);
        assert_eq!(parse_basic("Bearer x"), None);
        let h = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("nocolon")
        );
        assert_eq!(parse_basic(&h), None);
    }

    #[test]
    fn tokens_are_32_url_safe_characters() {
        let t = random_token(32).unwrap();
        assert_eq!(t.len(), 32);
        assert!(
            t.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(t, random_token(32).unwrap());
    }

    #[tokio::test]
    async fn tokens_expire_and_a_new_login_replaces_the_old_token() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let mut auth = AuthService::new(store, &Config::default());
        auth.token_ttl = Duration::from_millis(300);
        let ip = IpAddr::from([127, 0, 0, 1]);
        let key = "k".repeat(MIN_KEY_LEN);
        auth.register("c", &key).await.unwrap();
        let first = auth.login("c", &key, ip).await.unwrap();
        assert_eq!(
            auth.authenticate_bearer(&first),
            Ok(Principal::Client("c".into()))
        );
        let second = auth.login("c", &key, ip).await.unwrap();
        assert_eq!(
            auth.authenticate_bearer(&first),
            Err(AuthError::Unauthorized),
            "one token per client"
        );
        assert!(auth.authenticate_bearer(&second).is_ok());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            auth.authenticate_bearer(&second),
            Err(AuthError::Unauthorized),
            "expired"
        );
    }

    #[tokio::test]
    async fn registration_rules() {
        let dir = tempfile::tempdir().unwrap();
        let auth = AuthService::new(Arc::new(Store::open(dir.path()).unwrap()), &Config::default());
        let key = "k".repeat(MIN_KEY_LEN);
        assert_eq!(
            auth.register("c", &key[1..]).await,
            Err(AuthError::Registration("key not long enough"))
        );
        assert_eq!(
            auth.register("c", &"k".repeat(MAX_KEY_LEN + 1)).await,
            Err(AuthError::Registration("key too long"))
        );
        assert_eq!(
            auth.register("", &key).await,
            Err(AuthError::Registration("invalid client id"))
        );
        auth.register("c", &key).await.unwrap();
        assert_eq!(
            auth.register("c", &key).await,
            Err(AuthError::Registration("already registered"))
        );
        // The hash is bcrypt at cost 10, never the key itself.
        let hash = auth.store.get("c").unwrap().unwrap();
        assert!(
            hash.starts_with("$2b$10$") || hash.starts_with("$2y$10$"),
            "{hash}"
        );
        assert!(!hash.contains(&key));
    }

    #[test]
    fn the_dummy_hash_is_a_valid_bcrypt_hash() {
        assert!(!bcrypt::verify("anything", DUMMY_HASH).unwrap());
    }
}
