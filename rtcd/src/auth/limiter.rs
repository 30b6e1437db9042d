//! Failed-authentication rate limiting: per client ID and per source address (an IPv6 /64
//! counts as one address), a fixed number of attempts within a window locks that key out for
//! a while (429 with Retry-After). An attempt is counted before its password is hashed, so
//! concurrent guesses cannot all pass the check; a success takes its attempt back and clears
//! the client's count. Entries age out after their window; when the table is full, the
//! entries that matter least (fewest attempts, never a lockout) make room, so filling it can
//! never erase a lockout.

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::config::ip_key;

/// Failures per client ID within [`WINDOW`] before it is locked out.
pub const MAX_FAILURES_PER_CLIENT: u32 = 10;
/// Failures per source address within [`WINDOW`] before it is locked out.
pub const MAX_FAILURES_PER_IP: u32 = 30;
/// The counting window, and the lockout length.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Entries kept at most.
pub const MAX_ENTRIES: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    since: Instant,
    attempts: u32,
    locked_until: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        now.duration_since(self.since) < WINDOW || self.locked(now)
    }
    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|u| u > now)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Client(String),
    Ip(IpAddr),
}

/// The counters.
#[derive(Debug)]
pub struct FailureLimiter {
    entries: HashMap<Key, Entry>,
    max_entries: usize,
    /// When aged entries were last dropped.
    swept: Option<Instant>,
}

impl Default for FailureLimiter {
    fn default() -> Self {
        Self::with_capacity(MAX_ENTRIES)
    }
}

/// A counted attempt: pass it back to [`FailureLimiter::succeeded`] when the password was
/// right.
#[derive(Debug, Clone)]
pub struct Attempt {
    client: Option<String>,
    ip: IpAddr,
}

impl FailureLimiter {
    /// A limiter that keeps at most `max_entries` keys.
    pub fn with_capacity(max_entries: usize) -> Self {
        Self {
            entries: HashMap::new(),
            max_entries: max_entries.max(2),
            swept: None,
        }
    }

