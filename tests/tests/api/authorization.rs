use crate::roles::{create_role, delete, set_grants};
use pb::Scope::{All, Assigned};
use roster_proto::v1 as pb;
use roster_tests::*;
use std::time::{Duration, Instant};
use tonic::{Code, Status};

fn check(workspace_id: &str, user_id: &str, permission: &str, assignee: Option<&str>) -> pb::CheckPermissionRequest {
    pb::CheckPermissionRequest {
        workspace_id: workspace_id.into(),
        user_id: user_id.into(),
        permission: permission.into(),
        resource: assignee.map(|a| pb::Resource { assignee_user_id: a.into() }),
    }
}

async fn decide(app: &TestApp, request: pb::CheckPermissionRequest) -> Result<pb::Decision, Status> {
    Ok(app.authz().check_permission(service(request)).await?.into_inner().decision.expect("decision"))
}

#[tokio::test]
async fn an_agent_reads_a_contact_assigned_to_them_not_one_assigned_to_someone_else() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    let sam = app.create_user(&acme.admin_token, "sam@acme.example", "agent").await.expect("sam");

    let mine = decide(&app, check(&acme.id, &maria.id, "contacts.read", Some(&maria.id))).await.expect("mine");
    assert!(mine.allowed);
    assert_eq!((mine.reason(), mine.scope(), mine.role_id.as_str()), (pb::DecisionReason::Granted, Assigned, "agent"));
    assert_eq!(mine.explanation, "role Agent grants contacts.read with scope ASSIGNED");

    let theirs = decide(&app, check(&acme.id, &maria.id, "contacts.read", Some(&sam.id))).await.expect("theirs");
    assert!(!theirs.allowed);
    assert_eq!(theirs.reason(), pb::DecisionReason::NotAssigned);
    let nobodys = decide(&app, check(&acme.id, &maria.id, "contacts.read", Some(""))).await.expect("unassigned");
    assert_eq!((nobodys.allowed, nobodys.reason()), (false, pb::DecisionReason::NotAssigned));
    let unnamed = decide(&app, check(&acme.id, &maria.id, "contacts.read", None)).await.expect("no resource");
    assert_eq!((unnamed.allowed, unnamed.reason()), (false, pb::DecisionReason::ResourceRequired));
    let delete = decide(&app, check(&acme.id, &maria.id, "contacts.delete", Some(&maria.id))).await.expect("delete");
    assert_eq!((delete.allowed, delete.reason()), (false, pb::DecisionReason::NotGranted));
    assert_eq!(delete.explanation, "role Agent does not grant contacts.delete");

    // The supervisor sees every contact; nobody needs to name a resource for scope ALL.
    let admin = decide(&app, check(&acme.id, &acme.admin.id, "contacts.delete", None)).await.expect("admin");
    assert_eq!((admin.allowed, admin.scope()), (true, All));
}

#[tokio::test]
async fn a_deactivated_user_is_denied_everything_until_reactivated() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let other = app.create_user(&acme.admin_token, "ada@acme.example", "admin").await.expect("second admin");
    let request = || check(&acme.id, &other.id, "templates.read", None);
    assert!(decide(&app, request()).await.expect("active").allowed);

    let target = pb::DeactivateUserRequest { workspace_id: String::new(), user_id: other.id.clone() };
    app.users().deactivate_user(bearer(&acme.admin_token, target)).await.expect("deactivate");
    let denied = decide(&app, request()).await.expect("deactivated");
    assert_eq!((denied.allowed, denied.reason()), (false, pb::DecisionReason::UserDeactivated));
    let effective = app
        .authz()
        .list_effective_permissions(service(pb::ListEffectivePermissionsRequest {
            workspace_id: acme.id.clone(),
            user_id: other.id.clone(),
        }))
        .await
        .expect("effective")
        .into_inner();
    assert!(!effective.active && !effective.all_permissions && effective.grants.is_empty());

    let again =
        pb::ReactivateUserRequest { workspace_id: String::new(), user_id: other.id.clone(), request_id: String::new() };
    app.users().reactivate_user(bearer(&acme.admin_token, again)).await.expect("reactivate");
    assert!(decide(&app, request()).await.expect("reactivated").allowed);
}

