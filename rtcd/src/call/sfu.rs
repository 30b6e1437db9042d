//! The call core: every session of every call, demultiplexing, signaling and forwarding.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::Instant,
};

use str0m::{
    Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc,
    change::{SdpAnswer, SdpOffer},
    channel::ChannelData,
    media::{Direction, MediaKind, Pt},
    net::Receive,
    rtp::Ssrc,
};

use str0m::format::Codec;
// The core's maps are keyed by authenticated input (session IDs from the plugin, remote
// addresses only after ICE accepted them): a fast non-keyed hash is safe here and cheaper per
// packet than SipHash.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

mod forward;

use forward::{count_viewer_layer, stream_id};

use super::{
    CallId, GroupId, Protocol, SessionConfig, SessionId, SfuOutput,
    session::{
        ANSWER_TIMEOUT, MAX_IMMEDIATE_TIMEOUTS, MAX_OFFER_ATTEMPTS, MAX_QUEUED_CANDIDATES, OFFER_TIMEOUT,
        OutTrack, Session, Signaling, TrackAction, TrackKind,
    },
};
use crate::{
    lifecycle::SessionGuard,
    metrics::{Labels, Metrics},
    protocol::{
        dc::{DcMessage, TrackInfo},
        rtc::{RtcMessage, RtcType},
        ws::ClientMessage,
    },
    shard::stun_local_ufrag,
};

/// What the core needs from its surroundings.
#[derive(Debug, Clone)]
pub struct SfuConfig {
    /// The addresses advertised as host candidates (UDP).
    pub udp_candidates: Vec<SocketAddr>,
    /// The addresses advertised as passive ICE-TCP host candidates.
    pub tcp_candidates: Vec<SocketAddr>,
    /// `rtc.nack_buffer_size`: packets kept per video SSRC to answer NACKs.
    pub nack_buffer_size: usize,
    /// Prometheus families.
    pub metrics: Arc<Metrics>,
    /// This core's engine shard: written into every local ICE ufrag ([`crate::shard`]).
    pub shard: usize,
    /// Faults to inject (only with the `fault-injection` feature; empty otherwise).
    pub faults: Faults,
    /// Reads the time a forwarded packet's write takes (`rtcd_rtc_rtp_tracks_writes_time`);
    /// the core's logic never reads it, it runs on the `now` it is given.
    pub clock: fn() -> Instant,
}

/// Test-only faults, read from the environment by builds with the `fault-injection` feature
/// (never in a release image): `RTCD_FAULT_PANIC_USER` makes a session of that user ID panic
/// on its first datagram once connected. Without the feature nothing reads these fields.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Panic in the sessions of this user, once connected.
    pub panic_user: Option<String>,
}

impl Faults {
    /// The faults the environment asks for, when this build can inject them.
    pub fn from_env() -> Self {
        #[cfg(feature = "fault-injection")]
        {
            Self {
                panic_user: std::env::var("RTCD_FAULT_PANIC_USER")
                    .ok()
                    .filter(|u| !u.is_empty()),
            }
        }
        #[cfg(not(feature = "fault-injection"))]
        Self::default()
    }
}

/// Where an SDP came from, so the reply goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Ws,
    Dc,
}

/// Every session of every call.
#[derive(Debug)]
pub struct Sfu {
    cfg: SfuConfig,
    sessions: HashMap<SessionId, Session>,
    calls: HashMap<(GroupId, CallId), Vec<SessionId>>,
    /// The one screen sharer of each call.
    screens: HashMap<(GroupId, CallId), SessionId>,
    by_remote: HashMap<(Protocol, SocketAddr), SessionId>,
    by_ufrag: HashMap<String, SessionId>,
    timers: BinaryHeap<Reverse<(Instant, u64, SessionId)>>,
    dirty: Vec<SessionId>,
    dirty_set: HashSet<SessionId>,
    out: VecDeque<SfuOutput>,
    next_gen: u64,
    /// Reused for the peers of a call on the forwarding path.
    peers_scratch: Vec<SessionId>,
}

fn group_label(g: &GroupId) -> Labels {
    vec![("groupID", g.to_string())]
}

#[derive(serde::Deserialize)]
struct SdpJson {
    #[serde(rename = "type")]
    kind: String,
    sdp: String,
}

#[derive(serde::Deserialize)]
struct IceJson {
    #[serde(default)]
    candidate: String,
}

impl Sfu {
    /// An empty SFU.
    pub fn new(cfg: SfuConfig) -> Self {
        Self {
            cfg,
            sessions: HashMap::default(),
            calls: HashMap::default(),
            screens: HashMap::default(),
            by_remote: HashMap::default(),
            by_ufrag: HashMap::default(),
            timers: BinaryHeap::new(),
            dirty: Vec::new(),
            dirty_set: HashSet::default(),
            out: VecDeque::new(),
            next_gen: 0,
            peers_scratch: Vec::new(),
        }
    }

    /// Every host candidate we advertise: UDP, then passive TCP.
    fn local_candidates(&self) -> Vec<Candidate> {
        let udp = self.cfg.udp_candidates.iter().map(|a| Candidate::host(*a, "udp"));
        let tcp = self.cfg.tcp_candidates.iter().map(|a| {
            Candidate::builder()
                .tcp()
                .host(*a)
                .tcptype(str0m::net::TcpType::Passive)
                .build()
        });
        udp.chain(tcp)
            .filter_map(|c| {
                c.map_err(|e| tracing::warn!(error = %e, "skipping local candidate"))
                    .ok()
            })
            .collect()
    }

    /// The next output to act on.
    pub fn poll_output(&mut self) -> Option<SfuOutput> {
        self.out.pop_front()
    }

