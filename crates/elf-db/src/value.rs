//! SQLite values and JSON, both ways: a JSON number as SQLite stores it, a stored value as
//! JSON, and the unique keys a row's column names become. A leaf: the statement runner
//! (`stmt`), the row printer (`query`) and the lean record reader (`lean`) all use it.

use elf_core::{Error, Result};
use rusqlite::types::ValueRef;
use serde_json::Value;

/// A JSON number, as written, as SQLite stores it: an integer (no fraction, no exponent) as
/// INTEGER, exactly; any other number as REAL, the 64-bit double nearest to it (as SQLite reads
/// its own literals: `1.0000000000000000001` is 1.0, `0.1` the double nearest 0.1).
///
/// Refused, as data errors, because the value stored would not be the number given: an integer
/// beyond 64 bits (below -2^63 or above 2^63-1), which SQLite could only keep as TEXT or round
/// to a REAL; a number too large for a double (`1e400`, which would be infinite); a number not
/// zero that is too small for one (`1.5e-400`, which would be 0). `-0` is the integer 0;
/// `-0.0` is the REAL -0.0.
pub fn number(text: &str) -> Result<ValueRef<'static>> {
    let integer = !text.contains(['.', 'e', 'E']);
    if integer {
        return match text.parse::<i64>() {
            Ok(i) => Ok(ValueRef::Integer(i)),
            Err(_) => Err(Error::data(format!(
                "integer {text} is out of range for SQLite's 64-bit INTEGER (-9223372036854775808 \
                 to 9223372036854775807); give it as a string to store its digits"
            ))),
        };
    }
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let zero = !mantissa.bytes().any(|b| matches!(b, b'1'..=b'9'));
    match text.parse::<f64>() {
        Ok(f) if f.is_finite() && (f != 0.0 || zero) => Ok(ValueRef::Real(f)),
        Ok(f) if f.is_finite() => Err(Error::data(format!(
            "number {text} is out of range for a REAL: too small, it would be stored as 0"
        ))),
        _ => Err(Error::data(format!(
            "number {text} is out of range for a REAL: too large, it would be infinite"
        ))),
    }
}

/// A value as JSON (see `query`'s module documentation).
pub fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(hex(b)),
    }
}

pub fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(b.len() * 2);
    for &byte in b {
        s.push(char::from(DIGITS[usize::from(byte >> 4)]));
        s.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    s
}

/// The column names, a repeated name made unique with `:2`, `:3`, ... appended.
pub fn unique(names: &[&str]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        let mut key = (*name).to_string();
        let mut n = 1;
        while seen.contains(&key) {
            n += 1;
            key = format!("{name}:{n}");
        }
        seen.push(key);
    }
    seen
}
