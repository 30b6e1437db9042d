//! Media within a call: classifying a publisher's tracks (voice, screen audio, screen, camera),
//! announcing and withdrawing them, forwarding RTP to each viewer (codec and simulcast layer
//! chosen per viewer, sequence numbers and timestamps kept continuous across switches), and
//! keyframe requests (a new viewer, a switch, a viewer's PLI/FIR; at most one a second per
//! source stream). Which layer each viewer gets is decided in [`super::layers`].

use std::time::{Duration, Instant};

use str0m::{
    Rtc,
    format::Codec,
    media::{KeyframeRequestKind, MediaKind, Mid, Rid},
    rtp::{RtpPacket, RtpWrite, Vp8Descriptor, Vp8Patch},
};

use super::{Sfu, layers::count_viewer_layer};
use crate::{
    call::{
        CallId, GroupId, SessionId,
        session::{Fwd, InStream, OutTrack, StreamSel, TrackKind, VideoSource, mime},
    },
    media::{
        keyframe::{VideoCodec, is_keyframe},
        simulcast::{Layer, LayerPolicy},
        vp8::PictureIdRewrite,
    },
};

/// rtcd forwards a viewer's keyframe request to the publisher at most this often per stream.
pub(crate) const KEYFRAME_INTERVAL: Duration = Duration::from_secs(1);

/// `{"<field>": "<id>"}` from a ScreenOn/VideoOn payload.
pub(super) fn stream_id(data: &[u8], field: &str) -> Result<String, String> {
    let v: std::collections::HashMap<String, String> =
        serde_json::from_slice(data).map_err(|e| format!("failed to unmarshal {field} msg data: {e}"))?;
    Ok(v.get(field).cloned().unwrap_or_default())
}

/// What a publisher offers for one video kind, summarised for choosing per viewer.
#[derive(Debug, Clone, Copy, Default)]
struct Offered {
    vp8: bool,
    av1: bool,
    vp8_simulcast: bool,
    av1_simulcast: bool,
    publisher_av1: bool,
}

impl Offered {
    fn of(src: &VideoSource, publisher_av1: bool) -> Self {
        Self {
            vp8: src.has_codec(VideoCodec::Vp8),
            av1: src.has_codec(VideoCodec::Av1),
            vp8_simulcast: src.simulcast(VideoCodec::Vp8),
            av1_simulcast: src.simulcast(VideoCodec::Av1),
            publisher_av1,
        }
    }

    /// rtcd's codec rule: AV1 only when both ends joined with av1Support, else VP8.
    fn codec_for(&self, viewer_av1: bool) -> Option<VideoCodec> {
        if self.av1 && viewer_av1 && self.publisher_av1 {
            Some(VideoCodec::Av1)
        } else if self.vp8 {
            Some(VideoCodec::Vp8)
        } else {
            None
        }
    }

    fn simulcast(&self, codec: VideoCodec) -> bool {
        match codec {
            VideoCodec::Vp8 => self.vp8_simulcast,
            VideoCodec::Av1 => self.av1_simulcast,
        }
    }
}

fn codec_of(pt_codec: Codec) -> Option<VideoCodec> {
    match pt_codec {
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Av1 => Some(VideoCodec::Av1),
        _ => None,
    }
}

/// A publisher's video packet as it is forwarded. The header extensions that belong to the
/// publisher's leg (MID, RID, TWCC sequence) are dropped, and audio levels do not apply.
fn forwarded(p: RtpPacket, keyframe: bool) -> Fwd {
    let mut ext = p.header.ext_vals;
    ext.mid = None;
    ext.rid = None;
    ext.rid_repair = None;
    ext.transport_cc = None;
    ext.audio_level = None;
    ext.voice_activity = None;
    Fwd {
        seq_no: *p.seq_no,
        rtp_time: p.header.timestamp,
        marker: p.header.marker,
        at: p.timestamp,
        payload: p.payload,
        ext,
        keyframe,
    }
}

