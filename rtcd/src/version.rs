//! What this build is: the `/version` document, `--version` text and `rtcd_build_info` labels.

use serde::Serialize;

/// The rtcd release whose wire protocol this build implements. `GET /version` reports it as
/// `buildVersion`, because the Calls plugin checks it against its `min_rtcd_version` (v0.17.0)
/// and the Calls webapp turns on DataChannel signaling locks only for rtcd ≥ v1.1.0.
pub const RTCD_COMPAT_VERSION: &str = "v1.2.6";

/// This crate's own version.
pub const PACKAGE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /version`, with rtcd's exact JSON keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    /// `YYYY-MM-DD HH:MM` UTC.
    pub build_date: String,
    /// See [`RTCD_COMPAT_VERSION`].
    pub build_version: String,
    /// The git commit.
    pub build_hash: String,
    /// The Rust compiler (rtcd reports Go's version here).
    pub go_version: String,
    /// Operating system, in Go's naming (`linux`).
    #[serde(rename = "goOS")]
    pub go_os: String,
    /// CPU architecture, in Go's naming (`amd64`, `arm64`).
    pub go_arch: String,
}

impl VersionInfo {
    /// This binary's build information.
    pub fn current() -> Self {
        Self {
            build_date: env!("RTCD_BUILD_DATE").to_string(),
            build_version: RTCD_COMPAT_VERSION.to_string(),
            build_hash: env!("RTCD_BUILD_HASH").to_string(),
            go_version: env!("RTCD_RUSTC_VERSION").to_string(),
            go_os: std::env::consts::OS.to_string(),
            go_arch: go_arch(std::env::consts::ARCH).to_string(),
        }
    }

    /// The one-line `--version` text.
    pub fn long_version() -> String {
        let v = Self::current();
        format!(
            "{PACKAGE_VERSION} (rtcd protocol {}, commit {}, built {}, {})",
            v.build_version,
            if v.build_hash.is_empty() {
                "unknown"
            } else {
                &v.build_hash
            },
            v.build_date,
            v.go_version
        )
    }
}

/// Rust's architecture names as Go's `GOARCH`.
fn go_arch(rust: &str) -> &str {
    match rust {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}
