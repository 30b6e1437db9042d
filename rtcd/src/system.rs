//! `GET /system`'s `cpu_load`, the one number the Calls plugin places new calls by (lowest
//! wins): the largest of the machine's CPU utilisation and each configured capacity limit's
//! usage ratio, plus a short decaying penalty for every recent admission, so a burst of calls
//! between two samples spreads over the instances instead of herding onto the one that looked
//! idle. A full instance reports at least 2, above any instance that is not. The CPU is sampled
//! at each whole second of the wall clock, so instances sharing a machine read the same value
//! and their capacity and admissions decide. See `docs/placement.md`.

use std::{
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use crate::{config::Capacity, lifecycle::Lifecycle, metrics::Metrics};

/// What one recent admission adds when `limits.max_sessions` is not set (with it, one session's
/// share of the capacity, `1 / max_sessions`).
pub const ADMISSION_WEIGHT: f64 = 0.01;
/// The admission penalty halves every this long.
pub const ADMISSION_HALF_LIFE: Duration = Duration::from_secs(5);
/// Added to a full instance's value (after raising it to at least 1), so it ranks above every
/// instance that still has room.
pub const FULL_OFFSET: f64 = 1.0;

/// The machine's CPU utilisation (0–1), shared between the sampler and readers.
#[derive(Debug, Clone, Default)]
pub struct CpuLoad(Arc<AtomicU64>);

impl CpuLoad {
    /// The latest value.
    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }
}

/// CPU time counters from the `cpu` line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CpuTimes {
    /// idle + iowait.
    idle: u64,
    /// Every field.
    total: u64,
}

