//! Per-subscriber RTP sequence numbers. A receiver that joins mid-stream must see extended
//! sequence numbers below 65536 (its SRTP rollover counter starts at 0), so each forwarded
//! stream is rebased to start at a small number, keeping the source's gaps (mute, loss).

/// Maps a source's extended sequence numbers to one subscriber's.
#[derive(Debug, Clone, Default)]
pub struct SeqRebase {
    offset: Option<i128>,
    last_out: u64,
}

/// Where a rebased stream starts.
pub const FIRST_SEQ: u64 = 1;

impl SeqRebase {
    /// The outgoing extended sequence number for `src`, or `None` for a packet older than the
    /// stream's start (a late retransmission).
    pub fn map(&mut self, src: u64) -> Option<u64> {
        let offset = *self.offset.get_or_insert(i128::from(FIRST_SEQ) - i128::from(src));
        let out = i128::from(src) + offset;
        if out < 1 {
            return None;
        }
        let out = u64::try_from(out).ok()?;
        self.last_out = self.last_out.max(out);
        Some(out)
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
}
