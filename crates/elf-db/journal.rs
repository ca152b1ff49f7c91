//! The journal: whole records stored with their rows, so that a pipeline interrupted at any
//! instant can be completed by replaying them.
//!
//! # The table
//!
//! ```sql
//! CREATE TABLE elf_journal (
//!     key        TEXT PRIMARY KEY NOT NULL,  -- the record's "key"
//!     record     TEXT NOT NULL,              -- the record as passed on: key and ids included
//!     ids        TEXT NOT NULL,              -- JSON: the results of each statement object
//!     created_at INTEGER NOT NULL,           -- Unix time in milliseconds
//!     done_at    INTEGER                     -- set by `elf-db done`; NULL while pending
//! );
//! ```
//!
//! It is created when missing by `insert --journal` and `done`; no other table is ever created
//! or altered.
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
//! - `done`: sets `done_at` for the key of every record it reads, and passes the records on.

use std::cell::Cell;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use elf_core::{Error, Result};
use rand::Rng;
use rusqlite::{Connection, OptionalExtension};

use crate::conn::{self, Mode, Options};

/// The journal table's name.
pub const TABLE: &str = "elf_journal";

const CREATE: &str = "CREATE TABLE IF NOT EXISTS elf_journal (
    key        TEXT PRIMARY KEY NOT NULL,
    record     TEXT NOT NULL,
    ids        TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    done_at    INTEGER
);
CREATE INDEX IF NOT EXISTS elf_journal_pending ON elf_journal(created_at) WHERE done_at IS NULL;";

/// Creates the journal table when missing (inside the caller's transaction).
pub fn ensure(conn: &Connection) -> Result<()> {
    conn::guard(conn::Guard::Own);
    conn.execute_batch(CREATE)
        .map_err(|e| conn::error(e).context("creating the journal table"))
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

/// Marks a key done; false when it was not pending.
pub fn mark_done(conn: &Connection, key: &str) -> Result<bool> {
    conn::guard(conn::Guard::Own);
    conn.prepare_cached("UPDATE elf_journal SET done_at = ?1 WHERE key = ?2 AND done_at IS NULL")
        .and_then(|mut s| s.execute(rusqlite::params![now_ms(), key]))
        .map(|n| n > 0)
        .map_err(conn::error)
}

/// `pending`: prints the journaled records not done, oldest first, on a read-only connection.
pub fn pending(o: &Options, older_than: Option<Duration>) -> Result<u8> {
    let db = conn::open(o, Mode::Read)?;
    conn::guard(conn::Guard::Own);
    let exists: bool = conn::retry_busy(o.busy, || {
        db.query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'elf_journal'",
            [],
            |r| r.get::<_, i64>(0),
        )
    })
    .map(|n| n > 0)
    .map_err(conn::error)?;
    if !exists {
        return Ok(elf_core::exit::OK);
    }
    let age = older_than.map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let cutoff = now_ms().saturating_sub(age);
    let mut st = db
        .prepare(
            "SELECT record FROM elf_journal WHERE done_at IS NULL AND created_at <= ?1 \
             ORDER BY created_at, rowid",
        )
        .map_err(conn::error)?;
    let mut rows = st.query([cutoff]).map_err(conn::error)?;
    let mut out = crate::batch::Out::stdout()?;
    while let Some(row) = rows.next().map_err(conn::error)? {
        let text: String = row.get(0).map_err(conn::error)?;
        if text.contains('\n') {
            return Err(Error::internal("a journaled record holds a raw newline"));
        }
        out.raw(text.as_bytes())?;
    }
    out.flush()?;
    Ok(elf_core::exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_ulids_and_increase() {
        let keys: Vec<String> = (0..1000).map(|_| new_key()).collect();
        assert!(keys.iter().all(|k| k.len() == 26));
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "not increasing");
        assert_eq!(encode(0), "00000000000000000000000000");
        assert_eq!(encode(u128::MAX), "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
    }
}
