//! One participant: its str0m peer, its signaling state and the tracks it publishes and
//! receives.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use str0m::{
    Rtc,
    channel::ChannelId,
    media::{Mid, Pt, Rid},
    rtp::ExtensionValues,
};

use super::{SessionConfig, SessionId};
use crate::{
    lifecycle::SessionGuard,
    media::{
        gop::Gop,
        keyframe::VideoCodec,
        rebase::SeqRebase,
        simulcast::{Layer, LayerPolicy, QueueDelay, RateMonitor},
        vad::VoiceDetector,
        vp8::PictureIdRewrite,
    },
};

/// rtcd: the client's first offer must come within this long of `join`.
pub(crate) const OFFER_TIMEOUT: Duration = Duration::from_secs(10);
/// rtcd: a server offer's answer must come within this long.
pub(crate) const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may hold the DataChannel signaling lock before it is taken back.
pub(crate) const CLIENT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);
/// ICE `Disconnected` for this long counts as failed (pion: 5 s disconnected + 25 s failed).
pub(crate) const DISCONNECTED_GRACE: Duration = Duration::from_secs(30);
/// rtcd queues at most this many inbound candidates until the answer.
pub(crate) const MAX_QUEUED_CANDIDATES: usize = 40;
/// New remote addresses a session may add at once: the first checks from each of a client's
/// candidates (host, reflexive, relayed; UDP and TCP).
pub(crate) const REMOTE_BURST: f64 = 8.0;
/// After the burst, one more new remote address per this long. An authenticated peer that
/// spoofs its source to point media at a victim (pion/ice#21) can move it this often at most.
pub(crate) const REMOTE_REFILL: Duration = Duration::from_secs(5);
/// Remote addresses one session may use, at most.
pub(crate) const MAX_REMOTES: usize = 32;
/// Server offers that may time out in a row before the session is closed.
pub(crate) const MAX_OFFER_ATTEMPTS: u32 = 3;
/// Timeouts a session's peer may ask for "now" within one drain (its pacer asks once per
/// packet); past this the rest waits for the timer, so one session cannot starve the shard.
pub(crate) const MAX_IMMEDIATE_TIMEOUTS: u32 = 1024;

/// What a track carries (rtcd's `trackType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum TrackKind {
    Voice,
    ScreenAudio,
    Screen,
    Video,
}

impl TrackKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Voice => "voice",
            Self::ScreenAudio => "screen-audio",
            Self::Screen => "screen",
            Self::Video => "video",
        }
    }

    /// rtcd's `type` label of `rtcd_rtc_rtp_tracks_writes_time` (a camera is `screen` too).
    pub(crate) fn write_label(self) -> &'static str {
        match self {
            Self::Voice => "voice",
            Self::ScreenAudio => "screen-audio",
            Self::Screen | Self::Video => "screen",
        }
    }

    pub(crate) fn is_video(self) -> bool {
        matches!(self, Self::Screen | Self::Video)
    }
}

/// One incoming video stream of a publisher: codec and simulcast layer.
pub(crate) type StreamSel = (VideoCodec, Option<Rid>);

/// A video packet as forwarded: what a viewer's out-stream is written from.
#[derive(Debug, Clone)]
pub(crate) struct Fwd {
    /// The source's extended sequence number and RTP time.
    pub(crate) seq_no: u64,
    pub(crate) rtp_time: u32,
    pub(crate) marker: bool,
    /// When it arrived.
    pub(crate) at: Instant,
    pub(crate) payload: Arc<[u8]>,
    /// The header extensions it keeps.
    pub(crate) ext: ExtensionValues,
    /// It starts a keyframe.
    pub(crate) keyframe: bool,
}

/// One incoming video stream of a publisher.
#[derive(Debug)]
pub(crate) struct InStream {
    /// The m-line it arrives on.
    pub(crate) mid: Mid,
    /// Its measured rate.
    pub(crate) rate: RateMonitor,
    /// Its packets since the latest keyframe began, for a viewer starting mid-keyframe.
    pub(crate) gop: Gop<Fwd>,
}

impl InStream {
    pub(crate) fn new(mid: Mid, window: Duration) -> Self {
        Self {
            mid,
            rate: RateMonitor::new(window),
            gop: Gop::default(),
        }
    }
}

/// What a publisher sends for one video track kind.
#[derive(Debug, Default)]
pub(crate) struct VideoSource {
    /// (codec, rid) → the stream.
    pub(crate) streams: HashMap<StreamSel, InStream>,
}

