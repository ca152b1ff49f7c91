//! elf-db's reads of a WAL database leave no -wal or -shm behind, and still see what a writer
//! has committed to its WAL.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;

use crate::util::{TempDir, cmd, ok};

fn sqlite(db: &Path, sql: &str) {
    let out = cmd("sqlite3").arg(db).arg(sql).output().expect("sqlite3");
    ok(&out);
}

fn count(db: &Path) -> String {
    let out = cmd(env!("CARGO_BIN_EXE_elf-db"))
        .args(["query", "--format", "tsv", "--db"])
        .arg(db)
        .arg("SELECT count(*) FROM t")
        .output()
        .expect("elf-db");
    ok(&out);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_read_of_an_idle_wal_database_creates_no_wal_or_shm() {
    let dir = TempDir::new();
    let db = dir.join("index.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
    );
    assert!(!dir.join("index.db-wal").exists());
    let before = std::fs::read(&db).expect("db");
    assert_eq!(count(&db), "1");
    assert!(!dir.join("index.db-wal").exists(), "the read created -wal");
    assert!(!dir.join("index.db-shm").exists(), "the read created -shm");
    assert_eq!(std::fs::read(&db).expect("db"), before);
}

#[test]
fn a_read_sees_what_an_open_writer_committed_to_its_wal() {
    let dir = TempDir::new();
    let db = dir.join("index.db");
    sqlite(
        &db,
        "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1);",
    );
    // A writer that keeps its connection (and so its WAL) open, its commit not checkpointed.
    let mut writer = cmd("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sqlite3");
    let mut stdin = writer.stdin.take().expect("stdin");
    writeln!(
        stdin,
        "PRAGMA wal_autocheckpoint=0; INSERT INTO t VALUES (2); SELECT 'committed';"
    )
    .expect("write");
    // The pragma prints its value first; the handshake is the line after the commit.
    let mut out = BufReader::new(writer.stdout.take().expect("stdout"));
    let mut line = String::new();
    while line.trim() != "committed" {
        line.clear();
        assert!(
            out.read_line(&mut line).expect("handshake") > 0,
            "sqlite3 ended"
        );
    }
    assert_eq!(count(&db), "2");
    drop(stdin);
    let _ = writer.wait();
}
