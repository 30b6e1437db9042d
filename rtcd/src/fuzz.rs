//! Fuzz targets: one function per input surface that only this crate parses, each taking any
//! bytes and driving the real code. The cargo-fuzz crate in `fuzz/` wraps them for libFuzzer
//! (`make fuzz`); `tests/fuzz_corpus.rs` replays the committed corpora and crash inputs through
//! them in `make test`. A target must never panic except where it asserts a property.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::atomic::AtomicBool,
    time::{Duration, Instant},
};

use crate::{
    call::Faults,
    media::{
        keyframe::{VideoCodec, is_keyframe},
        rebase::SeqRebase,
        simulcast::{Layer, LayerPolicy},
        vp8::PictureIdRewrite,
    },
    net::{Datagram, tcp},
    protocol::{dc::DcMessage, rtc::RtcType, ws::ClientMessage},
    sim::{Behaviour, Sim},
};

/// A fuzz target: any bytes in, a panic only for a broken property.
pub type Target = fn(&[u8]);

/// Every target, by name (the `fuzz/fuzz_targets/<name>.rs` and corpus directory names).
pub const TARGETS: &[(&str, Target)] = &[
    ("ws_frame", ws_frame),
    ("dc_message", dc_message),
    ("stun", stun),
    ("rfc4571", rfc4571),
    ("video", video),
    ("rebase", rebase),
    ("config", config),
    ("sfu", sfu),
];

/// A plugin WebSocket frame: `ClientMessage::decode` (which decodes `rtc` messages too); what
/// decodes re-encodes and decodes to the same message.
pub fn ws_frame(data: &[u8]) {
    if let Ok(msg) = ClientMessage::decode(data) {
        let _ = msg.metric_type();
        let again = ClientMessage::decode(&msg.encode());
        assert_eq!(again.as_ref().ok(), Some(&msg), "encode/decode round trip");
    }
}

/// A DataChannel message, including the zlib-deflated SDP (bounded inflation).
pub fn dc_message(data: &[u8]) {
    if let Ok(msg) = DcMessage::decode(data) {
        if let DcMessage::Sdp(sdp) = &msg {
            assert!(sdp.len() as u64 <= crate::protocol::dc::MAX_SDP_BYTES);
        }
        let _ = DcMessage::decode(&msg.encode());
    }
}

/// STUN as we read it ourselves: the local ufrag and shard of a check (routing), and a
/// Binding response to our own query (the public address).
pub fn stun(data: &[u8]) {
    if let Some(ufrag) = crate::shard::stun_local_ufrag(data) {
        assert!(ufrag.len() < data.len());
    }
    for shards in [1, 2, 7, crate::shard::MAX_SHARDS] {
        if let Some(s) = crate::shard::stun_shard(data, shards) {
            assert!(s < shards);
        }
    }
    let id = data
        .get(8..20)
        .and_then(|b| <[u8; 12]>::try_from(b).ok())
        .unwrap_or([0; 12]);
    let _ = crate::net::stun::parse_response(data, id);
}

/// An ICE-TCP byte stream through the real reader: the frames handed to the engine are
/// exactly those of a plain RFC 4571 model of the same bytes.
pub fn rfc4571(data: &[u8]) {
    let mut want: Vec<&[u8]> = Vec::new();
    let mut i = 0;
    while let Some(h) = data.get(i..i + 2) {
        let n = usize::from(u16::from_be_bytes([h[0], h[1]]));
        i += 2;
        if n == 0 {
            continue;
        }
        let Some(frame) = data.get(i..i + n) else { break };
        want.push(frame);
        i += n;
    }
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    else {
        return;
    };
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Datagram>(want.len() + 1);
    let conns = tcp::TcpConns::default();
    let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
    let authenticated = AtomicBool::new(false);
    rt.block_on(tcp::read_frames(data, &authenticated, &conns, &[tx], addr, addr));
    let mut got = Vec::new();
    while let Ok(d) = rx.try_recv() {
        got.push(d.data);
    }
    assert_eq!(got.len(), want.len(), "frames");
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g.as_slice(), *w);
    }
}

/// VP8 and AV1 keyframe detection, str0m's VP8 descriptor parse and our PictureID rewrite.
pub fn video(data: &[u8]) {
    let _ = is_keyframe(VideoCodec::Vp8, data);
    let _ = is_keyframe(VideoCodec::Av1, data);
    let mut rw = PictureIdRewrite::default();
    for chunk in data.chunks(4) {
        if let Ok(d) = str0m::rtp::Vp8Descriptor::parse(chunk) {
            let _ = rw.map(d.picture_id(), d.tl0_pic_idx());
        }
        match chunk.first() {
            Some(b) if b & 1 == 1 => rw.switch(),
            _ => {}
        }
    }
    if let Ok(d) = str0m::rtp::Vp8Descriptor::parse(data) {
        let _ = rw.map(d.picture_id(), d.tl0_pic_idx());
    }
}

