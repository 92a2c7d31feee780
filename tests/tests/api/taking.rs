//! Agents take queued work: they see the queues of their own teams and take a conversation for
//! themselves, within their capacity; exactly one of several takers gets a conversation.

use crate::assignment::{get, route, set_availability};
use crate::roles::create_role;
use crate::teams::{add_member, team_of_agents};
use roster_proto::v1 as pb;
use roster_tests::*;
use tonic::{Code, Status};
use tonic_types::StatusExt;

fn take(team_id: &str, conversation_id: &str) -> pb::TakeConversationRequest {
    pb::TakeConversationRequest {
        team_id: team_id.into(),
        conversation_id: conversation_id.into(),
        ..Default::default()
    }
}

async fn take_as(
    app: &TestApp,
    token: &str,
    team_id: &str,
    conversation_id: &str,
) -> Result<pb::ConversationAssignment, Status> {
    let taken = app.assignments().take_conversation(bearer(token, take(team_id, conversation_id))).await?;
    Ok(taken.into_inner().assignment.expect("assignment"))
}

/// The queue of `team_id` as the person with `token` lists it.
async fn queue_as(app: &TestApp, token: &str, team_id: &str) -> Result<Vec<String>, Status> {
    let request =
        pb::ListConversationAssignmentsRequest { team_id: team_id.into(), queued: true, ..Default::default() };
    let page = app.assignments().list_conversation_assignments(bearer(token, request)).await?.into_inner();
    Ok(page.assignments.into_iter().map(|a| a.conversation_id).collect())
}

/// Why an assignment was refused, from the error's metadata.
fn why(status: &Status) -> String {
    let details = status.get_error_details();
    details.error_info().expect("ErrorInfo").metadata.get("why").cloned().unwrap_or_default()
}

