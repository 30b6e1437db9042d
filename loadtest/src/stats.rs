//! What the generated participants observe, on the generator's one clock: sends, receptions
//! (loss, latency, jitter), joins and failures; and the summary computed from them.

use std::collections::HashMap;

use serde::Serialize;

use crate::probe::{Probe, Stream};

/// Per (receiver, sender, stream) reception state.
#[derive(Debug, Default)]
struct RxStream {
    first_seq: Option<u32>,
    last_seq: u32,
    received: u64,
    last_transit: Option<i64>,
    jitter_ns: f64,
}

/// One participant's join.
#[derive(Debug, Clone, Default)]
pub struct JoinRecord {
    /// The `join` was sent (ns since the epoch).
    pub joined_ns: u64,
    /// ICE and DTLS connected.
    pub connected_ns: Option<u64>,
    /// First forwarded media packet arrived.
    pub first_media_ns: Option<u64>,
    /// A participant of the steady population (not a churn visitor).
    pub stable: bool,
    /// Its call has someone sending media.
    pub expects_media: bool,
    /// ICE went to Disconnected after connecting.
    pub disconnected: bool,
    /// The server closed the session.
    pub closed_by_server: bool,
    /// Connects over ICE-TCP.
    pub tcp: bool,
    /// The selected ICE pair's latest STUN round trip, ms (with peer stats on).
    pub ice_rtt_ms: Option<f64>,
    /// The selected ICE pair's remote candidate, `udp|tcp address:port` (with peer stats on).
    pub remote_candidate: Option<String>,
}

/// Everything recorded during a run.
#[derive(Debug, Default)]
pub struct Stats {
    /// Measurement window `[start, end)` in ns since the epoch, over send times.
    pub window: Option<(u64, u64)>,
    /// Call of every participant index.
    pub call_of: Vec<u32>,
    /// Joins, indexed by participant.
    pub joins: Vec<JoinRecord>,
    sent_in_window: HashMap<(u32, Stream), u64>,
    rx: HashMap<(u32, u32, Stream), RxStream>,
    rx_in_window: u64,
    rx_bytes_in_window: u64,
    audio_rx_in_window: u64,
    audio_latency_us: Vec<u32>,
    video_latency_us: Vec<u32>,
    /// Data channels that opened.
    pub dc_open: u64,
    /// VoiceOn/VoiceOff messages received.
    pub vad_messages: u64,
    /// Signaling errors (bad JSON, rejected SDP …).
    pub signaling_errors: u64,
}

impl Stats {
    fn in_window(&self, ns: u64) -> bool {
        self.window.is_some_and(|(a, b)| ns >= a && ns < b)
    }

    /// A participant sent one packet of `stream`.
    pub fn sent(&mut self, sender: u32, stream: Stream, sent_ns: u64) {
        if self.in_window(sent_ns) {
            *self.sent_in_window.entry((sender, stream)).or_default() += 1;
        }
    }

    /// `receiver` got a forwarded packet carrying `p` at `now_ns` (`bytes` on the RTP payload).
    pub fn received(&mut self, receiver: u32, p: Probe, now_ns: u64, bytes: usize) {
        if let Some(j) = self.joins.get_mut(receiver as usize)
            && j.first_media_ns.is_none()
        {
            j.first_media_ns = Some(now_ns);
        }
        if !self.in_window(p.sent_ns) {
            return;
        }
        let stable = self.joins.get(receiver as usize).is_some_and(|j| j.stable);
        if !stable {
            return;
        }
        self.rx_in_window += 1;
        self.rx_bytes_in_window += bytes as u64;
        let transit = now_ns as i64 - p.sent_ns as i64;
        let lat_us = (transit.max(0) / 1000).min(i64::from(u32::MAX)) as u32;
        if p.stream == Stream::Voice {
            self.audio_rx_in_window += 1;
            self.audio_latency_us.push(lat_us);
        } else {
            self.video_latency_us.push(lat_us);
        }
        let s = self.rx.entry((receiver, p.sender, p.stream)).or_default();
        match s.first_seq {
            None => {
                s.first_seq = Some(p.seq);
                s.last_seq = p.seq;
            }
            Some(_) if p.seq > s.last_seq => s.last_seq = p.seq,
            Some(f) if p.seq < f => s.first_seq = Some(p.seq),
            Some(_) => {}
        }
        s.received += 1;
        if let Some(last) = s.last_transit {
            let d = (transit - last).abs() as f64;
            s.jitter_ns += (d - s.jitter_ns) / 16.0;
        }
        s.last_transit = Some(transit);
    }