impl VideoSource {
    pub(crate) fn has_codec(&self, codec: VideoCodec) -> bool {
        self.streams.keys().any(|(c, _)| *c == codec)
    }

    pub(crate) fn simulcast(&self, codec: VideoCodec) -> bool {
        self.streams.keys().any(|(c, r)| *c == codec && r.is_some())
    }

    pub(crate) fn rate(&self, codec: VideoCodec, layer: Layer) -> Option<f64> {
        let rid = Rid::from(layer.rid());
        self.streams
            .get(&(codec, Some(rid)))
            .and_then(|st| st.rate.rate_bps())
    }
}

/// A pending change to what this session receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TrackAction {
    Add { source: SessionId, kind: TrackKind },
    Remove { source: SessionId, kind: TrackKind },
}

/// One forwarded track towards this session.
#[derive(Debug)]
pub(crate) struct OutTrack {
    pub(crate) mid: Mid,
    /// Negotiated (answer accepted): packets may be written.
    pub(crate) active: bool,
    /// Being negotiated away: nothing more is written.
    pub(crate) removing: bool,
    /// The receiver's payload types: audio, then VP8 and AV1.
    pub(crate) pt: Pt,
    pub(crate) pt_vp8: Option<Pt>,
    pub(crate) pt_av1: Option<Pt>,
    pub(crate) seq: SeqRebase,
    /// Video: the source stream being forwarded, and the one wanted next.
    pub(crate) current: Option<StreamSel>,
    pub(crate) target: Option<StreamSel>,
    /// Screen simulcast: this viewer's layer choice.
    pub(crate) layers: Option<LayerPolicy>,
    /// The `type` label of `rtcd_rtc_rtp_tracks_total`.
    pub(crate) mime: &'static str,
    /// VP8 PictureID/TL0PICIDX continuity across switches.
    pub(crate) vp8: PictureIdRewrite,
    /// After a congestion down-switch: the new layer is sent only from this time on, so the
    /// bottleneck queue drains and its keyframe is not lost.
    pub(crate) switch_not_before: Option<Instant>,
    /// Video: a stream has been forwarded to this track (its first frame may come from any
    /// layer; see `Sfu::forward_video`).
    pub(crate) started: bool,
    /// This shard's `rtcd_rtc_rtp_tracks_writes_time` handle for the track, once negotiated.
    pub(crate) writes: Option<std::sync::Arc<crate::metrics::WriteTimer>>,
}

/// rtcd's track `type` label for a codec.
pub(crate) fn mime(codec: VideoCodec) -> &'static str {
    match codec {
        VideoCodec::Vp8 => "video/VP8",
        VideoCodec::Av1 => "video/AV1",
    }
}

impl OutTrack {
    pub(crate) fn new(mid: Mid, kind: TrackKind) -> Self {
        // One video frame at 90 kHz and 30 fps, or one 20 ms Opus packet at 48 kHz.
        let (clock_hz, ticks) = if kind.is_video() {
            (90_000, 3000)
        } else {
            (48_000, 960)
        };
        Self {
            mid,
            active: false,
            removing: false,
            pt: Pt::from(111),
            pt_vp8: None,
            pt_av1: None,
            seq: SeqRebase::new(clock_hz, ticks),
            current: None,
            target: None,
            layers: None,
            mime: if kind.is_video() {
                "video/VP8"
            } else {
                "audio/opus"
            },
            vp8: PictureIdRewrite::default(),
            switch_not_before: None,
            started: false,
            writes: None,
        }
    }
}

/// Who may change the session's SDP right now.
#[derive(Debug)]
pub(crate) enum Signaling {
    /// Nobody is negotiating.
    Stable,
    /// We sent an offer and wait for its answer.
    ServerOffer {
        pending: Box<str0m::change::SdpPendingOffer>,
        deadline: Instant,
        started: Instant,
        /// The changes this offer carries, to retry if it times out.
        actions: Vec<TrackAction>,
    },
    /// The client holds the DataChannel lock.
    ClientLocked { since: Instant },
}

