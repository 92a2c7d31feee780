use crate::teams::{add_member, create_team, team_of_agents};
use roster_proto::v1 as pb;
use roster_tests::*;
use std::collections::{HashMap, HashSet};
use tonic::{Code, Status};

fn assign_request(ws: &str, conversation: &str, team: &str) -> pb::AssignConversationRequest {
    pb::AssignConversationRequest {
        workspace_id: ws.into(),
        conversation_id: conversation.into(),
        team_id: team.into(),
        ..Default::default()
    }
}

/// AssignConversation as the inbox's router does it: by strategy, with the service key.
pub(crate) async fn route(app: &TestApp, ws: &str, conversation: &str, team: &str) -> pb::ConversationAssignment {
    let response = app.assignments().assign_conversation(service(assign_request(ws, conversation, team))).await;
    response.expect("assign").into_inner().assignment.expect("assignment")
}

pub(crate) async fn set_availability(app: &TestApp, ws: &str, user: &str, availability: pb::Availability) {
    let request =
        pb::SetAvailabilityRequest { workspace_id: ws.into(), user_id: user.into(), availability: availability as i32 };
    app.users().set_availability(service(request)).await.expect("availability");
}

pub(crate) async fn get(app: &TestApp, ws: &str, conversation: &str) -> pb::ConversationAssignment {
    let request =
        pb::GetConversationAssignmentRequest { workspace_id: ws.into(), conversation_id: conversation.into() };
    app.assignments()
        .get_conversation_assignment(service(request))
        .await
        .expect("get")
        .into_inner()
        .assignment
        .expect("a")
}

async fn resolve(app: &TestApp, ws: &str, conversation: &str) -> Result<pb::ConversationAssignment, Status> {
    let request = pb::ResolveConversationRequest { workspace_id: ws.into(), conversation_id: conversation.into() };
    Ok(app.assignments().resolve_conversation(service(request)).await?.into_inner().assignment.expect("a"))
}

async fn list(app: &TestApp, request: pb::ListConversationAssignmentsRequest) -> Vec<pb::ConversationAssignment> {
    let mut all = Vec::new();
    let mut request = pb::ListConversationAssignmentsRequest { page_size: 500, ..request };
    loop {
        let page = app.assignments().list_conversation_assignments(service(request.clone())).await.expect("list");
        let page = page.into_inner();
        all.extend(page.assignments);
        if page.next_page_token.is_empty() {
            return all;
        }
        request.page_token = page.next_page_token;
    }
}

/// A team's open conversations.
pub(crate) async fn team_conversations(app: &TestApp, ws: &str, team: &str) -> Vec<pb::ConversationAssignment> {
    let request =
        pb::ListConversationAssignmentsRequest { workspace_id: ws.into(), team_id: team.into(), ..Default::default() };
    list(app, request).await
}

#[tokio::test]
async fn round_robin_goes_around_skips_the_away_and_says_after_whom() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Sales", pb::Strategy::RoundRobin, 3, None).await;
    let names: HashMap<&str, &str> = agents.iter().map(|a| (a.id.as_str(), a.full_name.as_str())).collect();
    let mut picked = Vec::new();
    for i in 0..4 {
        let a = route(&app, &acme.id, &format!("wa:{i}"), &team.id).await;
        picked.push((names[a.assignee_id.as_str()], a.reason));
    }
    assert_eq!(
        picked,
        [
            ("Sales Agent 0", "round robin: first in turn".to_owned()),
            ("Sales Agent 1", "round robin: after Sales Agent 0".to_owned()),
            ("Sales Agent 2", "round robin: after Sales Agent 1".to_owned()),
            ("Sales Agent 0", "round robin: after Sales Agent 2".to_owned()),
        ]
    );
    // Agent 1 is away: skipped, and next in turn again once back.
    set_availability(&app, &acme.id, &agents[1].id, pb::Availability::Away).await;
    assert_eq!(route(&app, &acme.id, "wa:4", &team.id).await.assignee_id, agents[2].id);
    set_availability(&app, &acme.id, &agents[1].id, pb::Availability::Online).await;
    assert_eq!(route(&app, &acme.id, "wa:5", &team.id).await.assignee_id, agents[0].id);
    assert_eq!(route(&app, &acme.id, "wa:6", &team.id).await.assignee_id, agents[1].id);

    // Asking again for an assigned conversation changes nothing.
    let again = app.assignments().assign_conversation(service(assign_request(&acme.id, "wa:0", &team.id))).await;
    let again = again.expect("again").into_inner();
    assert_eq!((again.changed, again.assignment.expect("a").assignee_id), (false, agents[0].id.clone()));
}

