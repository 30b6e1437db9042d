//! The call core: every session of every call; admission (join, leave, close), demultiplexing,
//! timers, str0m's events and fault containment. Signaling lives in [`signaling`], receiving
//! and forwarding media in [`forward`], simulcast layer control in [`layers`].

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::Instant,
};

use str0m::{Candidate, Event, IceConnectionState, IceCreds, Input, Output, Rtc, net::Receive, rtp::Ssrc};
// The core's maps are keyed by authenticated input (session IDs from the plugin, remote
// addresses only after ICE accepted them): a fast non-keyed hash is safe here and cheaper per
// packet than SipHash.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

mod forward;
mod layers;
mod signaling;

use signaling::Via;

use forward::stream_id;
use layers::count_viewer_layer;

use super::{
    CallId, GroupId, Protocol, SessionConfig, SessionId, SfuOutput,
    session::{MAX_IMMEDIATE_TIMEOUTS, OFFER_TIMEOUT, Session, Signaling, TrackKind},
};
use crate::{
    lifecycle::SessionGuard,
    metrics::{Labels, Metrics},
    protocol::{
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
    /// `limits.candidates_per_session`: remote candidates one session may add.
    pub candidates_per_session: usize,
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
/// on its first datagram once connected; `RTCD_FAULT_STALL_USER` blocks the engine shard that
/// takes a join of that user for 6 s. Without the feature nothing reads these fields.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Panic in the sessions of this user, once connected.
    pub panic_user: Option<String>,
    /// Stall the shard that takes this user's join.
    pub stall_user: Option<String>,
}

impl Faults {
    /// The faults the environment asks for, when this build can inject them.
    pub fn from_env() -> Self {
        #[cfg(feature = "fault-injection")]
        {
            let var = |name: &str| std::env::var(name).ok().filter(|u| !u.is_empty());
            Self {
                panic_user: var("RTCD_FAULT_PANIC_USER"),
                stall_user: var("RTCD_FAULT_STALL_USER"),
            }
        }
        #[cfg(not(feature = "fault-injection"))]
        Self::default()
    }
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

/// A timer entry still counts: its session lives and has not been rescheduled since (entries
/// superseded by a reschedule are skipped when due, and dropped by compaction).
fn timer_is_current(sessions: &HashMap<SessionId, Session>, generation: u64, sid: &SessionId) -> bool {
    sessions.get(sid).is_some_and(|s| s.timer_gen == generation)
}

fn group_label(g: &GroupId) -> Labels {
    vec![("groupID", g.to_string())]
}

impl Sfu {
    /// Entries in each internal table, for `rtcd_engine_table_entries`: every one is back to
    /// zero once every session has ended.
    pub fn table_sizes(&self) -> [(&'static str, usize); 7] {
        [
            ("sessions", self.sessions.len()),
            ("calls", self.calls.len()),
            ("screens", self.screens.len()),
            ("remotes", self.by_remote.len()),
            ("ufrags", self.by_ufrag.len()),
            ("timers", self.timers.len()),
            ("dirty", self.dirty.len() + self.dirty_set.len()),
        ]
    }

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
            if timer_is_current(&self.sessions, *generation, sid) {
                return Some(*at);
            }
            self.timers.pop();
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
            if !s.admit_remote(now) {
                self.cfg.metrics.limit_refused("remote_address_changes");
                tracing::debug!(session = %sid, remote = %remote.1, "new remote address refused: too many, too fast");
                return false;
            }
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
        self.cfg.metrics.touch_group(cfg.group_id.as_str());
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
                media_out: false,
                lock_wanted_since: None,
                offer_deadline: Some(now + OFFER_TIMEOUT),
                answered: false,
                queued_candidates: Vec::new(),
                remote_candidates: 0,
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
                remote_tokens: super::session::REMOTE_BURST,
                remote_tokens_at: now,
                rtc_deadline: now,
                timer_gen: 0,
                guard,
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
            _ => {
                // The client's own close often beats the plugin's leave: rtcd's no-op.
                tracing::debug!(%session, "leave for a session that has gone: nothing to do");
                Ok(())
            }
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
            _ => {
                // A late candidate, mute or answer for a session that has ended (or belongs to
                // another client): nothing to act on.
                tracing::debug!(session = %sid, kind = ?kind, "rtc message for a session that has gone: dropped");
                return Ok(());
            }
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
        match kind {
            RtcType::Ice => self.remote_candidate(sid, &msg.data),
            RtcType::Sdp => self.incoming_sdp(now, sid, &msg.data, Via::Ws),
            RtcType::Mute | RtcType::Unmute => {
                self.set_muted(now, sid, kind == RtcType::Mute);
                Ok(())
            }
            RtcType::ScreenOn => self.screen_on(sid, &msg.data),
            RtcType::ScreenOff => {
                self.screen_off(now, sid);
                Ok(())
            }
            RtcType::VideoOn => stream_id(&msg.data, "videoStreamID").map(|id| {
                if let Some(s) = self.sessions.get_mut(sid) {
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
            if !timer_is_current(&self.sessions, generation, &sid) {
                continue;
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
            tracing::info!(session = %sid, "no offer within 10 s of join: closing");
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
                tracing::info!(session = %sid, "client held the signaling lock too long: released");
                s.release_client_lock();
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
        // Rescheduling leaves the superseded entry in the heap until its time comes; under load
        // those pile up with the reschedule rate. Past twice the sessions, drop them at once, so
        // the heap stays proportional to the sessions whatever the timing.
        if self.timers.len() > 2 * self.sessions.len() + 16 {
            let sessions = &self.sessions;
            self.timers
                .retain(|Reverse((_, g, id))| timer_is_current(sessions, *g, id));
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
            tracing::info!(session = %sid, error = %e, "peer failed");
            self.error_metric(sid, "rtp");
            self.close_session(now, sid, "peer error");
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
                            s.queue_add(source, kind);
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
            if dir == "out" {
                m.forwarded_tracks.inc_by(-delta);
            }
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
            guard: s.guard.take(),
        });
    }

    /// Whether `sid` is a live session here.
    pub fn has_session(&self, sid: &SessionId) -> bool {
        self.sessions.contains_key(sid)
    }

    /// The faults this core was asked to inject.
    pub fn faults(&self) -> &Faults {
        &self.cfg.faults
    }
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
}
