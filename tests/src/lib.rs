//! The harness of Roster's integration tests: a real `rosterd` per test, in-process on a free
//! port, on a fresh database — a SQLite file in a temporary directory, or, when
//! `ROSTER_TEST_DATABASE_URL` names a PostgreSQL server, a database created for the test and
//! dropped after it. Tests talk to it with the generated gRPC clients, like any other service.

pub mod metrics;
pub mod pgserver;
pub mod proxy;
pub mod raw;
pub mod smtp;
pub mod tls;

use roster_proto::v1 as pb;
use roster_proto::v1::{
    assignment_service_client::AssignmentServiceClient, audit_service_client::AuditServiceClient,
    auth_service_client::AuthServiceClient, authorization_service_client::AuthorizationServiceClient,
    billing_service_client::BillingServiceClient, event_service_client::EventServiceClient,
    role_service_client::RoleServiceClient, team_service_client::TeamServiceClient,
    user_service_client::UserServiceClient, workspace_service_client::WorkspaceServiceClient,
};
use roster_store::{Store, StoreConfig};
use sea_orm::{ConnectionTrait, Database};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use tonic_types::StatusExt;

pub use rosterd::Config;

/// The service key every test server accepts.
pub const SERVICE_KEY: &str = "test-service-key-0123456789";
/// The name it is recorded under.
pub const SERVICE_NAME: &str = "tests";
/// A well-formed id no record has.
pub const UNKNOWN_ID: &str = "00000000000000000000000000000000";
/// A password that passes the rules.
pub const PASSWORD: &str = "correct horse battery";
/// The extra seats [`TestApp::workspace`] grants, so that tests of other rules are not stopped by
/// the Free Trial's one seat.
pub const TEST_EXTRA_SEATS: i32 = 50;

/// A database for one test; dropped with it.
pub struct TestDatabase {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDatabase {
    /// A fresh SQLite file, or a fresh PostgreSQL database when `ROSTER_TEST_DATABASE_URL` is set.
    pub async fn fresh() -> Self {
        match std::env::var("ROSTER_TEST_DATABASE_URL") {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("roster_test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(admin_url.as_str()).await.expect("connect to ROSTER_TEST_DATABASE_URL");
                admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create test database");
                admin.close().await.ok();
                let base = admin_url.split('?').next().unwrap_or(&admin_url);
                let url = match base.rfind('/') {
                    Some(slash) if slash > "postgres://".len() => format!("{}/{name}", &base[..slash]),
                    _ => format!("{base}/{name}"),
                };
                Self { url, _dir: None, postgres: Some((admin_url, name)) }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temporary directory");
                let url = format!("sqlite://{}", dir.path().join("roster.db").display());
                Self { url, _dir: Some(dir), postgres: None }
            }
        }
    }

    /// A SQLite file in `dir`, whatever `ROSTER_TEST_DATABASE_URL` says: for faults of SQLite's own.
    pub fn sqlite_in(dir: &std::path::Path) -> Self {
        Self { url: format!("sqlite://{}", dir.join("roster.db").display()), _dir: None, postgres: None }
    }

    /// The database at `url`, left as it is when dropped: for a server a test runs itself.
    pub fn at(url: String) -> Self {
        Self { url, _dir: None, postgres: None }
    }

    /// Whether this is PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        self.url.starts_with("postgres")
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Some((admin_url, name)) = self.postgres.take() else { return };
        // Drop runs outside async; use a private runtime on a plain thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
            runtime.block_on(async {
                let admin = Database::connect(admin_url.as_str()).await.ok()?;
                admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await.ok()?;
                admin.close().await.ok()
            })
        })
        .join();
    }
}

/// A running server and clients for it.
pub struct TestApp {
    pub addr: SocketAddr,
    /// Where its Prometheus metrics are served (`/metrics`).
    pub metrics_addr: SocketAddr,
    pub channel: Channel,
    /// Another handle on the server's database, for asserting what was (not) written.
    pub store: Store,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), rosterd::ServeError>>>,
    pub db: TestDatabase,
}

