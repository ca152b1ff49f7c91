//! The journal: whole records stored with their rows, so that a pipeline interrupted at any
//! instant can be completed by replaying them.
//!
//! # The table
//!
//! ```sql
//! CREATE TABLE elf_journal (
//!     key          TEXT PRIMARY KEY NOT NULL,  -- the record's "key"
//!     record       TEXT NOT NULL,              -- the record as passed on: key and ids included;
//!                                              -- once done, as `done` passed it on
//!     ids          TEXT NOT NULL,              -- JSON: the results of each statement object
//!     created_at   INTEGER NOT NULL,           -- Unix time in milliseconds
//!     done_at      INTEGER,                    -- set by `done` (or `drop`); NULL while not done
//!     attempts     INTEGER NOT NULL DEFAULT 0, -- failed attempts `done` has seen
//!     error        TEXT,                       -- JSON: the "error" of the last failed attempt
//!     set_aside_at INTEGER,                    -- set when the record was set aside
//!     dropped_at   INTEGER                     -- set by `drop` (with done_at)
//! );
//! CREATE INDEX elf_journal_pending ON elf_journal(created_at)
//!     WHERE done_at IS NULL AND set_aside_at IS NULL;
//! CREATE INDEX elf_journal_set_aside ON elf_journal(created_at)
//!     WHERE done_at IS NULL AND set_aside_at IS NOT NULL;
//! ```
//!
//! A record is *pending* while `done_at` and `set_aside_at` are NULL, *set aside* while
//! `done_at` is NULL and `set_aside_at` is not, *done* once `done_at` is set (and *dropped*
//! when `dropped_at` is set too).
//!
//! The table is created when missing by `insert --journal`, `done`, `retry` and `drop`, and a
//! journal made by an earlier elf-db (without the last four columns) gets them, with
//! `ALTER TABLE ... ADD COLUMN`, and its pending index rebuilt, in the same transaction; no
//! other table is ever created or altered. `pending` reads an older journal as it is (nothing
//! in it is set aside).
//!
//! # Keys
//!
//! A record's `key` is a string. When `insert --journal` reads a record without one, it makes
//! one and puts it first in the record: 26 characters of Crockford base 32, a 48-bit
//! millisecond timestamp then 80 random bits (the ULID layout), so that keys sort by creation
//! time; within one process they are strictly increasing.
//!
//! # Flow
//!
//! - `insert --journal`: a key not yet journaled runs the record's statements and stores the
//!   record, in the same transaction. A key already journaled runs nothing and gets the ids of
//!   the first time (`{"key":"k","db":{"table":"t","values":{...},"id":42}}` twice gives 42
//!   twice and one row). A record without `db` is journaled too.
//! - `pending`: prints the stored records not yet done, oldest first, exactly as they were
//!   passed on the first time.
//! - `done`: sets `done_at` for the key of every record it reads, stores the record as it
//!   reached `done` (every stage's results in it: `write.path`, `commit.sha`, ...) in place of
//!   the journaled one, which no replay needs any more, and passes the records on.
//! - A record that reaches `done` carrying `error` is a failed attempt: `attempts` goes up by
//!   one and `error` keeps its error, when its key is journaled and not done. A permanent
//!   error (any code but 74, 75 and the signal codes above 128) that brings `attempts` to
//!   `--attempts` (3) sets the record aside: `pending` no longer prints it, `pending
//!   --set-aside` does, with `"set_aside":{"at":MS,"attempts":N,"error":{...}}` added.
//! - `retry KEY...` makes set-aside (or pending) records pending again, `attempts` 0 and no
//!   `error`; `drop KEY...` sets `done_at` and `dropped_at`, so they are never replayed; their
//!   rows stay.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elf_core::{Error, Result, exit};
use rand::Rng;
use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use crate::conn::{self, Mode, Options};

/// The journal table's name.
pub const TABLE: &str = "elf_journal";

const CREATE: &str = "CREATE TABLE IF NOT EXISTS elf_journal (
    key          TEXT PRIMARY KEY NOT NULL,
    record       TEXT NOT NULL,
    ids          TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    done_at      INTEGER,
    attempts     INTEGER NOT NULL DEFAULT 0,
    error        TEXT,
    set_aside_at INTEGER,
    dropped_at   INTEGER
)";

