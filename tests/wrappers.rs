//! The ELF scripts in bin-wrappers/, driven as a user would: flags, environment and prompts.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::elf_home::{assert_started_once, elf_db, git, ok, root, rows, run, script};
use crate::util::{TempDir, run_with_input, watchdog};

type Rows = Vec<serde_json::Map<String, Value>>;

/// Commits of records: every commit but the one that adds the new home's `.gitignore`.
fn commit_count(home: &Path) -> usize {
    assert_started_once(home).len() - 1
}

fn failure_files(home: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(home.join("memory/failures"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn heuristic_ids(text: &str) -> Vec<i64> {
    text.lines()
        .filter_map(|l| l.strip_prefix("## H-"))
        .filter_map(|l| l.split(':').next())
        .filter_map(|n| n.parse().ok())
        .collect()
}

#[test]
fn a_first_failure_in_a_fresh_home() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut c = script("record-failure.sh", &home);
    c.args([
        "--title",
        "First failure",
        "--domain",
        "demo",
        "--severity",
        "high",
        "--tags",
        "a,b",
        "--summary",
        "It broke.\nBadly.",
    ]);
    let out = run(c);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("Failure recorded successfully!\n"),
        "{text}"
    );
    let r = rows(
        &home,
        "SELECT id, type, filepath, title, summary, tags, domain, severity FROM learnings",
    );
    assert_eq!(r.len(), 1);
    let day = String::from_utf8_lossy(
        &Command::new("date")
            .arg("+%Y%m%d")
            .output()
            .expect("date")
            .stdout,
    )
    .trim()
    .to_string();
    let path = format!("memory/failures/{day}_first-failure.md");
    assert_eq!(r[0]["filepath"], Value::from(path.clone()));
    assert_eq!(r[0]["summary"], Value::from("It broke."));
    assert_eq!(r[0]["severity"], Value::from(4));
    assert!(text.contains(&format!("ID: {}\n", r[0]["id"])), "{text}");
    assert!(text.contains(&path));
    let md = std::fs::read_to_string(home.join(&path)).expect("markdown");
    assert!(
        md.starts_with(
            "# First failure\n\n**Domain**: demo\n**Severity**: 4\n**Tags**: a,b\n**Date**: "
        ),
        "{md}"
    );
    assert!(
        md.contains("## Summary\n\nIt broke.\nBadly.\n\n## What Happened\n"),
        "{md}"
    );
    assert_eq!(commit_count(&home), 1);
    assert_eq!(
        git(&home, &["log", "-1", "--format=%s%n%n%b"]).trim(),
        "failure: First failure\n\nDomain: demo | Severity: 4"
    );
    assert_eq!(
        git(&home, &["show", "--name-only", "--format=", "HEAD"]).trim(),
        path
    );
    assert_eq!(
        git(&home, &["status", "--porcelain"]).trim(),
        "",
        "the home is clean"
    );
    let ignore = std::fs::read_to_string(home.join(".gitignore")).unwrap_or_default();
    assert!(
        ignore.lines().any(|l| l == "memory/index.db-wal"),
        "{ignore}"
    );
    // The log line carries the cleaned title.
    let logs: String = std::fs::read_dir(home.join("logs"))
        .expect("logs")
        .filter_map(|e| e.ok())
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(
        logs.contains("] [INFO] [record-failure] Recorded failure #"),
        "{logs}"
    );
}

/// The three forms of record-failure.sh with the same answers.
fn failure_three_ways(severity: &str) -> Vec<(Option<i32>, Rows, String)> {
    let mut results = Vec::new();
    for form in ["flags", "env", "prompt"] {
        let dir = TempDir::new();
        let home = dir.join("home");
        let mut c = script("record-failure.sh", &home);
        let out = match form {
            "flags" => {
                c.args([
                    "--title",
                    "Same",
                    "--domain",
                    "d",
                    "--severity",
                    severity,
                    "--tags",
                    "t",
                    "--summary",
                    "s",
                ]);
                run(c)
            }
            "env" => {
                c.env("FAILURE_TITLE", "Same")
                    .env("FAILURE_DOMAIN", "d")
                    .env("FAILURE_SEVERITY", severity)
                    .env("FAILURE_TAGS", "t")
                    .env("FAILURE_SUMMARY", "s");
                run(c)
            }
            _ => run_with_input(c, format!("Same\nd\n{severity}\nt\ns\n\n").as_bytes()),
        };
        let r = if home.join("memory/index.db").exists() {
            rows(
                &home,
                "SELECT type, title, summary, tags, domain, severity FROM learnings",
            )
        } else {
            Vec::new()
        };
        // The last line names the record's own key, which differs from run to run.
        let md = failure_files(&home)
            .first()
            .map(|f| {
                std::fs::read_to_string(home.join("memory/failures").join(f)).unwrap_or_default()
            })
            .unwrap_or_default();
        let md = match md.rfind("\n<!-- elf:") {
            Some(i) => md[..i].to_string(),
            None => md,
        };
        results.push((out.status.code(), r, md));
    }
    results
}

#[test]
fn severity_is_mapped_or_rejected_identically_in_all_three_forms() {
    let table: &[(&str, Option<i64>)] = &[
        ("1", Some(1)),
        ("5", Some(5)),
        ("HIGH", Some(4)),
        ("low", Some(2)),
        ("Critical", Some(5)),
        ("medium", Some(3)),
        ("3.5", None),
        ("0", None),
        ("6", None),
        ("4; DROP TABLE learnings", None),
        ("', 1); DROP TABLE learnings; --", None),
    ];
    for (given, want) in table {
        let r = failure_three_ways(given);
        for (code, rows, md) in &r {
            match want {
                Some(n) => {
                    assert_eq!(*code, Some(0), "severity {given:?}");
                    assert_eq!(rows.len(), 1, "severity {given:?}");
                    assert_eq!(rows[0]["severity"], Value::from(*n), "severity {given:?}");
                    assert!(md.contains(&format!("**Severity**: {n}\n")));
                }
                None => {
                    assert_eq!(*code, Some(65), "severity {given:?} must be rejected");
                    assert!(rows.is_empty(), "severity {given:?} wrote a row");
                    assert!(md.is_empty());
                }
            }
        }
        assert_eq!(r[0].1, r[1].1, "flags and environment differ for {given:?}");
        assert_eq!(r[0].1, r[2].1, "flags and prompts differ for {given:?}");
        assert_eq!(r[0].2, r[1].2);
        assert_eq!(r[0].2, r[2].2);
    }
}

fn heuristic_three_ways(confidence: &str) -> Vec<(Option<i32>, Rows)> {
    let mut results = Vec::new();
    for form in ["flags", "env", "prompt"] {
        let dir = TempDir::new();
        let home = dir.join("home");
        let mut c = script("record-heuristic.sh", &home);
        let out = match form {
            "flags" => {
                c.args([
                    "--domain",
                    "D",
                    "--rule",
                    "r",
                    "--explanation",
                    "e",
                    "--source",
                    "s",
                    "--confidence",
                    confidence,
                ]);
                run(c)
            }
            "env" => {
                c.env("HEURISTIC_DOMAIN", "D")
                    .env("HEURISTIC_RULE", "r")
                    .env("HEURISTIC_EXPLANATION", "e")
                    .env("HEURISTIC_SOURCE", "s")
                    .env("HEURISTIC_CONFIDENCE", confidence);
                run(c)
            }
            _ => run_with_input(c, format!("D\nr\ne\n\ns\n{confidence}\n").as_bytes()),
        };
        let r = if home.join("memory/index.db").exists() {
            rows(
                &home,
                "SELECT domain, rule, explanation, source_type, confidence FROM heuristics",
            )
        } else {
            Vec::new()
        };
        results.push((out.status.code(), r));
    }
    results
}

#[test]
fn confidence_is_mapped_or_rejected_identically_in_all_three_forms() {
    let table: &[(&str, Option<f64>)] = &[
        (".5", Some(0.5)),
        ("1", Some(1.0)),
        ("0", Some(0.0)),
        ("HIGH", Some(0.85)),
        ("low", Some(0.3)),
        ("medium", Some(0.6)),
        ("", Some(0.7)),
        ("1.5", None),
        ("-0.1", None),
        ("abc", None),
        ("0.5; DROP TABLE heuristics", None),
    ];
    for (given, want) in table {
        let r = heuristic_three_ways(given);
        for (code, rows) in &r {
            match want {
                Some(c) => {
                    assert_eq!(*code, Some(0), "confidence {given:?}");
                    assert_eq!(rows.len(), 1);
                    assert_eq!(
                        rows[0]["confidence"].as_f64(),
                        Some(*c),
                        "confidence {given:?}"
                    );
                    assert_eq!(rows[0]["domain"], Value::from("d"));
                }
                None => {
                    assert_eq!(*code, Some(65), "confidence {given:?} must be rejected");
                    assert!(rows.is_empty());
                }
            }
        }
        assert_eq!(r[0].1, r[1].1, "flags and environment differ for {given:?}");
        assert_eq!(r[0].1, r[2].1, "flags and prompts differ for {given:?}");
    }
}

#[test]
fn odd_titles_are_kept_cleaned_and_never_overwrite() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let long = "x".repeat(600);
    let titles = [
        "-n",
        "日本語のタイトル",
        "Ωμέγα",
        "\u{1b}[31mred\u{1b}[0m alert",
        "two\nlines",
        long.as_str(),
        "Same",
        "Same",
    ];
    for t in titles {
        let mut c = script("record-failure.sh", &home);
        c.args(["--title", t, "--domain", "d"]);
        ok(&run(c));
    }
    let files = failure_files(&home);
    assert_eq!(files.len(), titles.len(), "{files:?}");
    let r = rows(&home, "SELECT title, filepath FROM learnings ORDER BY id");
    let stored: Vec<&str> = r.iter().filter_map(|row| row["title"].as_str()).collect();
    assert_eq!(stored[0], "-n");
    assert_eq!(stored[3], "red alert");
    assert_eq!(stored[4], "two lines");
    assert_eq!(stored[5].len(), 600);
    // Every row points at its own existing file.
    let mut paths: Vec<&str> = r
        .iter()
        .filter_map(|row| row["filepath"].as_str())
        .collect();
    for p in &paths {
        assert!(home.join(p).is_file(), "{p}");
        let name = p.rsplit('/').next().unwrap_or_default();
        assert!(!name.ends_with("_.md"), "empty slug: {p}");
        assert!(name.len() <= 9 + 100 + 6, "{p}");
    }
    paths.sort();
    paths.dedup();
    assert_eq!(paths.len(), titles.len(), "two rows share a file");
    let md = std::fs::read_to_string(home.join(r[3]["filepath"].as_str().unwrap_or_default()))
        .unwrap_or_default();
    assert!(md.starts_with("# red alert\n"), "{md:?}");
    let subjects = git(&home, &["log", "--format=%s"]);
    assert!(!subjects.contains('\u{1b}'));
    assert!(
        subjects.lines().any(|l| l == "failure: two lines"),
        "{subjects}"
    );
    assert_eq!(commit_count(&home), titles.len());
}

