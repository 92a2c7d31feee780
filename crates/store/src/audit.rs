//! The audit trail: written inside the transaction of the change it records, read newest first.

use crate::entity::audit_event;
use crate::{AuditEvent, AuditFilter, Context, Page, Result, Store, StoreError, classify};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use std::collections::BTreeMap;

/// Records one event on `conn` (the change's own transaction), and the change feed's events for
/// it.
pub(crate) async fn record<C: ConnectionTrait>(
    conn: &C,
    workspace_id: &str,
    ctx: &Context,
    action: &str,
    target: &str,
    details: &[(&str, &str)],
) -> Result<()> {
    let model = audit_event::ActiveModel {
        id: Default::default(),
        workspace_id: Set(workspace_id.to_owned()),
        actor: Set(ctx.actor.to_string()),
        action: Set(action.to_owned()),
        target: Set(target.to_owned()),
        request_id: Set(ctx.request_id.clone()),
        details: Set(encode(details)?),
        created_at: Set(ctx.now),
    };
    audit_event::Entity::insert(model).exec_without_returning(conn).await.map_err(classify)?;
    for event_type in crate::events::types_of(action, details) {
        crate::events::record(conn, workspace_id, ctx, event_type, target, details).await?;
    }
    Ok(())
}

/// A record's details as stored: a JSON object, keys sorted.
pub(crate) fn encode(details: &[(&str, &str)]) -> Result<String> {
    let map: BTreeMap<&str, &str> = details.iter().copied().collect();
    serde_json::to_string(&map).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Store {
    /// Lists a workspace's events, newest first, starting after the event id `after` (a previous page's cursor).
    pub async fn list_audit_events(
        &self,
        workspace_id: &str,
        filter: &AuditFilter,
        after: Option<i64>,
        limit: u64,
    ) -> Result<Page<AuditEvent>> {
        let mut query = audit_event::Entity::find().filter(audit_event::Column::WorkspaceId.eq(workspace_id));
        if let Some(actor) = &filter.actor {
            query = query.filter(audit_event::Column::Actor.eq(actor.as_str()));
        }
        if let Some(target) = &filter.target {
            query = query.filter(audit_event::Column::Target.eq(target.as_str()));
        }
        if let Some(action) = &filter.action {
            query = query.filter(audit_event::Column::Action.eq(action.as_str()));
        }
        if let Some(after) = after {
            query = query.filter(audit_event::Column::Id.lt(after));
        }
        let rows =
            query.order_by_desc(audit_event::Column::Id).limit(limit + 1).all(&self.db).await.map_err(classify)?;
        let more = rows.len() as u64 > limit;
        let items = rows
            .into_iter()
            .take(limit as usize)
            .map(|row| {
                Ok(AuditEvent {
                    id: row.id,
                    workspace_id: row.workspace_id,
                    actor: row.actor,
                    action: row.action,
                    target: row.target,
                    request_id: row.request_id,
                    details: serde_json::from_str(&row.details).map_err(|e| StoreError::Corrupt(e.to_string()))?,
                    created_at: row.created_at,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let next = if more { items.last().map(|e| e.id.to_string()) } else { None };
        Ok(Page { items, next })
    }
}
