//! The life of one alarm, after ISA-18.2: raised (unacknowledged, active) → acknowledged →
//! cleared, or returned to normal unacknowledged → acknowledged. A latched alarm (fire) stays
//! unacknowledged-active after its condition clears, until someone acknowledges it. Pure code.

use super::{AlarmState, EventKind};

/// What happens to an alarm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Its condition came on (after the on-delay).
    On,
    /// Its condition went off (after the off-delay).
    Off,
    /// Someone acknowledged it.
    Ack,
}

/// An alarm's state and whether its condition holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Life {
    pub state: AlarmState,
    pub condition: bool,
    pub latched: bool,
}

impl Life {
    pub fn normal(latched: bool) -> Self {
        Self {
            state: AlarmState::Normal,
            condition: false,
            latched,
        }
    }

    /// Applies `input`; returns the event it makes, if any.
    pub fn step(&mut self, input: Input) -> Option<EventKind> {
        use AlarmState::*;
        match input {
            Input::On => {
                self.condition = true;
                match self.state {
                    // A new alarm, or the same one back before anyone acknowledged it.
                    Normal | RtnUnacked => {
                        self.state = Unacked;
                        Some(EventKind::Raised)
                    }
                    Unacked | Acked => None,
                }
            }
            Input::Off => {
                if !self.condition {
                    return None;
                }
                self.condition = false;
                match self.state {
                    Unacked if self.latched => None,
                    Unacked => {
                        self.state = RtnUnacked;
                        Some(EventKind::Cleared)
                    }
                    Acked => {
                        self.state = Normal;
                        Some(EventKind::Cleared)
                    }
                    RtnUnacked | Normal => None,
                }
            }
            Input::Ack => match self.state {
                Unacked if self.condition => {
                    self.state = Acked;
                    Some(EventKind::Acknowledged)
                }
                // A latched alarm whose condition has gone, or one already back to normal.
                Unacked | RtnUnacked => {
                    self.state = Normal;
                    Some(EventKind::Acknowledged)
                }
                Acked | Normal => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AlarmState::*;
    use Input::*;

    fn run(latched: bool, inputs: &[Input]) -> Vec<(AlarmState, Option<EventKind>)> {
        let mut l = Life::normal(latched);
        inputs
            .iter()
            .map(|&i| (l.step(i), l.state))
            .map(|(e, s)| (s, e))
            .collect()
    }

    #[test]
    fn raised_then_acknowledged_then_cleared() {
        assert_eq!(
            run(false, &[On, Ack, Off]),
            vec![
                (Unacked, Some(EventKind::Raised)),
                (Acked, Some(EventKind::Acknowledged)),
                (Normal, Some(EventKind::Cleared)),
            ]
        );
    }

    #[test]
    fn returned_to_normal_unacknowledged_waits_for_its_acknowledgement() {
        assert_eq!(
            run(false, &[On, Off, Ack]),
            vec![
                (Unacked, Some(EventKind::Raised)),
                (RtnUnacked, Some(EventKind::Cleared)),
                (Normal, Some(EventKind::Acknowledged)),
            ]
        );
    }

    #[test]
    fn a_latched_alarm_stays_until_acknowledged_after_its_condition_clears() {
        assert_eq!(
            run(true, &[On, Off, Ack]),
            vec![
                (Unacked, Some(EventKind::Raised)),
                (Unacked, None),
                (Normal, Some(EventKind::Acknowledged)),
            ]
        );
        // Acknowledged while still active: it clears with its condition.
        assert_eq!(
            run(true, &[On, Ack, Off]).last(),
            Some(&(Normal, Some(EventKind::Cleared)))
        );
    }

    #[test]
    fn a_chattering_input_makes_one_alarm_not_many() {
        let got = run(false, &[On, On, Off, On, Off, On]);
        let raised = got
            .iter()
            .filter(|(_, e)| *e == Some(EventKind::Raised))
            .count();
        // One record throughout: it never went back to Normal.
        assert!(got.iter().all(|(s, _)| *s != Normal));
        assert_eq!(raised, 3, "{got:?}");
    }

    #[test]
    fn acknowledging_twice_or_a_normal_alarm_does_nothing() {
        assert_eq!(run(false, &[Ack]), vec![(Normal, None)]);
        assert_eq!(run(false, &[On, Ack, Ack]).last(), Some(&(Acked, None)));
    }
}
