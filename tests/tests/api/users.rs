use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::Code;

fn create(email: &str, password: &str, role: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        workspace_id: String::new(),
        email: email.into(),
        full_name: "Maria Agent".into(),
        password: password.into(),
        role: role.into(),
        request_id: String::new(),
    }
}

fn list(page_size: i32, page_token: &str) -> pb::ListUsersRequest {
    pb::ListUsersRequest { page_size, page_token: page_token.into(), ..Default::default() }
}

async fn get(app: &TestApp, token: &str, user_id: &str) -> Result<pb::User, tonic::Status> {
    let request = pb::GetUserRequest { workspace_id: String::new(), user_id: user_id.into() };
    Ok(app.users().get_user(bearer(token, request)).await?.into_inner().user.expect("user"))
}

#[tokio::test]
async fn an_admin_creates_a_supervisor_and_an_agent_who_can_log_in() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;

    let supervisor = app.create_user(&acme.admin_token, "sam@acme.example", "supervisor").await.expect("supervisor");
    let agent = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");

    assert_eq!((supervisor.role.as_str(), agent.role.as_str()), ("supervisor", "agent"));
    assert_eq!(agent.status(), pb::UserStatus::Active);
    assert_eq!(agent.availability(), pb::Availability::Online);
    assert_eq!(agent.etag, "1");
    app.login("acme", "maria@acme.example", PASSWORD).await.expect("the agent logs in");
    let fetched = get(&app, &acme.admin_token, &agent.id).await.expect("get");
    assert_eq!(fetched, agent);
    assert_eq!(app.store.outbox_entries(&acme.id).await.expect("outbox").len(), 3);
}

#[tokio::test]
async fn each_bad_input_names_its_field_and_writes_nothing() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let before = app.footprint(&acme.id).await;
    let cases: [(pb::CreateUserRequest, &str, &[&str]); 7] = [
        (create("", PASSWORD, "agent"), "INVALID_FIELD", &["email"]),
        (create("maria.example", PASSWORD, "agent"), "INVALID_FIELD", &["email"]),
        (create("maria@acme.example", "123456789", "agent"), "INVALID_FIELD", &["password"]),
        (create("maria@acme.example", &"x".repeat(73), "agent"), "INVALID_FIELD", &["password"]),
        (create("maria@acme.example", PASSWORD, "wizard"), "UNKNOWN_ROLE", &["role"]),
        (create("maria@acme.example", PASSWORD, "no spaces allowed"), "INVALID_FIELD", &["role"]),
        (create("maria@acme.example", PASSWORD, ""), "INVALID_FIELD", &["role"]),
    ];

    for (request, reason, fields) in cases {
        let status = app.users().create_user(bearer(&acme.admin_token, request)).await.expect_err("invalid");
        assert_invalid(&status, reason, fields);
    }
    let mut blank_name = create("maria@acme.example", PASSWORD, "agent");
    blank_name.full_name = " \t".into();
    let status = app.users().create_user(bearer(&acme.admin_token, blank_name)).await.expect_err("invalid");
    assert_invalid(&status, "INVALID_FIELD", &["full_name"]);
    assert_eq!(app.footprint(&acme.id).await, before);
}

#[tokio::test]
async fn an_email_is_unique_in_its_workspace_whatever_its_case() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let globex = app.workspace("globex").await;
    app.create_user(&acme.admin_token, "maria@example.com", "agent").await.expect("first");
    let before = app.footprint(&acme.id).await;

    let status = app.create_user(&acme.admin_token, "Maria@Example.COM", "agent").await.expect_err("taken");
    let elsewhere = app.create_user(&globex.admin_token, "maria@example.com", "agent").await;

    assert_status(&status, Code::AlreadyExists, "EMAIL_TAKEN");
    assert_eq!(app.footprint(&acme.id).await, before);
    assert!(elsewhere.is_ok(), "another workspace may use the same email");
}