#[test]
fn parallel_heuristics_on_one_new_domain() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let n = 30;
    let children: Vec<_> = (0..n)
        .map(|i| {
            let mut c = script("record-heuristic.sh", &home);
            c.args([
                "--domain",
                "Race Domain",
                "--rule",
                &format!("rule {i}"),
                "--confidence",
                "0.5",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            c.spawn().expect("spawn")
        })
        .collect();
    let outs = watchdog(Duration::from_secs(300), move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait"))
            .collect::<Vec<_>>()
    });
    for o in &outs {
        ok(o);
    }
    let text = std::fs::read_to_string(home.join("memory/heuristics/race-domain.md"))
        .expect("domain file");
    assert_eq!(
        text.matches("# Heuristics: race-domain\n").count(),
        1,
        "one header"
    );
    let mut ids = heuristic_ids(&text);
    ids.sort();
    assert_eq!(ids.len(), n);
    assert!(!ids.contains(&0), "an H-0 heading");
    let mut row_ids: Vec<i64> = rows(&home, "SELECT id FROM heuristics")
        .iter()
        .filter_map(|r| r["id"].as_i64())
        .collect();
    row_ids.sort();
    assert_eq!(ids, row_ids);
    assert_eq!(commit_count(&home), n);
}

#[test]
fn parallel_failures_all_recorded_and_committed() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let n = 20;
    let children: Vec<_> = (0..n)
        .map(|i| {
            let mut c = script("record-failure.sh", &home);
            c.args(["--title", &format!("parallel {i}"), "--domain", "load"])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            c.spawn().expect("spawn")
        })
        .collect();
    let outs = watchdog(Duration::from_secs(300), move || {
        children
            .into_iter()
            .map(|c| c.wait_with_output().expect("wait"))
            .collect::<Vec<_>>()
    });
    for o in &outs {
        ok(o);
    }
    assert_eq!(failure_files(&home).len(), n);
    assert_eq!(rows(&home, "SELECT id FROM learnings").len(), n);
    assert_eq!(commit_count(&home), n);
    let tracked = git(&home, &["ls-files", "memory/failures"]);
    assert_eq!(tracked.lines().count(), n);
    assert_eq!(git(&home, &["status", "--porcelain"]).trim(), "");
}

