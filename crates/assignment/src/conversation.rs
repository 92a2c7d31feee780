//! What a call does to a conversation's assignment, decided from what the conversation is now.
//!
//! [`decide`] is the conversation's state machine: given the conversation as the call finds it
//! (under its team's lock) and what the call asks, it returns a [`Plan`] — leave it, refuse, resolve
//! it, or put it in a team's queue and hand it out — and the store carries the plan out in the same
//! transaction. Who gets a conversation handed out by strategy is [`crate::pick`]'s decision, made
//! while the plan is carried out, on the members' counts as they are then.

use std::fmt;

/// A conversation Roster tracks, as a call finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conversation<'a> {
    pub team_id: &'a str,
    /// Who holds it; `None` while it waits in its team's queue.
    pub assignee: Option<&'a str>,
    pub resolved: bool,
}

/// Who a conversation goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// Whoever the team's strategy picks.
    Strategy,
    /// This member, by hand.
    User(&'a str),
}

/// What a call asks of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// AssignConversation into `team_id` (the one named, or the conversation's own), to `to`.
    /// Only a transfer moves a conversation that is assigned or in another team.
    Assign { team_id: &'a str, to: Target<'a>, transfer: bool },
    /// UnassignConversation: back to the queue, and on to someone else.
    Unassign,
    /// ResolveConversation: closed.
    Resolve,
}

/// Whose conversation a person's permission was decided on. A grant with scope ASSIGNED covers
/// only the person's own conversations, so a call acts only on the conversation as it was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen<'a> {
    /// A service key: allowed whoever holds it.
    Any,
    /// Assigned to this user, or to nobody (also for a conversation Roster did not know).
    Assignee(Option<&'a str>),
}

/// What to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan<'a> {
    /// Nothing changes: the conversation already is as asked.
    Unchanged,
    /// Nothing changes: the call cannot be done.
    Refused(Refusal),
    /// Close it; `release` is the assignee whose load it leaves.
    Resolve { release: Option<&'a str> },
    /// Put it in a team's queue and hand it out.
    Route(Route<'a>),
}

/// Why a call cannot be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Assigned to someone else: only a transfer moves it.
    AlreadyAssigned,
    /// Open in another team: only a transfer moves it.
    OtherTeam,
    /// Resolved: there is nobody to unassign.
    Resolved,
    /// It changed hands since the caller's permission was decided on it.
    Changed,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::AlreadyAssigned => {
                "the conversation is already assigned to someone else: ask for a transfer to move it"
            }
            Refusal::OtherTeam => "the conversation belongs to another team: ask for a transfer to move it",
            Refusal::Resolved => "the conversation is resolved",
            Refusal::Changed => {
                "the conversation changed hands since the caller's permission was checked; retry the call"
            }
        })
    }
}

/// Into the queue of `team_id`, then handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route<'a> {
    pub kind: Kind,
    pub team_id: &'a str,
    /// The assignee whose load the conversation leaves (a transfer or an unassign).
    pub release: Option<&'a str>,
    /// Whether it joins the back of the queue, with [`Kind::queued_reason`]; `false` when it waits
    /// there already (an open, unassigned conversation of the team).
    pub enqueue: bool,
    pub then: Then<'a>,
}

/// What a routed conversation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Roster did not know it: it is created.
    New,
    /// Open and waiting in the team's queue.
    Queued,
    /// Resolved, and the customer wrote again.
    Reopened,
    /// Moved from its assignee or team.
    Transferred,
    /// Taken back from its assignee.
    Unassigned,
}

impl Kind {
    /// The reason a conversation shows while it waits after this.
    pub fn queued_reason(self) -> &'static str {
        match self {
            Kind::New | Kind::Queued | Kind::Reopened => "queued",
            Kind::Transferred => "queued: transferred",
            Kind::Unassigned => "queued: unassigned",
        }
    }
}

