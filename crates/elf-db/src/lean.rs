//! A lean reading of the plain rows of `insert --table`: the keys and values of a flat JSON
//! object, found in the line's text without building a record.
//!
//! It takes only what it can read exactly as the general path would (`parse_line`, then
//! [`crate::stmt::Bind`]): an object whose values are strings, numbers, `true`, `false` or
//! `null`. Anything else (a nested object or array, a number out of range, a key `db` or
//! `error`, text that is not JSON at all) is left to the general path, which reports what is
//! wrong with it, so that both paths store the same values and give the same errors.
//!
//! Strings without escapes are used where they are in the line; those with escapes are
//! unescaped by serde_json itself.

use rusqlite::types::ValueRef;

/// Where a string is: a slice of the line, or of the unescaped text.
#[derive(Debug, Clone, Copy)]
enum Span {
    Line(usize, usize),
    Scratch(usize, usize),
}

/// A value, as it is bound.
#[derive(Debug, Clone, Copy)]
enum Val {
    Null,
    Int(i64),
    Real(f64),
    /// A string.
    Text(Span),
}

/// The keys and values of the last line read, in order.
#[derive(Debug, Default)]
pub struct Row {
    keys: Vec<Span>,
    values: Vec<Val>,
    scratch: String,
}

/// Skips JSON white space.
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// One in each byte.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of each byte.
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The bytes `b[i..i + 8]` as one little-endian word.
fn word(b: &[u8], i: usize) -> Option<u64> {
    let chunk: [u8; 8] = b.get(i..i.checked_add(8)?)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

/// The high bit set in each byte of `x` that is zero (and perhaps in bytes above the first
/// such one, never below it: the lowest set bit is exact).
fn zero_bytes(x: u64) -> u64 {
    x.wrapping_sub(ONES) & !x & HIGHS
}

/// The index of the first byte at or after `i` that ends a string's plain run: `"`, `\` or a
/// control character (or `b.len()`).
fn plain_run(b: &[u8], mut i: usize) -> usize {
    let quote = ONES * u64::from(b'"');
    let backslash = ONES * u64::from(b'\\');
    while let Some(x) = word(b, i) {
        // Bytes below 0x20 show as those where subtracting 0x20 borrows.
        let control = x.wrapping_sub(ONES * 0x20) & !x & HIGHS;
        let m = zero_bytes(x ^ quote) | zero_bytes(x ^ backslash) | control;
        if m != 0 {
            return i + (m.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if c == b'"' || c == b'\\' || c < 0x20 {
            return i;
        }
        i += 1;
    }
    i
}

fn digits(b: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = b.get(i) {
        i += 1;
    }
    i
}

impl Row {
    /// Reads `text`, a whole line, and returns it as a string for [`Row::keys`] and
    /// [`Row::values`]; `None` when it is not a flat object of plain values (or not valid
    /// JSON): the general path then takes it.
    pub fn parse<'t>(&mut self, text: &'t [u8]) -> Option<&'t str> {
        let s = std::str::from_utf8(text).ok()?;
        self.read(s).then_some(s)
    }

    fn read(&mut self, s: &str) -> bool {
        self.keys.clear();
        self.values.clear();
        self.scratch.clear();
        let b = s.as_bytes();
        let mut i = ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return false;
        }
        i = ws(b, i + 1);
        if b.get(i) == Some(&b'}') {
            return ws(b, i + 1) == b.len();
        }
        loop {
            let Some((key, next)) = self.string(s, i) else {
                return false;
            };
            if matches!(self.str(s, key), "db" | "error") {
                return false;
            }
            i = ws(b, next);
            if b.get(i) != Some(&b':') {
                return false;
            }
            i = ws(b, i + 1);
            let Some((value, next)) = self.value(s, i) else {
                return false;
            };
            self.keys.push(key);
            self.values.push(value);
            i = ws(b, next);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b'}') => return ws(b, i + 1) == b.len(),
                _ => return false,
            }
        }
    }

    /// The number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// The keys, in order (`s` is what [`Row::parse`] returned).
    pub fn keys<'a>(&'a self, s: &'a str) -> impl Iterator<Item = &'a str> + Clone + 'a {
        self.keys.iter().map(move |&k| self.str(s, k))
    }

    /// True when two keys are the same (JSON keeps the last value at the first place; the
    /// general path does that).
    pub fn has_duplicates(&self, s: &str) -> bool {
        let keys: Vec<&str> = self.keys(s).collect();
        keys.iter().enumerate().any(|(i, k)| keys[..i].contains(k))
    }

    /// The values, in order, as bound parameters.
    pub fn values<'a>(&'a self, s: &'a str) -> impl Iterator<Item = ValueRef<'a>> + 'a {
        self.values.iter().map(move |v| match *v {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(i),
            Val::Real(f) => ValueRef::Real(f),
            Val::Text(span) => ValueRef::Text(self.str(s, span).as_bytes()),
        })
    }

    fn str<'a>(&'a self, s: &'a str, span: Span) -> &'a str {
        match span {
            Span::Line(a, b) => s.get(a..b).unwrap_or(""),
            Span::Scratch(a, b) => self.scratch.get(a..b).unwrap_or(""),
        }
    }

    /// The string starting at `i` (at its quote), and the index after it.
    fn string(&mut self, s: &str, i: usize) -> Option<(Span, usize)> {
        let b = s.as_bytes();
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let mut j = i + 1;
        let mut escaped = false;
        loop {
            j = plain_run(b, j);
            match *b.get(j)? {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    j += 2;
                }
                _ => return None,
            }
        }
        if !escaped {
            return Some((Span::Line(i + 1, j), j + 1));
        }
        let unescaped: String = serde_json::from_str(s.get(i..=j)?).ok()?;
        let start = self.scratch.len();
        self.scratch.push_str(&unescaped);
        Some((Span::Scratch(start, self.scratch.len()), j + 1))
    }

    /// The plain value starting at `i`, and the index after it.
    fn value(&mut self, s: &str, i: usize) -> Option<(Val, usize)> {
        let b = s.as_bytes();
        let rest = b.get(i..)?;
        match *rest.first()? {
            b'"' => self
                .string(s, i)
                .map(|(span, next)| (Val::Text(span), next)),
            b't' if rest.starts_with(b"true") => Some((Val::Int(1), i + 4)),
            b'f' if rest.starts_with(b"false") => Some((Val::Int(0), i + 5)),
            b'n' if rest.starts_with(b"null") => Some((Val::Null, i + 4)),
            b'-' | b'0'..=b'9' => number(s, i),
            _ => None,
        }
    }
}

