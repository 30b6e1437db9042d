//! `GET /ws`: the plugin's WebSocket. Basic or Bearer auth (a failed one gets rtcd's answer: a
//! 200 with an empty body, which the client reports as "bad handshake"), the `Origin` check,
//! `hello` with a fresh connection ID, pings every 10 s, a 20 s read deadline extended only by
//! pongs, 1 MiB frames, and `join`/`leave`/`reconnect`/`rtc` handed to the engine.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{
        ConnectInfo, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::{Notify, mpsc};

use super::{
    AppState,
    conns::{Bind, new_conn_id},
};
use crate::{
    call::{CallId, GroupId, SessionConfig, SessionId},
    engine::Command,
    lifecycle::Refusal,
    protocol::ws::ClientMessage,
};

/// rtcd's ping interval.
pub const PING_INTERVAL: Duration = Duration::from_secs(10);
/// The read deadline, extended only by pongs (2 × the ping interval).
pub const READ_DEADLINE: Duration = Duration::from_secs(20);
/// Largest accepted message.
pub const MAX_MESSAGE: usize = 1 << 20;
/// Each write must finish within this long.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The upgrade handler.
pub(super) async fn ws(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    let principal = match state.auth.authenticate_header(auth, peer.ip()).await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(remote = %peer, error = %e, "ws: authentication failed");
            // rtcd's handler returns without writing: Go answers 200 with no body.
            return StatusCode::OK.into_response();
        }
    };
    if let Some(origin) = headers.get(header::ORIGIN) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("");
        if !origin_allowed(origin.as_bytes(), host, &state.allowed_origins) {
            tracing::warn!(remote = %peer, origin = ?origin, "ws: origin not allowed");
            return (StatusCode::FORBIDDEN, "websocket: request origin not allowed\n").into_response();
        }
    }
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let client_id = principal.client_id().to_string();
    upgrade
        .max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(socket, state, client_id))
}

/// Listed origins, and the same-origin rule of gorilla's default check.
fn origin_allowed(origin: &[u8], host: &str, allowed: &[axum::http::HeaderValue]) -> bool {
    if allowed.iter().any(|a| a.as_bytes() == origin) {
        return true;
    }
    let origin = String::from_utf8_lossy(origin);
    let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
    !host.is_empty() && origin_host.eq_ignore_ascii_case(host)
}

async fn serve(socket: WebSocket, state: AppState, client_id: String) {
    let conn_id = new_conn_id();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(state.limits.ws_send_queue);
    let kill = Arc::new(Notify::new());
    state.conns.register(&conn_id, &client_id, tx, kill.clone());
    let gauge = state
        .metrics
        .ws_connections
        .get_or_create(&vec![("clientID", client_id.clone())])
        .clone();
    gauge.inc();
    tracing::info!(conn = %conn_id, client = %client_id, "mattermost client connected");
    state.conns.send_to_conn(
        &conn_id,
        &ClientMessage::Hello {
            client_id: client_id.clone(),
            conn_id: conn_id.clone(),
        },
    );

    let (mut sink, mut stream) = socket.split();
    // The reader tells the writer how to close (e.g. 1009 for an oversized message).
    let (close_tx, mut close_rx) = tokio::sync::oneshot::channel::<CloseFrame>();
    let writer = async {
        let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + PING_INTERVAL, PING_INTERVAL);
        let mut close = None;
        loop {
            let (msg, queued) = tokio::select! {
                frame = rx.recv() => match frame {
                    Some(f) => (Message::Binary(Bytes::from(f)), true),
                    None => break,
                },
                _ = ping.tick() => (Message::Ping(Bytes::new()), false),
                () = kill.notified() => break,
                frame = &mut close_rx => {
                    close = frame.ok();
                    break;
                }
            };
            let sent = matches!(
                tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)).await,
                Ok(Ok(()))
            );
            if queued {
                state.conns.frames_done(1);
            }
            if !sent {
                break;
            }
        }
        // What is still queued will never be written.
        rx.close();
        let mut dropped = 0;
        while rx.try_recv().is_ok() {
            dropped += 1;
        }
        state.conns.frames_done(dropped);
        if let Some(frame) = close {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), sink.send(Message::Close(Some(frame)))).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    };
    let reader = async {
        let mut deadline = Instant::now() + READ_DEADLINE;
        // Messages refused on this connection, to bound their warnings.
        let mut bad = 0u32;
        loop {
            let next = tokio::time::timeout_at(deadline.into(), stream.next()).await;
            let msg = match next {
                Err(_) => {
                    tracing::info!(conn = %conn_id, "ws: read deadline passed without a pong");
                    return None;
                }
                Ok(None) => return None,
                Ok(Some(Err(e))) => {
                    // A reset or a cut connection: the plugin reconnects on its own.
                    tracing::info!(conn = %conn_id, error = %e, "ws: read failed");
                    let text = e.to_string();
                    let too_big = text.contains("too long") || text.contains("Space limit");
                    if too_big {
                        state.metrics.limit_refused("ws_message_size");
                    }
                    return too_big.then(|| CloseFrame {
                        code: 1009,
                        reason: "read limit exceeded".into(),
                    });
                }
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Pong(_) => deadline = Instant::now() + READ_DEADLINE,
                Message::Binary(b) => frame(&state, &client_id, &conn_id, &b, &mut bad),
                Message::Text(_) => tracing::warn!(conn = %conn_id, "ws: unexpected text message"),
                Message::Close(_) => return None,
                Message::Ping(_) => {}
            }
        }
    };
    tokio::pin!(writer);
    tokio::select! {
        () = &mut writer => {}
        close = reader => {
            if let Some(frame) = close {
                let _ = close_tx.send(frame);
            } else {
                drop(close_tx);
            }
            let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
        }
    }
    state.conns.unregister(&conn_id);
    gauge.dec();
    tracing::info!(conn = %conn_id, client = %client_id, "mattermost client disconnected");
}