fn init_home(home: &Path) {
    let mut c = script("record-failure.sh", home);
    c.args(["--title", "init", "--domain", "d"]);
    ok(&run(c));
}

#[test]
fn a_user_staged_file_stays_staged_and_out_of_the_commit() {
    let dir = TempDir::new();
    let home = dir.join("home");
    init_home(&home);
    std::fs::write(home.join("notes.txt"), "mine\n").expect("write");
    git(&home, &["add", "notes.txt"]);
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "after staging", "--domain", "d"]);
    ok(&run(c));
    let files = git(&home, &["show", "--name-only", "--format=", "HEAD"]);
    assert!(!files.contains("notes.txt"), "{files}");
    assert_eq!(
        git(&home, &["diff", "--cached", "--name-only"]).trim(),
        "notes.txt"
    );
}

#[test]
fn a_gitignored_memory_keeps_the_record_and_skips_the_commit() {
    let dir = TempDir::new();
    let home = dir.join("home");
    init_home(&home);
    std::fs::write(home.join(".gitignore"), "memory/\n").expect("write");
    let before = commit_count(&home);
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "ignored", "--domain", "d"]);
    let out = run(c);
    ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Commit: skipped"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(commit_count(&home), before);
    assert_eq!(rows(&home, "SELECT id FROM learnings").len(), 2);
    assert_eq!(failure_files(&home).len(), 2);
}

