//! A channel's rate limit, counted the way the chat services count it: at most `per_min`
//! messages in any minute and at most `burst` in any second (DingTalk: 20 a minute; Feishu:
//! 100 a minute and 5 a second), with a reserve that only urgent pushes may spend, so that a
//! flood of lesser alarms never leaves a fire alarm waiting for the robot's quota.
//! Pure code: time comes in as arguments.
//!
//! This used to be a token bucket of `burst` tokens refilled at `per_min` a minute. A bucket
//! lets `burst + per_min` messages through in a minute (20 at once, then one every 3 s), and
//! DingTalk answers the 21st message of a minute with 130101 and then refuses the robot for
//! 10 minutes — every push, fire alarms included (`alarms-and-push.md`). So the limit is now
//! a sliding window over the messages actually sent, and a message counts from the end of its
//! attempt (the service counted it somewhere between start and end), never early.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

const MINUTE: Duration = Duration::from_secs(60);
const SECOND: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct Bucket {
    per_min: usize,
    burst: usize,
    /// Of each limit, what lesser pushes leave to urgent ones.
    reserve_min: usize,
    reserve_burst: usize,
    /// When each message of the last minute went out, oldest first.
    sent: VecDeque<Instant>,
    /// The service said "too many": nothing until then.
    held_until: Option<Instant>,
}

impl Bucket {
    /// `per_min` messages in any minute, at most `burst` in any second; a quarter of each (at
    /// least one, if there is more than one) kept for urgent pushes.
    pub fn new(per_min: u32, burst: u32, _now: Instant) -> Self {
        let per_min = per_min.max(1) as usize;
        let burst = (burst as usize).clamp(1, per_min);
        let reserve = |n: usize| n.div_ceil(4).min(n - 1);
        Self {
            per_min,
            burst,
            reserve_min: reserve(per_min),
            reserve_burst: reserve(burst),
            sent: VecDeque::new(),
            held_until: None,
        }
    }

    /// (a minute, a second): how many messages of each window a push may bring the count to.
    fn limits(&self, urgent: bool) -> (usize, usize) {
        if urgent {
            (self.per_min, self.burst)
        } else {
            (
                self.per_min - self.reserve_min,
                self.burst - self.reserve_burst,
            )
        }
    }

    fn prune(&mut self, now: Instant) {
        while self.sent.front().is_some_and(|&t| t + MINUTE <= now) {
            self.sent.pop_front();
        }
    }

    fn held(&self, now: Instant) -> bool {
        self.held_until.is_some_and(|t| now < t)
    }

