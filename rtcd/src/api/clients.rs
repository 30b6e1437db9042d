//! `POST /register`, `/unregister`, `/login` with rtcd's status codes and JSON bodies
//! (`service/auth.go`): replies carry `"code"` as a string, plus `"error"` on failure.

use std::{collections::HashMap, net::SocketAddr};

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{ApiError, AppState};
use crate::auth::{AuthError, Principal};

fn reply(status: StatusCode, mut body: HashMap<&'static str, String>) -> Response {
    body.insert("code", status.as_u16().to_string());
    // Go encodes a map with sorted keys.
    let sorted: std::collections::BTreeMap<_, _> = body.into_iter().collect();
    (status, Json(sorted)).into_response()
}

/// An [`AuthError`] as rtcd answers it (with Retry-After for rate limiting).
pub(super) fn auth_error(e: &AuthError, status_for_bad_credentials: StatusCode) -> Response {
    let status = match e {
        AuthError::BadHeader | AuthError::Unauthorized => status_for_bad_credentials,
        AuthError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        AuthError::Registration(_) | AuthError::NotFound | AuthError::ClientIdTooLong => {
            StatusCode::BAD_REQUEST
        }
        AuthError::Internal(_) => return ApiError::internal(e).into_response(),
    };
    let mut resp = ApiError::new(status, e.to_string()).into_response();
    if let AuthError::RateLimited { retry_after } = e
        && let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn credentials(body: &[u8]) -> Result<HashMap<String, String>, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.to_string()))
}

fn auth_header(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// `POST /register`: self-registration, or an authenticated admin.
pub(super) async fn register(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !state.security.allow_self_registration {
        match state
            .auth
            .authenticate_header(auth_header(&headers), peer.ip())
            .await
        {
            Ok(Principal::Admin) => {}
            // rtcd lets any registered client register others; only the admin may here.
            Ok(Principal::Client(_)) => {
                return ApiError::new(
                    StatusCode::FORBIDDEN,
                    "registration failed: admin credentials required",
                )
                .into_response();
            }
            Err(e) => return auth_error(&e, StatusCode::UNAUTHORIZED),
        }
    }
    let creds = match credentials(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let id = creds.get("clientID").cloned().unwrap_or_default();
    let key = creds.get("authKey").cloned().unwrap_or_default();
    match state.auth.register(&id, &key).await {
        Ok(()) => {
            tracing::info!(client = %id, "registered new mattermost client");
            reply(StatusCode::CREATED, HashMap::from([("clientID", id)]))
        }
        Err(e) => auth_error(&e, StatusCode::BAD_REQUEST),
    }
}

/// `POST /unregister`: the admin, or a client removing itself.
pub(super) async fn unregister(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !state.security.enable_admin && !state.security.allow_self_registration {
        return ApiError::new(StatusCode::FORBIDDEN, "unregister not enabled").into_response();
    }
    let principal = match state
        .auth
        .authenticate_header(auth_header(&headers), peer.ip())
        .await
    {
        Ok(p) => p,
        Err(e) => return auth_error(&e, StatusCode::UNAUTHORIZED),
    };
    let creds = match credentials(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let id = creds.get("clientID").cloned().unwrap_or_default();
    if id.is_empty() {
        return ApiError::new(StatusCode::BAD_REQUEST, "client id should not be empty").into_response();
    }
    if let Principal::Client(authed) = &principal
        && *authed != id
    {
        return ApiError::new(StatusCode::FORBIDDEN, "client id not valid").into_response();
    }
    match state.auth.unregister(&id).await {
        Ok(()) => {
            tracing::info!(client = %id, "unregistered mattermost client");
            reply(StatusCode::OK, HashMap::new())
        }
        Err(e) => auth_error(&e, StatusCode::BAD_REQUEST),
    }
}

/// `POST /login`: credentials in the body, a bearer token back.
pub(super) async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> Response {
    let creds = match credentials(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    let id = creds.get("clientID").cloned().unwrap_or_default();
    let key = creds.get("authKey").cloned().unwrap_or_default();
    match state.auth.login(&id, &key, peer.ip()).await {
        Ok(token) => {
            tracing::info!(client = %id, "logged in mattermost client");
            reply(StatusCode::OK, HashMap::from([("bearerToken", token)]))
        }
        Err(e @ AuthError::RateLimited { .. }) => auth_error(&e, StatusCode::BAD_REQUEST),
        Err(AuthError::Internal(e)) => ApiError::internal(e).into_response(),
        Err(e) => ApiError::new(StatusCode::BAD_REQUEST, format!("login failed: {e}")).into_response(),
    }
}
