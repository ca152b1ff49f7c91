//! query.py and query-py.sh: every case of tests/fixtures/querypy/cases.tsv against what the
//! legacy query.py printed (text byte for byte, JSON as parsed JSON), on the real home, a rich
//! one and none at all; read-only proven; hostile values; the install step.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::SystemTime;

use serde_json::Value;

use crate::elf_home::{bin_dir, root};
use crate::util::{TempDir, cmd, ok, one_line};

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/querypy")
}

/// query-py.sh with the tools on PATH and HOME set.
fn query(home_dir: &Path) -> Command {
    let mut c = cmd(root().join("bin-wrappers/query-py.sh"));
    c.env("PATH", path_with_tools()).env("HOME", home_dir);
    c.env_remove("ELF_LOCK_TIMEOUT");
    c
}

fn path_with_tools() -> String {
    format!(
        "{}:{}",
        bin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run query")
}

/// The cases: a name and the arguments (tab-separated; an argument may be empty).
fn cases() -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(fixtures().join("cases.tsv")).expect("cases.tsv");
    text.lines()
        .map(|l| {
            let mut f = l.split('\t').map(String::from);
            let name = f.next().expect("name");
            (name, f.collect())
        })
        .collect()
}

/// The three homes of the fixtures, made in `dir`: real (a copy), rich (from rich.sql) and
/// empty (absent).
fn homes(dir: &TempDir) -> Vec<(&'static str, PathBuf)> {
    let real = dir.join("real");
    copy_dir(&root().join("tests/fixtures/real-home"), &real);
    let rich = dir.join("rich");
    make_rich(&rich);
    vec![("real", real), ("rich", rich), ("empty", dir.join("empty"))]
}

fn make_rich(home: &Path) {
    std::fs::create_dir_all(home.join("memory")).expect("mkdir");
    let sql = std::fs::read(fixtures().join("rich.sql")).expect("rich.sql");
    let out = crate::util::run_with_input(cmd("sqlite3").arg(home.join("memory/index.db")), &sql);
    ok(&out);
    std::fs::copy(
        fixtures().join("rich-golden-rules.md"),
        home.join("memory/golden-rules.md"),
    )
    .expect("golden rules");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).expect("copy");
        }
    }
}

/// Every file under `dir` with its content and modification time.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
    let mut files = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let e = e.expect("entry");
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(e.path());
                files.insert(e.path(), (Vec::new(), meta.modified().expect("mtime")));
            } else {
                let bytes = std::fs::read(e.path()).expect("read");
                files.insert(e.path(), (bytes, meta.modified().expect("mtime")));
            }
        }
    }
    files
}

/// True when the case asks for JSON from a mode that has JSON (context and golden rules
/// print text whatever the format).
fn wants_json(args: &[String]) -> bool {
    let json = args
        .windows(2)
        .any(|w| w[0].starts_with("--form") && w[1] == "json")
        || args.iter().any(|a| a == "--format=json");
    json && !args
        .iter()
        .any(|a| a == "--context" || a == "--golden-rules")
}

/// JSON equality, numbers as the doubles they stand for (serde_json's default parser may read
/// `1e-05` and `0.00001` one unit in the last place apart).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= 2.0 * f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((ka, va), (kb, vb))| ka == kb && same_json(va, vb))
        }
        _ => a == b,
    }
}

/// Runs every case on every home and compares with the recorded legacy output.
#[test]
fn every_case_matches_the_legacy_output_and_nothing_is_written() {
    let dir = TempDir::new();
    let homes = homes(&dir);
    let before = snapshot(dir.path());
    let mut compared = 0;
    for (home, path) in &homes {
        for (name, args) in cases() {
            let recorded = fixtures().join(home).join(format!("{name}.out"));
            let Ok(expected) = std::fs::read(&recorded) else {
                continue;
            };
            if name == "help" {
                continue;
            }
            let mut c = query(dir.path());
            c.arg("--base-path").arg(path).args(&args);
            let out = run(c);
            ok(&out);
            if wants_json(&args) {
                let ours: Value = serde_json::from_slice(&out.stdout)
                    .unwrap_or_else(|e| panic!("{home}/{name}: not JSON: {e}"));
                let legacy: Value = serde_json::from_slice(&expected).expect("recorded JSON");
                assert!(
                    same_json(&ours, &legacy),
                    "{home}/{name}: {ours} != {legacy}"
                );
            } else {
                assert_eq!(
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&expected),
                    "{home}/{name}"
                );
                assert_eq!(out.stdout, expected, "{home}/{name}: bytes");
            }
            compared += 1;
        }
    }
    assert!(compared > 200, "only {compared} cases compared");
    assert_eq!(snapshot(dir.path()), before, "a read changed the homes");
    assert!(!dir.join("empty").exists(), "the missing home was created");
}

