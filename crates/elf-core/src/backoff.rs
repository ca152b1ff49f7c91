//! The backoff policy: exponential delays with jitter.
//!
//! The formulas are those of the AWS Architecture Blog's "Exponential Backoff and Jitter"
//! (Marc Brooker, 2015). With `base` b, cap c and attempt n counted from 0:
//!
//! | jitter | delay before retry n+1 |
//! |---|---|
//! | `none` | `min(c, b * 2^n)` |
//! | `full` | `random(0, min(c, b * 2^n))` |
//! | `equal` | `t/2 + random(0, t/2)` with `t = min(c, b * 2^n)` |
//! | `decorrelated` | `min(c, random(b, 3 * previous))`, previous starting at b |
//!
//! `elf-backoff` runs commands with it; `elf-db` and `elf-commit` use it while they wait for a
//! lock held by another process.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How a delay is randomised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Jitter {
    /// No randomness: plain exponential backoff.
    None,
    /// Uniform in `[0, t]`.
    Full,
    /// Uniform in `[t/2, t]`.
    Equal,
    /// Uniform in `[base, 3 * previous]`, capped.
    Decorrelated,
}

impl Jitter {
    /// The names accepted on the command line.
    pub const NAMES: &'static [&'static str] = &["full", "equal", "decorrelated", "none"];

    /// Parses a name from [`Jitter::NAMES`].
    pub fn from_name(s: &str) -> Option<Jitter> {
        match s {
            "none" => Some(Jitter::None),
            "full" => Some(Jitter::Full),
            "equal" => Some(Jitter::Equal),
            "decorrelated" => Some(Jitter::Decorrelated),
            _ => None,
        }
    }
}

/// A backoff policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The first delay's scale.
    pub base: Duration,
    /// No delay is longer.
    pub max_delay: Duration,
    /// How delays are randomised.
    pub jitter: Jitter,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            jitter: Jitter::Full,
        }
    }
}

impl Policy {
    /// The exponential ceiling for attempt `n` (from 0): `min(max_delay, base * 2^n)`.
    /// Exact for every `n`: the doubling goes on until it meets the cap, however large the cap.
    pub fn ceiling(&self, n: u32) -> Duration {
        let base = self.base.as_nanos();
        // base < 2^128 / 2^n: the shift cannot overflow (a Duration is below 2^94 ns).
        let t = if base == 0 {
            0
        } else if n < 128 && base < (1u128 << (127 - n)) {
            base << n
        } else {
            u128::MAX
        };
        if t >= self.max_delay.as_nanos() {
            self.max_delay
        } else {
            // t < max_delay's nanoseconds, which fit a Duration.
            Duration::new((t / 1_000_000_000) as u64, (t % 1_000_000_000) as u32)
        }
    }

    /// The range a delay for attempt `n` may fall in, given the previous delay (used by
    /// `decorrelated`). Tests check every drawn delay against it.
    pub fn bounds(&self, n: u32, previous: Duration) -> (Duration, Duration) {
        let t = self.ceiling(n);
        match self.jitter {
            Jitter::None => (t, t),
            Jitter::Full => (Duration::ZERO, t),
            Jitter::Equal => (t / 2, t),
            Jitter::Decorrelated => {
                let hi = previous
                    .checked_mul(3)
                    .unwrap_or(Duration::MAX)
                    .max(self.base);
                (self.base.min(self.max_delay), hi.min(self.max_delay))
            }
        }
    }
}

/// The sequence of delays of one run.
#[derive(Debug, Clone)]
pub struct Schedule {
    policy: Policy,
    seed: Option<u64>,
    /// Seeded at the first delay: a run that never retries never asks the OS for entropy.
    rng: Option<StdRng>,
    attempt: u32,
    previous: Duration,
}

