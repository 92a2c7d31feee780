//! Configuration: every setting is a flag and an environment variable.

use clap::{Parser, ValueEnum};
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How `rosterd` is configured.
#[derive(Parser, Clone)]
#[command(
    name = "rosterd",
    version,
    about = "Roster: users, roles, teams and seats for WhatsApp support inboxes, over gRPC."
)]
pub struct Config {
    /// Address to serve gRPC on.
    #[arg(long, env = "ROSTER_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// `sqlite://path` (created when missing) or `postgres://user@host/db`.
    #[arg(long, env = "ROSTER_DATABASE_URL", default_value = "sqlite://roster.db")]
    pub database_url: String,

    /// PEM file of the server's TLS certificate chain; with `--tls-key`, gRPC is served over TLS
    /// only. Without both, plaintext (for local use). Re-read when it changes.
    #[arg(long, env = "ROSTER_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM file of the private key of `--tls-cert`.
    #[arg(long, env = "ROSTER_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// PEM file of the CA certificates that sign client certificates: with it, every client must
    /// present one (mutual TLS).
    #[arg(long, env = "ROSTER_TLS_CLIENT_CA")]
    pub tls_client_ca: Option<PathBuf>,

    /// Address to serve Prometheus metrics on, at `/metrics` (docs/OPERATIONS.md); none when unset.
    #[arg(long, env = "ROSTER_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Database connection pool size.
    #[arg(long, env = "ROSTER_DB_MAX_CONNECTIONS", default_value_t = 16)]
    pub db_max_connections: u32,

    /// How long a call waits for a database connection or lock before giving up, in milliseconds.
    #[arg(long, env = "ROSTER_DB_TIMEOUT_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub db_timeout_ms: u64,

    /// bcrypt work factor for new password hashes (4..=31).
    #[arg(long, env = "ROSTER_BCRYPT_COST", default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
    pub bcrypt_cost: u32,

    /// How many bcrypt computations may wait for a core, for logins and for other password work
    /// each (one runs per core at a time); past it a call is refused with SERVER_OVERLOADED.
    #[arg(long, env = "ROSTER_BCRYPT_QUEUE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub bcrypt_queue: u32,

    /// The most Roster calls in flight at once, over all connections; past it a call is refused
    /// at once with SERVER_OVERLOADED (health and reflection do not count).
    #[arg(long, env = "ROSTER_MAX_CALLS", default_value_t = 512, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_calls: u32,

    /// The most concurrent HTTP/2 streams (calls) one connection may open; a client waits for one
    /// to end before it opens another.
    #[arg(long, env = "ROSTER_MAX_STREAMS_PER_CONNECTION", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_streams_per_connection: u32,

    /// How long a session token stays valid, in seconds.
    #[arg(long, env = "ROSTER_SESSION_TTL_SECS", default_value_t = 12 * 3600, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    pub session_ttl_secs: u64,

    /// Service keys as `name=secret`, comma-separated; a secret has at least 16 characters. Each
    /// may call every method in every workspace; a name given twice has two valid secrets.
    #[arg(long = "service-key", env = "ROSTER_SERVICE_KEYS", value_delimiter = ',')]
    pub service_keys: Vec<ServiceKeySpec>,

    /// A TOML file of service keys, each limited to some services or methods and to one workspace
    /// if it says so (docs/OPERATIONS.md). Re-read when it changes; a file that does not parse is
    /// refused at start and, later, logged and ignored (the keys loaded before stay).
    #[arg(long, env = "ROSTER_SERVICE_KEYS_FILE")]
    pub service_keys_file: Option<PathBuf>,

    /// How often the service keys file and the TLS files are checked for changes, in milliseconds.
    #[arg(long, env = "ROSTER_RELOAD_CHECK_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub reload_check_ms: u64,

    /// SMTP server for welcome emails, `smtp://host:port` (plain SMTP, for a local relay).
    /// Without it, emails wait in the outbox.
    #[arg(long, env = "ROSTER_SMTP_URL")]
    pub smtp_url: Option<SmtpUrl>,

    /// Sender of welcome emails.
    #[arg(long, env = "ROSTER_MAIL_FROM", default_value = "Roster <no-reply@roster.invalid>")]
    pub mail_from: String,

    /// Where people sign in, as written in welcome emails.
    #[arg(long, env = "ROSTER_SIGN_IN_URL", default_value = "https://app.roster.example/sign-in")]
    pub sign_in_url: String,