/// Where the legacy script died (invalid UTF-8 in the real home), the rows print with U+FFFD.
#[test]
fn a_row_the_legacy_script_died_on_prints() {
    let dir = TempDir::new();
    let real = dir.join("real");
    copy_dir(&root().join("tests/fixtures/real-home"), &real);
    let failed = std::fs::read_to_string(fixtures().join("real/recent-minus-1.failed"))
        .expect("recorded failure");
    assert!(failed.contains("Could not decode to UTF-8"), "{failed}");
    let mut c = query(dir.path());
    c.arg("--base-path").arg(&real).args(["--recent", "-1"]);
    let out = run(c);
    ok(&out);
    let text = String::from_utf8(out.stdout).expect("UTF-8");
    assert!(text.contains("--- Item 39 ---"), "{text}");
    assert!(text.contains("Test\u{fffd}"), "{text}");
}

/// A missing table reads as the empty one the legacy script created: the output equals the
/// output on the same database with the table there and empty.
#[test]
fn a_missing_table_reads_as_an_empty_one() {
    let dir = TempDir::new();
    let dropped = dir.join("dropped");
    let emptied = dir.join("emptied");
    let bare = dir.join("bare");
    let none = dir.join("none");
    for (home, sql) in [
        (&dropped, "DROP TABLE experiments; DROP TABLE ceo_reviews;"),
        (
            &emptied,
            "DELETE FROM experiments; DELETE FROM ceo_reviews;",
        ),
    ] {
        make_rich(home);
        ok(&run({
            let mut c = cmd("sqlite3");
            c.arg(home.join("memory/index.db")).arg(sql);
            c
        }));
    }
    // A database without any table, beside no database at all.
    std::fs::create_dir_all(bare.join("memory")).expect("mkdir");
    std::fs::write(bare.join("memory/index.db"), b"").expect("empty db");
    for (_, args) in cases() {
        if args.is_empty() {
            continue;
        }
        let mut outputs = Vec::new();
        for home in [&dropped, &emptied, &bare, &none] {
            let mut c = query(dir.path());
            c.arg("--base-path").arg(home).args(&args);
            let out = run(c);
            ok(&out);
            outputs.push(out.stdout);
        }
        assert_eq!(
            String::from_utf8_lossy(&outputs[0]),
            String::from_utf8_lossy(&outputs[1]),
            "{args:?}"
        );
        assert_eq!(
            String::from_utf8_lossy(&outputs[2]),
            String::from_utf8_lossy(&outputs[3]),
            "{args:?}"
        );
    }
}

/// Bad values: 64 and one line, nothing printed on stdout.
#[test]
fn bad_values_get_64_and_one_line() {
    let dir = TempDir::new();
    let home = dir.join("rich");
    make_rich(&home);
    for args in [
        &["--limit", "1e9", "--domain", "x"][..],
        &["--limit", "99999999999999999999", "--domain", "x"],
        &["--recent", "9223372036854775808"],
        &["--recent", "five"],
        &["--max-tokens", "1.5", "--context"],
        &["--format", "xml", "--stats"],
        &["--bogus"],
        &["--c"],
        &["--domain"],
        &["--domain", "--stats"],
        &["--context=yes"],
        &["positional"],
    ] {
        let mut c = query(dir.path());
        c.arg("--base-path").arg(&home).args(args);
        let out = run(c);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let line = one_line(&out.stderr);
        assert!(line.starts_with("query.py: "), "{line}");
    }
    // In range, and negative: all rows, as SQLite's LIMIT -1 gives them.
    let mut c = query(dir.path());
    c.arg("--base-path")
        .arg(&home)
        .args(["--recent", "9223372036854775807"]);
    ok(&run(c));
}

