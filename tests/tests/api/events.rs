//! The change feed: every change as an event, in order, resumable from any cursor, listed and
//! watched; on two processes writing one database at once.

use crate::teams::team_of_agents;
use pb::event::Payload;
use roster_proto::v1 as pb;
use roster_tests::*;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use tonic::Code;

/// Every event of `workspace` after `after`, page by page, as the service key reads them.
async fn all_events(channel: &EventsClient, workspace: &str, after: &str, page_size: i32) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let mut after = after.to_owned();
    loop {
        let request = pb::ListEventsRequest {
            workspace_id: workspace.into(),
            after: after.clone(),
            page_size,
            ..Default::default()
        };
        let page = channel.clone().list_events(service(request)).await.expect("events").into_inner();
        if let Some(last) = page.events.last() {
            assert!(page.next_cursor >= last.cursor, "a page goes on from its last event or further");
        }
        assert!(page.next_cursor >= after, "a page never goes back");
        if page.events.is_empty() {
            return events;
        }
        after = page.next_cursor.clone();
        events.extend(page.events);
    }
}

type EventsClient = pb::event_service_client::EventServiceClient<tonic::transport::Channel>;

fn kind(event: &pb::Event) -> pb::EventType {
    event.r#type()
}

#[tokio::test]
async fn every_change_is_an_event_in_order_with_its_payload_and_cursors_resume() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let globex = app.workspace("globex").await;
    let start = all_events(&app.events(), &acme.id, "", 0).await;
    let created = [pb::EventType::WorkspaceCreated, pb::EventType::UserCreated, pb::EventType::SeatsChanged];
    assert_eq!(start.iter().map(kind).collect::<Vec<_>>(), created);

    let (team, agents) = team_of_agents(&app, &acme, "Support", pb::Strategy::RoundRobin, 2, None).await;
    let request = pb::AssignConversationRequest {
        workspace_id: acme.id.clone(),
        conversation_id: "wa:1".into(),
        team_id: team.id.clone(),
        ..Default::default()
    };
    let assigned = app.assignments().assign_conversation(service(request)).await.expect("assign").into_inner();
    let assignee = assigned.assignment.expect("assignment").assignee_id;
    let deactivate = pb::DeactivateUserRequest { workspace_id: acme.id.clone(), user_id: assignee.clone() };
    app.users().deactivate_user(service(deactivate)).await.expect("deactivate");
    let unassign = pb::UnassignConversationRequest { workspace_id: acme.id.clone(), conversation_id: "wa:1".into() };
    app.assignments().unassign_conversation(service(unassign)).await.expect("unassign");
    let resolve = pb::ResolveConversationRequest { workspace_id: acme.id.clone(), conversation_id: "wa:1".into() };
    app.assignments().resolve_conversation(service(resolve)).await.expect("resolve");
    let plan = pb::ChangePlanRequest { workspace_id: acme.id.clone(), plan: pb::Plan::Scale as i32 };
    app.billing().change_plan(service(plan)).await.expect("plan");
    app.create_user(&globex.admin_token, "elsewhere@globex.example", "agent").await.expect("not acme's");

    let events = all_events(&app.events(), &acme.id, &start[2].cursor, 0).await;
    let kinds: Vec<pb::EventType> = events.iter().map(kind).collect();
    use pb::EventType as T;
    assert_eq!(
        kinds,
        [
            T::TeamCreated,
            T::UserCreated,
            T::MembershipAdded,
            T::UserCreated,
            T::MembershipAdded,
            T::ConversationAssigned,
            T::ConversationQueued,
            T::ConversationAssigned,
            T::UserDeactivated,
            // Given up by the only agent left: what happened first, then where it went; then the
            // hand-out after the change gives it to the one agent who has room (the same one).
            T::ConversationUnassigned,
            T::ConversationQueued,
            T::ConversationAssigned,
            T::ConversationResolved,
            T::PlanChanged,
        ],
        "{events:#?}"
    );
    let other = agents.iter().find(|a| a.id != assignee).expect("the other agent");
    let Some(Payload::Conversation(first)) = &events[5].payload else { panic!("{:?}", events[5]) };
    assert_eq!((first.conversation_id.as_str(), first.team_id.as_str()), ("wa:1", team.id.as_str()));
    assert_eq!(first.assignee_id, assignee);
    let Some(Payload::Conversation(again)) = &events[7].payload else { panic!("{:?}", events[7]) };
    assert_eq!(again.assignee_id, other.id, "the deactivated agent's conversation went to the other");
    let Some(Payload::User(gone)) = &events[8].payload else { panic!("{:?}", events[8]) };
    assert_eq!((gone.user_id.as_str(), gone.conversations_requeued), (assignee.as_str(), 1));
    let Some(Payload::Conversation(given_up)) = &events[9].payload else { panic!("{:?}", events[9]) };
    assert_eq!(
        (given_up.previous_assignee_id.as_str(), given_up.team_id.as_str()),
        (other.id.as_str(), team.id.as_str())
    );
    let Some(Payload::Subscription(plan)) = &events[13].payload else { panic!("{:?}", events[13]) };
    assert_eq!((plan.plan(), plan.previous_plan()), (pb::Plan::Scale, pb::Plan::FreeTrial));
    // The team by its admin; the rest by the service key, even what routing did on its own.
    let actors: Vec<&str> = events.iter().map(|e| e.actor.as_str()).collect();
    let (admin, key) = (format!("user:{}", acme.admin.id), format!("service:{SERVICE_NAME}"));
    assert!(actors[..5].iter().all(|a| *a == admin) && actors[5..].iter().all(|a| *a == key), "{actors:?}");
    assert!(events.iter().all(|e| e.workspace_id == acme.id && e.time.is_some()));
    assert!(events.windows(2).all(|w| w[0].cursor < w[1].cursor), "cursors sort as the feed does");

    // Any page size, resumed from any cursor, gives the same events exactly once.
    let whole = all_events(&app.events(), &acme.id, "", 0).await;
    assert_eq!(all_events(&app.events(), &acme.id, "", 1).await, whole);
    for (i, event) in whole.iter().enumerate() {
        assert_eq!(all_events(&app.events(), &acme.id, &event.cursor, 3).await, whole[i + 1..]);
    }
    // Every workspace's, to a service key that names none.
    let everything = all_events(&app.events(), "", "", 0).await;
    assert_eq!(everything.iter().filter(|e| e.workspace_id == acme.id).cloned().collect::<Vec<_>>(), whole);
    assert!(everything.iter().any(|e| e.workspace_id == globex.id));
    // Only the types asked for.
    let request = pb::ListEventsRequest {
        workspace_id: acme.id.clone(),
        types: vec![T::ConversationAssigned as i32, T::ConversationResolved as i32],
        ..Default::default()
    };
    let only = app.events().list_events(service(request)).await.expect("filtered").into_inner();
    let kinds: Vec<_> = only.events.iter().map(kind).collect();
    assert_eq!(
        kinds,
        [T::ConversationAssigned, T::ConversationAssigned, T::ConversationAssigned, T::ConversationResolved]
    );
    // A filtered reader moves on to the newest event of the whole feed, not just its last one.
    assert_eq!(only.next_cursor, everything.last().expect("events").cursor);
}