/// Test defaults: a fast bcrypt cost, one service key, no demo workspace.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::defaults();
    config.database_url = database_url.to_owned();
    config.bcrypt_cost = 4;
    config.service_keys = vec![format!("{SERVICE_NAME}={SERVICE_KEY}").parse().expect("service key")];
    config.smtp_url = None;
    config.demo = false;
    config.outbox_retry_ms = 50;
    config
}

/// Starts a server with the test defaults.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts a server with the test defaults changed by `configure`.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(TestDatabase::fresh().await, |config, _| configure(config)).await
}

/// Starts a server on `db` with the test defaults changed by `configure`, which also sees the
/// database (to point the server at it another way, say).
pub async fn spawn_app_on(db: TestDatabase, configure: impl FnOnce(&mut Config, &TestDatabase)) -> TestApp {
    spawn_app_reached(db, configure, |addr| Endpoint::from_shared(format!("http://{addr}")).expect("uri")).await
}

/// [`spawn_app_on`] with the clients' channel made from the endpoint `reach` gives for the
/// server's address (a TLS one, say).
pub async fn spawn_app_reached(
    db: TestDatabase,
    configure: impl FnOnce(&mut Config, &TestDatabase),
    reach: impl FnOnce(SocketAddr) -> Endpoint,
) -> TestApp {
    let mut config = test_config(&db.url);
    configure(&mut config, &db);
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let metrics = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = grpc.local_addr().expect("local address");
    let metrics_addr = metrics.local_addr().expect("local address");
    let listeners = rosterd::Listeners { grpc, metrics: Some(metrics) };
    let (shutdown, signal) = oneshot::channel::<()>();
    let task = tokio::spawn(rosterd::serve(config.clone(), listeners, async move {
        let _ = signal.await;
    }));
    let channel = reach(addr).connect_lazy();
    // The server migrates before it accepts; wait until it answers health checks.
    if !wait_until_serving(&channel, || !task.is_finished()).await {
        panic!("rosterd stopped while starting: {:?}", task.await);
    }
    let store = Store::connect(&StoreConfig::new(db.url.clone())).await.expect("store");
    TestApp { addr, metrics_addr, channel, store, config, shutdown: Some(shutdown), task: Some(task), db }
}

impl TestApp {
    pub fn workspaces(&self) -> WorkspaceServiceClient<Channel> {
        WorkspaceServiceClient::new(self.channel.clone())
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn audit(&self) -> AuditServiceClient<Channel> {
        AuditServiceClient::new(self.channel.clone())
    }

    pub fn roles(&self) -> RoleServiceClient<Channel> {
        RoleServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn authz(&self) -> AuthorizationServiceClient<Channel> {
        AuthorizationServiceClient::new(self.channel.clone())
    }

    pub fn teams(&self) -> TeamServiceClient<Channel> {
        TeamServiceClient::new(self.channel.clone())
    }

    pub fn assignments(&self) -> AssignmentServiceClient<Channel> {
        AssignmentServiceClient::new(self.channel.clone())
    }

    pub fn billing(&self) -> BillingServiceClient<Channel> {
        BillingServiceClient::new(self.channel.clone())
    }

    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone())
    }

    /// A scrape of the server's Prometheus metrics.
    pub async fn metrics(&self) -> metrics::Scrape {
        metrics::scrape(self.metrics_addr).await
    }

    /// Starts a second `rosterd` process — the real binary — on this server's database, with the
    /// same service key. It is killed when dropped.
    pub async fn spawn_peer_process(&self) -> PeerProcess {
        self.spawn_peer_process_with(PeerOptions::default()).await
    }

