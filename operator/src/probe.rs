//! The connectivity canary (`spec.probe`): which instances are probed and when, the probe itself
//! (rtcd-loadtest's: a one-person call through the instance's API with a real WebRTC peer, ICE and
//! DTLS over UDP, then over ICE-TCP, run on a worker thread of its own), the verdict against the
//! address the instance advertises, and each pod's last record for status and metrics.
//!
//! Built in rather than a Job per probe: a probe every minute on every node as Jobs would be a pod
//! created, scheduled, pulled, logged and deleted per node per minute (API and etcd churn growing
//! with the fleet, RBAC on Jobs, pods and logs, results scraped from logs), while the operator
//! already holds each instance's admin key, address and status writer; the cost is the peer
//! (str0m) linked into the operator (docs/observability.md has the measured size).

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    sync::{Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use kube::runtime::reflector::ObjectRef;
use rtcd_loadtest::canary::{self, ProbeOptions, ProbeReport};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use crate::crd::{ProbeStatus, RtcdCluster, TransportProbe};

/// The client ID the canary registers (with the cluster's admin key) and joins calls as. rtcd
/// knows it for a canary by its prefix (`rtcd::lifecycle::CANARY_CLIENT_PREFIX`): its calls are
/// not live sessions, so they never hold a drain, mark an idle instance busy (status, the
/// autoscaler's safe-to-evict) or weigh on placement.
pub const CANARY_CLIENT_ID: &str = "rtcd-canary-operator";
/// Probes running at once, over every cluster.
pub const MAX_IN_FLIGHT: usize = 16;
/// What one probe may take beyond its transports' connect timeouts (registering, the WebSocket,
/// the 2.5 s a call lasts after connecting, leaving).
const PROBE_SLACK: Duration = Duration::from_secs(15);

/// The verdict of a probe.
pub mod results {
    /// Every transport connected, with the advertised address.
    pub const REACHABLE: &str = "Reachable";
    /// A transport did not connect, or connected through another address.
    pub const UNREACHABLE: &str = "Unreachable";
    /// The call could not be joined through the API.
    pub const ERROR: &str = "Error";
}

/// The canary client's auth key on a cluster whose admin key is `admin_key`: derived, so every
/// replica and restart of the operator uses the same one without another Secret, and as secret
/// as the admin key.
pub fn canary_auth_key(admin_key: &str) -> String {
    let d = Sha256::digest(format!("{CANARY_CLIENT_ID}\n{admin_key}").as_bytes());
    d.iter().take(24).map(|b| format!("{b:02x}")).collect()
}

/// One instance to probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Its cluster, requeued when the verdict changes.
    pub cluster: ObjectRef<RtcdCluster>,
    /// The node.
    pub node: String,
    /// The pod's UID: records are per pod.
    pub pod_uid: String,
    /// rtcd's API (the pod's IP: hostNetwork).
    pub api: SocketAddr,
    /// The advertised host (`ice_host_override`'s external side).
    pub advertised: String,
    /// The cluster's admin key, to register the canary client.
    pub admin_key: String,
    /// Between two probes.
    pub interval: Duration,
    /// Per transport.
    pub timeout: Duration,
    /// Probes in a row not `Reachable` before the node is failing.
    pub failure_threshold: u32,
}

/// A probe's outcome: the report, or why no call could be joined.
pub type Outcome = Result<ProbeReport, String>;

/// A judged probe.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    /// One of [`results`].
    pub result: &'static str,
    /// What went wrong, naming the transport and the address.
    pub message: Option<String>,
    /// Each transport.
    pub transports: Vec<TransportProbe>,
}

/// The IP of a candidate as the probe reports it (`udp 203.0.113.7:8443`).
fn candidate_ip(candidate: &str) -> Option<IpAddr> {
    let addr = candidate.split_whitespace().last()?;
    addr.parse::<SocketAddr>().ok().map(|a| a.ip())
}