#[tokio::test]
async fn load_balanced_picks_the_fewest_open_and_resolving_frees_capacity() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Care", pb::Strategy::LoadBalanced, 2, Some(2)).await;
    let first = route(&app, &acme.id, "c1", &team.id).await;
    assert_eq!(
        (first.assignee_id.as_str(), first.reason.as_str()),
        (agents[0].id.as_str(), "load balanced: 0 open, fewest (tied with 1; assigned longest ago)")
    );
    let second = route(&app, &acme.id, "c2", &team.id).await;
    assert_eq!(
        (second.assignee_id.as_str(), second.reason.as_str()),
        (agents[1].id.as_str(), "load balanced: 0 open, fewest")
    );
    route(&app, &acme.id, "c3", &team.id).await;
    route(&app, &acme.id, "c4", &team.id).await;
    // Both at capacity (2): the next waits, and says why.
    let queued = route(&app, &acme.id, "c5", &team.id).await;
    assert_eq!((queued.assignee_id.as_str(), queued.reason.as_str()), ("", "queued: 2 members at capacity"));
    let queued_list = list(
        &app,
        pb::ListConversationAssignmentsRequest { workspace_id: acme.id.clone(), queued: true, ..Default::default() },
    )
    .await;
    assert_eq!(queued_list.iter().map(|c| c.conversation_id.as_str()).collect::<Vec<_>>(), ["c5"]);

    // Resolving one of agent 1's frees a place: the queued conversation goes to them at once.
    let resolved = resolve(&app, &acme.id, "c2").await.expect("resolve");
    assert_eq!(resolved.status, pb::ConversationStatus::Resolved as i32);
    assert_eq!(get(&app, &acme.id, "c5").await.assignee_id, agents[1].id);
    let mine = list(
        &app,
        pb::ListConversationAssignmentsRequest {
            workspace_id: acme.id.clone(),
            assignee_id: agents[1].id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(mine.iter().map(|c| c.conversation_id.as_str()).collect::<Vec<_>>(), ["c4", "c5"]);
    // Resolving twice changes nothing.
    assert_eq!(resolve(&app, &acme.id, "c2").await.expect("again").etag, resolved.etag);
}

#[tokio::test]
async fn queued_conversations_go_oldest_first_when_someone_comes_online() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Night", pb::Strategy::RoundRobin, 3, Some(1)).await;
    for agent in &agents {
        set_availability(&app, &acme.id, &agent.id, pb::Availability::Away).await;
    }
    let first = route(&app, &acme.id, "q1", &team.id).await;
    assert_eq!((first.assignee_id.as_str(), first.reason.as_str()), ("", "queued: 3 members away"));
    route(&app, &acme.id, "q2", &team.id).await;
    set_availability(&app, &acme.id, &agents[2].id, pb::Availability::Online).await;
    // Capacity 1: the oldest goes to agent 2, the other keeps waiting.
    assert_eq!(get(&app, &acme.id, "q1").await.assignee_id, agents[2].id);
    let waiting = get(&app, &acme.id, "q2").await;
    assert_eq!(waiting.assignee_id, "");
    // A new member takes the next one.
    let newcomer = app.create_user(&acme.admin_token, "new@acme.example", "agent").await.expect("user");
    add_member(&app, &acme.admin_token, &team.id, &newcomer.id, None).await.expect("member");
    assert_eq!(get(&app, &acme.id, "q2").await.assignee_id, newcomer.id);
}

