//! Login throttling: failed logins limited per workspace and email and per client address, before
//! any bcrypt work; unknown and known emails cost the same bcrypt work. The bcrypt work is counted
//! by the server's own metrics (`roster_bcrypt_operations_total`).

use roster_proto::v1 as pb;
use roster_tests::*;
use std::time::Duration;
use tonic::{Code, Status};
use tonic_types::StatusExt;

async fn bcrypt(app: &TestApp, operation: &str) -> f64 {
    app.metrics().await.sum("roster_bcrypt_operations_total", &[("operation", operation)])
}

fn login_request(slug: &str, email: &str, password: &str) -> pb::LoginRequest {
    pb::LoginRequest { workspace_slug: slug.into(), email: email.into(), password: password.into() }
}

/// A throttled login: RESOURCE_EXHAUSTED, LOGIN_THROTTLED, a RetryInfo and the same wait in the
/// ErrorInfo's metadata, at most the window; returns the wait in seconds.
fn assert_throttled(status: &Status, window_secs: u64) -> u64 {
    assert_status(status, Code::ResourceExhausted, "LOGIN_THROTTLED");
    let details = status.get_error_details();
    let delay = details.retry_info().and_then(|r| r.retry_delay).expect("a RetryInfo with a delay");
    let seconds = delay.as_secs();
    assert!(seconds >= 1 && seconds <= window_secs, "wait {delay:?}");
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!(info.metadata.get("retry_after_seconds"), Some(&seconds.to_string()));
    assert!(status.message().contains(&format!("try again in {seconds} s")), "{}", status.message());
    seconds
}

#[tokio::test]
async fn fifty_parallel_wrong_passwords_cost_no_more_bcrypt_than_the_limit() {
    // A real cost, so that the 50 attempts overlap while each is being verified.
    let app = spawn_app_with(|c| {
        c.bcrypt_cost = 8;
        c.login_max_failures = 5;
    })
    .await;
    let acme = app.workspace("acme").await;
    let before = bcrypt(&app, "verify").await;

    let attempts = (0..50).map(|i| {
        let mut auth = app.auth();
        async move { auth.login(login_request("acme", "admin@acme.example", &format!("guess number {i}"))).await }
    });
    let results = futures_join_all(attempts).await;

    let refused: Vec<&Status> = results.iter().map(|r| r.as_ref().expect_err("no guess is right")).collect();
    let wrong = refused.iter().filter(|s| s.code() == Code::Unauthenticated).count();
    let throttled: Vec<_> = refused.iter().filter(|s| s.code() == Code::ResourceExhausted).collect();
    assert_eq!(wrong, 5, "exactly the limit is checked");
    assert_eq!(throttled.len(), 45);
    for status in &throttled {
        assert_throttled(status, 900);
    }
    assert_eq!(bcrypt(&app, "verify").await - before, 5.0, "one bcrypt verification per checked attempt");
    let scrape = app.metrics().await;
    assert_eq!(scrape.sum("roster_login_throttled_total", &[("limit", "account")]), 45.0);
    // Only the checked attempts are audited; refused ones write nothing.
    let failed = app.audit_actions(&acme.id).await.into_iter().filter(|a| a == "login.failed").count();
    assert_eq!(failed, 5);

    // While the account is throttled even the right password is refused, so a guess cannot be
    // confirmed; another account from the same address is not affected.
    let right = app.login("acme", "admin@acme.example", PASSWORD).await.expect_err("throttled");
    assert_throttled(&right, 900);
    app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("maria");
    app.login("acme", "maria@acme.example", PASSWORD).await.expect("another account logs in");
}