fn read_cpu_times() -> Option<CpuTimes> {
    parse_cpu_times(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_cpu_times(stat: &str) -> Option<CpuTimes> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let idle = f.get(3)? + f.get(4).copied().unwrap_or(0);
    // guest and guest_nice are already counted in user and nice.
    let total = f.iter().take(8).sum();
    Some(CpuTimes { idle, total })
}

/// Busy share of the CPU time between two readings (0 when no time passed).
fn utilisation(a: CpuTimes, b: CpuTimes) -> f64 {
    let total = b.total.saturating_sub(a.total);
    if total == 0 {
        return 0.0;
    }
    let idle = b.idle.saturating_sub(a.idle).min(total);
    (total - idle) as f64 / total as f64
}

/// How long until the next whole second of the wall clock, plus `offset`.
fn until_next_second(now: SystemTime, offset: Duration) -> Duration {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let into = Duration::from_nanos(u64::from(since.subsec_nanos()));
    (Duration::from_secs(1) - into + offset).min(Duration::from_secs(2))
}

/// Recent admissions, decaying exponentially.
#[derive(Debug)]
struct Penalty {
    value: f64,
    at: Instant,
}

impl Penalty {
    fn at(&self, now: Instant) -> f64 {
        let age = now.saturating_duration_since(self.at).as_secs_f64();
        self.value * 0.5f64.powf(age / ADMISSION_HALF_LIFE.as_secs_f64())
    }
}

/// One reading of the placement signal and its parts.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// CPU utilisation, 0–1.
    pub cpu: f64,
    /// Usage ÷ limit for each limit that is set, by its `[limits]` key.
    pub usage: Vec<(&'static str, f64)>,
    /// The recent-admission penalty.
    pub penalty: f64,
    /// The limit that is reached, if one is.
    pub full: Option<&'static str>,
    /// What `/system` reports.
    pub value: f64,
}

/// The placement signal: CPU, capacity, admissions.
#[derive(Debug)]
pub struct Load {
    cpu: CpuLoad,
    capacity: Capacity,
    lifecycle: Lifecycle,
    metrics: Arc<Metrics>,
    /// Bits per second sent over the last second (f64 bits).
    egress: AtomicU64,
    penalty: Mutex<Penalty>,
}

impl Load {
    /// The signal for an instance with this capacity, its sessions counted by `lifecycle`, its
    /// tracks and traffic by `metrics`.
    pub fn new(capacity: Capacity, lifecycle: Lifecycle, metrics: Arc<Metrics>) -> Self {
        Self {
            cpu: CpuLoad::default(),
            capacity,
            lifecycle,
            metrics,
            egress: AtomicU64::new(0),
            penalty: Mutex::new(Penalty {
                value: 0.0,
                at: Instant::now(),
            }),
        }
    }

    /// The capacity limits.
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// A session was admitted at `now`.
    pub fn admitted(&self, now: Instant) {
        let weight = self
            .capacity
            .sessions
            .map_or(ADMISSION_WEIGHT, |max| 1.0 / max.max(1) as f64);
        let mut p = self.penalty.lock().unwrap_or_else(PoisonError::into_inner);
        p.value = p.at(now) + weight;
        p.at = now;
    }

    /// Egress in bits per second over the last second.
    pub fn egress_bitrate(&self) -> f64 {
        f64::from_bits(self.egress.load(Ordering::Relaxed))
    }

    /// The limit other than `max_sessions` (which admission itself checks) that is reached:
    /// `max_forwarded_tracks` or `max_egress_bitrate`.
    pub fn soft_limit_reached(&self) -> Option<&'static str> {
        self.limits()
            .into_iter()
            .filter(|(key, ..)| *key != "max_sessions")
            .find_map(|(key, used, max)| max.filter(|m| used >= *m).map(|_| key))
    }

    /// Each capacity limit: its `[limits]` key, the usage now, and the limit when set (in
    /// [`Reading::usage`]'s order: sessions, forwarded tracks, egress bitrate).
    fn limits(&self) -> [(&'static str, f64, Option<f64>); 3] {
        let c = self.capacity;
        let tracks = usize::try_from(self.metrics.forwarded_tracks.get()).unwrap_or(0);
        let positive = |m: f64| (m > 0.0).then_some(m);
        [
            (
                "max_sessions",
                self.lifecycle.live_sessions() as f64,
                c.sessions.and_then(|m| positive(m as f64)),
            ),
            (
                "max_forwarded_tracks",
                tracks as f64,
                c.forwarded_tracks.and_then(|m| positive(m as f64)),
            ),
            (
                "max_egress_bitrate",
                self.egress_bitrate(),
                c.egress_bitrate.and_then(|m| positive(m as f64)),
            ),
        ]
    }

    /// The signal now.
    pub fn reading(&self, now: Instant) -> Reading {
        let cpu = self.cpu.get();
        let mut usage = Vec::with_capacity(3);
        let mut full = None;
        for (key, used, max) in self.limits() {
            if let Some(max) = max {
                usage.push((key, used / max));
                if used >= max && full.is_none() {
                    full = Some(key);
                }
            }
        }
        let penalty = self
            .penalty
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .at(now);
        let base = usage.iter().map(|(_, r)| *r).fold(cpu, f64::max);
        let mut value = base + penalty;
        if full.is_some() {
            value = value.max(1.0) + FULL_OFFSET;
        }
        Reading {
            cpu,
            usage,
            penalty,
            full,
            value,
        }
    }

    /// What `/system` reports now; also sets `rtcd_load_ratio` and `rtcd_limit_usage_ratio`.
    pub fn value(&self, now: Instant) -> f64 {
        let r = self.reading(now);
        self.metrics.load_ratio.set(r.value);
        for (key, ratio) in &r.usage {
            self.metrics
                .limit_usage
                .get_or_create(&vec![("limit", (*key).to_string())])
                .set(*ratio);
        }
        r.value
    }

    /// Samples the CPU and the egress bitrate at every whole second of the wall clock (plus a
    /// few milliseconds) until the runtime shuts down.
    pub fn spawn_sampler(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut prev: Option<(Instant, CpuTimes, u64)> = None;
            loop {
                tokio::time::sleep(until_next_second(SystemTime::now(), Duration::from_millis(20))).await;
                let now = Instant::now();
                let bytes = this.metrics.egress_bytes();
                let Some(times) = read_cpu_times() else {
                    tracing::debug!(
                        "cannot read /proc/stat; the CPU utilisation stays {}",
                        this.cpu.get()
                    );
                    continue;
                };
                if let Some((then, prev_times, prev_bytes)) = prev {
                    let cpu = utilisation(prev_times, times);
                    this.cpu.set(cpu);
                    this.metrics.cpu_utilization.set(cpu);
                    let secs = now.duration_since(then).as_secs_f64().max(1e-3);
                    let bps = bytes.saturating_sub(prev_bytes) as f64 * 8.0 / secs;
                    this.egress.store(bps.to_bits(), Ordering::Relaxed);
                    this.metrics.egress_bitrate.set(bps);
                }
                prev = Some((now, times, bytes));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(capacity: Capacity) -> (Load, Lifecycle, Arc<Metrics>) {
        let lc = Lifecycle::new();
        let m = Arc::new(Metrics::new());
        (Load::new(capacity, lc.clone(), m.clone()), lc, m)
    }

    #[test]
    fn utilisation_is_the_busy_share_of_all_cpu_time() {
        let a = parse_cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\n").unwrap();
        let b = parse_cpu_times("cpu  200 0 200 1300 100 0 0 0 0 0\ncpu0 1 2 3 4 5 0 0 0 0 0\n").unwrap();
        assert_eq!(
            a,
            CpuTimes {
                idle: 800,
                total: 1000
            }
        );
        assert!((utilisation(a, b) - 0.25).abs() < 1e-9, "{}", utilisation(a, b));
        assert_eq!(utilisation(a, a), 0.0);
        assert_eq!(parse_cpu_times("garbage"), None);
        assert_eq!(parse_cpu_times("cpu  1 2 x"), None);
    }

    #[test]
    fn samples_fall_on_whole_seconds() {
        let t = UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        assert_eq!(
            until_next_second(t, Duration::from_millis(20)),
            Duration::from_millis(770)
        );
        let whole = UNIX_EPOCH + Duration::from_secs(1_700_000_001);
        assert_eq!(until_next_second(whole, Duration::ZERO), Duration::from_secs(1));
    }

    #[test]
    fn without_limits_the_value_is_the_cpu_plus_the_admission_penalty() {
        let (l, _lc, _m) = load(Capacity::default());
        let t0 = Instant::now();
        l.cpu.set(0.3);
        assert_eq!(l.reading(t0).value, 0.3);
        l.admitted(t0);
        l.admitted(t0);
        let r = l.reading(t0);
        assert!((r.value - (0.3 + 2.0 * ADMISSION_WEIGHT)).abs() < 1e-9, "{r:?}");
        let later = l.reading(t0 + ADMISSION_HALF_LIFE);
        assert!(
            (later.penalty - ADMISSION_WEIGHT).abs() < 1e-9,
            "halved: {later:?}"
        );
        assert!(
            l.reading(t0 + 20 * ADMISSION_HALF_LIFE).penalty < 1e-6,
            "decayed away"
        );
        assert_eq!(r.full, None);
        assert!(r.usage.is_empty());
    }

    #[test]
    fn the_largest_usage_ratio_wins_and_a_full_instance_ranks_above_any_other() {
        let (l, lc, m) = load(Capacity {
            sessions: Some(4),
            forwarded_tracks: Some(10),
            egress_bitrate: None,
        });
        let now = Instant::now();
        l.cpu.set(0.1);
        let s: Vec<_> = (0..3).map(|_| lc.try_session_within(Some(4)).unwrap()).collect();
        m.forwarded_tracks.set(5);
        let r = l.reading(now);
        assert_eq!(
            r.usage,
            vec![("max_sessions", 0.75), ("max_forwarded_tracks", 0.5)]
        );
        assert_eq!(r.value, 0.75);
        assert_eq!(r.full, None);
        m.forwarded_tracks.set(10);
        assert_eq!(l.soft_limit_reached(), Some("max_forwarded_tracks"));
        let r = l.reading(now);
        assert_eq!(r.full, Some("max_forwarded_tracks"));
        assert_eq!(r.value, 1.0 + FULL_OFFSET);
        // A busy CPU on an instance with room stays below a full one.
        l.cpu.set(0.99);
        m.forwarded_tracks.set(0);
        let room = l.reading(now).value;
        let _last = lc.try_session_within(Some(4)).unwrap();
        let full = l.reading(now);
        assert_eq!(full.full, Some("max_sessions"));
        assert!(full.value > room, "full {full:?} vs room {room}");
        assert_eq!(l.value(now), full.value);
        assert_eq!(
            m.load_ratio.get(),
            full.value,
            "rtcd_load_ratio is the same value"
        );
        drop(s);
    }

    #[test]
    fn one_admission_weighs_one_session_of_the_capacity() {
        let (l, _lc, _m) = load(Capacity {
            sessions: Some(50),
            ..Capacity::default()
        });
        let now = Instant::now();
        l.admitted(now);
        assert!((l.reading(now).penalty - 0.02).abs() < 1e-9);
    }

    #[tokio::test]
    async fn the_sampler_publishes_the_cpu_utilisation() {
        let (l, _lc, m) = load(Capacity::default());
        let l = Arc::new(l);
        l.cpu.set(-1.0);
        let task = l.spawn_sampler();
        // Two whole-second samples, at most 2.1 s apart; bounded by the timeout.
        let deadline = Instant::now() + Duration::from_secs(5);
        while l.cpu.get() < 0.0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        task.abort();
        let cpu = l.cpu.get();
        assert!((0.0..=1.0).contains(&cpu), "cpu {cpu}");
        assert_eq!(m.cpu_utilization.get(), cpu);
    }
}
