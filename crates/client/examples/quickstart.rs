//! A tour of Roster through the client, as an internal service would drive it with a service key:
//! a workspace, an agent in a round-robin team, a permission check, a conversation routed to the
//! agent, the change feed, and errors matched by reason.
//!
//! ```sh
//! ROSTER_URL=http://127.0.0.1:50051 ROSTER_SERVICE_KEY=dev-only-secret-change-me \
//!   cargo run -p roster-client --example quickstart
//! ```
//!
//! It exits non-zero when anything does not go as described.

use roster_client::proto::v1;
use roster_client::{Client, Credential, Error, Reason};
use std::process::ExitCode;
use std::time::Duration;

type Failure = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // With the causes: a transport error says only "transport error" by itself.
            let mut message = failure.to_string();
            let mut cause = failure.source();
            while let Some(inner) = cause {
                message = format!("{message}: {inner}");
                cause = inner.source();
            }
            eprintln!("quickstart failed: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<(), Failure> {
    let url = std::env::var("ROSTER_URL").unwrap_or_else(|_| "http://127.0.0.1:50051".to_owned());
    let key = std::env::var("ROSTER_SERVICE_KEY")
        .map_err(|_| "set ROSTER_SERVICE_KEY to one of the server's service keys")?;
    let client = Client::connect(&url, Credential::service_key(&key)?).await?;
    match client.who_am_i().await?.principal {
        Some(v1::who_am_i_response::Principal::ServiceKeyName(name)) => {
            println!("connected to {url} as service key {name}")
        }
        other => return Err(format!("expected to call as a service key, not {other:?}").into()),
    }

    // A workspace and its first admin. The request id makes the create safe to retry: a repeated
    // id gets the first answer, so the client retries it on UNAVAILABLE or SERVER_OVERLOADED.
    let slug = format!("quickstart-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let new_workspace = v1::CreateWorkspaceRequest {
        slug: slug.clone(),
        name: "Quickstart Support".to_owned(),
        admin: Some(v1::NewAdmin {
            email: format!("ada@{slug}.example"),
            full_name: "Ada Admin".to_owned(),
            password: "correct horse battery".to_owned(),
        }),
        request_id: request_id(),
    };
    let created = client.create_workspace(new_workspace.clone()).await?;
    let workspace = created.workspace.ok_or("CreateWorkspace answered no workspace")?;
    let ws = workspace.id.clone();
    println!("created workspace {slug} ({ws}) on {}", workspace.plan().as_str_name());

    // The Free Trial's one seat is the admin's: an agent does not fit until the plan changes.
    let new_agent = v1::CreateUserRequest {
        workspace_id: ws.clone(),
        email: format!("maria@{slug}.example"),
        full_name: "Maria Agent".to_owned(),
        password: "agent password 1".to_owned(),
        role: "agent".to_owned(),
        request_id: request_id(),
    };
    let refused = expect_reason(client.create_user(new_agent.clone()).await, Reason::SeatLimitReached)?;
    println!(
        "an agent does not fit yet: {} (seat limit {}, seats used {})",
        refused.reason().map_or("", Reason::as_str),
        refused.metadata("seat_limit").unwrap_or("?"),
        refused.metadata("seats_used").unwrap_or("?"),
    );
    let upgrade = v1::ChangePlanRequest { workspace_id: ws.clone(), plan: v1::Plan::Growth.into() };
    let subscription = client.billing().change_plan(upgrade).await.map_err(Error::from)?.into_inner().subscription;
    println!("upgraded to Growth: {} seats", subscription.map_or(0, |s| s.seat_limit));

    let agent = client
        .create_user(v1::CreateUserRequest { request_id: request_id(), ..new_agent })
        .await?
        .user
        .ok_or("CreateUser answered no user")?;
    println!("created agent {} ({})", agent.full_name, agent.id);

    // Only ONLINE agents are handed conversations. New users start ONLINE; say so explicitly.
    let online = v1::SetAvailabilityRequest {
        workspace_id: ws.clone(),
        user_id: agent.id.clone(),
        availability: v1::Availability::Online.into(),
    };
    let agent = client.users().set_availability(online).await.map_err(Error::from)?.into_inner().user;
    let availability = agent.as_ref().map(v1::User::availability);
    if availability != Some(v1::Availability::Online) {
        return Err(format!("the agent is {availability:?}, not ONLINE").into());
    }
    let agent = agent.ok_or("SetAvailability answered no user")?;
    println!("agent is {}", v1::Availability::Online.as_str_name());

    // A round-robin team with the agent in it.
    let mut teams = client.teams();
    let team = v1::CreateTeamRequest {
        workspace_id: ws.clone(),
        name: "Support".to_owned(),
        strategy: v1::Strategy::RoundRobin.into(),
    };
    let team = teams.create_team(team).await.map_err(Error::from)?.into_inner().team.ok_or("no team")?;
    let member = v1::AddTeamMemberRequest {
        workspace_id: ws.clone(),
        team_id: team.id.clone(),
        user_id: agent.id.clone(),
        max_open_conversations: None,
    };
    teams.add_team_member(member).await.map_err(Error::from)?;
    println!("created team {} ({}) with the agent in it", team.name, team.strategy().as_str_name());

    // A WhatsApp conversation arrives: who takes it?
    let conversation_id = "wa:+15550100:1".to_owned();
    let assign = v1::AssignConversationRequest {
        workspace_id: ws.clone(),
        conversation_id: conversation_id.clone(),
        team_id: team.id.clone(),
        ..Default::default()
    };
    let assignment = client.assign_conversation(assign).await?.assignment.ok_or("no assignment")?;
    if assignment.assignee_id != agent.id {
        return Err(format!("assigned to {:?}, expected the agent {}", assignment.assignee_id, agent.id).into());
    }
    println!("{conversation_id} assigned to {} ({}): {}", agent.full_name, assignment.assignee_id, assignment.reason);

    // May she reply to it? Agents reply to the conversations assigned to them (scope ASSIGNED).
    let may_reply = v1::CheckPermissionRequest {
        workspace_id: ws.clone(),
        user_id: agent.id.clone(),
        permission: "conversations.reply".to_owned(),
        resource: Some(v1::Resource { assignee_user_id: assignment.assignee_id.clone() }),
    };
    let decision = client.check_permission(may_reply).await?.decision.ok_or("no decision")?;
    if !decision.allowed {
        return Err(format!("the agent may not reply: {}", decision.explanation).into());
    }
    println!("may the agent reply to it? yes: {}", decision.explanation);
    let batch = v1::CheckPermissionsRequest {
        workspace_id: ws.clone(),
        checks: vec![v1::PermissionCheck {
            user_id: agent.id.clone(),
            permission: "users.manage".to_owned(),
            resource: None,
        }],
    };
    let results = client.check_permissions(batch).await?.results;
    match results.first().and_then(|r| r.result.as_ref()) {
        Some(v1::check_result::Result::Decision(decision)) if !decision.allowed => {
            println!("may the agent manage users? no: {}", decision.explanation);
        }
        other => return Err(format!("expected a denial of users.manage, got {other:?}").into()),
    }

    // The change feed of the workspace, from its start: read until the assignment, then let go.
    let watch = v1::WatchEventsRequest { workspace_id: ws.clone(), ..Default::default() };
    let mut feed = client.events().watch_events(watch).await.map_err(Error::from)?.into_inner();
    let mut seen = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), feed.message())
            .await
            .map_err(|_| "no assignment event on the feed within 10 s")?
            .map_err(Error::from)?
            .ok_or("the feed ended")?;
        let mut assigned = false;
        for event in message.events {
            seen += 1;
            println!("  feed: {}", event.r#type().as_str_name());
            assigned |= event.r#type() == v1::EventType::ConversationAssigned;
        }
        if assigned {
            break;
        }
    }
    drop(feed);
    println!("read {seen} events from the feed, up to the assignment");

    // Errors are matched by reason: the slug is taken now.
    let again = v1::CreateWorkspaceRequest { request_id: request_id(), ..new_workspace };
    let taken = expect_reason(client.create_workspace(again).await, Reason::SlugTaken)?;
    println!(
        "creating {slug} again: {:?} {} (field {})",
        taken.code(),
        taken.reason().map_or("", Reason::as_str),
        taken.metadata("field").unwrap_or("?")
    );

    println!("quickstart: all as expected");
    Ok(())
}

/// A fresh idempotency key.
fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The error of a call that should have failed with `want`.
fn expect_reason<T: std::fmt::Debug>(result: Result<T, Error>, want: Reason) -> Result<Error, Failure> {
    match result {
        Err(error) if error.reason() == Some(&want) => Ok(error),
        Err(error) => Err(format!("expected {want}, got {error}").into()),
        Ok(answer) => Err(format!("expected {want}, got an answer: {answer:?}").into()),
    }
}
