//! A load run: options, the shared context of the participants, the join ramp, the
//! measurement window (with the server's CPU and memory read from `/proc`), and the report.

use std::{
    cell::RefCell,
    collections::HashMap,
    net::IpAddr,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use rtcd::protocol::ws::ClientMessage;
use serde::Serialize;
use tokio::sync::watch;

use crate::{
    peer::{self, Spec},
    placement::{HostReport, Placer, Plugin},
    procfs,
    signal::{Routes, WsCounters},
    stats::{JoinRecord, Stats, Summary},
};

/// What to run.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Options {
    /// rtcd's API URL (http:// only).
    #[arg(long, default_value = "http://127.0.0.1:8045")]
    pub url: String,
    /// Client ID the plugin authenticates as (registered on first use).
    #[arg(long, default_value = "rtcd-loadtest")]
    pub client_id: String,
    /// Its auth key (at least 32 characters).
    #[arg(long, default_value = "rtcd-loadtest-auth-key-0123456789abcdef")]
    #[serde(skip)]
    pub auth_key: String,
    /// Admin secret, to register when self-registration is off.
    #[arg(long)]
    #[serde(skip)]
    pub admin_key: Option<String>,
    /// Calls.
    #[arg(long, default_value_t = 1)]
    pub calls: u32,
    /// Participants per call.
    #[arg(long, default_value_t = 2)]
    pub users_per_call: u32,
    /// Unmuted participants per call (they talk all the time).
    #[arg(long, default_value_t = 1)]
    pub unmuted: u32,
    /// The first participant of each call also shares its screen (VP8, simulcast h/l).
    #[arg(long)]
    pub screen: bool,
    /// Measurement window, seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds between the last connection and the window.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    /// Joins per second.
    #[arg(long, default_value_t = 50.0)]
    pub ramp: f64,
    /// Seconds a participant may take to connect before it counts as an ICE/DTLS failure.
    #[arg(long, default_value_t = 15.0)]
    pub join_timeout: f64,
    /// Churn: visitors joining per second during the window (each stays `--visit` s).
    #[arg(long, default_value_t = 0.0)]
    pub churn: f64,
    /// How long a churn visitor stays, seconds.
    #[arg(long, default_value_t = 3.0)]
    pub visit: f64,
    /// Share of participants (0–1) that connect over ICE-TCP instead of UDP.
    #[arg(long, default_value_t = 0.0)]
    pub tcp_share: f64,
    /// Local address the participants bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub bind: IpAddr,
    /// PID of the server, to read its CPU time and memory from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Place calls as the Calls plugin does over the rtcd instances behind `--url`'s DNS name
    /// (which must carry a port): one plugin connection per IPv4 address, each new call on the
    /// address whose `/system` cpu_load is lowest, the name re-resolved every 10 s.
    #[arg(long)]
    pub placement: bool,
    /// Record each participant's selected ICE pair and round trip (the canary's probe).
    #[arg(skip)]
    #[serde(skip)]
    pub peer_stats: bool,
}

impl Options {
    /// Refuses impossible combinations, naming the flag.
    pub fn validate(&self) -> Result<()> {
        if self.calls == 0 || self.users_per_call == 0 {
            bail!("--calls and --users-per-call must be at least 1");
        }
        if self.unmuted > self.users_per_call {
            bail!(
                "--unmuted {} is more than --users-per-call {}",
                self.unmuted,
                self.users_per_call
            );
        }
        for (name, v) in [
            ("--duration", self.duration),
            ("--ramp", self.ramp),
            ("--join-timeout", self.join_timeout),
        ] {
            if !(v.is_finite() && v > 0.0) {
                bail!("{name} must be a positive number of seconds (got {v})");
            }
        }
        for (name, v) in [
            ("--warmup", self.warmup),
            ("--churn", self.churn),
            ("--visit", self.visit),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                bail!("{name} must be zero or more (got {v})");
            }
        }
        if !(0.0..=1.0).contains(&self.tcp_share) {
            bail!("--tcp-share must be between 0 and 1 (got {})", self.tcp_share);
        }
        if self.churn > 0.0 && self.visit <= 0.0 {
            bail!("--churn needs a positive --visit");
        }
        if self.auth_key.len() < 32 {
            bail!("--auth-key must be at least 32 characters (rtcd refuses shorter keys)");
        }
        if self.calls.saturating_mul(self.users_per_call) > 20_000 {
            bail!("--calls × --users-per-call is over 20000 participants");
        }
        Ok(())
    }
}