#[tokio::test]
async fn people_read_their_own_workspace_with_audit_read_and_bad_arguments_are_refused() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let globex = app.workspace("globex").await;
    app.create_user(&acme.admin_token, "maria@acme.example", "agent").await.expect("agent");
    let maria = app.login("acme", "maria@acme.example", PASSWORD).await.expect("login");
    let list = |workspace_id: &str, after: &str, types: Vec<i32>| pb::ListEventsRequest {
        workspace_id: workspace_id.into(),
        after: after.into(),
        types,
        ..Default::default()
    };

    let own = app.events().list_events(bearer(&acme.admin_token, list("", "", vec![]))).await.expect("own");
    assert!(own.into_inner().events.iter().all(|e| e.workspace_id == acme.id));
    let agent = app.events().list_events(bearer(&maria, list("", "", vec![]))).await.expect_err("no audit.read");
    assert_status(&agent, Code::PermissionDenied, "PERMISSION_DENIED");
    let foreign =
        app.events().list_events(bearer(&acme.admin_token, list(&globex.id, "", vec![]))).await.expect_err("foreign");
    assert_status(&foreign, Code::PermissionDenied, "WORKSPACE_MISMATCH");
    let unknown = app.events().list_events(service(list(UNKNOWN_ID, "", vec![]))).await.expect_err("unknown");
    assert_status(&unknown, Code::NotFound, "WORKSPACE_NOT_FOUND");
    for after in ["x", "0000000000000000000000000000000g", &"0".repeat(33), "8000000000000000000000000000000a"] {
        let bad = app.events().list_events(service(list(&acme.id, after, vec![]))).await.expect_err("cursor");
        assert_invalid(&bad, "INVALID_FIELD", &["after"]);
    }
    for types in [vec![0], vec![99]] {
        let bad = app.events().list_events(service(list(&acme.id, "", types))).await.expect_err("type");
        assert_invalid(&bad, "INVALID_FIELD", &["types"]);
    }
    let watch = pb::WatchEventsRequest { workspace_id: globex.id.clone(), ..Default::default() };
    let foreign = app.events().watch_events(bearer(&acme.admin_token, watch)).await.expect_err("foreign watch");
    assert_status(&foreign, Code::PermissionDenied, "WORKSPACE_MISMATCH");
}

