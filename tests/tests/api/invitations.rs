//! Invitations by link: a user created without a password holds a seat, cannot log in, and
//! chooses a password with the single-use link of their welcome email.

use roster_proto::v1 as pb;
use roster_tests::smtp::{Mode, SmtpSink};
use roster_tests::*;
use std::time::Duration;
use tonic::Code;

pub(crate) const NEW_PASSWORD: &str = "my own chosen password";

/// A server delivering to `sink`, its links pointing at a page of the inbox.
pub(crate) async fn app_with_mail(sink: &SmtpSink, configure: impl FnOnce(&mut rosterd::Config)) -> TestApp {
    let url = sink.url();
    spawn_app_with(|c| {
        c.smtp_url = Some(url.parse().expect("smtp url"));
        c.set_password_url = "https://inbox.acme.test/set-password".into();
        c.outbox_retry_ms = 50;
        configure(c);
    })
    .await
}

/// The token of the `nth` (from 0) email with a link that `to` received.
pub(crate) async fn link_sent_to(sink: &SmtpSink, to: &str, nth: usize) -> String {
    let rcpt = format!("<{to}>");
    let tokens = eventually(Duration::from_secs(15), || async {
        let tokens: Vec<String> =
            sink.received().iter().filter(|m| m.rcpt_to == [rcpt.clone()]).filter_map(|m| m.link_token()).collect();
        (tokens.len() > nth).then_some(tokens)
    })
    .await;
    tokens.unwrap_or_else(|| panic!("no link #{nth} to {to}: {:?}", sink.received()))[nth].clone()
}

pub(crate) async fn invite(app: &TestApp, token: &str, email: &str, role: &str) -> Result<pb::User, tonic::Status> {
    let request = pb::CreateUserRequest {
        email: email.into(),
        full_name: format!("Invited {email}"),
        role: role.into(),
        ..Default::default()
    };
    Ok(app.users().create_user(bearer(token, request)).await?.into_inner().user.expect("user"))
}

pub(crate) async fn use_link(app: &TestApp, token: &str, password: &str) -> Result<pb::User, tonic::Status> {
    let request = pb::SetPasswordWithTokenRequest { token: token.into(), new_password: password.into() };
    Ok(app.auth().set_password_with_token(request).await?.into_inner().user.expect("user"))
}

async fn seats_used(app: &TestApp, workspace_id: &str) -> i32 {
    let request = pb::GetSubscriptionRequest { workspace_id: workspace_id.into() };
    app.billing()
        .get_subscription(service(request))
        .await
        .expect("subscription")
        .into_inner()
        .subscription
        .unwrap()
        .seats_used
}

async fn allowed(app: &TestApp, workspace_id: &str, user_id: &str) -> pb::Decision {
    let request = pb::CheckPermissionRequest {
        workspace_id: workspace_id.into(),
        user_id: user_id.into(),
        permission: "templates.read".into(),
        resource: None,
    };
    app.authz().check_permission(service(request)).await.expect("check").into_inner().decision.expect("decision")
}