    /// The page where people choose a password from an invitation or reset email; the link adds
    /// `token=<token>` to it as a query parameter, for AuthService.SetPasswordWithToken.
    #[arg(long, env = "ROSTER_SET_PASSWORD_URL", default_value = "https://app.roster.example/set-password")]
    pub set_password_url: String,

    /// How long an invitation link stays valid, in seconds (7 days).
    #[arg(long, env = "ROSTER_INVITATION_TTL_SECS", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..=90 * 24 * 3600))]
    pub invitation_ttl_secs: u64,

    /// How long a password reset link stays valid, in seconds (30 minutes).
    #[arg(long, env = "ROSTER_RESET_TTL_SECS", default_value_t = 1800, value_parser = clap::value_parser!(u64).range(1..=7 * 24 * 3600))]
    pub reset_ttl_secs: u64,

    /// Password reset requests allowed per workspace and email within the login window.
    #[arg(long, env = "ROSTER_RESET_MAX_PER_ACCOUNT", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub reset_max_per_account: u32,

    /// Password reset requests allowed per client address within the login window.
    #[arg(long, env = "ROSTER_RESET_MAX_PER_ADDRESS", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub reset_max_per_address: u32,

    /// Delivery attempts before a welcome email is abandoned.
    #[arg(long, env = "ROSTER_OUTBOX_MAX_ATTEMPTS", default_value_t = 8, value_parser = clap::value_parser!(i32).range(1..=100))]
    pub outbox_max_attempts: i32,

    /// Wait before the first retry of a failed delivery, in milliseconds; doubles per attempt, at most 10 minutes.
    #[arg(long, env = "ROSTER_OUTBOX_RETRY_MS", default_value_t = 2000)]
    pub outbox_retry_ms: u64,

    /// How long a claimed email is reserved for the worker sending it, in milliseconds; keep it
    /// above the 10-second SMTP timeout so that no other worker sends it meanwhile.
    #[arg(long, env = "ROSTER_OUTBOX_LEASE_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..=86_400_000))]
    pub outbox_lease_ms: u64,

    /// How often the authorization cache asks the database whether another process changed a
    /// role or user, in milliseconds. A change made on another process is in force here within
    /// about this long (plus one reload).
    #[arg(long, env = "ROSTER_AUTHZ_REFRESH_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub authz_refresh_ms: u64,

    /// How much memory the authorization cache's copies of workspaces may take, in MiB
    /// (estimated); past it the copies read least recently are let go, and read again from the
    /// database on their next check.
    #[arg(long, env = "ROSTER_AUTHZ_CACHE_MIB", default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=1_048_576))]
    pub authz_cache_mib: u64,

    /// How often the change feed looks for events other processes wrote, in milliseconds. Events
    /// written by this process reach its watchers at once.
    #[arg(long, env = "ROSTER_EVENTS_POLL_MS", default_value_t = 200, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    pub events_poll_ms: u64,

    /// How long the change feed keeps events, in seconds; a cursor older than that is refused
    /// with CURSOR_EXPIRED.
    #[arg(long, env = "ROSTER_EVENTS_RETENTION_SECS", default_value_t = 7 * 24 * 3600, value_parser = clap::value_parser!(u64).range(1..=10 * 365 * 24 * 3600))]
    pub events_retention_secs: u64,

    /// How often the queues of the workspaces changed since the last look are handed out anyway
    /// (every queue at the first look after start), in milliseconds: a safety net for queued
    /// conversations whose hand-out after a change was lost (a crash between the change's commit
    /// and the hand-out, or a failure of the latter).
    #[arg(long, env = "ROSTER_QUEUE_SWEEP_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(10..=3_600_000))]
    pub queue_sweep_ms: u64,

    /// Failed logins allowed per workspace and email within the window; more are refused with
    /// LOGIN_THROTTLED until the oldest is out of the window.
    #[arg(long, env = "ROSTER_LOGIN_MAX_FAILURES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub login_max_failures: u32,

    /// Failed logins allowed per client address (any workspace and email) within the window.
    #[arg(long, env = "ROSTER_LOGIN_MAX_FAILURES_PER_ADDRESS", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub login_max_failures_per_address: u32,

    /// Failed logins allowed per workspace and email from all addresses together within the
    /// window: a cap on guessing spread over many addresses.
    #[arg(long, env = "ROSTER_LOGIN_MAX_FAILURES_PER_ACCOUNT", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub login_max_failures_per_account: u32,