#[test]
fn a_leftover_legacy_lock_dir_blocks_nothing() {
    let dir = TempDir::new();
    let home = dir.join("home");
    init_home(&home);
    std::fs::create_dir(home.join(".git/claude-lock.dir")).expect("mkdir");
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "after a crash", "--domain", "d"]);
    let out = watchdog(Duration::from_secs(20), move || run(c));
    ok(&out);
}

#[test]
fn experiments_start_once_per_name() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut c = script("start-experiment.sh", &home);
    c.args([
        "--name",
        "Cache warmup",
        "--hypothesis",
        "warm caches halve latency",
        "--success-criteria",
        "p50 < 5ms",
    ]);
    let out = run(c);
    ok(&out);
    let r = rows(
        &home,
        "SELECT id, name, status, folder_path FROM experiments",
    );
    assert_eq!(r.len(), 1);
    let folder = home.join(r[0]["folder_path"].as_str().unwrap_or_default());
    let hyp = std::fs::read_to_string(folder.join("hypothesis.md")).expect("hypothesis.md");
    assert!(hyp.starts_with("# Experiment: Cache warmup\n"), "{hyp}");
    assert!(hyp.contains("## Success Criteria\n\np50 < 5ms\n"));
    assert!(folder.join("log.md").is_file());
    assert_eq!(
        git(&home, &["log", "-1", "--format=%s"]).trim(),
        "experiment: Start 'Cache warmup'"
    );

    let mut again = script("start-experiment.sh", &home);
    again.args(["--name", "Cache warmup", "--hypothesis", "again"]);
    let out = run(again);
    assert_eq!(out.status.code(), Some(65));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already exists"), "{err}");
    let folders = std::fs::read_dir(home.join("experiments/active"))
        .expect("active")
        .count();
    assert_eq!(folders, 1, "no orphan folder");
    assert_eq!(rows(&home, "SELECT id FROM experiments").len(), 1);
}

#[test]
fn query_reads_without_writing() {
    let dir = TempDir::new();
    let home = dir.join("home");
    init_home(&home);
    let mut h = script("record-heuristic.sh", &home);
    h.args([
        "--domain",
        "testing",
        "--rule",
        "Check \u{1b}[31mcolour",
        "--confidence",
        "high",
    ]);
    ok(&run(h));
    let db = home.join("memory/index.db");
    let before = std::fs::metadata(&db).and_then(|m| m.modified()).ok();
    for args in [
        &["--context"][..],
        &["--domain", "testing"],
        &["--stats"],
        &["--recent", "5"],
    ] {
        let mut q = script("query.sh", &home);
        q.args(args);
        let out = run(q);
        ok(&out);
        assert!(!out.stdout.contains(&0x1b), "raw escape in query output");
    }
    let mut q = script("query.sh", &home);
    q.args(["--domain", "testing"]);
    let text = String::from_utf8_lossy(&run(q).stdout).to_string();
    assert!(text.contains("(0.85, testing) Check colour"), "{text}");
    assert_eq!(
        std::fs::metadata(&db).and_then(|m| m.modified()).ok(),
        before,
        "query.sh wrote to the database"
    );
    let mut bad = script("query.sh", &home);
    bad.args(["--recent", "x"]);
    assert_eq!(run(bad).status.code(), Some(64));
}

