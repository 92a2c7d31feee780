//! Plans and seats: changing a workspace's plan or extra seats, and recording refused seats.
//!
//! Every seat decision runs under the workspace's row lock ([`lock_seats`]) with the seats in use
//! counted there: CreateUser and ReactivateUser take a seat only if [`roster_billing::check_seat`]
//! allows it, and a plan or extra-seat change happens only if [`roster_billing::check_change`]
//! keeps everyone active. So two processes cannot both give away the last seat, nor a downgrade
//! slip under a concurrent invitation.

use crate::entity::workspace;
use crate::workspaces::{load_workspace, lock_seats};
use crate::{
    Conflict, Context, ExtraSeats, Plan, Result, Store, StoreError, Subscription, Workspace, audit, classify, commit,
};
use roster_billing::{SeatLimitReached, check_change};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

impl Store {
    /// Moves the workspace to `plan`, unless that leaves more active users than seats.
    pub async fn change_plan(&self, ctx: &Context, workspace_id: &str, plan: Plan) -> Result<Workspace> {
        self.change_subscription(ctx, workspace_id, |s| Subscription { plan, ..s }).await
    }

    /// Sets the seats granted on top of the plan, unless that leaves more active users than seats.
    pub async fn set_extra_seats(&self, ctx: &Context, workspace_id: &str, extra: ExtraSeats) -> Result<Workspace> {
        self.change_subscription(ctx, workspace_id, |s| Subscription { extra_seats: extra, ..s }).await
    }

    async fn change_subscription(
        &self,
        ctx: &Context,
        workspace_id: &str,
        change: impl FnOnce(Subscription) -> Subscription,
    ) -> Result<Workspace> {
        let txn = self.write().await?;
        let (current, used) = lock_seats(&txn, workspace_id).await?;
        let to = change(current);
        if to == current {
            return load_workspace(&txn, workspace_id).await;
        }
        let seats = check_change(&to, used).map_err(|refused| StoreError::Conflict(Conflict::TooManyInUse(refused)))?;
        workspace::Entity::update_many()
            .col_expr(workspace::Column::Plan, Expr::val(to.plan.as_str()))
            .col_expr(workspace::Column::ExtraSeats, Expr::val(i32::try_from(to.extra_seats.get()).unwrap_or(i32::MAX)))
            .filter(workspace::Column::Id.eq(workspace_id))
            .exec(&txn)
            .await
            .map_err(classify)?;
        let limit = seats.limit.to_string();
        let (action, from, to) = if to.plan != current.plan {
            ("billing.plan_changed", current.plan.as_str().to_owned(), to.plan.as_str().to_owned())
        } else {
            ("billing.extra_seats_changed", current.extra_seats.get().to_string(), to.extra_seats.get().to_string())
        };
        let details = [("from", from.as_str()), ("to", to.as_str()), ("seat_limit", limit.as_str())];
        audit::record(&txn, workspace_id, ctx, action, &format!("workspace:{workspace_id}"), &details).await?;
        let workspace = load_workspace(&txn, workspace_id).await?;
        commit(txn).await?;
        Ok(workspace)
    }

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
        let recorded = async {
            let txn = self.write().await?;
            audit::record(&txn, workspace_id, ctx, action, target, &details).await?;
            commit(txn).await
        };
        if let Err(err) = recorded.await {
            tracing::warn!(workspace_id, action, error = %err, "could not record a refused seat in the audit trail");
        }
    }
}

/// A seat refusal as the store reports it.
pub(crate) fn seat_limit(workspace_id: &str, refused: SeatLimitReached) -> StoreError {
    StoreError::Conflict(Conflict::SeatLimit { workspace_id: workspace_id.to_owned(), refused })
}
