//! elf-db: records in, rows out; bad input, hostile names and values, the legacy schemas,
//! contention, busy locks, kill -9, the journal and its replay, queries, check, checkpoint.
//!
//! Results are checked through a separate rusqlite connection, not through elf-db itself.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rusqlite::Connection;
use serde_json::{Map, Value, json};

use crate::util::{TempDir, cmd, json_lines, one_line, run_with_input, scale, wait_for, watchdog};

fn elf_db() -> Command {
    cmd(env!("CARGO_BIN_EXE_elf-db"))
}

/// `elf-db ARGS --db DB`.
fn db_cmd(db: &Path, args: &[&str]) -> Command {
    let mut c = elf_db();
    c.arg("--db").arg(db).args(args);
    c
}

/// A learnings-like table, as the first legacy schema has it, plus a table for other tests.
const SCHEMA: &str = "\
CREATE TABLE learnings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    type TEXT NOT NULL,
    filepath TEXT NOT NULL,
    title TEXT NOT NULL,
    summary TEXT,
    tags TEXT,
    domain TEXT,
    severity INTEGER DEFAULT 3,
    created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
    updated_at DATETIME DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX idx_learnings_type ON learnings(type);
CREATE TABLE pairs (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, side TEXT NOT NULL);
";

/// A new database with [`SCHEMA`], made by `elf-db exec --file`.
fn new_db(dir: &TempDir) -> PathBuf {
    let schema = dir.join("schema.sql");
    std::fs::write(&schema, SCHEMA).expect("write schema");
    let db = dir.join("index.db");
    let out = db_cmd(&db, &["exec", "--file"])
        .arg(&schema)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    db
}

fn open(db: &Path) -> Connection {
    let c = Connection::open(db).expect("open db");
    c.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    c
}

fn count(db: &Path, sql: &str) -> i64 {
    open(db).query_row(sql, [], |r| r.get(0)).expect("count")
}

fn lines(records: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        out.extend_from_slice(r.to_string().as_bytes());
        out.push(b'\n');
    }
    out
}

fn failure(title: &str) -> Value {
    json!({"db": {"table": "learnings", "values": {"type": "failure", "filepath": format!("memory/failures/{title}.md"), "title": title}}})
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn insert_adds_ids_and_keeps_every_other_key_in_place() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let input = concat!(
        r#"{"z":1,"db":{"table":"learnings","values":{"type":"failure","filepath":"a.md","title":"a","tags":["x",{"y":2}],"severity":true}},"write":{"path":"p"},"big":123456789012345678901234567890}"#,
        "\n",
        r#"{"db":[{"table":"LEARNINGS","values":[{"type":"success","filepath":"b.md","title":"b"},{"type":"success","filepath":"c.md","title":"c","summary":null}]},{"table":"pairs","values":{"seq":1,"side":"l"}}]}"#,
        "\n",
        r#"{"note":"no db: passed on untouched"}"#,
        "\n",
    );
    let out = run_with_input(db_cmd(&db, &["insert"]), input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), 3);
    // Untouched keys keep their text exactly, order included; the id goes inside db.
    assert_eq!(
        got[0],
        r#"{"z":1,"db":{"table":"learnings","values":{"type":"failure","filepath":"a.md","title":"a","tags":["x",{"y":2}],"severity":true},"id":1},"write":{"path":"p"},"big":123456789012345678901234567890}"#
    );
    let recs = json_lines(text.as_bytes());
    assert_eq!(recs[1]["db"][0]["ids"], json!([2, 3]));
    assert_eq!(recs[1]["db"][1]["id"], json!(1));
    assert_eq!(got[2], r#"{"note":"no db: passed on untouched"}"#);
    let c = open(&db);
    let (tags, severity): (String, i64) = c
        .query_row(
            "SELECT tags, severity FROM learnings WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!(
        serde_json::from_str::<Value>(&tags).expect("json text"),
        json!(["x", {"y": 2}])
    );
    assert_eq!(severity, 1);
    let summary: Option<String> = c
        .query_row("SELECT summary FROM learnings WHERE id = 3", [], |r| {
            r.get(0)
        })
        .expect("row");
    assert_eq!(summary, None);
}

#[test]
fn table_form_takes_plain_objects_as_rows() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let input = b"{\"type\":\"failure\",\"filepath\":\"a\",\"title\":\"a\"}\n\n{\"type\":\"success\",\"filepath\":\"b\",\"title\":\"b\",\"severity\":5}\n";
    let out = run_with_input(db_cmd(&db, &["insert", "-t", "learnings"]), input);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 2);
    assert_eq!(
        Value::Object(recs[1].clone()),
        json!({"type":"success","filepath":"b","title":"b","severity":5,"db":{"table":"learnings","id":2}})
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM learnings WHERE severity = 5"),
        1
    );
    // A row with a "db" column cannot carry the result: refused, not overwritten.
    let out = run_with_input(db_cmd(&db, &["insert", "-t", "learnings"]), b"{\"db\":1}\n");
    assert_eq!(out.status.code(), Some(65));
}

#[test]
fn bad_records_stop_with_65_naming_the_line_after_passing_on_the_good_ones() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let cases: &[(&str, &str)] = &[
        (
            r#"{"db":{"table":"nope","values":{}}}"#,
            "no table named 'nope' (tables: learnings, pairs)",
        ),
        (
            r#"{"db":{"table":"learnings","values":{"titel":"x"}}}"#,
            "has no column named 'titel' (columns: id, type, filepath",
        ),
        (
            r#"{"db":{"table":"learnings","values":{"type":null,"filepath":"f","title":"t"}}}"#,
            "NOT NULL constraint failed: learnings.type",
        ),
        (
            r#"{"db":{"table":"learnings","values":{"type":"x","Type":"y"}}}"#,
            "given twice",
        ),
        (
            r#"{"db":{"table":"learnings","value":{}}}"#,
            "unknown key 'value'",
        ),
        (
            r#"{"db":"INSERT INTO learnings"}"#,
            "db must be an object or an array of objects, found a string",
        ),
        (
            r#"{"db":{"table":"learnings","values":{"severity":1e999}}}"#,
            "column severity: number 1e+999 is out of range for a REAL: too large, it would be infinite",
        ),
        (
            r#"{"db":{"table":"learnings","values":{"severity":1.5e-400}}}"#,
            "column severity: number 1.5e-400 is out of range for a REAL: too small, it would be stored as 0",
        ),
        (
            r#"{"db":{"table":"learnings","values":{"severity":9223372036854775808}}}"#,
            "column severity: integer 9223372036854775808 is out of range for SQLite's 64-bit INTEGER",
        ),
        (r#"{"db": {"table":"learnings""#, "invalid JSON"),
        (r#"[1]"#, "expected a JSON object"),
    ];
    for (bad, needle) in cases {
        let input = lines(&[failure("ok1"), failure("ok2")]);
        let mut input = input;
        input.extend_from_slice(bad.as_bytes());
        input.push(b'\n');
        input.extend_from_slice(&lines(&[failure("after")]));
        let before = count(&db, "SELECT count(*) FROM learnings");
        let out = run_with_input(db_cmd(&db, &["insert"]), &input);
        assert_eq!(out.status.code(), Some(65), "{bad}: {}", stderr(&out));
        let line = one_line(&out.stderr);
        assert!(line.starts_with("elf-db: line 3: "), "{line}");
        assert!(line.contains(needle), "{bad}: {line}");
        // The two records before it were committed and passed on; nothing after it was read.
        let recs = json_lines(&out.stdout);
        assert_eq!(recs.len(), 2, "{bad}");
        assert_eq!(
            count(&db, "SELECT count(*) FROM learnings"),
            before + 2,
            "{bad}"
        );
        assert_eq!(
            count(&db, "SELECT count(*) FROM learnings WHERE title = 'after'"),
            0
        );
    }
}

#[test]
fn keep_going_turns_each_bad_record_into_an_error_record_and_writes_nothing_of_it() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    // The second record's first statement succeeds, its second fails: neither is kept.
    let input = concat!(
        r#"{"db":{"table":"learnings","values":{"type":"failure","filepath":"a","title":"a"}}}"#,
        "\n",
        r#"{"db":[{"table":"pairs","values":{"seq":7,"side":"l"}},{"table":"pairs","values":{"seq":7}}]}"#,
        "\n",
        "not json\n",
        r#"{"db":{"table":"nope","values":{}},"error":{"tool":"elf-write","code":74,"message":"earlier"}}"#,
        "\n",
        r#"{"db":{"table":"pairs","values":{"seq":8,"side":"r"}}}"#,
        "\n",
    );
    let out = run_with_input(db_cmd(&db, &["insert", "--keep-going"]), input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[0]["db"]["id"], json!(1));
    let e = &recs[1]["error"];
    assert_eq!(
        (e["tool"].as_str(), e["code"].as_u64(), e["line"].as_u64()),
        (Some("elf-db"), Some(65), Some(2))
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("db[1]: NOT NULL constraint failed: pairs.side"),
        "{e}"
    );
    assert!(
        recs[1]["db"][0].get("id").is_none(),
        "a rolled-back id must not be reported"
    );
    assert_eq!(recs[2]["error"]["line"], json!(3));
    // A record that already carries an error is passed on untouched.
    assert_eq!(recs[3]["error"]["tool"], json!("elf-write"));
    assert_eq!(
        recs[4]["db"]["id"],
        json!(1),
        "the rolled-back rowid is free again"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM pairs WHERE seq = 7"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM pairs"), 1);
}

#[test]
fn hostile_names_and_values_are_stored_literally_or_refused_never_run() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let schema = dir.join("weird.sql");
    std::fs::write(
        &schema,
        "CREATE TABLE \"we\"\"ird; DROP TABLE pairs\" (\"col\"\"umn\" TEXT, \"x'); --\" TEXT);\n",
    )
    .expect("write");
    assert!(
        db_cmd(&db, &["exec", "-f"])
            .arg(&schema)
            .output()
            .expect("run")
            .status
            .success()
    );
    let payloads = [
        "x'); DROP TABLE learnings; --",
        "learnings; DROP TABLE x",
        "\"; DELETE FROM learnings; --",
        "Robert'); DROP TABLE pairs;--\u{0}\u{1b}[31m",
    ];
    let mut input = Vec::new();
    for p in payloads {
        input.extend_from_slice(&lines(&[
            json!({"db":{"table":"learnings","values":{"type":p,"filepath":p,"title":p,"tags":p}}}),
        ]));
        input.extend_from_slice(&lines(&[
            json!({"db":{"table":"we\"ird; DROP TABLE pairs","values":{"col\"umn":p,"x'); --":p}}}),
        ]));
    }
    let out = run_with_input(db_cmd(&db, &["insert"]), &input);
    assert!(out.status.success(), "{}", stderr(&out));
    let c = open(&db);
    for p in payloads {
        let n: i64 = c
            .query_row(
                "SELECT count(*) FROM learnings WHERE type = ?1 AND title = ?1 AND tags = ?1",
                [p],
                |r| r.get(0),
            )
            .expect("query");
        assert_eq!(n, 1, "{p:?} not stored literally");
        let n: i64 = c
            .query_row("SELECT count(*) FROM \"we\"\"ird; DROP TABLE pairs\" WHERE \"col\"\"umn\" = ?1 AND \"x'); --\" = ?1", [p], |r| r.get(0))
            .expect("query");
        assert_eq!(n, 1);
    }
    // Names that are not in the schema are refused; SQL in a record is one statement and may
    // not control the transaction or reach other files.
    let refused: &[(&[&str], Value)] = &[
        (
            &["insert"],
            json!({"db":{"table":"learnings; DROP TABLE pairs","values":{}}}),
        ),
        (
            &["insert"],
            json!({"db":{"table":"learnings","values":{"title) VALUES ('x'); DROP TABLE pairs; --":"x"}}}),
        ),
        (
            &["exec"],
            json!({"db":{"sql":"SELECT 1; DROP TABLE pairs"}}),
        ),
        (&["exec"], json!({"db":{"sql":"COMMIT"}})),
        (&["exec"], json!({"db":{"sql":"ROLLBACK"}})),
        (&["exec"], json!({"db":{"sql":"ATTACH 'other.db' AS o"}})),
        (&["exec"], json!({"db":{"sql":"PRAGMA foreign_keys = OFF"}})),
        (
            &["exec"],
            json!({"db":{"sql":"DELETE FROM pairs WHERE side = :s","params":{"s":"x","t":"unused"}}}),
        ),
    ];
    for (args, rec) in refused {
        let out = run_with_input(db_cmd(&db, args), &lines(std::slice::from_ref(rec)));
        assert_eq!(out.status.code(), Some(65), "{rec}: {}", stderr(&out));
        one_line(&out.stderr);
    }
    let out = db_cmd(&db, &["query", "DROP TABLE pairs"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    let out = db_cmd(&db, &["query", "SELECT 1; DROP TABLE pairs"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name IN ('learnings', 'pairs')"
        ),
        2
    );
    assert!(!dir.join("other.db").exists());
}

/// The three legacy schemas (ELF-LEGACY.md): plain, with CHECK constraints, with validation
/// triggers; experiments.name UNIQUE in some of them.
const LEGACY: [&str; 3] = [
    "CREATE TABLE learnings (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, filepath TEXT NOT NULL,
        title TEXT NOT NULL, summary TEXT, tags TEXT, domain TEXT, severity INTEGER DEFAULT 3,
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP);
     CREATE TABLE heuristics (id INTEGER PRIMARY KEY AUTOINCREMENT, domain TEXT NOT NULL, rule TEXT NOT NULL,
        explanation TEXT, source_type TEXT, source_id INTEGER, confidence REAL DEFAULT 0.5,
        times_validated INTEGER DEFAULT 0, times_violated INTEGER DEFAULT 0, is_golden INTEGER DEFAULT 0,
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP);
     CREATE TABLE experiments (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, hypothesis TEXT,
        status TEXT DEFAULT 'active', cycles_run INTEGER DEFAULT 0, folder_path TEXT,
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP);",
    "CREATE TABLE learnings (id INTEGER PRIMARY KEY AUTOINCREMENT,
        type TEXT NOT NULL CHECK(type IN ('failure', 'success', 'heuristic', 'experiment', 'observation')),
        filepath TEXT NOT NULL, title TEXT NOT NULL, summary TEXT, tags TEXT, domain TEXT,
        severity INTEGER DEFAULT 3 CHECK(severity >= 1 AND severity <= 5),
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP);
     CREATE TABLE heuristics (id INTEGER PRIMARY KEY AUTOINCREMENT, domain TEXT NOT NULL, rule TEXT NOT NULL,
        explanation TEXT, source_type TEXT, source_id INTEGER,
        confidence REAL DEFAULT 0.5 CHECK(confidence >= 0.0 AND confidence <= 1.0),
        times_validated INTEGER DEFAULT 0, times_violated INTEGER DEFAULT 0, is_golden INTEGER DEFAULT 0,
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP);
     CREATE TABLE experiments (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, hypothesis TEXT,
        status TEXT DEFAULT 'active', cycles_run INTEGER DEFAULT 0, folder_path TEXT,
        created_at DATETIME DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME DEFAULT CURRENT_TIMESTAMP);",
    "CREATE TABLE learnings (id INTEGER PRIMARY KEY AUTOINCREMENT, type TEXT NOT NULL, filepath TEXT NOT NULL,
        title TEXT NOT NULL, summary TEXT, tags TEXT, domain TEXT, severity TEXT,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at DATETIME);
     CREATE TABLE heuristics (id INTEGER PRIMARY KEY AUTOINCREMENT, domain TEXT NOT NULL, rule TEXT NOT NULL,
        explanation TEXT, source_type TEXT, confidence REAL DEFAULT 0.0, times_validated INTEGER DEFAULT 0,
        is_golden INTEGER DEFAULT 0, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
        source_id INTEGER, times_violated INTEGER DEFAULT 0, updated_at DATETIME);
     CREATE TABLE experiments (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL UNIQUE, hypothesis TEXT,
        status TEXT DEFAULT 'active', cycles_run INTEGER DEFAULT 0, folder_path TEXT,
        created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP, updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
     CREATE TRIGGER learnings_validate_insert BEFORE INSERT ON learnings FOR EACH ROW
        WHEN NEW.type NOT IN ('failure', 'success', 'heuristic', 'experiment', 'observation')
           OR (CAST(NEW.severity AS INTEGER) < 1 OR CAST(NEW.severity AS INTEGER) > 5)
        BEGIN SELECT RAISE(ABORT, 'Validation failed: invalid type or severity'); END;
     CREATE TRIGGER heuristics_validate_insert BEFORE INSERT ON heuristics FOR EACH ROW
        WHEN NEW.confidence < 0.0 OR NEW.confidence > 1.0 OR NEW.times_validated < 0
        BEGIN SELECT RAISE(ABORT, 'Validation failed: invalid confidence or counts'); END;",
];

