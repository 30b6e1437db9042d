//! The end-user connectivity test (`[api] enable_connectivity_test`, off by default): `GET /test`
//! serves a static page; its script offers a WebRTC connection per transport to
//! `POST /test/offer?transport=udp|tcp`, which runs it as a real one-person session on the
//! engine, answers with only that transport's candidates, and ends the session after
//! [`TEST_SECONDS`]. The page then shows plainly whether UDP and TCP reach this instance.
//! At most [`MAX_TESTS`] run at once; each is an ordinary session of the group [`GROUP`] (a
//! client ID no plugin can authenticate as: it holds a colon).

use std::{sync::Arc, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{Query, State},
    http::{StatusCode, header},
    response::{Html, IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, Semaphore, mpsc};

use super::{ApiError, AppState, conns::new_conn_id};
use crate::{
    call::{CallId, GroupId, SessionConfig, SessionId},
    engine::Command,
    protocol::{
        rtc::{RtcMessage, RtcType, SdpJson},
        ws::ClientMessage,
    },
};

/// The group (client ID) the test sessions belong to.
pub const GROUP: &str = "rtcd:connectivity-test";
/// Tests running at once, at most.
pub const MAX_TESTS: usize = 16;
/// How long a test session lives.
pub const TEST_SECONDS: u64 = 20;
/// Longest offer accepted.
const MAX_OFFER: usize = 64 * 1024;
/// How long the engine may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// The page.
const PAGE: &str = include_str!("connectivity.html");

/// The running tests.
#[derive(Debug)]
pub struct Tests {
    slots: Arc<Semaphore>,
}

impl Default for Tests {
    fn default() -> Self {
        Self {
            slots: Arc::new(Semaphore::new(MAX_TESTS)),
        }
    }
}

/// `GET /test`.
pub(super) async fn page() -> Response {
    (
        [
            (header::CACHE_CONTROL, "no-store"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
            ),
        ],
        Html(PAGE),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct TransportQuery {
    transport: Option<String>,
}

#[derive(Debug, Deserialize)]
struct OfferBody {
    sdp: String,
}

/// `POST /test/offer` answer.
#[derive(Debug, Serialize)]
pub(super) struct AnswerBody {
    sdp: String,
    /// Seconds the session stays up.
    seconds: u64,
}

/// Keeps only the `a=candidate` lines of `transport` (`udp` or `tcp`).
pub fn keep_candidates(sdp: &str, transport: &str) -> String {
    let mut out = String::with_capacity(sdp.len());
    for line in sdp.split_inclusive('\n') {
        let t = line.trim_end();
        if let Some(c) = t.strip_prefix("a=candidate:") {
            // foundation component transport priority address port typ …
            let proto = c.split_whitespace().nth(2).unwrap_or_default();
            if !proto.eq_ignore_ascii_case(transport) {
                continue;
            }
        }
        out.push_str(line);
    }
    out
}

/// `POST /test/offer?transport=udp|tcp` with `{"sdp": "<offer>"}`.
pub(super) async fn offer(
    State(state): State<AppState>,
    Query(q): Query<TransportQuery>,
    body: Bytes,
) -> Result<Json<AnswerBody>, ApiError> {
    let tests = state.connectivity.clone().ok_or_else(ApiError::not_found)?;
    let transport = match q.transport.as_deref().unwrap_or("udp") {
        t @ ("udp" | "tcp") => t,
        other => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("transport {other:?}: expected udp or tcp"),
            ));
        }
    };
    if body.len() > MAX_OFFER {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("offer: more than {MAX_OFFER} bytes"),
        ));
    }
    let offer: OfferBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("body: expected {{\"sdp\": \"<SDP offer>\"}}: {e}"),
        )
    })?;
    if !offer.sdp.starts_with("v=0") {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "sdp: not an SDP offer (must start with v=0)",
        ));
    }
    let permit = tests.slots.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_TESTS} connectivity tests are running: try again in {TEST_SECONDS} s"),
        )
    })?;

    let conn_id = new_conn_id();
    let (tx, mut rx) = mpsc::channel(64);
    state.conns.register(&conn_id, GROUP, tx, Arc::new(Notify::new()));
    let sid = format!("connectivity-test-{conn_id}");
    let group = GroupId::from(GROUP.to_string());
    let cfg = SessionConfig {
        group_id: group.clone(),
        call_id: CallId::from(sid.clone()),
        user_id: "connectivity-test".into(),
        session_id: SessionId::from(sid.clone()),
        channel_id: sid.clone(),
        av1_support: false,
        dc_signaling: false,
    };
    state.conns.bind(&sid, GROUP, &conn_id, usize::MAX);
    let finish = {
        let state = state.clone();
        let (sid, conn_id, group) = (sid.clone(), conn_id.clone(), group.clone());
        move || {
            let _ = state.engine.send(Command::Leave {
                group,
                session: SessionId::from(sid.clone()),
            });
            state.conns.unbind(&sid);
            state.conns.unregister(&conn_id);
        }
    };
    let data = serde_json::json!({"type": "offer", "sdp": offer.sdp}).to_string();
    let sent = state
        .engine
        .send(Command::Join { cfg, guard: None })
        .and_then(|()| {
            state.engine.send(Command::Rtc {
                group: group.clone(),
                msg: RtcMessage {
                    group_id: GROUP.into(),
                    user_id: "connectivity-test".into(),
                    session_id: sid.clone(),
                    call_id: sid.clone(),
                    msg_type: RtcType::Sdp as i64,
                    data: data.into_bytes(),
                },
            })
        });
    if sent.is_err() {
        finish();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the media engine is busy",
        ));
    }
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, async {
        while let Some(frame) = rx.recv().await {
            state.conns.frames_done(1);
            match ClientMessage::decode(&frame) {
                Ok(ClientMessage::Rtc(m)) if m.session_id == sid && m.msg_type == RtcType::Sdp as i64 => {
                    if let Ok(s) = serde_json::from_slice::<SdpJson>(&m.data)
                        && s.kind == "answer"
                    {
                        return Some(s.sdp);
                    }
                }
                Ok(ClientMessage::Close { .. }) => return None,
                _ => {}
            }
        }
        None
    })
    .await;
    let sdp = match answer {
        Ok(Some(sdp)) => sdp,
        Ok(None) => {
            finish();
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "offer refused by the media engine",
            ));
        }
        Err(_) => {
            finish();
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "the media engine did not answer in time",
            ));
        }
    };
    // The session lives on for the browser's checks, its messages drained, then ends.
    let conns = state.conns.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let _ = tokio::time::timeout(Duration::from_secs(TEST_SECONDS), async {
            while rx.recv().await.is_some() {
                conns.frames_done(1);
            }
        })
        .await;
        finish();
    });
    Ok(Json(AnswerBody {
        sdp: keep_candidates(&sdp, transport),
        seconds: TEST_SECONDS,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_asked_transport_s_candidates_stay() {
        let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=candidate:1 1 udp 2130706431 192.0.2.1 8443 typ host\r\na=candidate:2 1 tcp 1518280447 192.0.2.1 8443 typ host tcptype passive\r\na=mid:0\r\n";
        let udp = keep_candidates(sdp, "udp");
        assert!(udp.contains(" udp ") && !udp.contains(" tcp "), "{udp}");
        assert!(udp.ends_with("a=mid:0\r\n"));
        let tcp = keep_candidates(sdp, "tcp");
        assert!(tcp.contains("tcptype passive") && !tcp.contains(" udp "), "{tcp}");
    }

    #[test]
    fn the_page_asks_for_both_transports() {
        assert!(PAGE.contains("/test/offer?transport="));
        assert!(PAGE.contains("udp") && PAGE.contains("tcp"));
    }
}
