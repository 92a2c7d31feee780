//! Workspaces: created with their first admin in one transaction.

use crate::entity::{user, workspace};
use crate::events::Stream;
use crate::rows::user::{insert, to_user};
use crate::rows::workspace::load;
use crate::{
    Changed, Conflict, Context, Effects, Entity, NewUser, NewWorkspace, Plan, Result, Store, StoreError, User, Welcome,
    Workspace, audit, classify, commit, new_id, unique_violation,
};
use roster_assignment::Capacity;
use roster_identity::{Slug, WorkspaceName};
use sea_orm::sea_query::Expr;
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QueryOrder};

impl Store {
    /// Creates a workspace on the Free Trial plan and its first admin (whose welcome email is
    /// queued), atomically. With a `request_id` seen before, returns the first call's result.
    pub async fn create_workspace(
        &self,
        ctx: &Context,
        new: NewWorkspace,
        admin: NewUser,
        welcome: Welcome,
        request_id: Option<&str>,
    ) -> Result<Changed<(Workspace, User)>> {
        if let Some(found) = self.workspace_by_request(request_id).await? {
            return Ok(Changed::new(found));
        }
        let id = new_id();
        let txn = self.write_in(&[Stream::Workspace(&id)]).await?;
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
                    Some(found) => Ok(Changed::new(found)),
                    None => Err(StoreError::Conflict(Conflict::SlugTaken)),
                },
                None => Err(classify(err)),
            };
        }
        let target = format!("workspace:{id}");
        audit::record(&txn, &id, ctx, "workspace.created", &target, &[("slug", new.slug.as_str())]).await?;
        let admin = insert(&txn, ctx, &id, admin, None, &welcome).await?;
        let workspace = load(&txn, &id).await?;
        commit(txn).await?;
        Ok(Changed { value: (workspace, admin), effects: Effects { mail: true, ..Effects::default() } })
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
        Ok(Some((load(&self.db, &row.id).await?, to_user(admin)?)))
    }

    /// A workspace by id.
    pub async fn workspace(&self, id: &str) -> Result<Workspace> {
        load(&self.db, id).await
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

impl Store {
    /// Changes a workspace's name and/or default capacity per agent.
    pub async fn update_workspace(
        &self,
        ctx: &Context,
        id: &str,
        name: Option<WorkspaceName>,
        max_open: Option<Capacity>,
    ) -> Result<Changed<Workspace>> {
        let txn = self.write_in(&[Stream::Workspace(id)]).await?;
        let current = load(&txn, id).await?;
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
            return Ok(Changed::new(current));
        }
        let room = max_open.is_some_and(|m| m != current.max_open);
        update.exec(&txn).await.map_err(classify)?;
        let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        audit::record(&txn, id, ctx, "workspace.updated", &format!("workspace:{id}"), &details).await?;
        let workspace = load(&txn, id).await?;
        commit(txn).await?;
        Ok(Changed { value: workspace, effects: Effects { room, ..Effects::default() } })
    }
}

impl Store {
    /// Whether any workspace exists (the first-run check).
    pub async fn has_workspaces(&self) -> Result<bool> {
        Ok(workspace::Entity::find().one(&self.db).await.map_err(classify)?.is_some())
    }
}
