//! Strategies, eligibility and the pick.

use std::fmt;

/// How a team hands out new conversations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Strategy {
    /// The next eligible member after the one served last, in the team's stable order.
    RoundRobin,
    /// The eligible member with the fewest open conversations; ties to the one assigned longest ago.
    LoadBalanced,
    /// Nobody automatically: conversations wait in the team's queue until someone assigns them.
    Manual,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [Strategy::RoundRobin, Strategy::LoadBalanced, Strategy::Manual];

    /// The stored and displayed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "ROUND_ROBIN",
            Strategy::LoadBalanced => "LOAD_BALANCED",
            Strategy::Manual => "MANUAL",
        }
    }

    /// The strategy stored as [`Strategy::as_str`].
    pub fn from_stored(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }
}

/// The most open conversations an agent takes automatically; 0 means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Capacity(u32);

impl Capacity {
    pub const UNLIMITED: Capacity = Capacity(0);

    pub fn new(max_open: u32) -> Self {
        Self(max_open)
    }

    /// The limit, 0 for unlimited.
    pub fn max_open(self) -> u32 {
        self.0
    }

    /// Whether an agent with `open` conversations may take one more.
    pub fn allows(self, open: u32) -> bool {
        self.0 == 0 || open < self.0
    }
}

/// A team member as a pick sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member<'a> {
    pub user_id: &'a str,
    /// The name reasons show ("round robin: after Maria").
    pub name: &'a str,
    /// The member's place in the team's stable order: positions only grow as members are added,
    /// so a member keeps their place while skipped.
    pub position: i64,
    pub active: bool,
    pub online: bool,
    /// Open conversations assigned to them, in every team.
    pub open: u32,
    /// Their capacity in this team: the member's override, else the workspace default.
    pub capacity: Capacity,
    /// When a conversation was last assigned to them (milliseconds), `None` if never.
    pub last_assigned_at: Option<i64>,
}

/// Why a member cannot take a conversation now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ineligible {
    Deactivated,
    Away,
    AtCapacity,
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Ineligible::Deactivated => "deactivated",
            Ineligible::Away => "away",
            Ineligible::AtCapacity => "at capacity",
        })
    }
}

impl Member<'_> {
    /// Active, ONLINE and under capacity. (Membership is given: only members are candidates.)
    pub fn eligibility(&self) -> Result<(), Ineligible> {
        if !self.active {
            Err(Ineligible::Deactivated)
        } else if !self.online {
            Err(Ineligible::Away)
        } else if !self.capacity.allows(self.open) {
            Err(Ineligible::AtCapacity)
        } else {
            Ok(())
        }
    }

    pub fn is_eligible(&self) -> bool {
        self.eligibility().is_ok()
    }
}

/// Why a member was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why<'a> {
    /// Round robin; `after` is the member served last, `None` when nobody was yet or they left.
    RoundRobin { after: Option<&'a str> },
    /// Load balanced: the member had `open` conversations, the fewest; `tied` eligible members
    /// had as few, and the one assigned longest ago won.
    LoadBalanced { open: u32, tied: usize },
}

impl fmt::Display for Why<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::RoundRobin { after: Some(name) } => write!(f, "round robin: after {name}"),
            Why::RoundRobin { after: None } => f.write_str("round robin: first in turn"),
            Why::LoadBalanced { open, tied } if *tied > 1 => {
                write!(f, "load balanced: {open} open, fewest (tied with {}; assigned longest ago)", tied - 1)
            }
            Why::LoadBalanced { open, .. } => write!(f, "load balanced: {open} open, fewest"),
        }
    }
}

/// Why nobody was picked: the conversation waits in the team's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Queued {
    /// The team assigns by hand.
    pub manual: bool,
    pub members: usize,
    pub deactivated: usize,
    pub away: usize,
    pub at_capacity: usize,
}