const REAL_DB: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/real-home/memory/index.db"
);

#[test]
fn the_legacy_schemas_and_the_real_database_work_as_they_are() {
    let dir = TempDir::new();
    let mut dbs = Vec::new();
    for (i, schema) in LEGACY.iter().enumerate() {
        let db = dir.join(format!("legacy{i}.db"));
        Connection::open(&db)
            .expect("create")
            .execute_batch(schema)
            .expect("schema");
        dbs.push((db, i));
    }
    let db = dir.join("real.db");
    std::fs::copy(REAL_DB, &db).expect("copy the real database");
    dbs.push((db, 3));
    for (db, kind) in &dbs {
        let schema_before: Vec<String> = open(db)
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("schema");
        let before = count(db, "SELECT count(*) FROM learnings");
        let good = [
            json!({"db":{"table":"learnings","values":{"type":"failure","filepath":"memory/failures/x.md","title":"x","summary":"s","tags":"a,b","domain":"git","severity":4}}}),
            json!({"db":{"table":"heuristics","values":{"domain":"git","rule":"r","explanation":"e","source_type":"observation","confidence":0.85}}}),
            json!({"db":{"table":"experiments","values":{"name":"exp","hypothesis":"h","folder_path":"experiments/active/x"}}}),
        ];
        let out = run_with_input(db_cmd(db, &["insert"]), &lines(&good));
        assert!(out.status.success(), "schema {kind}: {}", stderr(&out));
        let recs = json_lines(&out.stdout);
        let id = recs[0]["db"]["id"].as_i64().expect("id");
        assert!(id > 0);
        let title: String = open(db)
            .query_row("SELECT title FROM learnings WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .expect("row");
        assert_eq!(title, "x");
        assert_eq!(count(db, "SELECT count(*) FROM learnings"), before + 1);
        // Values the schema refuses: 65 naming the line, nothing kept.
        let bad_severity = json!({"db":{"table":"learnings","values":{"type":"failure","filepath":"f","title":"t","severity":9}}});
        let bad_confidence = json!({"db":{"table":"heuristics","values":{"domain":"d","rule":"r","confidence":1.5}}});
        let dup_name = json!({"db":{"table":"experiments","values":{"name":"exp"}}});
        for (rec, refused) in [
            (bad_severity, *kind != 0),
            (bad_confidence, *kind != 0),
            (dup_name, *kind != 0),
        ] {
            let before = count(
                db,
                "SELECT (SELECT count(*) FROM learnings) + (SELECT count(*) FROM heuristics) + (SELECT count(*) FROM experiments)",
            );
            let out = run_with_input(
                db_cmd(db, &["insert"]),
                &lines(&[json!({"db":null}), rec.clone()]),
            );
            let after = count(
                db,
                "SELECT (SELECT count(*) FROM learnings) + (SELECT count(*) FROM heuristics) + (SELECT count(*) FROM experiments)",
            );
            if refused {
                assert_eq!(out.status.code(), Some(65), "schema {kind} {rec}");
                let line = one_line(&out.stderr);
                assert!(line.starts_with("elf-db: line 2: db: "), "{line}");
                assert!(
                    line.contains("CHECK")
                        || line.contains("Validation failed")
                        || line.contains("UNIQUE"),
                    "{line}"
                );
                assert_eq!(after, before);
            } else {
                assert!(
                    out.status.success(),
                    "schema {kind} {rec}: {}",
                    stderr(&out)
                );
                assert_eq!(after, before + 1);
            }
        }
        // The journal table is the only thing elf-db ever adds.
        let out = run_with_input(
            db_cmd(db, &["insert", "--journal"]),
            &lines(&[json!({"key":"k"})]),
        );
        assert!(out.status.success(), "{}", stderr(&out));
        let schema_after: Vec<String> = open(db)
            .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'elf_journal%' ORDER BY name")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("schema");
        assert_eq!(schema_before, schema_after, "schema {kind} was altered");
        let check = db_cmd(db, &["check"]).output().expect("run");
        assert_eq!(check.status.code(), Some(0), "{}", stderr(&check));
    }
}

/// Spawns `elf-db insert` on a piped stdin with every record written at once.
fn spawn_insert(db: &Path, args: &[&str], input: Vec<u8>) -> Child {
    let mut c = db_cmd(db, args);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn elf-db");
    let mut stdin = child.stdin.take().expect("stdin");
    std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    child
}

#[test]
fn twenty_writers_and_twenty_readers_lose_nothing_and_each_writer_gets_its_own_ids() {
    let writers = scale(20, 20);
    let per = scale(50, 50);
    let readers = scale(20, 20);
    let dir = TempDir::new();
    let db = new_db(&dir);
    watchdog(Duration::from_secs(240), move || {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut reader_threads = Vec::new();
        for _ in 0..readers {
            let db = db.clone();
            let stop = stop.clone();
            reader_threads.push(std::thread::spawn(move || {
                let mut last = 0;
                let mut runs = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) || runs == 0 {
                    let out = db_cmd(&db, &["query", "SELECT count(*) AS n FROM learnings"])
                        .output()
                        .expect("query");
                    assert!(out.status.success(), "reader failed: {}", stderr(&out));
                    let n = json_lines(&out.stdout)[0]["n"].as_i64().expect("n");
                    assert!(n >= last, "count went back from {last} to {n}");
                    last = n;
                    runs += 1;
                }
                runs
            }));
        }
        // One transaction per record (--batch 1), so that the writers really contend.
        let children: Vec<Child> = (0..writers)
            .map(|w| {
                let recs: Vec<Value> = (0..per)
                    .map(|i| json!({"db":{"table":"learnings","values":{"type":"failure","filepath":format!("w{w}"),"title":format!("{i}")}}}))
                    .collect();
                spawn_insert(&db, &["insert", "--batch", "1"], lines(&recs))
            })
            .collect();
        let mut received: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
        for (w, child) in children.into_iter().enumerate() {
            let out = child.wait_with_output().expect("wait writer");
            assert!(out.status.success(), "writer {w}: {}", stderr(&out));
            let recs = json_lines(&out.stdout);
            assert_eq!(recs.len(), per);
            let ids = recs
                .iter()
                .map(|r| r["db"]["id"].as_i64().expect("id"))
                .collect();
            received.insert(format!("w{w}"), ids);
        }
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for t in reader_threads {
            assert!(t.join().expect("reader thread") > 0);
        }
        assert_eq!(
            count(&db, "SELECT count(*) FROM learnings"),
            (writers * per) as i64
        );
        let c = open(&db);
        for (w, ids) in &received {
            let rows: BTreeSet<i64> = c
                .prepare("SELECT id FROM learnings WHERE filepath = ?1")
                .and_then(|mut s| s.query_map([w], |r| r.get(0))?.collect())
                .expect("rows");
            assert_eq!(&rows, ids, "writer {w} was told other ids than its rows");
        }
    });
}

/// A `sqlite3` process holding `BEGIN EXCLUSIVE`, released by [`Holder::release`].
struct Holder(Child);

impl Holder {
    fn take(db: &Path) -> Holder {
        let mut child = Command::new("sqlite3")
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn sqlite3");
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin
            .write_all(b".timeout 20000\nBEGIN EXCLUSIVE;\nINSERT INTO pairs(seq, side) VALUES (-1, 'holder');\n")
            .expect("write");
        stdin.flush().expect("flush");
        // Handshake: the lock is held once a writer with no timeout is refused with 75.
        wait_for(Duration::from_secs(20), "sqlite3 to take the lock", || {
            let out = run_with_input(
                db_cmd(db, &["exec", "--busy-timeout", "0"]),
                b"{\"db\":{\"sql\":\"SELECT 1\"}}\n",
            );
            out.status.code() == Some(75)
        });
        Holder(child)
    }

    fn release(mut self) {
        if let Some(mut stdin) = self.0.stdin.take() {
            let _ = stdin.write_all(b"COMMIT;\n");
        }
        assert!(self.0.wait().expect("wait sqlite3").success());
    }
}

/// Whether process `pid` is in a sleep system call (SQLite's busy handler sleeps between tries).
fn sleeping(pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/syscall")) else {
        return false;
    };
    let nr = text.split(' ').next().and_then(|n| n.parse::<i64>().ok());
    nr == Some(libc::SYS_nanosleep) || nr == Some(libc::SYS_clock_nanosleep)
}

#[test]
fn an_exclusive_lock_is_waited_for_and_a_short_timeout_gives_75_with_nothing_done() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    watchdog(Duration::from_secs(60), move || {
        // Held until the writer is seen sleeping in its busy handler: the default 10 s timeout
        // waits, and succeeds once the lock is released.
        let holder = Holder::take(&db);
        let mut child = spawn_insert(&db, &["insert"], lines(&[failure("waited")]));
        wait_for(
            Duration::from_secs(20),
            "elf-db to wait for the lock",
            || sleeping(child.id()),
        );
        assert!(child.try_wait().expect("try_wait").is_none());
        holder.release();
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(json_lines(&out.stdout)[0]["db"]["id"], json!(1));
        assert_eq!(count(&db, "SELECT count(*) FROM learnings"), 1);
        // With a 1 s timeout: 75, one line, nothing inserted, nothing passed on.
        let holder = Holder::take(&db);
        let out = run_with_input(
            db_cmd(&db, &["insert", "--busy-timeout", "1s"]),
            &lines(&[failure("x"), failure("y")]),
        );
        holder.release();
        assert_eq!(out.status.code(), Some(75));
        assert!(one_line(&out.stderr).contains("busy"));
        assert!(out.stdout.is_empty());
        assert_eq!(count(&db, "SELECT count(*) FROM learnings"), 1);
    });
}

#[test]
fn the_same_key_inserts_one_row_and_reports_the_first_id_even_from_racing_processes() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let rec = |key: &str, title: &str| json!({"key": key, "db": {"table":"learnings","values":{"type":"failure","filepath":"f","title":title}}, "write": {"path": "x"}});
    let out = run_with_input(
        db_cmd(&db, &["insert", "-j"]),
        &lines(&[rec("k1", "first"), rec("k1", "second")]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs[0]["db"]["id"], recs[1]["db"]["id"]);
    // The second record is passed on as it came, with the first time's id.
    assert_eq!(recs[1]["db"]["values"]["title"], json!("second"));
    let out = run_with_input(
        db_cmd(&db, &["insert", "-j"]),
        &lines(&[rec("k1", "third")]),
    );
    assert_eq!(json_lines(&out.stdout)[0]["db"]["id"], recs[0]["db"]["id"]);
    assert_eq!(count(&db, "SELECT count(*) FROM learnings"), 1);
    // A key journaled with one statement and replayed with two is a data error.
    let two = json!({"key":"k1","db":[{"table":"pairs","values":{"seq":1,"side":"l"}},{"table":"pairs","values":{"seq":1,"side":"r"}}]});
    let out = run_with_input(db_cmd(&db, &["insert", "-j"]), &lines(&[two]));
    assert_eq!(out.status.code(), Some(65));
    // Racing processes, all with the same keys.
    let racers = scale(8, 20);
    let db2 = db.clone();
    let ids = watchdog(Duration::from_secs(120), move || {
        let input = lines(
            &(0..10)
                .map(|i| rec(&format!("race{i}"), "r"))
                .collect::<Vec<_>>(),
        );
        let children: Vec<Child> = (0..racers)
            .map(|_| spawn_insert(&db2, &["insert", "--journal"], input.clone()))
            .collect();
        children
            .into_iter()
            .map(|c| {
                let out = c.wait_with_output().expect("wait");
                assert!(out.status.success(), "{}", stderr(&out));
                json_lines(&out.stdout)
                    .iter()
                    .map(|r| r["db"]["id"].as_i64().expect("id"))
                    .collect::<Vec<i64>>()
            })
            .collect::<Vec<_>>()
    });
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "racers got different ids: {ids:?}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM learnings WHERE title = 'r'"),
        10
    );
}

#[test]
fn a_generated_key_comes_first_and_keys_sort_by_time() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let out = run_with_input(
        db_cmd(&db, &["insert", "--journal"]),
        &lines(&[json!({"a":1}), json!({"key":null,"b":2}), failure("t")]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    let keys: Vec<String> = recs
        .iter()
        .map(|r| r["key"].as_str().expect("key").to_string())
        .collect();
    for (r, k) in recs.iter().zip(&keys) {
        assert_eq!(r.keys().next().map(String::as_str), Some("key"));
        assert_eq!(k.len(), 26);
        assert!(
            k.chars()
                .all(|c| "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)),
            "{k}"
        );
    }
    assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    for bad in [json!({"key": 5}), json!({"key": ""})] {
        let out = run_with_input(db_cmd(&db, &["insert", "--journal"]), &lines(&[bad]));
        assert_eq!(out.status.code(), Some(65));
    }
}

#[test]
fn pending_lists_exactly_the_unfinished_records_and_none_after_replay_and_done() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let input: Vec<Value> = (0..6)
        .map(|i| {
            let mut r = failure(&format!("p{i}"));
            r["kind"] = json!("failure");
            r
        })
        .collect();
    let out = run_with_input(db_cmd(&db, &["insert", "--journal"]), &lines(&input));
    assert!(out.status.success(), "{}", stderr(&out));
    let inserted = json_lines(&out.stdout);
    // The pipeline got through for records 0, 2, 3 only, then was interrupted.
    let finished: Vec<Value> = [0, 2, 3]
        .iter()
        .map(|&i| Value::Object(inserted[i].clone()))
        .collect();
    let out = run_with_input(db_cmd(&db, &["done"]), &lines(&finished));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out.stdout).len(), 3, "done passes records on");
    let out = db_cmd(&db, &["pending"]).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let pending = json_lines(&out.stdout);
    let want: Vec<Map<String, Value>> = [1, 4, 5].iter().map(|&i| inserted[i].clone()).collect();
    assert_eq!(
        pending, want,
        "pending must give the records as passed on, ids included"
    );
    // Too young for --older-than 1h; all of them for 0s.
    let out = db_cmd(&db, &["pending", "--older-than", "1h"])
        .output()
        .expect("run");
    assert!(out.status.success() && out.stdout.is_empty());
    // Replay: pending | (the rest of the pipeline) | done, then nothing is pending.
    let out = crate::util::pipeline(
        vec![
            db_cmd(&db, &["pending", "--older-than", "0s"]),
            db_cmd(&db, &["done"]),
        ],
        b"",
    );
    assert!(out.iter().all(|o| o.status.success()));
    assert_eq!(json_lines(&out[1].stdout).len(), 3);
    let out = db_cmd(&db, &["pending"]).output().expect("run");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Replaying an already finished record again inserts nothing.
    let out = run_with_input(
        db_cmd(&db, &["insert", "--journal"]),
        &lines(&[Value::Object(inserted[1].clone())]),
    );
    assert_eq!(
        json_lines(&out.stdout)[0]["db"]["id"],
        inserted[1]["db"]["id"]
    );
    assert_eq!(count(&db, "SELECT count(*) FROM learnings"), 6);
    // A record carrying an error is not marked done: it stays pending for the next replay.
    let mut failed = inserted[1].clone();
    failed.insert("key".into(), json!("unfinished"));
    let out = run_with_input(
        db_cmd(&db, &["insert", "--journal"]),
        &lines(&[Value::Object(failed.clone())]),
    );
    assert!(out.status.success());
    failed.insert(
        "error".into(),
        json!({"tool":"elf-write","code":74,"message":"disk full"}),
    );
    let out = run_with_input(db_cmd(&db, &["done"]), &lines(&[Value::Object(failed)]));
    assert!(out.status.success());
    let out = db_cmd(&db, &["pending"]).output().expect("run");
    assert_eq!(json_lines(&out.stdout).len(), 1);
}

