//! `GET /system`'s `cpu_load`, with rtcd's semantics: sampled every second from `/proc/stat` as
//! elapsed seconds ÷ idle CPU-seconds, i.e. 1 / (idle CPUs). Lower is better; the Calls plugin
//! places a new call on the host with the lowest value.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// Linux's `USER_HZ`.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// Reported when no CPU was idle at all during a sample (rtcd would divide by zero).
pub const SATURATED: f64 = 1e9;

/// The latest `cpu_load`, shared between the sampler and the API. Starts at 0 as in rtcd.
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

    /// Samples `/proc/stat` every `interval` until the runtime shuts down.
    pub fn spawn_sampler(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            let mut prev: Option<(Instant, u64)> = None;
            loop {
                let now = ticker.tick().await.into_std();
                let Some(idle) = read_idle_ticks() else {
                    tracing::debug!("cannot read /proc/stat; cpu_load stays {}", this.get());
                    continue;
                };
                if let Some((then, prev_idle)) = prev {
                    this.set(cpu_load(idle.saturating_sub(prev_idle), now.duration_since(then)));
                }
                prev = Some((now, idle));
            }
        })
    }
}

/// The aggregate idle time, in ticks, from the `cpu` line of `/proc/stat`.
fn read_idle_ticks() -> Option<u64> {
    parse_idle_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

fn parse_idle_ticks(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    // cpu user nice system idle iowait …
    line.split_whitespace().nth(4)?.parse().ok()
}

/// `1 / (idle CPU-seconds / elapsed seconds)`.
pub fn cpu_load(idle_ticks: u64, elapsed: Duration) -> f64 {
    let idle_cpus = idle_ticks as f64 / CLOCK_TICKS_PER_SECOND / elapsed.as_secs_f64();
    if idle_cpus > 0.0 {
        (1.0 / idle_cpus).min(SATURATED)
    } else {
        SATURATED
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_idle_cpus_give_one_half() {
        assert!((cpu_load(200, Duration::from_secs(1)) - 0.5).abs() < 1e-9);
        assert!((cpu_load(50, Duration::from_secs(1)) - 2.0).abs() < 1e-9);
        assert_eq!(cpu_load(0, Duration::from_secs(1)), SATURATED);
    }

    #[test]
    fn idle_is_the_fourth_number_of_the_cpu_line() {
        let stat = "cpu  10 20 30 4000 50 0 0 0 0 0\ncpu0 1 2 3 4 5 0 0 0 0 0\n";
        assert_eq!(parse_idle_ticks(stat), Some(4000));
        assert_eq!(parse_idle_ticks("garbage"), None);
    }

    #[tokio::test]
    async fn the_sampler_publishes_a_positive_load() {
        let load = CpuLoad::default();
        let task = load.spawn_sampler(Duration::from_millis(200));
        tokio::time::sleep(Duration::from_millis(700)).await;
        task.abort();
        assert!(load.get() > 0.0, "cpu_load still {}", load.get());
    }
}
