//! Roster's storage: the only crate that knows SQL.
//!
//! The main design choice is that every change is one database transaction that also writes its
//! audit event (and, for new users, the welcome email's outbox row), so a change and its record
//! can never disagree. The same sea-orm code runs on SQLite (the embedded default) and PostgreSQL
//! (production, many `rosterd` processes); the URL's scheme picks the backend. On SQLite, write
//! transactions begin `IMMEDIATE` so that two processes sharing one file queue on the busy timeout
//! instead of failing at their first write.
//!
//! `sea_orm::DbErr` never crosses this crate's boundary: callers see [`StoreError`], whose variants
//! name outcomes (not found, conflict, unavailable), never drivers.
//!
//! The modules form one graph, without cycles: the entities and the audit trail; `rows`, what
//! operations share (loading, locking and converting rows); `routing`, which hands conversations
//! out; and the operations, one module per resource, which use those and never each other.

mod entity;
mod migration;
pub mod model;

mod audit;
mod events;
mod routing;
mod rows;

mod assignments;
mod billing;
mod links;
mod logins;
mod outbox;
mod roles;
mod sessions;
mod teams;
mod users;
mod workspaces;

pub use events::{Cursor as EventCursor, Event, EventFilter, EventPage};
pub use links::LinkSender;
pub use logins::Admission;
pub use model::*;
pub use roles::parse_role_cursor;
pub use routing::Limits;

use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, RuntimeErr,
    SqlErr, SqliteTransactionMode, TransactionOptions, TransactionTrait,
};
use sea_orm_migration::MigratorTrait;
use std::fmt;
use std::time::Duration;

/// What a store operation can come to, besides success.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The addressed record does not exist (in the caller's workspace).
    #[error("{0} not found")]
    NotFound(Entity),
    /// The change collides with the current state.
    #[error("{0}")]
    Conflict(Conflict),
    /// The database cannot be reached or is not writable right now; retrying later may work.
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    /// The database answered with an error no caller input explains: a bug.
    #[error("database error")]
    Database(#[source] DbErr),
    /// The acting person may not make this change: it would give, change or touch grants they do
    /// not hold. Decided inside the transaction, against the rows it changes.
    #[error("{0}")]
    Refused(roster_authz::Escalation),
    /// A stored value does not parse: a bug or a manual edit.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// The kinds of records an operation can fail to find.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entity {
    Workspace,
    User,
    Role,
    Session,
    Team,
    TeamMember,
    Conversation,
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Entity::Workspace => "workspace",
            Entity::User => "user",
            Entity::Role => "role",
            Entity::Session => "session",
            Entity::Team => "team",
            Entity::TeamMember => "team member",
            Entity::Conversation => "conversation",
        })
    }
}