/// What the participants share.
pub struct Ctx {
    /// Zero of every timestamp.
    pub epoch: Instant,
    /// Observations.
    pub stats: RefCell<Stats>,
    /// The rtcd hosts and their plugin connections.
    pub placer: Placer,
    /// The host each session was sent to.
    pub session_host: RefCell<HashMap<String, usize>>,
    /// The host of each join record, by index.
    pub join_host: RefCell<Vec<usize>>,
    /// Session routes on the inbound side.
    pub routes: Routes,
}

impl Ctx {
    /// `t` in ns since the epoch.
    pub fn ns(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// Updates participant `index`'s join record.
    pub fn record(&self, index: u32, f: impl FnOnce(&mut JoinRecord)) {
        if let Some(j) = self.stats.borrow_mut().joins.get_mut(index as usize) {
            f(j);
        }
    }

    /// Queues a message to the rtcd host of its session.
    pub fn send(&self, m: ClientMessage) {
        let sid = match &m {
            ClientMessage::Join(j) => j.session_id.as_str(),
            ClientMessage::Rtc(r) => r.session_id.as_str(),
            ClientMessage::Leave { session_id } | ClientMessage::Reconnect { session_id } => {
                session_id.as_str()
            }
            _ => "",
        };
        let host = self.session_host.borrow().get(sid).copied().unwrap_or(0);
        self.placer.send(host, m);
    }
}

/// CPU and memory of one process over the window.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    /// PID.
    pub pid: Option<u32>,
    /// CPU seconds in the window.
    pub cpu_s: f64,
    /// Percent of one core.
    pub cpu_pct: f64,
    /// CPU µs per forwarded media packet.
    pub cpu_us_per_forwarded_packet: Option<f64>,
    /// RSS before the first join, KiB.
    pub rss_base_kib: u64,
    /// Median RSS during the window, KiB.
    pub rss_steady_kib: u64,
    /// Peak RSS (VmHWM) at the end, KiB.
    pub rss_peak_kib: u64,
    /// (steady − base) / participants, KiB.
    pub rss_per_participant_kib: Option<f64>,
    /// Threads at the end.
    pub threads: u64,
}

/// The run's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Tool and version.
    pub tool: String,
    /// What ran.
    pub options: Options,
    /// What the participants saw.
    pub summary: Summary,
    /// The server, when `--server-pid` was given.
    pub server: Option<Usage>,
    /// This generator.
    pub generator: Usage,
    /// VAD messages and undecodable frames on the plugin connection.
    pub ws_vad_messages: u64,
    /// Frames that did not decode.
    pub ws_bad_frames: u64,
    /// With `--placement`: what each rtcd host got.
    pub placement: Option<Vec<HostReport>>,
    /// Every participant's join, in order (for the probe).
    #[serde(skip)]
    pub joins: Vec<JoinRecord>,
}

