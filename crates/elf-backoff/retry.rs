//! `--retry-on LIST`: which exit statuses make elf-backoff retry. A pure parser, fuzzed on its
//! own (`fuzz/fuzz_targets/backoff_args.rs`).

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