    /// When [`Self::handle_timeout`] must next be called.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, generation, sid))) = self.timers.peek() {
            match self.sessions.get(sid) {
                Some(s) if s.timer_gen == *generation => return Some(*at),
                _ => {
                    self.timers.pop();
                }
            }
        }
        None
    }

    /// Live sessions.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// The sessions of one call (for `GET /calls/{id}/sessions`), in join order.
    pub fn sessions(&self, group: &GroupId, call: &CallId) -> Vec<SessionConfig> {
        self.calls
            .get(&(group.clone(), call.clone()))
            .map(|ids| {
                ids.iter()
                    .filter_map(|id| self.sessions.get(id))
                    .map(|s| s.cfg.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A datagram from the network (`destination` is the advertised local address). Returns
    /// whether a session took it.
    pub fn handle_receive(
        &mut self,
        now: Instant,
        proto: Protocol,
        source: SocketAddr,
        destination: SocketAddr,
        buf: &[u8],
    ) -> bool {
        let known = self.by_remote.get(&(proto, source)).cloned();
        let sid = known
            .clone()
            .or_else(|| stun_local_ufrag(buf).and_then(|u| self.by_ufrag.get(u).cloned()));
        let Some(sid) = sid else { return false };
        let Ok(recv) = Receive::new(proto, source, destination, buf) else {
            return false;
        };
        let input = Input::Receive(now, recv);
        let took = self.contained(now, &sid, |sfu| {
            sfu.receive(now, &sid, known.is_some(), (proto, source), input, buf)
        });
        // A panicking session took the datagram with it.
        took.unwrap_or(true)
    }

    fn receive(
        &mut self,
        now: Instant,
        sid: &SessionId,
        known: bool,
        remote: (Protocol, SocketAddr),
        input: Input<'_>,
        buf: &[u8],
    ) -> bool {
        let Some(s) = self.sessions.get_mut(sid) else {
            return false;
        };
        if !s.rtc.accepts(&input) {
            return false;
        }
        if !known {
            self.by_remote.insert(remote, sid.clone());
            s.remotes.push(remote);
        }
        #[cfg(feature = "fault-injection")]
        if s.connected && self.cfg.faults.panic_user.as_deref() == Some(s.cfg.user_id.as_str()) {
            panic!("fault injection: RTCD_FAULT_PANIC_USER session {sid}");
        }
        if let Err(e) = s.rtc.handle_input(input) {
            tracing::debug!(session = %sid, error = %e, "dropping datagram");
            return true;
        }
        if let Some(ssrc) = rtp_ssrc(buf)
            && !known_rx_ssrc(s, ssrc)
        {
            // str0m drops RTP of an SSRC it cannot map to a negotiated m-line without a word.
            self.cfg
                .metrics
                .net_dropped
                .get_or_create(&vec![
                    ("transport", "rtp".into()),
                    ("reason", "undeclared_ssrc".into()),
                ])
                .inc();
        }
        self.mark_dirty(sid);
        self.drain(now);
        true
    }

    /// Runs `f` for `sid`'s input or timeout; a panic in it drops that session only (counted
    /// as `rtcd_rtc_errors_total{type="panic"}` and logged with the session ID), and the
    /// other sessions go on.
    fn contained<R>(&mut self, now: Instant, sid: &SessionId, f: impl FnOnce(&mut Self) -> R) -> Option<R> {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self))) {
            Ok(r) => Some(r),
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(session = %sid, panic = %what, "panic while handling a session: dropping it, the call goes on");
                self.error_metric(sid, "panic");
                // Its peer may be in any state: close without asking it for a last word.
                self.close_session_with(now, sid, "panic", false);
                None
            }
        }
    }

    /// A `join`: creates the session's peer. The client's offer must follow within 10 s.
    pub fn handle_join(
        &mut self,
        now: Instant,
        cfg: SessionConfig,
        guard: Option<SessionGuard>,
    ) -> Result<(), String> {
        cfg.validate()
            .map_err(|e| format!("invalid session config: {e}"))?;
        if self.sessions.contains_key(&cfg.session_id) {
            return Err("failed to add session: session already exists".into());
        }
        let mut creds = IceCreds::new();
        creds.ufrag = crate::shard::tag_ufrag(&creds.ufrag, self.cfg.shard);
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .set_rtp_mode(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_av1(true)
            .set_send_buffer_video(self.cfg.nack_buffer_size.max(32))
            .enable_bwe(Some(str0m::bwe::Bitrate::kbps(250)))
            .set_stats_interval(Some(std::time::Duration::from_millis(500)))
            .set_local_ice_credentials(creds.clone())
            .build(now);
        for c in self.local_candidates() {
            rtc.add_local_candidate(c);
        }
        let sid = cfg.session_id.clone();
        self.cfg
            .metrics
            .rtc_sessions
            .get_or_create(&group_label(&cfg.group_id))
            .inc();
        self.calls
            .entry((cfg.group_id.clone(), cfg.call_id.clone()))
            .or_default()
            .push(sid.clone());
        self.by_ufrag.insert(creds.ufrag.clone(), sid.clone());
        tracing::debug!(session = %sid, call = %cfg.call_id.0, "session created");
        self.sessions.insert(
            sid.clone(),
            Session {
                cfg,
                rtc,
                ufrag: creds.ufrag,
                created: now,
                offer_deadline: Some(now + OFFER_TIMEOUT),
                answered: false,
                queued_candidates: Vec::new(),
                connected: false,
                disconnected_since: None,
                dc: None,
                tracks_init_done: false,
                voice_mid: None,
                voice_enabled: false,
                screen_audio_mid: None,
                screen_stream_id: None,
                video_stream_id: None,
                video: HashMap::default(),
                published: Vec::new(),
                keyframe_requests: HashMap::default(),
                estimate_bps: None,
                queue_delay: Default::default(),
                keyframe_out_at: None,
                nacks_seen: HashMap::default(),
                rx_streams: Default::default(),
                vad: Default::default(),
                out_tracks: HashMap::default(),
                pending_actions: Vec::new(),
                signaling: Signaling::Stable,
                offer_attempts: 0,
                remotes: Vec::new(),
                rtc_deadline: now,
                timer_gen: 0,
                _guard: guard,
            },
        );
        self.mark_dirty(&sid);
        self.drain(now);
        Ok(())
    }

    /// A `leave`.
    pub fn handle_leave(&mut self, now: Instant, group: &GroupId, session: &SessionId) -> Result<(), String> {
        match self.sessions.get(session) {
            Some(s) if &s.cfg.group_id == group => {
                self.contained(now, session, |sfu| sfu.close_session(now, session, "leave"));
                self.drain(now);
                Ok(())
            }
            _ => Err(format!("failed to close session: session {session} not found")),
        }
    }

    /// An `rtc` message from the plugin. Errors are rtcd's log lines; the message is dropped.
    pub fn handle_rtc(&mut self, now: Instant, group: &GroupId, msg: RtcMessage) -> Result<(), String> {
        if msg.session_id.is_empty() {
            return Err("invalid message: invalid SessionID value: should not be empty".into());
        }
        let Some(kind) = msg.kind() else {
            return Err(format!("invalid message: invalid Type value {}", msg.msg_type));
        };
        let sid = SessionId::from(msg.session_id.clone());
        match self.sessions.get(&sid) {
            Some(s) if &s.cfg.group_id == group => {}
            _ => return Err(format!("session not found: {sid}")),
        }
        let result = self.contained(now, &sid, |sfu| sfu.rtc_message_for(now, &sid, kind, &msg));
        self.drain(now);
        result.unwrap_or_else(|| Err(format!("session {sid} panicked on a {} message", msg.msg_type)))
    }

    fn rtc_message_for(
        &mut self,
        now: Instant,
        sid: &SessionId,
        kind: RtcType,
        msg: &RtcMessage,
    ) -> Result<(), String> {
        let sid = sid.clone();
        match kind {
            RtcType::Ice => self.remote_candidate(&sid, &msg.data),
            RtcType::Sdp => self.incoming_sdp(now, &sid, &msg.data, Via::Ws),
            RtcType::Mute | RtcType::Unmute => {
                self.set_muted(now, &sid, kind == RtcType::Mute);
                Ok(())
            }
            RtcType::ScreenOn => self.screen_on(&sid, &msg.data),
            RtcType::ScreenOff => {
                self.screen_off(now, &sid);
                Ok(())
            }
            RtcType::VideoOn => stream_id(&msg.data, "videoStreamID").map(|id| {
                if let Some(s) = self.sessions.get_mut(&sid) {
                    s.video_stream_id = Some(id);
                }
            }),
            // rtcd ignores VideoOff: the camera track ends with the client's renegotiation.
            RtcType::VideoOff => Ok(()),
            RtcType::VoiceOn | RtcType::VoiceOff => {
                Err(format!("received unexpected message type {}", msg.msg_type))
            }
        }
    }

    /// Time passed: serve every session whose deadline is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, generation, sid))) = self.timers.peek().cloned() {
            if at > now {
                break;
            }
            self.timers.pop();
            match self.sessions.get(&sid) {
                Some(s) if s.timer_gen == generation => {}
                _ => continue,
            }
            self.contained(now, &sid, |sfu| sfu.session_timeout(now, &sid));
        }
        self.drain(now);
    }

    fn session_timeout(&mut self, now: Instant, sid: &SessionId) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
            tracing::debug!(session = %sid, error = %e, "timeout input failed");
        }
        if s.offer_deadline.is_some_and(|d| d <= now) {
            tracing::warn!(session = %sid, "no offer within 10 s of join: closing");
            self.error_metric(sid, "signaling");
            self.close_session(now, sid, "offer timeout");
            return;
        }
        if s.disconnected_since
            .is_some_and(|t| t + super::session::DISCONNECTED_GRACE <= now)
        {
            tracing::info!(session = %sid, "ICE disconnected for too long: closing");
            self.cfg
                .metrics
                .rtc_conn_states
                .get_or_create(&vec![("type", "failed".into())])
                .inc();
            self.close_session(now, sid, "ice failed");
            return;
        }
        match &s.signaling {
            Signaling::ServerOffer { deadline, .. } if *deadline <= now => self.offer_timed_out(now, sid),
            Signaling::ClientLocked { since } if *since + super::session::CLIENT_LOCK_TIMEOUT <= now => {
                tracing::warn!(session = %sid, "client held the signaling lock too long: released");
                s.signaling = Signaling::Stable;
                self.maybe_renegotiate(now, sid);
            }
            _ => {}
        }
        self.mark_dirty(sid);
    }

    fn mark_dirty(&mut self, sid: &SessionId) {
        if self.dirty_set.insert(sid.clone()) {
            self.dirty.push(sid.clone());
        }
    }

    fn schedule(&mut self, sid: &SessionId) {
        let generation = self.next_gen;
        self.next_gen += 1;
        if let Some(s) = self.sessions.get_mut(sid) {
            s.timer_gen = generation;
            self.timers.push(Reverse((s.deadline(), generation, sid.clone())));
        }
    }

    /// Polls every dirty session until it has nothing more to say, handling its events.
    fn drain(&mut self, now: Instant) {
        while let Some(sid) = self.dirty.pop() {
            self.dirty_set.remove(&sid);
            self.contained(now, &sid, |sfu| sfu.drain_one(now, &sid));
        }
    }

    /// Polls one session until it waits for a timeout, then acts on its events.
    fn drain_one(&mut self, now: Instant, sid: &SessionId) {
        {
            let Some(s) = self.sessions.get_mut(sid) else {
                return;
            };
            let mut events = Vec::new();
            let mut failure = None;
            let mut immediate = 0;
            loop {
                match s.rtc.poll_output() {
                    Ok(Output::Transmit(t)) => self.out.push_back(SfuOutput::Transmit {
                        proto: t.proto,
                        source: t.source,
                        destination: t.destination,
                        data: t.contents.to_vec(),
                    }),
                    // str0m's pacer releases one packet per timeout and asks for the next
                    // timeout at once: serve it here, or each packet of a video frame waits for
                    // the runtime's timer (≈1 ms) and a 14-packet frame leaves 14 ms late.
                    Ok(Output::Timeout(t)) if t <= now && immediate < MAX_IMMEDIATE_TIMEOUTS => {
                        immediate += 1;
                        if let Err(e) = s.rtc.handle_input(Input::Timeout(now)) {
                            failure = Some(e);
                            break;
                        }
                    }
                    Ok(Output::Timeout(t)) => {
                        s.rtc_deadline = t;
                        break;
                    }
                    Ok(Output::Event(e)) => events.push(e),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            self.schedule(sid);
            for e in events {
                self.handle_event(now, sid, e);
            }
            if let Some(e) = failure {
                tracing::warn!(session = %sid, error = %e, "peer failed");
                self.error_metric(sid, "rtp");
                self.close_session(now, sid, "peer error");
            }
        }
    }

    fn handle_event(&mut self, now: Instant, sid: &SessionId, e: Event) {
        let metrics = self.cfg.metrics.clone();
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        match e {
            Event::Connected => {
                s.connected = true;
                metrics
                    .rtc_conn_states
                    .get_or_create(&vec![("type", "connected".into())])
                    .inc();
                metrics
                    .rtc_connection_time
                    .get_or_create(&group_label(&s.cfg.group_id))
                    .observe(now.duration_since(s.created).as_secs_f64());
                tracing::debug!(session = %sid, "rtc connected");
            }
            // Disconnected is transient under ICE-lite (see docs/ARCHITECTURE.md): wait before
            // giving up.
            Event::IceConnectionStateChange(IceConnectionState::Disconnected)
                if s.disconnected_since.is_none() =>
            {
                s.disconnected_since = Some(now);
                if s.connected {
                    metrics
                        .rtc_conn_states
                        .get_or_create(&vec![("type", "disconnected".into())])
                        .inc();
                }
            }
            Event::IceConnectionStateChange(
                IceConnectionState::Connected | IceConnectionState::Completed | IceConnectionState::Checking,
            ) => s.disconnected_since = None,
            Event::ChannelOpen(id, label) => {
                tracing::debug!(session = %sid, %label, "data channel open");
                s.dc = Some(id);
                metrics
                    .rtc_dc_open_time
                    .get_or_create(&group_label(&s.cfg.group_id))
                    .observe(now.duration_since(s.created).as_secs_f64());
                if !s.tracks_init_done {
                    s.tracks_init_done = true;
                    let key = (s.cfg.group_id.clone(), s.cfg.call_id.clone());
                    let publications: Vec<(SessionId, TrackKind)> = self
                        .calls
                        .get(&key)
                        .into_iter()
                        .flatten()
                        .filter(|p| *p != sid)
                        .filter_map(|p| self.sessions.get(p).map(|ps| (p, ps)))
                        .flat_map(|(p, ps)| ps.published.iter().map(move |k| (p.clone(), *k)))
                        .collect();
                    if let Some(s) = self.sessions.get_mut(sid) {
                        for (source, kind) in publications {
                            s.pending_actions.push(TrackAction::Add { source, kind });
                        }
                    }
                    self.maybe_renegotiate(now, sid);
                }
            }
            Event::ChannelData(d) => self.channel_data(now, sid, d),
            Event::ChannelClose(id) if s.dc == Some(id) => s.dc = None,
            Event::RtpPacket(p) => self.rtp(now, sid, p),
            Event::KeyframeRequest(r) => self.keyframe_requested(now, sid, r.mid),
            Event::MediaEgressStats(st) => {
                self.nack_stats(sid, (st.mid, st.rid, true), st.nacks);
                if let Some(loss) = st.loss {
                    self.egress_loss(now, sid, st.mid, loss);
                }
            }
            Event::MediaIngressStats(st) => self.nack_stats(sid, (st.mid, st.rid, false), st.nacks),
            Event::PeerStats(st) => self.transport_report(now, sid, st.rtt, st.egress_loss_fraction),
            Event::EgressBitrateEstimate(str0m::bwe::BweKind::Twcc { estimate, .. }) => {
                self.estimate(now, sid, estimate.as_f64())
            }
            Event::MediaChanged(m) if !m.direction.is_receiving() => self.inbound_ended(now, sid, m.mid),
            Event::Closed => self.close_session(now, sid, "peer closed"),
            _ => {}
        }
    }

    fn vad_message(&self, sid: &SessionId, on: bool) -> SfuOutput {
        let kind = if on { RtcType::VoiceOn } else { RtcType::VoiceOff };
        let msg = self.rtc_message(sid, kind, Vec::new());
        let group_id = self
            .sessions
            .get(sid)
            .map(|s| s.cfg.group_id.clone())
            .unwrap_or(GroupId::from(String::new()));
        SfuOutput::Signal {
            group_id,
            session_id: sid.clone(),
            msg: ClientMessage::Vad(msg),
        }
    }

    fn rtc_message(&self, sid: &SessionId, kind: RtcType, data: Vec<u8>) -> RtcMessage {
        let s = self.sessions.get(sid);
        RtcMessage {
            group_id: s.map(|s| s.cfg.group_id.to_string()).unwrap_or_default(),
            user_id: s.map(|s| s.cfg.user_id.clone()).unwrap_or_default(),
            session_id: sid.to_string(),
            call_id: s.map(|s| s.cfg.call_id.to_string()).unwrap_or_default(),
            msg_type: kind as i64,
            data,
        }
    }

    fn signal(&mut self, sid: &SessionId, kind: RtcType, data: Vec<u8>) {
        let msg = self.rtc_message(sid, kind, data);
        let group_id = GroupId::from(msg.group_id.clone());
        self.out.push_back(SfuOutput::Signal {
            group_id,
            session_id: sid.clone(),
            msg: ClientMessage::Rtc(msg),
        });
    }

    /// The other sessions of `sid`'s call.
    fn call_peers(&self, sid: &SessionId) -> Vec<SessionId> {
        let mut v = Vec::new();
        self.call_peers_into(sid, &mut v);
        v
    }

    /// The other sessions of `sid`'s call, into the per-packet scratch list (no allocation
    /// once it has grown to the call's size); give it back with [`Self::return_peers`].
    fn take_call_peers(&mut self, sid: &SessionId) -> Vec<SessionId> {
        let mut v = std::mem::take(&mut self.peers_scratch);
        self.call_peers_into(sid, &mut v);
        v
    }

    fn return_peers(&mut self, mut v: Vec<SessionId>) {
        v.clear();
        self.peers_scratch = v;
    }

    fn call_peers_into(&self, sid: &SessionId, out: &mut Vec<SessionId>) {
        out.clear();
        let Some(s) = self.sessions.get(sid) else {
            return;
        };
        if let Some(ids) = self.calls.get(&(s.cfg.group_id.clone(), s.cfg.call_id.clone())) {
            out.extend(ids.iter().filter(|p| *p != sid).cloned());
        }
    }

    fn error_metric(&self, sid: &SessionId, kind: &str) {
        let group = self
            .sessions
            .get(sid)
            .map(|s| s.cfg.group_id.to_string())
            .unwrap_or_default();
        self.cfg
            .metrics
            .rtc_errors
            .get_or_create(&vec![("groupID", group), ("type", kind.into())])
            .inc();
    }

    fn remote_candidate(&mut self, sid: &SessionId, data: &[u8]) -> Result<(), String> {
        let ice: IceJson = serde_json::from_slice(data).map_err(|e| {
            self.error_metric(sid, "ice");
            format!("failed to decode ICE candidate: {e}")
        })?;
        let Some(s) = self.sessions.get_mut(sid) else {
            return Ok(());
        };
        if ice.candidate.is_empty() {
            return Ok(());
        }
        if !s.answered {
            if s.queued_candidates.len() >= MAX_QUEUED_CANDIDATES {
                return Err("failed to queue ICE candidate: queue is full".into());
            }
            s.queued_candidates.push(ice.candidate);
            return Ok(());
        }
        let c =
            Candidate::from_sdp_string(&ice.candidate).map_err(|e| format!("invalid ICE candidate: {e}"))?;
        s.rtc.add_remote_candidate(c);
        self.mark_dirty(sid);
        Ok(())
    }

    fn incoming_sdp(&mut self, now: Instant, sid: &SessionId, data: &[u8], via: Via) -> Result<(), String> {
        let sdp: SdpJson = serde_json::from_slice(data).map_err(|e| {
            self.error_metric(sid, "signaling");
            format!("failed to unmarshal sdp: {e}")
        })?;
        match sdp.kind.as_str() {
            "offer" => self.client_offer(now, sid, &sdp.sdp, via),
            "answer" => self.client_answer(now, sid, &sdp.sdp),
            other => Err(format!("unexpected sdp type {other:?}")),
        }
    }

    fn client_offer(&mut self, now: Instant, sid: &SessionId, sdp: &str, via: Via) -> Result<(), String> {
        let Some(s) = self.sessions.get_mut(sid) else {
            return Ok(());
        };
        if matches!(s.signaling, Signaling::ServerOffer { .. }) {
            // rtcd drops a client offer that arrives while its own offer is outstanding.
            tracing::debug!(session = %sid, "client offer during server renegotiation: dropped");
            return Ok(());
        }
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| format!("failed to parse offer: {e}"))?;
        let answer = match s.rtc.sdp_api().accept_offer(offer) {
            Ok(a) => a,
            Err(e) => {
                self.error_metric(sid, "signaling");
                return Err(format!("failed to accept offer: {e}"));
            }
        };
        let answer_sdp = answer.to_sdp_string();
        // rtcd's trickled candidates name the first m-line, as pion does.
        let first_mid = answer_sdp
            .lines()
            .find_map(|l| l.strip_prefix("a=mid:"))
            .unwrap_or("0")
            .trim()
            .to_string();
        let json = serde_json::json!({"type": "answer", "sdp": answer_sdp}).to_string();
        let first = !s.answered;
        s.answered = true;
        s.offer_deadline = None;
        let queued = std::mem::take(&mut s.queued_candidates);
        for c in queued {
            match Candidate::from_sdp_string(&c) {
                Ok(c) => s.rtc.add_remote_candidate(c),
                Err(e) => tracing::debug!(session = %sid, error = %e, "dropping queued candidate"),
            }
        }
        self.send_sdp(sid, json, via);
        if first {
            // rtcd trickles its host candidates after the answer; they are in the SDP too.
            for c in self.local_candidates() {
                {
                    let data = serde_json::json!({
                        "type": "candidate",
                        "candidate": {
                            "candidate": c.to_sdp_string(),
                            "sdpMid": first_mid,
                            "sdpMLineIndex": 0,
                            "usernameFragment": null,
                        }
                    })
                    .to_string();
                    self.signal(sid, RtcType::Ice, data.into_bytes());
                }
            }
        }
        self.mark_dirty(sid);
        self.maybe_renegotiate(now, sid);
        Ok(())
    }

    fn client_answer(&mut self, now: Instant, sid: &SessionId, sdp: &str) -> Result<(), String> {
        let metrics = self.cfg.metrics.clone();
        let shard = self.cfg.shard;
        let Some(s) = self.sessions.get_mut(sid) else {
            return Ok(());
        };
        let Signaling::ServerOffer {
            pending,
            started,
            actions,
            ..
        } = std::mem::replace(&mut s.signaling, Signaling::Stable)
        else {
            return Err("unexpected answer: no offer outstanding".into());
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                s.signaling = Signaling::ServerOffer {
                    pending,
                    deadline: now + ANSWER_TIMEOUT,
                    started,
                    actions,
                };
                return Err(format!("failed to parse answer: {e}"));
            }
        };
        if let Err(e) = s.rtc.sdp_api().accept_answer(*pending, answer) {
            // The offer is gone; retry its changes with a fresh one.
            s.pending_actions.splice(0..0, actions);
            self.error_metric(sid, "signaling");
            return Err(format!("failed to accept answer: {e}"));
        }
        metrics
            .rtc_signaling_lock_locked_time
            .get_or_create(&group_label(&s.cfg.group_id))
            .observe(now.duration_since(started).as_secs_f64());
        s.offer_attempts = 0;
        let group = s.cfg.group_id.to_string();
        let (opus, vp8, av1) = (
            pt_for(&s.rtc, Codec::Opus),
            pt_for(&s.rtc, Codec::Vp8),
            pt_for(&s.rtc, Codec::Av1),
        );
        let track_gauge = |mime: &str, delta: i64| {
            let labels = vec![
                ("groupID", group.clone()),
                ("direction", "out".into()),
                ("type", mime.to_string()),
            ];
            metrics.rtp_tracks.get_or_create(&labels).inc_by(delta);
        };
        for t in s.out_tracks.values().filter(|t| t.removing && t.active) {
            track_gauge(t.mime, -1);
            count_viewer_layer(&metrics, &group, t.current, -1);
        }
        s.out_tracks.retain(|_, t| !t.removing);
        let mut activated = Vec::new();
        for (key, t) in s.out_tracks.iter_mut().filter(|(_, t)| !t.active) {
            // Only payload types the viewer accepted in its answer.
            let accepted = s
                .rtc
                .media(t.mid)
                .map(|m| m.remote_pts().to_vec())
                .unwrap_or_default();
            let ok = |pt: Option<Pt>| pt.filter(|p| accepted.is_empty() || accepted.contains(p));
            t.active = true;
            t.writes = Some(metrics.rtp_track_writes.handle(
                shard,
                vec![("groupID", group.clone()), ("type", key.1.write_label().into())],
            ));
            t.pt = opus.unwrap_or_else(|| Pt::from(111));
            t.pt_vp8 = ok(vp8);
            t.pt_av1 = ok(av1);
            activated.push(key.clone());
        }
        for (source, kind) in activated {
            self.activate_out_track(now, sid, &source, kind);
            if let Some(t) = self
                .sessions
                .get(sid)
                .and_then(|s| s.out_tracks.get(&(source, kind)))
            {
                track_gauge(t.mime, 1);
            }
        }
        self.mark_dirty(sid);
        self.maybe_renegotiate(now, sid);
        Ok(())
    }

    fn offer_timed_out(&mut self, now: Instant, sid: &SessionId) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let Signaling::ServerOffer { actions, .. } = std::mem::replace(&mut s.signaling, Signaling::Stable)
        else {
            return;
        };
        s.offer_attempts += 1;
        // The unanswered offer never took effect: forget its additions, keep its removals pending.
        s.out_tracks.retain(|_, t| t.active);
        for t in s.out_tracks.values_mut() {
            t.removing = false;
        }
        s.pending_actions.splice(0..0, actions);
        let attempts = s.offer_attempts;
        tracing::warn!(session = %sid, attempts, "no answer to our offer within 10 s");
        self.error_metric(sid, "signaling_lock_timeout");
        if attempts >= MAX_OFFER_ATTEMPTS {
            self.close_session(now, sid, "renegotiation timeout");
        } else {
            self.maybe_renegotiate(now, sid);
        }
    }

    fn set_muted(&mut self, now: Instant, sid: &SessionId, muted: bool) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        // rtcd ignores mute/unmute before the voice track exists.
        if s.voice_mid.is_none() {
            return;
        }
        s.voice_enabled = !muted;
        if muted {
            // rtcd resets the detector, which always reports voice off.
            s.vad.reset();
            let msg = self.vad_message(sid, false);
            self.out.push_back(msg);
        }
        let _ = now;
    }

    fn channel_data(&mut self, now: Instant, sid: &SessionId, d: ChannelData) {
        if !d.binary {
            if d.data == b"ping" {
                self.dc_write(sid, false, b"pong");
            }
            return;
        }
        let msg = match DcMessage::decode(&d.data) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(session = %sid, error = %e, "bad data channel message");
                self.error_metric(sid, "signaling");
                return;
            }
        };
        let metrics = self.cfg.metrics.clone();
        let group = match self.sessions.get(sid) {
            Some(s) => group_label(&s.cfg.group_id),
            None => return,
        };
        match msg {
            DcMessage::Ping => {
                self.dc_write(sid, true, &DcMessage::Pong.encode());
            }
            DcMessage::Sdp(json) => {
                if let Err(e) = self.incoming_sdp(now, sid, &json, Via::Dc) {
                    tracing::debug!(session = %sid, error = %e, "data channel sdp refused");
                }
            }
            DcMessage::LossRate(v) => metrics.rtc_client_loss.get_or_create(&group).observe(v),
            DcMessage::RoundTripTime(v) => metrics.rtc_client_rtt.get_or_create(&group).observe(v),
            DcMessage::Jitter(v) => metrics.rtc_client_jitter.get_or_create(&group).observe(v),
            DcMessage::Lock(None) => {
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                let granted = s.is_stable();
                if granted {
                    s.signaling = Signaling::ClientLocked { since: now };
                    metrics
                        .rtc_signaling_lock_grab_time
                        .get_or_create(&group)
                        .observe(0.0);
                }
                self.dc_write(sid, true, &DcMessage::Lock(Some(granted)).encode());
            }
            DcMessage::Unlock => {
                let Some(s) = self.sessions.get_mut(sid) else {
                    return;
                };
                if let Signaling::ClientLocked { since } = s.signaling {
                    metrics
                        .rtc_signaling_lock_locked_time
                        .get_or_create(&group)
                        .observe(now.duration_since(since).as_secs_f64());
                    s.signaling = Signaling::Stable;
                    self.maybe_renegotiate(now, sid);
                }
            }
            DcMessage::Pong | DcMessage::Lock(Some(_)) | DcMessage::MediaMap(_) => {}
        }
    }

    fn dc_write(&mut self, sid: &SessionId, binary: bool, bytes: &[u8]) -> bool {
        let Some(s) = self.sessions.get_mut(sid) else {
            return false;
        };
        let Some(id) = s.dc else { return false };
        let ok = s
            .rtc
            .channel(id)
            .is_some_and(|mut ch| ch.write(binary, bytes).is_ok());
        self.mark_dirty(sid);
        ok
    }

    fn send_sdp(&mut self, sid: &SessionId, json: String, via: Via) {
        if via == Via::Dc && self.dc_write(sid, true, &DcMessage::Sdp(json.clone().into_bytes()).encode()) {
            return;
        }
        self.signal(sid, RtcType::Sdp, json.into_bytes());
    }

    /// Starts a server offer for the queued track changes when nobody else is negotiating.
    fn maybe_renegotiate(&mut self, now: Instant, sid: &SessionId) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if !s.answered || !s.tracks_init_done || !s.is_stable() || s.pending_actions.is_empty() {
            return;
        }
        let actions = coalesce(std::mem::take(&mut s.pending_actions));
        let mut api = s.rtc.sdp_api();
        let mut applied = Vec::new();
        for a in actions {
            match &a {
                TrackAction::Add { source, kind } => {
                    let key = (source.clone(), *kind);
                    if s.out_tracks.contains_key(&key) {
                        continue;
                    }
                    let track_id = format!("{}_{}_{}", kind.as_str(), source.0, random_suffix());
                    let media = if kind.is_video() {
                        MediaKind::Video
                    } else {
                        MediaKind::Audio
                    };
                    let mid = api.add_media(
                        media,
                        Direction::SendOnly,
                        Some(source.to_string()),
                        Some(track_id),
                        None,
                    );
                    s.out_tracks.insert(key, OutTrack::new(mid, *kind));
                }
                TrackAction::Remove { source, kind } => {
                    let Some(t) = s.out_tracks.get_mut(&(source.clone(), *kind)) else {
                        continue;
                    };
                    if !t.active {
                        s.out_tracks.remove(&(source.clone(), *kind));
                        continue;
                    }
                    t.removing = true;
                    api.stop_media(t.mid);
                }
            }
            applied.push(a);
        }
        let Some((offer, pending)) = api.apply() else {
            return;
        };
        s.signaling = Signaling::ServerOffer {
            pending: Box::new(pending),
            deadline: now + ANSWER_TIMEOUT,
            started: now,
            actions: applied,
        };
        let via = if s.cfg.dc_signaling && s.dc.is_some() {
            Via::Dc
        } else {
            Via::Ws
        };
        let map: Vec<(String, TrackInfo)> = s
            .out_tracks
            .iter()
            .filter(|(_, t)| !t.removing)
            .map(|((source, kind), t)| {
                (
                    t.mid.to_string(),
                    TrackInfo {
                        track_type: kind.as_str().into(),
                        sender_id: source.to_string(),
                    },
                )
            })
            .collect();
        self.dc_write(sid, true, &DcMessage::MediaMap(map).encode());
        let json = serde_json::json!({"type": "offer", "sdp": offer.to_sdp_string()}).to_string();
        self.send_sdp(sid, json, via);
        self.mark_dirty(sid);
    }

    fn close_session(&mut self, now: Instant, sid: &SessionId, reason: &str) {
        self.close_session_with(now, sid, reason, true);
    }

    /// Closes `sid`; with `flush`, its peer says goodbye first (not after a panic).
    fn close_session_with(&mut self, now: Instant, sid: &SessionId, reason: &str, flush: bool) {
        let Some(mut s) = self.sessions.remove(sid) else {
            return;
        };
        tracing::debug!(session = %sid, reason, "closing session");
        if flush {
            s.rtc.disconnect();
            while let Ok(Output::Transmit(t)) = s.rtc.poll_output() {
                self.out.push_back(SfuOutput::Transmit {
                    proto: t.proto,
                    source: t.source,
                    destination: t.destination,
                    data: t.contents.to_vec(),
                });
            }
        }
        let key = (s.cfg.group_id.clone(), s.cfg.call_id.clone());
        if let Some(ids) = self.calls.get_mut(&key) {
            ids.retain(|id| id != sid);
            if ids.is_empty() {
                self.calls.remove(&key);
            }
        }
        for r in &s.remotes {
            self.by_remote.remove(r);
        }
        self.by_ufrag.remove(&s.ufrag);
        let m = &self.cfg.metrics;
        let group = s.cfg.group_id.to_string();
        m.rtc_sessions.get_or_create(&group_label(&s.cfg.group_id)).dec();
        m.rtc_conn_states
            .get_or_create(&vec![("type", "closed".into())])
            .inc();
        let track = |dir: &str, mime: &str, delta: i64| {
            let labels = vec![
                ("groupID", group.clone()),
                ("direction", dir.into()),
                ("type", mime.to_string()),
            ];
            m.rtp_tracks.get_or_create(&labels).inc_by(-delta);
        };
        if s.voice_mid.is_some() {
            track("in", "audio/opus", 1);
        }
        if s.screen_audio_mid.is_some() {
            track("in", "audio/opus", 1);
        }
        for source in s.video.values() {
            for (codec, _) in source.streams.keys() {
                track("in", super::session::mime(*codec), 1);
            }
        }
        for t in s.out_tracks.values().filter(|t| t.active) {
            track("out", t.mime, 1);
            count_viewer_layer(m, &group, t.current, -1);
        }
        if self.screens.get(&key) == Some(sid) {
            self.screens.remove(&key);
        }
        // Everyone who received this session's tracks renegotiates them away.
        let published = s.published.clone();
        self.unpublish(now, &key, sid, &published);
        self.out.push_back(SfuOutput::Signal {
            group_id: s.cfg.group_id.clone(),
            session_id: sid.clone(),
            msg: ClientMessage::Close {
                session_id: sid.to_string(),
            },
        });
        self.out.push_back(SfuOutput::SessionClosed {
            session_id: sid.clone(),
        });
    }

    /// Whether `sid` is a live session here.
    pub fn has_session(&self, sid: &SessionId) -> bool {
        self.sessions.contains_key(sid)
    }
}

