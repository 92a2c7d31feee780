//! Parses the configuration, sets up logging, binds and serves until SIGINT or SIGTERM.

use clap::Parser;
use std::process::ExitCode;

/// Every call decodes and encodes a string per protobuf field, so the server allocates a lot of
/// small, short-lived blocks; mimalloc serves them from per-thread free lists, where glibc's
/// malloc spent an eighth of the server's CPU time under load (docs/BENCHMARKS.md). It is built
/// without transparent huge pages (the `no_thp` feature): with them, each 2 MB region it touched
/// became resident whole, and the resident memory doubled. It also serves C's `malloc` (the
/// `override` feature), so SQLite's allocations share its heaps instead of a glibc arena per
/// connection thread, whose freed memory stayed resident (docs/RELIABILITY.md, "Soak").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = rosterd::Config::parse();
    rosterd::init_tracing(config.log_format);
    let listeners = match rosterd::Listeners::bind(&config).await {
        Ok(listeners) => listeners,
        Err((addr, e)) => {
            tracing::error!(listen = %addr, error = %e, "cannot listen");
            return ExitCode::FAILURE;
        }
    };
    match rosterd::serve(config, listeners, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole chain: "database: database unavailable: <the driver's reason>".
            tracing::error!(error = %rosterd::error_chain(&e), "rosterd failed");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = interrupt => tracing::info!("SIGINT received"),
        _ = terminate => tracing::info!("SIGTERM received"),
    }
}