    /// The summary of the window (`window_s` long).
    pub fn summarize(&self, window_s: f64) -> Summary {
        // Audio: every voice packet sent in the window is owed to every other stable member
        // of its call.
        let mut members: HashMap<u32, u64> = HashMap::new();
        for (i, j) in self.joins.iter().enumerate() {
            if j.stable
                && let Some(c) = self.call_of.get(i)
            {
                *members.entry(*c).or_default() += 1;
            }
        }
        let mut audio_expected = 0u64;
        let mut audio_sent = 0u64;
        let mut video_sent = 0u64;
        for ((sender, stream), n) in &self.sent_in_window {
            if *stream == Stream::Voice {
                audio_sent += n;
                let call = self.call_of.get(*sender as usize).copied().unwrap_or(u32::MAX);
                audio_expected += n * members.get(&call).copied().unwrap_or(1).saturating_sub(1);
            } else {
                video_sent += n;
            }
        }
        // Video: each viewer gets one simulcast layer at a time, so loss is the gaps inside
        // what each (viewer, sender, layer) stream delivered.
        let (mut v_exp, mut v_got) = (0u64, 0u64);
        let mut jitters: Vec<f64> = Vec::new();
        for ((_, _, stream), s) in &self.rx {
            if *stream != Stream::Voice
                && let Some(f) = s.first_seq
            {
                v_exp += u64::from(s.last_seq - f) + 1;
                v_got += s.received;
            }
            if *stream == Stream::Voice {
                jitters.push(s.jitter_ns / 1e6);
            }
        }
        jitters.sort_by(f64::total_cmp);
        let stable: Vec<&JoinRecord> = self.joins.iter().filter(|j| j.stable).collect();
        let failures = stable
            .iter()
            .filter(|j| j.connected_ns.is_none() || j.disconnected)
            .count();
        // µs from each join to an event of it, where the event happened.
        let since_join = |pick: fn(&JoinRecord) -> Option<u64>, only: fn(&JoinRecord) -> bool| -> Vec<u32> {
            self.joins
                .iter()
                .filter(|j| only(j))
                .filter_map(|j| pick(j).map(|t| (t.saturating_sub(j.joined_ns) / 1000) as u32))
                .collect()
        };
        let mut ttfp = since_join(|j| j.first_media_ns, |j| j.expects_media);
        let mut connect = since_join(|j| j.connected_ns, |_| true);
        let mut alat = self.audio_latency_us.clone();
        let mut vlat = self.video_latency_us.clone();
        Summary {
            participants: stable.len() as u64,
            visitors: (self.joins.len() - stable.len()) as u64,
            connected: stable.iter().filter(|j| j.connected_ns.is_some()).count() as u64,
            connected_tcp: stable
                .iter()
                .filter(|j| j.tcp && j.connected_ns.is_some())
                .count() as u64,
            ice_dtls_failures: failures as u64,
            closed_by_server: self.joins.iter().filter(|j| j.closed_by_server).count() as u64,
            data_channels_open: self.dc_open,
            signaling_errors: self.signaling_errors,
            vad_messages: self.vad_messages,
            window_s,
            sent_pps: (audio_sent + video_sent) as f64 / window_s,
            forwarded_pps: self.rx_in_window as f64 / window_s,
            forwarded_bps: self.rx_bytes_in_window as f64 * 8.0 / window_s,
            forwarded_packets: self.rx_in_window,
            audio: (audio_expected > 0).then(|| StreamSummary {
                expected: audio_expected,
                received: self.audio_rx_in_window,
                loss_pct: loss_pct(audio_expected, self.audio_rx_in_window),
                latency_ms: percentiles_ms(&mut alat),
                jitter_ms_p99: pick(&jitters, 0.99),
            }),
            video: (video_sent > 0).then(|| StreamSummary {
                expected: v_exp,
                received: v_got,
                loss_pct: loss_pct(v_exp, v_got),
                latency_ms: percentiles_ms(&mut vlat),
                jitter_ms_p99: None,
            }),
            join_to_first_packet_ms: percentiles_ms(&mut ttfp),
            join_to_connected_ms: percentiles_ms(&mut connect),
        }
    }
}

fn loss_pct(expected: u64, received: u64) -> f64 {
    if expected == 0 {
        return 0.0;
    }
    (expected.saturating_sub(received)) as f64 * 100.0 / expected as f64
}

