//! VP8 picture ID and TL0PICIDX continuity for one viewer's out-stream. A receiver's frame
//! reference finder follows these across the whole SSRC; when the SFU moves a viewer to
//! another simulcast layer, the new layer's values are unrelated, and a jump backwards makes
//! the receiver drop frames until it asks for a keyframe. So they are rewritten to continue.

/// 15-bit PictureID space.
const PICTURE_ID_SPACE: u32 = 0x8000;

/// The rewrite state of one out-stream.
#[derive(Debug, Clone, Default)]
pub struct PictureIdRewrite {
    pic_offset: u32,
    tl0_offset: u8,
    last_pic: Option<u16>,
    last_tl0: Option<u8>,
    rebase_next: bool,
}

impl PictureIdRewrite {
    /// The next packet comes from another stream: continue from the last values.
    pub fn switch(&mut self) {
        self.rebase_next = self.last_pic.is_some() || self.last_tl0.is_some();
    }

    /// Maps a packet's PictureID and TL0PICIDX.
    pub fn map(&mut self, pic: Option<u16>, tl0: Option<u8>) -> (Option<u16>, Option<u8>) {
        if self.rebase_next {
            self.rebase_next = false;
            if let (Some(last), Some(src)) = (self.last_pic, pic) {
                let next = (u32::from(last) + 1) % PICTURE_ID_SPACE;
                self.pic_offset =
                    (next + PICTURE_ID_SPACE - u32::from(src) % PICTURE_ID_SPACE) % PICTURE_ID_SPACE;
            }
            if let (Some(last), Some(src)) = (self.last_tl0, tl0) {
                self.tl0_offset = last.wrapping_add(1).wrapping_sub(src);
            }
        }
        let pic = pic.map(|p| ((u32::from(p) + self.pic_offset) % PICTURE_ID_SPACE) as u16);
        let tl0 = tl0.map(|t| t.wrapping_add(self.tl0_offset));
        if pic.is_some() {
            self.last_pic = pic;
        }
        if tl0.is_some() {
            self.last_tl0 = tl0;
        }
        (pic, tl0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn untouched_until_a_switch_then_continuous() {
        let mut r = PictureIdRewrite::default();
        assert_eq!(r.map(Some(1000), Some(7)), (Some(1000), Some(7)));
        assert_eq!(r.map(Some(1001), Some(8)), (Some(1001), Some(8)));
        r.switch();
        // The other layer's numbers are lower: continue at 1002 / 9 instead.
        assert_eq!(r.map(Some(40), Some(200)), (Some(1002), Some(9)));
        assert_eq!(r.map(Some(41), Some(201)), (Some(1003), Some(10)));
    }

    #[test]
    fn wraps_in_15_bits() {
        let mut r = PictureIdRewrite::default();
        r.map(Some(0x7fff), None);
        r.switch();
        assert_eq!(r.map(Some(5), None), (Some(0), None));
        assert_eq!(r.map(Some(6), None), (Some(1), None));
    }
}
