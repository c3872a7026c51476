//! Slows down password guessing at the console's login.
//!
//! Hand-written rather than taken from a rate-limiter crate: those (governor and the like)
//! count every call on their own clock and refill at a steady rate. What is wanted here is
//! different: only *failed* logins count, a key that fails too often is locked out for a time
//! that doubles with each lock-out, and a success forgets it all. A person who mistypes twice
//! is never slowed down; a script that guesses is soon down to two tries an hour per key.
//!
//! Failures are counted per client address and per user name, apart: one address guessing
//! many names is stopped by the first, many addresses guessing one name by the second.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::Duration;

use tokio::time::Instant;

/// This many failures within [`WINDOW`] lock a key out.
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(10 * 60);
/// The first lock-out; each further one doubles, up to [`LOCK_MAX`].
pub const LOCK_FIRST: Duration = Duration::from_secs(60);
pub const LOCK_MAX: Duration = Duration::from_secs(30 * 60);
/// A key with no failure for this long starts again from the first lock-out.
pub const FORGET_AFTER: Duration = Duration::from_secs(24 * 3600);
/// Keys remembered at most; the least recently failed (unlocked first) go beyond it.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Longest user name kept as a key. Longer ones are no user's (names have at most 64
/// characters) and would let a caller fill memory with a few huge names.
const KEY_NAME_MAX: usize = 65;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Addr(IpAddr),
    User(String),
}

