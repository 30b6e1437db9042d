//! FORWARDING POLICY: pure decisions on media, with time passed in — voice activity detection
//! and per-subscriber RTP sequence rebasing. No sockets, no tokio, no str0m I/O.

pub mod gop;
pub mod keyframe;
pub mod rebase;
pub mod simulcast;
pub mod vad;
pub mod vp8;
