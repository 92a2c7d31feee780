use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub(crate) fn grant(permission: &str, scope: pb::Scope) -> pb::Grant {
    pb::Grant { permission: permission.into(), scope: scope as i32 }
}

pub(crate) fn grants(list: &[(&str, pb::Scope)]) -> Vec<pb::Grant> {
    list.iter().map(|(p, s)| grant(p, *s)).collect()
}

pub(crate) async fn create_role(
    app: &TestApp,
    token: &str,
    name: &str,
    list: &[(&str, pb::Scope)],
) -> Result<pb::Role, Status> {
    let request = pb::CreateRoleRequest { name: name.into(), grants: grants(list), ..Default::default() };
    Ok(app.roles().create_role(bearer(token, request)).await?.into_inner().role.expect("role"))
}

pub(crate) async fn set_grants(
    app: &TestApp,
    token: &str,
    role_id: &str,
    list: &[(&str, pb::Scope)],
) -> Result<pb::Role, Status> {
    let request = pb::UpdateRoleRequest {
        workspace_id: String::new(),
        role: Some(pb::Role { id: role_id.into(), grants: grants(list), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["grants".into()] }),
    };
    Ok(app.roles().update_role(bearer(token, request)).await?.into_inner().role.expect("role"))
}

pub(crate) async fn delete(app: &TestApp, token: &str, role_id: &str, move_to: &str) -> Result<i32, Status> {
    let request =
        pb::DeleteRoleRequest { role_id: role_id.into(), move_to_role_id: move_to.into(), ..Default::default() };
    Ok(app.roles().delete_role(bearer(token, request)).await?.into_inner().users_moved)
}

async fn role_names(app: &TestApp, token: &str) -> Vec<String> {
    let roles = app.roles().list_roles(bearer(token, pb::ListRolesRequest::default())).await.expect("list");
    roles.into_inner().roles.into_iter().map(|r| r.name).collect()
}

use pb::Scope::{All, Assigned, Unspecified};

#[tokio::test]
async fn the_catalog_is_grouped_by_feature_as_the_admin_screen_toggles_it() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let catalog = app
        .roles()
        .list_permissions(bearer(&acme.admin_token, pb::ListPermissionsRequest {}))
        .await
        .expect("catalog")
        .into_inner();
    let features: Vec<&str> = catalog.groups.iter().map(|g| g.feature.as_str()).collect();
    assert_eq!(
        features,
        [
            "conversations",
            "contacts",
            "campaigns",
            "templates",
            "settings",
            "analytics",
            "users",
            "roles",
            "teams",
            "billing",
            "audit"
        ]
    );
    let contacts = &catalog.groups[1];
    assert_eq!(contacts.display_name, "Contacts");
    let actions: Vec<(&str, &str, bool)> =
        contacts.permissions.iter().map(|p| (p.name.as_str(), p.action.as_str(), p.scoped)).collect();
    assert_eq!(
        actions,
        [("contacts.read", "read", true), ("contacts.write", "write", true), ("contacts.delete", "delete", true)]
    );
    assert!(!catalog.groups[3].permissions[0].scoped, "templates are not scoped");
    assert_eq!(catalog.groups.iter().map(|g| g.permissions.len()).sum::<usize>(), 20);
}