/// Writes one forwarded video packet to a viewer's out-track, renumbered into its stream; false
/// when the track cannot take it (codec not negotiated, packet older than the stream's start).
fn write_video(rtc: &mut Rtc, t: &mut OutTrack, codec: VideoCodec, p: &Fwd, clock: fn() -> Instant) -> bool {
    let pt = match codec {
        VideoCodec::Vp8 => t.pt_vp8,
        VideoCodec::Av1 => t.pt_av1,
    };
    let Some(pt) = pt else { return false };
    let Some((seq, ts)) = t.seq.map_with_time(p.seq_no, p.rtp_time, p.at) else {
        return false;
    };
    let patch = if codec == VideoCodec::Vp8 {
        vp8_patch(&mut t.vp8, &p.payload)
    } else {
        None
    };
    let mut api = rtc.direct_api();
    let Some(tx) = api.stream_tx_by_mid(t.mid, None) else {
        return false;
    };
    // Forwarded video bypasses str0m's pacer, as rtcd (pion) sends without one. Paced, a
    // congested viewer's queue held up to 2 s of high-layer packets that kept flowing after a
    // switch down and buried the low layer's keyframe (freezes of 2–5 s in the `screen` browser
    // scenario); unpaced, the backlog is only the network's own queue, which the switch's drain
    // wait covers.
    tx.set_unpaced(true);
    let mut write = RtpWrite::new(pt, seq.into(), ts, p.at, p.payload.clone())
        .marker(p.marker)
        .ext_vals(p.ext.clone())
        .nackable(true);
    if let Some(patch) = patch {
        write = write.vp8_patch(patch);
    }
    let start = clock();
    tx.write_rtp(write);
    if let Some(w) = &t.writes {
        w.observe(clock().saturating_duration_since(start));
    }
    true
}

/// Puts a viewer's out-track on source stream `sel` (its first, or a switch), counted in
/// `rtcd_rtc_simulcast_viewers`; the out-stream continues where it was (a no-op before its
/// first packet).
fn start_on(metrics: &crate::metrics::Metrics, group: &str, t: &mut OutTrack, sel: StreamSel) {
    count_viewer_layer(metrics, group, t.current, -1);
    count_viewer_layer(metrics, group, Some(sel), 1);
    t.current = Some(sel);
    t.started = true;
    t.switch_not_before = None;
    t.seq.switch();
    t.vp8.switch();
}

/// The VP8 descriptor patch that keeps PictureID/TL0PICIDX continuous for this viewer.
fn vp8_patch(state: &mut PictureIdRewrite, payload: &[u8]) -> Option<Vp8Patch> {
    let d = Vp8Descriptor::parse(payload).ok()?;
    let (pic, tl0) = state.map(d.picture_id(), d.tl0_pic_idx());
    let mut b = d.patch();
    if let Some(pic) = pic {
        b = b.picture_id(pic);
    }
    if let Some(tl0) = tl0 {
        b = b.tl0_pic_idx(tl0);
    }
    b.build().ok()
}

impl Sfu {
    fn call_key(&self, sid: &SessionId) -> Option<(GroupId, CallId)> {
        self.sessions
            .get(sid)
            .map(|s| (s.cfg.group_id.clone(), s.cfg.call_id.clone()))
    }

    fn is_sharer(&self, sid: &SessionId) -> bool {
        self.call_key(sid)
            .is_some_and(|k| self.screens.get(&k) == Some(sid))
    }

    /// `ScreenOn`: this session shares its screen, with this stream ID.
    pub(super) fn screen_on(&mut self, sid: &SessionId, data: &[u8]) -> Result<(), String> {
        let id = stream_id(data, "screenStreamID")?;
        let Some(key) = self.call_key(sid) else {
            return Ok(());
        };
        if let Some(s) = self.sessions.get_mut(sid) {
            s.screen_stream_id = Some(id);
        }
        match self.screens.get(&key) {
            Some(other) if other != sid => {
                Err("screen session should not be set: the call already has a sharer".into())
            }
            _ => {
                self.screens.insert(key, sid.clone());
                Ok(())
            }
        }
    }

    /// `ScreenOff`: the share ends; viewers' screen tracks are renegotiated away.
    pub(super) fn screen_off(&mut self, now: Instant, sid: &SessionId) {
        let Some(key) = self.call_key(sid) else { return };
        if self.screens.get(&key) == Some(sid) {
            self.screens.remove(&key);
        }
        if let Some(s) = self.sessions.get_mut(sid) {
            s.screen_stream_id = None;
            s.screen_audio_mid = None;
            s.video.remove(&TrackKind::Screen);
        }
        self.unpublish(now, &key, sid, &[TrackKind::Screen, TrackKind::ScreenAudio]);
    }

