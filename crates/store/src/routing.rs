//! Routing: handing a team's conversations to its members, inside the transaction that holds the
//! team's lock.
//!
//! Three rules keep the invariants across processes:
//! - Whatever changes a team's queue or round robin's turn holds the team's row lock
//!   (`rows::team::lock`), so picks of one team are made one at a time with fresh counts.
//! - An agent's load is `users.open_conversations`, changed in the transaction that opens, moves
//!   or closes their conversation. Taking one more is one conditional update ([`take`]) that also
//!   requires them active and ONLINE, so no agent passes capacity even when two teams pick them at
//!   once, and a deactivation racing a pick either happens first (the pick fails) or sees the
//!   conversation and takes it back.
//! - A conversation row changes only if its version is the one read; otherwise the transaction
//!   rolls back and the whole call is retried, so a conversation never has two assignees and no
//!   count drifts.
//!
//! Locks are taken in one order: team, then users, then conversations.

use crate::entity::{conversation, team, team_member, user};
use crate::events;
use crate::rows::conversation::{assign_changes, queued, update};
use crate::rows::team::{Read, load_members, lock as lock_team};
use crate::{
    Availability, Conflict, Context, ConversationStatus, Entity, NotEligible, Result, StoreError, TeamMember,
    UserStatus, classify,
};
use roster_assignment::{Capacity, Pick, Queued, Strategy, pick};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, Condition, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait,
    TryInsertResult,
};
use std::collections::BTreeSet;

/// Why a deactivated agent's conversation waits in its team's queue.
const REQUEUED_REASON: &str = "queued: the assignee was deactivated";

/// How many queued conversations one transaction hands out at most.
const DRAIN_BATCH: usize = 500;

/// Whether an assignment to a person respects their availability and capacity, or (a manager's
/// deliberate choice, by hand) overrides them; being an active member of the team always counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limits {
    Respect,
    Override,
}

/// One more open conversation for `user_id`, if they are active and, unless `limits` says to
/// override, ONLINE and under `capacity`, and (`Some(open)`) still have the `open` conversations
/// the pick compared.
pub(crate) async fn take(
    txn: &DatabaseTransaction,
    user_id: &str,
    capacity: Capacity,
    now: i64,
    expect_open: Option<u32>,
    limits: Limits,
) -> Result<bool> {
    let mut update = user::Entity::update_many()
        .col_expr(user::Column::OpenConversations, Expr::col(user::Column::OpenConversations).add(1))
        .col_expr(user::Column::LastAssignedAt, Expr::val(now))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::Status.eq(UserStatus::Active.as_str()));
    if limits == Limits::Override {
        return Ok(update.exec(txn).await.map_err(classify)?.rows_affected == 1);
    }
    update = update.filter(user::Column::Availability.eq(Availability::Online.as_str()));
    if capacity.max_open() > 0 {
        update = update.filter(user::Column::OpenConversations.lt(i64::from(capacity.max_open())));
    }
    if let Some(open) = expect_open {
        update = update.filter(user::Column::OpenConversations.eq(i64::from(open)));
    }
    Ok(update.exec(txn).await.map_err(classify)?.rows_affected == 1)
}

/// One open conversation fewer for `user_id`.
pub(crate) async fn release(txn: &DatabaseTransaction, user_id: &str) -> Result<()> {
    user::Entity::update_many()
        .col_expr(user::Column::OpenConversations, Expr::col(user::Column::OpenConversations).sub(1))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::OpenConversations.gt(0))
        .exec(txn)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Who a pick gave a conversation to, why, and their place in the team's order.
struct Taken {
    user_id: String,
    reason: String,
    position: i64,
}

/// How a routing transaction holds the user rows of the team's members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Members<'a> {
    /// Read as they are: for a transaction that takes at most one agent, whose conditional update
    /// locks that one row only, so it cannot deadlock.
    Read,
    /// Locked in the order of their ids, with `also` (an assignee being released): for any
    /// transaction that may take or release more than one agent.
    Lock { also: Option<&'a str> },
}

/// A locked team with its members, as the picks of one transaction see it.
pub(crate) struct Routing {
    pub(crate) team: team::Model,
    strategy: Strategy,
    members: Vec<TeamMember>,
}

impl Routing {
    /// Locks the team, then holds its members as `members` says.
    pub(crate) async fn lock(
        txn: &DatabaseTransaction,
        workspace_id: &str,
        team_id: &str,
        members: Members<'_>,
    ) -> Result<Self> {
        let team = lock_team(txn, workspace_id, team_id).await?;
        Self::of(txn, team, members).await
    }

