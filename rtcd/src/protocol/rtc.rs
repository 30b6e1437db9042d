//! rtcd's `rtc.Message` (`service/rtc/msg.go`): a msgpack map `group_id`, `user_id`,
//! `session_id`, `call_id` (strings), `type` (int), `data` (bin, omitted when empty).

use rmpv::Value;

use super::DecodeError;

/// The JSON an `Sdp` message carries: `{"type": "offer"|"answer", "sdp": "v=0…"}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct SdpJson {
    /// `offer` or `answer`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The SDP.
    pub sdp: String,
}

/// `rtc.MessageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RtcType {
    /// ICE candidate (JSON).
    Ice = 1,
    /// SDP (JSON `{type, sdp}`).
    Sdp = 2,
    /// Stop forwarding the voice track.
    Mute = 3,
    /// Resume it.
    Unmute = 4,
    /// `{"screenStreamID"}`.
    ScreenOn = 5,
    /// Screen share ended.
    ScreenOff = 6,
    /// VAD: speaking.
    VoiceOn = 7,
    /// VAD: silent.
    VoiceOff = 8,
    /// `{"videoStreamID"}`.
    VideoOn = 9,
    /// Camera off (a no-op in rtcd).
    VideoOff = 10,
}

impl RtcType {
    /// From the wire integer.
    pub fn from_i64(n: i64) -> Option<Self> {
        Some(match n {
            1 => Self::Ice,
            2 => Self::Sdp,
            3 => Self::Mute,
            4 => Self::Unmute,
            5 => Self::ScreenOn,
            6 => Self::ScreenOff,
            7 => Self::VoiceOn,
            8 => Self::VoiceOff,
            9 => Self::VideoOn,
            10 => Self::VideoOff,
            _ => return None,
        })
    }
}

/// One signaling message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RtcMessage {
    /// The Mattermost installation (client ID).
    pub group_id: String,
    /// The user.
    pub user_id: String,
    /// The session: what rtcd routes by.
    pub session_id: String,
    /// The call.
    pub call_id: String,
    /// The raw type (0 and unknown values are kept so the caller can drop them as rtcd does).
    pub msg_type: i64,
    /// Payload.
    pub data: Vec<u8>,
}

impl RtcMessage {
    /// The message type, if it is one rtcd knows.
    pub fn kind(&self) -> Option<RtcType> {
        RtcType::from_i64(self.msg_type)
    }

    /// The msgpack map, fields in rtcd's order.
    pub fn to_value(&self) -> Value {
        let mut m = vec![
            (Value::from("group_id"), Value::from(self.group_id.as_str())),
            (Value::from("user_id"), Value::from(self.user_id.as_str())),
            (Value::from("session_id"), Value::from(self.session_id.as_str())),
            (Value::from("call_id"), Value::from(self.call_id.as_str())),
            (Value::from("type"), Value::from(self.msg_type)),
        ];
        if !self.data.is_empty() {
            m.push((Value::from("data"), Value::Binary(self.data.clone())));
        }
        Value::Map(m)
    }

    /// Decodes the map as Go's msgpack struct decoder does: keys by name, unknown keys ignored,
    /// nil for absent, any integer width, `data` as bin or str.
    pub fn from_value(v: &Value) -> Result<Self, DecodeError> {
        let Value::Map(entries) = v else {
            return Err(DecodeError::new(format!(
                "failed to decode rtc.Message: expected a map, got {}",
                kind(v)
            )));
        };
        let mut m = Self::default();
        for (k, val) in entries {
            let Some(key) = k.as_str() else {
                return Err(DecodeError::new("failed to decode rtc.Message: non-string key"));
            };
            let text = |field: &str| -> Result<String, DecodeError> {
                match val {
                    Value::Nil => Ok(String::new()),
                    Value::String(s) => Ok(s.as_str().unwrap_or_default().to_string()),
                    other => Err(DecodeError::new(format!(
                        "failed to decode rtc.Message.{field}: expected a string, got {}",
                        kind(other)
                    ))),
                }
            };
            match key {
                "group_id" => m.group_id = text(key)?,
                "user_id" => m.user_id = text(key)?,
                "session_id" => m.session_id = text(key)?,
                "call_id" => m.call_id = text(key)?,
                "type" => {
                    m.msg_type = match val {
                        Value::Nil => 0,
                        Value::Integer(i) => i
                            .as_i64()
                            .ok_or_else(|| DecodeError::new("rtc.Message.type out of range"))?,
                        other => {
                            return Err(DecodeError::new(format!(
                                "failed to decode rtc.Message.type: expected an integer, got {}",
                                kind(other)
                            )));
                        }
                    }
                }
                "data" => {
                    m.data = match val {
                        Value::Nil => Vec::new(),
                        Value::Binary(b) => b.clone(),
                        Value::String(s) => s.as_bytes().to_vec(),
                        other => {
                            return Err(DecodeError::new(format!(
                                "failed to decode rtc.Message.data: expected bytes, got {}",
                                kind(other)
                            )));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(m)
    }
}

/// A short name for a msgpack value's kind, for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "bool",
        Value::Integer(_) => "integer",
        Value::F32(_) | Value::F64(_) => "float",
        Value::String(_) => "string",
        Value::Binary(_) => "binary",
        Value::Array(_) => "array",
        Value::Map(_) => "map",
        Value::Ext(..) => "ext",
    }
}
