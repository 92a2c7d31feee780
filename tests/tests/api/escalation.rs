//! The escalation matrix: each built-in role and two custom roles × each management RPC → the
//! answer PRODUCT.md's "Roles and permissions" gives. Every cell runs on fresh targets, as the actor.

use crate::roles::{create_role, grants};
use pb::Scope::{All, Assigned};
use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::{Code, Status};

/// What an actor may do, per cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// The call succeeds.
    Ok,
    /// PERMISSION_DENIED `PERMISSION_DENIED`: the actor's role lacks the RPC's permission.
    Denied,
    /// PERMISSION_DENIED `ESCALATION`: it has the permission, but the change would grant or touch
    /// more than the actor holds (or an admin, and the actor is not one).
    Escalation,
}

/// The management calls of the matrix.
#[derive(Debug, Clone, Copy)]
enum Op {
    CreateAgent,
    CreateSupervisor,
    CreateAdmin,
    PromoteAgentToSupervisor,
    DeactivateAgent,
    DeactivateAdmin,
    ReactivateAgent,
    ListUsers,
    ListRoles,
    CreateRoleAssignedContacts,
    CreateRoleAllContacts,
    CreateRoleBilling,
    DeleteAgentLikeRole,
    ReadAudit,
}

const OPS: [Op; 14] = [
    Op::CreateAgent,
    Op::CreateSupervisor,
    Op::CreateAdmin,
    Op::PromoteAgentToSupervisor,
    Op::DeactivateAgent,
    Op::DeactivateAdmin,
    Op::ReactivateAgent,
    Op::ListUsers,
    Op::ListRoles,
    Op::CreateRoleAssignedContacts,
    Op::CreateRoleAllContacts,
    Op::CreateRoleBilling,
    Op::DeleteAgentLikeRole,
    Op::ReadAudit,
];

/// The actors: role id (or custom role name) and the expected answer for each op, in OPS order.
fn matrix() -> Vec<(&'static str, [Expect; 14])> {
    use Expect::{Denied as D, Escalation as E, Ok as O};
    vec![
        // Admin: everything.
        ("admin", [O, O, O, O, O, O, O, O, O, O, O, O, O, O]),
        // Supervisor: manages agents and supervisors, not admins; no roles.manage, no audit.read.
        ("supervisor", [O, O, E, O, O, E, O, O, O, D, D, D, D, D]),
        // Agent: no users.read, users.manage or roles.manage.
        ("agent", [D, D, D, D, D, D, D, D, D, D, D, D, D, D]),
        // Team lead: an agent's grants plus users.read/manage and roles.manage — may make agents and
        // roles within what it holds, nothing wider (contacts ALL, billing, supervisors, admins).
        ("Team lead", [O, E, E, E, O, E, O, O, O, O, E, E, O, D]),
        // Viewer: users.read only.
        ("Viewer", [D, D, D, D, D, D, D, O, O, D, D, D, D, D]),
    ]
}

const TEAM_LEAD: &[(&str, pb::Scope)] = &[
    ("conversations.read", Assigned),
    ("conversations.reply", Assigned),
    ("conversations.take", All),
    ("contacts.read", Assigned),
    ("templates.read", All),
    ("users.read", All),
    ("users.manage", All),
    ("roles.manage", All),
];

async fn run(app: &TestApp, admin: &str, actor: &str, op: Op, n: usize) -> Result<(), Status> {
    let email = |what: &str| format!("{what}{n}@acme.example");
    let create_as = |token: &str, who: &str, role: &str| {
        let (token, who, role) = (token.to_owned(), email(who), role.to_owned());
        async move { app.create_user(&token, &who, &role).await.map(|_| ()) }
    };
    let user = |id: &str| pb::DeactivateUserRequest { workspace_id: String::new(), user_id: id.into() };
    let new_role = |name: String, list: &'static [(&'static str, pb::Scope)]| pb::CreateRoleRequest {
        name,
        grants: grants(list),
        ..Default::default()
    };
    match op {
        Op::CreateAgent => create_as(actor, "new-agent", "agent").await,
        Op::CreateSupervisor => create_as(actor, "new-supervisor", "supervisor").await,
        Op::CreateAdmin => create_as(actor, "new-admin", "admin").await,
        Op::PromoteAgentToSupervisor => {
            let target = app.create_user(admin, &email("promoted"), "agent").await.expect("target");
            let request = pb::UpdateUserRequest {
                workspace_id: String::new(),
                user: Some(pb::User { id: target.id, role: "supervisor".into(), ..Default::default() }),
                update_mask: None,
            };
            app.users().update_user(bearer(actor, request)).await.map(|_| ())
        }
        Op::DeactivateAgent => {
            let target = app.create_user(admin, &email("leaving"), "agent").await.expect("target");
            app.users().deactivate_user(bearer(actor, user(&target.id))).await.map(|_| ())
        }
        Op::DeactivateAdmin => {
            let target = app.create_user(admin, &email("other-admin"), "admin").await.expect("target");
            app.users().deactivate_user(bearer(actor, user(&target.id))).await.map(|_| ())
        }
        Op::ReactivateAgent => {
            let target = app.create_user(admin, &email("returning"), "agent").await.expect("target");
            app.users().deactivate_user(bearer(admin, user(&target.id))).await.expect("deactivate");
            let request = pb::ReactivateUserRequest {
                workspace_id: String::new(),
                user_id: target.id,
                request_id: String::new(),
            };
            app.users().reactivate_user(bearer(actor, request)).await.map(|_| ())
        }
        Op::ListUsers => app.users().list_users(bearer(actor, pb::ListUsersRequest::default())).await.map(|_| ()),
        Op::ListRoles => app.roles().list_roles(bearer(actor, pb::ListRolesRequest::default())).await.map(|_| ()),
        Op::CreateRoleAssignedContacts => {
            let request = new_role(format!("Assigned contacts {n}"), &[("contacts.read", Assigned)]);
            app.roles().create_role(bearer(actor, request)).await.map(|_| ())
        }
        Op::CreateRoleAllContacts => {
            let request = new_role(format!("All contacts {n}"), &[("contacts.read", All)]);
            app.roles().create_role(bearer(actor, request)).await.map(|_| ())
        }
        Op::CreateRoleBilling => {
            let request = new_role(format!("Billing {n}"), &[("billing.manage", All)]);
            app.roles().create_role(bearer(actor, request)).await.map(|_| ())
        }
        Op::DeleteAgentLikeRole => {
            let role =
                create_role(app, admin, &format!("Agent-like {n}"), &[("templates.read", All)]).await.expect("role");
            let request = pb::DeleteRoleRequest { role_id: role.id, ..Default::default() };
            app.roles().delete_role(bearer(actor, request)).await.map(|_| ())
        }
        Op::ReadAudit => {
            app.audit().list_audit_events(bearer(actor, pb::ListAuditEventsRequest::default())).await.map(|_| ())
        }
    }
}

