//! The schema, as additive migrations that run at start-up on SQLite and PostgreSQL alike.
//!
//! Enumerations are stored as upper-case text, timestamps as milliseconds since the Unix epoch,
//! ids as text: the same representation on both backends, and nothing SQLite would have to alter.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

/// Runs every migration in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(Foundation),
            Box::new(Authorization),
            Box::new(Assignment),
            Box::new(AssignmentOrder),
            Box::new(AuthzChanges),
            Box::new(LoginThrottling),
            Box::new(ReactivationKeys),
            Box::new(ChangeFeed),
            Box::new(TakingQueuedWork),
            Box::new(PasswordLinkTable),
            Box::new(SessionExpiry),
        ]
    }
}

#[derive(DeriveIden)]
enum Workspaces {
    Table,
    Id,
    Slug,
    Name,
    Plan,
    ExtraSeats,
    CreateRequestId,
    CreatedAt,
    AuthzVersion,
    MaxOpenConversations,
    RolesVersion,
}

#[derive(DeriveIden)]
enum Roles {
    Table,
    Id,
    WorkspaceId,
    Name,
    Builtin,
    Grants,
    Version,
    CreatedAt,
    Description,
    NameKey,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
    WorkspaceId,
    Email,
    FullName,
    PasswordHash,
    RoleId,
    Status,
    Availability,
    Version,
    CreateRequestId,
    CreatedAt,
    UpdatedAt,
    OpenConversations,
    LastAssignedAt,
    AuthzVersion,
    ReactivateRequestId,
}

#[derive(DeriveIden)]
enum Teams {
    Table,
    Id,
    WorkspaceId,
    Name,
    NameKey,
    Strategy,
    LastPosition,
    NextPosition,
    Version,
    CreatedAt,
    UpdatedAt,
    Assignments,
}

