//! Service keys narrowed by the keys file: to some services or methods, to one workspace; two
//! secrets at once while rotating; the file re-read while the server runs.

use roster_proto::v1 as pb;
use roster_tests::*;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

const ROUTER: &str = "router-secret-0123456789";
const ROUTER_NEXT: &str = "router-secret-next-0123456789";
const TENANT: &str = "tenant-secret-0123456789";

/// A server with the keys file `text` (beside the test's full-access key), re-read every 50 ms.
async fn app_with_keys(text: &str) -> (TestApp, tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.toml");
    std::fs::write(&path, text).expect("write keys file");
    let file = path.clone();
    let app = spawn_app_with(move |config| {
        config.service_keys_file = Some(file);
        config.reload_check_ms = 50;
    })
    .await;
    (app, dir, path)
}

/// Replaces the keys file at once, as an operator should (a rename, not a rewrite in place).
fn write_atomically(path: &Path, text: &str) {
    let next = path.with_extension("next");
    std::fs::write(&next, text).expect("write keys file");
    std::fs::rename(&next, path).expect("rename keys file");
}

/// Rewrites the keys file and waits until the server answers `secret` with `expected` for WhoAmI.
async fn rewrite(app: &TestApp, path: &Path, text: &str, secret: &str, expected: Result<(), Code>) {
    write_atomically(path, text);
    let reloaded = eventually(Duration::from_secs(10), || {
        let mut auth = app.auth();
        async move {
            let answer = auth.who_am_i(bearer(secret, pb::WhoAmIRequest {})).await;
            (answer.map(|_| ()).map_err(|s| s.code()) == expected).then_some(())
        }
    })
    .await;
    assert!(reloaded.is_some(), "the server did not take the new keys file within 10 s");
}

fn check(workspace_id: &str, user_id: &str) -> pb::CheckPermissionRequest {
    pb::CheckPermissionRequest {
        workspace_id: workspace_id.into(),
        user_id: user_id.into(),
        permission: "users.read".into(),
        resource: None,
    }
}

#[track_caller]
fn assert_out_of_scope(status: &tonic::Status, key: &str, method: &str) {
    assert_status(status, Code::PermissionDenied, "SERVICE_KEY_OUT_OF_SCOPE");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("key").map(String::as_str), Some(key), "{status:?}");
    assert_eq!(info.metadata.get("method").map(String::as_str), Some(method), "{status:?}");
    assert!(!status.message().contains("secret"), "{status:?}");
}

#[tokio::test]
async fn a_key_limited_to_some_methods_calls_those_and_is_refused_the_rest_with_nothing_changed() {
    let file = format!(
        r#"
        [[key]]
        name = "router"
        secrets = ["{ROUTER}"]
        methods = ["roster.v1.AuthorizationService", "roster.v1.AssignmentService/AssignConversation"]
        "#
    );
    let (app, _dir, _path) = app_with_keys(&file).await;
    let ws = app.workspace("scoped").await;

    // A whole service, and a single method, are allowed.
    let allowed = app.authz().check_permission(bearer(ROUTER, check(&ws.id, &ws.admin.id))).await.expect("check");
    assert!(allowed.into_inner().decision.expect("decision").allowed);
    let team = pb::CreateTeamRequest {
        workspace_id: ws.id.clone(),
        name: "Support".into(),
        strategy: pb::Strategy::Manual as i32,
    };
    let team = app.teams().create_team(service(team)).await.expect("team").into_inner().team.expect("team");
    let assign = pb::AssignConversationRequest {
        workspace_id: ws.id.clone(),
        conversation_id: "wa:1".into(),
        team_id: team.id.clone(),
        ..Default::default()
    };
    app.assignments().assign_conversation(bearer(ROUTER, assign)).await.expect("assign");

    // Everything else is refused, naming the key and the method, and changes nothing.
    let fingerprint = app.fingerprint(false).await;
    let before = fingerprint.read().await;
    let refused =
        app.workspaces().create_workspace(bearer(ROUTER, new_workspace("sneaky"))).await.expect_err("refused");
    assert_out_of_scope(&refused, "router", "/roster.v1.WorkspaceService/CreateWorkspace");
    let unassign = pb::UnassignConversationRequest { workspace_id: ws.id.clone(), conversation_id: "wa:1".into() };
    let refused = app.assignments().unassign_conversation(bearer(ROUTER, unassign)).await.expect_err("refused");
    assert_out_of_scope(&refused, "router", "/roster.v1.AssignmentService/UnassignConversation");
    let seats = pb::SetExtraSeatsRequest { workspace_id: ws.id.clone(), extra_seats: 99 };
    let refused = app.billing().set_extra_seats(bearer(ROUTER, seats)).await.expect_err("refused");
    assert_out_of_scope(&refused, "router", "/roster.v1.BillingService/SetExtraSeats");
    // Even a body that does not decode is refused for its method, not read.
    let garbage = tonic::Request::new(vec![0xff, 0xff, 0xff]);
    let mut garbage = garbage;
    garbage.metadata_mut().insert("authorization", format!("Bearer {ROUTER}").parse().expect("header"));
    let refused = raw::unary(&app.channel, "/roster.v1.UserService/CreateUser", garbage).await.expect_err("refused");
    assert_out_of_scope(&refused, "router", "/roster.v1.UserService/CreateUser");
    assert_eq!(fingerprint.read().await, before);

    // The full-access key of the flags is untouched.
    app.workspaces().create_workspace(service(new_workspace("allowed"))).await.expect("full access");
}

