//! The plugin's side of rtcd's control API: `/register`, the authenticated `/ws` connection,
//! and the routing of its messages to the participants by session ID.

use std::{cell::RefCell, collections::HashMap, rc::Rc, time::Duration};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use rtcd::protocol::{rtc::RtcMessage, ws::ClientMessage};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::{self, Message, client::IntoClientRequest as _, http};

/// A message for one participant.
#[derive(Debug)]
pub enum Inbound {
    /// Signaling (SDP, ICE).
    Rtc(RtcMessage),
    /// rtcd ended the session.
    Close,
}

/// Where messages for a session go.
pub type Routes = Rc<RefCell<HashMap<String, mpsc::UnboundedSender<Inbound>>>>;

/// Host and port of an `http://` URL.
pub(crate) fn authority(url: &str) -> Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("--url {url:?}: only http:// URLs are supported by the load generator"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() {
        bail!("--url {url:?} has no host");
    }
    Ok(host.to_string())
}

fn basic(user: &str, key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{key}"))
    )
}

/// `POST /register` as the plugin does when its first connect is refused.
pub async fn register(url: &str, client_id: &str, auth_key: &str, admin_key: Option<&str>) -> Result<()> {
    let host = authority(url)?;
    let body = serde_json::json!({"clientID": client_id, "authKey": auth_key}).to_string();
    let auth = admin_key
        .map(|k| format!("Authorization: {}\r\n", basic("admin", k)))
        .unwrap_or_default();
    let req = format!(
        "POST /register HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{auth}Connection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, body) = exchange(&host, &req, Duration::from_secs(10), "POST /register").await?;
    if status != "201" {
        bail!("POST /register answered {status}: {body}");
    }
    Ok(())
}

/// One HTTP/1.1 request on a fresh connection to `host` (the request says `Connection: close`),
/// answered within `limit`: the status code and the body. `what` (`POST /register`) names it in
/// errors.
pub(crate) async fn exchange(
    host: &str,
    request: &str,
    limit: Duration,
    what: &str,
) -> Result<(String, String)> {
    let io = async {
        let mut s = TcpStream::connect(host)
            .await
            .with_context(|| format!("connecting to {host}"))?;
        s.write_all(request.as_bytes())
            .await
            .with_context(|| format!("{what} to {host}"))?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)
            .await
            .with_context(|| format!("{what} to {host}"))?;
        Ok::<_, anyhow::Error>(raw)
    };
    let raw = tokio::time::timeout(limit, io)
        .await
        .map_err(|_| anyhow!("{what} to {host} timed out after {} s", limit.as_secs()))??;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap_or_default().to_string();
    Ok((status, body.trim().to_string()))
}

/// The plugin's WebSocket.
pub type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn connect_once(url: &str, client_id: &str, auth_key: &str) -> Result<Ws, tungstenite::Error> {
    let host = authority(url)
        .map_err(|e| tungstenite::Error::Url(tungstenite::error::UrlError::UnableToConnect(e.to_string())))?;
    let mut req = format!("ws://{host}/ws").into_client_request()?;
    let value = http::HeaderValue::from_str(&basic(client_id, auth_key))
        .map_err(|e| tungstenite::Error::HttpFormat(e.into()))?;
    req.headers_mut().insert(http::header::AUTHORIZATION, value);
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

/// Connects `/ws` with Basic credentials; when the handshake is refused (rtcd answers an
/// unknown client with an empty 200, "bad handshake" to the plugin) registers the client and
/// connects again, as the plugin does.
pub async fn connect(url: &str, client_id: &str, auth_key: &str, admin_key: Option<&str>) -> Result<Ws> {
    match connect_once(url, client_id, auth_key).await {
        Ok(ws) => Ok(ws),
        Err(tungstenite::Error::Http(_)) => {
            register(url, client_id, auth_key, admin_key).await?;
            connect_once(url, client_id, auth_key)
                .await
                .map_err(|e| anyhow!("connecting {url}/ws after registering {client_id:?}: {e}"))
        }
        Err(e) => Err(anyhow!("connecting {url}/ws: {e}")),
    }
}

/// Counters the connection keeps.
#[derive(Debug, Default)]
pub struct WsCounters {
    /// VAD messages.
    pub vad: u64,
    /// Frames that did not decode.
    pub bad_frames: u64,
}

/// Runs the connection: sends what arrives on `out`, routes what rtcd sends. Returns when
/// either side closes.
pub async fn pump(
    ws: Ws,
    mut out: mpsc::UnboundedReceiver<ClientMessage>,
    routes: Routes,
    counters: Rc<RefCell<WsCounters>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let (mut tx, mut rx) = ws.split();
    loop {
        tokio::select! {
            _ = shutdown.changed() => {
                // What is queued (the leaves) goes first, then a clean close.
                while let Ok(m) = out.try_recv() {
                    tx.send(Message::Binary(m.encode().into())).await.context("writing to /ws")?;
                }
                let _ = tx.send(Message::Close(None)).await;
                return Ok(());
            }
            m = out.recv() => {
                let Some(m) = m else {
                    let _ = tx.send(Message::Close(None)).await;
                    return Ok(());
                };
                tx.send(Message::Binary(m.encode().into())).await.context("writing to /ws")?;
            }
            f = rx.next() => {
                let Some(f) = f else { bail!("rtcd closed /ws") };
                let data = match f.context("reading /ws")? {
                    Message::Binary(b) => b,
                    Message::Close(c) => bail!("rtcd closed /ws: {c:?}"),
                    _ => continue,
                };
                let msg = match ClientMessage::decode(&data) {
                    Ok(m) => m,
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable /ws frame");
                        counters.borrow_mut().bad_frames += 1;
                        continue;
                    }
                };
                let (sid, inbound) = match msg {
                    ClientMessage::Rtc(m) => (m.session_id.clone(), Inbound::Rtc(m)),
                    ClientMessage::Close { session_id } => (session_id, Inbound::Close),
                    ClientMessage::Vad(_) => {
                        counters.borrow_mut().vad += 1;
                        continue;
                    }
                    other => {
                        tracing::debug!(kind = other.type_name(), "ws message");
                        continue;
                    }
                };
                if let Some(r) = routes.borrow().get(&sid) {
                    let _ = r.send(inbound);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_what_is_wrong() {
        assert_eq!(authority("http://127.0.0.1:8045").unwrap(), "127.0.0.1:8045");
        assert_eq!(authority("http://h:1/x").unwrap(), "h:1");
        assert!(
            authority("https://h")
                .unwrap_err()
                .to_string()
                .contains("only http://")
        );
        assert!(authority("http:///").unwrap_err().to_string().contains("no host"));
    }
}
