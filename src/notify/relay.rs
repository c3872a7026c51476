//! What a siren relay does over time, as a pure plan: steady or pulsed while an alarm routed to
//! it waits for acknowledgement, off at once when acknowledged, and off by itself after
//! `max_on_s` (a siren wailing all night helps nobody) until a new alarm sounds it again.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{ChannelConfig, RelayMode};

pub const DEFAULT_PULSE_MS: u64 = 500;
pub const DEFAULT_MAX_ON_S: u64 = 300;

/// What the alarm engine asks of a siren: sound or not, and `epoch`, which grows each time an
/// alarm not sounding it before starts to (so a silenced siren knows the news is new).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Siren {
    pub on: bool,
    pub epoch: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Steady,
    Pulse {
        on: Duration,
        off: Duration,
        /// 0 = until acknowledged or `max_on`.
        pulses: u32,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayConfig {
    pub pattern: Pattern,
    pub max_on: Option<Duration>,
}

impl RelayConfig {
    pub fn from_channel(c: &ChannelConfig) -> Self {
        let ms = |v: Option<u64>| Duration::from_millis(v.unwrap_or(DEFAULT_PULSE_MS));
        Self {
            pattern: match c.mode.unwrap_or_default() {
                RelayMode::Steady => Pattern::Steady,
                RelayMode::Pulse => Pattern::Pulse {
                    on: ms(c.pulse_on_ms),
                    off: ms(c.pulse_off_ms),
                    pulses: c.pulses.unwrap_or(0),
                },
            },
            max_on: match c.max_on_s.unwrap_or(DEFAULT_MAX_ON_S) {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Off; `last` is the epoch it last sounded for and since when (`None`: it had silenced
    /// itself), so that the same alarms coming back (a flapping input) resume their time
    /// rather than start it again.
    Idle {
        last: Option<(u64, Option<Instant>)>,
    },
    Sounding {
        since: Instant,
        epoch: u64,
    },
    /// Switched itself off; sounds again only for a newer epoch.
    Silenced {
        epoch: u64,
    },
}

#[derive(Debug, Clone)]
pub struct RelayPlan {
    cfg: RelayConfig,
    state: State,
}

impl RelayPlan {
    pub fn new(cfg: RelayConfig) -> Self {
        Self {
            cfg,
            state: State::Idle { last: None },
        }
    }

    /// The engine's wish changed. A new alarm (a newer epoch) starts the relay's time and
    /// pulses again, also while it sounds.
    pub fn command(&mut self, siren: Siren, now: Instant) {
        let fresh = State::Sounding {
            since: now,
            epoch: siren.epoch,
        };
        self.state = match (self.state, siren.on) {
            (State::Sounding { since, epoch }, false) => State::Idle {
                last: Some((epoch, Some(since))),
            },
            (State::Silenced { epoch }, false) => State::Idle {
                last: Some((epoch, None)),
            },
            (idle @ State::Idle { .. }, false) => idle,
            (
                State::Idle {
                    last: Some((epoch, since)),
                },
                true,
            ) if epoch == siren.epoch => match since {
                Some(since) => State::Sounding { since, epoch },
                None => State::Silenced { epoch },
            },
            (State::Sounding { epoch, .. } | State::Silenced { epoch }, true)
                if epoch == siren.epoch =>
            {
                self.state
            }
            (_, true) => fresh,
        };
    }

    /// Whether the relay is energised at `now`, and when that may next change.
    pub fn step(&mut self, now: Instant) -> (bool, Option<Instant>) {
        let State::Sounding { since, epoch } = self.state else {
            return (false, None);
        };
        let elapsed = now.saturating_duration_since(since);
        let stop = self.cfg.max_on.map(|m| since + m);
        let (active, next, done) = match self.cfg.pattern {
            Pattern::Steady => (true, stop, false),
            Pattern::Pulse { on, off, pulses } => {
                let period = (on + off).max(Duration::from_millis(1));
                let k = elapsed.as_nanos() / period.as_nanos();
                let start = since
                    + Duration::from_nanos(
                        u64::try_from(period.as_nanos() * k).unwrap_or(u64::MAX),
                    );
                let active = now < start + on;
                let next = if active { start + on } else { start + period };
                (active, Some(next), pulses > 0 && k >= u128::from(pulses))
            }
        };
        if done || stop.is_some_and(|s| now >= s) {
            self.state = State::Silenced { epoch };
            return (false, None);
        }
        let next = match (next, stop) {
            (Some(n), Some(s)) => Some(n.min(s)),
            (n, s) => n.or(s),
        };
        (active, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    fn on(epoch: u64) -> Siren {
        Siren { on: true, epoch }
    }
    const OFF: Siren = Siren {
        on: false,
        epoch: 0,
    };

    fn steady(max_on: Option<Duration>) -> RelayPlan {
        RelayPlan::new(RelayConfig {
            pattern: Pattern::Steady,
            max_on,
        })
    }

    #[test]
    fn a_steady_relay_stays_on_until_acknowledged_and_goes_off_at_once() {
        let t0 = Instant::now();
        let mut r = steady(None);
        assert_eq!(r.step(t0), (false, None));
        r.command(on(1), t0);
        assert_eq!(r.step(t0), (true, None));
        assert_eq!(r.step(t0 + 3600 * S), (true, None));
        r.command(OFF, t0 + 3600 * S);
        assert_eq!(r.step(t0 + 3600 * S), (false, None));
    }

    #[test]
    fn a_relay_switches_itself_off_after_max_on_and_a_new_alarm_sounds_it_again() {
        let t0 = Instant::now();
        let mut r = steady(Some(300 * S));
        r.command(on(1), t0);
        assert_eq!(r.step(t0 + 10 * S), (true, Some(t0 + 300 * S)));
        assert_eq!(r.step(t0 + 300 * S), (false, None));
        // The same alarms, still unacknowledged: it stays silent.
        r.command(on(1), t0 + 400 * S);
        assert_eq!(r.step(t0 + 400 * S), (false, None));
        // A new alarm.
        r.command(on(2), t0 + 500 * S);
        assert_eq!(r.step(t0 + 500 * S), (true, Some(t0 + 800 * S)));
    }

    #[test]
    fn a_new_alarm_joining_a_sounding_relay_starts_its_time_again() {
        let t0 = Instant::now();
        let mut r = steady(Some(300 * S));
        r.command(on(1), t0);
        r.command(on(2), t0 + 299 * S);
        assert_eq!(r.step(t0 + 300 * S), (true, Some(t0 + 599 * S)));
        assert_eq!(r.step(t0 + 599 * S), (false, None));
    }

    #[test]
    fn a_flapping_alarm_resumes_its_time_rather_than_starting_it_again() {
        let t0 = Instant::now();
        let mut r = steady(Some(300 * S));
        r.command(on(1), t0);
        r.command(OFF, t0 + 200 * S);
        r.command(on(1), t0 + 250 * S);
        assert_eq!(r.step(t0 + 250 * S), (true, Some(t0 + 300 * S)));
        assert_eq!(r.step(t0 + 300 * S), (false, None));
        // Silenced, it stays silent through the next flap.
        r.command(OFF, t0 + 400 * S);
        r.command(on(1), t0 + 450 * S);
        assert_eq!(r.step(t0 + 450 * S), (false, None));
    }

    #[test]
    fn a_pulsed_relay_gives_n_pulses_of_the_configured_lengths_then_stops() {
        let t0 = Instant::now();
        let mut r = RelayPlan::new(RelayConfig {
            pattern: Pattern::Pulse {
                on: 200 * MS,
                off: 800 * MS,
                pulses: 3,
            },
            max_on: Some(300 * S),
        });
        r.command(on(1), t0);
        let mut edges = Vec::new();
        let mut now = t0;
        let mut last = false;
        while let (active, Some(next)) = r.step(now) {
            if active != last {
                edges.push((now - t0, active));
                last = active;
            }
            now = next;
        }
        edges.push((now - t0, r.step(now).0));
        assert_eq!(
            edges,
            vec![
                (Duration::ZERO, true),
                (200 * MS, false),
                (1000 * MS, true),
                (1200 * MS, false),
                (2000 * MS, true),
                (2200 * MS, false),
                (3000 * MS, false),
            ]
        );
    }

    #[test]
    fn zero_pulses_repeat_until_max_on() {
        let t0 = Instant::now();
        let mut r = RelayPlan::new(RelayConfig {
            pattern: Pattern::Pulse {
                on: 500 * MS,
                off: 500 * MS,
                pulses: 0,
            },
            max_on: Some(10 * S),
        });
        r.command(on(1), t0);
        assert_eq!(r.step(t0 + 9 * S), (true, Some(t0 + 9 * S + 500 * MS)));
        assert_eq!(r.step(t0 + 9 * S + 700 * MS), (false, Some(t0 + 10 * S)));
        assert_eq!(r.step(t0 + 10 * S), (false, None));
    }

    #[test]
    fn a_channel_without_settings_is_steady_and_stops_itself_after_five_minutes() {
        let c: ChannelConfig = toml::from_str("id = \"siren\"\nkind = \"gpio\"\npin = 17\n")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            RelayConfig::from_channel(&c),
            RelayConfig {
                pattern: Pattern::Steady,
                max_on: Some(300 * S)
            }
        );
    }
}
