//! Conversation assignment: each call reads the conversation under its team's lock, asks
//! [`roster_assignment::decide`] what to do, and carries the plan out in the same transaction
//! (routing in [`crate::routing`]).

use crate::entity::conversation;
use crate::events::{self, Stream};
use crate::routing::{Limits, Members, Routing, queued_event, release};
use crate::rows::conversation::{load, queue_changes, queued, reload, to_conversation, update};
use crate::rows::team;
use crate::{
    AssignRequest, Assigned, Changed, Conflict, Context, Conversation, ConversationFilter, ConversationStatus, Effects,
    Entity, Page, Result, Store, StoreError, audit, classify, commit,
};
use roster_assignment::{Action, ConversationId, Kind, Plan, Refusal, Route, Seen, Target, Then, decide};
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect, QueryTrait, TryInsertResult,
};
use std::sync::atomic::{AtomicBool, Ordering};

/// What the domain sees of a conversation row.
fn view(row: &conversation::Model) -> roster_assignment::Conversation<'_> {
    roster_assignment::Conversation {
        team_id: &row.team_id,
        assignee: row.assignee_id.as_deref(),
        resolved: row.status == ConversationStatus::Resolved.as_str(),
    }
}

fn refused(refusal: Refusal) -> StoreError {
    StoreError::Conflict(match refusal {
        Refusal::AlreadyAssigned => Conflict::AlreadyAssigned,
        Refusal::OtherTeam => Conflict::OtherTeam,
        Refusal::Resolved => Conflict::Resolved,
        Refusal::Changed => Conflict::Changed,
    })
}

/// What a route did: the conversation as written, and whether an agent's load was released or a
/// team left (queues elsewhere may now be handed out).
struct Routed {
    row: conversation::Model,
    freed: bool,
}

impl Store {
    /// AssignConversation; see `AssignmentService` in the API for the rules.
    pub async fn assign_conversation(
        &self,
        ctx: &Context,
        workspace_id: &str,
        req: &AssignRequest<'_>,
    ) -> Result<Changed<Assigned>> {
        let exists = AtomicBool::new(false);
        self.retry(|| self.try_assign(ctx, workspace_id, req, &exists)).await
    }

