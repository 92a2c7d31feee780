use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::{Code, Status};

pub(crate) async fn create_team(
    app: &TestApp,
    token: &str,
    name: &str,
    strategy: pb::Strategy,
) -> Result<pb::Team, Status> {
    let request = pb::CreateTeamRequest { name: name.into(), strategy: strategy as i32, ..Default::default() };
    Ok(app.teams().create_team(bearer(token, request)).await?.into_inner().team.expect("team"))
}

pub(crate) async fn add_member(
    app: &TestApp,
    token: &str,
    team_id: &str,
    user_id: &str,
    max_open: Option<i32>,
) -> Result<pb::TeamMember, Status> {
    let request = pb::AddTeamMemberRequest {
        team_id: team_id.into(),
        user_id: user_id.into(),
        max_open_conversations: max_open,
        ..Default::default()
    };
    Ok(app.teams().add_team_member(bearer(token, request)).await?.into_inner().member.expect("member"))
}

/// A team of `strategy` with `k` new agents named "Agent 0".."Agent k-1", in that order.
pub(crate) async fn team_of_agents(
    app: &TestApp,
    ws: &Workspace,
    name: &str,
    strategy: pb::Strategy,
    k: usize,
    max_open: Option<i32>,
) -> (pb::Team, Vec<pb::User>) {
    let team = create_team(app, &ws.admin_token, name, strategy).await.expect("team");
    let mut agents = Vec::new();
    for i in 0..k {
        let request = pb::CreateUserRequest {
            email: format!("{}-{i}@{}.example", name.to_lowercase().replace(' ', "-"), ws.slug),
            full_name: format!("{name} Agent {i}"),
            password: PASSWORD.into(),
            role: "agent".into(),
            ..Default::default()
        };
        let user = app.users().create_user(bearer(&ws.admin_token, request)).await.expect("agent").into_inner();
        let user = user.user.expect("user");
        add_member(app, &ws.admin_token, &team.id, &user.id, max_open).await.expect("member");
        agents.push(user);
    }
    (team, agents)
}

async fn members(app: &TestApp, token: &str, team_id: &str) -> Vec<pb::TeamMember> {
    let request = pb::ListTeamMembersRequest { team_id: team_id.into(), ..Default::default() };
    app.teams().list_team_members(bearer(token, request)).await.expect("members").into_inner().members
}

#[tokio::test]
async fn an_admin_creates_lists_renames_and_deletes_teams() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let token = &acme.admin_token;
    let sales = create_team(&app, token, " Sales ", pb::Strategy::RoundRobin).await.expect("sales");
    assert_eq!(
        (sales.name.as_str(), sales.strategy, sales.member_count),
        ("Sales", pb::Strategy::RoundRobin as i32, 0)
    );
    create_team(&app, token, "billing", pb::Strategy::Manual).await.expect("billing");

    let taken = create_team(&app, token, "SALES", pb::Strategy::Manual).await.expect_err("taken");
    assert_status(&taken, Code::AlreadyExists, "TEAM_NAME_TAKEN");

    let list = app.teams().list_teams(bearer(token, pb::ListTeamsRequest::default())).await.expect("list");
    let names: Vec<String> = list.into_inner().teams.into_iter().map(|t| t.name).collect();
    assert_eq!(names, ["billing", "Sales"]);

    let rename = |etag: &str| pb::UpdateTeamRequest {
        workspace_id: String::new(),
        team: Some(pb::Team {
            id: sales.id.clone(),
            name: "Sales EMEA".into(),
            strategy: pb::Strategy::LoadBalanced as i32,
            etag: etag.into(),
            ..Default::default()
        }),
        update_mask: None,
    };
    let updated = app.teams().update_team(bearer(token, rename(&sales.etag))).await.expect("update").into_inner();
    let updated = updated.team.expect("team");
    assert_eq!((updated.name.as_str(), updated.strategy), ("Sales EMEA", pb::Strategy::LoadBalanced as i32));
    let stale = app.teams().update_team(bearer(token, rename(&sales.etag))).await.expect_err("stale");
    assert_status(&stale, Code::Aborted, "ETAG_MISMATCH");

    let delete = pb::DeleteTeamRequest { team_id: sales.id.clone(), ..Default::default() };
    app.teams().delete_team(bearer(token, delete)).await.expect("delete");
    let get = pb::GetTeamRequest { team_id: sales.id.clone(), ..Default::default() };
    let gone = app.teams().get_team(bearer(token, get)).await.expect_err("gone");
    assert_status(&gone, Code::NotFound, "TEAM_NOT_FOUND");

    let actions = app.audit_actions(&acme.id).await;
    for action in ["team.created", "team.updated", "team.deleted"] {
        assert!(actions.iter().any(|a| a == action), "{action} in {actions:?}");
    }
}

