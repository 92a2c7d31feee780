//! Assembling and running the server: store, services, reflection, health, the outbox worker.

use crate::api::{
    AssignmentApi, AuditApi, AuthApi, AuthorizationApi, BillingApi, EventApi, RoleApi, TeamApi, UserApi, WorkspaceApi,
};
use crate::app::App;
use crate::auth::{Authenticator, Hasher, Lane, random_bytes};
use crate::authz_cache::AuthzCache;
use crate::config::{Config, redact_url};
use crate::context::RequestContextLayer;
use crate::feed::Feed;
use crate::keys::Keys;
use crate::mail::{Mails, Recipient};
use crate::metrics::Metrics;
use crate::outbox::{self, Mailer};
use crate::throttle::LoginThrottle;
use crate::tls::{Tls, TlsFiles};
use roster_authz::BuiltinRole;
use roster_identity::{BcryptCost, Email, FullName, Password, Slug, WorkspaceName};
use roster_proto::v1::{
    assignment_service_server::AssignmentServiceServer, audit_service_server::AuditServiceServer,
    auth_service_server::AuthServiceServer, authorization_service_server::AuthorizationServiceServer,
    billing_service_server::BillingServiceServer, event_service_server::EventServiceServer,
    role_service_server::RoleServiceServer, team_service_server::TeamServiceServer,
    user_service_server::UserServiceServer, workspace_service_server::WorkspaceServiceServer,
};
use roster_store::{Actor, Context, NewUser, NewWorkspace, Store, StoreConfig, StoreError, Welcome};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error("configuration: {0}")]
    Config(String),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
}

/// Where the server listens: gRPC, and optionally the metrics endpoint.
#[derive(Debug)]
pub struct Listeners {
    pub grpc: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses `config` names; an error says which one failed.
    pub async fn bind(config: &Config) -> Result<Self, (std::net::SocketAddr, std::io::Error)> {
        let grpc = TcpListener::bind(config.listen).await.map_err(|e| (config.listen, e))?;
        let metrics = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| (addr, e))?),
            None => None,
        };
        Ok(Self { grpc, metrics })
    }
}

/// The fully qualified names of the services we report health for.
const SERVICES: [&str; 10] = [
    "roster.v1.WorkspaceService",
    "roster.v1.AuthService",
    "roster.v1.UserService",
    "roster.v1.RoleService",
    "roster.v1.AuthorizationService",
    "roster.v1.AuditService",
    "roster.v1.TeamService",
    "roster.v1.AssignmentService",
    "roster.v1.BillingService",
    "roster.v1.EventService",
];

/// The largest request body a Roster service decodes, in bytes: several times its largest
/// legitimate request (a role with a 500-character description and every grant is about 2 KB), so
/// that no body is decoded into much more memory than a real call needs. Larger bodies are
/// refused before they are read, with RESOURCE_EXHAUSTED `MESSAGE_TOO_LARGE`.
const MAX_REQUEST: usize = 16 * 1024;

/// The same for AuthorizationService, whose CheckPermissions takes up to 1,000 items: about 60 KB
/// without resources, 100 KB with an assignee on every item.
const MAX_BATCH_REQUEST: usize = 128 * 1024;

