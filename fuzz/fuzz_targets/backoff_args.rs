//! elf-backoff has no record; what it parses from outside is its arguments: `--retry-on` and
//! the delays `--base` and `--max-delay` (`args.rs`), `--max-time`
//! (`elf_core::backoff::parse_duration`), and the schedule they make.
//!
//! Properties: no input panics; a status list holds only ranges within 1..=255 and never
//! matches 0; a duration is accepted only in the documented forms; every delay of any policy
//! a user can give lies within its formula's bounds and under the cap.
#![no_main]

use elf_backoff::args;

use std::time::Duration;

use elf_core::backoff::{self, Jitter, Policy, Schedule};
use libfuzzer_sys::fuzz_target;

use args::RetryOn;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match RetryOn::parse(&text) {
        Ok(RetryOn::Any) => assert_eq!(text, "any"),
        Ok(r @ RetryOn::List(_)) => {
            let RetryOn::List(ranges) = &r else {
                unreachable!()
            };
            assert!(!ranges.is_empty());
            for &(lo, hi) in ranges {
                assert!((1..=255).contains(&lo) && lo <= hi && hi <= 255);
                assert!(r.matches(lo) && r.matches(hi));
            }
            assert!(!r.matches(0) && !r.matches(256));
        }
        Err(_) => {}
    }
    if let Ok(d) = backoff::parse_duration(&text) {
        let t = text.trim();
        let num = t
            .strip_suffix("ms")
            .or_else(|| t.strip_suffix('s'))
            .or_else(|| t.strip_suffix('m'))
            .unwrap_or(t)
            .trim();
        assert!(num.bytes().all(|b| b.is_ascii_digit() || b == b'.'));
        assert!(num.bytes().any(|b| b.is_ascii_digit()));
        // A delay is a duration that fits the range delays are drawn in.
        assert_eq!(
            args::delay(&text).ok(),
            u64::try_from(d.as_nanos()).is_ok().then_some(d)
        );
    }

    // A policy from any delays the flags accept (`args::delay`: at most 2^64 - 1 ns; the first
    // run of this target, with durations up to 2^64 - 1 s as parse_duration allows, found
    // delays drawn below their lower bound): the input's first bytes choose seconds,
    // nanoseconds, jitter and seed.
    let num = |i: usize| {
        let mut b = [0u8; 8];
        for (j, x) in b.iter_mut().enumerate() {
            *x = data.get(i * 8 + j).copied().unwrap_or(0);
        }
        u64::from_le_bytes(b)
    };
    let scale = |n: u64| match n % 4 {
        0 => n >> 40,
        1 => n >> 20,
        2 => n % 100,
        _ => n,
    };
    let fit = |d: Duration| {
        if u64::try_from(d.as_nanos()).is_ok() {
            d
        } else {
            Duration::from_nanos(u64::MAX)
        }
    };
    let policy = Policy {
        base: fit(Duration::new(
            scale(num(0)),
            (num(1) % 1_000_000_000) as u32,
        )),
        max_delay: fit(Duration::new(
            scale(num(2)),
            (num(3) % 1_000_000_000) as u32,
        )),
        jitter: [
            Jitter::None,
            Jitter::Full,
            Jitter::Equal,
            Jitter::Decorrelated,
        ][(num(4) % 4) as usize],
    };
    let mut s = Schedule::new(policy, Some(num(5)));
    let mut previous = policy.base;
    for n in 0..40 {
        let d = s.next_delay();
        let (lo, hi) = policy.bounds(n, previous);
        assert!(
            lo <= d && d <= hi && d <= policy.max_delay.max(lo),
            "{policy:?} attempt {n}: {d:?} outside [{lo:?}, {hi:?}]"
        );
        previous = d;
    }
});
