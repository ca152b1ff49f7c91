//! The values of elf-backoff's flags that need more than `elf_core`'s parsers: `--retry-on
//! LIST`, the delays and `--hold`. Pure functions, fuzzed on their own (`fuzz/fuzz_targets/backoff_args.rs`).

use std::time::Duration;

/// `--base` and `--max-delay`: a duration (`elf_core::backoff::parse_duration`) of at most
/// 2^64 - 1 nanoseconds (584 years), the range the delays are drawn in; a longer one would
/// be drawn shorter than its formula says.
pub fn delay(s: &str) -> Result<Duration, String> {
    let d = elf_core::backoff::parse_duration(s)?;
    if u64::try_from(d.as_nanos()).is_err() {
        return Err("a delay may be at most 584 years (2^64 - 1 ns)".into());
    }
    Ok(d)
}

/// `--hold`: a number of bytes, with K, M or G (KiB, MiB, GiB: powers of 1024) if wanted.
pub fn size(s: &str) -> Result<u64, String> {
    const UNITS: &[(&str, u64)] = &[
        ("KiB", 1 << 10),
        ("MiB", 1 << 20),
        ("GiB", 1 << 30),
        ("K", 1 << 10),
        ("M", 1 << 20),
        ("G", 1 << 30),
    ];
    let (num, unit) = UNITS
        .iter()
        .find_map(|&(u, m)| s.strip_suffix(u).map(|n| (n, m)))
        .unwrap_or((s, 1));
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return Err("expected a number of bytes, with K, M or G (powers of 1024) if wanted".into());
    }
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .ok_or_else(|| "a size may be at most 2^64 - 1 bytes".into())
}

/// The statuses to retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryOn {
    Any,
    List(Vec<(u32, u32)>),
}

impl RetryOn {
    pub fn parse(s: &str) -> std::result::Result<RetryOn, String> {
        if s == "any" {
            return Ok(RetryOn::Any);
        }
        let mut ranges = Vec::new();
        for part in s.split(',') {
            let num = |t: &str| -> std::result::Result<u32, String> {
                let t = t.trim();
                match t.parse::<u32>() {
                    Ok(n) if (1..=255).contains(&n) => Ok(n),
                    _ => Err(format!("'{t}' is not an exit status from 1 to 255")),
                }
            };
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (num(a)?, num(b)?),
                None => {
                    let n = num(part)?;
                    (n, n)
                }
            };
            if lo > hi {
                return Err(format!("range {lo}-{hi} is empty"));
            }
            ranges.push((lo, hi));
        }
        Ok(RetryOn::List(ranges))
    }

    pub fn matches(&self, code: u32) -> bool {
        match self {
            RetryOn::Any => code != 0,
            RetryOn::List(r) => r.iter().any(|&(lo, hi)| (lo..=hi).contains(&code)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_fit_in_64_bits_of_nanoseconds() {
        assert_eq!(delay("100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(
            delay("18446744073"),
            Ok(Duration::from_secs(18_446_744_073))
        );
        // Found by fuzz/backoff_args: a longer base was drawn as 584 years.
        assert!(delay("18446744074").is_err());
        assert!(delay("20000000000").is_err());
        assert!(delay("-1").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(size("0"), Ok(0));
        assert_eq!(size("4096"), Ok(4096));
        assert_eq!(size("64K"), Ok(64 << 10));
        assert_eq!(size("8MiB"), Ok(8 << 20));
        assert_eq!(size("2G"), Ok(2 << 30));
        for bad in [
            "",
            "K",
            "-1",
            "1.5M",
            "1T",
            " 1",
            "1 M",
            "99999999999999999999",
            "17179869184G",
        ] {
            assert!(size(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn retry_on_lists() {
        assert_eq!(RetryOn::parse("any"), Ok(RetryOn::Any));
        assert_eq!(
            RetryOn::parse("1-3,75"),
            Ok(RetryOn::List(vec![(1, 3), (75, 75)]))
        );
        let r = RetryOn::parse("1-3,75").unwrap_or(RetryOn::Any);
        assert!(r.matches(2) && r.matches(75) && !r.matches(4) && !r.matches(0));
        assert!(RetryOn::Any.matches(143) && !RetryOn::Any.matches(0));
        for bad in ["", "0", "256", "3-1", "x", "1,,2", "-1", "75-"] {
            assert!(RetryOn::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
