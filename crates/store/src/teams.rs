//! Teams and their members (their order and routing view are `rows::team`'s). Adding or removing
//! a member applies the no-escalation rule to that member, inside the transaction.

use crate::entity::{conversation, team, team_member};
use crate::events::Stream;
use crate::rows::team::{Read, load, load_members, lock, to_team};
use crate::rows::{user, workspace};
use crate::{
    Availability, Changed, Conflict, Context, ConversationStatus, Effects, Entity, NewTeam, Page, Result, Store,
    StoreError, Team, TeamChanges, TeamMember, audit, classify, commit, count, new_id, unique_violation,
};
use roster_assignment::{Capacity, Strategy};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::HashMap;

/// A member added, or a team no longer MANUAL: queued conversations may be handed out.
const ROOM: Effects = Effects { room: true, permissions: false, mail: false };

/// Refuses a change of a team whose version is not `expected` (when one is given).
fn ensure_version(row: &team::Model, expected: Option<i64>) -> Result<()> {
    match expected {
        Some(expected) if expected != row.version => {
            Err(StoreError::Conflict(Conflict::StaleVersion { current: row.version }))
        }
        _ => Ok(()),
    }
}

fn name_taken(err: sea_orm::DbErr) -> StoreError {
    match unique_violation(&err) {
        Some(_) => StoreError::Conflict(Conflict::TeamNameTaken),
        None => classify(err),
    }
}