#[tokio::test]
async fn a_manual_team_queues_until_someone_with_conversations_assign_assigns() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "VIP", pb::Strategy::Manual, 2, None).await;
    let queued = route(&app, &acme.id, "vip-1", &team.id).await;
    assert_eq!(
        (queued.assignee_id.as_str(), queued.reason.as_str()),
        ("", "queued: manual team, waiting for someone to assign it")
    );

    let by_hand = |to: &str, transfer: bool| pb::AssignConversationRequest {
        conversation_id: "vip-1".into(),
        team_id: team.id.clone(),
        assignee_id: to.into(),
        transfer,
        ..Default::default()
    };
    // An agent lacks conversations.assign.
    let agent_token = app.login("acme", &agents[0].email, PASSWORD).await.expect("login");
    let denied = app.assignments().assign_conversation(bearer(&agent_token, by_hand(&agents[0].id, false))).await;
    assert_status(&denied.expect_err("denied"), Code::PermissionDenied, "PERMISSION_DENIED");

    let supervisor = app.create_user(&acme.admin_token, "sup@acme.example", "supervisor").await.expect("sup");
    let token = app.login("acme", &supervisor.email, PASSWORD).await.expect("login");
    set_availability(&app, &acme.id, &agents[1].id, pb::Availability::Away).await;
    let away = app.assignments().assign_conversation(bearer(&token, by_hand(&agents[1].id, false))).await;
    let away = away.expect_err("away");
    assert_status(&away, Code::FailedPrecondition, "ASSIGNEE_NOT_ELIGIBLE");
    let outsider = app.assignments().assign_conversation(bearer(&token, by_hand(&supervisor.id, false))).await;
    assert_status(&outsider.expect_err("not a member"), Code::FailedPrecondition, "ASSIGNEE_NOT_ELIGIBLE");

    let assigned = app.assignments().assign_conversation(bearer(&token, by_hand(&agents[0].id, false))).await;
    let assigned = assigned.expect("assign").into_inner().assignment.expect("a");
    assert_eq!((assigned.assignee_id.as_str(), assigned.reason.as_str()), (agents[0].id.as_str(), "assigned by hand"));
    // Naming someone else without transfer is refused; with transfer it moves.
    set_availability(&app, &acme.id, &agents[1].id, pb::Availability::Online).await;
    let taken = app.assignments().assign_conversation(bearer(&token, by_hand(&agents[1].id, false))).await;
    assert_status(&taken.expect_err("assigned"), Code::FailedPrecondition, "ALREADY_ASSIGNED");
    let moved = app.assignments().assign_conversation(bearer(&token, by_hand(&agents[1].id, true))).await;
    assert_eq!(moved.expect("transfer").into_inner().assignment.expect("a").assignee_id, agents[1].id);

    // The agent now holding it may read it; the other agent may not (scope ASSIGNED).
    let read = |token: &str| {
        let request = pb::GetConversationAssignmentRequest { conversation_id: "vip-1".into(), ..Default::default() };
        bearer(token, request)
    };
    let other = app.assignments().get_conversation_assignment(read(&agent_token)).await.expect_err("not theirs");
    assert_status(&other, Code::PermissionDenied, "PERMISSION_DENIED");
    let holder_token = app.login("acme", &agents[1].email, PASSWORD).await.expect("login");
    app.assignments().get_conversation_assignment(read(&holder_token)).await.expect("theirs");

    let actions = app.audit_actions(&acme.id).await;
    assert!(actions.contains(&"conversation.assigned".to_owned()), "{actions:?}");
    assert!(actions.contains(&"conversation.transferred".to_owned()), "{actions:?}");
}

#[tokio::test]
async fn deactivating_an_agent_hands_their_conversations_to_the_others() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Sales", pb::Strategy::RoundRobin, 2, None).await;
    let (manual, manual_agents) = team_of_agents(&app, &acme, "Desk", pb::Strategy::Manual, 0, None).await;
    assert!(manual_agents.is_empty());
    for i in 0..4 {
        route(&app, &acme.id, &format!("s{i}"), &team.id).await;
    }
    // One of agent 0's conversations is in a manual team.
    add_member(&app, &acme.admin_token, &manual.id, &agents[0].id, None).await.expect("member");
    let request = pb::AssignConversationRequest {
        workspace_id: acme.id.clone(),
        conversation_id: "desk-1".into(),
        team_id: manual.id.clone(),
        assignee_id: agents[0].id.clone(),
        transfer: false,
        override_availability: false,
    };
    app.assignments().assign_conversation(service(request)).await.expect("by hand");

    // The deactivation hands them on in its own transaction: they are agent 1's when it answers,
    // routed by the team's strategy, in the order they first queued.
    let deactivate = pb::DeactivateUserRequest { workspace_id: acme.id.clone(), user_id: agents[0].id.clone() };
    app.users().deactivate_user(service(deactivate)).await.expect("deactivate");
    let mut sequences = Vec::new();
    for i in [0, 2] {
        let c = get(&app, &acme.id, &format!("s{i}")).await;
        assert_eq!(
            (c.assignee_id.as_str(), c.reason.as_str()),
            (agents[1].id.as_str(), "round robin: after Sales Agent 1")
        );
        sequences.push(c.sequence);
    }
    assert_eq!(sequences, [5, 6], "after the team's first 4, oldest first");
    for i in [1, 3] {
        assert_eq!(get(&app, &acme.id, &format!("s{i}")).await.assignee_id, agents[1].id, "s{i}");
    }
    let desk = get(&app, &acme.id, "desk-1").await;
    assert_eq!(
        (desk.assignee_id.as_str(), desk.reason.as_str()),
        ("", "queued: manual team, waiting for someone to assign it")
    );
    let mine = list(
        &app,
        pb::ListConversationAssignmentsRequest {
            workspace_id: acme.id.clone(),
            assignee_id: agents[0].id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert!(mine.is_empty());
}

#[tokio::test]
async fn reactivating_an_agent_hands_them_their_teams_queue() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Night", pb::Strategy::RoundRobin, 1, None).await;
    let deactivate = pb::DeactivateUserRequest { workspace_id: acme.id.clone(), user_id: agents[0].id.clone() };
    app.users().deactivate_user(service(deactivate)).await.expect("deactivate");
    for id in ["n1", "n2"] {
        let queued = route(&app, &acme.id, id, &team.id).await;
        assert_eq!((queued.assignee_id.as_str(), queued.reason.as_str()), ("", "queued: 1 member deactivated"));
        assert_eq!(queued.sequence, 0);
    }
    let reactivate = pb::ReactivateUserRequest {
        workspace_id: acme.id.clone(),
        user_id: agents[0].id.clone(),
        ..Default::default()
    };
    app.users().reactivate_user(service(reactivate)).await.expect("reactivate");
    // Handed out when the call answers, oldest first.
    let (n1, n2) = (get(&app, &acme.id, "n1").await, get(&app, &acme.id, "n2").await);
    assert_eq!((n1.assignee_id.as_str(), n1.sequence), (agents[0].id.as_str(), 1));
    assert_eq!((n2.assignee_id.as_str(), n2.sequence), (agents[0].id.as_str(), 2));
}