/// Collisions with the current state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    #[error("a workspace with this slug already exists")]
    SlugTaken,
    #[error("a user with this email already exists in the workspace")]
    EmailTaken,
    #[error("the record changed since it was read (current version {current})")]
    StaleVersion { current: i64 },
    #[error("the database was busy with a conflicting transaction; retry")]
    Busy,
    #[error("{0}")]
    LastAdmin(roster_authz::LastAdmin),
    #[error("a role with this name already exists in the workspace")]
    RoleNameTaken,
    #[error("built-in roles cannot be changed or deleted")]
    BuiltinRole,
    #[error("{users} user(s) still hold this role: name a role to move them to")]
    RoleInUse { users: i64 },
    #[error("a team with this name already exists in the workspace")]
    TeamNameTaken,
    #[error("the user is already a member of the team")]
    AlreadyMember,
    #[error("the team still has {open} open conversation(s): resolve or transfer them first")]
    TeamHasOpenConversations { open: i64 },
    #[error("{0}")]
    NotEligible(crate::NotEligible),
    #[error("the conversation is already assigned to someone else: ask for a transfer to move it")]
    AlreadyAssigned,
    #[error("the conversation belongs to another team: ask for a transfer to move it")]
    OtherTeam,
    #[error("the conversation is resolved")]
    Resolved,
    #[error("the conversation is not waiting in the team's queue: it was taken, assigned or resolved")]
    NotQueued,
    #[error("the team's queue is empty")]
    QueueEmpty,
    #[error("the conversation changed hands since the caller's permission was checked; retry the call")]
    Changed,
    /// One more active user does not fit in the workspace's seats.
    #[error("{refused}")]
    SeatLimit { workspace_id: String, refused: roster_billing::SeatLimitReached },
    /// A plan or extra-seat change would leave more active users than seats.
    #[error("{0}")]
    TooManyInUse(roster_billing::TooManyInUse),
    /// Events after the change feed cursor read from were purged (older than the retention).
    #[error(
        "events after this cursor were purged (older than the feed keeps): read the current state again, then \
         follow the feed from the newest cursor"
    )]
    CursorExpired,
    /// A password link used already, replaced by a newer one, voided, or never issued.
    #[error("this link is no longer valid: it was used, replaced by a newer one, or withdrawn; ask for a new one")]
    LinkInvalid,
    #[error("this link has expired; ask for a new one")]
    LinkExpired,
    #[error("the user has chosen a password already: there is no invitation to send")]
    NotInvited,
    #[error("the user has not accepted their invitation yet: send the invitation again instead")]
    UserInvited,
    #[error("the user is deactivated: reactivate them first")]
    UserDeactivated,
    /// A manager's change of a person's credentials made on themselves.
    #[error(
        "a person cannot set their own password or email this way: use ChangePassword for your password; another \
         manager (or support, with a service key) corrects your email"
    )]
    OwnAccount,
}

/// Result of a store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Connection settings.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `sqlite://path` (created when missing) or `postgres://…`.
    pub url: String,
    /// Pool size; SQLite uses at most this many readers and one writer at a time.
    pub max_connections: u32,
    /// How long a call waits for a pooled connection, and for a lock (SQLite's busy timeout,
    /// PostgreSQL's `lock_timeout`), before giving up.
    pub acquire_timeout: Duration,
}

impl StoreConfig {
    /// Defaults for a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self { url: url.into(), max_connections: 16, acquire_timeout: Duration::from_secs(5) }
    }
}

/// The connection pool's use at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolUsage {
    /// Connections open, idle or lent to a call.
    pub open: u32,
    /// Of those, the ones not lent.
    pub idle: u32,
}

/// The most memory SQLite may take in all, across every connection of the process: past it, a
/// connection reuses its page cache's pages instead of growing it. Without it each connection's
/// cache would grow to 2 MB as the database grows, 32 MB for a full pool of 16. (`PRAGMA
/// soft_heap_limit` is process-wide; every connection sets the same value.)
const SQLITE_HEAP_LIMIT: u64 = 8 << 20;

/// How many more times a transaction that lost a race is run ([`Store::retry`]). A loss means
/// another call changed the same rows in between; each new attempt reads them afresh, so a few
/// suffice unless the rows are fought over, and then the caller is told to retry.
const RETRIES: usize = 8;

/// A handle to the database; cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: DatabaseConnection,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store").field("backend", &self.db.get_database_backend()).finish()
    }
}

/// Brings the schema up to date, in one transaction that first takes the database's write lock
/// (SQLite, `BEGIN IMMEDIATE`) or an advisory lock (PostgreSQL): processes started together on a
/// new or older database migrate it once, one after the other, instead of failing on each other's
/// tables; the others then find nothing to do.
async fn migrate(db: &DatabaseConnection) -> Result<()> {
    let options =
        TransactionOptions { sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate), ..Default::default() };
    let txn = db.begin_with_options(options).await.map_err(classify)?;
    if db.get_database_backend() == DbBackend::Postgres {
        txn.execute_unprepared("SELECT pg_advisory_xact_lock(hashtextextended('roster.migrations', 0))")
            .await
            .map_err(classify)?;
    }
    migration::Migrator::up(&txn, None).await.map_err(classify)?;
    txn.commit().await.map_err(classify)
}

