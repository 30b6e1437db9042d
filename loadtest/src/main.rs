//! `rtcd-loadtest`: command line, single-threaded runtime, summary on stdout, JSON on request.
//! `rtcd-loadtest probe <url>` is the connectivity canary.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

/// Plays the Calls plugin and N calls × M participants against an rtcd.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    options: rtcd_loadtest::run::Options,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// The connectivity canary: a one-person call with a real peer over UDP, then ICE-TCP;
    /// prints reachability, connect time, RTT and the winning candidate. Exit 0: every
    /// transport reachable; 1: one is not; 2: the API could not be used.
    Probe {
        #[command(flatten)]
        probe: rtcd_loadtest::canary::ProbeOptions,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> Result<(), ExitCode> {
    let json = serde_json::to_string_pretty(value).map_err(|e| {
        eprintln!("rtcd-loadtest: {e}");
        ExitCode::from(1)
    })?;
    std::fs::write(path, json + "\n").map_err(|e| {
        eprintln!("rtcd-loadtest: writing {}: {e}", path.display());
        ExitCode::from(1)
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(
            std::env::var("RTCD_LOADTEST_LOG")
                .ok()
                .and_then(|v| v.parse::<tracing::Level>().ok())
                .unwrap_or(tracing::Level::WARN),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rtcd-loadtest: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let local = tokio::task::LocalSet::new();
    if let Some(Command::Probe { probe, json }) = &cli.command {
        let report = match local.block_on(&rt, rtcd_loadtest::canary::probe(probe)) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("rtcd-loadtest probe: {e:#}");
                return ExitCode::from(2);
            }
        };
        print!("{}", report.render());
        if let Some(path) = json
            && let Err(code) = write_json(path, &report)
        {
            return code;
        }
        return if report.ok() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    let report = match local.block_on(&rt, rtcd_loadtest::run::run(&cli.options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rtcd-loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", rtcd_loadtest::run::render(&report));
    if let Some(path) = &cli.json
        && let Err(code) = write_json(path, &report)
    {
        return code;
    }
    ExitCode::SUCCESS
}