fn pick(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

/// p50/p99/p99.9 of microsecond samples, in ms (nearest-rank).
pub fn percentiles_ms(us: &mut [u32]) -> Option<Percentiles> {
    if us.is_empty() {
        return None;
    }
    us.sort_unstable();
    let at = |q: f64| {
        let i = ((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1;
        f64::from(us[i]) / 1000.0
    };
    Some(Percentiles {
        n: us.len() as u64,
        p50: at(0.50),
        p99: at(0.99),
        p999: at(0.999),
        max: at(1.0),
    })
}

/// Nearest-rank percentiles in ms.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Percentiles {
    /// Samples.
    pub n: u64,
    /// Median.
    pub p50: f64,
    /// 99th.
    pub p99: f64,
    /// 99.9th.
    pub p999: f64,
    /// Largest.
    pub max: f64,
}

/// Loss, latency and jitter of one media kind.
#[derive(Debug, Clone, Serialize)]
pub struct StreamSummary {
    /// Packets owed to receivers.
    pub expected: u64,
    /// Packets they got.
    pub received: u64,
    /// 100 × (1 − received / expected).
    pub loss_pct: f64,
    /// Generator send → generator receive, through the SFU.
    pub latency_ms: Option<Percentiles>,
    /// RFC 3550 interarrival jitter, 99th percentile over streams.
    pub jitter_ms_p99: Option<f64>,
}

/// The run's figures (the server's CPU and memory are added by the runner).
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Stable participants.
    pub participants: u64,
    /// Churn visitors that came and went.
    pub visitors: u64,
    /// Stable participants that connected (ICE + DTLS).
    pub connected: u64,
    /// Of those, over ICE-TCP.
    pub connected_tcp: u64,
    /// Stable participants that never connected, or disconnected.
    pub ice_dtls_failures: u64,
    /// Sessions the server closed.
    pub closed_by_server: u64,
    /// Data channels opened.
    pub data_channels_open: u64,
    /// Signaling errors seen by the generator.
    pub signaling_errors: u64,
    /// VAD messages received.
    pub vad_messages: u64,
    /// Window length.
    pub window_s: f64,
    /// Media packets sent per second.
    pub sent_pps: f64,
    /// Media packets received by stable participants per second: the SFU's forwarded rate.
    pub forwarded_pps: f64,
    /// Their payload bits per second.
    pub forwarded_bps: f64,
    /// Forwarded packets in the window.
    pub forwarded_packets: u64,
    /// Voice.
    pub audio: Option<StreamSummary>,
    /// Screen.
    pub video: Option<StreamSummary>,
    /// `join` sent → first forwarded media packet.
    pub join_to_first_packet_ms: Option<Percentiles>,
    /// `join` sent → ICE+DTLS connected.
    pub join_to_connected_ms: Option<Percentiles>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(sender: u32, stream: Stream, seq: u32, sent_ns: u64) -> Probe {
        Probe {
            sender,
            stream,
            seq,
            sent_ns,
        }
    }

    #[test]
    fn audio_loss_counts_every_owed_copy() {
        let mut s = Stats {
            window: Some((1_000, 1_000_000)),
            call_of: vec![0, 0, 0],
            joins: vec![
                JoinRecord {
                    stable: true,
                    ..Default::default()
                };
                3
            ],
            ..Default::default()
        };
        // Participant 0 speaks 10 packets; 1 gets all, 2 gets 8 → 18 of 20.
        for seq in 0..10 {
            s.sent(0, Stream::Voice, 2_000 + u64::from(seq));
            s.received(
                1,
                probe(0, Stream::Voice, seq, 2_000 + u64::from(seq)),
                3_000_000,
                100,
            );
            if seq < 8 {
                s.received(
                    2,
                    probe(0, Stream::Voice, seq, 2_000 + u64::from(seq)),
                    3_000_000,
                    100,
                );
            }
        }
        // Outside the window: neither owed nor counted.
        s.sent(0, Stream::Voice, 10);
        s.received(1, probe(0, Stream::Voice, 99, 10), 20, 100);
        let sum = s.summarize(1.0);
        let a = sum.audio.unwrap();
        assert_eq!((a.expected, a.received), (20, 18));
        assert!((a.loss_pct - 10.0).abs() < 1e-9);
        assert_eq!(sum.forwarded_packets, 18);
        assert_eq!(sum.ice_dtls_failures, 3, "nobody connected");
    }

    #[test]
    fn video_loss_is_gaps_inside_delivered_layers() {
        let mut s = Stats {
            window: Some((0, 1_000_000)),
            call_of: vec![0, 0],
            joins: vec![
                JoinRecord {
                    stable: true,
                    ..Default::default()
                };
                2
            ],
            ..Default::default()
        };
        for seq in 0..10u32 {
            s.sent(0, Stream::ScreenLow, 1);
            if seq != 4 {
                s.received(1, probe(0, Stream::ScreenLow, seq, 1), 5, 1000);
            }
        }
        let v = s.summarize(1.0).video.unwrap();
        assert_eq!((v.expected, v.received), (10, 9));
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u32> = (1..=1000).collect();
        let p = percentiles_ms(&mut v).unwrap();
        assert_eq!((p.p50, p.p99, p.p999, p.max), (0.5, 0.99, 0.999, 1.0));
        assert!(percentiles_ms(&mut []).is_none());
    }
}