    /// The routing of a team already locked, its members held as `members` says.
    pub(crate) async fn of(txn: &DatabaseTransaction, team: team::Model, members: Members<'_>) -> Result<Self> {
        let strategy = Strategy::from_stored(&team.strategy)
            .ok_or_else(|| StoreError::Corrupt(format!("team {}: strategy", team.id)))?;
        let team_id = team.id.as_str();
        let members = match members {
            Members::Read => load_members(txn, team_id, Read::All).await?,
            Members::Lock { also: None } => load_members(txn, team_id, Read::LockAll).await?,
            Members::Lock { also: Some(also) } => {
                lock_users(txn, &team.workspace_id, [team_id], Some(also)).await?;
                load_members(txn, team_id, Read::All).await?
            }
        };
        Ok(Self { team, strategy, members })
    }

    /// The member `user_id` gave up a conversation: one open fewer, in the counts picks compare.
    pub(crate) fn released(&mut self, user_id: &str) {
        if let Some(member) = self.members.iter_mut().find(|m| m.user_id == user_id) {
            member.open = member.open.saturating_sub(1);
        }
    }

    /// Picks by the team's strategy, never `exclude`, and takes one more conversation for the one
    /// picked: who and why, or why nobody. Round robin's turn moves only once the caller has written
    /// the conversation ([`Routing::served`]).
    async fn pick_and_take(
        &mut self,
        txn: &DatabaseTransaction,
        now: i64,
        exclude: Option<&str>,
    ) -> Result<Result<Taken, Queued>> {
        // A failed take means the member changed since read: gone away or full (ineligible now), or,
        // for load balanced, busier through another team (the pick must compare current counts).
        // Only concurrent calls make that happen, so a few looks suffice; then the call is retried.
        for _ in 0..=2 * self.members.len() {
            let candidates: Vec<_> = self
                .members
                .iter()
                .filter(|m| Some(m.user_id.as_str()) != exclude)
                .map(TeamMember::candidate)
                .collect();
            let (index, reason) = match pick(self.strategy, &candidates, self.team.last_position) {
                Pick::Queue(queued) => return Ok(Err(queued)),
                Pick::Assign { index, why } => (index, why.to_string()),
            };
            let user_id = candidates[index].user_id.to_owned();
            let Some(member) = self.members.iter_mut().find(|m| m.user_id == user_id) else { break };
            let expect_open = (self.strategy == Strategy::LoadBalanced).then_some(member.open);
            if !take(txn, &user_id, member.capacity, now, expect_open, Limits::Respect).await? {
                // Another team or process got there first, or they just went away: look again.
                refresh(txn, member).await?;
                continue;
            }
            member.open += 1;
            member.last_assigned_at = Some(now);
            return Ok(Ok(Taken { user_id, reason, position: member.position }));
        }
        Err(StoreError::Conflict(Conflict::Busy))
    }

    /// The number the team's next assignment takes.
    fn sequence(&self) -> i64 {
        self.team.assignments + 1
    }

    /// Counts the assignment just written (numbered [`Routing::sequence`]) and, when the strategy
    /// served the member at `position`, moves round robin's turn past them.
    async fn served(&mut self, txn: &DatabaseTransaction, position: Option<i64>) -> Result<()> {
        let mut update = team::Entity::update_many().col_expr(team::Column::Assignments, Expr::val(self.sequence()));
        let turn = position.filter(|_| self.strategy == Strategy::RoundRobin);
        if let Some(position) = turn {
            update = update.col_expr(team::Column::LastPosition, Expr::val(position));
        }
        update.filter(team::Column::Id.eq(self.team.id.as_str())).exec(txn).await.map_err(classify)?;
        self.team.assignments += 1;
        if turn.is_some() {
            self.team.last_position = turn;
        }
        Ok(())
    }

