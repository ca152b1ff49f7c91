//! elf-db's record parser: the `db` key (`stmt.rs`), run against a real SQLite database the
//! way `insert` and `exec` run it, inside a write transaction that is then rolled back; and
//! `exec --file`'s statement splitter.
//!
//! The input is a record line; a first byte `!` instead builds the `db` value from the rest of
//! the input with a small SQL and JSON vocabulary, which reaches the statement paths that raw
//! bytes rarely spell.
//!
//! Properties: no input panics; a record is accepted (one result per statement object, which
//! `fill` merges back) or refused with 65 and nothing else (no busy, I/O, permission or
//! internal status: the database is private and sound); whatever the SQL, the transaction is
//! still open afterwards (no statement of a record can commit, roll back or leave it), and
//! after the rollback the schema is as it was.
#![no_main]

use elf_db::conn;
use elf_db::journal;
use elf_db::stmt;

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rusqlite::Connection;
use rusqlite::limits::Limit;
use serde_json::{Map, Value};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS learnings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    title TEXT NOT NULL,
    severity INTEGER CHECK (severity BETWEEN 1 AND 5),
    tags TEXT
);
CREATE TABLE IF NOT EXISTS pairs (a INTEGER, b TEXT UNIQUE ON CONFLICT FAIL);
CREATE TABLE IF NOT EXISTS \"odd \"\"name\"\"\" (\"x; y\" TEXT);
CREATE VIEW IF NOT EXISTS v AS SELECT id, title FROM learnings;
CREATE TRIGGER IF NOT EXISTS no_bad AFTER INSERT ON pairs WHEN NEW.a < 0
    BEGIN SELECT RAISE(ABORT, 'negative'); END;
INSERT INTO learnings (type, title) SELECT 'failure', 'first' WHERE NOT EXISTS (SELECT 1 FROM learnings);
";

thread_local! {
    static DB: Connection = open();
}

fn open() -> Connection {
    let path = std::env::temp_dir().join(format!("elf-fuzz-db-{}.db", std::process::id()));
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.clone().into_os_string();
        p.push(suffix);
        let _ = std::fs::remove_file(p);
    }
    let o = conn::Options {
        path,
        busy: Duration::ZERO,
        sync: conn::Sync::Normal,
    };
    let db = conn::open(&o, conn::Mode::Create).expect("open the fuzz database");
    db.execute_batch(SCHEMA).expect("schema");
    journal::ensure(&db).expect("journal");
    // Bound what one fuzzed statement may cost: 1 MB values, 50 ms of work.
    db.set_limit(Limit::SQLITE_LIMIT_LENGTH, 1 << 20)
        .expect("limit");
    db
}

fn schema(db: &Connection) -> String {
    conn::guard(conn::Guard::Own);
    db.query_row(
        "SELECT group_concat(type || name || coalesce(sql, ''), ';') FROM sqlite_master",
        [],
        |r| r.get(0),
    )
    .expect("schema")
}

fuzz_target!(|data: &[u8]| {
    let db_value = match data.split_first() {
        Some((b'!', rest)) => Some(build(rest)),
        _ => match elf_core::record::parse_line(data) {
            Ok(Some(rec)) => rec.get("db").cloned(),
            _ => None,
        },
    };
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(chunks) = stmt::split_statements(text) {
            assert!(chunks.windows(2).all(|w| w[0].0 < w[1].0));
            assert!(chunks.iter().all(|(_, c)| !c.trim().is_empty()));
        }
    }
    let Some(db_value) = db_value else { return };
    DB.with(|db| {
        let before = schema(db);
        for kind in [stmt::Kind::Insert, stmt::Kind::Exec] {
            conn::begin(db, Duration::ZERO).expect("begin");
            let start = Instant::now();
            db.progress_handler(
                1000,
                Some(move || start.elapsed() > Duration::from_millis(50)),
            )
            .expect("progress handler");
            let mut cache = stmt::Schema::default();
            // The statements may hold references into the record they came in.
            let mut rec = Map::new();
            rec.insert("db".into(), db_value.clone());
            let r = stmt::apply(db, &mut cache, kind, "db", &rec, &db_value);
            db.progress_handler(1000, None::<fn() -> bool>)
                .expect("progress handler");
            assert!(
                !db.is_autocommit(),
                "{kind:?} {db_value}: the record's SQL ended elf-db's transaction"
            );
            match r {
                Ok(results) => {
                    let n = match &db_value {
                        Value::Array(a) => a.len(),
                        _ => 1,
                    };
                    assert_eq!(results.len(), n);
                    let mut filled = db_value.clone();
                    stmt::fill("db", &mut filled, &results).expect("fill");
                }
                Err(e) => {
                    let interrupted = e.message().contains("interrupted");
                    assert!(
                        e.code() == 65 || interrupted,
                        "{kind:?} {db_value}: status {} ({e})",
                        e.code()
                    );
                }
            }
            drop(cache);
            conn::rollback(db);
            assert_eq!(
                schema(db),
                before,
                "{kind:?} {db_value}: the schema changed"
            );
        }
    });
});

