//! Whether an RTP payload starts a keyframe, for switching a viewer between simulcast layers or
//! sources only where its decoder can start: VP8 (RFC 7741) and AV1 (RTP aggregation header).

/// Video codecs forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// PT 96.
    Vp8,
    /// PT 45.
    Av1,
}

/// True when `payload` is the first packet of a keyframe.
pub fn is_keyframe(codec: VideoCodec, payload: &[u8]) -> bool {
    match codec {
        VideoCodec::Vp8 => vp8_keyframe(payload),
        VideoCodec::Av1 => av1_keyframe(payload),
    }
}

fn vp8_keyframe(p: &[u8]) -> bool {
    let Some(&b0) = p.first() else { return false };
    let start = b0 & 0x10 != 0;
    let partition = b0 & 0x07;
    if !start || partition != 0 {
        return false;
    }
    let mut i = 1;
    if b0 & 0x80 != 0 {
        let Some(&x) = p.get(1) else { return false };
        i = 2;
        if x & 0x80 != 0 {
            // PictureID: one byte, or two when its M bit is set.
            let Some(&pid) = p.get(i) else { return false };
            i += if pid & 0x80 != 0 { 2 } else { 1 };
        }
        if x & 0x40 != 0 {
            i += 1; // TL0PICIDX
        }
        if x & 0x30 != 0 {
            i += 1; // TID/KEYIDX
        }
    }
    // VP8 payload header: P bit (inverse key frame flag) is bit 0 of the first byte.
    p.get(i).is_some_and(|h| h & 0x01 == 0)
}

fn av1_keyframe(p: &[u8]) -> bool {
    // Aggregation header Z Y W W N - - -: N starts a new coded video sequence.
    p.first().is_some_and(|h| h & 0x08 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vp8_keyframes() {
        // S=1, PID=0, no extensions; payload header P=0 → keyframe.
        assert!(is_keyframe(VideoCodec::Vp8, &[0x10, 0x00, 0x9d, 0x01, 0x2a]));
        // Inter frame (P=1).
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x10, 0x01]));
        // Not the start of the partition.
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x00, 0x00]));
        // X=1, I=1 with a 15-bit picture id (M=1), then the payload header.
        assert!(is_keyframe(VideoCodec::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x00]));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x90, 0x80, 0x81, 0x23, 0x01]));
        // X=1 with I, L, T: three more bytes before the payload header.
        assert!(is_keyframe(
            VideoCodec::Vp8,
            &[0x90, 0xe0, 0x05, 0x07, 0x20, 0x00]
        ));
        assert!(!is_keyframe(VideoCodec::Vp8, &[]));
        assert!(!is_keyframe(VideoCodec::Vp8, &[0x90]));
    }

    #[test]
    fn av1_new_sequence() {
        assert!(is_keyframe(VideoCodec::Av1, &[0x18]));
        assert!(!is_keyframe(VideoCodec::Av1, &[0x10]));
        assert!(!is_keyframe(VideoCodec::Av1, &[]));
    }
}
