//! Conversation assignment: routing by strategy, by hand, the team queue, transfers and resolves.
//!
//! Three rules keep the invariants across processes:
//! - Whatever changes a team's queue or round robin's turn holds the team's row lock
//!   ([`lock_team`]), so picks of one team are made one at a time with fresh counts.
//! - An agent's load is `users.open_conversations`, changed in the transaction that opens, moves
//!   or closes their conversation. Taking one more is one conditional update ([`take`]) that also
//!   requires them active and ONLINE, so no agent passes capacity even when two teams pick them at
//!   once, and a deactivation racing a pick either happens first (the pick fails) or sees the
//!   conversation and takes it back.
//! - A conversation row changes only if its version is the one read; otherwise the transaction
//!   rolls back and the whole call is retried ([`Store::retry`]), so a conversation never has two
//!   assignees and no count drifts.
//!
//! Locks are taken in one order: team, then users, then conversations.

use crate::entity::{conversation, team, team_member, user};
use crate::teams::{Read, load_members, lock_team};
use crate::{
    AssignRequest, AssignTo, Assigned, Availability, Conflict, Context, Conversation, ConversationFilter,
    ConversationStatus, Entity, NotEligible, Page, Result, Store, StoreError, TeamMember, UserStatus, audit, classify,
    commit,
};
use roster_assignment::{Capacity, ConversationId, Pick, Queued, Strategy, pick};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, QueryTrait, TryInsertResult, TryIntoModel,
};
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};

/// How many queued conversations one transaction hands out at most.
const DRAIN_BATCH: usize = 500;

