//! `rtcd --wait-idle`: polls the local rtcd's `/api/v1/health` until it reports no live
//! sessions or stops answering. Kubernetes runs it as the preStop hook, so a pod leaving the
//! fleet keeps serving its calls until they end (bounded by the grace period).

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream, ToSocketAddrs},
    process::ExitCode,
    time::{Duration, Instant},
};

use crate::config::{Config, parse_listen_address};

/// Poll period.
const PERIOD: Duration = Duration::from_secs(2);

/// What one poll saw.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// rtcd answered with this many sessions.
    Sessions(u64),
    /// Nothing listens: rtcd is gone, so nothing is left to wait for.
    Gone,
    /// An answer we cannot read; try again.
    Unclear(String),
}

/// Waits; exit 0 once idle or gone, 1 on timeout or when TLS makes the API unreachable.
pub fn wait_idle(config: &Config, timeout: Option<Duration>) -> ExitCode {
    if config.api.http.tls.enable {
        eprintln!("rtcd: --wait-idle speaks plain HTTP; the API uses TLS, so it cannot poll it");
        return ExitCode::from(crate::cli::EXIT_RUNTIME);
    }
    let addr = match local_api(&config.api.http.listen_address) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("rtcd: --wait-idle: {e}");
            return ExitCode::from(crate::cli::EXIT_CONFIG);
        }
    };
    let started = Instant::now();
    let mut last = None;
    loop {
        match poll(addr) {
            Seen::Sessions(0) => {
                println!("rtcd: no live sessions; done waiting");
                return ExitCode::SUCCESS;
            }
            Seen::Gone => {
                println!("rtcd: {addr} does not answer; nothing to wait for");
                return ExitCode::SUCCESS;
            }
            Seen::Sessions(n) => {
                if last != Some(n) {
                    println!("rtcd: waiting for {n} live session(s) to end");
                    last = Some(n);
                }
            }
            Seen::Unclear(why) => eprintln!("rtcd: --wait-idle: {why}"),
        }
        if timeout.is_some_and(|t| started.elapsed() >= t) {
            eprintln!(
                "rtcd: --wait-idle: sessions still live after {}s",
                started.elapsed().as_secs()
            );
            return ExitCode::from(crate::cli::EXIT_RUNTIME);
        }
        std::thread::sleep(PERIOD);
    }
}

/// The address to reach the API from inside the pod: the listen address, with an unspecified
/// host replaced by loopback.
fn local_api(listen: &str) -> Result<SocketAddr, String> {
    let (host, port) = parse_listen_address(listen)?;
    let host = match host.as_str() {
        "" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" => "[::1]".to_string(),
        h if h.contains(':') => format!("[{h}]"),
        h => h.to_string(),
    };
    format!("{host}:{port}")
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))
}

fn poll(addr: SocketAddr) -> Seen {
    let mut s = match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Seen::Gone,
        Err(e) => return Seen::Unclear(format!("connect {addr}: {e}")),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /api/v1/health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()) {
        return Seen::Unclear(format!("write: {e}"));
    }
    let mut buf = Vec::new();
    if let Err(e) = s.take(64 * 1024).read_to_end(&mut buf) {
        return Seen::Unclear(format!("read: {e}"));
    }
    sessions_in(&buf)
}

fn sessions_in(response: &[u8]) -> Seen {
    let text = String::from_utf8_lossy(response);
    let Some((_, body)) = text.split_once("\r\n\r\n") else {
        return Seen::Unclear("malformed HTTP response".into());
    };
    match serde_json::from_str::<serde_json::Value>(body.trim()) {
        Ok(v) => match v.get("sessions").and_then(serde_json::Value::as_u64) {
            Some(n) => Seen::Sessions(n),
            None => Seen::Unclear(format!("no session count in {body:?}")),
        },
        Err(_) => Seen::Unclear(format!("not JSON: {body:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_count() {
        let r = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\r\n{\"status\":\"draining\",\"sessions\":2}";
        assert_eq!(sessions_in(r), Seen::Sessions(2));
        assert!(matches!(
            sessions_in(b"HTTP/1.1 200 OK\r\n\r\n{}"),
            Seen::Unclear(_)
        ));
        assert!(matches!(sessions_in(b"junk"), Seen::Unclear(_)));
    }

    #[test]
    fn listen_address_to_local() {
        assert_eq!(
            local_api(":8045").expect("a"),
            "127.0.0.1:8045".parse().expect("b")
        );
        assert_eq!(
            local_api("10.1.2.3:9000").expect("a"),
            "10.1.2.3:9000".parse().expect("b")
        );
        assert_eq!(
            local_api("[::]:8045").expect("a"),
            "[::1]:8045".parse().expect("b")
        );
    }
}