#[test]
fn kill_9_in_the_middle_of_batches_keeps_each_transaction_whole() {
    let rounds = scale(3, 12);
    let mut cut = 0;
    for round in 0..rounds {
        let dir = TempDir::new();
        let db = new_db(&dir);
        let n = 20_000;
        // Each record inserts two rows; the journal holds a third copy of its number.
        let mut input = Vec::new();
        for i in 0..n {
            let r = json!({"key": format!("k{i:06}"), "db": [
                {"table":"pairs","values":{"seq":i,"side":"l"}},
                {"table":"pairs","values":{"seq":i,"side":"r"}}]});
            input.extend_from_slice(r.to_string().as_bytes());
            input.push(b'\n');
        }
        let mut c = db_cmd(&db, &["insert", "--journal", "--batch", "5000"]);
        c.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut child = c.spawn().expect("spawn");
        let mut stdin = child.stdin.take().expect("stdin");
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
        // Handshake: the first batch has been committed and passed on; then kill at a moment
        // that varies by round.
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        out.read_line(&mut first).expect("first line");
        assert!(!first.is_empty(), "no output before the kill");
        std::thread::sleep(Duration::from_millis(37 * (round as u64 % 5)));
        child.kill().expect("kill -9");
        let _ = child.wait();
        let mut passed = 1;
        let mut line = String::new();
        while out.read_line(&mut line).map(|n| n > 0).unwrap_or(false) {
            passed += 1;
            line.clear();
        }
        let c = open(&db);
        let seqs: Vec<(i64, i64)> = c
            .prepare("SELECT seq, count(*) FROM pairs GROUP BY seq ORDER BY seq")
            .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
            .expect("pairs");
        let k = seqs.len() as i64;
        assert!(
            k >= passed,
            "round {round}: {passed} passed on but only {k} committed"
        );
        for (i, (seq, both)) in seqs.iter().enumerate() {
            assert_eq!(
                (*seq, *both),
                (i as i64, 2),
                "round {round}: a record was cut in half or a gap"
            );
        }
        assert_eq!(
            count(&db, "SELECT count(*) FROM elf_journal"),
            k,
            "round {round}"
        );
        if k < n {
            cut += 1;
        }
        let check = db_cmd(&db, &["check"]).output().expect("check");
        assert_eq!(check.status.code(), Some(0));
    }
    assert!(
        cut > 0,
        "every round finished before the kill: nothing was tested"
    );
}

#[test]
fn a_record_is_passed_on_only_after_its_transaction_committed() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let mut c = db_cmd(&db, &["insert"]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let reader = open(&db);
    // Live: one record at a time gets through at once, visible to another connection.
    for i in 0..5 {
        stdin
            .write_all(&lines(&[failure(&format!("live{i}"))]))
            .expect("write");
        stdin.flush().expect("flush");
        let mut line = String::new();
        out.read_line(&mut line).expect("read");
        let rec: Value = serde_json::from_str(&line).expect("json");
        let id = rec["db"]["id"].as_i64().expect("id");
        let n: i64 = reader
            .query_row("SELECT count(*) FROM learnings WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .expect("q");
        assert_eq!(n, 1, "record {i} was passed on before it was committed");
    }
    // A burst: every record passed on is already visible.
    let burst: Vec<Value> = (0..500).map(|i| failure(&format!("burst{i}"))).collect();
    stdin.write_all(&lines(&burst)).expect("write");
    drop(stdin);
    let mut line = String::new();
    let mut seen = 0;
    while out.read_line(&mut line).expect("read") > 0 {
        let rec: Value = serde_json::from_str(&line).expect("json");
        let id = rec["db"]["id"].as_i64().expect("id");
        let n: i64 = reader
            .query_row("SELECT count(*) FROM learnings WHERE id = ?1", [id], |r| {
                r.get(0)
            })
            .expect("q");
        assert_eq!(n, 1);
        seen += 1;
        line.clear();
    }
    assert_eq!(seen, 500);
    assert!(child.wait().expect("wait").success());
}

#[test]
fn exec_runs_sql_records_with_bound_params_and_reports_changes_ids_rows() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let input = lines(&[
        json!({"db":{"sql":"INSERT INTO pairs(seq, side) VALUES (:seq, @side)","params":{"seq":1,":side":"l"}}}),
        json!({"db":{"sql":"INSERT INTO pairs(seq, side) VALUES (?, ?) RETURNING id, side","params":[2,"r"]}}),
        json!({"db":[{"sql":"UPDATE pairs SET side = $s WHERE seq > 0","params":{"s":"x"}},{"sql":"DELETE FROM pairs WHERE seq = 99"}]}),
        json!({"db":{"sql":"SELECT count(*) AS n, 1.5 AS r, x'00ff' AS b, NULL AS z FROM pairs"}}),
    ]);
    let out = run_with_input(db_cmd(&db, &["exec"]), &input);
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs[0]["db"]["changes"], json!(1));
    assert_eq!(recs[0]["db"]["id"], json!(1));
    assert_eq!(recs[1]["db"]["rows"], json!([{"id":2,"side":"r"}]));
    assert_eq!(recs[1]["db"]["id"], json!(2));
    assert_eq!(recs[2]["db"][0]["changes"], json!(2));
    assert!(recs[2]["db"][0].get("id").is_none());
    assert_eq!(recs[2]["db"][1]["changes"], json!(0));
    assert_eq!(
        recs[3]["db"]["rows"],
        json!([{"n":2,"r":1.5,"b":"00FF","z":null}])
    );
    assert_eq!(recs[3]["db"]["changes"], json!(0));
    for bad in [
        json!({"db":{"sql":"UPDATE pairs SET side = :s"}}),
        json!({"db":{"sql":"UPDATE pairs SET side = :s","params":{}}}),
        json!({"db":{"sql":"UPDATE pairs SET side = ?","params":[1,2]}}),
        json!({"db":{"sql":"UPDATE nope SET x = 1"}}),
        json!({"db":{"sql":"  "}}),
        json!({"db":{"table":"pairs","values":{}}}),
    ] {
        let out = run_with_input(db_cmd(&db, &["exec"]), &lines(std::slice::from_ref(&bad)));
        assert_eq!(out.status.code(), Some(65), "{bad}");
    }
}

#[test]
fn exec_file_runs_in_one_transaction_and_names_the_failing_line() {
    let dir = TempDir::new();
    let db = dir.join("new.db");
    let file = dir.join("migration.sql");
    std::fs::write(&file, "-- a migration\nCREATE TABLE a(x);\nCREATE TRIGGER t AFTER INSERT ON a BEGIN\n  SELECT ';';\nEND;\n\nINSERT INTO a VALUES (1);\nINSERT INTO nope VALUES (2);\n").expect("write");
    let out = db_cmd(&db, &["exec", "--file"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(65));
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with("elf-db: line 8: ") && line.contains("no such table: nope"),
        "{line}"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM sqlite_master WHERE name = 'a'"),
        0,
        "half a migration was kept"
    );
    std::fs::write(&file, "CREATE TABLE a(x);\nBEGIN;\nCOMMIT;\n").expect("write");
    let out = db_cmd(&db, &["exec", "--file"])
        .arg(&file)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(65));
    assert!(one_line(&out.stderr).starts_with("elf-db: line 2: "));
    let out = db_cmd(&db, &["exec", "--file"])
        .arg(dir.join("missing.sql"))
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(66));
}

#[test]
fn query_streams_typed_rows_and_never_writes() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let input = lines(&[
        json!({"db":{"table":"learnings","values":{"type":"failure","filepath":"a","title":"t\"1\n","severity":2.5}}}),
        json!({"db":{"table":"learnings","values":{"type":"success","filepath":"b","title":"t2"}}}),
    ]);
    assert!(
        run_with_input(db_cmd(&db, &["insert"]), &input)
            .status
            .success()
    );
    let c = open(&db);
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    drop(c);
    let before = std::fs::read(&db).expect("read db");
    let out = db_cmd(&db, &["query", "SELECT id, title, severity, x'0a' AS b, NULL AS n, type AS t, type AS t FROM learnings WHERE type = :ty OR id > :min ORDER BY id", "-p", "ty=failure", "--param", ":min=1"])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"id\":1,\"title\":\"t\\\"1\\n\",\"severity\":2.5,\"b\":\"0A\",\"n\":null,\"t\":\"failure\",\"t:2\":\"failure\"}\n\
         {\"id\":2,\"title\":\"t2\",\"severity\":3,\"b\":\"0A\",\"n\":null,\"t\":\"success\",\"t:2\":\"success\"}\n"
    );
    for args in [
        vec!["query", "SELECT * FROM learnings WHERE id = :id"],
        vec!["query", "SELECT 1", "-p", "x=1"],
        vec!["query", "INSERT INTO pairs(seq, side) VALUES (1, 'x')"],
        vec!["query", "CREATE TABLE q(x)"],
        vec!["query", "ANALYZE"],
        vec!["query", "SELEC 1"],
        vec!["query"],
    ] {
        let out = db_cmd(&db, &args).output().expect("run");
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(
        std::fs::read(&db).expect("read db"),
        before,
        "a query wrote to the database"
    );
    // Constant memory: a large result is streamed (checked in the benchmark); here, a broken
    // pipe stops it with 141.
    let mut c = db_cmd(
        &db,
        &[
            "query",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 5000000) SELECT i FROM n",
        ],
    );
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = c.spawn().expect("spawn");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("read");
    assert_eq!(line, "{\"i\":1}\n");
    drop(out);
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(141));
}

#[test]
fn check_says_ok_damaged_or_busy_and_never_mistakes_busy_for_corruption() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let out = db_cmd(&db, &["check"]).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        json_lines(&out.stdout),
        vec![json!({"integrity":"ok"}).as_object().cloned().expect("obj")]
    );
    // A rollback-journal database locked exclusively: busy (75), not corrupt.
    let plain = dir.join("plain.db");
    Connection::open(&plain)
        .expect("open")
        .execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1);")
        .expect("schema");
    let mut holder = Command::new("sqlite3")
        .arg(&plain)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("sqlite3");
    let mut stdin = holder.stdin.take().expect("stdin");
    stdin
        .write_all(b".timeout 20000\nBEGIN EXCLUSIVE;\nINSERT INTO t VALUES (2);\n")
        .expect("write");
    stdin.flush().expect("flush");
    wait_for(Duration::from_secs(20), "the exclusive lock", || {
        let c = Connection::open(&plain).expect("open");
        c.query_row("SELECT count(*) FROM t", [], |r| r.get::<_, i64>(0))
            .is_err()
    });
    let out = db_cmd(&plain, &["check", "--busy-timeout", "200ms"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(out.stdout.is_empty());
    let _ = stdin.write_all(b"COMMIT;\n");
    drop(stdin);
    assert!(holder.wait().expect("wait").success());
    assert_eq!(
        db_cmd(&plain, &["check"])
            .output()
            .expect("run")
            .status
            .code(),
        Some(0)
    );
    // Not a database: a definite "no".
    let junk = dir.join("junk.db");
    std::fs::write(&junk, vec![b'x'; 4096]).expect("write");
    let out = db_cmd(&junk, &["check"]).output().expect("run");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        json_lines(&out.stdout)[0]["integrity"]
            .as_str()
            .unwrap_or("")
            .contains("not a database")
    );
    let out = run_with_input(db_cmd(&junk, &["insert"]), &lines(&[failure("x")]));
    assert_eq!(out.status.code(), Some(74));
}

#[test]
fn checkpoint_leaves_the_main_file_complete_and_the_wal_empty() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    // Another connection stays open, so the last writer to close does not checkpoint.
    let other = open(&db);
    let _: i64 = other
        .query_row("SELECT count(*) FROM learnings", [], |r| r.get(0))
        .expect("read");
    let recs: Vec<Value> = (0..200).map(|i| failure(&format!("c{i}"))).collect();
    assert!(
        run_with_input(db_cmd(&db, &["insert"]), &lines(&recs))
            .status
            .success()
    );
    let wal = dir.join("index.db-wal");
    assert!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > 0);
    let out = db_cmd(&db, &["checkpoint"]).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let rec = &json_lines(&out.stdout)[0];
    assert!(rec["log"].as_i64().expect("log") > 0);
    assert_eq!(rec["log"], rec["checkpointed"]);
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
    // The main file alone holds every row.
    let copy = dir.join("copy.db");
    std::fs::copy(&db, &copy).expect("copy");
    assert_eq!(count(&copy, "SELECT count(*) FROM learnings"), 200);
    // A reader in the middle of a transaction keeps the WAL in use: 75, the WAL not emptied.
    assert!(
        run_with_input(db_cmd(&db, &["insert"]), &lines(&recs))
            .status
            .success()
    );
    other
        .execute_batch("BEGIN; SELECT count(*) FROM learnings;")
        .expect("read transaction");
    let out = db_cmd(&db, &["checkpoint", "--busy-timeout", "200ms"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(75), "{}", stderr(&out));
    assert!(one_line(&out.stderr).contains("checkpoint"));
    other.execute_batch("COMMIT").expect("end read");
    assert!(
        db_cmd(&db, &["checkpoint"])
            .output()
            .expect("run")
            .status
            .success()
    );
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
}

#[test]
fn usage_errors_are_64_and_a_missing_database_is_66() {
    let dir = TempDir::new();
    let db = dir.join("index.db");
    let cases: &[&[&str]] = &[
        &["--db", "x.db"],
        &["frobnicate", "--db", "x.db"],
        &["insert"],
        &["insert", "--db", "x.db", "extra"],
        &["query", "--db", "x.db", "SELECT 1", "SELECT 2"],
        &["query", "--db", "x.db", "SELECT 1", "--journal"],
        &["pending", "--db", "x.db", "--batch", "5"],
        &["check", "--db", "x.db", "--param", "a=1"],
        &["insert", "--db", "x.db", "--older-than", "1h"],
        &["insert", "--db", "x.db", "--journal", "--table", "t"],
        &["exec", "--db", "x.db", "--file", "s.sql", "--batch", "2"],
        &["insert", "--db", "x.db", "--batch", "0"],
        &["insert", "--db", "x.db", "--synchronous", "off"],
        &["insert", "--db", "x.db", "--busy-timeout", "soon"],
        &["pending", "--db", "x.db", "--older-than", "1w"],
        &["query", "--db", "x.db", "SELECT 1", "-p", "novalue"],
    ];
    for args in cases {
        let out = elf_db().args(*args).output().expect("run");
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(one_line(&out.stderr).starts_with("elf-db: "));
    }
    for args in [
        &["insert"][..],
        &["pending"],
        &["query", "SELECT 1"],
        &["check"],
        &["checkpoint"],
        &["done"],
    ] {
        let out = run_with_input(db_cmd(&db, args), b"");
        assert_eq!(out.status.code(), Some(66), "{args:?}: {}", stderr(&out));
        assert!(!db.exists(), "{args:?} created the database");
    }
    // ELF_DB stands in for --db.
    let db = new_db(&dir);
    let mut c = elf_db();
    c.args(["query", "SELECT count(*) AS n FROM learnings"])
        .env("ELF_DB", &db);
    let out = c.output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out.stdout)[0]["n"], json!(0));
}

#[test]
fn max_line_and_synchronous_normal() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let long = json!({"db":{"table":"learnings","values":{"type":"failure","filepath":"f","title":"x".repeat(500)}}});
    let out = run_with_input(
        db_cmd(
            &db,
            &["insert", "--max-line", "200", "--synchronous", "normal"],
        ),
        &lines(&[failure("short"), long]),
    );
    assert_eq!(out.status.code(), Some(65));
    assert!(one_line(&out.stderr).contains("line 2: line is longer than the limit of 200 bytes"));
    assert_eq!(json_lines(&out.stdout).len(), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM learnings"), 1);
}