/// The next batch a watch sends, within a generous bound (the feed is meant to be far faster).
async fn next(stream: &mut tonic::Streaming<pb::WatchEventsResponse>) -> Vec<pb::Event> {
    let batch = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("an event in time");
    batch.expect("a batch").expect("open").events
}

#[tokio::test]
async fn a_watch_sends_what_followed_its_cursor_then_each_change_and_resumes_without_duplicates() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let start = all_events(&app.events(), &acme.id, "", 0).await;
    let watch = |after: &str| pb::WatchEventsRequest {
        workspace_id: acme.id.clone(),
        after: after.into(),
        ..Default::default()
    };
    let mut stream = app.events().watch_events(service(watch(&start[0].cursor))).await.expect("watch").into_inner();
    assert_eq!(next(&mut stream).await, start[1..]);

    let mut seen = Vec::new();
    for i in 0..3 {
        app.create_user(&acme.admin_token, &format!("agent{i}@acme.example"), "agent").await.expect("user");
        let batch = next(&mut stream).await;
        assert!(batch.iter().all(|e| kind(e) == pb::EventType::UserCreated), "{batch:?}");
        seen.extend(batch);
    }
    assert_eq!(seen.len(), 3);
    drop(stream);

    // Resumed from the last cursor it got: only what came after.
    app.create_user(&acme.admin_token, "later@acme.example", "agent").await.expect("user");
    let mut resumed = app.events().watch_events(service(watch(&seen[2].cursor))).await.expect("watch").into_inner();
    let batch = next(&mut resumed).await;
    assert_eq!(batch.len(), 1);
    let Some(Payload::User(later)) = &batch[0].payload else { panic!("{batch:?}") };
    assert_eq!(later.email, "later@acme.example");
}

