//! The change feed: an event for every change, written in the transaction of the change, read in
//! commit order within each workspace and resumable from any event's cursor.
//!
//! The order is `(txid, id)`. On PostgreSQL `txid` is the writing transaction's id, and a reader
//! only reads events of transactions older than the oldest one still running (the xmin of its
//! snapshot): those can no longer change, so no event ever appears behind a cursor already handed
//! out, whatever order transactions commit in.
//!
//! Commit order: every changing transaction names the [`Stream`]s its events belong to (its
//! workspace's people, roles, teams and plan; a team's conversations) and takes their advisory
//! locks before its first write ([`order`]), so it is given its id only after every earlier
//! writer of those streams committed. Two transactions that share a stream therefore get ids in
//! their commit order; assignments in different teams of a workspace do not wait for each other.
//! On SQLite writers commit one at a time in row-id order; `txid` is 0 and every committed event
//! is stable.

use crate::entity::{event, event_purge};
use crate::{Conflict, Context, Result, Store, StoreError, classify, commit};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement,
};
use std::collections::BTreeMap;

/// What a transaction's events are ordered within: the workspace (its people, roles, teams,
/// memberships, plan) or one team's conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stream<'a> {
    Workspace(&'a str),
    Team(&'a str),
}

/// Takes the advisory locks of `streams` on PostgreSQL, in one order everywhere (so two takers
/// cannot deadlock), as the first statements of `txn`: before anything gives it a transaction id.
pub(crate) async fn order(txn: &DatabaseTransaction, streams: &[Stream<'_>]) -> Result<()> {
    if txn.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let mut keys: Vec<String> = streams
        .iter()
        .map(|stream| match stream {
            Stream::Workspace(id) => format!("workspace:{id}"),
            Stream::Team(id) => format!("team:{id}"),
        })
        .collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        let sql = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))";
        txn.execute_raw(Statement::from_sql_and_values(DbBackend::Postgres, sql, [key.into()]))
            .await
            .map_err(classify)?;
    }
    Ok(())
}

/// Where an event sits in the feed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Cursor {
    pub txid: i64,
    pub id: i64,
}

/// One change, as the feed reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub cursor: Cursor,
    pub workspace_id: String,
    /// For example "user.created", "conversation.assigned".
    pub event_type: String,
    pub actor: String,
    pub request_id: String,
    /// "user:<id>", "team:<id>", ...
    pub target: String,
    pub details: BTreeMap<String, String>,
    pub created_at: i64,
}

/// A page of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventPage {
    pub events: Vec<Event>,
    /// Where the reader may go on from: the last event's position, or, when the page is not full,
    /// the newest event readable (none of the later ones up to it were wanted). `None` only when
    /// the feed is empty and no cursor was given.
    pub through: Option<Cursor>,
}

/// Which events to read.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// One workspace's, or every workspace's.
    pub workspace_id: Option<String>,
    /// Only these types; empty: all.
    pub types: Vec<String>,
}

/// The events an audit record of `action` with `details` reports: none for what changes nothing a
/// consumer acts on (logins, password changes, refusals). Conversations assigned, queued and
/// resolved are recorded where routing decides them (`routing`), whoever asked.
pub(crate) fn types_of(action: &str, details: &[(&str, &str)]) -> Vec<&'static str> {
    let has = |key: &str| details.iter().any(|(k, _)| *k == key);
    match action {
        "user.updated" => {
            let mut types = Vec::new();
            if has("full_name") {
                types.push("user.updated");
            }
            if has("role") {
                types.push("user.role_changed");
            }
            if has("email") {
                types.push("user.email_changed");
            }
            types
        }
        "user.invitation_sent" => vec!["user.invitation_sent"],
        "user.invitation_accepted" => vec!["user.activated"],
        "user.password_reset_sent" => vec!["user.password_reset_sent"],
        "user.password_reset" => vec!["user.password_reset"],
        // A manager set it: an invited user becomes active; an active one's sessions end.
        "user.password_set" if has("status") => vec!["user.activated"],
        "user.password_set" => vec!["user.password_reset"],
        "user.created" => vec!["user.created"],
        "user.deactivated" => vec!["user.deactivated"],
        "user.reactivated" => vec!["user.reactivated"],
        "user.availability_changed" => vec!["user.availability_changed"],
        "role.created" => vec!["role.created"],
        "role.updated" => vec!["role.changed"],
        "role.deleted" => vec!["role.deleted"],
        "team.created" => vec!["team.created"],
        "team.updated" => vec!["team.changed"],
        "team.deleted" => vec!["team.deleted"],
        "team.member_added" => vec!["membership.added"],
        "team.member_removed" => vec!["membership.removed"],
        "team.member_updated" => vec!["membership.changed"],
        "billing.plan_changed" => vec!["plan.changed"],
        "billing.extra_seats_changed" => vec!["seats.changed"],
        "workspace.created" => vec!["workspace.created"],
        "workspace.updated" => vec!["workspace.changed"],
        "conversation.transferred" => vec!["conversation.transferred"],
        "conversation.unassigned" => vec!["conversation.unassigned"],
        _ => Vec::new(),
    }
}

