//! Polls one rtcd instance's `/api/v1/health` and `/system` over plain HTTP on its pod IP, with
//! a short timeout, and caches the answer so status writes do not trigger a poll storm; turns an
//! instance's drain on and off (`PUT /api/v1/drain` with the admin key).

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use serde::Deserialize;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// How long one HTTP exchange may take.
const TIMEOUT: Duration = Duration::from_secs(2);
/// Largest response read.
const MAX_BODY: usize = 64 * 1024;

/// What one poll saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// `/api/v1/health` answered 200.
    pub ok: bool,
    /// It answered 503 "draining".
    pub draining: bool,
    /// Live sessions, when reported.
    pub sessions: Option<u64>,
    /// `/system` cpu_load.
    pub cpu_load: Option<f64>,
    /// Why the poll failed, if it did.
    pub error: Option<String>,
}

#[derive(Deserialize)]
struct HealthBody {
    status: String,
    #[serde(default)]
    sessions: Option<u64>,
}

#[derive(Deserialize)]
struct SystemBody {
    cpu_load: f64,
}

/// Polls `addr`.
pub async fn poll(addr: SocketAddr) -> Health {
    let mut h = Health {
        ok: false,
        draining: false,
        sessions: None,
        cpu_load: None,
        error: None,
    };
    match get(addr, "/api/v1/health").await {
        Ok((code, body)) => {
            let parsed: Option<HealthBody> = serde_json::from_slice(&body).ok();
            h.ok = code == 200;
            h.draining = code == 503 || parsed.as_ref().is_some_and(|b| b.status == "draining");
            h.sessions = parsed.and_then(|b| b.sessions);
            if !h.ok && !h.draining {
                h.error = Some(format!("/api/v1/health answered {code}"));
            }
        }
        Err(e) => {
            h.error = Some(format!("/api/v1/health: {e}"));
            return h;
        }
    }
    if let Ok((200, body)) = get(addr, "/system").await {
        h.cpu_load = serde_json::from_slice::<SystemBody>(&body)
            .ok()
            .map(|s| (s.cpu_load * 100.0).round() / 100.0);
    }
    h
}

/// Turns the drain of the rtcd at `addr` on or off through its API, with the admin key.
pub async fn set_drain(addr: SocketAddr, admin_key: &str, on: bool) -> Result<(), String> {
    use base64::Engine as _;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("admin:{admin_key}"));
    let body = format!("{{\"draining\":{on}}}");
    let headers = format!(
        "Authorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    match exchange(addr, "PUT", "/api/v1/drain", &headers, &body).await? {
        (200, _) => Ok(()),
        (code, b) => Err(format!(
            "PUT /api/v1/drain answered {code}: {}",
            String::from_utf8_lossy(&b).chars().take(200).collect::<String>()
        )),
    }
}

/// One `GET path` with `Connection: close`: (status code, body).
async fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>), String> {
    exchange(addr, "GET", path, "", "").await
}

/// One request with `Connection: close`: (status code, body).
async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Result<(u16, Vec<u8>), String> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nUser-Agent: rtcd-operator\r\n{headers}\r\n{body}"
        );
        s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.take(MAX_BODY as u64)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<_, String>(buf)
    };
    let buf = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {}s", TIMEOUT.as_secs()))??;
    parse_response(&buf)
}

fn parse_response(buf: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("malformed HTTP response")?;
    let head = std::str::from_utf8(&buf[..head_end]).map_err(|_| "malformed HTTP response")?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or("malformed HTTP status line")?;
    let mut body = buf[head_end + 4..].to_vec();
    if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or("malformed chunked body")?;
    }
    Ok((code, body))
}

fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = b.windows(2).position(|w| w == b"\r\n")?;
        let size = usize::from_str_radix(std::str::from_utf8(&b[..eol]).ok()?.trim(), 16).ok()?;
        b = &b[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(b.get(..size)?);
        b = b.get(size + 2..)?;
    }
}

/// Poll results per pod UID, reused for `max_age`.
#[derive(Debug, Default)]
pub struct Cache {
    entries: Mutex<HashMap<String, (Instant, Health)>>,
}

impl Cache {
    /// The cached result for `uid` if younger than `max_age`, else a fresh poll.
    pub async fn get_or_poll(&self, uid: &str, addr: SocketAddr, max_age: Duration) -> Health {
        let cached = self.entries.lock().ok().and_then(|m| {
            m.get(uid)
                .filter(|(at, _)| at.elapsed() < max_age)
                .map(|(_, h)| h.clone())
        });
        if let Some(h) = cached {
            return h;
        }
        let h = poll(addr).await;
        if let Ok(mut m) = self.entries.lock() {
            m.insert(uid.to_string(), (Instant::now(), h.clone()));
        }
        h
    }

    /// Drops the cached answer of the pod `uid` (its state just changed).
    pub fn forget(&self, uid: Option<&str>) {
        if let (Some(uid), Ok(mut m)) = (uid, self.entries.lock()) {
            m.remove(uid);
        }
    }

    /// Forgets pods that no longer exist.
    pub fn retain(&self, live: &std::collections::HashSet<String>) {
        if let Ok(mut m) = self.entries.lock() {
            m.retain(|k, _| live.contains(k));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked() {
        let r = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 20\r\n\r\n{\"status\":\"draining\"}";
        let (code, body) = parse_response(r).expect("parse");
        assert_eq!(code, 503);
        assert_eq!(body, b"{\"status\":\"draining\"}");
        let c = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_response(c).expect("chunked").1, b"{\"a\":1}");
        assert!(parse_response(b"garbage").is_err());
    }

    #[tokio::test]
    async fn polls_a_real_listener() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        tokio::spawn(async move {
            for _ in 0..2 {
                let (mut s, _) = l.accept().await.expect("accept");
                let mut buf = [0u8; 1024];
                let n = s.read(&mut buf).await.expect("read");
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let body = if req.starts_with("GET /api/v1/health") {
                    r#"{"status":"ok","sessions":3}"#
                } else {
                    r#"{"cpu_load":0.123}"#
                };
                let resp = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                s.write_all(resp.as_bytes()).await.expect("write");
            }
        });
        let h = poll(addr).await;
        assert!(h.ok && !h.draining, "{h:?}");
        assert_eq!(h.sessions, Some(3));
        assert_eq!(h.cpu_load, Some(0.12));
    }
}
