//! The record commands (`insert`, `exec`, `done`) and group commit.
//!
//! Records are read one at a time. The first record of a batch waits for input; after it,
//! every record already waiting (buffered, or readable without blocking) joins the same
//! `BEGIN IMMEDIATE` transaction, up to `--batch` records. Each record runs inside a savepoint,
//! so a bad record is undone alone. The batch is committed, and only then are its records
//! written out, in input order, and the output flushed. A record is never passed on before its
//! transaction has committed, and a live pipeline never waits for a batch to fill.
//!
//! A record passed on unchanged (by `done` without statements to run, or because it carries
//! `error` or has no `db`, or no key `--key` names), or with one key added at its end (`insert
//! --table`), is written as the text it came in as; one with results added inside it is
//! serialized again (see [`crate::input`]). A record carrying `error` needs no database,
//! except in `done`, which counts it as a failed attempt of its key (see [`crate::journal`]).
//!
//! With `insert --schema`, the schema's statements open the first transaction, and the next
//! one too if that one is rolled back (when all its records failed), until one has committed.
//!
//! A bad record (exit 65) stops the run after the records before it have been committed and
//! passed on; under `--keep-going` it is passed on with `error` instead. A record whose failure
//! rolls back the whole transaction (a trigger's `RAISE(ROLLBACK)`, an `ON CONFLICT ROLLBACK`
//! constraint) is no exception: the batch runs again from its first line in a new transaction
//! (the lines are kept, see [`crate::input::Lines`]), that record failing as it did without
//! being run, and the batch ends after it. Each rollback marks one more line failed, so a
//! batch is replayed at most once per such record, and the records after it go into the next
//! transaction. A busy database (75), an I/O error (74) or a permission error (77) rolls back
//! the whole batch, none of which is passed on.

use elf_core::record::{self, Record};
use elf_core::{Error, Result, exit};
use rusqlite::Connection;
use rusqlite::types::ToSqlOutput;
use serde_json::{Map, Value};

use crate::conn::{self, Mode, Options};
use crate::input::Lines;
use crate::journal;
use crate::lean::Row;
use crate::out::Out;
use crate::stmt::{self, Kind, Results, Schema, SqlFile};

const TOOL: &str = "elf-db";

/// A batch also ends once this much output is held, so that memory stays bounded whatever the
/// records' size.
const HELD_BYTES: usize = 8 << 20;

/// A record command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `insert`, with or without the journal.
    Insert {
        /// `--journal`.
        journal: bool,
    },
    /// `insert --table T`: each record is a row of T.
    InsertRows(String),
    /// `exec`.
    Exec,
    /// `done`.
    Done,
}

/// What a run does: the command, and the flags that shape its work on each record.
#[derive(Debug, Clone)]
pub struct Job {
    /// The command.
    pub command: Command,
    /// `--key`: the key holding the statements that `insert` and `exec` run (`db` unless
    /// told otherwise), and `done` runs (none unless told); `None` for `insert --table`.
    pub key: Option<String>,
    /// `done --attempts`: the failed attempts after which a permanent failure sets a record
    /// aside.
    pub attempts: i64,
    /// `insert --schema`: statements run at the start of the run's first transaction (again
    /// in the next one, if that one is rolled back), before its first record; the database is
    /// then created when missing.
    pub schema: Option<SqlFile>,
}

/// How the input stream is read.
#[derive(Debug, Clone)]
pub struct Stream {
    /// At most this many records per transaction.
    pub batch: usize,
    /// `--max-line`.
    pub max_line: usize,
    /// `--keep-going`.
    pub keep_going: bool,
}

/// The records of a batch, serialized and held until the batch has committed.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    count: usize,
}

impl Held {
    fn push(&mut self, rec: &Record) -> Result<()> {
        serde_json::to_writer(&mut self.bytes, rec)
            .map_err(|e| Error::internal(format!("serializing a record: {e}")))?;
        self.bytes.push(b'\n');
        self.count += 1;
        Ok(())
    }

