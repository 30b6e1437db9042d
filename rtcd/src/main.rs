//! The `rtcd` binary: everything lives in the library; see [`rtcd::cli::main`].

fn main() -> std::process::ExitCode {
    rtcd::cli::main()
}