fn random_id() -> String {
    let mut b = [0u8; 6];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Runs the load; must be called inside a `LocalSet`.
pub async fn run(o: &Options) -> Result<Report> {
    o.validate()?;
    let epoch = Instant::now();
    let server_base = o.server_pid.map(|p| procfs::sample(Some(p))).transpose()?;
    let routes: Routes = Rc::default();
    let counters = Rc::new(RefCell::new(WsCounters::default()));
    let (close_tx, close_rx) = watch::channel(false);
    let plugin = Plugin {
        client_id: o.client_id.clone(),
        auth_key: o.auth_key.clone(),
        admin_key: o.admin_key.clone(),
        routes: routes.clone(),
        counters: counters.clone(),
        close: close_rx,
    };
    let placer = if o.placement {
        Placer::resolving(&o.url, plugin).await?
    } else {
        Placer::single(&o.url, plugin).await?
    };
    let ctx = Rc::new(Ctx {
        epoch,
        stats: RefCell::default(),
        placer,
        session_host: RefCell::default(),
        join_host: RefCell::default(),
        routes,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let (send_tx, send_rx) = watch::channel(true);
    let run_id = random_id();

    let expects_media = |u: u32| {
        let others_talk = o.unmuted.saturating_sub(u32::from(u < o.unmuted)) > 0;
        others_talk || (o.screen && u != 0)
    };
    let mut tasks = Vec::new();
    let spawn = |ctx: &Rc<Ctx>, call: u32, u: u32, stable: bool, stop: watch::Receiver<bool>, host: usize| {
        let index = ctx.stats.borrow().joins.len() as u32;
        // Exactly ⌊n × share⌋ of the first n participants use TCP.
        let tcp = ((f64::from(index) + 1.0) * o.tcp_share).floor() > (f64::from(index) * o.tcp_share).floor();
        {
            let mut st = ctx.stats.borrow_mut();
            st.call_of.push(call);
            st.joins.push(JoinRecord {
                stable,
                expects_media: expects_media(u),
                tcp,
                ..Default::default()
            });
        }
        let spec = Spec {
            index,
            call_id: format!("lt-{run_id}-call-{call}"),
            session_id: format!("lt-{run_id}-s{index}"),
            user_id: format!("lt-user-{index}"),
            speaker: stable && u < o.unmuted,
            sharer: stable && o.screen && u == 0,
            bind: o.bind,
            tcp,
            stats: o.peer_stats,
        };
        let sid = spec.session_id.clone();
        ctx.session_host.borrow_mut().insert(sid.clone(), host);
        ctx.join_host.borrow_mut().push(host);
        (
            sid,
            tokio::task::spawn_local(peer::run(spec, ctx.clone(), stop, send_rx.clone())),
        )
    };

    // Join ramp, call by call as people arrive.
    let gap = Duration::from_secs_f64(1.0 / o.ramp);
    let mut next = Instant::now();
    let mut call_host = Vec::with_capacity(o.calls as usize);
    for call in 0..o.calls {
        // The plugin picks the host when the call starts; everyone who joins it follows.
        let host = if o.placement {
            ctx.placer.choose().await?
        } else {
            0
        };
        call_host.push(host);
        for u in 0..o.users_per_call {
            tasks.push(spawn(&ctx, call, u, true, stop_rx.clone(), host));
            next += gap;
            tokio::time::sleep_until(next.into()).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs_f64(o.join_timeout);
    while Instant::now() < deadline {
        let all_in = ctx
            .stats
            .borrow()
            .joins
            .iter()
            .all(|j| j.connected_ns.is_some() || j.closed_by_server);
        if all_in {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(o.warmup)).await;

    // The window.
    let start = Instant::now();
    let window = Duration::from_secs_f64(o.duration);
    ctx.stats.borrow_mut().window = Some((ctx.ns(start), ctx.ns(start + window)));
    let server_start = o.server_pid.map(|p| procfs::sample(Some(p))).transpose()?;
    let self_start = procfs::sample(None)?;
    let mut rss_samples = Vec::new();
    let mut visitors: Vec<(Instant, watch::Sender<bool>)> = Vec::new();
    let mut next_visit = start;
    let mut next_sample = start;
    let mut visit_no = 0u32;
    let end = start + window;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if now >= next_sample {
            if let Some(p) = o.server_pid {
                rss_samples.push(procfs::sample(Some(p))?.rss_kib);
            }
            next_sample += Duration::from_millis(500);
        }
        if o.churn > 0.0 && now >= next_visit {
            let (tx, rx) = watch::channel(false);
            let call = visit_no % o.calls;
            visit_no += 1;
            let host = call_host.get(call as usize).copied().unwrap_or(0);
            tasks.push(spawn(&ctx, call, o.users_per_call, false, rx, host));
            visitors.push((now + Duration::from_secs_f64(o.visit), tx));
            next_visit += Duration::from_secs_f64(1.0 / o.churn);
        }
        visitors.retain(|(leave_at, tx)| {
            if now >= *leave_at {
                let _ = tx.send(true);
                false
            } else {
                true
            }
        });
        let wake = [end, next_sample, if o.churn > 0.0 { next_visit } else { end }]
            .into_iter()
            .min()
            .unwrap_or(end)
            .min(now + Duration::from_millis(100));
        tokio::time::sleep_until(wake.into()).await;
    }
    let server_end = o.server_pid.map(|p| procfs::sample(Some(p))).transpose()?;
    let self_end = procfs::sample(None)?;

    // Stop sending, let the last packets arrive, then everyone leaves.
    let _ = send_tx.send(false);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    for (_, tx) in &visitors {
        let _ = tx.send(true);
    }
    let leave_deadline = Instant::now() + Duration::from_secs(5);
    for (sid, mut t) in tasks {
        if tokio::time::timeout_at(leave_deadline.into(), &mut t)
            .await
            .is_err()
        {
            // A participant that did not end in time (a starved machine): its leave is sent
            // here, so the server is not left with its session until ICE times it out.
            t.abort();
            tracing::warn!(session = %sid, "participant did not leave within 5 s: leaving for it");
            ctx.send(ClientMessage::Leave { session_id: sid });
        }
    }
    let _ = close_tx.send(true);
    ctx.placer.finish().await;
    let placement = o.placement.then(|| host_reports(&ctx));

    let summary = ctx.stats.borrow().summarize(window.as_secs_f64());
    let secs = window.as_secs_f64();
    let per_pkt =
        |cpu: f64| (summary.forwarded_packets > 0).then(|| cpu * 1e6 / summary.forwarded_packets as f64);
    let server = match (o.server_pid, server_base, server_start, server_end) {
        (Some(pid), Some(b), Some(s), Some(e)) => {
            rss_samples.sort_unstable();
            let steady = rss_samples
                .get(rss_samples.len() / 2)
                .copied()
                .unwrap_or(e.rss_kib);
            let cpu = e.cpu_s - s.cpu_s;
            Some(Usage {
                pid: Some(pid),
                cpu_s: cpu,
                cpu_pct: cpu * 100.0 / secs,
                cpu_us_per_forwarded_packet: per_pkt(cpu),
                rss_base_kib: b.rss_kib,
                rss_steady_kib: steady,
                rss_peak_kib: e.hwm_kib,
                rss_per_participant_kib: (summary.participants > 0)
                    .then(|| steady.saturating_sub(b.rss_kib) as f64 / summary.participants as f64),
                threads: e.threads,
            })
        }
        _ => None,
    };
    let gcpu = self_end.cpu_s - self_start.cpu_s;
    let generator = Usage {
        pid: Some(std::process::id()),
        cpu_s: gcpu,
        cpu_pct: gcpu * 100.0 / secs,
        cpu_us_per_forwarded_packet: per_pkt(gcpu),
        rss_base_kib: 0,
        rss_steady_kib: self_end.rss_kib,
        rss_peak_kib: self_end.hwm_kib,
        rss_per_participant_kib: None,
        threads: self_end.threads,
    };
    let c = counters.borrow();
    Ok(Report {
        tool: format!("rtcd-loadtest {}", env!("CARGO_PKG_VERSION")),
        options: o.clone(),
        summary,
        server,
        generator,
        ws_vad_messages: c.vad,
        ws_bad_frames: c.bad_frames,
        placement,
        joins: ctx.stats.borrow().joins.clone(),
    })
}

/// What each host got, from the join records.
fn host_reports(ctx: &Ctx) -> Vec<HostReport> {
    let hosts = ctx.placer.hosts.borrow();
    let stats = ctx.stats.borrow();
    let join_host = ctx.join_host.borrow();
    hosts
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let mine: Vec<&JoinRecord> = stats
                .joins
                .iter()
                .zip(join_host.iter())
                .filter(|(_, host)| **host == i)
                .map(|(j, _)| j)
                .collect();
            let count = |f: &dyn Fn(&JoinRecord) -> bool| mine.iter().filter(|j| f(j)).count() as u32;
            HostReport {
                address: h.addr.to_string(),
                calls: h.calls,
                sessions: mine.len() as u32,
                connected: count(&|j| j.connected_ns.is_some()),
                refused: count(&|j| j.closed_by_server),
            }
        })
        .collect()
}

/// The human summary.
pub fn render(r: &Report) -> String {
    let s = &r.summary;
    let mut out = format!(
        "participants {} (+{} visitors), connected {} ({} over TCP), ICE/DTLS failures {}, closed by server {}, data channels {}\n\
         window {:.1}s: sent {:.0} pkt/s, forwarded {:.0} pkt/s ({:.2} Mbit/s)\n",
        s.participants,
        s.visitors,
        s.connected,
        s.connected_tcp,
        s.ice_dtls_failures,
        s.closed_by_server,
        s.data_channels_open,
        s.window_s,
        s.sent_pps,
        s.forwarded_pps,
        s.forwarded_bps / 1e6
    );
    for (name, m) in [("audio", &s.audio), ("video", &s.video)] {
        if let Some(m) = m {
            out += &format!(
                "{name}: {}/{} received, loss {:.3}%",
                m.received, m.expected, m.loss_pct
            );
            if let Some(l) = &m.latency_ms {
                out += &format!(
                    ", latency p50 {:.2} p99 {:.2} p99.9 {:.2} ms",
                    l.p50, l.p99, l.p999
                );
            }
            if let Some(j) = m.jitter_ms_p99 {
                out += &format!(", jitter p99 {j:.2} ms");
            }
            out += "\n";
        }
    }
    if let Some(t) = &s.join_to_first_packet_ms {
        out += &format!(
            "join → first packet p50 {:.0} p99 {:.0} ms (n={})\n",
            t.p50, t.p99, t.n
        );
    }
    if let Some(u) = &r.server {
        out += &format!(
            "server: CPU {:.1}% of a core, {} µs/forwarded packet, RSS {} → {} KiB (peak {}), {} KiB/participant, {} threads\n",
            u.cpu_pct,
            u.cpu_us_per_forwarded_packet
                .map_or("-".into(), |v| format!("{v:.2}")),
            u.rss_base_kib,
            u.rss_steady_kib,
            u.rss_peak_kib,
            u.rss_per_participant_kib
                .map_or("-".into(), |v| format!("{v:.0}")),
            u.threads
        );
    }
    out += &format!("generator: CPU {:.1}% of a core\n", r.generator.cpu_pct);
    for h in r.placement.iter().flatten() {
        out += &format!(
            "placement: {} calls {} sessions {} connected {} refused {}\n",
            h.address, h.calls, h.sessions, h.connected, h.refused
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        o: Options,
    }

    fn opts(args: &[&str]) -> Options {
        T::try_parse_from(std::iter::once("t").chain(args.iter().copied()))
            .unwrap()
            .o
    }

    #[test]
    fn bad_options_name_the_flag() {
        assert!(opts(&[]).validate().is_ok());
        let e = opts(&["--users-per-call", "3", "--unmuted", "5"])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("--unmuted 5"), "{e}");
        let e = opts(&["--duration", "0"]).validate().unwrap_err();
        assert!(e.to_string().contains("--duration"), "{e}");
        let e = opts(&["--auth-key", "short"]).validate().unwrap_err();
        assert!(e.to_string().contains("--auth-key"), "{e}");
        let e = opts(&["--calls", "0"]).validate().unwrap_err();
        assert!(e.to_string().contains("--calls"), "{e}");
    }
}
