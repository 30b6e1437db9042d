//! Wire formats shared by the control plane and the call core, byte-compatible with rtcd:
//! the plugin WebSocket's [`ws`] messages (two concatenated msgpack values), the
//! [`rtc`] signaling message they carry, and the [`dc`] DataChannel messages. Pure: no I/O.

pub mod dc;
pub mod rtc;
pub mod ws;

/// A message that could not be decoded; the text names what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DecodeError(pub String);

impl DecodeError {
    pub(crate) fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
}

/// Reads one msgpack value from the front of `buf`, advancing it.
pub(crate) fn read_value(buf: &mut &[u8], what: &str) -> Result<rmpv::Value, DecodeError> {
    rmpv::decode::read_value_ref(buf)
        .map(|v| v.to_owned())
        .map_err(|e| DecodeError::new(format!("failed to decode {what}: {e}")))
}

/// Appends `v` to `out`. Writing to a `Vec` cannot fail.
pub(crate) fn write_value(out: &mut Vec<u8>, v: &rmpv::Value) {
    // `Vec<u8>` as `io::Write` never errors.
    let _ = rmpv::encode::write_value(out, v);
}

/// A msgpack map of string keys to string values, as Go's `map[string]string`.
pub(crate) fn str_map(pairs: &[(&str, &str)]) -> rmpv::Value {
    rmpv::Value::Map(
        pairs
            .iter()
            .map(|(k, v)| (rmpv::Value::from(*k), rmpv::Value::from(*v)))
            .collect(),
    )
}
