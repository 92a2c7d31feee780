//! Roles: the built-in rows, custom roles, and what the authorization cache reads.
//!
//! Every change starts with `rows::role::bump_authz` (see there) and checks the no-escalation
//! rule with the acting person's role as the transaction reads it.

use crate::entity::{role, user, workspace};
use crate::events::Stream;
use crate::rows::role::{AuthzChange, actor, bump_authz, ensure_grantable, load, to_role, visible_in};
use crate::{
    AuthzChanges, Changed, Conflict, Context, Effects, Entity, Member, NewRole, Page, Result, RoleChanges, Store,
    StoreError, StoredRole, UserStatus, audit, classify, commit, new_id, unique_violation,
};
use roster_authz::{BuiltinRole, RoleId};
use roster_authz::{Role, RoleKind};
use sea_orm::sea_query::{Condition, Expr, ExprTrait, JoinType, Query};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

/// What a change of roles does besides its answer: checks answer differently.
const ROLES_CHANGED: Effects = Effects { permissions: true, room: false, mail: false };

/// What changing or deleting `role` requires: a custom role, at `expected_version` when one is
/// given, whose every grant `actor` holds.
fn ensure_editable(role: &StoredRole, expected_version: Option<i64>, actor: Option<&Role>) -> Result<()> {
    if role.workspace_id.is_none() {
        return Err(StoreError::Conflict(Conflict::BuiltinRole));
    }
    if let Some(expected) = expected_version
        && expected != role.version
    {
        return Err(StoreError::Conflict(Conflict::StaleVersion { current: role.version }));
    }
    ensure_grantable(actor, &role.role.grants)
}

fn name_taken(err: sea_orm::DbErr) -> StoreError {
    match unique_violation(&err) {
        Some(_) => StoreError::Conflict(Conflict::RoleNameTaken),
        None => classify(err),
    }
}

/// A role's place in listings: the built-in roles in their fixed order, then custom roles.
fn rank(role: &StoredRole) -> u8 {
    match role.role.kind {
        RoleKind::Builtin(BuiltinRole::Admin) => 0,
        RoleKind::Builtin(BuiltinRole::Supervisor) => 1,
        RoleKind::Builtin(BuiltinRole::Agent) => 2,
        RoleKind::Custom => CUSTOM_RANK,
    }
}

/// Where custom roles stand in a listing: after every built-in role.
const CUSTOM_RANK: u8 = 3;

/// The position a role listing's cursor (`<rank>:<name key>`) names, if it is one.
pub fn parse_role_cursor(cursor: &str) -> Option<(u8, &str)> {
    let (rank, key) = cursor.split_once(':')?;
    let rank = rank.parse::<u8>().ok().filter(|r| *r <= CUSTOM_RANK && rank.len() == 1)?;
    Some((rank, key))
}

