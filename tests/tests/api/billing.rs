use roster_proto::v1 as pb;
use roster_tests::*;
use std::collections::HashMap;
use tonic::{Code, Status};
use tonic_types::StatusExt;

async fn subscription(app: &TestApp, token: &str) -> pb::Subscription {
    let response = app.billing().get_subscription(bearer(token, pb::GetSubscriptionRequest::default())).await;
    response.expect("subscription").into_inner().subscription.expect("subscription")
}

async fn change_plan(app: &TestApp, token: &str, plan: pb::Plan) -> Result<pb::Subscription, Status> {
    let request = pb::ChangePlanRequest { plan: plan as i32, ..Default::default() };
    Ok(app.billing().change_plan(bearer(token, request)).await?.into_inner().subscription.expect("subscription"))
}

async fn set_extra_seats(app: &TestApp, ws: &str, extra_seats: i32) -> Result<pb::Subscription, Status> {
    let request = pb::SetExtraSeatsRequest { workspace_id: ws.into(), extra_seats };
    Ok(app.billing().set_extra_seats(service(request)).await?.into_inner().subscription.expect("subscription"))
}

async fn reactivate(app: &TestApp, token: &str, user: &str) -> Result<pb::User, Status> {
    let request = pb::ReactivateUserRequest { user_id: user.into(), ..Default::default() };
    Ok(app.users().reactivate_user(bearer(token, request)).await?.into_inner().user.expect("user"))
}

/// RESOURCE_EXHAUSTED, SEAT_LIMIT_REACHED, with the numbers in the ErrorInfo and a QuotaFailure.
fn assert_seat_limit(status: &Status, ws: &str, plan: &str, limit: u32, used: u32) {
    assert_status(status, Code::ResourceExhausted, "SEAT_LIMIT_REACHED");
    let details = status.get_error_details();
    let metadata = &details.error_info().expect("error info").metadata;
    assert_eq!(
        (metadata["plan"].as_str(), metadata["seat_limit"].as_str(), metadata["seats_used"].as_str()),
        (plan, limit.to_string().as_str(), used.to_string().as_str())
    );
    let quota = details.quota_failure().expect("quota failure");
    assert_eq!(quota.violations.len(), 1);
    assert_eq!(quota.violations[0].subject, format!("workspace:{ws}"));
    let name = match plan {
        "FREE_TRIAL" => "Free Trial",
        "GROWTH" => "Growth",
        _ => "Scale",
    };
    let seats = if limit == 1 { "seat" } else { "seats" };
    assert_eq!(quota.violations[0].description, format!("plan {name} allows {limit} {seats}, {used} in use"));
}

#[tokio::test]
async fn the_plans_are_the_help_articles_and_a_new_workspace_is_on_the_free_trial() {
    let app = spawn_app().await;
    let acme = app.workspace_on_trial("acme").await;
    let plans = app.billing().list_plans(bearer(&acme.admin_token, pb::ListPlansRequest {})).await.expect("plans");
    let plans: Vec<_> =
        plans.into_inner().plans.into_iter().map(|p| (p.plan, p.display_name, p.seats)).collect::<Vec<_>>();
    assert_eq!(
        plans,
        [
            (pb::Plan::FreeTrial as i32, "Free Trial".to_owned(), 1),
            (pb::Plan::Growth as i32, "Growth".to_owned(), 5),
            (pb::Plan::Scale as i32, "Scale".to_owned(), 10),
        ]
    );
    let trial = subscription(&app, &acme.admin_token).await;
    assert_eq!(
        trial,
        pb::Subscription {
            workspace_id: acme.id.clone(),
            plan: pb::Plan::FreeTrial as i32,
            plan_display_name: "Free Trial".into(),
            plan_seats: 1,
            extra_seats: 0,
            seat_limit: 1,
            seats_used: 1,
            seats_free: 0,
        }
    );
}