    /// Announces a new publication to every viewer whose tracks are initialised.
    fn publish(&mut self, now: Instant, sid: &SessionId, kind: TrackKind) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if s.published.contains(&kind) {
            return;
        }
        s.published.push(kind);
        tracing::debug!(session = %sid, kind = kind.as_str(), "track published");
        for peer in self.call_peers(sid) {
            let Some(ps) = self.sessions.get_mut(&peer) else {
                continue;
            };
            if ps.tracks_init_done {
                ps.queue_add(sid.clone(), kind);
                self.maybe_renegotiate(now, &peer);
            }
        }
    }

    /// Withdraws publications from every viewer.
    pub(super) fn unpublish(
        &mut self,
        now: Instant,
        key: &(GroupId, CallId),
        sid: &SessionId,
        kinds: &[TrackKind],
    ) {
        if let Some(s) = self.sessions.get_mut(sid) {
            s.published.retain(|k| !kinds.contains(k));
        }
        let Some(peers) = self.calls.get(key).cloned() else {
            return;
        };
        for peer in peers.iter().filter(|p| *p != sid) {
            let Some(ps) = self.sessions.get_mut(peer) else {
                continue;
            };
            if ps.queue_removals(sid, kinds) {
                self.maybe_renegotiate(now, peer);
            }
        }
    }

    /// A publisher's m-line stopped sending (track removed or renegotiated inactive).
    pub(super) fn inbound_ended(&mut self, now: Instant, sid: &SessionId, mid: Mid) {
        let Some(key) = self.call_key(sid) else { return };
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let mut ended = Vec::new();
        if s.voice_mid == Some(mid) {
            s.voice_mid = None;
            ended.push(TrackKind::Voice);
        }
        if s.screen_audio_mid == Some(mid) {
            s.screen_audio_mid = None;
            ended.push(TrackKind::ScreenAudio);
        }
        for (kind, src) in s.video.iter_mut() {
            src.streams.retain(|_, st| st.mid != mid);
            if src.streams.is_empty() {
                ended.push(*kind);
            }
        }
        s.video.retain(|_, src| !src.streams.is_empty());
        if !ended.is_empty() {
            tracing::debug!(session = %sid, %mid, "publisher track ended");
            self.unpublish(now, &key, sid, &ended);
        }
    }

    /// One RTP packet from a publisher.
    pub(super) fn rtp(&mut self, now: Instant, sid: &SessionId, p: RtpPacket) {
        let is_sharer = self.is_sharer(sid);
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let (mid, rid) = {
            let mut api = s.rtc.direct_api();
            let Some(rx) = api.stream_rx(&p.header.ssrc) else {
                return;
            };
            (rx.mid(), rx.rid())
        };
        s.rx_streams.insert((mid, rid));
        let Some(media) = s.rtc.media(mid) else { return };
        // Which announced stream this m-line carries, decided here so nothing is copied per
        // packet.
        let media_kind = media.kind();
        let is_screen_stream = is_sharer && s.screen_stream_id.as_deref() == Some(media.stream_id());
        let is_video_stream = s.video_stream_id.as_deref() == Some(media.stream_id());
        let group = s.cfg.group_id.clone();
        let track_in = |mime: &str| {
            vec![
                ("groupID", group.to_string()),
                ("direction", "in".into()),
                ("type", mime.to_string()),
            ]
        };
        let codec = s
            .rtc
            .codec_config()
            .params()
            .iter()
            .find(|c| c.pt() == p.header.payload_type)
            .map(|c| c.spec().codec);
        let declared = match media_kind {
            MediaKind::Audio => codec == Some(Codec::Opus),
            MediaKind::Video => codec.and_then(codec_of).is_some(),
        };
        if !declared {
            // A payload type the m-line did not negotiate: never forwarded (rtcd would retype
            // or stop the track).
            self.cfg
                .metrics
                .net_dropped
                .get_or_create(&vec![
                    ("transport", "rtp".into()),
                    ("reason", "undeclared_payload_type".into()),
                ])
                .inc();
            return;
        }
        if media_kind == MediaKind::Audio {
            let kind = if s.voice_mid == Some(mid) {
                TrackKind::Voice
            } else if s.screen_audio_mid == Some(mid) {
                TrackKind::ScreenAudio
            } else if is_screen_stream {
                s.screen_audio_mid = Some(mid);
                self.cfg
                    .metrics
                    .rtp_tracks
                    .get_or_create(&track_in("audio/opus"))
                    .inc();
                self.publish(now, sid, TrackKind::ScreenAudio);
                TrackKind::ScreenAudio
            } else if s.voice_mid.is_none() {
                // rtcd's OnTrack: the voice track starts enabled.
                s.voice_mid = Some(mid);
                s.set_voice(true);
                self.cfg
                    .metrics
                    .rtp_tracks
                    .get_or_create(&track_in("audio/opus"))
                    .inc();
                self.publish(now, sid, TrackKind::Voice);
                TrackKind::Voice
            } else {
                return;
            };
            self.forward_audio(now, sid, kind, p);
            return;
        }
        let Some(codec) = codec.and_then(codec_of) else {
            return;
        };
        let kind = if is_screen_stream {
            TrackKind::Screen
        } else if is_video_stream {
            TrackKind::Video
        } else {
            // rtcd: "received unexpected video track".
            return;
        };
        let src = s.video.entry(kind).or_default();
        let sel: StreamSel = (codec, rid);
        let fresh = !src.streams.contains_key(&sel);
        let window = rid
            .as_deref()
            .and_then(Layer::from_rid)
            .unwrap_or(Layer::Low)
            .window();
        let entry = src
            .streams
            .entry(sel)
            .or_insert_with(|| InStream::new(mid, window));
        entry.rate.push(now, p.payload.len() + 12);
        let keyframe = is_keyframe(codec, &p.payload);
        let p = forwarded(p, keyframe);
        entry.gop.push(now, p.keyframe, &p);
        let offered = Offered::of(src, s.cfg.av1_support);
        if fresh {
            tracing::debug!(session = %sid, kind = kind.as_str(), ?codec, rid = ?rid, "video stream started");
            self.cfg
                .metrics
                .rtp_tracks
                .get_or_create(&track_in(mime(codec)))
                .inc();
        }
        self.publish(now, sid, kind);
        self.forward_video(now, sid, kind, sel, offered, p);
    }

    fn forward_audio(&mut self, now: Instant, sid: &SessionId, kind: TrackKind, p: RtpPacket) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if kind == TrackKind::Voice {
            if let Some(level) = p.header.ext_vals.audio_level
                && let Some(on) = s.vad.push(level.unsigned_abs(), now)
            {
                let msg = self.vad_message(sid, on);
                self.out.push_back(msg);
            }
            if !self.sessions.get(sid).is_some_and(|s| s.voice_enabled) {
                return;
            }
        }
        let mut ext = p.header.ext_vals.clone();
        ext.mid = None;
        ext.rid = None;
        ext.rid_repair = None;
        ext.transport_cc = None;
        let key = (sid.clone(), kind);
        let peers = self.take_call_peers(sid);
        for peer in &peers {
            let Some(ps) = self.sessions.get_mut(peer) else {
                continue;
            };
            let Some(t) = ps.out_tracks.get_mut(&key) else {
                continue;
            };
            if !t.active || t.removing {
                continue;
            }
            let Some((seq, ts)) = t.seq.map_with_time(*p.seq_no, p.header.timestamp, now) else {
                continue;
            };
            let (out_mid, pt) = (t.mid, t.pt);
            let mut api = ps.rtc.direct_api();
            let Some(tx) = api.stream_tx_by_mid(out_mid, None) else {
                continue;
            };
            let start = (self.cfg.clock)();
            tx.write_rtp(
                RtpWrite::new(pt, seq.into(), ts, p.timestamp, p.payload.clone())
                    .marker(p.header.marker)
                    .ext_vals(ext.clone()),
            );
            if let Some(w) = &t.writes {
                w.observe((self.cfg.clock)().saturating_duration_since(start));
            }
            ps.media_sent(now, &self.cfg.metrics);
            self.mark_dirty(peer);
        }
        self.return_peers(peers);
    }

    fn forward_video(
        &mut self,
        now: Instant,
        sid: &SessionId,
        kind: TrackKind,
        sel: StreamSel,
        offered: Offered,
        p: Fwd,
    ) {
        let (codec, _) = sel;
        let keyframe = p.keyframe;
        let key = (sid.clone(), kind);
        let mut wanted = false;
        // For a viewer that has seen nothing of this source yet: the streams whose keyframe
        // group can be replayed (empty but within moments of a keyframe, so nothing is
        // allocated; a viewer prefers its wanted stream's group), and this stream's group,
        // moved out for the loop.
        let (ready, gop) = match self.sessions.get_mut(sid).and_then(|s| s.video.get_mut(&kind)) {
            Some(src) => {
                let ready: Vec<StreamSel> = src
                    .streams
                    .iter()
                    .filter(|(_, st)| st.gop.replayable(now).is_some())
                    .map(|(sel, _)| *sel)
                    .collect();
                let gop = src.streams.get_mut(&sel).map(|st| std::mem::take(&mut st.gop));
                (ready, gop)
            }
            None => (Vec::new(), None),
        };
        let peers = self.take_call_peers(sid);
        for peer in &peers {
            let Some(ps) = self.sessions.get_mut(peer) else {
                continue;
            };
            let viewer_av1 = ps.cfg.av1_support;
            let estimate = ps.estimate_bps;
            let Some(t) = ps.out_tracks.get_mut(&key) else {
                continue;
            };
            if !t.active || t.removing {
                continue;
            }
            // The stream this viewer should get: rtcd's codec rule (and what its answer accepted),
            // and its simulcast layer.
            let viewer_av1 = viewer_av1 && t.pt_av1.is_some();
            let Some(want_codec) = offered.codec_for(viewer_av1) else {
                continue;
            };
            let want_rid = if offered.simulcast(want_codec) {
                let policy = t
                    .layers
                    .get_or_insert_with(|| LayerPolicy::new(LayerPolicy::initial(estimate)));
                Some(Rid::from(policy.current().rid()))
            } else {
                t.layers = None;
                None
            };
            let want = (want_codec, want_rid);
            if t.target != Some(want) {
                t.target = Some(want);
                t.mime = mime(want_codec);
            }
            let drained = t.switch_not_before.is_none_or(|at| now >= at);
            // A viewer that has seen nothing of this source yet, mid-keyframe: it gets the
            // keyframe so far and everything after it at once (the wanted stream's group when
            // it has one, else this one's), instead of waiting for another keyframe. `p` is the
            // group's last packet.
            let replay =
                !t.started && !keyframe && sel.0 == want.0 && (sel == want || !ready.contains(&want));
            if let Some(group) = gop.as_ref().and_then(|g| g.replayable(now)).filter(|_| replay) {
                start_on(&self.cfg.metrics, &ps.cfg.group_id.0, t, sel);
                let written = group
                    .iter()
                    .filter(|q| write_video(&mut ps.rtc, t, codec, q, self.cfg.clock))
                    .count();
                tracing::debug!(viewer = %peer, source = %sid, ?sel, ?want, packets = written, "viewer starts on the keyframe so far");
                if written > 0 {
                    ps.keyframe_out_at = Some(now);
                    ps.media_sent(now, &self.cfg.metrics);
                    self.mark_dirty(peer);
                }
                continue;
            }
            // A viewer that has seen nothing of this source yet starts on the first keyframe of
            // any layer of its codec: the layer it should get may not have started (a publisher
            // holds `h` back until its uplink estimate allows it) or its keyframe may still be
            // on the way, and a first frame now beats a better one later. The wanted layer
            // follows at its own keyframe, as any up-switch.
            let first = !t.started && keyframe && sel != want && sel.0 == want.0;
            if (sel == want && t.current != Some(want) && drained) || first {
                t.switch_not_before = None;
                if keyframe {
                    start_on(&self.cfg.metrics, &ps.cfg.group_id.0, t, sel);
                    tracing::debug!(viewer = %peer, source = %sid, ?sel, ?want, "viewer now on stream");
                } else {
                    wanted = true;
                }
            }
            if t.current == Some(sel) && write_video(&mut ps.rtc, t, codec, &p, self.cfg.clock) {
                if keyframe {
                    ps.keyframe_out_at = Some(now);
                }
                ps.media_sent(now, &self.cfg.metrics);
                self.mark_dirty(peer);
            }
        }
        self.return_peers(peers);
        if let Some(g) = gop
            && let Some(st) = self
                .sessions
                .get_mut(sid)
                .and_then(|s| s.video.get_mut(&kind))
                .and_then(|src| src.streams.get_mut(&sel))
        {
            st.gop = g;
        }
        if wanted {
            self.request_keyframe(now, sid, kind, sel);
        }
    }

    /// Asks a publisher for a keyframe on one stream, at most once a second.
    pub(super) fn request_keyframe(
        &mut self,
        now: Instant,
        source: &SessionId,
        kind: TrackKind,
        sel: StreamSel,
    ) {
        let Some(s) = self.sessions.get_mut(source) else {
            return;
        };
        let Some(mid) = s
            .video
            .get(&kind)
            .and_then(|v| v.streams.get(&sel))
            .map(|st| st.mid)
        else {
            return;
        };
        let rid = sel.1;
        if s.keyframe_requests
            .get(&(mid, rid))
            .is_some_and(|t| now.duration_since(*t) < KEYFRAME_INTERVAL)
        {
            return;
        }
        s.keyframe_requests.insert((mid, rid), now);
        if let Some(rx) = s.rtc.direct_api().stream_rx_by_mid(mid, rid) {
            rx.request_keyframe(KeyframeRequestKind::Pli);
            self.cfg
                .metrics
                .rtc_keyframe_requests
                .get_or_create(&vec![
                    ("groupID", s.cfg.group_id.to_string()),
                    ("direction", "out".into()),
                ])
                .inc();
        }
        self.mark_dirty(source);
    }

    /// A viewer asked for a keyframe on one of its out-tracks: relay to the stream it gets.
    pub(super) fn keyframe_requested(&mut self, now: Instant, viewer: &SessionId, mid: Mid) {
        let Some(vs) = self.sessions.get(viewer) else {
            return;
        };
        self.cfg
            .metrics
            .rtc_keyframe_requests
            .get_or_create(&vec![
                ("groupID", vs.cfg.group_id.to_string()),
                ("direction", "in".into()),
            ])
            .inc();
        let found = vs
            .out_tracks
            .iter()
            .find(|(_, t)| t.mid == mid)
            .map(|((src, kind), t)| (src.clone(), *kind, t.current.or(t.target)));
        if let Some((source, kind, Some(sel))) = found {
            self.request_keyframe(now, &source, kind, sel);
        }
    }

    /// Turns str0m's cumulative per-stream NACK counts into counter increments.
    pub(super) fn nack_stats(&mut self, sid: &SessionId, key: (Mid, Option<Rid>, bool), total: u64) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let seen = s.nacks_seen.entry(key).or_insert(0);
        let delta = total.saturating_sub(*seen);
        *seen = total.max(*seen);
        if delta > 0 {
            let direction = if key.2 { "in" } else { "out" };
            self.cfg
                .metrics
                .rtc_nacks
                .get_or_create(&vec![
                    ("groupID", s.cfg.group_id.to_string()),
                    ("direction", direction.into()),
                ])
                .inc_by(delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(vp8: bool, av1: bool, publisher_av1: bool) -> Offered {
        Offered {
            vp8,
            av1,
            vp8_simulcast: false,
            av1_simulcast: false,
            publisher_av1,
        }
    }

    #[test]
    fn av1_only_when_both_ends_support_it() {
        let both = offered(true, true, true);
        assert_eq!(both.codec_for(true), Some(VideoCodec::Av1));
        assert_eq!(
            both.codec_for(false),
            Some(VideoCodec::Vp8),
            "VP8 fallback for viewers without AV1"
        );
        assert_eq!(
            offered(true, true, false).codec_for(true),
            Some(VideoCodec::Vp8),
            "publisher without av1Support"
        );
        assert_eq!(
            offered(false, true, true).codec_for(false),
            None,
            "AV1 only: nothing for a VP8 viewer"
        );
        assert_eq!(offered(true, false, true).codec_for(true), Some(VideoCodec::Vp8));
    }

    #[test]
    fn stream_ids_from_screen_and_video_messages() {
        assert_eq!(
            stream_id(br#"{"screenStreamID":"abc"}"#, "screenStreamID"),
            Ok("abc".into())
        );
        assert_eq!(stream_id(br#"{}"#, "videoStreamID"), Ok(String::new()));
        assert!(stream_id(b"not json", "videoStreamID").is_err());
    }
}
