//! Layer control: per viewer, its bandwidth estimate, the loss it reports and the queueing
//! delay str0m's transport feedback shows move its simulcast screen tracks between layers
//! (down at once, up at most once a second with a backoff), and the estimator is told what a
//! screen viewer should sustain.

use std::time::{Duration, Instant};

use str0m::{
    bwe::Bitrate,
    media::{Mid, Rid},
};

use super::Sfu;
use crate::{
    call::{
        SessionId,
        session::{StreamSel, TrackKind},
    },
    media::{keyframe::VideoCodec, simulcast::Layer},
    metrics::Metrics,
};

/// str0m's defaults for the retransmission buffer, restated when it is reset.
const RTX_MAX_AGE: Duration = Duration::from_secs(3);
const RTX_RATIO_CAP: Option<f32> = Some(0.15);
/// After a congestion down-switch, the wait before taking the low layer's keyframe.
pub(crate) const DRAIN_WAIT: Duration = Duration::from_millis(400);
/// After a keyframe to a viewer, its queueing delay is not read for this long (see
/// `Sfu::transport_report`).
const KEYFRAME_QUEUE_GRACE: Duration = Duration::from_secs(2);
/// Transport-wide loss counts every packet of the session (audio, every video stream): it is
/// weighed half against the per-stream loss threshold, so 10 % lost comes down.
const TRANSPORT_LOSS_SCALE: f32 = 0.5;
/// What a screen viewer's estimator sustains (padding, when media falls short) and probes for.
const SCREEN_BWE_MIN: Bitrate = Bitrate::kbps(300);
const SCREEN_BWE_DESIRED: Bitrate = Bitrate::kbps(3000);

/// Moves one viewer's count in `rtcd_rtc_simulcast_viewers` by `delta` for the layer of `sel`
/// (nothing for a stream without a RID).
pub(super) fn count_viewer_layer(metrics: &Metrics, group: &str, sel: Option<StreamSel>, delta: i64) {
    if let Some((_, Some(rid))) = sel {
        metrics
            .rtc_simulcast_viewers
            .get_or_create(&vec![("groupID", group.to_string()), ("layer", rid.to_string())])
            .inc_by(delta);
    }
}

impl Sfu {
    /// A viewer's downlink estimate: reconsider its simulcast layers.
    pub(super) fn estimate(&mut self, now: Instant, viewer: &SessionId, bps: f64) {
        let Some(vs) = self.sessions.get_mut(viewer) else {
            return;
        };
        vs.estimate_bps = Some(bps);
        tracing::trace!(%viewer, bps, "downlink estimate");
        let tracks: Vec<(SessionId, TrackKind, VideoCodec)> = vs
            .out_tracks
            .iter()
            .filter(|(_, t)| t.layers.is_some())
            .filter_map(|((src, kind), t)| t.target.map(|(c, _)| (src.clone(), *kind, c)))
            .collect();
        for (source, kind, codec) in tracks {
            let high = self
                .sessions
                .get(&source)
                .and_then(|s| s.video.get(&kind))
                .and_then(|v| v.rate(codec, Layer::High));
            let Some(vs) = self.sessions.get_mut(viewer) else {
                return;
            };
            let Some(t) = vs.out_tracks.get_mut(&(source.clone(), kind)) else {
                continue;
            };
            let Some(policy) = t.layers.as_mut() else { continue };
            let Some(layer) = policy.decide(now, bps, high) else {
                continue;
            };
            let sel = (codec, Some(Rid::from(layer.rid())));
            tracing::debug!(%viewer, %source, layer = layer.rid(), estimate = bps, "simulcast layer change");
            if layer == Layer::Low {
                self.down_switch(now, viewer, (source.clone(), kind), sel);
                continue;
            }
            t.target = Some(sel);
            let group = vs.cfg.group_id.to_string();
            self.count_switch(group, layer);
            self.request_keyframe(now, &source, kind, sel);
        }
    }

    fn count_switch(&self, group: String, layer: Layer) {
        self.cfg
            .metrics
            .rtc_layer_switches
            .get_or_create(&vec![("groupID", group), ("layer", layer.rid().into())])
            .inc();
    }