    /// Holds a record that went through, as `how` says.
    fn emit(&mut self, text: &[u8], rec: &Record, how: Emit) -> Result<()> {
        match how {
            Emit::Unchanged => self.push_text(text, None),
            Emit::Appended(key, value) => {
                let mut add = serde_json::to_vec(key)
                    .map_err(|e| Error::internal(format!("serializing a record: {e}")))?;
                add.push(b':');
                serde_json::to_writer(&mut add, &value)
                    .map_err(|e| Error::internal(format!("serializing a record: {e}")))?;
                self.push_text(text, Some((&add, None)));
            }
            Emit::Changed => return self.push(rec),
        }
        Ok(())
    }

    /// A record passed on as the text it came in as, with `add` (`"key":value`, or its start
    /// when `id` follows) added as its last key.
    fn push_text(&mut self, text: &[u8], add: Option<(&[u8], Option<i64>)>) {
        match add {
            None => self.bytes.extend_from_slice(text),
            Some((add, id)) => {
                let body = &text[..text.len().saturating_sub(1)];
                self.bytes.extend_from_slice(body);
                if body.trim_ascii_end() != b"{" {
                    self.bytes.push(b',');
                }
                self.bytes.extend_from_slice(add);
                if let Some(id) = id {
                    push_int(&mut self.bytes, id);
                    self.bytes.push(b'}');
                }
                self.bytes.push(b'}');
            }
        }
        self.bytes.push(b'\n');
        self.count += 1;
    }

    /// Forgets them: their transaction was rolled back.
    fn clear(&mut self) {
        self.bytes.clear();
        self.count = 0;
    }

    /// Writes them out and flushes.
    fn release(&mut self, out: &mut Out) -> Result<()> {
        out.write_all(&self.bytes)?;
        out.flush()?;
        self.bytes.clear();
        self.count = 0;
        Ok(())
    }
}

/// Appends the decimal digits of `n`.
fn push_int(out: &mut Vec<u8>, n: i64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    let mut u = n.unsigned_abs();
    loop {
        i -= 1;
        digits[i] = b'0' + (u % 10) as u8;
        u /= 10;
        if u == 0 {
            break;
        }
    }
    if n < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&digits[i..]);
}