#[tokio::test]
async fn each_role_gets_what_the_product_says_from_each_management_rpc() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let admin = acme.admin_token.clone();
    create_role(&app, &admin, "Team lead", TEAM_LEAD).await.expect("team lead");
    create_role(&app, &admin, "Viewer", &[("users.read", All)]).await.expect("viewer");
    let roles = app.roles().list_roles(bearer(&admin, pb::ListRolesRequest::default())).await.expect("roles");
    let role_id = |name: &str| {
        roles.get_ref().roles.iter().find(|r| r.name == name || r.id == name).map(|r| r.id.clone()).expect("role")
    };

    let mut n = 0;
    let mut mismatches = Vec::new();
    for (actor_role, expected) in matrix() {
        let email = format!("actor-{}@acme.example", actor_role.replace(' ', "-").to_lowercase());
        app.create_user(&admin, &email, &role_id(actor_role)).await.expect("actor");
        let actor = app.login("acme", &email, PASSWORD).await.expect("actor login");
        for (op, expect) in OPS.iter().zip(expected) {
            n += 1;
            let answer = run(&app, &admin, &actor, *op, n).await;
            let got = match &answer {
                Ok(()) => Expect::Ok,
                Err(status) if status.code() == Code::PermissionDenied => {
                    match roster_tests::error_reason(status).as_deref() {
                        Some("ESCALATION") => Expect::Escalation,
                        Some("PERMISSION_DENIED") => Expect::Denied,
                        other => panic!("{actor_role} × {op:?}: unexpected reason {other:?}: {status:?}"),
                    }
                }
                Err(status) => panic!("{actor_role} × {op:?}: unexpected answer {status:?}"),
            };
            if got != expect {
                mismatches.push(format!("{actor_role} × {op:?}: expected {expect:?}, got {answer:?}"));
            }
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// The no-escalation rule weighs the acting person's role as it is when the change is made, not
/// as a process's copy last saw it: a grant taken from the actor's role on one process cannot
/// still be given on another whose copy has not caught up yet.
#[tokio::test]
async fn a_grant_just_taken_from_the_actor_cannot_be_given_on_a_process_that_has_not_caught_up() {
    use crate::roles::set_grants;
    // Copies catch up only when their process makes a change: the peer's stays as it first read it.
    let app = spawn_app_with(|config| config.authz_refresh_ms = 60_000).await;
    let acme = app.workspace("acme").await;
    let manager = create_role(&app, &acme.admin_token, "Manager", &[("users.manage", All), ("contacts.write", All)])
        .await
        .expect("manager role");
    let writer = create_role(&app, &acme.admin_token, "Writer", &[("contacts.write", All)]).await.expect("writer");
    app.create_user(&acme.admin_token, "mia@acme.example", &manager.id).await.expect("mia");
    let mia = app.login("acme", "mia@acme.example", PASSWORD).await.expect("mia logs in");
    let peer = app.spawn_peer_process().await;
    let ask = || pb::CheckPermissionRequest { permission: "contacts.write".into(), ..Default::default() };
    let held = peer.authz().check_permission(bearer(&mia, ask())).await.expect("the peer reads the workspace now");
    assert!(held.into_inner().decision.expect("decision").allowed);

    set_grants(&app, &acme.admin_token, &manager.id, &[("users.manage", All)]).await.expect("contacts.write taken");
    // The peer's copy has not caught up: it still says she holds it.
    let stale = peer.authz().check_permission(bearer(&mia, ask())).await.expect("stale");
    assert!(
        stale.into_inner().decision.expect("decision").allowed,
        "the peer's copy caught up; the test proves nothing"
    );
    let request = pb::CreateUserRequest {
        email: "wes@acme.example".into(),
        full_name: "Wes".into(),
        password: PASSWORD.into(),
        role: writer.id.clone(),
        ..Default::default()
    };
    let refused = peer.users().create_user(bearer(&mia, request)).await.expect_err("no longer hers to give");
    assert_status(&refused, Code::PermissionDenied, "ESCALATION");
}