    /// The messages sent within `window` before `now`, oldest first.
    fn recent(&self, window: Duration, now: Instant) -> impl Iterator<Item = Instant> + '_ {
        self.sent.iter().copied().filter(move |&t| t + window > now)
    }

    /// How long until fewer than `limit` messages remain within `window`.
    fn until_below(&self, window: Duration, limit: usize, now: Instant) -> Duration {
        let recent: Vec<Instant> = self.recent(window, now).collect();
        if recent.len() < limit {
            return Duration::ZERO;
        }
        // The oldest `len - limit + 1` must leave the window.
        (recent[recent.len() - limit.max(1)] + window).saturating_duration_since(now)
    }

    /// Spends one message if the limits allow it now.
    pub fn try_take(&mut self, urgent: bool, now: Instant) -> bool {
        if self.available(urgent, now) == 0 {
            return false;
        }
        self.sent.push_back(now);
        self.sent.make_contiguous().sort();
        true
    }

    /// The message that took its place at `taken` has been answered (or given up on) at
    /// `done`: it counts from then on.
    pub fn sent(&mut self, taken: Instant, done: Instant) {
        if let Some(t) = self.sent.iter_mut().rev().find(|t| **t == taken) {
            *t = done.max(taken);
            self.sent.make_contiguous().sort();
        }
    }

    /// How many messages the limits allow now.
    pub fn available(&mut self, urgent: bool, now: Instant) -> usize {
        if self.held(now) {
            return 0;
        }
        self.prune(now);
        let (per_min, per_sec) = self.limits(urgent);
        let minute = per_min.saturating_sub(self.recent(MINUTE, now).count());
        let second = per_sec.saturating_sub(self.recent(SECOND, now).count());
        minute.min(second)
    }

    /// How long until one message is allowed.
    pub fn wait(&mut self, urgent: bool, now: Instant) -> Duration {
        self.prune(now);
        let held = self
            .held_until
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
        let (per_min, per_sec) = self.limits(urgent);
        held.max(self.until_below(MINUTE, per_min, now))
            .max(self.until_below(SECOND, per_sec, now))
    }

    /// The service refused for being sent too much: stop for `pause`.
    pub fn hold(&mut self, now: Instant, pause: Duration) {
        let until = now + pause;
        self.held_until = Some(self.held_until.map_or(until, |t| t.max(until)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lesser_pushes_leave_the_reserve_to_urgent_ones() {
        let t0 = Instant::now();
        let mut b = Bucket::new(20, 20, t0);
        let mut normal = 0;
        while b.try_take(false, t0) {
            normal += 1;
        }
        assert_eq!(normal, 15, "a quarter of 20 is kept back");
        assert_eq!(b.available(true, t0), 5);
        for _ in 0..5 {
            assert!(b.try_take(true, t0));
        }
        assert!(!b.try_take(true, t0));
        // 20 in any minute: the next once the first has left the minute, not 3 s later (a
        // 21st message within the minute has DingTalk refuse the robot for 10 minutes).
        assert_eq!(b.wait(true, t0), MINUTE);
        assert!(!b.try_take(true, t0 + Duration::from_secs(59)));
        assert!(b.try_take(true, t0 + MINUTE));
    }

    #[test]
    fn never_more_than_the_limit_in_any_minute_however_the_pushes_come() {
        let t0 = Instant::now();
        let mut b = Bucket::new(20, 20, t0);
        let mut sent = Vec::new();
        // Something to send every half second for five minutes, urgent every third time.
        for i in 0..600u32 {
            let now = t0 + Duration::from_millis(500) * i;
            if b.try_take(i % 3 == 0, now) {
                sent.push(now);
            }
        }
        for (i, &start) in sent.iter().enumerate() {
            let within = sent[i..].iter().filter(|&&t| t < start + MINUTE).count();
            assert!(within <= 20, "{within} messages in the minute from {i}");
        }
        assert!(
            sent.len() >= 5 * 20 - 1,
            "the quota is used: {}",
            sent.len()
        );
    }

    #[test]
    fn a_message_counts_from_the_end_of_its_attempt() {
        let t0 = Instant::now();
        let mut b = Bucket::new(1, 1, t0);
        assert!(b.try_take(true, t0));
        // The service took 4 s to answer: it may have counted the message at 3.9 s.
        b.sent(t0, t0 + Duration::from_secs(4));
        assert!(!b.try_take(true, t0 + MINUTE));
        assert_eq!(
            b.wait(true, t0 + MINUTE),
            Duration::from_secs(4),
            "a minute after the answer"
        );
        assert!(b.try_take(true, t0 + MINUTE + Duration::from_secs(4)));
    }

    #[test]
    fn a_refusal_from_the_service_holds_everything() {
        let t0 = Instant::now();
        let mut b = Bucket::new(20, 20, t0);
        b.hold(t0, Duration::from_secs(60));
        assert!(!b.try_take(true, t0 + Duration::from_secs(59)));
        assert_eq!(b.wait(true, t0), Duration::from_secs(60));
        assert!(b.try_take(true, t0 + Duration::from_secs(60)));
    }

    #[test]
    fn a_burst_limit_spaces_messages_out() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, 5, t0);
        assert_eq!(b.available(true, t0), 5);
        assert_eq!(b.available(false, t0), 3);
        for _ in 0..5 {
            assert!(b.try_take(true, t0));
        }
        // 5 a second (Feishu): the next a second later.
        assert_eq!(b.wait(true, t0), SECOND);
        assert!(b.try_take(true, t0 + SECOND));
    }
}
