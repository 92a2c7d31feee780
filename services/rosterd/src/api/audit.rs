use crate::app::App;
use crate::convert;
use crate::error::{self, Violations, invalid};
use crate::policy::Need;
use roster_proto::v1::{self as pb, audit_service_server::AuditService};
use roster_store::AuditFilter;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct AuditApi(pub(crate) Arc<App>);

const PAGE_KIND: &str = "audit";

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn list_audit_events(
        &self,
        request: Request<pb::ListAuditEventsRequest>,
    ) -> Result<Response<pb::ListAuditEventsResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ReadAudit).await?;
        app.ensure_workspace(&call).await?;
        let req = request.into_inner();
        let limit = convert::page_size(req.page_size)?;
        let after = convert::decode_page_token(PAGE_KIND, &req.page_token)?
            .map(|c| c.parse::<i64>().map_err(|_| invalid("page_token", "not a page token of this listing")))
            .transpose()?;
        let mut v = Violations::new();
        let actor = super::filter(&mut v, "actor", &req.actor).map(str::to_owned);
        let target = super::filter(&mut v, "target", &req.target).map(str::to_owned);
        let action = super::filter(&mut v, "action", &req.action).map(str::to_owned);
        v.finish()?;
        let filter = AuditFilter { actor, target, action };
        let page =
            app.store.list_audit_events(&call.workspace_id, &filter, after, limit).await.map_err(error::store)?;
        Ok(Response::new(pb::ListAuditEventsResponse {
            events: page.items.into_iter().map(convert::audit_event).collect(),
            next_page_token: convert::encode_page_token(PAGE_KIND, page.next),
        }))
    }
}