/// Drops an add and a remove of the same track that cancel out.
fn coalesce(actions: Vec<TrackAction>) -> Vec<TrackAction> {
    let mut out: Vec<TrackAction> = Vec::with_capacity(actions.len());
    for a in actions {
        if let TrackAction::Remove { source, kind } = &a
            && let Some(i) = out.iter().position(
                |x| matches!(x, TrackAction::Add { source: s, kind: k } if s == source && k == kind),
            )
        {
            out.remove(i);
            continue;
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
}

/// The payload type this peer negotiated for Opus (111 unless the client chose otherwise).
fn pt_for(rtc: &Rtc, codec: Codec) -> Option<Pt> {
    rtc.codec_config()
        .params()
        .iter()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
}

/// rtcd's 8 random characters in track IDs.
fn random_suffix() -> String {
    crate::auth::random_token(8).unwrap_or_else(|_| "00000000".into())
}

/// The SSRC of an RTP (not RTCP) datagram, by RFC 7983/5761 demultiplexing.
fn rtp_ssrc(buf: &[u8]) -> Option<Ssrc> {
    let is_rtp = buf.len() >= 12 && buf[0] >> 6 == 2 && !(192..=223).contains(&buf[1]);
    is_rtp.then(|| Ssrc::from(u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]])))
}