/// The columns added since the first journal, as `ALTER TABLE ... ADD COLUMN` takes them.
const ADDED: &[(&str, &str)] = &[
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("error", "TEXT"),
    ("set_aside_at", "INTEGER"),
    ("dropped_at", "INTEGER"),
];

/// The indexes: pending records (what `pending` and a drain read), and set-aside ones.
const INDEXES: &str = "DROP INDEX IF EXISTS elf_journal_pending;
CREATE INDEX elf_journal_pending ON elf_journal(created_at)
    WHERE done_at IS NULL AND set_aside_at IS NULL;
CREATE INDEX IF NOT EXISTS elf_journal_set_aside ON elf_journal(created_at)
    WHERE done_at IS NULL AND set_aside_at IS NOT NULL;";

/// Creates the journal table when missing, or brings an older one up to date (inside the
/// caller's transaction). A journal whose pending index already knows `set_aside_at` is up to
/// date: that index is made last, in the transaction that adds the columns.
pub fn ensure(conn: &Connection) -> Result<()> {
    conn::guard(conn::Guard::Own);
    let index: Option<String> = conn
        .prepare_cached(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = 'elf_journal_pending'",
        )
        .and_then(|mut s| s.query_row([], |r| r.get(0)).optional())
        .map_err(conn::error)?;
    if index.is_some_and(|sql| sql.contains("set_aside_at")) {
        return Ok(());
    }
    let update = || -> rusqlite::Result<()> {
        conn.execute_batch(CREATE)?;
        let have = columns(conn)?;
        for (name, def) in ADDED {
            if !have.iter().any(|c| c == name) {
                conn.execute_batch(&format!("ALTER TABLE elf_journal ADD COLUMN {name} {def}"))?;
            }
        }
        conn.execute_batch(INDEXES)
    };
    update().map_err(|e| conn::error(e).context("creating or updating the journal table"))
}

/// The journal's columns; none when there is no journal.
fn columns(conn: &Connection) -> rusqlite::Result<Vec<String>> {
    conn.prepare("SELECT name FROM pragma_table_info('elf_journal')")?
        .query_map([], |r| r.get(0))?
        .collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

thread_local! {
    static LAST: Cell<(u64, u128)> = const { Cell::new((0, 0)) };
}

/// A new key: ULID layout, strictly increasing within the process.
pub fn new_key() -> String {
    let ms = u64::try_from(now_ms()).unwrap_or(0) & ((1 << 48) - 1);
    let random: u128 = rand::rng().random::<u128>() & ((1 << 80) - 1);
    let (ms, random) = LAST.with(|last| {
        let (lms, lrand) = last.get();
        let next = if ms > lms {
            (ms, random)
        } else if lrand + 1 < (1 << 80) {
            (lms, lrand + 1)
        } else {
            (lms + 1, random)
        };
        last.set(next);
        next
    });
    encode((u128::from(ms) << 80) | random)
}

/// 128 bits as 26 Crockford base-32 characters.
fn encode(mut v: u128) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(v & 31) as usize];
        v >>= 5;
    }
    out.iter().map(|&b| char::from(b)).collect()
}