#[tokio::test]
async fn bad_assignment_input_is_refused_field_by_field() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let request = pb::AssignConversationRequest {
        workspace_id: acme.id.clone(),
        conversation_id: "has space".into(),
        team_id: "x".into(),
        assignee_id: "y".into(),
        transfer: false,
        override_availability: false,
    };
    let status = app.assignments().assign_conversation(service(request)).await.expect_err("invalid");
    assert_invalid(&status, "INVALID_FIELD", &["conversation_id", "team_id", "assignee_id"]);
    let status = app.assignments().assign_conversation(service(assign_request(&acme.id, "new", ""))).await;
    assert_invalid(&status.expect_err("no team"), "INVALID_FIELD", &["team_id"]);
    let status = app.assignments().assign_conversation(service(assign_request(&acme.id, "new", UNKNOWN_ID))).await;
    assert_status(&status.expect_err("no team"), Code::NotFound, "TEAM_NOT_FOUND");
    let status = resolve(&app, &acme.id, "never-seen").await.expect_err("unknown");
    assert_status(&status, Code::NotFound, "CONVERSATION_NOT_FOUND");
    // A team with open conversations cannot be deleted.
    let team = create_team(&app, &acme.admin_token, "Busy", pb::Strategy::Manual).await.expect("team");
    route(&app, &acme.id, "open-1", &team.id).await;
    let delete = pb::DeleteTeamRequest { team_id: team.id.clone(), ..Default::default() };
    let status = app.teams().delete_team(bearer(&acme.admin_token, delete)).await.expect_err("open");
    assert_status(&status, Code::FailedPrecondition, "TEAM_HAS_OPEN_CONVERSATIONS");
    let listed =
        list(&app, pb::ListConversationAssignmentsRequest { workspace_id: acme.id.clone(), ..Default::default() })
            .await;
    assert_eq!(listed.len(), 1, "nothing but open-1 was created");
}

/// 1,000 concurrent AssignConversation calls over two rosterd processes on one database: no
/// conversation gets two assignees, nobody passes capacity, and capacity is used up exactly.
/// Picks of one team are made one at a time (under the team's lock), so a burst of 1,000 into one
/// team queues for seconds in a debug build on two cores, longer than the default 5 s wait for a
/// connection or lock: the test waits up to 60 s, to check the invariants rather than the speed.
#[tokio::test]
async fn a_thousand_concurrent_assignments_over_two_processes_keep_capacity() {
    let app = spawn_app_with(|config| config.db_timeout_ms = 60_000).await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Rush", pb::Strategy::LoadBalanced, 5, Some(30)).await;
    let peer = app.spawn_peer_process().await;
    let answers = concurrently(&app, &peer, &acme.id, &[&team.id], "rush", 1000).await;
    let mut per_agent: HashMap<String, usize> = HashMap::new();
    for answer in &answers {
        let answer = answer.as_ref().expect("every call answered");
        let a = answer.assignment.as_ref().expect("assignment");
        if !a.assignee_id.is_empty() {
            *per_agent.entry(a.assignee_id.clone()).or_default() += 1;
        }
    }
    let open =
        list(&app, pb::ListConversationAssignmentsRequest { workspace_id: acme.id.clone(), ..Default::default() })
            .await;
    assert_eq!(open.len(), 1000);
    let ids: HashSet<&str> = open.iter().map(|c| c.conversation_id.as_str()).collect();
    assert_eq!(ids.len(), 1000, "each conversation once");
    let mut stored: HashMap<&str, usize> = HashMap::new();
    for c in open.iter().filter(|c| !c.assignee_id.is_empty()) {
        *stored.entry(c.assignee_id.as_str()).or_default() += 1;
    }
    assert_eq!(stored.len(), agents.len());
    for agent in &agents {
        assert_eq!(stored[agent.id.as_str()], 30, "exactly capacity, never more");
    }
    assert_eq!(per_agent.values().sum::<usize>(), 150, "answers agree with the store");
}