    /// [`TestApp::spawn_peer_process`] with more flags, and its log kept in a file.
    pub async fn spawn_peer_process_with(&self, options: PeerOptions) -> PeerProcess {
        let binary = rosterd_binary();
        let port = unused_port();
        let metrics_port = unused_port();
        let stderr = match &options.log {
            Some(path) => std::fs::File::create(path).expect("log file").into(),
            None => std::process::Stdio::null(),
        };
        let child = tokio::process::Command::new(&binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", "warn")
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
            .args(["--database-url", &self.db.url])
            .args(["--service-key", &format!("{SERVICE_NAME}={SERVICE_KEY}")])
            .args(["--bcrypt-cost", &options.bcrypt_cost.unwrap_or(4).to_string(), "--demo", "false"])
            .args(["--authz-refresh-ms", &self.config.authz_refresh_ms.to_string()])
            .args(["--db-timeout-ms", &self.config.db_timeout_ms.to_string()])
            .args(&options.args)
            .stdout(std::process::Stdio::null())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", binary.display()));
        let channel = Channel::from_shared(format!("http://127.0.0.1:{port}")).expect("uri").connect_lazy();
        assert!(wait_until_serving(&channel, || true).await);
        let metrics_addr = SocketAddr::from(([127, 0, 0, 1], metrics_port));
        PeerProcess { channel, uri: format!("http://127.0.0.1:{port}"), metrics_addr, child }
    }

    /// A reader of every table's content, to prove a call wrote nothing; with `audit`, the records
    /// of attempts too.
    pub async fn fingerprint(&self, audit: bool) -> Fingerprint {
        Fingerprint::new(&self.db, audit).await
    }
}

/// The tables a refused call may write by design: its audit event, and a login attempt's record.
const RECORDS_OF_ATTEMPTS: [&str; 3] = ["audit_events", "login_attempts", "login_keys"];

/// Every table's content as one digest per table ([`RECORDS_OF_ATTEMPTS`] left out unless asked
/// for): equal readings mean no row was added, changed or deleted in between.
pub struct Fingerprint {
    db: sea_orm::DatabaseConnection,
    queries: Vec<(String, String)>,
}

impl Fingerprint {
    async fn new(database: &TestDatabase, audit: bool) -> Self {
        let db = Database::connect(database.url.as_str()).await.expect("connect");
        let backend = db.get_database_backend();
        let query = |sql: String| sea_orm::Statement::from_string(backend, sql);
        let tables_sql = if database.is_postgres() {
            "SELECT tablename AS name FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
        } else {
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY 1"
        };
        let mut queries = Vec::new();
        for row in db.query_all_raw(query(tables_sql.into())).await.expect("tables") {
            let table: String = row.try_get("", "name").expect("name");
            if table == "seaql_migrations" || (!audit && RECORDS_OF_ATTEMPTS.contains(&table.as_str())) {
                continue;
            }
            let sql = if database.is_postgres() {
                format!(
                    "SELECT md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '')) AS d FROM \"{table}\" t"
                )
            } else {
                let columns =
                    db.query_all_raw(query(format!("PRAGMA table_info(\"{table}\")"))).await.expect("columns");
                let quoted: Vec<String> = columns
                    .iter()
                    .map(|c| format!("quote(\"{}\")", c.try_get::<String>("", "name").expect("column")))
                    .collect();
                format!(
                    "SELECT coalesce(group_concat(r, char(10)), '') AS d FROM (SELECT {} AS r FROM \"{table}\" ORDER BY 1)",
                    quoted.join(" || '|' || ")
                )
            };
            queries.push((table, sql));
        }
        Self { db, queries }
    }

    /// The audit events after the one numbered `id`, oldest first: their numbers and actions.
    pub async fn audit_after(&self, id: i64) -> Vec<(i64, String)> {
        let sql = format!("SELECT id, action FROM audit_events WHERE id > {id} ORDER BY id");
        let rows = self.db.query_all_raw(sea_orm::Statement::from_string(self.db.get_database_backend(), sql)).await;
        rows.expect("audit events")
            .iter()
            .map(|row| (row.try_get("", "id").expect("id"), row.try_get("", "action").expect("action")))
            .collect()
    }

