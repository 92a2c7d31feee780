//! Prometheus metrics, served in the OpenMetrics text format at `/metrics` on a port of their own
//! (`--metrics-listen`), so that the gRPC port never answers plain HTTP.
//!
//! Every call is counted and timed by the request-context layer, per method and status code. The
//! method label only ever takes the names of the methods this server serves (or `unknown`), so a
//! client sending made-up paths cannot grow the label set. Gauges that read the database (the
//! outbox backlog) are refreshed when scraped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use roster_store::Store;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// The label set of a call.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    /// `/roster.v1.UserService/CreateUser`, or `unknown`.
    method: Arc<str>,
    /// The gRPC status code's name, `OK` for success.
    code: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LimitLabels {
    limit: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

/// What AssignConversation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AssignOutcome {
    Assigned,
    Queued,
    Unchanged,
}

/// The server's metrics and the registry that exposes them.
pub(crate) struct Metrics {
    registry: Registry,
    methods: HashMap<String, Arc<str>>,
    unknown: Arc<str>,
    rpc: Family<RpcLabels, Histogram, fn() -> Histogram>,
    assignments: Family<OutcomeLabels, Counter>,
    bcrypt: Family<OperationLabels, Counter>,
    login_throttled: Family<LimitLabels, Counter>,
    /// The authorization cache's reads of the database, and its size.
    pub(crate) authz_cache: CacheMetrics,
    outbox_backlog: Gauge,
    database_up: Gauge,
    pool: Family<StateLabels, Gauge>,
}

/// What the authorization cache reports.
#[derive(Debug, Clone, Default)]
pub(crate) struct CacheMetrics {
    pub(crate) reads: Counter,
    pub(crate) workspaces: Gauge,
    pub(crate) bytes: Gauge,
    pub(crate) evictions: Counter,
}

fn latency_histogram() -> Histogram {
    // 100 µs to about 15 s.
    Histogram::new(exponential_buckets(0.000_1, 2.5, 14))
}

impl Metrics {
    /// Registers every metric; `max_connections` is the pool's configured size.
    pub(crate) fn new(max_connections: u32) -> Self {
        let mut registry = Registry::with_prefix("roster");
        let rpc =
            Family::<RpcLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register(
            "rpc_duration_seconds",
            "Time from a call's arrival to its answer, per method and status code; its _count is the number of calls",
            rpc.clone(),
        );
        let assignments = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "assignments",
            "AssignConversation calls that assigned the conversation, queued it, or changed nothing",
            assignments.clone(),
        );
        let bcrypt = Family::<OperationLabels, Counter>::default();
        registry.register(
            "bcrypt_operations",
            "bcrypt computations: hash (a new password) and verify (a login, known user or not)",
            bcrypt.clone(),
        );
        let login_throttled = Family::<LimitLabels, Counter>::default();
        registry.register(
            "login_throttled",
            "Logins refused before any work, by the limit reached: per workspace and email (account) or per client address",
            login_throttled.clone(),
        );
        let authz_cache = CacheMetrics::default();
        registry.register(
            "authz_cache_reads",
            "Reads of the database by the authorization cache: a workspace loaded, its changes applied, a user looked up",
            authz_cache.reads.clone(),
        );
        registry.register(
            "authz_cache_workspaces",
            "Workspaces whose copy the authorization cache holds, as of its last look at its budget (about every second)",
            authz_cache.workspaces.clone(),
        );
        registry.register(
            "authz_cache_bytes",
            "The estimated memory of those copies, in bytes; kept under --authz-cache-mib",
            authz_cache.bytes.clone(),
        );
        registry.register(
            "authz_cache_evictions",
            "Copies let go to stay within the budget (each is read again by its next check)",
            authz_cache.evictions.clone(),
        );
        let outbox_backlog = Gauge::default();
        registry.register(
            "outbox_backlog",
            "Welcome emails waiting for delivery, read when scraped",
            outbox_backlog.clone(),
        );
        let database_up = Gauge::default();
        registry.register(
            "database_up",
            "1 when the database answered the scrape's query, 0 when it did not (the backlog is then the last one read)",
            database_up.clone(),
        );
        let pool = Family::<StateLabels, Gauge>::default();
        registry.register("db_pool_connections", "Pooled database connections, idle or in use", pool.clone());
        let max = Gauge::<i64>::default();
        max.set(i64::from(max_connections));
        registry.register("db_pool_max_connections", "The database pool's configured size", max);

