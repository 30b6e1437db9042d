//! Per-subscriber RTP sequence numbers and timestamps. A receiver that joins mid-stream must
//! see extended sequence numbers below 65536 (its SRTP rollover counter starts at 0), so each
//! forwarded stream is rebased to start small, keeping the source's gaps (mute, loss). When
//! the source stream changes (another simulcast layer), the output continues where it was:
//! the next sequence number follows the last one and the timestamp moves one frame on.

/// Where a rebased stream starts.
pub const FIRST_SEQ: u64 = 1;

/// Maps a source's extended sequence numbers and RTP times to one subscriber's stream.
#[derive(Debug, Clone, Default)]
pub struct SeqRebase {
    seq_offset: Option<i128>,
    ts_offset: i64,
    last_seq: u64,
    last_ts: u32,
    rebase_next: bool,
    /// RTP ticks to advance on a switch (one frame).
    frame_ticks: u32,
}

impl SeqRebase {
    /// A rebaser whose switches advance timestamps by `frame_ticks`.
    pub fn with_frame_ticks(frame_ticks: u32) -> Self {
        Self {
            frame_ticks,
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
    pub fn map(&mut self, src: u64) -> Option<u64> {
        self.map_with_time(src, 0).map(|(s, _)| s)
    }

    /// Sequence number and timestamp for a source packet.
    pub fn map_with_time(&mut self, src_seq: u64, src_ts: u32) -> Option<(u64, u32)> {
        if self.rebase_next && self.seq_offset.is_some() {
            self.rebase_next = false;
            self.seq_offset = Some(i128::from(self.last_seq) + 1 - i128::from(src_seq));
            let next_ts = self.last_ts.wrapping_add(self.frame_ticks.max(1));
            self.ts_offset = i64::from(next_ts) - i64::from(src_ts);
        }
        let offset = *self
            .seq_offset
            .get_or_insert(i128::from(FIRST_SEQ) - i128::from(src_seq));
        let out = i128::from(src_seq) + offset;
        if out < 1 {
            return None;
        }
        let out = u64::try_from(out).ok()?;
        // Wrapping add of the offset in 32-bit RTP time.
        let ts = (i64::from(src_ts) + self.ts_offset).rem_euclid(1 << 32) as u32;
        if out > self.last_seq {
            self.last_seq = out;
            self.last_ts = ts;
        }
        Some((out, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_small_and_keeps_gaps() {
        let mut r = SeqRebase::default();
        assert_eq!(r.map(70_000), Some(1));
        assert_eq!(r.map(70_001), Some(2));
        assert_eq!(r.map(70_010), Some(11));
        assert_eq!(r.map(69_000), None);
    }

    #[test]
    fn a_switch_continues_sequence_and_time() {
        let mut r = SeqRebase::with_frame_ticks(3000);
        assert_eq!(r.map_with_time(500, 1_000_000), Some((1, 1_000_000)));
        assert_eq!(r.map_with_time(501, 1_003_000), Some((2, 1_003_000)));
        r.switch();
        // Another layer, with unrelated numbers.
        assert_eq!(r.map_with_time(9000, 42), Some((3, 1_006_000)));
        assert_eq!(r.map_with_time(9001, 3042), Some((4, 1_009_000)));
    }

    #[test]
    fn a_switch_before_the_first_packet_changes_nothing() {
        let mut r = SeqRebase::with_frame_ticks(3000);
        r.switch();
        assert_eq!(r.map_with_time(100, 5000), Some((1, 5000)));
        assert_eq!(
            r.map_with_time(101, 5000),
            Some((2, 5000)),
            "same frame, same timestamp"
        );
    }

    #[test]
    fn time_wraps() {
        let mut r = SeqRebase::with_frame_ticks(3000);
        r.map_with_time(1, u32::MAX - 10);
        r.switch();
        assert_eq!(r.map_with_time(50, 0), Some((2, 2989)));
    }
}