#[test]
fn sync_reports_each_kind_and_fix_repairs_faithfully() {
    let dir = TempDir::new();
    let home = dir.join("home");
    init_home(&home);
    let mut h = script("record-heuristic.sh", &home);
    h.args([
        "--domain",
        "ops",
        "--rule",
        "keep | pipes",
        "--explanation",
        "line one\nline two",
        "--source",
        "postmortem",
        "--confidence",
        "0.4",
    ]);
    ok(&run(h));
    // 1. A failure file with no row.
    std::fs::write(
        home.join("memory/failures/20250101_hand-made.md"),
        "# Hand made\n\n**Domain**: manual\n**Severity**: 2\n**Tags**: x|y\n**Date**: 2025-01-01  # note\n\n## Summary\n\nWritten | by hand\n\n## What Happened\n\n.\n",
    )
    .expect("write");
    // 2. A failure row with no file.
    let orphan = rows(&home, "SELECT filepath FROM learnings")[0]["filepath"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    std::fs::remove_file(home.join(&orphan)).expect("rm");
    // 3. A heuristic entry with no row (legacy H-0).
    let domain_file = home.join("memory/heuristics/ops.md");
    let mut text = std::fs::read_to_string(&domain_file).expect("read");
    text.push_str("## H-0: legacy entry\n\n**Confidence**: 0.95\n**Source**: failure\n**Created**: 2025-12-01\n\nkept | as written\nover two lines\n\n---\n\n");
    // 4. A heuristic row with no entry: remove the recorded entry from the file.
    let id = rows(&home, "SELECT id FROM heuristics")[0]["id"]
        .as_i64()
        .unwrap_or(0);
    let start = text.find(&format!("## H-{id}:")).expect("entry");
    let end = text[start..]
        .find("---\n\n")
        .map(|i| start + i + 5)
        .expect("entry end");
    text.replace_range(start..end, "");
    std::fs::write(&domain_file, text).expect("write");

    let out = run(script("sync-db-markdown.sh", &home));
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    for kind in [
        "failure file without row",
        "failure row without file",
        "heuristic entry without row",
        "heuristic row without entry",
    ] {
        assert_eq!(report.matches(kind).count(), 1, "{kind} in {report}");
    }

    let mut fix = script("sync-db-markdown.sh", &home);
    fix.arg("--fix");
    let out = run(fix);
    ok(&out);
    let out = run(script("sync-db-markdown.sh", &home));
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let hand = rows(
        &home,
        "SELECT title, domain, severity, tags, summary FROM learnings WHERE filepath = 'memory/failures/20250101_hand-made.md'",
    );
    assert_eq!(hand.len(), 1);
    assert_eq!(hand[0]["title"], Value::from("Hand made"));
    assert_eq!(hand[0]["domain"], Value::from("manual"));
    assert_eq!(hand[0]["severity"], Value::from(2));
    assert_eq!(hand[0]["tags"], Value::from("x|y"));
    assert_eq!(hand[0]["summary"], Value::from("Written | by hand"));
    let rebuilt = std::fs::read_to_string(home.join(&orphan)).expect("rebuilt file");
    assert!(
        rebuilt.starts_with("# init\n\n**Domain**: d\n**Severity**: 3\n"),
        "{rebuilt}"
    );
    let legacy = rows(
        &home,
        "SELECT id, rule, explanation, source_type, confidence FROM heuristics WHERE rule = 'legacy entry'",
    );
    assert_eq!(legacy.len(), 1);
    assert_eq!(
        legacy[0]["explanation"],
        Value::from("kept | as written\nover two lines")
    );
    assert_eq!(legacy[0]["source_type"], Value::from("failure"));
    assert_eq!(legacy[0]["confidence"].as_f64(), Some(0.95));
    let text = std::fs::read_to_string(&domain_file).expect("read");
    assert!(
        text.contains(&format!("## H-{}: legacy entry\n", legacy[0]["id"])),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "## H-{id}: keep | pipes\n\n**Confidence**: 0.4\n**Source**: postmortem\n"
        )),
        "{text}"
    );
    assert!(text.contains("line one\nline two\n"));
}

#[test]
fn sync_on_the_real_legacy_home() {
    let dir = TempDir::new();
    let home = dir.join("home");
    // A copy of a real legacy home (see tests/fixtures/real-home/README.md).
    let real = root().join("tests/fixtures/real-home");
    let st = Command::new("cp")
        .arg("-r")
        .arg(&real)
        .arg(&home)
        .status()
        .expect("cp");
    assert!(st.success());
    let out = run(script("sync-db-markdown.sh", &home));
    assert_eq!(
        out.status.code(),
        Some(1),
        "the real home has differences: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(first.lines().count() > 5, "{first}");
    assert!(
        first.contains("heuristic entry without row: memory/heuristics/agent-behavior.md H-0"),
        "{first}"
    );
    let mut fix = script("sync-db-markdown.sh", &home);
    fix.arg("--fix");
    let out = run(fix);
    // Rows whose files cannot be written inside the home stay; everything else is repaired.
    let second = run(script("sync-db-markdown.sh", &home));
    let left = String::from_utf8_lossy(&second.stdout).to_string();
    assert_eq!(
        second.status.code(),
        Some(0),
        "after --fix (status {:?}, stderr {}): {left}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    let ids = heuristic_ids(
        &std::fs::read_to_string(home.join("memory/heuristics/agent-behavior.md"))
            .unwrap_or_default(),
    );
    assert!(!ids.contains(&0), "H-0 headings left: {ids:?}");
}

#[test]
fn bad_usage_is_64_and_both_flag_forms_work() {
    let dir = TempDir::new();
    let home = dir.join("home");
    for args in [
        &["--nope"][..],
        &["--title"],
        &["stray"],
        &["--title=t", "--domain=d", "--bogus=1"],
    ] {
        let mut c = script("record-failure.sh", &home);
        c.args(args);
        let out = run(c);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("record-failure: "), "{err}");
    }
    assert!(!home.exists(), "bad usage created the home");
    let mut c = script("start-experiment.sh", &home);
    c.args([
        "--name=E1",
        "--hypothesis=h",
        "--success-criteria=s",
        "--failure-criteria",
        "f",
    ]);
    ok(&run(c));
    let r = rows(&home, "SELECT name, hypothesis FROM experiments");
    assert_eq!(r[0]["name"], Value::from("E1"));
    let mut h = script("record-heuristic.sh", &home);
    h.arg("--help");
    let out = run(h);
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Usage: record-heuristic.sh"));
}