#[test]
fn records_passed_on_unchanged_keep_their_exact_text() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    // done, a record without db, a record with an error: byte for byte; --table appends db.
    let input = "{\"key\":\"k\",  \"x\":1.50,\"u\":\"\\u00e9\"}\n\n\n \t{ \"note\" : [1, 2] } \r\n{\"error\":{\"tool\":\"t\"},\"a\":1e2}\n";
    let out = run_with_input(db_cmd(&db, &["done"]), input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"key\":\"k\",  \"x\":1.50,\"u\":\"\\u00e9\"}\n{ \"note\" : [1, 2] }\n{\"error\":{\"tool\":\"t\"},\"a\":1e2}\n"
    );
    let input = "{ \"type\":\"f\", \"filepath\":\"p\", \"title\":\"t\\u00e9\" }\n";
    let out = run_with_input(
        db_cmd(&db, &["insert", "--table", "learnings"]),
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{ \"type\":\"f\", \"filepath\":\"p\", \"title\":\"t\\u00e9\" ,\"db\":{\"table\":\"learnings\",\"id\":1}}\n"
    );
    // More blank lines before a record than the line limit: blank lines do not count.
    let mut input = vec![b'\n'; 300];
    input.extend_from_slice(b"{\"type\":\"f\",\"filepath\":\"p\",\"title\":\"t\"}\n");
    let out = run_with_input(
        db_cmd(&db, &["insert", "-t", "learnings", "--max-line", "100"]),
        &input,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out.stdout)[0]["db"]["id"], json!(2));
}

/// The text `insert --table TABLE` passes a row on as: the row's text with `db` added last.
fn with_id(row: &str, table: &str, id: i64) -> String {
    let row = row.trim();
    let body = &row[..row.len() - 1];
    let comma = if body.trim_end() == "{" { "" } else { "," };
    format!("{body}{comma}\"db\":{{\"table\":\"{table}\",\"id\":{id}}}}}")
}

