//! Workspace rows: the record, the seats in use, and the row lock every seat decision takes.

use crate::entity::{user, workspace};
use crate::{
    Conflict, Context, Entity, ExtraSeats, Plan, Result, Store, StoreError, Subscription, UserStatus, Workspace,
    classify, count,
};
use roster_billing::SeatLimitReached;
use roster_identity::{Slug, WorkspaceName};
use sea_orm::sea_query::LockType;
use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QuerySelect};

/// A workspace row's plan and extra seats.
fn subscription(row: &workspace::Model) -> Result<Subscription> {
    let corrupt = |what: &str| StoreError::Corrupt(format!("workspace {}: {what}", row.id));
    Ok(Subscription {
        plan: Plan::from_stored(&row.plan).ok_or_else(|| corrupt("plan"))?,
        extra_seats: ExtraSeats::new(row.extra_seats.into()).map_err(|_| corrupt("extra seats"))?,
    })
}

/// Active and invited users: the seats in use.
async fn seats_used<C: ConnectionTrait>(conn: &C, workspace_id: &str) -> Result<u32> {
    let active = count(
        conn,
        user::Entity::find()
            .filter(user::Column::WorkspaceId.eq(workspace_id))
            .filter(user::Column::Status.is_in([UserStatus::Active.as_str(), UserStatus::Invited.as_str()])),
    )
    .await?;
    Ok(u32::try_from(active).unwrap_or(u32::MAX))
}

/// Locks the workspace's row for the rest of the transaction. On PostgreSQL the lock is `FOR NO
/// KEY UPDATE`, the one an update of the row takes: it serializes with every other change of the
/// workspace row but not with inserts that merely reference the workspace (their foreign-key check
/// takes `FOR KEY SHARE`), so routing and membership changes neither wait for it nor deadlock with
/// it. SQLite's write transaction serializes anyway.
pub(crate) async fn lock(txn: &DatabaseTransaction, workspace_id: &str) -> Result<workspace::Model> {
    workspace::Entity::find_by_id(workspace_id.to_owned())
        .lock(LockType::NoKeyUpdate)
        .one(txn)
        .await
        .map_err(classify)?
        .ok_or(StoreError::NotFound(Entity::Workspace))
}

/// Locks the workspace's row and counts its seats in use, for a seat check: no other transaction
/// can take a seat of the workspace or change its plan until this one ends, so the count stays
/// true until the commit.
pub(crate) async fn lock_seats(txn: &DatabaseTransaction, workspace_id: &str) -> Result<(Subscription, u32)> {
    let row = lock(txn, workspace_id).await?;
    Ok((subscription(&row)?, seats_used(txn, workspace_id).await?))
}

pub(crate) async fn load<C: ConnectionTrait>(conn: &C, id: &str) -> Result<Workspace> {
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

/// A seat refusal as the store reports it.
pub(crate) fn seat_limit(workspace_id: &str, refused: SeatLimitReached) -> StoreError {
    StoreError::Conflict(Conflict::SeatLimit { workspace_id: workspace_id.to_owned(), refused })
}

impl Store {
    /// Records a seat-consuming call refused for want of a seat (`action` on `target`, with
    /// `details` of the call), in a transaction of its own: the call itself wrote nothing. A
    /// failure here is logged, not returned: the caller still answers with the refusal.
    pub(crate) async fn record_seat_refusal(
        &self,
        ctx: &Context,
        workspace_id: &str,
        action: &str,
        target: &str,
        details: &[(&str, &str)],
        refused: &SeatLimitReached,
    ) {
        let (limit, used) = (refused.seats.limit.to_string(), refused.seats.used.to_string());
        let mut details = details.to_vec();
        details.extend([
            ("reason", "SEAT_LIMIT_REACHED"),
            ("plan", refused.seats.plan.as_str()),
            ("seat_limit", limit.as_str()),
            ("seats_used", used.as_str()),
        ]);
        if let Err(err) = self.record_refusal(ctx, workspace_id, action, target, &details).await {
            tracing::warn!(workspace_id, action, error = %err, "could not record a refused seat in the audit trail");
        }
    }
}
