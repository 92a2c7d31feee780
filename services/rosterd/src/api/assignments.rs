use crate::app::{Addressed, App, Call};
use crate::convert;
use crate::error::{self, Violations, checked, invalid};
use crate::metrics::AssignOutcome;
use crate::policy::Need;
use roster_assignment::{ConversationId, Seen, Target};
use roster_authz::Permission;
use roster_proto::v1::{self as pb, assignment_service_server::AssignmentService};
use roster_store::{AssignRequest, ConversationFilter, ConversationStatus, Entity, Limits, StoreError};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct AssignmentApi(pub(crate) Arc<App>);

const PAGE_KIND: &str = "conversations";

fn conversation_id(v: &mut Violations, value: &str) -> Option<ConversationId> {
    v.check("conversation_id", ConversationId::parse(value))
}

/// An optional record id: `None` when empty.
fn optional_id<'a>(v: &mut Violations, field: &str, value: &'a str) -> Option<&'a str> {
    if value.is_empty() {
        return None;
    }
    super::record_id(v, field, value);
    Some(value)
}

/// UnassignConversationRequest and ResolveConversationRequest.
trait ConversationCall: Addressed {
    fn conversation_id(&self) -> &str;
}

impl ConversationCall for pb::UnassignConversationRequest {
    fn conversation_id(&self) -> &str {
        &self.conversation_id
    }
}

impl ConversationCall for pb::ResolveConversationRequest {
    fn conversation_id(&self) -> &str {
        &self.conversation_id
    }
}

/// Whose conversation a call's permission was decided on: the store acts only on the
/// conversation as it was seen.
enum Decided {
    /// A service key: allowed whoever holds it.
    Service,
    /// A person, on the conversation assigned to this user (`None`: nobody).
    Person(Option<String>),
}

impl Decided {
    fn seen(&self) -> Seen<'_> {
        match self {
            Decided::Service => Seen::Any,
            Decided::Person(assignee) => Seen::Assignee(assignee.as_deref()),
        }
    }
}

/// What UnassignConversation and ResolveConversation do.
#[derive(Clone, Copy)]
enum Settle {
    Unassign,
    Resolve,
}

impl AssignmentApi {
    /// Authorizes a person's `permission` on the conversation as it is now (its current assignee;
    /// nobody for one Roster does not know), and returns whose conversation that decided it on,
    /// which the store checks again in its transaction. Service keys may do everything.
    async fn authorize_on(&self, call: &Call, id: &ConversationId, permission: Permission) -> Result<Decided, Status> {
        if call.caller.user().is_none() {
            return Ok(Decided::Service);
        }
        let assignee = match self.0.store.conversation(&call.workspace_id, id).await {
            Ok(conversation) => conversation.assignee,
            Err(StoreError::NotFound(Entity::Conversation)) => None,
            Err(err) => return Err(error::store(err)),
        };
        self.0.authorize(&call.caller, Need::On(permission, assignee.as_deref())).await?;
        Ok(Decided::Person(assignee))
    }

    /// UnassignConversation and ResolveConversation.
    async fn settle(
        &self,
        request: Request<impl ConversationCall>,
        settle: Settle,
    ) -> Result<pb::ConversationAssignment, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Member).await?;
        let mut v = Violations::new();
        let id = conversation_id(&mut v, request.get_ref().conversation_id());
        v.finish()?;
        let id = checked(id)?;
        let permission = match settle {
            Settle::Unassign => Permission::ConversationsAssign,
            Settle::Resolve => Permission::ConversationsReply,
        };
        let decided = self.authorize_on(&call, &id, permission).await?;
        let (ctx, workspace_id, seen) = (&call.ctx, call.workspace_id.as_str(), decided.seen());
        let changed = match settle {
            Settle::Unassign => app.store.unassign_conversation(ctx, workspace_id, &id, seen).await,
            Settle::Resolve => app.store.resolve_conversation(ctx, workspace_id, &id, seen).await,
        }
        .map_err(error::store)?;
        let conversation = app.settle(&call, changed).await;
        Ok(convert::conversation(&conversation))
    }
}