#[test]
fn start_experiment_gives_the_same_result_from_flags_environment_and_prompts() {
    let mut results = Vec::new();
    for form in ["flags", "env", "prompt"] {
        let dir = TempDir::new();
        let home = dir.join("home");
        let mut c = script("start-experiment.sh", &home);
        let out = match form {
            "flags" => {
                c.args([
                    "--name",
                    "Same \u{1b}[1mexp",
                    "--hypothesis",
                    "h",
                    "--success-criteria",
                    "s",
                    "--failure-criteria",
                    "f",
                ]);
                run(c)
            }
            "env" => {
                c.env("EXPERIMENT_NAME", "Same \u{1b}[1mexp")
                    .env("EXPERIMENT_HYPOTHESIS", "h")
                    .env("EXPERIMENT_SUCCESS_CRITERIA", "s")
                    .env("EXPERIMENT_FAILURE_CRITERIA", "f");
                run(c)
            }
            _ => run_with_input(c, "Same \u{1b}[1mexp\nh\ns\nf\n".as_bytes()),
        };
        ok(&out);
        let r = rows(
            &home,
            "SELECT name, hypothesis, status, folder_path FROM experiments",
        );
        assert_eq!(r.len(), 1);
        let folder = home.join(r[0]["folder_path"].as_str().unwrap_or_default());
        // The start time differs from run to run; everything else must not.
        let hyp: String = std::fs::read_to_string(folder.join("hypothesis.md"))
            .expect("hypothesis.md")
            .lines()
            .filter(|l| !l.starts_with("**Started**"))
            .map(|l| format!("{l}\n"))
            .collect();
        results.push((
            r[0]["name"].clone(),
            r[0]["hypothesis"].clone(),
            r[0]["status"].clone(),
            hyp,
        ));
    }
    assert_eq!(results[0].0, Value::from("Same exp"));
    assert!(
        results[0]
            .3
            .contains("## Success Criteria\n\ns\n\n## Failure Criteria\n\nf\n"),
        "{}",
        results[0].3
    );
    assert_eq!(results[0], results[1], "flags and environment differ");
    assert_eq!(results[0], results[2], "flags and prompts differ");
}

/// The programs a run started, from `strace -ff -e trace=execve` (the script's own start
/// included): the path of each successful execve, one trace file per process (so that no
/// call is split across lines by another process's).
fn programs_started(c: std::process::Command, traces: &Path) -> Vec<String> {
    std::fs::create_dir_all(traces).expect("trace folder");
    let program = c.get_program().to_owned();
    let args: Vec<_> = c.get_args().map(|a| a.to_owned()).collect();
    let mut s = std::process::Command::new("strace");
    s.args(["-ff", "-qq", "-e", "trace=execve", "-o"])
        .arg(traces.join("t"))
        .arg(program)
        .args(args);
    for (k, v) in c.get_envs() {
        match v {
            Some(v) => s.env(k, v),
            None => s.env_remove(k),
        };
    }
    let out = s
        .stdin(std::process::Stdio::null())
        .output()
        .expect("strace is needed by this test (apt-get install strace)");
    ok(&out);
    let mut started = Vec::new();
    for e in std::fs::read_dir(traces).expect("traces").flatten() {
        let text = std::fs::read_to_string(e.path()).expect("a trace");
        started.extend(
            text.lines()
                .filter(|l| l.starts_with("execve(") && l.trim_end().ends_with("= 0"))
                .filter_map(|l| l.split('"').nth(1).map(String::from)),
        );
    }
    started
}

#[test]
fn a_record_on_a_ready_home_starts_at_most_eight_programs_and_no_jq() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let record = |title: &str| {
        let mut c = script("record-failure.sh", &home);
        c.args(["--title", title, "--domain", "d"]);
        c
    };
    ok(&run(record("makes the home")));
    for (what, c) in [
        ("failure", record("on a ready home")),
        ("heuristic", {
            let mut c = script("record-heuristic.sh", &home);
            c.args(["--domain", "d", "--rule", "r"]);
            c
        }),
    ] {
        let started = programs_started(c, &dir.join(format!("{what}.trace")));
        assert!(
            started.len() <= 8,
            "{what}: {} programs started: {started:?}",
            started.len()
        );
        assert!(
            !started.iter().any(|p| p.ends_with("/jq")),
            "{what}: jq started: {started:?}"
        );
        // It drained its own record: elf-write and elf-commit ran in this run.
        for tool in ["elf-db", "elf-lock", "elf-write", "elf-commit"] {
            assert!(
                started.iter().any(|p| p.ends_with(&format!("/{tool}"))),
                "{what}: {tool} did not run: {started:?}"
            );
        }
    }
    assert_eq!(rows(&home, "SELECT id FROM learnings").len(), 2);
    assert_eq!(rows(&home, "SELECT id FROM heuristics").len(), 1);
}