/// How a queued conversation is handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Then<'a> {
    /// To this member, by hand; refused if they cannot take it (not a member, away, at capacity).
    User(&'a str),
    /// By the team's strategy, at once, never to `exclude` (who just gave it up): a transfer or an
    /// unassign does not wait its turn.
    Strategy { exclude: Option<&'a str> },
    /// The team's queue is handed out oldest first, so whatever waited before it goes first.
    Queue,
}

/// What `action` does to `conversation` (`None`: Roster does not know it), for a caller whose
/// permission was decided on `seen`.
pub fn decide<'a>(conversation: Option<Conversation<'a>>, action: Action<'a>, seen: Seen<'_>) -> Plan<'a> {
    let assignee = conversation.and_then(|c| c.assignee);
    if let Seen::Assignee(seen) = seen
        && seen != assignee
    {
        return Plan::Refused(Refusal::Changed);
    }
    let route = |kind, team_id, release, enqueue, then| Plan::Route(Route { kind, team_id, release, enqueue, then });
    let Some(current) = conversation else {
        return match action {
            Action::Assign { team_id, to, .. } => route(Kind::New, team_id, None, true, by_hand_or_queue(to)),
            // Unknown conversations are answered NOT_FOUND by the store before it decides.
            Action::Unassign | Action::Resolve => Plan::Unchanged,
        };
    };
    match action {
        Action::Resolve if current.resolved => Plan::Unchanged,
        Action::Resolve => Plan::Resolve { release: current.assignee },
        Action::Unassign if current.resolved => Plan::Refused(Refusal::Resolved),
        Action::Unassign => match current.assignee {
            None => Plan::Unchanged,
            Some(previous) => route(
                Kind::Unassigned,
                current.team_id,
                Some(previous),
                true,
                Then::Strategy { exclude: Some(previous) },
            ),
        },
        // The customer wrote again: into the team's queue, and handed out.
        Action::Assign { team_id, to, .. } if current.resolved => {
            route(Kind::Reopened, team_id, None, true, by_hand_or_queue(to))
        }
        Action::Assign { team_id, to, transfer } => {
            let same_team = current.team_id == team_id;
            match (current.assignee, to) {
                (Some(holder), Target::User(user)) if holder == user && same_team => Plan::Unchanged,
                _ if transfer => {
                    let then = match to {
                        Target::User(user) => Then::User(user),
                        Target::Strategy => Then::Strategy { exclude: current.assignee },
                    };
                    route(Kind::Transferred, team_id, current.assignee, true, then)
                }
                _ if !same_team => Plan::Refused(Refusal::OtherTeam),
                (Some(_), Target::Strategy) => Plan::Unchanged,
                (Some(_), Target::User(_)) => Plan::Refused(Refusal::AlreadyAssigned),
                (None, to) => route(Kind::Queued, team_id, None, false, by_hand_or_queue(to)),
            }
        }
    }
}

