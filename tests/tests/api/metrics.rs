//! The Prometheus endpoint on its own port: calls per method and status code, bcrypt work,
//! assignment outcomes, the outbox backlog, the database pool and SQLite's memory.

use crate::teams::team_of_agents;
use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::Code;

const CREATE_USER: &str = "/roster.v1.UserService/CreateUser";

fn calls(scrape: &metrics::Scrape, method: &str, code: &str) -> f64 {
    scrape.sum("roster_rpc_duration_seconds_count", &[("method", method), ("code", code)])
}

#[tokio::test]
async fn calls_are_counted_and_timed_per_method_and_code() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let before = app.metrics().await;
    assert!(before.content_type.starts_with("application/openmetrics-text"), "{}", before.content_type);

    app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("created");
    let refused = app.create_user(&acme.admin_token, "not an email", "agent").await.expect_err("refused");
    assert_status(&refused, Code::InvalidArgument, "INVALID_FIELD");
    let unknown = tonic::client::Grpc::new(app.channel.clone());
    let mut unknown = unknown;
    unknown.ready().await.expect("ready");
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/roster.v1.UserService/DropAllTables");
    let codec = tonic_prost::ProstCodec::<pb::GetUserRequest, pb::User>::default();
    let status = unknown.unary(tonic::Request::new(pb::GetUserRequest::default()), path, codec).await.expect_err("no");
    assert_eq!(status.code(), Code::Unimplemented);

    let after = app.metrics().await;
    assert_eq!(calls(&after, CREATE_USER, "OK") - calls(&before, CREATE_USER, "OK"), 1.0);
    assert_eq!(calls(&after, CREATE_USER, "INVALID_ARGUMENT") - calls(&before, CREATE_USER, "INVALID_ARGUMENT"), 1.0);
    // A made-up method is counted, under one label for all of them.
    assert_eq!(calls(&after, "unknown", "UNIMPLEMENTED") - calls(&before, "unknown", "UNIMPLEMENTED"), 1.0);
    assert!(!after.text.contains("DropAllTables"), "no label takes a made-up method's name");
    // Latency: a histogram whose sum moved by the calls' time.
    let sum = |s: &metrics::Scrape| s.sum("roster_rpc_duration_seconds_sum", &[("method", CREATE_USER)]);
    assert!(sum(&after) > sum(&before));
    let inf =
        after.sum("roster_rpc_duration_seconds_bucket", &[("method", CREATE_USER), ("code", "OK"), ("le", "+Inf")]);
    assert_eq!(inf, calls(&after, CREATE_USER, "OK"));
    // New passwords are bcrypt hashes: the workspace's admin and Maria (the dummy hash for
    // unknown logins may have been made too).
    assert!(after.sum("roster_bcrypt_operations_total", &[("operation", "hash")]) >= 2.0);
    // No secret ever appears.
    assert!(
        !after.text.contains(PASSWORD) && !after.text.contains(SERVICE_KEY) && !after.text.contains(&acme.admin_token)
    );
}

#[tokio::test]
async fn assignments_outbox_and_pool_are_reported() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, _agents) = team_of_agents(&app, &acme, "Sales", pb::Strategy::RoundRobin, 1, Some(1)).await;
    for conversation in ["wa:1", "wa:2", "wa:2"] {
        let request = pb::AssignConversationRequest {
            workspace_id: acme.id.clone(),
            conversation_id: conversation.into(),
            team_id: team.id.clone(),
            ..Default::default()
        };
        app.assignments().assign_conversation(service(request)).await.expect("assign");
    }
    let scrape = app.metrics().await;
    // The one agent takes one conversation at most: the second waits, and asking again changes nothing.
    assert_eq!(scrape.sum("roster_assignments_total", &[("outcome", "assigned")]), 1.0);
    assert_eq!(scrape.sum("roster_assignments_total", &[("outcome", "queued")]), 1.0);
    assert_eq!(scrape.sum("roster_assignments_total", &[("outcome", "unchanged")]), 1.0);
    // No SMTP server is configured in tests: every welcome email is still waiting.
    let waiting = app.store.outbox_pending().await.expect("outbox");
    assert!(waiting >= 2, "the admin's and the agent's welcome emails: {waiting}");
    assert_eq!(scrape.sum("roster_outbox_backlog", &[]), waiting as f64);
    assert_eq!(scrape.sum("roster_database_up", &[]), 1.0);
    assert_eq!(scrape.sum("roster_db_pool_max_connections", &[]), f64::from(app.config.db_max_connections));
    assert!(scrape.has("roster_db_pool_connections"));
    let open = scrape.sum("roster_db_pool_connections", &[]);
    assert!(open >= 1.0 && open <= f64::from(app.config.db_max_connections), "{open}");
    if !app.db.is_postgres() {
        // The SQLite pool opens all its connections in the background after start, and keeps them.
        let max = f64::from(app.config.db_max_connections);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while app.metrics().await.sum("roster_db_pool_connections", &[]) < max {
            assert!(std::time::Instant::now() < deadline, "the SQLite pool did not open {max} connections");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