/// Every row of `kinds`, each value as SQLite quotes it, with its type.
fn dump_kinds(db: &Path) -> Vec<Vec<String>> {
    let c = open(db);
    let mut st = c
        .prepare(
            "SELECT id, quote(a), typeof(a), quote(b), typeof(b), quote(c), typeof(c), \
             quote(d), typeof(d), quote(e), typeof(e) FROM kinds ORDER BY id",
        )
        .expect("prepare");
    st.query_map([], |r| {
        (0..11)
            .map(|i| {
                r.get::<_, rusqlite::types::Value>(i)
                    .map(|v| format!("{v:?}"))
            })
            .collect()
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

#[test]
fn table_rows_are_stored_exactly_as_the_record_form_stores_them() {
    let dir = TempDir::new();
    let schema = dir.join("kinds.sql");
    std::fs::write(
        &schema,
        "CREATE TABLE kinds (id INTEGER PRIMARY KEY, a, b, c INTEGER, d REAL, e TEXT);",
    )
    .expect("write schema");
    let dbs: Vec<PathBuf> = ["table.db", "records.db"]
        .iter()
        .map(|name| {
            let db = dir.join(name);
            let out = db_cmd(&db, &["exec", "--file"])
                .arg(&schema)
                .output()
                .expect("run");
            assert!(out.status.success(), "{}", stderr(&out));
            db
        })
        .collect();
    // Rows the lean path reads (plain values, escapes, odd spacing, any key order and case)
    // and rows it leaves to the general path (nested values, duplicate keys, "db" escaped).
    let rows = [
        r#"{"a":"plain","b":"","c":"12","d":"1.5","e":12}"#,
        r#"{"a":"q\"b\\s\/n\nt\tu\u00e9 \ud83d\ude00","b":"é ü 😀","c":"x","d":"y","e":"z"}"#,
        r#"{"a":"123456789012345678901234567890","b":"18446744073709551615","c":9223372036854775807,"d":-9223372036854775808,"e":9223372036854775807}"#,
        r#"{"a":1.5,"b":-0.0,"c":1e2,"d":1E-3,"e":2.50}"#,
        r#"{"a":0.1,"b":1.7976931348623157e308,"c":5e-324,"d":-12,"e":0}"#,
        r#"{"a":null,"b":true,"c":false,"d":null,"e":true}"#,
        r#"  { "E" : "upper" , "A":1 ,"c" :-7 }  "#,
        r#"{"\u0061":"escaped key","b":1}"#,
        r#"{}"#,
        r#"{ }"#,
        r#"{"a":{"x":[1,2.50,{"y":null}],"u":"\u00e9"},"b":[],"c":[1e2,"s"],"d":{}}"#,
        r#"{"a":1,"b":2,"a":3}"#,
        r#"{"b":"last","a":"first"}"#,
        r#"{"a":"plain again","b":"","c":"12","d":"1.5","e":12}"#,
    ];
    let mut table_input = String::new();
    let mut record_input = String::new();
    for row in rows {
        table_input.push_str(row);
        table_input.push('\n');
        record_input.push_str(&format!(
            "{{\"db\":{{\"table\":\"kinds\",\"values\":{}}}}}\n",
            row.trim()
        ));
    }
    let out = run_with_input(
        db_cmd(&dbs[0], &["insert", "--table", "kinds"]),
        table_input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let got: Vec<&str> = text.lines().collect();
    let want: Vec<String> = rows
        .iter()
        .zip(1..)
        .map(|(row, id)| with_id(row, "kinds", id))
        .collect();
    assert_eq!(got, want);
    let out = run_with_input(db_cmd(&dbs[1], &["insert"]), record_input.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let ids: Vec<Value> = json_lines(&out.stdout)
        .iter()
        .map(|r| r["db"]["id"].clone())
        .collect();
    assert_eq!(ids, (1..=rows.len()).map(|i| json!(i)).collect::<Vec<_>>());
    let stored = dump_kinds(&dbs[0]);
    assert_eq!(stored, dump_kinds(&dbs[1]));
    // And what that is, for a few of them.
    let row = |id: usize| stored[id - 1].join(" ");
    assert_eq!(
        row(2),
        "Integer(2) Text(\"'q\\\"b\\\\s/n\\nt\\tué 😀'\") Text(\"text\") \
         Text(\"'é ü 😀'\") Text(\"text\") Text(\"'x'\") Text(\"text\") Text(\"'y'\") \
         Text(\"text\") Text(\"'z'\") Text(\"text\")"
    );
    assert_eq!(
        stored[2][1..5].join(" "),
        "Text(\"'123456789012345678901234567890'\") Text(\"text\") \
         Text(\"'18446744073709551615'\") Text(\"text\")"
    );
    assert_eq!(
        stored[2][5..7].join(" "),
        "Text(\"9223372036854775807\") Text(\"integer\")",
        "the integers of 64 bits are exact"
    );
    assert_eq!(stored[2][7], "Text(\"-9.2233720368547758e+18\")");
    assert_eq!(stored[3][1], "Text(\"1.5\")");
    assert_eq!(
        stored[3][5..7].join(" "),
        "Text(\"100\") Text(\"integer\")",
        "1e2 is REAL, which an INTEGER column stores as 100"
    );
    assert_eq!(stored[5][3..5].join(" "), "Text(\"1\") Text(\"integer\")");
    assert_eq!(stored[6][1..3].join(" "), "Text(\"1\") Text(\"integer\")");
    assert_eq!(stored[6][9], "Text(\"'upper'\")");
    assert_eq!(stored[7][1], "Text(\"'escaped key'\")");
    assert_eq!(stored[8][2], "Text(\"null\")");
    assert_eq!(
        stored[10][1],
        "Text(\"'{\\\"x\\\":[1,2.50,{\\\"y\\\":null}],\\\"u\\\":\\\"é\\\"}'\")"
    );
    assert_eq!(
        stored[11][1..4].join(" "),
        "Text(\"3\") Text(\"integer\") Text(\"2\")"
    );
}

#[test]
fn bad_table_rows_stop_with_65_naming_the_line_or_become_error_records() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let good = |title: &str| format!(r#"{{"type":"failure","filepath":"f","title":"{title}"}}"#);
    let cases: &[(&str, &str)] = &[
        (
            r#"{"titel":"x","type":"failure","filepath":"f"}"#,
            "table learnings has no column named 'titel' (columns: id, type, filepath",
        ),
        (
            r#"{"type":null,"filepath":"f","title":"t"}"#,
            "NOT NULL constraint failed: learnings.type",
        ),
        (
            r#"{"filepath":"f","title":"t"}"#,
            "NOT NULL constraint failed: learnings.type",
        ),
        (
            r#"{"type":"x","Type":"y","filepath":"f","title":"t"}"#,
            "column type is given twice",
        ),
        (
            r#"{"type":"x","filepath":"f","title":"t","severity":1e999}"#,
            "column severity: number 1e+999 is out of range for a REAL: too large, it would be infinite",
        ),
        (
            r#"{"type":"x","filepath":"f","title":"t","severity":-1.5e-400}"#,
            "column severity: number -1.5e-400 is out of range for a REAL: too small, it would be stored as 0",
        ),
        (
            r#"{"type":"x","filepath":"f","title":"t","severity":-9223372036854775809}"#,
            "column severity: integer -9223372036854775809 is out of range for SQLite's 64-bit INTEGER",
        ),
        (
            r#"{"type":"x","filepath":"f","title":"t",}"#,
            "invalid JSON",
        ),
        (
            r#"{"type":"x","filepath":"f","title":"t"} x"#,
            "invalid JSON",
        ),
        // A form feed is white space to Rust's trim_ascii, not to JSON.
        (
            "{\"type\":\"x\",\"filepath\":\"f\",\"title\":\"t\"}\u{c}",
            "invalid JSON",
        ),
        (
            "\u{c}{\"type\":\"x\",\"filepath\":\"f\",\"title\":\"t\"}",
            "invalid JSON",
        ),
        (r#"["type"]"#, "expected a JSON object, found an array"),
        (
            r#"{"type":"x","filepath":"f","title":"t","db":{}}"#,
            "the record has a key \"db\"",
        ),
    ];
    for (bad, needle) in cases {
        let input = format!(
            "{}\n{}\n{bad}\n{}\n",
            good("ok1"),
            good("ok2"),
            good("after")
        );
        let before = count(&db, "SELECT count(*) FROM learnings");
        let out = run_with_input(
            db_cmd(&db, &["insert", "-t", "learnings"]),
            input.as_bytes(),
        );
        assert_eq!(out.status.code(), Some(65), "{bad}: {}", stderr(&out));
        let line = one_line(&out.stderr);
        assert!(line.starts_with("elf-db: line 3: "), "{line}");
        assert!(line.contains(needle), "{bad}: {line}");
        let recs = json_lines(&out.stdout);
        let ids: Vec<i64> = recs
            .iter()
            .map(|r| r["db"]["id"].as_i64().unwrap_or(0))
            .collect();
        assert_eq!(ids, vec![before + 1, before + 2], "{bad}");
        assert_eq!(count(&db, "SELECT count(*) FROM learnings"), before + 2);
        assert_eq!(
            count(&db, "SELECT max(id) FROM learnings"),
            before + 2,
            "{bad}"
        );
    }
    // --keep-going: each bad row is passed on with an error naming its line, nothing of it
    // written; the good rows around it get exactly their own ids.
    let before = count(&db, "SELECT count(*) FROM learnings");
    let mut input = String::new();
    for (i, (bad, _)) in cases.iter().enumerate() {
        input.push_str(&format!("{}\n{bad}\n", good(&format!("kept{i}"))));
    }
    let out = run_with_input(
        db_cmd(&db, &["insert", "-t", "learnings", "--keep-going"]),
        input.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 2 * cases.len());
    for (i, (bad, needle)) in cases.iter().enumerate() {
        let ok = &recs[2 * i];
        assert_eq!(ok["title"], json!(format!("kept{i}")));
        assert_eq!(ok["db"]["id"], json!(before + 1 + i as i64));
        let e = &recs[2 * i + 1]["error"];
        assert_eq!(e["line"], json!(2 * i + 2), "{bad}");
        assert_eq!(e["code"], json!(65), "{bad}");
        assert!(
            e["message"].as_str().unwrap_or("").contains(needle),
            "{bad}: {e}"
        );
        let db_id = recs[2 * i + 1].get("db").and_then(|d| d.get("id"));
        assert!(db_id.is_none(), "{bad}");
    }
    // A bad row that is an object keeps its keys.
    assert_eq!(recs[1]["titel"], json!("x"));
    assert_eq!(
        count(&db, "SELECT count(*) FROM learnings"),
        before + cases.len() as i64
    );
}

/// Runs `elf-db ARGS` on `input`, asserts success, and returns its records.
fn run_ok(db: &Path, args: &[&str], input: &[Value]) -> Vec<Map<String, Value>> {
    let out = run_with_input(db_cmd(db, args), &lines(input));
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    json_lines(&out.stdout)
}

#[test]
fn key_names_where_the_statements_are_for_insert_exec_and_the_journal() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    // insert --key row: the statements and their results are under "row"; "db" is data.
    let recs = run_ok(
        &db,
        &["insert", "--key", "row"],
        &[
            json!({"db":{"note":"not mine"},"row":{"table":"pairs","values":{"seq":1,"side":"l"}}}),
            json!({"db":{"table":"pairs","values":{"seq":9,"side":"x"}}}),
        ],
    );
    assert_eq!(
        Value::Object(recs[0].clone()),
        json!({"db":{"note":"not mine"},"row":{"table":"pairs","values":{"seq":1,"side":"l"},"id":1}})
    );
    assert_eq!(
        Value::Object(recs[1].clone()),
        json!({"db":{"table":"pairs","values":{"seq":9,"side":"x"}}}),
        "a record without the key is passed on untouched"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM pairs"), 1);
    // exec --key fix: the record's db (an insert's results) stays as it is.
    let out = run_with_input(
        db_cmd(&db, &["exec", "--key", "fix"]),
        concat!(
            r#"{"db":{"table":"pairs","values":{"seq":1,"side":"l"},"id":1},"fix":[{"sql":"UPDATE pairs SET side = :s WHERE id = :id","params":{"s":"r","id":1}},{"sql":"SELECT side FROM pairs WHERE id = 1"}]}"#,
            "\n",
            r#"{"db":{"sql":"DELETE FROM pairs"}}"#,
            "\n"
        )
        .as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(
        got[0],
        r#"{"db":{"table":"pairs","values":{"seq":1,"side":"l"},"id":1},"fix":[{"sql":"UPDATE pairs SET side = :s WHERE id = :id","params":{"s":"r","id":1},"changes":1},{"sql":"SELECT side FROM pairs WHERE id = 1","changes":0,"rows":[{"side":"r"}]}]}"#
    );
    assert_eq!(got[1], r#"{"db":{"sql":"DELETE FROM pairs"}}"#);
    assert_eq!(count(&db, "SELECT count(*) FROM pairs"), 1);
    // Errors name the key.
    let out = run_with_input(
        db_cmd(&db, &["exec", "--key", "fix"]),
        &lines(&[json!({"fix":[{"sql":"SELECT 1"},{"sql":"UPDATE nope SET x = 1"}]})]),
    );
    assert_eq!(out.status.code(), Some(65));
    let line = one_line(&out.stderr);
    assert!(
        line.starts_with("elf-db: line 1: fix[1]: no such table: nope"),
        "{line}"
    );
    let out = run_with_input(
        db_cmd(&db, &["exec", "--key", "fix"]),
        &lines(&[json!({"fix":"DELETE FROM pairs"})]),
    );
    assert!(one_line(&out.stderr).contains("fix must be an object or an array of objects"));
    // insert --journal --key row: journaled under "key", the ids are row's results, and a
    // replay gets them back.
    let rec =
        json!({"key":"k1","row":{"table":"pairs","values":{"seq":2,"side":"l"}},"db":{"x":1}});
    let first = run_ok(
        &db,
        &["insert", "--journal", "--key", "row"],
        std::slice::from_ref(&rec),
    );
    let id = first[0]["row"]["id"].as_i64().expect("id");
    assert_eq!(first[0]["db"], json!({"x":1}));
    let again = run_ok(&db, &["insert", "--journal", "--key", "row"], &[rec]);
    assert_eq!(again, first);
    let ids: String = open(&db)
        .query_row("SELECT ids FROM elf_journal WHERE key = 'k1'", [], |r| {
            r.get(0)
        })
        .expect("journal row");
    assert_eq!(
        serde_json::from_str::<Value>(&ids).expect("ids"),
        json!([{ "id": id }])
    );
    let pending = run_ok(&db, &["pending"], &[]);
    assert_eq!(pending, first);
    assert_eq!(count(&db, "SELECT count(*) FROM pairs WHERE seq = 2"), 1);
    // Refused: an empty name, the record's own keys, --key with --table or exec --file.
    for args in [
        &["insert", "--key", ""][..],
        &["insert", "--key", "key"],
        &["exec", "--key", "error"],
        &["insert", "--key", "row", "--table", "pairs"],
        &["exec", "--key", "fix", "--file", "x.sql"],
        &["pending", "--key", "fix"],
    ] {
        let out = run_with_input(db_cmd(&db, args), b"");
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        one_line(&out.stderr);
    }
}

#[test]
fn references_in_statements_take_their_values_from_the_record_and_stay_as_written() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    // insert: a $join and a $ref in values, resolved before the row is written; the record
    // passed on keeps them as written, with the id added.
    let rec = json!({"title":"disk full","db":{"table":"learnings","values":{"type":"failure",
        "filepath":{"$join":["memory/failures/",{"$ref":"/title"},".md"]},"title":{"$ref":"/title"},
        "summary":"{\"$ref\":\"/title\"}"}}});
    let out = run_ok(&db, &["insert"], std::slice::from_ref(&rec));
    let mut want = rec.clone();
    want["db"]["id"] = json!(1);
    assert_eq!(Value::Object(out[0].clone()), want);
    let row: (String, String, String) = open(&db)
        .query_row(
            "SELECT filepath, title, summary FROM learnings WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .expect("row");
    assert_eq!(
        row,
        (
            "memory/failures/disk full.md".to_string(),
            "disk full".to_string(),
            // A string is never a reference.
            "{\"$ref\":\"/title\"}".to_string()
        )
    );
    // The tail's fix: exec --key fix binds what elf-write and the insert reported.
    let written = json!({"db":{"table":"learnings","values":{},"id":1},
        "write":{"path":"memory/failures/disk full-2.md"},
        "fix":{"sql":"UPDATE learnings SET filepath = :p WHERE id = :id",
               "params":{"p":{"$ref":"/write/path"},"id":{"$ref":"/db/id"}}}});
    let out = run_ok(
        &db,
        &["exec", "--key", "fix"],
        std::slice::from_ref(&written),
    );
    let mut want = written.clone();
    want["fix"]["changes"] = json!(1);
    assert_eq!(Value::Object(out[0].clone()), want);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM learnings WHERE filepath = 'memory/failures/disk full-2.md'"
        ),
        1
    );
    // values as a reference to several rows: all of them or none (the second one fails).
    let rows = json!({"rows":[{"seq":5,"side":"l"},{"seq":5}],
        "db":{"table":"pairs","values":{"$ref":"/rows"}}});
    let out = run_with_input(db_cmd(&db, &["insert"]), &lines(&[rows]));
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(one_line(&out.stderr).contains("NOT NULL constraint failed: pairs.side"));
    assert_eq!(count(&db, "SELECT count(*) FROM pairs WHERE seq = 5"), 0);
    let rows = json!({"rows":[{"seq":5,"side":"l"},{"seq":5,"side":"r"}],
        "db":{"table":"pairs","values":{"$ref":"/rows"}}});
    let out = run_ok(&db, &["insert"], &[rows]);
    assert_eq!(out[0]["db"]["ids"].as_array().map(Vec::len), Some(2));
    assert_eq!(out[0]["db"]["values"], json!({"$ref":"/rows"}));
    // --journal: the record is journaled with its references as written; a replay runs
    // nothing, so it resolves nothing.
    let rec = json!({"key":"j1","p":"x.md","db":{"table":"learnings",
        "values":{"type":"failure","filepath":{"$ref":"/p"},"title":"j"}}});
    let first = run_ok(&db, &["insert", "--journal"], std::slice::from_ref(&rec));
    assert_eq!(first[0]["db"]["values"]["filepath"], json!({"$ref":"/p"}));
    let mut replay = rec.clone();
    replay["p"] = json!("other.md");
    assert_eq!(
        run_ok(&db, &["insert", "--journal"], &[replay])[0]["db"],
        first[0]["db"]
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM learnings WHERE filepath = 'x.md'"
        ),
        1
    );
    assert_eq!(run_ok(&db, &["pending"], &[]), first);
    // Plain rows of insert --table are data: an object that reads like a reference is stored
    // as its JSON text.
    let out = run_ok(
        &db,
        &["insert", "--table", "pairs"],
        &[json!({"seq":6,"side":{"$ref":"/seq"}})],
    );
    assert_eq!(out[0]["db"]["table"], json!("pairs"));
    let side: String = open(&db)
        .query_row("SELECT side FROM pairs WHERE seq = 6", [], |r| r.get(0))
        .expect("row");
    assert_eq!(side, r#"{"$ref":"/seq"}"#);
}

#[test]
fn a_bad_reference_is_a_bad_record_naming_line_and_pointer_with_nothing_of_it_written() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let cases: &[(&[&str], Value, &str)] = &[
        (
            &["insert"],
            json!({"db":{"table":"pairs","values":{"seq":{"$ref":"/nope"},"side":"l"}}}),
            "db: reference \"/nope\" resolves to nothing in the record",
        ),
        (
            &["insert", "--journal"],
            json!({"key":"bad","db":[{"table":"pairs","values":{"seq":1,"side":"l"}},
                {"table":"pairs","values":{"seq":{"$ref":"/db/0/id"},"side":"r"}}]}),
            "db[1]: reference \"/db/0/id\" resolves to nothing in the record",
        ),
        (
            &["exec", "--key", "fix"],
            json!({"fix":[{"sql":"INSERT INTO pairs(seq, side) VALUES (1, 'x')"},
                {"sql":"UPDATE pairs SET side = :s","params":{"s":{"$ref":"write/path"}}}]}),
            "fix[1]: reference \"write/path\" is not a JSON Pointer",
        ),
        (
            &["exec"],
            json!({"db":{"sql":"SELECT :x","params":{"x":{"$ref":"/a","b":1}}}}),
            "\"$ref\" object must have no other key",
        ),
        (
            &["exec"],
            json!({"q":"DELETE FROM pairs","db":{"sql":{"$ref":"/q"}}}),
            "sql cannot be a reference",
        ),
        (
            &["exec"],
            json!({"s":{"sql":"DELETE FROM pairs"},"db":{"$ref":"/s"}}),
            "a statement object cannot be a reference",
        ),
    ];
    for (args, bad, needle) in cases {
        // A good record for the command: one row.
        let good = |seq: i64| match args {
            ["exec", "--key", name] => {
                json!({ *name: {"sql":"INSERT INTO pairs(seq, side) VALUES (?, 'l')","params":[seq]}})
            }
            ["exec"] => {
                json!({"db":{"sql":"INSERT INTO pairs(seq, side) VALUES (?, 'l')","params":[seq]}})
            }
            _ => json!({"db":{"table":"pairs","values":{"seq":seq,"side":"l"}}}),
        };
        let before = count(&db, "SELECT count(*) FROM pairs");
        let out = run_with_input(
            db_cmd(&db, args),
            &lines(&[good(100), bad.clone(), good(101)]),
        );
        assert_eq!(out.status.code(), Some(65), "{bad}: {}", stderr(&out));
        let line = one_line(&out.stderr);
        assert!(line.starts_with("elf-db: line 2: "), "{line}");
        assert!(line.contains(needle), "{bad}: {line}");
        assert_eq!(json_lines(&out.stdout).len(), 1, "{bad}");
        let after = count(&db, "SELECT count(*) FROM pairs");
        assert_eq!(after, before + 1, "{bad}");
        // --keep-going: an error record, the records around it done.
        let mut keep = args.to_vec();
        keep.push("--keep-going");
        let out = run_ok(&db, &keep, &[good(102), bad.clone(), good(103)]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[1]["error"]["code"], json!(65));
        assert_eq!(out[1]["error"]["line"], json!(2));
        assert!(
            out[1]["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(needle)),
            "{}",
            out[1]["error"]
        );
        assert_eq!(count(&db, "SELECT count(*) FROM pairs"), after + 2, "{bad}");
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM elf_journal WHERE key = 'bad'"),
        0
    );
}

/// The values the plain formats must carry: (SQL literal, the value as the test expects it
/// back; `None` for NULL).
const PLAIN_VALUES: &[(&str, Option<&str>)] = &[
    ("'tab\there'", Some("tab\there")),
    ("'line' || char(10) || 'feed'", Some("line\nfeed")),
    (
        "'carriage' || char(13) || 'return' || char(13)",
        Some("carriage\rreturn\r"),
    ),
    (
        "'back\\slash \\t \\n \\\\'",
        Some("back\\slash \\t \\n \\\\"),
    ),
    ("'say \"hi\", then go'", Some("say \"hi\", then go")),
    ("'a,b'", Some("a,b")),
    ("NULL", None),
    ("'\\N'", Some("\\N")),
    ("x'00ff10'", Some("00FF10")),
    ("'é ü 😀 ∑'", Some("é ü 😀 ∑")),
    ("'  spaces kept  '", Some("  spaces kept  ")),
    ("-42", Some("-42")),
    ("9223372036854775807", Some("9223372036854775807")),
    ("1.0", Some("1.0")),
    ("0.1", Some("0.1")),
    ("2.5e-7", Some("2.5e-07")),
    ("1e300", Some("1.0e+300")),
];

/// A database whose table `vals` holds [`PLAIN_VALUES`] in order, ids from 1.
fn plain_db(dir: &TempDir) -> PathBuf {
    let db = new_db(dir);
    let c = open(&db);
    c.execute_batch("CREATE TABLE vals (id INTEGER PRIMARY KEY, v)")
        .expect("table");
    for (sql, _) in PLAIN_VALUES {
        c.execute(&format!("INSERT INTO vals(v) VALUES ({sql})"), [])
            .expect("insert");
    }
    db
}

#[test]
fn query_tsv_and_csv_print_one_line_per_row_escaped() {
    let dir = TempDir::new();
    let db = plain_db(&dir);
    let sql = "SELECT id, v, id AS id FROM vals ORDER BY id";
    let out = db_cmd(
        &db,
        &["query", "--format", "tsv", "--header", "--null", "\\N", sql],
    )
    .output()
    .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let want_tsv = [
        "id\tv\tid:2",
        "1\ttab\\there\t1",
        "2\tline\\nfeed\t2",
        "3\tcarriage\\rreturn\\r\t3",
        "4\tback\\\\slash \\\\t \\\\n \\\\\\\\\t4",
        "5\tsay \"hi\", then go\t5",
        "6\ta,b\t6",
        "7\t\\N\t7",
        "8\t\\\\N\t8",
        "9\t00FF10\t9",
        "10\té ü 😀 ∑\t10",
        "11\t  spaces kept  \t11",
        "12\t-42\t12",
        "13\t9223372036854775807\t13",
        "14\t1.0\t14",
        "15\t0.1\t15",
        "16\t2.5e-07\t16",
        "17\t1.0e+300\t17",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), want_tsv);
    assert_eq!(text.matches('\n').count(), want_tsv.len());
    // csv: quoted where needed, one line per row; NULL as nothing by default.
    let out = db_cmd(&db, &["query", "--format", "csv", "--header", sql])
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let want_csv = [
        "id,v,id:2",
        "1,tab\there,1",
        "2,\"line\\nfeed\",2",
        "3,\"carriage\\rreturn\\r\",3",
        "4,\"back\\\\slash \\\\t \\\\n \\\\\\\\\",4",
        "5,\"say \"\"hi\"\", then go\",5",
        "6,\"a,b\",6",
        "7,,7",
        "8,\"\\\\N\",8",
        "9,00FF10,9",
        "10,é ü 😀 ∑,10",
        "11,  spaces kept  ,11",
        "12,-42,12",
        "13,9223372036854775807,13",
        "14,1.0,14",
        "15,0.1,15",
        "16,2.5e-07,16",
        "17,1.0e+300,17",
    ];
    assert_eq!(text.lines().collect::<Vec<_>>(), want_csv);
    assert_eq!(text.matches('\n').count(), want_csv.len());
    // Without --header, no names; the JSON output is unchanged.
    let out = db_cmd(
        &db,
        &[
            "query",
            "--format",
            "tsv",
            "SELECT v FROM vals WHERE id = 6",
        ],
    )
    .output()
    .expect("run");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a,b\n");
    let out = db_cmd(
        &db,
        &[
            "query",
            "--format",
            "json",
            "SELECT v FROM vals WHERE id IN (7, 14)",
        ],
    )
    .output()
    .expect("run");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"v\":null}\n{\"v\":1.0}\n"
    );
    for args in [
        &["query", "SELECT 1", "--header"][..],
        &["query", "SELECT 1", "--null", "-"],
        &["query", "SELECT 1", "--format", "json", "--header"],
        &["query", "SELECT 1", "--format", "xml"],
        &["query", "SELECT 1", "--format", "tsv", "--null", "a\tb"],
        &["query", "SELECT 1", "--format", "tsv", "--null", "a\nb"],
        &["query", "SELECT 1", "--format", "csv", "--null", "a,b"],
        &["query", "SELECT 1", "--format", "csv", "--null", "\"\""],
        &["insert", "--format", "tsv"],
    ] {
        let out = run_with_input(db_cmd(&db, args), b"");
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        one_line(&out.stderr);
    }
}

#[test]
fn a_bash_script_reads_tsv_rows_back_exactly() {
    let dir = TempDir::new();
    let db = plain_db(&dir);
    // The documented way: IFS=tab read -r, NULL compared before decoding, printf %b to decode
    // the escapes. Each value is written out NUL-terminated, NULL as "<NULL>".
    let script = r#"
        set -eu
        while IFS=$'\t' read -r id v; do
            if [ "$v" = '\N' ]; then
                printf '%s=<NULL>\0' "$id"
            else
                printf -v v '%b' "$v"
                printf '%s=%s\0' "$id" "$v"
            fi
        done < <("$ELF_DB_BIN" query --db "$DB" --format tsv --null '\N' 'SELECT id, v FROM vals ORDER BY id')
        # One row into three variables, as the manual shows.
        IFS=$'\t' read -r id path sha < <("$ELF_DB_BIN" query --db "$DB" --format tsv \
            "SELECT 42, 'memory/failures/a b.md', 'f00d'")
        printf '%s|%s|%s\0' "$id" "$path" "$sha"
    "#;
    let out = cmd("bash")
        .arg("-c")
        .arg(script)
        .env("ELF_DB_BIN", env!("CARGO_BIN_EXE_elf-db"))
        .env("DB", &db)
        .output()
        .expect("bash");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let got: Vec<&str> = text.split_terminator('\0').collect();
    let mut want: Vec<String> = PLAIN_VALUES
        .iter()
        .zip(1..)
        .map(|((_, v), id)| format!("{id}={}", v.unwrap_or("<NULL>")))
        .collect();
    want.push("42|memory/failures/a b.md|f00d".to_string());
    assert_eq!(got, want);
}

#[test]
fn done_key_runs_the_fix_in_the_transaction_that_marks_the_record_done() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    // Journaled with its fix, as a script would: the fix refers to what elf-write will report.
    let fix = json!({"sql":"UPDATE learnings SET filepath = :p WHERE id = :id",
                     "params":{"p":{"$ref":"/write/path"},"id":{"$ref":"/db/id"}}});
    let records: Vec<Value> = (0..3)
        .map(|i| {
            let mut r = failure(&format!("d{i}"));
            r["key"] = json!(format!("d{i}"));
            r["fix"] = fix.clone();
            r
        })
        .collect();
    let journaled = run_ok(&db, &["insert", "--journal"], &records);
    // What elf-write would have added.
    let written: Vec<Value> = journaled
        .iter()
        .map(|r| {
            let mut r = Value::Object(r.clone());
            let path = format!("memory/failures/{}-2.md", r["key"].as_str().unwrap_or(""));
            r["write"] = json!({ "path": path });
            r
        })
        .collect();
    // d0: fixed and done together; the fix keeps its references, its results added.
    let out = run_ok(&db, &["done", "--key", "fix"], &written[..1]);
    let mut want = written[0].clone();
    want["fix"]["changes"] = json!(1);
    assert_eq!(Value::Object(out[0].clone()), want);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM learnings WHERE filepath = 'memory/failures/d0-2.md'"
        ),
        1
    );
    // d1: a fix that fails (a bad reference): 65, not marked done, nothing of it written.
    let mut bad = written[1].clone();
    bad["fix"]["params"]["p"] = json!({"$ref":"/write/nope"});
    let out = run_with_input(
        db_cmd(&db, &["done", "--key", "fix"]),
        &lines(&[bad.clone()]),
    );
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(one_line(&out.stderr).contains("line 1: fix: reference \"/write/nope\""));
    // --keep-going: an error record, still not done.
    let out = run_ok(&db, &["done", "--key", "fix", "--keep-going"], &[bad]);
    assert_eq!(out[0]["error"]["code"], json!(65));
    let pending: Vec<String> = run_ok(&db, &["pending"], &[])
        .iter()
        .map(|r| r["key"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(pending, ["d1", "d2"]);
    // A fix that a constraint refuses: the same.
    let mut refused = written[1].clone();
    refused["fix"] = json!({"sql":"UPDATE learnings SET type = NULL WHERE id = :id",
                            "params":{"id":{"$ref":"/db/id"}}});
    let out = run_with_input(db_cmd(&db, &["done", "--key", "fix"]), &lines(&[refused]));
    assert_eq!(out.status.code(), Some(65));
    assert_eq!(run_ok(&db, &["pending"], &[]).len(), 2);
    // d1 with a good fix, d2 without one (just marked done), a record without a key (its fix
    // runs, nothing to mark), and d0 again (already done: its fix does not run twice).
    let mut no_fix = written[2].clone();
    no_fix.as_object_mut().map(|m| m.remove("fix"));
    let no_key = json!({"fix":{"sql":"INSERT INTO pairs(seq, side) VALUES (1, 'k')"}});
    let mut again = written[0].clone();
    again["fix"] = json!({"sql":"INSERT INTO pairs(seq, side) VALUES (0, 'again')"});
    let out = run_with_input(
        db_cmd(&db, &["done", "--key", "fix"]),
        &lines(&[written[1].clone(), no_fix.clone(), no_key, again.clone()]),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got[1], no_fix.to_string(), "passed on as it came");
    assert_eq!(
        got[3],
        again.to_string(),
        "already done: passed on as it came"
    );
    let recs = json_lines(text.as_bytes());
    assert_eq!(recs[0]["fix"]["changes"], json!(1));
    assert_eq!(recs[2]["fix"]["changes"], json!(1));
    assert_eq!(
        count(&db, "SELECT count(*) FROM pairs WHERE side = 'again'"),
        0
    );
    assert_eq!(count(&db, "SELECT count(*) FROM pairs WHERE side = 'k'"), 1);
    assert!(run_ok(&db, &["pending"], &[]).is_empty());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM learnings WHERE filepath LIKE '%-2.md'"
        ),
        2
    );
    // done without --key runs nothing.
    let mut r = json!({"key":"none"});
    r["fix"] = json!({"sql":"DELETE FROM pairs"});
    let out = run_ok(&db, &["done"], std::slice::from_ref(&r));
    assert_eq!(Value::Object(out[0].clone()), r);
    assert_eq!(count(&db, "SELECT count(*) FROM pairs"), 1);
}

#[test]
fn a_batch_of_only_bad_records_rolled_back_does_not_leave_the_next_without_its_journal() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    // One record per transaction: the first, alone and bad, is rolled back with the journal
    // table it created; the second must create it again.
    let out = run_ok(
        &db,
        &["insert", "--journal", "--keep-going", "--batch", "1"],
        &[
            json!({"db":{"table":"pairs","values":{"seq":1}}}),
            json!({"key":"good","db":{"table":"pairs","values":{"seq":2,"side":"l"}}}),
        ],
    );
    assert_eq!(out[0]["error"]["code"], json!(65));
    assert!(out[1].get("error").is_none(), "{:?}", out[1]);
    assert_eq!(count(&db, "SELECT count(*) FROM elf_journal"), 1);
}

