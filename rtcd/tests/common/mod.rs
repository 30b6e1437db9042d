//! Test helpers: the real `rtcd` binary on free loopback ports, and a minimal HTTP/1.1 client.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub const BIN: &str = env!("CARGO_BIN_EXE_rtcd");

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A port in rtcd's ICE range (80–49151) free for both UDP and TCP on 127.0.0.1.
pub fn free_ice_port() -> u16 {
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    for _ in 0..200 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let port = 20_000 + (seed % 29_000) as u16;
        let udp = std::net::UdpSocket::bind(("127.0.0.1", port));
        let tcp = std::net::TcpListener::bind(("127.0.0.1", port));
        if udp.is_ok() && tcp.is_ok() {
            return port;
        }
    }
    panic!("no free ICE port found");
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One request over an existing stream, `Connection: close`, body read to EOF.
pub async fn request_on<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, method: &str, path: &str) -> Response {
    let req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    parse_response(&raw)
}

pub async fn get(addr: SocketAddr, path: &str) -> Response {
    let s = tokio::net::TcpStream::connect(addr).await.unwrap();
    request_on(s, "GET", path).await
}

pub fn parse_response(raw: &[u8]) -> Response {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end: {text}"));
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked { dechunk(body) } else { body.to_string() };
    Response {
        status,
        headers,
        body,
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

/// A running `rtcd` with its own temporary directory, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub api: SocketAddr,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts rtcd with `extra` TOML appended to a config that listens on a free loopback port
    /// and logs to `<dir>/rtcd.log`; waits until `/api/v1/health` answers.
    pub async fn start(extra: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let log = dir.path().join("rtcd.log");
        let store = dir.path().join("db");
        let mut doc: toml::Table = toml::from_str(extra).unwrap();
        let mut set = |path: &[&str], value: String| {
            let mut t = &mut doc;
            for part in &path[..path.len() - 1] {
                t = t
                    .entry(*part)
                    .or_insert_with(|| toml::Value::Table(Default::default()))
                    .as_table_mut()
                    .unwrap();
            }
            t.entry(path[path.len() - 1])
                .or_insert(toml::Value::String(value));
        };
        set(&["api", "http", "listen_address"], format!("127.0.0.1:{port}"));
        set(&["store", "data_source"], store.display().to_string());
        set(&["logger", "file_location"], log.display().to_string());
        set(&["rtc", "ice_address_udp"], "127.0.0.1".to_string());
        set(&["rtc", "ice_address_tcp"], "127.0.0.1".to_string());
        let ice_port = free_ice_port();
        let rtc = doc
            .entry("rtc")
            .or_insert_with(|| toml::Value::Table(Default::default()));
        if let Some(t) = rtc.as_table_mut() {
            t.entry("ice_port_udp")
                .or_insert(toml::Value::Integer(i64::from(ice_port)));
            t.entry("ice_port_tcp")
                .or_insert(toml::Value::Integer(i64::from(ice_port)));
        }
        let config = toml::to_string(&doc).unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        let child = command(&path, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let api: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut d = Self { child, api, dir };
        d.wait_ready().await;
        d
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                let out = self.child.wait_with_output_ref();
                panic!("rtcd exited early with {status}: {out}");
            }
            if tokio::net::TcpStream::connect(self.api).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("rtcd did not listen on {} within 20s", self.api);
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("rtcd.log")
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits up to `limit` for exit; returns the status and how long it took.
    pub fn wait_exit(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, start.elapsed());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        panic!("rtcd still running after {limit:?}");
    }

    /// Everything written to stdout and stderr (after exit).
    pub fn output(&mut self) -> String {
        self.child.wait_with_output_ref()
    }
}

trait OutputRef {
    fn wait_with_output_ref(&mut self) -> String;
}

impl OutputRef for Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut s = String::new();
        if let Some(out) = self.stdout.as_mut() {
            out.read_to_string(&mut s).unwrap();
        }
        if let Some(err) = self.stderr.as_mut() {
            err.read_to_string(&mut s).unwrap();
        }
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `rtcd --config <path>` with a clean `RTCD_*` environment plus `env`.
pub fn command(config: &Path, env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(config);
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("RTCD_")) {
        cmd.env_remove(k);
    }
    cmd.envs(env.iter().copied());
    cmd
}

/// Writes `cert.pem` and `key.pem` into `dir` and returns the `[api]` TOML that enables TLS
/// with them.
pub fn tls_toml(dir: &Path, cert_pem: &str, key_pem: &str) -> String {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, cert_pem).unwrap();
    std::fs::write(&key, key_pem).unwrap();
    format!(
        "[api]\nhttp.tls.enable = true\nhttp.tls.cert_file = {:?}\nhttp.tls.cert_key = {:?}\n",
        cert.display().to_string(),
        key.display().to_string()
    )
}