/// 10,000 tags: one pass, the same answer as the one tag among them that matches.
#[test]
fn ten_thousand_tags() {
    let dir = TempDir::new();
    let home = dir.join("rich");
    make_rich(&home);
    let mut many: Vec<String> = (0..10_000).map(|i| format!("zz{i}")).collect();
    many.push("git".into());
    let many = many.join(",");
    for mode in [&[][..], &["--context"][..]] {
        let mut c = query(dir.path());
        c.arg("--base-path").arg(&home).args(mode);
        c.args(["--tags", "git"]);
        let one = run(c);
        ok(&one);
        let mut c = query(dir.path());
        c.arg("--base-path").arg(&home).args(mode);
        c.args(["--tags", &many]);
        let out = run(c);
        ok(&out);
        if mode.is_empty() {
            assert_eq!(out.stdout, one.stdout);
        } else {
            // The heading names every tag; the entries are the same.
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(text.contains("- **Plain failure** (failure, domain: debugging)"));
        }
    }
}

/// A database that stays busy (a writer holding an exclusive lock on a rollback-journal
/// database): the read waits ELF_LOCK_TIMEOUT, then 75 and one line.
#[test]
fn busy_past_the_timeout_is_75() {
    use std::io::{BufRead, BufReader, Write};
    let dir = TempDir::new();
    let home = dir.join("rich");
    make_rich(&home);
    let mut holder = cmd("sqlite3")
        .arg(home.join("memory/index.db"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sqlite3");
    let mut stdin = holder.stdin.take().expect("stdin");
    writeln!(
        stdin,
        "BEGIN EXCLUSIVE; UPDATE learnings SET title = title; SELECT 'locked';"
    )
    .expect("write");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("handshake");
    assert_eq!(line.trim(), "locked");
    let mut c = query(dir.path());
    c.env("ELF_LOCK_TIMEOUT", "0.2")
        .arg("--base-path")
        .arg(&home)
        .args(["--context", "--domain", "debugging"]);
    let out = run(c);
    drop(stdin);
    let _ = holder.wait();
    assert_eq!(out.status.code(), Some(75));
    assert!(one_line(&out.stderr).contains("busy"));
}

/// The lines of an strace log of a query run on `home` that write there: an open for writing
/// or creating, mkdir, unlink, rename, truncate, link. `allow` names files that may be opened
/// for writing (the WAL's, while writers have them).
fn writes_in(trace: &str, home: &Path, allow: &[&str]) -> Vec<String> {
    let home = home.to_string_lossy().to_string();
    trace
        .lines()
        .filter(|l| l.contains(&home))
        .filter(|l| {
            let open_w = l.contains("O_WRONLY") || l.contains("O_RDWR") || l.contains("O_CREAT");
            let open_allowed = allow.iter().any(|a| l.contains(&format!("{a}\"")));
            let other = [
                "mkdir", "unlink", "rename", "rmdir", "truncate", "link(", "symlink",
            ]
            .iter()
            .any(|s| l.contains(s));
            (open_w && !open_allowed) || other
        })
        .map(String::from)
        .collect()
}

fn strace_query(dir: &TempDir, home: &Path, args: &[&str]) -> (Output, String) {
    let log = dir.join("strace.log");
    let mut c = cmd("strace");
    c.env("PATH", path_with_tools())
        .env("HOME", dir.path())
        .args(["-f", "-qq", "-e", "trace=%file,%desc", "-o"])
        .arg(&log)
        .arg(root().join("bin-wrappers/query-py.sh"))
        .arg("--base-path")
        .arg(home)
        .args(args);
    let out = run(c);
    (out, std::fs::read_to_string(&log).expect("strace log"))
}

fn have_strace() -> bool {
    let there = Command::new("strace").arg("-V").output().is_ok();
    if !there {
        eprintln!("skipped: strace is not installed");
    }
    there
}

/// On an idle home (its WAL database has no -wal), strace shows every mode opening nothing
/// there for writing, and creating, removing or renaming nothing.
#[test]
fn reads_of_an_idle_home_open_nothing_for_writing() {
    if !have_strace() {
        return;
    }
    let dir = TempDir::new();
    let home = dir.join("home");
    copy_dir(&root().join("tests/fixtures/real-home"), &home);
    let before = snapshot(&home);
    for args in [
        &["--context", "--domain", "debugging", "--tags", "test"][..],
        &["--domain", "testing"],
        &["--stats", "--format", "json"],
        &["--recent", "3"],
    ] {
        let (out, trace) = strace_query(&dir, &home, args);
        ok(&out);
        assert!(trace.contains("index.db"), "the database was not read");
        let writes = writes_in(&trace, &home, &[]);
        assert!(writes.is_empty(), "a read wrote: {writes:#?}");
    }
    assert_eq!(snapshot(&home), before);
}

/// Beside 20 concurrent recorders, every read succeeds; it shares the writers' -wal and -shm
/// (SQLite's readers open them read-write) and writes nothing else.
#[test]
fn reads_beside_twenty_recorders_succeed_and_write_nothing() {
    if !have_strace() {
        return;
    }
    let dir = TempDir::new();
    let home = dir.join("home");
    copy_dir(&root().join("tests/fixtures/real-home"), &home);
    let recorders: Vec<_> = (0..20)
        .map(|i| {
            let mut c = crate::elf_home::script("record-heuristic.sh", &home);
            c.args([
                "--domain",
                "debugging",
                "--rule",
                &format!("rule {i}"),
                "--explanation",
                "e",
            ]);
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            c.spawn().expect("recorder")
        })
        .collect();
    for _ in 0..5 {
        let (out, trace) = strace_query(&dir, &home, &["--context", "--domain", "debugging"]);
        ok(&out);
        assert!(out.stdout.starts_with(b"# Task Context\n"));
        let writes = writes_in(&trace, &home, &["index.db-wal", "index.db-shm"]);
        assert!(writes.is_empty(), "a read wrote: {writes:#?}");
    }
    for mut r in recorders {
        assert!(r.wait().expect("recorder").success(), "a recorder failed");
    }
    // Every recorded heuristic is read back.
    let mut c = query(dir.path());
    c.arg("--base-path")
        .arg(&home)
        .args(["--domain", "debugging", "--limit", "-1"]);
    let out = run(c);
    ok(&out);
    let text = String::from_utf8_lossy(&out.stdout);
    for i in 0..20 {
        assert!(
            text.contains(&format!("rule: rule {i}\n")),
            "rule {i} missing"
        );
    }
}

/// The shim: the legacy call, from anywhere and from its folder, after the README's install
/// step into a temporary HOME, reaches query-py.sh; the default home is ~/.claude/emergent-learning.
#[test]
fn the_install_step_makes_the_legacy_call_work() {
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| Command::new(p).arg("-c").arg("pass").output().is_ok());
    let Some(python) = python else {
        eprintln!("skipped: no python3");
        return;
    };
    let dir = TempDir::new();
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README");
    let step: String = readme
        .lines()
        .skip_while(|l| !l.starts_with("# query.py: the agents' read path"))
        .take_while(|l| !l.starts_with("```"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(
        step.contains("query.py"),
        "install step not found in README"
    );
    let mut c = cmd("bash");
    c.current_dir(root())
        .env("HOME", dir.path())
        .args(["-euc", &step]);
    ok(&run(c));
    let elf = dir.join(".claude/emergent-learning");
    make_rich(&elf);
    let expected =
        std::fs::read(fixtures().join("rich/context-domain-debugging.out")).expect("fixture");
    let installed = elf.join("query/query.py");
    for from_folder in [false, true] {
        let mut c = cmd(python);
        c.env("PATH", path_with_tools()).env("HOME", dir.path());
        if from_folder {
            c.current_dir(elf.join("query")).arg("query.py");
        } else {
            c.arg(&installed);
        }
        c.args(["--context", "--domain", "debugging"]);
        let out = run(c);
        ok(&out);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&expected)
        );
    }
    // Arguments are handed over as they are, exit status included.
    let mut c = cmd(python);
    c.env("PATH", path_with_tools())
        .env("HOME", dir.path())
        .arg(&installed)
        .args(["--limit", "1e9"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(64));
}
