//! `query`, `check` and `checkpoint`.
//!
//! # Rows
//!
//! `elf-db query SQL` prints each result row as one JSON object, its keys the column names in
//! order (a repeated name gets `:2`, `:3`, ... appended), its values typed:
//!
//! | SQLite | JSON |
//! |---|---|
//! | NULL | `null` |
//! | INTEGER | a number without a fraction |
//! | REAL | a number (`1.0` keeps its fraction); an infinity is `null` |
//! | TEXT | a string (invalid UTF-8 replaced by U+FFFD) |
//! | BLOB | a string of upper-case hex digits, as SQLite's `hex()` gives |
//!
//! ```json
//! {"id":42,"title":"t","confidence":0.85,"tags":null}
//! ```
//!
//! Rows are written as they are stepped, so memory stays flat whatever the result's size.
//! The connection is opened read-only with `query_only`, and the SQL must be one statement
//! that SQLite says does not write: a query never writes.

use std::io::Write;

use elf_core::{Error, Result, exit};
use rusqlite::ErrorCode;
use rusqlite::types::ValueRef;
use serde_json::Value;

use crate::batch::Out;
use crate::conn::{self, Guard, Mode, Options};

/// A value as JSON (see the module documentation).
pub fn to_json(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::from(i),
        ValueRef::Real(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        ValueRef::Text(t) => Value::String(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::String(hex(b)),
    }
}

fn hex(b: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(b.len() * 2);
    for &byte in b {
        s.push(char::from(DIGITS[usize::from(byte >> 4)]));
        s.push(char::from(DIGITS[usize::from(byte & 15)]));
    }
    s
}

/// Appends a value's JSON to `out`.
fn write_value(out: &mut Vec<u8>, v: ValueRef<'_>) {
    match v {
        ValueRef::Null => out.extend_from_slice(b"null"),
        ValueRef::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        ValueRef::Real(f) if f.is_finite() => {
            let _ = serde_json::to_writer(&mut *out, &f);
        }
        ValueRef::Real(_) => out.extend_from_slice(b"null"),
        ValueRef::Text(t) => {
            let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(t));
        }
        ValueRef::Blob(b) => {
            out.push(b'"');
            out.extend_from_slice(hex(b).as_bytes());
            out.push(b'"');
        }
    }
}

/// The `"name":` prefix of each column, repeated names made unique.
fn prefixes(names: &[&str]) -> Vec<Vec<u8>> {
    let mut seen: Vec<String> = Vec::with_capacity(names.len());
    let mut out = Vec::with_capacity(names.len());
    for (i, name) in names.iter().enumerate() {
        let mut key = (*name).to_string();
        let mut n = 1;
        while seen.contains(&key) {
            n += 1;
            key = format!("{name}:{n}");
        }
        let mut p = Vec::new();
        if i > 0 {
            p.push(b',');
        }
        let _ = serde_json::to_writer(&mut p, &key);
        p.push(b':');
        seen.push(key);
        out.push(p);
    }
    out
}

/// The SQL of `query` is an argument: what SQLite refuses in it is a usage error.
fn usage(e: rusqlite::Error) -> Error {
    let err = conn::error(e);
    if err.code() == exit::DATAERR {
        Error::usage(format!("in the query: {}", err.message()))
    } else {
        err
    }
}

/// `query SQL [--param NAME=VALUE]...`.
pub fn run(o: &Options, sql: &str, params: &[(String, String)]) -> Result<u8> {
    let db = conn::open(o, Mode::Read)?;
    conn::guard(Guard::Query);
    let mut st = conn::retry_busy(o.busy, || db.prepare(sql)).map_err(usage)?;
    // SQLite prepares text of only comments and semicolons as no statement at all, which
    // would then fail as "API misuse".
    if st.expanded_sql().is_none() {
        return Err(Error::usage("the query holds no statement"));
    }
    if !st.readonly() {
        return Err(Error::usage(
            "query only reads; use elf-db exec for statements that write",
        ));
    }
    let n = st.parameter_count();
    for i in 1..=n {
        let Some(name) = st.parameter_name(i) else {
            return Err(Error::usage(
                "the query uses positional parameters (?); name them (:name) for --param",
            ));
        };
        let bare = &name[1..];
        let Some((_, value)) = params.iter().rev().find(|(k, _)| k == bare) else {
            return Err(Error::usage(format!(
                "the query needs --param {bare}=VALUE"
            )));
        };
        st.raw_bind_parameter(i, value.as_str()).map_err(usage)?;
    }
    if let Some((k, _)) = params
        .iter()
        .find(|(k, _)| !(1..=n).any(|i| st.parameter_name(i).is_some_and(|p| &p[1..] == k)))
    {
        return Err(Error::usage(format!(
            "--param {k}: the query has no parameter :{k}"
        )));
    }
    let names = st.column_names();
    let keys = prefixes(&names);
    let mut out = Out::stdout()?;
    let mut line = Vec::with_capacity(256);
    let mut rows = st.raw_query();
    while let Some(row) = rows.next().map_err(conn::error)? {
        line.clear();
        line.push(b'{');
        for (i, key) in keys.iter().enumerate() {
            line.extend_from_slice(key);
            write_value(&mut line, row.get_ref(i).map_err(conn::error)?);
        }
        line.push(b'}');
        out.raw(&line)?;
    }
    out.flush()?;
    Ok(exit::OK)
}

