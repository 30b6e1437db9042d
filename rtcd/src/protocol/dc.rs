//! DataChannel messages (`service/rtc/dc/msg.go`): a msgpack uint8 type (`0xcc n`), then an
//! optional msgpack payload. SDP payloads are zlib-compressed JSON in a bin.

use std::io::{Read, Write};

use rmpv::Value;

use super::{DecodeError, read_value, rtc::kind, write_value};

/// Largest inflated SDP accepted (a call's SDP is a few tens of KiB).
pub const MAX_SDP_BYTES: u64 = 1 << 20;

/// One track in a [`DcMessage::MediaMap`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// `voice`, `screen`, `screen-audio` or `video`.
    pub track_type: String,
    /// The sending session.
    pub sender_id: String,
}

/// One DataChannel message.
#[derive(Debug, Clone, PartialEq)]
pub enum DcMessage {
    /// 1
    Ping,
    /// 2
    Pong,
    /// 3: the SDP JSON, already inflated (or to be deflated on encode).
    Sdp(Vec<u8>),
    /// 4
    LossRate(f64),
    /// 5
    RoundTripTime(f64),
    /// 6
    Jitter(f64),
    /// 7: `None` in a request, `Some(granted)` in a reply.
    Lock(Option<bool>),
    /// 8
    Unlock,
    /// 9: mid → track.
    MediaMap(Vec<(String, TrackInfo)>),
}

impl DcMessage {
    /// The bytes rtcd's `EncodeMessage` produces.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16);
        let ty = |out: &mut Vec<u8>, t: u8| {
            let _ = rmp::encode::write_u8(out, t);
        };
        match self {
            Self::Ping => ty(&mut out, 1),
            Self::Pong => ty(&mut out, 2),
            Self::Sdp(json) => {
                ty(&mut out, 3);
                write_value(&mut out, &Value::Binary(deflate(json)));
            }
            Self::LossRate(v) | Self::RoundTripTime(v) | Self::Jitter(v) => {
                let t = match self {
                    Self::LossRate(_) => 4,
                    Self::RoundTripTime(_) => 5,
                    _ => 6,
                };
                ty(&mut out, t);
                let _ = rmp::encode::write_f64(&mut out, *v);
            }
            Self::Lock(reply) => {
                ty(&mut out, 7);
                if let Some(b) = reply {
                    let _ = rmp::encode::write_bool(&mut out, *b);
                }
            }
            Self::Unlock => ty(&mut out, 8),
            Self::MediaMap(entries) => {
                ty(&mut out, 9);
                let map = entries
                    .iter()
                    .map(|(mid, t)| {
                        (
                            Value::from(mid.as_str()),
                            Value::Map(vec![
                                (Value::from("type"), Value::from(t.track_type.as_str())),
                                (Value::from("sender_id"), Value::from(t.sender_id.as_str())),
                            ]),
                        )
                    })
                    .collect();
                write_value(&mut out, &Value::Map(map));
            }
        }
        out
    }

    /// Parses a binary DataChannel message.
    pub fn decode(mut buf: &[u8]) -> Result<Self, DecodeError> {
        let t = match read_value(&mut buf, "dc message type")? {
            Value::Integer(i) => i.as_u64().filter(|n| *n <= 255),
            _ => None,
        }
        .ok_or_else(|| DecodeError::new("failed to decode dc message type: expected a uint8"))?;
        let float = |buf: &mut &[u8]| -> Result<f64, DecodeError> {
            match read_value(buf, "dc message payload")? {
                Value::F64(f) => Ok(f),
                Value::F32(f) => Ok(f64::from(f)),
                Value::Integer(i) => i.as_f64().ok_or_else(|| DecodeError::new("bad number")),
                other => Err(DecodeError::new(format!(
                    "failed to decode message type {t}: got {}",
                    kind(&other)
                ))),
            }
        };
        Ok(match t {
            1 => Self::Ping,
            2 => Self::Pong,
            3 => match read_value(&mut buf, "sdp message")? {
                Value::Binary(b) => Self::Sdp(inflate(&b)?),
                Value::String(s) => Self::Sdp(inflate(s.as_bytes())?),
                other => {
                    return Err(DecodeError::new(format!(
                        "failed to decode sdp message: got {}",
                        kind(&other)
                    )));
                }
            },
            4 => Self::LossRate(float(&mut buf)?),
            5 => Self::RoundTripTime(float(&mut buf)?),
            6 => Self::Jitter(float(&mut buf)?),
            7 => Self::Lock(match read_value(&mut buf, "lock") {
                Ok(Value::Boolean(b)) => Some(b),
                _ => None,
            }),
            8 => Self::Unlock,
            9 => {
                let Value::Map(entries) = read_value(&mut buf, "media map")? else {
                    return Err(DecodeError::new(
                        "failed to decode media map message: expected a map",
                    ));
                };
                let mut out = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let mid = k
                        .as_str()
                        .ok_or_else(|| DecodeError::new("media map: non-string mid"))?
                        .to_string();
                    let field = |name: &str| match &v {
                        Value::Map(m) => m
                            .iter()
                            .find(|(k, _)| k.as_str() == Some(name))
                            .and_then(|(_, v)| v.as_str())
                            .unwrap_or_default()
                            .to_string(),
                        _ => String::new(),
                    };
                    out.push((
                        mid,
                        TrackInfo {
                            track_type: field("type"),
                            sender_id: field("sender_id"),
                        },
                    ));
                }
                Self::MediaMap(out)
            }
            other => return Err(DecodeError::new(format!("unexpected dc message type: {other}"))),
        })
    }
}