    /// Moves a viewer down to `sel` (the low layer) because its link is congested: the high
    /// layer stops at once, its retransmission history is dropped, and the low layer is taken
    /// from its first keyframe after the bottleneck had time to drain.
    fn down_switch(&mut self, now: Instant, viewer: &SessionId, key: (SessionId, TrackKind), sel: StreamSel) {
        let Some(vs) = self.sessions.get_mut(viewer) else {
            return;
        };
        let group = vs.cfg.group_id.to_string();
        let Some(t) = vs.out_tracks.get_mut(&key) else {
            return;
        };
        t.target = Some(sel);
        count_viewer_layer(&self.cfg.metrics, &group, t.current.take(), -1);
        t.switch_not_before = Some(now + DRAIN_WAIT);
        let out_mid = t.mid;
        self.shed_retransmissions(viewer, out_mid);
        self.count_switch(group, Layer::Low);
    }

    /// Forgets the high layer's packets kept for retransmission to this viewer: after a
    /// congestion down-switch, answering its NACKs with high-layer packets would only keep the
    /// bottleneck full while the low layer's keyframe tries to get through.
    fn shed_retransmissions(&mut self, viewer: &SessionId, out_mid: Mid) {
        let size = self.cfg.nack_buffer_size.max(32);
        let Some(vs) = self.sessions.get_mut(viewer) else {
            return;
        };
        if let Some(tx) = vs.rtc.direct_api().stream_tx_by_mid(out_mid, None) {
            tx.set_rtx_cache(size, RTX_MAX_AGE, RTX_RATIO_CAP);
        }
    }

    /// A viewer reported the loss on one of its out-tracks (receiver reports, once a second).
    pub(super) fn egress_loss(&mut self, now: Instant, viewer: &SessionId, mid: Mid, loss: f32) {
        tracing::trace!(%viewer, %mid, loss, "downlink loss report");
        let Some(vs) = self.sessions.get_mut(viewer) else {
            return;
        };
        let Some((key, t)) = vs.out_tracks.iter_mut().find(|(_, t)| t.mid == mid) else {
            return;
        };
        let key = key.clone();
        let Some(codec) = t.target.map(|(c, _)| c) else {
            return;
        };
        let Some(layer) = t.layers.as_mut().and_then(|p| p.congested(now, loss)) else {
            return;
        };
        tracing::debug!(%viewer, source = %key.0, loss, "simulcast layer change on loss");
        self.down_switch(now, viewer, key, (codec, Some(Rid::from(layer.rid()))));
    }

    /// str0m's transport-wide view of a viewer's downlink (TWCC, every stats interval): the
    /// round trip of the last reported packet and the share lost over the last second. A queue
    /// standing in front of the viewer, or heavy loss, moves its simulcast tracks off `h` before
    /// the viewer's own receiver reports (about once a second) would. A keyframe's burst may
    /// queue for a moment: the delay is not read within `KEYFRAME_QUEUE_GRACE` of one.
    pub(super) fn transport_report(
        &mut self,
        now: Instant,
        viewer: &SessionId,
        rtt: Option<Duration>,
        loss: Option<f32>,
    ) {
        let Some(vs) = self.sessions.get_mut(viewer) else {
            return;
        };
        let delay = rtt.map(|r| vs.queue_delay.push(now, r));
        tracing::trace!(%viewer, ?rtt, ?delay, ?loss, "downlink transport report");
        let after_keyframe = vs
            .keyframe_out_at
            .is_some_and(|k| now.duration_since(k) < KEYFRAME_QUEUE_GRACE);
        let mut down = Vec::new();
        for (key, t) in &mut vs.out_tracks {
            let Some(policy) = t.layers.as_mut() else { continue };
            let Some(codec) = t.target.map(|(c, _)| c) else {
                continue;
            };
            let layer = loss
                .and_then(|l| policy.congested(now, l.max(0.0) * TRANSPORT_LOSS_SCALE))
                .or_else(|| {
                    delay
                        .filter(|_| !after_keyframe)
                        .and_then(|d| policy.queued(now, d))
                });
            if let Some(layer) = layer {
                down.push((key.clone(), (codec, Some(Rid::from(layer.rid())))));
            }
        }
        for (key, sel) in down {
            tracing::debug!(%viewer, source = %key.0, ?delay, ?loss, "simulcast layer change on transport report");
            self.down_switch(now, viewer, key, sel);
        }
    }

    /// A viewer's out-track was negotiated: screens ask the estimator to probe up to `h`.
    pub(super) fn activate_out_track(
        &mut self,
        _now: Instant,
        viewer: &SessionId,
        _source: &SessionId,
        kind: TrackKind,
    ) {
        if kind != TrackKind::Screen {
            return;
        }
        if let Some(vs) = self.sessions.get_mut(viewer) {
            vs.rtc.bwe().set_bitrate(SCREEN_BWE_MIN, SCREEN_BWE_DESIRED);
            self.mark_dirty(viewer);
        }
    }
}
