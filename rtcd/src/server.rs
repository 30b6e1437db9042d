//! Composition root: binds the listeners, starts the API (and the optional metrics listener),
//! the load sampler, and on SIGTERM/SIGINT runs the drain. The only place that wires modules.

use std::{
    net::{SocketAddr, TcpListener, ToSocketAddrs},
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use axum::Router;
use axum_server::{Handle, tls_rustls::RustlsConfig};
use tokio::{
    signal::unix::{SignalKind, signal},
    task::JoinSet,
};

use crate::{
    api::{
        self, AppState,
        conns::ConnRegistry,
        guard::{Guard, Timeouts},
    },
    auth::{AuthService, preset, store::Store},
    call::{Faults, SfuConfig},
    config::{Config, parse_listen_address},
    engine::{self, EngineParts, Inboxes},
    lifecycle::{DrainOutcome, Lifecycle, drain},
    metrics::Metrics,
    net::{self, MediaNet, ShardSockets},
};

/// The number of engine shards `rtc.engine_shards` asks for (0: one per usable core).
pub fn engine_shards(config: &Config) -> usize {
    match usize::try_from(config.rtc.engine_shards) {
        Ok(n) if n > 0 => n.min(crate::shard::MAX_SHARDS),
        _ => crate::shard::usable_cores(),
    }
}

/// Opens the store and starts the engine's shards over `udp` and `sockets` (one entry per
/// shard; empty for no sockets), fed by `inboxes`; returns the API state. The engine runs
/// until the returned state (every handle to it) is dropped.
pub async fn build_state(
    config: &Config,
    metrics: Arc<Metrics>,
    lifecycle: Lifecycle,
    udp: MediaNet,
    sockets: Vec<ShardSockets>,
    inboxes: Inboxes,
) -> anyhow::Result<AppState> {
    let dir = std::path::PathBuf::from(&config.store.data_source);
    let store = tokio::task::spawn_blocking(move || Store::open(&dir)).await??;
    tracing::info!(path = %store.path().display(), "client store opened");
    let mut auth = AuthService::new(Arc::new(store), config).with_metrics(metrics.clone());
    let clients_dir = config.api.security.clients_dir.clone();
    if !clients_dir.is_empty() {
        let dir = std::path::PathBuf::from(&clients_dir);
        let presets = tokio::task::spawn_blocking(move || preset::read_dir(&dir)).await??;
        let ids: Vec<String> = presets.iter().map(|p| p.id.clone()).collect();
        auth = auth.with_presets(presets).await?;
        tracing::info!(dir = %clients_dir, clients = ?ids, "configured clients loaded");
    }
    let auth = Arc::new(auth);
    let conns = Arc::new(ConnRegistry::new(metrics.clone()));
    let sfu = SfuConfig {
        udp_candidates: udp.advertised(),
        tcp_candidates: udp.tcp_advertised(),
        nack_buffer_size: usize::try_from(config.rtc.nack_buffer_size)
            .ok()
            .filter(|n| *n > 0)
            .unwrap_or(256),
        candidates_per_session: config.limits.resolve().candidates_per_session,
        metrics: metrics.clone(),
        shard: 0,
        faults: Faults::from_env(),
        clock: std::time::Instant::now,
    };
    let tcp = udp.tcp_conns().clone();
    let engine = engine::start(EngineParts {
        metrics: metrics.clone(),
        sfu,
        net: udp,
        sockets,
        inboxes,
        sink: conns.clone(),
    })?;
    Ok(AppState::new(config, metrics, lifecycle, auth, engine, conns).with_tcp(tcp))
}

/// How long open HTTP connections get to finish once the drain is over.
const HTTP_GRACE: Duration = Duration::from_secs(1);

/// Runs the daemon until a signal ends it. Logging must already be initialised.
pub async fn run(config: Config) -> anyhow::Result<ExitCode> {
    let metrics = Arc::new(Metrics::new());
    let lifecycle = Lifecycle::new();
    let inboxes = Inboxes::new(engine_shards(&config));
    let (udp, sockets) = net::bind(
        &config.rtc,
        inboxes.tx.clone(),
        metrics.clone(),
        config.limits.resolve(),
    )
    .await?;
    let state = build_state(&config, metrics, lifecycle.clone(), udp, sockets, inboxes).await?;
    let _sampler = state.load.spawn_sampler();

    // Install the handlers before anything is served, so an early signal is not lost.
    let mut sigterm = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;

    let control = axum_server::Control::new();
    let mut servers = JoinSet::new();
    let limits = state.limits;
    let conn_limits = state.conn_limits.clone();
    let timeouts = Timeouts {
        read: limits.http_read,
        write: limits.http_write,
        idle: limits.http_idle,
    };
    let guard = |plain| Guard::new(conn_limits.clone(), timeouts, plain);
    let (host, port) = parse_listen_address(&config.api.http.listen_address).map_err(anyhow::Error::msg)?;
    let tls = &config.api.http.tls;
    let tls = if tls.enable {
        let cfg = crate::tls::server_config(&tls.cert_file, &tls.cert_key).map_err(anyhow::Error::msg)?;
        Some(RustlsConfig::from_config(Arc::new(cfg)))
    } else {
        None
    };
    let api_addr = serve(
        &mut servers,
        &control,
        &host,
        port,
        api::router(state.clone()),
        tls,
        &guard,
    )
    .with_context(|| format!("api.http.listen_address {:?}", config.api.http.listen_address))?;
    tracing::info!(addr = %api_addr, tls = config.api.http.tls.enable, "http api listening");

    if config.metrics.enable_prom {
        let prom_port = u16::try_from(config.metrics.prom_port).context("metrics.prom_port")?;
        let addr = serve(
            &mut servers,
            &control,
            &host,
            prom_port,
            api::metrics_router(state.clone()),
            None,
            &guard,
        )
        .with_context(|| format!("metrics.prom_port {prom_port}"))?;
        tracing::info!(addr = %addr, "prometheus metrics listening");
    }
    tracing::info!(version = %crate::version::VersionInfo::long_version(), "rtcd started");

    let first = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
        Some(ended) = servers.join_next() => {
            return Err(anyhow::anyhow!("a listener stopped unexpectedly: {:?}", ended));
        }
    };
    let timeout = config.api.drain_timeout();
    tracing::info!(
        signal = first,
        live_sessions = lifecycle.live_sessions(),
        drain_timeout = %config.api.drain_timeout,
        "shutdown requested: draining (health now reports 503, new sessions are refused)"
    );
    let second = async {
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    };
    let code = match drain(&lifecycle, timeout, second).await {
        DrainOutcome::Idle => {
            tracing::info!("no live sessions: exiting");
            ExitCode::SUCCESS
        }
        DrainOutcome::TimedOut { remaining } => {
            tracing::warn!(
                remaining,
                "drain timeout reached: exiting with sessions still live"
            );
            ExitCode::SUCCESS
        }
        DrainOutcome::Forced { remaining } => {
            tracing::warn!(remaining, "second signal: exiting immediately");
            return Ok(ExitCode::from(1));
        }
    };
    // The drain's last `close` messages are queued: let the connections write them.
    if !state.conns.wait_sent(HTTP_GRACE).await {
        tracing::info!("some plugin messages were still unsent at exit");
    }
    control.graceful_shutdown(Some(HTTP_GRACE));
    let _ = tokio::time::timeout(HTTP_GRACE * 2, async {
        while servers.join_next().await.is_some() {}
    })
    .await;
    Ok(code)
}

