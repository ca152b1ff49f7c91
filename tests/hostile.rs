//! Hostile input: for each record tool, a corpus of malformed and malicious lines (truncated
//! JSON, wrong types for every field the tool reads, huge lines, NUL bytes, invalid UTF-8,
//! deep nesting, `..`, absolute paths, symlinks, FIFOs, SQL in names and values, control
//! characters and ANSI escapes), and for elf-lock and elf-backoff (and the others' flags) a
//! corpus of bad arguments.
//!
//! Every case is one line of data. For each, the tool must give the documented status, exactly
//! one line on stderr (`tool: line N: ...`, control characters escaped), pass nothing on, and
//! leave the state as it was: every file of the fixture (content, mode, inode), every row and
//! the schema of the database, every file of the repository (`.git` included). The same line
//! under `--keep-going` must come out as one error record naming the line, again with nothing
//! written. After the corpus, a good record with a zero timeout must go through: no lock was
//! left held.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::util::{TempDir, cmd, run_with_input_within};

/// One hostile input: what it is, the tool's arguments, the line, the status it must give and
/// words its message must hold (as printed, so an escaped ESC is written `\\x1b`).
///
/// In `input`, `@DEEP@` stands for 10,000 nested arrays, `@HUGE@` for 5,000 bytes (past
/// `--max-line 4096`) and `@16MIB@` for 17 MiB (past the default limit). Newlines before the
/// line are blank lines: the message must name the line after them.
struct Case {
    what: &'static str,
    args: &'static [&'static str],
    input: &'static [u8],
    status: i32,
    says: &'static str,
}

const fn c(
    what: &'static str,
    args: &'static [&'static str],
    input: &'static [u8],
    status: i32,
    says: &'static str,
) -> Case {
    Case {
        what,
        args,
        input,
        status,
        says,
    }
}

const SMALL: &[&str] = &["--max-line", "4096"];

// ---------------------------------------------------------------------------------------------
// elf-write. The fixture's root holds existing.md, inside/, in -> inside, out -> ../outside,
// abs -> /, link.md -> ../outside/target.md, dir/, fifo (a FIFO); ../outside/target.md is the
// secret that must never be touched.

