//! CONTROL PLANE: the HTTP API that the Calls plugin, Kubernetes probes and Prometheus talk to.
//! [`router`] lists every route. Handlers hold handles (metrics, lifecycle, load sampler),
//! never locked state.

mod clients;
pub mod connectivity;
pub mod conns;
mod drain;
mod error;
pub mod guard;
mod sessions;
mod status;
pub mod ws;

use std::sync::Arc;

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, Method, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use tower_http::{
    cors::{AllowOrigin, CorsLayer},
    timeout::RequestBodyDeadlineLayer,
};

pub use error::ApiError;

use crate::{
    auth::AuthService,
    config::{Config, Limits},
    engine::EngineHandle,
    lifecycle::Lifecycle,
    metrics::Metrics,
    system::Load,
    version::VersionInfo,
};

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Prometheus families.
    pub metrics: Arc<Metrics>,
    /// Drain state.
    pub lifecycle: Lifecycle,
    /// `/system`'s placement signal (CPU, capacity, admissions).
    pub load: Arc<Load>,
    /// `/version`'s document.
    pub version: VersionInfo,
    /// `api.security.allowed_origins`, parsed.
    pub allowed_origins: Arc<Vec<HeaderValue>>,
    /// Client authentication.
    pub auth: Arc<AuthService>,
    /// The media engine.
    pub engine: EngineHandle,
    /// Plugin connections and session routes.
    pub conns: Arc<conns::ConnRegistry>,
    /// The registration switches.
    pub security: Security,
    /// `[limits]`, parsed.
    pub limits: Limits,
    /// Open API connections, by source address.
    pub conn_limits: Arc<guard::ConnLimits>,
    /// ICE-TCP connections (for their table sizes).
    pub tcp: Arc<crate::net::tcp::TcpConns>,
    /// The connectivity test page's sessions, when `api.enable_connectivity_test` is on.
    pub connectivity: Option<Arc<connectivity::Tests>>,
}

/// The `[api] security` switches handlers consult.
#[derive(Debug, Clone, Copy)]
pub struct Security {
    /// `allow_self_registration`.
    pub allow_self_registration: bool,
    /// `enable_admin`.
    pub enable_admin: bool,
}

impl AppState {
    /// State for a daemon with this configuration and these services.
    pub fn new(
        config: &Config,
        metrics: Arc<Metrics>,
        lifecycle: Lifecycle,
        auth: Arc<AuthService>,
        engine: EngineHandle,
        conns: Arc<conns::ConnRegistry>,
    ) -> Self {
        let sec = &config.api.security;
        let limits = config.limits.resolve();
        let conn_limits = guard::ConnLimits::new(
            limits.http_connections,
            limits.http_connections_per_ip,
            metrics.clone(),
        );
        Self {
            load: Arc::new(Load::new(limits.capacity, lifecycle.clone(), metrics.clone())),
            metrics,
            lifecycle,
            version: VersionInfo::current(),
            allowed_origins: Arc::new(
                sec.allowed_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect(),
            ),
            auth,
            engine,
            conns,
            security: Security {
                allow_self_registration: sec.allow_self_registration,
                enable_admin: sec.enable_admin,
            },
            limits,
            conn_limits,
            tcp: Arc::default(),
            connectivity: config
                .api
                .enable_connectivity_test
                .then(|| Arc::new(connectivity::Tests::default())),
        }
    }

    /// The ICE-TCP table whose sizes `/metrics` reports.
    pub fn with_tcp(mut self, tcp: Arc<crate::net::tcp::TcpConns>) -> Self {
        self.tcp = tcp;
        self
    }

    /// Sets `rtcd_table_entries{table}` from every control-plane table (on each scrape).
    pub fn publish_tables(&self) {
        let m = &self.metrics;
        let now = std::time::Instant::now();
        let _ = self.load.value(now);
        m.engine_healthy
            .set(i64::from(self.engine.health().problem(now).is_none()));
        let (conns, routes, groups) = self.conns.sizes();
        m.set_table("ws_connections", conns);
        m.set_table("session_routes", routes);
        m.set_table("route_groups", groups);
        m.set_table("auth_limiter", self.auth.limiter_entries());
        m.set_table("auth_tokens", self.auth.token_count());
        m.set_table("http_addresses", self.conn_limits.addresses());
        let (tcp, unauth, unauth_ips, tcp_tasks) = self.tcp.sizes();
        m.set_table("ice_tcp_connections", tcp);
        m.set_table("ice_tcp_unauthenticated", unauth);
        m.set_table("ice_tcp_addresses", unauth_ips);
        m.set_table("ice_tcp_tasks", tcp_tasks);
        let (calls, sessions) = self.engine.placement_sizes();
        m.set_table("placement_calls", calls);
        m.set_table("placement_sessions", sessions);
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            m.set_table("tokio_tasks", h.metrics().num_alive_tasks());
        }
    }
}

/// Every route of the API listener.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.allowed_origins);
    let limits = state.limits;
    let mut router = Router::new();
    if state.connectivity.is_some() {
        router = router
            .route("/test", get(connectivity::page))
            .route("/test/offer", post(connectivity::offer));
    }
    let router = router
        .route("/version", get(status::version))
        .route("/system", get(status::system))
        .route("/api/v1/health", get(status::health))
        .route("/api/v1/drain", get(drain::get_drain).put(drain::put_drain))
        .route("/metrics", get(status::metrics))
        .route("/register", post(clients::register))
        .route("/unregister", post(clients::unregister))
        .route("/login", post(clients::login))
        .route("/ws", get(ws::ws))
        .route("/calls/{call_id}/sessions", get(sessions::list))
        .route("/calls/{call_id}/sessions/{session_id}", get(sessions::one))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(RequestBodyDeadlineLayer::new(limits.http_read))
        .with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Bounds a request's handling by `limits.http_write_timeout`: past it, a `503` naming the
/// limit (the handler is dropped).
async fn deadline(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match tokio::time::timeout(state.limits.http_write, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            state.metrics.limit_refused("http_write_timeout");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "request handling took longer than limits.http_write_timeout\n",
            )
                .into_response()
        }
    }
}

/// The `[metrics] prom_port` listener: `/metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(status::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::not_found)
        .with_state(state)
}

/// CORS for browser origins named in `api.security.allowed_origins`; none when it is empty,
/// which is right for a server-to-server API.
fn cors(origins: &[HeaderValue]) -> Option<CorsLayer> {
    (!origins.is_empty()).then(|| {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().cloned()))
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .allow_credentials(true)
    })
}
