//! ListRoles, ListTeams and ListTeamMembers page and filter as ListUsers does: page sizes 0 (50)
//! to 500, page tokens bound to their listing, filters that narrow every page.

use crate::assignment::set_availability;
use crate::roles::create_role;
use crate::teams::team_of_agents;
use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::Code;

/// Every page of ListRoles at `page_size` with `builtin`, as role names, and how many pages.
async fn role_pages(app: &TestApp, token: &str, page_size: i32, builtin: Option<bool>) -> (Vec<String>, usize) {
    let (mut names, mut pages, mut page_token) = (Vec::new(), 0, String::new());
    loop {
        let request = pb::ListRolesRequest { page_size, page_token: page_token.clone(), builtin, ..Default::default() };
        let page = app.roles().list_roles(bearer(token, request)).await.expect("page").into_inner();
        pages += 1;
        names.extend(page.roles.into_iter().map(|r| r.name));
        if page.next_page_token.is_empty() {
            return (names, pages);
        }
        assert!(pages < 50, "the pages never end");
        page_token = page.next_page_token;
    }
}

#[tokio::test]
async fn roles_page_in_order_across_built_in_and_custom_roles_and_filter_by_kind() {
    let app = spawn_app().await;
    let ws = app.workspace("roles-paged").await;
    // Names whose order depends on case mapping: compared lower-cased, "beta" before "Delta".
    for name in ["Delta", "alpha", "beta", "Éclair", "Charlie"] {
        create_role(&app, &ws.admin_token, name, &[("contacts.read", pb::Scope::All)]).await.expect(name);
    }
    let all = ["Admin", "Supervisor", "Agent", "alpha", "beta", "Charlie", "Delta", "Éclair"];
    // One page of everything, then pages that end inside the built-in roles, on their edge,
    // inside the custom ones, and one short of, at and one past the whole count.
    for page_size in [0, 1, 2, 3, 4, 7, 8, 9, 500, 501] {
        let (names, pages) = role_pages(&app, &ws.admin_token, page_size, None).await;
        assert_eq!(names, all, "page size {page_size}");
        let expected_pages = match page_size {
            0 | 8.. => 1,
            n => 8_usize.div_ceil(n as usize),
        };
        assert_eq!(pages, expected_pages, "page size {page_size}");
    }
    for page_size in [1, 2, 3] {
        assert_eq!(role_pages(&app, &ws.admin_token, page_size, Some(true)).await.0, all[..3], "built-in");
        assert_eq!(role_pages(&app, &ws.admin_token, page_size, Some(false)).await.0, all[3..], "custom");
    }

    // Roles made between two pages: one after the cursor shows in its place, one before it does
    // not; none shows twice.
    let first = pb::ListRolesRequest { page_size: 4, ..Default::default() };
    let first = app.roles().list_roles(bearer(&ws.admin_token, first)).await.expect("page").into_inner();
    for name in ["Able", "Bravo"] {
        create_role(&app, &ws.admin_token, name, &[("contacts.read", pb::Scope::All)]).await.expect(name);
    }
    let rest = pb::ListRolesRequest { page_token: first.next_page_token, page_size: 50, ..Default::default() };
    let rest = app.roles().list_roles(bearer(&ws.admin_token, rest)).await.expect("page").into_inner();
    let names: Vec<String> = first.roles.into_iter().chain(rest.roles).map(|r| r.name).collect();
    assert_eq!(names, ["Admin", "Supervisor", "Agent", "alpha", "beta", "Bravo", "Charlie", "Delta", "Éclair"]);
}

#[tokio::test]
async fn listing_arguments_out_of_bounds_are_refused_by_field() {
    let app = spawn_app().await;
    let ws = app.workspace("listing-bounds").await;
    let (team, _) = team_of_agents(&app, &ws, "Support", pb::Strategy::RoundRobin, 1, None).await;
    let teams_token = {
        create_team_named(&app, &ws, "Sales").await;
        let request = pb::ListTeamsRequest { page_size: 1, ..Default::default() };
        app.teams().list_teams(bearer(&ws.admin_token, request)).await.expect("teams").into_inner().next_page_token
    };
    assert!(!teams_token.is_empty());

    let t = &ws.admin_token;
    let roles = |r: pb::ListRolesRequest| {
        let mut client = app.roles();
        async move { client.list_roles(bearer(t, r)).await.map(|_| ()) }
    };
    let refused = roles(pb::ListRolesRequest { page_size: -1, ..Default::default() }).await.expect_err("negative");
    assert_invalid(&refused, "INVALID_FIELD", &["page_size"]);
    // Another listing's token, a token of no listing, and a forged cursor.
    let refused = roles(pb::ListRolesRequest { page_token: teams_token.clone(), ..Default::default() }).await;
    assert_invalid(&refused.expect_err("another listing's"), "INVALID_FIELD", &["page_token"]);
    let refused = roles(pb::ListRolesRequest { page_token: "zz".into(), ..Default::default() }).await;
    assert_invalid(&refused.expect_err("garbage"), "INVALID_FIELD", &["page_token"]);
    let forged = hex("roles:9:admin");
    let refused = roles(pb::ListRolesRequest { page_token: forged, ..Default::default() }).await;
    assert_invalid(&refused.expect_err("forged"), "INVALID_FIELD", &["page_token"]);

    let mut teams = app.teams();
    for (user_id, field) in [("nope", "user_id"), ("0123456789ABCDEF0123456789ABCDEF", "user_id")] {
        let request = pb::ListTeamsRequest { user_id: user_id.into(), ..Default::default() };
        let refused = teams.list_teams(bearer(t, request)).await.expect_err(user_id);
        assert_invalid(&refused, "INVALID_FIELD", &[field]);
    }
    for availability in [3, -1, 99] {
        let request = pb::ListTeamMembersRequest { team_id: team.id.clone(), availability, ..Default::default() };
        let refused = teams.list_team_members(bearer(t, request)).await.expect_err("unknown availability");
        assert_invalid(&refused, "INVALID_FIELD", &["availability"]);
    }
    let request = pb::ListTeamMembersRequest { team_id: team.id.clone(), page_size: -1, ..Default::default() };
    let refused = teams.list_team_members(bearer(t, request)).await.expect_err("negative");
    assert_status(&refused, Code::InvalidArgument, "INVALID_FIELD");
}

