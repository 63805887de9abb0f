//! Logins and TOTP time. auth-svc accepts each TOTP time step at most once per user (and a code
//! at most one step late), so a simulated user can log in at most once per 30 s step. The
//! [`Rotation`] hands out logins under that rule:
//! - on a [`TotpClock`] that can be moved (the test kit's manual clock), when every user has had
//!   its turn in the current step it moves the clock on one step, once no login handed out in an
//!   earlier step is still in flight; until then a worker waits;
//! - on real time ([`SystemTotpClock`]) it cannot move time: when every user has logged in during
//!   the current step, the login is *unavailable* and the worker draws another operation. Both
//!   are counted and reported.

use std::collections::BTreeMap;
use std::sync::Mutex;

use caremesh_runtime::clock::{Clock, ManualClock};
use caremesh_sdk::SdkError;
use chrono::{DateTime, Utc};

use crate::lock;

/// The time the mesh's auth-svc checks TOTP codes against.
pub trait TotpClock: Send + Sync {
    /// The mesh's time now.
    fn now(&self) -> DateTime<Utc>;
    /// Moves the mesh's time on one TOTP step; false if this clock cannot be moved.
    fn advance_step(&self) -> bool;
    /// Whether [`TotpClock::advance_step`] can move this clock.
    fn movable(&self) -> bool;
}

/// Real time: a mesh started by `caremesh up` or the service binaries.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemTotpClock;

impl TotpClock for SystemTotpClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn advance_step(&self) -> bool {
        false
    }

    fn movable(&self) -> bool {
        false
    }
}

/// The test kit's clock, which moves only when told.
impl TotpClock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        Clock::now(self)
    }

    fn advance_step(&self) -> bool {
        self.advance(chrono::TimeDelta::seconds(auth_svc::totp::PERIOD_SECONDS));
        true
    }

    fn movable(&self) -> bool {
        true
    }
}

/// The TOTP time step of `at`.
pub fn step_of(at: DateTime<Utc>) -> u64 {
    auth_svc::totp::step_at(at.timestamp())
}

/// The code an authenticator app shows for `secret` in `step`.
pub fn totp_code(secret: &[u8], step: u64) -> Result<String, SdkError> {
    let code = auth_svc::totp::code_at_step(secret, step, auth_svc::totp::Algorithm::Sha1, auth_svc::totp::DIGITS)
        .ok_or_else(|| SdkError::Local("cannot compute a TOTP code".to_owned()))?;
    Ok(format!("{code:06}"))
}

/// What the rotation answers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// User `index` logs in with the code of `step`.
    Turn { index: usize, step: u64 },
    /// Wait a moment: the clock moves once the logins of an earlier step finish.
    Wait,
    /// Every user has logged in during this step of real time.
    Unavailable,
}

/// Login turns per user under the once-per-step rule.
#[derive(Debug)]
pub(crate) struct Rotation {
    next: usize,
    last_step: Vec<Option<u64>>,
    busy: Vec<bool>,
    in_flight: BTreeMap<u64, usize>,
    /// Times the clock was moved on.
    pub advances: u64,
    /// Waits for a turn (movable clock).
    pub waits: u64,
    /// Logins drawn when no user had an unused step left (real time).
    pub unavailable: u64,
}

impl Rotation {
    /// `last_steps`: the step each user last used (at enrollment).
    pub fn new(last_steps: Vec<Option<u64>>) -> Self {
        Self {
            next: 0,
            busy: vec![false; last_steps.len()],
            last_step: last_steps,
            in_flight: BTreeMap::new(),
            advances: 0,
            waits: 0,
            unavailable: 0,
        }
    }

    pub fn try_next(&mut self, clock: &dyn TotpClock) -> Next {
        let users = self.busy.len();
        if users == 0 {
            return Next::Unavailable;
        }
        // Two rounds at most: look for a user, move the clock, look again.
        for _ in 0..2 {
            let step = step_of(clock.now());
            for offset in 0..users {
                let index = (self.next + offset) % users;
                let free = !self.busy.get(index).copied().unwrap_or(true);
                let fresh = self
                    .last_step
                    .get(index)
                    .copied()
                    .flatten()
                    .is_none_or(|last| last < step);
                if free && fresh {
                    if let Some(busy) = self.busy.get_mut(index) {
                        *busy = true;
                    }
                    if let Some(last) = self.last_step.get_mut(index) {
                        *last = Some(step);
                    }
                    *self.in_flight.entry(step).or_default() += 1;
                    self.next = index + 1;
                    return Next::Turn { index, step };
                }
            }
            if !clock.movable() {
                self.unavailable += 1;
                return Next::Unavailable;
            }
            // A code is accepted at most one step late: move on only when nothing older than
            // the current step is in flight.
            if self.in_flight.keys().any(|in_flight| *in_flight < step) {
                self.waits += 1;
                return Next::Wait;
            }
            clock.advance_step();
            self.advances += 1;
        }
        self.waits += 1;
        Next::Wait
    }

    pub fn finish(&mut self, index: usize, step: u64) {
        if let Some(busy) = self.busy.get_mut(index) {
            *busy = false;
        }
        if let Some(count) = self.in_flight.get_mut(&step) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.in_flight.remove(&step);
            }
        }
    }
}

/// A login handed out by the rotation; gives the user back when dropped.
#[derive(Debug)]
pub(crate) struct Turn<'a> {
    rotation: &'a Mutex<Rotation>,
    pub index: usize,
    pub step: u64,
}

impl<'a> Turn<'a> {
    pub fn new(rotation: &'a Mutex<Rotation>, index: usize, step: u64) -> Self {
        Self { rotation, index, step }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(self.rotation).finish(self.index, self.step);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_time_gives_each_user_one_login_per_step() {
        let clock = SystemTotpClock;
        let step = step_of(clock.now());
        let mut rotation = Rotation::new(vec![Some(step - 1), Some(step)]);
        let first = rotation.try_next(&clock);
        // The second user used this step at enrollment; the first may log in once.
        let Next::Turn {
            index: 0,
            step: turn_step,
        } = first
        else {
            panic!("{first:?}");
        };
        rotation.finish(0, turn_step);
        if step_of(clock.now()) == step {
            assert_eq!(rotation.try_next(&clock), Next::Unavailable);
            assert_eq!(rotation.unavailable, 1);
        }
    }

    #[test]
    fn a_manual_clock_moves_on_when_every_user_had_a_turn() {
        let clock = ManualClock::new(Utc::now());
        let step = step_of(TotpClock::now(&clock));
        let mut rotation = Rotation::new(vec![Some(step); 2]);
        // Both used this step: the clock moves, both get a turn in the next.
        let Next::Turn { index: a, step: s } = rotation.try_next(&clock) else {
            panic!()
        };
        assert_eq!(s, step + 1);
        let Next::Turn { index: b, .. } = rotation.try_next(&clock) else {
            panic!()
        };
        assert_ne!(a, b);
        assert_eq!(rotation.advances, 1);
        // Both in flight: the clock moves once more (they are then one step late, which is
        // accepted) but no user is free, so the worker waits.
        assert_eq!(rotation.try_next(&clock), Next::Wait);
        assert_eq!(rotation.advances, 2);
        // And it does not move a third time while logins of an older step are in flight.
        assert_eq!(rotation.try_next(&clock), Next::Wait);
        assert_eq!(rotation.advances, 2);
        rotation.finish(a, s);
        let Next::Turn { index, step: next } = rotation.try_next(&clock) else {
            panic!()
        };
        assert_eq!((index, next), (a, step + 2));
    }
}
