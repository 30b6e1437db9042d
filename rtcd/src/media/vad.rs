//! Voice activity from RFC 6464 audio levels, with rtcd's rule (`service/rtc/vad`): over the
//! last 50 levels, voice turns on when the standard deviation exceeds 10 and off when it drops
//! below 4, but not sooner than 2 s after it turned on. Pure: time is passed in.

use std::time::{Duration, Instant};

/// Levels in the sliding window.
pub const SAMPLE_SIZE: usize = 50;
/// Standard deviation above which voice turns on.
pub const ACTIVATION_THRESHOLD: i64 = 10;
/// Standard deviation below which voice turns off.
pub const DEACTIVATION_THRESHOLD: i64 = 4;
/// Minimum time voice stays on.
pub const ACTIVATION_DURATION: Duration = Duration::from_secs(2);

/// One session's detector.
#[derive(Debug, Clone, Default)]
pub struct VoiceDetector {
    levels: Vec<u8>,
    next: usize,
    activated_at: Option<Instant>,
    on: bool,
}

impl VoiceDetector {
    /// Whether voice is on.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Feeds one level (0 = loudest … 127 = silence, i.e. −dBov). Returns the new state when
    /// it changes.
    pub fn push(&mut self, level: u8, now: Instant) -> Option<bool> {
        if self.levels.len() < SAMPLE_SIZE {
            self.levels.push(level);
            return None;
        }
        self.levels[self.next] = level;
        self.next = (self.next + 1) % SAMPLE_SIZE;

        let n = self.levels.len() as f64;
        let avg = self.levels.iter().map(|l| f64::from(*l)).sum::<f64>() / n;
        let var = self
            .levels
            .iter()
            .map(|l| (f64::from(*l) - avg).powi(2))
            .sum::<f64>()
            / n;
        // rtcd truncates the deviation to an integer before comparing.
        let dev = var.sqrt() as i64;
        if !self.on && dev > ACTIVATION_THRESHOLD {
            self.activated_at = Some(now);
            self.on = true;
            return Some(true);
        }
        if self.on && dev < DEACTIVATION_THRESHOLD {
            let held = self
                .activated_at
                .is_none_or(|t| now.duration_since(t) >= ACTIVATION_DURATION);
            if held {
                self.on = false;
                return Some(false);
            }
        }
        None
    }

    /// Clears the window (on mute). rtcd then always reports voice off.
    pub fn reset(&mut self) {
        *self = Self::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(d: &mut VoiceDetector, levels: impl IntoIterator<Item = u8>, t: Instant) -> Vec<bool> {
        levels.into_iter().filter_map(|l| d.push(l, t)).collect()
    }

    #[test]
    fn silence_never_activates() {
        let mut d = VoiceDetector::default();
        assert!(feed(&mut d, std::iter::repeat_n(127, 500), Instant::now()).is_empty());
    }

    #[test]
    fn speech_activates_then_silence_deactivates_after_two_seconds() {
        let t0 = Instant::now();
        let mut d = VoiceDetector::default();
        // Alternating loud/quiet frames: large deviation.
        let speech = (0..100).map(|i| if i % 2 == 0 { 20 } else { 70 });
        assert_eq!(feed(&mut d, speech, t0), [true]);
        // Steady silence right away: not yet (held for 2 s).
        assert!(
            feed(
                &mut d,
                std::iter::repeat_n(127, 60),
                t0 + Duration::from_millis(500)
            )
            .is_empty()
        );
        assert!(d.is_on());
        assert_eq!(
            feed(&mut d, std::iter::repeat_n(127, 60), t0 + Duration::from_secs(3)),
            [false]
        );
    }

    #[test]
    fn reset_clears_state() {
        let mut d = VoiceDetector::default();
        feed(
            &mut d,
            (0..100).map(|i| if i % 2 == 0 { 20 } else { 70 }),
            Instant::now(),
        );
        assert!(d.is_on());
        d.reset();
        assert!(!d.is_on());
    }
}