    /// One attempt; `exists` is set once the conversation turned out to exist, so that the next
    /// attempt goes the general way.
    async fn try_assign(
        &self,
        ctx: &Context,
        workspace_id: &str,
        req: &AssignRequest<'_>,
        exists: &AtomicBool,
    ) -> Result<Changed<Assigned>> {
        let now = ctx.now;
        let id = req.conversation.as_str();
        // What the call needs to know before it locks: the team (when omitted) and, for a transfer,
        // whose load it releases (locked with the team's members, in order).
        let before = match (req.team_id, req.transfer) {
            (Some(_), false) => None,
            _ => load(&self.db, workspace_id, id).await?,
        };
        let team_id = match (req.team_id, &before) {
            (Some(team_id), _) => team_id.to_owned(),
            (None, Some(row)) => row.team_id.clone(),
            (None, None) => return Err(StoreError::NotFound(Entity::Conversation)),
        };
        let releasing = before.as_ref().filter(|_| req.transfer).and_then(|row| row.assignee_id.clone());
        // A transfer's events belong to the team it leaves too.
        let from_team = before.as_ref().filter(|_| req.transfer).map(|row| row.team_id.as_str());
        let streams: Vec<Stream> =
            [Some(team_id.as_str()), from_team].into_iter().flatten().map(Stream::Team).collect();
        let txn = self.write_in(&streams).await?;
        let team = team::lock(&txn, workspace_id, &team_id).await?;
        let fresh = conversation::Model {
            workspace_id: workspace_id.to_owned(),
            id: id.to_owned(),
            team_id: team_id.clone(),
            assignee_id: None,
            status: ConversationStatus::Open.as_str().to_owned(),
            reason: Kind::New.queued_reason().to_owned(),
            queued_at: now,
            assigned_at: None,
            resolved_at: None,
            sequence: None,
            version: 1,
            created_at: now,
            updated_at: now,
        };
        // The common case, a new conversation by strategy with nothing queued before it: routed
        // and written at once, in one insert.
        if req.to == Target::Strategy
            && before.is_none()
            && !exists.load(Ordering::Relaxed)
            && !Routing::has_queue(&txn, &team, id).await?
        {
            let mut routing = Routing::of(&txn, team, Members::Read).await?;
            let Some(row) = routing.insert_routed(&txn, ctx, &fresh).await? else {
                exists.store(true, Ordering::Relaxed);
                return Err(StoreError::Conflict(Conflict::Busy));
            };
            let conversation = to_conversation(row)?;
            commit(txn).await?;
            return Ok(Changed::new(Assigned { conversation, changed: true }));
        }
        let inserted = conversation::Entity::insert(conversation::ActiveModel::from(fresh.clone()))
            .on_conflict_do_nothing()
            .exec_without_returning(&txn)
            .await
            .map_err(classify)?;
        let current = match inserted {
            TryInsertResult::Inserted(n) if n > 0 => None,
            _ => Some(reload(&txn, workspace_id, id).await?),
        };
        if let Some(row) = &current {
            let open = row.status == ConversationStatus::Open.as_str();
            // It moved since it was read, or it is in a team whose stream this call does not hold
            // (it was created meanwhile): start again with what it is now.
            let moved = (req.team_id.is_none() || req.transfer)
                && row.team_id != team_id
                && Some(row.team_id.as_str()) != from_team;
            if moved || (req.transfer && open && row.assignee_id != releasing) {
                return Err(StoreError::Conflict(Conflict::Busy));
            }
        }
        let action = Action::Assign { team_id: &team_id, to: req.to, transfer: req.transfer };
        let route = match decide(current.as_ref().map(view), action, req.seen) {
            Plan::Route(route) => route,
            Plan::Refused(refusal) => return Err(refused(refusal)),
            Plan::Unchanged | Plan::Resolve { .. } => {
                let conversation = to_conversation(current.unwrap_or(fresh))?;
                return Ok(Changed::new(Assigned { conversation, changed: false }));
            }
        };
        // A new conversation given by hand, or with nothing queued before it, takes one agent at
        // most: the members are read as they are. Anything else may take or release several.
        let members = match (&current, route.then) {
            (None, Then::User(_)) => Members::Read,
            (None, _) if !Routing::has_queue(&txn, &team, id).await? => Members::Read,
            _ => Members::Lock { also: route.release },
        };
        let mut routing = Routing::of(&txn, team, members).await?;
        let version_before = current.as_ref().map(|row| row.version);
        let row = current.clone().unwrap_or(fresh);
        let routed = carry_out(&txn, ctx, &mut routing, row, &route, req.limits).await?;
        // Handing out a queue may leave a queued conversation exactly as it was.
        let changed = version_before != Some(routed.row.version);
        let conversation = to_conversation(routed.row)?;
        commit(txn).await?;
        let effects = Effects { room: routed.freed, ..Effects::default() };
        Ok(Changed { value: Assigned { conversation, changed }, effects })
    }

    /// UnassignConversation: back to the team's queue and on to someone else by the team's
    /// strategy; the agent who gave it up has room again.
    pub async fn unassign_conversation(
        &self,
        ctx: &Context,
        workspace_id: &str,
        id: &ConversationId,
        seen: Seen<'_>,
    ) -> Result<Changed<Conversation>> {
        self.retry(|| self.try_act(ctx, workspace_id, id, Action::Unassign, seen)).await
    }

    /// ResolveConversation: closed, its assignee's load released. Resolving twice changes nothing.
    pub async fn resolve_conversation(
        &self,
        ctx: &Context,
        workspace_id: &str,
        id: &ConversationId,
        seen: Seen<'_>,
    ) -> Result<Changed<Conversation>> {
        self.retry(|| self.try_act(ctx, workspace_id, id, Action::Resolve, seen)).await
    }

