//! Commit messages and dates.

use elf_core::text::clean;

/// A cleaned commit message: one subject line and a body (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The first line.
    pub subject: String,
    /// Everything after it, without leading or trailing blank lines.
    pub body: String,
}

impl Message {
    /// Cleans `raw`: ANSI escapes and control characters removed, trailing spaces cut, runs of
    /// blank lines collapsed. The first non-blank line is the subject; a newline in what was
    /// meant as a subject therefore moves the rest into the body. `None` when nothing is left.
    pub fn parse(raw: &str) -> Option<Message> {
        let text = clean(raw, true);
        let mut lines = text
            .lines()
            .map(str::trim_end)
            .skip_while(|l| l.trim().is_empty());
        let subject = lines.next()?.trim().to_string();
        let mut body: Vec<&str> = Vec::new();
        for line in lines {
            if line.trim().is_empty() {
                if body.last().is_some_and(|l| !l.is_empty()) {
                    body.push("");
                }
            } else {
                body.push(line);
            }
        }
        while body.last() == Some(&"") {
            body.pop();
        }
        Some(Message {
            subject,
            body: body.join("\n"),
        })
    }

    /// The whole message as git stores it: subject, blank line, body, final newline.
    pub fn text(&self) -> String {
        if self.body.is_empty() {
            format!("{}\n", self.subject)
        } else {
            format!("{}\n\n{}\n", self.subject, self.body)
        }
    }

    /// One message for several records committed together: the first subject with
    /// "and N more", and every record's message in the body.
    pub fn combine(msgs: &[&Message]) -> Message {
        match msgs {
            [] => Message {
                subject: String::new(),
                body: String::new(),
            },
            [one] => (*one).clone(),
            [first, ..] => Message {
                subject: format!("{} and {} more", first.subject, msgs.len() - 1),
                body: msgs
                    .iter()
                    .map(|m| m.text())
                    .collect::<Vec<_>>()
                    .join("\n")
                    .trim_end()
                    .to_string(),
            },
        }
    }
}

/// Parses a date as git's `GIT_AUTHOR_DATE` and `GIT_COMMITTER_DATE` take it, in the forms
/// scripts use: `@SECONDS [+-HHMM]`, `SECONDS [+-HHMM]`, and ISO 8601
/// (`2025-12-01T10:20:30+01:00`, `2025-12-01 10:20:30 +0100`, `...Z`). Returns seconds since
/// the epoch and the offset in minutes.
pub fn parse_date(s: &str) -> Option<(i64, i32)> {
    let s = s.trim();
    let at = s.starts_with('@');
    let mut parts = s.trim_start_matches('@').split_whitespace();
    if let Some(first) = parts.next() {
        if first.bytes().all(|b| b.is_ascii_digit()) && (at || first.len() >= 9) {
            let secs: i64 = first.parse().ok()?;
            let offset = match parts.next() {
                None => 0,
                Some(tz) => parse_offset(tz)?,
            };
            return parts.next().is_none().then_some((secs, offset));
        }
    }
    // ISO 8601: YYYY-MM-DD[T ]HH:MM[:SS][ ]?(Z|+HH[:]MM)?
    let b = s.as_bytes();
    if b.len() < 16
        || b[4] != b'-'
        || b[7] != b'-'
        || !(b[10] == b'T' || b[10] == b' ')
        || b[13] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        if t.bytes().all(|c| c.is_ascii_digit()) {
            t.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day, hour, min) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
    );
    let mut rest = &s[16..];
    let mut sec = 0;
    if let Some(r) = rest.strip_prefix(':') {
        sec = num(17..19)?;
        rest = r.get(2..)?;
    }
    let rest = rest.trim_start();
    let offset = if rest.is_empty() || rest == "Z" {
        0
    } else {
        parse_offset(rest)?
    };
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let local = days * 86_400 + hour * 3600 + min * 60 + sec;
    Some((local - i64::from(offset) * 60, offset))
}

/// `+0100`, `-05:30` as minutes.
fn parse_offset(tz: &str) -> Option<i32> {
    let (sign, digits) = match tz.as_bytes().first()? {
        b'+' => (1, &tz[1..]),
        b'-' => (-1, &tz[1..]),
        _ => return None,
    };
    let digits: String = digits.chars().filter(|&c| c != ':').collect();
    if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let h: i32 = digits[..2].parse().ok()?;
    let m: i32 = digits[2..].parse().ok()?;
    (h <= 14 && m < 60).then_some(sign * (h * 60 + m))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> (String, String) {
        let m = Message::parse(s).unwrap_or(Message {
            subject: "<none>".into(),
            body: String::new(),
        });
        (m.subject, m.body)
    }

    #[test]
    fn subjects_are_clean_and_newlines_move_to_the_body() {
        assert_eq!(
            p("failure: \u{1b}[31mred\u{1b}[0m title"),
            ("failure: red title".into(), String::new())
        );
        assert_eq!(
            p("failure: evil\nInjected: line\n\n\n\nmore  \n\n"),
            ("failure: evil".into(), "Injected: line\n\nmore".into())
        );
        assert_eq!(
            p("\n\n  title\r\n\r\nbody"),
            ("title".into(), "body".into())
        );
        assert_eq!(
            p("t\u{7}i\u{0}tle\u{1b}]0;x\u{7}"),
            ("title".into(), String::new())
        );
        assert!(Message::parse(" \n\u{1b}[0m\n").is_none());
    }

    #[test]
    fn text_and_combine() {
        let a = Message::parse("failure: a\nDomain: x").unwrap_or_else(|| unreachable!());
        let b = Message::parse("heuristic: b").unwrap_or_else(|| unreachable!());
        assert_eq!(a.text(), "failure: a\n\nDomain: x\n");
        let c = Message::combine(&[&a, &b, &b]);
        assert_eq!(c.subject, "failure: a and 2 more");
        assert_eq!(
            c.text(),
            "failure: a and 2 more\n\nfailure: a\n\nDomain: x\n\nheuristic: b\n\nheuristic: b\n"
        );
        assert_eq!(Message::combine(&[&b]), b);
    }

    #[test]
    fn dates() {
        assert_eq!(parse_date("@1700000000 +0100"), Some((1_700_000_000, 60)));
        assert_eq!(parse_date("1700000000"), Some((1_700_000_000, 0)));
        assert_eq!(parse_date("@0 +0000"), Some((0, 0)));
        assert_eq!(parse_date("2023-11-14T22:13:20Z"), Some((1_700_000_000, 0)));
        assert_eq!(
            parse_date("2023-11-14 23:13:20 +0100"),
            Some((1_700_000_000, 60))
        );
        assert_eq!(
            parse_date("2023-11-14T17:43:20-04:30"),
            Some((1_700_000_000, -270))
        );
        assert_eq!(parse_date("1970-01-01T00:00"), Some((0, 0)));
        for bad in [
            "",
            "yesterday",
            "2023-13-01T00:00:00",
            "@170 +01",
            "1700000000 +0100 x",
            "2023-11-14T22:13:20 +99",
        ] {
            assert_eq!(parse_date(bad), None, "{bad:?}");
        }
    }
}