/// Records the event `event_type` on `conn`, the change's own transaction (begun with
/// [`crate::Store::write_in`] for the event's streams).
pub(crate) async fn record<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    ctx: &Context,
    event_type: &str,
    target: &str,
    details: &[(&str, &str)],
) -> Result<()> {
    let details = crate::audit::encode(details)?;
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Postgres => {
            "INSERT INTO events (txid, workspace_id, event_type, actor, request_id, target, details, created_at) \
             VALUES (pg_current_xact_id()::text::bigint, $1, $2, $3, $4, $5, $6, $7)"
        }
        _ => {
            "INSERT INTO events (txid, workspace_id, event_type, actor, request_id, target, details, created_at) \
             VALUES (0, ?, ?, ?, ?, ?, ?, ?)"
        }
    };
    let values = [
        workspace_id.into(),
        event_type.into(),
        ctx.actor.to_string().into(),
        ctx.request_id.as_str().into(),
        target.into(),
        details.into(),
        ctx.now.into(),
    ];
    conn.execute_raw(Statement::from_sql_and_values(backend, sql, values)).await.map_err(classify)?;
    Ok(())
}

impl Store {
    /// Up to `limit` events after `after` (from the oldest kept without one), in feed order: only
    /// events no transaction still running can precede.
    pub async fn events(&self, filter: &EventFilter, after: Option<Cursor>, limit: u64) -> Result<EventPage> {
        let start = after.unwrap_or_default();
        // The newest event readable now, first: the page reads up to it, so when it is not full
        // every event up to it that the filter wants is in it, and the reader may go on from there.
        let Some(head) = self.newest_event().await? else {
            self.check_kept(after).await?;
            return Ok(EventPage { events: Vec::new(), through: after });
        };
        let mut query = event::Entity::find()
            .filter(
                Expr::tuple([Expr::col(event::Column::Txid), Expr::col(event::Column::Id)])
                    .gt(Expr::tuple([Expr::val(start.txid), Expr::val(start.id)])),
            )
            .filter(
                Expr::tuple([Expr::col(event::Column::Txid), Expr::col(event::Column::Id)])
                    .lte(Expr::tuple([Expr::val(head.txid), Expr::val(head.id)])),
            )
            .order_by_asc(event::Column::Txid)
            .order_by_asc(event::Column::Id)
            .limit(limit);
        if let Some(workspace_id) = &filter.workspace_id {
            query = query.filter(event::Column::WorkspaceId.eq(workspace_id.as_str()));
        }
        if !filter.types.is_empty() {
            query = query.filter(event::Column::EventType.is_in(filter.types.iter().map(String::as_str)));
        }
        let rows = query.all(&self.db).await.map_err(classify)?;
        // After the events: a purge that committed before they were read shows here.
        self.check_kept(after).await?;
        let events: Vec<Event> = rows.into_iter().map(to_event).collect::<Result<_>>()?;
        let through = match events.last() {
            Some(last) if events.len() as u64 == limit => Some(last.cursor),
            _ => Some(head.max(start)),
        };
        Ok(EventPage { events, through })
    }