impl Store {
    /// A page of the roles of a workspace: the built-in roles first in their fixed order (Admin,
    /// Supervisor, Agent), then custom roles by name; after the role a previous page's `next`
    /// names ([`parse_role_cursor`]), at most `limit`. `builtin` keeps only the built-in
    /// (`true`) or only the custom (`false`) roles.
    pub async fn list_roles(
        &self,
        workspace_id: &str,
        builtin: Option<bool>,
        after: Option<(u8, &str)>,
        limit: u64,
    ) -> Result<Page<StoredRole>> {
        let wanted = limit + 1;
        // Each role with its position: rank, and the name key as stored (lower-cased, without
        // invisible characters; unique in a workspace, and no custom role takes a built-in name).
        let with_position = |row: role::Model| -> Result<(u8, String, StoredRole)> {
            let key = row.name_key.clone();
            let role = to_role(row)?;
            Ok((rank(&role), key, role))
        };
        let mut items = Vec::new();
        // The built-in rows are read only for a page that can hold one: not past the last of them.
        if builtin != Some(false) && after.is_none_or(|(rank, _)| rank < CUSTOM_RANK) {
            let rows = role::Entity::find()
                .filter(role::Column::WorkspaceId.is_null())
                .all(&self.db)
                .await
                .map_err(classify)?;
            let mut builtins = rows.into_iter().map(with_position).collect::<Result<Vec<_>>>()?;
            builtins.sort_by_key(|(rank, ..)| *rank);
            let past = |(rank, key, _): &(u8, String, StoredRole)| after.is_none_or(|a| (*rank, key.as_str()) > a);
            items.extend(builtins.into_iter().filter(past));
        }
        if builtin != Some(true) && (items.len() as u64) < wanted {
            let mut query = role::Entity::find().filter(role::Column::WorkspaceId.eq(workspace_id));
            if let Some((CUSTOM_RANK, key)) = after {
                query = query.filter(role::Column::NameKey.gt(key));
            }
            let rows = query
                .order_by_asc(role::Column::NameKey)
                .limit(wanted - items.len() as u64)
                .all(&self.db)
                .await
                .map_err(classify)?;
            items.extend(rows.into_iter().map(with_position).collect::<Result<Vec<_>>>()?);
        }
        let more = items.len() as u64 > limit;
        items.truncate(limit as usize);
        let next = if more { items.last().map(|(rank, key, _)| format!("{rank}:{key}")) } else { None };
        let items = items.into_iter().map(|(.., role)| role).collect();
        Ok(Page { items, next })
    }

    /// One role a workspace can use.
    pub async fn role(&self, workspace_id: &str, role_id: &str) -> Result<StoredRole> {
        load(&self.db, workspace_id, role_id).await
    }