/// A `db` value from a byte vocabulary: statement objects with known and unknown keys, table
/// and column names (real, case-changed, hostile), values of every JSON type, and SQL made of
/// fragments, transaction control, ATTACH and PRAGMA included.
fn build(bytes: &[u8]) -> Value {
    let mut b = Bytes(bytes);
    let n = 1 + b.next() % 3;
    let objs: Vec<Value> = (0..n).map(|_| Value::Object(object(&mut b))).collect();
    if n == 1 && b.next() % 2 == 0 {
        objs.into_iter().next().unwrap_or(Value::Null)
    } else {
        Value::Array(objs)
    }
}

struct Bytes<'a>(&'a [u8]);

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&x, rest)) => {
                self.0 = rest;
                x
            }
            None => 0,
        }
    }

    fn pick<'v>(&mut self, from: &[&'v str]) -> &'v str {
        from[usize::from(self.next()) % from.len()]
    }
}

const TABLES: &[&str] = &[
    "learnings",
    "LEARNINGS",
    "pairs",
    "odd \"name\"",
    "v",
    "nope",
    "sqlite_master",
    "elf_journal",
    "learnings; DROP TABLE learnings",
    "",
];
const COLUMNS: &[&str] = &[
    "type",
    "title",
    "TITLE",
    "severity",
    "tags",
    "id",
    "a",
    "b",
    "x; y",
    "nope",
    "title\"--",
    "",
];
const SQL: &[&str] = &[
    "SELECT",
    "INSERT INTO",
    "UPDATE",
    "DELETE FROM",
    "learnings",
    "pairs",
    "v",
    "(",
    ")",
    ",",
    "VALUES",
    "SET",
    "WHERE",
    "=",
    "title",
    "type",
    "severity",
    "a",
    "b",
    ":t",
    "@t",
    "$t",
    "?",
    "?2",
    ":a",
    "1",
    "-1",
    "NULL",
    "'x'",
    "'",
    "\"",
    ";",
    "--",
    "/*",
    "*/",
    "*",
    "RETURNING *",
    "BEGIN",
    "COMMIT",
    "ROLLBACK",
    "SAVEPOINT s",
    "RELEASE s",
    "ATTACH 'x.db' AS x",
    "DETACH x",
    "PRAGMA foreign_keys=OFF",
    "PRAGMA writable_schema",
    "VACUUM",
    "CREATE TABLE t(x)",
    "DROP TABLE learnings",
    "CREATE TEMP TRIGGER",
    "ON CONFLICT",
    "REPLACE",
    "IGNORE",
    "\0",
    "load_extension('x')",
    "sqlite_master",
    "elf_journal",
    "pragma_table_info('learnings')",
    "END",
    "ANALYZE",
    "REINDEX",
    "x'00ff'",
    "1e999",
    "9223372036854775808",
];

fn object(b: &mut Bytes<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    let keys = 1 + b.next() % 4;
    for _ in 0..keys {
        match b.next() % 8 {
            0 | 1 => {
                m.insert("table".into(), Value::from(b.pick(TABLES)));
            }
            2 | 3 => {
                let values = if b.next() % 3 == 0 {
                    Value::Array((0..1 + b.next() % 3).map(|_| row(b)).collect())
                } else {
                    row(b)
                };
                m.insert("values".into(), values);
            }
            4 | 5 => {
                let words = 1 + b.next() % 10;
                let sql: Vec<&str> = (0..words).map(|_| b.pick(SQL)).collect();
                m.insert("sql".into(), Value::from(sql.join(" ")));
            }
            6 => {
                let params = if b.next() % 2 == 0 {
                    Value::Array((0..b.next() % 3).map(|_| value(b)).collect())
                } else {
                    let mut p = Map::new();
                    for _ in 0..b.next() % 3 {
                        let k = b.pick(&["t", ":t", "@t", "$t", "a", "?", ""]);
                        p.insert(k.into(), value(b));
                    }
                    Value::Object(p)
                };
                m.insert("params".into(), params);
            }
            _ => {
                let k = b.pick(&["id", "ids", "changes", "rows", "extra"]);
                m.insert(k.into(), value(b));
            }
        }
    }
    m
}

fn row(b: &mut Bytes<'_>) -> Value {
    let mut r = Map::new();
    for _ in 0..b.next() % 5 {
        r.insert(b.pick(COLUMNS).into(), value(b));
    }
    if b.next() % 4 == 0 {
        value(b)
    } else {
        Value::Object(r)
    }
}

fn value(b: &mut Bytes<'_>) -> Value {
    match b.next() % 9 {
        0 => Value::Null,
        1 => Value::Bool(b.next() % 2 == 0),
        2 => Value::from(i64::from(b.next() as i8)),
        3 => serde_json::from_str("123456789012345678901234567890").unwrap_or(Value::Null),
        4 => serde_json::from_str("-2.5e3").unwrap_or(Value::Null),
        5 => serde_json::from_str("1e999").unwrap_or(Value::Null),
        6 => Value::from(b.pick(&[
            "x",
            "",
            "\u{1b}[31m",
            "a\0b",
            "'); DROP TABLE learnings; --",
        ])),
        7 => Value::Array(vec![Value::from(1), Value::Null]),
        _ => {
            let mut m = Map::new();
            m.insert("k".into(), Value::from("v"));
            Value::Object(m)
        }
    }
}
