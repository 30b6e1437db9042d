//! The probe every generated media payload carries in its last bytes (sender, stream, sequence,
//! send time on the generator's clock), the Opus-like size model, and the VP8 framing.

/// Marks a probe; anything else in a payload tail is not ours.
const MAGIC: [u8; 4] = *b"RTLT";
/// Bytes the probe takes at the end of a payload.
pub const PROBE_LEN: usize = 4 + 4 + 1 + 4 + 8;

/// Which generated stream a packet belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Stream {
    /// Microphone (Opus-like, 20 ms).
    Voice = 0,
    /// Screen simulcast layer `h`.
    ScreenHigh = 1,
    /// Screen simulcast layer `l`.
    ScreenLow = 2,
}

impl Stream {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => Self::Voice,
            1 => Self::ScreenHigh,
            2 => Self::ScreenLow,
            _ => return None,
        })
    }
}

/// What a probe says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Index of the sending participant.
    pub sender: u32,
    /// Stream of that sender.
    pub stream: Stream,
    /// Per (sender, stream) sequence, from 0, gapless at the sender.
    pub seq: u32,
    /// Send time in ns since the generator's epoch.
    pub sent_ns: u64,
}

impl Probe {
    /// Writes the probe into the last [`PROBE_LEN`] bytes of `payload`.
    pub fn write(&self, payload: &mut [u8]) {
        let n = payload.len();
        if n < PROBE_LEN {
            return;
        }
        let t = &mut payload[n - PROBE_LEN..];
        t[..4].copy_from_slice(&MAGIC);
        t[4..8].copy_from_slice(&self.sender.to_be_bytes());
        t[8] = self.stream as u8;
        t[9..13].copy_from_slice(&self.seq.to_be_bytes());
        t[13..21].copy_from_slice(&self.sent_ns.to_be_bytes());
    }

    /// Reads the probe from a payload's tail, if it has one.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let n = payload.len();
        if n < PROBE_LEN {
            return None;
        }
        let t = &payload[n - PROBE_LEN..];
        if t[..4] != MAGIC {
            return None;
        }
        Some(Self {
            sender: u32::from_be_bytes([t[4], t[5], t[6], t[7]]),
            stream: Stream::from_u8(t[8])?,
            seq: u32::from_be_bytes([t[9], t[10], t[11], t[12]]),
            sent_ns: u64::from_be_bytes([t[13], t[14], t[15], t[16], t[17], t[18], t[19], t[20]]),
        })
    }
}

/// Opus payload size for packet `seq` of a talker: a fixed pseudo-random walk with a mean of
/// 175 B and a 95th percentile near 290 B (the Calls load test's `speech_0.ogg`: 175 B mean,
/// 291 B p95, CELT-FB 20 ms).
pub fn opus_size(sender: u32, seq: u32) -> usize {
    // splitmix-style hash: deterministic, cheap, and different per sender.
    let mut x = (u64::from(sender) << 32 | u64::from(seq)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    // 80 % of frames 120–219 B (mean 170), 20 % 150–349 B (mean 250) ≈ mean 186, trimmed
    // by the 10 % short (60–99 B) frames below: overall mean ≈ 175 B.
    let r = (x % 100) as usize;
    let v = ((x >> 8) % 200) as usize;
    if r < 10 {
        60 + v % 40
    } else if r < 82 {
        120 + v % 100
    } else {
        150 + v
    }
}

/// A VP8 RTP payload: descriptor (X, S on a frame's first packet, 15-bit picture id), on the
/// first packet the VP8 frame header (key frames carry the start code and 1280×720), zero
/// filler, and room for the probe at the end. `size` is the whole payload.
pub fn vp8_payload(size: usize, first: bool, keyframe: bool, picture_id: u16) -> Vec<u8> {
    let mut p = vec![0u8; size.max(4 + 10 + PROBE_LEN)];
    p[0] = 0x80 | if first { 0x10 } else { 0 };
    p[1] = 0x80;
    p[2] = 0x80 | ((picture_id >> 8) as u8 & 0x7f);
    p[3] = picture_id as u8;
    if first {
        // Frame tag: P (0 = key frame), version 0, show_frame 1, first partition size.
        p[4] = if keyframe { 0x10 } else { 0x11 };
        p[5] = 0x20;
        p[6] = 0x00;
        if keyframe {
            p[7..10].copy_from_slice(&[0x9d, 0x01, 0x2a]);
            p[10..12].copy_from_slice(&1280u16.to_le_bytes());
            p[12..14].copy_from_slice(&720u16.to_le_bytes());
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_round_trips_and_rejects_foreign_tails() {
        let p = Probe {
            sender: 7,
            stream: Stream::ScreenLow,
            seq: 123_456,
            sent_ns: 9_876_543_210,
        };
        let mut buf = vec![0xaa; 100];
        p.write(&mut buf);
        assert_eq!(Probe::read(&buf), Some(p));
        assert_eq!(Probe::read(&[0u8; 100]), None);
        assert_eq!(Probe::read(&buf[..PROBE_LEN - 1]), None);
        let mut bad = buf.clone();
        let n = bad.len();
        bad[n - PROBE_LEN + 8] = 9;
        assert_eq!(Probe::read(&bad), None, "unknown stream");
    }

    #[test]
    fn opus_sizes_follow_the_speech_sample() {
        let mut sizes: Vec<usize> = (0..50_000).map(|s| opus_size(s % 13, s)).collect();
        let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
        sizes.sort_unstable();
        let p95 = sizes[sizes.len() * 95 / 100];
        assert!((165.0..185.0).contains(&mean), "mean {mean}");
        assert!((250..=330).contains(&p95), "p95 {p95}");
        assert!(sizes[0] >= PROBE_LEN);
    }

    #[test]
    fn vp8_payloads_mark_key_frames_as_the_sfu_reads_them() {
        use rtcd::media::keyframe::{VideoCodec, is_keyframe};
        let k = vp8_payload(1100, true, true, 300);
        assert!(is_keyframe(VideoCodec::Vp8, &k));
        assert_eq!(&k[7..10], &[0x9d, 0x01, 0x2a]);
        assert!(!is_keyframe(
            VideoCodec::Vp8,
            &vp8_payload(1100, true, false, 301)
        ));
        assert!(!is_keyframe(
            VideoCodec::Vp8,
            &vp8_payload(1100, false, true, 300)
        ));
        assert_eq!(vp8_payload(1100, false, false, 1).len(), 1100);
    }
}
