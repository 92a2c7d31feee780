//! User rows: the record, versioned updates, a new user with their welcome email, and the rules a
//! change of a user checks inside its transaction (no escalation, the last admin).

use crate::entity::user;
use crate::rows::{link, role, workspace};
use crate::{
    Availability, Conflict, Context, Entity, NewUser, Result, StoreError, User, UserStatus, Welcome, audit, classify,
    count, new_id, unique_violation,
};
use roster_authz::Role;
use roster_authz::{BuiltinRole, RoleId};
use roster_billing::check_seat;
use roster_identity::{Email, FullName};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};

pub(crate) fn to_user(row: user::Model) -> Result<User> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("user {}: {what}: {e}", row.id));
    Ok(User {
        email: Email::parse(&row.email).map_err(|e| corrupt("email", &e))?,
        full_name: FullName::parse(&row.full_name).map_err(|e| corrupt("full name", &e))?,
        role: RoleId::parse(&row.role_id).map_err(|e| corrupt("role", &e))?,
        status: UserStatus::from_stored(&row.status)?,
        availability: Availability::from_stored(&row.availability)?,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
        workspace_id: row.workspace_id,
        id: row.id,
    })
}

/// Loads a user of a workspace.
pub(crate) async fn load<C: ConnectionTrait>(conn: &C, workspace_id: &str, user_id: &str) -> Result<user::Model> {
    user::Entity::find_by_id(user_id.to_owned())
        .filter(user::Column::WorkspaceId.eq(workspace_id))
        .one(conn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::User))
}

/// Loads a user of a workspace whom the person acting in `ctx` may act on: no escalation (only
/// admins touch admins; nobody touches a user whose role holds a permission they lack), with
/// both roles read in `txn`.
pub(crate) async fn load_manageable(
    txn: &DatabaseTransaction,
    workspace_id: &str,
    user_id: &str,
    ctx: &Context,
) -> Result<(user::Model, Option<Role>)> {
    let row = load(txn, workspace_id, user_id).await?;
    let actor = role::actor(txn, workspace_id, ctx).await?;
    if let Some(actor) = &actor {
        let target = role::load(txn, workspace_id, &row.role_id).await?;
        role::ensure_manageable(Some(actor), &target.role)?;
    }
    Ok((row, actor))
}

/// Applies `changes` to a user row if its version is still `row.version`, bumping the version.
/// A concurrent change in between is [`Conflict::Busy`]: the call is retried, or, for a call
/// with an etag, reported as a stale etag.
pub(crate) async fn update(
    txn: &DatabaseTransaction,
    row: &user::Model,
    now: i64,
    changes: Vec<(user::Column, sea_orm::Value)>,
) -> Result<()> {
    let mut update = user::Entity::update_many()
        .col_expr(user::Column::Version, Expr::col(user::Column::Version).add(1))
        .col_expr(user::Column::UpdatedAt, Expr::val(now));
    for (column, value) in changes {
        update = update.col_expr(column, Expr::val(value));
    }
    let result = update
        .filter(user::Column::Id.eq(row.id.as_str()))
        .filter(user::Column::Version.eq(row.version))
        .exec(txn)
        .await
        .map_err(role_gone)?;
    if result.rows_affected == 1 { Ok(()) } else { Err(StoreError::Conflict(Conflict::Busy)) }
}

/// A foreign-key failure on a user row's role: the role was deleted after it was checked. A
/// unique one: the email was taken by a user created since it was checked.
pub(crate) fn role_gone(err: sea_orm::DbErr) -> StoreError {
    match err.sql_err() {
        Some(sea_orm::SqlErr::ForeignKeyConstraintViolation(_)) => StoreError::NotFound(Entity::Role),
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => StoreError::Conflict(Conflict::EmailTaken),
        _ => classify(err),
    }
}