#[tokio::test]
async fn a_retried_create_with_the_same_request_id_creates_one_user() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let mut request = create("maria@acme.example", PASSWORD, "agent");
    request.request_id = "invite-maria".into();

    let first = app.users().create_user(bearer(&acme.admin_token, request.clone())).await.expect("first");
    let retry = app.users().create_user(bearer(&acme.admin_token, request)).await.expect("retry");

    assert_eq!(first.into_inner().user, retry.into_inner().user);
    assert_eq!(app.store.outbox_entries(&acme.id).await.expect("outbox").len(), 2, "one welcome email each");
}

#[tokio::test]
async fn user_management_follows_the_role_permissions_without_escalation() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    app.create_user(&acme.admin_token, "sam@acme.example", "supervisor").await.expect("supervisor");
    let agent = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    let sam = app.login("acme", "sam@acme.example", PASSWORD).await.expect("login");
    let maria = app.login("acme", "maria@acme.example", PASSWORD).await.expect("login");
    let before = app.footprint(&acme.id).await;

    let admin_by_supervisor = app.create_user(&sam, "x@acme.example", "admin").await.expect_err("escalation");
    let by_agent = app.create_user(&maria, "x@acme.example", "agent").await.expect_err("agent");
    let agent_lists = app.users().list_users(bearer(&maria, list(0, ""))).await.expect_err("agents do not list");
    assert_eq!(app.footprint(&acme.id).await, before, "refused calls write nothing");
    app.create_user(&sam, "newbie@acme.example", "agent").await.expect("supervisors manage agents");
    let mut by_service = create("x@acme.example", PASSWORD, "agent");
    by_service.workspace_id = acme.id.clone();
    app.users().create_user(service(by_service)).await.expect("service keys manage users");

    assert_status(&admin_by_supervisor, Code::PermissionDenied, "ESCALATION");
    assert_status(&by_agent, Code::PermissionDenied, "PERMISSION_DENIED");
    assert!(by_agent.message().contains("users.manage"), "{by_agent:?}");
    assert_status(&agent_lists, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(get(&app, &maria, &agent.id).await.expect("an agent reads themself").id, agent.id);
    app.users().list_users(bearer(&sam, list(0, ""))).await.expect("supervisors read users");
}

#[tokio::test]
async fn people_never_reach_another_workspace() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let globex = app.workspace("globex").await;

    let by_id = get(&app, &acme.admin_token, &globex.admin.id).await.expect_err("not in acme");
    let mut request = list(0, "");
    request.workspace_id = globex.id.clone();
    let listed = app.users().list_users(bearer(&acme.admin_token, request)).await.expect_err("other workspace");

    assert_status(&by_id, Code::NotFound, "USER_NOT_FOUND");
    assert_status(&listed, Code::PermissionDenied, "WORKSPACE_MISMATCH");
}

#[tokio::test]
async fn list_users_pages_through_everyone_and_filters() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    for i in 0..4 {
        app.create_user(&acme.admin_token, &format!("agent{i}@acme.example"), "agent").await.expect("agent");
    }
    app.create_user(&acme.admin_token, "sam@acme.example", "supervisor").await.expect("supervisor");

    let mut emails = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = app.users().list_users(bearer(&acme.admin_token, list(2, &token))).await.expect("page").into_inner();
        pages += 1;
        emails.extend(page.users.into_iter().map(|u| u.email));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let mut request = list(0, "");
    request.role = "agent".into();
    let agents = app.users().list_users(bearer(&acme.admin_token, request)).await.expect("agents").into_inner();

    assert_eq!(pages, 3);
    assert_eq!(emails.len(), 6);
    assert!(emails.windows(2).all(|w| w[0] < w[1]), "ordered by email: {emails:?}");
    assert_eq!(agents.users.len(), 4);
}