    /// One attempt of an unassign or a resolve: the conversation's team and assignee are read
    /// first and locked in order (team, then users); if either changed in between, it starts again.
    /// A resolve routes nothing and releases one agent at most (one conditional update, which
    /// cannot deadlock), so it locks no team: a resolved conversation may outlive its team.
    async fn try_act(
        &self,
        ctx: &Context,
        workspace_id: &str,
        id: &ConversationId,
        action: Action<'_>,
        seen: Seen<'_>,
    ) -> Result<Changed<Conversation>> {
        let read =
            load(&self.db, workspace_id, id.as_str()).await?.ok_or(StoreError::NotFound(Entity::Conversation))?;
        let txn = self.write_in(&[Stream::Team(&read.team_id)]).await?;
        let members = Members::Lock { also: read.assignee_id.as_deref() };
        let routing = match action {
            Action::Resolve => None,
            _ => Some(Routing::lock(&txn, workspace_id, &read.team_id, members).await?),
        };
        let row = reload(&txn, workspace_id, id.as_str()).await?;
        if row.team_id != read.team_id || row.assignee_id != read.assignee_id {
            return Err(StoreError::Conflict(Conflict::Busy));
        }
        let (row, freed) = match decide(Some(view(&row)), action, seen) {
            Plan::Unchanged => return Ok(Changed::new(to_conversation(row)?)),
            Plan::Refused(refusal) => return Err(refused(refusal)),
            Plan::Resolve { release: assignee } => {
                if let Some(assignee) = assignee {
                    release(&txn, assignee).await?;
                }
                let changes = vec![
                    (conversation::Column::Status, ConversationStatus::Resolved.as_str().into()),
                    (conversation::Column::ResolvedAt, Some(ctx.now).into()),
                ];
                let row = update(&txn, &row, ctx.now, changes).await?;
                let details = [("team", row.team_id.as_str()), ("previous_assignee", assignee.unwrap_or_default())];
                let target = format!("conversation:{}", row.id);
                events::record(&txn, workspace_id, ctx, "conversation.resolved", &target, &details).await?;
                (row, assignee.is_some())
            }
            Plan::Route(route) => {
                let mut routing = match routing {
                    Some(routing) => routing,
                    None => Routing::lock(&txn, workspace_id, route.team_id, members).await?,
                };
                let routed = carry_out(&txn, ctx, &mut routing, row.clone(), &route, Limits::Respect).await?;
                (routed.row, routed.freed)
            }
        };
        let conversation = to_conversation(row)?;
        commit(txn).await?;
        Ok(Changed { value: conversation, effects: Effects { room: freed, ..Effects::default() } })
    }

    /// TakeConversation: the conversation `id` waiting in the team's queue (`None`: the one that
    /// has waited longest) for its member `user_id`, under the team's lock, so that of several
    /// takers exactly one gets it and the others find it gone. Eligibility is any assignment's.
    pub async fn take_conversation(
        &self,
        ctx: &Context,
        workspace_id: &str,
        team_id: &str,
        user_id: &str,
        id: Option<&ConversationId>,
    ) -> Result<Changed<Conversation>> {
        self.retry(|| async {
            let txn = self.write_in(&[Stream::Team(team_id)]).await?;
            let mut routing = Routing::lock(&txn, workspace_id, team_id, Members::Read).await?;
            if !routing.has_member(user_id) {
                return Err(StoreError::Conflict(Conflict::NotEligible(crate::NotEligible::NotAMember)));
            }
            let row = match id {
                Some(id) => {
                    let row = load(&txn, workspace_id, id.as_str())
                        .await?
                        .ok_or(StoreError::NotFound(Entity::Conversation))?;
                    let waiting = row.team_id == team_id
                        && row.assignee_id.is_none()
                        && row.status == ConversationStatus::Open.as_str();
                    if !waiting {
                        return Err(StoreError::Conflict(Conflict::NotQueued));
                    }
                    row
                }
                None => routing.oldest_queued(&txn).await?.ok_or(StoreError::Conflict(Conflict::QueueEmpty))?,
            };
            routing.assign_to(&txn, ctx, &row, user_id, "taken from the queue", Limits::Respect).await?;
            let row = reload(&txn, workspace_id, &row.id).await?;
            let details = [("assignee", user_id), ("team", team_id)];
            audit::record(&txn, workspace_id, ctx, "conversation.taken", &format!("conversation:{}", row.id), &details)
                .await?;
            let conversation = to_conversation(row)?;
            commit(txn).await?;
            Ok(Changed::new(conversation))
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

    /// The workspaces with queued conversations; with `changed_after`, only those whose stream
    /// (conversations included) has an event after it, committed ones beyond the feed's head too:
    /// a change that may have made an agent eligible writes one.
    pub async fn workspaces_with_queues(&self, changed_after: Option<events::Cursor>) -> Result<Vec<String>> {
        let mut query = conversation::Entity::find()
            .select_only()
            .column(conversation::Column::WorkspaceId)
            .distinct()
            .filter(queued());
        if let Some(after) = changed_after {
            query = query.filter(
                conversation::Column::WorkspaceId.in_subquery(events::workspaces_with_events_after(after).into_query()),
            );
        }
        query.into_tuple::<String>().all(&self.db).await.map_err(classify)
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
                let txn = self.write_in(&[Stream::Team(team_id)]).await?;
                let members = Members::Lock { also: None };
                let mut routing = match Routing::lock(&txn, workspace_id, team_id, members).await {
                    Err(StoreError::NotFound(Entity::Team)) => return Ok(()),
                    other => other?,
                };
                routing.drain(&txn, ctx).await?;
                commit(txn).await
            })
            .await?;
        }
        Ok(teams.len() as u64)
    }
}

