//! The packets of one incoming video stream since its latest keyframe began, kept for a short
//! while so that a viewer who starts watching mid-keyframe gets the whole keyframe at once
//! instead of waiting for the publisher to encode (and pace out) another one.
//!
//! Bounded in count and age: a publisher's first keyframe is what matters (a new share, a new
//! camera, the answer to a keyframe request), and WebRTC senders send keyframes rarely, so the
//! buffer is usually empty.

use std::time::{Duration, Instant};

/// At most this many packets are kept (a 1080p screen keyframe is about 250).
pub const MAX_PACKETS: usize = 400;
/// Packets are kept for at most this long after the keyframe began; a viewer starting later
/// asks for a new keyframe instead.
pub const MAX_AGE: Duration = Duration::from_millis(1500);

/// Packets since the latest keyframe start, while the group is young and small.
#[derive(Debug)]
pub struct Gop<P> {
    packets: Vec<P>,
    started: Option<Instant>,
}

impl<P> Default for Gop<P> {
    fn default() -> Self {
        Self {
            packets: Vec::new(),
            started: None,
        }
    }
}

impl<P: Clone> Gop<P> {
    /// One packet of the stream, in arrival order. A keyframe's first packet starts a new group;
    /// a packet that would make the group too old or too large ends it until the next keyframe.
    pub fn push(&mut self, now: Instant, keyframe_start: bool, p: &P) {
        if keyframe_start {
            self.packets.clear();
            self.started = Some(now);
        } else if !self.open(now) || self.packets.len() >= MAX_PACKETS {
            self.clear();
            return;
        }
        self.packets.push(p.clone());
    }

    /// The group, first packet a keyframe start, when one is young enough to replay.
    pub fn replayable(&self, now: Instant) -> Option<&[P]> {
        (self.open(now) && !self.packets.is_empty()).then_some(self.packets.as_slice())
    }

    fn open(&self, now: Instant) -> bool {
        self.started
            .is_some_and(|t| now.saturating_duration_since(t) <= MAX_AGE)
    }

    fn clear(&mut self) {
        if self.started.is_some() {
            self.started = None;
            // Give the memory back: most of the time nothing is kept.
            self.packets = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_group_from_its_keyframe_until_too_old_or_too_large() {
        let t0 = Instant::now();
        let mut g: Gop<u32> = Gop::default();
        // Nothing before the first keyframe.
        g.push(t0, false, &1);
        assert!(g.replayable(t0).is_none());
        g.push(t0, true, &2);
        g.push(t0, false, &3);
        assert_eq!(g.replayable(t0), Some(&[2, 3][..]));
        // A new keyframe starts over.
        g.push(t0 + Duration::from_millis(10), true, &4);
        g.push(t0 + Duration::from_millis(20), false, &5);
        assert_eq!(g.replayable(t0 + Duration::from_millis(20)), Some(&[4, 5][..]));
        // Too old to replay, and the next packet ends the group.
        let late = t0 + Duration::from_millis(10) + MAX_AGE + Duration::from_millis(1);
        assert!(g.replayable(late).is_none());
        g.push(late, false, &6);
        assert!(g.replayable(t0 + Duration::from_millis(20)).is_none());
        // Too large: the group ends at the packet that would pass the bound.
        g.push(late, true, &0);
        for i in 1..MAX_PACKETS as u32 {
            g.push(late, false, &i);
        }
        assert_eq!(g.replayable(late).map(<[u32]>::len), Some(MAX_PACKETS));
        g.push(late, false, &9999);
        assert!(g.replayable(late).is_none());
        g.push(late, false, &10000);
        assert!(g.replayable(late).is_none());
    }
}