#[tokio::test]
async fn an_agent_sees_their_teams_queue_and_takes_the_oldest_or_the_one_they_name() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (vip, agents) = team_of_agents(&app, &acme, "VIP", pb::Strategy::Manual, 2, None).await;
    let (other, _) = team_of_agents(&app, &acme, "Other", pb::Strategy::Manual, 1, None).await;
    for id in ["vip-1", "vip-2", "vip-3"] {
        assert_eq!(route(&app, &acme.id, id, &vip.id).await.assignee_id, "", "a manual team queues");
    }
    route(&app, &acme.id, "other-1", &other.id).await;
    let maria = app.login("acme", &agents[0].email, PASSWORD).await.expect("login");
    let li = app.login("acme", &agents[1].email, PASSWORD).await.expect("login");

    assert_eq!(queue_as(&app, &maria, &vip.id).await.expect("her team's queue"), ["vip-1", "vip-2", "vip-3"]);
    let foreign = queue_as(&app, &maria, &other.id).await.expect_err("not her team");
    assert_status(&foreign, Code::PermissionDenied, "PERMISSION_DENIED");

    let oldest = take_as(&app, &maria, &vip.id, "").await.expect("the oldest");
    assert_eq!(
        (oldest.conversation_id.as_str(), oldest.assignee_id.as_str(), oldest.reason.as_str()),
        ("vip-1", agents[0].id.as_str(), "taken from the queue")
    );
    let named = take_as(&app, &maria, &vip.id, "vip-3").await.expect("named");
    assert_eq!((named.conversation_id.as_str(), named.assignee_id.as_str()), ("vip-3", agents[0].id.as_str()));
    let gone = take_as(&app, &li, &vip.id, "vip-3").await.expect_err("taken already");
    assert_status(&gone, Code::FailedPrecondition, "NOT_QUEUED");
    let elsewhere = take_as(&app, &li, &vip.id, "other-1").await.expect_err("another team's");
    assert_status(&elsewhere, Code::FailedPrecondition, "NOT_QUEUED");
    assert_eq!(queue_as(&app, &li, &vip.id).await.expect("queue"), ["vip-2"]);

    // Audited, and in the change feed with the assignment's reason.
    let request = pb::ListAuditEventsRequest { workspace_id: acme.id.clone(), page_size: 5, ..Default::default() };
    let audit = app.audit().list_audit_events(service(request)).await.expect("audit").into_inner().events;
    assert_eq!(audit[0].action, "conversation.taken");
    assert_eq!(audit[0].actor, format!("user:{}", agents[0].id));
    let events = events_of(&app, &acme.id, &[pb::EventType::ConversationAssigned], 2).await;
    let taken: Vec<(String, String)> = events
        .iter()
        .map(|e| match &e.payload {
            Some(pb::event::Payload::Conversation(c)) => (c.conversation_id.clone(), c.reason.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    let reason = "taken from the queue".to_owned();
    assert_eq!(taken, [("vip-1".to_owned(), reason.clone()), ("vip-3".to_owned(), reason)]);
}

#[tokio::test]
async fn taking_is_refused_at_capacity_away_outside_ones_teams_and_without_the_permission() {
    let app = spawn_app().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "VIP", pb::Strategy::Manual, 1, Some(1)).await;
    for id in ["vip-1", "vip-2"] {
        route(&app, &acme.id, id, &team.id).await;
    }
    let maria = app.login("acme", &agents[0].email, PASSWORD).await.expect("login");
    let outsider = app.create_user(&acme.admin_token, "sam@acme.example", "agent").await.expect("user");
    let sam = app.login("acme", &outsider.email, PASSWORD).await.expect("login");
    let closer = create_role(&app, &acme.admin_token, "Closer", &[("conversations.read", pb::Scope::Assigned)])
        .await
        .expect("a role without conversations.take");
    let member = app.create_user(&acme.admin_token, "cleo@acme.example", &closer.id).await.expect("user");
    add_member(&app, &acme.admin_token, &team.id, &member.id, None).await.expect("member");
    let cleo = app.login("acme", &member.email, PASSWORD).await.expect("login");
    set_availability(&app, &acme.id, &agents[0].id, pb::Availability::Away).await;
    let fingerprint = app.fingerprint(false).await;
    let before = fingerprint.read().await;

    let away = take_as(&app, &maria, &team.id, "").await.expect_err("away");
    assert_status(&away, Code::FailedPrecondition, "ASSIGNEE_NOT_ELIGIBLE");
    assert_eq!(why(&away), "AWAY");
    let not_member = take_as(&app, &sam, &team.id, "").await.expect_err("not a member");
    assert_status(&not_member, Code::FailedPrecondition, "ASSIGNEE_NOT_ELIGIBLE");
    assert_eq!(why(&not_member), "NOT_A_MEMBER");
    let no_grant = take_as(&app, &cleo, &team.id, "").await.expect_err("no conversations.take");
    assert_status(&no_grant, Code::PermissionDenied, "PERMISSION_DENIED");
    let key = app.assignments().take_conversation(service(take(&team.id, ""))).await.expect_err("a service key");
    assert_status(&key, Code::PermissionDenied, "PERSON_REQUIRED");
    let unknown = take_as(&app, &maria, &team.id, "wa:unknown").await.expect_err("unknown conversation");
    assert_status(&unknown, Code::NotFound, "CONVERSATION_NOT_FOUND");
    let bad = take_as(&app, &maria, "nope", " ").await.expect_err("bad ids");
    assert_invalid(&bad, "INVALID_FIELD", &["team_id", "conversation_id"]);
    assert_eq!(fingerprint.read().await, before, "a refused take changes nothing");
    set_availability(&app, &acme.id, &agents[0].id, pb::Availability::Online).await;

    take_as(&app, &maria, &team.id, "").await.expect("room for one");
    let full = take_as(&app, &maria, &team.id, "").await.expect_err("at capacity");
    assert_status(&full, Code::FailedPrecondition, "ASSIGNEE_NOT_ELIGIBLE");
    assert_eq!(why(&full), "AT_CAPACITY");
    assert_eq!(get(&app, &acme.id, "vip-2").await.assignee_id, "", "still queued");
    let request = pb::ResolveConversationRequest { workspace_id: acme.id.clone(), conversation_id: "vip-2".into() };
    app.assignments().resolve_conversation(service(request)).await.expect("resolve");
    let request = pb::ResolveConversationRequest { workspace_id: acme.id.clone(), conversation_id: "vip-1".into() };
    app.assignments().resolve_conversation(service(request)).await.expect("resolve");
    let empty = take_as(&app, &maria, &team.id, "").await.expect_err("nothing queued");
    assert_status(&empty, Code::FailedPrecondition, "QUEUE_EMPTY");
}

/// Two agents on two processes take the same conversation at once, many times over: each time
/// exactly one gets it and the other is told it is gone; taking "the oldest" at once, each gets a
/// different one.
#[tokio::test]
async fn of_two_agents_taking_at_once_on_two_processes_exactly_one_gets_each_conversation() {
    let app = spawn_app().await;
    let peer = app.spawn_peer_process().await;
    let acme = app.workspace("acme").await;
    let (team, agents) = team_of_agents(&app, &acme, "VIP", pb::Strategy::Manual, 2, None).await;
    let maria = app.login("acme", &agents[0].email, PASSWORD).await.expect("login");
    let li = app.login("acme", &agents[1].email, PASSWORD).await.expect("login");
    let rounds = 10;
    for i in 0..rounds {
        route(&app, &acme.id, &format!("c{i}"), &team.id).await;
    }
    for i in 0..rounds {
        let id = format!("c{i}");
        let (mut here, mut there) = (app.assignments(), peer.assignments());
        let (here, there) = tokio::join!(
            here.take_conversation(bearer(&maria, take(&team.id, &id))),
            there.take_conversation(bearer(&li, take(&team.id, &id)))
        );
        let (winner, loser) = match (here, there) {
            (Ok(won), Err(lost)) => ((won, &agents[0].id), lost),
            (Err(lost), Ok(won)) => ((won, &agents[1].id), lost),
            other => panic!("exactly one taker gets {id}: {other:?}"),
        };
        assert_eq!(&winner.0.into_inner().assignment.expect("a").assignee_id, winner.1);
        assert_status(&loser, Code::FailedPrecondition, "NOT_QUEUED");
        assert_eq!(&get(&app, &acme.id, &id).await.assignee_id, winner.1);
    }

    route(&app, &acme.id, "d1", &team.id).await;
    route(&app, &acme.id, "d2", &team.id).await;
    let (here, there) = tokio::join!(take_as(&app, &maria, &team.id, ""), async {
        let taken = peer.assignments().take_conversation(bearer(&li, take(&team.id, ""))).await?;
        Ok::<_, Status>(taken.into_inner().assignment.expect("a"))
    });
    let mut taken = [here.expect("one").conversation_id, there.expect("the other").conversation_id];
    taken.sort();
    assert_eq!(taken, ["d1", "d2"]);
}
