//! Domain and store records to and from their protobuf messages; the only place that knows both.

use crate::error::Violations;
use crate::error::invalid;
use roster_assignment::Strategy;
use roster_authz::{Decision, Grants, Permission, Reason, Scope};
use roster_proto::v1 as pb;
use roster_store::{
    AuditEvent, Availability, Conversation, ConversationStatus, Event, EventCursor, Plan, StoredRole, Team, TeamMember,
    User, UserStatus, Workspace,
};
use tonic::Status;

pub(crate) fn timestamp(millis: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: millis.div_euclid(1000), nanos: (millis.rem_euclid(1000) * 1_000_000) as i32 }
}

pub(crate) fn user(user: &User) -> pb::User {
    pb::User {
        id: user.id.clone(),
        workspace_id: user.workspace_id.clone(),
        email: user.email.as_str().to_owned(),
        full_name: user.full_name.as_str().to_owned(),
        role: user.role.as_str().to_owned(),
        status: user_status(user.status) as i32,
        availability: availability(user.availability) as i32,
        create_time: Some(timestamp(user.created_at)),
        update_time: Some(timestamp(user.updated_at)),
        etag: user.version.to_string(),
    }
}

pub(crate) fn user_status(status: UserStatus) -> pb::UserStatus {
    match status {
        UserStatus::Active => pb::UserStatus::Active,
        UserStatus::Deactivated => pb::UserStatus::Deactivated,
        UserStatus::Invited => pb::UserStatus::Invited,
    }
}

pub(crate) fn availability(a: Availability) -> pb::Availability {
    match a {
        Availability::Online => pb::Availability::Online,
        Availability::Away => pb::Availability::Away,
    }
}

/// A count as the API's int32.
fn count(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn plan(plan: Plan) -> pb::Plan {
    match plan {
        Plan::FreeTrial => pb::Plan::FreeTrial,
        Plan::Growth => pb::Plan::Growth,
        Plan::Scale => pb::Plan::Scale,
    }
}

/// A plan named in a request.
pub(crate) fn plan_from_proto(value: i32) -> Result<Plan, &'static str> {
    match pb::Plan::try_from(value) {
        Ok(pb::Plan::FreeTrial) => Ok(Plan::FreeTrial),
        Ok(pb::Plan::Growth) => Ok(Plan::Growth),
        Ok(pb::Plan::Scale) => Ok(Plan::Scale),
        Ok(pb::Plan::Unspecified) | Err(_) => Err("one of PLAN_FREE_TRIAL, PLAN_GROWTH, PLAN_SCALE"),
    }
}

pub(crate) fn plan_offer(offer: Plan) -> pb::PlanOffer {
    pb::PlanOffer { plan: plan(offer) as i32, display_name: offer.name().to_owned(), seats: count(offer.seats()) }
}

pub(crate) fn subscription(ws: &Workspace) -> pb::Subscription {
    let seats = ws.seats();
    pb::Subscription {
        workspace_id: ws.id.clone(),
        plan: plan(seats.plan) as i32,
        plan_display_name: seats.plan.name().to_owned(),
        plan_seats: count(seats.plan.seats()),
        extra_seats: count(ws.subscription.extra_seats.get()),
        seat_limit: count(seats.limit),
        seats_used: count(seats.used),
        seats_free: count(seats.free()),
    }
}

pub(crate) fn workspace(ws: &Workspace) -> pb::Workspace {
    pb::Workspace {
        id: ws.id.clone(),
        slug: ws.slug.as_str().to_owned(),
        name: ws.name.as_str().to_owned(),
        plan: plan(ws.subscription.plan) as i32,
        extra_seats: count(ws.subscription.extra_seats.get()),
        seat_limit: count(ws.seats().limit),
        seats_used: count(ws.seats_used),
        create_time: Some(timestamp(ws.created_at)),
        max_open_conversations: i32::try_from(ws.max_open.max_open()).unwrap_or(i32::MAX),
    }
}

pub(crate) fn audit_event(event: AuditEvent) -> pb::AuditEvent {
    pb::AuditEvent {
        id: event.id.to_string(),
        workspace_id: event.workspace_id,
        actor: event.actor,
        action: event.action,
        target: event.target,
        time: Some(timestamp(event.created_at)),
        request_id: event.request_id,
        details: event.details.into_iter().collect(),
    }
}