#[tokio::test]
async fn an_admin_creates_changes_and_deletes_a_custom_role() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;

    let created = create_role(
        &app,
        &acme.admin_token,
        " Billing desk ",
        &[("billing.manage", Unspecified), ("contacts.read", Assigned), ("templates.read", All)],
    )
    .await
    .expect("create");
    assert_eq!(created.name, "Billing desk");
    assert!(!created.builtin && !created.all_permissions);
    assert_eq!(created.workspace_id, acme.id);
    assert_eq!(created.etag, "1");
    let held: Vec<(String, pb::Scope)> = created.grants.iter().map(|g| (g.permission.clone(), g.scope())).collect();
    assert_eq!(
        held,
        [("contacts.read".into(), Assigned), ("templates.read".into(), All), ("billing.manage".into(), All)],
        "catalog order; unscoped permissions read back as ALL"
    );

    let fetched = app
        .roles()
        .get_role(bearer(
            &acme.admin_token,
            pb::GetRoleRequest { workspace_id: String::new(), role_id: created.id.clone() },
        ))
        .await
        .expect("get")
        .into_inner()
        .role;
    assert_eq!(fetched.as_ref(), Some(&created));
    assert_eq!(role_names(&app, &acme.admin_token).await, ["Admin", "Supervisor", "Agent", "Billing desk"]);

    let updated = set_grants(&app, &acme.admin_token, &created.id, &[("billing.manage", All)]).await.expect("update");
    assert_eq!(updated.etag, "2");
    assert_eq!(updated.grants, grants(&[("billing.manage", All)]));

    // An etag from before the change is refused, and changes nothing.
    let stale = pb::UpdateRoleRequest {
        workspace_id: String::new(),
        role: Some(pb::Role { id: created.id.clone(), name: "Renamed".into(), etag: "1".into(), ..Default::default() }),
        update_mask: None,
    };
    let status = app.roles().update_role(bearer(&acme.admin_token, stale)).await.expect_err("stale etag");
    assert_status(&status, Code::Aborted, "ETAG_MISMATCH");
    assert_eq!(status.get_error_details().error_info().expect("info").metadata["current_etag"], "2");

    assert_eq!(delete(&app, &acme.admin_token, &created.id, "").await.expect("delete"), 0);
    let gone = app
        .roles()
        .get_role(bearer(
            &acme.admin_token,
            pb::GetRoleRequest { workspace_id: String::new(), role_id: created.id.clone() },
        ))
        .await
        .expect_err("deleted");
    assert_status(&gone, Code::NotFound, "ROLE_NOT_FOUND");
    let actions = app.audit_actions(&acme.id).await;
    assert_eq!(actions[actions.len() - 3..], ["role.created", "role.updated", "role.deleted"]);
}

#[tokio::test]
async fn built_in_roles_cannot_be_changed_or_deleted() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let before = app.audit_actions(&acme.id).await.len();
    for id in ["admin", "supervisor", "agent"] {
        let status = set_grants(&app, &acme.admin_token, id, &[("templates.read", All)]).await.expect_err("builtin");
        assert_status(&status, Code::FailedPrecondition, "BUILTIN_ROLE");
        let move_to = if id == "agent" { "supervisor" } else { "agent" };
        let status = delete(&app, &acme.admin_token, id, move_to).await.expect_err("builtin");
        assert_status(&status, Code::FailedPrecondition, "BUILTIN_ROLE");
    }
    let agent = app
        .roles()
        .get_role(bearer(
            &acme.admin_token,
            pb::GetRoleRequest { workspace_id: String::new(), role_id: "agent".into() },
        ))
        .await
        .expect("agent")
        .into_inner()
        .role
        .expect("role");
    assert!(agent.builtin);
    assert_eq!(agent.grants.len(), 5);
    assert_eq!(app.audit_actions(&acme.id).await.len(), before);
}

