//! Graceful drain: the "draining" flag that health reports, the count of live sessions, and
//! the wait on SIGTERM until those sessions end, the drain timeout passes, or a second signal.
//! An admin may also drain without shutting down (`PUT /api/v1/drain`), and cancel that.
//! Connectivity canaries' sessions (clients named `rtcd-canary…`) are not live sessions.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;

/// Client IDs starting with this are connectivity canaries (`rtcd-loadtest probe`, the
/// operator's periodic probe): their sessions are real calls, but nobody waits for them: they are
/// not live sessions (health, drain, `--wait-idle`), do not count towards `limits.max_sessions`
/// and add no admission penalty to `/system`.
pub const CANARY_CLIENT_PREFIX: &str = "rtcd-canary";

/// Whether `client_id` is a connectivity canary ([`CANARY_CLIENT_PREFIX`]).
pub fn is_canary_client(client_id: &str) -> bool {
    client_id.starts_with(CANARY_CLIENT_PREFIX)
}

/// Shared drain state. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Lifecycle {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Shutdown has started (SIGTERM): final.
    draining: AtomicBool,
    /// An admin asked for a drain: no new sessions until cancelled.
    admin_drain: AtomicBool,
    sessions: watch::Sender<usize>,
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}

impl Lifecycle {
    /// Not draining, no sessions.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                draining: AtomicBool::new(false),
                admin_drain: AtomicBool::new(false),
                sessions: watch::Sender::new(0),
            }),
        }
    }

    /// Whether new sessions are refused: shutdown has started, or an admin asked for a drain.
    pub fn is_draining(&self) -> bool {
        self.is_shutting_down() || self.inner.admin_drain.load(Ordering::SeqCst)
    }

    /// Whether shutdown has started (a drain no one can cancel).
    pub fn is_shutting_down(&self) -> bool {
        self.inner.draining.load(Ordering::SeqCst)
    }

    /// An admin's drain: `true` refuses new sessions from now on, as shutdown does, while the
    /// process keeps running; `false` admits them again. Returns false (and changes nothing)
    /// when asked to cancel during shutdown.
    pub fn set_admin_drain(&self, on: bool) -> bool {
        if !on && self.is_shutting_down() {
            return false;
        }
        // Under the watch's lock, as start_drain.
        self.inner
            .sessions
            .send_modify(|_| self.inner.admin_drain.store(on, Ordering::SeqCst));
        true
    }

    /// Starts draining: from now on [`Self::try_session`] refuses.
    pub fn start_drain(&self) {
        // Under the watch's lock, so no session can slip in between the check and the count.
        self.inner
            .sessions
            .send_modify(|_| self.inner.draining.store(true, Ordering::SeqCst));
    }

    /// Admits one more live session, unless draining. The session ends when the guard drops.
    pub fn try_session(&self) -> Option<SessionGuard> {
        self.try_session_within(None).ok()
    }

    /// Admits one more live session unless draining or, with `max`, `max` sessions are alive
    /// already: checked and counted at once, so concurrent joins cannot overshoot the cap.
    pub fn try_session_within(&self, max: Option<usize>) -> Result<SessionGuard, Refusal> {
        let mut outcome = Err(Refusal::Draining);
        self.inner.sessions.send_if_modified(|n| {
            if self.inner.draining.load(Ordering::SeqCst) || self.inner.admin_drain.load(Ordering::SeqCst) {
                return false;
            }
            if max.is_some_and(|max| *n >= max) {
                outcome = Err(Refusal::Full);
                return false;
            }
            *n += 1;
            outcome = Ok(());
            true
        });
        outcome.map(|()| SessionGuard {
            lifecycle: self.clone(),
        })
    }

    /// Sessions alive now.
    pub fn live_sessions(&self) -> usize {
        *self.inner.sessions.borrow()
    }

    /// Resolves once no session is alive.
    pub async fn idle(&self) {
        let mut rx = self.inner.sessions.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|n| *n == 0).await;
    }
}

/// Why a session was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Shutdown or an admin's drain.
    Draining,
    /// `limits.max_sessions` sessions are alive.
    Full,
}

