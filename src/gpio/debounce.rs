//! Debouncing a contact: a new level counts once it has held for the whole period, so a relay's
//! chatter or a door rattling in the wind makes no alarm. Pure: instants are passed in.
//!
//! The kernel's GPIO line debounce would do the same, but only on kernels and chips that offer
//! it; doing it here behaves alike on every backend and is tested on the paused clock.

use std::time::Duration;

use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct Debouncer {
    period: Duration,
    stable: Option<bool>,
    candidate: Option<(bool, Instant)>,
}

impl Debouncer {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            stable: None,
            candidate: None,
        }
    }

    /// The level seen at `now` (an edge or a sample).
    pub fn observe(&mut self, level: bool, now: Instant) {
        if self.stable == Some(level) {
            self.candidate = None;
        } else if self.candidate.map(|c| c.0) != Some(level) {
            self.candidate = Some((level, now));
        }
    }

    /// The new stable level, once, when the candidate has held for the period by `now`.
    pub fn settle(&mut self, now: Instant) -> Option<bool> {
        let (level, since) = self.candidate?;
        if now.saturating_duration_since(since) < self.period {
            return None;
        }
        self.candidate = None;
        self.stable = Some(level);
        Some(level)
    }

    /// When [`settle`](Self::settle) may next give a level.
    pub fn deadline(&self) -> Option<Instant> {
        self.candidate.map(|(_, since)| since + self.period)
    }

    pub fn stable(&self) -> Option<bool> {
        self.stable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_first_level_is_published_after_one_quiet_period() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(50 * MS);
        d.observe(true, t0);
        assert_eq!(d.deadline(), Some(t0 + 50 * MS));
        assert_eq!(d.settle(t0 + 49 * MS), None);
        assert_eq!(d.settle(t0 + 50 * MS), Some(true));
        assert_eq!(d.settle(t0 + 60 * MS), None, "published once");
        assert_eq!(d.stable(), Some(true));
        assert_eq!(d.deadline(), None);
    }

    #[test]
    fn a_level_counts_only_after_it_holds_for_the_period_counted_from_the_last_bounce() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(50 * MS);
        d.observe(true, t0);
        assert_eq!(d.settle(t0 + 50 * MS), Some(true));
        // Chatter: low, high, low; the last change starts the period.
        d.observe(false, t0 + 100 * MS);
        d.observe(true, t0 + 110 * MS);
        d.observe(false, t0 + 120 * MS);
        assert_eq!(d.settle(t0 + 169 * MS), None);
        assert_eq!(d.settle(t0 + 170 * MS), Some(false));
    }

    #[test]
    fn bounces_shorter_than_the_period_never_change_the_state() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(50 * MS);
        d.observe(false, t0);
        assert_eq!(d.settle(t0 + 50 * MS), Some(false));
        for i in 0..30u32 {
            let now = t0 + 100 * MS + i * MS;
            d.observe(i % 2 == 0, now);
            assert_eq!(d.settle(now), None);
        }
        d.observe(false, t0 + 130 * MS);
        assert_eq!(d.settle(t0 + 500 * MS), None);
        assert_eq!(d.stable(), Some(false));
    }

    #[test]
    fn a_repeated_sample_of_the_candidate_does_not_restart_its_period() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(50 * MS);
        d.observe(true, t0);
        d.observe(true, t0 + 40 * MS);
        assert_eq!(d.settle(t0 + 50 * MS), Some(true));
    }

    #[test]
    fn a_zero_period_passes_every_level_at_once() {
        let t0 = Instant::now();
        let mut d = Debouncer::new(Duration::ZERO);
        d.observe(true, t0);
        assert_eq!(d.settle(t0), Some(true));
        d.observe(false, t0);
        assert_eq!(d.settle(t0), Some(false));
    }
}