/// `{"key":K,"error":{...}}` as the tail passes on a record that failed.
fn failed(rec: &Map<String, Value>, code: u8, message: &str) -> Value {
    let mut r = rec.clone();
    r.insert(
        "error".into(),
        json!({"tool":"elf-write","code":code,"message":message,"line":1}),
    );
    Value::Object(r)
}

/// The keys `pending ARGS` prints, in order.
fn pending_keys(db: &Path, args: &[&str]) -> Vec<String> {
    let mut all = vec!["pending"];
    all.extend_from_slice(args);
    run_ok(db, &all, &[])
        .iter()
        .map(|r| r["key"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A journal row's attempts, error and whether it is set aside, done, dropped.
fn journal_state(db: &Path, key: &str) -> (i64, Option<Value>, bool, bool, bool) {
    open(db)
        .query_row(
            "SELECT attempts, error, set_aside_at IS NOT NULL, done_at IS NOT NULL, \
             dropped_at IS NOT NULL FROM elf_journal WHERE key = ?1",
            [key],
            |r| {
                let error: Option<String> = r.get(1)?;
                Ok((
                    r.get(0)?,
                    error.map(|e| serde_json::from_str(&e).expect("error is JSON")),
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                ))
            },
        )
        .expect("journal row")
}

#[test]
fn records_that_keep_failing_for_good_are_set_aside_and_can_be_retried_or_dropped() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let recs: Vec<Value> = ["a", "b", "c", "d"]
        .iter()
        .map(|k| {
            let mut r = failure(k);
            r["key"] = json!(k);
            r
        })
        .collect();
    let j = run_ok(&db, &["insert", "--journal"], &recs);
    // a fails for good (65) three times; b fails for a temporary reason (75) and an I/O one
    // (74) and a signal (130) again and again; c finishes.
    for round in 1..=3 {
        let input = [
            failed(&j[0], 65, &format!("refused {round}")),
            failed(&j[1], 75, "busy"),
            failed(&j[1], 74, "disk full"),
            failed(&j[1], 130, "interrupted"),
        ];
        let out = run_with_input(db_cmd(&db, &["done"]), &lines(&input));
        assert!(out.status.success(), "{}", stderr(&out));
        let text = String::from_utf8(out.stdout).expect("utf-8");
        let want: Vec<String> = input.iter().map(Value::to_string).collect();
        assert_eq!(
            text.lines().collect::<Vec<_>>(),
            want,
            "passed on untouched"
        );
        let keys = pending_keys(&db, &[]);
        if round < 3 {
            assert_eq!(keys, ["a", "b", "c", "d"], "round {round}");
        } else {
            assert_eq!(keys, ["b", "c", "d"], "round {round}");
        }
    }
    let (attempts, error, aside, done, _) = journal_state(&db, "a");
    assert_eq!((attempts, aside, done), (3, true, false));
    assert_eq!(
        error,
        Some(json!({"tool":"elf-write","code":65,"message":"refused 3","line":1}))
    );
    let (attempts, _, aside, _, _) = journal_state(&db, "b");
    assert_eq!(
        (attempts, aside),
        (9, false),
        "temporary failures never set aside"
    );
    // pending --set-aside: the record as journaled, with set_aside added.
    let aside = run_ok(&db, &["pending", "--set-aside"], &[]);
    assert_eq!(aside.len(), 1);
    let mut want = j[0].clone();
    let at = aside[0]["set_aside"]["at"].as_i64().expect("at");
    assert!(at > 1_700_000_000_000, "{at}");
    want.insert(
        "set_aside".into(),
        json!({"at":at,"attempts":3,"error":{"tool":"elf-write","code":65,"message":"refused 3","line":1}}),
    );
    assert_eq!(aside[0], want);
    assert!(run_ok(&db, &["pending", "--set-aside", "--older-than", "1h"], &[]).is_empty());
    // A set-aside record that fails again is counted, and stays set aside from the first time.
    run_ok(&db, &["done"], &[failed(&j[0], 65, "again")]);
    assert_eq!(journal_state(&db, "a").0, 4);
    assert_eq!(
        run_ok(&db, &["pending", "--set-aside"], &[])[0]["set_aside"]["at"],
        json!(at)
    );
    // --attempts 1: d is set aside at its first permanent failure. A failure of a key not
    // journaled, or already done, changes nothing.
    run_ok(&db, &["done"], &[Value::Object(j[2].clone())]);
    run_ok(
        &db,
        &["done", "--attempts", "1"],
        &[
            failed(&j[3], 77, "permission denied"),
            failed(&j[2], 65, "too late"),
            json!({"key":"nope","error":{"code":65}}),
            json!({"key":7,"error":{"code":65}}),
        ],
    );
    assert_eq!(pending_keys(&db, &[]), ["b"]);
    assert_eq!(pending_keys(&db, &["--set-aside"]), ["a", "d"]);
    assert_eq!(journal_state(&db, "c"), (0, None, false, true, false));
    // retry puts a back to pending, attempts 0 and no error; drop gives d and b up.
    let out = db_cmd(&db, &["retry", "a"]).output().expect("run");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        stderr(&out)
    );
    assert_eq!(journal_state(&db, "a"), (0, None, false, false, false));
    assert_eq!(pending_keys(&db, &[]), ["a", "b"]);
    let out = db_cmd(&db, &["drop", "d", "b"]).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(pending_keys(&db, &[]), ["a"]);
    assert!(pending_keys(&db, &["--set-aside"]).is_empty());
    let (_, error, _, done, dropped) = journal_state(&db, "d");
    assert!(
        done && dropped && error.is_some(),
        "dropped keeps its last error"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM learnings"), 4, "rows stay");
    // An unknown key: 65 naming it, and nothing of the others is changed.
    run_ok(&db, &["done", "--attempts", "1"], &[failed(&j[0], 65, "x")]);
    let out = db_cmd(&db, &["retry", "a", "zz\u{1b}top"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(65));
    let line = one_line(&out.stderr);
    assert!(
        line.contains("key zz") && !line.contains('\u{1b}'),
        "{line}"
    );
    assert_eq!(pending_keys(&db, &["--set-aside"]), ["a"]);
    // retry of a done key is refused; drop of one is a no-op.
    let out = db_cmd(&db, &["retry", "c"]).output().expect("run");
    assert_eq!(out.status.code(), Some(65));
    assert!(one_line(&out.stderr).contains("key c is done"));
    let out = db_cmd(&db, &["drop", "c"]).output().expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(journal_state(&db, "c"), (0, None, false, true, false));
    // query sees the columns.
    let out = db_cmd(
        &db,
        &[
            "query",
            "SELECT key, attempts, set_aside_at IS NOT NULL AS aside, dropped_at IS NOT NULL AS dropped \
             FROM elf_journal ORDER BY key",
        ],
    )
    .output()
    .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json_lines(&out.stdout);
    assert_eq!(
        rows.iter()
            .map(|r| Value::Object(r.clone()))
            .collect::<Vec<_>>(),
        [
            json!({"key":"a","attempts":1,"aside":1,"dropped":0}),
            json!({"key":"b","attempts":9,"aside":0,"dropped":1}),
            json!({"key":"c","attempts":0,"aside":0,"dropped":0}),
            json!({"key":"d","attempts":1,"aside":1,"dropped":1}),
        ]
    );
    for args in [
        &["retry"][..],
        &["drop"],
        &["retry", "a", "--batch", "2"],
        &["pending", "--attempts", "2"],
        &["done", "--attempts", "0"],
        &["done", "--set-aside"],
    ] {
        let out = run_with_input(db_cmd(&db, args), b"");
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn a_fix_that_done_itself_fails_on_counts_as_an_attempt_under_keep_going() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    let mut rec = failure("f");
    rec["key"] = json!("f");
    rec["fix"] = json!({"sql":"UPDATE learnings SET type = NULL WHERE id = :id",
                        "params":{"id":{"$ref":"/db/id"}}});
    let j = run_ok(&db, &["insert", "--journal"], &[rec]);
    for round in 1..=2 {
        let out = run_ok(
            &db,
            &["done", "--key", "fix", "--keep-going", "--attempts", "2"],
            &[Value::Object(j[0].clone())],
        );
        assert_eq!(out[0]["error"]["code"], json!(65));
        assert_eq!(out[0]["error"]["tool"], json!("elf-db"));
        let (attempts, error, aside, done, _) = journal_state(&db, "f");
        assert_eq!((attempts, aside, done), (round, round == 2, false));
        assert!(error.is_some_and(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("NOT NULL"))
        }),);
    }
    assert!(pending_keys(&db, &[]).is_empty());
    assert_eq!(
        count(&db, "SELECT count(*) FROM learnings WHERE type IS NULL"),
        0
    );
}

#[test]
fn an_earlier_journal_gets_the_new_columns_and_index_in_the_transaction_that_needs_them() {
    let dir = TempDir::new();
    let db = dir.join("real.db");
    std::fs::copy(REAL_DB, &db).expect("copy the real database");
    // The journal as the first elf-db made it, with a done and two pending records.
    open(&db)
        .execute_batch(
            "CREATE TABLE elf_journal (key TEXT PRIMARY KEY NOT NULL, record TEXT NOT NULL, \
                 ids TEXT NOT NULL, created_at INTEGER NOT NULL, done_at INTEGER);
             CREATE INDEX elf_journal_pending ON elf_journal(created_at) WHERE done_at IS NULL;
             INSERT INTO elf_journal VALUES ('old1', '{\"key\":\"old1\"}', '[]', 1, 2);
             INSERT INTO elf_journal VALUES ('old2', '{\"key\":\"old2\"}', '[]', 3, NULL);
             INSERT INTO elf_journal VALUES ('old3', '{\"key\":\"old3\"}', '[]', 4, NULL);",
        )
        .expect("old journal");
    // Read as it is: pending works, nothing is set aside, and nothing is changed.
    assert_eq!(pending_keys(&db, &[]), ["old2", "old3"]);
    assert!(pending_keys(&db, &["--set-aside"]).is_empty());
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM pragma_table_info('elf_journal') WHERE name = 'attempts'"
        ),
        0
    );
    // A done that sees a failure brings it up to date, then counts the attempt.
    let out = run_ok(
        &db,
        &["done", "--attempts", "1"],
        &[json!({"key":"old2","error":{"tool":"t","code":65,"message":"m"}})],
    );
    assert_eq!(out.len(), 1);
    let columns: Vec<String> = open(&db)
        .prepare("SELECT name FROM pragma_table_info('elf_journal')")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("columns");
    assert_eq!(
        columns,
        [
            "key",
            "record",
            "ids",
            "created_at",
            "done_at",
            "attempts",
            "error",
            "set_aside_at",
            "dropped_at"
        ]
    );
    assert_eq!(journal_state(&db, "old1"), (0, None, false, true, false));
    assert_eq!(journal_state(&db, "old2").0, 1);
    assert_eq!(pending_keys(&db, &[]), ["old3"]);
    assert_eq!(pending_keys(&db, &["--set-aside"]), ["old2"]);
    // The pending index knows set-aside records, and pending uses it.
    let plan: Vec<String> = open(&db)
        .prepare(
            "EXPLAIN QUERY PLAN SELECT record FROM elf_journal WHERE done_at IS NULL \
             AND set_aside_at IS NULL AND created_at <= 5 ORDER BY created_at, rowid",
        )
        .and_then(|mut s| s.query_map([], |r| r.get(3))?.collect())
        .expect("plan");
    assert!(
        plan.iter().any(|p| p.contains("elf_journal_pending")),
        "{plan:?}"
    );
    let indexes = count(
        &db,
        "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND tbl_name = 'elf_journal' \
         AND name IN ('elf_journal_pending', 'elf_journal_set_aside') AND sql LIKE '%set_aside_at%'",
    );
    assert_eq!(indexes, 2);
    // A new journal (insert --journal on a fresh database) has the same shape at once.
    let fresh = new_db(&dir);
    run_ok(&fresh, &["insert", "--journal"], &[json!({"key":"n"})]);
    let shape = |db: &Path| -> Vec<(String, String, i64, Option<String>)> {
        open(db)
            .prepare(
                "SELECT name, type, \"notnull\", dflt_value FROM pragma_table_info('elf_journal')",
            )
            .and_then(|mut s| {
                s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                    .collect()
            })
            .expect("shape")
    };
    assert_eq!(shape(&fresh), shape(&db));
    // The legacy database's own schema is untouched.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM sqlite_master WHERE name LIKE 'elf%' AND name NOT IN \
             ('elf_journal', 'elf_journal_pending', 'elf_journal_set_aside', 'sqlite_autoindex_elf_journal_1')"
        ),
        0
    );
}

