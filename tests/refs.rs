//! Late binding across the five tools: a record says what its later stages take from earlier
//! ones (`{"$ref": ...}`, `{"$join": [...]}`), so that a pipeline needs no jq between its
//! stages, and a replay from the journal reaches the same files, rows and trees.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::elf_home::{bin_dir, git, root, rows};
use crate::util::{TempDir, cmd, ok, run_with_input};

const SAME: &str = "memory/failures/20250101_same.md";

/// A home with the ELF schema, a git repository and a committed failure file that the test's
/// failure record will find in its way.
fn home(dir: &Path) {
    std::fs::create_dir_all(dir.join("memory/failures")).expect("mkdir");
    std::fs::create_dir_all(dir.join("memory/heuristics")).expect("mkdir");
    std::fs::write(dir.join(SAME), "# Same\n\nsomebody else's\n").expect("write");
    std::fs::write(dir.join(".gitignore"), "memory/index.db*\n").expect("write");
    ok(&tool("elf-db")
        .args(["exec", "--db"])
        .arg(dir.join("memory/index.db"))
        .arg("--file")
        .arg(root().join("bin-wrappers/lib/schema.sql"))
        .output()
        .expect("schema"));
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-q", "-m", "start"],
    ] {
        ok(&fixed(cmd("git"))
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .expect("git"));
    }
}

/// One of the tools.
fn tool(name: &str) -> Command {
    fixed(cmd(bin_dir().join(name)))
}

/// A command with a fixed git identity and clock.
fn fixed(mut c: Command) -> Command {
    c.env("GIT_AUTHOR_NAME", "ELF Test")
        .env("GIT_AUTHOR_EMAIL", "elf@example.com")
        .env("GIT_COMMITTER_NAME", "ELF Test")
        .env("GIT_COMMITTER_EMAIL", "elf@example.com")
        .env("GIT_AUTHOR_DATE", "2025-01-01T00:00:00Z")
        .env("GIT_COMMITTER_DATE", "2025-01-01T00:00:00Z")
        .env("GIT_CONFIG_NOSYSTEM", "1");
    c
}

/// A heuristic whose heading carries its row id, and a failure whose row follows the name
/// elf-write takes (the file it asks for is taken).
fn records() -> String {
    let heuristic = serde_json::json!({
        "key": "h1", "kind": "heuristic",
        "db": {"table": "heuristics", "values": {"domain": "late", "rule": "Bind late", "confidence": 0.75}},
        "write": {"path": "memory/heuristics/late.md", "mode": "append", "header": "# Heuristics: late\n\n",
                  "content": {"$join": ["## H-", {"$ref": "/db/id"}, ": Bind late\n\n**Confidence**: ",
                                        {"$ref": "/db/values/confidence"}, "\n\n---\n\n"]}},
        "commit": {"message": {"$join": ["heuristic H-", {"$ref": "/db/id"}, ": Bind late"]}}
    });
    let failure = serde_json::json!({
        "key": "f1", "kind": "failure",
        "db": {"table": "learnings", "values": {"type": "failure", "filepath": SAME, "title": "Same", "domain": "late"}},
        "write": {"path": SAME, "mode": "create", "unique": true, "content": "# Same\n\nours\n"},
        "fix": {"sql": "UPDATE learnings SET filepath = :path WHERE id = :id AND filepath <> :path",
                "params": {"path": {"$ref": "/write/path"}, "id": {"$ref": "/db/id"}}},
        "commit": {"message": "failure: Same"}
    });
    format!("{heuristic}\n{failure}\n")
}

/// The tail of the pipeline, as a shell command line of the tools (no jq).
fn tail(dir: &Path) -> String {
    let db = dir.join("memory/index.db");
    format!(
        "elf-write --root '{d}' | elf-db exec --key fix --db '{db}' | elf-commit --repo '{d}' | elf-db done --db '{db}'",
        d = dir.display(),
        db = db.display()
    )
}

fn sh(dir: &Path, line: &str, input: &[u8]) -> std::process::Output {
    let path = format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = fixed(cmd("sh"));
    c.env("PATH", path).args(["-c", &format!("set -e; {line}")]);
    c.current_dir(dir);
    run_with_input(c, input)
}

