//! The command line: `rtcd [--config PATH] [--check-config | --print-config] [--version]`, also
//! accepting Go-style `-config PATH` as existing rtcd deployments pass it. Exit status 2 means
//! the configuration is wrong; 1 means the daemon failed at run time.

use std::{ffi::OsString, path::PathBuf, process::ExitCode};

use clap::Parser;

use crate::{
    config::{self, Loaded, Source},
    version::VersionInfo,
};

/// Exit status for an invalid configuration.
pub const EXIT_CONFIG: u8 = 2;
/// Exit status for a failure at run time.
pub const EXIT_RUNTIME: u8 = 1;

/// A Rust, wire-compatible rtcd: the WebRTC SFU behind Mattermost Calls.
#[derive(Debug, Parser)]
#[command(name = "rtcd", version = VersionInfo::long_version(), about)]
pub struct Cli {
    /// The TOML configuration. Default: config/config.toml if it exists, else built-in defaults.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Validate the configuration (file + RTCD_* environment), print any problems, exit 0 or 2.
    #[arg(long, conflicts_with = "print_config")]
    pub check_config: bool,
    /// Print the effective configuration as TOML, secrets redacted, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Wait until the rtcd running with this configuration reports no live sessions (or is
    /// gone), then exit 0: the Kubernetes preStop hook that lets calls end before SIGTERM.
    #[arg(long, conflicts_with_all = ["check_config", "print_config"])]
    pub wait_idle: bool,
    /// With --wait-idle: give up after this many seconds (exit 1). Default: wait for ever.
    #[arg(long, value_name = "SECONDS", requires = "wait_idle")]
    pub wait_idle_timeout: Option<u64>,
}

/// Go's `flag` package takes `-config x` and `-config=x`; clap wants two dashes.
pub fn normalize_go_flags(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| match a.to_str() {
            Some(s) if s == "-config" || s.starts_with("-config=") => OsString::from(format!("-{s}")),
            _ => a,
        })
        .collect()
}

/// The whole program: parse, load, then check, print or run.
pub fn main() -> ExitCode {
    let cli = Cli::parse_from(normalize_go_flags(std::env::args_os()));
    let env: Vec<(String, String)> = std::env::vars().collect();
    let loaded = match config::load(cli.config.as_deref(), &env) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("rtcd: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if cli.check_config {
        for w in &loaded.warnings {
            eprintln!("rtcd: warning: {w}");
        }
        println!("configuration OK ({})", describe(&loaded.source));
        return ExitCode::SUCCESS;
    }
    if cli.print_config {
        print!("{}", loaded.config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    if cli.wait_idle {
        return crate::idle::wait_idle(
            &loaded.config,
            cli.wait_idle_timeout.map(std::time::Duration::from_secs),
        );
    }
    run(loaded)
}

fn describe(source: &Source) -> String {
    match source {
        Source::File(p) => p.display().to_string(),
        Source::Embedded => "built-in defaults".into(),
    }
}

fn run(loaded: Loaded) -> ExitCode {
    if let Err(e) = crate::telemetry::init(&loaded.config.logger) {
        eprintln!("rtcd: {e}");
        return ExitCode::from(EXIT_RUNTIME);
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    tracing::info!(source = %describe(&loaded.source), "configuration loaded");
    tracing::debug!(config = ?loaded.config, "effective configuration");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    match runtime.block_on(crate::server::run(loaded.config)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "rtcd failed");
            eprintln!("rtcd: {e:#}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_config_flag() {
        let args = ["rtcd", "-config", "a.toml"].map(OsString::from);
        let cli = Cli::parse_from(normalize_go_flags(args));
        assert_eq!(cli.config, Some(PathBuf::from("a.toml")));
        let args = ["rtcd", "-config=b.toml", "--check-config"].map(OsString::from);
        let cli = Cli::parse_from(normalize_go_flags(args));
        assert_eq!(cli.config, Some(PathBuf::from("b.toml")));
        assert!(cli.check_config);
    }
}
