//! Conversation rows: the record, versioned updates, and what "queued" means in a query.

use crate::entity::conversation;
use crate::{Conflict, Conversation, ConversationStatus, Result, StoreError, classify};
use roster_assignment::ConversationId;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter,
    TryIntoModel,
};

pub(crate) fn to_conversation(row: conversation::Model) -> Result<Conversation> {
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

pub(crate) async fn load<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    id: &str,
) -> Result<Option<conversation::Model>> {
    conversation::Entity::find_by_id((workspace_id.to_owned(), id.to_owned())).one(conn).await.map_err(classify)
}

/// A conversation this transaction has just written or read; gone means a concurrent change won.
pub(crate) async fn reload(txn: &DatabaseTransaction, workspace_id: &str, id: &str) -> Result<conversation::Model> {
    load(txn, workspace_id, id).await?.ok_or(StoreError::Conflict(Conflict::Busy))
}

/// Writes `changes` to a conversation if it is still at the version read (otherwise the call is
/// retried from the start), and returns the row as written.
pub(crate) async fn update(
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
pub(crate) fn queue_changes(team_id: &str, now: i64, reason: &str) -> Vec<(conversation::Column, sea_orm::Value)> {
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

pub(crate) fn assign_changes(
    user_id: &str,
    now: i64,
    reason: &str,
    sequence: i64,
) -> Vec<(conversation::Column, sea_orm::Value)> {
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
pub(crate) fn queued() -> Condition {
    Condition::all()
        .add(
            Expr::col((conversation::Entity, conversation::Column::Status))
                .eq(Expr::cust(format!("'{}'", ConversationStatus::Open.as_str()))),
        )
        .add(conversation::Column::AssigneeId.is_null())
}
