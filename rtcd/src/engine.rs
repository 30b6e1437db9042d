//! The async loop that joins the sans-IO call core to the network and the control plane:
//! datagrams, commands and timeouts go into [`Sfu`]; its transmits go to the sockets and its
//! signals to the plugin connections. One task owns the core, so it needs no locks.

use std::{sync::Arc, time::Instant};

use tokio::sync::{mpsc, oneshot};

use crate::{
    call::{CallId, GroupId, Protocol, SessionConfig, SessionId, Sfu, SfuOutput},
    lifecycle::SessionGuard,
    metrics::Metrics,
    net::{Datagram, MediaNet, Transport},
    protocol::{rtc::RtcMessage, ws::ClientMessage},
};

/// rtcd's rtc message queue length.
pub const COMMAND_QUEUE: usize = 2000;
/// Datagrams waiting for the engine.
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
}

/// A cloneable handle for sending commands.
#[derive(Debug, Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
}

/// The engine's queue is full or it has stopped.
#[derive(Debug, thiserror::Error)]
#[error("failed to send rtc message, channel is full")]
pub struct EngineBusy;

impl EngineHandle {
    /// A handle and the receiving end for [`run`].
    pub fn channel() -> (Self, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        (Self { tx }, rx)
    }

    /// Queues a command without waiting (rtcd drops when its queue is full).
    pub fn send(&self, cmd: Command) -> Result<(), EngineBusy> {
        self.tx.try_send(cmd).map_err(|_| EngineBusy)
    }

    /// The sessions of a call.
    pub async fn sessions(&self, group: GroupId, call: CallId) -> Result<Vec<SessionConfig>, EngineBusy> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Sessions { group, call, reply })?;
        rx.await.map_err(|_| EngineBusy)
    }
}

/// Runs until every command sender is gone.
pub async fn run(
    metrics: Arc<Metrics>,
    mut sfu: Sfu,
    mut commands: mpsc::Receiver<Command>,
    mut datagrams: mpsc::Receiver<Datagram>,
    net: MediaNet,
    sink: Arc<dyn SignalSink>,
) {
    loop {
        let deadline = sfu.next_deadline();
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cmd = commands.recv() => {
                let Some(cmd) = cmd else { return };
                command(&mut sfu, cmd);
            }
            Some(dg) = datagrams.recv() => {
                let now = Instant::now();
                receive(&mut sfu, &net, &metrics, now, dg);
                // Take what else is already waiting before flushing outputs.
                for _ in 0..64 {
                    let Ok(dg) = datagrams.try_recv() else { break };
                    receive(&mut sfu, &net, &metrics, now, dg);
                }
            }
            () = sleep => sfu.handle_timeout(Instant::now()),
        }
        while let Some(out) = sfu.poll_output() {
            match out {
                SfuOutput::Transmit {
                    proto: Protocol::Udp,
                    source,
                    destination,
                    data,
                } => {
                    net.send(source, destination, &data);
                }
                SfuOutput::Transmit {
                    proto: Protocol::Tcp,
                    destination,
                    data,
                    ..
                } => {
                    net.tcp_conns().send(destination, &data);
                }
                SfuOutput::Transmit { .. } => {}
                SfuOutput::Signal {
                    group_id,
                    session_id,
                    msg,
                } => sink.deliver(&group_id, &session_id, msg),
            }
        }
    }
}

fn receive(sfu: &mut Sfu, net: &MediaNet, metrics: &Metrics, now: Instant, dg: Datagram) {
    let destination = net.advertised_on(dg.transport, dg.local);
    let proto = match dg.transport {
        Transport::Udp => Protocol::Udp,
        Transport::Tcp => Protocol::Tcp,
    };
    if sfu.handle_receive(now, proto, dg.remote, destination, &dg.data) {
        if proto == Protocol::Tcp {
            net.tcp_conns().authenticated(dg.remote);
        }
    } else {
        let transport = if proto == Protocol::Tcp { "tcp" } else { "udp" };
        metrics
            .net_dropped
            .get_or_create(&vec![
                ("transport", transport.into()),
                ("reason", "no_session".into()),
            ])
            .inc();
    }
}

fn command(sfu: &mut Sfu, cmd: Command) {
    let now = Instant::now();
    let result = match cmd {
        Command::Join { cfg, guard } => {
            let sid = cfg.session_id.clone();
            sfu.handle_join(now, cfg, guard)
                .map_err(|e| format!("join {sid}: {e}"))
        }
        Command::Leave { group, session } => sfu.handle_leave(now, &group, &session),
        Command::Rtc { group, msg } => sfu.handle_rtc(now, &group, msg),
        Command::Sessions { group, call, reply } => {
            let _ = reply.send(sfu.sessions(&group, &call));
            Ok(())
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, "failed to handle message");
    }
}
