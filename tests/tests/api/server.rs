use roster_proto::v1 as pb;
use roster_tests::*;
use std::time::Duration;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};
use tonic_reflection::pb::v1alpha::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

#[tokio::test]
async fn reflection_v1alpha_lists_every_roster_service_health_and_reflection() {
    let app = spawn_app().await;
    let mut client = ServerReflectionClient::new(app.channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };

    let mut stream = client.server_reflection_info(tokio_stream_once(request)).await.expect("reflection").into_inner();
    let response = stream.message().await.expect("answer").expect("one response");

    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else { panic!("{response:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "roster.v1.WorkspaceService",
        "roster.v1.AuthService",
        "roster.v1.UserService",
        "roster.v1.AuditService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
}

fn tokio_stream_once<T: Send + 'static>(item: T) -> impl tonic::codegen::tokio_stream::Stream<Item = T> + Send {
    tonic::codegen::tokio_stream::iter([item])
}

#[tokio::test]
async fn shutdown_turns_health_not_serving_and_lets_in_flight_calls_finish() {
    let mut app = spawn_app_with(|c| {
        c.bcrypt_cost = 11;
        c.shutdown_grace_secs = 3;
    })
    .await;
    let mut health = HealthClient::new(app.channel.clone());
    let mut watch =
        health.watch(HealthCheckRequest { service: "roster.v1.UserService".into() }).await.expect("watch").into_inner();
    assert_eq!(watch.message().await.expect("status").expect("first").status(), ServingStatus::Serving);
    // A call that takes a while: bcrypt at cost 12.
    let workspaces = app.workspaces();
    let in_flight = tokio::spawn(async move {
        let mut client = workspaces;
        client.create_workspace(service(new_workspace("acme"))).await
    });
    // Ordering, not waiting for state: let the call reach the server before the signal.
    tokio::time::sleep(Duration::from_millis(50)).await;

    app.signal_shutdown();

    let next = tokio::time::timeout(Duration::from_secs(10), watch.message()).await.expect("in time");
    assert_eq!(next.expect("status").expect("update").status(), ServingStatus::NotServing);
    let created = in_flight.await.expect("task");
    assert!(created.is_ok(), "the in-flight call finished: {created:?}");
    // The health watch stream is still open: the grace period ends it.
    let stopped = tokio::time::timeout(Duration::from_secs(10), app.stop()).await;
    assert!(matches!(stopped, Ok(Ok(()))), "stops cleanly within the grace period: {stopped:?}");
    drop(watch);
}

#[tokio::test]
async fn tests_run_on_the_backend_ci_asks_for() {
    let app = spawn_app().await;
    let wanted = match std::env::var("ROSTER_TEST_DATABASE_URL") {
        Ok(url) if !url.is_empty() => "postgresql",
        _ => "sqlite",
    };
    assert_eq!(app.store.backend_name(), wanted);
    assert_eq!(app.db.is_postgres(), wanted == "postgresql");
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_describe_every_service_and_the_error_details() {
    use tonic_reflection::pb::v1;
    let app = spawn_app().await;
    let symbols = [
        "roster.v1.WorkspaceService",
        "roster.v1.AuthService",
        "roster.v1.UserService",
        "roster.v1.AuditService",
        "grpc.health.v1.Health",
        "google.rpc.ErrorInfo",
        "google.rpc.BadRequest",
    ];
    for symbol in symbols {
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let mut client = ServerReflectionClient::new(app.channel.clone());
        let mut stream = client.server_reflection_info(tokio_stream_once(request)).await.expect("v1alpha").into_inner();
        let answer = stream.message().await.expect("answer").expect("response").message_response;
        assert!(
            matches!(answer, Some(MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()),
            "v1alpha cannot describe {symbol}: {answer:?}"
        );

        let request = v1::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(v1::server_reflection_request::MessageRequest::FileContainingSymbol(symbol.into())),
        };
        let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel.clone());
        let mut stream = client.server_reflection_info(tokio_stream_once(request)).await.expect("v1").into_inner();
        let answer = stream.message().await.expect("answer").expect("response").message_response;
        assert!(
            matches!(answer, Some(v1::server_reflection_response::MessageResponse::FileDescriptorResponse(ref files)) if !files.file_descriptor_proto.is_empty()),
            "v1 cannot describe {symbol}: {answer:?}"
        );
    }
}

#[tokio::test]
async fn a_first_run_without_service_keys_creates_the_demo_workspace() {
    let app = spawn_app_with(|c| {
        c.service_keys.clear();
        c.demo = true;
    })
    .await;
    let slug = roster_identity::Slug::parse("demo").expect("slug");

    let created =
        eventually(Duration::from_secs(10), || async { app.store.workspace_id_by_slug(&slug).await.expect("store") })
            .await
            .expect("the demo workspace appears");

    let workspace = app.store.workspace(&created).await.expect("workspace");
    assert_eq!(workspace.seats_used, 1, "its admin");
    let email = roster_identity::Email::parse("admin@demo.example").expect("email");
    let admin = app.store.login_candidate(&slug, &email).await.expect("store");
    assert!(admin.and_then(|c| c.user).is_some_and(|(user, _)| user.role.as_str() == "admin"));
    assert_eq!(app.audit_actions(&created).await, ["workspace.created", "user.created"]);
}

/// A message whose field 1 is a number where `LoginRequest` has a string: it does not decode.
#[derive(Clone, PartialEq, prost::Message)]
struct NotALoginRequest {
    #[prost(uint64, tag = "1")]
    number: u64,
}

async fn raw_call(app: &TestApp, path: &'static str) -> tonic::Status {
    let mut grpc = tonic::client::Grpc::new(app.channel.clone());
    grpc.ready().await.expect("ready");
    let codec = tonic_prost::ProstCodec::<NotALoginRequest, pb::LoginResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(tonic::Request::new(NotALoginRequest { number: 7 }), path, codec).await.expect_err("refused")
}

#[tokio::test]
async fn statuses_tonic_answers_itself_carry_a_reason_too() {
    let app = spawn_app().await;

    let undecodable = raw_call(&app, "/roster.v1.AuthService/Login").await;
    let unknown = raw_call(&app, "/roster.v1.AuthService/Teleport").await;

    assert_status(&undecodable, tonic::Code::InvalidArgument, "MALFORMED_REQUEST");
    assert_status(&unknown, tonic::Code::Unimplemented, "METHOD_NOT_FOUND");
    let mut health = HealthClient::new(app.channel.clone());
    let serving = health.check(HealthCheckRequest { service: String::new() }).await.expect("still serving");
    assert_eq!(serving.into_inner().status(), ServingStatus::Serving);
}

/// Each service decodes bodies up to its limit (16 KiB; 128 KiB for AuthorizationService, whose
/// largest legitimate call is a batch of 1,000 checks each naming a resource): one byte more is
/// refused, before it is read, with RESOURCE_EXHAUSTED and a reason of its own.
#[tokio::test]
async fn a_body_over_its_services_limit_is_resource_exhausted_and_the_largest_real_batch_is_not() {
    use prost::Message;
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let item = pb::PermissionCheck {
        user_id: acme.admin.id.clone(),
        permission: "conversations.assign".into(),
        resource: Some(pb::Resource { assignee_user_id: acme.admin.id.clone() }),
    };
    let largest = pb::CheckPermissionsRequest { workspace_id: acme.id.clone(), checks: vec![item; 1000] };
    let results = app.authz().check_permissions(service(largest)).await.expect("the largest batch").into_inner();
    assert_eq!(results.results.len(), 1000);

    // A message of exactly `size` bytes: a workspace id padded out to it.
    let sized = |size: usize| {
        let body = |padding: usize| pb::GetWorkspaceRequest { workspace_id: "x".repeat(padding) }.encode_to_vec();
        // The tag and the length take a few bytes of their own.
        (size - 6..size).map(body).find(|b| b.len() == size).expect("a padding that fits")
    };
    for (path, limit) in [
        ("/roster.v1.WorkspaceService/GetWorkspace", 16 * 1024),
        ("/roster.v1.AuthorizationService/CheckPermission", 128 * 1024),
    ] {
        let at_limit = raw::unary(&app.channel, path, service(sized(limit))).await.expect_err("a bad workspace id");
        assert_status(&at_limit, tonic::Code::InvalidArgument, "INVALID_FIELD");
        let over = raw::unary(&app.channel, path, service(sized(limit + 1))).await.expect_err("too large");
        assert_status(&over, tonic::Code::ResourceExhausted, "MESSAGE_TOO_LARGE");
        // Without a credential nothing is read at all: the caller is refused first.
        let anonymous = raw::unary(&app.channel, path, tonic::Request::new(sized(limit + 1))).await.expect_err("who?");
        assert_status(&anonymous, tonic::Code::Unauthenticated, "CREDENTIALS_MISSING");
        let garbage = raw::unary(&app.channel, path, tonic::Request::new(vec![0xff; 64])).await.expect_err("who?");
        assert_status(&garbage, tonic::Code::Unauthenticated, "CREDENTIALS_MISSING");
    }
}

#[tokio::test]
async fn a_call_over_the_time_limit_is_deadline_exceeded_with_a_reason() {
    // bcrypt at cost 14 takes several seconds in a debug build, well over the 1-second limit.
    let app = spawn_app_with(|c| {
        c.request_timeout_secs = 1;
        c.bcrypt_cost = 14;
    })
    .await;

    let status = app.workspaces().create_workspace(service(new_workspace("acme"))).await.expect_err("too slow");

    assert_status(&status, tonic::Code::DeadlineExceeded, "REQUEST_TIMEOUT");
    assert!(!app.store.has_workspaces().await.expect("store"), "a timed-out call writes nothing");
}

/// A pool opening its connections beside the migrations of a new SQLite file once made the
/// migrations fail with "database is locked" (docs/ARCHITECTURE.md): a start on a new database
/// must succeed every time, be at once ready for writes while the rest of the pool opens, and end
/// with the SQLite pool full.
#[tokio::test]
async fn a_new_database_starts_every_time() {
    for attempt in 0..25 {
        let db = TestDatabase::fresh().await;
        let store = match roster_store::Store::connect(&roster_store::StoreConfig::new(db.url.clone())).await {
            Ok(store) => store,
            Err(e) => panic!("start {attempt} on a new database failed: {e}"),
        };
        let limit = roster_identity::throttle::Limit { max_failures: 5, window_ms: 60_000 };
        let keys = [("account:test", limit)];
        let (written, ()) = tokio::join!(store.begin_login_attempt(&keys, 1_000), store.open_pool());
        assert!(
            matches!(written, Ok(roster_store::Admission::Begun(_))),
            "a write right after start {attempt}: {written:?}"
        );
        if !db.is_postgres() {
            let open = store.pool_usage().open;
            assert_eq!(open, roster_store::StoreConfig::new("").max_connections, "the pool after start {attempt}");
        }
        store.close().await.expect("close");
    }
}

/// CreateUser calls all at once, as `token`, each with its own email; what each answered.
async fn create_users_at_once(app: &TestApp, token: &str, count: usize) -> Vec<Result<(), tonic::Status>> {
    let calls: Vec<_> = (0..count)
        .map(|i| {
            let (mut users, token) = (app.users(), token.to_owned());
            tokio::spawn(async move {
                let request = pb::CreateUserRequest {
                    email: format!("flood{i}@acme.example"),
                    full_name: "Flood".into(),
                    password: PASSWORD.into(),
                    role: "agent".into(),
                    ..Default::default()
                };
                users.create_user(bearer(&token, request)).await.map(drop)
            })
        })
        .collect();
    let mut answers = Vec::new();
    for call in calls {
        answers.push(call.await.expect("call"));
    }
    answers
}

/// Password work waits for a core in a bounded queue per lane: a flood of new users is refused at
/// once with SERVER_OVERLOADED past the queue, while logins, in their own lane, go through.
#[tokio::test]
async fn a_flood_of_password_work_is_refused_at_once_and_logins_still_go_through() {
    let app = spawn_app_with(|config| {
        config.bcrypt_cost = 9;
        config.bcrypt_queue = 2;
    })
    .await;
    let acme = app.workspace("acme").await;
    let flood = create_users_at_once(&app, &acme.admin_token, 40);
    let logins = async {
        for _ in 0..3 {
            app.login("acme", "admin@acme.example", PASSWORD).await.expect("a login during the flood");
        }
    };
    let (answers, ()) = tokio::join!(flood, logins);
    let created = answers.iter().filter(|a| a.is_ok()).count();
    for refused in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_status(refused, tonic::Code::ResourceExhausted, "SERVER_OVERLOADED");
        assert!(tonic_types::StatusExt::get_error_details(refused).retry_info().is_some());
    }
    assert!((1..40).contains(&created), "{created} of 40 created");
}