#[tokio::test]
async fn unknown_and_known_emails_cost_the_same_bcrypt_work() {
    let app = spawn_app().await;
    app.workspace("acme").await;
    app.login("acme", "admin@acme.example", PASSWORD).await.expect("warm: the dummy hash exists now");
    let (hash_before, mut verify) = (bcrypt(&app, "hash").await, bcrypt(&app, "verify").await);

    let attempts: [(&str, &str, String); 5] = [
        ("acme", "admin@acme.example", "not the password".into()),
        ("acme", "nobody@acme.example", PASSWORD.into()),
        ("globex", "admin@acme.example", PASSWORD.into()),
        ("acme", "admin@acme.example", "x".repeat(100)),
        ("acme", "admin@acme.example", PASSWORD.into()),
    ];
    for (slug, email, password) in &attempts {
        let _ = app.login(slug, email, password).await;
        let now = bcrypt(&app, "verify").await;
        assert_eq!(now - verify, 1.0, "exactly one verification for {slug} {email}");
        verify = now;
    }
    assert_eq!(bcrypt(&app, "hash").await, hash_before, "a login never hashes");
    // A malformed request is refused before any work.
    let malformed = app.login("acme", "not an email", PASSWORD).await.expect_err("invalid");
    assert_status(&malformed, Code::InvalidArgument, "INVALID_FIELD");
    assert_eq!(bcrypt(&app, "verify").await, verify);
}

#[tokio::test]
async fn failures_from_one_address_are_throttled_across_accounts() {
    let app = spawn_app_with(|c| {
        c.login_max_failures = 5;
        c.login_max_failures_per_address = 10;
    })
    .await;
    app.workspace("acme").await;
    let before = bcrypt(&app, "verify").await;
    let mut codes = Vec::new();
    for i in 0..12 {
        let status = app.login("acme", &format!("user{i}@acme.example"), PASSWORD).await.expect_err("unknown");
        codes.push(status.code());
        if i >= 10 {
            assert_throttled(&status, 900);
        }
    }
    assert_eq!(codes, [[Code::Unauthenticated; 10].as_slice(), &[Code::ResourceExhausted; 2]].concat());
    assert_eq!(bcrypt(&app, "verify").await - before, 10.0);
    let scrape = app.metrics().await;
    assert_eq!(scrape.sum("roster_login_throttled_total", &[("limit", "address")]), 2.0);
}

#[tokio::test]
async fn a_success_forgets_the_accounts_failures_and_the_window_ends_a_throttle() {
    let app = spawn_app_with(|c| {
        c.login_max_failures = 3;
        c.login_window_secs = 1;
    })
    .await;
    app.workspace("acme").await;
    let wrong = || app.login("acme", "admin@acme.example", "not the password");

    // Two failures, a success, then three more failures are all checked.
    for _ in 0..2 {
        assert_status(&wrong().await.expect_err("wrong"), Code::Unauthenticated, "INVALID_CREDENTIALS");
    }
    app.login("acme", "admin@acme.example", PASSWORD).await.expect("right");
    for _ in 0..3 {
        assert_status(&wrong().await.expect_err("wrong"), Code::Unauthenticated, "INVALID_CREDENTIALS");
    }
    let throttled = app.login("acme", "admin@acme.example", PASSWORD).await.expect_err("throttled");
    assert_eq!(assert_throttled(&throttled, 1), 1);

    // Once the window has passed the failures, the right password works again.
    let logged_in =
        eventually(Duration::from_secs(5), || async { app.login("acme", "admin@acme.example", PASSWORD).await.ok() })
            .await;
    assert!(logged_in.is_some(), "logs in once the window is over");
}

