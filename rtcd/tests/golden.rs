//! Byte-exact compatibility with rtcd's own encoders: every vector in `tests/data/golden/`
//! was produced by rtcd v1.2.6's Go code (`e2e/compat/cmd/golden`). Each is decoded by our
//! codec into the documented input, and re-encoded to the same bytes where Go's output is
//! deterministic (maps with one key or struct order; zlib output is compared inflated).
#![allow(clippy::unwrap_used)] // test crate: a failed unwrap is a failed test

use rtcd::protocol::{
    dc::DcMessage,
    rtc::RtcMessage,
    ws::{ClientMessage, Join},
};
use serde_json::Value;

fn vectors() -> Vec<Value> {
    let text = include_str!("data/golden/manifest.json");
    let m: Value = serde_json::from_str(text).unwrap();
    m["vectors"].as_array().unwrap().clone()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn file_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/data/golden/{name}", env!("CARGO_MANIFEST_DIR"));
    hex(std::fs::read_to_string(path).unwrap().trim())
}

fn s(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

fn expected_ws(input: &Value) -> ClientMessage {
    let data = &input["data"];
    let rtc = || RtcMessage {
        group_id: s(&data["group_id"]),
        user_id: s(&data["user_id"]),
        session_id: s(&data["session_id"]),
        call_id: s(&data["call_id"]),
        msg_type: data["type"].as_i64().unwrap(),
        data: s(&data["data_utf8"]).into_bytes(),
    };
    match input["type"].as_str().unwrap() {
        "hello" => ClientMessage::Hello {
            client_id: s(&data["clientID"]),
            conn_id: s(&data["connID"]),
        },
        "join" => ClientMessage::Join(Join {
            call_id: s(&data["callID"]),
            user_id: s(&data["userID"]),
            session_id: s(&data["sessionID"]),
            channel_id: s(&data["channelID"]),
            av1_support: data["av1Support"].as_bool().unwrap(),
            dc_signaling: data["dcSignaling"].as_bool().unwrap(),
        }),
        "leave" => ClientMessage::Leave {
            session_id: s(&data["sessionID"]),
        },
        "reconnect" => ClientMessage::Reconnect {
            session_id: s(&data["sessionID"]),
        },
        "close" => ClientMessage::Close {
            session_id: s(&data["sessionID"]),
        },
        "rtc" => ClientMessage::Rtc(rtc()),
        "vad" => ClientMessage::Vad(rtc()),
        other => panic!("unknown vector type {other}"),
    }
}

fn expected_dc(input: &Value) -> DcMessage {
    let p = &input["payload"];
    match input["type"].as_u64().unwrap() {
        1 => DcMessage::Ping,
        2 => DcMessage::Pong,
        3 => DcMessage::Sdp(s(&p["json_utf8"]).into_bytes()),
        4 => DcMessage::LossRate(p.as_f64().unwrap()),
        5 => DcMessage::RoundTripTime(p.as_f64().unwrap()),
        6 => DcMessage::Jitter(p.as_f64().unwrap()),
        7 => DcMessage::Lock(p.as_bool()),
        8 => DcMessage::Unlock,
        9 => DcMessage::MediaMap(
            p.as_object()
                .unwrap()
                .iter()
                .map(|(mid, t)| {
                    (
                        mid.clone(),
                        rtcd::protocol::dc::TrackInfo {
                            track_type: s(&t["type"]),
                            sender_id: s(&t["sender_id"]),
                        },
                    )
                })
                .collect(),
        ),
        other => panic!("unknown dc type {other}"),
    }
}

#[test]
fn every_vector_decodes_to_its_input_and_deterministic_ones_reencode_byte_exact() {
    let vectors = vectors();
    assert!(
        vectors.len() >= 30,
        "expected every message type, got {}",
        vectors.len()
    );
    for v in &vectors {
        let name = v["file"].as_str().unwrap();
        let bytes = file_bytes(name);
        assert_eq!(
            bytes,
            hex(v["hex"].as_str().unwrap()),
            "{name}: file and manifest disagree"
        );
        let deterministic = v["deterministic"].as_bool().unwrap_or(false);
        match v["kind"].as_str().unwrap() {
            "ws" => {
                let decoded = ClientMessage::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                let expected = expected_ws(&v["input"]);
                assert_eq!(decoded, expected, "{name}: decoded");
                if deterministic {
                    assert_eq!(
                        expected.encode(),
                        bytes,
                        "{name}: our encoding differs from rtcd's"
                    );
                } else {
                    assert_eq!(
                        ClientMessage::decode(&expected.encode()).unwrap(),
                        expected,
                        "{name}: round trip"
                    );
                }
            }
            "dc" => {
                let decoded = DcMessage::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
                let expected = expected_dc(&v["input"]);
                assert_eq!(decoded, expected, "{name}: decoded");
                let ours = expected.encode();
                if deterministic {
                    assert_eq!(ours, bytes, "{name}: our encoding differs from rtcd's");
                } else {
                    assert_eq!(ours[..2], bytes[..2], "{name}: type byte");
                    assert_eq!(DcMessage::decode(&ours).unwrap(), expected, "{name}: round trip");
                }
            }
            other => panic!("{name}: unknown kind {other}"),
        }
    }
}

#[test]
fn hello_with_sorted_keys_is_what_we_send() {
    // rtcd's two-key maps come out in random order; ours are sorted, like the vector.
    let v = vectors()
        .into_iter()
        .find(|v| v["file"] == "ws_hello.hex")
        .unwrap();
    assert_eq!(expected_ws(&v["input"]).encode(), file_bytes("ws_hello.hex"));
}