/// One live session; dropping it ends the session for the drain's purposes.
#[derive(Debug)]
pub struct SessionGuard {
    lifecycle: Lifecycle,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        self.lifecycle
            .inner
            .sessions
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Every session ended.
    Idle,
    /// The drain timeout passed with sessions still alive.
    TimedOut {
        /// How many.
        remaining: usize,
    },
    /// Another signal arrived.
    Forced {
        /// Sessions still alive then.
        remaining: usize,
    },
}

/// Marks `lifecycle` draining and waits: for no sessions, for `timeout` (`None` = for ever),
/// or for `interrupt` (the second signal), whichever comes first.
pub async fn drain(
    lifecycle: &Lifecycle,
    timeout: Option<Duration>,
    interrupt: impl Future<Output = ()>,
) -> DrainOutcome {
    lifecycle.start_drain();
    let deadline = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        () = lifecycle.idle() => DrainOutcome::Idle,
        () = deadline => DrainOutcome::TimedOut { remaining: lifecycle.live_sessions() },
        () = interrupt => DrainOutcome::Forced { remaining: lifecycle.live_sessions() },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn no_sessions_drains_at_once() {
        let lc = Lifecycle::new();
        let out = drain(&lc, None, std::future::pending()).await;
        assert_eq!(out, DrainOutcome::Idle);
        assert!(lc.is_draining());
    }

    #[tokio::test(start_paused = true)]
    async fn waits_for_the_last_session() {
        let lc = Lifecycle::new();
        let a = lc.try_session().unwrap();
        let b = lc.try_session().unwrap();
        assert_eq!(lc.live_sessions(), 2);
        let waiter = tokio::spawn({
            let lc = lc.clone();
            async move { drain(&lc, None, std::future::pending()).await }
        });
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiter.is_finished());
        assert!(
            lc.try_session().is_none(),
            "a new session was admitted while draining"
        );
        drop(a);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        drop(b);
        assert_eq!(waiter.await.unwrap(), DrainOutcome::Idle);
    }

    #[test]
    fn an_admin_drain_refuses_sessions_until_cancelled_but_shutdown_is_final() {
        let lc = Lifecycle::new();
        let live = lc.try_session().unwrap();
        assert!(lc.set_admin_drain(true));
        assert!(lc.is_draining() && !lc.is_shutting_down());
        assert!(lc.try_session().is_none(), "admitted while an admin drain is on");
        assert_eq!(lc.live_sessions(), 1, "the live session stays");
        assert!(lc.set_admin_drain(false));
        assert!(!lc.is_draining());
        let again = lc.try_session().unwrap();
        lc.start_drain();
        assert!(!lc.set_admin_drain(false), "shutdown was cancelled");
        assert!(lc.is_draining() && lc.try_session().is_none());
        drop((live, again));
    }

    #[test]
    fn a_session_cap_refuses_at_the_cap_and_frees_a_place_when_one_ends() {
        let lc = Lifecycle::new();
        let a = lc.try_session_within(Some(2)).unwrap();
        let _b = lc.try_session_within(Some(2)).unwrap();
        assert_eq!(lc.try_session_within(Some(2)).err(), Some(Refusal::Full));
        assert_eq!(lc.live_sessions(), 2, "a refused join was counted");
        assert!(lc.try_session_within(None).is_ok(), "no cap: admitted");
        drop(a);
        assert!(lc.try_session_within(Some(3)).is_ok(), "a place was freed");
        lc.start_drain();
        assert_eq!(lc.try_session_within(Some(100)).err(), Some(Refusal::Draining));
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_ends_the_wait() {
        let lc = Lifecycle::new();
        let _s = lc.try_session().unwrap();
        let started = tokio::time::Instant::now();
        let out = drain(&lc, Some(Duration::from_secs(30)), std::future::pending()).await;
        assert_eq!(out, DrainOutcome::TimedOut { remaining: 1 });
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_forces_exit() {
        let lc = Lifecycle::new();
        let _s = lc.try_session().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let waiter = tokio::spawn({
            let lc = lc.clone();
            async move {
                drain(&lc, None, async {
                    let _ = rx.await;
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        tx.send(()).unwrap();
        assert_eq!(waiter.await.unwrap(), DrainOutcome::Forced { remaining: 1 });
    }
}