    /// Routes the queued conversation `row` by the team's strategy, never to `exclude`: assigns it,
    /// or leaves it queued and says why.
    pub(crate) async fn route(
        &mut self,
        txn: &DatabaseTransaction,
        ctx: &Context,
        row: &conversation::Model,
        exclude: Option<&str>,
    ) -> Result<(conversation::Model, Option<Queued>)> {
        let now = ctx.now;
        match self.pick_and_take(txn, now, exclude).await? {
            Err(queued) => {
                let reason = queued.to_string();
                if row.reason == reason {
                    return Ok((row.clone(), Some(queued)));
                }
                let row = update(txn, row, now, vec![(conversation::Column::Reason, reason.into())]).await?;
                Ok((row, Some(queued)))
            }
            Ok(taken) => {
                let changes = assign_changes(&taken.user_id, now, &taken.reason, self.sequence());
                let row = update(txn, row, now, changes).await?;
                self.served(txn, Some(taken.position)).await?;
                assigned(txn, ctx, &row).await?;
                Ok((row, None))
            }
        }
    }

    /// Routes a conversation Roster has not seen and writes it once, assigned or queued with its
    /// reason: the common case, one insert. `None` when it exists after all (the caller starts
    /// again on the general path; rolling back undoes the take).
    pub(crate) async fn insert_routed(
        &mut self,
        txn: &DatabaseTransaction,
        ctx: &Context,
        fresh: &conversation::Model,
    ) -> Result<Option<conversation::Model>> {
        let now = ctx.now;
        let mut row = fresh.clone();
        let taken = match self.pick_and_take(txn, now, None).await? {
            Err(queued) => {
                row.reason = queued.to_string();
                None
            }
            Ok(taken) => {
                row.assignee_id = Some(taken.user_id.clone());
                row.reason = taken.reason.clone();
                row.assigned_at = Some(now);
                row.sequence = Some(self.sequence());
                Some(taken)
            }
        };
        let inserted = conversation::Entity::insert(conversation::ActiveModel::from(row.clone()))
            .on_conflict_do_nothing()
            .exec_without_returning(txn)
            .await
            .map_err(classify)?;
        if !matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
            return Ok(None);
        }
        match &taken {
            Some(taken) => {
                self.served(txn, Some(taken.position)).await?;
                assigned(txn, ctx, &row).await?;
            }
            None => queued_event(txn, ctx, &row).await?,
        }
        Ok(Some(row))
    }

    /// Whether `team`'s queue holds a conversation other than `except`.
    pub(crate) async fn has_queue(txn: &DatabaseTransaction, team: &team::Model, except: &str) -> Result<bool> {
        let found = conversation::Entity::find()
            .select_only()
            .column(conversation::Column::Id)
            .filter(conversation::Column::WorkspaceId.eq(team.workspace_id.as_str()))
            .filter(conversation::Column::TeamId.eq(team.id.as_str()))
            .filter(queued())
            .filter(conversation::Column::Id.ne(except))
            .into_tuple::<String>()
            .one(txn)
            .await
            .map_err(classify)?;
        Ok(found.is_some())
    }

    /// The conversation that has waited longest in the team's queue.
    pub(crate) async fn oldest_queued(&self, txn: &DatabaseTransaction) -> Result<Option<conversation::Model>> {
        conversation::Entity::find()
            .filter(conversation::Column::WorkspaceId.eq(self.team.workspace_id.as_str()))
            .filter(conversation::Column::TeamId.eq(self.team.id.as_str()))
            .filter(queued())
            .order_by_asc(conversation::Column::QueuedAt)
            .order_by_asc(conversation::Column::Id)
            .one(txn)
            .await
            .map_err(classify)
    }

    /// Whether `user_id` is a member of the team.
    pub(crate) fn has_member(&self, user_id: &str) -> bool {
        self.members.iter().any(|m| m.user_id == user_id)
    }

    /// Hands out the team's queue, oldest first, until it is empty or nobody can take the next one.
    pub(crate) async fn drain(&mut self, txn: &DatabaseTransaction, ctx: &Context) -> Result<Option<Queued>> {
        for _ in 0..DRAIN_BATCH {
            let Some(oldest) = self.oldest_queued(txn).await? else { return Ok(None) };
            if let (_, Some(queued)) = self.route(txn, ctx, &oldest, None).await? {
                return Ok(Some(queued));
            }
        }
        Ok(None)
    }

    /// Assigns the queued conversation `row` to the member `user_id`, not by the strategy: by hand,
    /// or taken by the member, as `reason` says. Overriding `limits`, the reason says what was
    /// overridden (their availability or capacity as read), which it returns.
    pub(crate) async fn assign_to(
        &mut self,
        txn: &DatabaseTransaction,
        ctx: &Context,
        row: &conversation::Model,
        user_id: &str,
        reason: &str,
        limits: Limits,
    ) -> Result<Option<&'static str>> {
        let now = ctx.now;
        let member = self
            .members
            .iter_mut()
            .find(|m| m.user_id == user_id)
            .ok_or(StoreError::Conflict(Conflict::NotEligible(NotEligible::NotAMember)))?;
        let overridden = match (limits, member.candidate().eligibility()) {
            (Limits::Override, Err(roster_assignment::Ineligible::Away)) => Some("away"),
            (Limits::Override, Err(roster_assignment::Ineligible::AtCapacity)) => Some("at capacity"),
            _ => None,
        };
        let reason = match overridden {
            Some(what) => format!("{reason}, overriding: {what}"),
            None => reason.to_owned(),
        };
        if !take(txn, user_id, member.capacity, now, None, limits).await? {
            refresh(txn, member).await?;
            return Err(match member.candidate().eligibility() {
                Err(why) => StoreError::Conflict(Conflict::NotEligible(NotEligible::Is(why))),
                Ok(()) => StoreError::Conflict(Conflict::Busy),
            });
        }
        member.open += 1;
        let row = update(txn, row, now, assign_changes(user_id, now, &reason, self.sequence())).await?;
        self.served(txn, None).await?;
        assigned(txn, ctx, &row).await?;
        Ok(overridden)
    }
}