#[tokio::test]
async fn bad_listing_arguments_are_invalid_argument() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;

    let negative = app.users().list_users(bearer(&acme.admin_token, list(-1, ""))).await.expect_err("negative");
    let token = app.users().list_users(bearer(&acme.admin_token, list(0, "not-a-token"))).await.expect_err("token");
    let mut bad_status = list(0, "");
    bad_status.status = 42;
    let status = app.users().list_users(bearer(&acme.admin_token, bad_status)).await.expect_err("status");

    assert_invalid(&negative, "INVALID_FIELD", &["page_size"]);
    assert_invalid(&token, "INVALID_FIELD", &["page_token"]);
    assert_invalid(&status, "INVALID_FIELD", &["status"]);
    let mut unknown = list(0, "");
    unknown.workspace_id = UNKNOWN_ID.into();
    let status = app.users().list_users(service(unknown)).await.expect_err("unknown workspace");
    assert_status(&status, Code::NotFound, "WORKSPACE_NOT_FOUND");
}

fn update(user: pb::User, paths: &[&str]) -> pb::UpdateUserRequest {
    pb::UpdateUserRequest {
        workspace_id: String::new(),
        user: Some(user),
        update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
    }
}

#[tokio::test]
async fn update_user_changes_name_and_role_through_the_mask_with_etags() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let agent = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");

    let changed = pb::User {
        full_name: "Maria Lead".into(),
        role: "supervisor".into(),
        email: "ignored@x.example".into(),
        ..agent.clone()
    };
    let updated = app
        .users()
        .update_user(bearer(&acme.admin_token, update(changed, &["full_name", "role"])))
        .await
        .expect("updated")
        .into_inner()
        .user
        .expect("user");
    let stale = app
        .users()
        .update_user(bearer(
            &acme.admin_token,
            update(pb::User { full_name: "Old".into(), ..agent.clone() }, &["full_name"]),
        ))
        .await
        .expect_err("stale etag");

    assert_eq!((updated.full_name.as_str(), updated.role.as_str()), ("Maria Lead", "supervisor"));
    assert_eq!(updated.email, "maria@acme.example", "paths outside the mask are ignored");
    assert_eq!(updated.etag, "2");
    assert_status(&stale, Code::Aborted, "ETAG_MISMATCH");
    assert_eq!(app.audit_actions(&acme.id).await.last().map(String::as_str), Some("user.updated"));
}

#[tokio::test]
async fn bad_updates_name_their_field_and_write_nothing() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let agent = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    let before = app.footprint(&acme.id).await;

    let unknown_path = app
        .users()
        .update_user(bearer(&acme.admin_token, update(agent.clone(), &["create_time"])))
        .await
        .expect_err("create_time is not updatable");
    let unknown_role = app
        .users()
        .update_user(bearer(&acme.admin_token, update(pb::User { role: "wizard".into(), ..agent.clone() }, &["role"])))
        .await
        .expect_err("unknown role");
    let missing = app
        .users()
        .update_user(bearer(
            &acme.admin_token,
            update(pb::User { id: UNKNOWN_ID.into(), ..agent.clone() }, &["full_name"]),
        ))
        .await
        .expect_err("unknown user");

    assert_invalid(&unknown_path, "INVALID_FIELD", &["update_mask"]);
    assert_invalid(&unknown_role, "UNKNOWN_ROLE", &["user.role"]);
    assert_status(&missing, Code::NotFound, "USER_NOT_FOUND");
    assert_eq!(app.footprint(&acme.id).await, before);
}

