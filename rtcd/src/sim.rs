//! The call core in memory on a simulated clock: one [`Sfu`] and real str0m client peers (ICE,
//! DTLS-SRTP, SCTP data channel, SDP offer/answer, RTP) exchanging datagrams through an
//! in-process network, with no socket, no thread and no wall clock. Tests of signaling, timeouts
//! and forwarding run in milliseconds, and the engine throughput benchmark drives it.
//!
//! Each client plays the Calls webapp as the plugin relays it: it joins, offers audio and the
//! `calls-dc` data channel, answers every server offer over the WebSocket, unmutes once
//! connected, and, when talking, sends one Opus-sized packet every 20 ms whose first payload
//! byte is its tag, so receivers can tell who they hear. A sharer also sends a VP8 screen in
//! two simulcast layers (`h` about 1 Mbit/s, `l` about 150 kbit/s, keyframes every 3 s and on
//! request), each packet ending in its tag and layer. A client's downlink can be given a
//! bottleneck (a rate and a drop-tail queue), so layer control is seen as a viewer would.

use std::{
    collections::{BTreeMap, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use str0m::{
    Candidate, Event, Input, Output, Rtc,
    change::{SdpAnswer, SdpOffer, SdpPendingOffer},
    channel::ChannelId,
    media::{Direction, MediaKind, Mid, Pt, Rid, Simulcast, SimulcastLayer},
    net::{Protocol, Receive},
    rtp::{ExtensionValues, RtpPacket, SeqNo},
};

use crate::{
    call::{CallId, Faults, GroupId, SessionConfig, SessionId, Sfu, SfuConfig, SfuOutput},
    metrics::Metrics,
    protocol::{
        dc::DcMessage,
        rtc::{RtcMessage, RtcType, SdpJson},
        ws::ClientMessage,
    },
};

/// The group every simulated client belongs to.
pub const GROUP: &str = "sim-group";
/// The server's (advertised) media address.
pub const SERVER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 8443);
/// One-way delay of every datagram.
pub const LATENCY: Duration = Duration::from_millis(1);
/// A talker's packet interval.
pub const VOICE_EVERY: Duration = Duration::from_millis(20);
const OPUS_PT: u8 = 111;
/// Bytes of a simulated Opus packet (about a 20 ms voice frame).
const VOICE_BYTES: usize = 160;
const VP8_PT: u8 = 96;
/// A screen frame's interval (30 frames a second).
pub const FRAME_EVERY: Duration = Duration::from_millis(33);
/// A screen layer's keyframe interval, when nobody asks for one sooner.
const KEYFRAME_EVERY: Duration = Duration::from_secs(3);
/// The simulcast layers a sharer sends: RID, packets per frame, bytes per packet.
const SCREEN_LAYERS: [(&str, usize, usize); 2] = [("h", 4, 1100), ("l", 1, 600)];
/// A bottleneck's queue: a datagram that would wait longer is dropped.
pub const LINK_QUEUE: Duration = Duration::from_millis(100);

/// What a client does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Behaviour {
    /// Sends voice every 20 ms once connected.
    pub talking: bool,
    /// Sends its SDP offer after joining (false: never, to see the offer timeout).
    pub offers: bool,
    /// Leaves server offers unanswered (to see the answer timeout).
    pub ignores_offers: bool,
    /// Shares its screen (VP8, simulcast `h` and `l`) once connected.
    pub shares_screen: bool,
}

impl Default for Behaviour {
    fn default() -> Self {
        Self {
            talking: true,
            offers: true,
            ignores_offers: false,
            shares_screen: false,
        }
    }
}

/// When a simulated publisher's video layer sends a keyframe: when asked for one, or when the
/// last is `every` old (the first frame always is one). Shared with the load generator's peers.
#[derive(Debug, Clone, Copy)]
pub struct KeyframeClock {
    every: Duration,
    due: bool,
    last: Option<Instant>,
}