/// The number starting at `i` (JSON's grammar, strictly), and the index after it, bound as
/// [`crate::stmt::number`] binds it; one it refuses is left to the general path, which reports
/// it.
fn number(s: &str, start: usize) -> Option<(Val, usize)> {
    let b = s.as_bytes();
    let mut i = start;
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(b, i + 1),
        _ => return None,
    }
    let mut float = false;
    if b.get(i) == Some(&b'.') {
        let d = i + 1;
        i = digits(b, d);
        if i == d {
            return None;
        }
        float = true;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let d = i;
        i = digits(b, d);
        if i == d {
            return None;
        }
        float = true;
    }
    let text = s.get(start..i)?;
    let v = if float {
        match crate::value::number(text).ok()? {
            ValueRef::Real(f) => Val::Real(f),
            _ => return None,
        }
    } else {
        Val::Int(text.parse::<i64>().ok()?)
    };
    Some((v, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lean(text: &str) -> Option<Vec<(String, String)>> {
        let mut row = Row::default();
        let s = row.parse(text.as_bytes())?;
        let keys = row.keys(s).map(str::to_string);
        let values = row.values(s).map(|v| match v {
            ValueRef::Null => "null".to_string(),
            ValueRef::Integer(i) => format!("int {i}"),
            ValueRef::Real(f) => format!("real {f:?}"),
            ValueRef::Text(t) => format!("text {}", String::from_utf8_lossy(t)),
            ValueRef::Blob(_) => "blob".to_string(),
        });
        Some(keys.zip(values).collect())
    }

    fn pairs(p: &[(&str, &str)]) -> Option<Vec<(String, String)>> {
        Some(
            p.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn flat_objects_are_read_as_the_general_path_binds_them() {
        assert_eq!(lean("{}"), pairs(&[]));
        assert_eq!(lean(" { } "), pairs(&[]));
        assert_eq!(
            lean(r#"{"a":"x","b":-12,"c":1.5e3,"d":true,"e":false,"f":null,"g":0,"h":-0.0}"#),
            pairs(&[
                ("a", "text x"),
                ("b", "int -12"),
                ("c", "real 1500.0"),
                ("d", "int 1"),
                ("e", "int 0"),
                ("f", "null"),
                ("g", "int 0"),
                ("h", "real -0.0")
            ])
        );
        assert_eq!(
            lean(
                r#" { "k\u00e9" : "a\"b\\c\nd\ud83d\ude00" , "big" : "123456789012345678901234567890" } "#
            ),
            pairs(&[
                ("ké", "text a\"b\\c\nd😀"),
                ("big", "text 123456789012345678901234567890")
            ])
        );
        assert_eq!(
            lean(r#"{"u":9223372036854775807,"n":-9223372036854775808,"e":1E2,"z":0e-999}"#),
            pairs(&[
                ("u", "int 9223372036854775807"),
                ("n", "int -9223372036854775808"),
                ("e", "real 100.0"),
                ("z", "real 0.0")
            ])
        );
    }

    #[test]
    fn anything_else_is_left_to_the_general_path() {
        for text in [
            "",
            "[]",
            "{",
            "{}x",
            "{} {}",
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":{"b":1}}"#,
            r#"{"a":[1]}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":.5}"#,
            r#"{"a":1e}"#,
            r#"{"a":-}"#,
            r#"{"a":+1}"#,
            r#"{"a":1e999}"#,
            r#"{"a":1.5e-400}"#,
            r#"{"a":9223372036854775808}"#,
            r#"{"a":-9223372036854775809}"#,
            r#"{"a":18446744073709551615}"#,
            r#"{"a":tru}"#,
            r#"{"a":truex}"#,
            r#"{"a":nul}"#,
            r#"{"a":"x"#,
            "{\"a\":\"tab\there\"}",
            r#"{"a":"\x"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{a:1}"#,
            r#"{"db":1}"#,
            r#"{"error":null}"#,
            r#"{"d\u0062":1}"#,
            "{\"a\":NaN}",
        ] {
            assert_eq!(lean(text), None, "{text}");
        }
        let mut row = Row::default();
        assert_eq!(row.parse(b"{\"a\":\"\xff\"}"), None);
    }

    #[test]
    fn scans_find_the_first_byte_wherever_it_is() {
        for len in 0..40 {
            for at in 0..=len {
                for stop in [b'"', b'\\', 0, 0x1f, b'\n'] {
                    let mut b = vec![0xe9; len];
                    if at < len {
                        b[at] = stop;
                    }
                    if at + 1 < len {
                        b[at + 1] = 1;
                    }
                    assert_eq!(plain_run(&b, 0), at, "{len} {at} {stop}");
                }
                let b = vec![b' '; len];
                assert_eq!(plain_run(&b, 0), len);
                assert_eq!(plain_run(&b, at), len);
            }
        }
        for c in 0..=255u8 {
            let b = [b'a', b'a', b'a', c, b'a', b'a', b'a', b'a', b'a'];
            let stops = c == b'"' || c == b'\\' || c < 0x20;
            assert_eq!(plain_run(&b, 0), if stops { 3 } else { 9 }, "{c}");
        }
    }

    #[test]
    fn duplicate_keys_are_seen() {
        let mut row = Row::default();
        let s = row.parse(br#"{"a":1,"b":2,"a":3}"#);
        assert!(s.is_some_and(|s| row.has_duplicates(s)));
        let s = row.parse(br#"{"a":1,"A":2}"#);
        assert!(s.is_some_and(|s| !row.has_duplicates(s)));
    }
}