#[tokio::test]
async fn deactivation_revokes_sessions_refuses_login_and_frees_the_seat() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let agent = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    let maria = app.login("acme", "maria@acme.example", PASSWORD).await.expect("login");
    let seats = |token: String| {
        let app = &app;
        async move {
            let request = bearer(&token, pb::GetWorkspaceRequest { workspace_id: String::new() });
            app.workspaces()
                .get_workspace(request)
                .await
                .expect("workspace")
                .into_inner()
                .workspace
                .expect("ws")
                .seats_used
        }
    };
    assert_eq!(seats(acme.admin_token.clone()).await, 2);

    let request = pb::DeactivateUserRequest { workspace_id: String::new(), user_id: agent.id.clone() };
    let deactivated = app.users().deactivate_user(bearer(&acme.admin_token, request)).await.expect("deactivate");

    assert_eq!(deactivated.into_inner().user.expect("user").status(), pb::UserStatus::Deactivated);
    let old_token = app.auth().who_am_i(bearer(&maria, pb::WhoAmIRequest {})).await.expect_err("revoked");
    assert_status(&old_token, Code::Unauthenticated, "SESSION_INVALID");
    let login = app.login("acme", "maria@acme.example", PASSWORD).await.expect_err("refused");
    assert_status(&login, Code::PermissionDenied, "USER_DEACTIVATED");
    let wrong = app.login("acme", "maria@acme.example", "wrong password!").await.expect_err("refused");
    assert_status(&wrong, Code::Unauthenticated, "INVALID_CREDENTIALS");
    assert_eq!(seats(acme.admin_token.clone()).await, 1);

    let request =
        pb::ReactivateUserRequest { workspace_id: String::new(), user_id: agent.id.clone(), request_id: String::new() };
    app.users().reactivate_user(bearer(&acme.admin_token, request)).await.expect("reactivate");
    app.login("acme", "maria@acme.example", PASSWORD).await.expect("logs in again");
    assert_eq!(seats(acme.admin_token.clone()).await, 2);
    let actions = app.audit_actions(&acme.id).await;
    assert!(actions.contains(&"user.deactivated".to_owned()) && actions.contains(&"user.reactivated".to_owned()));
}

/// A retried ReactivateUser (same request id) answers the user as they are: it does not undo a
/// deactivation made after the first call, while a new request id reactivates again.
#[tokio::test]
async fn a_retried_reactivation_does_not_undo_a_later_deactivation() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let agent = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    let deactivate = || async {
        let request = pb::DeactivateUserRequest { workspace_id: String::new(), user_id: agent.id.clone() };
        app.users().deactivate_user(bearer(&acme.admin_token, request)).await
    };
    let reactivate = |request_id: &'static str| async {
        let request = pb::ReactivateUserRequest {
            workspace_id: String::new(),
            user_id: agent.id.clone(),
            request_id: request_id.to_owned(),
        };
        app.users().reactivate_user(bearer(&acme.admin_token, request)).await
    };
    let status =
        |response: tonic::Response<pb::ReactivateUserResponse>| response.into_inner().user.expect("user").status();

    deactivate().await.expect("deactivate");
    assert_eq!(status(reactivate("back-1").await.expect("reactivate")), pb::UserStatus::Active);
    deactivate().await.expect("deactivate again");
    assert_eq!(status(reactivate("back-1").await.expect("retry")), pb::UserStatus::Deactivated);
    let actions = app.audit_actions(&acme.id).await;
    assert_eq!(actions.iter().filter(|action| *action == "user.reactivated").count(), 1);

    assert_eq!(status(reactivate("back-2").await.expect("a new reactivation")), pb::UserStatus::Active);
}

#[tokio::test]
async fn changing_a_password_needs_the_current_one_and_revokes_other_sessions() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let other_session = app.login("acme", "admin@acme.example", PASSWORD).await.expect("second session");
    let change = |current: &str, new: &str| pb::ChangePasswordRequest {
        current_password: current.into(),
        new_password: new.into(),
    };

    let wrong = app
        .users()
        .change_password(bearer(&acme.admin_token, change("wrong password", "a brand new secret")))
        .await
        .expect_err("wrong");
    let weak =
        app.users().change_password(bearer(&acme.admin_token, change(PASSWORD, "short"))).await.expect_err("weak");
    let by_service =
        app.users().change_password(service(change(PASSWORD, "a brand new secret"))).await.expect_err("service");
    app.users()
        .change_password(bearer(&acme.admin_token, change(PASSWORD, "a brand new secret")))
        .await
        .expect("changed");

    assert_invalid(&wrong, "CURRENT_PASSWORD_INCORRECT", &["current_password"]);
    assert_invalid(&weak, "INVALID_FIELD", &["new_password"]);
    assert_status(&by_service, Code::PermissionDenied, "PERSON_REQUIRED");
    app.auth().who_am_i(bearer(&acme.admin_token, pb::WhoAmIRequest {})).await.expect("this session stays");
    let revoked = app.auth().who_am_i(bearer(&other_session, pb::WhoAmIRequest {})).await.expect_err("revoked");
    assert_status(&revoked, Code::Unauthenticated, "SESSION_INVALID");
    app.login("acme", "admin@acme.example", PASSWORD).await.expect_err("the old password no longer works");
    app.login("acme", "admin@acme.example", "a brand new secret").await.expect("the new one does");
    assert!(app.audit_actions(&acme.id).await.contains(&"user.password_changed".to_owned()));
}