/// Round robin stays fair when two processes hand out one team's conversations at once.
#[tokio::test]
async fn round_robin_is_fair_across_two_processes() {
    let app = spawn_app_with(|config| config.db_timeout_ms = 60_000).await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Fair", pb::Strategy::RoundRobin, 3, None).await;
    let peer = app.spawn_peer_process().await;
    let n = 301;
    for answer in concurrently(&app, &peer, &acme.id, &[&team.id], "fair", n).await {
        answer.expect("answered");
    }
    let open = team_conversations(&app, &acme.id, &team.id).await;
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for c in &open {
        *counts.entry(c.assignee_id.as_str()).or_default() += 1;
    }
    for agent in &agents {
        let got = counts.get(agent.id.as_str()).copied().unwrap_or(0);
        assert!(got == n / 3 || got == n.div_ceil(3), "{} got {got} of {n}", agent.full_name);
    }
}

/// Load balanced never picks a member with more open conversations than another eligible member,
/// when two processes pick at once. Phase 1: one team, so the team's numbering of its assignments
/// (`sequence`) is the order its picks were made, and replaying them from the agents' loads before
/// shows each pick went to a member with the fewest. Phase 2: two teams sharing the agents pick at
/// once, each under its own lock, so each pick must compare counts another team may be raising:
/// every pick says the load it saw, and an agent's picks must have seen each of their loads once.
/// SQLite runs write transactions one at a time, so phase 2 proves the load check only on
/// PostgreSQL (`ROSTER_TEST_DATABASE_URL`, set in CI), where it failed without it.
#[tokio::test]
async fn load_balanced_never_picks_a_busier_member_across_two_processes() {
    let app = spawn_app_with(|config| config.db_timeout_ms = 60_000).await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Even", pb::Strategy::LoadBalanced, 4, None).await;
    // Uneven loads to start from: 0, 3, 1 and 5 conversations given by hand in another team.
    let (backlog, _) = team_of_agents(&app, &acme, "Backlog", pb::Strategy::Manual, 0, None).await;
    let mut loads: HashMap<String, usize> = HashMap::new();
    for (agent, n) in agents.iter().zip([0, 3, 1, 5]) {
        add_member(&app, &acme.admin_token, &backlog.id, &agent.id, None).await.expect("member");
        for i in 0..n {
            let request = pb::AssignConversationRequest {
                workspace_id: acme.id.clone(),
                conversation_id: format!("old-{}-{i}", agent.id),
                team_id: backlog.id.clone(),
                assignee_id: agent.id.clone(),
                transfer: false,
                override_availability: false,
            };
            app.assignments().assign_conversation(service(request)).await.expect("by hand");
        }
        loads.insert(agent.id.clone(), n);
    }
    let peer = app.spawn_peer_process().await;

    let n = 120;
    for answer in concurrently(&app, &peer, &acme.id, &[&team.id], "even", n).await {
        answer.expect("answered");
    }
    let mut picks = team_conversations(&app, &acme.id, &team.id).await;
    picks.sort_by_key(|c| c.sequence);
    assert_eq!(picks.iter().map(|c| c.sequence).collect::<Vec<_>>(), (1..=n as u64).collect::<Vec<_>>());
    for c in &picks {
        let fewest = *loads.values().min().expect("agents");
        let load = loads.get_mut(&c.assignee_id).expect("an agent of the team");
        assert_eq!(*load, fewest, "pick {} went to a member with {load} open while one had {fewest}", c.sequence);
        assert!(c.reason.starts_with(&format!("load balanced: {load} open, fewest")), "{}", c.reason);
        *load += 1;
    }

    // Phase 2: a second load-balanced team of the same agents; both teams pick at once.
    let (twin, _) = team_of_agents(&app, &acme, "Twin", pb::Strategy::LoadBalanced, 0, None).await;
    for agent in &agents {
        add_member(&app, &acme.admin_token, &twin.id, &agent.id, None).await.expect("member");
    }
    for answer in concurrently(&app, &peer, &acme.id, &[&team.id, &twin.id], "twin", n).await {
        answer.expect("answered");
    }
    let mut seen: HashMap<String, Vec<usize>> = HashMap::new();
    for team_id in [&team.id, &twin.id] {
        let open = team_conversations(&app, &acme.id, team_id).await;
        for c in open.iter().filter(|c| c.conversation_id.starts_with("twin-")) {
            let open = c.reason.strip_prefix("load balanced: ").and_then(|r| r.split(' ').next());
            let open = open.and_then(|n| n.parse().ok()).unwrap_or_else(|| panic!("reason: {}", c.reason));
            seen.entry(c.assignee_id.clone()).or_default().push(open);
        }
    }
    assert_eq!(seen.values().map(Vec::len).sum::<usize>(), n);
    for agent in &agents {
        let mut got = seen.remove(&agent.id).unwrap_or_default();
        got.sort_unstable();
        let start = loads[&agent.id];
        let expected: Vec<usize> = (start..start + got.len()).collect();
        assert_eq!(got, expected, "{}: each pick saw the load it took, once", agent.full_name);
    }
}

