//! Tenant isolation: every RPC called with a valid credential of one workspace against the other
//! workspace, or with the other workspace's resource ids, is refused, changes nothing, and never
//! shows the other workspace's data in an answer or an error.

use crate::roles::create_role;
use crate::teams::team_of_agents;
use prost::Message;
use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::Code;
use tonic_types::StatusExt;

/// One workspace's records, as the other's callers might name them.
struct Tenant {
    slug: String,
    id: String,
    admin_token: String,
    admin_id: String,
    agent_id: String,
    role_id: String,
    team_id: String,
    conversation: String,
}

async fn tenant(app: &TestApp, slug: &str) -> Tenant {
    let ws = app.workspace(slug).await;
    let agent = app.create_user(&ws.admin_token, &format!("maria@{slug}.example"), "agent").await.expect("agent");
    let role = create_role(app, &ws.admin_token, "Sales", &[("contacts.read", pb::Scope::All)]).await.expect("role");
    let (team, _) = team_of_agents(app, &ws, "Support", pb::Strategy::RoundRobin, 1, None).await;
    let conversation = format!("wa:{slug}-only");
    let request = pb::AssignConversationRequest {
        workspace_id: ws.id.clone(),
        conversation_id: conversation.clone(),
        team_id: team.id.clone(),
        ..Default::default()
    };
    app.assignments().assign_conversation(service(request)).await.expect("assign");
    Tenant {
        slug: slug.into(),
        id: ws.id.clone(),
        admin_token: ws.admin_token,
        admin_id: ws.admin.id,
        agent_id: agent.id,
        role_id: role.id,
        team_id: team.id,
        conversation,
    }
}