#[tokio::test]
async fn a_role_still_held_is_deleted_only_by_moving_its_users() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let role =
        create_role(&app, &acme.admin_token, "Night shift", &[("conversations.read", Assigned)]).await.expect("role");
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", &role.id).await.expect("maria");
    let before = app.footprint(&acme.id).await;

    let refused = delete(&app, &acme.admin_token, &role.id, "").await.expect_err("in use");
    assert_status(&refused, Code::FailedPrecondition, "ROLE_IN_USE");
    assert_eq!(refused.get_error_details().error_info().expect("info").metadata["users"], "1");
    let unknown_target = delete(&app, &acme.admin_token, &role.id, "nosuchrole").await.expect_err("unknown");
    assert_invalid(&unknown_target, "UNKNOWN_ROLE", &["move_to_role_id"]);
    let unknown_role = delete(&app, &acme.admin_token, "nosuchrole", "agent").await.expect_err("unknown");
    assert_status(&unknown_role, Code::NotFound, "ROLE_NOT_FOUND");
    let itself = delete(&app, &acme.admin_token, &role.id, &role.id).await.expect_err("itself");
    assert_invalid(&itself, "INVALID_FIELD", &["move_to_role_id"]);
    assert_eq!(app.footprint(&acme.id).await, before, "refused deletions write nothing");

    assert_eq!(delete(&app, &acme.admin_token, &role.id, "agent").await.expect("moved"), 1);
    let moved = app.store.user(&acme.id, &maria.id).await.expect("maria");
    assert_eq!(moved.role.as_str(), "agent");
    assert_eq!(moved.version, 2, "the move is a change of the user");
    let events = app.store.list_audit_events(&acme.id, &Default::default(), None, 2).await.expect("audit").items;
    assert_eq!(events[0].action, "role.deleted");
    assert_eq!(events[0].details["users_moved"], "1");
    assert_eq!(events[1].action, "user.updated");
    assert_eq!(events[1].target, format!("user:{}", maria.id));
    assert_eq!(events[1].details["role"], "agent");
}

#[tokio::test]
async fn bad_role_input_names_its_field_and_writes_nothing() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    create_role(&app, &acme.admin_token, "Billing", &[("billing.manage", All)]).await.expect("first");
    let before = (role_names(&app, &acme.admin_token).await, app.footprint(&acme.id).await);

    type Case<'a> = (&'a str, Vec<(&'a str, pb::Scope)>, &'a str, &'a [&'a str]);
    let cases: [Case; 7] = [
        ("", vec![], "INVALID_FIELD", &["name"]),
        ("Bad\u{0}name", vec![], "INVALID_FIELD", &["name"]),
        ("admin", vec![], "INVALID_FIELD", &["name"]),
        ("Ok", vec![("contacts.fly", All)], "INVALID_FIELD", &["grants[0].permission"]),
        ("Ok", vec![("templates.read", All), ("contacts.read", Unspecified)], "INVALID_FIELD", &["grants[1].scope"]),
        ("Ok", vec![("templates.read", Assigned)], "INVALID_FIELD", &["grants[0].scope"]),
        ("", vec![("x", All)], "INVALID_FIELD", &["name", "grants[0].permission"]),
    ];
    for (name, list, reason, fields) in cases {
        let status = create_role(&app, &acme.admin_token, name, &list).await.expect_err("invalid");
        assert_invalid(&status, reason, fields);
    }
    let taken = create_role(&app, &acme.admin_token, "BILLING", &[]).await.expect_err("taken");
    assert_status(&taken, Code::AlreadyExists, "ROLE_NAME_TAKEN");
    let unknown = set_grants(&app, &acme.admin_token, "nosuchrole", &[]).await.expect_err("unknown");
    assert_status(&unknown, Code::NotFound, "ROLE_NOT_FOUND");
    assert_eq!((role_names(&app, &acme.admin_token).await, app.footprint(&acme.id).await), before);
}

#[tokio::test]
async fn a_custom_role_governs_what_its_holders_may_call_at_once() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let auditor = create_role(&app, &acme.admin_token, "Auditor", &[("audit.read", All), ("users.read", All)])
        .await
        .expect("role");
    app.create_user(&acme.admin_token, "olga@acme.example", &auditor.id).await.expect("olga");
    let olga = app.login("acme", "olga@acme.example", PASSWORD).await.expect("login");
    let audit = || pb::ListAuditEventsRequest::default();
    app.audit().list_audit_events(bearer(&olga, audit())).await.expect("auditors read the audit log");

    set_grants(&app, &acme.admin_token, &auditor.id, &[("users.read", All)]).await.expect("revoke");
    let denied = app.audit().list_audit_events(bearer(&olga, audit())).await.expect_err("revoked");
    assert_status(&denied, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(denied.get_error_details().error_info().expect("info").metadata["permission"], "audit.read");
    assert!(denied.message().contains("role Auditor does not grant audit.read"), "{}", denied.message());
}
