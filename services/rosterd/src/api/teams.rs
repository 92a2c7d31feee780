use crate::app::App;
use crate::convert;
use crate::error::{self, Violations, checked, invalid};
use crate::policy::Need;
use roster_identity::TeamName;
use roster_proto::v1::{self as pb, team_service_server::TeamService};
use roster_store::{NewTeam, TeamChanges};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub(crate) struct TeamApi(pub(crate) Arc<App>);

const TEAMS_PAGE: &str = "teams";
const MEMBERS_PAGE: &str = "team-members";

fn team_name(v: &mut Violations, field: &str, value: &str) -> Option<TeamName> {
    v.check(field, TeamName::parse(value))
}

/// The team and the user a membership call names.
fn membership(v: &mut Violations, team_id: &str, user_id: &str) {
    super::record_id(v, "team_id", team_id);
    super::record_id(v, "user_id", user_id);
}

#[tonic::async_trait]
impl TeamService for TeamApi {
    async fn create_team(
        &self,
        request: Request<pb::CreateTeamRequest>,
    ) -> Result<Response<pb::CreateTeamResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageTeams).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        let name = team_name(&mut v, "name", &req.name);
        let strategy = v.check("strategy", convert::strategy_from(req.strategy));
        v.finish()?;
        let new = NewTeam { name: checked(name)?, strategy: checked(strategy)? };
        let team = app.store.create_team(&call.ctx, &call.workspace_id, new).await.map_err(error::store)?;
        Ok(Response::new(pb::CreateTeamResponse { team: Some(convert::team(&team)) }))
    }

    async fn get_team(&self, request: Request<pb::GetTeamRequest>) -> Result<Response<pb::GetTeamResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Member).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        super::record_id(&mut v, "team_id", &req.team_id);
        v.finish()?;
        let team = app.store.team(&call.workspace_id, &req.team_id).await.map_err(error::store)?;
        Ok(Response::new(pb::GetTeamResponse { team: Some(convert::team(&team)) }))
    }

    async fn list_teams(
        &self,
        request: Request<pb::ListTeamsRequest>,
    ) -> Result<Response<pb::ListTeamsResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Member).await?;
        app.ensure_workspace(&call).await?;
        let req = request.get_ref();
        let limit = convert::page_size(req.page_size)?;
        let after = convert::decode_page_token(TEAMS_PAGE, &req.page_token)?;
        let member = match req.user_id.as_str() {
            "" => None,
            id if super::is_record_id(id) => Some(id),
            _ => return Err(invalid("user_id", "not an id this server issued")),
        };
        let page =
            app.store.list_teams(&call.workspace_id, member, after.as_deref(), limit).await.map_err(error::store)?;
        Ok(Response::new(pb::ListTeamsResponse {
            teams: page.items.iter().map(convert::team).collect(),
            next_page_token: convert::encode_page_token(TEAMS_PAGE, page.next),
        }))
    }

    async fn update_team(
        &self,
        request: Request<pb::UpdateTeamRequest>,
    ) -> Result<Response<pb::UpdateTeamResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageTeams).await?;
        let req = request.into_inner();
        let Some(team) = req.team else { return Err(invalid("team", "required")) };
        let mut v = Violations::new();
        super::record_id(&mut v, "team.id", &team.id);
        let set = [("name", !team.name.is_empty()), ("strategy", team.strategy != 0)];
        let paths = super::mask_paths(&mut v, req.update_mask, &set);
        let mut changes = TeamChanges::default();
        for path in &paths {
            match path.as_str() {
                "name" => changes.name = team_name(&mut v, "team.name", &team.name),
                "strategy" => changes.strategy = v.check("team.strategy", convert::strategy_from(team.strategy)),
                other => {
                    v.add("update_mask", format!("unknown or read-only path {other:?}; updatable: name, strategy"))
                }
            }
        }
        let expected_version = super::etag(&mut v, "team.etag", &team.etag);
        v.finish()?;
        let changed = app
            .store
            .update_team(&call.ctx, &call.workspace_id, &team.id, changes, expected_version)
            .await
            .map_err(error::store)?;
        let updated = app.settle(&call, changed).await;
        Ok(Response::new(pb::UpdateTeamResponse { team: Some(convert::team(&updated)) }))
    }

    async fn delete_team(
        &self,
        request: Request<pb::DeleteTeamRequest>,
    ) -> Result<Response<pb::DeleteTeamResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageTeams).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        super::record_id(&mut v, "team_id", &req.team_id);
        let expected_version = super::etag(&mut v, "etag", &req.etag);
        v.finish()?;
        app.store
            .delete_team(&call.ctx, &call.workspace_id, &req.team_id, expected_version)
            .await
            .map_err(error::store)?;
        Ok(Response::new(pb::DeleteTeamResponse {}))
    }

    async fn add_team_member(
        &self,
        request: Request<pb::AddTeamMemberRequest>,
    ) -> Result<Response<pb::AddTeamMemberResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageTeams).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        membership(&mut v, &req.team_id, &req.user_id);
        let max_open = super::capacity(&mut v, "max_open_conversations", req.max_open_conversations);
        v.finish()?;
        let changed = app
            .store
            .add_team_member(&call.ctx, &call.workspace_id, &req.team_id, &req.user_id, max_open)
            .await
            .map_err(error::store)?;
        let member = app.settle(&call, changed).await;
        Ok(Response::new(pb::AddTeamMemberResponse { member: Some(convert::team_member(&member)) }))
    }

    async fn update_team_member(
        &self,
        request: Request<pb::UpdateTeamMemberRequest>,
    ) -> Result<Response<pb::UpdateTeamMemberResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageTeams).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        membership(&mut v, &req.team_id, &req.user_id);
        let max_open = super::capacity(&mut v, "max_open_conversations", req.max_open_conversations);
        v.finish()?;
        let changed = app
            .store
            .update_team_member(&call.ctx, &call.workspace_id, &req.team_id, &req.user_id, max_open)
            .await
            .map_err(error::store)?;
        let member = app.settle(&call, changed).await;
        Ok(Response::new(pb::UpdateTeamMemberResponse { member: Some(convert::team_member(&member)) }))
    }

    async fn remove_team_member(
        &self,
        request: Request<pb::RemoveTeamMemberRequest>,
    ) -> Result<Response<pb::RemoveTeamMemberResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::ManageTeams).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        membership(&mut v, &req.team_id, &req.user_id);
        v.finish()?;
        app.store
            .remove_team_member(&call.ctx, &call.workspace_id, &req.team_id, &req.user_id)
            .await
            .map_err(error::store)?;
        Ok(Response::new(pb::RemoveTeamMemberResponse {}))
    }

    async fn list_team_members(
        &self,
        request: Request<pb::ListTeamMembersRequest>,
    ) -> Result<Response<pb::ListTeamMembersResponse>, Status> {
        let app = &self.0;
        let call = app.call(&request, Need::Member).await?;
        let req = request.get_ref();
        let mut v = Violations::new();
        super::record_id(&mut v, "team_id", &req.team_id);
        v.finish()?;
        let limit = convert::page_size(req.page_size)?;
        let after = convert::decode_page_token(MEMBERS_PAGE, &req.page_token)?
            .map(|cursor| {
                cursor
                    .parse::<i64>()
                    .map_err(|_| invalid("page_token", "not a page token of this listing; start again without one"))
            })
            .transpose()?;
        let availability = convert::availability_filter(req.availability)?;
        let page = app
            .store
            .list_team_members(&call.workspace_id, &req.team_id, availability, after, limit)
            .await
            .map_err(error::store)?;
        Ok(Response::new(pb::ListTeamMembersResponse {
            members: page.items.iter().map(convert::team_member).collect(),
            next_page_token: convert::encode_page_token(MEMBERS_PAGE, page.next),
        }))
    }
}