/// Judges `outcome` for an instance advertising `advertised`, whose addresses are
/// `advertised_ips` when known (a hostname that did not resolve: `None`, nothing is said about
/// which address won; the address lint reports the name).
pub fn judge(outcome: &Outcome, advertised: &str, advertised_ips: Option<&[IpAddr]>) -> Judged {
    let report = match outcome {
        Ok(r) => r,
        Err(e) => {
            return Judged {
                result: results::ERROR,
                message: Some(format!("the canary could not join a call: {e}")),
                transports: Vec::new(),
            };
        }
    };
    let mut problems = Vec::new();
    let transports = report
        .attempts
        .iter()
        .map(|a| {
            let elsewhere = a.candidate.as_deref().and_then(|c| {
                let ip = candidate_ip(c)?;
                let ips = advertised_ips?;
                (!ips.contains(&ip)).then(|| c.to_string())
            });
            let reachable = a.reachable && elsewhere.is_none();
            if let Some(c) = elsewhere {
                problems.push(format!(
                    "{} connected through {c}, not the advertised {advertised}",
                    a.transport
                ));
            } else if !a.reachable {
                problems.push(format!(
                    "{} to {advertised} unreachable: {}",
                    a.transport,
                    a.error.as_deref().unwrap_or("ICE/DTLS did not complete")
                ));
            }
            TransportProbe {
                transport: a.transport.clone(),
                reachable,
                rtt_ms: a.rtt_ms.map(|v| (v * 10.0).round() / 10.0),
                connect_ms: a.connect_ms.map(f64::round),
                candidate: a.candidate.clone(),
            }
        })
        .collect::<Vec<_>>();
    if transports.is_empty() {
        problems.push("no transport was tried".into());
    }
    Judged {
        result: if problems.is_empty() {
            results::REACHABLE
        } else {
            results::UNREACHABLE
        },
        message: (!problems.is_empty()).then(|| problems.join("; ")),
        transports,
    }
}

/// A pod's last probe.
#[derive(Debug, Clone)]
struct Record {
    at: Instant,
    time: String,
    judged: Judged,
    failures: u32,
}

#[derive(Debug, Default)]
struct State {
    /// Per cluster (`namespace/name`).
    targets: HashMap<String, Vec<Target>>,
    /// Per pod UID.
    records: HashMap<String, Record>,
    /// Pod UIDs being probed.
    in_flight: HashSet<String>,
}

/// A job for the worker thread.
struct Job {
    options: ProbeOptions,
    bound: Duration,
    reply: oneshot::Sender<Outcome>,
}

/// The canary's targets, records and worker.
#[derive(Default)]
pub struct Prober {
    state: Mutex<State>,
    worker: OnceLock<Option<mpsc::UnboundedSender<Job>>>,
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").finish_non_exhaustive()
    }
}

impl Prober {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Replaces the targets of `cluster` (`namespace/name`); returns the nodes no longer probed
    /// (their metrics go). Records of pods no longer probed by any cluster are dropped.
    pub fn set_targets(&self, cluster: &str, targets: Vec<Target>) -> Vec<String> {
        let mut s = self.state();
        let before: HashSet<String> = s
            .targets
            .get(cluster)
            .into_iter()
            .flatten()
            .map(|t| t.node.clone())
            .collect();
        let now: HashSet<&String> = targets.iter().map(|t| &t.node).collect();
        let mut gone: Vec<String> = before.into_iter().filter(|n| !now.contains(n)).collect();
        gone.sort();
        if targets.is_empty() {
            s.targets.remove(cluster);
        } else {
            s.targets.insert(cluster.to_string(), targets);
        }
        let live: HashSet<String> = s.targets.values().flatten().map(|t| t.pod_uid.clone()).collect();
        s.records.retain(|uid, _| live.contains(uid));
        gone
    }

    /// The targets whose last probe is at least their interval old (or that were never
    /// probed), at most `room` of them, marked in flight.
    pub fn take_due(&self, now: Instant, room: usize) -> Vec<Target> {
        let mut s = self.state();
        let mut due: Vec<(Option<Instant>, Target)> = s
            .targets
            .values()
            .flatten()
            .filter(|t| !s.in_flight.contains(&t.pod_uid))
            .filter_map(|t| {
                let last = s.records.get(&t.pod_uid).map(|r| r.at);
                last.is_none_or(|at| now.duration_since(at) >= t.interval)
                    .then(|| (last, t.clone()))
            })
            .collect();
        // Never probed first, then the longest waiting.
        due.sort_by_key(|(last, t)| (*last, t.pod_uid.clone()));
        due.truncate(room);
        for (_, t) in &due {
            s.in_flight.insert(t.pod_uid.clone());
        }
        due.into_iter().map(|(_, t)| t).collect()
    }