impl Schedule {
    /// A schedule; the same seed gives the same delays.
    pub fn new(policy: Policy, seed: Option<u64>) -> Schedule {
        Schedule {
            policy,
            seed,
            rng: None,
            attempt: 0,
            previous: policy.base,
        }
    }

    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let (lo, hi) = self.policy.bounds(self.attempt, self.previous);
        let d = if hi <= lo {
            lo
        } else {
            let lo_n = lo.as_nanos().min(u64::MAX as u128) as u64;
            let hi_n = hi.as_nanos().min(u64::MAX as u128) as u64;
            let seed = self.seed;
            let rng = self.rng.get_or_insert_with(|| match seed {
                Some(s) => StdRng::seed_from_u64(s),
                None => StdRng::from_os_rng(),
            });
            Duration::from_nanos(rng.random_range(lo_n..=hi_n))
        };
        self.previous = d;
        self.attempt = self.attempt.saturating_add(1);
        d
    }
}

/// Time as the tools see it: real, or a fake clock that sleeps by moving its hands (for tests,
/// enabled by `ELF_FAKE_CLOCK=1`).
pub trait Clock {
    /// Time since the clock started.
    fn elapsed(&self) -> Duration;
    /// Sleep for `d`.
    fn sleep(&mut self, d: Duration);
}

/// The wall clock.
#[derive(Debug)]
pub struct RealClock(Instant);

impl RealClock {
    /// Starts now.
    pub fn new() -> RealClock {
        RealClock(Instant::now())
    }
}

impl Default for RealClock {
    fn default() -> Self {
        RealClock::new()
    }
}

impl Clock for RealClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&mut self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// A clock whose time moves only when it sleeps.
#[derive(Debug, Default)]
pub struct FakeClock(pub Duration);

impl Clock for FakeClock {
    fn elapsed(&self) -> Duration {
        self.0
    }
    fn sleep(&mut self, d: Duration) {
        self.0 = self.0.saturating_add(d);
    }
}

/// The clock to use: fake when `ELF_FAKE_CLOCK=1` is set (a test hook), real otherwise.
pub fn clock_from_env() -> Box<dyn Clock> {
    if std::env::var_os("ELF_FAKE_CLOCK").is_some_and(|v| v == "1") {
        Box::new(FakeClock::default())
    } else {
        Box::new(RealClock::new())
    }
}

/// Waits between tries of something that may be busy, within a deadline.
///
/// ```
/// # use std::time::Duration;
/// # use elf_core::backoff::{Policy, Waiter};
/// let mut w = Waiter::new(Policy::default(), Duration::from_millis(50));
/// let mut tries = 0;
/// while tries < 3 && w.wait() { tries += 1; }
/// ```
#[derive(Debug)]
pub struct Waiter {
    schedule: Schedule,
    start: Instant,
    timeout: Duration,
}

impl Waiter {
    /// Starts waiting now, for at most `timeout` in all.
    pub fn new(policy: Policy, timeout: Duration) -> Waiter {
        Waiter {
            schedule: Schedule::new(policy, None),
            start: Instant::now(),
            timeout,
        }
    }

    /// Time spent so far.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// Sleeps before the next try; false (without sleeping past it) when the deadline has
    /// passed. The last sleep is cut short to end at the deadline, so one more try happens there.
    pub fn wait(&mut self) -> bool {
        let spent = self.start.elapsed();
        if spent >= self.timeout {
            return false;
        }
        let d = self.schedule.next_delay().min(self.timeout - spent);
        std::thread::sleep(d);
        true
    }
}

