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
//! # Plain rows
//!
//! `--format tsv` and `--format csv` print each row as exactly one line, its fields in column
//! order, for `read` in a shell script; `--header` prints the column names first (made unique as
//! in JSON), as a row of the same format.
//!
//! | SQLite | field |
//! |---|---|
//! | NULL | the `--null` text (empty by default), as it is |
//! | INTEGER | its decimal digits |
//! | REAL | SQLite's own text for it (`CAST(x AS TEXT)`, what the sqlite3 shell prints): `1.0`, `0.1`, `1.0e+300` |
//! | TEXT | the text (invalid UTF-8 replaced by U+FFFD), escaped as below |
//! | BLOB | upper-case hex digits, as in JSON |
//!
//! - tsv: fields separated by a tab; inside a field, a backslash, tab, line feed and carriage
//!   return are written `\\`, `\t`, `\n`, `\r` (PostgreSQL's text format), so a field never
//!   holds a tab and a row never spans two lines;
//! - csv: fields separated by a comma (RFC 4180), a field quoted when it holds a comma, a
//!   quote, a backslash, a carriage return or a line feed, with a quote doubled and a
//!   backslash, carriage return and line feed written `\\`, `\r`, `\n` inside the quotes, so
//!   that a row stays on one line. Rows end with a line feed, not RFC 4180's CRLF.
//!
//! The row `(42, 'say "hi", then' || char(10) || 'go', NULL)` in tsv with `--null '\N'`
//! (→ stands for a tab), then in csv:
//!
//! ```text
//! 42→say "hi", then\ngo→\N
//! 42,"say ""hi"", then\ngo",
//! ```
//!
//! Rows are written as they are stepped, so memory stays flat whatever the result's size.
//! The connection is opened read-only with `query_only`, and the SQL must be one statement
//! that SQLite says does not write: a query never writes.

use std::io::Write;

use elf_core::{Error, Result, exit};
use rusqlite::ErrorCode;
use rusqlite::types::ValueRef;

use crate::conn::{self, Guard, Mode, Options};
use crate::out::Out;
use crate::value::{hex, unique};

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
    unique(names)
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let mut p = Vec::new();
            if i > 0 {
                p.push(b',');
            }
            let _ = serde_json::to_writer(&mut p, key);
            p.push(b':');
            p
        })
        .collect()
}

/// How `query` prints rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per row (the default).
    Json,
    /// Tab-separated fields, escaped.
    Tsv,
    /// Comma-separated fields, quoted.
    Csv,
}

/// `--format`, `--header` and `--null`.
#[derive(Debug, Clone)]
pub struct Shape {
    /// The format.
    pub format: Format,
    /// tsv, csv: print the column names first.
    pub header: bool,
    /// tsv, csv: the text of NULL.
    pub null: String,
}

impl Shape {
    /// JSON lines.
    pub fn json() -> Shape {
        Shape {
            format: Format::Json,
            header: false,
            null: String::new(),
        }
    }
}