/// The change feed's event types, as the API and the store name them.
const EVENT_TYPES: [(pb::EventType, &str); 29] = [
    (pb::EventType::ConversationAssigned, "conversation.assigned"),
    (pb::EventType::ConversationQueued, "conversation.queued"),
    (pb::EventType::ConversationTransferred, "conversation.transferred"),
    (pb::EventType::ConversationUnassigned, "conversation.unassigned"),
    (pb::EventType::ConversationResolved, "conversation.resolved"),
    (pb::EventType::UserCreated, "user.created"),
    (pb::EventType::UserUpdated, "user.updated"),
    (pb::EventType::UserRoleChanged, "user.role_changed"),
    (pb::EventType::UserDeactivated, "user.deactivated"),
    (pb::EventType::UserReactivated, "user.reactivated"),
    (pb::EventType::UserAvailabilityChanged, "user.availability_changed"),
    (pb::EventType::UserInvitationSent, "user.invitation_sent"),
    (pb::EventType::UserActivated, "user.activated"),
    (pb::EventType::UserPasswordReset, "user.password_reset"),
    (pb::EventType::UserPasswordResetSent, "user.password_reset_sent"),
    (pb::EventType::UserEmailChanged, "user.email_changed"),
    (pb::EventType::RoleCreated, "role.created"),
    (pb::EventType::RoleChanged, "role.changed"),
    (pb::EventType::RoleDeleted, "role.deleted"),
    (pb::EventType::TeamCreated, "team.created"),
    (pb::EventType::TeamChanged, "team.changed"),
    (pb::EventType::TeamDeleted, "team.deleted"),
    (pb::EventType::MembershipAdded, "membership.added"),
    (pb::EventType::MembershipRemoved, "membership.removed"),
    (pb::EventType::MembershipChanged, "membership.changed"),
    (pb::EventType::PlanChanged, "plan.changed"),
    (pb::EventType::SeatsChanged, "seats.changed"),
    (pb::EventType::WorkspaceCreated, "workspace.created"),
    (pb::EventType::WorkspaceChanged, "workspace.changed"),
];

/// An event type asked for: a known one, not unspecified.
pub(crate) fn event_type_from(value: i32) -> Result<&'static str, String> {
    let known = pb::EventType::try_from(value).ok();
    EVENT_TYPES
        .iter()
        .find(|(t, _)| Some(*t) == known)
        .map(|(_, name)| *name)
        .ok_or_else(|| format!("unknown event type {value}"))
}

/// A feed position as the API's opaque cursor: 32 hex digits, which sort as the feed does.
pub(crate) fn cursor(cursor: EventCursor) -> String {
    format!("{:016x}{:016x}", cursor.txid as u64, cursor.id as u64)
}

/// A cursor this server handed out, or `None`.
pub(crate) fn cursor_from(text: &str) -> Option<EventCursor> {
    if text.len() != 32 || !text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let txid = i64::try_from(u64::from_str_radix(&text[..16], 16).ok()?).ok()?;
    let id = i64::try_from(u64::from_str_radix(&text[16..], 16).ok()?).ok()?;
    Some(EventCursor { txid, id })
}

