//! SESSIONS AND CALLS (sans-IO): the rtcd hierarchy group (client ID) → call → session, each
//! session one str0m [`str0m::Rtc`] peer; signaling (offer/answer, trickle ICE, the
//! DataChannel protocol and its signaling lock), server-initiated renegotiation when
//! publishers come and go, mute/unmute, voice activity, and RTP forwarding within a call.
//!
//! # Driving contract
//!
//! [`Sfu`] never reads a clock, spawns or touches a socket. The engine feeds it inputs —
//! [`Sfu::handle_receive`], [`Sfu::handle_join`], [`Sfu::handle_rtc`], [`Sfu::handle_leave`],
//! [`Sfu::handle_timeout`] — each with `now`, then drains [`Sfu::poll_output`] until it returns
//! `None`, and sleeps until [`Sfu::next_deadline`]. Mutate, then drain.

mod session;
mod sfu;

use std::{fmt, net::SocketAddr};

pub use sfu::{Faults, Sfu, SfuConfig};

use crate::protocol::ws::ClientMessage;

/// A session's ID (the plugin's connection ID for that user's call session).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub String);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A group (Mattermost installation): the authenticated client ID.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupId(pub String);

/// A call, unique within its group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CallId(pub String);

/// What a `join` establishes (rtcd's `SessionConfig`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// The client that joined it.
    pub group_id: GroupId,
    /// The call.
    pub call_id: CallId,
    /// The user.
    pub user_id: String,
    /// The session.
    pub session_id: SessionId,
    /// `Props.channelID`.
    pub channel_id: String,
    /// `Props.av1Support`.
    pub av1_support: bool,
    /// `Props.dcSignaling`.
    pub dc_signaling: bool,
}

impl SessionConfig {
    /// rtcd's `SessionConfig.IsValid`.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("GroupID", &self.group_id.0),
            ("CallID", &self.call_id.0),
            ("UserID", &self.user_id),
            ("SessionID", &self.session_id.0),
        ] {
            if v.is_empty() {
                return Err(format!("invalid {name} value: should not be empty"));
            }
        }
        Ok(())
    }
}

/// Transport of a datagram (ICE-TCP arrives framed by the network layer).
pub use str0m::net::Protocol;

/// What the engine must do.
#[derive(Debug)]
pub enum SfuOutput {
    /// Send a datagram. `source` is the advertised local address it must leave from.
    Transmit {
        /// UDP or TCP.
        proto: Protocol,
        /// Local (advertised) address.
        source: SocketAddr,
        /// Remote address.
        destination: SocketAddr,
        /// The bytes.
        data: Vec<u8>,
    },
    /// Send a WebSocket message about `session_id` to the plugin.
    Signal {
        /// The session's group (client ID).
        group_id: GroupId,
        /// The session.
        session_id: SessionId,
        /// The message.
        msg: ClientMessage,
    },
    /// A session ended (left, timed out, failed or panicked): the engine forgets where it lived.
    SessionClosed {
        /// The session.
        session_id: SessionId,
    },
}
