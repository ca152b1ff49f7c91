//! The index leads: the local rows of entries whose `H-<id>` the remote already holds move to
//! fresh ids, in one transaction, before the replay rewrites their headings to those ids.
//!
//! Fresh ids are above the local `sqlite_sequence`, above every row, above every id of the
//! remote's head and of this machine's markdown, and the sequence is left at the last one
//! given, so no id is ever given twice here. A run killed after this transaction and before
//! the replay finds the entry again under its old heading with its row under the new id: the
//! row is found by its rule (the row whose rule is the entry's and whose id no heading holds),
//! which is how sync-db-markdown.sh pairs a misnumbered entry with its row, and the replay
//! then does what it would have done.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::rebase::LocalEntry;
use elf_core::Error;

/// A rule as sync-db-markdown.sh compares rules: one line, runs of white space as one space,
/// ignoring case.
pub fn norm(rule: &str) -> String {
    rule.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

fn db_error(e: &rusqlite::Error) -> Error {
    match e {
        rusqlite::Error::SqliteFailure(f, _)
            if matches!(
                f.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ) =>
        {
            Error::temporary(format!("the index is busy: {e}"))
        }
        _ => Error::io_failure(format!("the index: {e}")),
    }
}

fn open(db: &Path, timeout: Duration) -> Result<Option<Connection>, Error> {
    if !db.exists() {
        return Ok(None);
    }
    let c = Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_error(&e))?;
    c.busy_timeout(timeout).map_err(|e| db_error(&e))?;
    Ok(Some(c))
}

fn has_table(c: &Connection, name: &str) -> Result<bool, Error> {
    c.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
    .map_err(|e| db_error(&e))
}

/// New ids for the `collisions` (local entries whose id the remote's head holds): old id ->
/// new id, the rows moved in one transaction. `remote` holds every heading id of the remote's
/// head, `taken` those and every heading id of this machine's head.
pub fn move_heuristics(
    db: Option<&Path>,
    timeout: Duration,
    collisions: &[LocalEntry],
    remote: &BTreeSet<u64>,
    taken: &BTreeSet<u64>,
) -> Result<BTreeMap<u64, u64>, Error> {
    let mut map = BTreeMap::new();
    if collisions.is_empty() {
        return Ok(map);
    }
    let mut next = taken.iter().next_back().copied().unwrap_or(0);
    let conn = match db {
        Some(p) => open(p, timeout)?,
        None => None,
    };
    let Some(mut conn) = conn.filter(|c| has_table(c, "heuristics").unwrap_or(false)) else {
        for e in collisions {
            next += 1;
            map.insert(e.id, next);
        }
        return Ok(map);
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| db_error(&e))?;
    let seq: i64 = tx
        .query_row(
            "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'heuristics'), 0)",
            [],
            |r| r.get(0),
        )
        .map_err(|e| db_error(&e))?;
    let max_row: i64 = tx
        .query_row("SELECT coalesce(max(id), 0) FROM heuristics", [], |r| {
            r.get(0)
        })
        .map_err(|e| db_error(&e))?;
    next = next.max(seq.max(max_row).max(0) as u64);
    let rows: Vec<(u64, String)> = {
        let mut st = tx
            .prepare("SELECT id, rule FROM heuristics")
            .map_err(|e| db_error(&e))?;
        let it = st
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Option<String>>(1)?))
            })
            .map_err(|e| db_error(&e))?;
        let mut v = Vec::new();
        for r in it {
            let (id, rule) = r.map_err(|e| db_error(&e))?;
            v.push((id.max(0) as u64, norm(&rule.unwrap_or_default())));
        }
        v
    };
    // The journal holds each record's row id too: a record still pending (its run killed
    // after its commit, before its push was done) is replayed with its row's new id, so that
    // its entry is found where the replay rewrote it.
    let journal = has_table(&tx, "elf_journal")?;
    let follow = |tx: &rusqlite::Transaction, old: u64, new: u64| -> Result<(), Error> {
        if journal {
            tx.execute(
                "UPDATE elf_journal SET ids = json_set(ids, '$[0].id', ?1),
                        record = CASE WHEN json_extract(record, '$.db.id') IS NOT NULL
                                      THEN json_set(record, '$.db.id', ?1) ELSE record END
                 WHERE json_extract(record, '$.db.table') = 'heuristics'
                   AND json_extract(ids, '$[0].id') = ?2",
                params![new as i64, old as i64],
            )
            .map_err(|e| db_error(&e))?;
        }
        Ok(())
    };
    let mut used = BTreeSet::new();
    for e in collisions {
        let rule = norm(&e.rule);
        let own = rows.iter().any(|(id, r)| *id == e.id && *r == rule);
        if own {
            next += 1;
            tx.execute(
                "UPDATE heuristics SET id = ?1 WHERE id = ?2",
                params![next as i64, e.id as i64],
            )
            .map_err(|e| db_error(&e))?;
            follow(&tx, e.id, next)?;
            map.insert(e.id, next);
            continue;
        }
        // Moved by a run that was killed before its replay: the row of this rule whose id the
        // remote does not hold (this machine's files may hold it already, when that run was
        // killed while it moved them).
        let moved = rows
            .iter()
            .filter(|(id, r)| *r == rule && !remote.contains(id) && !used.contains(id))
            .map(|(id, _)| *id)
            .max();
        match moved {
            Some(id) => {
                used.insert(id);
                map.insert(e.id, id);
            }
            None => {
                next += 1;
                map.insert(e.id, next);
            }
        }
    }
    let n = tx
        .execute(
            "UPDATE sqlite_sequence SET seq = ?1 WHERE name = 'heuristics' AND seq < ?1",
            [next as i64],
        )
        .map_err(|e| db_error(&e))?;
    let exists: Option<i64> = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'heuristics'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(|e| db_error(&e))?;
    if n == 0 && exists.is_none() {
        tx.execute(
            "INSERT INTO sqlite_sequence (name, seq) VALUES ('heuristics', ?1)",
            [next as i64],
        )
        .map_err(|e| db_error(&e))?;
    }
    tx.commit().map_err(|e| db_error(&e))?;
    Ok(map)
}

