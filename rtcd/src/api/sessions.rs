//! `GET /calls/{callID}/sessions[/{sessionID}]`: a call's sessions with rtcd's Go field names.
//! Errors are plain text, as rtcd's `http.Error` writes them; the plugin reads only the status.

use std::net::SocketAddr;

use axum::{
    Json,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use super::AppState;
use crate::call::{CallId, GroupId, SessionConfig};

/// rtcd's `SessionConfig` JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct SessionJson {
    #[serde(rename = "GroupID")]
    group_id: String,
    #[serde(rename = "CallID")]
    call_id: String,
    #[serde(rename = "UserID")]
    user_id: String,
    #[serde(rename = "SessionID")]
    session_id: String,
    props: Props,
}

/// Go encodes the props map with sorted keys.
#[derive(Debug, Serialize)]
struct Props {
    #[serde(rename = "av1Support")]
    av1_support: bool,
    #[serde(rename = "channelID")]
    channel_id: String,
    #[serde(rename = "dcSignaling")]
    dc_signaling: bool,
}

impl From<SessionConfig> for SessionJson {
    fn from(c: SessionConfig) -> Self {
        Self {
            group_id: c.group_id.to_string(),
            call_id: c.call_id.to_string(),
            user_id: c.user_id,
            session_id: c.session_id.to_string(),
            props: Props {
                av1_support: c.av1_support,
                channel_id: c.channel_id,
                dc_signaling: c.dc_signaling,
            },
        }
    }
}

fn text(status: StatusCode, msg: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{msg}\n"),
    )
        .into_response()
}

async fn client(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<GroupId, Response> {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.authenticate_header(auth, peer.ip()).await {
        Ok(p) if !p.client_id().is_empty() => Ok(GroupId::from(p.client_id().to_string())),
        Ok(_) => Err(text(StatusCode::UNAUTHORIZED, "unauthorized")),
        Err(e @ crate::auth::AuthError::RateLimited { .. }) => {
            Err(super::clients::auth_error(&e, StatusCode::UNAUTHORIZED))
        }
        Err(_) => Err(text(StatusCode::UNAUTHORIZED, "unauthorized")),
    }
}

/// What rtcd names as missing for a call without sessions: the group, when the client has no
/// call at all (rtcd forgets a group with its last call), else the call.
fn missing(state: &AppState, group: &GroupId) -> &'static str {
    if state.engine.has_group(group) {
        "call not found"
    } else {
        "group not found"
    }
}

async fn lookup(state: &AppState, group: GroupId, call: &str) -> Result<Vec<SessionConfig>, Response> {
    match state.engine.sessions(group, CallId::from(call.to_string())).await {
        Ok(v) => Ok(v),
        Err(e) => Err(text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

/// `GET /calls/{callID}/sessions`.
pub(super) async fn list(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(call_id): Path<String>,
) -> Response {
    let group = match client(&state, peer, &headers).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    match lookup(&state, group.clone(), &call_id).await {
        Ok(v) if v.is_empty() => text(
            StatusCode::NOT_FOUND,
            &format!("failed to get session configs: {}", missing(&state, &group)),
        ),
        Ok(v) => Json(v.into_iter().map(SessionJson::from).collect::<Vec<_>>()).into_response(),
        Err(r) => r,
    }
}

/// `GET /calls/{callID}/sessions/{sessionID}`.
pub(super) async fn one(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((call_id, session_id)): Path<(String, String)>,
) -> Response {
    let group = match client(&state, peer, &headers).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    match lookup(&state, group.clone(), &call_id).await {
        Ok(v) if v.is_empty() => text(
            StatusCode::NOT_FOUND,
            &format!("failed to get session config: {}", missing(&state, &group)),
        ),
        Ok(v) => match v.into_iter().find(|c| c.session_id.as_str() == session_id) {
            Some(c) => Json(SessionJson::from(c)).into_response(),
            None => text(
                StatusCode::NOT_FOUND,
                "failed to get session config: session not found",
            ),
        },
        Err(r) => r,
    }
}