/// Past the configured number of calls in flight, a call is refused at once, and health still
/// answers.
#[tokio::test]
async fn past_the_calls_in_flight_a_call_is_refused_at_once_and_health_still_answers() {
    let app = spawn_app_with(|config| {
        config.bcrypt_cost = 9;
        config.max_calls = 3;
    })
    .await;
    let acme = app.workspace("acme").await;
    let answers = create_users_at_once(&app, &acme.admin_token, 20).await;
    let refused: Vec<_> = answers.iter().filter_map(|a| a.as_ref().err()).collect();
    assert!(!refused.is_empty() && refused.len() < 20, "{} of 20 refused", refused.len());
    for status in refused {
        assert_status(status, tonic::Code::ResourceExhausted, "SERVER_OVERLOADED");
    }
    let mut health = HealthClient::new(app.channel.clone());
    health.check(HealthCheckRequest { service: String::new() }).await.expect("health answers");
}

/// Processes started together on a new database migrate it once between them: none fails on
/// another's tables, and a server then runs on the schema they made.
#[tokio::test]
async fn stores_connecting_together_to_a_new_database_migrate_it_once() {
    let db = TestDatabase::fresh().await;
    let mut connects = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let config = roster_store::StoreConfig::new(db.url.clone());
        connects.spawn(async move { roster_store::Store::connect(&config).await });
    }
    while let Some(store) = connects.join_next().await {
        store.expect("task").expect("connected, the schema up to date").close().await.expect("closed");
    }
    let app = spawn_app_on(db, |_, _| {}).await;
    let acme = app.workspace("acme").await;
    assert_eq!(app.audit_actions(&acme.id).await.first().map(String::as_str), Some("workspace.created"));
}