#[rustfmt::skip]
const WRITE: &[Case] = &[
    c("truncated JSON", &[], br#"{"write":{"path":"new.md","content":"x""#, 65, "invalid JSON: EOF while parsing"),
    c("a JSON array, not an object", &[], br#"[{"write":{"path":"new.md","content":"x"}}]"#, 65, "expected a JSON object, found an array"),
    c("a bare string", &[], br#""new.md""#, 65, "expected a JSON object, found a string"),
    c("write is a string", &[], br#"{"write":"new.md"}"#, 65, "write: expected an object or an array of objects, found a string"),
    c("write is a boolean", &[], br#"{"write":true}"#, 65, "found a boolean"),
    c("write is a number", &[], br#"{"write":1}"#, 65, "found a number"),
    c("write holds a number", &[], br#"{"write":[{"path":"new.md","content":"x"},7]}"#, 65, "write[1]: expected an object, found a number"),
    c("path is a number", &[], br#"{"write":{"path":1,"content":"x"}}"#, 65, "\"path\" must be a string, found a number"),
    c("path is an array", &[], br#"{"write":{"path":["new.md"],"content":"x"}}"#, 65, "\"path\" must be a string, found an array"),
    c("path is missing", &[], br#"{"write":{"content":"x"}}"#, 65, "missing \"path\""),
    c("content is a number", &[], br#"{"write":{"path":"new.md","content":1}}"#, 65, "\"content\" must be a string, found a number"),
    c("content is an object", &[], br#"{"write":{"path":"new.md","content":{"a":1}}}"#, 65, "\"content\" must be a string, found an object"),
    c("content is missing", &[], br#"{"write":{"path":"new.md"}}"#, 65, "missing \"content\""),
    c("content twice over", &[], br#"{"write":{"path":"new.md","content":"x","content_base64":"eA=="}}"#, 65, "not both"),
    c("content_base64 is not base64", &[], br#"{"write":{"path":"new.md","content_base64":"!!!!"}}"#, 65, "invalid base64"),
    c("content_base64 is a number", &[], br#"{"write":{"path":"new.md","content_base64":7}}"#, 65, "\"content_base64\" must be a string"),
    c("mode is a number", &[], br#"{"write":{"path":"new.md","content":"x","mode":1}}"#, 65, "\"mode\" must be a string"),
    c("mode is unknown", &[], br#"{"write":{"path":"new.md","content":"x","mode":"truncate"}}"#, 65, "unknown mode \"truncate\""),
    c("unique is a string", &[], br#"{"write":{"path":"new.md","content":"x","mode":"create","unique":"yes"}}"#, 65, "\"unique\" must be true or false, found a string"),
    c("unique without create", &[], br#"{"write":{"path":"new.md","content":"x","unique":true}}"#, 65, "\"unique\" needs mode \"create\""),
    c("header is a number", &[], br#"{"write":{"path":"new.md","content":"x","mode":"append","header":1}}"#, 65, "\"header\" must be a string"),
    c("header without append", &[], br#"{"write":{"path":"new.md","content":"x","header":"H\n"}}"#, 65, "\"header\" needs mode \"append\""),
    c("file_mode is a number", &[], br#"{"write":{"path":"new.md","content":"x","file_mode":644}}"#, 65, "\"file_mode\" must be a string, found a number"),
    c("file_mode with setuid", &[], br#"{"write":{"path":"new.md","content":"x","file_mode":"4755"}}"#, 65, "setuid"),
    c("file_mode not octal", &[], br#"{"write":{"path":"new.md","content":"x","file_mode":"rwxr-xr-x"}}"#, 65, "expected octal permissions"),
    c("key is a number on an append", &[], br#"{"key":7,"write":{"path":"log.md","mode":"append","content":"x"}}"#, 65, "\"key\" must be a string, found a number"),
    c("key is empty on an append", &[], br#"{"key":"","write":{"path":"log.md","mode":"append","content":"x"}}"#, 65, "\"key\" is empty"),
    c("the second write is bad", &[], br#"{"write":[{"path":"new.md","content":"x"},{"path":"b.md"}]}"#, 65, "write[1]: missing \"content\""),
    c("a line over --max-line", SMALL, br#"{"write":{"path":"new.md","content":"@HUGE@"}}"#, 65, "line is longer than the limit of 4096 bytes"),
    c("a line over the default limit", &[], br#"{"write":{"path":"new.md","content":"@16MIB@"}}"#, 65, "line is longer than the limit of 16777216 bytes"),
    c("a raw NUL after the object", &[], b"{\"write\":{\"path\":\"new.md\",\"content\":\"x\"}}\0", 65, "invalid JSON: trailing characters"),
    c("a raw NUL inside a string", &[], b"{\"write\":{\"path\":\"new.md\",\"content\":\"a\0b\"}}", 65, "invalid JSON: control character"),
    c("an escaped NUL in the path", &[], br#"{"write":{"path":"new\u0000.md","content":"x"}}"#, 65, "path \"new\\x00.md\" contains a NUL byte"),
    c("invalid UTF-8 in the content", &[], b"{\"write\":{\"path\":\"new.md\",\"content\":\"\xff\xfe\"}}", 65, "invalid UTF-8 at byte 38"),
    c("an overlong UTF-8 slash in the path", &[], b"{\"write\":{\"path\":\"..\xc0\xafescape.md\",\"content\":\"x\"}}", 65, "invalid UTF-8 at byte 21"),
    c("half a UTF-16 surrogate pair", &[], br#"{"write":{"path":"new\ud800.md","content":"x"}}"#, 65, "invalid JSON: unexpected end of hex escape"),
    c("a byte order mark", &[], b"\xef\xbb\xbf{\"write\":{\"path\":\"new.md\",\"content\":\"x\"}}", 65, "invalid JSON"),
    c("10,000 nested arrays as write", &[], br#"{"write":@DEEP@}"#, 65, "invalid JSON: recursion limit exceeded"),
    c("10,000 nested arrays beside write", &[], br#"{"x":@DEEP@,"write":{"path":"new.md","content":"x"}}"#, 65, "recursion limit exceeded"),
    c("blank lines before a bad line", &[], b"\n  \n\t\r\n{\"write\":{\"path\":7,\"content\":\"x\"}}", 65, "\"path\" must be a string"),
    c("a path that climbs out", &[], br#"{"write":{"path":"../escape.md","content":"x"}}"#, 65, "path \"../escape.md\" leaves the root"),
    c("a path that climbs out after a folder", &[], br#"{"write":{"path":"inside/../../escape.md","content":"x"}}"#, 65, "leaves the root"),
    c("an absolute path", &[], br#"{"write":{"path":"/tmp/escape.md","content":"x"}}"#, 65, "absolute path \"/tmp/escape.md\" refused"),
    c("/etc/passwd", &[], br#"{"write":{"path":"/etc/passwd","content":"x","mode":"append"}}"#, 65, "absolute path"),
    c("a path with two leading slashes", &[], br#"{"write":{"path":"//escape.md","content":"x"}}"#, 65, "absolute path"),
    c("the path .", &[], br#"{"write":{"path":".","content":"x"}}"#, 65, "does not end with a file name"),
    c("a path ending with /", &[], br#"{"write":{"path":"inside/","content":"x"}}"#, 65, "does not end with a file name"),
    c("a path ending with ..", &[], br#"{"write":{"path":"inside/..","content":"x"}}"#, 65, "does not end with a file name"),
    c("an empty path", &[], br#"{"write":{"path":"","content":"x"}}"#, 65, "empty path"),
    c("a symlink on the way leads out", &[], br#"{"write":{"path":"out/escape.md","content":"x"}}"#, 77, "out/escape.md: refused: a symlink on the way leads outside the root"),
    c("an absolute symlink on the way", &[], br#"{"write":{"path":"abs/tmp/escape.md","content":"x"}}"#, 77, "a symlink on the way leads outside the root"),
    c("a symlink at the name (replace)", &[], br#"{"write":{"path":"link.md","content":"x"}}"#, 77, "link.md is a symlink"),
    c("a symlink at the name (append)", &[], br#"{"write":{"path":"link.md","mode":"append","content":"x"}}"#, 77, "link.md is a symlink"),
    c("a symlink at the name (create)", &[], br#"{"write":{"path":"link.md","mode":"create","content":"x"}}"#, 77, "link.md is a symlink"),
    c("a folder at the name", &[], br#"{"write":{"path":"dir","content":"x"}}"#, 77, "dir is a folder"),
    c("a FIFO at the name", &[], br#"{"write":{"path":"fifo","mode":"append","content":"x"}}"#, 77, "fifo is not a regular file"),
    c("a file on the way", &[], br#"{"write":{"path":"existing.md/new.md","content":"x"}}"#, 65, "a folder on the way is not a folder"),
    c("create over other content", &[], br#"{"write":{"path":"existing.md","mode":"create","content":"new"}}"#, 77, "the file exists with other content"),
    c("an array whose second path leads out", &[], br#"{"write":[{"path":"new.md","content":"x"},{"path":"out/escape.md","content":"y"}]}"#, 77, "write[1]: out/escape.md: refused"),
    c("an array whose second path is a FIFO", &[], br#"{"write":[{"path":"new/a.md","content":"x"},{"path":"fifo","mode":"append","content":"y"}]}"#, 77, "write[1]: fifo: refused"),
    c("an array whose last write creates over other content", &[], br#"{"write":[{"path":"new.md","content":"x"},{"path":"existing.md","mode":"create","content":"y"}]}"#, 77, "write[1]: existing.md: refused"),
    c("an array whose second path has a file on the way", &[], br#"{"write":[{"path":"new.md","content":"x"},{"path":"existing.md/x","content":"y"}]}"#, 65, "write[1]: existing.md/x: a folder on the way"),
    c("a duplicate write key: the last one counts", &[], br#"{"write":null,"write":{"path":"../escape.md","content":"x"}}"#, 65, "leaves the root"),
    c("an ANSI escape in the mode", &[], br#"{"write":{"path":"new.md","content":"x","mode":"\u001b[31mred"}}"#, 65, "unknown mode \"\\x1b[31mred\""),
    c("a terminal title escape in a refused path", &[], br#"{"write":{"path":"\u001b]0;owned\u0007/../../x","content":"x"}}"#, 65, "\\x1b]0;owned\\x07/../../x"),
    c("a newline in a refused path", &[], br#"{"write":{"path":"a\n/../../x","content":"x"}}"#, 65, "path \"a\\n/../../x\" leaves the root"),
    c("a C1 CSI in a refused path", &[], br#"{"write":{"path":"\u009b2J/../../x","content":"x"}}"#, 65, "\\x9b2J/../../x"),
    c("a reference to nothing", &[], br#"{"write":{"path":"new.md","content":{"$ref":"/nope"}}}"#, 65, "reference \"/nope\" resolves to nothing in the record"),
    c("a reference past the end of an array", &[], br#"{"a":[[[1]]],"write":{"path":"new.md","content":{"$ref":"/a/0/0/5"}}}"#, 65, "reference \"/a/0/0/5\" resolves to nothing"),
    c("a reference with a leading-zero index", &[], br#"{"a":[1,2],"write":{"path":"new.md","content":{"$ref":"/a/01"}}}"#, 65, "resolves to nothing"),
    c("a reference to an object as content", &[], br#"{"x":{"a":1},"write":{"path":"new.md","content":{"$ref":"/x"}}}"#, 65, "\"content\" must be a string, found an object"),
    c("a reference to its own field (no cycle: the value found is data)", &[], br#"{"write":{"path":"new.md","content":{"$ref":"/write/content"}}}"#, 65, "\"content\" must be a string, found an object"),
    c("a joined part that is an array", &[], br#"{"x":[1],"write":{"path":"new.md","content":{"$join":["a",{"$ref":"/x"}]}}}"#, 65, "part 1 of \"$join\" (a reference) is an array"),
    c("a joined part that is null", &[], br#"{"write":{"path":"new.md","content":{"$join":["a",null]}}}"#, 65, "part 1 of \"$join\" is null"),
    c("a pointer without a leading slash", &[], br#"{"write":{"path":"new.md","content":{"$ref":"key"}}}"#, 65, "is not a JSON Pointer"),
    c("a pointer with a bad escape", &[], br#"{"write":{"path":"new.md","content":{"$ref":"/a~2"}}}"#, 65, "\"~\" must be followed by 0 or 1"),
    c("a reference with another key", &[], br#"{"write":{"path":"new.md","content":{"$ref":"/key","x":1}}}"#, 65, "must have no other key"),
    c("the whole write a reference", &[], br#"{"w":{"path":"new.md","content":"y"},"write":{"$ref":"/w"}}"#, 65, "not a reference"),
    c("a path by reference that climbs out", &[], br#"{"p":"../escape.md","write":{"path":{"$ref":"/p"},"content":"x"}}"#, 65, "path \"../escape.md\" leaves the root"),
    c("a path by escaped pointer that climbs out", &[], br#"{"a/b":{"c~d":"../x.md"},"write":{"path":{"$ref":"/a~1b/c~0d"},"content":"x"}}"#, 65, "leaves the root"),
    c("a joined path through a symlink out", &[], br#"{"d":"out","write":{"path":{"$join":[{"$ref":"/d"},"/escape.md"]},"content":"x"}}"#, 77, "a symlink on the way leads outside the root"),
    c("a path by reference to an absolute path", &[], br#"{"p":"/etc/passwd","write":{"path":{"$ref":"/p"},"content":"x","mode":"append"}}"#, 65, "absolute path"),
];

#[test]
fn elf_write_refuses_every_hostile_line_and_writes_nothing() {
    let t = TempDir::new();
    let root = t.join("root");
    for d in ["root/inside", "root/dir", "outside", "locks"] {
        std::fs::create_dir_all(t.join(d)).expect("mkdir");
    }
    std::fs::write(root.join("existing.md"), "old\n").expect("write");
    std::fs::write(t.join("outside/target.md"), "secret\n").expect("write");
    symlink("inside", root.join("in")).expect("symlink");
    symlink("../outside", root.join("out")).expect("symlink");
    symlink("/", root.join("abs")).expect("symlink");
    symlink("../outside/target.md", root.join("link.md")).expect("symlink");
    mkfifo(&root.join("fifo"));
    let elf = |args: &[&str]| {
        let mut c = cmd(env!("CARGO_BIN_EXE_elf-write"));
        c.arg("--root")
            .arg(&root)
            .arg("--lock-dir")
            .arg(t.join("locks"))
            .args(["--no-sync", "-w", "0"])
            .args(args)
            .current_dir(t.path());
        c
    };
    let state = || tree(t.path(), &["locks"]);
    let tool = Tool {
        name: "elf-write",
        keep_going: |_| Some(0),
    };
    tool.corpus(WRITE, &elf, &state);
    // No lock left held: each lock file can be taken at once, and a good record goes through
    // with a zero timeout.
    for e in std::fs::read_dir(t.join("locks")).expect("locks").flatten() {
        let f = std::fs::File::open(e.path()).expect("open lock");
        assert!(try_flock(&f), "{} is still held", e.path().display());
    }
    let out = run(
        elf(&[]),
        br#"{"write":{"path":"existing.md","mode":"append","content":"more\n"}}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(root.join("existing.md")).expect("read"),
        "old\nmore\n"
    );
    assert_eq!(
        std::fs::read_to_string(t.join("outside/target.md")).expect("read"),
        "secret\n"
    );
}

// ---------------------------------------------------------------------------------------------
// elf-db. The database has learnings (id AUTOINCREMENT, type and title NOT NULL, severity with
// a CHECK), a table named `odd "name"`, one row, and no journal table; every case must leave
// schema, rows and sqlite_sequence as they are, and make no other file (ATTACH, VACUUM INTO).

#[rustfmt::skip]
const DB: &[Case] = &[
    c("truncated JSON", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title":"x"}"#, 65, "invalid JSON: EOF while parsing"),
    c("db is a string of SQL", &["insert"], br#"{"db":"INSERT INTO learnings(type,title) VALUES('f','x')"}"#, 65, "db must be an object or an array of objects, found a string"),
    c("db is a number", &["insert"], br#"{"db":7}"#, 65, "found a number"),
    c("db holds a string", &["insert"], br#"{"db":[{"table":"learnings","values":{"type":"f","title":"x"}},"DROP TABLE learnings"]}"#, 65, "db[1] must be an object, found a string"),
    c("table is missing", &["insert"], br#"{"db":{"values":{"type":"f","title":"x"}}}"#, 65, "db: table is missing"),
    c("table is a number", &["insert"], br#"{"db":{"table":1,"values":{"type":"f","title":"x"}}}"#, 65, "table must be a string, found a number"),
    c("table is null", &["insert"], br#"{"db":{"table":null,"values":{"type":"f","title":"x"}}}"#, 65, "table must be a string, found null"),
    c("values is missing", &["insert"], br#"{"db":{"table":"learnings"}}"#, 65, "values is missing"),
    c("values is a string", &["insert"], br#"{"db":{"table":"learnings","values":"('f','x')"}}"#, 65, "values must be an object or an array of objects, found a string"),
    c("values holds a string", &["insert"], br#"{"db":{"table":"learnings","values":[{"type":"f","title":"x"},"y"]}}"#, 65, "values[1] must be an object, found a string"),
    c("sql given to insert", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title":"x"},"sql":"DROP TABLE learnings"}}"#, 65, "unknown key 'sql'"),
    c("SQL in the table name", &["insert"], br#"{"db":{"table":"learnings; DROP TABLE learnings; --","values":{"type":"f","title":"x"}}}"#, 65, "no table named 'learnings; DROP TABLE learnings; --'"),
    c("a quote in the table name", &["insert"], br#"{"db":{"table":"learnings\"(type,title) VALUES('f','x'); DROP TABLE learnings; --","values":{}}}"#, 65, "no table named 'learnings\"(type"),
    c("SQLite's own table", &["insert"], br#"{"db":{"table":"sqlite_master","values":{"type":"table","name":"x"}}}"#, 65, "no table named 'sqlite_master'"),
    c("sqlite_sequence", &["insert"], br#"{"db":{"table":"SQLITE_SEQUENCE","values":{"name":"learnings","seq":1000}}}"#, 65, "no table named 'SQLITE_SEQUENCE'"),
    c("the journal table", &["insert"], br#"{"db":{"table":"elf_journal","values":{"key":"k","record":"{}","ids":"[]","created_at":0}}}"#, 65, "no table named 'elf_journal'"),
    c("SQL in a column name", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title\") VALUES ('x'); DROP TABLE learnings; --":"x"}}}"#, 65, "has no column named 'title\") VALUES"),
    c("a column twice by case", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title":"a","TITLE":"b"}}}"#, 65, "column title is given twice"),
    c("null in a NOT NULL column", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title":null}}}"#, 65, "NOT NULL constraint failed: learnings.title"),
    c("a value the CHECK refuses", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title":"x","severity":9}}}"#, 65, "CHECK constraint failed"),
    c("a number out of every range", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title":"x","severity":1e999}}}"#, 65, "out of range"),
    c("the second row fails", &["insert"], br#"{"db":{"table":"learnings","values":[{"type":"f","title":"x"},{"type":"f","title":null}]}}"#, 65, "values[1]: NOT NULL constraint failed"),
    c("the second statement fails", &["insert"], br#"{"db":[{"table":"learnings","values":{"type":"f","title":"x"}},{"table":"nope","values":{}}]}"#, 65, "db[1]: no table named 'nope'"),
    c("control characters in the table name", &["insert"], br#"{"db":{"table":"\u001b[2Jlearnings\u0007","values":{}}}"#, 65, "no table named '\\x1b[2Jlearnings\\x07'"),
    c("a line over --max-line", &["insert", "--max-line", "4096"], br#"{"db":{"table":"learnings","values":{"type":"f","title":"@HUGE@"}}}"#, 65, "line is longer than the limit of 4096 bytes"),
    c("a line over the default limit", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title":"@16MIB@"}}}"#, 65, "line is longer than the limit of 16777216 bytes"),
    c("a raw NUL", &["insert"], b"{\"db\":{\"table\":\"learnings\",\"values\":{\"type\":\"f\",\"title\":\"a\0b\"}}}", 65, "invalid JSON: control character"),
    c("invalid UTF-8", &["insert"], b"{\"db\":{\"table\":\"learnings\",\"values\":{\"type\":\"f\",\"title\":\"\xc3\x28\"}}}", 65, "invalid UTF-8 at byte 58"),
    c("10,000 nested arrays as a value", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title":@DEEP@}}}"#, 65, "recursion limit exceeded"),
    c("blank lines before a bad line", &["insert"], b"\n\r\n{\"db\":{\"table\":\"nope\",\"values\":{}}}", 65, "no table named 'nope'"),
    c("journal: key is a number", &["insert", "--journal"], br#"{"key":7,"db":{"table":"learnings","values":{"type":"f","title":"x"}}}"#, 65, "key must be a string, found a number"),
    c("journal: key is empty", &["insert", "--journal"], br#"{"key":"","db":{"table":"learnings","values":{"type":"f","title":"x"}}}"#, 65, "key is empty"),
    c("journal: key is an object", &["insert", "--journal"], br#"{"key":{"$ne":null},"db":{"table":"learnings","values":{"type":"f","title":"x"}}}"#, 65, "key must be a string, found an object"),
    c("journal: the statement fails", &["insert", "--journal"], br#"{"key":"k1","db":{"table":"learnings","values":{"type":"f"}}}"#, 65, "NOT NULL constraint failed"),
    c("table form: the record has db", &["insert", "--table", "learnings"], br#"{"type":"f","title":"x","db":{}}"#, 65, "has a key \"db\""),
    c("table form: SQL in a key", &["insert", "--table", "learnings"], br#"{"type":"f","title":"x","x\"); DROP TABLE learnings; --":1}"#, 65, "has no column named 'x\"); DROP TABLE"),
    c("table form: SQL as the table", &["insert", "--table", "learnings; DROP TABLE learnings"], br#"{"type":"f","title":"x"}"#, 65, "no table named 'learnings; DROP TABLE learnings'"),
    c("table form: a wrong type", &["insert", "--table", "learnings"], br#"{"type":"f","title":"x","severity":"high"}"#, 65, "CHECK constraint failed"),
    c("exec: sql is a number", &["exec"], br#"{"db":{"sql":7}}"#, 65, "sql must be a string, found a number"),
    c("exec: sql is blank", &["exec"], br#"{"db":{"sql":" \n "}}"#, 65, "sql is empty"),
    c("exec: sql is missing", &["exec"], br#"{"db":{"params":[]}}"#, 65, "sql is missing"),
    c("exec: table given to exec", &["exec"], br#"{"db":{"table":"learnings","values":{}}}"#, 65, "unknown key 'table'"),
    c("exec: two statements", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = 'x'; DROP TABLE learnings"}}"#, 65, "more than one statement"),
    c("exec: a statement hidden after a NUL", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = 'x'\u0000; DROP TABLE learnings"}}"#, 65, "sql contains a NUL character"),
    c("exec: only a comment (fuzz)", &["exec"], br#"{"db":{"sql":"/* COMMIT"}}"#, 65, "sql holds no statement"),
    c("exec: only semicolons", &["exec"], br#"{"db":{"sql":" ; ;"}}"#, 65, "sql holds no statement"),
    c("exec: BEGIN", &["exec"], br#"{"db":{"sql":"BEGIN"}}"#, 65, "not authorized"),
    c("exec: COMMIT", &["exec"], br#"{"db":{"sql":"COMMIT"}}"#, 65, "not authorized"),
    c("exec: ROLLBACK", &["exec"], br#"{"db":{"sql":"ROLLBACK"}}"#, 65, "not authorized"),
    c("exec: SAVEPOINT", &["exec"], br#"{"db":{"sql":"SAVEPOINT s"}}"#, 65, "not authorized"),
    c("exec: ATTACH", &["exec"], br#"{"db":{"sql":"ATTACH DATABASE 'evil.db' AS evil"}}"#, 65, "not authorized"),
    c("exec: PRAGMA", &["exec"], br#"{"db":{"sql":"PRAGMA writable_schema = ON"}}"#, 65, "not authorized"),
    c("exec: VACUUM INTO", &["exec"], br#"{"db":{"sql":"VACUUM INTO 'copy.db'"}}"#, 65, "cannot VACUUM from within a transaction"),
    c("exec: load_extension", &["exec"], br#"{"db":{"sql":"SELECT load_extension('./evil')"}}"#, 65, "not authorized"),
    c("exec: a syntax error", &["exec"], br#"{"db":{"sql":"DROP TABLE learnings WHERE 1"}}"#, 65, "syntax error"),
    c("exec: an unknown table", &["exec"], br#"{"db":{"sql":"DELETE FROM nope"}}"#, 65, "no such table: nope"),
    c("exec: a constraint", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = NULL"}}"#, 65, "NOT NULL constraint failed"),
    c("exec: params is a string", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = :t","params":"x"}}"#, 65, "params must be an object or an array, found a string"),
    c("exec: params is missing", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = :t"}}"#, 65, "params is missing"),
    c("exec: no value for a parameter", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = :t","params":{"x":"y"}}}"#, 65, "params has no value for :t"),
    c("exec: an unused parameter", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = :t","params":{"t":"y","extra":1}}}"#, 65, "params has 'extra', which the sql does not use"),
    c("exec: one parameter under two sigils", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = :t","params":{"t":"y",":t":"z"}}}"#, 65, "params gives 't' and ':t', the same parameter"),
    c("exec: too many positional params", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = ?","params":["a","b"]}}"#, 65, "sql has 1 parameter(s), params has 2"),
    c("exec: a value with an ANSI escape hits a constraint", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET severity = :s","params":{"s":"\u001b[31mhigh"}}}"#, 65, "CHECK constraint failed"),
    c("done: key is a number", &["done"], br#"{"key":7}"#, 65, "key must be a string, found a number"),
    c("done: key is an array", &["done"], br#"{"key":["k1"]}"#, 65, "key must be a string, found an array"),
    c("a reference to nothing in a value", &["insert"], br#"{"db":{"table":"learnings","values":{"type":"f","title":{"$ref":"/t"}}}}"#, 65, "reference \"/t\" resolves to nothing in the record"),
    c("SQL in a table name by reference", &["insert"], br#"{"t":"learnings; DROP TABLE learnings","db":{"table":{"$ref":"/t"},"values":{"type":"f","title":"x"}}}"#, 65, "no table named 'learnings; DROP TABLE learnings'"),
    c("a statement object by reference", &["insert"], br#"{"s":{"table":"learnings","values":{"type":"f","title":"x"}},"db":{"$ref":"/s"}}"#, 65, "a statement object cannot be a reference"),
    c("exec: sql by reference", &["exec"], br#"{"s":"DROP TABLE learnings","db":{"sql":{"$ref":"/s"}}}"#, 65, "sql cannot be a reference"),
    c("exec: sql joined from the record", &["exec"], br#"{"s":"learnings","db":{"sql":{"$join":["DROP TABLE ",{"$ref":"/s"}]}}}"#, 65, "sql cannot be a reference"),
    c("exec: a parameter by reference to nothing", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = :t","params":{"t":{"$ref":"/write/path"}}}}"#, 65, "reference \"/write/path\" resolves to nothing"),
    c("exec: a joined parameter with a boolean part", &["exec"], br#"{"db":{"sql":"UPDATE learnings SET title = :t","params":{"t":{"$join":["a",true]}}}}"#, 65, "part 1 of \"$join\" is a boolean"),
    c("exec --key: a reference with another key", &["exec", "--key", "fix"], br#"{"fix":{"sql":"UPDATE learnings SET title = :t","params":{"t":{"$ref":"/x","y":1}}}}"#, 65, "must have no other key"),
];

#[test]
fn elf_db_refuses_every_hostile_line_and_writes_nothing() {
    let t = TempDir::new();
    let db = t.join("index.db");
    {
        let conn = Connection::open(&db).expect("create db");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE learnings (
                 id INTEGER PRIMARY KEY AUTOINCREMENT,
                 type TEXT NOT NULL,
                 title TEXT NOT NULL,
                 severity INTEGER CHECK (severity BETWEEN 1 AND 5),
                 tags TEXT
             );
             CREATE TABLE \"odd \"\"name\"\"\" (x TEXT);
             INSERT INTO learnings (type, title) VALUES ('failure', 'first');",
        )
        .expect("schema");
    }
    let elf = |args: &[&str]| {
        let mut c = cmd(env!("CARGO_BIN_EXE_elf-db"));
        c.args(args)
            .arg("--db")
            .arg(&db)
            .args(["--busy-timeout", "0"])
            .current_dir(t.path());
        c
    };
    let state = || db_state(t.path(), &db);
    let tool = Tool {
        name: "elf-db",
        keep_going: |code| (code == 65).then_some(0),
    };
    tool.corpus(DB, &elf, &state);
    assert!(
        !db_state(t.path(), &db).contains_key("schema:elf_journal"),
        "a failed record made the journal table"
    );
    // No lock left held: a good record goes through with a zero busy timeout.
    let out = run(
        elf(&["insert"]),
        br#"{"db":{"table":"learnings","values":{"type":"failure","title":"\u001b[31m'); DROP TABLE learnings; --"}}}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let conn = Connection::open(&db).expect("open");
    let titles: Vec<String> = conn
        .prepare("SELECT title FROM learnings ORDER BY id")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .expect("titles");
    assert_eq!(
        titles,
        ["first", "\u{1b}[31m'); DROP TABLE learnings; --"],
        "values are stored literally"
    );
}

// ---------------------------------------------------------------------------------------------
// elf-commit. The repository has a.md committed, staged.md staged by the user, untracked.md,
// lnk -> ../outside, fifo (a FIFO), nested/ (a repository of its own), ignored.md (ignored);
// every case must leave every file of the work tree and of .git as it was.

#[rustfmt::skip]
const COMMIT: &[Case] = &[
    c("truncated JSON", &[], br#"{"commit":{"paths":["untracked.md"],"message":"m"}"#, 65, "invalid JSON: EOF while parsing"),
    c("commit is a string", &[], br#"{"commit":"untracked.md"}"#, 65, "commit must be an object, found a string"),
    c("commit is an array", &[], br#"{"commit":["untracked.md"]}"#, 65, "commit must be an object, found an array"),
    c("paths is a number", &[], br#"{"commit":{"paths":1,"message":"m"}}"#, 65, "commit.paths must be an array of strings, found a number"),
    c("paths is an object", &[], br#"{"commit":{"paths":{"a":"untracked.md"},"message":"m"}}"#, 65, "found an object"),
    c("paths holds a number", &[], br#"{"commit":{"paths":["untracked.md",7],"message":"m"}}"#, 65, "commit.paths must hold strings, found a number"),
    c("paths is empty", &[], br#"{"commit":{"paths":[],"message":"m"}}"#, 65, "nothing to commit"),
    c("message is a number", &[], br#"{"commit":{"paths":["untracked.md"],"message":7}}"#, 65, "commit.message must be a string, found a number"),
    c("message is missing and no -m", &[], br#"{"commit":{"paths":["untracked.md"]}}"#, 65, "no commit message"),
    c("a message of only escapes and controls", &[], br#"{"commit":{"paths":["untracked.md"],"message":"\u001b[31m\u0007\u001b]0;x\u0007\r\n"}}"#, 65, "the commit message is empty"),
    c("write.path is a number", &[], br#"{"write":{"path":5},"commit":{"message":"m"}}"#, 65, "write.path must be a string, found a number"),
    c("write is a string", &[], br#"{"write":"untracked.md","commit":{"message":"m"}}"#, 65, "write must be an object or an array, found a string"),
    c("write holds a number", &[], br#"{"write":[7],"commit":{"message":"m"}}"#, 65, "write[0] must be an object, found a number"),
    c("a path that climbs out", &[], br#"{"commit":{"paths":["../outside/secret.md"],"message":"m"}}"#, 65, "path ../outside/secret.md is outside the work tree"),
    c("a path that climbs out after a folder", &[], br#"{"commit":{"paths":["sub/../../outside/secret.md"],"message":"m"}}"#, 65, "is outside the work tree"),
    c("an absolute path outside", &[], br#"{"commit":{"paths":["/etc/passwd"],"message":"m"}}"#, 65, "path /etc/passwd is outside the work tree"),
    c("a path into .git", &[], br#"{"commit":{"paths":[".git/config"],"message":"m"}}"#, 65, "path .git/config is inside .git"),
    c("a path into .GIT", &[], br#"{"commit":{"paths":[".GIT/hooks/pre-commit"],"message":"m"}}"#, 65, "is inside .git"),
    c("a path into .git after ..", &[], br#"{"commit":{"paths":["x/../.git/HEAD"],"message":"m"}}"#, 65, "is inside .git"),
    c("the work tree itself", &[], br#"{"commit":{"paths":["."],"message":"m"}}"#, 65, "is the work tree itself"),
    c("an empty path", &[], br#"{"commit":{"paths":[""],"message":"m"}}"#, 65, "empty path"),
    c("a NUL in a path", &[], br#"{"commit":{"paths":["untracked\u0000.md"],"message":"m"}}"#, 65, "path untracked\\x00.md contains a NUL byte"),
    c("a path through a symlink", &[], br#"{"commit":{"paths":["lnk/secret.md"],"message":"m"}}"#, 77, "goes through the symbolic link lnk"),
    c("a FIFO", &[], br#"{"commit":{"paths":["fifo"],"message":"m"}}"#, 65, "fifo is not a regular file"),
    c("a good path and a FIFO", &[], br#"{"commit":{"paths":["untracked.md","fifo"],"message":"m"}}"#, 65, "fifo is not a regular file"),
    c("a nested repository", &[], br#"{"commit":{"paths":["nested"],"message":"m"}}"#, 65, "nested is a nested git repository"),
    c("a missing, untracked path", &[], br#"{"commit":{"paths":["nope.md"],"message":"m"}}"#, 66, "nope.md does not exist and is not tracked"),
    c("an ignored path with --ignored error", &["--ignored", "error"], br#"{"commit":{"paths":["ignored.md"],"message":"m"}}"#, 65, "ignored.md is ignored by git"),
    c("a good path and one outside", &[], br#"{"commit":{"paths":["untracked.md","../outside/secret.md"],"message":"m"}}"#, 65, "outside the work tree"),
    c("a line over --max-line", SMALL, br#"{"commit":{"paths":["untracked.md"],"message":"@HUGE@"}}"#, 65, "line is longer than the limit of 4096 bytes"),
    c("a line over the default limit", &[], br#"{"commit":{"paths":["untracked.md"],"message":"@16MIB@"}}"#, 65, "line is longer than the limit of 16777216 bytes"),
    c("a raw NUL", &[], b"{\"commit\":{\"paths\":[\"untracked.md\"],\"message\":\"m\"}}\0", 65, "invalid JSON: trailing characters"),
    c("invalid UTF-8", &[], b"{\"commit\":{\"paths\":[\"untracked.md\"],\"message\":\"\xed\xa0\x80\"}}", 65, "invalid UTF-8 at byte 48"),
    c("10,000 nested arrays as paths", &[], br#"{"commit":{"paths":@DEEP@,"message":"m"}}"#, 65, "recursion limit exceeded"),
    c("blank lines before a bad line", &[], b"\n\n\n\n{\"commit\":{\"paths\":[\"../x\"],\"message\":\"m\"}}", 65, "outside the work tree"),
    c("an ANSI escape in a refused path", &[], br#"{"commit":{"paths":["\u001b[2J/../../x"],"message":"m"}}"#, 65, "path \\x1b[2J/../../x is outside"),
    c("a newline in a refused path", &[], br#"{"commit":{"paths":["a\n/../../x"],"message":"m"}}"#, 65, "path a\\n/../../x is outside"),
    c("a path by reference that climbs out", &[], br#"{"p":"../outside/secret.md","commit":{"paths":[{"$ref":"/p"}],"message":"m"}}"#, 65, "path ../outside/secret.md is outside the work tree"),
    c("a path by reference into .git", &[], br#"{"p":".git/config","commit":{"paths":[{"$ref":"/p"}],"message":"m"}}"#, 65, "path .git/config is inside .git"),
    c("paths by reference to nothing", &[], br#"{"commit":{"paths":{"$ref":"/nope"},"message":"m"}}"#, 65, "reference \"/nope\" resolves to nothing"),
    c("a message joined from an object", &[], br#"{"o":{"a":1},"commit":{"paths":["untracked.md"],"message":{"$join":["m ",{"$ref":"/o"}]}}}"#, 65, "(a reference) is an object"),
    c("the whole commit a reference", &[], br#"{"c":{"paths":["untracked.md"],"message":"m"},"commit":{"$ref":"/c"}}"#, 65, "not a reference"),
    c("write.path by reference that climbs out", &[], br#"{"p":"../outside/secret.md","write":{"path":{"$ref":"/p"}},"commit":{"message":"m"}}"#, 65, "write.path must be a string, found an object"),
];

#[test]
fn elf_commit_refuses_every_hostile_line_and_commits_nothing() {
    let t = TempDir::new();
    let wt = t.join("repo");
    std::fs::create_dir_all(&wt).expect("mkdir");
    std::fs::create_dir_all(t.join("outside")).expect("mkdir");
    std::fs::create_dir_all(t.join("home")).expect("mkdir");
    std::fs::write(t.join("outside/secret.md"), "secret\n").expect("write");
    let env = |c: &mut Command| {
        c.current_dir(&wt)
            .env("HOME", t.join("home"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_OPTIONAL_LOCKS", "0")
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com");
    };
    let git = |args: &[&str]| {
        let mut c = cmd("git");
        env(&mut c);
        let out = c.args(args).output().expect("git");
        assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    git(&["init", "-q", "-b", "main", "."]);
    std::fs::write(wt.join("a.md"), "a\n").expect("write");
    std::fs::write(wt.join(".gitignore"), "ignored.md\n").expect("write");
    git(&["add", "a.md", ".gitignore"]);
    git(&["commit", "-q", "-m", "init"]);
    std::fs::write(wt.join("staged.md"), "staged\n").expect("write");
    git(&["add", "staged.md"]);
    std::fs::write(wt.join("untracked.md"), "u\n").expect("write");
    std::fs::write(wt.join("ignored.md"), "i\n").expect("write");
    symlink("../outside", wt.join("lnk")).expect("symlink");
    mkfifo(&wt.join("fifo"));
    std::fs::create_dir_all(wt.join("nested")).expect("mkdir");
    let mut c = cmd("git");
    env(&mut c);
    let out = c
        .args(["init", "-q", "nested"])
        .output()
        .expect("git init nested");
    assert!(out.status.success());
    std::fs::write(wt.join("nested/n.md"), "n\n").expect("write");
    let elf = |args: &[&str]| {
        let mut c = cmd(env!("CARGO_BIN_EXE_elf-commit"));
        env(&mut c);
        c.arg("--repo").arg(&wt).args(["-w", "0"]).args(args);
        c
    };
    // elf-commit's own lock file is made by its first run and kept for good: make it now.
    let out = run(
        elf(&["-m", "lock file"]),
        br#"{"commit":{"paths":["a.md"]}}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let state = || {
        let mut s = tree(t.path(), &[]);
        s.insert("git status".into(), git(&["status", "--porcelain"]));
        s.insert("git refs".into(), git(&["for-each-ref"]));
        s
    };
    let tool = Tool {
        name: "elf-commit",
        keep_going: |_| Some(0),
    };
    tool.corpus(COMMIT, &elf, &state);
    // No lock left held: a good record goes through with a zero timeout, and the user's
    // staged file stays staged and out of the commit.
    let head = git(&["rev-parse", "HEAD"]);
    let out = run(
        elf(&[]),
        br#"{"commit":{"paths":["untracked.md"],"message":"ok \u001b]0;owned\u0007 title\nInjected: trailer"}}"#,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_ne!(git(&["rev-parse", "HEAD"]), head);
    assert_eq!(
        git(&["show", "--name-only", "--format=%s", "HEAD"]),
        "ok  title\n\nuntracked.md\n"
    );
    assert!(git(&["status", "--porcelain"]).contains("A  staged.md"));
}

// ---------------------------------------------------------------------------------------------
// Arguments: bad flags, values and operands of every tool, elf-lock and elf-backoff above all.
// Each must give its status and one line, run no command (`touch ran`) and make no file.

struct ArgCase {
    bin: &'static str,
    args: &'static [&'static str],
    status: i32,
    says: &'static str,
}

const fn a(
    bin: &'static str,
    args: &'static [&'static str],
    status: i32,
    says: &'static str,
) -> ArgCase {
    ArgCase {
        bin,
        args,
        status,
        says,
    }
}

const LOCK: &str = env!("CARGO_BIN_EXE_elf-lock");
const BACKOFF: &str = env!("CARGO_BIN_EXE_elf-backoff");
const WRITE_BIN: &str = env!("CARGO_BIN_EXE_elf-write");
const DB_BIN: &str = env!("CARGO_BIN_EXE_elf-db");
const COMMIT_BIN: &str = env!("CARGO_BIN_EXE_elf-commit");

#[rustfmt::skip]
const ARGS: &[ArgCase] = &[
    a(LOCK, &["-w", "-1", "l.lock", "--", "touch", "ran"], 64, "error parsing flag --timeout: invalid value '-1'"),
    a(LOCK, &["-w", "nan", "l.lock", "--", "touch", "ran"], 64, "--timeout: invalid value 'nan'"),
    a(LOCK, &["-w", "1e10", "l.lock", "--", "touch", "ran"], 64, "--timeout: invalid value '1e10'"),
    a(LOCK, &["-w", "0x10", "l.lock", "--", "touch", "ran"], 64, "--timeout: invalid value '0x10'"),
    a(LOCK, &["-w"], 64, "flag --timeout needs a value"),
    a(LOCK, &["-E", "256", "l.lock", "--", "touch", "ran"], 64, "--conflict-exit-code: invalid value '256'"),
    a(LOCK, &["-E", "-1", "l.lock", "--", "touch", "ran"], 64, "--conflict-exit-code"),
    a(LOCK, &["--mode", "99999", "l.lock", "--", "touch", "ran"], 64, "--mode: invalid value '99999'"),
    a(LOCK, &["--mode", "rw-r--r--", "l.lock", "--", "touch", "ran"], 64, "--mode"),
    a(LOCK, &["--stale-after", "0", "--mkdir", "d.lock", "--", "touch", "ran"], 64, "--stale-after: invalid value '0'"),
    a(LOCK, &["--bogus", "l.lock", "--", "touch", "ran"], 64, "unknown flag --bogus"),
    a(LOCK, &["--\u{1b}[31mred", "l.lock", "--", "touch", "ran"], 64, "unknown flag --\\x1b[31mred"),
    a(LOCK, &["l.lock"], 64, "no command given"),
    a(LOCK, &["l.lock", "--"], 64, "no command given"),
    a(LOCK, &["-u", "l.lock", "--", "touch", "ran"], 64, "-u releases the lock on a descriptor"),
    a(LOCK, &["-F", "-o", "l.lock", "--", "touch", "ran"], 64, "-F cannot be combined with -o or --mkdir"),
    a(LOCK, &["-s", "--mkdir", "d.lock", "--", "touch", "ran"], 64, "--mkdir locks are always exclusive"),
    a(LOCK, &["--status", "-c", "touch ran", "l.lock"], 64, "--status runs nothing"),
    a(LOCK, &["--status"], 64, "--status needs a LOCKFILE"),
    a(LOCK, &["-c", "touch ran", "l.lock", "--", "touch", "ran"], 64, "both -c STRING and a command after --"),
    a(LOCK, &["l.lock", "-c", "touch ran", "extra"], 64, "LOCKFILE -c takes exactly one STRING"),
    a(LOCK, &["99999999999"], 64, "descriptor 99999999999 is out of range"),
    a(LOCK, &["sym.lock", "--", "touch", "ran"], 77, "lock file sym.lock is a symlink; refusing to follow it"),
    a(LOCK, &["fifo", "--", "touch", "ran"], 77, "lock file fifo is not a regular file"),
    a(LOCK, &["missing/l.lock", "--", "touch", "ran"], 66, "opening lock file missing/l.lock"),
    a(LOCK, &["missing/\u{1b}[31m\n.lock", "--", "touch", "ran"], 66, "missing/\\x1b[31m\\n.lock"),
    a(LOCK, &["--mkdir", "\u{1b}[2J/d.lock", "--", "touch", "ran"], 66, "\\x1b[2J: No such file or directory"),
    a(BACKOFF, &["-n", "0", "--", "touch", "ran"], 64, "--attempts: invalid value '0'"),
    a(BACKOFF, &["-n", "4294967296", "--", "touch", "ran"], 64, "--attempts"),
    a(BACKOFF, &["--base", "-1", "--", "touch", "ran"], 64, "--base: invalid value '-1'"),
    a(BACKOFF, &["--base", "1w", "--", "touch", "ran"], 64, "--base: invalid value '1w'"),
    a(BACKOFF, &["--base", "99999999999999999999", "--", "touch", "ran"], 64, "duration out of range"),
    a(BACKOFF, &["--max-delay", "1e3", "--", "touch", "ran"], 64, "--max-delay"),
    a(BACKOFF, &["--base", "20000000000", "--", "touch", "ran"], 64, "a delay may be at most 584 years"),
    a(BACKOFF, &["--max-delay", "18446744074", "--schedule"], 64, "a delay may be at most 584 years"),
    a(BACKOFF, &["--max-time", "nan", "--", "touch", "ran"], 64, "--max-time"),
    a(BACKOFF, &["--retry-on", "0", "--", "touch", "ran"], 64, "'0' is not an exit status from 1 to 255"),
    a(BACKOFF, &["--retry-on", "1-999", "--", "touch", "ran"], 64, "'999' is not an exit status"),
    a(BACKOFF, &["--retry-on", "3-1", "--", "touch", "ran"], 64, "range 3-1 is empty"),
    a(BACKOFF, &["--retry-on", "1,,2", "--", "touch", "ran"], 64, "--retry-on"),
    a(BACKOFF, &["--jitter", "\u{1b}[31mfull", "--", "touch", "ran"], 64, "invalid value '\\x1b[31mfull'"),
    a(BACKOFF, &["--seed", "-1", "--", "touch", "ran"], 64, "--seed"),
    a(BACKOFF, &["--schedule", "--", "touch", "ran"], 64, "--schedule runs nothing"),
    a(BACKOFF, &[], 64, "no command given"),
    a(BACKOFF, &["--", "missing/\u{1b}[31mcmd"], 127, "cannot run missing/\\x1b[31mcmd"),
    a(WRITE_BIN, &["--max-line", "x"], 64, "--max-line: invalid value 'x'"),
    a(WRITE_BIN, &["-w", "-1"], 64, "--timeout: invalid value '-1'"),
    a(WRITE_BIN, &["--append"], 64, "--append is for the stream form"),
    a(WRITE_BIN, &["--file-mode", "4755", "out.md"], 64, "setuid"),
    a(WRITE_BIN, &["a.md", "b.md"], 64, "give at most one PATH"),
    a(WRITE_BIN, &["--root", ".", "../escape.md"], 65, "path \"../escape.md\" leaves the root"),
    a(WRITE_BIN, &["--root", ".", "/tmp/escape.md"], 65, "absolute path \"/tmp/escape.md\" refused"),
    a(WRITE_BIN, &["--root", ".", "sym.lock"], 77, "sym.lock is a symlink"),
    a(WRITE_BIN, &["--root", ".", "--append", "fifo"], 77, "fifo is not a regular file"),
    a(WRITE_BIN, &["--root", ".", "\u{1b}[31m/../../x"], 65, "path \"\\x1b[31m/../../x\" leaves the root"),
    a(DB_BIN, &["drop\u{1b}[1m"], 64, "unknown command 'drop\\x1b[1m'"),
    a(DB_BIN, &["insert", "--batch", "0", "--db", "index.db"], 64, "--batch: invalid value '0'"),
    a(DB_BIN, &["insert", "--max-line", "0", "--db", "index.db"], 64, "--max-line: invalid value '0'"),
    a(DB_BIN, &["insert"], 64, "no database"),
    a(DB_BIN, &["insert", "--db", "missing.db"], 66, "database missing.db does not exist"),
    a(DB_BIN, &["query", "--db", "index.db"], 64, "query needs the SQL"),
    a(DB_BIN, &["pending", "--older-than", "-1h", "--db", "index.db"], 64, "--older-than"),
    a(DB_BIN, &["query", "/* only a comment */", "--db", "index.db"], 64, "the query holds no statement"),
    a(DB_BIN, &["query", "DELETE FROM t", "--db", "index.db"], 64, "query only reads"),
    a(COMMIT_BIN, &["-w", "x"], 64, "--timeout: invalid value 'x'"),
    a(COMMIT_BIN, &["--ignored", "maybe"], 64, "--ignored"),
    a(COMMIT_BIN, &["--batch", "-m", "m", "--", "a.md"], 64, "--batch applies to the record form only"),
];

#[test]
fn bad_arguments_give_their_status_and_one_line_and_do_nothing() {
    let t = TempDir::new();
    symlink("target.lock", t.join("sym.lock")).expect("symlink");
    mkfifo(&t.join("fifo"));
    Connection::open(t.join("index.db"))
        .and_then(|c| c.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x);"))
        .expect("index.db");
    // A read-only connection to a WAL database leaves its -wal and -shm behind: SQLite's, not
    // a write; the database's content is compared instead.
    let state = || {
        let mut s = tree(t.path(), &["index.db-wal", "index.db-shm"]);
        s.extend(db_state(t.path(), &t.join("index.db")));
        s
    };
    let mut problems = Problems::default();
    for case in ARGS {
        let name = Path::new(case.bin)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let what = format!("{name} {:?}", case.args);
        let before = state();
        let mut c = cmd(case.bin);
        c.args(case.args).current_dir(t.path());
        let out = run(c, b"");
        problems.status(&what, &out, case.status);
        problems.stderr(&what, &out.stderr, &format!("{name}: "), case.says);
        problems.check(&what, out.stdout.is_empty(), || {
            format!("wrote on stdout: {}", String::from_utf8_lossy(&out.stdout))
        });
        problems.check(&what, !t.join("ran").exists(), || "ran the command".into());
        problems.same(&what, &before, &state());
        let _ = std::fs::remove_file(t.join("ran"));
    }
    problems.done();
}

// ---------------------------------------------------------------------------------------------
// elf-lock's record: the holder record in a lock file, which anyone who can write the file
// controls. While the test holds the lock, each forged content must leave elf-lock saying the
// lock is held by the test's pid with no live holder record, on one escaped line, with the
// command not run and the file untouched; once the lock is free, elf-lock takes it and writes
// its own record over the forgery.

#[rustfmt::skip]
const FORGED: &[(&str, &[u8])] = &[
    ("a record naming init, with escapes in its command", b"{\"pid\":1,\"host\":\"@HOST@\",\"boot_id\":\"@BOOT@\",\"start_time\":1,\"since\":\"x\",\"command\":[\"\\u001b]0;pwned\\u0007\",\"rm -rf /\"]}\n"),
    ("a record naming the holder with another start time", b"{\"pid\":@PID@,\"host\":\"@HOST@\",\"boot_id\":\"@BOOT@\",\"start_time\":1,\"command\":[\"forged\"]}\n"),
    ("a record from another boot", b"{\"pid\":@PID@,\"host\":\"@HOST@\",\"boot_id\":\"other\",\"start_time\":1,\"command\":[\"forged\"]}\n"),
    ("a pid that is a string", b"{\"pid\":\"@PID@\",\"command\":[\"forged\"]}\n"),
    ("a negative pid", b"{\"pid\":-1,\"command\":[\"forged\"]}\n"),
    ("a huge pid", b"{\"pid\":123456789012345678901234567890,\"command\":[\"forged\"]}\n"),
    ("not JSON, with an ANSI escape", b"\x1b[2J\x1b]0;pwned\x07 held by root\n"),
    ("invalid UTF-8", b"{\"pid\":1,\"host\":\"\xff\xfe\"}\n"),
    ("10,000 nested arrays", b"@DEEP@\n"),
    ("a 1 MiB first line", b"{\"pid\":1,\"command\":[\"@1MIB@\"]}\n"),
    ("NUL bytes", b"\0\0\0{\"pid\":1}\n"),
];

#[test]
fn elf_lock_believes_no_forged_holder_record() {
    use std::os::fd::AsRawFd;
    let t = TempDir::new();
    let lock = t.join("l.lock");
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let pid = std::process::id();
    let elf = |args: &[&str]| {
        let mut c = cmd(env!("CARGO_BIN_EXE_elf-lock"));
        c.args(args).current_dir(t.path());
        c
    };
    let mut problems = Problems::default();
    for (what, content) in FORGED {
        let what = format!("elf-lock: {what}");
        let mut content = expand(content);
        for (from, to) in [
            (&b"@HOST@"[..], host.trim()),
            (b"@BOOT@", boot.trim()),
            (b"@PID@", &pid.to_string()),
        ] {
            while let Some(i) = content.windows(from.len()).position(|w| w == from) {
                content.splice(i..i + from.len(), to.bytes());
            }
        }
        if let Some(i) = content.windows(6).position(|w| w == b"@1MIB@") {
            content.splice(i..i + 6, vec![b'x'; 1 << 20]);
        }
        std::fs::write(&lock, &content).expect("forge");
        let held = std::fs::File::open(&lock).expect("open");
        // SAFETY: flock(2) on a descriptor we own.
        assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);

        let out = run(elf(&["-n", "l.lock", "--", "touch", "ran"]), b"");
        problems.status(&what, &out, 75);
        problems.stderr(
            &what,
            &out.stderr,
            "elf-lock: ",
            &format!("l.lock is busy, not waiting: held by pid {pid} (no live holder record)"),
        );
        problems.check(&what, !t.join("ran").exists(), || "ran the command".into());
        let status = run(elf(&["--status", "l.lock"]), b"");
        let v: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
        problems.check(
            &what,
            v.get("holder") == Some(&Value::Null) && v.get("pids") == Some(&Value::from(vec![pid])),
            || format!("--status believed it: {v}"),
        );
        problems.check(
            &what,
            std::fs::read(&lock).is_ok_and(|c| c == content),
            || "the lock file was changed while another process held it".into(),
        );

        drop(held);
        // A fork by another test thread may hold a copy of the descriptor until it execs (the
        // descriptor is close-on-exec): wait until the lock is really free.
        crate::util::wait_for(
            std::time::Duration::from_secs(10),
            "the lock to be free",
            || {
                std::fs::File::open(&lock).is_ok_and(|f| {
                    // SAFETY: flock(2) on a descriptor we own; closing it releases the lock.
                    unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) == 0 }
                })
            },
        );
        let out = run(elf(&["-n", "l.lock", "--", "touch", "ran"]), b"");
        problems.status(&format!("{what} (free)"), &out, 0);
        let rec: Value = std::fs::read(&lock)
            .ok()
            .and_then(|c| serde_json::from_slice(c.split(|&b| b == b'\n').next()?).ok())
            .unwrap_or(Value::Null);
        problems.check(
            &what,
            rec.get("command") == Some(&Value::from(vec!["touch", "ran"])),
            || format!("the record was not replaced: {rec}"),
        );
        let _ = std::fs::remove_file(t.join("ran"));
    }
    problems.done();
}

// ---------------------------------------------------------------------------------------------
// The harness.

/// How a record tool is checked.
struct Tool {
    name: &'static str,
    /// The exit status under `--keep-going` of a case that exits `code` without it, when the
    /// line then comes out as an error record (`None`: the tool stops as without it).
    keep_going: fn(i32) -> Option<i32>,
}

impl Tool {
    /// Runs every case, plain and under `--keep-going`, checks status, stderr, stdout and that
    /// the state is the same after as before, and fails with every problem found.
    fn corpus(
        &self,
        cases: &[Case],
        elf: &dyn Fn(&[&str]) -> Command,
        state: &dyn Fn() -> BTreeMap<String, String>,
    ) {
        let mut problems = Problems::default();
        for case in cases {
            self.check(case, elf, state, &mut problems);
        }
        problems.done();
    }

    fn check(
        &self,
        case: &Case,
        elf: &dyn Fn(&[&str]) -> Command,
        state: &dyn Fn() -> BTreeMap<String, String>,
        problems: &mut Problems,
    ) {
        let mut input = expand(case.input);
        let line = 1 + input.iter().filter(|&&b| b == b'\n').count() as u64;
        input.push(b'\n');
        let what = format!("{}: {}", self.name, case.what);
        let prefix = format!("{}: line {line}: ", self.name);

        let before = state();
        let out = run(elf(case.args), &input);
        problems.status(&what, &out, case.status);
        problems.stderr(&what, &out.stderr, &prefix, case.says);
        problems.check(&what, out.stdout.is_empty(), || {
            format!(
                "passed something on: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        });
        problems.same(&what, &before, &state());

        let Some(status) = (self.keep_going)(case.status) else {
            return;
        };
        let what = format!("{what} (--keep-going)");
        let mut args = case.args.to_vec();
        args.push("--keep-going");
        let before = state();
        let out = run(elf(&args), &input);
        problems.status(&what, &out, status);
        let text = String::from_utf8_lossy(&out.stderr);
        problems.check(&what, text.lines().count() <= 1, || {
            format!("more than one line on stderr: {text:?}")
        });
        problems.check(
            &what,
            !text.trim_end_matches('\n').chars().any(char::is_control),
            || format!("raw control characters on stderr: {text:?}"),
        );
        let err = match std::str::from_utf8(&out.stdout).map(|t| t.lines().collect::<Vec<_>>()) {
            Ok(lines) if lines.len() == 1 => serde_json::from_str::<Value>(lines[0])
                .ok()
                .and_then(|v| v.get("error").cloned()),
            _ => None,
        };
        match err {
            Some(e) => {
                let message = e.get("message").and_then(Value::as_str).unwrap_or("");
                let expected = (
                    Some(self.name),
                    e.get("code").and_then(Value::as_i64) == Some(i64::from(case.status)),
                    e.get("line").and_then(Value::as_u64) == Some(line),
                    elf_core::text::escape(message).contains(case.says),
                );
                problems.check(
                    &what,
                    expected == (e.get("tool").and_then(Value::as_str), true, true, true),
                    || {
                        format!(
                            "error record {e} is not tool {}, code {}, line {line}, holding {:?}",
                            self.name, case.status, case.says
                        )
                    },
                );
            }
            None => problems.push(
                &what,
                format!(
                    "expected one error record on stdout, got {:?}",
                    String::from_utf8_lossy(&out.stdout)
                ),
            ),
        }
        problems.same(&what, &before, &state());
    }
}

/// The problems a corpus found, reported together.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn push(&mut self, what: &str, problem: String) {
        self.0.push(format!("{what}: {problem}"));
    }

    fn check(&mut self, what: &str, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.push(what, problem());
        }
    }

    fn status(&mut self, what: &str, out: &Output, expected: i32) {
        self.check(what, out.status.code() == Some(expected), || {
            format!(
                "exit status {:?}, expected {expected} (stderr: {:?})",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
    }

    /// Exactly one line of UTF-8 text on stderr, without raw control characters, starting with
    /// `prefix` and holding `says`.
    fn stderr(&mut self, what: &str, stderr: &[u8], prefix: &str, says: &str) {
        let text = String::from_utf8_lossy(stderr);
        let line = text.strip_suffix('\n').unwrap_or(&text);
        let ok = std::str::from_utf8(stderr).is_ok()
            && text.ends_with('\n')
            && !line.contains('\n')
            && !line.chars().any(char::is_control)
            && line.starts_with(prefix)
            && line[prefix.len()..].contains(says);
        self.check(what, ok, || {
            format!("stderr {text:?} is not one clean line {prefix:?} holding {says:?}")
        });
    }

    /// Nothing written: the state after is the state before.
    fn same(
        &mut self,
        what: &str,
        before: &BTreeMap<String, String>,
        after: &BTreeMap<String, String>,
    ) {
        if before == after {
            return;
        }
        let mut diff = Vec::new();
        for (k, v) in before {
            match after.get(k) {
                None => diff.push(format!("    removed {k}: {v}")),
                Some(w) if w != v => diff.push(format!("    changed {k}: {v} => {w}")),
                _ => {}
            }
        }
        for (k, v) in after {
            if !before.contains_key(k) {
                diff.push(format!("    added {k}: {v}"));
            }
        }
        self.push(what, format!("something was written:\n{}", diff.join("\n")));
    }

    fn done(self) {
        assert!(
            self.0.is_empty(),
            "{} problem(s):\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// The input with its placeholders expanded.
fn expand(input: &[u8]) -> Vec<u8> {
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let mut out = input.to_vec();
    for (from, to) in [
        (&b"@DEEP@"[..], deep.into_bytes()),
        (b"@HUGE@", vec![b'x'; 5000]),
        (b"@16MIB@", vec![b'x'; 17 << 20]),
    ] {
        if let Some(i) = out.windows(from.len()).position(|w| w == from) {
            out.splice(i..i + from.len(), to);
        }
    }
    out
}

/// Runs a command with `input` on stdin, killing it (and failing) if it runs for 60 s: a tool
/// that blocks on hostile input (a FIFO, a lock it never gives back) fails the test instead
/// of hanging it.
fn run(c: Command, input: &[u8]) -> Output {
    run_with_input_within(c, input, Duration::from_secs(60))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn mkfifo(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    let r = unsafe { libc::mkfifo(c.as_ptr(), 0o644) };
    assert_eq!(r, 0, "mkfifo {}", p.display());
}

/// Takes and drops an exclusive lock on `f` without waiting; false when someone holds it.
fn try_flock(f: &std::fs::File) -> bool {
    use std::os::fd::AsRawFd;
    // SAFETY: flock(2) on a descriptor we own.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    r == 0
}

/// Every entry below `root` (but those under `skip`): type, mode, inode, and a file's content
/// (shown when short text, else its size and hash). A rewrite with the same content still
/// changes the inode.
fn tree(root: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    fn walk(root: &Path, dir: &Path, skip: &[&str], out: &mut BTreeMap<String, String>) {
        let entries = std::fs::read_dir(dir).expect("read dir");
        for e in entries.flatten() {
            let p: PathBuf = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            if skip.iter().any(|s| rel == *s) {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let ft = m.file_type();
            let mode = m.mode() & 0o7777;
            let desc = if ft.is_symlink() {
                format!(
                    "symlink -> {}",
                    std::fs::read_link(&p).expect("readlink").display()
                )
            } else if ft.is_dir() {
                walk(root, &p, skip, out);
                format!("folder {mode:o}")
            } else if ft.is_file() {
                let data = std::fs::read(&p).expect("read");
                let content = match std::str::from_utf8(&data) {
                    Ok(s) if s.len() <= 200 => format!("{s:?}"),
                    _ => format!("{} bytes, hash {:016x}", data.len(), fnv(&data)),
                };
                format!("file {mode:o} inode {} {content}", m.ino())
            } else {
                format!("special {:o}", m.mode())
            };
            out.insert(rel, desc);
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, skip, &mut out);
    out
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The database as data: its schema, every row of every table (sqlite_sequence included),
/// and the names of the other files in its folder.
fn db_state(dir: &Path, db: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).expect("open");
    let schema: Vec<(String, String, Option<String>)> = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY name")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .expect("schema");
    for (kind, name, sql) in &schema {
        out.insert(format!("schema:{name}"), format!("{kind} {sql:?}"));
        if kind != "table" {
            continue;
        }
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        let mut st = conn
            .prepare(&format!("SELECT rowid, * FROM {quoted} ORDER BY rowid"))
            .expect("select");
        let n = st.column_count();
        let mut rows = st.query([]).expect("rows");
        while let Some(r) = rows.next().expect("row") {
            let vals: Vec<String> = (0..n)
                .map(|i| format!("{:?}", r.get_ref(i).expect("value")))
                .collect();
            out.insert(format!("row:{name}:{}", vals[0]), vals[1..].join(", "));
        }
    }
    drop(conn);
    let db_name = db.file_name().map(|n| n.to_string_lossy().into_owned());
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // The database and its -wal and -shm come and go with connections.
        if !db_name
            .as_ref()
            .is_some_and(|d| name.starts_with(d.as_str()))
        {
            out.insert(format!("file:{name}"), String::new());
        }
    }
    out
}
