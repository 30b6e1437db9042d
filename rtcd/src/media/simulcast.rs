//! Screen-share simulcast: which layer (`h` ≈ 2.5 Mbps, `l` ≈ 500 kbps) each viewer gets, from
//! that viewer's downlink estimate and the layers' measured rates, with rtcd's rules: start on
//! `l`, go up when the estimate exceeds 0.9 × the measured rate of `h`, come down when it falls
//! well below that, and back off between up-switches (10 s, growing ×1.5 per switch). Heavy
//! loss or a standing queue in front of the viewer (`QueueDelay`) bring it down at once. Pure.

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

/// A simulcast layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    /// RID `h`.
    High,
    /// RID `l`.
    Low,
}

impl Layer {
    /// The RID string.
    pub fn rid(self) -> &'static str {
        match self {
            Self::High => "h",
            Self::Low => "l",
        }
    }

    /// From a RID string.
    pub fn from_rid(rid: &str) -> Option<Self> {
        match rid {
            "h" => Some(Self::High),
            "l" => Some(Self::Low),
            _ => None,
        }
    }

    /// rtcd's measuring window for the layer's rate.
    pub fn window(self) -> Duration {
        match self {
            Self::High => Duration::from_secs(2),
            Self::Low => Duration::from_secs(5),
        }
    }

    /// The nominal rate, for when nothing is measured yet.
    pub fn nominal_bps(self) -> f64 {
        match self {
            Self::High => 2_500_000.0,
            Self::Low => 500_000.0,
        }
    }
}

/// Share of a layer's rate the estimate must exceed.
pub const HEADROOM: f64 = 0.9;
/// First wait after a switch before the next up-switch.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// Growth of that wait per switch.
pub const BACKOFF_FACTOR: f64 = 1.5;
/// Up-switches are considered at most this often.
pub const DECISION_INTERVAL: Duration = Duration::from_secs(1);
/// On `h`, the estimate must fall below this share of the up-switch threshold to come down.
pub const DOWN_FACTOR: f64 = 0.7;
/// Fraction of packets a viewer reports lost on `h` that makes it come down at once.
pub const LOSS_THRESHOLD: f32 = 0.05;
/// Queueing delay towards a viewer on `h` (round trip over the lowest of the last
/// `DELAY_BASE_WINDOW`) that makes it come down at once: its link carries less than the layer.
pub const QUEUE_DELAY_LIMIT: Duration = Duration::from_millis(250);
/// How long the lowest round trip is remembered as the path's own delay.
pub const DELAY_BASE_WINDOW: Duration = Duration::from_secs(10);

/// Bytes over a sliding window.
#[derive(Debug, Clone)]
pub struct RateMonitor {
    window: Duration,
    samples: VecDeque<(Instant, usize)>,
    bytes: usize,
}

impl RateMonitor {
    /// A monitor over `window`.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            samples: VecDeque::new(),
            bytes: 0,
        }
    }

    /// Records a packet of `bytes` at `now`.
    pub fn push(&mut self, now: Instant, bytes: usize) {
        self.samples.push_back((now, bytes));
        self.bytes += bytes;
        while let Some((t, b)) = self.samples.front().copied() {
            if now.duration_since(t) <= self.window {
                break;
            }
            self.samples.pop_front();
            self.bytes -= b;
        }
    }

    /// Bits per second over the samples held, once they span half the window.
    pub fn rate_bps(&self) -> Option<f64> {
        let (first, _) = self.samples.front()?;
        let (last, _) = self.samples.back()?;
        let span = last.duration_since(*first);
        (span >= self.window / 2).then(|| self.bytes as f64 * 8.0 / span.as_secs_f64())
    }
}

/// Queueing delay on a path: each round-trip sample over the lowest sample of the last
/// `DELAY_BASE_WINDOW` (the path's own delay, which may change with a route).
#[derive(Debug, Clone, Default)]
pub struct QueueDelay {
    samples: VecDeque<(Instant, Duration)>,
}