/// A watch is not a pass for ever: a person who logs out, or whose role no longer grants
/// `audit.read`, is cut off with the reason a new call would get, before the next change reaches
/// them (a watch re-checks at most once a second, so the test waits that long first).
#[tokio::test]
async fn a_watching_person_who_logs_out_or_loses_audit_read_is_cut_off() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let ops = app.create_user(&acme.admin_token, "ops@acme.example", "admin").await.expect("ops");
    let ops_token = app.login("acme", "ops@acme.example", PASSWORD).await.expect("ops logs in");
    let own = || pb::WatchEventsRequest::default();
    let mut leaving = app.events().watch_events(bearer(&acme.admin_token, own())).await.expect("watch").into_inner();
    let mut demoted = app.events().watch_events(bearer(&ops_token, own())).await.expect("watch").into_inner();
    assert!(!next(&mut leaving).await.is_empty() && !next(&mut demoted).await.is_empty(), "the history first");
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    app.auth().logout(bearer(&acme.admin_token, pb::LogoutRequest {})).await.expect("logout");
    let mut user = ops.clone();
    user.role = "agent".into();
    let request = pb::UpdateUserRequest {
        user: Some(user),
        update_mask: Some(prost_types::FieldMask { paths: vec!["role".into()] }),
        workspace_id: acme.id.clone(),
    };
    app.users().update_user(service(request)).await.expect("ops becomes an agent");

    for (stream, code, reason) in [
        (&mut leaving, Code::Unauthenticated, "SESSION_INVALID"),
        (&mut demoted, Code::PermissionDenied, "PERMISSION_DENIED"),
    ] {
        let end = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.expect("an answer in time");
        assert_status(&end.expect_err("cut off, not sent the change"), code, reason);
    }
}

