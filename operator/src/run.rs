//! Composition root: command line, logging, the admin server, leader election and the
//! controller, and a clean stop on SIGTERM/SIGINT.

use std::{
    net::SocketAddr,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use clap::Parser;
use tokio::sync::watch;

use crate::{admin, controller, leader::Elector, metrics::Metrics};

/// How long the controller may take to stop after SIGTERM/SIGINT.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The bound of every API request but watches (connect, send, and each wait for the answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Reconciles RtcdCluster resources into per-node rtcd pods.
#[derive(Debug, Parser)]
#[command(name = "rtcd-operator", version)]
pub struct Args {
    /// Watch only this namespace (default: all namespaces).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "ADMIN_ADDRESS", default_value = "0.0.0.0:8080")]
    pub admin_address: SocketAddr,
    /// Namespace of the leader Lease (default: the pod's namespace, else "default").
    #[arg(long, env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// Name of the leader Lease.
    #[arg(long, env = "LEASE_NAME", default_value = "rtcd-operator")]
    pub lease_name: String,
    /// Lease duration in seconds.
    #[arg(long, env = "LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,
    /// Run without leader election (a single replica only).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Images the privileged sysctl init container may run, comma-separated, each pinned by
    /// digest: an RtcdCluster naming another one is refused, so writing an RtcdCluster does not
    /// choose what runs as root on a node.
    #[arg(long, env = "SYSCTL_IMAGES", value_delimiter = ',', default_value = crate::crd::DEFAULT_SYSCTL_IMAGE)]
    pub sysctl_images: Vec<String>,
    /// Log format: json or plain.
    #[arg(long, env = "LOG_FORMAT", default_value = "json", value_parser = ["json", "plain"])]
    pub log_format: String,
}

/// Runs the operator until a signal; the exit code says how it ended.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube=warn,str0m=warn,rtcd_loadtest=error")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
    if let Some(bad) = args
        .sysctl_images
        .iter()
        .find(|i| !crate::validate::pinned_by_digest(i))
    {
        anyhow::bail!(
            "--sysctl-images / SYSCTL_IMAGES: {bad:?} is not pinned by digest (name@sha256:<64 hex digits>)"
        );
    }
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind(args.admin_address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.admin_address))?;
    let app = admin::router(admin::AdminState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "admin server stopped");
        }
    });

    // Two clients: watches stream for minutes (kube's watcher has its own idle timeout); every
    // other request (reconcile, status, Events, the lease) gets a bounded wait.
    // Both count their requests by verb (rtcd_operator_api_requests_total).
    let config = kube::Config::infer().await?;
    let watch_client = counted(config.clone(), &metrics)?;
    let mut bounded = config;
    bounded.connect_timeout = Some(REQUEST_TIMEOUT);
    bounded.read_timeout = Some(REQUEST_TIMEOUT);
    bounded.write_timeout = Some(REQUEST_TIMEOUT);
    bounded.reset_reader_on_write = true;
    let client = counted(bounded, &metrics)?;
    let version = client.apiserver_version().await?;
    tracing::info!(server = %version.git_version, "connected to the apiserver");
    ready.store(true, std::sync::atomic::Ordering::SeqCst);

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        wait_for_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    // Without the CRD every watch fails with 404: say what is missing, and wait for it.
    let gvk = kube::core::GroupVersionKind::gvk(crate::crd::GROUP, crate::crd::VERSION, "RtcdCluster");
    let mut warned = None::<std::time::Instant>;
    while kube::discovery::pinned_kind(&client, &gvk).await.is_err() {
        if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(30)) {
            tracing::error!(
                "the CRD rtcdclusters.{} is not installed: apply crds/rtcdclusters.yaml (waiting for it)",
                crate::crd::GROUP
            );
            warned = Some(std::time::Instant::now());
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {},
            () = stopped(stop_rx.clone()) => return Ok(()),
        }
    }

    let elector = (!args.no_leader_election).then(|| {
        let ns = args.lease_namespace.clone().unwrap_or_else(|| "default".into());
        let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
            let mut b = [0u8; 4];
            let _ = getrandom::fill(&mut b);
            format!(
                "rtcd-operator-{}",
                b.iter().map(|x| format!("{x:02x}")).collect::<String>()
            )
        });
        Elector::new(
            client.clone(),
            &ns,
            &args.lease_name,
            identity,
            Duration::from_secs(args.lease_seconds),
        )
    });
    let mut renewed_at = None;
    if let Some(e) = &elector {
        tracing::info!(identity = e.identity(), "waiting for the leader lease");
        let renewed = tokio::select! {
            r = e.acquire() => r,
            () = stopped(stop_rx.clone()) => return Ok(()),
        };
        renewed_at = Some(renewed);
        metrics.leader.set(1);
        tracing::info!(identity = e.identity(), "leading");
    }
    let ctl = controller::run(
        client,
        watch_client,
        metrics.clone(),
        args.sysctl_images.clone(),
        args.namespace.clone(),
        stopped(stop_rx.clone()),
    );
    // The controller stops on the signal once running reconciles finish; a bounded grace keeps
    // a stuck watch (or reconcile) from holding the process past it.
    let grace = async {
        stopped(stop_rx.clone()).await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
        tracing::warn!(
            "controller did not stop within {}s of the signal",
            SHUTDOWN_GRACE.as_secs()
        );
    };
    let outcome = match &elector {
        Some(e) => tokio::select! {
            () = ctl => Ok(()),
            () = grace => Ok(()),
            err = e.keep(renewed_at.unwrap_or_else(tokio::time::Instant::now)) => {
                // Stop leading now: leave the controller (dropped with this select) and say so
                // before anything else can block.
                metrics.leader.set(0);
                tracing::error!(error = %err, "lost the leader lease: stopping");
                Err(anyhow::anyhow!("stopping: {err}"))
            }
        },
        None => tokio::select! {
            () = ctl => Ok(()),
            () = grace => Ok(()),
        },
    };
    // Release only after a clean stop: a lost lease is not ours to release.
    if let (Some(e), Ok(())) = (&elector, &outcome) {
        e.release().await;
        metrics.leader.set(0);
    }
    tracing::info!("stopped");
    outcome
}

/// A client for `config` whose every request is counted in `metrics`.
fn counted(config: kube::Config, metrics: &Arc<Metrics>) -> anyhow::Result<kube::Client> {
    let m = metrics.clone();
    let count = tower::util::MapRequestLayer::new(move |req: axum::http::Request<kube::client::Body>| {
        m.api_request(req.method().as_str(), req.uri().query());
        req
    });
    Ok(kube::client::ClientBuilder::try_from(config)?
        .with_layer(&count)
        .build())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {},
                _ = int.recv() => {},
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