    /// The tables with a row whose text holds `needle` (letters and digits only).
    pub async fn tables_containing(&self, needle: &str) -> Vec<String> {
        assert!(needle.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "a plain needle");
        let backend = self.db.get_database_backend();
        let mut found = Vec::new();
        for (table, sql) in &self.queries {
            let sql = match backend {
                sea_orm::DbBackend::Postgres => {
                    format!("SELECT count(*)::text AS d FROM \"{table}\" t WHERE strpos(t::text, '{needle}') > 0")
                }
                _ => sql.clone(),
            };
            let row = self.db.query_one_raw(sea_orm::Statement::from_string(backend, sql)).await;
            let text = row.expect("rows").expect("a row").try_get::<String>("", "d").expect("text");
            let holds = match backend {
                sea_orm::DbBackend::Postgres => text != "0",
                _ => text.contains(needle),
            };
            if holds {
                found.push(table.clone());
            }
        }
        found
    }

    /// The digest of each table now.
    pub async fn read(&self) -> std::collections::BTreeMap<String, String> {
        let backend = self.db.get_database_backend();
        let mut digests = std::collections::BTreeMap::new();
        for (table, sql) in &self.queries {
            let row = self.db.query_one_raw(sea_orm::Statement::from_string(backend, sql.clone())).await;
            let digest = row.expect("digest").expect("a row").try_get::<String>("", "d").expect("digest");
            digests.insert(table.clone(), digest);
        }
        digests
    }
}

/// How to start a peer process beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct PeerOptions {
    /// More flags, besides those it always gets (listen addresses, database, service key, bcrypt
    /// cost, demo, authz refresh, database timeout).
    pub args: Vec<String>,
    /// Where its standard error (the log, at `warn`) goes; nowhere when `None`.
    pub log: Option<std::path::PathBuf>,
    /// The bcrypt cost; 4 (the fastest) when `None`.
    pub bcrypt_cost: Option<u32>,
}

/// Another `rosterd` process sharing a [`TestApp`]'s database.
pub struct PeerProcess {
    pub channel: Channel,
    /// Where it listens, to open more connections to it.
    pub uri: String,
    /// Where its Prometheus metrics are served.
    pub metrics_addr: SocketAddr,
    child: tokio::process::Child,
}

impl PeerProcess {
    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Sends it SIGTERM, as an orchestrator stopping it would.
    pub fn terminate(&self) {
        let pid = self.pid().expect("running");
        let status = std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().expect("kill");
        assert!(status.success(), "kill -TERM {pid}");
    }

    /// Kills it with SIGKILL (`kill -9`): no shutdown at all.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill -9");
    }

    /// Waits until it exits, at most `limit`; `None` if it is still running.
    pub async fn wait(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait()).await.ok().map(|status| status.expect("wait"))
    }

    pub fn teams(&self) -> TeamServiceClient<Channel> {
        TeamServiceClient::new(self.channel.clone())
    }

    pub fn billing(&self) -> BillingServiceClient<Channel> {
        BillingServiceClient::new(self.channel.clone())
    }

    pub fn events(&self) -> EventServiceClient<Channel> {
        EventServiceClient::new(self.channel.clone())
    }

    pub fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel.clone())
    }

    pub fn authz(&self) -> AuthorizationServiceClient<Channel> {
        AuthorizationServiceClient::new(self.channel.clone())
    }

    pub fn users(&self) -> UserServiceClient<Channel> {
        UserServiceClient::new(self.channel.clone())
    }

    pub fn roles(&self) -> RoleServiceClient<Channel> {
        RoleServiceClient::new(self.channel.clone())
    }

    pub fn assignments(&self) -> AssignmentServiceClient<Channel> {
        AssignmentServiceClient::new(self.channel.clone())
    }
}

/// The `rosterd` binary next to this test binary (`target/<profile>/rosterd`), brought up to date
/// once per test process: `cargo test` does not rebuild another package's binary, so without this
/// a second process could run yesterday's code next to today's (a no-op build when it is fresh).
pub fn rosterd_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().expect("test binary path");
            let profile_dir = exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>");
            let binary = profile_dir.join(format!("rosterd{}", std::env::consts::EXE_SUFFIX));
            let release = profile_dir.file_name().is_some_and(|name| name == "release");
            let mut build = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            build.args(["build", "--quiet", "-p", "rosterd", "--bin", "rosterd"]);
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success() && binary.exists(), "could not build {}", binary.display());
            binary
        })
        .clone()
}

