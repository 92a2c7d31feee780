//! Roster's plans and seats: how many people a workspace may have active, and the two checks that
//! keep it there.
//!
//! A seat is an active or invited user; admins count, deactivated users do not. The seat limit is the plan's
//! seats plus the extra seats support granted. [`check_seat`] decides whether one more active user
//! fits (CreateUser, ReactivateUser); [`check_change`] whether a new plan or a new number of extra
//! seats still holds everyone active (ChangePlan, SetExtraSeats). Both are pure: the store calls them
//! inside the transaction that holds the workspace's row lock, with the seats in use it counted
//! there, so two processes cannot both give away the last seat. Each answers with the numbers, and
//! a refusal says them in words people read: "plan Growth allows 5 seats, 5 in use".

use std::fmt;

/// The plans a workspace can be on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Plan {
    /// One seat: the workspace's first admin.
    FreeTrial,
    /// Five seats.
    Growth,
    /// Ten seats.
    Scale,
}

impl Plan {
    /// Every plan, smallest first: the catalog.
    pub const ALL: [Plan; 3] = [Plan::FreeTrial, Plan::Growth, Plan::Scale];

    /// The seats the plan includes.
    pub const fn seats(self) -> u32 {
        match self {
            Plan::FreeTrial => 1,
            Plan::Growth => 5,
            Plan::Scale => 10,
        }
    }

    /// The name people read: "Free Trial".
    pub const fn name(self) -> &'static str {
        match self {
            Plan::FreeTrial => "Free Trial",
            Plan::Growth => "Growth",
            Plan::Scale => "Scale",
        }
    }

    /// The stored and machine-readable form: "FREE_TRIAL".
    pub const fn as_str(self) -> &'static str {
        match self {
            Plan::FreeTrial => "FREE_TRIAL",
            Plan::Growth => "GROWTH",
            Plan::Scale => "SCALE",
        }
    }

    /// The plan stored as [`Plan::as_str`].
    pub fn from_stored(text: &str) -> Option<Plan> {
        Plan::ALL.into_iter().find(|plan| plan.as_str() == text)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Seats granted on top of the plan's ("contact support"): 0 to [`ExtraSeats::MAX`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExtraSeats(u32);

/// Why a number of extra seats was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("must be between 0 and {max}, got {got}", max = ExtraSeats::MAX)]
pub struct ExtraSeatsError {
    pub got: i64,
}

impl ExtraSeats {
    /// The most extra seats a workspace can have.
    pub const MAX: u32 = 100_000;

    /// `n` extra seats, if within 0..=[`ExtraSeats::MAX`].
    pub fn new(n: i64) -> Result<Self, ExtraSeatsError> {
        match u32::try_from(n) {
            Ok(n) if n <= Self::MAX => Ok(Self(n)),
            _ => Err(ExtraSeatsError { got: n }),
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

/// A workspace's plan and extra seats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub plan: Plan,
    pub extra_seats: ExtraSeats,
}

impl Subscription {
    /// The plan's seats plus the extra seats.
    pub const fn seat_limit(&self) -> u32 {
        self.plan.seats() + self.extra_seats.get()
    }

    /// The seats this subscription gives against `used`.
    pub const fn seats(&self, used: u32) -> Seats {
        Seats { plan: self.plan, limit: self.seat_limit(), used }
    }
}

/// Seats of a workspace: its plan, its limit, and how many are in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seats {
    pub plan: Plan,
    pub limit: u32,
    pub used: u32,
}

impl Seats {
    /// Seats nobody holds (none when over the limit).
    pub const fn free(&self) -> u32 {
        self.limit.saturating_sub(self.used)
    }

    /// How many active users must be deactivated to fit (none when within the limit).
    pub const fn over(&self) -> u32 {
        self.used.saturating_sub(self.limit)
    }
}

/// "plan Growth allows 5 seats, 5 in use".
impl fmt::Display for Seats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seats = if self.limit == 1 { "seat" } else { "seats" };
        write!(f, "plan {} allows {} {seats}, {} in use", self.plan, self.limit, self.used)
    }
}

/// One more active user does not fit: the seats as they are, all taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{seats}")]
pub struct SeatLimitReached {
    pub seats: Seats,
}

/// A plan or extra-seat change would leave more active users than seats: the seats it would give.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{seats}: deactivate {} user{} first", seats.over(), if seats.over() == 1 { "" } else { "s" })]
pub struct TooManyInUse {
    pub seats: Seats,
}