        let mut methods = HashMap::new();
        for set in [roster_proto::FILE_DESCRIPTOR_SET, tonic_health::pb::FILE_DESCRIPTOR_SET] {
            for path in method_paths(set) {
                methods.insert(path.clone(), Arc::from(path));
            }
        }
        for path in [
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
        ] {
            methods.insert(path.to_owned(), Arc::from(path));
        }
        Self {
            registry,
            methods,
            unknown: Arc::from("unknown"),
            rpc,
            assignments,
            bcrypt,
            login_throttled,
            authz_cache,
            outbox_backlog,
            database_up,
            pool,
        }
    }

    /// The method label of a request path: the path itself when it names a method served here.
    pub(crate) fn method(&self, path: &str) -> Arc<str> {
        self.methods.get(path).unwrap_or(&self.unknown).clone()
    }

    /// Counts and times one call.
    pub(crate) fn observe_call(&self, method: Arc<str>, code: Code, elapsed: Duration) {
        self.rpc.get_or_create(&RpcLabels { method, code: code_name(code) }).observe(elapsed.as_secs_f64());
    }

    pub(crate) fn assignment(&self, outcome: AssignOutcome) {
        let outcome = match outcome {
            AssignOutcome::Assigned => "assigned",
            AssignOutcome::Queued => "queued",
            AssignOutcome::Unchanged => "unchanged",
        };
        self.assignments.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// A login refused by `limit`: `account` or `address`.
    pub(crate) fn login_throttled(&self, limit: &'static str) {
        self.login_throttled.get_or_create(&LimitLabels { limit }).inc();
    }

    /// The counters of bcrypt work: (hash, verify).
    pub(crate) fn bcrypt_counters(&self) -> (Counter, Counter) {
        let counter = |operation| self.bcrypt.get_or_create(&OperationLabels { operation }).clone();
        (counter("hash"), counter("verify"))
    }

    /// Reads the gauges that come from the database, then encodes everything.
    pub(crate) async fn render(&self, store: &Store) -> String {
        let usage = store.pool_usage();
        self.pool.get_or_create(&StateLabels { state: "idle" }).set(i64::from(usage.idle));
        self.pool.get_or_create(&StateLabels { state: "in_use" }).set(i64::from(usage.open.saturating_sub(usage.idle)));
        match tokio::time::timeout(Duration::from_secs(2), store.outbox_pending()).await {
            Ok(Ok(pending)) => {
                self.outbox_backlog.set(pending);
                self.database_up.set(1);
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %crate::error::error_chain(&e), "metrics: could not read the outbox backlog");
                self.database_up.set(0);
            }
            Err(_) => {
                tracing::warn!("metrics: the outbox backlog query took over 2 s");
                self.database_up.set(0);
            }
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

/// `/package.Service/Method` of every method in an encoded `FileDescriptorSet`.
pub(crate) fn method_paths(encoded: &[u8]) -> impl Iterator<Item = String> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(encoded).unwrap_or_default();
    set.file.into_iter().flat_map(|file| {
        let package = file.package().to_owned();
        file.service.into_iter().flat_map(move |service| {
            let prefix = format!("/{package}.{}/", service.name());
            service.method.into_iter().map(move |method| format!("{prefix}{}", method.name()))
        })
    })
}

/// The canonical name of a status code, as gRPC documents them.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Serves `/metrics` on `listener` until `stop` turns true.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    store: Store,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    use axum::routing::get;
    let router = axum::Router::new().route(
        "/metrics",
        get(move || async move {
            let text = metrics.render(&store).await;
            ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text)
        }),
    );
    let stopped = async move {
        let _ = stop.wait_for(|stopped| *stopped).await;
    };
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(stopped).await {
        tracing::error!(error = %e, "the metrics endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_method_has_its_own_label_and_others_share_one() {
        let metrics = Metrics::new(4);
        assert_eq!(&*metrics.method("/roster.v1.UserService/CreateUser"), "/roster.v1.UserService/CreateUser");
        assert_eq!(&*metrics.method("/grpc.health.v1.Health/Check"), "/grpc.health.v1.Health/Check");
        assert_eq!(&*metrics.method("/roster.v1.UserService/DropTables"), "unknown");
        assert_eq!(&*metrics.method("/metrics"), "unknown");
        assert!(metrics.methods.len() > 40, "{} methods", metrics.methods.len());
    }
}
