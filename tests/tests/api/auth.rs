use roster_proto::v1 as pb;
use roster_tests::*;
use sea_orm::{ConnectionTrait, Database, Statement};
use sha2::{Digest, Sha256};
use std::time::Duration;
use tonic::Code;

fn who_am_i() -> pb::WhoAmIRequest {
    pb::WhoAmIRequest {}
}

#[tokio::test]
async fn login_returns_an_opaque_expiring_token_stored_only_as_its_hash() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;

    let response = app
        .auth()
        .login(pb::LoginRequest {
            workspace_slug: "acme".into(),
            email: "  ADMIN@acme.example ".into(),
            password: PASSWORD.into(),
        })
        .await
        .expect("login")
        .into_inner();

    let token = response.session_token;
    assert!(token.starts_with("rst_") && token.len() == 68, "256 random bits, hex: {token}");
    assert!(response.expire_time.expect("expiry").seconds > 0);
    assert_eq!(response.user.expect("user").id, acme.admin.id);
    let db = Database::connect(app.db.url.as_str()).await.expect("db");
    let rows = db
        .query_all_raw(Statement::from_string(db.get_database_backend(), "SELECT token_hash FROM sessions"))
        .await
        .expect("sessions");
    let stored: Vec<String> = rows.iter().map(|r| r.try_get::<String>("", "token_hash").expect("column")).collect();
    let hash: String = Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect();
    assert!(stored.contains(&hash));
    assert!(!stored.contains(&token));
}

#[tokio::test]
async fn unknown_email_wrong_password_and_unknown_workspace_answer_alike() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;

    let wrong_password = app.login("acme", "admin@acme.example", "not the password").await.expect_err("wrong");
    let unknown_email = app.login("acme", "nobody@acme.example", PASSWORD).await.expect_err("unknown");
    let unknown_workspace = app.login("globex", "admin@acme.example", PASSWORD).await.expect_err("no workspace");
    let too_long = app.login("acme", "admin@acme.example", &"x".repeat(100)).await.expect_err("over 72 bytes");

    for status in [&wrong_password, &unknown_email, &unknown_workspace, &too_long] {
        assert_status(status, Code::Unauthenticated, "INVALID_CREDENTIALS");
        assert_eq!(status.message(), wrong_password.message());
    }
    let actions = app.audit_actions(&acme.id).await;
    assert_eq!(actions.iter().filter(|a| *a == "login.failed").count(), 3, "{actions:?}");
}

#[tokio::test]
async fn malformed_login_fields_are_invalid_argument() {
    let app = spawn_app().await;
    let status = app.login("x", "", "").await.expect_err("invalid");
    assert_invalid(&status, "INVALID_FIELD", &["workspace_slug", "email", "password"]);
}

#[tokio::test]
async fn who_am_i_names_the_person_or_the_service() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;

    let person = app.auth().who_am_i(bearer(&acme.admin_token, who_am_i())).await.expect("person").into_inner();
    let svc = app.auth().who_am_i(service(who_am_i())).await.expect("service").into_inner();
    let nobody = app.auth().who_am_i(who_am_i()).await.expect_err("anonymous");
    let garbage =
        app.auth().who_am_i(bearer(&format!("rst_{}", "0".repeat(64)), who_am_i())).await.expect_err("unknown");

    match person.principal {
        Some(pb::who_am_i_response::Principal::User(user)) => assert_eq!(user.id, acme.admin.id),
        other => panic!("expected a user, got {other:?}"),
    }
    assert!(person.session_expire_time.is_some());
    assert_eq!(svc.principal, Some(pb::who_am_i_response::Principal::ServiceKeyName(SERVICE_NAME.into())));
    assert_status(&nobody, Code::Unauthenticated, "CREDENTIALS_MISSING");
    assert_status(&garbage, Code::Unauthenticated, "SESSION_INVALID");
}

#[tokio::test]
async fn a_malformed_authorization_header_is_unauthenticated() {
    let app = spawn_app().await;
    let mut request = tonic::Request::new(who_am_i());
    request.metadata_mut().insert("authorization", "Basic abc".parse().expect("header"));
    let status = app.auth().who_am_i(request).await.expect_err("not bearer");
    assert_status(&status, Code::Unauthenticated, "CREDENTIALS_MALFORMED");
}

#[tokio::test]
async fn logout_revokes_the_token_and_is_audited() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;

    app.auth().logout(bearer(&acme.admin_token, pb::LogoutRequest {})).await.expect("logout");
    let after = app.auth().who_am_i(bearer(&acme.admin_token, who_am_i())).await.expect_err("revoked");

    assert_status(&after, Code::Unauthenticated, "SESSION_INVALID");
    assert_eq!(app.audit_actions(&acme.id).await.last().map(String::as_str), Some("logout"));
    let svc = app.auth().logout(service(pb::LogoutRequest {})).await.expect_err("service keys have no session");
    assert_status(&svc, Code::PermissionDenied, "PERSON_REQUIRED");
}

#[tokio::test]
async fn sessions_expire() {
    let app = spawn_app_with(|c| c.session_ttl_secs = 1).await;
    let acme = app.workspace("acme").await;

    let expired = eventually(Duration::from_secs(5), || async {
        app.auth().who_am_i(bearer(&acme.admin_token, who_am_i())).await.err()
    })
    .await
    .expect("the session expires");

    assert_status(&expired, Code::Unauthenticated, "SESSION_INVALID");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    assert_eq!(app.store.purge_expired_sessions(now).await.expect("purge"), 1, "the expired row is deleted");
}

/// A password hashed at a lower cost than the server's is hashed again at the server's cost after
/// the next successful login, and still logs in; a failed login upgrades nothing.
#[tokio::test]
async fn a_hash_of_a_lower_cost_is_upgraded_at_the_next_successful_login() {
    use roster_identity::{BcryptCost, Email, FullName, Password, PasswordHash};
    let app = spawn_app_with(|config| config.bcrypt_cost = 5).await;
    let acme = app.workspace("acme").await;
    let password = Password::parse(PASSWORD).expect("password");
    let old = PasswordHash::new(&password, BcryptCost::new(4).expect("cost"), [9; 16]).expect("hash");
    let email = Email::parse("old@acme.example").expect("email");
    let ctx = roster_store::Context {
        actor: roster_store::Actor::Service("tests".into()),
        request_id: String::new(),
        now: 0,
    };
    let new = roster_store::NewUser {
        email: email.clone(),
        full_name: FullName::parse("Old Hash").expect("name"),
        role: roster_authz::RoleId::parse("agent").expect("role"),
    };
    let mail = roster_store::Mail { to: email, subject: "Welcome".into(), body: "Hello".into() };
    let welcome = roster_store::Welcome::Password(old, mail);
    let user = app.store.create_user(&ctx, &acme.id, new, welcome, None).await.expect("user").value;
    let cost = || async { app.store.password_hash(&acme.id, &user.id).await.expect("hash").cost() };

    app.login("acme", "old@acme.example", "wrong password!").await.expect_err("wrong");
    assert_eq!(cost().await, Some(4));
    app.login("acme", "old@acme.example", PASSWORD).await.expect("logs in");
    let upgraded =
        eventually(Duration::from_secs(10), || async { (cost().await == Some(5)).then_some(()) }).await.is_some();
    assert!(upgraded, "the hash is still of cost {:?}", cost().await);
    app.login("acme", "old@acme.example", PASSWORD).await.expect("logs in with the upgraded hash");
}
