//! Which shard each call and session lives on: a call's first join picks the shard with the
//! fewest sessions, later joins follow the call, and a session's commands follow the session.
//! Touched on joins, leaves and `rtc` messages only, never per packet.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use prometheus_client::metrics::gauge::Gauge;

use crate::{
    call::{CallId, GroupId, SessionConfig, SessionId},
    metrics::Metrics,
};

#[derive(Debug, Default)]
struct Inner {
    /// Call → (shard, sessions placed).
    calls: HashMap<(GroupId, CallId), (usize, usize)>,
    /// Session → (shard, its call).
    sessions: HashMap<SessionId, (usize, (GroupId, CallId))>,
    /// Sessions per shard.
    load: Vec<usize>,
}

/// The placement table.
#[derive(Debug)]
pub(super) struct Placement {
    inner: Mutex<Inner>,
    /// `rtcd_engine_shard_sessions{shard}`, by shard.
    gauges: Vec<Gauge>,
}

impl Placement {
    pub(super) fn new(shards: usize, metrics: Arc<Metrics>) -> Self {
        let gauges = (0..shards)
            .map(|i| {
                metrics
                    .engine_shard_sessions
                    .get_or_create(&vec![("shard", i.to_string())])
                    .clone()
            })
            .collect();
        Self {
            inner: Mutex::new(Inner {
                load: vec![0; shards],
                ..Inner::default()
            }),
            gauges,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The shard for a join, counted there. A session already placed keeps its shard (which
    /// then refuses the duplicate).
    pub(super) fn join(&self, cfg: &SessionConfig) -> usize {
        let mut g = self.lock();
        if let Some((shard, _)) = g.sessions.get(&cfg.session_id) {
            return *shard;
        }
        let key = (cfg.group_id.clone(), cfg.call_id.clone());
        let shard = match g.calls.get_mut(&key) {
            Some((shard, n)) => {
                *n += 1;
                *shard
            }
            None => {
                let shard = least_loaded(&g.load);
                g.calls.insert(key.clone(), (shard, 1));
                shard
            }
        };
        if let Some(l) = g.load.get_mut(shard) {
            *l += 1;
        }
        g.sessions.insert(cfg.session_id.clone(), (shard, key));
        if let Some(gauge) = self.gauges.get(shard) {
            gauge.inc();
        }
        shard
    }

    /// Forgets a session that ended (or never started).
    pub(super) fn release(&self, sid: &SessionId) {
        let mut g = self.lock();
        let Some((shard, key)) = g.sessions.remove(sid) else {
            return;
        };
        if let Some(l) = g.load.get_mut(shard) {
            *l = l.saturating_sub(1);
        }
        if let Some((_, n)) = g.calls.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                g.calls.remove(&key);
            }
        }
        if let Some(gauge) = self.gauges.get(shard) {
            gauge.dec();
        }
    }

    /// Entries: (placed calls, placed sessions).
    pub(super) fn sizes(&self) -> (usize, usize) {
        let g = self.lock();
        (g.calls.len(), g.sessions.len())
    }

    /// The shard a session lives on.
    pub(super) fn session(&self, sid: &SessionId) -> Option<usize> {
        self.lock().sessions.get(sid).map(|(s, _)| *s)
    }

    /// Whether the group has any call with a session (rtcd forgets a group with its last call).
    pub(super) fn has_group(&self, group: &GroupId) -> bool {
        self.lock().calls.keys().any(|(g, _)| g == group)
    }

    /// The shard a call lives on.
    pub(super) fn call(&self, group: &GroupId, call: &CallId) -> Option<usize> {
        self.lock()
            .calls
            .get(&(group.clone(), call.clone()))
            .map(|(s, _)| *s)
    }
}

/// The shard with the fewest sessions (the lowest index on a tie).
fn least_loaded(load: &[usize]) -> usize {
    load.iter()
        .enumerate()
        .min_by_key(|(i, l)| (**l, *i))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(call: &str, session: &str) -> SessionConfig {
        SessionConfig {
            group_id: GroupId::from("g"),
            call_id: CallId::from(call),
            user_id: "u".into(),
            session_id: SessionId::from(session),
            channel_id: String::new(),
            av1_support: false,
            dc_signaling: false,
        }
    }

    #[test]
    fn calls_spread_over_the_least_loaded_shard_and_joins_follow_the_call() {
        let p = Placement::new(2, Arc::new(Metrics::new()));
        let a1 = p.join(&cfg("a", "a1"));
        let b1 = p.join(&cfg("b", "b1"));
        assert_ne!(a1, b1, "a new call goes to the emptier shard");
        assert_eq!(p.join(&cfg("a", "a2")), a1, "later joins follow the call");
        assert_eq!(p.join(&cfg("a", "a3")), a1);
        // a's shard has 3 sessions, b's 1: the next new call goes to b's.
        assert_eq!(p.join(&cfg("c", "c1")), b1);
        assert_eq!(p.session(&SessionId::from("a2")), Some(a1));
        assert_eq!(p.call(&GroupId::from("g"), &CallId::from("c")), Some(b1));
        // A duplicate join keeps its shard and is not counted twice.
        assert_eq!(p.join(&cfg("a", "a1")), a1);
        for s in ["a1", "a2", "a3"] {
            p.release(&SessionId::from(s));
        }
        assert_eq!(
            p.call(&GroupId::from("g"), &CallId::from("a")),
            None,
            "an empty call is forgotten"
        );
        assert_eq!(p.session(&SessionId::from("a1")), None);
        // Now a's old shard is empty: the next call goes there.
        assert_eq!(p.join(&cfg("d", "d1")), a1);
        p.release(&SessionId::from("unknown"));
    }

    #[test]
    fn one_shard_takes_everything() {
        let p = Placement::new(1, Arc::new(Metrics::new()));
        assert_eq!(p.join(&cfg("a", "1")), 0);
        assert_eq!(p.join(&cfg("b", "2")), 0);
    }
}
