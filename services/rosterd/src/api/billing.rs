use crate::app::App;
use crate::convert;
use crate::error::{self, Violations, checked};
use crate::policy::Need;
use roster_proto::v1::{self as pb, billing_service_server::BillingService};
use roster_store::{ExtraSeats, Plan};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct BillingApi(pub(crate) Arc<App>);

#[tonic::async_trait]
impl BillingService for BillingApi {
    async fn list_plans(
        &self,
        request: Request<pb::ListPlansRequest>,
    ) -> Result<Response<pb::ListPlansResponse>, Status> {
        self.0.authorize(&App::caller(&request)?, Need::Member).await?;
        let plans = Plan::ALL.iter().map(|&plan| convert::plan_offer(plan)).collect();
        Ok(Response::new(pb::ListPlansResponse { plans }))
    }

    async fn get_subscription(
        &self,
        request: Request<pb::GetSubscriptionRequest>,
    ) -> Result<Response<pb::GetSubscriptionResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Member).await?;
        let workspace = app.store.workspace(&call.workspace_id).await.map_err(error::store)?;
        Ok(Response::new(pb::GetSubscriptionResponse { subscription: Some(convert::subscription(&workspace)) }))
    }

    async fn change_plan(
        &self,
        request: Request<pb::ChangePlanRequest>,
    ) -> Result<Response<pb::ChangePlanResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageBilling).await?;
        let mut v = Violations::new();
        let plan = v.check("plan", convert::plan_from_proto(request.get_ref().plan));
        v.finish()?;
        let workspace =
            app.store.change_plan(&call.ctx, &call.workspace_id, checked(plan)?).await.map_err(error::store)?;
        tracing::info!(workspace_id = %workspace.id, plan = workspace.subscription.plan.as_str(), "plan changed");
        Ok(Response::new(pb::ChangePlanResponse { subscription: Some(convert::subscription(&workspace)) }))
    }

    async fn set_extra_seats(
        &self,
        request: Request<pb::SetExtraSeatsRequest>,
    ) -> Result<Response<pb::SetExtraSeatsResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ServiceKey).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let extra = v.check("extra_seats", ExtraSeats::new(req.extra_seats.into()));
        v.finish()?;
        let workspace =
            app.store.set_extra_seats(&call.ctx, &call.workspace_id, checked(extra)?).await.map_err(error::store)?;
        tracing::info!(workspace_id = %workspace.id, extra_seats = req.extra_seats, "extra seats set");
        Ok(Response::new(pb::SetExtraSeatsResponse { subscription: Some(convert::subscription(&workspace)) }))
    }
}
