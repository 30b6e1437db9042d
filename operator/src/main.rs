//! The `rtcd-operator` binary; everything lives in the library (see [`rtcd_operator::run`]).

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = rtcd_operator::run::Args::parse();
    match rtcd_operator::run::run(args).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rtcd-operator: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