impl KeyframeClock {
    /// A clock that sends a keyframe every `every` unless asked sooner.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            due: false,
            last: None,
        }
    }

    /// A keyframe was asked for (PLI/FIR): the next frame is one.
    pub fn request(&mut self) {
        self.due = true;
    }

    /// Whether the frame sent at `now` is a keyframe; if it is, it counts as the last one.
    pub fn next_is_key(&mut self, now: Instant) -> bool {
        let key = self.due || self.last.is_none_or(|t| now.duration_since(t) >= self.every);
        if key {
            self.due = false;
            self.last = Some(now);
        }
        key
    }
}

/// One simulcast layer a sharer sends.
#[derive(Debug)]
struct ScreenLayer {
    rid: Rid,
    packets: usize,
    bytes: usize,
    seq: u64,
    keyframes: KeyframeClock,
}

/// One simulated participant.
#[derive(Debug)]
pub struct Client {
    /// Its session.
    pub session: SessionId,
    /// Its call.
    pub call: CallId,
    /// Its user ID.
    pub user: String,
    /// First payload byte of everything it sends.
    pub tag: u8,
    /// What it does.
    pub behaviour: Behaviour,
    rtc: Rtc,
    audio_mid: Mid,
    screen_mid: Option<Mid>,
    screen_layers: Vec<ScreenLayer>,
    screen_started: Option<Instant>,
    next_frame: Option<Instant>,
    /// The downlink's rate in bit/s (`None`: unlimited).
    downlink_bps: Option<u64>,
    /// When the downlink has sent everything queued on it.
    downlink_free_at: Instant,
    /// Datagrams the downlink's queue dropped.
    pub downlink_dropped: u64,
    pending: Option<SdpPendingOffer>,
    dc: Option<ChannelId>,
    voice_seq: u64,
    next_voice: Option<Instant>,
    /// ICE and DTLS are up.
    pub connected: bool,
    /// The server sent `close` for its session.
    pub closed: bool,
    /// Its peer connection ended (str0m closed it).
    pub dead: bool,
    /// RTP packets received, by the sender's tag.
    pub received: HashMap<u8, u64>,
    /// Screen packets received, by the sender's tag and the layer's RID byte (`b'h'`, `b'l'`).
    pub screen_received: HashMap<(u8, u8), u64>,
    /// Server offers received (over the WebSocket).
    pub server_offers: u64,
    /// Server offers it did not answer (with `ignores_offers`).
    pub held_offers: Vec<String>,
    /// Data channel messages received from the server.
    pub dc_messages: Vec<DcMessage>,
}

impl Client {
    /// Packets received from every sender.
    pub fn received_total(&self) -> u64 {
        self.received.values().sum()
    }

    /// Screen packets received from the client tagged `tag` in layer `rid`.
    pub fn screen_packets(&self, tag: u8, rid: u8) -> u64 {
        self.screen_received.get(&(tag, rid)).copied().unwrap_or(0)
    }
}

/// The simulated network around one [`Sfu`].
#[derive(Debug)]
pub struct Sim {
    /// The simulated time.
    pub now: Instant,
    /// The core under test.
    pub sfu: Sfu,
    /// Every client, by index.
    pub clients: Vec<Client>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
    /// Datagrams on the wire, by (arrival, order sent): (from, to, bytes).
    wire: BTreeMap<(Instant, u64), (SocketAddr, SocketAddr, Vec<u8>)>,
    sent: u64,
    by_addr: HashMap<SocketAddr, usize>,
    by_session: HashMap<SessionId, usize>,
    /// Wall-clock time spent inside the server's `handle_*` calls (the core's own cost).
    pub server_time: Duration,
    /// Each client's last STUN Binding request to the server, by client index (for replays).
    pub last_check: HashMap<usize, Vec<u8>>,
    /// Addresses no client has that the server sent to (where spoofed traffic led it).
    pub stray: std::collections::HashSet<SocketAddr>,
}

fn sdp_json(kind: &str, sdp: &str) -> Vec<u8> {
    serde_json::json!({"type": kind, "sdp": sdp})
        .to_string()
        .into_bytes()
}