/// `n` AssignConversation calls by strategy at once (conversations `<prefix>-0`..), alternating
/// between this server and a peer process, and, in pairs, between `teams`; the answers in call
/// order.
async fn concurrently(
    app: &TestApp,
    peer: &PeerProcess,
    ws: &str,
    teams: &[&str],
    prefix: &str,
    n: usize,
) -> Vec<Result<pb::AssignConversationResponse, Status>> {
    let clients = [app.assignments(), peer.assignments()];
    let calls = (0..n).map(|i| {
        let mut client = clients[i % 2].clone();
        let request = assign_request(ws, &format!("{prefix}-{i}"), teams[(i / 2) % teams.len()]);
        async move { client.assign_conversation(service(request)).await.map(|r| r.into_inner()) }
    });
    futures_join_all(calls).await
}

/// Joins futures without another dependency: spawns each on the runtime.
async fn futures_join_all<F, T>(futures: impl Iterator<Item = F>) -> Vec<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("task"));
    }
    out
}

#[tokio::test]
async fn the_workspace_default_capacity_applies_unless_a_member_overrides_it() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Cap", pb::Strategy::LoadBalanced, 1, None).await;
    let set_default = |n: i32| pb::UpdateWorkspaceRequest {
        workspace: Some(pb::Workspace { max_open_conversations: n, ..Default::default() }),
        update_mask: Some(prost_types::FieldMask { paths: vec!["max_open_conversations".into()] }),
    };
    // An agent lacks settings.write; a bad number names the field.
    let agent_token = app.login("acme", &agents[0].email, PASSWORD).await.expect("login");
    let denied = app.workspaces().update_workspace(bearer(&agent_token, set_default(1))).await.expect_err("denied");
    assert_status(&denied, Code::PermissionDenied, "PERMISSION_DENIED");
    let bad = app.workspaces().update_workspace(bearer(&acme.admin_token, set_default(-1))).await.expect_err("bad");
    assert_invalid(&bad, "INVALID_FIELD", &["workspace.max_open_conversations"]);

    let updated = app.workspaces().update_workspace(bearer(&acme.admin_token, set_default(1))).await.expect("set");
    assert_eq!(updated.into_inner().workspace.expect("ws").max_open_conversations, 1);
    assert_eq!(route(&app, &acme.id, "d1", &team.id).await.assignee_id, agents[0].id);
    let queued = route(&app, &acme.id, "d2", &team.id).await;
    assert_eq!((queued.assignee_id.as_str(), queued.reason.as_str()), ("", "queued: 1 member at capacity"));
    // Raising the default hands the queue out at once.
    app.workspaces().update_workspace(bearer(&acme.admin_token, set_default(2))).await.expect("raise");
    assert_eq!(get(&app, &acme.id, "d2").await.assignee_id, agents[0].id);
    assert!(app.audit_actions(&acme.id).await.contains(&"workspace.updated".to_owned()));
}

