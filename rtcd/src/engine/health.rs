//! Shard heartbeats: each shard stamps the time on every turn of its loop (at least every
//! [`BEAT_EVERY`]); `/api/v1/health` turns 503 when one has not beaten for [`HEARTBEAT_BOUND`]
//! or its thread has ended, so Kubernetes takes the pod out and restarts it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

/// How often an idle shard beats.
pub(super) const BEAT_EVERY: Duration = Duration::from_millis(250);
/// A shard silent for this long is stalled.
pub(super) const HEARTBEAT_BOUND: Duration = Duration::from_secs(2);

/// One shard's heartbeat.
#[derive(Debug)]
pub(super) struct Beat {
    origin: Instant,
    /// Milliseconds since `origin` at the last beat.
    last_ms: AtomicU64,
    stopped: AtomicBool,
}

impl Beat {
    fn new(origin: Instant) -> Self {
        Self {
            origin,
            last_ms: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
        }
    }

    /// The shard is alive now.
    pub(super) fn beat(&self, now: Instant) {
        let ms = u64::try_from(now.duration_since(self.origin).as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// The shard's thread has ended.
    pub(super) fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }
}

/// Every shard's heartbeat.
#[derive(Debug)]
pub struct EngineHealth {
    beats: Vec<Arc<Beat>>,
}

impl EngineHealth {
    pub(super) fn new(shards: usize) -> Self {
        let origin = Instant::now();
        let beats = (0..shards)
            .map(|_| {
                let b = Beat::new(origin);
                b.beat(origin);
                Arc::new(b)
            })
            .collect();
        Self { beats }
    }

    pub(super) fn beat(&self, shard: usize) -> Arc<Beat> {
        self.beats
            .get(shard)
            .cloned()
            .unwrap_or_else(|| Arc::new(Beat::new(Instant::now())))
    }

    /// Why the engine is unhealthy at `now`, if it is: the first stopped or stalled shard.
    pub fn problem(&self, now: Instant) -> Option<String> {
        for (i, b) in self.beats.iter().enumerate() {
            if b.stopped.load(Ordering::Relaxed) {
                return Some(format!("engine shard {i} has stopped"));
            }
            let last = b.origin + Duration::from_millis(b.last_ms.load(Ordering::Relaxed));
            let silent = now.saturating_duration_since(last);
            if silent >= HEARTBEAT_BOUND {
                return Some(format!(
                    "engine shard {i} has not run for {:.1} s (stalled)",
                    silent.as_secs_f64()
                ));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_or_stopped_shard_is_a_problem() {
        let h = EngineHealth::new(2);
        let t0 = Instant::now();
        h.beat(0).beat(t0);
        h.beat(1).beat(t0);
        assert_eq!(h.problem(t0 + Duration::from_millis(1900)), None);
        h.beat(0).beat(t0 + Duration::from_millis(1900));
        let p = h.problem(t0 + Duration::from_millis(2500)).unwrap();
        assert!(p.starts_with("engine shard 1 has not run for 2.5 s"), "{p}");
        h.beat(1).beat(t0 + Duration::from_millis(2500));
        assert_eq!(h.problem(t0 + Duration::from_millis(2500)), None);
        h.beat(1).stop();
        assert_eq!(
            h.problem(t0 + Duration::from_millis(2500)).as_deref(),
            Some("engine shard 1 has stopped")
        );
    }
}