impl QueueDelay {
    /// Records a round trip measured at `now`; returns the queueing delay it shows.
    pub fn push(&mut self, now: Instant, rtt: Duration) -> Duration {
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > DELAY_BASE_WINDOW)
        {
            self.samples.pop_front();
        }
        // Samples come every stats interval (500 ms): a handful per window; bounded anyway.
        if self.samples.len() >= 256 {
            self.samples.pop_front();
        }
        self.samples.push_back((now, rtt));
        let base = self.samples.iter().map(|(_, r)| *r).min().unwrap_or(rtt);
        rtt.saturating_sub(base)
    }
}

/// One viewer's layer choice.
#[derive(Debug, Clone)]
pub struct LayerPolicy {
    current: Layer,
    last_switch: Option<Instant>,
    last_decision: Option<Instant>,
    backoff: Duration,
}

impl LayerPolicy {
    /// Starting on `initial`.
    pub fn new(initial: Layer) -> Self {
        Self {
            current: initial,
            last_switch: None,
            last_decision: None,
            backoff: INITIAL_BACKOFF,
        }
    }

    /// The layer chosen now.
    pub fn current(&self) -> Layer {
        self.current
    }

    /// rtcd's starting layer: `h` when the estimate already has room for it.
    pub fn initial(estimate_bps: Option<f64>) -> Layer {
        match estimate_bps {
            Some(e) if e > HEADROOM * Layer::High.nominal_bps() => Layer::High,
            _ => Layer::Low,
        }
    }

    /// The viewer reports heavy loss on the stream it gets: come down now (no decision
    /// interval), as a loss-based estimate would.
    pub fn congested(&mut self, now: Instant, loss: f32) -> Option<Layer> {
        if loss < LOSS_THRESHOLD {
            return None;
        }
        self.come_down(now)
    }

    /// Packets towards the viewer wait in a queue: come down now, before the queue overflows
    /// (a delay-based signal, as GCC's overuse detector).
    pub fn queued(&mut self, now: Instant, delay: Duration) -> Option<Layer> {
        if delay < QUEUE_DELAY_LIMIT {
            return None;
        }
        self.come_down(now)
    }

    fn come_down(&mut self, now: Instant) -> Option<Layer> {
        (self.current == Layer::High).then(|| self.switch_to(now, Layer::Low))
    }

    /// Moves to `target`; every switch after the first lengthens the up-switch backoff.
    fn switch_to(&mut self, now: Instant, target: Layer) -> Layer {
        if self.last_switch.is_some() {
            self.backoff = self.backoff.mul_f64(BACKOFF_FACTOR);
        }
        self.last_switch = Some(now);
        self.last_decision = Some(now);
        self.current = target;
        target
    }

