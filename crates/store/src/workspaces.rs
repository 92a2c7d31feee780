//! Workspaces: created with their first admin in one transaction.

use crate::entity::{user, workspace};
use crate::users::insert_user;
use crate::{
    Conflict, Context, Entity, ExtraSeats, Mail, NewUser, NewWorkspace, Plan, Result, Store, StoreError, Subscription,
    User, UserStatus, Workspace, audit, classify, commit, count, new_id, unique_violation,
};
use roster_identity::{Slug, WorkspaceName};
use sea_orm::sea_query::LockType;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

impl Store {
    /// Creates a workspace on the Free Trial plan and its first admin (whose welcome email is
    /// queued), atomically. With a `request_id` seen before, returns the first call's result.
    pub async fn create_workspace(
        &self,
        ctx: &Context,
        new: NewWorkspace,
        admin: NewUser,
        welcome: Mail,
        request_id: Option<&str>,
    ) -> Result<(Workspace, User)> {
        if let Some(found) = self.workspace_by_request(request_id).await? {
            return Ok(found);
        }
        let txn = self.write().await?;
        let id = new_id();
        let row = workspace::ActiveModel {
            id: Set(id.clone()),
            slug: Set(new.slug.as_str().to_owned()),
            name: Set(new.name.as_str().to_owned()),
            plan: Set(Plan::FreeTrial.as_str().to_owned()),
            extra_seats: Set(0),
            create_request_id: Set(request_id.map(str::to_owned)),
            created_at: Set(ctx.now),
            authz_version: Set(0),
            max_open_conversations: Set(0),
            roles_version: Set(0),
        };
        if let Err(err) = workspace::Entity::insert(row).exec_without_returning(&txn).await {
            drop(txn);
            // Which unique index fails first differs between backends: with a request id, a
            // concurrent retry that won the race is answered with what it created.
            return match unique_violation(&err) {
                Some(_) => match self.workspace_by_request(request_id).await? {
                    Some(found) => Ok(found),
                    None => Err(StoreError::Conflict(Conflict::SlugTaken)),
                },
                None => Err(classify(err)),
            };
        }
        let target = format!("workspace:{id}");
        audit::record(&txn, &id, ctx, "workspace.created", &target, &[("slug", new.slug.as_str())]).await?;
        let admin = insert_user(&txn, ctx, &id, admin, None, &welcome, None).await?;
        let workspace = load_workspace(&txn, &id).await?;
        commit(txn).await?;
        Ok((workspace, admin))
    }

    async fn workspace_by_request(&self, request_id: Option<&str>) -> Result<Option<(Workspace, User)>> {
        let Some(request_id) = request_id else { return Ok(None) };
        let Some(row) = workspace::Entity::find()
            .filter(workspace::Column::CreateRequestId.eq(request_id))
            .one(&self.db)
            .await
            .map_err(classify)?
        else {
            return Ok(None);
        };
        // The first admin is the workspace's oldest user.
        let admin = user::Entity::find()
            .filter(user::Column::WorkspaceId.eq(row.id.as_str()))
            .order_by_asc(user::Column::CreatedAt)
            .one(&self.db)
            .await
            .map_err(classify)?
            .ok_or(StoreError::NotFound(Entity::User))?;
        Ok(Some((load_workspace(&self.db, &row.id).await?, crate::users::to_user(admin)?)))
    }

    /// A workspace by id.
    pub async fn workspace(&self, id: &str) -> Result<Workspace> {
        load_workspace(&self.db, id).await
    }

    /// A workspace's id by slug.
    pub async fn workspace_id_by_slug(&self, slug: &Slug) -> Result<Option<String>> {
        Ok(workspace::Entity::find()
            .filter(workspace::Column::Slug.eq(slug.as_str()))
            .one(&self.db)
            .await
            .map_err(classify)?
            .map(|row| row.id))
    }
}

