//! Plugin ⇄ rtcd WebSocket messages (`service/client_msg.go`): each binary frame holds two
//! concatenated msgpack values, the type string and then its data.

use rmpv::Value;

use super::{DecodeError, read_value, rtc::RtcMessage, rtc::kind, str_map, write_value};

/// The `join` payload, read as rtcd's `SessionConfig.FromMap` does: strings that are absent or
/// of another type read as "", booleans likewise as false.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Join {
    /// `callID`.
    pub call_id: String,
    /// `userID`.
    pub user_id: String,
    /// `sessionID`.
    pub session_id: String,
    /// `channelID`.
    pub channel_id: String,
    /// `av1Support`.
    pub av1_support: bool,
    /// `dcSignaling`.
    pub dc_signaling: bool,
}

/// One WebSocket message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// rtcd → plugin on connect: `{clientID, connID}`.
    Hello {
        /// The authenticated client.
        client_id: String,
        /// This connection's fresh ID.
        conn_id: String,
    },
    /// plugin → rtcd.
    Join(Join),
    /// plugin → rtcd: `{sessionID}`.
    Leave {
        /// The session.
        session_id: String,
    },
    /// plugin → rtcd: route `{sessionID}` to this connection from now on.
    Reconnect {
        /// The session.
        session_id: String,
    },
    /// Both ways: signaling.
    Rtc(RtcMessage),
    /// rtcd → plugin: VoiceOn / VoiceOff.
    Vad(RtcMessage),
    /// rtcd → plugin: `{sessionID}` ended.
    Close {
        /// The session.
        session_id: String,
    },
    /// A type rtcd does not handle (decoded, then refused by the handler).
    Unknown(String),
}

impl ClientMessage {
    /// The wire type string.
    pub fn type_name(&self) -> &str {
        match self {
            Self::Unknown(t) => t,
            known => known.metric_type(),
        }
    }

    /// The type as a metric label: a known type's name, or `unknown` (a client cannot
    /// invent label values).
    pub fn metric_type(&self) -> &'static str {
        match self {
            Self::Hello { .. } => "hello",
            Self::Join(_) => "join",
            Self::Leave { .. } => "leave",
            Self::Reconnect { .. } => "reconnect",
            Self::Rtc(_) => "rtc",
            Self::Vad(_) => "vad",
            Self::Close { .. } => "close",
            Self::Unknown(_) => "unknown",
        }
    }

    /// The frame's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let data = match self {
            Self::Hello { client_id, conn_id } => str_map(&[("clientID", client_id), ("connID", conn_id)]),
            Self::Join(j) => Value::Map(vec![
                (Value::from("callID"), Value::from(j.call_id.as_str())),
                (Value::from("userID"), Value::from(j.user_id.as_str())),
                (Value::from("sessionID"), Value::from(j.session_id.as_str())),
                (Value::from("channelID"), Value::from(j.channel_id.as_str())),
                (Value::from("av1Support"), Value::from(j.av1_support)),
                (Value::from("dcSignaling"), Value::from(j.dc_signaling)),
            ]),
            Self::Leave { session_id } | Self::Reconnect { session_id } | Self::Close { session_id } => {
                str_map(&[("sessionID", session_id)])
            }
            Self::Rtc(m) | Self::Vad(m) => m.to_value(),
            Self::Unknown(_) => Value::Nil,
        };
        let mut out = Vec::with_capacity(64);
        write_value(&mut out, &Value::from(self.type_name()));
        write_value(&mut out, &data);
        out
    }

    /// Parses a frame.
    pub fn decode(mut buf: &[u8]) -> Result<Self, DecodeError> {
        let ty = read_value(&mut buf, "msg.Type")?;
        let Value::String(ty) = ty else {
            return Err(DecodeError::new(format!(
                "failed to decode msg.Type: expected a string, got {}",
                kind(&ty)
            )));
        };
        let ty = ty
            .into_str()
            .ok_or_else(|| DecodeError::new("failed to decode msg.Type: invalid UTF-8"))?;
        let data = read_value(&mut buf, "msg.Data")?;
        Ok(match ty.as_str() {
            "join" => Self::Join(join_from(&data)?),
            "leave" => Self::Leave {
                session_id: typed_map(&data)?.remove("sessionID").unwrap_or_default(),
            },
            "reconnect" => Self::Reconnect {
                session_id: typed_map(&data)?.remove("sessionID").unwrap_or_default(),
            },
            "close" => Self::Close {
                session_id: typed_map(&data)?.remove("sessionID").unwrap_or_default(),
            },
            "hello" => {
                let mut m = typed_map(&data)?;
                Self::Hello {
                    client_id: m.remove("clientID").unwrap_or_default(),
                    conn_id: m.remove("connID").unwrap_or_default(),
                }
            }
            "rtc" => Self::Rtc(RtcMessage::from_value(&data)?),
            "vad" => Self::Vad(RtcMessage::from_value(&data)?),
            _ => Self::Unknown(ty),
        })
    }
}