#[tokio::test]
async fn people_set_their_own_availability_and_admins_anyones() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let agent = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    let maria = app.login("acme", "maria@acme.example", PASSWORD).await.expect("login");
    let set = |user_id: &str, availability: pb::Availability| pb::SetAvailabilityRequest {
        workspace_id: String::new(),
        user_id: user_id.into(),
        availability: availability as i32,
    };

    let away = app.users().set_availability(bearer(&maria, set("", pb::Availability::Away))).await.expect("self");
    let unspecified = app
        .users()
        .set_availability(bearer(&maria, set("", pb::Availability::Unspecified)))
        .await
        .expect_err("unspecified");
    let others = app
        .users()
        .set_availability(bearer(&maria, set(&acme.admin.id, pb::Availability::Away)))
        .await
        .expect_err("not hers");
    let by_admin = app
        .users()
        .set_availability(bearer(&acme.admin_token, set(&agent.id, pb::Availability::Online)))
        .await
        .expect("admin");

    assert_eq!(away.into_inner().user.expect("user").availability(), pb::Availability::Away);
    assert_invalid(&unspecified, "INVALID_FIELD", &["availability"]);
    assert_status(&others, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_eq!(by_admin.into_inner().user.expect("user").availability(), pb::Availability::Online);
}

#[tokio::test]
async fn people_cannot_touch_another_workspaces_users_by_id() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let globex = app.workspace("globex").await;
    let victim = app.create_user(&globex.admin_token, "vic@globex.example", "agent").await.expect("globex user");
    let before = app.footprint(&globex.id).await;
    let token = &acme.admin_token;
    let id = || victim.id.clone();

    let updated = app
        .users()
        .update_user(bearer(token, update(pb::User { full_name: "Pwned".into(), ..victim.clone() }, &["full_name"])))
        .await
        .expect_err("update");
    let deactivated = app
        .users()
        .deactivate_user(bearer(token, pb::DeactivateUserRequest { workspace_id: String::new(), user_id: id() }))
        .await
        .expect_err("deactivate");
    let reactivated = app
        .users()
        .reactivate_user(bearer(
            token,
            pb::ReactivateUserRequest { workspace_id: String::new(), user_id: id(), request_id: String::new() },
        ))
        .await
        .expect_err("reactivate");
    let away = app
        .users()
        .set_availability(bearer(
            token,
            pb::SetAvailabilityRequest {
                workspace_id: String::new(),
                user_id: id(),
                availability: pb::Availability::Away as i32,
            },
        ))
        .await
        .expect_err("availability");

    for status in [&updated, &deactivated, &reactivated, &away] {
        assert_status(status, Code::NotFound, "USER_NOT_FOUND");
        assert!(!status.message().contains(&victim.id));
    }
    assert_eq!(app.footprint(&globex.id).await, before);
    assert_eq!(get(&app, &globex.admin_token, &victim.id).await.expect("unchanged"), victim);
}

