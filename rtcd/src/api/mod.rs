//! CONTROL PLANE: the HTTP API that the Calls plugin, Kubernetes probes and Prometheus talk to.
//! [`router`] lists every route. Handlers hold handles (metrics, lifecycle, load sampler),
//! never locked state.

mod error;
mod status;

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderValue, Method, header},
    routing::get,
};
use tower_http::cors::{AllowOrigin, CorsLayer};

pub use error::ApiError;

use crate::{lifecycle::Lifecycle, metrics::Metrics, system::CpuLoad, version::VersionInfo};

/// What handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// Prometheus families.
    pub metrics: Arc<Metrics>,
    /// Drain state.
    pub lifecycle: Lifecycle,
    /// `/system`'s sampler.
    pub cpu_load: CpuLoad,
    /// `/version`'s document.
    pub version: VersionInfo,
    /// `api.security.allowed_origins`, parsed.
    pub allowed_origins: Arc<Vec<HeaderValue>>,
}

impl AppState {
    /// State for a daemon with these metrics and this lifecycle.
    pub fn new(metrics: Arc<Metrics>, lifecycle: Lifecycle, allowed_origins: &[String]) -> Self {
        Self {
            metrics,
            lifecycle,
            cpu_load: CpuLoad::default(),
            version: VersionInfo::current(),
            allowed_origins: Arc::new(
                allowed_origins
                    .iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect(),
            ),
        }
    }
}

/// Every route of the API listener.
pub fn router(state: AppState) -> Router {
    let cors = cors(&state.allowed_origins);
    let router = Router::new()
        .route("/version", get(status::version))
        .route("/system", get(status::system))
        .route("/api/v1/health", get(status::health))
        .route("/metrics", get(status::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::not_found)
        .with_state(state);
    match cors {
        Some(layer) => router.layer(layer),
        None => router,
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