#[tokio::test]
async fn transfers_and_unassigns_hand_work_on_and_free_capacity() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Flow", pb::Strategy::LoadBalanced, 2, Some(1)).await;
    let (other, _) = team_of_agents(&app, &acme, "Other", pb::Strategy::Manual, 0, None).await;
    add_member(&app, &acme.admin_token, &other.id, &agents[0].id, None).await.expect("member");
    let request = |conversation: &str, team: &str, to: &str, transfer: bool| pb::AssignConversationRequest {
        workspace_id: acme.id.clone(),
        conversation_id: conversation.into(),
        team_id: team.into(),
        assignee_id: to.into(),
        transfer,
        override_availability: false,
    };
    // A new conversation with transfer set is simply routed.
    let a = app.assignments().assign_conversation(service(request("f1", &team.id, "", true))).await;
    assert_eq!(a.expect("new").into_inner().assignment.expect("a").assignee_id, agents[0].id);
    route(&app, &acme.id, "f2", &team.id).await; // agent 1
    let waiting = route(&app, &acme.id, "f3", &team.id).await;
    assert_eq!(waiting.assignee_id, "", "both at capacity 1");

    // Unassigning f1 from agent 0 cannot give it to agent 1 (full) nor back to agent 0: it waits;
    // agent 0's freed place goes to the oldest waiting, f3.
    let request_unassign =
        pb::UnassignConversationRequest { workspace_id: acme.id.clone(), conversation_id: "f1".into() };
    let unassigned = app.assignments().unassign_conversation(service(request_unassign)).await.expect("unassign");
    assert_eq!(unassigned.into_inner().assignment.expect("a").assignee_id, "");
    assert_eq!(get(&app, &acme.id, "f3").await.assignee_id, agents[0].id);

    // Transferring f2 from agent 1 by strategy: nobody else has room, so it waits, and agent 1's
    // freed place goes to f1, which waited longer.
    let moved = app.assignments().assign_conversation(service(request("f2", "", "", true))).await.expect("transfer");
    let moved = moved.into_inner();
    assert!(moved.changed);
    assert_eq!(moved.assignment.expect("a").assignee_id, "");
    assert_eq!(get(&app, &acme.id, "f1").await.assignee_id, agents[1].id);

    // Transfer to the same person in another team moves the team and keeps the assignee.
    let same = app.assignments().assign_conversation(service(request("f3", &other.id, &agents[0].id, true))).await;
    let same = same.expect("move team").into_inner().assignment.expect("a");
    assert_eq!((same.team_id.as_str(), same.assignee_id.as_str()), (other.id.as_str(), agents[0].id.as_str()));
    let loads = list(
        &app,
        pb::ListConversationAssignmentsRequest {
            workspace_id: acme.id.clone(),
            assignee_id: agents[0].id.clone(),
            ..Default::default()
        },
    )
    .await;
    assert_eq!(loads.len(), 1, "agent 0 holds f3 once, never past capacity");
}

/// The periodic sweep hands out a queue whose hand-out after a change was lost: here the change is
/// made in the database behind the server's back, so no call triggers it.
#[tokio::test]
async fn the_sweep_hands_out_queues_nobody_triggered() {
    let app = spawn_app_with(|config| config.queue_sweep_ms = 100).await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Sweep", pb::Strategy::RoundRobin, 1, None).await;
    set_availability(&app, &acme.id, &agents[0].id, pb::Availability::Away).await;
    assert_eq!(route(&app, &acme.id, "lost-1", &team.id).await.assignee_id, "");
    let ctx =
        roster_store::Context { actor: roster_store::Actor::Service("test".into()), request_id: String::new(), now: 1 };
    app.store
        .set_availability(&ctx, &acme.id, &agents[0].id, roster_store::Availability::Online)
        .await
        .expect("online behind the server's back");
    let assigned = eventually(std::time::Duration::from_secs(5), || async {
        Some(get(&app, &acme.id, "lost-1").await).filter(|a| !a.assignee_id.is_empty())
    })
    .await;
    assert_eq!(assigned.expect("handed out by the sweep").assignee_id, agents[0].id);
}