    /// Creates a custom role. The person acting in `ctx` must hold every grant the role gives.
    pub async fn create_role(&self, ctx: &Context, workspace_id: &str, new: NewRole) -> Result<Changed<StoredRole>> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        bump_authz(&txn, workspace_id, AuthzChange::Roles).await?;
        ensure_grantable(actor(&txn, workspace_id, ctx).await?.as_ref(), &new.grants)?;
        let id = new_id();
        let grants = new.grants.to_stored();
        let row = role::Model {
            id: id.clone(),
            workspace_id: Some(workspace_id.to_owned()),
            name: new.name.as_str().to_owned(),
            builtin: false,
            grants: grants.clone(),
            version: 1,
            created_at: ctx.now,
            description: new.description,
            name_key: new.name.key(),
            updated_at: ctx.now,
        };
        role::Entity::insert(role::ActiveModel::from(row.clone()))
            .exec_without_returning(&txn)
            .await
            .map_err(name_taken)?;
        audit::record(
            &txn,
            workspace_id,
            ctx,
            "role.created",
            &format!("role:{id}"),
            &[("name", new.name.as_str()), ("grants", &grants)],
        )
        .await?;
        commit(txn).await?;
        Ok(Changed { value: to_role(row)?, effects: ROLES_CHANGED })
    }

    /// Changes a custom role. With `expected_version`, refuses if it changed since. The person
    /// acting in `ctx` must hold every grant the role has now and every grant it will have.
    pub async fn update_role(
        &self,
        ctx: &Context,
        workspace_id: &str,
        role_id: &str,
        changes: RoleChanges,
        expected_version: Option<i64>,
    ) -> Result<Changed<StoredRole>> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        bump_authz(&txn, workspace_id, AuthzChange::Roles).await?;
        let current = load(&txn, workspace_id, role_id).await?;
        let actor = actor(&txn, workspace_id, ctx).await?;
        let actor = actor.as_ref();
        ensure_editable(&current, expected_version, actor)?;
        let mut update = role::Entity::update_many()
            .col_expr(role::Column::Version, Expr::col(role::Column::Version).add(1))
            .col_expr(role::Column::UpdatedAt, Expr::val(ctx.now));
        let mut details: Vec<(&str, String)> = Vec::new();
        if let Some(name) = &changes.name
            && name.as_str() != current.role.name
        {
            update = update
                .col_expr(role::Column::Name, Expr::val(name.as_str()))
                .col_expr(role::Column::NameKey, Expr::val(name.key()));
            details.push(("old_name", current.role.name.clone()));
            details.push(("name", name.as_str().to_owned()));
        }
        if let Some(description) = &changes.description
            && *description != current.description
        {
            update = update.col_expr(role::Column::Description, Expr::val(description.as_str()));
            details.push(("description", description.clone()));
        }
        if let Some(grants) = &changes.grants
            && *grants != current.role.grants
        {
            ensure_grantable(actor, grants)?;
            update = update.col_expr(role::Column::Grants, Expr::val(grants.to_stored()));
            details.push(("old_grants", current.role.grants.to_stored()));
            details.push(("grants", grants.to_stored()));
        }
        if details.is_empty() {
            // Nothing changes; the version bump of the workspace is rolled back with the transaction.
            return Ok(Changed::new(current));
        }
        let result = update
            .filter(role::Column::Id.eq(role_id))
            .filter(role::Column::Version.eq(current.version))
            .exec(&txn)
            .await
            .map_err(name_taken)?;
        if result.rows_affected != 1 {
            return Err(StoreError::Conflict(Conflict::Busy));
        }
        let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        audit::record(&txn, workspace_id, ctx, "role.updated", &format!("role:{role_id}"), &details).await?;
        let updated = load(&txn, workspace_id, role_id).await?;
        commit(txn).await?;
        Ok(Changed { value: updated, effects: ROLES_CHANGED })
    }

    /// Deletes a custom role, first moving the users who hold it to `move_to` (each move is a
    /// recorded role change). Without `move_to`, a role still held is refused; a `move_to` that is
    /// not a role of the workspace is refused whether or not anyone holds the role. The person
    /// acting in `ctx` must hold every grant of the deleted role and of `move_to`. Returns how many
    /// users moved.
    pub async fn delete_role(
        &self,
        ctx: &Context,
        workspace_id: &str,
        role_id: &str,
        move_to: Option<&RoleId>,
        expected_version: Option<i64>,
    ) -> Result<Changed<u64>> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        let version = bump_authz(&txn, workspace_id, AuthzChange::Roles).await?;
        // Locking the row makes a concurrent assignment of this role wait, then fail on the
        // foreign key, instead of slipping a holder in between the count and the delete.
        let row = role::Entity::find_by_id(role_id.to_owned())
            .filter(visible_in(workspace_id))
            .lock_exclusive()
            .one(&txn)
            .await
            .map_err(classify)?
            .ok_or(StoreError::NotFound(Entity::Role))?;
        let current = to_role(row)?;
        let actor = actor(&txn, workspace_id, ctx).await?;
        let actor = actor.as_ref();
        ensure_editable(&current, expected_version, actor)?;
        let target = match move_to {
            Some(target) => {
                let target = load(&txn, workspace_id, target.as_str()).await?;
                ensure_grantable(actor, &target.role.grants)?;
                Some(target.role.id)
            }
            None => None,
        };
        let holders: Vec<String> = user::Entity::find()
            .select_only()
            .column(user::Column::Id)
            .filter(user::Column::WorkspaceId.eq(workspace_id))
            .filter(user::Column::RoleId.eq(role_id))
            .order_by_asc(user::Column::Id)
            .into_tuple()
            .all(&txn)
            .await
            .map_err(classify)?;
        let moved_to = match target {
            _ if holders.is_empty() => None,
            None => {
                return Err(StoreError::Conflict(Conflict::RoleInUse {
                    users: i64::try_from(holders.len()).unwrap_or(i64::MAX),
                }));
            }
            target => target,
        };
        if let Some(target) = &moved_to {
            user::Entity::update_many()
                .col_expr(user::Column::RoleId, Expr::val(target.as_str()))
                .col_expr(user::Column::AuthzVersion, Expr::val(version))
                .col_expr(user::Column::Version, Expr::col(user::Column::Version).add(1))
                .col_expr(user::Column::UpdatedAt, Expr::val(ctx.now))
                .filter(user::Column::WorkspaceId.eq(workspace_id))
                .filter(user::Column::RoleId.eq(role_id))
                .exec(&txn)
                .await
                .map_err(classify)?;
            for user_id in &holders {
                audit::record(
                    &txn,
                    workspace_id,
                    ctx,
                    "user.updated",
                    &format!("user:{user_id}"),
                    &[("old_role", role_id), ("role", target), ("because", "role.deleted")],
                )
                .await?;
            }
        }
        role::Entity::delete_by_id(role_id.to_owned()).exec(&txn).await.map_err(classify)?;
        let moved = holders.len().to_string();
        let mut details = vec![("name", current.role.name.as_str()), ("users_moved", moved.as_str())];
        if let Some(target) = &moved_to {
            details.push(("moved_to", target.as_str()));
        }
        audit::record(&txn, workspace_id, ctx, "role.deleted", &format!("role:{role_id}"), &details).await?;
        commit(txn).await?;
        Ok(Changed { value: holders.len() as u64, effects: ROLES_CHANGED })
    }

    /// A workspace's authorization data: all of it (`since` `None`), or what changed after version
    /// `since` — the roles only if one of them changed, the members whose role or status changed
    /// or who were created. The version and the members are one statement, the roles a second
    /// one read after it: what is read is at least as new as the version, and loading a
    /// workspace costs two queries however many members it has.
    pub async fn authz_changes(&self, workspace_id: &str, since: Option<i64>) -> Result<AuthzChanges> {
        let mut joined = Condition::all().add(
            Expr::col((user::Entity, user::Column::WorkspaceId)).equals((workspace::Entity, workspace::Column::Id)),
        );
        if let Some(since) = since {
            joined = joined.add(Expr::col((user::Entity, user::Column::AuthzVersion)).gt(since));
        }
        let query = Query::select()
            .column((workspace::Entity, workspace::Column::AuthzVersion))
            .column((workspace::Entity, workspace::Column::RolesVersion))
            .column((user::Entity, user::Column::Id))
            .column((user::Entity, user::Column::RoleId))
            .column((user::Entity, user::Column::Status))
            .from(workspace::Entity)
            .join(JoinType::LeftJoin, user::Entity, joined)
            .and_where(Expr::col((workspace::Entity, workspace::Column::Id)).eq(workspace_id))
            .to_owned();
        let rows = self.db.query_all(&query).await.map_err(classify)?;
        let first = rows.first().ok_or(StoreError::NotFound(Entity::Workspace))?;
        let version: i64 = first.try_get("", "authz_version").map_err(classify)?;
        let roles_version: i64 = first.try_get("", "roles_version").map_err(classify)?;
        let mut members = Vec::with_capacity(rows.len());
        for row in &rows {
            // The one row of a workspace without (changed) members has no user.
            let Some(user_id) = row.try_get::<Option<String>>("", "id").map_err(classify)? else { continue };
            let role_id: String = row.try_get("", "role_id").map_err(classify)?;
            let status: String = row.try_get("", "status").map_err(classify)?;
            members.push(Member { user_id, role_id, active: UserStatus::from_stored(&status)? == UserStatus::Active });
        }
        let roles = if roles_version > since.unwrap_or(i64::MIN) {
            let rows = role::Entity::find().filter(visible_in(workspace_id)).all(&self.db).await.map_err(classify)?;
            Some(rows.into_iter().map(|row| to_role(row).map(|stored| stored.role)).collect::<Result<_>>()?)
        } else {
            None
        };
        Ok(AuthzChanges { version, roles, members })
    }
}
