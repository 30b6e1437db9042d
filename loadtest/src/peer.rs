//! One generated participant: a str0m WebRTC peer (full ICE, DTLS-SRTP, the `calls-dc` data
//! channel) on its own UDP port, signaling through the shared plugin connection, sending
//! probe-carrying Opus-like audio and optionally a VP8 h/l simulcast screen share.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use rtcd::protocol::{
    dc::DcMessage,
    rtc::{RtcMessage, RtcType},
    ws::{ClientMessage, Join},
};
use rtcd::sim::KeyframeClock;
use str0m::{
    Candidate, Event, IceConnectionState, Input, Output, Rtc,
    change::{SdpAnswer, SdpOffer, SdpPendingOffer},
    channel::ChannelId,
    media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer},
    net::{Protocol, Receive, TcpType},
    rtp::{ExtensionValues, RtpWrite, SeqNo},
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{
        TcpStream, UdpSocket,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::{mpsc, watch},
    time::{Interval, MissedTickBehavior},
};

use crate::{
    probe::{Probe, Stream, opus_size, vp8_payload},
    run::Ctx,
    signal::Inbound,
};

/// Opus PT (str0m's and the Calls webapp's).
const OPUS_PT: u8 = 111;
/// VP8 PT.
const VP8_PT: u8 = 96;
/// Screen packets' payload size.
const VIDEO_PACKET: usize = 1100;
/// Screen layers: (rid, stream, frame interval, packets per frame). `h` ≈ 2.5 Mbps at 20 fps,
/// `l` ≈ 500 kbps at 5 fps: the Calls webapp's screen-share encodings.
const LAYERS: [(&str, Stream, Duration, usize); 2] = [
    ("h", Stream::ScreenHigh, Duration::from_millis(50), 14),
    ("l", Stream::ScreenLow, Duration::from_millis(200), 11),
];
/// Loss, round trip and jitter go to the server on `calls-dc` this often.
const DC_STATS_EVERY: Duration = Duration::from_secs(5);
/// The canary's probe reads the selected pair this often.
const PROBE_STATS_EVERY: Duration = Duration::from_secs(1);
/// A key frame at least this often on each layer, besides those the SFU asks for.
const KEYFRAME_EVERY: Duration = Duration::from_secs(3);

/// Who this participant is.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Participant index (the probe's sender ID).
    pub index: u32,
    /// `callID`.
    pub call_id: String,
    /// `sessionID`.
    pub session_id: String,
    /// `userID`.
    pub user_id: String,
    /// Sends voice.
    pub speaker: bool,
    /// Shares its screen.
    pub sharer: bool,
    /// Local address to bind.
    pub bind: IpAddr,
    /// Connect over ICE-TCP (RFC 6544 active, RFC 4571 framing) instead of UDP.
    pub tcp: bool,
    /// Record the selected ICE pair and its round trip every second (str0m's peer stats).
    pub stats: bool,
}

struct Layer {
    rid: Rid,
    stream: Stream,
    tick: Interval,
    packets: usize,
    seq: u64,
    probe_seq: u32,
    picture_id: u16,
    keyframes: KeyframeClock,
}

struct Peer {
    spec: Spec,
    ctx: Rc<Ctx>,
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    audio_mid: Mid,
    screen_mid: Option<Mid>,
    pending: Option<SdpPendingOffer>,
    connected: bool,
    voice_seq: u32,
    voice_started: Option<Instant>,
    layers: Vec<Layer>,
    screen_started: Option<Instant>,
    /// ICE-TCP: frames to send, and the active candidate's address str0m knows us by.
    tcp: Option<(TcpOut, SocketAddr)>,
    /// `calls-dc`, once open.
    dc: Option<ChannelId>,
}

/// Runs a participant until `stop` turns true (then it leaves) or its session dies.
pub async fn run(spec: Spec, ctx: Rc<Ctx>, stop: watch::Receiver<bool>, sending: watch::Receiver<bool>) {
    let index = spec.index;
    let sid = spec.session_id.clone();
    let (tx, rx) = mpsc::unbounded_channel();
    ctx.routes.borrow_mut().insert(sid.clone(), tx);
    if let Err(e) = run_inner(spec, ctx.clone(), rx, stop, sending).await {
        tracing::warn!(participant = index, error = format!("{e:#}"), "participant ended");
        ctx.stats.borrow_mut().signaling_errors += 1;
    }
    ctx.routes.borrow_mut().remove(&sid);
}