/// What a replay must reproduce: the files, the rows (without their clocks) and the tree.
fn state(dir: &Path) -> (Vec<u8>, Vec<u8>, String, String) {
    let read = |p: &str| std::fs::read(dir.join(p)).unwrap_or_default();
    let rows = rows(
        dir,
        "SELECT 'h' AS t, id, domain, rule, confidence AS c FROM heuristics \
         UNION ALL SELECT 'l', id, domain, filepath, title FROM learnings ORDER BY 1, 2",
    );
    (
        read("memory/heuristics/late.md"),
        read("memory/failures/20250101_same-2.md"),
        serde_json::to_string(&rows).unwrap_or_default(),
        git(dir, &["rev-parse", "HEAD^{tree}"]),
    )
}

#[test]
fn a_pipeline_of_the_tools_binds_late_without_jq_and_a_replay_reaches_the_same_state() {
    let t = TempDir::new();
    let (a, b) = (t.join("a"), t.join("b"));
    home(&a);
    home(&b);
    let db_a = a.join("memory/index.db");

    // Home a: the whole pipeline at once, under a lock and with retries.
    let line = format!(
        "elf-lock '{lock}' -- elf-backoff -- sh -c \"elf-db insert --journal --db '{db}' | {tail}\"",
        lock = a.join(".git/elf-test.lock").display(),
        db = db_a.display(),
        tail = tail(&a).replace('"', "\\\""),
    );
    let out = sh(&a, &line, records().as_bytes());
    ok(&out);
    let h = rows(&a, "SELECT id FROM heuristics");
    assert_eq!(h.len(), 1);
    let hid = h[0]["id"].as_i64().expect("an id");
    let md = String::from_utf8(std::fs::read(a.join("memory/heuristics/late.md")).expect("entry"))
        .expect("UTF-8");
    assert!(
        md.contains(&format!("## H-{hid}: Bind late\n\n**Confidence**: 0.75\n")),
        "{md}"
    );
    let f = rows(&a, "SELECT filepath FROM learnings");
    assert_eq!(
        f[0]["filepath"],
        Value::from("memory/failures/20250101_same-2.md")
    );
    assert_eq!(
        std::fs::read_to_string(a.join(SAME)).ok().as_deref(),
        Some("# Same\n\nsomebody else's\n"),
        "the file in the way is left alone"
    );
    assert_eq!(
        std::fs::read_to_string(a.join("memory/failures/20250101_same-2.md"))
            .ok()
            .as_deref(),
        Some("# Same\n\nours\n")
    );
    let log = git(&a, &["log", "--format=%s", "-3"]);
    assert_eq!(
        log.lines().collect::<Vec<_>>(),
        vec![
            "failure: Same",
            &format!("heuristic H-{hid}: Bind late"),
            "start"
        ]
    );
    assert_eq!(git(&a, &["status", "--porcelain"]).trim(), "");
    let done = rows(
        &a,
        "SELECT count(*) AS n FROM elf_journal WHERE done_at IS NULL",
    );
    assert_eq!(done[0]["n"], Value::from(0));

    // Home b: the records journaled, then replayed from the journal by the same tail.
    let db_b = b.join("memory/index.db");
    ok(&sh(
        &b,
        &format!(
            "elf-db insert --journal --db '{}' >/dev/null",
            db_b.display()
        ),
        records().as_bytes(),
    ));
    ok(&sh(
        &b,
        &format!("elf-db pending --db '{}' | {}", db_b.display(), tail(&b)),
        b"",
    ));
    let sa = state(&a);
    assert_eq!(sa, state(&b), "a replay from the journal differs");

    // Replaying finished records once more changes nothing: no file, row or commit.
    let head = git(&a, &["rev-parse", "HEAD"]);
    ok(&sh(
        &a,
        &format!(
            "printf '%s\\n' '{{\"db\":{{\"sql\":\"UPDATE elf_journal SET done_at = NULL\"}}}}' | elf-db exec --db '{db}' >/dev/null; elf-db pending --db '{db}' | {tail}",
            db = db_a.display(),
            tail = tail(&a)
        ),
        b"",
    ));
    assert_eq!(state(&a), sa);
    assert_eq!(git(&a, &["rev-parse", "HEAD"]), head);
}

