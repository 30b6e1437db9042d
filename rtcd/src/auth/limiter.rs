//! Failed-authentication rate limiting: per client ID and per source IP, a fixed number of
//! failures within a window locks that key out for a while (429 with Retry-After). Successful
//! logins clear the client's count. The table is bounded.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

/// Failures per client ID within [`WINDOW`] before it is locked out.
pub const MAX_FAILURES_PER_CLIENT: u32 = 10;
/// Failures per source IP within [`WINDOW`] before it is locked out.
pub const MAX_FAILURES_PER_IP: u32 = 30;
/// The counting window, and the lockout length.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Entries kept at most; expired ones are dropped first, then the table is cleared.
const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Instant,
    failures: u32,
    locked_until: Option<Instant>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(String),
    Ip(IpAddr),
}

/// The counters.
#[derive(Debug, Default)]
pub struct FailureLimiter {
    entries: HashMap<Key, Entry>,
}

impl FailureLimiter {
    /// `Err(retry_after)` when the client ID or the IP is locked out at `now`.
    pub fn check(&mut self, client_id: &str, ip: IpAddr, now: Instant) -> Result<(), Duration> {
        let keys = [Key::Client(client_id.to_string()), Key::Ip(ip)];
        let wait = keys
            .iter()
            .filter_map(|k| self.entries.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        match wait {
            Some(w) => Err(w.max(Duration::from_secs(1))),
            None => Ok(()),
        }
    }

    /// Records one failure for both keys.
    pub fn failed(&mut self, client_id: &str, ip: IpAddr, now: Instant) {
        if self.entries.len() >= MAX_ENTRIES {
            self.entries.retain(|_, e| {
                now.duration_since(e.since) < WINDOW || e.locked_until.is_some_and(|u| u > now)
            });
            if self.entries.len() >= MAX_ENTRIES {
                self.entries.clear();
            }
        }
        let mut bump = |key: Key, max: u32| {
            let e = self.entries.entry(key).or_insert(Entry {
                since: now,
                failures: 0,
                locked_until: None,
            });
            if now.duration_since(e.since) >= WINDOW && e.locked_until.is_none_or(|u| u <= now) {
                *e = Entry {
                    since: now,
                    failures: 0,
                    locked_until: None,
                };
            }
            e.failures += 1;
            if e.failures >= max {
                e.locked_until = Some(now + WINDOW);
            }
        };
        if !client_id.is_empty() {
            bump(Key::Client(client_id.to_string()), MAX_FAILURES_PER_CLIENT);
        }
        bump(Key::Ip(ip), MAX_FAILURES_PER_IP);
    }

    /// Clears the client's failures after a success.
    pub fn succeeded(&mut self, client_id: &str) {
        self.entries.remove(&Key::Client(client_id.to_string()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_client_is_locked_after_max_failures_then_released() {
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_PER_CLIENT {
            assert!(l.check("c", IP, t0).is_ok(), "attempt {i}");
            l.failed("c", IP, t0);
        }
        let wait = l.check("c", IP, t0).unwrap_err();
        assert!(wait > Duration::from_secs(50));
        // Another client from the same address is still allowed (the IP limit is higher).
        assert!(l.check("other", IP, t0).is_ok());
        assert!(l.check("c", IP, t0 + WINDOW + Duration::from_millis(1)).is_ok());
    }

    #[test]
    fn an_address_is_locked_after_many_failures_across_clients() {
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_PER_IP {
            l.failed(&format!("c{i}"), IP, t0);
        }
        assert!(l.check("fresh", IP, t0).is_err());
        let other_ip = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        assert!(l.check("fresh", other_ip, t0).is_ok());
    }

    #[test]
    fn success_resets_the_client_count() {
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES_PER_CLIENT - 1 {
            l.failed("c", IP, t0);
        }
        l.succeeded("c");
        l.failed("c", IP, t0);
        assert!(l.check("c", IP, t0).is_ok());
    }
}
