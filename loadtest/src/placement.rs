//! The Calls plugin's placement of calls over rtcd instances (mattermost-plugin-calls
//! `server/rtcd.go`): `--url`'s host resolved to its IPv4 addresses at start and again every
//! 10 s, one plugin connection per address, an address that leaves DNS flagged (no new calls),
//! and each new call put on the address whose `GET /system` `cpu_load` is lowest (strictly
//! lower wins, hosts asked in random order as the plugin's map iteration is), at random when no
//! host answers. Without `--placement` the one host is `--url` itself.

use std::{
    cell::{Cell, RefCell},
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use rtcd::protocol::ws::ClientMessage;
use serde::Serialize;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
};

use crate::signal::{self, Routes, WsCounters};

/// The plugin re-resolves the RTCD service's name this often.
pub const RESOLVE_EVERY: Duration = Duration::from_secs(10);

/// One rtcd instance the generator talks to.
#[derive(Debug)]
pub struct Host {
    /// Its API address.
    pub addr: SocketAddr,
    /// No longer in DNS: no new calls.
    pub flagged: bool,
    /// Calls placed on it.
    pub calls: u32,
    out: mpsc::UnboundedSender<ClientMessage>,
    pump: Option<JoinHandle<Result<()>>>,
}

/// Credentials and shared state for the plugin connections.
pub struct Plugin {
    /// Client ID.
    pub client_id: String,
    /// Auth key.
    pub auth_key: String,
    /// Admin secret, to register when self-registration is off.
    pub admin_key: Option<String>,
    /// Session routes (shared by every connection: session IDs are unique).
    pub routes: Routes,
    /// Frame counters.
    pub counters: Rc<RefCell<WsCounters>>,
    /// Turns true when the run ends.
    pub close: watch::Receiver<bool>,
}

/// The hosts and the placement policy.
pub struct Placer {
    plugin: Plugin,
    /// `(host, port)` to resolve, when placing over a name.
    name: Option<(String, u16)>,
    resolved_at: Cell<Option<Instant>>,
    /// Every host ever connected, in order of discovery.
    pub hosts: RefCell<Vec<Host>>,
}

/// `host` and `port` of an `http://host:port[/…]` URL (the plugin requires the port).
pub fn name_and_port(url: &str) -> Result<(String, u16)> {
    let authority = signal::authority(url)?;
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| anyhow!("--url {url:?}: --placement needs a port, as the Calls plugin does"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| anyhow!("--url {url:?}: port {port:?} is not a number"))?;
    if host.is_empty() {
        bail!("--url {url:?} has no host");
    }
    Ok((
        host.trim_start_matches('[').trim_end_matches(']').to_string(),
        port,
    ))
}

impl Placer {
    /// One host, `url` (no placement).
    pub async fn single(url: &str, plugin: Plugin) -> Result<Self> {
        let ws = signal::connect(
            url,
            &plugin.client_id,
            &plugin.auth_key,
            plugin.admin_key.as_deref(),
        )
        .await?;
        let addr = name_and_port(url)
            .ok()
            .and_then(|(h, p)| Some(SocketAddr::new(h.parse().ok()?, p)))
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        let this = Self {
            plugin,
            name: None,
            resolved_at: Cell::new(None),
            hosts: RefCell::default(),
        };
        this.add(addr, ws);
        Ok(this)
    }

    /// Every address of `url`'s host, each with its own plugin connection.
    pub async fn resolving(url: &str, plugin: Plugin) -> Result<Self> {
        let name = name_and_port(url)?;
        let this = Self {
            plugin,
            name: Some(name),
            resolved_at: Cell::new(None),
            hosts: RefCell::default(),
        };
        this.refresh().await?;
        if this.hosts.borrow().is_empty() {
            bail!("--url {url:?}: no rtcd answered at any of its addresses");
        }
        Ok(this)
    }

    fn add(&self, addr: SocketAddr, ws: signal::Ws) {
        let (out, rx) = mpsc::unbounded_channel();
        let pump = tokio::task::spawn_local(signal::pump(
            ws,
            rx,
            self.plugin.routes.clone(),
            self.plugin.counters.clone(),
            self.plugin.close.clone(),
        ));
        self.hosts.borrow_mut().push(Host {
            addr,
            flagged: false,
            calls: 0,
            out,
            pump: Some(pump),
        });
    }