/// Between two looks the sweep takes only the workspaces with a change since (so an idle process
/// costs nothing per queue), but its first look takes every queue: a hand-out whose change left no
/// trace for the running processes is made by the next process to start.
#[tokio::test]
async fn a_starting_process_hands_out_every_queue_at_its_first_sweep() {
    let app = spawn_app_with(|config| config.queue_sweep_ms = 3_600_000).await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "Sweep", pb::Strategy::RoundRobin, 1, None).await;
    set_availability(&app, &acme.id, &agents[0].id, pb::Availability::Away).await;
    assert_eq!(route(&app, &acme.id, "lost-1", &team.id).await.assignee_id, "");
    // Online in the database, with no event and no hand-out.
    let db = sea_orm::Database::connect(app.db.url.as_str()).await.expect("db");
    let online = format!("UPDATE users SET availability = 'ONLINE' WHERE id = '{}'", agents[0].id);
    sea_orm::ConnectionTrait::execute_unprepared(&db, &online).await.expect("online behind the server's back");
    let sweeping = PeerOptions { args: vec!["--queue-sweep-ms".into(), "100".into()], ..Default::default() };
    let _peer = app.spawn_peer_process_with(sweeping).await;
    let assigned = eventually(std::time::Duration::from_secs(10), || async {
        Some(get(&app, &acme.id, "lost-1").await).filter(|a| !a.assignee_id.is_empty())
    })
    .await;
    assert_eq!(assigned.expect("handed out by the new process's sweep").assignee_id, agents[0].id);
}

/// A manager may deliberately give a conversation to a member who is AWAY or at capacity, saying
/// so in the request; the answer and the audit record say what was overridden. Nobody else can,
/// and being a member still counts.
#[tokio::test]
async fn a_manager_may_override_away_or_at_capacity_and_the_answer_and_audit_say_so() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "VIP", pb::Strategy::Manual, 1, Some(1)).await;
    let supervisor = app.create_user(&acme.admin_token, "sup@acme.example", "supervisor").await.expect("sup");
    let boss = app.login("acme", &supervisor.email, PASSWORD).await.expect("login");
    let agent = app.login("acme", &agents[0].email, PASSWORD).await.expect("login");
    let by_hand = |conversation: &str, to: &str, override_availability: bool| pb::AssignConversationRequest {
        conversation_id: conversation.into(),
        team_id: team.id.clone(),
        assignee_id: to.into(),
        override_availability,
        ..Default::default()
    };
    let assign = |token: String, request: pb::AssignConversationRequest| {
        let mut client = app.assignments();
        async move { Ok::<_, Status>(client.assign_conversation(bearer(&token, request)).await?.into_inner()) }
    };

    set_availability(&app, &acme.id, &agents[0].id, pb::Availability::Away).await;
    let refused = assign(boss.clone(), by_hand("v1", &agents[0].id, false)).await.expect_err("away");
    assert_status(&refused, Code::FailedPrecondition, "ASSIGNEE_NOT_ELIGIBLE");
    let no_one = assign(boss.clone(), by_hand("v1", "", true)).await.expect_err("override whom?");
    assert_invalid(&no_one, "INVALID_FIELD", &["override_availability"]);
    let not_a_manager = assign(agent.clone(), by_hand("v1", &agents[0].id, true)).await.expect_err("an agent");
    assert_status(&not_a_manager, Code::PermissionDenied, "PERMISSION_DENIED");
    let outsider = assign(boss.clone(), by_hand("v1", &supervisor.id, true)).await.expect_err("not a member");
    assert_status(&outsider, Code::FailedPrecondition, "ASSIGNEE_NOT_ELIGIBLE");

    let away = assign(boss.clone(), by_hand("v1", &agents[0].id, true)).await.expect("overriding away");
    let away = away.assignment.expect("a");
    assert_eq!(
        (away.assignee_id.as_str(), away.reason.as_str()),
        (agents[0].id.as_str(), "assigned by hand, overriding: away")
    );
    set_availability(&app, &acme.id, &agents[0].id, pb::Availability::Online).await;
    let full = assign(boss.clone(), by_hand("v2", &agents[0].id, true)).await.expect("overriding capacity");
    assert_eq!(full.assignment.expect("a").reason, "assigned by hand, overriding: at capacity");
    let fine = assign(boss.clone(), by_hand("v3", &agents[0].id, false)).await.expect_err("no override asked");
    assert_status(&fine, Code::FailedPrecondition, "ASSIGNEE_NOT_ELIGIBLE");

    let request = pb::ListAuditEventsRequest { workspace_id: acme.id.clone(), page_size: 10, ..Default::default() };
    let audit = app.audit().list_audit_events(service(request)).await.expect("audit").into_inner().events;
    let overrides: Vec<(String, String)> = audit
        .iter()
        .filter(|e| e.action == "conversation.assigned")
        .map(|e| (e.target.clone(), e.details.get("override").cloned().unwrap_or_default()))
        .collect();
    assert_eq!(
        overrides,
        [("conversation:v2".to_owned(), "at capacity".to_owned()), ("conversation:v1".to_owned(), "away".to_owned())]
    );
}
