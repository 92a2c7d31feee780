use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::Code;

fn list(filter: impl FnOnce(&mut pb::ListAuditEventsRequest)) -> pb::ListAuditEventsRequest {
    let mut request = pb::ListAuditEventsRequest::default();
    filter(&mut request);
    request
}

#[tokio::test]
async fn every_change_is_recorded_with_actor_target_time_and_request_id() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let mut request = bearer(
        &acme.admin_token,
        pb::CreateUserRequest {
            email: "maria@acme.example".into(),
            full_name: "Maria".into(),
            password: PASSWORD.into(),
            role: "agent".into(),
            ..Default::default()
        },
    );
    request.metadata_mut().insert("x-request-id", "req-invite-maria".parse().expect("header"));
    let response = app.users().create_user(request).await.expect("created");
    assert_eq!(response.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), Some("req-invite-maria"));
    let maria = response.into_inner().user.expect("user");

    let events = app
        .audit()
        .list_audit_events(bearer(&acme.admin_token, list(|r| r.action = "user.created".into())))
        .await
        .expect("events")
        .into_inner()
        .events;

    assert_eq!(events.len(), 2, "the first admin and maria");
    let newest = &events[0];
    assert_eq!(newest.actor, format!("user:{}", acme.admin.id));
    assert_eq!(newest.target, format!("user:{}", maria.id));
    assert_eq!(newest.request_id, "req-invite-maria");
    assert_eq!(newest.details.get("role").map(String::as_str), Some("agent"));
    assert!(newest.time.is_some());
    assert_eq!(events[1].actor, format!("service:{SERVICE_NAME}"));
}

#[tokio::test]
async fn the_trail_pages_newest_first_and_filters_by_actor_and_target() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    for i in 0..3 {
        app.create_user(&acme.admin_token, &format!("a{i}@acme.example"), "agent").await.expect("user");
    }
    let mut ids = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .audit()
            .list_audit_events(bearer(
                &acme.admin_token,
                list(|r| {
                    r.page_size = 2;
                    r.page_token = token.clone();
                }),
            ))
            .await
            .expect("page")
            .into_inner();
        ids.extend(page.events.into_iter().map(|e| e.id.parse::<i64>().expect("numeric id")));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let by_actor = app
        .audit()
        .list_audit_events(bearer(&acme.admin_token, list(|r| r.actor = format!("user:{}", acme.admin.id))))
        .await
        .expect("by actor")
        .into_inner()
        .events;
    let by_target = app
        .audit()
        .list_audit_events(bearer(&acme.admin_token, list(|r| r.target = format!("user:{}", acme.admin.id))))
        .await
        .expect("by target")
        .into_inner()
        .events;

    // workspace.created, user.created (admin), login.succeeded, billing.extra_seats_changed (the
    // test's seats), 3 × user.created
    assert_eq!(ids.len(), 7);
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    assert_eq!(
        by_actor.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(),
        ["user.created"; 3].to_vec().into_iter().chain(["login.succeeded"]).collect::<Vec<_>>()
    );
    assert_eq!(by_target.iter().map(|e| e.action.as_str()).collect::<Vec<_>>(), ["login.succeeded", "user.created"]);
}

#[tokio::test]
async fn only_admins_and_service_keys_read_the_trail() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    app.create_user(&acme.admin_token, "sam@acme.example", "supervisor").await.expect("supervisor");
    let sam = app.login("acme", "sam@acme.example", PASSWORD).await.expect("login");

    let denied = app.audit().list_audit_events(bearer(&sam, list(|_| {}))).await.expect_err("supervisor");
    let by_service = app.audit().list_audit_events(service(list(|r| r.workspace_id = acme.id.clone()))).await;
    let negative = app
        .audit()
        .list_audit_events(bearer(&acme.admin_token, list(|r| r.page_size = -5)))
        .await
        .expect_err("negative");

    assert_status(&denied, Code::PermissionDenied, "PERMISSION_DENIED");
    assert!(by_service.is_ok());
    assert_invalid(&negative, "INVALID_FIELD", &["page_size"]);
}