#[tokio::test]
async fn an_invited_user_holds_a_seat_cannot_log_in_and_accepts_with_the_emailed_link() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |_| {}).await;
    let acme = app.workspace("acme").await;
    let seats = seats_used(&app, &acme.id).await;

    let ivan = invite(&app, &acme.admin_token, "Ivan@Acme.example", "agent").await.expect("invited");
    assert_eq!(ivan.status(), pb::UserStatus::Invited);
    assert_eq!(ivan.email, "ivan@acme.example");
    assert_eq!(seats_used(&app, &acme.id).await, seats + 1, "an invitation holds a seat");
    let listed = pb::ListUsersRequest { status: pb::UserStatus::Invited as i32, ..Default::default() };
    let listed = app.users().list_users(bearer(&acme.admin_token, listed)).await.expect("list").into_inner().users;
    assert_eq!(listed.iter().map(|u| u.id.as_str()).collect::<Vec<_>>(), [ivan.id.as_str()]);
    // Not in yet: no password opens the account, and every check about them is denied.
    for password in ["", PASSWORD, NEW_PASSWORD] {
        if let Err(status) = app.login("acme", &ivan.email, password).await {
            assert!(matches!(status.code(), Code::Unauthenticated | Code::InvalidArgument), "{status:?}");
        } else {
            panic!("an invited user logged in with {password:?}");
        }
    }
    assert!(!allowed(&app, &acme.id, &ivan.id).await.allowed);

    let token = link_sent_to(&sink, &ivan.email, 0).await;
    let mail = sink.received().into_iter().find(|m| m.rcpt_to == ["<ivan@acme.example>"]).expect("the invitation");
    let body = mail.body();
    assert!(body.contains(&format!("https://inbox.acme.test/set-password?token={token}")), "{body}");
    assert!(body.contains("for 7 days") && body.contains("Workspace: acme"), "{body}");
    assert_eq!(mail.header("Subject").as_deref(), Some("You are invited to acme Ltd on Roster"));
    // Once sent, the token is kept only as its hash.
    let outbox = app.store.outbox_entries(&acme.id).await.expect("outbox");
    let entry = eventually(Duration::from_secs(5), || async {
        let entries = app.store.outbox_entries(&acme.id).await.expect("outbox");
        entries.into_iter().find(|e| e.recipient == ivan.email && e.link.is_none())
    })
    .await
    .unwrap_or_else(|| panic!("the link is dropped once sent: {outbox:?}"));
    assert!(!entry.body.contains(&token));
    let fingerprint = app.fingerprint(true).await;
    let holding = fingerprint.tables_containing(&token[4..]).await;
    assert!(holding.is_empty(), "the token is stored only as a hash, but {holding:?} hold it");

    // The password's rules apply; a refused one leaves the link usable.
    let short = use_link(&app, &token, "short").await.expect_err("too short");
    assert_invalid(&short, "INVALID_FIELD", &["new_password"]);
    let accepted = use_link(&app, &token, NEW_PASSWORD).await.expect("accepted");
    assert_eq!((accepted.id.as_str(), accepted.status()), (ivan.id.as_str(), pb::UserStatus::Active));
    assert_eq!(seats_used(&app, &acme.id).await, seats + 1, "the same seat");
    app.login("acme", "ivan@acme.example", NEW_PASSWORD).await.expect("signs in with their own password");
    assert!(allowed(&app, &acme.id, &ivan.id).await.allowed);
    let again = use_link(&app, &token, "another password 1").await.expect_err("single use");
    assert_status(&again, Code::FailedPrecondition, "LINK_INVALID");

    let actions = app.audit_actions(&acme.id).await;
    let accepted = actions.iter().filter(|a| *a == "user.invitation_accepted").count();
    assert_eq!(accepted, 1, "{actions:?}");
    let events = events_of(&app, &acme.id, &[pb::EventType::UserCreated, pb::EventType::UserActivated], 3).await;
    let ivans: Vec<(pb::EventType, pb::UserStatus)> = events
        .iter()
        .filter_map(|e| match &e.payload {
            Some(pb::event::Payload::User(u)) if u.user_id == ivan.id => Some((e.r#type(), u.status())),
            _ => None,
        })
        .collect();
    assert_eq!(
        ivans,
        [(pb::EventType::UserCreated, pb::UserStatus::Invited), (pb::EventType::UserActivated, pb::UserStatus::Active)]
    );
}

#[tokio::test]
async fn a_resent_invitation_voids_the_old_link_and_deactivation_voids_any() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |_| {}).await;
    let acme = app.workspace("acme").await;
    let ivan = invite(&app, &acme.admin_token, "ivan@acme.example", "agent").await.expect("invited");
    let first = link_sent_to(&sink, &ivan.email, 0).await;

    let resend = pb::ResendInvitationRequest { user_id: ivan.id.clone(), ..Default::default() };
    let resent = app.users().resend_invitation(bearer(&acme.admin_token, resend.clone())).await.expect("resent");
    assert_eq!(resent.into_inner().user.expect("user").status(), pb::UserStatus::Invited);
    let second = link_sent_to(&sink, &ivan.email, 1).await;
    assert_ne!(first, second);
    let voided = use_link(&app, &first, NEW_PASSWORD).await.expect_err("replaced");
    assert_status(&voided, Code::FailedPrecondition, "LINK_INVALID");

    // Deactivated like anyone else: the seat is freed and the link stops working.
    let deactivate = pb::DeactivateUserRequest { user_id: ivan.id.clone(), ..Default::default() };
    app.users().deactivate_user(bearer(&acme.admin_token, deactivate)).await.expect("deactivated");
    let gone = use_link(&app, &second, NEW_PASSWORD).await.expect_err("deactivated");
    assert_status(&gone, Code::FailedPrecondition, "LINK_INVALID");
    let refused = app.users().resend_invitation(bearer(&acme.admin_token, resend.clone())).await.expect_err("no");
    assert_status(&refused, Code::FailedPrecondition, "USER_NOT_ACTIVE");
    // Back, still without a password: invited again, once the invitation is sent again.
    let reactivate = pb::ReactivateUserRequest { user_id: ivan.id.clone(), ..Default::default() };
    let back = app.users().reactivate_user(bearer(&acme.admin_token, reactivate)).await.expect("reactivated");
    assert_eq!(back.into_inner().user.expect("user").status(), pb::UserStatus::Invited);
    app.users().resend_invitation(bearer(&acme.admin_token, resend.clone())).await.expect("resent");
    let third = link_sent_to(&sink, &ivan.email, 2).await;
    use_link(&app, &third, NEW_PASSWORD).await.expect("accepted");

    // Now they have a password: nothing to resend.
    let done = app.users().resend_invitation(bearer(&acme.admin_token, resend)).await.expect_err("accepted already");
    assert_status(&done, Code::FailedPrecondition, "NOT_INVITED");
    let sent = events_of(&app, &acme.id, &[pb::EventType::UserInvitationSent], 2).await;
    assert_eq!(sent.len(), 2, "{sent:?}");
}