/// Deactivating frees a seat; reactivating past the limit is refused, and allowed after an upgrade.
/// A refused call writes nothing but its audit event, and queues no email.
#[tokio::test]
async fn seats_are_taken_by_creating_and_reactivating_and_freed_by_deactivating() {
    let app = spawn_app().await;
    let acme = app.workspace_on_trial("acme").await;
    let before = app.footprint(&acme.id).await;
    let refused = app.create_user(&acme.admin_token, "sam@acme.example", "supervisor").await.expect_err("full");
    assert_seat_limit(&refused, &acme.id, "FREE_TRIAL", 1, 1);
    assert_eq!(
        refused.message(),
        "plan Free Trial allows 1 seat, 1 in use: deactivate a user, upgrade the plan or contact support for more seats"
    );
    let after = app.footprint(&acme.id).await;
    assert_eq!((after.0, after.1, after.2), (before.0, before.1, before.2 + 1), "only the refusal's audit event");
    assert_eq!(app.audit_actions(&acme.id).await.last().map(String::as_str), Some("user.create_refused"));

    let growth = change_plan(&app, &acme.admin_token, pb::Plan::Growth).await.expect("upgrade");
    assert_eq!((growth.seat_limit, growth.seats_used, growth.seats_free), (5, 1, 4));
    let mut agents = Vec::new();
    for i in 0..4 {
        agents.push(app.create_user(&acme.admin_token, &format!("a{i}@acme.example"), "agent").await.expect("fits"));
    }
    let full = app.create_user(&acme.admin_token, "a4@acme.example", "agent").await.expect_err("full");
    assert_seat_limit(&full, &acme.id, "GROWTH", 5, 5);
    // A call that fails for another reason says that reason first, and records no refused seat.
    let refusals = |actions: Vec<String>| actions.iter().filter(|a| *a == "user.create_refused").count();
    let before = refusals(app.audit_actions(&acme.id).await);
    let taken = app.create_user(&acme.admin_token, "a0@acme.example", "agent").await.expect_err("taken");
    assert_status(&taken, Code::AlreadyExists, "EMAIL_TAKEN");
    let unknown = app.create_user(&acme.admin_token, "new@acme.example", UNKNOWN_ID).await.expect_err("role");
    assert_status(&unknown, Code::InvalidArgument, "UNKNOWN_ROLE");
    assert_eq!(refusals(app.audit_actions(&acme.id).await), before);

    // Deactivating frees a seat, which the next invitation takes.
    let deactivate = pb::DeactivateUserRequest { user_id: agents[0].id.clone(), ..Default::default() };
    app.users().deactivate_user(bearer(&acme.admin_token, deactivate)).await.expect("deactivate");
    assert_eq!(subscription(&app, &acme.admin_token).await.seats_free, 1);
    app.create_user(&acme.admin_token, "a4@acme.example", "agent").await.expect("the freed seat");

    // Reactivating needs a seat too: refused, and the user stays deactivated.
    let refused = reactivate(&app, &acme.admin_token, &agents[0].id).await.expect_err("no seat");
    assert_seat_limit(&refused, &acme.id, "GROWTH", 5, 5);
    let request = pb::GetUserRequest { user_id: agents[0].id.clone(), ..Default::default() };
    let still = app.users().get_user(bearer(&acme.admin_token, request)).await.expect("user").into_inner();
    assert_eq!(still.user.expect("user").status, pb::UserStatus::Deactivated as i32);
    assert_eq!(app.audit_actions(&acme.id).await.last().map(String::as_str), Some("user.reactivate_refused"));

    // An upgrade makes room.
    change_plan(&app, &acme.admin_token, pb::Plan::Scale).await.expect("upgrade");
    let back = reactivate(&app, &acme.admin_token, &agents[0].id).await.expect("room now");
    assert_eq!(back.status, pb::UserStatus::Active as i32);
    let scale = subscription(&app, &acme.admin_token).await;
    assert_eq!(
        (scale.plan_display_name.as_str(), scale.seat_limit, scale.seats_used, scale.seats_free),
        ("Scale", 10, 6, 4)
    );
}