#[tonic::async_trait]
impl AssignmentService for AssignmentApi {
    async fn take_conversation(
        &self,
        request: Request<pb::TakeConversationRequest>,
    ) -> Result<Response<pb::TakeConversationResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Take).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        super::record_id(&mut v, "team_id", &req.team_id);
        let id = match req.conversation_id.as_str() {
            "" => None,
            id => conversation_id(&mut v, id),
        };
        v.finish()?;
        let user = call
            .caller
            .user()
            .ok_or_else(|| error::internal(&std::io::Error::other("Need::Take let a service key through")))?;
        let changed = app
            .store
            .take_conversation(&call.ctx, &call.workspace_id, &req.team_id, &user.id, id.as_ref())
            .await
            .map_err(error::store)?;
        let conversation = app.settle(&call, changed).await;
        app.metrics.assignment(AssignOutcome::Assigned);
        Ok(Response::new(pb::TakeConversationResponse { assignment: Some(convert::conversation(&conversation)) }))
    }

    async fn assign_conversation(
        &self,
        request: Request<pb::AssignConversationRequest>,
    ) -> Result<Response<pb::AssignConversationResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Member).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let id = conversation_id(&mut v, &req.conversation_id);
        let team_id = optional_id(&mut v, "team_id", &req.team_id);
        let assignee = optional_id(&mut v, "assignee_id", &req.assignee_id);
        if req.override_availability && req.assignee_id.is_empty() {
            v.add("override_availability", "only an assignment to a named assignee_id can override");
        }
        v.finish()?;
        let id = checked(id)?;
        let decided = self.authorize_on(&call, &id, Permission::ConversationsAssign).await?;
        let to = assignee.map_or(Target::Strategy, Target::User);
        let limits = if req.override_availability { Limits::Override } else { Limits::Respect };
        let assign =
            AssignRequest { conversation: &id, team_id, to, transfer: req.transfer, limits, seen: decided.seen() };
        let changed =
            app.store.assign_conversation(&call.ctx, &call.workspace_id, &assign).await.map_err(|err| match err {
                StoreError::NotFound(Entity::User) => invalid("assignee_id", "no user with this id in the workspace"),
                StoreError::NotFound(Entity::Conversation) if team_id.is_none() => {
                    invalid("team_id", "required for a conversation Roster does not know yet")
                }
                StoreError::NotFound(Entity::Team) if team_id.is_none() => {
                    invalid("team_id", "the conversation's team no longer exists: name the team to reopen it in")
                }
                err => error::store(err),
            })?;
        let assigned = app.settle(&call, changed).await;
        app.metrics.assignment(match (assigned.changed, &assigned.conversation.assignee) {
            (false, _) => AssignOutcome::Unchanged,
            (true, Some(_)) => AssignOutcome::Assigned,
            (true, None) => AssignOutcome::Queued,
        });
        Ok(Response::new(pb::AssignConversationResponse {
            assignment: Some(convert::conversation(&assigned.conversation)),
            changed: assigned.changed,
        }))
    }

    async fn unassign_conversation(
        &self,
        request: Request<pb::UnassignConversationRequest>,
    ) -> Result<Response<pb::UnassignConversationResponse>, Status> {
        let assignment = self.settle(request, Settle::Unassign).await?;
        Ok(Response::new(pb::UnassignConversationResponse { assignment: Some(assignment) }))
    }

    async fn resolve_conversation(
        &self,
        request: Request<pb::ResolveConversationRequest>,
    ) -> Result<Response<pb::ResolveConversationResponse>, Status> {
        let assignment = self.settle(request, Settle::Resolve).await?;
        Ok(Response::new(pb::ResolveConversationResponse { assignment: Some(assignment) }))
    }

    async fn get_conversation_assignment(
        &self,
        request: Request<pb::GetConversationAssignmentRequest>,
    ) -> Result<Response<pb::GetConversationAssignmentResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Member).await?;
        let mut v = Violations::new();
        let id = conversation_id(&mut v, &request.get_ref().conversation_id);
        v.finish()?;
        let id = checked(id)?;
        self.authorize_on(&call, &id, Permission::ConversationsRead).await?;
        let conversation = app.store.conversation(&call.workspace_id, &id).await.map_err(error::store)?;
        Ok(Response::new(pb::GetConversationAssignmentResponse {
            assignment: Some(convert::conversation(&conversation)),
        }))
    }

    async fn list_conversation_assignments(
        &self,
        request: Request<pb::ListConversationAssignmentsRequest>,
    ) -> Result<Response<pb::ListConversationAssignmentsResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Member).await?;
        let req = request.get_ref();
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
        // With scope ASSIGNED, a person may list only their own conversations; a member who may
        // take from a team's queue may list that queue.
        if let Err(denied) = app.authorize(&call.caller, Need::On(Permission::ConversationsRead, assignee)).await {
            let (Some(team), Some(user), true) = (team, call.caller.user(), req.queued) else { return Err(denied) };
            app.authorize(&call.caller, Need::Take).await.map_err(|_| denied.clone())?;
            if !app.store.is_team_member(&call.workspace_id, team, &user.id).await.map_err(error::store)? {
                return Err(denied);
            }
        }
        app.ensure_workspace(&call).await?;
        let limit = convert::page_size(req.page_size)?;
        let after = convert::decode_page_token(PAGE_KIND, &req.page_token)?;
        let filter = ConversationFilter {
            assignee: assignee.map(str::to_owned),
            team: team.map(str::to_owned),
            queued: req.queued,
            status,
        };
        let page = app
            .store
            .list_conversations(&call.workspace_id, &filter, after.as_deref(), limit)
            .await
            .map_err(error::store)?;
        Ok(Response::new(pb::ListConversationAssignmentsResponse {
            assignments: page.items.iter().map(convert::conversation).collect(),
            next_page_token: convert::encode_page_token(PAGE_KIND, page.next),
        }))
    }
}