pub(crate) struct Session {
    pub(crate) cfg: SessionConfig,
    pub(crate) rtc: Rtc,
    pub(crate) ufrag: String,
    pub(crate) created: Instant,
    /// A media packet was forwarded to this session (`rtcd_rtc_first_packet_time` observed).
    pub(crate) media_out: bool,
    /// Since when a server offer has waited for the signaling lock (an offer of ours or the
    /// client's lock outstanding), for `rtcd_rtc_signaling_lock_grab_time`.
    pub(crate) lock_wanted_since: Option<Instant>,
    /// Set until the first client offer arrives.
    pub(crate) offer_deadline: Option<Instant>,
    /// The first answer was sent: trickled ICE can be applied directly.
    pub(crate) answered: bool,
    pub(crate) queued_candidates: Vec<String>,
    /// Remote candidates added so far (trickled after the answer, and queued ones).
    pub(crate) remote_candidates: usize,
    pub(crate) connected: bool,
    pub(crate) disconnected_since: Option<Instant>,
    pub(crate) dc: Option<ChannelId>,
    /// Existing publishers were offered once the DataChannel opened (rtcd's tracksInitDone).
    pub(crate) tracks_init_done: bool,
    /// The incoming voice m-line, once its first RTP packet arrived.
    pub(crate) voice_mid: Option<Mid>,
    /// The screen audio m-line, once its first RTP packet arrived.
    pub(crate) screen_audio_mid: Option<Mid>,
    /// `ScreenOn`/`VideoOn` stream IDs.
    pub(crate) screen_stream_id: Option<String>,
    pub(crate) video_stream_id: Option<String>,
    /// Published video, by kind.
    pub(crate) video: HashMap<TrackKind, VideoSource>,
    /// Track kinds announced to the call.
    pub(crate) published: Vec<TrackKind>,
    /// Last keyframe request sent to this publisher, per stream (at most one a second).
    pub(crate) keyframe_requests: HashMap<(Mid, Option<Rid>), Instant>,
    /// This session's downlink estimate (TWCC), bits per second.
    pub(crate) estimate_bps: Option<f64>,
    /// Queueing delay towards this session, from str0m's transport-wide round trips.
    pub(crate) queue_delay: QueueDelay,
    /// When a video keyframe was last forwarded to this session: its burst queues for a moment.
    pub(crate) keyframe_out_at: Option<Instant>,
    /// Cumulative NACK counts last seen in str0m's stats, per (mid, rid, egress).
    pub(crate) nacks_seen: HashMap<(Mid, Option<Rid>, bool), u64>,
    /// Inbound streams seen, to recognise their RTX SSRCs (see `Sfu::count_undeclared`).
    pub(crate) rx_streams: HashSet<(Mid, Option<Rid>)>,
    pub(crate) voice_enabled: bool,
    pub(crate) vad: VoiceDetector,
    /// (source session, kind) → what we forward to this session.
    pub(crate) out_tracks: HashMap<(SessionId, TrackKind), OutTrack>,
    pub(crate) pending_actions: Vec<TrackAction>,
    pub(crate) signaling: Signaling,
    pub(crate) offer_attempts: u32,
    /// Remote addresses learnt for demux, removed with the session.
    pub(crate) remotes: Vec<(super::Protocol, SocketAddr)>,
    /// New remote addresses this session may still add now (see [`Session::admit_remote`]).
    pub(crate) remote_tokens: f64,
    /// When `remote_tokens` was last refilled.
    pub(crate) remote_tokens_at: Instant,
    /// When the rtc wants `Input::Timeout`.
    pub(crate) rtc_deadline: Instant,
    pub(crate) timer_gen: u64,
    /// Ends the session for the drain when dropped: handed to the engine with `SessionClosed`.
    pub(crate) guard: Option<SessionGuard>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A media packet was just forwarded to this session: the first one observes
    /// `rtcd_rtc_first_packet_time` (join to first media out).
    pub(crate) fn media_sent(&mut self, now: Instant, metrics: &crate::metrics::Metrics) {
        if !self.media_out {
            self.media_out = true;
            metrics
                .rtc_first_packet_time
                .get_or_create(&vec![("groupID", self.cfg.group_id.to_string())])
                .observe(now.saturating_duration_since(self.created).as_secs_f64());
        }
    }

    /// Whether a datagram from a remote address this session has not used yet may be taken
    /// (and media may then go there): a burst of [`REMOTE_BURST`], then one per
    /// [`REMOTE_REFILL`], and [`MAX_REMOTES`] in all.
    pub(crate) fn admit_remote(&mut self, now: Instant) -> bool {
        if self.remotes.len() >= MAX_REMOTES {
            return false;
        }
        let refill =
            now.saturating_duration_since(self.remote_tokens_at).as_secs_f64() / REMOTE_REFILL.as_secs_f64();
        self.remote_tokens = (self.remote_tokens + refill).min(REMOTE_BURST);
        self.remote_tokens_at = now;
        if self.remote_tokens < 1.0 {
            return false;
        }
        self.remote_tokens -= 1.0;
        true
    }