#[derive(DeriveIden)]
enum TeamMembers {
    Table,
    TeamId,
    UserId,
    WorkspaceId,
    Position,
    MaxOpen,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Conversations {
    Table,
    WorkspaceId,
    Id,
    TeamId,
    AssigneeId,
    Status,
    Reason,
    QueuedAt,
    AssignedAt,
    ResolvedAt,
    Version,
    CreatedAt,
    UpdatedAt,
    Sequence,
}

#[derive(DeriveIden)]
enum Sessions {
    Table,
    TokenHash,
    UserId,
    WorkspaceId,
    CreatedAt,
    ExpiresAt,
}

#[derive(DeriveIden)]
enum Outbox {
    Table,
    Id,
    WorkspaceId,
    Recipient,
    Subject,
    Body,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseUntil,
    LastError,
    CreatedAt,
    SentAt,
    Link,
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    WorkspaceId,
    Actor,
    Action,
    Target,
    RequestId,
    Details,
    CreatedAt,
}

struct Foundation;

impl MigrationName for Foundation {
    fn name(&self) -> &str {
        "m0001_foundation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Foundation {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Workspaces::Table)
                    .col(string(Workspaces::Id).primary_key())
                    .col(string_uniq(Workspaces::Slug))
                    .col(string(Workspaces::Name))
                    .col(string(Workspaces::Plan))
                    .col(integer(Workspaces::ExtraSeats))
                    .col(string_null(Workspaces::CreateRequestId).unique_key())
                    .col(big_integer(Workspaces::CreatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Roles::Table)
                    .col(string(Roles::Id).primary_key())
                    .col(string_null(Roles::WorkspaceId))
                    .col(string(Roles::Name))
                    .col(boolean(Roles::Builtin))
                    .col(text(Roles::Grants))
                    .col(big_integer(Roles::Version))
                    .col(big_integer(Roles::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Roles::Table, Roles::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("roles_workspace_name")
                    .table(Roles::Table)
                    .col(Roles::WorkspaceId)
                    .col(Roles::Name)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // The built-in roles are rows like any custom role, shared by every workspace, so that a
        // user's role is always a foreign key and custom roles (the Authorization issue) join them.
        let mut seed = Query::insert()
            .into_table(Roles::Table)
            .columns([
                Roles::Id,
                Roles::WorkspaceId,
                Roles::Name,
                Roles::Builtin,
                Roles::Grants,
                Roles::Version,
                Roles::CreatedAt,
            ])
            .to_owned();
        for (id, name, grants) in [
            ("admin", "Admin", "*"),
            (
                "supervisor",
                "Supervisor",
                "conversations.read:ALL conversations.reply:ALL conversations.assign:ALL contacts.read:ALL contacts.write:ALL templates.read analytics.read users.read users.manage teams.manage",
            ),
            (
                "agent",
                "Agent",
                "conversations.read:ASSIGNED conversations.reply:ASSIGNED contacts.read:ASSIGNED templates.read",
            ),
        ] {
            seed.values_panic([
                id.into(),
                Option::<String>::None.into(),
                name.into(),
                true.into(),
                grants.into(),
                1i64.into(),
                0i64.into(),
            ]);
        }
        manager.exec_stmt(seed).await?;

        manager
            .create_table(
                Table::create()
                    .table(Users::Table)
                    .col(string(Users::Id).primary_key())
                    .col(string(Users::WorkspaceId))
                    .col(string(Users::Email))
                    .col(string(Users::FullName))
                    .col(string(Users::PasswordHash))
                    .col(string(Users::RoleId))
                    .col(string(Users::Status))
                    .col(string(Users::Availability))
                    .col(big_integer(Users::Version))
                    .col(string_null(Users::CreateRequestId))
                    .col(big_integer(Users::CreatedAt))
                    .col(big_integer(Users::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Users::Table, Users::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id),
                    )
                    .foreign_key(ForeignKey::create().from(Users::Table, Users::RoleId).to(Roles::Table, Roles::Id))
                    .to_owned(),
            )
            .await?;
        for (name, cols, unique) in [
            ("users_workspace_email", vec![Users::WorkspaceId, Users::Email], true),
            ("users_workspace_request", vec![Users::WorkspaceId, Users::CreateRequestId], true),
            ("users_workspace_status", vec![Users::WorkspaceId, Users::Status], false),
            ("users_role", vec![Users::RoleId], false),
        ] {
            let mut index = Index::create().name(name).table(Users::Table).to_owned();
            for col in cols {
                index.col(col);
            }
            if unique {
                index.unique();
            }
            manager.create_index(index).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Sessions::Table)
                    .col(string(Sessions::TokenHash).primary_key())
                    .col(string(Sessions::UserId))
                    .col(string(Sessions::WorkspaceId))
                    .col(big_integer(Sessions::CreatedAt))
                    .col(big_integer(Sessions::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create().from(Sessions::Table, Sessions::UserId).to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(Index::create().name("sessions_user").table(Sessions::Table).col(Sessions::UserId).to_owned())
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(string(Outbox::Id).primary_key())
                    .col(string(Outbox::WorkspaceId))
                    .col(string(Outbox::Recipient))
                    .col(string(Outbox::Subject))
                    .col(text(Outbox::Body))
                    .col(string(Outbox::Status))
                    .col(integer(Outbox::Attempts))
                    .col(big_integer(Outbox::NextAttemptAt))
                    .col(big_integer(Outbox::LeaseUntil))
                    .col(text_null(Outbox::LastError))
                    .col(big_integer(Outbox::CreatedAt))
                    .col(big_integer_null(Outbox::SentAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("outbox_due")
                    .table(Outbox::Table)
                    .col(Outbox::Status)
                    .col(Outbox::NextAttemptAt)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(big_pk_auto(AuditEvents::Id))
                    .col(string(AuditEvents::WorkspaceId))
                    .col(string(AuditEvents::Actor))
                    .col(string(AuditEvents::Action))
                    .col(string(AuditEvents::Target))
                    .col(string(AuditEvents::RequestId))
                    .col(text(AuditEvents::Details))
                    .col(big_integer(AuditEvents::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("audit_workspace_id")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::WorkspaceId)
                    .col(AuditEvents::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}

/// Custom roles and the authorization cache's version stamp.
struct Authorization;

impl MigrationName for Authorization {
    fn name(&self) -> &str {
        "m0002_authorization"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Authorization {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Bumped by every transaction that changes what a check of the workspace answers (a role's
        // grants, a user's role or status, a new user or role). Processes compare it with the
        // version of their in-memory copy to know when to reload.
        manager
            .alter_table(
                Table::alter()
                    .table(Workspaces::Table)
                    .add_column(big_integer(Workspaces::AuthzVersion).default(0))
                    .to_owned(),
            )
            .await?;
        // SQLite adds one column per ALTER TABLE.
        for column in [
            text(Roles::Description).default(""),
            string(Roles::NameKey).default(""),
            big_integer(Roles::UpdatedAt).default(0),
        ] {
            manager.alter_table(Table::alter().table(Roles::Table).add_column(column).to_owned()).await?;
        }
        manager
            .exec_stmt(
                Query::update()
                    .table(Roles::Table)
                    .value(Roles::NameKey, Func::lower(Expr::col(Roles::Name)))
                    .to_owned(),
            )
            .await?;
        // Names are unique per workspace regardless of case.
        manager
            .create_index(
                Index::create()
                    .name("roles_workspace_name_key")
                    .table(Roles::Table)
                    .col(Roles::WorkspaceId)
                    .col(Roles::NameKey)
                    .unique()
                    .to_owned(),
            )
            .await
    }
}

/// Teams, their members and conversation assignments.
struct Assignment;

impl MigrationName for Assignment {
    fn name(&self) -> &str {
        "m0003_assignment"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Assignment {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The workspace default of how many open conversations an agent takes (0 = unlimited).
        manager
            .alter_table(
                Table::alter()
                    .table(Workspaces::Table)
                    .add_column(integer(Workspaces::MaxOpenConversations).default(0))
                    .to_owned(),
            )
            .await?;
        // An agent's load, kept in the same transactions that open, move and close their
        // conversations, so that the capacity check is one conditional update of this row (no
        // count over conversations) and holds across processes.
        for column in [integer(Users::OpenConversations).default(0).to_owned(), big_integer_null(Users::LastAssignedAt)]
        {
            manager.alter_table(Table::alter().table(Users::Table).add_column(column).to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Teams::Table)
                    .col(string(Teams::Id).primary_key())
                    .col(string(Teams::WorkspaceId))
                    .col(string(Teams::Name))
                    .col(string(Teams::NameKey))
                    .col(string(Teams::Strategy))
                    // Round robin's turn: the position of the member it served last.
                    .col(big_integer_null(Teams::LastPosition))
                    // The position the next member added gets; positions only grow.
                    .col(big_integer(Teams::NextPosition))
                    .col(big_integer(Teams::Version))
                    .col(big_integer(Teams::CreatedAt))
                    .col(big_integer(Teams::UpdatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Teams::Table, Teams::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("teams_workspace_name_key")
                    .table(Teams::Table)
                    .col(Teams::WorkspaceId)
                    .col(Teams::NameKey)
                    .unique()
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(TeamMembers::Table)
                    .col(string(TeamMembers::TeamId))
                    .col(string(TeamMembers::UserId))
                    .col(string(TeamMembers::WorkspaceId))
                    .col(big_integer(TeamMembers::Position))
                    .col(integer_null(TeamMembers::MaxOpen))
                    .col(big_integer(TeamMembers::CreatedAt))
                    .primary_key(Index::create().col(TeamMembers::TeamId).col(TeamMembers::UserId))
                    .foreign_key(
                        ForeignKey::create().from(TeamMembers::Table, TeamMembers::TeamId).to(Teams::Table, Teams::Id),
                    )
                    .foreign_key(
                        ForeignKey::create().from(TeamMembers::Table, TeamMembers::UserId).to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create().name("team_members_user").table(TeamMembers::Table).col(TeamMembers::UserId).to_owned(),
            )
            .await?;

        // A conversation's team is not a foreign key: resolved conversations outlive a deleted team.
        manager
            .create_table(
                Table::create()
                    .table(Conversations::Table)
                    .col(string(Conversations::WorkspaceId))
                    .col(string(Conversations::Id))
                    .col(string(Conversations::TeamId))
                    .col(string_null(Conversations::AssigneeId))
                    .col(string(Conversations::Status))
                    .col(text(Conversations::Reason))
                    .col(big_integer(Conversations::QueuedAt))
                    .col(big_integer_null(Conversations::AssignedAt))
                    .col(big_integer_null(Conversations::ResolvedAt))
                    .col(big_integer(Conversations::Version))
                    .col(big_integer(Conversations::CreatedAt))
                    .col(big_integer(Conversations::UpdatedAt))
                    .primary_key(Index::create().col(Conversations::WorkspaceId).col(Conversations::Id))
                    .foreign_key(
                        ForeignKey::create()
                            .from(Conversations::Table, Conversations::WorkspaceId)
                            .to(Workspaces::Table, Workspaces::Id),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(Conversations::Table, Conversations::AssigneeId)
                            .to(Users::Table, Users::Id),
                    )
                    .to_owned(),
            )
            .await?;
        // The queues, by workspace and team, oldest first: a partial index of the queued
        // conversations only, so that finding the next one (or that there is none, or which teams
        // have one) costs the same with 100 or 100,000 open conversations assigned, whatever the
        // planner's statistics say.
        manager
            .create_index(
                Index::create()
                    .name("conversations_queue")
                    .table(Conversations::Table)
                    .col(Conversations::WorkspaceId)
                    .col(Conversations::TeamId)
                    .col(Conversations::QueuedAt)
                    .col(Conversations::Id)
                    .and_where(Expr::col(Conversations::Status).eq("OPEN"))
                    .and_where(Expr::col(Conversations::AssigneeId).is_null())
                    .to_owned(),
            )
            .await?;
        for (name, cols) in [
            // A team's conversations by status and id.
            ("conversations_team_status_id", vec![Conversations::TeamId, Conversations::Status, Conversations::Id]),
            // An agent's conversations by status and id (listing, deactivation).
            ("conversations_assignee", vec![Conversations::AssigneeId, Conversations::Status, Conversations::Id]),
            // The workspace's queued or resolved conversations by id.
            (
                "conversations_workspace_status",
                vec![Conversations::WorkspaceId, Conversations::Status, Conversations::AssigneeId, Conversations::Id],
            ),
        ] {
            let mut index = Index::create().name(name).table(Conversations::Table).to_owned();
            for col in cols {
                index.col(col);
            }
            manager.create_index(index).await?;
        }
        Ok(())
    }
}

/// Numbers each team's assignments in the order they were made.
struct AssignmentOrder;

impl MigrationName for AssignmentOrder {
    fn name(&self) -> &str {
        "m0004_assignment_order"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AssignmentOrder {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // How many conversations the team has given to agents: counted under the team's row lock,
        // so its assignments are numbered 1, 2, 3, ... in the order its picks were made, whichever
        // process made them.
        manager
            .alter_table(
                Table::alter().table(Teams::Table).add_column(big_integer(Teams::Assignments).default(0)).to_owned(),
            )
            .await?;
        // The current assignment's number in its team's order; none while queued.
        manager
            .alter_table(
                Table::alter()
                    .table(Conversations::Table)
                    .add_column(big_integer_null(Conversations::Sequence))
                    .to_owned(),
            )
            .await
    }
}

/// What lets the authorization cache read only what changed since its copy: the version at which
/// each user's role or status last changed, and the version of the last change to the workspace's
/// roles.
struct AuthzChanges;

impl MigrationName for AuthzChanges {
    fn name(&self) -> &str {
        "m0005_authz_changes"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for AuthzChanges {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Workspaces::Table)
                    .add_column(big_integer(Workspaces::RolesVersion).default(0))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter().table(Users::Table).add_column(big_integer(Users::AuthzVersion).default(0)).to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("users_workspace_authz_version")
                    .table(Users::Table)
                    .col(Users::WorkspaceId)
                    .col(Users::AuthzVersion)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum LoginAttempts {
    Table,
    Id,
    Key,
    StartedAt,
    FailedAt,
}

#[derive(DeriveIden)]
enum LoginKeys {
    Table,
    Key,
    UsedAt,
}

/// Login attempts, shared by every process so that the throttling limits hold for all of them, and
/// a row per key that attempts lock to be counted one at a time.
struct LoginThrottling;

impl MigrationName for LoginThrottling {
    fn name(&self) -> &str {
        "m0006_login_attempts"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for LoginThrottling {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(LoginAttempts::Table)
                    .col(string(LoginAttempts::Id).primary_key())
                    .col(string(LoginAttempts::Key))
                    .col(big_integer(LoginAttempts::StartedAt))
                    .col(big_integer_null(LoginAttempts::FailedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(LoginKeys::Table)
                    .col(string(LoginKeys::Key).primary_key())
                    .col(big_integer(LoginKeys::UsedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("login_attempts_key")
                    .table(LoginAttempts::Table)
                    .col(LoginAttempts::Key)
                    .col(LoginAttempts::StartedAt)
                    .to_owned(),
            )
            .await
    }
}

/// The idempotency key of each user's last reactivation, so that a retried ReactivateUser does not
/// undo a deactivation made after the first call.
struct ReactivationKeys;

impl MigrationName for ReactivationKeys {
    fn name(&self) -> &str {
        "m0007_reactivation_keys"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ReactivationKeys {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(Users::Table).add_column(string_null(Users::ReactivateRequestId)).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum EventPurges {
    Table,
    Id,
    Txid,
    EventId,
}

#[derive(DeriveIden)]
enum Events {
    Table,
    Id,
    Txid,
    WorkspaceId,
    EventType,
    Actor,
    RequestId,
    Target,
    Details,
    CreatedAt,
}

/// The change feed: an event per change, in the change's transaction. Read in the order of
/// `(txid, id)`: the writing transaction's id (PostgreSQL's; 0 on SQLite, whose writers commit
/// one at a time in id order), then the row's.
struct ChangeFeed;

impl MigrationName for ChangeFeed {
    fn name(&self) -> &str {
        "m0008_change_feed"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for ChangeFeed {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Events::Table)
                    .col(big_pk_auto(Events::Id))
                    .col(big_integer(Events::Txid))
                    .col(string(Events::WorkspaceId))
                    .col(string(Events::EventType))
                    .col(string(Events::Actor))
                    .col(string(Events::RequestId))
                    .col(string(Events::Target))
                    .col(text(Events::Details))
                    .col(big_integer(Events::CreatedAt))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("events_order", vec![Events::Txid, Events::Id]),
            ("events_workspace_order", vec![Events::WorkspaceId, Events::Txid, Events::Id]),
            ("events_created_at", vec![Events::CreatedAt]),
        ] {
            let mut index = Index::create().name(name).table(Events::Table).to_owned();
            for column in columns {
                index.col(column);
            }
            manager.create_index(index).await?;
        }
        // The newest position retention has purged: a cursor below it may have missed events.
        manager
            .create_table(
                Table::create()
                    .table(EventPurges::Table)
                    .col(integer(EventPurges::Id).primary_key())
                    .col(big_integer(EventPurges::Txid))
                    .col(big_integer(EventPurges::EventId))
                    .to_owned(),
            )
            .await?;
        let none = Query::insert()
            .into_table(EventPurges::Table)
            .columns([EventPurges::Id, EventPurges::Txid, EventPurges::EventId])
            .values_panic([1.into(), 0.into(), 0.into()])
            .to_owned();
        manager.exec_stmt(none).await
    }
}

/// The catalog's `conversations.take`, held by the built-in Supervisor and Agent roles: their
/// seeded rows get it. So do the custom roles that manage people or route work (`users.manage`,
/// `conversations.assign`): without it they could no longer create or manage Agents, who now hold
/// it (the no-escalation rule). Other custom roles get it when an admin grants it.
struct TakingQueuedWork;

impl MigrationName for TakingQueuedWork {
    fn name(&self) -> &str {
        "m0009_taking_queued_work"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for TakingQueuedWork {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for (id, grants) in [
            (
                "supervisor",
                "conversations.read:ALL conversations.reply:ALL conversations.assign:ALL conversations.take contacts.read:ALL contacts.write:ALL templates.read analytics.read users.read users.manage teams.manage",
            ),
            (
                "agent",
                "conversations.read:ASSIGNED conversations.reply:ASSIGNED conversations.take contacts.read:ASSIGNED templates.read",
            ),
        ] {
            let update = Query::update()
                .table(Roles::Table)
                .value(Roles::Grants, grants)
                .and_where(Expr::col(Roles::Id).eq(id))
                .and_where(Expr::col(Roles::Builtin).eq(true))
                .to_owned();
            manager.exec_stmt(update).await?;
        }
        let managers = Query::update()
            .table(Roles::Table)
            .value(Roles::Grants, Expr::cust("grants || ' conversations.take'"))
            .and_where(Expr::col(Roles::Builtin).eq(false))
            .and_where(
                Expr::col(Roles::Grants)
                    .like("%users.manage%")
                    .or(Expr::col(Roles::Grants).like("%conversations.assign%")),
            )
            .and_where(Expr::col(Roles::Grants).not_like("%conversations.take%"))
            .to_owned();
        manager.exec_stmt(managers).await
    }
}

#[derive(DeriveIden)]
enum PasswordLinks {
    Table,
    TokenHash,
    UserId,
    WorkspaceId,
    Purpose,
    OutboxId,
    CreatedAt,
    ExpiresAt,
}

/// Single-use password links (invitations and resets), stored as their token's hash, at most one
/// pending per user. The email carrying a link holds it in `outbox.link`, apart from the body,
/// only until it is sent. An invited user's `password_hash` is empty.
struct PasswordLinkTable;

impl MigrationName for PasswordLinkTable {
    fn name(&self) -> &str {
        "m0010_password_links"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for PasswordLinkTable {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PasswordLinks::Table)
                    .col(string(PasswordLinks::TokenHash).primary_key())
                    .col(string(PasswordLinks::UserId))
                    .col(string(PasswordLinks::WorkspaceId))
                    .col(string(PasswordLinks::Purpose))
                    .col(string(PasswordLinks::OutboxId))
                    .col(big_integer(PasswordLinks::CreatedAt))
                    .col(big_integer(PasswordLinks::ExpiresAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(PasswordLinks::Table, PasswordLinks::UserId)
                            .to(Users::Table, Users::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("password_links_user")
                    .table(PasswordLinks::Table)
                    .col(PasswordLinks::UserId)
                    .unique()
                    .to_owned(),
            )
            .await?;
        manager.alter_table(Table::alter().table(Outbox::Table).add_column(text_null(Outbox::Link)).to_owned()).await
    }
}

/// Expired sessions by their expiry, so that their purge every ten minutes reads the sessions it
/// deletes rather than every session of every workspace.
struct SessionExpiry;

impl MigrationName for SessionExpiry {
    fn name(&self) -> &str {
        "m0011_session_expiry"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for SessionExpiry {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_index(
                Index::create().name("sessions_expires_at").table(Sessions::Table).col(Sessions::ExpiresAt).to_owned(),
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roster_authz::{Grants, Permission};
    use sea_orm::{ConnectionTrait, Database, Statement};

    async fn grants_of(db: &sea_orm::DatabaseConnection, id: &str) -> Grants {
        let sql = format!("SELECT grants FROM roles WHERE id = '{id}'");
        let row = db.query_one_raw(Statement::from_string(db.get_database_backend(), sql)).await.expect("read");
        Grants::parse(&row.expect("the role").try_get::<String>("", "grants").expect("grants")).expect("parses")
    }

    /// Custom roles that manage people or route work keep managing Agents, who now hold
    /// `conversations.take`; other custom roles are left as their admins made them.
    #[tokio::test]
    async fn taking_queued_work_is_granted_to_the_built_in_roles_and_to_managing_custom_roles() {
        let db = Database::connect("sqlite::memory:").await.expect("sqlite");
        Migrator::up(&db, Some(8)).await.expect("up to the change feed");
        db.execute_unprepared(
            "INSERT INTO workspaces (id, slug, name, plan, extra_seats, created_at, authz_version, \
             max_open_conversations, roles_version) VALUES ('w', 'w', 'W', 'GROWTH', 0, 0, 0, 0, 0)",
        )
        .await
        .expect("a workspace");
        for (id, grants) in [
            ("lead", "conversations.read:ASSIGNED users.read users.manage"),
            ("router", "conversations.assign:ALL"),
            ("sales", "contacts.read:ALL templates.read"),
        ] {
            db.execute_unprepared(&format!(
                "INSERT INTO roles (id, workspace_id, name, builtin, grants, version, created_at, description, name_key) \
                 VALUES ('{id}', 'w', '{id}', false, '{grants}', 1, 0, '', '{id}')"
            ))
            .await
            .expect("a custom role");
        }
        Migrator::up(&db, None).await.expect("the rest");
        let takes = |grants: &Grants| grants.scope_of(Permission::ConversationsTake).is_some();
        for id in ["agent", "supervisor", "lead", "router"] {
            assert!(takes(&grants_of(&db, id).await), "{id}");
        }
        assert!(!takes(&grants_of(&db, "sales").await));
        assert!(grants_of(&db, "lead").await.scope_of(Permission::UsersManage).is_some(), "nothing else changed");
    }
}