#[test]
fn bad_references_are_bad_records_and_change_nothing() {
    let t = TempDir::new();
    let a = t.join("a");
    home(&a);
    let db = a.join("memory/index.db");
    let head = git(&a, &["rev-parse", "HEAD"]);
    let write = |content: &str| {
        format!(
            r#"{{"key":"x","db":{{"id":7,"o":{{"a":1}}}},"write":{{"path":"memory/x.md","content":{content}}}}}"#
        )
    };
    let cases: Vec<(&str, String)> = vec![
        ("elf-write", write(r#"{"$ref":"/db/nothing"}"#)),
        ("elf-write", write(r#"{"$join":["a",{"$ref":"/db/o"}]}"#)),
        ("elf-write", write(r#"{"$join":["a",{"$ref":"/db/ids/0"}]}"#)),
        ("elf-write", write(r#"{"$ref":"db/id"}"#)),
        ("elf-write", write(r#"{"$ref":"/db/~2"}"#)),
        ("elf-write", write(r#"{"$ref":"/db/id","more":1}"#)),
        (
            "elf-write",
            r#"{"key":"x","write":{"path":{"$ref":"/nowhere"},"content":"x"}}"#.to_string(),
        ),
        (
            "elf-db exec",
            r#"{"db":{"sql":"INSERT INTO heuristics (domain, rule) VALUES (:d, 'r')","params":{"d":{"$ref":"/missing"}}}}"#.to_string(),
        ),
        (
            "elf-db insert",
            r#"{"db":{"table":"heuristics","values":{"domain":{"$ref":"/x/0"},"rule":"r"}}}"#
                .to_string(),
        ),
        (
            "elf-commit",
            r#"{"commit":{"paths":[".gitignore"],"message":{"$join":[{"$ref":"/m"}]}}}"#
                .to_string(),
        ),
    ];
    for (stage, rec) in cases {
        let line = match stage {
            "elf-write" => format!("elf-write --root '{}'", a.display()),
            "elf-commit" => format!("elf-commit --repo '{}'", a.display()),
            db_cmd => format!("{db_cmd} --db '{}'", db.display()),
        };
        let out = sh(&a, &line, format!("{rec}\n").as_bytes());
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(65), "{stage} {rec}: {err}");
        assert!(err.contains("line 1"), "{stage}: {err}");
        assert_eq!(err.lines().count(), 1, "{stage}: {err}");
        assert!(out.stdout.is_empty(), "{stage} passed a bad record on");
    }
    assert!(!a.join("memory/x.md").exists());
    assert_eq!(rows(&a, "SELECT id FROM heuristics").len(), 0);
    assert_eq!(git(&a, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&a, &["status", "--porcelain"]).trim(), "");
}

#[test]
fn user_text_that_looks_like_a_reference_is_text() {
    let t = TempDir::new();
    let a = t.join("a");
    home(&a);
    let db = a.join("memory/index.db");
    let title = r#"{"$ref":"/key"}"#;
    let rec = serde_json::json!({
        "key": "k9",
        "db": {"table": "learnings", "values": {"type": "failure", "filepath": "memory/failures/t.md", "title": title}},
        "write": {"path": "memory/failures/t.md", "mode": "create", "content": {"$join": ["# ", title, "\n"]}},
        "commit": {"message": title}
    });
    ok(&sh(
        &a,
        &format!(
            "elf-db insert --journal --db '{}' | {}",
            db.display(),
            tail(&a)
        ),
        format!("{rec}\n").as_bytes(),
    ));
    assert_eq!(
        rows(&a, "SELECT title FROM learnings")[0]["title"],
        Value::from(title)
    );
    assert_eq!(
        std::fs::read_to_string(a.join("memory/failures/t.md")).ok(),
        Some(format!("# {title}\n"))
    );
    assert_eq!(git(&a, &["log", "--format=%s", "-1"]).trim(), title);
}