impl Sim {
    /// A server with no sessions, at an arbitrary start time.
    pub fn new(faults: Faults) -> Self {
        let metrics = Arc::new(Metrics::new());
        let now = Instant::now();
        let sfu = Sfu::new(SfuConfig {
            udp_candidates: vec![SERVER],
            tcp_candidates: Vec::new(),
            nack_buffer_size: 256,
            candidates_per_session: crate::config::Limits::default().candidates_per_session,
            metrics: metrics.clone(),
            shard: 0,
            faults,
            clock: Instant::now,
        });
        Self {
            now,
            sfu,
            clients: Vec::new(),
            metrics,
            wire: BTreeMap::new(),
            sent: 0,
            by_addr: HashMap::new(),
            by_session: HashMap::new(),
            server_time: Duration::ZERO,
            last_check: HashMap::new(),
            stray: Default::default(),
        }
    }

    /// A datagram arrives at the server from `from` (any address: spoofing is allowed here),
    /// now; then everything that follows from it is moved. Returns whether a session took it.
    pub fn inject(&mut self, from: SocketAddr, data: &[u8]) -> Result<bool, String> {
        let took = self
            .sfu
            .handle_receive(self.now, Protocol::Udp, from, SERVER, data);
        self.pump()?;
        Ok(took)
    }