#[tokio::test]
async fn teams_filter_by_member_and_members_by_availability_on_every_page() {
    let app = spawn_app().await;
    let ws = app.workspace("listing-filters").await;
    let (support, agents) = team_of_agents(&app, &ws, "Support", pb::Strategy::RoundRobin, 5, None).await;
    let (sales, _) = team_of_agents(&app, &ws, "Sales", pb::Strategy::RoundRobin, 1, None).await;
    let billing = create_team_named(&app, &ws, "Billing").await;
    let maria = &agents[0];
    for team in [&sales.id, &billing.id] {
        let request =
            pb::AddTeamMemberRequest { team_id: team.clone(), user_id: maria.id.clone(), ..Default::default() };
        app.teams().add_team_member(bearer(&ws.admin_token, request)).await.expect("member");
    }

    // Maria's teams, a page at a time, by name; a user in no team, or unknown, has none.
    for page_size in [1, 2, 3, 4] {
        let names = team_pages(&app, &ws, &maria.id, page_size).await;
        assert_eq!(names, ["Billing", "Sales", "Support"], "page size {page_size}");
    }
    assert_eq!(team_pages(&app, &ws, &agents[1].id, 1).await, ["Support"]);
    assert!(team_pages(&app, &ws, &ws.admin.id, 1).await.is_empty());
    assert!(team_pages(&app, &ws, UNKNOWN_ID, 1).await.is_empty());

    // Two of Support's five go away: the ONLINE filter skips them on every page.
    for away in [&agents[1], &agents[3]] {
        set_availability(&app, &ws.id, &away.id, pb::Availability::Away).await;
    }
    let online: Vec<&str> = [0, 2, 4].iter().map(|i| agents[*i].id.as_str()).collect();
    let away: Vec<&str> = [1, 3].iter().map(|i| agents[*i].id.as_str()).collect();
    for page_size in [1, 2, 3, 4] {
        let online_ids = member_pages(&app, &ws, &support.id, pb::Availability::Online, page_size).await;
        assert_eq!(online_ids, online, "page size {page_size}");
        let away_ids = member_pages(&app, &ws, &support.id, pb::Availability::Away, page_size).await;
        assert_eq!(away_ids, away, "page size {page_size}");
    }
    let everyone = member_pages(&app, &ws, &support.id, pb::Availability::Unspecified, 2).await;
    assert_eq!(everyone.len(), 5);
}

async fn create_team_named(app: &TestApp, ws: &Workspace, name: &str) -> pb::Team {
    let request =
        pb::CreateTeamRequest { name: name.into(), strategy: pb::Strategy::Manual as i32, ..Default::default() };
    app.teams().create_team(bearer(&ws.admin_token, request)).await.expect("team").into_inner().team.expect("team")
}

/// Every page of the teams `user_id` is a member of, as names.
async fn team_pages(app: &TestApp, ws: &Workspace, user_id: &str, page_size: i32) -> Vec<String> {
    let (mut names, mut page_token) = (Vec::new(), String::new());
    loop {
        let request = pb::ListTeamsRequest { page_size, page_token, user_id: user_id.into(), ..Default::default() };
        let page = app.teams().list_teams(bearer(&ws.admin_token, request)).await.expect("teams").into_inner();
        names.extend(page.teams.into_iter().map(|t| t.name));
        if page.next_page_token.is_empty() {
            return names;
        }
        page_token = page.next_page_token;
    }
}

/// Every page of the team's members with `availability`, as user ids.
async fn member_pages(
    app: &TestApp,
    ws: &Workspace,
    team_id: &str,
    availability: pb::Availability,
    page_size: i32,
) -> Vec<String> {
    let (mut ids, mut page_token) = (Vec::new(), String::new());
    loop {
        let request = pb::ListTeamMembersRequest {
            team_id: team_id.into(),
            page_size,
            page_token,
            availability: availability as i32,
            ..Default::default()
        };
        let page = app.teams().list_team_members(bearer(&ws.admin_token, request)).await.expect("members").into_inner();
        ids.extend(page.members.into_iter().map(|m| m.user_id));
        if page.next_page_token.is_empty() {
            return ids;
        }
        page_token = page.next_page_token;
    }
}

/// A page token as the server writes them: hex of `<listing>:<cursor>`.
fn hex(text: &str) -> String {
    text.bytes().map(|b| format!("{b:02x}")).collect()
}
