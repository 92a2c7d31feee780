//! The outbox: emails written in the transaction of the change that causes them, delivered later.
//!
//! A worker claims due messages by taking a lease (a conditional update, so two workers — or two
//! processes — never claim the same message at once), sends, then marks the outcome. Each claim
//! counts as an attempt, so a message whose worker died mid-send is retried after its lease ends
//! and still reaches the abandon limit.

use crate::entity::outbox;
use crate::{LINK_PLACEHOLDER, OutboxEntry, OutboxMail, OutboxStatus, Result, Store, classify};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

impl Store {
    /// Claims up to `limit` messages due at `now` for `lease_ms`, counting an attempt for each.
    pub async fn claim_outbox(&self, now: i64, lease_ms: i64, limit: u64) -> Result<Vec<OutboxMail>> {
        let due = outbox::Entity::find()
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str()))
            .filter(outbox::Column::NextAttemptAt.lte(now))
            .filter(outbox::Column::LeaseUntil.lte(now))
            .order_by_asc(outbox::Column::NextAttemptAt)
            .limit(limit)
            .all(&self.db)
            .await
            .map_err(classify)?;
        let mut claimed = Vec::with_capacity(due.len());
        for row in due {
            let taken = outbox::Entity::update_many()
                .col_expr(outbox::Column::LeaseUntil, Expr::val(now + lease_ms))
                .col_expr(outbox::Column::Attempts, Expr::col(outbox::Column::Attempts).add(1))
                .filter(outbox::Column::Id.eq(row.id.as_str()))
                .filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str()))
                .filter(outbox::Column::LeaseUntil.eq(row.lease_until))
                .filter(outbox::Column::Attempts.eq(row.attempts))
                .exec(&self.db)
                .await
                .map_err(classify)?;
            if taken.rows_affected == 1 {
                // The link goes into the body only now, on its way out; a voided link's email was
                // deleted with it.
                let body = match &row.link {
                    Some(link) => row.body.replace(LINK_PLACEHOLDER, link),
                    None => row.body,
                };
                claimed.push(OutboxMail {
                    id: row.id,
                    recipient: row.recipient,
                    subject: row.subject,
                    body,
                    attempts: row.attempts + 1,
                    lease_until: now + lease_ms,
                });
            }
        }
        Ok(claimed)
    }

    /// Marks a claimed message delivered, forgetting the password link it carried (the link's
    /// token now exists only in the email and as a hash). Unconditional: whoever sent it, it was
    /// delivered.
    pub async fn mark_outbox_sent(&self, id: &str, now: i64) -> Result<()> {
        outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::val(OutboxStatus::Sent.as_str()))
            .col_expr(outbox::Column::Link, Expr::val(Option::<String>::None))
            .col_expr(outbox::Column::SentAt, Expr::val(now))
            .col_expr(outbox::Column::LastError, Expr::val(Option::<String>::None))
            .filter(outbox::Column::Id.eq(id))
            .exec(&self.db)
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Records a failed attempt: retried at `retry_at`, or abandoned when `None`. Only while the
    /// claim that made the attempt still holds the message (its lease is `lease_until`): a late
    /// failure must not reopen a message another worker has claimed or sent since.
    pub async fn mark_outbox_failed(
        &self,
        id: &str,
        lease_until: i64,
        error: &str,
        retry_at: Option<i64>,
    ) -> Result<()> {
        let (status, next) = match retry_at {
            Some(at) => (OutboxStatus::Pending, at),
            None => (OutboxStatus::Abandoned, 0),
        };
        let mut update = outbox::Entity::update_many()
            .col_expr(outbox::Column::Status, Expr::val(status.as_str()))
            .col_expr(outbox::Column::LastError, Expr::val(error))
            .col_expr(outbox::Column::LeaseUntil, Expr::val(0i64));
        match retry_at {
            Some(_) => update = update.col_expr(outbox::Column::NextAttemptAt, Expr::val(next)),
            // Abandoned: nobody will send the link, so nothing keeps it.
            None => update = update.col_expr(outbox::Column::Link, Expr::val(Option::<String>::None)),
        }
        update
            .filter(outbox::Column::Id.eq(id))
            .filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str()))
            .filter(outbox::Column::LeaseUntil.eq(lease_until))
            .exec(&self.db)
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Every outbox message of a workspace, oldest first.
    pub async fn outbox_entries(&self, workspace_id: &str) -> Result<Vec<OutboxEntry>> {
        let rows = outbox::Entity::find()
            .filter(outbox::Column::WorkspaceId.eq(workspace_id))
            .order_by_asc(outbox::Column::CreatedAt)
            .order_by_asc(outbox::Column::Id)
            .all(&self.db)
            .await
            .map_err(classify)?;
        rows.into_iter()
            .map(|row| {
                Ok(OutboxEntry {
                    status: OutboxStatus::from_stored(&row.status)?,
                    id: row.id,
                    workspace_id: row.workspace_id,
                    recipient: row.recipient,
                    subject: row.subject,
                    body: row.body,
                    attempts: row.attempts,
                    last_error: row.last_error,
                    link: row.link,
                })
            })
            .collect()
    }

    /// Messages waiting for delivery, across workspaces.
    pub async fn outbox_pending(&self) -> Result<i64> {
        crate::count(&self.db, outbox::Entity::find().filter(outbox::Column::Status.eq(OutboxStatus::Pending.as_str())))
            .await
    }
}