/// Runs a record command over standard input.
pub fn run(o: &Options, job: Job, s: &Stream) -> Result<u8> {
    let mode = if job.schema.is_some() {
        Mode::Create
    } else {
        Mode::Write
    };
    let db = conn::open(o, mode)?;
    let mut reader = Lines::stdin(s.max_line)?;
    let mut out = Out::stdout()?;
    let mut work = Work {
        conn: &db,
        schema: Schema::default(),
        command: job.command,
        key: job.key,
        attempts: job.attempts,
        schema_file: job.schema,
        journal_ready: false,
    };
    let mut held = Held::default();
    // `insert --table`: rows read without building records (see `crate::lean`), passed on
    // with `"db":{"table":TABLE,"id":` and the id added.
    let mut row = Row::default();
    let rows_prefix = match &work.command {
        Command::InsertRows(t) => {
            let mut p = b"\"db\":{\"table\":".to_vec();
            serde_json::to_writer(&mut p, t)
                .map_err(|e| Error::internal(format!("serializing a record: {e}")))?;
            p.extend_from_slice(b",\"id\":");
            Some(p)
        }
        _ => None,
    };
    let mut eof = false;
    while !eof {
        let mut fatal: Option<Error> = None;
        let mut in_tx = false;
        // Whether a record of this transaction went through: one with only failed records is
        // rolled back, so a bad record leaves nothing, not even the journal table.
        let mut applied = false;
        reader.start_batch();
        'batch: loop {
            'record: {
                let line = match reader.next_line() {
                    None => {
                        eof = true;
                        break 'batch;
                    }
                    Some(Ok(line)) => line,
                    Some(Err(e)) if s.keep_going && e.code() == exit::DATAERR => {
                        held.push(&record::error_record(TOOL, &e))?;
                        break 'record;
                    }
                    Some(Err(e)) => {
                        fatal = Some(e);
                        break 'batch;
                    }
                };
                let lean = match rows_prefix {
                    Some(_) => row.parse(reader.text()),
                    None => None,
                };
                let mut rec = None;
                if lean.is_none() {
                    match reader.record() {
                        Err(e) if s.keep_going && e.code() == exit::DATAERR => {
                            held.push(&record::error_record(TOOL, &e))?;
                            break 'record;
                        }
                        Err(e) => {
                            fatal = Some(e);
                            break 'batch;
                        }
                        Ok(r) if record::has_error(&r) && !work.counts_failures(&r) => {
                            held.push_text(reader.text(), None);
                            break 'record;
                        }
                        Ok(r) => rec = Some(r),
                    }
                }
                if !in_tx {
                    // A failing --schema statement is named by its file and line, not by the
                    // record's.
                    let started = conn::begin(&db, o.busy)
                        .map_err(|e| e.at_line(line))
                        .and_then(|()| work.run_schema())
                        .and_then(|()| work.start().map_err(|e| e.at_line(line)));
                    if let Err(e) = started {
                        conn::rollback(&db);
                        // What is already held needed no database: pass it on.
                        held.release(&mut out)?;
                        return Err(e);
                    }
                    in_tx = true;
                }
                let known = reader.known_failure();
                let lean_id = match known {
                    Some(_) => None,
                    None => lean.and_then(|text| work.lean_row(&row, text)),
                };
                let result = match (known, lean_id, &rows_prefix) {
                    // A record whose failure rolled back the transaction is not run again.
                    (Some(e), _, _) => Err(e),
                    (None, Some(Ok(Some(id))), Some(prefix)) => {
                        held.push_text(reader.text(), Some((prefix, Some(id))));
                        Ok(())
                    }
                    (None, Some(Ok(None)), _) => {
                        Err(Error::internal("a row without a rowid took the lean path"))
                    }
                    (None, Some(Err(e)), _) => Err(e),
                    // The general path: a record, or a row not for the lean path after all
                    // (a table with triggers, say).
                    _ => match rec.take().map_or_else(|| reader.record(), Ok) {
                        Ok(mut r) => {
                            let done = work.record(&mut r);
                            let done = done.and_then(|how| held.emit(reader.text(), &r, how));
                            rec = Some(r);
                            done
                        }
                        Err(e) => Err(e),
                    },
                };
                match result {
                    Ok(()) => applied = true,
                    // The record's failure took the whole transaction with it (a trigger's
                    // RAISE(ROLLBACK), an ON CONFLICT ROLLBACK constraint): nothing of the
                    // batch is in the database and nothing was passed on. The batch runs again
                    // from its first line in a new transaction, this record failing without
                    // being run, and ends after it (see `Lines::take_finished`).
                    Err(e)
                        if e.code() == exit::DATAERR
                            && db.is_autocommit()
                            && reader.rewind(e.clone()) =>
                    {
                        held.clear();
                        work.rolled_back();
                        in_tx = false;
                        applied = false;
                        continue 'batch;
                    }
                    Err(e) if e.code() == exit::DATAERR && !db.is_autocommit() => {
                        let e = e.at_line(line);
                        if !s.keep_going {
                            fatal = Some(e);
                            break 'batch;
                        }
                        let mut r = match rec {
                            Some(r) => r,
                            None => reader.record().unwrap_or_default(),
                        };
                        record::set_error(&mut r, TOOL, &e);
                        if work.counts_failures(&r) {
                            if let Err(e) = work.failed(&r) {
                                conn::rollback(&db);
                                return Err(e.at_line(line));
                            }
                            applied = true;
                        }
                        held.push(&r)?;
                    }
                    Err(e) => {
                        // Busy, I/O or permission: nothing of this batch was committed, so none
                        // of it is passed on.
                        conn::rollback(&db);
                        return Err(e.at_line(line));
                    }
                }
            }
            if reader.take_finished()
                || held.count >= s.batch
                || held.bytes.len() >= HELD_BYTES
                || !reader.ready()
            {
                break;
            }
        }
        if in_tx && applied {
            conn::commit(&db)?;
            work.committed();
        } else if in_tx {
            conn::rollback(&db);
            work.rolled_back();
        }
        held.release(&mut out)?;
        if let Some(e) = fatal {
            return Err(e);
        }
    }
    Ok(exit::OK)
}