    /// Probes running now.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight.len()
    }

    /// Records `judged` for `target`, ended at `time` (RFC 3339); returns whether what status
    /// says of it changed (result, message, or the count of failures in a row), and that count;
    /// `None` when the target left while it was probed (nothing is recorded).
    pub fn record(&self, target: &Target, judged: Judged, time: String) -> Option<(bool, u32)> {
        let mut s = self.state();
        s.in_flight.remove(&target.pod_uid);
        if !s.targets.values().flatten().any(|t| t.pod_uid == target.pod_uid) {
            return None;
        }
        let prev = s.records.get(&target.pod_uid);
        let failures = if judged.result == results::REACHABLE {
            0
        } else {
            prev.map_or(0, |r| r.failures).saturating_add(1)
        };
        let changed = prev.is_none_or(|r| {
            r.judged.result != judged.result || r.judged.message != judged.message || r.failures != failures
        });
        s.records.insert(
            target.pod_uid.clone(),
            Record {
                at: Instant::now(),
                time,
                judged,
                failures,
            },
        );
        Some((changed, failures))
    }

    /// What status says of pod `uid`'s last probe.
    pub fn status(&self, uid: &str) -> Option<ProbeStatus> {
        let s = self.state();
        let r = s.records.get(uid)?;
        Some(ProbeStatus {
            result: r.judged.result.into(),
            consecutive_failures: r.failures,
            last_probe_time: r.time.clone(),
            message: r.judged.message.clone(),
            transports: r.judged.transports.clone(),
        })
    }

    /// Runs one probe of `target` on the worker thread.
    pub async fn probe(&self, target: &Target) -> Outcome {
        let Some(worker) = self.worker.get_or_init(start_worker) else {
            return Err("the canary's worker thread could not start".into());
        };
        let timeout = target.timeout.as_secs_f64().max(1.0);
        let admin_key = target.admin_key.clone();
        let options = ProbeOptions {
            url: format!("http://{}", target.api),
            client_id: CANARY_CLIENT_ID.into(),
            auth_key: canary_auth_key(&admin_key),
            admin_key: Some(admin_key),
            transport: "both".into(),
            timeout,
            bind: IpAddr::from([0, 0, 0, 0]),
        };
        let bound = (target.timeout + PROBE_SLACK) * 2;
        let (reply, answer) = oneshot::channel();
        worker
            .send(Job {
                options,
                bound,
                reply,
            })
            .map_err(|_| "the canary's worker thread stopped".to_string())?;
        answer
            .await
            .map_err(|_| "the canary's worker thread dropped the probe".to_string())?
    }
}

/// The worker: a thread with a current-thread runtime and a `LocalSet` (the probe's peer is not
/// `Send`), each job a local task bounded in time.
fn start_worker() -> Option<mpsc::UnboundedSender<Job>> {
    let (tx, mut rx) = mpsc::unbounded_channel::<Job>();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| tracing::error!(error = %e, "canary runtime"))
        .ok()?;
    std::thread::Builder::new()
        .name("canary".into())
        .spawn(move || {
            let local = tokio::task::LocalSet::new();
            local.block_on(&rt, async move {
                while let Some(job) = rx.recv().await {
                    tokio::task::spawn_local(async move {
                        let outcome = match tokio::time::timeout(job.bound, canary::probe(&job.options)).await
                        {
                            Ok(Ok(r)) => Ok(r),
                            Ok(Err(e)) => Err(format!("{e:#}")),
                            Err(_) => Err(format!("no answer within {} s", job.bound.as_secs())),
                        };
                        let _ = job.reply.send(outcome);
                    });
                }
            });
        })
        .map_err(|e| tracing::error!(error = %e, "canary thread"))
        .ok()?;
    Some(tx)
}

#[cfg(test)]
mod tests {
    use rtcd_loadtest::canary::Attempt;

    use super::*;

    fn attempt(t: &str, ok: bool, cand: Option<&str>) -> Attempt {
        Attempt {
            transport: t.into(),
            reachable: ok,
            connect_ms: ok.then_some(120.4),
            rtt_ms: ok.then_some(0.44),
            candidate: cand.map(Into::into),
            error: (!ok).then(|| "ICE/DTLS did not complete within 3 s".into()),
        }
    }

    fn report(attempts: Vec<Attempt>) -> Outcome {
        Ok(ProbeReport {
            url: "http://198.18.1.81:8045".into(),
            attempts,
        })
    }

    fn target(uid: &str, node: &str) -> Target {
        Target {
            cluster: ObjectRef::new("c").within("ns"),
            node: node.into(),
            pod_uid: uid.into(),
            api: "198.18.1.81:8045".parse().unwrap(),
            advertised: "198.18.1.81".into(),
            admin_key: "k".into(),
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(3),
            failure_threshold: 2,
        }
    }