/// `check`: `PRAGMA integrity_check`. Exit 0 and `{"integrity":"ok"}`; 1 and one line per
/// problem when the database is damaged or not a database; 75 when it is merely busy.
pub fn check(o: &Options) -> Result<u8> {
    let db = conn::open(o, Mode::Read)?;
    conn::guard(Guard::Own);
    let result = conn::retry_busy(o.busy, || {
        let mut st = db.prepare("PRAGMA integrity_check")?;
        let rows = st.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<rusqlite::Result<Vec<String>>>()
    });
    let problems = match result {
        Ok(lines) if lines.len() == 1 && lines[0] == "ok" => Vec::new(),
        Ok(lines) => lines,
        // A file that is not a database, or one too damaged to read, is a definite "no";
        // anything else (busy above all) is not an answer about the database.
        Err(e)
            if matches!(
                e.sqlite_error_code(),
                Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
            ) =>
        {
            vec![conn::error(e).message().to_string()]
        }
        Err(e) => return Err(conn::error(e)),
    };
    let mut out = Out::stdout()?;
    if problems.is_empty() {
        out.raw(br#"{"integrity":"ok"}"#)?;
    }
    for p in &problems {
        let mut line = br#"{"integrity":"#.to_vec();
        let _ = serde_json::to_writer(&mut line, p);
        line.push(b'}');
        out.raw(&line)?;
    }
    out.flush()?;
    Ok(if problems.is_empty() {
        exit::OK
    } else {
        exit::NO
    })
}

/// `checkpoint`: `PRAGMA wal_checkpoint(TRUNCATE)`, so that the main file holds everything and
/// the WAL is empty. Prints `{"log":N,"checkpointed":N}`: the frames in the WAL when it
/// started, and how many of them a first passive pass copied (-1 and -1 when the database is
/// not in WAL mode). Readers or a writer still active after the
/// busy timeout: exit 75.
pub fn checkpoint(o: &Options) -> Result<u8> {
    let db = conn::open(o, Mode::Maintain)?;
    conn::guard(Guard::Own);
    let run = |mode: &str| {
        conn::retry_busy(o.busy, || {
            db.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
        })
        .map_err(conn::error)
    };
    // TRUNCATE reports 0 frames once it has emptied the WAL: a passive pass first counts them
    // (and copies what it can without waiting).
    let (_, log, done) = run("PASSIVE")?;
    let (busy, _, _) = run("TRUNCATE")?;
    if busy != 0 {
        return Err(Error::temporary(
            "the checkpoint could not finish: other connections kept the WAL in use past --busy-timeout",
        ));
    }
    let mut out = Out::stdout()?;
    out.raw(format!("{{\"log\":{log},\"checkpointed\":{done}}}").as_bytes())?;
    out.flush()?;
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_typed() {
        let mut out = Vec::new();
        for v in [
            ValueRef::Null,
            ValueRef::Integer(-3),
            ValueRef::Real(1.0),
            ValueRef::Real(f64::INFINITY),
            ValueRef::Text(b"a\"\n"),
            ValueRef::Blob(&[0, 0xab]),
        ] {
            write_value(&mut out, v);
            out.push(b' ');
        }
        assert_eq!(
            String::from_utf8_lossy(&out),
            "null -3 1.0 null \"a\\\"\\n\" \"00AB\" "
        );
        assert_eq!(to_json(ValueRef::Real(0.5)), serde_json::json!(0.5));
    }

    #[test]
    fn repeated_column_names_are_made_unique() {
        let p = prefixes(&["a", "b", "a", "a"]);
        let joined: Vec<String> = p
            .iter()
            .map(|x| String::from_utf8_lossy(x).into_owned())
            .collect();
        assert_eq!(joined, ["\"a\":", ",\"b\":", ",\"a:2\":", ",\"a:3\":"]);
    }
}
