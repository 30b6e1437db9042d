//! `rtcd`: a Rust, wire-compatible replacement for Mattermost's rtcd, the WebRTC SFU behind
//! Mattermost Calls.
//!
//! # Layout and dependency rule
//!
//! `api → call → media`; `net` is reached only through `engine`, the one place that joins the
//! sans-IO call core to sockets. `media` and `call` never import tokio, axum or sockets.
//! `server` is the composition root that wires everything; `main.rs` only calls [`cli::main`].
//!
//! - [`config`]: defaults → TOML → `RTCD_*` env → validate.
//! - [`telemetry`]: console/file logging.
//! - [`metrics`]: rtcd's Prometheus families.
//! - [`api`]: the HTTP control plane (`router()` lists every route).
//! - [`lifecycle`]: drain on SIGTERM.
//! - [`system`]: `/system`'s CPU load sampler.
//! - [`server`]: binds and runs it all.
//!
//! See `docs/ARCHITECTURE.md` for the planes and one packet's path.

pub mod api;
pub mod auth;
pub mod call;
pub mod cli;
pub mod config;
pub mod engine;
pub mod fuzz;
pub mod idle;
pub mod lifecycle;
pub mod media;
pub mod metrics;
pub mod net;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod sim;
pub mod system;
pub mod telemetry;
pub mod tls;
pub mod version;
