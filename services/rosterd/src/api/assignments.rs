use crate::app::App;
use crate::auth::Caller;
use crate::convert;
use crate::error::{self, Violations, checked, invalid};
use crate::metrics::AssignOutcome;
use roster_assignment::ConversationId;
use roster_authz::Permission;
use roster_proto::v1::{self as pb, assignment_service_server::AssignmentService};
use roster_store::{AssignRequest, AssignTo, ConversationFilter, ConversationStatus, Entity, StoreError};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct AssignmentApi(pub(crate) Arc<App>);

const PAGE_KIND: &str = "conversations";

fn conversation_id(v: &mut Violations, value: &str) -> Option<ConversationId> {
    v.check("conversation_id", ConversationId::parse(value))
}

/// An optional record id: `None` when empty.
fn optional_id(v: &mut Violations, field: &str, value: &str) -> Option<String> {
    if value.is_empty() {
        return None;
    }
    super::record_id(v, field, value);
    Some(value.to_owned())
}

impl AssignmentApi {
    /// Authorizes a person's `permission` on the conversation as it is now (its current assignee;
    /// nobody for one Roster does not know), and returns the assignee it was decided on, which the
    /// store checks again in its transaction. Service keys may do everything: nothing is read.
    async fn authorize_on(
        &self,
        caller: &Caller,
        workspace_id: &str,
        id: &ConversationId,
        permission: Permission,
    ) -> Result<Option<Option<String>>, Status> {
        if caller.user().is_none() {
            return Ok(None);
        }
        let assignee = match self.0.store.conversation(workspace_id, id).await {
            Ok(conversation) => conversation.assignee,
            Err(StoreError::NotFound(Entity::Conversation)) => None,
            Err(err) => return Err(error::store(err)),
        };
        self.0.authorize_on(caller, permission, assignee.as_deref()).await?;
        Ok(Some(assignee))
    }
}