#[tokio::test]
async fn bad_team_input_names_every_field_and_changes_nothing() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let before = app.audit_actions(&acme.id).await.len();
    let request = pb::CreateTeamRequest { name: "\u{0}".into(), strategy: 0, ..Default::default() };
    let status = app.teams().create_team(bearer(&acme.admin_token, request)).await.expect_err("invalid");
    assert_invalid(&status, "INVALID_FIELD", &["name", "strategy"]);
    let request = pb::CreateTeamRequest { name: "x".repeat(101), strategy: 99, ..Default::default() };
    let status = app.teams().create_team(bearer(&acme.admin_token, request)).await.expect_err("invalid");
    assert_invalid(&status, "INVALID_FIELD", &["name", "strategy"]);
    let team = create_team(&app, &acme.admin_token, "Sales", pb::Strategy::Manual).await.expect("team");
    let request = pb::AddTeamMemberRequest {
        team_id: team.id.clone(),
        user_id: "nope".into(),
        max_open_conversations: Some(-1),
        ..Default::default()
    };
    let status = app.teams().add_team_member(bearer(&acme.admin_token, request)).await.expect_err("invalid");
    assert_invalid(&status, "INVALID_FIELD", &["user_id", "max_open_conversations"]);
    assert_eq!(app.audit_actions(&acme.id).await.len(), before + 1, "only the team's creation was recorded");
}

#[tokio::test]
async fn members_keep_their_order_and_show_their_capacity_and_eligibility() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Support", pb::Strategy::RoundRobin, 3, None).await;
    let token = &acme.admin_token;
    let again = add_member(&app, token, &team.id, &agents[0].id, None).await.expect_err("twice");
    assert_status(&again, Code::AlreadyExists, "ALREADY_TEAM_MEMBER");

    // Ken (agent 1) leaves and comes back with his own capacity: he is last now.
    let remove =
        pb::RemoveTeamMemberRequest { team_id: team.id.clone(), user_id: agents[1].id.clone(), ..Default::default() };
    app.teams().remove_team_member(bearer(token, remove.clone())).await.expect("remove");
    let missing = app.teams().remove_team_member(bearer(token, remove)).await.expect_err("not a member");
    assert_status(&missing, Code::NotFound, "TEAM_MEMBER_NOT_FOUND");
    let back = add_member(&app, token, &team.id, &agents[1].id, Some(2)).await.expect("back");
    assert_eq!((back.max_open_conversations, back.effective_max_open_conversations), (Some(2), 2));

    let away = pb::SetAvailabilityRequest {
        user_id: agents[2].id.clone(),
        availability: pb::Availability::Away as i32,
        ..Default::default()
    };
    app.users().set_availability(bearer(token, away)).await.expect("away");
    let listed = members(&app, token, &team.id).await;
    let order: Vec<&str> = listed.iter().map(|m| m.user_id.as_str()).collect();
    assert_eq!(order, [agents[0].id.as_str(), agents[2].id.as_str(), agents[1].id.as_str()]);
    assert_eq!((listed[1].eligible, listed[1].ineligible_reason.as_str()), (false, "away"));
    assert_eq!((listed[0].max_open_conversations, listed[0].effective_max_open_conversations), (None, 0));

    // An agent may read teams but not manage them.
    let agent_token = app.login("acme", &agents[0].email, PASSWORD).await.expect("login");
    assert_eq!(members(&app, &agent_token, &team.id).await.len(), 3);
    let denied = create_team(&app, &agent_token, "Mine", pb::Strategy::Manual).await.expect_err("denied");
    assert_status(&denied, Code::PermissionDenied, "PERMISSION_DENIED");
    let actions = app.audit_actions(&acme.id).await;
    assert_eq!(actions.iter().filter(|a| *a == "team.member_added").count(), 4);
    assert_eq!(actions.iter().filter(|a| *a == "team.member_removed").count(), 1);
}

#[tokio::test]
async fn a_supervisor_cannot_add_an_admin_to_a_team() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let supervisor = app.create_user(&acme.admin_token, "sup@acme.example", "supervisor").await.expect("supervisor");
    let token = app.login("acme", &supervisor.email, PASSWORD).await.expect("login");
    let team = create_team(&app, &token, "Escalations", pb::Strategy::Manual).await.expect("team");
    let status = add_member(&app, &token, &team.id, &acme.admin.id, None).await.expect_err("escalation");
    assert_status(&status, Code::PermissionDenied, "ESCALATION");
    add_member(&app, &token, &team.id, &supervisor.id, None).await.expect("themselves");
}