#[tokio::test]
async fn a_downgrade_below_the_seats_in_use_is_refused_and_says_how_many_to_deactivate() {
    let app = spawn_app().await;
    let acme = app.workspace_on_trial("acme").await;
    change_plan(&app, &acme.admin_token, pb::Plan::Scale).await.expect("upgrade");
    for i in 0..6 {
        app.create_user(&acme.admin_token, &format!("a{i}@acme.example"), "agent").await.expect("user");
    }
    // 7 in use: Growth's 5 are 2 short.
    let refused = change_plan(&app, &acme.admin_token, pb::Plan::Growth).await.expect_err("downgrade");
    assert_status(&refused, Code::FailedPrecondition, "SEATS_IN_USE");
    assert_eq!(refused.message(), "plan Growth allows 5 seats, 7 in use: deactivate 2 users first");
    let details = refused.get_error_details();
    let metadata = &details.error_info().expect("info").metadata;
    assert_eq!(
        (metadata["must_deactivate"].as_str(), metadata["seat_limit"].as_str(), metadata["seats_used"].as_str()),
        ("2", "5", "7")
    );
    let violation = &details.precondition_failure().expect("precondition").violations[0];
    assert_eq!(violation.r#type, "SEATS_IN_USE");
    assert_eq!(subscription(&app, &acme.admin_token).await.plan, pb::Plan::Scale as i32, "nothing changed");

    // Two extra seats from support make Growth fit; lowering them again is refused like a downgrade.
    let extra = set_extra_seats(&app, &acme.id, 2).await.expect("extra seats");
    assert_eq!((extra.extra_seats, extra.seat_limit), (2, 12));
    let growth = change_plan(&app, &acme.admin_token, pb::Plan::Growth).await.expect("fits now");
    assert_eq!((growth.seat_limit, growth.seats_used, growth.seats_free), (7, 7, 0));
    let lower = set_extra_seats(&app, &acme.id, 1).await.expect_err("below use");
    assert_status(&lower, Code::FailedPrecondition, "SEATS_IN_USE");
    assert_eq!(lower.message(), "plan Growth allows 6 seats, 7 in use: deactivate 1 user first");
    assert_eq!(subscription(&app, &acme.admin_token).await.extra_seats, 2, "nothing changed");

    let events = app.store.list_audit_events(&acme.id, &Default::default(), None, 100).await.expect("audit");
    let changes: Vec<(String, String, String)> = events
        .items
        .iter()
        .rev()
        .filter(|e| e.action.starts_with("billing."))
        .map(|e| (e.action.clone(), e.details["from"].clone(), e.details["to"].clone()))
        .collect();
    let expected = [
        ("billing.plan_changed", "FREE_TRIAL", "SCALE"),
        ("billing.extra_seats_changed", "0", "2"),
        ("billing.plan_changed", "SCALE", "GROWTH"),
    ];
    let expected: Vec<_> = expected.iter().map(|(a, f, t)| ((*a).into(), (*f).into(), (*t).into())).collect();
    assert_eq!(changes, expected);
}

#[tokio::test]
async fn admins_and_services_change_the_plan_and_only_services_grant_extra_seats() {
    let app = spawn_app().await;
    let acme = app.workspace_on_trial("acme").await;
    change_plan(&app, &acme.admin_token, pb::Plan::Growth).await.expect("admin");
    app.create_user(&acme.admin_token, "sam@acme.example", "supervisor").await.expect("supervisor");
    app.create_user(&acme.admin_token, "ana@acme.example", "agent").await.expect("agent");
    for email in ["sam@acme.example", "ana@acme.example"] {
        let token = app.login("acme", email, PASSWORD).await.expect("login");
        let denied = change_plan(&app, &token, pb::Plan::Scale).await.expect_err("no billing.manage");
        assert_status(&denied, Code::PermissionDenied, "PERMISSION_DENIED");
        // Everyone may see the seats.
        assert_eq!(subscription(&app, &token).await.seats_used, 3);
    }
    let request = pb::SetExtraSeatsRequest { extra_seats: 3, ..Default::default() };
    let denied = app.billing().set_extra_seats(bearer(&acme.admin_token, request)).await.expect_err("admin");
    assert_status(&denied, Code::PermissionDenied, "SERVICE_KEY_REQUIRED");
    let request = pb::ChangePlanRequest { workspace_id: acme.id.clone(), plan: pb::Plan::Scale as i32 };
    let by_service = app.billing().change_plan(service(request)).await.expect("service");
    assert_eq!(by_service.into_inner().subscription.expect("s").seat_limit, 10);
    // Asking for the plan it is on changes nothing and records nothing.
    let before = app.footprint(&acme.id).await;
    change_plan(&app, &acme.admin_token, pb::Plan::Scale).await.expect("same plan");
    set_extra_seats(&app, &acme.id, 0).await.expect("same extra seats");
    assert_eq!(app.footprint(&acme.id).await, before);

    // Bad input names its field and changes nothing; another workspace is out of reach.
    let before = app.footprint(&acme.id).await;
    let bad = change_plan(&app, &acme.admin_token, pb::Plan::Unspecified).await.expect_err("no plan");
    assert_invalid(&bad, "INVALID_FIELD", &["plan"]);
    let request = pb::ChangePlanRequest { plan: 42, ..Default::default() };
    let bad = app.billing().change_plan(bearer(&acme.admin_token, request)).await.expect_err("unknown plan");
    assert_invalid(&bad, "INVALID_FIELD", &["plan"]);
    for extra in [-1, 100_001] {
        let bad = set_extra_seats(&app, &acme.id, extra).await.expect_err("out of range");
        assert_invalid(&bad, "INVALID_FIELD", &["extra_seats"]);
    }
    let unknown = set_extra_seats(&app, UNKNOWN_ID, 1).await.expect_err("unknown");
    assert_status(&unknown, Code::NotFound, "WORKSPACE_NOT_FOUND");
    assert_eq!(app.footprint(&acme.id).await, before);
    let globex = app.workspace_on_trial("globex").await;
    let request = pb::GetSubscriptionRequest { workspace_id: acme.id.clone() };
    let other = app.billing().get_subscription(bearer(&globex.admin_token, request)).await.expect_err("other");
    assert_eq!(other.code(), Code::PermissionDenied);
    assert!(!other.message().contains(&acme.id));
}

/// 20 simultaneous invitations for a workspace's last free seat, over two rosterd processes on one
/// database: exactly one user is created and gets a welcome email; 19 are refused with the numbers.
/// SQLite runs write transactions one at a time whatever the code locks, so it is the run on
/// PostgreSQL (`ROSTER_TEST_DATABASE_URL`, set in CI) that proves the workspace lock: without it,
/// PostgreSQL created 6 or 7 users here.
#[tokio::test]
async fn twenty_concurrent_invitations_for_the_last_seat_create_exactly_one_user() {
    let app = spawn_app_with(|config| config.db_timeout_ms = 60_000).await;
    let acme = app.workspace_on_trial("acme").await;
    change_plan(&app, &acme.admin_token, pb::Plan::Growth).await.expect("upgrade");
    for i in 0..3 {
        app.create_user(&acme.admin_token, &format!("a{i}@acme.example"), "agent").await.expect("user");
    }
    assert_eq!(subscription(&app, &acme.admin_token).await.seats_free, 1);
    let peer = app.spawn_peer_process().await;
    let clients = [app.users(), peer.users()];
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut client = clients[i % 2].clone();
            let request = pb::CreateUserRequest {
                email: format!("invite{i}@acme.example"),
                full_name: format!("Invite {i}"),
                password: PASSWORD.into(),
                role: "agent".into(),
                ..Default::default()
            };
            let request = bearer(&acme.admin_token, request);
            tokio::spawn(async move { client.create_user(request).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut created = Vec::new();
    let mut refused = 0;
    for call in calls {
        match call.await.expect("task") {
            Ok(response) => created.push(response.user.expect("user").email),
            Err(status) => {
                assert_seat_limit(&status, &acme.id, "GROWTH", 5, 5);
                refused += 1;
            }
        }
    }
    assert_eq!((created.len(), refused), (1, 19));
    let users = app.store.list_users(&acme.id, &Default::default(), None, 100).await.expect("users").items;
    assert_eq!(users.len(), 5);
    let outbox = app.store.outbox_entries(&acme.id).await.expect("outbox");
    let mut welcomes: HashMap<&str, usize> = HashMap::new();
    for mail in outbox.iter().filter(|m| m.recipient.starts_with("invite")) {
        *welcomes.entry(mail.recipient.as_str()).or_default() += 1;
    }
    assert_eq!(welcomes, HashMap::from([(created[0].as_str(), 1)]), "one welcome email, to the one created");
    let actions = app.audit_actions(&acme.id).await;
    assert_eq!(actions.iter().filter(|a| *a == "user.create_refused").count(), 19);
}

/// A retried invitation (same request id) racing its first attempt for the last seat gets the
/// first attempt's answer, not a refusal, on either process.
#[tokio::test]
async fn retries_of_one_invitation_for_the_last_seat_all_get_the_user_it_created() {
    let app = spawn_app_with(|config| config.db_timeout_ms = 60_000).await;
    let acme = app.workspace_on_trial("acme").await;
    change_plan(&app, &acme.admin_token, pb::Plan::Growth).await.expect("upgrade");
    for i in 0..3 {
        app.create_user(&acme.admin_token, &format!("a{i}@acme.example"), "agent").await.expect("user");
    }
    let peer = app.spawn_peer_process().await;
    let clients = [app.users(), peer.users()];
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let mut client = clients[i % 2].clone();
            let request = pb::CreateUserRequest {
                email: "last@acme.example".into(),
                full_name: "Last Seat".into(),
                password: PASSWORD.into(),
                role: "agent".into(),
                request_id: "invite-last-seat".into(),
                ..Default::default()
            };
            let request = bearer(&acme.admin_token, request);
            tokio::spawn(async move { client.create_user(request).await.map(|r| r.into_inner()) })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for call in calls {
        ids.insert(call.await.expect("task").expect("the first answer").user.expect("user").id);
    }
    assert_eq!(ids.len(), 1, "one user, the same in every answer");
    assert_eq!(subscription(&app, &acme.admin_token).await.seats_used, 5);
    let welcomes = app.store.outbox_entries(&acme.id).await.expect("outbox");
    assert_eq!(welcomes.iter().filter(|m| m.recipient == "last@acme.example").count(), 1);
    assert!(!app.audit_actions(&acme.id).await.contains(&"user.create_refused".to_owned()));
}