/// A change feed event, its payload typed from what the store recorded.
pub(crate) fn event(event: Event) -> pb::Event {
    use pb::event::Payload;
    let detail = |key: &str| event.details.get(key).cloned().unwrap_or_default();
    let number = |key: &str| event.details.get(key).and_then(|v| v.parse::<i32>().ok()).unwrap_or_default();
    let plan_of = |key: &str| {
        event.details.get(key).and_then(|v| Plan::from_stored(v)).map_or(pb::Plan::Unspecified, plan) as i32
    };
    let id = event.target.split_once(':').map_or("", |(_, id)| id).to_owned();
    let kind =
        EVENT_TYPES.iter().find(|(_, name)| *name == event.event_type).map_or(pb::EventType::Unspecified, |(t, _)| *t);
    let (group, _) = event.event_type.split_once('.').unwrap_or_default();
    let payload = match group {
        "conversation" => {
            // A transfer names whom it went to, or "by strategy" (the next event says whom).
            let to = detail("to");
            let assignee = if kind == pb::EventType::ConversationTransferred { to } else { detail("assignee") };
            Payload::Conversation(pb::ConversationChange {
                conversation_id: id,
                team_id: detail("team"),
                assignee_id: if crate::api::is_record_id(&assignee) { assignee } else { String::new() },
                previous_assignee_id: if event.details.contains_key("from") {
                    detail("from")
                } else {
                    detail("previous_assignee")
                },
                previous_team_id: detail("from_team"),
                reason: detail("reason"),
            })
        }
        "user" => Payload::User(pb::UserChange {
            user_id: id,
            email: detail("email"),
            full_name: detail("full_name"),
            role_id: detail("role"),
            previous_role_id: detail("old_role"),
            availability: match event.details.get("availability").map(|a| Availability::from_stored(a)) {
                Some(Ok(a)) => availability(a) as i32,
                _ => pb::Availability::Unspecified as i32,
            },
            conversations_requeued: number("conversations_requeued"),
            status: match event.details.get("status").map(|s| UserStatus::from_stored(s)) {
                Some(Ok(status)) => user_status(status) as i32,
                _ => pb::UserStatus::Unspecified as i32,
            },
            previous_email: detail("previous_email"),
            sessions_revoked: number("sessions_revoked"),
        }),
        "role" => {
            Payload::Role(pb::RoleChange { role_id: id, name: detail("name"), moved_to_role_id: detail("moved_to") })
        }
        "team" => Payload::Team(pb::TeamChange {
            team_id: id,
            name: detail("name"),
            strategy: Strategy::from_stored(&detail("strategy")).map_or(pb::Strategy::Unspecified, strategy) as i32,
        }),
        "membership" => Payload::Membership(pb::MembershipChange {
            team_id: id,
            user_id: detail("user"),
            max_open_conversations: event.details.get("max_open_conversations").and_then(|v| v.parse::<i32>().ok()),
        }),
        "plan" => Payload::Subscription(pb::SubscriptionChange {
            plan: plan_of("to"),
            previous_plan: plan_of("from"),
            extra_seats: 0,
            seat_limit: number("seat_limit"),
        }),
        "seats" => Payload::Subscription(pb::SubscriptionChange {
            plan: pb::Plan::Unspecified as i32,
            previous_plan: pb::Plan::Unspecified as i32,
            extra_seats: number("to"),
            seat_limit: number("seat_limit"),
        }),
        _ => Payload::Workspace(pb::WorkspaceChange { slug: detail("slug"), name: detail("name") }),
    };
    pb::Event {
        cursor: cursor(event.cursor),
        r#type: kind as i32,
        workspace_id: event.workspace_id,
        actor: event.actor,
        request_id: event.request_id,
        time: Some(timestamp(event.created_at)),
        payload: Some(payload),
    }
}

/// A user status filter: unspecified means any.
pub(crate) fn status_filter(value: i32) -> Result<Option<UserStatus>, Status> {
    match pb::UserStatus::try_from(value) {
        Ok(pb::UserStatus::Unspecified) => Ok(None),
        Ok(pb::UserStatus::Active) => Ok(Some(UserStatus::Active)),
        Ok(pb::UserStatus::Deactivated) => Ok(Some(UserStatus::Deactivated)),
        Ok(pb::UserStatus::Invited) => Ok(Some(UserStatus::Invited)),
        Err(_) => Err(invalid("status", format!("unknown user status {value}"))),
    }
}

/// An availability to set: unspecified is refused.
pub(crate) fn availability_from(value: i32) -> Result<Availability, String> {
    match pb::Availability::try_from(value) {
        Ok(pb::Availability::Online) => Ok(Availability::Online),
        Ok(pb::Availability::Away) => Ok(Availability::Away),
        Ok(pb::Availability::Unspecified) => Err("choose AVAILABILITY_ONLINE or AVAILABILITY_AWAY".into()),
        Err(_) => Err(format!("unknown availability {value}")),
    }
}

/// An availability filter: unspecified means any.
pub(crate) fn availability_filter(value: i32) -> Result<Option<Availability>, Status> {
    match value {
        0 => Ok(None),
        _ => availability_from(value).map(Some).map_err(|why| invalid("availability", why)),
    }
}

/// Page sizes: 0 means the default, above the maximum is lowered to it, negative is refused.
pub(crate) fn page_size(value: i32) -> Result<u64, Status> {
    const DEFAULT: u64 = 50;
    const MAX: u64 = 500;
    match value {
        0 => Ok(DEFAULT),
        n if n < 0 => Err(invalid("page_size", "must not be negative")),
        n => Ok((n as u64).min(MAX)),
    }
}