/// Whether one more active user fits in `subscription` with `used` seats taken. `Ok` has the seats
/// once they hold it.
pub fn check_seat(subscription: &Subscription, used: u32) -> Result<Seats, SeatLimitReached> {
    let seats = subscription.seats(used);
    if used < seats.limit { Ok(subscription.seats(used + 1)) } else { Err(SeatLimitReached { seats }) }
}

/// Whether moving to `to` keeps the `used` seats in use. `Ok` has the seats it gives.
pub fn check_change(to: &Subscription, used: u32) -> Result<Seats, TooManyInUse> {
    let seats = to.seats(used);
    if seats.over() == 0 { Ok(seats) } else { Err(TooManyInUse { seats }) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn on(plan: Plan, extra: i64) -> Subscription {
        Subscription { plan, extra_seats: ExtraSeats::new(extra).expect("extra seats") }
    }

    #[test]
    fn the_catalog_is_the_help_articles() {
        let catalog: Vec<_> = Plan::ALL.iter().map(|p| (p.name(), p.seats())).collect();
        assert_eq!(catalog, [("Free Trial", 1), ("Growth", 5), ("Scale", 10)]);
        for plan in Plan::ALL {
            assert_eq!(Plan::from_stored(plan.as_str()), Some(plan));
        }
        assert_eq!(Plan::from_stored("growth"), None);
    }

    #[test]
    fn extra_seats_add_to_the_plans() {
        assert_eq!(on(Plan::Growth, 3).seat_limit(), 8);
        assert_eq!(ExtraSeats::new(-1), Err(ExtraSeatsError { got: -1 }));
        assert!(ExtraSeats::new(i64::from(ExtraSeats::MAX) + 1).is_err());
        assert_eq!(ExtraSeats::new(-1).unwrap_err().to_string(), "must be between 0 and 100000, got -1");
    }

    #[test]
    fn the_last_free_seat_is_given_once_and_the_refusal_says_the_numbers() {
        let growth = on(Plan::Growth, 0);
        assert_eq!(check_seat(&growth, 4), Ok(Seats { plan: Plan::Growth, limit: 5, used: 5 }));
        let refused = check_seat(&growth, 5).unwrap_err();
        assert_eq!(refused.seats, Seats { plan: Plan::Growth, limit: 5, used: 5 });
        assert_eq!(refused.to_string(), "plan Growth allows 5 seats, 5 in use");
        let trial = check_seat(&on(Plan::FreeTrial, 0), 1).unwrap_err();
        assert_eq!(trial.to_string(), "plan Free Trial allows 1 seat, 1 in use");
    }

    #[test]
    fn a_downgrade_below_the_seats_in_use_says_how_many_to_deactivate() {
        let refused = check_change(&on(Plan::FreeTrial, 0), 4).unwrap_err();
        assert_eq!(refused.seats.over(), 3);
        assert_eq!(refused.to_string(), "plan Free Trial allows 1 seat, 4 in use: deactivate 3 users first");
        let one = check_change(&on(Plan::Growth, 0), 6).unwrap_err();
        assert_eq!(one.to_string(), "plan Growth allows 5 seats, 6 in use: deactivate 1 user first");
        assert_eq!(check_change(&on(Plan::Growth, 1), 6).map(|s| s.free()), Ok(0));
    }

    fn plan() -> impl Strategy<Value = Plan> {
        prop_oneof![Just(Plan::FreeTrial), Just(Plan::Growth), Just(Plan::Scale)]
    }

    proptest! {
        /// Giving seats one by one from any start stops exactly at the limit.
        #[test]
        fn seats_given_one_by_one_never_pass_the_limit(plan in plan(), extra in 0i64..50, start in 0u32..80) {
            let subscription = on(plan, extra);
            let mut used = start;
            while let Ok(seats) = check_seat(&subscription, used) {
                prop_assert_eq!(seats.used, used + 1);
                used = seats.used;
            }
            prop_assert_eq!(used, start.max(subscription.seat_limit()));
        }

        /// A change is allowed exactly when everyone active keeps a seat, and a refusal's count
        /// of users to deactivate makes it fit.
        #[test]
        fn a_change_fits_exactly_when_everyone_keeps_a_seat(plan in plan(), extra in 0i64..50, used in 0u32..80) {
            let to = on(plan, extra);
            match check_change(&to, used) {
                Ok(seats) => prop_assert!(seats.used <= seats.limit),
                Err(refused) => {
                    prop_assert!(used > to.seat_limit());
                    prop_assert!(check_change(&to, used - refused.seats.over()).is_ok());
                }
            }
        }
    }
}
