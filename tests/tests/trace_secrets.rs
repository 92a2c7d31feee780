//! A whole session of calls with every log target at TRACE: the output holds no password, no
//! password hash, no session token and no service key.
//!
//! Its own test binary, because it installs the process-wide log subscriber.

use roster_proto::v1 as pb;
use roster_tests::*;
use sea_orm::{ConnectionTrait, Database, Statement};
use sha2::{Digest, Sha256};
use std::io::Write;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn column(url: &str, sql: &str, name: &str) -> Vec<String> {
    let db = Database::connect(url).await.expect("db");
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.expect("query");
    rows.iter().map(|r| r.try_get::<String>("", name).expect("column")).collect()
}

#[tokio::test]
async fn a_session_logged_at_trace_leaks_no_secret() {
    let capture = Capture::default();
    let sink = capture.clone();
    rosterd::init_tracing_with(rosterd::LogFormat::Json, "trace", move || sink.clone());
    let app = spawn_app().await;

    let acme = app.workspace("acme").await;
    let agent = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    let mut login = tonic::Request::new(pb::LoginRequest {
        workspace_slug: "acme".into(),
        email: "maria@acme.example".into(),
        password: PASSWORD.into(),
    });
    login.metadata_mut().insert("x-request-id", "trace-login-1".parse().expect("header"));
    let maria = app.auth().login(login).await.expect("login").into_inner().session_token;
    let wrong = "wrong-password-never-logged";
    app.login("acme", "maria@acme.example", wrong).await.expect_err("wrong password");
    let new_password = "new-password-never-logged";
    app.users()
        .change_password(bearer(
            &maria,
            pb::ChangePasswordRequest { current_password: PASSWORD.into(), new_password: new_password.into() },
        ))
        .await
        .expect("changed");
    app.users().list_users(bearer(&acme.admin_token, pb::ListUsersRequest::default())).await.expect("listed");
    app.auth().who_am_i(service(pb::WhoAmIRequest {})).await.expect("service");
    app.users()
        .deactivate_user(bearer(
            &acme.admin_token,
            pb::DeactivateUserRequest { workspace_id: String::new(), user_id: agent.id },
        ))
        .await
        .expect("deactivated");
    app.auth().logout(bearer(&acme.admin_token, pb::LogoutRequest {})).await.expect("logout");
    let hashes = column(&app.db.url, "SELECT password_hash FROM users", "password_hash").await;
    app.stop().await.expect("stopped");

    let output = String::from_utf8_lossy(&capture.0.lock().expect("lock")).into_owned();
    assert!(output.contains("login succeeded"), "the log was captured");
    assert!(output.contains("TRACE"), "TRACE events were on");
    // Every line a call logs carries its request id, the client's when it sent one.
    let login_lines: Vec<&str> = output.lines().filter(|l| l.contains("login succeeded")).collect();
    assert!(login_lines.iter().all(|l| l.contains(r#""request_id":""#)), "{login_lines:?}");
    assert!(login_lines.iter().any(|l| l.contains(r#""request_id":"trace-login-1""#)), "{login_lines:?}");
    let call_lines: Vec<&str> = output.lines().filter(|l| l.contains(r#""name":"rpc""#)).collect();
    assert!(
        call_lines.len() > 10 && call_lines.iter().all(|l| l.contains(r#""request_id":""#)),
        "{} lines",
        call_lines.len()
    );
    let mut secrets = vec![PASSWORD.to_owned(), wrong.to_owned(), new_password.to_owned(), SERVICE_KEY.to_owned()];
    secrets.extend([acme.admin_token.clone(), maria.clone()]);
    // The stored form of each session token, too.
    for token in [&acme.admin_token, &maria] {
        secrets.push(Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect());
    }
    secrets.extend(hashes);
    for secret in &secrets {
        assert!(!output.contains(secret.as_str()), "a secret is in the log: {}…", &secret[..6]);
    }
}