/// Whether the session has an inbound stream for `ssrc`, as its main or its RTX SSRC.
fn known_rx_ssrc(s: &mut Session, ssrc: Ssrc) -> bool {
    let mut api = s.rtc.direct_api();
    if api.stream_rx(&ssrc).is_some() {
        return true;
    }
    s.rx_streams.iter().any(|(mid, rid)| {
        api.stream_rx_by_mid(*mid, *rid)
            .is_some_and(|rx| rx.rtx() == Some(ssrc))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtp_ssrc_only_for_rtp() {
        let mut rtp = [0u8; 12];
        rtp[0] = 0x80;
        rtp[1] = 111;
        rtp[8..12].copy_from_slice(&0x0102_0304u32.to_be_bytes());
        assert_eq!(rtp_ssrc(&rtp), Some(Ssrc::from(0x0102_0304)));
        rtp[1] = 0x80 | 96; // marker bit set: still RTP
        assert_eq!(rtp_ssrc(&rtp), Some(Ssrc::from(0x0102_0304)));
        let mut rtcp = rtp;
        rtcp[1] = 200; // sender report
        assert_eq!(rtp_ssrc(&rtcp), None);
        assert_eq!(rtp_ssrc(&[0x00, 0x01, 0, 0]), None, "STUN");
        assert_eq!(rtp_ssrc(&[22; 20]), None, "DTLS");
        assert_eq!(rtp_ssrc(&rtp[..11]), None, "truncated");
    }

    fn add(s: &str, kind: TrackKind) -> TrackAction {
        TrackAction::Add {
            source: SessionId::from(s),
            kind,
        }
    }

    fn remove(s: &str, kind: TrackKind) -> TrackAction {
        TrackAction::Remove {
            source: SessionId::from(s),
            kind,
        }
    }

    #[test]
    fn queued_changes_coalesce() {
        let v = TrackKind::Voice;
        // Added then removed before any offer: nothing to negotiate.
        assert_eq!(coalesce(vec![add("a", v), remove("a", v)]), vec![]);
        // Duplicates collapse; unrelated changes stay in order.
        assert_eq!(
            coalesce(vec![
                add("a", v),
                add("b", v),
                add("a", v),
                remove("c", TrackKind::Screen)
            ]),
            vec![add("a", v), add("b", v), remove("c", TrackKind::Screen)]
        );
        // A removal of something never added here is kept (it was negotiated earlier).
        assert_eq!(
            coalesce(vec![remove("a", v), add("a", v)]),
            vec![remove("a", v), add("a", v)]
        );
    }
}