/// One binary frame from the plugin.
/// Warnings logged per connection for refused messages; after that, debug (a client that
/// sends garbage in a loop must not flood the log).
const BAD_MESSAGE_WARNINGS: u32 = 20;

fn frame(state: &AppState, client_id: &str, conn_id: &str, bytes: &[u8], bad: &mut u32) {
    let mut refused = |e: &dyn std::fmt::Display, what: &str| {
        *bad = bad.saturating_add(1);
        if *bad <= BAD_MESSAGE_WARNINGS {
            tracing::warn!(conn = conn_id, client = client_id, error = %e, "{what}");
            if *bad == BAD_MESSAGE_WARNINGS {
                tracing::warn!(
                    conn = conn_id,
                    client = client_id,
                    "further refused messages on this connection are logged at debug level"
                );
            }
        } else {
            tracing::debug!(conn = conn_id, client = client_id, error = %e, "{what}");
        }
    };
    let msg = match ClientMessage::decode(bytes) {
        Ok(m) => m,
        Err(e) => {
            refused(&e, "failed to unpack data");
            return;
        }
    };
    state
        .metrics
        .ws_messages
        .get_or_create(&vec![
            ("clientID", client_id.to_string()),
            ("type", msg.metric_type().to_string()),
            ("direction", "in".into()),
        ])
        .inc();
    let group = GroupId::from(client_id.to_string());
    let result = match msg {
        ClientMessage::Join(j) => {
            let cfg = SessionConfig {
                group_id: group,
                call_id: CallId::from(j.call_id),
                user_id: j.user_id,
                session_id: SessionId::from(j.session_id),
                channel_id: j.channel_id,
                av1_support: j.av1_support,
                dc_signaling: j.dc_signaling,
            };
            join(state, conn_id, cfg)
        }
        ClientMessage::Leave { session_id } if !session_id.is_empty() => state
            .engine
            .send(Command::Leave {
                group,
                session: SessionId::from(session_id),
            })
            .map_err(|e| e.to_string()),
        ClientMessage::Reconnect { session_id } if !session_id.is_empty() => {
            if state.conns.rebind(&session_id, client_id, conn_id) {
                Ok(())
            } else {
                Err(format!("reconnect: session {session_id} not found"))
            }
        }
        ClientMessage::Leave { .. } | ClientMessage::Reconnect { .. } => {
            Err("missing sessionID in client message".into())
        }
        ClientMessage::Rtc(msg) => state
            .engine
            .send(Command::Rtc { group, msg })
            .map_err(|e| e.to_string()),
        other => Err(format!("unexpected client message type: {}", other.type_name())),
    };
    if let Err(e) = result {
        refused(&e, "failed to handle message");
    }
}

fn join(state: &AppState, conn_id: &str, cfg: SessionConfig) -> Result<(), String> {
    cfg.validate()
        .map_err(|e| format!("failed to initialize rtc session: invalid session config: {e}"))?;
    let sid = cfg.session_id.to_string();
    let max = state.limits.sessions_per_client;
    let bound = state.conns.bind(&sid, &cfg.group_id.0, conn_id, max);
    if bound == Bind::OverLimit {
        // The plugin hears `close` for the session, as for any refused join.
        state.metrics.limit_refused("sessions_per_client");
        tracing::warn!(session = %sid, client = %cfg.group_id.0, max, "join refused: the client holds limits.sessions_per_client sessions");
        state
            .conns
            .send_to_conn(conn_id, &ClientMessage::Close { session_id: sid });
        return Ok(());
    }
    let refuse = |limit: &'static str| {
        // Full: rtcd's `close`, as for any refused join; the plugin's next call goes elsewhere.
        state.metrics.limit_refused(limit);
        tracing::warn!(session = %sid, limit, "join refused: the instance is at limits.{limit}");
        state.conns.deliver_close(&sid);
    };
    if bound == Bind::New
        && let Some(limit) = state.load.soft_limit_reached()
    {
        refuse(limit);
        return Ok(());
    }
    let guard = if crate::lifecycle::is_canary_client(&cfg.group_id.0) {
        // A connectivity canary: a real call, but not a live session (nothing waits for it,
        // placement does not count it); refused like any join while draining.
        if state.lifecycle.is_draining() {
            state.conns.deliver_close(&sid);
            return Ok(());
        }
        None
    } else {
        let cap = if bound == Bind::New {
            state.load.capacity().sessions
        } else {
            None
        };
        match state.lifecycle.try_session_within(cap) {
            Ok(g) => Some(g),
            Err(Refusal::Full) => {
                refuse("max_sessions");
                return Ok(());
            }
            Err(Refusal::Draining) => {
                // Draining: tell the plugin at once so it can place the user elsewhere.
                tracing::info!(session = %sid, "draining: join refused");
                state.conns.deliver_close(&sid);
                return Ok(());
            }
        }
    };
    if guard.is_some() {
        state.load.admitted(std::time::Instant::now());
    }
    let sent = state.engine.send(Command::Join { cfg, guard });
    if sent.is_err() && bound == Bind::New {
        state.conns.unbind(&sid);
    }
    sent.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let allowed = [axum::http::HeaderValue::from_static("https://mm.example.com")];
        assert!(origin_allowed(b"https://mm.example.com", "rtcd:8045", &allowed));
        assert!(
            origin_allowed(b"http://rtcd:8045", "rtcd:8045", &[]),
            "same origin"
        );
        assert!(!origin_allowed(
            b"https://evil.example.com",
            "rtcd:8045",
            &allowed
        ));
        assert!(!origin_allowed(b"null", "", &[]));
    }
}