/// Waits until the server on `channel` answers health checks; `alive` says whether it still runs.
/// False when it stopped before it answered.
async fn wait_until_serving(channel: &Channel, alive: impl Fn() -> bool) -> bool {
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let answer = health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await;
        if answer.is_ok() {
            return true;
        }
        if !alive() {
            return false;
        }
        assert!(tokio::time::Instant::now() < deadline, "rosterd did not start: {answer:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

impl TestApp {
    /// Asks the server to shut down gracefully and waits until it has.
    pub async fn stop(mut self) -> Result<(), rosterd::ServeError> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("server task"),
            None => Ok(()),
        }
    }

    /// Sends the shutdown signal without waiting.
    pub fn signal_shutdown(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
    }

    /// Creates a workspace with the service key; returns it and a logged-in admin.
    /// A new workspace with room for [`TEST_EXTRA_SEATS`] users beyond its first admin.
    pub async fn workspace(&self, slug: &str) -> Workspace {
        let workspace = self.workspace_on_trial(slug).await;
        let request = pb::SetExtraSeatsRequest { workspace_id: workspace.id.clone(), extra_seats: TEST_EXTRA_SEATS };
        self.billing().set_extra_seats(service(request)).await.expect("extra seats");
        workspace
    }

    /// A new workspace as CreateWorkspace leaves it: the Free Trial, its one seat taken by the admin.
    pub async fn workspace_on_trial(&self, slug: &str) -> Workspace {
        let response = self
            .workspaces()
            .create_workspace(service(new_workspace(slug)))
            .await
            .expect("create workspace")
            .into_inner();
        let workspace = response.workspace.expect("workspace");
        let admin = response.admin.expect("admin");
        let admin_token = self.login(slug, &admin.email, PASSWORD).await.expect("admin login");
        Workspace { id: workspace.id.clone(), slug: slug.to_owned(), workspace, admin, admin_token }
    }

    /// Logs in; the session token.
    pub async fn login(&self, slug: &str, email: &str, password: &str) -> Result<String, Status> {
        let response = self
            .auth()
            .login(pb::LoginRequest { workspace_slug: slug.into(), email: email.into(), password: password.into() })
            .await?;
        Ok(response.into_inner().session_token)
    }

    /// Creates a user as `token` (the password is [`PASSWORD`]).
    pub async fn create_user(&self, token: &str, email: &str, role: &str) -> Result<pb::User, Status> {
        let request = pb::CreateUserRequest {
            workspace_id: String::new(),
            email: email.into(),
            full_name: format!("User {email}"),
            password: PASSWORD.into(),
            role: role.into(),
            request_id: String::new(),
        };
        Ok(self.users().create_user(bearer(token, request)).await?.into_inner().user.expect("user"))
    }

    /// The workspace's audit actions, oldest first.
    pub async fn audit_actions(&self, workspace_id: &str) -> Vec<String> {
        let page =
            self.store.list_audit_events(workspace_id, &Default::default(), None, 10_000).await.expect("audit events");
        page.items.into_iter().rev().map(|e| e.action).collect()
    }

    /// What a rejected call must leave untouched: users, outbox rows and audit events of a workspace.
    pub async fn footprint(&self, workspace_id: &str) -> (usize, usize, usize) {
        let users =
            self.store.list_users(workspace_id, &Default::default(), None, 10_000).await.expect("users").items.len();
        let outbox = self.store.outbox_entries(workspace_id).await.expect("outbox").len();
        (users, outbox, self.audit_actions(workspace_id).await.len())
    }
}