    /// Re-resolves the name when [`RESOLVE_EVERY`] has passed: new addresses are connected,
    /// addresses gone from DNS are flagged, addresses back are unflagged.
    pub async fn refresh(&self) -> Result<()> {
        let Some((name, port)) = self.name.clone() else {
            return Ok(());
        };
        if self
            .resolved_at
            .get()
            .is_some_and(|t| t.elapsed() < RESOLVE_EVERY)
        {
            return Ok(());
        }
        self.resolved_at.set(Some(Instant::now()));
        let resolved: Vec<SocketAddr> = match tokio::net::lookup_host((name.as_str(), port)).await {
            Ok(addrs) => {
                let mut v: Vec<SocketAddr> = addrs.filter(|a| matches!(a.ip(), IpAddr::V4(_))).collect();
                v.dedup();
                v
            }
            Err(e) => {
                // The plugin keeps its hosts when a lookup fails.
                tracing::warn!(name = %name, error = %e, "cannot resolve the rtcd name; keeping the hosts");
                return Ok(());
            }
        };
        for h in self.hosts.borrow_mut().iter_mut() {
            h.flagged = !resolved.contains(&h.addr);
        }
        for addr in resolved {
            if self.hosts.borrow().iter().any(|h| h.addr == addr) {
                continue;
            }
            let url = format!("http://{addr}");
            match signal::connect(
                &url,
                &self.plugin.client_id,
                &self.plugin.auth_key,
                self.plugin.admin_key.as_deref(),
            )
            .await
            {
                Ok(ws) => self.add(addr, ws),
                Err(e) => {
                    tracing::warn!(host = %addr, error = format!("{e:#}"), "cannot connect to an rtcd host")
                }
            }
        }
        Ok(())
    }

    /// The host for a new call: the lowest `cpu_load` among the hosts not flagged.
    pub async fn choose(&self) -> Result<usize> {
        self.refresh().await?;
        let mut candidates: Vec<(usize, SocketAddr)> = self
            .hosts
            .borrow()
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.flagged && !h.out.is_closed())
            .map(|(i, h)| (i, h.addr))
            .collect();
        if candidates.is_empty() {
            bail!("no rtcd host available");
        }
        shuffle(&mut candidates);
        let mut best: Option<(usize, f64)> = None;
        for (i, addr) in &candidates {
            match system_load(*addr).await {
                Ok(load) => {
                    if best.is_none_or(|(_, b)| load < b) {
                        best = Some((*i, load));
                    }
                }
                Err(e) => tracing::warn!(host = %addr, error = format!("{e:#}"), "GET /system failed"),
            }
        }
        let chosen = best.map_or(candidates[0].0, |(i, _)| i);
        if let Some(h) = self.hosts.borrow_mut().get_mut(chosen) {
            h.calls += 1;
        }
        Ok(chosen)
    }

    /// Queues `m` on host `i`'s connection.
    pub fn send(&self, i: usize, m: ClientMessage) {
        if let Some(h) = self.hosts.borrow().get(i) {
            let _ = h.out.send(m);
        }
    }

    /// Waits (at most 2 s each) for every connection to close after the close signal.
    pub async fn finish(&self) {
        let pumps: Vec<_> = self
            .hosts
            .borrow_mut()
            .iter_mut()
            .filter_map(|h| h.pump.take().map(|p| (h.addr, p)))
            .collect();
        for (addr, p) in pumps {
            if tokio::time::timeout(Duration::from_secs(2), p).await.is_err() {
                tracing::warn!(host = %addr, "the /ws connection did not close within 2 s");
            }
        }
    }
}

/// Fisher–Yates with the OS's randomness.
fn shuffle<T>(v: &mut [T]) {
    for i in (1..v.len()).rev() {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        let j = (u64::from_le_bytes(b) % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

/// `GET /system`'s `cpu_load` from the rtcd at `addr`.
pub async fn system_load(addr: SocketAddr) -> Result<f64> {
    let req = format!("GET /system HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    let (status, body) =
        signal::exchange(&addr.to_string(), &req, Duration::from_secs(5), "GET /system").await?;
    if status != "200" {
        bail!("GET /system on {addr} answered {status}: {body}");
    }
    #[derive(serde::Deserialize)]
    struct System {
        cpu_load: f64,
    }
    let s: System = serde_json::from_str(&body).context("GET /system: no cpu_load in the body")?;
    Ok(s.cpu_load)
}

/// What one host got.
#[derive(Debug, Clone, Serialize)]
pub struct HostReport {
    /// API address.
    pub address: String,
    /// Calls placed on it.
    pub calls: u32,
    /// Participants sent to it.
    pub sessions: u32,
    /// Of those, connected (ICE + DTLS).
    pub connected: u32,
    /// Of those, closed by the server (a refused join is one).
    pub refused: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_urls_need_a_port() {
        assert_eq!(
            name_and_port("http://rtcd.example:8045").unwrap(),
            ("rtcd.example".to_string(), 8045)
        );
        assert!(
            name_and_port("http://rtcd.example")
                .unwrap_err()
                .to_string()
                .contains("needs a port")
        );
        assert!(
            name_and_port("https://h:1")
                .unwrap_err()
                .to_string()
                .contains("only http://")
        );
        assert!(
            name_and_port("http://h:x")
                .unwrap_err()
                .to_string()
                .contains("not a number")
        );
    }

    #[test]
    fn shuffling_keeps_every_element() {
        let mut v: Vec<u32> = (0..20).collect();
        shuffle(&mut v);
        let mut s = v.clone();
        s.sort_unstable();
        assert_eq!(s, (0..20).collect::<Vec<_>>());
    }
}
