use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

mod bench;
mod cli;
mod demo;
mod progress_view;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("RELAYSYNC_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        // Colours on a terminal only: cron mails and log files stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    relaysync::progress::set_reporter(Box::new(progress_view::Console));
    // One thread: the replication stream and the worker hand each other a
    // message per row, and waking another thread for each costs more than
    // the work (PostgreSQL does the heavy lifting in its own processes).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<ExitCode> = runtime.block_on(cli::run(cli)).map_err(Into::into);
    match result {
        Ok(code) => code,
        Err(e) => {
            let line = relaysync::error_chain(e.as_ref()).replace('\n', " ");
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