/// zlib, as Go's `compress/zlib` default writer.
pub fn deflate(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    let _ = enc.write_all(data);
    enc.finish().unwrap_or_default()
}

/// Inflates zlib data, refusing more than [`MAX_SDP_BYTES`].
pub fn inflate(data: &[u8]) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::ZlibDecoder::new(data)
        .take(MAX_SDP_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::new(format!("failed to unpack sdp data: {e}")))?;
    if out.len() as u64 > MAX_SDP_BYTES {
        return Err(DecodeError::new("failed to unpack sdp data: larger than 1 MiB"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_byte_is_uint8_form() {
        assert_eq!(DcMessage::Ping.encode(), [0xcc, 1]);
        assert_eq!(DcMessage::Lock(Some(true)).encode(), [0xcc, 7, 0xc3]);
        assert_eq!(DcMessage::Lock(None).encode(), [0xcc, 7]);
        assert_eq!(DcMessage::LossRate(0.5).encode()[..3], [0xcc, 4, 0xcb]);
    }

    #[test]
    fn round_trips() {
        for m in [
            DcMessage::Ping,
            DcMessage::Pong,
            DcMessage::Sdp(br#"{"type":"offer","sdp":"v=0"}"#.to_vec()),
            DcMessage::LossRate(0.25),
            DcMessage::RoundTripTime(0.05),
            DcMessage::Jitter(0.001),
            DcMessage::Lock(None),
            DcMessage::Lock(Some(false)),
            DcMessage::Unlock,
            DcMessage::MediaMap(vec![(
                "0".into(),
                TrackInfo {
                    track_type: "voice".into(),
                    sender_id: "s".into(),
                },
            )]),
        ] {
            assert_eq!(DcMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn bad_input_is_an_error() {
        for bad in [
            &[][..],
            &[0xcc, 0],
            &[0xcc, 42],
            &[0xcc, 3, 0xc4, 2, 1, 2],
            &[0xcc, 4, 0xa1, b'x'],
            &[0xa1, b'x'],
        ] {
            assert!(DcMessage::decode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn zip_bombs_are_refused() {
        let big = vec![b'a'; (MAX_SDP_BYTES + 10) as usize];
        let m = DcMessage::Sdp(big).encode();
        assert!(DcMessage::decode(&m).unwrap_err().0.contains("larger than"));
    }
}
