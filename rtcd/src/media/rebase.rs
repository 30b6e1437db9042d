//! Per-subscriber RTP sequence numbers and timestamps. A receiver that joins mid-stream must
//! see extended sequence numbers below 65536 (its SRTP rollover counter starts at 0), so each
//! forwarded stream is rebased to start small, keeping the source's gaps (mute, loss). When
//! the source stream changes (another simulcast layer), the output continues where it was:
//! the next sequence number follows the last one and the timestamp moves on by the wall-clock
//! time since the last packet (at least one frame), so the receiver's RTP-time-to-arrival
//! mapping stays true across the gap of a switch.
//!
//! SRTP safety: an outgoing sequence number must never carry two different payloads (the
//! SRTP index would encrypt two plaintexts under one AES-GCM nonce). After a switch, a late or
//! reordered packet of the new source from before the switch would map at or below the last
//! number already sent for the old source; everything at or below that high-water mark of the
//! switch is dropped.

use std::time::Instant;

/// Where a rebased stream starts.
pub const FIRST_SEQ: u64 = 1;

/// Maps a source's extended sequence numbers and RTP times to one subscriber's stream.
#[derive(Debug, Clone, Default)]
pub struct SeqRebase {
    seq_offset: Option<i128>,
    ts_offset: i64,
    last_seq: u64,
    last_ts: u32,
    /// When the newest packet was mapped.
    last_at: Option<Instant>,
    rebase_next: bool,
    /// The highest number sent before the last switch: nothing at or below it is mapped again.
    floor: u64,
    /// RTP ticks to advance on a switch at least (one frame).
    frame_ticks: u32,
    /// RTP clock rate, for the wall-clock gap of a switch.
    clock_hz: u32,
}

impl SeqRebase {
    /// A rebaser for an RTP clock of `clock_hz` whose switches advance timestamps by at least
    /// `frame_ticks`.
    pub fn new(clock_hz: u32, frame_ticks: u32) -> Self {
        Self {
            frame_ticks,
            clock_hz,
            ..Self::default()
        }
    }

    /// The next source packet comes from a different stream: continue from here.
    pub fn switch(&mut self) {
        // Before the first packet there is nothing to continue from.
        self.rebase_next = self.seq_offset.is_some();
    }

    /// The outgoing extended sequence number for `src`, or `None` for a packet older than the
    /// stream's start (a late retransmission).
    pub fn map(&mut self, src: u64, at: Instant) -> Option<u64> {
        self.map_with_time(src, 0, at).map(|(s, _)| s)
    }