fn to_conversation(row: conversation::Model) -> Result<Conversation> {
    Ok(Conversation {
        id: ConversationId::parse(&row.id)
            .map_err(|e| StoreError::Corrupt(format!("conversation {:?}: {e}", row.id)))?,
        status: ConversationStatus::from_stored(&row.status)?,
        workspace_id: row.workspace_id,
        team_id: row.team_id,
        assignee: row.assignee_id,
        reason: row.reason,
        queued_at: row.queued_at,
        assigned_at: row.assigned_at,
        resolved_at: row.resolved_at,
        sequence: row.sequence,
        version: row.version,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

async fn load<C: ConnectionTrait>(conn: &C, workspace_id: &str, id: &str) -> Result<Option<conversation::Model>> {
    conversation::Entity::find_by_id((workspace_id.to_owned(), id.to_owned())).one(conn).await.map_err(classify)
}

/// A conversation this transaction has just written or read; gone means a concurrent change won.
async fn reload(txn: &DatabaseTransaction, workspace_id: &str, id: &str) -> Result<conversation::Model> {
    load(txn, workspace_id, id).await?.ok_or(StoreError::Conflict(Conflict::Busy))
}

/// One more open conversation for `user_id`, if they are active, ONLINE and under `capacity`, and
/// (`Some(open)`) still have the `open` conversations the pick compared.
async fn take(
    txn: &DatabaseTransaction,
    user_id: &str,
    capacity: Capacity,
    now: i64,
    expect_open: Option<u32>,
) -> Result<bool> {
    let mut update = user::Entity::update_many()
        .col_expr(user::Column::OpenConversations, Expr::col(user::Column::OpenConversations).add(1))
        .col_expr(user::Column::LastAssignedAt, Expr::val(now))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::Status.eq(UserStatus::Active.as_str()))
        .filter(user::Column::Availability.eq(Availability::Online.as_str()));
    if capacity.max_open() > 0 {
        update = update.filter(user::Column::OpenConversations.lt(i64::from(capacity.max_open())));
    }
    if let Some(open) = expect_open {
        update = update.filter(user::Column::OpenConversations.eq(i64::from(open)));
    }
    Ok(update.exec(txn).await.map_err(classify)?.rows_affected == 1)
}

/// One open conversation fewer for `user_id`.
async fn release(txn: &DatabaseTransaction, user_id: &str) -> Result<()> {
    user::Entity::update_many()
        .col_expr(user::Column::OpenConversations, Expr::col(user::Column::OpenConversations).sub(1))
        .filter(user::Column::Id.eq(user_id))
        .filter(user::Column::OpenConversations.gt(0))
        .exec(txn)
        .await
        .map_err(classify)?;
    Ok(())
}

/// Writes `changes` to a conversation if it is still at the version read (otherwise the call is
/// retried from the start), and returns the row as written.
async fn update_conversation(
    txn: &DatabaseTransaction,
    row: &conversation::Model,
    now: i64,
    changes: Vec<(conversation::Column, sea_orm::Value)>,
) -> Result<conversation::Model> {
    let mut written = conversation::ActiveModel::from(row.clone());
    let mut update = conversation::Entity::update_many()
        .col_expr(conversation::Column::Version, Expr::val(row.version + 1))
        .col_expr(conversation::Column::UpdatedAt, Expr::val(now));
    for (column, value) in changes {
        written.try_set(column, value.clone()).map_err(classify)?;
        update = update.col_expr(column, Expr::val(value));
    }
    let result = update
        .filter(conversation::Column::WorkspaceId.eq(row.workspace_id.as_str()))
        .filter(conversation::Column::Id.eq(row.id.as_str()))
        .filter(conversation::Column::Version.eq(row.version))
        .exec(txn)
        .await
        .map_err(classify)?;
    if result.rows_affected != 1 {
        return Err(StoreError::Conflict(Conflict::Busy));
    }
    written.try_set(conversation::Column::Version, (row.version + 1).into()).map_err(classify)?;
    written.try_set(conversation::Column::UpdatedAt, now.into()).map_err(classify)?;
    written.try_into_model().map_err(classify)
}

/// Puts a conversation at the back of its team's queue: no assignee, open, `reason`.
fn queue_changes(team_id: &str, now: i64, reason: &str) -> Vec<(conversation::Column, sea_orm::Value)> {
    vec![
        (conversation::Column::TeamId, team_id.into()),
        (conversation::Column::AssigneeId, Option::<String>::None.into()),
        (conversation::Column::Status, ConversationStatus::Open.as_str().into()),
        (conversation::Column::Reason, reason.into()),
        (conversation::Column::QueuedAt, now.into()),
        (conversation::Column::AssignedAt, Option::<i64>::None.into()),
        (conversation::Column::ResolvedAt, Option::<i64>::None.into()),
        (conversation::Column::Sequence, Option::<i64>::None.into()),
    ]
}

fn assign_changes(user_id: &str, now: i64, reason: &str, sequence: i64) -> Vec<(conversation::Column, sea_orm::Value)> {
    vec![
        (conversation::Column::AssigneeId, Some(user_id.to_owned()).into()),
        (conversation::Column::Reason, reason.into()),
        (conversation::Column::AssignedAt, Some(now).into()),
        (conversation::Column::Sequence, Some(sequence).into()),
    ]
}

/// Open and unassigned: in a queue. The status is written as a literal, not a bind parameter:
/// PostgreSQL uses the queues' partial index only for a predicate it can prove from the query, and
/// the generic plan of a prepared statement cannot prove that `status = $1` means `'OPEN'` (it
/// walked every open conversation of the team instead, slower with every assignment).
fn queued() -> Condition {
    Condition::all()
        .add(
            Expr::col((conversation::Entity, conversation::Column::Status))
                .eq(Expr::cust(format!("'{}'", ConversationStatus::Open.as_str()))),
        )
        .add(conversation::Column::AssigneeId.is_null())
}

/// Who a pick gave a conversation to, why, and their place in the team's order.
struct Taken {
    user_id: String,
    reason: String,
    position: i64,
}

/// A locked team with its members, as the picks of one transaction see it.
struct Routing {
    team: team::Model,
    strategy: Strategy,
    members: Vec<TeamMember>,
}

impl Routing {
    /// Locks the team, then its members' user rows and `also` (an assignee being released), all in
    /// the order of their ids.
    async fn lock(txn: &DatabaseTransaction, workspace_id: &str, team_id: &str, also: Option<&str>) -> Result<Self> {
        let team = lock_team(txn, workspace_id, team_id).await?;
        Self::of(txn, team, Some(also)).await
    }

    /// The routing of a team already locked. `lock`: `Some(also)` to lock the members' user rows
    /// (and `also`) in the order of their ids, as any transaction that may take or release more
    /// than one agent must; `None` to read them as they are, for a transaction that takes at most
    /// one agent (its conditional update locks that one row only, so it cannot deadlock).
    async fn of(txn: &DatabaseTransaction, team: team::Model, lock: Option<Option<&str>>) -> Result<Self> {
        let strategy = Strategy::from_stored(&team.strategy)
            .ok_or_else(|| StoreError::Corrupt(format!("team {}: strategy", team.id)))?;
        let team_id = team.id.as_str();
        let members = match lock {
            None => load_members(txn, team_id, Read::All).await?,
            Some(None) => load_members(txn, team_id, Read::LockAll).await?,
            Some(Some(also)) => {
                lock_users(txn, &team.workspace_id, [team_id], Some(also)).await?;
                load_members(txn, team_id, Read::All).await?
            }
        };
        Ok(Self { team, strategy, members })
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
            if !take(txn, &user_id, member.capacity, now, expect_open).await? {
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
    async fn route(
        &mut self,
        txn: &DatabaseTransaction,
        now: i64,
        row: &conversation::Model,
        exclude: Option<&str>,
    ) -> Result<(conversation::Model, Option<Queued>)> {
        match self.pick_and_take(txn, now, exclude).await? {
            Err(queued) => {
                let reason = queued.to_string();
                if row.reason == reason {
                    return Ok((row.clone(), Some(queued)));
                }
                let row =
                    update_conversation(txn, row, now, vec![(conversation::Column::Reason, reason.into())]).await?;
                Ok((row, Some(queued)))
            }
            Ok(taken) => {
                let changes = assign_changes(&taken.user_id, now, &taken.reason, self.sequence());
                let row = update_conversation(txn, row, now, changes).await?;
                self.served(txn, Some(taken.position)).await?;
                Ok((row, None))
            }
        }
    }

    /// Routes a conversation Roster has not seen and writes it once, assigned or queued with its
    /// reason: the common case, one insert. `None` when it exists after all (the caller starts
    /// again on the general path; rolling back undoes the take).
    async fn insert_routed(
        &mut self,
        txn: &DatabaseTransaction,
        now: i64,
        fresh: &conversation::Model,
    ) -> Result<Option<conversation::Model>> {
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
        if let Some(taken) = &taken {
            self.served(txn, Some(taken.position)).await?;
        }
        Ok(Some(row))
    }

    /// Whether `team`'s queue holds a conversation other than `except`.
    async fn has_queue(txn: &DatabaseTransaction, team: &team::Model, except: &str) -> Result<bool> {
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

    /// Hands out the team's queue, oldest first, until it is empty or nobody can take the next one.
    async fn drain(&mut self, txn: &DatabaseTransaction, now: i64) -> Result<Option<Queued>> {
        for _ in 0..DRAIN_BATCH {
            let oldest = conversation::Entity::find()
                .filter(conversation::Column::WorkspaceId.eq(self.team.workspace_id.as_str()))
                .filter(conversation::Column::TeamId.eq(self.team.id.as_str()))
                .filter(queued())
                .order_by_asc(conversation::Column::QueuedAt)
                .order_by_asc(conversation::Column::Id)
                .one(txn)
                .await
                .map_err(classify)?;
            let Some(oldest) = oldest else { return Ok(None) };
            if let (_, Some(queued)) = self.route(txn, now, &oldest, None).await? {
                return Ok(Some(queued));
            }
        }
        Ok(None)
    }

    /// Assigns the queued conversation `row` to the member `user_id` by hand.
    async fn assign_to(
        &mut self,
        txn: &DatabaseTransaction,
        now: i64,
        row: &conversation::Model,
        user_id: &str,
    ) -> Result<()> {
        let member = self
            .members
            .iter_mut()
            .find(|m| m.user_id == user_id)
            .ok_or(StoreError::Conflict(Conflict::NotEligible(NotEligible::NotAMember)))?;
        if !take(txn, user_id, member.capacity, now, None).await? {
            refresh(txn, member).await?;
            return Err(match member.candidate().eligibility() {
                Err(why) => StoreError::Conflict(Conflict::NotEligible(NotEligible::Is(why))),
                Ok(()) => StoreError::Conflict(Conflict::Busy),
            });
        }
        member.open += 1;
        update_conversation(txn, row, now, assign_changes(user_id, now, "assigned by hand", self.sequence())).await?;
        self.served(txn, None).await
    }
}

/// Refuses to act on a conversation whose assignee is no longer the one a person's permission was
/// decided on (a grant with scope ASSIGNED covers only their own).
fn ensure_decided_on(row: &conversation::Model, decided_on: Option<Option<&str>>) -> Result<()> {
    match decided_on {
        Some(assignee) if row.assignee_id.as_deref() != assignee => Err(StoreError::Conflict(Conflict::Changed)),
        _ => Ok(()),
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

impl Store {
    /// Runs `op` again while it reports [`Conflict::Busy`] (a concurrent change of the same rows
    /// won), a few times.
    async fn retry<T, F, Fut>(&self, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(StoreError::Conflict(Conflict::Busy)) if attempt < 8 => attempt += 1,
                other => return other,
            }
        }
    }

    /// AssignConversation; see `AssignmentService` in the API for the rules.
    pub async fn assign_conversation(
        &self,
        ctx: &Context,
        workspace_id: &str,
        req: &AssignRequest,
    ) -> Result<Assigned> {
        let exists = AtomicBool::new(false);
        self.retry(|| self.try_assign(ctx, workspace_id, req, &exists)).await
    }

    /// One attempt; `exists` is set once the conversation turned out to exist, so that the next
    /// attempt goes the general way.
    async fn try_assign(
        &self,
        ctx: &Context,
        workspace_id: &str,
        req: &AssignRequest,
        exists: &AtomicBool,
    ) -> Result<Assigned> {
        let now = ctx.now;
        let id = req.conversation.as_str();
        // What the call needs to know before it locks: the team (when omitted) and, for a transfer,
        // whose load it releases (locked with the team's members, in order).
        let before = match (&req.team_id, req.transfer) {
            (Some(_), false) => None,
            _ => load(&self.db, workspace_id, id).await?,
        };
        let team_id = match (&req.team_id, &before) {
            (Some(team_id), _) => team_id.clone(),
            (None, Some(row)) => row.team_id.clone(),
            (None, None) => return Err(StoreError::NotFound(Entity::Conversation)),
        };
        let releasing = before.as_ref().filter(|_| req.transfer).and_then(|row| row.assignee_id.clone());
        let txn = self.write().await?;
        let team = lock_team(&txn, workspace_id, &team_id).await?;
        // The common case, a conversation Roster has not seen: it joins the team's queue.
        let fresh = conversation::Model {
            workspace_id: workspace_id.to_owned(),
            id: id.to_owned(),
            team_id: team_id.clone(),
            assignee_id: None,
            status: ConversationStatus::Open.as_str().to_owned(),
            reason: "queued".to_owned(),
            queued_at: now,
            assigned_at: None,
            resolved_at: None,
            sequence: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        // A new conversation by strategy with nothing queued before it: routed and written at once.
        if req.to == AssignTo::Auto
            && before.is_none()
            && !exists.load(Ordering::Relaxed)
            && !Routing::has_queue(&txn, &team, id).await?
        {
            let mut routing = Routing::of(&txn, team, None).await?;
            let Some(row) = routing.insert_routed(&txn, now, &fresh).await? else {
                exists.store(true, Ordering::Relaxed);
                return Err(StoreError::Conflict(Conflict::Busy));
            };
            let conversation = to_conversation(row)?;
            commit(txn).await?;
            return Ok(Assigned { conversation, changed: true, freed: false });
        }
        let inserted = conversation::Entity::insert(conversation::ActiveModel::from(fresh.clone()))
            .on_conflict_do_nothing()
            .exec_without_returning(&txn)
            .await
            .map_err(classify)?;
        if matches!(inserted, TryInsertResult::Inserted(n) if n > 0) {
            // Routed alone, or given by hand, it takes one agent at most: the members are read as
            // they are. Draining a queue may take several: they are locked in order.
            let alone = req.to != AssignTo::Auto || !Routing::has_queue(&txn, &team, id).await?;
            let mut routing = Routing::of(&txn, team, if alone { None } else { Some(None) }).await?;
            let row = match req.to.clone() {
                AssignTo::User(user_id) => {
                    routing.assign_to(&txn, now, &fresh, &user_id).await?;
                    audit::record(
                        &txn,
                        workspace_id,
                        ctx,
                        "conversation.assigned",
                        &format!("conversation:{id}"),
                        &[("assignee", user_id.as_str()), ("team", team_id.as_str())],
                    )
                    .await?;
                    reload(&txn, workspace_id, id).await?
                }
                // Nothing waited before it: it is routed alone.
                AssignTo::Auto if alone => routing.route(&txn, now, &fresh, None).await?.0,
                // Oldest first: what was queued before it goes first.
                AssignTo::Auto => {
                    let queued = routing.drain(&txn, now).await?;
                    let row = reload(&txn, workspace_id, id).await?;
                    match queued.map(|q| q.to_string()) {
                        Some(reason) if row.assignee_id.is_none() && row.reason != reason => {
                            update_conversation(&txn, &row, now, vec![(conversation::Column::Reason, reason.into())])
                                .await?
                        }
                        _ => row,
                    }
                }
            };
            let conversation = to_conversation(row)?;
            commit(txn).await?;
            return Ok(Assigned { conversation, changed: true, freed: false });
        }
        let mut routing = Routing::of(&txn, team, Some(releasing.as_deref())).await?;
        let row = reload(&txn, workspace_id, id).await?;
        ensure_decided_on(&row, req.decided_on.as_ref().map(Option::as_deref))?;
        let version_before = row.version;
        let open = row.status == ConversationStatus::Open.as_str();
        if req.transfer && open && row.assignee_id != releasing {
            // Its assignee changed since it was read: start again with the new one locked.
            return Err(StoreError::Conflict(Conflict::Busy));
        }
        let mut freed = false;
        let mut audit_details: Option<(&str, Vec<(&str, String)>)> = None;
        // Only an open conversation moves; a resolved one is simply reopened.
        let moving = req.transfer && open;
        let row = if open {
            if row.team_id != team_id && !req.transfer {
                return Err(match req.team_id {
                    Some(_) => StoreError::Conflict(Conflict::OtherTeam),
                    // It moved since its team was read.
                    None => StoreError::Conflict(Conflict::Busy),
                });
            }
            match (&row.assignee_id, &req.to, req.transfer) {
                (Some(current), AssignTo::User(to), _) if current == to && row.team_id == team_id => {
                    return Ok(Assigned { conversation: to_conversation(row)?, changed: false, freed });
                }
                (Some(_), AssignTo::Auto, false) => {
                    return Ok(Assigned { conversation: to_conversation(row)?, changed: false, freed });
                }
                (Some(_), AssignTo::User(_), false) => return Err(StoreError::Conflict(Conflict::AlreadyAssigned)),
                (None, _, false) => row,
                (previous, to, true) => {
                    // A transfer: back to the queue of the (new) team first, then on.
                    if let Some(previous) = previous {
                        release(&txn, previous).await?;
                        if let Some(member) = routing.members.iter_mut().find(|m| &m.user_id == previous) {
                            member.open = member.open.saturating_sub(1);
                        }
                        // Their room may let a queued conversation of any of their teams go to them.
                        freed = true;
                    }
                    if row.team_id != team_id {
                        freed = true;
                    }
                    let to_text = match to {
                        AssignTo::User(user) => user.clone(),
                        AssignTo::Auto => "by strategy".to_owned(),
                    };
                    audit_details = Some((
                        "conversation.transferred",
                        vec![
                            ("from", previous.clone().unwrap_or_default()),
                            ("to", to_text),
                            ("from_team", row.team_id.clone()),
                            ("team", team_id.clone()),
                        ],
                    ));
                    let row = update_conversation(&txn, &row, now, queue_changes(&team_id, now, "queued: transferred"))
                        .await?;
                    if *to == AssignTo::Auto {
                        // To someone else, straight away: a transfer does not wait its turn.
                        routing.route(&txn, now, &row, previous.as_deref()).await?.0
                    } else {
                        row
                    }
                }
            }
        } else {
            // Resolved: the customer wrote again. Reopen it in the team's queue.
            update_conversation(&txn, &row, now, queue_changes(&team_id, now, "queued")).await?
        };
        // `row` is open in `team_id`: queued, or (after an auto transfer) assigned.
        if row.assignee_id.is_none() {
            match &req.to {
                AssignTo::User(user_id) => {
                    routing.assign_to(&txn, now, &row, user_id).await?;
                    if audit_details.is_none() {
                        audit_details = Some((
                            "conversation.assigned",
                            vec![("assignee", user_id.clone()), ("team", team_id.clone())],
                        ));
                    }
                }
                AssignTo::Auto if !moving => {
                    // Oldest first: anything queued before it goes first.
                    if let Some(queued) = routing.drain(&txn, now).await? {
                        let current = reload(&txn, workspace_id, id).await?;
                        let reason = queued.to_string();
                        if current.assignee_id.is_none() && current.reason != reason {
                            update_conversation(
                                &txn,
                                &current,
                                now,
                                vec![(conversation::Column::Reason, reason.into())],
                            )
                            .await?;
                        }
                    }
                }
                AssignTo::Auto => {}
            }
        }
        if let Some((action, details)) = &audit_details {
            let details: Vec<(&str, &str)> = details.iter().map(|(k, v)| (*k, v.as_str())).collect();
            audit::record(&txn, workspace_id, ctx, action, &format!("conversation:{id}"), &details).await?;
        }
        let conversation = to_conversation(reload(&txn, workspace_id, id).await?)?;
        commit(txn).await?;
        let changed = conversation.version != version_before;
        Ok(Assigned { conversation, changed, freed })
    }

    /// UnassignConversation: back to the team's queue, which is then handed out again.
    /// `decided_on` as in [`AssignRequest::decided_on`].
    pub async fn unassign_conversation(
        &self,
        ctx: &Context,
        workspace_id: &str,
        id: &ConversationId,
        decided_on: Option<Option<&str>>,
    ) -> Result<Conversation> {
        self.retry(|| async {
            let row =
                load(&self.db, workspace_id, id.as_str()).await?.ok_or(StoreError::NotFound(Entity::Conversation))?;
            let txn = self.write().await?;
            let mut routing = Routing::lock(&txn, workspace_id, &row.team_id, row.assignee_id.as_deref()).await?;
            let read = row;
            let row = load(&txn, workspace_id, id.as_str()).await?.ok_or(StoreError::NotFound(Entity::Conversation))?;
            if row.team_id != read.team_id || row.assignee_id != read.assignee_id {
                return Err(StoreError::Conflict(Conflict::Busy));
            }
            ensure_decided_on(&row, decided_on)?;
            if row.status == ConversationStatus::Resolved.as_str() {
                return Err(StoreError::Conflict(Conflict::Resolved));
            }
            let Some(previous) = row.assignee_id.clone() else { return to_conversation(row) };
            release(&txn, &previous).await?;
            if let Some(member) = routing.members.iter_mut().find(|m| m.user_id == previous) {
                member.open = member.open.saturating_sub(1);
            }
            let row =
                update_conversation(&txn, &row, ctx.now, queue_changes(&row.team_id, ctx.now, "queued: unassigned"))
                    .await?;
            // To someone else by the team's strategy, if anyone can take it (or back to the queue),
            // then whatever waited may go to the agent who now has room.
            routing.route(&txn, ctx.now, &row, Some(&previous)).await?;
            audit::record(
                &txn,
                workspace_id,
                ctx,
                "conversation.unassigned",
                &format!("conversation:{id}"),
                &[("from", previous.as_str())],
            )
            .await?;
            routing.drain(&txn, ctx.now).await?;
            let conversation = to_conversation(reload(&txn, workspace_id, id.as_str()).await?)?;
            commit(txn).await?;
            Ok(conversation)
        })
        .await
    }

    /// ResolveConversation: closed, its assignee's capacity freed. Resolving twice changes nothing.
    /// `decided_on` as in [`AssignRequest::decided_on`].
    pub async fn resolve_conversation(
        &self,
        ctx: &Context,
        workspace_id: &str,
        id: &ConversationId,
        decided_on: Option<Option<&str>>,
    ) -> Result<Conversation> {
        self.retry(|| async {
            let txn = self.write().await?;
            let row = load(&txn, workspace_id, id.as_str()).await?.ok_or(StoreError::NotFound(Entity::Conversation))?;
            ensure_decided_on(&row, decided_on)?;
            if row.status == ConversationStatus::Resolved.as_str() {
                return to_conversation(row);
            }
            if let Some(assignee) = &row.assignee_id {
                release(&txn, assignee).await?;
            }
            update_conversation(
                &txn,
                &row,
                ctx.now,
                vec![
                    (conversation::Column::Status, ConversationStatus::Resolved.as_str().into()),
                    (conversation::Column::ResolvedAt, Some(ctx.now).into()),
                ],
            )
            .await?;
            let conversation = to_conversation(reload(&txn, workspace_id, id.as_str()).await?)?;
            commit(txn).await?;
            Ok(conversation)
        })
        .await
    }

    /// One conversation's assignment.
    pub async fn conversation(&self, workspace_id: &str, id: &ConversationId) -> Result<Conversation> {
        to_conversation(
            load(&self.db, workspace_id, id.as_str()).await?.ok_or(StoreError::NotFound(Entity::Conversation))?,
        )
    }

    /// Conversations by id, starting after the id `after`.
    pub async fn list_conversations(
        &self,
        workspace_id: &str,
        filter: &ConversationFilter,
        after: Option<&str>,
        limit: u64,
    ) -> Result<Page<Conversation>> {
        let status = filter.status.unwrap_or(ConversationStatus::Open);
        let mut query = conversation::Entity::find()
            .filter(conversation::Column::WorkspaceId.eq(workspace_id))
            .filter(conversation::Column::Status.eq(status.as_str()));
        if let Some(assignee) = &filter.assignee {
            query = query.filter(conversation::Column::AssigneeId.eq(assignee.as_str()));
        }
        if let Some(team) = &filter.team {
            query = query.filter(conversation::Column::TeamId.eq(team.as_str()));
        }
        if filter.queued {
            query = query.filter(conversation::Column::AssigneeId.is_null());
        }
        if let Some(after) = after {
            query = query.filter(conversation::Column::Id.gt(after));
        }
        let rows =
            query.order_by_asc(conversation::Column::Id).limit(limit + 1).all(&self.db).await.map_err(classify)?;
        let more = rows.len() as u64 > limit;
        let items = rows.into_iter().take(limit as usize).map(to_conversation).collect::<Result<Vec<_>>>()?;
        let next = if more { items.last().map(|c| c.id.as_str().to_owned()) } else { None };
        Ok(Page { items, next })
    }

    /// The workspaces that have queued conversations, for the periodic sweep.
    pub async fn workspaces_with_queues(&self) -> Result<Vec<String>> {
        conversation::Entity::find()
            .select_only()
            .column(conversation::Column::WorkspaceId)
            .distinct()
            .filter(queued())
            .into_tuple::<String>()
            .all(&self.db)
            .await
            .map_err(classify)
    }

    /// Hands out the queues of every team of the workspace that has queued conversations, each in
    /// its own transaction. Called after anything that can make an agent eligible.
    pub async fn drain_queues(&self, ctx: &Context, workspace_id: &str) -> Result<u64> {
        let teams: Vec<String> = conversation::Entity::find()
            .select_only()
            .column(conversation::Column::TeamId)
            .distinct()
            .filter(conversation::Column::WorkspaceId.eq(workspace_id))
            .filter(queued())
            .into_tuple::<String>()
            .all(&self.db)
            .await
            .map_err(classify)?;
        for team_id in &teams {
            self.retry(|| async {
                let txn = self.write().await?;
                let mut routing = match Routing::lock(&txn, workspace_id, team_id, None).await {
                    Err(StoreError::NotFound(Entity::Team)) => return Ok(()),
                    other => other?,
                };
                routing.drain(&txn, ctx.now).await?;
                commit(txn).await
            })
            .await?;
        }
        Ok(teams.len() as u64)
    }
}

/// The teams whose queues hold `user_id`'s open conversations, in the order of their ids.
async fn teams_of(txn: &DatabaseTransaction, workspace_id: &str, user_id: &str) -> Result<BTreeSet<String>> {
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
        now: i64,
    ) -> Result<Attempt<u64>> {
        let mut missing = teams_of(txn, workspace_id, user_id).await?;
        missing.retain(|id| !self.teams.iter().any(|team| &team.id == id));
        if !missing.is_empty() {
            return Ok(Attempt::LockAlso(missing));
        }
        let result = conversation::Entity::update_many()
            .col_expr(conversation::Column::AssigneeId, Expr::val(Option::<String>::None))
            .col_expr(conversation::Column::Reason, Expr::val("queued: the assignee was deactivated"))
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
        for team in self.teams {
            // The members' rows are locked already.
            Routing::of(txn, team, None).await?.drain(txn, now).await?;
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