/// How a record that went through is passed on.
enum Emit {
    /// Serialized again: results were added inside it.
    Changed,
    /// As the text it came in as.
    Unchanged,
    /// As its text, with one key added at its end.
    Appended(&'static str, Value),
}

/// The per-record work of a command, inside the batch's transaction.
struct Work<'c> {
    conn: &'c Connection,
    schema: Schema<'c>,
    command: Command,
    /// Where the record's statements are (see [`Job::key`]).
    key: Option<String>,
    attempts: i64,
    /// `--schema`, until a transaction that ran it has committed.
    schema_file: Option<SqlFile>,
    journal_ready: bool,
}

impl<'c> Work<'c> {
    /// At the start of each transaction.
    fn start(&mut self) -> Result<()> {
        let needs_journal = matches!(
            self.command,
            Command::Insert { journal: true } | Command::Done
        );
        if needs_journal && !self.journal_ready {
            journal::ensure(self.conn)?;
            self.journal_ready = true;
        }
        Ok(())
    }

    /// `--schema`, in a transaction just begun, while no transaction that ran it has committed.
    fn run_schema(&mut self) -> Result<()> {
        match &self.schema_file {
            Some(file) => file
                .run(self.conn)
                .map_err(|(line, e)| e.context(format!("{}: line {line}", file.show()))),
            None => Ok(()),
        }
    }

    /// After a transaction has committed: the schema is in the database for good.
    fn committed(&mut self) {
        self.schema_file = None;
    }

    /// After a transaction was rolled back: what it created is gone.
    fn rolled_back(&mut self) {
        self.journal_ready = false;
        self.schema.forget();
    }

    /// True when a failure of this record is an attempt that `done` records in the journal:
    /// `done` reading a record with a string key.
    fn counts_failures(&self, rec: &Record) -> bool {
        self.command == Command::Done && matches!(rec.get("key"), Some(Value::String(_)))
    }

    /// Records the failed attempt of a record that carries `error` (see [`journal::record_failure`]).
    fn failed(&self, rec: &Record) -> Result<()> {
        match (rec.get("key"), rec.get("error")) {
            (Some(Value::String(k)), Some(e)) => {
                journal::record_failure(self.conn, k, e, self.attempts)
            }
            _ => Ok(()),
        }
    }

    /// One record, inside a savepoint: all of it or nothing.
    fn record(&mut self, rec: &mut Record) -> Result<Emit> {
        if self.atomic(rec)? {
            return self.apply(rec);
        }
        conn::run_cached(self.conn, "SAVEPOINT elf_record")?;
        match self.apply(rec) {
            Ok(emit) => conn::run_cached(self.conn, "RELEASE elf_record").map(|()| emit),
            Err(e) => {
                if e.code() == exit::DATAERR {
                    // A schema change by another process could explain an unknown name.
                    self.schema.forget();
                }
                if !self.conn.is_autocommit() {
                    conn::run_cached(self.conn, "ROLLBACK TO elf_record")?;
                    conn::run_cached(self.conn, "RELEASE elf_record")?;
                }
                Err(e)
            }
        }
    }