#[tokio::test]
async fn list_users_filters_by_team() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Filter", pb::Strategy::Manual, 2, None).await;
    app.create_user(&acme.admin_token, "outsider@acme.example", "agent").await.expect("outsider");
    let list = |team_id: &str| pb::ListUsersRequest { team_id: team_id.into(), ..Default::default() };
    let users = app.users().list_users(bearer(&acme.admin_token, list(&team.id))).await.expect("list").into_inner();
    let mut ids: Vec<String> = users.users.into_iter().map(|u| u.id).collect();
    let mut expected: Vec<String> = agents.iter().map(|a| a.id.clone()).collect();
    ids.sort();
    expected.sort();
    assert_eq!(ids, expected);
    let bad = app.users().list_users(bearer(&acme.admin_token, list("nope"))).await.expect_err("bad id");
    assert_invalid(&bad, "INVALID_FIELD", &["team_id"]);
}

async fn set_capacity(
    app: &TestApp,
    token: &str,
    team_id: &str,
    user_id: &str,
    max_open: Option<i32>,
) -> Result<pb::TeamMember, Status> {
    let request = pb::UpdateTeamMemberRequest {
        team_id: team_id.into(),
        user_id: user_id.into(),
        max_open_conversations: max_open,
        ..Default::default()
    };
    Ok(app.teams().update_team_member(bearer(token, request)).await?.into_inner().member.expect("member"))
}

/// A member's capacity changes in place: they keep their place in the team's order and round
/// robin's turn, the queue goes to them if they now have room, and the change is in the feed.
#[tokio::test]
async fn a_members_capacity_changes_in_place_and_the_queue_goes_to_them_if_they_have_room() {
    use crate::assignment::{get, route};
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Sales", pb::Strategy::RoundRobin, 3, Some(1)).await;
    for id in ["c1", "c2", "c3", "c4"] {
        route(&app, &acme.id, id, &team.id).await;
    }
    assert_eq!(get(&app, &acme.id, "c4").await.assignee_id, "", "everyone is at capacity");
    let order: Vec<String> = members(&app, &acme.admin_token, &team.id).await.into_iter().map(|m| m.user_id).collect();

    let raised = set_capacity(&app, &acme.admin_token, &team.id, &agents[1].id, Some(2)).await.expect("raised");
    assert_eq!((raised.max_open_conversations, raised.effective_max_open_conversations), (Some(2), 2));
    assert_eq!(get(&app, &acme.id, "c4").await.assignee_id, agents[1].id, "the queue went to the one with room");
    let after: Vec<String> = members(&app, &acme.admin_token, &team.id).await.into_iter().map(|m| m.user_id).collect();
    assert_eq!(after, order, "the same place in the order");
    let reset = set_capacity(&app, &acme.admin_token, &team.id, &agents[0].id, None).await.expect("the default");
    assert_eq!(reset.max_open_conversations, None);
    // Round robin goes on after the last one served by turn (agent 2 took c3), not after agent 1.
    assert_eq!(route(&app, &acme.id, "c5", &team.id).await.assignee_id, agents[0].id);

    let events = events_of(&app, &acme.id, &[pb::EventType::MembershipChanged], 2).await;
    let changed: Vec<(String, Option<i32>)> = events
        .iter()
        .map(|e| match &e.payload {
            Some(pb::event::Payload::Membership(m)) => (m.user_id.clone(), m.max_open_conversations),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(changed, [(agents[1].id.clone(), Some(2)), (agents[0].id.clone(), None)]);

    let fingerprint = app.fingerprint(false).await;
    let before = fingerprint.read().await;
    let agent = app.login("acme", &agents[2].email, PASSWORD).await.expect("login");
    let denied = set_capacity(&app, &agent, &team.id, &agents[2].id, Some(9)).await;
    assert_status(&denied.expect_err("an agent"), Code::PermissionDenied, "PERMISSION_DENIED");
    let outsider = app.create_user(&acme.admin_token, "sam@acme.example", "agent").await.expect("user");
    let fingerprint_after_user = app.fingerprint(false).await;
    let before_user = fingerprint_after_user.read().await;
    let missing = set_capacity(&app, &acme.admin_token, &team.id, &outsider.id, Some(1)).await;
    assert_status(&missing.expect_err("not a member"), Code::NotFound, "TEAM_MEMBER_NOT_FOUND");
    let bad = set_capacity(&app, &acme.admin_token, &team.id, "x", Some(-1)).await;
    assert_invalid(&bad.expect_err("bad"), "INVALID_FIELD", &["user_id", "max_open_conversations"]);
    assert_eq!(fingerprint_after_user.read().await, before_user, "refused changes change nothing");
    assert_ne!(fingerprint.read().await, before, "only the new user");
}