    /// The load balancers and proxies in front of rosterd, as addresses or CIDR blocks,
    /// comma-separated: from them, the client's address is taken from `x-forwarded-for`.
    #[arg(long, env = "ROSTER_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,

    /// The window failed logins are counted over, in seconds.
    #[arg(long, env = "ROSTER_LOGIN_WINDOW_SECS", default_value_t = 900, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub login_window_secs: u64,

    /// Longest time one call may take, in seconds.
    #[arg(long, env = "ROSTER_REQUEST_TIMEOUT_SECS", default_value_t = 30)]
    pub request_timeout_secs: u64,

    /// After SIGINT/SIGTERM, how long in-flight calls and open streams may take before the
    /// server closes them, in seconds.
    #[arg(long, env = "ROSTER_SHUTDOWN_GRACE_SECS", default_value_t = 20)]
    pub shutdown_grace_secs: u64,

    /// Log format; the level comes from `RUST_LOG` (default `info`).
    #[arg(long, env = "ROSTER_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// On an empty database with no service keys configured, create a `demo` workspace and print
    /// its admin's password once, so that a first run can be tried at once.
    #[arg(long, env = "ROSTER_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    pub demo: bool,
}

impl Config {
    /// Defaults for everything, as with no flags and no environment.
    pub fn defaults() -> Self {
        Self::parse_from(["rosterd"])
    }

    pub(crate) fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("tls_cert", &self.tls_cert)
            .field("tls_client_ca", &self.tls_client_ca)
            .field("metrics_listen", &self.metrics_listen)
            .field("database_url", &redact_url(&self.database_url))
            .field("bcrypt_cost", &self.bcrypt_cost)
            .field("session_ttl_secs", &self.session_ttl_secs)
            .field("service_keys", &self.service_keys)
            .field("service_keys_file", &self.service_keys_file)
            .field("smtp_url", &self.smtp_url)
            .field("sign_in_url", &self.sign_in_url)
            .field("set_password_url", &self.set_password_url)
            .field("trusted_proxies", &self.trusted_proxies)
            .finish_non_exhaustive()
    }
}

/// A URL with any password replaced, for logs.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://<credentials>@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// A configured service key: its name (recorded as the actor) and its secret (never logged).
#[derive(Clone)]
pub struct ServiceKeySpec {
    pub name: String,
    pub secret: String,
}

impl fmt::Debug for ServiceKeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ServiceKey({}=<redacted>)", self.name)
    }
}

impl FromStr for ServiceKeySpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, secret) = s.split_once('=').ok_or("a service key is `name=secret`")?;
        let name = name.trim();
        check_key_name(name)?;
        check_key_secret(name, secret)?;
        Ok(Self { name: name.to_owned(), secret: secret.to_owned() })
    }
}

/// A service key's name: 1 to 64 of a-z, A-Z, 0-9, '-' and '_' (it is the audit trail's actor).
pub(crate) fn check_key_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 64 || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(format!("a service key name is 1 to 64 of a-z, A-Z, 0-9, '-' and '_', not {name:?}"));
    }
    Ok(())
}

/// A service key's secret: at least 16 visible ASCII characters (what an HTTP header carries), and
/// not shaped like a session token.
pub(crate) fn check_key_secret(name: &str, secret: &str) -> Result<(), String> {
    if secret.len() < 16 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "the secret of service key {name} must be at least 16 visible ASCII characters, no spaces"
        ));
    }
    if secret.starts_with("rst_") {
        return Err(format!("the secret of service key {name} must not start with `rst_` (session tokens do)"));
    }
    Ok(())
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in the block.
    pub fn contains(self, ip: IpAddr) -> bool {
        // Both families compared as the top bits of 128.
        fn bits(ip: IpAddr) -> (u128, u8) {
            match ip {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        }
        // An IPv4 client may show as an IPv4-mapped IPv6 address.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let ((network, width), (address, address_width)) = (bits(self.network), bits(ip));
        if width != address_width {
            return false;
        }
        let mask = u128::MAX.checked_shl(u32::from(128 - self.prefix)).unwrap_or(0);
        network & mask == address & mask
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (address, prefix) = s.split_once('/').map_or((s, None), |(a, p)| (a, Some(p)));
        let network: IpAddr = address.parse().map_err(|_| format!("{s:?} is not an address or CIDR block"))?;
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => {
                p.parse::<u8>().ok().filter(|p| *p <= width).ok_or(format!("{s:?}: the prefix is 0..={width}"))?
            }
        };
        Ok(Self { network, prefix })
    }
}