/// The stored results of a key already journaled.
pub fn lookup(conn: &Connection, key: &str) -> Result<Option<String>> {
    conn::guard(conn::Guard::Own);
    conn.prepare_cached("SELECT ids FROM elf_journal WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get::<_, String>(0)).optional())
        .map_err(conn::error)
}

/// Stores a record.
pub fn store(conn: &Connection, key: &str, record: &str, ids: &str) -> Result<()> {
    conn::guard(conn::Guard::Own);
    conn.prepare_cached(
        "INSERT INTO elf_journal (key, record, ids, created_at) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut s| s.execute(rusqlite::params![key, record, ids, now_ms()]))
    .map(drop)
    .map_err(|e| conn::error(e).context("journaling the record"))
}

/// Marks a key done; false when it was not pending (or set aside).
pub fn mark_done(conn: &Connection, key: &str) -> Result<bool> {
    conn::guard(conn::Guard::Own);
    conn.prepare_cached("UPDATE elf_journal SET done_at = ?1 WHERE key = ?2 AND done_at IS NULL")
        .and_then(|mut s| s.execute(rusqlite::params![now_ms(), key]))
        .map(|n| n > 0)
        .map_err(conn::error)
}

/// Replaces a done record's stored text with the record as it finished (the results of every
/// stage in it); a record not done is left as journaled, for replays.
pub fn store_finished(conn: &Connection, key: &str, record: &str) -> Result<()> {
    conn::guard(conn::Guard::Own);
    conn.prepare_cached("UPDATE elf_journal SET record = ?2 WHERE key = ?1 AND done_at IS NOT NULL")
        .and_then(|mut s| s.execute(rusqlite::params![key, record]))
        .map(drop)
        .map_err(|e| conn::error(e).context("storing the finished record"))
}

/// True when an error's code is permanent: retrying the record cannot help. 74 (I/O), 75
/// (temporary) and the signal codes above 128 are not; an error without a code is.
pub fn permanent(error: &Value) -> bool {
    match error.get("code").and_then(Value::as_u64) {
        Some(code) => {
            code != u64::from(exit::IOERR) && code != u64::from(exit::TEMPFAIL) && code <= 128
        }
        None => true,
    }
}

/// Records a failed attempt of a journaled key not done: `attempts` + 1, `error` kept, and
/// the record set aside when the error is permanent and `attempts` reaches `limit`. Nothing
/// happens to a key not journaled, or done.
pub fn record_failure(conn: &Connection, key: &str, error: &Value, limit: i64) -> Result<()> {
    let text = serde_json::to_string(error)
        .map_err(|e| Error::internal(format!("serializing an error: {e}")))?;
    conn::guard(conn::Guard::Own);
    conn.prepare_cached(
        "UPDATE elf_journal SET attempts = attempts + 1, error = ?2, \
         set_aside_at = CASE WHEN set_aside_at IS NOT NULL THEN set_aside_at \
                             WHEN ?3 AND attempts + 1 >= ?4 THEN ?5 END \
         WHERE key = ?1 AND done_at IS NULL",
    )
    .and_then(|mut s| {
        s.execute(rusqlite::params![
            key,
            text,
            permanent(error),
            limit,
            now_ms()
        ])
    })
    .map(drop)
    .map_err(|e| conn::error(e).context("recording a failed attempt"))
}

/// Where a key stands.
enum State {
    Unknown,
    NotDone,
    Done,
}

fn state(conn: &Connection, key: &str) -> Result<State> {
    conn::guard(conn::Guard::Own);
    conn.prepare_cached("SELECT done_at IS NOT NULL FROM elf_journal WHERE key = ?1")
        .and_then(|mut s| s.query_row([key], |r| r.get::<_, bool>(0)).optional())
        .map(|done| match done {
            None => State::Unknown,
            Some(false) => State::NotDone,
            Some(true) => State::Done,
        })
        .map_err(conn::error)
}

/// What `retry` and `drop` do to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pending again, no attempts, no error.
    Retry,
    /// Done, and marked dropped.
    Drop,
}

/// `retry KEY...` and `drop KEY...`, in one transaction: all the keys or none. An unknown key
/// (or, for `retry`, one already done) is a data error naming it; `drop` leaves a key already
/// done as it is.
pub fn settle(o: &Options, action: Action, keys: &[String]) -> Result<u8> {
    let db = conn::open(o, Mode::Write)?;
    conn::begin(&db, o.busy)?;
    let run = || -> Result<()> {
        ensure(&db)?;
        let sql = match action {
            Action::Retry => {
                "UPDATE elf_journal SET attempts = 0, error = NULL, set_aside_at = NULL \
                 WHERE key = ?1 AND done_at IS NULL"
            }
            Action::Drop => {
                "UPDATE elf_journal SET done_at = ?2, dropped_at = ?2 \
                 WHERE key = ?1 AND done_at IS NULL"
            }
        };
        let now = now_ms();
        for key in keys {
            conn::guard(conn::Guard::Own);
            let changed = db
                .prepare_cached(sql)
                .and_then(|mut s| match action {
                    Action::Retry => s.execute([key]),
                    Action::Drop => s.execute(rusqlite::params![key, now]),
                })
                .map_err(conn::error)?;
            if changed > 0 {
                continue;
            }
            let shown = elf_core::text::escape(key);
            match (state(&db, key)?, action) {
                (State::Unknown, _) => {
                    return Err(Error::data(format!("key {shown} is not in the journal")));
                }
                (State::Done, Action::Retry) => {
                    return Err(Error::data(format!(
                        "key {shown} is done: only pending or set-aside records can be retried"
                    )));
                }
                _ => {}
            }
        }
        Ok(())
    };
    match run() {
        Ok(()) => conn::commit(&db).map(|()| exit::OK),
        Err(e) => {
            conn::rollback(&db);
            Err(e)
        }
    }
}

/// `pending`: prints the journaled records not done, oldest first, on a read-only connection:
/// the pending ones, or with `set_aside` the set-aside ones, each with `set_aside` added.
pub fn pending(o: &Options, older_than: Option<Duration>, set_aside: bool) -> Result<u8> {
    let db = conn::open(o, Mode::Read)?;
    conn::guard(conn::Guard::Own);
    let have = conn::retry_busy(o.busy, || columns(&db)).map_err(conn::error)?;
    if have.is_empty() {
        return Ok(exit::OK);
    }
    // A journal of an earlier elf-db, not updated yet: nothing in it is set aside.
    let current = have.iter().any(|c| c == "set_aside_at");
    if set_aside && !current {
        return Ok(exit::OK);
    }
    let age = older_than.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let cutoff = now_ms().saturating_sub(age);
    let sql = match (set_aside, current) {
        (false, false) => {
            "SELECT record FROM elf_journal WHERE done_at IS NULL AND created_at <= ?1 \
             ORDER BY created_at, rowid"
        }
        (false, true) => {
            "SELECT record FROM elf_journal WHERE done_at IS NULL AND set_aside_at IS NULL \
             AND created_at <= ?1 ORDER BY created_at, rowid"
        }
        (true, _) => {
            "SELECT record, set_aside_at, attempts, error FROM elf_journal \
             WHERE done_at IS NULL AND set_aside_at IS NOT NULL AND created_at <= ?1 \
             ORDER BY created_at, rowid"
        }
    };
    let mut st = db.prepare(sql).map_err(conn::error)?;
    let mut rows = st.query([cutoff]).map_err(conn::error)?;
    let mut out = crate::out::Out::stdout()?;
    while let Some(row) = rows.next().map_err(conn::error)? {
        let text: String = row.get(0).map_err(conn::error)?;
        if text.contains('\n') {
            return Err(Error::internal("a journaled record holds a raw newline"));
        }
        if !set_aside {
            out.raw(text.as_bytes())?;
            continue;
        }
        let at: i64 = row.get(1).map_err(conn::error)?;
        let attempts: i64 = row.get(2).map_err(conn::error)?;
        let error: Option<String> = row.get(3).map_err(conn::error)?;
        out.raw(&with_set_aside(&text, at, attempts, error.as_deref())?)?;
    }
    out.flush()?;
    Ok(exit::OK)
}

/// A journaled record with `"set_aside":{"at":MS,"attempts":N,"error":{...}}` added (an
/// error that is not JSON is given as its text).
fn with_set_aside(record: &str, at: i64, attempts: i64, error: Option<&str>) -> Result<Vec<u8>> {
    let mut rec = elf_core::record::parse_line(record.as_bytes())
        .ok()
        .flatten()
        .ok_or_else(|| Error::internal("a journaled record is not a JSON object"))?;
    let error = match error {
        None => Value::Null,
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::from(text)),
    };
    let mut aside = serde_json::Map::new();
    aside.insert("at".into(), Value::from(at));
    aside.insert("attempts".into(), Value::from(attempts));
    aside.insert("error".into(), error);
    rec.insert("set_aside".into(), Value::Object(aside));
    serde_json::to_vec(&rec).map_err(|e| Error::internal(format!("serializing a record: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_errors_are_those_a_retry_cannot_help() {
        let code = |c: Value| permanent(&serde_json::json!({ "code": c, "message": "m" }));
        for c in [1, 64, 65, 66, 70, 77, 128] {
            assert!(code(c.into()), "{c}");
        }
        for c in [74, 75, 129, 130, 141, 255] {
            assert!(!code(c.into()), "{c}");
        }
        assert!(code("75".into()), "a code that is not a number");
        assert!(permanent(&Value::from("boom")));
    }

    #[test]
    fn keys_are_ulids_and_increase() {
        let keys: Vec<String> = (0..1000).map(|_| new_key()).collect();
        assert!(keys.iter().all(|k| k.len() == 26));
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "not increasing");
        assert_eq!(encode(0), "00000000000000000000000000");
        assert_eq!(encode(u128::MAX), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
    }
}