/// The limits hold for every process sharing the database together: fifty parallel guesses spread
/// over two processes cost five verifications in all, and a throttle begun on one holds on the
/// other.
#[tokio::test]
async fn the_limits_hold_across_processes() {
    let app = spawn_app_with(|c| {
        c.bcrypt_cost = 8;
        c.login_max_failures = 5;
    })
    .await;
    app.workspace("acme").await;
    let peer = app.spawn_peer_process_with(PeerOptions { bcrypt_cost: Some(8), ..Default::default() }).await;
    let verifications = || async {
        let here = bcrypt(&app, "verify").await;
        let there =
            metrics::scrape(peer.metrics_addr).await.sum("roster_bcrypt_operations_total", &[("operation", "verify")]);
        here + there
    };
    let before = verifications().await;

    let attempts = (0..50).map(|i| {
        let mut auth = if i % 2 == 0 { app.auth() } else { peer.auth() };
        async move { auth.login(login_request("acme", "admin@acme.example", &format!("guess number {i}"))).await }
    });
    let results = futures_join_all(attempts).await;
    let codes: Vec<Code> = results.iter().map(|r| r.as_ref().expect_err("no guess is right").code()).collect();
    assert_eq!(codes.iter().filter(|c| **c == Code::Unauthenticated).count(), 5, "exactly the limit is checked");
    assert_eq!(codes.iter().filter(|c| **c == Code::ResourceExhausted).count(), 45);
    assert_eq!(verifications().await - before, 5.0);

    // The right password is refused on both while the account is throttled.
    let here = app.login("acme", "admin@acme.example", PASSWORD).await.expect_err("throttled here");
    assert_throttled(&here, 900);
    let there = peer.auth().login(login_request("acme", "admin@acme.example", PASSWORD)).await;
    assert_throttled(&there.expect_err("throttled there"), 900);
}

/// Runs the futures concurrently and collects their outputs in order.
async fn futures_join_all<F: std::future::Future + Send + 'static>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// A login as the load balancer passes it on, from the client at `address`.
fn through_proxy(address: &str, request: pb::LoginRequest) -> tonic::Request<pb::LoginRequest> {
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert("x-forwarded-for", format!("10.1.2.3, {address}").parse().expect("header"));
    request
}