impl Store {
    /// Creates a team.
    pub async fn create_team(&self, ctx: &Context, workspace_id: &str, new: NewTeam) -> Result<Team> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        workspace::load(&txn, workspace_id).await?;
        let row = team::Model {
            id: new_id(),
            workspace_id: workspace_id.to_owned(),
            name: new.name.as_str().to_owned(),
            name_key: new.name.key(),
            strategy: new.strategy.as_str().to_owned(),
            last_position: None,
            next_position: 1,
            version: 1,
            created_at: ctx.now,
            updated_at: ctx.now,
            assignments: 0,
        };
        team::Entity::insert(team::ActiveModel::from(row.clone()))
            .exec_without_returning(&txn)
            .await
            .map_err(name_taken)?;
        audit::record(
            &txn,
            workspace_id,
            ctx,
            "team.created",
            &format!("team:{}", row.id),
            &[("name", new.name.as_str()), ("strategy", new.strategy.as_str())],
        )
        .await?;
        commit(txn).await?;
        to_team(row, 0)
    }

    /// A team of the workspace.
    pub async fn team(&self, workspace_id: &str, team_id: &str) -> Result<Team> {
        load(&self.db, workspace_id, team_id).await
    }

    /// Teams of a workspace by name (case-insensitively), starting after the name key `after`;
    /// with `member`, only the teams that user is a member of.
    pub async fn list_teams(
        &self,
        workspace_id: &str,
        member: Option<&str>,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Page<Team>> {
        let mut query = team::Entity::find().filter(team::Column::WorkspaceId.eq(workspace_id));
        if let Some(user_id) = member {
            let teams_of_user = sea_orm::sea_query::Query::select()
                .column(team_member::Column::TeamId)
                .from(team_member::Entity)
                .and_where(team_member::Column::UserId.eq(user_id))
                .to_owned();
            query = query.filter(team::Column::Id.in_subquery(teams_of_user));
        }
        if let Some(after) = after {
            query = query.filter(team::Column::NameKey.gt(after));
        }
        let rows = query.order_by_asc(team::Column::NameKey).limit(limit + 1).all(&self.db).await.map_err(classify)?;
        let more = rows.len() as u64 > limit;
        let rows: Vec<team::Model> = rows.into_iter().take(limit as usize).collect();
        let counts: HashMap<String, i64> = team_member::Entity::find()
            .select_only()
            .column(team_member::Column::TeamId)
            .column_as(Expr::col(team_member::Column::UserId).count(), "members")
            .filter(team_member::Column::TeamId.is_in(rows.iter().map(|r| r.id.as_str())))
            .group_by(team_member::Column::TeamId)
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await
            .map_err(classify)?
            .into_iter()
            .collect();
        let next = if more { rows.last().map(|r| r.name_key.clone()) } else { None };
        let items = rows
            .into_iter()
            .map(|row| {
                let members = counts.get(&row.id).copied().unwrap_or(0);
                to_team(row, members)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Page { items, next })
    }

    /// Changes a team's name or strategy. With `expected_version`, refuses if it changed since.
    pub async fn update_team(
        &self,
        ctx: &Context,
        workspace_id: &str,
        team_id: &str,
        changes: TeamChanges,
        expected_version: Option<i64>,
    ) -> Result<Changed<Team>> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id), Stream::Team(team_id)]).await?;
        let row = lock(&txn, workspace_id, team_id).await?;
        ensure_version(&row, expected_version)?;
        let mut update = team::Entity::update_many()
            .col_expr(team::Column::Version, Expr::col(team::Column::Version).add(1))
            .col_expr(team::Column::UpdatedAt, Expr::val(ctx.now));
        let mut details: Vec<(&str, String)> = Vec::new();
        if let Some(name) = &changes.name
            && name.as_str() != row.name
        {
            update = update
                .col_expr(team::Column::Name, Expr::val(name.as_str()))
                .col_expr(team::Column::NameKey, Expr::val(name.key()));
            details.push(("old_name", row.name.clone()));
            details.push(("name", name.as_str().to_owned()));
        }
        if let Some(strategy) = changes.strategy
            && strategy.as_str() != row.strategy
        {
            update = update.col_expr(team::Column::Strategy, Expr::val(strategy.as_str()));
            details.push(("old_strategy", row.strategy.clone()));
            details.push(("strategy", strategy.as_str().to_owned()));
        }
        if details.is_empty() {
            return Ok(Changed::new(load(&txn, workspace_id, team_id).await?));
        }
        let strategy_changed = changes.strategy.is_some_and(|s| s.as_str() != row.strategy);
        update.filter(team::Column::Id.eq(team_id)).exec(&txn).await.map_err(name_taken)?;
        let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
        audit::record(&txn, workspace_id, ctx, "team.updated", &format!("team:{team_id}"), &details).await?;
        let team = load(&txn, workspace_id, team_id).await?;
        commit(txn).await?;
        // A team that stopped being MANUAL hands out its queue.
        let effects = if strategy_changed && team.strategy != Strategy::Manual { ROOM } else { Effects::default() };
        Ok(Changed { value: team, effects })
    }

    /// Deletes a team without open conversations, and its memberships.
    pub async fn delete_team(
        &self,
        ctx: &Context,
        workspace_id: &str,
        team_id: &str,
        expected_version: Option<i64>,
    ) -> Result<()> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id), Stream::Team(team_id)]).await?;
        let row = lock(&txn, workspace_id, team_id).await?;
        ensure_version(&row, expected_version)?;
        let open = count(
            &txn,
            conversation::Entity::find()
                .filter(conversation::Column::TeamId.eq(team_id))
                .filter(conversation::Column::Status.eq(ConversationStatus::Open.as_str())),
        )
        .await?;
        if open > 0 {
            return Err(StoreError::Conflict(Conflict::TeamHasOpenConversations { open }));
        }
        let members = team_member::Entity::delete_many()
            .filter(team_member::Column::TeamId.eq(team_id))
            .exec(&txn)
            .await
            .map_err(classify)?
            .rows_affected;
        team::Entity::delete_by_id(team_id.to_owned()).exec(&txn).await.map_err(classify)?;
        audit::record(
            &txn,
            workspace_id,
            ctx,
            "team.deleted",
            &format!("team:{team_id}"),
            &[("name", &row.name), ("members_removed", &members.to_string())],
        )
        .await?;
        commit(txn).await
    }

    /// Adds a user to a team at the end of its order, with their own capacity if given. The person
    /// acting in `ctx` must be allowed to manage the user.
    pub async fn add_team_member(
        &self,
        ctx: &Context,
        workspace_id: &str,
        team_id: &str,
        user_id: &str,
        max_open: Option<Capacity>,
    ) -> Result<Changed<TeamMember>> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id), Stream::Team(team_id)]).await?;
        // The user must be of this workspace (the foreign key only says it exists somewhere).
        user::load_manageable(&txn, workspace_id, user_id, ctx).await?;
        let team = lock(&txn, workspace_id, team_id).await?;
        let row = team_member::Model {
            team_id: team_id.to_owned(),
            user_id: user_id.to_owned(),
            workspace_id: workspace_id.to_owned(),
            position: team.next_position,
            max_open: max_open.map(|c| i32::try_from(c.max_open()).unwrap_or(i32::MAX)),
            created_at: ctx.now,
        };
        if let Err(err) =
            team_member::Entity::insert(team_member::ActiveModel::from(row.clone())).exec_without_returning(&txn).await
        {
            return Err(match unique_violation(&err) {
                Some(_) => StoreError::Conflict(Conflict::AlreadyMember),
                None => classify(err),
            });
        }
        team::Entity::update_many()
            .col_expr(team::Column::NextPosition, Expr::val(team.next_position + 1))
            .filter(team::Column::Id.eq(team_id))
            .exec(&txn)
            .await
            .map_err(classify)?;
        settle_member(txn, ctx, workspace_id, &row, max_open, "team.member_added").await
    }

    /// Sets a member's own capacity in the team (`None`: the workspace default), keeping their
    /// place in its order. The person acting in `ctx` must be allowed to manage the user.
    pub async fn update_team_member(
        &self,
        ctx: &Context,
        workspace_id: &str,
        team_id: &str,
        user_id: &str,
        max_open: Option<Capacity>,
    ) -> Result<Changed<TeamMember>> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id), Stream::Team(team_id)]).await?;
        user::load_manageable(&txn, workspace_id, user_id, ctx).await?;
        lock(&txn, workspace_id, team_id).await?;
        let row = team_member::Entity::find()
            .filter(team_member::Column::TeamId.eq(team_id))
            .filter(team_member::Column::UserId.eq(user_id))
            .one(&txn)
            .await
            .map_err(classify)?
            .ok_or(StoreError::NotFound(Entity::TeamMember))?;
        let stored = max_open.map(|c| i32::try_from(c.max_open()).unwrap_or(i32::MAX));
        team_member::Entity::update_many()
            .col_expr(team_member::Column::MaxOpen, Expr::val(stored))
            .filter(team_member::Column::TeamId.eq(team_id))
            .filter(team_member::Column::UserId.eq(user_id))
            .exec(&txn)
            .await
            .map_err(classify)?;
        settle_member(txn, ctx, workspace_id, &row, max_open, "team.member_updated").await
    }

    /// Removes a user from a team; their open conversations stay theirs. The person acting in
    /// `ctx` must be allowed to manage the user.
    pub async fn remove_team_member(
        &self,
        ctx: &Context,
        workspace_id: &str,
        team_id: &str,
        user_id: &str,
    ) -> Result<()> {
        let txn = self.write_in(&[Stream::Workspace(workspace_id), Stream::Team(team_id)]).await?;
        user::load_manageable(&txn, workspace_id, user_id, ctx).await?;
        lock(&txn, workspace_id, team_id).await?;
        let removed = team_member::Entity::delete_many()
            .filter(team_member::Column::TeamId.eq(team_id))
            .filter(team_member::Column::UserId.eq(user_id))
            .exec(&txn)
            .await
            .map_err(classify)?;
        if removed.rows_affected == 0 {
            return Err(StoreError::NotFound(Entity::TeamMember));
        }
        audit::record(&txn, workspace_id, ctx, "team.member_removed", &format!("team:{team_id}"), &[("user", user_id)])
            .await?;
        commit(txn).await
    }

    /// A team's members in its order, starting after the position `after`; with `availability`,
    /// only the members who have it.
    pub async fn list_team_members(
        &self,
        workspace_id: &str,
        team_id: &str,
        availability: Option<Availability>,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<TeamMember>> {
        load(&self.db, workspace_id, team_id).await?;
        let read = Read::Page { after, limit: limit + 1, availability };
        let mut items = load_members(&self.db, team_id, read).await?;
        let more = items.len() as u64 > limit;
        items.truncate(limit as usize);
        let next = if more { items.last().map(|m| m.position.to_string()) } else { None };
        Ok(Page { items, next })
    }

    /// Whether `user_id` is a member of the team (`NotFound` for a team not in the workspace).
    pub async fn is_team_member(&self, workspace_id: &str, team_id: &str, user_id: &str) -> Result<bool> {
        load(&self.db, workspace_id, team_id).await?;
        let found = team_member::Entity::find()
            .filter(team_member::Column::TeamId.eq(team_id))
            .filter(team_member::Column::UserId.eq(user_id))
            .one(&self.db)
            .await
            .map_err(classify)?;
        Ok(found.is_some())
    }
}

/// The end of adding a member or changing their capacity: the audit record (`action`), the member
/// as now stored, the commit. Their capacity may let them take the team's queue.
async fn settle_member(
    txn: sea_orm::DatabaseTransaction,
    ctx: &Context,
    workspace_id: &str,
    row: &team_member::Model,
    max_open: Option<Capacity>,
    action: &str,
) -> Result<Changed<TeamMember>> {
    let (team_id, user_id) = (row.team_id.as_str(), row.user_id.as_str());
    let capacity = max_open.map_or("workspace default".to_owned(), |c| c.max_open().to_string());
    let details = [("user", user_id), ("max_open_conversations", capacity.as_str())];
    audit::record(&txn, workspace_id, ctx, action, &format!("team:{team_id}"), &details).await?;
    let member =
        load_members(&txn, team_id, Read::Page { after: Some(row.position - 1), limit: 1, availability: None })
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt(format!("team member {user_id} not read back")))?;
    commit(txn).await?;
    Ok(Changed { value: member, effects: ROOM })
}
