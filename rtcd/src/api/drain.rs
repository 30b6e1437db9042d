//! `GET`/`PUT /api/v1/drain` (not in rtcd): an admin's drain without shutdown. While on, new
//! sessions are refused and health answers 503 `draining` (so probes and DNS take the instance
//! off new calls) while live calls go on; turning it off admits calls again. rtcd-operator uses
//! it on a node in trouble, and cancels it when the node recovers. A shutdown's drain is final.

use std::net::SocketAddr;

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};

use super::{ApiError, AppState, clients::auth_error};
use crate::auth::Principal;

/// Both methods' answer.
#[derive(Debug, Serialize)]
struct DrainState {
    /// New sessions are refused.
    draining: bool,
    /// Shutdown has started: the drain cannot be cancelled.
    shutdown: bool,
    /// Live sessions.
    sessions: usize,
}

/// `PUT` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainRequest {
    draining: bool,
}

fn current(state: &AppState) -> DrainState {
    DrainState {
        draining: state.lifecycle.is_draining(),
        shutdown: state.lifecycle.is_shutting_down(),
        sessions: state.lifecycle.live_sessions(),
    }
}

async fn admin_only(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<(), Response> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.authenticate_header(auth, peer.ip()).await {
        Ok(Principal::Admin) => Ok(()),
        Ok(Principal::Client(_)) => {
            Err(ApiError::new(StatusCode::FORBIDDEN, "drain: admin credentials required").into_response())
        }
        Err(e) => Err(auth_error(&e, StatusCode::UNAUTHORIZED)),
    }
}

/// `GET /api/v1/drain`: the drain state (admin only).
pub(super) async fn get_drain(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admin_only(&state, peer, &headers).await {
        return r;
    }
    Json(current(&state)).into_response()
}

/// `PUT /api/v1/drain` with `{"draining": true|false}` (admin only): 200 with the new state;
/// 409 when asked to cancel a shutdown's drain; 400 naming what is wrong with the body.
pub(super) async fn put_drain(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admin_only(&state, peer, &headers).await {
        return r;
    }
    let req: DrainRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("drain: the body must be {{\"draining\": true|false}}: {e}"),
            )
            .into_response();
        }
    };
    if !state.lifecycle.set_admin_drain(req.draining) {
        return ApiError::new(
            StatusCode::CONFLICT,
            "drain: shutdown has started; its drain cannot be cancelled",
        )
        .into_response();
    }
    if req.draining {
        tracing::info!(
            sessions = state.lifecycle.live_sessions(),
            "drain requested through the API: refusing new sessions"
        );
    } else {
        tracing::info!("drain cancelled through the API: admitting new sessions");
    }
    Json(current(&state)).into_response()
}