#[tokio::test]
async fn deactivation_and_reactivation_follow_the_role_and_the_escalation_rule() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let agent = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    app.create_user(&acme.admin_token, "sam@acme.example", "supervisor").await.expect("supervisor");
    let sam = app.login("acme", "sam@acme.example", PASSWORD).await.expect("login");
    let maria = app.login("acme", "maria@acme.example", PASSWORD).await.expect("login");
    let deactivate = |user_id: &str| pb::DeactivateUserRequest { workspace_id: String::new(), user_id: user_id.into() };
    let reactivate = |user_id: &str| pb::ReactivateUserRequest {
        workspace_id: String::new(),
        user_id: user_id.into(),
        request_id: String::new(),
    };

    let admin_by_supervisor =
        app.users().deactivate_user(bearer(&sam, deactivate(&acme.admin.id))).await.expect_err("escalation");
    let by_agent = app.users().deactivate_user(bearer(&maria, deactivate(&agent.id))).await.expect_err("agent");
    let unknown =
        app.users().deactivate_user(bearer(&acme.admin_token, deactivate(UNKNOWN_ID))).await.expect_err("unknown");
    let missing = app.users().reactivate_user(bearer(&acme.admin_token, reactivate(""))).await.expect_err("missing");
    let malformed =
        app.users().reactivate_user(bearer(&acme.admin_token, reactivate("x\0y"))).await.expect_err("bad id");

    assert_status(&admin_by_supervisor, Code::PermissionDenied, "ESCALATION");
    assert_status(&by_agent, Code::PermissionDenied, "PERMISSION_DENIED");
    assert_status(&unknown, Code::NotFound, "USER_NOT_FOUND");
    assert_invalid(&missing, "INVALID_FIELD", &["user_id"]);
    assert_invalid(&malformed, "INVALID_FIELD", &["user_id"]);
    assert_eq!(get(&app, &acme.admin_token, &acme.admin.id).await.expect("admin").status(), pb::UserStatus::Active);
    // A supervisor manages agents. Deactivating twice is not an error and records one event.
    for _ in 0..2 {
        app.users().deactivate_user(bearer(&sam, deactivate(&agent.id))).await.expect("deactivate");
    }
    let deactivations = app.audit_actions(&acme.id).await.iter().filter(|a| *a == "user.deactivated").count();
    assert_eq!(deactivations, 1);
    app.users().reactivate_user(bearer(&sam, reactivate(&agent.id))).await.expect("reactivate");
}

#[tokio::test]
async fn concurrent_retries_with_one_request_id_create_one_user() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let mut request = create("maria@acme.example", PASSWORD, "agent");
    request.request_id = "invite-maria-concurrently".into();

    let calls = (0..8).map(|_| {
        let mut users = app.users();
        let request = bearer(&acme.admin_token, request.clone());
        tokio::spawn(async move { users.create_user(request).await.map(|r| r.into_inner().user.expect("user").id) })
    });
    let mut ids = Vec::new();
    for call in calls.collect::<Vec<_>>() {
        ids.push(call.await.expect("task").expect("every retry gets the first answer"));
    }

    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.footprint(&acme.id).await.0, 2, "the admin and maria");
}

#[tokio::test]
async fn bytes_that_cannot_be_an_id_or_filter_are_invalid_argument_not_internal() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;

    let user = get(&app, &acme.admin_token, "nul\0byte").await.expect_err("bad id");
    let mut request = list(0, "");
    request.workspace_id = "nul\0byte".into();
    let workspace = app.users().list_users(service(request)).await.expect_err("bad workspace id");
    let token: String = "users:a\0@b.example".bytes().map(|b| format!("{b:02x}")).collect();
    let page = app.users().list_users(bearer(&acme.admin_token, list(0, &token))).await.expect_err("bad cursor");
    let audit = app
        .audit()
        .list_audit_events(bearer(
            &acme.admin_token,
            pb::ListAuditEventsRequest { actor: "user:\0".into(), ..Default::default() },
        ))
        .await
        .expect_err("bad filter");

    assert_invalid(&user, "INVALID_FIELD", &["user_id"]);
    assert_invalid(&workspace, "INVALID_FIELD", &["workspace_id"]);
    assert_invalid(&page, "INVALID_FIELD", &["page_token"]);
    assert_invalid(&audit, "INVALID_FIELD", &["actor"]);
}

