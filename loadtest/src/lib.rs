//! rtcd-loadtest: plays the Mattermost Calls plugin and its users against any rtcd, with real
//! WebRTC peers, and measures what the SFU delivers (loss, latency, jitter, join time) and
//! what it costs (the server's CPU time and memory from /proc).

pub mod canary;
pub mod peer;
pub mod placement;
pub mod probe;
pub mod procfs;
pub mod run;
pub mod signal;
pub mod stats;