/// The rows follow their files renamed by the replay, in one transaction: a failure file
/// (from, to, the file's record key): the record's row (by the journal) when the key is known
/// there, else the failure row of the old path; an experiment's folder (from, to, None): the
/// experiment row of the old folder, and the records not yet finished that write into it (a
/// run killed during its push replays its record into the folder it now has).
pub fn follow_renames(
    db: Option<&Path>,
    timeout: Duration,
    renames: &[(String, String, Option<String>)],
) -> Result<(), Error> {
    if renames.is_empty() {
        return Ok(());
    }
    let Some(mut conn) = (match db {
        Some(p) => open(p, timeout)?,
        None => None,
    }) else {
        return Ok(());
    };
    let learnings = has_table(&conn, "learnings")?;
    let experiments = has_table(&conn, "experiments")?;
    let journal = has_table(&conn, "elf_journal")?;
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| db_error(&e))?;
    for (from, to, key) in renames {
        if key.is_none() && from.starts_with(crate::rebase::EXPERIMENTS) {
            if experiments {
                tx.execute(
                    "UPDATE experiments SET folder_path = ?1 WHERE folder_path = ?2",
                    params![to, from],
                )
                .map_err(|e| db_error(&e))?;
            }
            if journal {
                move_journaled_writes(&tx, from, to)?;
            }
            continue;
        }
        if !learnings {
            continue;
        }
        let id: Option<i64> = match key {
            Some(k) if journal => tx
                .query_row(
                    "SELECT json_extract(ids, '$[0].id') FROM elf_journal WHERE key = ?1",
                    [k],
                    |r| r.get(0),
                )
                .optional()
                .map_err(|e| db_error(&e))?
                .flatten(),
            _ => None,
        };
        match id {
            Some(id) => tx.execute(
                "UPDATE learnings SET filepath = ?1 WHERE id = ?2",
                params![to, id],
            ),
            None => tx.execute(
                "UPDATE learnings SET filepath = ?1 WHERE type = 'failure' AND filepath = ?2",
                params![to, from],
            ),
        }
        .map_err(|e| db_error(&e))?;
    }
    tx.commit().map_err(|e| db_error(&e))
}

/// The records not yet finished whose writes go into the folder `from` write into `to`.
fn move_journaled_writes(tx: &rusqlite::Transaction, from: &str, to: &str) -> Result<(), Error> {
    let mut found = Vec::new();
    {
        let mut q = tx
            .prepare(
                "SELECT key, record FROM elf_journal
                 WHERE done_at IS NULL AND instr(record, ?1) > 0",
            )
            .map_err(|e| db_error(&e))?;
        let rows = q
            .query_map([format!("{from}/")], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| db_error(&e))?;
        for row in rows {
            found.push(row.map_err(|e| db_error(&e))?);
        }
    }
    for (key, text) in found {
        let Ok(mut rec) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&text)
        else {
            continue;
        };
        if !crate::rebase::move_write_paths(&mut rec, from, to) {
            continue;
        }
        tx.execute(
            "UPDATE elf_journal SET record = ?1 WHERE key = ?2",
            params![serde_json::Value::Object(rec).to_string(), key],
        )
        .map_err(|e| db_error(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_compare_as_sync_compares_them() {
        assert_eq!(norm("  Use  X\tnow "), "use x now");
    }
}