    /// A client joins `call` (and offers, unless told not to); returns its index.
    pub fn join(&mut self, call: &str, user: &str, behaviour: Behaviour) -> Result<usize, String> {
        let i = self.clients.len();
        let tag = u8::try_from(i % 200).unwrap_or(0) + 1;
        let octets = u16::try_from(i).map_err(|_| "too many clients")?.to_be_bytes();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, octets[0], octets[1])), 5000);
        let mut rtc = Rtc::builder()
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .build(self.now);
        let cand = Candidate::host(addr, "udp").map_err(|e| e.to_string())?;
        rtc.add_local_candidate(cand);
        let session = SessionId::from(format!("sim-session-{i}"));
        let call_id = CallId::from(call);
        self.sfu.handle_join(
            self.now,
            SessionConfig {
                group_id: GroupId::from(GROUP),
                call_id: call_id.clone(),
                user_id: user.into(),
                session_id: session.clone(),
                channel_id: call.into(),
                av1_support: false,
                dc_signaling: false,
            },
            None,
        )?;
        let mut api = rtc.sdp_api();
        let audio_mid = api.add_media(
            MediaKind::Audio,
            Direction::SendRecv,
            Some(format!("voice-{i}")),
            Some(format!("mic-{i}")),
            None,
        );
        api.add_channel("calls-dc".into());
        let screen_stream = format!("screen-{i}");
        let screen_mid = behaviour.shares_screen.then(|| {
            let mut simulcast = Simulcast::new();
            for (rid, ..) in SCREEN_LAYERS {
                simulcast.add_send_layer(SimulcastLayer::new(rid));
            }
            api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some(screen_stream.clone()),
                Some(format!("screen-track-{i}")),
                Some(simulcast),
            )
        });
        let (offer, pending) = api.apply().ok_or("str0m made no offer")?;
        let client = Client {
            session: session.clone(),
            call: call_id,
            user: user.into(),
            tag,
            behaviour,
            rtc,
            audio_mid,
            screen_mid,
            screen_layers: SCREEN_LAYERS
                .iter()
                .map(|(rid, packets, bytes)| ScreenLayer {
                    rid: Rid::from(*rid),
                    packets: *packets,
                    bytes: *bytes,
                    seq: 1,
                    keyframes: KeyframeClock::new(KEYFRAME_EVERY),
                })
                .collect(),
            screen_started: None,
            next_frame: None,
            downlink_bps: None,
            downlink_free_at: self.now,
            downlink_dropped: 0,
            pending: Some(pending),
            dc: None,
            voice_seq: 0,
            next_voice: None,
            connected: false,
            closed: false,
            dead: false,
            received: HashMap::new(),
            screen_received: HashMap::new(),
            server_offers: 0,
            held_offers: Vec::new(),
            dc_messages: Vec::new(),
        };
        self.by_addr.insert(addr, i);
        self.by_session.insert(session, i);
        self.clients.push(client);
        if behaviour.shares_screen {
            // As the webapp does: the screen's stream ID first, then the offer carrying it.
            let data = serde_json::json!({ "screenStreamID": screen_stream }).to_string();
            self.client_says(i, RtcType::ScreenOn, data.into_bytes())?;
        }
        if behaviour.offers {
            let data = sdp_json("offer", &offer.to_sdp_string());
            self.client_says(i, RtcType::Sdp, data)?;
        }
        self.pump()?;
        Ok(i)
    }

    /// An `rtc` message from client `i` through the plugin.
    pub fn client_says(&mut self, i: usize, kind: RtcType, data: Vec<u8>) -> Result<(), String> {
        let c = self.clients.get(i).ok_or("no such client")?;
        let msg = RtcMessage {
            group_id: GROUP.into(),
            user_id: c.user.clone(),
            session_id: c.session.to_string(),
            call_id: c.call.to_string(),
            msg_type: kind as i64,
            data,
        };
        let t0 = Instant::now();
        let r = self.sfu.handle_rtc(self.now, &GroupId::from(GROUP), msg);
        self.server_time += t0.elapsed();
        self.route_server_output();
        r
    }

    /// Client `i` leaves.
    pub fn leave(&mut self, i: usize) -> Result<(), String> {
        let sid = self.clients.get(i).ok_or("no such client")?.session.clone();
        let r = self.sfu.handle_leave(self.now, &GroupId::from(GROUP), &sid);
        self.route_server_output();
        self.pump()?;
        r
    }

    /// Client `i` writes `msg` on its data channel.
    pub fn client_dc(&mut self, i: usize, msg: &DcMessage) -> Result<(), String> {
        let c = self.clients.get_mut(i).ok_or("no such client")?;
        let id = c.dc.ok_or("data channel not open")?;
        let mut ch = c.rtc.channel(id).ok_or("data channel gone")?;
        ch.write(true, &msg.encode()).map_err(|e| e.to_string())?;
        self.pump()
    }

    /// Client `i` sends raw bytes (any, well-formed or not) on its data channel.
    pub fn client_dc_raw(&mut self, i: usize, bytes: &[u8]) -> Result<(), String> {
        let c = self.clients.get_mut(i).ok_or("no such client")?;
        let id = c.dc.ok_or("data channel not open")?;
        let mut ch = c.rtc.channel(id).ok_or("data channel gone")?;
        ch.write(true, bytes).map_err(|e| e.to_string())?;
        self.pump()
    }

    /// Client `i` answers the server offers it held back.
    pub fn answer_held(&mut self, i: usize) -> Result<(), String> {
        let held = std::mem::take(&mut self.clients.get_mut(i).ok_or("no such client")?.held_offers);
        for sdp in held {
            self.answer_offer(i, &sdp)?;
        }
        self.pump()
    }

    fn answer_offer(&mut self, i: usize, sdp: &str) -> Result<(), String> {
        let c = self.clients.get_mut(i).ok_or("no such client")?;
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| e.to_string())?;
        let answer = c.rtc.sdp_api().accept_offer(offer).map_err(|e| e.to_string())?;
        self.client_says(i, RtcType::Sdp, sdp_json("answer", &answer.to_sdp_string()))
    }

    /// Gives client `i`'s downlink (server → client) a bottleneck of `bps` bit/s with a
    /// [`LINK_QUEUE`] drop-tail queue, or takes it away (`None`).
    pub fn set_downlink(&mut self, i: usize, bps: Option<u64>) -> Result<(), String> {
        let now = self.now;
        let c = self.clients.get_mut(i).ok_or("no such client")?;
        c.downlink_bps = bps;
        c.downlink_free_at = c.downlink_free_at.max(now);
        Ok(())
    }

    /// When a datagram the server sends now reaches `to`, or `None` when the downlink's queue
    /// drops it.
    fn downlink_arrival(&mut self, to: SocketAddr, bytes: usize) -> Option<Instant> {
        let now = self.now;
        let Some(c) = self.by_addr.get(&to).and_then(|i| self.clients.get_mut(*i)) else {
            return Some(now + LATENCY);
        };
        let Some(bps) = c.downlink_bps else {
            return Some(now + LATENCY);
        };
        let start = c.downlink_free_at.max(now);
        if start.duration_since(now) > LINK_QUEUE {
            c.downlink_dropped += 1;
            return None;
        }
        let bits = u64::try_from(bytes).unwrap_or(u64::MAX).saturating_mul(8);
        let nanos = bits.saturating_mul(1_000_000_000) / bps.max(1);
        c.downlink_free_at = start + Duration::from_nanos(nanos);
        Some(c.downlink_free_at + LATENCY)
    }

    fn put_on_wire(&mut self, at: Instant, from: SocketAddr, to: SocketAddr, data: Vec<u8>) {
        if to == SERVER
            && data.starts_with(&[0x00, 0x01])
            && let Some(&i) = self.by_addr.get(&from)
        {
            self.last_check.insert(i, data.clone());
        }
        self.sent += 1;
        self.wire.insert((at, self.sent), (from, to, data));
    }

    /// Runs the simulation for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), String> {
        let end = self.now + d;
        // Bounded: every step moves time forward by at least 100 µs.
        let max_steps = d.as_micros() / 100 + 10;
        for _ in 0..max_steps {
            self.pump()?;
            let next = self.next_event().min(end);
            if next <= self.now && self.now >= end {
                break;
            }
            self.now = next.max(self.now + Duration::from_micros(100)).min(end);
            self.tick()?;
            if self.now >= end {
                self.pump()?;
                break;
            }
        }
        Ok(())
    }

    /// The earliest time anything is due.
    fn next_event(&mut self) -> Instant {
        let far = self.now + Duration::from_secs(3600);
        let mut next = self.sfu.next_deadline().unwrap_or(far);
        if let Some(((at, _), _)) = self.wire.first_key_value() {
            next = next.min(*at);
        }
        for c in &mut self.clients {
            for t in [c.next_voice, c.next_frame].into_iter().flatten() {
                next = next.min(t);
            }
        }
        next
    }

    /// Serves timeouts and voice ticks that are due at `now`, and delivers arrived datagrams.
    fn tick(&mut self) -> Result<(), String> {
        let now = self.now;
        if self.sfu.next_deadline().is_some_and(|d| d <= now) {
            let t0 = Instant::now();
            self.sfu.handle_timeout(now);
            self.server_time += t0.elapsed();
            self.route_server_output();
        }
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.dead {
                continue;
            }
            c.rtc
                .handle_input(Input::Timeout(now))
                .map_err(|e| format!("client {i} timeout: {e}"))?;
            if c.next_voice.is_some_and(|v| v <= now) {
                send_voice(c, now);
                c.next_voice = Some(now + VOICE_EVERY);
            }
            if c.next_frame.is_some_and(|v| v <= now) {
                send_frame(c, now);
                c.next_frame = Some(now + FRAME_EVERY);
            }
        }
        Ok(())
    }

    /// Moves datagrams and signals until nothing is left to move at this instant.
    fn pump(&mut self) -> Result<(), String> {
        for _ in 0..100_000 {
            let mut moved = false;
            for i in 0..self.clients.len() {
                moved |= self.poll_client(i)?;
            }
            while self
                .wire
                .first_key_value()
                .is_some_and(|((at, _), _)| *at <= self.now)
            {
                let Some((_, (from, to, data))) = self.wire.pop_first() else {
                    break;
                };
                self.deliver(from, to, &data)?;
                moved = true;
            }
            moved |= self.route_server_output();
            if !moved {
                return Ok(());
            }
        }
        Err("the simulation did not settle".into())
    }

    fn deliver(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Result<(), String> {
        if to == SERVER {
            let t0 = Instant::now();
            self.sfu.handle_receive(self.now, Protocol::Udp, from, to, data);
            self.server_time += t0.elapsed();
            return Ok(());
        }
        let Some(&i) = self.by_addr.get(&to) else {
            self.stray.insert(to);
            return Ok(());
        };
        let c = &mut self.clients[i];
        if c.dead {
            return Ok(());
        }
        let Ok(recv) = Receive::new(Protocol::Udp, from, to, data) else {
            return Ok(());
        };
        c.rtc
            .handle_input(Input::Receive(self.now, recv))
            .map_err(|e| format!("client {i} input: {e}"))?;
        // At once: in RTP mode str0m keeps one received packet for the next `poll_output`, so
        // a second datagram handled before that poll would overwrite the first.
        self.poll_client(i).map(|_| ())
    }

    /// Drains client `i`'s outputs; true when it produced anything.
    fn poll_client(&mut self, i: usize) -> Result<bool, String> {
        let mut moved = false;
        let mut events = Vec::new();
        let mut transmits = Vec::new();
        {
            let c = &mut self.clients[i];
            if c.dead {
                return Ok(false);
            }
            loop {
                match c.rtc.poll_output() {
                    Ok(Output::Timeout(_)) => break,
                    Ok(Output::Transmit(t)) => {
                        transmits.push((t.source, t.destination, t.contents.to_vec()));
                        moved = true;
                    }
                    Ok(Output::Event(e)) => events.push(e),
                    Err(e) => {
                        tracing::debug!(client = i, error = %e, "simulated peer failed");
                        c.dead = true;
                        break;
                    }
                }
            }
        }
        let at = self.now + LATENCY;
        for (from, to, data) in transmits {
            self.put_on_wire(at, from, to, data);
        }
        for e in events {
            moved = true;
            self.client_event(i, e)?;
        }
        Ok(moved)
    }

    fn client_event(&mut self, i: usize, e: Event) -> Result<(), String> {
        let now = self.now;
        let c = &mut self.clients[i];
        match e {
            Event::Connected => {
                c.connected = true;
                if c.behaviour.shares_screen {
                    c.next_frame = Some(now);
                }
                if c.behaviour.talking {
                    c.next_voice = Some(now);
                    // The webapp unmutes once its microphone track is live.
                    return self.client_says(i, RtcType::Unmute, Vec::new());
                }
            }
            Event::ChannelOpen(id, _) => c.dc = Some(id),
            Event::ChannelData(d) => {
                if let Ok(m) = DcMessage::decode(&d.data) {
                    c.dc_messages.push(m);
                }
            }
            Event::RtpPacket(p) => note_rtp(c, &p),
            Event::KeyframeRequest(r) => {
                for l in &mut c.screen_layers {
                    if Some(r.mid) == c.screen_mid && r.rid.is_none_or(|rid| rid == l.rid) {
                        l.keyframes.request();
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Routes what the server wants done; true when there was anything.
    fn route_server_output(&mut self) -> bool {
        let mut moved = false;
        while let Some(out) = self.sfu.poll_output() {
            moved = true;
            match out {
                SfuOutput::Transmit {
                    source,
                    destination,
                    data,
                    ..
                } => {
                    if let Some(at) = self.downlink_arrival(destination, data.len()) {
                        self.put_on_wire(at, source, destination, data);
                    }
                }
                SfuOutput::Signal { session_id, msg, .. } => self.signal(&session_id, msg),
                SfuOutput::SessionClosed { .. } => {}
            }
        }
        moved
    }

    fn signal(&mut self, session: &SessionId, msg: ClientMessage) {
        let Some(&i) = self.by_session.get(session) else {
            return;
        };
        match msg {
            ClientMessage::Close { .. } => {
                self.clients[i].closed = true;
            }
            ClientMessage::Rtc(m) => {
                if let Err(e) = self.client_signal(i, &m) {
                    tracing::debug!(client = i, error = %e, "simulated client refused a signal");
                }
            }
            _ => {}
        }
    }

    fn client_signal(&mut self, i: usize, m: &RtcMessage) -> Result<(), String> {
        let c = &mut self.clients[i];
        match m.kind() {
            Some(RtcType::Sdp) => {
                let sd: SdpJson = serde_json::from_slice(&m.data).map_err(|e| e.to_string())?;
                match sd.kind.as_str() {
                    "answer" => {
                        let pending = c.pending.take().ok_or("an answer without an offer")?;
                        let answer = SdpAnswer::from_sdp_string(&sd.sdp).map_err(|e| e.to_string())?;
                        c.rtc
                            .sdp_api()
                            .accept_answer(pending, answer)
                            .map_err(|e| e.to_string())
                    }
                    "offer" => {
                        c.server_offers += 1;
                        if c.behaviour.ignores_offers {
                            c.held_offers.push(sd.sdp);
                            return Ok(());
                        }
                        self.answer_offer(i, &sd.sdp)
                    }
                    other => Err(format!("SDP of type {other}")),
                }
            }
            // Server candidates are in its answer too; trickled ones change nothing here.
            _ => Ok(()),
        }
    }
}

/// One voice packet: Opus-sized, the sender's tag first, an RFC 6464 level that swings like
/// speech.
fn send_voice(c: &mut Client, now: Instant) {
    let mut api = c.rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(c.audio_mid, None) else {
        return;
    };
    let seq = c.voice_seq;
    c.voice_seq += 1;
    let mut payload = vec![0u8; VOICE_BYTES];
    payload[0] = c.tag;
    let level = if (seq / 25).is_multiple_of(2) { -20 } else { -70 };
    let ext = ExtensionValues {
        audio_level: Some(level),
        voice_activity: Some(true),
        ..Default::default()
    };
    let rtp_time = u32::try_from((seq * 960) % (1 << 32)).unwrap_or(0);
    tx.write_rtp(
        str0m::rtp::RtpWrite::new(Pt::from(OPUS_PT), SeqNo::from(seq + 1), rtp_time, now, payload)
            .marker(seq == 0)
            .ext_vals(ext),
    );
}

/// One frame of each screen layer: VP8 packets (a keyframe when asked for, or every
/// [`KEYFRAME_EVERY`]), each ending in the sender's tag and the layer's RID byte.
fn send_frame(c: &mut Client, now: Instant) {
    let Some(mid) = c.screen_mid else { return };
    let started = *c.screen_started.get_or_insert(now);
    let rtp_time =
        u32::try_from((now.duration_since(started).as_micros() * 90 / 1000) % (1 << 32)).unwrap_or(0);
    let tag = c.tag;
    let mut api = c.rtc.direct_api();
    for l in &mut c.screen_layers {
        let Some(tx) = api.stream_tx_by_mid(mid, Some(l.rid)) else {
            continue;
        };
        let key = l.keyframes.next_is_key(now);
        let rid = l.rid.as_bytes().first().copied().unwrap_or(b'?');
        for k in 0..l.packets {
            let mut payload = vec![0u8; l.bytes];
            if k == 0 {
                // VP8 descriptor with S set, then the frame tag (P = 0 for a keyframe) and,
                // on a keyframe, its start code.
                payload[..7].copy_from_slice(&[
                    0x10,
                    if key { 0x10 } else { 0x11 },
                    0x20,
                    0x00,
                    0x9d,
                    0x01,
                    0x2a,
                ]);
            }
            let n = payload.len();
            payload[n - 2] = tag;
            payload[n - 1] = rid;
            tx.write_rtp(
                str0m::rtp::RtpWrite::new(Pt::from(VP8_PT), SeqNo::from(l.seq), rtp_time, now, payload)
                    .marker(k + 1 == l.packets)
                    .nackable(true),
            );
            l.seq += 1;
        }
    }
}

fn note_rtp(c: &mut Client, p: &RtpPacket) {
    if p.header.payload_type != Pt::from(OPUS_PT) {
        if let [.., tag, rid] = p.payload[..] {
            *c.screen_received.entry((tag, rid)).or_default() += 1;
        }
        return;
    }
    if let Some(tag) = p.payload.first() {
        *c.received.entry(*tag).or_default() += 1;
    }
}