    /// True when the record's work is one statement that SQLite undoes by itself when it fails
    /// (one row into a table without triggers or ON CONFLICT FAIL clauses, or `done`'s one
    /// update), so that no savepoint is needed: the fast path of bulk loads.
    fn atomic(&mut self, rec: &Record) -> Result<bool> {
        let table = match &self.command {
            // One UPDATE, unless there are statements to run with it.
            Command::Done => {
                let statements = self.key.as_deref().and_then(|n| rec.get(n));
                return Ok(record::has_error(rec) || statements.is_none_or(Value::is_null));
            }
            Command::InsertRows(t) => t.as_str(),
            Command::Insert { journal: false } => match rec.get(self.name()) {
                // One row: `values` an object, and not a reference (which could stand for
                // several).
                Some(Value::Object(db))
                    if db
                        .get("values")
                        .is_some_and(|v| v.is_object() && !stmt::is_reference(v)) =>
                {
                    match db.get("table") {
                        Some(Value::String(t)) => t.as_str(),
                        _ => return Ok(false),
                    }
                }
                _ => return Ok(false),
            },
            _ => return Ok(false),
        };
        match self.schema.table(self.conn, table) {
            Ok(t) => Ok(t.simple()),
            // The unknown table is reported by apply, with nothing done.
            Err(e) if e.code() == exit::DATAERR => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// `insert --table`: a row read by the lean path, inserted without a savepoint into a
    /// table where one INSERT is all or nothing (as [`Work::atomic`] requires); `None` when the
    /// general path must take it (such a table, an unknown one, keys given twice).
    fn lean_row(&mut self, row: &Row, text: &str) -> Option<Result<Option<i64>>> {
        let Command::InsertRows(name) = &self.command else {
            return None;
        };
        let table = match self.schema.table(self.conn, name) {
            Ok(t) if t.simple() && t.has_rowid() => t,
            _ => return None,
        };
        if !self.schema.fits(&table, row.keys(text), row.len()) && row.has_duplicates(text) {
            return None;
        }
        let keys = row.keys(text);
        Some(
            self.schema
                .insert_with(self.conn, &table, keys, row.len(), |st| {
                    for (i, v) in row.values(text).enumerate() {
                        st.raw_bind_parameter(i + 1, ToSqlOutput::Borrowed(v))
                            .map_err(conn::error)?;
                    }
                    Ok(())
                }),
        )
    }

    /// The key of the record's statements.
    fn name(&self) -> &str {
        self.key.as_deref().unwrap_or("db")
    }

    fn apply(&mut self, rec: &mut Record) -> Result<Emit> {
        match &self.command {
            Command::Insert { journal: false } => self.statements(rec, Kind::Insert),
            Command::Exec => self.statements(rec, Kind::Exec),
            Command::Insert { journal: true } => self.journaled(rec).map(|()| Emit::Changed),
            Command::InsertRows(table) => {
                if rec.contains_key("db") {
                    return Err(Error::data(
                        "the record has a key \"db\", where --table puts its result; use the record form",
                    ));
                }
                let t = self.schema.table(self.conn, table)?;
                let id = self.schema.insert_row(self.conn, &t, rec)?;
                let mut db = Map::new();
                db.insert("table".into(), Value::from(table.as_str()));
                if let Some(id) = id {
                    db.insert("id".into(), Value::from(id));
                }
                Ok(Emit::Appended("db", Value::Object(db)))
            }
            Command::Done => self.done(rec),
        }
    }

    /// `done`: marks the record's key done and, with `--key NAME`, runs NAME's statements in
    /// the same savepoint. A key already done runs nothing again: its statements ran in the
    /// transaction that marked it. A record carrying `error` is a failed attempt instead.
    fn done(&mut self, rec: &mut Record) -> Result<Emit> {
        if record::has_error(rec) {
            return self.failed(rec).map(|()| Emit::Unchanged);
        }
        let key = match rec.get("key") {
            Some(Value::String(k)) => Some(k.as_str()),
            None | Some(Value::Null) => None,
            Some(other) => {
                return Err(Error::data(format!(
                    "key must be a string, found {}",
                    record::kind(other)
                )));
            }
        };
        let Some(k) = key.map(str::to_owned) else {
            return match self.key {
                None => Ok(Emit::Unchanged),
                Some(_) => self.statements(rec, Kind::Exec),
            };
        };
        let marked = journal::mark_done(self.conn, &k)?;
        if !marked && self.key.is_some() && journal::lookup(self.conn, &k)?.is_some() {
            return Ok(Emit::Unchanged);
        }
        let emit = match self.key {
            None => Emit::Unchanged,
            Some(_) => self.statements(rec, Kind::Exec)?,
        };
        if marked {
            // The journal keeps the record as it finished, every stage's results in it, for
            // whoever asks how it went (a script reading its id, path and commit).
            let text = serde_json::to_string(rec)
                .map_err(|e| Error::internal(format!("serializing a record: {e}")))?;
            journal::store_finished(self.conn, &k, &text)?;
        }
        Ok(emit)
    }

    /// `insert` or `exec` without the journal: a record without its statement key is passed on
    /// untouched.
    fn statements(&mut self, rec: &mut Record, kind: Kind) -> Result<Emit> {
        let name = self.key.as_deref().unwrap_or("db");
        let Some(db) = rec.get(name).filter(|v| !v.is_null()) else {
            return Ok(Emit::Unchanged);
        };
        let results = stmt::apply(self.conn, &mut self.schema, kind, name, rec, db)?;
        match rec.get_mut(name) {
            Some(db) => stmt::fill(name, db, &results).map(|()| Emit::Changed),
            None => Ok(Emit::Unchanged),
        }
    }

    /// `insert --journal`.
    fn journaled(&mut self, rec: &mut Record) -> Result<()> {
        let (key, generated) = match rec.get("key") {
            Some(Value::String(k)) if !k.is_empty() => (k.clone(), false),
            Some(Value::String(_)) => return Err(Error::data("key is empty")),
            None | Some(Value::Null) => (journal::new_key(), true),
            Some(other) => {
                return Err(Error::data(format!(
                    "key must be a string, found {}",
                    record::kind(other)
                )));
            }
        };
        let name = self.key.as_deref().unwrap_or("db");
        let has_db = rec.get(name).is_some_and(|v| !v.is_null());
        if let Some(stored) = journal::lookup(self.conn, &key)? {
            let results: Vec<Results> = serde_json::from_str(&stored).map_err(|e| {
                Error::data(format!("the journal entry of key {key} is damaged: {e}"))
            })?;
            return match rec.get_mut(name).filter(|v| !v.is_null()) {
                Some(db) => {
                    stmt::fill(name, db, &results).map_err(|e| e.context(format!("key {key}")))
                }
                None if results.is_empty() => Ok(()),
                None => Err(Error::data(format!(
                    "key {key} was journaled with statements, this record has no {name}"
                ))),
            };
        }
        let results = match rec.get(name) {
            Some(db) if has_db => {
                stmt::apply(self.conn, &mut self.schema, Kind::Insert, name, rec, db)?
            }
            _ => Vec::new(),
        };
        if let Some(db) = rec.get_mut(name).filter(|v| !v.is_null()) {
            stmt::fill(name, db, &results)?;
        }
        if generated {
            if rec.contains_key("key") {
                rec.insert("key".into(), Value::from(key.as_str()));
            } else {
                rec.shift_insert(0, "key".into(), Value::from(key.as_str()));
            }
        }
        let text = serde_json::to_string(rec)
            .map_err(|e| Error::internal(format!("serializing a record: {e}")))?;
        let ids = serde_json::to_string(&results)
            .map_err(|e| Error::internal(format!("serializing ids: {e}")))?;
        journal::store(self.conn, &key, &text, &ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_written_as_serde_json_writes_them() {
        for n in [0, 1, -1, 9, 10, 42, -907, i64::MAX, i64::MIN, 1 << 53] {
            let mut out = b"x".to_vec();
            push_int(&mut out, n);
            assert_eq!(out, format!("x{}", Value::from(n)).into_bytes());
        }
    }
}