/// Holds the outbox table's write lock from a connection of its own until dropped: SQLite's
/// write lock (`BEGIN IMMEDIATE`), PostgreSQL's `EXCLUSIVE` table lock. Reads still work;
/// the server's writes to the outbox wait, then time out.
pub struct OutboxLock {
    txn: Option<sea_orm::DatabaseTransaction>,
    _db: sea_orm::DatabaseConnection,
}

impl OutboxLock {
    pub async fn take(url: &str) -> Self {
        use sea_orm::{SqliteTransactionMode, TransactionOptions, TransactionTrait};
        let db = Database::connect(url).await.expect("connect");
        let options = TransactionOptions {
            sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
            ..Default::default()
        };
        let txn = db.begin_with_options(options).await.expect("begin");
        if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
            txn.execute_unprepared("LOCK TABLE outbox IN EXCLUSIVE MODE").await.expect("lock");
        }
        Self { txn: Some(txn), _db: db }
    }

    pub async fn release(mut self) {
        if let Some(txn) = self.txn.take() {
            txn.rollback().await.expect("rollback");
        }
    }
}

/// A workspace made by [`TestApp::workspace`].
pub struct Workspace {
    pub id: String,
    pub slug: String,
    pub workspace: pb::Workspace,
    pub admin: pb::User,
    pub admin_token: String,
}

/// A CreateWorkspace request: workspace `<slug> Ltd`, admin `admin@<slug>.example` with [`PASSWORD`].
pub fn new_workspace(slug: &str) -> pb::CreateWorkspaceRequest {
    pb::CreateWorkspaceRequest {
        slug: slug.into(),
        name: format!("{slug} Ltd"),
        admin: Some(pb::NewAdmin {
            email: format!("admin@{slug}.example"),
            full_name: "Ada Admin".into(),
            password: PASSWORD.into(),
        }),
        request_id: String::new(),
    }
}

/// A loopback port nobody listens on (yet).
pub fn unused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("address").port()
}

/// A request carrying `authorization: Bearer <secret>`.
pub fn bearer<T>(secret: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {secret}").parse().expect("header value"));
    request
}

/// A request made with the service key.
pub fn service<T>(message: T) -> Request<T> {
    bearer(SERVICE_KEY, message)
}

/// Asserts a status's code and `ErrorInfo` reason (domain `roster`).
#[track_caller]
pub fn assert_status(status: &Status, code: Code, reason: &str) {
    assert_eq!(status.code(), code, "unexpected code: {status:?}");
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.reason, reason, "unexpected reason: {status:?}");
    assert_eq!(info.domain, "roster");
}

/// The fields a status's `BadRequest` names.
pub fn violated_fields(status: &Status) -> Vec<String> {
    status
        .get_error_details()
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default()
}

/// Asserts INVALID_ARGUMENT naming exactly `fields`.
#[track_caller]
pub fn assert_invalid(status: &Status, reason: &str, fields: &[&str]) {
    assert_status(status, Code::InvalidArgument, reason);
    assert_eq!(violated_fields(status), fields, "violations of {status:?}");
}

/// Polls `check` until it returns `Some`, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return Some(value);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `ErrorInfo` reason of a status, if it has one.
pub fn error_reason(status: &Status) -> Option<String> {
    status.get_error_details().error_info().map(|info| info.reason.clone())
}

/// The events of `types` in `workspace_id`, as the service key lists them, once there are at
/// least `count`: on PostgreSQL the feed shows a change only once no older transaction is still
/// running (other tests' among them).
pub async fn events_of(app: &TestApp, workspace_id: &str, types: &[pb::EventType], count: usize) -> Vec<pb::Event> {
    let request = pb::ListEventsRequest {
        workspace_id: workspace_id.into(),
        types: types.iter().map(|t| *t as i32).collect(),
        ..Default::default()
    };
    eventually(Duration::from_secs(10), || {
        let (mut client, request) = (app.events(), service(request.clone()));
        async move {
            let events = client.list_events(request).await.expect("events").into_inner().events;
            (events.len() >= count).then_some(events)
        }
    })
    .await
    .unwrap_or_else(|| panic!("{count} events of {types:?} in the feed within 10 s"))
}