/// Serves on `listener` until `shutdown` resolves, then turns health NOT_SERVING, lets in-flight
/// calls finish, stops the outbox worker and closes the database.
pub async fn serve(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let started = Instant::now();
    let cost =
        BcryptCost::new(config.bcrypt_cost).ok_or_else(|| ServeError::Config("bcrypt cost must be 4..=31".into()))?;
    let mailer = match &config.smtp_url {
        Some(url) => Some(Mailer::new(url, &config.mail_from).map_err(ServeError::Config)?),
        None => None,
    };
    // The files first: a mistake in them stops the start before it touches the database.
    let tls = match TlsFiles::of(&config).map_err(ServeError::Config)? {
        Some(files) => Some(Arc::new(Tls::load(files).map_err(|e| ServeError::Config(format!("TLS: {e}")))?)),
        None => None,
    };
    let (ring, keys_digest) = crate::keys::load(&config).map_err(ServeError::Config)?;
    tracing::info!(keys = ring.len(), "service keys loaded");
    let mut store_config = StoreConfig::new(config.database_url.clone());
    store_config.max_connections = config.db_max_connections;
    store_config.acquire_timeout = Duration::from_millis(config.db_timeout_ms);
    let store = Store::connect(&store_config).await?;
    tracing::info!(backend = store.backend_name(), url = %redact_url(&config.database_url), "database ready");
    // The SQLite pool's remaining connections, opened a second after start so that they compete
    // with nothing the start does (start-up to SERVING measured up to 0.4 s with them opened at
    // once, docs/BENCHMARKS.md).
    tokio::spawn({
        let store = store.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            store.open_pool().await;
        }
    });

    let keys = Arc::new(Keys::new(ring));
    let auth = Arc::new(Authenticator::new(store.clone(), keys.clone()));
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let metrics = Arc::new(Metrics::new(config.db_max_connections));
    let app = Arc::new(App {
        store: store.clone(),
        hasher: Arc::new(Hasher::new(cost, cores, config.bcrypt_queue as usize, metrics.bcrypt_counters())),
        metrics: metrics.clone(),
        login_throttle: LoginThrottle::new(&config, store.clone(), metrics.clone()),
        session_ttl: config.session_ttl(),
        mails: Mails::new(&config),
        outbox: Arc::new(Notify::new()),
        authz: Arc::new(AuthzCache::new(
            store.clone(),
            metrics.authz_cache.clone(),
            usize::try_from(config.authz_cache_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX),
        )),
        feed: Arc::new(Feed::new(store.clone(), Duration::from_millis(config.events_poll_ms))),
        keys: keys.clone(),
    });
    app.hasher.warm_up();
    if config.demo && config.service_keys.is_empty() && config.service_keys_file.is_none() {
        // In the background: its bcrypt hash would otherwise delay serving by a third of a second.
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = create_demo_workspace(&app).await {
                tracing::error!(error = %crate::error::error_chain(&e), "could not create the demo workspace");
            }
        });
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let policy = outbox::Policy {
        max_attempts: config.outbox_max_attempts,
        first_retry: Duration::from_millis(config.outbox_retry_ms),
        poll: Duration::from_millis(config.outbox_retry_ms.clamp(50, 5_000)),
        lease: Duration::from_millis(config.outbox_lease_ms),
    };
    let worker = tokio::spawn(outbox::run(store.clone(), mailer, policy, app.outbox.clone(), stop_rx.clone()));
    let janitor = tokio::spawn(purge_expired_sessions(store.clone(), stop_rx.clone()));
    let retention = Duration::from_secs(config.events_retention_secs);
    let feed_janitor = tokio::spawn(purge_old_events(store.clone(), retention, stop_rx.clone()));
    let poller = tokio::spawn(app.authz.clone().run(Duration::from_millis(config.authz_refresh_ms), stop_rx.clone()));
    let feed = tokio::spawn(app.feed.clone().run(stop_rx.clone()));
    let sweeper =
        tokio::spawn(sweep_queues(app.clone(), Duration::from_millis(config.queue_sweep_ms), stop_rx.clone()));
    let reload_every = Duration::from_millis(config.reload_check_ms);
    let key_follower = tokio::spawn(crate::keys::follow(
        keys,
        config.service_keys.clone(),
        config.service_keys_file.clone(),
        keys_digest,
        reload_every,
        stop_rx.clone(),
    ));
    let tls_follower = tls.clone().map(|tls| tokio::spawn(tls.follow(reload_every, stop_rx.clone())));
    let exporter = listeners.metrics.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        tokio::spawn(crate::metrics::serve(listener, metrics.clone(), store.clone(), stop_rx))
    });

    let (reporter, health) = tonic_health::server::health_reporter();
    for name in SERVICES.into_iter().chain([""]) {
        reporter.set_service_status(name, ServingStatus::Serving).await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(roster_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
    };
    let router = tonic::transport::Server::builder()
        .max_concurrent_streams(config.max_streams_per_connection)
        .layer(RequestContextLayer {
            timeout: Duration::from_secs(config.request_timeout_secs),
            metrics,
            auth,
            in_flight: Arc::new(tokio::sync::Semaphore::new(config.max_calls as usize)),
        })
        .add_service(health)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(WorkspaceServiceServer::new(WorkspaceApi(app.clone())).max_decoding_message_size(MAX_REQUEST))
        .add_service(AuthServiceServer::new(AuthApi(app.clone())).max_decoding_message_size(MAX_REQUEST))
        .add_service(UserServiceServer::new(UserApi(app.clone())).max_decoding_message_size(MAX_REQUEST))
        .add_service(RoleServiceServer::new(RoleApi(app.clone())).max_decoding_message_size(MAX_REQUEST))
        .add_service(
            AuthorizationServiceServer::new(AuthorizationApi(app.clone())).max_decoding_message_size(MAX_BATCH_REQUEST),
        )
        .add_service(AuditServiceServer::new(AuditApi(app.clone())).max_decoding_message_size(MAX_REQUEST))
        .add_service(TeamServiceServer::new(TeamApi(app.clone())).max_decoding_message_size(MAX_REQUEST))
        .add_service(AssignmentServiceServer::new(AssignmentApi(app.clone())).max_decoding_message_size(MAX_REQUEST))
        .add_service(BillingServiceServer::new(BillingApi(app.clone())).max_decoding_message_size(MAX_REQUEST))
        .add_service(EventServiceServer::new(EventApi(app.clone())).max_decoding_message_size(MAX_REQUEST));

    let addr = listeners.grpc.local_addr().map_err(|e| ServeError::Config(format!("listener: {e}")))?;
    tracing::info!(%addr, tls = tls.is_some(), startup_ms = started.elapsed().as_millis() as u64, "serving");
    let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
    let feed_closing = app.feed.clone();
    let drain = async move {
        shutdown.await;
        for name in SERVICES.into_iter().chain([""]) {
            reporter.set_service_status(name, ServingStatus::NotServing).await;
        }
        tracing::info!("shutting down: health is NOT_SERVING, finishing in-flight calls");
        feed_closing.close();
        let _ = draining_tx.send(());
    };
    // Long-lived streams (a health Watch, say) would hold a graceful shutdown open forever: after
    // the grace period the server stops anyway.
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let grace_over = async move {
        match draining_rx.await {
            Ok(()) => tokio::time::sleep(grace).await,
            Err(_) => std::future::pending::<()>().await,
        }
    };
    let mut acceptor = None;
    let serving: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> = match tls {
        Some(tls) => {
            let (incoming, task) = tls.incoming(listeners.grpc);
            acceptor = Some(task);
            Box::pin(router.serve_with_incoming_shutdown(incoming, drain))
        }
        None => {
            let incoming = TcpIncoming::from(listeners.grpc).with_nodelay(Some(true));
            Box::pin(router.serve_with_incoming_shutdown(incoming, drain))
        }
    };
    let served = tokio::select! {
        served = serving => served,
        () = grace_over => {
            tracing::warn!(grace_secs = grace.as_secs(), "grace period over: closing the remaining connections");
            Ok(())
        }
    };
    if let Some(acceptor) = acceptor {
        acceptor.abort();
    }
    let _ = stop_tx.send(true);
    if tokio::time::timeout(Duration::from_secs(15), worker).await.is_err() {
        tracing::warn!("the outbox worker did not stop in time; its leased emails will be retried");
    }
    let _ = janitor.await;
    let _ = feed_janitor.await;
    let _ = poller.await;
    let _ = feed.await;
    let _ = sweeper.await;
    let _ = key_follower.await;
    if let Some(follower) = tls_follower {
        let _ = follower.await;
    }
    if let Some(exporter) = exporter {
        let _ = exporter.await;
    }
    drop(app);
    store.close().await?;
    tracing::info!("stopped");
    Ok(served?)
}

