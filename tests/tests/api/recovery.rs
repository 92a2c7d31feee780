//! Account recovery: a self-service reset that tells nothing about who has an account, resets by
//! a manager, and passwords set by a manager.

use crate::invitations::{NEW_PASSWORD, app_with_mail, invite, link_sent_to, use_link};
use roster_proto::v1 as pb;
use roster_tests::smtp::{Mode, SmtpSink};
use roster_tests::*;
use std::time::Duration;
use tonic::Code;
use tonic_types::StatusExt;

async fn request_reset(app: &TestApp, slug: &str, email: &str) -> Result<(), tonic::Status> {
    let request = pb::RequestPasswordResetRequest { workspace_slug: slug.into(), email: email.into() };
    app.auth().request_password_reset(request).await.map(|_| ())
}

async fn who_am_i(app: &TestApp, token: &str) -> Result<pb::WhoAmIResponse, tonic::Status> {
    Ok(app.auth().who_am_i(bearer(token, pb::WhoAmIRequest {})).await?.into_inner())
}

#[tokio::test]
async fn a_reset_request_answers_alike_for_anyone_and_mails_only_an_active_account() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |_| {}).await;
    let acme = app.workspace("acme").await;
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    let gone = app.create_user(&acme.admin_token, "gone@acme.example", "agent").await.expect("gone");
    let deactivate = pb::DeactivateUserRequest { user_id: gone.id.clone(), ..Default::default() };
    app.users().deactivate_user(bearer(&acme.admin_token, deactivate)).await.expect("deactivated");
    invite(&app, &acme.admin_token, "ivan@acme.example", "agent").await.expect("invited");
    let session = app.login("acme", "maria@acme.example", PASSWORD).await.expect("maria's session");
    // Everyone's welcome email first, so that what follows is only what the requests sent.
    link_sent_to(&sink, "ivan@acme.example", 0).await;
    let before = eventually(Duration::from_secs(10), || async {
        let n = sink.received().len();
        (n == 4).then_some(n)
    })
    .await
    .expect("four welcome emails");

    for (slug, email) in [
        ("acme", "maria@acme.example"),
        ("acme", "nobody@acme.example"),
        ("nowhere", "maria@acme.example"),
        ("acme", "gone@acme.example"),
        ("acme", "ivan@acme.example"),
    ] {
        request_reset(&app, slug, email).await.unwrap_or_else(|s| panic!("{slug} {email}: {s:?}"));
    }
    let token = link_sent_to(&sink, "maria@acme.example", 0).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent: Vec<Vec<String>> = sink.received()[before..].iter().map(|m| m.rcpt_to.clone()).collect();
    assert_eq!(sent, [["<maria@acme.example>"]], "only the active account is mailed");
    let mail = sink.received().into_iter().find(|m| m.link_token().as_deref() == Some(token.as_str())).unwrap();
    assert!(mail.body().contains("hopefully you") && mail.body().contains("for 30 minutes"), "{}", mail.body());
    assert!(!mail.data.contains(PASSWORD));
    who_am_i(&app, &session).await.expect("asking for a reset signs nobody out");

    let reset = use_link(&app, &token, NEW_PASSWORD).await.expect("reset");
    assert_eq!((reset.id.as_str(), reset.status()), (maria.id.as_str(), pb::UserStatus::Active));
    let signed_out = who_am_i(&app, &session).await.expect_err("every session revoked");
    assert_status(&signed_out, Code::Unauthenticated, "SESSION_INVALID");
    assert!(app.login("acme", "maria@acme.example", PASSWORD).await.is_err(), "the old password is gone");
    app.login("acme", "maria@acme.example", NEW_PASSWORD).await.expect("the new one works");
    let again = use_link(&app, &token, "yet another password").await.expect_err("single use");
    assert_status(&again, Code::FailedPrecondition, "LINK_INVALID");

    let actions = app.audit_actions(&acme.id).await;
    assert!(
        actions.contains(&"user.password_reset_sent".to_owned()) && actions.contains(&"user.password_reset".to_owned())
    );
    let events =
        events_of(&app, &acme.id, &[pb::EventType::UserPasswordResetSent, pb::EventType::UserPasswordReset], 2).await;
    let kinds: Vec<pb::EventType> = events.iter().map(|e| e.r#type()).collect();
    assert_eq!(kinds, [pb::EventType::UserPasswordResetSent, pb::EventType::UserPasswordReset]);
    let Some(pb::event::Payload::User(change)) = &events[1].payload else { panic!("{events:?}") };
    assert_eq!((change.user_id.as_str(), change.sessions_revoked), (maria.id.as_str(), 1));
}

