//! Logging without flooding: a device that sends garbage ten times a second is reported once a
//! minute, with how many reports were held back.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use tokio::time::Instant;

pub struct Throttle<K> {
    every: Duration,
    seen: HashMap<K, (Instant, u64)>,
}

impl<K: Hash + Eq> Throttle<K> {
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            seen: HashMap::new(),
        }
    }

    /// `Some(held back since the last report)` when `key` may be reported now.
    pub fn allow(&mut self, key: K) -> Option<u64> {
        let now = Instant::now();
        match self.seen.get_mut(&key) {
            Some((last, held)) if now.duration_since(*last) < self.every => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                let n = *held;
                *last = now;
                *held = 0;
                Some(n)
            }
            None => {
                self.seen.insert(key, (now, 0));
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_noisy_key_is_reported_once_a_minute_with_the_count_held_back() {
        let mut t = Throttle::new(Duration::from_secs(60));
        assert_eq!(t.allow("smoke-1"), Some(0));
        for _ in 0..9 {
            assert_eq!(t.allow("smoke-1"), None);
        }
        assert_eq!(t.allow("door-2"), Some(0), "keys are throttled apart");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(t.allow("smoke-1"), Some(9));
        assert_eq!(t.allow("smoke-1"), None);
    }
}