/// Carries out `route` on the conversation `row` (as read, or as just inserted for a new one) in
/// `routing`'s team, and records it in the audit trail.
async fn carry_out(
    txn: &DatabaseTransaction,
    ctx: &Context,
    routing: &mut Routing,
    row: conversation::Model,
    route: &Route<'_>,
    limits: Limits,
) -> Result<Routed> {
    let now = ctx.now;
    let from_team = row.team_id.clone();
    // Waiting in this team's queue already (a new one is inserted queued: its wait starts now).
    let was_queued = route.kind != Kind::New
        && row.assignee_id.is_none()
        && row.status == ConversationStatus::Open.as_str()
        && row.team_id == route.team_id;
    if let Some(previous) = route.release {
        release(txn, previous).await?;
        routing.released(previous);
    }
    // What happened to it comes first in the feed; whom it went to next (routing's events).
    let target = format!("conversation:{}", row.id);
    let workspace_id = row.workspace_id.clone();
    match (route.kind, route.then) {
        (Kind::Transferred, then) => {
            let to = match then {
                Then::User(user_id) => user_id,
                Then::Strategy { .. } | Then::Queue => "by strategy",
            };
            let from = route.release.unwrap_or_default();
            let details = [("from", from), ("to", to), ("from_team", from_team.as_str()), ("team", route.team_id)];
            audit::record(txn, &workspace_id, ctx, "conversation.transferred", &target, &details).await?;
        }
        (Kind::Unassigned, _) => {
            let details = [("from", route.release.unwrap_or_default()), ("team", route.team_id)];
            audit::record(txn, &workspace_id, ctx, "conversation.unassigned", &target, &details).await?;
        }
        _ => {}
    }
    // A new conversation was inserted queued already.
    let mut row = if route.enqueue && route.kind != Kind::New {
        update(txn, &row, now, queue_changes(route.team_id, now, route.kind.queued_reason())).await?
    } else {
        row
    };
    let mut overridden = None;
    match route.then {
        Then::User(user_id) => {
            overridden = routing.assign_to(txn, ctx, &row, user_id, "assigned by hand", limits).await?;
            row = reload(txn, &row.workspace_id, &row.id).await?;
        }
        Then::Strategy { exclude } => row = routing.route(txn, ctx, &row, exclude).await?.0,
        Then::Queue => {
            if let Some(queued) = routing.drain(txn, ctx).await? {
                // Still waiting behind older ones: it shows why.
                row = reload(txn, &row.workspace_id, &row.id).await?;
                let reason = queued.to_string();
                if row.assignee_id.is_none() && row.reason != reason {
                    row = update(txn, &row, now, vec![(conversation::Column::Reason, reason.into())]).await?;
                }
            } else {
                row = reload(txn, &row.workspace_id, &row.id).await?;
            }
        }
    }
    if let Then::User(user_id) = route.then
        && !matches!(route.kind, Kind::Transferred | Kind::Unassigned)
    {
        let mut details = vec![("assignee", user_id), ("team", route.team_id)];
        details.extend(overridden.map(|what| ("override", what)));
        audit::record(txn, &workspace_id, ctx, "conversation.assigned", &target, &details).await?;
    }
    if row.assignee_id.is_none() && row.status == ConversationStatus::Open.as_str() && !was_queued {
        queued_event(txn, ctx, &row).await?;
    }
    let freed = route.release.is_some() || (route.kind == Kind::Transferred && from_team != route.team_id);
    Ok(Routed { row, freed })
}
