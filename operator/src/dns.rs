//! Hostname lookups for address linting (`resources::lint`): each name resolved at most once a
//! minute, bounded in time, so a reconcile pass never waits long on DNS.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

/// An answer is reused this long.
const TTL: Duration = Duration::from_secs(60);
/// One lookup may take this long.
const TIMEOUT: Duration = Duration::from_secs(3);
/// Names remembered at most.
const MAX_NAMES: usize = 1024;

/// A lookup's outcome: the addresses, or why there are none.
pub type Lookup = Result<Vec<IpAddr>, String>;

/// The cache.
#[derive(Debug, Default)]
pub struct Resolver {
    cache: Mutex<HashMap<String, (Instant, Lookup)>>,
}

impl Resolver {
    /// `host`'s addresses (cached for a minute).
    pub async fn lookup(&self, host: &str) -> Lookup {
        if let Some((at, r)) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            && at.elapsed() < TTL
        {
            return r.clone();
        }
        let r = match tokio::time::timeout(TIMEOUT, tokio::net::lookup_host((host, 0))).await {
            Ok(Ok(addrs)) => {
                let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
                ips.sort_unstable();
                ips.dedup();
                Ok(ips)
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
        };
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= MAX_NAMES {
            cache.retain(|_, (at, _)| at.elapsed() < TTL);
            if cache.len() >= MAX_NAMES {
                cache.clear();
            }
        }
        cache.insert(host.to_string(), (Instant::now(), r.clone()));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn literals_resolve_to_themselves_and_answers_are_cached() {
        // No name that needs DNS: tests send nothing beyond loopback.
        let r = Resolver::default();
        let one: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(r.lookup("127.0.0.1").await, Ok(vec![one]));
        let cached = r.cache.lock().unwrap().get("127.0.0.1").map(|(_, l)| l.clone());
        assert_eq!(cached, Some(Ok(vec![one])));
    }
}
