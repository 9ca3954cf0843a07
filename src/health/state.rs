//! The health state machine of one target (SPEC §4, ALB semantics), pure: it takes
//! check outcomes and `now` and decides the state, the ALB reason code and its
//! description. No I/O, no clock reads; the scheduler feeds it.
//!
//! Invariants: a `healthy` target has no reason or description; `since` moves only
//! when `state` changes; at most one of the two consecutive counters is non-zero
//! once a check has been observed.

use std::time::SystemTime;

/// `Elb.InitialHealthChecking`: registered, first checks not yet decided.
pub const REASON_INITIAL: &str = "Elb.InitialHealthChecking";
/// `Target.Timeout`: the check did not complete within the timeout.
pub const REASON_TIMEOUT: &str = "Target.Timeout";
/// `Target.ResponseCodeMismatch`: an HTTP status the matcher refused.
pub const REASON_CODE_MISMATCH: &str = "Target.ResponseCodeMismatch";
/// `Target.FailedHealthChecks`: connect error, reset, close or malformed response.
pub const REASON_FAILED: &str = "Target.FailedHealthChecks";
/// `Target.DeregistrationInProgress`: removed by a reload, draining.
pub const REASON_DRAINING: &str = "Target.DeregistrationInProgress";

const DESCRIPTION_INITIAL: &str = "Initial health checks in progress";
const DESCRIPTION_TIMEOUT: &str = "Request timed out";
const DESCRIPTION_DRAINING: &str = "Target deregistration is in progress";

/// A target's health state as the admin API and metrics name it. `repr(u8)` so
/// the data path can keep it in an `AtomicU8` ([`State::from_u8`] reads it back).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Initial = 0,
    Healthy = 1,
    Unhealthy = 2,
    Draining = 3,
}

impl State {
    pub const ALL: [State; 4] = [
        State::Initial,
        State::Healthy,
        State::Unhealthy,
        State::Draining,
    ];

    /// `initial` | `healthy` | `unhealthy` | `draining`.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Initial => "initial",
            State::Healthy => "healthy",
            State::Unhealthy => "unhealthy",
            State::Draining => "draining",
        }
    }

    /// The state whose discriminant is `v`; `None` for anything else.
    pub fn from_u8(v: u8) -> Option<State> {
        match v {
            0 => Some(State::Initial),
            1 => Some(State::Healthy),
            2 => Some(State::Unhealthy),
            3 => Some(State::Draining),
            _ => None,
        }
    }
}

/// The result of one health check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The whole exchange took longer than the check's `timeout`.
    Timeout,
    /// An HTTP status that the matcher refused.
    Code(u16),
    /// Refused/reset/closed/bad response/TLS failure, with a short human reason
    /// (`connection refused`).
    Failed(String),
}

impl Outcome {
    pub fn is_pass(&self) -> bool {
        matches!(self, Outcome::Pass)
    }

    /// The ALB reason code and description a failure gives; `None` for a pass.
    fn failure(&self) -> Option<(&'static str, String)> {
        match self {
            Outcome::Pass => None,
            Outcome::Timeout => Some((REASON_TIMEOUT, DESCRIPTION_TIMEOUT.to_owned())),
            Outcome::Code(code) => Some((
                REASON_CODE_MISMATCH,
                format!("Health checks failed with these codes: [{code}]"),
            )),
            Outcome::Failed(why) => Some((REASON_FAILED, format!("Health checks failed: {why}"))),
        }
    }
}

/// Health of one target: its state, why, since when, and the current run of
/// passes or failures.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    pub state: State,
    /// ALB reason code (`Target.Timeout`); `None` when healthy.
    pub reason: Option<&'static str>,
    /// ALB description (`Health checks failed with these codes: [500]`); `None` when healthy.
    pub description: Option<String>,
    /// When `state` last changed.
    pub since: SystemTime,
    pub consecutive_passes: u32,
    pub consecutive_failures: u32,
}

impl Health {
    /// A newly registered target: `initial`, `Elb.InitialHealthChecking`.
    pub fn new(now: SystemTime) -> Health {
        Health {
            state: State::Initial,
            reason: Some(REASON_INITIAL),
            description: Some(DESCRIPTION_INITIAL.to_owned()),
            since: now,
            consecutive_passes: 0,
            consecutive_failures: 0,
        }
    }

