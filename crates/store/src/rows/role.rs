//! Role rows, the workspace's authorization version, and the no-escalation rule applied to the
//! rows a transaction changes.
//!
//! Every transaction that changes what a permission check answers — a role's grants, a user's
//! role or status, a new user or role — starts with [`bump_authz`]. That increments the
//! workspace's `authz_version`, against which caches read only what changed (they learn which
//! workspaces to read from the change feed: such a change always writes an event in its workspace's
//! stream), and takes the workspace row's lock, so such changes are serialized per workspace and always lock the
//! workspace before any user or role row (one lock order, no deadlocks).

use crate::entity::{role, user, workspace};
use crate::{Actor, Context, Entity, Result, StoreError, StoredRole, UserStatus, classify};
use roster_authz::RoleId;
use roster_authz::{Grants, Role, RoleKind};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};

pub(crate) fn to_role(row: role::Model) -> Result<StoredRole> {
    let grants =
        Grants::parse(&row.grants).map_err(|e| StoreError::Corrupt(format!("role {}: grants: {e}", row.id)))?;
    let kind = match RoleId::parse(&row.id).ok().and_then(|id| id.builtin()) {
        Some(builtin) if row.builtin => RoleKind::Builtin(builtin),
        _ if row.builtin => return Err(StoreError::Corrupt(format!("role {}: not a built-in id", row.id))),
        _ => RoleKind::Custom,
    };
    Ok(StoredRole {
        role: Role { id: row.id, name: row.name, kind, grants },
        workspace_id: row.workspace_id,
        description: row.description,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// What a transaction changes of a workspace's authorization data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AuthzChange {
    /// A user's role or status, or a new user: the transaction stamps each user row it changes
    /// with the returned version (`users.authz_version`).
    Members,
    /// A role: created, changed or deleted. Readers reload every role.
    Roles,
}

/// Records that the workspace's authorization data changes in this transaction (see the module
/// documentation) and returns its new `authz_version`. Call it before writing any user or role row.
pub(crate) async fn bump_authz(txn: &DatabaseTransaction, workspace_id: &str, change: AuthzChange) -> Result<i64> {
    let next = Expr::col(workspace::Column::AuthzVersion).add(1);
    let mut update = workspace::Entity::update_many().col_expr(workspace::Column::AuthzVersion, next.clone());
    if change == AuthzChange::Roles {
        update = update.col_expr(workspace::Column::RolesVersion, next);
    }
    let result = update.filter(workspace::Column::Id.eq(workspace_id)).exec(txn).await.map_err(classify)?;
    if result.rows_affected != 1 {
        return Err(StoreError::NotFound(Entity::Workspace));
    }
    workspace::Entity::find_by_id(workspace_id.to_owned())
        .select_only()
        .column(workspace::Column::AuthzVersion)
        .into_tuple::<i64>()
        .one(txn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::Workspace))
}

/// The roles a workspace can use: the built-in ones and its own.
pub(crate) fn visible_in(workspace_id: &str) -> Condition {
    Condition::any().add(role::Column::WorkspaceId.is_null()).add(role::Column::WorkspaceId.eq(workspace_id))
}

/// Loads a role a workspace can use.
pub(crate) async fn load<C: ConnectionTrait>(conn: &C, workspace_id: &str, role_id: &str) -> Result<StoredRole> {
    let row = role::Entity::find_by_id(role_id.to_owned())
        .filter(visible_in(workspace_id))
        .one(conn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::Role))?;
    to_role(row)
}

/// The role of the person acting in `ctx` as `conn` reads it now, `None` for a service key. A
/// transaction that changes grants or the users holding them reads it here, under the workspace's
/// lock, so that a role that just lost a permission cannot still give it. A person deactivated
/// since their call was authenticated holds nothing.
pub(crate) async fn actor<C: ConnectionTrait>(conn: &C, workspace_id: &str, ctx: &Context) -> Result<Option<Role>> {
    let Actor::User(user_id) = &ctx.actor else { return Ok(None) };
    let (role_id, status): (String, String) = user::Entity::find_by_id(user_id.clone())
        .select_only()
        .column(user::Column::RoleId)
        .column(user::Column::Status)
        .filter(user::Column::WorkspaceId.eq(workspace_id))
        .into_tuple()
        .one(conn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::User))?;
    if UserStatus::from_stored(&status)? != UserStatus::Active {
        return Ok(Some(Role::missing(&role_id)));
    }
    match load(conn, workspace_id, &role_id).await {
        Ok(stored) => Ok(Some(stored.role)),
        Err(StoreError::NotFound(Entity::Role)) => Ok(Some(Role::missing(&role_id))),
        Err(err) => Err(err),
    }
}

/// The no-escalation rule for giving `grants`: `actor` is the acting person's role, `None` for a
/// service key.
pub(crate) fn ensure_grantable(actor: Option<&Role>, grants: &Grants) -> Result<()> {
    match actor {
        Some(actor) => roster_authz::check_grantable(actor, grants).map_err(StoreError::Refused),
        None => Ok(()),
    }
}

/// The no-escalation rule for acting on a user who holds `target`.
pub(crate) fn ensure_manageable(actor: Option<&Role>, target: &Role) -> Result<()> {
    match actor {
        Some(actor) => roster_authz::check_manageable(actor, target).map_err(StoreError::Refused),
        None => Ok(()),
    }
}
