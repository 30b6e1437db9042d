//! Signaling: the client's offers and answers, trickled candidates, mute, the DataChannel
//! protocol and its signaling lock, and server offers when tracks come and go.

use std::time::Instant;

use str0m::{
    Candidate, Rtc,
    change::{SdpAnswer, SdpOffer},
    channel::ChannelData,
    format::Codec,
    media::{Direction, MediaKind, Pt},
};

use super::{Sfu, group_label, layers::count_viewer_layer};
use crate::{
    call::{
        SessionId,
        session::{MAX_OFFER_ATTEMPTS, MAX_QUEUED_CANDIDATES, OutTrack, Signaling, TrackAction},
    },
    protocol::{
        dc::{DcMessage, TrackInfo},
        rtc::{RtcType, SdpJson},
    },
};

/// Where an SDP came from, so the reply goes back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Via {
    Ws,
    Dc,
}

#[derive(serde::Deserialize)]
struct IceJson {
    #[serde(default)]
    candidate: String,
}

impl Sfu {
    pub(super) fn remote_candidate(&mut self, sid: &SessionId, data: &[u8]) -> Result<(), String> {
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
        if s.remote_candidates + s.queued_candidates.len() >= self.cfg.candidates_per_session {
            self.cfg.metrics.limit_refused("candidates_per_session");
            return Err(format!(
                "ICE candidate refused: the session has added limits.candidates_per_session ({})",
                self.cfg.candidates_per_session
            ));
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
        s.remote_candidates += 1;
        self.mark_dirty(sid);
        Ok(())
    }

    pub(super) fn incoming_sdp(
        &mut self,
        now: Instant,
        sid: &SessionId,
        data: &[u8],
        via: Via,
    ) -> Result<(), String> {
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

    pub(super) fn client_offer(
        &mut self,
        now: Instant,
        sid: &SessionId,
        sdp: &str,
        via: Via,
    ) -> Result<(), String> {
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
                Ok(c) => {
                    s.rtc.add_remote_candidate(c);
                    s.remote_candidates += 1;
                }
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

    pub(super) fn client_answer(&mut self, now: Instant, sid: &SessionId, sdp: &str) -> Result<(), String> {
        let metrics = self.cfg.metrics.clone();
        let shard = self.cfg.shard;
        let Some(s) = self.sessions.get_mut(sid) else {
            return Ok(());
        };
        let Some((pending, started, actions)) = s.take_offer() else {
            return Err("unexpected answer: no offer outstanding".into());
        };
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(a) => a,
            Err(e) => {
                s.offer_outstanding(now, pending, started, actions);
                return Err(format!("failed to parse answer: {e}"));
            }
        };
        if let Err(e) = s.rtc.sdp_api().accept_answer(*pending, answer) {
            // The offer is gone; retry its changes with a fresh one.
            s.requeue(actions);
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
            metrics.forwarded_tracks.inc_by(delta);
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

    pub(super) fn offer_timed_out(&mut self, now: Instant, sid: &SessionId) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        let Some((_, _, actions)) = s.take_offer() else {
            return;
        };
        s.offer_attempts += 1;
        s.offer_lost(actions);
        let attempts = s.offer_attempts;
        tracing::info!(session = %sid, attempts, "no answer to our offer within 10 s");
        self.error_metric(sid, "signaling_lock_timeout");
        if attempts >= MAX_OFFER_ATTEMPTS {
            self.close_session(now, sid, "renegotiation timeout");
        } else {
            self.maybe_renegotiate(now, sid);
        }
    }

    pub(super) fn set_muted(&mut self, now: Instant, sid: &SessionId, muted: bool) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        // rtcd ignores mute/unmute before the voice track exists.
        if s.voice_mid.is_none() {
            return;
        }
        // rtcd resets the detector on mute, which then reports voice off.
        s.set_voice(!muted);
        if muted {
            let msg = self.vad_message(sid, false);
            self.out.push_back(msg);
        }
        let _ = now;
    }

    pub(super) fn channel_data(&mut self, now: Instant, sid: &SessionId, d: ChannelData) {
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
                let granted = s.try_client_lock(now);
                if granted {
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
                if let Some(since) = s.release_client_lock() {
                    metrics
                        .rtc_signaling_lock_locked_time
                        .get_or_create(&group)
                        .observe(now.duration_since(since).as_secs_f64());
                    self.maybe_renegotiate(now, sid);
                }
            }
            DcMessage::Pong | DcMessage::Lock(Some(_)) | DcMessage::MediaMap(_) => {}
        }
    }

    pub(super) fn dc_write(&mut self, sid: &SessionId, binary: bool, bytes: &[u8]) -> bool {
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

    pub(super) fn send_sdp(&mut self, sid: &SessionId, json: String, via: Via) {
        if via == Via::Dc && self.dc_write(sid, true, &DcMessage::Sdp(json.clone().into_bytes()).encode()) {
            return;
        }
        self.signal(sid, RtcType::Sdp, json.into_bytes());
    }

    /// Starts a server offer for the queued track changes when nobody else is negotiating.
    pub(super) fn maybe_renegotiate(&mut self, now: Instant, sid: &SessionId) {
        let Some(s) = self.sessions.get_mut(sid) else {
            return;
        };
        if !s.answered || !s.tracks_init_done || s.pending_actions.is_empty() {
            return;
        }
        if !s.is_stable() {
            // The server wants the signaling lock: how long it waits is its grab time.
            s.lock_wanted_since.get_or_insert(now);
            return;
        }
        let waited = s
            .lock_wanted_since
            .take()
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.cfg
            .metrics
            .rtc_signaling_lock_grab_time
            .get_or_create(&group_label(&s.cfg.group_id))
            .observe(waited);
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
        s.offer_sent(now, pending, applied);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::session::TrackKind;

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