    /// Sequence number and timestamp for a source packet that arrived `at`.
    pub fn map_with_time(&mut self, src_seq: u64, src_ts: u32, at: Instant) -> Option<(u64, u32)> {
        if self.rebase_next && self.seq_offset.is_some() {
            self.rebase_next = false;
            self.floor = self.last_seq;
            self.seq_offset = Some(i128::from(self.last_seq) + 1 - i128::from(src_seq));
            let gap = self
                .last_at
                .map_or(0.0, |t| at.saturating_duration_since(t).as_secs_f64());
            // Saturating float-to-int: a gap of days still gives a valid (wrapped) RTP time.
            let gap_ticks = (gap * f64::from(self.clock_hz)) as u32;
            let next_ts = self.last_ts.wrapping_add(gap_ticks.max(self.frame_ticks).max(1));
            self.ts_offset = i64::from(next_ts) - i64::from(src_ts);
        }
        let offset = *self
            .seq_offset
            .get_or_insert(i128::from(FIRST_SEQ) - i128::from(src_seq));
        let out = i128::from(src_seq) + offset;
        if out < 1 || out <= i128::from(self.floor) {
            return None;
        }
        let out = u64::try_from(out).ok()?;
        // Wrapping add of the offset in 32-bit RTP time.
        let ts = (i64::from(src_ts) + self.ts_offset).rem_euclid(1 << 32) as u32;
        if out > self.last_seq {
            self.last_seq = out;
            self.last_ts = ts;
            self.last_at = Some(at);
        }
        Some((out, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_late_packet_of_the_new_layer_never_reuses_a_number() {
        // Found by review: after a switch the offset comes from the new layer's first packet,
        // so that layer's packet 8999 (sent before 9000, arriving after it) mapped to 2, the
        // number layer A's packet 501 already used.
        let mut r = SeqRebase::new(90_000, 3000);
        let at = Instant::now();
        assert_eq!(r.map(500, at), Some(1));
        assert_eq!(r.map(501, at), Some(2));
        r.switch();
        assert_eq!(r.map(9000, at), Some(3));
        assert_eq!(r.map(8999, at), None, "would reuse 2");
        assert_eq!(r.map(8998, at), None, "would reuse 1");
        // Reordering within the new layer, above the high-water mark, still maps.
        assert_eq!(r.map(9002, at), Some(5));
        assert_eq!(r.map(9001, at), Some(4));
    }

    /// A small deterministic generator (xorshift64*), so the property runs the same each time.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn no_number_is_ever_sent_with_two_payloads() {
        use std::collections::HashMap;
        // Three source layers, each with its own sequence space. Random switches between them;
        // packets of the current layer arrive in order, late (reordered), or twice (a
        // retransmission). A payload is identified by (layer, source sequence number).
        for seed in 1..=500u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            let mut r = SeqRebase::new(90_000, 3000);
            let mut next = [0u64; 3];
            for n in &mut next {
                *n = 1 + rng.below(60_000);
            }
            let mut layer = 0usize;
            let mut sent: HashMap<u64, (usize, u64)> = HashMap::new();
            let t0 = Instant::now();
            for step in 0..400u64 {
                let at = t0 + Duration::from_millis(step * 5);
                let src = match rng.below(10) {
                    0 => {
                        layer = usize::try_from(rng.below(3)).unwrap();
                        r.switch();
                        continue;
                    }
                    // Late: up to 20 packets back, from before or after a switch.
                    1 | 2 => next[layer].saturating_sub(1 + rng.below(20)).max(1),
                    // A gap (loss upstream).
                    3 => {
                        next[layer] += 1 + rng.below(5);
                        next[layer]
                    }
                    _ => {
                        next[layer] += 1;
                        next[layer]
                    }
                };
                if let Some(out) = r.map(src, at) {
                    let payload = (layer, src);
                    if let Some(prev) = sent.insert(out, payload) {
                        assert_eq!(
                            prev, payload,
                            "seed {seed} step {step}: {out} sent with two payloads"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn starts_small_and_keeps_gaps() {
        let mut r = SeqRebase::default();
        let at = Instant::now();
        assert_eq!(r.map(70_000, at), Some(1));
        assert_eq!(r.map(70_001, at), Some(2));
        assert_eq!(r.map(70_010, at), Some(11));
        assert_eq!(r.map(69_000, at), None);
    }

    #[test]
    fn a_switch_continues_sequence_and_time() {
        let mut r = SeqRebase::new(90_000, 3000);
        let at = Instant::now();
        assert_eq!(r.map_with_time(500, 1_000_000, at), Some((1, 1_000_000)));
        assert_eq!(r.map_with_time(501, 1_003_000, at), Some((2, 1_003_000)));
        r.switch();
        // Another layer, with unrelated numbers.
        assert_eq!(r.map_with_time(9000, 42, at), Some((3, 1_006_000)));
        assert_eq!(r.map_with_time(9001, 3042, at), Some((4, 1_009_000)));
    }

    #[test]
    fn a_switch_before_the_first_packet_changes_nothing() {
        let mut r = SeqRebase::new(90_000, 3000);
        let at = Instant::now();
        r.switch();
        assert_eq!(r.map_with_time(100, 5000, at), Some((1, 5000)));
        assert_eq!(
            r.map_with_time(101, 5000, at),
            Some((2, 5000)),
            "same frame, same timestamp"
        );
    }

    #[test]
    fn time_wraps() {
        let mut r = SeqRebase::new(90_000, 3000);
        let at = Instant::now();
        r.map_with_time(1, u32::MAX - 10, at);
        r.switch();
        assert_eq!(r.map_with_time(50, 0, at), Some((2, 2989)));
    }

    #[test]
    fn a_switch_after_a_pause_keeps_wall_clock_time() {
        // A congestion switch: the new layer's first packet comes 600 ms after the old layer's
        // last one, so its timestamp is 600 ms (54 000 ticks at 90 kHz) on, not one frame.
        let mut r = SeqRebase::new(90_000, 3000);
        let t0 = Instant::now();
        assert_eq!(r.map_with_time(10, 7_000, t0), Some((1, 7_000)));
        r.switch();
        let t1 = t0 + Duration::from_millis(600);
        assert_eq!(r.map_with_time(4000, 123, t1), Some((2, 61_000)));
        assert_eq!(r.map_with_time(4001, 3123, t1), Some((3, 64_000)));
        // A switch straight back, within the same frame time: one frame on, never backwards.
        r.switch();
        assert_eq!(r.map_with_time(11, 7_000, t1), Some((4, 67_000)));
    }
}