/// Binds `host:port` (empty host: every interface, dual-stack when the kernel allows) and
/// serves `router` there until `control` shuts it down, each connection admitted and timed by
/// `guard`. Returns the bound address.
fn serve(
    servers: &mut JoinSet<std::io::Result<()>>,
    control: &axum_server::Control,
    host: &str,
    port: u16,
    router: Router,
    tls: Option<RustlsConfig>,
    guard: &dyn Fn(bool) -> Guard,
) -> anyhow::Result<SocketAddr> {
    let listener = bind_tcp(host, port)?;
    let addr = listener.local_addr()?;
    let handle: Handle<SocketAddr> = Handle::with_control(control.clone());
    let service = router.into_make_service_with_connect_info::<SocketAddr>();
    // Refusals and timeouts are counted in metrics; a failed accept is not the server's error.
    let on_error = |remote: Option<&SocketAddr>, e: &std::io::Error| {
        tracing::debug!(remote = ?remote, error = %e, "api connection not served");
    };
    match tls {
        Some(tls) => {
            let server = axum_server::from_tcp_rustls(listener, tls)?
                .map(|tls| tls.acceptor(guard(false)))
                .handle(handle)
                .accept_error_handler(on_error);
            servers.spawn(async move { server.serve(service).await });
        }
        None => {
            let server = axum_server::from_tcp(listener)?
                .acceptor(guard(true))
                .handle(handle)
                .accept_error_handler(on_error);
            servers.spawn(async move { server.serve(service).await });
        }
    }
    Ok(addr)
}

fn bind_tcp(host: &str, port: u16) -> anyhow::Result<TcpListener> {
    let listener = if host.is_empty() {
        // `[::]` also accepts IPv4 unless the kernel has IPv6 off; then fall back to IPv4.
        TcpListener::bind((std::net::Ipv6Addr::UNSPECIFIED, port))
            .or_else(|_| TcpListener::bind((std::net::Ipv4Addr::UNSPECIFIED, port)))
            .with_context(|| format!("cannot listen on port {port}"))?
    } else {
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve {host}"))?
            .collect();
        TcpListener::bind(&addrs[..]).with_context(|| format!("cannot listen on {host}:{port}"))?
    };
    listener.set_nonblocking(true)?;
    Ok(listener)
}
