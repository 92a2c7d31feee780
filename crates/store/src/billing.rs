//! Plans and seats: changing a workspace's plan or extra seats, and recording refused seats.
//!
//! Every seat decision runs under the workspace's row lock (`rows::workspace::lock_seats`) with the seats in use
//! counted there: CreateUser and ReactivateUser take a seat only if [`roster_billing::check_seat`]
//! allows it, and a plan or extra-seat change happens only if [`roster_billing::check_change`]
//! keeps everyone active. So two processes cannot both give away the last seat, nor a downgrade
//! slip under a concurrent invitation.

use crate::entity::workspace;
use crate::events::Stream;
use crate::rows::workspace::{load, lock_seats};
use crate::{
    Conflict, Context, ExtraSeats, Plan, Result, Store, StoreError, Subscription, Workspace, audit, classify, commit,
};
use roster_billing::check_change;
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
        let txn = self.write_in(&[Stream::Workspace(workspace_id)]).await?;
        let (current, used) = lock_seats(&txn, workspace_id).await?;
        let to = change(current);
        if to == current {
            return load(&txn, workspace_id).await;
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
        let workspace = load(&txn, workspace_id).await?;
        commit(txn).await?;
        Ok(workspace)
    }
}
