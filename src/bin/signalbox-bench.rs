//! Load tests against the real server; see `signalbox::bench` for what each subcommand does.

use std::process::ExitCode;

fn main() -> ExitCode {
    match signalbox::bench::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("signalbox-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
