//! Unauthenticated status endpoints: `/version`, `/system`, `/api/v1/health`, `/metrics`.

use std::time::Instant;

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::{ApiError, AppState};
use crate::version::VersionInfo;

/// `GET /version`: rtcd's build document.
pub(super) async fn version(State(state): State<AppState>) -> Json<VersionInfo> {
    Json(state.version.clone())
}

/// `GET /system` body.
#[derive(Debug, Serialize)]
pub(super) struct SystemInfo {
    /// The placement signal: see [`crate::system`].
    pub cpu_load: f64,
}

/// `GET /system`.
pub(super) async fn system(State(state): State<AppState>) -> Json<SystemInfo> {
    Json(SystemInfo {
        cpu_load: state.load.value(Instant::now()),
    })
}

/// `GET /api/v1/health` body.
#[derive(Debug, Serialize)]
pub(super) struct Health {
    /// `ok`, `draining`, or `unhealthy`.
    pub status: &'static str,
    /// Live sessions (not in rtcd, which has no such endpoint): `rtcd --wait-idle`, the
    /// operator's preStop, waits for 0.
    pub sessions: usize,
    /// Why the status is `unhealthy` (a stopped or stalled engine shard).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `GET /api/v1/health`: 200 `ok`; 503 `unhealthy` with the reason when an engine shard has
/// stopped or stalled (Kubernetes then takes the pod out and restarts it); 503 `draining` once
/// shutdown has started, so probes and the operator take this instance out of DNS and off new
/// calls.
pub(super) async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    let sessions = state.lifecycle.live_sessions();
    let (code, status, reason) = if let Some(problem) = state.engine.health().problem(Instant::now()) {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy", Some(problem))
    } else if state.lifecycle.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining", None)
    } else {
        (StatusCode::OK, "ok", None)
    };
    (
        code,
        Json(Health {
            status,
            sessions,
            reason,
        }),
    )
}

/// `GET /metrics`: Prometheus (OpenMetrics text).
pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.publish_tables();
    let body = state.metrics.encode().map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response())
}
