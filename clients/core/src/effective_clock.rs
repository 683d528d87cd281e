//! Time that never runs backwards.
//!
//! The client keeps two numbers: the last wall-clock reading it saw, and an "effective" time
//! that advances only by the forward steps of the wall clock. Setting the clock back therefore
//! earns nothing: the offline and grace deadlines are measured in effective time, and a backward
//! step larger than the tolerance is reported so the state machine can go to grace.
//! Effective time is also raised to every server-signed time it sees (receipt `iat`), so a
//! clock that is simply wrong is corrected by the first good validation.

use serde::{Deserialize, Serialize};

use crate::UnixSeconds;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EffectiveClock {
    /// Effective time (never decreases).
    pub effective: UnixSeconds,
    /// The last wall-clock reading.
    pub wall: UnixSeconds,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    /// The wall clock moved forward (or stood still); effective time moved with it.
    Forward,
    /// A small backward step, within the tolerance (NTP slew): ignored, nothing credited.
    SmallStepBack,
    /// The wall clock went back by more than the tolerance.
    RolledBack { by_seconds: i64 },
}

impl EffectiveClock {
    pub fn start(now: UnixSeconds) -> Self {
        Self { effective: now, wall: now }
    }

    /// Takes a wall-clock reading. Only forward steps advance effective time.
    pub fn observe(&mut self, now: UnixSeconds, tolerance_seconds: i64) -> Observation {
        if now >= self.wall {
            self.effective = self.effective.saturating_add(now - self.wall);
            self.wall = now;
            return Observation::Forward;
        }
        let back = self.wall - now;
        // Follow the wall clock down so later forward steps are credited again; effective time
        // stays where it was, so the step back itself is never credited.
        self.wall = now;
        if back > tolerance_seconds {
            Observation::RolledBack { by_seconds: back }
        } else {
            Observation::SmallStepBack
        }
    }

    /// Raises effective time to a trusted time (a server-signed `iat`).
    pub fn raise_to(&mut self, trusted: UnixSeconds) {
        self.effective = self.effective.max(trusted);
    }

    /// Where an effective-time deadline falls on this machine's wall clock, as last read.
    pub fn to_wall(&self, effective_deadline: UnixSeconds) -> UnixSeconds {
        self.wall.saturating_add(effective_deadline.saturating_sub(self.effective))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_step_back_is_never_credited() {
        let mut clock = EffectiveClock::start(1_000);
        assert_eq!(clock.observe(1_100, 60), Observation::Forward);
        assert_eq!(clock.effective, 1_100);
        assert_eq!(clock.observe(500, 60), Observation::RolledBack { by_seconds: 600 });
        assert_eq!(clock.effective, 1_100);
        assert_eq!(clock.observe(510, 60), Observation::Forward);
        assert_eq!(clock.effective, 1_110);
        assert_eq!(clock.observe(480, 60), Observation::SmallStepBack);
        assert_eq!(clock.effective, 1_110);
        assert_eq!(clock.to_wall(1_200), 480 + 90);
    }
}