#[tokio::test]
async fn the_last_active_admin_can_be_neither_deactivated_nor_demoted() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let before = app.footprint(&acme.id).await;

    let deactivate = pb::DeactivateUserRequest { workspace_id: String::new(), user_id: acme.admin.id.clone() };
    let deactivated = app.users().deactivate_user(bearer(&acme.admin_token, deactivate)).await.expect_err("last");
    let demote = update(pb::User { role: "agent".into(), ..acme.admin.clone() }, &["role"]);
    let demoted = app.users().update_user(bearer(&acme.admin_token, demote)).await.expect_err("last");

    for status in [&deactivated, &demoted] {
        assert_status(status, Code::FailedPrecondition, "LAST_ADMIN");
        let details = tonic_types::StatusExt::get_error_details(status);
        let violations = details.precondition_failure().map(|p| p.violations.len());
        assert_eq!(violations, Some(1), "{status:?}");
    }
    assert_eq!(app.footprint(&acme.id).await, before);
    let renamed = update(pb::User { full_name: "Ada Lovelace".into(), ..acme.admin.clone() }, &["full_name"]);
    app.users().update_user(bearer(&acme.admin_token, renamed)).await.expect("renaming the last admin is fine");
}

#[tokio::test]
async fn two_admins_removed_at_the_same_moment_leave_exactly_one() {
    let app = spawn_app().await;
    for round in 0..4 {
        let ws = app.workspace(&format!("acme{round}")).await;
        let second =
            app.create_user(&ws.admin_token, &format!("bob@acme{round}.example"), "admin").await.expect("admin");
        let calls = [ws.admin.id.clone(), second.id.clone()].map(|user_id| {
            let mut users = app.users();
            let request = service(pb::DeactivateUserRequest { workspace_id: ws.id.clone(), user_id });
            tokio::spawn(async move { users.deactivate_user(request).await })
        });

        let mut outcomes = Vec::new();
        for call in calls {
            outcomes.push(call.await.expect("task"));
        }

        let refused: Vec<&tonic::Status> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
        assert_eq!(refused.len(), 1, "round {round}: exactly one removal goes through: {outcomes:?}");
        assert_status(refused[0], Code::FailedPrecondition, "LAST_ADMIN");
        let mut request = list(0, "");
        request.workspace_id = ws.id.clone();
        request.role = "admin".into();
        request.status = pb::UserStatus::Active as i32;
        let admins = app.users().list_users(service(request)).await.expect("admins").into_inner().users;
        assert_eq!(admins.len(), 1, "round {round}");
    }
}

/// A CreateUser with a request id that cannot get its locks (another transaction holds them past
/// the lock timeout) is told to retry, not that the email is taken; retried, it creates the user.
#[tokio::test]
async fn a_create_user_that_cannot_get_its_locks_is_told_to_retry_not_that_the_email_is_taken() {
    let app = spawn_app_with(|config| config.db_timeout_ms = 200).await;
    let acme = app.workspace("acme").await;
    let request = || pb::CreateUserRequest {
        email: "busy@acme.example".into(),
        full_name: "Busy".into(),
        password: PASSWORD.into(),
        role: "agent".into(),
        request_id: "create-busy-1".into(),
        ..Default::default()
    };
    let lock = OutboxLock::take(&app.db.url).await;
    let busy = app.users().create_user(bearer(&acme.admin_token, request())).await.expect_err("locked out");
    lock.release().await;
    assert_status(&busy, Code::Aborted, "CONCURRENT_UPDATE");
    let created = app.users().create_user(bearer(&acme.admin_token, request())).await.expect("retried");
    let again = app.users().create_user(bearer(&acme.admin_token, request())).await.expect("the same answer");
    assert_eq!(created.into_inner().user, again.into_inner().user);
}