/// `smtp://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub host: String,
    pub port: u16,
}

impl FromStr for SmtpUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s.strip_prefix("smtp://").ok_or("the SMTP URL must look like smtp://host:port")?;
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| format!("bad SMTP port {port:?}"))?),
            None => (rest, 25),
        };
        if host.is_empty() || host.contains('@') {
            return Err("the SMTP URL must look like smtp://host:port (credentials are not supported)".into());
        }
        Ok(Self { host: host.to_owned(), port })
    }
}

impl fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "smtp://{}:{}", self.host, self.port)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_serve_on_loopback_with_a_local_sqlite_file() {
        let config = Config::defaults();
        assert_eq!(config.listen.to_string(), "127.0.0.1:50051");
        assert_eq!(config.database_url, "sqlite://roster.db");
        assert_eq!(config.bcrypt_cost, 12);
    }

    #[test]
    fn service_keys_parse_and_never_show_their_secret() {
        let config = Config::parse_from(["rosterd", "--service-key", "router=0123456789abcdef,web=fedcba9876543210"]);
        assert_eq!(config.service_keys.len(), 2);
        assert_eq!(config.service_keys[1].name, "web");
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn a_short_service_key_secret_is_refused() {
        assert!(Config::try_parse_from(["rosterd", "--service-key", "router=short"]).is_err());
    }

    #[test]
    fn service_key_limits_hold_at_their_edges() {
        let parses = |spec: &str| spec.parse::<ServiceKeySpec>().is_ok();
        // Secrets: 16 visible ASCII characters or more, all a header can carry.
        assert!(!parses(&format!("k={}", "s".repeat(15))));
        assert!(parses(&format!("k={}", "s".repeat(16))));
        assert!(parses(&format!("k={}~!", "s".repeat(14))));
        for invisible in ["é", "\u{200b}", " ", "\t", "\u{7f}"] {
            assert!(!parses(&format!("k={}{invisible}", "s".repeat(16))), "{invisible:?}");
        }
        // Names: 64 bytes of the allowed characters.
        assert!(parses(&format!("{}={}", "n".repeat(64), "s".repeat(16))));
        assert!(!parses(&format!("{}={}", "n".repeat(65), "s".repeat(16))));
        assert!(!parses(&format!("k\u{131}={}", "s".repeat(16))), "a dotless i is not ASCII");
        assert!(!parses(&format!("={}", "s".repeat(16))));
    }

    #[test]
    fn smtp_urls_name_host_and_port() {
        assert_eq!("smtp://127.0.0.1:2525".parse(), Ok(SmtpUrl { host: "127.0.0.1".into(), port: 2525 }));
        assert_eq!("smtp://mail".parse(), Ok(SmtpUrl { host: "mail".into(), port: 25 }));
        assert!("smtps://mail".parse::<SmtpUrl>().is_err());
    }

    #[test]
    fn database_credentials_are_redacted() {
        assert_eq!(redact_url("postgres://roster:hunter2@db/roster"), "postgres://<credentials>@db/roster");
    }

    #[test]
    fn address_blocks_contain_what_they_say_and_nothing_else() {
        let cases = [
            ("10.0.0.0/8", "10.255.1.2", true),
            ("10.0.0.0/8", "11.0.0.1", false),
            ("192.168.1.7", "192.168.1.7", true),
            ("192.168.1.7", "192.168.1.8", false),
            ("0.0.0.0/0", "203.0.113.9", true),
            ("127.0.0.1/32", "::ffff:127.0.0.1", true),
            ("2001:db8::/32", "2001:db8:ffff::1", true),
            ("2001:db8::/32", "2001:db9::1", false),
            ("2001:db8::/32", "10.0.0.1", false),
            ("10.0.0.0/8", "::1", false),
        ];
        for (block, ip, inside) in cases {
            let cidr: Cidr = block.parse().expect(block);
            assert_eq!(cidr.contains(ip.parse().expect(ip)), inside, "{block} ∋ {ip}");
        }
        for bad in ["10.0.0.0/33", "2001:db8::/129", "10.0.0/8", "example.com", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }
}