/// A workspace row's plan and extra seats.
fn subscription(row: &workspace::Model) -> Result<Subscription> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("workspace {}: {what}", row.id));
    Ok(Subscription {
        plan: Plan::from_stored(&row.plan).ok_or_else(|| corrupt("plan"))?,
        extra_seats: ExtraSeats::new(row.extra_seats.into()).map_err(|_| corrupt("extra seats"))?,
    })
}

/// Active users: the seats in use.
async fn seats_used<C: ConnectionTrait>(conn: &C, workspace_id: &str) -> Result<u32> {
    let active = count(
        conn,
        user::Entity::find()
            .filter(user::Column::WorkspaceId.eq(workspace_id))
            .filter(user::Column::Status.eq(UserStatus::Active.as_str())),
    )
    .await?;
    Ok(u32::try_from(active).unwrap_or(u32::MAX))
}

/// Locks the workspace's row and counts its seats in use, for a seat check: no other transaction
/// can take a seat of the workspace or change its plan until this one ends, so the count stays
/// true until the commit. On PostgreSQL the lock is `FOR NO KEY UPDATE`, the one an update of the
/// row takes: it serializes with every other change of the workspace row but not with inserts
/// that merely reference the workspace (their foreign-key check takes `FOR KEY SHARE`), so routing
/// and membership changes neither wait for it nor deadlock with it. SQLite's write transaction
/// serializes anyway.
pub(crate) async fn lock_seats(txn: &DatabaseTransaction, workspace_id: &str) -> Result<(Subscription, u32)> {
    let row = workspace::Entity::find_by_id(workspace_id.to_owned())
        .lock(LockType::NoKeyUpdate)
        .one(txn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::Workspace))?;
    Ok((subscription(&row)?, seats_used(txn, workspace_id).await?))
}

pub(crate) async fn load_workspace<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Workspace> {
    let row = workspace::Entity::find_by_id(id.to_owned())
        .one(conn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::Workspace))?;
    let seats_used = seats_used(conn, id).await?;
    Ok(Workspace {
        slug: Slug::parse(&row.slug).map_err(|e| StoreError::Corrupt(format!("workspace slug: {e}")))?,
        name: WorkspaceName::parse(&row.name).map_err(|e| StoreError::Corrupt(format!("workspace name: {e}")))?,
        subscription: subscription(&row)?,
        seats_used,
        max_open: roster_assignment::Capacity::new(u32::try_from(row.max_open_conversations).unwrap_or(0)),
        created_at: row.created_at,
        id: row.id,
    })
}

impl Store {
    /// Changes a workspace's name and/or default capacity per agent.
    pub async fn update_workspace(
        &self,
        ctx: &Context,
        id: &str,
        name: Option<WorkspaceName>,
        max_open: Option<roster_assignment::Capacity>,
    ) -> Result<Workspace> {
        use sea_orm::sea_query::Expr;
        let txn = self.write().await?;
        let current = load_workspace(&txn, id).await?;
        let mut update = workspace::Entity::update_many().filter(workspace::Column::Id.eq(id));
        let mut details: Vec<(&str, String)> = Vec::new();
        if let Some(name) = name.filter(|n| *n != current.name) {
            update = update.col_expr(workspace::Column::Name, Expr::val(name.as_str()));
            details.push(("name", name.as_str().to_owned()));
        }
        if let Some(max_open) = max_open.filter(|m| *m != current.max_open) {
            let stored = i32::try_from(max_open.max_open()).unwrap_or(i32::MAX);
            update = update.col_expr(workspace::Column::MaxOpenConversations, Expr::val(stored));
            details.push(("max_open_conversations", max_open.max_open().to_string()));
        }
        if details.is_empty() {
            return Ok(current);
        }
        update.exec(&txn).await.map_err(classify)?;
        let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        audit::record(&txn, id, ctx, "workspace.updated", &format!("workspace:{id}"), &details).await?;
        let workspace = load_workspace(&txn, id).await?;
        commit(txn).await?;
        Ok(workspace)
    }
}

impl Store {
    /// Whether any workspace exists (the first-run check).
    pub async fn has_workspaces(&self) -> Result<bool> {
        Ok(workspace::Entity::find().one(&self.db).await.map_err(classify)?.is_some())
    }
}