/// Appends a tsv field: backslash, tab, line feed, carriage return escaped.
fn tsv_field(out: &mut Vec<u8>, text: &[u8]) {
    for &b in text {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
}

/// Appends a csv field: quoted when it holds a comma, a quote, a backslash, CR or LF; inside
/// the quotes a quote doubled, a backslash, CR and LF escaped.
fn csv_field(out: &mut Vec<u8>, text: &[u8]) {
    if !text
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\\' | b'\r' | b'\n'))
    {
        out.extend_from_slice(text);
        return;
    }
    out.push(b'"');
    for &b in text {
        match b {
            b'"' => out.extend_from_slice(b"\"\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// Writes plain rows: fields escaped for the format, REALs as SQLite's own text for them.
struct Plain<'c> {
    shape: Shape,
    /// `SELECT CAST(?1 AS TEXT)`: SQLite's text for a REAL.
    real: rusqlite::Statement<'c>,
    scratch: Vec<u8>,
}

impl<'c> Plain<'c> {
    fn new(db: &'c rusqlite::Connection, shape: Shape) -> Result<Plain<'c>> {
        let real = db.prepare("SELECT CAST(?1 AS TEXT)").map_err(conn::error)?;
        Ok(Plain {
            shape,
            real,
            scratch: Vec::new(),
        })
    }

    /// Appends the separator before field `i`.
    fn separate(&self, out: &mut Vec<u8>, i: usize) {
        if i > 0 {
            out.push(if self.shape.format == Format::Csv {
                b','
            } else {
                b'\t'
            });
        }
    }

    /// Appends field `i` (its separator first), `text` escaped for the format.
    fn field(&self, out: &mut Vec<u8>, i: usize, text: &[u8]) {
        self.separate(out, i);
        if self.shape.format == Format::Csv {
            csv_field(out, text);
        } else {
            tsv_field(out, text);
        }
    }

    /// Appends field `i` of a row.
    fn value(&mut self, out: &mut Vec<u8>, i: usize, v: ValueRef<'_>) -> Result<()> {
        match v {
            // The --null text as it is (it was checked to hold nothing to escape).
            ValueRef::Null => {
                self.separate(out, i);
                out.extend_from_slice(self.shape.null.as_bytes());
            }
            ValueRef::Integer(n) => {
                self.scratch.clear();
                let _ = write!(self.scratch, "{n}");
                self.field(out, i, &self.scratch);
            }
            ValueRef::Real(f) => {
                self.scratch.clear();
                self.real.raw_bind_parameter(1, f).map_err(conn::error)?;
                let mut rows = self.real.raw_query();
                if let Some(row) = rows.next().map_err(conn::error)? {
                    if let ValueRef::Text(t) = row.get_ref(0).map_err(conn::error)? {
                        self.scratch.extend_from_slice(t);
                    }
                }
                drop(rows);
                self.field(out, i, &self.scratch);
            }
            ValueRef::Text(t) => self.field(out, i, String::from_utf8_lossy(t).as_bytes()),
            ValueRef::Blob(b) => self.field(out, i, hex(b).as_bytes()),
        }
        Ok(())
    }
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
pub fn run(o: &Options, sql: &str, params: &[(String, String)], shape: Shape) -> Result<u8> {
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
    let mut out = Out::stdout()?;
    let mut line = Vec::with_capacity(256);
    if shape.format != Format::Json {
        let mut plain = Plain::new(&db, shape)?;
        if plain.shape.header {
            for (i, name) in unique(&names).iter().enumerate() {
                plain.field(&mut line, i, name.as_bytes());
            }
            out.raw(&line)?;
        }
        let n = names.len();
        let mut rows = st.raw_query();
        while let Some(row) = rows.next().map_err(conn::error)? {
            line.clear();
            for i in 0..n {
                plain.value(&mut line, i, row.get_ref(i).map_err(conn::error)?)?;
            }
            out.raw(&line)?;
        }
        out.flush()?;
        return Ok(exit::OK);
    }
    let keys = prefixes(&names);
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
        assert_eq!(
            crate::value::to_json(ValueRef::Real(0.5)),
            serde_json::json!(0.5)
        );
    }

    #[test]
    fn plain_fields_never_hold_a_separator_or_a_line_end() {
        let field = |f: fn(&mut Vec<u8>, &[u8]), text: &str| {
            let mut out = Vec::new();
            f(&mut out, text.as_bytes());
            String::from_utf8_lossy(&out).into_owned()
        };
        assert_eq!(
            field(tsv_field, "a\tb\nc\rd\\e,\"f"),
            "a\\tb\\nc\\rd\\\\e,\"f"
        );
        assert_eq!(field(tsv_field, "plain é"), "plain é");
        assert_eq!(field(csv_field, "plain\té"), "plain\té");
        assert_eq!(field(csv_field, "a,b"), "\"a,b\"");
        assert_eq!(field(csv_field, "say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(field(csv_field, "a\\b\r\n"), "\"a\\\\b\\r\\n\"");
        assert_eq!(field(csv_field, ""), "");
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