#[tokio::test]
async fn an_invitation_needs_a_free_seat() {
    let app = spawn_app().await;
    let trial = app.workspace_on_trial("trial").await;
    let full =
        invite(&app, &trial.admin_token, "ivan@trial.example", "agent").await.expect_err("the one seat is taken");
    assert_status(&full, Code::ResourceExhausted, "SEAT_LIMIT_REACHED");
    let growth = pb::ChangePlanRequest { workspace_id: trial.id.clone(), plan: pb::Plan::Growth as i32 };
    app.billing().change_plan(service(growth)).await.expect("growth");
    for i in 0..4 {
        invite(&app, &trial.admin_token, &format!("agent-{i}@trial.example"), "agent").await.expect("a seat");
    }
    let full = invite(&app, &trial.admin_token, "fifth@trial.example", "agent").await.expect_err("invited hold seats");
    assert_status(&full, Code::ResourceExhausted, "SEAT_LIMIT_REACHED");
    let back = pb::ChangePlanRequest { workspace_id: trial.id.clone(), plan: pb::Plan::FreeTrial as i32 };
    let back = app.billing().change_plan(service(back)).await.expect_err("five seats in use");
    assert_status(&back, Code::FailedPrecondition, "SEATS_IN_USE");
}

#[tokio::test]
async fn an_invitation_link_expires() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |c| c.invitation_ttl_secs = 1).await;
    let acme = app.workspace("acme").await;
    let ivan = invite(&app, &acme.admin_token, "ivan@acme.example", "agent").await.expect("invited");
    let token = link_sent_to(&sink, &ivan.email, 0).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = use_link(&app, &token, NEW_PASSWORD).await.expect_err("expired");
    assert_status(&late, Code::FailedPrecondition, "LINK_EXPIRED");
    assert!(app.login("acme", &ivan.email, NEW_PASSWORD).await.is_err());
}

