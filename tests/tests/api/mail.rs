use roster_store::OutboxStatus;
use roster_tests::smtp::{Mode, SmtpSink};
use roster_tests::*;
use std::time::Duration;

async fn statuses(app: &TestApp, workspace_id: &str) -> Vec<OutboxStatus> {
    app.store.outbox_entries(workspace_id).await.expect("outbox").into_iter().map(|e| e.status).collect()
}

async fn all_sent(app: &TestApp, workspace_id: &str, n: usize) -> bool {
    let s = statuses(app, workspace_id).await;
    s.len() == n && s.iter().all(|s| *s == OutboxStatus::Sent)
}

#[tokio::test]
async fn each_new_user_gets_exactly_one_welcome_email_without_the_password() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let url = sink.url();
    let app = spawn_app_with(|c| {
        c.smtp_url = Some(url.parse().expect("smtp url"));
        c.sign_in_url = "https://inbox.acme.test/sign-in".into();
    })
    .await;
    let acme = app.workspace("acme").await;
    app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");

    let sent = eventually(Duration::from_secs(10), || async { all_sent(&app, &acme.id, 2).await.then_some(()) }).await;
    assert!(sent.is_some(), "outbox: {:?}", statuses(&app, &acme.id).await);

    let received = sink.received();
    assert_eq!(received.len(), 2);
    let maria = received.iter().find(|m| m.rcpt_to == ["<maria@acme.example>"]).expect("maria's email");
    let body = maria.body();
    assert!(body.contains("Workspace: acme"), "{body}");
    assert!(body.contains("Email: maria@acme.example"), "{body}");
    assert!(body.contains("https://inbox.acme.test/sign-in"), "{body}");
    assert!(!maria.data.contains(PASSWORD), "the password is never sent");
    assert_eq!(maria.header("Subject").as_deref(), Some("Welcome to acme Ltd on Roster"));
    assert!(maria.header("Message-ID").is_some_and(|id| id.ends_with("@roster>")));
}

#[tokio::test]
async fn emails_wait_while_smtp_is_down_and_arrive_once_when_it_is_back() {
    // A port nobody listens on yet.
    let port = unused_port();
    let app = spawn_app_with(|c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}").parse().expect("smtp url"));
        c.outbox_retry_ms = 50;
        c.outbox_max_attempts = 100;
    })
    .await;
    let acme = app.workspace("acme").await;
    let failed = eventually(Duration::from_secs(10), || async {
        let entries = app.store.outbox_entries(&acme.id).await.expect("outbox");
        entries.iter().any(|e| e.attempts >= 2 && e.last_error.is_some()).then_some(())
    })
    .await;
    assert!(failed.is_some(), "delivery was attempted and failed while SMTP was down");
    assert_eq!(statuses(&app, &acme.id).await, [OutboxStatus::Pending]);

    let sink = SmtpSink::start_on(format!("127.0.0.1:{port}").parse().expect("addr"), Mode::Accept).await;
    let sent = eventually(Duration::from_secs(20), || async { all_sent(&app, &acme.id, 1).await.then_some(()) }).await;

    assert!(sent.is_some(), "outbox: {:?}", app.store.outbox_entries(&acme.id).await);
    // Another worker round must not send it again.
    app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    let second =
        eventually(Duration::from_secs(10), || async { all_sent(&app, &acme.id, 2).await.then_some(()) }).await;
    assert!(second.is_some());
    let to_admin = sink.received().iter().filter(|m| m.rcpt_to == ["<admin@acme.example>"]).count();
    assert_eq!(to_admin, 1, "delivered exactly once");
}

#[tokio::test]
async fn a_permanent_refusal_or_too_many_attempts_abandon_the_email() {
    let sink = SmtpSink::start(Mode::RejectPermanently).await;
    let url = sink.url();
    let app = spawn_app_with(|c| c.smtp_url = Some(url.parse().expect("smtp url"))).await;
    let acme = app.workspace("acme").await;
    let abandoned = eventually(Duration::from_secs(10), || async {
        (statuses(&app, &acme.id).await == [OutboxStatus::Abandoned]).then_some(())
    })
    .await;
    assert!(abandoned.is_some(), "a 550 abandons at once: {:?}", app.store.outbox_entries(&acme.id).await);

    // A server that hangs up on every connection: each attempt fails at once, and the port stays
    // taken, so that no other test's server can answer on it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let port = listener.local_addr().expect("port").port();
    let _hangs_up = tokio::spawn(async move {
        while let Ok((connection, _)) = listener.accept().await {
            drop(connection);
        }
    });
    let app = spawn_app_with(|c| {
        c.smtp_url = Some(format!("smtp://127.0.0.1:{port}").parse().expect("smtp url"));
        c.outbox_max_attempts = 3;
        c.outbox_retry_ms = 20;
    })
    .await;
    let globex = app.workspace("globex").await;
    let gave_up = eventually(Duration::from_secs(10), || async {
        let entries = app.store.outbox_entries(&globex.id).await.expect("outbox");
        (entries.len() == 1 && entries[0].status == OutboxStatus::Abandoned).then(|| entries[0].attempts)
    })
    .await;
    assert_eq!(gave_up, Some(3), "abandoned after exactly the configured attempts");
}

#[tokio::test]
async fn without_smtp_nothing_is_lost() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    assert_eq!(statuses(&app, &acme.id).await, [OutboxStatus::Pending, OutboxStatus::Pending]);
}

#[tokio::test]
async fn an_email_whose_delivery_could_not_be_recorded_is_recorded_later_not_sent_again() {
    let sink = SmtpSink::start_gated().await;
    let url = sink.url();
    let app = spawn_app_with(|c| {
        c.smtp_url = Some(url.parse().expect("smtp url"));
        c.db_timeout_ms = 300;
        c.outbox_lease_ms = 300;
        c.outbox_retry_ms = 50;
    })
    .await;
    let mut workspaces = app.workspaces();
    let created = workspaces.create_workspace(service(new_workspace("acme")));
    let workspace_id = created.await.expect("created").into_inner().workspace.expect("workspace").id;
    tokio::time::timeout(Duration::from_secs(10), sink.data_arrived()).await.expect("the worker sends");

    // The SMTP server accepts the message while the outbox cannot be written: the worker's
    // bookkeeping times out, and the message's lease runs out while the lock is held.
    let lock = OutboxLock::take(&app.db.url).await;
    sink.open();
    let accepted = eventually(Duration::from_secs(10), || async { (sink.received().len() == 1).then_some(()) }).await;
    assert!(accepted.is_some(), "the SMTP server accepted the message");
    // Waiting out time, not state: the bookkeeping timeout (300 ms) and the lease (300 ms).
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    lock.release().await;

    let sent =
        eventually(Duration::from_secs(10), || async { all_sent(&app, &workspace_id, 1).await.then_some(()) }).await;
    assert!(
        sent.is_some(),
        "recorded as sent once the database is back: {:?}",
        app.store.outbox_entries(&workspace_id).await
    );
    assert_eq!(sink.received().len(), 1, "sent exactly once");
}