/// Deletes the change feed's events older than `retention`, every tenth of it (at most every ten
/// minutes, at least every second).
async fn purge_old_events(store: Store, retention: Duration, mut stop: watch::Receiver<bool>) {
    let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(600));
    let retention_ms = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
    loop {
        match store.purge_events(crate::auth::now_millis().saturating_sub(retention_ms)).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "old change feed events deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete old change feed events"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Deletes expired sessions every ten minutes (they are refused anyway; this keeps the table small).
async fn purge_expired_sessions(store: Store, mut stop: watch::Receiver<bool>) {
    loop {
        match store.purge_expired_sessions(crate::auth::now_millis()).await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(purged = n, "expired sessions deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete expired sessions"),
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// Every `interval`, hands out the queues of the workspaces that changed since the last look and
/// have queued conversations: a safety net for a hand-out lost after its change committed (a crash
/// in between, or a failure of the hand-out). Every change that may make an agent eligible writes
/// an event in its workspace's stream, so a look costs what changed, not the number of workspaces
/// with a queue; the first look, at start, takes them all (a process stopped between a change and
/// its hand-out). A look any of whose hand-outs failed is repeated from the same place.
async fn sweep_queues(app: Arc<App>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut after: Option<roster_store::EventCursor> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
        let looked = async {
            let head = app.store.newest_event().await?;
            let workspaces = app.store.workspaces_with_queues(after).await?;
            Ok::<_, roster_store::StoreError>((head, workspaces))
        };
        let (head, workspaces) = match looked.await {
            Ok(looked) => looked,
            Err(e) => {
                tracing::warn!(error = %crate::error::error_chain(&e), "could not list the queues");
                continue;
            }
        };
        let ctx = Context {
            actor: Actor::Service("rosterd-queue-sweep".into()),
            request_id: String::new(),
            now: crate::auth::now_millis(),
        };
        let mut handed_out = true;
        for workspace_id in workspaces {
            if let Err(e) = app.store.drain_queues(&ctx, &workspace_id).await {
                tracing::warn!(error = %crate::error::error_chain(&e), "handing out queued conversations failed");
                handed_out = false;
            }
        }
        if handed_out {
            after = Some(head.unwrap_or_default().max(after.unwrap_or_default()));
        }
    }
}

/// On an empty database, creates the `demo` workspace and prints its admin's password once, so
/// that a first run can log in at once. Never runs when service keys are configured.
async fn create_demo_workspace(app: &App) -> Result<(), ServeError> {
    if app.store.has_workspaces().await? {
        return Ok(());
    }
    let bytes = random_bytes::<12>().map_err(|_| ServeError::Config("no randomness".into()))?;
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let demo = |e: &dyn std::fmt::Display| ServeError::Config(format!("demo workspace: {e}"));
    let slug = Slug::parse("demo").map_err(|e| demo(&e))?;
    let name = WorkspaceName::parse("Demo").map_err(|e| demo(&e))?;
    let email = Email::parse("admin@demo.example").map_err(|e| demo(&e))?;
    let full_name = FullName::parse("Demo Admin").map_err(|e| demo(&e))?;
    let password = Password::parse(&secret).map_err(|e| demo(&e))?;
    let password_hash =
        app.hasher.hash(Lane::Account, password).await.map_err(|s| ServeError::Config(s.message().to_owned()))?;
    let to = Recipient { slug: &slug, workspace: &name, email: &email, name: &full_name };
    let welcome = Welcome::Password(password_hash, app.mails.welcome(&to));
    let ctx = Context {
        actor: Actor::Service("rosterd-first-run".into()),
        request_id: String::new(),
        now: crate::auth::now_millis(),
    };
    let admin = NewUser { email, full_name, role: BuiltinRole::Admin.into() };
    app.store.create_workspace(&ctx, NewWorkspace { slug, name }, admin, welcome, None).await?;
    app.outbox.notify_one();
    // Printed, not logged: shown once on the terminal of whoever started the first run.
    println!(
        "\nFirst run: created the workspace `demo` and its admin.\n  \
         workspace_slug: demo\n  email:          admin@demo.example\n  password:       {secret}\n\
         This password is shown only now. Configure service keys (ROSTER_SERVICE_KEYS) to manage workspaces.\n"
    );
    Ok(())
}