/// Go's `DecodeTypedMap` into `map[string]string`.
fn typed_map(v: &Value) -> Result<std::collections::HashMap<String, String>, DecodeError> {
    match v {
        Value::Nil => Ok(Default::default()),
        Value::Map(entries) => entries
            .iter()
            .map(|(k, v)| match (k, v) {
                (Value::String(k), Value::String(v)) => Ok((
                    k.as_str().unwrap_or_default().to_string(),
                    v.as_str().unwrap_or_default().to_string(),
                )),
                _ => Err(DecodeError::new(format!(
                    "failed to decode msg.Data: expected map[string]string, found a {} → {} entry",
                    kind(k),
                    kind(v)
                ))),
            })
            .collect(),
        other => Err(DecodeError::new(format!(
            "failed to decode msg.Data: expected a map, got {}",
            kind(other)
        ))),
    }
}

fn join_from(v: &Value) -> Result<Join, DecodeError> {
    let Value::Map(entries) = v else {
        return Err(DecodeError::new(format!(
            "failed to decode msg.Data: expected a map, got {}",
            kind(v)
        )));
    };
    let get = |name: &str| {
        entries
            .iter()
            .find(|(k, _)| k.as_str() == Some(name))
            .map(|(_, v)| v)
    };
    let text = |name: &str| get(name).and_then(Value::as_str).unwrap_or_default().to_string();
    let flag = |name: &str| get(name).and_then(Value::as_bool).unwrap_or(false);
    Ok(Join {
        call_id: text("callID"),
        user_id: text("userID"),
        session_id: text("sessionID"),
        channel_id: text("channelID"),
        av1_support: flag("av1Support"),
        dc_signaling: flag("dcSignaling"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let msgs = [
            ClientMessage::Hello {
                client_id: "c".into(),
                conn_id: "k".into(),
            },
            ClientMessage::Join(Join {
                call_id: "call".into(),
                user_id: "u".into(),
                session_id: "s".into(),
                channel_id: "ch".into(),
                av1_support: true,
                dc_signaling: false,
            }),
            ClientMessage::Leave {
                session_id: "s".into(),
            },
            ClientMessage::Reconnect {
                session_id: "s".into(),
            },
            ClientMessage::Close {
                session_id: "s".into(),
            },
            ClientMessage::Rtc(RtcMessage {
                session_id: "s".into(),
                msg_type: 2,
                data: b"{}".to_vec(),
                ..Default::default()
            }),
            ClientMessage::Vad(RtcMessage {
                session_id: "s".into(),
                msg_type: 7,
                ..Default::default()
            }),
        ];
        for m in msgs {
            assert_eq!(ClientMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn any_int_width_decodes() {
        // "rtc", then {type: int64(2), session_id: "s"} with the type as a 9-byte int64.
        let mut buf = Vec::new();
        rmp::encode::write_str(&mut buf, "rtc").unwrap();
        rmp::encode::write_map_len(&mut buf, 2).unwrap();
        rmp::encode::write_str(&mut buf, "type").unwrap();
        rmp::encode::write_i64(&mut buf, 2).unwrap();
        rmp::encode::write_str(&mut buf, "session_id").unwrap();
        rmp::encode::write_str(&mut buf, "s").unwrap();
        let ClientMessage::Rtc(m) = ClientMessage::decode(&buf).unwrap() else {
            panic!()
        };
        assert_eq!((m.msg_type, m.session_id.as_str()), (2, "s"));
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for bad in [
            &b""[..],
            &[0xc1],
            &[0xa3, b'r', b't'],
            &[0x01, 0x02],
            &[0xa4, b'l', b'e', b'a', b'v'],
        ] {
            assert!(ClientMessage::decode(bad).is_err(), "{bad:?}");
        }
        let mut leave_with_int = Vec::new();
        rmp::encode::write_str(&mut leave_with_int, "leave").unwrap();
        rmp::encode::write_map_len(&mut leave_with_int, 1).unwrap();
        rmp::encode::write_str(&mut leave_with_int, "sessionID").unwrap();
        rmp::encode::write_u8(&mut leave_with_int, 5).unwrap();
        let e = ClientMessage::decode(&leave_with_int).unwrap_err();
        assert!(e.0.contains("map[string]string"), "{e}");
    }
}
