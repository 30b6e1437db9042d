//! The media engine: N shards, one thread each, each owning a sans-IO call core ([`Sfu`]) with
//! its calls, sessions and str0m peers, its own sockets on the shared media port, and its
//! timers. A call lives on one shard ([`placement`]); datagrams find their shard by the local
//! ICE ufrag ([`crate::shard`]) with no shared state on the per-packet path. Every shard beats
//! a heartbeat that `/api/v1/health` reads ([`health`]).

mod health;
mod placement;
mod shard;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

pub use self::health::EngineHealth;
use self::placement::Placement;
use crate::{
    call::{CallId, GroupId, SessionConfig, SessionId, SfuConfig},
    lifecycle::SessionGuard,
    metrics::Metrics,
    net::{Datagram, MediaNet, ShardSockets},
    protocol::{rtc::RtcMessage, ws::ClientMessage},
};

/// rtcd's rtc message queue length (per shard).
pub const COMMAND_QUEUE: usize = 2000;
/// Datagrams waiting for a shard that did not read them itself.
pub const DATAGRAM_QUEUE: usize = 8192;

/// What the control plane asks of the engine.
#[derive(Debug)]
pub enum Command {
    /// A `join`.
    Join {
        /// The session.
        cfg: SessionConfig,
        /// Counts it for the drain.
        guard: Option<SessionGuard>,
    },
    /// A `leave`.
    Leave {
        /// The sender's group.
        group: GroupId,
        /// The session.
        session: SessionId,
    },
    /// An `rtc` message.
    Rtc {
        /// The sender's group.
        group: GroupId,
        /// The message.
        msg: RtcMessage,
    },
    /// `GET /calls/{callID}/sessions`.
    Sessions {
        /// The caller's group.
        group: GroupId,
        /// The call.
        call: CallId,
        /// Where the answer goes.
        reply: oneshot::Sender<Vec<SessionConfig>>,
    },
}

/// Where the engine's messages for the plugin go (the WebSocket connection registry).
pub trait SignalSink: Send + Sync + std::fmt::Debug {
    /// Delivers `msg` about `session` to the connection that serves it.
    fn deliver(&self, group: &GroupId, session: &SessionId, msg: ClientMessage);
    /// A join was refused and no session exists: forget what was kept for `session`.
    fn forget(&self, session: &SessionId);
}

/// Each shard's queue of datagrams read by another shard's socket or by ICE-TCP.
#[derive(Debug)]
pub struct Inboxes {
    /// Senders, by shard.
    pub tx: Arc<[mpsc::Sender<Datagram>]>,
    rx: Vec<mpsc::Receiver<Datagram>>,
}

impl Inboxes {
    /// One inbox per shard.
    pub fn new(shards: usize) -> Self {
        let (tx, rx): (Vec<_>, Vec<_>) = (0..shards.max(1)).map(|_| mpsc::channel(DATAGRAM_QUEUE)).unzip();
        Self { tx: tx.into(), rx }
    }
}

/// A cloneable handle for sending commands to the shard that owns their session or call.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    shards: Arc<[mpsc::Sender<Command>]>,
    placement: Arc<Placement>,
    health: Arc<EngineHealth>,
}

/// The engine's queue is full or it has stopped.
#[derive(Debug, thiserror::Error)]
#[error("failed to send rtc message, channel is full")]
pub struct EngineBusy;

impl EngineHandle {
    /// The placement table's entries: (calls, sessions).
    pub fn placement_sizes(&self) -> (usize, usize) {
        self.placement.sizes()
    }

    /// Queues a command without waiting (rtcd drops when its queue is full).
    pub fn send(&self, cmd: Command) -> Result<(), EngineBusy> {
        let (shard, placed) = match &cmd {
            Command::Join { cfg, .. } => (self.placement.join(cfg), Some(cfg.session_id.clone())),
            Command::Leave { session, .. } => (self.placement.session(session).unwrap_or(0), None),
            Command::Rtc { msg, .. } => (
                self.placement
                    .session(&SessionId::from(msg.session_id.clone()))
                    .unwrap_or(0),
                None,
            ),
            Command::Sessions { group, call, .. } => (self.placement.call(group, call).unwrap_or(0), None),
        };
        let sent = self
            .shards
            .get(shard)
            .ok_or(EngineBusy)
            .and_then(|tx| tx.try_send(cmd).map_err(|_| EngineBusy));
        if sent.is_err()
            && let Some(sid) = placed
        {
            self.placement.release(&sid);
        }
        sent
    }

    /// Whether the group (client ID) has a call with a session on any shard.
    pub fn has_group(&self, group: &GroupId) -> bool {
        self.placement.has_group(group)
    }

    /// `GET /calls/{callID}/sessions`: the call's sessions (empty when it has none).
    pub async fn sessions(&self, group: GroupId, call: CallId) -> Result<Vec<SessionConfig>, EngineBusy> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Sessions { group, call, reply })?;
        rx.await.map_err(|_| EngineBusy)
    }

    /// The shards' heartbeats.
    pub fn health(&self) -> &EngineHealth {
        &self.health
    }
}

/// What the engine is built from.
#[derive(Debug)]
pub struct EngineParts {
    /// Prometheus families.
    pub metrics: Arc<Metrics>,
    /// The core's settings; `shard` is set per shard.
    pub sfu: SfuConfig,
    /// Address translation and ICE-TCP.
    pub net: MediaNet,
    /// Each shard's own UDP sockets on the media port (empty: no sockets, for tests).
    pub sockets: Vec<ShardSockets>,
    /// One inbox per shard; its length is the shard count.
    pub inboxes: Inboxes,
    /// Signals for the plugin.
    pub sink: Arc<dyn SignalSink>,
}

/// Starts one thread per shard. The shards stop when every [`EngineHandle`] is gone.
pub fn start(parts: EngineParts) -> anyhow::Result<EngineHandle> {
    let EngineParts {
        metrics,
        sfu,
        net,
        mut sockets,
        inboxes,
        sink,
    } = parts;
    let n = inboxes.rx.len();
    let health = Arc::new(EngineHealth::new(n));
    let placement = Arc::new(Placement::new(n, metrics.clone()));
    let mut commands = Vec::with_capacity(n);
    sockets.resize_with(n, ShardSockets::default);
    for (index, (rx, sockets)) in inboxes.rx.into_iter().zip(sockets).enumerate() {
        let (tx, cmd_rx) = mpsc::channel(COMMAND_QUEUE);
        commands.push(tx);
        let shard = shard::Shard::new(shard::ShardParts {
            index,
            sfu: SfuConfig {
                shard: index,
                ..sfu.clone()
            },
            metrics: metrics.clone(),
            net: net.clone(),
            sockets,
            commands: cmd_rx,
            inbox: rx,
            inboxes: inboxes.tx.clone(),
            sink: sink.clone(),
            placement: placement.clone(),
            beat: health.beat(index),
        });
        std::thread::Builder::new()
            .name(format!("rtcd-shard-{index}"))
            .spawn(move || shard.run())
            .map_err(|e| anyhow::anyhow!("cannot start engine shard {index}: {e}"))?;
    }
    tracing::info!(shards = n, "media engine started");
    Ok(EngineHandle {
        shards: commands.into(),
        placement,
        health,
    })
}