#[tokio::test]
async fn effective_permissions_list_the_role_grants_with_scopes() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    let maria_token = app.login("acme", "maria@acme.example", PASSWORD).await.expect("login");

    // A person asks about themselves without naming anyone.
    let mine = app
        .authz()
        .list_effective_permissions(bearer(&maria_token, pb::ListEffectivePermissionsRequest::default()))
        .await
        .expect("own")
        .into_inner();
    assert_eq!((mine.role_id.as_str(), mine.active, mine.all_permissions), ("agent", true, false));
    let held: Vec<(String, pb::Scope)> = mine.grants.iter().map(|g| (g.permission.clone(), g.scope())).collect();
    assert_eq!(
        held,
        [
            ("conversations.read".into(), Assigned),
            ("conversations.reply".into(), Assigned),
            ("conversations.take".into(), All),
            ("contacts.read".into(), Assigned),
            ("templates.read".into(), All)
        ]
    );
    let admin = app
        .authz()
        .list_effective_permissions(bearer(&acme.admin_token, pb::ListEffectivePermissionsRequest::default()))
        .await
        .expect("admin")
        .into_inner();
    assert!(admin.all_permissions);
    assert_eq!(admin.grants.len(), 20);

    // ... but not about anyone else.
    let other = pb::ListEffectivePermissionsRequest { workspace_id: String::new(), user_id: acme.admin.id.clone() };
    let status = app.authz().list_effective_permissions(bearer(&maria_token, other)).await.expect_err("not self");
    assert_status(&status, Code::PermissionDenied, "SELF_ONLY");
    let own_check = check("", "", "conversations.reply", Some(&maria.id));
    let decision = app.authz().check_permission(bearer(&maria_token, own_check)).await.expect("own check");
    assert!(decision.into_inner().decision.expect("decision").allowed);
}

#[tokio::test]
async fn malformed_checks_get_a_clear_error() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let other = app.workspace("other").await;
    let me = &acme.admin.id;
    let cases: [(pb::CheckPermissionRequest, Code, &str, &[&str]); 6] = [
        (check(&acme.id, "", "contacts.read", None), Code::InvalidArgument, "INVALID_FIELD", &["user_id"]),
        (check(&acme.id, "not-an-id", "contacts.read", None), Code::InvalidArgument, "INVALID_FIELD", &["user_id"]),
        (check(&acme.id, me, "contacts.fly", None), Code::InvalidArgument, "INVALID_FIELD", &["permission"]),
        (
            check(&acme.id, me, "contacts.read", Some("x")),
            Code::InvalidArgument,
            "INVALID_FIELD",
            &["resource.assignee_user_id"],
        ),
        (check(&acme.id, UNKNOWN_ID, "contacts.read", None), Code::NotFound, "USER_NOT_FOUND", &[]),
        (check(UNKNOWN_ID, me, "contacts.read", None), Code::NotFound, "WORKSPACE_NOT_FOUND", &[]),
    ];
    for (request, code, reason, fields) in cases {
        let status = decide(&app, request).await.expect_err("malformed");
        assert_status(&status, code, reason);
        assert_eq!(violated_fields(&status), fields);
    }
    // Another workspace's user is not found in this one, and a person cannot reach another workspace.
    let status = decide(&app, check(&acme.id, &other.admin.id, "contacts.read", None)).await.expect_err("isolated");
    assert_status(&status, Code::NotFound, "USER_NOT_FOUND");
    let status = app
        .authz()
        .check_permission(bearer(&acme.admin_token, check(&other.id, "", "contacts.read", None)))
        .await
        .expect_err("other workspace");
    assert_status(&status, Code::PermissionDenied, "WORKSPACE_MISMATCH");
    let status = app.authz().check_permission(check(&acme.id, me, "contacts.read", None)).await.expect_err("anonymous");
    assert_status(&status, Code::Unauthenticated, "CREDENTIALS_MISSING");
}