/// The rebaser under any sequence of switches, reorders, gaps and retransmissions across three
/// layers (never one number with two payloads), and the layer policy under any loss, delay and
/// estimate (never a panic, always a valid layer).
pub fn rebase(data: &[u8]) {
    let t0 = Instant::now();
    let mut r = SeqRebase::new(90_000, 3000);
    let mut next = [1000u64, 30_000, 60_000];
    let mut layer = 0usize;
    let mut sent = std::collections::HashMap::new();
    let mut policy = LayerPolicy::new(Layer::High);
    for (step, b) in data.iter().enumerate() {
        let at = t0 + Duration::from_millis(step as u64 * 5);
        let src = match b & 0x0f {
            0 => {
                layer = usize::from(b >> 4) % 3;
                r.switch();
                continue;
            }
            1 | 2 => next[layer].saturating_sub(1 + u64::from(b >> 4)).max(1),
            3 => {
                next[layer] += 1 + u64::from(b >> 4);
                next[layer]
            }
            4 => {
                let _ = policy.congested(at, f32::from(b >> 4) / 15.0);
                continue;
            }
            5 => {
                let _ = policy.queued(at, Duration::from_millis(u64::from(b >> 4) * 100));
                continue;
            }
            6 => {
                let high = (b & 0x10 != 0).then_some(f64::from(b >> 5) * 400_000.0);
                let _ = policy.decide(at, f64::from(b >> 4) * 150_000.0, high);
                continue;
            }
            _ => {
                next[layer] += 1;
                next[layer]
            }
        };
        if let Some(out) = r.map(src, at)
            && let Some(prev) = sent.insert(out, (layer, src))
        {
            assert_eq!(prev, (layer, src), "{out} sent with two payloads");
        }
    }
    let _ = policy.current().rid();
}

/// The config loader: the input as TOML, and as the values of every `RTCD_*` variable.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = crate::config::load_str(&text, "fuzz.toml", &[]);
    let mut parts = text.split('\n');
    let env: Vec<(String, String)> = crate::config::ENV_VARS
        .iter()
        .filter_map(|v| parts.next().map(|value| (v.name.to_string(), value.to_string())))
        .collect();
    let _ = crate::config::load_str("", "-", &env);
}

/// The SFU core, stateful: real str0m clients join, offer, trickle candidates, talk, share a
/// screen, send any rtc message, DataChannel bytes or datagram, switch layers through their
/// downlink, and leave, in any order, on the simulated clock. Bounded: at most 64 operations,
/// 6 clients, 200 ms of simulated time per step.
pub fn sfu(data: &[u8]) {
    let mut sim = Sim::new(Faults::default());
    let mut ops = data.chunks(4).take(64);
    let client = |sim: &Sim, b: u8| -> Option<usize> {
        let n = sim.clients.len();
        (n > 0).then(|| usize::from(b) % n)
    };
    for op in ops.by_ref() {
        let (kind, arg, rest) = match op {
            [k, a, rest @ ..] => (*k, *a, rest),
            _ => break,
        };
        let _ = match kind % 10 {
            0 if sim.clients.len() < 6 => {
                let b = Behaviour {
                    talking: arg & 1 != 0,
                    offers: arg & 2 == 0,
                    ignores_offers: arg & 4 != 0,
                    shares_screen: arg & 8 != 0,
                };
                let call = format!("call-{}", arg >> 6);
                let user = format!("user-{}", sim.clients.len());
                sim.join(&call, &user, b).map(|_| ())
            }
            1 => sim.run_for(Duration::from_millis(u64::from(arg) * 200 / 255 + 1)),
            2 => match client(&sim, arg) {
                Some(i) => {
                    let kind = RtcType::from_i64(i64::from(rest.first().copied().unwrap_or(0) % 8))
                        .unwrap_or(RtcType::Ice);
                    sim.client_says(i, kind, rest.to_vec())
                }
                None => Ok(()),
            },
            3 => match client(&sim, arg) {
                Some(i) => sim.client_dc_raw(i, rest),
                None => Ok(()),
            },
            4 => {
                let from = SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 1, 0, arg % 8)), 5000);
                sim.inject(from, rest).map(|_| ())
            }
            5 => match client(&sim, arg) {
                Some(i) => sim.set_downlink(i, rest.first().map(|b| u64::from(*b) * 20_000 + 50_000)),
                None => Ok(()),
            },
            6 => match client(&sim, arg) {
                Some(i) => sim.leave(i),
                None => Ok(()),
            },
            7 => match client(&sim, arg) {
                Some(i) => sim.answer_held(i),
                None => Ok(()),
            },
            8 => match client(&sim, arg) {
                Some(i) => {
                    let c = format!(
                        "candidate:1 1 udp 2130706431 10.1.0.{} {} typ host",
                        rest.first().copied().unwrap_or(1),
                        5000 + u16::from(rest.get(1).copied().unwrap_or(0))
                    );
                    let json = serde_json::json!({"candidate": c, "sdpMid": "0", "sdpMLineIndex": 0});
                    sim.client_says(i, RtcType::Ice, json.to_string().into_bytes())
                }
                None => Ok(()),
            },
            _ => sim.run_for(Duration::from_millis(20)),
        };
    }
    let _ = sim.run_for(Duration::from_millis(500));
}