const WRAPPER_SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bin-wrappers/lib/schema.sql");

#[test]
fn insert_schema_makes_a_new_database_with_its_first_row_in_one_transaction() {
    let dir = TempDir::new();
    let db = dir.join("home/memory/index.db");
    std::fs::create_dir_all(dir.join("home/memory")).expect("mkdir");
    let rec = json!({"key":"first","db":{"table":"learnings","values":{"type":"failure","filepath":"f.md","title":"t"}}});
    // A record the schema's table refuses: nothing at all is kept, not even the tables.
    let bad = json!({"key":"bad","db":{"table":"learnings","values":{"type":"failure"}}});
    let out = run_with_input(
        db_cmd(&db, &["insert", "--journal", "--schema", WRAPPER_SCHEMA]),
        &lines(std::slice::from_ref(&bad)),
    );
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert!(one_line(&out.stderr).starts_with("elf-db: line 1: db: NOT NULL"));
    assert_eq!(count(&db, "SELECT count(*) FROM sqlite_master"), 0);
    // The same under --keep-going, one record per transaction: the first transaction (only a
    // bad record) is rolled back with the schema, and the next runs the schema again.
    let out = run_ok(
        &db,
        &[
            "insert",
            "--journal",
            "--schema",
            WRAPPER_SCHEMA,
            "--keep-going",
            "--batch",
            "1",
        ],
        &[bad, rec.clone()],
    );
    assert_eq!(out[0]["error"]["code"], json!(65));
    assert_eq!(out[1]["db"]["id"], json!(1));
    assert_eq!(count(&db, "SELECT count(*) FROM learnings"), 1);
    assert_eq!(count(&db, "SELECT count(*) FROM elf_journal"), 1);
    // An existing home: the schema's IF NOT EXISTS statements change nothing, rows go on.
    let before: Vec<String> = open(&db)
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("schema");
    let mut second = rec.clone();
    second["key"] = json!("second");
    let out = run_ok(
        &db,
        &["insert", "--journal", "--schema", WRAPPER_SCHEMA],
        &[second],
    );
    assert_eq!(out[0]["db"]["id"], json!(2));
    let after: Vec<String> = open(&db)
        .prepare("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("schema");
    assert_eq!(before, after);
    // The real legacy database, as it is.
    let real = dir.join("real.db");
    std::fs::copy(REAL_DB, &real).expect("copy");
    let rows = count(&real, "SELECT count(*) FROM learnings");
    run_ok(
        &real,
        &["insert", "--journal", "--schema", WRAPPER_SCHEMA],
        std::slice::from_ref(&rec),
    );
    assert_eq!(count(&real, "SELECT count(*) FROM learnings"), rows + 1);
    // insert --table and plain insert take it too.
    let plain = dir.join("plain.db");
    let out = run_ok(
        &plain,
        &[
            "insert",
            "--table",
            "heuristics",
            "--schema",
            WRAPPER_SCHEMA,
        ],
        &[json!({"domain":"git","rule":"r"})],
    );
    assert_eq!(out[0]["db"]["id"], json!(1));
    // Empty input: nothing to do, nothing run.
    let empty = dir.join("empty.db");
    let out = run_with_input(db_cmd(&empty, &["insert", "--schema", WRAPPER_SCHEMA]), b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(count(&empty, "SELECT count(*) FROM sqlite_master"), 0);
}

#[test]
fn a_failing_schema_statement_names_the_file_and_its_line_and_writes_nothing() {
    let dir = TempDir::new();
    let db = dir.join("new.db");
    let schema = dir.join("schema.sql");
    let rec = json!({"db":{"table":"a","values":{"x":1}}});
    for (text, line, needle, code) in [
        (
            "CREATE TABLE IF NOT EXISTS a(x);\n\nCREATE INDEX IF NOT EXISTS i ON nope(x);\n",
            3,
            "no such table: main.nope",
            65,
        ),
        (
            "CREATE TABLE IF NOT EXISTS a(x);\nBEGIN;\n",
            2,
            "not authorized",
            65,
        ),
        (
            "CREATE TABLE a(x);\nCREATE TABLE a(y);\n",
            2,
            "already exists",
            65,
        ),
    ] {
        std::fs::write(&schema, text).expect("write");
        let out = run_with_input(
            db_cmd(&db, &["insert", "--journal", "--schema"]).arg(&schema),
            &lines(std::slice::from_ref(&rec)),
        );
        assert_eq!(out.status.code(), Some(code), "{text}: {}", stderr(&out));
        let msg = one_line(&out.stderr);
        let want = format!("elf-db: {}: line {line}: ", schema.display());
        assert!(msg.starts_with(&want), "{msg}");
        assert!(msg.contains(needle), "{msg}");
        assert!(out.stdout.is_empty());
        assert_eq!(
            count(&db, "SELECT count(*) FROM sqlite_master"),
            0,
            "{text}"
        );
    }
    // A missing schema file: 66, and no database is made.
    let other = dir.join("other.db");
    let out = run_with_input(
        db_cmd(&other, &["insert", "--schema"]).arg(dir.join("missing.sql")),
        &lines(&[rec]),
    );
    assert_eq!(out.status.code(), Some(66), "{}", stderr(&out));
    assert!(!other.exists());
    for args in [
        &["exec", "--schema", "s.sql"][..],
        &["done", "--schema", "s.sql"],
    ] {
        let out = run_with_input(db_cmd(&db, args), b"");
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
}

/// Runs `c` with `input` as its standard input from a regular file: every line is ready at
/// once, so all of them (up to --batch) share one transaction.
fn run_with_file(dir: &TempDir, mut c: Command, input: &[u8]) -> std::process::Output {
    let path = dir.join(format!("input-{}.jsonl", rand_suffix()));
    std::fs::write(&path, input).expect("write input");
    let stdin = std::fs::File::open(&path).expect("open input");
    c.stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run")
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A table whose triggers refuse a row in each of SQLite's ways, by its value `v`, and a column
/// `u` whose UNIQUE constraint rolls the whole transaction back. The AFTER triggers write to
/// `log` before they refuse, so that a half-undone record shows.
const RAISING: &str = "\
CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL, u TEXT UNIQUE ON CONFLICT ROLLBACK);
CREATE TABLE log (v TEXT);
CREATE TRIGGER t_rollback BEFORE INSERT ON t WHEN NEW.v = 'rollback'
    BEGIN SELECT RAISE(ROLLBACK, 'refused: rollback'); END;
CREATE TRIGGER t_abort AFTER INSERT ON t WHEN NEW.v = 'abort'
    BEGIN INSERT INTO log VALUES (NEW.v); SELECT RAISE(ABORT, 'refused: abort'); END;
CREATE TRIGGER t_fail AFTER INSERT ON t WHEN NEW.v = 'fail'
    BEGIN INSERT INTO log VALUES (NEW.v); SELECT RAISE(FAIL, 'refused: fail'); END;
CREATE TRIGGER t_ignore BEFORE INSERT ON t WHEN NEW.v = 'ignore'
    BEGIN SELECT RAISE(IGNORE); END;
CREATE TRIGGER t_late AFTER INSERT ON t WHEN NEW.v = 'late'
    BEGIN INSERT INTO log VALUES (NEW.v); SELECT RAISE(ROLLBACK, 'refused: late'); END;
INSERT INTO t (v, u) VALUES ('seed', 'taken');
";

fn raising_db(dir: &TempDir) -> PathBuf {
    let schema = dir.join("raising.sql");
    std::fs::write(&schema, RAISING).expect("write schema");
    let db = dir.join("raising.db");
    let out = db_cmd(&db, &["exec", "--file"])
        .arg(&schema)
        .output()
        .expect("run");
    assert!(out.status.success(), "{}", stderr(&out));
    db
}

/// The `v` of every row of t but the seed, in id order.
fn t_values(db: &Path) -> Vec<String> {
    let c = open(db);
    let mut st = c
        .prepare("SELECT v FROM t WHERE id > 1 ORDER BY id")
        .expect("prepare");
    st.query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// How each way of refusing a row is undone, with the records of the same transaction before
/// and after it: (the bad row, the message it gives). `dup` is a row whose UNIQUE ON CONFLICT
/// ROLLBACK constraint fails.
const REFUSALS: &[(&str, &str)] = &[
    (r#"{"v":"rollback"}"#, "refused: rollback"),
    (r#"{"v":"late"}"#, "refused: late"),
    (
        r#"{"v":"dup","u":"taken"}"#,
        "UNIQUE constraint failed: t.u",
    ),
    (r#"{"v":"abort"}"#, "refused: abort"),
    (r#"{"v":"fail"}"#, "refused: fail"),
    (
        r#"{"v":"ignore"}"#,
        "the row was not inserted into t: an ON CONFLICT IGNORE constraint or a trigger's RAISE(IGNORE) dropped it",
    ),
];

/// The ways a record form can carry a row of t.
#[derive(Clone, Copy, Debug)]
enum Form {
    Table,
    Record,
    Journal,
}

impl Form {
    fn args(self) -> &'static [&'static str] {
        match self {
            Form::Table => &["insert", "--table", "t"],
            Form::Record => &["insert"],
            Form::Journal => &["insert", "--journal"],
        }
    }

    fn line(self, row: &str, n: usize) -> String {
        match self {
            Form::Table => row.to_string(),
            Form::Record => format!(r#"{{"n":{n},"db":{{"table":"t","values":{row}}}}}"#),
            Form::Journal => {
                format!(r#"{{"key":"k{n}","db":{{"table":"t","values":{row}}}}}"#)
            }
        }
    }

    fn id(self, rec: &Map<String, Value>) -> Option<i64> {
        rec.get("db").and_then(|d| d["id"].as_i64())
    }
}

/// Checks that every id passed on is the row of t that holds the record's value.
fn ids_are_true(db: &Path, form: Form, recs: &[Map<String, Value>], rows: &[&str]) {
    let c = open(db);
    for (rec, row) in recs.iter().zip(rows) {
        if rec.contains_key("error") {
            continue;
        }
        let id = form.id(rec).expect("an id");
        let v: String = c
            .query_row("SELECT v FROM t WHERE id = ?1", [id], |r| r.get(0))
            .expect("the row of the id passed on");
        let want: Value = serde_json::from_str(row).expect("row");
        assert_eq!(json!(v), want["v"], "{form:?}: {rec:?}");
    }
}

#[test]
fn a_record_that_rolls_back_the_transaction_costs_only_itself() {
    for form in [Form::Table, Form::Record, Form::Journal] {
        for (bad, message) in REFUSALS {
            let dir = TempDir::new();
            let db = raising_db(&dir);
            let rows = [r#"{"v":"good1"}"#, *bad, r#"{"v":"good2"}"#];
            let input: String = rows
                .iter()
                .zip(1..)
                .map(|(r, n)| form.line(r, n) + "\n")
                .collect();
            // Without --keep-going: the record before it is committed and passed on, the run
            // stops at it, naming its line.
            let out = run_with_file(&dir, db_cmd(&db, form.args()), input.as_bytes());
            let what = format!("{form:?} {bad}");
            assert_eq!(out.status.code(), Some(65), "{what}: {}", stderr(&out));
            assert_eq!(
                one_line(&out.stderr),
                format!(
                    "elf-db: line 2: {}{message}",
                    if matches!(form, Form::Table) {
                        ""
                    } else {
                        "db: "
                    }
                ),
                "{what}"
            );
            let recs = json_lines(&out.stdout);
            assert_eq!(recs.len(), 1, "{what}");
            assert_eq!(t_values(&db), ["good1"], "{what}");
            ids_are_true(&db, form, &recs, &rows);
            assert_eq!(count(&db, "SELECT count(*) FROM log"), 0, "{what}");
            if matches!(form, Form::Journal) {
                assert_eq!(
                    count(&db, "SELECT group_concat(key) = 'k1' FROM elf_journal"),
                    1,
                    "{what}"
                );
            }
            // With --keep-going: it becomes an error record and the run goes on.
            let dir = TempDir::new();
            let db = raising_db(&dir);
            let mut args = form.args().to_vec();
            args.push("--keep-going");
            let out = run_with_file(&dir, db_cmd(&db, &args), input.as_bytes());
            assert_eq!(out.status.code(), Some(0), "{what}: {}", stderr(&out));
            let recs = json_lines(&out.stdout);
            assert_eq!(recs.len(), 3, "{what}");
            let e = &recs[1]["error"];
            assert_eq!(
                (e["code"].as_u64(), e["line"].as_u64()),
                (Some(65), Some(2)),
                "{what}"
            );
            assert!(
                e["message"].as_str().unwrap_or("").ends_with(message),
                "{what}: {e}"
            );
            assert!(form.id(&recs[1]).is_none(), "{what}");
            assert!(!recs[0].contains_key("error") && !recs[2].contains_key("error"));
            assert_eq!(t_values(&db), ["good1", "good2"], "{what}");
            ids_are_true(&db, form, &recs, &rows);
            assert_eq!(count(&db, "SELECT count(*) FROM log"), 0, "{what}");
            if matches!(form, Form::Journal) {
                // Each journal row is in the transaction of its data row: the two good ones.
                assert_eq!(
                    count(
                        &db,
                        "SELECT group_concat(key, ',') = 'k1,k3' FROM (SELECT key FROM elf_journal ORDER BY key)"
                    ),
                    1,
                    "{what}"
                );
            }
        }
    }
}

#[test]
fn rollbacks_anywhere_in_a_batch_leave_exactly_the_good_records_each_once() {
    // Rollbacks first, last, twice in a row, among error records and records without db, in
    // the journal with a key seen twice: every good record is committed once, passed on once
    // with its true id, in input order.
    let dir = TempDir::new();
    let db = raising_db(&dir);
    let input = [
        r#"{"key":"r1","db":{"table":"t","values":{"v":"rollback"}}}"#,
        r#"{"key":"a","db":{"table":"t","values":{"v":"a"}}}"#,
        r#"{"key":"r2","db":{"table":"t","values":{"v":"late"}}}"#,
        r#"{"key":"r3","db":{"table":"t","values":{"v":"dup","u":"taken"}}}"#,
        r#"not json"#,
        r#"{"key":"b","db":[{"table":"t","values":{"v":"b"}},{"table":"t","values":[{"v":"c"},{"v":"d","u":"d"}]}]}"#,
        r#"{"key":"x","db":{"table":"t","values":{"v":"x"}},"error":{"tool":"elf-write","code":74,"message":"earlier"}}"#,
        r#"{"key":"a","db":{"table":"t","values":{"v":"a"}}}"#,
        r#"{"key":"nodb"}"#,
        r#"{"key":"r4","db":[{"table":"t","values":{"v":"e"}},{"table":"t","values":{"v":"rollback"}}]}"#,
        r#"{"key":"f","db":{"table":"t","values":{"v":"f"}}}"#,
        r#"{"key":"r5","db":{"table":"t","values":{"v":"late"}}}"#,
    ]
    .join("\n");
    let out = run_with_file(
        &dir,
        db_cmd(&db, &["insert", "--journal", "--keep-going"]),
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    let keys: Vec<&str> = recs
        .iter()
        .map(|r| r.get("key").and_then(Value::as_str).unwrap_or("-"))
        .collect();
    assert_eq!(
        keys,
        [
            "r1", "a", "r2", "r3", "-", "b", "x", "a", "nodb", "r4", "f", "r5"
        ]
    );
    let failed: Vec<u64> = recs
        .iter()
        .filter_map(|r| r.get("error"))
        .filter(|e| e["tool"] == json!("elf-db"))
        .map(|e| e["line"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(failed, [1, 3, 4, 5, 10, 12]);
    assert_eq!(t_values(&db), ["a", "b", "c", "d", "f"]);
    assert_eq!(count(&db, "SELECT count(*) FROM log"), 0);
    let c = open(&db);
    let id_of = |v: &str| -> i64 {
        c.query_row("SELECT id FROM t WHERE v = ?1", [v], |r| r.get(0))
            .expect("row")
    };
    assert_eq!(recs[1]["db"]["id"], json!(id_of("a")));
    assert_eq!(
        recs[7]["db"]["id"],
        json!(id_of("a")),
        "the first time's id"
    );
    assert_eq!(recs[5]["db"][0]["id"], json!(id_of("b")));
    assert_eq!(recs[5]["db"][1]["ids"], json!([id_of("c"), id_of("d")]));
    assert_eq!(recs[10]["db"]["id"], json!(id_of("f")));
    let journaled: Vec<String> = c
        .prepare("SELECT key FROM elf_journal ORDER BY key")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("journal");
    assert_eq!(journaled, ["a", "b", "f", "nodb"]);
    // Each journaled record is the one passed on, ids included.
    for (i, key) in [(1, "a"), (5, "b"), (10, "f")] {
        let stored: String = c
            .query_row(
                "SELECT record FROM elf_journal WHERE key = ?1",
                [key],
                |r| r.get(0),
            )
            .expect("record");
        let stored: Map<String, Value> = serde_json::from_str(&stored).expect("json");
        assert_eq!(stored, recs[i], "{key}");
    }
}

#[test]
fn exec_and_done_statements_that_roll_back_cost_only_their_record() {
    let dir = TempDir::new();
    let db = raising_db(&dir);
    let sql = |v: &str| {
        format!(r#"{{"db":{{"sql":"INSERT INTO t (v) VALUES (:v)","params":{{"v":"{v}"}}}}}}"#)
    };
    let input = [sql("a"), sql("rollback"), sql("b")].join("\n");
    let out = run_with_file(&dir, db_cmd(&db, &["exec"]), input.as_bytes());
    assert_eq!(out.status.code(), Some(65), "{}", stderr(&out));
    assert_eq!(
        one_line(&out.stderr),
        "elf-db: line 2: db: refused: rollback"
    );
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 1);
    assert_eq!(t_values(&db), ["a"]);
    // The id is the row's own, not what an earlier (rolled back) run of the batch left.
    assert_eq!(
        recs[0]["db"]["id"],
        json!(count(&db, "SELECT id FROM t WHERE v = 'a'"))
    );
    let out = run_with_file(&dir, db_cmd(&db, &["exec", "-k"]), input.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1]["error"]["line"], json!(2));
    assert_eq!(t_values(&db), ["a", "a", "b"]);
    assert_eq!(
        recs[2]["db"]["id"],
        json!(count(&db, "SELECT id FROM t WHERE v = 'b'"))
    );

    // done --key fix: the fix that rolls back is a failed attempt; the others are done.
    let journal: String = ["j1", "j2", "j3"]
        .iter()
        .map(|k| format!("{{\"key\":\"{k}\"}}\n"))
        .collect();
    let out = run_with_input(db_cmd(&db, &["insert", "--journal"]), journal.as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let fix = |k: &str, v: &str| {
        format!(
            r#"{{"key":"{k}","fix":{{"sql":"INSERT INTO t (v) VALUES (:v)","params":{{"v":"{v}"}}}}}}"#
        )
    };
    let input = [fix("j1", "d1"), fix("j2", "late"), fix("j3", "d3")].join("\n");
    let out = run_with_file(
        &dir,
        db_cmd(&db, &["done", "--key", "fix", "-k"]),
        input.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1]["error"]["message"], json!("fix: refused: late"));
    assert_eq!(t_values(&db), ["a", "a", "b", "d1", "d3"]);
    assert_eq!(count(&db, "SELECT count(*) FROM log"), 0);
    let state = |k: &str| journal_state(&db, k);
    assert!(state("j1").3 && state("j3").3, "j1 and j3 are done");
    let (attempts, error, _, done, _) = state("j2");
    assert_eq!((attempts, done), (1, false));
    assert_eq!(error.map(|e| e["line"].clone()), Some(json!(2)));
}

#[test]
fn a_rollback_in_the_first_transaction_runs_the_schema_again() {
    // --schema runs in the first transaction; a record that rolls it back takes the new
    // tables with it, and the replay makes them again.
    let dir = TempDir::new();
    let schema = dir.join("raising.sql");
    std::fs::write(&schema, RAISING).expect("schema");
    let db = dir.join("new.db");
    let input = [
        r#"{"v":"rollback"}"#,
        r#"{"v":"a"}"#,
        r#"{"v":"late"}"#,
        r#"{"v":"b"}"#,
    ]
    .join("\n");
    let mut c = db_cmd(&db, &["insert", "--table", "t", "-k", "--schema"]);
    c.arg(&schema);
    let out = run_with_file(&dir, c, input.as_bytes());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 4);
    assert_eq!(t_values(&db), ["a", "b"]);
}

#[test]
fn exec_names_repeated_columns_as_query_does() {
    let dir = TempDir::new();
    let db = raising_db(&dir);
    let c = open(&db);
    c.execute_batch(
        "CREATE TABLE u (id INTEGER PRIMARY KEY, v TEXT); INSERT INTO u VALUES (1, 'b');",
    )
    .expect("u");
    drop(c);
    let select = "SELECT t.v, u.v, t.v AS v FROM t, u";
    let input = [
        json!({"db": {"sql": select}}),
        json!({"db": {"sql": "INSERT INTO t (v) VALUES ('x') RETURNING v, v || '2' AS v"}}),
    ];
    let q = db_cmd(&db, &["query", select]).output().expect("run");
    assert!(q.status.success(), "{}", stderr(&q));
    let queried = json_lines(&q.stdout);
    let recs = run_ok(&db, &["exec"], &input);
    assert_eq!(recs[0]["db"]["rows"], json!(queried));
    assert_eq!(
        recs[0]["db"]["rows"],
        json!([{"v": "seed", "v:2": "b", "v:3": "seed"}])
    );
    assert_eq!(recs[1]["db"]["rows"], json!([{"v": "x", "v:2": "x2"}]));
}

#[test]
fn rows_without_a_rowid_get_no_id_and_a_view_takes_rows_through_its_trigger() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    open(&db)
        .execute_batch(
            "CREATE TABLE w (k TEXT PRIMARY KEY, v) WITHOUT ROWID;
             CREATE VIEW pv AS SELECT seq, side FROM pairs;
             CREATE TRIGGER pv_insert INSTEAD OF INSERT ON pv
                 BEGIN INSERT INTO pairs (seq, side) VALUES (NEW.seq, NEW.side); END;
             CREATE VIEW bare AS SELECT seq FROM pairs;",
        )
        .expect("schema");
    // A row into a rowid table first, so that a stale last_insert_rowid would show.
    let input = [
        failure("first"),
        json!({"db": {"table": "w", "values": {"k": "a", "v": 1}}}),
        json!({"db": [{"table": "w", "values": [{"k": "b"}, {"k": "c"}]}, {"table": "pv", "values": {"seq": 5, "side": "l"}}]}),
        json!({"db": {"sql": "INSERT INTO w (k) VALUES ('d')"}}),
    ];
    let recs = run_ok(&db, &["insert", "--journal"], &input[..3]);
    assert_eq!(recs[0]["db"]["id"], json!(1));
    assert_eq!(
        recs[1]["db"],
        json!({"table": "w", "values": {"k": "a", "v": 1}}),
        "no id for a WITHOUT ROWID table"
    );
    assert_eq!(
        recs[2]["db"],
        json!([{"table": "w", "values": [{"k": "b"}, {"k": "c"}]}, {"table": "pv", "values": {"seq": 5, "side": "l"}}]),
        "no ids for a WITHOUT ROWID table, no id for a view"
    );
    let recs = run_ok(&db, &["exec"], &input[3..]);
    assert_eq!(recs[0]["db"]["changes"], json!(1));
    assert!(recs[0]["db"].get("id").is_none(), "{:?}", recs[0]);
    assert_eq!(count(&db, "SELECT count(*) FROM w"), 4);
    assert_eq!(count(&db, "SELECT count(*) FROM pairs WHERE seq = 5"), 1);
    // The plain-row form: the same.
    let out = run_with_input(db_cmd(&db, &["insert", "--table", "w"]), b"{\"k\":\"e\"}\n");
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out.stdout)[0]["db"], json!({"table": "w"}));
    let out = run_with_input(
        db_cmd(&db, &["insert", "--table", "pv"]),
        b"{\"seq\":6,\"side\":\"r\"}\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(json_lines(&out.stdout)[0]["db"], json!({"table": "pv"}));
    assert_eq!(count(&db, "SELECT count(*) FROM pairs WHERE seq = 6"), 1);
    // A view without an INSTEAD OF trigger cannot take a row.
    let out = run_with_input(
        db_cmd(&db, &["insert", "--table", "bare"]),
        b"{\"seq\":7}\n",
    );
    assert_eq!(out.status.code(), Some(65));
    assert_eq!(
        one_line(&out.stderr),
        "elf-db: line 1: cannot modify bare because it is a view"
    );
}

#[test]
fn numbers_are_stored_exactly_or_refused_naming_the_line_and_the_field() {
    let dir = TempDir::new();
    let db = new_db(&dir);
    open(&db)
        .execute_batch("CREATE TABLE n (id INTEGER PRIMARY KEY, x)")
        .expect("n");
    // (JSON, what is stored: typeof and quote(), or the refusal)
    let cases: &[(&str, Result<&str, &str>)] = &[
        ("0", Ok("integer 0")),
        ("-0", Ok("integer 0")),
        ("-0.0", Ok("real -0.0")),
        ("9223372036854775807", Ok("integer 9223372036854775807")),
        ("-9223372036854775808", Ok("integer -9223372036854775808")),
        ("1.0000000000000000001", Ok("real 1.0")),
        ("0.1", Ok("real 0.1")),
        ("1e2", Ok("real 100.0")),
        ("5e-324", Ok("real 5e-324")),
        ("0e-999", Ok("real 0.0")),
        ("1.7976931348623157e308", Ok("real 1.7976931348623157e308")),
        (
            "9223372036854775808",
            Err("integer 9223372036854775808 is out of range for SQLite's 64-bit INTEGER"),
        ),
        (
            "-9223372036854775809",
            Err("integer -9223372036854775809 is out of range for SQLite's 64-bit INTEGER"),
        ),
        (
            "1e400",
            Err("number 1e+400 is out of range for a REAL: too large, it would be infinite"),
        ),
        (
            "-1e400",
            Err("number -1e+400 is out of range for a REAL: too large, it would be infinite"),
        ),
        (
            "1.5e-400",
            Err("number 1.5e-400 is out of range for a REAL: too small, it would be stored as 0"),
        ),
    ];
    let stored = |db: &Path, id: i64| -> String {
        let v: rusqlite::types::Value = open(db)
            .query_row("SELECT x FROM n WHERE id = ?1", [id], |r| r.get(0))
            .expect("row");
        match v {
            rusqlite::types::Value::Integer(i) => format!("integer {i}"),
            rusqlite::types::Value::Real(f) => format!("real {f:?}"),
            other => format!("{other:?}"),
        }
    };
    // (the command, a record holding the number x, how the error names the field)
    type NumberForm = (&'static [&'static str], fn(&str) -> String, &'static str);
    let forms: [NumberForm; 3] = [
        (
            &["insert", "--table", "n"],
            |x| format!(r#"{{"x":{x}}}"#),
            "column x: ",
        ),
        (
            &["insert"],
            |x| format!(r#"{{"db":{{"table":"n","values":{{"x":{x}}}}}}}"#),
            "db: column x: ",
        ),
        (
            &["exec"],
            |x| {
                format!(
                    r#"{{"db":{{"sql":"INSERT INTO n (x) VALUES (:x)","params":{{"x":{x}}}}}}}"#
                )
            },
            "db: params :x: ",
        ),
    ];
    for (args, line, field) in forms {
        for (json, want) in cases {
            let input = format!("{}\n{}\n", line("1"), line(json));
            let out = run_with_input(db_cmd(&db, args), input.as_bytes());
            match want {
                Ok(want) => {
                    assert!(out.status.success(), "{args:?} {json}: {}", stderr(&out));
                    let recs = json_lines(&out.stdout);
                    let id = recs[1]["db"]["id"].as_i64().expect("id");
                    assert_eq!(stored(&db, id), *want, "{args:?} {json}");
                }
                Err(message) => {
                    let before = count(&db, "SELECT count(*) FROM n");
                    assert_eq!(out.status.code(), Some(65), "{args:?} {json}");
                    let err = one_line(&out.stderr);
                    assert!(
                        err.starts_with(&format!("elf-db: line 2: {field}{message}")),
                        "{args:?} {json}: {err}"
                    );
                    // The record before it was committed and passed on; nothing of it kept.
                    assert_eq!(json_lines(&out.stdout).len(), 1);
                    assert_eq!(count(&db, "SELECT count(*) FROM n"), before);
                }
            }
        }
    }
}

/// Runs `c` with `input` from a regular file, reads the first line of its output and closes
/// the pipe (as `| head -1` does); returns that line and the exit status.
fn first_line_then_close(dir: &TempDir, mut c: Command, input: &[u8]) -> (String, Option<i32>) {
    let path = dir.join(format!("input-{}.jsonl", rand_suffix()));
    std::fs::write(&path, input).expect("write input");
    let mut child = c
        .stdin(std::fs::File::open(&path).expect("open input"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut first).expect("read the first line");
    drop(out);
    let status = watchdog(Duration::from_secs(120), move || {
        child.wait_with_output().expect("wait")
    });
    assert_eq!(stderr(&status), "", "a broken pipe prints nothing");
    (first, status.status.code())
}

#[test]
fn a_broken_pipe_exits_141_after_the_batch_it_could_not_pass_on_was_committed() {
    // `elf-db insert --table t | head -1`: the records of the first batch are committed before
    // they are passed on (so that nothing is passed on that is not there); the reader goes
    // away after one; elf-db exits 141 and reads nothing more. Those rows stay: a retry of
    // the whole input without --journal inserts them again, one with it does not.
    let dir = TempDir::new();
    let db = raising_db(&dir);
    // Rows long enough that one batch's output is more than any pipe holds.
    let pad = "p".repeat(300);
    let rows: String = (0..3000)
        .map(|i| format!("{{\"v\":\"r{i}\",\"u\":\"{pad}{i}\"}}\n"))
        .collect();
    let (first, status) = first_line_then_close(
        &dir,
        db_cmd(&db, &["insert", "--table", "t", "--batch", "1000"]),
        rows.as_bytes(),
    );
    assert_eq!(status, Some(141));
    let first: Map<String, Value> = serde_json::from_str(&first).expect("a record");
    assert_eq!(first["db"]["id"], json!(2));
    assert_eq!(
        count(&db, "SELECT count(*) FROM t WHERE id > 1"),
        1000,
        "the first batch was committed, nothing after it was read"
    );

    // The same with --journal, then the retry: the journaled records give their first ids
    // and insert nothing again.
    let dir = TempDir::new();
    let db = raising_db(&dir);
    let records: String = (0..3000)
        .map(|i| {
            format!(
                "{{\"key\":\"k{i:04}\",\"db\":{{\"table\":\"t\",\"values\":{{\"v\":\"r{i}\",\"u\":\"{pad}{i}\"}}}}}}\n"
            )
        })
        .collect();
    let (_, status) = first_line_then_close(
        &dir,
        db_cmd(&db, &["insert", "--journal", "--batch", "1000"]),
        records.as_bytes(),
    );
    assert_eq!(status, Some(141));
    assert_eq!(count(&db, "SELECT count(*) FROM t WHERE id > 1"), 1000);
    assert_eq!(count(&db, "SELECT count(*) FROM elf_journal"), 1000);
    let out = run_with_file(
        &dir,
        db_cmd(&db, &["insert", "--journal"]),
        records.as_bytes(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let recs = json_lines(&out.stdout);
    assert_eq!(recs.len(), 3000);
    assert_eq!(count(&db, "SELECT count(*) FROM t WHERE id > 1"), 3000);
    let c = open(&db);
    for rec in &recs {
        let v = rec["db"]["values"]["v"].as_str().expect("v");
        let id: i64 = c
            .query_row("SELECT id FROM t WHERE v = ?1", [v], |r| r.get(0))
            .expect("one row");
        assert_eq!(rec["db"]["id"], json!(id), "{v}");
    }
}