/// Behind a trusted load balancer, the client's address is the forwarded one: a stranger guessing
/// an admin's password locks out their own address, and the admin logs in from elsewhere.
#[tokio::test]
async fn a_strangers_failures_lock_out_only_their_address_behind_a_trusted_proxy() {
    let app = spawn_app_with(|c| {
        c.login_max_failures = 3;
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("cidr"), "10.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    app.workspace("acme").await;
    let stranger = |password: &str| through_proxy("203.0.113.7", login_request("acme", "admin@acme.example", password));
    for i in 0..3 {
        let wrong = app.auth().login(stranger(&format!("guess number {i}"))).await.expect_err("wrong");
        assert_status(&wrong, Code::Unauthenticated, "INVALID_CREDENTIALS");
    }
    let throttled = app.auth().login(stranger(PASSWORD)).await.expect_err("that address is throttled");
    assert_throttled(&throttled, 900);
    let admin = through_proxy("198.51.100.4", login_request("acme", "admin@acme.example", PASSWORD));
    app.auth().login(admin).await.expect("the admin logs in from elsewhere");
}

/// Without trusted proxies, `x-forwarded-for` is the client's word and ignored: the address is
/// the connection's.
#[tokio::test]
async fn a_forwarded_address_from_an_untrusted_peer_is_ignored() {
    let app = spawn_app_with(|c| c.login_max_failures = 3).await;
    app.workspace("acme").await;
    for i in 0..3 {
        let request = through_proxy("203.0.113.7", login_request("acme", "admin@acme.example", &format!("guess {i}")));
        app.auth().login(request).await.expect_err("wrong");
    }
    let other = through_proxy("198.51.100.4", login_request("acme", "admin@acme.example", PASSWORD));
    let throttled = app.auth().login(other).await.expect_err("the same connection's address");
    assert_throttled(&throttled, 900);
}

/// Guessing spread over many addresses is capped per account.
#[tokio::test]
async fn failures_spread_over_many_addresses_are_capped_per_account() {
    let app = spawn_app_with(|c| {
        c.login_max_failures = 2;
        c.login_max_failures_per_account = 4;
        c.trusted_proxies = vec!["127.0.0.0/8".parse().expect("cidr"), "10.0.0.0/8".parse().expect("cidr")];
    })
    .await;
    app.workspace("acme").await;
    for address in ["203.0.113.1", "203.0.113.2"] {
        for i in 0..2 {
            let request = through_proxy(address, login_request("acme", "admin@acme.example", &format!("guess {i}")));
            let wrong = app.auth().login(request).await.expect_err("wrong");
            assert_status(&wrong, Code::Unauthenticated, "INVALID_CREDENTIALS");
        }
    }
    let third = through_proxy("203.0.113.3", login_request("acme", "admin@acme.example", PASSWORD));
    let throttled = app.auth().login(third).await.expect_err("the account's cap");
    assert_throttled(&throttled, 900);
    let scrape = app.metrics().await;
    assert_eq!(scrape.sum("roster_login_throttled_total", &[("limit", "account_total")]), 1.0);
}

/// Someone holding a person's session cannot guess their current password without limit: past
/// the limit even the right one is refused, and the password stays as it was.
#[tokio::test]
async fn guessing_the_current_password_with_a_session_is_throttled() {
    let app = spawn_app_with(|c| c.login_max_failures = 3).await;
    let acme = app.workspace("acme").await;
    let change = |current: &str| pb::ChangePasswordRequest {
        current_password: current.into(),
        new_password: "a brand new secret".into(),
    };
    for i in 0..3 {
        let wrong = app
            .users()
            .change_password(bearer(&acme.admin_token, change(&format!("guess number {i}"))))
            .await
            .expect_err("wrong");
        assert_status(&wrong, Code::InvalidArgument, "CURRENT_PASSWORD_INCORRECT");
    }
    let throttled =
        app.users().change_password(bearer(&acme.admin_token, change(PASSWORD))).await.expect_err("throttled");
    assert_throttled(&throttled, 900);
    app.login("acme", "admin@acme.example", PASSWORD).await.expect("the password is unchanged");
}

/// A password change is written only over the hash its current password was checked against,
/// and only while its session is open: an owner's change made meanwhile is not overwritten.
#[tokio::test]
async fn a_password_change_is_written_only_over_the_hash_it_verified_and_only_while_its_session_is_open() {
    use roster_identity::{BcryptCost, Password, PasswordHash, SessionToken};
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (ws, me) = (acme.id.as_str(), acme.admin.id.as_str());
    let hash = |password: &str| {
        let password = Password::parse(password).expect("password");
        PasswordHash::new(&password, BcryptCost::new(4).expect("cost"), [3; 16]).expect("hash")
    };
    let session = SessionToken::parse(&acme.admin_token).expect("token").hash();
    let ctx = roster_store::Context { actor: roster_store::Actor::User(me.into()), request_id: String::new(), now: 0 };
    let verified = app.store.password_hash(ws, me).await.expect("hash");
    // The owner changed it meanwhile: the attacker's change, verified against the old hash, fails.
    app.store.change_password(&ctx, ws, me, &verified, &hash("the owners new one"), &session).await.expect("owner");
    let stale = app.store.change_password(&ctx, ws, me, &verified, &hash("the attackers one"), &session).await;
    assert!(matches!(stale, Err(roster_store::StoreError::Conflict(roster_store::Conflict::Changed))), "{stale:?}");
    app.login("acme", "admin@acme.example", "the owners new one").await.expect("the owner's change stands");
    // A session revoked meanwhile changes nothing either.
    let current = app.store.password_hash(ws, me).await.expect("hash");
    let gone = SessionToken::from_random([9; 32]).hash();
    let revoked = app.store.change_password(&ctx, ws, me, &current, &hash("the attackers one"), &gone).await;
    assert!(matches!(revoked, Err(roster_store::StoreError::NotFound(roster_store::Entity::Session))), "{revoked:?}");
}
