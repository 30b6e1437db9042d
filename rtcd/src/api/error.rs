//! HTTP error replies in rtcd's shape: JSON `{"code": "<status>", "error": "<message>"}` with
//! the code as a string (`service/audit.go`). Client mistakes are not logged; internal errors
//! are logged and reach the client only as a bare 500.

use axum::{
    Json,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::Serialize;

/// An error reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    code: String,
    error: &'a str,
}

impl ApiError {
    /// A reply with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 404, as Go's `http.NotFound` words it (rtcd also answers a wrong method this way).
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "404 page not found")
    }

    /// A 500 whose cause is logged here and not shown to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Body {
            code: self.status.as_u16().to_string(),
            error: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// The router's fallback for unknown paths and wrong methods.
pub(super) async fn not_found() -> ApiError {
    ApiError::not_found()
}
