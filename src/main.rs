use std::process::ExitCode;

use clap::Parser;

use signalbox::app;
use signalbox::cli::{Cli, Failure};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match app::main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Config(e)) => {
            eprintln!("signalbox: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Usage(e)) => {
            eprintln!("signalbox: {e}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("signalbox: {e:#}");
            ExitCode::from(1)
        }
    }
}