#[tokio::test]
async fn a_key_bound_to_a_workspace_reaches_it_alone_and_refusals_are_audited_there() {
    let (app, _dir, path) = app_with_keys("").await;
    let ours = app.workspace("ours").await;
    let theirs = app.workspace("theirs").await;
    let file = format!(
        r#"
        [[key]]
        name = "tenant-sync"
        secrets = ["{TENANT}"]
        methods = ["*"]
        workspace_id = "{}"
        "#,
        ours.id
    );
    rewrite(&app, &path, &file, TENANT, Ok(())).await;

    // Its workspace, named or not.
    for named in [String::new(), ours.id.clone()] {
        let list = pb::ListUsersRequest { workspace_id: named, ..Default::default() };
        let users = app.users().list_users(bearer(TENANT, list)).await.expect("own workspace").into_inner().users;
        assert_eq!(users.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), [ours.admin.id.as_str()]);
    }

    // Another workspace: refused before anything is read or written, whatever the method.
    let fingerprint = app.fingerprint(false).await;
    let before = fingerprint.read().await;
    let list = pb::ListUsersRequest { workspace_id: theirs.id.clone(), ..Default::default() };
    let refused = app.users().list_users(bearer(TENANT, list)).await.expect_err("refused");
    assert_out_of_scope(&refused, "tenant-sync", "/roster.v1.UserService/ListUsers");
    let refused = app.authz().check_permission(bearer(TENANT, check(&theirs.id, &theirs.admin.id))).await;
    assert_out_of_scope(
        &refused.expect_err("refused"),
        "tenant-sync",
        "/roster.v1.AuthorizationService/CheckPermission",
    );
    let create = pb::CreateUserRequest {
        workspace_id: theirs.id.clone(),
        email: "mole@theirs.example".into(),
        full_name: "Mole".into(),
        password: PASSWORD.into(),
        role: "admin".into(),
        request_id: String::new(),
    };
    let refused = app.users().create_user(bearer(TENANT, create)).await.expect_err("refused");
    assert_out_of_scope(&refused, "tenant-sync", "/roster.v1.UserService/CreateUser");
    // A malformed id is refused as such, and not audited as a reach.
    let list = pb::ListUsersRequest { workspace_id: "theirs\nforged: line".into(), ..Default::default() };
    let refused = app.users().list_users(bearer(TENANT, list)).await.expect_err("malformed");
    assert_invalid(&refused, "INVALID_FIELD", &["workspace_id"]);
    // Creating a workspace reaches beyond its own.
    let refused = app.workspaces().create_workspace(bearer(TENANT, new_workspace("spawned"))).await;
    assert_out_of_scope(&refused.expect_err("refused"), "tenant-sync", "/roster.v1.WorkspaceService/CreateWorkspace");
    // The change feed without a workspace is its own workspace's, not every workspace's.
    let events = pb::ListEventsRequest::default();
    let events = app.events().list_events(bearer(TENANT, events)).await.expect("own feed").into_inner().events;
    assert!(!events.is_empty() && events.iter().all(|e| e.workspace_id == ours.id), "{events:?}");
    assert_eq!(fingerprint.read().await, before);

    // Each refusal is in the audit trail of the key's workspace, with the key as the actor.
    let page = app.store.list_audit_events(&ours.id, &Default::default(), None, 100).await.expect("audit");
    let refusals: Vec<(String, String)> = page
        .items
        .iter()
        .filter(|e| e.action == "service_key.refused")
        .map(|e| (e.actor.clone(), e.target.clone()))
        .collect();
    let to_theirs = (String::from("service:tenant-sync"), format!("workspace:{}", theirs.id));
    let new = (String::from("service:tenant-sync"), String::from("workspace:new"));
    assert_eq!(refusals, [new, to_theirs.clone(), to_theirs.clone(), to_theirs], "{refusals:?}");
    assert!(!app.audit_actions(&theirs.id).await.contains(&"service_key.refused".to_owned()));
}

