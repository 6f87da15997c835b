//! `nsr`: parse the command line, load configuration, set up logging, run the command.

use clap::Parser;
use nsr::cli::{self, Cli};
use nsr::clock::SystemClock;
use nsr::config::LogFormat;
use std::process::ExitCode;
use std::sync::Arc;

/// mimalloc: bulk imports allocate and free many small values; it made them about 40% faster
/// than the system allocator (benches/scale.rs).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.config(std::env::vars()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error:#}");
            return ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Text => logs.init(),
    }
    let mut stdout = std::io::stdout().lock();
    match cli::run(cli, config, Arc::new(SystemClock), &mut stdout).await {
        Ok(code) => code,
        // The reader of our output went away (`nsr show … | head`): nothing left to say.
        Err(error)
            if error
                .downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