    /// The newest event a reader may read now, if any: what watchers compare their cursors with.
    /// On PostgreSQL, only below the oldest transaction still running (the xmin of the query's
    /// snapshot): every event there is final.
    pub async fn newest_event(&self) -> Result<Option<Cursor>> {
        let mut query = event::Entity::find()
            .select_only()
            .column(event::Column::Txid)
            .column(event::Column::Id)
            .order_by_desc(event::Column::Txid)
            .order_by_desc(event::Column::Id)
            .limit(1);
        if self.db.get_database_backend() == DbBackend::Postgres {
            query = query.filter(Expr::cust("txid < pg_snapshot_xmin(pg_current_snapshot())::text::bigint"));
        }
        let newest = query.into_tuple::<(i64, i64)>().one(&self.db).await.map_err(classify)?;
        Ok(newest.map(|(txid, id)| Cursor { txid, id }))
    }

    /// The workspaces whose own stream (people, roles, teams, memberships, plan; not
    /// conversations) has an event after `after`: committed ones beyond [`Store::newest_event`]
    /// too, so that a long transaction elsewhere, which holds readers back, does not hold back
    /// what the caller does about them. Each workspace once, in no order.
    pub async fn workspaces_changed_after(&self, after: Cursor) -> Result<Vec<String>> {
        workspaces_with_events_after(after)
            .distinct()
            .filter(event::Column::EventType.not_like("conversation.%"))
            .into_tuple::<String>()
            .all(&self.db)
            .await
            .map_err(classify)
    }

    /// Deletes the events written before `before` (milliseconds), and remembers the newest
    /// position deleted so that a cursor behind it is refused rather than silently skipping.
    pub async fn purge_events(&self, before: i64) -> Result<u64> {
        let txn = self.write().await?;
        let newest = event::Entity::find()
            .select_only()
            .column(event::Column::Txid)
            .column(event::Column::Id)
            .filter(event::Column::CreatedAt.lt(before))
            .order_by_desc(event::Column::Txid)
            .order_by_desc(event::Column::Id)
            .limit(1)
            .into_tuple::<(i64, i64)>()
            .one(&txn)
            .await
            .map_err(classify)?;
        let Some((txid, id)) = newest else { return Ok(0) };
        // By position: an old event that commits after the read above stays, rather than vanish
        // above the recorded position.
        let deleted = event::Entity::delete_many()
            .filter(
                Expr::tuple([Expr::col(event::Column::Txid), Expr::col(event::Column::Id)])
                    .lte(Expr::tuple([Expr::val(txid), Expr::val(id)])),
            )
            .exec(&txn)
            .await
            .map_err(classify)?
            .rows_affected;
        event_purge::Entity::update_many()
            .col_expr(event_purge::Column::Txid, Expr::val(txid))
            .col_expr(event_purge::Column::EventId, Expr::val(id))
            .filter(
                Expr::tuple([Expr::col(event_purge::Column::Txid), Expr::col(event_purge::Column::EventId)])
                    .lt(Expr::tuple([Expr::val(txid), Expr::val(id)])),
            )
            .exec(&txn)
            .await
            .map_err(classify)?;
        commit(txn).await?;
        Ok(deleted)
    }

    /// Refuses a cursor behind what retention purged: events after it may be gone.
    async fn check_kept(&self, after: Option<Cursor>) -> Result<()> {
        match after {
            Some(after) if after < self.purged().await? => Err(StoreError::Conflict(Conflict::CursorExpired)),
            _ => Ok(()),
        }
    }

    /// The newest position retention has purged; a reader's cursor must not be behind it.
    async fn purged(&self) -> Result<Cursor> {
        let row = event_purge::Entity::find_by_id(1).one(&self.db).await.map_err(classify)?;
        Ok(row.map_or_else(Cursor::default, |row| Cursor { txid: row.txid, id: row.event_id }))
    }
}

/// The workspace of every event after `after`, one row per event.
pub(crate) fn workspaces_with_events_after(after: Cursor) -> sea_orm::Select<event::Entity> {
    event::Entity::find().select_only().column(event::Column::WorkspaceId).filter(
        Expr::tuple([Expr::col(event::Column::Txid), Expr::col(event::Column::Id)])
            .gt(Expr::tuple([Expr::val(after.txid), Expr::val(after.id)])),
    )
}

fn to_event(row: event::Model) -> Result<Event> {
    let details = serde_json::from_str(&row.details).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    Ok(Event {
        cursor: Cursor { txid: row.txid, id: row.id },
        workspace_id: row.workspace_id,
        event_type: row.event_type,
        actor: row.actor,
        request_id: row.request_id,
        target: row.target,
        details,
        created_at: row.created_at,
    })
}