fn by_hand_or_queue(to: Target<'_>) -> Then<'_> {
    match to {
        Target::User(user) => Then::User(user),
        Target::Strategy => Then::Queue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SALES: &str = "sales";
    const SUPPORT: &str = "support";

    fn open(team_id: &'static str, assignee: Option<&'static str>) -> Option<Conversation<'static>> {
        Some(Conversation { team_id, assignee, resolved: false })
    }

    fn assign(team_id: &'static str, to: Target<'static>, transfer: bool) -> Action<'static> {
        Action::Assign { team_id, to, transfer }
    }

    fn routed(plan: Plan<'_>) -> Route<'_> {
        match plan {
            Plan::Route(route) => route,
            other => panic!("not routed: {other:?}"),
        }
    }

    #[test]
    fn a_new_conversation_joins_the_queue_and_is_handed_out_oldest_first_or_by_hand() {
        let by_strategy = routed(decide(None, assign(SALES, Target::Strategy, false), Seen::Any));
        assert_eq!(
            by_strategy,
            Route { kind: Kind::New, team_id: SALES, release: None, enqueue: true, then: Then::Queue }
        );
        let by_hand = routed(decide(None, assign(SALES, Target::User("maria"), false), Seen::Assignee(None)));
        assert_eq!((by_hand.kind, by_hand.then), (Kind::New, Then::User("maria")));
    }

    #[test]
    fn asking_for_what_already_is_changes_nothing() {
        let held = open(SALES, Some("maria"));
        assert_eq!(decide(held, assign(SALES, Target::User("maria"), false), Seen::Any), Plan::Unchanged);
        assert_eq!(decide(held, assign(SALES, Target::User("maria"), true), Seen::Any), Plan::Unchanged);
        assert_eq!(decide(held, assign(SALES, Target::Strategy, false), Seen::Any), Plan::Unchanged);
        assert_eq!(decide(open(SALES, None), Action::Unassign, Seen::Any), Plan::Unchanged);
        let resolved = Some(Conversation { team_id: SALES, assignee: None, resolved: true });
        assert_eq!(decide(resolved, Action::Resolve, Seen::Any), Plan::Unchanged);
    }

    #[test]
    fn only_a_transfer_moves_an_assigned_conversation_or_one_of_another_team() {
        let held = open(SALES, Some("maria"));
        let refused = |plan| matches!(plan, Plan::Refused(_)).then_some(plan);
        assert_eq!(
            refused(decide(held, assign(SALES, Target::User("ken"), false), Seen::Any)),
            Some(Plan::Refused(Refusal::AlreadyAssigned))
        );
        assert_eq!(
            decide(open(SALES, None), assign(SUPPORT, Target::Strategy, false), Seen::Any),
            Plan::Refused(Refusal::OtherTeam)
        );
        let moved = routed(decide(held, assign(SUPPORT, Target::Strategy, true), Seen::Any));
        assert_eq!(
            moved,
            Route {
                kind: Kind::Transferred,
                team_id: SUPPORT,
                release: Some("maria"),
                enqueue: true,
                then: Then::Strategy { exclude: Some("maria") },
            }
        );
        assert_eq!(moved.kind.queued_reason(), "queued: transferred");
        let to_ken = routed(decide(held, assign(SALES, Target::User("ken"), true), Seen::Any));
        assert_eq!((to_ken.release, to_ken.then), (Some("maria"), Then::User("ken")));
    }

    #[test]
    fn a_resolved_conversation_is_reopened_in_the_named_team() {
        let resolved = Some(Conversation { team_id: SALES, assignee: None, resolved: true });
        for transfer in [false, true] {
            let reopened = routed(decide(resolved, assign(SUPPORT, Target::Strategy, transfer), Seen::Any));
            assert_eq!(
                reopened,
                Route { kind: Kind::Reopened, team_id: SUPPORT, release: None, enqueue: true, then: Then::Queue }
            );
        }
        assert_eq!(decide(resolved, Action::Unassign, Seen::Any), Plan::Refused(Refusal::Resolved));
    }

    #[test]
    fn unassigning_hands_it_to_someone_else_and_resolving_frees_the_assignee() {
        let held = open(SALES, Some("maria"));
        let unassigned = routed(decide(held, Action::Unassign, Seen::Any));
        assert_eq!(unassigned.then, Then::Strategy { exclude: Some("maria") });
        assert_eq!((unassigned.release, unassigned.kind.queued_reason()), (Some("maria"), "queued: unassigned"));
        assert_eq!(decide(held, Action::Resolve, Seen::Any), Plan::Resolve { release: Some("maria") });
    }

    #[test]
    fn a_person_acts_only_on_the_conversation_as_their_permission_saw_it() {
        let held = open(SALES, Some("maria"));
        assert_eq!(decide(held, Action::Resolve, Seen::Assignee(Some("ken"))), Plan::Refused(Refusal::Changed));
        assert_eq!(decide(held, Action::Resolve, Seen::Assignee(None)), Plan::Refused(Refusal::Changed));
        assert_eq!(
            decide(held, Action::Resolve, Seen::Assignee(Some("maria"))),
            Plan::Resolve { release: Some("maria") }
        );
        assert_eq!(
            decide(None, assign(SALES, Target::Strategy, false), Seen::Assignee(Some("maria"))),
            Plan::Refused(Refusal::Changed)
        );
    }

    fn user() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("maria"), Just("ken"), Just("ana")]
    }

    fn team() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(SALES), Just(SUPPORT)]
    }

    fn conversation() -> impl Strategy<Value = Option<Conversation<'static>>> {
        let known = (team(), proptest::option::of(user()), any::<bool>()).prop_map(|(team_id, assignee, resolved)| {
            // A resolved conversation has no assignee.
            Conversation { team_id, assignee: assignee.filter(|_| !resolved), resolved }
        });
        proptest::option::of(known)
    }

    fn action() -> impl Strategy<Value = Action<'static>> {
        let to = prop_oneof![Just(Target::Strategy), user().prop_map(Target::User)];
        prop_oneof![
            (team(), to, any::<bool>()).prop_map(|(team_id, to, transfer)| Action::Assign { team_id, to, transfer }),
            Just(Action::Unassign),
            Just(Action::Resolve),
        ]
    }

    fn seen() -> impl Strategy<Value = Seen<'static>> {
        prop_oneof![Just(Seen::Any), proptest::option::of(user()).prop_map(Seen::Assignee)]
    }

    proptest! {
        /// Load leaves only the one who holds the conversation, and only when it moves on or closes.
        #[test]
        fn only_the_holder_is_released(conversation in conversation(), action in action(), seen in seen()) {
            let holder = conversation.and_then(|c| c.assignee);
            match decide(conversation, action, seen) {
                Plan::Resolve { release } | Plan::Route(Route { release, .. }) => {
                    prop_assert!(release.is_none() || release == holder);
                    let gives_up = matches!(action, Action::Unassign | Action::Resolve | Action::Assign { transfer: true, .. });
                    prop_assert!(release.is_none() || gives_up, "{:?} released {:?}", action, release);
                }
                Plan::Unchanged | Plan::Refused(_) => {}
            }
        }

        /// A routed conversation ends up in the team the call named, and a conversation that was
        /// not queued there, or is transferred, joins the back of its queue first.
        #[test]
        fn a_route_lands_in_the_asked_team(conversation in conversation(), action in action()) {
            if let Plan::Route(route) = decide(conversation, action, Seen::Any) {
                if let Action::Assign { team_id, .. } = action {
                    prop_assert_eq!(route.team_id, team_id);
                }
                let waiting_there = conversation.is_some_and(|c| {
                    !c.resolved && c.assignee.is_none() && c.team_id == route.team_id
                });
                prop_assert_eq!(route.enqueue, !waiting_there || route.kind == Kind::Transferred);
                if let Then::Strategy { exclude } = route.then {
                    prop_assert_eq!(exclude, route.release);
                }
            }
        }

        /// Without a transfer, an assigned conversation never changes hands.
        #[test]
        fn an_assignment_is_kept_without_a_transfer(
            team_id in team(), holder in user(), to in prop_oneof![Just(Target::Strategy), user().prop_map(Target::User)],
        ) {
            let held = Some(Conversation { team_id, assignee: Some(holder), resolved: false });
            let plan = decide(held, Action::Assign { team_id, to, transfer: false }, Seen::Any);
            prop_assert!(matches!(plan, Plan::Unchanged | Plan::Refused(Refusal::AlreadyAssigned)));
            prop_assert_eq!(plan == Plan::Unchanged, to == Target::Strategy || to == Target::User(holder));
        }

        /// A caller whose view is out of date changes nothing; an up-to-date view never decides the plan.
        #[test]
        fn a_stale_view_is_refused_and_a_current_one_is_the_same_as_a_service(
            conversation in conversation(), action in action(), seen in proptest::option::of(user()),
        ) {
            let holder = conversation.and_then(|c| c.assignee);
            let plan = decide(conversation, action, Seen::Assignee(seen));
            if seen == holder {
                prop_assert_eq!(plan, decide(conversation, action, Seen::Any));
            } else {
                prop_assert_eq!(plan, Plan::Refused(Refusal::Changed));
            }
        }
    }
}
