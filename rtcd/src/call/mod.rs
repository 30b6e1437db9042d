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

/// Declares a cheap-to-clone string ID (an `Arc<str>`): IDs are cloned into per-packet
/// bookkeeping (peers of a call, dirty sessions), where a `String` would allocate.
macro_rules! id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub std::sync::Arc<str>);

        impl $name {
            /// The ID as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s.into())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id!(
    /// A session's ID (the plugin's connection ID for that user's call session).
    SessionId
);
id!(
    /// A group (Mattermost installation): the authenticated client ID.
    GroupId
);
id!(
    /// A call, unique within its group.
    CallId
);

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
            ("GroupID", self.group_id.as_str()),
            ("CallID", self.call_id.as_str()),
            ("UserID", self.user_id.as_str()),
            ("SessionID", self.session_id.as_str()),
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
    /// A session ended (left, timed out, failed or panicked): the engine forgets where it lived,
    /// then drops `guard`, which ends the session for the drain — after the outputs before this
    /// one (its `close` above all) were handed on, so a drain never exits ahead of them.
    SessionClosed {
        /// The session.
        session_id: SessionId,
        /// The session's drain guard (none for sessions made without one, as in tests).
        guard: Option<crate::lifecycle::SessionGuard>,
    },
}