/// Reads a member's status, availability and load again.
async fn refresh(txn: &DatabaseTransaction, member: &mut TeamMember) -> Result<()> {
    let row = user::Entity::find_by_id(member.user_id.clone())
        .one(txn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::User))?;
    member.status = UserStatus::from_stored(&row.status)?;
    member.availability = Availability::from_stored(&row.availability)?;
    member.open = u32::try_from(row.open_conversations).unwrap_or(0);
    Ok(())
}

/// The teams whose queues hold `user_id`'s open conversations, in the order of their ids.
/// The teams of `user_id`'s open conversations.
pub(crate) async fn teams_of(txn: &DatabaseTransaction, workspace_id: &str, user_id: &str) -> Result<BTreeSet<String>> {
    let teams = conversation::Entity::find()
        .select_only()
        .column(conversation::Column::TeamId)
        .distinct()
        .filter(conversation::Column::WorkspaceId.eq(workspace_id))
        .filter(conversation::Column::AssigneeId.eq(user_id))
        .filter(conversation::Column::Status.eq(ConversationStatus::Open.as_str()))
        .into_tuple::<String>()
        .all(txn)
        .await
        .map_err(classify)?;
    Ok(teams.into_iter().collect())
}

/// Locks the user rows of the members of `teams` and `also`, in the order of their ids.
async fn lock_users<'a>(
    txn: &DatabaseTransaction,
    workspace_id: &str,
    teams: impl IntoIterator<Item = &'a str>,
    also: Option<&str>,
) -> Result<()> {
    let members = team_member::Entity::find()
        .select_only()
        .column(team_member::Column::UserId)
        .filter(team_member::Column::TeamId.is_in(teams))
        .into_query();
    let mut which = Condition::any().add(user::Column::Id.in_subquery(members));
    if let Some(also) = also {
        which = which.add(user::Column::Id.eq(also));
    }
    user::Entity::find()
        .select_only()
        .column(user::Column::Id)
        .filter(user::Column::WorkspaceId.eq(workspace_id))
        .filter(which)
        .order_by_asc(user::Column::Id)
        .lock_exclusive()
        .into_tuple::<String>()
        .all(txn)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Deactivation's part. Before the user's row changes, [`Rerouting::lock`] locks the teams of their
/// open conversations and every member, in the order routing locks. Once the row says deactivated,
/// [`Rerouting::requeue_and_route`] puts those conversations back in their teams' queues and hands
/// the queues out again by each team's strategy, all in the deactivation's transaction.
pub(crate) struct Rerouting {
    teams: Vec<team::Model>,
}

impl Rerouting {
    /// Locks the teams of `user_id`'s open conversations and the teams `also`, in the order of their
    /// ids, then the user rows of their members and of `user_id`, in the order of theirs.
    pub(crate) async fn lock(
        txn: &DatabaseTransaction,
        workspace_id: &str,
        user_id: &str,
        also: &BTreeSet<String>,
    ) -> Result<Self> {
        let mut ids = teams_of(txn, workspace_id, user_id).await?;
        ids.extend(also.iter().cloned());
        let mut teams = Vec::with_capacity(ids.len());
        for id in &ids {
            match lock_team(txn, workspace_id, id).await {
                Ok(team) => teams.push(team),
                Err(StoreError::NotFound(Entity::Team)) => {}
                Err(err) => return Err(err),
            }
        }
        lock_users(txn, workspace_id, ids.iter().map(String::as_str), Some(user_id)).await?;
        Ok(Self { teams })
    }

    /// The ids of the teams it locked.
    pub(crate) fn team_ids(&self) -> impl Iterator<Item = &str> {
        self.teams.iter().map(|team| team.id.as_str())
    }

    /// Every open conversation of `user_id`, whose row already says deactivated (so no pick takes
    /// them any more), goes back to its team's queue, keeping the time it first queued (those
    /// customers have waited longest, so they go first); then each of those queues is handed out
    /// again. Done with how many conversations were requeued, or, when some are in teams this did
    /// not lock (assigned since the teams were read), those teams to lock too before starting again.
    pub(crate) async fn requeue_and_route(
        self,
        txn: &DatabaseTransaction,
        workspace_id: &str,
        user_id: &str,
        ctx: &Context,
    ) -> Result<Attempt<u64>> {
        let now = ctx.now;
        let mut missing = teams_of(txn, workspace_id, user_id).await?;
        missing.retain(|id| !self.teams.iter().any(|team| &team.id == id));
        if !missing.is_empty() {
            return Ok(Attempt::LockAlso(missing));
        }
        let requeued = conversation::Entity::find()
            .filter(conversation::Column::WorkspaceId.eq(workspace_id))
            .filter(conversation::Column::AssigneeId.eq(user_id))
            .filter(conversation::Column::Status.eq(ConversationStatus::Open.as_str()))
            .order_by_asc(conversation::Column::Id)
            .all(txn)
            .await
            .map_err(classify)?;
        let result = conversation::Entity::update_many()
            .col_expr(conversation::Column::AssigneeId, Expr::val(Option::<String>::None))
            .col_expr(conversation::Column::Reason, Expr::val(REQUEUED_REASON))
            .col_expr(conversation::Column::AssignedAt, Expr::val(Option::<i64>::None))
            .col_expr(conversation::Column::Sequence, Expr::val(Option::<i64>::None))
            .col_expr(conversation::Column::Version, Expr::col(conversation::Column::Version).add(1))
            .col_expr(conversation::Column::UpdatedAt, Expr::val(now))
            .filter(conversation::Column::WorkspaceId.eq(workspace_id))
            .filter(conversation::Column::AssigneeId.eq(user_id))
            .filter(conversation::Column::Status.eq(ConversationStatus::Open.as_str()))
            .exec(txn)
            .await
            .map_err(classify)?;
        user::Entity::update_many()
            .col_expr(user::Column::OpenConversations, Expr::val(0))
            .filter(user::Column::Id.eq(user_id))
            .exec(txn)
            .await
            .map_err(classify)?;
        for row in &requeued {
            let reason = REQUEUED_REASON.to_owned();
            let row = conversation::Model { assignee_id: None, reason, ..row.clone() };
            queued_event(txn, ctx, &row).await?;
        }
        for team in self.teams {
            // The members' rows are locked already.
            Routing::of(txn, team, Members::Read).await?.drain(txn, ctx).await?;
        }
        Ok(Attempt::Done(result.rows_affected))
    }
}

/// How an attempt that locks the teams it read first came out.
pub(crate) enum Attempt<T> {
    Done(T),
    /// It found work in these teams, which it had not locked: lock them too and start again.
    LockAlso(BTreeSet<String>),
}

/// The change feed's event for the conversation `row`, just assigned.
pub(crate) async fn assigned(txn: &DatabaseTransaction, ctx: &Context, row: &conversation::Model) -> Result<()> {
    let assignee = row.assignee_id.as_deref().unwrap_or_default();
    let details = [("assignee", assignee), ("team", row.team_id.as_str()), ("reason", row.reason.as_str())];
    events::record(txn, &row.workspace_id, ctx, "conversation.assigned", &format!("conversation:{}", row.id), &details)
        .await
}

/// The change feed's event for the conversation `row`, now waiting in its team's queue.
pub(crate) async fn queued_event(txn: &DatabaseTransaction, ctx: &Context, row: &conversation::Model) -> Result<()> {
    let details = [("team", row.team_id.as_str()), ("reason", row.reason.as_str())];
    events::record(txn, &row.workspace_id, ctx, "conversation.queued", &format!("conversation:{}", row.id), &details)
        .await
}
