//! Leader election through a `coordination.k8s.io` Lease: only the holder reconciles. The
//! holder tries to renew every retry period (a seventh of the lease, about 2 s of 15), each
//! attempt bounded by a timeout; when no renewal has succeeded for the renew deadline (two thirds
//! of the lease) it stops leading, before its lease can expire and a successor take over.

use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    jiff::{SignedDuration, Timestamp},
};
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};

use crate::{Error, Result};

/// One candidate for the lease `name`.
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    timing: Timing,
}

/// The election's clock, derived from the lease duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease lasts without renewal.
    pub lease: Duration,
    /// A leader that has not renewed for this long stops leading (< `lease`).
    pub renew_deadline: Duration,
    /// How often to try (to acquire or renew); also the bound of one attempt.
    pub retry: Duration,
}

impl Timing {
    /// client-go's proportions (15 s lease: 10 s deadline, about 2 s between tries).
    pub fn for_lease(lease: Duration) -> Self {
        let lease = lease.max(Duration::from_secs(3));
        Self {
            lease,
            renew_deadline: lease * 2 / 3,
            retry: (lease / 7).max(Duration::from_millis(300)),
        }
    }
}

impl Elector {
    /// A candidate called `identity` for Lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str, identity: String, lease: Duration) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.into(),
            identity,
            timing: Timing::for_lease(lease),
        }
    }

    /// One attempt, bounded by the retry period: a hung request counts as a failed one.
    async fn attempt(&self, bound: Duration) -> Result<bool> {
        tokio::time::timeout(bound, self.try_acquire())
            .await
            .unwrap_or_else(|_| {
                Err(Error::Invalid(format!(
                    "no answer from the API server within {} ms",
                    bound.as_millis()
                )))
            })
    }

    /// Who this candidate is.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Waits until this candidate holds the lease. Returns when it was last renewed (the
    /// moment the winning attempt began: the renew time it wrote).
    pub async fn acquire(&self) -> tokio::time::Instant {
        loop {
            let started = tokio::time::Instant::now();
            match self.attempt(self.timing.retry).await {
                Ok(true) => return started,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "cannot reach the leader lease"),
            }
            tokio::time::sleep_until(started + self.timing.retry).await;
        }
    }

    /// Renews every retry period until no renewal has succeeded for the renew deadline (counted
    /// from `renewed`, when the lease was last written), or another holder took the lease; then
    /// returns why. The caller must stop leading at once: the lease outlives the deadline by a
    /// third, so no successor can hold it yet.
    pub async fn keep(&self, mut renewed: tokio::time::Instant) -> Error {
        loop {
            tokio::time::sleep_until(
                (tokio::time::Instant::now() + self.timing.retry).min(renewed + self.timing.renew_deadline),
            )
            .await;
            let started = tokio::time::Instant::now();
            let left = (renewed + self.timing.renew_deadline).saturating_duration_since(started);
            if left.is_zero() {
                return Error::LostLease(format!(
                    "{}: not renewed for {} ms (renew deadline)",
                    self.name,
                    self.timing.renew_deadline.as_millis()
                ));
            }
            match self.attempt(left.min(self.timing.retry)).await {
                Ok(true) => renewed = started,
                Ok(false) => return Error::LostLease(format!("{}: taken by another holder", self.name)),
                Err(e) => tracing::warn!(error = %e, "lease renewal failed"),
            }
        }
    }

    /// Gives the lease up so a successor need not wait for it to expire (bounded: a hung API
    /// server must not hold the process).
    pub async fn release(&self) {
        let _ = tokio::time::timeout(self.timing.retry, self.release_now()).await;
    }

    async fn release_now(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            if let Err(e) = self.api.replace(&self.name, &PostParams::default(), &lease).await {
                tracing::warn!(error = %e, "cannot release the lease");
            }
        }
    }

    /// One attempt: take, renew or leave the lease.
    async fn try_acquire(&self) -> Result<bool> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.timing.lease.as_secs()).unwrap_or(15);
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(secs),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e.into()),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let mine = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let held = spec.holder_identity.as_deref().is_some_and(|h| !h.is_empty());
        let expired = spec.renew_time.as_ref().is_none_or(|t| {
            let d = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(secs)));
            t.0 + d < now
        });
        if !mine && held && !expired {
            return Ok(false);
        }
        if !mine {
            spec.holder_identity = Some(self.identity.clone());
            spec.acquire_time = Some(MicroTime(now));
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.lease_duration_seconds = Some(secs);
        spec.renew_time = Some(MicroTime(now));
        match self.api.replace(&self.name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_renew_deadline_ends_before_the_lease() {
        let t = Timing::for_lease(Duration::from_secs(15));
        assert_eq!(t.renew_deadline, Duration::from_secs(10));
        assert!(
            t.retry >= Duration::from_secs(2) && t.retry * 4 < t.renew_deadline,
            "{t:?}"
        );
        let short = Timing::for_lease(Duration::from_secs(1));
        assert!(
            short.renew_deadline < short.lease && short.retry < short.renew_deadline,
            "{short:?}"
        );
    }
}