impl fmt::Display for Queued {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.manual {
            return f.write_str("queued: manual team, waiting for someone to assign it");
        }
        if self.members == 0 {
            return f.write_str("queued: the team has no members");
        }
        f.write_str("queued: ")?;
        let plural = |n: usize| if n == 1 { "member" } else { "members" };
        let mut first = true;
        for (n, what) in [(self.deactivated, "deactivated"), (self.away, "away"), (self.at_capacity, "at capacity")] {
            if n == 0 {
                continue;
            }
            if first {
                write!(f, "{n} {} {what}", plural(n))?;
                first = false;
            } else {
                write!(f, ", {n} {what}")?;
            }
        }
        Ok(())
    }
}

/// The outcome of a pick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick<'a> {
    /// Assign to `members[index]`.
    Assign { index: usize, why: Why<'a> },
    /// Nobody eligible (or a manual team): queue it.
    Queue(Queued),
}

/// Picks who of `members` gets a new conversation of a team with `strategy`. `last` is the
/// position of the member round robin served last (`None` if nobody yet). Members may come in any
/// order; ties are broken by position, so the answer never depends on it.
pub fn pick<'a>(strategy: Strategy, members: &[Member<'a>], last: Option<i64>) -> Pick<'a> {
    let eligible = || members.iter().enumerate().filter(|(_, m)| m.is_eligible());
    let chosen = match strategy {
        Strategy::Manual => None,
        Strategy::RoundRobin => {
            let next =
                last.and_then(|last| eligible().filter(|(_, m)| m.position > last).min_by_key(|(_, m)| m.position));
            next.or_else(|| eligible().min_by_key(|(_, m)| m.position)).map(|(index, _)| {
                let after = last.and_then(|last| members.iter().find(|m| m.position == last)).map(|m| m.name);
                (index, Why::RoundRobin { after })
            })
        }
        Strategy::LoadBalanced => eligible()
            // `None` (never assigned) sorts first: they have waited longest.
            .min_by_key(|(_, m)| (m.open, m.last_assigned_at, m.position))
            .map(|(index, m)| {
                let tied = eligible().filter(|(_, o)| o.open == m.open).count();
                (index, Why::LoadBalanced { open: m.open, tied })
            }),
    };
    match chosen {
        Some((index, why)) => Pick::Assign { index, why },
        None => {
            let mut queued =
                Queued { manual: strategy == Strategy::Manual, members: members.len(), ..Queued::default() };
            for member in members {
                match member.eligibility() {
                    Err(Ineligible::Deactivated) => queued.deactivated += 1,
                    Err(Ineligible::Away) => queued.away += 1,
                    Err(Ineligible::AtCapacity) => queued.at_capacity += 1,
                    Ok(()) => {}
                }
            }
            Pick::Queue(queued)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Capacity, Member, Pick, Strategy, Why, pick};
    use proptest::prelude::{Just, any, prop_assert, prop_assert_eq, prop_oneof, proptest};
    use proptest::strategy::Strategy as Generator;

    const NAMES: [&str; 8] = ["Maria", "Ken", "Ana", "Li", "Sam", "Noor", "Joe", "Eva"];

    fn member(i: usize) -> Member<'static> {
        Member {
            user_id: NAMES[i],
            name: NAMES[i],
            position: i as i64 * 10,
            active: true,
            online: true,
            open: 0,
            capacity: Capacity::UNLIMITED,
            last_assigned_at: None,
        }
    }

    fn team(k: usize) -> Vec<Member<'static>> {
        (0..k).map(member).collect()
    }

    /// Runs `n` round robin picks as the store does: assign, remember the position.
    fn round_robin(members: &mut [Member<'static>], last: &mut Option<i64>, n: usize) -> Vec<&'static str> {
        let mut picked = Vec::new();
        for _ in 0..n {
            if let Pick::Assign { index, .. } = pick(Strategy::RoundRobin, members, *last) {
                members[index].open += 1;
                *last = Some(members[index].position);
                picked.push(members[index].name);
            }
        }
        picked
    }

    #[test]
    fn round_robin_goes_around_in_order_and_says_after_whom() {
        let mut members = team(3);
        let mut last = None;
        assert_eq!(round_robin(&mut members, &mut last, 4), ["Maria", "Ken", "Ana", "Maria"]);
        match pick(Strategy::RoundRobin, &members, last) {
            Pick::Assign { index, why } => {
                assert_eq!(members[index].name, "Ken");
                assert_eq!(why.to_string(), "round robin: after Maria");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            pick(Strategy::RoundRobin, &members, None),
            Pick::Assign { index: 0, why: Why::RoundRobin { after: None } }
        );
    }

    #[test]
    fn a_skipped_member_keeps_their_place() {
        let mut members = team(3);
        let mut last = Some(0); // Maria served last.
        members[1].online = false; // Ken is away: skipped.
        assert_eq!(round_robin(&mut members, &mut last, 1), ["Ana"]);
        members[1].online = true; // Ken is back: his turn comes after Ana's, as before.
        assert_eq!(round_robin(&mut members, &mut last, 3), ["Maria", "Ken", "Ana"]);
    }

    #[test]
    fn round_robin_continues_after_a_member_who_left() {
        let mut members = team(3);
        members.remove(1); // Ken (position 10) served last and left.
        match pick(Strategy::RoundRobin, &members, Some(10)) {
            Pick::Assign { index, why } => {
                assert_eq!(members[index].name, "Ana");
                assert_eq!(why.to_string(), "round robin: first in turn");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn load_balanced_picks_the_fewest_open_and_breaks_ties_by_longest_wait() {
        let mut members = team(3);
        members[0].open = 2;
        members[1].open = 1;
        members[1].last_assigned_at = Some(500);
        members[2].open = 1;
        members[2].last_assigned_at = Some(100);
        match pick(Strategy::LoadBalanced, &members, None) {
            Pick::Assign { index, why } => {
                assert_eq!(members[index].name, "Ana");
                assert_eq!(why.to_string(), "load balanced: 1 open, fewest (tied with 1; assigned longest ago)");
            }
            other => panic!("{other:?}"),
        }
        members[2].open = 3;
        assert_eq!(pick(Strategy::LoadBalanced, &members, None).to_string_why(), "load balanced: 1 open, fewest");
    }

    #[test]
    fn nobody_eligible_queues_with_the_count_of_each_cause() {
        let mut members = team(5);
        for m in &mut members[..3] {
            m.online = false;
        }
        members[3].capacity = Capacity::new(2);
        members[3].open = 2;
        members[4].active = false;
        let Pick::Queue(queued) = pick(Strategy::RoundRobin, &members, None) else { panic!("assigned") };
        assert_eq!(queued.to_string(), "queued: 1 member deactivated, 3 away, 1 at capacity");
        members[4].active = true;
        members[4].online = false;
        let Pick::Queue(queued) = pick(Strategy::LoadBalanced, &members, None) else { panic!("assigned") };
        assert_eq!(queued.to_string(), "queued: 4 members away, 1 at capacity");
        assert_eq!(pick(Strategy::RoundRobin, &[], None).to_string_why(), "queued: the team has no members");
    }

    #[test]
    fn a_manual_team_always_queues() {
        assert_eq!(
            pick(Strategy::Manual, &team(3), None).to_string_why(),
            "queued: manual team, waiting for someone to assign it"
        );
    }

    #[test]
    fn capacity_zero_is_unlimited() {
        assert!(Capacity::UNLIMITED.allows(u32::MAX - 1));
        assert!(Capacity::new(3).allows(2));
        assert!(!Capacity::new(3).allows(3));
    }

    impl Pick<'_> {
        fn to_string_why(self) -> String {
            match self {
                Pick::Assign { why, .. } => why.to_string(),
                Pick::Queue(queued) => queued.to_string(),
            }
        }
    }

    fn arb_member() -> impl Generator<Value = (bool, bool, u32, u32, Option<i64>)> {
        (any::<bool>(), any::<bool>(), 0u32..5, 0u32..4, proptest::option::of(0i64..1000))
    }

    fn members_from(spec: &[(bool, bool, u32, u32, Option<i64>)]) -> Vec<Member<'static>> {
        spec.iter()
            .enumerate()
            .map(|(i, &(active, online, open, cap, last))| Member {
                active,
                online,
                open,
                capacity: Capacity::new(cap),
                last_assigned_at: last,
                ..member(i)
            })
            .collect()
    }

    fn arb_strategy() -> impl Generator<Value = Strategy> {
        prop_oneof![Just(Strategy::RoundRobin), Just(Strategy::LoadBalanced), Just(Strategy::Manual)]
    }

    proptest! {
        /// Whoever is picked is eligible; a queue happens only when nobody is (or the team is manual),
        /// and its counts name every member.
        #[test]
        fn picks_are_eligible_and_queues_are_explained(
            spec in proptest::collection::vec(arb_member(), 0..8),
            strategy in arb_strategy(),
            last in proptest::option::of(0i64..80),
        ) {
            let members = members_from(&spec);
            match pick(strategy, &members, last) {
                Pick::Assign { index, .. } => {
                    prop_assert!(strategy != Strategy::Manual);
                    prop_assert!(members[index].is_eligible());
                }
                Pick::Queue(q) => {
                    prop_assert!(strategy == Strategy::Manual || !members.iter().any(Member::is_eligible));
                    if strategy != Strategy::Manual {
                        prop_assert_eq!(q.deactivated + q.away + q.at_capacity, members.len());
                    }
                }
            }
        }

        /// Load balanced never picks a member with more open conversations than another eligible one.
        #[test]
        fn load_balanced_never_picks_a_busier_member(spec in proptest::collection::vec(arb_member(), 1..8)) {
            let members = members_from(&spec);
            if let Pick::Assign { index, .. } = pick(Strategy::LoadBalanced, &members, None) {
                let fewest = members.iter().filter(|m| m.is_eligible()).map(|m| m.open).min();
                prop_assert_eq!(Some(members[index].open), fewest);
            }
        }

        /// With k always-eligible members, n round robin picks give each ⌊n/k⌋ or ⌈n/k⌉, from any start.
        #[test]
        fn round_robin_is_fair(k in 1usize..8, n in 0usize..200, start in proptest::option::of(0i64..80)) {
            let mut members = team(k);
            let mut last = start;
            let picked = round_robin(&mut members, &mut last, n);
            prop_assert_eq!(picked.len(), n);
            for m in &members {
                let got = m.open as usize;
                prop_assert!(got == n / k || got == n.div_ceil(k), "{} got {} of {} over {}", m.name, got, n, k);
            }
        }

        /// Assigning only what the pick allows never takes anyone past their capacity, under any
        /// strategy and interleaving of resolves.
        #[test]
        fn picks_never_exceed_capacity(
            spec in proptest::collection::vec(arb_member(), 1..8),
            strategy in arb_strategy(),
            steps in proptest::collection::vec(proptest::option::of(0usize..8), 0..100),
        ) {
            let mut members = members_from(&spec);
            for m in &mut members {
                m.open = 0;
            }
            let mut last = None;
            for step in steps {
                match step {
                    // Someone resolves a conversation.
                    Some(i) if i < members.len() => members[i].open = members[i].open.saturating_sub(1),
                    _ => {
                        if let Pick::Assign { index, .. } = pick(strategy, &members, last) {
                            members[index].open += 1;
                            last = Some(members[index].position);
                        }
                    }
                }
                for m in &members {
                    let cap = m.capacity.max_open();
                    prop_assert!(cap == 0 || m.open <= cap);
                }
            }
        }
    }
}