impl Store {
    /// Connects (creating a missing SQLite file) and brings the schema up to date. The pool opens
    /// further connections as calls need them; [`Store::open_pool`] opens the rest at once.
    ///
    /// SQLite may answer "database is locked" without waiting while another process is creating
    /// or migrating the same new file (switching it to WAL takes a lock the busy timeout does not
    /// cover): the connection is tried again until the acquire timeout.
    pub async fn connect(config: &StoreConfig) -> Result<Self> {
        let deadline = std::time::Instant::now() + config.acquire_timeout;
        loop {
            match Self::connect_once(config).await {
                Err(StoreError::Unavailable(_))
                    if config.url.starts_with("sqlite") && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                connected => return connected,
            }
        }
    }

    async fn connect_once(config: &StoreConfig) -> Result<Self> {
        let mut options = connect_options(config);
        // A SQLite connection is a file handle and a thread, cheap to keep: once opened it is
        // kept, instead of being closed after 10 idle minutes or 30 in all only to be reopened
        // with empty caches. PostgreSQL's pool keeps sqlx's defaults: its connections cost the
        // database a process each.
        options.map_sqlx_sqlite_pool_opts(|opts| opts.idle_timeout(None).max_lifetime(None));
        let db = Database::connect(options).await.map_err(classify)?;
        migrate(&db).await?;
        Ok(Self { db })
    }

    /// On SQLite, opens the pool's remaining connections, so that a burst never steps the
    /// server's memory up by opening one (about 1 MB each); meant to run in the background after
    /// start. Each connection taken is held until the pool is full, so that the next take opens
    /// another, and all are then lent back. A connection that cannot be opened now is opened when
    /// a call needs it. Nothing on PostgreSQL, whose pool grows on demand.
    ///
    /// (sqlx's own `min_connections` was tried: opened inside `connect`, it must finish within the
    /// acquire timeout or the start fails; opened by sqlx's background task, it ran beside the
    /// migrations, and on a new file a migration failed with "database is locked".)
    pub async fn open_pool(&self) {
        if self.db.get_database_backend() != DbBackend::Sqlite {
            return;
        }
        let pool = self.db.get_sqlite_connection_pool();
        let size = pool.options().get_max_connections();
        let mut held = Vec::new();
        while pool.size() < size {
            match pool.acquire().await {
                Ok(connection) => held.push(connection),
                Err(error) => {
                    tracing::debug!(%error, "could not open the whole SQLite pool now");
                    break;
                }
            }
        }
    }

    /// How many pooled connections are open and how many of those are idle.
    pub fn pool_usage(&self) -> PoolUsage {
        let (open, idle) = match self.db.get_database_backend() {
            DbBackend::Postgres => {
                let pool = self.db.get_postgres_connection_pool();
                (pool.size(), pool.num_idle())
            }
            DbBackend::Sqlite => {
                let pool = self.db.get_sqlite_connection_pool();
                (pool.size(), pool.num_idle())
            }
            _ => (0, 0),
        };
        PoolUsage { open, idle: u32::try_from(idle).unwrap_or(u32::MAX) }
    }