#[tokio::test]
async fn a_batch_answers_each_item_in_order_with_per_item_errors() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    let item = |user: &str, permission: &str, assignee: Option<&str>| pb::PermissionCheck {
        user_id: user.into(),
        permission: permission.into(),
        resource: assignee.map(|a| pb::Resource { assignee_user_id: a.into() }),
    };
    let checks = vec![
        item(&maria.id, "conversations.read", Some(&maria.id)),
        item(&maria.id, "conversations.fly", None),
        item(UNKNOWN_ID, "conversations.read", None),
        item(&maria.id, "users.manage", None),
        item("", "users.manage", None),
        item(&acme.admin.id, "billing.manage", None),
    ];
    let request = pb::CheckPermissionsRequest { workspace_id: acme.id.clone(), checks };
    let results = app.authz().check_permissions(service(request)).await.expect("batch").into_inner().results;
    let summary: Vec<String> = results
        .iter()
        .map(|r| match r.result.as_ref().expect("result") {
            pb::check_result::Result::Decision(d) => format!("{}:{:?}", d.allowed, d.reason()),
            pb::check_result::Result::Error(e) => format!("error:{}:{}:{}", e.code, e.reason, e.field),
        })
        .collect();
    assert_eq!(
        summary,
        [
            "true:Granted",
            "error:3:INVALID_FIELD:permission",
            "error:5:USER_NOT_FOUND:user_id",
            "false:NotGranted",
            "error:3:INVALID_FIELD:user_id",
            "true:Granted",
        ]
    );

    let full = (0..1000).map(|i| item(&maria.id, if i % 2 == 0 { "templates.read" } else { "users.read" }, None));
    let request = pb::CheckPermissionsRequest { workspace_id: acme.id.clone(), checks: full.collect() };
    let results = app.authz().check_permissions(service(request)).await.expect("1000").into_inner().results;
    assert_eq!(results.len(), 1000);
    for (i, result) in results.iter().enumerate() {
        let Some(pb::check_result::Result::Decision(d)) = &result.result else { panic!("item {i}: {result:?}") };
        assert_eq!(d.allowed, i % 2 == 0, "item {i}");
    }
    for size in [0, 1001] {
        let checks = (0..size).map(|_| item(&maria.id, "templates.read", None)).collect();
        let request = pb::CheckPermissionsRequest { workspace_id: acme.id.clone(), checks };
        let status = app.authz().check_permissions(service(request)).await.expect_err("size");
        assert_invalid(&status, "INVALID_FIELD", &["checks"]);
    }
}

/// Users the held copy does not know cost one read of what changed per call, not one per item: a
/// batch of 1,000 unknown users is answered USER_NOT_FOUND each after a single catch-up, and a
/// user created on another process since the copy was read is found by the same catch-up.
#[tokio::test]
async fn a_batch_of_unknown_users_costs_one_catch_up_and_finds_users_made_elsewhere() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let reads = || async { app.metrics().await.sum("roster_authz_cache_reads_total", &[]) };
    // Loads the workspace into the cache.
    decide(&app, check(&acme.id, &acme.admin.id, "templates.read", None)).await.expect("warm");
    let before = reads().await;
    let unknown = |i: usize| pb::PermissionCheck {
        user_id: format!("{:032x}", i + 1),
        permission: "templates.read".into(),
        resource: None,
    };
    let request =
        pb::CheckPermissionsRequest { workspace_id: acme.id.clone(), checks: (0..1000).map(unknown).collect() };
    let results = app.authz().check_permissions(service(request)).await.expect("batch").into_inner().results;
    let not_found = |r: &pb::CheckResult| matches!(&r.result, Some(pb::check_result::Result::Error(e)) if e.reason == "USER_NOT_FOUND");
    assert!(results.iter().all(not_found), "{:?}", results.first());
    assert_eq!(reads().await - before, 1.0, "one catch-up for the whole batch");

    // Created through another process: this one's copy does not hold the new user yet.
    let peer = app.spawn_peer_process().await;
    let request = pb::CreateUserRequest {
        workspace_id: acme.id.clone(),
        email: "late@acme.example".into(),
        full_name: "Late Comer".into(),
        password: PASSWORD.into(),
        role: "agent".into(),
        request_id: String::new(),
    };
    let late =
        peer.users().create_user(service(request)).await.expect("created elsewhere").into_inner().user.expect("user");
    let mut checks: Vec<_> = (0..10).map(unknown).collect();
    checks.push(pb::PermissionCheck { user_id: late.id.clone(), permission: "templates.read".into(), resource: None });
    let request = pb::CheckPermissionsRequest { workspace_id: acme.id.clone(), checks };
    let results = app.authz().check_permissions(service(request)).await.expect("batch").into_inner().results;
    assert!(results[..10].iter().all(not_found));
    assert!(
        matches!(&results[10].result, Some(pb::check_result::Result::Decision(d)) if d.allowed),
        "{:?}",
        results[10]
    );
}