#[tokio::test]
async fn a_newer_reset_link_voids_the_older_and_links_expire() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |c| c.reset_ttl_secs = 1).await;
    let acme = app.workspace("acme").await;
    app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    request_reset(&app, "acme", "maria@acme.example").await.expect("first");
    let first = link_sent_to(&sink, "maria@acme.example", 0).await;
    request_reset(&app, "acme", "MARIA@acme.example").await.expect("second");
    let second = link_sent_to(&sink, "maria@acme.example", 1).await;
    let older = use_link(&app, &first, NEW_PASSWORD).await.expect_err("replaced");
    assert_status(&older, Code::FailedPrecondition, "LINK_INVALID");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let late = use_link(&app, &second, NEW_PASSWORD).await.expect_err("expired");
    assert_status(&late, Code::FailedPrecondition, "LINK_EXPIRED");
    app.login("acme", "maria@acme.example", PASSWORD).await.expect("the password stays as it was");
    let malformed = use_link(&app, "rst_not-a-link", NEW_PASSWORD).await.expect_err("malformed");
    assert_invalid(&malformed, "INVALID_FIELD", &["token"]);
    let unknown = use_link(&app, &format!("rpl_{}", "0".repeat(64)), NEW_PASSWORD).await.expect_err("unknown");
    assert_status(&unknown, Code::FailedPrecondition, "LINK_INVALID");
}

#[tokio::test]
async fn reset_requests_are_throttled_per_account_and_per_address_alike_for_unknown_accounts() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |c| {
        c.reset_max_per_account = 2;
        c.reset_max_per_address = 5;
    })
    .await;
    let acme = app.workspace("acme").await;
    app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    for email in ["maria@acme.example", "nobody@acme.example"] {
        request_reset(&app, "acme", email).await.expect("1");
        request_reset(&app, "acme", email).await.expect("2");
        let third = request_reset(&app, "acme", email).await.expect_err("a third for the same account");
        assert_status(&third, Code::ResourceExhausted, "RESET_THROTTLED");
        assert!(third.get_error_details().retry_info().is_some_and(|r| r.retry_delay.is_some()));
    }
    // Four counted from this address so far; one more fits, then none, whatever the account.
    request_reset(&app, "acme", "third@acme.example").await.expect("5");
    let sixth = request_reset(&app, "acme", "fourth@acme.example").await.expect_err("the address's limit");
    assert_status(&sixth, Code::ResourceExhausted, "RESET_THROTTLED");
    let bad = request_reset(&app, "acme", "not an email").await.expect_err("invalid");
    assert_invalid(&bad, "INVALID_FIELD", &["email"]);
}

#[tokio::test]
async fn a_manager_resets_or_sets_a_password_by_the_no_escalation_rule_and_signs_the_user_out() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |_| {}).await;
    let acme = app.workspace("acme").await;
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    app.create_user(&acme.admin_token, "sam@acme.example", "supervisor").await.expect("sam");
    let sam = app.login("acme", "sam@acme.example", PASSWORD).await.expect("sam signs in");
    let maria_session = app.login("acme", "maria@acme.example", PASSWORD).await.expect("maria signs in");

    // A reset link by the supervisor: Maria is signed out at once and mailed a link.
    let send = pb::SendPasswordResetRequest { user_id: maria.id.clone(), ..Default::default() };
    app.users().send_password_reset(bearer(&sam, send.clone())).await.expect("sent");
    assert_status(
        &who_am_i(&app, &maria_session).await.expect_err("signed out"),
        Code::Unauthenticated,
        "SESSION_INVALID",
    );
    let token = link_sent_to(&sink, "maria@acme.example", 0).await;
    let mail = sink.received().into_iter().find(|m| m.link_token().as_deref() == Some(token.as_str())).unwrap();
    assert!(mail.body().contains("An administrator"), "{}", mail.body());
    use_link(&app, &token, NEW_PASSWORD).await.expect("reset");

    // A password set by the supervisor: sessions revoked, the link voided, the password works.
    let maria_session = app.login("acme", "maria@acme.example", NEW_PASSWORD).await.expect("maria again");
    app.users().send_password_reset(bearer(&sam, send.clone())).await.expect("another link");
    let pending = link_sent_to(&sink, "maria@acme.example", 1).await;
    let set = |user_id: &str, password: &str| pb::SetPasswordRequest {
        user_id: user_id.into(),
        password: password.into(),
        ..Default::default()
    };
    let short = app.users().set_password(bearer(&sam, set(&maria.id, "short"))).await.expect_err("too short");
    assert_invalid(&short, "INVALID_FIELD", &["password"]);
    app.users().set_password(bearer(&sam, set(&maria.id, "set by sam 123"))).await.expect("set");
    app.login("acme", "maria@acme.example", "set by sam 123").await.expect("the password sam set");
    assert!(who_am_i(&app, &maria_session).await.is_err(), "signed out");
    let voided = use_link(&app, &pending, NEW_PASSWORD).await.expect_err("voided by the new password");
    assert_status(&voided, Code::FailedPrecondition, "LINK_INVALID");

    // Nobody touches a user whose role holds more than theirs; an agent manages nobody.
    let admin_id = acme.admin.id.clone();
    let up = app.users().set_password(bearer(&sam, set(&admin_id, "taken over 123"))).await.expect_err("escalation");
    assert_eq!(up.code(), Code::PermissionDenied, "{up:?}");
    let up = pb::SendPasswordResetRequest { user_id: admin_id, ..Default::default() };
    let up = app.users().send_password_reset(bearer(&sam, up)).await.expect_err("escalation");
    assert_eq!(up.code(), Code::PermissionDenied, "{up:?}");
    let agent = app.login("acme", "maria@acme.example", "set by sam 123").await.expect("maria");
    let sideways = app.users().set_password(bearer(&agent, set(&maria.id, "my way 12345"))).await.expect_err("agent");
    assert_status(&sideways, Code::PermissionDenied, "PERMISSION_DENIED");
    app.login("acme", "admin@acme.example", PASSWORD).await.expect("the admin's password stayed");

    // An invited user becomes active with a password set for them; a reset is for active users.
    let ivan = invite(&app, &acme.admin_token, "ivan@acme.example", "agent").await.expect("invited");
    let to_invited = pb::SendPasswordResetRequest { user_id: ivan.id.clone(), ..Default::default() };
    let invited = app.users().send_password_reset(bearer(&sam, to_invited)).await.expect_err("invited");
    assert_status(&invited, Code::FailedPrecondition, "USER_INVITED");
    let ivan = app.users().set_password(bearer(&sam, set(&ivan.id, "ivan's first 1"))).await.expect("set");
    assert_eq!(ivan.into_inner().user.expect("user").status(), pb::UserStatus::Active);
    app.login("acme", "ivan@acme.example", "ivan's first 1").await.expect("ivan signs in");

    let actions = app.audit_actions(&acme.id).await;
    assert_eq!(actions.iter().filter(|a| *a == "user.password_set").count(), 2, "{actions:?}");
    let activated = events_of(&app, &acme.id, &[pb::EventType::UserActivated], 1).await;
    assert_eq!(activated.len(), 1);
    let audit = app.audit().list_audit_events(bearer(&acme.admin_token, pb::ListAuditEventsRequest::default())).await;
    let audit = format!("{:?}", audit.expect("audit").into_inner());
    assert!(!audit.contains("set by sam") && !audit.contains("rpl_"), "no secret in the audit trail");
}