    /// The backend in use, for logs.
    pub fn backend_name(&self) -> &'static str {
        match self.db.get_database_backend() {
            DbBackend::Postgres => "postgresql",
            DbBackend::Sqlite => "sqlite",
            _ => "other",
        }
    }

    /// Checks that the database answers.
    pub async fn ping(&self) -> Result<()> {
        self.db.ping().await.map_err(classify)
    }

    /// Closes the pool, waiting for connections in use.
    pub async fn close(self) -> Result<()> {
        self.db.close().await.map_err(classify)
    }

    /// Runs `attempt` — one transaction, from its first read — again while it reports that a
    /// concurrent change of the same rows won ([`Conflict::Busy`]), at most [`RETRIES`] more times:
    /// the one retry policy of every operation.
    async fn retry<T, F: Future<Output = Result<T>>>(&self, mut attempt: impl FnMut() -> F) -> Result<T> {
        let mut retries = 0;
        loop {
            match attempt().await {
                Err(StoreError::Conflict(Conflict::Busy)) if retries < RETRIES => retries += 1,
                other => return other,
            }
        }
    }

    /// Begins a write transaction: `BEGIN IMMEDIATE` on SQLite, plain `BEGIN` on PostgreSQL.
    /// A write transaction whose events belong to `streams` (see [`events::order`], which it
    /// calls before anything else).
    async fn write_in(&self, streams: &[events::Stream<'_>]) -> Result<DatabaseTransaction> {
        let txn = self.write().await?;
        events::order(&txn, streams).await?;
        Ok(txn)
    }

    async fn write(&self) -> Result<DatabaseTransaction> {
        self.db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..Default::default()
            })
            .await
            .map_err(classify)
    }
}

/// The pool's and every connection's settings.
fn connect_options(config: &StoreConfig) -> ConnectOptions {
    let mut options = ConnectOptions::new(config.url.clone());
    let busy = config.acquire_timeout;
    let lock_timeout = format!("{}ms", busy.as_millis().max(1));
    options
        .max_connections(config.max_connections)
        .acquire_timeout(config.acquire_timeout)
        .connect_timeout(config.acquire_timeout)
        .sqlx_logging(false)
        .map_sqlx_postgres_opts(move |opts| opts.options([("lock_timeout", lock_timeout.as_str())]))
        .map_sqlx_sqlite_before_acquire(|conn, _| Box::pin(sqlite_connection_is_clean(conn)))
        .map_sqlx_sqlite_opts(move |opts| {
            opts.create_if_missing(true)
                .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                .busy_timeout(busy)
                .foreign_keys(true)
                .pragma("soft_heap_limit", SQLITE_HEAP_LIMIT.to_string())
        });
    options
}

/// Whether a pooled SQLite connection may be handed out: not when it still counts a transaction
/// as open. When a statement fails for lack of disk space (or an I/O error), SQLite rolls the
/// whole transaction back by itself; the rollback that follows then fails ("no transaction is
/// active"), and sqlx keeps counting the transaction as open. A connection in that state would
/// run the next transaction as a savepoint that never commits: its writes answered as done, and
/// lost. It is closed instead, and the pool opens a new one.
async fn sqlite_connection_is_clean(
    conn: &mut sea_orm::sqlx::SqliteConnection,
) -> std::result::Result<bool, sea_orm::sqlx::Error> {
    use sqlx_core::transaction::TransactionManager;
    type Manager = <sea_orm::sqlx::Sqlite as sea_orm::sqlx::Database>::TransactionManager;
    if Manager::get_transaction_depth(conn) == 0 {
        return Ok(true);
    }
    // A rollback may still be queued on the connection's worker: wait for it, then look again.
    drop(conn.lock_handle().await?);
    let clean = Manager::get_transaction_depth(conn) == 0;
    if !clean {
        tracing::warn!("closing a SQLite connection left inside a transaction that SQLite had already rolled back");
    }
    Ok(clean)
}

/// Commits, classifying the error.
async fn commit(txn: DatabaseTransaction) -> Result<()> {
    txn.commit().await.map_err(classify)
}