#[test]
fn a_record_that_cannot_finish_is_set_aside_and_blocks_nobody() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let heuristic = |domain: &str, rule: &str| {
        let mut c = script("record-heuristic.sh", &home);
        c.args(["--domain", domain, "--rule", rule]);
        c
    };
    ok(&run(heuristic("good", "first")));
    // The domain's file is a folder: every append to it is refused (77), whoever drains it.
    std::fs::create_dir_all(home.join("memory/heuristics/stuck.md")).expect("folder");
    let out = run(heuristic("stuck", "never written"));
    assert_eq!(out.status.code(), Some(77));
    let line = crate::util::one_line(&out.stderr);
    assert!(
        line.starts_with(
            "record-heuristic: recording the heuristic: the record is journaled but not finished: "
        ) && line.contains("is a folder")
            && line.ends_with("; the next run tries again"),
        "{line}"
    );
    // Other records go through every drain that retries it, until it is set aside.
    for n in 0..2 {
        let out = run(heuristic("good", &format!("after {n}")));
        ok(&out);
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let journal = rows(
        &home,
        "SELECT attempts, set_aside_at IS NOT NULL AS aside, done_at IS NULL AS open, key \
         FROM elf_journal WHERE record LIKE '%never written%'",
    );
    assert_eq!(journal.len(), 1);
    assert_eq!(journal[0]["attempts"], Value::from(3));
    assert_eq!(journal[0]["aside"], Value::from(1));
    assert_eq!(journal[0]["open"], Value::from(1));
    let key = journal[0]["key"].as_str().expect("a key").to_string();
    // Set aside: no drain offers it any more; sync lists it, with how to settle it.
    let pending = elf_db(&home, "pending").output().expect("pending");
    assert!(pending.stdout.is_empty(), "{:?}", pending.stdout);
    ok(&run(heuristic("good", "after it was set aside")));
    let out = run(script("sync-db-markdown.sh", &home));
    assert_eq!(out.status.code(), Some(1));
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(report.lines().count(), 2, "{report}");
    assert!(
        report.ends_with("\nnot a regular file, left alone: memory/heuristics/stuck.md\n"),
        "{report}"
    );
    assert!(
        report.starts_with(&format!("set-aside record: {key} (heuristic): "))
            && report.contains("is a folder")
            && report.contains(&format!("elf-db retry {key}")),
        "{report}"
    );
    // Mended and retried, the next run completes it; everything agrees.
    std::fs::remove_dir(home.join("memory/heuristics/stuck.md")).expect("rmdir");
    ok(&elf_db(&home, "retry").arg(&key).output().expect("retry"));
    ok(&run(heuristic("good", "last")));
    let md = std::fs::read_to_string(home.join("memory/heuristics/stuck.md")).expect("entry");
    let id = rows(
        &home,
        "SELECT id FROM heuristics WHERE rule = 'never written'",
    )[0]["id"]
        .clone();
    assert!(md.contains(&format!("## H-{id}: never written\n")), "{md}");
    ok(&run(script("sync-db-markdown.sh", &home)));
    assert_eq!(git(&home, &["status", "--porcelain"]).trim(), "");
    let subjects = crate::elf_home::subjects(&home);
    assert_eq!(
        subjects
            .iter()
            .filter(|s| s.starts_with("heuristic: "))
            .count(),
        6,
        "{subjects:?}"
    );
}

#[test]
fn records_journaled_by_the_previous_scripts_are_completed_by_the_next_drain() {
    // The previous scripts journaled a heuristic without its entry (jq made it after the
    // insert) and a failure without its key line and its "fix"; a crash left them pending.
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut first = script("record-failure.sh", &home);
    first.args(["--title", "first", "--domain", "old"]);
    ok(&run(first));
    std::fs::write(
        home.join("memory/failures/20250101_taken.md"),
        "someone else's\n",
    )
    .expect("taken");
    let old = [
        serde_json::json!({"key": "elf-1-1-1", "kind": "heuristic",
            "db": {"table": "heuristics", "values": {"domain": "old", "rule": "Old rule",
                   "explanation": "why", "source_type": "observation", "confidence": 0.7}},
            "heuristic": {"rule": "Old rule", "confidence": 0.7, "source": "observation",
                          "created": "2025-01-01", "explanation": "why"},
            "write": {"path": "memory/heuristics/old.md", "mode": "append",
                      "header": "# Heuristics: old\n\nGenerated from failures, successes, and observations in the **old** domain.\n\n---\n\n"},
            "commit": {"message": "heuristic: Old rule"}}),
        serde_json::json!({"key": "elf-2-2-2", "kind": "failure",
            "db": {"table": "learnings", "values": {"type": "failure",
                   "filepath": "memory/failures/20250101_taken.md", "title": "Taken", "domain": "old"}},
            "write": {"path": "memory/failures/20250101_taken.md", "mode": "create",
                      "unique": true, "content": "# Taken\n"},
            "commit": {"message": "failure: Taken"}}),
    ];
    let input: String = old.iter().map(|r| format!("{r}\n")).collect();
    let mut insert = elf_db(&home, "insert");
    insert.arg("--journal");
    let out = run_with_input(insert, input.as_bytes());
    ok(&out);
    // The next run of any script drains them, in their current form.
    let mut next = script("record-failure.sh", &home);
    next.args(["--title", "next", "--domain", "old"]);
    ok(&run(next));
    let id = rows(&home, "SELECT id FROM heuristics WHERE rule = 'Old rule'")[0]["id"].clone();
    let md = std::fs::read_to_string(home.join("memory/heuristics/old.md")).expect("entry");
    assert!(md.contains(&format!("## H-{id}: Old rule\n")), "{md}");
    let taken = rows(
        &home,
        "SELECT filepath FROM learnings WHERE title = 'Taken'",
    );
    assert_eq!(
        taken[0]["filepath"],
        Value::from("memory/failures/20250101_taken-2.md")
    );
    let text = std::fs::read_to_string(home.join("memory/failures/20250101_taken-2.md"))
        .expect("the failure's own file");
    assert_eq!(text, "# Taken\n\n<!-- elf:elf-2-2-2 -->\n");
    let pending = rows(
        &home,
        "SELECT count(*) AS n FROM elf_journal WHERE done_at IS NULL",
    );
    assert_eq!(pending[0]["n"], Value::from(0));
    let subjects = crate::elf_home::subjects(&home);
    for s in ["heuristic: Old rule", "failure: Taken", "failure: next"] {
        assert!(subjects.iter().any(|x| x == s), "{s}: {subjects:?}");
    }
}