impl Key {
    /// An IPv6 client usually holds a whole /64 and can pick a new address in it for every
    /// try, so IPv6 addresses count per /64. IPv4 mapped into IPv6 counts as the IPv4 address.
    fn addr(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Key::Addr(ip),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Key::Addr(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Key::Addr(IpAddr::V6(std::net::Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
        }
    }

    /// User names are keyed in lower case: the users file treats `Wang` and `wang` as one.
    fn user(name: &str) -> Self {
        Key::User(
            name.chars()
                .take(KEY_NAME_MAX)
                .collect::<String>()
                .to_lowercase(),
        )
    }
}

#[derive(Debug)]
struct Entry {
    /// The latest failures, oldest first, at most [`MAX_FAILURES`].
    failures: VecDeque<Instant>,
    /// Lock-outs so far: the next lasts `LOCK_FIRST * 2^locks`.
    locks: u32,
    locked_until: Option<Instant>,
    last_failure: Instant,
}

impl Entry {
    fn locked(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .filter(|&until| until > now)
            .map(|until| until - now)
    }
}

/// Failed logins per client address and per user name, and the lock-outs they earned.
#[derive(Debug)]
pub struct LoginLimiter {
    entries: HashMap<Key, Entry>,
    capacity: usize,
}

impl Default for LoginLimiter {
    fn default() -> Self {
        Self::new()
    }
}

impl LoginLimiter {
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }

    /// Remembers at most `capacity` keys (at least 1).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            entries: HashMap::new(),
            capacity: capacity.max(1),
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a login from `ip` as `user` may be tried now; if not, how long until it may.
    /// Call it before checking the password, and do not check it when refused.
    pub fn check(&mut self, ip: IpAddr, user: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let wait = [Key::addr(ip), Key::user(user)]
            .iter()
            .filter_map(|k| self.entries.get(k).and_then(|e| e.locked(now)))
            .max();
        match wait {
            Some(wait) => Err(wait),
            None => Ok(()),
        }
    }

    /// Counts a wrong password (or unknown user) from `ip` as `user`.
    pub fn failed(&mut self, ip: IpAddr, user: &str) {
        let now = Instant::now();
        for key in [Key::addr(ip), Key::user(user)] {
            self.fail(key, now);
        }
        if self.entries.len() > self.capacity {
            self.shrink(now);
        }
    }

    /// Forgets the failures of `ip` and of `user`: they got in.
    pub fn succeeded(&mut self, ip: IpAddr, user: &str) {
        self.entries.remove(&Key::addr(ip));
        self.entries.remove(&Key::user(user));
    }

    fn fail(&mut self, key: Key, now: Instant) {
        let entry = self.entries.entry(key).or_insert_with(|| Entry {
            failures: VecDeque::with_capacity(MAX_FAILURES),
            locks: 0,
            locked_until: None,
            last_failure: now,
        });
        // Attempts while locked out should not have been made (see `check`); they neither
        // count nor lengthen the lock, so a caller that forgets `check` cannot lock a user
        // out for ever.
        if entry.locked(now).is_some() {
            return;
        }
        if now.duration_since(entry.last_failure) >= FORGET_AFTER {
            entry.locks = 0;
            entry.failures.clear();
        }
        entry.last_failure = now;
        if entry.failures.len() == MAX_FAILURES {
            entry.failures.pop_front();
        }
        entry.failures.push_back(now);
        // The failures stay counted after a lock-out, so one more failure soon after it ends
        // locks again (for twice as long) until they age out of the window.
        let full = entry.failures.len() == MAX_FAILURES;
        if full && entry.failures.front().is_some_and(|&t| now - t < WINDOW) {
            entry.locked_until = Some(now + lock_for(entry.locks));
            entry.locks = entry.locks.saturating_add(1);
        }
    }

    /// Drops a tenth of the capacity: keys not locked out before locked ones, and among
    /// those the least recently failed. Dropping in bulk keeps the sort rare.
    fn shrink(&mut self, now: Instant) {
        let mut order: Vec<(bool, Instant, Key)> = self
            .entries
            .iter()
            .map(|(k, e)| (e.locked(now).is_some(), e.last_failure, k.clone()))
            .collect();
        let target = self.capacity - self.capacity / 10;
        let drop = self.entries.len().saturating_sub(target);
        if drop == 0 {
            return;
        }
        order.select_nth_unstable_by(drop - 1, |a, b| (a.0, a.1).cmp(&(b.0, b.1)));
        for (_, _, key) in order.into_iter().take(drop) {
            self.entries.remove(&key);
        }
    }
}

fn lock_for(locks: u32) -> Duration {
    LOCK_FIRST
        .checked_mul(1u32.checked_shl(locks).unwrap_or(u32::MAX))
        .unwrap_or(LOCK_MAX)
        .min(LOCK_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::advance;

    const MIN: Duration = Duration::from_secs(60);

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn fail_times(l: &mut LoginLimiter, n: usize, addr: &str, user: &str) {
        for _ in 0..n {
            assert_eq!(l.check(ip(addr), user), Ok(()));
            l.failed(ip(addr), user);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn five_failures_within_ten_minutes_lock_the_key_for_a_minute() {
        let mut l = LoginLimiter::new();
        fail_times(&mut l, 4, "10.0.0.1", "wang");
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Ok(()), "four are forgiven");
        l.failed(ip("10.0.0.1"), "wang");
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Err(MIN));
        advance(Duration::from_secs(20)).await;
        assert_eq!(
            l.check(ip("10.0.0.1"), "wang"),
            Err(Duration::from_secs(40))
        );
        advance(Duration::from_secs(40)).await;
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn failures_spread_wider_than_ten_minutes_do_not_lock() {
        let mut l = LoginLimiter::new();
        for _ in 0..20 {
            fail_times(&mut l, 1, "10.0.0.1", "wang");
            advance(Duration::from_secs(151)).await;
        }
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn each_lock_out_lasts_twice_the_one_before_up_to_thirty_minutes() {
        let mut l = LoginLimiter::new();
        let mut got = Vec::new();
        for _ in 0..8 {
            let mut tries = 0;
            let wait = loop {
                match l.check(ip("10.0.0.1"), "wang") {
                    Ok(()) => l.failed(ip("10.0.0.1"), "wang"),
                    Err(wait) => break wait,
                }
                tries += 1;
                assert!(tries <= MAX_FAILURES, "not locked after {tries} failures");
            };
            got.push(wait);
            advance(wait).await;
        }
        let expected: Vec<Duration> = [1, 2, 4, 8, 16, 30, 30, 30]
            .iter()
            .map(|&m| m * MIN)
            .collect();
        assert_eq!(got, expected);
    }

    #[tokio::test(start_paused = true)]
    async fn one_failure_soon_after_a_lock_out_locks_again() {
        let mut l = LoginLimiter::new();
        fail_times(&mut l, 5, "10.0.0.1", "wang");
        advance(MIN).await;
        fail_times(&mut l, 1, "10.0.0.1", "wang");
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Err(2 * MIN));
    }

    #[tokio::test(start_paused = true)]
    async fn attempts_while_locked_out_neither_count_nor_lengthen_the_lock() {
        let mut l = LoginLimiter::new();
        fail_times(&mut l, 5, "10.0.0.1", "wang");
        for _ in 0..50 {
            l.failed(ip("10.0.0.1"), "wang");
        }
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Err(MIN));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_forgets_the_failures_and_the_lock_outs() {
        let mut l = LoginLimiter::new();
        fail_times(&mut l, 5, "10.0.0.1", "wang");
        advance(MIN).await;
        fail_times(&mut l, 1, "10.0.0.1", "wang");
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Err(2 * MIN));
        advance(2 * MIN).await;
        l.succeeded(ip("10.0.0.1"), "wang");
        assert!(l.is_empty());
        fail_times(&mut l, 4, "10.0.0.1", "wang");
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Ok(()));
        l.failed(ip("10.0.0.1"), "wang");
        assert_eq!(
            l.check(ip("10.0.0.1"), "wang"),
            Err(MIN),
            "back to one minute"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_day_without_failures_starts_the_lock_outs_again_from_one_minute() {
        let mut l = LoginLimiter::new();
        fail_times(&mut l, 5, "10.0.0.1", "wang");
        advance(MIN).await;
        fail_times(&mut l, 1, "10.0.0.1", "wang");
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Err(2 * MIN));
        advance(FORGET_AFTER).await;
        fail_times(&mut l, 5, "10.0.0.1", "wang");
        assert_eq!(l.check(ip("10.0.0.1"), "wang"), Err(MIN));
    }

    #[tokio::test(start_paused = true)]
    async fn one_address_guessing_many_names_is_locked_out_by_its_address() {
        let mut l = LoginLimiter::new();
        for name in ["a", "b", "c", "d", "e"] {
            fail_times(&mut l, 1, "10.0.0.1", name);
        }
        assert_eq!(l.check(ip("10.0.0.1"), "f"), Err(MIN));
        assert_eq!(
            l.check(ip("10.0.0.2"), "a"),
            Ok(()),
            "others may still log in as a"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn many_addresses_guessing_one_name_are_locked_out_by_the_name() {
        let mut l = LoginLimiter::new();
        for n in 1..=5 {
            fail_times(&mut l, 1, &format!("10.0.0.{n}"), "wang");
        }
        assert_eq!(l.check(ip("10.0.0.9"), "wang"), Err(MIN));
        assert_eq!(l.check(ip("10.0.0.9"), "WANG"), Err(MIN), "in any case");
        assert_eq!(l.check(ip("10.0.0.9"), "li"), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn ipv6_addresses_count_per_slash_64_and_mapped_ipv4_as_ipv4() {
        let mut l = LoginLimiter::new();
        for n in 1..=5 {
            fail_times(&mut l, 1, &format!("2001:db8:1:2::{n}"), &format!("u{n}"));
        }
        assert_eq!(l.check(ip("2001:db8:1:2:ffff::1"), "x"), Err(MIN));
        assert_eq!(l.check(ip("2001:db8:1:3::1"), "x"), Ok(()));
        for n in 1..=5 {
            fail_times(&mut l, 1, "::ffff:10.0.0.7", &format!("v{n}"));
        }
        assert_eq!(l.check(ip("10.0.0.7"), "x"), Err(MIN));
    }

    #[tokio::test(start_paused = true)]
    async fn the_map_stays_bounded_and_keeps_the_lock_outs_longest() {
        let mut l = LoginLimiter::with_capacity(100);
        fail_times(&mut l, 5, "10.0.0.1", "wang");
        for n in 0..1000u32 {
            advance(Duration::from_millis(1)).await;
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + n));
            l.failed(addr, &format!("guess{n}"));
            assert!(l.len() <= 100, "{} keys", l.len());
        }
        assert!(l.check(ip("10.0.0.1"), "someone").is_err());
        assert!(l.check(ip("10.9.9.9"), "wang").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_user_name_is_kept_short() {
        let mut l = LoginLimiter::new();
        l.failed(ip("10.0.0.1"), &"x".repeat(1_000_000));
        let longest = l
            .entries
            .keys()
            .map(|k| match k {
                Key::User(u) => u.len(),
                Key::Addr(_) => 0,
            })
            .max();
        assert_eq!(longest, Some(KEY_NAME_MAX));
    }
}