#[tonic::async_trait]
impl AssignmentService for AssignmentApi {
    async fn assign_conversation(
        &self,
        request: Request<pb::AssignConversationRequest>,
    ) -> Result<Response<pb::AssignConversationResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        let mut v = Violations::new();
        let id = conversation_id(&mut v, &req.conversation_id);
        let team_id = optional_id(&mut v, "team_id", &req.team_id);
        let assignee = optional_id(&mut v, "assignee_id", &req.assignee_id);
        v.finish()?;
        let id = checked(id)?;
        let decided_on = self.authorize_on(&caller, &workspace_id, &id, Permission::ConversationsAssign).await?;
        let without_team = team_id.is_none();
        let to = assignee.map_or(AssignTo::Auto, AssignTo::User);
        let assign = AssignRequest { conversation: id, team_id, to, transfer: req.transfer, decided_on };
        let ctx = caller.context();
        let assigned = app.store.assign_conversation(&ctx, &workspace_id, &assign).await.map_err(|err| match err {
            StoreError::NotFound(Entity::User) => invalid("assignee_id", "no user with this id in the workspace"),
            StoreError::NotFound(Entity::Conversation) if without_team => {
                invalid("team_id", "required for a conversation Roster does not know yet")
            }
            StoreError::NotFound(Entity::Team) if without_team => {
                invalid("team_id", "the conversation's team no longer exists: name the team to reopen it in")
            }
            err => error::store(err),
        })?;
        app.metrics.assignment(match (assigned.changed, &assigned.conversation.assignee) {
            (false, _) => AssignOutcome::Unchanged,
            (true, Some(_)) => AssignOutcome::Assigned,
            (true, None) => AssignOutcome::Queued,
        });
        if assigned.freed {
            app.drain_queues(&ctx, &workspace_id).await;
        }
        Ok(Response::new(pb::AssignConversationResponse {
            assignment: Some(convert::conversation(&assigned.conversation)),
            changed: assigned.changed,
        }))
    }

    async fn unassign_conversation(
        &self,
        request: Request<pb::UnassignConversationRequest>,
    ) -> Result<Response<pb::UnassignConversationResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        let mut v = Violations::new();
        let id = conversation_id(&mut v, &req.conversation_id);
        v.finish()?;
        let id = checked(id)?;
        let decided_on = self.authorize_on(&caller, &workspace_id, &id, Permission::ConversationsAssign).await?;
        let ctx = caller.context();
        let decided_on = decided_on.as_ref().map(Option::as_deref);
        let conversation =
            app.store.unassign_conversation(&ctx, &workspace_id, &id, decided_on).await.map_err(error::store)?;
        // The previous assignee has room again, in every team of theirs.
        app.drain_queues(&ctx, &workspace_id).await;
        Ok(Response::new(pb::UnassignConversationResponse { assignment: Some(convert::conversation(&conversation)) }))
    }

    async fn resolve_conversation(
        &self,
        request: Request<pb::ResolveConversationRequest>,
    ) -> Result<Response<pb::ResolveConversationResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        let mut v = Violations::new();
        let id = conversation_id(&mut v, &req.conversation_id);
        v.finish()?;
        let id = checked(id)?;
        let decided_on = self.authorize_on(&caller, &workspace_id, &id, Permission::ConversationsReply).await?;
        let ctx = caller.context();
        let decided_on = decided_on.as_ref().map(Option::as_deref);
        let conversation =
            app.store.resolve_conversation(&ctx, &workspace_id, &id, decided_on).await.map_err(error::store)?;
        // Its assignee has room again (a second resolve finds no queue to hand out, or no room).
        app.drain_queues(&ctx, &workspace_id).await;
        Ok(Response::new(pb::ResolveConversationResponse { assignment: Some(convert::conversation(&conversation)) }))
    }

    async fn get_conversation_assignment(
        &self,
        request: Request<pb::GetConversationAssignmentRequest>,
    ) -> Result<Response<pb::GetConversationAssignmentResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        let mut v = Violations::new();
        let id = conversation_id(&mut v, &req.conversation_id);
        v.finish()?;
        let id = checked(id)?;
        self.authorize_on(&caller, &workspace_id, &id, Permission::ConversationsRead).await?;
        let conversation = app.store.conversation(&workspace_id, &id).await.map_err(error::store)?;
        Ok(Response::new(pb::GetConversationAssignmentResponse {
            assignment: Some(convert::conversation(&conversation)),
        }))
    }

    async fn list_conversation_assignments(
        &self,
        request: Request<pb::ListConversationAssignmentsRequest>,
    ) -> Result<Response<pb::ListConversationAssignmentsResponse>, Status> {
        let app = &self.0;
        let caller = app.caller(&request).await?;
        let req = request.get_ref();
        let workspace_id = caller.workspace(&req.workspace_id)?;
        let mut v = Violations::new();
        let assignee = optional_id(&mut v, "assignee_id", &req.assignee_id);
        let team = optional_id(&mut v, "team_id", &req.team_id);
        let status = match pb::ConversationStatus::try_from(req.status) {
            Ok(pb::ConversationStatus::Unspecified | pb::ConversationStatus::Open) => Some(ConversationStatus::Open),
            Ok(pb::ConversationStatus::Resolved) => Some(ConversationStatus::Resolved),
            Err(_) => {
                v.add("status", format!("unknown conversation status {}", req.status));
                None
            }
        };
        if req.queued && assignee.is_some() {
            v.add("queued", "queued conversations have no assignee: drop assignee_id or queued");
        }
        v.finish()?;
        // With scope ASSIGNED, a person may list only their own conversations.
        app.authorize_on(&caller, Permission::ConversationsRead, assignee.as_deref()).await?;
        app.ensure_workspace(&caller, &workspace_id).await?;
        let limit = convert::page_size(req.page_size)?;
        let after = convert::decode_page_token(PAGE_KIND, &req.page_token)?;
        let filter = ConversationFilter { assignee, team, queued: req.queued, status };
        let page = app
            .store
            .list_conversations(&workspace_id, &filter, after.as_deref(), limit)
            .await
            .map_err(error::store)?;
        Ok(Response::new(pb::ListConversationAssignmentsResponse {
            assignments: page.items.iter().map(convert::conversation).collect(),
            next_page_token: convert::encode_page_token(PAGE_KIND, page.next),
        }))
    }
}