    /// Applies one check result; returns true when `state` changed (then `since` =
    /// now).
    ///
    /// `initial` becomes `healthy` after one pass and `unhealthy` after
    /// `unhealthy_threshold` consecutive failures; `healthy` becomes `unhealthy`
    /// after `unhealthy_threshold` consecutive failures; `unhealthy` becomes
    /// `healthy` after `healthy_threshold` consecutive passes. Thresholds below 1
    /// count as 1. An unhealthy target's reason and description follow its latest
    /// failure (also between passes that have not yet reached the threshold).
    /// While draining nothing changes: the target's checks no longer matter.
    pub fn observe(
        &mut self,
        outcome: &Outcome,
        healthy_threshold: u32,
        unhealthy_threshold: u32,
        now: SystemTime,
    ) -> bool {
        if self.state == State::Draining {
            return false;
        }
        match outcome.failure() {
            None => {
                self.consecutive_passes = self.consecutive_passes.saturating_add(1);
                self.consecutive_failures = 0;
                let recovered = match self.state {
                    State::Initial => true,
                    State::Unhealthy => self.consecutive_passes >= healthy_threshold.max(1),
                    State::Healthy | State::Draining => false,
                };
                if recovered {
                    self.reason = None;
                    self.description = None;
                    return self.enter(State::Healthy, now);
                }
                false
            }
            Some((reason, description)) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.consecutive_passes = 0;
                let failing = self.state == State::Unhealthy
                    || self.consecutive_failures >= unhealthy_threshold.max(1);
                if failing {
                    self.reason = Some(reason);
                    self.description = Some(description);
                    return self.enter(State::Unhealthy, now);
                }
                false
            }
        }
    }

    /// Starts draining (`Target.DeregistrationInProgress`). A target already
    /// draining keeps its `since`.
    ///
    /// The counters are kept only for a healthy target, so that [`Health::undrain`]
    /// can tell a healthy run worth resuming from anything else.
    pub fn drain(&mut self, now: SystemTime) {
        if self.state == State::Draining {
            return;
        }
        if self.state != State::Healthy {
            self.consecutive_passes = 0;
            self.consecutive_failures = 0;
        }
        self.reason = Some(REASON_DRAINING);
        self.description = Some(DESCRIPTION_DRAINING.to_owned());
        self.enter(State::Draining, now);
    }

    /// A target re-added while draining returns to service (SPEC §4).
    ///
    /// It comes back `healthy` when it was healthy at drain time (a reload never
    /// resets a healthy target to `initial`), with the run of passes or failures
    /// it had, so a healthy target whose last check failed still goes unhealthy
    /// after `unhealthy_threshold` failures in a row. Anything else comes back
    /// `initial`, exactly like a fresh registration (one pass makes it healthy;
    /// `unhealthy_threshold` failures make it unhealthy), as a target
    /// re-registered with ALB does. Not draining: no change.
    pub fn undrain(&mut self, now: SystemTime) {
        if self.state != State::Draining {
            return;
        }
        // Only a healthy target keeps its counters when it drains.
        if self.consecutive_passes > 0 || self.consecutive_failures > 0 {
            self.reason = None;
            self.description = None;
            self.enter(State::Healthy, now);
        } else {
            *self = Health::new(now);
        }
    }

    fn enter(&mut self, state: State, now: SystemTime) -> bool {
        if self.state == state {
            return false;
        }
        self.state = state;
        self.since = now;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn t(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn refused() -> Outcome {
        Outcome::Failed("connection refused".to_owned())
    }

    /// Feeds `outcomes` at t(1), t(2), ...; returns the transitions' flags.
    fn feed(h: &mut Health, outcomes: &[Outcome], ht: u32, ut: u32) -> Vec<bool> {
        let start = h
            .since
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| h.observe(o, ht, ut, t(start + 1 + i as u64)))
            .collect()
    }

    fn healthy(ht: u32, ut: u32) -> Health {
        let mut h = Health::new(t(0));
        assert!(h.observe(&Outcome::Pass, ht, ut, t(0)));
        h
    }

    fn unhealthy(ht: u32, ut: u32) -> Health {
        let mut h = Health::new(t(0));
        for _ in 0..ut.max(1) {
            h.observe(&Outcome::Timeout, ht, ut, t(0));
        }
        assert_eq!(h.state, State::Unhealthy);
        h
    }

    #[test]
    fn state_names_and_bytes_round_trip() {
        let names: Vec<_> = State::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(names, ["initial", "healthy", "unhealthy", "draining"]);
        for s in State::ALL {
            assert_eq!(State::from_u8(s as u8), Some(s));
        }
        assert_eq!(State::from_u8(4), None);
        assert_eq!(State::from_u8(255), None);
    }

    #[test]
    fn new_target_is_initial_with_alb_reason() {
        let h = Health::new(t(5));
        assert_eq!(h.state, State::Initial);
        assert_eq!(h.reason, Some("Elb.InitialHealthChecking"));
        assert_eq!(
            h.description.as_deref(),
            Some("Initial health checks in progress")
        );
        assert_eq!(h.since, t(5));
        assert_eq!((h.consecutive_passes, h.consecutive_failures), (0, 0));
    }

    #[test]
    fn initial_becomes_healthy_after_one_pass_whatever_the_threshold() {
        for ht in [1, 5, 10] {
            let mut h = Health::new(t(0));
            assert!(h.observe(&Outcome::Pass, ht, 2, t(7)));
            assert_eq!(h.state, State::Healthy);
            assert_eq!(h.reason, None);
            assert_eq!(h.description, None);
            assert_eq!(h.since, t(7));
            assert_eq!(h.consecutive_passes, 1);
        }
    }

    #[test]
    fn initial_becomes_unhealthy_after_threshold_failures() {
        for ut in [1, 2, 10] {
            let mut h = Health::new(t(0));
            let flags = feed(&mut h, &vec![refused(); ut as usize], 5, ut);
            assert_eq!(flags.iter().filter(|f| **f).count(), 1);
            assert!(flags[ut as usize - 1], "changes on failure {ut}");
            assert_eq!(h.state, State::Unhealthy);
            assert_eq!(h.since, t(ut as u64));
            assert_eq!(h.consecutive_failures, ut);
        }
    }

    #[test]
    fn initial_below_threshold_stays_initial_with_initial_reason() {
        let mut h = Health::new(t(0));
        assert!(!h.observe(&Outcome::Timeout, 5, 3, t(1)));
        assert!(!h.observe(&Outcome::Code(500), 5, 3, t(2)));
        assert_eq!(h.state, State::Initial);
        assert_eq!(h.reason, Some(REASON_INITIAL));
        assert_eq!(h.since, t(0));
        assert_eq!(h.consecutive_failures, 2);
        // A pass before the threshold still makes it healthy.
        assert!(h.observe(&Outcome::Pass, 5, 3, t(3)));
        assert_eq!(h.state, State::Healthy);
    }

    #[test]
    fn healthy_becomes_unhealthy_after_threshold_failures() {
        for ut in [1, 2, 10] {
            let mut h = healthy(5, ut);
            for i in 1..ut {
                assert!(!h.observe(&Outcome::Timeout, 5, ut, t(i as u64)));
                assert_eq!(h.state, State::Healthy);
                assert_eq!(h.reason, None, "a healthy target has no reason");
            }
            assert!(h.observe(&Outcome::Timeout, 5, ut, t(100)));
            assert_eq!(h.state, State::Unhealthy);
            assert_eq!(h.since, t(100));
        }
    }

    #[test]
    fn unhealthy_becomes_healthy_after_threshold_passes() {
        for ht in [1, 2, 10] {
            let mut h = unhealthy(ht, 2);
            for i in 1..ht {
                assert!(!h.observe(&Outcome::Pass, ht, 2, t(i as u64)));
                assert_eq!(h.state, State::Unhealthy);
                assert_eq!(h.reason, Some(REASON_TIMEOUT), "keeps the last failure");
            }
            assert!(h.observe(&Outcome::Pass, ht, 2, t(100)));
            assert_eq!(h.state, State::Healthy);
            assert_eq!((h.reason, h.description.as_deref()), (None, None));
            assert_eq!(h.since, t(100));
        }
    }

    #[test]
    fn a_failure_restarts_the_recovery_count() {
        let mut h = unhealthy(3, 2);
        feed(&mut h, &[Outcome::Pass, Outcome::Pass, refused()], 3, 2);
        assert_eq!(h.state, State::Unhealthy);
        assert_eq!(h.consecutive_passes, 0);
        let flags = feed(&mut h, &[Outcome::Pass, Outcome::Pass, Outcome::Pass], 3, 2);
        assert_eq!(flags, [false, false, true]);
    }

    #[test]
    fn alternating_results_never_flap_a_healthy_target_with_threshold_2() {
        let mut h = healthy(5, 2);
        let since = h.since;
        for i in 0..100u64 {
            let o = if i % 2 == 0 {
                Outcome::Code(500)
            } else {
                Outcome::Pass
            };
            assert!(!h.observe(&o, 5, 2, t(10 + i)));
            assert_eq!(h.state, State::Healthy);
        }
        assert_eq!(h.since, since);
    }

    #[test]
    fn since_moves_only_on_a_state_change() {
        let mut h = Health::new(t(0));
        h.observe(&refused(), 2, 3, t(1));
        assert_eq!(h.since, t(0));
        h.observe(&Outcome::Pass, 2, 3, t(2));
        assert_eq!(h.since, t(2));
        h.observe(&Outcome::Pass, 2, 3, t(3));
        h.observe(&refused(), 2, 3, t(4));
        h.observe(&refused(), 2, 3, t(5));
        assert_eq!(h.since, t(2));
        h.observe(&refused(), 2, 3, t(6));
        assert_eq!((h.state, h.since), (State::Unhealthy, t(6)));
        h.observe(&Outcome::Timeout, 2, 3, t(7));
        h.observe(&Outcome::Pass, 2, 3, t(8));
        assert_eq!(h.since, t(6));
    }

    #[test]
    fn reason_and_description_for_each_failure_kind() {
        let cases = [
            (Outcome::Timeout, "Target.Timeout", "Request timed out"),
            (
                Outcome::Code(500),
                "Target.ResponseCodeMismatch",
                "Health checks failed with these codes: [500]",
            ),
            (
                refused(),
                "Target.FailedHealthChecks",
                "Health checks failed: connection refused",
            ),
            (
                Outcome::Failed("connection reset".to_owned()),
                "Target.FailedHealthChecks",
                "Health checks failed: connection reset",
            ),
        ];
        for (o, reason, description) in cases {
            let mut h = Health::new(t(0));
            assert!(h.observe(&o, 5, 1, t(1)));
            assert_eq!(h.reason, Some(reason));
            assert_eq!(h.description.as_deref(), Some(description));
        }
    }

    #[test]
    fn unhealthy_reason_follows_the_latest_failure() {
        let mut h = unhealthy(5, 2);
        h.observe(&Outcome::Code(503), 5, 2, t(1));
        assert_eq!(h.reason, Some(REASON_CODE_MISMATCH));
        h.observe(&Outcome::Code(404), 5, 2, t(2));
        assert_eq!(
            h.description.as_deref(),
            Some("Health checks failed with these codes: [404]")
        );
        h.observe(&refused(), 5, 2, t(3));
        assert_eq!(h.reason, Some(REASON_FAILED));
    }

    #[test]
    fn zero_thresholds_count_as_one() {
        let mut h = healthy(0, 0);
        assert!(h.observe(&Outcome::Timeout, 0, 0, t(1)));
        assert!(h.observe(&Outcome::Pass, 0, 0, t(2)));
    }

    #[test]
    fn draining_ignores_checks_and_keeps_its_since() {
        let mut h = healthy(5, 2);
        h.drain(t(10));
        assert_eq!(h.state, State::Draining);
        assert_eq!(h.reason, Some("Target.DeregistrationInProgress"));
        assert_eq!(
            h.description.as_deref(),
            Some("Target deregistration is in progress")
        );
        assert_eq!(h.since, t(10));
        let before = h.clone();
        for o in [
            Outcome::Pass,
            Outcome::Timeout,
            Outcome::Code(500),
            refused(),
        ] {
            assert!(!h.observe(&o, 1, 1, t(20)));
        }
        h.drain(t(30));
        assert_eq!(h, before);
    }

    #[test]
    fn undrain_returns_a_passing_healthy_target_to_healthy() {
        let mut h = healthy(5, 2);
        h.drain(t(10));
        h.undrain(t(20));
        assert_eq!(h.state, State::Healthy);
        assert_eq!((h.reason, h.description.as_deref()), (None, None));
        assert_eq!(h.since, t(20));
        assert_eq!(h.consecutive_passes, 1);
    }

    #[test]
    fn undrain_keeps_a_healthy_target_whose_last_check_failed_healthy() {
        let mut h = healthy(5, 3);
        h.observe(&refused(), 5, 3, t(1));
        assert_eq!(h.state, State::Healthy);
        h.drain(t(10));
        h.undrain(t(20));
        assert_eq!(h.state, State::Healthy);
        assert_eq!(h.consecutive_failures, 1, "its run of failures carries on");
        assert!(!h.observe(&refused(), 5, 3, t(21)));
        assert!(
            h.observe(&refused(), 5, 3, t(22)),
            "unhealthy at the third failure"
        );
        assert_eq!(h.state, State::Unhealthy);
    }

    #[test]
    fn undrain_returns_anything_else_to_initial() {
        let mut recovering = unhealthy(5, 2);
        recovering.observe(&Outcome::Pass, 5, 2, t(1));
        for mut h in [Health::new(t(0)), unhealthy(5, 2), recovering] {
            h.drain(t(10));
            h.undrain(t(20));
            assert_eq!(h, Health::new(t(20)));
        }
    }

    #[test]
    fn undrain_of_a_target_not_draining_changes_nothing() {
        let mut h = unhealthy(5, 2);
        let before = h.clone();
        h.undrain(t(50));
        assert_eq!(h, before);
    }

    fn outcome() -> impl Strategy<Value = Outcome> {
        prop_oneof![
            3 => Just(Outcome::Pass),
            1 => Just(Outcome::Timeout),
            1 => (100u16..600).prop_map(Outcome::Code),
            1 => Just(Outcome::Failed("connection reset".to_owned())),
        ]
    }

    /// The reference model, stated over runs of equal results instead of counters:
    /// `initial` ends at the first pass (healthy) or at a first failure run of
    /// `ut`; then a failure run of `ut` makes a healthy target unhealthy and a pass
    /// run of `ht` makes an unhealthy one healthy. Returns the final state and
    /// the index of each check that changed it.
    fn model(outcomes: &[Outcome], ht: u32, ut: u32) -> (State, Vec<usize>) {
        let mut state = State::Initial;
        let mut changes = Vec::new();
        let mut run_start = 0;
        for (i, o) in outcomes.iter().enumerate() {
            if i > 0 && o.is_pass() != outcomes[i - 1].is_pass() {
                run_start = i;
            }
            let run = (i - run_start + 1) as u32;
            let next = match (state, o.is_pass()) {
                (State::Initial, true) => State::Healthy,
                (State::Unhealthy, true) if run == ht => State::Healthy,
                (State::Initial | State::Healthy, false) if run == ut => State::Unhealthy,
                (s, _) => s,
            };
            if next != state {
                changes.push(i);
            }
            state = next;
        }
        (state, changes)
    }

    proptest! {
        #[test]
        fn matches_the_reference_model(
            outcomes in prop::collection::vec(outcome(), 0..60),
            ht in 1u32..=10,
            ut in 1u32..=10,
        ) {
            let mut h = Health::new(t(0));
            let flags = feed(&mut h, &outcomes, ht, ut);
            let changed: Vec<usize> =
                flags.iter().enumerate().filter(|(_, f)| **f).map(|(i, _)| i).collect();
            let (state, changes) = model(&outcomes, ht, ut);
            prop_assert_eq!(h.state, state);
            prop_assert_eq!(&changed, &changes);
            let since = changes.last().map_or(t(0), |i| t(1 + *i as u64));
            prop_assert_eq!(h.since, since);

            let trailing = outcomes.iter().rev()
                .take_while(|o| o.is_pass() == outcomes.last().is_some_and(Outcome::is_pass))
                .count() as u32;
            let last_pass = outcomes.last().is_some_and(Outcome::is_pass);
            prop_assert_eq!(h.consecutive_passes, if last_pass { trailing } else { 0 });
            prop_assert_eq!(h.consecutive_failures, if last_pass { 0 } else { trailing });

            let expected_reason = match state {
                State::Initial => Some(REASON_INITIAL),
                State::Healthy | State::Draining => None,
                State::Unhealthy => outcomes.iter().rev().find_map(|o| o.failure()).map(|f| f.0),
            };
            prop_assert_eq!(h.reason, expected_reason);
            prop_assert_eq!(h.reason.is_none(), h.description.is_none());
        }

        #[test]
        fn draining_freezes_everything(
            before in prop::collection::vec(outcome(), 0..20),
            during in prop::collection::vec(outcome(), 0..20),
        ) {
            let mut h = Health::new(t(0));
            feed(&mut h, &before, 2, 2);
            h.drain(t(1000));
            let frozen = h.clone();
            for o in &during {
                prop_assert!(!h.observe(o, 1, 1, t(2000)));
            }
            prop_assert_eq!(h, frozen);
        }
    }
}