/// Every workspace-scoped RPC, addressed to `ws` (empty: the caller's own) about the records of
/// `other`: the method's path and the encoded request.
fn requests(ws: &str, other: &Tenant) -> Vec<(&'static str, Vec<u8>)> {
    let w = || ws.to_owned();
    let mask = |path: &str| Some(prost_types::FieldMask { paths: vec![path.into()] });
    let user = || other.agent_id.clone();
    let check = pb::PermissionCheck { user_id: user(), permission: "contacts.read".into(), resource: None };
    vec![
        ("/roster.v1.WorkspaceService/GetWorkspace", pb::GetWorkspaceRequest { workspace_id: w() }.encode_to_vec()),
        (
            "/roster.v1.WorkspaceService/UpdateWorkspace",
            pb::UpdateWorkspaceRequest {
                workspace: Some(pb::Workspace {
                    id: if ws.is_empty() { other.id.clone() } else { w() },
                    name: "Taken Over".into(),
                    ..Default::default()
                }),
                update_mask: mask("name"),
            }
            .encode_to_vec(),
        ),
        ("/roster.v1.UserService/GetUser", pb::GetUserRequest { workspace_id: w(), user_id: user() }.encode_to_vec()),
        (
            "/roster.v1.UserService/ListUsers",
            pb::ListUsersRequest { workspace_id: w(), team_id: other.team_id.clone(), ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/roster.v1.UserService/CreateUser",
            pb::CreateUserRequest {
                workspace_id: w(),
                email: "intruder@example.com".into(),
                full_name: "Intruder".into(),
                password: PASSWORD.into(),
                role: other.role_id.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.UserService/UpdateUser",
            pb::UpdateUserRequest {
                workspace_id: w(),
                user: Some(pb::User { id: user(), role: "admin".into(), ..Default::default() }),
                update_mask: mask("role"),
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.UserService/DeactivateUser",
            pb::DeactivateUserRequest { workspace_id: w(), user_id: user() }.encode_to_vec(),
        ),
        (
            "/roster.v1.UserService/ReactivateUser",
            pb::ReactivateUserRequest { workspace_id: w(), user_id: user(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/roster.v1.UserService/SetAvailability",
            pb::SetAvailabilityRequest {
                workspace_id: w(),
                user_id: user(),
                availability: pb::Availability::Away as i32,
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.RoleService/GetRole",
            pb::GetRoleRequest { workspace_id: w(), role_id: other.role_id.clone() }.encode_to_vec(),
        ),
        (
            "/roster.v1.RoleService/ListRoles",
            pb::ListRolesRequest { workspace_id: w(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/roster.v1.RoleService/CreateRole",
            pb::CreateRoleRequest { workspace_id: w(), name: "Intruders".into(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/roster.v1.RoleService/UpdateRole",
            pb::UpdateRoleRequest {
                workspace_id: w(),
                role: Some(pb::Role { id: other.role_id.clone(), name: "Renamed".into(), ..Default::default() }),
                update_mask: mask("name"),
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.RoleService/DeleteRole",
            pb::DeleteRoleRequest { workspace_id: w(), role_id: other.role_id.clone(), ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/roster.v1.AuthorizationService/CheckPermission",
            pb::CheckPermissionRequest {
                workspace_id: w(),
                user_id: user(),
                permission: "contacts.read".into(),
                resource: None,
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.AuthorizationService/CheckPermissions",
            pb::CheckPermissionsRequest { workspace_id: w(), checks: vec![check] }.encode_to_vec(),
        ),
        (
            "/roster.v1.AuthorizationService/ListEffectivePermissions",
            pb::ListEffectivePermissionsRequest { workspace_id: w(), user_id: user() }.encode_to_vec(),
        ),
        (
            "/roster.v1.AuditService/ListAuditEvents",
            pb::ListAuditEventsRequest { workspace_id: w(), actor: other.admin_id.clone(), ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/roster.v1.TeamService/GetTeam",
            pb::GetTeamRequest { workspace_id: w(), team_id: other.team_id.clone() }.encode_to_vec(),
        ),
        (
            "/roster.v1.TeamService/ListTeams",
            pb::ListTeamsRequest { workspace_id: w(), ..Default::default() }.encode_to_vec(),
        ),
        (
            "/roster.v1.TeamService/CreateTeam",
            pb::CreateTeamRequest {
                workspace_id: w(),
                name: "Intruders".into(),
                strategy: pb::Strategy::Manual as i32,
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.TeamService/UpdateTeam",
            pb::UpdateTeamRequest {
                workspace_id: w(),
                team: Some(pb::Team { id: other.team_id.clone(), name: "Renamed".into(), ..Default::default() }),
                update_mask: mask("name"),
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.TeamService/DeleteTeam",
            pb::DeleteTeamRequest { workspace_id: w(), team_id: other.team_id.clone(), ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/roster.v1.TeamService/AddTeamMember",
            pb::AddTeamMemberRequest {
                workspace_id: w(),
                team_id: other.team_id.clone(),
                user_id: user(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.TeamService/UpdateTeamMember",
            pb::UpdateTeamMemberRequest {
                workspace_id: w(),
                team_id: other.team_id.clone(),
                user_id: user(),
                max_open_conversations: Some(9),
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.TeamService/RemoveTeamMember",
            pb::RemoveTeamMemberRequest { workspace_id: w(), team_id: other.team_id.clone(), user_id: user() }
                .encode_to_vec(),
        ),
        (
            "/roster.v1.TeamService/ListTeamMembers",
            pb::ListTeamMembersRequest { workspace_id: w(), team_id: other.team_id.clone(), ..Default::default() }
                .encode_to_vec(),
        ),
        (
            "/roster.v1.AssignmentService/AssignConversation",
            pb::AssignConversationRequest {
                workspace_id: w(),
                conversation_id: other.conversation.clone(),
                team_id: other.team_id.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.AssignmentService/UnassignConversation",
            pb::UnassignConversationRequest { workspace_id: w(), conversation_id: other.conversation.clone() }
                .encode_to_vec(),
        ),
        (
            "/roster.v1.AssignmentService/ResolveConversation",
            pb::ResolveConversationRequest { workspace_id: w(), conversation_id: other.conversation.clone() }
                .encode_to_vec(),
        ),
        (
            "/roster.v1.AssignmentService/GetConversationAssignment",
            pb::GetConversationAssignmentRequest { workspace_id: w(), conversation_id: other.conversation.clone() }
                .encode_to_vec(),
        ),
        (
            "/roster.v1.AssignmentService/ListConversationAssignments",
            pb::ListConversationAssignmentsRequest {
                workspace_id: w(),
                team_id: other.team_id.clone(),
                ..Default::default()
            }
            .encode_to_vec(),
        ),
        (
            "/roster.v1.AssignmentService/TakeConversation",
            pb::TakeConversationRequest {
                workspace_id: w(),
                team_id: other.team_id.clone(),
                conversation_id: other.conversation.clone(),
            }
            .encode_to_vec(),
        ),
        ("/roster.v1.BillingService/GetSubscription", pb::GetSubscriptionRequest { workspace_id: w() }.encode_to_vec()),
        (
            "/roster.v1.BillingService/ChangePlan",
            pb::ChangePlanRequest { workspace_id: w(), plan: pb::Plan::Scale as i32 }.encode_to_vec(),
        ),
        (
            "/roster.v1.BillingService/SetExtraSeats",
            pb::SetExtraSeatsRequest { workspace_id: w(), extra_seats: 1 }.encode_to_vec(),
        ),
    ]
}

/// What of `tenant` must not appear in an answer to someone else: its ids, slug and emails.
fn secrets(tenant: &Tenant) -> Vec<String> {
    vec![
        tenant.id.clone(),
        tenant.admin_id.clone(),
        tenant.agent_id.clone(),
        tenant.role_id.clone(),
        tenant.team_id.clone(),
        tenant.conversation.clone(),
        tenant.slug.clone(),
    ]
}

struct Outcome {
    path: &'static str,
    who: &'static str,
    answer: Result<Vec<u8>, tonic::Status>,
    request: Vec<u8>,
}

/// The only OK answers to a request naming another workspace's records: a listing whose filter
/// names them matches nothing (as a filter naming a record that does not exist), and a batch
/// check refuses its item (USER_NOT_FOUND, or SELF_ONLY for a person asking about someone else),
/// as a batch does for any item it cannot decide.
fn matches_nothing(path: &str, body: &[u8]) -> bool {
    match path {
        "/roster.v1.UserService/ListUsers" => pb::ListUsersResponse::decode(body).is_ok_and(|r| r.users.is_empty()),
        "/roster.v1.AuditService/ListAuditEvents" => {
            pb::ListAuditEventsResponse::decode(body).is_ok_and(|r| r.events.is_empty())
        }
        "/roster.v1.AssignmentService/ListConversationAssignments" => {
            pb::ListConversationAssignmentsResponse::decode(body).is_ok_and(|r| r.assignments.is_empty())
        }
        "/roster.v1.AuthorizationService/CheckPermissions" => {
            pb::CheckPermissionsResponse::decode(body).is_ok_and(|r| {
                matches!(r.results.as_slice(), [pb::CheckResult { result: Some(pb::check_result::Result::Error(e)) }]
                    if (e.reason.as_str(), e.code) == ("USER_NOT_FOUND", Code::NotFound as i32)
                        || (e.reason.as_str(), e.code) == ("SELF_ONLY", Code::PermissionDenied as i32))
            })
        }
        _ => false,
    }
}

/// Whether an encoded request names one of `other`'s records (its workspace included): any of its [`secrets`].
fn names(request: &[u8], other: &Tenant) -> bool {
    let text = String::from_utf8_lossy(request);
    secrets(other).iter().any(|secret| text.contains(secret.as_str()))
}

#[tokio::test]
async fn every_rpc_refuses_another_workspaces_token_and_ids_and_shows_none_of_its_data() {
    let app = spawn_app_with(|c| c.queue_sweep_ms = 3_600_000).await;
    let acme = tenant(&app, "acme").await;
    let globex = tenant(&app, "globex").await;
    let fingerprint = app.fingerprint(true).await;
    let before = fingerprint.read().await;

    let mut outcomes = Vec::new();
    // 1. A person's valid session, addressed to the other workspace: both ways round.
    for (caller, target, who) in [(&acme, &globex, "acme admin -> globex"), (&globex, &acme, "globex admin -> acme")] {
        for (path, request) in requests(&target.id, target) {
            let answer = raw::unary(&app.channel, path, bearer(&caller.admin_token, request.clone())).await;
            outcomes.push(Outcome { path, who, answer, request });
        }
    }
    // 2. The same session on its own workspace, naming the other workspace's records; calls
    //    that name none of them act on the caller's own workspace and are not isolation cases.
    for (path, request) in requests("", &globex).into_iter().filter(|(_, r)| names(r, &globex)) {
        let answer = raw::unary(&app.channel, path, bearer(&acme.admin_token, request.clone())).await;
        outcomes.push(Outcome { path, who: "acme admin, own workspace, globex ids", answer, request });
    }
    // 3. A service key naming one workspace and the other's records.
    for (path, request) in requests(&acme.id, &globex).into_iter().filter(|(_, r)| names(r, &globex)) {
        let answer = raw::unary(&app.channel, path, service(request.clone())).await;
        outcomes.push(Outcome { path, who: "service key, acme, globex ids", answer, request });
    }

    let (acme_secrets, globex_secrets) = (secrets(&acme), secrets(&globex));
    let mut failures = Vec::new();
    let mut codes = std::collections::BTreeMap::<String, usize>::new();
    for Outcome { path, who, answer, request } in &outcomes {
        let other_secrets = if who.starts_with("globex") { &acme_secrets } else { &globex_secrets };
        // What the caller did not send itself must not come back.
        let sent = String::from_utf8_lossy(request);
        let leaked = |text: &str| -> Vec<String> {
            other_secrets.iter().filter(|s| text.contains(s.as_str()) && !sent.contains(s.as_str())).cloned().collect()
        };
        let status = match answer {
            Ok(body) => {
                let leaks = leaked(&String::from_utf8_lossy(body));
                if !leaks.is_empty() || !matches_nothing(path, body) {
                    failures.push(format!("{who} {path}: answered OK ({} bytes; shows {leaks:?})", body.len()));
                }
                *codes.entry("Ok, nothing found".into()).or_default() += 1;
                continue;
            }
            Err(status) => status,
        };
        let reason = error_reason(status).unwrap_or_default();
        *codes.entry(format!("{:?} {reason}", status.code())).or_default() += 1;
        let expected = if who.contains("ids") {
            [Code::NotFound, Code::InvalidArgument, Code::PermissionDenied, Code::FailedPrecondition]
                .contains(&status.code())
        } else {
            // SetExtraSeats refuses every person, before looking at the workspace.
            status.code() == Code::PermissionDenied
                && ["WORKSPACE_MISMATCH", "SERVICE_KEY_REQUIRED"].contains(&reason.as_str())
        };
        if !expected {
            failures.push(format!("{who} {path}: {:?} {reason}: {}", status.code(), status.message()));
        }
        let leaks = leaked(&format!("{} {:?}", status.message(), status.get_error_details()));
        if !leaks.is_empty() {
            failures.push(format!("{who} {path}: the error shows {leaks:?}: {}", status.message()));
        }
    }
    let after = fingerprint.read().await;
    let changed: Vec<&String> = after.keys().filter(|t| after.get(*t) != before.get(*t)).collect();
    println!("isolation: {} calls over {} methods: {codes:?}", outcomes.len(), requests("", &globex).len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(changed.is_empty(), "refused calls changed {changed:?}");
}
