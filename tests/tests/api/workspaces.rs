use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::Code;

fn create_request(slug: &str, email: &str, password: &str) -> pb::CreateWorkspaceRequest {
    let mut request = new_workspace(slug);
    request.name = "Acme Support".into();
    request.admin =
        Some(pb::NewAdmin { email: email.into(), full_name: "Ada Admin".into(), password: password.into() });
    request
}

#[tokio::test]
async fn a_service_key_creates_a_workspace_with_its_first_admin_on_the_free_trial() {
    let app = spawn_app().await;

    let response = app
        .workspaces()
        .create_workspace(service(create_request("acme", "Ada@Acme.Example", PASSWORD)))
        .await
        .expect("created")
        .into_inner();

    let workspace = response.workspace.expect("workspace");
    let admin = response.admin.expect("admin");
    assert_eq!(workspace.slug, "acme");
    assert_eq!(workspace.plan(), pb::Plan::FreeTrial);
    assert_eq!((workspace.seat_limit, workspace.seats_used), (1, 1));
    assert_eq!(admin.email, "ada@acme.example");
    assert_eq!(admin.role, "admin");
    assert_eq!(admin.workspace_id, workspace.id);
    assert_eq!(app.audit_actions(&workspace.id).await, ["workspace.created", "user.created"]);
    assert_eq!(app.store.outbox_entries(&workspace.id).await.expect("outbox").len(), 1);
    app.login("acme", "ada@acme.example", PASSWORD).await.expect("the first admin can log in");
}

#[tokio::test]
async fn a_taken_slug_is_already_exists_and_writes_nothing() {
    let app = spawn_app().await;
    let first = app.workspace("acme").await;
    let before = app.footprint(&first.id).await;

    let status = app
        .workspaces()
        .create_workspace(service(create_request("ACME", "other@acme.example", PASSWORD)))
        .await
        .expect_err("slug taken");

    assert_status(&status, Code::AlreadyExists, "SLUG_TAKEN");
    assert_eq!(app.footprint(&first.id).await, before);
}

#[tokio::test]
async fn bad_fields_are_all_named_at_once() {
    let app = spawn_app().await;
    let mut request = create_request("a", "not-an-email", "123456789");
    request.name = String::new();

    let status = app.workspaces().create_workspace(service(request)).await.expect_err("invalid");

    assert_invalid(&status, "INVALID_FIELD", &["slug", "name", "admin.email", "admin.password"]);
    assert!(!app.store.has_workspaces().await.expect("store"), "nothing written");
}

#[tokio::test]
async fn a_password_over_72_bytes_is_refused_not_truncated() {
    let app = spawn_app().await;
    let status = app
        .workspaces()
        .create_workspace(service(create_request("acme", "ada@acme.example", &"x".repeat(73))))
        .await
        .expect_err("too long");
    assert_invalid(&status, "INVALID_FIELD", &["admin.password"]);
    assert!(status.message().contains("72 bytes"), "{status:?}");
}

#[tokio::test]
async fn only_service_keys_create_workspaces() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;

    let as_admin = app
        .workspaces()
        .create_workspace(bearer(&acme.admin_token, create_request("globex", "a@globex.example", PASSWORD)))
        .await
        .expect_err("people cannot create workspaces");
    let anonymous = app
        .workspaces()
        .create_workspace(create_request("globex", "a@globex.example", PASSWORD))
        .await
        .expect_err("no credentials");
    let wrong_key = app
        .workspaces()
        .create_workspace(bearer("not-the-key-0123456789", create_request("globex", "a@globex.example", PASSWORD)))
        .await
        .expect_err("wrong key");

    assert_status(&as_admin, Code::PermissionDenied, "SERVICE_KEY_REQUIRED");
    assert_status(&anonymous, Code::Unauthenticated, "CREDENTIALS_MISSING");
    assert_status(&wrong_key, Code::Unauthenticated, "CREDENTIALS_INVALID");
}

#[tokio::test]
async fn a_retry_with_the_same_request_id_returns_the_first_answer() {
    let app = spawn_app().await;
    let mut request = create_request("acme", "ada@acme.example", PASSWORD);
    request.request_id = "create-acme-1".into();

    let first = app.workspaces().create_workspace(service(request.clone())).await.expect("first").into_inner();
    let retry = app.workspaces().create_workspace(service(request)).await.expect("retry").into_inner();

    assert_eq!(first.workspace.expect("workspace").id, retry.workspace.expect("workspace").id);
    assert_eq!(first.admin.expect("admin").id, retry.admin.expect("admin").id);
}

#[tokio::test]
async fn people_read_their_own_workspace_only() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let globex = app.workspace("globex").await;

    let own = app
        .workspaces()
        .get_workspace(bearer(&acme.admin_token, pb::GetWorkspaceRequest { workspace_id: String::new() }))
        .await
        .expect("own workspace")
        .into_inner();
    let other = app
        .workspaces()
        .get_workspace(bearer(&acme.admin_token, pb::GetWorkspaceRequest { workspace_id: globex.id.clone() }))
        .await
        .expect_err("another workspace");
    let missing = app
        .workspaces()
        .get_workspace(service(pb::GetWorkspaceRequest { workspace_id: UNKNOWN_ID.into() }))
        .await
        .expect_err("unknown id");
    let unnamed = app
        .workspaces()
        .get_workspace(service(pb::GetWorkspaceRequest { workspace_id: String::new() }))
        .await
        .expect_err("a service key must name the workspace");

    assert_eq!(own.workspace.expect("workspace").id, acme.id);
    assert_status(&other, Code::PermissionDenied, "WORKSPACE_MISMATCH");
    assert!(!other.message().contains(&globex.id));
    assert_status(&missing, Code::NotFound, "WORKSPACE_NOT_FOUND");
    assert_invalid(&unnamed, "INVALID_FIELD", &["workspace_id"]);
}
