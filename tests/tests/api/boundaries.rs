//! Input exactly on the validation limits, through the API: passwords of 71, 72 and 73 bytes,
//! emails that grow when lower-cased, names of invisible or direction-changing characters.
//! Each answer is the documented one, and a refused call writes nothing.

use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::Code;

fn new_user(email: &str, full_name: &str, password: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        workspace_id: String::new(),
        email: email.into(),
        full_name: full_name.into(),
        password: password.into(),
        role: "agent".into(),
        request_id: String::new(),
    }
}

/// Passwords of 71 and 72 bytes (bcrypt's limit, counted in bytes) are taken by every path that
/// sets one, and log in; 73 bytes are refused with a field violation and write nothing.
#[tokio::test]
async fn a_password_of_72_bytes_works_everywhere_and_73_bytes_is_refused() {
    let app = spawn_app().await;
    let seventy_two = "é".repeat(36);
    assert_eq!(seventy_two.len(), 72);
    let mut workspace = new_workspace("bytes");
    workspace.admin.as_mut().expect("admin").password = seventy_two.clone();
    let created = app.workspaces().create_workspace(service(workspace)).await.expect("72 bytes").into_inner();
    let admin_token = app.login("bytes", "admin@bytes.example", &seventy_two).await.expect("admin logs in");
    let ws = created.workspace.expect("workspace").id;
    let seats = pb::SetExtraSeatsRequest { workspace_id: ws.clone(), extra_seats: 10 };
    app.billing().set_extra_seats(service(seats)).await.expect("seats");

    for (email, password) in [("a71@bytes.example", "a".repeat(71)), ("a72@bytes.example", "a".repeat(72))] {
        let request = bearer(&admin_token, new_user(email, "Ana", &password));
        app.users().create_user(request).await.unwrap_or_else(|s| panic!("{} bytes: {s:?}", password.len()));
        let token = app.login("bytes", email, &password).await.expect("logs in");
        // And changes it to another of 72 bytes, which then logs in.
        let change = pb::ChangePasswordRequest { current_password: password.clone(), new_password: "b".repeat(72) };
        app.users().change_password(bearer(&token, change)).await.expect("change to 72 bytes");
        app.login("bytes", email, &"b".repeat(72)).await.expect("the new one logs in");
    }

    let before = app.footprint(&ws).await;
    let too_long = app
        .users()
        .create_user(bearer(&admin_token, new_user("a73@bytes.example", "Ana", &"a".repeat(73))))
        .await
        .expect_err("73 bytes");
    assert_invalid(&too_long, "INVALID_FIELD", &["password"]);
    // 37 two-byte characters: 37 characters, 74 bytes.
    let multibyte = app
        .users()
        .create_user(bearer(&admin_token, new_user("e74@bytes.example", "Ana", &"é".repeat(37))))
        .await
        .expect_err("74 bytes");
    assert_invalid(&multibyte, "INVALID_FIELD", &["password"]);
    assert_eq!(app.footprint(&ws).await, before);
    let login = app.login("bytes", "admin@bytes.example", &format!("{seventy_two}x")).await.expect_err("73 bytes");
    assert_status(&login, Code::Unauthenticated, "INVALID_CREDENTIALS");
}

/// An email is limited as it is stored, lower-cased: 'İ' (two bytes) lower-cases to three.
#[tokio::test]
async fn an_email_that_grows_past_its_limit_when_lower_cased_is_refused_not_internal() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let before = app.footprint(&acme.id).await;
    // A local part of 60 bytes as sent, 90 once lower-cased (the limit is 64).
    let local = app
        .users()
        .create_user(bearer(&acme.admin_token, new_user(&format!("{}@acme.example", "İ".repeat(30)), "Ana", PASSWORD)))
        .await
        .expect_err("too long once lower-cased");
    assert_invalid(&local, "INVALID_FIELD", &["email"]);
    // A whole address of 234 bytes as sent, 304 once lower-cased (the limit is 254).
    let whole = format!("{}@{}.example", "l".repeat(60), "İ".repeat(80));
    assert!(whole.len() <= 254);
    let status = app
        .users()
        .create_user(bearer(&acme.admin_token, new_user(&whole, "Ana", PASSWORD)))
        .await
        .expect_err("too long once lower-cased");
    assert_invalid(&status, "INVALID_FIELD", &["email"]);
    assert_eq!(app.footprint(&acme.id).await, before);
    // Within the limit once lower-cased, it is stored and read back lower-cased.
    let fits = format!("{}@acme.example", "İ".repeat(21));
    let user = app
        .users()
        .create_user(bearer(&acme.admin_token, new_user(&fits, "Ana", PASSWORD)))
        .await
        .expect("fits")
        .into_inner()
        .user
        .expect("user");
    assert_eq!(user.email, fits.to_lowercase());
    let read = pb::GetUserRequest { workspace_id: String::new(), user_id: user.id };
    app.users().get_user(bearer(&acme.admin_token, read)).await.expect("reads back");
}

/// No name field takes a name that shows nothing, or one that turns text around; a role cannot
/// pass for a built-in one, nor a team for another, by hiding an invisible character.
#[tokio::test]
async fn names_must_show_something_and_keep_their_direction_and_lookalikes_collide() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let before = app.footprint(&acme.id).await;
    for name in ["\u{200B}", " \u{FEFF}\u{2060} ", "Maria\u{202E}gpj.exe", "\u{2066}Ana\u{2069}"] {
        let user = app
            .users()
            .create_user(bearer(&acme.admin_token, new_user("ana@acme.example", name, PASSWORD)))
            .await
            .expect_err(name);
        assert_invalid(&user, "INVALID_FIELD", &["full_name"]);
        let team = pb::CreateTeamRequest { workspace_id: String::new(), name: name.into(), strategy: 1 };
        let team = app.teams().create_team(bearer(&acme.admin_token, team)).await.expect_err(name);
        assert_invalid(&team, "INVALID_FIELD", &["name"]);
        let role = pb::CreateRoleRequest { name: name.into(), ..Default::default() };
        let role = app.roles().create_role(bearer(&acme.admin_token, role)).await.expect_err(name);
        assert_invalid(&role, "INVALID_FIELD", &["name"]);
        let mut workspace = new_workspace("blank");
        workspace.name = name.into();
        let workspace = app.workspaces().create_workspace(service(workspace)).await.expect_err(name);
        assert_invalid(&workspace, "INVALID_FIELD", &["name"]);
    }
    for lookalike in ["Ad\u{200B}min", "\u{FEFF}agent", "Super\u{00AD}visor"] {
        let role = pb::CreateRoleRequest { name: lookalike.into(), ..Default::default() };
        let role = app.roles().create_role(bearer(&acme.admin_token, role)).await.expect_err(lookalike);
        assert_invalid(&role, "INVALID_FIELD", &["name"]);
    }
    assert_eq!(app.footprint(&acme.id).await, before);
    let sales = pb::CreateTeamRequest { workspace_id: String::new(), name: "Sales".into(), strategy: 1 };
    app.teams().create_team(bearer(&acme.admin_token, sales)).await.expect("sales");
    let hidden = pb::CreateTeamRequest { workspace_id: String::new(), name: "Sa\u{200B}les".into(), strategy: 1 };
    let taken = app.teams().create_team(bearer(&acme.admin_token, hidden)).await.expect_err("looks the same");
    assert_status(&taken, Code::AlreadyExists, "TEAM_NAME_TAKEN");
}