#[tokio::test]
async fn a_pending_reset_link_dies_with_a_password_or_email_change_and_nobody_resets_their_own_this_way() {
    let sink = SmtpSink::start(Mode::Accept).await;
    let app = app_with_mail(&sink, |_| {}).await;
    let acme = app.workspace("acme").await;
    let maria = app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");

    // Maria asks for a link, then remembers her password and changes it: the link is void.
    request_reset(&app, "acme", "maria@acme.example").await.expect("asked");
    let link = link_sent_to(&sink, "maria@acme.example", 0).await;
    let session = app.login("acme", "maria@acme.example", PASSWORD).await.expect("maria");
    let change = pb::ChangePasswordRequest { current_password: PASSWORD.into(), new_password: NEW_PASSWORD.into() };
    app.users().change_password(bearer(&session, change)).await.expect("changed");
    let void = use_link(&app, &link, "someone else's 1").await.expect_err("voided by the change");
    assert_status(&void, Code::FailedPrecondition, "LINK_INVALID");

    // A link to an address the admin then corrects is void too.
    let send = pb::SendPasswordResetRequest { user_id: maria.id.clone(), ..Default::default() };
    app.users().send_password_reset(bearer(&acme.admin_token, send)).await.expect("sent");
    let link = link_sent_to(&sink, "maria@acme.example", 1).await;
    let update = |id: &str, email: &str| pb::UpdateUserRequest {
        workspace_id: String::new(),
        user: Some(pb::User { id: id.into(), email: email.into(), ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["email".into()] }),
    };
    let fixed = app.users().update_user(bearer(&acme.admin_token, update(&maria.id, "maria.r@acme.example"))).await;
    assert_eq!(fixed.expect("corrected").into_inner().user.expect("user").status(), pb::UserStatus::Active);
    let void = use_link(&app, &link, "someone else's 1").await.expect_err("voided by the correction");
    assert_status(&void, Code::FailedPrecondition, "LINK_INVALID");

    // A manager's tools are for others: their own password needs the current one, and their own
    // email another manager (so that a stolen session cannot take the account over).
    let set = pb::SetPasswordRequest {
        user_id: acme.admin.id.clone(),
        password: "no current one 1".into(),
        ..Default::default()
    };
    let own = app.users().set_password(bearer(&acme.admin_token, set)).await.expect_err("own password");
    assert_status(&own, Code::FailedPrecondition, "OWN_ACCOUNT");
    let own = app.users().update_user(bearer(&acme.admin_token, update(&acme.admin.id, "thief@evil.example"))).await;
    assert_status(&own.expect_err("own email"), Code::FailedPrecondition, "OWN_ACCOUNT");
    app.login("acme", "admin@acme.example", PASSWORD).await.expect("the admin is untouched");
    let by_support = update(&acme.admin.id, "ada@acme.example");
    let by_support = pb::UpdateUserRequest { workspace_id: acme.id.clone(), ..by_support };
    app.users().update_user(service(by_support)).await.expect("support corrects the admin's email");
}
