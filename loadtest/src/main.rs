//! `rtcd-loadtest`: command line, single-threaded runtime, summary on stdout, JSON on request.

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

/// Plays the Calls plugin and N calls × M participants against an rtcd.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    options: rtcd_loadtest::run::Options,
    /// Write the report as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
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
    let report = match local.block_on(&rt, rtcd_loadtest::run::run(&cli.options)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("rtcd-loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", rtcd_loadtest::run::render(&report));
    if let Some(path) = &cli.json {
        let json = match serde_json::to_string_pretty(&report) {
            Ok(j) => j,
            Err(e) => {
                eprintln!("rtcd-loadtest: {e}");
                return ExitCode::from(1);
            }
        };
        if let Err(e) = std::fs::write(path, json + "\n") {
            eprintln!("rtcd-loadtest: writing {}: {e}", path.display());
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