/// Inserts a user, their welcome email (or invitation) and the audit event on `txn`. The person acting in `ctx`
/// must hold every grant of the new user's role. The checks come in the order a caller can act
/// on them: the role, the email, then the seat, taken under the workspace's lock so that nothing
/// is written without one. An email taken — or, for a call with a request id, that id used
/// already — is [`Conflict::EmailTaken`]; the caller tells the two apart.
pub(crate) async fn insert(
    txn: &DatabaseTransaction,
    ctx: &Context,
    workspace_id: &str,
    new: NewUser,
    request_id: Option<&str>,
    welcome: &Welcome,
) -> Result<User> {
    let authz_version = role::bump_authz(txn, workspace_id, role::AuthzChange::Members).await?;
    let granted = role::load(txn, workspace_id, new.role.as_str()).await?;
    role::ensure_grantable(role::actor(txn, workspace_id, ctx).await?.as_ref(), &granted.role.grants)?;
    let taken = user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .filter(user::Column::WorkspaceId.eq(workspace_id))
        .filter(user::Column::Email.eq(new.email.as_str()))
        .into_tuple::<String>()
        .one(txn)
        .await
        .map_err(classify)?;
    if taken.is_some() {
        return Err(StoreError::Conflict(Conflict::EmailTaken));
    }
    let (subscription, used) = workspace::lock_seats(txn, workspace_id).await?;
    check_seat(&subscription, used).map_err(|refused| workspace::seat_limit(workspace_id, refused))?;
    let row = user::Model {
        id: new_id(),
        workspace_id: workspace_id.to_owned(),
        email: new.email.as_str().to_owned(),
        full_name: new.full_name.as_str().to_owned(),
        password_hash: match welcome {
            Welcome::Password(hash, _) => hash.as_stored().to_owned(),
            Welcome::Invitation(_) => String::new(),
        },
        role_id: new.role.as_str().to_owned(),
        status: match welcome {
            Welcome::Password(..) => UserStatus::Active,
            Welcome::Invitation(_) => UserStatus::Invited,
        }
        .as_str()
        .to_owned(),
        availability: Availability::Online.as_str().to_owned(),
        version: 1,
        create_request_id: request_id.map(str::to_owned),
        reactivate_request_id: None,
        created_at: ctx.now,
        updated_at: ctx.now,
        open_conversations: 0,
        last_assigned_at: None,
        authz_version,
    };
    if let Err(err) = user::Entity::insert(user::ActiveModel::from(row.clone())).exec_without_returning(txn).await {
        return Err(match unique_violation(&err) {
            Some(_) => StoreError::Conflict(Conflict::EmailTaken),
            None => role_gone(err),
        });
    }
    match welcome {
        Welcome::Password(_, mail) => {
            link::queue_mail(txn, ctx, workspace_id, mail, None).await?;
        }
        Welcome::Invitation(invitation) => link::issue(txn, ctx, workspace_id, &row.id, invitation).await?,
    }
    let details = [
        ("email", new.email.as_str()),
        ("full_name", new.full_name.as_str()),
        ("role", new.role.as_str()),
        ("status", row.status.as_str()),
    ];
    audit::record(txn, workspace_id, ctx, "user.created", &format!("user:{}", row.id), &details).await?;
    to_user(row)
}

/// Refuses a change that takes away the workspace's last active admin (`row` is the target as
/// loaded; `stays_admin` says whether it is still an active admin afterwards). The workspace row
/// is locked first, so two admins removed at the same moment, on any process, are decided one
/// after the other and exactly one admin stays.
pub(crate) async fn guard_last_admin(
    txn: &DatabaseTransaction,
    workspace_id: &str,
    row: &user::Model,
    stays_admin: bool,
) -> Result<()> {
    let is_active_admin = row.status == UserStatus::Active.as_str() && row.role_id == BuiltinRole::Admin.id();
    if !is_active_admin || stays_admin {
        return Ok(());
    }
    workspace::lock(txn, workspace_id).await?;
    let admins = count(
        txn,
        user::Entity::find()
            .filter(user::Column::WorkspaceId.eq(workspace_id))
            .filter(user::Column::Status.eq(UserStatus::Active.as_str()))
            .filter(user::Column::RoleId.eq(BuiltinRole::Admin.id())),
    )
    .await?;
    roster_authz::check_last_admin(u64::try_from(admins).unwrap_or(0), true, false)
        .map_err(|rule| StoreError::Conflict(Conflict::LastAdmin(rule)))
}