/// Sorts a database error into what the caller can act on.
pub(crate) fn classify(err: DbErr) -> StoreError {
    use sea_orm::sqlx::Error as Sqlx;
    match &err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return StoreError::Unavailable(err),
        DbErr::Exec(RuntimeErr::SqlxError(inner)) | DbErr::Query(RuntimeErr::SqlxError(inner)) => match &**inner {
            Sqlx::Io(_) | Sqlx::PoolTimedOut | Sqlx::PoolClosed | Sqlx::WorkerCrashed | Sqlx::Tls(_) => {
                return StoreError::Unavailable(err);
            }
            Sqlx::Database(db) => {
                let code = db.code().unwrap_or_default();
                match &*code {
                    // PostgreSQL: serialization failure, deadlock, lock timeout. SQLite: BUSY, LOCKED
                    // (and their extended codes).
                    "40001" | "40P01" | "55P03" => return StoreError::Conflict(Conflict::Busy),
                    c if c == "5" || c == "6" || c.parse::<i32>().is_ok_and(|n| n & 0xff == 5 || n & 0xff == 6) => {
                        return StoreError::Conflict(Conflict::Busy);
                    }
                    // SQLite: READONLY, IOERR, CANTOPEN, FULL. PostgreSQL: admin shutdown, cannot connect now.
                    c if c.parse::<i32>().is_ok_and(|n| matches!(n & 0xff, 8 | 10 | 13 | 14)) => {
                        return StoreError::Unavailable(err);
                    }
                    "57P01" | "57P02" | "57P03" | "53300" => return StoreError::Unavailable(err),
                    _ => {}
                }
            }
            _ => {}
        },
        _ => {}
    }
    StoreError::Database(err)
}

/// The unique index a violation hit, by a word its name contains (both backends name the columns
/// or the index in the message).
pub(crate) fn unique_violation(err: &DbErr) -> Option<String> {
    match err.sql_err() {
        Some(SqlErr::UniqueConstraintViolation(message)) => Some(message),
        _ => None,
    }
}

/// Counts the rows `select` matches.
pub(crate) async fn count<C: ConnectionTrait, E: sea_orm::EntityTrait>(
    conn: &C,
    select: sea_orm::Select<E>,
) -> Result<i64>
where
    E::Model: Sync,
{
    use sea_orm::PaginatorTrait;
    let n = select.count(conn).await.map_err(classify)?;
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

/// A fresh opaque id.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

#[cfg(test)]
mod tests {
    /// The names the `use crate::…` statements of `source` bring in, but for entities (some are
    /// named as the operations on them are).
    fn uses(source: &str) -> Vec<&str> {
        source
            .split("use crate::")
            .skip(1)
            .filter_map(|rest| rest.split(';').next())
            .filter(|statement| !statement.starts_with("entity::"))
            .flat_map(|statement| statement.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
            .filter(|word| !word.is_empty())
            .collect()
    }

    /// The store's modules form one graph without cycles (see the crate documentation): an
    /// operation uses `rows` and `routing`, never another operation; `routing` uses `rows`;
    /// `rows` uses neither.
    #[test]
    fn operations_use_rows_and_routing_never_each_other() {
        let operations = [
            ("assignments", include_str!("assignments.rs")),
            ("billing", include_str!("billing.rs")),
            ("links", include_str!("links.rs")),
            ("logins", include_str!("logins.rs")),
            ("outbox", include_str!("outbox.rs")),
            ("roles", include_str!("roles.rs")),
            ("sessions", include_str!("sessions.rs")),
            ("teams", include_str!("teams.rs")),
            ("users", include_str!("users.rs")),
            ("workspaces", include_str!("workspaces.rs")),
        ];
        let names: Vec<&str> = operations.iter().map(|(name, _)| *name).collect();
        for (name, source) in operations {
            for used in uses(source) {
                assert!(!names.contains(&used) || used == name, "{name}.rs uses the operation module {used}");
            }
        }
        let lower = [
            ("routing", include_str!("routing.rs")),
            ("rows/conversation", include_str!("rows/conversation.rs")),
            ("rows/link", include_str!("rows/link.rs")),
            ("rows/role", include_str!("rows/role.rs")),
            ("rows/team", include_str!("rows/team.rs")),
            ("rows/user", include_str!("rows/user.rs")),
            ("rows/workspace", include_str!("rows/workspace.rs")),
        ];
        for (name, source) in lower {
            for used in uses(source) {
                assert!(!names.contains(&used), "{name}.rs uses the operation module {used}");
                assert!(name == "routing" || used != "routing", "{name}.rs uses routing");
            }
        }
    }
}
