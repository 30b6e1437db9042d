//! Replays every committed fuzz input through its target (`rtcd::fuzz`): the corpora in
//! `fuzz/corpus/<target>/` and the inputs that once crashed, in `fuzz/regressions/<target>/`.
//! Deterministic, no time asserted; `make fuzz` does the fuzzing itself.
//!
//! `cargo test --test fuzz_corpus -- --ignored write_seed_corpus` rewrites the seeds (`seed-*`
//! files) from our own encoders.
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

use rtcd::fuzz::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn every_committed_input_replays_without_a_crash() {
    let mut total = 0;
    for (name, target) in TARGETS {
        let corpus = inputs(&fuzz_dir().join("corpus").join(name));
        assert!(!corpus.is_empty(), "fuzz/corpus/{name} has no inputs");
        let regressions = inputs(&fuzz_dir().join("regressions").join(name));
        for path in corpus.iter().chain(&regressions) {
            let data = std::fs::read(path).unwrap();
            let r = std::panic::catch_unwind(|| target(&data));
            assert!(r.is_ok(), "{name}: {} crashes", path.display());
            total += 1;
        }
    }
    eprintln!("replayed {total} fuzz inputs");
}

#[test]
fn every_target_has_a_libfuzzer_wrapper() {
    for (name, _) in TARGETS {
        let wrapper = fuzz_dir().join("fuzz_targets").join(format!("{name}.rs"));
        let text = std::fs::read_to_string(&wrapper).unwrap_or_default();
        assert!(
            text.contains(&format!("rtcd::fuzz::{name}(")),
            "{} must call rtcd::fuzz::{name}",
            wrapper.display()
        );
    }
}

#[test]
#[ignore = "writes the seed corpus; run by hand"]
fn write_seed_corpus() {
    use rtcd::protocol::{dc::DcMessage, rtc::RtcMessage, ws::ClientMessage};
    let write = |target: &str, name: &str, data: &[u8]| {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("seed-{name}")), data).unwrap();
    };
    let join = ClientMessage::Join(rtcd::protocol::ws::Join {
        call_id: "callid".into(),
        user_id: "userid".into(),
        session_id: "sessionid".into(),
        channel_id: "channelid".into(),
        av1_support: true,
        dc_signaling: true,
    });
    write("ws_frame", "join", &join.encode());
    write(
        "ws_frame",
        "leave",
        &ClientMessage::Leave {
            session_id: "sessionid".into(),
        }
        .encode(),
    );
    let rtc = ClientMessage::Rtc(RtcMessage {
        group_id: "g".into(),
        call_id: "c".into(),
        user_id: "u".into(),
        session_id: "s".into(),
        data: br#"{"type":"offer","sdp":"v=0\r\n"}"#.to_vec(),
        msg_type: 1,
    });
    write("ws_frame", "rtc", &rtc.encode());
    for (i, m) in [
        DcMessage::Ping,
        DcMessage::Sdp(br#"{"type":"offer","sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}"#.to_vec()),
        DcMessage::LossRate(0.25),
        DcMessage::RoundTripTime(0.05),
        DcMessage::Jitter(0.01),
        DcMessage::Lock(None),
    ]
    .iter()
    .enumerate()
    {
        write("dc_message", &i.to_string(), &m.encode());
    }
    // A Binding request with USERNAME "srvufrag:cli" and a Binding success response with an
    // XOR-MAPPED-ADDRESS.
    let mut req = vec![0x00, 0x01, 0x00, 0x10, 0x21, 0x12, 0xa4, 0x42];
    req.extend_from_slice(b"txid12345678");
    req.extend_from_slice(&[0x00, 0x06, 0x00, 0x0c]);
    req.extend_from_slice(b"srvufrag:cli");
    write("stun", "request", &req);
    let mut resp = vec![0x01, 0x01, 0x00, 0x0c, 0x21, 0x12, 0xa4, 0x42];
    resp.extend_from_slice(b"txid12345678");
    resp.extend_from_slice(&[
        0x00,
        0x20,
        0x00,
        0x08,
        0x00,
        0x01,
        0x21 ^ 0x12,
        0x34,
        0xe1,
        0x12,
        0xa4,
        0x43,
    ]);
    write("stun", "response", &resp);
    let mut stream = Vec::new();
    for frame in [&req[..], &[0x16, 0xfe, 0xfd, 0, 0][..], &[0x80, 0x6f, 0, 1][..]] {
        stream.extend_from_slice(&u16::try_from(frame.len()).unwrap().to_be_bytes());
        stream.extend_from_slice(frame);
    }
    stream.extend_from_slice(&[0, 0, 0, 9, 1]);
    write("rfc4571", "frames", &stream);
    // VP8: X, I (15-bit PictureID), L (TL0PICIDX), S=1 partition 0, then a keyframe header.
    write(
        "video",
        "vp8-key",
        &[0x90, 0xc0, 0x80, 0x01, 0x05, 0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a],
    );
    // AV1 aggregation header: N=1 (new coded video sequence), one OBU (sequence header).
    write("video", "av1-key", &[0x18, 0x0a, 0x0b, 0x00, 0x00, 0x00]);
    write(
        "rebase",
        "mixed",
        &[
            0x07, 0x07, 0x10, 0x07, 0x01, 0x23, 0x07, 0x20, 0x11, 0x44, 0x55, 0x66,
        ],
    );
    write("config", "sample", include_bytes!("../config/config.sample.toml"));
    write("config", "env", b":8045\ntrue\nfalse\n8443\n");
    // Two talkers join one call, run, a third shares its screen, candidates, a leave.
    write(
        "sfu",
        "call",
        &[
            0, 1, 0, 0, 0, 1, 0, 0, 1, 255, 0, 0, 0, 8, 0, 0, 1, 255, 0, 0, 8, 0, 1, 2, 5, 2, 3, 0, 6, 0, 0,
            0, 1, 255, 0, 0,
        ],
    );
}