    /// Counts an attempt by `client_id` from `ip` at `now`, or `Err(retry_after)` when either
    /// is locked out (then nothing is counted).
    pub fn attempt(&mut self, client_id: &str, ip: IpAddr, now: Instant) -> Result<Attempt, Duration> {
        let ip = ip_key(ip);
        let client = (!client_id.is_empty()).then(|| Key::Client(client_id.to_string()));
        let wait = client
            .iter()
            .chain([Key::Ip(ip)].iter())
            .filter_map(|k| self.entries.get(k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max();
        if let Some(w) = wait {
            return Err(w.max(Duration::from_secs(1)));
        }
        if self.swept.is_none_or(|t| now.duration_since(t) >= WINDOW) {
            self.expire(now);
        }
        self.make_room(now, 2);
        if let Some(k) = client {
            self.bump(k, MAX_FAILURES_PER_CLIENT, now);
        }
        self.bump(Key::Ip(ip), MAX_FAILURES_PER_IP, now);
        Ok(Attempt {
            client: (!client_id.is_empty()).then(|| client_id.to_string()),
            ip,
        })
    }

    fn bump(&mut self, key: Key, max: u32, now: Instant) {
        let e = self.entries.entry(key).or_insert(Entry {
            since: now,
            attempts: 0,
            locked_until: None,
        });
        if !e.live(now) {
            *e = Entry {
                since: now,
                attempts: 0,
                locked_until: None,
            };
        }
        e.attempts += 1;
        if e.attempts >= max {
            e.locked_until = Some(now + WINDOW);
        }
    }

    /// Makes room for `need` new keys: drops aged entries, then the unlocked ones with the
    /// fewest attempts. Lockouts are never dropped before they end.
    fn make_room(&mut self, now: Instant, need: usize) {
        if self.entries.len() + need <= self.max_entries {
            return;
        }
        self.entries.retain(|_, e| e.live(now));
        let excess = (self.entries.len() + need).saturating_sub(self.max_entries);
        if excess == 0 {
            return;
        }
        // Free a tenth at once, so a flood does not pay this scan on every attempt.
        let target = excess.max(self.max_entries / 10);
        let mut unlocked: Vec<(u32, Key)> = self
            .entries
            .iter()
            .filter(|(_, e)| !e.locked(now))
            .map(|(k, e)| (e.attempts, k.clone()))
            .collect();
        unlocked.sort_by_key(|(attempts, _)| *attempts);
        for (_, k) in unlocked.into_iter().take(target) {
            self.entries.remove(&k);
        }
    }

    /// The attempt was a success: it no longer counts against the address, and the client's
    /// count (and any lockout it was heading for) is cleared.
    pub fn succeeded(&mut self, attempt: &Attempt) {
        if let Some(c) = &attempt.client {
            self.entries.remove(&Key::Client(c.clone()));
        }
        let key = Key::Ip(attempt.ip);
        if let Some(e) = self.entries.get_mut(&key) {
            e.attempts = e.attempts.saturating_sub(1);
            if e.attempts < MAX_FAILURES_PER_IP {
                // A lockout this very attempt set was not earned.
                e.locked_until = None;
            }
            if e.attempts == 0 {
                self.entries.remove(&key);
            }
        }
    }

    /// Keys tracked (a table size, for leak checks).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops aged entries (the table shrinks back to zero once attackers stop).
    pub fn expire(&mut self, now: Instant) {
        self.swept = Some(now);
        self.entries.retain(|_, e| e.live(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_client_is_locked_after_max_attempts_then_released() {
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_PER_CLIENT {
            assert!(l.attempt("c", IP, t0).is_ok(), "attempt {i}");
        }
        let wait = l.attempt("c", IP, t0).unwrap_err();
        assert!(wait > Duration::from_secs(50));
        // Another client from the same address is still allowed (the IP limit is higher).
        assert!(l.attempt("other", IP, t0).is_ok());
        assert!(l.attempt("c", IP, t0 + WINDOW + Duration::from_millis(1)).is_ok());
    }

    #[test]
    fn concurrent_attempts_are_counted_before_any_completes() {
        // Twenty guesses start together (none has finished hashing): only the first ten pass.
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        let passed = (0..20).filter(|_| l.attempt("c", IP, t0).is_ok()).count();
        assert_eq!(passed, MAX_FAILURES_PER_CLIENT as usize);
    }

    #[test]
    fn an_address_is_locked_after_many_attempts_across_clients() {
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_PER_IP {
            let _ = l.attempt(&format!("c{i}"), IP, t0);
        }
        assert!(l.attempt("fresh", IP, t0).is_err());
        let other_ip = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
        assert!(l.attempt("fresh", other_ip, t0).is_ok());
    }

    #[test]
    fn an_ipv6_64_is_one_address() {
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_FAILURES_PER_IP {
            let ip: IpAddr = format!("2001:db8:1:2::{:x}", i + 1).parse().unwrap();
            let _ = l.attempt(&format!("c{i}"), ip, t0);
        }
        let same_64: IpAddr = "2001:db8:1:2:ffff::1".parse().unwrap();
        assert!(l.attempt("fresh", same_64, t0).is_err());
    }

    #[test]
    fn success_takes_the_attempt_back_and_resets_the_client() {
        let mut l = FailureLimiter::default();
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES_PER_CLIENT - 1 {
            let _ = l.attempt("c", IP, t0);
        }
        let ok = l.attempt("c", IP, t0).unwrap();
        l.succeeded(&ok);
        assert!(l.attempt("c", IP, t0).is_ok());
        // Many successful logins from one address never lock it, and leave nothing behind.
        let mut fresh = FailureLimiter::default();
        for _ in 0..3 * MAX_FAILURES_PER_IP {
            let a = fresh.attempt("good", IP, t0).unwrap();
            fresh.succeeded(&a);
        }
        assert!(fresh.is_empty());
    }

    #[test]
    fn a_full_table_keeps_its_lockouts() {
        let mut l = FailureLimiter::with_capacity(100);
        let t0 = Instant::now();
        for _ in 0..MAX_FAILURES_PER_CLIENT {
            let _ = l.attempt("victim", IP, t0);
        }
        assert!(l.attempt("victim", IP, t0).is_err());
        // An attacker with many addresses (one attempt each) fills the table many times over.
        for i in 0..10_000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.attempt(&format!("x{i}"), ip, t0);
            assert!(l.len() <= 100);
        }
        assert!(l.attempt("victim", IP, t0).is_err(), "the lockout survived");
        // Everything ages out once the window and the lockout are over.
        l.expire(t0 + 2 * WINDOW + Duration::from_secs(1));
        assert!(l.is_empty());
    }
}