async fn run_inner(
    spec: Spec,
    ctx: Rc<Ctx>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    mut stop: watch::Receiver<bool>,
    mut sending: watch::Receiver<bool>,
) -> Result<()> {
    let socket = UdpSocket::bind((spec.bind, 0))
        .await
        .with_context(|| format!("binding a UDP port on {}", spec.bind))?;
    let local = socket.local_addr()?;
    let now = Instant::now();
    let mut rtc = Rtc::builder()
        .set_rtp_mode(true)
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        // The webapp reports loss, round trip and jitter on `calls-dc` (rtcd's client
        // histograms); the canary's probe wants its pair every second.
        .set_stats_interval(Some(if spec.stats {
            PROBE_STATS_EVERY
        } else {
            DC_STATS_EVERY
        }))
        .build(now);
    let (tcp, mut tcp_in) = if spec.tcp {
        // An active candidate has no port of its own (RFC 6544: 9); the connection is made when
        // str0m first sends to the server's passive candidate.
        let addr = SocketAddr::new(spec.bind, 9);
        let cand = Candidate::builder()
            .tcp()
            .host(addr)
            .tcptype(TcpType::Active)
            .build()
            .map_err(|e| anyhow!("ICE-TCP candidate {addr}: {e}"))?;
        rtc.add_local_candidate(cand);
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::task::spawn_local(tcp_link(out_rx, in_tx));
        (Some((out_tx, addr)), Some(in_rx))
    } else {
        let cand = Candidate::host(local, "udp").map_err(|e| anyhow!("host candidate {local}: {e}"))?;
        rtc.add_local_candidate(cand);
        (None, None)
    };

    ctx.send(ClientMessage::Join(Join {
        call_id: spec.call_id.clone(),
        user_id: spec.user_id.clone(),
        session_id: spec.session_id.clone(),
        channel_id: spec.call_id.clone(),
        av1_support: false,
        dc_signaling: false,
    }));
    let joined_ns = ctx.ns(now);
    ctx.record(spec.index, |j| j.joined_ns = joined_ns);
    let screen_stream = format!("screen-{}", spec.session_id);
    if spec.sharer {
        let data = serde_json::json!({ "screenStreamID": screen_stream }).to_string();
        ctx.send(rtc_msg(&spec, RtcType::ScreenOn, data.into_bytes()));
    }
    let mut api = rtc.sdp_api();
    let audio_mid = api.add_media(
        MediaKind::Audio,
        Direction::SendRecv,
        Some(format!("voice-{}", spec.session_id)),
        Some(format!("mic-{}", spec.session_id)),
        None,
    );
    api.add_channel("calls-dc".into());
    let screen_mid = spec.sharer.then(|| {
        let mut sim = Simulcast::new();
        for (rid, ..) in LAYERS {
            sim.add_send_layer(SimulcastLayer {
                rid: rid.into(),
                attributes: None,
            });
        }
        api.add_media(
            MediaKind::Video,
            Direction::SendOnly,
            Some(screen_stream.clone()),
            Some(format!("screen-track-{}", spec.session_id)),
            Some(sim),
        )
    });
    let (offer, pending) = api.apply().context("str0m made no offer")?;
    ctx.send(rtc_msg(
        &spec,
        RtcType::Sdp,
        serde_json::json!({"type": "offer", "sdp": offer.to_sdp_string()})
            .to_string()
            .into_bytes(),
    ));
    let phase = voice_phase(spec.index);
    let layers = if spec.sharer {
        LAYERS
            .iter()
            .map(|(rid, stream, every, packets)| {
                let mut tick = tokio::time::interval(*every);
                tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
                Layer {
                    rid: (*rid).into(),
                    stream: *stream,
                    tick,
                    packets: *packets,
                    seq: 1,
                    probe_seq: 0,
                    picture_id: (spec.index as u16).wrapping_mul(7919) & 0x7fff,
                    keyframes: KeyframeClock::new(KEYFRAME_EVERY),
                }
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut peer = Peer {
        spec,
        ctx,
        rtc,
        socket,
        local,
        audio_mid,
        screen_mid,
        pending: Some(pending),
        connected: false,
        voice_seq: 0,
        voice_started: None,
        layers,
        screen_started: None,
        tcp,
        dc: None,
    };
    // Each talker's 20 ms clock at its own phase, as independent clients' are: started at
    // join, the ramp's 10 ms join gap put every talker on one of two phases, and their packets
    // reached the server in bursts of half the talkers at once.
    let mut voice = tokio::time::interval_at(tokio::time::Instant::now() + phase, Duration::from_millis(20));
    voice.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut buf = vec![0u8; 2048];
    loop {
        let deadline = peer.drain()?;
        let send_now = *sending.borrow() && peer.connected;
        tokio::select! {
            biased;
            r = stop.changed() => {
                if r.is_err() || *stop.borrow() {
                    break;
                }
            }
            r = sending.changed() => {
                if r.is_err() {
                    break;
                }
            }
            m = inbound.recv() => match m {
                Some(Inbound::Rtc(m)) => peer.signal(m)?,
                Some(Inbound::Close) | None => {
                    peer.closed_by_server();
                    return Ok(());
                }
            },
            r = peer.socket.recv_from(&mut buf) => {
                let (n, source) = r.context("UDP receive")?;
                let now = Instant::now();
                if let Ok(recv) = Receive::new(Protocol::Udp, source, peer.local, &buf[..n]) {
                    peer.rtc.handle_input(Input::Receive(now, recv)).context("str0m input")?;
                }
            }
            Some((from, frame)) = recv_tcp(&mut tcp_in) => {
                let now = Instant::now();
                let Some((_, local)) = peer.tcp else { continue };
                if let Ok(recv) = Receive::new(Protocol::Tcp, from, local, &frame) {
                    peer.rtc.handle_input(Input::Receive(now, recv)).context("str0m input")?;
                }
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                peer.rtc.handle_input(Input::Timeout(Instant::now())).context("str0m timeout")?;
            }
            _ = voice.tick(), if send_now && peer.spec.speaker => peer.send_voice(),
            i = next_frame(&mut peer.layers), if send_now => peer.send_frame(i),
        }
    }
    peer.ctx.send(ClientMessage::Leave {
        session_id: peer.spec.session_id.clone(),
    });
    Ok(())
}

async fn recv_tcp(
    rx: &mut Option<mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>>,
) -> Option<(SocketAddr, Vec<u8>)> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The ICE-TCP side of a participant: one connection per destination, opened on first use,
/// RFC 4571 framing (16-bit length) both ways.
async fn tcp_link(
    mut out: mpsc::UnboundedReceiver<(SocketAddr, Vec<u8>)>,
    inbound: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
) {
    let mut conns: HashMap<SocketAddr, OwnedWriteHalf> = HashMap::new();
    while let Some((dest, data)) = out.recv().await {
        if let std::collections::hash_map::Entry::Vacant(e) = conns.entry(dest) {
            let Ok(Ok(s)) = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(dest)).await
            else {
                tracing::debug!(%dest, "ICE-TCP connect failed");
                continue;
            };
            let _ = s.set_nodelay(true);
            let (r, w) = s.into_split();
            tokio::task::spawn_local(tcp_reader(r, dest, inbound.clone()));
            e.insert(w);
        }
        let Some(w) = conns.get_mut(&dest) else { continue };
        let Ok(len) = u16::try_from(data.len()) else {
            continue;
        };
        let mut frame = Vec::with_capacity(data.len() + 2);
        frame.extend_from_slice(&len.to_be_bytes());
        frame.extend_from_slice(&data);
        if w.write_all(&frame).await.is_err() {
            conns.remove(&dest);
        }
    }
}

async fn tcp_reader(
    mut r: OwnedReadHalf,
    from: SocketAddr,
    tx: mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>,
) {
    let mut len = [0u8; 2];
    loop {
        if r.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if r.read_exact(&mut buf).await.is_err() || tx.send((from, buf)).is_err() {
            return;
        }
    }
}

/// Where a participant's ICE-TCP frames go, by destination.
type TcpOut = mpsc::UnboundedSender<(SocketAddr, Vec<u8>)>;

/// Which screen layer is due for its next frame (never, without layers).
async fn next_frame(layers: &mut [Layer]) -> usize {
    std::future::poll_fn(|cx| {
        for (i, l) in layers.iter_mut().enumerate() {
            if l.tick.poll_tick(cx).is_ready() {
                return std::task::Poll::Ready(i);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

fn rtc_msg(spec: &Spec, kind: RtcType, data: Vec<u8>) -> ClientMessage {
    ClientMessage::Rtc(RtcMessage {
        session_id: spec.session_id.clone(),
        user_id: spec.user_id.clone(),
        call_id: spec.call_id.clone(),
        msg_type: kind as i64,
        data,
        ..Default::default()
    })
}

#[derive(serde::Deserialize)]
struct SdpJson {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

impl Peer {
    /// Sends what str0m has to send, handles its events; returns its next deadline.
    fn drain(&mut self) -> Result<Instant> {
        loop {
            match self.rtc.poll_output().context("str0m output")? {
                Output::Timeout(t) => {
                    if !self.rtc.is_alive() {
                        bail!("the peer connection closed");
                    }
                    return Ok(t);
                }
                Output::Transmit(t) => match (&self.tcp, t.proto) {
                    (Some((tx, _)), Protocol::Tcp) => {
                        let _ = tx.send((t.destination, t.contents.to_vec()));
                    }
                    // A full socket buffer drops the datagram, as the kernel would.
                    _ => {
                        let _ = self.socket.try_send_to(&t.contents, t.destination);
                    }
                },
                Output::Event(e) => self.event(e),
            }
        }
    }

    /// Sends `m` on `calls-dc` once it is open (dropped when its buffer is full).
    fn dc_send(&mut self, m: &DcMessage) {
        if let Some(mut ch) = self.dc.and_then(|id| self.rtc.channel(id)) {
            let _ = ch.write(true, &m.encode());
        }
    }

    fn event(&mut self, e: Event) {
        let now = Instant::now();
        match e {
            Event::Connected => {
                self.connected = true;
                let ns = self.ctx.ns(now);
                self.ctx.record(self.spec.index, |j| {
                    j.connected_ns.get_or_insert(ns);
                });
                if self.spec.speaker {
                    // The webapp unmutes once its microphone track is live.
                    self.ctx.send(rtc_msg(&self.spec, RtcType::Unmute, Vec::new()));
                }
            }
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) if self.connected => {
                tracing::debug!(participant = self.spec.index, "ICE disconnected");
                self.ctx.record(self.spec.index, |j| j.disconnected = true);
            }
            Event::RtpPacket(p) => {
                if let Some(probe) = Probe::read(&p.payload) {
                    let ns = self.ctx.ns(now);
                    self.ctx
                        .stats
                        .borrow_mut()
                        .received(self.spec.index, probe, ns, p.payload.len());
                }
            }
            Event::ChannelOpen(id, label) => {
                if label == "calls-dc" {
                    self.dc = Some(id);
                }
                self.ctx.stats.borrow_mut().dc_open += 1;
            }
            Event::MediaIngressStats(s) => {
                let rate = match self.rtc.media(s.mid).map(|m| m.kind()) {
                    Some(MediaKind::Audio) => 48_000.0,
                    _ => 90_000.0,
                };
                self.dc_send(&DcMessage::Jitter(f64::from(s.jitter) / rate));
            }
            Event::PeerStats(s) => {
                let rtt = s
                    .selected_candidate_pair
                    .as_ref()
                    .and_then(|p| p.current_round_trip_time)
                    .or(s.rtt);
                self.dc_send(&DcMessage::LossRate(f64::from(
                    s.ingress_loss_fraction.unwrap_or(0.0),
                )));
                if let Some(rtt) = rtt {
                    self.dc_send(&DcMessage::RoundTripTime(rtt.as_secs_f64()));
                }
                if let Some(pair) = s.selected_candidate_pair {
                    let proto = match pair.protocol {
                        Protocol::Udp => "udp",
                        _ => "tcp",
                    };
                    let remote = format!("{proto} {}", pair.remote.addr);
                    let rtt = pair.current_round_trip_time.or(s.rtt);
                    self.ctx.record(self.spec.index, |j| {
                        j.remote_candidate = Some(remote);
                        if let Some(rtt) = rtt {
                            j.ice_rtt_ms = Some(rtt.as_secs_f64() * 1e3);
                        }
                    });
                }
            }
            Event::KeyframeRequest(r) => {
                for l in &mut self.layers {
                    if r.rid.is_none_or(|rid| rid == l.rid) && Some(r.mid) == self.screen_mid {
                        l.keyframes.request();
                    }
                }
            }
            _ => {}
        }
    }

    fn signal(&mut self, m: RtcMessage) -> Result<()> {
        match m.kind() {
            Some(RtcType::Sdp) => {
                let sd: SdpJson =
                    serde_json::from_slice(&m.data).context("SDP message is not {type, sdp} JSON")?;
                match sd.kind.as_str() {
                    "answer" => {
                        let pending = self.pending.take().context("an answer without an offer")?;
                        let answer = SdpAnswer::from_sdp_string(&sd.sdp).context("parsing the answer")?;
                        self.rtc
                            .sdp_api()
                            .accept_answer(pending, answer)
                            .context("applying the answer")?;
                    }
                    "offer" => {
                        let offer =
                            SdpOffer::from_sdp_string(&sd.sdp).context("parsing the server's offer")?;
                        let answer = self
                            .rtc
                            .sdp_api()
                            .accept_offer(offer)
                            .context("answering the server's offer")?;
                        let json = serde_json::json!({"type": "answer", "sdp": answer.to_sdp_string()});
                        self.ctx
                            .send(rtc_msg(&self.spec, RtcType::Sdp, json.to_string().into_bytes()));
                    }
                    other => bail!("SDP message of type {other:?}"),
                }
            }
            Some(RtcType::Ice) => {
                let v: serde_json::Value =
                    serde_json::from_slice(&m.data).context("ICE message is not JSON")?;
                let c = v
                    .get("candidate")
                    .and_then(|c| c.get("candidate").or(Some(c)))
                    .and_then(|c| c.as_str())
                    .unwrap_or_default();
                if !c.is_empty() {
                    let c = Candidate::from_sdp_string(c).map_err(|e| anyhow!("candidate {c:?}: {e}"))?;
                    self.rtc.add_remote_candidate(c);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn closed_by_server(&mut self) {
        self.ctx.record(self.spec.index, |j| j.closed_by_server = true);
    }

    fn send_voice(&mut self) {
        let now = Instant::now();
        let started = *self.voice_started.get_or_insert(now);
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(self.audio_mid, None) else {
            return;
        };
        let seq = self.voice_seq;
        self.voice_seq += 1;
        let sent_ns = self.ctx.ns(now);
        let mut payload = vec![0u8; opus_size(self.spec.index, seq)];
        payload[0] = 0xfc; // TOC: CELT FB 20 ms, mono, one frame
        Probe {
            sender: self.spec.index,
            stream: Stream::Voice,
            seq,
            sent_ns,
        }
        .write(&mut payload);
        // A talker: half a second of speech (-20…-29 dBov), half a second of pause
        // (-70…-79): the RFC 6464 level swings as rtcd's VAD expects of a voice.
        let level = -((seq % 10) as i8 + if (seq / 25).is_multiple_of(2) { 20 } else { 70 });
        let ext = ExtensionValues {
            audio_level: Some(level),
            voice_activity: Some(true),
            ..Default::default()
        };
        let rtp_time = (now.duration_since(started).as_micros() * 48 / 1000) as u32;
        tx.write_rtp(
            RtpWrite::new(
                Pt::from(OPUS_PT),
                SeqNo::from(u64::from(seq) + 1),
                rtp_time,
                now,
                payload,
            )
            .marker(seq == 0)
            .ext_vals(ext),
        );
        self.ctx
            .stats
            .borrow_mut()
            .sent(self.spec.index, Stream::Voice, sent_ns);
    }

    fn send_frame(&mut self, layer: usize) {
        let now = Instant::now();
        let started = *self.screen_started.get_or_insert(now);
        let Some(mid) = self.screen_mid else { return };
        let Some(l) = self.layers.get_mut(layer) else {
            return;
        };
        let mut api = self.rtc.direct_api();
        let Some(tx) = api.stream_tx_by_mid(mid, Some(l.rid)) else {
            return;
        };
        let key = l.keyframes.next_is_key(now);
        l.picture_id = (l.picture_id + 1) & 0x7fff;
        let rtp_time = (now.duration_since(started).as_micros() * 90 / 1000) as u32;
        for i in 0..l.packets {
            let sent_ns = self.ctx.ns(Instant::now());
            let mut payload = vp8_payload(VIDEO_PACKET, i == 0, key, l.picture_id);
            Probe {
                sender: self.spec.index,
                stream: l.stream,
                seq: l.probe_seq,
                sent_ns,
            }
            .write(&mut payload);
            l.probe_seq += 1;
            let seq = l.seq;
            l.seq += 1;
            tx.write_rtp(
                RtpWrite::new(Pt::from(VP8_PT), SeqNo::from(seq), rtp_time, now, payload)
                    .marker(i + 1 == l.packets)
                    .nackable(true),
            );
            self.ctx
                .stats
                .borrow_mut()
                .sent(self.spec.index, l.stream, sent_ns);
        }
    }
}

/// A participant's voice phase in [0, 20 ms), spread evenly by a multiplicative hash of its
/// index (deterministic, so runs are comparable).
fn voice_phase(index: u32) -> Duration {
    let spread = u64::from(index).wrapping_mul(2_654_435_761) % 20_000;
    Duration::from_micros(spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_phases_spread_over_the_20_ms_frame() {
        let mut quarters = [0u32; 4];
        for i in 0..400 {
            let p = voice_phase(i);
            assert!(p < Duration::from_millis(20));
            quarters[(p.as_micros() / 5000) as usize] += 1;
        }
        for q in quarters {
            assert!((80..=120).contains(&q), "{quarters:?}");
        }
    }
}