    /// The earliest time this session needs attention.
    pub(crate) fn deadline(&self) -> Instant {
        let mut d = self.rtc_deadline;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                d = d.min(t);
            }
        };
        consider(self.offer_deadline);
        consider(self.disconnected_since.map(|t| t + DISCONNECTED_GRACE));
        match &self.signaling {
            Signaling::ServerOffer { deadline, .. } => consider(Some(*deadline)),
            Signaling::ClientLocked { since } => consider(Some(*since + CLIENT_LOCK_TIMEOUT)),
            Signaling::Stable => {}
        }
        d
    }

    pub(crate) fn is_stable(&self) -> bool {
        matches!(self.signaling, Signaling::Stable)
    }

    /// Signaling: our offer went out; its answer is due within [`ANSWER_TIMEOUT`].
    pub(crate) fn offer_sent(
        &mut self,
        now: Instant,
        pending: str0m::change::SdpPendingOffer,
        actions: Vec<TrackAction>,
    ) {
        self.offer_outstanding(now, Box::new(pending), now, actions);
    }

    /// Signaling: an offer (sent at `started`) is outstanding again, with a fresh deadline.
    pub(crate) fn offer_outstanding(
        &mut self,
        now: Instant,
        pending: Box<str0m::change::SdpPendingOffer>,
        started: Instant,
        actions: Vec<TrackAction>,
    ) {
        self.signaling = Signaling::ServerOffer {
            pending,
            deadline: now + ANSWER_TIMEOUT,
            started,
            actions,
        };
    }

    /// Signaling: takes the outstanding server offer (back to stable), if there is one:
    /// (pending, when it was sent, the changes it carries).
    pub(crate) fn take_offer(
        &mut self,
    ) -> Option<(Box<str0m::change::SdpPendingOffer>, Instant, Vec<TrackAction>)> {
        match std::mem::replace(&mut self.signaling, Signaling::Stable) {
            Signaling::ServerOffer {
                pending,
                started,
                actions,
                ..
            } => Some((pending, started, actions)),
            other => {
                self.signaling = other;
                None
            }
        }
    }

    /// Signaling: the client asks for the DataChannel lock; granted only while stable.
    pub(crate) fn try_client_lock(&mut self, now: Instant) -> bool {
        let granted = self.is_stable();
        if granted {
            self.signaling = Signaling::ClientLocked { since: now };
        }
        granted
    }

    /// Signaling: releases the client's lock (back to stable); when it was taken, if held.
    pub(crate) fn release_client_lock(&mut self) -> Option<Instant> {
        let Signaling::ClientLocked { since } = self.signaling else {
            return None;
        };
        self.signaling = Signaling::Stable;
        Some(since)
    }

    /// Queues a viewer's out-track for `source`'s `kind` for the next server offer.
    pub(crate) fn queue_add(&mut self, source: SessionId, kind: TrackKind) {
        self.pending_actions.push(TrackAction::Add { source, kind });
    }

    /// `source` stopped publishing `kinds`: drops queued additions of them and queues the
    /// removal of those this viewer has; true when a removal was queued.
    pub(crate) fn queue_removals(&mut self, source: &SessionId, kinds: &[TrackKind]) -> bool {
        self.pending_actions.retain(
            |a| !matches!(a, TrackAction::Add { source: s, kind } if s == source && kinds.contains(kind)),
        );
        let mut queued = false;
        for kind in kinds {
            if self.out_tracks.contains_key(&(source.clone(), *kind)) {
                self.pending_actions.push(TrackAction::Remove {
                    source: source.clone(),
                    kind: *kind,
                });
                queued = true;
            }
        }
        queued
    }

    /// Puts the changes of an offer that did not take effect back in front of the queue.
    pub(crate) fn requeue(&mut self, actions: Vec<TrackAction>) {
        self.pending_actions.splice(0..0, actions);
    }

    /// An unanswered offer never took effect: forgets the out-tracks it added and un-marks
    /// those it was removing, then queues its changes again.
    pub(crate) fn offer_lost(&mut self, actions: Vec<TrackAction>) {
        self.out_tracks.retain(|_, t| t.active);
        for t in self.out_tracks.values_mut() {
            t.removing = false;
        }
        self.requeue(actions);
    }

    /// Mute (false) or unmute (true) the voice track; muting resets the voice detector.
    pub(crate) fn set_voice(&mut self, enabled: bool) {
        self.voice_enabled = enabled;
        if !enabled {
            self.vad.reset();
        }
    }
}