/// An opaque page token: the listing's kind and the cursor, hex-encoded. It grants nothing: the
/// next page is still filtered by the caller's workspace and the call's filters.
pub(crate) fn encode_page_token(kind: &str, cursor: Option<String>) -> String {
    match cursor {
        Some(cursor) => format!("{kind}:{cursor}").bytes().map(|b| format!("{b:02x}")).collect(),
        None => String::new(),
    }
}

pub(crate) fn decode_page_token(kind: &str, token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid("page_token", "not a page token of this listing; start again without one");
    if !token.len().is_multiple_of(2) || token.len() > 2048 {
        return Err(bad());
    }
    let bytes = (0..token.len())
        .step_by(2)
        .map(|i| token.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(bad)?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let cursor = text.strip_prefix(kind).and_then(|rest| rest.strip_prefix(':')).ok_or_else(bad)?;
    Ok(Some(cursor.to_owned()))
}

pub(crate) fn scope(scope: Scope) -> pb::Scope {
    match scope {
        Scope::All => pb::Scope::All,
        Scope::Assigned => pb::Scope::Assigned,
    }
}

/// Every permission `grants` holds, in catalog order.
pub(crate) fn grants(grants: &Grants) -> Vec<pb::Grant> {
    grants.iter().map(|(p, s)| pb::Grant { permission: p.name().to_owned(), scope: scope(s) as i32 }).collect()
}

pub(crate) fn role(stored: &StoredRole) -> pb::Role {
    pb::Role {
        id: stored.role.id.clone(),
        workspace_id: stored.workspace_id.clone().unwrap_or_default(),
        name: stored.role.name.clone(),
        description: stored.description.clone(),
        builtin: stored.workspace_id.is_none(),
        all_permissions: stored.role.grants == Grants::Everything,
        grants: grants(&stored.role.grants),
        create_time: Some(timestamp(stored.created_at)),
        update_time: Some(timestamp(stored.updated_at)),
        etag: stored.version.to_string(),
    }
}

/// Grants from a request's list, naming each bad item as `field[i]`.
pub(crate) fn grants_from(v: &mut Violations, field: &str, items: &[pb::Grant]) -> Option<Grants> {
    let mut pairs = Vec::with_capacity(items.len());
    let before = v.len();
    for (i, item) in items.iter().enumerate() {
        let Ok(permission) = Permission::parse(&item.permission) else {
            v.add(
                &format!("{field}[{i}].permission"),
                format!("unknown permission {:?}; see ListPermissions", item.permission),
            );
            continue;
        };
        let scope = match (pb::Scope::try_from(item.scope), permission.is_scoped()) {
            (Ok(pb::Scope::All), _) => Scope::All,
            (Ok(pb::Scope::Assigned), true) => Scope::Assigned,
            (Ok(pb::Scope::Unspecified), false) => Scope::All,
            (Ok(pb::Scope::Unspecified), true) => {
                v.add(
                    &format!("{field}[{i}].scope"),
                    format!("{permission} needs a scope: SCOPE_ALL or SCOPE_ASSIGNED"),
                );
                continue;
            }
            (Ok(pb::Scope::Assigned), false) => {
                v.add(
                    &format!("{field}[{i}].scope"),
                    format!("{permission} has no scope; leave it unspecified or ALL"),
                );
                continue;
            }
            (Err(_), _) => {
                v.add(&format!("{field}[{i}].scope"), "unknown scope");
                continue;
            }
        };
        pairs.push((permission, scope));
    }
    (v.len() == before).then(|| Grants::only(pairs))
}

pub(crate) fn decision(decision: &Decision, role_id: &str) -> pb::Decision {
    let (reason, granted) = match &decision.reason {
        Reason::Granted { scope, .. } => (pb::DecisionReason::Granted, Some(*scope)),
        Reason::Deactivated => (pb::DecisionReason::UserDeactivated, None),
        Reason::NotGranted { .. } => (pb::DecisionReason::NotGranted, None),
        Reason::NotAssigned { .. } => (pb::DecisionReason::NotAssigned, Some(Scope::Assigned)),
        Reason::ResourceRequired { .. } => (pb::DecisionReason::ResourceRequired, Some(Scope::Assigned)),
    };
    pb::Decision {
        allowed: decision.allowed,
        reason: reason as i32,
        explanation: decision.reason.explanation(),
        role_id: role_id.to_owned(),
        scope: granted.map_or(pb::Scope::Unspecified, scope) as i32,
    }
}

pub(crate) fn strategy(strategy: Strategy) -> pb::Strategy {
    match strategy {
        Strategy::RoundRobin => pb::Strategy::RoundRobin,
        Strategy::LoadBalanced => pb::Strategy::LoadBalanced,
        Strategy::Manual => pb::Strategy::Manual,
    }
}

/// A strategy to set: unspecified is refused.
pub(crate) fn strategy_from(value: i32) -> Result<Strategy, String> {
    match pb::Strategy::try_from(value) {
        Ok(pb::Strategy::RoundRobin) => Ok(Strategy::RoundRobin),
        Ok(pb::Strategy::LoadBalanced) => Ok(Strategy::LoadBalanced),
        Ok(pb::Strategy::Manual) => Ok(Strategy::Manual),
        Ok(pb::Strategy::Unspecified) => {
            Err("choose STRATEGY_ROUND_ROBIN, STRATEGY_LOAD_BALANCED or STRATEGY_MANUAL".into())
        }
        Err(_) => Err(format!("unknown strategy {value}")),
    }
}

pub(crate) fn team(team: &Team) -> pb::Team {
    pb::Team {
        id: team.id.clone(),
        workspace_id: team.workspace_id.clone(),
        name: team.name.as_str().to_owned(),
        strategy: strategy(team.strategy) as i32,
        member_count: i32::try_from(team.members).unwrap_or(i32::MAX),
        create_time: Some(timestamp(team.created_at)),
        update_time: Some(timestamp(team.updated_at)),
        etag: team.version.to_string(),
    }
}

pub(crate) fn team_member(member: &TeamMember) -> pb::TeamMember {
    let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let eligibility = member.candidate().eligibility();
    pb::TeamMember {
        team_id: member.team_id.clone(),
        user_id: member.user_id.clone(),
        full_name: member.full_name.as_str().to_owned(),
        max_open_conversations: member.max_open.map(|c| to_i32(c.max_open())),
        effective_max_open_conversations: to_i32(member.capacity.max_open()),
        open_conversations: to_i32(member.open),
        eligible: eligibility.is_ok(),
        ineligible_reason: eligibility.err().map(|why| why.to_string()).unwrap_or_default(),
        add_time: Some(timestamp(member.added_at)),
    }
}

pub(crate) fn conversation(c: &Conversation) -> pb::ConversationAssignment {
    pb::ConversationAssignment {
        conversation_id: c.id.as_str().to_owned(),
        workspace_id: c.workspace_id.clone(),
        team_id: c.team_id.clone(),
        assignee_id: c.assignee.clone().unwrap_or_default(),
        status: match c.status {
            ConversationStatus::Open => pb::ConversationStatus::Open,
            ConversationStatus::Resolved => pb::ConversationStatus::Resolved,
        } as i32,
        reason: c.reason.clone(),
        queue_time: Some(timestamp(c.queued_at)),
        assign_time: c.assigned_at.map(timestamp),
        resolve_time: c.resolved_at.map(timestamp),
        create_time: Some(timestamp(c.created_at)),
        update_time: Some(timestamp(c.updated_at)),
        etag: c.version.to_string(),
        sequence: c.sequence.and_then(|n| u64::try_from(n).ok()).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_are_bound_to_their_listing() {
        let token = encode_page_token("users", Some("a@example.com".into()));
        assert_eq!(decode_page_token("users", &token).ok(), Some(Some("a@example.com".to_owned())));
        assert!(decode_page_token("audit", &token).is_err());
        assert!(decode_page_token("users", "zz").is_err());
        assert!(decode_page_token("users", "é1").is_err());
        assert_eq!(encode_page_token("users", None), "");
    }

    #[test]
    fn page_sizes_default_cap_and_refuse_negatives() {
        assert_eq!(page_size(0).ok(), Some(50));
        assert_eq!(page_size(10_000).ok(), Some(500));
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn timestamps_before_the_epoch_keep_nanos_positive() {
        assert_eq!(timestamp(-1), prost_types::Timestamp { seconds: -1, nanos: 999_000_000 });
    }
}