    #[test]
    fn the_verdict_names_the_transport_and_the_address() {
        let ips: Vec<IpAddr> = vec!["198.18.1.81".parse().unwrap()];
        let ok = judge(
            &report(vec![
                attempt("udp", true, Some("udp 198.18.1.81:8443")),
                attempt("tcp", true, Some("tcp 198.18.1.81:8443")),
            ]),
            "198.18.1.81",
            Some(&ips),
        );
        assert_eq!(ok.result, results::REACHABLE);
        assert_eq!(ok.message, None);
        assert_eq!(ok.transports[0].rtt_ms, Some(0.4));
        assert_eq!(ok.transports[0].connect_ms, Some(120.0));

        let udp_blocked = judge(
            &report(vec![
                attempt("udp", false, None),
                attempt("tcp", true, Some("tcp 198.18.1.81:8443")),
            ]),
            "198.18.1.81",
            Some(&ips),
        );
        assert_eq!(udp_blocked.result, results::UNREACHABLE);
        assert_eq!(
            udp_blocked.message.as_deref(),
            Some("udp to 198.18.1.81 unreachable: ICE/DTLS did not complete within 3 s")
        );
        assert!(!udp_blocked.transports[0].reachable && udp_blocked.transports[1].reachable);

        // Connected, but not through what the instance advertises: clients elsewhere would not.
        let elsewhere = judge(
            &report(vec![attempt("udp", true, Some("udp 10.0.0.5:8443"))]),
            "198.18.1.81",
            Some(&ips),
        );
        assert_eq!(elsewhere.result, results::UNREACHABLE);
        assert_eq!(
            elsewhere.message.as_deref(),
            Some("udp connected through udp 10.0.0.5:8443, not the advertised 198.18.1.81")
        );
        // An unresolved hostname says nothing about which address won.
        assert_eq!(
            judge(
                &report(vec![attempt("udp", true, Some("udp 10.0.0.5:8443"))]),
                "rtcd.example.invalid",
                None
            )
            .result,
            results::REACHABLE
        );
        let err = judge(
            &Err("POST /register answered 401".into()),
            "198.18.1.81",
            Some(&ips),
        );
        assert_eq!(err.result, results::ERROR);
        assert_eq!(
            err.message.as_deref(),
            Some("the canary could not join a call: POST /register answered 401")
        );
        assert_eq!(judge(&report(vec![]), "x", None).result, results::UNREACHABLE);
    }

    #[test]
    fn due_targets_are_taken_once_and_failures_count_in_a_row() {
        let p = Prober::default();
        assert!(
            p.set_targets("ns/c", vec![target("u1", "a"), target("u2", "b")])
                .is_empty()
        );
        let now = Instant::now();
        let due = p.take_due(now, 1);
        assert_eq!(due.len(), 1, "bounded by the room given");
        assert_eq!(
            p.take_due(now, 10).len(),
            1,
            "the one in flight is not taken again"
        );
        assert_eq!(p.in_flight(), 2);
        let bad = judge(&Err("x".into()), "a", None);
        let t1 = target("u1", "a");
        assert_eq!(p.record(&t1, bad.clone(), "t1".into()), Some((true, 1)));
        assert!(
            p.take_due(Instant::now(), 10).is_empty(),
            "probed less than an interval ago"
        );
        assert_eq!(
            p.record(&t1, bad.clone(), "t2".into()),
            Some((true, 2)),
            "a new count is a change"
        );
        let good = Judged {
            result: results::REACHABLE,
            message: None,
            transports: vec![],
        };
        assert_eq!(p.record(&t1, good.clone(), "t3".into()), Some((true, 0)));
        assert_eq!(
            p.record(&t1, good, "t4".into()),
            Some((false, 0)),
            "same verdict, no change"
        );
        let st = p.status("u1").expect("status");
        assert_eq!((st.result.as_str(), st.consecutive_failures), ("Reachable", 0));
        assert_eq!(st.last_probe_time, "t4");
        // After an interval, due again.
        assert_eq!(p.take_due(Instant::now() + Duration::from_secs(61), 10).len(), 1);
        // A node that leaves is reported, and its pod's record goes.
        assert_eq!(
            p.set_targets("ns/c", vec![target("u2", "b")]),
            vec!["a".to_string()]
        );
        assert!(p.status("u1").is_none());
        // A probe that ends after its target left records nothing.
        assert_eq!(p.record(&t1, bad, "t5".into()), None);
        assert!(p.status("u1").is_none());
        assert_eq!(p.set_targets("ns/c", vec![]), vec!["b".to_string()]);
    }

    #[test]
    fn the_canary_key_is_stable_long_enough_and_secret_bound() {
        let k = canary_auth_key("admin-key");
        assert_eq!(k, canary_auth_key("admin-key"));
        assert_eq!(k.len(), 48);
        assert_ne!(k, canary_auth_key("other-admin-key"));
        assert!(
            rtcd_loadtest::canary::is_canary_client(CANARY_CLIENT_ID),
            "rtcd must take the operator's client for a canary"
        );
    }
}
