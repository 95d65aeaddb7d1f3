//! A monitor's state machine: `unknown` until the first verdict, then `up`, `degraded` or
//! `down`. Failures and successes are counted in a row; a monitor goes down only after
//! `failure_threshold` failures and comes back only after `success_threshold` successes, so one
//! lost packet does not page anyone. `up` and `degraded` are both passing and switch at once.
//! During a maintenance window verdicts are recorded but the state does not move.

use serde::Serialize;

use super::checks::Verdict;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Unknown,
    Up,
    Degraded,
    Down,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Unknown => "unknown",
            State::Up => "up",
            State::Degraded => "degraded",
            State::Down => "down",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "unknown" => Some(State::Unknown),
            "up" => Some(State::Up),
            "degraded" => Some(State::Degraded),
            "down" => Some(State::Down),
            _ => None,
        }
    }
}

/// Where a monitor stands: its state since when, and the current run of failures or successes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    pub state: State,
    /// When the state was entered (UTC ms); `None` while unknown.
    pub since: Option<i64>,
    pub failures: u32,
    pub successes: u32,
}

impl Default for Tracker {
    fn default() -> Self {
        Self {
            state: State::Unknown,
            since: None,
            failures: 0,
            successes: 0,
        }
    }
}

/// Thresholds from the monitor's definition.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub failures: u32,
    pub successes: u32,
}

impl Tracker {
    /// Applies a verdict seen at `at`; returns the previous state when the state changed.
    pub fn apply(
        &mut self,
        verdict: Verdict,
        limits: Thresholds,
        in_maintenance: bool,
        at: i64,
    ) -> Option<State> {
        if in_maintenance {
            return None;
        }
        let next = match verdict {
            Verdict::Down => {
                self.failures = self.failures.saturating_add(1);
                self.successes = 0;
                let enough = self.failures >= limits.failures.max(1);
                (self.state != State::Down && enough).then_some(State::Down)
            }
            Verdict::Up | Verdict::Degraded => {
                self.successes = self.successes.saturating_add(1);
                self.failures = 0;
                let passing = if verdict == Verdict::Up {
                    State::Up
                } else {
                    State::Degraded
                };
                match self.state {
                    State::Down if self.successes < limits.successes.max(1) => None,
                    s if s == passing => None,
                    _ => Some(passing),
                }
            }
        };
        let next = next?;
        let previous = self.state;
        self.state = next;
        self.since = Some(at);
        Some(previous)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Thresholds = Thresholds {
        failures: 3,
        successes: 2,
    };

    fn run(verdicts: &[Verdict], maintenance: &[bool]) -> Vec<State> {
        let mut t = Tracker::default();
        verdicts
            .iter()
            .enumerate()
            .map(|(i, v)| {
                t.apply(
                    *v,
                    LIMITS,
                    maintenance.get(i).copied().unwrap_or(false),
                    i as i64,
                );
                t.state
            })
            .collect()
    }

    use State::*;
    use Verdict as V;

    #[test]
    fn thresholds_hold_a_state_until_enough_checks_agree() {
        let states = run(
            &[
                V::Up,
                V::Down,
                V::Down,
                V::Up,
                V::Down,
                V::Down,
                V::Down,
                V::Up,
                V::Down,
                V::Up,
                V::Up,
            ],
            &[],
        );
        assert_eq!(
            states,
            [Up, Up, Up, Up, Up, Up, Down, Down, Down, Down, Up],
            "down after three failures in a row, up after two successes in a row"
        );
        // From unknown, a first failure run also needs the threshold; a first pass is enough.
        assert_eq!(
            run(&[V::Down, V::Down, V::Down], &[]),
            [Unknown, Unknown, Down]
        );
        assert_eq!(
            run(&[V::Degraded, V::Up, V::Degraded], &[]),
            [Degraded, Up, Degraded]
        );
    }

    #[test]
    fn maintenance_windows_hold_the_state() {
        let states = run(
            &[V::Up, V::Down, V::Down, V::Down, V::Down, V::Down, V::Down],
            &[false, true, true, true, false, false, false],
        );
        assert_eq!(states, [Up, Up, Up, Up, Up, Up, Down]);
    }

    #[test]
    fn a_change_reports_the_previous_state_and_its_time() {
        let mut t = Tracker::default();
        let one = Thresholds {
            failures: 1,
            successes: 1,
        };
        assert_eq!(t.apply(V::Up, one, false, 10), Some(Unknown));
        assert_eq!(t.apply(V::Up, one, false, 20), None);
        assert_eq!(t.apply(V::Down, one, false, 30), Some(Up));
        assert_eq!((t.state, t.since), (Down, Some(30)));
    }
}