#[tokio::test]
async fn two_secrets_rotate_without_a_restart_and_a_broken_file_changes_nothing() {
    let one = format!("[[key]]\nname = \"router\"\nsecrets = [\"{ROUTER}\"]\nmethods = [\"*\"]\n");
    let (app, _dir, path) = app_with_keys(&one).await;
    let ws = app.workspace("rotating").await;

    // Both secrets while callers move over; the audit trail shows the same key for either.
    let both = format!("[[key]]\nname = \"router\"\nsecrets = [\"{ROUTER_NEXT}\", \"{ROUTER}\"]\nmethods = [\"*\"]\n");
    rewrite(&app, &path, &both, ROUTER_NEXT, Ok(())).await;
    for secret in [ROUTER, ROUTER_NEXT] {
        let me = app.auth().who_am_i(bearer(secret, pb::WhoAmIRequest {})).await.expect("either secret");
        let name = pb::who_am_i_response::Principal::ServiceKeyName("router".into());
        assert_eq!(me.into_inner().principal, Some(name));
    }
    // A watch opened with the old secret ends when the old secret goes.
    let watch = pb::WatchEventsRequest { workspace_id: ws.id.clone(), ..Default::default() };
    let mut stream = app.events().watch_events(bearer(ROUTER, watch)).await.expect("watch").into_inner();

    let next = format!("[[key]]\nname = \"router\"\nsecrets = [\"{ROUTER_NEXT}\"]\nmethods = [\"*\"]\n");
    rewrite(&app, &path, &next, ROUTER, Err(Code::Unauthenticated)).await;
    app.auth().who_am_i(bearer(ROUTER_NEXT, pb::WhoAmIRequest {})).await.expect("the new secret");
    // The watch finds out before it sends the next change (it re-checks at most every second).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let team = pb::CreateTeamRequest {
        workspace_id: ws.id.clone(),
        name: "Next".into(),
        strategy: pb::Strategy::Manual as i32,
    };
    app.teams().create_team(service(team)).await.expect("a change to watch");
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.message().await {
                Ok(Some(_)) => continue,
                Err(status) => return Some(status),
                Ok(None) => return None,
            }
        }
    })
    .await
    .expect("the watch ends within 10 s");
    assert_status(&ended.expect("an error ends it"), Code::Unauthenticated, "CREDENTIALS_INVALID");

    // A file that does not parse, or names an unknown method, is ignored: the keys stay.
    for broken in [
        format!("[[key]]\nname = \"router\"\nsecrets = [\"{ROUTER}\"\nmethods = [\"*\"]\n"),
        format!("[[key]]\nname = \"router\"\nsecrets = [\"{ROUTER}\"]\nmethods = [\"roster.v1.Nope\"]\n"),
    ] {
        write_atomically(&path, &broken);
        tokio::time::sleep(Duration::from_millis(300)).await;
        app.auth().who_am_i(bearer(ROUTER_NEXT, pb::WhoAmIRequest {})).await.expect("the keys in force stay");
        let old = app.auth().who_am_i(bearer(ROUTER, pb::WhoAmIRequest {})).await.expect_err("still refused");
        assert_status(&old, Code::Unauthenticated, "CREDENTIALS_INVALID");
    }
    app.auth().who_am_i(service(pb::WhoAmIRequest {})).await.expect("the flag's key is not in the file");
}

#[tokio::test]
async fn a_server_refuses_to_start_with_a_keys_file_that_is_not_valid_without_showing_a_secret() {
    let db = TestDatabase::fresh().await;
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("keys.toml");
    let cases = [
        format!("[[key]]\nname = \"router\"\nsecrets = [\"{ROUTER}\"]\nmethod = [\"roster.v1.AuthService\"]\n"),
        format!("[[key]]\nname = \"router\"\nsecrets = \"{ROUTER}\"\n"),
        format!("[[key]]\nname = \"tests\"\nsecrets = [\"{ROUTER}\"]\nmethods = [\"*\"]\n"),
        // Cut short before `methods`: not a key with every method.
        format!("[[key]]\nname = \"router\"\nsecrets = [\"{ROUTER}\"]\n"),
        "[[key]]\nname = \"router\"\nsecrets = [98765432109876543210]\nmethods = [\"*\"]\n".to_owned(),
    ];
    for text in cases {
        std::fs::write(&path, &text).expect("write");
        let mut config = test_config(&db.url);
        config.service_keys_file = Some(path.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let listeners = rosterd::Listeners { grpc: listener, metrics: None };
        let err = rosterd::serve(config, listeners, std::future::pending()).await.expect_err("refused");
        let err = rosterd::error_chain(&err);
        assert!(err.contains("service keys file"), "{err}");
        assert!(!err.contains(ROUTER) && !err.contains(SERVICE_KEY) && !err.contains("98765432109876543210"), "{err}");
    }
    let mut config = test_config(&db.url);
    config.service_keys_file = Some(dir.path().join("missing.toml"));
    let listeners =
        rosterd::Listeners { grpc: tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind"), metrics: None };
    let err = rosterd::serve(config, listeners, std::future::pending()).await.expect_err("refused");
    assert!(rosterd::error_chain(&err).contains("missing.toml"), "{err}");
}