/// While batches on other threads read the cache's copy of the workspace, every change made
/// through the API is in force for the very next check: a copy a check still reads is copied,
/// changed and put in its place, and no change is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changes_are_in_force_at_once_while_batches_read_the_same_copy() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    let sam = app.create_user(&acme.admin_token, "sam@acme.example", "agent").await.expect("sam");
    let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (mut client, running) = (app.authz(), running.clone());
            let check = pb::PermissionCheck { user_id: sam.id.clone(), permission: "templates.read".into(), resource: None };
            let request = pb::CheckPermissionsRequest { workspace_id: acme.id.clone(), checks: vec![check; 1000] };
            tokio::spawn(async move {
                let mut batches = 0;
                while running.load(std::sync::atomic::Ordering::Relaxed) {
                    let results = client.check_permissions(service(request.clone())).await.expect("batch").into_inner();
                    let allowed = |r: &pb::CheckResult| {
                        matches!(&r.result, Some(pb::check_result::Result::Decision(d)) if d.allowed)
                    };
                    assert!(results.results.iter().all(allowed), "sam's checks");
                    batches += 1;
                }
                batches
            })
        })
        .collect();
    let request = || check(&acme.id, &maria.id, "templates.read", None);
    for round in 0..10 {
        let off = pb::DeactivateUserRequest { workspace_id: String::new(), user_id: maria.id.clone() };
        app.users().deactivate_user(bearer(&acme.admin_token, off)).await.expect("deactivate");
        let denied = decide(&app, request()).await.expect("deactivated");
        assert_eq!((denied.allowed, denied.reason()), (false, pb::DecisionReason::UserDeactivated), "round {round}");
        let on = pb::ReactivateUserRequest {
            workspace_id: String::new(),
            user_id: maria.id.clone(),
            request_id: String::new(),
        };
        app.users().reactivate_user(bearer(&acme.admin_token, on)).await.expect("reactivate");
        assert!(decide(&app, request()).await.expect("reactivated").allowed, "round {round}");
    }
    running.store(false, std::sync::atomic::Ordering::Relaxed);
    for reader in readers {
        assert!(reader.await.expect("reader") > 0);
    }
}

/// A batch is read as the wire format says (a repeated field merges), and a body that is not a
/// CheckPermissionsRequest is refused as the caller's mistake, not as INTERNAL.
#[tokio::test]
async fn a_batch_is_read_from_its_bytes_and_a_body_that_does_not_decode_is_malformed_request() {
    use prost::Message;
    const PATH: &str = "/roster.v1.AuthorizationService/CheckPermissions";
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let check = pb::PermissionCheck {
        user_id: acme.admin.id.clone(),
        permission: "billing.manage".into(),
        resource: Some(pb::Resource { assignee_user_id: String::new() }),
    };
    let mut item = check.encode_to_vec();
    let valid = pb::CheckPermissionsRequest { workspace_id: acme.id.clone(), checks: vec![check] }.encode_to_vec();

    // A second item: the first's fields, then its permission again as "x.y", which replaces it
    // (the wire format's merge); then a field the message does not have.
    item.extend([0x12, 0x03, b'x', b'.', b'y']);
    let mut merged = valid.clone();
    merged.push(0x12);
    merged.push(u8::try_from(item.len()).expect("a short item"));
    merged.extend(item);
    merged.extend([0x48, 0x01]);
    let answer = raw::unary(&app.channel, PATH, service(merged)).await.expect("a valid body");
    let results = pb::CheckPermissionsResponse::decode(&answer[..]).expect("a response").results;
    assert_eq!(results.len(), 2);
    let Some(pb::check_result::Result::Decision(d)) = &results[0].result else { panic!("{results:?}") };
    assert!(d.allowed && d.explanation.contains("billing.manage"), "{d:?}");
    let Some(pb::check_result::Result::Error(e)) = &results[1].result else { panic!("{results:?}") };
    assert_eq!((e.reason.as_str(), e.field.as_str()), ("INVALID_FIELD", "permission"), "{e:?}");

    // An item whose permission is not UTF-8.
    let mut bad = valid.clone();
    bad.extend([0x12, 0x04, 0x12, 0x02, 0xff, 0xfe]);
    let status = raw::unary(&app.channel, PATH, service(bad)).await.expect_err("not UTF-8");
    assert_status(&status, Code::InvalidArgument, "MALFORMED_REQUEST");
    // A length past the end of the body.
    let mut short = valid;
    short.extend([0x12, 0x40, 0x0a]);
    let status = raw::unary(&app.channel, PATH, service(short)).await.expect_err("truncated");
    assert_status(&status, Code::InvalidArgument, "MALFORMED_REQUEST");
}

