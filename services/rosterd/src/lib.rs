//! `rosterd`, the Roster gRPC server: the only crate that knows tonic.
//!
//! The main design choice is that handlers stay thin: a request-context layer assigns the request
//! id and lifts the bearer credential, each handler authenticates, resolves the workspace,
//! authorizes through [`policy`] (one table), parses into `roster-identity` types, makes one
//! store call (one transaction) and converts the answer. Every error goes through one mapping in
//! [`error`], so every status carries an `ErrorInfo` reason.
//!
//! The binary (`main.rs`) only parses the configuration, sets up logging and waits for a signal;
//! tests start the same [`serve`] in-process.

mod api;
mod app;
mod auth;
mod authz_cache;
mod config;
mod context;
mod convert;
mod error;
mod feed;
mod keys;
mod mail;
mod metrics;
mod outbox;
mod policy;
mod server;
mod throttle;
mod tls;

pub use config::{Config, LogFormat, ServiceKeySpec, SmtpUrl};
pub use context::REQUEST_ID_HEADER;
pub use error::{DOMAIN as ERROR_DOMAIN, error_chain};
pub use server::{Listeners, ServeError, serve};

/// Sets up logging to standard error: `RUST_LOG` picks the levels (default `info`), `format` the shape.
pub fn init_tracing(format: LogFormat) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "info".to_owned());
    init_tracing_with(format, &filter, std::io::stderr);
}

/// Sets up logging with an explicit filter and writer (tests capture the output this way).
pub fn init_tracing_with<W>(format: LogFormat, filter: &str, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(false);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
    };
}