#[test]
fn a_record_that_would_fail_is_refused_before_it_is_journaled() {
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut first = script("record-failure.sh", &home);
    first.args(["--title", "first", "--domain", "d"]);
    ok(&run(first));
    let journaled = |home: &Path| rows(home, "SELECT key FROM elf_journal").len();
    let before = journaled(&home);
    // A timeout that is not a number of seconds.
    for bad in ["1e3", "abc", "-1", "10s"] {
        let mut c = script("record-failure.sh", &home);
        c.args(["--title", "t", "--domain", "d"])
            .env("ELF_LOCK_TIMEOUT", bad);
        let out = run(c);
        assert_eq!(out.status.code(), Some(64), "{bad}");
        let line = crate::util::one_line(&out.stderr);
        assert!(
            line.contains("ELF_LOCK_TIMEOUT must be a number of seconds"),
            "{line}"
        );
    }
    // Neither ELF_HOME nor HOME.
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "t", "--domain", "d"])
        .env_remove("ELF_HOME")
        .env_remove("HOME");
    let out = run(c);
    assert_eq!(out.status.code(), Some(64));
    assert!(crate::util::one_line(&out.stderr).contains("neither ELF_HOME nor HOME is set"));
    // A memory/failures that is a symbolic link out of the home.
    let outside = dir.join("outside");
    std::fs::create_dir_all(&outside).expect("outside");
    std::fs::rename(home.join("memory/failures"), dir.join("kept")).expect("move");
    std::os::unix::fs::symlink(&outside, home.join("memory/failures")).expect("symlink");
    let mut c = script("record-failure.sh", &home);
    c.args(["--title", "t", "--domain", "d"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(77));
    assert!(crate::util::one_line(&out.stderr).contains("is a symbolic link"));
    assert_eq!(journaled(&home), before, "a refused record was journaled");
    assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
}

#[test]
fn sync_writes_the_markdown_the_scripts_write() {
    // The scripts make their markdown in bash, sync-db-markdown.sh in jq: a file or an entry
    // repaired from its row is the one the script wrote (but the script's key line).
    let dir = TempDir::new();
    let home = dir.join("home");
    let mut f = script("record-failure.sh", &home);
    f.args([
        "--title",
        "Same bytes",
        "--domain",
        "fmt",
        "--severity",
        "4",
        "--tags",
        "a, b",
        "--summary",
        "One line.",
    ]);
    ok(&run(f));
    let mut h = script("record-heuristic.sh", &home);
    h.args([
        "--domain",
        "fmt",
        "--rule",
        "Same entry",
        "--explanation",
        "Because.",
        "--source",
        "failure",
        "--confidence",
        "0.85",
    ]);
    ok(&run(h));
    let path = rows(
        &home,
        "SELECT filepath FROM learnings WHERE title = 'Same bytes'",
    )[0]["filepath"]
        .as_str()
        .expect("a path")
        .to_string();
    let marker = |t: String| -> String {
        t.lines()
            .filter(|l| !l.starts_with("<!-- elf:"))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let written = std::fs::read_to_string(home.join(&path)).expect("file");
    let heuristics = home.join("memory/heuristics/fmt.md");
    let entry = std::fs::read_to_string(&heuristics).expect("entry");
    std::fs::remove_file(home.join(&path)).expect("rm");
    std::fs::remove_file(&heuristics).expect("rm");
    let mut fix = script("sync-db-markdown.sh", &home);
    fix.arg("--fix");
    ok(&run(fix));
    // A failure file ends with a blank line and its key line.
    let repaired = std::fs::read_to_string(home.join(&path)).expect("repaired file");
    let (body, key_line) = written.rsplit_once("\n\n<!-- elf:").expect("a key line");
    assert!(key_line.ends_with(" -->\n"), "{written}");
    assert_eq!(repaired, format!("{body}\n"));
    let repaired = std::fs::read_to_string(&heuristics).expect("repaired entry");
    assert_eq!(marker(repaired), marker(entry));
}