/// Polls `peer` until `permission` is no longer allowed for `user_id`; how long that took.
async fn until_denied(peer: &PeerProcess, workspace_id: &str, user_id: &str, permission: &str) -> Duration {
    let started = Instant::now();
    loop {
        let request = service(check(workspace_id, user_id, permission, None));
        let decision = peer.authz().check_permission(request).await.expect("peer check").into_inner();
        if !decision.decision.expect("decision").allowed {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "the peer still allows {permission} after 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_revocation_on_one_process_is_in_force_on_another_within_a_second() {
    let app = spawn_app().await;
    let peer = app.spawn_peer_process().await;
    let acme = app.workspace("acme").await;
    let role = create_role(
        &app,
        &acme.admin_token,
        "Contacts",
        &[("contacts.read", All), ("templates.read", All), ("analytics.read", All)],
    )
    .await
    .expect("role");
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", &role.id).await.expect("maria");
    // The peer learns of the user it never saw, and holds the workspace from now on.
    let allowed = peer.authz().check_permission(service(check(&acme.id, &maria.id, "contacts.read", None))).await;
    assert!(allowed.expect("peer").into_inner().decision.expect("decision").allowed);

    // 1. A role's grants change.
    set_grants(&app, &acme.admin_token, &role.id, &[("templates.read", All), ("analytics.read", All)])
        .await
        .expect("revoke");
    let here = decide(&app, check(&acme.id, &maria.id, "contacts.read", None)).await.expect("here");
    assert!(!here.allowed, "the process that made the change denies at once");
    let lag = until_denied(&peer, &acme.id, &maria.id, "contacts.read").await;
    assert!(lag < Duration::from_secs(1), "grant revocation took {lag:?} to reach the peer");

    // 2. A user's role changes.
    let demote = pb::UpdateUserRequest {
        workspace_id: String::new(),
        user: Some(pb::User { id: maria.id.clone(), role: "agent".into(), ..Default::default() }),
        update_mask: None,
    };
    app.users().update_user(bearer(&acme.admin_token, demote)).await.expect("demote");
    let lag = until_denied(&peer, &acme.id, &maria.id, "analytics.read").await;
    assert!(lag < Duration::from_secs(1), "role change took {lag:?}");
    let agent_like = decide(&app, check(&acme.id, &maria.id, "templates.read", None)).await.expect("agent");
    assert!(agent_like.allowed && agent_like.role_id == "agent");

    // 3. A user is deactivated.
    let target = pb::DeactivateUserRequest { workspace_id: String::new(), user_id: maria.id.clone() };
    app.users().deactivate_user(bearer(&acme.admin_token, target)).await.expect("deactivate");
    let lag = until_denied(&peer, &acme.id, &maria.id, "templates.read").await;
    assert!(lag < Duration::from_secs(1), "deactivation took {lag:?}");
}

/// Caches learn of changes from the change feed, whose readers wait for the oldest writing
/// transaction in the PostgreSQL cluster; a revocation must not wait with them. On SQLite an open
/// write transaction stops every writer, so there is nothing to show there.
#[tokio::test]
async fn a_revocation_reaches_another_process_while_a_long_transaction_holds_the_feed_back() {
    use sea_orm::{ConnectionTrait, Database, TransactionTrait};
    let app = spawn_app().await;
    if !app.db.is_postgres() {
        return;
    }
    let peer = app.spawn_peer_process().await;
    let acme = app.workspace("acme").await;
    let role = create_role(&app, &acme.admin_token, "Contacts", &[("contacts.read", All), ("templates.read", All)])
        .await
        .expect("role");
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", &role.id).await.expect("maria");
    let allowed = peer.authz().check_permission(service(check(&acme.id, &maria.id, "contacts.read", None))).await;
    assert!(allowed.expect("peer").into_inner().decision.expect("decision").allowed);
    let feed = |after: String| pb::ListEventsRequest { workspace_id: acme.id.clone(), after, ..Default::default() };
    let now = app.events().list_events(service(feed(String::new()))).await.expect("feed").into_inner().next_cursor;

    // Another client's transaction that has written (it has a transaction id) and stays open.
    let other = Database::connect(app.db.url.as_str()).await.expect("connect");
    let long = other.begin().await.expect("begin");
    long.execute_unprepared("SELECT pg_current_xact_id()").await.expect("a transaction id");

    set_grants(&app, &acme.admin_token, &role.id, &[("templates.read", All)]).await.expect("revoke");
    let held_back = app.events().list_events(service(feed(now))).await.expect("feed").into_inner();
    assert!(held_back.events.is_empty(), "the feed is not held back; the test proves nothing: {held_back:?}");
    let lag = until_denied(&peer, &acme.id, &maria.id, "contacts.read").await;
    assert!(lag < Duration::from_secs(1), "the revocation waited {lag:?} for the long transaction");
    long.rollback().await.expect("rollback");
}

/// The version, the number of roles if they were read, and the members changed since `since`.
async fn changes_since(
    app: &TestApp,
    workspace_id: &str,
    since: i64,
) -> (i64, Option<usize>, Vec<(String, String, bool)>) {
    let changes = app.store.authz_changes(workspace_id, Some(since)).await.expect("changes");
    let mut members: Vec<(String, String, bool)> =
        changes.members.into_iter().map(|m| (m.user_id, m.role_id, m.active)).collect();
    members.sort();
    (changes.version, changes.roles.map(|roles| roles.len()), members)
}

/// What the authorization cache reads to catch up: every change to a user's role or status, and
/// every new user, shows up in what changed since the version before it; other changes do not.
#[tokio::test]
async fn the_cache_reads_exactly_the_members_changed_since_its_version() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    app.workspace("globex").await;
    let changed = |since| changes_since(&app, &acme.id, since);
    let everything = app.store.authz_changes(&acme.id, None).await.expect("everything");
    assert_eq!(everything.members.len(), 1, "the owner");
    assert_eq!(everything.roles.as_ref().map(Vec::len), Some(3), "the built-in roles");
    let start = everything.version;
    assert_eq!(changed(start).await, (start, None, vec![]));

    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    let created = changed(start).await;
    assert_eq!(created, (start + 1, None, vec![(maria.id.clone(), "agent".into(), true)]));

    let rename = pb::UpdateUserRequest {
        workspace_id: String::new(),
        user: Some(pb::User { id: maria.id.clone(), full_name: "Maria Q".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["full_name".into()] }),
    };
    app.users().update_user(bearer(&acme.admin_token, rename)).await.expect("rename");
    assert_eq!(changed(start + 1).await, (start + 1, None, vec![]), "a new name changes no check");

    let promote = pb::UpdateUserRequest {
        workspace_id: String::new(),
        user: Some(pb::User { id: maria.id.clone(), role: "supervisor".into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["role".into()] }),
    };
    app.users().update_user(bearer(&acme.admin_token, promote)).await.expect("promote");
    assert_eq!(changed(start + 1).await, (start + 2, None, vec![(maria.id.clone(), "supervisor".into(), true)]));

    let target = pb::DeactivateUserRequest { workspace_id: String::new(), user_id: maria.id.clone() };
    app.users().deactivate_user(bearer(&acme.admin_token, target)).await.expect("deactivate");
    assert_eq!(changed(start + 2).await, (start + 3, None, vec![(maria.id.clone(), "supervisor".into(), false)]));
    let target =
        pb::ReactivateUserRequest { workspace_id: String::new(), user_id: maria.id.clone(), request_id: String::new() };
    app.users().reactivate_user(bearer(&acme.admin_token, target)).await.expect("reactivate");
    assert_eq!(changed(start + 3).await, (start + 4, None, vec![(maria.id.clone(), "supervisor".into(), true)]));

    // A change to a role makes readers take every role; moving its holders also changes them.
    let role = create_role(&app, &acme.admin_token, "Billing", &[("billing.manage", All)]).await.expect("role");
    assert_eq!(changed(start + 4).await, (start + 5, Some(4), vec![]));
    let sam = app.create_user(&acme.admin_token, "sam@acme.example", &role.id).await.expect("sam");
    set_grants(&app, &acme.admin_token, &role.id, &[("billing.manage", All), ("audit.read", All)])
        .await
        .expect("grants");
    assert_eq!(changed(start + 6).await, (start + 7, Some(4), vec![]));
    assert_eq!(delete(&app, &acme.admin_token, &role.id, "agent").await.expect("delete"), 1);
    assert_eq!(changed(start + 7).await, (start + 8, Some(3), vec![(sam.id.clone(), "agent".into(), true)]));

    // Everything read again is what the changes added up to.
    let again = app.store.authz_changes(&acme.id, None).await.expect("everything");
    let mut members: Vec<(String, String, bool)> =
        again.members.into_iter().map(|m| (m.user_id, m.role_id, m.active)).collect();
    members.sort();
    assert_eq!(again.version, start + 8);
    assert!(
        members.contains(&(maria.id, "supervisor".into(), true)) && members.contains(&(sam.id, "agent".into(), true))
    );
    assert_eq!(members.len(), 3);
}

#[tokio::test]
async fn over_its_memory_budget_the_cache_lets_go_of_idle_workspaces_and_reloads_them_on_demand() {
    // 1 MiB holds about 480 one-admin workspaces (about 2.2 KB each, by the cache's estimate).
    let app = spawn_app_with(|config| {
        config.authz_cache_mib = 1;
        config.authz_refresh_ms = 20;
    })
    .await;
    let count = 560;
    let mut ids = Vec::new();
    for batch in (0..count).collect::<Vec<_>>().chunks(8) {
        let made: Vec<_> = batch
            .iter()
            .map(|i| {
                let (mut workspaces, request) = (app.workspaces(), service(new_workspace(&format!("budget-{i}"))));
                tokio::spawn(async move {
                    let made = workspaces.create_workspace(request).await.expect("workspace").into_inner();
                    (made.workspace.expect("workspace").id, made.admin.expect("admin").id)
                })
            })
            .collect();
        for task in made {
            ids.push(task.await.expect("task"));
        }
    }
    let check = |(workspace_id, user_id): &(String, String)| pb::CheckPermissionRequest {
        workspace_id: workspace_id.clone(),
        user_id: user_id.clone(),
        permission: "users.read".into(),
        resource: None,
    };
    // Each checked once, oldest first: the cache holds more than its budget for a moment.
    for pair in &ids {
        assert!(decide(&app, check(pair)).await.expect("check").allowed);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let reads = || async { app.metrics().await.sum("roster_authz_cache_reads_total", &[]) };
    // The newest stays held: checking it again reads nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let scrape = app.metrics().await;
    let (held, bytes) = (scrape.sum("roster_authz_cache_workspaces", &[]), scrape.sum("roster_authz_cache_bytes", &[]));
    let evicted = scrape.sum("roster_authz_cache_evictions_total", &[]);
    assert!(bytes > 0.0 && bytes <= f64::from(1 << 20), "{bytes} estimated bytes held, over the budget");
    assert!(evicted >= 1.0 && held + evicted >= count as f64 && held < count as f64, "{held} held, {evicted} let go");
    let before = reads().await;
    assert!(decide(&app, check(&ids[count - 1])).await.expect("check").allowed);
    assert_eq!(reads().await, before, "the most recently used workspace is still held");
    // The oldest was let go: its next check reads it again, and answers as before.
    assert!(decide(&app, check(&ids[0])).await.expect("check").allowed);
    assert_eq!(reads().await, before + 1.0, "the least recently used workspace was let go and read again");
}