/// Parses a duration, the one syntax of every tool's duration flags: a number with `ms`, `s`,
/// `m`, `h` or `d`, or a bare number of seconds. Fractions are allowed (`0.5`, `1.5s`);
/// negative, empty or non-finite values are not.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else if let Some(n) = t.strip_suffix('d') {
        (n, 86_400.0)
    } else {
        (t, 1.0)
    };
    let num = num.trim();
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err("expected a number with ms, s, m, h or d (a bare number is seconds)".into());
    }
    let v: f64 = num.parse().map_err(|_| {
        "expected a number with ms, s, m, h or d (a bare number is seconds)".to_string()
    })?;
    let secs = v * unit;
    Duration::try_from_secs_f64(secs).map_err(|_| {
        "duration out of range: it must be under 2^64 seconds (584 billion years)".to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration(".5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5d"), Ok(Duration::from_secs(129_600)));
        for bad in [
            "",
            "-1",
            "1w",
            "h",
            "ms",
            "1e3",
            "nan",
            "1..2s",
            "99999999999999999999999m",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn every_delay_lies_within_its_formula_and_the_cap() {
        for jitter in [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ] {
            for seed in 0..50 {
                let policy = Policy {
                    base: Duration::from_millis(100),
                    max_delay: Duration::from_secs(2),
                    jitter,
                };
                let mut s = Schedule::new(policy, Some(seed));
                let mut prev = policy.base;
                for n in 0..40 {
                    let d = s.next_delay();
                    let (lo, hi) = policy.bounds(n, prev);
                    assert!(
                        lo <= d && d <= hi,
                        "{jitter:?} seed {seed} n {n}: {d:?} not in [{lo:?}, {hi:?}]"
                    );
                    assert!(d <= policy.max_delay);
                    prev = d;
                }
            }
        }
    }

    #[test]
    fn formulas_match_the_aws_analysis() {
        let p = Policy {
            base: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            jitter: Jitter::None,
        };
        let mut s = Schedule::new(p, Some(1));
        let got: Vec<u128> = (0..8).map(|_| s.next_delay().as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 3200, 6400, 10000]);
        let e = Policy {
            jitter: Jitter::Equal,
            ..p
        };
        assert_eq!(
            e.bounds(3, Duration::ZERO),
            (Duration::from_millis(400), Duration::from_millis(800))
        );
        let d = Policy {
            jitter: Jitter::Decorrelated,
            ..p
        };
        assert_eq!(
            d.bounds(9, Duration::from_millis(700)),
            (Duration::from_millis(100), Duration::from_millis(2100))
        );
        assert_eq!(p.ceiling(200), Duration::from_secs(10));
    }

    #[test]
    fn the_doubling_meets_any_cap_exactly() {
        // The exponent was once held at 31: 1 ms * 2^31 stopped a 10^9 s cap at 2^31 ms.
        let p = Policy {
            base: Duration::from_millis(1),
            max_delay: Duration::from_secs(1_000_000_000),
            jitter: Jitter::None,
        };
        assert_eq!(p.ceiling(31), Duration::from_millis(1 << 31));
        assert_eq!(p.ceiling(32), Duration::from_millis(1 << 32));
        assert_eq!(p.ceiling(39), Duration::from_millis(1 << 39));
        assert_eq!(p.ceiling(40), p.max_delay);
        assert_eq!(p.ceiling(u32::MAX), p.max_delay);
        let top = Policy {
            base: Duration::from_nanos(u64::MAX),
            max_delay: Duration::MAX,
            jitter: Jitter::None,
        };
        assert_eq!(top.ceiling(0), Duration::from_nanos(u64::MAX));
        assert_eq!(top.ceiling(90), Duration::MAX);
        let zero = Policy {
            base: Duration::ZERO,
            ..p
        };
        assert_eq!(zero.ceiling(100), Duration::ZERO);
    }

    #[test]
    fn same_seed_same_schedule() {
        let p = Policy::default();
        let a: Vec<Duration> = {
            let mut s = Schedule::new(p, Some(42));
            (0..10).map(|_| s.next_delay()).collect()
        };
        let b: Vec<Duration> = {
            let mut s = Schedule::new(p, Some(42));
            (0..10).map(|_| s.next_delay()).collect()
        };
        let c: Vec<Duration> = {
            let mut s = Schedule::new(p, Some(43));
            (0..10).map(|_| s.next_delay()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