/// Two processes change two workspaces at once while a reader follows the whole feed (every
/// workspace) through one of them: the reader gets every event exactly once, although a
/// transaction that took its number earlier may commit later, and each user's last event is their
/// last change (commit order within a workspace).
#[tokio::test]
async fn two_processes_writing_at_once_lose_no_event_and_keep_each_workspaces_commit_order() {
    let app = spawn_app().await;
    let peer = app.spawn_peer_process().await;
    let (mut users, mut teams) = (Vec::new(), Vec::new());
    for slug in ["acme", "globex"] {
        let ws = app.workspace(slug).await;
        let team = crate::teams::create_team(&app, &ws.admin_token, "Support", pb::Strategy::RoundRobin).await;
        let team = team.expect("team");
        for i in 0..3 {
            let user = app.create_user(&ws.admin_token, &format!("u{i}@{slug}.example"), "agent").await.expect("user");
            crate::teams::add_member(&app, &ws.admin_token, &team.id, &user.id, None).await.expect("member");
            users.push((ws.id.clone(), user));
        }
        teams.push((ws.id.clone(), team.id));
    }
    let start = all_events(&app.events(), "", "", 0).await.last().expect("events").cursor.clone();

    let writers = 8;
    let assigners = 4;
    let rounds = 15;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Events become readable once every older transaction in the PostgreSQL cluster has ended
    // (other tests' included): the reader goes on until it has them all, or gives up after 20 s.
    let expected = (writers + assigners) * rounds;
    let reader = {
        let (channel, stop, start) = (peer.events(), stop.clone(), start.clone());
        tokio::spawn(async move {
            let (mut got, mut after) = (Vec::new(), start);
            let mut deadline = None;
            loop {
                let page = all_events(&channel, "", &after, 7).await;
                if let Some(last) = page.last() {
                    after = last.cursor.clone();
                }
                got.extend(page);
                if stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let deadline = *deadline.get_or_insert_with(|| std::time::Instant::now() + Duration::from_secs(20));
                    if got.len() >= expected || std::time::Instant::now() > deadline {
                        return got;
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    let mut tasks = Vec::new();
    for w in 0..writers {
        let client = if w % 2 == 0 { app.users() } else { peer.users() };
        let users = users.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                let (workspace, user) = &users[(w + round) % users.len()];
                let update = pb::UpdateUserRequest {
                    workspace_id: workspace.clone(),
                    user: Some(pb::User {
                        id: user.id.clone(),
                        full_name: format!("W{w} R{round}"),
                        ..Default::default()
                    }),
                    update_mask: Some(prost_types::FieldMask { paths: vec!["full_name".into()] }),
                };
                // A collision with another writer is answered, not lost: retried until it lands.
                loop {
                    match client.clone().update_user(service(update.clone())).await {
                        Ok(_) => break,
                        Err(status) if status.code() == Code::Aborted || status.code() == Code::Unavailable => {}
                        Err(status) => panic!("update: {status:?}"),
                    }
                }
            }
        }));
    }
    // Assignments beside the renames: each a new conversation, handed to an agent by round robin
    // (one event each), in the teams' streams rather than the workspaces'.
    for a in 0..assigners {
        let client = if a % 2 == 0 { app.assignments() } else { peer.assignments() };
        let teams = teams.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..rounds {
                let (workspace, team) = &teams[(a + round) % teams.len()];
                let assign = pb::AssignConversationRequest {
                    workspace_id: workspace.clone(),
                    conversation_id: format!("a{a}-r{round}"),
                    team_id: team.clone(),
                    ..Default::default()
                };
                loop {
                    match client.clone().assign_conversation(service(assign.clone())).await {
                        Ok(_) => break,
                        Err(status) if status.code() == Code::Aborted || status.code() == Code::Unavailable => {}
                        Err(status) => panic!("assign: {status:?}"),
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let followed = reader.await.expect("reader");
    let afterwards = all_events(&app.events(), "", &start, 0).await;

    assert_eq!(afterwards.len(), expected, "one event per change");
    let cursors: Vec<&String> = followed.iter().map(|e| &e.cursor).collect();
    assert_eq!(cursors.iter().collect::<HashSet<_>>().len(), cursors.len(), "no event twice");
    assert_eq!(followed.len(), afterwards.len(), "the follower missed events");
    assert_eq!(followed, afterwards, "the follower got every event, in the order a later reader sees");
    // A consumer that resumes from any cursor it was given gets exactly what followed it.
    for i in (0..afterwards.len()).step_by(17) {
        let resumed = all_events(&peer.events(), "", &afterwards[i].cursor, 5).await;
        assert_eq!(resumed, afterwards[i + 1..], "resumed after event {i}");
    }
    // Commit order: each user's last event names their final name; each conversation's, its
    // assignee.
    let (mut names, mut assignees) = (BTreeMap::new(), BTreeMap::new());
    for event in &afterwards {
        match &event.payload {
            Some(Payload::User(change)) => {
                names.insert(change.user_id.clone(), change.full_name.clone());
            }
            Some(Payload::Conversation(change)) => {
                let place = (event.workspace_id.clone(), change.assignee_id.clone());
                assignees.insert(change.conversation_id.clone(), place);
            }
            _ => panic!("{event:?}"),
        }
    }
    for (workspace, user) in &users {
        let request = pb::GetUserRequest { workspace_id: workspace.clone(), user_id: user.id.clone() };
        let now = app.users().get_user(service(request)).await.expect("user").into_inner().user.expect("user");
        assert_eq!(names.get(&user.id), Some(&now.full_name), "{}'s last event is their last change", user.id);
    }
    assert_eq!(assignees.len(), assigners * rounds);
    for (conversation, (workspace, assignee)) in &assignees {
        let request = pb::GetConversationAssignmentRequest {
            workspace_id: workspace.clone(),
            conversation_id: conversation.clone(),
        };
        let now = app.assignments().get_conversation_assignment(service(request)).await.expect("conversation");
        assert_eq!(&now.into_inner().assignment.expect("a").assignee_id, assignee, "{conversation}");
    }
}

/// Events older than the retention are purged; a cursor behind what was purged is refused with
/// its own reason rather than silently skipping, and one at the edge of it goes on.
#[tokio::test]
async fn a_cursor_older_than_the_retention_is_refused_not_silently_skipped() {
    let app = spawn_app_with(|c| c.events_retention_secs = 3).await;
    let acme = app.workspace("acme").await;
    let old = events_of(&app, &acme.id, &[], 3).await;
    assert_eq!(old.len(), 3);
    // Purged within about a second of turning three seconds old.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !all_events(&app.events(), &acme.id, "", 0).await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "never purged");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let request = |after: &str| pb::ListEventsRequest {
        workspace_id: acme.id.clone(),
        after: after.into(),
        ..Default::default()
    };
    for behind in &old[..2] {
        let expired = app.events().list_events(service(request(&behind.cursor))).await.expect_err("expired");
        assert_status(&expired, Code::FailedPrecondition, "CURSOR_EXPIRED");
        let watch = pb::WatchEventsRequest {
            workspace_id: acme.id.clone(),
            after: behind.cursor.clone(),
            ..Default::default()
        };
        let mut stream = app.events().watch_events(service(watch)).await.expect("watch").into_inner();
        let expired = stream.message().await.expect_err("expired");
        assert_status(&expired, Code::FailedPrecondition, "CURSOR_EXPIRED");
    }
    // The newest purged event's cursor missed nothing: it goes on with what comes next.
    let newest = &old[2].cursor;
    assert!(
        app.events().list_events(service(request(newest))).await.expect("at the edge").into_inner().events.is_empty()
    );
    app.create_user(&acme.admin_token, "new@acme.example", "agent").await.expect("user");
    // On PostgreSQL the event shows once no older transaction runs (other tests' among them).
    let next = eventually(Duration::from_secs(10), || {
        let (mut events, request) = (app.events(), service(request(newest)));
        async move {
            let next = events.list_events(request).await.expect("next").into_inner().events;
            (!next.is_empty()).then_some(next)
        }
    })
    .await
    .expect("the next event within 10 s");
    assert_eq!(next.iter().map(kind).collect::<Vec<_>>(), [pb::EventType::UserCreated]);
}

/// A watcher whose server is killed (`kill -9`) resumes on another with its last cursor and gets
/// every change exactly once, those made while it was away included.
#[tokio::test]
async fn a_watcher_resumes_on_another_process_after_a_kill_and_misses_nothing() {
    let app = spawn_app().await;
    let mut peer = app.spawn_peer_process().await;
    let acme = app.workspace("acme").await;
    let start = all_events(&app.events(), &acme.id, "", 0).await.last().expect("events").cursor.clone();
    let watch = |after: &str| pb::WatchEventsRequest {
        workspace_id: acme.id.clone(),
        after: after.into(),
        ..Default::default()
    };
    let mut stream = peer.events().watch_events(service(watch(&start))).await.expect("watch").into_inner();
    let mut got: Vec<pb::Event> = Vec::new();
    for i in 0..3 {
        app.create_user(&acme.admin_token, &format!("before{i}@acme.example"), "agent").await.expect("user");
        got.extend(next(&mut stream).await);
    }
    peer.kill().await;
    for i in 0..3 {
        app.create_user(&acme.admin_token, &format!("after{i}@acme.example"), "agent").await.expect("user");
    }
    let last = got.last().expect("events").cursor.clone();
    let mut resumed = app.events().watch_events(service(watch(&last))).await.expect("watch").into_inner();
    while got.len() < 6 {
        got.extend(next(&mut resumed).await);
    }
    let emails: Vec<String> = got
        .iter()
        .map(|e| match &e.payload {
            Some(Payload::User(user)) => user.email.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let expected: Vec<String> = ["before0", "before1", "before2", "after0", "after1", "after2"]
        .iter()
        .map(|name| format!("{name}@acme.example"))
        .collect();
    assert_eq!(emails, expected);
    assert_eq!(got, all_events(&app.events(), &acme.id, &start, 0).await);
}