    /// Considers the viewer's estimate against `h`'s measured rate; returns the new layer when
    /// it should change. Going down is considered at every estimate (a falling estimate means a
    /// queue is building now); going up at most once per `DECISION_INTERVAL`.
    pub fn decide(&mut self, now: Instant, estimate_bps: f64, high_rate_bps: Option<f64>) -> Option<Layer> {
        let needed = HEADROOM * high_rate_bps.unwrap_or(Layer::High.nominal_bps());
        match self.current {
            // The delay-based estimate wanders around the layer's rate: come down only when it
            // falls well below (heavy loss brings a viewer down at once, see `congested`), as
            // rtcd stays up while its loss-based estimate holds.
            Layer::High if estimate_bps < DOWN_FACTOR * needed => self.come_down(now),
            Layer::High => None,
            Layer::Low => {
                if self
                    .last_decision
                    .is_some_and(|t| now.duration_since(t) < DECISION_INTERVAL)
                {
                    return None;
                }
                self.last_decision = Some(now);
                let waited = self
                    .last_switch
                    .is_none_or(|t| now.duration_since(t) >= self.backoff);
                (estimate_bps > needed && waited).then(|| self.switch_to(now, Layer::High))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heavy_loss_on_h_comes_down_at_once() {
        let t0 = Instant::now();
        let mut p = LayerPolicy::new(Layer::High);
        assert_eq!(p.congested(t0, 0.02), None, "light loss is left to the estimate");
        assert_eq!(p.congested(t0, 0.3), Some(Layer::Low));
        assert_eq!(p.congested(t0, 0.3), None, "already low");
        // The up-switch still waits for its backoff.
        assert_eq!(p.decide(t0 + Duration::from_secs(5), 9_000_000.0, None), None);
    }

    #[test]
    fn a_standing_queue_comes_down_at_once() {
        let t0 = Instant::now();
        let mut p = LayerPolicy::new(Layer::High);
        assert_eq!(
            p.queued(t0, Duration::from_millis(100)),
            None,
            "a little queueing is normal"
        );
        assert_eq!(p.queued(t0, Duration::from_millis(300)), Some(Layer::Low));
        assert_eq!(p.queued(t0, Duration::from_millis(300)), None, "already low");
    }

    #[test]
    fn queue_delay_is_over_the_paths_own_delay() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut q = QueueDelay::default();
        // A 600 ms path (satellite) with nothing queued.
        assert_eq!(q.push(t0, ms(600)), ms(0));
        assert_eq!(q.push(t0 + ms(500), ms(620)), ms(20));
        // A queue builds.
        assert_eq!(q.push(t0 + ms(1000), ms(900)), ms(300));
        // The route changes to a slower one for good: after the window it is the base.
        let later = t0 + DELAY_BASE_WINDOW + ms(1500);
        q.push(later - ms(500), ms(800));
        assert_eq!(q.push(later, ms(810)), ms(10));
    }

    #[test]
    fn rate_over_a_window() {
        let t0 = Instant::now();
        let mut m = RateMonitor::new(Duration::from_secs(2));
        assert_eq!(m.rate_bps(), None);
        for i in 0..=20 {
            // 1000 bytes every 100 ms = 80 kbit/s.
            m.push(t0 + Duration::from_millis(100 * i), 1000);
        }
        let r = m.rate_bps().unwrap();
        assert!((r - 84_000.0).abs() < 5_000.0, "{r}");
    }

    #[test]
    fn starts_low_goes_up_with_room_and_down_without() {
        let t0 = Instant::now();
        assert_eq!(LayerPolicy::initial(None), Layer::Low);
        assert_eq!(LayerPolicy::initial(Some(3_000_000.0)), Layer::High);
        let mut p = LayerPolicy::new(Layer::Low);
        let h = Some(2_000_000.0);
        assert_eq!(p.decide(t0, 1_000_000.0, h), None);
        assert_eq!(
            p.decide(t0 + Duration::from_secs(2), 1_900_000.0, h),
            Some(Layer::High)
        );
        // The estimate wanders below the up threshold (1.8 M) but not far: no flapping.
        assert_eq!(
            p.decide(t0 + Duration::from_millis(2500), 1_500_000.0, h),
            None,
            "hysteresis"
        );
        // Estimate collapses: down at once.
        assert_eq!(
            p.decide(t0 + Duration::from_millis(2600), 500_000.0, h),
            Some(Layer::Low)
        );
        // Up again is considered at most once a second, and waits for its backoff.
        assert_eq!(p.decide(t0 + Duration::from_millis(3000), 5_000_000.0, h), None);
        // Room again, but the backoff (10 s × 1.5 after two switches) holds it down.
        assert_eq!(p.decide(t0 + Duration::from_secs(5), 5_000_000.0, h), None);
        assert_eq!(
            p.decide(t0 + Duration::from_secs(19), 5_000_000.0, h),
            Some(Layer::High)
        );
    }
}