/// Two uses of one link at the same moment, on two processes: exactly one sets the password.
#[tokio::test]
async fn a_link_used_twice_at_once_on_two_processes_works_exactly_once() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |_| {}).await;
    let peer = app.spawn_peer_process().await;
    let acme = app.workspace("acme").await;
    for round in 0..5 {
        let email = format!("twice-{round}@acme.example");
        invite(&app, &acme.admin_token, &email, "agent").await.expect("invited");
        let token = link_sent_to(&sink, &email, 0).await;
        let (first, second) = (format!("first password {round}"), format!("second password {round}"));
        let here = pb::SetPasswordWithTokenRequest { token: token.clone(), new_password: first.clone() };
        let there = pb::SetPasswordWithTokenRequest { token, new_password: second.clone() };
        let (mut near, mut far) = (app.auth(), peer.auth());
        let (a, b) = tokio::join!(near.set_password_with_token(here), far.set_password_with_token(there));
        let winner = match (&a, &b) {
            (Ok(_), Err(lost)) => {
                assert_status(lost, Code::FailedPrecondition, "LINK_INVALID");
                first
            }
            (Err(lost), Ok(_)) => {
                assert_status(lost, Code::FailedPrecondition, "LINK_INVALID");
                second
            }
            other => panic!("round {round}: not exactly one success: {other:?}"),
        };
        app.login("acme", &email, &winner).await.expect("the winner's password holds");
    }
}

#[tokio::test]
async fn a_corrected_email_is_unique_audited_and_re_sends_a_pending_invitation() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |_| {}).await;
    let acme = app.workspace("acme").await;
    let ivan = invite(&app, &acme.admin_token, "ivan@acme.exmaple", "agent").await.expect("typo");
    let typo = link_sent_to(&sink, &ivan.email, 0).await;

    let update = |email: &str| pb::UpdateUserRequest {
        workspace_id: String::new(),
        user: Some(pb::User { id: ivan.id.clone(), email: email.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["email".into()] }),
    };
    let taken = app.users().update_user(bearer(&acme.admin_token, update(" ADMIN@acme.example "))).await;
    assert_status(&taken.expect_err("the admin's"), Code::AlreadyExists, "EMAIL_TAKEN");
    let bad = app.users().update_user(bearer(&acme.admin_token, update("ivan@"))).await.expect_err("no domain");
    assert_invalid(&bad, "INVALID_FIELD", &["user.email"]);

    let fixed = app.users().update_user(bearer(&acme.admin_token, update("Ivan@Acme.example"))).await.expect("fixed");
    let fixed = fixed.into_inner().user.expect("user");
    assert_eq!((fixed.email.as_str(), fixed.status()), ("ivan@acme.example", pb::UserStatus::Invited));
    let voided = use_link(&app, &typo, NEW_PASSWORD).await.expect_err("sent to the wrong address");
    assert_status(&voided, Code::FailedPrecondition, "LINK_INVALID");
    let token = link_sent_to(&sink, "ivan@acme.example", 0).await;
    use_link(&app, &token, NEW_PASSWORD).await.expect("accepted at the right address");
    app.login("acme", "ivan@acme.example", NEW_PASSWORD).await.expect("signs in");

    let changed = events_of(&app, &acme.id, &[pb::EventType::UserEmailChanged], 1).await;
    let Some(pb::event::Payload::User(change)) = &changed[0].payload else { panic!("{changed:?}") };
    assert_eq!((change.email.as_str(), change.previous_email.as_str()), ("ivan@acme.example", "ivan@acme.exmaple"));
    let audit = pb::ListAuditEventsRequest { action: "user.updated".into(), ..Default::default() };
    let audit = app.audit().list_audit_events(bearer(&acme.admin_token, audit)).await.expect("audit").into_inner();
    let details = &audit.events[0].details;
    assert_eq!(details.get("previous_email").map(String::as_str), Some("ivan@acme.exmaple"), "{details:?}");
    assert_eq!(details.get("invitation_sent").map(String::as_str), Some("true"));
}
